//! Transports for the SIP binding: one UDP socket per delivery, pooled TCP/TLS connections with
//! a reader task that routes responses to waiting transactions by Via branch (RFC 3261 §17.1.3).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::BytesMut;
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use crate::codec::sip::{
    Response, Transport,
    message::{frame_stream, parse_response},
};

/// Why a hop could not be used. `permanent` errors (certificate rejected) must not be retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{transport} to {addr}: {reason}")]
pub struct LinkError {
    pub transport: &'static str,
    pub addr: SocketAddr,
    pub reason: String,
    pub permanent: bool,
}

type Waiters = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Response>>>>;

/// One pooled stream connection (TCP or TLS).
pub struct StreamConn {
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    waiters: Waiters,
    closed: CancellationToken,
    pub local: SocketAddr,
}

impl StreamConn {
    /// Registers interest in responses for `branch`. Dropping the receiver is enough to
    /// unregister in effect; [`Self::unregister`] frees the slot early.
    pub fn register(&self, branch: &str) -> mpsc::UnboundedReceiver<Response> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(branch.to_string(), tx);
        }
        rx
    }

    pub fn unregister(&self, branch: &str) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(branch);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer.lock().await;
        let r = async {
            w.write_all(bytes).await?;
            w.flush().await
        }
        .await;
        if r.is_err() {
            self.closed.cancel();
        }
        r
    }
}

/// Pool key: transport, address and (for TLS) the name the certificate must carry.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Key {
    transport: Transport,
    addr: SocketAddr,
    name: String,
}

/// Connection pool shared by all deliveries (connection reuse, RFC 3261 §18.1.1 / RFC 5923 spirit).
pub struct Pool {
    conns: Mutex<HashMap<Key, Arc<StreamConn>>>,
    tls: Arc<rustls::ClientConfig>,
    shutdown: CancellationToken,
    /// Counts malformed or unmatched messages seen by reader tasks.
    pub on_stray: Arc<dyn Fn() + Send + Sync>,
}

impl Pool {
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        shutdown: CancellationToken,
        on_stray: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            conns: Mutex::new(HashMap::new()),
            tls,
            shutdown,
            on_stray,
        }
    }

    /// A live connection to `addr`, reusing a pooled one when possible.
    pub async fn get(
        &self,
        transport: Transport,
        addr: SocketAddr,
        name: &str,
        connect_timeout: Duration,
    ) -> Result<Arc<StreamConn>, LinkError> {
        let key = Key {
            transport,
            addr,
            name: name.to_string(),
        };
        if let Ok(map) = self.conns.lock()
            && let Some(c) = map.get(&key)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let conn = Arc::new(self.connect(&key, connect_timeout).await?);
        if let Ok(mut map) = self.conns.lock() {
            // Another delivery may have connected meanwhile: share its connection, close ours.
            if let Some(existing) = map.get(&key)
                && !existing.is_closed()
            {
                conn.closed.cancel();
                return Ok(existing.clone());
            }
            map.insert(key, conn.clone());
        }
        Ok(conn)
    }

    /// Forgets a connection that failed (the next delivery reconnects).
    pub fn evict(&self, conn: &Arc<StreamConn>) {
        conn.closed.cancel();
        if let Ok(mut map) = self.conns.lock() {
            map.retain(|_, c| !Arc::ptr_eq(c, conn));
        }
    }

    async fn connect(&self, key: &Key, timeout: Duration) -> Result<StreamConn, LinkError> {
        let err = |reason: String, permanent: bool| LinkError {
            transport: key.transport.as_str(),
            addr: key.addr,
            reason,
            permanent,
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(key.addr))
            .await
            .map_err(|_| err("connect timed out".into(), false))?
            .map_err(|e| err(format!("connect: {e}"), false))?;
        let _ = tcp.set_nodelay(true);
        let local = tcp
            .local_addr()
            .map_err(|e| err(format!("local_addr: {e}"), false))?;
        let (reader, writer): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
        ) = match key.transport {
            Transport::Tls => {
                let name = ServerName::try_from(key.name.clone())
                    .map_err(|_| err(format!("invalid TLS server name {:?}", key.name), true))?;
                let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
                let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| err("TLS handshake timed out".into(), false))?
                    .map_err(|e| {
                        // A certificate the configured roots reject will be rejected again.
                        let cert = e
                            .get_ref()
                            .and_then(|i| i.downcast_ref::<rustls::Error>())
                            .is_some_and(|r| {
                                matches!(
                                    r,
                                    rustls::Error::InvalidCertificate(_)
                                        | rustls::Error::NoCertificatesPresented
                                )
                            });
                        err(format!("TLS handshake: {e}"), cert)
                    })?;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
            _ => {
                let (r, w) = tcp.into_split();
                (Box::new(r), Box::new(w))
            }
        };
        let waiters: Waiters = Arc::default();
        let closed = self.shutdown.child_token();
        tokio::spawn(read_loop(
            reader,
            waiters.clone(),
            closed.clone(),
            self.on_stray.clone(),
        ));
        Ok(StreamConn {
            writer: tokio::sync::Mutex::new(writer),
            waiters,
            closed,
            local,
        })
    }
}

/// Reads framed responses until EOF, error or shutdown; then marks the connection closed and
/// drops every waiter (their transactions see a connection error).
async fn read_loop(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    waiters: Waiters,
    closed: CancellationToken,
    on_stray: Arc<dyn Fn() + Send + Sync>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    'outer: loop {
        let n = tokio::select! {
            _ = closed.cancelled() => break,
            r = reader.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        let _ = n;
        loop {
            match frame_stream(&buf) {
                Ok(Some(len)) => {
                    let msg = buf.split_to(len);
                    match parse_response(&msg) {
                        Ok(resp) => {
                            let tx = resp
                                .top_via_branch()
                                .and_then(|b| waiters.lock().ok().and_then(|w| w.get(b).cloned()));
                            match tx {
                                Some(tx) => {
                                    let _ = tx.send(resp);
                                }
                                None => on_stray(),
                            }
                        }
                        // A malformed message on a framed stream is skipped (§16.3 spirit:
                        // discard what cannot be processed); framing itself is intact.
                        Err(_) => on_stray(),
                    }
                }
                Ok(None) => break,
                // Framing lost: the stream cannot be resynchronised (§18.3).
                Err(_) => {
                    on_stray();
                    break 'outer;
                }
            }
        }
    }
    closed.cancel();
    if let Ok(mut w) = waiters.lock() {
        w.clear();
    }
}

/// A UDP socket connected to the next hop, for one delivery.
pub async fn udp_socket(addr: SocketAddr) -> Result<UdpSocket, LinkError> {
    let err = |reason: String| LinkError {
        transport: "udp",
        addr,
        reason,
        permanent: false,
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(addr)
    } else {
        "[::]:0".parse().unwrap_or(addr)
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| err(format!("bind: {e}")))?;
    sock.connect(addr)
        .await
        .map_err(|e| err(format!("connect: {e}")))?;
    Ok(sock)
}
