//! The CLI and configuration contract (DESIGN §5): `serve` with no config file at all, env
//! overrides, `check-config`, `migrate`, and graceful shutdown on SIGTERM with exit 0.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::free_port;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dmpushd"));
    c.env_remove("DMPUSHD_CONFIG").env_remove("RUST_LOG");
    c
}

#[test]
fn check_config_validates_and_applies_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9999\"\n[[tenants]]\nname = \"t\"\ntoken = \"secret-token\"\n").unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("DMPUSHD__QUEUE__WORKERS", "7")
        .env(
            "DMPUSHD__BINDINGS__HTTP__ALLOW_TARGETS",
            "127.0.0.0/8,10.0.0.0/8",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("127.0.0.1:9999"), "{stdout}");
    assert!(stdout.contains("\"workers\": 7"), "{stdout}");
    assert!(stdout.contains("10.0.0.0/8"), "{stdout}");
    assert!(
        !stdout.contains("secret-token"),
        "tokens are redacted: {stdout}"
    );

    // Unknown keys and invalid values are errors naming the key, exit code 2.
    std::fs::write(&file, "[server]\nlisen = \"x\"\n").unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
    std::fs::write(&file, "[bindings.http]\nallow_targets = [\"not-a-cidr\"]\n").unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_targets"));
    // An explicitly named file must exist.
    let out = bin()
        .args(["check-config", "--config", "/nonexistent/dmpushd.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn migrate_creates_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let out = bin()
        .arg("migrate")
        .current_dir(dir.path())
        .env("DMPUSHD__STORE__URL", format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
}

#[test]
fn serve_without_config_file_uses_defaults_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = bin()
        .arg("serve")
        .current_dir(dir.path())
        .env("DMPUSHD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The development tenant's token is logged once.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let line = lines.next().expect("log line").unwrap();
        if let Some(i) = line.find("\"dev_token\":\"") {
            let rest = &line[i + 13..];
            break rest[..rest.find('"').unwrap()].to_owned();
        }
        assert!(Instant::now() < deadline);
    };
    assert!(token.starts_with("dev-"));
    assert!(
        dir.path().join("data/dmpushd.db").exists(),
        "SQLite under ./data/ by default"
    );
    // Wait for the listener, then a request with the logged token works.
    let deadline = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                use std::io::{Read, Write};
                write!(s, "GET /v1/pushes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").unwrap();
                let mut buf = String::new();
                s.read_to_string(&mut buf).unwrap();
                break buf;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("no listener: {e}"),
        }
    };
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Drain the rest of the log in the background so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "graceful shutdown exits 0, got {st}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every config section rejects a key it does not know, naming it (a typo in an operator's
/// file must not be ignored silently). `[bindings.sip]` used to accept anything.
#[test]
fn check_config_rejects_unknown_keys_in_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    for (section, header) in [
        ("server", "[server]"),
        ("store", "[store]"),
        ("queue", "[queue]"),
        ("log", "[log]"),
        ("tenants", "[[tenants]]\nname = \"t\"\ntoken = \"x\""),
        ("bindings", "[bindings]"),
        ("bindings.http", "[bindings.http]"),
        ("bindings.wap", "[bindings.wap]"),
        ("bindings.wap.smsc", "[[bindings.wap.smsc]]"),
        ("bindings.sip", "[bindings.sip]"),
        ("bindings.sip.credentials", "[[bindings.sip.credentials]]"),
        ("bindings.obex", "[bindings.obex]"),
    ] {
        std::fs::write(&file, format!("{header}\ntransprt_typo = \"tcp\"\n")).unwrap();
        let out = bin()
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "[{section}]: {stderr}");
        assert!(
            stderr.contains("transprt_typo"),
            "[{section}] names the key: {stderr}"
        );
    }
}

/// A binding's log line carries the attempt span's `push_id` and `device_id` (the binding itself
/// does not log them): the dispatcher runs each attempt inside its span.
#[test]
fn binding_log_lines_carry_the_push_id() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let device = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    device
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let device_addr = device.local_addr().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}\"\n\
             [[tenants]]\nname = \"t\"\ntoken = \"log-token\"\n[bindings.wap]\nallow_targets = [\"127.0.0.0/8\"]\n\
             [log]\nlevel = \"info,dmpushd::binding=debug\"\n",
            dir.path().join("d.db").display()
        ),
    )
    .unwrap();
    let mut child = bin()
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let body = format!(
        r#"{{"bindings":[{{"type":"wap","bearer":"udp","address":"{device_addr}"}}],"content_type":"application/vnd.syncml.notification","body_base64":"AAAA"}}"#
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let resp = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                use std::io::{Read, Write};
                write!(
                    s,
                    "POST /v1/pushes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer log-token\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                let mut buf = String::new();
                s.read_to_string(&mut buf).unwrap();
                break buf;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("no listener: {e}"),
        }
    };
    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    let i = resp.find("\"id\":\"").expect("push id in response") + 6;
    let push_id = &resp[i..i + resp[i..].find('"').unwrap()];
    // The datagram arrives: the attempt ran.
    let mut buf = [0u8; 2048];
    device.recv_from(&mut buf).expect("WSP push datagram");
    let line = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the binding's debug line");
        if l.contains("WDP datagram sent") {
            break l;
        }
    };
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(v["span"]["push_id"], push_id, "{line}");
    assert_eq!(v["span"]["name"], "attempt", "{line}");
    assert!(
        v["target"]
            .as_str()
            .unwrap()
            .starts_with("dmpushd::binding::wap"),
        "{line}"
    );
}
