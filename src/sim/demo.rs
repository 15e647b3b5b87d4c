//! `dmpushd demo`: the gateway and the simulator in one process, end to end over real loopback
//! sockets. It starts the simulated SMSC and an HTTPS device, starts the gateway (`App`) on a
//! temporary SQLite store with the WAP binding pointed at the simulated SMSC and the HTTPS
//! binding trusting the device's self-signed certificate, registers a device through the REST
//! API, pushes a DM message (XML, several SMS) and a package #0 notification over WAP/SMS and a
//! DM message over HTTPS with `x-syncml-hmac`, waits until each is delivered and prints what the
//! simulated devices decoded, and each push's result webhooks arriving at the simulated DM
//! server's receiver with verified signatures. Exit 0 only when every check passed.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{SimArgs, print_event};
use crate::{
    app::App,
    binding::wap::SmscConfig,
    config::{Settings, TenantConfig},
};

/// `dmpushd demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Give up (exit non-zero) when the pushes are not all delivered within this time.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// Print every simulator event, not only what the devices decoded.
    #[arg(long)]
    pub verbose: bool,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            verbose: false,
        }
    }
}

const TOKEN: &str = "demo-token";
const MSISDN: &str = "+15550100001";
const SERVER_ID: &str = "com.example.dms";
const SERVER_PW: &str = "demo-server-secret";
/// base64 of `01 02 03 04 05 06 07 08`.
const SERVER_NONCE: &str = "AQIDBAUGBwg=";
const HMAC_USER: &str = "dmserver";
const HMAC_PW: &str = "demo-hmac-secret";
/// base64 of `NONCE123`.
const HMAC_NONCE: &str = "Tk9OQ0UxMjM=";

/// Signs the demo tenant's webhooks (the Standard Webhooks reference secret, docs/webhooks.md).
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A sessionless DM message (OMA DM 1.2 SyncML), large enough to need concatenated SMS.
const DM_XML: &str = concat!(
    "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>",
    "<SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:493005100592800</LocURI></Target>",
    "<Source><LocURI>https://dm.example.com/dm</LocURI></Source></SyncHdr><SyncBody>",
    "<Replace><CmdID>2</CmdID><Item><Target><LocURI>./DevDetail/Ext/Conf/Mode</LocURI></Target>",
    "<Data>quiet</Data></Item></Replace><Final/></SyncBody></SyncML>"
);

fn log(line: &str) {
    // Human-readable progress goes to stderr; stdout carries JSON lines only.
    eprintln!("demo: {line}");
}

pub async fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs.max(1));
    let shutdown = CancellationToken::new();
    let dir = tempfile_dir()?;
    let cert_file = dir.join("device-cert.pem");
    let sim_args = SimArgs {
        smpp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        https: true,
        cert_out: Some(cert_file.clone()),
        http_hmac: Some(format!("{HMAC_USER}:{HMAC_PW}:{HMAC_NONCE}")),
        system_id: Some("dmpushd".into()),
        password: Some("smpp-pw".into()),
        dlr_delay_ms: 50,
        devices: vec![format!("{MSISDN}={SERVER_ID}:{SERVER_PW}:{SERVER_NONCE}")],
        webhooks: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..SimArgs::default()
    };
    let mut sim = super::start(&sim_args, shutdown.clone()).await?;
    let smpp = sim.smpp.context("simulated SMSC did not start")?;
    let http = sim.http.context("simulated HTTPS device did not start")?;
    let hooks = sim
        .webhooks
        .context("simulated webhook receiver did not start")?;
    log(&format!(
        "simulated SMSC on {smpp}, HTTPS device on https://{http}"
    ));

    let mut s = Settings::default();
    s.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    s.store.url = format!("sqlite://{}/dmpushd.db", dir.display());
    s.tenants = vec![TenantConfig {
        name: "demo".into(),
        token_sha256: None,
        token: Some(TOKEN.into()),
        webhook_url: Some(format!("http://{hooks}/dmpushd-events")),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..Default::default()
    }];
    s.webhooks.allow_targets = vec!["127.0.0.0/8".into()];
    s.queue.backoff_base_ms = 200;
    s.queue.backoff_max_ms = 1000;
    s.queue.poll_interval_ms = 100;
    s.server.shutdown_grace_seconds = 2;
    s.bindings.wap.enabled = true;
    s.bindings.wap.smsc = vec![SmscConfig {
        name: "sim".into(),
        host: smpp.ip().to_string(),
        port: smpp.port(),
        system_id: "dmpushd".into(),
        password: "smpp-pw".into(),
        source_addr: "DMPUSH".into(),
        ..SmscConfig::default()
    }];
    s.bindings.http.ca_file = Some(cert_file);
    s.bindings.http.allow_targets = vec!["127.0.0.0/8".into()];
    s.validate()?;
    let app = App::build(s).await.context("starting the gateway")?;
    let api = format!("http://{}", app.local_addr()?);
    let gw = tokio::spawn(app.run(shutdown.clone()));
    log(&format!("gateway API on {api}"));

    let result = drive(&api, http, deadline, &mut sim, args.verbose).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), gw).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("dmpushd-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

async fn drive(
    api: &str,
    http_dev: SocketAddr,
    deadline: Instant,
    sim: &mut super::SimHandle,
    verbose: bool,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = client
            .request(method, format!("{api}{path}"))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let device = json!({
        "bindings": [
            {"type": "wap", "msisdn": MSISDN},
            {"type": "http", "url": format!("https://{http_dev}/dm/push"),
             "framing": "direct",
             "hmac": {"username": HMAC_USER, "password": HMAC_PW, "nonce": HMAC_NONCE}}
        ],
        "dm": {"server_id": SERVER_ID, "server_password": SERVER_PW, "server_nonce": SERVER_NONCE}
    });
    let r = call(
        reqwest::Method::PUT,
        "/v1/devices/demo-handset",
        Some(device),
    )
    .await?;
    if !r.status().is_success() {
        bail!(
            "registering the device: HTTP {}: {}",
            r.status(),
            r.text().await?
        );
    }
    log("registered device demo-handset (wap/sms + https)");

    let pushes = [
        (
            "DM message over WAP/SMS",
            json!({"device": "demo-handset", "binding": "wap", "body": DM_XML}),
        ),
        (
            "package #0 over WAP/SMS",
            json!({"device": "demo-handset", "binding": "wap",
                   "notification": {"ui_mode": "informative", "initiator": "server", "session_id": 4660}}),
        ),
        (
            "DM message over HTTPS with x-syncml-hmac",
            json!({"device": "demo-handset", "binding": "http", "body": DM_XML}),
        ),
    ];
    let mut ids = Vec::new();
    for (what, body) in pushes {
        let r = call(reqwest::Method::POST, "/v1/pushes", Some(body)).await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let Some(id) = v["id"].as_str().filter(|_| status.as_u16() == 202) else {
            bail!("submitting {what}: HTTP {status}: {v}");
        };
        log(&format!("submitted {what}: push {id}"));
        ids.push((what, id.to_owned()));
    }

    // Wait until every push is delivered (a final failure ends the demo), collecting events.
    let mut events: Vec<Value> = Vec::new();
    let mut done = vec![false; ids.len()];
    while done.iter().any(|d| !d) {
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for delivery; events so far: {}",
                events.len()
            );
        }
        while let Ok(ev) = sim.events.try_recv() {
            if verbose {
                print_event(&ev)?;
            }
            events.push(ev);
        }
        for (i, (what, id)) in ids.iter().enumerate() {
            if done[i] {
                continue;
            }
            let v: Value = call(reqwest::Method::GET, &format!("/v1/pushes/{id}"), None)
                .await?
                .json()
                .await?;
            match v["state"].as_str() {
                Some("delivered") => {
                    log(&format!("{what}: delivered ({})", last_detail(&v)));
                    done[i] = true;
                }
                Some(s @ ("failed" | "expired" | "cancelled" | "superseded")) => {
                    bail!("{what}: push ended {s}: {}", last_detail(&v))
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Device events can trail the receipt by nothing (they are emitted before the submit_sm_resp
    // reaches the gateway); collect what is queued. Then wait for each push's push.delivered
    // webhook (a WAP push sends push.accepted first), verified by the receiver.
    loop {
        while let Ok(ev) = sim.events.try_recv() {
            if verbose {
                print_event(&ev)?;
            }
            events.push(ev);
        }
        let missing: Vec<&str> = ids
            .iter()
            .filter(|(_, id)| {
                !events.iter().any(|e| {
                    e["event"] == "webhook"
                        && e["push_id"] == id.as_str()
                        && e["type"] == "push.delivered"
                })
            })
            .map(|(what, _)| *what)
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for the push.delivered webhooks of: {}",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let webhooks: Vec<&Value> = events.iter().filter(|e| e["event"] == "webhook").collect();
    // stdout stays what the devices decoded (one JSON line each); the webhooks are reported on
    // stderr (and as JSON lines with --verbose, like every simulator event).
    for e in &webhooks {
        if e["verified"] != true {
            bail!("a webhook failed verification: {e}");
        }
        log(&format!(
            "webhook {} for push {} arrived, signature verified",
            e["type"].as_str().unwrap_or(""),
            e["push_id"].as_str().unwrap_or("")
        ));
    }

    let decoded: Vec<&Value> = events
        .iter()
        .filter(|e| e["source"] == "device" && e.get("routed").is_some())
        .collect();
    for e in &decoded {
        if !verbose {
            print_event(e)?;
        }
    }
    // The checks that make the demo's exit code mean something.
    let xml_sms = decoded
        .iter()
        .find(|e| e["bearer"] == "sms" && e["routed"] == "dm" && e.get("xml").is_some())
        .context("the SMS handset did not route the DM message to the DM application")?;
    // Compare the documents, not the prolog: the WBXML decoder writes an XML declaration and
    // the SyncML DOCTYPE in front of the root element.
    let decoded_xml = xml_sms["xml"].as_str().unwrap_or("");
    if decoded_xml.get(decoded_xml.find("<SyncML").unwrap_or(0)..) != Some(DM_XML) {
        bail!("the SMS handset decoded different XML: {}", xml_sms["xml"]);
    }
    let noti = decoded
        .iter()
        .find(|e| e["bearer"] == "sms" && e.get("notification").is_some())
        .context("the SMS handset did not receive the package #0")?;
    if noti["digest"] != "ok" || noti["notification"]["session_id"] != 4660 {
        bail!("package #0 check failed: {noti}");
    }
    let https = decoded
        .iter()
        .find(|e| e["event"] == "http_push")
        .context("the HTTPS device did not receive the DM message")?;
    if https["hmac"] != "ok" || https["xml"].as_str() != Some(DM_XML) {
        bail!("HTTPS device check failed: {https}");
    }
    log(&format!(
        "OK: DM XML reassembled from {} SMS and routed to the DM application; package #0 digest {}; \
         HTTPS x-syncml-hmac {}; {} webhooks verified",
        xml_sms["segments"],
        noti["digest"],
        https["hmac"],
        webhooks.len()
    ));
    Ok(())
}

fn last_detail(push: &Value) -> String {
    push["events"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["detail"].as_str())
        .unwrap_or("")
        .to_owned()
}
