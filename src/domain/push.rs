//! A push's life: its states and the late results (receipts) that finish it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::binding::BindingKind;

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
}

impl PushState {
    pub const ALL: [PushState; 9] = [
        Self::Queued,
        Self::Sending,
        Self::Accepted,
        Self::Delivered,
        Self::RetryWait,
        Self::Failed,
        Self::Expired,
        Self::Cancelled,
        Self::Superseded,
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
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Final states never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Failed | Self::Expired | Self::Cancelled | Self::Superseded
        )
    }
}

impl fmt::Display for PushState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
