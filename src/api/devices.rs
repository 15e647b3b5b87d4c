//! `/v1/devices`: the device registry (per tenant).

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State, rejection::BytesRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{Problem, SharedState, Tenant, problem, rfc3339, validate};
use crate::domain::{Device, DeviceBinding, DmCredentials};

/// Body of `PUT /v1/devices/{id}`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "bindings": [
        {"type": "http", "url": "https://device.example/push", "framing": "direct"},
        {"type": "wap", "msisdn": "+447700900123"}
    ],
    "dm": {"server_id": "com.example.dms", "server_password": "srvpass", "server_nonce": "AQIDBAUGBwg="}
}))]
pub struct DeviceBody {
    /// Ordered: `auto` pushes try them in this order.
    #[schema(value_type = Vec<validate::BindingInput>, min_items = 1, max_items = 16)]
    pub bindings: Vec<validate::BindingInput>,
    #[serde(default)]
    pub dm: Option<DmCredentials>,
}

/// A device as returned by the API: secrets removed.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub id: String,
    #[schema(value_type = Vec<Object>)]
    pub bindings: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub dm: Option<serde_json::Value>,
    pub created_at: String,
    pub updated_at: String,
}

impl DeviceView {
    pub fn from_device(d: &Device) -> Self {
        Self {
            id: d.id.clone(),
            bindings: d.bindings.iter().map(public_binding).collect(),
            dm: d
                .dm
                .as_ref()
                .map(|dm| serde_json::json!({"server_id": dm.server_id})),
            created_at: rfc3339(d.created_at_ms),
            updated_at: rfc3339(d.updated_at_ms),
        }
    }
}

/// A binding as JSON without its secrets (write-only, DESIGN §5).
pub fn public_binding(b: &DeviceBinding) -> serde_json::Value {
    let mut v = serde_json::to_value(b).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("password");
        // URL user-info is a secret too (issue 12).
        if let DeviceBinding::Http { url, .. } = b {
            obj.insert("url".into(), serde_json::Value::String(url.redacted()));
        }
        if let Some(h) = obj.get_mut("hmac").and_then(|h| h.as_object_mut()) {
            h.remove("password");
            h.remove("nonce");
        }
    }
    v
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Cursor: the last id of the previous page.
    pub after: Option<String>,
    /// Page size: default 100, clamped to 1..=1000.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceList {
    pub items: Vec<DeviceView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[utoipa::path(put, path = "/v1/devices/{id}", request_body = DeviceBody,
    params(("id" = String, Path, description = "DM DevID, e.g. IMEI:490154203237518")),
    responses((status = 201, body = DeviceView), (status = 200, body = DeviceView), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn put(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(problem::from_bytes_rejection)?;
    validate::device_id(&id)?;
    let req: DeviceBody = problem::parse_json(&body)?;
    let bindings = validate::bindings(&req.bindings, "bindings")?;
    validate::targets(&st.bindings, &bindings, "bindings")?;
    if let Some(dm) = &req.dm {
        validate::dm(dm)?;
    }
    let now = crate::domain::now_ms();
    let device = Device {
        tenant: tenant.to_string(),
        id,
        bindings,
        dm: req.dm,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let created = st.store.put_device(&device).await?;
    let stored = st
        .store
        .get_device(&device.tenant, &device.id)
        .await?
        .unwrap_or(device);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(DeviceView::from_device(&stored))).into_response())
}

#[utoipa::path(get, path = "/v1/devices/{id}", params(("id" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, Problem> {
    match st.store.get_device(&tenant, &id).await? {
        Some(d) => Ok(Json(DeviceView::from_device(&d))),
        None => Err(Problem::not_found("device", &id)),
    }
}

#[utoipa::path(delete, path = "/v1/devices/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    if st.store.delete_device(&tenant, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("device", &id))
    }
}

#[utoipa::path(get, path = "/v1/devices", params(ListQuery),
    responses((status = 200, body = DeviceList)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<SharedState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeviceList>, Problem> {
    let Query(q) = q.map_err(|e| Problem::malformed(None, format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100).clamp(1, st.limits.list_limit_max);
    let items = st
        .store
        .list_devices(&tenant, q.after.as_deref(), limit)
        .await?;
    let next = (items.len() as u32 == limit)
        .then(|| items.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(DeviceList {
        items: items.iter().map(DeviceView::from_device).collect(),
        next,
    }))
}
