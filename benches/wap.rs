//! WAP binding benchmarks (divan). `cargo bench --bench wap`
//!
//! * `encode_*`: the pure encode path (WSP PDU + SMS segmentation + submit_sm PDUs).
//! * `binding_submit_burst`: pushes through `Binding::deliver` against the npm `smpp` SMSC
//!   simulator on loopback (one SMS each, BURST concurrent deliveries per iteration).
//! * `raw_client_burst`: the simulator's own ceiling, measured with a minimal pipelined SMPP
//!   client (same window, same PDUs) that does nothing else.
//!
//! submit_sm/s = BURST / (time per iteration). Needs `node` and tests/peers/smpp/node_modules
//! (scripts/install.d/wap.sh); the simulator benches are skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, OnceLock},
};

use bytes::{Buf, BytesMut};
use dmpushd::{
    binding::{
        Binding as _, BindingContext, ContentType, Delivery, DeviceBinding, WapBearer,
        wap::{self, SmscConfig, WapBinding, WapConfig},
    },
    codec::smpp::{self, Body, Pdu, cmd},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    runtime::Runtime,
};
use tokio_util::sync::CancellationToken;

const BURST: usize = 200;
const WINDOW: usize = 50;

fn main() {
    divan::main();
}

fn target() -> DeviceBinding {
    DeviceBinding::Wap {
        msisdn: Some("+491701234567".parse().unwrap()),
        bearer: WapBearer::Sms,
        address: None,
        secure: false,
    }
}

fn pkg0() -> Vec<u8> {
    hex::decode("d3290f1cbc08ea0e45867199db5cfcdf032800000012340f636f6d2e6578616d706c652e646d73")
        .unwrap()
}

fn dm600() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wsp/dm-600.wbxml"))
        .unwrap()
}

fn cfg(port: u16) -> WapConfig {
    WapConfig {
        enabled: true,
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        smsc: vec![SmscConfig {
            name: "sim".into(),
            port,
            window: WINDOW,
            source_addr: "DMSERVER".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[divan::bench]
fn encode_notification_units(b: divan::Bencher) {
    let body = pkg0();
    let c = cfg(1);
    b.bench(|| wap::encode_units(&c, &target(), ContentType::Notification, &body, None).unwrap());
}

#[divan::bench]
fn encode_dm600_units(b: divan::Bencher) {
    let body = dm600();
    let c = cfg(1);
    b.bench(|| wap::encode_units(&c, &target(), ContentType::DmWbxml, &body, None).unwrap());
}

#[divan::bench]
fn smpp_submit_sm_encode_decode(b: divan::Bencher) {
    let sm = smpp::Sm {
        dest_addr: "491701234567".into(),
        esm_class: 0x40,
        data_coding: 4,
        short_message: vec![0x55; 140],
        ..Default::default()
    };
    b.bench(|| {
        let bytes = Pdu::new(cmd::SUBMIT_SM, 7, Body::Sm(sm.clone()))
            .encode()
            .unwrap();
        Pdu::decode(&bytes).unwrap()
    });
}

struct SimEnv {
    rt: Runtime,
    port: u16,
    _child: ChildGuard,
    binding: Arc<WapBinding>,
    _shutdown: CancellationToken,
}

struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sim() -> Option<&'static SimEnv> {
    static ENV: OnceLock<Option<SimEnv>> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smpp");
        if !dir.join("node_modules/smpp").is_dir() {
            eprintln!("SKIP simulator benches: run scripts/install.d/wap.sh");
            return None;
        }
        let mut child = Command::new("node")
            .arg(dir.join("smsc-sim.js"))
            .args(["--port", "0", "--no-dlr"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take()?)
            .read_line(&mut line)
            .ok()?;
        let port: u16 = line.trim().strip_prefix("LISTENING ")?.parse().ok()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .ok()?;
        let shutdown = CancellationToken::new();
        let binding = rt.block_on(bound_binding(port, &shutdown))?;
        Some(SimEnv {
            rt,
            port,
            _child: ChildGuard(child),
            binding,
            _shutdown: shutdown,
        })
    })
    .as_ref()
}

/// A WAP binding with one session to the SMSC on `port`, once it is bound (receipts drained).
async fn bound_binding(port: u16, shutdown: &CancellationToken) -> Option<Arc<WapBinding>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let ctx = BindingContext {
        registry: prometheus::Registry::new(),
        receipts: tx,
        shutdown: shutdown.clone(),
    };
    let b = wap::build_wap(&cfg(port), &ctx).await.ok()??;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while b.ready().is_err() {
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Some(b)
}

fn delivery() -> Delivery {
    let now = time::OffsetDateTime::now_utc();
    Delivery {
        push_id: "bench".into(),
        tenant: "t".into(),
        device_id: None,
        target: target(),
        content_type: ContentType::Notification,
        body: pkg0().into(),
        bootstrap: None,
        attempt: 1,
        expires_at: now + time::Duration::hours(1),
        now,
    }
}

/// BURST one-SMS pushes through `Binding::deliver`, concurrently.
#[divan::bench(sample_count = 20)]
fn binding_submit_burst(b: divan::Bencher) {
    let Some(env) = sim() else { return };
    burst(b, &env.rt, &env.binding);
}

/// BURST concurrent one-SMS deliveries per iteration; each must be accepted by the SMSC.
fn burst(b: divan::Bencher, rt: &Runtime, binding: &Arc<WapBinding>) {
    b.counter(divan::counter::ItemsCount::new(BURST)).bench(|| {
        rt.block_on(async {
            let futs: Vec<_> = (0..BURST).map(|_| binding.deliver(delivery())).collect();
            let outs = futures_util::future::join_all(futs).await;
            assert!(
                outs.iter().all(|o| o.label() == "accepted"),
                "{:?}",
                outs.first()
            );
        })
    });
}

/// The simulator's ceiling: a minimal pipelined client, same window and PDUs.
#[divan::bench(sample_count = 20)]
fn raw_client_burst(b: divan::Bencher) {
    let Some(env) = sim() else { return };
    let units = wap::encode_units(
        &cfg(env.port),
        &target(),
        ContentType::Notification,
        &pkg0(),
        None,
    )
    .unwrap();
    let sm = smpp::Sm {
        source_ton: 5,
        source_addr: "DMSERVER".into(),
        dest_ton: 1,
        dest_npi: 1,
        dest_addr: "491701234567".into(),
        esm_class: 0x40,
        registered_delivery: 1,
        data_coding: 4,
        short_message: units[0].clone(),
        ..Default::default()
    };
    let mut conn = env.rt.block_on(async {
        let mut s = TcpStream::connect(("127.0.0.1", env.port)).await.unwrap();
        s.set_nodelay(true).unwrap();
        let bind = Pdu::new(
            cmd::BIND_TRANSCEIVER,
            1,
            Body::Bind(smpp::Bind {
                system_id: "raw".into(),
                password: "".into(),
                system_type: "".into(),
                interface_version: 0x34,
                addr_ton: 0,
                addr_npi: 0,
                address_range: "".into(),
            }),
        );
        s.write_all(&bind.encode().unwrap()).await.unwrap();
        let mut buf = BytesMut::new();
        read_one(&mut s, &mut buf).await;
        (s, buf, 2u32)
    });
    b.counter(divan::counter::ItemsCount::new(BURST))
        .bench_local(|| {
            env.rt.block_on(async {
                let (s, buf, seq) = &mut conn;
                let mut sent = 0;
                let mut acked = 0;
                while acked < BURST {
                    while sent < BURST && sent - acked < WINDOW {
                        let p = Pdu::new(cmd::SUBMIT_SM, *seq, Body::Sm(sm.clone()));
                        *seq += 1;
                        s.write_all(&p.encode().unwrap()).await.unwrap();
                        sent += 1;
                    }
                    let p = read_one(s, buf).await;
                    if p.header.command_id == cmd::SUBMIT_SM | cmd::RESP {
                        acked += 1;
                    }
                }
            })
        });
}

async fn read_one(s: &mut TcpStream, buf: &mut BytesMut) -> Pdu {
    loop {
        if let Ok(Some(n)) = smpp::frame_len(buf)
            && buf.len() >= n
        {
            let p = Pdu::decode(&buf[..n]).unwrap();
            buf.advance(n);
            return p;
        }
        assert!(s.read_buf(buf).await.unwrap() > 0, "simulator closed");
    }
}

/// The same binding against `dmpushd sim`'s SMPP server (Rust, multi-threaded runtime), which
/// absorbs ≈ 22,700 submit_sm/s on its own (docs/perf/sim.md) and so is not the bottleneck the
/// single-threaded node simulator is: this is the binding's own ceiling per SMSC session.
struct RustSimEnv {
    rt: Runtime,
    binding: Arc<WapBinding>,
    _shutdown: CancellationToken,
}

fn rust_sim() -> Option<&'static RustSimEnv> {
    static ENV: OnceLock<Option<RustSimEnv>> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .ok()?;
        let shutdown = CancellationToken::new();
        let binding = rt.block_on(async {
            let args = dmpushd::sim::SimArgs {
                smpp: Some("127.0.0.1:0".parse().ok()?),
                no_dlr: true,
                ..Default::default()
            };
            let mut h = dmpushd::sim::start(&args, shutdown.clone()).await.ok()?;
            let port = h.smpp?.port();
            tokio::spawn(async move { while h.events.recv().await.is_some() {} });
            bound_binding(port, &shutdown).await
        })?;
        Some(RustSimEnv {
            rt,
            binding,
            _shutdown: shutdown,
        })
    })
    .as_ref()
}

/// BURST one-SMS pushes through `Binding::deliver` against the Rust simulated SMSC.
#[divan::bench(sample_count = 20)]
fn binding_submit_burst_rust_smsc(b: divan::Bencher) {
    let Some(env) = rust_sim() else { return };
    burst(b, &env.rt, &env.binding);
}
