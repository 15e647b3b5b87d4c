//! The API's HTTP server: hyper's HTTP/1.1 connection with the limits `axum::serve` lacks
//! (DESIGN §10.3): a header-read timeout, a per-request timeout, a connection cap, load
//! shedding, and a shutdown that closes idle connections and is bounded whatever clients do.
//!
//! HTTP/1.1 only, on purpose: hyper-util's version sniffing (`auto`) reads the first 24 bytes
//! before any timeout applies, so a client that sends nothing would hold its connection for
//! ever. No client of the API used cleartext HTTP/2 (h2c).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::Problem;

/// The `[server]` limits the server applies.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_inflight_requests: usize,
    /// How long open requests may finish after shutdown begins; then their connections are
    /// dropped.
    pub grace: Duration,
}

/// What a connection beyond `max_connections` gets before it is closed: written without
/// waiting (a full socket buffer just means the client sees a reset), so a flood of
/// connections costs no task each.
const OVER_CAP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Adds the request timeout and load shedding to `router` (outermost layers).
pub fn layers(router: Router, limits: &ServeLimits) -> Router {
    let shed = Shed {
        permits: Arc::new(Semaphore::new(limits.max_inflight_requests)),
        timeout: limits.request_timeout,
    };
    router.layer(axum::middleware::from_fn_with_state(shed, shed_and_time))
}

#[derive(Clone)]
struct Shed {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

fn unavailable(detail: &str) -> Response {
    let mut r = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "Service unavailable",
        detail,
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Beyond `max_inflight_requests` a request is refused at once (a queue in front of a saturated
/// store only adds latency until every client times out); a request that runs longer than
/// `request_timeout_seconds` (a client trickling its body, a stuck store) is answered 503.
async fn shed_and_time(State(shed): State<Shed>, req: Request, next: Next) -> Response {
    let Ok(_permit) = shed.permits.try_acquire() else {
        return unavailable("too many requests in progress; retry later");
    };
    match tokio::time::timeout(shed.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => unavailable("request timed out"),
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets open requests finish for at most
/// `limits.grace` and drops every connection still open. Returns when no connection is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conns_cap = Arc::new(Semaphore::new(limits.max_connections));
    // Graceful: each connection finishes its current request and then closes (idle ones at once).
    let graceful = CancellationToken::new();
    // Hard: connections still open when the grace is over are dropped.
    let hard = CancellationToken::new();
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
            // Reap finished connection tasks so the set holds only open connections.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: back off briefly instead of spinning on accept.
                tracing::warn!(message = "Accept failed.", error = %e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = conns_cap.clone().try_acquire_owned() else {
            let _ = stream.try_write(OVER_CAP);
            tracing::debug!(message = "Connection over max_connections refused.", %peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        let graceful = graceful.clone();
        let hard = hard.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = graceful.cancelled() => {}
                _ = hard.cancelled() => return,
            }
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn => {}
                _ = hard.cancelled() => {}
            }
        });
    }
    drop(listener);
    graceful.cancel();
    let drained = tokio::time::timeout(limits.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            message = "API connections still open after the shutdown grace; closing them.",
            connections = tasks.len(),
        );
        hard.cancel();
        while tasks.join_next().await.is_some() {}
    }
}
