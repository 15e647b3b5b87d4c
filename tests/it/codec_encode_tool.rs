//! `dmpushd encode` (src/tool/encode.rs) driven through its public `run` function.

use dmpushd::tool::encode::{EncodeArgs, run};

const XML: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Final/></SyncBody></SyncML>"#;

fn write(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn xml_to_hex_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let args = EncodeArgs {
        input: Some(write(&dir, "a.xml", XML.as_bytes())),
        wbxml_version: "1.2".into(),
        no_string_table: true,
        ..Default::default()
    };
    let hex_out = run(&args).unwrap();
    assert!(hex_out.starts_with("02A4016A00"), "{hex_out}");
    let bytes = hex::decode(hex_out.trim()).unwrap();
    // Hex text and binary inputs both decode.
    for (name, data) in [("h.txt", hex_out.as_bytes().to_vec()), ("b.wbxml", bytes)] {
        let args = EncodeArgs {
            input: Some(write(&dir, name, &data)),
            decode: true,
            ..Default::default()
        };
        let xml = run(&args).unwrap();
        assert!(
            xml.contains("<Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Final/>"),
            "{xml}"
        );
    }
}

#[test]
fn bootstrap_mac_printed() {
    let dir = tempfile::tempdir().unwrap();
    let args = EncodeArgs {
        input: Some(write(&dir, "a.xml", XML.as_bytes())),
        wbxml_version: "1.3".into(),
        sec: Some("USERPIN".into()),
        user_pin: Some("1234".into()),
        ..Default::default()
    };
    let out = run(&args).unwrap();
    let mut lines = out.lines();
    let wbxml = hex::decode(lines.next().unwrap()).unwrap();
    assert_eq!(lines.next(), Some("SEC=USERPIN (0x01)"));
    let km = dmpushd::codec::bootstrap::KeyMaterial {
        imsi: None,
        user_pin: Some("1234".into()),
    };
    let mac = dmpushd::codec::bootstrap::mac(dmpushd::codec::bootstrap::Sec::UserPin, &km, &wbxml)
        .unwrap();
    assert_eq!(lines.next(), Some(format!("MAC={mac}").as_str()));
}

#[test]
fn notification_build_and_decode_with_digest_check() {
    // Facts §D.8 first worked example.
    let build = EncodeArgs {
        notification: true,
        server_id: Some("com.example.dms".into()),
        server_password: Some("srvpass".into()),
        nonce_hex: Some("0102030405060708".into()),
        session_id: "0x1234".into(),
        ui_mode: "informative".into(),
        initiator: "server".into(),
        version: 12,
        wbxml_version: "1.3".into(),
        ..Default::default()
    };
    let out = run(&build).unwrap();
    assert_eq!(
        out.trim(),
        "D3290F1CBC08EA0E45867199DB5CFCDF032800000012340F636F6D2E6578616D706C652E646D73"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut dec = EncodeArgs {
        input: Some(write(&dir, "n.hex", out.as_bytes())),
        decode: true,
        notification: true,
        server_password: Some("srvpass".into()),
        nonce_b64: Some("AQIDBAUGBwg=".into()),
        ..Default::default()
    };
    let fields = run(&dec).unwrap();
    assert!(fields.contains("version     12"), "{fields}");
    assert!(fields.contains("ui-mode     informative"));
    assert!(fields.contains("session-id  4660 (0x1234)"));
    assert!(fields.contains("server-id   com.example.dms"));
    assert!(fields.contains("digest-check ok\n"), "{fields}");
    dec.server_password = Some("wrong".into());
    assert!(run(&dec).unwrap().contains("digest-check MISMATCH"));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let args = EncodeArgs {
        input: Some(write(&dir, "x.bin", &[0x03, 0xA4, 0x01, 0x6A, 0x00, 0x6D])),
        decode: true,
        ..Default::default()
    };
    let e = run(&args).unwrap_err().to_string();
    assert!(e.contains("byte offset 6"), "{e}");
    let args = EncodeArgs {
        notification: true,
        server_id: Some("s".into()),
        server_password: Some("p".into()),
        nonce_hex: Some("00".into()),
        session_id: "70000".into(),
        wbxml_version: "1.3".into(),
        ui_mode: "not-specified".into(),
        initiator: "server".into(),
        version: 11,
        ..Default::default()
    };
    assert!(run(&args).is_err());
}

#[test]
fn clap_defaults_are_usable() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: EncodeArgs,
    }
    let cli = Cli::try_parse_from([
        "encode",
        "--notification",
        "--server-id",
        "Scts",
        "--server-password",
        "SimpleClient",
        "--nonce-b64",
        "AOVuAA==",
        "--session-id",
        "12345",
    ])
    .unwrap();
    assert_eq!(cli.args.version, 11);
    // Facts §D.8 second example (Funambol/SCTS parameters).
    assert_eq!(
        run(&cli.args).unwrap().trim(),
        "89083F28A0887031B9025B6934C6700D02C800000030390453637473"
    );
}

// --- `encode --target`: every binding's bytes, offline (issue 13 item 6) ----------------------

fn wire(target: &str, body: &std::path::Path, extra: impl FnOnce(&mut EncodeArgs)) -> String {
    let mut args = EncodeArgs {
        input: Some(body.to_owned()),
        target: Some(target.into()),
        ..Default::default()
    };
    extra(&mut args);
    run(&args).unwrap()
}

/// `label hex` lines of the hex format, in order.
fn lines(out: &str, label: &str) -> Vec<Vec<u8>> {
    out.lines()
        .filter_map(|l| l.strip_prefix(label))
        .map(|h| hex::decode(h.trim()).unwrap())
        .collect()
}

#[test]
fn wap_sms_submit_sms_decode_in_tshark_back_to_the_bootstrap_with_sec_and_mac() {
    use crate::support::wap::{tcp_flow, tshark_fields, tshark_raw, write_pcap};
    let wbxml = crate::support::fixture("bootstrap/dmacc.wbxml");
    let body = crate::support::fixture_path("bootstrap/dmacc.wbxml");
    let out = wire(
        r#"{"type":"wap","bearer":"sms","msisdn":"+491701234567"}"#,
        &body,
        |a| {
            a.format = "json".into();
            a.sec = Some("USERPIN".into());
            a.user_pin = Some("1234".into());
        },
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let segs = v["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 6, "{out}");
    let mut pdus = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let udh = s["udh"].as_str().unwrap();
        let ud = s["user_data"].as_str().unwrap();
        // Port IE (2948 ← 9200) and an 8-bit concatenation IE, part i+1 of 6.
        assert!(udh.starts_with("0B05040B8423F00003"), "{udh}");
        assert!(udh.ends_with(&format!("06{:02X}", i + 1)), "{udh}");
        assert!(ud.starts_with(udh));
        let pdu = hex::decode(s["submit_sm"].as_str().unwrap()).unwrap();
        assert_eq!(&pdu[4..8], &[0, 0, 0, 4], "command_id submit_sm");
        assert_eq!(
            u32::from_be_bytes(pdu[..4].try_into().unwrap()) as usize,
            pdu.len()
        );
        pdus.push(pdu);
    }
    assert!(v["wsp_pdu"].as_str().unwrap().len() > wbxml.len() * 2);
    if crate::support::require_tool("tshark").is_none() {
        return;
    }
    // An independent decoder: tshark reads the submit_sm PDUs, reassembles the SMS from their
    // UDH, and decodes the WSP push with its SEC/MAC parameters and the WBXML body.
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("encode.pcap");
    write_pcap(&pcap, &tcp_flow(40000, 2775, &pdus));
    let decode = "tcp.port==2775,smpp";
    let rows = tshark_fields(
        &pcap,
        &[decode],
        "wsp",
        &[
            "wsp.pdu_type",
            "wsp.header.content_type",
            "wsp.parameter.sec",
            "wsp.parameter.mac",
            "gsm_sms.destination_port",
        ],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], "0x06");
    assert!(rows[0][1].starts_with("application/vnd.syncml.dm+wbxml"));
    assert_eq!(rows[0][2], "0x01", "SEC USERPIN");
    // tests/fixtures/bootstrap/expected_macs.txt (OpenSSL HMAC-SHA1 keyed with "1234").
    assert_eq!(rows[0][3], "6FFFC64FD1CF07338CE6C3D68BB923AB088B31F6");
    assert!(rows[0][4].starts_with("2948"), "{:?}", rows[0]);
    let raw = tshark_raw(&pcap, &[decode], "wbxml", "wbxml");
    assert_eq!(raw, vec![wbxml]);
}

#[test]
fn wap_udp_sip_http_and_obex_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    let file = write(&dir, "b.wbxml", &body);

    // UDP: one datagram, which is the WSP PDU, ending in the body.
    let out = wire(
        r#"{"type":"wap","bearer":"udp","address":"127.0.0.1"}"#,
        &file,
        |_| {},
    );
    let d = lines(&out, "udp_datagram ");
    assert_eq!(d.len(), 1, "{out}");
    assert_eq!(lines(&out, "wsp_pdu "), d);
    assert_eq!(
        &d[0][1..5],
        &[0x06, 0x03, 0xC2, 0xAF],
        "Push, content type 0xC2, app id"
    );
    assert!(d[0].ends_with(&body));

    // SIP MESSAGE (RFC 3428): request line, Content-Type and Content-Length, the body.
    let out = wire(
        r#"{"type":"sip","uri":"sip:dev@example.net"}"#,
        &file,
        |_| {},
    );
    let m = lines(&out, "sip_message ");
    assert_eq!(m.len(), 1, "{out}");
    let text = String::from_utf8_lossy(&m[0]);
    assert!(
        text.starts_with("MESSAGE sip:dev@example.net SIP/2.0\r\n"),
        "{text}"
    );
    assert!(
        text.contains("\r\nContent-Type: application/vnd.syncml.dm+wbxml\r\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{text}"
    );
    assert!(m[0].ends_with(&body));

    // HTTP: the request head and body.
    let out = wire(
        r#"{"type":"http","url":"https://dm.example.net/push"}"#,
        &file,
        |_| {},
    );
    let r = lines(&out, "http_request ");
    assert_eq!(r.len(), 1, "{out}");
    assert!(r[0].starts_with(b"POST https://dm.example.net/push\r\n"));

    // OBEX: CONNECT … PUT(s) … DISCONNECT; the PUT bodies are the payload.
    let out = wire(
        r#"{"type":"obex","address":"127.0.0.1:650"}"#,
        &file,
        |_| {},
    );
    let p = lines(&out, "obex_packet ");
    assert!(p.len() >= 3, "{out}");
    assert_eq!(p[0][0], 0x80, "CONNECT");
    assert_eq!(p.last().unwrap(), &vec![0x81, 0x00, 0x03], "DISCONNECT");
    let mut got = Vec::new();
    for pkt in &p[1..p.len() - 1] {
        for h in dmpushd::codec::obex::decode_request(pkt).unwrap().headers {
            if let dmpushd::codec::obex::HeaderValue::Bytes(v) = h.value
                && (h.id == dmpushd::codec::obex::HI_BODY
                    || h.id == dmpushd::codec::obex::HI_END_OF_BODY)
            {
                got.extend(v);
            }
        }
    }
    assert_eq!(got, body);

    // JSON carries the same units.
    let out = wire(r#"{"type":"obex","address":"127.0.0.1:650"}"#, &file, |a| {
        a.format = "json".into()
    });
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["binding"], "obex");
    assert_eq!(v["units"].as_array().unwrap().len(), p.len());
    assert_eq!(v["units"][0]["kind"], "obex_packet");
}

#[test]
fn wire_mode_refusals_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "b.wbxml", &[0x03, 0x01, 0x6A, 0x00]);
    let try_run = |target: &str, f: &dyn Fn(&mut EncodeArgs)| {
        let mut args = EncodeArgs {
            input: Some(file.clone()),
            target: Some(target.into()),
            ..Default::default()
        };
        f(&mut args);
        run(&args)
    };
    // A bootstrap has no place in a SIP MESSAGE.
    let e = try_run(r#"{"type":"sip","uri":"sip:dev@example.net"}"#, &|a| {
        a.sec = Some("USERPIN".into());
        a.user_pin = Some("1".into());
    })
    .unwrap_err();
    assert!(e.to_string().contains("bootstrap"), "{e}");
    assert!(try_run(r#"{"type":"fax"}"#, &|_| {}).is_err());
    assert!(
        try_run(r#"{"type":"obex","address":"127.0.0.1:650"}"#, &|a| a
            .format =
            "xml".into())
        .is_err()
    );
    assert!(
        try_run(r#"{"type":"obex","address":"127.0.0.1:650"}"#, &|a| a
            .content_type =
            "text/plain".into())
        .is_err()
    );
}
