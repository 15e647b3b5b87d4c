//! The webhook outbox on PostgreSQL ([`Outbox`]); rows are written by the `push_events_webhook`
//! trigger (migrations/postgres/0005_webhooks.sql). Replicas share the outbox: a claim locks its
//! candidates with `FOR UPDATE SKIP LOCKED` and leases them, so no two replicas send the same
//! event while a lease lasts; an expired lease (a crashed replica) makes the event claimable again.

use sqlx::{Row, postgres::PgRow};

use super::{PgStore, i32_of, u32_of};
use crate::store::{
    PushRecord, StoreError,
    outbox::{AttemptRecord, AttemptResult, ClaimRequest, Outbox, OutboxEvent, claim_window},
    parse_state,
};

fn event_of(r: &PgRow) -> Result<OutboxEvent, StoreError> {
    Ok(OutboxEvent {
        id: r.try_get("id")?,
        push_id: r.try_get("push_id")?,
        tenant: r.try_get("tenant")?,
        state: parse_state(r.try_get("state")?)?,
        seq: r.try_get("seq")?,
        target: r.try_get("target")?,
        created_at_ms: r.try_get("created_at")?,
        age_from_ms: r.try_get("age_from")?,
        attempts: u32_of(r.try_get("attempts")?, "webhook attempts")?,
    })
}

/// One attempt's record inside the caller's transaction; `false` when the lease was lost.
async fn record_in(conn: &mut sqlx::PgConnection, rec: &AttemptRecord) -> Result<bool, StoreError> {
    let (status, next) = match rec.result {
        AttemptResult::Delivered => ("done", None),
        AttemptResult::Retry { at_ms } => ("pending", Some(at_ms)),
        AttemptResult::GiveUp => ("given_up", None),
    };
    let r = sqlx::query(
        "UPDATE webhook_outbox SET status = $1, \
             next_attempt_at = COALESCE($2, next_attempt_at), attempts = attempts + 1, \
             last_error = $3, lease_owner = NULL, lease_until = NULL \
         WHERE id = $4 AND status = 'pending' AND lease_owner = $5",
    )
    .bind(status)
    .bind(next)
    .bind(if status == "done" {
        ""
    } else {
        rec.detail.as_str()
    })
    .bind(&rec.event.id)
    .bind(&rec.owner)
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    if let Some(at) = next {
        // The push's later events wait for this one (per-push order): not due before it, so
        // that they do not take places in the claim's window meanwhile (claim_webhooks).
        sqlx::query(
            "UPDATE webhook_outbox SET next_attempt_at = $1 \
             WHERE push_id = $2 AND seq > $3 AND status NOT IN ('done', 'given_up') \
               AND next_attempt_at < $1",
        )
        .bind(at)
        .bind(&rec.event.push_id)
        .bind(rec.event.seq)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO push_events (push_id, at, state, binding, attempt, detail, kind) \
         VALUES ($1, $2, $3, NULL, $4, $5, 'webhook')",
    )
    .bind(&rec.event.push_id)
    .bind(rec.at_ms)
    .bind(rec.event.state.as_str())
    .bind(i32_of(rec.event.attempts.saturating_add(1)))
    .bind(rec.timeline_detail())
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// The order in which a batch of attempt records is written: by push, then by event (indexes
/// into `recs`; the results stay in `recs`' order).
fn record_order(recs: &[AttemptRecord]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..recs.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&recs[a].event, &recs[b].event);
        (a.push_id.as_str(), a.seq).cmp(&(b.push_id.as_str(), b.seq))
    });
    order
}

#[async_trait::async_trait]
impl Outbox for PgStore {
    async fn claim_webhooks(&self, req: &ClaimRequest<'_>) -> Result<Vec<OutboxEvent>, StoreError> {
        let (busy_targets, busy_counts): (Vec<String>, Vec<i64>) = req
            .in_flight
            .iter()
            .map(|(t, n)| (t.clone(), i64::from(*n)))
            .unzip();
        // The plan must not depend on the table's statistics: the outbox grows from empty to
        // 100,000 pending rows faster than autovacuum analyses it, and with `status = 'pending'`
        // estimated at a few rows the planner scanned every pending row per claim (≈ 1.6 s at
        // 100,000; docs/perf/webhooks.md). So:
        // - `win` is the only scan of the partial due index: an ordered walk with a LIMIT, which
        //   stops after the window (rows of full targets are skipped, not counted);
        // - everything else reaches rows by key from the window (the per-push probe by
        //   `webhook_outbox_push`, the lock by the primary key). Their status tests are written
        //   `NOT IN ('done', 'given_up')` (the same rows: status is one of three) on purpose: a
        //   `status = 'pending'` there lets the planner use the partial due index instead, as a
        //   "one row" scan that is really the whole backlog, once per window row.
        // Per-push order: a window row is a candidate only when no earlier event of its push is
        // still pending (an earlier event leased by another replica is pending too, so the later
        // one waits for it even across replicas). Per target: no more rows than free slots.
        let rows = sqlx::query(
            "WITH win AS MATERIALIZED ( \
                 SELECT o.id, o.push_id, o.seq, o.target, o.next_attempt_at \
                   FROM webhook_outbox o \
                  WHERE o.status = 'pending' AND o.next_attempt_at <= $1 \
                    AND (o.lease_until IS NULL OR o.lease_until <= $1) \
                    AND NOT (o.target = ANY($5::text[])) \
                  ORDER BY o.next_attempt_at LIMIT $6), \
             ok AS MATERIALIZED ( \
                 SELECT win.id, win.target, win.next_attempt_at, \
                        row_number() OVER (PARTITION BY win.target \
                                           ORDER BY win.next_attempt_at, win.id) AS n \
                   FROM win \
                  WHERE NOT EXISTS (SELECT 1 FROM webhook_outbox e \
                                     WHERE e.push_id = win.push_id AND e.seq < win.seq \
                                       AND e.status NOT IN ('done', 'given_up'))), \
             pick AS MATERIALIZED ( \
                 SELECT ok.id FROM ok \
                  WHERE ok.n <= $7 - COALESCE((SELECT b.n FROM unnest($8::text[], $9::int8[]) \
                                                   AS b(target, n) \
                                                WHERE b.target = ok.target), 0) \
                  ORDER BY ok.next_attempt_at LIMIT $4), \
             c AS ( \
                 SELECT o.id FROM pick JOIN webhook_outbox o ON o.id = pick.id \
                  WHERE o.status NOT IN ('done', 'given_up') \
                    AND (o.lease_until IS NULL OR o.lease_until <= $1) \
                  FOR UPDATE OF o SKIP LOCKED) \
             UPDATE webhook_outbox w SET lease_owner = $2, lease_until = $3 \
               FROM c WHERE w.id = c.id \
             RETURNING w.id, w.push_id, w.tenant, w.state, w.seq, w.target, w.created_at, \
                 w.age_from, w.attempts",
        )
        .bind(req.now_ms)
        .bind(req.owner)
        .bind(req.lease_until())
        .bind(i64::from(req.limit))
        .bind(req.full_targets())
        .bind(i64::from(claim_window(req.limit)))
        .bind(i64::from(req.per_target))
        .bind(busy_targets)
        .bind(busy_counts)
        .fetch_all(&self.pool)
        .await?;
        let mut events = rows.iter().map(event_of).collect::<Result<Vec<_>, _>>()?;
        events.sort_by_key(|e| (e.created_at_ms, e.seq));
        Ok(events)
    }

    async fn release_webhooks(&self, owner: &str, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE webhook_outbox SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND status = 'pending' AND id = ANY($2::text[])",
        )
        .bind(owner)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_webhook_attempts(
        &self,
        recs: &[AttemptRecord],
    ) -> Result<Vec<bool>, StoreError> {
        // Rows are written in push id order, whatever order the attempts finished in: the
        // completion batches of the dispatcher lock the same pushes' rows (their trigger
        // inserts outbox rows, their events go on the same timelines), and two transactions
        // taking locks on overlapping rows in different orders can deadlock (one `deadlock
        // detected` in the pg1-hooks run, docs/perf/webhooks.md).
        let order = record_order(recs);
        let mut recorded = vec![false; recs.len()];
        let mut tx = self.pool.begin().await?;
        for i in order {
            if let (Some(rec), Some(slot)) = (recs.get(i), recorded.get_mut(i)) {
                *slot = record_in(&mut tx, rec).await?;
            }
        }
        tx.commit().await?;
        Ok(recorded)
    }

    async fn requeue_webhooks(
        &self,
        tenant: &str,
        push_id: &str,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM pushes WHERE tenant = $1 AND id = $2")
                .bind(tenant)
                .bind(push_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(state) = state else {
            return Ok(None);
        };
        let n = sqlx::query(
            "UPDATE webhook_outbox SET status = 'pending', age_from = $1, next_attempt_at = $1, \
                 lease_owner = NULL, lease_until = NULL \
             WHERE push_id = $2 AND status = 'given_up'",
        )
        .bind(now_ms)
        .bind(push_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            sqlx::query(
                "INSERT INTO push_events (push_id, at, state, binding, attempt, detail, kind) \
                 VALUES ($1, $2, $3, NULL, 0, $4, 'webhook')",
            )
            .bind(push_id)
            .bind(now_ms)
            .bind(&state)
            .bind(format!(
                "webhook: {n} given-up event(s) re-queued by client"
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(n))
    }

    async fn push_as_of(
        &self,
        tenant: &str,
        push_id: &str,
        seq: i64,
    ) -> Result<Option<PushRecord>, StoreError> {
        self.push_with_events(tenant, push_id, seq).await
    }

    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PushState, outbox::OutboxEvent};

    fn rec(push_id: &str, seq: i64) -> AttemptRecord {
        AttemptRecord {
            event: OutboxEvent {
                id: format!("msg_{push_id}_{seq}"),
                push_id: push_id.into(),
                tenant: "t".into(),
                state: PushState::Delivered,
                seq,
                target: "https://example.com/".into(),
                created_at_ms: 0,
                age_from_ms: 0,
                attempts: 0,
            },
            owner: "o".into(),
            at_ms: 0,
            result: AttemptResult::Delivered,
            detail: "HTTP 204".into(),
        }
    }

    #[test]
    fn records_are_written_in_push_id_order() {
        let recs = [rec("p3", 1), rec("p1", 7), rec("p2", 1), rec("p1", 2)];
        assert_eq!(record_order(&recs), vec![3, 1, 2, 0]);
        assert!(record_order(&[]).is_empty());
    }
}
