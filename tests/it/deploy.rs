//! deploy/ against the running gateway (issue 13 acceptance 5): a real Prometheus (Debian
//! `prometheus`) scrapes a gateway with a bound SMSC and a delivered push, and every metric the
//! Grafana dashboard and the alert rules query exists in Prometheus. (Syntax and alert logic are
//! checked by scripts/check-deploy.sh with promtool.)

use std::{
    collections::BTreeSet,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::support::{
    self, free_port,
    gateway::{Gateway, TOKEN_A, settings},
    process::all_bearers_ok,
    repo_path,
    wap::Sim,
};

/// Every `dmpushd_…` series name queried in `file`.
fn queried_metrics(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_path(file)).unwrap();
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("dmpushd_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(text[start..end].to_owned());
        i = end;
    }
    names
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn prometheus_scraping_a_gateway_finds_every_metric_the_dashboard_and_alerts_query() {
    let Some(prom) = support::require_tool("prometheus") else {
        return;
    };
    if support::require_tool("node").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--system-id",
            "gw",
            "--password",
            "pw",
            "--dlr-delay-ms",
            "20",
        ],
    );
    let mut s = settings(dir.path());
    s.bindings.wap = config::Config::builder()
        .add_source(config::File::from_str(
            &format!(
                "enabled = true\n[[smsc]]\nname = \"sim\"\nhost = \"127.0.0.1\"\nport = {}\nsystem_id = \"gw\"\npassword = \"pw\"\n",
                sim.port
            ),
            config::FileFormat::Toml,
        ))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    let gw = Gateway::start_with(s, None).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, b) = gw.call("GET", "/readyz", None, None).await;
        if st == 200 && all_bearers_ok(&b) {
            break;
        }
        assert!(Instant::now() < deadline, "SMSC never bound: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One push through SMPP with a receipt: the receipt and submit series exist after it.
    let id = gw
        .push(
            TOKEN_A,
            json!({"bindings": [{"type": "wap", "msisdn": "+491701234567"}],
                   "content_type": "application/vnd.syncml.notification", "body_base64": "AAAA"}),
        )
        .await;
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(20)).await;
    assert_eq!(p["state"], "delivered", "{p}");
    // Scraping /metrics refreshes the queue depth (the scrape itself does too).
    let _ = gw.metrics_text().await;

    let target = gw.base.trim_start_matches("http://").to_owned();
    let port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: dmpushd\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let _prom = Prometheus(
        Command::new(prom)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    let mut wanted = queried_metrics("deploy/grafana/dmpushd.json");
    wanted.extend(queried_metrics("deploy/prometheus/alerts.yml"));
    assert!(wanted.len() >= 12, "{wanted:?}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names: BTreeSet<String> = match http
            .get(format!(
                "http://127.0.0.1:{port}/api/v1/label/__name__/values"
            ))
            .send()
            .await
        {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["data"].as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        let missing: Vec<&String> = wanted.difference(&names).collect();
        if missing.is_empty() && names.contains("up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw {missing:?} (it has {} names)",
            names.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    gw.stop().await;
}
