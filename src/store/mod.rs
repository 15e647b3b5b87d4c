//! Durable state: devices, pushes, their event timelines, idempotency keys and next-hop references.
//!
//! One [`Store`] trait, two implementations ([`sqlite`] default, [`postgres`] for several replicas),
//! one conformance suite (`tests/it/store_conformance.rs`) that runs unchanged against both.
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

pub use crate::codec::bootstrap::Signature;
use crate::domain::{BindingKind, ContentType, DeviceBinding, NextHopRef, Receipt};
pub use crate::domain::{Device, DmCredentials, PushState};

mod device_cache;
pub mod outbox;
pub mod postgres;
mod rules;
pub mod sqlite;

pub use device_cache::{DeviceCache, Ticket as DeviceCacheTicket};

/// How many pushes a claim may take, asked when it runs ([`Store::claim_room`]); called on
/// the store's own thread, so it must not block.
pub type ClaimRoom = Arc<dyn Fn() -> u32 + Send + Sync>;

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
    /// DM bootstrap SEC/MAC for the WSP content type (WAP only; DESIGN §10.4).
    pub bootstrap: Option<Signature>,
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
    /// DM bootstrap SEC/MAC (only the WAP binding carries it; `auto` skips the others).
    pub bootstrap: Option<Signature>,
    /// The owner whose lease this claim took over (it expired, or its replica was declared dead,
    /// or the process restarted on the same SQLite file): the previous attempt may have reached
    /// the device, so this one can be a duplicate. `None` for a push that was waiting.
    pub taken_over_from: Option<String>,
}

/// A push as it was right after one of its events: `GET /v1/pushes/{id}` at that moment (the
/// timeline up to `seq`, with that row's state and time). What a webhook reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsOf<'a> {
    pub tenant: &'a str,
    pub push_id: &'a str,
    /// `i64::MAX`: as of now.
    pub seq: i64,
}

/// Each key's push from the rows a store read for a whole batch: `pushes` the current rows (any
/// order), `events` the rows `(push_id, seq, event)` of those pushes, in `seq` order per push.
/// `None` where the push is gone or belongs to another tenant. Two reads per batch rather than
/// two per push (the webhook sender's payloads: `Outbox::pushes_as_of`).
pub fn assemble_as_of(
    keys: &[AsOf<'_>],
    pushes: Vec<PushRecord>,
    events: Vec<(String, i64, PushEvent)>,
) -> Vec<Option<PushRecord>> {
    let pushes: std::collections::HashMap<&str, &PushRecord> =
        pushes.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut timelines: std::collections::HashMap<&str, Vec<(i64, &PushEvent)>> =
        std::collections::HashMap::new();
    for (push_id, seq, event) in &events {
        timelines
            .entry(push_id.as_str())
            .or_default()
            .push((*seq, event));
    }
    keys.iter()
        .map(|k| {
            let push = pushes.get(k.push_id).filter(|p| p.tenant == k.tenant)?;
            let mut rec = (*push).clone();
            for (seq, event) in timelines.get(k.push_id).into_iter().flatten() {
                if *seq > k.seq {
                    break;
                }
                if *seq == k.seq {
                    rec.state = event.state;
                    rec.updated_at_ms = event.at_ms;
                }
                rec.events.push((*event).clone());
            }
            Some(rec)
        })
        .collect()
}

/// The detail of the `sending` event a takeover writes on the push (both stores write exactly
/// this text; PostgreSQL builds it in SQL with `format()`, and the conformance suite compares).
pub fn takeover_detail(previous_owner: &str, previous_attempt: u32, owner: &str) -> String {
    format!(
        "lease of {previous_owner} ended with attempt {previous_attempt} unfinished: taken over by \
         {owner}; the device may receive this push twice"
    )
}

/// What an attempt led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Next hop took it; receipts correlate by these references. Without references (or
    /// without a binding to name them) no receipt can come: the push ends `unconfirmed`.
    Accepted {
        refs: Vec<NextHopRef>,
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
    /// Nothing was attempted (every route suspended by an operator): wait in `retry_wait` until
    /// `at_ms` without counting the attempt.
    Defer {
        at_ms: i64,
    },
    /// Per-tenant fairness (DESIGN §10.3): the push was claimed while its tenant was at
    /// `queue.tenant_max_inflight` or its target had no free slot; it goes back to `queued`,
    /// due at `at_ms`, without counting an attempt and without an event.
    Requeue {
        at_ms: i64,
    },
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
    /// A failed receipt under `auto`: the push goes on with its next binding (`queued`).
    FellBack { push_id: String, binding_index: u32 },
}

impl ReceiptEffect {
    /// The `effect` label of `dmpushd_receipts_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Partial { .. } => "partial",
            Self::Finished { .. } => "finished",
            Self::Ignored { .. } => "ignored",
            Self::FellBack { .. } => "fell_back",
        }
    }
}

/// The `effect` label of `dmpushd_receipts_total` for receipts that no push claimed within
/// their hold window and that the housekeeper deleted.
pub const RECEIPT_ORPHAN_DROPPED: &str = "orphan_dropped";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From the connection of SQLite's hot write transactions (`store/sqlite/hot.rs`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The thread of SQLite's hot write transactions could not start or failed.
    #[error("SQLite writer: {0}")]
    Writer(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data could not be read: {0}")]
    Decode(String),
    /// A group-commit transaction failed; every push of the batch gets this (the cause cannot
    /// be cloned), classified as the cause was.
    #[error("commit failed: {message}")]
    GroupCommit { message: String, transient: bool },
    #[error("store is shutting down")]
    Closed,
    /// A SQLite file has one owner process (DESIGN §10.1); another one holds it.
    #[error(
        "SQLite database {path} is owned by another dmpushd process ({holder}); one process per \
         database file: stop that one first, or use PostgreSQL to run several replicas"
    )]
    Owned { path: String, holder: String },
    #[error("cannot lock the SQLite database {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("unsupported store url {0:?} (expected sqlite:// or postgres://)")]
    Url(String),
}

impl StoreError {
    /// Worth retrying (connection trouble, a busy or shutting-down database) rather than a bug or
    /// bad data. The API answers a transient error with 503 (retry later) and any other with 500;
    /// the dispatcher retries only transient ones.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => sqlx_is_transient(e),
            Self::Sqlite(e) => rusqlite_is_transient(e),
            Self::GroupCommit { transient, .. } => *transient,
            Self::Closed => true,
            Self::Migrate(_)
            | Self::Decode(_)
            | Self::Writer(_)
            | Self::Url(_)
            | Self::Owned { .. }
            | Self::Lock { .. } => false,
        }
    }
}

fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => database_is_transient(db.as_ref()),
        // Protocol, decode, configuration, TLS set-up, missing rows or columns: retrying the
        // same statement gives the same answer.
        _ => false,
    }
}

fn rusqlite_is_transient(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            sqlite_code_is_transient(i64::from(f.extended_code))
        }
        _ => false,
    }
}

/// An error the database returned. A constraint violation is the request's or our fault, never
/// the database's condition; otherwise the driver's code tells.
fn database_is_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    if db.kind() != sqlx::error::ErrorKind::Other {
        return false; // unique / foreign-key / not-null / check / exclusion violation
    }
    let Some(code) = db.code() else { return false };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLite reports its (extended) result code as a decimal number.
        return code.parse::<i64>().is_ok_and(sqlite_code_is_transient);
    }
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return sqlstate_is_transient(&code);
    }
    false
}

/// SQLite result codes (<https://www.sqlite.org/rescode.html>); extended codes carry the
/// primary code in their low byte. BUSY (5), LOCKED (6), IOERR (10), FULL (13) and CANTOPEN (14)
/// are conditions of the moment; everything else (ERROR 1, CORRUPT 11, CONSTRAINT 19,
/// MISMATCH 20, …) repeats on retry.
fn sqlite_code_is_transient(code: i64) -> bool {
    matches!(code & 0xff, 5 | 6 | 10 | 13 | 14)
}

/// PostgreSQL SQLSTATE (PostgreSQL docs, Appendix A): class 08 connection exception, 40
/// transaction rollback (serialization failure, deadlock), 53 insufficient resources, 57
/// operator intervention (shutdown, statement cancelled), 58 system error, and 55P03
/// lock_not_available. Classes 22 (data), 23 (integrity), 42 (syntax, undefined object) and the
/// rest are permanent.
fn sqlstate_is_transient(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")) || code == "55P03"
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
    /// Final pushes whose last change (`updated_at`) is older than this are deleted with their
    /// events and next-hop references (DESIGN §10.1); `GET` then answers 404.
    pub retention_seconds: u64,
    /// How often the purge runs (each run deletes in small batches until nothing is left).
    pub purge_interval_seconds: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            url: "sqlite://data/dmpushd.db".into(),
            max_connections: 8,
            max_batch: 512,
            auto_migrate: true,
            busy_timeout_secs: 10,
            retention_seconds: 2_592_000, // 30 days
            purge_interval_seconds: 300,
        }
    }
}

/// One replica registered in a shared store (admin status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplicaInfo {
    pub id: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
}

/// Whether every migration of `migrator` is recorded as applied in `applied` (versions of
/// successful rows of sqlx's `_sqlx_migrations`).
pub(crate) fn all_applied(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> bool {
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| applied.contains(&m.version))
}

/// The durable queue and registry.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip to the database (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether every migration this build embeds is applied (readiness, DESIGN §10.4: a replica
    /// started with `auto_migrate = false` before `dmpushd migrate` ran is not ready).
    async fn migrations_current(&self) -> Result<bool, StoreError>;

    /// The replicas sharing this store with their heartbeats (PostgreSQL `replicas` table);
    /// empty where one process owns the store (SQLite).
    async fn replicas(&self) -> Result<Vec<ReplicaInfo>, StoreError> {
        Ok(Vec::new())
    }

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
    /// Taking over an expired lease writes a `sending` event ([`takeover_detail`]) in the same
    /// transaction and sets [`Claimed::taken_over_from`].
    async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// [`claim`](Self::claim) with its limit asked of `room` when the claim runs rather than
    /// when it is asked for. A store whose writes queue (SQLite's one writer) may run a claim
    /// milliseconds later, while attempts that ended meanwhile freed room: sized when issued,
    /// claims alternated big and small, each small one costing a whole writer transaction
    /// (docs/PERFORMANCE.md §6, tenth pass). `room` is called once; at 0 nothing is claimed.
    async fn claim_room(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        room: ClaimRoom,
    ) -> Result<Vec<Claimed>, StoreError> {
        match room() {
            0 => Ok(Vec::new()),
            limit => self.claim(owner, now_ms, lease, limit).await,
        }
    }
    /// Records attempt outcomes (batched: one transaction for the lot).
    async fn complete(&self, batch: Vec<Completion>) -> Result<(), StoreError>;
    /// Extends the leases `owner` still holds on `ids`.
    async fn renew(&self, owner: &str, ids: &[String], until_ms: i64) -> Result<(), StoreError>;
    /// Moves pushes that are waiting (queued/retry_wait) and past their TTL to `expired`.
    async fn expire(&self, now_ms: i64, limit: u32) -> Result<u64, StoreError>;
    /// Moves up to `limit` `accepted` pushes whose `expires_at + grace_ms` passed without a
    /// receipt to `unconfirmed` (with an event). Their references stay, so that a late receipt
    /// still settles them (DESIGN §10.1).
    async fn unconfirm(&self, now_ms: i64, grace_ms: i64, limit: u32) -> Result<u64, StoreError>;
    /// Deletes up to `limit` orphan receipts (no push holds their reference) whose hold window
    /// ended before `now_ms`; returns how many, per binding, for the receipts counter.
    async fn drop_orphan_receipts(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<(BindingKind, u64)>, StoreError>;
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

    /// Deletes up to `limit` final pushes (see [`PushState::is_final`]) last changed before
    /// `before_ms`, with their events and next-hop references, in one transaction; returns how
    /// many pushes it deleted. Never touches a push that is not final. Callers loop in small
    /// batches so that enqueues (which share the writer) wait at most one batch.
    async fn purge(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError>;

    /// Start-up of the serving process whose lease owner id is `owner`, before it claims.
    /// SQLite (one owner process per file, see [`sqlite`]): every lease an earlier process left
    /// is made claimable at once. PostgreSQL: registers the replica (first heartbeat) and makes
    /// claimable the leases an earlier process with the same id left. Returns how many leases
    /// were taken back; the claims that follow write the takeover events.
    async fn start_replica(&self, owner: &str, now_ms: i64) -> Result<u64, StoreError>;

    /// Liveness of a replica sharing the store (PostgreSQL); a no-op where one process owns the
    /// store.
    async fn heartbeat(&self, _owner: &str, _now_ms: i64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Declares dead every replica whose last heartbeat is older than `dead_before_ms`, and
    /// makes the leases they hold claimable now (the claims that follow write the takeover
    /// events). Returns how many leases it freed. A no-op where one process owns the store.
    async fn sweep_dead_replicas(
        &self,
        _dead_before_ms: i64,
        _now_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// A cleanly stopped replica removes its row (its leases were completed or released).
    async fn stop_replica(&self, _owner: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Pushes `owner` currently holds a lease on (`sending`), for a per-replica gauge.
    /// Default 0 for stores that do not track it.
    async fn leases_held(&self, _owner: &str) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Signalled when new work may be due (local enqueue; PostgreSQL also on NOTIFY from other
    /// replicas). The dispatcher also polls, so a lost signal only delays.
    fn wakeup(&self) -> Arc<tokio::sync::Notify>;

    /// The webhook outbox (src/store/outbox.rs), for stores that have one.
    fn outbox(&self) -> Option<&dyn outbox::Outbox> {
        None
    }

    /// How many [`Store::complete`] calls the dispatcher runs at once. One for a store with a
    /// single writer connection (more would only queue for it); more where each has its own
    /// connection and the time of a batch is mostly round trips (PostgreSQL).
    fn completion_writers(&self) -> usize {
        1
    }
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

/// The final states (a purge deletes only these), in a fixed order.
pub(crate) fn final_states() -> Vec<PushState> {
    PushState::ALL
        .into_iter()
        .filter(|s| s.is_final())
        .collect()
}

/// Column decoders shared by both implementations: stored text back into domain types.
pub(crate) fn parse_state(s: &str) -> Result<PushState, StoreError> {
    PushState::parse(s).ok_or_else(|| StoreError::Decode(format!("unknown push state {s:?}")))
}

pub(crate) fn parse_content_type(s: &str) -> Result<ContentType, StoreError> {
    ContentType::parse(s).ok_or_else(|| StoreError::Decode(format!("unknown content type {s:?}")))
}

/// The `pushes.bootstrap` column ([`Signature::to_stored`]).
pub(crate) fn parse_bootstrap(s: Option<String>) -> Result<Option<Signature>, StoreError> {
    s.map(|s| {
        // The error names the column only: the MAC is not for logs.
        Signature::from_stored(&s)
            .ok_or_else(|| StoreError::Decode("pushes.bootstrap is not SEC:MAC".into()))
    })
    .transpose()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_as_of_cuts_each_timeline_at_its_event() {
        let push = |id: &str, tenant: &str| PushRecord {
            id: id.into(),
            tenant: tenant.into(),
            device_id: None,
            state: PushState::Delivered,
            binding_choice: None,
            last_binding: None,
            attempts: 1,
            priority: 0,
            content_type: crate::domain::ContentType::Notification,
            created_at_ms: 1,
            updated_at_ms: 30,
            not_before_ms: 0,
            expires_at_ms: 100,
            collapse_key: None,
            idempotency_key: None,
            events: Vec::new(),
        };
        let ev = |at_ms, state| PushEvent {
            at_ms,
            state,
            binding: None,
            attempt: 0,
            detail: String::new(),
        };
        let events = vec![
            ("a".to_owned(), 1, ev(10, PushState::Queued)),
            ("a".to_owned(), 4, ev(20, PushState::Sending)),
            ("a".to_owned(), 6, ev(30, PushState::Delivered)),
            ("b".to_owned(), 2, ev(11, PushState::Queued)),
        ];
        let keys = [
            AsOf {
                tenant: "t",
                push_id: "a",
                seq: 4,
            },
            AsOf {
                tenant: "t",
                push_id: "b",
                seq: i64::MAX,
            },
            AsOf {
                tenant: "other",
                push_id: "a",
                seq: 6,
            },
            AsOf {
                tenant: "t",
                push_id: "gone",
                seq: 1,
            },
            AsOf {
                tenant: "t",
                push_id: "a",
                seq: 6,
            },
        ];
        let got = assemble_as_of(&keys, vec![push("b", "t"), push("a", "t")], events);
        let a4 = got[0].as_ref().expect("a as of 4");
        assert_eq!(
            (a4.state, a4.updated_at_ms, a4.events.len()),
            (PushState::Sending, 20, 2)
        );
        let b = got[1].as_ref().expect("b now");
        // As of now: the row's own state and time, the whole timeline.
        assert_eq!(
            (b.state, b.updated_at_ms, b.events.len()),
            (PushState::Delivered, 30, 1)
        );
        assert!(got[2].is_none(), "another tenant's push");
        assert!(got[3].is_none(), "a purged push");
        let a6 = got[4].as_ref().expect("a as of 6");
        assert_eq!((a6.state, a6.events.len()), (PushState::Delivered, 3));
    }

    #[test]
    fn connection_and_pool_errors_are_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        for e in [
            sqlx::Error::Io(io),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(StoreError::Database(e).is_transient());
        }
        assert!(StoreError::Closed.is_transient());
        let batch = StoreError::GroupCommit {
            message: "busy".into(),
            transient: true,
        };
        assert!(batch.is_transient());
    }

    #[test]
    fn decode_protocol_and_set_up_errors_are_permanent() {
        for e in [
            sqlx::Error::Protocol("garbage".into()),
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
            sqlx::Error::Decode("bad".into()),
        ] {
            assert!(!StoreError::Database(e).is_transient());
        }
        assert!(!StoreError::Decode("x".into()).is_transient());
        assert!(!StoreError::Url("mysql://".into()).is_transient());
        let batch = StoreError::GroupCommit {
            message: "unique".into(),
            transient: false,
        };
        assert!(!batch.is_transient());
    }

    #[test]
    fn sqlite_codes() {
        // BUSY, LOCKED, IOERR, FULL, CANTOPEN and their extended codes (BUSY_SNAPSHOT 517,
        // IOERR_FSYNC 1034).
        for code in [5, 6, 10, 13, 14, 517, 1034] {
            assert!(sqlite_code_is_transient(code), "{code}");
        }
        // ERROR, CORRUPT, CONSTRAINT, CONSTRAINT_UNIQUE (2067), MISMATCH.
        for code in [1, 11, 19, 2067, 20] {
            assert!(!sqlite_code_is_transient(code), "{code}");
        }
    }

    #[test]
    fn postgres_sqlstates() {
        // connection failure, serialization failure, deadlock, too many connections,
        // admin shutdown, lock not available.
        for code in ["08006", "40001", "40P01", "53300", "57P01", "55P03"] {
            assert!(sqlstate_is_transient(code), "{code}");
        }
        // unique, foreign key, check, invalid text, syntax error, undefined table.
        for code in ["23505", "23503", "23514", "22P02", "42601", "42P01", ""] {
            assert!(!sqlstate_is_transient(code), "{code}");
        }
    }

    /// Real errors from SQLite, classified through `sqlx::Error::Database`.
    #[tokio::test]
    async fn sqlite_constraint_violation_is_permanent_and_busy_is_transient() {
        use sqlx::{ConnectOptions, Connection, sqlite::SqliteConnectOptions};
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let mut a = opts.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, n INT CHECK (n > 0))")
            .execute(&mut a)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES ('x', 1)")
            .execute(&mut a)
            .await
            .unwrap();
        for sql in [
            "INSERT INTO t VALUES ('x', 1)",  // unique
            "INSERT INTO t VALUES ('y', 0)",  // check
            "INSERT INTO nowhere VALUES (1)", // no such table (SQLITE_ERROR)
        ] {
            let e = StoreError::from(sqlx::query(sql).execute(&mut a).await.unwrap_err());
            assert!(!e.is_transient(), "{sql}: {e}");
        }
        // A second writer while the first holds the write lock: SQLITE_BUSY.
        let mut b = opts.connect().await.unwrap();
        let mut tx = a.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES ('z', 1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let e = StoreError::from(
            sqlx::query("INSERT INTO t VALUES ('w', 1)")
                .execute(&mut b)
                .await
                .unwrap_err(),
        );
        assert!(e.is_transient(), "{e}");
        tx.rollback().await.unwrap();
    }
}
