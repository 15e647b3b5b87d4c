//! Property tests for the codecs: package #0 round trips and digest checks, XML → WBXML → XML over
//! generated SyncML documents, and decoders that never panic on arbitrary bytes.

use dmpushd::codec::notification::{self, Initiator, Trigger, UiMode, Verification};
use dmpushd::codec::wbxml::{self, Document, Element, Node, Vocabulary, tables};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// The default persistence (`SourceParallel`) walks up to the nearest `main.rs`, which is now
/// `tests/it/main.rs`, and would read `tests/proptest-regressions/codec_proptest.txt`. Keep the
/// saved seeds next to this file instead: `tests/it/codec_proptest.proptest-regressions`.
fn persistence() -> Option<Box<dyn proptest::test_runner::FailurePersistence>> {
    Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )))
}

fn ui_mode() -> impl Strategy<Value = UiMode> {
    prop_oneof![
        Just(UiMode::NotSpecified),
        Just(UiMode::Background),
        Just(UiMode::Informative),
        Just(UiMode::UserInteraction)
    ]
}

fn trigger() -> impl Strategy<Value = Trigger> {
    (
        0u16..=1023,
        ui_mode(),
        any::<bool>(),
        any::<u16>(),
        "[ -~]{0,40}",
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(version, ui_mode, srv, session_id, server_id, vendor)| Trigger {
                version,
                ui_mode,
                initiator: if srv {
                    Initiator::Server
                } else {
                    Initiator::Client
                },
                session_id,
                server_id,
                vendor,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: persistence(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn package0_build_parse_round_trip(
        t in trigger(),
        pw in proptest::collection::vec(any::<u8>(), 0..32),
        nonce in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let bytes = notification::build(&t, &pw, &nonce).unwrap();
        let p = notification::parse(&bytes).unwrap();
        prop_assert_eq!(&p.trigger, &t);
        prop_assert_eq!(bytes.len(), 24 + t.server_id.len() + t.vendor.len());
        prop_assert_eq!(notification::verify(&bytes, &t.server_id, &pw, &nonce), Verification::Ok);
        let mut wrong_pw = pw.clone();
        wrong_pw.push(b'x');
        prop_assert_eq!(notification::verify(&bytes, &t.server_id, &wrong_pw, &nonce), Verification::Mismatch);
        let mut wrong_nonce = nonce.clone();
        wrong_nonce.push(1);
        if wrong_nonce != notification::RESYNC_NONCE {
            prop_assert_eq!(notification::verify(&bytes, &t.server_id, &pw, &wrong_nonce), Verification::Mismatch);
        }
        // Any flipped bit in the trigger breaks the digest.
        let mut tampered = bytes.clone();
        let i = 16 + (t.session_id as usize % (bytes.len() - 16));
        tampered[i] ^= 0x01;
        prop_assert_ne!(notification::verify(&tampered, &t.server_id, &pw, &nonce), Verification::Ok);
    }

    #[test]
    fn package0_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = notification::parse(&bytes);
        let _ = notification::verify(&bytes, "x", b"p", b"n");
    }

    #[test]
    fn wbxml_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = wbxml::decode(&bytes);
        let _ = wbxml::wbxml_to_xml(&bytes);
    }

    #[test]
    fn wbxml_decoder_never_panics_on_mutated_documents(
        doc in syncml_document(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = wbxml::encode(&doc).unwrap();
        for (i, b) in edits {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        if let Ok(xml) = wbxml::wbxml_to_xml(&bytes) {
            // Whatever decodes must be XML we can read back.
            prop_assert!(wbxml::xml::parse(xml.as_bytes()).is_ok(), "{}", xml);
        }
    }

    #[test]
    fn xml_wbxml_xml_round_trip(doc in syncml_document(), string_table in any::<bool>(), version in 1u8..=3) {
        let xml = wbxml::xml::to_string(&doc);
        let opts = wbxml::EncodeOptions { version, string_table };
        let parsed = wbxml::xml::parse(xml.as_bytes()).unwrap();
        prop_assert_eq!(&parsed.root, &doc.root);
        let bytes = wbxml::encode_with(&parsed, &opts).unwrap();
        let back = wbxml::decode(&bytes).unwrap();
        prop_assert_eq!(back.version, version);
        prop_assert_eq!(&back.root, &doc.root);
        let xml2 = wbxml::wbxml_to_xml(&bytes).unwrap();
        prop_assert_eq!(xml2, xml);
    }
}

/// Text as the XML parser will hand it back: trimmed, non-empty, any XML character.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9./:?&<>\"'=+ \u{e9}\u{65e5}-]{1,24}".prop_filter_map("blank", |s: String| {
        let t = s.trim().to_owned();
        (!t.is_empty()).then_some(t)
    })
}

fn leaf(ns: &'static str, tags: &'static [&'static str]) -> impl Strategy<Value = Element> {
    (
        proptest::sample::select(
            tags.iter()
                .copied()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>(),
        ),
        proptest::option::of(text()),
    )
        .prop_map(move |(name, t)| Element {
            name: name.to_owned(),
            namespace: ns.to_owned(),
            attrs: vec![],
            children: t.into_iter().map(Node::Text).collect(),
        })
}

fn syncml_element() -> impl Strategy<Value = Element> {
    let syncml = tables::SYNCML12_PAGE.tags;
    let metinf = tables::METINF12_PAGE.tags;
    let leaves = prop_oneof![
        3 => leaf("SYNCML:SYNCML1.2", syncml),
        1 => leaf("syncml:metinf", metinf),
        // Unknown elements go as LITERAL through the string table.
        1 => "[A-Z][a-zA-Z]{0,8}"
            .prop_filter("known tag", |n: &String| tables::SYNCML12_PAGE.tag_token(n).is_none())
            .prop_map(|n| Element {
                name: n,
                namespace: "SYNCML:SYNCML1.2".into(),
                attrs: vec![],
                children: vec![],
            }),
    ];
    leaves.prop_recursive(5, 64, 6, move |inner| {
        (
            proptest::sample::select(
                syncml
                    .iter()
                    .copied()
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>(),
            ),
            proptest::collection::vec(inner, 1..6),
        )
            .prop_map(|(name, kids)| Element {
                name: name.to_owned(),
                namespace: "SYNCML:SYNCML1.2".into(),
                attrs: vec![],
                children: kids.into_iter().map(Node::Element).collect(),
            })
    })
}

fn syncml_document() -> impl Strategy<Value = Document> {
    proptest::collection::vec(syncml_element(), 1..5).prop_map(|kids| Document {
        version: 3,
        vocabulary: Vocabulary::SyncMl12,
        root: Element {
            name: "SyncML".into(),
            namespace: "SYNCML:SYNCML1.2".into(),
            attrs: vec![],
            children: kids.into_iter().map(Node::Element).collect(),
        },
    })
}
