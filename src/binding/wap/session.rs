//! One long-lived SMPP 3.4 ESME session per SMSC account: connect, bind_transceiver, a window of
//! outstanding submit_sm, enquire_link keep-alive and dead-link detection, delivery receipts,
//! reconnect with jittered exponential backoff, unbind on shutdown.
//!
//! The PDU codec is `crate::codec::smpp` (sans-IO); this module owns the I/O and the timers.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::{Buf, BytesMut};
use futures_util::{StreamExt, stream::FuturesUnordered};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
    time::{Instant, sleep_until, timeout},
};
use tokio_util::sync::CancellationToken;

use super::metrics::SmppMetrics;
use crate::{
    binding::{BindingKind, Receipt, ReceiptAck},
    codec::smpp::{self, Body, Pdu, cmd, status},
};

/// A delivery receipt's deliver_sm header and whether the receipt was committed.
type AckWait = std::pin::Pin<Box<dyn std::future::Future<Output = (smpp::Header, bool)> + Send>>;

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
}

impl SmscHandle {
    pub fn is_bound(&self) -> bool {
        self.bound.load(Ordering::Acquire)
    }
}

/// Spawns the session task; it lives until `shutdown`.
pub fn spawn(
    cfg: SmscConfig,
    tls: Option<Tls>,
    metrics: SmppMetrics,
    receipts: mpsc::Sender<Receipt>,
    shutdown: CancellationToken,
) -> SmscHandle {
    let cfg = Arc::new(cfg);
    // Requests wait here while the window is full; bounded so memory is too.
    let (tx, rx) = mpsc::channel(cfg.window.max(1) * 4);
    let bound = Arc::new(AtomicBool::new(false));
    let s = Session {
        cfg: cfg.clone(),
        tls,
        metrics,
        receipts,
        shutdown,
        bound: bound.clone(),
        rx,
        seq: 0,
    };
    tokio::spawn(s.run());
    SmscHandle { cfg, tx, bound }
}

struct Session {
    cfg: Arc<SmscConfig>,
    tls: Option<Tls>,
    metrics: SmppMetrics,
    receipts: mpsc::Sender<Receipt>,
    shutdown: CancellationToken,
    bound: Arc<AtomicBool>,
    rx: mpsc::Receiver<SubmitReq>,
    seq: u32,
}

struct Pending {
    reply: oneshot::Sender<SegResult>,
    sent: Instant,
    deadline: Instant,
}

enum End {
    Shutdown,
    Error(String),
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Session {
    fn next_seq(&mut self) -> u32 {
        // Sequence numbers are 1..=0x7FFFFFFF (SMPP 3.4 §5.1.4).
        self.seq = if self.seq >= 0x7FFF_FFFF {
            1
        } else {
            self.seq + 1
        };
        self.seq
    }

    async fn run(mut self) {
        let name = self.cfg.name.clone();
        let mut backoff = ms(self.cfg.reconnect_min_ms.max(1));
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let end = match self.connect_and_bind().await {
                Ok(stream) => {
                    backoff = ms(self.cfg.reconnect_min_ms.max(1));
                    self.bound.store(true, Ordering::Release);
                    self.metrics.bound.with_label_values(&[&name]).set(1);
                    self.metrics.binds.with_label_values(&[&name, "up"]).inc();
                    tracing::info!(smsc = %name, "SMPP session bound");
                    let mut pending = HashMap::new();
                    let end = self.bound_loop(stream, &mut pending).await;
                    self.bound.store(false, Ordering::Release);
                    self.metrics.bound.with_label_values(&[&name]).set(0);
                    self.metrics.binds.with_label_values(&[&name, "down"]).inc();
                    self.metrics.in_flight.with_label_values(&[&name]).set(0);
                    let why = match &end {
                        End::Shutdown => "shutdown".to_owned(),
                        End::Error(e) => e.clone(),
                    };
                    // Whatever was written but not answered may have reached the SMSC.
                    for (_, p) in pending.drain() {
                        self.metrics.ambiguous.with_label_values(&[&name]).inc();
                        let _ = p
                            .reply
                            .send(SegResult::Ambiguous(format!("session ended: {why}")));
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

    async fn connect_and_bind(&mut self) -> Result<Box<dyn Io>, String> {
        let cfg = self.cfg.clone();
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let tcp = tokio::select! {
            _ = self.shutdown.cancelled() => return Err("shutdown".into()),
            r = timeout(ms(cfg.connect_timeout_ms), TcpStream::connect(&addr)) => r
                .map_err(|_| format!("connect to {addr} timed out"))?
                .map_err(|e| format!("connect to {addr}: {e}"))?,
        };
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Io> = match &self.tls {
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
        };
        let seq = self.next_seq();
        let bind = Pdu::new(
            cmd::BIND_TRANSCEIVER,
            seq,
            Body::Bind(smpp::Bind {
                system_id: cfg.system_id.clone(),
                password: cfg.password.clone(),
                system_type: cfg.system_type.clone(),
                interface_version: smpp::INTERFACE_VERSION,
                addr_ton: 0,
                addr_npi: 0,
                address_range: String::new(),
            }),
        )
        .encode()
        .map_err(|e| format!("bind: {e}"))?;
        let deadline = Instant::now() + ms(cfg.response_timeout_ms);
        timeout(ms(cfg.response_timeout_ms), stream.write_all(&bind))
            .await
            .map_err(|_| "bind write timed out".to_owned())?
            .map_err(|e| format!("bind write: {e}"))?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let pdu = tokio::select! {
                _ = self.shutdown.cancelled() => return Err("shutdown".into()),
                _ = sleep_until(deadline) => return Err("no bind_transceiver_resp".into()),
                r = read_pdu(&mut stream, &mut buf) => r?,
            };
            if pdu.header.command_id == cmd::BIND_TRANSCEIVER | cmd::RESP
                && pdu.header.sequence == seq
            {
                if pdu.header.status != status::ROK {
                    return Err(format!(
                        "bind rejected: {} (0x{:02X})",
                        smpp::status_name(pdu.header.status),
                        pdu.header.status
                    ));
                }
                return Ok(stream);
            }
            if pdu.header.command_id == cmd::GENERIC_NACK {
                return Err(format!(
                    "bind answered with generic_nack {}",
                    smpp::status_name(pdu.header.status)
                ));
            }
        }
    }

    async fn bound_loop<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: S,
        pending: &mut HashMap<u32, Pending>,
    ) -> End {
        let cfg = self.cfg.clone();
        let name = cfg.name.clone();
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(8192);
        let resp_to = ms(cfg.response_timeout_ms.max(1));
        let enquire_every = ms(cfg.enquire_link_ms.max(1));
        let mut last_rx = Instant::now();
        let mut enquire: Option<(u32, Instant)> = None;
        let mut throttle_until: Option<Instant> = None;
        // Token bucket: capacity one second of throughput (at least one token).
        let rate = cfg.throughput;
        let cap = if rate > 0.0 { rate.max(1.0) } else { 0.0 };
        let mut tokens = cap;
        let mut refill_at = Instant::now();
        let window = cfg.window.max(1);
        // deliver_sm receipts waiting for their commit before we acknowledge them.
        let mut acks: FuturesUnordered<AckWait> = FuturesUnordered::new();

        loop {
            let now = Instant::now();
            if rate > 0.0 {
                tokens = (tokens + now.duration_since(refill_at).as_secs_f64() * rate).min(cap);
                refill_at = now;
            }
            let throttled = throttle_until.is_some_and(|t| t > now);
            let has_token = rate <= 0.0 || tokens >= 1.0;
            let can_send = pending.len() < window && !throttled && has_token;
            // The next instant something has to be checked.
            let mut wake = enquire.map_or(last_rx + enquire_every, |(_, d)| d);
            if let Some(d) = pending.values().map(|p| p.deadline).min() {
                wake = wake.min(d);
            }
            if let Some(t) = throttle_until.filter(|t| *t > now) {
                wake = wake.min(t);
            }
            if !has_token && pending.len() < window {
                let need = (1.0 - tokens) / rate;
                wake = wake.min(now + Duration::from_secs_f64(need.max(0.0005)));
            }

            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.unbind(&mut rd, &mut wr, &mut buf, pending).await;
                    return End::Shutdown;
                }
                r = rd.read_buf(&mut buf) => {
                    match r {
                        Ok(0) => return End::Error("connection closed by SMSC".into()),
                        Ok(_) => {}
                        Err(e) => return End::Error(format!("read: {e}")),
                    }
                    last_rx = Instant::now();
                    loop {
                        let pdu = match take_pdu(&mut buf) {
                            Ok(Some(p)) => p,
                            Ok(None) => break,
                            Err(e) => return End::Error(e),
                        };
                        if let Err(e) = self
                            .handle(pdu, &mut wr, pending, &mut enquire, &mut throttle_until, &mut acks)
                            .await
                        {
                            return End::Error(e);
                        }
                    }
                }
                req = self.rx.recv(), if can_send => {
                    let Some(req) = req else { return End::Shutdown };
                    if req.reply.is_closed() {
                        continue; // the deliver call gave up before we sent anything
                    }
                    let seq = self.next_seq();
                    let bytes = match Pdu::new(cmd::SUBMIT_SM, seq, Body::Sm(req.sm)).encode() {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = req.reply.send(SegResult::Rejected(status::RINVCMDLEN));
                            tracing::error!(smsc = %name, error = %e, "submit_sm not encodable");
                            continue;
                        }
                    };
                    if rate > 0.0 {
                        tokens -= 1.0;
                    }
                    let sent = Instant::now();
                    pending.insert(seq, Pending { reply: req.reply, sent, deadline: sent + resp_to });
                    self.metrics.in_flight.with_label_values(&[&name]).set(pending.len() as i64);
                    match timeout(resp_to, wr.write_all(&bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return End::Error(format!("write: {e}")),
                        Err(_) => return End::Error("write timed out".into()),
                    }
                }
                Some((h, committed)) = acks.next(), if !acks.is_empty() => {
                    // Not recorded: a temporary error makes the SMSC deliver it again later
                    // (SMPP 3.4 §5.1.3, ESME_RX_T_APPN).
                    let st = if committed { status::ROK } else { status::RX_T_APPN };
                    let Ok(b) = Pdu::response(&h, st, Body::IdResp(String::new())).encode() else {
                        continue;
                    };
                    if let Err(e) = wr.write_all(&b).await {
                        return End::Error(format!("write: {e}"));
                    }
                }
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    if let Some((_, d)) = enquire && d <= now {
                        return End::Error("enquire_link unanswered: dead link".into());
                    }
                    let expired: Vec<u32> = pending
                        .iter()
                        .filter(|(_, p)| p.deadline <= now)
                        .map(|(s, _)| *s)
                        .collect();
                    for s in expired {
                        if let Some(p) = pending.remove(&s) {
                            self.metrics.ambiguous.with_label_values(&[&name]).inc();
                            let _ = p.reply.send(SegResult::Ambiguous(format!(
                                "no submit_sm_resp within {} ms",
                                cfg.response_timeout_ms
                            )));
                        }
                    }
                    self.metrics.in_flight.with_label_values(&[&name]).set(pending.len() as i64);
                    if enquire.is_none() && now >= last_rx + enquire_every {
                        let seq = self.next_seq();
                        let b = Pdu::new(cmd::ENQUIRE_LINK, seq, Body::Empty).encode().unwrap_or_default();
                        if let Err(e) = wr.write_all(&b).await {
                            return End::Error(format!("write: {e}"));
                        }
                        enquire = Some((seq, now + resp_to));
                    }
                }
            }
        }
    }

    async fn handle<W: AsyncWrite + Unpin>(
        &mut self,
        pdu: Pdu,
        wr: &mut W,
        pending: &mut HashMap<u32, Pending>,
        enquire: &mut Option<(u32, Instant)>,
        throttle_until: &mut Option<Instant>,
        acks: &mut FuturesUnordered<AckWait>,
    ) -> Result<(), String> {
        let name = self.cfg.name.clone();
        let h = pdu.header;
        let send = |p: Pdu| async move { p.encode().map_err(|e| e.to_string()) };
        match h.command_id {
            c if c == cmd::SUBMIT_SM | cmd::RESP || c == cmd::GENERIC_NACK => {
                if let Some((s, _)) = enquire
                    && *s == h.sequence
                {
                    *enquire = None;
                }
                let Some(p) = pending.remove(&h.sequence) else {
                    if c == cmd::GENERIC_NACK {
                        tracing::warn!(smsc = %name, status = smpp::status_name(h.status), "generic_nack");
                    }
                    return Ok(());
                };
                self.metrics
                    .in_flight
                    .with_label_values(&[&name])
                    .set(pending.len() as i64);
                self.metrics
                    .submit_latency
                    .with_label_values(&[&name])
                    .observe(p.sent.elapsed().as_secs_f64());
                self.metrics
                    .submits
                    .with_label_values(&[&name, smpp::status_name(h.status)])
                    .inc();
                let result = if h.status == status::ROK && c != cmd::GENERIC_NACK {
                    match pdu.body {
                        Body::IdResp(id) if !id.is_empty() => SegResult::Accepted(id),
                        _ => SegResult::Ambiguous("submit_sm_resp without message_id".into()),
                    }
                } else {
                    if h.status == status::RTHROTTLED || h.status == status::RMSGQFUL {
                        self.metrics.throttled.with_label_values(&[&name]).inc();
                        // Kannel pauses the link on throttling (protocol-facts §C.8).
                        *throttle_until = Some(Instant::now() + ms(self.cfg.throttle_backoff_ms));
                    }
                    SegResult::Rejected(h.status)
                };
                let _ = p.reply.send(result);
            }
            c if c == cmd::ENQUIRE_LINK | cmd::RESP
                && enquire.is_some_and(|(s, _)| s == h.sequence) =>
            {
                *enquire = None;
            }
            cmd::ENQUIRE_LINK => {
                let b = send(Pdu::response(&h, status::ROK, Body::Empty)).await?;
                wr.write_all(&b).await.map_err(|e| format!("write: {e}"))?;
            }
            cmd::DELIVER_SM => {
                if let Body::Sm(sm) = &pdu.body
                    && smpp::is_receipt(sm)
                {
                    match smpp::parse_receipt(sm) {
                        Some(r) => {
                            self.metrics
                                .receipts
                                .with_label_values(&[&name, &r.state])
                                .inc();
                            if let Some(delivered) = r.delivered {
                                let reference = format!(
                                    "{name}:{}",
                                    smpp::normalise_id(&r.message_id, self.cfg.receipt_id_decimal)
                                );
                                // Acknowledged only once the receipt is committed: if we die
                                // first, the SMSC delivers it again (after a rebind). A full
                                // channel slows the SMSC down instead of dropping receipts.
                                let (ack, committed) = ReceiptAck::new();
                                let receipt = Receipt {
                                    binding: BindingKind::Wap,
                                    reference,
                                    delivered,
                                    detail: format!("SMPP receipt stat:{}", r.state),
                                    ack: Some(ack),
                                };
                                tokio::select! {
                                    _ = self.shutdown.cancelled() => return Err("shutdown while queueing receipt".into()),
                                    r = self.receipts.send(receipt) => if r.is_err() {
                                        return Err("receipt channel closed".into());
                                    },
                                }
                                acks.push(Box::pin(async move {
                                    (h, committed.await.unwrap_or(false))
                                }));
                                return Ok(());
                            }
                        }
                        None => tracing::warn!(smsc = %name, "unparseable delivery receipt"),
                    }
                }
                let b = send(Pdu::response(&h, status::ROK, Body::IdResp(String::new()))).await?;
                wr.write_all(&b).await.map_err(|e| format!("write: {e}"))?;
            }
            cmd::UNBIND => {
                let b = send(Pdu::response(&h, status::ROK, Body::Empty)).await?;
                let _ = wr.write_all(&b).await;
                return Err("unbound by SMSC".into());
            }
            c if c & cmd::RESP == 0 => {
                // A request we do not implement: generic_nack (SMPP 3.4 §4.3).
                let nack = Pdu {
                    header: smpp::Header {
                        command_id: cmd::GENERIC_NACK,
                        status: status::RINVCMDID,
                        sequence: h.sequence,
                    },
                    body: Body::Empty,
                };
                let b = send(nack).await?;
                wr.write_all(&b).await.map_err(|e| format!("write: {e}"))?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn unbind<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        buf: &mut BytesMut,
        pending: &mut HashMap<u32, Pending>,
    ) {
        let seq = self.next_seq();
        let Ok(b) = Pdu::new(cmd::UNBIND, seq, Body::Empty).encode() else {
            return;
        };
        let deadline = Instant::now() + ms(self.cfg.response_timeout_ms.min(2_000));
        if timeout(Duration::from_secs(1), wr.write_all(&b))
            .await
            .is_err()
        {
            return;
        }
        // Collect answers to what is in flight while waiting for unbind_resp.
        loop {
            let r = tokio::select! {
                _ = sleep_until(deadline) => return,
                r = rd.read_buf(buf) => r,
            };
            if !matches!(r, Ok(n) if n > 0) {
                return;
            }
            while let Ok(Some(p)) = take_pdu(buf) {
                if p.header.command_id == cmd::UNBIND | cmd::RESP {
                    let _ = wr.shutdown().await;
                    return;
                }
                if p.header.command_id == cmd::SUBMIT_SM | cmd::RESP
                    && let Some(pe) = pending.remove(&p.header.sequence)
                {
                    let res = match p.body {
                        Body::IdResp(id) if p.header.status == 0 && !id.is_empty() => {
                            SegResult::Accepted(id)
                        }
                        _ => SegResult::Rejected(p.header.status),
                    };
                    let _ = pe.reply.send(res);
                }
            }
        }
    }
}

/// Takes one complete PDU off the buffer. A decode failure of a correctly framed PDU is
/// reported as an error too: the stream can no longer be trusted.
fn take_pdu(buf: &mut BytesMut) -> Result<Option<Pdu>, String> {
    let len = match smpp::frame_len(buf) {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("garbage from SMSC: {e}")),
    };
    if buf.len() < len {
        return Ok(None);
    }
    let pdu = Pdu::decode(&buf[..len]).map_err(|e| format!("bad PDU from SMSC: {e}"));
    buf.advance(len);
    pdu.map(Some)
}

async fn read_pdu<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> Result<Pdu, String> {
    loop {
        if let Some(p) = take_pdu(buf)? {
            return Ok(p);
        }
        match s.read_buf(buf).await {
            Ok(0) => return Err("connection closed by SMSC".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
