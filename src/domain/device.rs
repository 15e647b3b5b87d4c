//! A registered device: its bindings in order of preference and its DM account data.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::binding::DeviceBinding;

/// DM account data used to build package #0 notifications (DESIGN §4). Secrets are write-only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DmCredentials {
    /// The DM server's ServerID (1 to 255 octets).
    #[schema(min_length = 1, example = "com.example.dms")]
    pub server_id: String,
    pub server_password: String,
    /// Server nonce as the device stores it, base64 (decoded to raw octets for the digest).
    #[serde(default)]
    pub server_nonce: String,
}

impl fmt::Debug for DmCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmCredentials")
            .field("server_id", &self.server_id)
            .field("server_password", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub tenant: String,
    pub id: String,
    pub bindings: Vec<DeviceBinding>,
    pub dm: Option<DmCredentials>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
