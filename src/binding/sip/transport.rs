//! Transports for the SIP binding: one UDP socket per delivery, pooled TCP/TLS connections with
//! a reader task that routes responses to waiting transactions by Via branch (RFC 3261 §17.1.3).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
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

/// Bounds of the stream connection pool (`[bindings.sip]`, DESIGN §10.3: idle connections are
/// closed, pools are capped, every peer write has a deadline).
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    /// Connections open at most; beyond it the least recently used idle one is closed, and
    /// with none idle the delivery fails (transient).
    pub max_connections: usize,
    /// A connection without a transaction for this long is closed.
    pub idle: Duration,
    /// One write (a request) must complete within this, or the connection is closed.
    pub write_timeout: Duration,
}

/// One pooled stream connection (TCP or TLS).
pub struct StreamConn {
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    waiters: Waiters,
    closed: CancellationToken,
    last_used: Arc<Mutex<Instant>>,
    write_timeout: Duration,
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
        self.touch();
        rx
    }

    pub fn unregister(&self, branch: &str) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(branch);
        }
        self.touch();
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    /// No transaction waits on it.
    fn is_idle(&self) -> bool {
        self.waiters.lock().map(|w| w.is_empty()).unwrap_or(false)
    }

    fn last_used(&self) -> Instant {
        self.last_used
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| Instant::now())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        // The lock wait counts too: a write stuck behind another one is as stuck.
        let r = tokio::time::timeout(self.write_timeout, async {
            let mut w = self.writer.lock().await;
            w.write_all(bytes).await?;
            w.flush().await
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            ))
        });
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
    limits: PoolLimits,
    /// Counts malformed or unmatched messages seen by reader tasks.
    pub on_stray: Arc<dyn Fn() + Send + Sync>,
}

impl Pool {
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        shutdown: CancellationToken,
        on_stray: Arc<dyn Fn() + Send + Sync>,
        limits: PoolLimits,
    ) -> Self {
        Self {
            conns: Mutex::new(HashMap::new()),
            tls,
            shutdown,
            limits,
            on_stray,
        }
    }

    /// Open connections in the pool (closed ones are dropped from it as new ones come).
    pub fn len(&self) -> usize {
        self.conns
            .lock()
            .map(|m| m.values().filter(|c| !c.is_closed()).count())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
            map.retain(|_, c| !c.is_closed());
            if map.len() >= self.limits.max_connections.max(1) {
                // Full: close the least recently used idle connection, if there is one.
                let lru = map
                    .iter()
                    .filter(|(_, c)| c.is_idle())
                    .min_by_key(|(_, c)| c.last_used())
                    .map(|(k, _)| k.clone());
                match lru.and_then(|k| map.remove(&k)) {
                    Some(old) => old.closed.cancel(),
                    None => {
                        conn.closed.cancel();
                        return Err(LinkError {
                            transport: key.transport.as_str(),
                            addr: key.addr,
                            reason: "connection pool full (bindings.sip.pool_max_connections)"
                                .into(),
                            permanent: false,
                        });
                    }
                }
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
        let last_used = Arc::new(Mutex::new(Instant::now()));
        tokio::spawn(read_loop(
            reader,
            Idle {
                waiters: waiters.clone(),
                last_used: last_used.clone(),
                after: self.limits.idle,
            },
            closed.clone(),
            self.on_stray.clone(),
        ));
        Ok(StreamConn {
            writer: tokio::sync::Mutex::new(writer),
            waiters,
            closed,
            last_used,
            write_timeout: self.limits.write_timeout,
            local,
        })
    }
}

/// What the reader needs to close its connection when idle.
struct Idle {
    waiters: Waiters,
    last_used: Arc<Mutex<Instant>>,
    after: Duration,
}

impl Idle {
    /// When the connection counts as idle if nothing happens before.
    fn deadline(&self) -> tokio::time::Instant {
        let last = self
            .last_used
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| Instant::now());
        tokio::time::Instant::from_std(last + self.after)
    }

    fn expired(&self) -> bool {
        let idle = self.waiters.lock().map(|w| w.is_empty()).unwrap_or(false);
        idle && tokio::time::Instant::now() >= self.deadline()
    }
}

/// Reads framed responses until EOF, error, shutdown or idleness; then marks the connection
/// closed and drops every waiter (their transactions see a connection error).
async fn read_loop(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    idle: Idle,
    closed: CancellationToken,
    on_stray: Arc<dyn Fn() + Send + Sync>,
) {
    let waiters = idle.waiters.clone();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let n = tokio::select! {
            _ = closed.cancelled() => break,
            _ = tokio::time::sleep_until(idle.deadline()) => {
                if idle.expired() {
                    break;
                }
                // In use, or used since: look again at the next deadline.
                if let Ok(mut t) = idle.last_used.lock()
                    && !idle.waiters.lock().map(|w| w.is_empty()).unwrap_or(true)
                {
                    *t = Instant::now();
                }
                continue;
            }
            r = reader.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        let _ = n;
        if !drain_frames(&mut buf, &waiters, &*on_stray) {
            break;
        }
    }
    closed.cancel();
    if let Ok(mut w) = waiters.lock() {
        w.clear();
    }
}

/// Routes every complete message in `buf` to its waiter and drops keep-alive CRLFs (RFC 5626
/// §3.5.1 pongs; RFC 3261 §7.5: CRLFs before a start line are ignored) so that a stream of them
/// does not accumulate. `false` when framing is lost (§18.3: the stream cannot be resynchronised).
fn drain_frames(
    buf: &mut BytesMut,
    waiters: &Waiters,
    on_stray: &(dyn Fn() + Send + Sync),
) -> bool {
    loop {
        let crlf = buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        let _ = buf.split_to(crlf);
        {
            match frame_stream(buf) {
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
                Ok(None) => return true,
                // Framing lost: the stream cannot be resynchronised (§18.3).
                Err(_) => {
                    on_stray();
                    return false;
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn pool(limits: PoolLimits) -> Pool {
        crate::tls::install_provider();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Pool::new(
            Arc::new(tls),
            CancellationToken::new(),
            Arc::new(|| {}),
            limits,
        )
    }

    const LIMITS: PoolLimits = PoolLimits {
        max_connections: 2,
        idle: Duration::from_secs(60),
        write_timeout: Duration::from_secs(5),
    };

    /// A listener that accepts and keeps its connections (never reads, never answers).
    async fn sink() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                kept.push(s);
            }
        });
        (addr, h)
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn keepalive_crlfs_are_consumed_not_kept() {
        let waiters: Waiters = Arc::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        waiters.lock().unwrap().insert("z9hG4bKx".into(), tx);
        let mut buf = BytesMut::new();
        // A megabyte of keep-alive pongs, in reads of any size: the buffer never grows.
        for _ in 0..1000 {
            buf.extend_from_slice(&b"\r\n".repeat(512));
            assert!(drain_frames(&mut buf, &waiters, &|| {}));
            assert!(buf.is_empty(), "{} bytes kept", buf.len());
        }
        // A response after CRLFs is still routed.
        buf.extend_from_slice(
            b"\r\n\r\nSIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\
              From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\n\
              CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n\r\n",
        );
        let stray = std::sync::atomic::AtomicUsize::new(0);
        let count = || {
            stray.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        };
        assert!(drain_frames(&mut buf, &waiters, &count));
        assert_eq!(stray.into_inner(), 0);
        assert_eq!(rx.try_recv().unwrap().status, 200);
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn the_pool_stays_within_its_cap() {
        let p = pool(LIMITS);
        let (a, _ha) = sink().await;
        let (b, _hb) = sink().await;
        let (c, _hc) = sink().await;
        let t = Duration::from_secs(5);
        let ca = p.get(Transport::Tcp, a, "a", t).await.unwrap();
        let _busy = ca.register("busy");
        let cb = p.get(Transport::Tcp, b, "b", t).await.unwrap();
        // Full: the idle one (b) makes room, the busy one (a) stays.
        let _cc = p.get(Transport::Tcp, c, "c", t).await.unwrap();
        assert_eq!(p.len(), 2);
        assert!(cb.is_closed() && !ca.is_closed());
        // Full of busy connections: the delivery fails instead of exceeding the cap.
        let _busy_c = _cc.register("busy");
        let e = match p.get(Transport::Tcp, b, "b", t).await {
            Err(e) => e,
            Ok(_) => panic!("a third connection beyond the cap"),
        };
        assert!(e.reason.contains("pool full") && !e.permanent, "{e}");
        assert_eq!(p.len(), 2);
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let p = pool(PoolLimits {
            idle: Duration::from_millis(200),
            ..LIMITS
        });
        let (a, _h) = sink().await;
        let c = p
            .get(Transport::Tcp, a, "a", Duration::from_secs(5))
            .await
            .unwrap();
        let rx = c.register("t");
        // In use: kept open past the idle time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!c.is_closed());
        c.unregister("t");
        drop(rx);
        until("idle connection closed", || c.is_closed()).await;
        assert_eq!(p.len(), 0);
    }

    #[tokio::test]
    async fn a_write_the_peer_never_reads_times_out() {
        let p = pool(PoolLimits {
            write_timeout: Duration::from_millis(300),
            ..LIMITS
        });
        let (a, _h) = sink().await;
        let c = p
            .get(Transport::Tcp, a, "a", Duration::from_secs(5))
            .await
            .unwrap();
        let big = vec![b'x'; 64 * 1024 * 1024];
        let started = Instant::now();
        let e = c.send(&big).await.expect_err("the peer never reads");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(c.is_closed());
    }
}
