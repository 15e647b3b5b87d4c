//! Request validation: turns API input into store values or a precise [`Problem`]
//! ("parse, don't validate": nothing invalid gets past this module).

use std::net::{IpAddr, SocketAddr};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::problem::Problem;
use crate::{
    binding::{BindingKind, ContentType, DeviceBinding, WapBearer},
    store::DmCredentials,
};

/// Longest device id, idempotency key or collapse key we accept.
pub const MAX_KEY_LEN: usize = 200;

pub fn device_id(id: &str) -> Result<(), Problem> {
    if id.is_empty() || id.len() > MAX_KEY_LEN {
        return Err(Problem::invalid(
            "id",
            format!("device id must be 1 to {MAX_KEY_LEN} characters"),
        ));
    }
    if id.chars().any(|c| c.is_control() || c == '/') {
        return Err(Problem::invalid(
            "id",
            "device id must not contain control characters or '/'",
        ));
    }
    Ok(())
}

/// E.164 (with or without `+`): 7 to 15 digits, not starting with 0.
pub fn msisdn(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `sip:`/`sips:` URI with a host, or a `tel:` URI with a number.
pub fn sip_uri(s: &str) -> bool {
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return false;
    }
    let rest = if let Some(r) = s.strip_prefix("sips:").or_else(|| s.strip_prefix("sip:")) {
        r
    } else if let Some(r) = s.strip_prefix("tel:") {
        let num = r.split(';').next().unwrap_or("");
        let digits: String = num
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
            .collect();
        return msisdn(&digits)
            || (digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit()));
    } else {
        return false;
    };
    let hostpart = rest.split(';').next().unwrap_or("");
    let host = hostpart.rsplit('@').next().unwrap_or("");
    let host = host.split('?').next().unwrap_or("");
    !host.is_empty() && !host.starts_with(':')
}

/// Validates one device binding; `at` is its JSON path for error messages.
pub fn binding(b: &DeviceBinding, at: &str) -> Result<(), Problem> {
    match b {
        DeviceBinding::Wap {
            msisdn: m,
            bearer,
            address,
            secure,
        } => {
            if *secure {
                return Err(Problem::invalid(
                    format!("{at}.secure"),
                    "secure connectionless push (WSP over WTLS, port 2949, DM-PUSH-S-003) is not supported: \
                     it needs a WTLS session set up by the device and no handset or peer offers one \
                     (see docs/decisions/wap.md); use secure: false, or the sip/http bindings with TLS",
                ));
            }
            match bearer {
                WapBearer::Sms => match m {
                    Some(m) if msisdn(m) => {}
                    Some(m) => {
                        return Err(Problem::invalid(
                            format!("{at}.msisdn"),
                            format!("{m:?} is not an E.164 number (+ and 7 to 15 digits)"),
                        ));
                    }
                    None => {
                        return Err(Problem::invalid(
                            format!("{at}.msisdn"),
                            "required for the sms bearer",
                        ));
                    }
                },
                WapBearer::Udp => match address {
                    Some(a) if a.parse::<SocketAddr>().is_ok() || a.parse::<IpAddr>().is_ok() => {}
                    Some(a) => {
                        return Err(Problem::invalid(
                            format!("{at}.address"),
                            format!(
                                "{a:?} is not an IP address with optional port (e.g. 192.0.2.7:2948)"
                            ),
                        ));
                    }
                    None => {
                        return Err(Problem::invalid(
                            format!("{at}.address"),
                            "required for the udp bearer",
                        ));
                    }
                },
            }
        }
        DeviceBinding::Sip { uri, gruu } => {
            if !sip_uri(uri) {
                return Err(Problem::invalid(
                    format!("{at}.uri"),
                    format!("{uri:?} is not a sip:, sips: or tel: URI"),
                ));
            }
            if let Some(g) = gruu
                && (!(g.starts_with("sip:") || g.starts_with("sips:")) || !sip_uri(g))
            {
                return Err(Problem::invalid(
                    format!("{at}.gruu"),
                    format!("{g:?} is not a sip: or sips: URI"),
                ));
            }
        }
        DeviceBinding::Http { url, hmac, .. } => {
            let u = url::Url::parse(url).map_err(|e| {
                Problem::invalid(format!("{at}.url"), format!("{url:?} is not a URL: {e}"))
            })?;
            if !matches!(u.scheme(), "https" | "http") || u.host().is_none() {
                return Err(Problem::invalid(
                    format!("{at}.url"),
                    format!("{url:?} must be an https:// URL with a host"),
                ));
            }
            if let Some(h) = hmac {
                if h.username.is_empty() {
                    return Err(Problem::invalid(
                        format!("{at}.hmac.username"),
                        "must not be empty",
                    ));
                }
                if B64.decode(h.nonce.trim()).is_err() {
                    return Err(Problem::invalid(
                        format!("{at}.hmac.nonce"),
                        "must be base64",
                    ));
                }
            }
        }
        DeviceBinding::Obex { address, .. } => {
            crate::binding::obex::parse_address(address)
                .map_err(|e| Problem::invalid(format!("{at}.address"), e))?;
        }
    }
    Ok(())
}

pub fn bindings(list: &[DeviceBinding], at: &str) -> Result<(), Problem> {
    if list.is_empty() {
        return Err(Problem::invalid(at, "at least one binding is required"));
    }
    if list.len() > 16 {
        return Err(Problem::invalid(at, "at most 16 bindings"));
    }
    for (i, b) in list.iter().enumerate() {
        binding(b, &format!("{at}[{i}]"))?;
    }
    Ok(())
}

pub fn dm(dm: &DmCredentials) -> Result<(), Problem> {
    if dm.server_id.is_empty() || dm.server_id.len() > 255 {
        return Err(Problem::invalid("dm.server_id", "must be 1 to 255 octets"));
    }
    if B64.decode(dm.server_nonce.trim()).is_err() {
        return Err(Problem::invalid("dm.server_nonce", "must be base64"));
    }
    Ok(())
}

pub fn binding_choice(s: Option<&str>) -> Result<Option<BindingKind>, Problem> {
    match s {
        None | Some("auto") => Ok(None),
        Some(k) => BindingKind::parse(k).map(Some).ok_or_else(|| {
            Problem::invalid(
                "binding",
                format!("{k:?} is not one of auto, wap, sip, http, obex"),
            )
        }),
    }
}

pub fn priority(s: Option<&str>) -> Result<i16, Problem> {
    match s {
        None | Some("normal") => Ok(0),
        Some("high") => Ok(1),
        Some(p) => Err(Problem::invalid(
            "priority",
            format!("{p:?} is not normal or high"),
        )),
    }
}

pub fn content_type(s: &str) -> Result<ContentType, Problem> {
    ContentType::parse(s).ok_or_else(|| {
        Problem::invalid(
            "content_type",
            format!(
                "{s:?} is not application/vnd.syncml.dm+xml, application/vnd.syncml.dm+wbxml or \
                 application/vnd.syncml.notification"
            ),
        )
    })
}

/// Checks that an XML DM message is well-formed (what we cannot parse, a device cannot either).
pub fn xml(body: &[u8], field: &str) -> Result<(), Problem> {
    let mut r = quick_xml::Reader::from_reader(body);
    let mut depth = 0i64;
    let mut seen_root = false;
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf) {
            Ok(quick_xml::events::Event::Start(_)) => {
                depth += 1;
                seen_root = true;
            }
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Empty(_)) => seen_root = true,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(Problem::invalid(
                    field,
                    format!("not well-formed XML at byte {}: {e}", r.buffer_position()),
                ));
            }
        }
        buf.clear();
    }
    if !seen_root || depth != 0 {
        return Err(Problem::invalid(
            field,
            "not well-formed XML: no complete root element",
        ));
    }
    Ok(())
}

pub fn key(s: &Option<String>, field: &str) -> Result<(), Problem> {
    if let Some(k) = s
        && (k.is_empty() || k.len() > MAX_KEY_LEN)
    {
        return Err(Problem::invalid(
            field,
            format!("must be 1 to {MAX_KEY_LEN} characters"),
        ));
    }
    Ok(())
}

/// Hex SHA-256 of a canonical JSON value (object keys sorted), for idempotency comparisons.
pub fn request_hash(v: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(v).unwrap_or_default()))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Notification parameters of a push (DESIGN §5).
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationParams {
    /// `not-specified` (default), `background`, `informative`, `user-interaction`.
    pub ui_mode: Option<String>,
    /// `server` (default) or `client`.
    pub initiator: Option<String>,
    /// 1..65535; random when absent.
    pub session_id: Option<u32>,
    #[serde(default)]
    pub vendor_base64: Option<String>,
    /// The 10-bit version field (default 11 = DM 1.2, protocol-facts addendum Q1).
    pub version: Option<u16>,
}
