//! Enqueue: group commit. Writer tasks drain waiting pushes from a shared channel and commit
//! them in one transaction of multi-row `INSERT … SELECT FROM UNNEST(…)` statements; a failed
//! batch is retried push by push so that one bad push never fails its neighbours. Idempotent
//! replay and in-batch key handling follow [`crate::store::rules`].

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use sqlx::{PgPool, Row};
use tokio::sync::{Mutex, Notify, mpsc};

use super::{COALESCE_YIELDS, Events, Job, WAKEUP_CHANNEL, Waiter, i32_of};
use crate::domain::BindingKind;
use crate::store::{
    Enqueued, NewPush, PushState, Signature, StoreError, parse_state,
    rules::{self, CollapseScope, FirstByKey, is_same_request},
    to_json,
};

/// Drains batches from the shared channel and commits them.
pub(super) async fn writer(
    pool: PgPool,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
    wake: Arc<Notify>,
) {
    let mut buf = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut buf, max_batch).await == 0 {
                return; // every sender dropped: the store is gone
            }
            // Coalesce: callers just answered by the previous commit are resubmitting right now.
            // Yielding lets them run (they are ready tasks, not timers), so the batch grows to
            // the real concurrency instead of alternating between one push and all the others.
            for _ in 0..COALESCE_YIELDS {
                if buf.len() >= max_batch {
                    break;
                }
                tokio::task::yield_now().await;
                let before = buf.len();
                while buf.len() < max_batch {
                    match rx.try_recv() {
                        Ok(job) => buf.push(job),
                        Err(_) => break,
                    }
                }
                if buf.len() == before {
                    break;
                }
            }
        }
        let (pushes, waiters): (Vec<NewPush>, Vec<Waiter>) = buf.drain(..).unzip();
        match enqueue_batch(&pool, &pushes).await {
            Ok(results) => {
                if results
                    .iter()
                    .any(|r| matches!(r, Enqueued::Created { .. }))
                {
                    wake.notify_one();
                }
                for (w, r) in waiters.into_iter().zip(results) {
                    let _ = w.send(Ok(r));
                }
            }
            Err(e) if pushes.len() == 1 => {
                if let Some(w) = waiters.into_iter().next() {
                    let _ = w.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, batch = pushes.len(), "enqueue batch failed; retrying one by one");
                for (p, w) in pushes.iter().zip(waiters) {
                    let r = enqueue_batch(&pool, std::slice::from_ref(p))
                        .await
                        .and_then(|mut v| v.pop().ok_or(StoreError::Closed));
                    if matches!(r, Ok(Enqueued::Created { .. })) {
                        wake.notify_one();
                    }
                    let _ = w.send(r);
                }
            }
        }
    }
}

/// Commits a batch of pushes in one transaction; one result per push, in order.
pub(super) async fn enqueue_batch(
    pool: &PgPool,
    pushes: &[NewPush],
) -> Result<Vec<Enqueued>, StoreError> {
    let mut tx = pool.begin().await?;

    // Collapse keys across replicas: two transactions that each insert a push with the same
    // (tenant, scope, key) would not see each other's uncommitted row and both survive. An
    // advisory lock per key, taken before the INSERT and held to commit, orders them: the later
    // one's supersede statement (a fresh snapshot under READ COMMITTED) sees the earlier push.
    // Locks are taken in one order (sorted) so that two batches cannot deadlock.
    let mut lock_ids: Vec<i64> = pushes.iter().filter_map(rules::collapse_lock_id).collect();
    if !lock_ids.is_empty() {
        lock_ids.sort_unstable();
        lock_ids.dedup();
        let _: i64 = sqlx::query_scalar(
            "SELECT count(pg_advisory_xact_lock(k)) \
             FROM (SELECT k FROM UNNEST($1::int8[]) WITH ORDINALITY AS u(k, n) ORDER BY n) s",
        )
        .bind(&lock_ids)
        .fetch_one(&mut *tx)
        .await?;
    }

    // Idempotency inside the batch: only the first push with a given (tenant, key) is inserted;
    // later ones are answered against it like any replay.
    let mut first_with_key = FirstByKey::default();
    let insert: Vec<usize> = pushes
        .iter()
        .enumerate()
        .filter(|&(i, p)| first_with_key.earlier(i, p).is_none())
        .map(|(i, _)| i)
        .collect();

    // One multi-row INSERT. A key that another transaction committed meanwhile is skipped by
    // ON CONFLICT (PostgreSQL waits for that transaction, then skips) and answered below.
    let mut cols = (
        Vec::<&str>::new(),
        Vec::<&str>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<String>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<&str>::new(),
        Vec::<&[u8]>::new(),
        Vec::<i16>::new(),
        Vec::<i32>::new(),
        Vec::<i64>::new(),
        Vec::<i64>::new(),
        Vec::<i64>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<Option<&str>>::new(),
        Vec::<Option<String>>::new(),
    );
    for &i in &insert {
        let p = &pushes[i];
        cols.0.push(&p.id);
        cols.1.push(&p.tenant);
        cols.2.push(p.device_id.as_deref());
        cols.3.push(to_json(&p.bindings));
        cols.4.push(p.binding_choice.map(BindingKind::as_str));
        cols.5.push(p.content_type.as_str());
        cols.6.push(&p.body);
        cols.7.push(p.priority);
        cols.8.push(i32_of(p.max_attempts));
        cols.9.push(p.created_at_ms);
        cols.10.push(p.not_before_ms);
        cols.11.push(p.expires_at_ms);
        cols.12.push(p.idempotency_key.as_deref());
        cols.13.push(p.request_hash.as_deref());
        cols.14.push(p.collapse_key.as_deref());
        cols.15.push(p.callback_url.as_deref());
        cols.16.push(p.bootstrap.as_ref().map(Signature::to_stored));
    }
    let inserted: HashSet<String> = sqlx::query_scalar::<_, String>(
        "INSERT INTO pushes (id, tenant, device_id, bindings, binding_choice, binding_index, \
             content_type, body, priority, state, attempts, max_attempts, created_at, updated_at, \
             not_before, expires_at, next_attempt_at, idempotency_key, request_hash, collapse_key, \
             callback_url, bootstrap) \
         SELECT id, tenant, device_id, bindings, binding_choice, 0, content_type, body, priority, \
             'queued', 0, max_attempts, created_at, created_at, not_before, expires_at, not_before, \
             idempotency_key, request_hash, collapse_key, callback_url, bootstrap \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::bytea[], $8::int2[], $9::int4[], $10::int8[], $11::int8[], $12::int8[], \
             $13::text[], $14::text[], $15::text[], $16::text[], $17::text[]) \
           AS t(id, tenant, device_id, bindings, binding_choice, content_type, body, priority, \
             max_attempts, created_at, not_before, expires_at, idempotency_key, request_hash, \
             collapse_key, callback_url, bootstrap) \
         ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING id",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(cols.5)
    .bind(cols.6)
    .bind(cols.7)
    .bind(cols.8)
    .bind(cols.9)
    .bind(cols.10)
    .bind(cols.11)
    .bind(cols.12)
    .bind(cols.13)
    .bind(cols.14)
    .bind(cols.15)
    .bind(cols.16)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();

    // Keys held by pushes committed earlier (this batch's own first pushes are in `pushes`).
    let mut existing: HashMap<(String, String), (String, Option<String>)> = HashMap::new();
    let lost: Vec<&NewPush> = insert
        .iter()
        .map(|&i| &pushes[i])
        .filter(|p| !inserted.contains(&p.id))
        .collect();
    if !lost.is_empty() {
        let tenants: Vec<&str> = lost.iter().map(|p| p.tenant.as_str()).collect();
        let keys: Vec<&str> = lost
            .iter()
            .filter_map(|p| p.idempotency_key.as_deref())
            .collect();
        let rows = sqlx::query(
            "SELECT tenant, idempotency_key, id, request_hash FROM pushes \
             WHERE (tenant, idempotency_key) IN \
                 (SELECT * FROM UNNEST($1::text[], $2::text[]))",
        )
        .bind(tenants)
        .bind(keys)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            existing.insert(
                (r.try_get("tenant")?, r.try_get("idempotency_key")?),
                (r.try_get("id")?, r.try_get("request_hash")?),
            );
        }
    }

    // Decide each push's answer; replays name the earlier push (state read after collapse).
    enum Answer {
        Created,
        Replay(String),
        Conflict(String),
    }
    let mut answers = Vec::with_capacity(pushes.len());
    for p in pushes {
        if inserted.contains(&p.id) {
            answers.push(Answer::Created);
            continue;
        }
        let Some(key) = p.idempotency_key.as_deref() else {
            return Err(StoreError::Decode(format!(
                "push {} without idempotency key was not inserted",
                p.id
            )));
        };
        let earlier = match first_with_key.get(&p.tenant, key) {
            Some(j) if inserted.contains(&pushes[j].id) => {
                Some((pushes[j].id.clone(), pushes[j].request_hash.clone()))
            }
            _ => existing
                .get(&(p.tenant.clone(), key.to_owned()))
                .map(|(id, h)| (id.clone(), h.clone())),
        };
        let Some((id, hash)) = earlier else {
            return Err(StoreError::Decode(format!(
                "idempotency key of push {} conflicts with a push that cannot be found",
                p.id
            )));
        };
        answers.push(
            if is_same_request(hash.as_deref(), p.request_hash.as_deref()) {
                Answer::Replay(id)
            } else {
                Answer::Conflict(id)
            },
        );
    }

    let mut events = Events::default();
    let created: Vec<&NewPush> = pushes.iter().filter(|p| inserted.contains(&p.id)).collect();
    for p in &created {
        events.add(
            &p.id,
            p.created_at_ms,
            PushState::Queued,
            None,
            0,
            "accepted",
        );
    }

    // Collapse, in batch order: a push supersedes the waiting pushes its key reaches (same
    // tenant and device, or the same inline bindings: [`rules::collapse_scope`]), except itself
    // and the pushes after it in this batch (those supersede it in their turn).
    for (n, p) in created.iter().enumerate() {
        let Some(ck) = p.collapse_key.as_deref() else {
            continue;
        };
        let (device, snapshot) = match rules::collapse_scope(p) {
            CollapseScope::Device(d) => (Some(d), None),
            CollapseScope::Inline(json) => (None, Some(json)),
        };
        let keep: Vec<&str> = created[n..].iter().map(|q| q.id.as_str()).collect();
        let rows = sqlx::query(
            "UPDATE pushes SET state = 'superseded', updated_at = $4 \
             WHERE tenant = $1 AND collapse_key = $2 AND state IN ('queued', 'retry_wait') \
               AND id <> ALL($3::text[]) \
               AND (($5::text IS NOT NULL AND device_id = $5) \
                    OR ($5::text IS NULL AND device_id IS NULL AND bindings = $6)) \
             RETURNING id, attempts",
        )
        .bind(&p.tenant)
        .bind(ck)
        .bind(keep)
        .bind(p.created_at_ms)
        .bind(device)
        .bind(snapshot)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            let id: String = r.try_get("id")?;
            let attempts: i32 = r.try_get("attempts")?;
            events.add(
                &id,
                p.created_at_ms,
                PushState::Superseded,
                None,
                attempts,
                format!("superseded by {}", p.id),
            );
        }
    }
    events.flush(&mut tx).await?;

    let replay_ids: Vec<&str> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Replay(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let mut states: HashMap<String, String> = HashMap::new();
    if !replay_ids.is_empty() {
        for r in sqlx::query("SELECT id, state FROM pushes WHERE id = ANY($1::text[])")
            .bind(replay_ids)
            .fetch_all(&mut *tx)
            .await?
        {
            states.insert(r.try_get("id")?, r.try_get("state")?);
        }
    }
    if !created.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKEUP_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    let mut out = Vec::with_capacity(pushes.len());
    for (p, a) in pushes.iter().zip(answers) {
        out.push(match a {
            Answer::Created => Enqueued::Created { id: p.id.clone() },
            Answer::Conflict(id) => Enqueued::KeyConflict { id },
            Answer::Replay(id) => {
                let state = states
                    .get(&id)
                    .map(|s| parse_state(s))
                    .transpose()?
                    .ok_or_else(|| StoreError::Decode(format!("replayed push {id} vanished")))?;
                Enqueued::Replayed { id, state }
            }
        });
    }
    Ok(out)
}
