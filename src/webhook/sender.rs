//! The webhook sender: one task per replica that delivers the outbox (src/store/outbox.rs).
//!
//! Loop: claim due events (no more per target than [`PER_TARGET`] in flight plus
//! [`AHEAD_PER_TARGET`] waiting) with their payloads (one batch read per claim), POST each in its
//! own task as its target has a free slot, record the attempt. A wake-up claims only when a claim
//! is worth its cost (`Sender::worth_claiming`), otherwise the poll does. 2xx = done; anything else, a timeout or a connection error
//! = retry with jittered exponential backoff ([`outbox::after_failure`]), given up after
//! `max_age_seconds`. Attempts are recorded by one recorder task in batches, one transaction
//! each: a transaction per attempt made the store's commit (an fsync on SQLite) the limit of the
//! webhook rate (docs/perf/webhooks.md); an event's lease lasts until its record is written, so no
//! other claim takes it meanwhile. Redirects are not followed; host names are resolved through the
//! [`CheckedResolver`] so `[webhooks] allow_targets` applies to the addresses connected to.

use std::{
    collections::{HashMap, VecDeque},
    error::Error as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};
use tokio::{
    sync::{Notify, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{Targets, WebhooksConfig};
use crate::{
    api::pushes::PushView,
    net::targets::{CheckedResolver, TargetRefused},
    queue::dispatcher::Backlog,
    store::{
        AsOf, Store, StoreError,
        outbox::{self, AttemptRecord, AttemptResult, ClaimRequest, OutboxEvent},
    },
};

/// Requests in flight to one target URL at most: a slow receiver ties up only these (and the
/// events claimed ahead for it); its further events are not even claimed while it holds
/// [`PER_TARGET`] + [`AHEAD_PER_TARGET`].
pub const PER_TARGET: usize = 4;
/// [`PER_TARGET`] + [`AHEAD_PER_TARGET`]: what a claim may hold for one target.
const HELD_PER_TARGET_U32: u32 = 64;
const _: () = assert!(HELD_PER_TARGET_U32 as usize == PER_TARGET + AHEAD_PER_TARGET);
/// Events claimed ahead per target, beyond those in flight (leased, waiting for a slot).
pub const AHEAD_PER_TARGET: usize = 60;
/// Events held per replica at most (in flight and waiting).
const MAX_HELD: usize = 512;
/// Requests in flight per replica at most.
pub const MAX_IN_FLIGHT: usize = 128;
/// How often the outbox is polled when idle (events become due by time as well as by commits).
const POLL: Duration = Duration::from_millis(200);
/// Events claimed at most per round.
const CLAIM_BATCH: u32 = 64;
/// How long the sender yields to a delivery backlog at most while it is itself behind
/// ([`Sender::yielding`]).
const MAX_YIELD: Duration = Duration::from_secs(30);
/// Attempt records written at most per transaction.
const RECORD_BATCH: usize = 256;

#[derive(Clone)]
struct SenderMetrics {
    deliveries: IntCounterVec,
    depth: IntGauge,
    attempt: Histogram,
    /// The sender's own writes (claim, record): they share the store's write path with the
    /// dispatcher, so their count and duration explain what webhooks cost deliveries.
    store: HistogramVec,
}

impl SenderMetrics {
    fn new(registry: &prometheus::Registry) -> anyhow::Result<Self> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "dmpushd_webhook_deliveries_total",
                "Webhook attempts by outcome (delivered, retry, given_up)",
            ),
            &["outcome"],
        )?;
        let depth = IntGauge::new(
            "dmpushd_webhook_outbox_depth",
            "Webhook events waiting to be delivered",
        )?;
        let attempt = Histogram::with_opts(HistogramOpts::new(
            "dmpushd_webhook_attempt_seconds",
            "Duration of one webhook attempt",
        ))?;
        let store = HistogramVec::new(
            HistogramOpts::new(
                "dmpushd_webhook_store_seconds",
                "Duration of the webhook sender's store writes, by operation (claim, record)",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["op"],
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(depth.clone()))?;
        registry.register(Box::new(attempt.clone()))?;
        registry.register(Box::new(store.clone()))?;
        for o in ["delivered", "retry", "given_up"] {
            deliveries.with_label_values(&[o]);
        }
        for op in ["claim", "record"] {
            store.with_label_values(&[op]);
        }
        Ok(Self {
            deliveries,
            depth,
            attempt,
            store,
        })
    }
}

/// Shared between the claim loop and the delivery tasks.
struct Shared {
    store: Arc<dyn Store>,
    targets: Arc<Targets>,
    client: reqwest::Client,
    owner: String,
    max_age: Duration,
    metrics: SenderMetrics,
    /// Requests in flight per target URL.
    busy: Mutex<HashMap<String, usize>>,
    /// Attempts to the recorder task.
    records: mpsc::Sender<AttemptRecord>,
    /// Signalled when a batch is recorded: the events it finished may have made their pushes'
    /// next events claimable.
    recorded: Notify,
}

pub struct Sender {
    shared: Arc<Shared>,
    lease: Duration,
    /// How long a claimed event may wait here before it is started: its attempt and record must
    /// end within the lease.
    hold: Duration,
    records: mpsc::Receiver<AttemptRecord>,
    /// Claimed events waiting for a free slot of their target (at most [`AHEAD_PER_TARGET`]
    /// beyond [`PER_TARGET`] per target), oldest first, with their claim time. Claiming ahead
    /// takes the claim's round trip out of each request's cycle: with one target, a claim per
    /// finished request held the rate at ≈ 400 webhooks/s (docs/perf/webhooks.md).
    waiting: HashMap<String, VecDeque<(Held, Instant)>>,
    /// While set, claims wait for the poll ([`Sender::yield_to`]).
    backlog: Option<Backlog>,
    /// Since when this sender's claims have come back full (it is behind), if they have.
    behind_since: Option<Instant>,
    /// [`Sender::yielding`] as of the claim loop's last turn, for the recorder.
    yielding_now: Arc<AtomicBool>,
}

impl Sender {
    pub fn new(
        store: Arc<dyn Store>,
        targets: Arc<Targets>,
        cfg: &WebhooksConfig,
        owner: String,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Self> {
        let timeout = Duration::from_secs(cfg.timeout_seconds.max(1));
        let tls = crate::tls::ClientTls {
            section: "webhooks",
            ca_file: None,
            client_cert: None,
            client_key: None,
            alpn: &[b"h2", b"http/1.1"],
        }
        .build()?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .dns_resolver(CheckedResolver {
                policy: targets.policy.clone(),
                section: "webhooks",
            })
            .no_proxy()
            // A redirect could point anywhere the allow-list forbids; a moved receiver must be
            // reconfigured.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(PER_TARGET)
            .user_agent(concat!("dmpushd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (records, records_rx) = mpsc::channel(MAX_IN_FLIGHT * 2);
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                targets,
                client,
                owner,
                max_age: Duration::from_secs(cfg.max_age_seconds),
                metrics: SenderMetrics::new(registry)?,
                busy: Mutex::new(HashMap::new()),
                records,
                recorded: Notify::new(),
            }),
            records: records_rx,
            // Long enough for the request and for recording it; a crashed replica's events are
            // retaken after this.
            lease: timeout + Duration::from_secs(30),
            // Started later than this, an event goes back (the request and its record get the
            // rest of the lease: the timeout and 10 s).
            hold: Duration::from_secs(20),
            waiting: HashMap::new(),
            backlog: None,
            behind_since: None,
            yielding_now: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Yields to deliveries: while `backlog` is set (the dispatcher has more due pushes than free
    /// workers, or deferred pushes still to come back), claims only at the poll — at most
    /// [`CLAIM_BATCH`] events per [`POLL`], 320 webhooks/s per replica — instead of whenever a
    /// target has room, and attempts are recorded once per poll. Webhooks then never stop, and
    /// catch up at full speed once the backlog is gone, or once this sender has been behind for
    /// [`MAX_YIELD`] (docs/decisions/webhooks.md "When the sender claims").
    pub fn yield_to(mut self, backlog: Backlog) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Delivers until `stop`, then waits for the requests in flight (their leases would
    /// otherwise delay those events by a lease length).
    pub async fn run(mut self, stop: CancellationToken) {
        let Some(_) = self.shared.store.outbox() else {
            tracing::warn!(message = "The store has no webhook outbox; webhooks are off.");
            return;
        };
        let (_, closed) = mpsc::channel(1);
        let recorder = tokio::spawn(record_loop(
            self.shared.clone(),
            self.yielding_now.clone(),
            std::mem::replace(&mut self.records, closed),
        ));
        let mut tasks = JoinSet::new();
        let mut depth_at: Option<Instant> = None;
        let mut claim = true;
        let mut poll_at = Instant::now() + POLL;
        loop {
            // Finished tasks leave the set here, so that its length is what is in flight.
            while tasks.try_join_next().is_some() {}
            if depth_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                depth_at = Some(Instant::now());
                self.refresh_depth().await;
            }
            self.start_waiting(&mut tasks).await;
            let more = if claim && self.held(&tasks) < MAX_HELD {
                poll_at = Instant::now() + POLL;
                let more = self.claim_round(&mut tasks).await;
                self.behind_since = if more {
                    self.behind_since.or(Some(Instant::now()))
                } else {
                    None
                };
                more
            } else {
                false
            };
            let yielding = self.yielding();
            self.yielding_now.store(yielding, Ordering::Relaxed);
            // Claim again at once only after a full claim: after a partial one, everything
            // claimable was taken, and what can change that wakes the loop below (a request
            // done frees a slot, a recorded attempt may unblock its push's next event, the poll
            // finds new and newly due events). Claiming again at once would mostly look at the
            // same window again.
            if more && !yielding {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                    claim = self.worth_claiming();
                }
                _ = self.shared.recorded.notified() => claim = self.worth_claiming(),
                _ = tokio::time::sleep_until(poll_at.into()) => claim = true,
            }
        }
        // Claimed but not started: back to the outbox at once, for another replica or the next
        // start, rather than after the lease.
        let ids: Vec<String> = self
            .waiting
            .drain()
            .flat_map(|(_, q)| q.into_iter().map(|(h, _)| h.event.id))
            .collect();
        if let Some(outbox) = self.shared.store.outbox()
            && let Err(e) = outbox.release_webhooks(&self.shared.owner, &ids).await
        {
            tracing::warn!(message = "Webhook lease release failed.", error = %e);
        }
        while tasks.join_next().await.is_some() {}
        // The recorder ends when the last sender of the channel is gone (the delivery tasks'
        // shares of `Shared` went with them); it writes what was queued first.
        drop(self);
        let _ = recorder.await;
    }

    async fn refresh_depth(&self) {
        if let Some(outbox) = self.shared.store.outbox()
            && let Ok(n) = outbox.outbox_depth().await
        {
            self.shared
                .metrics
                .depth
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Whether a claim on a wake-up (a request done, attempts recorded) could take a worthwhile
    /// batch: this sender holds nothing, or some target it holds events of has at least half of
    /// its budget free. Otherwise the claim waits for the poll (or the next such wake-up): claiming
    /// after every finished request took one or two events per claim, each claim the price of a
    /// window scan on the store's write path, which the dispatcher's claims and completions share
    /// (issue 11 acceptance 7, docs/perf/webhooks.md). New targets' events are found by the poll,
    /// as before.
    fn worth_claiming(&self) -> bool {
        if self.yielding() {
            return false;
        }
        let busy = lock(&self.shared.busy);
        let mut held: HashMap<&str, usize> = busy.iter().map(|(t, n)| (t.as_str(), *n)).collect();
        for (t, q) in &self.waiting {
            *held.entry(t.as_str()).or_insert(0) += q.len();
        }
        held.is_empty()
            || held
                .values()
                .any(|n| *n <= (PER_TARGET + AHEAD_PER_TARGET) / 2)
    }

    /// Whether claims wait for the poll ([`Sender::yield_to`]): deliveries are backlogged, and
    /// this sender has not been behind for [`MAX_YIELD`] yet — a backlog that lasts (a tenant
    /// flooding one device keeps its pushes deferred) delays webhooks by about that much at most,
    /// instead of capping them at the yielding rate for as long as it lasts.
    fn yielding(&self) -> bool {
        yields(
            self.backlog.as_ref().is_some_and(Backlog::is_set),
            self.behind_since,
            Instant::now(),
        )
    }

    /// Events held: in flight and waiting.
    fn held(&self, tasks: &JoinSet<()>) -> usize {
        tasks.len() + self.waiting.values().map(VecDeque::len).sum::<usize>()
    }

    /// Starts waiting events while their targets have free slots (oldest first per target);
    /// those that waited too long for their lease go back to the outbox.
    async fn start_waiting(&mut self, tasks: &mut JoinSet<()>) {
        let mut stale = Vec::new();
        let mut start = Vec::new();
        {
            let mut busy = lock(&self.shared.busy);
            for (target, queue) in &mut self.waiting {
                let count = busy.entry(target.clone()).or_insert(0);
                while let Some((_, at)) = queue.front() {
                    if at.elapsed() > self.hold {
                        if let Some((h, _)) = queue.pop_front() {
                            stale.push(h.event.id);
                        }
                        continue;
                    }
                    if *count >= PER_TARGET || tasks.len() + start.len() >= MAX_IN_FLIGHT {
                        break;
                    }
                    if let Some((e, _)) = queue.pop_front() {
                        *count += 1;
                        start.push(e);
                    }
                }
            }
            busy.retain(|_, n| *n > 0);
        }
        self.waiting.retain(|_, q| !q.is_empty());
        if !stale.is_empty()
            && let Some(outbox) = self.shared.store.outbox()
            && let Err(e) = outbox.release_webhooks(&self.shared.owner, &stale).await
        {
            tracing::warn!(message = "Webhook lease release failed.", error = %e);
        }
        for held in start {
            let sh = self.shared.clone();
            tasks.spawn(async move {
                let target = held.event.target.clone();
                sh.deliver(held).await;
                let mut busy = lock(&sh.busy);
                if let Some(c) = busy.get_mut(&target) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        busy.remove(&target);
                    }
                }
            });
        }
    }

    /// One claim: the events wait for their targets' slots and start at once where there are
    /// some. Returns whether the claim was full (more may be waiting).
    async fn claim_round(&mut self, tasks: &mut JoinSet<()>) -> bool {
        let Some(outbox) = self.shared.store.outbox() else {
            return false;
        };
        // Per target: what this sender holds (in flight and waiting); the claim takes no more
        // than `HELD_PER_TARGET_U32` minus that, so nothing is claimed only to be given back.
        let mut held: HashMap<String, u32> = lock(&self.shared.busy)
            .iter()
            .map(|(t, n)| (t.clone(), u32::try_from(*n).unwrap_or(u32::MAX)))
            .collect();
        for (t, q) in &self.waiting {
            let n = held.entry(t.clone()).or_insert(0);
            *n = n.saturating_add(u32::try_from(q.len()).unwrap_or(u32::MAX));
        }
        let in_flight: Vec<(String, u32)> = held.into_iter().collect();
        let room = u32::try_from(MAX_HELD.saturating_sub(self.held(tasks))).unwrap_or(0);
        let limit = room.min(CLAIM_BATCH);
        if limit == 0 {
            return false;
        }
        let req = ClaimRequest {
            owner: &self.shared.owner,
            now_ms: crate::domain::now_ms(),
            lease: self.lease,
            limit,
            per_target: HELD_PER_TARGET_U32,
            in_flight: &in_flight,
        };
        let claimed_at = Instant::now();
        let events = match outbox.claim_webhooks(&req).await {
            Ok(e) => {
                self.shared
                    .metrics
                    .store
                    .with_label_values(&["claim"])
                    .observe(claimed_at.elapsed().as_secs_f64());
                e
            }
            Err(e) => {
                tracing::warn!(message = "Webhook claim failed.", error = %e);
                return false;
            }
        };
        let more = u32::try_from(events.len()).unwrap_or(u32::MAX) >= limit;
        // The payloads of the whole claim in two reads, rather than two per attempt. If that
        // read fails, each attempt reads its own.
        let keys: Vec<AsOf<'_>> = events
            .iter()
            .map(|e| AsOf {
                tenant: &e.tenant,
                push_id: &e.push_id,
                seq: e.seq,
            })
            .collect();
        let payloads = match outbox.pushes_as_of(&keys).await {
            Ok(p) if p.len() == events.len() => p.into_iter().map(Payload::Read).collect(),
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::warn!(message = "Webhook payloads not read with their claim.", error = %e);
                Vec::new()
            }
        };
        drop(keys);
        let mut payloads = payloads.into_iter();
        // Oldest first (the store's order): they queue per target behind those already waiting.
        for event in events {
            let payload = payloads.next().unwrap_or(Payload::Unread);
            self.waiting
                .entry(event.target.clone())
                .or_default()
                .push_back((Held { event, payload }, claimed_at));
        }
        self.start_waiting(tasks).await;
        more
    }
}

/// Writes queued attempt records, as many as are waiting (up to [`RECORD_BATCH`]) per
/// transaction. While the sender yields to deliveries ([`Sender::yield_to`]) it gathers them for
/// up to a [`POLL`] first: each record is a write transaction on the path the dispatcher's claims
/// and completions share, and while yielding the requests end one by one, so that without the
/// wait they were recorded a few at a time — as many transactions as the dispatcher's own
/// (docs/perf/webhooks.md). The records wait at most 200 ms more, well inside the lease.
async fn record_loop(
    sh: Arc<Shared>,
    yielding: Arc<AtomicBool>,
    mut rx: mpsc::Receiver<AttemptRecord>,
) {
    let store = sh.store.clone();
    let Some(outbox) = store.outbox() else {
        return;
    };
    // Holds only a weak share, so that the channel closes when the sender stops.
    let weak = Arc::downgrade(&sh);
    let timer = sh.metrics.store.with_label_values(&["record"]);
    drop(sh);
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        if yielding.load(Ordering::Relaxed) {
            let until = tokio::time::Instant::now() + POLL;
            while batch.len() < RECORD_BATCH {
                let room = RECORD_BATCH - batch.len();
                match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                    // Closed (the sender stopped) or the wait is over: write what is here.
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let started = Instant::now();
        let result = outbox.record_webhook_attempts(&batch).await;
        timer.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(recorded) => {
                for (rec, ok) in batch.iter().zip(recorded) {
                    if !ok {
                        tracing::warn!(message = "Webhook attempt not recorded: lease lost.", webhook_id = %rec.event.id);
                    }
                }
            }
            Err(e) => {
                // Not recorded: the leases run out and the events are tried again.
                tracing::warn!(message = "Webhook attempts not recorded.", count = batch.len(), error = %e);
            }
        }
        batch.clear();
        if let Some(sh) = weak.upgrade() {
            sh.recorded.notify_one();
        }
    }
}

/// [`Sender::yielding`]: deliveries are backlogged, and the sender has not been behind (its
/// claims full) for [`MAX_YIELD`].
fn yields(backlogged: bool, behind_since: Option<Instant>, now: Instant) -> bool {
    backlogged && behind_since.is_none_or(|t| now.saturating_duration_since(t) < MAX_YIELD)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The request body: `{"type", "timestamp", "data"}` (DESIGN §10.2).
pub fn body(event: &OutboxEvent, push: crate::store::PushRecord) -> Vec<u8> {
    let timestamp = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(event.created_at_ms) * 1_000_000,
    )
    .ok()
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_default();
    let v = serde_json::json!({
        "type": event.event_type(),
        "timestamp": timestamp,
        "data": PushView::from_record(push),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Why an attempt failed, for the timeline: status, timeout or the error chain (reqwest's
/// message without the URL, which may carry user-info).
fn describe_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".into();
    }
    let e = e.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<TargetRefused>() {
            return r.to_string();
        }
        source = s.source();
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Shared {
    async fn deliver(&self, held: Held) {
        let Held { event, payload } = held;
        let start = Instant::now();
        let attempt = self.attempt(&event, payload).await;
        self.metrics.attempt.observe(start.elapsed().as_secs_f64());
        let now = crate::domain::now_ms();
        let (result, detail) = match attempt {
            Ok(status) if (200..300).contains(&status) => {
                (AttemptResult::Delivered, format!("HTTP {status}"))
            }
            Ok(status) => (
                outbox::after_failure_now(&event, now, self.max_age),
                format!("HTTP {status}"),
            ),
            Err(Failure::Retry(detail)) => {
                (outbox::after_failure_now(&event, now, self.max_age), detail)
            }
            Err(Failure::Permanent(detail)) => (AttemptResult::GiveUp, detail),
            Err(Failure::Store(e)) => {
                // Not an attempt: the lease runs out and the event is tried again.
                tracing::warn!(message = "Webhook payload could not be read.", webhook_id = %event.id, error = %e);
                return;
            }
        };
        let outcome = match result {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Retry { .. } => "retry",
            AttemptResult::GiveUp => "given_up",
        };
        self.metrics.deliveries.with_label_values(&[outcome]).inc();
        if outcome == "given_up" {
            tracing::warn!(message = "Webhook given up.", push_id = %event.push_id, webhook_id = %event.id, detail = %detail);
        }
        let rec = AttemptRecord {
            event,
            owner: self.owner.clone(),
            at_ms: now,
            result,
            detail,
        };
        if self.records.send(rec).await.is_err() {
            tracing::warn!(message = "Webhook attempt not recorded: the recorder stopped.");
        }
    }

    /// One POST: the status code, or why there was none.
    async fn attempt(&self, event: &OutboxEvent, payload: Payload) -> Result<u16, Failure> {
        let Some(outbox) = self.store.outbox() else {
            return Err(Failure::Permanent("no outbox".into()));
        };
        let Some(secret) = self.targets.secret(&event.tenant) else {
            return Err(Failure::Permanent(
                "the tenant has no webhook_secret (configuration)".into(),
            ));
        };
        let push = match payload {
            Payload::Read(push) => push,
            Payload::Unread => outbox
                .push_as_of(&event.tenant, &event.push_id, event.seq)
                .await
                .map_err(Failure::Store)?,
        };
        let Some(push) = push else {
            return Err(Failure::Permanent("the push is no longer stored".into()));
        };
        let url = match url::Url::parse(&event.target) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return Err(Failure::Permanent("invalid target URL".into())),
        };
        if let Some(ip) = self.targets.policy.refused_literal(&url) {
            return Err(Failure::Retry(format!(
                "target {ip} is outside webhooks.allow_targets"
            )));
        }
        let body = body(event, push);
        let ts = crate::domain::now_ms().div_euclid(1000);
        let signature = secret.sign(&event.id, ts, &body);
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::Retry(describe_error(e)))?;
        Ok(resp.status().as_u16())
    }
}

/// A claimed event and its payload.
struct Held {
    event: OutboxEvent,
    payload: Payload,
}

/// The push a webhook reports ([`crate::store::outbox::Outbox::pushes_as_of`]): read with the
/// claim, or not (that read failed; the attempt reads it).
enum Payload {
    /// `None`: the push is no longer stored.
    Read(Option<crate::store::PushRecord>),
    Unread,
}

enum Failure {
    Retry(String),
    Permanent(String),
    Store(StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_to_a_backlog_until_behind_for_max_yield() {
        let now = Instant::now() + MAX_YIELD * 2;
        assert!(!yields(false, None, now), "no backlog: full speed");
        assert!(yields(true, None, now), "backlog, nothing to catch up on");
        assert!(yields(true, Some(now - MAX_YIELD / 2), now));
        assert!(
            !yields(true, Some(now - MAX_YIELD), now),
            "behind for MAX_YIELD: catches up whatever the backlog"
        );
        assert!(!yields(false, Some(now - MAX_YIELD / 2), now));
    }
}
