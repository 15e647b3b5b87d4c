//! The axum handlers of `/v1/pushes` and `/v1/devices/{id}/push`: extract, call
//! [`submission`](super::submission), shape the response.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};

use super::dto::*;
use super::submission::{Prepared, prepare, previews, submit, submit_request};
use crate::api::{Problem, SharedState, Tenant, problem, validate};
use crate::{
    domain::{ContentType, PushState},
    store::{CancelResult, PushFilter},
};

fn header_key(h: &HeaderMap) -> Option<String> {
    h.get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn submitted_response(status: StatusCode, s: Submitted, replayed: bool) -> Response {
    let location = format!("/v1/pushes/{}", s.id);
    let mut r = (status, Json(s)).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        r.headers_mut().insert(
            "idempotent-replayed",
            header::HeaderValue::from_static("true"),
        );
    }
    r
}

#[utoipa::path(post, path = "/v1/pushes", request_body = PushRequest,
    responses((status = 202, body = Submitted), (status = 400, body = Problem), (status = 409, body = Problem),
              (status = 413, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(problem::from_bytes_rejection)?;
    // Straight into the typed request (the hot path); the canonical form is only built for
    // requests with an idempotency key, whose replays must compare equal.
    let req: PushRequest = problem::parse_json(&body)?;
    let key = header_key(&headers);
    let hash = if key.is_some() || req.idempotency_key.is_some() {
        validate::request_hash(&problem::parse_json::<serde_json::Value>(&body)?)
    } else {
        String::new()
    };
    let (status, s, replayed) = submit_request(&st, &tenant, req, hash, key).await?;
    Ok(submitted_response(status, s, replayed))
}

#[utoipa::path(post, path = "/v1/pushes/batch", request_body = Vec<PushRequest>,
    responses((status = 200, body = BatchResult), (status = 400, body = Problem)), security(("bearer" = [])))]
pub async fn batch(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchResult>, Problem> {
    let body = body.map_err(problem::from_bytes_rejection)?;
    let items: Vec<serde_json::Value> = problem::parse_json(&body)?;
    if let Some(i) = items.iter().position(|v| !v.is_object()) {
        return Err(Problem::malformed(
            Some(format!("[{i}]")),
            format!("batch item {i} is not a JSON object"),
        ));
    }
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(Problem::malformed(
            None,
            format!(
                "a batch holds 1 to {MAX_BATCH} pushes (got {})",
                items.len()
            ),
        ));
    }
    // Submitted concurrently so that the store's group commit takes them in one transaction.
    let futs = items.into_iter().map(|v| {
        let st = st.clone();
        let tenant = tenant.clone();
        async move { submit(&st, &tenant, v, None).await }
    });
    let outcomes = futures_util::future::join_all(futs).await;
    let mut results = Vec::with_capacity(outcomes.len());
    let (mut accepted, mut rejected) = (0, 0);
    for (index, o) in outcomes.into_iter().enumerate() {
        results.push(match o {
            Ok((status, s, _)) => {
                accepted += 1;
                BatchItem {
                    index,
                    status: status.as_u16(),
                    id: Some(s.id),
                    state: Some(s.state),
                    problem: None,
                }
            }
            Err(p) => {
                rejected += 1;
                BatchItem {
                    index,
                    status: p.status,
                    id: None,
                    state: None,
                    problem: Some(p),
                }
            }
        });
    }
    Ok(Json(BatchResult {
        accepted,
        rejected,
        results,
    }))
}

#[utoipa::path(post, path = "/v1/devices/{id}/push",
    params(("id" = String, Path), RawQuery),
    request_body(content = Vec<u8>, content_type = "application/vnd.syncml.dm+xml"),
    responses((status = 202, body = Submitted), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn raw_push(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
    q: Result<Query<RawQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(problem::from_bytes_rejection)?;
    let Query(q) = q.map_err(|e| Problem::malformed(None, format!("query: {}", e.body_text())))?;
    let ct_header = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ContentType::parse(ct_header).ok_or_else(|| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("Content-Type {ct_header:?} is not a DM message or notification type"),
        )
    })?;
    // Everything that shapes the push is in the hash, so that a replay under the same key with
    // another schedule or device is a conflict, not a silent replay (issue 12).
    let mut hasher_input = format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|",
        ct.as_str(),
        q.binding,
        q.ttl_seconds,
        q.priority,
        q.collapse_key,
        q.not_before,
        id,
    )
    .into_bytes();
    hasher_input.extend_from_slice(&body);
    let req = PushRequest {
        device: Some(id),
        binding: q.binding,
        content_type: Some(ct.as_str().to_owned()),
        body_base64: Some(B64.encode(&body)),
        ttl_seconds: q.ttl_seconds,
        priority: q.priority,
        collapse_key: q.collapse_key,
        not_before: q.not_before,
        ..Default::default()
    };
    let (status, s, replayed) = submit_request(
        &st,
        &tenant,
        req,
        validate::sha256_hex(&hasher_input),
        header_key(&headers),
    )
    .await?;
    Ok(submitted_response(status, s, replayed))
}

#[utoipa::path(post, path = "/v1/pushes/preview", request_body = PushRequest,
    responses((status = 200, body = PreviewResult), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn preview(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PreviewResult>, Problem> {
    let body = body.map_err(problem::from_bytes_rejection)?;
    let value: serde_json::Value = problem::parse_json(&body)?;
    let req: PushRequest = problem::from_value(value)?;
    let Prepared { push } = prepare(
        &st,
        &tenant,
        req,
        String::new(),
        None,
        crate::domain::now_ms(),
    )
    .await?;
    let bindings = previews(&st, &push)
        .into_iter()
        .map(|(binding, r)| match r {
            Ok(p) => BindingPreview {
                binding,
                ok: true,
                summary: Some(p.summary),
                units_hex: p.units_hex,
                error: None,
            },
            Err(e) => BindingPreview {
                binding,
                ok: false,
                summary: None,
                units_hex: vec![],
                error: Some(e.to_string()),
            },
        })
        .collect();
    Ok(Json(PreviewResult {
        content_type: push.content_type,
        payload_hex: hex::encode(&push.body),
        bindings,
    }))
}

#[utoipa::path(get, path = "/v1/pushes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = PushView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<PushView>, Problem> {
    match st.store.get_push(&tenant, &id).await? {
        Some(p) => Ok(Json(PushView::from_record(p))),
        None => Err(Problem::not_found("push", &id)),
    }
}

#[utoipa::path(get, path = "/v1/pushes", params(ListQuery),
    responses((status = 200, body = PushList), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PushList>, Problem> {
    let Query(q) = q.map_err(|e| Problem::malformed(None, format!("query: {}", e.body_text())))?;
    let state = q
        .state
        .as_deref()
        .map(|s| {
            PushState::parse(s)
                .ok_or_else(|| Problem::invalid("state", format!("{s:?} is not a push state")))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, st.limits.list_limit_max);
    let filter = PushFilter {
        device: q.device,
        state,
        before: q.before,
        limit,
    };
    let items = st.store.list_pushes(&tenant, &filter).await?;
    let next = (items.len() as u32 == limit)
        .then(|| items.last().map(|p| p.id.clone()))
        .flatten();
    Ok(Json(PushList {
        items: items.into_iter().map(PushView::from_record).collect(),
        next,
    }))
}

#[utoipa::path(delete, path = "/v1/pushes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Submitted), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<Submitted>, Problem> {
    match st
        .store
        .cancel(&tenant, &id, crate::domain::now_ms())
        .await?
    {
        CancelResult::Cancelled => Ok(Json(Submitted {
            id,
            state: PushState::Cancelled,
        })),
        CancelResult::NotFound => Err(Problem::not_found("push", &id)),
        CancelResult::TooLate(state) => Err(Problem::conflict(
            "not-cancellable",
            format!("push {id} is {state}: only queued or retry_wait pushes can be cancelled"),
        )),
    }
}
