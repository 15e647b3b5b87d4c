//! Secrets stay secret (DESIGN §10.3, issue 12 defect 6): a device URL with user-info and an
//! HMAC password appear in no push event, no JSON log line of a real `serve`, no API response
//! and no metric — including when the attempt fails with a transport error, whose reqwest text
//! used to carry the full URL.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::support::{
    free_port,
    gateway::{Gateway, TOKEN_A, settings},
    process::wait_ok,
};

const URL_SECRET: &str = "URLpw-7f3a9";
const HMAC_SECRET: &str = "HMACpw-c41e2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_info_and_hmac_password_appear_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Nothing listens here: the attempt fails with a connect error (transient, retried).
    let closed = free_port();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}\"\n\
             [[tenants]]\nname = \"t\"\ntoken = \"tok\"\n\
             [bindings.http]\nallow_targets = [\"127.0.0.0/8\"]\nallow_plaintext = true\n\
             [queue]\nbackoff_base_ms = 100\nbackoff_max_ms = 200\npoll_interval_ms = 50\n\
             [log]\nformat = \"json\"\nlevel = \"debug\"\n",
            dir.path().join("d.db").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmpushd"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    for pipe in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    let base = format!("http://127.0.0.1:{port}");
    dmpushd::tls::install_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_ok(&http, &base, "/healthz").await;
    let mut seen = Vec::<String>::new();
    let mut call = async |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut r = http
            .request(method, format!("{base}{path}"))
            .bearer_auth("tok");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        seen.push(text.clone());
        (status, text)
    };
    let url = format!("http://devuser:{URL_SECRET}@127.0.0.1:{closed}/push");
    let (s, t) = call(
        reqwest::Method::PUT,
        "/v1/devices/dev",
        Some(json!({"bindings": [{"type": "http", "url": url,
            "hmac": {"username": "u", "password": HMAC_SECRET, "nonce": "AAAA"}}]})),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    let (s, t) = call(
        reqwest::Method::POST,
        "/v1/pushes",
        Some(json!({"device": "dev", "content_type": "application/vnd.syncml.dm+xml", "body": "<SyncML/>"})),
    )
    .await;
    assert_eq!(s, 202, "{t}");
    let id = serde_json::from_str::<serde_json::Value>(&t).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Wait for two failed attempts: their details are in the push's events.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, t) = call(reqwest::Method::GET, &format!("/v1/pushes/{id}"), None).await;
        let p: serde_json::Value = serde_json::from_str(&t).unwrap();
        if p["attempts"].as_u64().unwrap_or(0) >= 2 {
            // The transport-error path ran (its reqwest text used to carry the whole URL).
            assert!(t.contains("connect error"), "{t}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempts: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, dev) = call(reqwest::Method::GET, "/v1/devices/dev", None).await;
    assert!(
        dev.contains(&format!("http://127.0.0.1:{closed}/push")),
        "{dev}"
    );
    call(reqwest::Method::GET, "/v1/devices", None).await;
    call(reqwest::Method::GET, "/v1/pushes", None).await;
    call(reqwest::Method::GET, "/metrics", None).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains(&id)),
        "the log mentions the push: {log:?}"
    );
    for text in seen.iter().chain(log.iter()) {
        for secret in [URL_SECRET, HMAC_SECRET, "devuser"] {
            assert!(!text.contains(secret), "{secret} leaked in: {text}");
        }
    }
}

/// `/metrics` is public without `server.metrics_token` and then names no tenant; with the token
/// it answers only to it and its labels name tenants.
#[tokio::test]
async fn metrics_name_tenants_only_behind_the_metrics_token() {
    let body = json!({"bindings": [{"type": "http", "url": "https://127.0.0.1:9/p"}],
        "content_type": "application/vnd.syncml.dm+xml", "body": "<SyncML/>"});
    let gw = Gateway::start().await;
    gw.push(TOKEN_A, body.clone()).await;
    let text = gw.metrics_text().await;
    assert!(
        text.contains(r#"dmpushd_pushes_accepted_total{tenant="_"} 1"#),
        "{text}"
    );
    assert!(!text.contains(r#"tenant="a""#), "{text}");
    gw.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.server.metrics_token = Some("scrape-token".into());
    let gw = Gateway::start_with(s, Some(dir)).await;
    gw.push(TOKEN_A, body).await;
    let get = |token: Option<&'static str>| {
        let mut r = gw.http.get(format!("{}/metrics", gw.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some(TOKEN_A)).await.unwrap().status(), 401);
    let ok = get(Some("scrape-token")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let text = ok.text().await.unwrap();
    assert!(
        text.contains(r#"dmpushd_pushes_accepted_total{tenant="a"} 1"#),
        "{text}"
    );
    gw.stop().await;
}

/// A registered device's HMAC password and URL user-info are not copied into its push rows; the
/// dispatcher takes them from the device per attempt, and a push whose device was deleted fails
/// permanently with "device deleted" (docs/security.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_secrets_stay_with_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dmpushd.db");
    let s = settings(dir.path());
    let gw = Gateway::start_with(s, Some(dir)).await;
    gw.put_device(
        TOKEN_A,
        "hmac-dev",
        json!({"bindings": [{"type": "http", "url": format!("https://devuser:{URL_SECRET}@127.0.0.1:9/p"),
            "hmac": {"username": "u", "password": HMAC_SECRET, "nonce": "AAAA"}},
            {"type": "obex", "address": "127.0.0.1:9", "password": "obex-pw-5521"}]}),
    )
    .await;
    let not_before = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let id = gw
        .push(
            TOKEN_A,
            json!({"device": "hmac-dev", "content_type": "application/vnd.syncml.dm+xml",
                "body": "<SyncML/>", "not_before": not_before}),
        )
        .await;
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let (row,): (String,) = sqlx::query_as("SELECT bindings FROM pushes WHERE id = ?")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(row.contains("127.0.0.1:9"), "{row}");
    for secret in [URL_SECRET, HMAC_SECRET, "devuser", "obex-pw-5521"] {
        assert!(!row.contains(secret), "{secret} in the push row: {row}");
    }
    let (s, _) = gw
        .call("DELETE", "/v1/devices/hmac-dev", Some(TOKEN_A), None)
        .await;
    assert!(s == 204 || s == 200, "{s}");
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(20)).await;
    assert_eq!(p["state"], "failed", "{p}");
    assert!(p["events"].to_string().contains("device deleted"), "{p}");
    gw.stop().await;
}
