//! The store's rules, once: what a completion does to a push row, how receipts settle a push,
//! and how a replayed idempotency key is answered.
//!
//! Pure functions (no I/O, no clock: times come in as parameters). Both implementations read the
//! rows a rule needs, call the rule, and write what it decided; the SQL differs, the decisions do
//! not. Each rule is unit-tested here once; `tests/it/store_conformance.rs` checks that both
//! backends apply them.

use std::collections::HashMap;

#[cfg(doc)]
use super::Enqueued;
use super::{Completion, NewPush, Next, PushState};
use crate::domain::BindingKind;

/// An event row to write (the push id is the caller's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventRow {
    pub at_ms: i64,
    pub state: PushState,
    pub binding: Option<BindingKind>,
    pub attempt: u32,
    pub detail: String,
}

/// What one [`Completion`] does to its push row — applied only while the completing owner still
/// holds the lease (`state = 'sending' AND lease_owner = owner`); otherwise nothing happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompletionEffect<'a> {
    /// The new state; the lease is cleared in every case.
    pub state: PushState,
    /// New `next_attempt_at`; `None` leaves the column as it is.
    pub next_attempt_at: Option<i64>,
    /// New `binding_index` (fallback under `auto`); `None` leaves it.
    pub binding_index: Option<u32>,
    /// Added to `attempts`: -1 when the attempt did not happen (release), else 0 (the claim
    /// counted it already).
    pub attempts_delta: i32,
    /// `last_binding` becomes this when `Some`.
    pub last_binding: Option<BindingKind>,
    pub updated_at_ms: i64,
    /// The event row written in the same transaction.
    pub event: EventRow,
    /// References to record for receipt correlation (`Accepted` with a binding), sorted and
    /// without duplicates. After recording them, the push is settled with [`settle`] in case
    /// receipts overtook the completion.
    pub refs: Option<(BindingKind, Vec<&'a str>)>,
}

/// The completion effect (DESIGN §4): `Next` → row change, event and references.
pub(crate) fn completion_effect(c: &Completion) -> CompletionEffect<'_> {
    let (state, next_attempt_at, binding_index, attempts_delta) = match &c.next {
        Next::Delivered => (PushState::Delivered, None, None, 0),
        Next::Accepted { .. } => (PushState::Accepted, None, None, 0),
        Next::RetryAt { at_ms } => (PushState::RetryWait, Some(*at_ms), None, 0),
        // Fallback goes on at once with the next binding.
        Next::Fallback { binding_index } => {
            (PushState::Queued, Some(c.at_ms), Some(*binding_index), 0)
        }
        Next::Failed => (PushState::Failed, None, None, 0),
        Next::Expired => (PushState::Expired, None, None, 0),
        // Graceful shutdown: the attempt did not happen, so it is not counted.
        Next::Release => (PushState::Queued, Some(c.at_ms), None, -1),
    };
    // The event's attempt number matches the row's counter after the change: a released
    // attempt is taken back, so the event names the attempt before it.
    let attempt = if attempts_delta < 0 {
        c.attempt.saturating_sub(1)
    } else {
        c.attempt
    };
    let refs = match (&c.next, c.binding) {
        // Without a binding no receipt could ever name these references (receipts carry one).
        (Next::Accepted { refs }, Some(binding)) if !refs.is_empty() => {
            let mut uniq: Vec<&str> = refs.iter().map(String::as_str).collect();
            uniq.sort_unstable();
            uniq.dedup();
            Some((binding, uniq))
        }
        _ => None,
    };
    CompletionEffect {
        state,
        next_attempt_at,
        binding_index,
        attempts_delta,
        last_binding: c.binding,
        updated_at_ms: c.at_ms,
        event: EventRow {
            at_ms: c.at_ms,
            state,
            binding: c.binding,
            attempt,
            detail: c.detail.clone(),
        },
        refs,
    }
}

/// Status of one reference in `push_refs` (stored as text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefStatus {
    /// Recorded by the completion; no receipt yet.
    Pending,
    Delivered,
    Failed,
}

impl RefStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Unknown text reads as pending: it can never settle a push by mistake.
    pub fn parse(s: &str) -> Self {
        match s {
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }

    /// The status a receipt records.
    pub fn of_receipt(delivered: bool) -> Self {
        if delivered {
            Self::Delivered
        } else {
            Self::Failed
        }
    }
}

/// One reference of a push as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefRow {
    pub reference: String,
    pub status: RefStatus,
    /// The receipt's detail (empty while pending).
    pub detail: String,
    pub updated_at_ms: i64,
}

/// What the push's references decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// The push is not `accepted` (already final, or gone): nothing changes.
    Ignore,
    /// Still waiting for receipts of other references (multi-part SMS).
    Hold,
    /// The push becomes `state`; the event carries `detail`.
    Finish { state: PushState, detail: String },
}

/// Receipt settling: given the push's current state (`None`: no such row) and all its references
/// (after the receipt, if any, was recorded), whether the push finishes.
///
/// Any failed part fails the push (the message did not arrive whole); all parts delivered deliver
/// it. The event names the deciding receipt: `trigger` (the reference of the receipt being
/// applied) when it decided, else the first failure or the last delivery by time — so the detail
/// is the same on every backend and does not depend on row order.
pub(crate) fn settle(
    state: Option<PushState>,
    refs: &[RefRow],
    trigger: Option<&str>,
) -> Settlement {
    if state != Some(PushState::Accepted) {
        return Settlement::Ignore;
    }
    let trigger = trigger.and_then(|t| refs.iter().find(|r| r.reference == t));
    let by_time = |r: &&RefRow| (r.updated_at_ms, r.reference.clone());
    let (state, decider) = if refs.iter().any(|r| r.status == RefStatus::Failed) {
        let first_failure = refs
            .iter()
            .filter(|r| r.status == RefStatus::Failed)
            .min_by_key(by_time);
        (
            PushState::Failed,
            trigger
                .filter(|r| r.status == RefStatus::Failed)
                .or(first_failure),
        )
    } else if !refs.is_empty() && refs.iter().all(|r| r.status == RefStatus::Delivered) {
        (
            PushState::Delivered,
            trigger.or(refs.iter().max_by_key(by_time)),
        )
    } else {
        return Settlement::Hold;
    };
    let detail = match decider.map(|r| r.detail.as_str()) {
        Some(d) if !d.is_empty() => format!("receipt: {d}"),
        _ => format!("receipt: {state}"),
    };
    Settlement::Finish { state, detail }
}

/// Idempotent replay: a push whose `(tenant, idempotency key)` an earlier push already holds is
/// answered with that earlier push ([`Enqueued::Replayed`], with its current state) when the
/// requests are the same (equal hashes; no hash matches only no hash), and with
/// [`Enqueued::KeyConflict`] otherwise. `true` means replay.
pub(crate) fn is_same_request(earlier_hash: Option<&str>, request_hash: Option<&str>) -> bool {
    earlier_hash == request_hash
}

/// Idempotency inside one group-commit batch: the first push with a `(tenant, key)` is the one
/// committed; later ones in the batch are replays of it (answered per [`is_same_request`]).
#[derive(Default)]
pub(crate) struct FirstByKey<'a> {
    first: HashMap<(&'a str, &'a str), usize>,
}

impl<'a> FirstByKey<'a> {
    /// `None` when `pushes[i]` is to be inserted (no key, or the first with its key); else the
    /// index of the earlier push of the batch that holds the key.
    pub fn earlier(&mut self, i: usize, p: &'a NewPush) -> Option<usize> {
        let key = p.idempotency_key.as_deref()?;
        match self.first.entry((p.tenant.as_str(), key)) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
                None
            }
        }
    }

    /// The batch index of the first push with this key, if the batch has one.
    pub fn get(&self, tenant: &str, key: &str) -> Option<usize> {
        self.first.get(&(tenant, key)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ContentType;

    const WAP: Option<BindingKind> = Some(BindingKind::Wap);

    fn completion(next: Next) -> Completion {
        Completion {
            push_id: "p".into(),
            owner: "w".into(),
            attempt: 3,
            binding: WAP,
            at_ms: 1_000,
            next,
            detail: "d".into(),
        }
    }

    #[test]
    fn completion_effect_of_each_next() {
        // (next, state, next_attempt_at, binding_index, attempts_delta, event attempt)
        let cases = [
            (Next::Delivered, PushState::Delivered, None, None, 0, 3),
            (
                Next::Accepted { refs: vec![] },
                PushState::Accepted,
                None,
                None,
                0,
                3,
            ),
            (
                Next::RetryAt { at_ms: 5_000 },
                PushState::RetryWait,
                Some(5_000),
                None,
                0,
                3,
            ),
            (
                Next::Fallback { binding_index: 2 },
                PushState::Queued,
                Some(1_000),
                Some(2),
                0,
                3,
            ),
            (Next::Failed, PushState::Failed, None, None, 0, 3),
            (Next::Expired, PushState::Expired, None, None, 0, 3),
            (Next::Release, PushState::Queued, Some(1_000), None, -1, 2),
        ];
        for (next, state, next_at, index, delta, attempt) in cases {
            let c = completion(next.clone());
            let e = completion_effect(&c);
            assert_eq!(
                (
                    e.state,
                    e.next_attempt_at,
                    e.binding_index,
                    e.attempts_delta,
                    e.event.attempt
                ),
                (state, next_at, index, delta, attempt),
                "{next:?}"
            );
            assert_eq!(e.event.state, state);
            assert_eq!((e.event.at_ms, e.updated_at_ms), (1_000, 1_000));
            assert_eq!((e.event.binding, e.last_binding), (WAP, WAP));
            assert_eq!(e.event.detail, "d");
            assert_eq!(e.refs, None, "{next:?}");
        }
    }

    #[test]
    fn accepted_refs_are_deduplicated_and_need_a_binding() {
        let c = completion(Next::Accepted {
            refs: vec!["b".into(), "a".into(), "b".into()],
        });
        assert_eq!(
            completion_effect(&c).refs,
            Some((BindingKind::Wap, vec!["a", "b"]))
        );
        let mut c = c;
        c.binding = None;
        let e = completion_effect(&c);
        assert_eq!(e.refs, None);
        assert_eq!(e.last_binding, None);
    }

    #[test]
    fn release_of_a_first_attempt_does_not_underflow() {
        let mut c = completion(Next::Release);
        c.attempt = 0;
        assert_eq!(completion_effect(&c).event.attempt, 0);
    }

    fn r(reference: &str, status: RefStatus, detail: &str, at: i64) -> RefRow {
        RefRow {
            reference: reference.into(),
            status,
            detail: detail.into(),
            updated_at_ms: at,
        }
    }

    fn finish(state: PushState, detail: &str) -> Settlement {
        Settlement::Finish {
            state,
            detail: detail.into(),
        }
    }

    use RefStatus::{Delivered, Failed, Pending};

    #[test]
    fn only_an_accepted_push_settles() {
        let refs = [r("a", Delivered, "DELIVRD", 1)];
        for s in PushState::ALL {
            let got = settle(Some(s), &refs, Some("a"));
            if s == PushState::Accepted {
                assert_eq!(got, finish(PushState::Delivered, "receipt: DELIVRD"));
            } else {
                assert_eq!(got, Settlement::Ignore, "{s}");
            }
        }
        assert_eq!(settle(None, &refs, Some("a")), Settlement::Ignore);
    }

    #[test]
    fn all_parts_delivered_deliver_and_any_pending_holds() {
        let acc = Some(PushState::Accepted);
        let mut refs = vec![r("a", Delivered, "D1", 1), r("b", Pending, "", 0)];
        assert_eq!(settle(acc, &refs, Some("a")), Settlement::Hold);
        refs[1] = r("b", Delivered, "D2", 2);
        assert_eq!(
            settle(acc, &refs, Some("b")),
            finish(PushState::Delivered, "receipt: D2")
        );
        // The trigger names the detail even when another part carries a later time.
        assert_eq!(
            settle(
                acc,
                &[r("a", Delivered, "D1", 9), r("b", Delivered, "D2", 2)],
                Some("b")
            ),
            finish(PushState::Delivered, "receipt: D2")
        );
        // Settled at completion (no trigger): the last delivery by time.
        assert_eq!(
            settle(
                acc,
                &[r("a", Delivered, "D1", 9), r("b", Delivered, "D2", 2)],
                None
            ),
            finish(PushState::Delivered, "receipt: D1")
        );
    }

    #[test]
    fn any_failed_part_fails_the_push() {
        let acc = Some(PushState::Accepted);
        let refs = [
            r("a", Delivered, "DELIVRD", 1),
            r("b", Failed, "UNDELIV err:001", 2),
            r("c", Pending, "", 0),
        ];
        assert_eq!(
            settle(acc, &refs, Some("b")),
            finish(PushState::Failed, "receipt: UNDELIV err:001")
        );
        // Two failures that overtook the completion: the first one by time names the event.
        let refs = [r("a", Failed, "LATE", 5), r("b", Failed, "EARLY", 3)];
        assert_eq!(
            settle(acc, &refs, None),
            finish(PushState::Failed, "receipt: EARLY")
        );
        // A delivered trigger does not name a failure.
        let refs = [
            r("a", Delivered, "DELIVRD", 5),
            r("b", Failed, "REJECTD", 3),
        ];
        assert_eq!(
            settle(acc, &refs, Some("a")),
            finish(PushState::Failed, "receipt: REJECTD")
        );
    }

    #[test]
    fn empty_details_name_the_state_and_no_refs_hold() {
        let acc = Some(PushState::Accepted);
        assert_eq!(
            settle(acc, &[r("a", Failed, "", 1)], Some("a")),
            finish(PushState::Failed, "receipt: failed")
        );
        assert_eq!(
            settle(acc, &[r("a", Delivered, "", 1)], None),
            finish(PushState::Delivered, "receipt: delivered")
        );
        assert_eq!(settle(acc, &[], None), Settlement::Hold);
    }

    #[test]
    fn ref_status_text_round_trips_and_unknown_is_pending() {
        for s in [Pending, Delivered, Failed] {
            assert_eq!(RefStatus::parse(s.as_str()), s);
        }
        assert_eq!(RefStatus::parse("bogus"), Pending);
        assert_eq!(RefStatus::of_receipt(true), Delivered);
        assert_eq!(RefStatus::of_receipt(false), Failed);
    }

    #[test]
    fn replay_needs_the_same_request_hash() {
        assert!(is_same_request(Some("h"), Some("h")));
        assert!(!is_same_request(Some("h"), Some("g")));
        // A request without a hash matches only an earlier one without a hash.
        assert!(is_same_request(None, None));
        assert!(!is_same_request(None, Some("h")));
        assert!(!is_same_request(Some("h"), None));
    }

    fn new_push(id: &str, tenant: &str, key: Option<&str>) -> NewPush {
        NewPush {
            id: id.into(),
            tenant: tenant.into(),
            device_id: None,
            bindings: vec![],
            binding_choice: None,
            content_type: ContentType::Notification,
            body: vec![],
            priority: 0,
            created_at_ms: 0,
            not_before_ms: 0,
            expires_at_ms: 0,
            max_attempts: 1,
            idempotency_key: key.map(str::to_owned),
            request_hash: None,
            collapse_key: None,
            callback_url: None,
        }
    }

    #[test]
    fn first_push_with_a_key_in_a_batch_holds_it_per_tenant() {
        let pushes = [
            new_push("1", "t1", Some("k")),
            new_push("2", "t1", None),
            new_push("3", "t1", Some("k")),
            new_push("4", "t2", Some("k")),
            new_push("5", "t1", Some("k")),
        ];
        let mut first = FirstByKey::default();
        let got: Vec<Option<usize>> = pushes
            .iter()
            .enumerate()
            .map(|(i, p)| first.earlier(i, p))
            .collect();
        assert_eq!(got, [None, None, Some(0), None, Some(0)]);
        assert_eq!(first.get("t2", "k"), Some(3));
        assert_eq!(first.get("t3", "k"), None);
    }
}
