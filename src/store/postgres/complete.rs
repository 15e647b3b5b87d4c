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
        let mut all = RefCols::default();
        for a in g {
            for r in a.refs {
                all.add(a.binding, r, &a.completion.push_id, a.completion.at_ms);
            }
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
        let rows = sqlx::query(
            "SELECT binding, account, reference, push_id, hold_until FROM push_refs \
             WHERE (binding, account, reference) IN \
                 (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])) \
             ORDER BY binding, account, reference FOR UPDATE",
        )
        .bind(&rest.binding)
        .bind(&rest.account)
        .bind(&rest.reference)
        .fetch_all(&mut **tx)
        .await?;
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
    let mut fell_back = false;
    for a in accepted {
        let c = a.completion;
        if adopted.remove(&c.push_id) {
            // Just made `accepted` by this completion (inside this transaction).
            let settled = settle(tx, &c.push_id, a.binding, c.at_ms, None).await?;
            fell_back |= matches!(settled, Settlement::Fallback { .. });
        }
    }
    Ok(fell_back)
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

pub(super) async fn apply_receipts(
    pool: &PgPool,
    receipts: &[Receipt],
    now_ms: i64,
) -> Result<Vec<ReceiptEffect>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut effects = Vec::with_capacity(receipts.len());
    for r in receipts {
        effects.push(receipt_in(&mut tx, r, now_ms).await?);
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

/// One receipt inside the caller's transaction: recorded on the row of its reference (an orphan
/// row, held until `now + hold`, when no push holds the id), then the holder is settled.
async fn receipt_in(
    tx: &mut Transaction<'static, Postgres>,
    receipt: &Receipt,
    now_ms: i64,
) -> Result<ReceiptEffect, StoreError> {
    let hold = i64::try_from(receipt.hold.as_millis()).unwrap_or(i64::MAX);
    let push_id: Option<String> = sqlx::query_scalar(
        "INSERT INTO push_refs \
             (binding, account, reference, push_id, status, detail, updated_at, hold_until) \
         VALUES ($1, $2, $3, NULL, $4, $5, $6, $7) \
         ON CONFLICT (binding, account, reference) DO UPDATE SET status = EXCLUDED.status, \
             detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at \
         RETURNING push_id",
    )
    .bind(receipt.binding.as_str())
    .bind(&receipt.reference.account)
    .bind(&receipt.reference.id)
    .bind(RefStatus::of_receipt(receipt.delivered).as_str())
    .bind(&receipt.detail)
    .bind(now_ms)
    .bind(now_ms.saturating_add(hold))
    .fetch_one(&mut **tx)
    .await?;
    let Some(push_id) = push_id else {
        // Overtook the completion: kept (at most `hold`), applied when the Accepted completion
        // names it.
        return Ok(ReceiptEffect::Pending);
    };
    let settled = settle(
        tx,
        &push_id,
        receipt.binding,
        now_ms,
        Some(&receipt.reference),
    )
    .await?;
    Ok(rules::receipt_effect(push_id, settled))
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
