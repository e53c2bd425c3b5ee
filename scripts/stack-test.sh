#!/usr/bin/env bash
# The Swarm stack on this machine's Docker engine, deployed and broken on
# purpose, as its users run it (docs/deploy.md):
#
#   1. images: scripts/build-images.sh (release binaries built here, bases
#      from Debian's packages, the Dockerfile's own runtime stages);
#   2. `docker swarm init` (unless this engine is in a swarm already), node
#      labels, the secrets (compose/make-secrets.sh --swarm), then
#      `docker stack deploy` of compose/stack.yml with
#      compose/offline/stack.override.yml (what this machine cannot provide:
#      compose/offline/README.md);
#   3. the checks, each asserting, with its figures:
#      - every service converges to its replicas, healthy;
#      - a simulated league flows end to end: every game's prediction reaches
#        a WebSocket client through the gateway's published port and is
#        readable over REST, once each; the model a trainer replica trained
#        is served by every predictor replica through the S3 store;
#      - `docker service update --image` of the predictor under a steady REST
#        load: zero failed requests; the same for the fanout with WebSocket
#        clients, which recover with `since` and miss nothing;
#      - an update to a deliberately unhealthy image rolls back by itself,
#        and the old version serves throughout;
#      - a predictor, a collector and the broker container killed mid-stream:
#        Swarm replaces them, the services reconnect, and Postgres ends with
#        every game and prediction exactly once.
#
#   scripts/stack-test.sh                  everything (about 35 minutes)
#   SKIP_CARGO=1 scripts/stack-test.sh     reuse target/release
#   KEEP=1 scripts/stack-test.sh           leave the stack up on failure
#   COMPOSE_ONLY=1 scripts/stack-test.sh   the images and the Compose phase only
#
# It removes what it made (the stack, its volumes and secrets, the swarm if
# it made it) when it ends, pass or fail. Idempotent: a stack left by an
# interrupted run is removed first.
set -euo pipefail
cd "$(dirname "$0")/.."

STACK=fantasy
export GATEWAY_PORT=${GATEWAY_PORT:-18080}
GATEWAY=127.0.0.1:$GATEWAY_PORT
# Two leagues, one per collector replica: 10 teams, 100 rounds of 5 games;
# 60 rounds (300 games each) of history at once, enough for the trainer's
# TRAIN_MIN_GAMES (500), then 20 rounds live over a few minutes.
LIVE_MINUTES=${LIVE_MINUTES:-12}
export COLLECTOR_SOURCES="sim:nba?seed=5&teams=10&games=100&history=60&minutes=$LIVE_MINUTES,sim:nhl?seed=6&teams=10&games=100&history=60&minutes=$LIVE_MINUTES"
GAMES=1000
export PYTHONPATH="$PWD/.tools/stackcheck${PYTHONPATH:+:$PYTHONPATH}"
JWT=compose/secrets/jwt_secret

tmp=$(mktemp -d)
made_swarm=0
started=$(date +%s)

say() { printf '\033[1mstack-test:\033[0m %s\n' "$*" >&2; }
# One line per check, with its figures: what the run prints at the end.
results=()
passed() { results+=("PASS  $*"); say "PASS  $*"; }
fail() {
  results+=("FAIL  $*")
  say "FAIL  $*"
  exit 1
}
elapsed() { echo $(($(date +%s) - $1)); }

stack_containers() { docker ps -q --filter "label=com.docker.stack.namespace=$STACK" "$@"; }

remove_stack() {
  docker stack rm "$STACK" >/dev/null 2>&1 || true
  local _
  for _ in $(seq 1 90); do
    [ -z "$(stack_containers -a)" ] && break
    sleep 1
  done
  local kind
  for kind in volume network; do
    docker "$kind" ls -q --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker "$kind" rm >/dev/null 2>&1 || true
  done
  docker secret ls -q --filter "name=${STACK}_" 2>/dev/null | xargs -r docker secret rm >/dev/null 2>&1 || true
}

COMPOSE_PROJECT=fantasyc
compose() { docker-compose -p "$COMPOSE_PROJECT" -f "$tmp/compose.yml" "$@"; }
compose_down() {
  if [ -f "$tmp/compose.yml" ]; then
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
}

cleanup() {
  local status=$?
  jobs -p | xargs -r kill 2>/dev/null || true
  if [ "$status" -ne 0 ] && [ -n "${KEEP:-}" ]; then
    say "KEEP is set: the stack stays up ($tmp has the logs)"
    return
  fi
  if [ "$status" -ne 0 ]; then
    say "failed: the services' last log lines"
    for service in predictor fanout collector trainer broker gateway; do
      docker service logs --tail 15 --no-task-ids "${STACK}_$service" 2>&1 | sed "s/^/  $service| /" >&2 || true
    done
  fi
  remove_stack
  compose_down
  docker image rm fantasy/predictor:unhealthy fantasy/predictor:next fantasy/fanout:next >/dev/null 2>&1 || true
  if [ "$made_swarm" = 1 ]; then
    docker swarm leave --force >/dev/null 2>&1 || true
    # The swarm's bridge to the host stays behind otherwise.
    docker network rm docker_gwbridge >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  say "summary ($(elapsed "$started") s):"
  local line
  for line in "${results[@]}"; do printf '  %s\n' "$line" >&2; done
}
trap cleanup EXIT

# (Background jobs run python3 itself, not this function: `$!` is then the
# client's own PID, which `kill -TERM` stops after its requests in flight.)
stackcheck() { python3 scripts/stackcheck.py "$@"; }
# The Postgres container: the stack's, or once the Compose phase runs, its.
PG_FILTER="label=com.docker.swarm.service.name=${STACK}_postgres"
psql_stack() {
  docker exec "$(docker ps -q --filter "$PG_FILTER" | head -n 1)" psql -U fantasy -d fantasy -Atqc "$1"
}

# Polls `$2` (a command, run anew each time: pass a function, not a
# `$(...)` that the shell would expand once) every second until it
# succeeds or `$1` seconds pass.
wait_for() {
  local limit=$1 t0
  shift
  t0=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    [ "$(elapsed "$t0")" -lt "$limit" ] || return 1
    sleep 1
  done
}

# --- 0. tools and images ----------------------------------------------------------

python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
if ! python3 -c 'import websockets' 2>/dev/null; then
  say "installing websockets into .tools/stackcheck"
  python3 -m pip install --quiet --disable-pip-version-check --target .tools/stackcheck "websockets==15.0.1" \
    2>&1 | grep -v "^WARNING: Running pip as" >&2 || true
fi
command -v wrk >/dev/null || true

t0=$(date +%s)
bash scripts/build-images.sh 2>&1 | tee "$tmp/images.txt" >&2
sizes=$(awk -F'\t' '/^fantasy\/(predictor|fanout|collector|trainer|fantasy):latest/ {printf "%s %s, ", $1, $2}' "$tmp/images.txt")
passed "images built in $(elapsed "$t0") s: ${sizes%, }"

if [ -z "${COMPOSE_ONLY:-}" ]; then
# --- 1. the swarm, the secrets, the stack ------------------------------------------

remove_stack
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  say "docker swarm init"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  made_swarm=1
fi
node=$(docker node ls --format '{{.ID}}' --filter role=manager | head -n 1)
# One node plays every role of docs/deploy.md's three.
docker node update --label-add gpu=true --label-add data=true \
  --label-add monitoring=true --label-add kafka=1 "$node" >/dev/null
bash compose/make-secrets.sh --swarm >/dev/null

docker stack config -c compose/stack.yml >"$tmp/resolved.yml"
python3 compose/offline/merge.py "$tmp/resolved.yml" compose/offline/stack.override.yml >"$tmp/deploy.yml"
t0=$(date +%s)
docker stack deploy --resolve-image never -c "$tmp/deploy.yml" "$STACK" >/dev/null

# Every service at its replicas with every container healthy; jobs done.
converged() {
  local line name replicas
  # "2/2", or "2/2 (max 3 per node)": the first word.
  while read -r name replicas _; do
    case $name in
      *-init) docker service ps --format '{{.CurrentState}}' "$name" | grep -q '^Complete' || return 1 ;;
      *) [ "${replicas%%/*}" = "${replicas##*/}" ] || return 1 ;;
    esac
  done < <(docker service ls --filter "label=com.docker.stack.namespace=$STACK" --format '{{.Name}} {{.Replicas}}')
  while read -r line; do
    case $line in *"(healthy)"*|*-init.*) ;; *) return 1 ;; esac
  done < <(docker ps --filter "label=com.docker.stack.namespace=$STACK" --format '{{.Names}} {{.Status}}')
}
if ! wait_for 300 converged; then
  docker service ls --filter "label=com.docker.stack.namespace=$STACK" >&2
  docker ps --filter "label=com.docker.stack.namespace=$STACK" --format '{{.Names}} {{.Status}}' >&2
  fail "the stack did not converge within 300 s"
fi
services=$(docker service ls -q --filter "label=com.docker.stack.namespace=$STACK" | wc -l)
passed "converged: $services services at their replicas, every container healthy, in $(elapsed "$t0") s"

# --- 2. a league end to end ---------------------------------------------------------

# One WebSocket client through the gateway for the whole run: it sees the
# fanout's rolling update and the kills below, reconnecting with `since`.
# Its check at the end covers the games predicted after it subscribed (it
# subscribes within the 5 s margin).
ws_since=$(psql_stack "SELECT now() + interval '5 seconds'")
python3 scripts/stackcheck.py ws-collect --url "ws://$GATEWAY/v1/stream" --jwt-secret-file "$JWT" \
  --seconds 1500 --idle 90 --out "$tmp/ws-all.json" >"$tmp/ws-all.summary" 2>"$tmp/ws-all.err" &
ws_all=$!
sleep 5

t0=$(date +%s)
model_active() { [ "$(psql_stack "SELECT count(*) FROM models WHERE status = 'active'")" = 1 ]; }
wait_for 300 model_active ||
  fail "no model was trained within 300 s"
read -r version uri < <(psql_stack "SELECT version || ' ' || artifact_uri FROM models WHERE status = 'active'")
case $uri in s3://models/fantasy/*) ;; *) fail "the active model is at $uri, not in the S3 store" ;; esac
passed "model $version trained in $(elapsed "$t0") s after convergence, stored at $uri"

# Every predictor replica serves it (Prometheus scrapes each one).
prom() {
  docker exec "$(stack_containers --filter "label=com.docker.swarm.service.name=${STACK}_prometheus" | head -n 1)" \
    wget -qO- "http://localhost:9090/api/v1/query?query=$1"
}
serving() {
  prom 'inference_model_info%3D%3D1' | python3 -c '
import json, sys
want, n = sys.argv[1], int(sys.argv[2])
rows = json.load(sys.stdin)["data"]["result"]
versions = sorted(r["metric"]["version"] for r in rows if r["metric"].get("job") == "predictor")
sys.exit(0 if versions == [want] * n else 1)' "$version" "$1"
}
# A query's series, one per line: labels and value.
series_values() {
  python3 -c 'import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    m = {k: v for k, v in r["metric"].items() if k != "__name__"}
    print(m, r["value"][1])'
}
predictors=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_predictor")
wait_for 120 serving "$predictors" || fail "not every predictor serves $version: $(prom 'inference_model_info' || true)"
passed "all $predictors predictor replicas serve $version, fetched from S3 with its SHA-256 checked"

# --- 3. kills mid-stream ------------------------------------------------------------

games_in() { psql_stack "SELECT count(*) FROM games"; }
predictions_in() { psql_stack "SELECT count(*) FROM predictions"; }
# The live rounds are being predicted: the count moves within 90 s (a
# league plays a round every 18 s).
moving() {
  local before
  before=$(predictions_in)
  more_than() { [ "$(predictions_in)" -gt "$1" ]; }
  wait_for 90 more_than "$before"
}
moving || fail "no live predictions are flowing (predictions: $(predictions_in))"

# Running, healthy tasks of one service, as many as it wants.
service_healthy() {
  local want have
  want=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_$1")
  have=$(docker ps --filter "label=com.docker.swarm.service.name=${STACK}_$1" --format '{{.Status}}' | grep -c '(healthy)' || true)
  [ "$have" -eq "$want" ]
}
for service in predictor collector broker; do
  victim=$(stack_containers --filter "label=com.docker.swarm.service.name=${STACK}_$service" | head -n 1)
  t0=$(date +%s)
  docker kill --signal KILL "$victim" >/dev/null
  # Swarm notices, starts a replacement, and it becomes healthy.
  wait_for 10 sh -c "! docker ps -q --no-trunc | grep -q $victim" || true
  wait_for 180 service_healthy "$service" || fail "$service: no healthy replacement within 180 s of SIGKILL"
  recovered=$(elapsed "$t0")
  moving || fail "after the $service kill, predictions stopped (at $(predictions_in))"
  passed "SIGKILL of a $service container: replaced and healthy in $recovered s, predictions flowing again"
done

# --- 4. rolling updates --------------------------------------------------------------

# The same bits under a new tag: Swarm replaces every task.
docker tag fantasy/predictor:latest fantasy/predictor:next
docker tag fantasy/fanout:latest fantasy/fanout:next

update() { docker service update --quiet --detach=false --image "$2" "${STACK}_$1" >/dev/null 2>&1; }

# What the gateway saw of the predictor's replicas since `$1` (a
# timestamp): servers going down and up, and why.
gateway_events() {
  docker service logs --no-task-ids --since "$1" "${STACK}_gateway" 2>&1 |
    grep -E "Server predictor/|backend predictor" | tail -n 40 || true
}

# The predictor under a steady REST load through the gateway.
since=$(date -u +%Y-%m-%dT%H:%M:%S)
python3 scripts/stackcheck.py predict-load --base "http://$GATEWAY" --jwt-secret-file "$JWT" \
  --seconds 240 --rate 40 >"$tmp/load-update.json" 2>"$tmp/load-update.err" &
load=$!
sleep 10
t0=$(date +%s)
update predictor fantasy/predictor:next || fail "the predictor's update did not complete"
took=$(elapsed "$t0")
kill -TERM "$load" 2>/dev/null || true
wait "$load" || fail "requests failed during the predictor's update: $(cat "$tmp/load-update.json" "$tmp/load-update.err"; gateway_events "$since")"
passed "predictor updated in $took s under REST load: $(cat "$tmp/load-update.json")"

# The fanout with WebSocket clients that must miss nothing.
python3 scripts/stackcheck.py ws-clients --url "ws://$GATEWAY/v1/stream" --jwt-secret-file "$JWT" --clients 20 \
  --seconds 150 --no-gaps --out "$tmp/ws-update.json" >"$tmp/ws-update.summary" 2>"$tmp/ws-update.err" &
clients=$!
sleep 10
t0=$(date +%s)
update fanout fantasy/fanout:next || fail "the fanout's update did not complete"
took=$(elapsed "$t0")
wait "$clients" || fail "WebSocket clients missed or repeated frames across the fanout's update: $(cat "$tmp/ws-update.summary" "$tmp/ws-update.err")"
passed "fanout updated in $took s with 20 WebSocket clients, none missed or repeated a frame: $(cat "$tmp/ws-update.summary")"

# --- 5. an unhealthy image rolls back by itself ---------------------------------------

# A predictor that serves but whose health check fails.
docker build --quiet -t fantasy/predictor:unhealthy - >/dev/null <<'DOCKERFILE'
FROM fantasy/predictor:next
USER root
RUN mv /usr/local/bin/predictor /usr/local/bin/predictor.real \
 && printf '#!/bin/sh\n[ "$1" = healthcheck ] && exit 1\nexec /usr/local/bin/predictor.real "$@"\n' >/usr/local/bin/predictor \
 && chmod 0755 /usr/local/bin/predictor
USER 65532:65532
DOCKERFILE
since=$(date -u +%Y-%m-%dT%H:%M:%S)
python3 scripts/stackcheck.py predict-load --base "http://$GATEWAY" --jwt-secret-file "$JWT" \
  --seconds 600 --rate 40 >"$tmp/load-rollback.json" 2>"$tmp/load-rollback.err" &
load=$!
sleep 5
t0=$(date +%s)
docker service update --quiet --detach --image fantasy/predictor:unhealthy "${STACK}_predictor" >/dev/null
rolled_back() {
  [ "$(docker service inspect --format '{{.UpdateStatus.State}}' "${STACK}_predictor")" = rollback_completed ]
}
wait_for 420 rolled_back ||
  fail "the unhealthy update did not roll back within 420 s: $(docker service inspect --format '{{json .UpdateStatus}}' "${STACK}_predictor")"
took=$(elapsed "$t0")
image=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_predictor")
case $image in fantasy/predictor:next*) ;; *) fail "after the rollback the predictor runs $image" ;; esac
wait_for 120 service_healthy predictor || fail "the predictor is not healthy after the rollback"
kill -TERM "$load" 2>/dev/null || true
wait "$load" || fail "requests failed while the unhealthy update rolled back: $(cat "$tmp/load-rollback.json" "$tmp/load-rollback.err"; gateway_events "$since")"
passed "unhealthy predictor image rolled back by itself in $took s; REST load throughout: $(cat "$tmp/load-rollback.json")"

# --- 6. the season's end: every game and prediction exactly once ----------------------

t0=$(date +%s)
season_over() { [ "$(psql_stack "SELECT count(*) FROM outcomes")" -ge "$GAMES" ]; }
wait_for 900 season_over ||
  fail "the season did not end: $(psql_stack "SELECT count(*) FROM outcomes") of $GAMES results"
exactly_once() {
  [ "$(psql_stack "SELECT count(*) || ' ' || count(DISTINCT game_id) FROM predictions")" = "$GAMES $GAMES" ]
}
# A partition tansu stranded with a killed member heals within two stall
# times (KAFKA_STALL_AFTER, 60 s: the stall, then the members' settling)
# and a rejoin: the wait covers that.
if ! wait_for 240 exactly_once; then
  # Where the stream stands: the games without a prediction, and each
  # group's lag, stalls and heals as Prometheus last saw them.
  say "games without a prediction: $(psql_stack "SELECT string_agg(game_id, ' ') FROM (SELECT g.game_id FROM games g LEFT JOIN predictions p USING (game_id) WHERE p.game_id IS NULL ORDER BY 1 LIMIT 20) m")"
  for q in kafka_consumer_group_lag_messages kafka_consumer_group_stalled_partitions \
    kafka_consumer_rejoins_total kafka_consumer_handler_errors_total predictor_stream_skipped_total; do
    say "$q: $(prom "$q" | series_values)"
  done
  fail "Postgres: $(games_in) games, $(psql_stack "SELECT count(*) || ' predictions of ' || count(DISTINCT game_id) FROM predictions") games (want $GAMES each, once)"
fi
[ "$(games_in)" = "$GAMES" ] || fail "Postgres has $(games_in) games, not $GAMES"
# What the services did to get there, as Prometheus saw it (counters of
# replaced containers go with them: a floor).
prom_number() {
  prom "$1" | python3 -c 'import json, sys
rows = json.load(sys.stdin)["data"]["result"]
print(int(float(rows[0]["value"][1])) if rows else 0)'
}
no_stall() { [ "$(prom_number 'max(kafka_consumer_group_stalled_partitions)')" = 0 ]; }
wait_for 60 no_stall || fail "a consumer group is stalled at the season's end: $(prom 'kafka_consumer_group_stalled_partitions%3E0' || true)"
healed="group rejoins after a stall: $(prom_number 'sum(kafka_consumer_rejoins_total)'), producers replaced after a fence: $(prom_number 'sum(kafka_producer_replaced_total)')"
passed "season over: $GAMES games, $GAMES predictions in Postgres, one per game, after every kill and update; no group stalled; $healed"

psql_stack "SELECT game_id FROM games ORDER BY game_id" >"$tmp/games.txt"
psql_stack "SELECT game_id FROM predictions WHERE predicted_at > '$ws_since' ORDER BY game_id" >"$tmp/live-games.txt"
[ "$(wc -l <"$tmp/live-games.txt")" -ge 100 ] ||
  fail "only $(wc -l <"$tmp/live-games.txt") games were predicted while the WebSocket client listened"
wait "$ws_all" ||
  fail "the WebSocket client through the gateway: $(cat "$tmp/ws-all.summary" "$tmp/ws-all.err")"
# The predictor killed mid-batch announces that batch again when its games
# are redelivered (at-least-once; Postgres keeps one row): the client may
# see such a prediction twice, identical. Any other repeat fails.
stackcheck ws-report --in "$tmp/ws-all.json" --expect-games "$tmp/live-games.txt" --allow-redelivered >"$tmp/ws-all.check" ||
  fail "not every game reached the WebSocket client once: $(cat "$tmp/ws-all.check")"
passed "every game's prediction reached the WebSocket client through the gateway, once or (after the kills) redelivered identical: $(cat "$tmp/ws-all.check")"
stackcheck rest-predictions --base "http://$GATEWAY" --jwt-secret-file "$JWT" --games "$tmp/games.txt" >"$tmp/rest.json" ||
  fail "predictions not readable over REST: $(cat "$tmp/rest.json")"
passed "every game's prediction readable over REST through the gateway: $(cat "$tmp/rest.json")"

fi

# --- 7. docker-compose on one host ------------------------------------------------------

remove_stack
bash compose/make-secrets.sh >/dev/null
# A shorter league: one collector, 20 teams, 60 rounds of history, 10 live
# rounds over two minutes.
export HTTP_PORT=$GATEWAY_PORT
export COLLECTOR_SOURCES="sim:nba?seed=9&teams=20&games=70&history=60&minutes=2"
COMPOSE_GAMES=700
(cd compose && docker-compose -f docker-compose.yml config) >"$tmp/compose-resolved.yml"
python3 compose/offline/merge.py --base-escaped "$tmp/compose-resolved.yml" \
  compose/offline/compose.override.yml >"$tmp/compose.yml"
# (One Compose project runs here at a time: its Postgres by service label.)
PG_FILTER="label=com.docker.compose.service=postgres"
t0=$(date +%s)
compose up -d >"$tmp/compose-up.log" 2>&1 || fail "docker-compose up failed: $(tail -5 "$tmp/compose-up.log")"
compose_converged() {
  local line
  [ -n "$(compose ps -q)" ] || return 1
  while read -r line; do
    case $line in
      *"(healthy)"*) ;;
      *init*"Exited (0)"*) ;;
      *) return 1 ;;
    esac
  done < <(docker ps -a --filter "label=com.docker.compose.project=$COMPOSE_PROJECT" --format '{{.Names}} {{.Status}}')
}
wait_for 300 compose_converged ||
  fail "docker-compose did not converge: $(docker ps -a --filter "label=com.docker.compose.project=$COMPOSE_PROJECT" --format '{{.Names}} {{.Status}}' | tr '\n' ';')"
passed "docker-compose up: every container healthy, the jobs done, in $(elapsed "$t0") s"

compose_over() {
  [ "$(psql_stack "SELECT count(*) || ' ' || count(DISTINCT game_id) FROM predictions")" = "$COMPOSE_GAMES $COMPOSE_GAMES" ]
}
ws_since=$(psql_stack "SELECT now() + interval '5 seconds'")
python3 scripts/stackcheck.py ws-collect --url "ws://$GATEWAY/v1/stream" --jwt-secret-file "$JWT" \
  --seconds 400 --idle 45 --out "$tmp/ws-compose.json" >"$tmp/ws-compose.summary" 2>"$tmp/ws-compose.err" &
ws_compose=$!
sleep 5
wait_for 400 compose_over ||
  fail "docker-compose: $(psql_stack "SELECT count(*) || ' predictions of ' || count(DISTINCT game_id) FROM predictions") games, want $COMPOSE_GAMES once each"
psql_stack "SELECT game_id FROM predictions WHERE predicted_at > '$ws_since' ORDER BY game_id" >"$tmp/compose-live.txt"
wait "$ws_compose" || fail "docker-compose: the WebSocket client: $(cat "$tmp/ws-compose.summary" "$tmp/ws-compose.err")"
stackcheck ws-report --in "$tmp/ws-compose.json" --expect-games "$tmp/compose-live.txt" >"$tmp/ws-compose.check" ||
  fail "docker-compose: not every live game reached the WebSocket client once: $(cat "$tmp/ws-compose.check")"
stackcheck rest-predictions --base "http://$GATEWAY" --jwt-secret-file "$JWT" --games "$tmp/compose-live.txt" >"$tmp/rest-compose.json" ||
  fail "docker-compose: predictions not readable over REST: $(cat "$tmp/rest-compose.json")"
passed "docker-compose: $COMPOSE_GAMES games predicted once each; $(wc -l <"$tmp/compose-live.txt") live ones reached the WebSocket client through the gateway and read back over REST"
compose_down
