#!/usr/bin/env bash
# Builds and runs the in-process libwbxml2 timing harness on the benchmark message.
# Needs Debian's libwbxml2-dev and a C compiler (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/../../.."
if ! pkg-config --exists libwbxml2 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q libwbxml2-dev gcc pkg-config
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -O2 -o "$out/libwbxml_bench" tests/peers/codec/libwbxml_bench.c $(pkg-config --cflags --libs libwbxml2)
"$out/libwbxml_bench" tests/fixtures/wbxml/22_bench_dm_message.xml "${1:-20000}"
