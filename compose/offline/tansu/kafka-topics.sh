#!/bin/bash
# The part of Apache Kafka's kafka-topics.sh that compose/kafka/create-topics.sh
# uses, over tansu's own client, so the stack's topic job runs unchanged on
# the tansu image:
#
#   kafka-topics.sh --bootstrap-server HOST:PORT --list
#   kafka-topics.sh --bootstrap-server HOST:PORT --create [--if-not-exists] \
#     --topic NAME --partitions N [--replication-factor R] [--config K=V ...]
#
# (tansu keeps one copy of each partition in its storage: the replication
# factor is accepted and not used.)
set -euo pipefail

bootstrap='' action='' topic='' partitions=1 if_not_exists=0
configs=()
while (($#)); do
  case $1 in
    --bootstrap-server) bootstrap=$2; shift ;;
    --list) action=list ;;
    --create) action=create ;;
    --if-not-exists) if_not_exists=1 ;;
    --topic) topic=$2; shift ;;
    --partitions) partitions=$2; shift ;;
    --replication-factor) shift ;;
    --config) configs+=(--config "$2"); shift ;;
    *) echo "kafka-topics.sh (tansu): unsupported argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $bootstrap ]] || { echo "kafka-topics.sh (tansu): --bootstrap-server is required" >&2; exit 2; }
broker=tcp://${bootstrap%%,*}

case $action in
  list) exec tansu topic list --broker "$broker" ;;
  create)
    [[ -n $topic ]] || { echo "kafka-topics.sh (tansu): --topic is required" >&2; exit 2; }
    if ((if_not_exists)) && tansu topic list --broker "$broker" 2>/dev/null | grep -qw -- "$topic"; then
      exit 0
    fi
    exec tansu topic create "$topic" --partitions "$partitions" --broker "$broker" "${configs[@]}"
    ;;
  *) echo "kafka-topics.sh (tansu): --list or --create" >&2; exit 2 ;;
esac
