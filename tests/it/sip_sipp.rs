//! Interop with SIPp (an independent SIP implementation) as the UAS: acceptance 1–3 of issue 5.
//! The binding is driven through `Binding::deliver`; SIPp's exit status and its `-trace_msg` log
//! (the bytes it actually received) are the judges.

use std::time::Duration;

use crate::support::{self, sip::*};
use dmpushd::binding::{
    ContentType, Outcome,
    sip::{SipConfig, SipCredential},
};

fn fast() -> SipConfig {
    SipConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        // Short timers so a failing peer fails the test quickly (a lost UDP request is
        // retransmitted after 100 ms).
        t1_ms: 100,
        t2_ms: 400,
        timer_f_ms: Some(5000),
        ..Default::default()
    }
}

/// Checks one received MESSAGE against what was pushed.
fn check_message(m: &Received, uri: &str, ct: &str, body: &[u8], via_proto: &str) {
    assert_eq!(m.proto, via_proto);
    let (first, headers, got_body) = split_message(&m.logged);
    assert_eq!(first, format!("MESSAGE {uri} SIP/2.0"));
    let via = header(&headers, "Via").expect("Via");
    assert!(
        via.starts_with(&format!("SIP/2.0/{via_proto} 127.0.0.1:")),
        "{via}"
    );
    assert!(
        via.contains(";branch=z9hG4bK") && via.ends_with(";rport"),
        "{via}"
    );
    assert_eq!(
        header(&headers, "Accept-Contact"),
        Some("*;+g.oma.eventappid=\"syncml.dm\"")
    );
    assert_eq!(header(&headers, "Content-Type"), Some(ct));
    assert_eq!(
        header(&headers, "Content-Length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(header(&headers, "Max-Forwards"), Some("70"));
    assert_eq!(header(&headers, "CSeq"), Some("1 MESSAGE"));
    assert!(header(&headers, "From").is_some_and(|f| f.contains(";tag=")));
    assert_eq!(header(&headers, "To"), Some(format!("<{uri}>").as_str()));
    // sipp read exactly header section + Content-Length octets from the socket...
    let head_len = find(&m.logged, b"\r\n\r\n").expect("end of headers") + 4;
    assert_eq!(
        m.declared,
        head_len + body.len(),
        "sipp read a different size"
    );
    // ...and logged them up to the first NUL (its log is a C string): compare that prefix.
    let upto = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    assert_eq!(got_body, &body[..upto], "body bytes differ");
}

async fn push_xml_and_pkg0(tcp: bool) {
    let Some(sipp) = support::require_tool("sipp") else {
        return;
    };
    let port = free_port();
    let mut uas = Sipp::start(&sipp, tcp, port, "uas_message.xml", 2, &[]);
    let transport = if tcp { "tcp" } else { "udp" };
    let cfg = SipConfig {
        transport: transport.into(),
        ..fast()
    };
    let (b, reg) = binding(&cfg).await;
    let uri = format!("sip:device@127.0.0.1:{port}");

    let o = b
        .deliver(delivery(&uri, ContentType::DmXml, DM_XML.as_bytes()))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    let o = b
        .deliver(delivery(&uri, ContentType::Notification, &PKG0))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");

    let st = uas.wait(Duration::from_secs(15));
    assert!(st.success(), "sipp failed: {}", uas.file("errors.log"));
    let msgs = uas.received();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let proto = transport.to_uppercase();
    check_message(
        &msgs[0],
        &uri,
        "application/vnd.syncml.dm+xml",
        DM_XML.as_bytes(),
        &proto,
    );
    check_message(
        &msgs[1],
        &uri,
        "application/vnd.syncml.notification",
        &PKG0,
        &proto,
    );
    assert!(
        uas.file("actions.log")
            .contains("RECEIVED-MESSAGE Content-Type: application/vnd.syncml.notification")
    );
    assert_eq!(
        metric(
            &reg,
            "dmpushd_sip_requests_total",
            &[("class", "2xx"), ("transport", transport)]
        ),
        2.0
    );
}

#[tokio::test]
async fn sipp_udp_receives_xml_and_pkg0() {
    push_xml_and_pkg0(false).await;
}

#[tokio::test]
async fn sipp_tcp_receives_xml_and_pkg0() {
    push_xml_and_pkg0(true).await;
}

async fn digest(scenario: &str, tcp: bool, password: &str) -> (Outcome, Sipp) {
    let sipp = support::require_tool("sipp").expect("checked by caller");
    let port = free_port();
    let uas = Sipp::start(
        &sipp,
        tcp,
        port,
        scenario,
        1,
        &["-key", "dmuser", "dmuser", "-key", "dmpass", "s3cret"],
    );
    let cfg = SipConfig {
        transport: if tcp { "tcp" } else { "udp" }.into(),
        credentials: vec![
            SipCredential {
                realm: "other.realm".into(),
                username: "nobody".into(),
                password: "x".into(),
                targets: vec!["127.0.0.0/8".into()],
            },
            SipCredential {
                realm: "dm.test".into(),
                username: "dmuser".into(),
                password: password.into(),
                targets: vec!["127.0.0.0/8".into()],
            },
        ],
        ..fast()
    };
    let (b, _) = binding(&cfg).await;
    let uri = format!("sip:device@127.0.0.1:{port}");
    let o = b
        .deliver(delivery(&uri, ContentType::Notification, &PKG0))
        .await;
    (o, uas)
}

fn check_retry(uas: &Sipp) {
    let msgs = uas.received();
    assert_eq!(msgs.len(), 2, "one challenge, one retry");
    let (_, h1, _) = split_message(&msgs[0].logged);
    let (_, h2, b2) = split_message(&msgs[1].logged);
    assert_eq!(header(&h1, "Call-ID"), header(&h2, "Call-ID"));
    assert_eq!(header(&h2, "CSeq"), Some("2 MESSAGE"));
    assert_ne!(header(&h1, "Via"), header(&h2, "Via"), "new branch");
    assert_eq!(
        b2,
        PKG0[..18],
        "pkg#0 up to its first NUL (sipp logs C strings)"
    );
    assert!(
        header(&h2, "Authorization")
            .is_some_and(|a| a.starts_with("Digest username=\"dmuser\", realm=\"dm.test\""))
    );
}

#[tokio::test]
async fn sipp_digest_without_qop() {
    if support::require_tool("sipp").is_none() {
        return;
    }
    let (o, mut uas) = digest("uas_auth.xml", false, "s3cret").await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    assert!(uas.wait(Duration::from_secs(15)).success());
    check_retry(&uas);
    let log = uas.file("actions.log");
    assert!(log.contains("valid=true"), "{log}");
    assert!(!log.contains("qop="), "{log}");
}

#[tokio::test]
async fn sipp_digest_with_qop_over_tcp() {
    if support::require_tool("sipp").is_none() {
        return;
    }
    let (o, mut uas) = digest("uas_auth_qop.xml", true, "s3cret").await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    assert!(uas.wait(Duration::from_secs(15)).success());
    check_retry(&uas);
    let log = uas.file("actions.log");
    assert!(
        log.contains("qop=auth, nc=00000001, cnonce=") && log.contains("valid=true"),
        "{log}"
    );
}

#[tokio::test]
async fn sipp_digest_wrong_password_is_permanent() {
    if support::require_tool("sipp").is_none() {
        return;
    }
    let (o, mut uas) = digest("uas_auth_qop.xml", false, "wrong").await;
    assert!(
        matches!(&o, Outcome::Permanent { reason } if reason.contains("403")),
        "{o:?}"
    );
    // sipp counts the call failed (its verifyauth said no) and exits 1.
    assert_eq!(uas.wait(Duration::from_secs(15)).code(), Some(1));
    assert!(uas.file("actions.log").contains("valid=false"));
    // Exactly one retry: no loop.
    assert_eq!(uas.received().len(), 2);
}

/// RFC 3261 §18.1.1: a request above 1300 bytes goes over TCP although UDP is configured.
#[tokio::test]
async fn large_request_switches_to_tcp() {
    let Some(sipp) = support::require_tool("sipp") else {
        return;
    };
    let port = free_port();
    // SIPp listens on TCP only: a UDP request would never be answered (Timer F → Transient).
    let mut uas = Sipp::start(&sipp, true, port, "uas_message.xml", 1, &[]);
    let (b, reg) = binding(&fast()).await;
    let uri = format!("sip:device@127.0.0.1:{port}");
    let body = DM_XML.repeat(5);
    assert!(body.len() > 1300);
    let o = b
        .deliver(delivery(&uri, ContentType::DmXml, body.as_bytes()))
        .await;
    assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    assert!(uas.wait(Duration::from_secs(15)).success());
    let msgs = uas.received();
    check_message(
        &msgs[0],
        &uri,
        "application/vnd.syncml.dm+xml",
        body.as_bytes(),
        "TCP",
    );
    assert_eq!(
        metric(&reg, "dmpushd_sip_requests_total", &[("transport", "tcp")]),
        1.0
    );
}
