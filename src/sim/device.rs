//! The client side of the push binding (seed Appendix B.1, DM-PUSH-C-001…008), as a simulated
//! device applies it: SMS reassembly, WDP port check, WSP Push PDU check and routing to the "DM
//! application" (seed §5.1.1, §5.1.3), and the DM application's decoding (WBXML → XML, package #0
//! with digest verification).
//!
//! Everything here is pure (no I/O; time is a parameter), so the rules are unit-tested directly
//! and shared by the SMS, UDP and HTTP front ends.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use serde_json::{Value, json};

use crate::codec::{
    bootstrap,
    notification::{self, Verification},
    smpp::{self, Sm, tag},
    sms::{self, iei},
    wbxml,
    wsp::{self, AppId, Media, PushPdu, content_code},
};

/// DM credentials of a simulated device (what its DM account holds for one server): used to check
/// the package #0 digest (OMA-TS-DM_Notification §6.2.2.2). `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct DmCredentials {
    pub server_id: String,
    pub server_password: String,
    /// The server nonce, already decoded from base64.
    pub nonce: Vec<u8>,
    /// The IMSI and user PIN this device verifies a DM bootstrap's MAC with (`--bootstrap-key`).
    pub bootstrap: bootstrap::KeyMaterial,
}

impl std::fmt::Debug for DmCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmCredentials")
            .field("server_id", &self.server_id)
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

impl DmCredentials {
    /// Parses `server_id:password:nonce_b64` (the server id must not contain `:`; the password may).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (server_id, rest) = s
            .split_once(':')
            .ok_or("expected server_id:password:nonce_b64")?;
        let (password, nonce) = rest
            .rsplit_once(':')
            .ok_or("expected server_id:password:nonce_b64")?;
        let nonce = B64
            .decode(nonce.trim())
            .map_err(|_| "the nonce is not valid base64".to_owned())?;
        if server_id.is_empty() {
            return Err("empty server_id".into());
        }
        Ok(Self {
            server_id: server_id.to_owned(),
            server_password: password.to_owned(),
            nonce,
            bootstrap: bootstrap::KeyMaterial::default(),
        })
    }

    /// Parses the `IMSI:PIN` of `--bootstrap-key` (either may be empty; the PIN may contain `:`).
    pub fn parse_bootstrap_key(s: &str) -> Result<bootstrap::KeyMaterial, String> {
        let (imsi, pin) = s
            .split_once(':')
            .ok_or("expected IMSI:PIN (either may be empty)")?;
        if !imsi.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the IMSI is not all digits".into());
        }
        let some = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        Ok(bootstrap::KeyMaterial {
            imsi: some(imsi),
            user_pin: some(pin),
        })
    }
}

/// A DM bootstrap's SEC/MAC as the device checks them (OMA ProvBoot as used by the DM profile,
/// protocol-facts §A.8): the MAC is HMAC-SHA1 over the WBXML body exactly as received, keyed
/// per SEC from the device's IMSI and the PIN its user typed. A bootstrap whose MAC does not
/// verify is discarded. Returns `None` when the content type has no SEC parameter.
pub fn check_bootstrap(
    ct: &wsp::ContentTypeValue,
    body: &[u8],
    key: Option<&bootstrap::KeyMaterial>,
) -> Option<Result<Value, String>> {
    let param = |code: u32| {
        ct.params
            .iter()
            .find(|p| p.name == wsp::ParamName::WellKnown(code))
            .map(|p| &p.value)
    };
    let sec = param(wsp::param::SEC)?;
    let sec = match sec {
        wsp::ParamValue::Integer(c) => u8::try_from(*c).ok().and_then(bootstrap::Sec::from_code),
        wsp::ParamValue::Text(_) => None,
    };
    let Some(sec) = sec else {
        return Some(Err("bootstrap SEC parameter is not a known method".into()));
    };
    let Some(wsp::ParamValue::Text(mac)) = param(wsp::param::MAC) else {
        return Some(Err(format!("bootstrap SEC={} without a MAC", sec.name())));
    };
    let check = match key {
        None => "not-checked".to_owned(),
        Some(k) => match bootstrap::verify(sec, k, body, mac) {
            Ok(true) => "ok".to_owned(),
            Ok(false) => {
                return Some(Err(format!(
                    "bootstrap MAC does not verify for SEC={} (discarded)",
                    sec.name()
                )));
            }
            Err(e) => format!("not-checked ({e})"),
        },
    };
    Some(Ok(
        json!({ "sec": sec.name(), "mac": mac, "mac_check": check }),
    ))
}

/// The three DM media types the DM application accepts (seed §5.1.1: 0x42/0x43; the DM
/// Notification 0x44, OMNA WSP content types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmMedia {
    Wbxml,
    Xml,
    Notification,
}

impl DmMedia {
    pub fn from_wsp(ct: &wsp::ContentTypeValue) -> Option<Self> {
        match &ct.media {
            Media::WellKnown(content_code::DM_WBXML) => Some(Self::Wbxml),
            Media::WellKnown(content_code::DM_XML) => Some(Self::Xml),
            Media::WellKnown(content_code::NOTIFICATION) => Some(Self::Notification),
            Media::WellKnown(_) => None,
            Media::Text(t) => Self::from_mime(t),
        }
    }

    /// Media types compare case-insensitively and ignore parameters (RFC 9110 §8.3.1).
    pub fn from_mime(s: &str) -> Option<Self> {
        let essence = s.split(';').next().unwrap_or("").trim();
        [
            ("application/vnd.syncml.dm+wbxml", Self::Wbxml),
            ("application/vnd.syncml.dm+xml", Self::Xml),
            ("application/vnd.syncml.notification", Self::Notification),
        ]
        .into_iter()
        .find(|(m, _)| m.eq_ignore_ascii_case(essence))
        .map(|(_, d)| d)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wbxml => "application/vnd.syncml.dm+wbxml",
            Self::Xml => "application/vnd.syncml.dm+xml",
            Self::Notification => "application/vnd.syncml.notification",
        }
    }
}

/// Whether an X-Wap-Application-Id names the DM client (`0x07` or its text form; protocol-facts
/// §A.5, OMNA push application ids).
pub fn is_dm_app_id(a: &AppId) -> bool {
    match a {
        AppId::Code(c) => *c == wsp::APP_ID_SYNCML_DM,
        AppId::Uri(u) => u.trim().eq_ignore_ascii_case(wsp::APP_ID_SYNCML_DM_TEXT),
    }
}

fn app_id_json(a: Option<&AppId>) -> Value {
    match a {
        Some(AppId::Code(c)) => json!(format!("0x{c:02X}")),
        Some(AppId::Uri(u)) => json!(u),
        None => Value::Null,
    }
}

/// The DM application: decodes what was routed to it. Returns the JSON fields of the event
/// (`xml`, `notification`, `digest`, or `decode_error`).
pub fn dm_application(media: DmMedia, body: &[u8], creds: Option<&DmCredentials>) -> Value {
    match media {
        DmMedia::Wbxml => match wbxml::wbxml_to_xml(body) {
            Ok(xml) => json!({ "xml": xml }),
            Err(e) => json!({ "decode_error": format!("WBXML: {e}") }),
        },
        DmMedia::Xml => match std::str::from_utf8(body) {
            Ok(xml) => json!({ "xml": xml }),
            Err(e) => json!({
                "decode_error": format!("XML is not UTF-8 at offset {}", e.valid_up_to())
            }),
        },
        DmMedia::Notification => match notification::parse(body) {
            Ok(p) => {
                let t = &p.trigger;
                let digest = match creds {
                    None => "not-checked",
                    Some(c) => match notification::verify(
                        body,
                        &c.server_id,
                        c.server_password.as_bytes(),
                        &c.nonce,
                    ) {
                        Verification::Ok => "ok",
                        Verification::OkResyncNonce => "ok-resync-nonce",
                        Verification::Mismatch => "mismatch",
                    },
                };
                json!({
                    "notification": {
                        "version": t.version,
                        "ui_mode": format!("{:?}", t.ui_mode).to_ascii_lowercase(),
                        "initiator": format!("{:?}", t.initiator).to_ascii_lowercase(),
                        "session_id": t.session_id,
                        "server_id": t.server_id,
                        "vendor_hex": hex::encode(&t.vendor),
                        "digest_hex": hex::encode(p.digest),
                    },
                    "digest": digest,
                })
            }
            Err(e) => json!({ "decode_error": e.to_string() }),
        },
    }
}

/// Applies the WAP client rules to one complete WDP datagram received on `dest_port`
/// (seed §5.1.1 and §5.1.3). Returns the event fields: `routed` = `"dm"` or `"discarded"` with a
/// `reason`, the WSP headers seen, and the DM application's output.
pub fn wdp_datagram(
    dest_port: Option<u16>,
    datagram: &[u8],
    creds: Option<&DmCredentials>,
) -> Value {
    let discard = |reason: String, extra: Value| {
        let mut v = json!({ "routed": "discarded", "reason": reason });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    // §5.1.3: the message must have been sent to the WAP push port 2948. 2949 is the secure
    // (WTLS) push port (§5.1.2): this device has no WTLS stack (docs/decisions/wap.md).
    match dest_port {
        Some(sms::PORT_WAP_PUSH) => {}
        Some(sms::PORT_WAP_PUSH_SECURE) => {
            return discard(
                "destination port 2949 is the secure (WTLS) push port; this device has no WTLS \
                 session (seed §5.1.2 unsupported)"
                    .into(),
                json!({ "dest_port": 2949 }),
            );
        }
        Some(p) => {
            return discard(
                format!("destination port {p} is not the WAP push port 2948 (seed §5.1.3)"),
                json!({ "dest_port": p }),
            );
        }
        None => {
            return discard(
                "no WDP port addressing: not a WAP push (seed §5.1.3)".into(),
                json!({}),
            );
        }
    }
    let pdu = match PushPdu::decode(datagram) {
        Ok(p) => p,
        Err(e) => return discard(format!("not a WSP push PDU: {e}"), json!({})),
    };
    let mut seen = json!({
        "dest_port": dest_port,
        "wsp": {
            "tid": pdu.tid,
            "pdu_type": format!("0x{:02X}", pdu.pdu_type),
            "content_type": pdu.content_type.media_str(),
            "app_id": app_id_json(pdu.app_id()),
            "body_len": pdu.body.len(),
        }
    });
    // §5.1.1: "The DM Message MUST be sent using the non-secure connectionless push" — PDU type
    // 0x06 (WAP-230-WSP §8.2.4.1); ConfirmedPush (0x07) needs a WSP session.
    if pdu.pdu_type != wsp::PDU_PUSH {
        return discard(
            format!(
                "WSP PDU type 0x{:02X} is not a connectionless Push (0x06) (seed §5.1.1)",
                pdu.pdu_type
            ),
            seen,
        );
    }
    match pdu.app_id() {
        Some(a) if is_dm_app_id(a) => {}
        Some(_) => {
            return discard(
                "X-Wap-Application-Id is not 0x07 / x-wap-application:syncml.dm: not for the DM \
                 application (seed §5.1.3)"
                    .into(),
                seen,
            );
        }
        None => {
            return discard(
                "no X-Wap-Application-Id: not for the DM application (seed §5.1.3)".into(),
                seen,
            );
        }
    }
    let Some(media) = DmMedia::from_wsp(&pdu.content_type) else {
        return discard(
            format!(
                "content type {} is not a DM type (0x42/0x43/0x44) (seed §5.1.1, §5.1.3)",
                pdu.content_type.media_str()
            ),
            seen,
        );
    };
    let boot = check_bootstrap(
        &pdu.content_type,
        &pdu.body,
        creds
            .map(|c| &c.bootstrap)
            .filter(|k| **k != bootstrap::KeyMaterial::default()),
    );
    let boot = match boot {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(reason)) => return discard(reason, seen),
    };
    let app = dm_application(media, &pdu.body, creds.filter(|c| !c.server_id.is_empty()));
    if let (Some(o), Value::Object(a)) = (seen.as_object_mut(), app) {
        o.insert("routed".into(), json!("dm"));
        o.insert("media".into(), json!(media.as_str()));
        if let Some(b) = boot {
            o.insert("bootstrap".into(), b);
        }
        o.extend(a);
    }
    seen
}

/// One SMS as the handset sees it, after the SMSC: ports, concatenation and the payload octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsUnit {
    pub dest_port: Option<u16>,
    pub src_port: Option<u16>,
    /// (reference, 16-bit reference?, total, seq)
    pub concat: Option<(u16, bool, u8, u8)>,
    pub payload: Vec<u8>,
}

/// Whether a data_coding value means 8-bit data (SMPP 3.4 §5.2.19: 0x02 and 0x04 octet
/// unspecified; 0xF0–0xFF message class coding with bit 2 set = 8-bit, TS 23.038 §4).
pub fn is_8bit_dcs(dcs: u8) -> bool {
    matches!(dcs, 0x02 | 0x04) || (dcs & 0xF0 == 0xF0 && dcs & 0x04 != 0)
}

/// Reads a submit_sm as the SMSC would hand it to the handset: the UDH (esm_class UDHI) or the
/// port / SAR TLVs (the SMSC then builds the UDH itself; addendum Q5).
pub fn sms_unit(sm: &Sm) -> Result<SmsUnit, String> {
    if !is_8bit_dcs(sm.data_coding) {
        return Err(format!(
            "data_coding 0x{:02X} is not 8-bit data: a WAP push must be 8-bit (WAP-259-WDP)",
            sm.data_coding
        ));
    }
    let ud: &[u8] = sm.tlv(tag::MESSAGE_PAYLOAD).unwrap_or(&sm.short_message);
    if sm.esm_class & smpp::ESM_UDHI != 0 {
        let u = sms::parse_user_data(ud).map_err(|e| format!("user data header: {e}"))?;
        let concat = u.concat.map(|(r, t, s)| (r, concat_is_16(ud), t, s));
        return Ok(SmsUnit {
            dest_port: u.dest_port,
            src_port: u.src_port,
            concat,
            payload: u.payload,
        });
    }
    let be16 = |t: u16| {
        sm.tlv(t)
            .and_then(|v| <[u8; 2]>::try_from(v).ok())
            .map(u16::from_be_bytes)
    };
    let byte = |t: u16| sm.tlv(t).and_then(|v| v.first().copied());
    let concat = match (
        be16(tag::SAR_MSG_REF_NUM),
        byte(tag::SAR_TOTAL_SEGMENTS),
        byte(tag::SAR_SEGMENT_SEQNUM),
    ) {
        (Some(r), Some(t), Some(s)) if t > 0 && s > 0 && s <= t => Some((r, true, t, s)),
        (None, None, None) => None,
        _ => return Err("incomplete or invalid sar_* TLVs".into()),
    };
    Ok(SmsUnit {
        dest_port: be16(tag::DESTINATION_PORT),
        src_port: be16(tag::SOURCE_PORT),
        concat,
        payload: ud.to_vec(),
    })
}

/// Whether the concatenation IE in this UDH is the 16-bit-reference one (IEI 0x08, TS 23.040
/// §9.2.3.24.8): an 8-bit reference 0x42 and a 16-bit reference 0x0042 are different messages.
fn concat_is_16(ud: &[u8]) -> bool {
    let Some(&udhl) = ud.first() else {
        return false;
    };
    let end = (usize::from(udhl) + 1).min(ud.len());
    let mut i = 1;
    while i + 1 < end {
        let (id, len) = (ud[i], usize::from(ud[i + 1]));
        if id == iei::CONCAT_16 {
            return true;
        }
        if id == iei::CONCAT_8 {
            return false;
        }
        i += 2 + len;
    }
    false
}

/// Reassembly key: who sent it to whom, and the concatenation reference (TS 23.040 §9.2.3.24.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    to: String,
    from: String,
    reference: u16,
    wide: bool,
    total: u8,
}

struct Partial {
    first_seen: Instant,
    dest_port: Option<u16>,
    parts: HashMap<u8, Vec<u8>>,
}

/// Result of feeding one SMS to the [`Reassembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassembled {
    /// A complete datagram (single SMS, or the last missing part arrived).
    Complete {
        dest_port: Option<u16>,
        datagram: Vec<u8>,
        parts: u8,
    },
    /// Still waiting: `have` of `total` parts.
    Pending { have: usize, total: u8 },
    /// A part that repeats one already held (e.g. an SMSC retry); ignored.
    Duplicate,
}

/// Concatenated-SMS reassembly per (destination, source, reference). Parts may arrive in any
/// order; incomplete messages are dropped after `timeout` (handsets typically give up after
/// minutes; the value is a parameter). At most [`MAX_PENDING`] messages wait at once: a peer
/// sending first parts only cannot grow the memory without bound (the oldest is dropped).
pub struct Reassembler {
    timeout: Duration,
    pending: HashMap<Key, Partial>,
}

/// Incomplete messages kept at once.
pub const MAX_PENDING: usize = 4096;

impl Reassembler {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            pending: HashMap::new(),
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.first_seen)
            .map(|(k, _)| k.clone())
        {
            self.pending.remove(&k);
        }
    }

    /// Messages waiting for parts.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Drops incomplete messages older than the timeout; returns how many (with their keys as
    /// text, for the event log).
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let timeout = self.timeout;
        let mut gone = Vec::new();
        self.pending.retain(|k, p| {
            let keep = now.saturating_duration_since(p.first_seen) < timeout;
            if !keep {
                gone.push(format!(
                    "to {} from {} ref {} ({} of {} parts)",
                    k.to,
                    k.from,
                    k.reference,
                    p.parts.len(),
                    k.total
                ));
            }
            keep
        });
        gone
    }

    pub fn push(&mut self, to: &str, from: &str, unit: SmsUnit, now: Instant) -> Reassembled {
        let Some((reference, wide, total, seq)) = unit.concat else {
            return Reassembled::Complete {
                dest_port: unit.dest_port,
                datagram: unit.payload,
                parts: 1,
            };
        };
        if total == 1 {
            return Reassembled::Complete {
                dest_port: unit.dest_port,
                datagram: unit.payload,
                parts: 1,
            };
        }
        let key = Key {
            to: to.to_owned(),
            from: from.to_owned(),
            reference,
            wide,
            total,
        };
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING {
            self.evict_oldest();
        }
        let p = self.pending.entry(key.clone()).or_insert_with(|| Partial {
            first_seen: now,
            dest_port: None,
            parts: HashMap::new(),
        });
        if p.parts.contains_key(&seq) {
            return Reassembled::Duplicate;
        }
        // The port IE is repeated in every part (protocol-facts §B.2); keep the first one seen.
        if p.dest_port.is_none() {
            p.dest_port = unit.dest_port;
        }
        p.parts.insert(seq, unit.payload);
        if p.parts.len() < usize::from(total) {
            return Reassembled::Pending {
                have: p.parts.len(),
                total,
            };
        }
        let Some(mut p) = self.pending.remove(&key) else {
            return Reassembled::Pending { have: 0, total };
        };
        let mut datagram = Vec::new();
        for s in 1..=total {
            if let Some(part) = p.parts.remove(&s) {
                datagram.extend_from_slice(&part);
            }
        }
        Reassembled::Complete {
            dest_port: p.dest_port,
            datagram,
            parts: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_pdu(ct: u8, app: &[u8], body: &[u8]) -> Vec<u8> {
        // Hand-built (independent of the encoder): TID 01, Push 06, headers length, content type
        // short integer, X-Wap-Application-Id (0xAF) value.
        let mut v = vec![0x01, 0x06, (1 + app.len() + 1) as u8, ct | 0x80, 0xAF];
        v.extend_from_slice(app);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn dm_xml_on_2948_is_routed() {
        let d = push_pdu(0x43, &[0x87], b"<SyncML/>");
        let v = wdp_datagram(Some(2948), &d, None);
        assert_eq!(v["routed"], "dm", "{v}");
        assert_eq!(v["xml"], "<SyncML/>");
        assert_eq!(v["wsp"]["app_id"], "0x07");
    }

    #[test]
    fn text_app_id_is_accepted() {
        let mut app = b"x-wap-application:syncml.dm".to_vec();
        app.push(0);
        let d = push_pdu(0x43, &app, b"<SyncML/>");
        assert_eq!(wdp_datagram(Some(2948), &d, None)["routed"], "dm");
    }

    #[test]
    fn other_app_id_port_type_and_media_are_discarded() {
        let wrong_app = push_pdu(0x43, &[0x84], b"<SyncML/>");
        let v = wdp_datagram(Some(2948), &wrong_app, None);
        assert_eq!(v["routed"], "discarded");
        assert!(v["reason"].as_str().unwrap().contains("Application-Id"));

        let ok = push_pdu(0x42, &[0x87], b"");
        for (port, needle) in [(2949, "2949"), (9200, "9200"), (2948 + 100, "3048")] {
            let v = wdp_datagram(Some(port), &ok, None);
            assert_eq!(v["routed"], "discarded");
            assert!(v["reason"].as_str().unwrap().contains(needle), "{v}");
        }
        assert_eq!(wdp_datagram(None, &ok, None)["routed"], "discarded");

        let mut confirmed = ok.clone();
        confirmed[1] = 0x07;
        let v = wdp_datagram(Some(2948), &confirmed, None);
        assert!(v["reason"].as_str().unwrap().contains("0x07"), "{v}");

        // 0x36: application/vnd.wap.connectivity-wbxml (provisioning, not the DM application).
        let v = wdp_datagram(Some(2948), &push_pdu(0x36, &[0x87], b""), None);
        assert!(
            v["reason"].as_str().unwrap().contains("not a DM type"),
            "{v}"
        );

        let v = wdp_datagram(Some(2948), &[0x01, 0x06, 0x7F], None);
        assert!(v["reason"].as_str().unwrap().contains("offset"), "{v}");
    }

    #[test]
    fn notification_digest_is_checked() {
        let pkg = include_bytes!("../../tests/fixtures/notification/d8_example1.bin");
        let d = push_pdu(0x44, &[0x87], pkg);
        let good = DmCredentials::parse("com.example.dms:srvpass:AQIDBAUGBwg=").unwrap();
        let bad = DmCredentials::parse("com.example.dms:wrong:AQIDBAUGBwg=").unwrap();
        let v = wdp_datagram(Some(2948), &d, Some(&good));
        assert_eq!(v["digest"], "ok", "{v}");
        assert_eq!(v["notification"]["session_id"], 0x1234);
        assert_eq!(v["notification"]["server_id"], "com.example.dms");
        assert_eq!(
            wdp_datagram(Some(2948), &d, Some(&bad))["digest"],
            "mismatch"
        );
        assert_eq!(wdp_datagram(Some(2948), &d, None)["digest"], "not-checked");
    }

    #[test]
    fn reassembles_out_of_order_and_keeps_widths_apart() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(Duration::from_secs(60));
        let unit = |wide, seq, data: &[u8]| SmsUnit {
            dest_port: Some(2948),
            src_port: Some(9200),
            concat: Some((0x42, wide, 2, seq)),
            payload: data.to_vec(),
        };
        assert!(matches!(
            r.push("1", "2", unit(false, 2, b"world"), t0),
            Reassembled::Pending { have: 1, total: 2 }
        ));
        // Same reference number but 16-bit: a different message.
        assert!(matches!(
            r.push("1", "2", unit(true, 1, b"other"), t0),
            Reassembled::Pending { .. }
        ));
        assert_eq!(
            r.push("1", "2", unit(false, 2, b"world"), t0),
            Reassembled::Duplicate
        );
        assert_eq!(
            r.push("1", "2", unit(false, 1, b"hello "), t0),
            Reassembled::Complete {
                dest_port: Some(2948),
                datagram: b"hello world".to_vec(),
                parts: 2
            }
        );
        assert_eq!(r.pending(), 1);
        assert!(r.expire(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(r.expire(t0 + Duration::from_secs(61)).len(), 1);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn concat_width_is_read_from_the_udh() {
        assert!(!concat_is_16(&[
            0x0B, 5, 4, 0x0B, 0x84, 0x23, 0xF0, 0, 3, 1, 2, 1
        ]));
        assert!(concat_is_16(&[
            0x0C, 5, 4, 0x0B, 0x84, 0x23, 0xF0, 8, 4, 0, 1, 2, 1
        ]));
    }

    #[test]
    fn dcs() {
        assert!(is_8bit_dcs(0x04) && is_8bit_dcs(0xF5) && is_8bit_dcs(0x02));
        assert!(!is_8bit_dcs(0x00) && !is_8bit_dcs(0x08) && !is_8bit_dcs(0xF1));
    }

    #[test]
    fn pending_messages_are_bounded() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(Duration::from_secs(600));
        for i in 0..(MAX_PENDING + 10) {
            let unit = SmsUnit {
                dest_port: Some(2948),
                src_port: None,
                concat: Some(((i % 65_536) as u16, true, 2, 1)),
                payload: vec![1],
            };
            let from = format!("{}", i / 65_536);
            r.push("1", &from, unit, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(r.pending(), MAX_PENDING);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                                           port in proptest::prelude::any::<u16>()) {
            let c = DmCredentials::parse("s:p:AAAA").unwrap();
            let v = wdp_datagram(Some(port), &d, Some(&c));
            proptest::prop_assert!(v["routed"] == "dm" || v["reason"].is_string());
            let v = wdp_datagram(Some(2948), &d, Some(&c));
            proptest::prop_assert!(v["routed"] == "dm" || v["reason"].is_string());
            let _ = concat_is_16(&d);
            for esm in [0u8, 0x40] {
                let sm = Sm { esm_class: esm, data_coding: 4, short_message: d.clone(), ..Sm::default() };
                let _ = sms_unit(&sm);
            }
        }

        #[test]
        fn wsp_wrapped_garbage_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                                                  ct in 0x42u8..=0x44) {
            let d = push_pdu(ct, &[0x87], &body);
            let v = wdp_datagram(Some(2948), &d, None);
            proptest::prop_assert_eq!(&v["routed"], "dm");
        }
    }

    #[test]
    fn credentials_parse() {
        let c = DmCredentials::parse("srv:pa:ss:AAAA").unwrap();
        assert_eq!(c.server_password, "pa:ss");
        assert_eq!(c.nonce, vec![0, 0, 0]);
        assert!(DmCredentials::parse("srv:pw:!!").is_err());
        assert!(!format!("{c:?}").contains("pa:ss"));
    }

    #[test]
    fn bootstrap_mac_is_verified_with_the_devices_key() {
        use crate::codec::wsp::{ContentTypeValue, Param, ParamName, ParamValue};
        let body = include_bytes!("../../tests/fixtures/bootstrap/dmacc.wbxml");
        let key = DmCredentials::parse_bootstrap_key("310260801674539:1234").unwrap();
        let mac = bootstrap::mac(bootstrap::Sec::UserNetwPin, &key, body).unwrap();
        let pdu = |mac: &str| {
            let mut ct = ContentTypeValue::well_known(content_code::DM_WBXML);
            ct.params = vec![
                Param {
                    name: ParamName::WellKnown(wsp::param::SEC),
                    value: ParamValue::Integer(2),
                },
                Param {
                    name: ParamName::WellKnown(wsp::param::MAC),
                    value: ParamValue::Text(mac.into()),
                },
            ];
            PushPdu::new(1, ct, AppId::Code(7), body.to_vec())
                .encode()
                .unwrap()
        };
        let mut c = DmCredentials::parse("s:p:AAAA").unwrap();
        c.bootstrap = key;
        let v = wdp_datagram(Some(2948), &pdu(&mac), Some(&c));
        assert_eq!(v["routed"], "dm", "{v}");
        assert_eq!(v["bootstrap"]["sec"], "USERNETWPIN");
        assert_eq!(v["bootstrap"]["mac_check"], "ok");
        let v = wdp_datagram(Some(2948), &pdu(&"0".repeat(40)), Some(&c));
        assert_eq!(v["routed"], "discarded", "{v}");
        let v = wdp_datagram(Some(2948), &pdu(&mac), None);
        assert_eq!(v["bootstrap"]["mac_check"], "not-checked");
        assert!(DmCredentials::parse_bootstrap_key("12a:1").is_err());
        assert!(!format!("{c:?}").contains("1234"));
    }
}
