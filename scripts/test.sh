#!/usr/bin/env bash
# The project's test command (README): every unit, integration and interop test.
# It installs what it needs first (scripts/install-peers.sh: idempotent, a second or so when
# everything is present), so a fresh Debian machine needs only the README's two commands.
# A peer that is still missing afterwards fails the run (DMPUSHD_REQUIRE_PEERS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-peers.sh
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
export DMPUSHD_REQUIRE_PEERS=1
cargo nextest run --workspace --no-fail-fast "$@"
cargo test --doc --quiet
