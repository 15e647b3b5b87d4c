//! Store test fixtures shared by the `store_*` tests and `benches/store.rs` (which includes this file
//! with `#[path]`, so it uses nothing else from `support`): a fresh PostgreSQL database per test, a
//! temporary SQLite file, and a push builder.
#![allow(dead_code)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use dmpushd::{
    binding::{BindingKind, ContentType, DeviceBinding, WapBearer},
    store::{NewPush, Store, StoreOptions},
};
use sqlx::Connection;

/// A fixed epoch for tests: the store never reads a clock, so tests drive time explicitly.
pub const T0: i64 = 1_700_000_000_000;

/// Admin URL of the test PostgreSQL server (`DMPUSHD_TEST_PG_URL`).
pub fn admin_url() -> String {
    std::env::var("DMPUSHD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced by `db` (query string kept, e.g. `sslmode`).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// A database created for one test and dropped (`WITH (FORCE)`) when this value is dropped, also
/// when the test panics.
pub struct PgDb {
    pub url: String,
    admin: String,
    name: String,
}

impl PgDb {
    /// Creates a fresh database, or returns `None` (skip) when PostgreSQL is unreachable and
    /// `DMPUSHD_REQUIRE_PEERS` is not `1`.
    pub async fn create() -> Option<Self> {
        let admin = admin_url();
        let conn =
            tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&admin))
                .await;
        let mut conn = match conn {
            Ok(Ok(c)) => c,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                if std::env::var("DMPUSHD_REQUIRE_PEERS").as_deref() == Ok("1") {
                    panic!(
                        "PostgreSQL at {admin} unreachable ({why}); run scripts/install.d/postgres.sh"
                    );
                }
                eprintln!(
                    "SKIP: PostgreSQL at {admin} unreachable ({why}); scripts/install.d/postgres.sh starts one"
                );
                return None;
            }
        };
        let name = format!("dmpushd_t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        Some(Self {
            url: with_database(&admin, &name),
            admin,
            name,
        })
    }

    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            url: self.url.clone(),
            ..StoreOptions::default()
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        dmpushd::store::open(&self.options())
            .await
            .expect("open PostgreSQL store")
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime (or while panicking): use a runtime of our own on
        // a plain thread; FORCE ends the store's still-open connections.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut c = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await
                .ok()?;
                c.close().await.ok()
            })
        })
        .join();
    }
}

/// A SQLite store in a temporary directory (removed when dropped).
pub struct SqliteDb {
    pub dir: tempfile::TempDir,
}

impl SqliteDb {
    pub fn create() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            url: format!("sqlite://{}", self.dir.path().join("store.db").display()),
            ..StoreOptions::default()
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        dmpushd::store::open(&self.options())
            .await
            .expect("open SQLite store")
    }
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A fresh, strictly increasing UUIDv7-shaped id (listing order = creation order).
pub fn next_id() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("01900000-0000-7000-8000-{n:012}")
}

pub fn wap(msisdn: &str) -> DeviceBinding {
    DeviceBinding::Wap {
        msisdn: Some(msisdn.parse().unwrap()),
        bearer: WapBearer::Sms,
        address: None,
        secure: false,
    }
}

/// A push due at `T0`, expiring an hour later.
pub fn push(tenant: &str) -> NewPush {
    NewPush {
        id: next_id(),
        tenant: tenant.into(),
        device_id: Some("dev-1".into()),
        bindings: vec![
            wap("+15550001111"),
            DeviceBinding::Sip {
                uri: "sip:dev@example.test".parse().unwrap(),
                gruu: None,
            },
        ],
        binding_choice: None,
        content_type: ContentType::Notification,
        body: vec![0xde, 0xad, 0x00, 0xbe, 0xef],
        priority: 0,
        created_at_ms: T0,
        not_before_ms: T0,
        expires_at_ms: T0 + 3_600_000,
        max_attempts: 5,
        idempotency_key: None,
        request_hash: None,
        collapse_key: None,
        callback_url: None,
        bootstrap: None,
    }
}

pub const WAP: Option<BindingKind> = Some(BindingKind::Wap);
