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
