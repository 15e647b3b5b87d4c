#!/usr/bin/env bash
# Durable accepts/s vs the no-op ceiling with wrk (apt-get install wrk), at 64 and 256 connections.
# Usage: bash benches/wrk/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
cargo bench --bench accept --no-run 2>/dev/null
total=$(( (secs + 2) * 4 + 10 ))
cargo bench --bench accept -- --serve-only "$total" > /tmp/dmpushd-accept-serve.log 2>&1 &
server=$!
for _ in $(seq 200); do curl -s -o /dev/null 127.0.0.1:18081/noop -d x && break; sleep 0.1; done
for c in 64 256; do
  for target in noop:http://127.0.0.1:18081/noop push:http://127.0.0.1:18080/v1/pushes; do
    name=${target%%:*}; url=${target#*:}
    echo "== $name c=$c"
    wrk -t2 -c"$c" -d"${secs}s" --latency -s "benches/wrk/$name.lua" "$url" | grep -E 'Requests/sec|50%|99%|Non-2xx|requests in'
  done
done
wait "$server"
tail -1 /tmp/dmpushd-accept-serve.log
