#!/usr/bin/env bash
# The module front against its alternatives, side by side in one run: `go mod download` of many
# versions of one module
#   - cold through GOPROXY=goprox (packs in the bucket, no zip built yet),
#   - warm through GOPROXY=goprox (every answer recorded in the bucket),
#   - from a static file server (Python's http.server over the GOPROXY layout `go mod download`
#     leaves in its cache: the physical limit of a proxy),
#   - GOPROXY=direct through goprox's git route, and GOPROXY=direct straight from the upstream;
# then peak memory of 20 concurrent cold zip builds of different versions, and the S3 requests
# of a warm .info/.mod on a new instance.
#
#   BENCH_REPO=/path/to/tools.git BENCH_MODULE=golang.org/x/tools benches/goproxy_vs_direct.sh
#   benches/goproxy_vs_direct.sh            # a generated module (GEN_VERSIONS, GEN_FILES)
#
# BENCH_VERSIONS=N takes the newest N versions of @v/list (default 40). Needs what
# benches/lib.sh needs, and go >= 1.24.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v go >/dev/null || { echo "missing tool: go" >&2; exit 1; }
NVERS="${BENCH_VERSIONS:-40}"

ROOT="$WORK/up"
mkdir -p "$ROOT"
if [ -n "${BENCH_REPO:-}" ]; then
  MODULE="${BENCH_MODULE:?BENCH_MODULE names the module at the repository root}"
  echo "==> copying $BENCH_REPO"
  git clone -q --bare --no-local "$BENCH_REPO" "$ROOT/repo.git"
else
  MODULE="example.test/genmod"
  echo "==> generating a module with ${GEN_VERSIONS:-60} versions of ${GEN_FILES:-400} files"
  python3 - "$ROOT/src" "$MODULE" "${GEN_VERSIONS:-60}" "${GEN_FILES:-400}" <<'PY'
import os, random, subprocess, sys
dest, module, versions, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.makedirs(dest)
run = lambda *a: subprocess.run(["git", "-C", dest, "-c", "user.name=g", "-c", "user.email=g@example.test", *a], check=True, stdout=subprocess.DEVNULL)
run("init", "-q", "-b", "main")
rnd = random.Random(7)
words = ["alpha", "beta", "gamma", "delta", "omega", "lambda", "sigma", "kappa"]
def body(i, v):
    lines = ["package pkg%d" % (i % 20), ""]
    for f in range(40):
        lines.append("// F%d_%d %s" % (i, f, " ".join(rnd.choice(words) for _ in range(12))))
        lines.append("func F%d_%d() int { return %d }" % (i, f, v * 1000 + f))
    return "\n".join(lines) + "\n"
with open(os.path.join(dest, "go.mod"), "w") as fh:
    fh.write("module %s\n\ngo 1.21\n" % module)
for v in range(versions):
    for i in rnd.sample(range(files), files // 4 if v else files):
        d = os.path.join(dest, "pkg%d" % (i % 20))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%d.go" % i), "w") as fh:
            fh.write(body(i, v))
    run("add", "-A")
    run("commit", "-q", "-m", "v%d" % v)
    run("tag", "v1.%d.0" % v)
PY
  git clone -q --bare "$ROOT/src" "$ROOT/repo.git"
fi

start_upstream "$ROOT" repo.git "$MODULE=repo.git"
start_seaweed
COUNT_FILE="$WORK/s3-count"
PROXY_PORT="$(free_port)"
python3 benches/s3_delay_proxy.py "$PROXY_PORT" "${S3#http://127.0.0.1:}" "${S3_DELAY_MS:-0}" "$COUNT_FILE" &
PIDS+=($!)
disown $!
sleep 0.5
s3reqs() { cut -d' ' -f1 "$COUNT_FILE"; }
GP_EXTRA=(--upstream "$MODULE=http://127.0.0.1:$UP_PORT/repo.git")
GOPROX_S3="http://127.0.0.1:$PROXY_PORT" # goprox's S3 requests go through the counting proxy
for b in cold mem; do
  make_bucket "$b"
  echo "==> fill bucket $b (goprox mirror)"
  "$GOPROX" mirror --store "s3://$b/goprox" --s3-endpoint "$S3" --s3-path-style \
    "${GP_EXTRA[@]}" "$MODULE" >"$WORK/mirror-$b.log" 2>&1
done

gocmd() { # modcache route args...: route is a GOPROXY value, or "git:PORT" (direct, HTTP proxy)
  local cache="$1" route="$2"
  shift 2
  local env=(GOMODCACHE="$cache" GOPATH="$WORK/gopath" GOFLAGS=-modcacherw GOSUMDB=off
    GOTOOLCHAIN=local GOTELEMETRY=off GONOSUMDB='*' GOPRIVATE=)
  case "$route" in
    git:*)
      local p="http://127.0.0.1:${route#git:}"
      env+=(GOPROXY=direct GOINSECURE="${MODULE%%/*}" HTTP_PROXY="$p" HTTPS_PROXY="$p" http_proxy="$p" https_proxy="$p" NO_PROXY=127.0.0.1 no_proxy=127.0.0.1)
      ;;
    *) env+=(GOPROXY="$route") ;;
  esac
  (cd "$WORK" && env "${env[@]}" go "$@")
}

echo "==> goprox on bucket cold"
start_goprox cold
LIST="$(curl -s "http://127.0.0.1:$GP_PORT/$MODULE/@v/list")"
mapfile -t VERSIONS < <(printf '%s\n' "$LIST" | grep -v '^$' | tail -n "$NVERS")
[ "${#VERSIONS[@]}" -gt 0 ] || { echo "no versions of $MODULE" >&2; exit 1; }
ARGS=()
for v in "${VERSIONS[@]}"; do ARGS+=("$MODULE@$v"); done
echo "    ${#VERSIONS[@]} versions, $(printf '%s\n' "$LIST" | grep -vc '^$') listed"

timed() { # label cache route: go mod download of every version; prints seconds
  local t0 t1
  t0="$(now)"
  gocmd "$2" "$3" mod download -json "${ARGS[@]}" >"$2.json"
  t1="$(now)"
  if grep -q '"Error"' "$2.json"; then grep -m3 -A2 '"Error"' "$2.json" >&2; exit 1; fi
  echo "$t1 - $t0" | bc -l
}
sums() { grep -E '"(Version|Sum|GoModSum)"' "$1.json" | tr -d ' ,' | paste -sd' ' | tr ' ' '\n' | sort; }

GPURL="http://127.0.0.1:$GP_PORT"
idle_kib="$(awk '/^VmRSS:/{print $2}' "/proc/$GP_PID/status")"
cold="$(timed cold "$WORK/m-cold" "$GPURL")"
cold_hwm="$(hwm_kib "$GP_PID")"
warm="$(timed warm "$WORK/m-warm" "$GPURL")"
rm -rf "$WORK/m-warm"
warm2="$(timed warm "$WORK/m-warm" "$GPURL")"
echo "==> static file server over the module cache's GOPROXY layout"
STATIC_PORT="$(free_port)"
(cd "$WORK/m-cold/cache/download" && exec python3 -m http.server "$STATIC_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
PIDS+=($!)
disown $!
wait_http "http://127.0.0.1:$STATIC_PORT/" "static server"
static="$(timed static "$WORK/m-static" "http://127.0.0.1:$STATIC_PORT")"
rm -rf "$WORK/m-static"
static2="$(timed static "$WORK/m-static" "http://127.0.0.1:$STATIC_PORT")"
via_git="$(timed via-git "$WORK/m-git" "git:$GP_PORT")"
upstream="$(timed upstream "$WORK/m-up" "git:$UP_PORT")"
for other in m-warm m-static m-git m-up; do
  if [ "$(sums "$WORK/m-cold")" != "$(sums "$WORK/$other")" ]; then
    echo "sums differ between m-cold and $other" >&2
    diff <(sums "$WORK/m-cold") <(sums "$WORK/$other") | head >&2
    exit 1
  fi
done
stop_goprox

echo "==> 20 concurrent cold zip builds (bucket mem, new instance)"
start_goprox mem
sleep 1
idle2="$(awk '/^VmRSS:/{print $2}' "/proc/$GP_PID/status")"
t0="$(now)"
for v in "${VERSIONS[@]:0:20}"; do
  curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$GP_PORT/$MODULE/@v/$v.zip" >>"$WORK/codes" &
done
wait
t1="$(now)"
grep -vq '^200$' "$WORK/codes" && { echo "a zip request failed: $(sort "$WORK/codes" | uniq -c)" >&2; exit 1; }
mem_hwm="$(hwm_kib "$GP_PID")"
stop_goprox

echo "==> warm .info and .mod on a new instance: S3 requests"
start_goprox cold
v="${VERSIONS[0]}"
r0="$(s3reqs)"
curl -sf -o /dev/null "http://127.0.0.1:$GP_PORT/$MODULE/@v/$v.info"
r1="$(s3reqs)"
curl -sf -o /dev/null "http://127.0.0.1:$GP_PORT/$MODULE/@v/$v.mod"
r2="$(s3reqs)"
stop_goprox

ratio() { echo "scale=2; $1 / $2" | bc -l; }
echo
echo "$MODULE: ${#VERSIONS[@]} versions; $(nproc) cores; S3 delay ${S3_DELAY_MS:-0} ms"
printf '%-52s %8.2f s\n' "GOPROXY=goprox, cold (zips built)" "$cold"
printf '%-52s %8.2f s   (again: %.2f s)\n' "GOPROXY=goprox, warm" "$warm" "$warm2"
printf '%-52s %8.2f s   (again: %.2f s)\n' "GOPROXY=static file server" "$static" "$static2"
printf '%-52s %8.2f s\n' "GOPROXY=direct via goprox's git route" "$via_git"
printf '%-52s %8.2f s\n' "GOPROXY=direct from upstream" "$upstream"
echo "warm / static:            $(ratio "$warm2" "$static2")  (goal <= 1.2)"
echo "cold / direct via goprox: $(ratio "$cold" "$via_git")  (goal <= 0.5)"
echo "cold / direct upstream:   $(ratio "$cold" "$upstream")  (goal <= 0.5)"
printf 'goprox peak RSS during the cold run: %d MiB (idle %d MiB)\n' "$((cold_hwm / 1024))" "$((idle_kib / 1024))"
printf '20 concurrent cold zips: %.2f s, peak RSS %d MiB, %d MiB above idle\n' \
  "$(echo "$t1 - $t0" | bc -l)" "$((mem_hwm / 1024))" "$(((mem_hwm - idle2) / 1024))"
echo "S3 requests, new instance: .info $((r1 - r0)), .mod $((r2 - r1))"
