//! OMA DM Notification, General Package #0 ("NIA"): build, parse and digest verification.
//!
//! Layout (OMA-TS-DM_Notification-V1_2_1 §6.2; protocol-facts §D.1), big-endian:
//!
//! ```text
//! digest[16] | version:10 ui-mode:2 initiator:1 future-use:27 | sessionid:16 | len:8 | server-id[len] | vendor…
//! ```
//!
//! The digest (§6.2.2.1; facts §D.3) is
//! `MD5( B64(MD5(server-id ":" password)) ":" nonce ":" B64(MD5(trigger)) )` where `trigger` is every octet
//! after the digest and `nonce` is the raw server-nonce octets (base64-decoded NextNonce). The
//! resynchronisation nonce is four zero octets (facts addendum Q1). Version defaults to 11 ("1.1"), the only
//! value the DM 1.2.x text and the one validating client (libdmclient) accept (addendum Q1).

use crate::codec::hmac::{b64_md5, b64_md5_pair};
use md5::{Digest, Md5};

/// Length of the MD5 digest that opens the package (§6.2.2.1).
pub const DIGEST_LEN: usize = 16;
/// Octets of the fixed trigger header: 40 bits of version/ui/initiator/future-use, 16 bits session id,
/// 8 bits length-identifier (§6.2.2.6–§6.2.2.11).
pub const TRIGGER_HDR_LEN: usize = 8;
/// Smallest well-formed package #0: digest plus fixed header with an empty server id.
pub const MIN_LEN: usize = DIGEST_LEN + TRIGGER_HDR_LEN;
/// `<version>` value mandated by DM 1.2.1 Notification §6.2.2.6 ("0000001011").
pub const DEFAULT_VERSION: u16 = 11;
/// The version field is 10 bits wide (§6.2.2.6).
pub const MAX_VERSION: u16 = 0x3FF;
/// Nonce clients fall back to when the stored nonce fails: 32-bit zero (DM 1.2.1 §6.1; addendum Q1).
pub const RESYNC_NONCE: [u8; 4] = [0, 0, 0, 0];

/// `<ui-mode>` (§6.2.2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UiMode {
    NotSpecified,
    Background,
    Informative,
    UserInteraction,
}

impl UiMode {
    /// The two-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            UiMode::NotSpecified => 0,
            UiMode::Background => 1,
            UiMode::Informative => 2,
            UiMode::UserInteraction => 3,
        }
    }

    /// From the two-bit wire value (only the low two bits are read).
    pub fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => UiMode::NotSpecified,
            1 => UiMode::Background,
            2 => UiMode::Informative,
            _ => UiMode::UserInteraction,
        }
    }
}

/// `<initiator>` (§6.2.2.8): 0 client/user, 1 server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    Client,
    Server,
}

/// The trigger: everything of package #0 except the digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub version: u16,
    pub ui_mode: UiMode,
    pub initiator: Initiator,
    pub session_id: u16,
    pub server_id: String,
    pub vendor: Vec<u8>,
}

/// A parsed package #0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package0 {
    pub digest: [u8; DIGEST_LEN],
    pub trigger: Trigger,
}

/// Result of [`verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// The digest matches with the given nonce.
    Ok,
    /// The digest matches only with the resynchronisation nonce (four zero octets).
    OkResyncNonce,
    /// The digest matches neither (or the package does not parse, or names another server).
    Mismatch,
}

/// Errors building or parsing package #0. All are permanent: retrying the same input cannot succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("package #0: version {0} does not fit the 10-bit field (max 1023)")]
    VersionTooLarge(u16),
    #[error("package #0: server identifier is {0} octets; the length field allows at most 255")]
    ServerIdTooLong(usize),
    #[error("package #0: truncated: {len} octets, need at least {need} (at offset {offset})")]
    Truncated {
        len: usize,
        need: usize,
        offset: usize,
    },
    #[error("package #0: server identifier at offset {offset} is not UTF-8")]
    ServerIdNotUtf8 { offset: usize },
}

impl NotificationError {
    /// Package #0 errors are never transient.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Serialises the trigger (header, server id, vendor body) — the octets the digest covers.
pub fn encode_trigger(t: &Trigger) -> Result<Vec<u8>, NotificationError> {
    if t.version > MAX_VERSION {
        return Err(NotificationError::VersionTooLarge(t.version));
    }
    let sid = t.server_id.as_bytes();
    let sid_len =
        u8::try_from(sid.len()).map_err(|_| NotificationError::ServerIdTooLong(sid.len()))?;
    let mut out = Vec::with_capacity(TRIGGER_HDR_LEN + sid.len() + t.vendor.len());
    let init = match t.initiator {
        Initiator::Client => 0u8,
        Initiator::Server => 1u8,
    };
    // version bits 39..30, ui-mode 29..28, initiator 27, future-use 26..0 (= 0) of the 40-bit word.
    out.push((t.version >> 2) as u8);
    out.push((((t.version & 3) as u8) << 6) | (t.ui_mode.bits() << 4) | (init << 3));
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&t.session_id.to_be_bytes());
    out.push(sid_len);
    out.extend_from_slice(sid);
    out.extend_from_slice(&t.vendor);
    Ok(out)
}

/// The §6.2.2.1 digest over already-encoded trigger octets.
pub fn digest(server_id: &[u8], server_password: &[u8], nonce: &[u8], trigger: &[u8]) -> [u8; 16] {
    let cred = b64_md5_pair(server_id, server_password);
    let th = b64_md5(trigger);
    let mut h = Md5::new();
    h.update(cred.as_bytes());
    h.update(b":");
    h.update(nonce);
    h.update(b":");
    h.update(th.as_bytes());
    h.finalize().into()
}

/// Builds package #0: digest ‖ trigger.
pub fn build(
    trigger: &Trigger,
    server_password: &[u8],
    nonce: &[u8],
) -> Result<Vec<u8>, NotificationError> {
    let trig = encode_trigger(trigger)?;
    let d = digest(trigger.server_id.as_bytes(), server_password, nonce, &trig);
    let mut out = Vec::with_capacity(DIGEST_LEN + trig.len());
    out.extend_from_slice(&d);
    out.extend_from_slice(&trig);
    Ok(out)
}

/// Parses package #0. Future-use bits are ignored (receivers must not reject on them). Never panics.
pub fn parse(bytes: &[u8]) -> Result<Package0, NotificationError> {
    if bytes.len() < MIN_LEN {
        return Err(NotificationError::Truncated {
            len: bytes.len(),
            need: MIN_LEN,
            offset: bytes.len(),
        });
    }
    let mut digest = [0u8; DIGEST_LEN];
    digest.copy_from_slice(&bytes[..DIGEST_LEN]);
    let h = &bytes[DIGEST_LEN..MIN_LEN];
    let version = (u16::from(h[0]) << 2) | u16::from(h[1] >> 6);
    let ui_mode = UiMode::from_bits(h[1] >> 4);
    let initiator = if h[1] & 0x08 != 0 {
        Initiator::Server
    } else {
        Initiator::Client
    };
    let session_id = u16::from_be_bytes([h[5], h[6]]);
    let sid_len = usize::from(h[7]);
    let sid_end = MIN_LEN + sid_len;
    if bytes.len() < sid_end {
        return Err(NotificationError::Truncated {
            len: bytes.len(),
            need: sid_end,
            offset: bytes.len(),
        });
    }
    let server_id = std::str::from_utf8(&bytes[MIN_LEN..sid_end])
        .map_err(|e| NotificationError::ServerIdNotUtf8 {
            offset: MIN_LEN + e.valid_up_to(),
        })?
        .to_owned();
    Ok(Package0 {
        digest,
        trigger: Trigger {
            version,
            ui_mode,
            initiator,
            session_id,
            server_id,
            vendor: bytes[sid_end..].to_vec(),
        },
    })
}

/// Verifies a received package #0 as a client would (used by the device simulator): the server id
/// in the package must equal `server_id`, and the digest must match with `nonce` or, failing that,
/// with the resynchronisation nonce. Comparison of the digest is constant-time.
pub fn verify(bytes: &[u8], server_id: &str, server_password: &[u8], nonce: &[u8]) -> Verification {
    let Ok(p) = parse(bytes) else {
        return Verification::Mismatch;
    };
    if p.trigger.server_id != server_id {
        return Verification::Mismatch;
    }
    let trig = &bytes[DIGEST_LEN..];
    let sid = server_id.as_bytes();
    if ct_eq(&digest(sid, server_password, nonce, trig), &p.digest) {
        Verification::Ok
    } else if ct_eq(
        &digest(sid, server_password, &RESYNC_NONCE, trig),
        &p.digest,
    ) {
        Verification::OkResyncNonce
    } else {
        Verification::Mismatch
    }
}

fn ct_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d8_trigger() -> Trigger {
        Trigger {
            version: 12,
            ui_mode: UiMode::Informative,
            initiator: Initiator::Server,
            session_id: 0x1234,
            server_id: "com.example.dms".into(),
            vendor: vec![],
        }
    }

    #[test]
    fn d8_first_worked_example() {
        let m = build(&d8_trigger(), b"srvpass", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(
            hex::encode_upper(&m),
            "D3290F1CBC08EA0E45867199DB5CFCDF\
             032800000012340F636F6D2E6578616D706C652E646D73"
        );
        assert_eq!(parse(&m).unwrap().trigger, d8_trigger());
    }

    #[test]
    fn d8_second_worked_example_scts() {
        let t = Trigger {
            version: 11,
            ui_mode: UiMode::NotSpecified,
            initiator: Initiator::Server,
            session_id: 12345,
            server_id: "Scts".into(),
            vendor: vec![],
        };
        let m = build(&t, b"SimpleClient", &[0x00, 0xE5, 0x6E, 0x00]).unwrap();
        assert_eq!(
            hex::encode_upper(&m),
            "89083F28A0887031B9025B6934C6700D02C800000030390453637473"
        );
    }

    #[test]
    fn errors() {
        let mut t = d8_trigger();
        t.version = 1024;
        assert_eq!(
            build(&t, b"", b""),
            Err(NotificationError::VersionTooLarge(1024))
        );
        t.version = 11;
        t.server_id = "x".repeat(256);
        assert_eq!(
            build(&t, b"", b""),
            Err(NotificationError::ServerIdTooLong(256))
        );
        assert!(matches!(
            parse(&[0; 23]),
            Err(NotificationError::Truncated { need: 24, .. })
        ));
        let mut m = build(&d8_trigger(), b"p", b"n").unwrap();
        m.truncate(30);
        assert!(matches!(
            parse(&m),
            Err(NotificationError::Truncated { need: 39, .. })
        ));
    }

    #[test]
    fn verify_variants() {
        let t = d8_trigger();
        let m = build(&t, b"pw", b"nonce").unwrap();
        assert_eq!(
            verify(&m, "com.example.dms", b"pw", b"nonce"),
            Verification::Ok
        );
        assert_eq!(
            verify(&m, "com.example.dms", b"px", b"nonce"),
            Verification::Mismatch
        );
        assert_eq!(
            verify(&m, "com.example.dms", b"pw", b"nonc"),
            Verification::Mismatch
        );
        assert_eq!(verify(&m, "other", b"pw", b"nonce"), Verification::Mismatch);
        let r = build(&t, b"pw", &RESYNC_NONCE).unwrap();
        assert_eq!(
            verify(&r, "com.example.dms", b"pw", b"nonce"),
            Verification::OkResyncNonce
        );
    }
}
