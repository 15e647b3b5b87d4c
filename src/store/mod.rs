//! Durable state: devices, pushes, their event timelines, idempotency keys and next-hop references.
//!
//! One [`Store`] trait, two implementations ([`sqlite`] default, [`postgres`] for several replicas),
//! one conformance suite (`tests/store_conformance.rs`) that runs unchanged against both.
//!
//! Invariants every implementation keeps (DESIGN §3, §7):
//! * [`Store::enqueue`] returns only after the push is committed (fsync'd); implementations batch
//!   concurrent enqueues into one transaction (group commit) so that durability scales.
//! * A push is held by at most one lease owner at a time; a lease that expires makes the push
//!   claimable again (takeover), and a [`Completion`] from an owner that lost its lease is ignored.
//! * Every state transition writes an event row in the same transaction as the state change.
//! * Times are Unix milliseconds supplied by the caller (the queue owns the clock).

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use crate::domain::{BindingKind, ContentType, DeviceBinding, Receipt};
pub use crate::domain::{Device, DmCredentials, PushState};

mod device_cache;
pub mod postgres;
pub mod sqlite;

pub use device_cache::{DeviceCache, Ticket as DeviceCacheTicket};

/// A validated push, ready to be committed.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPush {
    /// UUIDv7 text: time-ordered, so listing by id is listing by submission time.
    pub id: String,
    pub tenant: String,
    pub device_id: Option<String>,
    /// Snapshot of the target's bindings at submit time (registered device or inline).
    pub bindings: Vec<DeviceBinding>,
    /// `None` = `auto` (the bindings in order, with fallback).
    pub binding_choice: Option<BindingKind>,
    pub content_type: ContentType,
    pub body: Vec<u8>,
    /// 0 normal, 1 high; claimed first.
    pub priority: i16,
    pub created_at_ms: i64,
    /// First attempt not before this time (defaults to `created_at_ms`).
    pub not_before_ms: i64,
    pub expires_at_ms: i64,
    pub max_attempts: u32,
    pub idempotency_key: Option<String>,
    /// Hash of the request body, compared when an idempotency key is replayed.
    pub request_hash: Option<String>,
    pub collapse_key: Option<String>,
    pub callback_url: Option<String>,
}

/// Result of [`Store::enqueue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Committed as a new push.
    Created { id: String },
    /// Same idempotency key and same request: the earlier push.
    Replayed { id: String, state: PushState },
    /// Same idempotency key, different request.
    KeyConflict { id: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PushEvent {
    pub at_ms: i64,
    pub state: PushState,
    pub binding: Option<BindingKind>,
    pub attempt: u32,
    pub detail: String,
}

/// A push as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct PushRecord {
    pub id: String,
    pub tenant: String,
    pub device_id: Option<String>,
    pub state: PushState,
    pub binding_choice: Option<BindingKind>,
    /// The binding of the latest attempt, if any.
    pub last_binding: Option<BindingKind>,
    pub attempts: u32,
    pub priority: i16,
    pub content_type: ContentType,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub not_before_ms: i64,
    pub expires_at_ms: i64,
    pub collapse_key: Option<String>,
    pub idempotency_key: Option<String>,
    /// Filled by [`Store::get_push`]; empty in listings.
    pub events: Vec<PushEvent>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushFilter {
    pub device: Option<String>,
    pub state: Option<PushState>,
    /// Cursor: only pushes with an id lower than this one (listing is newest first).
    pub before: Option<String>,
    pub limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelResult {
    Cancelled,
    NotFound,
    /// Already handed on (or final): the current state.
    TooLate(PushState),
}

/// A push leased to one worker for one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    pub id: String,
    pub tenant: String,
    pub device_id: Option<String>,
    pub bindings: Vec<DeviceBinding>,
    pub binding_choice: Option<BindingKind>,
    /// Position in `bindings` for `auto` (advanced by fallback).
    pub binding_index: u32,
    pub content_type: ContentType,
    pub body: Vec<u8>,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    pub max_attempts: u32,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub callback_url: Option<String>,
}

/// What an attempt led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Next hop took it; receipts correlate by these references.
    Accepted {
        refs: Vec<String>,
    },
    RetryAt {
        at_ms: i64,
    },
    /// Under `auto`: go on with the binding at this index, immediately.
    Fallback {
        binding_index: u32,
    },
    Failed,
    Expired,
    /// Graceful shutdown: give the lease back without counting the attempt.
    Release,
}

/// The durable record of one attempt's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub push_id: String,
    /// Lease owner; the completion is ignored when this owner no longer holds the lease.
    pub owner: String,
    pub attempt: u32,
    pub binding: Option<BindingKind>,
    pub at_ms: i64,
    pub next: Next,
    pub detail: String,
}

/// What a receipt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiptEffect {
    /// The reference is not (yet) known; the receipt is kept and applied when the push's
    /// `Accepted` completion arrives (receipts can overtake it).
    Pending,
    /// Recorded; the push still waits for other references (multi-part SMS).
    Partial { push_id: String },
    /// The push reached this final state.
    Finished { push_id: String, state: PushState },
    /// The push was already final (duplicate receipt); nothing changed.
    Ignored { push_id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data could not be read: {0}")]
    Decode(String),
    #[error("store is shutting down")]
    Closed,
    #[error("unsupported store url {0:?} (expected sqlite:// or postgres://)")]
    Url(String),
}

impl StoreError {
    /// Worth retrying (connection trouble, busy database) rather than a bug or bad data.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Database(_)
            ),
            Self::Closed => true,
            Self::Migrate(_) | Self::Decode(_) | Self::Url(_) => false,
        }
    }
}

/// Connection settings shared by both implementations (`[store]` in the config).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreOptions {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    /// Connections for reads (and, on PostgreSQL, writes).
    pub max_connections: u32,
    /// Most pushes committed in one group-commit transaction.
    pub max_batch: usize,
    /// Run embedded migrations at start-up (`dmpushd serve`); `dmpushd migrate` always does.
    pub auto_migrate: bool,
    /// Seconds to wait for a busy database / a pool connection.
    pub busy_timeout_secs: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            url: "sqlite://data/dmpushd.db".into(),
            max_connections: 8,
            max_batch: 512,
            auto_migrate: true,
            busy_timeout_secs: 10,
        }
    }
}

/// The durable queue and registry.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip to the database (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Create or replace; `true` when created.
    async fn put_device(&self, device: &Device) -> Result<bool, StoreError>;
    async fn get_device(&self, tenant: &str, id: &str) -> Result<Option<Device>, StoreError>;
    async fn delete_device(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;
    /// Ordered by id; only ids greater than `after`.
    async fn list_devices(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Device>, StoreError>;

    /// Commits a push (with idempotency and collapse handling) before returning.
    async fn enqueue(&self, push: NewPush) -> Result<Enqueued, StoreError>;
    async fn get_push(&self, tenant: &str, id: &str) -> Result<Option<PushRecord>, StoreError>;
    async fn list_pushes(
        &self,
        tenant: &str,
        filter: &PushFilter,
    ) -> Result<Vec<PushRecord>, StoreError>;
    /// Cancels a push that is `queued` or `retry_wait`.
    async fn cancel(&self, tenant: &str, id: &str, now_ms: i64)
    -> Result<CancelResult, StoreError>;

    /// Leases up to `limit` due pushes (queued/retry_wait with `next_attempt_at <= now` and not
    /// expired, or `sending` with an expired lease), highest priority first, counting an attempt.
    async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// Records attempt outcomes (batched: one transaction for the lot).
    async fn complete(&self, batch: Vec<Completion>) -> Result<(), StoreError>;
    /// Extends the leases `owner` still holds on `ids`.
    async fn renew(&self, owner: &str, ids: &[String], until_ms: i64) -> Result<(), StoreError>;
    /// Moves pushes that are waiting (queued/retry_wait) and past their TTL to `expired`.
    async fn expire(&self, now_ms: i64, limit: u32) -> Result<u64, StoreError>;
    /// Applies delivery receipts in one transaction, in order; one effect per receipt, in the
    /// same order (see [`ReceiptEffect`]). One commit for a burst of receipts: applied one by
    /// one, an SMSC's receipts cost an fsync each.
    async fn apply_receipts(
        &self,
        receipts: &[Receipt],
        now_ms: i64,
    ) -> Result<Vec<ReceiptEffect>, StoreError>;
    /// Applies one delivery receipt.
    async fn apply_receipt(
        &self,
        receipt: &Receipt,
        now_ms: i64,
    ) -> Result<ReceiptEffect, StoreError> {
        self.apply_receipts(std::slice::from_ref(receipt), now_ms)
            .await?
            .pop()
            .ok_or(StoreError::Closed)
    }
    /// Earliest `next_attempt_at` among waiting pushes (for the dispatcher's sleep).
    async fn next_due(&self) -> Result<Option<i64>, StoreError>;
    /// Number of pushes per state.
    async fn queue_depth(&self) -> Result<Vec<(PushState, u64)>, StoreError>;

    /// Pushes `owner` currently holds a lease on (`sending`), for a per-replica gauge.
    /// Default 0 for stores that do not track it.
    async fn leases_held(&self, _owner: &str) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Signalled when new work may be due (local enqueue; PostgreSQL also on NOTIFY from other
    /// replicas). The dispatcher also polls, so a lost signal only delays.
    fn wakeup(&self) -> Arc<tokio::sync::Notify>;
}

/// Opens the store named by `opts.url`, running migrations when `opts.auto_migrate`.
pub async fn open(opts: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    let url = opts.url.as_str();
    if url.starts_with("sqlite:") {
        sqlite::open(opts).await
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        postgres::open(opts).await
    } else {
        Err(StoreError::Url(url.to_owned()))
    }
}

/// Runs the embedded migrations for the store named by `opts.url` (`dmpushd migrate`).
pub async fn migrate(opts: &StoreOptions) -> Result<(), StoreError> {
    let mut opts = opts.clone();
    opts.auto_migrate = true;
    open(&opts).await.map(|_| ())
}

/// Column decoders shared by both implementations: stored text back into domain types.
pub(crate) fn parse_state(s: &str) -> Result<PushState, StoreError> {
    PushState::parse(s).ok_or_else(|| StoreError::Decode(format!("unknown push state {s:?}")))
}

pub(crate) fn parse_content_type(s: &str) -> Result<ContentType, StoreError> {
    ContentType::parse(s).ok_or_else(|| StoreError::Decode(format!("unknown content type {s:?}")))
}

/// `what` names the column for the error message.
pub(crate) fn parse_binding(
    s: Option<String>,
    what: &str,
) -> Result<Option<BindingKind>, StoreError> {
    s.map(|s| {
        BindingKind::parse(&s)
            .ok_or_else(|| StoreError::Decode(format!("{what}: unknown binding {s:?}")))
    })
    .transpose()
}

/// JSON helpers shared by both implementations (bindings and credentials are stored as JSON).
pub fn to_json<T: Serialize>(v: &T) -> String {
    // Serialising these plain data types cannot fail (no maps with non-string keys).
    serde_json::to_string(v).unwrap_or_default()
}

pub fn from_json<T: for<'de> Deserialize<'de>>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Decode(format!("{what}: {e}")))
}
