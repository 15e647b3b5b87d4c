//! The admin API (DESIGN §10.4): `GET /v1/admin/status`, `POST /v1/admin/smscs/{name}/suspend`
//! and `…/resume`, for the tokens of `[[admins]]`.
//!
//! Admin and tenant tokens are disjoint (config validation refuses a token that is both): an
//! admin token is unknown to the tenant routes (401 there, so it sees no tenant's pushes), and
//! any other request to `/v1/admin/…` — a tenant token, no token — gets the same 404 as an
//! unknown route, so the admin surface is not discoverable with a tenant's credentials.

use axum::{
    Extension, Json,
    extract::{Path, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{Problem, SharedState};

/// The authenticated administrator of a request (its `[[admins]]` name).
#[derive(Clone, Debug)]
pub struct Admin(pub String);

/// Admits `[[admins]]` tokens; everything else is the 404 of an unknown route.
pub async fn auth(State(st): State<SharedState>, mut req: Request, next: Next) -> Response {
    let name = super::bearer(&req).and_then(|t| st.admins.lookup(t));
    match name {
        Some(name) => {
            req.extensions_mut().insert(Admin(name.to_string()));
            next.run(req).await
        }
        None => super::not_found().await.into_response(),
    }
}

#[utoipa::path(get, path = "/v1/admin/status",
    description = "Admin tokens only ([[admins]]); any other caller gets 404. Replicas, queue depth \
                   by state, per binding its health and outcome counts (this replica, since start), \
                   per SMSC: bound, suspended, binds, window and window in use, throughput limit, \
                   throttled, last error.",
    responses((status = 200, body = Object), (status = 404, body = Problem),
              (status = 503, body = Problem)),
    security(("bearer" = [])))]
/// Replicas, queue depth by state, per binding its health and outcome counts (since this
/// replica started), per SMSC its session state. What `/readyz` reports, in full.
pub async fn status(State(st): State<SharedState>) -> Result<Json<Value>, Problem> {
    let depth = st.store.queue_depth().await?;
    let mut queue = serde_json::Map::new();
    for s in crate::store::PushState::ALL {
        let n = depth.iter().find(|(d, _)| *d == s).map_or(0, |(_, n)| *n);
        queue.insert(s.as_str().to_owned(), json!(n));
    }
    let replicas: Vec<Value> = st
        .store
        .replicas()
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "started_at": super::rfc3339(r.started_at_ms),
                "heartbeat_at": super::rfc3339(r.heartbeat_at_ms),
            })
        })
        .collect();
    let mut bindings = serde_json::Map::new();
    for b in st.bindings.iter() {
        let kind = b.kind().as_str();
        let mut outcomes = serde_json::Map::new();
        for o in [
            "delivered",
            "accepted",
            "transient",
            "permanent",
            "unsupported",
            "deferred",
        ] {
            let n = st.metrics.deliveries.with_label_values(&[kind, o]).get();
            outcomes.insert(o.to_owned(), json!(n));
        }
        let mut v = json!({
            "ready": match b.ready() { Ok(()) => "ok".to_owned(), Err(e) => e.to_string() },
            "outcomes": outcomes,
        });
        if let (Value::Object(extra), Some(obj)) = (b.status(), v.as_object_mut()) {
            obj.extend(extra);
        }
        bindings.insert(kind.to_owned(), v);
    }
    Ok(Json(json!({
        "replica": &*st.replica_id,
        "replicas": replicas,
        "queue_depth": queue,
        "bindings": bindings,
    })))
}

#[utoipa::path(post, path = "/v1/admin/smscs/{name}/suspend", params(("name" = String, Path)),
    description = "Admin tokens only. No new submit_sm goes to this SMSC on this replica; its \
                   pushes fall back under auto or wait uncounted (never fail). Per replica.",
    responses((status = 200, body = Object), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn suspend(
    st: State<SharedState>,
    admin: Extension<Admin>,
    name: Path<String>,
) -> Result<Response, Problem> {
    set(st, admin, name, true).await
}

#[utoipa::path(post, path = "/v1/admin/smscs/{name}/resume", params(("name" = String, Path)),
    description = "Admin tokens only. Ends a suspension on this replica.",
    responses((status = 200, body = Object), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn resume(
    st: State<SharedState>,
    admin: Extension<Admin>,
    name: Path<String>,
) -> Result<Response, Problem> {
    set(st, admin, name, false).await
}

async fn set(
    State(st): State<SharedState>,
    Extension(Admin(admin)): Extension<Admin>,
    Path(name): Path<String>,
    suspended: bool,
) -> Result<Response, Problem> {
    if !st
        .bindings
        .iter()
        .any(|b| b.set_suspended(&name, suspended).is_some())
    {
        return Err(Problem::not_found("smsc", &name));
    }
    tracing::warn!(
        message = "SMSC suspension changed.",
        smsc = %name,
        suspended,
        admin = %admin,
    );
    // The flag lives in this replica's memory: say so, so that an operator of several replicas
    // knows to call each one (docs/operations.md).
    Ok((
        StatusCode::OK,
        Json(json!({"smsc": name, "suspended": suspended, "replica": &*st.replica_id})),
    )
        .into_response())
}
