//! Black-box tests of the gateway through its REST API, delivering over the HTTPS binding to a
//! local TLS receiver (issue #2 acceptance 1–6 and 8).

use std::time::Duration;

use crate::support::{
    gateway::{Gateway, TOKEN_A, TOKEN_B, metric, settings, xml_push},
    receiver::{Answer, Receiver},
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use md5::{Digest, Md5};
use serde_json::{Value, json};

const DM_XML: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:490154203237518</LocURI></Target><Source><LocURI>https://dms.example</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Final/></SyncBody></SyncML>"#;

async fn gateway_for(receiver: &Receiver) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.http.ca_file = Some(receiver.ca_file.clone());
    Gateway::start_with(s, Some(dir)).await
}

fn events_of(p: &Value, state: &str) -> usize {
    p["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == state)
        .count()
}

/// MD5 → base64, written out here independently of the gateway's codec.
fn b64md5(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    B64.encode(h.finalize())
}

#[tokio::test]
async fn delivers_xml_with_exact_body_headers_and_hmac() {
    let rx = Receiver::start(Duration::ZERO).await;
    let gw = gateway_for(&rx).await;
    let nonce_raw = b"\x01\x02nonce\xff";
    gw.put_device(
        TOKEN_A,
        "IMEI:490154203237518",
        json!({"bindings": [{"type": "http", "url": rx.url("/dm/push"), "framing": "direct",
               "hmac": {"username": "dmserver", "password": "s3cret", "nonce": B64.encode(nonce_raw)}}]}),
    )
    .await;
    let id = gw
        .push(TOKEN_A, xml_push("IMEI:490154203237518", DM_XML))
        .await;
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(10)).await;
    assert_eq!(p["state"], "delivered", "{p}");
    assert_eq!(p["attempts"], 1);
    assert_eq!(p["binding"], "http");

    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/dm/push");
    assert_eq!(&r.body[..], DM_XML.as_bytes());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.syncml.dm+xml")
    );
    assert_eq!(
        r.header("x-wap-application-id"),
        Some("x-wap-application:syncml.dm")
    );
    // mac = B64(MD5(B64(MD5(user:pw)) ":" nonce ":" B64(MD5(body)))) — protocol-facts §H.7.
    let cred = b64md5(&[b"dmserver:s3cret"]);
    let body_hash = b64md5(&[DM_XML.as_bytes()]);
    let mac = b64md5(&[cred.as_bytes(), b":", nonce_raw, b":", body_hash.as_bytes()]);
    assert_eq!(
        r.header("x-syncml-hmac"),
        Some(format!("algorithm=MD5, username=\"dmserver\", mac={mac}").as_str())
    );
    // The device's secrets never come back from the API.
    let (_, dev) = gw
        .call(
            "GET",
            "/v1/devices/IMEI:490154203237518",
            Some(TOKEN_A),
            None,
        )
        .await;
    assert!(!dev.to_string().contains("s3cret"), "{dev}");
    assert!(dev["bindings"][0]["hmac"].get("password").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn ota_http_framing_retries_503_with_retry_after_then_delivers() {
    let rx = Receiver::start(Duration::ZERO).await;
    rx.script(vec![
        Answer::status(503).with("retry-after", "1"),
        Answer::status(503).with("retry-after", "1"),
        Answer::status(204).with("x-wap-push-status", "400 Accepted"),
    ]);
    let gw = gateway_for(&rx).await;
    gw.put_device(
        TOKEN_A,
        "dev-ota",
        json!({"bindings": [{"type": "http", "url": rx.url("/wappush"), "framing": "ota-http"}]}),
    )
    .await;
    let id = gw.push(TOKEN_A, xml_push("dev-ota", DM_XML)).await;
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(15)).await;
    assert_eq!(p["state"], "delivered", "{p}");
    assert_eq!(p["attempts"], 3);
    let attempt_events: Vec<&Value> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["attempt"].as_u64() > Some(0))
        .collect();
    assert_eq!(attempt_events.len(), 3, "{p}");
    assert_eq!(events_of(&p, "retry_wait"), 2);

    let got = rx.received();
    assert_eq!(got.len(), 3);
    // Retry-After: 1 was honoured between attempts.
    for w in got.windows(2) {
        let gap = w[1].at.duration_since(w[0].at).unwrap();
        assert!(gap >= Duration::from_millis(950), "retry after {gap:?}");
    }
    let r = &got[2];
    assert_eq!(r.header("content-type"), Some("application/http"));
    assert_eq!(r.header("x-wap-push-ota-version"), Some("1.0"));
    let nested = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.syncml.dm+xml\r\nContent-Length: {}\r\nX-Wap-Application-Id: x-wap-application:syncml.dm\r\n\r\n{DM_XML}",
        DM_XML.len()
    );
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), nested);
    gw.stop().await;
}

#[tokio::test]
async fn status_400_fails_after_one_attempt() {
    let rx = Receiver::start(Duration::ZERO).await;
    rx.script(vec![Answer::status(400)]);
    let gw = gateway_for(&rx).await;
    gw.put_device(
        TOKEN_A,
        "d400",
        json!({"bindings": [{"type": "http", "url": rx.url("/p")}]}),
    )
    .await;
    let id = gw.push(TOKEN_A, xml_push("d400", DM_XML)).await;
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(10)).await;
    assert_eq!(p["state"], "failed", "{p}");
    assert_eq!(p["attempts"], 1);
    assert!(
        p["events"].as_array().unwrap().last().unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("HTTP 400")
    );
    assert_eq!(rx.count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn unknown_ca_fails_permanently_and_sends_nothing() {
    let rx = Receiver::start(Duration::ZERO).await;
    // The gateway trusts a different CA than the one that signed the receiver's certificate.
    let other = Receiver::start(Duration::ZERO).await;
    let gw = gateway_for(&other).await;
    gw.put_device(
        TOKEN_A,
        "dca",
        json!({"bindings": [{"type": "http", "url": rx.url("/p")}]}),
    )
    .await;
    let id = gw.push(TOKEN_A, xml_push("dca", DM_XML)).await;
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(10)).await;
    assert_eq!(p["state"], "failed", "{p}");
    assert_eq!(
        p["attempts"], 1,
        "a TLS verification failure is permanent: {p}"
    );
    let detail = p["events"].as_array().unwrap().last().unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("TLS"), "{detail}");
    assert_eq!(
        rx.count(),
        0,
        "no HTTP request may reach a server that failed verification"
    );
    gw.stop().await;
}

#[tokio::test]
async fn ttl_expires_unreachable_target() {
    let gw = Gateway::start().await;
    // A port nothing listens on: every attempt is a transient connect error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    gw.put_device(
        TOKEN_A,
        "dttl",
        json!({"bindings": [{"type": "http", "url": format!("https://127.0.0.1:{closed}/p")}]}),
    )
    .await;
    let mut body = xml_push("dttl", DM_XML);
    body["ttl_seconds"] = json!(2);
    let id = gw.push(TOKEN_A, body).await;
    let p = gw.wait_final(TOKEN_A, &id, Duration::from_secs(10)).await;
    assert_eq!(p["state"], "expired", "{p}");
    assert!(p["attempts"].as_u64().unwrap() >= 1);
    gw.stop().await;
}

#[tokio::test]
async fn cancel_before_handoff_conflict_after_and_not_before_respected() {
    let rx = Receiver::start(Duration::ZERO).await;
    let gw = gateway_for(&rx).await;
    gw.put_device(
        TOKEN_A,
        "dnb",
        json!({"bindings": [{"type": "http", "url": rx.url("/p")}]}),
    )
    .await;

    // Far in the future: stays queued, can be cancelled.
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut body = xml_push("dnb", DM_XML);
    body["not_before"] = json!(
        later
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let id = gw.push(TOKEN_A, body).await;
    let (s, b) = gw
        .call("DELETE", &format!("/v1/pushes/{id}"), Some(TOKEN_A), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(gw.get_push(TOKEN_A, &id).await["state"], "cancelled");
    let (s, _) = gw
        .call("DELETE", &format!("/v1/pushes/{id}"), Some(TOKEN_A), None)
        .await;
    assert_eq!(s, 409);

    // Two seconds ahead: delivered, but not before that time.
    let nb = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let mut body = xml_push("dnb", DM_XML);
    body["not_before"] = json!(
        nb.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let id2 = gw.push(TOKEN_A, body).await;
    let p = gw.wait_final(TOKEN_A, &id2, Duration::from_secs(10)).await;
    assert_eq!(p["state"], "delivered");
    let got = rx.received();
    assert_eq!(got.len(), 1, "the cancelled push was never sent");
    let at = time::OffsetDateTime::from(got[0].at);
    assert!(
        at >= nb - time::Duration::milliseconds(5),
        "attempted at {at}, not_before {nb}"
    );
    // After hand-off, cancel is refused with 409.
    let (s, b) = gw
        .call("DELETE", &format!("/v1/pushes/{id2}"), Some(TOKEN_A), None)
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["status"], 409);
    gw.stop().await;
}

#[tokio::test]
async fn idempotency_collapse_and_batch() {
    let rx = Receiver::start(Duration::ZERO).await;
    let gw = gateway_for(&rx).await;
    gw.put_device(
        TOKEN_A,
        "dk",
        json!({"bindings": [{"type": "http", "url": rx.url("/p")}]}),
    )
    .await;
    let later = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();

    // Same key, same body → same id; different body → 409.
    let mut b1 = xml_push("dk", DM_XML);
    b1["idempotency_key"] = json!("order-1");
    b1["not_before"] = json!(later);
    let id1 = gw.push(TOKEN_A, b1.clone()).await;
    let id1b = gw.push(TOKEN_A, b1.clone()).await;
    assert_eq!(id1, id1b);
    let mut b2 = b1.clone();
    b2["priority"] = json!("high");
    let (s, p) = gw.call("POST", "/v1/pushes", Some(TOKEN_A), Some(b2)).await;
    assert_eq!(s, 409, "{p}");
    // The key is per tenant: tenant B may use it.
    gw.put_device(
        TOKEN_B,
        "dk",
        json!({"bindings": [{"type": "http", "url": rx.url("/p")}]}),
    )
    .await;
    let idb = gw.push(TOKEN_B, b1.clone()).await;
    assert_ne!(idb, id1);

    // Collapse: the newer push supersedes the pending one.
    let mut c1 = xml_push("dk", DM_XML);
    c1["collapse_key"] = json!("wake");
    c1["not_before"] = json!(later);
    let old = gw.push(TOKEN_A, c1.clone()).await;
    let new = gw.push(TOKEN_A, c1).await;
    let p_old = gw.get_push(TOKEN_A, &old).await;
    assert_eq!(p_old["state"], "superseded", "{p_old}");
    assert!(p_old["events"].to_string().contains(&new));
    assert_eq!(gw.get_push(TOKEN_A, &new).await["state"], "queued");

    // Batch: good items accepted, bad ones rejected individually.
    let batch = json!([
        xml_push("dk", DM_XML),
        {"device": "dk", "body": "<SyncML>"},
        {"device": "nope", "body": DM_XML},
        xml_push("dk", DM_XML),
        {"device": "dk", "body": DM_XML, "ttl_seconds": "ten"},
    ]);
    let (s, r) = gw
        .call("POST", "/v1/pushes/batch", Some(TOKEN_A), Some(batch))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["rejected"], 3);
    let res = r["results"].as_array().unwrap();
    assert_eq!(res[0]["status"], 202);
    assert_eq!(res[1]["status"], 422);
    assert_eq!(res[2]["problem"]["field"], "device");
    assert_eq!(res[3]["status"], 202);
    assert_eq!(res[4]["status"], 400);
    assert_eq!(res[4]["problem"]["field"], "ttl_seconds");
    for i in [0, 3] {
        let id = res[i]["id"].as_str().unwrap();
        assert_eq!(
            gw.wait_final(TOKEN_A, id, Duration::from_secs(10)).await["state"],
            "delivered"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let rx = Receiver::start(Duration::ZERO).await;
    let gw = gateway_for(&rx).await;
    gw.put_device(
        TOKEN_A,
        "shared-name",
        json!({"bindings": [{"type": "http", "url": rx.url("/a")}]}),
    )
    .await;
    let id = gw.push(TOKEN_A, xml_push("shared-name", DM_XML)).await;
    for path in [
        format!("/v1/pushes/{id}"),
        "/v1/devices/shared-name".to_owned(),
    ] {
        let (s, b) = gw.call("GET", &path, Some(TOKEN_B), None).await;
        assert_eq!(s, 404, "{path}: {b}");
    }
    let (s, _) = gw
        .call("DELETE", &format!("/v1/pushes/{id}"), Some(TOKEN_B), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = gw
        .call("DELETE", "/v1/devices/shared-name", Some(TOKEN_B), None)
        .await;
    assert_eq!(s, 404);
    // B cannot push to A's device either.
    let (s, b) = gw
        .call(
            "POST",
            "/v1/pushes",
            Some(TOKEN_B),
            Some(xml_push("shared-name", DM_XML)),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let (_, list_b) = gw.call("GET", "/v1/pushes", Some(TOKEN_B), None).await;
    assert_eq!(list_b["items"].as_array().unwrap().len(), 0);
    let (_, list_a) = gw.call("GET", "/v1/pushes", Some(TOKEN_A), None).await;
    assert_eq!(list_a["items"].as_array().unwrap().len(), 1);
    let (s, _) = gw.call("GET", "/v1/pushes", None, None).await;
    assert_eq!(s, 401);
    let (s, _) = gw.call("GET", "/v1/pushes", Some("wrong"), None).await;
    assert_eq!(s, 401);
    gw.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_problems_and_change_nothing() {
    let gw = Gateway::start().await;
    gw.put_device(
        TOKEN_A,
        "dev1",
        json!({"bindings": [{"type": "http", "url": "https://127.0.0.1:9/p"}],
        "dm": {"server_id": "dms", "server_password": "pw", "server_nonce": "AAAAAA=="}}),
    )
    .await;
    let before_pushes = gw.store.queue_depth().await.unwrap();
    let (_, before_dev) = gw.call("GET", "/v1/devices", Some(TOKEN_A), None).await;

    let ok = xml_push("dev1", DM_XML);
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let json_cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "POST",
            "/v1/pushes",
            with("device", json!("unknown-dev")),
            422,
            "device",
        ),
        (
            "POST",
            "/v1/pushes",
            with("ttl_seconds", json!(-5)),
            422,
            "ttl_seconds",
        ),
        (
            "POST",
            "/v1/pushes",
            with("ttl_seconds", json!("soon")),
            400,
            "ttl_seconds",
        ),
        (
            "POST",
            "/v1/pushes",
            with("ttl_seconds", json!(999_999_999)),
            422,
            "ttl_seconds",
        ),
        (
            "POST",
            "/v1/pushes",
            with("body_base64", json!("AAAA")),
            422,
            "body_base64",
        ),
        (
            "POST",
            "/v1/pushes",
            with("content_type", json!("text/plain")),
            422,
            "content_type",
        ),
        (
            "POST",
            "/v1/pushes",
            with("body", json!("<SyncML><Unclosed></SyncML>")),
            422,
            "body",
        ),
        (
            "POST",
            "/v1/pushes",
            with("binding", json!("carrier-pigeon")),
            422,
            "binding",
        ),
        (
            "POST",
            "/v1/pushes",
            with("binding", json!("sip")),
            422,
            "binding",
        ),
        (
            "POST",
            "/v1/pushes",
            with("priority", json!("urgent")),
            422,
            "priority",
        ),
        (
            "POST",
            "/v1/pushes",
            with("not_before", json!("tomorrow")),
            422,
            "not_before",
        ),
        (
            "POST",
            "/v1/pushes",
            with("unknown_field", json!(1)),
            400,
            "unknown_field",
        ),
        (
            "POST",
            "/v1/pushes",
            with("idempotency_key", json!("")),
            422,
            "idempotency_key",
        ),
        (
            "POST",
            "/v1/pushes",
            with("callback_url", json!("not a url")),
            422,
            "callback_url",
        ),
        (
            "POST",
            "/v1/pushes",
            json!({"device": "dev1", "content_type": "application/vnd.syncml.dm+wbxml", "body_base64": "***"}),
            422,
            "body_base64",
        ),
        (
            "POST",
            "/v1/pushes",
            json!({"device": "dev1", "body_base64": "AAAA"}),
            422,
            "content_type",
        ),
        ("POST", "/v1/pushes", json!({"device": "dev1"}), 422, "body"),
        ("POST", "/v1/pushes", json!({"body": DM_XML}), 422, "device"),
        (
            "POST",
            "/v1/pushes",
            json!({"bindings": [{"type": "wap", "msisdn": "12ab"}], "body": DM_XML}),
            422,
            "bindings[0].msisdn",
        ),
        (
            "POST",
            "/v1/pushes",
            json!({"bindings": [{"type": "sip", "uri": "mailto:x@y"}], "body": DM_XML}),
            422,
            "bindings[0].uri",
        ),
        (
            "POST",
            "/v1/pushes",
            json!({"bindings": [{"type": "http", "url": "ftp://x"}], "body": DM_XML}),
            422,
            "bindings[0].url",
        ),
        (
            "POST",
            "/v1/pushes",
            json!({"bindings": [{"type": "wap", "msisdn": "+447700900123", "secure": true}], "body": DM_XML}),
            422,
            "bindings[0].secure",
        ),
        (
            "POST",
            "/v1/pushes",
            json!({"device": "dev1", "notification": {"ui_mode": "loud"}}),
            422,
            "notification.ui_mode",
        ),
        (
            "POST",
            "/v1/pushes",
            json!({"device": "dev1", "notification": {"session_id": 70000}}),
            422,
            "notification.session_id",
        ),
        (
            "PUT",
            "/v1/devices/dev2",
            json!({"bindings": []}),
            422,
            "bindings",
        ),
        (
            "PUT",
            "/v1/devices/dev2",
            json!({"bindings": [{"type": "fax", "number": "1"}]}),
            400,
            "bindings[0]",
        ),
        (
            "PUT",
            "/v1/devices/dev2",
            json!({"bindings": [{"type": "wap", "bearer": "udp", "address": "nowhere"}]}),
            422,
            "bindings[0].address",
        ),
        (
            "PUT",
            "/v1/devices/dev2",
            json!({"bindings": [{"type": "http", "url": "https://x.example/p", "hmac": {"username": "u", "password": "p", "nonce": "!!"}}]}),
            422,
            "bindings[0].hmac.nonce",
        ),
        (
            "PUT",
            "/v1/devices/dev2",
            json!({"bindings": [{"type": "obex", "address": "relay:notaport"}]}),
            422,
            "bindings[0].address",
        ),
        (
            "PUT",
            "/v1/devices/dev2",
            json!({"bindings": [{"type": "sip", "uri": "sip:a@b"}], "dm": {"server_id": "", "server_password": "x"}}),
            422,
            "dm.server_id",
        ),
    ];
    let mut n = 0;
    for (method, path, body, status, field) in json_cases {
        let (s, ct, b) = gw
            .raw(
                method,
                path,
                Some(TOKEN_A),
                "application/json",
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert_eq!(s, status, "{method} {path} {body}: {b}");
        assert_eq!(ct, "application/problem+json", "{body}");
        assert_eq!(b["status"], status);
        assert!(b["detail"].as_str().is_some_and(|d| !d.is_empty()), "{b}");
        assert!(
            b["field"].as_str().is_some_and(|f| f.starts_with(field)),
            "expected field {field}: {b}"
        );
        n += 1;
    }
    // Non-JSON and oversize bodies.
    let raw_cases: Vec<(&str, &str, &str, Vec<u8>, u16)> = vec![
        (
            "POST",
            "/v1/pushes",
            "application/json",
            b"{not json".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/pushes",
            "application/json",
            b"[1,2]".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/pushes",
            "application/json",
            vec![b' '; 2 * 1024 * 1024],
            413,
        ),
        (
            "POST",
            "/v1/pushes/batch",
            "application/json",
            b"[]".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/devices/dev1/push",
            "text/plain",
            b"hello".to_vec(),
            415,
        ),
        (
            "POST",
            "/v1/devices/dev1/push",
            "application/vnd.syncml.dm+xml",
            b"<Sync".to_vec(),
            422,
        ),
        (
            "GET",
            "/v1/pushes?state=bogus",
            "application/json",
            vec![],
            422,
        ),
        (
            "GET",
            "/v1/pushes/does-not-exist",
            "application/json",
            vec![],
            404,
        ),
    ];
    for (method, path, ct_in, body, status) in raw_cases {
        let (s, ct, b) = gw.raw(method, path, Some(TOKEN_A), ct_in, body).await;
        assert_eq!(s, status, "{method} {path}: {b}");
        assert_eq!(ct, "application/problem+json", "{path}");
        assert!(b["detail"].as_str().is_some_and(|d| !d.is_empty()), "{b}");
        n += 1;
    }
    assert!(n >= 20);
    let oversize =
        json!({"device": "dev1", "body": format!("<SyncML>{}</SyncML>", "x".repeat(70_000))});
    let (s, _, b) = gw
        .raw(
            "POST",
            "/v1/pushes",
            Some(TOKEN_A),
            "application/json",
            serde_json::to_vec(&oversize).unwrap(),
        )
        .await;
    assert_eq!(s, 413, "{b}");

    assert_eq!(
        gw.store.queue_depth().await.unwrap(),
        before_pushes,
        "no push was stored"
    );
    let (_, after_dev) = gw.call("GET", "/v1/devices", Some(TOKEN_A), None).await;
    assert_eq!(after_dev, before_dev, "devices unchanged");
    gw.stop().await;
}

#[tokio::test]
async fn metrics_move_with_deliveries() {
    let rx = Receiver::start(Duration::ZERO).await;
    let gw = gateway_for(&rx).await;
    gw.put_device(
        TOKEN_A,
        "dm1",
        json!({"bindings": [{"type": "http", "url": rx.url("/p")}]}),
    )
    .await;
    let before = gw.metrics_text().await;
    for name in [
        "dmpushd_pushes_accepted_total",
        "dmpushd_deliveries_total",
        "dmpushd_delivery_attempt_seconds",
        "dmpushd_queue_depth",
        "dmpushd_http_requests_total",
    ] {
        assert!(
            before.contains(&format!("# TYPE {name}")) || name != "dmpushd_queue_depth",
            "{name} missing"
        );
    }
    let id = gw.push(TOKEN_A, xml_push("dm1", DM_XML)).await;
    gw.wait_final(TOKEN_A, &id, Duration::from_secs(10)).await;
    let after = gw.metrics_text().await;
    assert_eq!(
        // Public /metrics: no tenant names (server.metrics_token unset, docs/security.md).
        metric(&after, r#"dmpushd_pushes_accepted_total{tenant="_"}"#),
        metric(&before, r#"dmpushd_pushes_accepted_total{tenant="_"}"#) + 1.0
    );
    assert_eq!(
        metric(
            &after,
            r#"dmpushd_deliveries_total{binding="http",outcome="delivered"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            r#"dmpushd_delivery_attempt_seconds_count{binding="http"}"#
        ),
        1.0
    );
    assert!(
        metric(
            &after,
            r#"dmpushd_http_requests_total{route="POST /v1/pushes",status="202"}"#
        ) >= 1.0
    );
    // The queue-depth gauge is refreshed on scrape (at most once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = gw.metrics_text().await;
        if metric(&t, r#"dmpushd_queue_depth{state="delivered"}"#) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue depth never showed the delivered push:\n{t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = gw.call("GET", "/readyz", None, None).await;
    assert_eq!(s, 200);
    let (s, doc) = gw.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/v1/pushes"].is_object(), "{doc}");
    gw.stop().await;
}

/// The raw-push idempotency hash covers `not_before` (issue 12): the same key with another
/// schedule is a conflict, not a replay of the first push; the same request is a replay.
#[tokio::test]
async fn raw_push_idempotency_covers_not_before() {
    let gw = Gateway::start().await;
    gw.put_device(
        TOKEN_A,
        "raw1",
        json!({"bindings": [{"type": "http", "url": "https://127.0.0.1:9/p"}]}),
    )
    .await;
    let at = |minutes: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::minutes(minutes))
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (soon, later) = (at(60), at(120));
    let send = |not_before: &str| {
        gw.http
            .post(format!(
                "{}/v1/devices/raw1/push?not_before={not_before}",
                gw.base
            ))
            .bearer_auth(TOKEN_A)
            .header("Content-Type", "application/vnd.syncml.dm+xml")
            .header("Idempotency-Key", "raw-key-1")
            .body("<SyncML/>")
            .send()
    };
    let first = send(&soon).await.unwrap();
    assert_eq!(first.status(), 202);
    let again = send(&soon).await.unwrap();
    assert!(again.status().is_success(), "{}", again.status());
    let other = send(&later).await.unwrap();
    assert_eq!(other.status(), 409, "{}", other.text().await.unwrap());
    gw.stop().await;
}
