//! The webhook outbox on SQLite ([`Outbox`]). A row is written beside its state event, in the
//! same transaction, by the event writers of both write connections (`insert_event` in
//! `sqlite.rs` and `sqlite/hot.rs`, through [`hook_row`]); until migration 0009 the
//! `push_events_webhook` trigger did it (why it went: docs/decisions/webhooks.md). All writes go
//! through the single writer connection, so leases need no row locks here: a claim is one
//! `UPDATE … RETURNING`.

use sqlx::{Row, sqlite::SqliteRow};

use super::SqliteStore;
use crate::store::{
    AsOf, PushRecord, StoreError,
    outbox::{AttemptRecord, ClaimRequest, Outbox, OutboxEvent, claim_window, distinct_runs},
    parse_state, to_json,
};

/// The webhook target of a push that just recorded an event of a webhook state
/// ([`crate::store::outbox::fires_webhook`]): no row when it has none — one probe of the partial
/// index `pushes_hooked`, empty while no tenant uses webhooks. The third column is the latest
/// `next_attempt_at` of the push's pending events (per-push order: see [`hook_row`]).
///
/// A read and then an insert, not one `INSERT … SELECT`: a SELECT that reads the table it
/// inserts into is materialised in a temporary table first (docs/perf/webhooks.md).
pub(super) const HOOK_TARGET: &str = "SELECT p.tenant, p.callback_url,
        (SELECT max(e.next_attempt_at) FROM webhook_outbox e
          WHERE e.push_id = p.id AND e.status = 'pending')
   FROM pushes p INDEXED BY pushes_hooked
  WHERE p.id = ?1 AND p.callback_url IS NOT NULL";

/// The outbox row of [`hook_row`]: `?7` is both the state change's time and the start of its
/// age (`max_age_seconds`).
pub(super) const HOOK_INSERT: &str = "INSERT INTO webhook_outbox
        (id, push_id, tenant, state, seq, target, created_at, age_from, next_attempt_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)";

/// The outbox row of event `seq` of `push_id`, recorded at `at_ms`: its webhook-id
/// `msg_<push id>_<event seq>` (docs/decisions/webhooks.md) and when it is first due — at once,
/// or not before the push's latest pending event (`pending_max`), so a retried earlier event is
/// not overtaken.
pub(super) fn hook_row(
    push_id: &str,
    seq: i64,
    at_ms: i64,
    pending_max: Option<i64>,
) -> (String, i64) {
    (
        format!("msg_{push_id}_{seq}"),
        pending_max.map_or(at_ms, |p| p.max(at_ms)),
    )
}

const EVENT_COLUMNS: &str =
    "id, push_id, tenant, state, seq, target, created_at, age_from, attempts";

fn event_from_row(r: &SqliteRow) -> Result<OutboxEvent, StoreError> {
    Ok(OutboxEvent {
        id: r.try_get("id")?,
        push_id: r.try_get("push_id")?,
        tenant: r.try_get("tenant")?,
        state: parse_state(&r.try_get::<String, _>("state")?)?,
        seq: r.try_get("seq")?,
        target: r.try_get("target")?,
        created_at_ms: r.try_get("created_at")?,
        age_from_ms: r.try_get("age_from")?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
    })
}

/// One run of attempt records with distinct event ids ([`distinct_runs`]), inside the caller's
/// transaction: three statements whatever the run's length (each statement through sqlx costs the
/// single writer more than the rows it writes, docs/perf/webhooks.md). `recorded[i]` is `false`
/// when record `i`'s lease was lost.
async fn record_run(
    conn: &mut sqlx::SqliteConnection,
    recs: &[AttemptRecord],
    recorded: &mut [bool],
) -> Result<(), StoreError> {
    let rows: Vec<_> = recs
        .iter()
        .map(|r| {
            serde_json::json!([
                r.event.id,
                r.owner,
                r.result.status(),
                r.result.next_at_ms(),
                r.last_error()
            ])
        })
        .collect();
    let updated: Vec<String> = sqlx::query_scalar(
        "UPDATE webhook_outbox AS o
            SET status = v.status, next_attempt_at = COALESCE(v.next, o.next_attempt_at),
                attempts = o.attempts + 1, last_error = v.err, lease_owner = NULL,
                lease_until = NULL
           FROM (SELECT value ->> 0 AS id, value ->> 1 AS owner, value ->> 2 AS status,
                        value ->> 3 AS next, value ->> 4 AS err
                   FROM json_each(?1)) AS v
          WHERE o.id = v.id AND o.status = 'pending' AND o.lease_owner = v.owner
         RETURNING id",
    )
    .bind(to_json(&rows))
    .fetch_all(&mut *conn)
    .await?;
    let updated: std::collections::HashSet<&str> = updated.iter().map(String::as_str).collect();
    for (slot, rec) in recorded.iter_mut().zip(recs) {
        *slot = updated.contains(rec.event.id.as_str());
    }
    let done = || recs.iter().zip(recorded.iter()).filter(|(_, ok)| **ok);
    // The push's later events wait for a retried one (per-push order): not due before it, so
    // that they do not take places in the claim's window meanwhile (claim_webhooks).
    let retried: Vec<_> = done()
        .filter_map(|(r, _)| {
            r.result
                .next_at_ms()
                .map(|at| serde_json::json!([r.event.push_id, r.event.seq, at]))
        })
        .collect();
    if !retried.is_empty() {
        sqlx::query(
            "UPDATE webhook_outbox AS o SET next_attempt_at = v.at
               FROM (SELECT value ->> 0 AS push_id, min(value ->> 1) AS seq,
                            max(value ->> 2) AS at
                       FROM json_each(?1) GROUP BY value ->> 0) AS v
              WHERE o.push_id = v.push_id AND o.seq > v.seq AND o.status = 'pending'
                AND o.next_attempt_at < v.at",
        )
        .bind(to_json(&retried))
        .execute(&mut *conn)
        .await?;
    }
    // The timeline rows, in the records' order.
    let timeline: Vec<_> = done()
        .map(|(r, _)| {
            serde_json::json!([
                r.event.push_id,
                r.at_ms,
                r.event.state.as_str(),
                i64::from(r.event.attempts) + 1,
                r.timeline_detail()
            ])
        })
        .collect();
    if !timeline.is_empty() {
        sqlx::query(
            "INSERT INTO push_events (push_id, at, state, binding, attempt, detail, kind)
             SELECT value ->> 0, value ->> 1, value ->> 2, NULL, value ->> 3, value ->> 4,
                    'webhook'
               FROM json_each(?1) ORDER BY key",
        )
        .bind(to_json(&timeline))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Outbox for SqliteStore {
    async fn claim_webhooks(&self, req: &ClaimRequest<'_>) -> Result<Vec<OutboxEvent>, StoreError> {
        let _write = self.write_lock.lock().await;
        // A bounded window of the due index (rows of full targets skipped, not counted); the
        // per-push order and the per-target budget apply to the window only, so a claim costs
        // the same however many events wait (docs/perf/webhooks.md). Per target: no more rows
        // than free slots, so nothing is claimed only to be given back.
        let busy: Vec<(&str, u32)> = req
            .in_flight
            .iter()
            .map(|(t, n)| (t.as_str(), *n))
            .collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_outbox SET lease_owner = ?1, lease_until = ?2
             WHERE id IN (
                 SELECT ok.id FROM (
                     SELECT win.id, win.target, win.next_attempt_at,
                            row_number() OVER (PARTITION BY win.target
                                               ORDER BY win.next_attempt_at, win.id) AS n
                       FROM (SELECT o.id, o.push_id, o.seq, o.target, o.next_attempt_at
                               FROM webhook_outbox o
                              WHERE o.status = 'pending' AND o.next_attempt_at <= ?3
                                AND (o.lease_until IS NULL OR o.lease_until <= ?3)
                                AND o.target NOT IN (SELECT value FROM json_each(?5))
                              ORDER BY o.next_attempt_at LIMIT ?6 + 0) AS win
                      WHERE NOT EXISTS (SELECT 1 FROM webhook_outbox e
                                         WHERE e.push_id = win.push_id AND e.status = 'pending'
                                           AND e.seq < win.seq)) AS ok
                  WHERE ok.n <= ?7 - COALESCE((SELECT json_extract(b.value, '$[1]')
                                                 FROM json_each(?8) AS b
                                                WHERE json_extract(b.value, '$[0]') = ok.target),
                                               0)
                  ORDER BY ok.next_attempt_at LIMIT ?4 + 0)
             RETURNING {EVENT_COLUMNS}"
        )))
        .bind(req.owner)
        .bind(req.lease_until())
        .bind(req.now_ms)
        .bind(i64::from(req.limit))
        .bind(to_json(&req.full_targets()))
        .bind(i64::from(claim_window(req.limit)))
        .bind(i64::from(req.per_target))
        .bind(to_json(&busy))
        .fetch_all(&self.write)
        .await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives no order guarantee.
        events.sort_by_key(|e| (e.created_at_ms, e.seq));
        Ok(events)
    }

    async fn release_webhooks(&self, owner: &str, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _write = self.write_lock.lock().await;
        sqlx::query(
            "UPDATE webhook_outbox SET lease_owner = NULL, lease_until = NULL
             WHERE lease_owner = ?1 AND status = 'pending'
               AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(owner)
        .bind(to_json(&ids))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn record_webhook_attempts(
        &self,
        recs: &[AttemptRecord],
    ) -> Result<Vec<bool>, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut recorded = vec![false; recs.len()];
        let mut tx = self.write.begin().await?;
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
        let _write = self.write_lock.lock().await;
        let mut tx = self.write.begin().await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM pushes WHERE tenant = ? AND id = ?")
                .bind(tenant)
                .bind(push_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(state) = state else {
            return Ok(None);
        };
        let n = sqlx::query(
            "UPDATE webhook_outbox SET status = 'pending', age_from = ?1, next_attempt_at = ?1,
                 lease_owner = NULL, lease_until = NULL
             WHERE push_id = ?2 AND status = 'given_up'",
        )
        .bind(now_ms)
        .bind(push_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            sqlx::query(
                "INSERT INTO push_events (push_id, at, state, binding, attempt, detail, kind)
                 VALUES (?1, ?2, ?3, NULL, 0, ?4, 'webhook')",
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
                .fetch_one(&self.read)
                .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
