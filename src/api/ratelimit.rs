//! Per-tenant push rate limits (`[[tenants]] max_pushes_per_second`, DESIGN §10.3): a token
//! bucket per tenant, refilled at the tenant's rate and holding one second's worth (at least one
//! push), so a tenant may burst up to its rate and is then held to it. Above it the API answers
//! 429 with `Retry-After`; nothing is stored.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{Problem, SharedState, Tenant};

#[derive(Debug, Default)]
pub struct RateLimits {
    /// Pushes per second by tenant; a tenant not listed is not limited.
    rates: HashMap<String, f64>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    pub fn new(rates: impl IntoIterator<Item = (String, f64)>) -> Self {
        Self {
            rates: rates.into_iter().filter(|(_, r)| *r > 0.0).collect(),
            buckets: Mutex::default(),
        }
    }

    /// Whether `tenant` has a rate (requests of other tenants skip the bucket altogether).
    pub fn limits(&self, tenant: &str) -> bool {
        self.rates.contains_key(tenant)
    }

    /// Takes `n` pushes from `tenant`'s bucket, or says how long until they would fit.
    pub fn take(&self, tenant: &str, n: u32, now: Instant) -> Result<(), Duration> {
        let Some(&rate) = self.rates.get(tenant) else {
            return Ok(());
        };
        let burst = rate.max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        let want = f64::from(n);
        // A batch larger than the burst goes through on a full bucket and leaves a debt that
        // later requests wait out: the average rate holds, and no batch is refused for ever.
        let need = want.min(burst);
        if b.tokens >= need {
            b.tokens -= want;
            return Ok(());
        }
        Err(Duration::from_secs_f64(((need - b.tokens) / rate).max(0.0)))
    }
}

/// Charges push-creating requests to the tenant's bucket: one per push (a batch, one per item).
pub async fn limit(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    // Shared handles (`Arc<str>`): nothing is copied per request.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let tenant = req.extensions().get::<Tenant>().map(|t| t.0.clone());
    let (Some(route), Some(tenant)) = (route, tenant) else {
        return next.run(req).await;
    };
    if !st.rate.limits(&tenant)
        || req.method() != Method::POST
        || !matches!(
            route.as_str(),
            "/v1/pushes" | "/v1/pushes/batch" | "/v1/devices/{id}/push"
        )
    {
        return next.run(req).await;
    }
    let (req, n) = if route.as_str() == "/v1/pushes/batch" {
        // Count the items; the handler parses (and judges) the body again.
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, st.limits.body_limit_bytes).await {
            Ok(b) => b,
            Err(_) => {
                return Problem::too_large("request body exceeds the limit").into_response();
            }
        };
        let n = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&bytes)
            .map(|v| v.len())
            .unwrap_or(1)
            .max(1);
        (
            Request::from_parts(parts, axum::body::Body::from(bytes)),
            u32::try_from(n).unwrap_or(u32::MAX),
        )
    } else {
        (req, 1)
    };
    match st.rate.take(&tenant, n, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let mut r = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                "this tenant's max_pushes_per_second is exceeded; retry later",
            )
            .into_response();
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_bursts_to_its_rate_then_refills_at_it() {
        let r = RateLimits::new([("a".to_owned(), 2.0)]);
        let t0 = Instant::now();
        assert!(r.take("a", 1, t0).is_ok());
        assert!(r.take("a", 1, t0).is_ok());
        let wait = r.take("a", 1, t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another tenant has its own bucket (or none).
        assert!(r.take("b", 1000, t0).is_ok());
        assert!(r.take("a", 1, t0 + Duration::from_millis(500)).is_ok());
        assert!(r.take("a", 1, t0 + Duration::from_millis(500)).is_err());
        // A batch larger than the burst passes on a full bucket and leaves a debt: the next
        // push waits until the 10 pushes are paid for at 2 per second.
        let t1 = t0 + Duration::from_secs(10);
        assert!(r.take("a", 10, t1).is_ok());
        let wait = r.take("a", 1, t1).unwrap_err();
        assert!(
            wait > Duration::from_millis(4400) && wait <= Duration::from_millis(4500),
            "{wait:?}"
        );
    }
}
