//! End to end through the REST API over the WAP binding: SMS via SMPP to the npm `smpp` SMSC
//! simulator (an implementation nobody here wrote), delivery receipts turning pushes
//! `delivered`, and `kill -9` during an SMPP burst (issue #4 acceptance 2 and 5).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::support::{
    self, free_port,
    gateway::{Gateway, TOKEN_A, settings, xml_push},
    process::{count_states as states, spawn_serve as spawn, wait_ok},
    wap::Sim,
};
use dmpushd::{binding::wap::WapConfig, codec};
use serde_json::json;

const DM_XML: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:490154203237518</LocURI></Target><Source><LocURI>https://dms.example</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Replace><CmdID>2</CmdID><Item><Target><LocURI>./DevInfo/Lang</LocURI></Target><Data>en-US</Data></Item></Replace><Final/></SyncBody></SyncML>"#;

fn peers() -> bool {
    support::require_tool("node").is_some()
}

fn wap_config(port: u16) -> WapConfig {
    let toml = format!(
        "enabled = true\n[[smsc]]\nname = \"sim\"\nhost = \"127.0.0.1\"\nport = {port}\nsystem_id = \"gw\"\npassword = \"pw\"\nwindow = 20\n"
    );
    config::Config::builder()
        .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

/// Waits until the SMPP session is bound (readiness says so).
async fn wait_ready(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = gw.call("GET", "/readyz", None, None).await;
        if s == 200 && crate::support::process::all_bearers_ok(&b) {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn xml_and_notification_over_sms_are_delivered_by_receipts() {
    if !peers() {
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
    s.bindings.wap = wap_config(sim.port);
    let gw = Gateway::start_with(s, None).await;
    wait_ready(&gw).await;
    gw.put_device(
        TOKEN_A,
        "IMEI:490154203237518",
        json!({"bindings": [{"type": "wap", "msisdn": "+491701234567"}],
               "dm": {"server_id": "com.example.dms", "server_password": "srvpass", "server_nonce": "AQIDBAUGBwg="}}),
    )
    .await;

    // The preview shows the segments the XML becomes once compiled to WBXML.
    let (st, pv) = gw
        .call(
            "POST",
            "/v1/pushes/preview",
            Some(TOKEN_A),
            Some(xml_push("IMEI:490154203237518", DM_XML)),
        )
        .await;
    assert_eq!(st, 200, "{pv}");
    assert_eq!(pv["bindings"][0]["ok"], true, "{pv}");

    let xml_id = gw
        .push(TOKEN_A, xml_push("IMEI:490154203237518", DM_XML))
        .await;
    let ntf_id = gw
        .push(TOKEN_A, json!({"device": "IMEI:490154203237518", "notification": {"ui_mode": "background", "session_id": 4660}}))
        .await;
    for id in [&xml_id, &ntf_id] {
        let p = gw.wait_final(TOKEN_A, id, Duration::from_secs(20)).await;
        assert_eq!(p["state"], "delivered", "{p}");
        assert_eq!(p["binding"], "wap");
        let states: Vec<&str> = p["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["queued", "accepted", "delivered"], "{p}");
    }

    // What reached the SMSC: UDH port addressing 2948 <- 9200, UDHI, 8-bit data; reassembled,
    // the WSP PDUs carry the compiled WBXML (0xC2) and the notification (0xC4).
    let submits = sim.events_of("submit_sm");
    let mut parts: std::collections::BTreeMap<u16, Vec<(u8, Vec<u8>)>> = Default::default();
    let mut whole = Vec::new();
    for s in &submits {
        assert_eq!(s["esm_class"], 64);
        assert_eq!(s["data_coding"], 4);
        assert_eq!(s["destination_addr"], "491701234567");
        let sm = hex::decode(s["short_message_hex"].as_str().unwrap()).unwrap();
        let ud = codec::sms::parse_user_data(&sm).unwrap();
        assert_eq!((ud.dest_port, ud.src_port), (Some(2948), Some(9200)));
        match ud.concat {
            Some((r, _, seq)) => parts.entry(r).or_default().push((seq, ud.payload)),
            None => whole.push(ud.payload),
        }
    }
    for (_, mut segs) in parts {
        segs.sort();
        whole.push(segs.into_iter().flat_map(|(_, p)| p).collect());
    }
    let pdus: Vec<codec::wsp::PushPdu> = whole
        .iter()
        .map(|w| codec::wsp::PushPdu::decode(w).unwrap())
        .collect();
    assert_eq!(pdus.len(), 2, "one WSP PDU per push");
    let xml = pdus
        .iter()
        .find_map(|p| codec::wbxml::wbxml_to_xml(&p.body).ok())
        .expect("one SMS payload is WBXML compiled from the XML");
    assert!(xml.contains("./DevInfo/Lang"), "{xml}");
    let m = gw.metrics_text().await;
    assert!(m.contains("dmpushd_smpp_"), "SMPP metrics exported");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------

const TOKEN: &str = "wap-crash-token";
const N: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_smpp_burst_loses_nothing() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Receipts are off: a DLR for a submit made just before the kill would go to a dead
    // session (the simulator does not queue them, unlike a real SMSC), which is not what this
    // test is about. Every push must reach the SMSC: `accepted` with its submit recorded.
    let sim = Sim::start(dir.path(), &["--no-dlr"]);
    let db = dir.path().join("wap.db");
    let port = free_port();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{db}\"\n[queue]\nlease_seconds = 3\nper_target_concurrency = 64\nworkers = 64\n\
             [[tenants]]\nname = \"t\"\ntoken = \"{TOKEN}\"\n[bindings.wap]\nenabled = true\n[[bindings.wap.smsc]]\nname = \"sim\"\nhost = \"127.0.0.1\"\nport = {sp}\nwindow = 10\nthroughput = 300.0\n",
            db = db.display(),
            sp = sim.port
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    dmpushd::tls::install_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut child = spawn(&config);
    wait_ok(&http, &base, "/readyz").await;
    let r = http
        .put(format!("{base}/v1/devices/d"))
        .bearer_auth(TOKEN)
        .json(&json!({"bindings": [{"type": "wap", "msisdn": "+491701234567"}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut ids = Vec::new();
    for i in 0..N {
        // Distinct vendor bodies make every push's SMS distinguishable at the SMSC.
        let body = codec::hmac::b64_md5(format!("push-{i}").as_bytes());
        let r = http
            .post(format!("{base}/v1/pushes"))
            .bearer_auth(TOKEN)
            .json(
                &json!({"device": "d", "content_type": "application/vnd.syncml.notification",
                          "body_base64": body}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Kill in the middle of the burst (throughput is capped at 300 submit_sm/s).
    support::wait_until("first submits", 30, || {
        sim.events_of("submit_sm").len() >= 100
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = states(&db).await;
    let in_flight = *at_kill.get("sending").unwrap_or(&0);

    let mut child = spawn(&config);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = states(&db).await;
        assert_eq!(s.values().sum::<i64>() as usize, N, "{s:?}");
        if *s.get("accepted").unwrap_or(&0) as usize == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all pushes reached the SMSC: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Keyed by the WSP body: a resubmission has a new TID, so the raw SMS differs.
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for s in sim.events_of("submit_sm") {
        let sm = hex::decode(s["short_message_hex"].as_str().unwrap()).unwrap();
        let ud = codec::sms::parse_user_data(&sm).unwrap();
        let pdu = codec::wsp::PushPdu::decode(&ud.payload).unwrap();
        *seen.entry(pdu.body).or_default() += 1;
    }
    assert_eq!(seen.len(), N, "every accepted push was submitted");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "wap crash test: {N} accepted, {in_flight} leased at kill -9, {duplicates} duplicate submit_sm after restart"
    );
    assert!(
        duplicates as i64 <= in_flight,
        "duplicates {duplicates} > in flight {in_flight}"
    );
}
