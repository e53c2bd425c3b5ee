#!/usr/bin/env bash
# Sets the machine up and runs every test of the workspace against the real
# local Postgres and Redis and the embedded Kafka-protocol broker.
#
#   scripts/test.sh            all tests
#   scripts/test.sh -p fantasy-kafka   any further arguments go to nextest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo nextest run --workspace --no-fail-fast "$@"
# nextest does not run doc tests; they are few and quick.
if [ $# -eq 0 ]; then
  cargo test --workspace --doc --quiet
fi
