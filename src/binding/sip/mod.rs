//! SIP binding: Push OTA over SIP (OMA-TS-DM_PushBinding §5.2, DM-PUSH-S-004) as an
//! out-of-dialog MESSAGE (RFC 3428 pager mode) from a user agent client.
//!
//! Anatomy: **config** ([`SipConfig`]) → **encode** (`codec::sip::message`) → **transport**
//! ([`transport`]: UDP per delivery, pooled TCP/TLS) → **transaction** (`codec::sip::transaction`,
//! RFC 3261 §17.1.2) → **outcome** (see [`classify`]).

pub mod transport;

use crate::binding::CannotCarry;
use std::{
    fmt,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{FutureExt, future::BoxFuture};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use self::transport::{LinkError, Pool, StreamConn};
use super::{
    Binding, BindingContext, BindingKind, ContentType, Delivery, DeviceBinding, Outcome, Preview,
};
use crate::codec::sip::{
    Action, NonInviteClient, Response, SipUri, Timers, Transport,
    auth::{self, DigestInput},
    message::{self, MessageRequest, parse_response},
};
use crate::domain::SipAddress;

/// One set of digest credentials, chosen by the challenge's realm. The password never reaches a
/// log (manual `Debug`).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipCredential {
    pub realm: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SipCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipCredential")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `[bindings.sip]` settings. Every key is optional; the default sends directly to the host of
/// the device's URI over UDP with the RFC 3261 timers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// `false` disables the binding (`build` returns `None`).
    pub enabled: bool,
    /// Domain for `tel:` device URIs (`sip:<number>@<domain>;user=phone`, RFC 3261 §19.1.6).
    pub domain: Option<String>,
    /// Our identity (From URI). Default `sip:dmpushd@<domain>` or `sip:dmpushd@localhost`.
    pub from: Option<String>,
    /// Optional display name in From.
    pub display_name: Option<String>,
    /// Outbound proxy, e.g. `sip:proxy.example;transport=tcp`; sent as a loose `Route`.
    pub proxy: Option<String>,
    /// Default transport when the URI does not say: `udp`, `tcp` or `tls`.
    pub transport: String,
    /// PEM CA certificates trusted for TLS in addition to the bundled Mozilla roots
    /// (`crate::tls`: the same meaning in every section).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented when a TLS peer asks; goes with `client_key`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    /// Timer F; `None` means 64·T1 (RFC 3261 table 4).
    pub timer_f_ms: Option<u64>,
    /// Media feature tag for Accept-Contact (seed §5.2: `+g.oma.eventappid`).
    pub feature_tag: String,
    pub feature_value: String,
    pub feature_require: bool,
    pub feature_explicit: bool,
    /// Send Accept-Contact at all.
    pub accept_contact: bool,
    /// Follow one 3xx redirect to its first Contact.
    pub follow_redirects: bool,
    pub max_forwards: u8,
    /// Requests larger than this go over TCP (RFC 3261 §18.1.1: 1300 when the MTU is unknown).
    pub udp_max_request: usize,
    pub credentials: Vec<SipCredential>,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            domain: None,
            from: None,
            display_name: None,
            proxy: None,
            transport: "udp".into(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            timer_f_ms: None,
            feature_tag: "+g.oma.eventappid".into(),
            feature_value: "syncml.dm".into(),
            feature_require: false,
            feature_explicit: false,
            accept_contact: true,
            follow_redirects: false,
            max_forwards: 70,
            udp_max_request: message::UDP_MAX_REQUEST,
            credentials: Vec::new(),
        }
    }
}

/// Builds the binding, or `None` when it is disabled.
pub async fn build(
    cfg: &SipConfig,
    ctx: &BindingContext,
) -> anyhow::Result<Option<Arc<dyn Binding>>> {
    if !cfg.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(SipBinding::new(cfg, ctx)?)))
}

struct Metrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    retransmissions: IntCounterVec,
    stray: IntCounter,
}

impl Metrics {
    fn register(reg: &prometheus::Registry) -> anyhow::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "dmpushd_sip_requests_total",
                "SIP MESSAGE transactions by final response class (2xx..6xx, timeout, error) and transport",
            ),
            &["class", "transport"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "dmpushd_sip_transaction_seconds",
                "Time from sending a MESSAGE to its final response",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 32.0,
            ]),
            &["transport"],
        )?;
        let retransmissions = IntCounterVec::new(
            Opts::new(
                "dmpushd_sip_retransmissions_total",
                "MESSAGE retransmissions (Timer E, UDP only)",
            ),
            &["transport"],
        )?;
        let stray = IntCounter::new(
            "dmpushd_sip_stray_messages_total",
            "Malformed, unmatched or duplicate SIP messages received and ignored",
        )?;
        reg.register(Box::new(requests.clone()))?;
        reg.register(Box::new(latency.clone()))?;
        reg.register(Box::new(retransmissions.clone()))?;
        reg.register(Box::new(stray.clone()))?;
        Ok(Self {
            requests,
            latency,
            retransmissions,
            stray,
        })
    }
}

/// The SIP MESSAGE binding.
pub struct SipBinding {
    cfg: SipConfig,
    timers: Timers,
    default_transport: Transport,
    from: String,
    accept_contact: Option<String>,
    proxy: Option<SipUri>,
    route: Vec<String>,
    pool: Pool,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    epoch: Instant,
}

/// Where and how one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    request_uri: String,
    to: String,
    hop: SipUri,
    transport: Transport,
}

/// Result of one client transaction.
enum TxResult {
    Final(Box<Response>),
    Timeout,
    Link(LinkError),
}

impl SipBinding {
    pub fn new(cfg: &SipConfig, ctx: &BindingContext) -> anyhow::Result<Self> {
        let default_transport = Transport::parse(&cfg.transport).ok_or_else(|| {
            anyhow::anyhow!(
                "bindings.sip.transport {:?}: expected udp, tcp or tls",
                cfg.transport
            )
        })?;
        anyhow::ensure!(cfg.t1_ms > 0, "bindings.sip.t1_ms must be > 0");
        anyhow::ensure!(
            cfg.t2_ms >= cfg.t1_ms,
            "bindings.sip.t2_ms must be >= t1_ms"
        );
        let timers = Timers {
            t1: Duration::from_millis(cfg.t1_ms),
            t2: Duration::from_millis(cfg.t2_ms),
            t4: Duration::from_millis(cfg.t4_ms),
            timer_f: Duration::from_millis(cfg.timer_f_ms.unwrap_or(64 * cfg.t1_ms)),
        };
        let from_uri = match &cfg.from {
            Some(f) => f.clone(),
            None => format!(
                "sip:dmpushd@{}",
                cfg.domain.as_deref().unwrap_or("localhost")
            ),
        };
        SipUri::parse(&from_uri).map_err(|e| anyhow::anyhow!("bindings.sip.from: {e}"))?;
        let from = match &cfg.display_name {
            Some(n) => format!("\"{}\" <{from_uri}>", n.replace(['"', '\\'], "")),
            None => format!("<{from_uri}>"),
        };
        let (proxy, route) = match &cfg.proxy {
            Some(p) => {
                let u = SipUri::parse(p).map_err(|e| anyhow::anyhow!("bindings.sip.proxy: {e}"))?;
                // Loose routing (RFC 3261 §16.12 / §8.1.2): the proxy is the first Route.
                let r = if u.param("lr").is_some() {
                    format!("<{}>", u.raw)
                } else {
                    format!("<{};lr>", u.raw)
                };
                (Some(u), vec![r])
            }
            None => (None, Vec::new()),
        };
        let accept_contact = cfg.accept_contact.then(|| {
            message::accept_contact(
                &cfg.feature_tag,
                &cfg.feature_value,
                cfg.feature_require,
                cfg.feature_explicit,
            )
        });
        let tls = crate::tls::ClientTls {
            section: "bindings.sip",
            ca_file: cfg.ca_file.as_deref(),
            client_cert: cfg.client_cert.as_deref(),
            client_key: cfg.client_key.as_deref(),
            alpn: &[],
        }
        .build()?;
        let metrics = Arc::new(Metrics::register(&ctx.registry)?);
        let m = metrics.clone();
        let pool = Pool::new(tls, ctx.shutdown.clone(), Arc::new(move || m.stray.inc()));
        Ok(Self {
            cfg: cfg.clone(),
            timers,
            default_transport,
            from,
            accept_contact,
            proxy,
            route,
            pool,
            metrics,
            shutdown: ctx.shutdown.clone(),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// `sip:`/`sips:` as is; `tel:` through the configured domain (RFC 3261 §19.1.6).
    fn normalise(&self, uri: &SipAddress) -> Result<String, String> {
        match uri {
            SipAddress::Sip(u) => Ok(u.raw.clone()),
            SipAddress::Tel(t) => {
                let domain = self
                    .cfg
                    .domain
                    .as_deref()
                    .ok_or("tel: device URI needs [bindings.sip] domain")?;
                message::tel_to_sip(t, domain).map_err(|e| e.to_string())
            }
        }
    }

    fn plan(&self, target: &DeviceBinding, request_uri: Option<&str>) -> Result<Plan, String> {
        let DeviceBinding::Sip { uri, gruu } = target else {
            return Err(format!("not a SIP target: {}", target.kind()));
        };
        let aor = self.normalise(uri)?;
        let request_uri = match (request_uri, gruu) {
            (Some(r), _) => r.to_string(),
            (None, Some(g)) => self.normalise(g)?,
            (None, None) => aor.clone(),
        };
        let ruri = SipUri::parse(&request_uri).map_err(|e| e.to_string())?;
        let hop = self.proxy.clone().unwrap_or_else(|| ruri.clone());
        // A sips: Request-URI must be secured on every hop (RFC 3261 §19.1.2 / §26.2.2).
        let transport = if ruri.secure {
            Transport::Tls
        } else {
            hop.transport().unwrap_or(self.default_transport)
        };
        Ok(Plan {
            request_uri,
            to: format!("<{aor}>"),
            hop,
            transport,
        })
    }

    async fn resolve(&self, plan: &Plan, transport: Transport) -> Result<SocketAddr, LinkError> {
        let port = plan.hop.port.unwrap_or(transport.default_port());
        let host = plan.hop.host_unbracketed().to_string();
        let fail = |reason: String| LinkError {
            transport: transport.as_str(),
            addr: SocketAddr::from(([0, 0, 0, 0], port)),
            reason,
            permanent: false,
        };
        // A records only: RFC 3263 NAPTR/SRV is out of scope (docs/decisions/sip.md).
        let mut addrs = tokio::time::timeout(
            self.timers.timer_f,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| fail(format!("resolving {host} timed out")))?
        .map_err(|e| fail(format!("resolving {host}: {e}")))?;
        addrs
            .next()
            .ok_or_else(|| fail(format!("{host} has no address")))
    }

    async fn deliver_inner(&self, d: Delivery) -> Outcome {
        let mut plan = match self.plan(&d.target, None) {
            Ok(p) => p,
            Err(reason) if matches!(d.target, DeviceBinding::Sip { .. }) => {
                return Outcome::Permanent { reason };
            }
            Err(reason) => return Outcome::Unsupported { reason },
        };
        let call_id = format!("{}@dmpushd", uuid::Uuid::new_v4().simple());
        let from_tag = format!("{:016x}", rand::random::<u64>());
        let mut cseq = 1u32;
        let mut authorization: Option<(&'static str, String)> = None;
        let mut challenged = false;
        let mut redirected = false;
        let mut udp: Option<(SocketAddr, UdpSocket)> = None;
        // At most: first try, one auth retry, one redirect (and its auth retry).
        for _ in 0..4 {
            let branch = format!("{}{:016x}", message::BRANCH_COOKIE, rand::random::<u64>());
            let mut transport = plan.transport;
            let addr = match self.resolve(&plan, transport).await {
                Ok(a) => a,
                Err(e) => return self.link_outcome(e),
            };
            let req = |sent_by: &str, transport: Transport| {
                MessageRequest {
                    request_uri: &plan.request_uri,
                    transport,
                    sent_by,
                    branch: &branch,
                    from: &self.from,
                    from_tag: &from_tag,
                    to: &plan.to,
                    call_id: &call_id,
                    cseq,
                    max_forwards: self.cfg.max_forwards,
                    route: &self.route,
                    accept_contact: self.accept_contact.as_deref(),
                    authorization: authorization.as_ref().map(|(n, v)| (*n, v.as_str())),
                    content_type: d.content_type.as_str(),
                    body: &d.body,
                }
                .encode()
            };
            let started = Instant::now();
            let result = if transport == Transport::Udp {
                if udp.as_ref().is_none_or(|(a, _)| *a != addr) {
                    match transport::udp_socket(addr).await {
                        Ok(s) => udp = Some((addr, s)),
                        Err(e) => return self.link_outcome(e),
                    }
                }
                let Some((_, sock)) = udp.as_ref() else {
                    return Outcome::Transient {
                        reason: "UDP socket unavailable".into(),
                        retry_after: None,
                    };
                };
                let local = sock
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "0.0.0.0:0".into());
                let bytes = req(&local, Transport::Udp);
                // RFC 3261 §18.1.1, checked on the final bytes (after any Authorization).
                if bytes.len() > self.cfg.udp_max_request {
                    transport = Transport::Tcp;
                    self.stream_transaction(&plan, addr, transport, &req, &branch, cseq, &call_id)
                        .await
                } else {
                    self.udp_transaction(sock, &bytes, &branch, cseq, &call_id)
                        .await
                }
            } else {
                self.stream_transaction(&plan, addr, transport, &req, &branch, cseq, &call_id)
                    .await
            };
            let elapsed = started.elapsed().as_secs_f64();
            let t = transport.as_str();
            self.metrics
                .latency
                .with_label_values(&[t])
                .observe(elapsed);
            let resp = match result {
                TxResult::Final(r) => r,
                TxResult::Timeout => {
                    self.metrics
                        .requests
                        .with_label_values(&["timeout", t])
                        .inc();
                    return Outcome::Transient {
                        reason: format!(
                            "SIP MESSAGE over {t}: no final response within Timer F ({} ms)",
                            self.timers.timer_f.as_millis()
                        ),
                        retry_after: None,
                    };
                }
                TxResult::Link(e) => {
                    self.metrics.requests.with_label_values(&["error", t]).inc();
                    return self.link_outcome(e);
                }
            };
            let class = format!("{}xx", resp.status / 100);
            self.metrics.requests.with_label_values(&[&class, t]).inc();
            match resp.status {
                401 | 407 => {
                    if challenged {
                        return Outcome::Permanent {
                            reason: format!(
                                "SIP {} {}: credentials rejected (second challenge)",
                                resp.status, resp.reason
                            ),
                        };
                    }
                    challenged = true;
                    match self.answer_challenge(&resp, &plan.request_uri, &d.body) {
                        Ok(a) => authorization = Some(a),
                        Err(reason) => return Outcome::Permanent { reason },
                    }
                    // Same Call-ID and From tag, CSeq + 1 (RFC 3261 §22.2).
                    cseq += 1;
                }
                300..=399 if self.cfg.follow_redirects && !redirected => {
                    let Some(contact) = resp.contact_uris().into_iter().next() else {
                        return Outcome::Permanent {
                            reason: format!("SIP {} {} without Contact", resp.status, resp.reason),
                        };
                    };
                    redirected = true;
                    match self.plan(&d.target, Some(&contact)) {
                        Ok(p) => plan = p,
                        Err(e) => {
                            return Outcome::Permanent {
                                reason: format!("SIP {} redirect to {contact:?}: {e}", resp.status),
                            };
                        }
                    }
                    // A new target may have another realm: a fresh challenge is allowed.
                    authorization = None;
                    challenged = false;
                    cseq += 1;
                }
                _ => return classify(&resp, t),
            }
        }
        Outcome::Permanent {
            reason: "SIP: too many redirects or challenges".into(),
        }
    }

    fn answer_challenge(
        &self,
        resp: &Response,
        request_uri: &str,
        body: &[u8],
    ) -> Result<(&'static str, String), String> {
        let (hdr, answer) = if resp.status == 407 {
            ("proxy-authenticate", "Proxy-Authorization")
        } else {
            ("www-authenticate", "Authorization")
        };
        // Several challenges may be offered (e.g. SHA-256 and MD5): take the first we can answer.
        let mut last_err = format!("SIP {} without {hdr}", resp.status);
        for value in resp.headers_named(hdr) {
            let ch = match auth::parse_challenge(value) {
                Ok(c) => c,
                Err(e) => {
                    last_err = format!("SIP {} challenge: {e}", resp.status);
                    continue;
                }
            };
            let Some(cred) = self.cfg.credentials.iter().find(|c| c.realm == ch.realm) else {
                last_err = format!(
                    "SIP {}: no credentials for realm {:?}",
                    resp.status, ch.realm
                );
                continue;
            };
            let cnonce = format!("{:016x}", rand::random::<u64>());
            let inp = DigestInput {
                username: &cred.username,
                password: &cred.password,
                method: "MESSAGE",
                uri: request_uri,
                body,
                cnonce: &cnonce,
                nc: 1,
            };
            match auth::authorization(&ch, &inp) {
                Ok(v) => return Ok((answer, v)),
                Err(e) => last_err = format!("SIP {} challenge: {e}", resp.status),
            }
        }
        Err(last_err)
    }

    fn link_outcome(&self, e: LinkError) -> Outcome {
        if e.permanent {
            Outcome::Permanent {
                reason: e.to_string(),
            }
        } else {
            Outcome::Transient {
                reason: e.to_string(),
                retry_after: None,
            }
        }
    }

    fn matches(resp: &Response, branch: &str, cseq: u32, call_id: &str) -> bool {
        resp.top_via_branch() == Some(branch)
            && resp.cseq() == Some((cseq, "MESSAGE"))
            && resp.call_id() == Some(call_id)
    }

    async fn udp_transaction(
        &self,
        sock: &UdpSocket,
        bytes: &[u8],
        branch: &str,
        cseq: u32,
        call_id: &str,
    ) -> TxResult {
        let link_err = |reason: String| {
            TxResult::Link(LinkError {
                transport: "udp",
                addr: sock
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
                reason,
                permanent: false,
            })
        };
        if let Err(e) = sock.send(bytes).await {
            return link_err(format!("send: {e}"));
        }
        let mut tx = NonInviteClient::new(false, self.timers, self.now());
        let mut buf = vec![0u8; message::MAX_MESSAGE + 1];
        loop {
            let Some(deadline) = tx.deadline() else {
                return TxResult::Timeout;
            };
            let wake = tokio::time::Instant::from_std(self.epoch + deadline);
            tokio::select! {
                r = sock.recv(&mut buf) => {
                    let n = match r {
                        Ok(n) => n,
                        // ICMP port unreachable surfaces here on a connected socket; the peer
                        // may come up before Timer F, so keep retransmitting (RFC 3261 §18.4
                        // allows but does not require treating it as a failure).
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                        Err(e) => return link_err(format!("recv: {e}")),
                    };
                    match parse_response(&buf[..n]) {
                        Ok(resp) if Self::matches(&resp, branch, cseq, call_id) => {
                            match tx.on_response(resp.status, self.now()) {
                                Some(Action::Final(_)) => return TxResult::Final(Box::new(resp)),
                                Some(_) => {}
                                None => self.metrics.stray.inc(),
                            }
                        }
                        _ => self.metrics.stray.inc(),
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    match tx.on_timer(self.now()) {
                        Some(Action::Retransmit) => {
                            self.metrics.retransmissions.with_label_values(&["udp"]).inc();
                            if let Err(e) = sock.send(bytes).await {
                                return link_err(format!("send: {e}"));
                            }
                        }
                        Some(Action::Timeout) => return TxResult::Timeout,
                        _ => {}
                    }
                }
                _ = self.shutdown.cancelled() => return link_err("shutting down".into()),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream_transaction(
        &self,
        plan: &Plan,
        addr: SocketAddr,
        transport: Transport,
        req: &(dyn Fn(&str, Transport) -> Vec<u8> + Sync),
        branch: &str,
        cseq: u32,
        call_id: &str,
    ) -> TxResult {
        let name = plan.hop.host_unbracketed().to_string();
        // One reconnect when a pooled connection turns out to be dead on write.
        let mut attempt = 0;
        let (conn, mut rx): (Arc<StreamConn>, _) = loop {
            let conn = match self
                .pool
                .get(transport, addr, &name, self.timers.timer_f)
                .await
            {
                Ok(c) => c,
                Err(e) => return TxResult::Link(e),
            };
            let rx = conn.register(branch);
            let bytes = req(&conn.local.to_string(), transport);
            match conn.send(&bytes).await {
                Ok(()) => break (conn, rx),
                Err(e) => {
                    conn.unregister(branch);
                    self.pool.evict(&conn);
                    attempt += 1;
                    if attempt > 1 {
                        return TxResult::Link(LinkError {
                            transport: transport.as_str(),
                            addr,
                            reason: format!("send: {e}"),
                            permanent: false,
                        });
                    }
                }
            }
        };
        let mut tx = NonInviteClient::new(true, self.timers, self.now());
        let result = loop {
            let Some(deadline) = tx.deadline() else {
                break TxResult::Timeout;
            };
            let wake = tokio::time::Instant::from_std(self.epoch + deadline);
            tokio::select! {
                r = rx.recv() => match r {
                    Some(resp) if Self::matches(&resp, branch, cseq, call_id) => {
                        match tx.on_response(resp.status, self.now()) {
                            Some(Action::Final(_)) => break TxResult::Final(Box::new(resp)),
                            Some(_) => {}
                            None => self.metrics.stray.inc(),
                        }
                    }
                    Some(_) => self.metrics.stray.inc(),
                    None => {
                        self.pool.evict(&conn);
                        break TxResult::Link(LinkError {
                            transport: transport.as_str(),
                            addr,
                            reason: "connection closed before a final response".into(),
                            permanent: false,
                        });
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    if let Some(Action::Timeout) = tx.on_timer(self.now()) {
                        break TxResult::Timeout;
                    }
                }
                _ = self.shutdown.cancelled() => break TxResult::Link(LinkError {
                    transport: transport.as_str(),
                    addr,
                    reason: "shutting down".into(),
                    permanent: false,
                }),
            }
        };
        conn.unregister(branch);
        result
    }
}

/// Maps a final response that is not a challenge or a followed redirect to an outcome
/// (issue 5; RFC 3428 §7 for 200 vs 202; RFC 3261 §21 for the classes).
pub fn classify(resp: &Response, transport: &str) -> Outcome {
    let what = format!("SIP {} {} (over {transport})", resp.status, resp.reason);
    match resp.status {
        // 202: accepted by a store-and-forward element; no receipt will follow (RFC 3428 §7).
        202 => Outcome::Accepted {
            detail: what,
            refs: Vec::new(),
        },
        200..=299 => Outcome::Delivered { detail: what },
        408 | 480 | 486 | 500 | 503 | 504 => Outcome::Transient {
            reason: what,
            retry_after: resp.retry_after().map(|s| Duration::from_secs(s.into())),
        },
        _ => Outcome::Permanent { reason: what },
    }
}

impl Binding for SipBinding {
    fn kind(&self) -> BindingKind {
        BindingKind::Sip
    }

    fn preview(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
    ) -> Result<Preview, CannotCarry> {
        let plan = self.plan(target, None).map_err(CannotCarry::Target)?;
        // Per-attempt values (Via sent-by, branch, tag, Call-ID) are fresh on every send; the
        // preview shows them with placeholders of realistic length.
        let bytes = |transport: Transport| {
            MessageRequest {
                request_uri: &plan.request_uri,
                transport,
                sent_by: "0.0.0.0:0",
                branch: "z9hG4bK0000000000000000",
                from: &self.from,
                from_tag: "0000000000000000",
                to: &plan.to,
                call_id: "00000000000000000000000000000000@dmpushd",
                cseq: 1,
                max_forwards: self.cfg.max_forwards,
                route: &self.route,
                accept_contact: self.accept_contact.as_deref(),
                authorization: None,
                content_type: content_type.as_str(),
                body,
            }
            .encode()
        };
        let mut transport = plan.transport;
        let mut wire = bytes(transport);
        if transport == Transport::Udp && wire.len() > self.cfg.udp_max_request {
            transport = Transport::Tcp;
            wire = bytes(transport);
        }
        Ok(Preview {
            summary: format!(
                "SIP MESSAGE to {} via {} over {}, {} bytes",
                plan.request_uri,
                plan.hop.raw,
                transport.as_str(),
                wire.len()
            ),
            units_hex: vec![hex::encode(&wire)],
        })
    }

    fn deliver(&self, delivery: Delivery) -> BoxFuture<'_, Outcome> {
        self.deliver_inner(delivery).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> BindingContext {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        BindingContext {
            registry: prometheus::Registry::new(),
            receipts: tx,
            shutdown: CancellationToken::new(),
        }
    }

    fn resp(status: u16, extra: &str) -> Response {
        parse_response(
            format!(
                "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nCSeq: 1 MESSAGE\r\nCall-ID: c\r\n{extra}Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&resp(200, ""), "udp").label(), "delivered");
        assert!(matches!(
            classify(&resp(202, ""), "udp"),
            Outcome::Accepted { refs, .. } if refs.is_empty()
        ));
        assert_eq!(
            classify(&resp(503, "Retry-After: 30\r\n"), "udp"),
            Outcome::Transient {
                reason: "SIP 503 X (over udp)".into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
        for s in [408, 480, 486, 500, 504] {
            assert_eq!(classify(&resp(s, ""), "tcp").label(), "transient", "{s}");
        }
        for s in [302, 400, 403, 404, 415, 488, 603] {
            let o = classify(&resp(s, ""), "tcp");
            assert!(
                matches!(&o, Outcome::Permanent { reason } if reason.contains(&s.to_string())),
                "{s}: {o:?}"
            );
        }
    }

    #[tokio::test]
    async fn default_config_builds_and_previews() {
        let b = build(&SipConfig::default(), &ctx()).await.unwrap().unwrap();
        let target = DeviceBinding::Sip {
            uri: "sip:device@127.0.0.1:5070".parse().unwrap(),
            gruu: None,
        };
        let p = b
            .preview(&target, ContentType::DmXml, b"<SyncML/>")
            .unwrap();
        let wire = hex::decode(&p.units_hex[0]).unwrap();
        let text = String::from_utf8(wire).unwrap();
        assert!(text.starts_with("MESSAGE sip:device@127.0.0.1:5070 SIP/2.0\r\n"));
        assert!(text.contains("Accept-Contact: *;+g.oma.eventappid=\"syncml.dm\"\r\n"));
        assert!(text.ends_with("Content-Length: 9\r\n\r\n<SyncML/>"));
        assert!(p.summary.contains("over udp"), "{}", p.summary);
        // Large body: TCP (RFC 3261 §18.1.1).
        let big = vec![b'x'; 1300];
        let p = b.preview(&target, ContentType::DmXml, &big).unwrap();
        assert!(p.summary.contains("over tcp"), "{}", p.summary);
        assert!(
            String::from_utf8_lossy(&hex::decode(&p.units_hex[0]).unwrap())
                .contains("Via: SIP/2.0/TCP ")
        );
        // tel: needs a domain.
        let tel = DeviceBinding::Sip {
            uri: "tel:+447700900123".parse().unwrap(),
            gruu: None,
        };
        assert!(b.preview(&tel, ContentType::DmXml, b"x").is_err());
        let http = DeviceBinding::Http {
            url: "https://x".parse().unwrap(),
            framing: Default::default(),
            hmac: None,
        };
        assert!(b.preview(&http, ContentType::DmXml, b"x").is_err());
    }

    #[tokio::test]
    async fn gruu_tel_proxy_and_feature_tag_config() {
        let cfg = SipConfig {
            domain: Some("ims.example.net".into()),
            proxy: Some("sip:proxy.example.net;transport=tcp".into()),
            from: Some("sip:dm@dm.example.net".into()),
            feature_tag: "g.oma.pusheventapp".into(),
            feature_require: true,
            feature_explicit: true,
            ..Default::default()
        };
        let b = build(&cfg, &ctx()).await.unwrap().unwrap();
        let target = DeviceBinding::Sip {
            uri: "tel:+44-7700-900123".parse().unwrap(),
            gruu: Some(
                "sip:+447700900123@ims.example.net;gr=urn:uuid:f81d4fae"
                    .parse()
                    .unwrap(),
            ),
        };
        let p = b
            .preview(&target, ContentType::Notification, &[0x80])
            .unwrap();
        let text = String::from_utf8_lossy(&hex::decode(&p.units_hex[0]).unwrap()).into_owned();
        assert!(text.starts_with(
            "MESSAGE sip:+447700900123@ims.example.net;gr=urn:uuid:f81d4fae SIP/2.0\r\nVia: SIP/2.0/TCP "
        ));
        assert!(text.contains("\r\nRoute: <sip:proxy.example.net;transport=tcp;lr>\r\n"));
        assert!(text.contains("\r\nTo: <sip:+447700900123@ims.example.net;user=phone>\r\n"));
        assert!(text.contains("\r\nFrom: <sip:dm@dm.example.net>;tag="));
        assert!(text.contains(
            "\r\nAccept-Contact: *;+g.oma.pusheventapp=\"syncml.dm\";require;explicit\r\n"
        ));
        assert!(text.contains("\r\nContent-Type: application/vnd.syncml.notification\r\n"));
        let dbg = format!(
            "{:?}",
            SipCredential {
                realm: "r".into(),
                username: "u".into(),
                password: "hunter2".into()
            }
        );
        assert!(!dbg.contains("hunter2"));
    }

    #[tokio::test]
    async fn bad_config_is_rejected() {
        let cfg = SipConfig {
            transport: "sctp".into(),
            ..Default::default()
        };
        assert!(build(&cfg, &ctx()).await.is_err());
        let off = SipConfig {
            enabled: false,
            ..Default::default()
        };
        assert!(build(&off, &ctx()).await.unwrap().is_none());
    }
}
