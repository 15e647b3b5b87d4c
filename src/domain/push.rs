//! A push's life: its states and the late results (receipts) that finish it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::binding::BindingKind;

/// Default of `bindings.wap.receipt_hold_seconds` (DESIGN §10.1).
pub const DEFAULT_RECEIPT_HOLD: std::time::Duration = std::time::Duration::from_secs(120);

/// Push states (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushState {
    Queued,
    Sending,
    Accepted,
    Delivered,
    RetryWait,
    Failed,
    Expired,
    Cancelled,
    Superseded,
    /// Final: the next hop took the push and no confirmation can come (UDP datagram, SMS
    /// without a receipt request, SIP `202`) or none came within `expires_at` +
    /// `queue.receipt_grace_seconds` (DESIGN §10.1). A late receipt still moves it to
    /// `delivered` / `failed`.
    Unconfirmed,
}

impl PushState {
    pub const ALL: [PushState; 10] = [
        Self::Queued,
        Self::Sending,
        Self::Accepted,
        Self::Delivered,
        Self::RetryWait,
        Self::Failed,
        Self::Expired,
        Self::Cancelled,
        Self::Superseded,
        Self::Unconfirmed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Accepted => "accepted",
            Self::Delivered => "delivered",
            Self::RetryWait => "retry_wait",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
            Self::Unconfirmed => "unconfirmed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Final states: no attempt will be made any more. They never change again, except that a
    /// late receipt moves `unconfirmed` to `delivered` / `failed` (DESIGN §10.1).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Delivered
                | Self::Failed
                | Self::Expired
                | Self::Cancelled
                | Self::Superseded
                | Self::Unconfirmed
        )
    }
}

impl fmt::Display for PushState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A next-hop reference: the id the next hop gave one message (e.g. an SMPP `message_id`, one per
/// SMS segment), valid only within the `account` that issued it (`[[bindings.wap.smsc]] name`).
/// SMSCs reuse ids and number them per account, so the account is part of the key (DESIGN §10.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHopRef {
    pub account: String,
    pub id: String,
}

impl NextHopRef {
    pub fn new(account: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            id: id.into(),
        }
    }
}

/// `account:id`, the form logs and tests use.
impl fmt::Display for NextHopRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.account, self.id)
    }
}

/// Compares with the `account:id` text form.
impl PartialEq<str> for NextHopRef {
    fn eq(&self, other: &str) -> bool {
        other
            .split_once(':')
            .is_some_and(|(a, i)| a == self.account && i == self.id)
    }
}

impl PartialEq<&str> for NextHopRef {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for NextHopRef {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

/// A late result for a push that was `accepted` (or already `unconfirmed`): correlated by
/// `(binding, reference)` with the `refs` of the `Outcome::Accepted`.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    pub binding: BindingKind,
    pub reference: NextHopRef,
    /// `true` delivered, `false` failed at the far end.
    pub delivered: bool,
    pub detail: String,
    /// How long the store keeps this receipt when no push holds its reference yet (it overtook
    /// its `submit_sm_resp`): `bindings.wap.receipt_hold_seconds`. Past that it is dropped and
    /// never settles a push that receives the id later.
    pub hold: std::time::Duration,
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
