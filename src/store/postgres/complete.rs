//! Completions and receipts: attempt outcomes applied in one `UPDATE … FROM UNNEST(…)` per
//! batch, references recorded for receipt correlation, and receipts settling pushes. What each
//! completion and receipt decides is [`crate::store::rules`]; this file is the SQL.

use std::collections::HashSet;

use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Notify;

use super::{Events, WAKEUP_CHANNEL, i32_of};
use crate::domain::{BindingKind, Receipt};
use crate::store::{
    Completion, PushState, ReceiptEffect, StoreError, parse_state,
    rules::{self, CompletionEffect, RefRow, RefStatus, Settlement},
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
        events.add_row(&c.push_id, &e.event);
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
    record_refs(&mut tx, &accepted).await?;
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
    refs: &'a [&'a str],
}

/// Stores the references of `Accepted` completions (one statement for the batch) and settles the
/// pushes whose receipts arrived before their completion.
async fn record_refs(
    tx: &mut Transaction<'static, Postgres>,
    accepted: &[Accepted<'_>],
) -> Result<(), StoreError> {
    if accepted.is_empty() {
        return Ok(());
    }
    const INSERT: &str = "INSERT INTO push_refs (binding, reference, push_id, status, detail, updated_at) \
         SELECT b, r, p, 'pending', '', t \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[]) AS x(b, r, p, t) \
         ON CONFLICT (binding, reference) DO UPDATE SET push_id = EXCLUDED.push_id \
         RETURNING push_id, status";
    type Cols = (Vec<&'static str>, Vec<String>, Vec<String>, Vec<i64>);
    let cols = |items: &[Accepted<'_>]| -> Cols {
        let mut cols: Cols = Default::default();
        for a in items {
            for r in a.refs {
                cols.0.push(a.binding.as_str());
                cols.1.push((*r).to_owned());
                cols.2.push(a.completion.push_id.clone());
                cols.3.push(a.completion.at_ms);
            }
        }
        cols
    };
    let mut seen = HashSet::new();
    let unique = accepted
        .iter()
        .all(|a| a.refs.iter().all(|r| seen.insert((a.binding, *r))));
    let groups: Vec<&[Accepted<'_>]> = if unique {
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
                .filter(|(_, status)| RefStatus::parse(status) != RefStatus::Pending)
                .map(|(push_id, _)| push_id),
        );
    }
    for a in accepted {
        let c = a.completion;
        if overtaken.remove(&c.push_id) {
            // Just made `accepted` by this completion (inside this transaction).
            settle(
                tx,
                &c.push_id,
                Some(PushState::Accepted),
                Some(a.binding),
                c.attempt,
                c.at_ms,
                None,
            )
            .await?;
        }
    }
    Ok(())
}

/// Reads the push's references, applies [`rules::settle`], and writes the final state and its
/// event when the references decide one.
async fn settle(
    tx: &mut Transaction<'static, Postgres>,
    push_id: &str,
    state: Option<PushState>,
    binding: Option<BindingKind>,
    attempt: u32,
    at_ms: i64,
    trigger: Option<&str>,
) -> Result<Settlement, StoreError> {
    let mut refs = Vec::new();
    for r in sqlx::query(
        "SELECT reference, status, detail, updated_at FROM push_refs WHERE push_id = $1",
    )
    .bind(push_id)
    .fetch_all(&mut **tx)
    .await?
    {
        refs.push(RefRow {
            reference: r.try_get("reference")?,
            status: RefStatus::parse(r.try_get("status")?),
            detail: r.try_get("detail")?,
            updated_at_ms: r.try_get("updated_at")?,
        });
    }
    let settlement = rules::settle(state, &refs, trigger);
    if let Settlement::Finish { state, detail } = &settlement {
        sqlx::query("UPDATE pushes SET state = $2, updated_at = $3 WHERE id = $1")
            .bind(push_id)
            .bind(state.as_str())
            .bind(at_ms)
            .execute(&mut **tx)
            .await?;
        let mut ev = Events::default();
        ev.add(
            push_id,
            at_ms,
            *state,
            binding,
            i32_of(attempt),
            detail.clone(),
        );
        ev.flush(tx).await?;
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
    tx.commit().await?;
    Ok(effects)
}

/// One receipt inside the caller's transaction.
async fn receipt_in(
    tx: &mut Transaction<'static, Postgres>,
    receipt: &Receipt,
    now_ms: i64,
) -> Result<ReceiptEffect, StoreError> {
    let push_id: Option<String> = sqlx::query_scalar(
        "INSERT INTO push_refs (binding, reference, push_id, status, detail, updated_at) \
         VALUES ($1, $2, NULL, $3, $4, $5) \
         ON CONFLICT (binding, reference) DO UPDATE SET status = EXCLUDED.status, \
             detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at \
         RETURNING push_id",
    )
    .bind(receipt.binding.as_str())
    .bind(&receipt.reference)
    .bind(RefStatus::of_receipt(receipt.delivered).as_str())
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
    let (state, attempts) = match row {
        Some(r) => (
            Some(parse_state(r.try_get("state")?)?),
            super::u32_of(r.try_get("attempts")?, "attempts")?,
        ),
        None => (None, 0),
    };
    let settled = settle(
        tx,
        &push_id,
        state,
        Some(receipt.binding),
        attempts,
        now_ms,
        Some(&receipt.reference),
    )
    .await?;
    Ok(match settled {
        Settlement::Ignore => ReceiptEffect::Ignored { push_id },
        Settlement::Hold => ReceiptEffect::Partial { push_id },
        Settlement::Finish { state, .. } => ReceiptEffect::Finished { push_id, state },
    })
}
