//! `[bindings.wap]` settings: the WSP / SMS shaping of a push and the SMSC accounts
//! ([`SmscConfig`], defined with the SMPP session that uses it).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::SmscConfig;
use crate::codec::sms::{self, RefWidth};

/// X-Wap-Application-Id form (protocol-facts §A.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppIdForm {
    /// Short integer `0x87` (2 octets; the normal form).
    #[default]
    Code,
    /// `x-wap-application:syncml.dm` as text (29 octets), for handsets that need it.
    Text,
}

/// What to do when a submit_sm was sent but its fate is unknown (no resp, connection lost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AmbiguousPolicy {
    /// Outcome::Transient with a reason starting "ambiguous": the queue retries (a duplicate
    /// SMS is possible, a lost push is not).
    #[default]
    Resend,
    /// Outcome::Permanent: never risk a duplicate.
    Fail,
}

/// `[bindings.wap]` settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WapConfig {
    /// The binding exists only when enabled (default: on; the UDP bearer needs no SMSC).
    pub enabled: bool,
    /// Maximum SMS per push; beyond it `preview` fails and `deliver` answers Unsupported.
    pub max_segments: usize,
    /// Concatenation reference width: "8" (default) or "16".
    pub concat_ref: RefWidth,
    /// Compile XML payloads to WBXML before segmentation (see [`compile_xml`](super::compile_xml)).
    pub compile_xml: bool,
    pub app_id: AppIdForm,
    /// Handset-profile extras in the WSP headers.
    pub content_length_header: bool,
    /// e.g. "1.3" → `Encoding-Version: 1.3` (`C3 93`), as Kannel adds.
    pub encoding_version: Option<String>,
    pub initiator_uri: Option<String>,
    /// Push-Flag bit mask (protocol-facts §A.6).
    pub push_flag: Option<u8>,
    /// Local address of the UDP bearer's socket, e.g. "0.0.0.0:9200" (source port 9200).
    pub udp_bind: SocketAddr,
    /// Addresses the UDP bearer may send to besides public unicast ones (CIDR list, the same
    /// semantics as `[bindings.http] allow_targets`, DESIGN §10.3), e.g. `["10.20.0.0/16"]`.
    pub allow_targets: Vec<String>,
    /// Destination port when a UDP binding address has none.
    pub udp_default_port: u16,
    pub ambiguous: AmbiguousPolicy,
    /// Upper bound on one `deliver` call (queueing for the window + all submit_sm_resp).
    pub deliver_timeout_ms: u64,
    /// Seconds a delivery receipt whose message id no push holds yet (it overtook its
    /// `submit_sm_resp`) is kept; then it is dropped and counted, and never settles a push that
    /// receives the id later (DESIGN §10.1).
    pub receipt_hold_seconds: u64,
    /// How long a push waits before it looks again when every SMSC that routes it is suspended
    /// by an operator (`/v1/admin/smscs/{name}/suspend`); such waits are not counted as attempts.
    pub suspended_retry_ms: u64,
    pub smsc: Vec<SmscConfig>,
}

impl Default for WapConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_segments: 10,
            concat_ref: RefWidth::Eight,
            compile_xml: true,
            app_id: AppIdForm::Code,
            content_length_header: false,
            encoding_version: None,
            initiator_uri: None,
            push_flag: None,
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            allow_targets: Vec::new(),
            udp_default_port: sms::PORT_WAP_PUSH,
            ambiguous: AmbiguousPolicy::Resend,
            deliver_timeout_ms: 90_000,
            receipt_hold_seconds: crate::domain::DEFAULT_RECEIPT_HOLD.as_secs(),
            suspended_retry_ms: 10_000,
            smsc: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::wap::{PortAddressing, ValidityMode};
    use serde::Deserialize;

    #[test]
    fn config_parses_from_toml_and_debug_hides_the_password() {
        let toml = r#"
[bindings.wap]
enabled = true
concat_ref = "16"
ambiguous = "fail"
udp_bind = "0.0.0.0:9200"
encoding_version = "1.3"

[[bindings.wap.smsc]]
name = "a"
host = "smsc.example.net"
password = "s3cr3t-pw"
port_addressing = "tlv"
validity = "absolute"
routes = ["+49", "33"]
throughput = 50.0
"#;
        #[derive(Deserialize)]
        struct Root {
            bindings: Bindings,
        }
        #[derive(Deserialize)]
        struct Bindings {
            wap: WapConfig,
        }
        let r: Root = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        let w = r.bindings.wap;
        assert!(w.enabled);
        assert_eq!(w.concat_ref, RefWidth::Sixteen);
        assert_eq!(w.ambiguous, AmbiguousPolicy::Fail);
        assert_eq!(w.udp_bind.port(), 9200);
        let s = &w.smsc[0];
        assert_eq!(s.port_addressing, PortAddressing::Tlv);
        assert_eq!(s.validity, ValidityMode::Absolute);
        assert_eq!(s.window, 10, "defaults fill the rest");
        assert!(
            !format!("{w:?}").contains("s3cr3t"),
            "password must not reach logs"
        );
    }
}
