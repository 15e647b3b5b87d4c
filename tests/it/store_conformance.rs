//! Store conformance suite: one set of cases, generic over `Arc<dyn Store>`, run unchanged against
//! every implementation (module `pg`: a fresh PostgreSQL database per test; module `sqlite`: a
//! temporary file). Time is explicit (`T0 + …`): the store never reads a clock.

use std::{collections::HashSet, sync::Arc, time::Duration};

use crate::support::store::{T0, WAP, next_id, push, wap};
use dmpushd::{
    binding::{BindingKind, NextHopRef, Receipt},
    store::{
        CancelResult, Claimed, Completion, Device, DmCredentials, Enqueued, Next, PushFilter,
        PushState, ReceiptEffect, Store, takeover_detail,
    },
};

const LEASE: Duration = Duration::from_secs(30);

fn done(c: &Claimed, owner: &str, at_ms: i64, next: Next, detail: &str) -> Completion {
    Completion {
        push_id: c.id.clone(),
        owner: owner.into(),
        attempt: c.attempt,
        binding: WAP,
        at_ms,
        next,
        detail: detail.into(),
    }
}

async fn state_of(s: &Arc<dyn Store>, tenant: &str, id: &str) -> PushState {
    s.get_push(tenant, id).await.unwrap().unwrap().state
}

async fn depth(s: &Arc<dyn Store>, state: PushState) -> u64 {
    s.queue_depth()
        .await
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == state)
        .map_or(0, |(_, n)| n)
}

async fn created(s: &Arc<dyn Store>, p: dmpushd::store::NewPush) -> String {
    let id = p.id.clone();
    assert_eq!(
        s.enqueue(p).await.unwrap(),
        Enqueued::Created { id: id.clone() }
    );
    id
}

async fn claim_one(s: &Arc<dyn Store>, owner: &str, now: i64) -> Claimed {
    let mut v = s.claim(owner, now, LEASE, 1).await.unwrap();
    assert_eq!(v.len(), 1, "expected one claimable push at {now}");
    v.remove(0)
}

// ---------------------------------------------------------------------------------------------

async fn enqueue_and_get(s: Arc<dyn Store>) {
    let mut p = push("t1");
    p.not_before_ms = T0 + 500;
    p.collapse_key = None;
    p.idempotency_key = Some("k-1".into());
    p.request_hash = Some("h".into());
    p.callback_url = Some("https://cb.example.test/x".into());
    // A DM bootstrap's SEC/MAC travel with the push (pushes.bootstrap; issue 13 item 4).
    p.bootstrap = Some(dmpushd::store::Signature {
        sec: dmpushd::codec::bootstrap::Sec::UserNetwPin,
        mac: "93E97EE95FACA972AED7F66F5848EEAEEABF39E2".into(),
    });
    let id = created(&s, p.clone()).await;
    let r = s.get_push("t1", &id).await.unwrap().expect("stored");
    assert_eq!(r.state, PushState::Queued);
    assert_eq!(r.attempts, 0);
    assert_eq!(r.device_id.as_deref(), Some("dev-1"));
    assert_eq!(r.content_type, p.content_type);
    assert_eq!(r.created_at_ms, T0);
    assert_eq!(r.not_before_ms, T0 + 500);
    assert_eq!(r.expires_at_ms, p.expires_at_ms);
    assert_eq!(r.idempotency_key.as_deref(), Some("k-1"));
    assert_eq!(r.last_binding, None);
    assert_eq!(r.events.len(), 1);
    let e = &r.events[0];
    assert_eq!(
        (e.state, e.binding, e.attempt, e.detail.as_str(), e.at_ms),
        (PushState::Queued, None, 0, "accepted", T0)
    );
    assert_eq!(depth(&s, PushState::Queued).await, 1);
    assert_eq!(s.next_due().await.unwrap(), Some(T0 + 500));
    // Not due before not_before; the claimed copy carries the stored body and bindings.
    assert!(s.claim("a", T0 + 499, LEASE, 10).await.unwrap().is_empty());
    let c = claim_one(&s, "a", T0 + 500).await;
    assert_eq!(c.body, p.body);
    assert_eq!(c.bindings, p.bindings);
    assert_eq!(c.binding_index, 0);
    assert_eq!(c.callback_url, p.callback_url);
    assert_eq!(c.bootstrap, p.bootstrap);
    assert_eq!(c.max_attempts, 5);
    assert_eq!(s.next_due().await.unwrap(), None);
}

async fn claim_order_and_lease(s: Arc<dyn Store>) {
    let mut late = push("t1");
    late.not_before_ms = T0 + 200;
    let late = created(&s, late).await;
    let mut early = push("t1");
    early.not_before_ms = T0 + 100;
    let early = created(&s, early).await;
    let mut high = push("t1");
    high.priority = 1;
    high.not_before_ms = T0 + 300;
    let high = created(&s, high).await;
    let mut future = push("t1");
    future.not_before_ms = T0 + 10_000;
    let future = created(&s, future).await;
    let mut dead = push("t1");
    dead.expires_at_ms = T0 + 50;
    let dead = created(&s, dead).await;

    // One at a time, so that the order of selection (not of the returned vector) is checked.
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(claim_one(&s, "a", T0 + 1_000).await);
    }
    assert!(
        s.claim("a", T0 + 1_000, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [high.as_str(), early.as_str(), late.as_str()]);
    assert!(got.iter().all(|c| c.attempt == 1));
    // Leased pushes are not claimable again while the lease runs; no event for a claim.
    assert!(
        s.claim("b", T0 + 1_000, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let r = s.get_push("t1", &early).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.attempts, r.events.len()),
        (PushState::Sending, 1, 1)
    );
    assert_eq!(state_of(&s, "t1", &future).await, PushState::Queued);
    assert_eq!(state_of(&s, "t1", &dead).await, PushState::Queued);
    assert_eq!(depth(&s, PushState::Sending).await, 3);
    // limit is honoured.
    let mut more = Vec::new();
    for _ in 0..3 {
        more.push(created(&s, push("t1")).await);
    }
    assert_eq!(s.claim("b", T0 + 1_000, LEASE, 2).await.unwrap().len(), 2);
    assert_eq!(s.claim("b", T0 + 1_000, LEASE, 0).await.unwrap().len(), 0);
}

async fn lease_expiry_and_takeover(s: Arc<dyn Store>) {
    let id = created(&s, push("t1")).await;
    let lease = Duration::from_millis(1_000);
    let a = s.claim("replica-a", T0, lease, 1).await.unwrap().remove(0);
    assert_eq!(a.attempt, 1);
    assert!(
        s.claim("replica-b", T0 + 999, lease, 1)
            .await
            .unwrap()
            .is_empty()
    );
    let b = s.claim("replica-b", T0 + 1_000, lease, 1).await.unwrap();
    assert_eq!(b.len(), 1, "expired lease is taken over");
    assert_eq!((b[0].id.as_str(), b[0].attempt), (id.as_str(), 2));
    assert_eq!(b[0].taken_over_from.as_deref(), Some("replica-a"));
    assert_eq!(a.taken_over_from, None, "a waiting push is no takeover");
    // Taken over exactly once.
    assert!(
        s.claim("replica-c", T0 + 1_001, lease, 1)
            .await
            .unwrap()
            .is_empty()
    );

    // The old owner's completion is ignored: the push stays with B.
    s.complete(vec![done(
        &a,
        "replica-a",
        T0 + 1_100,
        Next::Delivered,
        "late",
    )])
    .await
    .unwrap();
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    assert_eq!(r.state, PushState::Sending);
    // accepted, then the takeover (DESIGN §10.1: a possible duplicate is visible).
    assert_eq!(r.events.len(), 2);
    let t = &r.events[1];
    assert_eq!(
        (t.at_ms, t.state, t.attempt, t.detail.as_str()),
        (
            T0 + 1_000,
            PushState::Sending,
            2,
            takeover_detail("replica-a", 1, "replica-b").as_str()
        )
    );
    assert!(t.detail.contains("taken over"), "{}", t.detail);
    // B's renew keeps it; A's renew does nothing.
    s.renew("replica-a", std::slice::from_ref(&id), T0 + 60_000)
        .await
        .unwrap();
    assert_eq!(
        s.claim("replica-c", T0 + 2_000, lease, 1)
            .await
            .unwrap()
            .len(),
        1,
        "a non-owner's renew must not extend the lease"
    );
    // Now C owns it; B's completion is ignored too, C's is applied.
    s.complete(vec![done(
        &b[0],
        "replica-b",
        T0 + 2_100,
        Next::Failed,
        "x",
    )])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Sending);
    s.renew("replica-c", std::slice::from_ref(&id), T0 + 60_000)
        .await
        .unwrap();
    assert!(
        s.claim("replica-d", T0 + 10_000, lease, 1)
            .await
            .unwrap()
            .is_empty()
    );
    let c = Claimed {
        attempt: 3,
        ..b[0].clone()
    };
    s.complete(vec![done(
        &c,
        "replica-c",
        T0 + 10_000,
        Next::Delivered,
        "ok",
    )])
    .await
    .unwrap();
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    assert_eq!((r.state, r.attempts), (PushState::Delivered, 3));
    assert_eq!(r.last_binding, Some(BindingKind::Wap));
    let last = r.events.last().unwrap();
    assert_eq!(
        (last.state, last.attempt, last.detail.as_str()),
        (PushState::Delivered, 3, "ok")
    );
    // accepted, taken over by B, taken over by C, delivered.
    assert_eq!(r.events.len(), 4);
    assert_eq!(
        r.events[2].detail,
        takeover_detail("replica-b", 2, "replica-c")
    );
}

async fn retry_backoff(s: Arc<dyn Store>) {
    let id = created(&s, push("t1")).await;
    let c = claim_one(&s, "a", T0).await;
    s.complete(vec![done(
        &c,
        "a",
        T0 + 10,
        Next::RetryAt { at_ms: T0 + 5_000 },
        "503",
    )])
    .await
    .unwrap();
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.attempts, r.updated_at_ms),
        (PushState::RetryWait, 1, T0 + 10)
    );
    assert_eq!(s.next_due().await.unwrap(), Some(T0 + 5_000));
    assert!(s.claim("a", T0 + 4_999, LEASE, 1).await.unwrap().is_empty());
    let c2 = claim_one(&s, "a", T0 + 5_000).await;
    assert_eq!(c2.attempt, 2);
    s.complete(vec![done(
        &c2,
        "a",
        T0 + 5_010,
        Next::RetryAt { at_ms: T0 + 15_000 },
        "503",
    )])
    .await
    .unwrap();
    let c3 = claim_one(&s, "a", T0 + 15_000).await;
    assert_eq!(c3.attempt, 3);
    s.complete(vec![done(&c3, "a", T0 + 15_010, Next::Failed, "gave up")])
        .await
        .unwrap();
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    let states: Vec<(PushState, u32)> = r.events.iter().map(|e| (e.state, e.attempt)).collect();
    assert_eq!(
        states,
        [
            (PushState::Queued, 0),
            (PushState::RetryWait, 1),
            (PushState::RetryWait, 2),
            (PushState::Failed, 3)
        ]
    );
    assert!(
        s.claim("a", T0 + 99_000, LEASE, 1)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn fallback_and_release(s: Arc<dyn Store>) {
    let id = created(&s, push("t1")).await;
    let c = claim_one(&s, "a", T0).await;
    assert_eq!(c.binding_index, 0);
    s.complete(vec![done(
        &c,
        "a",
        T0 + 20,
        Next::Fallback { binding_index: 1 },
        "too big",
    )])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Queued);
    assert_eq!(s.next_due().await.unwrap(), Some(T0 + 20));
    let c2 = claim_one(&s, "a", T0 + 20).await;
    assert_eq!((c2.binding_index, c2.attempt), (1, 2));
    // Release (shutdown): back to queued without counting the attempt.
    let mut rel = done(&c2, "a", T0 + 30, Next::Release, "shutting down");
    rel.binding = Some(BindingKind::Sip);
    s.complete(vec![rel]).await.unwrap();
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    assert_eq!((r.state, r.attempts), (PushState::Queued, 1));
    let last = r.events.last().unwrap();
    assert_eq!(
        (last.state, last.detail.as_str()),
        (PushState::Queued, "shutting down")
    );
    let c3 = claim_one(&s, "b", T0 + 30).await;
    assert_eq!((c3.binding_index, c3.attempt), (1, 2));
}

async fn ttl_expiry(s: Arc<dyn Store>) {
    let mut p = push("t1");
    p.expires_at_ms = T0 + 1_000;
    let waiting = created(&s, p.clone()).await;
    let mut p2 = p.clone();
    p2.id = next_id();
    let retrying = created(&s, p2).await;
    let mut p3 = p.clone();
    p3.id = next_id();
    let sending = created(&s, p3).await;
    let mut p4 = push("t1");
    p4.expires_at_ms = T0 + 5_000;
    let alive = created(&s, p4).await;

    let mut got = s.claim("a", T0, LEASE, 10).await.unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    let rc = got.iter().find(|c| c.id == retrying).unwrap().clone();
    s.complete(vec![
        done(
            &rc,
            "a",
            T0 + 1,
            Next::RetryAt { at_ms: T0 + 2_000 },
            "busy",
        ),
        done(
            got.iter().find(|c| c.id == waiting).unwrap(),
            "a",
            T0 + 1,
            Next::Release,
            "release",
        ),
    ])
    .await
    .unwrap();
    // Not expired yet at T0 + 999; at T0 + 1000 both waiting pushes go, the sending one stays.
    assert_eq!(s.expire(T0 + 999, 100).await.unwrap(), 0);
    assert_eq!(s.expire(T0 + 1_000, 100).await.unwrap(), 2);
    assert_eq!(s.expire(T0 + 1_000, 100).await.unwrap(), 0);
    for id in [&waiting, &retrying] {
        let r = s.get_push("t1", id).await.unwrap().unwrap();
        assert_eq!(r.state, PushState::Expired);
        let last = r.events.last().unwrap();
        assert_eq!(
            (last.state, last.detail.as_str()),
            (PushState::Expired, "ttl passed")
        );
    }
    assert_eq!(state_of(&s, "t1", &sending).await, PushState::Sending);
    assert_eq!(state_of(&s, "t1", &alive).await, PushState::Sending);
    // An expired push is never claimed; the dispatcher reports TTL end of a leased one itself.
    let sc = got.iter().find(|c| c.id == sending).unwrap();
    s.complete(vec![done(sc, "a", T0 + 1_500, Next::Expired, "ttl passed")])
        .await
        .unwrap();
    assert_eq!(state_of(&s, "t1", &sending).await, PushState::Expired);
    // limit is honoured.
    for _ in 0..5 {
        let mut q = push("t1");
        q.expires_at_ms = T0 + 100;
        created(&s, q).await;
    }
    assert_eq!(s.expire(T0 + 100, 3).await.unwrap(), 3);
    assert_eq!(s.expire(T0 + 100, 3).await.unwrap(), 2);
}

async fn cancel(s: Arc<dyn Store>) {
    let id = created(&s, push("t1")).await;
    assert_eq!(
        s.cancel("t2", &id, T0 + 1).await.unwrap(),
        CancelResult::NotFound
    );
    assert_eq!(
        s.cancel("t1", "no-such", T0 + 1).await.unwrap(),
        CancelResult::NotFound
    );
    assert_eq!(
        s.cancel("t1", &id, T0 + 1).await.unwrap(),
        CancelResult::Cancelled
    );
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    assert_eq!(r.state, PushState::Cancelled);
    let last = r.events.last().unwrap();
    assert_eq!(
        (last.state, last.detail.as_str()),
        (PushState::Cancelled, "cancelled by client")
    );
    assert_eq!(
        s.cancel("t1", &id, T0 + 2).await.unwrap(),
        CancelResult::TooLate(PushState::Cancelled)
    );
    assert!(s.claim("a", T0 + 10, LEASE, 10).await.unwrap().is_empty());
    // In flight: too late. Retry wait: cancellable.
    let id2 = created(&s, push("t1")).await;
    let c = claim_one(&s, "a", T0).await;
    assert_eq!(
        s.cancel("t1", &id2, T0 + 1).await.unwrap(),
        CancelResult::TooLate(PushState::Sending)
    );
    s.complete(vec![done(
        &c,
        "a",
        T0 + 2,
        Next::RetryAt { at_ms: T0 + 100 },
        "busy",
    )])
    .await
    .unwrap();
    assert_eq!(
        s.cancel("t1", &id2, T0 + 3).await.unwrap(),
        CancelResult::Cancelled
    );
    assert!(s.claim("a", T0 + 200, LEASE, 10).await.unwrap().is_empty());
}

async fn idempotency(s: Arc<dyn Store>) {
    let mut p = push("t1");
    p.idempotency_key = Some("order-7".into());
    p.request_hash = Some("h1".into());
    let first = created(&s, p.clone()).await;
    let mut again = p.clone();
    again.id = next_id();
    assert_eq!(
        s.enqueue(again.clone()).await.unwrap(),
        Enqueued::Replayed {
            id: first.clone(),
            state: PushState::Queued
        }
    );
    let mut other = again.clone();
    other.id = next_id();
    other.request_hash = Some("h2".into());
    assert_eq!(
        s.enqueue(other).await.unwrap(),
        Enqueued::KeyConflict { id: first.clone() }
    );
    // The replay reports the current state.
    claim_one(&s, "a", T0).await;
    let mut third = p.clone();
    third.id = next_id();
    assert_eq!(
        s.enqueue(third).await.unwrap(),
        Enqueued::Replayed {
            id: first.clone(),
            state: PushState::Sending
        }
    );
    // Keys are per tenant.
    let mut t2 = p.clone();
    t2.id = next_id();
    t2.tenant = "t2".into();
    created(&s, t2).await;
    assert_eq!(depth(&s, PushState::Queued).await, 1);

    // Concurrent submissions of one key: exactly one push is created, every other is a replay.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = s.clone();
        let mut q = push("t3");
        q.idempotency_key = Some("burst".into());
        q.request_hash = Some("hb".into());
        tasks.push(tokio::spawn(async move { s.enqueue(q).await.unwrap() }));
    }
    let mut ids = HashSet::new();
    let mut creations = 0;
    for t in tasks {
        match t.await.unwrap() {
            Enqueued::Created { id } => {
                creations += 1;
                ids.insert(id);
            }
            Enqueued::Replayed { id, .. } => {
                ids.insert(id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((creations, ids.len()), (1, 1));
    let listed = s
        .list_pushes(
            "t3",
            &PushFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

async fn collapse(s: Arc<dyn Store>) {
    let mut a = push("t1");
    a.collapse_key = Some("cfg".into());
    let a = created(&s, a).await;
    // A retry-waiting push with the key is superseded too; a sending one is not.
    let mut r = push("t1");
    r.collapse_key = Some("cfg".into());
    r.priority = 1;
    let r = created(&s, r).await;
    // `r` superseded `a` already.
    let ra = s.get_push("t1", &a).await.unwrap().unwrap();
    assert_eq!(ra.state, PushState::Superseded);
    let last = ra.events.last().unwrap();
    assert_eq!(
        (last.state, last.detail.clone()),
        (PushState::Superseded, format!("superseded by {r}"))
    );
    let c = claim_one(&s, "a", T0).await;
    assert_eq!(c.id, r);
    s.complete(vec![done(
        &c,
        "a",
        T0 + 1,
        Next::RetryAt { at_ms: T0 + 50 },
        "busy",
    )])
    .await
    .unwrap();
    let mut sending = push("t1");
    sending.collapse_key = Some("cfg".into());
    sending.priority = 1;
    let sending_id = created(&s, sending).await;
    assert_eq!(state_of(&s, "t1", &r).await, PushState::Superseded);
    claim_one(&s, "a", T0 + 2).await; // now `sending_id` is in flight
    let mut other_tenant = push("t2");
    other_tenant.collapse_key = Some("cfg".into());
    let other_tenant = created(&s, other_tenant).await;
    let mut other_key = push("t1");
    other_key.collapse_key = Some("fw".into());
    let other_key = created(&s, other_key).await;
    let mut newest = push("t1");
    newest.collapse_key = Some("cfg".into());
    let newest = created(&s, newest).await;
    assert_eq!(state_of(&s, "t1", &sending_id).await, PushState::Sending);
    assert_eq!(state_of(&s, "t2", &other_tenant).await, PushState::Queued);
    assert_eq!(state_of(&s, "t1", &other_key).await, PushState::Queued);
    assert_eq!(state_of(&s, "t1", &newest).await, PushState::Queued);
    assert_eq!(depth(&s, PushState::Superseded).await, 2);
}

async fn tenant_isolation(s: Arc<dyn Store>) {
    let id = created(&s, push("t1")).await;
    assert!(s.get_push("t2", &id).await.unwrap().is_none());
    let f = PushFilter {
        limit: 10,
        ..Default::default()
    };
    assert!(s.list_pushes("t2", &f).await.unwrap().is_empty());
    assert_eq!(s.list_pushes("t1", &f).await.unwrap().len(), 1);
    let d = Device {
        tenant: "t1".into(),
        id: "dev-1".into(),
        bindings: vec![wap("+15550001111")],
        dm: None,
        created_at_ms: T0,
        updated_at_ms: T0,
    };
    assert!(s.put_device(&d).await.unwrap());
    assert!(s.get_device("t2", "dev-1").await.unwrap().is_none());
    assert!(s.list_devices("t2", None, 10).await.unwrap().is_empty());
    assert!(!s.delete_device("t2", "dev-1").await.unwrap());
    assert!(s.get_device("t1", "dev-1").await.unwrap().is_some());
}

async fn devices(s: Arc<dyn Store>) {
    let mut d = Device {
        tenant: "t1".into(),
        id: "dev-b".into(),
        bindings: vec![wap("+15550001111")],
        dm: Some(DmCredentials {
            server_id: "srv".into(),
            server_password: "s3cret".into(),
            server_nonce: "AAEC".into(),
        }),
        created_at_ms: T0,
        updated_at_ms: T0,
    };
    assert!(s.put_device(&d).await.unwrap(), "first put creates");
    d.created_at_ms = T0 + 999; // a replace must keep the original creation time
    d.updated_at_ms = T0 + 1_000;
    d.bindings.push(dmpushd::binding::DeviceBinding::Sip {
        uri: "sip:b@example.test".parse().unwrap(),
        gruu: None,
    });
    assert!(!s.put_device(&d).await.unwrap(), "second put replaces");
    let got = s.get_device("t1", "dev-b").await.unwrap().unwrap();
    assert_eq!(got.created_at_ms, T0);
    assert_eq!(got.updated_at_ms, T0 + 1_000);
    assert_eq!(got.bindings, d.bindings);
    assert_eq!(got.dm, d.dm);
    for id in ["dev-a", "dev-c", "dev-d"] {
        let mut x = d.clone();
        x.id = id.into();
        x.dm = None;
        s.put_device(&x).await.unwrap();
    }
    let ids = |v: Vec<Device>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_devices("t1", None, 10).await.unwrap()),
        ["dev-a", "dev-b", "dev-c", "dev-d"]
    );
    assert_eq!(
        ids(s.list_devices("t1", Some("dev-b"), 2).await.unwrap()),
        ["dev-c", "dev-d"]
    );
    assert!(s.delete_device("t1", "dev-c").await.unwrap());
    assert!(!s.delete_device("t1", "dev-c").await.unwrap());
    assert!(s.get_device("t1", "dev-c").await.unwrap().is_none());
}

async fn listing(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut p = push("t1");
        p.device_id = Some(if i % 2 == 0 { "even" } else { "odd" }.into());
        ids.push(created(&s, p).await);
    }
    let all = |f: PushFilter| {
        let s = s.clone();
        async move {
            s.list_pushes("t1", &f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| {
                    assert!(r.events.is_empty(), "listings carry no events");
                    r.id
                })
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(
        all(PushFilter {
            limit: 100,
            ..Default::default()
        })
        .await,
        newest_first
    );
    assert_eq!(
        all(PushFilter {
            limit: 2,
            ..Default::default()
        })
        .await,
        newest_first[..2]
    );
    assert_eq!(
        all(PushFilter {
            before: Some(ids[3].clone()),
            limit: 100,
            ..Default::default()
        })
        .await,
        [ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    assert_eq!(
        all(PushFilter {
            device: Some("odd".into()),
            limit: 100,
            ..Default::default()
        })
        .await,
        [ids[5].clone(), ids[3].clone(), ids[1].clone()]
    );
    assert_eq!(
        s.cancel("t1", &ids[4], T0 + 1).await.unwrap(),
        CancelResult::Cancelled
    );
    assert_eq!(
        all(PushFilter {
            state: Some(PushState::Cancelled),
            limit: 100,
            ..Default::default()
        })
        .await,
        [ids[4].clone()]
    );
    assert_eq!(
        all(PushFilter {
            device: Some("even".into()),
            state: Some(PushState::Queued),
            limit: 100,
            ..Default::default()
        })
        .await,
        [ids[2].clone(), ids[0].clone()]
    );
}

async fn event_history(s: Arc<dyn Store>) {
    let id = created(&s, push("t1")).await;
    let c = claim_one(&s, "a", T0).await;
    s.complete(vec![done(
        &c,
        "a",
        T0 + 1,
        Next::RetryAt { at_ms: T0 + 10 },
        "timeout",
    )])
    .await
    .unwrap();
    let c = claim_one(&s, "a", T0 + 10).await;
    let mut fb = done(
        &c,
        "a",
        T0 + 11,
        Next::Fallback { binding_index: 1 },
        "too long",
    );
    fb.binding = Some(BindingKind::Wap);
    s.complete(vec![fb]).await.unwrap();
    let c = claim_one(&s, "a", T0 + 11).await;
    let mut ok = done(&c, "a", T0 + 12, Next::Delivered, "200 OK");
    ok.binding = Some(BindingKind::Sip);
    s.complete(vec![ok]).await.unwrap();
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    let ev: Vec<(i64, PushState, Option<BindingKind>, u32, &str)> = r
        .events
        .iter()
        .map(|e| (e.at_ms, e.state, e.binding, e.attempt, e.detail.as_str()))
        .collect();
    assert_eq!(
        ev,
        [
            (T0, PushState::Queued, None, 0, "accepted"),
            (T0 + 1, PushState::RetryWait, WAP, 1, "timeout"),
            (T0 + 11, PushState::Queued, WAP, 2, "too long"),
            (
                T0 + 12,
                PushState::Delivered,
                Some(BindingKind::Sip),
                3,
                "200 OK"
            ),
        ]
    );
    assert_eq!(r.last_binding, Some(BindingKind::Sip));
    assert_eq!(r.attempts, 3);
    assert_eq!(r.updated_at_ms, T0 + 12);
}

/// The SMSC account of the references in these cases.
const ACCOUNT: &str = "smsc";
/// Orphan receipts are held this long (ms) in these cases.
const HOLD_MS: u64 = 120_000;

fn nh(id: &str) -> NextHopRef {
    NextHopRef::new(ACCOUNT, id)
}

fn nhs(ids: &[String]) -> Vec<NextHopRef> {
    ids.iter().map(|i| nh(i)).collect()
}

fn receipt(reference: &str, delivered: bool, detail: &str) -> Receipt {
    receipt_on(ACCOUNT, reference, delivered, detail)
}

fn receipt_on(account: &str, id: &str, delivered: bool, detail: &str) -> Receipt {
    Receipt {
        binding: BindingKind::Wap,
        reference: NextHopRef::new(account, id),
        delivered,
        detail: detail.into(),
        hold: Duration::from_millis(HOLD_MS),
        ack: None,
    }
}

/// A test push bound to WAP only by an explicit choice: a failed receipt fails it.
fn wap_only(tenant: &str) -> dmpushd::store::NewPush {
    let mut p = push(tenant);
    p.binding_choice = Some(BindingKind::Wap);
    p
}

async fn receipts_single(s: Arc<dyn Store>) {
    let id = created(&s, push("t1")).await;
    let c = claim_one(&s, "a", T0).await;
    let refs = vec![format!("smsc-{id}")];
    s.complete(vec![done(
        &c,
        "a",
        T0 + 1,
        Next::Accepted { refs: nhs(&refs) },
        "submit_sm ok",
    )])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Accepted);
    assert_eq!(
        s.apply_receipt(&receipt(&refs[0], true, "DELIVRD"), T0 + 5)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: id.clone(),
            state: PushState::Delivered
        }
    );
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    assert_eq!(r.state, PushState::Delivered);
    let last = r.events.last().unwrap();
    assert_eq!((last.state, last.at_ms), (PushState::Delivered, T0 + 5));
    // The event carries the receipt's detail (implementations may prefix it).
    assert!(last.detail.contains("DELIVRD"), "{:?}", last.detail);
    assert_eq!(last.binding, WAP);
    // Duplicate receipt: the settled push released its id, so it is an orphan; nothing changes.
    assert_eq!(
        s.apply_receipt(&receipt(&refs[0], false, "UNDELIV"), T0 + 6)
            .await
            .unwrap(),
        ReceiptEffect::Pending
    );
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Delivered);
    // The same reference on another binding is another reference.
    let mut other = receipt(&refs[0], true, "x");
    other.binding = BindingKind::Sip;
    assert_eq!(
        s.apply_receipt(&other, T0 + 7).await.unwrap(),
        ReceiptEffect::Pending
    );
}

async fn receipts_multipart(s: Arc<dyn Store>) {
    let id = created(&s, push("t1")).await;
    let c = claim_one(&s, "a", T0).await;
    let refs: Vec<String> = (0..3).map(|i| format!("{id}-part{i}")).collect();
    s.complete(vec![done(
        &c,
        "a",
        T0 + 1,
        Next::Accepted { refs: nhs(&refs) },
        "3 parts",
    )])
    .await
    .unwrap();
    for (i, r) in refs.iter().enumerate() {
        let eff = s
            .apply_receipt(&receipt(r, true, "DELIVRD"), T0 + 10 + i as i64)
            .await
            .unwrap();
        if i < 2 {
            assert_eq!(
                eff,
                ReceiptEffect::Partial {
                    push_id: id.clone()
                }
            );
            assert_eq!(state_of(&s, "t1", &id).await, PushState::Accepted);
        } else {
            assert_eq!(
                eff,
                ReceiptEffect::Finished {
                    push_id: id.clone(),
                    state: PushState::Delivered
                }
            );
        }
    }
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    let states: Vec<PushState> = r.events.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [PushState::Queued, PushState::Accepted, PushState::Delivered]
    );
}

async fn receipts_in_one_batch(s: Arc<dyn Store>) {
    // A in two parts, B in one; plus a receipt for a reference nobody sent yet and a duplicate.
    // One call, effects in order, as if applied one by one.
    // Push C's receipt overtakes its completion, which arrives in the same completion batch as
    // A's and B's.
    let a = created(&s, push("t1")).await;
    let b = created(&s, wap_only("t1")).await;
    let c = created(&s, push("t1")).await;
    let mut claimed = std::collections::HashMap::new();
    for _ in 0..3 {
        let x = claim_one(&s, "w", T0).await;
        claimed.insert(x.id.clone(), x);
    }
    let refs_a = vec![format!("{a}-0"), format!("{a}-1")];
    let refs_b = vec![format!("{b}-0")];
    let refs_c = vec![format!("{c}-0")];
    assert_eq!(
        s.apply_receipts(&[receipt(&refs_c[0], true, "DELIVRD")], T0 + 1)
            .await
            .unwrap(),
        vec![ReceiptEffect::Pending]
    );
    let accepted = |id: &String, refs: &Vec<String>| {
        done(
            &claimed[id],
            "w",
            T0 + 2,
            Next::Accepted { refs: nhs(refs) },
            "sent",
        )
    };
    s.complete(vec![
        accepted(&a, &refs_a),
        accepted(&b, &refs_b),
        accepted(&c, &refs_c),
    ])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &a).await, PushState::Accepted);
    assert_eq!(state_of(&s, "t1", &c).await, PushState::Delivered);
    let events: Vec<PushState> = s
        .get_push("t1", &c)
        .await
        .unwrap()
        .unwrap()
        .events
        .iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(
        events,
        [PushState::Queued, PushState::Accepted, PushState::Delivered]
    );
    let batch = vec![
        receipt(&refs_a[0], true, "DELIVRD"),
        receipt(&refs_b[0], false, "UNDELIV"),
        receipt("not-yet-sent", true, "DELIVRD"),
        receipt(&refs_a[1], true, "DELIVRD"),
        receipt(&refs_b[0], true, "DELIVRD"),
    ];
    assert_eq!(
        s.apply_receipts(&batch, T0 + 5).await.unwrap(),
        vec![
            ReceiptEffect::Partial { push_id: a.clone() },
            ReceiptEffect::Finished {
                push_id: b.clone(),
                state: PushState::Failed
            },
            ReceiptEffect::Pending,
            ReceiptEffect::Finished {
                push_id: a.clone(),
                state: PushState::Delivered
            },
            // B is settled and released its id: a later receipt for it is an orphan.
            ReceiptEffect::Pending,
        ]
    );
    assert_eq!(state_of(&s, "t1", &a).await, PushState::Delivered);
    assert_eq!(state_of(&s, "t1", &b).await, PushState::Failed);
    assert_eq!(
        s.apply_receipts(&[], T0 + 6).await.unwrap(),
        vec![],
        "an empty batch is a no-op"
    );
}

async fn receipt_before_completion(s: Arc<dyn Store>) {
    let id = created(&s, push("t1")).await;
    let c = claim_one(&s, "a", T0).await;
    let refs = vec![format!("{id}-a"), format!("{id}-b")];
    // Both receipts overtake the completion (fast SMSC, slow database write).
    for r in &refs {
        assert_eq!(
            s.apply_receipt(&receipt(r, true, "DELIVRD"), T0 + 1)
                .await
                .unwrap(),
            ReceiptEffect::Pending
        );
    }
    s.complete(vec![done(
        &c,
        "a",
        T0 + 2,
        Next::Accepted { refs: nhs(&refs) },
        "2 parts",
    )])
    .await
    .unwrap();
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    assert_eq!(r.state, PushState::Delivered);
    let states: Vec<PushState> = r.events.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [PushState::Queued, PushState::Accepted, PushState::Delivered]
    );
    // Both events at the completion's time and attempt; the delivery names its receipt.
    let last = r.events.last().unwrap();
    assert_eq!(
        (last.at_ms, last.attempt, last.binding, last.detail.as_str()),
        (T0 + 2, 1, Some(BindingKind::Wap), "receipt: DELIVRD")
    );
    assert_eq!(r.events[1].at_ms, T0 + 2);
    // The receipts were released with the push: an SMSC reusing the ids at once (inside their
    // hold window) gives them to a new push, which must not find them answered.
    let reuse = created(&s, push("t1")).await;
    let c_reuse = claim_one(&s, "a", T0).await;
    s.complete(vec![done(
        &c_reuse,
        "a",
        T0 + 3,
        Next::Accepted { refs: nhs(&refs) },
        "2 parts, reused ids",
    )])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &reuse).await, PushState::Accepted);
    assert_eq!(
        s.apply_receipt(&receipt(&refs[0], true, "DELIVRD"), T0 + 4)
            .await
            .unwrap(),
        ReceiptEffect::Partial {
            push_id: reuse.clone()
        }
    );

    // One early receipt of two: accepted, then finished by the second.
    let id2 = created(&s, push("t1")).await;
    let c2 = claim_one(&s, "a", T0).await;
    let refs2 = vec![format!("{id2}-a"), format!("{id2}-b")];
    assert_eq!(
        s.apply_receipt(&receipt(&refs2[1], true, "DELIVRD"), T0 + 1)
            .await
            .unwrap(),
        ReceiptEffect::Pending
    );
    s.complete(vec![done(
        &c2,
        "a",
        T0 + 2,
        Next::Accepted { refs: nhs(&refs2) },
        "2 parts",
    )])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &id2).await, PushState::Accepted);
    assert_eq!(
        s.apply_receipt(&receipt(&refs2[0], true, "DELIVRD"), T0 + 3)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: id2.clone(),
            state: PushState::Delivered
        }
    );

    // Several pushes of one completion batch adopt overtaking receipts (one statement for all
    // of them on SQLite), beside one that takes its reference afresh: each adopts only its own.
    // The second is WAP only: its failed receipt fails it (under `auto` it would fall back).
    let ids = [
        created(&s, push("t1")).await,
        created(&s, wap_only("t1")).await,
        created(&s, push("t1")).await,
    ];
    let mut claimed = std::collections::HashMap::new();
    for _ in 0..3 {
        let x = claim_one(&s, "a", T0).await;
        claimed.insert(x.id.clone(), x);
    }
    let refs: [Vec<String>; 3] = [
        vec![format!("{}-a", ids[0]), format!("{}-b", ids[0])],
        vec![format!("{}-a", ids[1])],
        vec![format!("{}-a", ids[2])],
    ];
    let early = [
        receipt(&refs[0][0], true, "DELIVRD"),
        receipt(&refs[0][1], true, "DELIVRD"),
        receipt(&refs[1][0], false, "UNDELIV"),
    ];
    assert_eq!(
        s.apply_receipts(&early, T0 + 1).await.unwrap(),
        vec![ReceiptEffect::Pending; 3]
    );
    s.complete(
        ids.iter()
            .zip(&refs)
            .map(|(id, r)| {
                done(
                    &claimed[id],
                    "a",
                    T0 + 2,
                    Next::Accepted { refs: nhs(r) },
                    "sent",
                )
            })
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &ids[0]).await, PushState::Delivered);
    assert_eq!(state_of(&s, "t1", &ids[1]).await, PushState::Failed);
    assert_eq!(state_of(&s, "t1", &ids[2]).await, PushState::Accepted);
    assert_eq!(
        s.apply_receipt(&receipt(&refs[2][0], true, "DELIVRD"), T0 + 3)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: ids[2].clone(),
            state: PushState::Delivered
        }
    );
}

async fn receipt_failed_part(s: Arc<dyn Store>) {
    let id = created(&s, wap_only("t1")).await;
    let c = claim_one(&s, "a", T0).await;
    let refs = vec![format!("{id}-a"), format!("{id}-b"), format!("{id}-c")];
    s.complete(vec![done(
        &c,
        "a",
        T0 + 1,
        Next::Accepted { refs: nhs(&refs) },
        "3 parts",
    )])
    .await
    .unwrap();
    assert_eq!(
        s.apply_receipt(&receipt(&refs[0], true, "DELIVRD"), T0 + 2)
            .await
            .unwrap(),
        ReceiptEffect::Partial {
            push_id: id.clone()
        }
    );
    assert_eq!(
        s.apply_receipt(&receipt(&refs[1], false, "UNDELIV err:001"), T0 + 3)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: id.clone(),
            state: PushState::Failed
        }
    );
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    assert_eq!(r.state, PushState::Failed);
    let last = r.events.last().unwrap();
    assert_eq!(last.state, PushState::Failed);
    assert!(last.detail.contains("UNDELIV err:001"), "{:?}", last.detail);
    assert_eq!(
        s.apply_receipt(&receipt(&refs[2], true, "DELIVRD"), T0 + 4)
            .await
            .unwrap(),
        ReceiptEffect::Pending,
        "the failed push released its ids"
    );
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Failed);
    // A failure receipt that overtook the completion fails the push at completion.
    let id2 = created(&s, wap_only("t1")).await;
    let c2 = claim_one(&s, "a", T0).await;
    s.apply_receipt(&receipt(&format!("{id2}-x"), false, "REJECTD"), T0 + 1)
        .await
        .unwrap();
    s.complete(vec![done(
        &c2,
        "a",
        T0 + 2,
        Next::Accepted {
            refs: nhs(&[format!("{id2}-x"), format!("{id2}-y")]),
        },
        "2 parts",
    )])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &id2).await, PushState::Failed);
    // Accepted without references: no receipt can come, so it ends unconfirmed at once.
    let id3 = created(&s, push("t1")).await;
    let c3 = claim_one(&s, "a", T0).await;
    s.complete(vec![done(
        &c3,
        "a",
        T0 + 1,
        Next::Accepted { refs: vec![] },
        "no ids",
    )])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &id3).await, PushState::Unconfirmed);
}

async fn batch_completion(s: Arc<dyn Store>) {
    for _ in 0..5 {
        created(&s, push("t1")).await;
    }
    let got = s.claim("a", T0, LEASE, 10).await.unwrap();
    assert_eq!(got.len(), 5);
    let nexts = [
        Next::Delivered,
        Next::Failed,
        Next::RetryAt { at_ms: T0 + 100 },
        Next::Accepted { refs: vec![] },
        Next::Release,
    ];
    let batch: Vec<Completion> = got
        .iter()
        .zip(nexts)
        .map(|(c, n)| done(c, "a", T0 + 1, n, "batch"))
        .collect();
    s.complete(batch).await.unwrap();
    let want = [
        PushState::Delivered,
        PushState::Failed,
        PushState::RetryWait,
        PushState::Unconfirmed,
        PushState::Queued,
    ];
    for (c, w) in got.iter().zip(want) {
        assert_eq!(state_of(&s, "t1", &c.id).await, w);
    }
    assert_eq!(depth(&s, PushState::Sending).await, 0);
}

async fn concurrent_enqueue(s: Arc<dyn Store>) {
    const TASKS: usize = 40;
    const EACH: usize = 50; // 2,000 pushes
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                let mut p = push("t1");
                p.device_id = Some(format!("d{t}"));
                if i % 10 == 0 {
                    // Some with keys, to exercise the idempotency path under load.
                    p.idempotency_key = Some(format!("k{t}-{i}"));
                    p.request_hash = Some("h".into());
                }
                let id = p.id.clone();
                assert_eq!(
                    s.enqueue(p).await.unwrap(),
                    Enqueued::Created { id: id.clone() }
                );
                ids.push(id);
            }
            ids
        }));
    }
    let mut want = HashSet::new();
    for h in handles {
        want.extend(h.await.unwrap());
    }
    assert_eq!(want.len(), TASKS * EACH);
    assert_eq!(depth(&s, PushState::Queued).await, (TASKS * EACH) as u64);
    // Every acknowledged push is readable, with its single event.
    let mut seen = HashSet::new();
    let mut before = None;
    loop {
        let page = s
            .list_pushes(
                "t1",
                &PushFilter {
                    before: before.clone(),
                    limit: 500,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id.clone());
        seen.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(seen, want);
    let probe = want.iter().next().unwrap();
    assert_eq!(
        s.get_push("t1", probe).await.unwrap().unwrap().events.len(),
        1
    );
}

async fn concurrent_claimers(s: Arc<dyn Store>) {
    const N: usize = 600;
    let mut all = HashSet::new();
    for _ in 0..N {
        all.insert(created(&s, push("t1")).await);
    }
    let mut handles = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut mine = Vec::new();
            // Bounded: at most N claims of 1+ each.
            for _ in 0..N {
                let got = s.claim(&owner, T0, LEASE, 7).await.unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for h in handles {
        let mine = h.await.unwrap();
        total += mine.len();
        seen.extend(mine);
    }
    assert_eq!(total, N, "every push claimed exactly once (no duplicates)");
    assert_eq!(seen, all);
}

// --- Truthful outcomes (DESIGN §10.1) ---------------------------------------------------------

/// Accepts `id`'s claim `c` with `refs` on the default account at `at`.
async fn accept(s: &Arc<dyn Store>, c: &Claimed, refs: Vec<NextHopRef>, at: i64) {
    s.complete(vec![done(
        c,
        "w",
        at,
        Next::Accepted { refs },
        "submit_sm ok",
    )])
    .await
    .unwrap();
}

async fn events_of(s: &Arc<dyn Store>, id: &str) -> Vec<(PushState, String)> {
    s.get_push("t1", id)
        .await
        .unwrap()
        .unwrap()
        .events
        .into_iter()
        .map(|e| (e.state, e.detail))
        .collect()
}

async fn unconfirmed_after_receipt_window_then_late_receipt(s: Arc<dyn Store>) {
    const GRACE: i64 = 2_000;
    let p = push("t1");
    let expires = p.expires_at_ms;
    let id = created(&s, p).await;
    let c = claim_one(&s, "w", T0).await;
    accept(&s, &c, vec![nh("u-1")], T0 + 1).await;
    // A push without receipt request (no refs) is final at once; this one waits.
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Accepted);
    assert_eq!(
        s.unconfirm(expires + GRACE - 1, GRACE, 100).await.unwrap(),
        0
    );
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Accepted);
    assert_eq!(s.unconfirm(expires + GRACE, GRACE, 100).await.unwrap(), 1);
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Unconfirmed);
    assert!(PushState::Unconfirmed.is_final());
    // Swept once.
    assert_eq!(
        s.unconfirm(expires + GRACE + 1, GRACE, 100).await.unwrap(),
        0
    );
    // A late receipt still settles it, with an event (no fallback: the TTL is over).
    assert_eq!(
        s.apply_receipt(&receipt("u-1", true, "DELIVRD"), expires + GRACE + 5)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: id.clone(),
            state: PushState::Delivered
        }
    );
    let ev = events_of(&s, &id).await;
    let states: Vec<PushState> = ev.iter().map(|e| e.0).collect();
    assert_eq!(
        states,
        [
            PushState::Queued,
            PushState::Accepted,
            PushState::Unconfirmed,
            PushState::Delivered
        ]
    );
    assert!(ev[3].1.contains("DELIVRD"), "{ev:?}");

    // A failed late receipt fails an unconfirmed push even under auto with a binding left.
    let p = push("t1");
    let expires = p.expires_at_ms;
    let id = created(&s, p).await;
    let c = claim_one(&s, "w", T0).await;
    accept(&s, &c, vec![nh("u-2")], T0 + 1).await;
    assert_eq!(s.unconfirm(expires + GRACE, GRACE, 100).await.unwrap(), 1);
    assert_eq!(
        s.apply_receipt(&receipt("u-2", false, "UNDELIV"), expires + GRACE + 5)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: id.clone(),
            state: PushState::Failed
        }
    );
}

async fn reused_id_settles_only_its_holder(s: Arc<dyn Store>) {
    // An SMSC that answers every submit with id "1".
    let a = created(&s, push("t1")).await;
    let ca = claim_one(&s, "w", T0).await;
    accept(&s, &ca, vec![nh("1")], T0 + 1).await;
    assert_eq!(
        s.apply_receipt(&receipt("1", true, "DELIVRD"), T0 + 2)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: a.clone(),
            state: PushState::Delivered
        }
    );
    // B gets the same id later: no receipt for B yet, so B stays accepted (the defect: the
    // stale "delivered" row of A finished B at once).
    let b = created(&s, push("t1")).await;
    let cb = claim_one(&s, "w", T0 + 3).await;
    accept(&s, &cb, vec![nh("1")], T0 + 4).await;
    assert_eq!(state_of(&s, "t1", &b).await, PushState::Accepted);
    // C takes the id while B still waits: a receipt now is C's only.
    let c = created(&s, push("t1")).await;
    let cc = claim_one(&s, "w", T0 + 5).await;
    accept(&s, &cc, vec![nh("1")], T0 + 6).await;
    assert_eq!(state_of(&s, "t1", &c).await, PushState::Accepted);
    assert_eq!(
        s.apply_receipt(&receipt("1", true, "DELIVRD"), T0 + 7)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: c.clone(),
            state: PushState::Delivered
        }
    );
    assert_eq!(state_of(&s, "t1", &b).await, PushState::Accepted);
    assert_eq!(state_of(&s, "t1", &a).await, PushState::Delivered);
}

async fn same_id_on_two_accounts(s: Arc<dyn Store>) {
    let a = created(&s, push("t1")).await;
    let ca = claim_one(&s, "w", T0).await;
    accept(&s, &ca, vec![NextHopRef::new("smsc-a", "7")], T0 + 1).await;
    let b = created(&s, push("t1")).await;
    let cb = claim_one(&s, "w", T0).await;
    accept(&s, &cb, vec![NextHopRef::new("smsc-b", "7")], T0 + 1).await;
    // Neither took the other's id.
    assert_eq!(state_of(&s, "t1", &a).await, PushState::Accepted);
    assert_eq!(
        s.apply_receipt(&receipt_on("smsc-b", "7", true, "DELIVRD"), T0 + 2)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: b.clone(),
            state: PushState::Delivered
        }
    );
    assert_eq!(state_of(&s, "t1", &a).await, PushState::Accepted);
    assert_eq!(
        s.apply_receipt(&receipt_on("smsc-a", "7", true, "DELIVRD"), T0 + 3)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: a.clone(),
            state: PushState::Delivered
        }
    );
}

async fn orphan_receipts_are_held_then_dropped(s: Arc<dyn Store>) {
    let hold = HOLD_MS as i64;
    // An orphan older than the hold window does not settle a push that gets its id later.
    assert_eq!(
        s.apply_receipt(&receipt("9", true, "DELIVRD"), T0)
            .await
            .unwrap(),
        ReceiptEffect::Pending
    );
    let late = created(&s, push("t1")).await;
    let c = claim_one(&s, "w", T0).await;
    accept(&s, &c, vec![nh("9")], T0 + hold + 1).await;
    assert_eq!(state_of(&s, "t1", &late).await, PushState::Accepted);
    // ... while one inside the window (an overtaking receipt) does, bound included.
    s.apply_receipt(&receipt("10", true, "DELIVRD"), T0)
        .await
        .unwrap();
    let on_time = created(&s, push("t1")).await;
    let c = claim_one(&s, "w", T0).await;
    accept(&s, &c, vec![nh("10")], T0 + hold).await;
    assert_eq!(state_of(&s, "t1", &on_time).await, PushState::Delivered);
    // The housekeeper's purge: only orphans past their window go, counted per binding.
    s.apply_receipt(&receipt("11", true, "DELIVRD"), T0)
        .await
        .unwrap();
    s.apply_receipt(&receipt("12", false, "UNDELIV"), T0 + 10)
        .await
        .unwrap();
    assert_eq!(
        s.drop_orphan_receipts(T0 + hold, 100).await.unwrap(),
        vec![]
    );
    assert_eq!(
        s.drop_orphan_receipts(T0 + hold + 1, 100).await.unwrap(),
        vec![(BindingKind::Wap, 1)]
    );
    // "12" is still held: a push that gets it now adopts it (and fails: explicit binding).
    let p = created(&s, wap_only("t1")).await;
    let c = claim_one(&s, "w", T0).await;
    accept(&s, &c, vec![nh("12")], T0 + hold + 2).await;
    assert_eq!(state_of(&s, "t1", &p).await, PushState::Failed);
    // "11" is gone: a push that gets it waits; refs held by pushes are never purged.
    let p = created(&s, push("t1")).await;
    let c = claim_one(&s, "w", T0).await;
    accept(&s, &c, vec![nh("11")], T0 + hold + 3).await;
    assert_eq!(state_of(&s, "t1", &p).await, PushState::Accepted);
    assert_eq!(
        s.drop_orphan_receipts(T0 + 10 * hold, 100).await.unwrap(),
        vec![]
    );
    assert_eq!(
        s.apply_receipt(&receipt("11", true, "DELIVRD"), T0 + 10 * hold)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: p.clone(),
            state: PushState::Delivered
        }
    );
}

async fn failed_receipt_falls_back_under_auto(s: Arc<dyn Store>) {
    // push(): bindings [wap, sip], auto.
    let id = created(&s, push("t1")).await;
    let c = claim_one(&s, "w", T0).await;
    assert_eq!(c.binding_index, 0);
    accept(&s, &c, vec![nh("f-1"), nh("f-2")], T0 + 1).await;
    assert_eq!(
        s.apply_receipt(&receipt("f-1", false, "SMPP receipt stat:UNDELIV"), T0 + 2)
            .await
            .unwrap(),
        ReceiptEffect::FellBack {
            push_id: id.clone(),
            binding_index: 1
        }
    );
    let r = s.get_push("t1", &id).await.unwrap().unwrap();
    assert_eq!(r.state, PushState::Queued);
    let last = r.events.last().unwrap();
    assert_eq!((last.state, last.binding), (PushState::Queued, WAP));
    assert!(
        last.detail.contains("UNDELIV") && last.detail.contains("falling back to sip"),
        "{:?}",
        last.detail
    );
    // Due at once, with the next binding; the other part's receipt no longer matters.
    assert_eq!(s.next_due().await.unwrap(), Some(T0 + 2));
    assert_eq!(
        s.apply_receipt(&receipt("f-2", true, "DELIVRD"), T0 + 3)
            .await
            .unwrap(),
        ReceiptEffect::Pending,
        "ids released on fallback"
    );
    let c = claim_one(&s, "w", T0 + 3).await;
    assert_eq!((c.id.as_str(), c.binding_index), (id.as_str(), 1));
    s.complete(vec![Completion {
        binding: Some(BindingKind::Sip),
        ..done(&c, "w", T0 + 4, Next::Delivered, "SIP 200 OK")
    }])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Delivered);

    // A failed receipt that overtook the completion falls back at completion.
    s.apply_receipt(&receipt("f-3", false, "REJECTD"), T0 + 5)
        .await
        .unwrap();
    let id = created(&s, push("t1")).await;
    let c = claim_one(&s, "w", T0 + 5).await;
    accept(&s, &c, vec![nh("f-3")], T0 + 6).await;
    assert_eq!(state_of(&s, "t1", &id).await, PushState::Queued);
    assert_eq!(claim_one(&s, "w", T0 + 6).await.binding_index, 1);

    // An explicit binding choice, or no binding left: failed.
    let id = created(&s, wap_only("t1")).await;
    let c = claim_one(&s, "w", T0 + 7).await;
    accept(&s, &c, vec![nh("f-4")], T0 + 7).await;
    assert_eq!(
        s.apply_receipt(&receipt("f-4", false, "EXPIRED"), T0 + 8)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: id.clone(),
            state: PushState::Failed
        }
    );
    let mut last = push("t1");
    last.bindings.truncate(1);
    let id = created(&s, last).await;
    let c = claim_one(&s, "w", T0 + 9).await;
    accept(&s, &c, vec![nh("f-5")], T0 + 9).await;
    assert_eq!(
        s.apply_receipt(&receipt("f-5", false, "DELETED"), T0 + 10)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: id.clone(),
            state: PushState::Failed
        }
    );
}

async fn collapse_is_scoped_to_the_device(s: Arc<dyn Store>) {
    let keyed = |device: Option<&str>| {
        let mut p = push("t1");
        p.collapse_key = Some("wake".into());
        p.device_id = device.map(str::to_owned);
        p
    };
    let a = created(&s, keyed(Some("dev-a"))).await;
    // Another device's "wake" does not supersede A's.
    let b = created(&s, keyed(Some("dev-b"))).await;
    assert_eq!(state_of(&s, "t1", &a).await, PushState::Queued);
    // The same device's does.
    let a2 = created(&s, keyed(Some("dev-a"))).await;
    assert_eq!(state_of(&s, "t1", &a).await, PushState::Superseded);
    assert_eq!(state_of(&s, "t1", &b).await, PushState::Queued);
    assert_eq!(state_of(&s, "t1", &a2).await, PushState::Queued);
    // Inline targets: scoped by the exact bindings snapshot; never reach a device's pushes.
    let i1 = created(&s, keyed(None)).await;
    let mut other = keyed(None);
    other.bindings.reverse();
    let other = created(&s, other).await;
    assert_eq!(state_of(&s, "t1", &i1).await, PushState::Queued);
    let i2 = created(&s, keyed(None)).await;
    assert_eq!(state_of(&s, "t1", &i1).await, PushState::Superseded);
    for id in [&other, &i2] {
        assert_eq!(state_of(&s, "t1", id).await, PushState::Queued);
    }
    assert_eq!(state_of(&s, "t1", &a2).await, PushState::Queued);
    assert_eq!(state_of(&s, "t1", &b).await, PushState::Queued);
}

/// Retention (DESIGN §10.1): final pushes last changed before the bound go with their events
/// and next-hop references, in batches of at most `limit`; a push that is not final never goes,
/// however old.
async fn purge_final_only(s: Arc<dyn Store>) {
    let old = T0 + 1_000;
    // Final pushes (delivered, failed, cancelled, delivered by receipt), last changed at `old`.
    let mut finals = Vec::new();
    for next in [Next::Delivered, Next::Failed] {
        let id = created(&s, push("t1")).await;
        let c = claim_one(&s, "w", T0).await;
        s.complete(vec![done(&c, "w", old, next, "x")])
            .await
            .unwrap();
        finals.push(id);
    }
    let id = created(&s, push("t1")).await;
    assert_eq!(
        s.cancel("t1", &id, old).await.unwrap(),
        CancelResult::Cancelled
    );
    finals.push(id);
    // Accepted with a reference: its ref row must go with it once a receipt settles it.
    let refd = created(&s, push("t1")).await;
    let c = claim_one(&s, "w", T0).await;
    s.complete(vec![done(
        &c,
        "w",
        T0,
        Next::Accepted {
            refs: vec![nh("purge-ref")],
        },
        "submitted",
    )])
    .await
    .unwrap();
    let e = s
        .apply_receipt(&receipt("purge-ref", true, "DELIVRD"), old)
        .await
        .unwrap();
    assert!(matches!(e, ReceiptEffect::Finished { .. }), "{e:?}");
    finals.push(refd);
    // Not final, and old: leased (`sending`), accepted awaiting a receipt, waiting, scheduled.
    let sending = created(&s, push("t1")).await;
    let accepted = created(&s, push("t1")).await;
    let mut leased = s.claim("w", T0, LEASE, 2).await.unwrap();
    assert_eq!(leased.len(), 2);
    leased.retain(|c| c.id == accepted);
    s.complete(vec![done(
        &leased[0],
        "w",
        T0,
        Next::Accepted {
            refs: vec![nh("pending-ref")],
        },
        "submitted",
    )])
    .await
    .unwrap();
    let waiting = created(&s, push("t1")).await;
    let mut future = push("t1");
    future.not_before_ms = T0 + 3_600_000;
    let scheduled = created(&s, future).await;
    let not_final = [waiting.clone(), scheduled, sending, accepted];
    let rec = s.get_push("t1", &waiting).await.unwrap().unwrap();
    assert!(!rec.state.is_final());

    // Nothing is older than the bound yet.
    assert_eq!(s.purge(old, 100).await.unwrap(), 0);
    // Batches: at most `limit` per call, until nothing is left.
    assert_eq!(s.purge(old + 1, 3).await.unwrap(), 3);
    assert_eq!(s.purge(old + 1, 3).await.unwrap(), 1);
    assert_eq!(s.purge(old + 1, 3).await.unwrap(), 0);
    for id in &finals {
        assert!(s.get_push("t1", id).await.unwrap().is_none(), "{id} purged");
    }
    // Even with a bound far in the future, nothing that is not final goes.
    assert_eq!(s.purge(i64::MAX, 100).await.unwrap(), 0);
    for id in &not_final {
        assert!(s.get_push("t1", id).await.unwrap().is_some(), "{id} kept");
    }
    // The purged push's reference went with it: the same reference now names nobody, so a
    // receipt for it is held (pending) instead of finding the deleted push.
    let e = s
        .apply_receipt(&receipt("purge-ref", true, "DELIVRD"), old + 2)
        .await
        .unwrap();
    assert_eq!(e, ReceiptEffect::Pending);
    // The accepted push still settles by its receipt.
    let e = s
        .apply_receipt(&receipt("pending-ref", true, "DELIVRD"), old + 3)
        .await
        .unwrap();
    assert!(matches!(e, ReceiptEffect::Finished { .. }), "{e:?}");
}

// ---------------------------------------------------------------------------------------------

/// One receipt batch that mixes every case, applied as if one by one in order (the stores
/// decide a batch from rows read once, so the order inside the batch is what this checks): two
/// parts of one push, a fallback and a finish, a part of a push that settled earlier in the
/// batch, a duplicate of a settled receipt (adjacent and not), and a receipt that overtakes its
/// completion.
async fn receipt_batch_mixes_cases(s: Arc<dyn Store>) {
    let a = created(&s, push("t1")).await;
    let b = created(&s, wap_only("t1")).await;
    let f = created(&s, push("t1")).await;
    let d = created(&s, push("t1")).await;
    let o = created(&s, push("t1")).await;
    let mut claimed = std::collections::HashMap::new();
    for _ in 0..5 {
        let x = claim_one(&s, "w", T0).await;
        claimed.insert(x.id.clone(), x);
    }
    let accepted = |id: &String, refs: &[&str]| {
        let refs: Vec<String> = refs.iter().map(|r| format!("{id}-{r}")).collect();
        done(
            &claimed[id],
            "w",
            T0 + 2,
            Next::Accepted { refs: nhs(&refs) },
            "sent",
        )
    };
    // One completion batch records the references of four pushes.
    s.complete(vec![
        accepted(&a, &["0", "1"]),
        accepted(&b, &["0"]),
        accepted(&f, &["0", "1"]),
        accepted(&d, &["0"]),
    ])
    .await
    .unwrap();
    let r = |id: &String, part: &str, delivered: bool, detail: &str| {
        receipt(&format!("{id}-{part}"), delivered, detail)
    };
    let batch = vec![
        r(&a, "0", true, "DELIVRD a0"),
        r(&f, "0", false, "UNDELIV f0"),
        r(&b, "0", true, "DELIVRD b0"),
        r(&a, "1", true, "DELIVRD a1"),
        r(&f, "1", true, "DELIVRD f1"),
        r(&d, "0", true, "DELIVRD d0"),
        r(&d, "0", false, "UNDELIV d0 again"),
        r(&o, "0", true, "DELIVRD o0"),
        r(&b, "0", false, "UNDELIV b0 again"),
    ];
    assert_eq!(
        s.apply_receipts(&batch, T0 + 5).await.unwrap(),
        vec![
            ReceiptEffect::Partial { push_id: a.clone() },
            ReceiptEffect::FellBack {
                push_id: f.clone(),
                binding_index: 1
            },
            ReceiptEffect::Finished {
                push_id: b.clone(),
                state: PushState::Delivered
            },
            ReceiptEffect::Finished {
                push_id: a.clone(),
                state: PushState::Delivered
            },
            // F released its ids when it fell back: kept as an orphan.
            ReceiptEffect::Pending,
            ReceiptEffect::Finished {
                push_id: d.clone(),
                state: PushState::Delivered
            },
            // Duplicates of settled receipts: orphans; they change nothing.
            ReceiptEffect::Pending,
            // Overtakes O's completion.
            ReceiptEffect::Pending,
            ReceiptEffect::Pending,
        ]
    );
    let last = |id: String| {
        let s = s.clone();
        async move {
            let r = s.get_push("t1", &id).await.unwrap().unwrap();
            let e = r.events.last().unwrap().clone();
            (r.state, r.events.len(), e.state, e.detail)
        }
    };
    let (state, n, ev, detail) = last(a.clone()).await;
    assert_eq!(
        (state, n, ev),
        (PushState::Delivered, 3, PushState::Delivered)
    );
    assert!(detail.contains("DELIVRD a1"), "{detail:?}");
    let (state, n, _, detail) = last(b.clone()).await;
    assert_eq!((state, n), (PushState::Delivered, 3));
    assert!(detail.contains("DELIVRD b0"), "{detail:?}");
    let (state, n, _, detail) = last(d.clone()).await;
    assert_eq!((state, n), (PushState::Delivered, 3));
    assert!(detail.contains("DELIVRD d0"), "{detail:?}");
    let (state, n, ev, detail) = last(f.clone()).await;
    assert_eq!((state, n, ev), (PushState::Queued, 3, PushState::Queued));
    assert!(
        detail.contains("UNDELIV f0") && detail.contains("falling back to sip"),
        "{detail:?}"
    );
    // The fallback is due at once, with the next binding.
    let c = claim_one(&s, "w", T0 + 5).await;
    assert_eq!((c.id.as_str(), c.binding_index), (f.as_str(), 1));
    // O's completion adopts the receipt that overtook it.
    s.complete(vec![accepted(&o, &["0"])]).await.unwrap();
    assert_eq!(state_of(&s, "t1", &o).await, PushState::Delivered);
    // The orphans of the batch were kept for their hold window (f1, d0, b0; o0 was adopted).
    assert_eq!(
        s.drop_orphan_receipts(T0 + 5 + HOLD_MS as i64, 100)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        s.drop_orphan_receipts(T0 + 6 + HOLD_MS as i64, 100)
            .await
            .unwrap(),
        vec![(BindingKind::Wap, 3)]
    );
}

/// A completion batch applies each completion only under its lease, in order: a completion by
/// an owner that does not hold the lease changes nothing, and a second completion of the same
/// push in the batch finds the lease gone.
async fn completion_batch_lease_and_repeats(s: Arc<dyn Store>) {
    for _ in 0..3 {
        created(&s, push("t1")).await;
    }
    let got = s.claim("a", T0, LEASE, 10).await.unwrap();
    assert_eq!(got.len(), 3);
    let refs = vec![format!("{}-0", got[2].id)];
    s.complete(vec![
        done(&got[0], "a", T0 + 1, Next::Delivered, "ok"),
        done(&got[1], "b", T0 + 1, Next::Delivered, "not b's"),
        done(
            &got[2],
            "a",
            T0 + 1,
            Next::Accepted { refs: nhs(&refs) },
            "sent",
        ),
        done(&got[2], "a", T0 + 2, Next::Failed, "lease gone"),
    ])
    .await
    .unwrap();
    assert_eq!(state_of(&s, "t1", &got[0].id).await, PushState::Delivered);
    assert_eq!(state_of(&s, "t1", &got[1].id).await, PushState::Sending);
    let states: Vec<PushState> = events_of(&s, &got[2].id)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(states, [PushState::Queued, PushState::Accepted]);
    assert_eq!(
        s.apply_receipt(&receipt(&refs[0], true, "DELIVRD"), T0 + 3)
            .await
            .unwrap(),
        ReceiptEffect::Finished {
            push_id: got[2].id.clone(),
            state: PushState::Delivered
        }
    );
}

/// `claim_room` asks its room once, claims up to it, and claims nothing (touching no push) at 0.
async fn claim_room_limits_the_claim(s: Arc<dyn Store>) {
    for _ in 0..3 {
        created(&s, push("t1")).await;
    }
    let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let room = |n: u32| -> dmpushd::store::ClaimRoom {
        let asked = asked.clone();
        Arc::new(move || {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            n
        })
    };
    let none = s.claim_room("a", T0, LEASE, room(0)).await.unwrap();
    assert!(none.is_empty(), "room 0 claims nothing: {none:?}");
    assert_eq!(depth(&s, PushState::Queued).await, 3);
    let two = s.claim_room("a", T0, LEASE, room(2)).await.unwrap();
    assert_eq!(two.len(), 2);
    let rest = s.claim_room("a", T0, LEASE, room(10)).await.unwrap();
    assert_eq!(rest.len(), 1, "only one push was left");
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "once per claim"
    );
    assert_eq!(depth(&s, PushState::Sending).await, 3);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = crate::support::store::PgDb::create().await else { return };
                    super::$case(db.open().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = crate::support::store::SqliteDb::create();
                    super::$case(db.open().await).await;
                }
            )*
        }
    };
}

conformance!(
    enqueue_and_get,
    claim_order_and_lease,
    lease_expiry_and_takeover,
    retry_backoff,
    fallback_and_release,
    ttl_expiry,
    cancel,
    idempotency,
    collapse,
    tenant_isolation,
    devices,
    listing,
    event_history,
    receipts_single,
    receipts_multipart,
    receipts_in_one_batch,
    receipt_before_completion,
    receipt_failed_part,
    batch_completion,
    concurrent_enqueue,
    concurrent_claimers,
    unconfirmed_after_receipt_window_then_late_receipt,
    reused_id_settles_only_its_holder,
    same_id_on_two_accounts,
    orphan_receipts_are_held_then_dropped,
    failed_receipt_falls_back_under_auto,
    collapse_is_scoped_to_the_device,
    purge_final_only,
    receipt_batch_mixes_cases,
    completion_batch_lease_and_repeats,
    claim_room_limits_the_claim,
);

/// PostgreSQL only: a lease renewal skips a push another transaction holds (a completion) instead
/// of waiting for it: renewals lock rows in their own order, and waiting for a completion writer
/// that waits for them made a deadlock cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_renew_skips_a_push_being_completed() {
    let Some(db) = crate::support::store::PgDb::create().await else {
        return;
    };
    let s = db.open().await;
    for _ in 0..2 {
        created(&s, push("t1")).await;
    }
    let leased = s.claim("a", T0, LEASE, 2).await.unwrap();
    let ids: Vec<String> = leased.iter().map(|c| c.id.clone()).collect();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM pushes WHERE id = $1 FOR UPDATE")
        .bind(&ids[0])
        .execute(&mut *holder)
        .await
        .unwrap();
    // Returns while the lock is held (it would wait for ever, the holder never commits here).
    tokio::time::timeout(Duration::from_secs(10), s.renew("a", &ids, T0 + 60_000))
        .await
        .expect("renew waited for a locked push")
        .unwrap();
    holder.rollback().await.unwrap();
    let until: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, lease_until FROM pushes WHERE id = ANY($1) ORDER BY id")
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap();
    for (id, lease_until) in until {
        if id == ids[0] {
            assert!(lease_until < T0 + 60_000, "the locked push was renewed");
        } else {
            assert_eq!(lease_until, T0 + 60_000, "the free push was not renewed");
        }
    }
}

/// PostgreSQL only: per-owner lease count (the default trait method answers 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_leases_held() {
    let Some(db) = crate::support::store::PgDb::create().await else {
        return;
    };
    let s = db.open().await;
    for _ in 0..5 {
        created(&s, push("t1")).await;
    }
    s.claim("a", T0, LEASE, 3).await.unwrap();
    s.claim("b", T0, LEASE, 1).await.unwrap();
    assert_eq!(s.leases_held("a").await.unwrap(), 3);
    assert_eq!(s.leases_held("b").await.unwrap(), 1);
    assert_eq!(s.leases_held("c").await.unwrap(), 0);
}

/// PostgreSQL only: the same collapse key submitted concurrently on two replicas (two stores on
/// one database) leaves exactly one pending push per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_collapse_race_on_two_replicas_leaves_one() {
    let Some(db) = crate::support::store::PgDb::create().await else {
        return;
    };
    let (a, b) = (db.open().await, db.open().await);
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let mut handles = Vec::new();
        for (n, s) in [&a, &b, &a, &b].into_iter().enumerate() {
            let s = s.clone();
            let mut p = push("t1");
            p.collapse_key = Some(format!("k{round}"));
            p.created_at_ms = T0 + n as i64;
            handles.push(tokio::spawn(async move { s.enqueue(p).await.unwrap() }));
        }
        for h in handles {
            assert!(matches!(h.await.unwrap(), Enqueued::Created { .. }));
        }
    }
    let waiting = a
        .list_pushes(
            "t1",
            &PushFilter {
                state: Some(PushState::Queued),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut keys: Vec<String> = waiting.into_iter().filter_map(|p| p.collapse_key).collect();
    keys.sort();
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..ROUNDS).map(|r| format!("k{r}")).collect();
        w.sort();
        w
    };
    assert_eq!(keys, want, "exactly one pending push per collapse key");
    assert_eq!(depth(&a, PushState::Superseded).await, (ROUNDS * 3) as u64);
}
