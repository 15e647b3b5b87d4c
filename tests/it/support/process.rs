//! The real `dmpushd` binary as a child process (crash tests), and a direct look at its SQLite
//! file.

use std::{
    collections::HashMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `dmpushd serve --config FILE`, quiet.
pub fn spawn_serve(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dmpushd"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway binary starts")
}

/// Polls `GET {base}{path}` until it answers 200 (bounded).
pub async fn wait_ok(http: &reqwest::Client, base: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{base}{path}")).send().await
            && r.status().as_u16() == 200
            && all_bearers_ok(&r.json().await.unwrap_or_default())
        {
            return;
        }
        assert!(Instant::now() < deadline, "gateway did not answer {path}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/readyz` is 200 whatever the bearers' state (DESIGN §10.4); tests that need a bound SMSC
/// wait for its binding to report `ok` too. Bodies without `bindings` count as ok.
pub fn all_bearers_ok(body: &serde_json::Value) -> bool {
    body["bindings"]
        .as_object()
        .is_none_or(|m| m.values().all(|v| v == "ok"))
}

/// Pushes per state, read from the database file itself (works while the gateway is dead).
pub async fn count_states(db: &Path) -> HashMap<String, i64> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM pushes GROUP BY state")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter().collect()
}
