#!/usr/bin/env bash
# Smoke tests of the offline images (compose/offline/build.sh builds them):
# each is started the way compose/stack.yml starts the image it stands in
# for, and checked. Every container, volume and network it makes is removed
# on exit; it needs nothing but the images (no registry, no network).
#
#   compose/offline/check.sh                  # all
#   compose/offline/check.sh redis haproxy    # some: bases postgres redis
#                                             # haproxy prometheus s3
#
# Environment: PREFIX, TAG (fantasy-base, bookworm), IMAGE_PREFIX
# (fantasy-offline), as for build.sh.
#
# SC2016: the single-quoted commands are for the containers' shells.
# SC2317: the small check functions are called through check().
# shellcheck disable=SC2016,SC2317
set -euo pipefail

PREFIX=${PREFIX:-fantasy-base}
TAG=${TAG:-bookworm}
IMAGE_PREFIX=${IMAGE_PREFIX:-fantasy-offline}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
PY=$PREFIX/python:$TAG

run_id=offline-check-$$
net=$run_id
tmp=$(mktemp -d)
failures=0

cleanup() {
  local -a ids
  mapfile -t ids < <(docker ps -aq --filter "label=$run_id")
  ((${#ids[@]} == 0)) || docker rm -f "${ids[@]}" >/dev/null
  mapfile -t ids < <(docker volume ls -q --filter "label=$run_id")
  ((${#ids[@]} == 0)) || docker volume rm "${ids[@]}" >/dev/null
  docker network rm "$net" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
# check DESCRIPTION COMMAND...: ok when COMMAND succeeds.
check() {
  local what=$1
  shift
  if "$@" >"$tmp/out" 2>&1; then ok "$what"; else bad "$what"; sed 's/^/        /' "$tmp/out" | tail -5; fi
}
# refuse DESCRIPTION COMMAND...: ok when COMMAND fails.
refuse() {
  local what=$1
  shift
  if "$@" >"$tmp/out" 2>&1; then bad "$what (it succeeded)"; else ok "$what"; fi
}
# start NAME [docker run options and arguments...]: a labelled container on
# the test network, detached.
start() {
  local name=$1
  shift
  docker run -d --name "$run_id-$name" --label "$run_id" --network "$net" "$@" >/dev/null
}
# client [docker run options and arguments...]: a throw-away container on
# the test network.
client() { docker run --rm --label "$run_id" --network "$net" "$@"; }
volume() { docker volume create --label "$run_id" "$run_id-$1" >/dev/null; echo "$run_id-$1"; }
# wait_for SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}
pid1() { docker exec "$run_id-$1" sh -c 'grep -E "^(Name|Uid)" /proc/1/status | tr -s "\t\n" "  "'; }
stopped_cleanly() {
  docker stop "$run_id-$1" >/dev/null
  [[ $(docker inspect -f '{{.State.ExitCode}}' "$run_id-$1") == 0 ]]
}

check_bases() {
  say "bases: $PREFIX/{debian,runtime,python}:$TAG"
  check "debian: apt-get is there, sources name bookworm" \
    docker run --rm "$PREFIX/debian:$TAG" sh -c 'command -v apt-get && grep -rq bookworm /etc/apt/sources.list*'
  check "runtime: user nonroot (65532:65532), HOME /home/nonroot owned by it" \
    docker run --rm --entrypoint /bin/sh "$PREFIX/runtime:$TAG" -c \
    '[ "$(id -u):$(id -g)" = 65532:65532 ] && [ "$(stat -c %u:%g /home/nonroot)" = 65532:65532 ] && [ "$PWD" = /home/nonroot ] && touch /home/nonroot/x'
  check "runtime: CA bundle, time zones, libstdc++, libgcc_s; no apt, dpkg or perl" \
    docker run --rm --entrypoint /bin/sh "$PREFIX/runtime:$TAG" -c \
    'test -s /etc/ssl/certs/ca-certificates.crt && test -e /usr/share/zoneinfo/Europe/Paris && ls /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1 && ! command -v apt-get && ! command -v dpkg && ! command -v perl'
  check "python: python and pip on PATH, pip may install" \
    docker run --rm "$PY" sh -c 'python --version && pip --version && ! ls /usr/lib/python3*/EXTERNALLY-MANAGED'
}

check_postgres() {
  local img=$IMAGE_PREFIX/postgres:latest data
  say "postgres ($img)"
  printf 'pg-check-%s\n' "$$" >"$tmp/postgres_password"
  mkdir -p "$tmp/initdb"
  echo 'CREATE TABLE offline_check (x int); INSERT INTO offline_check VALUES (42);' >"$tmp/initdb/01.sql"
  data=$(volume pgdata)
  # As compose/stack.yml: POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE.
  start postgres --network-alias postgres \
    -e POSTGRES_USER=fantasy -e POSTGRES_DB=fantasy \
    -e POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password \
    -v "$tmp/postgres_password:/run/secrets/postgres_password:ro" \
    -v "$tmp/initdb:/docker-entrypoint-initdb.d:ro" \
    -v "$data:/var/lib/postgresql/data" "$img"
  check "the stack's health check (pg_isready -U fantasy -d fantasy) passes" \
    wait_for 60 docker exec "$run_id-postgres" pg_isready -U fantasy -d fantasy
  wait_for 30 client -e PGPASSWORD="$(cat "$tmp/postgres_password")" "$img" \
    psql -h postgres -U fantasy -d fantasy -c 'select 1' || true
  check "psql over TCP with the password from the file; initdb.d ran" \
    client -e PGPASSWORD="$(cat "$tmp/postgres_password")" "$img" \
    psql -h postgres -U fantasy -d fantasy -tA -c 'select x from offline_check' \
    --set ON_ERROR_STOP=1
  refuse "a wrong password is refused" \
    client -e PGPASSWORD=wrong "$img" psql -h postgres -U fantasy -d fantasy -c 'select 1'
  refuse "no password over TCP, even from inside the container" \
    docker exec "$run_id-postgres" psql -h 127.0.0.1 -U fantasy -d fantasy -w -c 'select 1'
  check "host connections use scram-sha-256" \
    docker exec "$run_id-postgres" sh -c \
    "psql -U fantasy -d fantasy -tA -c \"select distinct auth_method from pg_hba_file_rules where type = 'host'\" | grep -qx scram-sha-256"
  check "a query with JIT forced on still runs (JIT is left out)" \
    docker exec "$run_id-postgres" psql -U fantasy -d fantasy -v ON_ERROR_STOP=1 \
    -c 'set jit = on' -c 'set jit_above_cost = 0' -c 'select sum(g) from generate_series(1, 1000) g'
  check "PID 1 is postgres, as user postgres: $(pid1 postgres)" \
    docker exec "$run_id-postgres" sh -c 'grep -q "^Name:.*postgres" /proc/1/status && test "$(stat -c %U /proc/1)" = postgres'
  check "docker stop (SIGINT) shuts it down cleanly (exit 0)" stopped_cleanly postgres
  docker start "$run_id-postgres" >/dev/null
  check "it starts again on the same data (no second initdb)" \
    wait_for 60 docker exec "$run_id-postgres" pg_isready -U fantasy -d fantasy
}

check_redis() {
  local img=$IMAGE_PREFIX/redis:latest data
  say "redis ($img)"
  printf 'redis-check-%s\n' "$$" >"$tmp/redis_password"
  data=$(volume redisdata)
  # compose/stack.yml's command, as the shell runs it ($$ -> $).
  start redis --network-alias redis \
    -v "$tmp/redis_password:/run/secrets/redis_password:ro" -v "$data:/data" "$img" \
    sh -c 'exec docker-entrypoint.sh redis-server - --appendonly yes --dir /data <<EOF
requirepass $(cat /run/secrets/redis_password)
EOF'
  check "the stack's health check (REDISCLI_AUTH=... redis-cli ping | grep PONG) passes" \
    wait_for 30 docker exec "$run_id-redis" sh -c \
    'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli ping | grep -q PONG'
  check "PID 1 is redis-server as user redis, not root: $(pid1 redis)" \
    docker exec "$run_id-redis" sh -c 'grep -q "^Name:.*redis-server" /proc/1/status && test "$(stat -c %U /proc/1)" = redis'
  noauth() { client "$img" redis-cli -h redis set k v 2>&1 | grep -q NOAUTH; }
  check "commands without the password are refused (NOAUTH)" noauth
  with_password() {
    client -e REDISCLI_AUTH="$(cat "$tmp/redis_password")" "$img" sh -c \
      'redis-cli -h redis set k v && redis-cli -h redis get k | grep -qx v && redis-cli -h redis config get appendonly | grep -qx yes' &&
      docker exec "$run_id-redis" sh -c 'test "$(stat -c %U /data/appendonlydir)" = redis'
  }
  check "with the password from another container: SET/GET, appendonly on, /data owned by redis" with_password
  check "docker stop (SIGTERM) saves and exits 0" stopped_cleanly redis
}

check_haproxy() {
  local img=$IMAGE_PREFIX/haproxy:latest svc port
  say "haproxy ($img)"
  check "haproxy -c -f /usr/local/etc/haproxy/haproxy.cfg" \
    docker run --rm "$img" haproxy -c -f /usr/local/etc/haproxy/haproxy.cfg
  check "the repository's copy validates too" \
    docker run --rm -v "$here/haproxy/haproxy.cfg:/c.cfg:ro" "$img" haproxy -c -f /c.cfg
  # Fake services (their name and the path on every answer; WebSocket echo),
  # under the Compose service names, two fanout replicas.
  cat >"$tmp/fake.py" <<'EOF'
import asyncio, base64, hashlib, os
NAME, PORT = os.environ["NAME"], int(os.environ["PORT"])
async def handle(r, w):
    try:
        while True:
            lines = (await r.readuntil(b"\r\n\r\n")).decode().split("\r\n")
            method, path, _ = lines[0].split(" ")
            h = {k.lower(): v for k, v in (l.split(": ", 1) for l in lines[1:] if l)}
            if int(h.get("content-length", 0)):
                await r.readexactly(int(h["content-length"]))
            if h.get("upgrade", "").lower() == "websocket":
                key = h["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
                accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
                w.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n".encode())
                while data := await r.read(1024):
                    w.write(data)
                    await w.drain()
                return
            body = f"{NAME} {path} xff={h.get('x-forwarded-for')}\n".encode()
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()
async def main():
    async with await asyncio.start_server(handle, "0.0.0.0", PORT) as srv:
        await srv.serve_forever()
asyncio.run(main())
EOF
  for svc in predictor:8080:1 fanout:8081:1 fanout:8081:2 collector:8082:1 trainer:8083:1; do
    IFS=: read -r name port n <<<"$svc"
    start "$name-$n" --network-alias "$name" -e NAME="$name-$n" -e PORT="$port" \
      -v "$tmp/fake.py:/fake.py:ro" "$PY" python3 /fake.py
  done
  # The names Compose gives (the defaults, tasks.<service>, are the Swarm's).
  start gateway --network-alias gateway --read-only -e PREDICTOR_HOST=predictor -e FANOUT_HOST=fanout \
    -e COLLECTOR_HOST=collector -e TRAINER_HOST=trainer -e GRAFANA_HOST=grafana "$img"
  cat >"$tmp/client.py" <<'EOF'
import http.client, socket, sys, time
def get(path, method="GET", headers={}):
    c = http.client.HTTPConnection("gateway", 80, timeout=5)
    c.request(method, path, headers=headers, body=b"{}" if method == "POST" else None)
    r = c.getresponse()
    body = r.read().decode().strip()
    c.close()
    return r.status, body, r.getheader("Set-Cookie")
deadline = time.time() + 30
while time.time() < deadline:
    try:
        if all(get(p)[0] == 200 for p in ("/v1/predict", "/", "/v1/sources", "/v1/runs")): break
    except OSError: pass
    time.sleep(1)
routes = {"/v1/predict": "predictor", "/v1/predict/batch": "predictor", "/v1/predictions/g1": "predictor",
          "/v1/models/active": "predictor", "/v1/models": "trainer", "/v1/models/3/promote": "trainer",
          "/v1/runs": "trainer", "/v1/train": "trainer", "/v1/rollback": "trainer",
          "/v1/sources": "collector", "/": "fanout", "/v1/stream": "fanout", "/nope": None, "/v1/trainx": None}
bad = 0
for path, want in routes.items():
    status, body, _ = get(path, "GET", {"X-Forwarded-For": "6.6.6.6"})
    got = body.split()[0].split("-")[0] if status == 200 else None
    if got != want or (status == 200 and "6.6.6.6" in body) or (want is None and status != 404):
        print(f"route {path}: {status} {body!r}, want {want}"); bad += 1
print("routes ok" if not bad else "routes FAIL")
_, _, cookie = get("/")
cookie = cookie.split(";")[0]
sticky = {get("/", headers={"Cookie": cookie})[1].split()[0] for _ in range(10)}
spread = {get("/")[1].split()[0] for _ in range(10)}
print("sticky", "ok" if len(sticky) == 1 and len(spread) == 2 else "FAIL", cookie, sticky, spread)
s = socket.create_connection(("gateway", 80), timeout=5)
s.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = s.recv(4096).decode()
s.sendall(b"through-the-tunnel")
echo = s.recv(100)
s.close()
print("websocket", "ok" if " 101 " in head.split("\r\n")[0] and echo == b"through-the-tunnel" else "FAIL", head.split("\r\n")[0], echo)
for port, path in ((8405, "/metrics"), (8082, "/metrics"), (8405, "/ping"), (8405, "/stats")):
    c = http.client.HTTPConnection("gateway", port, timeout=5); c.request("GET", path); r = c.getresponse(); body = r.read().decode(); c.close()
    good = r.status == 200 and (path != "/metrics" or 'haproxy_backend_active_servers{proxy="fanout"} 2' in body)
    print(f":{port}{path}", "ok" if good else f"FAIL {r.status}")
EOF
  client -v "$tmp/client.py:/client.py:ro" "$PY" python3 /client.py >"$tmp/haproxy.out" 2>&1 || true
  while read -r line; do
    case $line in
      *FAIL* | *Traceback* | *Error*) bad "$line" ;;
      *ok*) ok "$line" ;;
      *) printf '        %s\n' "$line" ;;
    esac
  done <"$tmp/haproxy.out"
  check "runs as the haproxy user: $(pid1 gateway)" \
    docker exec "$run_id-gateway" sh -c 'test "$(stat -c %U /proc/1)" = haproxy'
  check "docker stop (SIGUSR1, soft stop) exits 0" stopped_cleanly gateway
}

check_prometheus() {
  local prom=$IMAGE_PREFIX/prometheus:latest am=$IMAGE_PREFIX/alertmanager:latest
  say "prometheus ($prom), alertmanager ($am)"
  # As compose/stack.yml: the repository's configurations mounted, the same
  # flags, a volume each.
  start alertmanager --network-alias alertmanager \
    -v "$root/compose/alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" \
    -v "$(volume amdata):/alertmanager" "$am" \
    --config.file=/etc/alertmanager/alertmanager.yml --storage.path=/alertmanager
  start prometheus --network-alias prometheus \
    -v "$root/compose/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" \
    -v "$root/compose/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" \
    -v "$(volume promdata):/prometheus" "$prom" \
    --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus \
    --storage.tsdb.retention.time=15d
  check "prometheus answers /-/ready" \
    wait_for 60 docker exec "$run_id-prometheus" wget -q -O /dev/null http://localhost:9090/-/ready
  check "alertmanager answers /-/ready" \
    wait_for 60 docker exec "$run_id-alertmanager" wget -q -O /dev/null http://localhost:9093/-/ready
  healthy() {
    docker exec "$run_id-prometheus" wget -q -O /dev/null http://localhost:9090/-/healthy &&
      docker exec "$run_id-alertmanager" wget -q -O /dev/null http://localhost:9093/-/healthy
  }
  check "the stack's health checks (wget .../-/healthy) pass" healthy
  check "prometheus loaded the alert rules and found alertmanager:9093" \
    wait_for 30 docker exec "$run_id-prometheus" sh -c \
    'wget -q -O - http://localhost:9090/api/v1/rules | grep -q ServiceDown && wget -q -O - http://localhost:9090/api/v1/alertmanagers | grep -q alertmanager:9093'
  check "the web UI's scripts are there (/graph, moment-timezone)" \
    docker exec "$run_id-prometheus" sh -c \
    'wget -q -O /dev/null http://localhost:9090/graph && wget -q -O /dev/null http://localhost:9090/classic/static/moment-timezone/moment-timezone-with-data.min.js'
  tools() {
    docker run --rm -v "$root/compose/prometheus/alerts.yml:/a.yml:ro" --entrypoint /bin/promtool "$prom" check rules /a.yml &&
      docker run --rm -v "$root/compose/alertmanager/alertmanager.yml:/a.yml:ro" --entrypoint /bin/amtool "$am" check-config /a.yml
  }
  check "/bin/promtool and /bin/amtool work on the repository's files" tools
  nobody() {
    docker exec "$run_id-prometheus" grep -Eq '^Uid:\s+65534\s' /proc/1/status &&
      docker exec "$run_id-alertmanager" grep -Eq '^Uid:\s+65534\s' /proc/1/status
  }
  check "both run as nobody (65534): $(pid1 prometheus); $(pid1 alertmanager)" nobody
  check "docker stop: prometheus exits 0" stopped_cleanly prometheus
  check "docker stop: alertmanager exits 0" stopped_cleanly alertmanager
}

check_s3() {
  local img=$IMAGE_PREFIX/s3:latest
  say "s3 ($img)"
  printf 'minio-user\n' >"$tmp/minio_user"
  printf 'minio-password-%s\n' "$$" >"$tmp/minio_password"
  # As compose/stack.yml's minio service: MinIO's command and health check
  # (and a read-only root file system, as the offline stack runs it).
  start minio --network-alias minio --read-only -v "$(volume s3data):/data" "$img" \
    server /data --console-address :9001
  check "the stack's health check (mc ready local) passes" \
    wait_for 60 docker exec "$run_id-minio" mc ready local
  check "the stack's minio-init entrypoint, unchanged, creates the models bucket" \
    client -v "$tmp/minio_user:/run/secrets/minio_user:ro" -v "$tmp/minio_password:/run/secrets/minio_password:ro" \
    --entrypoint sh "$img" -c \
    'until mc alias set store http://minio:9000 "$(cat /run/secrets/minio_user)" "$(cat /run/secrets/minio_password)" >/dev/null; do sleep 2; done && mc mb --ignore-existing store/models'
  make_bucket() {
    client "$img" make-bucket http://minio:9000 models | grep -q exists &&
      client "$img" make-bucket http://minio:9000 scratch | grep -q created
  }
  check "make-bucket: an existing bucket is fine, a new one is made" make_bucket
  check "signed (SigV4, as the services) PUT, GET, LIST of an object" \
    client "$img" python3 -c '
import boto3
s3 = boto3.client("s3", endpoint_url="http://minio:9000", region_name="us-east-1",
                  aws_access_key_id="minio-user", aws_secret_access_key="x")
s3.put_object(Bucket="models", Key="fantasy/check.onnx", Body=b"model-bytes")
assert s3.get_object(Bucket="models", Key="fantasy/check.onnx")["Body"].read() == b"model-bytes"
assert [o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"]] == ["fantasy/check.onnx"]
'
  check "a 40 MB object and a 30 MB multipart upload (kept in memory: read-only root)" \
    client "$img" python3 -c '
import io, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url="http://minio:9000", region_name="us-east-1",
                  aws_access_key_id="minio-user", aws_secret_access_key="x")
s3.put_object(Bucket="models", Key="big", Body=b"x" * 40_000_000)
assert len(s3.get_object(Bucket="models", Key="big")["Body"].read()) == 40_000_000
s3.upload_fileobj(io.BytesIO(b"y" * 30_000_000), "models", "multipart",
                  Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20))
assert len(s3.get_object(Bucket="models", Key="multipart")["Body"].read()) == 30_000_000
'
  check "runs as a non-root user: $(pid1 minio)" \
    docker exec "$run_id-minio" sh -c '[ "$(id -u)" != 0 ] && [ "$(stat -c %u /proc/1)" != 0 ]'
  check "docker stop (SIGTERM) exits 0" stopped_cleanly minio
}

all=(bases postgres redis haproxy prometheus s3)
selected=("$@")
((${#selected[@]})) || selected=("${all[@]}")
for name in "${selected[@]}"; do
  [[ " ${all[*]} " == *" $name "* ]] || { echo "check.sh: unknown check $name (${all[*]})" >&2; exit 2; }
done

docker network create --label "$run_id" "$net" >/dev/null
for name in "${selected[@]}"; do
  "check_$name"
done

echo
if ((failures)); then
  echo "check.sh: $failures check(s) failed"
  exit 1
fi
echo "check.sh: all checks passed"
