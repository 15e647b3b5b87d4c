//! Webhooks (issue 11, DESIGN §10.2): signed result notifications, at least once.
//!
//! * [`sign`] — Standard Webhooks signatures (sans-IO);
//! * [`sender`] — the per-replica task that delivers the outbox (src/store/outbox.rs);
//! * [`WebhooksConfig`] — `[webhooks]`; [`Targets`] — per-tenant targets and secrets, resolved
//!   at submit by the API and looked up by the sender.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::net::targets::{TargetPolicy, parse_allow_list};

pub mod sender;
pub mod sign;

pub use sign::Secret;

/// `[webhooks]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Whole-request timeout of one attempt.
    pub timeout_seconds: u64,
    /// An event not delivered this long after its state change is given up.
    pub max_age_seconds: u64,
    /// CIDR ranges allowed besides public addresses (as `[bindings.http]`): loopback and private
    /// ranges are refused unless listed here, e.g. `["127.0.0.0/8"]`.
    pub allow_targets: Vec<String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: 10,
            max_age_seconds: 86_400,
            allow_targets: Vec::new(),
        }
    }
}

impl WebhooksConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.policy().map(|_| ())
    }

    pub fn policy(&self) -> Result<TargetPolicy, String> {
        Ok(TargetPolicy::new(parse_allow_list(
            &self.allow_targets,
            "webhooks",
        )?))
    }
}

/// One tenant's webhook settings.
#[derive(Clone, Debug)]
pub struct TenantWebhook {
    pub url: Option<String>,
    pub secret: Option<Secret>,
}

/// Tenants' webhook targets and secrets, and the target policy (`[webhooks] allow_targets`).
#[derive(Clone, Debug)]
pub struct Targets {
    tenants: HashMap<String, TenantWebhook>,
    pub policy: TargetPolicy,
}

/// Why a push's webhook target is refused at submit (the API answers 422 naming `callback_url`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the tenant has no webhook_secret to sign webhooks with")]
    NoSecret,
    #[error("{0:?} is not an http(s) URL")]
    NotHttp(String),
    #[error("target {0} is outside webhooks.allow_targets")]
    Refused(std::net::IpAddr),
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            policy: TargetPolicy::new(Vec::new()),
        }
    }
}

impl Targets {
    pub fn new(policy: TargetPolicy) -> Self {
        Self {
            tenants: HashMap::new(),
            policy,
        }
    }

    pub fn add(&mut self, tenant: &str, webhook: TenantWebhook) {
        self.tenants.insert(tenant.to_owned(), webhook);
    }

    pub fn secret(&self, tenant: &str) -> Option<&Secret> {
        self.tenants.get(tenant)?.secret.as_ref()
    }

    /// The target a push's webhooks go to: its `callback_url`, else the tenant's `webhook_url`
    /// (`None`: no webhooks). A `callback_url` needs a tenant secret; a literal address must
    /// pass `allow_targets` (names are checked after DNS at send time).
    pub fn resolve(
        &self,
        tenant: &str,
        callback_url: Option<&str>,
    ) -> Result<Option<String>, TargetError> {
        let t = self.tenants.get(tenant);
        let Some(url) = callback_url.or_else(|| t.and_then(|t| t.url.as_deref())) else {
            return Ok(None);
        };
        let parsed = url::Url::parse(url).map_err(|_| TargetError::NotHttp(url.to_owned()))?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
            return Err(TargetError::NotHttp(url.to_owned()));
        }
        if t.and_then(|t| t.secret.as_ref()).is_none() {
            return Err(TargetError::NoSecret);
        }
        if let Some(ip) = self.policy.refused_literal(&parsed) {
            return Err(TargetError::Refused(ip));
        }
        Ok(Some(url.to_owned()))
    }
}

/// A URL for logs and the push timeline: without user-info, query or fragment.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(invalid URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(allow: &[&str]) -> Targets {
        let cfg = WebhooksConfig {
            allow_targets: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut t = Targets::new(cfg.policy().unwrap());
        t.add(
            "a",
            TenantWebhook {
                url: Some("https://hooks.example.com/a".into()),
                secret: Some(Secret::parse("whsec_c2VjcmV0").unwrap()),
            },
        );
        t.add(
            "nosecret",
            TenantWebhook {
                url: None,
                secret: None,
            },
        );
        t
    }

    #[test]
    fn callback_url_wins_over_tenant_url() {
        let t = targets(&[]);
        assert_eq!(
            t.resolve("a", None).unwrap().as_deref(),
            Some("https://hooks.example.com/a")
        );
        assert_eq!(
            t.resolve("a", Some("https://other.example.com/x"))
                .unwrap()
                .as_deref(),
            Some("https://other.example.com/x")
        );
        assert_eq!(t.resolve("nosecret", None).unwrap(), None);
        assert_eq!(t.resolve("unknown", None).unwrap(), None);
    }

    #[test]
    fn callback_without_secret_is_refused() {
        let t = targets(&[]);
        assert_eq!(
            t.resolve("nosecret", Some("https://x.example.com/")),
            Err(TargetError::NoSecret)
        );
    }

    #[test]
    fn loopback_refused_unless_allowed() {
        let t = targets(&[]);
        assert!(matches!(
            t.resolve("a", Some("http://127.0.0.1:9000/hook")),
            Err(TargetError::Refused(_))
        ));
        let t = targets(&["127.0.0.0/8"]);
        assert!(t.resolve("a", Some("http://127.0.0.1:9000/hook")).is_ok());
        assert!(matches!(
            t.resolve("a", Some("ftp://x/")),
            Err(TargetError::NotHttp(_))
        ));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("https://user:pw@h.example.com/p?token=1#f"),
            "https://h.example.com/p"
        );
    }
}
