//! Typed settings: TOML file + `DMPUSHD__SECTION__KEY` environment overrides (DESIGN §5).
//!
//! Every key has a default, so `dmpushd serve` with no file at all works: it listens on
//! `127.0.0.1:8080`, stores in `./data/dmpushd.db`, and (with no `[[tenants]]`) creates a
//! development tenant whose token it logs once. `config/dmpushd.toml` documents every key.

use std::{net::SocketAddr, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    binding::{http::HttpConfig, obex::ObexConfig, sip::SipConfig, wap::WapConfig},
    store::StoreOptions,
    webhook::WebhooksConfig,
};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerConfig,
    pub store: StoreOptions,
    pub queue: QueueConfig,
    pub tenants: Vec<TenantConfig>,
    /// Administrators of `/v1/admin/…` (DESIGN §10.4).
    pub admins: Vec<AdminConfig>,
    pub bindings: BindingsConfig,
    pub webhooks: WebhooksConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Bearer token `/metrics` requires when set (a secret: redacted by check-config). Without
    /// it `/metrics` is public and its labels carry no tenant names (docs/security.md).
    pub metrics_token: Option<String>,
    /// Largest accepted request body (bytes); larger requests get 413.
    pub body_limit_bytes: usize,
    /// Largest DM payload in a push (bytes, after base64 decoding).
    pub max_payload_bytes: usize,
    /// Seconds allowed for in-flight deliveries to finish on SIGTERM before their leases are
    /// released.
    pub shutdown_grace_seconds: u64,
    /// Seconds a client has to send a request's headers (from connecting, or from the end of its
    /// previous response); a slow or silent client is disconnected after this (DESIGN §10.3).
    pub header_timeout_seconds: u64,
    /// Seconds a request may take end to end (reading the body included) before it gets 503.
    pub request_timeout_seconds: u64,
    /// Open API connections at most; a connection beyond the cap gets 503 and is closed.
    pub max_connections: usize,
    /// Requests handled at once; a request beyond this gets 503 with `Retry-After` at once
    /// (load shedding) instead of waiting in an unbounded queue.
    pub max_inflight_requests: usize,
    /// Seconds between two counts of pushes per state for `dmpushd_queue_depth` (counted on a
    /// scrape, not on a timer). The count is a scan of the pushes table: a scraper polling
    /// faster than this reads the previous count.
    pub queue_depth_refresh_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_token: None,
            body_limit_bytes: 1024 * 1024,
            max_payload_bytes: 64 * 1024,
            shutdown_grace_seconds: 10,
            header_timeout_seconds: 10,
            request_timeout_seconds: 30,
            max_connections: 10_000,
            max_inflight_requests: 1024,
            queue_depth_refresh_seconds: 1,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Deliveries in flight at once (per replica).
    pub workers: usize,
    /// Pushes leased per claim.
    pub claim_batch: u32,
    /// Lease length; a crashed worker's pushes are retaken after this.
    pub lease_seconds: u64,
    /// Attempts per push, across all bindings.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with equal jitter (between half and all of the
    /// delay: never zero), capped by `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// TTL when a push names none.
    pub default_ttl_seconds: u64,
    /// Longest TTL a client may ask for.
    pub max_ttl_seconds: u64,
    /// Fallback poll interval of the dispatcher (wake-ups make it normally idle).
    pub poll_interval_ms: u64,
    /// Concurrent deliveries to one target (device address).
    pub per_target_concurrency: usize,
    /// One tenant's deliveries in flight at most (per replica); default half of `workers`, so
    /// that one tenant's backlog never takes every worker (DESIGN §10.3).
    pub tenant_max_inflight: Option<usize>,
    /// Replica id used as lease owner; default: hostname-pid-random.
    pub replica_id: Option<String>,
    /// Seconds after a push's `expires_at` that an `accepted` push (receipt requested) still
    /// waits for its receipt before it ends `unconfirmed` (DESIGN §10.1).
    pub receipt_grace_seconds: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            workers: 256,
            claim_batch: 128,
            lease_seconds: 60,
            max_attempts: 8,
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
            default_ttl_seconds: 86_400,
            max_ttl_seconds: 30 * 86_400,
            poll_interval_ms: 1000,
            per_target_concurrency: 4,
            tenant_max_inflight: None,
            replica_id: None,
            receipt_grace_seconds: crate::queue::dispatcher::DEFAULT_RECEIPT_GRACE.as_secs(),
        }
    }
}

impl QueueConfig {
    /// `tenant_max_inflight`, or its default: half the workers (at least 1).
    pub fn tenant_max_inflight(&self) -> usize {
        self.tenant_max_inflight.unwrap_or(self.workers / 2).max(1)
    }
}

/// A tenant: a bearer token (as its SHA-256, or in clear for development) and a name.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Hex SHA-256 of the token (production form).
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// The token in clear (development only).
    #[serde(default)]
    pub token: Option<String>,
    /// Where this tenant's webhooks go when a push names no `callback_url` (docs/webhooks.md).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// `whsec_` + base64 key that signs this tenant's webhooks (a secret: redacted in output).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Pushes per second this tenant may submit (a batch counts each push); above it the API
    /// answers 429 with `Retry-After`. Unset: no limit.
    #[serde(default)]
    pub max_pushes_per_second: Option<f64>,
}

impl std::fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConfig")
            .field("name", &self.name)
            .field(
                "webhook_url",
                &self.webhook_url.as_deref().map(crate::webhook::redact_url),
            )
            .finish_non_exhaustive()
    }
}

/// An administrator: a bearer token (SHA-256, or in clear for development) and a name, for
/// `/v1/admin/…` only (an admin token sees no tenant's pushes).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub name: String,
    /// Hex SHA-256 of the token (production form).
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// The token in clear (development only).
    #[serde(default)]
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AdminConfig {
    /// The token's SHA-256 (lower-case hex), from whichever form is configured.
    pub fn hashes(&self) -> Vec<String> {
        self.token_sha256
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .chain(
                self.token
                    .iter()
                    .map(|t| crate::api::validate::sha256_hex(t.as_bytes())),
            )
            .collect()
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BindingsConfig {
    pub http: HttpConfig,
    pub wap: WapConfig,
    pub sip: SipConfig,
    pub obex: ObexConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (default, for log shippers) or `text`.
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "json".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(#[from] config::ConfigError),
    #[error("config: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads `file` (if it exists; a missing default file is not an error) and then the
    /// `DMPUSHD__…` environment variables.
    pub fn load(file: Option<&Path>, required: bool) -> Result<Self, ConfigError> {
        Self::load_with_env(file, required, None)
    }

    /// As [`Settings::load`], with an explicit environment (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        required: bool,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut b = config::Config::builder();
        if let Some(f) = file {
            b = b.add_source(
                config::File::from(f)
                    .format(config::FileFormat::Toml)
                    .required(required),
            );
        }
        let mut e = config::Environment::with_prefix("DMPUSHD")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("bindings.http.allow_targets")
            .with_list_parse_key("webhooks.allow_targets");
        if let Some(env) = env {
            e = e.source(Some(env));
        }
        let s: Settings = b.add_source(e).build()?.try_deserialize()?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.queue.workers == 0 {
            return bad("queue.workers must be at least 1".into());
        }
        if self.queue.max_attempts == 0 {
            return bad("queue.max_attempts must be at least 1".into());
        }
        if self.server.header_timeout_seconds == 0
            || self.server.request_timeout_seconds == 0
            || self.server.max_connections == 0
            || self.server.max_inflight_requests == 0
        {
            return bad("server.header_timeout_seconds, request_timeout_seconds, max_connections and max_inflight_requests must be at least 1".into());
        }
        if self.queue.lease_seconds == 0 {
            return bad("queue.lease_seconds must be at least 1".into());
        }
        for t in &self.tenants {
            match (&t.token_sha256, &t.token) {
                (Some(h), _) if h.len() != 64 || hex::decode(h).is_err() => {
                    return bad(format!(
                        "tenants[{}].token_sha256 must be 64 hex digits",
                        t.name
                    ));
                }
                (None, None) => {
                    return bad(format!(
                        "tenants[{}] needs token_sha256 (or token for development)",
                        t.name
                    ));
                }
                _ => {}
            }
            if let Some(s) = &t.webhook_secret
                && let Err(e) = crate::webhook::Secret::parse(s)
            {
                return bad(format!("tenants[{}].webhook_secret: {e}", t.name));
            }
            if let Some(r) = t.max_pushes_per_second
                && !(r.is_finite() && r > 0.0)
            {
                return bad(format!(
                    "tenants[{}].max_pushes_per_second must be a positive number",
                    t.name
                ));
            }
            if t.webhook_url.is_some() && t.webhook_secret.is_none() {
                return bad(format!(
                    "tenants[{}].webhook_url needs a webhook_secret to sign with",
                    t.name
                ));
            }
        }
        let tenant_hashes: Vec<String> = self
            .tenants
            .iter()
            .flat_map(|t| {
                let t = AdminConfig {
                    name: t.name.clone(),
                    token_sha256: t.token_sha256.clone(),
                    token: t.token.clone(),
                };
                t.hashes()
            })
            .collect();
        for a in &self.admins {
            match (&a.token_sha256, &a.token) {
                (Some(h), _) if h.len() != 64 || hex::decode(h).is_err() => {
                    return bad(format!(
                        "admins[{}].token_sha256 must be 64 hex digits",
                        a.name
                    ));
                }
                (None, None) => {
                    return bad(format!(
                        "admins[{}] needs token_sha256 (or token for development)",
                        a.name
                    ));
                }
                _ => {}
            }
            // One token, one role: an admin token must never also be a tenant's (it would see
            // that tenant's pushes, DESIGN §10.4).
            if a.hashes().iter().any(|h| tenant_hashes.contains(h)) {
                return bad(format!(
                    "admins[{}]: the token is also a tenant's token; use distinct tokens",
                    a.name
                ));
            }
        }
        self.webhooks.validate().map_err(ConfigError::Invalid)?;
        self.bindings
            .http
            .validate()
            .map_err(ConfigError::Invalid)?;
        Ok(())
    }
}
