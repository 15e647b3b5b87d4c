//! Simulator benchmarks (divan). `cargo bench --bench sim`
//!
//! * `route_*`: the pure client rules + DM application on one WDP datagram (package #0 with the
//!   digest check; a 654-octet WBXML bootstrap decoded to XML).
//! * `reassemble_6_parts`: concatenated-SMS reassembly of a 6-part message.
//! * `smsc_pipelined_burst`: BURST single-SMS submit_sm written back to back to the simulated SMSC
//!   on loopback and all submit_sm_resp read (each SMS also goes through the handset rules and
//!   emits its events). submit_sm/s = BURST / time per iteration.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

use std::{
    path::Path,
    sync::OnceLock,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use dmpushd::{
    codec::smpp::{self, Bind, Body, Pdu, Sm, cmd},
    sim::{
        self, SimArgs,
        device::{self, DmCredentials, Reassembler, SmsUnit},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    runtime::Runtime,
};
use tokio_util::sync::CancellationToken;

const BURST: usize = 1000;

fn main() {
    divan::main();
}

fn fixture(p: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(p),
    )
    .unwrap()
}

fn push_pdu(ct: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x01, 0x06, 0x03, ct | 0x80, 0xAF, 0x87];
    v.extend_from_slice(body);
    v
}

#[divan::bench]
fn route_notification(b: divan::Bencher) {
    let d = push_pdu(0x44, &fixture("notification/d8_example1.bin"));
    let c = DmCredentials::parse("com.example.dms:srvpass:AQIDBAUGBwg=").unwrap();
    b.bench(|| device::wdp_datagram(Some(2948), divan::black_box(&d), Some(&c)));
}

#[divan::bench]
fn route_wbxml_654(b: divan::Bencher) {
    let d = push_pdu(0x42, &fixture("wbxml/16_bootstrap_dmacc.wbxml"));
    b.bench(|| device::wdp_datagram(Some(2948), divan::black_box(&d), None));
}

#[divan::bench]
fn reassemble_6_parts(b: divan::Bencher) {
    let parts: Vec<SmsUnit> = (1..=6u8)
        .map(|s| SmsUnit {
            dest_port: Some(2948),
            src_port: Some(9200),
            concat: Some((7, false, 6, s)),
            payload: vec![s; 128],
        })
        .collect();
    let now = Instant::now();
    b.bench(|| {
        let mut r = Reassembler::new(Duration::from_secs(60));
        let mut last = None;
        for p in &parts {
            last = Some(r.push("15550100001", "9200", p.clone(), now));
        }
        last
    });
}

struct Smsc {
    rt: Runtime,
    addr: std::net::SocketAddr,
    _stop: CancellationToken,
}

fn smsc() -> &'static Smsc {
    static S: OnceLock<Smsc> = OnceLock::new();
    S.get_or_init(|| {
        let rt = Runtime::new().unwrap();
        let stop = CancellationToken::new();
        let addr = rt.block_on(async {
            let args = SimArgs {
                smpp: Some("127.0.0.1:0".parse().unwrap()),
                no_dlr: true,
                ..SimArgs::default()
            };
            let mut h = sim::start(&args, stop.clone()).await.unwrap();
            let addr = h.smpp.unwrap();
            // Drain the events as `dmpushd sim` would (without the stdout cost).
            tokio::spawn(async move { while h.events.recv().await.is_some() {} });
            addr
        });
        Smsc {
            rt,
            addr,
            _stop: stop,
        }
    })
}

async fn read_pdu(s: &mut TcpStream, buf: &mut BytesMut) -> Pdu {
    loop {
        if let Ok(Some(n)) = smpp::frame_len(buf)
            && buf.len() >= n
        {
            let f = buf.split_to(n);
            return Pdu::decode(&f).unwrap();
        }
        assert!(s.read_buf(buf).await.unwrap() > 0, "SMSC closed");
    }
}

#[divan::bench(sample_count = 20)]
fn smsc_pipelined_burst(b: divan::Bencher) {
    let s = smsc();
    let mut ud = hex::decode("0605040b8423f0").unwrap();
    ud.extend(push_pdu(0x43, b"<SyncML xmlns=\"SYNCML:SYNCML1.2\"/>"));
    let mut wire = Vec::new();
    for i in 0..BURST {
        let p = Pdu::new(
            cmd::SUBMIT_SM,
            i as u32 + 2,
            Body::Sm(Sm {
                dest_addr: format!("1555{:07}", i),
                source_addr: "9200".into(),
                esm_class: smpp::ESM_UDHI,
                data_coding: 4,
                short_message: ud.clone(),
                ..Sm::default()
            }),
        );
        wire.extend(p.encode().unwrap());
    }
    b.bench(|| {
        s.rt.block_on(async {
            let mut c = TcpStream::connect(s.addr).await.unwrap();
            let bind = Pdu::new(
                cmd::BIND_TRANSCEIVER,
                1,
                Body::Bind(Bind {
                    system_id: "bench".into(),
                    password: String::new(),
                    system_type: String::new(),
                    interface_version: smpp::INTERFACE_VERSION,
                    addr_ton: 0,
                    addr_npi: 0,
                    address_range: String::new(),
                }),
            );
            c.write_all(&bind.encode().unwrap()).await.unwrap();
            let mut buf = BytesMut::with_capacity(64 * 1024);
            assert_eq!(read_pdu(&mut c, &mut buf).await.header.status, 0);
            c.write_all(&wire).await.unwrap();
            for _ in 0..BURST {
                let r = read_pdu(&mut c, &mut buf).await;
                assert_eq!(r.header.status, 0);
            }
        })
    });
}
