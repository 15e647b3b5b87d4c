#!/usr/bin/env bash
# Short fuzzing smoke run of the codec fuzz targets (CI-friendly), or a long run:
#   scripts/fuzz-smoke.sh                 # 30 s per target
#   scripts/fuzz-smoke.sh 600             # 10 min per target (one target at a time)
#   FUZZ_TARGETS="wbxml_decode" scripts/fuzz-smoke.sh 60
#   FUZZ_SANITIZER=none scripts/fuzz-smoke.sh 10    # CI: no ASan (the codecs have no unsafe code,
#                                                   # panics are caught either way; builds faster)
# Works on stable: if no nightly toolchain is installed, RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the
# unstable sanitizer flags. Installs cargo-fuzz from crates.io if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-30}
TARGETS=${FUZZ_TARGETS:-"$(sed -n 's/^name = "\([a-z0-9_]*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^dmpushd-fuzz$' | tr '\n' ' ')"}
SANITIZER=${FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

# Seed corpora from the golden fixtures (the corpus dirs are git-ignored).
mkdir -p fuzz/corpus/wbxml_decode fuzz/corpus/package0_parse fuzz/target
cp tests/fixtures/wbxml/*.wbxml tests/fixtures/bootstrap/*.wbxml fuzz/corpus/wbxml_decode/
cp tests/fixtures/notification/*.bin fuzz/corpus/package0_parse/

for t in $TARGETS; do
  echo "fuzz-smoke: $t for ${SECS}s"
  mkdir -p "fuzz/corpus/$t"
  # -rss_limit_mb bounds memory; -max_len covers a multi-segment WAP push.
  rc=0
  nice cargo "${toolchain[@]}" fuzz run -s "$SANITIZER" "$t" --fuzz-dir fuzz -- \
    -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
    > "fuzz/target/last-$t.log" 2>&1 || rc=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY)' \
    "fuzz/target/last-$t.log" || true
  if [ "$rc" -ne 0 ] || grep -qE "ERROR: libFuzzer|panicked|SUMMARY: " "fuzz/target/last-$t.log"; then
    tail -40 "fuzz/target/last-$t.log"
    echo "fuzz-smoke: $t FAILED (exit $rc; see fuzz/target/last-$t.log)"; exit 1
  fi
done
echo "fuzz-smoke: 0 crashes"
