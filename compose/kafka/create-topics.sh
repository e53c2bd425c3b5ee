#!/usr/bin/env bash
# Creates the stack's Kafka topics (ARCHITECTURE.md): 8 partitions, 168 h
# retention, `models` compacted. Safe to run again: existing topics are left
# as they are. Run by the kafka-init job of compose/docker-compose.yml and
# compose/stack.yml in the apache/kafka image.
#
#   BOOTSTRAP    bootstrap servers (kafka:9092)
#   PARTITIONS   partitions per topic (8)
#   REPLICATION  replicas per partition (1 on one host, 3 in the Swarm stack)
#   PREFIX       put before every topic name (KAFKA_TOPIC_PREFIX of the services)
#   KAFKA_TOPICS the kafka-topics.sh to run (the apache/kafka image's)
set -euo pipefail

bootstrap=${BOOTSTRAP:-kafka:9092}
partitions=${PARTITIONS:-8}
replication=${REPLICATION:-1}
prefix=${PREFIX:-}
retention_ms=$((168 * 3600 * 1000))
topics_sh=${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}

# The brokers may still be electing a controller: wait up to two minutes.
for attempt in $(seq 1 60); do
  if "$topics_sh" --bootstrap-server "$bootstrap" --list >/dev/null 2>&1; then
    break
  fi
  [ "$attempt" -eq 60 ] && { echo "create-topics: $bootstrap did not answer" >&2; exit 1; }
  sleep 2
done

create() {
  local topic="$prefix$1"
  shift
  "$topics_sh" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$topic" --partitions "$partitions" --replication-factor "$replication" "$@"
  echo "create-topics: $topic ready"
}

for topic in games outcomes predictions metrics; do
  create "$topic" --config "retention.ms=$retention_ms"
done
# The latest announcement per model name is kept for ever.
create models --config cleanup.policy=compact

echo "create-topics: done"
