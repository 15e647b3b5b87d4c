//! The store's rules, once: what a completion does to a push row, who holds a next-hop reference,
//! how receipts settle a push (or send it on to its next binding), how far a collapse key
//! reaches, and how a replayed idempotency key is answered.
//!
//! Pure functions (no I/O, no clock: times come in as parameters). Both implementations read the
//! rows a rule needs, call the rule, and write what it decided; the SQL differs, the decisions do
//! not. Each rule is unit-tested here once; `tests/it/store_conformance.rs` checks that both
//! backends apply them.

use std::collections::HashMap;

#[cfg(doc)]
use super::Enqueued;
use super::{Completion, NewPush, Next, PushState, ReceiptEffect, to_json};
use crate::domain::{BindingKind, NextHopRef, Receipt};

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
    /// The event row written in the same transaction; `None` for a deferral (nothing happened
    /// to the push that its history should show, and a flooding tenant's deferred pushes would
    /// otherwise gain an event per claim).
    pub event: Option<EventRow>,
    /// References to record for receipt correlation (`Accepted` with a binding), sorted and
    /// without duplicates; each is claimed per [`claim_ref`]. After recording them, the push is
    /// settled with [`settle`] in case receipts overtook the completion.
    pub refs: Option<(BindingKind, Vec<&'a NextHopRef>)>,
    /// Receipts that overtook the completion delivered every part ([`settle_overtaken`]): the
    /// push is `delivered` at once, this event follows `event`, and the rows of `refs` (the
    /// overtaking receipts) are released, i.e. deleted, instead of recorded.
    pub settled: Option<EventRow>,
}

/// The completion effect (DESIGN §4, §10.1): `Next` → row change, event and references.
///
/// `Accepted` with references waits for receipts (`accepted`); without any (a UDP datagram, an
/// SMS sent without a receipt request, a SIP `202`) no receipt can come, so the push ends
/// `unconfirmed` at once rather than staying `accepted` for ever.
pub(crate) fn completion_effect(c: &Completion) -> CompletionEffect<'_> {
    let refs = match (&c.next, c.binding) {
        // Without a binding no receipt could ever name these references (receipts carry one).
        (Next::Accepted { refs }, Some(binding)) if !refs.is_empty() => {
            let mut uniq: Vec<&NextHopRef> = refs.iter().collect();
            uniq.sort_unstable();
            uniq.dedup();
            Some((binding, uniq))
        }
        _ => None,
    };
    let (state, next_attempt_at, binding_index, attempts_delta) = match &c.next {
        Next::Delivered => (PushState::Delivered, None, None, 0),
        Next::Accepted { .. } if refs.is_some() => (PushState::Accepted, None, None, 0),
        Next::Accepted { .. } => (PushState::Unconfirmed, None, None, 0),
        Next::RetryAt { at_ms } => (PushState::RetryWait, Some(*at_ms), None, 0),
        // Fallback goes on at once with the next binding.
        Next::Fallback { binding_index } => {
            (PushState::Queued, Some(c.at_ms), Some(*binding_index), 0)
        }
        Next::Failed => (PushState::Failed, None, None, 0),
        Next::Expired => (PushState::Expired, None, None, 0),
        // Graceful shutdown: the attempt did not happen, so it is not counted.
        Next::Release => (PushState::Queued, Some(c.at_ms), None, -1),
        // Suspended routes: the push waits, and the attempt that did not happen is not counted,
        // so a long suspension cannot exhaust `max_attempts` (DESIGN §10.4).
        Next::Defer { at_ms } => (PushState::RetryWait, Some(*at_ms), None, -1),
        // Fairness (DESIGN §10.3): claimed while its tenant or target was busy; not attempted.
        Next::Requeue { at_ms } => (PushState::Queued, Some(*at_ms), None, -1),
    };
    // The event's attempt number matches the row's counter after the change: a released
    // attempt is taken back, so the event names the attempt before it.
    let attempt = if attempts_delta < 0 {
        c.attempt.saturating_sub(1)
    } else {
        c.attempt
    };
    CompletionEffect {
        state,
        next_attempt_at,
        binding_index,
        attempts_delta,
        last_binding: c.binding,
        updated_at_ms: c.at_ms,
        event: (!matches!(c.next, Next::Requeue { .. })).then(|| EventRow {
            at_ms: c.at_ms,
            state,
            binding: c.binding,
            attempt,
            detail: c.detail.clone(),
        }),
        refs,
        settled: None,
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
    pub reference: NextHopRef,
    pub status: RefStatus,
    /// The receipt's detail (empty while pending).
    pub detail: String,
    pub updated_at_ms: i64,
}

/// The `push_refs` row a completion meets when it records a reference that is already there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeldRef {
    /// `None`: an orphan receipt (it arrived before any push held the id).
    pub push_id: Option<String>,
    /// Until when an orphan receipt is kept (`now + receipt hold` at its arrival).
    pub hold_until_ms: Option<i64>,
}

/// How a completion records one of its references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefClaim {
    /// Keep the row's receipt (status, detail, time) and make it this push's: an overtaking
    /// receipt that is still inside its hold window.
    Adopt,
    /// The push takes the id afresh: status `pending`, no detail, no hold.
    Take,
}

/// Who holds a reference (DESIGN §10.1): an SMSC reuses message ids, so a row that exists when a
/// push records an id is either a receipt that overtook this very submission (an orphan younger
/// than the hold window: adopted) or something stale — the id of an earlier push, or an orphan
/// that waited too long — which must never settle this push: the new push takes the id with
/// status pending. (The defect this replaces kept the old row's status and finished the new
/// push from it.)
pub(crate) fn claim_ref(existing: Option<&HeldRef>, now_ms: i64) -> RefClaim {
    match existing {
        Some(HeldRef {
            push_id: None,
            hold_until_ms: Some(until),
        }) if now_ms <= *until => RefClaim::Adopt,
        _ => RefClaim::Take,
    }
}

/// A `push_refs` row that a completion finds for one of its references (read before the
/// completion writes; SQLite only, see [`settle_overtaken`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FoundRef {
    pub held: HeldRef,
    pub status: RefStatus,
    pub detail: String,
    pub updated_at_ms: i64,
}

/// The rows found for the references of a batch of completions.
pub(crate) type FoundRefs = HashMap<RefKey, FoundRef>;

/// Receipts that overtook an `Accepted` completion and deliver its push (DESIGN §10.1): when
/// every reference the completion records would adopt an overtaking receipt ([`claim_ref`]) and
/// all of those delivered, the push is `delivered` by the completion's own write — its
/// `accepted` event followed by a `delivered` one, at the completion's time, with the detail
/// [`settle`] would give — instead of being made `accepted` and settled by a second write of
/// the same row. The outcome is the same; the push row is written twice per SMS instead of three
/// times. Anything else (a part pending, or failed: a failure may fall back, which needs the
/// push's bindings) is left to recording and [`settle_adopted`]. Returns whether the effect
/// changed. SQLite applies it; PostgreSQL does not (receipts there almost never overtake, and
/// the read it needs would be one more statement per batch: decisions/postgres.md 26).
///
/// `found` must hold the rows as they are for this completion: a caller that records one
/// reference for two completions of a batch must not use it (the first would hold the row).
pub(crate) fn settle_overtaken(effect: &mut CompletionEffect<'_>, found: &FoundRefs) -> bool {
    let (Some((binding, refs)), Some(event), PushState::Accepted) =
        (&effect.refs, &effect.event, effect.state)
    else {
        return false;
    };
    let mut rows = Vec::with_capacity(refs.len());
    for r in refs {
        let Some(f) = found.get(&(*binding, (*r).clone())) else {
            return false;
        };
        if claim_ref(Some(&f.held), effect.updated_at_ms) != RefClaim::Adopt {
            return false;
        }
        rows.push(RefRow {
            reference: (*r).clone(),
            status: f.status,
            detail: f.detail.clone(),
            updated_at_ms: f.updated_at_ms,
        });
    }
    let Some((PushState::Delivered, detail)) = verdict(&rows, None) else {
        return false;
    };
    effect.state = PushState::Delivered;
    effect.settled = Some(EventRow {
        state: PushState::Delivered,
        detail,
        ..event.clone()
    });
    true
}

/// Whether no reference is named by two completions of a batch (nor twice by one): only then
/// are the rows read for the batch the rows each completion meets ([`settle_overtaken`]).
pub(crate) fn refs_are_distinct(effects: &[CompletionEffect<'_>]) -> bool {
    let mut seen = std::collections::HashSet::new();
    effects
        .iter()
        .filter_map(|e| e.refs.as_ref())
        .all(|(binding, refs)| refs.iter().all(|r| seen.insert((*binding, *r))))
}

/// The push as receipt settling needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PushView {
    pub state: PushState,
    /// `None` = `auto`.
    pub binding_choice: Option<BindingKind>,
    pub binding_index: u32,
    /// The kinds of the push's bindings snapshot, in order.
    pub bindings: Vec<BindingKind>,
    pub expires_at_ms: i64,
}

/// What the push's references decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// The push is neither `accepted` nor `unconfirmed` (already settled, or gone): nothing
    /// changes.
    Ignore,
    /// Still waiting for receipts of other references (multi-part SMS).
    Hold,
    /// The push becomes `state`; the event carries `detail`.
    Finish { state: PushState, detail: String },
    /// A failed receipt under `auto` with another binding left: the push goes back to `queued`
    /// at once with this binding index, like after any permanent failure.
    Fallback { binding_index: u32, detail: String },
}

impl Settlement {
    /// Whether the push is settled: its references are then deleted (released), so that the
    /// SMSC may give the ids to other pushes.
    pub fn releases_refs(&self) -> bool {
        matches!(self, Self::Finish { .. } | Self::Fallback { .. })
    }
}

/// Receipt settling: given the push (`None`: no such row), the binding its references belong to,
/// and all its references (after the receipt, if any, was recorded), whether the push finishes.
///
/// Only an `accepted` or `unconfirmed` push settles (a late receipt still moves `unconfirmed`).
/// Any failed part fails the push (the message did not arrive whole); all parts delivered deliver
/// it. A failure of an `accepted` push under `auto` is a permanent failure of that binding: with
/// a later binding in the snapshot and the TTL not passed, the push falls back to it
/// (DESIGN §10.1). The event names the deciding receipt: `trigger` (the reference of the receipt
/// being applied) when it decided, else the first failure or the last delivery by time — so the
/// detail is the same on every backend and does not depend on row order.
pub(crate) fn settle(
    push: Option<&PushView>,
    binding: BindingKind,
    refs: &[RefRow],
    trigger: Option<&NextHopRef>,
    now_ms: i64,
) -> Settlement {
    let Some(push) =
        push.filter(|p| matches!(p.state, PushState::Accepted | PushState::Unconfirmed))
    else {
        return Settlement::Ignore;
    };
    let Some((state, detail)) = verdict(refs, trigger) else {
        return Settlement::Hold;
    };
    if state == PushState::Failed
        && let Some((index, kind)) = next_binding(push, binding, now_ms)
    {
        return Settlement::Fallback {
            binding_index: index,
            detail: format!("{detail}; falling back to {kind}"),
        };
    }
    Settlement::Finish { state, detail }
}

/// What a push's references say on their own: `Failed` when any part failed, `Delivered` when
/// all delivered, with the event detail naming the deciding receipt; `None` while a part is
/// still pending (or there are none).
fn verdict(refs: &[RefRow], trigger: Option<&NextHopRef>) -> Option<(PushState, String)> {
    let trigger = trigger.and_then(|t| refs.iter().find(|r| &r.reference == t));
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
        return None;
    };
    let detail = match decider.map(|r| r.detail.as_str()) {
        Some(d) if !d.is_empty() => format!("receipt: {d}"),
        _ => format!("receipt: {state}"),
    };
    Some((state, detail))
}

/// The binding after the one that failed, when the push may fall back to it: under `auto`, while
/// still `accepted` (an `unconfirmed` push is past its TTL) and before the TTL. The failed
/// binding is the first of its kind at or after `binding_index` (the attempt may have skipped
/// bindings this gateway does not run).
fn next_binding(p: &PushView, failed: BindingKind, now_ms: i64) -> Option<(u32, BindingKind)> {
    if p.binding_choice.is_some() || p.state != PushState::Accepted || now_ms >= p.expires_at_ms {
        return None;
    }
    let start = p.binding_index as usize;
    let used = start + p.bindings.iter().skip(start).position(|k| *k == failed)?;
    let next = used + 1;
    let kind = *p.bindings.get(next)?;
    Some((u32::try_from(next).ok()?, kind))
}

/// The event detail of a push that the receipt window sweep makes `unconfirmed`.
pub(crate) const UNCONFIRMED_DETAIL: &str = "no receipt within ttl + receipt grace";

/// What a receipt did, from what settling its push decided.
pub(crate) fn receipt_effect(push_id: String, settled: Settlement) -> ReceiptEffect {
    match settled {
        Settlement::Ignore => ReceiptEffect::Ignored { push_id },
        Settlement::Hold => ReceiptEffect::Partial { push_id },
        Settlement::Finish { state, .. } => ReceiptEffect::Finished { push_id, state },
        Settlement::Fallback { binding_index, .. } => ReceiptEffect::FellBack {
            push_id,
            binding_index,
        },
    }
}

/// Counts of deleted rows per binding (stored binding text; unknown text is skipped).
pub(crate) fn count_by_binding(
    bindings: impl IntoIterator<Item = String>,
) -> Vec<(BindingKind, u64)> {
    let mut counts: Vec<(BindingKind, u64)> = Vec::new();
    for kind in bindings.into_iter().filter_map(|b| BindingKind::parse(&b)) {
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    counts
}

/// How far a collapse key reaches (DESIGN §10.1): a newer push supersedes only pending pushes of
/// the same tenant and the same device. Inline-binding pushes have no device; their scope is the
/// exact bindings snapshot (as stored, JSON), i.e. the same target addresses in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CollapseScope<'a> {
    Device(&'a str),
    Inline(String),
}

pub(crate) fn collapse_scope(p: &NewPush) -> CollapseScope<'_> {
    match p.device_id.as_deref() {
        Some(d) => CollapseScope::Device(d),
        None => CollapseScope::Inline(to_json(&p.bindings)),
    }
}

/// The id of the lock that serialises enqueues of one collapse (tenant, scope, key) across
/// replicas (a PostgreSQL advisory lock key); `None` without a collapse key. The first 8 bytes
/// of a SHA-256 over the length-prefixed parts: stable across processes and versions, and
/// different triples collide only by chance (a collision merely serialises two unrelated
/// enqueues).
pub(crate) fn collapse_lock_id(p: &NewPush) -> Option<i64> {
    use sha2::Digest as _;
    let key = p.collapse_key.as_deref()?;
    let scope = match collapse_scope(p) {
        CollapseScope::Device(d) => format!("device {d}"),
        CollapseScope::Inline(json) => format!("inline {json}"),
    };
    let mut h = sha2::Sha256::new();
    for part in [p.tenant.as_str(), scope.as_str(), key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Some(i64::from_be_bytes(first))
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

/// The key of a `push_refs` row.
pub(crate) type RefKey = (BindingKind, NextHopRef);

/// A push as a receipt batch reads it (locked, on PostgreSQL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeldPush {
    pub view: PushView,
    pub attempts: u32,
}

/// What a receipt batch reads before [`plan_receipts`] decides: the rows as they were before
/// the batch.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReceiptRows {
    /// The existing `push_refs` rows of the batch's keys and who holds each (`None`: an orphan
    /// receipt). A key without a row is absent.
    pub holders: HashMap<RefKey, Option<String>>,
    /// The pushes that hold them (a holder without a push row is absent).
    pub pushes: HashMap<String, HeldPush>,
    /// Every reference of each holding push.
    pub refs: HashMap<String, Vec<RefRow>>,
}

/// A push that a receipt batch settles (finished or sent on to its next binding); its
/// references are released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SettledPush {
    pub push_id: String,
    /// The deciding receipt's binding (the event's).
    pub binding: BindingKind,
    /// The push's attempts (the event's attempt number).
    pub attempts: u32,
    /// The new state: final, or `queued` for a fallback.
    pub state: PushState,
    /// The fallback's binding index (the push is due at once).
    pub fallback_to: Option<u32>,
    /// The event's detail.
    pub detail: String,
    /// When (the row's `updated_at`, the event's time, a fallback's `next_attempt_at`).
    pub at_ms: i64,
}

impl SettledPush {
    /// `None` unless `settlement` finishes the push or sends it on.
    fn of(
        push_id: &str,
        binding: BindingKind,
        attempts: u32,
        settlement: &Settlement,
        at_ms: i64,
    ) -> Option<Self> {
        let (state, fallback_to, detail) = match settlement {
            Settlement::Finish { state, detail } => (*state, None, detail),
            Settlement::Fallback {
                binding_index,
                detail,
            } => (PushState::Queued, Some(*binding_index), detail),
            Settlement::Ignore | Settlement::Hold => return None,
        };
        Some(Self {
            push_id: push_id.to_owned(),
            binding,
            attempts,
            state,
            fallback_to,
            detail: detail.clone(),
            at_ms,
        })
    }
}

/// Settles the pushes whose `Accepted` completion adopted receipts that overtook it (no
/// trigger), each at its completion's time, from their rows read once for the batch; returns
/// those that finish or fall back (their references are then released).
pub(crate) fn settle_adopted(
    adopted: &[(&str, BindingKind, i64)],
    rows: &ReceiptRows,
) -> Vec<SettledPush> {
    adopted
        .iter()
        .filter_map(|(id, binding, at_ms)| {
            let push = rows.pushes.get(*id);
            let refs = rows.refs.get(*id).map_or(&[][..], Vec::as_slice);
            let settlement = settle(push.map(|p| &p.view), *binding, refs, None, *at_ms);
            SettledPush::of(
                id,
                *binding,
                push.map_or(0, |p| p.attempts),
                &settlement,
                *at_ms,
            )
        })
        .collect()
}

/// What a batch of receipts writes, decided as if they were applied one by one in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReceiptPlan {
    /// One per receipt, in order.
    pub effects: Vec<ReceiptEffect>,
    /// Pushes settled by the batch, in order: their state changes and events are written, then
    /// all their references deleted.
    pub settled: Vec<SettledPush>,
    /// Receipts whose row is written after those deletions, with the push that holds the row
    /// (`None`: kept as an orphan, held until `now + hold`): an insert where no row is left,
    /// else an update of status, detail and time that keeps the holder and the hold. Receipts
    /// recorded on a push that settled in the batch are not here (their rows are deleted).
    pub upserts: Vec<(usize, Option<String>)>,
}

/// Splits a receipt batch into runs in which no reference repeats (each run is planned with
/// [`plan_receipts`] against the rows the previous runs wrote).
pub(crate) fn runs_of_distinct_refs(receipts: &[Receipt], max_len: usize) -> Vec<&[Receipt]> {
    let mut runs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut start = 0;
    for (i, r) in receipts.iter().enumerate() {
        if i - start >= max_len.max(1) || !seen.insert((r.binding, &r.reference)) {
            runs.push(&receipts[start..i]);
            start = i;
            seen.clear();
            seen.insert((r.binding, &r.reference));
        }
    }
    if start < receipts.len() {
        runs.push(&receipts[start..]);
    }
    runs
}

/// Receipt application for a batch whose references are distinct (see
/// [`runs_of_distinct_refs`]), all at `now_ms`: the same decisions as applying them one by one
/// — record the receipt on its row (an orphan row when no push holds the reference), then
/// [`settle`] the holder with the receipt as trigger — computed from the rows read once for the
/// whole batch, so that a store writes the outcome with a few statements per batch instead of
/// several per receipt.
///
/// One by one, a push settled by an earlier receipt of the batch has released its references,
/// so a later receipt for another of its parts finds no row and is kept as an orphan; a part
/// recorded before the push settled is deleted with the others.
pub(crate) fn plan_receipts(
    receipts: &[Receipt],
    mut rows: ReceiptRows,
    now_ms: i64,
) -> ReceiptPlan {
    let mut effects = Vec::with_capacity(receipts.len());
    let mut settled: Vec<SettledPush> = Vec::new();
    let mut released = std::collections::HashSet::new();
    let mut upserts = Vec::with_capacity(receipts.len());
    for (i, r) in receipts.iter().enumerate() {
        let holder = rows
            .holders
            .get(&(r.binding, r.reference.clone()))
            .cloned()
            .flatten()
            .filter(|p| !released.contains(p));
        let Some(push_id) = holder else {
            // No row, an orphan row, or the row of a push that settled above (deleted by then).
            effects.push(ReceiptEffect::Pending);
            upserts.push((i, None));
            continue;
        };
        let refs = rows.refs.entry(push_id.clone()).or_default();
        let status = RefStatus::of_receipt(r.delivered);
        match refs.iter_mut().find(|x| x.reference == r.reference) {
            Some(x) => {
                x.status = status;
                x.detail.clone_from(&r.detail);
                x.updated_at_ms = now_ms;
            }
            None => refs.push(RefRow {
                reference: r.reference.clone(),
                status,
                detail: r.detail.clone(),
                updated_at_ms: now_ms,
            }),
        }
        let push = rows.pushes.get_mut(&push_id);
        let settlement = settle(
            push.as_ref().map(|p| &p.view),
            r.binding,
            refs,
            Some(&r.reference),
            now_ms,
        );
        if let Some(p) = push {
            match &settlement {
                Settlement::Finish { state, .. } => p.view.state = *state,
                Settlement::Fallback { binding_index, .. } => {
                    p.view.state = PushState::Queued;
                    p.view.binding_index = *binding_index;
                }
                Settlement::Ignore | Settlement::Hold => {}
            }
            if let Some(done) =
                SettledPush::of(&push_id, r.binding, p.attempts, &settlement, now_ms)
            {
                released.insert(push_id.clone());
                settled.push(done);
            }
        }
        upserts.push((i, Some(push_id.clone())));
        effects.push(receipt_effect(push_id, settlement));
    }
    upserts.retain(|(_, holder)| holder.as_ref().is_none_or(|p| !released.contains(p)));
    ReceiptPlan {
        effects,
        settled,
        upserts,
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
                PushState::Unconfirmed,
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
            (
                Next::Defer { at_ms: 5_000 },
                PushState::RetryWait,
                Some(5_000),
                None,
                -1,
                2,
            ),
        ];
        for (next, state, next_at, index, delta, attempt) in cases {
            let c = completion(next.clone());
            let e = completion_effect(&c);
            let ev = e.event.as_ref().unwrap();
            assert_eq!(
                (
                    e.state,
                    e.next_attempt_at,
                    e.binding_index,
                    e.attempts_delta,
                    ev.attempt
                ),
                (state, next_at, index, delta, attempt),
                "{next:?}"
            );
            assert_eq!(ev.state, state);
            assert_eq!((ev.at_ms, e.updated_at_ms), (1_000, 1_000));
            assert_eq!((ev.binding, e.last_binding), (WAP, WAP));
            assert_eq!(ev.detail, "d");
            assert_eq!(e.refs, None, "{next:?}");
        }
    }

    #[test]
    fn a_deferral_requeues_without_counting_the_attempt_or_writing_an_event() {
        let e_ = completion(Next::Requeue { at_ms: 5_000 });
        let e = completion_effect(&e_);
        assert_eq!(
            (e.state, e.next_attempt_at, e.attempts_delta),
            (PushState::Queued, Some(5_000), -1)
        );
        assert!(e.event.is_none());
        assert_eq!(e.refs, None);
    }

    #[test]
    fn accepted_refs_are_deduplicated_and_need_a_binding() {
        let (a, b, b2) = (
            NextHopRef::new("s1", "a"),
            NextHopRef::new("s1", "b"),
            NextHopRef::new("s2", "b"),
        );
        let c = completion(Next::Accepted {
            refs: vec![b2.clone(), b.clone(), a.clone(), b.clone()],
        });
        let e = completion_effect(&c);
        // The same id on two accounts is two references.
        assert_eq!(e.refs, Some((BindingKind::Wap, vec![&a, &b, &b2])));
        assert_eq!(e.state, PushState::Accepted);
        let mut c = c;
        c.binding = None;
        let e = completion_effect(&c);
        assert_eq!(e.refs, None);
        assert_eq!(e.last_binding, None);
        // No binding to name them: no receipt can come.
        assert_eq!(e.state, PushState::Unconfirmed);
    }

    #[test]
    fn release_of_a_first_attempt_does_not_underflow() {
        let mut c = completion(Next::Release);
        c.attempt = 0;
        assert_eq!(completion_effect(&c).event.unwrap().attempt, 0);
    }

    fn r(reference: &str, status: RefStatus, detail: &str, at: i64) -> RefRow {
        RefRow {
            reference: NextHopRef::new("acct", reference),
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

    fn view(state: PushState, choice: Option<BindingKind>) -> PushView {
        PushView {
            state,
            binding_choice: choice,
            binding_index: 0,
            bindings: vec![BindingKind::Wap],
            expires_at_ms: 1_000,
        }
    }

    /// [`super::settle`] for a push with one binding (no fallback possible).
    fn settle(state: Option<PushState>, refs: &[RefRow], trigger: Option<&str>) -> Settlement {
        let view = state.map(|s| view(s, None));
        let trigger = trigger.map(|t| NextHopRef::new("acct", t));
        super::settle(view.as_ref(), BindingKind::Wap, refs, trigger.as_ref(), 0)
    }

    #[test]
    fn only_an_accepted_or_unconfirmed_push_settles() {
        let refs = [r("a", Delivered, "DELIVRD", 1)];
        for s in PushState::ALL {
            let got = settle(Some(s), &refs, Some("a"));
            if matches!(s, PushState::Accepted | PushState::Unconfirmed) {
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
    fn a_failed_receipt_falls_back_under_auto_only() {
        let (wap, http, sip) = (BindingKind::Wap, BindingKind::Http, BindingKind::Sip);
        let refs = [r("a", Failed, "SMPP receipt stat:UNDELIV", 1)];
        let trigger = NextHopRef::new("acct", "a");
        let mut p = view(PushState::Accepted, None);
        p.bindings = vec![sip, wap, http];
        // The attempt skipped SIP (not run here) and used WAP at index 1: next is HTTP at 2.
        assert_eq!(
            super::settle(Some(&p), wap, &refs, Some(&trigger), 0),
            Settlement::Fallback {
                binding_index: 2,
                detail: "receipt: SMPP receipt stat:UNDELIV; falling back to http".into()
            }
        );
        let failed = finish(PushState::Failed, "receipt: SMPP receipt stat:UNDELIV");
        // An explicit binding choice, no binding left, the TTL passed, or already unconfirmed:
        // the push fails.
        let mut explicit = p.clone();
        explicit.binding_choice = Some(wap);
        let mut last = p.clone();
        last.bindings = vec![http, wap];
        let mut late = p.clone();
        late.state = PushState::Unconfirmed;
        for (what, v, now) in [
            ("explicit", &explicit, 0),
            ("last", &last, 0),
            ("ttl", &p, 1_000),
            ("unconfirmed", &late, 0),
        ] {
            assert_eq!(
                super::settle(Some(v), wap, &refs, Some(&trigger), now),
                failed,
                "{what}"
            );
        }
        // A delivery never falls back; the releases follow the settlement.
        let ok = [r("a", Delivered, "DELIVRD", 1)];
        let got = super::settle(Some(&p), wap, &ok, Some(&trigger), 0);
        assert_eq!(got, finish(PushState::Delivered, "receipt: DELIVRD"));
        assert!(got.releases_refs());
        assert!(!Settlement::Hold.releases_refs());
        assert!(!Settlement::Ignore.releases_refs());
    }

    #[test]
    fn a_recorded_reference_adopts_only_a_fresh_orphan() {
        let orphan = |until| HeldRef {
            push_id: None,
            hold_until_ms: Some(until),
        };
        assert_eq!(claim_ref(None, 100), RefClaim::Take);
        // An overtaking receipt inside its hold window (the bound is inclusive).
        assert_eq!(claim_ref(Some(&orphan(100)), 100), RefClaim::Adopt);
        assert_eq!(claim_ref(Some(&orphan(200)), 100), RefClaim::Adopt);
        // Held too long: never settles a push that gets the id later.
        assert_eq!(claim_ref(Some(&orphan(99)), 100), RefClaim::Take);
        // The id of another push (settled or not): the new push takes it, pending.
        let held = HeldRef {
            push_id: Some("p0".into()),
            hold_until_ms: None,
        };
        assert_eq!(claim_ref(Some(&held), 100), RefClaim::Take);
        let odd = HeldRef {
            push_id: None,
            hold_until_ms: None,
        };
        assert_eq!(claim_ref(Some(&odd), 100), RefClaim::Take);
    }

    #[test]
    fn receipts_that_all_overtook_and_delivered_settle_the_completion_at_once() {
        let refs = vec![NextHopRef::new("acct", "a"), NextHopRef::new("acct", "b")];
        let c = completion(Next::Accepted { refs: refs.clone() });
        let orphan = |status, detail: &str, at| FoundRef {
            held: HeldRef {
                push_id: None,
                hold_until_ms: Some(5_000),
            },
            status,
            detail: detail.into(),
            updated_at_ms: at,
        };
        let found = |b: FoundRef| -> FoundRefs {
            [
                (
                    (BindingKind::Wap, refs[0].clone()),
                    orphan(RefStatus::Delivered, "DELIVRD a", 900),
                ),
                ((BindingKind::Wap, refs[1].clone()), b),
            ]
            .into_iter()
            .collect()
        };
        // Both parts delivered before the completion: delivered at once, the `delivered` event
        // after the `accepted` one, naming the last delivery (as `settle` would).
        let mut e = completion_effect(&c);
        assert!(settle_overtaken(
            &mut e,
            &found(orphan(RefStatus::Delivered, "DELIVRD b", 950))
        ));
        assert_eq!(e.state, PushState::Delivered);
        assert_eq!(
            e.event.as_ref().map(|ev| ev.state),
            Some(PushState::Accepted)
        );
        let settled = e.settled.clone().expect("settled event");
        assert_eq!(
            settled,
            EventRow {
                at_ms: 1_000,
                state: PushState::Delivered,
                binding: WAP,
                attempt: 3,
                detail: "receipt: DELIVRD b".into(),
            }
        );
        assert!(e.refs.is_some(), "the references to release");
        // Anything else is left to recording and `settle_adopted`, unchanged.
        let unchanged = |found: &FoundRefs| {
            let mut e = completion_effect(&c);
            let before = e.clone();
            assert!(!settle_overtaken(&mut e, found));
            assert_eq!(e, before);
        };
        // A part pending, a part failed (may fall back: needs the push's bindings).
        unchanged(&found(orphan(RefStatus::Pending, "", 950)));
        unchanged(&found(orphan(RefStatus::Failed, "UNDELIV", 950)));
        // A part without a receipt yet.
        let mut one = found(orphan(RefStatus::Delivered, "DELIVRD b", 950));
        one.remove(&(BindingKind::Wap, refs[1].clone()));
        unchanged(&one);
        // A receipt held past its window, or the row of another push: never adopted.
        let mut stale = orphan(RefStatus::Delivered, "DELIVRD b", 950);
        stale.held.hold_until_ms = Some(999);
        unchanged(&found(stale));
        let mut other = orphan(RefStatus::Delivered, "DELIVRD b", 950);
        other.held.push_id = Some("p0".into());
        unchanged(&found(other));
        // Only an `Accepted` completion with references.
        let all = found(orphan(RefStatus::Delivered, "DELIVRD b", 950));
        for next in [Next::Delivered, Next::Failed, Next::RetryAt { at_ms: 5 }] {
            let c = completion(next);
            let mut e = completion_effect(&c);
            assert!(!settle_overtaken(&mut e, &all));
            assert!(e.settled.is_none());
        }
    }

    #[test]
    fn a_reference_named_twice_in_a_batch_is_not_distinct() {
        let a = completion(Next::Accepted {
            refs: vec![NextHopRef::new("acct", "1"), NextHopRef::new("acct", "1")],
        });
        let b = completion(Next::Accepted {
            refs: vec![NextHopRef::new("acct", "2")],
        });
        let c = completion(Next::Accepted {
            refs: vec![NextHopRef::new("acct", "2")],
        });
        let d = completion(Next::Failed);
        fn e<'a>(cs: &[&'a Completion]) -> Vec<CompletionEffect<'a>> {
            cs.iter().map(|c| completion_effect(c)).collect()
        }
        // Repeated within one completion: deduplicated by `completion_effect`.
        assert!(refs_are_distinct(&e(&[&a, &b, &d])));
        assert!(!refs_are_distinct(&e(&[&a, &b, &c])));
    }

    #[test]
    fn collapse_scope_is_the_device_or_the_inline_snapshot() {
        let mut a = new_push("1", "t", None);
        a.collapse_key = Some("wake".into());
        a.device_id = Some("dev-a".into());
        let mut b = a.clone();
        b.device_id = Some("dev-b".into());
        assert_eq!(collapse_scope(&a), CollapseScope::Device("dev-a"));
        assert_ne!(collapse_lock_id(&a), collapse_lock_id(&b));
        let mut other_tenant = a.clone();
        other_tenant.tenant = "u".into();
        assert_ne!(collapse_lock_id(&a), collapse_lock_id(&other_tenant));
        let mut inline = a.clone();
        inline.device_id = None;
        assert_eq!(collapse_scope(&inline), CollapseScope::Inline("[]".into()));
        assert_ne!(collapse_lock_id(&a), collapse_lock_id(&inline));
        let mut no_key = a.clone();
        no_key.collapse_key = None;
        assert_eq!(collapse_lock_id(&no_key), None);
        assert_eq!(collapse_lock_id(&a), collapse_lock_id(&a.clone()));
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

    /// A push with nothing set beyond its id, tenant and idempotency key (also used by the
    /// stores' unit tests).
    pub(crate) fn new_push(id: &str, tenant: &str, key: Option<&str>) -> NewPush {
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
            bootstrap: None,
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

    fn rcpt(id: &str, delivered: bool) -> Receipt {
        Receipt {
            binding: BindingKind::Wap,
            reference: NextHopRef::new("acct", id),
            delivered,
            detail: if delivered { "D" } else { "F" }.to_owned(),
            hold: std::time::Duration::from_millis(50),
            ack: None,
        }
    }

    fn key(id: &str) -> RefKey {
        (BindingKind::Wap, NextHopRef::new("acct", id))
    }

    /// Rows for pushes `p` (two parts p0, p1; auto over WAP then HTTP) and `q` (one part q0,
    /// WAP only), both accepted, and an orphan receipt `o`.
    fn rows() -> ReceiptRows {
        let mut rows = ReceiptRows::default();
        for (k, holder) in [
            ("p0", Some("p")),
            ("p1", Some("p")),
            ("q0", Some("q")),
            ("o", None),
        ] {
            rows.holders.insert(key(k), holder.map(str::to_owned));
        }
        let mut p = view(PushState::Accepted, None);
        p.bindings = vec![BindingKind::Wap, BindingKind::Http];
        p.expires_at_ms = 10_000;
        rows.pushes.insert(
            "p".into(),
            HeldPush {
                view: p,
                attempts: 1,
            },
        );
        rows.pushes.insert(
            "q".into(),
            HeldPush {
                view: view(PushState::Accepted, Some(BindingKind::Wap)),
                attempts: 2,
            },
        );
        rows.refs.insert(
            "p".into(),
            vec![r("p0", Pending, "", 1), r("p1", Pending, "", 1)],
        );
        rows.refs.insert("q".into(), vec![r("q0", Pending, "", 1)]);
        rows
    }

    #[test]
    fn a_receipt_batch_decides_as_one_by_one() {
        // Two parts of p delivered: partial, then finished by the second (its detail).
        let plan = plan_receipts(&[rcpt("p0", true), rcpt("p1", true)], rows(), 5);
        assert_eq!(
            plan.effects,
            [
                ReceiptEffect::Partial {
                    push_id: "p".into()
                },
                ReceiptEffect::Finished {
                    push_id: "p".into(),
                    state: PushState::Delivered
                }
            ]
        );
        assert_eq!(plan.settled.len(), 1);
        assert_eq!(
            (plan.settled[0].state, plan.settled[0].attempts),
            (PushState::Delivered, 1)
        );
        // Both rows go with the release.
        assert_eq!(plan.upserts, []);

        // p falls back and q finishes in one batch; p's other part, after the fallback, finds no
        // row (kept as an orphan); the orphan `o` and an unknown id stay orphans.
        let batch = [
            rcpt("p0", false),
            rcpt("q0", false),
            rcpt("p1", true),
            rcpt("o", true),
            rcpt("new", false),
        ];
        let plan = plan_receipts(&batch, rows(), 5);
        assert_eq!(
            plan.effects,
            [
                ReceiptEffect::FellBack {
                    push_id: "p".into(),
                    binding_index: 1
                },
                ReceiptEffect::Finished {
                    push_id: "q".into(),
                    state: PushState::Failed
                },
                ReceiptEffect::Pending,
                ReceiptEffect::Pending,
                ReceiptEffect::Pending,
            ]
        );
        let fallback = &plan.settled[0];
        assert_eq!(
            (
                fallback.push_id.as_str(),
                fallback.state,
                fallback.fallback_to
            ),
            ("p", PushState::Queued, Some(1))
        );
        assert!(fallback.detail.ends_with("falling back to http"));
        assert_eq!(
            (plan.settled[1].state, plan.settled[1].fallback_to),
            (PushState::Failed, None)
        );
        assert_eq!(plan.upserts, [(2, None), (3, None), (4, None)]);

        // A part recorded while the push still waits is written with its holder.
        let plan = plan_receipts(&[rcpt("p1", true)], rows(), 5);
        assert_eq!(plan.upserts, [(0, Some("p".to_owned()))]);
        assert!(plan.settled.is_empty());
    }

    #[test]
    fn a_receipt_of_a_settled_or_missing_push_is_ignored_and_kept() {
        let mut rows = rows();
        rows.pushes.get_mut("q").unwrap().view.state = PushState::Delivered;
        rows.pushes.remove("p");
        let plan = plan_receipts(&[rcpt("q0", true), rcpt("p0", true)], rows, 5);
        assert_eq!(
            plan.effects,
            [
                ReceiptEffect::Ignored {
                    push_id: "q".into()
                },
                ReceiptEffect::Ignored {
                    push_id: "p".into()
                }
            ]
        );
        assert!(plan.settled.is_empty());
        assert_eq!(
            plan.upserts,
            [(0, Some("q".to_owned())), (1, Some("p".to_owned()))]
        );
    }

    #[test]
    fn receipt_runs_never_repeat_a_reference() {
        let batch = [
            rcpt("a", true),
            rcpt("b", true),
            rcpt("a", false),
            rcpt("c", true),
            rcpt("b", true),
        ];
        let lens: Vec<usize> = runs_of_distinct_refs(&batch, 10)
            .iter()
            .map(|r| r.len())
            .collect();
        assert_eq!(lens, [2, 3]);
        let lens: Vec<usize> = runs_of_distinct_refs(&batch, 2)
            .iter()
            .map(|r| r.len())
            .collect();
        assert_eq!(lens, [2, 2, 1]);
        // The same id on another binding is another reference.
        let mut sip = rcpt("a", true);
        sip.binding = BindingKind::Sip;
        assert_eq!(runs_of_distinct_refs(&[rcpt("a", true), sip], 10).len(), 1);
        assert!(runs_of_distinct_refs(&[], 10).is_empty());
    }
}
