//! HTTP Digest for SIP (RFC 3261 §22.4 using RFC 2617): challenge parsing and the
//! `Authorization` / `Proxy-Authorization` value. MD5 and MD5-sess, with or without `qop=auth`
//! (`auth-int` over the body too). The cnonce is a parameter so the computation is deterministic.

use std::fmt::Write as _;

use md5::{Digest, Md5};

/// A parsed `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// As sent (`MD5` when absent, RFC 2617 §3.2.1).
    pub algorithm: String,
    /// Offered qop values (empty: RFC 2069 compatibility mode).
    pub qop: Vec<String>,
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("challenge scheme is not Digest (byte {offset})")]
    Scheme { offset: usize },
    #[error("malformed challenge parameter at byte {offset}")]
    Syntax { offset: usize },
    #[error("challenge lacks {0}")]
    Missing(&'static str),
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    #[error("unsupported qop {0:?} (only auth and auth-int)")]
    Qop(String),
}

impl AuthError {
    /// All of these are permanent: retrying the same challenge cannot succeed.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Parses `Digest realm="…", nonce="…", …`.
pub fn parse_challenge(value: &str) -> Result<Challenge, AuthError> {
    let v = value.trim_start();
    let lead = value.len() - v.len();
    let scheme_end = v.find([' ', '\t']).unwrap_or(v.len());
    if !v[..scheme_end].eq_ignore_ascii_case("Digest") {
        return Err(AuthError::Scheme { offset: lead });
    }
    let params = parse_params(&v[scheme_end..], lead + scheme_end)?;
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    Ok(Challenge {
        realm: get("realm").ok_or(AuthError::Missing("realm"))?,
        nonce: get("nonce").ok_or(AuthError::Missing("nonce"))?,
        opaque: get("opaque"),
        algorithm: get("algorithm").unwrap_or_else(|| "MD5".into()),
        qop: get("qop")
            .map(|q| {
                q.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// `name=token` / `name="quoted"` pairs separated by commas (RFC 2617 §1.2 auth-param).
fn parse_params(s: &str, base: usize) -> Result<Vec<(String, String)>, AuthError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\r' | b'\n' | b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let name = &s[start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if name.is_empty() || i >= b.len() || b[i] != b'=' {
            return Err(AuthError::Syntax { offset: base + i });
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(AuthError::Syntax { offset: base + i }),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let c = *b.get(i + 1).ok_or(AuthError::Syntax { offset: base + i })?;
                        value.push(c);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
                value.push(b[i]);
                i += 1;
            }
        }
        out.push((
            name.to_string(),
            String::from_utf8_lossy(&value).into_owned(),
        ));
    }
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Inputs of one digest response.
pub struct DigestInput<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    /// Needed for `qop=auth-int` only.
    pub body: &'a [u8],
    pub cnonce: &'a str,
    pub nc: u32,
}

/// The response digest and the chosen qop (RFC 2617 §3.2.2.1).
pub fn response(
    ch: &Challenge,
    inp: &DigestInput<'_>,
) -> Result<(String, Option<String>), AuthError> {
    let sess = if ch.algorithm.eq_ignore_ascii_case("MD5") {
        false
    } else if ch.algorithm.eq_ignore_ascii_case("MD5-sess") {
        true
    } else {
        return Err(AuthError::Algorithm(ch.algorithm.clone()));
    };
    // Prefer auth over auth-int (no body hashing needed); both are supported.
    let qop = if ch.qop.is_empty() {
        None
    } else if ch.qop.iter().any(|q| q == "auth") {
        Some("auth")
    } else if ch.qop.iter().any(|q| q == "auth-int") {
        Some("auth-int")
    } else {
        return Err(AuthError::Qop(ch.qop.join(",")));
    };
    let mut ha1 = md5_hex(&[
        inp.username.as_bytes(),
        ch.realm.as_bytes(),
        inp.password.as_bytes(),
    ]);
    if sess {
        ha1 = md5_hex(&[ha1.as_bytes(), ch.nonce.as_bytes(), inp.cnonce.as_bytes()]);
    }
    let ha2 = if qop == Some("auth-int") {
        let hb = md5_hex(&[inp.body]);
        md5_hex(&[inp.method.as_bytes(), inp.uri.as_bytes(), hb.as_bytes()])
    } else {
        md5_hex(&[inp.method.as_bytes(), inp.uri.as_bytes()])
    };
    let resp = match qop {
        Some(q) => {
            let nc = format!("{:08x}", inp.nc);
            md5_hex(&[
                ha1.as_bytes(),
                ch.nonce.as_bytes(),
                nc.as_bytes(),
                inp.cnonce.as_bytes(),
                q.as_bytes(),
                ha2.as_bytes(),
            ])
        }
        None => md5_hex(&[ha1.as_bytes(), ch.nonce.as_bytes(), ha2.as_bytes()]),
    };
    Ok((resp, qop.map(str::to_string)))
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The full credentials value for `Authorization` / `Proxy-Authorization` (RFC 3261 §22.4).
pub fn authorization(ch: &Challenge, inp: &DigestInput<'_>) -> Result<String, AuthError> {
    let (resp, qop) = response(ch, inp)?;
    let mut s = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{resp}\", algorithm={}",
        quote(inp.username),
        quote(&ch.realm),
        quote(&ch.nonce),
        quote(inp.uri),
        ch.algorithm
    );
    if let Some(q) = qop {
        let _ = write!(
            s,
            ", qop={q}, nc={:08x}, cnonce=\"{}\"",
            inp.nc,
            quote(inp.cnonce)
        );
    }
    if let Some(o) = &ch.opaque {
        let _ = write!(s, ", opaque=\"{}\"", quote(o));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5 worked example (qop=auth): response 6629fae49393a05397450978507c4ef1.
    #[test]
    fn rfc2617_example() {
        let ch = parse_challenge(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(ch.qop, vec!["auth", "auth-int"]);
        let inp = DigestInput {
            username: "Mufasa",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            body: b"",
            cnonce: "0a4f113b",
            nc: 1,
        };
        let (r, q) = response(&ch, &inp).unwrap();
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
        assert_eq!(q.as_deref(), Some("auth"));
        let h = authorization(&ch, &inp).unwrap();
        assert!(h.contains("qop=auth, nc=00000001, cnonce=\"0a4f113b\""));
        assert!(h.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    /// RFC 2069 mode (no qop): MD5(HA1:nonce:HA2). The SIPp interop test (tests/it/sip_sipp.rs)
    /// checks the same computation against an independent verifier.
    #[test]
    fn no_qop() {
        let ch = parse_challenge("Digest realm=\"dm.test\", nonce=\"abc\", algorithm=MD5").unwrap();
        let inp = DigestInput {
            username: "dmuser",
            password: "s3cret",
            method: "MESSAGE",
            uri: "sip:device@127.0.0.1",
            body: b"",
            cnonce: "x",
            nc: 1,
        };
        let ha1 = md5_hex(&[b"dmuser", b"dm.test", b"s3cret"]);
        let ha2 = md5_hex(&[b"MESSAGE", b"sip:device@127.0.0.1"]);
        let want = md5_hex(&[ha1.as_bytes(), b"abc", ha2.as_bytes()]);
        assert_eq!(response(&ch, &inp).unwrap(), (want, None));
        assert_eq!(
            md5_hex(&[b"dmuser", b"dm.test", b"s3cret"]),
            hex::encode(Md5::digest(b"dmuser:dm.test:s3cret"))
        );
    }

    #[test]
    fn rejects_what_it_cannot_answer() {
        assert_eq!(
            parse_challenge("Basic realm=\"x\""),
            Err(AuthError::Scheme { offset: 0 })
        );
        assert_eq!(
            parse_challenge("Digest nonce=\"n\""),
            Err(AuthError::Missing("realm"))
        );
        assert!(matches!(
            parse_challenge("Digest realm=\"unterminated"),
            Err(AuthError::Syntax { .. })
        ));
        let ch = parse_challenge("Digest realm=r, nonce=n, algorithm=SHA-256").unwrap();
        let inp = DigestInput {
            username: "u",
            password: "p",
            method: "MESSAGE",
            uri: "sip:x",
            body: b"",
            cnonce: "c",
            nc: 1,
        };
        assert_eq!(
            response(&ch, &inp),
            Err(AuthError::Algorithm("SHA-256".into()))
        );
    }

    proptest::proptest! {
        #[test]
        fn challenge_parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse_challenge(&s);
            let _ = parse_challenge(&format!("Digest {s}"));
        }
    }
}
