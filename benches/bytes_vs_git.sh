#!/usr/bin/env bash
# Bytes on the wire, goprox against `git http-backend` (issue 7's request shapes): the same raw
# protocol-v2 fetches sent to both, printing objects, bytes and seconds (second run of each;
# goprox with its pack cache off, and "cached": a second instance on the same bucket with the
# pack cache on, second run, i.e. the answer to a repeated identical request).
#
#   BENCH_REPO=/path/to/bare.git benches/bytes_vs_git.sh   a real repository (e.g. git/git)
#   benches/bytes_vs_git.sh                                a generated one (git fast-import)
#   OLD=v2.54.0 NEW=v2.55.0                                the two releases (default: the two
#                                                          newest tags by creation date)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benches/lib.sh

ROOT="$WORK/repos"
mkdir -p "$ROOT"
if [ -n "${BENCH_REPO:-}" ]; then
  git clone -q --bare --no-local "$BENCH_REPO" "$ROOT/big"
else
  git init -q --bare "$ROOT/big"
  python3 benches/gen_repo.py | git -C "$ROOT/big" fast-import --quiet
  git -C "$ROOT/big" symbolic-ref HEAD refs/heads/main
fi
git -C "$ROOT/big" repack -q -a -d -b
git -C "$ROOT/big" config uploadpack.allowFilter true
export BENCH_GIT_DIR="$ROOT/big"
if [ -z "${OLD:-}" ] || [ -z "${NEW:-}" ]; then
  read -r NEW OLD <<<"$(git -C "$ROOT/big" for-each-ref --sort=-creatordate --count=2 --format='%(refname:short)' refs/tags | tr '\n' ' ')"
fi
start_upstream "$ROOT" big
UP_CGI_PID="${PIDS[-1]}"
start_seaweed
make_bucket bytes
# Two instances on one bucket: one never keeps generated packs (the cost of making them), one
# with the default pack cache (the second identical request is answered from the store).
GP_EXTRA=(--pack-cache-min-cost 1000h --pack-cache-min-objects 18446744073709551615)
start_goprox bytes
GP="http://127.0.0.1:$GP_PORT/example.test/big"
GP_UNCACHED_PID="$GP_PID"
GP_EXTRA=()
start_goprox bytes
GPC="http://127.0.0.1:$GP_PORT/example.test/big"
UP="http://127.0.0.1:$UP_PORT/big"
# Fill first.
git -c protocol.version=2 ls-remote "$GP" >/dev/null
# Its bitmaps are built in the background: wait for them (bounded), so that no request runs
# beside the build.
for _ in $(seq 1 1500); do
  grep -q "bitmaps stored\|no bitmaps" "$WORK/goprox-bytes.log" && break
  sleep 0.2
done
grep -o 'bitmaps stored.*\|no bitmaps.*' "$WORK/goprox-bytes.log" | head -1 | sed 's/\x1b\[[0-9;]*m//g' || true

# Server CPU of one request: goprox's own ticks; the upstream CGI server's waited-for children
# (http-backend, upload-pack, pack-objects).
child_ticks() { awk '{print $16 + $17}' "/proc/$1/stat"; }
CLK_TCK="$(getconf CLK_TCK)"
printf '%-28s %9s %12s %8s %7s | %9s %12s %8s %7s | %6s %6s | %8s %6s\n' "want $NEW, $OLD" "C objs" "C bytes" "C s" "C cpu" \
  "gp objs" "gp bytes" "gp s" "gp cpu" "bytes" "time" "cached s" "time"
for shape in have thin deepen1 since not blob_limit; do
  python3 benches/raw_fetch.py "$UP" shape "$shape" "$OLD" "$NEW" >/dev/null
  u0="$(child_ticks "$UP_CGI_PID")"
  read -r ut ub uo <<<"$(python3 benches/raw_fetch.py "$UP" shape "$shape" "$OLD" "$NEW")"
  u1="$(child_ticks "$UP_CGI_PID")"
  python3 benches/raw_fetch.py "$GP" shape "$shape" "$OLD" "$NEW" >/dev/null
  g0="$(ticks "$GP_UNCACHED_PID")"
  read -r gt gb go <<<"$(python3 benches/raw_fetch.py "$GP" shape "$shape" "$OLD" "$NEW")"
  g1="$(ticks "$GP_UNCACHED_PID")"
  ucpu="$(echo "($u1 - $u0) / $CLK_TCK" | bc -l)"
  gcpu="$(echo "($g1 - $g0) / $CLK_TCK" | bc -l)"
  python3 benches/raw_fetch.py "$GPC" shape "$shape" "$OLD" "$NEW" >/dev/null
  sleep 1 # the pack is kept in the background
  read -r ct _ _ <<<"$(python3 benches/raw_fetch.py "$GPC" shape "$shape" "$OLD" "$NEW")"
  printf '%-28s %9s %12s %8s %7.2f | %9s %12s %8s %7.2f | %5.2fx %5.2fx | %8s %5.2fx\n' "$shape" "$uo" "$ub" "$ut" "$ucpu" "$go" "$gb" "$gt" "$gcpu" \
    "$(echo "$gb / $ub" | bc -l)" "$(echo "$gt / $ut" | bc -l)" "$ct" "$(echo "$ct / $ut" | bc -l)"
done
grep -o 'pack sent.*' "$WORK/goprox-bytes.log" | tail -12 || true
