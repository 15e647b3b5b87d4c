//! Acceptance 5 of issue 5: MESSAGE over TLS to a local UAS (tokio-rustls server with an rcgen
//! test CA). Trusted via `ca_file` → Delivered; an unknown CA → Permanent (certificate rejected).

use std::{net::SocketAddr, sync::Arc};

use crate::support::sip::*;
use dmpushd::binding::{ContentType, Outcome, sip::SipConfig};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A test CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A TLS UAS answering every MESSAGE with 200 OK; returns its address and the requests seen.
async fn tls_uas(pki: &Pki) -> (SocketAddr, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = s2.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = tls.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        let (_, h, _) = split_message(&buf[..end + 4]);
                        let cl: usize = header(&h, "Content-Length").unwrap().parse().unwrap();
                        if buf.len() < end + 4 + cl {
                            break;
                        }
                        let req: Vec<u8> = buf.drain(..end + 4 + cl).collect();
                        let (_, h, _) = split_message(&req);
                        let get = |n: &str| header(&h, n).unwrap_or_default().to_string();
                        let resp = format!(
                            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=tls\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
                            get("Via"),
                            get("From"),
                            get("To"),
                            get("Call-ID"),
                            get("CSeq")
                        );
                        seen.lock().unwrap().push(req);
                        let _ = tls.write_all(resp.as_bytes()).await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn tls_with_configured_ca_delivers() {
    let pki = pki();
    let (addr, seen) = tls_uas(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let (b, reg) = binding(&SipConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        ca_file: Some(ca),
        timer_f_ms: Some(5000),
        ..Default::default()
    })
    .await;
    // sips: implies TLS (RFC 3261 §19.1.2); the certificate is checked for "localhost".
    let uri = format!("sips:device@localhost:{}", addr.port());
    let o = b
        .deliver(delivery(&uri, ContentType::Notification, &PKG0))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    // A copy: the UAS task locks the log during the next delivery.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (line, h, body) = split_message(&seen[0]);
    assert_eq!(line, format!("MESSAGE {uri} SIP/2.0"));
    assert!(header(&h, "Via").unwrap().starts_with("SIP/2.0/TLS "));
    assert_eq!(body, PKG0, "binary body intact over TLS");
    assert_eq!(
        metric(&reg, "dmpushd_sip_requests_total", &[("transport", "tls")]),
        1.0
    );

    // transport=tls on a sip: URI works the same way.
    let (b2, _) = binding(&SipConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        ca_file: Some(dir.path().join("ca.pem")),
        transport: "tls".into(),
        ..Default::default()
    })
    .await;
    let o = b2
        .deliver(delivery(
            &format!("sip:device@localhost:{}", addr.port()),
            ContentType::DmXml,
            DM_XML.as_bytes(),
        ))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
}

#[tokio::test]
async fn tls_with_unknown_ca_is_permanent() {
    let pki = pki();
    let (addr, seen) = tls_uas(&pki).await;
    let (b, _) = binding(&SipConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        timer_f_ms: Some(5000),
        ..Default::default()
    })
    .await;
    let uri = format!("sips:device@localhost:{}", addr.port());
    let o = b.deliver(delivery(&uri, ContentType::DmXml, b"<x/>")).await;
    assert!(
        matches!(&o, Outcome::Permanent { reason } if reason.contains("TLS handshake")),
        "{o:?}"
    );
    assert!(seen.lock().unwrap().is_empty(), "nothing sent in clear");
}
