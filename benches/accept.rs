//! Load generator for durable accepts (issue #2 acceptance 9).
//!
//! Runs, in one process and on the same cores: the gateway (SQLite, `synchronous=FULL`, group
//! commit) on its own runtime, a no-op axum POST endpoint (the HTTP ceiling of the machine), and
//! a closed-loop client with C concurrent keep-alive connections per target. Prints accepted
//! pushes per second with p50/p99 latency for each C, then checks that every 202 is in the store.
//!
//! `cargo bench --bench accept -- [--seconds S] [--concurrency 64,256]`
//!
//! With `--serve-only S` it only serves for S seconds — the gateway on 127.0.0.1:18080 (device
//! `bench-dev`, token `bench-token`) and the no-op endpoint on 127.0.0.1:18081/noop — so that an
//! external load generator (`wrk`, see `benches/wrk/`) can drive both; at the end it checks that
//! every push is in the store. `DMPUSHD_BENCH_STORE_URL` selects another store (e.g. an empty
//! PostgreSQL database).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, routing::post};
use dmpushd::{
    app::App,
    config::{Settings, TenantConfig},
};
use serde_json::json;

const TOKEN: &str = "bench-token";

struct Run {
    ok: u64,
    errors: u64,
    secs: f64,
    lat_us: Vec<u32>,
}

impl Run {
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
}

async fn load(url: String, body: Vec<u8>, auth: bool, concurrency: usize, dur: Duration) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let body = bytes::Bytes::from(body);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (url, body, stop, errors) = (url.clone(), body.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut req = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                if auth {
                    req = req.bearer_auth(TOKEN);
                }
                match req.send().await {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat_us = Vec::new();
    for t in tasks {
        lat_us.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    Run {
        ok: lat_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs,
        lat_us,
    }
}

fn main() {
    let mut seconds = 10u64;
    let mut levels = vec![64usize, 256];
    let mut serve_only: Option<u64> = None;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--seconds" => {
                seconds = args[i + 1].parse().unwrap();
                i += 1;
            }
            "--serve-only" => {
                serve_only = Some(args[i + 1].parse().unwrap());
                i += 1;
            }
            "--concurrency" => {
                levels = args[i + 1].split(',').map(|s| s.parse().unwrap()).collect();
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut s = Settings::default();
    s.server.listen = if serve_only.is_some() {
        "127.0.0.1:18080"
    } else {
        "127.0.0.1:0"
    }
    .parse()
    .unwrap();
    // DMPUSHD_BENCH_STORE_URL=postgres://… measures the PostgreSQL store the same way.
    s.store.url = std::env::var("DMPUSHD_BENCH_STORE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.path().display()));
    s.tenants = vec![TenantConfig {
        name: "bench".into(),
        token_sha256: None,
        token: Some(TOKEN.into()),
        ..Default::default()
    }];
    s.bindings.http.allow_targets = vec!["127.0.0.0/8".into()];
    s.log.level = "error".into();
    let (addr, noop_addr, store) = server_rt.block_on(async {
        dmpushd::telemetry::init(&s.log);
        let app = App::build(s).await.unwrap();
        let addr = app.local_addr().unwrap();
        let store = app.store.clone();
        tokio::spawn(app.run(tokio_util::sync::CancellationToken::new()));
        let noop = Router::new().route(
            "/noop",
            post(|body: bytes::Bytes| async move {
                let _ = body;
                (
                    axum::http::StatusCode::ACCEPTED,
                    r#"{"id":"x","state":"queued"}"#,
                )
            }),
        );
        let l = tokio::net::TcpListener::bind(if serve_only.is_some() {
            "127.0.0.1:18081"
        } else {
            "127.0.0.1:0"
        })
        .await
        .unwrap();
        let noop_addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, noop).await });
        (addr, noop_addr, store)
    });

    let base = format!("http://{addr}");
    // Pushes wait for a time far ahead, so the dispatcher stays idle and only accepts are measured.
    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = serde_json::to_vec(&json!({
        "device": "bench-dev",
        "body": "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:490154203237518</LocURI></Target><Source><LocURI>https://dms.example</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Final/></SyncBody></SyncML>",
        "not_before": later,
        "ttl_seconds": 172800,
    }))
    .unwrap();

    let mut total_ok = 0;
    println!(
        "machine: {} cores; each run {seconds} s; gateway, no-op server and client share the cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<28} {:>6} {:>12} {:>9} {:>9} {:>8}",
        "endpoint", "conns", "req/s", "p50 ms", "p99 ms", "errors"
    );
    client_rt.block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = http
            .put(format!("{base}/v1/devices/bench-dev"))
            .bearer_auth(TOKEN)
            .json(&json!({"bindings": [{"type": "http", "url": "https://127.0.0.1:9/p"}]}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        if let Some(secs) = serve_only {
            println!("serving: gateway {base}, no-op http://{noop_addr}/noop, for {secs} s");
            tokio::time::sleep(Duration::from_secs(secs)).await;
            return;
        }
        for &c in &levels {
            for (name, url, auth) in [
                (
                    "no-op POST (ceiling)",
                    format!("http://{noop_addr}/noop"),
                    false,
                ),
                (
                    "POST /v1/pushes (durable)",
                    format!("{base}/v1/pushes"),
                    true,
                ),
            ] {
                let run = load(url, body.clone(), auth, c, Duration::from_secs(seconds)).await;
                if auth {
                    total_ok += run.ok;
                }
                println!(
                    "{:<28} {:>6} {:>12.0} {:>9.2} {:>9.2} {:>8}",
                    name,
                    c,
                    run.ok as f64 / run.secs,
                    run.pct(0.5),
                    run.pct(0.99),
                    run.errors
                );
            }
        }
    });
    let stored: u64 = server_rt.block_on(async {
        store
            .queue_depth()
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| *n)
            .sum()
    });
    if serve_only.is_some() {
        println!("pushes in store = {stored} (compare with wrk's 2xx count)");
        return;
    }
    println!("accepted (202) = {total_ok}, in store = {stored}");
    assert_eq!(stored, total_ok, "every 202 must be in the store");
}
