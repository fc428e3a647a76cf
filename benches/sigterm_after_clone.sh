#!/usr/bin/env bash
# A rolling deploy at real size. A first clone of a big repository streams through instance A's
# fill; the moment the client has its pack, A gets SIGTERM (its fill is still indexing and
# publishing). Then the upstream is stopped for good and instance B starts on the same bucket.
#
#   BENCH_REPO=/path/to/bare.git benches/sigterm_after_clone.sh   a real repository (git/git)
#   GRACE=25s (default)  S3_DELAY_MS=0 (default; e.g. 20 puts the S3 latency proxy in front)
#
# Reports: the first clone through A; how long A took to exit after SIGTERM and its exit
# status; B's full clone with the upstream down (B finishes A's received fill from the bucket:
# upstream was fetched once in all); whether B's refs and object ids equal upstream's; and
# `goprox fsck` of the bucket.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benches/lib.sh
GRACE="${GRACE:-25s}"
DELAY="${S3_DELAY_MS:-0}"

ROOT="$WORK/repos"
bench_repo "$ROOT/big"
git -C "$ROOT/big" repack -q -a -d
PACK_BYTES="$(du -cb "$ROOT"/big/objects/pack/*.pack | tail -1 | cut -f1)"
OBJECTS="$(git -C "$ROOT/big" count-objects -v | awk '/in-pack/{print $2}')"
echo "==> $((PACK_BYTES / 1048576)) MiB pack, $OBJECTS objects"
start_upstream "$ROOT" big
UP_CGI_PID="${PIDS[-1]}"
start_seaweed
make_bucket roll
if [ "$DELAY" != 0 ]; then
  port="$(free_port)"
  echo "0 0 0 0" >"$WORK/s3-count"
  python3 benches/s3_delay_proxy.py "$port" "${S3#http://127.0.0.1:}" "$DELAY" "$WORK/s3-count" &
  PIDS+=($!)
  disown $!
  sleep 0.5
  GOPROX_S3="http://127.0.0.1:$port"
fi

# Instance A, a child of this shell (not disowned) so that its exit status can be read.
A_PORT="$(free_port)"
"$GOPROX" serve --listen "127.0.0.1:$A_PORT" --public-url "http://127.0.0.1:$A_PORT" \
  --store "s3://roll/goprox" --s3-endpoint "${GOPROX_S3:-$S3}" --s3-path-style \
  --upstream "example.test/=http://127.0.0.1:$UP_PORT/" --shutdown-grace "$GRACE" \
  >>"$WORK/goprox-a.log" 2>&1 </dev/null &
A_PID=$!
PIDS+=("$A_PID")
wait_http "http://127.0.0.1:$A_PORT/healthz" "goprox A"

echo "==> first clone through A (its fill streams the pack)"
t0="$(now)"
git -c protocol.version=2 clone -q --bare "http://127.0.0.1:$A_PORT/example.test/big" "$WORK/first"
t1="$(now)"
kill -TERM "$A_PID"
ts="$(now)"
status=""
for _ in $(seq 1 1200); do # at most 120 s
  if ! kill -0 "$A_PID" 2>/dev/null; then
    set +e
    wait "$A_PID"
    status=$?
    set -e
    break
  fi
  sleep 0.1
done
te="$(now)"
[ -n "$status" ] || { echo "A did not exit within 120 s of SIGTERM" >&2; exit 1; }
rm -rf "$WORK/first"

echo "==> upstream stopped; instance B on the same bucket"
kill -TERM "$UP_CGI_PID" 2>/dev/null || true
sleep 0.5
start_goprox roll
t2="$(now)"
git -c protocol.version=2 clone -q --bare "http://127.0.0.1:$GP_PORT/example.test/big" "$WORK/second"
t3="$(now)"
want="$(git -C "$ROOT/big" for-each-ref --format='%(objectname) %(refname)' | sort | sha256sum)"
got="$(git -C "$WORK/second" for-each-ref --format='%(objectname) %(refname)' | sort | sha256sum)"
same=no
[ "$want" = "$got" ] && same=yes
adopted="$(grep -c 'adopted a received fill' "$WORK/goprox-roll.log" || true)"
stop_goprox
fsck="$("$GOPROX" fsck --store "s3://roll/goprox" --s3-endpoint "$S3" --s3-path-style 2>&1 | tail -1)"

echo
printf 'first clone through A                 %.2f s\n' "$(echo "$t1 - $t0" | bc -l)"
printf 'A exit after SIGTERM (grace %s)      %.2f s, status %s\n' "$GRACE" "$(echo "$te - $ts" | bc -l)" "$status"
echo "A's log after SIGTERM:"
grep -E 'shutting down|handed off|stopped|cut short|drain' "$WORK/goprox-a.log" | sed 's/^/    /' | tail -8
printf 'B full clone, upstream down           %.2f s (received fills adopted by B: %s)\n' "$(echo "$t3 - $t2" | bc -l)" "$adopted"
echo "B refs and object ids equal upstream's: $same"
echo "goprox fsck: $fsck"
[ "$same" = yes ] && [ "$status" = 0 ]
