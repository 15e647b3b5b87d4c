//! Truthful outcomes end to end (issue 10 acceptance 1–3, DESIGN §10.1): an in-process gateway
//! on SQLite, driven through its REST API, with an in-process SMSC that answers every submit_sm
//! with the same message id and sends receipts only when a test says so, a UDP socket as the
//! device, and an HTTPS receiver as a second binding. The store rules themselves are checked on
//! both stores by `store_conformance`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    gateway::{Gateway, TOKEN_A, metric, settings},
    receiver::{Answer, Receiver},
    wap::ScriptedSmsc,
};
use dmpushd::binding::wap::WapConfig;

const MSISDN: &str = "+491701234567";

fn wap_config(port: u16, registered_delivery: u8) -> WapConfig {
    let toml = format!(
        "enabled = true\nallow_targets = [\"127.0.0.0/8\"]\n[[smsc]]\nname = \"acct\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         system_id = \"gw\"\npassword = \"pw\"\nwindow = 4\nregistered_delivery = {registered_delivery}\n"
    );
    config::Config::builder()
        .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

/// A gateway whose WAP binding uses `smsc`.
async fn gateway(
    smsc: &ScriptedSmsc,
    registered_delivery: u8,
    tweak: impl FnOnce(&mut dmpushd::config::Settings),
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.wap = wap_config(smsc.port, registered_delivery);
    tweak(&mut s);
    let gw = Gateway::start_with(s, Some(dir)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, b) = gw.call("GET", "/readyz", None, None).await;
        if st == 200 && crate::support::process::all_bearers_ok(&b) {
            return gw;
        }
        assert!(Instant::now() < deadline, "SMPP session never bound: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sms_push(extra: Value) -> Value {
    let mut p = json!({
        "bindings": [{"type": "wap", "msisdn": MSISDN}],
        "content_type": "application/vnd.syncml.notification",
        "body_base64": "AAAA",
    });
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    p
}

/// Polls until the push is in `state` (panics after `secs`, or when it reaches another final
/// state first).
async fn wait_state(gw: &Gateway, id: &str, state: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = gw.get_push(TOKEN_A, id).await;
        let st = p["state"].as_str().unwrap_or("").to_owned();
        if st == state {
            return p;
        }
        assert!(
            !["delivered", "failed", "expired", "cancelled", "superseded"].contains(&st.as_str()),
            "push {id} ended {st}, expected {state}: {p}"
        );
        assert!(
            Instant::now() < deadline,
            "push {id} not {state} in {secs} s: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn states(p: &Value) -> Vec<String> {
    p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn udp_push_is_unconfirmed_right_after_the_datagram() {
    let device = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = device.local_addr().unwrap();
    let gw = Gateway::start().await;
    let id = gw
        .push(
            TOKEN_A,
            json!({"bindings": [{"type": "wap", "bearer": "udp", "address": addr.to_string()}],
                   "content_type": "application/vnd.syncml.notification",
                   "body_base64": "AAAA", "ttl_seconds": 3600}),
        )
        .await;
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(10), device.recv(&mut buf))
        .await
        .expect("datagram within 10 s")
        .unwrap();
    assert!(n > 0);
    // Final as soon as the datagram is sent: no receipt can come over UDP (before: `accepted`
    // for ever, long past expires_at).
    let p = wait_state(&gw, &id, "unconfirmed", 10).await;
    assert_eq!(states(&p), ["queued", "unconfirmed"], "{p}");
    let last = p["events"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["detail"].as_str().unwrap().contains("datagram"),
        "{last}"
    );
    assert_eq!(p["binding"], "wap");
    gw.stop().await;
}

#[tokio::test]
async fn sms_without_receipt_request_is_unconfirmed_at_once() {
    let smsc = ScriptedSmsc::start("1").await;
    let gw = gateway(&smsc, 0, |_| {}).await;
    let id = gw.push(TOKEN_A, sms_push(json!({}))).await;
    let p = wait_state(&gw, &id, "unconfirmed", 10).await;
    assert_eq!(states(&p), ["queued", "unconfirmed"], "{p}");
    assert_eq!(smsc.submits(), [0], "submitted without registered_delivery");
    gw.stop().await;
}

#[tokio::test]
async fn reused_message_id_settles_only_the_push_that_holds_it() {
    // Every submit_sm is answered with message id "1".
    let smsc = ScriptedSmsc::start("1").await;
    let gw = gateway(&smsc, 1, |_| {}).await;
    let a = gw.push(TOKEN_A, sms_push(json!({}))).await;
    wait_state(&gw, &a, "accepted", 10).await;
    smsc.receipt("1", "DELIVRD");
    let pa = wait_state(&gw, &a, "delivered", 10).await;
    assert_eq!(states(&pa), ["queued", "accepted", "delivered"], "{pa}");
    // The gateway acknowledges a receipt only once it is committed.
    crate::support::wait_until("receipt acknowledged", 10, || smsc.acked() == 1).await;

    // B gets id "1" too. Before: A's stale "delivered" row finished B at once, with no receipt.
    let b = gw.push(TOKEN_A, sms_push(json!({}))).await;
    let pb = wait_state(&gw, &b, "accepted", 10).await;
    assert_eq!(states(&pb), ["queued", "accepted"], "{pb}");
    // B's own receipt settles B.
    smsc.receipt("1", "DELIVRD");
    wait_state(&gw, &b, "delivered", 10).await;
    assert_eq!(gw.get_push(TOKEN_A, &a).await["state"], "delivered");
    let m = gw.metrics_text().await;
    assert_eq!(
        metric(
            &m,
            r#"dmpushd_receipts_total{binding="wap",effect="finished"}"#
        ),
        2.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn undeliv_under_auto_falls_back_to_the_next_binding() {
    let smsc = ScriptedSmsc::start("77").await;
    let rx = Receiver::start(Duration::ZERO).await;
    rx.script(vec![Answer::status(200)]);
    let ca = rx.ca_file.clone();
    let gw = gateway(&smsc, 1, |s| s.bindings.http.ca_file = Some(ca)).await;
    gw.put_device(
        TOKEN_A,
        "dev-1",
        json!({"bindings": [{"type": "wap", "msisdn": MSISDN},
                            {"type": "http", "url": rx.url("/push")}]}),
    )
    .await;
    let id = gw
        .push(
            TOKEN_A,
            json!({"device": "dev-1", "content_type": "application/vnd.syncml.notification",
                   "body_base64": "AAAA"}),
        )
        .await;
    wait_state(&gw, &id, "accepted", 10).await;
    assert_eq!(rx.count(), 0, "HTTP not tried while WAP is accepted");
    smsc.receipt("77", "UNDELIV");
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(10)).await;
    assert_eq!(p["state"], "delivered", "{p}");
    assert_eq!(p["binding"], "http");
    assert_eq!(rx.count(), 1);
    // The timeline shows both bindings: WAP accepted, the receipt's failure and the fallback,
    // then HTTP.
    assert_eq!(
        states(&p),
        ["queued", "accepted", "queued", "delivered"],
        "{p}"
    );
    let ev = p["events"].as_array().unwrap();
    assert_eq!(ev[1]["binding"], "wap");
    assert_eq!(ev[2]["binding"], "wap");
    let detail = ev[2]["detail"].as_str().unwrap();
    assert!(
        detail.contains("UNDELIV") && detail.contains("falling back to http"),
        "{detail}"
    );
    assert_eq!(ev[3]["binding"], "http");
    let m = gw.metrics_text().await;
    assert_eq!(
        metric(
            &m,
            r#"dmpushd_receipts_total{binding="wap",effect="fell_back"}"#
        ),
        1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn no_receipt_in_time_is_unconfirmed_then_a_late_receipt_delivers() {
    let smsc = ScriptedSmsc::start("5").await;
    let gw = gateway(&smsc, 1, |s| s.queue.receipt_grace_seconds = 1).await;
    let started = Instant::now();
    let id = gw.push(TOKEN_A, sms_push(json!({"ttl_seconds": 2}))).await;
    wait_state(&gw, &id, "accepted", 10).await;
    // expires_at (2 s; the binding wants a whole second of validity left) + grace (1 s), swept
    // by the housekeeper (every 0.5 s).
    let p = wait_state(&gw, &id, "unconfirmed", 10).await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(states(&p), ["queued", "accepted", "unconfirmed"], "{p}");
    assert_eq!(smsc.submits(), [1], "receipt requested");
    // The receipt arrives late: still applied, with an event.
    smsc.receipt("5", "DELIVRD");
    let p = wait_state(&gw, &id, "delivered", 10).await;
    assert_eq!(
        states(&p),
        ["queued", "accepted", "unconfirmed", "delivered"],
        "{p}"
    );
    gw.stop().await;
}
