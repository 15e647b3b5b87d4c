//! The real binary: `dmpushd sim` prints one JSON line per event on stdout, and `dmpushd demo`
//! runs the gateway and the simulator end to end and exits 0 only when every check passed.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dmpushd");

/// Kills the child on drop, so a failing assertion never leaves a simulator running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sim_prints_listening_then_one_json_line_per_event() {
    let mut child = Child(
        Command::new(BIN)
            .args([
                "sim",
                "--smpp",
                "127.0.0.1:0",
                "--udp",
                "127.0.0.1:0",
                "--udp-port-as",
                "2948",
                "--device",
                "udp=com.example.dms:srvpass:AQIDBAUGBwg=",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dmpushd sim starts"),
    );
    // Lines are read on a thread so every wait below has a deadline.
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let next = || -> Value {
        let l = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a JSON line from dmpushd sim");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    };
    let first = next();
    assert_eq!(first["event"], "listening", "{first}");
    assert_eq!(first["source"], "sim");
    let udp: std::net::SocketAddr = first["udp"].as_str().unwrap().parse().unwrap();
    assert!(first["smpp"].as_str().is_some());

    // package #0 (protocol-facts §D.8 vector) in a hand-built Push PDU, content type 0xC4.
    let mut d = vec![0x01, 0x06, 0x03, 0xC4, 0xAF, 0x87];
    d.extend_from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/notification/d8_example1.bin"
        ))
        .unwrap(),
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&d, udp).unwrap();
    let ev = next();
    assert_eq!(ev["event"], "wap_push", "{ev}");
    assert_eq!(ev["source"], "device");
    assert_eq!(ev["routed"], "dm");
    assert_eq!(ev["digest"], "ok");
    assert_eq!(ev["notification"]["server_id"], "com.example.dms");
    assert!(ev["ts"].as_str().is_some());
    // Secrets never reach the output.
    assert!(!first.to_string().contains("srvpass") && !ev.to_string().contains("srvpass"));
}

#[test]
fn sim_rejects_bad_device_credentials_without_echoing_the_password() {
    let out = Command::new(BIN)
        .args([
            "sim",
            "--udp",
            "127.0.0.1:0",
            "--device",
            "+15550000001=srv:topsecret:not*base64",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nonce is not valid base64"), "{err}");
    assert!(!err.contains("topsecret"), "{err}");
}

#[test]
fn demo_runs_to_success() {
    let mut child = Command::new(BIN)
        .args(["demo", "--timeout-secs", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the demo has its own 60 s deadline; guard against a hang beyond it.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("dmpushd demo hung");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "demo failed:\n{stderr}\n{stdout}");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines on stdout"))
        .collect();
    assert!(events.iter().all(|e| e["routed"] == "dm"), "{stdout}");
    assert!(
        events
            .iter()
            .any(|e| e["bearer"] == "sms" && e["segments"].as_u64() > Some(1))
    );
    assert!(events.iter().any(|e| e["digest"] == "ok"));
    assert!(events.iter().any(|e| e["hmac"] == "ok"));
    assert!(stderr.contains("OK:"), "{stderr}");
}
