#!/usr/bin/env bash
# The project's test command (README): every unit, integration and interop test.
# Interop peers must be installed (scripts/install-peers.sh); a missing peer fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export DMPUSHD_REQUIRE_PEERS=1
cargo nextest run --workspace --no-fail-fast "$@"
cargo test --doc --quiet
