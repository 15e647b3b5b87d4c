//! DM bootstrap through the API (issue 13 item 4, acceptance 4; DESIGN §10.4): the WAP push carries
//! the WSP `SEC` and `MAC` Content-Type parameters; tshark decodes them from the datagram on the
//! wire; the MAC matches an independent vector; `dmpushd sim` verifies it with the IMSI/PIN it is
//! told; the IMSI and PIN appear in no API response or event; other bindings refuse.
//!
//! The independent vector: the key for IMSI 310260801674539 is the semi-octet string
//! `3901628010765493` published in Funambol's DM server `TestMac.java` (the IMSI → key rule of
//! `NotificationEngineImpl.getKeyFromIMSI`); the HMAC-SHA1 is computed by OpenSSL
//! (`openssl dgst -sha1 -mac HMAC`), both at fixture time (tests/fixtures/bootstrap/expected_macs.txt)
//! and again here over the WBXML that tshark extracted from the captured datagram.

use std::{collections::HashMap, process::Command, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use dmpushd::sim::{self, SimArgs, SimHandle};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{
    self,
    gateway::{Gateway, TOKEN_A},
    wap::{tshark_fields, tshark_raw, udp_frame, write_pcap},
};

const IMSI: &str = "310260801674539";
/// Funambol `TestMac.java`: "your used semi-octet" for the IMSI above.
const FUNAMBOL_SEMI_OCTETS: &str = "3901628010765493";
const PIN: &str = "1234";

fn expected_macs() -> HashMap<String, String> {
    String::from_utf8(support::fixture("bootstrap/expected_macs.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(s, m)| (s.to_owned(), m.trim().to_owned()))
        .collect()
}

async fn next_push(h: &mut SimHandle) -> Value {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), h.events.recv())
            .await
            .expect("a device event within 20 s")
            .expect("sim running");
        if ev["event"] == "wap_push" {
            return ev;
        }
    }
}

fn request(sim_udp: std::net::SocketAddr, sec: &str) -> Value {
    let mut boot = json!({ "sec": sec });
    if sec.contains("netw") {
        boot["imsi"] = json!(IMSI);
    }
    if sec.contains("user") {
        boot["pin"] = json!(PIN);
    }
    json!({
        // `auto`: the HTTP binding comes first and cannot carry SEC/MAC, so it is skipped.
        "bindings": [
            {"type": "http", "url": "http://127.0.0.1:9/never"},
            {"type": "wap", "bearer": "udp", "address": sim_udp.to_string()}
        ],
        "content_type": "application/vnd.syncml.dm+wbxml",
        "body_base64": B64.encode(support::fixture("bootstrap/dmacc.wbxml")),
        "bootstrap": boot,
    })
}

fn openssl_hmac_sha1(hexkey: &str, data: &[u8], dir: &std::path::Path) -> String {
    let f = dir.join("body.wbxml");
    std::fs::write(&f, data).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha1", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{hexkey}"))
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.rsplit(' ').next().unwrap().trim().to_ascii_uppercase()
}

#[tokio::test]
async fn bootstrap_push_carries_sec_and_mac_that_tshark_openssl_and_the_sim_check() {
    let tools =
        support::require_tool("tshark").is_some() && support::require_tool("openssl").is_some();
    let stop = CancellationToken::new();
    let mut sim = sim::start(
        &SimArgs {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            udp_port_as: Some(2948),
            bootstrap_keys: vec![format!("udp={IMSI}:{PIN}")],
            ..SimArgs::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let sim_udp = sim.udp.unwrap();
    let gw = Gateway::start().await;
    let want = expected_macs();
    let mut frames = Vec::new();
    for (sec, name) in [
        ("netwpin", "NETWPIN"),
        ("userpin", "USERPIN"),
        ("usernetwpin", "USERNETWPIN"),
    ] {
        let req = request(sim_udp, sec);
        let mac = &want[name];

        // preview shows the parameters in the WSP PDU it would send, and the wap binding only.
        let (s, p) = gw
            .call(
                "POST",
                "/v1/pushes/preview",
                Some(TOKEN_A),
                Some(req.clone()),
            )
            .await;
        assert_eq!(s, 200, "{p}");
        let b = p["bindings"].as_array().unwrap();
        assert_eq!(b[0]["binding"], "http");
        assert_eq!(b[0]["ok"], false, "{p}");
        assert!(b[0]["error"].as_str().unwrap().contains("bootstrap"), "{p}");
        assert_eq!(b[1]["ok"], true, "{p}");
        assert!(
            b[1]["summary"]
                .as_str()
                .unwrap()
                .contains(&format!("SEC={name}")),
            "{p}"
        );
        let unit = b[1]["units_hex"][0].as_str().unwrap().to_ascii_uppercase();
        assert!(unit.contains(&hex::encode_upper(mac.as_bytes())), "{p}");

        let id = gw.push(TOKEN_A, req).await;
        let ev = next_push(&mut sim).await;
        assert_eq!(ev["routed"], "dm", "{ev}");
        assert_eq!(ev["bootstrap"]["sec"], name, "{ev}");
        assert_eq!(ev["bootstrap"]["mac"], mac.as_str(), "{ev}");
        assert_eq!(ev["bootstrap"]["mac_check"], "ok", "{ev}");
        let datagram = hex::decode(ev["datagram_hex"].as_str().unwrap()).unwrap();
        frames.push(udp_frame(9200, 2948, &datagram));

        let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(20)).await;
        assert_eq!(p["state"], "unconfirmed", "{p}");
        assert_eq!(p["binding"], "wap", "{p}");
        // Write-only: neither the IMSI, the PIN nor the MAC shows in the view or its events.
        let text = p.to_string();
        for secret in [IMSI, FUNAMBOL_SEMI_OCTETS, mac.as_str()] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(!text.contains("\"pin\""), "{text}");
        let (_, list) = gw.call("GET", "/v1/pushes", Some(TOKEN_A), None).await;
        assert!(!list.to_string().contains(IMSI));
        assert!(
            p["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["binding"] != "http"),
            "auto skipped http without an attempt: {p}"
        );
    }
    gw.stop().await;
    stop.cancel();

    if !tools {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("bootstrap.pcap");
    write_pcap(&pcap, &frames);
    let rows = tshark_fields(
        &pcap,
        &["udp.port==2948,wsp"],
        "wsp",
        &[
            "wsp.parameter.sec",
            "wsp.parameter.mac",
            "wsp.header.content_type",
        ],
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (row, (code, name)) in rows.iter().zip([
        ("0x00", "NETWPIN"),
        ("0x01", "USERPIN"),
        ("0x02", "USERNETWPIN"),
    ]) {
        assert_eq!(row[0], code, "SEC {name}: {row:?}");
        assert_eq!(row[1], want[name], "MAC {name}: {row:?}");
        assert!(
            row[2].starts_with("application/vnd.syncml.dm+wbxml"),
            "{row:?}"
        );
    }
    // The WBXML exactly as sent, as tshark cut it out of the datagram, signed by OpenSSL with
    // Funambol's key: the same MAC as on the wire.
    let bodies = tshark_raw(&pcap, &["udp.port==2948,wsp"], "wbxml", "wbxml");
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0], support::fixture("bootstrap/dmacc.wbxml"));
    let pin_hex = hex::encode_upper(PIN);
    for (i, key) in [
        FUNAMBOL_SEMI_OCTETS.to_owned(),
        pin_hex.clone(),
        format!("{FUNAMBOL_SEMI_OCTETS}{pin_hex}"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(openssl_hmac_sha1(key, &bodies[i], dir.path()), rows[i][1]);
    }
}

#[tokio::test]
async fn other_bindings_refuse_a_bootstrap_and_xml_is_compiled_before_signing() {
    let gw = Gateway::start().await;
    let boot = json!({"sec": "userpin", "pin": PIN});
    let body = B64.encode(support::fixture("bootstrap/dmacc.wbxml"));
    for bindings in [
        json!([{"type": "http", "url": "http://127.0.0.1:9/never"}]),
        json!([{"type": "sip", "uri": "sip:device@127.0.0.1"}]),
        json!([{"type": "obex", "address": "127.0.0.1:9"}]),
    ] {
        let (s, p) = gw
            .call(
                "POST",
                "/v1/pushes",
                Some(TOKEN_A),
                Some(json!({"bindings": bindings, "bootstrap": boot,
                    "content_type": "application/vnd.syncml.dm+wbxml", "body_base64": body})),
            )
            .await;
        assert_eq!(s, 422, "{p}");
        assert!(p.to_string().contains("bootstrap"), "{p}");
        assert!(!p.to_string().contains(PIN), "{p}");
    }
    // An explicit non-WAP binding is refused too, naming `bootstrap`.
    let (s, p) = gw
        .call(
            "POST",
            "/v1/pushes",
            Some(TOKEN_A),
            Some(json!({"bindings": [
                    {"type": "http", "url": "http://127.0.0.1:9/never"},
                    {"type": "wap", "bearer": "udp", "address": "127.0.0.1:9"}],
                "binding": "http", "bootstrap": boot,
                "content_type": "application/vnd.syncml.dm+wbxml", "body_base64": body})),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert!(p.to_string().contains("bootstrap"), "{p}");
    // +xml is compiled to WBXML at submit (the MAC covers the WBXML as sent).
    let xml =
        std::fs::read_to_string(support::fixture_path("wbxml/16_bootstrap_dmacc.xml")).unwrap();
    let (s, p) = gw
        .call(
            "POST",
            "/v1/pushes/preview",
            Some(TOKEN_A),
            Some(
                json!({"bindings": [{"type": "wap", "bearer": "udp", "address": "127.0.0.1:9"}],
                "bootstrap": boot, "body": xml}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["content_type"], "application/vnd.syncml.dm+wbxml", "{p}");
    let (s, p) = gw
        .call(
            "POST",
            "/v1/pushes",
            Some(TOKEN_A),
            Some(
                json!({"bindings": [{"type": "wap", "bearer": "udp", "address": "127.0.0.1:9"}],
                "bootstrap": {"sec": "netwpin"}, "body": xml}),
            ),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert!(p.to_string().contains("bootstrap.imsi"), "{p}");
    // The OpenAPI document describes the field, with imsi and pin write-only.
    let (s, doc) = gw.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    let schema = &doc["components"]["schemas"]["BootstrapParams"];
    assert_eq!(schema["required"], json!(["sec"]), "{schema}");
    assert_eq!(schema["properties"]["imsi"]["writeOnly"], true, "{schema}");
    assert_eq!(schema["properties"]["pin"]["writeOnly"], true, "{schema}");
    assert_eq!(
        doc["components"]["schemas"]["BootstrapSec"]["enum"],
        json!(["netwpin", "userpin", "usernetwpin", "userpinmac"]),
        "{doc}"
    );
    gw.stop().await;
}
