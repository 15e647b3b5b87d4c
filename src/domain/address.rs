//! Typed device addresses: one parser per address type, used at every edge (API, config,
//! `dmpushd encode`, the store's JSON) so that an address is checked once, the same way
//! everywhere, and carried typed from there on.
//!
//! Each type keeps the text exactly as it was given (`as_str`, serialisation): the API shows a
//! device's addresses as they were registered, and a SIP Request-URI goes out verbatim.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::codec::sip::SipUri;

/// Why an address was refused. The text names the value and the rule it broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not an E.164 number (+ and 7 to 15 digits, not starting with 0)")]
    Msisdn(String),
    #[error("{0:?} is not a sip:, sips: or tel: URI: {1}")]
    SipUri(String, String),
    #[error("{0:?} is not a sip: or sips: URI")]
    Gruu(String),
    #[error("{0:?} is not a URL: {1}")]
    Url(String, String),
    #[error("{0:?} must be an https:// URL with a host")]
    UrlScheme(String),
    #[error("{0:?} is not an IP address with optional port (e.g. 192.0.2.7:2948)")]
    Udp(String),
    #[error("OBEX address {0:?}: {1}")]
    Obex(String, &'static str),
}

/// Implements `FromStr`, `Display`, `TryFrom<String>`, `From<T> for String` and
/// `PartialEq<&str>` for an address type with a `parse` and an `as_str`; serde goes through
/// these so stored JSON is parsed by the same rule as API input.
macro_rules! text_address {
    ($t:ty) => {
        impl FromStr for $t {
            type Err = AddressError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl TryFrom<String> for $t {
            type Error = AddressError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(a: $t) -> String {
                a.as_str().to_owned()
            }
        }
        /// A validated address is still its text: `&*addr` is the address as given.
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

/// An E.164 subscriber number (ITU-T E.164 §6: at most 15 digits; a national trunk prefix
/// `0` is not part of an international number). `+` is optional on input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Msisdn {
    raw: String,
}

impl Msisdn {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let digits = s.strip_prefix('+').unwrap_or(s);
        if (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
        {
            Ok(Self { raw: s.to_owned() })
        } else {
            Err(AddressError::Msisdn(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The number without `+`, as SMPP `destination_addr` carries it with TON international.
    pub fn digits(&self) -> &str {
        self.raw.strip_prefix('+').unwrap_or(&self.raw)
    }
}
text_address!(Msisdn);

/// A device's SIP address of record: a `sip:`/`sips:` URI (RFC 3261 §19.1) or a `tel:` URI
/// (RFC 3966) that the SIP binding maps to `sip:…;user=phone` through its configured domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SipAddress {
    Sip(SipUri),
    Tel(String),
}

impl SipAddress {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        // `get`, not `[..4]`: the fourth octet may fall inside a multi-byte character (a panic,
        // found by schemathesis, issue 13).
        if s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("tel:")) {
            return parse_tel(s).map(Self::Tel);
        }
        SipUri::parse(s)
            .map(Self::Sip)
            .map_err(|e| AddressError::SipUri(s.to_owned(), e.to_string()))
    }

    /// A GRUU (RFC 5627) is always a `sip:`/`sips:` URI: the result is a [`SipAddress::Sip`].
    pub fn parse_gruu(s: &str) -> Result<Self, AddressError> {
        match Self::parse(s) {
            Ok(u @ Self::Sip(_)) => Ok(u),
            _ => Err(AddressError::Gruu(s.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Sip(u) => &u.raw,
            Self::Tel(t) => t,
        }
    }
}
text_address!(SipAddress);

/// `tel:` global numbers (`+` and an E.164 number) or local numbers of at least 3 digits;
/// visual separators `-` `.` `(` `)` are allowed (RFC 3966 §5.1.1).
fn parse_tel(s: &str) -> Result<String, AddressError> {
    let bad = |why: &str| AddressError::SipUri(s.to_owned(), why.to_owned());
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return Err(bad("forbidden character"));
    }
    let number = s[4..].split(';').next().unwrap_or("");
    let digits: String = number
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    let global = Msisdn::parse(&digits).is_ok();
    let local = digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit());
    if global || local {
        Ok(s.to_owned())
    } else {
        Err(bad(
            "tel: number must be + and an E.164 number, or 3 or more digits",
        ))
    }
}

/// The URL of an HTTP device binding: `http(s)://` with a host. Its user-info (if any) is a
/// secret and is never shown (see `DeviceBinding::redacted`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpTarget {
    url: url::Url,
    raw: String,
}

impl HttpTarget {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let url = url::Url::parse(s).map_err(|e| AddressError::Url(s.to_owned(), e.to_string()))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(AddressError::UrlScheme(s.to_owned()));
        }
        Ok(Self {
            url,
            raw: s.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The URL without its user-info: what API responses, events and logs show (issue 12).
    pub fn redacted(&self) -> String {
        if self.url.username().is_empty() && self.url.password().is_none() {
            return self.raw.clone();
        }
        let mut u = self.url.clone();
        // Cannot fail for http(s) URLs with a host (checked by `parse`).
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.to_string()
    }
}
text_address!(HttpTarget);

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Derive-free so that user-info never reaches a log through `{:?}`.
        f.debug_tuple("HttpTarget").field(&self.redacted()).finish()
    }
}

/// A UDP bearer address (WDP over UDP, WAP-259): an IP address with an optional port; the WAP
/// binding supplies its configured default port (2948, WAP-259 §6.2) when there is none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UdpAddr {
    ip: IpAddr,
    port: Option<u16>,
    raw: String,
}

impl UdpAddr {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let (ip, port) = match s.parse::<SocketAddr>() {
            Ok(a) => (a.ip(), Some(a.port())),
            Err(_) => (
                s.parse::<IpAddr>()
                    .map_err(|_| AddressError::Udp(s.to_owned()))?,
                None,
            ),
        };
        Ok(Self {
            ip,
            port,
            raw: s.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn socket_addr(&self, default_port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(default_port))
    }
}
text_address!(UdpAddr);

/// An OBEX relay: `host:port`, `[v6]:port`, a bare host or a bare IPv6 address (port 650,
/// the IANA `obex` port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObexAddr {
    host: String,
    port: u16,
    raw: String,
}

impl ObexAddr {
    pub const DEFAULT_PORT: u16 = 650;

    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let bad = |why| AddressError::Obex(s.to_owned(), why);
        let a = s.trim();
        if a.is_empty() {
            return Err(bad("empty"));
        }
        let (host, port) = if let Some(rest) = a.strip_prefix('[') {
            let (host, tail) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if tail.is_empty() => Self::DEFAULT_PORT,
                None => return Err(bad("junk after ']'")),
            };
            (host.to_owned(), port)
        } else {
            match a.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => (a.to_owned(), Self::DEFAULT_PORT), // bare IPv6
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (a.to_owned(), Self::DEFAULT_PORT),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        Ok(Self {
            host,
            port,
            raw: s.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Host without brackets (IPv6 literals unbracketed), for resolution and TLS names.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}
text_address!(ObexAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_address_with_multibyte_start_is_an_error_not_a_panic() {
        for s in ["Déþ\u{8c}", "té", "\u{1F600}", "tel\u{e9}:1234"] {
            assert!(SipAddress::parse(s).is_err(), "{s}");
        }
        assert!(SipAddress::parse("TEL:+4930123456").is_ok());
    }

    #[test]
    fn http_target_user_info_is_redacted_in_debug_and_redacted() {
        let t = HttpTarget::parse("https://dev:hunter2@device.example/push?x=1").unwrap();
        assert_eq!(t.redacted(), "https://device.example/push?x=1");
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("dev:"), "{dbg}");
        let plain = HttpTarget::parse("https://device.example/p").unwrap();
        assert_eq!(plain.redacted(), "https://device.example/p");
    }

    #[test]
    fn msisdn_edge_cases() {
        for ok in ["+4930123456", "4930123456", "+1234567", "+123456789012345"] {
            assert!(Msisdn::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "+",
            "030123456",         // national trunk prefix: not E.164
            "+030123456",        // same with +
            "123456",            // 6 digits
            "+1234567890123456", // 16 digits
            "12ab4567",
            "++4930123456",
            " +4930123456",
        ] {
            assert!(Msisdn::parse(bad).is_err(), "{bad:?}");
        }
        let m = Msisdn::parse("+4930123456").unwrap();
        assert_eq!(m.digits(), "4930123456");
        assert_eq!(m.as_str(), "+4930123456");
        assert_eq!(Msisdn::parse("4930123456").unwrap().digits(), "4930123456");
    }

    #[test]
    fn sip_address_edge_cases() {
        let u = SipAddress::parse("sip:alice@example.com:5070;transport=tcp").unwrap();
        let SipAddress::Sip(s) = &u else { panic!() };
        assert_eq!((s.host.as_str(), s.port), ("example.com", Some(5070)));
        assert!(SipAddress::parse("sips:bob@[2001:db8::1]:5061").is_ok());
        assert!(matches!(
            SipAddress::parse("tel:+44-7700-900123").unwrap(),
            SipAddress::Tel(_)
        ));
        assert!(
            SipAddress::parse("TEL:911").is_ok(),
            "local number, 3 digits"
        );
        for bad in [
            "",
            "alice@example.com",
            "sip:",
            "sip:alice@",
            "sip:alice@example.com:0",
            "sip:alice@example.com:99999",
            "sip:al ice@example.com",
            "sip:<alice@example.com>",
            "sip:bob@[2001:db8::1",
            "tel:12",
            "tel:+0301234567",
            "tel:abc",
            "http://example.com",
        ] {
            assert!(SipAddress::parse(bad).is_err(), "{bad:?}");
        }
        // GRUU (RFC 5627): sip:/sips: with a gr parameter; tel: is not a GRUU.
        let g = SipAddress::parse_gruu("sip:+447700900123@ims.example.net;gr=urn:uuid:f81d4fae")
            .unwrap();
        let SipAddress::Sip(g) = g else { panic!() };
        assert_eq!(g.param("gr"), Some(Some("urn:uuid:f81d4fae")));
        assert!(SipAddress::parse_gruu("tel:+447700900123").is_err());
        // Kept verbatim: it is the Request-URI.
        assert_eq!(
            SipAddress::parse("sip:Alice@Example.com;Transport=TCP")
                .unwrap()
                .as_str(),
            "sip:Alice@Example.com;Transport=TCP"
        );
    }

    #[test]
    fn http_target_edge_cases() {
        assert!(HttpTarget::parse("https://dev.example.com/dm").is_ok());
        assert!(HttpTarget::parse("http://[::1]:8443/x").is_ok());
        assert!(matches!(
            HttpTarget::parse("ftp://example.com/"),
            Err(AddressError::UrlScheme(_))
        ));
        assert!(matches!(
            HttpTarget::parse("not a url"),
            Err(AddressError::Url(..))
        ));
        assert!(HttpTarget::parse("https://").is_err());
        assert!(
            HttpTarget::parse("mailto:x@example.com").is_err(),
            "no host"
        );
    }

    #[test]
    fn udp_addr_edge_cases() {
        let a = UdpAddr::parse("192.0.2.7:2948").unwrap();
        assert_eq!(a.socket_addr(9), "192.0.2.7:2948".parse().unwrap());
        let b = UdpAddr::parse("192.0.2.7").unwrap();
        assert_eq!(b.socket_addr(2948), "192.0.2.7:2948".parse().unwrap());
        let c = UdpAddr::parse("[2001:db8::7]:4000").unwrap();
        assert_eq!(c.socket_addr(1).port(), 4000);
        let d = UdpAddr::parse("2001:db8::7").unwrap();
        assert_eq!(d.socket_addr(2948).port(), 2948);
        for bad in [
            "",
            "example.com:2948",
            "192.0.2.7:",
            "192.0.2.7:70000",
            "[::1]",
        ] {
            assert!(UdpAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn obex_addr_edge_cases() {
        let a = ObexAddr::parse("relay.example.net:6500").unwrap();
        assert_eq!((a.host(), a.port()), ("relay.example.net", 6500));
        assert_eq!(ObexAddr::parse("relay").unwrap().port(), 650);
        let v6 = ObexAddr::parse("[2001:db8::5]:651").unwrap();
        assert_eq!((v6.host(), v6.port()), ("2001:db8::5", 651));
        assert_eq!(ObexAddr::parse("[::1]").unwrap().port(), 650);
        assert_eq!(
            ObexAddr::parse("2001:db8::5").unwrap().host(),
            "2001:db8::5"
        );
        for bad in [
            "",
            "  ",
            "[::1",
            "[::1]x",
            "host:port",
            ":650",
            "host:70000",
        ] {
            assert!(ObexAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_round_trips_through_the_same_parser() {
        let m: Msisdn = serde_json::from_str("\"+4930123456\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"+4930123456\"");
        assert!(serde_json::from_str::<Msisdn>("\"030123456\"").is_err());
        assert!(serde_json::from_str::<UdpAddr>("\"nope\"").is_err());
    }
}
