//! One long-lived SMPP 3.4 ESME session per SMSC account: connect (TCP, optional TLS), then a
//! thin driver around the sans-IO state machine `crate::codec::smpp::esme` (bind, window,
//! sequence numbers, token bucket, throttling, enquire_link and dead-link detection, receipts,
//! unbind), and reconnect with jittered exponential backoff.
//!
//! The driver owns only I/O: it feeds read bytes, submit requests, receipt verdicts and the clock
//! into the machine, acts on its events, and writes what it returns. Every write is bounded by
//! the machine's write deadline (the response timeout): an SMSC that stops reading ends the
//! session (`bound` cleared, reconnect) instead of hanging it.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::BytesMut;
use futures_util::{StreamExt, stream::FuturesUnordered};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
    time::{Instant, sleep_until, timeout, timeout_at},
};
use tokio_util::sync::CancellationToken;

use super::metrics::SmppMetrics;
use crate::{
    binding::{BindingKind, NextHopRef, Receipt, ReceiptAck},
    codec::smpp::{
        self,
        esme::{self, Answer, Dead, Esme, Event, ReceiptToken, SubmitError},
        status,
    },
};

/// A delivery receipt's deliver_sm header and whether the receipt was committed.
type AckWait = std::pin::Pin<Box<dyn std::future::Future<Output = (ReceiptToken, bool)> + Send>>;

/// How SMS ports/concatenation reach the SMSC (addendum Q5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortAddressing {
    /// The gateway builds the UDH in short_message and sets esm_class UDHI (Kannel's WAP path).
    #[default]
    Udh,
    /// source_port/destination_port and sar_* TLVs; the SMSC builds the UDH.
    Tlv,
}

/// How the validity period is expressed (SMPP 3.4 §7.1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidityMode {
    /// `YYMMDDhhmmss000R` from the remaining TTL: immune to clock skew with the SMSC.
    #[default]
    Relative,
    /// `YYMMDDhhmmss000+` UTC of the push's expiry (what Kannel sends).
    Absolute,
    /// Empty: the SMSC default.
    None,
}

/// One `[[bindings.wap.smsc]]` account. `Debug` hides the password.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmscConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    /// TLS to the SMSC (rustls, ring provider).
    pub tls: bool,
    /// PEM CA certificates trusted in addition to the bundled Mozilla roots (private SMSC
    /// CAs; `crate::tls`: the same meaning as `ca_file` in every other section).
    pub tls_ca_file: Option<String>,
    /// Client certificate chain (PEM) presented when the SMSC asks; goes with `tls_client_key`.
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
    /// Name to verify in the SMSC's certificate; default `host`.
    pub tls_server_name: Option<String>,
    /// Maximum outstanding submit_sm (Kannel `max-pending-submits` default 10).
    pub window: usize,
    /// submit_sm per second (token bucket); 0 = unlimited.
    pub throughput: f64,
    pub source_addr: String,
    pub source_ton: u8,
    pub source_npi: u8,
    pub dest_ton: u8,
    pub dest_npi: u8,
    /// MSISDN prefixes (with or without `+`) routed here; empty = default route.
    pub routes: Vec<String>,
    /// esm_class messaging-mode bits (0 default, 1 datagram, 2 forward, 3 store-and-forward).
    pub messaging_mode: u8,
    pub data_coding: u8,
    /// 1 = receipt on final outcome (default); 0 = none (refs are then empty).
    pub registered_delivery: u8,
    pub port_addressing: PortAddressing,
    pub service_type: String,
    pub validity: ValidityMode,
    /// Receipts carry the id in decimal while submit_sm_resp gave it in hex.
    pub receipt_id_decimal: bool,
    pub enquire_link_ms: u64,
    /// Wait for submit_sm_resp / enquire_link_resp / bind_resp (Kannel `wait-ack`).
    pub response_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Pause after ESME_RTHROTTLED / ESME_RMSGQFUL and the retry_after given to the queue.
    pub throttle_backoff_ms: u64,
}

impl Default for SmscConfig {
    fn default() -> Self {
        Self {
            name: "smsc".into(),
            host: "127.0.0.1".into(),
            port: 2775,
            system_id: String::new(),
            password: String::new(),
            system_type: String::new(),
            tls: false,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
            tls_server_name: None,
            window: 10,
            throughput: 0.0,
            source_addr: String::new(),
            source_ton: 5,
            source_npi: 0,
            dest_ton: 1,
            dest_npi: 1,
            routes: Vec::new(),
            messaging_mode: 0,
            data_coding: 0x04,
            registered_delivery: 1,
            port_addressing: PortAddressing::Udh,
            service_type: String::new(),
            validity: ValidityMode::Relative,
            receipt_id_decimal: false,
            enquire_link_ms: 30_000,
            response_timeout_ms: 60_000,
            connect_timeout_ms: 5_000,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            throttle_backoff_ms: 1_000,
        }
    }
}

impl fmt::Debug for SmscConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmscConfig")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("system_id", &self.system_id)
            .field("password", &"<redacted>")
            .field("window", &self.window)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// A byte stream to an SMSC: plain TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TLS client settings of one SMSC account.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: rustls_pki_types::ServerName<'static>,
}

/// Builds the TLS client for an account with `tls = true` (config errors surface at startup).
pub fn tls_client(cfg: &SmscConfig) -> anyhow::Result<Option<Tls>> {
    use anyhow::Context as _;
    if !cfg.tls {
        return Ok(None);
    }
    let section = format!("bindings.wap.smsc {:?}", cfg.name);
    fn path(p: &Option<String>) -> Option<&std::path::Path> {
        p.as_deref().map(std::path::Path::new)
    }
    let config = crate::tls::ClientTls {
        section: &section,
        ca_file: path(&cfg.tls_ca_file),
        client_cert: path(&cfg.tls_client_cert),
        client_key: path(&cfg.tls_client_key),
        alpn: &[],
    }
    .build()?;
    let host = cfg
        .tls_server_name
        .clone()
        .unwrap_or_else(|| cfg.host.clone());
    let name = rustls_pki_types::ServerName::try_from(host.clone())
        .with_context(|| format!("smsc {}: invalid TLS server name {host:?}", cfg.name))?;
    Ok(Some(Tls {
        connector: tokio_rustls::TlsConnector::from(config),
        name,
    }))
}

/// Fate of one submit_sm.
#[derive(Debug, Clone, PartialEq)]
pub enum SegResult {
    Accepted(String),
    Rejected(u32),
    /// Sent, but no answer: the SMSC may or may not have it.
    Ambiguous(String),
    /// Never written to the socket: safe to retry.
    NotSent(String),
}

pub struct SubmitReq {
    pub sm: smpp::Sm,
    pub reply: oneshot::Sender<SegResult>,
}

pub struct SmscHandle {
    pub cfg: Arc<SmscConfig>,
    pub tx: mpsc::Sender<SubmitReq>,
    pub bound: Arc<AtomicBool>,
    /// Set by an operator (`POST /v1/admin/smscs/{name}/suspend`): the session stays bound (so
    /// receipts for earlier submits still arrive) but no new submit_sm is routed here. In memory,
    /// per replica.
    pub suspended: Arc<AtomicBool>,
    /// Why the session last went down (or failed to come up), with when (Unix ms).
    pub last_error: Arc<std::sync::Mutex<Option<(i64, String)>>>,
}

impl SmscHandle {
    pub fn is_bound(&self) -> bool {
        self.bound.load(Ordering::Acquire)
    }

    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }

    /// Bound and not suspended: new submits may go here.
    pub fn is_usable(&self) -> bool {
        self.is_bound() && !self.is_suspended()
    }

    pub fn last_error(&self) -> Option<(i64, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Spawns the session task; it lives until `shutdown`.
pub fn spawn(
    cfg: SmscConfig,
    tls: Option<Tls>,
    metrics: SmppMetrics,
    receipts: mpsc::Sender<Receipt>,
    receipt_hold: Duration,
    shutdown: CancellationToken,
) -> SmscHandle {
    let cfg = Arc::new(cfg);
    // Every series of this account exists from the start (at 0): dashboards and alerts (an
    // unbound SMSC, throttling) see it before its first event.
    let n = cfg.name.as_str();
    metrics.bound.with_label_values(&[n]).set(0);
    metrics.in_flight.with_label_values(&[n]).set(0);
    metrics.throttled.with_label_values(&[n]);
    metrics.ambiguous.with_label_values(&[n]);
    for event in ["up", "down"] {
        metrics.binds.with_label_values(&[n, event]);
    }
    // Requests wait here while the window is full; bounded so memory is too.
    let (tx, rx) = mpsc::channel(cfg.window.max(1) * 4);
    let bound = Arc::new(AtomicBool::new(false));
    let last_error = Arc::default();
    let s = Session {
        last_error: Arc::clone(&last_error),
        cfg: cfg.clone(),
        tls,
        metrics,
        receipts,
        receipt_hold,
        shutdown,
        bound: bound.clone(),
        rx,
        seq: 0,
    };
    tokio::spawn(s.run());
    SmscHandle {
        cfg,
        tx,
        bound,
        suspended: Arc::default(),
        last_error,
    }
}

struct Session {
    cfg: Arc<SmscConfig>,
    tls: Option<Tls>,
    metrics: SmppMetrics,
    receipts: mpsc::Sender<Receipt>,
    /// `bindings.wap.receipt_hold_seconds`, carried by each receipt to the store.
    receipt_hold: Duration,
    shutdown: CancellationToken,
    bound: Arc<AtomicBool>,
    last_error: Arc<std::sync::Mutex<Option<(i64, String)>>>,
    rx: mpsc::Receiver<SubmitReq>,
    /// Last sequence number used; numbering continues across reconnects.
    seq: u32,
}

enum End {
    Shutdown,
    Error(String),
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Session {
    async fn run(mut self) {
        let name = self.cfg.name.clone();
        let mut backoff = ms(self.cfg.reconnect_min_ms.max(1));
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let end = match self.connect().await {
                Ok(stream) => {
                    let (end, was_bound) = self.drive(stream).await;
                    if was_bound {
                        backoff = ms(self.cfg.reconnect_min_ms.max(1));
                    }
                    end
                }
                Err(e) => End::Error(e),
            };
            // Nothing queued was sent: hand it back so the queue retries it.
            while let Ok(req) = self.rx.try_recv() {
                let _ = req
                    .reply
                    .send(SegResult::NotSent(format!("smsc {name} not bound")));
            }
            match end {
                End::Shutdown => break,
                End::Error(e) => {
                    tracing::warn!(smsc = %name, error = %e, "SMPP session down; reconnecting");
                    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((now as i64, e));
                }
            }
            // Jittered exponential backoff: uniform in [backoff/2, backoff].
            let jitter = rand::random::<f64>() * 0.5 + 0.5;
            let wait = backoff.mul_f64(jitter);
            backoff = (backoff * 2).min(ms(self.cfg.reconnect_max_ms.max(1)));
            let until = Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = sleep_until(until) => break,
                    req = self.rx.recv() => match req {
                        Some(req) => { let _ = req.reply.send(SegResult::NotSent(format!("smsc {name} not bound"))); }
                        None => return,
                    },
                }
            }
        }
    }

    /// TCP connect and, if configured, the TLS handshake.
    async fn connect(&mut self) -> Result<Box<dyn Io>, String> {
        let cfg = self.cfg.clone();
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let tcp = tokio::select! {
            _ = self.shutdown.cancelled() => return Err("shutdown".into()),
            r = timeout(ms(cfg.connect_timeout_ms), TcpStream::connect(&addr)) => r
                .map_err(|_| format!("connect to {addr} timed out"))?
                .map_err(|e| format!("connect to {addr}: {e}"))?,
        };
        let _ = tcp.set_nodelay(true);
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some(t) => Box::new(
                timeout(
                    ms(cfg.connect_timeout_ms),
                    t.connector.connect(t.name.clone(), tcp),
                )
                .await
                .map_err(|_| format!("TLS handshake with {addr} timed out"))?
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?,
            ),
        })
    }

    fn esme_config(&self) -> esme::Config {
        let c = &self.cfg;
        esme::Config {
            window: c.window.max(1),
            throughput: c.throughput,
            enquire_link: ms(c.enquire_link_ms.max(1)),
            response_timeout: ms(c.response_timeout_ms.max(1)),
            throttle_backoff: ms(c.throttle_backoff_ms),
            unbind_timeout: ms(c.response_timeout_ms.min(2_000)),
        }
    }

    /// Runs one connection: bind, then the bound session, until it dies. The protocol lives in
    /// [`esme::Esme`]; this loop only moves bytes, requests, receipt verdicts and time into it,
    /// writes what it returns (each write bounded by its deadline) and acts on its events.
    /// Returns how it ended and whether it was ever bound.
    async fn drive(&mut self, stream: Box<dyn Io>) -> (End, bool) {
        let cfg = self.cfg.clone();
        let name = cfg.name.clone();
        let bind = smpp::Bind {
            system_id: cfg.system_id.clone(),
            password: cfg.password.clone(),
            system_type: cfg.system_type.clone(),
            interface_version: smpp::INTERFACE_VERSION,
            addr_ton: 0,
            addr_npi: 0,
            address_range: String::new(),
        };
        let mut m: Esme<oneshot::Sender<SegResult>> =
            Esme::new(self.esme_config(), bind, self.seq, now());
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(8192);
        // deliver_sm receipts waiting for their commit before we acknowledge them.
        let mut acks: FuturesUnordered<AckWait> = FuturesUnordered::new();
        let mut was_bound = false;
        let mut unbinding = false;
        let end = 'session: loop {
            // Write what the machine produced, within its deadline.
            if let Some(bytes) = m.poll_transmit() {
                let deadline = m
                    .write_deadline()
                    .map_or_else(Instant::now, Instant::from_std);
                match timeout_at(deadline, write_flush(&mut wr, &bytes)).await {
                    Ok(Ok(())) => m.on_written(now()),
                    Ok(Err(e)) => m.on_transport_error(format!("write: {e}")),
                    Err(_) => m.handle_timeout(deadline.into_std()),
                }
            }
            while let Some(ev) = m.poll_event() {
                match ev {
                    Event::Bound => {
                        was_bound = true;
                        self.bound.store(true, Ordering::Release);
                        self.metrics.bound.with_label_values(&[&name]).set(1);
                        self.metrics.binds.with_label_values(&[&name, "up"]).inc();
                        tracing::info!(smsc = %name, "SMPP session bound");
                    }
                    Event::Answered {
                        tag,
                        status,
                        latency,
                        answer,
                    } => {
                        self.metrics
                            .submit_latency
                            .with_label_values(&[&name])
                            .observe(latency.as_secs_f64());
                        self.metrics
                            .submits
                            .with_label_values(&[&name, smpp::status_name(status)])
                            .inc();
                        let _ = tag.send(match answer {
                            Answer::Accepted(id) => SegResult::Accepted(id),
                            Answer::NoMessageId => {
                                SegResult::Ambiguous("submit_sm_resp without message_id".into())
                            }
                            Answer::Rejected(st) => SegResult::Rejected(st),
                        });
                    }
                    Event::Unanswered { tag, why } => {
                        self.metrics.ambiguous.with_label_values(&[&name]).inc();
                        let _ = tag.send(SegResult::Ambiguous(why));
                    }
                    Event::Throttled { .. } => {
                        self.metrics.throttled.with_label_values(&[&name]).inc();
                    }
                    Event::Receipt { receipt, token } => {
                        self.metrics
                            .receipts
                            .with_label_values(&[&name, smpp::receipt_state_label(&receipt.state)])
                            .inc();
                        let (Some(token), Some(delivered)) = (token, receipt.delivered) else {
                            continue;
                        };
                        // Ids are unique only per SMSC account: the account is part of the key.
                        let reference = NextHopRef::new(
                            name.clone(),
                            smpp::normalise_id(&receipt.message_id, cfg.receipt_id_decimal),
                        );
                        // Acknowledged only once the receipt is committed: if we die first,
                        // the SMSC delivers it again (after a rebind). A full channel slows
                        // the SMSC down instead of dropping receipts.
                        let (ack, committed) = ReceiptAck::new();
                        let receipt = Receipt {
                            binding: BindingKind::Wap,
                            reference,
                            delivered,
                            detail: format!("SMPP receipt stat:{}", receipt.state),
                            hold: self.receipt_hold,
                            ack: Some(ack),
                        };
                        tokio::select! {
                            _ = self.shutdown.cancelled() => {
                                m.on_transport_error("shutdown while queueing receipt".into());
                            }
                            r = self.receipts.send(receipt) => if r.is_err() {
                                m.on_transport_error("receipt channel closed".into());
                            },
                        }
                        acks.push(Box::pin(async move {
                            (token, committed.await.unwrap_or(false))
                        }));
                    }
                    Event::UnparseableReceipt => {
                        tracing::warn!(smsc = %name, "unparseable delivery receipt");
                    }
                    Event::StrayNack { status } => {
                        tracing::warn!(smsc = %name, status = smpp::status_name(status), "generic_nack");
                    }
                    Event::Dead(why) => {
                        // The SMSC's own unbind still gets its unbind_resp (best effort).
                        if let Some(bytes) = m.poll_transmit() {
                            let _ = timeout(ms(1_000), write_flush(&mut wr, &bytes)).await;
                        }
                        if why == Dead::Shutdown {
                            let _ = timeout(ms(1_000), wr.shutdown()).await;
                        }
                        break 'session match why {
                            Dead::Shutdown if unbinding => End::Shutdown,
                            why => End::Error(why.to_string()),
                        };
                    }
                }
            }
            self.seq = m.last_sequence();
            self.metrics
                .in_flight
                .with_label_values(&[&name])
                .set(m.in_flight() as i64);
            let t = now();
            let can_send = m.can_submit(t);
            let wake = m
                .poll_timeout()
                .map_or_else(|| Instant::now() + ms(1_000), Instant::from_std);
            tokio::select! {
                _ = self.shutdown.cancelled(), if !unbinding => {
                    unbinding = true;
                    m.unbind(now());
                }
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) => m.on_eof(),
                    Ok(_) => {
                        m.on_bytes(&buf, now());
                        buf.clear();
                    }
                    Err(e) => m.on_transport_error(format!("read: {e}")),
                },
                req = self.rx.recv(), if can_send && !unbinding => {
                    let Some(req) = req else {
                        unbinding = true;
                        m.unbind(now());
                        continue;
                    };
                    if req.reply.is_closed() {
                        continue; // the deliver call gave up before we sent anything
                    }
                    match m.submit(req.sm, req.reply, now()) {
                        Ok(_) => {}
                        Err(SubmitError::Encode(reply, e)) => {
                            let _ = reply.send(SegResult::Rejected(status::RINVCMDLEN));
                            tracing::error!(smsc = %name, error = %e, "submit_sm not encodable");
                        }
                        Err(SubmitError::NotReady(reply)) => {
                            let _ = reply.send(SegResult::NotSent(format!("smsc {name} busy")));
                        }
                    }
                }
                Some((token, committed)) = acks.next(), if !acks.is_empty() => {
                    m.receipt_done(token, committed, now());
                }
                _ = sleep_until(wake) => m.handle_timeout(now()),
            }
        };
        if was_bound {
            self.bound.store(false, Ordering::Release);
            self.metrics.bound.with_label_values(&[&name]).set(0);
            self.metrics.binds.with_label_values(&[&name, "down"]).inc();
        }
        self.metrics.in_flight.with_label_values(&[&name]).set(0);
        (end, was_bound)
    }
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

async fn write_flush<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    // TLS keeps records it could not send yet; without a flush they could wait forever.
    wr.flush().await
}
