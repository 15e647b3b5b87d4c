//! Claims and leases: leasing due pushes (`FOR UPDATE SKIP LOCKED`, so two replicas never lease
//! the same push), taking over expired leases, renewing them, and expiring waiting pushes.

use std::time::Duration;

use sqlx::{PgPool, Row};

use super::u32_of;
use crate::store::{
    Claimed, StoreError, from_json, parse_binding, parse_bootstrap, parse_content_type,
};

pub(super) async fn claim(
    pool: &PgPool,
    owner: &str,
    now_ms: i64,
    lease: Duration,
    limit: u32,
) -> Result<Vec<Claimed>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    // Candidate sets, each locked with SKIP LOCKED (FOR UPDATE is not allowed across a
    // UNION): expired leases (takeover), then due waiting pushes per priority level (the API
    // knows 1 = high and 0 = normal). With the level fixed, `pushes_due` yields rows in
    // `next_attempt_at` order and the range scan stops at the first push not yet due; one
    // scan over all levels could not stop, and walked every waiting push (a million
    // scheduled for tomorrow) on each claim. The best `limit` of the union is leased; the few
    // extra locked rows are released at commit.
    //
    // A takeover writes a `sending` event in the same statement (data-modifying CTEs commit
    // together), with the text of `store::takeover_detail`, which the conformance suite
    // compares with SQLite's.
    let rows = sqlx::query(
        "WITH t AS ( \
                 SELECT id, priority, next_attempt_at, lease_owner AS was, true AS taken FROM pushes \
                 WHERE state = 'sending' AND lease_until <= $1 \
                 ORDER BY priority DESC, next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
             d1 AS ( \
                 SELECT id, priority, next_attempt_at, NULL::text AS was, false AS taken \
                 FROM pushes \
                 WHERE state IN ('queued', 'retry_wait') AND priority = 1 \
                   AND next_attempt_at <= $1 AND expires_at > $1 \
                 ORDER BY priority DESC, next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
             d0 AS ( \
                 SELECT id, priority, next_attempt_at, NULL::text AS was, false AS taken \
                 FROM pushes \
                 WHERE state IN ('queued', 'retry_wait') AND priority = 0 \
                   AND next_attempt_at <= $1 AND expires_at > $1 \
                 ORDER BY priority DESC, next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
             c AS ( \
                 SELECT id, taken, was \
                 FROM (SELECT * FROM t UNION ALL SELECT * FROM d1 \
                       UNION ALL SELECT * FROM d0) u \
                 ORDER BY priority DESC, next_attempt_at LIMIT $3), \
             l AS ( \
                 UPDATE pushes p SET state = 'sending', lease_owner = $2, lease_until = $4, \
                     attempts = p.attempts + 1, updated_at = $1 \
                 FROM c WHERE p.id = c.id \
                 RETURNING p.id, p.tenant, p.device_id, p.bindings, p.binding_choice, \
                     p.binding_index, p.content_type, p.body, p.attempts, p.max_attempts, \
                     p.created_at, p.expires_at, p.callback_url, p.bootstrap, p.priority, \
                     p.next_attempt_at, c.taken, \
                     CASE WHEN c.taken THEN coalesce(c.was, 'an unknown owner') END AS was), \
             e AS ( \
                 INSERT INTO push_events (push_id, at, state, binding, attempt, detail) \
                 SELECT id, $1, 'sending', NULL, attempts, \
                     format('lease of %s ended with attempt %s unfinished: taken over by %s; \
                             the device may receive this push twice', \
                            was, attempts - 1, $2) \
                 FROM l WHERE taken) \
         SELECT * FROM l",
    )
    .bind(now_ms)
    .bind(owner)
    .bind(i64::from(limit))
    .bind(until)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let bindings: String = r.try_get("bindings")?;
        let ct: &str = r.try_get("content_type")?;
        let prio: i16 = r.try_get("priority")?;
        let nat: i64 = r.try_get("next_attempt_at")?;
        out.push((
            (std::cmp::Reverse(prio), nat),
            Claimed {
                id: r.try_get("id")?,
                tenant: r.try_get("tenant")?,
                device_id: r.try_get("device_id")?,
                bindings: from_json(&bindings, "push bindings")?,
                binding_choice: parse_binding(r.try_get("binding_choice")?, "binding_choice")?,
                binding_index: u32_of(r.try_get("binding_index")?, "binding_index")?,
                content_type: parse_content_type(ct)?,
                body: r.try_get("body")?,
                attempt: u32_of(r.try_get("attempts")?, "attempts")?,
                max_attempts: u32_of(r.try_get("max_attempts")?, "max_attempts")?,
                created_at_ms: r.try_get("created_at")?,
                expires_at_ms: r.try_get("expires_at")?,
                callback_url: r.try_get("callback_url")?,
                bootstrap: parse_bootstrap(r.try_get("bootstrap")?)?,
                taken_over_from: r.try_get("was")?,
            },
        ));
    }
    // RETURNING has no order of its own.
    out.sort_by_key(|(k, _)| *k);
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

pub(super) async fn renew(
    pool: &PgPool,
    owner: &str,
    ids: &[String],
    until_ms: i64,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    // Rows another transaction holds are skipped, not waited for: a renewal locks the pushes
    // of every in-flight attempt in whatever order the plan takes, while the completion writers
    // lock theirs in theirs, so waiting made a deadlock cycle (seen in the SMS benchmark with two
    // completion writers: 1 s stalls, `deadlock_timeout`). A locked row is being completed (its
    // lease ends with that) or the completion fails and the next renewal, a third of a lease
    // later, renews it.
    sqlx::query(
        "UPDATE pushes p SET lease_until = $3 \
         FROM (SELECT id FROM pushes \
               WHERE id = ANY($1::text[]) AND state = 'sending' AND lease_owner = $2 \
               FOR UPDATE SKIP LOCKED) s \
         WHERE p.id = s.id",
    )
    .bind(ids)
    .bind(owner)
    .bind(until_ms)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn expire(pool: &PgPool, now_ms: i64, limit: u32) -> Result<u64, StoreError> {
    // One statement: lock (skipping rows a claimer holds), update, and write the events.
    let r = sqlx::query(
        "WITH e AS ( \
             SELECT id FROM pushes \
             WHERE state IN ('queued', 'retry_wait') AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
         u AS ( \
             UPDATE pushes p SET state = 'expired', updated_at = $1 \
             FROM e WHERE p.id = e.id RETURNING p.id, p.attempts) \
         INSERT INTO push_events (push_id, at, state, binding, attempt, detail) \
         SELECT id, $1, 'expired', NULL, attempts, 'ttl passed' FROM u",
    )
    .bind(now_ms)
    .bind(i64::from(limit))
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
