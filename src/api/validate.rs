//! Request validation: turns API input into store values or a precise [`Problem`]
//! ("parse, don't validate": nothing invalid gets past this module).

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::problem::Problem;
use crate::domain::{
    AddressError, BindingKind, ContentType, DeviceBinding, DmCredentials, HmacCredentials,
    HttpFraming, HttpTarget, Msisdn, ObexAddr, SipAddress, UdpAddr, WapBearer,
};

/// Longest device id, idempotency key or collapse key we accept.
pub const MAX_KEY_LEN: usize = 200;

pub fn device_id(id: &str) -> Result<(), Problem> {
    // Characters, not octets: what the OpenAPI `maxLength` counts.
    if id.is_empty() || id.chars().count() > MAX_KEY_LEN {
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

/// One device binding as a client sends it (the JSON object of DESIGN §5, addresses as text).
/// [`binding`] turns it into the typed [`DeviceBinding`], naming the field of the first error.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BindingInput {
    /// WAP push: over SMS (`msisdn` required) or UDP (`address` required).
    Wap {
        /// E.164 number for the SMS bearer (`+` optional, 7–15 digits, no leading 0).
        #[serde(default)]
        #[schema(pattern = r"^\+?[1-9][0-9]{6,14}$", example = "+447700900123")]
        msisdn: Option<String>,
        #[serde(default)]
        bearer: WapBearer,
        /// `ip` or `ip:port` of the UDP bearer (default port 2948).
        #[serde(default)]
        address: Option<String>,
        /// Secure connectionless push: refused (422), see docs/decisions/wap.md.
        #[serde(default)]
        secure: bool,
    },
    /// SIP MESSAGE to the device's address of record.
    Sip {
        /// `sip:`, `sips:` or `tel:` URI.
        #[schema(example = "sip:device@ims.example.net")]
        uri: String,
        #[serde(default)]
        gruu: Option<String>,
    },
    /// Push OTA over HTTP(S).
    Http {
        /// `https://` (or `http://` when `bindings.http.allow_plaintext`).
        #[schema(example = "https://device.example/push")]
        url: String,
        #[serde(default)]
        framing: HttpFraming,
        #[serde(default)]
        hmac: Option<HmacCredentials>,
    },
    /// OBEX PUT to a relay.
    Obex {
        /// `host:port`, `[v6]:port` or a bare host (port 650).
        address: String,
        #[serde(default)]
        password: Option<String>,
    },
}

/// Parses one device binding; `at` is its JSON path for error messages.
pub fn binding(b: &BindingInput, at: &str) -> Result<DeviceBinding, Problem> {
    let field = |name: &'static str| {
        move |e: AddressError| Problem::invalid(format!("{at}.{name}"), e.to_string())
    };
    Ok(match b {
        BindingInput::Wap {
            msisdn,
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
            // Only the address the bearer uses is required; the other, when given, must be valid
            // too (it is kept, and a later change of bearer would use it).
            let msisdn = msisdn
                .as_deref()
                .map(Msisdn::parse)
                .transpose()
                .map_err(field("msisdn"))?;
            let address = address
                .as_deref()
                .map(UdpAddr::parse)
                .transpose()
                .map_err(field("address"))?;
            match bearer {
                WapBearer::Sms if msisdn.is_none() => {
                    return Err(Problem::invalid(
                        format!("{at}.msisdn"),
                        "required for the sms bearer",
                    ));
                }
                WapBearer::Udp if address.is_none() => {
                    return Err(Problem::invalid(
                        format!("{at}.address"),
                        "required for the udp bearer",
                    ));
                }
                _ => {}
            }
            DeviceBinding::Wap {
                msisdn,
                bearer: *bearer,
                address,
                secure: false,
            }
        }
        BindingInput::Sip { uri, gruu } => DeviceBinding::Sip {
            uri: SipAddress::parse(uri).map_err(field("uri"))?,
            gruu: gruu
                .as_deref()
                .map(SipAddress::parse_gruu)
                .transpose()
                .map_err(field("gruu"))?,
        },
        BindingInput::Http { url, framing, hmac } => {
            let url = HttpTarget::parse(url).map_err(field("url"))?;
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
            DeviceBinding::Http {
                url,
                framing: *framing,
                hmac: hmac.clone(),
            }
        }
        BindingInput::Obex { address, password } => DeviceBinding::Obex {
            address: ObexAddr::parse(address).map_err(field("address"))?,
            password: password.clone(),
        },
    })
}

pub fn bindings(list: &[BindingInput], at: &str) -> Result<Vec<DeviceBinding>, Problem> {
    if list.is_empty() {
        return Err(Problem::invalid(at, "at least one binding is required"));
    }
    if list.len() > 16 {
        return Err(Problem::invalid(at, "at most 16 bindings"));
    }
    list.iter()
        .enumerate()
        .map(|(i, b)| binding(b, &format!("{at}[{i}]")))
        .collect()
}

/// Refuses a binding whose literal target address the configured binding's `allow_targets`
/// does not permit (DESIGN §10.3), naming the field (`bindings[0].address`). Bindings of a kind
/// this gateway does not run are left to the capability check.
pub fn targets(
    configured: &crate::binding::Bindings,
    list: &[DeviceBinding],
    at: &str,
) -> Result<(), Problem> {
    for (i, b) in list.iter().enumerate() {
        if let Some(r) = configured
            .get(b.kind())
            .and_then(|binding| binding.refused_target(b))
        {
            return Err(Problem::invalid(format!("{at}[{i}].{}", r.field), r.reason));
        }
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
        && (k.is_empty() || k.chars().count() > MAX_KEY_LEN)
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

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Integers of a request body: JSON has one number type, and JSON Schema's `integer` admits
/// `3600.0`; serde alone would refuse it. Use with `#[serde(default, deserialize_with = …)]`.
pub mod whole {
    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64>,
    {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
            return Ok(None);
        };
        // 2^53: beyond it an f64 no longer holds every integer exactly.
        let i = match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i,
            (None, Some(f)) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => f as i64,
            _ => return Err(D::Error::custom(format!("{n} is not an integer in range"))),
        };
        T::try_from(i)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{i} is out of range")))
    }
}

/// Notification parameters of a push (DESIGN §5).
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationParams {
    /// `not-specified` (default), `background`, `informative`, `user-interaction`.
    #[schema(value_type = Option<UiMode>)]
    pub ui_mode: Option<String>,
    /// `server` (default) or `client`.
    #[schema(value_type = Option<Initiator>)]
    pub initiator: Option<String>,
    /// 1..65535; random when absent.
    #[serde(default, deserialize_with = "whole::deserialize")]
    #[schema(minimum = 1, maximum = 65535, example = 4660)]
    pub session_id: Option<u32>,
    /// Vendor-specific octets appended to the trigger, base64.
    #[serde(default)]
    pub vendor_base64: Option<String>,
    /// The 10-bit version field (default 11 = DM 1.2, protocol-facts addendum Q1).
    #[serde(default, deserialize_with = "whole::deserialize")]
    #[schema(maximum = 1023)]
    pub version: Option<u16>,
}

/// `notification.ui_mode` (OpenAPI schema only).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UiMode {
    NotSpecified,
    Background,
    Informative,
    UserInteraction,
}

/// `notification.initiator` (OpenAPI schema only).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Initiator {
    Server,
    Client,
}
