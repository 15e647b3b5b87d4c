//! Replica liveness (DESIGN §10.1): each replica heartbeats into `replicas`
//! (migrations/postgres/0004); any replica's sweep declares dead those whose heartbeat is too old
//! and makes their leases claimable at once, so a `kill -9`'d replica's pushes resume within
//! seconds whatever `queue.lease_seconds` is. The claims that follow write the takeover events.
//!
//! Times are the replicas' own clocks, as lease times already are (the same skew assumption).
//! A replica that was only slow (a pause longer than the dead-after bound) and is declared dead
//! loses its leases like one whose lease expired: its completions are ignored, and its next
//! heartbeat registers it again.

use sqlx::PgPool;

use crate::store::{StoreError, final_states};

/// Registers `owner` (or refreshes it) and makes claimable the leases an earlier process with
/// the same id left: with a fixed `queue.replica_id`, a restarted replica is the only one that
/// can have written them, and it is not running them any more.
pub(super) async fn start(pool: &PgPool, owner: &str, now_ms: i64) -> Result<u64, StoreError> {
    heartbeat(pool, owner, now_ms).await?;
    let r = sqlx::query(
        "UPDATE pushes SET lease_until = $2 \
         WHERE state = 'sending' AND lease_owner = $1 AND lease_until > $2",
    )
    .bind(owner)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

pub(super) async fn heartbeat(pool: &PgPool, owner: &str, now_ms: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO replicas (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at",
    )
    .bind(owner)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// One statement: the dead replicas' rows go and their leases end now, together (two sweeping
/// replicas cannot both see the same dead row: the DELETE returns it to one).
pub(super) async fn sweep(
    pool: &PgPool,
    dead_before_ms: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let r = sqlx::query(
        "WITH dead AS (DELETE FROM replicas WHERE heartbeat_at < $1 RETURNING id) \
         UPDATE pushes SET lease_until = $2 \
         WHERE state = 'sending' AND lease_until > $2 \
           AND lease_owner IN (SELECT id FROM dead)",
    )
    .bind(dead_before_ms)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

pub(super) async fn stop(pool: &PgPool, owner: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM replicas WHERE id = $1")
        .bind(owner)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes up to `limit` final pushes last changed before `before_ms`, their events and their
/// next-hop references, one statement (one transaction) per final state. `SKIP LOCKED`: a push a
/// late receipt is settling right now is left for the next run.
///
/// One state per statement, not `state = ANY($1)`: after five executions PostgreSQL may switch to
/// a generic plan, and for the array form that plan was a sequential scan of `pushes` (0.49 s per
/// run beside a million waiting pushes, docs/perf/scale.md). The state is a literal, not `$1`:
/// `pushes_purge` is partial (final states only, migration 0009), and a generic plan can use a
/// partial index only when the query's own text implies its predicate.
pub(super) async fn purge(pool: &PgPool, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
    let mut purged = 0u64;
    // Spliced into the statement text: only `PushState` names of final states, never input.
    for state in final_states() {
        let left = u64::from(limit).saturating_sub(purged);
        if left == 0 {
            break;
        }
        // A push with a pending webhook stays until it is sent or given up. "Pending" is written
        // NOT IN ('done', 'given_up') so that the per-push lookup uses the push index, not the
        // partial due index (outbox.rs record_run).
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "WITH p AS ( \
                 DELETE FROM pushes WHERE id IN ( \
                     SELECT id FROM pushes WHERE state = '{state}' AND updated_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM webhook_outbox w \
                                     WHERE w.push_id = pushes.id \
                                       AND w.status NOT IN ('done', 'given_up')) \
                     LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING id), \
             e AS (DELETE FROM push_events WHERE push_id IN (SELECT id FROM p)), \
             r AS (DELETE FROM push_refs WHERE push_id IN (SELECT id FROM p)), \
             w AS (DELETE FROM webhook_outbox WHERE push_id IN (SELECT id FROM p)) \
             SELECT count(*) FROM p",
            state = state.as_str()
        )))
        .bind(before_ms)
        .bind(i64::try_from(left).unwrap_or(i64::MAX))
        .fetch_one(pool)
        .await?;
        purged = purged.saturating_add(n.unsigned_abs());
    }
    Ok(purged)
}

/// Every registered replica, oldest first (admin status).
pub(super) async fn list(pool: &PgPool) -> Result<Vec<crate::store::ReplicaInfo>, StoreError> {
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT id, started_at, heartbeat_at FROM replicas ORDER BY started_at, id")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, started_at_ms, heartbeat_at_ms)| crate::store::ReplicaInfo {
                id,
                started_at_ms,
                heartbeat_at_ms,
            },
        )
        .collect())
}
