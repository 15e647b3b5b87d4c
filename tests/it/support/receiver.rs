//! A local HTTPS receiver standing in for a device's push endpoint: a test CA (rcgen), a TLS
//! server (tokio-rustls + hyper), scripted responses, and a record of every request.
//! `benches/e2e.rs` includes this file with `#[path]`: it uses nothing else from `support`.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct Received {
    pub at: std::time::SystemTime,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted answer: status and extra headers.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
        }
    }
    pub fn with(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    script: VecDeque<Answer>,
    in_flight: usize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    /// The CA in PEM, for configurations that take it inline rather than as `ca_file`.
    #[allow(dead_code)] // every current user passes `ca_file`
    pub ca_pem: String,
    pub ca_file: PathBuf,
    shared: Arc<Mutex<Shared>>,
    /// `true` while paused: requests wait before they are answered (or recorded).
    gate: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// A CA and a leaf for 127.0.0.1/localhost signed by it.
pub fn test_pki() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dmpushd test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    (
        ca_cert.pem(),
        leaf.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
}

impl Receiver {
    /// Starts on a random loopback port; `delay` is added before each answer.
    pub async fn start(delay: Duration) -> Self {
        dmpushd::tls::install_provider();
        let (ca_pem, leaf, key) = test_pki();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf], key)
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let sh = shared.clone();
        let (gate, gate_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let sh = sh.clone();
                let gate_rx = gate_rx.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let sh = sh.clone();
                        let mut gate_rx = gate_rx.clone();
                        async move {
                            sh.lock().unwrap().in_flight += 1;
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            // Paused: hold the request (the sender's attempt stays in flight).
                            let _ = gate_rx.wait_for(|paused| !*paused).await;
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let mut g = sh.lock().unwrap();
                            g.in_flight -= 1;
                            g.received.push(Received {
                                at: std::time::SystemTime::now(),
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect(),
                                body,
                            });
                            let answer = g.script.pop_front().unwrap_or(Answer::status(204));
                            drop(g);
                            let mut resp = Response::builder().status(answer.status);
                            for (k, v) in &answer.headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                resp.body(Full::new(Bytes::new())).unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem,
            ca_file,
            shared,
            gate,
            _dir: dir,
        }
    }

    /// Holds every request, arriving or waiting, until [`Receiver::resume`]: the senders'
    /// attempts stay in flight for as long as a test needs.
    pub fn pause(&self) {
        self.gate.send_replace(true);
    }

    pub fn resume(&self) {
        self.gate.send_replace(false);
    }

    /// Requests received and not answered yet (held by a pause or the delay).
    pub fn in_flight(&self) -> usize {
        self.shared.lock().unwrap().in_flight
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// The next answers, in order (then 204).
    pub fn script(&self, answers: Vec<Answer>) {
        self.shared.lock().unwrap().script.extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    pub fn count(&self) -> usize {
        self.shared.lock().unwrap().received.len()
    }

    /// Waits (polling, bounded) until `n` requests were received.
    pub async fn wait_count(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.received();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} of {n} requests in {timeout:?}",
                r.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
