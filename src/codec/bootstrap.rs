//! DM bootstrap over WAP push: the `SEC` and `MAC` Content-Type parameters (OMA ProvBoot §5 as used
//! by the DM profile; protocol-facts §A.8).
//!
//! Rules (settled against three independent implementations — Funambol DM server
//! `NotificationEngineImpl.computeMac/getKeyFromIMSI`, SharpSMS `WapPushMessage.GetSecurityKey/ImsitoKey`
//! and `Wsp.WriteHeaderSecurity`, Firefox OS Gaia `ProvisioningAuthentication.pa_sign`; see
//! `docs/decisions/codec.md`):
//! * `MAC = upper-case hex( HMAC-SHA1(key, WBXML document) )` — 40 characters, sent as a WSP
//!   text-string parameter value (token 0x12).
//! * NETWPIN: key = IMSI in semi-octet form: prefix `9` if the digit count is odd, else prefix `1` and
//!   suffix `F`; then swap the two nibbles of every octet (GSM 11.11 EF_IMSI coding without the length
//!   octet).
//! * USERPIN: key = the PIN's octets. USERNETWPIN: key = IMSI semi-octets ‖ PIN octets.
//! * USERPINMAC: not implemented by any of the sources (SharpSMS and Gaia refuse it); refused here too.

use hmac::{KeyInit, Mac};
use sha1::Sha1;

/// `SEC` parameter values (WSP 1.4 parameter token 0x11; Wireshark `vals_wsp_parameter_sec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sec {
    NetwPin,
    UserPin,
    UserNetwPin,
    UserPinMac,
}

impl Sec {
    /// The short-integer value carried in the SEC parameter.
    pub fn code(self) -> u8 {
        match self {
            Sec::NetwPin => 0x00,
            Sec::UserPin => 0x01,
            Sec::UserNetwPin => 0x02,
            Sec::UserPinMac => 0x03,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0x00 => Some(Sec::NetwPin),
            0x01 => Some(Sec::UserPin),
            0x02 => Some(Sec::UserNetwPin),
            0x03 => Some(Sec::UserPinMac),
            _ => None,
        }
    }

    /// Upper-case name as used in configuration and the API (`NETWPIN` …).
    pub fn name(self) -> &'static str {
        match self {
            Sec::NetwPin => "NETWPIN",
            Sec::UserPin => "USERPIN",
            Sec::UserNetwPin => "USERNETWPIN",
            Sec::UserPinMac => "USERPINMAC",
        }
    }
}

impl std::str::FromStr for Sec {
    type Err = BootstrapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "NETWPIN" => Ok(Sec::NetwPin),
            "USERPIN" => Ok(Sec::UserPin),
            "USERNETWPIN" => Ok(Sec::UserNetwPin),
            "USERPINMAC" => Ok(Sec::UserPinMac),
            _ => Err(BootstrapError::UnknownSec(s.to_owned())),
        }
    }
}

/// The secrets a MAC is keyed with. `Debug` never shows them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyMaterial {
    /// IMSI digits (whitespace around is ignored), for NETWPIN / USERNETWPIN.
    pub imsi: Option<String>,
    /// User PIN, for USERPIN / USERNETWPIN.
    pub user_pin: Option<String>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("imsi", &self.imsi.as_ref().map(|_| "<redacted>"))
            .field("user_pin", &self.user_pin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Errors computing SEC/MAC. All permanent (configuration or request data is wrong).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    #[error("bootstrap: unknown SEC method {0:?} (NETWPIN, USERPIN, USERNETWPIN, USERPINMAC)")]
    UnknownSec(String),
    #[error("bootstrap: {0} needs the IMSI")]
    MissingImsi(&'static str),
    #[error("bootstrap: {0} needs the user PIN")]
    MissingPin(&'static str),
    #[error("bootstrap: IMSI has a non-digit at position {position}")]
    ImsiNotDigits { position: usize },
    #[error("bootstrap: IMSI is empty or longer than 15 digits ({0} digits)")]
    ImsiLength(usize),
    #[error(
        "bootstrap: USERPINMAC is not supported (no independent implementation to settle it against)"
    )]
    UserPinMacUnsupported,
}

impl BootstrapError {
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// IMSI → semi-octet key (see module doc). `"310260801674539"` → `39 01 62 80 10 76 54 93`.
pub fn imsi_semi_octets(imsi: &str) -> Result<Vec<u8>, BootstrapError> {
    let digits = imsi.trim();
    // E.212: an IMSI has at most 15 digits.
    if digits.is_empty() || digits.len() > 15 {
        return Err(BootstrapError::ImsiLength(digits.len()));
    }
    let mut nibbles = Vec::with_capacity(digits.len() + 2);
    // Parity/type nibble: 9 = odd count (type 1 "IMSI" | odd bit 8), 1 = even count, then F filler.
    nibbles.push(if digits.len() % 2 == 1 { 9 } else { 1 });
    for (i, c) in digits.bytes().enumerate() {
        if !c.is_ascii_digit() {
            return Err(BootstrapError::ImsiNotDigits { position: i });
        }
        nibbles.push(c - b'0');
    }
    if nibbles.len() % 2 == 1 {
        nibbles.push(0x0F);
    }
    Ok(nibbles.chunks(2).map(|p| (p[1] << 4) | p[0]).collect())
}

/// The HMAC key for `sec`.
pub fn key(sec: Sec, km: &KeyMaterial) -> Result<Vec<u8>, BootstrapError> {
    let imsi = |m| km.imsi.as_deref().ok_or(BootstrapError::MissingImsi(m));
    let pin = |m| km.user_pin.as_deref().ok_or(BootstrapError::MissingPin(m));
    match sec {
        Sec::NetwPin => imsi_semi_octets(imsi("NETWPIN")?),
        Sec::UserPin => Ok(pin("USERPIN")?.as_bytes().to_vec()),
        Sec::UserNetwPin => {
            let mut k = imsi_semi_octets(imsi("USERNETWPIN")?)?;
            k.extend_from_slice(pin("USERNETWPIN")?.as_bytes());
            Ok(k)
        }
        Sec::UserPinMac => Err(BootstrapError::UserPinMacUnsupported),
    }
}

/// The `MAC` parameter value: 40 upper-case hex characters of HMAC-SHA1(key, `wbxml`).
pub fn mac(sec: Sec, key_material: &KeyMaterial, wbxml: &[u8]) -> Result<String, BootstrapError> {
    let k = key(sec, key_material)?;
    Ok(hex::encode_upper(hmac_sha1(&k, wbxml)))
}

/// Checks a received MAC (as a device would). Case-insensitive hex; constant-time compare.
pub fn verify(
    sec: Sec,
    key_material: &KeyMaterial,
    wbxml: &[u8],
    mac_hex: &str,
) -> Result<bool, BootstrapError> {
    let want = mac(sec, key_material, wbxml)?;
    let got = mac_hex.trim().to_ascii_uppercase();
    Ok(want.len() == got.len()
        && want
            .bytes()
            .zip(got.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0)
}

/// What a bootstrap push carries next to its WBXML body: the `SEC` method and the `MAC` computed
/// at submit time. The IMSI and PIN the MAC was keyed with are never stored (DESIGN §10.4:
/// write-only); only this derived pair travels with the push. `Debug` hides the MAC too: with a
/// 4-digit PIN or a known MCC/MNC it would let anyone who reads logs search the key offline.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    pub sec: Sec,
    /// 40 upper-case hex characters (HMAC-SHA1 of the WBXML body as sent).
    pub mac: String,
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signature")
            .field("sec", &self.sec.name())
            .field("mac", &"<redacted>")
            .finish()
    }
}

impl Signature {
    /// Signs `wbxml` (the body exactly as it will be sent).
    pub fn sign(
        sec: Sec,
        key_material: &KeyMaterial,
        wbxml: &[u8],
    ) -> Result<Self, BootstrapError> {
        Ok(Self {
            sec,
            mac: mac(sec, key_material, wbxml)?,
        })
    }

    /// Storage form: `NETWPIN:<MAC>` (the `pushes.bootstrap` column).
    pub fn to_stored(&self) -> String {
        format!("{}:{}", self.sec.name(), self.mac)
    }

    /// Parses [`Signature::to_stored`]; `None` if the text is not one.
    pub fn from_stored(s: &str) -> Option<Self> {
        let (sec, mac) = s.split_once(':')?;
        let sec: Sec = sec.parse().ok()?;
        (mac.len() == 40 && mac.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self {
            sec,
            mac: mac.to_ascii_uppercase(),
        })
    }
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    // HMAC accepts keys of any length (RFC 2104 §2), so this cannot fail.
    let mut m = <hmac::Hmac<Sha1> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(data);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semi_octets_match_funambol_vector() {
        // Funambol TestMac: IMSI 310260801674539 → "3901628010765493".
        assert_eq!(
            hex::encode_upper(imsi_semi_octets("310260801674539").unwrap()),
            "3901628010765493"
        );
        // Even count: "1" prefix and "F" suffix: "11234F" → pairs 11 23 4F → swapped 11 32 F4.
        assert_eq!(
            hex::encode_upper(imsi_semi_octets(" 1234 ").unwrap()),
            "1132F4"
        );
        assert_eq!(
            imsi_semi_octets("12a4"),
            Err(BootstrapError::ImsiNotDigits { position: 2 })
        );
        assert_eq!(imsi_semi_octets(""), Err(BootstrapError::ImsiLength(0)));
        assert_eq!(
            imsi_semi_octets(&"1".repeat(16)),
            Err(BootstrapError::ImsiLength(16))
        );
    }

    #[test]
    fn rfc2202_hmac_sha1_vector() {
        // RFC 2202 test case 2: key "Jefe".
        assert_eq!(
            hex::encode(hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        let km = KeyMaterial {
            imsi: None,
            user_pin: Some("Jefe".into()),
        };
        assert_eq!(
            mac(Sec::UserPin, &km, b"what do ya want for nothing?").unwrap(),
            "EFFCDF6AE5EB2FA2D27416D5F184DF9C259A7C79"
        );
    }

    #[test]
    fn keys_per_method_and_errors() {
        let km = KeyMaterial {
            imsi: Some("310260801674539".into()),
            user_pin: Some("1234".into()),
        };
        assert_eq!(
            hex::encode_upper(key(Sec::NetwPin, &km).unwrap()),
            "3901628010765493"
        );
        assert_eq!(key(Sec::UserPin, &km).unwrap(), b"1234");
        assert_eq!(
            hex::encode_upper(key(Sec::UserNetwPin, &km).unwrap()),
            "390162801076549331323334"
        );
        assert_eq!(
            key(Sec::UserPinMac, &km),
            Err(BootstrapError::UserPinMacUnsupported)
        );
        let none = KeyMaterial::default();
        assert_eq!(
            key(Sec::NetwPin, &none),
            Err(BootstrapError::MissingImsi("NETWPIN"))
        );
        assert_eq!(
            key(Sec::UserPin, &none),
            Err(BootstrapError::MissingPin("USERPIN"))
        );
        let m = mac(Sec::NetwPin, &km, b"doc").unwrap();
        assert_eq!(m.len(), 40);
        assert!(verify(Sec::NetwPin, &km, b"doc", &m.to_lowercase()).unwrap());
        assert!(!verify(Sec::NetwPin, &km, b"doC", &m).unwrap());
        assert!(!format!("{km:?}").contains("1234"));
        assert_eq!("userpin".parse::<Sec>().unwrap(), Sec::UserPin);
    }

    #[test]
    fn signature_storage_round_trip_and_redaction() {
        let km = KeyMaterial {
            imsi: None,
            user_pin: Some("1234".into()),
        };
        let s = Signature::sign(Sec::UserPin, &km, b"doc").unwrap();
        assert_eq!(Signature::from_stored(&s.to_stored()), Some(s.clone()));
        assert!(s.to_stored().starts_with("USERPIN:"));
        assert!(!format!("{s:?}").contains(&s.mac));
        assert_eq!(Signature::from_stored("USERPIN:zz"), None);
        assert_eq!(
            Signature::from_stored(&format!("NOPE:{}", "A".repeat(40))),
            None
        );
    }
}
