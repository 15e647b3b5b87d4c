//! The simulator's webhook receiver (`dmpushd sim --webhooks ADDR --webhook-secret whsec_…`): it
//! plays the DM server that receives dmpushd's result webhooks, verifies each signature
//! ([`crate::webhook::Secret::verify`]) and emits one event per webhook. Answers 204 to a verified
//! webhook and 401 to one that is not (so the gateway retries, as it would with a real server).

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::{Value, json};

use super::Events;
use crate::webhook::Secret;

#[derive(Clone)]
pub struct WebhookReceiver {
    pub events: Events,
    /// `None`: signatures are reported as unchecked.
    pub secret: Option<Secret>,
}

pub fn router(r: WebhookReceiver) -> Router {
    Router::new()
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .with_state(r)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// What one received webhook says (pure: time is a parameter).
pub fn inspect(secret: Option<&Secret>, headers: &HeaderMap, body: &[u8], now: i64) -> Value {
    let id = header(headers, "webhook-id");
    let verified = match secret {
        Some(s) => match s.verify(
            id,
            header(headers, "webhook-timestamp"),
            body,
            header(headers, "webhook-signature"),
            now,
        ) {
            Ok(()) => json!(true),
            Err(e) => json!(e.to_string()),
        },
        None => json!("not checked (no --webhook-secret)"),
    };
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    json!({
        "event": "webhook",
        "webhook_id": id,
        "type": parsed["type"],
        "push_id": parsed["data"]["id"],
        "state": parsed["data"]["state"],
        "timestamp": parsed["timestamp"],
        "verified": verified,
    })
}

async fn receive(State(r): State<WebhookReceiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let v = inspect(r.secret.as_ref(), &headers, &body, now);
    let ok = v["verified"] == true || r.secret.is_none();
    r.events.emit("webhooks", v);
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_and_summarises() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body =
            br#"{"type":"push.delivered","timestamp":"t","data":{"id":"p1","state":"delivered"}}"#;
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_p1_3".parse().unwrap());
        h.insert("webhook-timestamp", "1000".parse().unwrap());
        let sig = secret.sign("msg_p1_3", 1000, body);
        h.insert("webhook-signature", sig.parse().unwrap());
        let v = inspect(Some(&secret), &h, body, 1001);
        assert_eq!(v["verified"], true);
        assert_eq!(
            (&v["type"], &v["push_id"], &v["webhook_id"]),
            (&json!("push.delivered"), &json!("p1"), &json!("msg_p1_3"))
        );
        let v = inspect(Some(&secret), &h, b"{}", 1001);
        assert!(v["verified"].as_str().unwrap().contains("signature"), "{v}");
    }
}
