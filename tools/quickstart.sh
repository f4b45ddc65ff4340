#!/usr/bin/env bash
# The README's first command: installs what uvdo needs on a fresh Debian 12 machine, builds it,
# and runs the main job. Until the engine lands (issue 3), the main job is uvdo-selfcheck: the
# layout of a 1 TiB store, a small volume's metadata written to a real file and read back, and
# torn super block writes on the simulated store.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends util-linux g++ >/dev/null
fi
cargo run --release -q -p uvdo-selfcheck -- "$@"
