//! `dmpushd sim` against independent peers: a raw Python ESME (`tests/peers/sim/esme.py`, PDUs
//! and UDH packed by hand from SMPP 3.4 / TS 23.040, not with dmpushd's codecs), WBXML fixtures
//! produced by libwbxml, package #0 vectors recomputed with OpenSSL, an HMAC computed here from
//! the DM security formula; and the gateway's own WAP and HTTP bindings end to end.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use dmpushd::sim::{self, SimArgs, SimHandle};
use md5::{Digest as _, Md5};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

use crate::support::{self, fixture};

const WAIT: Duration = Duration::from_secs(15);

/// A connectionless Push PDU built by hand: TID, 0x06, headers length, content type (short
/// integer), X-Wap-Application-Id (0xAF) + value (WAP-230-WSP §8.2.4.1, §8.4.2.24).
/// An empty `app` leaves the application id header out.
fn push_pdu(ct: u8, app: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x2A, 0x06];
    if app.is_empty() {
        v.extend_from_slice(&[1, ct | 0x80]);
    } else {
        v.extend_from_slice(&[(2 + app.len()) as u8, ct | 0x80, 0xAF]);
        v.extend_from_slice(app);
    }
    v.extend_from_slice(body);
    v
}

async fn start(args: SimArgs) -> (SimHandle, CancellationToken) {
    let stop = CancellationToken::new();
    let h = sim::start(&args, stop.clone()).await.expect("sim starts");
    (h, stop)
}

fn smpp_args() -> SimArgs {
    SimArgs {
        smpp: Some("127.0.0.1:0".parse().unwrap()),
        dlr_delay_ms: 10,
        ..SimArgs::default()
    }
}

/// Runs the Python ESME with `spec`; returns its JSON lines.
async fn esme(addr: SocketAddr, extra: &[&str], spec: Value) -> Option<Vec<Value>> {
    let py = support::require_tool("python3")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/sim/esme.py");
    let mut cmd = tokio::process::Command::new(py);
    cmd.arg(script)
        .args(["--port", &addr.port().to_string(), "--timeout", "10"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(spec.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("esme.py finishes")
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("esme.py prints JSON"))
        .collect();
    assert!(out.status.success(), "esme.py failed: {lines:?}");
    Some(lines)
}

/// Collects simulator events until `n` match `pred` (or the deadline: then panics with what came).
async fn wait_events(h: &mut SimHandle, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    let mut all = Vec::new();
    let mut hits = Vec::new();
    while hits.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, h.events.recv()).await {
            Ok(Some(ev)) => {
                if pred(&ev) {
                    hits.push(ev.clone());
                }
                all.push(ev);
            }
            _ => panic!("expected {n} matching events, got {}: {all:#?}", hits.len()),
        }
    }
    hits
}

fn is_push(ev: &Value) -> bool {
    ev["event"] == "wap_push" || ev["event"] == "http_push"
}

/// Elements as (local name, trimmed text) in document order: a structural XML comparison that
/// ignores the XML declaration and formatting.
fn xml_shape(xml: &str) -> Vec<(String, String)> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(xml, opts).expect("well-formed XML");
    doc.descendants()
        .filter(|n| n.is_element())
        .map(|n| {
            let text: String = n
                .children()
                .filter(|c| c.is_text())
                .filter_map(|c| c.text())
                .collect();
            (n.tag_name().name().to_owned(), text.trim().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn reassembles_8_and_16_bit_references_out_of_order_and_decodes_wbxml() {
    let (mut h, stop) = start(smpp_args()).await;
    let big = fixture("wbxml/16_bootstrap_dmacc.wbxml");
    let mid = fixture("wbxml/13_results_status.wbxml");
    let d8 = push_pdu(0x42, &[0x87], &big);
    let d16 = push_pdu(0x42, &[0x87], &mid);
    let Some(out) = esme(
        h.smpp.unwrap(),
        &[],
        json!({"submits": [
            {"to": "+15550100001", "datagram_hex": hex::encode(&d8), "ref_bits": 8, "ref": 7,
             "reverse": true, "registered_delivery": 1},
            {"to": "+15550100001", "datagram_hex": hex::encode(&d16), "ref_bits": 16, "ref": 7,
             "registered_delivery": 1}],
          "enquire_link": true, "receipts": 9}),
    )
    .await
    else {
        return;
    };
    let pushes = wait_events(&mut h, 2, is_push).await;
    stop.cancel();

    // 654 + 6 octets in 128-octet parts = 6 SMS; 250 + 6 in 127-octet parts = 3 SMS.
    let by_bits = |b: u64| pushes.iter().find(|e| e["ref_bits"] == b).unwrap();
    let (e8, e16) = (by_bits(8), by_bits(16));
    assert_eq!(e8["segments"], 6, "{e8}");
    assert_eq!(e16["segments"], 3, "{e16}");
    for (ev, fx, d) in [
        (e8, "16_bootstrap_dmacc", &d8),
        (e16, "13_results_status", &d16),
    ] {
        assert_eq!(ev["routed"], "dm", "{ev}");
        assert_eq!(ev["to"], "15550100001");
        assert_eq!(ev["dest_port"], 2948);
        assert_eq!(ev["datagram_hex"], hex::encode(d));
        let want = String::from_utf8(fixture(&format!("wbxml/{fx}.xml"))).unwrap();
        assert_eq!(
            xml_shape(ev["xml"].as_str().unwrap()),
            xml_shape(&want),
            "{fx}"
        );
    }

    // Every SMS got a message id and a receipt naming it (text and TLV forms agree).
    let ids: Vec<&str> = out
        .iter()
        .filter(|l| l["event"] == "submit_sm_resp")
        .map(|l| {
            assert_eq!(l["status"], 0);
            l["message_id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 9);
    let receipts: Vec<&Value> = out.iter().filter(|l| l["event"] == "deliver_sm").collect();
    assert_eq!(receipts.len(), 9, "{out:#?}");
    for r in &receipts {
        assert_eq!(r["esm_class"], 4);
        assert_eq!(r["message_state"], 2);
        let id = r["receipted_message_id"].as_str().unwrap();
        assert!(ids.contains(&id), "receipt for unknown id {id}");
        let text = r["short_message"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("id:{id} sub:001 dlvrd:001 ")),
            "{text}"
        );
        assert!(text.contains("stat:DELIVRD err:000"), "{text}");
        assert_eq!(r["from"], "15550100001");
    }
    assert!(
        out.iter()
            .any(|l| l["event"] == "enquire_link_resp" && l["status"] == 0)
    );
    assert!(out.iter().any(|l| l["event"] == "unbind_resp"));
}

#[tokio::test]
async fn npm_smpp_esme_interoperates_with_the_smsc() {
    let Some(node) = support::require_tool("node") else {
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if !root.join("tests/peers/smpp/node_modules/smpp").is_dir() {
        assert!(
            std::env::var("DMPUSHD_REQUIRE_PEERS").as_deref() != Ok("1"),
            "npm smpp missing: run scripts/install-peers.sh"
        );
        eprintln!("SKIP: npm smpp not installed (scripts/install.d/sim.sh)");
        return;
    }
    let (mut h, stop) = start(smpp_args()).await;
    // One single SMS (Kannel's UDH 06 05 04 0B 84 23 F0) and a two-part one with a 16-bit
    // reference 0x1234, split by hand at 127 octets (TS 23.040 §9.2.3.24.8).
    let xml = b"<SyncML xmlns=\"SYNCML:SYNCML1.2\"/>";
    let mut single = hex::decode("0605040b8423f0").unwrap();
    single.extend(push_pdu(0x43, &[0x87], xml));
    let d = push_pdu(0x42, &[0x87], &fixture("wbxml/01_alert_1200.wbxml"));
    let mut p1 = hex::decode("0c05040b8423f00804123402").unwrap();
    let mut p2 = p1.clone();
    p1.push(1);
    p2.push(2);
    p1.extend_from_slice(&d[..127]);
    p2.extend_from_slice(&d[127..]);
    let script = root.join("tests/peers/sim/esme-npm.js");
    let port = h.smpp.unwrap().port().to_string();
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(node)
            .arg(script)
            .args(["--port", &port, "--to", "15550500001"])
            .args([hex::encode(&single), hex::encode(&p2), hex::encode(&p1)])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("esme-npm.js finishes")
    .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(out.status.success(), "{lines:?}");
    assert_eq!(lines[0]["event"], "bind_resp");
    assert_eq!(lines[0]["status"], 0);
    let ids: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "submit_sm_resp")
        .map(|l| l["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let receipts: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "deliver_sm")
        .collect();
    assert_eq!(receipts.len(), 3);
    for r in receipts {
        // The library decodes the TLVs and the text itself.
        assert!(
            ids.contains(&r["receipted_message_id"].as_str().unwrap()),
            "{r}"
        );
        assert_eq!(r["message_state"], 2);
        assert!(r["text"].as_str().unwrap().contains("stat:DELIVRD"), "{r}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "enquire_link_resp" && l["status"] == 0)
    );
    let evs = wait_events(&mut h, 2, is_push).await;
    stop.cancel();
    assert_eq!(evs[0]["segments"], 1);
    assert_eq!(evs[0]["xml"], std::str::from_utf8(xml).unwrap());
    assert_eq!(evs[1]["segments"], 2);
    assert_eq!(evs[1]["ref_bits"], 16);
    assert_eq!(evs[1]["routed"], "dm");
    let want = String::from_utf8(fixture("wbxml/01_alert_1200.xml")).unwrap();
    assert_eq!(xml_shape(evs[1]["xml"].as_str().unwrap()), xml_shape(&want));
}

/// Reads one PDU (header fields) from a raw socket, with a deadline.
async fn read_pdu(s: &mut tokio::net::TcpStream) -> Option<(u32, u32, u32)> {
    use tokio::io::AsyncReadExt as _;
    let mut hdr = [0u8; 16];
    tokio::time::timeout(WAIT, s.read_exact(&mut hdr))
        .await
        .expect("a PDU or EOF in time")
        .ok()?;
    let f = |i: usize| u32::from_be_bytes(hdr[i..i + 4].try_into().unwrap());
    let mut rest = vec![0u8; (f(0) as usize).saturating_sub(16)];
    s.read_exact(&mut rest).await.ok()?;
    Some((f(4), f(8), f(12)))
}

#[tokio::test]
async fn smsc_answers_garbage_with_generic_nack() {
    let (_h, stop) = start(smpp_args()).await;
    let mut s = tokio::net::TcpStream::connect(_h.smpp.unwrap())
        .await
        .unwrap();
    // bind_transceiver "a"/"" (SMPP 3.4 §4.1.5), packed by hand.
    let body = b"a\0\0\0\x34\x00\x00\0";
    let mut bind = ((16 + body.len()) as u32).to_be_bytes().to_vec();
    bind.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1]);
    bind.extend_from_slice(body);
    s.write_all(&bind).await.unwrap();
    assert_eq!(read_pdu(&mut s).await, Some((0x8000_0009, 0, 1)));
    // A second bind is refused (ESME_RALYBND) and the session stays up.
    let mut again = bind.clone();
    again[15] = 2;
    s.write_all(&again).await.unwrap();
    assert_eq!(read_pdu(&mut s).await, Some((0x8000_0009, 0x05, 2)));
    // Unknown command id → generic_nack ESME_RINVCMDID with the same sequence.
    s.write_all(&[0, 0, 0, 16, 0, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 3])
        .await
        .unwrap();
    assert_eq!(read_pdu(&mut s).await, Some((0x8000_0000, 0x03, 3)));
    // enquire_link still answered.
    s.write_all(&[0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 4])
        .await
        .unwrap();
    assert_eq!(read_pdu(&mut s).await, Some((0x8000_0015, 0, 4)));
    // An impossible command_length → generic_nack ESME_RINVCMDLEN, then the SMSC hangs up.
    s.write_all(&[0, 0, 0, 8, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5])
        .await
        .unwrap();
    assert_eq!(read_pdu(&mut s).await, Some((0x8000_0000, 0x02, 0)));
    assert_eq!(read_pdu(&mut s).await, None, "connection closed");
    stop.cancel();
}

#[tokio::test]
async fn client_rules_discard_what_is_not_for_the_dm_application() {
    let (mut h, stop) = start(smpp_args()).await;
    let xml = b"<SyncML xmlns=\"SYNCML:SYNCML1.2\"/>".to_vec();
    let cases = [
        // (msisdn, datagram, dport, expected routed, reason fragment)
        (
            "+15550000001",
            push_pdu(0x43, &[0x87], &xml),
            2948,
            "dm",
            "",
        ),
        (
            "+15550000002",
            push_pdu(0x43, &[0x84], &xml),
            2948,
            "discarded",
            "Application-Id",
        ),
        (
            "+15550000003",
            push_pdu(0x43, &[0x87], &xml),
            9200,
            "discarded",
            "port 9200",
        ),
        (
            "+15550000004",
            push_pdu(0x43, &[0x87], &xml),
            2949,
            "discarded",
            "2949",
        ),
        (
            "+15550000005",
            push_pdu(0x36, &[0x87], &xml),
            2948,
            "discarded",
            "not a DM type",
        ),
        (
            "+15550000006",
            push_pdu(0x43, &[], &xml),
            2948,
            "discarded",
            "no X-Wap-Application-Id",
        ),
    ];
    let mut submits: Vec<Value> = cases
        .iter()
        .map(|(to, d, port, _, _)| json!({"to": to, "datagram_hex": hex::encode(d), "dport": port}))
        .collect();
    // ConfirmedPush (0x07): needs a WSP session, not connectionless (seed §5.1.1).
    let mut confirmed = push_pdu(0x43, &[0x87], &xml);
    confirmed[1] = 0x07;
    submits.push(json!({"to": "+15550000007", "datagram_hex": hex::encode(&confirmed)}));
    // Text SMS (no UDHI, no port TLVs) and 7-bit DCS.
    submits.push(
        json!({"to": "+15550000008", "short_message_hex": hex::encode("hello"),
                        "esm_class": 0, "data_coding": 4}),
    );
    submits.push(
        json!({"to": "+15550000009", "datagram_hex": hex::encode(push_pdu(0x43, &[0x87], &xml)),
                        "data_coding": 0}),
    );
    // The text form of the application id, routed (protocol-facts §A.5).
    let mut app = b"x-wap-application:syncml.dm".to_vec();
    app.push(0);
    submits.push(
        json!({"to": "+15550000010", "datagram_hex": hex::encode(push_pdu(0x43, &app, &xml))}),
    );
    // TLV port addressing (no UDH): the SMSC would build the UDH from these (addendum Q5).
    let d = push_pdu(0x43, &[0x87], &xml);
    submits.push(json!({"to": "+15550000011", "short_message_hex": hex::encode(&d), "esm_class": 0,
                        "tlvs": [{"tag": 0x020B, "value_hex": "0b84"}, {"tag": 0x020A, "value_hex": "23f0"}]}));
    if esme(h.smpp.unwrap(), &[], json!({"submits": submits}))
        .await
        .is_none()
    {
        return;
    }
    let evs = wait_events(&mut h, 11, |e| e["event"] == "wap_push").await;
    stop.cancel();
    let get = |to: &str| evs.iter().find(|e| e["to"] == to).unwrap();
    for (to, _, _, routed, frag) in cases {
        let e = get(&to[1..]);
        assert_eq!(e["routed"], routed, "{e}");
        if routed == "discarded" {
            assert!(e["reason"].as_str().unwrap().contains(frag), "{e}");
            assert!(e.get("xml").is_none());
        } else {
            assert_eq!(e["xml"], std::str::from_utf8(&xml).unwrap());
        }
    }
    let reason = |to: &str| get(to)["reason"].as_str().unwrap_or("").to_owned();
    assert!(reason("15550000007").contains("0x07"));
    assert!(reason("15550000008").contains("no WDP port"));
    assert!(reason("15550000009").contains("not 8-bit"));
    assert_eq!(get("15550000010")["routed"], "dm");
    assert_eq!(get("15550000011")["routed"], "dm");
    assert_eq!(get("15550000011")["dest_port"], 2948);
}

#[tokio::test]
async fn package0_digest_good_and_bad_password() {
    let mut args = smpp_args();
    args.devices = vec![
        "+15550200001=com.example.dms:srvpass:AQIDBAUGBwg=".into(),
        "+15550200002=com.example.dms:not-the-password:AQIDBAUGBwg=".into(),
        // Funambol/SCTS parameters (tests/fixtures/notification/README.md).
        "15550200003=Scts:SimpleClient:AOVuAA==".into(),
    ];
    let (mut h, stop) = start(args).await;
    let d8 = push_pdu(0x44, &[0x87], &fixture("notification/d8_example1.bin"));
    let scts = push_pdu(0x44, &[0x87], &fixture("notification/d8_scts.bin"));
    let spec = json!({"submits": [
        {"to": "+15550200001", "datagram_hex": hex::encode(&d8)},
        {"to": "+15550200002", "datagram_hex": hex::encode(&d8)},
        {"to": "+15550200003", "datagram_hex": hex::encode(&scts)},
        {"to": "+15550200004", "datagram_hex": hex::encode(&d8)}]});
    if esme(h.smpp.unwrap(), &[], spec).await.is_none() {
        return;
    }
    let evs = wait_events(&mut h, 4, |e| e["event"] == "wap_push").await;
    stop.cancel();
    let get = |to: &str| evs.iter().find(|e| e["to"] == to).unwrap().clone();
    let good = get("15550200001");
    assert_eq!(good["routed"], "dm");
    assert_eq!(good["digest"], "ok", "{good}");
    assert_eq!(good["notification"]["version"], 12);
    assert_eq!(good["notification"]["ui_mode"], "informative");
    assert_eq!(good["notification"]["initiator"], "server");
    assert_eq!(good["notification"]["session_id"], 0x1234);
    assert_eq!(
        good["notification"]["digest_hex"],
        "d3290f1cbc08ea0e45867199db5cfcdf"
    );
    assert_eq!(get("15550200002")["digest"], "mismatch");
    assert_eq!(get("15550200003")["digest"], "ok");
    assert_eq!(get("15550200003")["notification"]["session_id"], 12345);
    assert_eq!(get("15550200004")["digest"], "not-checked");
}

#[tokio::test]
async fn bind_checks_forced_status_and_throttling() {
    let mut args = smpp_args();
    args.system_id = Some("gw".into());
    args.password = Some("secret".into());
    args.throttle_per_sec = 1;
    let (mut h, stop) = start(args).await;
    let addr = h.smpp.unwrap();
    let d = hex::encode(push_pdu(0x43, &[0x87], b"<SyncML/>"));
    let Some(bad) = esme(
        addr,
        &["--system-id", "gw", "--password", "wrong"],
        json!({}),
    )
    .await
    else {
        return;
    };
    assert_eq!(bad[0]["status"], 0x0E, "ESME_RINVPASWD: {bad:?}");
    let bad = esme(
        addr,
        &["--system-id", "other", "--password", "secret"],
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(bad[0]["status"], 0x0F, "ESME_RINVSYSID: {bad:?}");
    // A receiver-only bind may not submit (ESME_RINVBNDSTS).
    let rx = esme(
        addr,
        &["--system-id", "gw", "--password", "secret", "--bind", "rx"],
        json!({"submits": [{"to": "+15550300001", "datagram_hex": d}]}),
    )
    .await
    .unwrap();
    assert_eq!(rx[1]["status"], 0x04, "{rx:?}");
    // Two submits within one second with a limit of 1/s: the second is throttled (0x58).
    let out = esme(
        addr,
        &["--system-id", "gw", "--password", "secret"],
        json!({"submits": [{"to": "+15550300002", "datagram_hex": d}, {"to": "+15550300003", "datagram_hex": d}]}),
    )
    .await
    .unwrap();
    let st: Vec<&Value> = out
        .iter()
        .filter(|l| l["event"] == "submit_sm_resp")
        .map(|l| &l["status"])
        .collect();
    assert_eq!(st, [&json!(0), &json!(0x58)], "{out:?}");
    let ev = wait_events(&mut h, 1, |e| e["event"] == "wap_push").await;
    assert_eq!(ev[0]["to"], "15550300002");
    stop.cancel();

    // --submit-status forces an error: no message id, nothing reaches the handset.
    let mut args = smpp_args();
    args.submit_status = 0x45;
    let (mut h, stop) = start(args).await;
    let out = esme(
        h.smpp.unwrap(),
        &[],
        json!({"submits": [{"to": "+15550300004", "datagram_hex": d, "registered_delivery": 1}]}),
    )
    .await
    .unwrap();
    let resp = out.iter().find(|l| l["event"] == "submit_sm_resp").unwrap();
    assert_eq!(resp["status"], 0x45);
    assert_eq!(resp["message_id"], "");
    let evs = wait_events(&mut h, 1, |e| e["event"] == "submit_sm").await;
    assert_eq!(evs[0]["status"], "ESME_RSUBMITFAIL");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                match h.events.recv().await {
                    Some(e) if e["event"] == "wap_push" => return,
                    Some(_) => {}
                    None => std::future::pending::<()>().await,
                }
            }
        })
        .await
        .is_err(),
        "a refused submit_sm must not reach the handset"
    );
    stop.cancel();
}

#[tokio::test]
async fn udp_device_applies_the_port_rule() {
    let (mut h, stop) = start(SimArgs {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        udp_port_as: Some(2948),
        devices: vec!["udp=com.example.dms:srvpass:AQIDBAUGBwg=".into()],
        ..SimArgs::default()
    })
    .await;
    let (mut raw, stop2) = start(SimArgs {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        ..SimArgs::default()
    })
    .await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let d = push_pdu(0x44, &[0x87], &fixture("notification/d8_example1.bin"));
    sock.send_to(&d, h.udp.unwrap()).unwrap();
    sock.send_to(&d, raw.udp.unwrap()).unwrap();
    let e = &wait_events(&mut h, 1, is_push).await[0];
    assert_eq!(e["bearer"], "udp");
    assert_eq!(e["routed"], "dm", "{e}");
    assert_eq!(e["digest"], "ok");
    let port = raw.udp.unwrap().port();
    let e = &wait_events(&mut raw, 1, is_push).await[0];
    assert_eq!(e["routed"], "discarded");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("port {port} is not the WAP push port 2948")),
        "{e}"
    );
    stop.cancel();
    stop2.cancel();
}

/// `x-syncml-hmac` from the DM security formula (OMA DM Security §5.5.2.2), computed here:
/// H = MD5, B64 = base64; mac = B64(H(B64(H(user:pw)) ":" nonce ":" B64(H(body)))).
fn independent_hmac(user: &str, pw: &str, nonce: &[u8], body: &[u8]) -> String {
    let cred = B64.encode(Md5::digest(format!("{user}:{pw}").as_bytes()));
    let bh = B64.encode(Md5::digest(body));
    let mut m = Md5::new();
    m.update(cred.as_bytes());
    m.update(b":");
    m.update(nonce);
    m.update(b":");
    m.update(bh.as_bytes());
    format!(
        "algorithm=MD5, username=\"{user}\", mac={}",
        B64.encode(m.finalize())
    )
}

#[tokio::test]
async fn http_device_verifies_hmac_in_both_framings() {
    let (mut h, stop) = start(SimArgs {
        http: Some("127.0.0.1:0".parse().unwrap()),
        http_hmac: Some("dmserver:hmac-pw:Tk9OQ0UxMjM=".into()),
        ..SimArgs::default()
    })
    .await;
    let url = format!("http://{}/push", h.http.unwrap());
    dmpushd::tls::install_provider();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let body = b"<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr/></SyncML>";
    let good = independent_hmac("dmserver", "hmac-pw", b"NONCE123", body);
    let bad = independent_hmac("dmserver", "other-pw", b"NONCE123", body);
    let direct = |hmac: Option<String>| {
        let mut r = c
            .post(&url)
            .header("content-type", "application/vnd.syncml.dm+xml")
            .header("x-wap-application-id", "x-wap-application:syncml.dm")
            .body(body.to_vec());
        if let Some(v) = hmac {
            r = r.header("x-syncml-hmac", v);
        }
        r.send()
    };
    assert_eq!(direct(Some(good.clone())).await.unwrap().status(), 200);
    assert_eq!(direct(Some(bad.clone())).await.unwrap().status(), 401);
    assert_eq!(direct(None).await.unwrap().status(), 401);
    let nested = |hmac: &str| {
        let mut m = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.syncml.dm+xml\r\nContent-Length: {}\r\nX-Wap-Application-Id: x-wap-application:syncml.dm\r\nx-syncml-hmac: {hmac}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        m.extend_from_slice(body);
        c.post(&url)
            .header("content-type", "application/http")
            .header("x-wap-push-ota-version", "1.0")
            .body(m)
            .send()
    };
    assert_eq!(nested(&good).await.unwrap().status(), 200);
    assert_eq!(nested(&bad).await.unwrap().status(), 401);
    let evs = wait_events(&mut h, 5, is_push).await;
    let hm: Vec<(&str, &str)> = evs
        .iter()
        .map(|e| (e["framing"].as_str().unwrap(), e["hmac"].as_str().unwrap()))
        .collect();
    assert_eq!(
        hm,
        [
            ("direct", "ok"),
            ("direct", "mismatch"),
            ("direct", "missing"),
            ("ota-http", "ok"),
            ("ota-http", "mismatch")
        ]
    );
    assert_eq!(evs[0]["xml"], std::str::from_utf8(body).unwrap());
    assert_eq!(evs[3]["routed"], "dm");
    assert_eq!(evs[4]["routed"], "discarded");
    stop.cancel();
}

mod gateway {
    //! The gateway's own bindings against the simulator, through the REST API.
    use super::*;
    use crate::support::gateway::{Gateway, TOKEN_A, settings};
    use dmpushd::{binding::wap::SmscConfig, codec::sms::RefWidth};

    async fn wait_state(gw: &Gateway, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v: Value = gw
                .http
                .get(format!("{}/v1/pushes/{id}", gw.base))
                .bearer_auth(TOKEN_A)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["state"] == want {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "push {id} never reached {want}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn push(gw: &Gateway, body: Value) -> String {
        let r = gw
            .http
            .post(format!("{}/v1/pushes", gw.base))
            .bearer_auth(TOKEN_A)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn wap_binding_with_16_bit_references_is_reassembled_and_receipted() {
        let mut args = smpp_args();
        args.devices = vec!["+15550400001=dms:pw:AAECAw==".into()];
        let (mut h, stop) = start(args).await;
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.bindings.wap.enabled = true;
        s.bindings.wap.concat_ref = RefWidth::Sixteen;
        let a = h.smpp.unwrap();
        s.bindings.wap.smsc = vec![SmscConfig {
            name: "sim".into(),
            host: a.ip().to_string(),
            port: a.port(),
            system_id: "gw".into(),
            ..SmscConfig::default()
        }];
        let gw = Gateway::start_with(s, Some(dir)).await;
        let xml = format!(
            "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD></SyncHdr><SyncBody>{}<Final/></SyncBody></SyncML>",
            "<Alert><CmdID>1</CmdID><Data>1200</Data></Alert>".repeat(48)
        );
        let r = gw
            .http
            .put(format!("{}/v1/devices/h1", gw.base))
            .bearer_auth(TOKEN_A)
            .json(&json!({"bindings": [{"type": "wap", "msisdn": "+15550400001"}],
                          "dm": {"server_id": "dms", "server_password": "pw", "server_nonce": "AAECAw=="}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let id1 = push(&gw, json!({"device": "h1", "body": xml})).await;
        let id2 = push(
            &gw,
            json!({"device": "h1", "notification": {"session_id": 77, "ui_mode": "background"}}),
        )
        .await;
        // "delivered" is only reached through the simulator's receipts.
        wait_state(&gw, &id1, "delivered").await;
        wait_state(&gw, &id2, "delivered").await;
        let evs = wait_events(&mut h, 2, is_push).await;
        let x = evs.iter().find(|e| e.get("xml").is_some()).unwrap();
        assert_eq!(x["routed"], "dm");
        assert_eq!(x["ref_bits"], 16);
        assert!(x["segments"].as_u64().unwrap() >= 4, "{x}");
        // The gateway compiles XML to WBXML for SMS; the device's decoder adds the XML prolog.
        let got = x["xml"].as_str().unwrap();
        assert_eq!(&got[got.find("<SyncML").unwrap()..], xml);
        let n = evs
            .iter()
            .find(|e| e.get("notification").is_some())
            .unwrap();
        assert_eq!(n["digest"], "ok", "{n}");
        assert_eq!(n["notification"]["session_id"], 77);
        assert_eq!(n["notification"]["ui_mode"], "background");
        gw.stop().await;
        stop.cancel();
    }

    #[tokio::test]
    async fn http_binding_hmac_good_is_delivered_bad_is_refused() {
        let (mut h, stop) = start(SimArgs {
            http: Some("127.0.0.1:0".parse().unwrap()),
            http_hmac: Some("dmserver:right-pw:Tk9OQ0UxMjM=".into()),
            ..SimArgs::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.bindings.http.allow_plaintext = true;
        s.queue.max_attempts = 1;
        let gw = Gateway::start_with(s, Some(dir)).await;
        let url = format!("http://{}/push", h.http.unwrap());
        let target = |pw: &str, framing: &str| {
            json!({"bindings": [{"type": "http", "url": url, "framing": framing,
                   "hmac": {"username": "dmserver", "password": pw, "nonce": "Tk9OQ0UxMjM="}}],
                   "body": "<SyncML xmlns=\"SYNCML:SYNCML1.2\"/>"})
        };
        let ok1 = push(&gw, target("right-pw", "direct")).await;
        wait_state(&gw, &ok1, "delivered").await;
        let ok2 = push(&gw, target("right-pw", "ota-http")).await;
        wait_state(&gw, &ok2, "delivered").await;
        let bad = push(&gw, target("wrong-pw", "direct")).await;
        let v = wait_state(&gw, &bad, "failed").await;
        assert!(v.to_string().contains("401"), "{v}");
        let evs = wait_events(&mut h, 3, is_push).await;
        let got: Vec<(&str, &str)> = evs
            .iter()
            .map(|e| (e["framing"].as_str().unwrap(), e["hmac"].as_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [("direct", "ok"), ("ota-http", "ok"), ("direct", "mismatch")]
        );
        gw.stop().await;
        stop.cancel();
    }
}
