//! Connection set-up: the pool, migrations, and the writer and LISTEN tasks.
//!
//! sqlx ≥ 0.9.1 sets TCP_NODELAY on its sockets again (0.9.0 did not, which made a group-commit
//! batch written in several segments wait 40 ms for the server's delayed ACK; docs/perf/postgres.md).
//! Cargo.toml requires 0.9.1 for that reason.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Job, PgStore, enqueue::writer, listen::listen};
use crate::store::{DeviceCache, StoreError, StoreOptions};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl PgStore {
    /// Connects (TLS per `sslmode` in the URL), runs migrations when `opts.auto_migrate`, and
    /// starts the writer and LISTEN tasks. Must be called inside a Tokio runtime.
    pub async fn connect(opts: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&opts.url)?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(opts.busy_timeout_secs.max(1)))
            .connect_with(connect)
            .await?;
        if opts.auto_migrate {
            // sqlx takes a PostgreSQL advisory lock around migrations, so replicas starting
            // together migrate once.
            MIGRATOR.run(&pool).await?;
        }
        let wake = Arc::new(Notify::new());
        let max_batch = opts.max_batch.max(1);
        let (jobs, rx) = mpsc::channel::<Job>(max_batch.saturating_mul(4));
        let rx = Arc::new(Mutex::new(rx));
        // Two writers pipeline: one gathers the next batch while the other waits for its commit.
        // Bounded by the pool so that reads and claims always find a connection.
        let writers = (opts.max_connections / 4).clamp(1, 4);
        for _ in 0..writers {
            tokio::spawn(writer(pool.clone(), rx.clone(), max_batch, wake.clone()));
        }
        let stop = CancellationToken::new();
        // Off until the listener is subscribed: only then are other replicas' changes seen.
        let devices = Arc::new(DeviceCache::new(false));
        tokio::spawn(listen(
            pool.clone(),
            wake.clone(),
            devices.clone(),
            stop.clone(),
        ));
        Ok(Self {
            pool,
            jobs,
            wake,
            devices,
            // Like the enqueue writers: a quarter of the pool, so that claims, receipts and
            // reads always find a connection. A completion batch is ~10 round trips; with one
            // writer the SMS path's deliveries/s was its batch size ÷ their latency.
            completion_writers: writers as usize,
            _stop: stop.drop_guard(),
        })
    }
}
