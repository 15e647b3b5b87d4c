//! WSP connectionless Push PDU (WAP-230-WSP §8.2.4.1, as carried in one WDP datagram).
//!
//! Layout (protocol-facts §A.1): `TID | PDU type 0x06 | uintvar HeadersLen | Content-Type |
//! Headers | Data`, where HeadersLen counts the content type plus the headers. Encodings of the
//! primitives follow WAP-230-WSP §8.4.2 (protocol-facts §A.2). Sans-IO: bytes in, bytes out.
//!
//! The decoder never panics; every error names what is wrong and the byte offset.

use thiserror::Error;

/// PDU type of a connectionless Push (WAP-230-WSP Table 34; protocol-facts §A.1).
pub const PDU_PUSH: u8 = 0x06;
/// ConfirmedPush, accepted by the decoder for completeness (connection-oriented sessions only).
pub const PDU_CONFIRMED_PUSH: u8 = 0x07;

/// Well-known content type codes (OMNA table; wire octet is `0x80 | code`, protocol-facts §A.3).
pub mod content_code {
    pub const CONNECTIVITY_WBXML: u32 = 0x36;
    pub const DM_WBXML: u32 = 0x42;
    pub const DM_XML: u32 = 0x43;
    pub const NOTIFICATION: u32 = 0x44;
}

/// Well-known header field codes (WAP-230-WSP Table 39; protocol-facts §A.4).
pub mod field {
    pub const CONTENT_LENGTH: u8 = 0x0D;
    pub const X_WAP_APPLICATION_ID: u8 = 0x2F;
    pub const X_WAP_INITIATOR_URI: u8 = 0x31;
    pub const PUSH_FLAG: u8 = 0x34;
    pub const ENCODING_VERSION: u8 = 0x43;
}

/// Well-known parameter tokens (WSP encoding 1.4; protocol-facts §A.3 / §A.8).
pub mod param {
    pub const CHARSET: u32 = 0x01;
    pub const SEC: u32 = 0x11;
    pub const MAC: u32 = 0x12;
}

/// X-Wap-Application-Id code of `x-wap-application:syncml.dm` (protocol-facts §A.5).
pub const APP_ID_SYNCML_DM: u32 = 0x07;
/// Text form of the same application id.
pub const APP_ID_SYNCML_DM_TEXT: &str = "x-wap-application:syncml.dm";

/// Why a WSP PDU could not be decoded (or encoded). Every decode error carries the offset.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WspError {
    #[error("WSP PDU truncated at offset {offset}: expected {what}")]
    Truncated { offset: usize, what: &'static str },
    #[error(
        "WSP PDU type 0x{pdu_type:02X} at offset {offset} is not Push (0x06) or ConfirmedPush (0x07)"
    )]
    NotPush { offset: usize, pdu_type: u8 },
    #[error("uintvar at offset {offset} is longer than 5 octets or exceeds 32 bits")]
    BadUintvar { offset: usize },
    #[error(
        "HeadersLen {len} at offset {offset} runs past the end of the PDU ({available} octets left)"
    )]
    HeadersOverrun {
        offset: usize,
        len: usize,
        available: usize,
    },
    #[error("{what} at offset {offset} overruns its enclosing length")]
    Overrun { offset: usize, what: &'static str },
    #[error("unterminated text string at offset {offset} (no NUL before end of field)")]
    UnterminatedText { offset: usize },
    #[error("text at offset {offset} is not valid UTF-8")]
    BadText { offset: usize },
    #[error("invalid Integer-value at offset {offset}: first octet 0x{octet:02X}")]
    BadInteger { offset: usize, octet: u8 },
    #[error("invalid content type at offset {offset}: {why}")]
    BadContentType { offset: usize, why: &'static str },
    #[error("cannot encode: {0}")]
    Encode(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Primitive encoders (WAP-230-WSP §8.1.2, §8.4.2.1)
// ---------------------------------------------------------------------------------------------

/// uintvar: big-endian base-128, continuation bit on every octet but the last (§8.1.2).
pub fn put_uintvar(out: &mut Vec<u8>, v: u32) {
    let mut tmp = [0u8; 5];
    let mut i = 5;
    let mut n = v;
    loop {
        i -= 1;
        tmp[i] = (n & 0x7F) as u8 | if i == 4 { 0 } else { 0x80 };
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Integer-value: Short-integer when ≤ 127, else Long-integer (§8.4.2.3).
pub fn put_integer(out: &mut Vec<u8>, v: u32) {
    if v < 0x80 {
        out.push(0x80 | v as u8);
    } else {
        let bytes = v.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push((4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Text-string: quoted with 0x7F when the first octet is ≥ 0x80 (§8.4.2.1), NUL-terminated.
fn put_text(out: &mut Vec<u8>, s: &str) -> Result<(), WspError> {
    if s.as_bytes().iter().any(|b| *b < 0x20 || *b == 0x7F) {
        return Err(WspError::Encode("text contains a control character"));
    }
    if s.as_bytes().first().is_some_and(|b| *b >= 0x80) {
        out.push(0x7F);
    }
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(())
}

/// Value-length: one octet when ≤ 30, else `0x1F` + uintvar (§8.4.2.2).
fn put_value_length(out: &mut Vec<u8>, len: usize) -> Result<(), WspError> {
    if len <= 30 {
        out.push(len as u8);
    } else {
        let len = u32::try_from(len).map_err(|_| WspError::Encode("value too long"))?;
        out.push(0x1F);
        put_uintvar(out, len);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// The media part of a content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// Well-known code (without the 0x80 bit), e.g. 0x42 for dm+wbxml.
    WellKnown(u32),
    /// Extension media as text, e.g. `application/vnd.syncml.dm+wbxml`.
    Text(String),
}

/// A content type parameter name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamName {
    WellKnown(u32),
    Text(String),
}

/// A content type parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Integer(u32),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: ParamName,
    pub value: ParamValue,
}

/// Content-type-value (§8.4.2.24): constrained media when there are no parameters, the general
/// form (Value-length + media + parameters) otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentTypeValue {
    pub media: Media,
    pub params: Vec<Param>,
}

impl ContentTypeValue {
    pub fn well_known(code: u32) -> Self {
        Self {
            media: Media::WellKnown(code),
            params: Vec::new(),
        }
    }

    /// The media type as text (well-known codes are resolved for the DM-relevant ones).
    pub fn media_str(&self) -> String {
        match &self.media {
            Media::Text(s) => s.clone(),
            Media::WellKnown(c) => match *c {
                content_code::CONNECTIVITY_WBXML => "application/vnd.wap.connectivity-wbxml".into(),
                content_code::DM_WBXML => "application/vnd.syncml.dm+wbxml".into(),
                content_code::DM_XML => "application/vnd.syncml.dm+xml".into(),
                content_code::NOTIFICATION => "application/vnd.syncml.notification".into(),
                other => format!("well-known 0x{other:02X}"),
            },
        }
    }
}

/// X-Wap-Application-Id value (protocol-facts §A.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppId {
    Code(u32),
    Uri(String),
}

/// One header of the Push PDU after the content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    ApplicationId(AppId),
    ContentLength(u32),
    /// Encoding-Version as (major, minor); minor 15 means "none" (§8.4.2.3 Version-value).
    EncodingVersion(u8, u8),
    InitiatorUri(String),
    /// Push-Flag bit mask (protocol-facts §A.6).
    PushFlag(u8),
    /// Any other well-known field, with its raw value octets.
    Other {
        code: u8,
        value: Vec<u8>,
    },
    /// Application header (Token-text name + Text-string value).
    Application {
        name: String,
        value: String,
    },
}

/// A connectionless Push PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPdu {
    pub tid: u8,
    pub pdu_type: u8,
    pub content_type: ContentTypeValue,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl PushPdu {
    /// A Push (0x06) with the given content type, app id and body.
    pub fn new(tid: u8, content_type: ContentTypeValue, app_id: AppId, body: Vec<u8>) -> Self {
        Self {
            tid,
            pdu_type: PDU_PUSH,
            content_type,
            headers: vec![Header::ApplicationId(app_id)],
            body,
        }
    }

    pub fn app_id(&self) -> Option<&AppId> {
        self.headers.iter().find_map(|h| match h {
            Header::ApplicationId(a) => Some(a),
            _ => None,
        })
    }

    /// Encodes the PDU (TID first: connectionless mode, protocol-facts §A.1).
    pub fn encode(&self) -> Result<Vec<u8>, WspError> {
        let mut hdr = Vec::with_capacity(64);
        encode_content_type(&mut hdr, &self.content_type)?;
        for h in &self.headers {
            encode_header(&mut hdr, h)?;
        }
        let hlen = u32::try_from(hdr.len()).map_err(|_| WspError::Encode("headers too long"))?;
        let mut out = Vec::with_capacity(hdr.len() + self.body.len() + 8);
        out.push(self.tid);
        out.push(self.pdu_type);
        put_uintvar(&mut out, hlen);
        out.extend_from_slice(&hdr);
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// Decodes a connectionless Push/ConfirmedPush PDU.
    pub fn decode(buf: &[u8]) -> Result<Self, WspError> {
        let mut r = Reader { buf, pos: 0 };
        let tid = r.u8("TID")?;
        let ty_off = r.pos;
        let pdu_type = r.u8("PDU type")?;
        if pdu_type != PDU_PUSH && pdu_type != PDU_CONFIRMED_PUSH {
            return Err(WspError::NotPush {
                offset: ty_off,
                pdu_type,
            });
        }
        let hl_off = r.pos;
        let hlen = r.uintvar()? as usize;
        let available = buf.len() - r.pos;
        if hlen > available {
            return Err(WspError::HeadersOverrun {
                offset: hl_off,
                len: hlen,
                available,
            });
        }
        let hend = r.pos + hlen;
        let mut hr = Reader {
            buf: &buf[..hend],
            pos: r.pos,
        };
        let content_type = decode_content_type(&mut hr)?;
        let mut headers = Vec::new();
        while hr.pos < hend {
            headers.push(decode_header(&mut hr)?);
        }
        Ok(Self {
            tid,
            pdu_type,
            content_type,
            headers,
            body: buf[hend..].to_vec(),
        })
    }
}

fn encode_content_type(out: &mut Vec<u8>, ct: &ContentTypeValue) -> Result<(), WspError> {
    if ct.params.is_empty() {
        match &ct.media {
            Media::WellKnown(c) if *c < 0x80 => {
                out.push(0x80 | *c as u8);
                return Ok(());
            }
            Media::Text(s) if s.is_empty() => return Err(WspError::Encode("empty media type")),
            Media::Text(s) => return put_text(out, s),
            Media::WellKnown(_) => {} // needs a Long-integer → general form
        }
    }
    let mut inner = Vec::new();
    match &ct.media {
        Media::WellKnown(c) => put_integer(&mut inner, *c),
        Media::Text(s) => put_text(&mut inner, s)?,
    }
    for p in &ct.params {
        match &p.name {
            ParamName::WellKnown(c) => put_integer(&mut inner, *c),
            ParamName::Text(s) => put_text(&mut inner, s)?,
        }
        match &p.value {
            ParamValue::Integer(v) => put_integer(&mut inner, *v),
            ParamValue::Text(s) => put_text(&mut inner, s)?,
        }
    }
    put_value_length(out, inner.len())?;
    out.extend_from_slice(&inner);
    Ok(())
}

fn encode_header(out: &mut Vec<u8>, h: &Header) -> Result<(), WspError> {
    match h {
        Header::ApplicationId(a) => {
            out.push(0x80 | field::X_WAP_APPLICATION_ID);
            match a {
                AppId::Code(c) => put_integer(out, *c),
                AppId::Uri(u) => put_text(out, u)?,
            }
        }
        Header::ContentLength(n) => {
            out.push(0x80 | field::CONTENT_LENGTH);
            put_integer(out, *n);
        }
        Header::EncodingVersion(major, minor) => {
            if *major > 7 || *minor > 15 {
                return Err(WspError::Encode("Encoding-Version out of range"));
            }
            out.push(0x80 | field::ENCODING_VERSION);
            out.push(0x80 | (major << 4) | minor);
        }
        Header::InitiatorUri(u) => {
            out.push(0x80 | field::X_WAP_INITIATOR_URI);
            put_text(out, u)?;
        }
        Header::PushFlag(f) => {
            if *f > 0x7F {
                return Err(WspError::Encode("Push-Flag is a short integer (≤ 0x7F)"));
            }
            out.push(0x80 | field::PUSH_FLAG);
            out.push(0x80 | f);
        }
        Header::Other { code, value } => {
            if *code > 0x7F {
                return Err(WspError::Encode("header code > 0x7F"));
            }
            out.push(0x80 | code);
            out.extend_from_slice(value);
        }
        Header::Application { name, value } => {
            if name
                .as_bytes()
                .first()
                .is_none_or(|b| *b < 0x20 || *b >= 0x7F)
            {
                return Err(WspError::Encode("application header name must be a token"));
            }
            put_text(out, name)?;
            put_text(out, value)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self, what: &'static str) -> Result<u8, WspError> {
        let b = *self.buf.get(self.pos).ok_or(WspError::Truncated {
            offset: self.pos,
            what,
        })?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&self, what: &'static str) -> Result<u8, WspError> {
        self.buf.get(self.pos).copied().ok_or(WspError::Truncated {
            offset: self.pos,
            what,
        })
    }

    fn uintvar(&mut self) -> Result<u32, WspError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for _ in 0..5 {
            let b = self.u8("uintvar octet")?;
            v = (v << 7) | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                return u32::try_from(v).map_err(|_| WspError::BadUintvar { offset: start });
            }
        }
        Err(WspError::BadUintvar { offset: start })
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], WspError> {
        if self.buf.len() - self.pos < n {
            return Err(WspError::Overrun {
                offset: self.pos,
                what,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn text(&mut self) -> Result<String, WspError> {
        let start = self.pos;
        if self.buf.get(self.pos) == Some(&0x7F) {
            // The Quote only announces a first TEXT octet ≥ 128 (§8.4.2.1): a quoted empty
            // string has no encoding of its own and would not survive re-encoding.
            if self.buf.get(self.pos + 1) == Some(&0) {
                return Err(WspError::BadText { offset: start });
            }
            self.pos += 1;
        }
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(WspError::UnterminatedText { offset: start })?;
        // TEXT excludes control characters (WAP-230 §8.4.2.1 after RFC 2616 §2.2); accepting
        // them would let e.g. a quoted 0x10 decode as text but re-encode as a short length.
        if let Some(i) = rest[..nul].iter().position(|b| *b < 0x20 || *b == 0x7F) {
            return Err(WspError::BadText {
                offset: self.pos + i,
            });
        }
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|_| WspError::BadText { offset: self.pos })?
            .to_owned();
        self.pos += nul + 1;
        Ok(s)
    }

    /// Integer-value: Short-integer or Long-integer (≤ 4 octets for a u32).
    fn integer(&mut self) -> Result<u32, WspError> {
        let off = self.pos;
        let b = self.u8("Integer-value")?;
        if b >= 0x80 {
            return Ok(u32::from(b & 0x7F));
        }
        if b == 0 || b > 4 {
            return Err(WspError::BadInteger {
                offset: off,
                octet: b,
            });
        }
        let bytes = self.take(b as usize, "Long-integer")?;
        Ok(bytes.iter().fold(0u32, |a, x| (a << 8) | u32::from(*x)))
    }

    /// Value-length (§8.4.2.2); `None` when the octet is not a length.
    fn value_length(&mut self) -> Result<Option<usize>, WspError> {
        let b = self.peek("Value-length")?;
        match b {
            0..=30 => {
                self.pos += 1;
                Ok(Some(b as usize))
            }
            31 => {
                self.pos += 1;
                Ok(Some(self.uintvar()? as usize))
            }
            _ => Ok(None),
        }
    }
}

fn decode_content_type(r: &mut Reader<'_>) -> Result<ContentTypeValue, WspError> {
    let off = r.pos;
    let b = r.peek("Content-Type")?;
    if b >= 0x80 {
        r.pos += 1;
        return Ok(ContentTypeValue::well_known(u32::from(b & 0x7F)));
    }
    if b >= 0x20 {
        let media = r.text()?;
        if media.is_empty() {
            // Only reachable as a quoted empty string; it would re-encode as a length octet.
            return Err(WspError::BadContentType {
                offset: off,
                why: "empty media type",
            });
        }
        return Ok(ContentTypeValue {
            media: Media::Text(media),
            params: Vec::new(),
        });
    }
    let len = r.value_length()?.ok_or(WspError::BadContentType {
        offset: off,
        why: "expected a length",
    })?;
    let end = r
        .pos
        .checked_add(len)
        .filter(|e| *e <= r.buf.len())
        .ok_or(WspError::Overrun {
            offset: off,
            what: "Content-general-form",
        })?;
    let mut inner = Reader {
        buf: &r.buf[..end],
        pos: r.pos,
    };
    let m = inner.peek("media")?;
    let media = if m >= 0x80 || m <= 30 {
        Media::WellKnown(inner.integer()?)
    } else {
        let t = inner.text()?;
        if t.is_empty() {
            return Err(WspError::BadContentType {
                offset: off,
                why: "empty media type",
            });
        }
        Media::Text(t)
    };
    let mut params = Vec::new();
    while inner.pos < end {
        let n = inner.peek("parameter")?;
        let name = if n >= 0x80 || n <= 30 {
            ParamName::WellKnown(inner.integer()?)
        } else {
            ParamName::Text(inner.text()?)
        };
        let v = inner.peek("parameter value")?;
        let value = if v >= 0x80 || v <= 30 {
            ParamValue::Integer(inner.integer()?)
        } else {
            ParamValue::Text(inner.text()?)
        };
        params.push(Param { name, value });
    }
    r.pos = end;
    Ok(ContentTypeValue { media, params })
}

fn decode_header(r: &mut Reader<'_>) -> Result<Header, WspError> {
    let off = r.pos;
    let b = r.u8("header field")?;
    if b < 0x80 {
        // Application header: Token-text name (starts at `b`) + Text-string value.
        if b < 0x20 {
            return Err(WspError::BadContentType {
                offset: off,
                why: "header field name octet below 0x20 (shift sequences unsupported)",
            });
        }
        r.pos = off;
        let name = r.text()?;
        let value = r.text()?;
        return Ok(Header::Application { name, value });
    }
    let code = b & 0x7F;
    let voff = r.pos;
    let first = r.peek("header value")?;
    // Generic value extent (§8.4.1.2): 0–30 length, 31 uintvar length, 32–127 text, ≥128 short.
    let raw_value = |r: &mut Reader<'_>| -> Result<Vec<u8>, WspError> {
        let start = r.pos;
        match first {
            0..=31 => {
                let n = r.value_length()?.unwrap_or(0);
                r.take(n, "header value")?;
            }
            32..=127 => {
                r.text()?;
            }
            _ => r.pos += 1,
        }
        Ok(r.buf[start..r.pos].to_vec())
    };
    Ok(match code {
        field::X_WAP_APPLICATION_ID => {
            if first >= 0x80 || first <= 30 {
                Header::ApplicationId(AppId::Code(r.integer()?))
            } else {
                Header::ApplicationId(AppId::Uri(r.text()?))
            }
        }
        field::CONTENT_LENGTH if first >= 0x80 || first <= 30 => {
            Header::ContentLength(r.integer()?)
        }
        field::ENCODING_VERSION if first >= 0x80 => {
            r.pos += 1;
            let v = first & 0x7F;
            Header::EncodingVersion(v >> 4, v & 0x0F)
        }
        field::X_WAP_INITIATOR_URI if (32..128).contains(&first) => Header::InitiatorUri(r.text()?),
        field::PUSH_FLAG if first >= 0x80 => {
            r.pos += 1;
            Header::PushFlag(first & 0x7F)
        }
        _ => {
            let value = raw_value(r)?;
            if value.is_empty() {
                return Err(WspError::Truncated {
                    offset: voff,
                    what: "header value",
                });
            }
            Header::Other { code, value }
        }
    })
}

#[cfg(test)]
mod tests {
    /// Fuzzer finding: a quoted empty parameter value did not survive re-encoding.
    #[test]
    fn fuzz_regression_quoted_empty_parameter() {
        let input =
            include_bytes!("../../tests/fixtures/wsp/fuzz-regressions/quoted_empty_param.bin");
        let r = PushPdu::decode(input);
        assert!(matches!(r, Err(WspError::BadText { .. })), "{r:?}");
    }

    /// Fuzzer finding: a quoted empty media type would re-encode as a length octet.
    #[test]
    fn fuzz_regression_quoted_empty_media_type() {
        let input =
            include_bytes!("../../tests/fixtures/wsp/fuzz-regressions/quoted_empty_media.bin");
        let r = PushPdu::decode(input);
        assert!(matches!(r, Err(WspError::BadText { offset: 3 })), "{r:?}");
    }

    /// Found by `fuzz/fuzz_targets/wap_wsp_decode.rs`: a quoted control character decoded as a
    /// text content type that re-encoded to different bytes. Every decoded PDU must round-trip.
    #[test]
    fn fuzz_regression_quoted_control_text() {
        let input =
            include_bytes!("../../tests/fixtures/wsp/fuzz-regressions/quoted_control_text.bin");
        assert_eq!(
            &input[..],
            &[
                0x30, 0x07, 0x07, 0x7F, 0x10, 0x00, 0x30, 0x00, 0x28, 0x00, 0x07, 0x2C
            ]
        );
        match PushPdu::decode(input) {
            Err(WspError::BadText { offset }) => assert_eq!(offset, 4),
            Ok(pdu) => {
                let again = PushPdu::decode(&pdu.encode().unwrap()).unwrap();
                assert_eq!(again, pdu);
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    use super::*;

    #[test]
    fn uintvar_examples_match_protocol_facts_a2() {
        for (v, hex) in [
            (0u32, "00"),
            (3, "03"),
            (127, "7f"),
            (128, "8100"),
            (300, "822c"),
            (16383, "ff7f"),
            (16384, "818000"),
            (0xFFFF_FFFF, "8fffffff7f"),
        ] {
            let mut out = Vec::new();
            put_uintvar(&mut out, v);
            assert_eq!(hex::encode(&out), hex, "uintvar({v})");
            let mut r = Reader { buf: &out, pos: 0 };
            assert_eq!(r.uintvar().unwrap(), v);
        }
    }

    #[test]
    fn notification_push_matches_worked_example_a7() {
        let body = vec![0xD3, 0x29, 0x0F, 0x1C];
        let pdu = PushPdu::new(
            1,
            ContentTypeValue::well_known(content_code::NOTIFICATION),
            AppId::Code(APP_ID_SYNCML_DM),
            body.clone(),
        );
        let bytes = pdu.encode().unwrap();
        assert_eq!(hex::encode(&bytes), "010603c4af87d3290f1c");
        assert_eq!(PushPdu::decode(&bytes).unwrap(), pdu);
    }

    #[test]
    fn text_app_id_matches_worked_example_a7() {
        let pdu = PushPdu::new(
            1,
            ContentTypeValue::well_known(content_code::NOTIFICATION),
            AppId::Uri(APP_ID_SYNCML_DM_TEXT.into()),
            vec![0xD3],
        );
        let bytes = pdu.encode().unwrap();
        let mut want = hex::decode("01061ec4af").unwrap();
        want.extend_from_slice(b"x-wap-application:syncml.dm\0");
        want.push(0xD3);
        assert_eq!(bytes, want);
        assert_eq!(PushPdu::decode(&bytes).unwrap(), pdu);
    }

    #[test]
    fn general_form_with_charset_matches_a3() {
        let ct = ContentTypeValue {
            media: Media::WellKnown(content_code::DM_XML),
            params: vec![Param {
                name: ParamName::WellKnown(param::CHARSET),
                value: ParamValue::Integer(106),
            }],
        };
        let mut out = Vec::new();
        encode_content_type(&mut out, &ct).unwrap();
        assert_eq!(hex::encode(&out), "03c381ea");
    }

    #[test]
    fn bootstrap_sec_mac_and_extra_headers_round_trip() {
        let mut pdu = PushPdu::new(
            0x42,
            ContentTypeValue {
                media: Media::WellKnown(content_code::DM_WBXML),
                params: vec![
                    Param {
                        name: ParamName::WellKnown(param::SEC),
                        value: ParamValue::Integer(0),
                    },
                    Param {
                        name: ParamName::WellKnown(param::MAC),
                        value: ParamValue::Text("A".repeat(40)),
                    },
                ],
            },
            AppId::Code(7),
            vec![3, 2, 1],
        );
        pdu.headers.push(Header::ContentLength(3));
        pdu.headers.push(Header::EncodingVersion(1, 3));
        pdu.headers
            .push(Header::InitiatorUri("https://dm.example/".into()));
        pdu.headers.push(Header::PushFlag(0x02));
        pdu.headers.push(Header::ContentLength(1000));
        let bytes = pdu.encode().unwrap();
        // Value-length 45 ≥ 31 → 0x1F + uintvar (§8.4.2.2).
        assert_eq!(&bytes[3..6], &[0x1F, 45, 0xC2]);
        assert!(
            bytes.windows(2).any(|w| w == [0xC3, 0x93]),
            "Encoding-Version 1.3 = C3 93"
        );
        assert_eq!(PushPdu::decode(&bytes).unwrap(), pdu);
    }

    #[test]
    fn decode_errors_name_offsets() {
        assert_eq!(
            PushPdu::decode(&[1, 0x40, 0]).unwrap_err(),
            WspError::NotPush {
                offset: 1,
                pdu_type: 0x40
            }
        );
        assert_eq!(
            PushPdu::decode(&[1, 6, 9, 0xC4]).unwrap_err(),
            WspError::HeadersOverrun {
                offset: 2,
                len: 9,
                available: 1
            }
        );
        assert!(matches!(
            PushPdu::decode(&[1, 6, 0x80, 0x80, 0x80, 0x80, 0x80, 0]).unwrap_err(),
            WspError::BadUintvar { offset: 2 }
        ));
        assert!(matches!(
            PushPdu::decode(&[1, 6, 2, 0xC4, 0xAF]).unwrap_err(),
            WspError::Truncated { offset: 5, .. }
        ));
        assert!(
            PushPdu::decode(&[])
                .unwrap_err()
                .to_string()
                .contains("offset 0")
        );
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = PushPdu::decode(&data);
        }

        #[test]
        fn encode_decode_round_trip(
            tid in proptest::prelude::any::<u8>(),
            code in 0u32..0x80,
            app in 0u32..0x1_0000,
            len in proptest::prelude::any::<u32>(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let mut pdu = PushPdu::new(tid, ContentTypeValue::well_known(code), AppId::Code(app), body);
            pdu.headers.push(Header::ContentLength(len));
            let bytes = pdu.encode().unwrap();
            proptest::prop_assert_eq!(PushPdu::decode(&bytes).unwrap(), pdu);
        }
    }
}
