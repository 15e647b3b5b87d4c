//! OBEX binding: DM push over OBEX to a relay (DM-PUSH-S-006/008; DESIGN §6.4).
//!
//! Anatomy: [`ObexConfig`] → encode ([`crate::codec::obex::ClientSession`], pure) → transport
//! (TCP, optionally TLS; one packet written, one packet read, each step under `io_timeout_ms`)
//! → outcome (Success on the final PUT → Delivered; OBEX refusals → Permanent with the response
//! code's name; connect/read/write failures and timeouts → Transient).

use crate::binding::CannotCarry;
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    Binding, BindingContext, BindingKind, ContentType, Delivery, DeviceBinding, Outcome, Preview,
};
use crate::codec::obex::{
    self as codec, Action, ClientSession, ConnectFields, Packet, PutRequest, SessionError,
};
use crate::domain::ObexAddr;
use crate::net::targets::{ResolveError, TargetPolicy, TargetRefused, parse_allow_list};

/// The config section named in refusals.
const SECTION: &str = "bindings.obex";

/// IANA port of OBEX over TCP (protocol-facts §F.6), used when the address has none.
pub const DEFAULT_PORT: u16 = 650;

/// `[bindings.obex]` settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObexConfig {
    pub enabled: bool,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout_ms: u64,
    /// Bound on each write and each response read.
    pub io_timeout_ms: u64,
    /// The maximum packet length we announce in CONNECT (what we can receive), 255–65535.
    pub max_packet: u16,
    /// Wrap the OBEX session in TLS (server certificate verified against Mozilla roots + `ca_file`).
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented when the relay asks; goes with `client_key`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Target header of CONNECT (protocol-facts §F.7: `SYNCML-DM`); empty sends none.
    pub target: String,
    /// Name header of the PUT; unset → by content type: `dm.wbxml`, `dm.xml`, `dm-notification.bin`.
    pub name: Option<String>,
    /// User id sent when a challenge asks for one (options bit 0, §F.5).
    pub user_id: Option<String>,
    /// Relay addresses allowed besides public unicast ones (CIDR list, the same semantics as
    /// `[bindings.http] allow_targets`, DESIGN §10.3): literal addresses are refused at the API,
    /// names after DNS at send time.
    pub allow_targets: Vec<String>,
}

impl Default for ObexConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            connect_timeout_ms: 5_000,
            io_timeout_ms: 10_000,
            max_packet: 4096,
            tls: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            target: "SYNCML-DM".into(),
            name: None,
            user_id: None,
            allow_targets: Vec::new(),
        }
    }
}

impl ObexConfig {
    pub fn validate(&self) -> Result<(), String> {
        parse_allow_list(&self.allow_targets, SECTION)?;
        if self.max_packet < codec::MIN_PACKET {
            return Err(format!(
                "bindings.obex.max_packet {} is below the OBEX minimum {}",
                self.max_packet,
                codec::MIN_PACKET
            ));
        }
        if self.connect_timeout_ms == 0 || self.io_timeout_ms == 0 {
            return Err("bindings.obex timeouts must be positive".into());
        }
        Ok(())
    }

    /// Name header value for a payload type.
    pub fn object_name(&self, ct: ContentType) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match ct {
            ContentType::DmWbxml => "dm.wbxml",
            ContentType::DmXml => "dm.xml",
            ContentType::Notification => "dm-notification.bin",
        }
        .into()
    }
}

/// Builds the binding, or `None` when it is disabled.
pub async fn build(
    cfg: &ObexConfig,
    ctx: &BindingContext,
) -> anyhow::Result<Option<Arc<dyn Binding>>> {
    if !cfg.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(ObexBinding::new(cfg, &ctx.registry)?)))
}

pub struct ObexBinding {
    cfg: ObexConfig,
    policy: TargetPolicy,
    tls: Option<tokio_rustls::TlsConnector>,
    deliveries: IntCounterVec,
    packets: IntCounter,
    auth: IntCounter,
    latency: HistogramVec,
}

/// Transport failure: always worth retrying later.
#[derive(Debug, thiserror::Error)]
enum Transport {
    /// Refused, unreachable and timed out read the same, so that push events do not make the
    /// gateway a port scanner (issue 12).
    #[error("could not connect to {0}")]
    Connect(String),
    #[error("{0}")]
    Dns(String),
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("relay closed the connection while we waited for a response")]
    Closed,
    #[error("relay sent a {len}-octet packet, more than the {max} we announced")]
    Oversized { len: usize, max: u16 },
}

enum Failure {
    Transport(Transport),
    Session(SessionError),
    /// TLS certificate refused: retrying cannot help.
    Config(String),
}

impl ObexBinding {
    pub fn new(cfg: &ObexConfig, registry: &prometheus::Registry) -> anyhow::Result<Self> {
        cfg.validate().map_err(anyhow::Error::msg)?;
        let tls = if cfg.tls {
            let c = crate::tls::ClientTls {
                section: "bindings.obex",
                ca_file: cfg.ca_file.as_deref(),
                client_cert: cfg.client_cert.as_deref(),
                client_key: cfg.client_key.as_deref(),
                alpn: &[],
            }
            .build()?;
            Some(tokio_rustls::TlsConnector::from(c))
        } else {
            None
        };
        let deliveries = IntCounterVec::new(
            Opts::new(
                "dmpushd_obex_deliveries_total",
                "OBEX binding delivery attempts by outcome",
            ),
            &["outcome"],
        )?;
        let packets = IntCounter::new(
            "dmpushd_obex_packets_sent_total",
            "OBEX request packets sent (CONNECT, PUT, DISCONNECT)",
        )?;
        let auth = IntCounter::new(
            "dmpushd_obex_auth_challenges_total",
            "OBEX authentication challenges answered",
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "dmpushd_obex_delivery_seconds",
                "OBEX session duration (connect to PUT result)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(packets.clone()))?;
        registry.register(Box::new(auth.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self {
            cfg: cfg.clone(),
            policy: TargetPolicy::new(
                parse_allow_list(&cfg.allow_targets, SECTION).map_err(anyhow::Error::msg)?,
            ),
            tls,
            deliveries,
            packets,
            auth,
            latency,
        })
    }

    fn request(&self, password: Option<&str>, ct: ContentType, body: &[u8]) -> PutRequest {
        PutRequest {
            target: self.cfg.target.as_bytes().to_vec(),
            name: Some(self.cfg.object_name(ct)),
            mime_type: ct.as_str().to_owned(),
            body: body.to_vec(),
            max_rx: self.cfg.max_packet,
            password: password.map(|p| p.as_bytes().to_vec()),
            user_id: self.cfg.user_id.as_ref().map(|u| u.as_bytes().to_vec()),
        }
    }

    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut S,
        req: PutRequest,
    ) -> Result<codec::PutDone, Failure> {
        let io_to = Duration::from_millis(self.cfg.io_timeout_ms);
        let mut s = ClientSession::new(req);
        let mut pkt = s.start().map_err(Failure::Session)?;
        let mut buf = Vec::with_capacity(usize::from(self.cfg.max_packet));
        loop {
            // Flush too: over TLS, a written packet may otherwise wait in the record buffer.
            let write = async {
                io.write_all(&pkt).await?;
                io.flush().await
            };
            tokio::time::timeout(io_to, write)
                .await
                .map_err(|_| Failure::Transport(Transport::Timeout("write")))?
                .map_err(|source| {
                    Failure::Transport(Transport::Io {
                        what: "write",
                        source,
                    })
                })?;
            self.packets.inc();
            let read = tokio::time::timeout(io_to, read_packet(io, &mut buf, self.cfg.max_packet))
                .await
                .map_err(|_| Failure::Transport(Transport::Timeout("waiting for a response")));
            let read = match read.and_then(|r| r.map_err(Failure::Transport)) {
                Ok(()) => buf.as_slice(),
                // The object is delivered once the final PUT got Success; a lost DISCONNECT
                // answer does not undo that.
                Err(_) if s.put_succeeded() => return Ok(s.done()),
                Err(e) => return Err(e),
            };
            let before = s.done().authenticated;
            match s.on_response(read).map_err(Failure::Session)? {
                Action::Send(next) => {
                    if !before && s.done().authenticated {
                        self.auth.inc();
                    }
                    pkt = next;
                }
                Action::Done(d) => return Ok(d),
            }
        }
    }

    async fn attempt(
        &self,
        address: &ObexAddr,
        req: PutRequest,
    ) -> Result<codec::PutDone, Failure> {
        let (host, port) = (address.host().to_owned(), address.port());
        let addr = format!("{host}:{port}");
        // Only addresses allow_targets permits are connected to (DESIGN §10.3).
        let addrs = match self.policy.resolve(&host, port, SECTION).await {
            Ok(a) => a,
            Err(ResolveError::Refused(r)) => return Err(Failure::Config(r.to_string())),
            Err(e @ ResolveError::Dns { .. }) => {
                return Err(Failure::Transport(Transport::Dns(e.to_string())));
            }
        };
        let tcp = tokio::time::timeout(
            Duration::from_millis(self.cfg.connect_timeout_ms),
            TcpStream::connect(&addrs[..]),
        )
        .await
        .map_err(|_| Failure::Transport(Transport::Connect(addr.clone())))?
        .map_err(|_| Failure::Transport(Transport::Connect(addr.clone())))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => {
                let mut tcp = tcp;
                let r = self.session(&mut tcp, req).await;
                let _ = tcp.shutdown().await;
                r
            }
            Some(conn) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| Failure::Config(format!("OBEX relay name {host:?}: {e}")))?;
                let mut tls = tokio::time::timeout(
                    Duration::from_millis(self.cfg.connect_timeout_ms),
                    conn.connect(name, tcp),
                )
                .await
                .map_err(|_| Failure::Transport(Transport::Connect(addr.clone())))?
                .map_err(|source| {
                    // A certificate the relay cannot make valid by waiting is permanent.
                    if source
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<rustls::Error>())
                        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
                    {
                        Failure::Config(format!("TLS with {addr}: {source}"))
                    } else {
                        Failure::Transport(Transport::Tls {
                            addr: addr.clone(),
                            source,
                        })
                    }
                })?;
                let r = self.session(&mut tls, req).await;
                let _ = tls.shutdown().await;
                r
            }
        }
    }
}

/// Reads exactly one OBEX packet into `buf` (protocol-facts §F.1: the length field gives the
/// whole packet); refuses packets above what we announced.
async fn read_packet<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    max: u16,
) -> Result<(), Transport> {
    buf.clear();
    buf.resize(3, 0);
    io.read_exact(&mut buf[..3]).await.map_err(eof)?;
    let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
    if len > usize::from(max) {
        return Err(Transport::Oversized { len, max });
    }
    // A length below 3 is left to the decoder, which names it.
    if len > 3 {
        buf.resize(len, 0);
        io.read_exact(&mut buf[3..]).await.map_err(eof)?;
    }
    Ok(())
}

fn eof(e: std::io::Error) -> Transport {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Transport::Closed
    } else {
        Transport::Io {
            what: "read",
            source: e,
        }
    }
}

impl Binding for ObexBinding {
    fn kind(&self) -> BindingKind {
        BindingKind::Obex
    }

    /// The packets of a session with a relay that accepts our `max_packet`, assigns no
    /// Connection-Id and does not challenge (the relay's answers decide those at delivery).
    fn preview(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
    ) -> Result<Preview, CannotCarry> {
        let DeviceBinding::Obex { address, password } = target else {
            return Err(CannotCarry::WrongTarget(BindingKind::Obex));
        };
        let _ = address; // parsed (and so valid) since it entered the system
        let mut s = ClientSession::new(self.request(password.as_deref(), content_type, body));
        let mut units = vec![s.start().map_err(|e| CannotCarry::Payload(e.to_string()))?];
        let connect_ok = Packet {
            code: codec::RSP_SUCCESS,
            connect: Some(ConnectFields {
                version: codec::OBEX_VERSION,
                flags: 0,
                max_packet: self.cfg.max_packet,
            }),
            headers: Vec::new(),
        }
        .encode()
        .map_err(|e| CannotCarry::Payload(e.to_string()))?;
        let mut next = s
            .on_response(&connect_ok)
            .map_err(|e| CannotCarry::Payload(e.to_string()))?;
        let mut puts = 0;
        // Bounded: one step per packet, and each PUT packet carries at least one body octet.
        for _ in 0..=body.len() + 2 {
            let Action::Send(pkt) = next else { break };
            let is_put = matches!(pkt.first(), Some(&codec::OP_PUT | &codec::OP_PUT_FINAL));
            let reply = match pkt.first() {
                Some(&codec::OP_PUT) => [codec::RSP_CONTINUE, 0, 3],
                _ => [codec::RSP_SUCCESS, 0, 3],
            };
            if is_put {
                puts += 1;
            }
            units.push(pkt);
            next = s
                .on_response(&reply)
                .map_err(|e| CannotCarry::Payload(e.to_string()))?;
        }
        Ok(Preview {
            summary: format!(
                "OBEX CONNECT (Target {:?}), {puts} PUT packet(s) of at most {} octets, DISCONNECT",
                self.cfg.target, self.cfg.max_packet
            ),
            units_hex: units.iter().map(hex::encode).collect(),
        })
    }

    fn refused_target(&self, target: &DeviceBinding) -> Option<super::RefusedTarget> {
        let DeviceBinding::Obex { address, .. } = target else {
            return None;
        };
        let ip = self.policy.refused_host(address.host())?;
        Some(super::RefusedTarget {
            field: "address",
            reason: TargetRefused::literal(ip, SECTION).to_string(),
        })
    }

    fn deliver(&self, delivery: Delivery) -> futures_util::future::BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let started = Instant::now();
            let outcome = match &delivery.target {
                DeviceBinding::Obex { address, password } => {
                    let req =
                        self.request(password.as_deref(), delivery.content_type, &delivery.body);
                    match self.attempt(address, req).await {
                        Ok(d) => Outcome::Delivered {
                            detail: format!(
                                "OBEX PUT 0x{:02X} {} ({} packet(s), relay max {}{})",
                                d.code,
                                codec::response_name(d.code),
                                d.put_packets,
                                d.peer_max,
                                if d.authenticated {
                                    ", authenticated"
                                } else {
                                    ""
                                }
                            ),
                        },
                        Err(Failure::Transport(t)) => Outcome::Transient {
                            reason: t.to_string(),
                            retry_after: None,
                        },
                        Err(Failure::Session(e)) if e.is_transient() => Outcome::Transient {
                            reason: e.to_string(),
                            retry_after: None,
                        },
                        Err(Failure::Session(e)) => Outcome::Permanent {
                            reason: e.to_string(),
                        },
                        Err(Failure::Config(reason)) => Outcome::Permanent { reason },
                    }
                }
                other => Outcome::Permanent {
                    reason: format!("OBEX binding cannot deliver to a {} target", other.kind()),
                },
            };
            let label = outcome.label();
            self.deliveries.with_label_values(&[label]).inc();
            self.latency
                .with_label_values(&[label])
                .observe(started.elapsed().as_secs_f64());
            tracing::debug!(push_id = %delivery.push_id, outcome = label, "obex delivery");
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_is_the_session_packets() {
        let cfg = ObexConfig {
            max_packet: 255,
            ..Default::default()
        };
        let b = ObexBinding::new(&cfg, &prometheus::Registry::new()).unwrap();
        let target = DeviceBinding::Obex {
            address: "127.0.0.1:650".parse().unwrap(),
            password: None,
        };
        let body = vec![0x5A; 600];
        let p = b.preview(&target, ContentType::DmWbxml, &body).unwrap();
        // CONNECT, 3 PUT packets (255-octet packets), DISCONNECT.
        assert_eq!(p.units_hex.len(), 5, "{p:?}");
        assert!(p.units_hex[0].starts_with("8000131000" /* CONNECT, len 19, v1.0 */));
        assert!(p.units_hex[1].starts_with("0200ff"));
        assert!(p.units_hex[3].starts_with("82"));
        assert_eq!(p.units_hex[4], "810003");
        let mut got = Vec::new();
        for u in &p.units_hex[1..4] {
            let pkt = codec::decode_request(&hex::decode(u).unwrap()).unwrap();
            for h in pkt.headers {
                if let (codec::HI_BODY | codec::HI_END_OF_BODY, codec::HeaderValue::Bytes(v)) =
                    (h.id, h.value)
                {
                    got.extend(v);
                }
            }
        }
        assert_eq!(got, body);
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = ObexConfig::default();
        assert!(c.enabled);
        assert_eq!(c.target, "SYNCML-DM");
        assert_eq!(c.object_name(ContentType::DmXml), "dm.xml");
        assert!(
            ObexConfig {
                max_packet: 100,
                ..c
            }
            .validate()
            .is_err()
        );
    }
}
