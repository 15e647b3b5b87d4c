//! Request and response types of `/v1/pushes` (the OpenAPI schemas).

use serde::{Deserialize, Serialize};

use crate::api::{Problem, rfc3339, validate, validate::NotificationParams};
use crate::{
    domain::{BindingKind, ContentType, PushState},
    store::PushRecord,
};

/// Most items in one batch request.
pub const MAX_BATCH: usize = 1000;

/// `binding` of a push: `auto` or one binding type (OpenAPI schema only).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BindingChoice {
    Auto,
    Wap,
    Sip,
    Http,
    Obex,
}

/// `priority` of a push (OpenAPI schema only).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Normal,
    High,
}

/// Body of `POST /v1/pushes` (DESIGN §5). Exactly one of `body`, `body_base64`, `notification`;
/// exactly one of `device`, `bindings`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "device": "IMEI:490154203237518",
    "content_type": "application/vnd.syncml.dm+xml",
    "body": "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr/><SyncBody/></SyncML>",
    "ttl_seconds": 3600,
    "idempotency_key": "job-42"
}))]
pub struct PushRequest {
    /// A registered device id (an unknown one is 422).
    #[schema(example = "IMEI:490154203237518")]
    pub device: Option<String>,
    /// Inline bindings instead of a registered device.
    #[schema(value_type = Option<Vec<validate::BindingInput>>, min_items = 1, max_items = 16)]
    pub bindings: Option<Vec<validate::BindingInput>>,
    /// `auto` (default: the device's bindings in order, with fallback) or a binding type.
    #[schema(value_type = Option<BindingChoice>)]
    pub binding: Option<String>,
    /// Default `application/vnd.syncml.dm+xml` with `body`; required with `body_base64`.
    /// Matched case-insensitively, parameters ignored (RFC 9110 §8.3.1).
    #[schema(value_type = Option<ContentType>)]
    pub content_type: Option<String>,
    /// Text payload: a well-formed XML DM message. Exactly one of `body`, `body_base64`,
    /// `notification`.
    #[schema(
        min_length = 1,
        example = "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr/><SyncBody/></SyncML>"
    )]
    pub body: Option<String>,
    /// Binary payload, base64 (WBXML, or a ready-made package #0).
    pub body_base64: Option<String>,
    /// Build a package #0 notification from the device's `dm` credentials.
    pub notification: Option<NotificationParams>,
    /// DM bootstrap (DESIGN §10.4): `body`/`body_base64` hold the bootstrap document; the WAP
    /// binding adds the WSP `SEC` and `MAC` Content-Type parameters. Other bindings refuse it.
    pub bootstrap: Option<BootstrapParams>,
    /// `normal` (default) or `high`.
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<String>,
    /// Time to live from submission (default `queue.default_ttl_seconds`, at most
    /// `queue.max_ttl_seconds`).
    #[serde(default, deserialize_with = "validate::whole::deserialize")]
    #[schema(minimum = 1, example = 3600)]
    pub ttl_seconds: Option<i64>,
    /// RFC 3339 time before which no attempt is made (before the end of the TTL).
    #[schema(format = DateTime)]
    pub not_before: Option<String>,
    /// A repeated submission with the same key returns the first push (200) instead of a new one.
    #[schema(min_length = 1, max_length = 200, example = "job-42")]
    pub idempotency_key: Option<String>,
    /// A newer push with the same key supersedes a pending one.
    #[schema(min_length = 1, max_length = 200)]
    pub collapse_key: Option<String>,
    /// Where this push's result webhooks go (the tenant needs a `webhook_secret`).
    pub callback_url: Option<String>,
}

/// `bootstrap` of a push (DESIGN §10.4). `imsi` and `pin` are write-only: they key the MAC at
/// submit time and are neither stored nor shown anywhere; `Debug` hides them.
#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapParams {
    /// `netwpin`, `userpin`, `usernetwpin` or `userpinmac` (OMA ProvBoot SEC methods).
    #[schema(value_type = BootstrapSec)]
    pub sec: String,
    /// IMSI digits (at most 15), for `netwpin` and `usernetwpin`.
    #[schema(write_only, pattern = "^[0-9]{1,15}$")]
    pub imsi: Option<String>,
    /// User PIN, for `userpin`, `usernetwpin` and `userpinmac`.
    #[schema(write_only)]
    pub pin: Option<String>,
}

/// The SEC methods of `bootstrap.sec`, for the OpenAPI document (the field is validated in
/// `submission::sign_bootstrap`, which names it in a 422).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootstrapSec {
    Netwpin,
    Userpin,
    Usernetwpin,
    Userpinmac,
}

impl std::fmt::Debug for BootstrapParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapParams")
            .field("sec", &self.sec)
            .field("imsi", &self.imsi.as_ref().map(|_| "<redacted>"))
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
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
    /// The `GET /v1/pushes/{id}` view of a record (also the `data` of a webhook).
    pub fn from_record(p: PushRecord) -> Self {
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RawQuery {
    /// As `binding` of `POST /v1/pushes`.
    #[param(value_type = Option<BindingChoice>)]
    pub binding: Option<String>,
    /// As `ttl_seconds` of `POST /v1/pushes`.
    #[param(minimum = 1)]
    pub ttl_seconds: Option<i64>,
    #[param(value_type = Option<Priority>)]
    pub priority: Option<String>,
    #[param(min_length = 1, max_length = 200)]
    pub collapse_key: Option<String>,
    #[param(format = DateTime)]
    pub not_before: Option<String>,
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this device's pushes.
    pub device: Option<String>,
    /// Only pushes in this state.
    #[param(value_type = Option<PushState>)]
    pub state: Option<String>,
    /// Cursor: the last id of the previous page (listing is newest first).
    pub before: Option<String>,
    /// Page size: default 100, clamped to 1..=1000.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PushList {
    pub items: Vec<PushView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}
