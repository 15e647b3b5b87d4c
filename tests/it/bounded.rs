//! Bounded by construction (DESIGN §10.3, issue 12 acceptance 5): what peers send cannot grow
//! the gateway's label sets without limit.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    gateway::{Gateway, TOKEN_A, settings},
    wap::ScriptedSmsc,
};
use dmpushd::binding::wap::WapConfig;

fn wap_config(port: u16) -> WapConfig {
    let toml = format!(
        "enabled = true\n[[smsc]]\nname = \"acct\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         system_id = \"gw\"\npassword = \"pw\"\nwindow = 4\nregistered_delivery = 1\n"
    );
    config::Config::builder()
        .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

/// 1,000 receipts with made-up `stat:` values leave `dmpushd_smpp_receipts_total` with at most
/// one series per known message state plus `other` (before: one series per made-up status).
#[tokio::test]
async fn made_up_receipt_statuses_do_not_grow_the_receipt_metric() {
    let smsc = ScriptedSmsc::start("1").await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.wap = wap_config(smsc.port);
    let gw = Gateway::start_with(s, Some(dir)).await;
    // A push binds the session (and gives the SMSC a session to send receipts on).
    let id = gw
        .push(
            TOKEN_A,
            json!({
                "bindings": [{"type": "wap", "msisdn": "+491701234567"}],
                "content_type": "application/vnd.syncml.notification",
                "body_base64": "AAAA",
            }),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.get_push(TOKEN_A, &id).await["state"] != "accepted" {
        assert!(Instant::now() < deadline, "push never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..1000 {
        smsc.receipt(&format!("{}", 10_000 + i), &format!("MADEUP{i}"));
    }
    smsc.receipt("1", "DELIVRD");
    crate::support::wait_until("receipts acknowledged", 30, || smsc.acked() == 1001).await;
    let m = gw.metrics_text().await;
    let series: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("dmpushd_smpp_receipts_total{"))
        .collect();
    assert!(
        !series.is_empty() && series.len() <= 10,
        "{} series: {series:?}",
        series.len()
    );
    assert!(
        series
            .iter()
            .any(|l| l.contains("state=\"other\"") || l.contains("\"other\"")),
        "{series:?}"
    );
    assert!(
        !m.contains("MADEUP"),
        "a made-up status became a label value"
    );
    gw.stop().await;
}
