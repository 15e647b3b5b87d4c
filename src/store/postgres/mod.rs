//! PostgreSQL store: the durable queue for several replicas sharing one database.
//!
//! Anatomy (see docs/postgres.md), one file per concern:
//! * **Group commit** (`enqueue.rs`). [`Store::enqueue`] hands the push to writer tasks over a
//!   channel; a writer drains up to `max_batch` waiting pushes and commits them in one
//!   transaction with multi-row `INSERT … SELECT FROM UNNEST(…)` statements, then answers every
//!   caller. If a batch fails, each push is retried in a transaction of its own so that one bad
//!   push (or a deadlock between two writers over a collapse key) never fails its neighbours and
//!   every caller gets its own error.
//! * **Leases** (`claim.rs`). [`Store::claim`] locks candidate rows with `FOR UPDATE SKIP
//!   LOCKED`, so two replicas (or two claimer tasks) never lease the same push; an expired lease
//!   is taken over by the next claim, and a [`Completion`] from the owner that lost it is ignored.
//! * **Completions and receipts** (`complete.rs`): one `UPDATE … FROM UNNEST(…)` per completion
//!   batch; what a completion or receipt does is decided by [`super::rules`], shared with SQLite.
//! * **Wake-ups** (`listen.rs`). Every commit that makes work due sends `NOTIFY dmpushd_wakeup`;
//!   a listener task on each replica turns notifications into [`Store::wakeup`] signals. The
//!   dispatcher polls anyway, so a lost notification only delays.
//! * **Device cache** (`listen.rs`). Every submit reads its device. A trigger
//!   (`migrations/postgres/0002`) sends `NOTIFY dmpushd_devices` with `[tenant, id]` on every
//!   device change, and the same listener drops that entry from each replica's [`DeviceCache`];
//!   while the listener is disconnected the cache is off (reads go to the database) and it
//!   restarts empty.
//! * **Connection set-up** (`connect.rs`): pool, TCP_NODELAY, migrations, background tasks.
//! * **Replicas and retention** (`replicas.rs`): heartbeats, the dead-replica sweep that frees
//!   their leases at once, and the batched purge of old final pushes.

use std::{collections::HashMap, sync::Arc, time::Duration};

use sqlx::{PgPool, Postgres, Row, Transaction, postgres::PgRow};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::DropGuard;

use super::{
    AsOf, CancelResult, Claimed, Completion, Device, DeviceCache, Enqueued, NewPush, PushEvent,
    PushFilter, PushRecord, PushState, ReceiptEffect, Store, StoreError, StoreOptions,
    assemble_as_of, from_json, parse_binding, parse_content_type, parse_state, rules::EventRow,
    to_json,
};
use crate::domain::{BindingKind, Receipt};

mod claim;
mod complete;
mod connect;
mod enqueue;
mod listen;
mod outbox;
mod replicas;

/// NOTIFY channel shared by all replicas of one database.
pub const WAKEUP_CHANNEL: &str = "dmpushd_wakeup";
/// NOTIFY channel of device changes (payload `[tenant, id]` as JSON, or `*` for all).
pub const DEVICES_CHANNEL: &str = "dmpushd_devices";

/// Scheduler yields a writer spends gathering more pushes before it commits a batch.
const COALESCE_YIELDS: usize = 4;

type Waiter = oneshot::Sender<Result<Enqueued, StoreError>>;
type Job = (NewPush, Waiter);

/// Columns of a [`PushRecord`] (listing form, without events).
const RECORD_COLS: &str = "id, tenant, device_id, state, binding_choice, last_binding, attempts, \
     priority, content_type, created_at, updated_at, not_before, expires_at, collapse_key, \
     idempotency_key";

pub async fn open(opts: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(PgStore::connect(opts).await?))
}

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: PgPool,
    jobs: mpsc::Sender<Job>,
    wake: Arc<Notify>,
    devices: Arc<DeviceCache>,
    /// Completion batches in flight at once (each holds a connection for its round trips).
    completion_writers: usize,
    /// Stops the LISTEN task when the store is dropped (writers stop when `jobs` is dropped).
    _stop: DropGuard,
}

impl PgStore {
    /// A push with its timeline up to event `up_to` (`i64::MAX`: all of it), as
    /// `GET /v1/pushes/{id}` shows it; with a real `up_to`, the state and time are that event's
    /// (a webhook's payload "as of" its event).
    /// Pushes as of events ([`AsOf`]): two reads for the whole batch.
    async fn read_as_of(&self, keys: &[AsOf<'_>]) -> Result<Vec<Option<PushRecord>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = keys.iter().map(|k| k.push_id).collect();
        let pushes = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLS} FROM pushes WHERE id = ANY($1)"
        )))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(record_of)
        .collect::<Result<Vec<_>, _>>()?;
        let mut events = Vec::new();
        for e in sqlx::query(
            "SELECT push_id, seq, at, state, binding, attempt, detail FROM push_events \
             WHERE push_id = ANY($1) ORDER BY push_id, seq",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?
        {
            let event = PushEvent {
                at_ms: e.try_get("at")?,
                state: parse_state(e.try_get("state")?)?,
                binding: parse_binding(e.try_get("binding")?, "event binding")?,
                attempt: u32_of(e.try_get("attempt")?, "event attempt")?,
                detail: e.try_get("detail")?,
            };
            events.push((e.try_get("push_id")?, e.try_get("seq")?, event));
        }
        Ok(assemble_as_of(keys, pushes, events))
    }

    /// The connection pool (for tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Event rows collected for one multi-row insert.
#[derive(Default)]
struct Events {
    push_id: Vec<String>,
    at: Vec<i64>,
    state: Vec<String>,
    binding: Vec<Option<String>>,
    attempt: Vec<i32>,
    detail: Vec<String>,
}

impl Events {
    fn add(
        &mut self,
        push_id: &str,
        at: i64,
        state: PushState,
        binding: Option<BindingKind>,
        attempt: i32,
        detail: impl Into<String>,
    ) {
        self.push_id.push(push_id.to_owned());
        self.at.push(at);
        self.state.push(state.as_str().to_owned());
        self.binding.push(binding.map(|b| b.as_str().to_owned()));
        self.attempt.push(attempt);
        self.detail.push(detail.into());
    }

    fn add_row(&mut self, push_id: &str, e: &EventRow) {
        self.add(
            push_id,
            e.at_ms,
            e.state,
            e.binding,
            i32_of(e.attempt),
            e.detail.clone(),
        );
    }

    async fn flush(self, tx: &mut Transaction<'static, Postgres>) -> Result<(), StoreError> {
        if self.push_id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO push_events (push_id, at, state, binding, attempt, detail) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::int4[], $6::text[])",
        )
        .bind(self.push_id)
        .bind(self.at)
        .bind(self.state)
        .bind(self.binding)
        .bind(self.attempt)
        .bind(self.detail)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn u32_of(v: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Decode(format!("{what}: negative value {v}")))
}

fn record_of(r: &PgRow) -> Result<PushRecord, StoreError> {
    Ok(PushRecord {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        device_id: r.try_get("device_id")?,
        state: parse_state(r.try_get("state")?)?,
        binding_choice: parse_binding(r.try_get("binding_choice")?, "binding_choice")?,
        last_binding: parse_binding(r.try_get("last_binding")?, "last_binding")?,
        attempts: u32_of(r.try_get("attempts")?, "attempts")?,
        priority: r.try_get("priority")?,
        content_type: parse_content_type(r.try_get("content_type")?)?,
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
        not_before_ms: r.try_get("not_before")?,
        expires_at_ms: r.try_get("expires_at")?,
        collapse_key: r.try_get("collapse_key")?,
        idempotency_key: r.try_get("idempotency_key")?,
        events: Vec::new(),
    })
}

fn device_of(r: &PgRow) -> Result<Device, StoreError> {
    let bindings: String = r.try_get("bindings")?;
    let dm: Option<String> = r.try_get("dm")?;
    Ok(Device {
        tenant: r.try_get("tenant")?,
        id: r.try_get("id")?,
        bindings: from_json(&bindings, "device bindings")?,
        dm: dm
            .map(|s| from_json(&s, "device dm credentials"))
            .transpose()?,
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
    })
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrations_current(&self) -> Result<bool, StoreError> {
        // Before the first migration sqlx's table does not exist (42P01): not current.
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .or_else(|e| match &e {
                    sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => {
                        Ok(Vec::new())
                    }
                    _ => Err(e),
                })?;
        Ok(crate::store::all_applied(&connect::MIGRATOR, &applied))
    }

    async fn replicas(&self) -> Result<Vec<crate::store::ReplicaInfo>, StoreError> {
        replicas::list(&self.pool).await
    }

    async fn put_device(&self, d: &Device) -> Result<bool, StoreError> {
        // xmax = 0 only on a freshly inserted row version: tells insert from update.
        let row = sqlx::query(
            "INSERT INTO devices (tenant, id, bindings, dm, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant, id) DO UPDATE SET bindings = EXCLUDED.bindings, \
                 dm = EXCLUDED.dm, updated_at = EXCLUDED.updated_at \
             RETURNING (xmax = 0) AS created, created_at",
        )
        .bind(&d.tenant)
        .bind(&d.id)
        .bind(to_json(&d.bindings))
        .bind(d.dm.as_ref().map(to_json))
        .bind(d.created_at_ms)
        .bind(d.updated_at_ms)
        .fetch_one(&self.pool)
        .await?;
        let created: bool = row.try_get("created")?;
        let mut stored = d.clone();
        stored.created_at_ms = row.try_get("created_at")?;
        // Read-your-writes on this replica at once; others learn it from the trigger's NOTIFY.
        self.devices.put(&d.tenant, &d.id, Some(stored));
        Ok(created)
    }

    async fn get_device(&self, tenant: &str, id: &str) -> Result<Option<Device>, StoreError> {
        let ticket = match self.devices.get(tenant, id) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let device = sqlx::query(
            "SELECT tenant, id, bindings, dm, created_at, updated_at FROM devices \
             WHERE tenant = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(device_of)
        .transpose()?;
        self.devices.fill(ticket, tenant, id, device.as_ref());
        Ok(device)
    }

    async fn delete_device(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM devices WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
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
        sqlx::query(
            "SELECT tenant, id, bindings, dm, created_at, updated_at FROM devices \
             WHERE tenant = $1 AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(device_of)
        .collect()
    }

    async fn enqueue(&self, push: NewPush) -> Result<Enqueued, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
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
        filter: &PushFilter,
    ) -> Result<Vec<PushRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLS} FROM pushes WHERE tenant = $1 \
               AND ($2::text IS NULL OR device_id = $2) \
               AND ($3::text IS NULL OR state = $3) \
               AND ($4::text IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(tenant)
        .bind(filter.device.as_deref())
        .bind(filter.state.map(PushState::as_str))
        .bind(filter.before.as_deref())
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(record_of)
        .collect()
    }

    async fn cancel(
        &self,
        tenant: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<CancelResult, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT state, attempts FROM pushes WHERE tenant = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(CancelResult::NotFound);
        };
        let state = parse_state(row.try_get("state")?)?;
        if !matches!(state, PushState::Queued | PushState::RetryWait) {
            return Ok(CancelResult::TooLate(state));
        }
        sqlx::query("UPDATE pushes SET state = 'cancelled', updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let mut ev = Events::default();
        ev.add(
            id,
            now_ms,
            PushState::Cancelled,
            None,
            row.try_get("attempts")?,
            "cancelled by client",
        );
        ev.flush(&mut tx).await?;
        tx.commit().await?;
        Ok(CancelResult::Cancelled)
    }

    async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        claim::claim(&self.pool, owner, now_ms, lease, limit).await
    }

    async fn complete(&self, batch: Vec<Completion>) -> Result<(), StoreError> {
        complete::complete(&self.pool, &self.wake, batch).await
    }

    async fn renew(&self, owner: &str, ids: &[String], until_ms: i64) -> Result<(), StoreError> {
        claim::renew(&self.pool, owner, ids, until_ms).await
    }

    async fn expire(&self, now_ms: i64, limit: u32) -> Result<u64, StoreError> {
        claim::expire(&self.pool, now_ms, limit).await
    }

    async fn unconfirm(&self, now_ms: i64, grace_ms: i64, limit: u32) -> Result<u64, StoreError> {
        complete::unconfirm(&self.pool, now_ms, grace_ms, limit).await
    }

    async fn drop_orphan_receipts(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<(BindingKind, u64)>, StoreError> {
        complete::drop_orphan_receipts(&self.pool, now_ms, limit).await
    }

    async fn purge(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        replicas::purge(&self.pool, before_ms, limit).await
    }

    async fn start_replica(&self, owner: &str, now_ms: i64) -> Result<u64, StoreError> {
        let n = replicas::start(&self.pool, owner, now_ms).await?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    async fn heartbeat(&self, owner: &str, now_ms: i64) -> Result<(), StoreError> {
        replicas::heartbeat(&self.pool, owner, now_ms).await
    }

    async fn sweep_dead_replicas(
        &self,
        dead_before_ms: i64,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let n = replicas::sweep(&self.pool, dead_before_ms, now_ms).await?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    async fn stop_replica(&self, owner: &str) -> Result<(), StoreError> {
        replicas::stop(&self.pool, owner).await
    }

    async fn apply_receipts(
        &self,
        receipts: &[Receipt],
        now_ms: i64,
    ) -> Result<Vec<ReceiptEffect>, StoreError> {
        complete::apply_receipts(&self.pool, receipts, now_ms).await
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            // Per priority level, so that each is the first entry of `pushes_due` (one min over
            // all levels scans the whole index). Written as an index-ordered `LIMIT 1`, not
            // `min()`: the planner turns `min()` into that only when it expects many rows, and
            // otherwise aggregates over every entry of the level — with a million waiting pushes
            // and statistics that lag the load, the query was logged at 1.0–1.3 s
            // (docs/perf/scale.md). `LIMIT 1` in index order stops at the first live entry.
            "SELECT min(m) FROM ( \
                 (SELECT next_attempt_at AS m FROM pushes \
                  WHERE state IN ('queued', 'retry_wait') AND priority = 1 \
                  ORDER BY priority DESC, next_attempt_at LIMIT 1) \
                 UNION ALL \
                 (SELECT next_attempt_at FROM pushes \
                  WHERE state IN ('queued', 'retry_wait') AND priority = 0 \
                  ORDER BY priority DESC, next_attempt_at LIMIT 1)) x",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn queue_depth(&self) -> Result<Vec<(PushState, u64)>, StoreError> {
        let mut counts: HashMap<PushState, u64> = HashMap::new();
        for r in sqlx::query("SELECT state, count(*) AS n FROM pushes GROUP BY state")
            .fetch_all(&self.pool)
            .await?
        {
            let n: i64 = r.try_get("n")?;
            counts.insert(parse_state(r.try_get("state")?)?, n.unsigned_abs());
        }
        // Every state, zeros included, so that gauges fall back to 0.
        Ok(PushState::ALL
            .into_iter()
            .map(|s| (s, counts.get(&s).copied().unwrap_or(0)))
            .collect())
    }

    async fn leases_held(&self, owner: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pushes WHERE state = 'sending' AND lease_owner = $1",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unsigned_abs())
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn outbox(&self) -> Option<&dyn super::outbox::Outbox> {
        Some(self)
    }

    fn completion_writers(&self) -> usize {
        self.completion_writers
    }
}
