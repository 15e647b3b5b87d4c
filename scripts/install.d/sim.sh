#!/usr/bin/env bash
# Simulator peers: tests/peers/sim/esme.py needs only python3; tests/peers/sim/esme-npm.js uses the
# npm `smpp` package that the WAP peers install into tests/peers/smpp (idempotent).
set -euo pipefail
command -v python3 >/dev/null || { apt-get install -y python3; }
bash "$(dirname "$0")/wap.sh"
