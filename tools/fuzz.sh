#!/usr/bin/env bash
# Builds and runs uvdo's fuzz targets with cargo-fuzz on stable Rust.
#
#   tools/fuzz.sh build                 build every target
#   tools/fuzz.sh smoke [SECONDS]       build, then run every target for SECONDS (default 8)
#   tools/fuzz.sh run TARGET [ARGS...]  run one target; ARGS go to libFuzzer
#                                       (e.g. -max_total_time=600 -jobs=2)
#
# cargo-fuzz passes unstable -Z flags to rustc (coverage instrumentation). RUSTC_BOOTSTRAP=1
# lets the stable compiler accept them; no nightly toolchain is needed. Targets are built with
# `--sanitizer none` by default: the decoders are safe Rust, so AddressSanitizer adds cost and
# little signal. Set FUZZ_SANITIZER=address to use it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-none}"

if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked --quiet
fi

targets() { cargo fuzz list; }

case "${1:-smoke}" in
  build)
    cargo fuzz build --sanitizer "$sanitizer"
    ;;
  smoke)
    seconds="${2:-8}"
    cargo fuzz build --sanitizer "$sanitizer"
    total=0
    for t in $(targets); do
      out=$(cargo fuzz run --sanitizer "$sanitizer" "$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=1 2>&1) || {
        echo "$out" | tail -40
        echo "fuzz target $t failed" >&2
        exit 1
      }
      runs=$(echo "$out" | grep -oE 'Done [0-9]+ runs' | grep -oE '[0-9]+' || echo 0)
      total=$((total + runs))
      echo "fuzz $t: $runs runs in ${seconds}s, no crash"
    done
    echo "fuzz smoke: $total runs over $(targets | wc -l) targets, no crash"
    ;;
  run)
    shift
    target="$1"
    shift
    cargo fuzz run --sanitizer "$sanitizer" "$target" -- "$@"
    ;;
  *)
    echo "usage: tools/fuzz.sh build | smoke [SECONDS] | run TARGET [ARGS...]" >&2
    exit 2
    ;;
esac
