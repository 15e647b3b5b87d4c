//! HTTP binding: Push OTA over HTTP / DM HTTP binding security (seed §5.3; DESIGN §6.3).
//!
//! Anatomy: [`HttpConfig`] → [`encode`] (pure: headers and body for a framing) → transport
//! (reqwest over rustls, verification on) → [`classify`] (status / error → [`Outcome`]).
//!
//! Outbound targets are checked against an allow-list **after DNS resolution** by a resolver
//! wrapper, so a name cannot smuggle the gateway into its own network (SSRF) and the addresses
//! checked are the ones connected to. IP-literal URLs skip the resolver and are checked before
//! the request.

use crate::binding::CannotCarry;
use std::{
    error::Error as _,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use bytes::Bytes;
use ipnet::IpNet;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use serde::{Deserialize, Serialize};

use super::{
    Binding, BindingContext, BindingKind, ContentType, Delivery, DeviceBinding, HttpFraming,
    Outcome, Preview,
};
use crate::codec::hmac;
use crate::domain::HttpTarget;
use crate::net::targets::{CheckedResolver, TargetRefused, parse_allow_list};
pub use crate::net::targets::{TargetPolicy, is_public};

/// `X-Wap-Application-Id` for SyncML DM (OMNA push app id 0x07, text form).
pub const APP_ID: &str = "x-wap-application:syncml.dm";
/// Push OTA over HTTP version header value (protocol-facts §H.2).
pub const OTA_VERSION: &str = "1.0";

/// `[bindings.http]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    /// PEM CA certificates trusted in addition to the bundled Mozilla roots (`crate::tls`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// CIDR ranges allowed besides public addresses (loopback and private ranges are refused
    /// unless listed here, e.g. `["127.0.0.0/8"]`).
    pub allow_targets: Vec<String>,
    /// Whole-request timeout.
    pub timeout_seconds: u64,
    pub connect_timeout_seconds: u64,
    /// Allow `http://` URLs (no TLS). Off: DM push over HTTP requires TLS (seed §5.3).
    pub allow_plaintext: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ca_file: None,
            client_cert: None,
            client_key: None,
            allow_targets: Vec::new(),
            timeout_seconds: 15,
            connect_timeout_seconds: 5,
            allow_plaintext: false,
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.allow_list().map(|_| ())
    }

    fn allow_list(&self) -> Result<Vec<IpNet>, String> {
        parse_allow_list(&self.allow_targets, "bindings.http")
    }
}

/// The request a push becomes: content type, extra headers and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Pure encoding of a push for one framing (protocol-facts §H.2, §H.7).
pub fn encode(
    framing: HttpFraming,
    hmac_cred: Option<&super::HmacCredentials>,
    content_type: ContentType,
    body: &[u8],
) -> Result<Encoded, String> {
    let hmac_header = match hmac_cred {
        Some(h) => {
            let nonce = B64
                .decode(h.nonce.trim())
                .map_err(|_| "hmac.nonce is not valid base64".to_owned())?;
            Some(hmac::header_value(&h.username, &h.password, &nonce, body))
        }
        None => None,
    };
    match framing {
        HttpFraming::Direct => {
            let mut headers = vec![("X-Wap-Application-Id".to_owned(), APP_ID.to_owned())];
            if let Some(v) = hmac_header {
                headers.push(("x-syncml-hmac".to_owned(), v));
            }
            Ok(Encoded {
                content_type: content_type.as_str().to_owned(),
                headers,
                body: Bytes::copy_from_slice(body),
            })
        }
        HttpFraming::OtaHttp => {
            // The push message travels as a nested HTTP response message (`application/http`),
            // whose headers describe the DM content; the HMAC covers the DM body and rides with it.
            let mut nested = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nX-Wap-Application-Id: {APP_ID}\r\n",
                content_type.as_str(),
                body.len()
            );
            if let Some(v) = hmac_header {
                nested.push_str(&format!("x-syncml-hmac: {v}\r\n"));
            }
            nested.push_str("\r\n");
            let mut out = nested.into_bytes();
            out.extend_from_slice(body);
            Ok(Encoded {
                content_type: "application/http".to_owned(),
                headers: vec![("X-Wap-Push-OTA-Version".to_owned(), OTA_VERSION.to_owned())],
                body: Bytes::from(out),
            })
        }
    }
}

/// Maps an HTTP status to an outcome (DESIGN §6.3).
pub fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered {
            detail: format!("HTTP {status}"),
        },
        408 | 425 | 429 | 500..=599 => Outcome::Transient {
            reason: format!("HTTP {status}"),
            retry_after,
        },
        _ => Outcome::Permanent {
            reason: format!("HTTP {status}"),
        },
    }
}

/// `Retry-After` as delta-seconds (the HTTP-date form is ignored: the queue's backoff applies).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(86_400)))
}

pub struct HttpBinding {
    client: reqwest::Client,
    policy: TargetPolicy,
    allow_plaintext: bool,
    requests: IntCounterVec,
    latency: HistogramVec,
}

pub async fn build(
    cfg: &HttpConfig,
    ctx: &BindingContext,
) -> anyhow::Result<Option<Arc<dyn Binding>>> {
    if !cfg.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(HttpBinding::new(cfg, &ctx.registry)?)))
}

impl HttpBinding {
    pub fn new(cfg: &HttpConfig, registry: &prometheus::Registry) -> anyhow::Result<Self> {
        let policy = TargetPolicy::new(cfg.allow_list().map_err(anyhow::Error::msg)?);
        let tls = crate::tls::ClientTls {
            section: "bindings.http",
            ca_file: cfg.ca_file.as_deref(),
            client_cert: cfg.client_cert.as_deref(),
            client_key: cfg.client_key.as_deref(),
            alpn: &[b"h2", b"http/1.1"],
        }
        .build()?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .dns_resolver(CheckedResolver {
                policy: policy.clone(),
                section: "bindings.http",
            })
            .no_proxy()
            // A redirect could point anywhere; a device that moved must be re-registered.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(cfg.timeout_seconds.max(1)))
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_seconds.max(1)))
            .pool_max_idle_per_host(8)
            .user_agent(concat!("dmpushd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let requests = IntCounterVec::new(
            Opts::new(
                "dmpushd_http_push_requests_total",
                "HTTP binding requests by result class",
            ),
            &["class"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "dmpushd_http_push_request_seconds",
                "HTTP binding request latency",
            ),
            &["class"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self {
            client,
            policy,
            allow_plaintext: cfg.allow_plaintext,
            requests,
            latency,
        })
    }

    fn check_url(&self, target: &HttpTarget) -> Result<reqwest::Url, String> {
        let u = target.url().clone();
        let url = target.as_str();
        match u.scheme() {
            "https" => {}
            "http" if self.allow_plaintext => {}
            s => return Err(format!("URL scheme {s:?} not allowed (https only)")),
        }
        let host = u.host().ok_or_else(|| format!("URL {url:?} has no host"))?;
        let literal = match host {
            url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
            url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal
            && !self.policy.permits(ip)
        {
            return Err(TargetRefused::literal(ip, "bindings.http").to_string());
        }
        Ok(u)
    }

    async fn send(&self, d: &Delivery) -> Outcome {
        let DeviceBinding::Http { url, framing, hmac } = &d.target else {
            return Outcome::Unsupported {
                reason: "not an http binding".into(),
            };
        };
        let url = match self.check_url(url) {
            Ok(u) => u,
            Err(reason) => return Outcome::Permanent { reason },
        };
        let enc = match encode(*framing, hmac.as_ref(), d.content_type, &d.body) {
            Ok(e) => e,
            Err(reason) => return Outcome::Permanent { reason },
        };
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, &enc.content_type);
        for (k, v) in &enc.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.body(enc.body).send().await {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                classify(resp.status().as_u16(), retry_after)
            }
            // reqwest's error text carries the URL, user-info included: drop it (issue 12).
            Err(e) => classify_error(&e.without_url()),
        }
    }
}

/// Transport errors: TLS verification and refused targets are permanent, the rest transient.
fn classify_error(e: &reqwest::Error) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>()
            && matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        {
            return Outcome::Permanent {
                reason: format!("TLS: {tls}"),
            };
        }
        if let Some(r) = s.downcast_ref::<TargetRefused>() {
            return Outcome::Permanent {
                reason: r.to_string(),
            };
        }
        // rustls errors surface wrapped in io::Error; look inside.
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
            && matches!(tls, rustls::Error::InvalidCertificate(_))
        {
            return Outcome::Permanent {
                reason: format!("TLS: {tls}"),
            };
        }
        source = s.source();
    }
    // hyper-util's connector boxes the TLS error in its own type, so the chain may hold no
    // downcastable rustls::Error; rustls' Display text for certificate problems is stable.
    let chain = error_chain(e);
    if chain.contains("invalid peer certificate") || chain.contains("UnknownIssuer") {
        return Outcome::Permanent {
            reason: format!("TLS certificate verification failed: {chain}"),
        };
    }
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "transport error"
    };
    Outcome::Transient {
        reason: format!("{kind}: {}", error_chain(e)),
        retry_after: None,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Binding for HttpBinding {
    fn kind(&self) -> BindingKind {
        BindingKind::Http
    }

    fn preview(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
    ) -> Result<Preview, CannotCarry> {
        let DeviceBinding::Http { url, framing, hmac } = target else {
            return Err(CannotCarry::WrongTarget(BindingKind::Http));
        };
        self.check_url(url).map_err(CannotCarry::Target)?;
        let enc =
            encode(*framing, hmac.as_ref(), content_type, body).map_err(CannotCarry::Payload)?;
        let mut head = format!("POST {url}\r\nContent-Type: {}\r\n", enc.content_type);
        for (k, v) in &enc.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut unit = head.into_bytes();
        unit.extend_from_slice(&enc.body);
        Ok(Preview {
            summary: format!("1 HTTPS POST, {} body bytes", enc.body.len()),
            units_hex: vec![hex::encode(unit)],
        })
    }

    fn check(
        &self,
        target: &DeviceBinding,
        _content_type: ContentType,
        _body: &[u8],
    ) -> Result<(), CannotCarry> {
        let DeviceBinding::Http { url, hmac, .. } = target else {
            return Err(CannotCarry::WrongTarget(BindingKind::Http));
        };
        self.check_url(url).map_err(CannotCarry::Target)?;
        if let Some(h) = hmac {
            B64.decode(h.nonce.trim())
                .map_err(|_| CannotCarry::Target("hmac.nonce is not valid base64".to_owned()))?;
        }
        Ok(())
    }

    fn refused_target(&self, target: &DeviceBinding) -> Option<super::RefusedTarget> {
        let DeviceBinding::Http { url, .. } = target else {
            return None;
        };
        let ip = self.policy.refused_literal(url.url())?;
        Some(super::RefusedTarget {
            field: "url",
            reason: TargetRefused::literal(ip, "bindings.http").to_string(),
        })
    }

    fn deliver(&self, d: Delivery) -> futures_util::future::BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let outcome = self.send(&d).await;
            let class = outcome.label();
            self.requests.with_label_values(&[class]).inc();
            self.latency
                .with_label_values(&[class])
                .observe(start.elapsed().as_secs_f64());
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(classify(204, None).label(), "delivered");
        assert_eq!(
            classify(503, Some(Duration::from_secs(1))),
            Outcome::Transient {
                reason: "HTTP 503".into(),
                retry_after: Some(Duration::from_secs(1))
            }
        );
        assert_eq!(classify(429, None).label(), "transient");
        assert_eq!(classify(408, None).label(), "transient");
        assert_eq!(classify(400, None).label(), "permanent");
        assert_eq!(classify(404, None).label(), "permanent");
        assert_eq!(classify(301, None).label(), "permanent");
    }

    #[test]
    fn ota_http_nested_message() {
        let e = encode(HttpFraming::OtaHttp, None, ContentType::DmXml, b"<SyncML/>").unwrap();
        assert_eq!(e.content_type, "application/http");
        assert_eq!(
            e.headers,
            vec![("X-Wap-Push-OTA-Version".to_owned(), "1.0".to_owned())]
        );
        assert_eq!(
            &e.body[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.syncml.dm+xml\r\nContent-Length: 9\r\nX-Wap-Application-Id: x-wap-application:syncml.dm\r\n\r\n<SyncML/>"
        );
    }
}
