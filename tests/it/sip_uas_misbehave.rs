//! Acceptance 4 of issue 5: in-process user agent servers (sockets in the test) that stay silent,
//! refuse, redirect, challenge twice or send garbage. Timers are short via config; the exact
//! RFC 3261 schedule is proven with a simulated clock in `codec::sip::transaction`.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::support::sip::*;
use dmpushd::binding::{
    ContentType, Outcome,
    sip::{SipConfig, SipCredential},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
};

fn cfg() -> SipConfig {
    SipConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        t1_ms: 50,
        t2_ms: 200,
        timer_f_ms: Some(1000),
        ..Default::default()
    }
}

/// A response to `req` with `status`, echoing Via/From/To/Call-ID/CSeq (RFC 3261 §8.2.6.2).
fn answer(req: &[u8], status: &str, extra: &str) -> Vec<u8> {
    let (_, h, _) = split_message(req);
    let get = |n: &str| header(&h, n).unwrap_or_default().to_string();
    format!(
        "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=uas\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        get("Via"),
        get("From"),
        get("To"),
        get("Call-ID"),
        get("CSeq")
    )
    .into_bytes()
}

type Log = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;
type Handler = Box<dyn Fn(usize, &[u8]) -> Vec<Vec<u8>> + Send>;

/// A UDP UAS: for the n-th datagram received, sends what `handler` returns.
async fn udp_uas(handler: Handler) -> (SocketAddr, Log) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 70000];
        let mut n = 0;
        while let Ok((len, from)) = sock.recv_from(&mut buf).await {
            let req = buf[..len].to_vec();
            l.lock().unwrap().push((Instant::now(), req.clone()));
            for r in handler(n, &req) {
                let _ = sock.send_to(&r, from).await;
            }
            n += 1;
        }
    });
    (addr, log)
}

fn uri(addr: SocketAddr) -> String {
    format!("sip:device@{addr}")
}

#[tokio::test]
async fn silence_over_udp_retransmits_then_transient() {
    let (addr, log) = udp_uas(Box::new(|_, _| vec![])).await;
    let (b, reg) = binding(&cfg()).await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, DM_XML.as_bytes()))
        .await;
    assert!(
        matches!(&o, Outcome::Transient { reason, retry_after: None } if reason.contains("Timer F")),
        "{o:?}"
    );
    let log = log.lock().unwrap();
    // Timer E with T1=50, T2=200, F=1000: sends at 0, 50, 150, 350, 550, 750, 950 ms.
    assert_eq!(log.len(), 7, "original + 6 retransmissions");
    assert!(
        log.iter().all(|(_, m)| *m == log[0].1),
        "retransmissions are identical"
    );
    // Intervals grow: the first gap is about T1, later ones about T2 (lower bounds only: a late
    // wake-up can stretch a gap but never shorten it below its timer).
    let gaps: Vec<Duration> = log.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps[1] >= Duration::from_millis(90), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(180), "{gaps:?}");
    assert_eq!(metric(&reg, "dmpushd_sip_retransmissions_total", &[]), 6.0);
    assert_eq!(
        metric(&reg, "dmpushd_sip_requests_total", &[("class", "timeout")]),
        1.0
    );
}

#[tokio::test]
async fn service_unavailable_honours_retry_after() {
    let (addr, _) = udp_uas(Box::new(|_, r| {
        vec![answer(
            r,
            "503 Service Unavailable",
            "Retry-After: 17 (maintenance)\r\n",
        )]
    }))
    .await;
    let (b, _) = binding(&cfg()).await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert_eq!(
        o,
        Outcome::Transient {
            reason: "SIP 503 Service Unavailable (over udp)".into(),
            retry_after: Some(Duration::from_secs(17))
        }
    );
}

#[tokio::test]
async fn not_found_is_permanent_and_accepted_202() {
    let (addr, _) = udp_uas(Box::new(|_, r| vec![answer(r, "404 Not Found", "")])).await;
    let (b, _) = binding(&cfg()).await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert_eq!(
        o,
        Outcome::Permanent {
            reason: "SIP 404 Not Found (over udp)".into()
        }
    );
    let (addr, _) = udp_uas(Box::new(|_, r| vec![answer(r, "202 Accepted", "")])).await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(
        matches!(&o, Outcome::Accepted { refs, .. } if refs.is_empty()),
        "{o:?}"
    );
}

#[tokio::test]
async fn redirect_is_followed_once_when_configured() {
    let (target, target_log) = udp_uas(Box::new(|_, r| vec![answer(r, "200 OK", "")])).await;
    let contact = format!("Contact: <sip:moved@{target}>\r\n");
    let (addr, first_log) = udp_uas(Box::new(move |_, r| {
        vec![answer(r, "302 Moved Temporarily", &contact)]
    }))
    .await;
    let (plain, _) = binding(&cfg()).await;
    let o = plain
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(
        matches!(&o, Outcome::Permanent { reason } if reason.starts_with("SIP 302")),
        "{o:?}"
    );
    let (follow, _) = binding(&SipConfig {
        follow_redirects: true,
        ..cfg()
    })
    .await;
    let o = follow
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    // Copies: the UAS tasks lock these logs while the next deliveries run.
    let first = first_log.lock().unwrap().clone();
    let second = target_log.lock().unwrap().clone();
    assert_eq!(second.len(), 1);
    let (_, h1, _) = split_message(&first.last().unwrap().1);
    let (line, h2, body) = split_message(&second[0].1);
    assert_eq!(line, format!("MESSAGE sip:moved@{target} SIP/2.0"));
    assert_eq!(header(&h1, "Call-ID"), header(&h2, "Call-ID"));
    assert_eq!(header(&h2, "CSeq"), Some("2 MESSAGE"));
    assert_eq!(body, b"<x/>");

    // A redirect loop is not followed twice.
    let (addr2, log2) = udp_uas(Box::new(move |_, r| {
        let c = format!("Contact: <sip:again@{addr}>\r\n");
        vec![answer(r, "301 Moved Permanently", &c)]
    }))
    .await;
    let o = follow
        .deliver(delivery(&uri(addr2), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(
        matches!(&o, Outcome::Permanent { reason } if reason.starts_with("SIP 302")),
        "{o:?}"
    );
    assert_eq!(log2.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn garbage_stray_and_provisional_are_ignored() {
    let (addr, _) = udp_uas(Box::new(|_, r| {
        let ok = answer(r, "200 OK", "");
        let mut wrong_branch = String::from_utf8(ok.clone()).unwrap();
        wrong_branch = wrong_branch.replacen("branch=z9hG4bK", "branch=z9hG4bKother", 1);
        let mut truncated = ok.clone();
        truncated.truncate(30);
        vec![
            b"\x00\x01garbage\r\n\r\n".to_vec(),
            b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            truncated,
            wrong_branch.into_bytes(),
            answer(r, "100 Trying", ""),
            answer(r, "180 Ringing", ""),
            ok,
        ]
    }))
    .await;
    let (b, reg) = binding(&cfg()).await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::Notification, &PKG0))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    assert!(metric(&reg, "dmpushd_sip_stray_messages_total", &[]) >= 4.0);
}

#[tokio::test]
async fn second_challenge_is_permanent() {
    let (addr, log) = udp_uas(Box::new(|_, r| {
        vec![answer(
            r,
            "407 Proxy Authentication Required",
            "Proxy-Authenticate: Digest realm=\"dm.test\", nonce=\"n1\", qop=\"auth\"\r\n",
        )]
    }))
    .await;
    let (b, _) = binding(&SipConfig {
        credentials: vec![SipCredential {
            realm: "dm.test".into(),
            username: "u".into(),
            password: "p".into(),
            targets: vec!["127.0.0.0/8".into()],
        }],
        ..cfg()
    })
    .await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(
        matches!(&o, Outcome::Permanent { reason } if reason.contains("second challenge")),
        "{o:?}"
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let (_, h, _) = split_message(&seen[1].1);
    assert!(header(&h, "Proxy-Authorization").is_some_and(|v| v.contains("realm=\"dm.test\"")));

    // No credentials for the realm: permanent at once, no retry.
    let (b, _) = binding(&cfg()).await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(
        matches!(&o, Outcome::Permanent { reason } if reason.contains("no credentials for realm")),
        "{o:?}"
    );
}

#[tokio::test]
async fn tcp_silence_times_out_without_retransmissions() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            g.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let (b, reg) = binding(&SipConfig {
        transport: "tcp".into(),
        ..cfg()
    })
    .await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(matches!(o, Outcome::Transient { .. }), "{o:?}");
    let data = got.lock().unwrap().clone();
    assert_eq!(
        data.windows(8).filter(|w| *w == b"MESSAGE ").count(),
        1,
        "no retransmission over TCP"
    );
    assert_eq!(metric(&reg, "dmpushd_sip_retransmissions_total", &[]), 0.0);
}

#[tokio::test]
async fn tcp_garbage_and_refused_connections_fail_cleanly() {
    // A peer that answers with a message that has no Content-Length: framing is lost (§18.3),
    // the connection is dropped and the attempt is transient.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\nSIP/2.0 200 OK\r\n")
            .await;
        // Keep the socket open: the client must not wait for Timer F.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let (b, reg) = binding(&SipConfig {
        transport: "tcp".into(),
        timer_f_ms: Some(3000),
        ..cfg()
    })
    .await;
    let started = Instant::now();
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(
        matches!(&o, Outcome::Transient { reason, .. } if reason.contains("connection closed")),
        "{o:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "did not wait for Timer F"
    );
    assert!(metric(&reg, "dmpushd_sip_stray_messages_total", &[]) >= 1.0);

    // Nobody listening.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let o = b
        .deliver(delivery(&uri(dead_addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(
        matches!(&o, Outcome::Transient { reason, .. } if reason.contains("connect")),
        "{o:?}"
    );
}

#[tokio::test]
async fn tcp_connection_is_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            *a.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // Requests here are small and carry Content-Length; answer each full one.
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        let (_, h, _) = split_message(&buf[..end + 4]);
                        let cl: usize = header(&h, "Content-Length").unwrap().parse().unwrap();
                        if buf.len() < end + 4 + cl {
                            break;
                        }
                        let req: Vec<u8> = buf.drain(..end + 4 + cl).collect();
                        let _ = s.write_all(&answer(&req, "200 OK", "")).await;
                    }
                }
            });
        }
    });
    let (b, _) = binding(&SipConfig {
        transport: "tcp".into(),
        ..cfg()
    })
    .await;
    let b = Arc::new(b);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            b.deliver(delivery(
                &uri(addr),
                ContentType::DmXml,
                format!("<x>{i}</x>").as_bytes(),
            ))
            .await
        }));
    }
    for t in tasks {
        let o = t.await.unwrap();
        assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    }
    // Concurrent first deliveries may each open one; afterwards they share.
    let first = *accepted.lock().unwrap();
    for _ in 0..5 {
        let o = b
            .deliver(delivery(&uri(addr), ContentType::DmXml, b"<y/>"))
            .await;
        assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    }
    assert_eq!(
        *accepted.lock().unwrap(),
        first,
        "sequential deliveries reuse"
    );
    assert!(first <= 10);
}

/// Operator credentials go only where the operator said (DESIGN §10.3, issue 12 defect 2): a UAS
/// that is not in the credential's `targets` and challenges with the operator's realm gets no
/// `Authorization` (the attempt fails permanently after one MESSAGE); the configured target does.
#[tokio::test]
async fn credentials_answer_only_their_targets() {
    let challenge_then_ok: fn() -> Handler = || {
        Box::new(|n, r| {
            if n == 0 {
                vec![answer(
                    r,
                    "401 Unauthorized",
                    "WWW-Authenticate: Digest realm=\"operator.example\", nonce=\"n1\", qop=\"auth\"\r\n",
                )]
            } else {
                vec![answer(r, "200 OK", "")]
            }
        })
    };
    let cred = |targets: Vec<String>| SipCredential {
        realm: "operator.example".into(),
        username: "operator".into(),
        password: "operator-secret".into(),
        targets,
    };

    // Not a target (a name elsewhere and a CIDR that does not hold the UAS).
    let (addr, log) = udp_uas(challenge_then_ok()).await;
    let (b, _) = binding(&SipConfig {
        credentials: vec![cred(vec![
            "registrar.operator.example".into(),
            "10.0.0.0/8".into(),
        ])],
        ..cfg()
    })
    .await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(
        matches!(&o, Outcome::Permanent { reason } if reason.contains("no credentials for this target")),
        "{o:?}"
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "nothing is sent after the challenge");
    for (_, m) in &seen {
        let (_, h, _) = split_message(m);
        assert!(header(&h, "Authorization").is_none());
        assert!(!String::from_utf8_lossy(m).contains("operator\""));
    }

    // The configured target is answered.
    let (addr, log) = udp_uas(challenge_then_ok()).await;
    let (b, _) = binding(&SipConfig {
        credentials: vec![cred(vec!["127.0.0.1/32".into()])],
        ..cfg()
    })
    .await;
    let o = b
        .deliver(delivery(&uri(addr), ContentType::DmXml, b"<x/>"))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let (_, h, _) = split_message(&seen[1].1);
    assert!(
        header(&h, "Authorization").is_some_and(|v| v.contains("username=\"operator\"")),
        "{h:?}"
    );

    // The configured outbound proxy is the operator's: its challenge is answered without
    // `targets`, and the device URI behind it is not checked against allow_targets.
    let (proxy, log) = udp_uas(challenge_then_ok()).await;
    let (b, _) = binding(&SipConfig {
        proxy: Some(format!("sip:{proxy}")),
        credentials: vec![cred(vec![])],
        allow_targets: vec![],
        ..cfg()
    })
    .await;
    let o = b
        .deliver(delivery(
            "sip:device@10.1.2.3:5060",
            ContentType::DmXml,
            b"<x/>",
        ))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let (_, h, _) = split_message(&seen[1].1);
    assert!(header(&h, "Authorization").is_some(), "{h:?}");

    // A bad target in the config is refused at startup.
    assert!(
        dmpushd::binding::sip::build(
            &SipConfig {
                credentials: vec![cred(vec!["not a host/".into()])],
                ..cfg()
            },
            &ctx()
        )
        .await
        .is_err()
    );
}
