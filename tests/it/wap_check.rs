//! The WAP binding's submit-time `check` (no hex preview per submit, docs/perf/accept.md) refuses
//! exactly what its preview refuses, with the same reason.

use dmpushd::binding::{
    Binding as _, ContentType, DeviceBinding, Signature, WapBearer,
    wap::{self, SmscConfig, WapConfig},
};
use dmpushd::codec::bootstrap::Sec;

use crate::support::{self, wap::sms_target};

/// Name, target, content type, body, bootstrap signature.
type Case<'a> = (
    &'static str,
    DeviceBinding,
    ContentType,
    Vec<u8>,
    Option<&'a Signature>,
);

#[tokio::test]
async fn check_and_preview_agree_on_every_refusal() {
    let (ctx, _receipts) = support::binding_context(4);
    // The SMSC is never reached (port 9, discard): planning needs its routes, not a session.
    let smsc = SmscConfig {
        name: "smsc".into(),
        host: "127.0.0.1".into(),
        port: 9,
        routes: vec!["+49".into()],
        reconnect_min_ms: 60_000,
        reconnect_max_ms: 60_000,
        ..Default::default()
    };
    let cfg = WapConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        enabled: true,
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        max_segments: 2,
        smsc: vec![smsc],
        ..Default::default()
    };
    let b = wap::build_wap(&cfg, &ctx).await.unwrap().unwrap();

    let udp = DeviceBinding::Wap {
        msisdn: None,
        bearer: WapBearer::Udp,
        address: Some("127.0.0.1".parse().unwrap()),
        secure: false,
    };
    let secure = DeviceBinding::Wap {
        msisdn: None,
        bearer: WapBearer::Udp,
        address: Some("127.0.0.1".parse().unwrap()),
        secure: true,
    };
    let http = DeviceBinding::Http {
        url: "https://127.0.0.1/p".parse().unwrap(),
        framing: Default::default(),
        hmac: None,
    };
    let dm_xml = br#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:490154203237518</LocURI></Target><Source><LocURI>https://dms.example</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Final/></SyncBody></SyncML>"#.to_vec();
    // No WBXML vocabulary: sent as XML rather than refused.
    let foreign_xml = b"<note><to>x</to></note>".to_vec();
    let big = vec![0x5Au8; 1_000];
    let sig = Signature {
        sec: Sec::UserPin,
        mac: "0".repeat(40),
    };

    let cases: Vec<Case> = vec![
        (
            "udp xml",
            udp.clone(),
            ContentType::DmXml,
            dm_xml.clone(),
            None,
        ),
        (
            "udp foreign xml",
            udp.clone(),
            ContentType::DmXml,
            foreign_xml,
            None,
        ),
        (
            "sms xml",
            sms_target("+491701234567"),
            ContentType::DmXml,
            dm_xml.clone(),
            None,
        ),
        (
            "sms too many segments",
            sms_target("+491701234567"),
            ContentType::DmWbxml,
            big.clone(),
            None,
        ),
        (
            "sms no route",
            sms_target("+331701234567"),
            ContentType::DmWbxml,
            vec![3, 1],
            None,
        ),
        ("secure", secure, ContentType::DmWbxml, vec![3, 1], None),
        ("http target", http, ContentType::DmWbxml, vec![3, 1], None),
        (
            "bootstrap wbxml",
            udp.clone(),
            ContentType::DmWbxml,
            vec![3, 1],
            Some(&sig),
        ),
        (
            "bootstrap xml",
            udp.clone(),
            ContentType::DmXml,
            dm_xml,
            Some(&sig),
        ),
        (
            "udp too big",
            udp,
            ContentType::DmWbxml,
            vec![0u8; 70_000],
            None,
        ),
    ];
    let mut refused = 0;
    for (name, target, ct, body, bootstrap) in cases {
        let checked = b
            .check_bootstrap(&target, ct, &body, bootstrap)
            .map_err(|e| e.to_string());
        let previewed = b
            .preview_bootstrap(&target, ct, &body, bootstrap)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(checked, previewed, "{name}");
        if bootstrap.is_none() {
            let plain = b.check(&target, ct, &body).map_err(|e| e.to_string());
            assert_eq!(plain, previewed, "{name} (check)");
        }
        refused += usize::from(checked.is_err());
    }
    // The cases above exercise refusals, not only successes.
    assert!(refused >= 5, "{refused} refusals");
}
