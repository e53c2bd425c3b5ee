#!/usr/bin/env bash
# Sets the machine up, builds the stack in release mode, and runs it.
#
# For now this runs the foundation: the embedded Kafka-protocol broker with
# the stack's topics, the database migrations, and a check of every
# dependency. It stays up until Ctrl-C. (The service issues grow it into
# `fantasy up`, every service in one process.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p fantasy
bin=target/release/fantasy

state=$(mktemp -d)
trap 'kill "$broker_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$state"' EXIT
"$bin" broker --bootstrap-file "$state/bootstrap" &
broker_pid=$!
for _ in $(seq 1 100); do [ -s "$state/bootstrap" ] && break; sleep 0.1; done
if [ ! -s "$state/bootstrap" ]; then
  echo "the embedded broker did not start" >&2
  exit 1
fi
export KAFKA_BROKERS
KAFKA_BROKERS=$(cat "$state/bootstrap")
"$bin" migrate
"$bin" check
echo
echo "Running. Other processes join with: export KAFKA_BROKERS=$KAFKA_BROKERS"
echo "Ctrl-C stops everything."
wait "$broker_pid"
