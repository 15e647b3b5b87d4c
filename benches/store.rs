//! Durable enqueues per second with many concurrent callers (issue 6 target: >= 10,000/s on
//! PostgreSQL on 2 cores). Each sample commits `PER_SAMPLE` pushes from `tasks` concurrent tasks;
//! every `enqueue` returns only after its group-commit transaction committed.
//!
//!     cargo bench --bench store
//!
//! PostgreSQL: `DMPUSHD_TEST_PG_URL` (default postgres://postgres@127.0.0.1:5432/postgres); a fresh
//! database is created for the run and dropped afterwards. Skipped with a message if unreachable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

#[path = "../tests/it/support/store.rs"]
mod store_support;

use std::sync::Arc;

use divan::{Bencher, counter::ItemsCount};
use dmpushd::store::{Enqueued, Store};
use store_support::{PgDb, SqliteDb, push};

const PER_SAMPLE: usize = 8_192;

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn burst(s: &Arc<dyn Store>, tasks: usize) {
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            for _ in (t..PER_SAMPLE).step_by(tasks) {
                let p = push("bench");
                let id = p.id.clone();
                match s.enqueue(p).await {
                    Ok(Enqueued::Created { id: got }) if got == id => {}
                    other => panic!("enqueue failed: {other:?}"),
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("enqueue task");
    }
}

#[divan::bench(args = [64, 256], sample_count = 10, sample_size = 1)]
fn postgres_enqueue(bencher: Bencher, tasks: usize) {
    let rt = runtime();
    let Some(db) = rt.block_on(PgDb::create()) else {
        return;
    };
    let store = rt.block_on(db.open());
    bencher
        .counter(ItemsCount::new(PER_SAMPLE))
        .bench_local(|| rt.block_on(burst(&store, tasks)));
    drop(store);
    drop(db);
}

#[divan::bench(args = [64, 256], sample_count = 10, sample_size = 1)]
fn sqlite_enqueue(bencher: Bencher, tasks: usize) {
    let rt = runtime();
    let db = SqliteDb::create();
    let store = rt.block_on(db.open());
    bencher
        .counter(ItemsCount::new(PER_SAMPLE))
        .bench_local(|| rt.block_on(burst(&store, tasks)));
}
