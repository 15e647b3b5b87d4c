//! Delivery bindings: one module per way of reaching a device (DESIGN §6).
//!
//! Every binding has the same anatomy — **config → encode → transport → outcome** — and the same
//! contract with the queue:
//!
//! * it never touches the store; it gets a [`Delivery`] (everything it needs, already decided by
//!   the queue) and answers with one [`Outcome`];
//! * results that arrive later (SMPP delivery receipts, SIP 202 follow-ups) are sent as
//!   [`Receipt`]s on the channel in [`BindingContext`]; the queue correlates them durably;
//! * it registers its own Prometheus metrics in [`BindingContext::registry`].

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub mod http;
pub mod obex;
pub mod sip;
pub mod wap;

/// The four ways of reaching a device (DESIGN §2 conformance table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BindingKind {
    Http,
    Obex,
    Sip,
    Wap,
}

impl BindingKind {
    pub const ALL: [BindingKind; 4] = [Self::Wap, Self::Sip, Self::Http, Self::Obex];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Obex => "obex",
            Self::Sip => "sip",
            Self::Wap => "wap",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for BindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WAP bearer for a `wap` device binding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WapBearer {
    #[default]
    Sms,
    Udp,
}

/// `direct` body, or Push OTA's nested `application/http` message (DESIGN §6.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HttpFraming {
    #[default]
    Direct,
    OtaHttp,
}

/// `x-syncml-hmac` credentials of an HTTP device binding. The password is a secret: it is
/// stored, never returned by the API and never logged (see the manual `Debug`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HmacCredentials {
    pub username: String,
    pub password: String,
    /// The device-issued NextNonce, base64 (decoded before hashing, protocol-facts §H.7).
    pub nonce: String,
}

impl fmt::Debug for HmacCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("nonce", &"<redacted>")
            .finish()
    }
}

/// One way of reaching one device, with its address. This is the JSON object in a device's
/// `bindings` array (DESIGN §5); the API validates it before it is stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum DeviceBinding {
    Wap {
        /// E.164 number for the SMS bearer (`+` and 7–15 digits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        msisdn: Option<String>,
        #[serde(default)]
        bearer: WapBearer,
        /// `ip:port` for the UDP bearer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Secure connectionless push (port 2949, WTLS). Refused: see docs/decisions.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        secure: bool,
    },
    Sip {
        /// Address of record, `sip:`, `sips:` or `tel:`.
        uri: String,
        /// Globally routable UA URI (RFC 5627); used as Request-URI when present.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gruu: Option<String>,
    },
    Http {
        url: String,
        #[serde(default)]
        framing: HttpFraming,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hmac: Option<HmacCredentials>,
    },
    Obex {
        /// Relay `host:port`.
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
}

impl DeviceBinding {
    pub fn kind(&self) -> BindingKind {
        match self {
            Self::Wap { .. } => BindingKind::Wap,
            Self::Sip { .. } => BindingKind::Sip,
            Self::Http { .. } => BindingKind::Http,
            Self::Obex { .. } => BindingKind::Obex,
        }
    }

    /// The same binding with every secret removed, for API responses and logs.
    pub fn redacted(&self) -> Self {
        let mut b = self.clone();
        match &mut b {
            Self::Http { hmac, .. } => {
                if let Some(h) = hmac {
                    h.password.clear();
                    h.nonce.clear();
                }
            }
            Self::Obex { password, .. } => {
                if password.is_some() {
                    *password = Some(String::new());
                }
            }
            Self::Wap { .. } | Self::Sip { .. } => {}
        }
        b
    }
}

impl fmt::Debug for DeviceBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Derive-free so that a password can never reach a log through `{:?}`.
        match self.redacted() {
            Self::Wap {
                msisdn,
                bearer,
                address,
                secure,
            } => f
                .debug_struct("Wap")
                .field("msisdn", &msisdn)
                .field("bearer", &bearer)
                .field("address", &address)
                .field("secure", &secure)
                .finish(),
            Self::Sip { uri, gruu } => f
                .debug_struct("Sip")
                .field("uri", &uri)
                .field("gruu", &gruu)
                .finish(),
            Self::Http { url, framing, hmac } => f
                .debug_struct("Http")
                .field("url", &url)
                .field("framing", &framing)
                .field("hmac_user", &hmac.map(|h| h.username))
                .finish(),
            Self::Obex { address, .. } => {
                f.debug_struct("Obex").field("address", &address).finish()
            }
        }
    }
}

/// Media types of a DM push payload (seed §5; WSP well-known codes in protocol-facts §A.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ContentType {
    #[serde(rename = "application/vnd.syncml.dm+xml")]
    DmXml,
    #[serde(rename = "application/vnd.syncml.dm+wbxml")]
    DmWbxml,
    #[serde(rename = "application/vnd.syncml.notification")]
    Notification,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DmXml => "application/vnd.syncml.dm+xml",
            Self::DmWbxml => "application/vnd.syncml.dm+wbxml",
            Self::Notification => "application/vnd.syncml.notification",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        // Media types are case-insensitive (RFC 9110 §8.3.1); parameters are ignored.
        let essence = s.split(';').next().unwrap_or("").trim();
        [Self::DmXml, Self::DmWbxml, Self::Notification]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(essence))
    }
}

/// Everything a binding needs for one attempt. Built by the queue from the stored push.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub push_id: String,
    pub tenant: String,
    /// Registered device id, when the push names one (inline bindings have none).
    pub device_id: Option<String>,
    pub target: DeviceBinding,
    pub content_type: ContentType,
    pub body: Bytes,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The push's TTL end; a binding derives e.g. the SMPP validity period from it.
    pub expires_at: OffsetDateTime,
    pub now: OffsetDateTime,
}

/// Result of one delivery attempt (DESIGN §3: every outcome is one of these four, with a reason).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The device (or its agent) confirmed receipt.
    Delivered { detail: String },
    /// The next hop took it; a [`Receipt`] will finish it. `refs` are next-hop ids (e.g. one SMPP
    /// message id per SMS segment) that receipts are correlated with. Empty `refs` means no receipt
    /// will come and the push stays `accepted` (final for reporting purposes after TTL).
    Accepted { detail: String, refs: Vec<String> },
    /// Try again later (at the earliest after `retry_after` when the peer said so).
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Do not retry on this binding. Under `auto` the queue falls back to the device's next binding.
    Permanent { reason: String },
    /// This binding cannot carry this payload to this target (e.g. too many SMS segments); the
    /// queue falls back to the next binding under `auto`, otherwise fails the push.
    Unsupported { reason: String },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Accepted { .. } => "accepted",
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } => "permanent",
            Self::Unsupported { .. } => "unsupported",
        }
    }
}

/// A late result for a push that was `accepted`: correlated by `(binding, reference)` with the
/// `refs` of the [`Outcome::Accepted`].
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    pub binding: BindingKind,
    pub reference: String,
    /// `true` delivered, `false` failed at the far end.
    pub delivered: bool,
    pub detail: String,
    /// Told once the receipt is committed (or could not be): a binding whose peer redelivers
    /// unacknowledged receipts (SMPP) acknowledges only then, so a crash loses none.
    pub ack: Option<ReceiptAck>,
}

/// The committed-or-not signal of one [`Receipt`]. Cloning shares it; the first
/// [`ReceiptAck::done`] wins. Dropped without `done`, the waiting side sees a failure.
#[derive(Clone, Default)]
pub struct ReceiptAck(std::sync::Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<bool>>>>);

impl ReceiptAck {
    /// A signal and the receiver that learns `true` (committed) or `false` (not recorded).
    pub fn new() -> (Self, tokio::sync::oneshot::Receiver<bool>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Self(std::sync::Arc::new(std::sync::Mutex::new(Some(tx)))),
            rx,
        )
    }

    pub fn done(&self, committed: bool) {
        let tx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(committed);
        }
    }
}

impl std::fmt::Debug for ReceiptAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptAck")
    }
}

impl PartialEq for ReceiptAck {
    /// Receipts compare by content; the signal is not part of it.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What a binding gets at construction.
#[derive(Clone)]
pub struct BindingContext {
    pub registry: prometheus::Registry,
    pub receipts: mpsc::Sender<Receipt>,
    pub shutdown: CancellationToken,
}

/// Result of a pure check (no I/O) that a binding can carry a payload to a target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// Human-readable summary (e.g. "3 SMS segments").
    pub summary: String,
    /// Exactly what would go on the wire, one entry per unit (datagram, SMS, request), as hex.
    pub units_hex: Vec<String>,
}

/// One way of delivering. Implementations are cheap to share (`Arc<dyn Binding>`).
pub trait Binding: Send + Sync + 'static {
    fn kind(&self) -> BindingKind;

    /// Pure check used at submit time and by `/v1/pushes/preview`: would this payload fit this
    /// target? `Err` names why not (the API answers 422, or `auto` skips the binding).
    fn preview(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
    ) -> Result<Preview, String>;

    /// The cheap form of [`Binding::preview`] used on every submit: only whether the payload
    /// fits. Bindings override it when building the preview's hex is costly.
    fn check(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
    ) -> Result<(), String> {
        self.preview(target, content_type, body).map(|_| ())
    }

    /// One attempt. Must not panic on anything a peer sends; must return within a bounded time.
    fn deliver(&self, delivery: Delivery) -> futures_util::future::BoxFuture<'_, Outcome>;

    /// Readiness contribution (e.g. at least one SMSC bound). Default: ready.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The set of configured bindings, keyed by kind.
#[derive(Clone, Default)]
pub struct Bindings {
    inner: Vec<Arc<dyn Binding>>,
}

impl Bindings {
    pub fn new(list: Vec<Arc<dyn Binding>>) -> Self {
        Self { inner: list }
    }

    pub fn get(&self, kind: BindingKind) -> Option<&Arc<dyn Binding>> {
        self.inner.iter().find(|b| b.kind() == kind)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Binding>> {
        self.inner.iter()
    }
}
