//! Scale of one `dmpushd serve` (issue 14 target 3): memory, claim latency and accept rate with a
//! million pushes waiting, and whether the retention purge keeps up with steady churn.
//!
//! `cargo bench --bench scale -- [--pushes 1000000] [--store sqlite|postgres] [--seconds 10]
//! [--connections 256] [--stream 200]`
//!
//! 1. A fresh database, the release `dmpushd serve` (one replica), 100 `load-` devices and 10
//!    `due-` devices with HTTPS bindings to a local receiver that only counts. After 3 s idle:
//!    **idle RSS** (`VmRSS` of the gateway's `/proc/<pid>/status`).
//! 2. **Empty queue**: claim latency, from the gateway's `dmpushd_store_operation_seconds{op="claim"}`
//!    histogram over `--seconds` of a small stream of due pushes (`--stream` per second, in batches
//!    of a tenth of that every 100 ms, to the `due-` devices) until the last is delivered (mean,
//!    and the bucket bounds holding p50 and p99; empty claims of idle polls included); then the
//!    **accept rate**: wrk posting pushes with a far-future `not_before` for `--seconds`.
//! 3. **Load**: `--pushes` minus those already waiting, through `POST /v1/pushes/batch` (1000 per
//!    request, 4 in flight), all due tomorrow, while the gateway runs. RSS after the load.
//! 4. After a `CHECKPOINT` (PostgreSQL) and 5 s for the load's writes to settle, the same measurements as in 2 with the million
//!    waiting; RSS after them. Delivery progress is counted at the receiver, not on `/metrics`
//!    (each scrape counts the pushes per state, at most once a second: over a million rows that
//!    would load the gateway being measured); `/metrics` is read once before and once after.
//! 5. The ratios against the targets: RSS ≤ 2 × idle + 100 MB; claim latency (mean) and accept
//!    rate within 20 % of the empty queue's.
//!
//! `--churn [--rate 10000] [--retention 10] [--seconds 60]`: pushes due at once are offered at
//! `--rate`/s (batches of `rate/20` every 50 ms, to the 100 `load-` devices) for `--seconds`, with
//! `store.retention_seconds = --retention` and `store.purge_interval_seconds = 1`. Every 5 s a
//! line: offered, accepted, delivered (receiver), purged (`dmpushd_store_purged_total`), pushes per
//! state in the database, RSS. The purge keeps up when the final pushes stay bounded (≈ delivered
//! rate × (retention + interval)) instead of growing with time; the last line says which.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

#[path = "../tests/it/support/receiver.rs"]
#[allow(dead_code)]
mod receiver;

#[path = "common/mod.rs"]
mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    CountingReceiver, DM_BODY_JSON, Database, Db, Gateway, GatewayOptions, Histogram, TOKEN,
    finish_wrk, metric, metrics_text, mib, spawn_gateway, start_wrk, unix_ms, wait_ready,
    wrk_script,
};

const LOAD_DEVICES: usize = 100;
const DUE_DEVICES: usize = 10;
const BATCH: usize = 1000;

struct Args {
    pushes: usize,
    store: Db,
    seconds: u64,
    connections: usize,
    stream: usize,
    churn: bool,
    rate: usize,
    retention: u64,
}

/// One set of measurements (empty queue, or with the pushes waiting).
struct Measure {
    claims: f64,
    claim_mean_ms: f64,
    claim_p50_ms: f64,
    claim_p99_ms: f64,
    pushes_per_claim: f64,
    accepts_per_s: f64,
    accept_p99: String,
}

/// A JSON array of `n` pushes to `{prefix}0..devices` (rotating), due at `not_before`.
fn batch_body(
    prefix: &str,
    devices: usize,
    n: usize,
    start: usize,
    not_before: &str,
    ttl: u64,
) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"device":"{prefix}{}","not_before":"{not_before}","ttl_seconds":{ttl},"body":"{DM_BODY_JSON}"}}"#,
                (start + i) % devices
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// Posts one batch; the number accepted.
async fn post_batch(http: &reqwest::Client, base: &str, body: String) -> u64 {
    let r = http
        .post(format!("{base}/v1/pushes/batch"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("batch request");
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    assert!(status.is_success(), "batch answered {status}: {v}");
    v["accepted"].as_u64().unwrap_or(0)
}

fn claim_hist(text: &str) -> Histogram {
    Histogram::read(text, "dmpushd_store_operation_seconds", r#"op="claim""#)
}

async fn measure(
    http: &reqwest::Client,
    g: &Gateway,
    rx: &CountingReceiver,
    dir: &std::path::Path,
    a: &Args,
    label: &str,
) -> Measure {
    // Claim latency under a small stream of due pushes.
    let before = metrics_text(http, &g.base).await;
    let h0 = claim_hist(&before);
    let size0 = Histogram::read(&before, "dmpushd_claim_size", "");
    // Progress from the receiver, not `/metrics`: a scrape counts the pushes per state (at most
    // once a second), which over a million rows would load the gateway being measured.
    let d0 = rx.count();
    let per_tick = (a.stream / 10).max(1);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let end = Instant::now() + Duration::from_secs(a.seconds);
    while Instant::now() < end {
        tick.tick().await;
        let nb = common::now_rfc3339();
        sent += post_batch(
            http,
            &g.base,
            batch_body("due-", DUE_DEVICES, per_tick, sent as usize, &nb, 3600),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let d = rx.count();
        if d - d0 >= sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: {} of {sent} due pushes delivered after 300 s",
            d - d0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = metrics_text(http, &g.base).await;
    let h = claim_hist(&after).since(&h0);
    let size = Histogram::read(&after, "dmpushd_claim_size", "").since(&size0);

    // Accept rate: pushes due tomorrow, so they join the waiting ones.
    let nb = dmpushd::api::rfc3339(unix_ms() + 86_400_000);
    let script = wrk_script(dir, "load-", LOAD_DEVICES, &nb, 172_800);
    let r = finish_wrk(start_wrk(
        2,
        a.connections,
        a.seconds,
        Some(&script),
        &format!("{}/v1/pushes", g.base),
    ));
    let m = Measure {
        claims: h.count,
        claim_mean_ms: h.mean() * 1000.0,
        claim_p50_ms: h.quantile_bound(0.5) * 1000.0,
        claim_p99_ms: h.quantile_bound(0.99) * 1000.0,
        pushes_per_claim: size.sum / size.count.max(1.0),
        accepts_per_s: (r.requests - r.non_2xx) as f64 / r.secs.max(0.001),
        accept_p99: r.p99,
    };
    println!(
        "  {label}: {sent} due pushes delivered; {:.0} claims (idle polls included), mean {:.2} ms, \
         p50 ≤ {} ms, p99 ≤ {} ms, {:.1} pushes per non-empty claim; accepts {:.0}/s (wrk p50 {}, \
         p99 {}, {} non-2xx); load average {}",
        m.claims,
        m.claim_mean_ms,
        m.claim_p50_ms,
        m.claim_p99_ms,
        m.pushes_per_claim,
        m.accepts_per_s,
        r.p50,
        m.accept_p99,
        r.non_2xx,
        common::load_average()
    );
    m
}

/// Loads `n` pushes due tomorrow through the batch endpoint; (accepted, seconds).
async fn load(http: &reqwest::Client, base: &str, n: usize) -> (u64, f64) {
    let nb = dmpushd::api::rfc3339(unix_ms() + 86_400_000);
    let full = Arc::new(batch_body("load-", LOAD_DEVICES, BATCH, 0, &nb, 172_800));
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (http, base, full, next, accepted, nb) = (
            http.clone(),
            base.to_owned(),
            full.clone(),
            next.clone(),
            accepted.clone(),
            nb.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(BATCH as u64, Ordering::Relaxed) as usize;
                if start >= n {
                    return;
                }
                let size = (n - start).min(BATCH);
                let body = if size == BATCH {
                    (*full).clone()
                } else {
                    batch_body("load-", LOAD_DEVICES, size, 0, &nb, 172_800)
                };
                let got = post_batch(&http, &base, body).await;
                let total = accepted.fetch_add(got, Ordering::Relaxed) + got;
                if total / 100_000 != (total - got) / 100_000 {
                    println!(
                        "  loaded {total} in {:.0} s ({:.0}/s)",
                        t0.elapsed().as_secs_f64(),
                        total as f64 / t0.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("loader task");
    }
    (accepted.load(Ordering::Relaxed), t0.elapsed().as_secs_f64())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

async fn scale(a: &Args) {
    let http = common::http_client();
    let rx = CountingReceiver::start(receiver::test_pki()).await;
    let db = Database::create(a.store).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = spawn_gateway(
        dir.path(),
        "r1",
        &db.url,
        &GatewayOptions {
            ca: Some(rx.ca_file.clone()),
            ..GatewayOptions::default()
        },
    );
    wait_ready(&http, &g.base).await;
    common::register_http_devices(&http, &g.base, "load-", LOAD_DEVICES, |d| {
        rx.url(&format!("/load/{d}"))
    })
    .await;
    common::register_http_devices(&http, &g.base, "due-", DUE_DEVICES, |d| {
        rx.url(&format!("/due/{d}"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = g.rss_bytes();
    println!(
        "scale: {:?}, {} pushes, {} s per measurement, {} connections, stream {}/s; gateway pid {}; idle RSS {:.1} MiB; load average {}",
        a.store,
        a.pushes,
        a.seconds,
        a.connections,
        a.stream,
        g.pid(),
        mib(idle),
        common::load_average()
    );
    let empty = measure(&http, &g, &rx, dir.path(), a, "empty queue").await;
    let rss_empty = g.rss_bytes();
    let waiting_before = db.counts().await.0 as usize;
    let (loaded, load_s) = load(&http, &g.base, a.pushes.saturating_sub(waiting_before)).await;
    let waiting = db.counts().await.0;
    let rss_loaded = g.rss_bytes();
    if let Some((file, wal)) = db.sqlite_sizes() {
        println!(
            "  SQLite database {:.0} MiB, write-ahead log {:.0} MiB",
            mib(file),
            mib(wal)
        );
    }
    println!(
        "  loaded {loaded} in {load_s:.1} s ({:.0}/s); {waiting} pushes in the database; RSS {:.1} MiB; load average {}",
        loaded as f64 / load_s,
        mib(rss_loaded),
        common::load_average()
    );
    // The load's last writes settle (WAL checkpoint, autovacuum) before the second measurement;
    // on PostgreSQL the load's checkpoint is forced first (it otherwise ran through the whole
    // measurement: docs/perf/scale.md).
    db.checkpoint().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let full = measure(&http, &g, &rx, dir.path(), a, &format!("{waiting} waiting")).await;
    let rss_full = g.rss_bytes().max(rss_loaded);
    let rss_limit = 2 * idle + 100 * 1024 * 1024;
    println!();
    println!("| figure | empty queue | {waiting} waiting | ratio | target | |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| RSS (MiB; idle {:.1}) | {:.1} | {:.1} | {:.2} of the limit | ≤ 2 × idle + 100 MB = {:.1} | {} |",
        mib(idle),
        mib(rss_empty),
        mib(rss_full),
        rss_full as f64 / rss_limit as f64,
        mib(rss_limit),
        verdict(rss_full <= rss_limit)
    );
    let claim_ratio = full.claim_mean_ms / empty.claim_mean_ms.max(1e-9);
    println!(
        "| claim latency, mean ms (p50 ≤ / p99 ≤ bucket) | {:.3} ({}/{}) | {:.3} ({}/{}) | {claim_ratio:.2} | ≤ 1.20 | {} |",
        empty.claim_mean_ms,
        empty.claim_p50_ms,
        empty.claim_p99_ms,
        full.claim_mean_ms,
        full.claim_p50_ms,
        full.claim_p99_ms,
        verdict(claim_ratio <= 1.2)
    );
    let accept_ratio = full.accepts_per_s / empty.accepts_per_s.max(1e-9);
    println!(
        "| accepts/s (wrk p99) | {:.0} ({}) | {:.0} ({}) | {accept_ratio:.2} | ≥ 0.80 | {} |",
        empty.accepts_per_s,
        empty.accept_p99,
        full.accepts_per_s,
        full.accept_p99,
        verdict(accept_ratio >= 0.8)
    );
    println!(
        "(claims counted: {:.0} / {:.0}; load average at the end {})",
        empty.claims,
        full.claims,
        common::load_average()
    );
    drop(g);
    db.drop_now().await;
}

async fn churn(a: &Args) {
    let http = common::http_client();
    let rx = CountingReceiver::start(receiver::test_pki()).await;
    let db = Database::create(a.store).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = spawn_gateway(
        dir.path(),
        "r1",
        &db.url,
        &GatewayOptions {
            ca: Some(rx.ca_file.clone()),
            store_extra: format!(
                "retention_seconds = {}\npurge_interval_seconds = 1\n",
                a.retention
            ),
            ..GatewayOptions::default()
        },
    );
    wait_ready(&http, &g.base).await;
    common::register_http_devices(&http, &g.base, "load-", LOAD_DEVICES, |d| {
        rx.url(&format!("/load/{d}"))
    })
    .await;
    let idle = g.rss_bytes();
    println!(
        "churn: {:?}, {} pushes/s offered for {} s, retention {} s, purge every 1 s; idle RSS {:.1} MiB; load average {}",
        a.store,
        a.rate,
        a.seconds,
        a.retention,
        mib(idle),
        common::load_average()
    );
    println!(
        "| t (s) | offered | accepted | delivered | purged | in the database (by state) | RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    let offered = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let per_tick = (a.rate / 20).max(1);
    // The offered load: batches on a 50 ms tick, each posted on its own task so that a slow
    // answer does not lower the offered rate (bounded: at most 40 in flight, beyond which the
    // gateway is the limit and the tick waits).
    let loader = {
        let (http, base, offered, accepted, stop) = (
            http.clone(),
            g.base.clone(),
            offered.clone(),
            accepted.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(40));
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0usize;
            while !stop.is_cancelled() {
                tick.tick().await;
                let permit = permits.clone().acquire_owned().await.expect("semaphore");
                let body = batch_body(
                    "load-",
                    LOAD_DEVICES,
                    per_tick,
                    n,
                    &common::now_rfc3339(),
                    3600,
                );
                n += per_tick;
                offered.fetch_add(per_tick as u64, Ordering::Relaxed);
                let (http, base, accepted) = (http.clone(), base.clone(), accepted.clone());
                tokio::spawn(async move {
                    let got = post_batch(&http, &base, body).await;
                    accepted.fetch_add(got, Ordering::Relaxed);
                    drop(permit);
                });
            }
        })
    };
    let t0 = Instant::now();
    let mut finals = Vec::new();
    let mut waiting = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        let t = t0.elapsed().as_secs_f64();
        let purged = metric(&http, &g.base, "dmpushd_store_purged_total").await;
        let states = db.states().await;
        let final_n: i64 = states
            .iter()
            .filter(|(s, _)| {
                dmpushd::domain::push::PushState::parse(s).is_some_and(|p| p.is_final())
            })
            .map(|(_, n)| n)
            .sum();
        finals.push(final_n);
        let total: i64 = states.iter().map(|(_, n)| n).sum();
        waiting.push(total - final_n);
        println!(
            "| {t:.0} | {} | {} | {} | {purged:.0} | {} | {:.1} |",
            offered.load(Ordering::Relaxed),
            accepted.load(Ordering::Relaxed),
            rx.count(),
            states
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            mib(g.rss_bytes())
        );
        if t >= a.seconds as f64 {
            break;
        }
    }
    stop.cancel();
    loader.await.expect("loader");
    let secs = t0.elapsed().as_secs_f64();
    let delivered_rate = rx.count() as f64 / secs;
    // Bounded: the final pushes a purge every second leaves behind at the delivered rate, with
    // one interval of slack for the purge's own pace and the 5 s sampling.
    let bound = delivered_rate * (a.retention as f64 + 1.0 + 5.0);
    let third = finals.len() / 3;
    let late_max = finals[finals.len() - third.max(1)..]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    // The deliveries keep up when the pushes not yet final stay within a few seconds of the
    // accepted rate instead of growing: otherwise the figure above is not a 10,000/s churn.
    let accepted_rate = accepted.load(Ordering::Relaxed) as f64 / secs;
    let waiting_late = waiting[waiting.len() - third.max(1)..]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    println!(
        "churn: accepted {accepted_rate:.0}/s of {} offered; pushes not yet final over the last third up to \
         {waiting_late} (≤ 5 s of accepts = {:.0}: deliveries {})",
        a.rate,
        accepted_rate * 5.0,
        if (waiting_late as f64) <= accepted_rate * 5.0 {
            "keep up"
        } else {
            "fall behind: the queue grows"
        }
    );
    println!(
        "churn: {:.0} pushes/s delivered on average ({} in {secs:.0} s); final pushes in the database at the end {}, \
         max over the last third {late_max}, bound ≈ delivered/s × (retention + 1 s + 5 s) = {bound:.0}: purge {}; \
         RSS {:.1} MiB (idle {:.1}); load average {}",
        delivered_rate,
        rx.count(),
        finals.last().copied().unwrap_or(0),
        if (late_max as f64) <= bound {
            "keeps up"
        } else {
            "falls behind"
        },
        mib(g.rss_bytes()),
        mib(idle),
        common::load_average()
    );
    drop(g);
    db.drop_now().await;
}

fn main() {
    let mut a = Args {
        pushes: 1_000_000,
        store: Db::Sqlite,
        seconds: 0,
        connections: 256,
        stream: 200,
        churn: false,
        rate: 10_000,
        retention: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut num = |d: usize| args.next().and_then(|v| v.parse().ok()).unwrap_or(d);
        match arg.as_str() {
            "--pushes" => a.pushes = num(a.pushes),
            "--seconds" => a.seconds = num(a.seconds as usize) as u64,
            "--connections" => a.connections = num(a.connections),
            "--stream" => a.stream = num(a.stream),
            "--rate" => a.rate = num(a.rate),
            "--retention" => a.retention = num(a.retention as usize) as u64,
            "--churn" => a.churn = true,
            "--store" => {
                a.store = match args.next().as_deref() {
                    Some("postgres" | "pg") => Db::Postgres,
                    Some("sqlite") | None => Db::Sqlite,
                    Some(other) => panic!("--store sqlite|postgres, not {other}"),
                }
            }
            _ => {} // cargo bench passes --bench
        }
    }
    if a.seconds == 0 {
        a.seconds = if a.churn { 60 } else { 10 };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if a.churn {
            churn(&a).await
        } else {
            scale(&a).await
        }
    });
}
