//! SQLite store: the zero-set-up default (one file, WAL, `synchronous=FULL`).
//!
//! SQLite has one writer at a time. The writes every push makes (accepts, claims, completions,
//! receipts) run on the hot writer's connection and thread (`sqlite/hot.rs`); the rest on a
//! single-connection sqlx pool; every write on either holds `write_lock`. Reads use a separate
//! pool (WAL lets them run beside the writer). Enqueues are group-committed: a task drains every
//! request waiting on its channel into one job of the hot writer, one transaction and one fsync
//! (shared with the other jobs waiting), then answers each caller — so a `202` is durable and
//! throughput grows with concurrency instead of being capped at one fsync per push.
//!
//! **One owner process per file** (DESIGN §10.1). Opening takes an exclusive lock on
//! `<file>.lock` (`flock`, released by the kernel when the process dies, even on `kill -9`) and
//! holds it as long as the store lives; a second process on the same file fails at once with
//! [`StoreError::Owned`]. So every lease found in the file at start-up belongs to a process that
//! is gone, and [`Store::start_replica`] makes them all claimable at once instead of after
//! `queue.lease_seconds`.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use sqlx::{
    QueryBuilder, Row, Sqlite, SqlitePool, Transaction,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    AsOf, CancelResult, ClaimRoom, Claimed, Completion, Device, DeviceCache, Enqueued, NewPush,
    PushEvent, PushFilter, PushRecord, PushState, ReceiptEffect, Store, StoreError, StoreOptions,
    assemble_as_of, final_states, from_json, parse_binding, parse_content_type, parse_state, rules,
    to_json,
};
use crate::domain::{BindingKind, Receipt};

mod hot;
mod outbox;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Page cache of the single writer connection, in KiB (SQLite's default is ~2 MB). At a million
/// pushes the interior pages of `pushes` and its indexes alone are ~3 MB (`dbstat`), so with the
/// default every insert and state change re-reads them; 16 MiB holds them and the hot leaves
/// (the ends where time-ordered ids and due times append). Only the writer has it: bounded
/// memory (this much), and RSS stays within the scale target (docs/perf/scale.md).
const SQLITE_WRITER_CACHE_KIB: u64 = 16 * 1024;

// Bound limits are written `LIMIT ?n + 0` in the statements the writer runs again and again
// (claims, sweeps, the webhook claim). For a bare `LIMIT ?n` SQLite reads the bound value while
// planning and marks the statement as depending on it (`sqlite3ExprIsInteger` →
// `sqlite3VdbeSetVarmask`); re-binding that parameter then expires the statement, and sqlx
// re-binds (and clears the bindings) on every execution, so every claim was prepared again —
// `sqlite3Reprepare` was ≈ 3.4 % of the gateway under accepts (docs/perf/accept.md). An
// expression is not an integer literal, so the plan does not depend on the value.

/// The TTL sweep (`expire`). `pushes_expiry` by name, in its order: the range scan stops at the
/// first push not yet expired. Left to itself (no ANALYZE statistics) the planner took
/// `pushes_purge` for `state IN (..)` and checked `expires_at` row by row — every waiting push,
/// on the one writer connection, once a second: 0.8 s with a million waiting (EXPLAIN QUERY PLAN
/// on a 1,000,000-row database), during which no push could be accepted, claimed or completed
/// (docs/perf/scale.md).
const EXPIRE_SQL: &str = "UPDATE pushes SET state = 'expired', updated_at = ?1
     WHERE id IN (SELECT id FROM pushes INDEXED BY pushes_expiry
                  WHERE state IN ('queued', 'retry_wait') AND expires_at <= ?1
                  ORDER BY expires_at LIMIT ?2 + 0)
     RETURNING id, attempts, last_binding";

type EnqueueReply = oneshot::Sender<Result<Enqueued, StoreError>>;

pub async fn open(opts: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqliteStore::open(opts).await?))
}

pub struct SqliteStore {
    write: SqlitePool,
    /// Taken by every write, on `write` or on the hot writer's connection (`sqlite/hot.rs`),
    /// so that the two connections never write at once and neither meets `SQLITE_BUSY` (whose
    /// retry sleeps). A mutex of its own rather than `write`'s one connection: the hot writer
    /// takes and releases it on its thread at once, where a pool connection goes back to its
    /// pool through a task (measured: 0.7 ms per hand-over on a busy runtime).
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// `store.busy_timeout_secs`: also how long readiness waits for the hot writer.
    busy_timeout: Duration,
    /// Accepts, claims, completions and receipts: run whole on a thread of their own, those that
    /// wait meanwhile in one transaction, under `write_lock` (`sqlite/hot.rs`).
    hot: hot::HotWriter,
    read: SqlitePool,
    enqueue_tx: mpsc::Sender<(NewPush, EnqueueReply)>,
    wakeup: Arc<Notify>,
    /// Every submit reads its device, so this keeps a database round trip off the accept path.
    /// Always enabled: this process is the only writer of the file, and its device writes
    /// update the cache after commit.
    devices: DeviceCache,
    /// This process's exclusive claim on the file; the kernel releases it when the file is
    /// closed, i.e. when the store is dropped or the process dies.
    _owner: File,
}

impl SqliteStore {
    /// A push with its timeline up to event `up_to` (`i64::MAX`: all of it), as
    /// `GET /v1/pushes/{id}` shows it; with a real `up_to`, the state and time are that event's
    /// (a webhook's payload "as of" its event).
    /// Pushes as of events ([`AsOf`]): two reads for the whole batch.
    async fn read_as_of(&self, keys: &[AsOf<'_>]) -> Result<Vec<Option<PushRecord>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids = to_json(&keys.iter().map(|k| k.push_id).collect::<Vec<_>>());
        let pushes = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PUSH_COLUMNS} FROM pushes WHERE id IN (SELECT value FROM json_each(?))"
        )))
        .bind(&ids)
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(push_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let mut events = Vec::new();
        for e in sqlx::query(
            "SELECT push_id, seq, at, state, binding, attempt, detail FROM push_events
              WHERE push_id IN (SELECT value FROM json_each(?)) ORDER BY push_id, seq",
        )
        .bind(&ids)
        .fetch_all(&self.read)
        .await?
        {
            let event = PushEvent {
                at_ms: e.try_get("at")?,
                state: parse_state(&e.try_get::<String, _>("state")?)?,
                binding: parse_binding(e.try_get("binding")?, "binding")?,
                attempt: u32::try_from(e.try_get::<i64, _>("attempt")?).unwrap_or(0),
                detail: e.try_get("detail")?,
            };
            events.push((e.try_get("push_id")?, e.try_get("seq")?, event));
        }
        Ok(assemble_as_of(keys, pushes, events))
    }

    pub async fn open(opts: &StoreOptions) -> Result<Self, StoreError> {
        let url = &opts.url;
        create_parent_dir(url);
        // The hot writer opens the file by name: a second connection to an in-memory database
        // would see a database of its own.
        let Some(path) = db_path(url) else {
            return Err(StoreError::Url(format!(
                "{url} (an in-memory SQLite database is not supported: name a file)"
            )));
        };
        // Before anything touches the file (migrations included).
        let owner = take_ownership(&path)?;
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before we answer 202 (DESIGN §7), even on power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(opts.busy_timeout_secs))
            .foreign_keys(false)
            .statement_cache_capacity(256);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // A local file's connection does not go stale; a ping per acquire would be one more
            // hand-off to sqlx's connection thread before each write.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(opts.busy_timeout_secs.max(1) * 3))
            // The one writer updates every index on `pushes` for each insert and state change;
            // with SQLite's default page cache (~2 MB) those index pages fall out of the cache
            // once the table grows (a million waiting pushes), and each insert, claim and
            // completion waits on page reads (docs/perf/scale.md).
            .connect_with(
                connect
                    .clone()
                    .pragma("cache_size", format!("-{}", SQLITE_WRITER_CACHE_KIB))
                    // An `INSERT … SELECT` that reads the table it writes materialises the
                    // SELECT in a temporary table first; the outbox trigger (until 0009) did so
                    // for every webhook event. In a temporary *file* that cost 64 µs per event,
                    // more than the rest of the completion (docs/perf/webhooks.md); in memory
                    // it is gone, for any such statement a later change may add.
                    // Writer only: its temporary tables hold a handful of rows, while a
                    // reader's sort can be large and may spill to disk.
                    .pragma("temp_store", "memory"),
            )
            .await?;
        if opts.auto_migrate {
            MIGRATOR.run(&write).await?;
        }
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let hot = hot::HotWriter::open(
            &path,
            Duration::from_secs(opts.busy_timeout_secs),
            write_lock.clone(),
        )?;
        let read = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(opts.busy_timeout_secs.max(1) * 3))
            .connect_with(connect.read_only(true))
            .await?;
        let wakeup = Arc::new(Notify::new());
        let (enqueue_tx, rx) = mpsc::channel(opts.max_batch.max(1) * 8);
        tokio::spawn(enqueue_writer(
            hot.clone(),
            rx,
            opts.max_batch.max(1),
            wakeup.clone(),
        ));
        Ok(Self {
            write,
            write_lock,
            busy_timeout: Duration::from_secs(opts.busy_timeout_secs),
            hot,
            read,
            enqueue_tx,
            wakeup,
            devices: DeviceCache::new(true),
            _owner: owner,
        })
    }
}

/// The database file named by a `sqlite:` URL; `None` for an in-memory database.
fn db_path(url: &str) -> Option<PathBuf> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(':') || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

fn create_parent_dir(url: &str) {
    if let Some(path) = db_path(url)
        && let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        // An error here surfaces as a clearer "unable to open database file" right after.
        let _ = std::fs::create_dir_all(parent);
    }
}

/// Locks `<db>.lock` exclusively for as long as the returned file is open, and writes this
/// process's id into it for the error message of the next one. A separate file rather than the
/// database itself: SQLite's own locks on the database are POSIX record locks, which some
/// file systems (NFS) emulate `flock` with, so the two would collide.
fn take_ownership(db: &Path) -> Result<File, StoreError> {
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock_err = |source| StoreError::Lock {
        path: lock_path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => {
            // Informational only: the lock is the claim, not the content.
            let _ = file
                .set_len(0)
                .and_then(|()| write!(file, "{}", std::process::id()))
                .and_then(|()| file.flush());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            Err(StoreError::Owned {
                path: db.display().to_string(),
                holder: if pid.is_empty() {
                    format!("lock {}", lock_path.display())
                } else {
                    format!("pid {pid}, lock {}", lock_path.display())
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
    }
}

/// The group-commit loop: each drained batch is one job of the hot writer (which commits it
/// with the claims, completions and receipts waiting at the same time).
async fn enqueue_writer(
    hot: hot::HotWriter,
    mut rx: mpsc::Receiver<(NewPush, EnqueueReply)>,
    max_batch: usize,
    wakeup: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let (pushes, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let count = pushes.len();
        match hot.run(move |c| hot::enqueue(c, &pushes)).await {
            Ok(results) => {
                let created = results
                    .iter()
                    .any(|r| matches!(r, Enqueued::Created { .. }));
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
                if created {
                    wakeup.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(message = "Group commit failed.", error = %e, batch = count);
                let (message, transient) = (e.to_string(), e.is_transient());
                for reply in replies {
                    let _ = reply.send(Err(StoreError::GroupCommit {
                        message: message.clone(),
                        transient,
                    }));
                }
            }
        }
    }
}

async fn insert_event(
    tx: &mut Transaction<'_, Sqlite>,
    push_id: &str,
    at_ms: i64,
    state: PushState,
    binding: Option<BindingKind>,
    attempt: u32,
    detail: &str,
) -> Result<(), StoreError> {
    let seq = sqlx::query("INSERT INTO push_events (push_id, at, state, binding, attempt, detail) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(push_id)
        .bind(at_ms)
        .bind(state.as_str())
        .bind(binding.map(BindingKind::as_str))
        .bind(attempt as i64)
        .bind(detail)
        .execute(&mut **tx)
        .await?
        .last_insert_rowid();
    // The webhook's outbox row, in the same transaction (migrations/sqlite/0009).
    if super::outbox::fires_webhook(state)
        && let Some(r) = sqlx::query(outbox::HOOK_TARGET)
            .bind(push_id)
            .fetch_optional(&mut **tx)
            .await?
    {
        let (id, due) = outbox::hook_row(push_id, seq, at_ms, r.try_get(2)?);
        sqlx::query(outbox::HOOK_INSERT)
            .bind(id)
            .bind(push_id)
            .bind(r.try_get::<String, _>(0)?)
            .bind(state.as_str())
            .bind(seq)
            .bind(r.try_get::<String, _>(1)?)
            .bind(at_ms)
            .bind(due)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn device_from_row(r: &SqliteRow) -> Result<Device, StoreError> {
    let dm: Option<String> = r.try_get("dm")?;
    Ok(Device {
        tenant: r.try_get("tenant")?,
        id: r.try_get("id")?,
        bindings: from_json(&r.try_get::<String, _>("bindings")?, "device bindings")?,
        dm: dm
            .map(|s| from_json(&s, "device dm credentials"))
            .transpose()?,
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
    })
}

const PUSH_COLUMNS: &str =
    "id, tenant, device_id, state, binding_choice, last_binding, attempts, priority,
    content_type, created_at, updated_at, not_before, expires_at, collapse_key, idempotency_key";

fn push_from_row(r: &SqliteRow) -> Result<PushRecord, StoreError> {
    Ok(PushRecord {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        device_id: r.try_get("device_id")?,
        state: parse_state(&r.try_get::<String, _>("state")?)?,
        binding_choice: parse_binding(r.try_get("binding_choice")?, "binding_choice")?,
        last_binding: parse_binding(r.try_get("last_binding")?, "last_binding")?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        priority: r.try_get::<i64, _>("priority")? as i16,
        content_type: parse_content_type(&r.try_get::<String, _>("content_type")?)?,
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
        not_before_ms: r.try_get("not_before")?,
        expires_at_ms: r.try_get("expires_at")?,
        collapse_key: r.try_get("collapse_key")?,
        idempotency_key: r.try_get("idempotency_key")?,
        events: Vec::new(),
    })
}

/// Final pushes per purge statement: bounded by SQLite's bound-variable limit for the IN lists.
const PURGE_CHUNK: u32 = 2_000;

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        sqlx::query("SELECT 1").execute(&self.write).await?;
        // Readiness means pushes can be accepted, and the hot writer writes them, under the
        // write lock: a job through it checks the thread, the lock and its connection. Bounded,
        // so that a wedged writer makes the replica unready instead of hanging the probe.
        let probe = self
            .hot
            .run(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?));
        tokio::time::timeout(self.busy_timeout, probe)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Writer(format!(
                    "no answer within {} s (store.busy_timeout_secs)",
                    self.busy_timeout.as_secs()
                )))
            })
    }

    async fn migrations_current(&self) -> Result<bool, StoreError> {
        // Before any migration ran the table does not exist: not current (not an error).
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.read)
                .await
            {
                Ok(v) => v,
                Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => {
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            };
        Ok(super::all_applied(&MIGRATOR, &applied))
    }

    async fn put_device(&self, d: &Device) -> Result<bool, StoreError> {
        let _write = self.write_lock.lock().await;
        let existed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO devices (tenant, id, bindings, dm, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (tenant, id) DO UPDATE SET bindings = excluded.bindings, dm = excluded.dm,
                 updated_at = excluded.updated_at
             RETURNING created_at",
        )
        .bind(&d.tenant)
        .bind(&d.id)
        .bind(to_json(&d.bindings))
        .bind(d.dm.as_ref().map(to_json))
        .bind(d.updated_at_ms)
        .fetch_optional(&self.write)
        .await?;
        let created = existed == Some(d.updated_at_ms);
        let mut stored = d.clone();
        if let Some(c) = existed {
            stored.created_at_ms = c;
        }
        self.devices.put(&d.tenant, &d.id, Some(stored));
        Ok(created)
    }

    async fn get_device(&self, tenant: &str, id: &str) -> Result<Option<Device>, StoreError> {
        let ticket = match self.devices.get(tenant, id) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let device = sqlx::query("SELECT * FROM devices WHERE tenant = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(device_from_row)
            .transpose()?;
        self.devices.fill(ticket, tenant, id, device.as_ref());
        Ok(device)
    }

    async fn delete_device(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let _write = self.write_lock.lock().await;
        let r = sqlx::query("DELETE FROM devices WHERE tenant = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .execute(&self.write)
            .await?;
        self.devices.put(tenant, id, None);
        Ok(r.rows_affected() > 0)
    }

    async fn list_devices(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Device>, StoreError> {
        sqlx::query("SELECT * FROM devices WHERE tenant = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(tenant)
            .bind(after.unwrap_or(""))
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    async fn enqueue(&self, push: NewPush) -> Result<Enqueued, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue_tx
            .send((push, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn get_push(&self, tenant: &str, id: &str) -> Result<Option<PushRecord>, StoreError> {
        let key = AsOf {
            tenant,
            push_id: id,
            seq: i64::MAX,
        };
        Ok(self.read_as_of(&[key]).await?.pop().flatten())
    }

    async fn list_pushes(
        &self,
        tenant: &str,
        f: &PushFilter,
    ) -> Result<Vec<PushRecord>, StoreError> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {PUSH_COLUMNS} FROM pushes WHERE tenant = "));
        q.push_bind(tenant);
        if let Some(d) = &f.device {
            q.push(" AND device_id = ").push_bind(d);
        }
        if let Some(s) = f.state {
            q.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(b) = &f.before {
            q.push(" AND id < ").push_bind(b);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit as i64);
        q.build()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(push_from_row)
            .collect()
    }

    async fn cancel(
        &self,
        tenant: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<CancelResult, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(
            "UPDATE pushes SET state = 'cancelled', updated_at = ?1
             WHERE tenant = ?2 AND id = ?3 AND state IN ('queued', 'retry_wait') RETURNING attempts",
        )
        .bind(now_ms)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let result = match row {
            Some(r) => {
                let attempts: i64 = r.try_get("attempts")?;
                insert_event(
                    &mut tx,
                    id,
                    now_ms,
                    PushState::Cancelled,
                    None,
                    attempts as u32,
                    "cancelled by client",
                )
                .await?;
                CancelResult::Cancelled
            }
            None => {
                let state: Option<String> =
                    sqlx::query_scalar("SELECT state FROM pushes WHERE tenant = ? AND id = ?")
                        .bind(tenant)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                match state {
                    Some(s) => CancelResult::TooLate(parse_state(&s)?),
                    None => CancelResult::NotFound,
                }
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.claim_room(owner, now_ms, lease, Arc::new(move || limit))
            .await
    }

    async fn claim_room(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        room: ClaimRoom,
    ) -> Result<Vec<Claimed>, StoreError> {
        let until = now_ms + lease.as_millis() as i64;
        let owner = owner.to_owned();
        self.hot
            // At 0 `hot::claim` touches no row.
            .run(move |c| hot::claim(c, &owner, now_ms, until, room()))
            .await?
            .into_iter()
            .collect()
    }

    async fn complete(&self, batch: Vec<Completion>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.hot.run(move |c| hot::complete(c, &batch)).await? {
            self.wakeup.notify_one();
        }
        Ok(())
    }

    async fn renew(&self, owner: &str, ids: &[String], until_ms: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _write = self.write_lock.lock().await;
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE pushes SET lease_until = ");
        q.push_bind(until_ms)
            .push(" WHERE state = 'sending' AND lease_owner = ")
            .push_bind(owner)
            .push(" AND id IN (");
        let mut sep = q.separated(", ");
        for id in ids {
            sep.push_bind(id);
        }
        q.push(")");
        q.build().execute(&self.write).await?;
        Ok(())
    }

    async fn expire(&self, now_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut tx = self.write.begin().await?;
        let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(EXPIRE_SQL)
            .bind(now_ms)
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?;
        for (id, attempts, binding) in &rows {
            let binding = binding.as_deref().and_then(BindingKind::parse);
            insert_event(
                &mut tx,
                id,
                now_ms,
                PushState::Expired,
                binding,
                *attempts as u32,
                "ttl passed",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn purge(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut tx = self.write.begin().await?;
        let mut ids: Vec<String> = Vec::new();
        // One range scan of `pushes_purge` per final state.
        for state in final_states() {
            let left = i64::from(limit.min(PURGE_CHUNK)) - ids.len() as i64;
            if left <= 0 {
                break;
            }
            ids.extend(
                sqlx::query_scalar::<_, String>(
                    // A push whose webhook is still pending stays until the outbox is done
                    // with it (its payload is built from the push).
                    "SELECT id FROM pushes INDEXED BY pushes_purge
                     WHERE state = ?1 AND updated_at < ?2
                       AND NOT EXISTS (SELECT 1 FROM webhook_outbox w
                                       WHERE w.push_id = pushes.id AND w.status = 'pending')
                     LIMIT ?3 + 0",
                )
                .bind(state.as_str())
                .bind(before_ms)
                .bind(left)
                .fetch_all(&mut *tx)
                .await?,
            );
        }
        if ids.is_empty() {
            return Ok(0);
        }
        for table in ["push_events", "push_refs", "webhook_outbox"] {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("DELETE FROM {table} WHERE push_id IN ("));
            let mut sep = q.separated(", ");
            for id in &ids {
                sep.push_bind(id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("DELETE FROM pushes WHERE id IN (");
        let mut sep = q.separated(", ");
        for id in &ids {
            sep.push_bind(id);
        }
        q.push(")");
        let n = q.build().execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    async fn start_replica(&self, _owner: &str, now_ms: i64) -> Result<u64, StoreError> {
        let _write = self.write_lock.lock().await;
        // This process holds the file's lock, so every lease in it belongs to a process that
        // is gone (whatever its owner id: a fixed `queue.replica_id` is reused by a restart):
        // all of them end now, and the next claim takes them over (with an event).
        let r = sqlx::query(
            "UPDATE pushes SET lease_until = ?1
             WHERE state = 'sending' AND (lease_until IS NULL OR lease_until > ?1)",
        )
        .bind(now_ms)
        .execute(&self.write)
        .await?;
        if r.rows_affected() > 0 {
            self.wakeup.notify_one();
        }
        Ok(r.rows_affected())
    }

    async fn apply_receipts(
        &self,
        receipts: &[Receipt],
        now_ms: i64,
    ) -> Result<Vec<ReceiptEffect>, StoreError> {
        let receipts = receipts.to_vec();
        let effects = self
            .hot
            .run(move |c| hot::apply_receipts(c, &receipts, now_ms))
            .await?;
        if effects
            .iter()
            .any(|e| matches!(e, ReceiptEffect::FellBack { .. }))
        {
            self.wakeup.notify_one();
        }
        Ok(effects)
    }

    async fn unconfirm(&self, now_ms: i64, grace_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut tx = self.write.begin().await?;
        let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
            "UPDATE pushes SET state = 'unconfirmed', updated_at = ?1
             WHERE id IN (SELECT id FROM pushes INDEXED BY pushes_receipt_wait
                          WHERE state = 'accepted' AND expires_at <= ?1 - ?2 LIMIT ?3 + 0)
             RETURNING id, attempts, last_binding",
        )
        .bind(now_ms)
        .bind(grace_ms)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        for (id, attempts, binding) in &rows {
            let binding = binding.as_deref().and_then(BindingKind::parse);
            insert_event(
                &mut tx,
                id,
                now_ms,
                PushState::Unconfirmed,
                binding,
                *attempts as u32,
                rules::UNCONFIRMED_DETAIL,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn drop_orphan_receipts(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<(BindingKind, u64)>, StoreError> {
        let _write = self.write_lock.lock().await;
        let rows: Vec<(String,)> = sqlx::query_as(
            "DELETE FROM push_refs
             WHERE (binding, account, reference) IN (
                 SELECT binding, account, reference FROM push_refs INDEXED BY push_refs_orphan
                  WHERE push_id IS NULL AND hold_until < ?1 LIMIT ?2 + 0)
             RETURNING binding",
        )
        .bind(now_ms)
        .bind(limit as i64)
        .fetch_all(&self.write)
        .await?;
        Ok(rules::count_by_binding(rows.into_iter().map(|(b,)| b)))
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        // Per priority level, so that each MIN is the first entry of the `pushes_due` index.
        Ok(sqlx::query_scalar(
            "SELECT MIN(m) FROM (
                 SELECT MIN(next_attempt_at) AS m FROM pushes INDEXED BY pushes_due
                  WHERE state IN ('queued', 'retry_wait') AND priority = 1
                 UNION ALL
                 SELECT MIN(next_attempt_at) FROM pushes INDEXED BY pushes_due
                  WHERE state IN ('queued', 'retry_wait') AND priority = 0)",
        )
        .fetch_one(&self.read)
        .await?)
    }

    async fn queue_depth(&self) -> Result<Vec<(PushState, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM pushes GROUP BY state")
                .fetch_all(&self.read)
                .await?;
        rows.into_iter()
            .map(|(s, n)| Ok((parse_state(&s)?, n as u64)))
            .collect()
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.wakeup.clone()
    }

    fn outbox(&self) -> Option<&dyn super::outbox::Outbox> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&StoreOptions {
            url: format!("sqlite://{}", dir.path().join("store.db").display()),
            ..StoreOptions::default()
        })
        .await
        .unwrap()
    }

    /// Readiness checks the writer that accepts pushes: with the write lock held elsewhere (a
    /// wedged write) the probe fails after the busy timeout instead of answering "ready".
    #[tokio::test]
    async fn readiness_fails_while_the_writer_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&StoreOptions {
            url: format!("sqlite://{}", dir.path().join("store.db").display()),
            busy_timeout_secs: 1,
            ..StoreOptions::default()
        })
        .await
        .unwrap();
        s.ping().await.unwrap();
        let held = s.write_lock.lock().await;
        let e = s.ping().await.unwrap_err();
        assert!(
            matches!(e, StoreError::Writer(ref m) if m.contains("no answer")),
            "{e}"
        );
        drop(held);
        s.ping().await.unwrap();
    }

    /// A claim queued behind another write is sized when it runs: room that frees meanwhile
    /// (attempts ending while the writer was busy) is claimed by it, not left to a next claim.
    #[tokio::test]
    async fn claim_room_is_asked_when_the_claim_runs() {
        use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        for i in 0..5 {
            let p = NewPush {
                created_at_ms: 1_000,
                not_before_ms: 1_000,
                expires_at_ms: 100_000,
                ..rules::tests::new_push(&format!("p{i}"), "t", None)
            };
            s.enqueue(p).await.unwrap();
        }
        let free = Arc::new(AtomicU32::new(1));
        let room: ClaimRoom = {
            let free = free.clone();
            Arc::new(move || free.load(SeqCst))
        };
        // Another write holds the lock: the claim waits in the writer's queue.
        let held = s.write_lock.lock().await;
        let claim = s.claim_room("a", 2_000, Duration::from_secs(30), room);
        let (claimed, ()) = tokio::join!(claim, async {
            // Room frees while the claim waits (after it was asked for).
            free.store(4, SeqCst);
            drop(held);
        });
        assert_eq!(claimed.unwrap().len(), 4);
    }

    /// The TTL sweep runs once a second on the only writer connection: it must be a range scan
    /// of `pushes_expiry`, never a walk over every waiting push (`pushes_purge` by state).
    #[tokio::test]
    async fn ttl_sweep_range_scans_pushes_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        // Rows of EXPLAIN QUERY PLAN: id, parent, notused, detail.
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {EXPIRE_SQL}"
        )))
        .bind(0i64)
        .bind(1000i64)
        .fetch_all(&s.write)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>("detail").unwrap())
        .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING INDEX pushes_expiry (expires_at<?)"),
            "{plan}"
        );
        assert!(!plan.contains("pushes_purge"), "{plan}");
    }

    /// Since migration 0009 no trigger writes the webhook outbox: `insert_event` (one per write
    /// connection) writes a state event's outbox row beside it. A state event inserted anywhere
    /// else would send no webhook, so every other insert into `push_events` must be a webhook
    /// attempt row (`kind = 'webhook'`, which never sends one).
    #[test]
    fn state_events_are_written_by_insert_event_only() {
        let sources = [
            ("sqlite.rs", include_str!("sqlite.rs")),
            ("sqlite/hot.rs", include_str!("sqlite/hot.rs")),
            ("sqlite/outbox.rs", include_str!("sqlite/outbox.rs")),
        ];
        let needle = ["INSERT INTO", "push_events"].join(" ");
        let mut in_insert_event = 0;
        for (file, src) in sources {
            for (at, _) in src.match_indices(&needle) {
                let before = &src[..at];
                let function = before.rfind("fn ").map(|f| &before[f..]).unwrap_or("");
                let statement = &src[at..src[at..].find(')').map_or(src.len(), |e| at + e)];
                let statement_end = src[at..]
                    .find(&['"', '`'][..])
                    .map_or(src.len(), |e| at + e);
                if function.starts_with("fn insert_event(") {
                    in_insert_event += 1;
                } else {
                    assert!(
                        statement.contains("kind") && src[at..statement_end].contains("'webhook'"),
                        "{file}: a push_events insert outside insert_event that is not a webhook \
                         attempt row would record a state change without its webhook: {}",
                        &src[at..statement_end]
                    );
                }
            }
        }
        assert_eq!(in_insert_event, 2, "one insert_event per write connection");
    }

    /// The writer's page cache holds the interior pages of `pushes` and its indexes at a
    /// million rows; the readers keep SQLite's default (memory stays bounded).
    #[tokio::test]
    async fn only_the_writer_has_the_larger_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let writer = pragma(&s.write, "cache_size").await;
        assert_eq!(writer, -(SQLITE_WRITER_CACHE_KIB as i64));
        let reader = pragma(&s.read, "cache_size").await;
        assert_eq!(reader, -2000, "SQLite's default");
    }

    /// An `INSERT … SELECT` of a table it reads materialises into a temporary table: in memory
    /// on the writer (2 = MEMORY), the readers keep the default (0 = the compile-time choice, a
    /// file).
    #[tokio::test]
    async fn only_the_writer_keeps_temporary_tables_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let writer = pragma(&s.write, "temp_store").await;
        assert_eq!(writer, 2);
        let reader = pragma(&s.read, "temp_store").await;
        assert_eq!(reader, 0);
    }

    async fn pragma(pool: &sqlx::SqlitePool, name: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
            .fetch_one(pool)
            .await
            .unwrap()
    }
}
