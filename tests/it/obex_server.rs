//! The OBEX binding against in-process relays that refuse, drop, stall and challenge.
//!
//! The servers here parse OBEX by hand (not with `dmpushd::codec::obex`) and compute the
//! authentication digest with the `md-5` crate directly, so a mistake shared by the codec's
//! encoder and decoder cannot make these tests pass.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use dmpushd::binding::{
    Binding, ContentType, Delivery, DeviceBinding, Outcome,
    obex::{ObexBinding, ObexConfig},
};
use md5::{Digest, Md5};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};

use crate::support;

/// What the relay answers to one request packet: bytes, or `None` to drop the connection.
type Script = Box<dyn FnMut(usize, &Req) -> Option<Vec<u8>> + Send>;

/// A request as the relay sees it: opcode and headers (id, raw value; u32 headers as 4 octets).
#[derive(Clone, Debug)]
struct Req {
    op: u8,
    max_packet: Option<u16>,
    headers: Vec<(u8, Vec<u8>)>,
    raw: Vec<u8>,
}

impl Req {
    fn get(&self, id: u8) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(h, _)| *h == id)
            .map(|(_, v)| v.as_slice())
    }
}

fn parse_req(raw: Vec<u8>) -> Req {
    let op = raw[0];
    let mut i = 3;
    let mut max_packet = None;
    if op == 0x80 {
        max_packet = Some(u16::from_be_bytes([raw[5], raw[6]]));
        i = 7;
    }
    let mut headers = Vec::new();
    while i < raw.len() {
        let id = raw[i];
        let (val, n) = match id >> 6 {
            0 | 1 => {
                let n = usize::from(u16::from_be_bytes([raw[i + 1], raw[i + 2]]));
                (raw[i + 3..i + n].to_vec(), n)
            }
            2 => (vec![raw[i + 1]], 2),
            _ => (raw[i + 1..i + 5].to_vec(), 5),
        };
        headers.push((id, val));
        i += n;
    }
    Req {
        op,
        max_packet,
        headers,
        raw,
    }
}

fn pkt(code: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![code];
    v.extend_from_slice(&((3 + body.len()) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// CONNECT response: version 1.0, flags 0, `max`, then `headers` (already encoded).
fn connect_rsp(code: u8, max: u16, headers: &[u8]) -> Vec<u8> {
    let mut b = vec![0x10, 0x00];
    b.extend_from_slice(&max.to_be_bytes());
    b.extend_from_slice(headers);
    pkt(code, &b)
}

struct Relay {
    addr: String,
    seen: Arc<Mutex<Vec<Req>>>,
}

/// One-connection relay running `script`; over TLS when `tls` is given.
async fn relay_with(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> Relay {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let Ok((s, _)) = l.accept().await else {
            return;
        };
        match tls {
            None => serve(s, script, seen2).await,
            Some(acc) => {
                if let Ok(t) = acc.accept(s).await {
                    serve(t, script, seen2).await
                }
            }
        }
    });
    Relay { addr, seen }
}

async fn relay(script: Script) -> Relay {
    relay_with(script, None).await
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    mut script: Script,
    seen: Arc<Mutex<Vec<Req>>>,
) {
    let mut n = 0;
    loop {
        let mut head = [0u8; 3];
        if s.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
        let mut raw = head.to_vec();
        raw.resize(len, 0);
        if s.read_exact(&mut raw[3..]).await.is_err() {
            return;
        }
        let req = parse_req(raw);
        seen.lock().unwrap().push(req.clone());
        match script(n, &req) {
            Some(r) => {
                if s.write_all(&r).await.is_err() || s.flush().await.is_err() {
                    return;
                }
            }
            None => return, // drop the connection
        }
        n += 1;
    }
}

fn binding(io_timeout_ms: u64) -> (ObexBinding, prometheus::Registry) {
    let reg = prometheus::Registry::new();
    let cfg = ObexConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        io_timeout_ms,
        connect_timeout_ms: 2_000,
        ..Default::default()
    };
    (ObexBinding::new(&cfg, &reg).unwrap(), reg)
}

fn delivery(address: &str, password: Option<&str>, body: &[u8]) -> Delivery {
    let target = DeviceBinding::Obex {
        address: address.parse().unwrap(),
        password: password.map(str::to_owned),
    };
    support::delivery(target, ContentType::DmWbxml, body)
}

async fn deliver(b: &ObexBinding, d: Delivery) -> Outcome {
    tokio::time::timeout(Duration::from_secs(20), b.deliver(d))
        .await
        .expect("delivery must finish in bounded time")
}

fn metric(reg: &prometheus::Registry, name: &str, label: Option<&str>) -> f64 {
    reg.gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| label.is_none_or(|l| m.get_label().iter().any(|p| p.value() == l)))
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// A well-behaved relay: Connection-Id + Who, Continue / Success, stores the object.
fn good_script(max: u16, object: Arc<Mutex<Vec<u8>>>) -> Script {
    Box::new(move |_, r| match r.op {
        0x80 => {
            let mut h = vec![0xCB, 0, 0, 0x12, 0x34, 0x4A, 0, 12];
            h.extend_from_slice(b"SYNCML-DM");
            Some(connect_rsp(0xA0, max, &h))
        }
        0x02 | 0x82 => {
            for (id, v) in &r.headers {
                if *id == 0x48 || *id == 0x49 {
                    object.lock().unwrap().extend_from_slice(v);
                }
            }
            Some(pkt(if r.op == 0x02 { 0x90 } else { 0xA0 }, &[]))
        }
        _ => Some(pkt(0xA0, &[])),
    })
}

#[tokio::test]
async fn multi_packet_put_with_connection_id_is_delivered() {
    let object = Arc::new(Mutex::new(Vec::new()));
    let r = relay(good_script(255, object.clone())).await;
    let (b, reg) = binding(5_000);
    let body: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    let out = deliver(&b, delivery(&r.addr, None, &body)).await;
    assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
    assert_eq!(*object.lock().unwrap(), body);
    let seen = r.seen.lock().unwrap();
    let c = &seen[0];
    assert_eq!(c.op, 0x80);
    assert_eq!(c.get(0x46), Some(&b"SYNCML-DM"[..]));
    assert_eq!(c.max_packet, Some(4096));
    let puts: Vec<&Req> = seen.iter().filter(|r| r.op & 0x7F == 0x02).collect();
    assert!(puts.len() >= 8, "2000 octets in 255-octet packets");
    for p in &puts {
        assert!(p.raw.len() <= 255);
        // Connection-Id is the first header of every request (IrOBEX §2.2.11).
        assert_eq!(p.headers[0], (0xCB, vec![0, 0, 0x12, 0x34]));
    }
    assert_eq!(puts.last().unwrap().op, 0x82);
    assert_eq!(
        puts[0].get(0x42),
        Some(&b"application/vnd.syncml.dm+wbxml\0"[..])
    );
    assert_eq!(puts[0].get(0xC3), Some(&2000u32.to_be_bytes()[..]));
    let last = seen.last().unwrap();
    assert_eq!(last.op, 0x81);
    assert_eq!(last.get(0xCB), Some(&[0, 0, 0x12, 0x34][..]));
    drop(seen);
    assert_eq!(
        metric(&reg, "dmpushd_obex_deliveries_total", Some("delivered")),
        1.0
    );
}

#[tokio::test]
async fn forbidden_put_is_permanent_with_the_code_name() {
    let r = relay(Box::new(|_, q| match q.op {
        0x80 => Some(connect_rsp(0xA0, 1024, &[])),
        _ => Some(pkt(0xC3, &[])),
    }))
    .await;
    let (b, reg) = binding(5_000);
    let out = deliver(&b, delivery(&r.addr, None, b"hello")).await;
    match out {
        Outcome::Permanent { reason } => {
            assert!(reason.contains("0xC3 Forbidden"), "{reason}")
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        metric(&reg, "dmpushd_obex_deliveries_total", Some("permanent")),
        1.0
    );
}

#[tokio::test]
async fn refused_connect_is_permanent() {
    let r = relay(Box::new(|_, _| Some(connect_rsp(0xC3, 1024, &[])))).await;
    let (b, _) = binding(5_000);
    let out = deliver(&b, delivery(&r.addr, None, b"hello")).await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("CONNECT refused: 0xC3 Forbidden")),
        "{out:?}"
    );
}

#[tokio::test]
async fn service_unavailable_is_transient() {
    let r = relay(Box::new(|_, _| Some(connect_rsp(0xD3, 1024, &[])))).await;
    let (b, _) = binding(5_000);
    let out = deliver(&b, delivery(&r.addr, None, b"hello")).await;
    assert!(
        matches!(&out, Outcome::Transient { reason, .. } if reason.contains("Service Unavailable")),
        "{out:?}"
    );
}

#[tokio::test]
async fn dropped_connection_is_transient() {
    // Drops after the CONNECT, and (second relay) in the middle of a multi-packet PUT.
    let r = relay(Box::new(|_, _| None)).await;
    let (b, reg) = binding(5_000);
    let out = deliver(&b, delivery(&r.addr, None, b"hello")).await;
    assert!(
        matches!(&out, Outcome::Transient { reason, .. } if reason.contains("closed")),
        "{out:?}"
    );
    let object = Arc::new(Mutex::new(Vec::new()));
    let mut good = good_script(255, object);
    let r = relay(Box::new(move |n, q| if n == 2 { None } else { good(n, q) })).await;
    let out = deliver(&b, delivery(&r.addr, None, &[7u8; 1000])).await;
    assert!(matches!(&out, Outcome::Transient { .. }), "{out:?}");
    assert_eq!(
        metric(&reg, "dmpushd_obex_deliveries_total", Some("transient")),
        2.0
    );
}

#[tokio::test]
async fn nobody_listening_is_transient() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let (b, _) = binding(5_000);
    let out = deliver(&b, delivery(&addr, None, b"hello")).await;
    assert!(
        matches!(&out, Outcome::Transient { reason, .. } if reason.contains("connect to")),
        "{out:?}"
    );
}

#[tokio::test]
async fn silent_relay_times_out_transient() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // Accept and hold the socket without answering.
    let holder = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(s);
    });
    let (b, _) = binding(300);
    let out = deliver(&b, delivery(&addr, None, b"hello")).await;
    assert!(
        matches!(&out, Outcome::Transient { reason, .. } if reason.contains("timed out")),
        "{out:?}"
    );
    holder.abort();
}

#[tokio::test]
async fn malformed_response_is_permanent() {
    // A Body header whose length runs past the packet: the decoder names it.
    let r = relay(Box::new(|_, _| {
        Some(vec![
            0xA0, 0x00, 0x0A, 0x10, 0x00, 0x04, 0x00, 0x48, 0x00, 0x20,
        ])
    }))
    .await;
    let (b, _) = binding(5_000);
    let out = deliver(&b, delivery(&r.addr, None, b"hello")).await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("offset 8")),
        "{out:?}"
    );
}

/// Challenge TLV: nonce (tag 0), options (tag 1), realm (tag 2, ASCII charset 0).
fn challenge(nonce: &[u8; 16]) -> Vec<u8> {
    let mut c = vec![0x00, 16];
    c.extend_from_slice(nonce);
    c.extend_from_slice(&[0x01, 1, 0x00, 0x02, 6, 0x00, b'r', b'e', b'l', b'a', b'y']);
    let mut h = vec![0x4D];
    h.extend_from_slice(&((3 + c.len()) as u16).to_be_bytes());
    h.extend_from_slice(&c);
    h
}

/// Relay that challenges CONNECT and accepts only MD5(nonce ":" `password`).
fn challenging(password: &'static str, verdicts: Arc<Mutex<Vec<bool>>>) -> Script {
    let nonce: [u8; 16] = *b"0123456789abcdef";
    let mut good = good_script(1024, Arc::new(Mutex::new(Vec::new())));
    Box::new(move |n, q| {
        if q.op != 0x80 {
            return good(n, q);
        }
        let Some(resp) = q.get(0x4E) else {
            return Some(connect_rsp(0xC1, 1024, &challenge(&nonce)));
        };
        // TLVs: tag 0 digest (16), tag 2 nonce (16).
        let mut want = Md5::new();
        want.update(nonce);
        want.update(b":");
        want.update(password.as_bytes());
        let want: [u8; 16] = want.finalize().into();
        let ok = resp.len() >= 36
            && resp[0] == 0x00
            && resp[1] == 16
            && resp[2..18] == want
            && resp[18..20] == [0x02, 16]
            && resp[20..36] == nonce;
        verdicts.lock().unwrap().push(ok);
        if ok {
            good(n, q)
        } else {
            Some(connect_rsp(0xC1, 1024, &challenge(&nonce)))
        }
    })
}

#[tokio::test]
async fn auth_challenge_is_answered_with_md5_nonce_colon_password() {
    let verdicts = Arc::new(Mutex::new(Vec::new()));
    let r = relay(challenging("s3cret", verdicts.clone())).await;
    let (b, reg) = binding(5_000);
    let out = deliver(&b, delivery(&r.addr, Some("s3cret"), b"<SyncML/>")).await;
    assert!(
        matches!(&out, Outcome::Delivered { detail } if detail.contains("authenticated")),
        "{out:?}"
    );
    assert_eq!(*verdicts.lock().unwrap(), vec![true]);
    assert_eq!(
        metric(&reg, "dmpushd_obex_auth_challenges_total", None),
        1.0
    );
}

#[tokio::test]
async fn wrong_password_is_permanent_unauthorized() {
    let verdicts = Arc::new(Mutex::new(Vec::new()));
    let r = relay(challenging("s3cret", verdicts.clone())).await;
    let (b, _) = binding(5_000);
    let out = deliver(&b, delivery(&r.addr, Some("hunter2"), b"<SyncML/>")).await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("0xC1 Unauthorized")),
        "{out:?}"
    );
    assert_eq!(*verdicts.lock().unwrap(), vec![false]);
    // The password never reaches the outcome text.
    assert!(!format!("{out:?}").contains("hunter2"));
}

#[tokio::test]
async fn challenge_without_password_is_permanent() {
    let r = relay(challenging("s3cret", Arc::new(Mutex::new(Vec::new())))).await;
    let (b, _) = binding(5_000);
    let out = deliver(&b, delivery(&r.addr, None, b"<SyncML/>")).await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("no password")),
        "{out:?}"
    );
}

#[tokio::test]
async fn build_registers_and_respects_enabled() {
    let ctx = support::binding_context_unread();
    let b = dmpushd::binding::obex::build(
        &ObexConfig {
            allow_targets: vec!["127.0.0.0/8".into()],
            ..Default::default()
        },
        &ctx,
    )
    .await
    .unwrap()
    .expect("enabled by default");
    assert_eq!(b.kind(), dmpushd::binding::BindingKind::Obex);
    let off = ObexConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        enabled: false,
        ..Default::default()
    };
    assert!(
        dmpushd::binding::obex::build(&off, &ctx)
            .await
            .unwrap()
            .is_none()
    );
}

fn tls_acceptor() -> (String, tokio_rustls::TlsAcceptor) {
    dmpushd::tls::install_provider();
    let (ca_pem, leaf, key) = support::receiver::test_pki();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .unwrap();
    (ca_pem, tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

#[tokio::test]
async fn tls_relay_with_private_ca_is_delivered() {
    let (ca_pem, acc) = tls_acceptor();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let object = Arc::new(Mutex::new(Vec::new()));
    let r = relay_with(good_script(1024, object.clone()), Some(acc)).await;
    let port = r.addr.rsplit_once(':').unwrap().1;
    let cfg = ObexConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        tls: true,
        ca_file: Some(ca),
        ..Default::default()
    };
    let b = ObexBinding::new(&cfg, &prometheus::Registry::new()).unwrap();
    let out = deliver(
        &b,
        delivery(&format!("localhost:{port}"), None, b"over TLS"),
    )
    .await;
    assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
    assert_eq!(*object.lock().unwrap(), b"over TLS");
}

#[tokio::test]
async fn tls_relay_with_unknown_ca_is_permanent() {
    let (_ca_pem, acc) = tls_acceptor();
    let r = relay_with(
        good_script(1024, Arc::new(Mutex::new(Vec::new()))),
        Some(acc),
    )
    .await;
    let port = r.addr.rsplit_once(':').unwrap().1;
    let cfg = ObexConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        tls: true,
        ..Default::default()
    };
    let b = ObexBinding::new(&cfg, &prometheus::Registry::new()).unwrap();
    let out = deliver(&b, delivery(&format!("localhost:{port}"), None, b"x")).await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("certificate")),
        "{out:?}"
    );
    assert!(
        r.seen.lock().unwrap().is_empty(),
        "no OBEX octet before a verified handshake"
    );
}
