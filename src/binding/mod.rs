//! Delivery bindings: one module per way of reaching a device (DESIGN §6).
//!
//! Every binding has the same anatomy — **config → encode → transport → outcome** — and the same
//! contract with the queue:
//!
//! * it never touches the store; it gets a [`Delivery`] (everything it needs, already decided by
//!   the queue) and answers with one [`Outcome`];
//! * results that arrive later (SMPP delivery receipts; a SIP `202` has none, RFC 3428 §7) are sent as
//!   [`Receipt`]s on the channel in [`BindingContext`]; the queue correlates them durably;
//! * it registers its own Prometheus metrics in [`BindingContext::registry`].

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::codec::bootstrap::Signature;
pub use crate::domain::{
    BindingKind, ContentType, DeviceBinding, HmacCredentials, HttpFraming, NextHopRef, Receipt,
    ReceiptAck, WapBearer,
};

pub mod http;
pub mod obex;
pub mod sip;
pub mod wap;

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
    /// DM bootstrap SEC/MAC (DESIGN §10.4); only bindings that [`Binding::carries_bootstrap`]
    /// are given a delivery that has one.
    pub bootstrap: Option<Signature>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The push's TTL end; a binding derives e.g. the SMPP validity period from it.
    pub expires_at: OffsetDateTime,
    pub now: OffsetDateTime,
}

/// Result of one delivery attempt: one of these five, each with a reason (DESIGN §3 names four
/// classes; `Unsupported` is a permanent failure that `auto` treats as "try the next binding").
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The device (or its agent) confirmed receipt.
    Delivered { detail: String },
    /// The next hop took it; a [`Receipt`] will finish it. `refs` are next-hop ids (e.g. one SMPP
    /// message id per SMS segment, each with its SMSC account) that receipts are correlated with.
    /// Empty `refs` means no receipt will come: the push ends `unconfirmed` at once (DESIGN §10.1).
    Accepted {
        detail: String,
        refs: Vec<NextHopRef>,
    },
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
    /// Nothing was attempted because an operator suspended every route this push could take
    /// (`POST /v1/admin/smscs/{name}/suspend`, DESIGN §10.4). The attempt is not counted: the
    /// push waits `retry_after` (or falls back under `auto`) and never fails because of it.
    Deferred {
        reason: String,
        retry_after: Duration,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Accepted { .. } => "accepted",
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } => "permanent",
            Self::Unsupported { .. } => "unsupported",
            Self::Deferred { .. } => "deferred",
        }
    }
}

/// What a binding gets at construction.
#[derive(Clone)]
pub struct BindingContext {
    pub registry: prometheus::Registry,
    pub receipts: mpsc::Sender<Receipt>,
    pub shutdown: CancellationToken,
}

/// Why a binding cannot carry a payload to a target. The API answers 422 naming it; `auto`
/// skips the binding.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CannotCarry {
    #[error("not a {0} target")]
    WrongTarget(BindingKind),
    #[error("binding {0} is not configured on this gateway")]
    NotConfigured(BindingKind),
    /// The target cannot be used by this binding as configured (no SMSC route for the number,
    /// a `tel:` URI without a SIP domain, an address outside `allow_targets`).
    #[error("{0}")]
    Target(String),
    /// The payload cannot be encoded for this binding or does not fit (SMS segments, size).
    #[error("{0}")]
    Payload(String),
}

/// Why a non-WAP binding refuses a bootstrap push.
pub const BOOTSTRAP_WAP_ONLY: &str =
    "bootstrap (SEC/MAC) can only be carried by the wap binding (WSP Content-Type parameters)";

/// Why a binding is not ready (e.g. no SMSC bound); shown per binding by `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// A target address the binding's `allow_targets` refuses (DESIGN §10.3). The API answers 422
/// naming `field` inside the binding object (`address`, `uri`, `url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedTarget {
    pub field: &'static str,
    pub reason: String,
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
    ) -> Result<Preview, CannotCarry>;

    /// The cheap form of [`Binding::preview`] used on every submit: only whether the payload
    /// fits. Bindings override it when building the preview's hex is costly.
    fn check(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
    ) -> Result<(), CannotCarry> {
        self.preview(target, content_type, body).map(|_| ())
    }

    /// Whether this binding can carry a DM bootstrap's SEC/MAC (DESIGN §10.4: only WAP push has
    /// a place for them, the WSP Content-Type parameters). `auto` skips bindings that cannot.
    fn carries_bootstrap(&self) -> bool {
        false
    }

    /// [`Binding::preview`] for a push that may be a DM bootstrap. Bindings that cannot carry
    /// one refuse it (the API answers 422 naming `bootstrap`).
    fn preview_bootstrap(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
        bootstrap: Option<&Signature>,
    ) -> Result<Preview, CannotCarry> {
        match bootstrap {
            None => self.preview(target, content_type, body),
            Some(_) => Err(CannotCarry::Payload(BOOTSTRAP_WAP_ONLY.into())),
        }
    }

    /// [`Binding::check`] for a push that may be a DM bootstrap.
    fn check_bootstrap(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
        bootstrap: Option<&Signature>,
    ) -> Result<(), CannotCarry> {
        match bootstrap {
            None => self.check(target, content_type, body),
            Some(_) if !self.carries_bootstrap() => {
                Err(CannotCarry::Payload(BOOTSTRAP_WAP_ONLY.into()))
            }
            Some(_) => self
                .preview_bootstrap(target, content_type, body, bootstrap)
                .map(|_| ()),
        }
    }

    /// Pure check of a target's **literal** addresses against this binding's `allow_targets`,
    /// used at registration and submit; names are checked after DNS at send time. Default:
    /// nothing to check.
    fn refused_target(&self, _target: &DeviceBinding) -> Option<RefusedTarget> {
        None
    }

    /// One attempt. Must not panic on anything a peer sends; must return within a bounded time.
    fn deliver(&self, delivery: Delivery) -> futures_util::future::BoxFuture<'_, Outcome>;

    /// Bearer health (e.g. at least one SMSC bound), reported by `/readyz` per binding but not
    /// fatal to readiness (DESIGN §10.4). Default: ready.
    fn ready(&self) -> Result<(), NotReady> {
        Ok(())
    }

    /// Operational state for `GET /v1/admin/status` (per SMSC: bound, window in use, …).
    /// Never contains secrets. Default: nothing beyond the outcome counts the API adds.
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Suspends or resumes the transport account `name` (an SMSC). `None` when this binding has
    /// no account of that name.
    fn set_suspended(&self, _name: &str, _suspended: bool) -> Option<()> {
        None
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
