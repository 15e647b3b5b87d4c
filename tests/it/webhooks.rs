//! Webhooks (issue 11): the outbox on both stores, and the gateway end to end against local
//! plain-HTTP receivers. Every webhook a test receives is verified with the PyPI
//! `standardwebhooks` package (tests/peers/webhooks/verify.py), an implementation that is not ours.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, net::TcpListener};

use crate::support::{
    gateway::{Gateway, TOKEN_A, TOKEN_B, settings, xml_push},
    receiver::Receiver as DeviceReceiver,
    repo_path,
    store::{T0, WAP, push},
};
use dmpushd::{
    binding::{BindingKind, NextHopRef, Receipt},
    store::{
        Claimed, Completion, NewPush, Next, PushState, Store,
        outbox::{AttemptRecord, AttemptResult, ClaimRequest, OutboxEvent},
    },
};

const SECRET: &str = "whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm";
const DM_XML: &str = "<SyncML><SyncBody><Final/></SyncBody></SyncML>";

// --- a webhook receiver ----------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Hook {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Hook {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct HookShared {
    got: Vec<Hook>,
    script: VecDeque<u16>,
    in_flight: usize,
    max_in_flight: usize,
}

/// Plain HTTP on loopback; answers from `script` (then 204) after `delay`.
struct Hooks {
    addr: SocketAddr,
    shared: Arc<Mutex<HookShared>>,
}

impl Hooks {
    async fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared: Arc<Mutex<HookShared>> = Arc::default();
        let sh = shared.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let sh = sh.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let sh = sh.clone();
                        async move {
                            let at = Instant::now();
                            {
                                let mut g = sh.lock().unwrap();
                                g.in_flight += 1;
                                g.max_in_flight = g.max_in_flight.max(g.in_flight);
                            }
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let mut g = sh.lock().unwrap();
                            g.in_flight -= 1;
                            g.got.push(Hook {
                                at,
                                path: parts.uri.path().to_owned(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect(),
                                body,
                            });
                            let status = g.script.pop_front().unwrap_or(204);
                            drop(g);
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, shared }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    fn script(&self, statuses: &[u16]) {
        self.shared.lock().unwrap().script.extend(statuses);
    }

    fn clear_script(&self) {
        self.shared.lock().unwrap().script.clear();
    }

    fn max_in_flight(&self) -> usize {
        self.shared.lock().unwrap().max_in_flight
    }

    fn got(&self) -> Vec<Hook> {
        self.shared.lock().unwrap().got.clone()
    }

    async fn wait(&self, n: usize, timeout: Duration) -> Vec<Hook> {
        let deadline = Instant::now() + timeout;
        loop {
            let g = self.got();
            if g.len() >= n {
                return g;
            }
            assert!(
                Instant::now() < deadline,
                "webhook receiver got {} of {n} requests in {timeout:?}: {:?}",
                g.len(),
                g.iter()
                    .map(|h| h.json()["type"].clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Verdicts of the `standardwebhooks` package for `(headers, body)` pairs, or `None` (skip)
/// when python3 or the package is missing and `DMPUSHD_REQUIRE_PEERS` is not `1`.
async fn standardwebhooks_verify(
    secret: &str,
    reqs: &[(Vec<(String, String)>, String)],
) -> Option<Vec<String>> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("DMPUSHD_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("python3 standardwebhooks missing; run scripts/install.d/webhooks.sh");
        }
        eprintln!("SKIP: python3 standardwebhooks not installed (scripts/install.d/webhooks.sh)");
        return None;
    }
    let mut child = tokio::process::Command::new("python3")
        .arg(repo_path("tests/peers/webhooks/verify.py"))
        .arg(secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for (headers, body) in reqs {
        let h: serde_json::Map<String, Value> = headers
            .iter()
            .filter(|(k, _)| k.starts_with("webhook-"))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        input.push_str(&json!({"headers": h, "body": body}).to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

/// Every hook verifies with `standardwebhooks`; the first one, tampered, does not.
async fn assert_verified(hooks: &[Hook]) {
    let mut reqs: Vec<_> = hooks
        .iter()
        .map(|h| {
            (
                h.headers.clone(),
                String::from_utf8(h.body.to_vec()).unwrap(),
            )
        })
        .collect();
    let mut tampered = reqs[0].clone();
    tampered.1 = tampered.1.replacen("push.", "push.x", 1);
    reqs.push(tampered);
    let Some(v) = standardwebhooks_verify(SECRET, &reqs).await else {
        return;
    };
    assert_eq!(v.len(), reqs.len(), "{v:?}");
    for (i, verdict) in v[..hooks.len()].iter().enumerate() {
        assert_eq!(
            verdict, "ok",
            "webhook {i} failed verification: {:?}",
            hooks[i]
        );
    }
    assert!(
        v[hooks.len()].starts_with("fail"),
        "tampered body verified: {v:?}"
    );
}

// --- gateway set-up --------------------------------------------------------------------------

/// Tenant A signs with SECRET (and has `a_url` as its webhook_url); tenant B has its own
/// secret only when `b_secret`. Loopback webhook targets allowed when `allow_loopback`.
async fn gateway(
    device: &DeviceReceiver,
    a_url: Option<String>,
    allow_loopback: bool,
    tweak: impl FnOnce(&mut dmpushd::config::Settings),
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.http.ca_file = Some(device.ca_file.clone());
    s.tenants[0].webhook_secret = Some(SECRET.into());
    s.tenants[0].webhook_url = a_url;
    s.tenants[1].webhook_secret = Some(SECRET.into());
    if allow_loopback {
        s.webhooks.allow_targets = vec!["127.0.0.0/8".into()];
    }
    tweak(&mut s);
    Gateway::start_with(s, Some(dir)).await
}

async fn register(gw: &Gateway, token: &str, device: &DeviceReceiver) {
    gw.put_device(
        token,
        "dev-1",
        json!({"bindings": [{"type": "http", "url": device.url("/dm"), "framing": "direct"}]}),
    )
    .await;
}

fn push_with_callback(url: &str) -> Value {
    let mut p = xml_push("dev-1", DM_XML);
    p["callback_url"] = json!(url);
    p
}

// --- end to end ------------------------------------------------------------------------------

#[tokio::test]
async fn delivered_push_sends_a_signed_webhook_with_the_push_as_data() {
    let device = DeviceReceiver::start(Duration::ZERO).await;
    let hooks = Hooks::start(Duration::ZERO).await;
    let gw = gateway(&device, Some(hooks.url("/tenant-a")), true, |_| {}).await;
    register(&gw, TOKEN_A, &device).await;
    // One via the tenant's webhook_url, one via callback_url (which wins).
    let a = gw.push(TOKEN_A, xml_push("dev-1", DM_XML)).await;
    let b = gw
        .push(TOKEN_A, push_with_callback(&hooks.url("/cb")))
        .await;
    gw.wait_final(TOKEN_A, &a, Duration::from_secs(10)).await;
    gw.wait_final(TOKEN_A, &b, Duration::from_secs(10)).await;
    let got = hooks.wait(2, Duration::from_secs(10)).await;
    let by_id = |id: &str| {
        got.iter()
            .find(|h| h.json()["data"]["id"] == id)
            .unwrap()
            .clone()
    };
    let (ha, hb) = (by_id(&a), by_id(&b));
    assert_eq!(ha.path, "/tenant-a");
    assert_eq!(hb.path, "/cb");
    let body = ha.json();
    assert_eq!(body["type"], "push.delivered");
    assert!(
        time::OffsetDateTime::parse(
            body["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    // data is the push as GET shows it, as of the event (so without later webhook rows).
    let mut view = gw.get_push(TOKEN_A, &a).await;
    view["events"]
        .as_array_mut()
        .unwrap()
        .retain(|e| !e["detail"].as_str().unwrap().starts_with("webhook "));
    assert_eq!(body["data"], view);
    assert!(ha.header("webhook-id").starts_with("msg_"));
    assert!(ha.header("webhook-signature").starts_with("v1,"));
    assert_ne!(ha.header("webhook-id"), hb.header("webhook-id"));
    // Our own verifier agrees too.
    let secret = dmpushd::webhook::Secret::parse(SECRET).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    secret
        .verify(
            ha.header("webhook-id"),
            ha.header("webhook-timestamp"),
            &ha.body,
            ha.header("webhook-signature"),
            now,
        )
        .unwrap();
    assert_verified(&got).await;
    // The attempt is on the timeline (status, no URL).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = gw.get_push(TOKEN_A, &a).await;
        let rows: Vec<String> = p["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                e["detail"]
                    .as_str()
                    .filter(|d| d.starts_with("webhook "))
                    .map(str::to_owned)
            })
            .collect();
        if let Some(r) = rows.first() {
            assert!(
                r.contains("push.delivered") && r.contains("HTTP 204"),
                "{r}"
            );
            assert!(!r.contains("127.0.0.1"), "{r}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no webhook row on the timeline: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = gw.metrics_text().await;
    assert!(
        crate::support::gateway::metric(
            &m,
            "dmpushd_webhook_deliveries_total{outcome=\"delivered\"}"
        ) >= 2.0,
        "{m}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn receiver_answering_503_gets_the_same_webhook_id_later_with_backoff() {
    let device = DeviceReceiver::start(Duration::ZERO).await;
    let hooks = Hooks::start(Duration::ZERO).await;
    hooks.script(&[503, 503]);
    let gw = gateway(&device, Some(hooks.url("/a")), true, |_| {}).await;
    register(&gw, TOKEN_A, &device).await;
    let id = gw.push(TOKEN_A, xml_push("dev-1", DM_XML)).await;
    gw.wait_final(TOKEN_A, &id, Duration::from_secs(10)).await;
    let got = hooks.wait(3, Duration::from_secs(20)).await;
    let ids: Vec<&str> = got.iter().map(|h| h.header("webhook-id")).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    // Equal jitter on a 2 s base: the first retry 1–2 s after the first attempt, the second
    // 2–4 s after that (plus polling and scheduling slack).
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(
        gap1 >= Duration::from_millis(950) && gap1 <= Duration::from_millis(3_000),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1_950) && gap2 <= Duration::from_millis(5_000),
        "{gap2:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hooks.got().len(), 3, "a 2xx ends the retries");
    assert_verified(&got).await;
    gw.stop().await;
}

#[tokio::test]
async fn loopback_callback_refused_by_default_and_allowed_when_configured() {
    let device = DeviceReceiver::start(Duration::ZERO).await;
    let gw = gateway(&device, None, false, |_| {}).await;
    register(&gw, TOKEN_A, &device).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://10.0.0.1/x",
    ] {
        let (s, b) = gw
            .call(
                "POST",
                "/v1/pushes",
                Some(TOKEN_A),
                Some(push_with_callback(url)),
            )
            .await;
        assert_eq!(s, 422, "{url}: {b}");
        assert_eq!(b["field"], "callback_url", "{b}");
    }
    gw.stop().await;
    let gw = gateway(&device, None, true, |_| {}).await;
    register(&gw, TOKEN_A, &device).await;
    let (s, b) = gw
        .call(
            "POST",
            "/v1/pushes",
            Some(TOKEN_A),
            Some(push_with_callback("http://127.0.0.1:9/hook")),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    gw.stop().await;
}

#[tokio::test]
async fn callback_url_without_a_tenant_secret_is_422() {
    let device = DeviceReceiver::start(Duration::ZERO).await;
    let gw = gateway(&device, None, true, |s| s.tenants[1].webhook_secret = None).await;
    register(&gw, TOKEN_B, &device).await;
    let (s, b) = gw
        .call(
            "POST",
            "/v1/pushes",
            Some(TOKEN_B),
            Some(push_with_callback("https://hooks.example.com/x")),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["field"], "callback_url");
    assert!(
        b["detail"].as_str().unwrap().contains("webhook_secret"),
        "{b}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn slow_receiver_of_tenant_a_does_not_delay_tenant_b() {
    let device = DeviceReceiver::start(Duration::ZERO).await;
    let slow = Hooks::start(Duration::from_secs(4)).await;
    let fast = Hooks::start(Duration::ZERO).await;
    let gw = gateway(&device, Some(slow.url("/a")), true, |_| {}).await;
    register(&gw, TOKEN_A, &device).await;
    register(&gw, TOKEN_B, &device).await;
    let mut a_ids = Vec::new();
    for _ in 0..12 {
        a_ids.push(gw.push(TOKEN_A, xml_push("dev-1", DM_XML)).await);
    }
    for id in &a_ids {
        gw.wait_final(TOKEN_A, id, Duration::from_secs(15)).await;
    }
    // A's receiver now has its requests in flight (4 s each) and more waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let b = gw.push(TOKEN_B, push_with_callback(&fast.url("/b"))).await;
    gw.wait_final(TOKEN_B, &b, Duration::from_secs(10)).await;
    let got = fast.wait(1, Duration::from_secs(10)).await;
    let took = got[0].at - start;
    assert!(
        // Behind A's queue it would wait a whole round of A's requests (4 s) at least.
        took < Duration::from_millis(2_500),
        "tenant B's webhook took {took:?}"
    );
    assert_eq!(got[0].json()["data"]["id"], b.as_str());
    // A still gets all of its webhooks.
    let a_got = slow.wait(12, Duration::from_secs(40)).await;
    assert_eq!(
        slow.max_in_flight(),
        dmpushd::webhook::sender::PER_TARGET,
        "the per-target limit holds (and is reached)"
    );
    assert_verified(&a_got).await;
    gw.stop().await;
}

#[tokio::test]
async fn given_up_after_max_age_then_retried_through_the_api() {
    let device = DeviceReceiver::start(Duration::ZERO).await;
    let hooks = Hooks::start(Duration::ZERO).await;
    hooks.script(&[500; 2]);
    let gw = gateway(&device, Some(hooks.url("/a")), true, |s| {
        s.webhooks.max_age_seconds = 1
    })
    .await;
    register(&gw, TOKEN_A, &device).await;
    let id = gw.push(TOKEN_A, xml_push("dev-1", DM_XML)).await;
    gw.wait_final(TOKEN_A, &id, Duration::from_secs(10)).await;
    hooks.wait(2, Duration::from_secs(10)).await;
    // The second attempt (≥ 1 s after the event) failed: given up, on the timeline.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = gw.get_push(TOKEN_A, &id).await;
        if p["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("given up"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "not given up: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = gw.metrics_text().await;
    assert_eq!(
        crate::support::gateway::metric(
            &m,
            "dmpushd_webhook_deliveries_total{outcome=\"given_up\"}"
        ),
        1.0
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(hooks.got().len(), 2, "no attempt after giving up");
    // Another tenant's push is 404; the owner's re-queues it, and it arrives (204 now).
    let path = format!("/v1/pushes/{id}/webhooks/retry");
    let (s, _) = gw.call("POST", &path, Some(TOKEN_B), None).await;
    assert_eq!(s, 404);
    let (s, b) = gw.call("POST", &path, Some(TOKEN_A), None).await;
    assert_eq!((s, b["requeued"].as_u64()), (200, Some(1)), "{b}");
    let got = hooks.wait(3, Duration::from_secs(5)).await;
    assert_eq!(got[2].header("webhook-id"), got[0].header("webhook-id"));
    assert_verified(&got).await;
    gw.stop().await;
}

#[test]
fn check_config_redacts_the_webhook_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dmpushd.toml");
    std::fs::write(
        &config,
        format!(
            "[[tenants]]\nname = \"a\"\ntoken_sha256 = \"{}\"\nwebhook_url = \"https://hooks.example.com/a\"\nwebhook_secret = \"{SECRET}\"\n[webhooks]\nallow_targets = [\"127.0.0.0/8\"]\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dmpushd"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(&SECRET[6..]), "secret printed: {text}");
    assert!(text.contains("webhook_secret"), "{text}");
    assert!(text.contains("timeout_seconds"), "{text}");
    // A secret that is not whsec_ + base64, or a webhook_url without a secret: refused at start.
    for bad in [
        "webhook_secret = \"nope\"",
        "webhook_url = \"https://hooks.example.com/a\"",
    ] {
        std::fs::write(
            &config,
            format!("[[tenants]]\nname = \"a\"\ntoken = \"t\"\n{bad}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dmpushd"))
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} accepted");
    }
}

// --- kill -9 ---------------------------------------------------------------------------------

/// The real binary, `kill -9` while a webhook event is undelivered (its receiver answers 503),
/// restarted on the same database: the event arrives, with the same webhook-id.
async fn kill_9_then_restart_delivers(store_url: &str) {
    use crate::support::process::{spawn_serve, wait_ok};
    let device = DeviceReceiver::start(Duration::ZERO).await;
    let hooks = Hooks::start(Duration::ZERO).await;
    hooks.script(&[503; 1000]);
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let config = dir.path().join("dmpushd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_seconds = 1
[store]
url = "{store_url}"
[queue]
lease_seconds = 3
poll_interval_ms = 100
[[tenants]]
name = "a"
token = "{TOKEN_A}"
webhook_url = "{hook}"
webhook_secret = "{SECRET}"
[bindings.http]
allow_targets = ["127.0.0.0/8"]
ca_file = "{ca}"
[webhooks]
timeout_seconds = 2
allow_targets = ["127.0.0.0/8"]
[log]
format = "text"
level = "warn"
"#,
            hook = hooks.url("/a"),
            ca = device.ca_file.display(),
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut child = spawn_serve(&config);
    wait_ok(&http, &base, "/healthz").await;
    let r = http
        .put(format!("{base}/v1/devices/dev-1"))
        .bearer_auth(TOKEN_A)
        .json(
            &json!({"bindings": [{"type": "http", "url": device.url("/dm"), "framing": "direct"}]}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = http
        .post(format!("{base}/v1/pushes"))
        .bearer_auth(TOKEN_A)
        .json(&xml_push("dev-1", DM_XML))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The first attempt was refused (503) and its retry recorded; now the process dies.
    let first = hooks.wait(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = hooks.got().len();
    hooks.clear_script(); // the receiver recovers: 204 from now on
    let mut child = spawn_serve(&config);
    wait_ok(&http, &base, "/healthz").await;
    let got = hooks.wait(before + 1, Duration::from_secs(20)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let last = got.last().unwrap();
    assert_eq!(last.json()["data"]["id"], id.as_str());
    assert_eq!(last.json()["type"], "push.delivered");
    assert_eq!(last.header("webhook-id"), first[0].header("webhook-id"));
    assert_verified(&got).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_an_undelivered_event_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_then_restart_delivers(&format!("sqlite://{}", dir.path().join("k.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_an_undelivered_event_postgres() {
    let Some(db) = crate::support::store::PgDb::create().await else {
        return;
    };
    kill_9_then_restart_delivers(&db.url).await;
}

// --- the outbox on both stores ---------------------------------------------------------------

const LEASE: Duration = Duration::from_secs(30);
const HOOK: &str = "https://hooks.example.test/x";

async fn claim(s: &Arc<dyn Store>, owner: &str, now: i64) -> Vec<OutboxEvent> {
    claim_with(s, owner, now, 10, 10, &[]).await
}

async fn claim_with(
    s: &Arc<dyn Store>,
    owner: &str,
    now: i64,
    limit: u32,
    per_target: u32,
    in_flight: &[(String, u32)],
) -> Vec<OutboxEvent> {
    s.outbox()
        .unwrap()
        .claim_webhooks(&ClaimRequest {
            owner,
            now_ms: now,
            lease: LEASE,
            limit,
            per_target,
            in_flight,
        })
        .await
        .unwrap()
}

async fn record(
    s: &Arc<dyn Store>,
    e: &OutboxEvent,
    owner: &str,
    at: i64,
    result: AttemptResult,
) -> bool {
    s.outbox()
        .unwrap()
        .record_webhook_attempt(&AttemptRecord {
            event: e.clone(),
            owner: owner.into(),
            at_ms: at,
            result,
            detail: "HTTP 503".into(),
        })
        .await
        .unwrap()
}

/// A push with a webhook target taken to `accepted` (refs r-…) at T0 + 10.
async fn accepted_push(s: &Arc<dyn Store>, reference: &str, target: Option<&str>) -> String {
    let mut p = push("t1");
    p.callback_url = target.map(str::to_owned);
    let id = p.id.clone();
    s.enqueue(p).await.unwrap();
    let c = s.claim("w", T0, LEASE, 1).await.unwrap().remove(0);
    assert_eq!(c.id, id);
    s.complete(vec![Completion {
        push_id: id.clone(),
        owner: "w".into(),
        attempt: c.attempt,
        binding: WAP,
        at_ms: T0 + 10,
        next: Next::Accepted {
            refs: vec![NextHopRef::new("smsc", reference)],
        },
        detail: "submit_sm_resp".into(),
    }])
    .await
    .unwrap();
    id
}

async fn receipt(s: &Arc<dyn Store>, reference: &str, at: i64) {
    s.apply_receipt(
        &Receipt {
            binding: BindingKind::Wap,
            reference: NextHopRef::new("smsc", reference),
            delivered: true,
            detail: "DELIVRD".into(),
            hold: std::time::Duration::from_secs(120),
            ack: None,
        },
        at,
    )
    .await
    .unwrap();
}

async fn outbox_in_order_with_retry_and_give_up(s: Arc<dyn Store>) {
    let id = accepted_push(&s, "r-1", Some(HOOK)).await;
    receipt(&s, "r-1", T0 + 20).await;
    assert_eq!(s.outbox().unwrap().outbox_depth().await.unwrap(), 2);
    // Only the accepted event: delivered waits for it (per-push order).
    let got = claim(&s, "x", T0 + 30).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let acc = got[0].clone();
    assert_eq!(
        (acc.state, acc.push_id.as_str(), acc.target.as_str()),
        (PushState::Accepted, id.as_str(), HOOK)
    );
    assert_eq!(
        (acc.created_at_ms, acc.attempts, acc.tenant.as_str()),
        (T0 + 10, 0, "t1")
    );
    assert!(acc.id.starts_with("msg_"));
    // Leased: nobody else gets it; the wrong owner cannot record.
    assert!(claim(&s, "y", T0 + 31).await.is_empty());
    assert!(!record(&s, &acc, "y", T0 + 32, AttemptResult::Delivered).await);
    // A retry: not due before its time, then the same event (same id) again.
    assert!(
        record(
            &s,
            &acc,
            "x",
            T0 + 40,
            AttemptResult::Retry { at_ms: T0 + 2_000 }
        )
        .await
    );
    assert!(claim(&s, "x", T0 + 1_999).await.is_empty());
    let again = claim(&s, "x", T0 + 2_000).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempts),
        (acc.id.as_str(), 1)
    );
    // The payload as of the accepted event: state accepted, timeline up to it.
    let view = s
        .outbox()
        .unwrap()
        .push_as_of("t1", &id, acc.seq)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.state, PushState::Accepted);
    assert_eq!(view.updated_at_ms, T0 + 10);
    assert_eq!(view.events.last().unwrap().state, PushState::Accepted);
    assert!(
        s.outbox()
            .unwrap()
            .push_as_of("t2", &id, acc.seq)
            .await
            .unwrap()
            .is_none()
    );
    // Given up: the next event of the push becomes claimable.
    assert!(record(&s, &again[0], "x", T0 + 2_010, AttemptResult::GiveUp).await);
    let next = claim(&s, "x", T0 + 2_020).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].state, PushState::Delivered);
    assert!(next[0].seq > acc.seq);
    assert!(record(&s, &next[0], "x", T0 + 2_030, AttemptResult::Delivered).await);
    assert!(claim(&s, "x", T0 + 100_000).await.is_empty());
    assert_eq!(s.outbox().unwrap().outbox_depth().await.unwrap(), 0);
    // Timeline: one webhook row per attempt, after the state rows.
    let p = s.get_push("t1", &id).await.unwrap().unwrap();
    let hooks: Vec<_> = p
        .events
        .iter()
        .filter(|e| e.detail.starts_with("webhook "))
        .collect();
    assert_eq!(hooks.len(), 3, "{:?}", p.events);
    assert!(hooks[1].detail.contains("given up"), "{:?}", hooks[1]);
    assert_eq!(
        p.state,
        PushState::Delivered,
        "webhook rows do not change the state"
    );
    // Re-queue: another tenant's push is unknown; the given-up event is due again, age reset.
    let ob = s.outbox().unwrap();
    assert_eq!(
        ob.requeue_webhooks("t2", &id, T0 + 200_000).await.unwrap(),
        None
    );
    assert_eq!(
        ob.requeue_webhooks("t1", &id, T0 + 200_000).await.unwrap(),
        Some(1)
    );
    let re = claim(&s, "x", T0 + 200_000).await;
    assert_eq!(re.len(), 1);
    assert_eq!(
        (re[0].id.as_str(), re[0].age_from_ms),
        (acc.id.as_str(), T0 + 200_000)
    );
    assert_eq!(
        ob.requeue_webhooks("t1", &id, T0 + 200_001).await.unwrap(),
        Some(0)
    );
}

async fn outbox_only_for_pushes_with_a_target_and_webhook_states(s: Arc<dyn Store>) {
    let _ = accepted_push(&s, "r-2", None).await;
    receipt(&s, "r-2", T0 + 20).await;
    assert!(
        claim(&s, "x", T0 + 100).await.is_empty(),
        "no target, no webhook"
    );
    // Queued is not a webhook state; cancelled is.
    let mut p = push("t1");
    p.callback_url = Some(HOOK.into());
    let id = p.id.clone();
    s.enqueue(p).await.unwrap();
    assert!(claim(&s, "x", T0 + 100).await.is_empty());
    s.cancel("t1", &id, T0 + 200).await.unwrap();
    let got = claim(&s, "x", T0 + 300).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].state, PushState::Cancelled);
    assert_eq!(got[0].created_at_ms, T0 + 200);
}

async fn outbox_skips_busy_targets_and_takes_over_expired_leases(s: Arc<dyn Store>) {
    let a = accepted_push(&s, "r-3", Some("https://a.example.test/")).await;
    let b = accepted_push(&s, "r-4", Some("https://b.example.test/")).await;
    let got = claim_with(
        &s,
        "x",
        T0 + 100,
        10,
        4,
        &[("https://a.example.test/".into(), 4)],
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].push_id, b);
    // "x" crashed holding b's lease: after the lease, another sender takes both.
    let later = T0 + 100 + LEASE.as_millis() as i64;
    let got = claim(&s, "y", later).await;
    let mut ids: Vec<_> = got.iter().map(|e| e.push_id.clone()).collect();
    ids.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(ids, want);
}

/// A push for `target` cancelled at `at`: one pending `push.cancelled` event due then.
async fn cancelled_push(s: &Arc<dyn Store>, target: &str, at: i64) -> String {
    let mut p = push("t1");
    p.callback_url = Some(target.into());
    let id = p.id.clone();
    s.enqueue(p).await.unwrap();
    s.cancel("t1", &id, at).await.unwrap();
    id
}

/// A claim takes no more events for a target than the target has free slots (so the sender
/// never claims events only to release them), oldest first; a full target's events do not stop
/// another target's.
async fn outbox_claims_no_more_per_target_than_free_slots(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(cancelled_push(&s, HOOK, T0 + 100 + i).await);
    }
    let got = claim_with(&s, "x", T0 + 1_000, 10, 4, &[]).await;
    let pushes: Vec<_> = got.iter().map(|e| e.push_id.clone()).collect();
    assert_eq!(pushes, ids[..4], "the four oldest");
    // Three requests in flight to the target: one slot, the oldest event not leased yet.
    let got = claim_with(&s, "y", T0 + 1_000, 10, 4, &[(HOOK.into(), 3)]).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].push_id, ids[4]);
    assert!(
        claim_with(&s, "y", T0 + 1_000, 10, 4, &[(HOOK.into(), 4)])
            .await
            .is_empty()
    );
    // A full target does not hold up another one.
    let other = cancelled_push(&s, "https://other.example.test/", T0 + 200).await;
    let got = claim_with(&s, "y", T0 + 1_000, 10, 4, &[(HOOK.into(), 4)]).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].push_id, other);
}

/// The claim looks at a bounded window of due events (4 per event it may take). Events that
/// wait for an earlier event of their push (per-push order) must not crowd that window: a
/// receiver failing with a backlog of pushes would otherwise stall every other target. They are
/// not due before the event they wait for, whether they were written before its retry was
/// recorded (the record moves them) or after (the trigger starts them no earlier).
async fn outbox_window_not_crowded_by_events_waiting_for_their_push(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(accepted_push(&s, &format!("rw-{i}"), Some(HOOK)).await);
    }
    for i in 0..3 {
        receipt(&s, &format!("rw-{i}"), T0 + 20).await;
    }
    let accepted = claim(&s, "x", T0 + 30).await;
    assert_eq!(accepted.len(), 5, "{accepted:?}");
    for e in &accepted {
        assert_eq!(e.state, PushState::Accepted);
        let retry = AttemptResult::Retry { at_ms: T0 + 5_000 };
        assert!(record(&s, e, "x", T0 + 40, retry).await);
    }
    for i in 3..5 {
        receipt(&s, &format!("rw-{i}"), T0 + 50).await;
    }
    // Five delivered events wait for their accepted ones; a claim of one looks at four rows.
    let other = cancelled_push(&s, "https://other.example.test/", T0 + 200).await;
    let got = claim_with(&s, "x", T0 + 300, 1, 4, &[]).await;
    assert_eq!(
        got.len(),
        1,
        "the window was full of waiting events: {got:?}"
    );
    assert_eq!(got[0].push_id, other);
    // At the retry time: the accepted events first, then the delivered ones.
    let again = claim(&s, "x", T0 + 5_000).await;
    assert_eq!(again.len(), 5, "{again:?}");
    assert!(again.iter().all(|e| e.state == PushState::Accepted));
    for e in &again {
        assert!(record(&s, e, "x", T0 + 5_010, AttemptResult::Delivered).await);
    }
    let delivered = claim(&s, "x", T0 + 5_020).await;
    assert_eq!(delivered.len(), 5, "{delivered:?}");
    assert!(delivered.iter().all(|e| e.state == PushState::Delivered));
}

/// Retention never deletes a push whose webhook is still pending (its payload is built from the
/// push); once the event is done, the push goes and its outbox rows with it.
async fn purge_waits_for_pending_webhooks(s: Arc<dyn Store>) {
    let mut p = push("t1");
    p.callback_url = Some(HOOK.into());
    let id = p.id.clone();
    s.enqueue(p).await.unwrap();
    s.cancel("t1", &id, T0 + 200).await.unwrap();
    let far = T0 + 3_600_000;
    assert_eq!(s.purge(far, 100).await.unwrap(), 0, "webhook pending");
    assert!(s.get_push("t1", &id).await.unwrap().is_some());
    let got = claim(&s, "x", T0 + 300).await;
    assert_eq!(got.len(), 1);
    assert!(record(&s, &got[0], "x", T0 + 400, AttemptResult::Delivered).await);
    assert_eq!(s.purge(far, 100).await.unwrap(), 1);
    assert!(s.get_push("t1", &id).await.unwrap().is_none());
    assert_eq!(s.outbox().unwrap().outbox_depth().await.unwrap(), 0);
    assert!(
        claim(&s, "x", far).await.is_empty(),
        "outbox rows went with the push"
    );
}

/// Claims and records every event in the outbox (due or not), per push in claim order.
async fn drain_outbox(s: &Arc<dyn Store>) -> Vec<OutboxEvent> {
    let mut all = Vec::new();
    loop {
        let got = claim_with(s, "drain", T0 + 86_400_000, 100, 100, &[]).await;
        if got.is_empty() {
            return all;
        }
        for e in got {
            assert!(record(s, &e, "drain", T0 + 86_400_000, AttemptResult::Delivered).await);
            all.push(e);
        }
    }
}

/// Completes the single claimed attempt `c` with `next`.
async fn complete_one(s: &Arc<dyn Store>, c: &Claimed, at: i64, next: Next) {
    s.complete(vec![Completion {
        push_id: c.id.clone(),
        owner: "w".into(),
        attempt: c.attempt,
        binding: WAP,
        at_ms: at,
        next,
        detail: "outcome".into(),
    }])
    .await
    .unwrap();
}

/// Every code path that records a webhook state writes that event's outbox row, and only
/// for pushes with a target: completions (accepted, delivered, failed), a receipt, a receipt
/// that overtook its completion, the receipt window (`unconfirmed`) and a late receipt after
/// it, cancel, collapse (`superseded`) and the TTL sweep (`expired`). The outbox must hold
/// exactly the push's events of a webhook state, with their times, in order. SQLite writes these
/// rows beside the event on two connections (migration 0009), PostgreSQL by a trigger.
async fn every_webhook_state_event_has_its_outbox_row(s: Arc<dyn Store>) {
    let hooked = |mut p: NewPush| {
        p.callback_url = Some(HOOK.into());
        p
    };
    let mut ids = Vec::new();
    let accepted = |r: &str| Next::Accepted {
        refs: vec![NextHopRef::new("smsc", r)],
    };
    // Claimed one at a time: each push below is the only due one when it is claimed.
    let claim_one =
        async |s: &Arc<dyn Store>, at: i64| s.claim("w", at, LEASE, 1).await.unwrap().remove(0);
    // accepted, then delivered by a receipt (hot writer: completion, receipt batch)
    ids.push(accepted_push(&s, "e-1", Some(HOOK)).await);
    receipt(&s, "e-1", T0 + 20).await;
    // delivered and failed by a completion
    for next in [Next::Delivered, Next::Failed] {
        let p = hooked(push("t1"));
        ids.push(p.id.clone());
        s.enqueue(p).await.unwrap();
        let c = claim_one(&s, T0 + 30).await;
        complete_one(&s, &c, T0 + 40, next).await;
    }
    // a receipt that overtook its completion: settled by the completion
    receipt(&s, "e-2", T0 + 50).await;
    let p = hooked(push("t1"));
    ids.push(p.id.clone());
    s.enqueue(p).await.unwrap();
    let c = claim_one(&s, T0 + 60).await;
    complete_one(&s, &c, T0 + 70, accepted("e-2")).await;
    // unconfirmed by the receipt window, then delivered by a late receipt (sqlx writer, then
    // hot writer)
    let mut p = hooked(push("t1"));
    p.expires_at_ms = T0 + 1_000;
    ids.push(p.id.clone());
    s.enqueue(p).await.unwrap();
    let c = claim_one(&s, T0 + 80).await;
    complete_one(&s, &c, T0 + 90, accepted("e-3")).await;
    assert_eq!(s.unconfirm(T0 + 2_000, 500, 10).await.unwrap(), 1);
    receipt(&s, "e-3", T0 + 2_100).await;
    // cancelled
    let p = hooked(push("t1"));
    ids.push(p.id.clone());
    s.enqueue(p).await.unwrap();
    s.cancel("t1", ids.last().unwrap(), T0 + 2_200)
        .await
        .unwrap();
    // superseded by a newer push with the same collapse key (at submit), which then expires
    // (the TTL sweep)
    let mut older = hooked(push("t1"));
    older.collapse_key = Some("cfg".into());
    older.expires_at_ms = T0 + 5_000;
    let mut newer = older.clone();
    newer.id = crate::support::store::next_id();
    newer.created_at_ms = T0 + 2_300;
    ids.push(older.id.clone());
    ids.push(newer.id.clone());
    s.enqueue(older).await.unwrap();
    s.enqueue(newer).await.unwrap();
    assert_eq!(s.expire(T0 + 6_000, 10).await.unwrap(), 1);
    // no target: no rows, whatever the state
    let _ = accepted_push(&s, "e-4", None).await;
    receipt(&s, "e-4", T0 + 20).await;

    let rows = drain_outbox(&s).await;
    let mut seen = std::collections::BTreeSet::new();
    for id in &ids {
        let p = s.get_push("t1", id).await.unwrap().unwrap();
        let want: Vec<(PushState, i64)> = p
            .events
            .iter()
            .filter(|e| !e.detail.starts_with("webhook"))
            .filter(|e| dmpushd::store::outbox::fires_webhook(e.state))
            .map(|e| (e.state, e.at_ms))
            .collect();
        let got: Vec<(PushState, i64)> = rows
            .iter()
            .filter(|r| &r.push_id == id)
            .map(|r| (r.state, r.created_at_ms))
            .collect();
        assert_eq!(
            got, want,
            "push {id} ({:?}): outbox rows vs events",
            p.state
        );
        seen.extend(want.iter().map(|(state, _)| state.as_str()));
    }
    assert_eq!(
        seen.len(),
        dmpushd::store::outbox::WEBHOOK_STATES.len(),
        "every webhook state exercised: {seen:?}"
    );
    assert_eq!(
        rows.iter().filter(|r| ids.contains(&r.push_id)).count(),
        rows.len(),
        "a push without a target got a webhook"
    );
}

async fn outbox_suite(open: impl AsyncFn() -> Option<(Arc<dyn Store>, Box<dyn std::any::Any>)>) {
    let Some((s, _g)) = open().await else { return };
    every_webhook_state_event_has_its_outbox_row(s).await;
    let Some((s, _g)) = open().await else { return };
    purge_waits_for_pending_webhooks(s).await;
    let Some((s, _g)) = open().await else { return };
    outbox_in_order_with_retry_and_give_up(s).await;
    let Some((s, _g)) = open().await else { return };
    outbox_only_for_pushes_with_a_target_and_webhook_states(s).await;
    let Some((s, _g)) = open().await else { return };
    outbox_skips_busy_targets_and_takes_over_expired_leases(s).await;
    let Some((s, _g)) = open().await else { return };
    outbox_claims_no_more_per_target_than_free_slots(s).await;
    let Some((s, _g)) = open().await else { return };
    outbox_window_not_crowded_by_events_waiting_for_their_push(s).await;
}

#[tokio::test]
async fn outbox_sqlite() {
    outbox_suite(async || {
        let db = crate::support::store::SqliteDb::create();
        let s = db.open().await;
        Some((s, Box::new(db) as Box<dyn std::any::Any>))
    })
    .await;
}

/// Two stores (replicas) on one PostgreSQL database claiming at once: every event goes to
/// exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_postgres_two_replicas_never_claim_the_same_event() {
    let Some(db) = crate::support::store::PgDb::create().await else {
        return;
    };
    let (r1, r2) = (db.open().await, db.open().await);
    let mut all = Vec::new();
    for i in 0..40 {
        all.push(accepted_push(&r1, &format!("rr-{i}"), Some(HOOK)).await);
    }
    let claim_all = |s: Arc<dyn Store>, owner: &'static str| async move {
        let mut got = Vec::new();
        for _ in 0..20 {
            let batch = claim_with(&s, owner, T0 + 100, 3, 3, &[]).await;
            got.extend(batch.into_iter().map(|e| e.push_id));
        }
        got
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claim_all(r1.clone(), "r1")),
        tokio::spawn(claim_all(r2.clone(), "r2"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut both: Vec<String> = a.iter().chain(b.iter()).cloned().collect();
    both.sort();
    let n = both.len();
    both.dedup();
    assert_eq!(both.len(), n, "an event was claimed twice");
    all.sort();
    assert_eq!(both, all, "every event claimed");
}

#[tokio::test]
async fn outbox_postgres() {
    outbox_suite(async || {
        let db = crate::support::store::PgDb::create().await?;
        let s = db.open().await;
        Some((s, Box::new(db) as Box<dyn std::any::Any>))
    })
    .await;
}

/// The sender claims events ahead of its target's free slots (they wait in the sender, leased,
/// and start as slots free: no claim per finished request) but keeps at most `PER_TARGET`
/// requests in flight; at stop the events it holds but has not started go back to the outbox at
/// once, not after their lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_claims_ahead_and_gives_back_what_it_did_not_start() {
    use dmpushd::webhook::{
        Secret, Targets, TenantWebhook, WebhooksConfig,
        sender::{PER_TARGET, Sender},
    };
    let db = crate::support::store::SqliteDb::create();
    let s = db.open().await;
    let slow = Hooks::start(Duration::from_secs(2)).await;
    let target = slow.url("/a");
    let now = dmpushd::domain::now_ms();
    for i in 0..10 {
        cancelled_push(&s, &target, now - 1_000 + i).await;
    }
    let cfg = WebhooksConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        ..WebhooksConfig::default()
    };
    let mut targets = Targets::new(cfg.policy().unwrap());
    targets.add(
        "t1",
        TenantWebhook {
            url: None,
            secret: Some(Secret::parse(SECRET).unwrap()),
        },
    );
    let sender = Sender::new(
        s.clone(),
        Arc::new(targets),
        &cfg,
        "r1".into(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(sender.run(stop.clone()));
    // The receiver holds each request 2 s: wait until the sender has its slots full.
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.max_in_flight() < PER_TARGET {
        assert!(
            Instant::now() < deadline,
            "the sender never filled its slots"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // All ten are leased (four in flight, six waiting in the sender): nothing for another.
    assert!(
        claim_with(&s, "other", dmpushd::domain::now_ms(), 10, 64, &[])
            .await
            .is_empty()
    );
    stop.cancel();
    run.await.unwrap();
    assert_eq!(
        slow.max_in_flight(),
        PER_TARGET,
        "the per-target limit holds"
    );
    let delivered = slow.got().len();
    assert_eq!(delivered, PER_TARGET, "the requests in flight finished");
    // The six it held but had not started are claimable at once, well within their lease.
    let back = claim_with(&s, "other", dmpushd::domain::now_ms(), 10, 64, &[]).await;
    assert_eq!(back.len(), 10 - delivered, "{back:?}");
}

// --- two PostgreSQL replicas -----------------------------------------------------------------

/// Acceptance 4: two `dmpushd serve` processes on one PostgreSQL database share one outbox
/// (`SKIP LOCKED` leases). N pushes through both APIs, each sending `push.delivered` (an HTTPS
/// device answers at once; `push.accepted` is for next hops that accept before a receipt) to one
/// local receiver: every event arrives, none twice (no kills, so no lease ever expires and
/// at-least-once must be exactly once), and both replicas' senders take part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_replicas_deliver_every_event_once() {
    use crate::support::{
        gateway::metric,
        process::{spawn_serve, wait_ok},
    };
    use std::collections::HashMap;

    struct Replica(std::process::Child);
    impl Drop for Replica {
        /// A failing assertion must not leave gateway processes behind.
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let Some(pg) = crate::support::store::PgDb::create().await else {
        return;
    };
    const N: usize = 400;
    let device = DeviceReceiver::start(Duration::ZERO).await;
    let hooks = Hooks::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut replicas = Vec::new();
    let mut bases = Vec::new();
    for name in ["r1", "r2"] {
        let port = crate::support::free_port();
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_seconds = 1
[store]
url = "{db}"
[queue]
replica_id = "{name}"
poll_interval_ms = 100
[[tenants]]
name = "a"
token = "{TOKEN_A}"
webhook_url = "{hook}"
webhook_secret = "{SECRET}"
[bindings.http]
allow_targets = ["127.0.0.0/8"]
ca_file = "{ca}"
[webhooks]
allow_targets = ["127.0.0.0/8"]
[log]
level = "warn"
"#,
                db = pg.url,
                hook = hooks.url("/a"),
                ca = device.ca_file.display(),
            ),
        )
        .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        replicas.push(Replica(spawn_serve(&config)));
        // One at a time: the first migrates the database.
        wait_ok(&http, &base, "/readyz").await;
        bases.push(base);
    }
    let r = http
        .put(format!("{}/v1/devices/dev-1", bases[0]))
        .bearer_auth(TOKEN_A)
        .json(
            &json!({"bindings": [{"type": "http", "url": device.url("/dm"), "framing": "direct"}]}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let mut tasks = Vec::new();
    for c in 0..8 {
        let (http, bases) = (http.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (c..N).step_by(8) {
                let r = http
                    .post(format!("{}/v1/pushes", bases[i % 2]))
                    .bearer_auth(TOKEN_A)
                    .json(&xml_push("dev-1", DM_XML))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                ids.push(
                    r.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            ids
        }));
    }
    let mut push_ids = Vec::new();
    for t in tasks {
        push_ids.extend(t.await.unwrap());
    }
    assert_eq!(push_ids.len(), N);

    // Steady state reached when every outbox row is done: a row is done only after a 2xx,
    // i.e. after the receiver recorded the request.
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (done, all): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE status = 'done'), COUNT(*) FROM webhook_outbox",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if all == N as i64 && done == all {
            break;
        }
        let states: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT state, kind, COUNT(*) FROM push_events GROUP BY state, kind")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(
            Instant::now() < deadline,
            "{done} of {all} outbox rows done ({N} expected), receiver got {}, events {states:?}",
            hooks.got().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;

    let got = hooks.got();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut types: HashMap<String, Vec<String>> = HashMap::new();
    for h in &got {
        *by_id.entry(h.header("webhook-id").to_owned()).or_default() += 1;
        let j = h.json();
        types
            .entry(j["data"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(j["type"].as_str().unwrap().to_owned());
    }
    let twice: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(by_id.len(), N, "every event delivered");
    for id in &push_ids {
        assert_eq!(
            types.get(id).map(Vec::as_slice),
            Some(&["push.delivered".to_owned()][..]),
            "push {id}: its event"
        );
    }
    let mut shares = Vec::new();
    for base in &bases {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        shares.push(metric(
            &text,
            r#"dmpushd_webhook_deliveries_total{outcome="delivered"}"#,
        ));
        assert_eq!(
            metric(
                &text,
                r#"dmpushd_webhook_deliveries_total{outcome="retry"}"#
            ),
            0.0,
            "no failed attempt against a receiver that always answers 204"
        );
    }
    println!(
        "webhooks on two replicas: {N} events, sent by r1 = {}, r2 = {}",
        shares[0], shares[1]
    );
    assert_eq!(shares.iter().sum::<f64>() as usize, N);
    assert!(
        shares.iter().all(|s| *s > 0.0),
        "one replica's sender sent nothing: {shares:?}"
    );
    // Signatures of a sample verify with the independent implementation.
    assert_verified(&got[..20]).await;
    drop(replicas);
}
