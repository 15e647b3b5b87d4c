//! End-to-end throughput of real `dmpushd serve` processes (issue #6 acceptance 4, issue #14
//! acceptance 1): durable accepts per second and deliveries per second, on SQLite with one
//! replica and on PostgreSQL with one and two replicas, over HTTPS and over SMS, against Kannel's
//! PPG and the HTTP ceiling (`/healthz`), in one run on one machine; the issue-14 ratios last.
//!
//! `cargo bench --bench e2e -- [--seconds 10] [--connections 256] [--kannel-pushes 20000]
//! [--setups healthz,sqlite,pg1,sqlite-sms,pg1-sms,kannel]` (the default; also `pg2`,
//! `sqlite-hooks`, `pg1-hooks`, `pg1-sms-pinned`, `pg2-sms-pinned`) `[--rounds 1]`
//!
//! `--rounds N` runs the setups N times, in reverse order every other round (A B, B A, …), so
//! that a drift of the machine's speed during the run weighs on both sides of a ratio alike; the
//! ratios are of the means over the rounds, and each round's own is printed too. On a shared
//! 2-core machine one round's ratio of two setups varies by ±10 % between runs of the same code.
//!
//! Per gateway setup: a fresh database (a temporary SQLite file, or a new PostgreSQL database
//! through `DMPUSHD_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), the
//! release `dmpushd` binary started once per replica, 100 devices with an HTTPS binding to one
//! local receiver (rustls, test CA) — or, in the `-sms` setups, a WAP binding over SMPP to
//! `dmpushd sim`'s simulated SMSC with delivery receipts (window 50, as Kannel's) — then two
//! phases:
//!
//! 1. **Accepts.** `wrk` (Debian package `wrk`) posts DM messages for `--seconds`, its connections
//!    split across the replicas (as a load balancer would). Every push carries `not_before` just
//!    after the phase, so nothing is delivered while accepts are measured. Accepts/s = pushes in
//!    the database ÷ wrk's duration (a 202 is only sent after commit, so the database count is the
//!    durable figure).
//! 2. **Deliveries.** At `not_before` every push becomes due at once; deliveries/s = pushes ÷ time
//!    from then until the database records the last one `delivered` (over SMS: until the last
//!    receipt). Requests the receiver saw beyond that count are duplicates (reported; expected 0),
//!    and each replica's share comes from its `dmpushd_deliveries_total` metric.
//!
//! The `-hooks` setups (issue 11 acceptance 7) are `sqlite` and `pg1` with the tenant's
//! `webhook_url`/`webhook_secret` pointing at a local plain-HTTP receiver that counts webhooks
//! (one per push over HTTPS: `push.delivered`; `push.accepted` is for a next hop that accepts
//! before a receipt, e.g. an SMSC). Their accepts/s and
//! deliveries/s compare with the same setup without webhooks in the same run; a further line
//! gives webhooks/s in each phase and when the last webhook arrived.
//!
//! `kannel`: Kannel's PPG (PAP over HTTP → wapbox → bearerbox → SMPP, window 50) pushing
//! `--kannel-pushes` DM notifications (package #0, one SMS each; `benches/wap_kannel/pap_load.py`,
//! 20 connections) to the same `dmpushd sim` SMSC, whose `submit_sm` event lines the benchmark
//! reads and timestamps. The figure is pushes ÷ (PAP start → last `submit_sm`). Kannel's ports are
//! free ones picked per run (config from `benches/wap_kannel/ppg.conf.in`); the setup is skipped
//! with a message when `bearerbox`/`wapbox` are not installed (`bash scripts/install.d/kannel.sh
//! --bench`).
//!
//! `pg1-sms-pinned`, `pg2-sms-pinned` (issue 14 target 4): `pg1-sms` with each replica pinned to
//! its own CPU (`taskset -c i`, round-robin over the CPUs this process may use), one replica and
//! then two; wrk, PostgreSQL and the SMSC are not pinned and share all CPUs. On a 2-core machine
//! that gives each replica its own core but nothing else its own (said with the figures).
//!
//! `healthz`: wrk GETs `/healthz` of an idle SQLite gateway at the same connections for
//! `--seconds`: the HTTP ceiling the accept rate is compared with.
//!
//! Everything — load generator, gateways, PostgreSQL, receiver, Kannel — shares the same cores, as
//! in the other benchmarks in `docs/PERFORMANCE.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

#[path = "../tests/it/support/receiver.rs"]
#[allow(dead_code)]
mod receiver;

#[path = "common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    CountingSmsc, Database, Db, Gateway, GatewayOptions, TOKEN, finish_wrk, free_port, metric,
    spawn_gateway, spawn_smsc, start_wrk, unix_ms, wait_listening, wait_ready, wrk_script,
};
use receiver::Receiver;
use serde_json::json;

const DEVICES: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `dmpushd serve` replicas: accepts, then deliveries.
    Gateway,
    /// Kannel's PPG to the simulated SMSC.
    Kannel,
    /// wrk on `/healthz`.
    Healthz,
}

struct Setup {
    name: &'static str,
    kind: Kind,
    db: Db,
    replicas: usize,
    /// SMS through SMPP to `dmpushd sim`'s simulated SMSC instead of HTTPS to the receiver.
    wap: bool,
    /// The tenant sends webhooks to the local [`HookCounter`].
    hooks: bool,
    /// Replica `i` runs on CPU `i` only (`taskset`; issue 14 target 4).
    pinned: bool,
}

/// A gateway setup's figures, for the ratios.
#[derive(Clone, Debug)]
struct Figures {
    accepts: f64,
    deliveries: f64,
    /// wrk's p99 latency of the accepts, in ms (the slowest replica's).
    p99_ms: f64,
}

impl Figures {
    /// The mean of each figure over rounds.
    fn mean(rounds: &[Figures]) -> Figures {
        let n = rounds.len().max(1) as f64;
        Figures {
            accepts: rounds.iter().map(|f| f.accepts).sum::<f64>() / n,
            deliveries: rounds.iter().map(|f| f.deliveries).sum::<f64>() / n,
            p99_ms: rounds.iter().map(|f| f.p99_ms).sum::<f64>() / n,
        }
    }
}

/// The mean, or `None` without figures.
fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
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

async fn run(setup: &Setup, secs: u64, connections: usize, rx: &Receiver) -> Figures {
    let http = common::http_client();
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
        gateways.push(spawn_gateway(
            dir.path(),
            &format!("r{}", i + 1),
            &db.url,
            &GatewayOptions {
                ca: Some(rx.ca_file.clone()),
                smsc: smsc.as_ref().map(|(_, port)| *port),
                hooks: hooks.as_ref().map(|h| h.port),
                cpu: setup.pinned.then_some(i % cpus()),
                ..GatewayOptions::default()
            },
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
    let script = wrk_script(dir.path(), "bench-", DEVICES, &not_before, 3600);
    let per = (connections / setup.replicas).max(1);
    let threads = if setup.replicas == 1 { 2 } else { 1 };
    let wrks: Vec<_> = gateways
        .iter()
        .map(|g| {
            start_wrk(
                threads,
                per,
                secs,
                Some(&script),
                &format!("{}/v1/pushes", g.base),
            )
        })
        .collect();
    let mut wrk_secs: f64 = 0.0;
    let mut non_2xx = 0;
    let mut lat = Vec::new();
    let mut p99_ms: f64 = 0.0;
    for w in wrks {
        let r = finish_wrk(w);
        wrk_secs = wrk_secs.max(r.secs);
        non_2xx += r.non_2xx;
        p99_ms = p99_ms.max(wrk_ms(&r.p99));
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
    // Webhooks that arrived while pushes were being delivered: shows how far the sender yielded.
    let hooks_by_delivered = hooks.as_ref().map(|h| h.counts().0);
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
        // One scrape per gateway for all of its figures.
        let text = common::metrics_text(&http, &g.base).await;
        let m = |name: &str| common::metric_in(&text, name);
        let claims = m("dmpushd_claim_size_count");
        let leased = m("dmpushd_claim_size_sum");
        let claim_s = m(r#"dmpushd_store_operation_seconds_sum{op="claim"}"#);
        // Includes the empty claims of idle polls.
        let all_claims = m(r#"dmpushd_store_operation_seconds_count{op="claim"}"#);
        let completes = m(r#"dmpushd_store_operation_seconds_count{op="complete"}"#);
        let complete_s = m(r#"dmpushd_store_operation_seconds_sum{op="complete"}"#);
        println!(
            "  {}: {claims:.0} claims, {:.1} pushes/claim, {:.2} ms/claim; {completes:.0} completion batches, {:.2} ms each",
            g.base,
            leased / claims.max(1.0),
            claim_s * 1000.0 / all_claims.max(1.0),
            complete_s * 1000.0 / completes.max(1.0),
        );
        if hooks.is_some() {
            let mut line = format!("  {} webhook store writes:", g.base);
            for op in ["claim", "record"] {
                let n = m(&format!(
                    r#"dmpushd_webhook_store_seconds_count{{op="{op}"}}"#
                ));
                let sum = m(&format!(
                    r#"dmpushd_webhook_store_seconds_sum{{op="{op}"}}"#
                ));
                line.push_str(&format!(
                    " {n:.0} {op}s at {:.2} ms each;",
                    sum * 1000.0 / n.max(1.0)
                ));
            }
            println!("{line} (by the last push delivered)");
        }
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
        let during = hooks_by_delivered.unwrap_or(0).saturating_sub(in_phase1);
        let after = all_done.saturating_sub(delivered_at).as_secs_f64();
        println!(
            "  webhooks: {distinct} distinct ({} duplicate requests); {in_phase1} during the \
             accept phase ({:.0}/s); {:.0}/s from the due time until the last ({:.1} s after it, \
             {after:.1} s after the last push delivered); {during} while pushes were delivered \
             ({:.0}/s), {:.0}/s after",
            requests - distinct,
            in_phase1 as f64 / phase1.as_secs_f64(),
            (requests - in_phase1) as f64 / all_done.as_secs_f64().max(0.001),
            all_done.as_secs_f64(),
            during as f64 / delivered_at.as_secs_f64().max(0.001),
            requests.saturating_sub(in_phase1 + during) as f64 / after.max(0.001),
        );
    }
    if non_2xx > 0 {
        println!("  ({non_2xx} non-2xx answers during the accept phase)");
    }
    drop(gateways);
    drop(smsc);
    drop(hooks);
    db.drop_now().await;
    Figures {
        accepts: accepted as f64 / wrk_secs.max(0.001),
        deliveries: accepted as f64 / delivered_at.as_secs_f64(),
        p99_ms,
    }
}

/// wrk's latency text ("1.23ms", "850.00us", "1.02s") in milliseconds.
fn wrk_ms(t: &str) -> f64 {
    let t = t.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = t.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (t, f64::NAN)
    };
    num.parse::<f64>().map_or(f64::NAN, |v| v * scale)
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Kannel's PPG pushing `pushes` DM notifications to `dmpushd sim`; pushes/s from PAP start to
/// the last `submit_sm` the SMSC saw, or None when Kannel is not installed.
fn run_kannel(pushes: usize) -> Option<f64> {
    if !(on_path("bearerbox") && on_path("wapbox")) {
        println!(
            "| kannel     | skipped: bearerbox/wapbox not installed (bash scripts/install.d/kannel.sh --bench) |"
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    // Kannel asks for no receipts (no dlr-mask); --no-dlr as in benches/wap_kannel/run.sh.
    let smsc = CountingSmsc::spawn(&["--no-dlr"]);
    let (admin, smsbox, wapbox, ppg) = (free_port(), free_port(), free_port(), free_port());
    let conf = include_str!("wap_kannel/ppg.conf.in")
        .replace("@WORK@", &work.display().to_string())
        .replace("@PORT@", &smsc.port.to_string())
        .replace("@WINDOW@", "50")
        .replace("@ADMIN_PORT@", &admin.to_string())
        .replace("@SMSBOX_PORT@", &smsbox.to_string())
        .replace("@WAPBOX_PORT@", &wapbox.to_string())
        .replace("@PPG_PORT@", &ppg.to_string());
    let conf_path = work.join("ppg.conf");
    std::fs::write(&conf_path, conf).expect("write ppg.conf");
    let boxed = |bin: &str| {
        let log = std::fs::File::create(work.join(format!("{bin}.out"))).expect("log file");
        Gateway {
            child: Command::new(bin)
                .args(["-v", "4"])
                .arg(&conf_path)
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{bin} starts: {e}")),
            base: String::new(),
        }
    };
    let bearerbox = boxed("bearerbox");
    wait_listening(wapbox, "bearerbox (wapbox port)");
    let wapbox_p = boxed("wapbox");
    wait_listening(ppg, "wapbox (PPG port)");
    // bearerbox binds its SMPP session on its own schedule: start when the SMSC has seen it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while smsc.snapshot().0 == 0 {
        assert!(
            Instant::now() < deadline,
            "bearerbox never bound to the SMSC (logs in {})",
            work.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/wap_kannel/pap_load.py"
        ))
        .arg(format!("http://127.0.0.1:{ppg}/wappush"))
        .arg("+491701234567")
        .arg(pushes.to_string())
        .arg("20")
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 runs pap_load.py");
    let pap_done = t0.elapsed();
    let pap_out = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "PAP load failed: {pap_out} (logs in {})",
        work.display()
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    let (first, last) = loop {
        let (_, n, first, last) = smsc.snapshot();
        if n >= pushes as u64 {
            break (first.unwrap_or(t0), last.unwrap_or(t0));
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {pushes} submit_sm at the SMSC after 600 s (logs in {})",
            work.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let to_last = last.saturating_duration_since(t0);
    let rate = pushes as f64 / to_last.as_secs_f64();
    println!(
        "| kannel     | 1 | {:>9.0} | {pushes:>7} | {:>13} | {rate:>12.0} | {:>8} | {:>7} | - |",
        pushes as f64 / pap_done.as_secs_f64(),
        "(PAP)",
        format!("{:.1} s", to_last.as_secs_f64()),
        smsc.snapshot().1 - pushes as u64,
    );
    println!(
        "  kannel: {pap_out} in {:.1} s; submit_sm first→last {:.0}/s; PAP start → last submit_sm {:.1} s",
        pap_done.as_secs_f64(),
        (pushes.saturating_sub(1)) as f64
            / last
                .saturating_duration_since(first)
                .as_secs_f64()
                .max(0.001),
        to_last.as_secs_f64(),
    );
    drop(wapbox_p);
    drop(bearerbox);
    drop(smsc);
    Some(rate)
}

/// wrk GET `/healthz` on an idle SQLite gateway: requests/s (the HTTP ceiling of the machine).
async fn run_healthz(secs: u64, connections: usize) -> f64 {
    let http = common::http_client();
    let db = Database::create(Db::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = spawn_gateway(dir.path(), "r1", &db.url, &GatewayOptions::default());
    wait_ready(&http, &g.base).await;
    let r = finish_wrk(start_wrk(
        2,
        connections,
        secs,
        None,
        &format!("{}/healthz", g.base),
    ));
    let rate = (r.requests - r.non_2xx) as f64 / r.secs.max(0.001);
    println!(
        "| healthz    | 1 | {rate:>9.0} | {:>7} | {:>13} | {:>12} | {:>8} | {:>7} | - |",
        r.requests,
        format!("{}/{}", r.p50, r.p99),
        "-",
        "-",
        "-",
    );
    drop(g);
    db.drop_now().await;
    rate
}

/// One row of the ratio table: `num ÷ den` against `≥ target`.
fn ratio_line(what: &str, num: Option<f64>, den: Option<f64>, target: f64) {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => {
            let r = n / d;
            println!(
                "| {what} | {n:.0} / {d:.0} | **{r:.2}** | ≥ {target} | {} |",
                if r >= target { "met" } else { "not met" }
            );
        }
        _ => println!("| {what} | (a setup is not in this run) | - | ≥ {target} | - |"),
    }
}

/// The accept row: the ratio to `/healthz` (reported), and the absolute target (≥ 30,000/s,
/// p99 ≤ 20 ms) that the issue sets.
fn accept_line(what: &str, f: Option<&Figures>, healthz: Option<f64>) {
    match (f, healthz) {
        (Some(f), Some(h)) if h > 0.0 => println!(
            "| {what} | {:.0} / {h:.0} | **{:.2}** | 30,000/s, p99 ≤ 20 ms: {:.0}/s, p99 {:.1} ms | {} |",
            f.accepts,
            f.accepts / h,
            f.accepts,
            f.p99_ms,
            if f.accepts >= 30_000.0 && f.p99_ms <= 20.0 {
                "met"
            } else {
                "not met"
            }
        ),
        _ => println!("| {what} | (a setup is not in this run) | - | 30,000/s, p99 ≤ 20 ms | - |"),
    }
}

/// CPUs this process may run on (replicas are pinned round-robin over them).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() {
    let mut secs = 10u64;
    let mut connections = 256usize;
    let mut kannel_pushes = 20_000usize;
    let mut setups = "healthz,sqlite,pg1,sqlite-sms,pg1-sms,kannel".to_owned();
    let mut rounds = 1usize;
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
            "--kannel-pushes" => {
                kannel_pushes = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(kannel_pushes)
            }
            "--setups" => setups = args.next().unwrap_or(setups),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(rounds)
                    .max(1)
            }
            _ => {} // cargo bench passes --bench
        }
    }
    let gw = |name, db, replicas, wap, hooks| Setup {
        name,
        kind: Kind::Gateway,
        db,
        replicas,
        wap,
        hooks,
        pinned: false,
    };
    let pinned = |name, replicas| Setup {
        pinned: true,
        ..gw(name, Db::Postgres, replicas, true, false)
    };
    let all = [
        Setup {
            name: "healthz",
            kind: Kind::Healthz,
            db: Db::Sqlite,
            replicas: 1,
            wap: false,
            hooks: false,
            pinned: false,
        },
        gw("sqlite", Db::Sqlite, 1, false, false),
        gw("pg1", Db::Postgres, 1, false, false),
        gw("pg2", Db::Postgres, 2, false, false),
        gw("sqlite-sms", Db::Sqlite, 1, true, false),
        gw("pg1-sms", Db::Postgres, 1, true, false),
        gw("sqlite-hooks", Db::Sqlite, 1, false, true),
        gw("pg1-hooks", Db::Postgres, 1, false, true),
        pinned("pg1-sms-pinned", 1),
        pinned("pg2-sms-pinned", 2),
        Setup {
            name: "kannel",
            kind: Kind::Kannel,
            db: Db::Sqlite,
            replicas: 1,
            wap: true,
            hooks: false,
            pinned: false,
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
            "e2e: {secs} s of accepts at {connections} connections per setup, {DEVICES} devices, HTTPS receiver on 127.0.0.1; \
             kannel: {kannel_pushes} PAP pushes; load average {} at the start",
            common::load_average()
        );
        println!(
            "| setup      | replicas | accepts/s | pushes  | wrk p50/p99   | deliveries/s | drained  | dupes   | per replica |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut runs: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
        let mut kannels = Vec::new();
        let mut healthzs = Vec::new();
        let selected: Vec<&Setup> = all
            .iter()
            .filter(|s| setups.split(',').any(|n| n == s.name))
            .collect();
        for round in 0..rounds {
            let order: Vec<&Setup> = if round % 2 == 0 {
                selected.clone()
            } else {
                selected.iter().rev().copied().collect()
            };
            if rounds > 1 {
                println!("round {} of {rounds}", round + 1);
            }
            for s in order {
                match s.kind {
                    Kind::Gateway => {
                        let f = run(s, secs, connections, &rx).await;
                        runs.entry(s.name).or_default().push(f);
                    }
                    Kind::Kannel => kannels.extend(run_kannel(kannel_pushes)),
                    Kind::Healthz => healthzs.push(run_healthz(secs, connections).await),
                }
            }
        }
        let figures: BTreeMap<&str, Figures> =
            runs.iter().map(|(n, f)| (*n, Figures::mean(f))).collect();
        let kannel = mean(&kannels);
        let healthz = mean(&healthzs);
        let d = |n: &str| figures.get(n).map(|f| f.deliveries);
        println!();
        println!("issue 14 ratios (this run; load average {} at the end):", common::load_average());
        println!("| ratio | figures | value | target | |");
        println!("|---|---|---|---|---|");
        ratio_line("SQLite: SMS ÷ HTTPS deliveries/s", d("sqlite-sms"), d("sqlite"), 0.8);
        ratio_line("PostgreSQL: SMS ÷ HTTPS deliveries/s", d("pg1-sms"), d("pg1"), 0.8);
        ratio_line("sqlite-sms deliveries/s ÷ Kannel pushes/s", d("sqlite-sms"), kannel, 3.0);
        ratio_line("pg1-sms deliveries/s ÷ Kannel pushes/s", d("pg1-sms"), kannel, 3.0);
        ratio_line(
            "PostgreSQL SMS, replicas pinned: 2 ÷ 1 deliveries/s",
            d("pg2-sms-pinned"),
            d("pg1-sms-pinned"),
            1.5,
        );
        accept_line("SQLite accepts/s ÷ /healthz requests/s", figures.get("sqlite"), healthz);
        accept_line("PostgreSQL accepts/s ÷ /healthz requests/s", figures.get("pg1"), healthz);
        // Issue 11 acceptance 7: webhook delivery lowers deliveries/s by at most 20 %.
        for (with, without) in [("sqlite-hooks", "sqlite"), ("pg1-hooks", "pg1")] {
            if let (Some(w), Some(wo)) = (runs.get(with), runs.get(without)) {
                let each: Vec<String> = w
                    .iter()
                    .zip(wo)
                    .map(|(a, b)| format!("{:+.0} %", (a.deliveries / b.deliveries - 1.0) * 100.0))
                    .collect();
                let (a, b) = (Figures::mean(w).deliveries, Figures::mean(wo).deliveries);
                let change = (a / b - 1.0) * 100.0;
                println!(
                    "| issue 11: {with} ÷ {without} deliveries/s (rounds: {}) | {a:.0} / {b:.0} | **{change:+.1} %** | ≥ -20 % | {} |",
                    each.join(", "),
                    if change >= -20.0 { "met" } else { "not met" }
                );
            }
        }
    });
}
