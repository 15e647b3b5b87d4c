//! The webhook outbox on PostgreSQL ([`Outbox`]); rows are written by the `push_events_webhook`
//! trigger (migrations/postgres/0005_webhooks.sql). Replicas share the outbox: a claim locks its
//! candidates with `FOR UPDATE SKIP LOCKED` and leases them, so no two replicas send the same
//! event while a lease lasts; an expired lease (a crashed replica) makes the event claimable again.

use sqlx::{Row, postgres::PgRow};

use super::{PgStore, i32_of, u32_of};
use crate::store::{
    AsOf, PushRecord, StoreError,
    outbox::{AttemptRecord, ClaimRequest, Outbox, OutboxEvent, claim_window, distinct_runs},
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

/// One run of attempt records with distinct event ids ([`distinct_runs`]), inside the caller's
/// transaction: three statements whatever the run's length instead of three round trips per
/// record. "Pending" is written `NOT IN ('done', 'given_up')` (the same rows: the statuses are
/// these three) so that it cannot match the partial due index: with the statistics of an outbox
/// that grew faster than autovacuum analyses it, the planner took that index for a handful of
/// rows and AND-ed it with the primary key, reading all 100,000 pending entries per batch
/// (20–67 ms per batch; docs/perf/webhooks.md). Rows are written in push id order (see [`record_order`]). `recorded[i]` is `false`
/// when record `i`'s lease was lost.
async fn record_run(
    conn: &mut sqlx::PgConnection,
    recs: &[AttemptRecord],
    recorded: &mut [bool],
) -> Result<(), StoreError> {
    let order = record_order(recs);
    let in_order = || order.iter().filter_map(|&i| recs.get(i));
    let ids: Vec<&str> = in_order().map(|r| r.event.id.as_str()).collect();
    let owners: Vec<&str> = in_order().map(|r| r.owner.as_str()).collect();
    let statuses: Vec<&str> = in_order().map(|r| r.result.status()).collect();
    let nexts: Vec<Option<i64>> = in_order().map(|r| r.result.next_at_ms()).collect();
    let errors: Vec<&str> = in_order().map(AttemptRecord::last_error).collect();
    let updated: Vec<String> = sqlx::query_scalar(
        "UPDATE webhook_outbox AS o \
            SET status = v.status, next_attempt_at = COALESCE(v.next, o.next_attempt_at), \
                attempts = o.attempts + 1, last_error = v.err, lease_owner = NULL, \
                lease_until = NULL \
           FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[]) \
                AS v(id, owner, status, next, err) \
          WHERE o.id = v.id AND o.status NOT IN ('done', 'given_up') \
            AND o.lease_owner = v.owner \
         RETURNING o.id",
    )
    .bind(&ids)
    .bind(&owners)
    .bind(&statuses)
    .bind(&nexts)
    .bind(&errors)
    .fetch_all(&mut *conn)
    .await?;
    let updated: std::collections::HashSet<&str> = updated.iter().map(String::as_str).collect();
    for (slot, rec) in recorded.iter_mut().zip(recs) {
        *slot = updated.contains(rec.event.id.as_str());
    }
    let done = || in_order().filter(|r| updated.contains(r.event.id.as_str()));
    // The push's later events wait for a retried one (per-push order): not due before it, so
    // that they do not take places in the claim's window meanwhile (claim_webhooks).
    let retried: Vec<(&str, i64, i64)> = done()
        .filter_map(|r| {
            r.result
                .next_at_ms()
                .map(|at| (r.event.push_id.as_str(), r.event.seq, at))
        })
        .collect();
    if !retried.is_empty() {
        let (push_ids, (seqs, ats)): (Vec<&str>, (Vec<i64>, Vec<i64>)) =
            retried.into_iter().map(|(p, s, a)| (p, (s, a))).unzip();
        sqlx::query(
            "UPDATE webhook_outbox AS o SET next_attempt_at = v.at \
               FROM (SELECT push_id, min(seq) AS seq, max(at) AS at \
                       FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(push_id, seq, at) \
                      GROUP BY push_id) AS v \
              WHERE o.push_id = v.push_id AND o.seq > v.seq \
                AND o.status NOT IN ('done', 'given_up') AND o.next_attempt_at < v.at",
        )
        .bind(&push_ids)
        .bind(&seqs)
        .bind(&ats)
        .execute(&mut *conn)
        .await?;
    }
    let push_ids: Vec<&str> = done().map(|r| r.event.push_id.as_str()).collect();
    if push_ids.is_empty() {
        return Ok(());
    }
    let ats: Vec<i64> = done().map(|r| r.at_ms).collect();
    let states: Vec<&str> = done().map(|r| r.event.state.as_str()).collect();
    let attempts: Vec<i32> = done()
        .map(|r| i32_of(r.event.attempts.saturating_add(1)))
        .collect();
    let details: Vec<String> = done().map(AttemptRecord::timeline_detail).collect();
    sqlx::query(
        "INSERT INTO push_events (push_id, at, state, binding, attempt, detail, kind) \
         SELECT push_id, at, state, NULL, attempt, detail, 'webhook' \
           FROM unnest($1::text[], $2::int8[], $3::text[], $4::int4[], $5::text[]) \
                WITH ORDINALITY AS v(push_id, at, state, attempt, detail, n) \
          ORDER BY n",
    )
    .bind(&push_ids)
    .bind(&ats)
    .bind(&states)
    .bind(&attempts)
    .bind(&details)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The order in which a run of attempt records is written: by push, then by event (indexes
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
        // "Pending" kept off the partial due index, as in record_run.
        sqlx::query(
            "UPDATE webhook_outbox SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND status NOT IN ('done', 'given_up') \
               AND id = ANY($2::text[])",
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
        let mut recorded = vec![false; recs.len()];
        let mut tx = self.pool.begin().await?;
        for run in distinct_runs(recs) {
            if let (Some(run_recs), Some(slots)) = (recs.get(run.clone()), recorded.get_mut(run)) {
                record_run(&mut tx, run_recs, slots).await?;
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

    async fn pushes_as_of(&self, keys: &[AsOf<'_>]) -> Result<Vec<Option<PushRecord>>, StoreError> {
        self.read_as_of(keys).await
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
    use crate::store::{
        PushState,
        outbox::{AttemptResult, OutboxEvent},
    };

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
