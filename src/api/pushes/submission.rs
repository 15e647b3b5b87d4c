//! Request → [`NewPush`]: target, payload, timing and key validation, the capability check and
//! enqueueing. The checks that need no store are plain functions ([`target`], [`new_push`]), so
//! they are testable without axum or a database.

use axum::http::StatusCode;
use base64::{Engine, engine::general_purpose::STANDARD as B64};

use super::dto::{BootstrapParams, PushRequest, Submitted};
use crate::api::{ApiLimits, ApiState, Problem, problem, validate, validate::NotificationParams};
use crate::{
    binding::{CannotCarry, Preview},
    codec::{bootstrap, notification},
    domain::{BindingKind, ContentType, DeviceBinding, PushState},
    store::{DmCredentials, Enqueued, NewPush},
};

/// A validated request, before the capability check.
pub(super) struct Prepared {
    pub(super) push: NewPush,
}

/// What a request names as its target, before the store is asked about a device.
#[derive(Debug)]
pub enum TargetRef {
    /// A registered device id.
    Device(String),
    /// Inline bindings, already validated.
    Inline(Vec<DeviceBinding>),
}

/// The resolved target of a push.
#[derive(Debug, Default)]
pub struct Target {
    /// The registered device, if the request named one.
    pub device_id: Option<String>,
    pub bindings: Vec<DeviceBinding>,
    /// The device's DM credentials, needed to build a package #0 notification.
    pub dm: Option<DmCredentials>,
}

/// Exactly one of `device` and `bindings` (pure).
pub fn target(req: &PushRequest) -> Result<TargetRef, Problem> {
    match (&req.device, &req.bindings) {
        (Some(_), Some(_)) => Err(Problem::invalid(
            "device",
            "give either device or bindings, not both",
        )),
        (None, None) => Err(Problem::invalid("device", "required (or inline bindings)")),
        (Some(id), None) => Ok(TargetRef::Device(id.clone())),
        (None, Some(list)) => Ok(TargetRef::Inline(validate::bindings(list, "bindings")?)),
    }
}

pub(super) async fn prepare(
    st: &ApiState,
    tenant: &str,
    req: PushRequest,
    request_hash: String,
    header_key: Option<String>,
    now_ms: i64,
) -> Result<Prepared, Problem> {
    let target = match target(&req)? {
        TargetRef::Device(id) => match st.store.get_device(tenant, &id).await? {
            Some(d) => Target {
                device_id: Some(id),
                bindings: d.bindings,
                dm: d.dm,
            },
            None => return Err(Problem::invalid("device", format!("unknown device {id:?}"))),
        },
        TargetRef::Inline(bindings) => Target {
            device_id: None,
            bindings,
            dm: None,
        },
    };
    // allow_targets on literal addresses (DESIGN §10.3); a registered device's were checked at
    // registration, and again here because the operator may have narrowed the list since.
    let at = if target.device_id.is_some() {
        "device.bindings"
    } else {
        "bindings"
    };
    validate::targets(&st.bindings, &target.bindings, at)?;
    let push = new_push(
        &st.limits,
        &st.webhooks,
        tenant,
        req,
        target,
        request_hash,
        header_key,
        now_ms,
    )?;
    Ok(Prepared { push })
}

/// Validates the rest of a request against a resolved target and builds the push (pure apart
/// from the new push id and a random notification session id). `request_hash` is kept only
/// when the push has an idempotency key (body or `Idempotency-Key` header; the body wins).
#[allow(clippy::too_many_arguments)]
pub fn new_push(
    limits: &ApiLimits,
    webhooks: &crate::webhook::Targets,
    tenant: &str,
    req: PushRequest,
    target: Target,
    request_hash: String,
    header_key: Option<String>,
    now_ms: i64,
) -> Result<NewPush, Problem> {
    let Target {
        device_id,
        bindings,
        dm,
    } = target;
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
    let (mut content_type, mut body) = if let Some(text) = req.body {
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
        let dm = dm.ok_or_else(|| {
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
    if body.len() > limits.max_payload_bytes {
        return Err(Problem::too_large(format!(
            "payload is {} bytes; server.max_payload_bytes is {}",
            body.len(),
            limits.max_payload_bytes
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
    let bootstrap = match &req.bootstrap {
        None => None,
        Some(b) => {
            let (ct, wbxml, sig) = sign_bootstrap(b, content_type, body, given[0])?;
            content_type = ct;
            body = wbxml;
            Some(sig)
        }
    };

    // Timing.
    let ttl = match req.ttl_seconds {
        None => limits.default_ttl_seconds as i64,
        Some(t) if t <= 0 => {
            return Err(Problem::invalid(
                "ttl_seconds",
                format!("must be positive (got {t})"),
            ));
        }
        Some(t) if t as u64 > limits.max_ttl_seconds => {
            return Err(Problem::invalid(
                "ttl_seconds",
                format!(
                    "{t} exceeds queue.max_ttl_seconds ({})",
                    limits.max_ttl_seconds
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
    // The webhook target (issue 11): callback_url, else the tenant's webhook_url; stored in
    // the push's callback_url column so the store never needs tenant config.
    let callback_url = webhooks
        .resolve(tenant, req.callback_url.as_deref())
        .map_err(|e| Problem::invalid("callback_url", e.to_string()))?;

    Ok(NewPush {
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
        max_attempts: limits.max_attempts,
        request_hash: idempotency_key.as_ref().map(|_| request_hash),
        idempotency_key,
        collapse_key: req.collapse_key,
        callback_url,
        bootstrap,
    })
}

/// DM bootstrap (DESIGN §10.4): validates `bootstrap`, compiles an XML document to WBXML (the MAC
/// covers the WBXML exactly as sent, so it is compiled once, here, and stored as WBXML) and
/// computes SEC/MAC. The IMSI and PIN go no further than this function.
fn sign_bootstrap(
    b: &BootstrapParams,
    content_type: ContentType,
    body: Vec<u8>,
    body_field: &str,
) -> Result<(ContentType, Vec<u8>, bootstrap::Signature), Problem> {
    use bootstrap::Sec;
    // The codec's parser; the API's names are its lower-case ones (the OpenAPI enum).
    let sec = match b.sec.parse::<Sec>() {
        Ok(sec) if !b.sec.bytes().any(|c| c.is_ascii_uppercase()) => sec,
        _ => {
            return Err(Problem::invalid(
                "bootstrap.sec",
                format!(
                    "{:?} is not netwpin, userpin, usernetwpin or userpinmac",
                    b.sec
                ),
            ));
        }
    };
    let needs_imsi = matches!(sec, Sec::NetwPin | Sec::UserNetwPin);
    let needs_pin = !matches!(sec, Sec::NetwPin);
    // Messages name the field, never its value.
    match (&b.imsi, needs_imsi) {
        (None, true) => {
            return Err(Problem::invalid(
                "bootstrap.imsi",
                format!("required for {}", b.sec),
            ));
        }
        (Some(_), false) => {
            return Err(Problem::invalid(
                "bootstrap.imsi",
                format!("not used by {}", b.sec),
            ));
        }
        (Some(i), true)
            if i.is_empty() || i.len() > 15 || !i.bytes().all(|c| c.is_ascii_digit()) =>
        {
            return Err(Problem::invalid(
                "bootstrap.imsi",
                "must be 1 to 15 digits (E.212)",
            ));
        }
        _ => {}
    }
    match (&b.pin, needs_pin) {
        (None, true) => {
            return Err(Problem::invalid(
                "bootstrap.pin",
                format!("required for {}", b.sec),
            ));
        }
        (Some(_), false) => {
            return Err(Problem::invalid(
                "bootstrap.pin",
                format!("not used by {}", b.sec),
            ));
        }
        (Some(p), true) if p.is_empty() => {
            return Err(Problem::invalid("bootstrap.pin", "must not be empty"));
        }
        _ => {}
    }
    let (content_type, wbxml) = match content_type {
        ContentType::DmWbxml => (content_type, body),
        ContentType::DmXml => {
            let wbxml = crate::codec::wbxml::xml_to_wbxml(&body).map_err(|e| {
                Problem::invalid(
                    body_field,
                    format!("the bootstrap document cannot be compiled to WBXML: {e}"),
                )
            })?;
            (ContentType::DmWbxml, wbxml)
        }
        ContentType::Notification => {
            return Err(Problem::invalid(
                "bootstrap",
                "a bootstrap carries a DM bootstrap document (application/vnd.syncml.dm+wbxml \
                 or +xml), not a notification",
            ));
        }
    };
    let km = bootstrap::KeyMaterial {
        imsi: b.imsi.clone(),
        user_pin: b.pin.clone(),
    };
    let sig = bootstrap::Signature::sign(sec, &km, &wbxml)
        .map_err(|e| Problem::invalid("bootstrap.sec", e.to_string()))?;
    Ok((content_type, wbxml, sig))
}

fn build_notification(p: &NotificationParams, dm: &DmCredentials) -> Result<Vec<u8>, Problem> {
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
pub(super) fn previews(
    st: &ApiState,
    push: &NewPush,
) -> Vec<(BindingKind, Result<Preview, CannotCarry>)> {
    push.bindings
        .iter()
        .filter(|b| push.binding_choice.is_none_or(|k| b.kind() == k))
        .map(|b| {
            let r = match st.bindings.get(b.kind()) {
                None => Err(CannotCarry::NotConfigured(b.kind())),
                Some(binding) => binding.preview_bootstrap(
                    b,
                    push.content_type,
                    &push.body,
                    push.bootstrap.as_ref(),
                ),
            };
            (b.kind(), r)
        })
        .collect()
}

/// Rejects a push no binding can carry (DESIGN §5: "payload too large for the chosen binding").
pub(super) fn check_capability(st: &ApiState, push: &NewPush) -> Result<(), Problem> {
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
            Some(binding) => match binding.check_bootstrap(
                b,
                push.content_type,
                &push.body,
                push.bootstrap.as_ref(),
            ) {
                Ok(()) => return Ok(()),
                Err(e) => reasons.push(format!("{}: {e}", b.kind())),
            },
        }
    }
    let field = if push.bootstrap.is_some() {
        "bootstrap"
    } else if push.binding_choice.is_some() {
        "binding"
    } else {
        "body"
    };
    Err(Problem::invalid(
        field,
        format!("no binding can deliver this push ({})", reasons.join("; ")),
    ))
}

pub(super) async fn submit(
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

pub(super) async fn submit_request(
    st: &ApiState,
    tenant: &str,
    req: PushRequest,
    hash: String,
    header_key: Option<String>,
) -> Result<(StatusCode, Submitted, bool), Problem> {
    let now = crate::domain::now_ms();
    let Prepared { mut push } = prepare(st, tenant, req, hash, header_key, now).await?;
    check_capability(st, &push)?;
    // A registered device's secrets stay with the device: the row keeps a reference (the
    // device id) and the dispatcher resolves them per attempt (issue 12, docs/security.md).
    if push.device_id.is_some() {
        push.bindings = push
            .bindings
            .iter()
            .map(DeviceBinding::without_device_secrets)
            .collect();
    }
    match st.store.enqueue(push).await? {
        Enqueued::Created { id } => {
            st.metrics.count_accepted(tenant);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ApiLimits {
        ApiLimits {
            max_payload_bytes: 4096,
            body_limit_bytes: 8192,
            default_ttl_seconds: 3600,
            max_ttl_seconds: 86_400,
            max_attempts: 5,
            list_limit_max: 100,
        }
    }

    /// A request as the API would deserialise it.
    fn request(v: serde_json::Value) -> PushRequest {
        serde_json::from_value(v).unwrap()
    }

    fn inline(req: &PushRequest) -> Target {
        let TargetRef::Inline(bindings) = target(req).unwrap() else {
            panic!("inline bindings expected")
        };
        Target {
            bindings,
            ..Default::default()
        }
    }

    fn http_binding() -> serde_json::Value {
        serde_json::json!([{"type": "http", "url": "https://dm.example.net/push"}])
    }

    #[test]
    fn exactly_one_of_device_and_bindings() {
        let both = request(serde_json::json!({"device": "d1", "bindings": http_binding()}));
        assert_eq!(target(&both).unwrap_err().field.as_deref(), Some("device"));
        let neither = request(serde_json::json!({"body": "<SyncML/>"}));
        assert_eq!(
            target(&neither).unwrap_err().field.as_deref(),
            Some("device")
        );
        let device = request(serde_json::json!({"device": "d1"}));
        assert!(matches!(target(&device).unwrap(), TargetRef::Device(id) if id == "d1"));
        let bindings = request(serde_json::json!({"bindings": http_binding()}));
        assert!(matches!(target(&bindings).unwrap(), TargetRef::Inline(b) if b.len() == 1));
    }

    #[test]
    fn exactly_one_payload_of_body_body_base64_notification() {
        let build = |v: serde_json::Value| {
            let req = request(v);
            let t = inline(&req);
            new_push(
                &limits(),
                &Default::default(),
                "t",
                req,
                t,
                String::new(),
                None,
                1_000,
            )
        };
        let two = build(serde_json::json!({
            "bindings": http_binding(), "body": "<SyncML/>", "body_base64": "AA==",
            "content_type": "application/vnd.syncml.dm+wbxml"}))
        .unwrap_err();
        assert_eq!(two.field.as_deref(), Some("body_base64"));
        assert!(
            two.detail.contains("got body, body_base64"),
            "{}",
            two.detail
        );
        let none = build(serde_json::json!({"bindings": http_binding()})).unwrap_err();
        assert_eq!(none.field.as_deref(), Some("body"));
        assert!(none.detail.contains("got none"), "{}", none.detail);
        let push =
            build(serde_json::json!({"bindings": http_binding(), "body": "<SyncML/>"})).unwrap();
        assert_eq!(push.content_type, ContentType::DmXml);
        assert_eq!(push.body, b"<SyncML/>");
        assert_eq!(push.expires_at_ms, 1_000 + 3_600_000);
    }

    #[test]
    fn request_hash_is_kept_only_with_an_idempotency_key() {
        let build = |v: serde_json::Value, header: Option<&str>| {
            let req = request(v);
            let t = inline(&req);
            new_push(
                &limits(),
                &Default::default(),
                "t",
                req,
                t,
                "h1".into(),
                header.map(str::to_owned),
                0,
            )
            .unwrap()
        };
        let plain = serde_json::json!({"bindings": http_binding(), "body": "<SyncML/>"});
        let p = build(plain.clone(), None);
        assert_eq!((p.idempotency_key, p.request_hash), (None, None));
        let p = build(plain, Some("from-header"));
        assert_eq!(p.idempotency_key.as_deref(), Some("from-header"));
        assert_eq!(p.request_hash.as_deref(), Some("h1"));
        // The body's key wins over the header's.
        let keyed = serde_json::json!({
            "bindings": http_binding(), "body": "<SyncML/>", "idempotency_key": "from-body"});
        let p = build(keyed, Some("from-header"));
        assert_eq!(p.idempotency_key.as_deref(), Some("from-body"));
        assert_eq!(p.request_hash.as_deref(), Some("h1"));
    }

    #[test]
    fn bootstrap_is_validated_compiled_signed_and_never_kept() {
        let build = |b: serde_json::Value, body: serde_json::Value| {
            let mut v = serde_json::json!({
                "bindings": [{"type": "wap", "bearer": "udp", "address": "127.0.0.1"}],
                "bootstrap": b});
            v.as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            let req = request(v);
            let t = inline(&req);
            new_push(
                &limits(),
                &Default::default(),
                "t",
                req,
                t,
                String::new(),
                None,
                0,
            )
        };
        let xml = serde_json::json!({"body":
            "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD></SyncHdr></SyncML>"});
        let field = |b: serde_json::Value, body: &serde_json::Value| {
            build(b, body.clone())
                .unwrap_err()
                .field
                .unwrap_or_default()
        };
        assert_eq!(
            field(serde_json::json!({"sec": "NETWPIN", "imsi": "1"}), &xml),
            "bootstrap.sec"
        );
        assert_eq!(
            field(serde_json::json!({"sec": "netwpin"}), &xml),
            "bootstrap.imsi"
        );
        assert_eq!(
            field(serde_json::json!({"sec": "netwpin", "imsi": "12a"}), &xml),
            "bootstrap.imsi"
        );
        assert_eq!(
            field(
                serde_json::json!({"sec": "netwpin", "imsi": "1234567890123456"}),
                &xml
            ),
            "bootstrap.imsi"
        );
        assert_eq!(
            field(serde_json::json!({"sec": "userpin"}), &xml),
            "bootstrap.pin"
        );
        assert_eq!(
            field(serde_json::json!({"sec": "usernetwpin", "pin": "1"}), &xml),
            "bootstrap.imsi"
        );
        assert_eq!(
            field(
                serde_json::json!({"sec": "netwpin", "imsi": "1", "pin": "1"}),
                &xml
            ),
            "bootstrap.pin"
        );
        // USERPINMAC is in the contract; no independent implementation settles its key, so 422.
        assert_eq!(
            field(serde_json::json!({"sec": "userpinmac", "pin": "1"}), &xml),
            "bootstrap.sec"
        );
        let notif = serde_json::json!({"body_base64": "AAAA",
            "content_type": "application/vnd.syncml.notification"});
        assert_eq!(
            field(serde_json::json!({"sec": "userpin", "pin": "1"}), &notif),
            "bootstrap"
        );
        let err = build(
            serde_json::json!({"sec": "userpin", "pin": "secret-pin"}),
            notif,
        )
        .unwrap_err();
        assert!(!format!("{err:?}").contains("secret-pin"));

        // +xml is compiled once, here, and the MAC covers those WBXML octets.
        let p = build(
            serde_json::json!({"sec": "usernetwpin", "imsi": "310260801674539", "pin": "1234"}),
            xml,
        )
        .unwrap();
        assert_eq!(p.content_type, ContentType::DmWbxml);
        assert_eq!(p.body[0], 0x03, "WBXML 1.3");
        let sig = p.bootstrap.clone().unwrap();
        let km = bootstrap::KeyMaterial {
            imsi: Some("310260801674539".into()),
            user_pin: Some("1234".into()),
        };
        assert!(bootstrap::verify(sig.sec, &km, &p.body, &sig.mac).unwrap());
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("310260801674539") && !shown.contains(&sig.mac),
            "{shown}"
        );
    }
}
