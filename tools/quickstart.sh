#!/usr/bin/env bash
# The README's first command. On a fresh Debian 12 machine: installs what uvdo needs, builds
# it, and runs the main job on a file-backed volume: `uvdo create` (which starts the daemon
# serving it over NBD), a real data set (files under /usr, twice) written through NBD with
# qemu-img, `uvdostats`, `uvdo status`, `uvdo stop`. Everything lives in a temporary
# directory (kept with KEEP=1), so no root-owned registry is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends util-linux g++ qemu-utils >/dev/null
fi
cargo build --release -q -p uvdo-cli
bin="$PWD/target/release"

work=$(mktemp -d /tmp/uvdo-quickstart.XXXXXX)
export UVDO_CONF="$work/uvdo.toml"
cleanup() {
  "$bin/uvdo" stop --name demo >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== a data set: up to 128 MiB of files under /usr, as a tar archive, twice"
tar -cf "$work/data.tar" --ignore-failed-read -C /usr share/doc lib/x86_64-linux-gnu \
  2>/dev/null || true
truncate -s "$(( $(stat -c %s "$work/data.tar") > 134217728 ? 134217728 :
  $(stat -c %s "$work/data.tar") ))" "$work/data.tar"
cat "$work/data.tar" "$work/data.tar" > "$work/twice.raw"
truncate -s "%4096" "$work/twice.raw"
ls -l "$work/twice.raw" | awk '{ printf "   %d MiB to write\n", $5 / 1048576 }'

echo "== uvdo create (formats a 2 GiB file, 8 GiB logical, and starts serving it)"
truncate -s 2G "$work/disk.img"
"$bin/uvdo" create --name demo --device "$work/disk.img" --vdoLogicalSize 8G \
  --indexMem 64M | tee "$work/create.out"
uri=$(grep -m1 '^nbd' "$work/create.out")

echo "== writing the data set through NBD ($uri)"
qemu-img convert -n -f raw -O raw "$work/twice.raw" "$uri"

echo "== uvdostats"
"$bin/uvdostats" --human-readable
echo "== uvdo status (excerpt)"
"$bin/uvdo" status --name demo | grep -E "operating mode|write policy|saving|URI|uri" || true
echo "== uvdo stop"
"$bin/uvdo" stop --name demo
echo "== uvdostats of the stopped volume"
"$bin/uvdostats"
