#!/usr/bin/env bash
# Gateway wrapper for the e2e and scale benchmarks (DMPUSHD_BENCH_GATEWAY=benches/gateway/config.sh):
# adds $QUEUE_EXTRA after [queue] and $STORE_EXTRA after [store] in the config the benchmark
# wrote, then runs $BIN (default: this checkout's release dmpushd). Config experiments without a
# rebuild, e.g. QUEUE_EXTRA='workers = 512' (docs/PERFORMANCE.md §6, twelfth pass).
set -euo pipefail
BIN=${BIN:-$(dirname "$0")/../../target/release/dmpushd}
cfg=""
for a in "$@"; do case "$a" in *.toml) cfg="$a" ;; esac; done
[ -n "$cfg" ] || { echo "config.sh: no .toml among the arguments" >&2; exit 2; }
if [ -n "${QUEUE_EXTRA:-}" ]; then sed -i "s/^\[queue\]$/[queue]\n${QUEUE_EXTRA}/" "$cfg"; fi
if [ -n "${STORE_EXTRA:-}" ]; then sed -i "s/^\[store\]$/[store]\n${STORE_EXTRA}/" "$cfg"; fi
exec "$BIN" "$@"
