//! SQLite's hot write transactions — accepts (the group commit of `enqueue`), claims,
//! completions, receipts — run whole on one thread, on a connection of its own with cached
//! prepared statements.
//!
//! Through sqlx every statement of a transaction, and every row it returns, is a hand-off
//! between a tokio task and sqlx's connection thread. On a busy machine each hand-off waits for
//! the other side to be scheduled, and the single write connection sat idle for half of the
//! time a claim or a completion batch held it (PERFORMANCE.md §6, eighth pass). Here the caller
//! hands over the whole transaction once and gets its result once; between the two the
//! connection runs back to back. Statements are one row each: prepared once per connection
//! (`prepare_cached`), so a 128-push batch costs no parsing, and a batch that names the same
//! push or reference twice needs no special path — rows apply in order, each seeing the last.
//!
//! **Group commit.** Jobs that wait while a transaction runs go into the next one together (a
//! batch of accepts, a claim, a completion batch and a receipt batch: one commit, one fsync,
//! instead of four), each in a savepoint of its own, so that a job that fails takes back only
//! its own writes. A job's caller hears of it only after the commit.
//!
//! **One writer at a time.** The other writes (devices, cancels, lease renewals, sweeps, the
//! outbox) stay on the sqlx write pool's one connection. Every write on either connection holds
//! the store's write lock (`SqliteStore::write_lock`): the two never write at the same time, so
//! neither meets `SQLITE_BUSY`, whose retry sleeps. The hot writer takes the lock before it
//! gathers a group, so the jobs that arrive while another write holds it join that group.

use std::{collections::HashSet, path::Path, sync::Arc, sync::mpsc, time::Duration};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use tokio::sync::oneshot;

use super::super::{
    Claimed, Completion, Enqueued, NewPush, PushState, ReceiptEffect, Signature, StoreError,
    from_json,
    outbox::fires_webhook,
    parse_binding, parse_bootstrap, parse_content_type, parse_state,
    rules::{
        self, CollapseScope, FirstByKey, HeldRef, PushView, RefClaim, RefRow, RefStatus,
        is_same_request,
    },
    takeover_detail, to_json,
};
use super::outbox;
use crate::domain::{BindingKind, DeviceBinding, NextHopRef, Receipt};

/// Runs inside the group's transaction (in a savepoint of its own; `None`: no transaction could
/// start, so it does not run) and returns what to do once the transaction has ended: `Ok`
/// committed, `Err` the commit's failure.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Finish + Send>;
type Finish = Box<dyn FnOnce(Result<(), &CommitError>) + Send>;

/// Why a group's transaction did not commit (every job of the group is told).
struct CommitError {
    message: String,
    transient: bool,
}

impl CommitError {
    fn of(e: &StoreError) -> Self {
        Self {
            message: e.to_string(),
            transient: e.is_transient(),
        }
    }
}

/// Most jobs in one transaction. Accept batches, claims, completion batches and receipt batches
/// come from one task each, so a group is rarely more than four; the bound keeps a commit's
/// latency bounded if that changes.
const MAX_GROUP: usize = 16;

/// The thread that owns the hot connection; dropping every clone ends it (after the queued
/// jobs).
#[derive(Clone)]
pub(super) struct HotWriter {
    jobs: mpsc::Sender<Job>,
}

impl HotWriter {
    /// Opens the database file (already created, in WAL mode — a setting the file keeps — and
    /// migrated by the sqlx writer) and starts the thread. Same settings as the sqlx writer:
    /// `synchronous=FULL` (a commit is on disk before anything acts on it, DESIGN §7), its page
    /// cache, temporary tables in memory. `lock` is the store's write lock, held while a group
    /// runs.
    pub(super) fn open(
        path: &Path,
        busy_timeout: Duration,
        lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(busy_timeout)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(
            None,
            "cache_size",
            format!("-{}", super::SQLITE_WRITER_CACHE_KIB),
        )?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        // Each statement below, once (about 20), with room to spare.
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-hot-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(first) = rx.recv() {
                    // The lock first, then whatever else is waiting: the jobs that arrive
                    // while a write on the sqlx connection (a sweep, a lease renewal, the
                    // outbox) holds the lock join this group instead of each waiting for a turn
                    // of its own.
                    let write = lock.blocking_lock();
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    run_group(write, &mut conn, group);
                }
            })
            .map_err(|e| StoreError::Writer(format!("cannot start its thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the thread, in a transaction with whatever other jobs were waiting, and
    /// returns its result once that transaction has committed (an error of `f` rolls back `f`'s
    /// writes only; a failed commit fails every job of the group). `f` runs to its end even when
    /// the caller stops waiting, so a transaction is never cut short between statements.
    pub(super) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: Option<&Connection>| {
            let result = conn.map(|conn| in_savepoint(conn, f));
            Box::new(move |commit: Result<(), &CommitError>| {
                let result = match (result, commit) {
                    (Some(result), Ok(())) => result,
                    // A job that failed was rolled back to its savepoint already: its own
                    // error tells more than the commit's.
                    (Some(Err(e)), Err(_)) => Err(e),
                    (_, Err(e)) => Err(StoreError::GroupCommit {
                        message: e.message.clone(),
                        transient: e.transient,
                    }),
                    (None, Ok(())) => Err(StoreError::Writer("a job did not run".into())),
                };
                let _ = tx.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// One transaction for `group`, under the write lock; each job is told the outcome after the
/// commit (so nothing is acted on before it is on disk).
fn run_group(write: tokio::sync::MutexGuard<'_, ()>, conn: &mut Connection, group: Vec<Job>) {
    // IMMEDIATE: the write lock at once; this connection only ever writes.
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail(group, &StoreError::from(e)),
    };
    let finishes: Vec<Finish> = group
        .into_iter()
        // A savepoint that could not be rolled back ends the transaction (`in_savepoint`): the
        // jobs after it do not run (their statements would commit one by one).
        .map(|job| job((!tx.is_autocommit()).then_some(&*tx)))
        .collect();
    let committed = tx
        .commit()
        .map_err(|e| CommitError::of(&StoreError::from(e)));
    drop(write);
    for finish in finishes {
        finish(committed.as_ref().map(|_| ()));
    }
}

/// Tells every job of a group that could not start a transaction why, without running it.
fn fail(group: Vec<Job>, e: &StoreError) {
    let e = CommitError::of(e);
    for job in group {
        job(None)(Err(&e));
    }
}

/// Runs `f` in a savepoint of the open transaction: its writes stay if it succeeds and are
/// rolled back if it fails (or panics), leaving the other jobs of the group theirs.
fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.prepare_cached("SAVEPOINT hot")?.execute([])?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(StoreError::Writer("a transaction panicked".into())));
    let end = if result.is_ok() {
        conn.prepare_cached("RELEASE hot")?.execute([]).map(|_| ())
    } else {
        conn.prepare_cached("ROLLBACK TO hot")?
            .execute([])
            .and_then(|_| conn.prepare_cached("RELEASE hot")?.execute([]))
            .map(|_| ())
    };
    if let Err(e) = end {
        // The savepoint is in an unknown state: end the whole transaction rather than commit
        // half of this job.
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.into());
    }
    result
}

const CLAIM_RETURNING: &str =
    "RETURNING id, tenant, device_id, bindings, binding_choice, binding_index,
    content_type, body, attempts, max_attempts, created_at, expires_at, callback_url,
    bootstrap";

/// A claimed push from a row of [`CLAIM_RETURNING`]; a row that does not decode is an
/// `Err` of its own (the caller decides when to fail).
fn claimed_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Claimed, StoreError>> {
    let bindings: String = r.get(3)?;
    let binding_choice: Option<String> = r.get(4)?;
    let binding_index: i64 = r.get(5)?;
    let content_type: String = r.get(6)?;
    let attempts: i64 = r.get(8)?;
    let max_attempts: i64 = r.get(9)?;
    let bootstrap: Option<String> = r.get(13)?;
    let (id, tenant, device_id, body, created_at_ms, expires_at_ms, callback_url) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(7)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    );
    Ok((|| {
        Ok(Claimed {
            id,
            tenant,
            device_id,
            bindings: from_json(&bindings, "push bindings")?,
            binding_choice: parse_binding(binding_choice, "binding_choice")?,
            binding_index: binding_index as u32,
            content_type: parse_content_type(&content_type)?,
            body,
            attempt: attempts as u32,
            max_attempts: max_attempts as u32,
            created_at_ms,
            expires_at_ms,
            callback_url,
            bootstrap: parse_bootstrap(bootstrap)?,
            taken_over_from: None,
        })
    })())
}

/// [`Store::claim`](super::super::Store::claim): expired leases first (taken over, with an
/// event naming the previous owner), then due pushes, high priority first.
pub(super) fn claim(
    tx: &Connection,
    owner: &str,
    now_ms: i64,
    until_ms: i64,
    limit: u32,
) -> Result<Vec<Result<Claimed, StoreError>>, StoreError> {
    let mut claimed = Vec::with_capacity(limit as usize);
    // Takeover first: a crashed worker's pushes are older than anything newly due. The previous
    // owner is read first (RETURNING shows only new values); one writer makes the read and the
    // update one consistent step.
    let stale: Vec<(String, Option<String>)> = tx
        .prepare_cached(
            "SELECT id, lease_owner FROM pushes INDEXED BY pushes_lease
             WHERE state = 'sending' AND lease_until <= ?1 ORDER BY lease_until LIMIT ?2 + 0",
        )?
        .query_map((now_ms, i64::from(limit)), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if !stale.is_empty() {
        let mut take = tx.prepare_cached(&format!(
            "UPDATE pushes SET lease_owner = ?1, lease_until = ?2, attempts = attempts + 1,
                 updated_at = ?3
             WHERE id = ?4 {CLAIM_RETURNING}"
        ))?;
        for (id, was) in stale {
            let Some(row) = take
                .query_row((owner, until_ms, now_ms, &id), claimed_from_row)
                .optional()?
            else {
                continue;
            };
            let mut c = row?;
            let was = was.unwrap_or_else(|| "an unknown owner".into());
            let detail = takeover_detail(&was, c.attempt.saturating_sub(1), owner);
            insert_event(
                tx,
                &c.id,
                now_ms,
                PushState::Sending,
                None,
                c.attempt,
                &detail,
            )?;
            c.taken_over_from = Some(was);
            claimed.push(c);
        }
    }
    // Due pushes, high priority first. One range scan per priority level (the API knows
    // 1 = high and 0 = normal): with the level fixed, the `pushes_due` index yields rows in
    // `next_attempt_at` order and the scan stops at the first one not yet due — instead of
    // walking every waiting push (e.g. a million scheduled for tomorrow) on each claim.
    let mut due: Vec<Result<Claimed, StoreError>> = Vec::new();
    for priority in [1i64, 0] {
        let left = i64::from(limit) - (claimed.len() + due.len()) as i64;
        if left <= 0 {
            break;
        }
        let mut st = tx.prepare_cached(&format!(
            "UPDATE pushes SET state = 'sending', lease_owner = ?1, lease_until = ?2,
                 attempts = attempts + 1, updated_at = ?3
             WHERE id IN (SELECT id FROM pushes INDEXED BY pushes_due
                          WHERE state IN ('queued', 'retry_wait') AND priority = ?5
                            AND next_attempt_at <= ?3 AND expires_at > ?3
                          ORDER BY priority DESC, next_attempt_at LIMIT ?4 + 0)
             {CLAIM_RETURNING}"
        ))?;
        let rows = st.query_map((owner, until_ms, now_ms, left, priority), claimed_from_row)?;
        for r in rows {
            due.push(r?);
        }
    }
    // Decoded by the caller after the commit, as one bad row must not stop every other push
    // from being claimed: that row stays leased to this owner and is reported then.
    Ok(claimed.into_iter().map(Ok).chain(due).collect())
}

fn insert_event(
    tx: &Connection,
    push_id: &str,
    at_ms: i64,
    state: PushState,
    binding: Option<BindingKind>,
    attempt: u32,
    detail: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO push_events (push_id, at, state, binding, attempt, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute((
        push_id,
        at_ms,
        state.as_str(),
        binding.map(BindingKind::as_str),
        i64::from(attempt),
        detail,
    ))?;
    // The webhook's outbox row, in the same transaction (migrations/sqlite/0009).
    if fires_webhook(state) {
        let seq = tx.last_insert_rowid();
        let target = tx
            .prepare_cached(outbox::HOOK_TARGET)?
            .query_row([push_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .optional()?;
        if let Some((tenant, url, pending_max)) = target {
            let (id, due) = outbox::hook_row(push_id, seq, at_ms, pending_max);
            tx.prepare_cached(outbox::HOOK_INSERT)?.execute((
                id,
                push_id,
                tenant,
                state.as_str(),
                seq,
                url,
                at_ms,
                due,
            ))?;
        }
    }
    Ok(())
}

/// [`Store::complete`](super::super::Store::complete); `true` when a push fell back to its
/// next binding (the dispatcher should look for due work at once).
pub(super) fn complete(tx: &Connection, batch: &[Completion]) -> Result<bool, StoreError> {
    let mut effects: Vec<rules::CompletionEffect<'_>> =
        batch.iter().map(rules::completion_effect).collect();
    // Receipts that overtook these completions (with a fast SMSC, most do), read first: a push
    // they deliver is written `delivered` once instead of `accepted` and then `delivered`. Not
    // when a reference is named twice (recorded push by push below).
    let found = if rules::refs_are_distinct(&effects) {
        let keys: Vec<(BindingKind, &NextHopRef)> = effects
            .iter()
            .filter_map(|e| e.refs.as_ref())
            .flat_map(|(binding, refs)| refs.iter().map(move |r| (*binding, *r)))
            .collect();
        let found = read_found(tx, &keys)?;
        for e in &mut effects {
            rules::settle_overtaken(e, &found);
        }
        Some(found)
    } else {
        None
    };
    // Each row applies only while its lease is still held by the completing owner; in order,
    // so the same push twice in a batch sees its first completion.
    let mut events = Vec::with_capacity(batch.len());
    let mut accepted = Vec::new();
    let mut released = Vec::new();
    {
        let mut update = tx.prepare_cached(
            "UPDATE pushes SET state = ?2, next_attempt_at = COALESCE(?3, next_attempt_at),
                 binding_index = COALESCE(?4, binding_index), attempts = attempts + ?5,
                 last_binding = COALESCE(?6, last_binding), updated_at = ?7,
                 lease_owner = NULL, lease_until = NULL
             WHERE id = ?1 AND state = 'sending' AND lease_owner = ?8",
        )?;
        for (c, e) in batch.iter().zip(&effects) {
            let applied = update.execute((
                &c.push_id,
                e.state.as_str(),
                e.next_attempt_at,
                e.binding_index.map(i64::from),
                i64::from(e.attempts_delta),
                e.last_binding.map(BindingKind::as_str),
                e.updated_at_ms,
                &c.owner,
            ))? > 0;
            if !applied {
                tracing::warn!(message = "Completion ignored: lease lost.", push_id = %c.push_id, owner = %c.owner);
                continue;
            }
            for ev in e.event.iter().chain(&e.settled) {
                events.push((
                    c.push_id.as_str(),
                    ev.at_ms,
                    ev.state,
                    ev.binding,
                    ev.attempt,
                    ev.detail.as_str(),
                ));
            }
            match (&e.refs, &e.settled) {
                (Some((binding, refs)), Some(_)) => {
                    released.extend(refs.iter().map(|r| (*binding, *r)));
                }
                (Some((binding, refs)), None) => accepted.push((c, *binding, refs.as_slice())),
                (None, _) => {}
            }
        }
    }
    // Events first: a push's `accepted` event precedes the event of a receipt that overtook it
    // and settles it below.
    insert_events(tx, &events)?;
    release_found(tx, &released)?;
    // Receipts overtook these completions but did not settle them at once (a part pending or
    // failed). Their pushes were just made `accepted`, in this transaction: settled together.
    let adopted: Vec<(&str, BindingKind, i64)> = record_refs(tx, &accepted, found.as_ref())?
        .into_iter()
        .map(|(c, binding)| (c.push_id.as_str(), binding, c.at_ms))
        .collect();
    let mut held: Vec<String> = adopted.iter().map(|(id, _, _)| (*id).to_owned()).collect();
    held.sort_unstable();
    let mut rows = rules::ReceiptRows::default();
    read_held(tx, &held, &mut rows)?;
    let settled = rules::settle_adopted(&adopted, &rows);
    write_settled(tx, &settled)?;
    Ok(settled.iter().any(|s| s.fallback_to.is_some()))
}

/// The `push_refs` rows of `keys` as they are.
fn read_found(
    tx: &Connection,
    keys: &[(BindingKind, &NextHopRef)],
) -> Result<rules::FoundRefs, StoreError> {
    let mut found = rules::FoundRefs::new();
    let mut st = tx.prepare_cached(
        "SELECT push_id, hold_until, status, detail, updated_at FROM push_refs
         WHERE binding = ?1 AND account = ?2 AND reference = ?3",
    )?;
    for (binding, r) in keys {
        let row = st
            .query_row((binding.as_str(), &r.account, &r.id), |row| {
                Ok(rules::FoundRef {
                    held: HeldRef {
                        push_id: row.get(0)?,
                        hold_until_ms: row.get(1)?,
                    },
                    status: RefStatus::parse(&row.get::<_, String>(2)?),
                    detail: row.get(3)?,
                    updated_at_ms: row.get(4)?,
                })
            })
            .optional()?;
        if let Some(f) = row {
            found.insert((*binding, (*r).clone()), f);
        }
    }
    Ok(found)
}

/// An applied `Accepted` completion, its binding and the references it names.
type AcceptedRefs<'a, 'c> = (&'c Completion, BindingKind, &'a [&'a NextHopRef]);

/// Records the references of `Accepted` completions per [`rules::claim_ref`], decided against
/// `found` — the rows read when the batch began, or `None` when a reference is named twice in
/// the batch: then push by push, in order, each against a fresh read, so that the later push
/// takes the id from the earlier one. Returns the completions that adopted a receipt (their
/// pushes must be settled now).
fn record_refs<'a, 'c>(
    tx: &Connection,
    accepted: &[AcceptedRefs<'a, 'c>],
    found: Option<&rules::FoundRefs>,
) -> Result<Vec<(&'c Completion, BindingKind)>, StoreError> {
    let mut adopted = Vec::new();
    let mut adopted_ids = HashSet::new();
    let groups: Vec<&[AcceptedRefs<'a, 'c>]> = if found.is_some() {
        vec![accepted]
    } else {
        accepted.chunks(1).collect()
    };
    let mut adopt = tx.prepare_cached(
        "UPDATE push_refs SET push_id = ?4, hold_until = NULL
         WHERE binding = ?1 AND account = ?2 AND reference = ?3",
    )?;
    let mut take = tx.prepare_cached(
        "INSERT INTO push_refs
             (binding, account, reference, push_id, status, detail, updated_at, hold_until)
         VALUES (?1, ?2, ?3, ?4, 'pending', '', ?5, NULL)
         ON CONFLICT (binding, account, reference) DO UPDATE SET
             push_id = excluded.push_id, status = 'pending', detail = '',
             updated_at = excluded.updated_at, hold_until = NULL",
    )?;
    for g in groups {
        let read;
        let found = match found {
            Some(f) => f,
            None => {
                let keys: Vec<(BindingKind, &NextHopRef)> = g
                    .iter()
                    .flat_map(|(_, b, refs)| refs.iter().map(move |r| (*b, *r)))
                    .collect();
                read = read_found(tx, &keys)?;
                &read
            }
        };
        for (c, binding, refs) in g {
            for r in refs.iter() {
                let held = found.get(&(*binding, (*r).clone())).map(|f| &f.held);
                match rules::claim_ref(held, c.at_ms) {
                    RefClaim::Adopt => {
                        adopt.execute((binding.as_str(), &r.account, &r.id, &c.push_id))?;
                        if adopted_ids.insert(c.push_id.as_str()) {
                            adopted.push((*c, *binding));
                        }
                    }
                    RefClaim::Take => {
                        take.execute((binding.as_str(), &r.account, &r.id, &c.push_id, c.at_ms))?;
                    }
                }
            }
        }
    }
    Ok(adopted)
}

/// Deletes the overtaking receipts of pushes their completion just delivered (still orphans).
fn release_found(tx: &Connection, keys: &[(BindingKind, &NextHopRef)]) -> Result<(), StoreError> {
    let mut st = tx.prepare_cached(
        "DELETE FROM push_refs
         WHERE push_id IS NULL AND binding = ?1 AND account = ?2 AND reference = ?3",
    )?;
    for (binding, r) in keys {
        st.execute((binding.as_str(), &r.account, &r.id))?;
    }
    Ok(())
}

/// Reads the pushes `held` and all their references into `rows`.
fn read_held(
    tx: &Connection,
    held: &[String],
    rows: &mut rules::ReceiptRows,
) -> Result<(), StoreError> {
    if held.is_empty() {
        return Ok(());
    }
    let mut push = tx.prepare_cached(
        "SELECT state, attempts, binding_choice, binding_index, bindings, expires_at
         FROM pushes WHERE id = ?1",
    )?;
    let mut refs = tx.prepare_cached(
        "SELECT account, reference, status, detail, updated_at FROM push_refs
         WHERE push_id = ?1",
    )?;
    for id in held {
        let row = push
            .query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()?;
        if let Some((state, attempts, choice, index, bindings, expires_at_ms)) = row {
            let bindings: Vec<DeviceBinding> = from_json(&bindings, "push bindings")?;
            rows.pushes.insert(
                id.clone(),
                rules::HeldPush {
                    view: PushView {
                        state: parse_state(&state)?,
                        binding_choice: parse_binding(choice, "binding_choice")?,
                        binding_index: u32::try_from(index).unwrap_or(0),
                        bindings: bindings.iter().map(DeviceBinding::kind).collect(),
                        expires_at_ms,
                    },
                    attempts: u32::try_from(attempts).unwrap_or(0),
                },
            );
        }
        let found = refs
            .query_map([id], |r| {
                Ok(RefRow {
                    reference: NextHopRef {
                        account: r.get(0)?,
                        id: r.get(1)?,
                    },
                    status: RefStatus::parse(&r.get::<_, String>(2)?),
                    detail: r.get(3)?,
                    updated_at_ms: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        if !found.is_empty() {
            rows.refs.entry(id.clone()).or_default().extend(found);
        }
    }
    Ok(())
}

/// The state changes and events of settled pushes, and the release of their references.
fn write_settled(tx: &Connection, settled: &[rules::SettledPush]) -> Result<(), StoreError> {
    if settled.is_empty() {
        return Ok(());
    }
    let mut update = tx.prepare_cached(
        "UPDATE pushes SET state = ?2, updated_at = ?3,
             binding_index = COALESCE(?4, binding_index),
             next_attempt_at = COALESCE(?5, next_attempt_at)
         WHERE id = ?1",
    )?;
    for s in settled {
        let index = s.fallback_to.map(i64::from);
        // A fallback goes on at once with the next binding.
        update.execute((
            &s.push_id,
            s.state.as_str(),
            s.at_ms,
            index,
            index.map(|_| s.at_ms),
        ))?;
    }
    let events: Vec<_> = settled
        .iter()
        .map(|s| {
            (
                s.push_id.as_str(),
                s.at_ms,
                s.state,
                Some(s.binding),
                s.attempts,
                s.detail.as_str(),
            )
        })
        .collect();
    insert_events(tx, &events)?;
    let mut release = tx.prepare_cached("DELETE FROM push_refs WHERE push_id = ?1")?;
    for s in settled {
        release.execute([&s.push_id])?;
    }
    Ok(())
}

/// An event row: push id, time, state, binding, attempt, detail.
type EventValues<'a> = (&'a str, i64, PushState, Option<BindingKind>, u32, &'a str);

fn insert_events(tx: &Connection, events: &[EventValues<'_>]) -> Result<(), StoreError> {
    for (push_id, at_ms, state, binding, attempt, detail) in events {
        insert_event(tx, push_id, *at_ms, *state, *binding, *attempt, detail)?;
    }
    Ok(())
}

/// Receipts per run: at most this many, and no reference twice
/// ([`rules::runs_of_distinct_refs`]): a run is planned from rows read once.
const RECEIPT_RUN: usize = 1_000;

/// [`Store::apply_receipts`](super::super::Store::apply_receipts) in one transaction.
pub(super) fn apply_receipts(
    tx: &Connection,
    receipts: &[Receipt],
    now_ms: i64,
) -> Result<Vec<ReceiptEffect>, StoreError> {
    let mut effects = Vec::with_capacity(receipts.len());
    for run in rules::runs_of_distinct_refs(receipts, RECEIPT_RUN) {
        effects.extend(receipt_run(tx, run, now_ms)?);
    }
    Ok(effects)
}

/// One run of receipts with distinct references: the rows read once (references, their
/// pushes, all their references), decided by [`rules::plan_receipts`], then written.
fn receipt_run(
    tx: &Connection,
    receipts: &[Receipt],
    now_ms: i64,
) -> Result<Vec<ReceiptEffect>, StoreError> {
    let keys: Vec<(BindingKind, &NextHopRef)> =
        receipts.iter().map(|r| (r.binding, &r.reference)).collect();
    let mut rows = rules::ReceiptRows {
        holders: read_found(tx, &keys)?
            .into_iter()
            .map(|(key, found)| (key, found.held.push_id))
            .collect(),
        ..Default::default()
    };
    let mut held: Vec<String> = rows.holders.values().flatten().cloned().collect();
    held.sort_unstable();
    held.dedup();
    read_held(tx, &held, &mut rows)?;
    let plan = rules::plan_receipts(receipts, rows, now_ms);
    write_settled(tx, &plan.settled)?;
    let mut upsert = tx.prepare_cached(
        "INSERT INTO push_refs
             (binding, account, reference, push_id, status, detail, updated_at, hold_until)
         VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, ?7)
         ON CONFLICT (binding, account, reference) DO UPDATE SET status = excluded.status,
             detail = excluded.detail, updated_at = excluded.updated_at",
    )?;
    for (i, _) in &plan.upserts {
        let r = &receipts[*i];
        let hold = i64::try_from(r.hold.as_millis()).unwrap_or(i64::MAX);
        upsert.execute((
            r.binding.as_str(),
            &r.reference.account,
            &r.reference.id,
            RefStatus::of_receipt(r.delivered).as_str(),
            &r.detail,
            now_ms,
            now_ms.saturating_add(hold),
        ))?;
    }
    Ok(plan.effects)
}

/// One group-committed batch of accepts: idempotent replays answered from the earlier push,
/// collapse keys superseding what they reach, the rest inserted with their `queued` event.
pub(super) fn enqueue(tx: &Connection, pushes: &[NewPush]) -> Result<Vec<Enqueued>, StoreError> {
    // Per push: its answer, or the earlier push (id, request hash) holding its key.
    enum Answer {
        Created,
        Earlier { id: String, hash: Option<String> },
    }
    let mut answers: Vec<Answer> = Vec::with_capacity(pushes.len());
    let mut first_with_key = FirstByKey::default();
    for (i, p) in pushes.iter().enumerate() {
        if let Some(j) = first_with_key.earlier(i, p) {
            // The first push of this batch with the key holds it (inserted, or itself a replay
            // of an earlier commit).
            answers.push(match &answers[j] {
                Answer::Created => Answer::Earlier {
                    id: pushes[j].id.clone(),
                    hash: pushes[j].request_hash.clone(),
                },
                Answer::Earlier { id, hash } => Answer::Earlier {
                    id: id.clone(),
                    hash: hash.clone(),
                },
            });
            continue;
        }
        if let Some(key) = p.idempotency_key.as_deref() {
            let row: Option<(String, Option<String>)> = tx
                .prepare_cached(
                    "SELECT id, request_hash FROM pushes WHERE tenant = ?1 AND idempotency_key = ?2",
                )?
                .query_row((&p.tenant, key), |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((id, hash)) = row {
                answers.push(Answer::Earlier { id, hash });
                continue;
            }
        }
        // In order, so that an earlier push of the same batch with the same collapse key is
        // superseded too.
        if let Some(ck) = p.collapse_key.as_deref() {
            supersede(tx, p, ck)?;
        }
        insert_push(tx, p)?;
        answers.push(Answer::Created);
    }
    // Replays report the earlier push's state as this commit leaves it (after collapse).
    let mut state = tx.prepare_cached("SELECT state FROM pushes WHERE id = ?1")?;
    pushes
        .iter()
        .zip(answers)
        .map(|(p, a)| {
            Ok(match a {
                Answer::Created => Enqueued::Created { id: p.id.clone() },
                Answer::Earlier { id, hash } => {
                    if is_same_request(hash.as_deref(), p.request_hash.as_deref()) {
                        let s: String = state.query_row([&id], |r| r.get(0))?;
                        Enqueued::Replayed {
                            id,
                            state: parse_state(&s)?,
                        }
                    } else {
                        Enqueued::KeyConflict { id }
                    }
                }
            })
        })
        .collect()
}

/// Supersedes the pending pushes that `p`'s collapse key reaches ([`rules::collapse_scope`]).
fn supersede(tx: &Connection, p: &NewPush, collapse_key: &str) -> Result<(), StoreError> {
    let (device, snapshot) = match rules::collapse_scope(p) {
        CollapseScope::Device(d) => (Some(d), None),
        CollapseScope::Inline(json) => (None, Some(json)),
    };
    let now_ms = p.created_at_ms;
    let ids: Vec<(String, i64)> = tx
        .prepare_cached(
            "UPDATE pushes SET state = 'superseded', updated_at = ?1
             WHERE tenant = ?2 AND collapse_key = ?3 AND state IN ('queued', 'retry_wait')
               AND ((?4 IS NOT NULL AND device_id = ?4)
                    OR (?4 IS NULL AND device_id IS NULL AND bindings = ?5))
             RETURNING id, attempts",
        )?
        .query_map((now_ms, &p.tenant, collapse_key, device, snapshot), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    for (id, attempts) in ids {
        insert_event(
            tx,
            &id,
            now_ms,
            PushState::Superseded,
            None,
            attempts as u32,
            &format!("superseded by {}", p.id),
        )?;
    }
    Ok(())
}

fn insert_push(tx: &Connection, p: &NewPush) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO pushes (id, tenant, device_id, bindings, binding_choice, binding_index,
             content_type, body, priority, state, attempts, max_attempts, created_at, updated_at,
             not_before, expires_at, next_attempt_at, idempotency_key, request_hash, collapse_key,
             callback_url, bootstrap)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, 'queued', 0, ?9, ?10, ?10, ?11, ?12, ?11,
             ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(rusqlite::params![
        &p.id,
        &p.tenant,
        &p.device_id,
        to_json(&p.bindings),
        p.binding_choice.map(BindingKind::as_str),
        p.content_type.as_str(),
        &p.body,
        p.priority,
        i64::from(p.max_attempts),
        p.created_at_ms,
        p.not_before_ms,
        p.expires_at_ms,
        &p.idempotency_key,
        &p.request_hash,
        &p.collapse_key,
        &p.callback_url,
        p.bootstrap.as_ref().map(Signature::to_stored),
    ])?;
    insert_event(
        tx,
        &p.id,
        p.created_at_ms,
        PushState::Queued,
        None,
        0,
        "accepted",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two jobs in one group: the one that fails loses its own write only, the other's commits,
    /// and each caller gets its own result.
    #[tokio::test]
    async fn a_failed_job_rolls_back_only_its_own_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hot.db");
        let setup = Connection::open(&path).expect("open");
        setup
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT NOT NULL);")
            .expect("schema");
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let writer = HotWriter::open(&path, Duration::from_secs(5), lock.clone()).expect("writer");
        // Held until both jobs are queued: the writer then takes them as one group.
        let held = lock.lock().await;
        let (failed, kept, ()) = tokio::join!(
            writer.run(|c| {
                c.execute("INSERT INTO t (v) VALUES ('failed')", [])?;
                Err::<(), _>(StoreError::Decode("job a fails".into()))
            }),
            writer.run(|c| {
                c.execute("INSERT INTO t (v) VALUES ('kept')", [])?;
                Ok(c.is_autocommit())
            }),
            async { drop(held) },
        );
        assert!(
            matches!(failed, Err(StoreError::Decode(ref m)) if m == "job a fails"),
            "{failed:?}"
        );
        assert!(
            !kept.expect("second job"),
            "ran inside the group's transaction"
        );
        let rows: Vec<String> = setup
            .prepare("SELECT v FROM t")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows, vec!["kept".to_owned()]);
    }
}
