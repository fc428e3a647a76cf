#!/usr/bin/env bash
# Big-repository benchmark: goprox (release build, SeaweedFS S3 store) against `git http-backend`
# (bitmapped pack), all on 127.0.0.1, with raw protocol-v2 fetches (benches/raw_fetch.py: the
# pack is discarded, so the client's indexing does not hide the server's cost).
#
#   BENCH_REPO=/path/to/bare.git benches/big_repo.sh   a real repository (e.g. a clone of git/git)
#   benches/big_repo.sh                                a generated one (git fast-import; ~3 min)
#   S3_DELAY_MS=20 benches/big_repo.sh                 every S3 request delayed 20 ms (and counted)
#   PARALLEL=10                                        concurrent full fetches (default 10)
#   FILL_ONLY=1                                        only the first-clone (fill) row
#   PIN=1                                              servers (goprox, upstream, SeaweedFS) on CPU 0,
#                                                      the first-clone clients on CPU 1 (as if on
#                                                      machines of their own)
#
# Reports, per operation: wall time (goprox cold = fresh process, warm = second run, both with
# the pack cache off, packs made ahead after the fill not looked up either; cached = a fresh process with the pack cache on, second run, i.e. a
# repeated identical request; upstream = second run), server CPU (goprox: the process; upstream: the CGI server's children), goprox peak
# RSS, S3 requests (with the proxy), and the ratio goprox warm / http-backend.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${PIN:-}" ] && [ -z "${PINNED:-}" ]; then
  PINNED=1 exec taskset -c 0 bash "$0" "$@"
fi
CLIENT=()
[ -n "${PIN:-}" ] && CLIENT=(taskset -c 1)
source benches/lib.sh
PARALLEL="${PARALLEL:-10}"

ROOT="$WORK/repos"
bench_repo "$ROOT/big"
echo "==> git repack -adb (bitmaps for http-backend)"
git -C "$ROOT/big" repack -q -a -d -b
PACK_BYTES="$(du -cb "$ROOT"/big/objects/pack/*.pack | tail -1 | cut -f1)"
OBJECTS="$(git -C "$ROOT/big" count-objects -v | awk '/in-pack/{print $2}')"
REFS="$(git -C "$ROOT/big" for-each-ref | wc -l)"
read -r NEW OLD <<<"$(git -C "$ROOT/big" for-each-ref --sort=-creatordate --count=2 --format='%(refname:short)' refs/tags | tr '\n' ' ')"

start_upstream "$ROOT" big
UP_CGI_PID="${PIDS[-1]}"
start_seaweed
make_bucket bench
COUNT_FILE="$WORK/s3-count"
echo "0 0 0 0" >"$COUNT_FILE"
if [ "${S3_DELAY_MS:-0}" != 0 ]; then
  PROXY_PORT="$(free_port)"
  python3 benches/s3_delay_proxy.py "$PROXY_PORT" "${S3#http://127.0.0.1:}" "$S3_DELAY_MS" "$COUNT_FILE" &
  PIDS+=($!)
  disown $!
  sleep 0.5
  GOPROX_S3="http://127.0.0.1:$PROXY_PORT"
fi
s3reqs() { cut -d' ' -f1 "$COUNT_FILE"; }
child_ticks() { awk '{print $16 + $17}' "/proc/$1/stat"; }
secs() { echo "$1" | bc -l; }

GP="http://127.0.0.1:0/example.test/big"
UP="http://127.0.0.1:$UP_PORT/big"
row() { printf '%-34s %9s %9s %9s %8s %9s %9s %8s %8s %9s\n' "$@"; }

echo "==> fill: first clone through an empty bucket vs cloning upstream directly"
start_goprox bench
t0="$(now)"; "${CLIENT[@]}" git -c protocol.version=2 clone -q --bare "http://127.0.0.1:$GP_PORT/example.test/big" "$WORK/c1"; t1="$(now)"
FILL_T="$(secs "$t1 - $t0")"; FILL_HWM="$(hwm_kib "$GP_PID")"; FILL_REQS="$(s3reqs)"
rm -rf "$WORK/c1"
# The fill's bitmaps are built in the background after it: wait for them (bounded), so that no
# later measurement runs beside the build.
for _ in $(seq 1 1500); do
  grep -q "bitmaps stored\|no bitmaps" "$WORK/goprox-bench.log" && break
  sleep 0.2
done
BITMAPS="$(grep -o 'bitmaps stored.*\|no bitmaps.*' "$WORK/goprox-bench.log" | head -1 | sed 's/\x1b\[[0-9;]*m//g')"
BITMAP_HWM="$(hwm_kib "$GP_PID")"
echo "   $BITMAPS (peak RSS so far $((BITMAP_HWM / 1024)) MiB)"
t0="$(now)"; "${CLIENT[@]}" git -c protocol.version=2 clone -q --bare "$UP" "$WORK/c2"; t1="$(now)"
DIRECT_T="$(secs "$t1 - $t0")"
rm -rf "$WORK/c2"
stop_goprox
if [ -n "${FILL_ONLY:-}" ]; then
  printf 'fill: first clone through an empty bucket %.2fs, cloning upstream directly %.2fs (%.2fx); fill peak RSS %d MiB; %s S3 requests\n' \
    "$FILL_T" "$DIRECT_T" "$(secs "$FILL_T / $DIRECT_T")" "$((FILL_HWM / 1024))" "$FILL_REQS"
  exit 0
fi

declare -a OUT
measure() { # label, raw_fetch args...
  local label="$1"; shift
  # goprox, a fresh process (cold caches), then the same again (warm)
  GP_EXTRA=(--pack-cache-min-cost 1000h --pack-cache-min-objects 18446744073709551615)
  start_goprox bench
  local r0 r1 c0 c1 cold warm up u0 u1
  r0="$(s3reqs)"
  cold="$(python3 benches/raw_fetch.py "http://127.0.0.1:$GP_PORT/example.test/big" "$@")"
  r1="$(s3reqs)"
  c0="$(ticks "$GP_PID")"
  warm="$(python3 benches/raw_fetch.py "http://127.0.0.1:$GP_PORT/example.test/big" "$@")"
  c1="$(ticks "$GP_PID")"
  local r2; r2="$(s3reqs)"
  local hwm; hwm="$(hwm_kib "$GP_PID")"
  stop_goprox
  # The pack cache: a repeated identical request.
  GP_EXTRA=()
  start_goprox bench
  python3 benches/raw_fetch.py "http://127.0.0.1:$GP_PORT/example.test/big" "$@" >/dev/null
  sleep 2 # the pack is kept in the background
  local cached; cached="$(python3 benches/raw_fetch.py "http://127.0.0.1:$GP_PORT/example.test/big" "$@")"
  stop_goprox
  python3 benches/raw_fetch.py "$UP" "$@" >/dev/null
  u0="$(child_ticks "$UP_CGI_PID")"
  up="$(python3 benches/raw_fetch.py "$UP" "$@")"
  u1="$(child_ticks "$UP_CGI_PID")"
  local upt gpt
  upt="${up%% *}"; gpt="${warm%% *}"
  OUT+=("$(row "$label" "${upt}s" "${cold%% *}s" "${gpt}s" "$(printf '%.2fx' "$(secs "$gpt / $upt")")" \
    "$(printf '%.2fs' "$(secs "($u1 - $u0) / $CLK_TCK")")" "$(printf '%.2fs' "$(secs "($c1 - $c0) / $CLK_TCK")")" \
    "$((hwm / 1024))M" "$((r1 - r0))/$((r2 - r1))" "${cached%% *}s")")
  echo "   $label: upstream ${up}; goprox cold ${cold}, warm ${warm}, cached ${cached}"
}

echo "==> operations (tags: $OLD -> $NEW)"
measure "full fetch, all refs" full
measure "incremental ($OLD -> $NEW), thin" incremental "$OLD" "$NEW"
measure "depth 1 of $NEW" depth1 "$NEW"
measure "$PARALLEL concurrent full fetches" full "$PARALLEL"

echo
echo "repository: $OBJECTS objects, $REFS refs, pack $((PACK_BYTES >> 20)) MiB; $(nproc) cores; S3 delay ${S3_DELAY_MS:-0} ms"
printf 'fill: first clone through an empty bucket %.2fs, cloning upstream directly %.2fs (%.2fx); fill peak RSS %d MiB; %s S3 requests\n' \
  "$FILL_T" "$DIRECT_T" "$(secs "$FILL_T / $DIRECT_T")" "$((FILL_HWM / 1024))" "$FILL_REQS"
echo "bitmaps after the fill: $BITMAPS; peak RSS up to then $((BITMAP_HWM / 1024)) MiB"
row "" "upstream" "gp cold" "gp warm" "ratio" "up CPU" "gp CPU" "gp RSS" "S3 c/w" "gp cached"
for l in "${OUT[@]}"; do echo "$l"; done
