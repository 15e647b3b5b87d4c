//! Helpers shared by the benchmarks that drive real `dmpushd` processes (`benches/e2e.rs`,
//! `benches/scale.rs`): databases, gateways, the simulated SMSC, wrk and `/metrics` scraping.
//! Included with `#[path = "common/mod.rs"]`; each benchmark uses a subset.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sqlx::Connection;

pub const TOKEN: &str = "bench-token";

/// The DM message every benchmark push carries (JSON-escaped for a string literal in JSON).
pub const DM_BODY_JSON: &str = r#"<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:490154203237518</LocURI></Target><Source><LocURI>https://dms.example</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Final/></SyncBody></SyncML>"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A child process stopped with SIGTERM (graceful), then killed, when dropped.
pub struct Gateway {
    pub child: Child,
    pub base: String,
}

impl Gateway {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the process in bytes (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }
}

pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGTERM first (graceful: leases released), then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database for one setup; PostgreSQL databases are dropped afterwards.
pub struct Database {
    pub url: String,
    admin: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Database {
    pub async fn create(db: Db) -> Database {
        let dir = tempfile::tempdir().expect("tempdir");
        match db {
            Db::Sqlite => Database {
                url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                admin: None,
                _dir: dir,
            },
            Db::Postgres => {
                let admin = std::env::var("DMPUSHD_TEST_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let name = format!("dmpushd_bench_{}", uuid::Uuid::new_v4().simple());
                let mut c = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL reachable (scripts/install.d/postgres.sh)");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut c)
                    .await
                    .expect("CREATE DATABASE");
                let root = admin.rsplit_once('/').map(|(r, _)| r).unwrap_or(&admin);
                Database {
                    url: format!("{root}/{name}"),
                    admin: Some((admin.clone(), name)),
                    _dir: dir,
                }
            }
        }
    }

    pub async fn drop_now(self) {
        if let Some((admin, name)) = &self.admin
            && let Ok(mut c) = sqlx::PgConnection::connect(admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
        }
    }

    /// SQLite only: the sizes of the database file and of its write-ahead log, in bytes.
    pub fn sqlite_sizes(&self) -> Option<(u64, u64)> {
        let path = self.url.strip_prefix("sqlite://")?;
        let size = |p: &str| std::fs::metadata(p).map_or(0, |m| m.len());
        Some((size(path), size(&format!("{path}-wal"))))
    }

    /// PostgreSQL: a `CHECKPOINT`, so that the checkpoint a bulk load triggers (≈ 540 MB of WAL
    /// per million pushes) is not running through the measurement after it (docs/perf/scale.md).
    /// SQLite: nothing (the gateway checkpoints its own WAL).
    pub async fn checkpoint(&self) {
        if self.admin.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect");
            sqlx::query("CHECKPOINT")
                .execute(&mut c)
                .await
                .expect("CHECKPOINT");
        }
    }

    /// (all pushes, delivered pushes).
    pub async fn counts(&self) -> (i64, i64) {
        const Q: &str = "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END), 0) FROM pushes";
        let rows = self.query_pairs(Q).await;
        rows.first().map_or((0, 0), |r| (r.0, r.1))
    }

    /// Pushes per state, sorted by state.
    pub async fn states(&self) -> Vec<(String, i64)> {
        const Q: &str = "SELECT state, COUNT(*) FROM pushes GROUP BY state ORDER BY state";
        if self.admin.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect");
            let r: Vec<(String, i64)> = sqlx::query_as(Q).fetch_all(&mut c).await.expect("states");
            let _ = c.close().await;
            r
        } else {
            let mut c = sqlx::SqliteConnection::connect(&format!("{}?mode=ro", self.url))
                .await
                .expect("open");
            let r: Vec<(String, i64)> = sqlx::query_as(Q).fetch_all(&mut c).await.expect("states");
            let _ = c.close().await;
            r
        }
    }

    async fn query_pairs(&self, q: &'static str) -> Vec<(i64, i64)> {
        if self.admin.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect");
            let r: Vec<(i64, i64)> = sqlx::query_as(q).fetch_all(&mut c).await.expect("count");
            let _ = c.close().await;
            r
        } else {
            let mut c = sqlx::SqliteConnection::connect(&format!("{}?mode=ro", self.url))
                .await
                .expect("open");
            let r: Vec<(i64, i64)> = sqlx::query_as(q).fetch_all(&mut c).await.expect("count");
            let _ = c.close().await;
            r
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `dmpushd` that serves as the gateway under test: this build's, or the one named by
/// `DMPUSHD_BENCH_GATEWAY` — to compare two builds in one run on the same machine (an A/B of a
/// change, e.g. a binary built from the commit before it) while the peers (`dmpushd sim`, the
/// receivers) stay this build's.
pub fn gateway_bin() -> std::ffi::OsString {
    std::env::var_os("DMPUSHD_BENCH_GATEWAY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_dmpushd").into())
}

/// `dmpushd sim` as the SMSC (with delivery receipts), on a free port; its events are discarded.
pub fn spawn_smsc() -> (Gateway, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_dmpushd"))
        .args(["sim", "--smpp"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dmpushd sim starts");
    wait_listening(port, "simulated SMSC");
    (
        Gateway {
            child,
            base: String::new(),
        },
        port,
    )
}

/// What a [`CountingSmsc`] has seen (from `dmpushd sim`'s JSON event lines).
#[derive(Default)]
pub struct SmscCounts {
    pub binds: u64,
    pub submits: u64,
    pub first_submit: Option<Instant>,
    pub last_submit: Option<Instant>,
}

/// `dmpushd sim` as the SMSC with its event lines read: every `submit_sm` is counted and
/// timestamped as its line arrives (the simulator flushes one line per event).
pub struct CountingSmsc {
    pub process: Gateway,
    pub port: u16,
    pub counts: Arc<Mutex<SmscCounts>>,
}

impl CountingSmsc {
    pub fn spawn(extra_args: &[&str]) -> CountingSmsc {
        use std::io::BufRead;
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dmpushd"))
            .args(["sim", "--smpp"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dmpushd sim starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let counts: Arc<Mutex<SmscCounts>> = Default::default();
        let c = counts.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let now = Instant::now();
                if line.contains(r#""event":"submit_sm""#) {
                    let mut g = c.lock().unwrap();
                    g.submits += 1;
                    g.first_submit.get_or_insert(now);
                    g.last_submit = Some(now);
                } else if line.contains(r#""event":"bind""#) {
                    c.lock().unwrap().binds += 1;
                }
            }
        });
        wait_listening(port, "simulated SMSC");
        CountingSmsc {
            process: Gateway {
                child,
                base: String::new(),
            },
            port,
            counts,
        }
    }

    /// (binds, submit_sm, first, last).
    pub fn snapshot(&self) -> (u64, u64, Option<Instant>, Option<Instant>) {
        let g = self.counts.lock().unwrap();
        (g.binds, g.submits, g.first_submit, g.last_submit)
    }
}

/// How a benchmark gateway is configured beyond the database and replica name.
#[derive(Default)]
pub struct GatewayOptions {
    /// The CA the HTTP binding trusts (the receiver's).
    pub ca: Option<PathBuf>,
    /// SMPP port of `dmpushd sim`: a WAP binding to it.
    pub smsc: Option<u16>,
    /// Port of a plain-HTTP webhook receiver: the tenant sends webhooks to it.
    pub hooks: Option<u16>,
    /// Extra `key = value` lines in `[store]` (e.g. retention).
    pub store_extra: String,
    /// Extra `key = value` lines in `[queue]`.
    pub queue_extra: String,
    /// Run the gateway on this CPU only (`taskset -c`), so that replicas each get their own core
    /// (issue 14 target 4); `None` = wherever the scheduler puts it.
    pub cpu: Option<usize>,
}

pub fn spawn_gateway(dir: &Path, name: &str, db_url: &str, o: &GatewayOptions) -> Gateway {
    let port = free_port();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            // The benches poll /metrics many times a second for progress; a Prometheus scrapes
            // every 15 s or so. Counting pushes per state at the benches' pace (the default
            // refresh is 1 s) was ~12 % of PostgreSQL's CPU in the SMS run: load no deployment
            // puts on the database being measured.
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_seconds = 2\n\
             queue_depth_refresh_seconds = 15\n\
             [store]\nurl = \"{db_url}\"\n{}\
             [queue]\nreplica_id = \"{name}\"\n{}\
             [[tenants]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\n{}\
             [bindings.http]\nallow_targets = [\"127.0.0.0/8\"]\n{}\
             {}[log]\nlevel = \"warn\"\n",
            o.store_extra,
            o.queue_extra,
            o.hooks.map_or(String::new(), |p| format!(
                "webhook_url = \"http://127.0.0.1:{p}/hooks\"\n\
                 webhook_secret = \"whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ==\"\n\
                 [webhooks]\nallow_targets = [\"127.0.0.0/8\"]\n"
            )),
            o.ca.as_ref().map_or(String::new(), |ca| format!(
                "ca_file = \"{}\"\n",
                ca.display()
            )),
            // Window 50: what Kannel's PPG gets in the e2e comparison (`max-pending-submits`
            // in benches/wap_kannel/ppg.conf.in), so both meet the simulator alike.
            o.smsc.map_or(String::new(), |p| format!(
                "[[bindings.wap.smsc]]\nname = \"sim\"\nhost = \"127.0.0.1\"\nport = {p}\n\
                 system_id = \"bench\"\npassword = \"bench\"\nsource_addr = \"DMSERVER\"\n\
                 window = 50\n"
            ))
        ),
    )
    .expect("write config");
    let mut cmd = match o.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(gateway_bin());
            c
        }
        None => Command::new(gateway_bin()),
    };
    let child = cmd
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dmpushd starts");
    Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

pub fn http_client() -> reqwest::Client {
    // reqwest is built without a default rustls provider.
    dmpushd::tls::install_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{base} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers `{prefix}{0..n}`, each with an HTTPS binding to `url_of(i)`.
pub async fn register_http_devices(
    http: &reqwest::Client,
    base: &str,
    prefix: &str,
    n: usize,
    url_of: impl Fn(usize) -> String,
) {
    for d in 0..n {
        let r = http
            .put(format!("{base}/v1/devices/{prefix}{d}"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"bindings": [{"type": "http", "url": url_of(d)}]}))
            .send()
            .await
            .expect("register device");
        assert!(
            r.status().is_success(),
            "device registration: {}",
            r.status()
        );
    }
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The wrk script: rotates over `{prefix}0..devices`; every push due at `not_before`.
pub fn wrk_script(
    dir: &Path,
    prefix: &str,
    devices: usize,
    not_before: &str,
    ttl_seconds: u64,
) -> PathBuf {
    let path = dir.join("push.lua");
    // wrk's Lua string literal: the JSON escapes need one more level of escaping.
    let body = DM_BODY_JSON.replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(
        &path,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\n\
             local n = 0\n\
             request = function()\n\
               n = n + 1\n\
               return wrk.format(nil, nil, nil, '{{\"device\":\"{prefix}' .. (n % {devices}) .. \
             '\",\"not_before\":\"{not_before}\",\"ttl_seconds\":{ttl_seconds},\"body\":\"{body}\"}}')\n\
             end\n"
        ),
    )
    .expect("write wrk script");
    path
}

#[derive(Debug, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub secs: f64,
    pub non_2xx: u64,
    pub per_sec: f64,
    pub p50: String,
    pub p99: String,
}

pub fn parse_wrk(out: &str) -> WrkResult {
    let mut r = WrkResult {
        p50: "?".into(),
        p99: "?".into(),
        ..WrkResult::default()
    };
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("50%") {
            r.p50 = rest.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("99%") {
            r.p99 = rest.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = rest.trim().parse().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            r.per_sec = rest.trim().parse().unwrap_or(0.0);
        } else if line.contains(" requests in ") {
            // "123456 requests in 10.01s, 27.0MB read"
            let mut it = line.split(" requests in ");
            r.requests = it.next().and_then(|n| n.trim().parse().ok()).unwrap_or(0);
            if let Some(s) = it.next().and_then(|t| t.split('s').next()) {
                r.secs = s.parse().unwrap_or(0.0);
            }
        }
    }
    r
}

/// Starts wrk (Debian package `wrk`) against `url` for `secs`; `script` may be None (GET).
pub fn start_wrk(
    threads: usize,
    connections: usize,
    secs: u64,
    script: Option<&Path>,
    url: &str,
) -> Child {
    let mut c = Command::new("wrk");
    c.args([
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        "--latency".into(),
    ]);
    if let Some(s) = script {
        c.arg("-s").arg(s);
    }
    c.arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("wrk is installed (apt-get install wrk)")
}

pub fn finish_wrk(w: Child) -> WrkResult {
    let out = w.wait_with_output().expect("wrk finished");
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

pub async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else {
        return String::new();
    };
    r.text().await.unwrap_or_default()
}

/// The value of the first sample whose line starts with `name` (labels included, in order).
pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    metric_in(&metrics_text(http, base).await, name)
}

/// A Prometheus histogram read from `/metrics`: cumulative buckets, sum and count.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// `name` without suffix; `labels` as they appear inside the braces before `le`, e.g.
    /// `op="claim"` (empty for none).
    pub fn read(text: &str, name: &str, labels: &str) -> Histogram {
        let mut h = Histogram::default();
        let sep = if labels.is_empty() { "" } else { "," };
        let bucket_prefix = format!("{name}_bucket{{{labels}{sep}le=\"");
        let (sum_name, count_name) = if labels.is_empty() {
            (format!("{name}_sum"), format!("{name}_count"))
        } else {
            (
                format!("{name}_sum{{{labels}}}"),
                format!("{name}_count{{{labels}}}"),
            )
        };
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix(&bucket_prefix)
                && let Some((le, v)) = rest.split_once("\"}")
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                h.buckets.push((le, v.trim().parse().unwrap_or(0.0)));
            } else if let Some(v) = l.strip_prefix(&sum_name) {
                h.sum = v.trim().parse().unwrap_or(0.0);
            } else if let Some(v) = l.strip_prefix(&count_name) {
                h.count = v.trim().parse().unwrap_or(0.0);
            }
        }
        h
    }

    /// The observations between `earlier` and `self`.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, v)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |b| b.1);
                    (*le, v - before)
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1.0)
    }

    /// The upper bound of the bucket holding quantile `q` (Prometheus buckets are coarse).
    pub fn quantile_bound(&self, q: f64) -> f64 {
        let want = q * self.count;
        self.buckets
            .iter()
            .find(|(_, v)| *v >= want)
            .map_or(f64::INFINITY, |b| b.0)
    }
}

/// An HTTPS device endpoint that only counts requests (answers 204): unlike the test receiver it
/// keeps nothing, so long benchmark runs do not grow the benchmark's own memory.
pub struct CountingReceiver {
    pub port: u16,
    pub ca_file: PathBuf,
    count: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl CountingReceiver {
    pub async fn start(
        pki: (
            String,
            rustls::pki_types::CertificateDer<'static>,
            rustls::pki_types::PrivateKeyDer<'static>,
        ),
    ) -> CountingReceiver {
        use hyper::{Request, Response, service::service_fn};
        dmpushd::tls::install_provider();
        let (ca_pem, leaf, key) = pki;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).expect("write CA");
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf], key)
            .expect("TLS config");
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let c = c.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let _ = req.into_body().collect().await;
                            c.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(204)
                                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
        CountingReceiver {
            port,
            ca_file,
            count,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// `uptime`'s load averages, for the figures' context.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Now, as the API's RFC 3339 (a `not_before` that is due at once).
pub fn now_rfc3339() -> String {
    dmpushd::api::rfc3339(unix_ms())
}
