#!/usr/bin/env bash
# Sets the machine up, builds the stack in release mode, and runs it:
# `fantasy up`, every service in one process with the embedded Kafka-protocol
# broker (unless KAFKA_BROKERS is set) and a simulated league. Arguments go
# to `fantasy up` (e.g. --port 9080, --host 0.0.0.0). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p fantasy
exec target/release/fantasy up "$@"
