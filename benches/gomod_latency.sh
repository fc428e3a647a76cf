#!/usr/bin/env bash
# `go mod download` of a small module through goprox, with every S3 request delayed (as a real
# S3's first-byte latency would be) and counted: on a new instance (bucket filled, caches
# empty), and again on the same instance with an empty module cache.
#
#   benches/gomod_latency.sh                  S3 requests delayed 20 ms
#   S3_DELAY_MS=0 benches/gomod_latency.sh    SeaweedFS on loopback
#
# Needs what benches/lib.sh needs, and go. Runs in about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v go >/dev/null || { echo "missing tool: go" >&2; exit 1; }
DELAY="${S3_DELAY_MS:-20}"

echo "==> a small module upstream (github.com/acme/small, tag v1.0.0)"
ROOT="$WORK/up"
mkdir -p "$ROOT/src"
git -C "$ROOT/src" init -q -b main
printf 'module github.com/acme/small\n\ngo 1.21\n' >"$ROOT/src/go.mod"
for i in $(seq 1 20); do
  printf 'package small\n\n// F%d returns %d.\nfunc F%d() int { return %d }\n' "$i" "$i" "$i" "$i" >"$ROOT/src/f$i.go"
done
git -C "$ROOT/src" add -A
git -C "$ROOT/src" -c user.name=b -c user.email=b@example.test commit -q -m "v1"
git -C "$ROOT/src" tag v1.0.0
mkdir -p "$ROOT/acme"
git clone -q --bare "$ROOT/src" "$ROOT/acme/small"

start_upstream "$ROOT" acme/small
start_seaweed
make_bucket bench
COUNT_FILE="$WORK/s3-count"
PROXY_PORT="$(free_port)"
python3 benches/s3_delay_proxy.py "$PROXY_PORT" "${S3#http://127.0.0.1:}" "$DELAY" "$COUNT_FILE" &
PIDS+=($!)
disown $!
sleep 0.5
s3reqs() { cut -d' ' -f1 "$COUNT_FILE"; }

echo "==> fill the bucket (goprox mirror)"
"$GOPROX" mirror --store s3://bench/goprox --s3-endpoint "$S3" --s3-path-style \
  --upstream "github.com/=http://127.0.0.1:$UP_PORT/" github.com/acme/small >"$WORK/mirror.log" 2>&1

echo "==> a new instance, every S3 request delayed ${DELAY} ms"
GOPROX_S3="http://127.0.0.1:$PROXY_PORT"
GP_PORT="$(free_port)"
"$GOPROX" serve --listen "127.0.0.1:$GP_PORT" --public-url "http://127.0.0.1:$GP_PORT" \
  --store s3://bench/goprox --s3-endpoint "$GOPROX_S3" --s3-path-style \
  --upstream "github.com/=http://127.0.0.1:$UP_PORT/" >"$WORK/goprox.log" 2>&1 </dev/null &
GP_PID=$!
PIDS+=("$GP_PID")
disown "$GP_PID"
wait_http "http://127.0.0.1:$GP_PORT/healthz" "goprox"

cat >"$WORK/gitconfig" <<CFG
[url "http://127.0.0.1:$GP_PORT/github.com/"]
	insteadOf = https://github.com/
CFG
download() { # module cache dir
  GIT_CONFIG_GLOBAL="$WORK/gitconfig" GOPROXY=direct GOSUMDB=off GOFLAGS=-modcacherw \
    GOMODCACHE="$1" GOPATH="$WORK/gopath" GOTOOLCHAIN=local GOTELEMETRY=off \
    go mod download -json github.com/acme/small@v1.0.0 >"$1.json"
  grep -q '"Sum": "h1:' "$1.json" || { cat "$1.json" >&2; exit 1; }
}
measure() { # label, module cache dir
  local r0 t0 t1 r1
  r0="$(s3reqs)"; t0="$(now)"
  download "$2"
  t1="$(now)"; r1="$(s3reqs)"
  printf '%-44s %7.3f s %5d S3 requests\n' "$1" "$(echo "$t1 - $t0" | bc -l)" "$((r1 - r0))"
}
echo
echo "S3 delay ${DELAY} ms; $(nproc) cores"
measure "go mod download, new instance" "$WORK/mod1"
measure "go mod download again, same instance" "$WORK/mod2"
measure "and once more" "$WORK/mod3"
echo "goprox answered $(grep -c "git-upload-pack" "$WORK/goprox.log" || true) upload-pack requests"
