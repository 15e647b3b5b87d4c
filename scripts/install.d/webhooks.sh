#!/usr/bin/env bash
# Webhook peers (issue 11): the PyPI `standardwebhooks` package is the independent verifier the
# webhook tests run every received webhook through (tests/peers/webhooks/verify.py). Idempotent.
set -euo pipefail
command -v python3 >/dev/null || { apt-get install -y python3; }
if ! python3 -c 'import standardwebhooks' 2>/dev/null; then
  python3 -m pip install --quiet 'standardwebhooks==1.1.0'
fi
python3 -c 'import standardwebhooks; print("webhooks: standardwebhooks importable")'
