//! `dmpushd sim`: a simulated SMSC (SMPP 3.4 server) with simulated handsets behind it, a
//! simulated UDP (WDP datagram) device and a simulated HTTP(S) device. They receive what the
//! gateway sends and apply the DM client's rules (seed Appendix B.1, DM-PUSH-C-001…008; §5.1.3
//! for devices without a WAP stack), then decode what reaches the DM application.
//!
//! Output: one JSON object per line on stdout per event (`source`: `sim`, `smsc` or `device`).
//! `dmpushd demo` ([`demo`]) runs the simulator and the gateway together end to end.
//!
//! Anatomy: [`device`] (pure client rules, reassembly, DM application), [`smsc`] (SMPP server),
//! [`http`] (HTTP device), the UDP device below, [`webhooks`] (a DM server's webhook receiver),
//! [`demo`].

pub mod demo;
pub mod device;
pub mod http;
pub mod smsc;
pub mod webhooks;

use std::{
    collections::HashMap, io::Write as _, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration,
};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

pub use demo::{DemoArgs, demo};
use device::DmCredentials;

/// `dmpushd sim` options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimArgs {
    /// SMPP listen address of the simulated SMSC. When no front end is named at all, the SMSC
    /// listens on 127.0.0.1:2775.
    #[arg(long, value_name = "ADDR")]
    pub smpp: Option<SocketAddr>,
    /// UDP listen address of the simulated WDP-over-UDP device.
    #[arg(long, value_name = "ADDR")]
    pub udp: Option<SocketAddr>,
    /// WDP destination port the UDP device assumes for what it receives (default: the UDP port
    /// it listens on). Lets a device on an unprivileged or random port act as port 2948.
    #[arg(long, value_name = "PORT")]
    pub udp_port_as: Option<u16>,
    /// Listen address of the simulated HTTP device (plain HTTP unless --https).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Serve the HTTP device over TLS with a fresh self-signed certificate (printed at start).
    #[arg(long)]
    pub https: bool,
    /// Also write the HTTPS certificate (PEM) here, e.g. for the gateway's `bindings.http.ca_file`.
    #[arg(long, value_name = "FILE")]
    pub cert_out: Option<PathBuf>,
    /// Expected `x-syncml-hmac` credentials of the HTTP device: `username:password:nonce_b64`.
    #[arg(long, value_name = "USER:PW:NONCE_B64")]
    pub http_hmac: Option<String>,
    /// Only this system_id may bind (default: any).
    #[arg(long)]
    pub system_id: Option<String>,
    /// Only this password may bind (default: any).
    #[arg(long)]
    pub password: Option<String>,
    /// Answer every submit_sm with this command_status (e.g. 0x58 throttled, 0x45 submit failed).
    #[arg(long, value_parser = parse_u32, default_value = "0")]
    pub submit_status: u32,
    /// Accept at most N submit_sm per second, answer ESME_RTHROTTLED beyond (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub throttle_per_sec: u32,
    /// Never send delivery receipts.
    #[arg(long)]
    pub no_dlr: bool,
    /// Delay before a delivery receipt is sent.
    #[arg(long, default_value_t = 100)]
    pub dlr_delay_ms: u64,
    /// Drop a concatenated SMS whose parts are not all in after this long.
    #[arg(long, default_value_t = 120)]
    pub reassembly_timeout_secs: u64,
    /// DM credentials of a device, to verify package #0 digests: `MSISDN=server_id:pw:nonce_b64`.
    /// MSISDN may be `udp` (the UDP device), `http` (the HTTP device) or `*` (any). Repeatable.
    #[arg(long = "device", value_name = "MSISDN=SERVER_ID:PW:NONCE_B64")]
    pub devices: Vec<String>,
    /// The IMSI and user PIN a device verifies DM bootstrap MACs with (SEC/MAC WSP parameters):
    /// `MSISDN=IMSI:PIN` (either may be empty; MSISDN as for `--device`). Repeatable.
    #[arg(long = "bootstrap-key", value_name = "MSISDN=IMSI:PIN")]
    pub bootstrap_keys: Vec<String>,
    /// Listen address of a webhook receiver (plays the DM server receiving dmpushd's result
    /// webhooks): verifies each signature and prints one JSON line per webhook.
    #[arg(long, value_name = "ADDR")]
    pub webhooks: Option<SocketAddr>,
    /// The tenant's `webhook_secret` (`whsec_…`) the receiver verifies signatures with.
    #[arg(long, value_name = "WHSEC")]
    pub webhook_secret: Option<String>,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let t = s.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => t.parse(),
    }
    .map_err(|_| format!("{s:?} is not a number (decimal or 0x hex)"))
}

/// Where simulator events go: a channel of JSON objects (printed one per line by [`run`]).
#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Value>,
}

impl Events {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Adds `ts` and `source` to the object and queues it. A closed channel drops the event.
    pub fn emit(&self, source: &str, mut v: Value) {
        if let Some(o) = v.as_object_mut() {
            let ts = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            o.insert("ts".into(), json!(ts));
            o.insert("source".into(), json!(source));
        }
        let _ = self.tx.send(v);
    }
}

/// A running simulator.
pub struct SimHandle {
    pub smpp: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// PEM of the HTTPS device's self-signed certificate.
    pub http_cert_pem: Option<String>,
    pub webhooks: Option<SocketAddr>,
    pub events: mpsc::UnboundedReceiver<Value>,
}

fn parse_devices(
    list: &[String],
    bootstrap_keys: &[String],
) -> anyhow::Result<HashMap<String, DmCredentials>> {
    let mut m = HashMap::new();
    for d in list {
        let (who, creds) = d
            .split_once('=')
            .with_context(|| "--device expects MSISDN=server_id:password:nonce_b64".to_owned())?;
        // Errors name the device, never the password.
        let c = DmCredentials::parse(creds).map_err(|e| anyhow::anyhow!("--device {who}: {e}"))?;
        m.insert(smsc::msisdn_key(who), c);
    }
    for k in bootstrap_keys {
        let (who, key) = k
            .split_once('=')
            .with_context(|| "--bootstrap-key expects MSISDN=IMSI:PIN".to_owned())?;
        // Errors name the device, never the IMSI or PIN.
        let key = DmCredentials::parse_bootstrap_key(key)
            .map_err(|e| anyhow::anyhow!("--bootstrap-key {who}: {e}"))?;
        // A device with a bootstrap key but no --device entry has no DM account (an empty
        // server id): its package #0 digests stay "not-checked".
        m.entry(smsc::msisdn_key(who))
            .or_insert_with(|| DmCredentials {
                server_id: String::new(),
                server_password: String::new(),
                nonce: Vec::new(),
                bootstrap: Default::default(),
            })
            .bootstrap = key;
    }
    Ok(m)
}

/// Binds every front end named in `args` and starts them; they run until `shutdown`.
pub async fn start(args: &SimArgs, shutdown: CancellationToken) -> anyhow::Result<SimHandle> {
    let devices = parse_devices(&args.devices, &args.bootstrap_keys)?;
    let (events, rx) = Events::channel();
    let smpp_addr = match (args.smpp, args.udp, args.http, args.webhooks) {
        (None, None, None, None) => Some(SocketAddr::from(([127, 0, 0, 1], 2775))),
        (s, _, _, _) => s,
    };
    let webhook_secret = args
        .webhook_secret
        .as_deref()
        .map(crate::webhook::Secret::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--webhook-secret: {e}"))?;
    let mut out = SimHandle {
        smpp: None,
        udp: None,
        http: None,
        http_cert_pem: None,
        webhooks: None,
        events: rx,
    };
    if let Some(a) = smpp_addr {
        let l = TcpListener::bind(a)
            .await
            .with_context(|| format!("SMPP listen on {a}"))?;
        out.smpp = Some(l.local_addr()?);
        smsc::spawn(
            l,
            smsc::SmscOptions {
                system_id: args.system_id.clone(),
                password: args.password.clone(),
                submit_status: args.submit_status,
                throttle_per_sec: args.throttle_per_sec,
                no_dlr: args.no_dlr,
                dlr_delay: Duration::from_millis(args.dlr_delay_ms),
                reassembly_timeout: Duration::from_secs(args.reassembly_timeout_secs.max(1)),
                devices: devices.clone(),
            },
            events.clone(),
            shutdown.clone(),
        );
    }
    if let Some(a) = args.udp {
        let s = UdpSocket::bind(a)
            .await
            .with_context(|| format!("UDP listen on {a}"))?;
        let local = s.local_addr()?;
        out.udp = Some(local);
        let port = args.udp_port_as.unwrap_or(local.port());
        let creds = smsc::lookup(&devices, "udp").cloned();
        tokio::spawn(udp_device(s, port, creds, events.clone(), shutdown.clone()));
    }
    if let Some(a) = args.http {
        let hmac = args
            .http_hmac
            .as_deref()
            .map(http::HmacExpect::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--http-hmac: {e}"))?
            .map(Arc::new);
        let dev = http::HttpDevice {
            events: events.clone(),
            hmac,
            dm: smsc::lookup(&devices, "http").cloned().map(Arc::new),
        };
        let l = TcpListener::bind(a)
            .await
            .with_context(|| format!("HTTP listen on {a}"))?;
        out.http = Some(l.local_addr()?);
        let app = http::router(dev);
        if args.https {
            let pem = http::spawn_https(l, app, shutdown.clone())?;
            if let Some(p) = &args.cert_out {
                std::fs::write(p, &pem).with_context(|| format!("writing {}", p.display()))?;
            }
            out.http_cert_pem = Some(pem);
        } else {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            });
        }
    }
    if let Some(a) = args.webhooks {
        let l = TcpListener::bind(a)
            .await
            .with_context(|| format!("webhook receiver listen on {a}"))?;
        out.webhooks = Some(l.local_addr()?);
        let app = webhooks::router(webhooks::WebhookReceiver {
            events: events.clone(),
            secret: webhook_secret,
        });
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
    }
    events.emit(
        "sim",
        json!({
            "event": "listening",
            "smpp": out.smpp.map(|a| a.to_string()),
            "udp": out.udp.map(|a| a.to_string()),
            "http": out.http.map(|a| format!("{}://{a}", if args.https { "https" } else { "http" })),
            "http_cert_pem": out.http_cert_pem,
            "webhooks": out.webhooks.map(|a| format!("http://{a}")),
            "devices_with_dm_credentials": devices.keys().collect::<Vec<_>>(),
        }),
    );
    Ok(out)
}

/// The WDP-over-UDP device: every datagram is one WSP PDU (WAP-259-WDP, UDP bearer), checked
/// with the same client rules as an SMS one; the destination port is the one it listens on.
async fn udp_device(
    sock: UdpSocket,
    port: u16,
    creds: Option<DmCredentials>,
    events: Events,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let r = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        let Ok((n, from)) = r else { continue };
        let datagram = &buf[..n];
        let mut v = device::wdp_datagram(Some(port), datagram, creds.as_ref());
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), json!("wap_push"));
            o.insert("bearer".into(), json!("udp"));
            o.insert("from".into(), json!(from.to_string()));
            o.insert("datagram_hex".into(), json!(hex::encode(datagram)));
        }
        events.emit("device", v);
    }
}

/// `dmpushd sim`: starts the front ends and prints every event as one JSON line on stdout until
/// `shutdown`.
pub async fn run(args: &SimArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut h = start(args, shutdown.clone()).await?;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = h.events.recv() => ev,
        };
        let Some(ev) = ev else { break };
        print_event(&ev)?;
    }
    // Whatever was already queued when the shutdown came.
    while let Ok(ev) = h.events.try_recv() {
        print_event(&ev)?;
    }
    Ok(())
}

/// One JSON line on stdout, flushed (a reader may be a pipe).
pub fn print_event(ev: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ev}")?;
    out.flush()?;
    Ok(())
}
