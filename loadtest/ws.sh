#!/usr/bin/env bash
# WebSocket load on the fanout, on this machine.
#
#   loadtest/ws.sh hold       one fanout holding HOLD_CONNS (19,500) subscribed
#                             idle connections; memory per connection
#   loadtest/ws.sh fleet      three fanouts, FLEET_CONNS (50,000) connections
#                             across them, then a few predictions to all
#   loadtest/ws.sh deliver    one fanout, CLIENTS (10,000) clients on `all`,
#                             predictions at RATE per second for DURATION:
#                             deliveries per second and end-to-end latency
#   loadtest/ws.sh            all three, in that order
#
# Builds in release mode and starts the embedded broker (`fantasy broker`),
# the fanouts (auth off, Redis from scripts/setup.sh) and `wsload` client
# processes (target/release/wsload; see loadtest/src/main.rs). One process may
# hold at most 20,000 open files here, so clients are spread over processes
# and over several 127.0.0.x source addresses. Everything shares the
# machine's cores: load generator, publisher, broker and fanout.
# Results: target/loadtest/ws/*.json and the lines printed here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p fanout -p fantasy -p fantasy-loadtest

HOLD_CONNS=${HOLD_CONNS:-19500}
FLEET_CONNS=${FLEET_CONNS:-50000}
CLIENTS=${CLIENTS:-10000}
RATE=${RATE:-20}
BURST=${BURST:-5}
DURATION=${DURATION:-30}
CLIENT_THREADS=${CLIENT_THREADS:-1}
PORT=${PORT:-18081}
out=target/loadtest/ws
mkdir -p "$out"
state=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

export KAFKA_TOPIC_PREFIX=wsload.
RUST_LOG=warn target/release/fantasy broker --bootstrap-file "$state/bootstrap" >"$out/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$state/bootstrap" ] && break; sleep 0.1; done
export KAFKA_BROKERS
KAFKA_BROKERS=$(cat "$state/bootstrap")

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
gauge() { curl -fs "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

# start_fanout PORT: starts one fanout, waits until ready, prints its pid.
start_fanout() {
  KAFKA_CREATE_TOPICS=false REDIS_PREFIX="wsload:" AUTH_REQUIRED=false \
    HTTP_ADDR="127.0.0.1:$1" MAX_CONNECTIONS=19900 CONCURRENCY_LIMIT=100000 \
    RUST_LOG=warn LOG_FORMAT=json \
    target/release/fanout >"$out/fanout-$1.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$1/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$1/ready" >/dev/null || { echo "fanout on $1 did not become ready" >&2; exit 1; }
  FANOUT_PID=$pid
}

stop_all_fanouts() {
  for p in "${fanouts[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${fanouts[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  fanouts=()
}

# wait_ready FILE...: waits for every client process's ready file.
wait_ready() {
  for f in "$@"; do
    for _ in $(seq 1 1200); do [ -s "$f" ] && break; sleep 0.25; done
    [ -s "$f" ] || { echo "clients did not get ready ($f)" >&2; exit 1; }
  done
}

hold() {
  echo "== hold: one fanout, $HOLD_CONNS idle subscribed connections"
  fanouts=()
  start_fanout "$PORT"; fanouts+=("$FANOUT_PID")
  sleep 1
  local before; before=$(rss_kib "$FANOUT_PID")
  local half=$((HOLD_CONNS / 2))
  target/release/wsload clients --url "ws://127.0.0.1:$PORT/v1/stream" --connections "$half" \
    --source-ips 127.0.0.2-127.0.0.3 --hold 15s --ready-file "$state/hold-a" >"$out/hold-a.json" 2>"$out/hold-a.log" &
  local a=$!
  target/release/wsload clients --url "ws://127.0.0.1:$PORT/v1/stream" --connections "$((HOLD_CONNS - half))" \
    --source-ips 127.0.0.4-127.0.0.5 --hold 15s --ready-file "$state/hold-b" >"$out/hold-b.json" 2>"$out/hold-b.log" &
  local b=$!
  wait_ready "$state/hold-a" "$state/hold-b"
  sleep 3
  local after conns
  after=$(rss_kib "$FANOUT_PID")
  conns=$(gauge "$PORT" fanout_connections)
  wait "$a" "$b"
  python3 - "$before" "$after" "$conns" "$out" <<'PY'
import json, sys
before, after, conns, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
a, b = (json.load(open(f"{out}/hold-{x}.json")) for x in "ab")
res = {
    "connections_held": int(conns),
    "subscribed": a["subscribed"] + b["subscribed"],
    "failed": a["failed"] + b["failed"],
    "rss_before_kib": before,
    "rss_after_kib": after,
    "bytes_per_connection": round((after - before) * 1024 / max(conns, 1)),
}
print(json.dumps(res))
json.dump(res, open(f"{out}/hold.json", "w"))
PY
  stop_all_fanouts
}

fleet() {
  echo "== fleet: three fanouts, $FLEET_CONNS connections across them"
  fanouts=()
  local urls=""
  for i in 0 1 2; do
    start_fanout $((PORT + i)); fanouts+=("$FANOUT_PID")
    urls="$urls${urls:+,}ws://127.0.0.1:$((PORT + i))/v1/stream"
  done
  local per=$((FLEET_CONNS / 3)) hold=$((DURATION + 40))
  local fleet_clients=()
  for k in 0 1 2; do
    local n=$per
    [ $k -eq 2 ] && n=$((FLEET_CONNS - 2 * per))
    target/release/wsload clients --url "$urls" --connections "$n" \
      --source-ips "127.0.0.$((10 + 3 * k))-127.0.0.$((12 + 3 * k))" --hold "${hold}s" \
      --quiet-exit 3s --ready-file "$state/fleet-$k" >"$out/fleet-$k.json" 2>"$out/fleet-$k.log" &
    fleet_clients+=("$!")
  done
  wait_ready "$state/fleet-0" "$state/fleet-1" "$state/fleet-2"
  sleep 2
  local held=()
  for i in 0 1 2; do held+=("$(gauge $((PORT + i)) fanout_connections)"); done
  echo "held per fanout: ${held[*]}"
  target/release/wsload publish --rate 10 --burst 5 --duration 2s --games 20 >"$out/fleet-publish.json"
  wait "${fleet_clients[@]}"
  python3 - "$out" "${held[@]}" <<'PY'
import json, sys
out, held = sys.argv[1], [int(float(x)) for x in sys.argv[2:]]
parts = [json.load(open(f"{out}/fleet-{k}.json")) for k in range(3)]
res = {
    "connections_held": sum(held),
    "per_fanout": held,
    "subscribed": sum(p["subscribed"] for p in parts),
    "failed": sum(p["failed"] for p in parts),
    "published": json.load(open(f"{out}/fleet-publish.json"))["published"],
    "predictions_received": sum(p["predictions"] for p in parts),
    "latency_p99_ms_worst_process": max(p["latency_ms"]["p99"] for p in parts),
}
print(json.dumps(res))
json.dump(res, open(f"{out}/fleet.json", "w"))
PY
  stop_all_fanouts
}

deliver() {
  echo "== deliver: one fanout, $CLIENTS clients on all, $RATE predictions/s for ${DURATION}s"
  fanouts=()
  start_fanout "$PORT"; fanouts+=("$FANOUT_PID")
  sleep 1
  local rss0 rss1 rss2; rss0=$(rss_kib "$FANOUT_PID")
  target/release/wsload --threads "$CLIENT_THREADS" clients --url "ws://127.0.0.1:$PORT/v1/stream" --connections "$CLIENTS" \
    --source-ips 127.0.0.20-127.0.0.21 --hold $((DURATION + 60))s --quiet-exit 3s \
    --ready-file "$state/deliver" >"$out/deliver-clients.json" 2>"$out/deliver.log" &
  local c=$!
  wait_ready "$state/deliver"
  sleep 2
  rss1=$(rss_kib "$FANOUT_PID")
  target/release/wsload publish --rate "$RATE" --burst "$BURST" --duration "${DURATION}s" >"$out/deliver-publish.json"
  wait "$c"
  rss2=$(rss_kib "$FANOUT_PID")
  python3 - "$out" "$rss0" "$rss1" "$rss2" <<'PY'
import json, sys
out, rss0, rss1, rss2 = sys.argv[1], *map(int, sys.argv[2:])
c = json.load(open(f"{out}/deliver-clients.json"))
p = json.load(open(f"{out}/deliver-publish.json"))
res = {
    "clients": c["subscribed"],
    "published": p["published"],
    "expected_deliveries": p["published"] * c["subscribed"],
    "delivered": c["predictions"],
    "deliveries_per_second": round(c["deliveries_per_second"]),
    "latency_ms": c["latency_ms"],
    "closes": c["closes"],
    "rss_kib": {"before": rss0, "subscribed": rss1, "after_traffic": rss2},
    "bytes_per_connection": {
        "subscribed": round((rss1 - rss0) * 1024 / max(c["subscribed"], 1)),
        "after_traffic": round((rss2 - rss0) * 1024 / max(c["subscribed"], 1)),
    },
}
print(json.dumps(res))
json.dump(res, open(f"{out}/deliver.json", "w"))
PY
  curl -fs "http://127.0.0.1:$PORT/metrics" | grep -E '^fanout_(e2e_latency_seconds|slow_closes_total|messages_(in|out)_total)' || true
  stop_all_fanouts
}

case "${1:-all}" in
  hold) hold ;;
  fleet) fleet ;;
  deliver) deliver ;;
  all) hold; fleet; deliver ;;
  *) echo "usage: loadtest/ws.sh [hold|fleet|deliver|all]" >&2; exit 2 ;;
esac
