#!/usr/bin/env bash
# The whole pipeline under load, on this machine: games -> predictions ->
# WebSocket deliveries per second, and the end-to-end latency from the game
# event's production (the collector) to the frame's arrival at a client.
#
#   loadtest/pipeline.sh
#
# 1. `fantasy up` in release (embedded broker, the four services) on a
#    fresh database, with a small simulated season as history, until the
#    trainer's first model serves.
# 2. `wsload clients`: CLIENTS WebSocket clients subscribed to `all`,
#    sampling every frame's latency from the prediction's
#    `event_produced_at`.
# 3. A flood: a second collector process (its own binary, same broker) plays
#    a TEAMS-team league of GAMES games per team, at once (full speed:
#    sustained throughput) and then paced at PACED_RATE games per second
#    (latency under a load the stack keeps up with).
#
# Everything shares the machine's cores (collector, predictor, fanout,
# trainer, Postgres, Redis, broker, clients). Results: target/loadtest/pipeline/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p fantasy -p collector -p fantasy-loadtest

PORT=${PORT:-18180}
CLIENTS=${CLIENTS:-50}
TEAMS=${TEAMS:-100}
GAMES=${GAMES:-200}
PACED_RATE=${PACED_RATE:-500}
DB=${PIPELINE_DB:-fantasy_pipeline}
out=target/loadtest/pipeline
mkdir -p "$out"
state=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export REDIS_PREFIX="pipeline:$$:"
export AUTH_REQUIRED=false RUST_LOG=warn LOG_FORMAT=json
export RETRAIN_EVERY_OUTCOMES=0 RETRAIN_COOLDOWN=1h
games_total=$(( TEAMS * GAMES / 2 ))

echo "== fantasy up (history: one 30-team season)"
COLLECTOR_SOURCES="sim:nba?games=82&minutes=0" \
  target/release/fantasy up --port "$PORT" --data-dir "$state" >"$out/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null || { echo "the stack did not come up"; cat "$out/up.log"; exit 1; }
KAFKA_BROKERS=$(sed -n 's/.*embedded broker at \([^ ]*\) .*/\1/p' "$out/up.log" | head -n 1)
# The history season's predictions first (1,230 games), so the phases
# below count only their own.
for _ in $(seq 1 600); do
  n=$(psql -tA -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT count(*) FROM predictions")
  [ "$n" -ge 1230 ] && break
  sleep 0.2
done
echo "   up; broker $KAFKA_BROKERS; model $(curl -s "http://127.0.0.1:$PORT/v1/models/active" | sed -n 's/.*"version":"\([^"]*\)".*/\1/p')"

run_phase() {
  local name=$1 minutes=$2 seed=$3
  echo "== $name: $games_total games ($TEAMS teams x $GAMES), $CLIENTS clients"
  target/release/wsload --threads 1 clients --url "ws://127.0.0.1:$((PORT + 1))/v1/stream" \
    --connections "$CLIENTS" --channels all --sample-every 1 --latency-from event_produced_at \
    --expect $(( games_total * CLIENTS )) --quiet-exit 15s --hold 0s --report-every 10 \
    --ready-file "$state/ready-$name" >"$out/$name-clients.json" 2>"$out/$name-clients.log" &
  local wsload=$!
  pids+=("$wsload")
  for _ in $(seq 1 300); do [ -s "$state/ready-$name" ] && break; sleep 0.1; done
  local started
  started=$(date +%s.%N)
  KAFKA_BROKERS=$KAFKA_BROKERS HTTP_ADDR="127.0.0.1:$((PORT + 10))" \
    COLLECTOR_SOURCES="sim:$name?seed=$seed&teams=$TEAMS&games=$GAMES&minutes=$minutes&batch=1000" \
    target/release/collector >"$out/$name-collector.log" 2>&1 &
  local collector=$!
  pids+=("$collector")
  until curl -s "http://127.0.0.1:$((PORT + 10))/v1/sources" 2>/dev/null | grep -q '"state":"done"'; do sleep 0.2; done
  local produced
  produced=$(date +%s.%N)
  wait "$wsload" || true
  kill -TERM "$collector" 2>/dev/null || true
  wait "$collector" 2>/dev/null || true
  python3 - "$out/$name-clients.json" "$started" "$produced" "$games_total" "$CLIENTS" "$name" <<'PY'
import json, sys
path, started, produced, games, clients, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
r = json.load(open(path))
window = r["window_seconds"] or float("nan")
per_client = r["predictions"] / clients
print(f"   collector produced {games} games in {produced - started:.1f} s ({games / (produced - started):.0f} games/s)")
print(f"   clients received {r['predictions']} frames ({per_client:.0f} per client of {games}) over {window:.1f} s:")
print(f"   {per_client / window:.0f} predictions/s, {r['deliveries_per_second']:.0f} deliveries/s")
lat = r["latency_ms"]
print(f"   latency game event -> frame: p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms ({lat['samples']} samples)")
PY
}

run_phase full 0 11
minutes=$(python3 -c "print(round($games_total / $PACED_RATE / 60, 4))")
run_phase paced "$minutes" 12
