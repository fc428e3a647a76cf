#!/usr/bin/env bash
# What S3 faults cost: clones through goprox on a new instance (empty caches, every object read
# from S3) with every S3 request delayed 20 ms, without faults and with 1% of all S3 requests
# faulted (503 SlowDown, 500, reset, answer lost, body cut short, 3 s stall: the fault proxy of
# the tests, examples/s3_fault_proxy.rs). Every clone must succeed; the last full clone and
# every depth-1 clone of each condition must be fsck-clean.
#
#   BENCH_REPO=/path/to/bare.git benches/s3_faults.sh   a real repository (e.g. git/git)
#   benches/s3_faults.sh                                a generated one (git fast-import)
#   RUNS=5 FAULT_RATE=0.01 S3_DELAY_MS=20               the defaults
#
# Prints, per condition: median and worst full clone and depth-1 clone, S3 requests and faults
# injected, and the ratio faults / no faults.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benches/lib.sh
RUNS="${RUNS:-5}"
RATE="${FAULT_RATE:-0.01}"
DELAY="${S3_DELAY_MS:-20}"
cargo build --release --quiet --example s3_fault_proxy
PROXY_BIN="$(pwd)/target/release/examples/s3_fault_proxy"

ROOT="$WORK/repos"
GEN_COMMITS="${GEN_COMMITS:-10000}" bench_repo "$ROOT/big"
PACK_MIB="$(( $(du -cb "$ROOT"/big/objects/pack/*.pack | tail -1 | cut -f1) >> 20 ))"
start_upstream "$ROOT" big
start_seaweed
make_bucket bench
echo "==> fill the bucket (goprox mirror, no faults)"
"$GOPROX" mirror --store s3://bench/goprox --s3-endpoint "$S3" --s3-path-style \
  --upstream "example.test/=http://127.0.0.1:$UP_PORT/" example.test/big >"$WORK/mirror.log" 2>&1

echo "==> warm-up: a full and a depth-1 clone (the depth-1 answer is kept in the bucket's pack cache)"
start_goprox bench
git -c protocol.version=2 clone -q --bare "http://127.0.0.1:$GP_PORT/example.test/big" "$WORK/w1"
git -c protocol.version=2 clone -q --bare --depth=1 "http://127.0.0.1:$GP_PORT/example.test/big" "$WORK/w2"
rm -rf "$WORK/w1" "$WORK/w2"
stop_goprox

run_condition() { # label rate -> prints a row
  local label="$1" rate="$2" port count i t0 t1 full=() shallow=() r0 f0
  port="$(free_port)"
  count="$WORK/count-$rate"
  "$PROXY_BIN" "$port" "${S3#http://127.0.0.1:}" "$DELAY" "$rate" 42 "$count" &
  local proxy_pid=$!
  PIDS+=("$proxy_pid")
  disown "$proxy_pid"
  for i in $(seq 1 50); do [ -s "$count" ] && break; sleep 0.1; done
  GOPROX_S3="http://127.0.0.1:$port"
  read -r r0 f0 <"$count"
  for i in $(seq 1 "$RUNS"); do
    start_goprox bench
    rm -rf "$WORK/c"
    t0="$(now)"
    git -c protocol.version=2 clone -q --bare "http://127.0.0.1:$GP_PORT/example.test/big" "$WORK/c"
    t1="$(now)"
    full+=("$(echo "$t1 - $t0" | bc -l)")
    # fsck takes minutes on a large repository: the last run's clone of each condition.
    if [ "$i" = "$RUNS" ]; then
      git -C "$WORK/c" fsck --strict --no-progress >/dev/null 2>&1 || { echo "fsck failed" >&2; exit 1; }
    fi
    stop_goprox
    start_goprox bench
    rm -rf "$WORK/s"
    t0="$(now)"
    git -c protocol.version=2 clone -q --bare --depth=1 "http://127.0.0.1:$GP_PORT/example.test/big" "$WORK/s"
    t1="$(now)"
    shallow+=("$(echo "$t1 - $t0" | bc -l)")
    git -C "$WORK/s" fsck --strict --no-progress >/dev/null 2>&1 || { echo "fsck failed" >&2; exit 1; }
    stop_goprox
  done
  local r1 f1
  read -r r1 f1 <"$count"
  kill "$proxy_pid" 2>/dev/null || true
  local fs ss fmax smax
  fs="$(stats "${full[@]}")"; ss="$(stats "${shallow[@]}")"
  fmax="$(printf '%s\n' "${full[@]}" | sort -g | tail -1)"
  smax="$(printf '%s\n' "${shallow[@]}" | sort -g | tail -1)"
  printf '%-22s full clone %7.2f s (worst %6.2f)   depth-1 %6.2f s (worst %6.2f)   %6d S3 requests, %4d faults\n' \
    "$label" "${fs%% *}" "$fmax" "${ss%% *}" "$smax" "$((r1 - r0))" "$((f1 - f0))"
  echo "${fs%% *} ${ss%% *}" >"$WORK/row-$rate"
}

echo
echo "repository: ${PACK_MIB} MiB pack; S3 requests delayed ${DELAY} ms; ${RUNS} runs each, a new goprox each run; $(nproc) cores"
run_condition "no faults" 0
run_condition "$(awk "BEGIN{print $RATE*100}")% of requests faulted" "$RATE"
read -r f0 s0 <"$WORK/row-0"
read -r f1 s1 <"$WORK/row-$RATE"
printf 'faults / no faults: full clone %.2fx, depth-1 %.2fx (medians)\n' \
  "$(echo "$f1 / $f0" | bc -l)" "$(echo "$s1 / $s0" | bc -l)"
