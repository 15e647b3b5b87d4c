//! Acceptance 6 of issue 5: a live capture on `lo` of a push to SIPp, decoded by tshark's SIP
//! dissector (independent of our parser): method, Request-URI, Accept-Contact, Content-Type,
//! Content-Length, and the complete binary body (which SIPp's own log truncates at NUL).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::support::{self, sip::*};
use dmpushd::binding::{ContentType, Outcome, sip::SipConfig};

#[tokio::test]
async fn tshark_decodes_pushed_message() {
    let (Some(tshark), Some(sipp)) = (
        support::require_tool("tshark"),
        support::require_tool("sipp"),
    ) else {
        return;
    };
    let port = free_port();
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let probe_port = free_port();
    // Live decode on lo, one line per packet: the capture is ready once a probe datagram shows up
    // (no sleep-and-hope), then the push and its response must show up.
    let mut cap = Command::new(&tshark)
        .args(["-i", "lo", "-l", "-n", "-f"])
        .arg(format!("udp port {port} or udp port {probe_port}"))
        .args(["-a", "duration:60", "-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "udp.dstport",
            "-e",
            "sip.Method",
            "-e",
            "sip.r-uri",
            "-e",
            "sip.Accept-Contact",
            "-e",
            "sip.Content-Type",
            "-e",
            "sip.Content-Length",
            "-e",
            "sip.CSeq",
            "-e",
            "sip.Status-Code",
            "-e",
            "udp.payload",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tshark");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l2 = lines.clone();
    let stdout = cap.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(line);
        }
    });
    let wait_for = |pred: &dyn Fn(&str) -> bool, what: &str, probe_too: bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "tshark never showed {what}");
            if probe_too {
                let _ = probe.send_to(b"probe", ("127.0.0.1", probe_port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let probe_prefix = format!("{probe_port}|");
    wait_for(&|l| l.starts_with(&probe_prefix), "the probe", true);

    let mut uas = Sipp::start(&sipp, false, port, "uas_message.xml", 1, &[]);
    let (b, _) = binding(&SipConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        ..Default::default()
    })
    .await;
    let uri = format!("sip:device@127.0.0.1:{port}");
    let o = b
        .deliver(delivery(&uri, ContentType::Notification, &PKG0))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    assert!(uas.wait(Duration::from_secs(15)).success());

    let msg_prefix = format!("{port}|MESSAGE|");
    let line = wait_for(&|l| l.starts_with(&msg_prefix), "the MESSAGE", false);
    let resp = wait_for(&|l| l.contains("|200|"), "the 200 OK", false);
    // SIGTERM lets tshark stop its dumpcap child (SIGKILL would orphan it until `-a duration`).
    let _ = Command::new("kill")
        .args(["-TERM", &cap.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cap.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = cap.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = cap.wait();

    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f[2], uri);
    assert_eq!(f[3], "*;+g.oma.eventappid=\"syncml.dm\"");
    assert_eq!(f[4], "application/vnd.syncml.notification");
    assert_eq!(f[5], "39");
    assert_eq!(f[6], "1 MESSAGE");
    let payload = f[8].replace(':', "");
    assert!(
        payload.ends_with(&format!("0d0a0d0a{}", hex::encode(PKG0))),
        "complete binary body right after the header section: {payload}"
    );
    let r: Vec<&str> = resp.split('|').collect();
    assert_eq!(r[6], "1 MESSAGE", "the 200 answers our CSeq: {resp}");
}
