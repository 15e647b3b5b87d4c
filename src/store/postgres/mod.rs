//! PostgreSQL store: the durable queue for several replicas sharing one database.
//!
//! Anatomy (see docs/postgres.md):
//! * **Group commit.** [`Store::enqueue`] hands the push to writer tasks over a channel; a writer
//!   drains up to `max_batch` waiting pushes and commits them in one transaction with multi-row
//!   `INSERT … SELECT FROM UNNEST(…)` statements, then answers every caller. If a batch fails, each
//!   push is retried in a transaction of its own so that one bad push (or a deadlock between two
//!   writers over a collapse key) never fails its neighbours and every caller gets its own error.
//! * **Leases.** [`Store::claim`] locks candidate rows with `FOR UPDATE SKIP LOCKED`, so two
//!   replicas (or two claimer tasks) never lease the same push; an expired lease is taken over by
//!   the next claim, and a [`Completion`] from the owner that lost it is ignored.
//! * **Wake-ups.** Every commit that makes work due sends `NOTIFY dmpushd_wakeup`; a listener task
//!   on each replica turns notifications into [`Store::wakeup`] signals. The dispatcher polls
//!   anyway, so a lost notification only delays.
//! * **Device cache.** Every submit reads its device. A trigger (`migrations/postgres/0002`)
//!   sends `NOTIFY dmpushd_devices` with `[tenant, id]` on every device change, and the same
//!   listener drops that entry from each replica's [`DeviceCache`]; while the listener is
//!   disconnected the cache is off (reads go to the database) and it restarts empty.

use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use sqlx::{
    PgPool, Postgres, Row, Transaction,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow},
};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    CancelResult, Claimed, Completion, Device, DeviceCache, Enqueued, NewPush, Next, PushEvent,
    PushFilter, PushRecord, PushState, ReceiptEffect, Store, StoreError, StoreOptions, from_json,
    parse_binding, parse_content_type, parse_state, to_json,
};
use crate::binding::{BindingKind, Receipt};

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
    /// Stops the LISTEN task when the store is dropped (writers stop when `jobs` is dropped).
    _stop: DropGuard,
}

impl PgStore {
    /// Connects (TLS per `sslmode` in the URL), runs migrations when `opts.auto_migrate`, and
    /// starts the writer and LISTEN tasks. Must be called inside a Tokio runtime.
    pub async fn connect(opts: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&opts.url)?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(opts.busy_timeout_secs.max(1)))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Which of our sockets is this connection? The server knows its port.
                    let port: Option<i32> = sqlx::query_scalar("SELECT inet_client_port()")
                        .fetch_one(&mut *conn)
                        .await?;
                    if let Some(port) = port.and_then(|p| u16::try_from(p).ok())
                        && !nodelay::set_on_local_port(port)
                    {
                        tracing::debug!(port, "could not set TCP_NODELAY on a database socket");
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        if opts.auto_migrate {
            // sqlx takes a PostgreSQL advisory lock around migrations, so replicas starting
            // together migrate once.
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        let wake = Arc::new(Notify::new());
        let max_batch = opts.max_batch.max(1);
        let (jobs, rx) = mpsc::channel::<Job>(max_batch.saturating_mul(4));
        let rx = Arc::new(Mutex::new(rx));
        // Two writers pipeline: one gathers the next batch while the other waits for its commit.
        // Bounded by the pool so that reads and claims always find a connection.
        let writers = (opts.max_connections / 4).clamp(1, 4);
        for _ in 0..writers {
            tokio::spawn(writer(pool.clone(), rx.clone(), max_batch, wake.clone()));
        }
        let stop = CancellationToken::new();
        // Off until the listener is subscribed: only then are other replicas' changes seen.
        let devices = Arc::new(DeviceCache::new(false));
        tokio::spawn(listen(
            pool.clone(),
            wake.clone(),
            devices.clone(),
            stop.clone(),
        ));
        Ok(Self {
            pool,
            jobs,
            wake,
            devices,
            _stop: stop.drop_guard(),
        })
    }

    /// The connection pool (for tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Drains batches from the shared channel and commits them.
async fn writer(
    pool: PgPool,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
    wake: Arc<Notify>,
) {
    let mut buf = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut buf, max_batch).await == 0 {
                return; // every sender dropped: the store is gone
            }
            // Coalesce: callers just answered by the previous commit are resubmitting right now.
            // Yielding lets them run (they are ready tasks, not timers), so the batch grows to
            // the real concurrency instead of alternating between one push and all the others.
            for _ in 0..COALESCE_YIELDS {
                if buf.len() >= max_batch {
                    break;
                }
                tokio::task::yield_now().await;
                let before = buf.len();
                while buf.len() < max_batch {
                    match rx.try_recv() {
                        Ok(job) => buf.push(job),
                        Err(_) => break,
                    }
                }
                if buf.len() == before {
                    break;
                }
            }
        }
        let (pushes, waiters): (Vec<NewPush>, Vec<Waiter>) = buf.drain(..).unzip();
        match enqueue_batch(&pool, &pushes).await {
            Ok(results) => {
                if results
                    .iter()
                    .any(|r| matches!(r, Enqueued::Created { .. }))
                {
                    wake.notify_one();
                }
                for (w, r) in waiters.into_iter().zip(results) {
                    let _ = w.send(Ok(r));
                }
            }
            Err(e) if pushes.len() == 1 => {
                if let Some(w) = waiters.into_iter().next() {
                    let _ = w.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, batch = pushes.len(), "enqueue batch failed; retrying one by one");
                for (p, w) in pushes.iter().zip(waiters) {
                    let r = enqueue_batch(&pool, std::slice::from_ref(p))
                        .await
                        .and_then(|mut v| v.pop().ok_or(StoreError::Closed));
                    if matches!(r, Ok(Enqueued::Created { .. })) {
                        wake.notify_one();
                    }
                    let _ = w.send(r);
                }
            }
        }
    }
}

/// Turns NOTIFY from any replica into local wake-ups and device-cache invalidations;
/// reconnects after connection loss.
async fn listen(
    pool: PgPool,
    wake: Arc<Notify>,
    devices: Arc<DeviceCache>,
    stop: CancellationToken,
) {
    loop {
        let attempt = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen_all([WAKEUP_CHANNEL, DEVICES_CHANNEL]).await?;
            // Notifications sent while we were not listening are lost: look once, and forget
            // every device (the cache was off meanwhile, but may hold entries from before).
            devices.reset(true);
            wake.notify_one();
            // `try_recv`, not `recv`: `recv` reconnects silently and would hide the gap in
            // which invalidations were lost.
            while let Some(n) = l.try_recv().await? {
                if n.channel() == DEVICES_CHANNEL {
                    invalidate(&devices, n.payload());
                } else {
                    wake.notify_one();
                }
            }
            Err::<(), sqlx::Error>(sqlx::Error::Protocol("LISTEN connection closed".into()))
        };
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = attempt => r,
        };
        devices.reset(false);
        if let Err(e) = r {
            tracing::warn!(error = %e, "LISTEN failed; polling and uncached device reads until reconnected");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Applies one `dmpushd_devices` payload; anything unexpected clears the whole cache (safe).
fn invalidate(devices: &DeviceCache, payload: &str) {
    match serde_json::from_str::<(String, String)>(payload) {
        Ok((tenant, id)) => devices.invalidate(&tenant, &id),
        Err(_) => {
            if payload != "*" {
                tracing::warn!(
                    payload,
                    "unexpected device notification; clearing the device cache"
                );
            }
            devices.reset(true);
        }
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

/// The row change a completion makes: (state, next_attempt_at, binding_index, attempts to take
/// back).
fn completion_effect(c: &Completion) -> (PushState, Option<i64>, Option<i32>, i32) {
    match &c.next {
        Next::Delivered => (PushState::Delivered, None, None, 0),
        Next::Accepted { .. } => (PushState::Accepted, None, None, 0),
        Next::RetryAt { at_ms } => (PushState::RetryWait, Some(*at_ms), None, 0),
        Next::Fallback { binding_index } => (
            PushState::Queued,
            Some(c.at_ms),
            Some(i32_of(*binding_index)),
            0,
        ),
        Next::Failed => (PushState::Failed, None, None, 0),
        Next::Expired => (PushState::Expired, None, None, 0),
        // Graceful shutdown: the attempt did not happen.
        Next::Release => (PushState::Queued, Some(c.at_ms), None, 1),
    }
}

/// Completions as columns for one `UPDATE … FROM UNNEST(…)`.
#[derive(Default)]
struct CompletionCols {
    ord: Vec<i32>,
    id: Vec<String>,
    owner: Vec<String>,
    state: Vec<String>,
    binding: Vec<Option<String>>,
    at: Vec<i64>,
    next_at: Vec<Option<i64>>,
    index: Vec<Option<i32>>,
    uncount: Vec<i32>,
}

impl CompletionCols {
    fn add(&mut self, ord: usize, c: &Completion) {
        let (state, next_at, index, uncount) = completion_effect(c);
        self.ord.push(i32::try_from(ord).unwrap_or(i32::MAX));
        self.id.push(c.push_id.clone());
        self.owner.push(c.owner.clone());
        self.state.push(state.as_str().to_owned());
        self.binding.push(c.binding.map(|b| b.as_str().to_owned()));
        self.at.push(c.at_ms);
        self.next_at.push(next_at);
        self.index.push(index);
        self.uncount.push(uncount);
    }

    /// Applies the changes whose lease is still held; returns their positions in the batch.
    async fn apply(
        self,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<HashSet<usize>, StoreError> {
        let ords: Vec<i32> = sqlx::query_scalar(
            "UPDATE pushes p SET state = u.state, lease_owner = NULL, lease_until = NULL, \
                 last_binding = COALESCE(u.binding, p.last_binding), updated_at = u.at, \
                 next_attempt_at = COALESCE(u.next_at, p.next_attempt_at), \
                 binding_index = COALESCE(u.idx, p.binding_index), \
                 attempts = p.attempts - u.uncount \
             FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::int8[], $7::int8[], $8::int4[], $9::int4[]) \
                 AS u(ord, id, owner, state, binding, at, next_at, idx, uncount) \
             WHERE p.id = u.id AND p.state = 'sending' AND p.lease_owner = u.owner \
             RETURNING u.ord",
        )
        .bind(self.ord)
        .bind(self.id)
        .bind(self.owner)
        .bind(self.state)
        .bind(self.binding)
        .bind(self.at)
        .bind(self.next_at)
        .bind(self.index)
        .bind(self.uncount)
        .fetch_all(&mut **tx)
        .await?;
        Ok(ords
            .into_iter()
            .filter_map(|o| usize::try_from(o).ok())
            .collect())
    }
}

fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn u32_of(v: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Decode(format!("{what}: negative value {v}")))
}

/// Commits a batch of pushes in one transaction; one result per push, in order.
async fn enqueue_batch(pool: &PgPool, pushes: &[NewPush]) -> Result<Vec<Enqueued>, StoreError> {
    let mut tx = pool.begin().await?;

    // Idempotency inside the batch: only the first push with a given (tenant, key) is inserted;
    // later ones are answered against it like any replay.
    let mut first_with_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut insert: Vec<usize> = Vec::with_capacity(pushes.len());
    for (i, p) in pushes.iter().enumerate() {
        match &p.idempotency_key {
            Some(k) => {
                if let std::collections::hash_map::Entry::Vacant(e) =
                    first_with_key.entry((p.tenant.as_str(), k.as_str()))
                {
                    e.insert(i);
                    insert.push(i);
                }
            }
            None => insert.push(i),
        }
    }

    // One multi-row INSERT. A key that another transaction committed meanwhile is skipped by
    // ON CONFLICT (PostgreSQL waits for that transaction, then skips) and answered below.
    let mut cols = (
        Vec::<&str>::new(),
        Vec::<&str>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<String>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<&str>::new(),
        Vec::<&[u8]>::new(),
        Vec::<i16>::new(),
        Vec::<i32>::new(),
        Vec::<i64>::new(),
        Vec::<i64>::new(),
        Vec::<i64>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<Option<&str>>::new(),
    );
    for &i in &insert {
        let p = &pushes[i];
        cols.0.push(&p.id);
        cols.1.push(&p.tenant);
        cols.2.push(p.device_id.as_deref());
        cols.3.push(to_json(&p.bindings));
        cols.4.push(p.binding_choice.map(BindingKind::as_str));
        cols.5.push(p.content_type.as_str());
        cols.6.push(&p.body);
        cols.7.push(p.priority);
        cols.8.push(i32_of(p.max_attempts));
        cols.9.push(p.created_at_ms);
        cols.10.push(p.not_before_ms);
        cols.11.push(p.expires_at_ms);
        cols.12.push(p.idempotency_key.as_deref());
        cols.13.push(p.request_hash.as_deref());
        cols.14.push(p.collapse_key.as_deref());
        cols.15.push(p.callback_url.as_deref());
    }
    let inserted: HashSet<String> = sqlx::query_scalar::<_, String>(
        "INSERT INTO pushes (id, tenant, device_id, bindings, binding_choice, binding_index, \
             content_type, body, priority, state, attempts, max_attempts, created_at, updated_at, \
             not_before, expires_at, next_attempt_at, idempotency_key, request_hash, collapse_key, \
             callback_url) \
         SELECT id, tenant, device_id, bindings, binding_choice, 0, content_type, body, priority, \
             'queued', 0, max_attempts, created_at, created_at, not_before, expires_at, not_before, \
             idempotency_key, request_hash, collapse_key, callback_url \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::bytea[], $8::int2[], $9::int4[], $10::int8[], $11::int8[], $12::int8[], \
             $13::text[], $14::text[], $15::text[], $16::text[]) \
           AS t(id, tenant, device_id, bindings, binding_choice, content_type, body, priority, \
             max_attempts, created_at, not_before, expires_at, idempotency_key, request_hash, \
             collapse_key, callback_url) \
         ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING id",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(cols.5)
    .bind(cols.6)
    .bind(cols.7)
    .bind(cols.8)
    .bind(cols.9)
    .bind(cols.10)
    .bind(cols.11)
    .bind(cols.12)
    .bind(cols.13)
    .bind(cols.14)
    .bind(cols.15)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();

    // Keys held by pushes committed earlier (this batch's own first pushes are in `pushes`).
    let mut existing: HashMap<(String, String), (String, Option<String>)> = HashMap::new();
    let lost: Vec<&NewPush> = insert
        .iter()
        .map(|&i| &pushes[i])
        .filter(|p| !inserted.contains(&p.id))
        .collect();
    if !lost.is_empty() {
        let tenants: Vec<&str> = lost.iter().map(|p| p.tenant.as_str()).collect();
        let keys: Vec<&str> = lost
            .iter()
            .filter_map(|p| p.idempotency_key.as_deref())
            .collect();
        let rows = sqlx::query(
            "SELECT tenant, idempotency_key, id, request_hash FROM pushes \
             WHERE (tenant, idempotency_key) IN \
                 (SELECT * FROM UNNEST($1::text[], $2::text[]))",
        )
        .bind(tenants)
        .bind(keys)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            existing.insert(
                (r.try_get("tenant")?, r.try_get("idempotency_key")?),
                (r.try_get("id")?, r.try_get("request_hash")?),
            );
        }
    }

    // Decide each push's answer; replays name the earlier push (state read after collapse).
    enum Answer {
        Created,
        Replay(String),
        Conflict(String),
    }
    let mut answers = Vec::with_capacity(pushes.len());
    for p in pushes {
        if inserted.contains(&p.id) {
            answers.push(Answer::Created);
            continue;
        }
        let Some(key) = p.idempotency_key.as_deref() else {
            return Err(StoreError::Decode(format!(
                "push {} without idempotency key was not inserted",
                p.id
            )));
        };
        let earlier = match first_with_key.get(&(p.tenant.as_str(), key)) {
            Some(&j) if inserted.contains(&pushes[j].id) => {
                Some((pushes[j].id.clone(), pushes[j].request_hash.clone()))
            }
            _ => existing
                .get(&(p.tenant.clone(), key.to_owned()))
                .map(|(id, h)| (id.clone(), h.clone())),
        };
        let Some((id, hash)) = earlier else {
            return Err(StoreError::Decode(format!(
                "idempotency key of push {} conflicts with a push that cannot be found",
                p.id
            )));
        };
        answers.push(if hash == p.request_hash {
            Answer::Replay(id)
        } else {
            Answer::Conflict(id)
        });
    }

    let mut events = Events::default();
    let created: Vec<&NewPush> = pushes.iter().filter(|p| inserted.contains(&p.id)).collect();
    for p in &created {
        events.add(
            &p.id,
            p.created_at_ms,
            PushState::Queued,
            None,
            0,
            "accepted",
        );
    }

    // Collapse, in batch order: a push supersedes waiting pushes with its collapse key, except
    // itself and the pushes after it in this batch (those supersede it in their turn).
    for (n, p) in created.iter().enumerate() {
        let Some(ck) = p.collapse_key.as_deref() else {
            continue;
        };
        let keep: Vec<&str> = created[n..].iter().map(|q| q.id.as_str()).collect();
        let rows = sqlx::query(
            "UPDATE pushes SET state = 'superseded', updated_at = $4 \
             WHERE tenant = $1 AND collapse_key = $2 AND state IN ('queued', 'retry_wait') \
               AND id <> ALL($3::text[]) \
             RETURNING id, attempts",
        )
        .bind(&p.tenant)
        .bind(ck)
        .bind(keep)
        .bind(p.created_at_ms)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            let id: String = r.try_get("id")?;
            let attempts: i32 = r.try_get("attempts")?;
            events.add(
                &id,
                p.created_at_ms,
                PushState::Superseded,
                None,
                attempts,
                format!("superseded by {}", p.id),
            );
        }
    }
    events.flush(&mut tx).await?;

    let replay_ids: Vec<&str> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Replay(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let mut states: HashMap<String, String> = HashMap::new();
    if !replay_ids.is_empty() {
        for r in sqlx::query("SELECT id, state FROM pushes WHERE id = ANY($1::text[])")
            .bind(replay_ids)
            .fetch_all(&mut *tx)
            .await?
        {
            states.insert(r.try_get("id")?, r.try_get("state")?);
        }
    }
    if !created.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKEUP_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    let mut out = Vec::with_capacity(pushes.len());
    for (p, a) in pushes.iter().zip(answers) {
        out.push(match a {
            Answer::Created => Enqueued::Created { id: p.id.clone() },
            Answer::Conflict(id) => Enqueued::KeyConflict { id },
            Answer::Replay(id) => {
                let state = states
                    .get(&id)
                    .map(|s| parse_state(s))
                    .transpose()?
                    .ok_or_else(|| StoreError::Decode(format!("replayed push {id} vanished")))?;
                Enqueued::Replayed { id, state }
            }
        });
    }
    Ok(out)
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

/// After a ref changed (completion or receipt): finishes an `accepted` push whose references are
/// all delivered, or any of which failed. Returns the new final state, if any.
async fn settle_refs(
    tx: &mut Transaction<'static, Postgres>,
    push_id: &str,
    at_ms: i64,
    binding: Option<BindingKind>,
    attempt: i32,
    detail: Option<&str>,
) -> Result<Option<PushState>, StoreError> {
    let r = sqlx::query(
        "SELECT count(*) AS total, \
                count(*) FILTER (WHERE status = 'delivered') AS delivered, \
                (array_agg(detail ORDER BY reference) FILTER (WHERE status = 'failed'))[1] AS failed \
         FROM push_refs WHERE push_id = $1",
    )
    .bind(push_id)
    .fetch_one(&mut **tx)
    .await?;
    let total: i64 = r.try_get("total")?;
    let delivered: i64 = r.try_get("delivered")?;
    let failed: Option<String> = r.try_get("failed")?;
    let (state, detail) = if let Some(f) = failed {
        (
            PushState::Failed,
            detail.map(str::to_owned).unwrap_or(if f.is_empty() {
                "receipt: failed".into()
            } else {
                f
            }),
        )
    } else if total > 0 && delivered == total {
        (
            PushState::Delivered,
            detail.unwrap_or("receipt: delivered").to_owned(),
        )
    } else {
        return Ok(None);
    };
    sqlx::query("UPDATE pushes SET state = $2, updated_at = $3 WHERE id = $1")
        .bind(push_id)
        .bind(state.as_str())
        .bind(at_ms)
        .execute(&mut **tx)
        .await?;
    let mut ev = Events::default();
    ev.add(push_id, at_ms, state, binding, attempt, detail);
    ev.flush(tx).await?;
    Ok(Some(state))
}

/// Stores the references of `Accepted` completions (one statement for the batch) and settles the
/// pushes whose receipts arrived before their completion.
async fn record_refs(
    tx: &mut Transaction<'static, Postgres>,
    accepted: &[(&Completion, Vec<&str>)],
) -> Result<(), StoreError> {
    if accepted.is_empty() {
        return Ok(());
    }
    const INSERT: &str = "INSERT INTO push_refs (binding, reference, push_id, status, detail, updated_at) \
         SELECT b, r, p, 'pending', '', t \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[]) AS x(b, r, p, t) \
         ON CONFLICT (binding, reference) DO UPDATE SET push_id = EXCLUDED.push_id \
         RETURNING push_id, status";
    type Cols = (Vec<String>, Vec<String>, Vec<String>, Vec<i64>);
    let cols = |items: &[(&Completion, Vec<&str>)]| -> Cols {
        let mut cols: Cols = Default::default();
        for (c, refs) in items {
            for r in refs {
                cols.0
                    .push(c.binding.map(BindingKind::as_str).unwrap_or("").to_owned());
                cols.1.push((*r).to_owned());
                cols.2.push(c.push_id.clone());
                cols.3.push(c.at_ms);
            }
        }
        cols
    };
    let mut seen = HashSet::new();
    let unique = accepted.iter().all(|(c, refs)| {
        let b = c.binding.map(BindingKind::as_str).unwrap_or("");
        refs.iter().all(|r| seen.insert((b, *r)))
    });
    let groups: Vec<&[(&Completion, Vec<&str>)]> = if unique {
        vec![accepted]
    } else {
        // A reference named by two pushes of one batch: one statement per push, in order (one
        // INSERT … ON CONFLICT cannot change a row twice).
        accepted.chunks(1).collect()
    };
    let mut overtaken = HashSet::new();
    for g in groups {
        let (b, r, p, t) = cols(g);
        let rows: Vec<(String, String)> = sqlx::query_as(INSERT)
            .bind(b)
            .bind(r)
            .bind(p)
            .bind(t)
            .fetch_all(&mut **tx)
            .await?;
        // Keep a status set by a receipt that overtook this completion.
        overtaken.extend(
            rows.into_iter()
                .filter(|(_, status)| status != "pending")
                .map(|(push_id, _)| push_id),
        );
    }
    for (c, _) in accepted {
        if overtaken.remove(&c.push_id) {
            settle_refs(tx, &c.push_id, c.at_ms, c.binding, i32_of(c.attempt), None).await?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
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
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLS} FROM pushes WHERE tenant = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let mut rec = record_of(&row)?;
        let events = sqlx::query(
            "SELECT at, state, binding, attempt, detail FROM push_events \
             WHERE push_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        for e in events {
            rec.events.push(PushEvent {
                at_ms: e.try_get("at")?,
                state: parse_state(e.try_get("state")?)?,
                binding: parse_binding(e.try_get("binding")?, "event binding")?,
                attempt: u32_of(e.try_get("attempt")?, "event attempt")?,
                detail: e.try_get("detail")?,
            });
        }
        Ok(Some(rec))
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
        if limit == 0 {
            return Ok(Vec::new());
        }
        let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        // Candidate sets, each locked with SKIP LOCKED (FOR UPDATE is not allowed across a
        // UNION): expired leases (takeover), then due waiting pushes per priority level (the API
        // knows 1 = high and 0 = normal). With the level fixed, `pushes_due` yields rows in
        // `next_attempt_at` order and the range scan stops at the first push not yet due; one
        // scan over all levels could not stop, and walked every waiting push (a million
        // scheduled for tomorrow) on each claim. The best `limit` of the union is leased; the few
        // extra locked rows are released at commit.
        let rows = sqlx::query(
            "WITH t AS ( \
                 SELECT id, priority, next_attempt_at FROM pushes \
                 WHERE state = 'sending' AND lease_until <= $1 \
                 ORDER BY priority DESC, next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
             d1 AS ( \
                 SELECT id, priority, next_attempt_at FROM pushes \
                 WHERE state IN ('queued', 'retry_wait') AND priority = 1 \
                   AND next_attempt_at <= $1 AND expires_at > $1 \
                 ORDER BY priority DESC, next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
             d0 AS ( \
                 SELECT id, priority, next_attempt_at FROM pushes \
                 WHERE state IN ('queued', 'retry_wait') AND priority = 0 \
                   AND next_attempt_at <= $1 AND expires_at > $1 \
                 ORDER BY priority DESC, next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
             c AS ( \
                 SELECT id FROM (SELECT * FROM t UNION ALL SELECT * FROM d1 \
                                 UNION ALL SELECT * FROM d0) u \
                 ORDER BY priority DESC, next_attempt_at LIMIT $3) \
             UPDATE pushes p SET state = 'sending', lease_owner = $2, lease_until = $4, \
                 attempts = p.attempts + 1, updated_at = $1 \
             FROM c WHERE p.id = c.id \
             RETURNING p.id, p.tenant, p.device_id, p.bindings, p.binding_choice, \
                 p.binding_index, p.content_type, p.body, p.attempts, p.max_attempts, \
                 p.created_at, p.expires_at, p.callback_url, p.priority, p.next_attempt_at",
        )
        .bind(now_ms)
        .bind(owner)
        .bind(i64::from(limit))
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let bindings: String = r.try_get("bindings")?;
            let ct: &str = r.try_get("content_type")?;
            let prio: i16 = r.try_get("priority")?;
            let nat: i64 = r.try_get("next_attempt_at")?;
            out.push((
                (std::cmp::Reverse(prio), nat),
                Claimed {
                    id: r.try_get("id")?,
                    tenant: r.try_get("tenant")?,
                    device_id: r.try_get("device_id")?,
                    bindings: from_json(&bindings, "push bindings")?,
                    binding_choice: parse_binding(r.try_get("binding_choice")?, "binding_choice")?,
                    binding_index: u32_of(r.try_get("binding_index")?, "binding_index")?,
                    content_type: parse_content_type(ct)?,
                    body: r.try_get("body")?,
                    attempt: u32_of(r.try_get("attempts")?, "attempts")?,
                    max_attempts: u32_of(r.try_get("max_attempts")?, "max_attempts")?,
                    created_at_ms: r.try_get("created_at")?,
                    expires_at_ms: r.try_get("expires_at")?,
                    callback_url: r.try_get("callback_url")?,
                },
            ));
        }
        // RETURNING has no order of its own.
        out.sort_by_key(|(k, _)| *k);
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    async fn complete(&self, batch: Vec<Completion>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // One UPDATE for the whole batch (a statement per completion made the completion
        // writer, not the database, the limit on deliveries per second). Each row applies only
        // while its lease is still held by the completing owner.
        let mut cols = CompletionCols::default();
        for (ord, c) in batch.iter().enumerate() {
            cols.add(ord, c);
        }
        let distinct: HashSet<&str> = batch.iter().map(|c| c.push_id.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        let applied: HashSet<usize> = if distinct.len() == batch.len() {
            cols.apply(&mut tx).await?
        } else {
            // The same push twice in one batch: apply in order, one statement each, so the
            // second sees the first's effect (an UPDATE … FROM would pick one arbitrarily).
            let mut applied = HashSet::new();
            for (ord, c) in batch.iter().enumerate() {
                let mut one = CompletionCols::default();
                one.add(ord, c);
                applied.extend(one.apply(&mut tx).await?);
            }
            applied
        };
        let mut events = Events::default();
        let mut due_now = false;
        let mut accepted: Vec<(&Completion, Vec<&str>)> = Vec::new();
        for (ord, c) in batch.iter().enumerate() {
            if !applied.contains(&ord) {
                // The lease was lost (expired and taken over, or never held): not ours to record.
                tracing::debug!(push = %c.push_id, owner = %c.owner, "completion ignored: lease lost");
                continue;
            }
            let (state, next_at, _, _) = completion_effect(c);
            due_now |= next_at.is_some();
            let attempt = i32_of(c.attempt);
            events.add(
                &c.push_id,
                c.at_ms,
                state,
                c.binding,
                attempt,
                c.detail.clone(),
            );
            if let Next::Accepted { refs } = &c.next
                && !refs.is_empty()
            {
                let mut uniq: Vec<&str> = refs.iter().map(String::as_str).collect();
                uniq.sort_unstable();
                uniq.dedup();
                accepted.push((c, uniq));
            }
        }
        // Events first: a push's `accepted` event must precede the event of a receipt that
        // overtook it and settles it below.
        events.flush(&mut tx).await?;
        record_refs(&mut tx, &accepted).await?;
        if due_now {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(WAKEUP_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if due_now {
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn renew(&self, owner: &str, ids: &[String], until_ms: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE pushes SET lease_until = $3 \
             WHERE id = ANY($1::text[]) AND state = 'sending' AND lease_owner = $2",
        )
        .bind(ids)
        .bind(owner)
        .bind(until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn expire(&self, now_ms: i64, limit: u32) -> Result<u64, StoreError> {
        // One statement: lock (skipping rows a claimer holds), update, and write the events.
        let r = sqlx::query(
            "WITH e AS ( \
                 SELECT id FROM pushes \
                 WHERE state IN ('queued', 'retry_wait') AND expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
             u AS ( \
                 UPDATE pushes p SET state = 'expired', updated_at = $1 \
                 FROM e WHERE p.id = e.id RETURNING p.id, p.attempts) \
             INSERT INTO push_events (push_id, at, state, binding, attempt, detail) \
             SELECT id, $1, 'expired', NULL, attempts, 'ttl passed' FROM u",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn apply_receipts(
        &self,
        receipts: &[Receipt],
        now_ms: i64,
    ) -> Result<Vec<ReceiptEffect>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut effects = Vec::with_capacity(receipts.len());
        for r in receipts {
            effects.push(receipt_in(&mut tx, r, now_ms).await?);
        }
        tx.commit().await?;
        Ok(effects)
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            // Per priority level, so that each min is the first entry of `pushes_due` (one
            // min over all levels scans the whole index).
            "SELECT min(m) FROM ( \
                 SELECT min(next_attempt_at) AS m FROM pushes \
                 WHERE state IN ('queued', 'retry_wait') AND priority = 1 \
                 UNION ALL \
                 SELECT min(next_attempt_at) FROM pushes \
                 WHERE state IN ('queued', 'retry_wait') AND priority = 0) x",
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
}

/// One receipt inside the caller's transaction.
async fn receipt_in(
    tx: &mut Transaction<'static, Postgres>,
    receipt: &Receipt,
    now_ms: i64,
) -> Result<ReceiptEffect, StoreError> {
    let status = if receipt.delivered {
        "delivered"
    } else {
        "failed"
    };
    let push_id: Option<String> = sqlx::query_scalar(
        "INSERT INTO push_refs (binding, reference, push_id, status, detail, updated_at) \
         VALUES ($1, $2, NULL, $3, $4, $5) \
         ON CONFLICT (binding, reference) DO UPDATE SET status = EXCLUDED.status, \
             detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at \
         RETURNING push_id",
    )
    .bind(receipt.binding.as_str())
    .bind(&receipt.reference)
    .bind(status)
    .bind(&receipt.detail)
    .bind(now_ms)
    .fetch_one(&mut **tx)
    .await?;
    let Some(push_id) = push_id else {
        // Overtook the completion: kept, applied when the Accepted completion names it.
        return Ok(ReceiptEffect::Pending);
    };
    // Lock the push so that receipts for two parts of one push settle it once.
    let row = sqlx::query("SELECT state, attempts FROM pushes WHERE id = $1 FOR UPDATE")
        .bind(&push_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(ReceiptEffect::Ignored { push_id });
    };
    if parse_state(row.try_get("state")?)? != PushState::Accepted {
        return Ok(ReceiptEffect::Ignored { push_id });
    }
    let settled = settle_refs(
        tx,
        &push_id,
        now_ms,
        Some(receipt.binding),
        row.try_get("attempts")?,
        Some(&receipt.detail),
    )
    .await?;
    Ok(match settled {
        Some(state) => ReceiptEffect::Finished { push_id, state },
        None => ReceiptEffect::Partial { push_id },
    })
}

/// TCP_NODELAY for database sockets.
///
/// sqlx 0.9.0 stopped disabling Nagle's algorithm on its TCP sockets (transact-rs/sqlx#4335; fixed
/// upstream by #4336, not in a release yet). A query message written in more than one segment then
/// waits for the server's delayed ACK: 40 ms per group-commit batch of more than ~50 pushes, which
/// capped enqueues at ~3,000/s (docs/perf/postgres.md). sqlx offers no socket hook, so after each
/// connect we find the socket by the client port the server reports and set the option ourselves.
/// Remove when sqlx sets it again.
mod nodelay {
    /// Sets TCP_NODELAY on this process's connected TCP socket whose local port is `port`.
    #[cfg(target_os = "linux")]
    pub fn set_on_local_port(port: u16) -> bool {
        use std::os::fd::FromRawFd;
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return false;
        };
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // Sockets only: their link reads `socket:[inode]`.
            match std::fs::read_link(entry.path()) {
                Ok(t) if t.to_string_lossy().starts_with("socket:") => {}
                _ => continue,
            }
            // SAFETY: `fd` is open in this process (listed just now). `ManuallyDrop` never closes
            // it, and only getsockname/getpeername/setsockopt are called, which cannot affect
            // memory safety even if the descriptor was closed and reused meanwhile.
            let s = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
            if s.local_addr().is_ok_and(|a| a.port() == port) && s.peer_addr().is_ok() {
                return s.set_nodelay(true).is_ok();
            }
        }
        false
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set_on_local_port(_port: u16) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn nodelay_is_set_on_the_socket_with_that_local_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        client.set_nodelay(false).unwrap();
        let port = client.local_addr().unwrap().port();
        assert!(super::nodelay::set_on_local_port(port));
        assert!(client.nodelay().unwrap());
        // Still open: the helper must not have closed the descriptor it borrowed.
        assert!(client.peer_addr().is_ok());
    }
}
