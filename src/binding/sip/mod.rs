//! SIP binding: Push OTA over SIP (OMA-TS-DM_PushBinding §5.2, DM-PUSH-S-004) as an
//! out-of-dialog MESSAGE (RFC 3428 pager mode) from a user agent client.
//!
//! Anatomy: **config** ([`SipConfig`]) → **encode** (`codec::sip::message`) → **transport**
//! ([`transport`]: UDP per delivery, pooled TCP/TLS) → **transaction** (`codec::sip::transaction`,
//! RFC 3261 §17.1.2) → **outcome** (see [`classify`]).
//!
//! Layout: [`config`] (settings), `attempt` (planning, the transaction loop, challenge, redirect,
//! [`classify`]), [`transport`] (UDP sockets, the TCP/TLS connection pool); this file builds the
//! binding and implements [`Binding`] on it.

mod attempt;
pub mod config;
pub mod transport;

pub use attempt::classify;
pub use config::{SipConfig, SipCredential};

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{FutureExt, future::BoxFuture};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use tokio_util::sync::CancellationToken;

use self::transport::Pool;
use super::{
    Binding, BindingContext, BindingKind, CannotCarry, ContentType, Delivery, DeviceBinding,
    Outcome, Preview, RefusedTarget,
};
use crate::net::targets::{TargetPolicy, TargetRefused, parse_allow_list};

/// The config section named in refusals.
const SECTION: &str = "bindings.sip";
use crate::codec::sip::{
    SipUri, Timers, Transport,
    message::{self, MessageRequest},
};

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
    /// `allow_targets` for hosts contacted directly (not the configured proxy).
    policy: TargetPolicy,
    /// Each credential's `targets`, in `cfg.credentials` order.
    credential_targets: Vec<config::CredentialTargets>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    epoch: Instant,
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
        let pool = Pool::new(
            tls,
            ctx.shutdown.clone(),
            Arc::new(move || m.stray.inc()),
            transport::PoolLimits {
                max_connections: cfg.pool_max_connections.max(1),
                idle: Duration::from_secs(cfg.pool_idle_seconds.max(1)),
                write_timeout: Duration::from_secs(cfg.write_timeout_seconds.max(1)),
            },
        );
        Ok(Self {
            cfg: cfg.clone(),
            timers,
            default_transport,
            from,
            accept_contact,
            proxy,
            route,
            pool,
            credential_targets: cfg
                .credentials
                .iter()
                .map(config::CredentialTargets::parse)
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?,
            policy: TargetPolicy::new(
                parse_allow_list(&cfg.allow_targets, SECTION).map_err(anyhow::Error::msg)?,
            ),
            metrics,
            shutdown: ctx.shutdown.clone(),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
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

    fn refused_target(&self, target: &DeviceBinding) -> Option<RefusedTarget> {
        // A configured proxy is the operator's: it is the only host contacted.
        if self.proxy.is_some() {
            return None;
        }
        let DeviceBinding::Sip { gruu, .. } = target else {
            return None;
        };
        let plan = self.plan(target, None).ok()?;
        let ip = self.policy.refused_host(plan.hop.host_unbracketed())?;
        Some(RefusedTarget {
            // The GRUU, when given, is the Request-URI and so the host contacted.
            field: if gruu.is_some() { "gruu" } else { "uri" },
            reason: TargetRefused::literal(ip, SECTION).to_string(),
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
                password: "hunter2".into(),
                targets: vec![],
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
