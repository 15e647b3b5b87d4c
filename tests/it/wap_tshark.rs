//! WSP push PDUs built by dmpushd decoded by an independent implementation (Wireshark's
//! tshark): issue 3 acceptance #2 and issue 4 acceptance #4 (UDP bearer).

use std::time::Duration;

use dmpushd::{
    binding::{
        BindingContext, ContentType, DeviceBinding, Outcome, WapBearer,
        wap::{self, WapConfig},
    },
    codec::wsp::{
        AppId, ContentTypeValue, Header, Media, Param, ParamName, ParamValue, PushPdu,
        content_code, param,
    },
};
use tokio::{net::UdpSocket, sync::mpsc};

use crate::support::{self, wap::*};

const FIELDS: &[&str] = &[
    "frame.number",
    "wsp.TID",
    "wsp.pdu_type",
    "wsp.header.content_type",
    "wsp.header.x_wap_application_id",
    "wbxml.public_id.known",
];

fn ctx() -> (BindingContext, mpsc::Receiver<dmpushd::binding::Receipt>) {
    support::binding_context(16)
}

#[test]
fn tshark_decodes_codec_push_pdus() {
    if support::require_tool("tshark").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wbxml = std::fs::read(fixture("wsp/dm-600.wbxml")).unwrap();
    let sec_mac = ContentTypeValue {
        media: Media::WellKnown(content_code::DM_WBXML),
        params: vec![
            Param {
                name: ParamName::WellKnown(param::SEC),
                value: ParamValue::Integer(0),
            },
            Param {
                name: ParamName::WellKnown(param::MAC),
                value: ParamValue::Text("0123456789ABCDEF0123456789ABCDEF01234567".into()),
            },
        ],
    };
    let mut extras = PushPdu::new(
        9,
        ContentTypeValue::well_known(content_code::NOTIFICATION),
        AppId::Code(7),
        pkg0(),
    );
    extras.headers.extend([
        Header::ContentLength(39),
        Header::EncodingVersion(1, 3),
        Header::InitiatorUri("https://dm.example.com/".into()),
        Header::PushFlag(2),
    ]);
    let cases: Vec<(PushPdu, &str, &str, &str)> = vec![
        (
            PushPdu::new(
                1,
                ContentTypeValue::well_known(content_code::DM_WBXML),
                AppId::Code(7),
                wbxml.clone(),
            ),
            "application/vnd.syncml.dm+wbxml",
            "x-wap-application:syncml.dm",
            "0x00001201",
        ),
        (
            PushPdu::new(
                2,
                ContentTypeValue::well_known(content_code::DM_XML),
                AppId::Code(7),
                b"<SyncML/>".to_vec(),
            ),
            "application/vnd.syncml.dm+xml",
            "x-wap-application:syncml.dm",
            "",
        ),
        (
            PushPdu::new(
                3,
                ContentTypeValue::well_known(content_code::NOTIFICATION),
                AppId::Code(7),
                pkg0(),
            ),
            "application/vnd.syncml.notification",
            "x-wap-application:syncml.dm",
            "",
        ),
        (
            PushPdu::new(
                4,
                ContentTypeValue::well_known(content_code::CONNECTIVITY_WBXML),
                AppId::Code(7),
                vec![0x03, 0x0B, 0x6A, 0x00, 0x45, 0x01],
            ),
            "application/vnd.wap.connectivity-wbxml",
            "x-wap-application:syncml.dm",
            "0x0000000b", // the body's WBXML public id 0x0B (OMA provisioning)
        ),
        (
            PushPdu::new(
                5,
                ContentTypeValue::well_known(content_code::NOTIFICATION),
                AppId::Uri("x-wap-application:syncml.dm".into()),
                pkg0(),
            ),
            "application/vnd.syncml.notification",
            "x-wap-application:syncml.dm",
            "",
        ),
        (
            PushPdu::new(6, sec_mac, AppId::Code(7), wbxml.clone()),
            "application/vnd.syncml.dm+wbxml",
            "x-wap-application:syncml.dm",
            "0x00001201",
        ),
        (
            extras,
            "application/vnd.syncml.notification",
            "x-wap-application:syncml.dm",
            "",
        ),
    ];
    let frames: Vec<Vec<u8>> = cases
        .iter()
        .map(|(p, ..)| udp_frame(9200, 12948, &p.encode().unwrap()))
        .collect();
    let pcap = dir.path().join("codec.pcap");
    write_pcap(&pcap, &frames);
    let rows = tshark_fields(&pcap, &["udp.port==12948,wsp"], "wsp", FIELDS);
    assert_eq!(
        rows.len(),
        cases.len(),
        "every PDU decodes as WSP: {rows:?}"
    );
    for (row, (pdu, ct, app, public_id)) in rows.iter().zip(&cases) {
        assert_eq!(row[1], format!("0x{:02x}", pdu.tid), "{row:?}");
        assert_eq!(row[2], "0x06", "{row:?}");
        assert!(row[3].starts_with(ct), "content type {row:?}, want {ct}");
        assert_eq!(row[4], *app, "{row:?}");
        assert_eq!(row[5], *public_id, "{row:?}");
    }
    // The SEC/MAC parameters and handset-profile headers are visible to tshark too.
    let params = tshark_fields(
        &pcap,
        &["udp.port==12948,wsp"],
        "wsp",
        &[
            "wsp.parameter.sec",
            "wsp.parameter.mac",
            "wsp.header.encoding_version",
            "wsp.header.initiator_uri",
            "wsp.header.content_length",
            "wsp.header.push_flag.trusted",
        ],
    );
    assert_eq!(params[5][0], "0x00", "SEC NETWPIN: {:?}", params[5]);
    assert_eq!(params[5][1], "0123456789ABCDEF0123456789ABCDEF01234567");
    assert_eq!(params[6][2], "1.3", "{:?}", params[6]);
    assert_eq!(params[6][3], "https://dm.example.com/");
    assert_eq!(params[6][4], "39");
    assert_eq!(
        params[6][5], "1",
        "Push-Flag content trusted: {:?}",
        params[6]
    );
}

#[tokio::test]
async fn udp_bearer_datagram_is_a_wsp_push_for_tshark() {
    if support::require_tool("tshark").is_none() || support::require_tool("wbxml2xml").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dport = device.local_addr().unwrap().port();
    let (ctx, _rx) = ctx();
    let cfg = WapConfig {
        allow_targets: vec!["127.0.0.0/8".into()],
        enabled: true,
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let b = wap::build(&cfg, &ctx).await.unwrap().unwrap();
    assert!(b.ready().is_ok(), "no SMSC configured: ready");
    let wbxml = std::fs::read(fixture("wsp/dm-600.wbxml")).unwrap();
    let target = DeviceBinding::Wap {
        msisdn: None,
        bearer: WapBearer::Udp,
        address: Some(format!("127.0.0.1:{dport}").parse().unwrap()),
        secure: false,
    };
    let preview = b.preview(&target, ContentType::DmWbxml, &wbxml).unwrap();
    let out = b
        .deliver(delivery(target, ContentType::DmWbxml, &wbxml))
        .await;
    assert!(
        matches!(&out, Outcome::Accepted { refs, .. } if refs.is_empty()),
        "{out:?}"
    );
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), device.recv_from(&mut buf))
        .await
        .expect("datagram within 5 s")
        .unwrap();
    let datagram = &buf[..n];
    let previewed = hex::decode(&preview.units_hex[0]).unwrap();
    assert_eq!(
        previewed[1..],
        datagram[1..],
        "preview equals the wire except the TID"
    );
    let pcap = dir.path().join("udp.pcap");
    write_pcap(&pcap, &[udp_frame(from.port(), dport, datagram)]);
    let rows = tshark_fields(&pcap, &[&format!("udp.port=={dport},wsp")], "wsp", FIELDS);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][2], "0x06");
    assert_eq!(rows[0][3], "application/vnd.syncml.dm+wbxml");
    assert_eq!(rows[0][4], "x-wap-application:syncml.dm");
    assert_eq!(rows[0][5], "0x00001201", "SyncML 1.2 public id");
    let raw = tshark_raw(
        &pcap,
        &[&format!("udp.port=={dport},wsp")],
        "wbxml",
        "wbxml",
    );
    assert_eq!(raw.len(), 1);
    assert_eq!(
        wbxml2xml(&raw[0], dir.path(), "seen"),
        wbxml2xml(&wbxml, dir.path(), "sent")
    );
    ctx.shutdown.cancel();
}
