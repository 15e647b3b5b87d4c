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
