#!/usr/bin/env bash
# The deploy/ test peer: a real Prometheus (Debian `prometheus`, which also ships promtool) that
# tests/it/deploy.rs starts to scrape a running gateway. Idempotent; Debian's registry only.
# The package's own service is not used (tests start their own instance on a random port).
set -euo pipefail
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends prometheus \
  || { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; }
