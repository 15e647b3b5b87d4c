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
//! Layout (mirrors `codec::sip`): this file holds the protocol constants and response-code
//! classification every part shares;
//! * [`packet`] — packet and header encoding / decoding, the error types;
//! * [`auth`] — the authentication challenge / response values and the digest;
//! * [`session`] — the client session state machine.
//!
//! No I/O, no clock: the caller moves bytes and bounds time.

pub mod auth;
pub mod packet;
pub mod session;

pub use auth::{
    AuthResponse, Challenge, auth_digest, encode_auth_response, parse_auth_response,
    parse_challenge,
};
pub use packet::{
    ConnectFields, DecodeError, DecodeErrorKind, EncodeError, Header, HeaderValue, Packet,
    decode_request, decode_response, frame_len,
};
pub use session::{Action, ClientSession, PutDone, PutRequest, SessionError};

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
