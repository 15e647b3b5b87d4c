//! End to end through the REST API over the SIP binding, with SIPp (an independent SIP stack)
//! as the device's UAS; and the `auto` fallback from a failing SIP binding to HTTP.

use std::time::Duration;

use crate::support::{
    self,
    gateway::{Gateway, TOKEN_A, settings, xml_push},
    receiver::Receiver,
    sip::*,
};
use serde_json::json;

const DM_XML: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:1</LocURI></Target><Source><LocURI>https://dms.example</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Final/></SyncBody></SyncML>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_push_reaches_sipp_through_the_api() {
    let Some(sipp) = support::require_tool("sipp") else {
        return;
    };
    let port = free_port();
    let mut uas = Sipp::start(&sipp, false, port, "uas_message.xml", 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.sip.t1_ms = 100;
    s.bindings.sip.t2_ms = 400;
    let gw = Gateway::start_with(s, Some(dir)).await;
    let uri = format!("sip:device@127.0.0.1:{port}");
    gw.put_device(
        TOKEN_A,
        "sip-dev",
        json!({"bindings": [{"type": "sip", "uri": uri}]}),
    )
    .await;
    let id = gw.push(TOKEN_A, xml_push("sip-dev", DM_XML)).await;
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(20)).await;
    assert_eq!(p["state"], "delivered", "{p}");
    assert_eq!(p["binding"], "sip");
    assert!(
        uas.wait(Duration::from_secs(10)).success(),
        "SIPp judged the MESSAGE"
    );
    let got = uas.received();
    let m = got
        .iter()
        .find(|m| m.logged.starts_with(b"MESSAGE "))
        .expect("a MESSAGE");
    let (first, headers, body) = split_message(&m.logged);
    assert_eq!(first, format!("MESSAGE {uri} SIP/2.0"));
    assert_eq!(
        header(&headers, "Accept-Contact"),
        Some(r#"*;+g.oma.eventappid="syncml.dm""#)
    );
    assert_eq!(
        header(&headers, "Content-Type"),
        Some("application/vnd.syncml.dm+xml")
    );
    assert_eq!(
        header(&headers, "Content-Length"),
        Some(DM_XML.len().to_string().as_str())
    );
    assert_eq!(body, DM_XML.as_bytes());
    gw.stop().await;
}

#[tokio::test]
async fn auto_falls_back_from_sip_to_http_on_permanent_failure() {
    // A UAS that answers 404 (permanent) to every request, written here: the push must then go
    // to the device's next binding, the HTTPS endpoint.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sip_port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let hdr = |name: &str| {
                req.lines()
                    .find(|l| {
                        l.to_ascii_lowercase()
                            .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                    })
                    .unwrap_or("")
                    .to_owned()
            };
            let resp = format!(
                "SIP/2.0 404 Not Found\r\n{}\r\n{}\r\n{};tag=uas\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
                hdr("Via"),
                hdr("From"),
                hdr("To"),
                hdr("Call-ID"),
                hdr("CSeq")
            );
            let _ = sock.send_to(resp.as_bytes(), from).await;
        }
    });
    let rx = Receiver::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.http.ca_file = Some(rx.ca_file.clone());
    let gw = Gateway::start_with(s, Some(dir)).await;
    gw.put_device(
        TOKEN_A,
        "multi",
        json!({"bindings": [
            {"type": "sip", "uri": format!("sip:device@127.0.0.1:{sip_port}")},
            {"type": "http", "url": rx.url("/push")}]}),
    )
    .await;
    let id = gw.push(TOKEN_A, xml_push("multi", DM_XML)).await;
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(20)).await;
    assert_eq!(p["state"], "delivered", "{p}");
    assert_eq!(p["binding"], "http");
    let events = p["events"].as_array().unwrap();
    let sip_event = events
        .iter()
        .find(|e| e["binding"] == "sip")
        .expect("a sip attempt");
    assert_eq!(
        sip_event["state"], "queued",
        "fallback re-queues at once: {p}"
    );
    assert!(sip_event["detail"].as_str().unwrap().contains("404"), "{p}");
    assert!(
        sip_event["detail"]
            .as_str()
            .unwrap()
            .contains("falling back to http"),
        "{p}"
    );
    assert_eq!(rx.count(), 1);
    gw.stop().await;
}
