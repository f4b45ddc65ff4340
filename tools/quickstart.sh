#!/usr/bin/env bash
# The README's first command: installs what uvdo needs on a fresh Debian 12 machine, builds it,
# and runs the main job: a volume on a sparse file, a real data set (files under /usr) written
# to it twice, the space saving and dedupe statistics printed, the volume closed, reopened and
# checked. (Serving the volume over NBD and the uvdo/uvdostats tools come with their issues.)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends util-linux g++ >/dev/null
fi
cargo run --release -q -p uvdo --example dedupe_demo -- "$@"
