#!/usr/bin/env bash
# WAP binding peers: the npm `smpp` package (server mode) used by tests/peers/smpp/smsc-sim.js.
# Idempotent; installs from the npm registry into tests/peers/smpp/node_modules (gitignored).
set -euo pipefail
cd "$(dirname "$0")/../../tests/peers/smpp"
if [ -f node_modules/smpp/package.json ] && grep -q '"version": "0.5.1"' node_modules/smpp/package.json; then
  echo "wap: smpp@0.5.1 already installed"
  exit 0
fi
npm install --no-audit --no-fund --no-save smpp@0.5.1
