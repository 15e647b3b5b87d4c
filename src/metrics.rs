//! Prometheus metrics of the core (bindings register their own in the same registry).
//! Every name starts with `dmpushd_` (DESIGN §5).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use axum::http::Method;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub pushes_accepted: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub attempt_seconds: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub http_requests: IntCounterVec,
    pub receipts: IntCounterVec,
    pub leases_held: IntGauge,
    pub store_errors: IntCounterVec,
    /// Duration of the dispatcher's store operations (claim, complete).
    pub store_seconds: HistogramVec,
    /// Pushes leased per claim: small claims under a backlog mean the claim loop is the limit.
    pub claim_size: Histogram,
    /// Claims of a push whose lease had ended without an outcome (expired, its replica declared
    /// dead, or its process restarted): each may deliver the push a second time (DESIGN §10.1).
    pub lease_takeovers: IntCounter,
    /// Claimed pushes written back at once because their tenant or target was busy.
    pub claims_deferred: IntCounterVec,
    /// Final pushes deleted by retention (`store.retention_seconds`).
    pub store_purged: IntCounter,
    /// Counter handles of the per-request series, so that counting a request neither formats
    /// nor hashes label text (`with_label_values` does both, on every call).
    handles: Arc<Handles>,
    /// `server.metrics_token`: when set, `/metrics` requires it and labels name tenants;
    /// when not, `/metrics` is public and every tenant label is [`ANY_TENANT`].
    token: Option<std::sync::Arc<str>>,
}

/// See [`Metrics::count_request`] and [`Metrics::count_accepted`]. Both maps are bounded by
/// the label values the counter vecs already hold (routes × methods × statuses; tenants).
#[derive(Default)]
struct Handles {
    /// Matched route → its handles: a handful per route, scanned.
    http: RwLock<HashMap<Box<str>, Vec<RouteHandle>>>,
    /// Tenant label value → handle.
    accepted: RwLock<HashMap<Box<str>, IntCounter>>,
}

/// One `(method, status)` series of a route.
type RouteHandle = (Method, u16, IntCounter);

/// The tenant label value on an unauthenticated `/metrics` (tenant names are not public).
pub const ANY_TENANT: &str = "_";

impl Metrics {
    /// Puts `/metrics` behind a bearer token, which also lets labels name tenants.
    pub fn protect(&mut self, token: Option<&str>) {
        self.token = token.filter(|t| !t.is_empty()).map(std::sync::Arc::from);
    }

    /// The value of a `tenant` label: the name only when `/metrics` is protected.
    pub fn tenant_label<'a>(&self, tenant: &'a str) -> &'a str {
        if self.token.is_some() {
            tenant
        } else {
            ANY_TENANT
        }
    }

    /// Counts one API request in `dmpushd_http_requests_total{route="<method> <route>",status}`.
    pub fn count_request(&self, method: &Method, route: &str, status: u16) {
        {
            let http = self.handles.http.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, _, c)) = http
                .get(route)
                .and_then(|v| v.iter().find(|(m, s, _)| m == method && *s == status))
            {
                c.inc();
                return;
            }
        }
        let c = self
            .http_requests
            .with_label_values(&[&format!("{method} {route}"), &status.to_string()]);
        c.inc();
        let mut http = self.handles.http.write().unwrap_or_else(|p| p.into_inner());
        let v = http.entry(route.into()).or_default();
        // Another request may have added the same handle meanwhile: one is enough.
        if !v.iter().any(|(m, s, _)| m == method && *s == status) {
            v.push((method.clone(), status, c));
        }
    }

    /// Counts one push committed to the queue for `tenant` (`dmpushd_pushes_accepted_total`).
    pub fn count_accepted(&self, tenant: &str) {
        let label = self.tenant_label(tenant);
        if let Some(c) = self
            .handles
            .accepted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
        {
            c.inc();
            return;
        }
        let c = self.pushes_accepted.with_label_values(&[label]);
        c.inc();
        self.handles
            .accepted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label.into())
            .or_insert(c);
    }

    /// Whether a request's bearer token may read `/metrics` (constant time in its content).
    pub fn may_read(&self, bearer: Option<&str>) -> bool {
        use sha2::{Digest, Sha256};
        let Some(want) = &self.token else {
            return true;
        };
        let Some(got) = bearer else {
            return false;
        };
        // Comparing digests keeps the time independent of where the strings differ.
        let (a, b) = (
            Sha256::digest(want.as_bytes()),
            Sha256::digest(got.as_bytes()),
        );
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    /// Builds and registers the core metrics. Fails only on a programming error (an invalid or
    /// duplicate definition), reported at startup rather than as a panic.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let pushes_accepted = IntCounterVec::new(
            Opts::new(
                "dmpushd_pushes_accepted_total",
                "Pushes committed to the queue (answered 202)",
            ),
            &["tenant"],
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new(
                "dmpushd_deliveries_total",
                "Delivery attempts by binding and outcome",
            ),
            &["binding", "outcome"],
        )?;
        let attempt_seconds = HistogramVec::new(
            HistogramOpts::new(
                "dmpushd_delivery_attempt_seconds",
                "Duration of one delivery attempt",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["binding"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new("dmpushd_queue_depth", "Pushes in the store by state"),
            &["state"],
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "dmpushd_http_requests_total",
                "REST API requests by route and status",
            ),
            &["route", "status"],
        )?;
        let receipts = IntCounterVec::new(
            Opts::new(
                "dmpushd_receipts_total",
                "Delivery receipts by binding and effect",
            ),
            &["binding", "effect"],
        )?;
        let leases_held = IntGauge::new(
            "dmpushd_leases_held",
            "Pushes leased by this replica right now",
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new("dmpushd_store_errors_total", "Store operations that failed"),
            &["op"],
        )?;
        let store_seconds = HistogramVec::new(
            HistogramOpts::new(
                "dmpushd_store_operation_seconds",
                "Duration of the dispatcher's store operations",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            &["op"],
        )?;
        let claim_size = Histogram::with_opts(
            HistogramOpts::new("dmpushd_claim_size", "Pushes leased per claim")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        let lease_takeovers = IntCounter::new(
            "dmpushd_lease_takeovers_total",
            "Pushes this replica claimed from a lease that ended without an outcome (a duplicate delivery is possible)",
        )?;
        let claims_deferred = IntCounterVec::new(
            Opts::new(
                "dmpushd_claims_deferred_total",
                "Claimed pushes written back to the queue because their tenant was at queue.tenant_max_inflight or their target had no free slot",
            ),
            &["reason"],
        )?;
        let store_purged = IntCounter::new(
            "dmpushd_store_purged_total",
            "Final pushes deleted with their events after store.retention_seconds",
        )?;
        registry.register(Box::new(lease_takeovers.clone()))?;
        registry.register(Box::new(claims_deferred.clone()))?;
        // Both series from the start (a fixed set), so that a rate() sees the first increase.
        for reason in ["tenant", "target", "workers"] {
            claims_deferred.with_label_values(&[reason]);
        }
        registry.register(Box::new(store_purged.clone()))?;
        registry.register(Box::new(store_seconds.clone()))?;
        registry.register(Box::new(claim_size.clone()))?;
        for c in [
            &pushes_accepted,
            &deliveries,
            &http_requests,
            &receipts,
            &store_errors,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(attempt_seconds.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(leases_held.clone()))?;
        for s in crate::store::PushState::ALL {
            queue_depth.with_label_values(&[s.as_str()]).set(0);
        }
        // Exported at 0 from the start, so that alerts and dashboards see a series (a rate over
        // a series that appears with its first error misses that error).
        for op in [
            "claim",
            "complete",
            "expire",
            "heartbeat",
            "orphan_receipts",
            "purge",
            "queue_depth",
            "receipt",
            "renew",
            "sweep",
            "unconfirm",
        ] {
            store_errors.with_label_values(&[op]);
        }
        Ok(Self {
            registry,
            pushes_accepted,
            deliveries,
            attempt_seconds,
            queue_depth,
            http_requests,
            receipts,
            leases_held,
            store_errors,
            store_seconds,
            claim_size,
            lease_takeovers,
            claims_deferred,
            store_purged,
            handles: Arc::default(),
            token: None,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn core_metrics_register_and_render() {
        let m = super::Metrics::new().unwrap();
        m.leases_held.set(3);
        let text = m.render();
        assert!(text.contains("dmpushd_leases_held 3"), "{text}");
        assert!(
            text.contains("dmpushd_queue_depth{state=\"queued\"} 0"),
            "{text}"
        );
        // Zero from the start, so that a dashboard's rate() sees the first takeover.
        assert!(text.contains("dmpushd_lease_takeovers_total 0"), "{text}");
        assert!(text.contains("dmpushd_store_purged_total 0"), "{text}");
    }

    /// The cached handles count into the same series `with_label_values` would, one per
    /// route, method and status, and per tenant label.
    #[test]
    fn cached_handles_count_into_the_labelled_series() {
        use axum::http::Method;
        let mut m = super::Metrics::new().unwrap();
        for _ in 0..3 {
            m.count_request(&Method::POST, "/v1/pushes", 202);
        }
        m.count_request(&Method::POST, "/v1/pushes", 422);
        m.count_request(&Method::GET, "/v1/pushes", 202);
        let get =
            |route: &str, status: &str| m.http_requests.with_label_values(&[route, status]).get();
        assert_eq!(get("POST /v1/pushes", "202"), 3);
        assert_eq!(get("POST /v1/pushes", "422"), 1);
        assert_eq!(get("GET /v1/pushes", "202"), 1);
        m.count_accepted("a");
        m.count_accepted("b");
        assert_eq!(m.pushes_accepted.with_label_values(&["_"]).get(), 2);
        // Protected: tenants are named, and a cached "_" handle does not swallow them.
        m.protect(Some("t"));
        m.count_accepted("a");
        assert_eq!(m.pushes_accepted.with_label_values(&["a"]).get(), 1);
        assert_eq!(m.pushes_accepted.with_label_values(&["_"]).get(), 2);
    }
}
