//! Truthful outcomes after failures (issue 10 part B, DESIGN §10.1): one owner process per
//! SQLite file, prompt recovery after `kill -9` (SQLite: leases taken back at start; PostgreSQL:
//! dead replicas swept), takeovers visible as events and counted, a panicking binding costing
//! only the attempt, and retention.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use dmpushd::{
    binding::{
        Binding, BindingKind, Bindings, CannotCarry, ContentType, Delivery, DeviceBinding, Outcome,
        Preview,
    },
    metrics::Metrics,
    queue::{Dispatcher, DispatcherConfig, RetryPolicy, now_ms},
    store::{PushState, Store, StoreError, takeover_detail},
};
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{
    free_port,
    gateway::{Gateway, TOKEN_A, metric, settings},
    process::{count_states, spawn_serve, wait_ok},
    receiver::Receiver,
    store::{PgDb, SqliteDb, T0, push},
};

const TOKEN: &str = "recovery-token";
const LEASE: Duration = Duration::from_secs(60);

/// A gateway process that is killed when the test ends, also on a failed assertion.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config for one `dmpushd serve` on the SQLite file `db`, with the default lease (60 s):
/// recovery must not wait for it.
fn sqlite_config(
    dir: &std::path::Path,
    name: &str,
    db: &std::path::Path,
    ca: &std::path::Path,
) -> (std::path::PathBuf, String) {
    let port = free_port();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_seconds = 1\n[store]\nurl = \"sqlite://{}\"\n\
             [queue]\nworkers = 64\nper_target_concurrency = 64\npoll_interval_ms = 200\n\
             [[tenants]]\nname = \"t\"\ntoken = \"{TOKEN}\"\n\
             [bindings.http]\nallow_targets = [\"127.0.0.0/8\"]\nca_file = \"{}\"\n[log]\nlevel = \"warn\"\n",
            db.display(),
            ca.display()
        ),
    )
    .unwrap();
    (path, format!("http://127.0.0.1:{port}"))
}

async fn submit(http: &reqwest::Client, base: &str, n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncBody><Alert><CmdID>1</CmdID><Data>{tag}-{i}</Data></Alert></SyncBody></SyncML>"#
        );
        let r = http
            .post(format!("{base}/v1/pushes"))
            .bearer_auth(TOKEN)
            .json(&json!({"device": "dev", "body": body}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn put_device(http: &reqwest::Client, base: &str, rx: &Receiver) {
    let r = http
        .put(format!("{base}/v1/devices/dev"))
        .bearer_auth(TOKEN)
        .json(&json!({"bindings": [{"type": "http", "url": rx.url("/p")}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

/// Takeover events in the SQLite file, by push.
async fn sqlite_takeover_events(db: &std::path::Path) -> Vec<(String, String)> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT push_id, detail FROM push_events WHERE state = 'sending' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

async fn sqlite_sending_ids(db: &std::path::Path) -> Vec<String> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM pushes WHERE state = 'sending'")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    ids
}

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A second `serve` on the same SQLite file fails at once, naming the file and the owner; the
/// first one keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_serve_on_the_same_sqlite_file_fails() {
    let rx = Receiver::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("owned.db");
    let (first_cfg, first_base) = sqlite_config(dir.path(), "first", &db, &rx.ca_file);
    let (second_cfg, _) = sqlite_config(dir.path(), "second", &db, &rx.ca_file);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let first = Proc(spawn_serve(&first_cfg));
    wait_ok(&http, &first_base, "/readyz").await;

    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dmpushd"))
        .args(["serve", "--config"])
        .arg(&second_cfg)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second process must fail at once, not wait"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second serve must fail: {stderr}");
    assert!(
        stderr.contains(&db.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("owned by another dmpushd process"),
        "says why: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", first.0.id())),
        "names the owner: {stderr}"
    );
    // The owner is unaffected.
    wait_ok(&http, &first_base, "/readyz").await;
    drop(first);
}

/// In-process: the store refuses a second open of the same file while the first lives, and
/// accepts it once the first is dropped (the lock dies with its owner, as on `kill -9`).
#[tokio::test]
async fn sqlite_store_has_one_owner() {
    let db = SqliteDb::create();
    let first = db.open().await;
    let err = match dmpushd::store::open(&db.options()).await {
        Ok(_) => panic!("second open of the same file must fail"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Owned { .. }), "{err}");
    assert!(!err.is_transient());
    drop(first);
    let _again = db.open().await;
}

/// SQLite: the start-up of the owner makes every lease of an earlier process claimable at once
/// (not after the lease), and the claim writes the takeover event.
#[tokio::test]
async fn sqlite_start_takes_back_every_lease() {
    let db = SqliteDb::create();
    let (a, b, c) = {
        let s = db.open().await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            let p = push("t1");
            ids.push(p.id.clone());
            s.enqueue(p).await.unwrap();
        }
        // The first two leased by the process that dies, the third still waiting.
        assert_eq!(s.claim("dead-1", T0, LEASE, 2).await.unwrap().len(), 2);
        (ids[0].clone(), ids[1].clone(), ids[2].clone())
    };
    let s = db.open().await;
    let now = T0 + 1_000; // far inside the old 60 s lease
    assert_eq!(
        s.get_push("t1", &a).await.unwrap().unwrap().state,
        PushState::Sending
    );
    assert_eq!(s.start_replica("new", now).await.unwrap(), 2);
    let got = s.claim("new", now, LEASE, 10).await.unwrap();
    let mut taken: Vec<_> = got
        .iter()
        .map(|c| (c.id.clone(), c.taken_over_from.clone(), c.attempt))
        .collect();
    taken.sort();
    let mut want = vec![
        (a.clone(), Some("dead-1".to_owned()), 2),
        (b.clone(), Some("dead-1".to_owned()), 2),
        (c.clone(), None, 1),
    ];
    want.sort();
    assert_eq!(
        taken, want,
        "both leases at once (not after 60 s), c as a plain claim"
    );
    for id in [&a, &b] {
        let r = s.get_push("t1", id).await.unwrap().unwrap();
        let e = r.events.last().unwrap();
        assert_eq!(e.state, PushState::Sending);
        assert_eq!(e.detail, takeover_detail("dead-1", 1, "new"));
    }
    let r = s.get_push("t1", &c).await.unwrap().unwrap();
    assert!(
        r.events.iter().all(|e| e.state != PushState::Sending),
        "no takeover for c"
    );
}

/// PostgreSQL: heartbeats and the dead-replica sweep. A replica silent past the bound loses its
/// leases at once (whatever their length); a live one keeps them; a clean stop removes the row;
/// a restart under the same id takes back its own leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dead_replica_leases_are_swept() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    let s = pg.open().await;
    for _ in 0..4 {
        s.enqueue(push("t1")).await.unwrap();
    }
    assert_eq!(s.start_replica("a", T0).await.unwrap(), 0);
    s.heartbeat("b", T0).await.unwrap();
    assert_eq!(s.claim("a", T0, LEASE, 2).await.unwrap().len(), 2);
    assert_eq!(s.claim("b", T0, LEASE, 1).await.unwrap().len(), 1);
    // b beats on, a does not.
    s.heartbeat("b", T0 + 9_000).await.unwrap();
    // Nobody is dead yet.
    assert_eq!(s.sweep_dead_replicas(T0 - 1, T0 + 9_000).await.unwrap(), 0);
    let now = T0 + 11_000;
    assert_eq!(s.sweep_dead_replicas(now - 10_000, now).await.unwrap(), 2);
    // Swept once: a's row is gone.
    assert_eq!(s.sweep_dead_replicas(now - 10_000, now).await.unwrap(), 0);
    let got = s.claim("b", now, LEASE, 10).await.unwrap();
    // a's two leases and the waiting push; b's own lease is not touched.
    assert_eq!(got.len(), 3);
    let taken: Vec<_> = got.iter().filter(|c| c.taken_over_from.is_some()).collect();
    assert_eq!(taken.len(), 2);
    for c in taken {
        assert_eq!(c.taken_over_from.as_deref(), Some("a"));
        let r = s.get_push("t1", &c.id).await.unwrap().unwrap();
        assert_eq!(
            r.events.last().unwrap().detail,
            takeover_detail("a", 1, "b")
        );
    }
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT id FROM replicas ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows, ["b"]);
    // b restarts under the same id (e.g. `kill -9` and a fixed replica_id): its own leases are
    // taken back at once.
    assert_eq!(s.start_replica("b", now + 1).await.unwrap(), 4);
    assert_eq!(s.claim("b", now + 1, LEASE, 10).await.unwrap().len(), 4);
    s.stop_replica("b").await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT id FROM replicas")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(rows.is_empty(), "a clean stop removes the row: {rows:?}");
    pool.close().await;
}

/// `kill -9` of the real binary during deliveries, restart on the same SQLite file with the
/// default 60 s lease: every accepted push is final within 10 s of the restart, every push that
/// was in flight carries one takeover event, and the counter says how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_resumes_within_10_s() {
    // Slow answers keep many attempts in flight at the kill.
    let rx = Arc::new(Receiver::start(Duration::from_millis(300)).await);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("resume.db");
    let (cfg, base) = sqlite_config(dir.path(), "gw", &db, &rx.ca_file);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut gw = Proc(spawn_serve(&cfg));
    wait_ok(&http, &base, "/readyz").await;
    put_device(&http, &base, &rx).await;
    const N: usize = 400;
    let ids = submit(&http, &base, N, "r").await;
    rx.wait_count(40, Duration::from_secs(60)).await;
    gw.0.kill().unwrap();
    gw.0.wait().unwrap();
    let in_flight = sqlite_sending_ids(&db).await;
    assert!(
        !in_flight.is_empty(),
        "the kill came too late to test anything"
    );

    let restarted = Instant::now();
    let _gw = Proc(spawn_serve(&cfg));
    wait_ok(&http, &base, "/readyz").await;
    loop {
        let s = count_states(&db).await;
        let total: i64 = s.values().sum();
        assert_eq!(total as usize, N, "every accepted push is stored: {s:?}");
        let fin: i64 = s
            .iter()
            .filter(|(k, _)| PushState::parse(k).is_some_and(PushState::is_final))
            .map(|(_, n)| n)
            .sum();
        if fin as usize == N {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "not every push final 10 s after the restart: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = restarted.elapsed();
    // Exactly one takeover event per push that was in flight, and only on those.
    let events = sqlite_takeover_events(&db).await;
    let mut with_event: Vec<String> = events.iter().map(|(id, _)| id.clone()).collect();
    with_event.sort();
    let mut want = in_flight.clone();
    want.sort();
    assert_eq!(
        with_event, want,
        "one takeover event per push in flight at the kill"
    );
    assert!(
        events.iter().all(|(_, d)| d.contains("taken over")),
        "{events:?}"
    );
    let text = scrape(&http, &base).await;
    assert_eq!(
        metric(&text, "dmpushd_lease_takeovers_total") as usize,
        in_flight.len()
    );
    assert_eq!(ids.len(), N);
    println!(
        "recovery: {} in flight at kill -9, all {N} final {:.1} s after the restart",
        in_flight.len(),
        elapsed.as_secs_f64()
    );
}

/// A binding that panics on its first `fail` calls and delivers afterwards.
struct Panicky {
    calls: AtomicUsize,
    fail: usize,
}

impl Binding for Panicky {
    fn kind(&self) -> BindingKind {
        BindingKind::Wap
    }

    fn preview(
        &self,
        _target: &DeviceBinding,
        _content_type: ContentType,
        _body: &[u8],
    ) -> Result<Preview, CannotCarry> {
        Err(CannotCarry::Target("test binding".into()))
    }

    fn deliver(&self, _delivery: Delivery) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            if n < self.fail {
                panic!("boom {n}");
            }
            Outcome::Delivered {
                detail: "ok".into(),
            }
        })
    }
}

async fn run_dispatcher_until_final(
    store: Arc<dyn Store>,
    binding: Arc<Panicky>,
    id: &str,
) -> (dmpushd::store::PushRecord, Metrics) {
    let metrics = Metrics::new().unwrap();
    let dispatcher = Dispatcher::new(
        store.clone(),
        Bindings::new(vec![binding]),
        metrics.clone(),
        DispatcherConfig {
            owner: "panic-test".into(),
            workers: 4,
            claim_batch: 4,
            lease: LEASE,
            poll: Duration::from_millis(20),
            retry: RetryPolicy {
                base: Duration::from_millis(10),
                max: Duration::from_millis(20),
            },
            per_target: 4,
            tenant_max_inflight: 4,
            tenants: Vec::new(),
            grace: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(10),
            retention: Duration::from_secs(3600),
            purge_interval: Duration::from_secs(3600),
            receipt_grace: Duration::from_secs(600),
        },
    );
    let (_tx, receipts) = tokio::sync::mpsc::channel(1);
    let stop = CancellationToken::new();
    let task = tokio::spawn(dispatcher.run(receipts, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let rec = loop {
        let r = store.get_push("t1", id).await.unwrap().unwrap();
        if r.state.is_final() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "push stuck in {}: {:?}",
            r.state,
            r.events
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.cancel();
    task.await.unwrap();
    (rec, metrics)
}

fn fresh_push() -> dmpushd::store::NewPush {
    let now = now_ms();
    let mut p = push("t1");
    p.created_at_ms = now;
    p.not_before_ms = now;
    p.expires_at_ms = now + 3_600_000;
    p.binding_choice = Some(BindingKind::Wap);
    p.max_attempts = 3;
    // Inline: no device is registered in these stores, and a push naming a missing device
    // fails "device deleted" (its secrets are read from the device per attempt).
    p.device_id = None;
    p
}

/// A panic in `Binding::deliver` costs the attempt: a transient failure (retried), counted as
/// outcome `panic`, never a push left `sending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_binding_costs_the_attempt() {
    let db = SqliteDb::create();
    let store = db.open().await;
    let p = fresh_push();
    let id = p.id.clone();
    store.enqueue(p).await.unwrap();
    let binding = Arc::new(Panicky {
        calls: AtomicUsize::new(0),
        fail: 1,
    });
    let (rec, metrics) = run_dispatcher_until_final(store.clone(), binding.clone(), &id).await;
    assert_eq!(rec.state, PushState::Delivered, "{:?}", rec.events);
    assert_eq!(rec.attempts, 2);
    let retry = rec
        .events
        .iter()
        .find(|e| e.state == PushState::RetryWait)
        .expect("the panicked attempt is a transient failure");
    assert!(
        retry.detail.contains("binding panicked: boom 0"),
        "{}",
        retry.detail
    );
    let text = metrics.render();
    assert_eq!(
        metric(
            &text,
            r#"dmpushd_deliveries_total{binding="wap",outcome="panic"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"dmpushd_deliveries_total{binding="wap",outcome="delivered"}"#
        ),
        1.0
    );
    assert_eq!(metrics.leases_held.get(), 0);

    // Panicking every time: the attempts run out and the push fails; it never stays `sending`.
    let p = fresh_push();
    let id = p.id.clone();
    store.enqueue(p).await.unwrap();
    let binding = Arc::new(Panicky {
        calls: AtomicUsize::new(0),
        fail: usize::MAX,
    });
    let (rec, metrics) = run_dispatcher_until_final(store, binding.clone(), &id).await;
    assert_eq!(rec.state, PushState::Failed, "{:?}", rec.events);
    assert_eq!(binding.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        metric(
            &metrics.render(),
            r#"dmpushd_deliveries_total{binding="wap",outcome="panic"}"#
        ),
        3.0
    );
}

/// Retention of 2 s: a final push answers 404 within a few seconds, with its events; a push that
/// is not final stays, however old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_final_pushes_only() {
    let rx = Receiver::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.store.retention_seconds = 2;
    s.store.purge_interval_seconds = 1;
    s.bindings.http.ca_file = Some(rx.ca_file.clone());
    let gw = Gateway::start_with(s, Some(dir)).await;
    gw.put_device(
        TOKEN_A,
        "dev",
        json!({"bindings": [{"type": "http", "url": rx.url("/p")}]}),
    )
    .await;
    let body = r#"<SyncML xmlns="SYNCML:SYNCML1.2"/>"#;
    let done = gw
        .push(TOKEN_A, json!({"device": "dev", "body": body}))
        .await;
    let later = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let waiting = gw
        .push(
            TOKEN_A,
            json!({"device": "dev", "body": body, "not_before": later}),
        )
        .await;
    let v = gw.wait_final(TOKEN_A, &done, Duration::from_secs(10)).await;
    assert_eq!(v["state"], "delivered");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = gw
            .call("GET", &format!("/v1/pushes/{done}"), Some(TOKEN_A), None)
            .await;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "final push not purged within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Purged more than a retention ago from its creation, the waiting push is still there.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let w = gw.get_push(TOKEN_A, &waiting).await;
    assert_eq!(w["state"], "queued");
    assert!(gw.metrics.store_purged.get() >= 1);
    let text = gw.metrics_text().await;
    assert!(metric(&text, "dmpushd_store_purged_total") >= 1.0, "{text}");
    gw.stop().await;
}
