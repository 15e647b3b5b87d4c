//! The dispatcher: leases due pushes in batches, runs one attempt per push on a bounded pool of
//! workers, and records the outcome durably.
//!
//! Tasks (all stop on the shutdown token, in this order):
//! * the claim loop — waits for a free worker, claims up to `claim_batch` pushes, spawns one task
//!   per push; idle, it sleeps until the store's wake-up, the next due time or the poll interval;
//! * the completion writer — batches attempt outcomes into one store transaction;
//! * the housekeeper — renews the leases of in-flight pushes, expires pushes whose TTL passed,
//!   ends `accepted` pushes whose receipt window passed `unconfirmed`, drops orphan receipts
//!   held longer than their hold window;
//! * the liveness task — heartbeats this replica and takes over the leases of replicas that
//!   stopped heartbeating (PostgreSQL; DESIGN §10.1), on its own so that a slow sweep elsewhere
//!   never delays a heartbeat into a false death;
//! * the purger — deletes final pushes older than `store.retention_seconds`, in small batches;
//! * the receipt consumer — applies late receipts from bindings (e.g. SMPP delivery receipts).
//!
//! A binding that panics costs the attempt (a transient failure, counted as outcome `panic`),
//! never a push left `sending`.
//!
//! Shutdown: stop claiming, give in-flight attempts `grace` to finish, abort the rest and
//! release their leases (they are retried, by this or another replica), flush completions.

use std::{
    collections::{HashMap, HashSet},
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{RetryPolicy, decide, now_ms, pick_binding};
use crate::{
    binding::{Bindings, Delivery, DeviceBinding, Outcome, Receipt},
    metrics::Metrics,
    store::{ClaimRoom, Claimed, Completion, Next, RECEIPT_ORPHAN_DROPPED, Store},
};

/// Most receipts applied in one store transaction.
const RECEIPT_BATCH: usize = 256;

/// How often a replica heartbeats (DESIGN §10.1: a dead replica's leases are taken over within
/// 15 s). Three beats fit in [`REPLICA_DEAD_AFTER`], so one late or failed beat is not a death.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
/// A replica whose last heartbeat is older than this is declared dead and its leases end.
/// With [`SWEEP_EVERY`] and a claim poll on top, takeover stays under the 15 s of DESIGN §10.1.
pub const REPLICA_DEAD_AFTER: Duration = Duration::from_secs(10);
/// How often each replica looks for dead ones (a query on a table of a few rows).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Final pushes deleted per purge transaction: small, so that an enqueue waiting for the
/// writer (SQLite has one) waits for one batch at most.
const PURGE_BATCH: u32 = 500;

#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    /// Lease owner id (unique per replica).
    pub owner: String,
    pub workers: usize,
    pub claim_batch: u32,
    pub lease: Duration,
    pub poll: Duration,
    pub retry: RetryPolicy,
    pub per_target: usize,
    /// `queue.tenant_max_inflight`: one tenant's attempts in flight at most (DESIGN §10.3).
    pub tenant_max_inflight: usize,
    /// The configured tenants' names: a claim takes no more pushes than they have room for
    /// under `tenant_max_inflight` (empty: no such bound).
    pub tenants: Vec<String>,
    pub grace: Duration,
    /// Upper bound on one attempt; a binding that hangs longer yields a transient failure.
    pub attempt_timeout: Duration,
    /// `queue.receipt_grace_seconds`: an `accepted` push becomes `unconfirmed` when
    /// `expires_at` + this passes without a receipt (DESIGN §10.1).
    pub receipt_grace: Duration,
    /// Final pushes older than this (by last change) are purged (`store.retention_seconds`).
    pub retention: Duration,
    /// How often the purge runs (`store.purge_interval_seconds`).
    pub purge_interval: Duration,
}

/// Default of `queue.receipt_grace_seconds` (DESIGN §10.1).
pub const DEFAULT_RECEIPT_GRACE: Duration = Duration::from_secs(600);

/// Rows one housekeeping sweep changes at most (per kind): small batches keep each write
/// transaction short, so accepts and completions never wait long behind a sweep.
const SWEEP_BATCH: u32 = 1000;

/// Whether deliveries are backlogged on this replica: the dispatcher's last claim took as many
/// pushes as it had free workers for, so more are due than it can start; or a claim deferred
/// pushes whose tenant or target was busy, and they are not all back yet (they return within
/// `DEFER_MS + DEFER_JITTER_MS`, a few per claim: the tail of a burst). The webhook sender yields
/// to it (`webhook::Sender::yield_to`): a burst of pushes is delivered first and reported right
/// after, rather than both at a fraction of the speed (issue 11 acceptance 7).
#[derive(Clone, Debug, Default)]
pub struct Backlog(Arc<BacklogState>);

#[derive(Debug, Default)]
struct BacklogState {
    full: AtomicBool,
    /// Unix ms until which deferred pushes may still come back.
    deferred_until_ms: AtomicI64,
}

impl Backlog {
    pub fn is_set(&self) -> bool {
        self.0.full.load(Relaxed) || now_ms() < self.0.deferred_until_ms.load(Relaxed)
    }

    /// After a claim: whether it took as many pushes as there were free workers.
    fn claimed(&self, full: bool) {
        self.0.full.store(full, Relaxed);
    }

    /// A claim deferred pushes, due again before `until_ms`.
    fn deferred(&self, until_ms: i64) {
        self.0.deferred_until_ms.fetch_max(until_ms, Relaxed);
    }
}

pub struct Dispatcher {
    backlog: Backlog,
    store: Arc<dyn Store>,
    bindings: Bindings,
    metrics: Metrics,
    cfg: DispatcherConfig,
    inflight: Arc<Mutex<HashSet<String>>>,
    targets: Arc<TargetLimiter>,
    tenants: Arc<TenantLimiter>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        bindings: Bindings,
        metrics: Metrics,
        cfg: DispatcherConfig,
    ) -> Self {
        let targets = Arc::new(TargetLimiter::new(cfg.per_target.max(1)));
        let tenants = Arc::new(TenantLimiter {
            limit: cfg.tenant_max_inflight.max(1),
            counts: Mutex::default(),
        });
        Self {
            backlog: Backlog::default(),
            store,
            bindings,
            metrics,
            cfg,
            inflight: Arc::default(),
            targets,
            tenants,
        }
    }

    /// Whether deliveries are backlogged ([`Backlog`]), as this dispatcher finds it.
    pub fn backlog(&self) -> Backlog {
        self.backlog.clone()
    }

    /// Runs until `shutdown` and then drains; returns when every lease is completed or released.
    pub async fn run(self, receipts: mpsc::Receiver<Receipt>, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let (done_tx, writers) = Outcomes::start(
            this.store.completion_writers(),
            this.cfg.workers.max(1) * 2,
            &this.store,
            &this.metrics,
        );
        let house = tokio::spawn(this.clone().housekeeper(shutdown.clone()));
        let receipts_task = tokio::spawn(this.clone().receipt_consumer(receipts, shutdown.clone()));
        let liveness = tokio::spawn(this.clone().liveness(shutdown.clone()));
        let purger = tokio::spawn(this.clone().purger(shutdown.clone()));

        let mut tasks = this
            .clone()
            .claim_loop(done_tx.clone(), shutdown.clone())
            .await;

        // Drain: in-flight attempts get `grace`, then are aborted and released. The set is read
        // before the abort: an aborted attempt leaves it as it is dropped. One that finishes in
        // between sent its outcome first, so the release that follows it is ignored.
        let deadline = tokio::time::sleep(this.cfg.grace);
        tokio::pin!(deadline);
        let mut leftover: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                r = tasks.join_next() => if r.is_none() { break },
                _ = &mut deadline => {
                    leftover = lock(&this.inflight).iter().cloned().collect();
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        let now = now_ms();
        for id in leftover {
            tracing::info!(message = "Releasing lease on shutdown.", push_id = %id);
            let _ = done_tx
                .send(Completion {
                    push_id: id,
                    owner: this.cfg.owner.clone(),
                    attempt: 0,
                    binding: None,
                    at_ms: now,
                    next: Next::Release,
                    detail: "released on shutdown".into(),
                })
                .await;
        }
        drop(done_tx);
        for w in writers {
            let _ = w.await;
        }
        let _ = house.await;
        let _ = receipts_task.await;
        let _ = liveness.await;
        let _ = purger.await;
        // Every lease is completed or released: leave the replica set, so that nobody sweeps
        // this replica as dead.
        if let Err(e) = this.store.stop_replica(&this.cfg.owner).await {
            tracing::warn!(message = "Could not deregister the replica.", error = %e);
        }
    }

    async fn claim_loop(
        self: Arc<Self>,
        done: Outcomes,
        shutdown: CancellationToken,
    ) -> JoinSet<()> {
        let sem = Arc::new(Semaphore::new(self.cfg.workers.max(1)));
        let mut tasks = JoinSet::new();
        let wakeup = self.store.wakeup();
        // The limit of the claim, computed by the store when the claim runs (`claim_room`):
        // `claim_batch`, the free workers (the permit held for the claim counts) and the room
        // under the tenants' caps. Only this loop takes workers and tenant slots, so what a
        // claim was sized for is still free when it returns.
        let asked = Arc::new(AtomicU32::new(0));
        let room: ClaimRoom = {
            let (tenants, known, sem, asked) = (
                self.tenants.clone(),
                Arc::<[String]>::from(self.cfg.tenants.as_slice()),
                sem.clone(),
                asked.clone(),
            );
            let batch = self.cfg.claim_batch.max(1) as usize;
            Arc::new(move || {
                let n = batch
                    .min(tenants.headroom(&known))
                    .min(sem.available_permits().saturating_add(1))
                    .max(1);
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                asked.store(n, Relaxed);
                n
            })
        };
        loop {
            while tasks.try_join_next().is_some() {}
            let first = tokio::select! {
                p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            // Never claim more pushes than can start now. A push whose tenant is at
            // `tenant_max_inflight` is written back at once (deferred); with one tenant (the
            // usual deployment) and the default cap of half the workers, every other claim was
            // written back whole — a fifth of the store's statements in the SMS benchmark
            // (docs/PERFORMANCE.md §6, seventh pass).
            if self.tenants.headroom(&self.cfg.tenants) == 0 {
                drop(first);
                // Every known tenant is at its cap, so only an attempt that ends frees room.
                if !attempt_ends(&mut tasks, self.cfg.poll, &shutdown).await {
                    break;
                }
                continue;
            }
            let now = now_ms();
            let started = Instant::now();
            let claimed = match self
                .store
                .claim_room(&self.cfg.owner, now, self.cfg.lease, room.clone())
                .await
            {
                Ok(c) => {
                    self.backlog
                        .claimed(c.len() >= asked.load(Relaxed) as usize);
                    self.metrics
                        .store_seconds
                        .with_label_values(&["claim"])
                        .observe(started.elapsed().as_secs_f64());
                    if !c.is_empty() {
                        self.metrics.claim_size.observe(c.len() as f64);
                    }
                    c
                }
                Err(e) => {
                    self.metrics
                        .store_errors
                        .with_label_values(&["claim"])
                        .inc();
                    tracing::warn!(message = "Claim failed.", error = %e);
                    drop(first);
                    tokio::select! {
                        _ = tokio::time::sleep(self.cfg.poll) => {},
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(first);
                let wait = match self.store.next_due().await {
                    // `max(25)`: clamp panics when its bounds cross, and `poll_interval_ms` may
                    // be as low as 10.
                    Ok(Some(t)) => Duration::from_millis(
                        (t - now).clamp(25, (self.cfg.poll.as_millis() as i64).max(25)) as u64,
                    ),
                    _ => self.cfg.poll,
                };
                tokio::select! {
                    _ = wakeup.notified() => {},
                    _ = tokio::time::sleep(wait) => {},
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let taken: Vec<&Claimed> = claimed
                .iter()
                .filter(|c| c.taken_over_from.is_some())
                .collect();
            if !taken.is_empty() {
                self.metrics.lease_takeovers.inc_by(taken.len() as u64);
                for c in taken {
                    tracing::warn!(
                        message = "Took over a lease that ended without an outcome; the device may get this push twice.",
                        push_id = %c.id,
                        previous_owner = c.taken_over_from.as_deref().unwrap_or(""),
                        attempt = c.attempt,
                    );
                }
            }
            // Fairness (DESIGN §10.3): a push runs only if its tenant is under its in-flight cap
            // and its target has a free slot, so that no worker ever waits for either (one
            // tenant flooding a black-holed target used to hold every worker). The others go
            // back to the queue a little later, behind other tenants' due pushes.
            let mut runnable = Vec::with_capacity(claimed.len());
            let mut deferred = Vec::new();
            let mut first = Some(first);
            for push in claimed {
                // A worker for each (the claim was sized by the free ones, so none is missing
                // unless a store claimed more than it was asked for).
                let Some(permit) = first
                    .take()
                    .or_else(|| sem.clone().try_acquire_owned().ok())
                else {
                    self.metrics
                        .claims_deferred
                        .with_label_values(&[Busy::Workers.label()])
                        .inc();
                    deferred.push(push);
                    continue;
                };
                match self.slots(&push) {
                    Ok(slots) => runnable.push((push, (permit, slots))),
                    Err(busy) => {
                        self.metrics
                            .claims_deferred
                            .with_label_values(&[busy.label()])
                            .inc();
                        deferred.push(push);
                    }
                }
            }
            {
                let mut inflight = lock(&self.inflight);
                for (c, _) in &runnable {
                    inflight.insert(c.id.clone());
                }
                self.metrics.leases_held.set(inflight.len() as i64);
            }
            // The permits of deferred pushes were dropped with them: free again at once.
            for (push, held) in runnable {
                tasks.spawn(self.clone().attempt(push, held, done.clone()));
            }
            let deferred_any = !deferred.is_empty();
            if deferred_any {
                tracing::debug!(
                    message = "Deferred pushes whose tenant or target is busy.",
                    count = deferred.len()
                );
                let now = now_ms();
                self.backlog
                    .deferred(now + (DEFER_MS + DEFER_JITTER_MS) as i64);
                for push in deferred {
                    let jitter = rand::random::<u64>() % DEFER_JITTER_MS;
                    let c = Completion {
                        push_id: push.id,
                        owner: self.cfg.owner.clone(),
                        attempt: push.attempt,
                        binding: None,
                        at_ms: now,
                        next: Next::Requeue {
                            at_ms: now + (DEFER_MS + jitter) as i64,
                        },
                        detail: String::new(),
                    };
                    if done.send(c).await.is_err() {
                        break;
                    }
                }
            }
            // Deferred pushes are written back, so the next claim finds others. Claim again when
            // an attempt ends (a tenant or target slot is free again) or after a short pause:
            // this bounds how fast a backlog is cycled through while its tenant stays at its cap,
            // without leaving freed workers idle.
            if deferred_any && !attempt_ends(&mut tasks, DEFER_PAUSE, &shutdown).await {
                break;
            }
        }
        tasks
    }

    /// The tenant and target slots `push` needs to run now, or which of them is taken. A push
    /// that cannot reach a binding (expired, none configured) needs no target slot: its attempt
    /// ends at once.
    fn slots(&self, push: &Claimed) -> Result<Slots, Busy> {
        let tenant = self.tenants.try_acquire(&push.tenant).ok_or(Busy::Tenant)?;
        let target = match pick_binding(push, |k| self.bindings.get(k).is_some()) {
            Ok((_, target)) if push.expires_at_ms > now_ms() => Some(
                self.targets
                    .try_acquire(target_key(target))
                    .ok_or(Busy::Target)?,
            ),
            _ => None,
        };
        Ok(Slots {
            _tenant: tenant,
            _target: target,
        })
    }

    /// One attempt for one leased push. Everything it does, the binding's work included, runs
    /// inside the `attempt` span, so every log line carries `push_id` and `device_id`.
    async fn attempt(
        self: Arc<Self>,
        push: Claimed,
        permit: (OwnedSemaphorePermit, Slots),
        done: Outcomes,
    ) {
        let span = tracing::info_span!(
            "attempt",
            push_id = %push.id,
            device_id = push.device_id.as_deref().unwrap_or(""),
            attempt = push.attempt
        );
        self.attempt_in_span(push, permit, done)
            .instrument(span)
            .await
    }

    /// The binding to attempt with its secrets: for a registered device, the device's binding
    /// to the same target (the row holds none, docs/security.md); for an inline push, its own.
    async fn device_target(
        &self,
        push: &Claimed,
        target: &DeviceBinding,
    ) -> Result<DeviceBinding, Outcome> {
        let Some(id) = &push.device_id else {
            return Ok(target.clone());
        };
        match self.store.get_device(&push.tenant, id).await {
            Ok(Some(d)) => {
                target
                    .with_device_secrets(&d.bindings)
                    .ok_or_else(|| Outcome::Permanent {
                        reason: "device binding changed: the device no longer has this target"
                            .into(),
                    })
            }
            Ok(None) => Err(Outcome::Permanent {
                reason: "device deleted".into(),
            }),
            Err(e) => Err(Outcome::Transient {
                reason: format!("reading the device: {e}"),
                retry_after: None,
            }),
        }
    }

    async fn attempt_in_span(
        self: Arc<Self>,
        push: Claimed,
        _permits: (OwnedSemaphorePermit, Slots),
        done: Outcomes,
    ) {
        // However the attempt ends (outcome sent, a panic outside the binding, or an abort at
        // shutdown) the push leaves the in-flight set: after a panic its lease is no longer
        // renewed, expires, and is taken over (with an event) instead of being renewed for
        // ever in `sending`.
        let _inflight = InflightGuard {
            dispatcher: &self,
            id: &push.id,
        };
        let now = now_ms();
        let (next, detail, kind) = if push.expires_at_ms <= now {
            (Next::Expired, "ttl passed".to_owned(), None)
        } else {
            // A bootstrap's SEC/MAC has a place only in WAP push: `auto` skips the others.
            let can = |k| {
                self.bindings
                    .get(k)
                    .is_some_and(|b| push.bootstrap.is_none() || b.carries_bootstrap())
            };
            match pick_binding(&push, can) {
                Err(reason) => (Next::Failed, reason, None),
                Ok((index, target)) => match self.bindings.get(target.kind()) {
                    None => (
                        Next::Failed,
                        format!(
                            "binding {} is not configured on this gateway",
                            target.kind()
                        ),
                        None,
                    ),
                    // Only reachable with an explicit binding the API would have refused.
                    Some(b) if push.bootstrap.is_some() && !b.carries_bootstrap() => (
                        Next::Failed,
                        crate::binding::BOOTSTRAP_WAP_ONLY.to_owned(),
                        None,
                    ),
                    Some(binding) => {
                        let kind = target.kind();
                        let start = Instant::now();
                        // A registered device's secrets are not in the push row: take them from
                        // the device now (issue 12). No device: the push fails permanently.
                        let resolved = self.device_target(&push, target).await;
                        let delivery = Delivery {
                            push_id: push.id.clone(),
                            tenant: push.tenant.clone(),
                            device_id: push.device_id.clone(),
                            target: resolved.as_ref().unwrap_or(target).clone(),
                            content_type: push.content_type,
                            body: Bytes::from(push.body.clone()),
                            bootstrap: push.bootstrap.clone(),
                            attempt: push.attempt,
                            expires_at: time::OffsetDateTime::from_unix_timestamp_nanos(
                                push.expires_at_ms as i128 * 1_000_000,
                            )
                            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                            now: time::OffsetDateTime::now_utc(),
                        };
                        // The call inside the future, so that a panic while building it is
                        // caught too. AssertUnwindSafe: after a panic nothing of the delivery
                        // is used again; the binding's own state is its to keep consistent
                        // (its locks are poison-tolerant, as ours are).
                        let guarded = AssertUnwindSafe(async {
                            match resolved {
                                Ok(_) => binding.deliver(delivery).await,
                                Err(o) => o,
                            }
                        })
                        .catch_unwind();
                        let (outcome, label) = match tokio::time::timeout(
                            self.cfg.attempt_timeout,
                            guarded,
                        )
                        .await
                        {
                            Ok(Ok(o)) => {
                                let label = o.label();
                                (o, label)
                            }
                            Ok(Err(panic)) => {
                                let reason =
                                    format!("binding panicked: {}", panic_message(&*panic));
                                tracing::error!(message = "Binding panicked during an attempt; counted as a transient failure.", binding = %kind, reason = %reason);
                                (
                                    Outcome::Transient {
                                        reason,
                                        retry_after: None,
                                    },
                                    "panic",
                                )
                            }
                            Err(_) => (
                                Outcome::Transient {
                                    reason: "attempt timed out".into(),
                                    retry_after: None,
                                },
                                "transient",
                            ),
                        };
                        self.metrics
                            .attempt_seconds
                            .with_label_values(&[kind.as_str()])
                            .observe(start.elapsed().as_secs_f64());
                        self.metrics
                            .deliveries
                            .with_label_values(&[kind.as_str(), label])
                            .inc();
                        let (next, detail) = decide(
                            &push,
                            index,
                            &outcome,
                            now_ms(),
                            self.cfg.retry,
                            rand::random::<f64>(),
                        );
                        tracing::info!(
                            message = "Attempt finished.",
                            binding = %kind,
                            outcome = label,
                            detail = %detail,
                        );
                        (next, detail, Some(kind))
                    }
                },
            }
        };
        let completion = Completion {
            push_id: push.id.clone(),
            owner: self.cfg.owner.clone(),
            attempt: push.attempt,
            binding: kind,
            at_ms: now_ms(),
            next,
            detail,
        };
        // Removed from the in-flight set (by the guard) only once the writer has the
        // completion, so that the lease keeps being renewed until then.
        let _ = done.send(completion).await;
    }

    /// Heartbeats this replica and sweeps dead ones (both no-ops on a store one process owns).
    async fn liveness(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_beat: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = shutdown.cancelled() => break,
            }
            let now = now_ms();
            if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY) {
                match self.store.heartbeat(&self.cfg.owner, now).await {
                    Ok(()) => last_beat = Some(Instant::now()),
                    Err(e) => {
                        self.metrics
                            .store_errors
                            .with_label_values(&["heartbeat"])
                            .inc();
                        tracing::warn!(message = "Heartbeat failed.", error = %e);
                    }
                }
            }
            let dead_before = now - REPLICA_DEAD_AFTER.as_millis() as i64;
            match self.store.sweep_dead_replicas(dead_before, now).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    message = "A replica stopped heartbeating; its leases are taken over now.",
                    leases = n
                ),
                Err(e) => {
                    self.metrics
                        .store_errors
                        .with_label_values(&["sweep"])
                        .inc();
                    tracing::warn!(message = "Dead-replica sweep failed.", error = %e);
                }
            }
        }
    }

    /// Deletes final pushes older than the retention, every purge interval, in batches of
    /// [`PURGE_BATCH`] with a yield between them so that accepts are never held up for long.
    async fn purger(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.purge_interval.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let retention = i64::try_from(self.cfg.retention.as_millis()).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = shutdown.cancelled() => break,
            }
            let before = now_ms().saturating_sub(retention);
            let mut purged = 0;
            while !shutdown.is_cancelled() {
                match self.store.purge(before, PURGE_BATCH).await {
                    Ok(n) => {
                        purged += n;
                        self.metrics.store_purged.inc_by(n);
                        if n < u64::from(PURGE_BATCH) {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    Err(e) => {
                        self.metrics
                            .store_errors
                            .with_label_values(&["purge"])
                            .inc();
                        tracing::warn!(message = "Purge failed.", error = %e);
                        break;
                    }
                }
            }
            if purged > 0 {
                tracing::info!(
                    message = "Purged final pushes past retention.",
                    count = purged
                );
            }
        }
    }

    async fn housekeeper(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let renew_every = (self.cfg.lease / 3).max(Duration::from_millis(500));
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = shutdown.cancelled() => break,
            }
            let now = now_ms();
            if last_renew.elapsed() >= renew_every {
                last_renew = Instant::now();
                let ids: Vec<String> = lock(&self.inflight).iter().cloned().collect();
                if let Err(e) = self
                    .store
                    .renew(
                        &self.cfg.owner,
                        &ids,
                        now + self.cfg.lease.as_millis() as i64,
                    )
                    .await
                {
                    self.metrics
                        .store_errors
                        .with_label_values(&["renew"])
                        .inc();
                    tracing::warn!(message = "Lease renewal failed.", error = %e);
                }
            }
            self.receipt_sweeps(now).await;
            match self.store.expire(now, SWEEP_BATCH).await {
                Ok(n) if n > 0 => {
                    tracing::info!(message = "Expired pushes whose TTL passed.", count = n)
                }
                Ok(_) => {}
                Err(e) => {
                    self.metrics
                        .store_errors
                        .with_label_values(&["expire"])
                        .inc();
                    tracing::warn!(message = "Expiry sweep failed.", error = %e);
                }
            }
        }
    }

    /// The receipt window (`accepted` → `unconfirmed`) and the orphan receipt purge.
    async fn receipt_sweeps(&self, now: i64) {
        let grace = i64::try_from(self.cfg.receipt_grace.as_millis()).unwrap_or(i64::MAX);
        match self.store.unconfirm(now, grace, SWEEP_BATCH).await {
            Ok(n) if n > 0 => {
                tracing::info!(
                    message = "No receipt within ttl + grace: pushes unconfirmed.",
                    count = n
                )
            }
            Ok(_) => {}
            Err(e) => {
                self.metrics
                    .store_errors
                    .with_label_values(&["unconfirm"])
                    .inc();
                tracing::warn!(message = "Receipt window sweep failed.", error = %e);
            }
        }
        match self.store.drop_orphan_receipts(now, SWEEP_BATCH).await {
            Ok(dropped) => {
                for (binding, n) in dropped {
                    tracing::info!(message = "Dropped receipts no push claimed within their hold window.", binding = %binding, count = n);
                    self.metrics
                        .receipts
                        .with_label_values(&[binding.as_str(), RECEIPT_ORPHAN_DROPPED])
                        .inc_by(n);
                }
            }
            Err(e) => {
                self.metrics
                    .store_errors
                    .with_label_values(&["orphan_receipts"])
                    .inc();
                tracing::warn!(message = "Orphan receipt purge failed.", error = %e);
            }
        }
    }

    async fn receipt_consumer(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Receipt>,
        shutdown: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(RECEIPT_BATCH);
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut batch, RECEIPT_BATCH) => n,
                _ = shutdown.cancelled() => break,
            };
            if n == 0 {
                break;
            }
            // One transaction for everything that arrived meanwhile (an SMSC sends receipts in
            // bursts; one commit each made the store's fsync the limit).
            match self.apply_receipts(&batch).await {
                Ok(()) => batch.iter().for_each(|r| acknowledge(r, true)),
                Err(e) if batch.len() > 1 => {
                    tracing::warn!(message = "Receipt batch failed; applying one by one.", error = %e, count = batch.len());
                    for r in &batch {
                        let result = self.apply_receipts(std::slice::from_ref(r)).await;
                        if let Err(e) = &result {
                            self.receipt_lost(r, e);
                        }
                        acknowledge(r, result.is_ok());
                    }
                }
                Err(e) => {
                    self.receipt_lost(&batch[0], &e);
                    acknowledge(&batch[0], false);
                }
            }
            batch.clear();
        }
    }

    /// Applies receipts in one store transaction, retrying transient errors.
    async fn apply_receipts(&self, batch: &[Receipt]) -> Result<(), crate::store::StoreError> {
        let mut tries = 0;
        loop {
            match self.store.apply_receipts(batch, now_ms()).await {
                Ok(effects) => {
                    for (r, effect) in batch.iter().zip(&effects) {
                        if let crate::store::ReceiptEffect::FellBack { push_id, .. } = effect {
                            tracing::info!(
                                message = "Failed receipt: falling back to the next binding.",
                                push_id = %push_id,
                                reference = %r.reference,
                            );
                        }
                        self.metrics
                            .receipts
                            .with_label_values(&[r.binding.as_str(), effect.label()])
                            .inc();
                    }
                    return Ok(());
                }
                Err(e) if tries < 5 && e.is_transient() => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100 << tries)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn receipt_lost(&self, r: &Receipt, e: &crate::store::StoreError) {
        self.metrics
            .store_errors
            .with_label_values(&["receipt"])
            .inc();
        tracing::error!(message = "Receipt could not be recorded.", error = %e, reference = %r.reference);
    }
}

/// Waits until one of `tasks` (attempts) ends or `pause` passes; `false` at shutdown.
async fn attempt_ends(
    tasks: &mut JoinSet<()>,
    pause: Duration,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        Some(_) = tasks.join_next(), if !tasks.is_empty() => true,
        _ = tokio::time::sleep(pause) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Where attempts send their outcomes: one of the store's completion writers, always the same
/// one for a push, so that a push's outcomes commit in the order they were sent (an outcome, then
/// its release at shutdown). A store whose writes run concurrently (PostgreSQL) has several: one
/// writer's batch waits for its round trips while the next batch is already on its way.
#[derive(Clone)]
struct Outcomes(Arc<[mpsc::Sender<Completion>]>);

impl Outcomes {
    /// `n` writers (at least one), each with a queue of `capacity`.
    fn start(
        n: usize,
        capacity: usize,
        store: &Arc<dyn Store>,
        metrics: &Metrics,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (txs, tasks): (Vec<_>, Vec<_>) = (0..n.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Completion>(capacity);
                (
                    tx,
                    tokio::spawn(completion_writer(store.clone(), metrics.clone(), rx)),
                )
            })
            .unzip();
        (Self(txs.into()), tasks)
    }

    async fn send(&self, c: Completion) -> Result<(), mpsc::error::SendError<Completion>> {
        self.0[writer_of(&c.push_id, self.0.len())].send(c).await
    }
}

/// The writer (of `n`) that records `push_id`'s outcomes.
fn writer_of(push_id: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same push maps to the same writer for the life of the process.
    let mut h = std::hash::DefaultHasher::new();
    push_id.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}

/// Writes completions in batches; retries transient store errors so that an outcome is not
/// lost to a busy database (if it still fails, the lease expires and the push is retried).
async fn completion_writer(
    store: Arc<dyn Store>,
    metrics: Metrics,
    mut rx: mpsc::Receiver<Completion>,
) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let work = std::mem::take(&mut batch);
        let mut delay = Duration::from_millis(50);
        for attempt in 0..8 {
            let started = Instant::now();
            match store.complete(work.clone()).await {
                Ok(()) => {
                    metrics
                        .store_seconds
                        .with_label_values(&["complete"])
                        .observe(started.elapsed().as_secs_f64());
                    break;
                }
                Err(e) => {
                    metrics.store_errors.with_label_values(&["complete"]).inc();
                    tracing::warn!(message = "Recording outcomes failed.", error = %e, attempt, count = work.len());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Tells the binding whether its receipt is committed (it acknowledges the peer only then).
fn acknowledge(r: &Receipt, committed: bool) {
    if let Some(ack) = &r.ack {
        ack.done(committed);
    }
}

/// Removes one push from the in-flight set when its attempt ends, however it ends.
struct InflightGuard<'a> {
    dispatcher: &'a Dispatcher,
    id: &'a str,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut inflight = lock(&self.dispatcher.inflight);
        inflight.remove(self.id);
        self.dispatcher
            .metrics
            .leases_held
            .set(inflight.len() as i64);
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the set inconsistent (single insert/remove).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The address an attempt goes to, for the per-target concurrency limit.
fn target_key(t: &DeviceBinding) -> String {
    match t {
        DeviceBinding::Wap {
            msisdn, address, ..
        } => format!(
            "wap:{}",
            msisdn.as_deref().or(address.as_deref()).unwrap_or("")
        ),
        DeviceBinding::Sip { uri, gruu } => format!("sip:{}", gruu.as_deref().unwrap_or(uri)),
        DeviceBinding::Http { url, .. } => format!("http:{url}"),
        DeviceBinding::Obex { address, .. } => format!("obex:{address}"),
    }
}

/// How long a deferred push waits before it is due again (plus up to [`DEFER_JITTER_MS`], so
/// that a flood of deferred pushes does not come back in one claim).
const DEFER_MS: u64 = 1000;
const DEFER_JITTER_MS: u64 = 1000;
/// Pause of the claim loop after a claim that deferred pushes.
const DEFER_PAUSE: Duration = Duration::from_millis(50);

/// Why a claimed push cannot start now (the label of `dmpushd_claims_deferred_total`).
#[derive(Clone, Copy, Debug)]
enum Busy {
    Tenant,
    Target,
    /// No free worker: only when a store returned more than the claim's room.
    Workers,
}

impl Busy {
    fn label(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Target => "target",
            Self::Workers => "workers",
        }
    }
}

/// What a running attempt holds besides its worker permit.
struct Slots {
    _tenant: TenantSlot,
    _target: Option<TargetSlot>,
}

/// At most `limit` attempts in flight per tenant; entries vanish at zero.
struct TenantLimiter {
    limit: usize,
    counts: Mutex<HashMap<String, usize>>,
}

struct TenantSlot {
    limiter: Arc<TenantLimiter>,
    tenant: String,
}

impl TenantLimiter {
    /// How many more attempts could start now, summed over `known` tenants (the configured
    /// ones) and any other tenant with attempts in flight; unbounded when no tenant is known.
    /// A push of a tenant outside `known` (dropped from the configuration, its pushes still
    /// queued) is claimed whenever there is room at all.
    fn headroom(&self, known: &[String]) -> usize {
        if known.is_empty() {
            return usize::MAX;
        }
        let counts = lock(&self.counts);
        let free = |n: usize| self.limit.saturating_sub(n);
        let configured: usize = known
            .iter()
            .map(|t| free(counts.get(t).copied().unwrap_or(0)))
            .sum();
        let others: usize = counts
            .iter()
            .filter(|(t, _)| !known.contains(t))
            .map(|(_, n)| free(*n))
            .sum();
        configured.saturating_add(others)
    }

    fn try_acquire(self: &Arc<Self>, tenant: &str) -> Option<TenantSlot> {
        let mut counts = lock(&self.counts);
        let n = counts.entry(tenant.to_owned()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(TenantSlot {
            limiter: self.clone(),
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.limiter.counts);
        if let Some(n) = counts.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

/// At most `limit` concurrent attempts per target; entries vanish when unused.
struct TargetLimiter {
    limit: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

struct TargetSlot {
    limiter: Arc<TargetLimiter>,
    key: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for TargetSlot {
    fn drop(&mut self) {
        let mut slots = lock(&self.limiter.slots);
        // Give the permit back under the lock, then drop the entry if nobody else holds it.
        drop(self.permit.take());
        if let Some(s) = slots.get(&self.key) {
            // Only the map holds it: no attempt holds a permit of it.
            if Arc::strong_count(s) == 1 {
                slots.remove(&self.key);
            }
        }
    }
}

impl TargetLimiter {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            slots: Mutex::default(),
        }
    }

    /// A slot for `key` if one is free now (never waits: see the claim loop).
    fn try_acquire(self: &Arc<Self>, key: String) -> Option<TargetSlot> {
        let sem = lock(&self.slots)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone();
        match sem.try_acquire_owned() {
            Ok(permit) => Some(TargetSlot {
                limiter: self.clone(),
                key,
                permit: Some(permit),
            }),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_always_goes_to_the_same_writer_and_pushes_spread_over_all() {
        let ids: Vec<String> = (0..400).map(|i| format!("0190a1b2-{i:04}")).collect();
        for n in [1, 2, 4] {
            let mut used = vec![0usize; n];
            for id in &ids {
                let w = writer_of(id, n);
                assert_eq!(w, writer_of(id, n), "{id} moved between writers");
                used[w] += 1;
            }
            // Each writer gets a fair share (400 / n, within a generous margin).
            assert!(
                used.iter().all(|&u| u * n * 2 > ids.len()),
                "n = {n}: {used:?}"
            );
        }
        assert_eq!(writer_of("x", 0), 0, "no writers is treated as one");
    }

    #[test]
    fn backlog_is_a_full_claim_or_deferred_pushes_still_to_come_back() {
        let b = Backlog::default();
        assert!(!b.is_set());
        b.claimed(true);
        assert!(b.is_set());
        b.claimed(false);
        assert!(!b.is_set());
        // Deferred pushes come back until the horizon; an earlier one does not shorten it.
        b.deferred(now_ms() + 60_000);
        b.deferred(now_ms() - 1);
        assert!(b.is_set());
        let past = Backlog::default();
        past.deferred(now_ms() - 1);
        assert!(!past.is_set());
    }
}
