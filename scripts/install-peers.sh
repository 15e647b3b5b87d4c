#!/usr/bin/env bash
# Installs the independent peers the interop tests drive (DESIGN §9), from Debian's and npm's
# registries only. Idempotent; safe to run on a fresh Debian machine as root.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in tshark:tshark sipp:sip-tester xml2wbxml:libwbxml2-utils wbxml2xml:libwbxml2-utils \
            node:nodejs npm:npm; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; preseed "no" so the install never prompts.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections || true
  apt-get update -q
  apt-get install -y -q --no-install-recommends $(printf '%s\n' "${need_apt[@]}" | sort -u)
fi

# Per-area extras (npm peers etc.); each file is owned by the area that needs it.
for f in scripts/install.d/*.sh; do
  [ -e "$f" ] || continue
  echo "install-peers: $f"
  bash "$f"
done
