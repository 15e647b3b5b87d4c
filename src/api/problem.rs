//! RFC 9457 problem details: every 4xx/5xx of the API is `application/problem+json` and names
//! what is wrong (and, for input errors, which field).

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type (relative, documented in docs/api.md).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The offending request field (JSON path such as `bindings[0].msisdn`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
        }
    }

    /// 422: a well-formed request whose `field` has an unacceptable value.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let field = field.into();
        let detail = detail.into();
        let mut p = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "Invalid field",
            format!("{field}: {detail}"),
        );
        p.field = Some(field);
        p
    }

    /// 400: the body is not the JSON we expect.
    pub fn malformed(field: Option<String>, detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        );
        p.field = field;
        p
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} {id:?} not found"),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "missing or unknown bearer token (Authorization: Bearer <token>)",
        )
    }

    pub fn conflict(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, "Conflict", detail)
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Payload too large",
            detail,
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(message = "Store error.", error = %e);
        if e.is_transient() {
            Problem::unavailable(format!("store unavailable: {e}"))
        } else {
            Problem::internal(format!("store error: {e}"))
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

/// Maps an axum body rejection (size limit, unreadable body) to a problem.
pub fn from_bytes_rejection(r: axum::extract::rejection::BytesRejection) -> Problem {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::too_large(format!("request body exceeds the limit: {}", r.body_text()))
    } else {
        Problem::malformed(
            None,
            format!("request body could not be read: {}", r.body_text()),
        )
    }
}

/// Parses JSON naming the field path of the first error (serde_path_to_error).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = (path != ".").then_some(path);
        let detail = match &field {
            Some(f) => format!("invalid JSON at {f}: {inner}"),
            None => format!("invalid JSON: {inner}"),
        };
        Problem::malformed(field, detail)
    })
}

/// As [`parse_json`], from an already parsed value (batch items).
pub fn from_value<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = (path != ".").then_some(path);
        let detail = match &field {
            Some(f) => format!("invalid value at {f}: {inner}"),
            None => format!("invalid value: {inner}"),
        };
        Problem::malformed(field, detail)
    })
}
