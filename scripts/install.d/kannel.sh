#!/usr/bin/env bash
# Kannel (bearerbox + wapbox PPG) and wrk for the end-to-end benchmark's `kannel` setup
# (`cargo bench --bench e2e`, issue 14). Benchmarks only: scripts/install-peers.sh runs every file in
# this directory for the test suite, and the tests do not need Kannel, so without `--bench` this
# script does nothing. Idempotent; Debian packages only.
# usage (root): bash scripts/install.d/kannel.sh --bench
set -euo pipefail
if [ "${1:-}" != "--bench" ]; then
  echo "kannel: benchmarks only, skipped (bash scripts/install.d/kannel.sh --bench installs it)"
  exit 0
fi
need=()
command -v bearerbox >/dev/null 2>&1 || need+=(kannel)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if ((${#need[@]} == 0)); then
  echo "kannel: bearerbox and wrk already installed"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
# The package's init script starts a bearerbox on the default ports; the benchmark starts its own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now kannel >/dev/null 2>&1 || true; fi
if [ -x /etc/init.d/kannel ]; then /etc/init.d/kannel stop >/dev/null 2>&1 || true; fi
