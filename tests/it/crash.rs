//! Crash safety (DESIGN §7, issue #2 acceptance 7, issue 10 acceptance 7): `kill -9` the real
//! gateway binary while deliveries are in flight, restart it on the same database, and check that
//! every push that got a 202 reaches a final state well inside 60 s of the restart (with the
//! default 60 s lease: the restarted owner takes the dead process's leases back at once), none is
//! lost, every push that was in flight carries a takeover event, and duplicates at the receiver
//! are bounded by the pushes that were leased at the moment of the kill.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::support::{
    free_port,
    process::{count_states, spawn_serve as spawn, wait_ok},
    receiver::Receiver,
};
use serde_json::json;

const TOKEN: &str = "crash-token";
const N: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing() {
    let rx = Arc::new(Receiver::start(Duration::from_millis(40)).await);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let port = free_port();
    let config = dir.path().join("dmpushd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_seconds = 1
[store]
url = "sqlite://{db}"
[queue]
workers = 64
per_target_concurrency = 64
backoff_base_ms = 200
backoff_max_ms = 1000
poll_interval_ms = 200
[[tenants]]
name = "crash"
token = "{TOKEN}"
[bindings.http]
allow_targets = ["127.0.0.0/8"]
ca_file = "{ca}"
[log]
format = "text"
level = "warn"
"#,
            db = db.display(),
            ca = rx.ca_file.display(),
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let mut child = spawn(&config);
    wait_ok(&http, &base, "/healthz").await;
    let r = http
        .put(format!("{base}/v1/devices/crash-dev"))
        .bearer_auth(TOKEN)
        .json(&json!({"bindings": [{"type": "http", "url": rx.url("/p")}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // Submit N pushes from 32 concurrent clients; remember every id answered 202.
    let mut tasks = Vec::new();
    for c in 0..32 {
        let http = http.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (c..N).step_by(32) {
                let body = format!(
                    r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncBody><Alert><CmdID>1</CmdID><Data>{i}</Data></Alert></SyncBody></SyncML>"#
                );
                let r = http
                    .post(format!("{base}/v1/pushes"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"device": "crash-dev", "body": body}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let v: serde_json::Value = r.json().await.unwrap();
                ids.push(v["id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        accepted.extend(t.await.unwrap());
    }
    assert_eq!(accepted.len(), N);

    // Kill while deliveries are in flight.
    rx.wait_count(300, Duration::from_secs(60)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = count_states(&db).await;
    let in_flight = *at_kill.get("sending").unwrap_or(&0);
    let delivered_before = rx.count();
    assert!(
        delivered_before < N,
        "the kill came too late to test anything"
    );

    // Restart on the same database. The lease is the default 60 s: waiting for it would miss
    // the bar; the new owner takes the dead process's leases back at start.
    let restarted = Instant::now();
    let mut child = spawn(&config);
    wait_ok(&http, &base, "/healthz").await;
    let deadline = restarted + Duration::from_secs(60);
    loop {
        let s = count_states(&db).await;
        let total: i64 = s.values().sum();
        assert_eq!(
            total as usize, N,
            "every accepted push is in the store: {s:?}"
        );
        if *s.get("delivered").unwrap_or(&0) as usize == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all pushes delivered 60 s after the restart: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered_in = restarted.elapsed();
    // Every push in flight at the kill was taken over once, visibly.
    let takeovers = takeover_events(&db).await;
    assert_eq!(
        takeovers, in_flight,
        "one takeover event per push leased at the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Every body reached the receiver; duplicates are bounded by the leases held at the kill.
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in rx.received() {
        *seen.entry(r.body.to_vec()).or_default() += 1;
    }
    assert_eq!(seen.len(), N, "every push reached the receiver");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "crash test: {N} accepted, {delivered_before} received before kill -9, {in_flight} leased at the kill, \
         all delivered {:.1} s after the restart, {duplicates} duplicate deliveries after restart",
        recovered_in.as_secs_f64()
    );
    assert!(
        duplicates as i64 <= in_flight,
        "duplicates {duplicates} > in flight {in_flight}"
    );
}

/// Takeover events (`sending` events) in the database file.
async fn takeover_events(db: &std::path::Path) -> i64 {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM push_events WHERE state = 'sending' AND detail LIKE '%taken over%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}
