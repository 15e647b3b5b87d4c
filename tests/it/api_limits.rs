//! The API survives slow and idle clients (DESIGN §10.3, issue 12 acceptance 3), against the real
//! `serve` process: half-sent requests are closed after `server.header_timeout_seconds`, a normal
//! client is served meanwhile, connections beyond `server.max_connections` are refused at once,
//! and SIGTERM ends the process within `shutdown_grace_seconds` + 5 s whatever is open.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::free_port;

const TOKEN: &str = "limits-token";

fn spawn(dir: &Path, port: u16, server_extra: &str) -> Child {
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{server_extra}\n\
             [store]\nurl = \"sqlite://{}\"\n\
             [bindings.http]\nallow_targets = [\"127.0.0.0/8\"]\n\
             [[tenants]]\nname = \"t\"\ntoken = \"{TOKEN}\"\n",
            dir.join("d.db").display()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_dmpushd"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("DMPUSHD_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// One request on its own connection; the whole response.
fn request(port: u16, req: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(req.as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = request(
            port,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ) && r.starts_with("HTTP/1.1 200")
        {
            return;
        }
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A push (to a closed loopback port: what happens to it later does not matter here).
fn submit(port: u16, closed: u16) -> (String, Duration) {
    let body = format!(
        r#"{{"bindings":[{{"type":"http","url":"https://127.0.0.1:{closed}/p"}}],"content_type":"application/vnd.syncml.notification","body_base64":"AAAA"}}"#
    );
    let start = Instant::now();
    let resp = request(
        port,
        &format!(
            "POST /v1/pushes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    (resp, start.elapsed())
}

/// `n` connections that each send half a request's headers and then nothing.
fn half_requests(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"POST /v1/pushes HTTP/1.1\r\nHost: x\r\nContent-Le")
                .unwrap();
            s
        })
        .collect()
}

/// The connection was closed by the server (EOF or reset), not still open at `by`.
fn closed_by(s: &mut TcpStream, by: Instant) -> bool {
    let left = by.saturating_duration_since(Instant::now());
    s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
        .unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 or similar before the close is fine
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true, // reset
        }
    }
}

fn sigterm(child: &Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn half_sent_requests_are_closed_after_the_header_timeout_and_do_not_slow_others() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let closed = free_port();
    let mut child = spawn(dir.path(), port, "header_timeout_seconds = 3");
    wait_ready(port);
    // The usual latency, measured on this (possibly loaded) machine.
    let (resp, usual) = submit(port, closed);
    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    let opened = Instant::now();
    let mut slow = half_requests(port, 200);
    // Silent connections too (they never send a byte).
    slow.extend((0..20).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()));
    let (resp, loaded) = submit(port, closed);
    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    assert!(
        loaded < usual * 5 + Duration::from_millis(500),
        "with 220 slow connections open a push took {loaded:?} (usual {usual:?})"
    );
    // Still open well before the timeout (the server does not just close everything)…
    let mut first = slow.remove(0);
    assert!(
        !closed_by(&mut first, opened + Duration::from_millis(1500)),
        "closed before the header timeout"
    );
    // …and closed after it (3 s; generous margin for a loaded machine).
    let by = opened + Duration::from_secs(3 + 7);
    assert!(closed_by(&mut first, by));
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(
            closed_by(s, by),
            "connection {i} still open after the header timeout"
        );
    }
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(20)).is_some());
}

#[test]
fn sigterm_exits_within_grace_whatever_connections_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A header timeout far longer than the test: only shutdown can close these connections.
    let mut child = spawn(
        dir.path(),
        port,
        "header_timeout_seconds = 600\nshutdown_grace_seconds = 2\nmax_connections = 260",
    );
    wait_ready(port);
    let _slow = half_requests(port, 200);
    let _silent: Vec<_> = (0..50)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Idle keep-alive connection after a complete request.
    let mut kept = TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Beyond max_connections (260; 251 open): refused at once with 503, not queued.
    let over: Vec<_> = (0..60)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut refused = 0;
    for mut s in over {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut r = Vec::new();
        if s.read_to_end(&mut r).is_ok() && r.starts_with(b"HTTP/1.1 503") {
            refused += 1;
        }
    }
    assert!(
        refused >= 40,
        "connections beyond the cap answered 503: {refused}"
    );
    let start = Instant::now();
    sigterm(&child);
    let st = wait_exit(&mut child, Duration::from_secs(2 + 5))
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", start.elapsed()));
    assert!(st.success(), "exit status {st}");
}

/// `[[tenants]] max_pushes_per_second`: above the rate a tenant gets 429 with `Retry-After`;
/// another tenant is not affected (the bucket is per tenant).
#[tokio::test]
async fn a_tenant_above_its_push_rate_gets_429_with_retry_after() {
    use crate::support::gateway::{Gateway, TOKEN_A, TOKEN_B, settings};
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.tenants[0].max_pushes_per_second = Some(5.0);
    let gw = Gateway::start_with(s, Some(dir)).await;
    let push = serde_json::json!({
        "bindings": [{"type": "http", "url": "https://127.0.0.1:9/p"}],
        "content_type": "application/vnd.syncml.notification",
        "body_base64": "AAAA",
    });
    let mut codes = Vec::new();
    let mut retry_after = None;
    for _ in 0..12 {
        let r = gw
            .http
            .post(format!("{}/v1/pushes", gw.base))
            .bearer_auth(TOKEN_A)
            .json(&push)
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
        }
    }
    let accepted = codes.iter().filter(|c| **c == 202).count();
    assert!((5..=7).contains(&accepted), "{codes:?}");
    assert!(codes.contains(&429), "{codes:?}");
    assert!(matches!(retry_after, Some(1..=2)), "{retry_after:?}");
    // Tenant B has no limit of its own and is not charged for A.
    for _ in 0..12 {
        let (st, b) = gw
            .call("POST", "/v1/pushes", Some(TOKEN_B), Some(push.clone()))
            .await;
        assert_eq!(st, 202, "{b}");
    }
    // A batch counts each push: 5 items on a drained bucket are refused.
    let (st, _) = gw
        .call(
            "POST",
            "/v1/pushes/batch",
            Some(TOKEN_A),
            Some(serde_json::json!([
                push.clone(),
                push.clone(),
                push.clone(),
                push.clone(),
                push
            ])),
        )
        .await;
    assert_eq!(st, 429);
    gw.stop().await;
}
