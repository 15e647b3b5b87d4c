//! `[bindings.sip]` settings and their defaults (RFC 3261 timers, the seed's feature tag).

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::sip::message;

/// One set of digest credentials, chosen by the challenge's realm. The password never reaches a
/// log (manual `Debug`).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipCredential {
    pub realm: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SipCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipCredential")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("password", &"<redacted>")
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
        }
    }
}
