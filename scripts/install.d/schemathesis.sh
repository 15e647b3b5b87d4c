#!/usr/bin/env bash
# API contract peer (issue 13): PyPI `schemathesis` drives a live gateway from its /openapi.json
# (scripts/schemathesis.sh). Idempotent: a version check, no pip call, when it is present.
set -euo pipefail
want=4.32.5
command -v python3 >/dev/null || { apt-get install -y python3; }
have=$(python3 -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  python3 -m pip install --quiet "schemathesis==$want"
fi
echo "schemathesis: $want installed"
