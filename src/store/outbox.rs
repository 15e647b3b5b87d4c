//! The webhook outbox (issue 11, DESIGN §10.2): types, the store API and the pure delivery rules.
//!
//! An outbox row is written **in the transaction of the state change**, one when an event of a
//! webhook state ([`WEBHOOK_STATES`]) is recorded for a push that has a webhook target, so a
//! `kill -9` after the commit cannot lose it. On PostgreSQL a statement trigger on `push_events`
//! writes it (`migrations/postgres/0005_webhooks.sql`, 0008), so every code path that records a
//! state change produces its webhook. On SQLite the store's one event writer per connection
//! (`insert_event`) writes it beside the event since migration 0009, because the trigger's mere
//! presence cost every event insert on the single writer; a test keeps every other insert into
//! `push_events` a webhook attempt row. Why: docs/decisions/webhooks.md.
//!
//! Rows: `pending` → `done` (2xx) or `given_up` (no success within `max_age_seconds`);
//! [`Outbox::requeue_webhooks`] puts given-up rows back to `pending`.

use std::time::Duration;

use super::{AsOf, PushRecord, PushState, StoreError};
use crate::queue::backoff;

/// The push states that send a webhook: `accepted` and every final state. The migrations'
/// triggers list the same states (`unconfirmed` included, a final state of the outcomes work).
pub const WEBHOOK_STATES: &[&str] = &[
    "accepted",
    "delivered",
    "failed",
    "expired",
    "cancelled",
    "superseded",
    "unconfirmed",
];

/// Whether an event of `state` sends a webhook ([`WEBHOOK_STATES`]); SQLite's event writers ask
/// it before writing the outbox row beside the event (migrations/sqlite/0009).
pub fn fires_webhook(state: PushState) -> bool {
    WEBHOOK_STATES.contains(&state.as_str())
}

/// First retry delay (the first retry comes within 5 s, DESIGN §10.2); doubles per attempt with
/// equal jitter ([`backoff::delay`]).
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// Longest wait between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// One pending webhook event, leased to a sender for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The `webhook-id`: `msg_<push id>_<event seq>`, the same on every attempt.
    pub id: String,
    pub push_id: String,
    pub tenant: String,
    /// The state the event reports (`type` = `push.<state>`).
    pub state: PushState,
    /// The `push_events` row that caused it: the payload shows the push as of this row.
    pub seq: i64,
    /// Where to POST (resolved at submit: the push's `callback_url`, else the tenant's
    /// `webhook_url`).
    pub target: String,
    /// When the state changed (the body's `timestamp`).
    pub created_at_ms: i64,
    /// Age is counted from here (`created_at`, or the time of a manual re-queue).
    pub age_from_ms: i64,
    /// Attempts made before this one.
    pub attempts: u32,
}

impl OutboxEvent {
    /// `push.<state>`.
    pub fn event_type(&self) -> String {
        format!("push.{}", self.state.as_str())
    }
}

/// What one attempt led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// A 2xx answer: the row is done.
    Delivered,
    /// Try again then.
    Retry { at_ms: i64 },
    /// Too old: given up (an event on the push timeline says so).
    GiveUp,
}

/// The durable record of one attempt: updates the outbox row (if `owner` still holds its lease)
/// and writes a `webhook` row on the push timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub event: OutboxEvent,
    pub owner: String,
    pub at_ms: i64,
    pub result: AttemptResult,
    /// Status code or error, for the timeline and `last_error` (never a secret or URL
    /// user-info).
    pub detail: String,
}

impl AttemptRecord {
    /// The timeline row's detail.
    pub fn timeline_detail(&self) -> String {
        let e = &self.event;
        let n = e.attempts + 1;
        let what = match &self.result {
            AttemptResult::Delivered => "delivered".to_owned(),
            AttemptResult::Retry { at_ms } => {
                format!("retry in {:.1} s", (at_ms - self.at_ms) as f64 / 1000.0)
            }
            AttemptResult::GiveUp => "given up".to_owned(),
        };
        format!(
            "webhook {} {} attempt {n}: {}; {what}",
            e.event_type(),
            e.id,
            self.detail
        )
    }
}

impl AttemptResult {
    /// The outbox row's status after the attempt.
    pub fn status(&self) -> &'static str {
        match self {
            AttemptResult::Delivered => "done",
            AttemptResult::Retry { .. } => "pending",
            AttemptResult::GiveUp => "given_up",
        }
    }

    /// When the row is next due (a retry only).
    pub fn next_at_ms(&self) -> Option<i64> {
        match self {
            AttemptResult::Retry { at_ms } => Some(*at_ms),
            _ => None,
        }
    }
}

impl AttemptRecord {
    /// The row's `last_error` after the attempt (cleared on success).
    pub fn last_error(&self) -> &str {
        match self.result {
            AttemptResult::Delivered => "",
            _ => &self.detail,
        }
    }
}

/// A batch of attempt records cut into runs of distinct event ids, in order. The stores write a
/// run with one statement per kind of write (the outbox rows, the later events of retried pushes,
/// the timeline rows) instead of three per record; a set-based `UPDATE` applies a row once, so an
/// event recorded twice in one batch (a record of an expired lease, then the new holder's) goes
/// in a later run, with the same outcome as one-by-one application.
pub fn distinct_runs(recs: &[AttemptRecord]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut seen = std::collections::HashSet::new();
    for (i, rec) in recs.iter().enumerate() {
        if !seen.insert(rec.event.id.as_str()) {
            runs.push(start..i);
            start = i;
            seen.clear();
            seen.insert(rec.event.id.as_str());
        }
    }
    if start < recs.len() {
        runs.push(start..recs.len());
    }
    runs
}

/// After a failed attempt at `now_ms`: retry with backoff, or give up when the event is older than
/// `max_age`. `unit` is a uniform random number in `[0, 1)` (the jitter), so this stays pure.
pub fn after_failure(
    event: &OutboxEvent,
    now_ms: i64,
    max_age: Duration,
    unit: f64,
) -> AttemptResult {
    let age = now_ms.saturating_sub(event.age_from_ms);
    if age >= i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX) {
        return AttemptResult::GiveUp;
    }
    let delay = backoff::delay(event.attempts + 1, RETRY_BASE, RETRY_MAX, unit);
    AttemptResult::Retry {
        at_ms: now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
    }
}

/// [`after_failure`] with a random jitter.
pub fn after_failure_now(event: &OutboxEvent, now_ms: i64, max_age: Duration) -> AttemptResult {
    after_failure(event, now_ms, max_age, rand::random::<f64>())
}

/// One claim's limits (see [`Outbox::claim_webhooks`]).
#[derive(Clone, Copy, Debug)]
pub struct ClaimRequest<'a> {
    pub owner: &'a str,
    pub now_ms: i64,
    pub lease: Duration,
    /// Events at most.
    pub limit: u32,
    /// Requests in flight to one target at most (per sender).
    pub per_target: u32,
    /// This sender's requests in flight, per target (targets not listed have none).
    pub in_flight: &'a [(String, u32)],
}

impl ClaimRequest<'_> {
    /// The lease's end for events claimed now.
    pub fn lease_until(&self) -> i64 {
        self.now_ms
            .saturating_add(i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX))
    }

    /// Targets without a free slot: their events are left out of the window.
    pub fn full_targets(&self) -> Vec<String> {
        self.in_flight
            .iter()
            .filter(|(_, n)| *n >= self.per_target)
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// Candidates a claim looks at: this many per event it may take, so that events held back (an
/// earlier event of their push still pending, their target's slots taken by earlier rows of the
/// window, a row locked by another replica) leave enough others to fill the claim.
pub const WINDOW_PER_EVENT: u32 = 4;

/// The candidate window of a claim of `limit` events.
pub fn claim_window(limit: u32) -> u32 {
    limit.saturating_mul(WINDOW_PER_EVENT)
}

/// The outbox side of a [`super::Store`] (reached through [`super::Store::outbox`]).
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// Leases up to `req.limit` due events (pending, `next_attempt_at <= now`, lease free or
    /// expired), oldest first, **only the oldest pending event of each push** (per-push order),
    /// and no more for a target than it has free slots (`per_target` minus what this sender has
    /// in flight there; none at all for a full target, whose events are not even looked at).
    ///
    /// The candidates are a bounded window of the due events in due order
    /// ([`claim_window`] rows of targets with free slots), so a claim costs the same with 100 or
    /// 100,000 events waiting; a later event of a push is never due before the push's earlier
    /// pending ones (the record of a retry moves it along, the trigger starts it no earlier), so
    /// events waiting for their push's order do not crowd the window.
    async fn claim_webhooks(&self, req: &ClaimRequest<'_>) -> Result<Vec<OutboxEvent>, StoreError>;

    /// Gives leases back without an attempt (events claimed beyond a target's concurrency
    /// limit): they are claimable again at once.
    async fn release_webhooks(&self, owner: &str, ids: &[String]) -> Result<(), StoreError>;

    /// Records an attempt; `false` when `owner` no longer held the lease (nothing written).
    async fn record_webhook_attempt(&self, rec: &AttemptRecord) -> Result<bool, StoreError> {
        Ok(self
            .record_webhook_attempts(std::slice::from_ref(rec))
            .await?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Records several attempts in one transaction (one commit, so one fsync on SQLite, for a
    /// whole batch: docs/perf/webhooks.md); per record, `false` when its owner no longer held
    /// the lease.
    async fn record_webhook_attempts(
        &self,
        recs: &[AttemptRecord],
    ) -> Result<Vec<bool>, StoreError>;

    /// Puts the push's given-up events back to pending, due now, their age counted from now.
    /// `None` when the tenant has no such push; else how many were re-queued.
    async fn requeue_webhooks(
        &self,
        tenant: &str,
        push_id: &str,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError>;

    /// Pushes as `GET /v1/pushes/{id}` showed them right after the given events (the timeline up
    /// to that row, the state and `updated_at` of that row), one answer per key in order, `None`
    /// where the push is gone: the payloads of a claim's webhooks, in two reads.
    async fn pushes_as_of(&self, keys: &[AsOf<'_>]) -> Result<Vec<Option<PushRecord>>, StoreError>;

    /// One push as of event `seq` ([`Outbox::pushes_as_of`] of one key).
    async fn push_as_of(
        &self,
        tenant: &str,
        push_id: &str,
        seq: i64,
    ) -> Result<Option<PushRecord>, StoreError> {
        let key = AsOf {
            tenant,
            push_id,
            seq,
        };
        Ok(self.pushes_as_of(&[key]).await?.pop().flatten())
    }

    /// Pending events (the `dmpushd_webhook_outbox_depth` gauge).
    async fn outbox_depth(&self) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(age_from_ms: i64, attempts: u32) -> OutboxEvent {
        OutboxEvent {
            id: "msg_p_1".into(),
            push_id: "p".into(),
            tenant: "t".into(),
            state: PushState::Delivered,
            seq: 1,
            target: "https://example.com/hook".into(),
            created_at_ms: age_from_ms,
            age_from_ms,
            attempts,
        }
    }

    #[test]
    fn first_retry_within_five_seconds_then_growing_and_capped() {
        let day = Duration::from_secs(86_400);
        let at = |attempts, unit| match after_failure(&event(0, attempts), 1_000, day, unit) {
            AttemptResult::Retry { at_ms } => at_ms - 1_000,
            other => panic!("{other:?}"),
        };
        assert!(at(0, 0.0) >= 1_000 && at(0, 0.999) <= 2_000);
        assert!(at(0, 0.999) <= 5_000);
        assert_eq!(at(1, 0.0), 2_000);
        assert_eq!(at(2, 0.0), 4_000);
        assert_eq!(at(30, 0.999_999), 600_000 - 1);
        assert!(at(30, 0.0) >= 300_000);
    }

    #[test]
    fn given_up_by_age_not_by_count() {
        let max = Duration::from_secs(60);
        assert_eq!(
            after_failure(&event(0, 0), 60_000, max, 0.5),
            AttemptResult::GiveUp
        );
        assert!(matches!(
            after_failure(&event(0, 500), 59_999, max, 0.5),
            AttemptResult::Retry { .. }
        ));
        // A manual re-queue restarts the clock.
        assert!(matches!(
            after_failure(&event(50_000, 3), 60_000, max, 0.5),
            AttemptResult::Retry { .. }
        ));
    }

    #[test]
    fn timeline_detail_names_event_attempt_and_outcome() {
        let rec = AttemptRecord {
            event: event(0, 1),
            owner: "o".into(),
            at_ms: 10_000,
            result: AttemptResult::Retry { at_ms: 13_500 },
            detail: "HTTP 503".into(),
        };
        assert_eq!(
            rec.timeline_detail(),
            "webhook push.delivered msg_p_1 attempt 2: HTTP 503; retry in 3.5 s"
        );
    }

    #[test]
    fn distinct_runs_split_at_a_repeated_event() {
        let rec = |id: &str| AttemptRecord {
            event: OutboxEvent {
                id: id.into(),
                ..event(0, 0)
            },
            owner: "o".into(),
            at_ms: 0,
            result: AttemptResult::Delivered,
            detail: String::new(),
        };
        let recs: Vec<_> = ["a", "b", "a", "c", "c", "d"]
            .iter()
            .map(|i| rec(i))
            .collect();
        assert_eq!(distinct_runs(&recs), vec![0..2, 2..4, 4..6]);
        assert_eq!(distinct_runs(&recs[..2]), vec![0..2]);
        assert!(distinct_runs(&[]).is_empty());
    }
}
