//! Fault tests of the SMPP ESME session against an in-process SMSC that misbehaves on purpose
//! (issue 4 acceptance #3). Short timers; every wait polls a condition with a deadline.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Buf, BytesMut};
use dmpushd::{
    binding::{
        Binding as _, BindingContext, ContentType, NextHopRef, Outcome, Receipt,
        wap::{self, AmbiguousPolicy, SmscConfig, WapBinding, WapConfig},
    },
    codec::smpp::{self, Body, Pdu, cmd},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

use crate::support::{binding_context, wap::*};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Normal,
    /// Swallow this many submit_sm, then close the connection.
    DropAfter(usize),
    /// Never answer submit_sm.
    NoResp,
    /// Answer the first submit_sm with bytes that are not SMPP.
    Garbage,
    /// Never answer enquire_link.
    SilentEnquire,
    /// Answer submit_sm with generic_nack ESME_RINVCMDLEN.
    Nack,
    /// Answer submit_sm after a delay (to observe the window).
    Slow(u64),
    /// Answer with a hex id, then send a text receipt carrying the same id in decimal.
    DecimalReceipt,
    /// Answer the first submit_sm, then never read again and flood enquire_link: the ESME's
    /// answers fill the socket buffers (the listener's receive buffer is small) until its
    /// writes block.
    StopReading,
}

struct FakeSmsc {
    port: u16,
    conns: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<String>>>,
    max_outstanding: Arc<AtomicUsize>,
}

impl FakeSmsc {
    /// `modes[i]` is the behaviour of connection i; the last one repeats.
    async fn start(modes: Vec<Mode>) -> FakeSmsc {
        Self::start_with(modes, None).await
    }

    /// Same, behind TLS.
    async fn start_with(modes: Vec<Mode>, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeSmsc {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        if modes.contains(&Mode::StopReading) {
            // Inherited by accepted sockets: a full receive window comes sooner.
            sock.set_recv_buffer_size(4096).unwrap();
        }
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let l: TcpListener = sock.listen(64).unwrap();
        let port = l.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let max_outstanding = Arc::new(AtomicUsize::new(0));
        let (c2, l2, m2) = (conns.clone(), log.clone(), max_outstanding.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let i = c2.fetch_add(1, Ordering::SeqCst);
                let mode = *modes.get(i).or(modes.last()).unwrap();
                let (log, max) = (l2.clone(), m2.clone());
                match tls.clone() {
                    None => {
                        tokio::spawn(serve(s, mode, i, log, max));
                    }
                    Some(acc) => {
                        tokio::spawn(async move {
                            match acc.accept(s).await {
                                Ok(t) => serve(t, mode, i, log, max).await,
                                Err(e) => log.lock().unwrap().push(format!("{i} tls error {e}")),
                            }
                        });
                    }
                }
            }
        });
        FakeSmsc {
            port,
            conns,
            log,
            max_outstanding,
        }
    }

    fn count(&self, what: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    mode: Mode,
    conn: usize,
    log: Arc<Mutex<Vec<String>>>,
    max_out: Arc<AtomicUsize>,
) {
    let mut buf = BytesMut::new();
    let mut submits = 0usize;
    let outstanding = Arc::new(AtomicUsize::new(0));
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    loop {
        tokio::select! {
            Some(b) = wrx.recv() => { if s.write_all(&b).await.is_err() { return; } continue; }
            r = s.read_buf(&mut buf) => if !matches!(r, Ok(n) if n > 0) { log.lock().unwrap().push(format!("{conn} closed")); return; },
        }
        while let Ok(Some(len)) = smpp::frame_len(&buf) {
            if buf.len() < len {
                break;
            }
            let pdu = Pdu::decode(&buf[..len]).unwrap();
            buf.advance(len);
            let h = pdu.header;
            let name = match h.command_id {
                cmd::BIND_TRANSCEIVER => "bind",
                cmd::SUBMIT_SM => "submit_sm",
                cmd::ENQUIRE_LINK => "enquire_link",
                cmd::UNBIND => "unbind",
                c if c & cmd::RESP != 0 => "resp",
                _ => "other",
            };
            log.lock().unwrap().push(format!(
                "{conn} {name} status={:#x} {:?}",
                h.status,
                std::time::Instant::now()
            ));
            let reply = match h.command_id {
                cmd::BIND_TRANSCEIVER => Some(Pdu::response(&h, 0, Body::IdResp("FAKE".into()))),
                cmd::ENQUIRE_LINK if mode != Mode::SilentEnquire => {
                    Some(Pdu::response(&h, 0, Body::Empty))
                }
                cmd::UNBIND => Some(Pdu::response(&h, 0, Body::Empty)),
                cmd::SUBMIT_SM => {
                    submits += 1;
                    match mode {
                        Mode::Normal | Mode::SilentEnquire | Mode::StopReading => {
                            Some(Pdu::response(
                                &h,
                                0,
                                Body::IdResp(format!("{:X}", conn * 1000 + submits)),
                            ))
                        }
                        Mode::DropAfter(n) => {
                            if submits >= n {
                                log.lock().unwrap().push(format!("{conn} dropping"));
                                return;
                            }
                            None
                        }
                        Mode::NoResp => None,
                        Mode::DecimalReceipt => {
                            let n = 4000 + submits as u64;
                            let resp = Pdu::response(&h, 0, Body::IdResp(format!("{n:08X}")));
                            let dlr = Pdu::new(
                                cmd::DELIVER_SM,
                                900 + submits as u32,
                                Body::Sm(smpp::Sm {
                                    esm_class: 0x04,
                                    short_message: format!(
                                        "id:{n} sub:001 dlvrd:000 submit date:2611240500 done date:2611240501 stat:UNDELIV err:001 text:"
                                    )
                                    .into_bytes(),
                                    ..Default::default()
                                }),
                            );
                            let mut b = resp.encode().unwrap();
                            b.extend(dlr.encode().unwrap());
                            if s.write_all(&b).await.is_err() {
                                return;
                            }
                            None
                        }
                        Mode::Garbage => {
                            let _ = s.write_all(b"THIS IS NOT SMPP AT ALL\r\n").await;
                            None
                        }
                        Mode::Nack => Some(Pdu {
                            header: smpp::Header {
                                command_id: cmd::GENERIC_NACK,
                                status: 0x02,
                                sequence: h.sequence,
                            },
                            body: Body::Empty,
                        }),
                        Mode::Slow(ms) => {
                            let o = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                            max_out.fetch_max(o, Ordering::SeqCst);
                            let (w, out) = (wtx.clone(), outstanding.clone());
                            let resp = Pdu::response(&h, 0, Body::IdResp(format!("{:X}", submits)))
                                .encode()
                                .unwrap();
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                                out.fetch_sub(1, Ordering::SeqCst);
                                let _ = w.send(resp);
                            });
                            None
                        }
                    }
                }
                _ => None,
            };
            if let Some(r) = reply
                && s.write_all(&r.encode().unwrap()).await.is_err()
            {
                return;
            }
            if mode == Mode::StopReading && h.command_id == cmd::SUBMIT_SM {
                log.lock().unwrap().push(format!("{conn} stopped reading"));
                let flood: Vec<u8> = (0..1000u32)
                    .flat_map(|i| {
                        Pdu::new(cmd::ENQUIRE_LINK, 10_000 + i, Body::Empty)
                            .encode()
                            .unwrap()
                    })
                    .collect();
                // Ends when the ESME gives up on the connection.
                while s.write_all(&flood).await.is_ok() {}
                log.lock().unwrap().push(format!("{conn} flood ended"));
                return;
            }
        }
    }
}

struct Fx {
    b: Arc<WapBinding>,
    ctx: BindingContext,
    _rx: mpsc::Receiver<Receipt>,
}

async fn binding(port: u16, policy: AmbiguousPolicy, tweak: impl FnOnce(&mut SmscConfig)) -> Fx {
    let (ctx, rx) = binding_context(16);
    let mut s = SmscConfig {
        name: "fake".into(),
        port,
        response_timeout_ms: 400,
        enquire_link_ms: 10_000,
        reconnect_min_ms: 20,
        reconnect_max_ms: 100,
        ..Default::default()
    };
    tweak(&mut s);
    let cfg = WapConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        enabled: true,
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        ambiguous: policy,
        deliver_timeout_ms: 5_000,
        smsc: vec![s],
        ..Default::default()
    };
    let b = wap::build_wap(&cfg, &ctx).await.unwrap().unwrap();
    let b2 = b.clone();
    wait_until("bound", 10, || b2.ready().is_ok()).await;
    Fx { b, ctx, _rx: rx }
}

fn d() -> dmpushd::binding::Delivery {
    delivery(
        sms_target("+491701234567"),
        ContentType::Notification,
        &pkg0(),
    )
}

fn metric(ctx: &BindingContext, needle: &str) -> bool {
    prometheus::TextEncoder::new()
        .encode_to_string(&ctx.registry.gather())
        .unwrap()
        .contains(needle)
}

#[tokio::test]
async fn dropped_connection_with_window_in_flight_is_ambiguous_and_nothing_is_lost() {
    let smsc = FakeSmsc::start(vec![Mode::DropAfter(3), Mode::Normal]).await;
    let fx = binding(smsc.port, AmbiguousPolicy::Resend, |s| s.window = 5).await;
    // Three pushes in flight when the SMSC drops the connection.
    let (a, b, c) = tokio::join!(fx.b.deliver(d()), fx.b.deliver(d()), fx.b.deliver(d()));
    for out in [a, b, c] {
        match out {
            Outcome::Transient { reason, .. } => {
                assert!(reason.starts_with("ambiguous"), "{reason}")
            }
            other => panic!("every in-flight push must come back for retry: {other:?}"),
        }
    }
    assert!(metric(
        &fx.ctx,
        "dmpushd_smpp_ambiguous_submits_total{smsc=\"fake\"} 3"
    ));
    // The session reconnects and the retry goes through.
    let b2 = fx.b.clone();
    wait_until("re-bound", 10, || {
        b2.ready().is_ok() && smsc.conns.load(Ordering::SeqCst) >= 2
    })
    .await;
    let out = fx.b.deliver(d()).await;
    assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
    fx.ctx.shutdown.cancel();
}

#[tokio::test]
async fn missing_submit_sm_resp_follows_the_ambiguous_policy() {
    let smsc = FakeSmsc::start(vec![Mode::NoResp]).await;
    let fx = binding(smsc.port, AmbiguousPolicy::Fail, |_| {}).await;
    match fx.b.deliver(d()).await {
        Outcome::Permanent { reason } => {
            assert!(
                reason.starts_with("ambiguous") && reason.contains("no submit_sm_resp"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    fx.ctx.shutdown.cancel();

    let smsc = FakeSmsc::start(vec![Mode::NoResp]).await;
    let fx = binding(smsc.port, AmbiguousPolicy::Resend, |_| {}).await;
    match fx.b.deliver(d()).await {
        Outcome::Transient { reason, .. } => assert!(reason.starts_with("ambiguous"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(metric(
        &fx.ctx,
        "dmpushd_smpp_ambiguous_submits_total{smsc=\"fake\"} 1"
    ));
    assert_eq!(smsc.count("submit_sm"), 1, "no blind resend by the session");
    fx.ctx.shutdown.cancel();
}

#[tokio::test]
async fn garbage_from_the_smsc_resets_the_session_which_recovers() {
    let smsc = FakeSmsc::start(vec![Mode::Garbage, Mode::Normal]).await;
    let fx = binding(smsc.port, AmbiguousPolicy::Resend, |_| {}).await;
    match fx.b.deliver(d()).await {
        Outcome::Transient { reason, .. } => {
            assert!(
                reason.starts_with("ambiguous") && reason.contains("garbage"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    let b2 = fx.b.clone();
    wait_until("reconnect", 10, || {
        smsc.conns.load(Ordering::SeqCst) >= 2 && b2.ready().is_ok()
    })
    .await;
    let out = fx.b.deliver(d()).await;
    assert!(
        matches!(&out, Outcome::Accepted { refs, .. } if refs == &["fake:3e9".to_owned()]),
        "{out:?}"
    );
    assert!(metric(
        &fx.ctx,
        "dmpushd_smpp_binds_total{event=\"down\",smsc=\"fake\"} 1"
    ));
    fx.ctx.shutdown.cancel();
}

#[tokio::test]
async fn unanswered_enquire_link_means_dead_link_and_reconnect() {
    let smsc = FakeSmsc::start(vec![Mode::SilentEnquire, Mode::Normal]).await;
    let fx = binding(smsc.port, AmbiguousPolicy::Resend, |s| {
        s.enquire_link_ms = 100;
        s.response_timeout_ms = 200;
    })
    .await;
    wait_until("reconnect after a dead link", 10, || {
        smsc.conns.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(smsc.count("0 enquire_link") >= 1);
    let b2 = fx.b.clone();
    wait_until("re-bound", 10, || b2.ready().is_ok()).await;
    // The healthy link answers enquire_link and stays up.
    wait_until("keep-alive on the new link", 10, || {
        smsc.count("1 enquire_link") >= 2
    })
    .await;
    assert_eq!(smsc.conns.load(Ordering::SeqCst), 2);
    assert!(matches!(fx.b.deliver(d()).await, Outcome::Accepted { .. }));
    fx.ctx.shutdown.cancel();
    wait_until("unbind on shutdown", 10, || smsc.count("1 unbind") == 1).await;
}

#[tokio::test]
async fn generic_nack_is_permanent_with_the_status_name() {
    let smsc = FakeSmsc::start(vec![Mode::Nack]).await;
    let fx = binding(smsc.port, AmbiguousPolicy::Resend, |_| {}).await;
    match fx.b.deliver(d()).await {
        Outcome::Permanent { reason } => assert!(reason.contains("ESME_RINVCMDLEN"), "{reason}"),
        other => panic!("{other:?}"),
    }
    fx.ctx.shutdown.cancel();
}

#[tokio::test]
async fn window_bounds_outstanding_submits() {
    let smsc = FakeSmsc::start(vec![Mode::Slow(50)]).await;
    let fx = binding(smsc.port, AmbiguousPolicy::Resend, |s| {
        s.window = 3;
        s.response_timeout_ms = 5_000;
    })
    .await;
    let futs: Vec<_> = (0..12).map(|_| fx.b.deliver(d())).collect();
    let outs = futures_util::future::join_all(futs).await;
    assert!(
        outs.iter().all(|o| matches!(o, Outcome::Accepted { .. })),
        "{outs:?}"
    );
    assert_eq!(
        smsc.max_outstanding.load(Ordering::SeqCst),
        3,
        "window of 3 is used and respected"
    );
    fx.ctx.shutdown.cancel();
}

#[tokio::test]
async fn smsc_down_gives_transient_not_bound_and_ready_fails() {
    // A port with nothing listening.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let (ctx, _rx) = binding_context(1);
    let cfg = WapConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        enabled: true,
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        smsc: vec![SmscConfig {
            name: "down".into(),
            port,
            ..Default::default()
        }],
        ..Default::default()
    };
    let b = wap::build_wap(&cfg, &ctx).await.unwrap().unwrap();
    assert!(b.ready().unwrap_err().to_string().contains("no SMSC bound"));
    match b.deliver(d()).await {
        Outcome::Transient { reason, .. } => assert!(reason.contains("not bound"), "{reason}"),
        other => panic!("{other:?}"),
    }
    ctx.shutdown.cancel();
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = ck.cert.pem();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), cert_pem)
}

#[tokio::test]
async fn tls_session_binds_submits_and_verifies_the_certificate() {
    let (acceptor, ca_pem) = tls_acceptor();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let smsc = FakeSmsc::start_with(vec![Mode::Normal], Some(acceptor.clone())).await;
    let ca_path = ca.to_str().unwrap().to_owned();
    let fx = binding(smsc.port, AmbiguousPolicy::Resend, |s| {
        s.tls = true;
        s.tls_ca_file = Some(ca_path);
        s.tls_server_name = Some("localhost".into());
    })
    .await;
    let out = fx.b.deliver(d()).await;
    assert!(
        matches!(&out, Outcome::Accepted { refs, .. } if refs == &["fake:1".to_owned()]),
        "{out:?}"
    );
    fx.ctx.shutdown.cancel();
    wait_until("unbind over TLS", 10, || smsc.count("0 unbind") == 1).await;

    // The Web PKI roots do not trust the self-signed SMSC: never bound, pushes stay transient.
    let smsc = FakeSmsc::start_with(vec![Mode::Normal], Some(acceptor)).await;
    let (ctx, _rx) = binding_context(1);
    let cfg = WapConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        enabled: true,
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        smsc: vec![SmscConfig {
            name: "untrusted".into(),
            port: smsc.port,
            tls: true,
            tls_server_name: Some("localhost".into()),
            reconnect_min_ms: 20,
            reconnect_max_ms: 50,
            ..Default::default()
        }],
        ..Default::default()
    };
    let b = wap::build_wap(&cfg, &ctx).await.unwrap().unwrap();
    wait_until("two refused handshakes", 10, || {
        smsc.count("tls error") >= 2
    })
    .await;
    assert!(b.ready().is_err());
    assert_eq!(
        smsc.count("bind"),
        0,
        "no credentials over an unverified link"
    );
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn decimal_receipt_ids_correlate_with_hex_submit_ids_and_are_acked() {
    receipt_acked_after_commit(true).await;
}

#[tokio::test]
async fn a_receipt_that_could_not_be_recorded_is_answered_with_a_temporary_error() {
    // ESME_RX_T_APPN (0x64): the SMSC keeps the receipt and delivers it again later.
    receipt_acked_after_commit(false).await;
}

async fn receipt_acked_after_commit(committed: bool) {
    let smsc = FakeSmsc::start(vec![Mode::DecimalReceipt]).await;
    let (ctx, mut rx) = binding_context(4);
    let cfg = WapConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        enabled: true,
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        smsc: vec![SmscConfig {
            name: "fake".into(),
            port: smsc.port,
            receipt_id_decimal: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let b = wap::build_wap(&cfg, &ctx).await.unwrap().unwrap();
    let b2 = b.clone();
    wait_until("bound", 10, || b2.ready().is_ok()).await;
    let out = b.deliver(d()).await;
    // 4001 = 0xFA1, sent as "00000FA1": canonical "fake:fa1".
    assert_eq!(
        out,
        Outcome::Accepted {
            detail: "1 SMS via smsc fake".into(),
            refs: vec![NextHopRef::new("fake", "fa1")]
        }
    );
    let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("receipt within 5 s")
        .unwrap();
    assert_eq!(r.reference, "fake:fa1");
    assert!(!r.delivered, "UNDELIV is a failure");
    // The test plays the dispatcher: until it says the receipt is committed, the SMSC gets no
    // deliver_sm_resp (so a crash now would make the SMSC deliver it again).
    let ack = r
        .ack
        .clone()
        .expect("an SMPP receipt asks to be acknowledged");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), async {
            while smsc.count("0 resp") == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_err(),
        "deliver_sm_resp sent before the receipt was committed"
    );
    ack.done(committed);
    let expected = if committed {
        "0 resp status=0x0 "
    } else {
        "0 resp status=0x64 "
    };
    wait_until("deliver_sm_resp at the SMSC", 5, || {
        smsc.count(expected) >= 1
    })
    .await;
    assert!(metric(
        &ctx,
        "dmpushd_smpp_receipts_total{smsc=\"fake\",state=\"UNDELIV\"} 1"
    ));
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn throughput_limit_spaces_submits() {
    let smsc = FakeSmsc::start(vec![Mode::Normal]).await;
    // 10/s: a burst of 10 tokens, then one every 100 ms.
    let fx = binding(smsc.port, AmbiguousPolicy::Resend, |s| {
        s.throughput = 10.0;
        s.window = 50;
        s.response_timeout_ms = 5_000;
    })
    .await;
    let t0 = std::time::Instant::now();
    let futs: Vec<_> = (0..15).map(|_| fx.b.deliver(d())).collect();
    let outs = futures_util::future::join_all(futs).await;
    assert!(
        outs.iter().all(|o| matches!(o, Outcome::Accepted { .. })),
        "{outs:?}"
    );
    // Lower bound only (a slow machine can only make it later): 5 submits beyond the burst need
    // ≥ 5 × 100 ms of refill; allow 20 % for timer granularity.
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "15 submits at 10/s took only {elapsed:?}"
    );
    assert_eq!(smsc.count("submit_sm"), 15);
    fx.ctx.shutdown.cancel();
}

#[tokio::test]
async fn smsc_that_stops_reading_is_declared_dead_and_the_session_rebinds() {
    // Issue 9 acceptance 4: the ESME's answers to the SMSC's enquire_links can no longer be
    // written. Before the sans-IO ESME those writes had no deadline and the session hung for
    // good while /readyz said bound.
    let smsc = FakeSmsc::start(vec![Mode::StopReading, Mode::Normal]).await;
    let (enquire_ms, resp_ms) = (2_000, 500);
    let fx = binding(smsc.port, AmbiguousPolicy::Resend, |s| {
        s.enquire_link_ms = enquire_ms;
        s.response_timeout_ms = resp_ms;
    })
    .await;
    let out = fx.b.deliver(d()).await;
    assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
    // The SMSC stops reading right after that answer.
    let t0 = std::time::Instant::now();
    let b2 = fx.b.clone();
    wait_until("rebound after the SMSC stopped reading", 10, || {
        smsc.conns.load(Ordering::SeqCst) >= 2 && b2.ready().is_ok()
    })
    .await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed <= Duration::from_millis(enquire_ms + resp_ms),
        "rebound only after {elapsed:?}"
    );
    assert!(smsc.count("0 stopped reading") == 1);
    assert!(metric(
        &fx.ctx,
        "dmpushd_smpp_binds_total{event=\"down\",smsc=\"fake\"} 1"
    ));
    wait_until("the stalled connection is closed", 10, || {
        smsc.count("0 flood ended") == 1
    })
    .await;
    let out = fx.b.deliver(d()).await;
    assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
    fx.ctx.shutdown.cancel();
}
