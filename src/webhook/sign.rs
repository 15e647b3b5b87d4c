//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>, "Signature scheme"), sans-IO.
//!
//! `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`, where the key is
//! the base64-decoded part of the tenant's secret after `whsec_`. The header may carry several
//! space-separated signatures (key rotation); a receiver accepts when any `v1` one matches.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Receivers reject timestamps further than this from their clock (the reference libraries' value),
/// against replays.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("webhook secret must start with {SECRET_PREFIX:?}")]
    Prefix,
    #[error("webhook secret: the part after {SECRET_PREFIX:?} is not base64")]
    Base64,
    #[error("webhook secret: the key is empty")]
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp {0:?} is not Unix seconds")]
    Timestamp(String),
    #[error("webhook-timestamp is {0} s away from now (more than {TOLERANCE_SECONDS})")]
    Stale(i64),
    #[error("no v1 signature in webhook-signature matches")]
    Mismatch,
}

/// A tenant's signing key, decoded once from its `whsec_…` secret. Debug never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn parse(s: &str) -> Result<Self, SignError> {
        let b64 = s.strip_prefix(SECRET_PREFIX).ok_or(SignError::Prefix)?;
        let key = B64.decode(b64.trim()).map_err(|_| SignError::Base64)?;
        if key.is_empty() {
            return Err(SignError::Empty);
        }
        Ok(Self(key))
    }

    /// The raw HMAC over `{id}.{timestamp}.{body}`.
    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length (RFC 2104 §2), so this cannot fail; the fallback keeps
        // the code free of panics.
        let Ok(mut m) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) else {
            return Vec::new();
        };
        m.update(id.as_bytes());
        m.update(b".");
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        m.finalize().into_bytes().to_vec()
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", B64.encode(self.mac(id, timestamp, body)))
    }

    /// Checks a received webhook (the simulator's receiver; tests). `now` is Unix seconds.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        body: &[u8],
        signature_header: &str,
        now: i64,
    ) -> Result<(), VerifyError> {
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::Timestamp(timestamp.to_owned()))?;
        let skew = (now - ts).abs();
        if skew > TOLERANCE_SECONDS {
            return Err(VerifyError::Stale(skew));
        }
        let expected = self.mac(id, ts, body);
        let ok = signature_header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b| B64.decode(b).ok())
            .any(|sig| constant_time_eq(&sig, &expected));
        if ok {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of docs/webhooks.md (the Standard Webhooks reference test vector).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn worked_example() {
        let s = Secret::parse(SECRET).unwrap();
        assert_eq!(s.sign(ID, TS, BODY.as_bytes()), SIGNATURE);
        s.verify(ID, &TS.to_string(), BODY.as_bytes(), SIGNATURE, TS + 10)
            .unwrap();
    }

    /// The docs show the same example, so a reader can check their own implementation against it.
    #[test]
    fn docs_show_the_worked_example() {
        let doc = include_str!("../../docs/webhooks.md");
        for needle in [SECRET, ID, &TS.to_string(), BODY, SIGNATURE] {
            assert!(doc.contains(needle), "docs/webhooks.md lacks {needle}");
        }
    }

    #[test]
    fn tampering_fails() {
        let s = Secret::parse(SECRET).unwrap();
        let ts = TS.to_string();
        let v =
            |id: &str, ts: &str, body: &str, sig: &str| s.verify(id, ts, body.as_bytes(), sig, TS);
        assert_eq!(
            v(ID, &ts, r#"{"test": 2432232315}"#, SIGNATURE),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            v("msg_other", &ts, BODY, SIGNATURE),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            v(ID, "1614265331", BODY, SIGNATURE),
            Err(VerifyError::Mismatch)
        );
        let other = Secret::parse("whsec_c2VjcmV0").unwrap();
        assert_eq!(
            other.verify(ID, &ts, BODY.as_bytes(), SIGNATURE, TS),
            Err(VerifyError::Mismatch)
        );
        // Several signatures (key rotation): any matching v1 one is enough; v2 ones are ignored.
        assert_eq!(
            v(ID, &ts, BODY, &format!("v2,xyz v1,AAAA {SIGNATURE}")),
            Ok(())
        );
    }

    #[test]
    fn stale_and_malformed_timestamps_fail() {
        let s = Secret::parse(SECRET).unwrap();
        let b = BODY.as_bytes();
        assert_eq!(
            s.verify(ID, "1614265330", b, SIGNATURE, TS + TOLERANCE_SECONDS + 1),
            Err(VerifyError::Stale(TOLERANCE_SECONDS + 1))
        );
        assert!(matches!(
            s.verify(ID, "soon", b, SIGNATURE, TS),
            Err(VerifyError::Timestamp(_))
        ));
    }

    #[test]
    fn bad_secrets() {
        assert_eq!(Secret::parse("MfKQ9r8G"), Err(SignError::Prefix));
        assert_eq!(Secret::parse("whsec_!!!"), Err(SignError::Base64));
        assert_eq!(Secret::parse("whsec_"), Err(SignError::Empty));
        assert_eq!(
            format!("{:?}", Secret::parse(SECRET).unwrap()),
            "Secret(***)"
        );
    }
}
