//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

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

pub mod gateway;
pub mod process;
pub mod receiver;
