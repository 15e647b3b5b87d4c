//! Golden vectors for package #0 and bootstrap MACs (tests/fixtures/{notification,bootstrap}); their
//! expected values were computed with OpenSSL, independently of dmpushd (see the READMEs there).

use std::path::Path;

use dmpushd::codec::bootstrap::{self, KeyMaterial, Sec};
use dmpushd::codec::notification::{self, Initiator, UiMode, Verification};

use crate::support::fixture;

#[test]
fn package0_d8_example1() {
    let bytes = fixture("notification/d8_example1.bin");
    let p = notification::parse(&bytes).unwrap();
    assert_eq!(p.trigger.version, 12);
    assert_eq!(p.trigger.ui_mode, UiMode::Informative);
    assert_eq!(p.trigger.initiator, Initiator::Server);
    assert_eq!(p.trigger.session_id, 0x1234);
    assert_eq!(p.trigger.server_id, "com.example.dms");
    assert!(p.trigger.vendor.is_empty());
    let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(
        notification::build(&p.trigger, b"srvpass", &nonce).unwrap(),
        bytes
    );
    assert_eq!(
        notification::verify(&bytes, "com.example.dms", b"srvpass", &nonce),
        Verification::Ok
    );
    assert_eq!(
        notification::verify(&bytes, "com.example.dms", b"srvpasS", &nonce),
        Verification::Mismatch
    );
    assert_eq!(
        notification::verify(&bytes, "com.example.dms", b"srvpass", &nonce[..7]),
        Verification::Mismatch
    );
}

#[test]
fn package0_d8_scts() {
    let bytes = fixture("notification/d8_scts.bin");
    let p = notification::parse(&bytes).unwrap();
    assert_eq!(p.trigger.version, notification::DEFAULT_VERSION);
    assert_eq!(p.trigger.session_id, 12345);
    assert_eq!(p.trigger.ui_mode, UiMode::NotSpecified);
    let nonce = [0x00, 0xE5, 0x6E, 0x00];
    assert_eq!(
        notification::build(&p.trigger, b"SimpleClient", &nonce).unwrap(),
        bytes
    );
    assert_eq!(
        notification::verify(&bytes, "Scts", b"SimpleClient", &nonce),
        Verification::Ok
    );
}

#[test]
fn bootstrap_macs_match_openssl() {
    let wbxml = fixture("bootstrap/dmacc.wbxml");
    let expected = String::from_utf8(fixture("bootstrap/expected_macs.txt")).unwrap();
    let km = KeyMaterial {
        imsi: Some("310260801674539".into()),
        user_pin: Some("1234".into()),
    };
    let mut n = 0;
    for line in expected.lines() {
        let (sec, mac) = line.split_once(' ').unwrap();
        let sec: Sec = sec.parse().unwrap();
        assert_eq!(bootstrap::mac(sec, &km, &wbxml).unwrap(), mac, "{sec:?}");
        assert!(bootstrap::verify(sec, &km, &wbxml, mac).unwrap());
        n += 1;
    }
    assert_eq!(n, 3);
}

/// Inputs the fuzzer once crashed on (tests/fixtures/wbxml/fuzz-regressions): they must either fail
/// cleanly or decode to XML that reads back.
#[test]
fn wbxml_fuzz_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wbxml/fuzz-regressions");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        if let Ok(xml) = dmpushd::codec::wbxml::wbxml_to_xml(&bytes) {
            dmpushd::codec::wbxml::xml::parse(xml.as_bytes()).expect("decoded XML reads back");
        }
        n += 1;
    }
    assert!(n >= 1);
}
