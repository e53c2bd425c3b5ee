#!/usr/bin/env bash
# Sets the machine up and runs every test of the workspace against the real
# local Postgres and Redis and the embedded Kafka-protocol broker.
#
#   scripts/test.sh                    all tests
#   scripts/test.sh -p fantasy-kafka   any arguments go to nextest (doc tests are then skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  # The Compose and Swarm files, the Dockerfile, the monitoring configuration.
  bash scripts/check-deploy.sh
  # nextest does not run doc tests; they are few and quick.
  cargo test --workspace --doc --quiet
fi
cargo nextest run --workspace --no-fail-fast "$@"
