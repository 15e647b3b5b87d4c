//! OBEX codec throughput: a whole client session's packets for a payload (the CPU cost of one
//! OBEX delivery, I/O excluded), decoding one full-size PUT packet, and the auth digest.
//!
//! `CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo bench --profile dev --bench obex` (see docs/perf/obex.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

use divan::{Bencher, black_box, counter::BytesCount};
use dmpushd::codec::obex::{
    self, Action, ClientSession, ConnectFields, Header, Packet, PutRequest,
};

fn main() {
    divan::main();
}

fn connect_ok(max: u16) -> Vec<u8> {
    Packet {
        code: obex::RSP_SUCCESS,
        connect: Some(ConnectFields {
            version: 0x10,
            flags: 0,
            max_packet: max,
        }),
        headers: vec![Header::u32(obex::HI_CONNECTION_ID, 1)],
    }
    .encode()
    .unwrap()
}

/// All packets of CONNECT → PUT… → DISCONNECT for `len` octets at the relay's `max`.
#[divan::bench(args = [(1024, 1024), (65_536, 1024), (65_536, 65_535)])]
fn session(b: Bencher, (len, max): (usize, u16)) {
    let body = vec![0x5Au8; len];
    let ok = connect_ok(max);
    b.counter(BytesCount::new(len)).bench(|| {
        let mut s = ClientSession::new(PutRequest {
            target: obex::TARGET_SYNCML_DM.to_vec(),
            name: Some("dm.wbxml".into()),
            mime_type: "application/vnd.syncml.dm+wbxml".into(),
            body: body.clone(),
            max_rx: 4096,
            password: None,
            user_id: None,
        });
        let mut wire = s.start().unwrap().len();
        let mut a = s.on_response(&ok).unwrap();
        while let Action::Send(p) = a {
            wire += p.len();
            let reply = if p[0] == obex::OP_PUT {
                [obex::RSP_CONTINUE, 0, 3]
            } else {
                [obex::RSP_SUCCESS, 0, 3]
            };
            a = s.on_response(&reply).unwrap();
        }
        black_box(wire)
    });
}

#[divan::bench]
fn decode_full_put_packet(b: Bencher) {
    let p = Packet::new(
        obex::OP_PUT,
        vec![
            Header::u32(obex::HI_CONNECTION_ID, 1),
            Header::bytes(obex::HI_BODY, &[0xA5; 4088]),
        ],
    )
    .encode()
    .unwrap();
    b.counter(BytesCount::new(p.len()))
        .bench(|| black_box(obex::decode_request(black_box(&p)).unwrap()));
}

#[divan::bench]
fn auth_digest() -> [u8; 16] {
    obex::auth_digest(black_box(&[7; 16]), black_box(b"relay-password"))
}
