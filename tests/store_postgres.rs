//! PostgreSQL-specific behaviour beyond the conformance suite: TLS to the database, NOTIFY
//! wake-ups across replicas, concurrent start-up migrations, error classification.

mod store_support;

use std::time::Duration;

use dmpushd::store::{Enqueued, Store, StoreOptions, postgres::PgStore};
use store_support::{PgDb, push};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_sslmode_require() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let mut opts = db.options();
    opts.url = format!("{}?sslmode=require", db.url);
    let store = match PgStore::connect(&opts).await {
        Ok(s) => s,
        Err(e) => {
            // A server without `ssl = on` refuses sslmode=require: that is the server's setup,
            // not the client's TLS; say so instead of failing.
            let plain = PgStore::connect(&db.options())
                .await
                .expect("plain connect");
            let ssl: String = sqlx::query_scalar("SHOW ssl")
                .fetch_one(plain.pool())
                .await
                .unwrap();
            assert_eq!(ssl, "off", "server has TLS but the client failed: {e}");
            eprintln!("SKIP: PostgreSQL server has ssl = off");
            return;
        }
    };
    let (ssl, version): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(ssl, "connection is encrypted");
    println!("database connection over {version:?}");
    let p = push("t1");
    let id = p.id.clone();
    assert_eq!(
        store.enqueue(p).await.unwrap(),
        Enqueued::Created { id: id.clone() }
    );
    assert!(store.get_push("t1", &id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_the_other_replica() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = db.open().await;
    let b = db.open().await;
    let wake_b = b.wakeup();
    // B's listener signals once when its LISTEN is in place (notifications before it are lost).
    tokio::time::timeout(Duration::from_secs(10), wake_b.notified())
        .await
        .expect("B's LISTEN connection is up");
    a.enqueue(push("t1")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), wake_b.notified())
        .await
        .expect("an enqueue on replica A wakes replica B through NOTIFY");
    // No other work: no further wake-up for B.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wake_b.notified())
            .await
            .is_err(),
        "no spurious wake-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let opts = db.options();
    let (a, b, c) = tokio::join!(
        dmpushd::store::open(&opts),
        dmpushd::store::open(&opts),
        dmpushd::store::migrate(&opts)
    );
    let (a, b) = (a.expect("replica a"), b.expect("replica b"));
    c.expect("dmpushd migrate");
    let p = push("t1");
    let id = p.id.clone();
    a.enqueue(p).await.unwrap();
    assert!(b.get_push("t1", &id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_a_transient_error() {
    // Port 1 on loopback: nothing listens there.
    let opts = StoreOptions {
        url: "postgres://postgres@127.0.0.1:1/postgres".into(),
        busy_timeout_secs: 2,
        ..StoreOptions::default()
    };
    let err = match tokio::time::timeout(Duration::from_secs(20), dmpushd::store::open(&opts)).await
    {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("connected to a closed port"),
        Err(_) => panic!("open did not give up within its acquire timeout"),
    };
    assert!(err.is_transient(), "{err}");
}
