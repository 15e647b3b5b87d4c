//! Multi-replica operation at store level (issue 6): two `PgStore`s on one database stand in for
//! two dmpushd replicas, each with several claimer tasks that lease, "deliver" (record into a
//! shared ledger) and complete. Real wall-clock time, real leases; every loop has a deadline.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::support::store::{PgDb, push};
use dmpushd::{
    binding::BindingKind,
    store::{Completion, Enqueued, Next, PushState, Store},
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// push id → replicas that delivered it (a second entry is a duplicate delivery).
type Ledger = Arc<Mutex<HashMap<String, Vec<&'static str>>>>;

async fn fill(s: &Arc<dyn Store>, n: usize) -> Vec<String> {
    let now = now_ms();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in (t..n).step_by(32) {
                let mut p = push("t1");
                p.created_at_ms = now;
                p.not_before_ms = now;
                p.expires_at_ms = now + 3_600_000;
                let id = p.id.clone();
                assert_eq!(
                    s.enqueue(p).await.unwrap(),
                    Enqueued::Created { id: id.clone() }
                );
                ids.push(id);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn delivered(s: &Arc<dyn Store>) -> u64 {
    s.queue_depth()
        .await
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == PushState::Delivered)
        .map_or(0, |(_, n)| n)
}

/// What one simulated replica shares between its claimer tasks.
struct Replica {
    name: &'static str,
    lease: Duration,
    /// The replica is dead: its tasks stop without completing or renewing.
    dead: AtomicBool,
    /// Die after this many deliveries, right after delivering (mid-batch, before completing).
    die_after: Option<usize>,
    delivered: AtomicUsize,
    /// Leases claimed but never completed because the replica died.
    in_flight_at_death: AtomicUsize,
}

impl Replica {
    fn new(name: &'static str, lease: Duration, die_after: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            name,
            lease,
            dead: AtomicBool::new(false),
            die_after,
            delivered: AtomicUsize::new(0),
            in_flight_at_death: AtomicUsize::new(0),
        })
    }
}

/// One claimer task of a replica: claim, deliver, complete, until `n` pushes are delivered in the
/// database or the deadline passes.
async fn claimer(s: Arc<dyn Store>, r: Arc<Replica>, n: u64, ledger: Ledger, deadline: Instant) {
    let wake = s.wakeup();
    while Instant::now() < deadline {
        if r.dead.load(Ordering::SeqCst) {
            return;
        }
        let got = s.claim(r.name, now_ms(), r.lease, 16).await.unwrap();
        if got.is_empty() {
            if delivered(&s).await >= n {
                return;
            }
            // Wait for a wake-up (NOTIFY from the other replica) or poll again shortly.
            let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
            continue;
        }
        let mut batch = Vec::with_capacity(got.len());
        for c in &got {
            if r.dead.load(Ordering::SeqCst) {
                // Died before this delivery: the rest of the batch stays leased, uncompleted.
                r.in_flight_at_death.fetch_add(got.len(), Ordering::SeqCst);
                return;
            }
            ledger
                .lock()
                .unwrap()
                .entry(c.id.clone())
                .or_default()
                .push(r.name);
            let count = r.delivered.fetch_add(1, Ordering::SeqCst) + 1;
            if r.die_after.is_some_and(|k| count >= k) {
                // Crash right after a delivery, before its completion reaches the database.
                r.dead.store(true, Ordering::SeqCst);
                r.in_flight_at_death.fetch_add(got.len(), Ordering::SeqCst);
                return;
            }
            batch.push(Completion {
                push_id: c.id.clone(),
                owner: r.name.into(),
                attempt: c.attempt,
                binding: Some(BindingKind::Wap),
                at_ms: now_ms(),
                next: Next::Delivered,
                detail: "simulated".into(),
            });
            tokio::task::yield_now().await;
        }
        s.complete(batch).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_every_push_exactly_once() {
    const N: usize = 5_000;
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = db.open().await;
    let b = db.open().await;
    let ids = fill(&a, N).await;
    let ledger: Ledger = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tasks = Vec::new();
    for (s, name) in [(&a, "replica-a"), (&b, "replica-b")] {
        let r = Replica::new(name, Duration::from_secs(60), None);
        for _ in 0..4 {
            tasks.push(tokio::spawn(claimer(
                s.clone(),
                r.clone(),
                N as u64,
                ledger.clone(),
                deadline,
            )));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        delivered(&a).await,
        N as u64,
        "all delivered before the deadline"
    );
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert_eq!(ledger.len(), N);
    let dups = ledger.values().filter(|v| v.len() > 1).count();
    assert_eq!(dups, 0, "no push delivered twice");
    let share_a = ledger.values().filter(|v| v[0] == "replica-a").count();
    let share_b = N - share_a;
    println!("replica-a delivered {share_a}, replica-b delivered {share_b} of {N}");
    assert!(
        share_a >= N / 10 && share_b >= N / 10,
        "both replicas take a meaningful share: a={share_a} b={share_b}"
    );
    for id in ids.iter().step_by(97) {
        let r = a.get_push("t1", id).await.unwrap().unwrap();
        assert_eq!((r.state, r.attempts), (PushState::Delivered, 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_leases_are_taken_over() {
    const N: usize = 2_000;
    let lease = Duration::from_millis(1_500);
    let Some(db) = PgDb::create().await else {
        return;
    };
    let survivor = db.open().await;
    let doomed = db.open().await;
    let ids = fill(&survivor, N).await;
    let ledger: Ledger = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    // The doomed replica dies mid-batch after 300 deliveries.
    let doomed_r = Replica::new("doomed", lease, Some(300));
    let survivor_r = Replica::new("survivor", lease, None);
    let mut doomed_tasks = Vec::new();
    let mut survivor_tasks = Vec::new();
    for _ in 0..2 {
        doomed_tasks.push(tokio::spawn(claimer(
            doomed.clone(),
            doomed_r.clone(),
            N as u64,
            ledger.clone(),
            deadline,
        )));
        survivor_tasks.push(tokio::spawn(claimer(
            survivor.clone(),
            survivor_r.clone(),
            N as u64,
            ledger.clone(),
            deadline,
        )));
    }
    for t in doomed_tasks {
        t.await.unwrap();
    }
    // The dead replica's leases: held (state sending), never renewed.
    let held_at_kill = doomed.leases_held("doomed").await.unwrap();
    drop(doomed);
    for t in survivor_tasks {
        t.await.unwrap();
    }

    assert_eq!(
        delivered(&survivor).await,
        N as u64,
        "every push delivered, including the dead replica's in-flight ones"
    );
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert_eq!(ledger.len(), N, "no push lost");
    let dups: Vec<&String> = ledger
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect();
    let in_flight = doomed_r.in_flight_at_death.load(Ordering::SeqCst);
    println!(
        "doomed replica held {held_at_kill} leases at its death ({in_flight} claimed but not \
         completed); duplicate deliveries after takeover: {}",
        dups.len()
    );
    assert!(
        doomed_r.dead.load(Ordering::SeqCst),
        "the doomed replica died"
    );
    assert!(
        !dups.is_empty(),
        "it died right after a delivery it never completed"
    );
    assert_eq!(held_at_kill as usize, in_flight);
    assert!(
        dups.len() <= in_flight,
        "duplicates bounded by the dead replica's in-flight count"
    );
    // Every duplicate is a takeover: delivered by the doomed replica, then by the survivor.
    for id in &dups {
        assert_eq!(ledger[*id], ["doomed", "survivor"]);
        let r = survivor.get_push("t1", id).await.unwrap().unwrap();
        assert_eq!((r.state, r.attempts), (PushState::Delivered, 2));
    }
    let taken_over = {
        let mut n = 0;
        for id in &ids {
            if survivor.get_push("t1", id).await.unwrap().unwrap().attempts == 2 {
                n += 1;
            }
        }
        n
    };
    assert_eq!(taken_over, in_flight, "each held lease was taken over once");
}
