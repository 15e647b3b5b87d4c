//! PostgreSQL-specific behaviour beyond the conformance suite: TLS to the database, NOTIFY
//! wake-ups across replicas, the device cache's invalidation by NOTIFY, concurrent start-up
//! migrations, error classification.

use std::{sync::Arc, time::Duration};

use crate::support::store::{PgDb, push, wap};
use dmpushd::{
    binding::DeviceBinding,
    store::{Device, Enqueued, Store, StoreOptions, postgres::PgStore},
};

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

fn device(msisdn: &str) -> Device {
    Device {
        tenant: "t1".into(),
        id: "dev-cache".into(),
        bindings: vec![wap(msisdn)],
        dm: None,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
    }
}

/// Polls `get_device` on `store` until it returns what `want` accepts: another replica's change
/// arrives by NOTIFY, so "eventually, soon" is the contract; the deadline is generous for CI.
async fn until_seen(store: &Arc<dyn Store>, want: impl Fn(&Option<Device>) -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = store.get_device("t1", "dev-cache").await.unwrap();
        if want(&got) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: replica still reads {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Changes the device's MSISDN with plain SQL, as an operator would, bypassing every store.
async fn update_by_hand(admin: &PgStore, msisdn: &str) {
    let bindings = serde_json::to_string(&vec![wap(msisdn)]).unwrap();
    sqlx::query("UPDATE devices SET bindings = $1 WHERE tenant = 't1' AND id = 'dev-cache'")
        .bind(&bindings)
        .execute(admin.pool())
        .await
        .unwrap();
}

/// Waits until every replica reads the device with this MSISDN.
async fn both_see(stores: &[&Arc<dyn Store>], msisdn: &str, what: &str) {
    for s in stores {
        until_seen(s, |d| msisdn_of(d).as_deref() == Some(msisdn), what).await;
    }
}

fn msisdn_of(d: &Option<Device>) -> Option<String> {
    match d.as_ref()?.bindings.first()? {
        DeviceBinding::Wap { msisdn, .. } => msisdn.as_deref().map(str::to_owned),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_cache_follows_changes_made_by_other_replicas_and_by_hand() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = db.open().await;
    let b = db.open().await;
    for s in [&a, &b] {
        tokio::time::timeout(Duration::from_secs(10), s.wakeup().notified())
            .await
            .expect("LISTEN connection is up");
    }
    assert!(a.put_device(&device("+15550000001")).await.unwrap());
    // Read-your-writes on the writing replica, at once.
    assert_eq!(
        msisdn_of(&a.get_device("t1", "dev-cache").await.unwrap()).as_deref(),
        Some("+15550000001")
    );
    // B reads (and caches) version 1, then A changes the device.
    assert_eq!(
        msisdn_of(&b.get_device("t1", "dev-cache").await.unwrap()).as_deref(),
        Some("+15550000001")
    );
    let mut v2 = device("+15550000002");
    v2.updated_at_ms = 2_000;
    assert!(!a.put_device(&v2).await.unwrap(), "an update, not a create");
    until_seen(
        &b,
        |d| msisdn_of(d).as_deref() == Some("+15550000002"),
        "update on replica A",
    )
    .await;
    let got = b.get_device("t1", "dev-cache").await.unwrap().unwrap();
    assert_eq!(
        (got.created_at_ms, got.updated_at_ms),
        (1_000, 2_000),
        "created_at is the first registration's"
    );

    // An operator's SQL bypasses dmpushd entirely; the trigger still tells every replica.
    let admin = PgStore::connect(&db.options()).await.unwrap();
    update_by_hand(&admin, "+15550000003").await;
    both_see(&[&a, &b], "+15550000003", "UPDATE by hand").await;

    // The listener's connection dies; a change made while it is down must not be missed: the
    // cache is off until LISTEN is back and then starts empty.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(admin.pool())
    .await
    .unwrap();
    assert!(
        killed.len() >= 2,
        "both replicas' listeners found: {killed:?}"
    );
    update_by_hand(&admin, "+15550000004").await;
    both_see(&[&a, &b], "+15550000004", "UPDATE while LISTEN was down").await;

    // Deletion on A reaches B.
    assert!(a.delete_device("t1", "dev-cache").await.unwrap());
    assert_eq!(a.get_device("t1", "dev-cache").await.unwrap(), None);
    until_seen(&b, |d| d.is_none(), "delete on replica A").await;
    // And re-registration after deletion too (B cached the absence).
    assert!(a.put_device(&device("+15550000005")).await.unwrap());
    until_seen(
        &b,
        |d| msisdn_of(d).as_deref() == Some("+15550000005"),
        "re-registration",
    )
    .await;
}
