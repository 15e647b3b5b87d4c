//! End-to-end throughput of real `dmpushd serve` processes (issue #6 acceptance 4): durable accepts
//! per second and deliveries per second, on SQLite with one replica and on PostgreSQL with one and
//! two replicas, in one run on one machine.
//!
//! `cargo bench --bench e2e -- [--seconds 10] [--connections 256]
//! [--setups sqlite,pg1,pg2,sqlite-sms,pg1-sms,sqlite-hooks,pg1-hooks]`
//!
//! Per setup: a fresh database (a temporary SQLite file, or a new PostgreSQL database through
//! `DMPUSHD_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), the release
//! `dmpushd` binary started once per replica, 100 devices with an HTTPS binding to one local
//! receiver (rustls, test CA) — or, in the `-sms` setups, a WAP binding over SMPP to `dmpushd
//! sim`'s simulated SMSC with delivery receipts — then two phases:
//!
//! 1. **Accepts.** `wrk` (Debian package `wrk`) posts DM messages for `--seconds`, its connections
//!    split across the replicas (as a load balancer would). Every push carries `not_before` just
//!    after the phase, so nothing is delivered while accepts are measured. Accepts/s = pushes in
//!    the database ÷ wrk's duration (a 202 is only sent after commit, so the database count is the
//!    durable figure).
//! 2. **Deliveries.** At `not_before` every push becomes due at once; deliveries/s = pushes ÷ time
//!    from then until the database records the last one `delivered`. Requests the receiver saw
//!    beyond that count are duplicates (reported; expected 0), and each replica's share comes from
//!    its `dmpushd_deliveries_total` metric.
//!
//! The `-hooks` setups (issue 11 acceptance 7) are `sqlite` and `pg1` with the tenant's
//! `webhook_url`/`webhook_secret` pointing at a local plain-HTTP receiver that counts webhooks
//! (one per push over HTTPS: `push.delivered`; `push.accepted` is for a next hop that accepts
//! before a receipt, e.g. an SMSC). Their accepts/s and
//! deliveries/s compare with the same setup without webhooks in the same run; a further line
//! gives webhooks/s in each phase and when the last webhook arrived.
//!
//! Everything — load generator, gateways, PostgreSQL, receiver — shares the same cores, as in the
//! other benchmarks in `docs/PERFORMANCE.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

#[path = "../tests/it/support/receiver.rs"]
#[allow(dead_code)]
mod receiver;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use receiver::Receiver;
use serde_json::json;
use sqlx::Connection;

const TOKEN: &str = "bench-token";
const DEVICES: usize = 100;

#[derive(Clone, Copy, Debug)]
enum Db {
    Sqlite,
    Postgres,
}

struct Setup {
    name: &'static str,
    db: Db,
    replicas: usize,
    /// SMS through SMPP to `dmpushd sim`'s simulated SMSC instead of HTTPS to the receiver.
    wap: bool,
    /// The tenant sends webhooks to the local [`HookCounter`].
    hooks: bool,
}

/// A plain-HTTP webhook receiver that answers 204 and counts: requests, distinct `webhook-id`s,
/// and the time of the last request.
struct HookCounter {
    port: u16,
    shared: std::sync::Arc<std::sync::Mutex<HookCounts>>,
}

#[derive(Default)]
struct HookCounts {
    requests: u64,
    ids: std::collections::HashSet<String>,
    last: Option<Instant>,
}

impl HookCounter {
    async fn start() -> HookCounter {
        use hyper::{Request, Response, service::service_fn};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared: std::sync::Arc<std::sync::Mutex<HookCounts>> = Default::default();
        let sh = shared.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let sh = sh.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let sh = sh.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let id = req
                                .headers()
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let _ = req.into_body().collect().await;
                            let mut g = sh.lock().unwrap();
                            g.requests += 1;
                            g.ids.insert(id);
                            g.last = Some(Instant::now());
                            drop(g);
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(204)
                                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                });
            }
        });
        HookCounter { port, shared }
    }

    /// (requests, distinct webhook-ids, time of the last request).
    fn counts(&self) -> (u64, u64, Option<Instant>) {
        let g = self.shared.lock().unwrap();
        (g.requests, g.ids.len() as u64, g.last)
    }
}

struct Gateway {
    child: Child,
    base: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGTERM first (graceful: leases released), then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database for one setup; PostgreSQL databases are dropped afterwards.
struct Database {
    url: String,
    admin: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Database {
    async fn create(db: Db) -> Database {
        let dir = tempfile::tempdir().expect("tempdir");
        match db {
            Db::Sqlite => Database {
                url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                admin: None,
                _dir: dir,
            },
            Db::Postgres => {
                let admin = std::env::var("DMPUSHD_TEST_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let name = format!("dmpushd_bench_{}", uuid::Uuid::new_v4().simple());
                let mut c = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL reachable (scripts/install.d/postgres.sh)");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut c)
                    .await
                    .expect("CREATE DATABASE");
                let root = admin.rsplit_once('/').map(|(r, _)| r).unwrap_or(&admin);
                Database {
                    url: format!("{root}/{name}"),
                    admin: Some((admin.clone(), name)),
                    _dir: dir,
                }
            }
        }
    }

    async fn drop_now(self) {
        if let Some((admin, name)) = &self.admin
            && let Ok(mut c) = sqlx::PgConnection::connect(admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
        }
    }

    /// (all pushes, delivered pushes).
    async fn counts(&self) -> (i64, i64) {
        const Q: &str = "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END), 0) FROM pushes";
        if self.admin.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect");
            let r: (i64, i64) = sqlx::query_as(Q).fetch_one(&mut c).await.expect("count");
            let _ = c.close().await;
            r
        } else {
            let mut c = sqlx::SqliteConnection::connect(&format!("{}?mode=ro", self.url))
                .await
                .expect("open");
            let r: (i64, i64) = sqlx::query_as(Q).fetch_one(&mut c).await.expect("count");
            let _ = c.close().await;
            r
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `dmpushd sim` as the SMSC (with delivery receipts), on a free port.
fn spawn_smsc() -> (Gateway, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_dmpushd"))
        .args(["sim", "--smpp"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dmpushd sim starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "simulated SMSC did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (
        Gateway {
            child,
            base: String::new(),
        },
        port,
    )
}

fn spawn(
    dir: &Path,
    name: &str,
    db_url: &str,
    ca: &Path,
    smsc: Option<u16>,
    hooks: Option<u16>,
) -> Gateway {
    let port = free_port();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_seconds = 2\n\
             [store]\nurl = \"{db_url}\"\n\
             [queue]\nreplica_id = \"{name}\"\n\
             [[tenants]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\n{}\
             [bindings.http]\nallow_targets = [\"127.0.0.0/8\"]\nca_file = \"{}\"\n\
             {}[log]\nlevel = \"warn\"\n",
            hooks.map_or(String::new(), |p| format!(
                "webhook_url = \"http://127.0.0.1:{p}/hooks\"\n\
                 webhook_secret = \"whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ==\"\n\
                 [webhooks]\nallow_targets = [\"127.0.0.0/8\"]\n"
            )),
            ca.display(),
            smsc.map_or(String::new(), |p| format!(
                "[[bindings.wap.smsc]]\nname = \"sim\"\nhost = \"127.0.0.1\"\nport = {p}\n\
                 system_id = \"bench\"\npassword = \"bench\"\nsource_addr = \"DMSERVER\"\n"
            ))
        ),
    )
    .expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_dmpushd"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dmpushd starts");
    Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{base} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The wrk script: rotates over the devices; every push due at `not_before`.
fn wrk_script(dir: &Path, not_before: &str) -> PathBuf {
    let path = dir.join("push.lua");
    let body = r#"<SyncML xmlns=\\"SYNCML:SYNCML1.2\\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:490154203237518</LocURI></Target><Source><LocURI>https://dms.example</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Final/></SyncBody></SyncML>"#;
    std::fs::write(
        &path,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\n\
             local n = 0\n\
             request = function()\n\
               n = n + 1\n\
               return wrk.format(nil, nil, nil, '{{\"device\":\"bench-' .. (n % {DEVICES}) .. \
             '\",\"not_before\":\"{not_before}\",\"ttl_seconds\":3600,\"body\":\"{body}\"}}')\n\
             end\n"
        ),
    )
    .expect("write wrk script");
    path
}

struct WrkResult {
    secs: f64,
    non_2xx: u64,
    p50: String,
    p99: String,
}

fn parse_wrk(out: &str) -> WrkResult {
    let mut r = WrkResult {
        secs: 0.0,
        non_2xx: 0,
        p50: "?".into(),
        p99: "?".into(),
    };
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("50%") {
            r.p50 = rest.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("99%") {
            r.p99 = rest.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = rest.trim().parse().unwrap_or(0);
        } else if line.contains(" requests in ") {
            // "123456 requests in 10.01s, 27.0MB read"
            if let Some(s) = line
                .split(" requests in ")
                .nth(1)
                .and_then(|t| t.split('s').next())
            {
                r.secs = s.parse().unwrap_or(0.0);
            }
        }
    }
    r
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn run(setup: &Setup, secs: u64, connections: usize, rx: &Receiver) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let db = Database::create(setup.db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Dropped last: the SMSC outlives the gateways that are bound to it.
    let smsc = setup.wap.then(spawn_smsc);
    let hooks = if setup.hooks {
        Some(HookCounter::start().await)
    } else {
        None
    };
    let mut gateways = Vec::new();
    for i in 0..setup.replicas {
        gateways.push(spawn(
            dir.path(),
            &format!("r{}", i + 1),
            &db.url,
            &rx.ca_file,
            smsc.as_ref().map(|(_, port)| *port),
            hooks.as_ref().map(|h| h.port),
        ));
        // One at a time: the first migrates the new database.
        wait_ready(&http, &gateways[i].base).await;
    }
    for d in 0..DEVICES {
        let r = http
            .put(format!("{}/v1/devices/bench-{d}", gateways[0].base))
            .bearer_auth(TOKEN)
            .json(&if setup.wap {
                json!({"bindings": [{"type": "wap", "msisdn": format!("+49170{d:07}")}]})
            } else {
                json!({"bindings": [{"type": "http", "url": rx.url(&format!("/d/{d}"))}]})
            })
            .send()
            .await
            .expect("register device");
        assert!(
            r.status().is_success(),
            "device registration: {}",
            r.status()
        );
    }
    let received_before = rx.count();
    let phase1_start = Instant::now();

    // Phase 1: accepts, nothing due.
    let due_ms = unix_ms() + (secs as i64 + 4) * 1000;
    let not_before = dmpushd::api::rfc3339(due_ms.div_euclid(1000) * 1000 + 1000);
    let due_ms = due_ms.div_euclid(1000) * 1000 + 1000;
    let script = wrk_script(dir.path(), &not_before);
    let per = (connections / setup.replicas).max(1);
    let threads = if setup.replicas == 1 { 2 } else { 1 };
    let wrks: Vec<_> = gateways
        .iter()
        .map(|g| {
            Command::new("wrk")
                .args([
                    format!("-t{threads}"),
                    format!("-c{per}"),
                    format!("-d{secs}s"),
                    "--latency".into(),
                    "-s".into(),
                ])
                .arg(&script)
                .arg(format!("{}/v1/pushes", g.base))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("wrk is installed (apt-get install wrk)")
        })
        .collect();
    let mut wrk_secs: f64 = 0.0;
    let mut non_2xx = 0;
    let mut lat = Vec::new();
    for w in wrks {
        let out = w.wait_with_output().expect("wrk finished");
        let r = parse_wrk(&String::from_utf8_lossy(&out.stdout));
        wrk_secs = wrk_secs.max(r.secs);
        non_2xx += r.non_2xx;
        lat.push(format!("{}/{}", r.p50, r.p99));
    }
    // Requests in flight when wrk stopped still commit (and are answered) afterwards: wait until
    // the count stops moving, or they would look like duplicates later.
    let (mut accepted, mut early) = db.counts().await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = db.counts().await;
        if now.0 == accepted {
            break;
        }
        (accepted, early) = now;
    }
    assert!(
        accepted > 0,
        "no push accepted ({non_2xx} non-2xx answers); check the wrk script"
    );
    assert!(
        unix_ms() < due_ms,
        "the accept phase overran not_before; lower --seconds"
    );
    assert_eq!(early, 0, "pushes were delivered during the accept phase");
    // Webhooks sent while accepts were measured (none expected: nothing is delivered yet).
    let hooks_phase1 = hooks
        .as_ref()
        .map(|h| (h.counts().0, phase1_start.elapsed()));

    // Phase 2: deliveries from the moment everything becomes due.
    let wait = Duration::from_millis((due_ms - unix_ms()).max(0) as u64);
    tokio::time::sleep(wait).await;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(900);
    // Progress from the gateways' counters (a COUNT over the table would load the database
    // being measured); the final check reads the database, where `delivered` is committed.
    // Over SMS an attempt ends `accepted` (submit_sm_resp); the SMSC's receipt makes it
    // `delivered` in the database.
    let delivered_metric = if setup.wap {
        r#"dmpushd_deliveries_total{binding="wap",outcome="accepted"}"#
    } else {
        r#"dmpushd_deliveries_total{binding="http",outcome="delivered"}"#
    };
    let mut attempts_done_at = None;
    let delivered_at = loop {
        let mut sum = 0.0;
        for g in &gateways {
            sum += metric(&http, &g.base, delivered_metric).await;
        }
        if sum as i64 >= accepted {
            attempts_done_at.get_or_insert(t0.elapsed());
            if db.counts().await.1 >= accepted {
                break t0.elapsed();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{sum} of {accepted} delivered after 900 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let received = if setup.wap {
        // Duplicates over SMS: submit_sm accepted beyond one per segment of each push.
        let mut submits = 0.0;
        for g in &gateways {
            submits += metric(
                &http,
                &g.base,
                r#"dmpushd_smpp_submits_total{smsc="sim",status="ESME_ROK"}"#,
            )
            .await;
        }
        let to_resp = attempts_done_at.unwrap_or(delivered_at).as_secs_f64();
        println!(
            "  {submits:.0} submit_sm accepted ({:.2} per push): {:.0} submit_sm/s until the last \
             submit_sm_resp ({to_resp:.1} s); the last receipt after {:.1} s",
            submits / accepted.max(1) as f64,
            submits / to_resp,
            delivered_at.as_secs_f64()
        );
        accepted
    } else {
        (rx.count() - received_before) as i64
    };
    let (total, _) = db.counts().await;
    assert_eq!(
        total, accepted,
        "pushes were accepted after the accept phase"
    );
    let mut shares = Vec::new();
    for g in &gateways {
        shares.push(metric(&http, &g.base, delivered_metric).await as u64);
    }
    println!(
        "| {:<10} | {} | {:>9.0} | {:>7} | {:>13} | {:>12.0} | {:>8} | {:>7} | {} |",
        setup.name,
        setup.replicas,
        accepted as f64 / wrk_secs.max(0.001),
        accepted,
        lat.join(", "),
        accepted as f64 / delivered_at.as_secs_f64(),
        format!("{:.1} s", delivered_at.as_secs_f64()),
        received - accepted,
        shares
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
    );
    for g in &gateways {
        let claims = metric(&http, &g.base, "dmpushd_claim_size_count").await;
        let leased = metric(&http, &g.base, "dmpushd_claim_size_sum").await;
        let claim_s = metric(
            &http,
            &g.base,
            r#"dmpushd_store_operation_seconds_sum{op="claim"}"#,
        )
        .await;
        // Includes the empty claims of idle polls.
        let all_claims = metric(
            &http,
            &g.base,
            r#"dmpushd_store_operation_seconds_count{op="claim"}"#,
        )
        .await;
        let completes = metric(
            &http,
            &g.base,
            r#"dmpushd_store_operation_seconds_count{op="complete"}"#,
        )
        .await;
        let complete_s = metric(
            &http,
            &g.base,
            r#"dmpushd_store_operation_seconds_sum{op="complete"}"#,
        )
        .await;
        println!(
            "  {}: {claims:.0} claims, {:.1} pushes/claim, {:.2} ms/claim; {completes:.0} completion batches, {:.2} ms each",
            g.base,
            leased / claims.max(1.0),
            claim_s * 1000.0 / all_claims.max(1.0),
            complete_s * 1000.0 / completes.max(1.0),
        );
    }
    // After the push figures, which do not wait for it: a webhook backlog may drain for long.
    if let (Some(h), Some((in_phase1, phase1))) = (&hooks, hooks_phase1) {
        // Every push sends one webhook (`push.delivered`); wait for the last of them.
        let deadline = Instant::now() + Duration::from_secs(900);
        while h.counts().1 < accepted as u64 {
            assert!(
                Instant::now() < deadline,
                "{} of {} webhooks after 900 s",
                h.counts().1,
                accepted
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (requests, distinct, last) = h.counts();
        let all_done = last.map_or(delivered_at, |l| l.saturating_duration_since(t0));
        println!(
            "  webhooks: {distinct} distinct ({} duplicate requests); {in_phase1} during the \
             accept phase ({:.0}/s); {:.0}/s from the due time until the last ({:.1} s after it, \
             {:.1} s after the last push delivered)",
            requests - distinct,
            in_phase1 as f64 / phase1.as_secs_f64(),
            (requests - in_phase1) as f64 / all_done.as_secs_f64().max(0.001),
            all_done.as_secs_f64(),
            all_done.saturating_sub(delivered_at).as_secs_f64(),
        );
    }
    if non_2xx > 0 {
        println!("  ({non_2xx} non-2xx answers during the accept phase)");
    }
    drop(gateways);
    drop(smsc);
    drop(hooks);
    db.drop_now().await;
}

fn main() {
    let mut secs = 10u64;
    let mut connections = 256usize;
    let mut setups = "sqlite,pg1,pg2,sqlite-sms,pg1-sms,sqlite-hooks,pg1-hooks".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            "--connections" => {
                connections = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(connections)
            }
            "--setups" => setups = args.next().unwrap_or(setups),
            _ => {} // cargo bench passes --bench
        }
    }
    let all = [
        Setup {
            name: "sqlite",
            db: Db::Sqlite,
            replicas: 1,
            wap: false,
            hooks: false,
        },
        Setup {
            name: "pg1",
            db: Db::Postgres,
            replicas: 1,
            wap: false,
            hooks: false,
        },
        Setup {
            name: "pg2",
            db: Db::Postgres,
            replicas: 2,
            wap: false,
            hooks: false,
        },
        Setup {
            name: "sqlite-sms",
            db: Db::Sqlite,
            replicas: 1,
            wap: true,
            hooks: false,
        },
        Setup {
            name: "pg1-sms",
            db: Db::Postgres,
            replicas: 1,
            wap: true,
            hooks: false,
        },
        Setup {
            name: "sqlite-hooks",
            db: Db::Sqlite,
            replicas: 1,
            wap: false,
            hooks: true,
        },
        Setup {
            name: "pg1-hooks",
            db: Db::Postgres,
            replicas: 1,
            wap: false,
            hooks: true,
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let rx = Receiver::start(Duration::ZERO).await;
        println!(
            "e2e: {secs} s of accepts at {connections} connections per setup, {DEVICES} devices, HTTPS receiver on 127.0.0.1"
        );
        println!(
            "| setup      | replicas | accepts/s | pushes  | wrk p50/p99   | deliveries/s | drained  | dupes   | per replica |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for s in all.iter().filter(|s| setups.split(',').any(|n| n == s.name)) {
            run(s, secs, connections, &rx).await;
        }
    });
}
