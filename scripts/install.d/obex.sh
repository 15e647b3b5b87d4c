#!/usr/bin/env bash
# OBEX interop peer: `obex_test -i` from Debian's openobex-apps (an OBEX server on TCP port 650).
# Idempotent; Debian registry only. `unshare` (util-linux) and `ip` (iproute2) run it in a
# private network namespace during the tests (tests/it/obex_peer.rs).
set -euo pipefail
need=()
command -v obex_test >/dev/null 2>&1 || need+=(openobex-apps)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
