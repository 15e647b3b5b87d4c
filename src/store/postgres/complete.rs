//! Completions and receipts: attempt outcomes applied in one `UPDATE … FROM UNNEST(…)` per
//! batch, references recorded for receipt correlation, and receipts settling pushes. What each
//! completion and receipt decides is [`crate::store::rules`]; this file is the SQL.

use std::collections::HashSet;

use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Notify;

use super::{Events, WAKEUP_CHANNEL, i32_of};
use crate::domain::{BindingKind, DeviceBinding, NextHopRef, Receipt};
use crate::store::{
    Completion, PushState, ReceiptEffect, StoreError, from_json, parse_binding, parse_state,
    rules::{self, CompletionEffect, HeldRef, PushView, RefClaim, RefRow, RefStatus, Settlement},
};

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
    delta: Vec<i32>,
}

impl CompletionCols {
    fn add(&mut self, ord: usize, c: &Completion, e: &CompletionEffect<'_>) {
        self.ord.push(i32::try_from(ord).unwrap_or(i32::MAX));
        self.id.push(c.push_id.clone());
        self.owner.push(c.owner.clone());
        self.state.push(e.state.as_str().to_owned());
        self.binding
            .push(e.last_binding.map(|b| b.as_str().to_owned()));
        self.at.push(e.updated_at_ms);
        self.next_at.push(e.next_attempt_at);
        self.index.push(e.binding_index.map(i32_of));
        self.delta.push(e.attempts_delta);
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
                 attempts = p.attempts + u.delta \
             FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::int8[], $7::int8[], $8::int4[], $9::int4[]) \
                 AS u(ord, id, owner, state, binding, at, next_at, idx, delta) \
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
        .bind(self.delta)
        .fetch_all(&mut **tx)
        .await?;
        Ok(ords
            .into_iter()
            .filter_map(|o| usize::try_from(o).ok())
            .collect())
    }
}

pub(super) async fn complete(
    pool: &PgPool,
    wake: &Notify,
    batch: Vec<Completion>,
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    // No `rules::settle_overtaken` here (SQLite applies it): it needs the rows of the batch's
    // references before the pushes are written, one more statement per batch, and here receipts
    // almost never overtake the completion (in the SMS benchmark the completions' reads found
    // none, and cost ≈ 4 ms per batch, ~10 % of PostgreSQL's time: decisions/postgres.md 26).
    // A receipt that does overtake is adopted and settled below, as before.
    let effects: Vec<CompletionEffect<'_>> = batch.iter().map(rules::completion_effect).collect();
    // One UPDATE for the whole batch (a statement per completion made the completion
    // writer, not the database, the limit on deliveries per second). Each row applies only
    // while its lease is still held by the completing owner.
    let mut cols = CompletionCols::default();
    for (ord, (c, e)) in batch.iter().zip(&effects).enumerate() {
        cols.add(ord, c, e);
    }
    let distinct: HashSet<&str> = batch.iter().map(|c| c.push_id.as_str()).collect();
    let mut tx = pool.begin().await?;
    let applied: HashSet<usize> = if distinct.len() == batch.len() {
        cols.apply(&mut tx).await?
    } else {
        // The same push twice in one batch: apply in order, one statement each, so the
        // second sees the first's effect (an UPDATE … FROM would pick one arbitrarily).
        let mut applied = HashSet::new();
        for (ord, (c, e)) in batch.iter().zip(&effects).enumerate() {
            let mut one = CompletionCols::default();
            one.add(ord, c, e);
            applied.extend(one.apply(&mut tx).await?);
        }
        applied
    };
    let mut events = Events::default();
    let mut due_now = false;
    let mut accepted: Vec<Accepted<'_>> = Vec::new();
    for (ord, (c, e)) in batch.iter().zip(&effects).enumerate() {
        if !applied.contains(&ord) {
            // The lease was lost (expired and taken over, or never held): not ours to record.
            tracing::debug!(push = %c.push_id, owner = %c.owner, "completion ignored: lease lost");
            continue;
        }
        due_now |= e.next_attempt_at.is_some();
        if let Some(ev) = &e.event {
            events.add_row(&c.push_id, ev);
        }
        if let Some((binding, refs)) = &e.refs {
            accepted.push(Accepted {
                completion: c,
                binding: *binding,
                refs,
            });
        }
    }
    // Events first: a push's `accepted` event must precede the event of a receipt that
    // overtook it and settles it below.
    events.flush(&mut tx).await?;
    due_now |= record_refs(&mut tx, &accepted).await?;
    if due_now {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKEUP_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if due_now {
        wake.notify_one();
    }
    Ok(())
}

/// An applied `Accepted` completion and the references it names.
struct Accepted<'a> {
    completion: &'a Completion,
    binding: BindingKind,
    refs: &'a [&'a NextHopRef],
}

/// Key columns of `push_refs` rows, for `UNNEST`.
#[derive(Default)]
struct RefCols {
    binding: Vec<&'static str>,
    account: Vec<String>,
    reference: Vec<String>,
    push_id: Vec<String>,
    at: Vec<i64>,
}

impl RefCols {
    fn add(&mut self, binding: BindingKind, r: &NextHopRef, push_id: &str, at: i64) {
        self.binding.push(binding.as_str());
        self.account.push(r.account.clone());
        self.reference.push(r.id.clone());
        self.push_id.push(push_id.to_owned());
        self.at.push(at);
    }
}

/// Reads and locks the existing `push_refs` rows of `keys`, in byte-wise key order: the one
/// order in which completions and receipt batches lock references (two transactions locking
/// overlapping keys in different orders deadlock; docs/ARCHITECTURE.md).
async fn lock_refs(
    tx: &mut Transaction<'static, Postgres>,
    keys: &RefCols,
) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
    Ok(sqlx::query(
        "SELECT binding, account, reference, push_id, hold_until FROM push_refs \
         WHERE (binding, account, reference) IN \
             (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])) \
         ORDER BY binding COLLATE \"C\", account COLLATE \"C\", reference COLLATE \"C\" FOR UPDATE",
    )
    .bind(&keys.binding)
    .bind(&keys.account)
    .bind(&keys.reference)
    .fetch_all(&mut **tx)
    .await?)
}

/// Stores the references of `Accepted` completions per [`rules::claim_ref`] and settles the
/// pushes that adopted receipts which overtook their completion. `true` when one of them fell
/// back (it is due now).
///
/// Race-free against receipts committed by other transactions: new rows are inserted with
/// `ON CONFLICT DO NOTHING` (waiting for a concurrent inserter), and the rows that already exist
/// are locked (`FOR UPDATE`) before the rule reads them.
async fn record_refs(
    tx: &mut Transaction<'static, Postgres>,
    accepted: &[Accepted<'_>],
) -> Result<bool, StoreError> {
    if accepted.is_empty() {
        return Ok(false);
    }
    let mut seen = HashSet::new();
    let unique = accepted.iter().all(|a| {
        a.refs
            .iter()
            .all(|r| seen.insert((a.binding, r.account.as_str(), r.id.as_str())))
    });
    let groups: Vec<&[Accepted<'_>]> = if unique {
        vec![accepted]
    } else {
        // A reference named by two pushes of one batch: one round per push, in order, so that
        // the later push takes the id from the earlier one.
        accepted.chunks(1).collect()
    };
    let mut adopted = HashSet::new();
    for g in groups {
        // In key order, byte-wise (= `COLLATE "C"`), the order in which receipt batches lock and
        // upsert the same keys: two transactions inserting overlapping new keys in different
        // orders deadlock (seen as 1 s stalls — `deadlock_timeout` — in the SMS benchmark).
        let mut keyed: Vec<(&str, &NextHopRef, &Accepted<'_>)> = g
            .iter()
            .flat_map(|a| a.refs.iter().map(move |r| (a.binding.as_str(), *r, a)))
            .collect();
        keyed.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        let mut all = RefCols::default();
        for (_, r, a) in keyed {
            all.add(a.binding, r, &a.completion.push_id, a.completion.at_ms);
        }
        let inserted: HashSet<(String, String, String)> = sqlx::query_as(
            "INSERT INTO push_refs \
                 (binding, account, reference, push_id, status, detail, updated_at, hold_until) \
             SELECT b, a, r, p, 'pending', '', t, NULL \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
                 AS x(b, a, r, p, t) \
             ON CONFLICT (binding, account, reference) DO NOTHING \
             RETURNING binding, account, reference",
        )
        .bind(&all.binding)
        .bind(&all.account)
        .bind(&all.reference)
        .bind(&all.push_id)
        .bind(&all.at)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        if inserted.len() == all.binding.len() {
            continue;
        }
        // The rows that were there: lock them, then decide per row.
        let mut rest = RefCols::default();
        for a in g {
            for r in a.refs {
                let key = (
                    a.binding.as_str().to_owned(),
                    r.account.clone(),
                    r.id.clone(),
                );
                if !inserted.contains(&key) {
                    rest.add(a.binding, r, &a.completion.push_id, a.completion.at_ms);
                }
            }
        }
        let rows = lock_refs(tx, &rest).await?;
        let mut held = std::collections::HashMap::new();
        for r in rows {
            let key: (String, String, String) = (
                r.try_get("binding")?,
                r.try_get("account")?,
                r.try_get("reference")?,
            );
            held.insert(
                key,
                HeldRef {
                    push_id: r.try_get("push_id")?,
                    hold_until_ms: r.try_get("hold_until")?,
                },
            );
        }
        let (mut adopt, mut take) = (RefCols::default(), RefCols::default());
        for i in 0..rest.binding.len() {
            let key = (
                rest.binding[i].to_owned(),
                rest.account[i].clone(),
                rest.reference[i].clone(),
            );
            let into = match rules::claim_ref(held.get(&key), rest.at[i]) {
                RefClaim::Adopt => {
                    adopted.insert(rest.push_id[i].clone());
                    &mut adopt
                }
                RefClaim::Take => &mut take,
            };
            into.binding.push(rest.binding[i]);
            into.account.push(rest.account[i].clone());
            into.reference.push(rest.reference[i].clone());
            into.push_id.push(rest.push_id[i].clone());
            into.at.push(rest.at[i]);
        }
        for (cols, sql) in [
            (
                adopt,
                "UPDATE push_refs x SET push_id = u.p, hold_until = NULL \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
                     AS u(b, a, r, p, t) \
                 WHERE x.binding = u.b AND x.account = u.a AND x.reference = u.r",
            ),
            (
                take,
                "INSERT INTO push_refs \
                     (binding, account, reference, push_id, status, detail, updated_at, hold_until) \
                 SELECT b, a, r, p, 'pending', '', t, NULL \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
                     AS u(b, a, r, p, t) \
                 ON CONFLICT (binding, account, reference) DO UPDATE SET \
                     push_id = EXCLUDED.push_id, status = 'pending', detail = '', \
                     updated_at = EXCLUDED.updated_at, hold_until = NULL",
            ),
        ] {
            if cols.binding.is_empty() {
                continue;
            }
            sqlx::query(sql)
                .bind(cols.binding)
                .bind(cols.account)
                .bind(cols.reference)
                .bind(cols.push_id)
                .bind(cols.at)
                .execute(&mut **tx)
                .await?;
        }
    }
    // Pushes just made `accepted` by their completion (inside this transaction) that adopted
    // overtaking receipts: settled together.
    let adopted: Vec<(&str, BindingKind, i64)> = accepted
        .iter()
        .filter(|a| adopted.contains(&a.completion.push_id))
        .map(|a| (a.completion.push_id.as_str(), a.binding, a.completion.at_ms))
        .collect();
    if adopted.is_empty() {
        return Ok(false);
    }
    let mut held: Vec<String> = adopted.iter().map(|(id, _, _)| (*id).to_owned()).collect();
    held.sort_unstable();
    held.dedup();
    let mut rows = rules::ReceiptRows::default();
    read_held(tx, &held, &mut rows).await?;
    let settled = rules::settle_adopted(&adopted, &rows);
    write_settled(tx, &settled).await?;
    Ok(settled.iter().any(|s| s.fallback_to.is_some()))
}

/// Reads (and locks) the push and its references, applies [`rules::settle`], and writes what it
/// decides: the final state (or the fallback to the next binding) and its event, and the release
/// of the push's references once it is settled.
async fn settle(
    tx: &mut Transaction<'static, Postgres>,
    push_id: &str,
    binding: BindingKind,
    at_ms: i64,
    trigger: Option<&NextHopRef>,
) -> Result<Settlement, StoreError> {
    // Locked so that receipts for two parts of one push settle it once.
    let row = sqlx::query(
        "SELECT state, attempts, binding_choice, binding_index, bindings, expires_at \
         FROM pushes WHERE id = $1 FOR UPDATE",
    )
    .bind(push_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (view, attempts) = match row {
        Some(r) => {
            let bindings: Vec<DeviceBinding> = from_json(r.try_get("bindings")?, "push bindings")?;
            let view = PushView {
                state: parse_state(r.try_get("state")?)?,
                binding_choice: parse_binding(r.try_get("binding_choice")?, "binding_choice")?,
                binding_index: super::u32_of(r.try_get("binding_index")?, "binding_index")?,
                bindings: bindings.iter().map(DeviceBinding::kind).collect(),
                expires_at_ms: r.try_get("expires_at")?,
            };
            (
                Some(view),
                super::u32_of(r.try_get("attempts")?, "attempts")?,
            )
        }
        None => (None, 0),
    };
    let mut refs = Vec::new();
    for r in sqlx::query(
        "SELECT account, reference, status, detail, updated_at FROM push_refs WHERE push_id = $1",
    )
    .bind(push_id)
    .fetch_all(&mut **tx)
    .await?
    {
        refs.push(RefRow {
            reference: NextHopRef {
                account: r.try_get("account")?,
                id: r.try_get("reference")?,
            },
            status: RefStatus::parse(r.try_get("status")?),
            detail: r.try_get("detail")?,
            updated_at_ms: r.try_get("updated_at")?,
        });
    }
    let settlement = rules::settle(view.as_ref(), binding, &refs, trigger, at_ms);
    let mut ev = Events::default();
    match &settlement {
        Settlement::Finish { state, detail } => {
            sqlx::query("UPDATE pushes SET state = $2, updated_at = $3 WHERE id = $1")
                .bind(push_id)
                .bind(state.as_str())
                .bind(at_ms)
                .execute(&mut **tx)
                .await?;
            ev.add(
                push_id,
                at_ms,
                *state,
                Some(binding),
                i32_of(attempts),
                detail.clone(),
            );
        }
        Settlement::Fallback {
            binding_index,
            detail,
        } => {
            sqlx::query(
                "UPDATE pushes SET state = 'queued', binding_index = $2, next_attempt_at = $3, \
                     updated_at = $3 WHERE id = $1",
            )
            .bind(push_id)
            .bind(i32_of(*binding_index))
            .bind(at_ms)
            .execute(&mut **tx)
            .await?;
            ev.add(
                push_id,
                at_ms,
                PushState::Queued,
                Some(binding),
                i32_of(attempts),
                detail.clone(),
            );
        }
        Settlement::Ignore | Settlement::Hold => {}
    }
    ev.flush(tx).await?;
    if settlement.releases_refs() {
        sqlx::query("DELETE FROM push_refs WHERE push_id = $1")
            .bind(push_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(settlement)
}

/// Receipts per run of distinct references ([`rules::runs_of_distinct_refs`]): read the rows
/// once per run (references, then their pushes, each locked in key order), decide with
/// [`rules::plan_receipts`], and write the outcome with one statement per kind of change —
/// instead of an upsert, two reads and up to three writes per receipt.
const RECEIPT_RUN: usize = 1_000;

pub(super) async fn apply_receipts(
    pool: &PgPool,
    receipts: &[Receipt],
    now_ms: i64,
) -> Result<Vec<ReceiptEffect>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut effects = Vec::with_capacity(receipts.len());
    for run in rules::runs_of_distinct_refs(receipts, RECEIPT_RUN) {
        effects.extend(receipt_run(&mut tx, run, now_ms).await?);
    }
    if effects
        .iter()
        .any(|e| matches!(e, ReceiptEffect::FellBack { .. }))
    {
        // A push went back to `queued`: due now on whichever replica claims first.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKEUP_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(effects)
}

/// One run of receipts with distinct references, inside the caller's transaction.
///
/// Locks: the existing reference rows (key order), then their pushes (id order) — the order the
/// one-receipt-at-a-time path took, so completions and other replicas' receipt batches still
/// wait instead of deadlocking. A key without a row is not locked; if a completion inserts it
/// before the upsert below, the upsert finds that push as the holder and that receipt is
/// settled on its own ([`settle`]), as before.
async fn receipt_run(
    tx: &mut Transaction<'static, Postgres>,
    receipts: &[Receipt],
    now_ms: i64,
) -> Result<Vec<ReceiptEffect>, StoreError> {
    let mut keys = RefCols::default();
    for r in receipts {
        keys.add(r.binding, &r.reference, "", now_ms);
    }
    let mut rows = rules::ReceiptRows::default();
    for r in lock_refs(tx, &keys).await? {
        let Some(binding) = BindingKind::parse(r.try_get("binding")?) else {
            continue;
        };
        let key = (
            binding,
            NextHopRef {
                account: r.try_get("account")?,
                id: r.try_get("reference")?,
            },
        );
        rows.holders.insert(key, r.try_get("push_id")?);
    }
    let mut held: Vec<String> = rows.holders.values().flatten().cloned().collect();
    held.sort_unstable();
    held.dedup();
    read_held(tx, &held, &mut rows).await?;
    let plan = rules::plan_receipts(receipts, rows, now_ms);
    let mut effects = plan.effects;
    write_settled(tx, &plan.settled).await?;
    // Upserts in key order (concurrent inserters of the same orphan keys wait in one order).
    let mut upserts = plan.upserts;
    upserts.sort_by(|a, b| {
        let (x, y) = (&receipts[a.0], &receipts[b.0]);
        (x.binding.as_str(), &x.reference).cmp(&(y.binding.as_str(), &y.reference))
    });
    if upserts.is_empty() {
        return Ok(effects);
    }
    let mut cols = RefCols::default();
    let (mut status, mut detail, mut hold_until) = (Vec::new(), Vec::new(), Vec::new());
    for (i, _) in &upserts {
        let r = &receipts[*i];
        cols.add(r.binding, &r.reference, "", now_ms);
        status.push(RefStatus::of_receipt(r.delivered).as_str());
        detail.push(r.detail.as_str());
        let hold = i64::try_from(r.hold.as_millis()).unwrap_or(i64::MAX);
        hold_until.push(now_ms.saturating_add(hold));
    }
    let holders: Vec<Option<String>> = sqlx::query_scalar(
        "INSERT INTO push_refs \
             (binding, account, reference, push_id, status, detail, updated_at, hold_until) \
         SELECT b, a, r, NULL, s, d, $7::int8, h \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[]) \
             WITH ORDINALITY AS u(b, a, r, s, d, h, n) \
         ORDER BY n \
         ON CONFLICT (binding, account, reference) DO UPDATE SET status = EXCLUDED.status, \
             detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at \
         RETURNING push_id",
    )
    .bind(&cols.binding)
    .bind(&cols.account)
    .bind(&cols.reference)
    .bind(&status)
    .bind(&detail)
    .bind(&hold_until)
    .bind(now_ms)
    .fetch_all(&mut **tx)
    .await?;
    // RETURNING gives no order guarantee: match the rows back by key only where it matters, i.e.
    // when some receipt planned as an orphan met a holder (a completion inserted the key after
    // the locking read). That is rare, so the plain path checks only whether any did.
    let expected = upserts.iter().filter(|(_, h)| h.is_some()).count();
    if holders.iter().filter(|h| h.is_some()).count() > expected {
        for (i, h) in &upserts {
            if h.is_some() {
                continue;
            }
            let r = &receipts[*i];
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT push_id FROM push_refs \
                 WHERE binding = $1 AND account = $2 AND reference = $3",
            )
            .bind(r.binding.as_str())
            .bind(&r.reference.account)
            .bind(&r.reference.id)
            .fetch_optional(&mut **tx)
            .await?
            .flatten();
            if let Some(push_id) = holder {
                let settled = settle(tx, &push_id, r.binding, now_ms, Some(&r.reference)).await?;
                effects[*i] = rules::receipt_effect(push_id, settled);
            }
        }
    }
    Ok(effects)
}

/// Reads (and locks, in id order) the pushes `held` and all their references into `rows`.
async fn read_held(
    tx: &mut Transaction<'static, Postgres>,
    held: &[String],
    rows: &mut rules::ReceiptRows,
) -> Result<(), StoreError> {
    if held.is_empty() {
        return Ok(());
    }
    // Locked so that receipts for two parts of one push (in two batches) settle it once.
    for r in sqlx::query(
        "SELECT id, state, attempts, binding_choice, binding_index, bindings, expires_at \
         FROM pushes WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(held)
    .fetch_all(&mut **tx)
    .await?
    {
        let bindings: Vec<DeviceBinding> = from_json(r.try_get("bindings")?, "push bindings")?;
        let push = rules::HeldPush {
            view: PushView {
                state: parse_state(r.try_get("state")?)?,
                binding_choice: parse_binding(r.try_get("binding_choice")?, "binding_choice")?,
                binding_index: super::u32_of(r.try_get("binding_index")?, "binding_index")?,
                bindings: bindings.iter().map(DeviceBinding::kind).collect(),
                expires_at_ms: r.try_get("expires_at")?,
            },
            attempts: super::u32_of(r.try_get("attempts")?, "attempts")?,
        };
        rows.pushes.insert(r.try_get("id")?, push);
    }
    for r in sqlx::query(
        "SELECT push_id, account, reference, status, detail, updated_at FROM push_refs \
         WHERE push_id = ANY($1)",
    )
    .bind(held)
    .fetch_all(&mut **tx)
    .await?
    {
        rows.refs
            .entry(r.try_get("push_id")?)
            .or_default()
            .push(RefRow {
                reference: NextHopRef {
                    account: r.try_get("account")?,
                    id: r.try_get("reference")?,
                },
                status: RefStatus::parse(r.try_get("status")?),
                detail: r.try_get("detail")?,
                updated_at_ms: r.try_get("updated_at")?,
            });
    }
    Ok(())
}

/// The state changes and events of pushes settled by receipts, and the release of their
/// references: one statement each for the whole run.
async fn write_settled(
    tx: &mut Transaction<'static, Postgres>,
    settled: &[rules::SettledPush],
) -> Result<(), StoreError> {
    if settled.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(settled.len());
    let mut states = Vec::with_capacity(settled.len());
    let mut index: Vec<Option<i32>> = Vec::with_capacity(settled.len());
    let mut next_at: Vec<Option<i64>> = Vec::with_capacity(settled.len());
    let mut at = Vec::with_capacity(settled.len());
    let mut ev = Events::default();
    for s in settled {
        let idx = s.fallback_to.map(i32_of);
        ids.push(s.push_id.clone());
        states.push(s.state.as_str());
        index.push(idx);
        // A fallback goes on at once with the next binding.
        next_at.push(idx.map(|_| s.at_ms));
        at.push(s.at_ms);
        ev.add(
            &s.push_id,
            s.at_ms,
            s.state,
            Some(s.binding),
            i32_of(s.attempts),
            s.detail.clone(),
        );
    }
    sqlx::query(
        "UPDATE pushes p SET state = u.state, updated_at = u.at, \
             binding_index = COALESCE(u.idx, p.binding_index), \
             next_attempt_at = COALESCE(u.next_at, p.next_attempt_at) \
         FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::int8[], $5::int8[]) \
             AS u(id, state, idx, next_at, at) \
         WHERE p.id = u.id",
    )
    .bind(&ids)
    .bind(&states)
    .bind(&index)
    .bind(&next_at)
    .bind(&at)
    .execute(&mut **tx)
    .await?;
    ev.flush(tx).await?;
    sqlx::query("DELETE FROM push_refs WHERE push_id = ANY($1)")
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `accepted` pushes past `expires_at + grace` become `unconfirmed` (one statement, with events).
pub(super) async fn unconfirm(
    pool: &PgPool,
    now_ms: i64,
    grace_ms: i64,
    limit: u32,
) -> Result<u64, StoreError> {
    let r = sqlx::query(
        "WITH e AS ( \
             SELECT id FROM pushes \
             WHERE state = 'accepted' AND expires_at <= $1 - $2 \
             ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
         u AS ( \
             UPDATE pushes p SET state = 'unconfirmed', updated_at = $1 \
             FROM e WHERE p.id = e.id RETURNING p.id, p.attempts, p.last_binding) \
         INSERT INTO push_events (push_id, at, state, binding, attempt, detail) \
         SELECT id, $1, 'unconfirmed', last_binding, attempts, $4 FROM u",
    )
    .bind(now_ms)
    .bind(grace_ms)
    .bind(i64::from(limit))
    .bind(rules::UNCONFIRMED_DETAIL)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Deletes orphan receipts whose hold window ended.
pub(super) async fn drop_orphan_receipts(
    pool: &PgPool,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<(BindingKind, u64)>, StoreError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "DELETE FROM push_refs x USING ( \
             SELECT binding, account, reference FROM push_refs \
             WHERE push_id IS NULL AND hold_until < $1 \
             LIMIT $2 FOR UPDATE SKIP LOCKED) o \
         WHERE x.binding = o.binding AND x.account = o.account AND x.reference = o.reference \
           AND x.push_id IS NULL \
         RETURNING x.binding",
    )
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rules::count_by_binding(rows))
}
