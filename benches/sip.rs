//! SIP binding benchmarks.
//!
//! * `cargo bench --bench sip` — divan micro-benchmarks of the sans-IO codec (request encoding,
//!   response parsing, digest computation).
//! * `SIP_BENCH_THROUGHPUT=1 cargo bench --bench sip` — MESSAGE transactions per second through
//!   `Binding::deliver` to a SIPp UAS (`tests/peers/sip/uas_message.xml`) over UDP and TCP, next
//!   to SIPp's own ceiling as a UAC (`uac_message.xml`) against the same UAS in the same run.
//!   Needs `sipp` on PATH. Figures are recorded in docs/perf/sip.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use dmpushd::{
    binding::{
        BindingContext, ContentType, Delivery, DeviceBinding, Outcome,
        sip::{SipConfig, build},
    },
    codec::sip::{
        auth::{self, DigestInput},
        message::{MessageRequest, Transport, parse_response},
    },
};

const DM_XML: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:493005100592800</LocURI></Target><Source><LocURI>https://dm.example.com/</LocURI></Source></SyncHdr><SyncBody><Final/></SyncBody></SyncML>"#;

fn main() {
    if std::env::var_os("SIP_BENCH_THROUGHPUT").is_some() {
        throughput();
    } else {
        divan::main();
    }
}

#[divan::bench]
fn encode_message() -> Vec<u8> {
    MessageRequest {
        request_uri: divan::black_box("sip:device@127.0.0.1:5060"),
        transport: Transport::Udp,
        sent_by: "127.0.0.1:40000",
        branch: "z9hG4bK0123456789abcdef",
        from: "<sip:dmpushd@localhost>",
        from_tag: "0123456789abcdef",
        to: "<sip:device@127.0.0.1:5060>",
        call_id: "0123456789abcdef0123456789abcdef@dmpushd",
        cseq: 1,
        max_forwards: 70,
        route: &[],
        accept_contact: Some("*;+g.oma.eventappid=\"syncml.dm\""),
        authorization: None,
        content_type: "application/vnd.syncml.dm+xml",
        body: DM_XML.as_bytes(),
    }
    .encode()
}

#[divan::bench]
fn parse_200() -> u16 {
    let raw = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK0123456789abcdef;rport=40000\r\nFrom: <sip:dmpushd@localhost>;tag=0123456789abcdef\r\nTo: <sip:device@127.0.0.1:5060>;tag=123SIPpTag011\r\nCall-ID: 0123456789abcdef0123456789abcdef@dmpushd\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    parse_response(divan::black_box(raw)).map_or(0, |r| r.status)
}

#[divan::bench]
fn digest_qop_auth() -> String {
    let ch = auth::parse_challenge(divan::black_box(
        "Digest realm=\"dm.test\", nonce=\"123461n0nce\", algorithm=MD5, qop=\"auth\"",
    ))
    .expect("challenge");
    auth::authorization(
        &ch,
        &DigestInput {
            username: "dmuser",
            password: "s3cret",
            method: "MESSAGE",
            uri: "sip:device@127.0.0.1",
            body: b"",
            cnonce: "0a4f113b",
            nc: 1,
        },
    )
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Throughput against SIPp.

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers/sip")
        .join(name)
}

fn free_port() -> u16 {
    let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    t.local_addr().expect("addr").port()
}

fn port_bound(port: u16, tcp: bool) -> bool {
    let file = if tcp {
        "/proc/net/tcp"
    } else {
        "/proc/net/udp"
    };
    let want = format!(":{port:04X}");
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.len() > 3 && c[1].ends_with(&want) && (!tcp || c[3] == "0A")
        })
}

struct Uas(Child);

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_uas(sipp: &Path, tcp: bool, port: u16) -> Uas {
    let child = Command::new(sipp)
        .args(["-t", if tcp { "t1" } else { "u1" }])
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
        .arg("-sf")
        .arg(scenario("uas_message.xml"))
        .args(["-max_socket", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp UAS");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !port_bound(port, tcp) {
        assert!(Instant::now() < deadline, "sipp UAS did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    Uas(child)
}

/// Transactions per second through `Binding::deliver` with `concurrency` deliveries in flight.
fn binding_rate(
    rt: &tokio::runtime::Runtime,
    tcp: bool,
    port: u16,
    concurrency: usize,
    dur: Duration,
) -> (f64, u64) {
    rt.block_on(async {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let ctx = BindingContext {
            registry: prometheus::Registry::new(),
            receipts: tx,
            shutdown: tokio_util::sync::CancellationToken::new(),
        };
        let cfg = SipConfig {
            transport: if tcp { "tcp" } else { "udp" }.into(),
            ..Default::default()
        };
        let b = build(&cfg, &ctx).await.expect("build").expect("enabled");
        let uri = format!("sip:device@127.0.0.1:{port}");
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let end = start + dur;
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let b = b.clone();
            let uri = uri.clone();
            let ok = ok.clone();
            let failed = failed.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let now = time::OffsetDateTime::now_utc();
                    let d = Delivery {
                        push_id: "bench".into(),
                        tenant: "bench".into(),
                        device_id: None,
                        target: DeviceBinding::Sip {
                            uri: uri.parse().unwrap(),
                            gruu: None,
                        },
                        content_type: ContentType::DmXml,
                        body: Bytes::from_static(DM_XML.as_bytes()),
                        bootstrap: None,
                        attempt: 1,
                        expires_at: now + time::Duration::hours(1),
                        now,
                    };
                    match b.deliver(d).await {
                        Outcome::Delivered { .. } => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let secs = start.elapsed().as_secs_f64();
        (
            ok.load(Ordering::Relaxed) as f64 / secs,
            failed.load(Ordering::Relaxed),
        )
    })
}

/// SIPp as UAC: `calls` MESSAGE transactions with `concurrency` in flight; wall-clock rate.
fn sipp_rate(sipp: &Path, tcp: bool, port: u16, concurrency: usize, calls: u64) -> (f64, bool) {
    let start = Instant::now();
    let mut child = Command::new(sipp)
        .arg(format!("127.0.0.1:{port}"))
        .args(["-t", if tcp { "t1" } else { "u1" }])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-nostdin",
        ])
        .arg("-sf")
        .arg(scenario("uac_message.xml"))
        .args(["-m", &calls.to_string()])
        .args(["-l", &concurrency.to_string()])
        .args(["-r", "1000000", "-rp", "1000", "-timeout", "120s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp UAC");
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sipp UAC did not finish");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (
        calls as f64 / start.elapsed().as_secs_f64(),
        status.success(),
    )
}

fn throughput() {
    let Some(sipp) = which("sipp") else {
        eprintln!("sipp not installed (scripts/install-peers.sh)");
        return;
    };
    let secs: u64 = std::env::var("SIP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let concurrency: usize = std::env::var("SIP_BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| transport | dmpushd binding (tx/s) | failed | SIPp UAC ceiling (tx/s) | ratio |");
    println!("|---|---|---|---|---|");
    for tcp in [false, true] {
        let port = free_port();
        let _uas = start_uas(&sipp, tcp, port);
        // Warm-up (connection, caches), then the measured runs, same UAS for both clients.
        let _ = binding_rate(&rt, tcp, port, concurrency, Duration::from_millis(500));
        let (ours, failed) = binding_rate(&rt, tcp, port, concurrency, Duration::from_secs(secs));
        let calls = ((ours * secs as f64) as u64).max(2000);
        let (theirs, ok) = sipp_rate(&sipp, tcp, port, concurrency, calls);
        println!(
            "| {} | {ours:.0} | {failed} | {theirs:.0}{} | {:.0} % |",
            if tcp { "TCP" } else { "UDP" },
            if ok {
                ""
            } else {
                " (sipp reported failed calls)"
            },
            100.0 * ours / theirs
        );
    }
}
