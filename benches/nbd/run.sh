#!/usr/bin/env bash
# End-to-end benchmark through NBD (issue 7): uvdo-nbd-serve against nbdkit null (the
# transport alone), nbdkit file and qemu-nbd (a raw file of the same size), all on Unix
# sockets, driven by fio's nbd engine. Interleaved: every round runs each job on every
# server back to back (server order rotated per round), so machine noise hits all of them.
# Reports medians and per-round ratios; asserts no speed. See docs/BENCHMARKS.md.
#
#   bash benches/nbd/run.sh [--rounds N] [--seconds S] [--size BYTES] [--smoke]
#                           [--dir DIR] [--json FILE] [--no-build]
#
# Installs nothing: it checks for fio, nbdkit (file and null plugins), qemu-nbd, nbdinfo
# and python3, and says what is missing (Debian: apt-get install -y fio nbdkit qemu-utils
# libnbd-bin python3).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
ORIG_ARGS=("$@")
ROUNDS=3
SECS=5
SIZE=$((1 << 30))
SMOKE=0
BUILD=1
DIR=""
JSON=""

usage() { sed -n '7,8p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --dir) DIR=$2; shift 2 ;;
    --json) JSON=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [ "$SMOKE" = 1 ]; then
  ROUNDS=1; SECS=2; SIZE=$((128 << 20))
  JSON=${JSON:-$REPO/target/nbd-bench-smoke.json}
fi
JSON=${JSON:-$REPO/target/nbd-bench.json}
case "$ROUNDS$SECS$SIZE" in *[!0-9]*) echo "run.sh: --rounds, --seconds, --size take integers" >&2; exit 2 ;; esac
if [ "$ROUNDS" -lt 1 ] || [ "$SECS" -lt 1 ] || [ $((SIZE % (1 << 20))) -ne 0 ] || [ "$SIZE" -lt $((64 << 20)) ]; then
  echo "run.sh: need --rounds >= 1, --seconds >= 1, --size a multiple of 1 MiB and >= 64 MiB" >&2
  exit 2
fi

# ---- tools -------------------------------------------------------------------------------
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3 || true)
missing=()
for tool in fio nbdkit qemu-nbd nbdinfo; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -n "$PY" ] || missing+=("python3")
if command -v nbdkit >/dev/null; then
  for plugin in file null; do
    nbdkit "$plugin" --version >/dev/null 2>&1 || missing+=("nbdkit-$plugin-plugin")
  done
fi
if command -v fio >/dev/null && ! fio --enghelp=nbd >/dev/null 2>&1; then
  missing+=("fio-with-nbd-engine")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: missing: ${missing[*]}" >&2
  echo "run.sh: on Debian: apt-get install -y fio nbdkit qemu-utils libnbd-bin python3" >&2
  exit 3
fi
if [ "$BUILD" = 1 ]; then
  (cd "$REPO" && cargo build --release -q -p uvdo-nbd -p uvdo-cli)
fi
SERVE=$REPO/target/release/uvdo-nbd-serve
UVDO=$REPO/target/release/uvdo
UVDOSTATS=$REPO/target/release/uvdostats
for bin in "$SERVE" "$UVDO" "$UVDOSTATS"; do
  [ -x "$bin" ] || { echo "run.sh: $bin missing: cargo build --release -p uvdo-nbd -p uvdo-cli" >&2; exit 3; }
done

# ---- scratch -----------------------------------------------------------------------------
# All backing files (uvdo's store and the raw files) live in one directory: the same disk.
BASE=${DIR:-$REPO/target}
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/nbd-bench.XXXXXX")
RAW=$WORK/raw
mkdir -p "$RAW"
RECORDS=$RAW/records.tsv
: > "$RECORDS"
SPID=""
cleanup() {
  if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
    kill -TERM "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CLK_TCK=$(getconf CLK_TCK)
# utime + stime of every thread, in clock ticks (fields 14 and 15 of /proc/PID/stat; the
# command name may hold spaces, so cut after its closing parenthesis first).
# A server that died reads as 0 (its exit status is reported when it is reaped).
cpu_ticks() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo $((${12} + ${13}))
}
# Bytes this process caused to be written to storage (page cache dirtying or direct I/O).
write_bytes() { awk '/^write_bytes/ {print $2}' "/proc/$1/io" 2>/dev/null || echo 0; }
load1() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- servers -----------------------------------------------------------------------------
# start_server NAME: a fresh backing file and server; sets SPID and URI.
start_server() {
  local name=$1 img=$WORK/$1.img sock=$WORK/$1.sock log=$WORK/$1.log
  rm -f "$img" "$sock" "$log"
  URI="nbd+unix:///?socket=$sock"
  case "$name" in
    null)
      nbdkit -f -U "$sock" null size="$SIZE" >"$log" 2>&1 &
      ;;
    file)
      truncate -s "$SIZE" "$img"
      nbdkit -f -U "$sock" file file="$img" >"$log" 2>&1 &
      ;;
    qemu)
      truncate -s "$SIZE" "$img"
      qemu-nbd -f raw -k "$sock" --persistent --shared=16 --cache=none --aio=native \
        --discard=unmap "$img" >"$log" 2>&1 &
      ;;
    uvdo|uvdo-sync)
      local policy=async
      [ "$name" = uvdo-sync ] && policy=sync
      # The store is twice the logical size: room for the volume's metadata and index and
      # for a fully unique logical space.
      "$SERVE" --store "$img" --format --size $((2 * SIZE)) --logical "$SIZE" \
        --socket "$sock" --policy "$policy" >"$log" 2>&1 &
      ;;
  esac
  SPID=$!
  local tries=0
  until nbdinfo --size "$URI" >/dev/null 2>&1; do
    if ! kill -0 "$SPID" 2>/dev/null || [ $tries -ge 600 ]; then
      echo "run.sh: server $name did not come up:" >&2
      cat "$log" >&2
      exit 1
    fi
    tries=$((tries + 1))
    sleep 0.1
  done
}

stop_server() {
  kill -TERM "$SPID" 2>/dev/null || echo "run.sh: server $SERVER (pid $SPID) died during the job" >&2
  local tries=0
  while kill -0 "$SPID" 2>/dev/null && [ $tries -lt 1200 ]; do
    tries=$((tries + 1)); sleep 0.05
  done
  if kill -0 "$SPID" 2>/dev/null; then
    echo "run.sh: server pid $SPID ignored SIGTERM for 60 s; killing it" >&2
    kill -KILL "$SPID" 2>/dev/null || true
  fi
  local rc=0
  wait "$SPID" || rc=$?
  SPID=""
  if [ $rc -ne 0 ] || [ "$KEEP_LOG" = 1 ]; then
    mkdir -p "$FAILED"
    cp "$WORK/$SERVER.log" "$FAILED/r$ROUND-$SERVER-$SESSION.server-log" 2>/dev/null || true
    [ $rc -ne 0 ] && echo "run.sh: server $SERVER exited with status $rc (log kept in $FAILED)" >&2
  fi
  KEEP_LOG=0
  return 0
}
KEEP_LOG=0

# ---- jobs --------------------------------------------------------------------------------
# Arguments of each measured fio job (after --ioengine=nbd --uri=...).
job_args() {
  local timed="--time_based --runtime=$SECS"
  case "$1" in
    rr4k) echo "--rw=randread --bs=4k --iodepth=32 $timed" ;;
    sr1m) echo "--rw=read --bs=1M --iodepth=8 $timed" ;;
    rw4k-u) echo "--rw=randwrite --bs=4k --iodepth=32 --refill_buffers --dedupe_percentage=0 $timed" ;;
    rw4k-d90) echo "--rw=randwrite --bs=4k --iodepth=32 --refill_buffers --dedupe_percentage=90 $timed" ;;
    rw4k-d100) echo "--rw=randwrite --bs=4k --iodepth=32 --refill_buffers --dedupe_percentage=100 $timed" ;;
    sw1m-d50) echo "--rw=write --bs=1M --iodepth=8 --refill_buffers --dedupe_percentage=50 $timed" ;;
    flush32) echo "--rw=randwrite --bs=4k --iodepth=32 --refill_buffers --dedupe_percentage=0 --fsync=32 $timed" ;;
  esac
}
# Unmeasured: fill the whole export with unique data before the read jobs.
FILL_ARGS="--rw=write --bs=1M --iodepth=8 --refill_buffers --dedupe_percentage=0"

# A job whose I/O fails still produces fio's JSON (its "error" field is set): the run goes
# on, the report flags the job, and the server's log and fio's messages are kept.
FAILED=$REPO/target/nbd-bench-failures
fio_run() { # OUT ARGS...
  local out=$1; shift
  if ! fio --name=job --ioengine=nbd --uri="$URI" --output-format=json --output="$out" "$@" \
    >"$out.stderr" 2>&1; then
    mkdir -p "$FAILED"
    cp "$out.stderr" "$FAILED/$(basename "$out").fio-stderr"
    cp "$WORK/$SERVER.log" "$FAILED/$(basename "$out").server-log" 2>/dev/null || true
    echo "run.sh: fio reported errors in $(basename "$out"); kept in $FAILED:" >&2
    head -3 "$out.stderr" >&2
    grep -q '{' "$out" 2>/dev/null || exit 1
    KEEP_LOG=1
  fi
}

# measure ROUND SERVER JOB: one measured fio job on the running server.
measure() {
  local round=$1 server=$2 job=$3 out=$RAW/r$1-$3-$2.json
  local la0 c0 w0 t0 t1 c1 w1
  la0=$(load1); c0=$(cpu_ticks "$SPID"); w0=$(write_bytes "$SPID"); t0=$(date +%s.%N)
  # shellcheck disable=SC2046
  fio_run "$out" $(job_args "$job")
  t1=$(date +%s.%N); c1=$(cpu_ticks "$SPID"); w1=$(write_bytes "$SPID")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$server" "$job" "$out" \
    $((c1 - c0)) $((w1 - w0)) "-" "$la0" "$(load1)" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')" >>"$RECORDS"
}

# uvdo's own statistics, read from the stopped volume (uvdostats inspects it read-only).
volume_stats() { # OUT
  local conf=$WORK/registry
  rm -rf "$conf"; mkdir -p "$conf"
  if ! { UVDO_CONF=$conf/uvdo.toml "$UVDO" import --name bench --device "$WORK/$SERVER.img" \
    --activate disabled >/dev/null && UVDO_CONF=$conf/uvdo.toml "$UVDOSTATS" --json bench >"$1"; }; then
    echo "run.sh: could not read the statistics of the $SERVER volume" >&2
    echo '{}' >"$1"
  fi
  rm -rf "$conf"
}

# session ROUND SERVER SESSION: fresh server; the read session fills then runs both reads.
session() {
  local round=$1 server=$2 what=$3
  SERVER=$server ROUND=$round SESSION=$what
  start_server "$server"
  if [ "$what" = reads ]; then
    fio_run "$RAW/r$round-fill-$server.json" $FILL_ARGS
    measure "$round" "$server" rr4k
    measure "$round" "$server" sr1m
    stop_server
  else
    measure "$round" "$server" "$what"
    stop_server
    case "$server" in
      uvdo|uvdo-sync)
        local st=$RAW/r$round-$what-$server.stats.json
        volume_stats "$st"
        # Point the record's stats column at the file.
        sed -i "\$s|\t-\t|\t$st\t|" "$RECORDS"
        ;;
    esac
  fi
  rm -f "$WORK/$server.img"
}

SESSIONS=(reads rw4k-u rw4k-d90 rw4k-d100 sw1m-d50 flush32)
SERVERS=(null file qemu uvdo)
START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cat /proc/loadavg)
T_START=$(date +%s)
echo "run.sh: $ROUNDS round(s), $SECS s per job, ${SIZE} B exports, scratch $WORK; load $LOAD_START" >&2
for ((r = 1; r <= ROUNDS; r++)); do
  echo "run.sh: round $r/$ROUNDS (load $(cat /proc/loadavg))" >&2
  for what in "${SESSIONS[@]}"; do
    n=${#SERVERS[@]}
    order=()
    for ((i = 0; i < n; i++)); do order+=("${SERVERS[$(((i + r - 1) % n))]}"); done
    # The sync-policy uvdo runs the unique 4 KiB random writes only, right after the others.
    [ "$what" = rw4k-u ] && order+=(uvdo-sync)
    for server in "${order[@]}"; do
      session "$r" "$server" "$what"
    done
  done
done
LOAD_END=$(cat /proc/loadavg)
# Keep the raw figures (fio JSON, records) of the last run; the backing files go.
RAW_KEPT=$REPO/target/nbd-bench-raw
[ "$SMOKE" = 1 ] && RAW_KEPT=$REPO/target/nbd-bench-raw-smoke
rm -rf "$RAW_KEPT"
cp -r "$RAW" "$RAW_KEPT"
sed -i "s|$RAW/|$RAW_KEPT/|g" "$RAW_KEPT/records.tsv"
RECORDS=$RAW_KEPT/records.tsv
ELAPSED=$(($(date +%s) - T_START))

"$PY" "$REPO/benches/nbd/report.py" --records "$RECORDS" --json "$JSON" \
  --clk-tck "$CLK_TCK" --rounds "$ROUNDS" --seconds "$SECS" --size "$SIZE" \
  --started "$START" --load-start "$LOAD_START" --load-end "$LOAD_END" --elapsed "$ELAPSED" \
  --smoke "$SMOKE" --command "bash benches/nbd/run.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}"
