//! The tenant boundary, outbound side (DESIGN §10.3, issue 12): `allow_targets` guards the WAP
//! UDP bearer, SIP device URIs (UDP and TCP) and OBEX relays as it guards HTTP. A literal
//! loopback address is refused with 422 naming the field, at registration and at submit; a name
//! that resolves to loopback fails the push permanently at send time ("target not allowed",
//! without the resolved addresses); in both cases no byte reaches the listener. With
//! `allow_targets = ["127.0.0.0/8"]` the same targets are reached.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
};

use crate::support::{
    gateway::{Gateway, TOKEN_A, settings, xml_push},
    sip::{header, split_message},
};

const XML: &str = "<SyncML/>";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    WapUdp,
    SipUdp,
    SipTcp,
    Obex,
}

/// A peer on loopback that records every byte it receives; SIP peers answer each MESSAGE 200.
struct Listener {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<u8>>>,
}

/// A 200 to a SIP request, echoing the headers a client matches on (RFC 3261 §8.2.6.2).
fn ok(req: &[u8]) -> Vec<u8> {
    let (_, h, _) = split_message(req);
    let get = |n: &str| header(&h, n).unwrap_or_default().to_string();
    format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=uas\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        get("Via"),
        get("From"),
        get("To"),
        get("Call-ID"),
        get("CSeq")
    )
    .into_bytes()
}

impl Listener {
    async fn start(kind: Kind) -> Self {
        let got: Arc<Mutex<Vec<u8>>> = Arc::default();
        let g = got.clone();
        let addr = match kind {
            Kind::WapUdp | Kind::SipUdp => {
                let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let addr = sock.local_addr().unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 70_000];
                    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                        g.lock().unwrap().extend_from_slice(&buf[..n]);
                        if kind == Kind::SipUdp && buf.starts_with(b"MESSAGE ") {
                            let _ = sock.send_to(&ok(&buf[..n]), from).await;
                        }
                    }
                });
                addr
            }
            Kind::SipTcp | Kind::Obex => {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                tokio::spawn(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        let g = g.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 70_000];
                            let mut msg = Vec::new();
                            while let Ok(n) = s.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                g.lock().unwrap().extend_from_slice(&buf[..n]);
                                msg.extend_from_slice(&buf[..n]);
                                // One MESSAGE with a small body per read is all the gateway sends.
                                if kind == Kind::SipTcp
                                    && msg.starts_with(b"MESSAGE ")
                                    && msg.windows(XML.len()).any(|w| w == XML.as_bytes())
                                {
                                    let _ = s.write_all(&ok(&msg)).await;
                                    msg.clear();
                                }
                            }
                        });
                    }
                });
                addr
            }
        };
        Self { addr, got }
    }

    fn received(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// The binding object for a target at `host` (an IP literal or a name) and this port.
    fn binding(&self, kind: Kind, host: &str) -> Value {
        let port = self.addr.port();
        match kind {
            Kind::WapUdp => {
                json!({"type": "wap", "bearer": "udp", "address": format!("{host}:{port}")})
            }
            Kind::SipUdp => json!({"type": "sip", "uri": format!("sip:device@{host}:{port}")}),
            Kind::SipTcp => {
                json!({"type": "sip", "uri": format!("sip:device@{host}:{port};transport=tcp")})
            }
            Kind::Obex => json!({"type": "obex", "address": format!("{host}:{port}")}),
        }
    }
}

fn field_of(kind: Kind) -> &'static str {
    match kind {
        Kind::WapUdp | Kind::Obex => "address",
        Kind::SipUdp | Kind::SipTcp => "uri",
    }
}

/// A gateway whose non-HTTP bindings have the default (empty) allow-list, with fast SIP timers.
async fn strict_gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.wap.allow_targets.clear();
    s.bindings.sip.allow_targets.clear();
    s.bindings.obex.allow_targets.clear();
    s.bindings.sip.t1_ms = 50;
    s.bindings.sip.t2_ms = 200;
    Gateway::start_with(s, Some(dir)).await
}

async fn open_gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.sip.t1_ms = 50;
    s.bindings.sip.t2_ms = 200;
    Gateway::start_with(s, Some(dir)).await
}

fn inline(binding: Value) -> Value {
    json!({"bindings": [binding], "content_type": "application/vnd.syncml.dm+xml", "body": XML})
}

async fn literal_is_refused_with_422(kind: Kind) {
    let peer = Listener::start(kind).await;
    let gw = strict_gateway().await;
    let b = peer.binding(kind, "127.0.0.1");
    let field = format!("bindings[0].{}", field_of(kind));

    let (s, body) = gw
        .call(
            "PUT",
            "/v1/devices/dev",
            Some(TOKEN_A),
            Some(json!({"bindings": [b.clone()]})),
        )
        .await;
    assert_eq!(s, 422, "registration: {body}");
    assert_eq!(body["field"], field.as_str(), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("allow_targets"),
        "{body}"
    );

    let (s, body) = gw
        .call("POST", "/v1/pushes", Some(TOKEN_A), Some(inline(b)))
        .await;
    assert_eq!(s, 422, "inline submit: {body}");
    assert_eq!(body["field"], field.as_str(), "{body}");

    // IPv4-mapped IPv6 is the same address.
    if kind == Kind::Obex {
        let (s, body) = gw
            .call(
                "POST",
                "/v1/pushes",
                Some(TOKEN_A),
                Some(inline(
                    json!({"type": "obex", "address": format!("[::ffff:127.0.0.1]:{}", peer.addr.port())}),
                )),
            )
            .await;
        assert_eq!(s, 422, "mapped address: {body}");
    }
    gw.stop().await;
    assert_eq!(peer.received(), 0, "no byte reaches a refused listener");
}

/// `localhost` passes the API (a name is checked after DNS) and fails permanently at send time.
async fn name_fails_after_dns(kind: Kind) {
    let peer = Listener::start(kind).await;
    let gw = strict_gateway().await;
    let b = peer.binding(kind, "localhost");
    gw.put_device(TOKEN_A, "dev", json!({"bindings": [b.clone()]}))
        .await;
    let registered = gw.push(TOKEN_A, xml_push("dev", XML)).await;
    let (s, body) = gw
        .call("POST", "/v1/pushes", Some(TOKEN_A), Some(inline(b)))
        .await;
    assert_eq!(s, 202, "{body}");
    let inline_id = body["id"].as_str().unwrap().to_owned();
    for id in [registered, inline_id] {
        let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(20)).await;
        assert_eq!(p["state"], "failed", "{p}");
        assert_eq!(p["attempts"], 1, "permanent: not retried: {p}");
        let text = p["events"].to_string();
        assert!(text.contains("target not allowed"), "{text}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains("::1"),
            "the resolved addresses are not revealed: {text}"
        );
    }
    gw.stop().await;
    assert_eq!(peer.received(), 0, "no byte reaches a refused listener");
}

/// With loopback allowed, registered and inline pushes reach the listener.
async fn allowed_is_delivered(kind: Kind) {
    let peer = Listener::start(kind).await;
    let gw = open_gateway().await;
    let b = peer.binding(kind, "127.0.0.1");
    gw.put_device(TOKEN_A, "dev", json!({"bindings": [b.clone()]}))
        .await;
    let registered = gw.push(TOKEN_A, xml_push("dev", XML)).await;
    let (s, body) = gw
        .call("POST", "/v1/pushes", Some(TOKEN_A), Some(inline(b)))
        .await;
    assert_eq!(s, 202, "{body}");
    let inline_id = body["id"].as_str().unwrap().to_owned();
    for id in [registered, inline_id] {
        match kind {
            Kind::WapUdp => {
                let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(20)).await;
                assert_eq!(p["state"], "unconfirmed", "{p}");
            }
            Kind::SipUdp | Kind::SipTcp => {
                let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(20)).await;
                assert_eq!(p["state"], "delivered", "{p}");
            }
            // No relay answers: reaching it is what this test is about.
            Kind::Obex => {}
        }
    }
    if kind == Kind::Obex {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while peer.got.lock().unwrap().first() != Some(&0x80) {
            assert!(
                std::time::Instant::now() < deadline,
                "no OBEX CONNECT arrived"
            );
            gw.store.wakeup().notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    gw.stop().await;
    assert!(peer.received() > 0);
}

macro_rules! cases {
    ($($name:ident => $kind:expr),* $(,)?) => {
        mod literal_refused {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { literal_is_refused_with_422($kind).await }) *
        }
        mod allowed_delivered {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { allowed_is_delivered($kind).await }) *
        }
    };
}

cases! {
    wap_udp => Kind::WapUdp,
    sip_udp => Kind::SipUdp,
    sip_tcp => Kind::SipTcp,
    obex => Kind::Obex,
}

// UDP bearer addresses are IP literals only (no name to resolve).
mod name_refused_after_dns {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sip_udp() {
        name_fails_after_dns(Kind::SipUdp).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sip_tcp() {
        name_fails_after_dns(Kind::SipTcp).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn obex() {
        name_fails_after_dns(Kind::Obex).await
    }
}
