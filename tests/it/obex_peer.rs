//! The OBEX binding against an independent OBEX server: `obex_test -i` (Debian openobex-apps),
//! and the session decoded by an independent dissector: tshark (`-d tcp.port==650,obex`).
//!
//! `obex_test` listens on TCP `*:650` only, so each session runs in a private network namespace:
//! the parent test starts `unshare -n bash tests/peers/obex/run_obex_test.sh … -- <this test
//! binary> obex_peer::peer_child_push --ignored --exact`, i.e. this binary re-executed inside the
//! namespace running the `#[ignore]`d child test, which pushes through the real binding to
//! 127.0.0.1:650.
//! The parent then compares the file obex_test wrote with the payload, byte for byte.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use dmpushd::binding::{
    Binding, ContentType, DeviceBinding, Outcome,
    obex::{ObexBinding, ObexConfig},
};

use crate::support;

const CHILD_ENV: &str = "DMPUSHD_OBEX_PEER_CHILD";
/// The child test's name in the `it` binary (module path without the crate).
const CHILD_TEST: &str = "obex_peer::peer_child_push";

/// A namespace is available (root, or user namespaces allowed). Missing → like a missing peer.
fn require_unshare() -> bool {
    if support::require_tool("unshare").is_none() || support::require_tool("ip").is_none() {
        return false;
    }
    let ok = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("DMPUSHD_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!(
                "`unshare -n` is not permitted here; the obex_test peer needs a network namespace"
            );
        }
        eprintln!("SKIP: `unshare -n` not permitted (needs root or user namespaces)");
    }
    ok
}

struct Run {
    dir: tempfile::TempDir,
    stdout: String,
    stderr: String,
}

impl Run {
    fn srv(&self) -> PathBuf {
        self.dir.path().join("srv")
    }
    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
    fn pcap(&self) -> PathBuf {
        self.dir.path().join("obex.pcap")
    }
}

/// One session: obex_test in a namespace, our binding pushing `payload` as `ct`.
fn run_session(ct: &str, payload: &[u8], capture: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let payload_path = dir.path().join("payload");
    std::fs::write(&payload_path, payload).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/obex/run_obex_test.sh");
    let exe = std::env::current_exe().unwrap();
    let pcap = if capture {
        dir.path().join("obex.pcap").display().to_string()
    } else {
        String::new()
    };
    let out = Command::new("timeout")
        .arg("120")
        .arg("unshare")
        .arg("-n")
        .arg("bash")
        .arg(&script)
        .arg(dir.path().join("srv"))
        .arg(&pcap)
        .arg("--")
        .arg(&exe)
        .args([
            // libtest names a test by its module path; `--exact` needs all of it.
            CHILD_TEST,
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}|{ct}", payload_path.display()))
        .output()
        .expect("run unshare");
    let run = Run {
        dir,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        out.status.success(),
        "session failed ({:?})\n--- stdout\n{}\n--- stderr\n{}\n--- obex_test log\n{}",
        out.status,
        run.stdout,
        run.stderr,
        run.server_log()
    );
    run
}

/// The child: runs inside the namespace, pushes through the real binding to obex_test.
#[tokio::test]
#[ignore = "child process of the obex_test interop tests; started by them inside `unshare -n`"]
async fn peer_child_push() {
    let spec = std::env::var(CHILD_ENV).expect("started by the parent test");
    let (path, ct) = spec.rsplit_once('|').unwrap();
    let body = std::fs::read(path).unwrap();
    let content_type = match ct {
        "wbxml" => ContentType::DmWbxml,
        "xml" => ContentType::DmXml,
        _ => ContentType::Notification,
    };
    let reg = prometheus::Registry::new();
    let b = ObexBinding::new(
        &ObexConfig {
            allow_targets: vec!["127.0.0.0/8".into()],
            io_timeout_ms: 5_000,
            ..Default::default()
        },
        &reg,
    )
    .unwrap();
    let target = DeviceBinding::Obex {
        address: "127.0.0.1:650".parse().unwrap(),
        password: None,
    };
    let mut d = support::delivery(target, content_type, &body);
    d.push_id = "peer".into();
    let out = tokio::time::timeout(Duration::from_secs(20), b.deliver(d))
        .await
        .expect("bounded");
    println!("OUTCOME {out:?}");
    assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
}

fn wbxml_fixture() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/obex/dm12.wbxml"))
        .unwrap()
}

#[test]
fn obex_test_receives_single_packet_wbxml_byte_identical() {
    if support::require_tool("obex_test").is_none() || !require_unshare() {
        return;
    }
    let payload = wbxml_fixture();
    assert!(payload.len() < 900, "fits one 1024-octet packet");
    let run = run_session("wbxml", &payload, false);
    let written = std::fs::read(run.srv().join("dm.wbxml")).unwrap_or_else(|e| {
        panic!(
            "obex_test wrote no dm.wbxml ({e})\n{}\n{}",
            run.server_log(),
            run.stdout
        )
    });
    assert_eq!(written, payload);
    assert!(
        run.stdout.contains("(1 packet(s), relay max 1024"),
        "{}",
        run.stdout
    );
    assert!(
        run.server_log()
            .contains(&format!("Wrote dm.wbxml ({} bytes)", payload.len())),
        "{}",
        run.server_log()
    );
}

#[test]
fn obex_test_receives_multi_packet_put_byte_identical_and_tshark_decodes_it() {
    if support::require_tool("obex_test").is_none() || !require_unshare() {
        return;
    }
    let tshark = support::require_tool("tshark").is_some();
    // 5000 octets of XML-ish text: five PUT packets at obex_test's 1024-octet maximum.
    let mut payload = b"<SyncML xmlns='SYNCML:SYNCML1.2'>".to_vec();
    while payload.len() < 4990 {
        payload.extend_from_slice(format!("<Item n='{}'/>", payload.len()).as_bytes());
    }
    payload.extend_from_slice(b"</SyncML>");
    let run = run_session("xml", &payload, tshark);
    let written = std::fs::read(run.srv().join("dm.xml"))
        .unwrap_or_else(|e| panic!("obex_test wrote no dm.xml ({e})\n{}", run.server_log()));
    assert_eq!(written, payload);
    assert!(
        run.stdout.contains("(5 packet(s), relay max 1024"),
        "{}",
        run.stdout
    );
    if !tshark {
        return;
    }
    // Independent decode of the capture.
    let out = Command::new("tshark")
        .arg("-r")
        .arg(run.pcap())
        .args([
            "-d",
            "tcp.port==650,obex",
            "-Y",
            "obex",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=f",
            "-e",
            "obex.opcode",
            "-e",
            "obex.final_flag",
            "-e",
            "obex.resp_code",
            "-e",
            "obex.name",
            "-e",
            "obex.type",
            "-e",
            "obex.length",
            "-e",
            "obex.max_pkt_len",
        ])
        .output()
        .expect("tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    let requests: Vec<&Vec<&str>> = rows.iter().filter(|r| !r[0].is_empty()).collect();
    // CONNECT, 5 × PUT, DISCONNECT; opcodes as tshark prints them (without the final bit).
    let ops: Vec<&str> = requests.iter().map(|r| r[0]).collect();
    assert_eq!(
        ops,
        ["0x00", "0x02", "0x02", "0x02", "0x02", "0x02", "0x01"],
        "tshark rows:\n{text}"
    );
    let finals: Vec<&str> = requests.iter().map(|r| r[1]).collect();
    assert_eq!(finals[1..6], ["0", "0", "0", "0", "1"], "{text}");
    assert_eq!(requests[0][6], "4096", "our announced max packet: {text}");
    let first_put = requests[1];
    assert_eq!(first_put[3], "dm.xml", "{text}");
    assert_eq!(first_put[4], "application/vnd.syncml.dm+xml", "{text}");
    assert_eq!(first_put[5], payload.len().to_string(), "{text}");
}
