//! Readiness and administration (issue 13 acceptance 6, DESIGN §10.4): `/readyz` stays 200
//! whatever the bearers do; an operator suspends an SMSC and its pushes wait (uncounted) or fall
//! back under `auto`, never fail; resume and they go; `GET /v1/admin/status` shows it; tenant
//! tokens get 404 on `/v1/admin/…` and admin tokens see no tenant's pushes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    self,
    gateway::{Gateway, TOKEN_A, settings},
    process::all_bearers_ok,
    wap::Sim,
};
use dmpushd::{
    binding::wap::WapConfig,
    config::{AdminConfig, Settings, TenantConfig},
};

const ADMIN: &str = "admin-token-ops";
const MSISDN: &str = "+491701234567";

fn with_admin(mut s: Settings) -> Settings {
    s.admins = vec![AdminConfig {
        name: "ops".into(),
        token_sha256: None,
        token: Some(ADMIN.into()),
    }];
    s
}

fn wap_config(port: u16) -> WapConfig {
    let toml = format!(
        "enabled = true\nsuspended_retry_ms = 300\n[[smsc]]\nname = \"sim\"\nhost = \"127.0.0.1\"\nport = {port}\nsystem_id = \"gw\"\npassword = \"pw\"\n"
    );
    config::Config::builder()
        .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

fn start_sim(dir: &std::path::Path) -> Option<Sim> {
    support::require_tool("node")?;
    Some(Sim::start(
        dir,
        &[
            "--system-id",
            "gw",
            "--password",
            "pw",
            "--dlr-delay-ms",
            "20",
        ],
    ))
}

async fn wait_bound(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = gw.call("GET", "/readyz", None, None).await;
        if s == 200 && all_bearers_ok(&b) {
            return;
        }
        assert!(Instant::now() < deadline, "SMSC never bound: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn smsc_status(status: &Value) -> Value {
    status["bindings"]["wap"]["smscs"][0].clone()
}

/// Events of `p` in `state` whose detail mentions the suspension.
fn suspended_waits(p: &Value) -> usize {
    p["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["state"] == "retry_wait" && e["detail"].as_str().unwrap_or("").contains("suspended")
        })
        .count()
}

async fn wait_for(gw: &Gateway, id: &str, what: &str, secs: u64, ok: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = gw.get_push(TOKEN_A, id).await;
        if ok(&p) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn suspended_smsc_holds_pushes_without_failing_them_and_resume_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(sim) = start_sim(dir.path()) else {
        return;
    };
    let mut s = with_admin(settings(dir.path()));
    s.bindings.wap = wap_config(sim.port);
    s.bindings.wap.allow_targets = vec!["127.0.0.0/8".into()];
    // Two attempts: were a suspended wait counted as an attempt, the push would fail after the
    // second wait; it must not.
    s.queue.max_attempts = 2;
    let gw = Gateway::start_with(s, None).await;
    wait_bound(&gw).await;

    let (st, b) = gw
        .call("POST", "/v1/admin/smscs/sim/suspend", Some(ADMIN), None)
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["suspended"], true);

    // Readiness is about accepting pushes, not about the bearer.
    let (st, ready) = gw.call("GET", "/readyz", None, None).await;
    assert_eq!(st, 200, "{ready}");
    let (st, status) = gw.call("GET", "/v1/admin/status", Some(ADMIN), None).await;
    assert_eq!(st, 200, "{status}");
    let smsc = smsc_status(&status);
    assert_eq!(smsc["name"], "sim", "{status}");
    assert_eq!(smsc["suspended"], true, "{status}");
    assert_eq!(smsc["bound"], true, "{status}");
    assert_eq!(smsc["window"], 10, "{status}");

    let id = gw
        .push(
            TOKEN_A,
            json!({"bindings": [{"type": "wap", "msisdn": MSISDN}], "binding": "wap",
                   "content_type": "application/vnd.syncml.notification", "body_base64": "AAAA"}),
        )
        .await;
    // Three suspended waits (more than max_attempts) and still waiting.
    wait_for(&gw, &id, "push never waited three times", 20, |p| {
        suspended_waits(p) >= 3 && p["state"] == "retry_wait"
    })
    .await;
    // Waiting, and none of the waits counted as an attempt.
    let p = gw.get_push(TOKEN_A, &id).await;
    assert!(
        ["retry_wait", "sending"].contains(&p["state"].as_str().unwrap()),
        "{p}"
    );
    if p["state"] == "retry_wait" {
        assert_eq!(p["attempts"], 0, "{p}");
    }
    assert!(
        sim.events_of("submit_sm").is_empty(),
        "nothing may reach a suspended SMSC"
    );
    let (_, status) = gw.call("GET", "/v1/admin/status", Some(ADMIN), None).await;
    assert!(
        status["bindings"]["wap"]["outcomes"]["deferred"]
            .as_u64()
            .unwrap()
            >= 3,
        "{status}"
    );
    let (st, _) = gw.call("GET", "/readyz", None, None).await;
    assert_eq!(st, 200);

    let (st, b) = gw
        .call("POST", "/v1/admin/smscs/sim/resume", Some(ADMIN), None)
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["suspended"], false);
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(20)).await;
    assert_eq!(p["state"], "delivered", "{p}");
    assert_eq!(sim.events_of("submit_sm").len(), 1);
    let (_, status) = gw.call("GET", "/v1/admin/status", Some(ADMIN), None).await;
    assert_eq!(smsc_status(&status)["suspended"], false, "{status}");
    assert!(
        smsc_status(&status)["submits_ok"].as_u64().unwrap() >= 1,
        "{status}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn under_auto_a_suspended_smsc_falls_back_to_the_next_binding() {
    let dir = tempfile::tempdir().unwrap();
    let Some(sim) = start_sim(dir.path()) else {
        return;
    };
    let device = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = device.local_addr().unwrap();
    let mut s = with_admin(settings(dir.path()));
    s.bindings.wap = wap_config(sim.port);
    s.bindings.wap.allow_targets = vec!["127.0.0.0/8".into()];
    let gw = Gateway::start_with(s, None).await;
    wait_bound(&gw).await;
    let (st, _) = gw
        .call("POST", "/v1/admin/smscs/sim/suspend", Some(ADMIN), None)
        .await;
    assert_eq!(st, 200);
    let id = gw
        .push(
            TOKEN_A,
            json!({"bindings": [{"type": "wap", "msisdn": MSISDN},
                                {"type": "wap", "bearer": "udp", "address": addr.to_string()}],
                   "content_type": "application/vnd.syncml.notification", "body_base64": "AAAA"}),
        )
        .await;
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(10), device.recv(&mut buf))
        .await
        .expect("the fallback datagram within 10 s")
        .unwrap();
    assert!(n > 0);
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(10)).await;
    assert_eq!(p["state"], "unconfirmed", "{p}");
    let details: Vec<&str> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap_or(""))
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("suspended") && d.contains("falling back")),
        "{p}"
    );
    assert!(sim.events_of("submit_sm").is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn admin_routes_are_404_to_tenants_and_admins_see_no_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(with_admin(settings(dir.path())), Some(dir)).await;
    let id = gw
        .push(
            TOKEN_A,
            json!({"bindings": [{"type": "wap", "bearer": "udp", "address": "127.0.0.1:9"}],
                   "content_type": "application/vnd.syncml.notification", "body_base64": "AAAA"}),
        )
        .await;
    for (method, path) in [
        ("GET", "/v1/admin/status"),
        ("POST", "/v1/admin/smscs/sim/suspend"),
        ("POST", "/v1/admin/smscs/sim/resume"),
    ] {
        for token in [Some(TOKEN_A), None, Some("not-a-token")] {
            let (st, b) = gw.call(method, path, token, None).await;
            assert_eq!(st, 404, "{method} {path} with {token:?}: {b}");
        }
    }
    // The admin token is no tenant's: tenant routes do not know it.
    for path in ["/v1/pushes".to_owned(), format!("/v1/pushes/{id}")] {
        let (st, b) = gw.call("GET", &path, Some(ADMIN), None).await;
        assert_eq!(st, 401, "{path}: {b}");
    }
    let (st, b) = gw
        .call("POST", "/v1/admin/smscs/nope/suspend", Some(ADMIN), None)
        .await;
    assert_eq!(st, 404, "{b}");
    let (st, status) = gw.call("GET", "/v1/admin/status", Some(ADMIN), None).await;
    assert_eq!(st, 200, "{status}");
    assert!(status["replica"].as_str().is_some_and(|r| !r.is_empty()));
    // SQLite: one process owns the store, no replica table.
    assert_eq!(status["replicas"], json!([]));
    let depth: u64 = status["queue_depth"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(depth, 1, "{status}");
    assert!(
        status["bindings"]["wap"]["outcomes"].is_object(),
        "{status}"
    );
    let (_, doc) = gw.call("GET", "/openapi.json", None, None).await;
    for path in [
        "/v1/admin/status",
        "/v1/admin/smscs/{name}/suspend",
        "/v1/admin/smscs/{name}/resume",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} not in /openapi.json"
        );
    }
    gw.stop().await;
}

#[test]
fn an_admin_token_that_is_also_a_tenants_is_refused() {
    let mut s = with_admin(Settings::default());
    s.tenants = vec![TenantConfig {
        name: "a".into(),
        token: Some(ADMIN.into()),
        ..Default::default()
    }];
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("admins[ops]"), "{e}");
    s.admins[0].token = None;
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("needs token_sha256"), "{e}");
    s.admins[0].token_sha256 = Some("ab".into());
    assert!(s.validate().is_err());
}

#[tokio::test]
async fn readiness_needs_current_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = dmpushd::store::StoreOptions {
        url: format!("sqlite://{}/m.db", dir.path().display()),
        auto_migrate: false,
        ..Default::default()
    };
    {
        let store = dmpushd::store::open(&opts).await.unwrap();
        assert!(!store.migrations_current().await.unwrap());
    }
    opts.auto_migrate = true;
    let store = dmpushd::store::open(&opts).await.unwrap();
    assert!(store.migrations_current().await.unwrap());
}

#[tokio::test]
async fn postgres_status_lists_replicas_and_readiness_needs_migrations() {
    let Some(db) = crate::support::store::PgDb::create().await else {
        return;
    };
    // An empty database: not migrated, so not current (and no error).
    let mut opts = db.options();
    opts.auto_migrate = false;
    {
        let store = dmpushd::store::open(&opts).await.unwrap();
        assert!(!store.migrations_current().await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = with_admin(settings(dir.path()));
    s.store.url = db.url.clone();
    s.queue.replica_id = Some("replica-one".into());
    let gw = Gateway::start_with(s, Some(dir)).await;
    let (st, ready) = gw.call("GET", "/readyz", None, None).await;
    assert_eq!(st, 200, "{ready}");
    assert_eq!(ready["migrations"], "current", "{ready}");
    let (st, status) = gw.call("GET", "/v1/admin/status", Some(ADMIN), None).await;
    assert_eq!(st, 200, "{status}");
    assert_eq!(status["replica"], "replica-one", "{status}");
    let ids: Vec<&str> = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["replica-one"], "{status}");
    gw.stop().await;
}
