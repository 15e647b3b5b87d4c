//! OBEX packets and headers (IrOBEX §3.1, protocol-facts §F.1, §F.4): encoding, and decoding
//! that never panics and reports what is wrong and at which byte offset.

use super::{HI_CONNECTION_ID, HI_NAME, HI_TYPE, OP_CONNECT};

/// Decoding error: what is wrong and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("OBEX decode error at offset {offset}: {kind}")]
pub struct DecodeError {
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("truncated: need {needed} octets, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("packet length field {declared} is below the 3-octet minimum")]
    LengthTooSmall { declared: usize },
    #[error("packet length field {declared} does not match the {actual} octets given")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("header 0x{id:02X} length {len} is below its 3-octet prefix")]
    HeaderLengthTooSmall { id: u8, len: usize },
    #[error("header 0x{id:02X} length {len} runs past the packet end")]
    HeaderOverrun { id: u8, len: usize },
    #[error("Unicode header 0x{id:02X} is not NUL-terminated UTF-16BE")]
    BadUnicode { id: u8 },
    #[error("authentication TLV tag 0x{tag:02X} runs past the header end")]
    TlvOverrun { tag: u8 },
    #[error("authentication challenge has no 16-octet nonce (tag 0x00)")]
    MissingNonce,
}

pub(super) fn err(offset: usize, kind: DecodeErrorKind) -> DecodeError {
    DecodeError { offset, kind }
}

/// Encoding error (a packet over 65 535 octets, a header value too long).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("OBEX packet of {0} octets exceeds the 16-bit length field")]
    PacketTooLarge(usize),
    #[error("header 0x{id:02X} value of {len} octets exceeds the 16-bit length field")]
    HeaderTooLarge { id: u8, len: usize },
    #[error("header 0x{id:02X} value does not match its encoding class")]
    WrongClass { id: u8 },
}

/// A header value; the class is fixed by the identifier's bits 7–6 (§F.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// `00`: Unicode text (decoded from NUL-terminated UTF-16BE; an empty header is "").
    Unicode(String),
    /// `01`: byte sequence.
    Bytes(Vec<u8>),
    /// `10`: one octet.
    U8(u8),
    /// `11`: four octets, big-endian.
    U32(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u8,
    pub value: HeaderValue,
}

impl Header {
    pub fn name(s: &str) -> Self {
        Self {
            id: HI_NAME,
            value: HeaderValue::Unicode(s.to_owned()),
        }
    }
    pub fn bytes(id: u8, v: &[u8]) -> Self {
        Self {
            id,
            value: HeaderValue::Bytes(v.to_vec()),
        }
    }
    pub fn u32(id: u8, v: u32) -> Self {
        Self {
            id,
            value: HeaderValue::U32(v),
        }
    }
    /// Type header: the MIME type as NUL-terminated ASCII (§F.4).
    pub fn mime_type(t: &str) -> Self {
        let mut v = t.as_bytes().to_vec();
        v.push(0);
        Self {
            id: HI_TYPE,
            value: HeaderValue::Bytes(v),
        }
    }

    /// Octets this header takes on the wire.
    pub fn wire_len(&self) -> usize {
        match &self.value {
            HeaderValue::Unicode(s) if s.is_empty() => 3,
            HeaderValue::Unicode(s) => 3 + 2 * s.encode_utf16().count() + 2,
            HeaderValue::Bytes(b) => 3 + b.len(),
            HeaderValue::U8(_) => 2,
            HeaderValue::U32(_) => 5,
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let class = self.id >> 6;
        let id = self.id;
        let len = self.wire_len();
        match (&self.value, class) {
            (HeaderValue::Unicode(s), 0) => {
                let len16 =
                    u16::try_from(len).map_err(|_| EncodeError::HeaderTooLarge { id, len })?;
                out.push(id);
                out.extend_from_slice(&len16.to_be_bytes());
                if !s.is_empty() {
                    for u in s.encode_utf16() {
                        out.extend_from_slice(&u.to_be_bytes());
                    }
                    out.extend_from_slice(&[0, 0]);
                }
            }
            (HeaderValue::Bytes(b), 1) => {
                let len16 =
                    u16::try_from(len).map_err(|_| EncodeError::HeaderTooLarge { id, len })?;
                out.push(id);
                out.extend_from_slice(&len16.to_be_bytes());
                out.extend_from_slice(b);
            }
            (HeaderValue::U8(v), 2) => out.extend_from_slice(&[id, *v]),
            (HeaderValue::U32(v), 3) => {
                out.push(id);
                out.extend_from_slice(&v.to_be_bytes());
            }
            _ => return Err(EncodeError::WrongClass { id }),
        }
        Ok(())
    }
}

/// The non-header fields of CONNECT and of its response (§F.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectFields {
    pub version: u8,
    pub flags: u8,
    pub max_packet: u16,
}

/// One OBEX request or response packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Opcode (request) or response code, final bit included.
    pub code: u8,
    /// Present on CONNECT and on the response to CONNECT.
    pub connect: Option<ConnectFields>,
    pub headers: Vec<Header>,
}

impl Packet {
    pub fn new(code: u8, headers: Vec<Header>) -> Self {
        Self {
            code,
            connect: None,
            headers,
        }
    }

    pub fn wire_len(&self) -> usize {
        3 + if self.connect.is_some() { 4 } else { 0 }
            + self.headers.iter().map(Header::wire_len).sum::<usize>()
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let len = self.wire_len();
        let len16 = u16::try_from(len).map_err(|_| EncodeError::PacketTooLarge(len))?;
        let mut out = Vec::with_capacity(len);
        out.push(self.code);
        out.extend_from_slice(&len16.to_be_bytes());
        if let Some(c) = self.connect {
            out.push(c.version);
            out.push(c.flags);
            out.extend_from_slice(&c.max_packet.to_be_bytes());
        }
        for h in &self.headers {
            h.encode_into(&mut out)?;
        }
        Ok(out)
    }

    pub fn header(&self, id: u8) -> Option<&HeaderValue> {
        self.headers.iter().find(|h| h.id == id).map(|h| &h.value)
    }

    pub fn connection_id(&self) -> Option<u32> {
        match self.header(HI_CONNECTION_ID) {
            Some(HeaderValue::U32(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn header_bytes(&self, id: u8) -> Option<&[u8]> {
        match self.header(id) {
            Some(HeaderValue::Bytes(b)) => Some(b),
            _ => None,
        }
    }
}

/// Length of the packet at the start of `buf` from its length field, once 3 octets are there:
/// `Ok(None)` means "need more octets". Lets a transport read exactly one packet.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 3 {
        return Ok(None);
    }
    let declared = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
    if declared < 3 {
        return Err(err(1, DecodeErrorKind::LengthTooSmall { declared }));
    }
    Ok(Some(declared))
}

/// Decodes a request packet; CONNECT (0x80) carries the 4 connect octets.
pub fn decode_request(buf: &[u8]) -> Result<Packet, DecodeError> {
    let has_connect = buf.first() == Some(&OP_CONNECT);
    decode(buf, has_connect)
}

/// Decodes a response packet; `to_connect` says it answers CONNECT (then it carries the connect
/// octets, IrOBEX §3.3.1 — also on failure responses, as OpenOBEX sends them).
pub fn decode_response(buf: &[u8], to_connect: bool) -> Result<Packet, DecodeError> {
    decode(buf, to_connect)
}

fn decode(buf: &[u8], has_connect: bool) -> Result<Packet, DecodeError> {
    let declared = frame_len(buf)?.ok_or(err(
        buf.len(),
        DecodeErrorKind::Truncated {
            needed: 3,
            have: buf.len(),
        },
    ))?;
    if declared != buf.len() {
        return Err(err(
            1,
            DecodeErrorKind::LengthMismatch {
                declared,
                actual: buf.len(),
            },
        ));
    }
    let code = buf[0];
    let mut pos = 3;
    let connect = if has_connect {
        let f = buf.get(3..7).ok_or(err(
            3,
            DecodeErrorKind::Truncated {
                needed: 7,
                have: buf.len(),
            },
        ))?;
        pos = 7;
        Some(ConnectFields {
            version: f[0],
            flags: f[1],
            max_packet: u16::from_be_bytes([f[2], f[3]]),
        })
    } else {
        None
    };
    let mut headers = Vec::new();
    while pos < buf.len() {
        let (h, used) = decode_header(buf, pos)?;
        headers.push(h);
        pos += used;
    }
    Ok(Packet {
        code,
        connect,
        headers,
    })
}

fn decode_header(buf: &[u8], pos: usize) -> Result<(Header, usize), DecodeError> {
    let id = buf[pos];
    let rest = &buf[pos..];
    let truncated = |needed: usize| {
        err(
            pos,
            DecodeErrorKind::Truncated {
                needed,
                have: rest.len(),
            },
        )
    };
    match id >> 6 {
        0 | 1 => {
            if rest.len() < 3 {
                return Err(truncated(3));
            }
            let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
            if len < 3 {
                return Err(err(
                    pos + 1,
                    DecodeErrorKind::HeaderLengthTooSmall { id, len },
                ));
            }
            let v = rest
                .get(3..len)
                .ok_or(err(pos + 1, DecodeErrorKind::HeaderOverrun { id, len }))?;
            let value = if id >> 6 == 0 {
                HeaderValue::Unicode(
                    decode_unicode(v).ok_or(err(pos + 3, DecodeErrorKind::BadUnicode { id }))?,
                )
            } else {
                HeaderValue::Bytes(v.to_vec())
            };
            Ok((Header { id, value }, len))
        }
        2 => {
            let v = *rest.get(1).ok_or(truncated(2))?;
            Ok((
                Header {
                    id,
                    value: HeaderValue::U8(v),
                },
                2,
            ))
        }
        _ => {
            let v = rest.get(1..5).ok_or(truncated(5))?;
            Ok((
                Header {
                    id,
                    value: HeaderValue::U32(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
                },
                5,
            ))
        }
    }
}

/// UTF-16BE, NUL-terminated; an empty value (length 3) is the empty string (IrOBEX §2.2.2).
fn decode_unicode(v: &[u8]) -> Option<String> {
    if v.is_empty() {
        return Some(String::new());
    }
    if !v.len().is_multiple_of(2) || !v.ends_with(&[0, 0]) {
        return None;
    }
    let units: Vec<u16> = v[..v.len() - 2]
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::obex::{HI_END_OF_BODY, HI_LENGTH, OP_PUT_FINAL};
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    #[test]
    fn name_header_example_f8() {
        let mut out = Vec::new();
        Header::name("a.txt").encode_into(&mut out).unwrap();
        assert_eq!(out, hex("01 00 0F 00 61 00 2E 00 74 00 78 00 74 00 00"));
        let p = decode_request(&[&[0x02, 0x00, 0x12][..], &out].concat()).unwrap();
        assert_eq!(
            p.header(HI_NAME),
            Some(&HeaderValue::Unicode("a.txt".into()))
        );
    }

    #[test]
    fn decode_errors_name_offset() {
        assert_eq!(
            decode_request(&hex("02 00 02")).unwrap_err(),
            DecodeError {
                offset: 1,
                kind: DecodeErrorKind::LengthTooSmall { declared: 2 }
            }
        );
        // Byte-sequence header whose length runs past the end.
        let e = decode_request(&hex("02 00 06 48 00 09")).unwrap_err();
        assert_eq!(e.offset, 4);
        assert!(matches!(
            e.kind,
            DecodeErrorKind::HeaderOverrun { id: 0x48, len: 9 }
        ));
        let e = decode_response(&hex("A0 00 05 10 00"), true).unwrap_err();
        assert_eq!(e.offset, 3);
        let e = decode_request(&hex("02 00 05 01 00")).unwrap_err();
        assert!(matches!(e.kind, DecodeErrorKind::Truncated { .. }), "{e}");
        let e = decode_request(&hex("02 00 07 01 00 04 41")).unwrap_err();
        assert!(
            matches!(e.kind, DecodeErrorKind::BadUnicode { id: 1 }),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn headers_round_trip(
            name in "[a-zA-Z0-9é€. ]{0,20}",
            body in proptest::collection::vec(any::<u8>(), 0..200),
            id in any::<u32>(),
        ) {
            let p = Packet::new(OP_PUT_FINAL, vec![
                Header::u32(HI_CONNECTION_ID, id),
                Header::name(&name),
                Header::mime_type("application/vnd.syncml.dm+wbxml"),
                Header::u32(HI_LENGTH, body.len() as u32),
                Header::bytes(HI_END_OF_BODY, &body),
            ]);
            let wire = p.encode().unwrap();
            prop_assert_eq!(wire.len(), p.wire_len());
            prop_assert_eq!(decode_request(&wire).unwrap(), p);
        }
    }
}
