//! Helpers shared by every integration test: the one place for peers (`require_tool`), paths
//! (`fixture`), ports (`free_port`), binding contexts and deliveries; with one submodule per
//! kind of harness (the gateway in-process or as a process, the HTTPS receiver, stores, WAP
//! peers, SIP peers).
//!
//! No blanket `allow(dead_code)`: in one crate the compiler sees every user, so a helper nobody
//! calls any more is reported instead of lingering.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytes::Bytes;
use dmpushd::binding::{BindingContext, ContentType, Delivery, DeviceBinding, Receipt};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub mod gateway;
pub mod process;
pub mod receiver;
pub mod sip;
pub mod store;
pub mod wap;

/// Finds an external peer program (sipp, tshark, xml2wbxml, node, …) on `PATH`.
///
/// Interop tests need peers that `scripts/install-peers.sh` installs. With
/// `DMPUSHD_REQUIRE_PEERS=1` (set by `scripts/test.sh`, hence by CI) a missing peer is a test
/// failure, so CI can never go green by skipping; without it (a developer's `cargo test` on a
/// machine without the peers) the test prints why and returns early.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var("DMPUSHD_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!("peer `{name}` is not installed; run scripts/install-peers.sh")
        }
        None => {
            eprintln!("SKIP: peer `{name}` not installed (scripts/install-peers.sh installs it)");
            None
        }
    }
}

/// `rel` under the repository root (peer scripts, fixtures), independent of the working
/// directory the test runner picked.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The path of a file under `tests/fixtures`.
pub fn fixture_path(rel: &str) -> PathBuf {
    repo_path("tests/fixtures").join(rel)
}

/// The bytes of a file under `tests/fixtures`.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = fixture_path(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A loopback port that was free a moment ago, for TCP and UDP alike (SIP and WAP peers listen
/// on both; probing both avoids handing out a port whose UDP twin is taken).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port")
}

/// What a binding gets from the gateway: a registry of its own, a receipt channel of
/// `capacity` whose receiving end the test holds, and a shutdown token nobody has cancelled.
pub fn binding_context(capacity: usize) -> (BindingContext, mpsc::Receiver<Receipt>) {
    let (tx, rx) = mpsc::channel(capacity);
    let ctx = BindingContext {
        registry: prometheus::Registry::new(),
        receipts: tx,
        shutdown: CancellationToken::new(),
    };
    (ctx, rx)
}

/// A binding context for bindings whose receipts no test reads (SIP, OBEX). The receiver is
/// leaked, not dropped: a binding that does send one then sees a full channel rather than a
/// closed one, as in the gateway while the store is busy.
pub fn binding_context_unread() -> BindingContext {
    let (ctx, rx) = binding_context(16);
    std::mem::forget(rx);
    ctx
}

/// A first attempt of push `p1` for tenant `t` to `target`, made now and valid for an hour.
pub fn delivery(target: DeviceBinding, content_type: ContentType, body: &[u8]) -> Delivery {
    let now = OffsetDateTime::now_utc();
    Delivery {
        push_id: "p1".into(),
        tenant: "t".into(),
        device_id: None,
        target,
        content_type,
        body: Bytes::copy_from_slice(body),
        bootstrap: None,
        attempt: 1,
        expires_at: now + time::Duration::hours(1),
        now,
    }
}

/// Polls `cond` until it is true or `secs` seconds have passed (then panics naming `what`).
pub async fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
