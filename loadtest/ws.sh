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
#   loadtest/ws.sh compare    the same deliver runs against our fanout and a
#                             Node.js `ws` broadcast server (loadtest/peers/),
#                             alternately, RUNS (3) times at each of
#                             COMPARE_RATES (4,20): medians side by side
#   loadtest/ws.sh            hold, fleet and deliver, in that order
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

# start_peer PORT: starts the Node.js `ws` broadcast peer
# (loadtest/peers/ws-broadcast.js), waits until it answers, sets PEER_PID.
start_peer() {
  NODE_PATH=/usr/share/nodejs node loadtest/peers/ws-broadcast.js "127.0.0.1:$1" >"$out/peer-$1.log" 2>&1 &
  PEER_PID=$!
  pids+=("$PEER_PID")
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$1/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the peer on $1 did not start" >&2
  exit 1
}

# deliver_run SERVER TAG: one run of CLIENTS clients on `all` and predictions
# at RATE for DURATION against SERVER (`ours`: the fanout, fed through
# Kafka; `node`: the peer, fed directly); the summary goes to
# $out/deliver-TAG.json and is printed.
deliver_run() {
  local server=$1 tag=$2 port pid publish_to
  if [ "$server" = ours ]; then
    port=$PORT
    fanouts=()
    start_fanout "$port"; fanouts+=("$FANOUT_PID")
    pid=$FANOUT_PID
    publish_to=()
  else
    port=$((PORT + 10))
    start_peer "$port"
    pid=$PEER_PID
    publish_to=(--peer "ws://127.0.0.1:$port/publish")
  fi
  sleep 1
  local rss0 rss1 rss2 rss3; rss0=$(rss_kib "$pid")
  target/release/wsload --threads "$CLIENT_THREADS" clients --url "ws://127.0.0.1:$port/v1/stream" --connections "$CLIENTS" \
    --source-ips 127.0.0.20-127.0.0.21 --hold $((DURATION + 60))s --quiet-exit 8s \
    --ready-file "$state/deliver-$tag" >"$out/deliver-$tag-clients.json" 2>"$out/deliver-$tag.log" &
  local c=$!
  wait_ready "$state/deliver-$tag"
  sleep 2
  rss1=$(rss_kib "$pid")
  target/release/wsload publish "${publish_to[@]}" --rate "$RATE" --burst "$BURST" --duration "${DURATION}s" \
    >"$out/deliver-$tag-publish.json"
  # Memory after traffic: the last burst written, every client still
  # connected (they leave 8 s after their last frame).
  sleep 3
  rss2=$(rss_kib "$pid")
  wait "$c"
  # And once they have gone: what the process keeps of its peak.
  sleep 2
  rss3=$(rss_kib "$pid")
  : >"$out/deliver-$tag-metrics.txt"
  if [ "$server" = ours ]; then
    curl -fs "http://127.0.0.1:$port/metrics" >"$out/deliver-$tag-metrics.txt" || true
  fi
  python3 - "$out" "$tag" "$server" "$RATE" "$DURATION" "$BURST" "$rss0" "$rss1" "$rss2" "$rss3" <<'PY'
import json, re, sys
out, tag, server, rate, duration, burst = sys.argv[1:7]
rss0, rss1, rss2, rss3 = map(int, sys.argv[7:11])
# Where our time goes, from the fanout's own histograms: the mean of each
# stage (kafka: predicted_at to the hub; fanout: the hub to the socket).
stages = {}
text = open(f"{out}/deliver-{tag}-metrics.txt").read()
for stage in ("kafka", "fanout"):
    sums = re.search(r'^fanout_stage_seconds_sum\{stage="%s"\} (\S+)' % stage, text, re.M)
    counts = re.search(r'^fanout_stage_seconds_count\{stage="%s"\} (\S+)' % stage, text, re.M)
    if sums and counts and float(counts.group(1)) > 0:
        stages[stage] = round(float(sums.group(1)) / float(counts.group(1)) * 1000, 1)
c = json.load(open(f"{out}/deliver-{tag}-clients.json"))
p = json.load(open(f"{out}/deliver-{tag}-publish.json"))
res = {
    "server": server,
    "offered_rate": float(rate),
    "clients": c["subscribed"],
    "published": p["published"],
    # The publisher sends a burst at 0 s and every BURST/RATE s while under
    # DURATION: floor(DURATION * RATE / BURST) + 1 bursts.
    "published_share": round(p["published"] / ((int(float(rate) * float(duration) / int(burst)) + 1) * int(burst)), 3),
    "expected_deliveries": p["published"] * c["subscribed"],
    "delivered": c["predictions"],
    "deliveries_per_second": round(c["deliveries_per_second"]),
    "latency_ms": c["latency_ms"],
    "closes": c["closes"],
    "open_at_end": c["open_at_end"],
    "stage_mean_ms": stages,
    "rss_kib": {"before": rss0, "subscribed": rss1, "after_traffic": rss2, "after_close": rss3},
    "bytes_per_connection": {
        "subscribed": round((rss1 - rss0) * 1024 / max(c["subscribed"], 1)),
        "after_traffic": round((rss2 - rss0) * 1024 / max(c["subscribed"], 1)),
        # Resident once every client has left, per client it had.
        "after_close": round((rss3 - rss0) * 1024 / max(c["subscribed"], 1)),
    },
}
print(json.dumps(res))
json.dump(res, open(f"{out}/deliver-{tag}.json", "w"))
PY
  if [ "$server" = ours ]; then
    grep -E '^fanout_(slow_closes_total|messages_(in|out)_total)' "$out/deliver-$tag-metrics.txt" || true
    stop_all_fanouts
  else
    kill "$PEER_PID"; wait "$PEER_PID" 2>/dev/null || true
  fi
}

deliver() {
  echo "== deliver: one fanout, $CLIENTS clients on all, $RATE predictions/s for ${DURATION}s"
  deliver_run ours ours
  cp "$out/deliver-ours.json" "$out/deliver.json"
}

# compare: our fanout and the Node.js `ws` peer, alternately, RUNS times at
# each of COMPARE_RATES, the same clients and publisher schedule; medians
# side by side. Ours includes the Kafka hop (publisher -> broker -> fanout);
# the peer's does not (publisher -> peer): nothing is subtracted.
compare() {
  if ! NODE_PATH=/usr/share/nodejs node -e "require('ws')" 2>/dev/null; then
    echo "compare needs Node.js and Debian's node-ws: apt-get install nodejs node-ws" >&2
    exit 1
  fi
  local runs=${RUNS:-3} rates=${COMPARE_RATES:-4,20} rate run server
  IFS=, read -r -a rate_list <<<"$rates"
  for rate in "${rate_list[@]}"; do
    for run in $(seq 1 "$runs"); do
      for server in ours node; do
        echo "== compare: $server, $CLIENTS clients, $rate predictions/s, run $run of $runs"
        RATE=$rate deliver_run "$server" "compare-$server-$rate-$run"
      done
    done
  done
  python3 - "$out" "$runs" "${rate_list[@]}" <<'PY'
import json, statistics, sys
out, runs, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
med = statistics.median
rows, table = [], []
for rate in rates:
    for server in ("ours", "node"):
        rs = [json.load(open(f"{out}/deliver-compare-{server}-{rate}-{i}.json")) for i in range(1, runs + 1)]
        row = {
            "server": server,
            "rate": float(rate),
            "runs": runs,
            "p50_ms": med(r["latency_ms"]["p50"] for r in rs),
            "p99_ms": med(r["latency_ms"]["p99"] for r in rs),
            "deliveries_per_second": med(r["deliveries_per_second"] for r in rs),
            "published_share": med(r["published_share"] for r in rs),
            "delivered_share": med(r["delivered"] / max(r["expected_deliveries"], 1) for r in rs),
            "bytes_per_connection_subscribed": med(r["bytes_per_connection"]["subscribed"] for r in rs),
            "bytes_per_connection_after_traffic": med(r["bytes_per_connection"]["after_traffic"] for r in rs),
            "bytes_per_connection_after_close": med(r["bytes_per_connection"]["after_close"] for r in rs),
            "open_at_end": min(r["open_at_end"] for r in rs),
            "stage_mean_ms": {k: med(r["stage_mean_ms"][k] for r in rs) for k in rs[0].get("stage_mean_ms", {})},
        }
        rows.append(row)
        table.append(
            f"| {rate}/s | {server} | {row['p50_ms']:.0f} / {row['p99_ms']:.0f} ms | "
            f"{row['deliveries_per_second']:,.0f} | {row['published_share']:.0%} | "
            f"{row['delivered_share']:.1%} | {row['bytes_per_connection_subscribed'] / 1024:.1f} / "
            f"{row['bytes_per_connection_after_traffic'] / 1024:.1f} / "
            f"{row['bytes_per_connection_after_close'] / 1024:.1f} KiB |"
        )
print("| rate | server | p50 / p99 | deliveries/s | published | delivered | per connection: subscribed / after traffic / after close |")
print("| --- | --- | --- | --- | --- | --- | --- |")
print("\n".join(table))
for row in rows:
    if row["stage_mean_ms"]:
        print(f"{row['rate']:g}/s {row['server']}: mean ms per stage {row['stage_mean_ms']}")
json.dump(rows, open(f"{out}/compare.json", "w"), indent=1)
PY
}

case "${1:-all}" in
  hold) hold ;;
  fleet) fleet ;;
  deliver) deliver ;;
  compare) compare ;;
  all) hold; fleet; deliver ;;
  *) echo "usage: loadtest/ws.sh [hold|fleet|deliver|compare|all]" >&2; exit 2 ;;
esac
