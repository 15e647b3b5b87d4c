//! The REST API (DESIGN §5): validates and enqueues; never calls a binding's transport.
//!
//! Routes under `/v1` need `Authorization: Bearer <token>`; the token names the tenant, and a
//! tenant sees only its own devices and pushes (another tenant's ids are 404). `/healthz`,
//! `/readyz`, `/metrics` and `/openapi.json` are public.

use std::{collections::HashMap, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};

use crate::{binding::Bindings, metrics::Metrics, store::Store};

pub mod admin;
pub mod devices;
pub mod openapi;
pub mod problem;
pub mod pushes;
pub mod ratelimit;
pub mod serve;
pub mod validate;
pub mod webhooks;

pub use problem::Problem;

/// Limits and defaults the API applies to pushes.
#[derive(Clone, Debug)]
pub struct ApiLimits {
    pub max_payload_bytes: usize,
    pub body_limit_bytes: usize,
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
    pub max_attempts: u32,
    pub list_limit_max: u32,
}

/// Bearer tokens → tenant names (tokens kept only as SHA-256).
#[derive(Clone, Debug, Default)]
pub struct Tenants {
    /// Keyed by the raw digest, so a lookup hashes the token without formatting it as hex; the
    /// names are shared, so authenticating a request allocates nothing.
    by_hash: HashMap<[u8; 32], Arc<str>>,
}

impl Tenants {
    pub fn new() -> Self {
        Self::default()
    }

    /// A configured `token_sha256` (hex, either case). One that is not 64 hex digits matches no
    /// token, as before (config validation reports it).
    pub fn add_hash(&mut self, sha256_hex: &str, tenant: &str) {
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(sha256_hex, &mut digest).is_ok() {
            self.by_hash.insert(digest, Arc::from(tenant));
        }
    }

    pub fn add_token(&mut self, token: &str, tenant: &str) {
        self.by_hash
            .insert(validate::sha256(token.as_bytes()), Arc::from(tenant));
    }

    pub fn lookup(&self, token: &str) -> Option<&Arc<str>> {
        self.by_hash.get(&validate::sha256(token.as_bytes()))
    }

    /// The tenants that can authenticate, each once (a tenant may have several tokens).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_hash.values().map(|n| n.to_string()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub bindings: Bindings,
    pub metrics: Metrics,
    pub tenants: Arc<Tenants>,
    pub limits: ApiLimits,
    /// When `dmpushd_queue_depth` was last refreshed (on scrape, at most once per
    /// `depth_refresh_every`: counting pushes per state is a scan, so it is paid per scrape, not
    /// on a timer).
    pub depth_refreshed: Arc<std::sync::Mutex<Option<Instant>>>,
    /// `server.queue_depth_refresh_seconds`.
    pub depth_refresh_every: std::time::Duration,
    /// Tenants' webhook targets and the target policy (submit-time resolution, issue 11).
    pub webhooks: Arc<crate::webhook::Targets>,
    /// `[[admins]]` tokens → admin names (same SHA-256 form as tenants; disjoint from them).
    pub admins: Arc<Tenants>,
    /// This replica's lease-owner id (admin status).
    pub replica_id: Arc<str>,
    /// `[[tenants]] max_pushes_per_second` buckets (DESIGN §10.3).
    pub rate: Arc<ratelimit::RateLimits>,
}

/// The router's state: one allocation shared by every request. Axum clones the state for each
/// middleware and extractor; cloning the struct itself cost some thirty atomic reference-count
/// updates per clone, on counters every core touches (7 % of the gateway's CPU under load in
/// `perf`, docs/perf/accept.md).
pub type SharedState = Arc<ApiState>;

/// The authenticated tenant of a request.
#[derive(Clone, Debug)]
pub struct Tenant(pub Arc<str>);

pub fn router(state: ApiState) -> Router {
    let state: SharedState = Arc::new(state);
    let v1 = Router::new()
        .route("/v1/devices", get(devices::list))
        .route(
            "/v1/devices/{id}",
            put(devices::put).get(devices::get).delete(devices::delete),
        )
        .route("/v1/devices/{id}/push", post(pushes::raw_push))
        .route("/v1/pushes", post(pushes::create).get(pushes::list))
        .route("/v1/pushes/batch", post(pushes::batch))
        .route("/v1/pushes/preview", post(pushes::preview))
        .route("/v1/pushes/{id}", get(pushes::get).delete(pushes::cancel))
        .route("/v1/pushes/{id}/webhooks/retry", post(webhooks::retry))
        // Inner: runs after `auth` has named the tenant.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let admin = Router::new()
        .route("/v1/admin/status", get(admin::status))
        .route("/v1/admin/smscs/{name}/suspend", post(admin::suspend))
        .route("/v1/admin/smscs/{name}/resume", post(admin::resume))
        .route_layer(middleware::from_fn_with_state(state.clone(), admin::auth));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
        .merge(v1)
        .merge(admin)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.limits.body_limit_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// The bearer token of a request, if any.
fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

async fn auth(State(st): State<SharedState>, mut req: Request, next: Next) -> Response {
    match bearer(&req).and_then(|t| st.tenants.lookup(t)) {
        Some(tenant) => {
            req.extensions_mut().insert(Tenant(tenant.clone()));
            next.run(req).await
        }
        None => {
            let mut r = Problem::unauthorized().into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

async fn count_requests(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    // The matched path is shared (`Arc<str>`); cloning it allocates nothing.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .count_request(&method, route, resp.status().as_u16());
    tracing::debug!(message = "Request.", %method, route = %route, status = resp.status().as_u16(), ms = start.elapsed().as_millis() as u64);
    resp
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-route",
        "Not found",
        "no such route",
    )
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready = this replica can accept pushes: the store answers and its migrations are current
/// (DESIGN §10.4). Bearer health (e.g. no SMSC bound) is reported per binding but never makes
/// the replica unready: an SMSC outage must not take the REST API out of the load balancer, and
/// pushes accepted meanwhile wait in the queue.
async fn readyz(State(st): State<SharedState>) -> Response {
    if let Err(e) = st.store.ping().await {
        return Problem::unavailable(format!("store unreachable: {e}")).into_response();
    }
    match st.store.migrations_current().await {
        Ok(true) => {}
        Ok(false) => {
            return Problem::unavailable(
                "store migrations are not current: run `dmpushd migrate` (or store.auto_migrate)",
            )
            .into_response();
        }
        Err(e) => {
            return Problem::unavailable(format!("store migrations unknown: {e}")).into_response();
        }
    }
    let mut bindings = serde_json::Map::new();
    for b in st.bindings.iter() {
        let v = match b.ready() {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        bindings.insert(b.kind().as_str().to_owned(), serde_json::Value::String(v));
    }
    let body = serde_json::json!({"store": "ok", "migrations": "current", "bindings": bindings});
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics(State(st): State<SharedState>, headers: axum::http::HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !st.metrics.may_read(bearer) {
        let mut r = Problem::unauthorized().into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let due = {
        let mut last = st.depth_refreshed.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= st.depth_refresh_every);
        if due {
            *last = Some(Instant::now());
        }
        due
    };
    if due {
        match tokio::time::timeout(std::time::Duration::from_secs(2), st.store.queue_depth()).await
        {
            Ok(Ok(depth)) => {
                for s in crate::store::PushState::ALL {
                    let n = depth
                        .iter()
                        .find(|(st, _)| *st == s)
                        .map(|(_, n)| *n)
                        .unwrap_or(0);
                    st.metrics
                        .queue_depth
                        .with_label_values(&[s.as_str()])
                        .set(n as i64);
                }
            }
            Ok(Err(e)) => {
                st.metrics
                    .store_errors
                    .with_label_values(&["queue_depth"])
                    .inc();
                tracing::warn!(message = "Queue depth unavailable.", error = %e);
            }
            Err(_) => st
                .metrics
                .store_errors
                .with_label_values(&["queue_depth"])
                .inc(),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// Formats Unix milliseconds as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::Tenants;

    #[test]
    fn tenants_match_tokens_by_digest_whatever_the_hex_case() {
        let mut t = Tenants::new();
        t.add_token("tok-a", "a");
        // sha256("tok-b"), upper case as an operator may paste it.
        let b = super::validate::sha256_hex(b"tok-b").to_ascii_uppercase();
        t.add_hash(&b, "b");
        t.add_hash("not hex", "c");
        assert_eq!(t.lookup("tok-a").map(|s| &**s), Some("a"));
        assert_eq!(t.lookup("tok-b").map(|s| &**s), Some("b"));
        assert_eq!(t.lookup("tok-c"), None);
        assert_eq!(t.lookup("not hex"), None);
    }
}
