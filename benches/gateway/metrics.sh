#!/usr/bin/env bash
# Gateway wrapper (DMPUSHD_BENCH_GATEWAY=benches/gateway/metrics.sh): appends the gateway's
# pipeline metrics (claims, completions, receipts, attempts, SMPP window, leases) every 0.5 s to
# ${OUT_DIR:-/tmp}/metrics-<replica>-<pid>.log, each scrape after a "T <unix time>" line, then
# runs $BIN. Differences between scrapes give each stage's rate and time per call.
set -euo pipefail
BIN=${BIN:-$(dirname "$0")/../../target/release/dmpushd}
cfg=""
for a in "$@"; do case "$a" in *.toml) cfg="$a" ;; esac; done
[ -n "$cfg" ] || { echo "metrics.sh: no .toml among the arguments" >&2; exit 2; }
port=$(grep -m1 '^listen' "$cfg" | sed 's/.*:\([0-9]*\)".*/\1/')
out=${OUT_DIR:-/tmp}/metrics-$(basename "$cfg" .toml)-$$.log
gw=$$
(
  while kill -0 "$gw" 2>/dev/null; do
    echo "T $(date +%s.%N)" >>"$out"
    curl -s "http://127.0.0.1:$port/metrics" 2>/dev/null |
      grep -E '^dmpushd_(receipts_total|leases_held|smpp_window_in_flight|delivery_attempt_seconds_(sum|count)|store_operation_seconds_(sum|count)|claim_size_(sum|count))' >>"$out" || true
    sleep 0.5
  done
) &
exec "$BIN" "$@"
