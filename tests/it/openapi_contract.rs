//! The OpenAPI document against the server (issue 13): its shape is checked here quickly, and
//! schemathesis (PyPI) drives a live `dmpushd serve` from it (`scripts/schemathesis.sh`; a quick
//! run here, the longer one in CI).

use std::process::Command;

use serde_json::Value;

use crate::support::{gateway::Gateway, require_tool};

const METHODS: [&str; 4] = ["get", "put", "post", "delete"];

#[tokio::test]
async fn document_names_every_route_and_documents_errors_as_problem_json() {
    let gw = Gateway::start().await;
    let (s, doc) = gw.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    // Every route of api::router (kept in step by hand: a new route must be added here and to
    // the document; schemathesis only tests what the document names).
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/devices", "get"),
        ("/v1/devices/{id}", "put"),
        ("/v1/devices/{id}", "get"),
        ("/v1/devices/{id}", "delete"),
        ("/v1/devices/{id}/push", "post"),
        ("/v1/pushes", "post"),
        ("/v1/pushes", "get"),
        ("/v1/pushes/batch", "post"),
        ("/v1/pushes/preview", "post"),
        ("/v1/pushes/{id}", "get"),
        ("/v1/pushes/{id}", "delete"),
        ("/v1/pushes/{id}/webhooks/retry", "post"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    for (path, item) in paths {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") {
                assert!(responses.contains_key("401"), "{m} {path}: no 401");
                assert!(op["security"].is_array(), "{m} {path}: no security");
            }
            for (code, r) in responses {
                if code.as_str() >= "400" {
                    assert!(
                        r["content"]["application/problem+json"].is_object(),
                        "{m} {path} {code}: not problem+json: {r}"
                    );
                }
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["DeviceBody"]["additionalProperties"],
        Value::Bool(false)
    );
    assert_eq!(
        schemas["PushRequest"]["additionalProperties"],
        Value::Bool(false)
    );
    assert_eq!(
        schemas["DeviceBody"]["properties"]["bindings"]["minItems"],
        1
    );
    assert_eq!(
        schemas["DeviceBody"]["properties"]["bindings"]["maxItems"],
        16
    );
    assert_eq!(
        schemas["PushRequest"]["properties"]["ttl_seconds"]["maximum"],
        30 * 86_400,
        "the configured queue.max_ttl_seconds"
    );
    let list_params = doc["paths"]["/v1/pushes"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert!(list_params.iter().all(|p| p["in"] == "query"));
    gw.stop().await;
}

/// schemathesis, every check, a few examples per operation: zero failures.
#[test]
fn schemathesis_finds_no_failure() {
    if require_tool("schemathesis").is_none() {
        return;
    }
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/schemathesis.sh"
        ))
        .arg("5")
        .env("DMPUSHD_BIN", env!("CARGO_BIN_EXE_dmpushd"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("generated cases"), "{stdout}");
}
