//! `[bindings.sip]` settings and their defaults (RFC 3261 timers, the seed's feature tag).

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::sip::message;

/// One set of digest credentials, chosen by the challenge's realm **and** by who challenges
/// (DESIGN §10.3): they answer only the configured outbound proxy or a host in `targets`, so a
/// tenant's device URI pointing at its own UAS cannot obtain a digest of the operator's account
/// by challenging with the operator's realm. The password never reaches a log (manual `Debug`).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipCredential {
    pub realm: String,
    pub username: String,
    pub password: String,
    /// Hosts contacted directly that may be answered: host names (as in the device URI, case
    /// insensitive) or CIDR ranges (matched against the address connected to). Empty: only the
    /// configured proxy.
    pub targets: Vec<String>,
}

/// A credential's `targets`, parsed.
#[derive(Clone, Debug, Default)]
pub(super) struct CredentialTargets {
    names: Vec<String>,
    nets: Vec<ipnet::IpNet>,
}

impl CredentialTargets {
    pub(super) fn parse(c: &SipCredential) -> Result<Self, String> {
        let mut t = Self::default();
        for raw in &c.targets {
            let s = raw.trim();
            if let Ok(n) = s.parse::<ipnet::IpNet>() {
                t.nets.push(n);
            } else if let Ok(ip) = s.parse::<std::net::IpAddr>() {
                t.nets.push(ip.into());
            } else if !s.is_empty()
                && s.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '-')
            {
                t.names.push(s.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "bindings.sip.credentials (realm {:?}): target {raw:?} is neither a host name nor a CIDR range",
                    c.realm
                ));
            }
        }
        Ok(t)
    }

    /// Whether a challenge from `host` (the name or literal contacted) at `addr` may be answered.
    pub(super) fn permits(&self, host: &str, addr: std::net::IpAddr) -> bool {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(addr),
            v4 => v4,
        };
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
            || self.nets.iter().any(|n| n.contains(&addr))
    }
}

impl fmt::Debug for SipCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipCredential")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("targets", &self.targets)
            .finish()
    }
}

/// `[bindings.sip]` settings. Every key is optional; the default sends directly to the host of
/// the device's URI over UDP with the RFC 3261 timers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// `false` disables the binding (`build` returns `None`).
    pub enabled: bool,
    /// Domain for `tel:` device URIs (`sip:<number>@<domain>;user=phone`, RFC 3261 §19.1.6).
    pub domain: Option<String>,
    /// Our identity (From URI). Default `sip:dmpushd@<domain>` or `sip:dmpushd@localhost`.
    pub from: Option<String>,
    /// Optional display name in From.
    pub display_name: Option<String>,
    /// Outbound proxy, e.g. `sip:proxy.example;transport=tcp`; sent as a loose `Route`.
    pub proxy: Option<String>,
    /// Default transport when the URI does not say: `udp`, `tcp` or `tls`.
    pub transport: String,
    /// PEM CA certificates trusted for TLS in addition to the bundled Mozilla roots
    /// (`crate::tls`: the same meaning in every section).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented when a TLS peer asks; goes with `client_key`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    /// Timer F; `None` means 64·T1 (RFC 3261 table 4).
    pub timer_f_ms: Option<u64>,
    /// Media feature tag for Accept-Contact (seed §5.2: `+g.oma.eventappid`).
    pub feature_tag: String,
    pub feature_value: String,
    pub feature_require: bool,
    pub feature_explicit: bool,
    /// Send Accept-Contact at all.
    pub accept_contact: bool,
    /// Follow one 3xx redirect to its first Contact.
    pub follow_redirects: bool,
    pub max_forwards: u8,
    /// Requests larger than this go over TCP (RFC 3261 §18.1.1: 1300 when the MTU is unknown).
    pub udp_max_request: usize,
    /// TCP/TLS connections kept open at most (DESIGN §10.3: pools are capped).
    pub pool_max_connections: usize,
    /// A pooled TCP/TLS connection with no transaction for this long is closed.
    pub pool_idle_seconds: u64,
    /// One request written to a TCP/TLS connection must be sent within this.
    pub write_timeout_seconds: u64,
    pub credentials: Vec<SipCredential>,
    /// Device URI hosts allowed besides public unicast addresses (CIDR list, the same semantics
    /// as `[bindings.http] allow_targets`, DESIGN §10.3). Only hosts contacted directly are
    /// checked: a configured `proxy` is the operator's and is not.
    pub allow_targets: Vec<String>,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            domain: None,
            from: None,
            display_name: None,
            proxy: None,
            transport: "udp".into(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            timer_f_ms: None,
            feature_tag: "+g.oma.eventappid".into(),
            feature_value: "syncml.dm".into(),
            feature_require: false,
            feature_explicit: false,
            accept_contact: true,
            follow_redirects: false,
            max_forwards: 70,
            udp_max_request: message::UDP_MAX_REQUEST,
            pool_max_connections: 1024,
            pool_idle_seconds: 60,
            write_timeout_seconds: 10,
            credentials: Vec::new(),
            allow_targets: Vec::new(),
        }
    }
}
