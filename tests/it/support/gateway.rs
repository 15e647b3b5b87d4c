//! Runs the gateway in-process on a random port with a temporary SQLite file, and talks to its
//! REST API like a DM server would.

use std::time::{Duration, Instant};

use dmpushd::{
    app::App,
    config::{Settings, TenantConfig},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const TOKEN_A: &str = "token-tenant-a";
pub const TOKEN_B: &str = "token-tenant-b";

/// Settings for tests: two tenants, loopback targets allowed, fast retries.
pub fn settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".parse().unwrap();
    s.store.url = format!("sqlite://{}/dmpushd.db", dir.display());
    s.tenants = vec![
        TenantConfig {
            name: "a".into(),
            token_sha256: None,
            token: Some(TOKEN_A.into()),
            ..Default::default()
        },
        TenantConfig {
            name: "b".into(),
            token_sha256: None,
            token: Some(TOKEN_B.into()),
            ..Default::default()
        },
    ];
    // Loopback peers: every binding must be told they are allowed (DESIGN §10.3).
    for allow in [
        &mut s.bindings.http.allow_targets,
        &mut s.bindings.wap.allow_targets,
        &mut s.bindings.sip.allow_targets,
        &mut s.bindings.obex.allow_targets,
    ] {
        *allow = vec!["127.0.0.0/8".into()];
    }
    s.bindings.http.timeout_seconds = 5;
    s.queue.backoff_base_ms = 200;
    s.queue.backoff_max_ms = 1000;
    s.queue.poll_interval_ms = 100;
    s.server.shutdown_grace_seconds = 2;
    s.log.format = "text".into();
    s.log.level = "warn".into();
    s
}

pub struct Gateway {
    pub base: String,
    pub http: reqwest::Client,
    pub store: std::sync::Arc<dyn dmpushd::store::Store>,
    /// The gateway's own metrics, for tests that read them without scraping `/metrics`.
    #[allow(dead_code)] // no test reads them directly today
    pub metrics: dmpushd::metrics::Metrics,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Gateway {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        Self::start_with(s, Some(dir)).await
    }

    pub async fn start_with(settings: Settings, dir: Option<tempfile::TempDir>) -> Self {
        dmpushd::tls::install_provider();
        let app = App::build(settings).await.expect("gateway builds");
        let addr = app.local_addr().unwrap();
        let store = app.store.clone();
        let metrics = app.metrics.clone();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            store,
            metrics,
            shutdown,
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Raw request (for malformed bodies and headers).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, String, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await.unwrap();
        (
            status,
            ct,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn put_device(&self, token: &str, id: &str, body: Value) {
        let (s, b) = self
            .call("PUT", &format!("/v1/devices/{id}"), Some(token), Some(body))
            .await;
        assert!(s == 201 || s == 200, "PUT device: {s} {b}");
    }

    /// Submits a push and returns its id (asserting 202).
    pub async fn push(&self, token: &str, body: Value) -> String {
        let (s, b) = self
            .call("POST", "/v1/pushes", Some(token), Some(body))
            .await;
        assert_eq!(s, 202, "POST /v1/pushes: {b}");
        b["id"].as_str().unwrap().to_owned()
    }

    pub async fn get_push(&self, token: &str, id: &str) -> Value {
        let (s, b) = self
            .call("GET", &format!("/v1/pushes/{id}"), Some(token), None)
            .await;
        assert_eq!(s, 200, "GET push: {b}");
        b
    }

    /// Polls until the push is in a final state (or panics after `timeout`).
    pub async fn wait_final(&self, token: &str, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.get_push(token, id).await;
            let st = p["state"].as_str().unwrap_or("");
            if [
                "delivered",
                "failed",
                "expired",
                "cancelled",
                "superseded",
                "unconfirmed",
            ]
            .contains(&st)
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "push {id} not final in {timeout:?}: {p}"
            );
            self.store.wakeup().notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A push body for an XML DM message to a registered device.
pub fn xml_push(device: &str, xml: &str) -> Value {
    json!({"device": device, "content_type": "application/vnd.syncml.dm+xml", "body": xml})
}

/// Reads one sample of a metric with labels from the text exposition.
pub fn metric(text: &str, name_with_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_with_labels) && l[name_with_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
