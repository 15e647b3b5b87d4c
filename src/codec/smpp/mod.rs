//! SMPP 3.4 PDU codec (SMPP v3.4 §3 PDU format, §4 PDU definitions, §5.3 TLVs) for the ESME side
//! of the WAP binding. Sans-IO: [`frame_len`] tells the transport how many octets a PDU needs,
//! [`Pdu::decode`] / [`Pdu::encode`] convert. Facts: protocol-facts §C.
//!
//! The decoder never panics on peer bytes; every error names what is wrong and the offset.
//!
//! [`esme`] is the ESME session state machine (bind, window, enquire_link, throttling, unbind)
//! built on this codec, sans-IO as well.

pub mod esme;

use thiserror::Error;

/// Command ids (SMPP 3.4 §5.1.2.1; protocol-facts §C.2).
pub mod cmd {
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const BIND_RECEIVER: u32 = 0x0000_0001;
    pub const BIND_TRANSMITTER: u32 = 0x0000_0002;
    pub const SUBMIT_SM: u32 = 0x0000_0004;
    pub const DELIVER_SM: u32 = 0x0000_0005;
    pub const UNBIND: u32 = 0x0000_0006;
    pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
    pub const ENQUIRE_LINK: u32 = 0x0000_0015;
    pub const RESP: u32 = 0x8000_0000;
}

/// Command status codes (SMPP 3.4 §5.1.3; protocol-facts §C.7).
pub mod status {
    pub const ROK: u32 = 0x00;
    pub const RINVCMDLEN: u32 = 0x02;
    pub const RINVCMDID: u32 = 0x03;
    pub const RSYSERR: u32 = 0x08;
    pub const RMSGQFUL: u32 = 0x14;
    pub const RTHROTTLED: u32 = 0x58;
    pub const RX_T_APPN: u32 = 0x64;
}

/// TLV tags (SMPP 3.4 §5.3.2; protocol-facts §C.4).
pub mod tag {
    pub const RECEIPTED_MESSAGE_ID: u16 = 0x001E;
    pub const SOURCE_PORT: u16 = 0x020A;
    pub const DESTINATION_PORT: u16 = 0x020B;
    pub const SAR_MSG_REF_NUM: u16 = 0x020C;
    pub const SAR_TOTAL_SEGMENTS: u16 = 0x020E;
    pub const SAR_SEGMENT_SEQNUM: u16 = 0x020F;
    pub const MESSAGE_PAYLOAD: u16 = 0x0424;
    pub const MESSAGE_STATE: u16 = 0x0427;
}

/// Largest PDU accepted from a peer (Kannel `MAX_SMPP_PDU_LEN`, protocol-facts §C.1).
pub const MAX_PDU_LEN: usize = 7424;
/// Interface version 3.4 (SMPP 3.4 §5.2.4).
pub const INTERFACE_VERSION: u8 = 0x34;
/// esm_class UDHI bit (SMPP 3.4 §5.2.12).
pub const ESM_UDHI: u8 = 0x40;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SmppError {
    #[error("command_length {len} at offset 0 is outside 16..={max}")]
    BadLength { len: u32, max: usize },
    #[error("PDU truncated at offset {offset}: expected {what}")]
    Truncated { offset: usize, what: &'static str },
    #[error("C-Octet string {what} at offset {offset} has no NUL within {max} octets")]
    BadCString {
        offset: usize,
        what: &'static str,
        max: usize,
    },
    #[error("TLV 0x{tag:04X} at offset {offset} overruns the PDU")]
    TlvOverrun { offset: usize, tag: u16 },
    #[error("cannot encode: {0}")]
    Encode(&'static str),
}

/// The fixed 16-octet header (SMPP 3.4 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub command_id: u32,
    pub status: u32,
    pub sequence: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    pub tag: u16,
    pub value: Vec<u8>,
}

/// bind_* body (SMPP 3.4 §4.1; protocol-facts §C.5). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Bind {
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    pub interface_version: u8,
    pub addr_ton: u8,
    pub addr_npi: u8,
    pub address_range: String,
}

impl std::fmt::Debug for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bind")
            .field("system_id", &self.system_id)
            .field("password", &"<redacted>")
            .field("system_type", &self.system_type)
            .finish_non_exhaustive()
    }
}

/// submit_sm / deliver_sm body (SMPP 3.4 §4.4.1 / §4.6.1; same mandatory fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sm {
    pub service_type: String,
    pub source_ton: u8,
    pub source_npi: u8,
    pub source_addr: String,
    pub dest_ton: u8,
    pub dest_npi: u8,
    pub dest_addr: String,
    pub esm_class: u8,
    pub protocol_id: u8,
    pub priority: u8,
    pub schedule_delivery_time: String,
    pub validity_period: String,
    pub registered_delivery: u8,
    pub replace_if_present: u8,
    pub data_coding: u8,
    pub sm_default_msg_id: u8,
    pub short_message: Vec<u8>,
    pub tlvs: Vec<Tlv>,
}

impl Sm {
    pub fn tlv(&self, tag: u16) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|t| t.tag == tag)
            .map(|t| t.value.as_slice())
    }
}

/// Decoded PDU body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Bind(Bind),
    /// bind_*_resp, submit_sm_resp, deliver_sm_resp: a C-Octet id (may be absent on error).
    IdResp(String),
    Sm(Sm),
    /// enquire_link, unbind, their responses, generic_nack.
    Empty,
    /// Anything else; the raw body.
    Other(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub header: Header,
    pub body: Body,
}

/// How many octets the PDU at the start of `buf` occupies, once the 4-octet length is known.
/// `Ok(None)` = need more data; `Err` = the length field is impossible (reset the session).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, SmppError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if !(16..=MAX_PDU_LEN as u32).contains(&len) {
        return Err(SmppError::BadLength {
            len,
            max: MAX_PDU_LEN,
        });
    }
    Ok(Some(len as usize))
}

fn put_cstr(out: &mut Vec<u8>, s: &str, max: usize) -> Result<(), SmppError> {
    if s.len() + 1 > max || s.as_bytes().contains(&0) {
        return Err(SmppError::Encode("C-Octet string too long or contains NUL"));
    }
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self, what: &'static str) -> Result<u8, SmppError> {
        let b = *self.buf.get(self.pos).ok_or(SmppError::Truncated {
            offset: self.pos,
            what,
        })?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, SmppError> {
        Ok(u16::from(self.u8(what)?) << 8 | u16::from(self.u8(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, SmppError> {
        Ok(u32::from(self.u16(what)?) << 16 | u32::from(self.u16(what)?))
    }
    fn cstr(&mut self, what: &'static str, max: usize) -> Result<String, SmppError> {
        let start = self.pos;
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .take(max)
            .position(|b| *b == 0)
            .ok_or(SmppError::BadCString {
                offset: start,
                what,
                max,
            })?;
        // Latin-1 is a lossless view of arbitrary octets.
        let s = rest[..nul].iter().map(|b| char::from(*b)).collect();
        self.pos += nul + 1;
        Ok(s)
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&[u8], SmppError> {
        if self.buf.len() - self.pos < n {
            return Err(SmppError::Truncated {
                offset: self.pos,
                what,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| c as u32 as u8).collect()
}

impl Pdu {
    pub fn new(command_id: u32, sequence: u32, body: Body) -> Self {
        Self {
            header: Header {
                command_id,
                status: 0,
                sequence,
            },
            body,
        }
    }

    /// A response to `req` with the given status and body.
    pub fn response(req: &Header, status: u32, body: Body) -> Self {
        Self {
            header: Header {
                command_id: req.command_id | cmd::RESP,
                status,
                sequence: req.sequence,
            },
            body,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, SmppError> {
        let mut out = vec![0u8; 4];
        out.extend_from_slice(&self.header.command_id.to_be_bytes());
        out.extend_from_slice(&self.header.status.to_be_bytes());
        out.extend_from_slice(&self.header.sequence.to_be_bytes());
        match &self.body {
            Body::Bind(b) => {
                // Field sizes: SMPP 3.4 §4.1.1 (system_id 16, password 9, system_type 13, range 41).
                put_cstr(&mut out, &b.system_id, 16)?;
                put_cstr(&mut out, &b.password, 9)?;
                put_cstr(&mut out, &b.system_type, 13)?;
                out.extend_from_slice(&[b.interface_version, b.addr_ton, b.addr_npi]);
                put_cstr(&mut out, &b.address_range, 41)?;
            }
            Body::IdResp(id) => put_cstr(&mut out, id, 66)?,
            Body::Sm(s) => {
                // SMPP 3.4 §4.4.1 field order and maximum sizes.
                put_cstr(&mut out, &s.service_type, 6)?;
                out.extend_from_slice(&[s.source_ton, s.source_npi]);
                put_cstr(&mut out, &s.source_addr, 21)?;
                out.extend_from_slice(&[s.dest_ton, s.dest_npi]);
                put_cstr(&mut out, &s.dest_addr, 21)?;
                out.extend_from_slice(&[s.esm_class, s.protocol_id, s.priority]);
                put_cstr(&mut out, &s.schedule_delivery_time, 17)?;
                put_cstr(&mut out, &s.validity_period, 17)?;
                out.extend_from_slice(&[
                    s.registered_delivery,
                    s.replace_if_present,
                    s.data_coding,
                    s.sm_default_msg_id,
                ]);
                // short_message is at most 254 octets (protocol-facts §C.3).
                if s.short_message.len() > 254 {
                    return Err(SmppError::Encode("short_message longer than 254 octets"));
                }
                out.push(s.short_message.len() as u8);
                out.extend_from_slice(&s.short_message);
                for t in &s.tlvs {
                    let l = u16::try_from(t.value.len())
                        .map_err(|_| SmppError::Encode("TLV value too long"))?;
                    out.extend_from_slice(&t.tag.to_be_bytes());
                    out.extend_from_slice(&l.to_be_bytes());
                    out.extend_from_slice(&t.value);
                }
            }
            Body::Empty => {}
            Body::Other(raw) => out.extend_from_slice(raw),
        }
        let len = u32::try_from(out.len()).map_err(|_| SmppError::Encode("PDU too long"))?;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }

    /// Decodes one complete PDU (`buf.len()` must equal its command_length).
    pub fn decode(buf: &[u8]) -> Result<Self, SmppError> {
        let len = frame_len(buf)?.ok_or(SmppError::Truncated {
            offset: buf.len(),
            what: "command_length",
        })?;
        if buf.len() < len {
            return Err(SmppError::Truncated {
                offset: buf.len(),
                what: "PDU body",
            });
        }
        let mut r = Reader {
            buf: &buf[..len],
            pos: 4,
        };
        let header = Header {
            command_id: r.u32("command_id")?,
            status: r.u32("command_status")?,
            sequence: r.u32("sequence_number")?,
        };
        let body = match header.command_id {
            cmd::BIND_RECEIVER | cmd::BIND_TRANSMITTER | cmd::BIND_TRANSCEIVER => {
                Body::Bind(Bind {
                    system_id: r.cstr("system_id", 16)?,
                    password: r.cstr("password", 9)?,
                    system_type: r.cstr("system_type", 13)?,
                    interface_version: r.u8("interface_version")?,
                    addr_ton: r.u8("addr_ton")?,
                    addr_npi: r.u8("addr_npi")?,
                    address_range: r.cstr("address_range", 41)?,
                })
            }
            c if c == cmd::BIND_RECEIVER | cmd::RESP
                || c == cmd::BIND_TRANSMITTER | cmd::RESP
                || c == cmd::BIND_TRANSCEIVER | cmd::RESP
                || c == cmd::SUBMIT_SM | cmd::RESP
                || c == cmd::DELIVER_SM | cmd::RESP =>
            {
                // The body is omitted when command_status ≠ 0 (SMPP 3.4 §4.4.2).
                if r.pos == len {
                    Body::IdResp(String::new())
                } else {
                    Body::IdResp(r.cstr("message_id", 66)?)
                }
            }
            cmd::SUBMIT_SM | cmd::DELIVER_SM => {
                let mut s = Sm {
                    service_type: r.cstr("service_type", 6)?,
                    source_ton: r.u8("source_addr_ton")?,
                    source_npi: r.u8("source_addr_npi")?,
                    source_addr: r.cstr("source_addr", 21)?,
                    dest_ton: r.u8("dest_addr_ton")?,
                    dest_npi: r.u8("dest_addr_npi")?,
                    dest_addr: r.cstr("destination_addr", 21)?,
                    esm_class: r.u8("esm_class")?,
                    protocol_id: r.u8("protocol_id")?,
                    priority: r.u8("priority_flag")?,
                    schedule_delivery_time: r.cstr("schedule_delivery_time", 17)?,
                    validity_period: r.cstr("validity_period", 17)?,
                    registered_delivery: r.u8("registered_delivery")?,
                    replace_if_present: r.u8("replace_if_present_flag")?,
                    data_coding: r.u8("data_coding")?,
                    sm_default_msg_id: r.u8("sm_default_msg_id")?,
                    ..Default::default()
                };
                let n = r.u8("sm_length")? as usize;
                s.short_message = r.bytes(n, "short_message")?.to_vec();
                while r.pos < len {
                    let off = r.pos;
                    let tag = r.u16("TLV tag")?;
                    let l = r.u16("TLV length")? as usize;
                    let value = r
                        .bytes(l, "TLV value")
                        .map_err(|_| SmppError::TlvOverrun { offset: off, tag })?
                        .to_vec();
                    s.tlvs.push(Tlv { tag, value });
                }
                Body::Sm(s)
            }
            cmd::ENQUIRE_LINK | cmd::UNBIND | cmd::GENERIC_NACK => Body::Empty,
            c if c == cmd::ENQUIRE_LINK | cmd::RESP || c == cmd::UNBIND | cmd::RESP => Body::Empty,
            _ => Body::Other(buf[16..len].to_vec()),
        };
        Ok(Self { header, body })
    }
}

/// SMPP 3.4 §5.1.3 status name, for reasons and metrics.
pub fn status_name(code: u32) -> &'static str {
    match code {
        0x00 => "ESME_ROK",
        0x01 => "ESME_RINVMSGLEN",
        0x02 => "ESME_RINVCMDLEN",
        0x03 => "ESME_RINVCMDID",
        0x04 => "ESME_RINVBNDSTS",
        0x05 => "ESME_RALYBND",
        0x06 => "ESME_RINVPRTFLG",
        0x07 => "ESME_RINVREGDLVFLG",
        0x08 => "ESME_RSYSERR",
        0x0A => "ESME_RINVSRCADR",
        0x0B => "ESME_RINVDSTADR",
        0x0C => "ESME_RINVMSGID",
        0x0D => "ESME_RBINDFAIL",
        0x0E => "ESME_RINVPASWD",
        0x0F => "ESME_RINVSYSID",
        0x11 => "ESME_RCANCELFAIL",
        0x13 => "ESME_RREPLACEFAIL",
        0x14 => "ESME_RMSGQFUL",
        0x15 => "ESME_RINVSERTYP",
        0x33 => "ESME_RINVNUMDESTS",
        0x34 => "ESME_RINVDLNAME",
        0x40 => "ESME_RINVDESTFLAG",
        0x42 => "ESME_RINVSUBREP",
        0x43 => "ESME_RINVESMCLASS",
        0x44 => "ESME_RCNTSUBDL",
        0x45 => "ESME_RSUBMITFAIL",
        0x48 => "ESME_RINVSRCTON",
        0x49 => "ESME_RINVSRCNPI",
        0x50 => "ESME_RINVDSTTON",
        0x51 => "ESME_RINVDSTNPI",
        0x53 => "ESME_RINVSYSTYP",
        0x54 => "ESME_RINVREPFLAG",
        0x55 => "ESME_RINVNUMMSGS",
        0x58 => "ESME_RTHROTTLED",
        0x61 => "ESME_RINVSCHED",
        0x62 => "ESME_RINVEXPIRY",
        0x63 => "ESME_RINVDFTMSGID",
        0x64 => "ESME_RX_T_APPN",
        0x65 => "ESME_RX_P_APPN",
        0x66 => "ESME_RX_R_APPN",
        0x67 => "ESME_RQUERYFAIL",
        0xC0 => "ESME_RINVOPTPARSTREAM",
        0xC1 => "ESME_ROPTPARNOTALLWD",
        0xC2 => "ESME_RINVPARLEN",
        0xC3 => "ESME_RMISSINGOPTPARAM",
        0xC4 => "ESME_RINVOPTPARAMVAL",
        0xFE => "ESME_RDELIVERYFAILURE",
        0xFF => "ESME_RUNKNOWNERR",
        _ => "ESME_UNKNOWN_STATUS",
    }
}

/// Whether a submit_sm_resp status is worth retrying later (Kannel
/// `smpp_status_to_smscconn_failure_reason`, protocol-facts §C.7).
pub fn status_is_transient(code: u32) -> bool {
    matches!(
        code,
        status::RMSGQFUL | status::RTHROTTLED | status::RX_T_APPN | status::RSYSERR
    )
}

/// Whether a deliver_sm is a delivery receipt (esm_class message type bits 0x04 MC receipt,
/// 0x08 SME ack, 0x20 intermediate notification; protocol-facts §C.3, Kannel practice).
pub fn is_receipt(sm: &Sm) -> bool {
    sm.esm_class & 0x3C != 0
}

/// A parsed delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: String,
    /// `Some(true)` delivered, `Some(false)` failed, `None` intermediate (ENROUTE/ACCEPTD…).
    pub delivered: Option<bool>,
    pub state: String,
}

/// Extracts the receipt from a deliver_sm: TLVs `receipted_message_id` + `message_state` when
/// present (preferred, SMPP 3.4 §5.3.2.12/.35), else the text form
/// `id:… sub:… dlvrd:… submit date:… done date:… stat:… err:…` (SMPP 3.4 Appendix B).
pub fn parse_receipt(sm: &Sm) -> Option<Receipt> {
    let tlv_id = sm.tlv(tag::RECEIPTED_MESSAGE_ID).map(|v| {
        let v = v.split(|b| *b == 0).next().unwrap_or(&[]);
        v.iter().map(|b| char::from(*b)).collect::<String>()
    });
    let tlv_state = sm.tlv(tag::MESSAGE_STATE).and_then(|v| v.first().copied());
    if let (Some(id), Some(st)) = (&tlv_id, tlv_state)
        && !id.is_empty()
    {
        let (name, delivered) = match st {
            1 => ("ENROUTE", None),
            2 => ("DELIVRD", Some(true)),
            3 => ("EXPIRED", Some(false)),
            4 => ("DELETED", Some(false)),
            5 => ("UNDELIV", Some(false)),
            6 => ("ACCEPTD", None),
            7 => ("UNKNOWN", Some(false)),
            8 => ("REJECTD", Some(false)),
            _ => ("UNKNOWN", Some(false)),
        };
        return Some(Receipt {
            message_id: id.clone(),
            delivered,
            state: name.into(),
        });
    }
    let text_bytes = sm.tlv(tag::MESSAGE_PAYLOAD).unwrap_or(&sm.short_message);
    let text: String = text_bytes.iter().map(|b| char::from(*b)).collect();
    let field = |key: &str| -> Option<String> {
        let lower = text.to_ascii_lowercase();
        let i = lower.find(key)?;
        let rest = &text[i + key.len()..];
        Some(rest.split_whitespace().next().unwrap_or("").to_owned())
    };
    let id = field("id:").or(tlv_id)?;
    let stat = field("stat:")?.to_ascii_uppercase();
    let delivered = match stat.as_str() {
        "DELIVRD" => Some(true),
        "ACCEPTD" | "ENROUTE" | "BUFFRED" => None,
        _ => Some(false),
    };
    if id.is_empty() {
        return None;
    }
    Some(Receipt {
        message_id: id,
        delivered,
        state: stat,
    })
}

/// The metric label of a receipt's state: one of the message states of SMPP 3.4 §5.2.28 /
/// Appendix B, or `other`. An SMSC's `stat:` is free text; as a label value as it came, every
/// made-up status would be a new time series for ever (DESIGN §10.3: label values come from
/// fixed sets).
pub fn receipt_state_label(state: &str) -> &'static str {
    const KNOWN: [&str; 8] = [
        "DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD", "ENROUTE",
    ];
    KNOWN
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(state))
        .unwrap_or("other")
}

/// Canonical message id used in `refs` and receipts: trimmed, lower-case, leading zeros removed
/// when it is all hex digits. `receipt_decimal` converts a decimal receipt id to the hex form
/// that submit_sm_resp used (SMSC-specific, protocol-facts §C.6).
pub fn normalise_id(id: &str, decimal_to_hex: bool) -> String {
    let t = id.trim().trim_end_matches('\0');
    if decimal_to_hex
        && !t.is_empty()
        && t.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = t.parse::<u128>()
    {
        return format!("{n:x}");
    }
    let l = t.to_ascii_lowercase();
    if !l.is_empty() && l.bytes().all(|b| b.is_ascii_hexdigit()) {
        let s = l.trim_start_matches('0');
        return if s.is_empty() { "0".into() } else { s.into() };
    }
    l
}

/// Relative validity period `YYMMDDhhmmss000R` (SMPP 3.4 §7.1.1) for `secs` seconds, capped at
/// 99 days (the day field has two digits; years/months are avoided as their length is ambiguous).
pub fn relative_validity(secs: u64) -> String {
    let secs = secs.clamp(1, 99 * 86_400 + 23 * 3600 + 59 * 60 + 59);
    let d = secs / 86_400;
    let h = (secs % 86_400) / 3600;
    let m = (secs % 3600) / 60;
    let s = secs % 60;
    format!("0000{d:02}{h:02}{m:02}{s:02}000R")
}

/// Absolute validity `YYMMDDhhmmss000+` in UTC (SMPP 3.4 §7.1.1; what Kannel sends).
pub fn absolute_validity(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant), to stay free of clock/time-zone crates in the codec.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}000+",
        y.rem_euclid(100),
        m,
        d,
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Encodes bytes as a TLV value helper.
pub fn tlv_u16(tag: u16, v: u16) -> Tlv {
    Tlv {
        tag,
        value: v.to_be_bytes().to_vec(),
    }
}

pub fn tlv_u8(tag: u16, v: u8) -> Tlv {
    Tlv {
        tag,
        value: vec![v],
    }
}

/// Latin-1 view of a string as octets (for ids/addresses built by tests and tools).
pub fn octets(s: &str) -> Vec<u8> {
    latin1(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_state_labels_are_a_fixed_set() {
        assert_eq!(receipt_state_label("DELIVRD"), "DELIVRD");
        assert_eq!(receipt_state_label("undeliv"), "UNDELIV");
        assert_eq!(receipt_state_label("BUFFRED"), "other");
        assert_eq!(receipt_state_label("x\"}\n# evil"), "other");
        assert_eq!(receipt_state_label(""), "other");
    }

    fn example_sm() -> Sm {
        let mut short_message = hex::decode("0605040b8423f0").unwrap();
        short_message.extend(hex::decode("010603c4af87d3290f1cbc08ea0e45867199db5c").unwrap());
        Sm {
            source_ton: 1,
            source_npi: 1,
            source_addr: "12345".into(),
            dest_ton: 1,
            dest_npi: 1,
            dest_addr: "447700900123".into(),
            esm_class: 0x40,
            registered_delivery: 1,
            data_coding: 4,
            short_message,
            ..Default::default()
        }
    }

    #[test]
    fn submit_sm_matches_worked_example_c9() {
        let pdu = Pdu::new(cmd::SUBMIT_SM, 7, Body::Sm(example_sm()));
        let bytes = pdu.encode().unwrap();
        let want = "0000004d000000040000000000000007\
                    00010131323334350001013434373730303930303132330040000000000100040\
                    01b0605040b8423f0010603c4af87d3290f1cbc08ea0e45867199db5c";
        assert_eq!(hex::encode(&bytes), want);
        assert_eq!(Pdu::decode(&bytes).unwrap(), pdu);
    }

    #[test]
    fn frame_len_rejects_garbage() {
        assert_eq!(frame_len(&[0, 0]).unwrap(), None);
        assert!(matches!(
            frame_len(b"GARBAGE!").unwrap_err(),
            SmppError::BadLength { .. }
        ));
        assert!(frame_len(&[0, 0, 0, 15]).is_err());
    }

    #[test]
    fn responses_and_errors() {
        let req = Header {
            command_id: cmd::SUBMIT_SM,
            status: 0,
            sequence: 9,
        };
        let r = Pdu::response(&req, 0, Body::IdResp("ABC123".into()));
        let b = r.encode().unwrap();
        assert_eq!(Pdu::decode(&b).unwrap(), r);
        // Error response without body.
        let e = Pdu::response(&req, 0x45, Body::Empty).encode().unwrap();
        let d = Pdu::decode(&e).unwrap();
        assert_eq!(d.header.status, 0x45);
        assert_eq!(d.body, Body::IdResp(String::new()));
        assert_eq!(status_name(0x45), "ESME_RSUBMITFAIL");
        assert!(status_is_transient(0x58));
        assert!(!status_is_transient(0x45));
        // Truncated submit_sm names the field and offset.
        let mut sm = Pdu::new(cmd::SUBMIT_SM, 1, Body::Sm(example_sm()))
            .encode()
            .unwrap();
        sm.truncate(40);
        sm[..4].copy_from_slice(&40u32.to_be_bytes());
        let err = Pdu::decode(&sm).unwrap_err().to_string();
        assert!(err.contains("offset"), "{err}");
    }

    #[test]
    fn receipts_text_and_tlv() {
        let mut sm = Sm {
            esm_class: 0x04,
            short_message: b"id:0A1b sub:001 dlvrd:001 submit date:2611240101 done date:2611240101 stat:DELIVRD err:000 text:".to_vec(),
            ..Default::default()
        };
        assert!(is_receipt(&sm));
        let r = parse_receipt(&sm).unwrap();
        assert_eq!(r.message_id, "0A1b");
        assert_eq!(r.delivered, Some(true));
        assert_eq!(normalise_id(&r.message_id, false), "a1b");
        sm.short_message = b"id:42 stat:UNDELIV err:001".to_vec();
        let r = parse_receipt(&sm).unwrap();
        assert_eq!(r.delivered, Some(false));
        assert_eq!(normalise_id(&r.message_id, true), "2a");
        sm.tlvs = vec![
            Tlv {
                tag: tag::RECEIPTED_MESSAGE_ID,
                value: b"sim0001\0".to_vec(),
            },
            tlv_u8(tag::MESSAGE_STATE, 2),
        ];
        let r = parse_receipt(&sm).unwrap();
        assert_eq!(
            (r.message_id.as_str(), r.delivered),
            ("sim0001", Some(true))
        );
    }

    #[test]
    fn validity_formats() {
        assert_eq!(relative_validity(90_061), "000001010101000R");
        // 2026-11-24 04:44:47 UTC
        assert_eq!(absolute_validity(1_795_495_487), "261124044447000+");
        assert_eq!(absolute_validity(0), "700101000000000+");
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = Pdu::decode(&data);
            let _ = frame_len(&data);
            if let Ok(p) = Pdu::decode(&data) && let Body::Sm(sm) = &p.body {
                let _ = parse_receipt(sm);
            }
        }

        #[test]
        fn sm_round_trip(sm_bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..254),
                         seq in proptest::prelude::any::<u32>(), esm in proptest::prelude::any::<u8>()) {
            let mut sm = example_sm();
            sm.short_message = sm_bytes;
            sm.esm_class = esm;
            sm.tlvs.push(tlv_u16(tag::DESTINATION_PORT, 2948));
            let pdu = Pdu::new(cmd::SUBMIT_SM, seq, Body::Sm(sm));
            let b = pdu.encode().unwrap();
            proptest::prop_assert_eq!(frame_len(&b).unwrap(), Some(b.len()));
            proptest::prop_assert_eq!(Pdu::decode(&b).unwrap(), pdu);
        }
    }
}
