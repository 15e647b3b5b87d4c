//! `/v1/pushes`: submit (single, batch, raw), preview, read, list, cancel.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Serialize};

use super::{ApiState, Problem, Tenant, problem, rfc3339, validate, validate::NotificationParams};
use crate::{
    binding::{CannotCarry, Preview},
    codec::notification,
    domain::{BindingKind, ContentType, DeviceBinding, PushState},
    store::{CancelResult, Enqueued, NewPush, PushFilter, PushRecord},
};

/// Most items in one batch request.
pub const MAX_BATCH: usize = 1000;

/// Body of `POST /v1/pushes` (DESIGN §5). Exactly one of `body`, `body_base64`, `notification`;
/// exactly one of `device`, `bindings`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// A registered device id.
    pub device: Option<String>,
    /// Inline bindings instead of a registered device.
    #[schema(value_type = Option<Vec<DeviceBinding>>)]
    pub bindings: Option<Vec<validate::BindingInput>>,
    /// `auto` (default: the device's bindings in order, with fallback) or a binding type.
    pub binding: Option<String>,
    pub content_type: Option<String>,
    /// Text payload (XML DM message).
    pub body: Option<String>,
    /// Binary payload (WBXML, or a ready-made package #0).
    pub body_base64: Option<String>,
    /// Build a package #0 notification from the device's `dm` credentials.
    pub notification: Option<NotificationParams>,
    /// `normal` (default) or `high`.
    pub priority: Option<String>,
    /// Time to live from submission (default from `queue.default_ttl_seconds`).
    pub ttl_seconds: Option<i64>,
    /// RFC 3339 time before which no attempt is made.
    pub not_before: Option<String>,
    pub idempotency_key: Option<String>,
    /// A newer push with the same key supersedes a pending one.
    pub collapse_key: Option<String>,
    pub callback_url: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Submitted {
    pub id: String,
    pub state: PushState,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub at: String,
    pub state: PushState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<BindingKind>,
    pub attempt: u32,
    pub detail: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PushView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub state: PushState,
    /// The binding of the latest attempt, else the requested one (`auto`).
    pub binding: String,
    pub attempts: u32,
    pub priority: String,
    pub content_type: ContentType,
    pub created_at: String,
    pub updated_at: String,
    pub not_before: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub events: Vec<EventView>,
}

impl PushView {
    fn from_record(p: PushRecord) -> Self {
        let binding = p
            .last_binding
            .or(p.binding_choice)
            .map(|b| b.as_str().to_owned())
            .unwrap_or_else(|| "auto".into());
        Self {
            id: p.id,
            device: p.device_id,
            state: p.state,
            binding,
            attempts: p.attempts,
            priority: if p.priority > 0 { "high" } else { "normal" }.into(),
            content_type: p.content_type,
            created_at: rfc3339(p.created_at_ms),
            updated_at: rfc3339(p.updated_at_ms),
            not_before: rfc3339(p.not_before_ms),
            expires_at: rfc3339(p.expires_at_ms),
            collapse_key: p.collapse_key,
            idempotency_key: p.idempotency_key,
            events: p
                .events
                .into_iter()
                .map(|e| EventView {
                    at: rfc3339(e.at_ms),
                    state: e.state,
                    binding: e.binding,
                    attempt: e.attempt,
                    detail: e.detail,
                })
                .collect(),
        }
    }
}

/// A validated request, before the capability check.
struct Prepared {
    push: NewPush,
}

async fn prepare(
    st: &ApiState,
    tenant: &str,
    req: PushRequest,
    request_hash: String,
    header_key: Option<String>,
    now_ms: i64,
) -> Result<Prepared, Problem> {
    // Target.
    let (device_id, bindings, device) = match (&req.device, req.bindings) {
        (Some(_), Some(_)) => {
            return Err(Problem::invalid(
                "device",
                "give either device or bindings, not both",
            ));
        }
        (None, None) => return Err(Problem::invalid("device", "required (or inline bindings)")),
        (Some(id), None) => match st.store.get_device(tenant, id).await? {
            Some(d) => (Some(id.clone()), d.bindings.clone(), Some(d)),
            None => return Err(Problem::invalid("device", format!("unknown device {id:?}"))),
        },
        (None, Some(list)) => (None, validate::bindings(&list, "bindings")?, None),
    };
    let choice = validate::binding_choice(req.binding.as_deref())?;
    if let Some(kind) = choice
        && !bindings.iter().any(|b| b.kind() == kind)
    {
        return Err(Problem::invalid(
            "binding",
            format!("the target has no {kind} binding"),
        ));
    }

    // Payload.
    let given: Vec<&str> = [
        req.body.as_ref().map(|_| "body"),
        req.body_base64.as_ref().map(|_| "body_base64"),
        req.notification.as_ref().map(|_| "notification"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() != 1 {
        let field = given.get(1).copied().unwrap_or("body");
        return Err(Problem::invalid(
            field,
            format!(
                "exactly one of body, body_base64, notification is required (got {})",
                if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.join(", ")
                }
            ),
        ));
    }
    let declared = req
        .content_type
        .as_deref()
        .map(validate::content_type)
        .transpose()?;
    let (content_type, body) = if let Some(text) = req.body {
        let ct = declared.unwrap_or(ContentType::DmXml);
        if ct != ContentType::DmXml {
            return Err(Problem::invalid(
                "content_type",
                format!("{} is binary: send it as body_base64", ct.as_str()),
            ));
        }
        (ct, text.into_bytes())
    } else if let Some(b64) = req.body_base64 {
        let ct = declared
            .ok_or_else(|| Problem::invalid("content_type", "required with body_base64"))?;
        let bytes = B64
            .decode(b64.trim())
            .map_err(|e| Problem::invalid("body_base64", format!("not valid base64: {e}")))?;
        (ct, bytes)
    } else {
        let params = req.notification.unwrap_or_default();
        if let Some(ct) = declared
            && ct != ContentType::Notification
        {
            return Err(Problem::invalid(
                "content_type",
                "a notification is application/vnd.syncml.notification",
            ));
        }
        let dm = device.as_ref().and_then(|d| d.dm.clone()).ok_or_else(|| {
            Problem::invalid(
                "notification",
                "the device has no dm credentials (server_id, server_password, server_nonce) to build package #0",
            )
        })?;
        (ContentType::Notification, build_notification(&params, &dm)?)
    };
    if body.is_empty() {
        return Err(Problem::invalid("body", "the payload is empty"));
    }
    if body.len() > st.limits.max_payload_bytes {
        return Err(Problem::too_large(format!(
            "payload is {} bytes; server.max_payload_bytes is {}",
            body.len(),
            st.limits.max_payload_bytes
        )));
    }
    if content_type == ContentType::DmXml {
        validate::xml(
            &body,
            if given[0] == "body" {
                "body"
            } else {
                "body_base64"
            },
        )?;
    }

    // Timing.
    let ttl = match req.ttl_seconds {
        None => st.limits.default_ttl_seconds as i64,
        Some(t) if t <= 0 => {
            return Err(Problem::invalid(
                "ttl_seconds",
                format!("must be positive (got {t})"),
            ));
        }
        Some(t) if t as u64 > st.limits.max_ttl_seconds => {
            return Err(Problem::invalid(
                "ttl_seconds",
                format!(
                    "{t} exceeds queue.max_ttl_seconds ({})",
                    st.limits.max_ttl_seconds
                ),
            ));
        }
        Some(t) => t,
    };
    let expires_at_ms = now_ms + ttl * 1000;
    let not_before_ms = match &req.not_before {
        None => now_ms,
        Some(s) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    Problem::invalid("not_before", format!("{s:?} is not an RFC 3339 time: {e}"))
                })?;
            let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
            if ms >= expires_at_ms {
                return Err(Problem::invalid(
                    "not_before",
                    "is at or after the end of the TTL; the push would expire unsent",
                ));
            }
            ms.max(now_ms)
        }
    };
    let priority = validate::priority(req.priority.as_deref())?;
    let idempotency_key = req.idempotency_key.or(header_key);
    validate::key(&idempotency_key, "idempotency_key")?;
    validate::key(&req.collapse_key, "collapse_key")?;
    if let Some(cb) = &req.callback_url {
        match url::Url::parse(cb) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
            _ => {
                return Err(Problem::invalid(
                    "callback_url",
                    format!("{cb:?} is not an http(s) URL"),
                ));
            }
        }
    }

    Ok(Prepared {
        push: NewPush {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.to_owned(),
            device_id,
            bindings,
            binding_choice: choice,
            content_type,
            body,
            priority,
            created_at_ms: now_ms,
            not_before_ms,
            expires_at_ms,
            max_attempts: st.limits.max_attempts,
            request_hash: idempotency_key.as_ref().map(|_| request_hash),
            idempotency_key,
            collapse_key: req.collapse_key,
            callback_url: req.callback_url,
        },
    })
}

fn build_notification(
    p: &NotificationParams,
    dm: &crate::store::DmCredentials,
) -> Result<Vec<u8>, Problem> {
    use notification::{Initiator, Trigger, UiMode};
    let ui_mode = match p.ui_mode.as_deref() {
        None | Some("not-specified") => UiMode::NotSpecified,
        Some("background") => UiMode::Background,
        Some("informative") => UiMode::Informative,
        Some("user-interaction") => UiMode::UserInteraction,
        Some(o) => {
            return Err(Problem::invalid(
                "notification.ui_mode",
                format!("{o:?} is not not-specified, background, informative or user-interaction"),
            ));
        }
    };
    let initiator = match p.initiator.as_deref() {
        None | Some("server") => Initiator::Server,
        Some("client") => Initiator::Client,
        Some(o) => {
            return Err(Problem::invalid(
                "notification.initiator",
                format!("{o:?} is not server or client"),
            ));
        }
    };
    let session_id = match p.session_id {
        None => rand::random_range(1..=0xFFFFu16),
        Some(s) if (1..=0xFFFF).contains(&s) => s as u16,
        Some(s) => {
            return Err(Problem::invalid(
                "notification.session_id",
                format!("{s} is not in 1..=65535"),
            ));
        }
    };
    let vendor = match &p.vendor_base64 {
        None => Vec::new(),
        Some(v) => B64.decode(v.trim()).map_err(|e| {
            Problem::invalid(
                "notification.vendor_base64",
                format!("not valid base64: {e}"),
            )
        })?,
    };
    let version = p.version.unwrap_or(notification::DEFAULT_VERSION);
    let nonce = B64
        .decode(dm.server_nonce.trim())
        .map_err(|_| Problem::invalid("dm.server_nonce", "stored nonce is not base64"))?;
    let trigger = Trigger {
        version,
        ui_mode,
        initiator,
        session_id,
        server_id: dm.server_id.clone(),
        vendor,
    };
    notification::build(&trigger, dm.server_password.as_bytes(), &nonce)
        .map_err(|e| Problem::invalid("notification", e.to_string()))
}

/// The bindings an attempt may use, with each one's preview (pure).
fn previews(st: &ApiState, push: &NewPush) -> Vec<(BindingKind, Result<Preview, CannotCarry>)> {
    push.bindings
        .iter()
        .filter(|b| push.binding_choice.is_none_or(|k| b.kind() == k))
        .map(|b| {
            let r = match st.bindings.get(b.kind()) {
                None => Err(CannotCarry::NotConfigured(b.kind())),
                Some(binding) => binding.preview(b, push.content_type, &push.body),
            };
            (b.kind(), r)
        })
        .collect()
}

/// Rejects a push no binding can carry (DESIGN §5: "payload too large for the chosen binding").
fn check_capability(st: &ApiState, push: &NewPush) -> Result<(), Problem> {
    let candidates = push
        .bindings
        .iter()
        .filter(|b| push.binding_choice.is_none_or(|k| b.kind() == k));
    let mut reasons = Vec::new();
    for b in candidates {
        match st.bindings.get(b.kind()) {
            None => reasons.push(format!(
                "{}: {}",
                b.kind(),
                CannotCarry::NotConfigured(b.kind())
            )),
            Some(binding) => match binding.check(b, push.content_type, &push.body) {
                Ok(()) => return Ok(()),
                Err(e) => reasons.push(format!("{}: {e}", b.kind())),
            },
        }
    }
    let field = if push.binding_choice.is_some() {
        "binding"
    } else {
        "body"
    };
    Err(Problem::invalid(
        field,
        format!("no binding can deliver this push ({})", reasons.join("; ")),
    ))
}

async fn submit(
    st: &ApiState,
    tenant: &str,
    value: serde_json::Value,
    header_key: Option<String>,
) -> Result<(StatusCode, Submitted, bool), Problem> {
    // Hashing the canonical request is only needed to compare idempotent replays.
    let keyed = header_key.is_some() || value.get("idempotency_key").is_some_and(|k| !k.is_null());
    let hash = if keyed {
        validate::request_hash(&value)
    } else {
        String::new()
    };
    let req: PushRequest = problem::from_value(value)?;
    submit_request(st, tenant, req, hash, header_key).await
}

async fn submit_request(
    st: &ApiState,
    tenant: &str,
    req: PushRequest,
    hash: String,
    header_key: Option<String>,
) -> Result<(StatusCode, Submitted, bool), Problem> {
    let now = crate::domain::now_ms();
    let Prepared { push } = prepare(st, tenant, req, hash, header_key, now).await?;
    check_capability(st, &push)?;
    match st.store.enqueue(push).await? {
        Enqueued::Created { id } => {
            st.metrics
                .pushes_accepted
                .with_label_values(&[tenant])
                .inc();
            Ok((
                StatusCode::ACCEPTED,
                Submitted {
                    id,
                    state: PushState::Queued,
                },
                false,
            ))
        }
        Enqueued::Replayed { id, state } => {
            Ok((StatusCode::ACCEPTED, Submitted { id, state }, true))
        }
        Enqueued::KeyConflict { id } => Err(Problem::conflict(
            "idempotency-key-reused",
            format!("idempotency_key was already used for push {id} with a different request"),
        )),
    }
}

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
    State(st): State<ApiState>,
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    pub index: usize,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<PushState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    pub accepted: usize,
    pub rejected: usize,
    pub results: Vec<BatchItem>,
}

#[utoipa::path(post, path = "/v1/pushes/batch", request_body = Vec<PushRequest>,
    responses((status = 200, body = BatchResult), (status = 400, body = Problem)), security(("bearer" = [])))]
pub async fn batch(
    State(st): State<ApiState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchResult>, Problem> {
    let body = body.map_err(problem::from_bytes_rejection)?;
    let items: Vec<serde_json::Value> = problem::parse_json(&body)?;
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RawQuery {
    pub binding: Option<String>,
    pub ttl_seconds: Option<i64>,
    pub priority: Option<String>,
    pub collapse_key: Option<String>,
    pub not_before: Option<String>,
}

#[utoipa::path(post, path = "/v1/devices/{id}/push",
    params(("id" = String, Path), RawQuery),
    request_body(content = Vec<u8>, content_type = "application/vnd.syncml.dm+xml"),
    responses((status = 202, body = Submitted), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn raw_push(
    State(st): State<ApiState>,
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
    let mut hasher_input = format!(
        "{}|{:?}|{:?}|{:?}|{:?}|",
        ct.as_str(),
        q.binding,
        q.ttl_seconds,
        q.priority,
        q.collapse_key
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BindingPreview {
    pub binding: BindingKind,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units_hex: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PreviewResult {
    pub content_type: ContentType,
    /// The DM payload itself, hex.
    pub payload_hex: String,
    pub bindings: Vec<BindingPreview>,
}

#[utoipa::path(post, path = "/v1/pushes/preview", request_body = PushRequest,
    responses((status = 200, body = PreviewResult), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn preview(
    State(st): State<ApiState>,
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
    State(st): State<ApiState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<PushView>, Problem> {
    match st.store.get_push(&tenant, &id).await? {
        Some(p) => Ok(Json(PushView::from_record(p))),
        None => Err(Problem::not_found("push", &id)),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub device: Option<String>,
    pub state: Option<String>,
    /// Cursor: the last id of the previous page (listing is newest first).
    pub before: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PushList {
    pub items: Vec<PushView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[utoipa::path(get, path = "/v1/pushes", params(ListQuery),
    responses((status = 200, body = PushList), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<ApiState>,
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
    State(st): State<ApiState>,
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
