//! The simulated HTTP device (DM-PUSH-C-005/007): a push endpoint that accepts the two framings
//! the gateway sends (seed §5.3; DESIGN §6.3) — the `direct` body, and Push OTA's nested
//! `application/http` message with `X-Wap-Push-OTA-Version` — checks the DM content type and the
//! application id, verifies `x-syncml-hmac` (OMA DM HTTP binding, DM security §5.5.2.2) when the
//! device has credentials, and hands the body to the DM application.
//!
//! Answers: 200 routed to the DM application; 401 HMAC missing or wrong (the DM HTTP binding's
//! authentication failure); 415 not a DM content type; 400 malformed framing or foreign app id.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
};
use serde_json::{Value, json};

use super::{
    Events,
    device::{self, DmCredentials, DmMedia},
};
use crate::codec::hmac;

/// `x-syncml-hmac` credentials the simulated device expects. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacExpect {
    pub username: String,
    pub password: String,
    /// Decoded nonce octets.
    pub nonce: Vec<u8>,
}

impl std::fmt::Debug for HmacExpect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacExpect")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl HmacExpect {
    /// `username:password:nonce_b64` (username without `:`; the password may contain `:`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let c = DmCredentials::parse(s)?;
        Ok(Self {
            username: c.server_id,
            password: c.server_password,
            nonce: c.nonce,
        })
    }
}

#[derive(Clone)]
pub struct HttpDevice {
    pub events: Events,
    pub hmac: Option<Arc<HmacExpect>>,
    pub dm: Option<Arc<DmCredentials>>,
}

pub fn router(dev: HttpDevice) -> Router {
    Router::new().fallback(handle).with_state(dev)
}

/// A header as text (`None` when absent or not visible ASCII).
fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The nested message of the `application/http` framing (Push OTA over HTTP, protocol-facts
/// §H.2): a status line, headers, an empty line, the body (Content-Length octets when given).
#[derive(Debug, PartialEq, Eq)]
pub struct Nested {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Nested {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the nested HTTP message. Errors name the offset.
pub fn parse_nested(buf: &[u8]) -> Result<Nested, String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("nested message: no empty line ending the headers")?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|e| {
        format!(
            "nested message: header octet at offset {} is not UTF-8",
            e.valid_up_to()
        )
    })?;
    let mut lines = head.split("\r\n");
    let start_line = lines.next().unwrap_or("").to_owned();
    if !start_line.starts_with("HTTP/") {
        return Err(format!(
            "nested message: start line at offset 0 is not an HTTP status line: {start_line:?}"
        ));
    }
    let mut headers = Vec::new();
    let mut offset = start_line.len() + 2;
    for l in lines {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| format!("nested message: header line at offset {offset} has no ':'"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
        offset += l.len() + 2;
    }
    let mut body = buf[end + 4..].to_vec();
    let n = Nested {
        start_line,
        headers,
        body: Vec::new(),
    };
    if let Some(cl) = n.header("content-length") {
        let cl: usize = cl
            .parse()
            .map_err(|_| format!("nested message: Content-Length {cl:?} is not a number"))?;
        if cl > body.len() {
            return Err(format!(
                "nested message: Content-Length {cl} but only {} body octets at offset {}",
                body.len(),
                end + 4
            ));
        }
        body.truncate(cl);
    }
    Ok(Nested { body, ..n })
}

async fn handle(
    State(dev): State<HttpDevice>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (status, mut v) = evaluate(&dev, method.as_str(), &headers, &body);
    if let Some(o) = v.as_object_mut() {
        o.insert("event".into(), json!("http_push"));
        o.insert("path".into(), json!(uri.path()));
        o.insert("status".into(), json!(status.as_u16()));
    }
    let text = v
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("routed to the DM application")
        .to_owned();
    dev.events.emit("device", v);
    (status, text)
}

/// The device's decision for one request: status code and the event fields.
pub fn evaluate(
    dev: &HttpDevice,
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, Value) {
    let reject = |code: StatusCode, reason: String, extra: Value| {
        let mut v = json!({"routed": "discarded", "reason": reason});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        (code, v)
    };
    if method != "POST" {
        return reject(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not POST"),
            json!({}),
        );
    }
    let outer_ct = header(headers, "content-type").unwrap_or("");
    let ota = outer_ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/http"));
    // Content type, application id, HMAC header and DM body, from the chosen framing.
    let (framing, ct, app_id, hmac_hdr, dm_body, ota_version) = if ota {
        let nested = match parse_nested(body) {
            Ok(n) => n,
            Err(e) => return reject(StatusCode::BAD_REQUEST, e, json!({"framing": "ota-http"})),
        };
        (
            "ota-http",
            nested.header("content-type").unwrap_or("").to_owned(),
            nested.header("x-wap-application-id").map(str::to_owned),
            nested.header("x-syncml-hmac").map(str::to_owned),
            nested.body.clone(),
            header(headers, "x-wap-push-ota-version").map(str::to_owned),
        )
    } else {
        (
            "direct",
            outer_ct.to_owned(),
            header(headers, "x-wap-application-id").map(str::to_owned),
            header(headers, "x-syncml-hmac").map(str::to_owned),
            body.to_vec(),
            None,
        )
    };
    let seen = json!({"framing": framing, "content_type": ct, "app_id": app_id,
                      "ota_version": ota_version, "body_len": dm_body.len()});
    // seed §5.3: Content-Type MUST be application/vnd.syncml.dm+xml or +wbxml (the notification
    // type is accepted too: the gateway pushes package #0 over HTTP).
    let Some(media) = DmMedia::from_mime(&ct) else {
        return reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {ct:?} is not a DM type (seed §5.3)"),
            seen,
        );
    };
    if let Some(a) = &app_id
        && !device::is_dm_app_id(&crate::codec::wsp::AppId::Uri(a.clone()))
        && a.trim() != "7"
    {
        return reject(
            StatusCode::BAD_REQUEST,
            format!("X-Wap-Application-Id {a:?} is not x-wap-application:syncml.dm"),
            seen,
        );
    }
    // seed §5.3: "the same security methods as in the DM HTTP Binding": x-syncml-hmac.
    let hmac_result = match (&dev.hmac, &hmac_hdr) {
        (None, _) => "not-configured".to_owned(),
        (Some(_), None) => "missing".to_owned(),
        (Some(exp), Some(h)) => match hmac::parse_header(h) {
            Err(e) => format!("malformed: {e}"),
            Ok(h) if h.username != exp.username => "wrong-username".to_owned(),
            Ok(h) => {
                if hmac::verify(&h, &exp.password, &exp.nonce, &dm_body) {
                    "ok".to_owned()
                } else {
                    "mismatch".to_owned()
                }
            }
        },
    };
    let mut seen = seen;
    if let Some(o) = seen.as_object_mut() {
        o.insert("hmac".into(), json!(hmac_result));
    }
    if dev.hmac.is_some() && hmac_result != "ok" {
        return reject(
            StatusCode::UNAUTHORIZED,
            format!("x-syncml-hmac check failed: {hmac_result}"),
            seen,
        );
    }
    let app = device::dm_application(media, &dm_body, dev.dm.as_deref());
    if let (Some(o), Value::Object(a)) = (seen.as_object_mut(), app) {
        o.insert("routed".into(), json!("dm"));
        o.insert("media".into(), json!(media.as_str()));
        o.extend(a);
    }
    (StatusCode::OK, seen)
}

/// A self-signed certificate for `localhost` / `127.0.0.1` (PEM certificate, DER key).
pub fn self_signed() -> anyhow::Result<(String, Vec<u8>, Vec<u8>)> {
    let key = rcgen::KeyPair::generate()?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), cert.der().to_vec(), key.serialize_der()))
}

/// Serves the device over TLS with a fresh self-signed certificate; returns its PEM.
pub fn spawn_https(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<String> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::conn::auto,
        service::TowerToHyperService,
    };
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    crate::tls::install_provider();
    let (pem, der, key) = self_signed()?;
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(async move {
        loop {
            let (tcp, _peer): (_, SocketAddr) = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let svc = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                        .await
                else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(hmac: Option<&str>) -> HttpDevice {
        let (events, _rx) = Events::channel();
        HttpDevice {
            events,
            hmac: hmac.map(|h| Arc::new(HmacExpect::parse(h).unwrap())),
            dm: None,
        }
    }

    fn hdrs(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn direct_with_worked_example_hmac() {
        // protocol-facts §H.7 worked example: dmclient / clientpw / NONCE123 over "<SyncML/>".
        let d = dev(Some("dmclient:clientpw:Tk9OQ0UxMjM="));
        let h = hdrs(&[
            ("content-type", "application/vnd.syncml.dm+xml".into()),
            ("x-wap-application-id", "x-wap-application:syncml.dm".into()),
            (
                "x-syncml-hmac",
                "algorithm=MD5, username=\"dmclient\", mac=xyVgaP6N29A+HPJo9hrVlA==".into(),
            ),
        ]);
        let (s, v) = evaluate(&d, "POST", &h, b"<SyncML/>");
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["hmac"], "ok");
        assert_eq!(v["xml"], "<SyncML/>");
        let (s, v) = evaluate(&d, "POST", &h, b"<SyncML/> ");
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(v["hmac"], "mismatch");
    }

    #[test]
    fn ota_http_nested() {
        let d = dev(None);
        let body = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.syncml.dm+xml\r\nContent-Length: 9\r\nX-Wap-Application-Id: x-wap-application:syncml.dm\r\n\r\n<SyncML/>";
        let h = hdrs(&[
            ("content-type", "application/http".into()),
            ("x-wap-push-ota-version", "1.0".into()),
        ]);
        let (s, v) = evaluate(&d, "POST", &h, body);
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["framing"], "ota-http");
        assert_eq!(v["hmac"], "not-configured");
        assert_eq!(v["xml"], "<SyncML/>");
        let (s, v) = evaluate(&d, "POST", &h, &body[..body.len() - 2]);
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(v["reason"].as_str().unwrap().contains("offset"), "{v}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_nested_messages_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse_nested(&b);
            let mut m = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n".to_vec();
            m.extend_from_slice(&b);
            let _ = parse_nested(&m);
        }
    }

    #[test]
    fn wrong_type_and_app_id() {
        let d = dev(None);
        let (s, _) = evaluate(
            &d,
            "POST",
            &hdrs(&[("content-type", "text/plain".into())]),
            b"x",
        );
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (s, _) = evaluate(
            &d,
            "POST",
            &hdrs(&[
                ("content-type", "application/vnd.syncml.dm+xml".into()),
                ("x-wap-application-id", "x-wap-application:wml.ua".into()),
            ]),
            b"<SyncML/>",
        );
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}
