//! What a device is reached by: binding kinds, their typed addresses and the payload types.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::address::{HttpTarget, Msisdn, ObexAddr, SipAddress, UdpAddr};

/// The four ways of reaching a device (DESIGN §2 conformance table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BindingKind {
    Http,
    Obex,
    Sip,
    Wap,
}

impl BindingKind {
    pub const ALL: [BindingKind; 4] = [Self::Wap, Self::Sip, Self::Http, Self::Obex];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Obex => "obex",
            Self::Sip => "sip",
            Self::Wap => "wap",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for BindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WAP bearer for a `wap` device binding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WapBearer {
    #[default]
    Sms,
    Udp,
}

/// `direct` body, or Push OTA's nested `application/http` message (DESIGN §6.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HttpFraming {
    #[default]
    Direct,
    OtaHttp,
}

/// `x-syncml-hmac` credentials of an HTTP device binding. The password is a secret: it is
/// stored, never returned by the API and never logged (see the manual `Debug`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HmacCredentials {
    pub username: String,
    pub password: String,
    /// The device-issued NextNonce, base64 (decoded before hashing, protocol-facts §H.7).
    pub nonce: String,
}

impl fmt::Debug for HmacCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("nonce", &"<redacted>")
            .finish()
    }
}

/// One way of reaching one device, with its address. This is the JSON object in a device's
/// `bindings` array (DESIGN §5); the API validates it before it is stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum DeviceBinding {
    Wap {
        /// E.164 number for the SMS bearer (`+` and 7–15 digits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        msisdn: Option<Msisdn>,
        #[serde(default)]
        bearer: WapBearer,
        /// `ip:port` for the UDP bearer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        address: Option<UdpAddr>,
        /// Secure connectionless push (port 2949, WTLS). Refused: see docs/decisions.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        secure: bool,
    },
    Sip {
        /// Address of record, `sip:`, `sips:` or `tel:`.
        #[schema(value_type = String)]
        uri: SipAddress,
        /// Globally routable UA URI (RFC 5627); used as Request-URI when present.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "gruu_serde")]
        #[schema(value_type = Option<String>)]
        gruu: Option<SipAddress>,
    },
    Http {
        #[schema(value_type = String)]
        url: HttpTarget,
        #[serde(default)]
        framing: HttpFraming,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hmac: Option<HmacCredentials>,
    },
    Obex {
        /// Relay `host:port`.
        #[schema(value_type = String)]
        address: ObexAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
}

impl DeviceBinding {
    pub fn kind(&self) -> BindingKind {
        match self {
            Self::Wap { .. } => BindingKind::Wap,
            Self::Sip { .. } => BindingKind::Sip,
            Self::Http { .. } => BindingKind::Http,
            Self::Obex { .. } => BindingKind::Obex,
        }
    }

    /// What a queued push of a **registered** device keeps of this binding: no HMAC or OBEX
    /// password and no URL user-info (issue 12). The dispatcher takes them from the device at
    /// attempt time ([`Self::with_device_secrets`]), so deleting the device deletes them.
    pub fn without_device_secrets(&self) -> Self {
        let mut b = self.clone();
        match &mut b {
            Self::Http { url, hmac, .. } => {
                if let Ok(u) = HttpTarget::parse(&url.redacted()) {
                    *url = u;
                }
                if let Some(h) = hmac {
                    h.password.clear();
                }
            }
            Self::Obex { password, .. } => *password = None,
            Self::Wap { .. } | Self::Sip { .. } => {}
        }
        b
    }

    /// This binding with the secrets of the device's binding to the same target (same kind and
    /// address, URL compared without user-info); `None` when the device has no such binding any
    /// more (it was deleted or re-registered elsewhere).
    pub fn with_device_secrets(&self, device: &[DeviceBinding]) -> Option<Self> {
        let bare = self.without_device_secrets();
        device
            .iter()
            .find(|d| d.without_device_secrets() == bare)
            .cloned()
    }

    /// The same binding with every secret removed, for API responses and logs.
    pub fn redacted(&self) -> Self {
        // What a push row keeps, minus the HMAC nonce; an OBEX password shows as set but empty.
        let mut b = self.without_device_secrets();
        match (&mut b, self) {
            (Self::Http { hmac: Some(h), .. }, _) => h.nonce.clear(),
            (
                Self::Obex { password, .. },
                Self::Obex {
                    password: Some(_), ..
                },
            ) => {
                *password = Some(String::new());
            }
            _ => {}
        }
        b
    }
}

impl fmt::Debug for DeviceBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Derive-free so that a password can never reach a log through `{:?}`.
        match self.redacted() {
            Self::Wap {
                msisdn,
                bearer,
                address,
                secure,
            } => f
                .debug_struct("Wap")
                .field("msisdn", &msisdn.as_ref().map(Msisdn::as_str))
                .field("bearer", &bearer)
                .field("address", &address.as_ref().map(UdpAddr::as_str))
                .field("secure", &secure)
                .finish(),
            Self::Sip { uri, gruu } => f
                .debug_struct("Sip")
                .field("uri", &uri.as_str())
                .field("gruu", &gruu.as_deref())
                .finish(),
            Self::Http { url, framing, hmac } => f
                .debug_struct("Http")
                .field("url", &url.as_str())
                .field("framing", &framing)
                .field("hmac_user", &hmac.map(|h| h.username))
                .finish(),
            Self::Obex { address, .. } => f
                .debug_struct("Obex")
                .field("address", &address.as_str())
                .finish(),
        }
    }
}

/// Media types of a DM push payload (seed §5; WSP well-known codes in protocol-facts §A.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ContentType {
    #[serde(rename = "application/vnd.syncml.dm+xml")]
    DmXml,
    #[serde(rename = "application/vnd.syncml.dm+wbxml")]
    DmWbxml,
    #[serde(rename = "application/vnd.syncml.notification")]
    Notification,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DmXml => "application/vnd.syncml.dm+xml",
            Self::DmWbxml => "application/vnd.syncml.dm+wbxml",
            Self::Notification => "application/vnd.syncml.notification",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        // Media types are case-insensitive (RFC 9110 §8.3.1); parameters are ignored.
        let essence = s.split(';').next().unwrap_or("").trim();
        [Self::DmXml, Self::DmWbxml, Self::Notification]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(essence))
    }
}

/// A GRUU is stored as text and parsed by [`SipAddress::parse_gruu`] when read back.
mod gruu_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::address::SipAddress;

    pub fn serialize<S: Serializer>(g: &Option<SipAddress>, s: S) -> Result<S::Ok, S::Error> {
        match g {
            Some(u) => s.serialize_some(u.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SipAddress>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|g| SipAddress::parse_gruu(&g).map_err(serde::de::Error::custom))
            .transpose()
    }
}
