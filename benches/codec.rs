//! Codec benchmarks (divan). `cargo bench --bench codec`. Figures: docs/perf/codec.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use dmpushd::codec::notification::{self, Initiator, Trigger, UiMode};
use dmpushd::codec::wbxml;

fn main() {
    divan::main();
}

/// A typical DM server message (tests/fixtures/wbxml/22_bench_dm_message.xml): header with MaxMsgSize,
/// Status for the client's header, a bootstrap-like Add of a DM account, six Gets and an Exec — about
/// 1.5 KiB of WBXML. The same file drives the libwbxml comparison (tests/peers/codec/bench_libwbxml.sh).
fn dm_message_xml() -> String {
    include_str!("../tests/fixtures/wbxml/22_bench_dm_message.xml").to_owned()
}

#[divan::bench]
fn wbxml_decode(b: Bencher) {
    let w = wbxml::xml_to_wbxml(dm_message_xml().as_bytes()).unwrap();
    b.counter(BytesCount::new(w.len()))
        .bench(|| wbxml::decode(black_box(&w)).unwrap());
}

#[divan::bench]
fn wbxml_to_xml(b: Bencher) {
    let w = wbxml::xml_to_wbxml(dm_message_xml().as_bytes()).unwrap();
    b.counter(BytesCount::new(w.len()))
        .bench(|| wbxml::wbxml_to_xml(black_box(&w)).unwrap());
}

#[divan::bench]
fn wbxml_encode(b: Bencher) {
    let xml = dm_message_xml();
    let doc = wbxml::xml::parse(xml.as_bytes()).unwrap();
    let n = wbxml::encode(&doc).unwrap().len();
    b.counter(BytesCount::new(n))
        .bench(|| wbxml::encode(black_box(&doc)).unwrap());
}

#[divan::bench]
fn wbxml_encode_no_string_table(b: Bencher) {
    let xml = dm_message_xml();
    let doc = wbxml::xml::parse(xml.as_bytes()).unwrap();
    let opts = wbxml::EncodeOptions {
        version: 3,
        string_table: false,
    };
    let n = wbxml::encode_with(&doc, &opts).unwrap().len();
    b.counter(BytesCount::new(n))
        .bench(|| wbxml::encode_with(black_box(&doc), &opts).unwrap());
}

#[divan::bench]
fn xml_to_wbxml(b: Bencher) {
    let xml = dm_message_xml();
    let n = wbxml::xml_to_wbxml(xml.as_bytes()).unwrap().len();
    b.counter(BytesCount::new(n))
        .bench(|| wbxml::xml_to_wbxml(black_box(xml.as_bytes())).unwrap());
}

fn trigger() -> Trigger {
    Trigger {
        version: notification::DEFAULT_VERSION,
        ui_mode: UiMode::Background,
        initiator: Initiator::Server,
        session_id: 0x1A2B,
        server_id: "com.example.dms".into(),
        vendor: vec![],
    }
}

#[divan::bench]
fn package0_build(b: Bencher) {
    let t = trigger();
    b.bench(|| notification::build(black_box(&t), b"srvpass", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap());
}

#[divan::bench]
fn package0_parse(b: Bencher) {
    let m = notification::build(&trigger(), b"srvpass", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    b.bench(|| notification::parse(black_box(&m)).unwrap());
}

#[divan::bench]
fn package0_verify(b: Bencher) {
    let m = notification::build(&trigger(), b"srvpass", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    b.bench(|| {
        notification::verify(
            black_box(&m),
            "com.example.dms",
            b"srvpass",
            &[1, 2, 3, 4, 5, 6, 7, 8],
        )
    });
}
