//! The OpenAPI 3.1 document, generated from the handlers and DTOs (utoipa), then completed with
//! what is true of every route and that the handler annotations would only repeat (issue 13):
//!
//! - every authenticated route answers 401 (with `WWW-Authenticate: Bearer`) without a token;
//! - every route with a request body answers 400 (unparseable) and 413 (over
//!   `server.body_limit_bytes`); every `/v1` route answers 503 when the store is unavailable;
//! - every 4xx/5xx body is `application/problem+json` (RFC 9457, the `Problem` schema);
//! - the public routes `/healthz`, `/readyz`, `/metrics` and `/openapi.json` (defined in
//!   `api/mod.rs` without annotations so that their owners can change them freely).
//!
//! `scripts/schemathesis.sh` holds the document to the server's behaviour (CI).

use axum::{Json, extract::State};
use serde_json::{Value, json};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{ApiLimits, SharedState, admin, devices, problem::Problem, pushes, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "dmpushd", description = "OMA DM push gateway REST API (DESIGN §5)"),
    paths(
        devices::put, devices::get, devices::delete, devices::list,
        pushes::create, pushes::batch, pushes::raw_push, pushes::preview, pushes::get, pushes::list,
        pushes::cancel, webhooks::retry,
        admin::status, admin::suspend, admin::resume,
    ),
    components(schemas(
        Problem, devices::DeviceBody, devices::DeviceView, devices::DeviceList,
        pushes::PushRequest, pushes::Submitted, pushes::PushView, pushes::EventView, pushes::PushList,
        pushes::BatchItem, pushes::BatchResult, pushes::PreviewResult, pushes::BindingPreview,
        crate::domain::DeviceBinding, crate::domain::HmacCredentials, crate::domain::DmCredentials,
        crate::domain::WapBearer, crate::domain::HttpFraming, crate::domain::ContentType,
        crate::domain::PushState, crate::domain::BindingKind,
        super::validate::BindingInput, super::validate::NotificationParams, super::validate::UiMode,
        super::validate::Initiator, pushes::BindingChoice, pushes::Priority,
        webhooks::WebhookRetry,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

const PROBLEM_JSON: &str = "application/problem+json";
const METHODS: [&str; 4] = ["get", "put", "post", "delete"];

/// The document served at `/openapi.json`, with the limits of the running configuration.
pub fn document(limits: &ApiLimits) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    add_public_routes(&mut doc);
    complete_responses(&mut doc);
    // `ttl_seconds` above queue.max_ttl_seconds is refused (422): the bound is configuration.
    let max_ttl = json!(limits.max_ttl_seconds);
    if let Some(p) = doc.pointer_mut("/components/schemas/PushRequest/properties/ttl_seconds") {
        p["maximum"] = max_ttl.clone();
    }
    if let Some(params) = doc
        .pointer_mut("/paths/~1v1~1devices~1{id}~1push/post/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params.iter_mut().filter(|p| p["name"] == "ttl_seconds") {
            p["schema"]["maximum"] = max_ttl.clone();
        }
    }
    // Facts the derive cannot state: a batch holds 1 to MAX_BATCH objects, each validated on its
    // own (a bad item gets its problem in its `results` entry, the response is still 200, so the
    // item schema is "an object": a PushRequest is what gets it accepted); a binding object
    // (`deny_unknown_fields` on an internally tagged enum) takes no other keys.
    if let Some(s) = doc
        .pointer_mut("/paths/~1v1~1pushes~1batch/post/requestBody/content/application~1json/schema")
    {
        *s = json!({
            "type": "array",
            "minItems": 1,
            "maxItems": pushes::MAX_BATCH,
            "items": {"type": "object", "description": "A push as in `POST /v1/pushes` \
                (#/components/schemas/PushRequest); its result is the entry of the same index."},
        });
    }
    // The raw push takes the DM message's octets as they are (XML well-formedness is checked
    // and reported as 422, like every rule a schema cannot state).
    if let Some(rb) = doc.pointer_mut("/paths/~1v1~1devices~1{id}~1push/post/requestBody") {
        let any = json!({"schema": {"description": "The DM message or package #0, as octets."}});
        rb["content"] = json!({
            "application/vnd.syncml.dm+xml": any.clone(),
            "application/vnd.syncml.dm+wbxml": any.clone(),
            "application/vnd.syncml.notification": any,
        });
        rb["required"] = json!(true);
    }
    if let Some(variants) = doc
        .pointer_mut("/components/schemas/BindingInput/oneOf")
        .and_then(Value::as_array_mut)
    {
        for v in variants {
            v["additionalProperties"] = json!(false);
        }
    }
    doc
}

pub async fn serve(State(st): State<SharedState>) -> Json<Value> {
    Json(document(&st.limits))
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

fn complete_responses(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else {
                continue;
            };
            let authenticated = op.contains_key("security");
            let has_body = op.contains_key("requestBody");
            // Query strings are parsed strictly (unknown or ill-typed parameters are 400).
            let has_query = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            let Some(responses) = responses else { continue };
            if authenticated {
                let mut r = problem_response("Missing or unknown bearer token.");
                r["headers"] = json!({"WWW-Authenticate": {
                    "description": "`Bearer`", "schema": {"type": "string", "const": "Bearer"}}});
                responses.entry("401").or_insert(r);
            }
            if has_query && !has_body {
                responses.entry("400").or_insert_with(|| {
                    problem_response("An unknown or ill-typed query parameter.")
                });
            }
            if has_body {
                responses
                    .entry("400")
                    .or_insert_with(|| problem_response("The body is not the JSON expected."));
                responses.entry("413").or_insert_with(|| {
                    problem_response("The body exceeds `server.body_limit_bytes`.")
                });
            }
            if path.starts_with("/v1/") {
                responses
                    .entry("503")
                    .or_insert_with(|| problem_response("The store is unavailable; retry."));
            }
            // Every error body is RFC 9457 problem details, whatever the annotation said.
            for (code, r) in responses.iter_mut() {
                if code.as_str() >= "400" && code.len() == 3 {
                    let description = r
                        .get("description")
                        .and_then(Value::as_str)
                        .filter(|d| !d.is_empty())
                        .unwrap_or("Problem details (RFC 9457).")
                        .to_owned();
                    let headers = r.get("headers").cloned();
                    *r = problem_response(&description);
                    if let Some(h) = headers {
                        r["headers"] = h;
                    }
                }
            }
        }
    }
}

fn add_public_routes(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let text = |description: &str, media: &str| json!({"description": description, "content": {media: {"schema": {"type": "string"}}}});
    paths.insert(
        "/healthz".into(),
        json!({"get": {
            "operationId": "healthz",
            "description": "Liveness: the process answers. No token.",
            "responses": {"200": text("Alive: `ok`.", "text/plain")},
        }}),
    );
    paths.insert(
        "/readyz".into(),
        json!({"get": {
            "operationId": "readyz",
            "description": "Readiness: this replica can accept pushes. The body reports the store \
                            and each binding. No token.",
            "responses": {
                "200": {"description": "Ready.", "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["store"],
                    "properties": {
                        "store": {"type": "string"},
                        "bindings": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                }}}},
                "503": problem_response("Not ready (the reason is in `detail`)."),
            },
        }}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {
            "operationId": "metrics",
            "description": "Prometheus text exposition format 0.0.4. No token.",
            "responses": {"200": text("Metrics.", "text/plain; version=0.0.4")},
        }}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {
            "operationId": "openapi",
            "description": "This document. No token.",
            "responses": {"200": {"description": "OpenAPI 3.1.", "content": {
                "application/json": {"schema": {"type": "object"}}}}},
        }}),
    );
}
