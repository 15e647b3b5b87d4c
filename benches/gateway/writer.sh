#!/usr/bin/env bash
# Gateway wrapper (DMPUSHD_BENCH_GATEWAY=benches/gateway/writer.sh) for the SQLite setups: finds
# the hot writer thread (`sqlite-hot-writ`), and when the gateway exits appends "<pid> <CPU ns>"
# (the first field of its schedstat) to ${OUT_DIR:-/tmp}/writer-cpu.log: ÷ pushes = the writer's
# CPU per push. With PERF=1 it also records the thread with DWARF call graphs for 6 s, DELAY
# seconds after start (13.5: the drain of an e2e setup), into ${OUT_DIR:-/tmp}/perf-writer-<pid>.data.
set -euo pipefail
BIN=${BIN:-$(dirname "$0")/../../target/release/dmpushd}
out=${OUT_DIR:-/tmp}
gw=$$
(
  tid=""
  for _ in $(seq 100); do
    tid=$(grep -l sqlite-hot-writ /proc/"$gw"/task/*/comm 2>/dev/null | head -1 | cut -d/ -f5 || true)
    [ -n "$tid" ] && break
    sleep 0.1
  done
  [ -n "$tid" ] || exit 0
  if [ -n "${PERF:-}" ]; then
    sleep "${DELAY:-13.5}"
    perf record -F 999 --call-graph dwarf,16384 -t "$tid" -o "$out/perf-writer-$gw.data" -- sleep 6 >/dev/null 2>&1 || true
  fi
  last=0
  while kill -0 "$gw" 2>/dev/null; do
    last=$(cut -d' ' -f1 /proc/"$gw"/task/"$tid"/schedstat 2>/dev/null || echo "$last")
    sleep 0.25
  done
  echo "$gw $last" >>"$out/writer-cpu.log"
) &
exec "$BIN" "$@"
