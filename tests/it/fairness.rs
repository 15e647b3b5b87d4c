//! No tenant can starve another (DESIGN §10.3, issue 12 acceptance 4): tenant A floods a
//! black-holed SIP target (a UDP socket that never answers, so every attempt waits for timer F,
//! 32 s) and tenant B's push to a live receiver is still delivered within seconds.

use std::time::{Duration, Instant};

use crate::support::{
    gateway::{Gateway, TOKEN_A, TOKEN_B, settings},
    receiver::Receiver,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_does_not_starve_another() {
    let black_hole = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hole = black_hole.local_addr().unwrap();
    let rx = Receiver::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.http.ca_file = Some(rx.ca_file.clone());
    // Few workers, so that on main (every waiting attempt holding one) the flood took them all.
    s.queue.workers = 16;
    let gw = Gateway::start_with(s, Some(dir)).await;

    let flood = |i: usize| {
        json!({
            "bindings": [{"type": "sip", "uri": format!("sip:dev{}@{hole}", i % 2)}],
            "content_type": "application/vnd.syncml.notification",
            "body_base64": "AAAA",
        })
    };
    let mut a_ids = Vec::new();
    for i in 0..300 {
        a_ids.push(gw.push(TOKEN_A, flood(i)).await);
    }
    // A's attempts are running (waiting for answers that never come).
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), black_hole.recv_from(&mut buf))
        .await
        .expect("A's MESSAGE reaches the black hole")
        .unwrap();

    let start = Instant::now();
    let b = gw
        .push(
            TOKEN_B,
            json!({
                "bindings": [{"type": "http", "url": rx.url("/p")}],
                "content_type": "application/vnd.syncml.notification",
                "body_base64": "AAAA",
            }),
        )
        .await;
    let p = gw.wait_final(TOKEN_B, &b, Duration::from_secs(30)).await;
    let took = start.elapsed();
    assert_eq!(p["state"], "delivered", "{p}");
    assert!(
        took < Duration::from_secs(5),
        "tenant B's push took {took:?} behind tenant A's flood"
    );

    // A's pushes are not failed or charged attempts for waiting: a deferred push has no
    // attempt counted and no event beyond its acceptance.
    let mut waiting = 0;
    for id in a_ids.iter().rev().take(20) {
        let p = gw.get_push(TOKEN_A, id).await;
        assert!(
            ["queued", "sending"].contains(&p["state"].as_str().unwrap()),
            "{p}"
        );
        if p["state"] == "queued" {
            waiting += 1;
            assert_eq!(p["attempts"], 0, "{p}");
        }
    }
    assert!(waiting > 0, "most of A's flood waits in the queue");
    gw.stop().await;
}

/// With one tenant, a claim takes no more pushes than the tenant has room for under
/// `tenant_max_inflight`: none is claimed only to be written back (which cost a claim and a
/// write-back per push, a fifth of the store's statements in the SMS benchmark), and all are
/// delivered. On the code before, each claim took as many pushes as there were free workers and
/// wrote back all but the cap's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_takes_only_what_the_tenants_cap_lets_start() {
    // Slow answers keep the cap's attempts in flight while the rest are due.
    let rx = Receiver::start(Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bindings.http.ca_file = Some(rx.ca_file.clone());
    s.tenants.retain(|t| t.name == "a");
    s.queue.workers = 8;
    s.queue.tenant_max_inflight = Some(2);
    let gw = Gateway::start_with(s, Some(dir)).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        // A target each: no push waits for a target slot.
        let body = json!({
            "bindings": [{"type": "http", "url": rx.url(&format!("/p{i}"))}],
            "content_type": "application/vnd.syncml.notification",
            "body_base64": "AAAA",
        });
        ids.push(gw.push(TOKEN_A, body).await);
    }
    for id in &ids {
        let p = gw.wait_final(TOKEN_A, id, Duration::from_secs(30)).await;
        assert_eq!(p["state"], "delivered", "{p}");
    }
    let metrics = gw.metrics_text().await;
    assert!(
        metrics.contains("dmpushd_claims_deferred_total{reason=\"tenant\"} 0"),
        "pushes were claimed beyond the tenant's cap and written back:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("claims_deferred"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metrics.contains("dmpushd_claims_deferred_total{reason=\"target\"} 0"),
        "{metrics}"
    );
    gw.stop().await;
}
