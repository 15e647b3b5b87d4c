//! OBEX packet codec and a sans-IO client session (DM OBEX binding; DESIGN §6.4,
//! protocol-facts §F).
//!
//! * [`Packet`]: `opcode/response (1) | length (2, BE, whole packet) | [CONNECT fields] | headers`
//!   (IrOBEX §3.1, protocol-facts §F.1). [`decode_request`] / [`decode_response`] never panic and
//!   report what is wrong and at which byte offset.
//! * [`Header`]: the identifier's top two bits give the encoding (§F.4): Unicode text, byte
//!   sequence (both with a 2-octet length including the 3-octet prefix), 1 octet, 4 octets.
//! * [`ClientSession`]: CONNECT (Target) → PUT … (Body / End-of-Body cut to the peer's maximum
//!   packet length) → DISCONNECT, answering an Unauthorized (0xC1) + Authenticate Challenge (0x4D)
//!   once with an Authenticate Response (0x4E) carrying MD5(nonce ":" password) (§F.5).
//!
//! No I/O, no clock: the caller moves bytes and bounds time.

use md5::{Digest, Md5};

// --- Opcodes (protocol-facts §F.2; the 0x80 bit marks the final packet of a request). ---
pub const OP_CONNECT: u8 = 0x80;
pub const OP_DISCONNECT: u8 = 0x81;
pub const OP_PUT: u8 = 0x02;
pub const OP_PUT_FINAL: u8 = 0x82;
pub const OP_ABORT: u8 = 0xFF;
/// Final bit of an opcode / response code.
pub const FINAL: u8 = 0x80;

// --- Response codes, final bit included (protocol-facts §F.3). ---
pub const RSP_CONTINUE: u8 = 0x90;
pub const RSP_SUCCESS: u8 = 0xA0;
pub const RSP_UNAUTHORIZED: u8 = 0xC1;
pub const RSP_FORBIDDEN: u8 = 0xC3;

// --- Header identifiers (protocol-facts §F.4). ---
pub const HI_NAME: u8 = 0x01;
pub const HI_TYPE: u8 = 0x42;
pub const HI_LENGTH: u8 = 0xC3;
pub const HI_TARGET: u8 = 0x46;
pub const HI_BODY: u8 = 0x48;
pub const HI_END_OF_BODY: u8 = 0x49;
pub const HI_WHO: u8 = 0x4A;
pub const HI_CONNECTION_ID: u8 = 0xCB;
pub const HI_AUTH_CHALLENGE: u8 = 0x4D;
pub const HI_AUTH_RESPONSE: u8 = 0x4E;

/// OBEX version octet of CONNECT: major 1, minor 0 in the nibbles (§F.1, as OpenOBEX sends it).
pub const OBEX_VERSION: u8 = 0x10;
/// Smallest maximum packet length a peer may announce (IrOBEX §3.3.1.4; OpenOBEX minimum 255).
pub const MIN_PACKET: u16 = 255;
/// Target header value of the SyncML DM OBEX binding: 9 ASCII octets, no terminator (§F.7).
pub const TARGET_SYNCML_DM: &[u8] = b"SYNCML-DM";

/// Name of a response code, for outcomes and logs (§F.3).
pub fn response_name(code: u8) -> &'static str {
    match code | FINAL {
        0x90 => "Continue",
        0xA0 => "Success",
        0xA1 => "Created",
        0xA2 => "Accepted",
        0xA3 => "Non-Authoritative Information",
        0xA4 => "No Content",
        0xA5 => "Reset Content",
        0xA6 => "Partial Content",
        0xB0 => "Multiple Choices",
        0xB1 => "Moved Permanently",
        0xB2 => "Moved Temporarily",
        0xB3 => "See Other",
        0xB4 => "Not Modified",
        0xB5 => "Use Proxy",
        0xC0 => "Bad Request",
        0xC1 => "Unauthorized",
        0xC2 => "Payment Required",
        0xC3 => "Forbidden",
        0xC4 => "Not Found",
        0xC5 => "Method Not Allowed",
        0xC6 => "Not Acceptable",
        0xC7 => "Proxy Authentication Required",
        0xC8 => "Request Timeout",
        0xC9 => "Conflict",
        0xCA => "Gone",
        0xCB => "Length Required",
        0xCC => "Precondition Failed",
        0xCD => "Request Entity Too Large",
        0xCE => "Request URL Too Large",
        0xCF => "Unsupported Media Type",
        0xD0 => "Internal Server Error",
        0xD1 => "Not Implemented",
        0xD2 => "Bad Gateway",
        0xD3 => "Service Unavailable",
        0xD4 => "Gateway Timeout",
        0xD5 => "HTTP Version Not Supported",
        0xE0 => "Database Full",
        0xE1 => "Database Locked",
        _ => "Unknown",
    }
}

/// A response code a later attempt may get past (overload / lock, like HTTP 503), as opposed to
/// a refusal. Everything else in the 0xC0–0xFF range is a permanent refusal.
pub fn response_is_transient(code: u8) -> bool {
    matches!(code | FINAL, 0xC8 | 0xD3 | 0xD4 | 0xE1)
}

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

fn err(offset: usize, kind: DecodeErrorKind) -> DecodeError {
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

// --- Authentication (protocol-facts §F.5) ---

/// A parsed Authenticate Challenge (0x4D) value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub nonce: [u8; 16],
    /// Tag 0x01: bit 0 = user id required, bit 1 = read-only access.
    pub options: u8,
    /// Tag 0x02: charset octet followed by the realm text.
    pub realm: Option<Vec<u8>>,
}

impl Challenge {
    pub fn user_id_required(&self) -> bool {
        self.options & 0x01 != 0
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![0x00, 16];
        v.extend_from_slice(&self.nonce);
        if self.options != 0 {
            v.extend_from_slice(&[0x01, 1, self.options]);
        }
        if let Some(r) = &self.realm {
            let n = r.len().min(255);
            v.extend_from_slice(&[0x02, n as u8]);
            v.extend_from_slice(&r[..n]);
        }
        v
    }
}

/// Parses the TLV triplets of a challenge header value. `base` is the value's offset in the
/// packet, for error positions. Unknown tags are skipped.
pub fn parse_challenge(v: &[u8], base: usize) -> Result<Challenge, DecodeError> {
    let mut nonce = None;
    let mut options = 0;
    let mut realm = None;
    for (tag, off, val) in tlvs(v, base)? {
        match tag {
            0x00 if val.len() == 16 => {
                let mut n = [0u8; 16];
                n.copy_from_slice(val);
                nonce = Some(n);
            }
            0x00 => return Err(err(off, DecodeErrorKind::MissingNonce)),
            0x01 => options = val.first().copied().unwrap_or(0),
            0x02 => realm = Some(val.to_vec()),
            _ => {}
        }
    }
    let nonce = nonce.ok_or(err(base, DecodeErrorKind::MissingNonce))?;
    Ok(Challenge {
        nonce,
        options,
        realm,
    })
}

/// A parsed Authenticate Response (0x4E) value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthResponse {
    pub digest: [u8; 16],
    pub user_id: Option<Vec<u8>>,
    pub nonce: Option<[u8; 16]>,
}

pub fn parse_auth_response(v: &[u8], base: usize) -> Result<AuthResponse, DecodeError> {
    let mut digest = None;
    let mut user_id = None;
    let mut nonce = None;
    for (tag, off, val) in tlvs(v, base)? {
        let as16 = |val: &[u8]| -> Result<[u8; 16], DecodeError> {
            <[u8; 16]>::try_from(val).map_err(|_| err(off, DecodeErrorKind::MissingNonce))
        };
        match tag {
            0x00 => digest = Some(as16(val)?),
            0x01 => user_id = Some(val.to_vec()),
            0x02 => nonce = Some(as16(val)?),
            _ => {}
        }
    }
    Ok(AuthResponse {
        digest: digest.ok_or(err(base, DecodeErrorKind::MissingNonce))?,
        user_id,
        nonce,
    })
}

/// One TLV triplet: tag, its offset in the packet, value.
type Tlv<'a> = (u8, usize, &'a [u8]);

fn tlvs(v: &[u8], base: usize) -> Result<Vec<Tlv<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let tag = v[i];
        let len = usize::from(
            *v.get(i + 1)
                .ok_or(err(base + i, DecodeErrorKind::TlvOverrun { tag }))?,
        );
        let val = v
            .get(i + 2..i + 2 + len)
            .ok_or(err(base + i, DecodeErrorKind::TlvOverrun { tag }))?;
        out.push((tag, base + i, val));
        i += 2 + len;
    }
    Ok(out)
}

/// Request-digest = MD5(nonce ":" password) (IrOBEX §3.5.2.2, protocol-facts §F.5: the colon
/// form; AOSP's verifier omits the colon, a bug we do not copy).
pub fn auth_digest(nonce: &[u8; 16], password: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(nonce);
    h.update(b":");
    h.update(password);
    h.finalize().into()
}

/// Authenticate Response value: digest (tag 0), optional user id (tag 1), the nonce answered
/// (tag 2).
pub fn encode_auth_response(
    digest: &[u8; 16],
    user_id: Option<&[u8]>,
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut v = vec![0x00, 16];
    v.extend_from_slice(digest);
    if let Some(u) = user_id {
        let n = u.len().min(255);
        v.extend_from_slice(&[0x01, n as u8]);
        v.extend_from_slice(&u[..n]);
    }
    v.extend_from_slice(&[0x02, 16]);
    v.extend_from_slice(nonce);
    v
}

// --- Client session (sans-IO) ---

/// What to push and how to connect.
#[derive(Clone)]
pub struct PutRequest {
    /// Target header of CONNECT (`SYNCML-DM` for DM); empty → no Target header.
    pub target: Vec<u8>,
    /// Name header; `None` → no Name header.
    pub name: Option<String>,
    /// MIME type for the Type header.
    pub mime_type: String,
    pub body: Vec<u8>,
    /// The maximum packet length we can receive (announced in CONNECT).
    pub max_rx: u16,
    /// Password for OBEX authentication, if the relay may challenge.
    pub password: Option<Vec<u8>>,
    /// User id sent when a challenge asks for one.
    pub user_id: Option<Vec<u8>>,
}

impl std::fmt::Debug for PutRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutRequest")
            .field("target", &String::from_utf8_lossy(&self.target))
            .field("name", &self.name)
            .field("mime_type", &self.mime_type)
            .field("body_len", &self.body.len())
            .field("max_rx", &self.max_rx)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a session failed. [`SessionError::is_transient`] classifies it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("{op} refused: 0x{code:02X} {}", response_name(*code))]
    Refused { op: &'static str, code: u8 },
    #[error("{op} refused: 0x{code:02X} Unauthorized and no password is configured for this device", code = RSP_UNAUTHORIZED)]
    AuthRequired { op: &'static str },
    #[error("{op} refused: 0x{code:02X} Unauthorized after our authentication response (wrong password?)", code = RSP_UNAUTHORIZED)]
    AuthFailed { op: &'static str },
    #[error("malformed response to {op}: {source}")]
    Malformed {
        op: &'static str,
        source: DecodeError,
    },
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("cannot encode request: {0}")]
    Encode(#[from] EncodeError),
}

impl SessionError {
    /// Overload-type refusals are worth retrying; everything else about this push on this relay
    /// will fail the same way again.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if response_is_transient(*code))
    }
}

/// Result of a completed session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutDone {
    /// The final response code of the PUT.
    pub code: u8,
    pub connection_id: Option<u32>,
    /// Maximum packet length the relay announced.
    pub peer_max: u16,
    pub put_packets: usize,
    /// An authentication exchange took place.
    pub authenticated: bool,
}

/// The next thing for the transport to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this packet, then read one response packet and pass it to [`ClientSession::on_response`].
    Send(Vec<u8>),
    /// The PUT succeeded and DISCONNECT was answered (or the caller may stop reading).
    Done(PutDone),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Connecting,
    Putting,
    Disconnecting,
    Finished,
}

/// CONNECT → PUT… → DISCONNECT as a state machine over packets.
pub struct ClientSession {
    req: PutRequest,
    state: State,
    peer_max: u16,
    conn_id: Option<u32>,
    /// Octets of the body already sent in the current PUT.
    sent: usize,
    /// Packets of the current PUT sent so far.
    put_packets: usize,
    /// Authenticate Response to put into the next CONNECT / first PUT packet.
    auth: Option<Vec<u8>>,
    auth_tried: bool,
    final_code: u8,
}

impl ClientSession {
    pub fn new(req: PutRequest) -> Self {
        Self {
            req,
            state: State::Idle,
            peer_max: MIN_PACKET,
            conn_id: None,
            sent: 0,
            put_packets: 0,
            auth: None,
            auth_tried: false,
            final_code: 0,
        }
    }

    /// The first packet: CONNECT.
    pub fn start(&mut self) -> Result<Vec<u8>, SessionError> {
        self.state = State::Connecting;
        self.connect_packet()
    }

    fn connect_packet(&mut self) -> Result<Vec<u8>, SessionError> {
        let mut headers = Vec::new();
        if !self.req.target.is_empty() {
            headers.push(Header::bytes(HI_TARGET, &self.req.target));
        }
        if let Some(a) = self.auth.take() {
            headers.push(Header::bytes(HI_AUTH_RESPONSE, &a));
        }
        let p = Packet {
            code: OP_CONNECT,
            connect: Some(ConnectFields {
                version: OBEX_VERSION,
                flags: 0,
                max_packet: self.req.max_rx.max(MIN_PACKET),
            }),
            headers,
        };
        Ok(p.encode()?)
    }

    /// Next PUT packet: the first one carries Connection-Id, Name, Type, Length (and an
    /// Authenticate Response when answering a challenge); every one carries the Connection-Id
    /// first (IrOBEX §2.2.11) and as much body as fits in the relay's maximum packet length.
    fn put_packet(&mut self) -> Result<Vec<u8>, SessionError> {
        let mut headers = Vec::new();
        if let Some(id) = self.conn_id {
            headers.push(Header::u32(HI_CONNECTION_ID, id));
        }
        if self.sent == 0 && self.put_packets == 0 {
            if let Some(a) = self.auth.take() {
                headers.push(Header::bytes(HI_AUTH_RESPONSE, &a));
            }
            if let Some(n) = &self.req.name {
                headers.push(Header::name(n));
            }
            headers.push(Header::mime_type(&self.req.mime_type));
            let len = u32::try_from(self.req.body.len()).map_err(|_| {
                SessionError::Protocol(format!(
                    "object of {} octets exceeds the 32-bit Length header",
                    self.req.body.len()
                ))
            })?;
            headers.push(Header::u32(HI_LENGTH, len));
        }
        let used = 3 + headers.iter().map(Header::wire_len).sum::<usize>();
        let max = usize::from(self.peer_max);
        if used > max {
            return Err(SessionError::Protocol(format!(
                "PUT headers need {used} octets but the relay accepts packets of at most {max}"
            )));
        }
        let room = max - used;
        let remaining = self.req.body.len() - self.sent;
        let code = if room >= 3 + remaining {
            headers.push(Header::bytes(HI_END_OF_BODY, &self.req.body[self.sent..]));
            self.sent = self.req.body.len();
            OP_PUT_FINAL
        } else {
            // Non-final packet: a Body header with whatever fits (possibly none when the
            // first packet's headers filled it).
            if room > 3 {
                let n = room - 3;
                headers.push(Header::bytes(
                    HI_BODY,
                    &self.req.body[self.sent..self.sent + n],
                ));
                self.sent += n;
            }
            OP_PUT
        };
        self.put_packets += 1;
        Ok(Packet::new(code, headers).encode()?)
    }

    fn disconnect_packet(&self) -> Result<Vec<u8>, SessionError> {
        let headers = self
            .conn_id
            .map(|id| vec![Header::u32(HI_CONNECTION_ID, id)])
            .unwrap_or_default();
        Ok(Packet::new(OP_DISCONNECT, headers).encode()?)
    }

    /// Handles a challenge in `p` (an 0xC1 answer to `op`): prepares the Authenticate Response
    /// once; a second 0xC1 means the relay rejected it.
    fn answer_challenge(&mut self, p: &Packet, op: &'static str) -> Result<(), SessionError> {
        if self.auth_tried {
            return Err(SessionError::AuthFailed { op });
        }
        let Some(password) = self.req.password.as_deref() else {
            return Err(SessionError::AuthRequired { op });
        };
        let v = p
            .header_bytes(HI_AUTH_CHALLENGE)
            .ok_or(SessionError::Refused {
                op,
                code: RSP_UNAUTHORIZED,
            })?;
        let c = parse_challenge(v, 0).map_err(|source| SessionError::Malformed { op, source })?;
        let digest = auth_digest(&c.nonce, password);
        let user = if c.user_id_required() {
            self.req.user_id.as_deref()
        } else {
            None
        };
        self.auth = Some(encode_auth_response(&digest, user, &c.nonce));
        self.auth_tried = true;
        Ok(())
    }

    /// Feeds one complete response packet; returns the next action.
    pub fn on_response(&mut self, buf: &[u8]) -> Result<Action, SessionError> {
        match self.state {
            State::Idle | State::Finished => Err(SessionError::Protocol(
                "response received while no request is outstanding".into(),
            )),
            State::Connecting => {
                let op = "CONNECT";
                // Failure responses may come without the connect octets; success must have them.
                let p = decode_response(buf, true)
                    .or_else(|e| match buf.first() {
                        Some(&RSP_SUCCESS) | None => Err(e),
                        Some(_) => decode_response(buf, false).map_err(|_| e),
                    })
                    .map_err(|source| SessionError::Malformed { op, source })?;
                match p.code {
                    RSP_SUCCESS => {
                        let c = p.connect.ok_or_else(|| {
                            SessionError::Protocol(
                                "CONNECT response without version/flags/max packet".into(),
                            )
                        })?;
                        if c.max_packet < MIN_PACKET {
                            return Err(SessionError::Protocol(format!(
                                "relay announced a maximum packet length of {} (minimum {MIN_PACKET})",
                                c.max_packet
                            )));
                        }
                        self.peer_max = c.max_packet;
                        self.conn_id = p.connection_id();
                        self.state = State::Putting;
                        Ok(Action::Send(self.put_packet()?))
                    }
                    RSP_UNAUTHORIZED => {
                        self.answer_challenge(&p, op)?;
                        Ok(Action::Send(self.connect_packet()?))
                    }
                    code => Err(SessionError::Refused { op, code }),
                }
            }
            State::Putting => {
                let op = "PUT";
                let p = decode_response(buf, false)
                    .map_err(|source| SessionError::Malformed { op, source })?;
                let finished = self.sent == self.req.body.len();
                match p.code {
                    RSP_CONTINUE if !finished => Ok(Action::Send(self.put_packet()?)),
                    RSP_CONTINUE => Err(SessionError::Protocol(
                        "relay answered the final PUT packet with Continue".into(),
                    )),
                    0xA0..=0xA6 if finished => {
                        self.final_code = p.code;
                        self.state = State::Disconnecting;
                        Ok(Action::Send(self.disconnect_packet()?))
                    }
                    0xA0..=0xA6 => Err(SessionError::Protocol(format!(
                        "relay answered a non-final PUT packet with 0x{:02X} {}",
                        p.code,
                        response_name(p.code)
                    ))),
                    RSP_UNAUTHORIZED => {
                        // Resend the whole PUT with our answer (standard IrOBEX flow, §F.5).
                        self.answer_challenge(&p, op)?;
                        self.sent = 0;
                        self.put_packets = 0;
                        Ok(Action::Send(self.put_packet()?))
                    }
                    code => Err(SessionError::Refused { op, code }),
                }
            }
            State::Disconnecting => {
                // The object is delivered; the DISCONNECT answer only closes the session.
                self.state = State::Finished;
                Ok(Action::Done(self.done()))
            }
        }
    }

    /// The result, once the final PUT succeeded (also usable when DISCONNECT got no answer).
    pub fn done(&self) -> PutDone {
        PutDone {
            code: self.final_code,
            connection_id: self.conn_id,
            peer_max: self.peer_max,
            put_packets: self.put_packets,
            authenticated: self.auth_tried,
        }
    }

    /// The PUT has been answered with success (only DISCONNECT remains).
    pub fn put_succeeded(&self) -> bool {
        matches!(self.state, State::Disconnecting | State::Finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// protocol-facts §F.8: the pkg#0 of §D.8 (39 octets, content irrelevant to OBEX framing).
    fn req(body: Vec<u8>) -> PutRequest {
        PutRequest {
            target: TARGET_SYNCML_DM.to_vec(),
            name: None,
            mime_type: "application/vnd.syncml.notification".into(),
            body,
            max_rx: 1024,
            password: None,
            user_id: None,
        }
    }

    #[test]
    fn worked_example_f8() {
        let body: Vec<u8> = (0..39u8).collect();
        let mut s = ClientSession::new(req(body.clone()));
        assert_eq!(
            s.start().unwrap(),
            hex("80 00 13 10 00 04 00 46 00 0C 53 59 4E 43 4D 4C 2D 44 4D")
        );
        let resp = hex("A0 00 18 10 00 04 00 CB 00 00 00 01 4A 00 0C 53 59 4E 43 4D 4C 2D 44 4D");
        let Action::Send(put) = s.on_response(&resp).unwrap() else {
            panic!("expected PUT")
        };
        let mut want = hex("82 00 5E CB 00 00 00 01 42 00 27");
        want.extend_from_slice(b"application/vnd.syncml.notification\0");
        want.extend_from_slice(&hex("C3 00 00 00 27 49 00 2A"));
        want.extend_from_slice(&body);
        assert_eq!(put, want);
        let Action::Send(disc) = s.on_response(&hex("A0 00 03")).unwrap() else {
            panic!("expected DISCONNECT")
        };
        assert_eq!(disc, hex("81 00 08 CB 00 00 00 01"));
        let Action::Done(d) = s.on_response(&hex("A0 00 03")).unwrap() else {
            panic!("expected done")
        };
        assert_eq!(d.connection_id, Some(1));
        assert_eq!(d.put_packets, 1);
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
    fn multi_packet_put_respects_peer_max_and_reassembles() {
        let body: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let mut s = ClientSession::new(req(body.clone()));
        s.start().unwrap();
        // OpenOBEX obex_test's answer (peers/README §5): max 1024, no Connection-Id.
        let mut a = s.on_response(&hex("a0000710000400")).unwrap();
        let mut got = Vec::new();
        let mut n = 0;
        loop {
            let Action::Send(pkt) = a else { panic!() };
            assert!(pkt.len() <= 1024, "packet of {} octets", pkt.len());
            let p = decode_request(&pkt).unwrap();
            n += 1;
            for h in &p.headers {
                if h.id == HI_BODY || h.id == HI_END_OF_BODY {
                    let HeaderValue::Bytes(b) = &h.value else {
                        panic!()
                    };
                    got.extend_from_slice(b);
                }
            }
            if p.code == OP_PUT_FINAL {
                assert_eq!(p.header(HI_LENGTH), None);
                break;
            }
            assert_eq!(p.code, OP_PUT);
            a = s.on_response(&hex("900003")).unwrap();
        }
        assert_eq!(got, body);
        assert_eq!(n, 3);
        assert!(
            matches!(s.on_response(&hex("a00003")).unwrap(), Action::Send(d) if d == hex("810003"))
        );
    }

    /// MD5(nonce ":" password) for nonce 00..0F, password "secret", computed independently with
    /// `python3 -c 'import hashlib;print(hashlib.md5(bytes(range(16))+b":secret").hexdigest())'`.
    #[test]
    fn auth_digest_vector() {
        let nonce: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(
            hex::encode(auth_digest(&nonce, b"secret")),
            "f75600cdbd52064bea92eca36d553b00"
        );
    }

    #[test]
    fn connect_challenge_answered_once() {
        let mut r = req(b"x".to_vec());
        r.password = Some(b"secret".to_vec());
        let mut s = ClientSession::new(r);
        s.start().unwrap();
        let nonce: [u8; 16] = [9; 16];
        let ch = Challenge {
            nonce,
            options: 0,
            realm: None,
        }
        .encode();
        let mut unauth = Packet {
            code: RSP_UNAUTHORIZED,
            connect: Some(ConnectFields {
                version: 0x10,
                flags: 0,
                max_packet: 1024,
            }),
            headers: vec![Header::bytes(HI_AUTH_CHALLENGE, &ch)],
        };
        let Action::Send(c2) = s.on_response(&unauth.encode().unwrap()).unwrap() else {
            panic!()
        };
        let p = decode_request(&c2).unwrap();
        let r = parse_auth_response(p.header_bytes(HI_AUTH_RESPONSE).unwrap(), 0).unwrap();
        assert_eq!(r.digest, auth_digest(&nonce, b"secret"));
        assert_eq!(r.nonce, Some(nonce));
        // A second 0xC1: the relay rejected the answer.
        unauth.headers.clear();
        assert_eq!(
            s.on_response(&unauth.encode().unwrap()),
            Err(SessionError::AuthFailed { op: "CONNECT" })
        );
    }

    #[test]
    fn put_challenge_restarts_the_put_with_the_response() {
        let mut r = req(vec![3; 600]);
        r.password = Some(b"pw".to_vec());
        let mut s = ClientSession::new(r);
        s.start().unwrap();
        let ok = Packet {
            code: RSP_SUCCESS,
            connect: Some(ConnectFields {
                version: 0x10,
                flags: 0,
                max_packet: 255,
            }),
            headers: vec![Header::u32(HI_CONNECTION_ID, 5)],
        };
        let Action::Send(first) = s.on_response(&ok.encode().unwrap()).unwrap() else {
            panic!()
        };
        let nonce = [0xAB; 16];
        let ch = Challenge {
            nonce,
            options: 0,
            realm: None,
        };
        let unauth = Packet::new(
            RSP_UNAUTHORIZED,
            vec![Header::bytes(HI_AUTH_CHALLENGE, &ch.encode())],
        );
        let Action::Send(again) = s.on_response(&unauth.encode().unwrap()).unwrap() else {
            panic!()
        };
        let p = decode_request(&again).unwrap();
        assert_eq!(p.code, OP_PUT);
        assert_eq!(p.headers[0], Header::u32(HI_CONNECTION_ID, 5));
        let a = parse_auth_response(p.header_bytes(HI_AUTH_RESPONSE).unwrap(), 0).unwrap();
        assert_eq!(a.digest, auth_digest(&nonce, b"pw"));
        // Same headers as the first attempt, plus the response; the body starts over.
        let first = decode_request(&first).unwrap();
        assert_eq!(p.header(HI_LENGTH), first.header(HI_LENGTH));
        assert_eq!(p.header(HI_TYPE), first.header(HI_TYPE));
    }

    #[test]
    fn challenge_without_password_is_auth_required() {
        let mut s = ClientSession::new(req(b"x".to_vec()));
        s.start().unwrap();
        let ch = Challenge {
            nonce: [1; 16],
            options: 1,
            realm: Some(b"\0relay".to_vec()),
        };
        let p = Packet::new(
            RSP_UNAUTHORIZED,
            vec![Header::bytes(HI_AUTH_CHALLENGE, &ch.encode())],
        );
        let e = s.on_response(&p.encode().unwrap()).unwrap_err();
        assert_eq!(e, SessionError::AuthRequired { op: "CONNECT" });
        assert!(!e.is_transient());
    }

    #[test]
    fn refusal_names_the_code() {
        let mut s = ClientSession::new(req(b"x".to_vec()));
        s.start().unwrap();
        s.on_response(&hex("a0000710000400")).unwrap();
        let e = s.on_response(&hex("c30003")).unwrap_err();
        assert_eq!(e.to_string(), "PUT refused: 0xC3 Forbidden");
        assert!(!e.is_transient());
        let mut s = ClientSession::new(req(b"x".to_vec()));
        s.start().unwrap();
        let e = s.on_response(&hex("d3000710000400")).unwrap_err();
        assert!(e.is_transient(), "{e}");
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
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = frame_len(&data);
            let _ = decode_request(&data);
            let _ = decode_response(&data, true);
            let _ = decode_response(&data, false);
            let _ = parse_challenge(&data, 0);
            let _ = parse_auth_response(&data, 0);
            // Whatever decodes re-encodes to a packet that decodes the same (fuzz target too).
            for (p, conn) in [
                (decode_request(&data), data.first() == Some(&OP_CONNECT)),
                (decode_response(&data, true), true),
                (decode_response(&data, false), false),
            ] {
                if let Ok(p) = p
                    && let Ok(wire) = p.encode()
                {
                    prop_assert_eq!(decode_response(&wire, conn), Ok(p));
                }
            }
            let mut s = ClientSession::new(req(vec![1; 100]));
            let _ = s.start();
            let _ = s.on_response(&data);
            let _ = s.on_response(&data);
        }

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

        #[test]
        fn put_fragments_reassemble(
            len in 0usize..5000,
            peer_max in 255u16..2000,
        ) {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut r = req(body.clone());
            r.name = Some("dm.wbxml".into());
            let mut s = ClientSession::new(r);
            s.start().unwrap();
            let resp = Packet { code: RSP_SUCCESS, connect: Some(ConnectFields { version: 0x10, flags: 0, max_packet: peer_max }),
                headers: vec![Header::u32(HI_CONNECTION_ID, 7)] };
            let mut a = s.on_response(&resp.encode().unwrap()).unwrap();
            let mut got = Vec::new();
            loop {
                let Action::Send(pkt) = a else { panic!() };
                prop_assert!(pkt.len() <= usize::from(peer_max));
                let p = decode_request(&pkt).unwrap();
                prop_assert_eq!(p.connection_id(), Some(7));
                for h in &p.headers {
                    if let (HI_BODY | HI_END_OF_BODY, HeaderValue::Bytes(b)) = (h.id, &h.value) {
                        got.extend_from_slice(b);
                    }
                }
                if p.code == OP_PUT_FINAL { break; }
                a = s.on_response(&[RSP_CONTINUE, 0, 3]).unwrap();
            }
            prop_assert_eq!(got, body);
        }
    }
}
