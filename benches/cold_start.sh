#!/usr/bin/env bash
# Cold start: a new goprox process (empty caches) in front of a bucket that already holds the
# repository, with every S3 request delayed (a bucket in another zone) and without the delay,
# side by side. The S3 latency proxy (benches/s3_delay_proxy.py) is part of the bench and
# counts the requests.
#
#   BENCH_REPO=/path/to/bare.git benches/cold_start.sh   a real repository (e.g. git/git)
#   benches/cold_start.sh                                a generated one
#   S3_DELAY_MS=20 (default)  RUNS=3 (default)  ONLY="row row..." (default: every row)
#
# Per delay, each row a new goprox process, median of RUNS:
#   start         process start until /healthz answers, and until the first ref advertisement
#   depth1-ahead  raw protocol-v2 fetch of the newest tag with deepen 1 (what `git fetch
#                 --depth=1` and the go command send), the first request for it ever: answered
#                 from the pack `goprox mirror` made ahead after its fill
#   depth1-first  the same fetch with no pack kept (kept generated packs deleted before each
#                 run): the pack is made
#   depth1-again  the same request on a new process after another one made it: answered from
#                 the pack kept in the bucket
#   full          raw protocol-v2 fetch of every branch and tag
# and, with MOD_REPO=/path/to/a Go module's bare repository (e.g. golang.org/x/tools; module
# path MOD_PATH, default golang.org/x/tools; version MOD_VERSION, default its newest v* tag),
# the module front on a new process:
#   info+mod      GET .info, then .mod, of a version already served (answered from the ledger)
#   zip-first     GET .zip of a version never built (its ledger entries and zips deleted
#                 before each run): read from the packs, built, stored, sent
#   zip-again     GET .zip of a version built before (from the ledger and the stored zip)
#   go-download   `go mod download -json M@V` with GOPROXY=goprox (new module cache)
# with the S3 requests the row made (from the proxy) and goprox's own count by operation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benches/lib.sh
RUNS="${RUNS:-3}"
DELAY="${S3_DELAY_MS:-20}"

ROOT="$WORK/repos"
bench_repo "$ROOT/big"
git -C "$ROOT/big" repack -q -a -d
NEW="$(git -C "$ROOT/big" for-each-ref --sort=-creatordate --count=1 --format='%(refname:short)' refs/tags)"
PACK_BYTES="$(du -cb "$ROOT"/big/objects/pack/*.pack | tail -1 | cut -f1)"
OBJECTS="$(git -C "$ROOT/big" count-objects -v | awk '/in-pack/{print $2}')"
echo "==> $((PACK_BYTES / 1048576)) MiB pack, $OBJECTS objects, newest tag $NEW"

start_upstream "$ROOT" big
start_seaweed
make_bucket cold
MOD_RULE=()
OPS=(start depth1-ahead depth1-first depth1-again full)
if [ -n "${MOD_REPO:-}" ]; then
  MOD_PATH="${MOD_PATH:-golang.org/x/tools}"
  git clone -q --bare "$MOD_REPO" "$ROOT/mod"
  MOD_VERSION="${MOD_VERSION:-$(git -C "$ROOT/mod" tag --list 'v*' --sort=-v:refname | grep -E '^v[0-9]+\.[0-9]+\.[0-9]+$' | head -1)}"
  MOD_RULE=(--upstream "$MOD_PATH=http://127.0.0.1:$UP_PORT/mod")
  OPS+=(info+mod zip-first zip-again go-download)
  echo "==> module front: $MOD_PATH@$MOD_VERSION"
fi
# ONLY="zip-first zip-again": just these rows.
[ -n "${ONLY:-}" ] && read -r -a OPS <<<"$ONLY"
echo "==> filling the bucket (goprox mirror, bitmaps built)"
"$GOPROX" mirror --store "s3://cold/goprox" --s3-endpoint "$S3" --s3-path-style \
  --upstream "example.test/=http://127.0.0.1:$UP_PORT/" "${MOD_RULE[@]}" example.test/big \
  ${MOD_REPO:+"$MOD_PATH"} >>"$WORK/mirror.log" 2>&1

COUNT_FILE="$WORK/s3-count"
s3reqs() { cut -d' ' -f1 "$COUNT_FILE"; }
secs() { echo "$1" | bc -l; }
# goprox's own count of store calls by operation: "get=N get_range=M ..."
store_ops() {
  curl -s "http://127.0.0.1:$GP_PORT/metrics" | awk -F'[{}",= ]+' '
    /^goprox_store_requests_total\{/ { for (i = 2; i < NF; i += 2) if ($i == "op") op = $(i + 1); n[op] += $NF }
    END { s = ""; for (o in n) if (n[o] > 0) s = s o "=" n[o] " "; print s }'
}

# Delete the generated packs kept in the bucket (the next depth-1 fetch makes its pack).
drop_cached_packs() {
  local k
  for k in $(curl -s --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    "$S3/cold?list-type=2&prefix=goprox%2Fexample.test%2Fbig%2F%40git%2Fcache%2F" |
    grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g'); do
    curl -s -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
      -X DELETE "$S3/cold/${k//@/%40}"
  done
}

# Delete the module front's records and zips (the next .zip request builds it).
drop_module_records() {
  local k
  for k in $(curl -s --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    "$S3/cold?list-type=2&prefix=goprox%2F${MOD_PATH//\//%2F}%2F%40mod%2F" |
    grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g'); do
    curl -s -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
      -X DELETE "$S3/cold/${k//@/%40}"
  done
}
# Seconds for one GET of the module front.
mod_get() { curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$GP_PORT/$MOD_PATH/@v/$MOD_VERSION.$1"; }

# Serving from the bucket: no look upstream during the measured requests.
GP_EXTRA=(--refresh-after 1h "${MOD_RULE[@]}")

declare -A RESULT
run_delay() { # DELAY_MS
  local d="$1" port
  port="$(free_port)"
  echo "0 0 0 0" >"$COUNT_FILE"
  python3 benches/s3_delay_proxy.py "$port" "${S3#http://127.0.0.1:}" "$d" "$COUNT_FILE" &
  local proxy=$!
  PIDS+=("$proxy")
  disown "$proxy"
  sleep 0.5
  GOPROX_S3="http://127.0.0.1:$port"
  local op
  for op in "${OPS[@]}"; do
    local times=() reqs=() ops=""
    for _ in $(seq 1 "$RUNS"); do
      local before t0 t1 t
      [ "$op" = depth1-first ] && drop_cached_packs
      [ "$op" = zip-first ] && drop_module_records
      before="$(s3reqs)"
      t0="$(now)"
      start_goprox cold
      case "$op" in
        start)
          # Until serving, then until the first ref advertisement is answered.
          t1="$(now)"
          curl -sf -o /dev/null -H 'Git-Protocol: version=2' \
            "http://127.0.0.1:$GP_PORT/example.test/big/info/refs?service=git-upload-pack"
          t="$(secs "$t1 - $t0")/$(secs "$(now) - $t0")"
          ;;
        depth1-*)
          t="$(python3 benches/raw_fetch.py "http://127.0.0.1:$GP_PORT/example.test/big" depth1 "$NEW" | cut -d' ' -f1)"
          ;;
        full)
          t="$(python3 benches/raw_fetch.py "http://127.0.0.1:$GP_PORT/example.test/big" full | cut -d' ' -f1)"
          ;;
        info+mod)
          t="$(mod_get info)/$(mod_get mod)"
          ;;
        zip-first | zip-again)
          t="$(mod_get zip)"
          ;;
        go-download)
          local gm="$WORK/gomod"
          rm -rf "$gm" && mkdir -p "$gm"
          t1="$(now)"
          (cd "$gm" && env -i PATH="$PATH" HOME="$gm" GOPATH="$gm/gopath" GOMODCACHE="$gm/cache" \
            GOCACHE="$gm/gocache" GOENV=off GOTOOLCHAIN=local GOSUMDB=off GOFLAGS=-modcacherw \
            GOPROXY="http://127.0.0.1:$GP_PORT" go mod download -json "$MOD_PATH@$MOD_VERSION" >/dev/null)
          t="$(secs "$(now) - $t1")"
          ;;
      esac
      ops="$(store_ops)"
      stop_goprox
      times+=("$t")
      reqs+=("$(($(s3reqs) - before))")
    done
    RESULT["$op/$d"]="$(printf '%s\n' "${times[@]}" | sort -t/ -k1,1g | sed -n "$(((RUNS + 1) / 2))p") s, ${reqs[$(((RUNS - 1) / 2))]} S3 requests ($ops)"
    echo "   +${d} ms $op: ${times[*]} s; S3 requests ${reqs[*]}; goprox store calls (last run): $ops"
  done
  kill "$proxy" 2>/dev/null || true
}

echo "==> without delay"
run_delay 0
echo "==> +${DELAY} ms per S3 request"
run_delay "$DELAY"

echo
printf '%-14s %-70s %s\n' "" "no delay" "+${DELAY} ms per S3 request"
for op in "${OPS[@]}"; do
  printf '%-14s %-70s %s\n' "$op" "${RESULT[$op/0]}" "${RESULT[$op/$DELAY]}"
done
echo "(start: seconds until /healthz / until the first ref advertisement; info+mod: seconds for .info / .mod; median of $RUNS, each a new process)"
