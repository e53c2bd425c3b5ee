#!/usr/bin/env bash
# The soak: the four services as processes on `fantasy broker`, a paced
# simulated league for SOAK_MINUTES (30), WebSocket clients on `all`, and a
# steady trickle of REST predictions; every 30 s, each service's RSS, open
# file descriptors, threads and the p99s. Passes when memory and
# descriptors stay flat after the warm-up and no game is lost.
#
#   loadtest/soak.sh                       # release binaries, 30 minutes
#   PROFILE=debug SOAK_MINUTES=5 loadtest/soak.sh
#
# Results: target/loadtest/soak/ (samples.csv, summary.json, soak.svg).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
PROFILE=${PROFILE:-release}
MINUTES=${SOAK_MINUTES:-30}
CLIENTS=${CLIENTS:-50}
if [ "$PROFILE" = release ]; then
  cargo build --release --bins -p fantasy -p predictor -p fanout -p collector -p trainer -p fantasy-loadtest
else
  cargo build --bins -p fantasy -p predictor -p fanout -p collector -p trainer -p fantasy-loadtest
fi
bin=target/$PROFILE
out=target/loadtest/soak
rm -rf "$out"
mkdir -p "$out"
state=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS fantasy_soak" >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS fantasy_soak" >/dev/null
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE fantasy_soak" >/dev/null
"$bin/fantasy" broker --partitions 4 --bootstrap-file "$state/bootstrap" >"$out/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$state/bootstrap" ] && break; sleep 0.1; done

# A league of 60 teams, 120 games each (3,600 games): 20 rounds of history,
# the other 100 rounds paced over the soak (about 2 games a second).
KAFKA_BROKERS=$(cat "$state/bootstrap")
export KAFKA_BROKERS KAFKA_CREATE_TOPICS=false
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/fantasy_soak
export REDIS_PREFIX="soak:$$:" AUTH_REQUIRED=false RUST_LOG=warn LOG_FORMAT=json
export MODEL_STORE_URL="file://$state/models" TRAIN_MIN_GAMES=200
export COLLECTOR_SOURCES="sim:nba?seed=5&teams=60&games=120&history=20&minutes=$MINUTES&batch=50"
declare -A port=([fanout]=18381 [trainer]=18382 [predictor]=18383 [collector]=18384)
services=(fanout trainer predictor collector)
for s in "${services[@]}"; do
  HTTP_ADDR="127.0.0.1:${port[$s]}" "$bin/$s" >"$out/$s.log" 2>&1 &
  pids+=($!)
  echo "$s $! ${port[$s]}" >>"$state/services"
  if [ "$s" = trainer ]; then sleep 2; fi
done
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:${port[predictor]}/ready" >/dev/null 2>&1 && break
  sleep 0.5
done
"$bin/wsload" --threads 1 clients --url "ws://127.0.0.1:${port[fanout]}/v1/stream" \
  --connections "$CLIENTS" --hold "$(( MINUTES * 60 + 90 ))s" --latency-from event_produced_at \
  --report-every 30 \
  >"$out/wsload.log" 2>&1 &
pids+=($!)

python3 loadtest/soak.py --services "$state/services" --minutes "$MINUTES" \
  --database "$DATABASE_URL" --out "$out" --games 3600
