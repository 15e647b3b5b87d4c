//! Connection set-up: the pool (with TCP_NODELAY on every socket), migrations, and the writer
//! and LISTEN tasks.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Job, PgStore, enqueue::writer, listen::listen};
use crate::store::{DeviceCache, StoreError, StoreOptions};

impl PgStore {
    /// Connects (TLS per `sslmode` in the URL), runs migrations when `opts.auto_migrate`, and
    /// starts the writer and LISTEN tasks. Must be called inside a Tokio runtime.
    pub async fn connect(opts: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&opts.url)?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(opts.busy_timeout_secs.max(1)))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Which of our sockets is this connection? The server knows its port.
                    let port: Option<i32> = sqlx::query_scalar("SELECT inet_client_port()")
                        .fetch_one(&mut *conn)
                        .await?;
                    if let Some(port) = port.and_then(|p| u16::try_from(p).ok())
                        && !nodelay::set_on_local_port(port)
                    {
                        tracing::debug!(port, "could not set TCP_NODELAY on a database socket");
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        if opts.auto_migrate {
            // sqlx takes a PostgreSQL advisory lock around migrations, so replicas starting
            // together migrate once.
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
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
            _stop: stop.drop_guard(),
        })
    }
}

/// TCP_NODELAY for database sockets.
///
/// sqlx 0.9.0 stopped disabling Nagle's algorithm on its TCP sockets (transact-rs/sqlx#4335; fixed
/// upstream by #4336, not in a release yet). A query message written in more than one segment then
/// waits for the server's delayed ACK: 40 ms per group-commit batch of more than ~50 pushes, which
/// capped enqueues at ~3,000/s (docs/perf/postgres.md). sqlx offers no socket hook, so after each
/// connect we find the socket by the client port the server reports and set the option ourselves.
/// Remove when sqlx sets it again.
mod nodelay {
    /// Sets TCP_NODELAY on this process's connected TCP socket whose local port is `port`.
    #[cfg(target_os = "linux")]
    pub fn set_on_local_port(port: u16) -> bool {
        use std::os::fd::FromRawFd;
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return false;
        };
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // Sockets only: their link reads `socket:[inode]`.
            match std::fs::read_link(entry.path()) {
                Ok(t) if t.to_string_lossy().starts_with("socket:") => {}
                _ => continue,
            }
            // SAFETY: `fd` is open in this process (listed just now). `ManuallyDrop` never closes
            // it, and only getsockname/getpeername/setsockopt are called, which cannot affect
            // memory safety even if the descriptor was closed and reused meanwhile.
            let s = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
            if s.local_addr().is_ok_and(|a| a.port() == port) && s.peer_addr().is_ok() {
                return s.set_nodelay(true).is_ok();
            }
        }
        false
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set_on_local_port(_port: u16) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn nodelay_is_set_on_the_socket_with_that_local_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        client.set_nodelay(false).unwrap();
        let port = client.local_addr().unwrap().port();
        assert!(super::nodelay::set_on_local_port(port));
        assert!(client.nodelay().unwrap());
        // Still open: the helper must not have closed the descriptor it borrowed.
        assert!(client.peer_addr().is_ok());
    }
}
