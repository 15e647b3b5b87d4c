//! WBXML 1.3 (WAP-192-WBXML) encoder and decoder for the SyncML DM vocabularies, with XML ⇄ WBXML
//! conversion through quick-xml.
//!
//! Anatomy:
//! * [`tables`] — code pages (SyncML 1.1/1.2 + MetInf, DevInf 1.1/1.2, DM DDF 1.2) and public ids.
//! * [`Document`]/[`Element`]/[`Node`] — the tree both directions go through. `<Data>` that carries a
//!   nested WBXML document (TNDS/DDF, DevInf) is a [`Node::Document`]; other binary is [`Node::Opaque`].
//! * [`decode`] — WBXML → tree, bounded by [`DecodeLimits`]; never panics; errors carry byte offsets.
//! * [`encode`] — tree → WBXML ([`EncodeOptions`]: WBXML version, string table use).
//! * [`xml`] — XML text ⇄ tree (namespaces ⇄ code pages).

pub mod decode;
pub mod encode;
pub mod tables;
pub mod xml;

pub use decode::{DecodeLimits, decode, decode_with};
pub use encode::{EncodeOptions, encode, encode_with};
pub use tables::Vocabulary;

/// WBXML global tokens (WAP-192-WBXML §7.1; facts §E.2).
pub mod token {
    pub const SWITCH_PAGE: u8 = 0x00;
    pub const END: u8 = 0x01;
    pub const ENTITY: u8 = 0x02;
    pub const STR_I: u8 = 0x03;
    pub const LITERAL: u8 = 0x04;
    pub const EXT_I_0: u8 = 0x40;
    pub const EXT_I_2: u8 = 0x42;
    pub const PI: u8 = 0x43;
    pub const LITERAL_C: u8 = 0x44;
    pub const EXT_T_0: u8 = 0x80;
    pub const EXT_T_2: u8 = 0x82;
    pub const STR_T: u8 = 0x83;
    pub const LITERAL_A: u8 = 0x84;
    pub const EXT_0: u8 = 0xC0;
    pub const EXT_2: u8 = 0xC2;
    pub const OPAQUE: u8 = 0xC3;
    pub const LITERAL_AC: u8 = 0xC4;
    /// Tag flag: element has content (§5.8.2).
    pub const HAS_CONTENT: u8 = 0x40;
    /// Tag flag: element has attributes (§5.8.2).
    pub const HAS_ATTRS: u8 = 0x80;
    /// Charset MIBenum for UTF-8 (IANA; facts §E.1).
    pub const CHARSET_UTF8: u32 = 106;
}

/// A WBXML/XML document in one vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// WBXML version octet (0x01–0x03 = 1.1–1.3).
    pub version: u8,
    pub vocabulary: Vocabulary,
    pub root: Element,
}

/// An element. `namespace` is the resolved (default) namespace; it selects the code page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub namespace: String,
    /// Attributes other than `xmlns` (SyncML defines none; carried as LITERAL/STR_I).
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
    /// OPAQUE content that is neither a nested document nor UTF-8 text.
    Opaque(Vec<u8>),
    /// A nested WBXML document carried as OPAQUE (e.g. a DDF/TNDS tree inside `<Data>`).
    Document(Box<Document>),
}

/// WBXML/XML conversion errors. All are permanent (the input itself is wrong); each names the byte
/// offset in the input where the problem was found (for nested documents: the offset inside the
/// OPAQUE payload, reported with the outer offset of the payload).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WbxmlError {
    #[error("wbxml: truncated while reading {what} at byte offset {offset}")]
    Truncated { offset: usize, what: &'static str },
    #[error(
        "wbxml: unsupported WBXML version 0x{version:02X} at byte offset {offset} (1.1–1.3 accepted)"
    )]
    UnsupportedVersion { offset: usize, version: u8 },
    #[error("wbxml: unknown public id {id} at byte offset {offset}")]
    UnknownPublicId { offset: usize, id: String },
    #[error("wbxml: unsupported charset MIBenum {charset} at byte offset {offset} (UTF-8 only)")]
    UnsupportedCharset { offset: usize, charset: u32 },
    #[error("wbxml: {what} exceeds the limit of {limit} at byte offset {offset}")]
    LimitExceeded {
        offset: usize,
        what: &'static str,
        limit: usize,
    },
    #[error("wbxml: mb_u_int32 longer than 5 octets or over 32 bits at byte offset {offset}")]
    MbOverflow { offset: usize },
    #[error("wbxml: unknown tag token 0x{token:02X} on code page {page} at byte offset {offset}")]
    UnknownTag { offset: usize, page: u8, token: u8 },
    #[error("wbxml: string table index {index} out of range at byte offset {offset}")]
    BadStringIndex { offset: usize, index: u32 },
    #[error("wbxml: invalid UTF-8 in {what} at byte offset {offset}")]
    InvalidUtf8 { offset: usize, what: &'static str },
    #[error("wbxml: unexpected token 0x{token:02X} ({context}) at byte offset {offset}")]
    UnexpectedToken {
        offset: usize,
        token: u8,
        context: &'static str,
    },
    #[error("wbxml: {count} trailing octets after the root element at byte offset {offset}")]
    TrailingBytes { offset: usize, count: usize },
    #[error("wbxml: entity U+{code:X} is not a valid character at byte offset {offset}")]
    BadEntity { offset: usize, code: u32 },
    #[error("wbxml: {what} cannot be written as XML at byte offset {offset}")]
    NotXml { offset: usize, what: &'static str },
    #[error("xml: {message} at byte offset {offset}")]
    Xml { offset: usize, message: String },
    #[error(
        "xml: cannot tell the vocabulary (no known DOCTYPE public id or root xmlns) at byte offset {offset}"
    )]
    UnknownVocabulary { offset: usize },
    #[error("wbxml: cannot encode {what}")]
    Unencodable { what: String },
}

impl WbxmlError {
    /// Conversion errors never go away by retrying.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// XML text → WBXML, detecting the vocabulary from the DOCTYPE public id or the root `xmlns`.
pub fn xml_to_wbxml(xml: &[u8]) -> Result<Vec<u8>, WbxmlError> {
    let doc = xml::parse(xml)?;
    encode(&doc)
}

/// WBXML → XML text (UTF-8, compact, with XML declaration and DOCTYPE).
pub fn wbxml_to_xml(wbxml: &[u8]) -> Result<String, WbxmlError> {
    let doc = decode(wbxml)?;
    Ok(xml::to_string(&doc))
}

/// Reads a WBXML mb_u_int32 (§5.1: big-endian base-128, continuation bit 0x80, at most 5 octets).
pub(crate) fn read_mb(
    input: &[u8],
    pos: &mut usize,
    what: &'static str,
) -> Result<u32, WbxmlError> {
    let start = *pos;
    let mut v: u32 = 0;
    for i in 0..5 {
        let Some(&b) = input.get(*pos) else {
            return Err(WbxmlError::Truncated { offset: *pos, what });
        };
        *pos += 1;
        if i == 4 && v > (u32::MAX >> 7) {
            return Err(WbxmlError::MbOverflow { offset: start });
        }
        v = (v << 7) | u32::from(b & 0x7F);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WbxmlError::MbOverflow { offset: start })
}

/// Appends a WBXML mb_u_int32.
pub(crate) fn write_mb(out: &mut Vec<u8>, mut v: u32) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = (v & 0x7F) as u8 | if i == buf.len() - 1 { 0 } else { 0x80 };
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mb_round_trip_and_known_values() {
        for (v, bytes) in [
            (0u32, vec![0x00]),
            (0x7F, vec![0x7F]),
            (0x80, vec![0x81, 0x00]),
            (0x1201, vec![0xA4, 0x01]),
            (0x0FD3, vec![0x9F, 0x53]),
            (u32::MAX, vec![0x8F, 0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = vec![];
            write_mb(&mut out, v);
            assert_eq!(out, bytes, "{v:#x}");
            let mut pos = 0;
            assert_eq!(read_mb(&bytes, &mut pos, "t").unwrap(), v);
            assert_eq!(pos, bytes.len());
        }
        let mut pos = 0;
        assert_eq!(
            read_mb(&[0x90, 0x80, 0x80, 0x80, 0x00], &mut pos, "t"),
            Err(WbxmlError::MbOverflow { offset: 0 })
        );
        let mut pos = 0;
        assert_eq!(
            read_mb(&[0x81], &mut pos, "t"),
            Err(WbxmlError::Truncated {
                offset: 1,
                what: "t"
            })
        );
    }
}

#[cfg(test)]
mod conversion_tests {
    use super::*;

    /// Facts §E.8, re-encoded by hand from the tables (WBXML 1.2 header, no string table).
    const E8_XML: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:493005100592800</LocURI></Target><Source><LocURI>https://dm.example.com/dm</LocURI></Source><Meta><MaxMsgSize xmlns="syncml:metinf">10000</MaxMsgSize></Meta></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1200</Data></Alert><Final/></SyncBody></SyncML>"#;

    fn e8_bytes() -> Vec<u8> {
        let mut v = vec![0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x6C, 0x71, 0x03];
        let s = |v: &mut Vec<u8>, t: &str| {
            v.push(0x03);
            v.extend_from_slice(t.as_bytes());
            v.push(0);
        };
        v.truncate(8);
        s(&mut v, "1.2");
        v.extend([0x01, 0x72]);
        s(&mut v, "DM/1.2");
        v.extend([0x01, 0x65]);
        s(&mut v, "1");
        v.extend([0x01, 0x5B]);
        s(&mut v, "1");
        v.extend([0x01, 0x6E, 0x57]);
        s(&mut v, "IMEI:493005100592800");
        v.extend([0x01, 0x01, 0x67, 0x57]);
        s(&mut v, "https://dm.example.com/dm");
        v.extend([0x01, 0x01, 0x5A, 0x00, 0x01, 0x4C]);
        s(&mut v, "10000");
        v.extend([0x01, 0x01, 0x01, 0x00, 0x00, 0x6B, 0x46, 0x4B]);
        s(&mut v, "1");
        v.extend([0x01, 0x4F]);
        s(&mut v, "1200");
        v.extend([0x01, 0x01, 0x12, 0x01, 0x01]);
        v
    }

    #[test]
    fn e8_worked_example_encodes_byte_exact() {
        let doc = xml::parse(E8_XML.as_bytes()).unwrap();
        let opts = EncodeOptions {
            version: 0x02,
            string_table: false,
        };
        assert_eq!(
            hex::encode(encode_with(&doc, &opts).unwrap()),
            hex::encode(e8_bytes())
        );
    }

    #[test]
    fn e8_worked_example_decodes() {
        let doc = decode(&e8_bytes()).unwrap();
        assert_eq!(doc.vocabulary, Vocabulary::SyncMl12);
        assert_eq!(doc.version, 2);
        let again = xml::parse(xml::to_string(&doc).as_bytes()).unwrap();
        assert_eq!(again.root, xml::parse(E8_XML.as_bytes()).unwrap().root);
    }

    #[test]
    fn string_table_used_for_repeated_text_and_round_trips() {
        let x = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncBody><Get><Item><Target><LocURI>./DevInfo/Lang</LocURI></Target></Item><Item><Target><LocURI>./DevInfo/Lang</LocURI></Target></Item></Get></SyncBody></SyncML>"#;
        let w = xml_to_wbxml(x.as_bytes()).unwrap();
        assert_eq!(&w[..4], &[0x03, 0xA4, 0x01, 0x6A]);
        assert_eq!(w[4], 15, "string table holds ./DevInfo/Lang\\0");
        assert_eq!(w.iter().filter(|&&b| b == token::STR_T).count(), 2);
        let back = xml::parse(wbxml_to_xml(&w).unwrap().as_bytes()).unwrap();
        assert_eq!(back.root, xml::parse(x.as_bytes()).unwrap().root);
    }

    #[test]
    fn errors_name_offsets() {
        assert_eq!(
            decode(&[0x04, 0xA4, 0x01, 0x6A, 0x00]),
            Err(WbxmlError::UnsupportedVersion {
                offset: 0,
                version: 4
            })
        );
        assert!(matches!(
            decode(&[0x03, 0x7F, 0x6A, 0x00, 0x6D]),
            Err(WbxmlError::UnknownPublicId { offset: 1, .. })
        ));
        assert_eq!(
            decode(&[0x03, 0xA4, 0x01, 0x6A, 0x00, 0x7F]),
            Err(WbxmlError::UnknownTag {
                offset: 5,
                page: 0,
                token: 0x3F
            })
        );
        assert_eq!(
            decode(&[0x03, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x6C]),
            Err(WbxmlError::Truncated {
                offset: 7,
                what: "element content (missing END)"
            })
        );
        assert!(matches!(
            decode(&[0x03, 0xA4, 0x01, 0x6A, 0x00, 0x2D, 0x2D]),
            Err(WbxmlError::TrailingBytes {
                offset: 6,
                count: 1
            })
        ));
        // 70 nested Meta elements exceed the default depth limit of 64.
        let mut deep = vec![0x03, 0xA4, 0x01, 0x6A, 0x00];
        deep.extend(std::iter::repeat_n(0x5A, 70));
        assert!(matches!(
            decode(&deep),
            Err(WbxmlError::LimitExceeded {
                what: "element depth",
                ..
            })
        ));
    }

    #[test]
    fn rtk_string_public_id_without_nul_entity_and_literal_attrs() {
        // SyncML RTK style: string-form public id whose table entry has no NUL (facts §E.1).
        let fpi = b"-//SYNCML//DTD SyncML 1.2//EN";
        let mut w = vec![0x02, 0x00, 0x00, 0x6A, fpi.len() as u8];
        w.extend_from_slice(fpi);
        // <SyncML><VerProto>"1" ENTITY U+00E9</VerProto></SyncML>
        w.extend([0x6D, 0x72, 0x03, b'1', 0x00, 0x02, 0x81, 0x69, 0x01, 0x01]);
        let doc = decode(&w).unwrap();
        assert_eq!(doc.vocabulary, Vocabulary::SyncMl12);
        let xml = xml::to_string(&doc);
        assert!(xml.contains("<VerProto>1\u{e9}</VerProto>"), "{xml}");

        // LITERAL_AC element with a literal attribute, names from the string table.
        let mut w = vec![0x03, 0xA4, 0x01, 0x6A, 0x06];
        w.extend_from_slice(b"Foo\0a\0");
        w.extend([
            0x6D, 0xC4, 0x00, 0x04, 0x04, 0x03, b'v', 0x00, 0x01, 0x03, b't', 0x00, 0x01, 0x01,
        ]);
        let xml = wbxml_to_xml(&w).unwrap();
        assert!(
            xml.ends_with(r#"<SyncML xmlns="SYNCML:SYNCML1.2"><Foo a="v">t</Foo></SyncML>"#),
            "{xml}"
        );
        // And it re-encodes to the same tree.
        let again = decode(&xml_to_wbxml(xml.as_bytes()).unwrap()).unwrap();
        assert_eq!(again.root, decode(&w).unwrap().root);
    }
}
