//! The metrics this crate records: its entry in the metric catalogue (see
//! [`fantasy_telemetry::MetricDef`]). A service that uses the crate
//! describes these at start-up.

use fantasy_telemetry::MetricDef;

/// Every metric the consumers, the progress watch and the producer record.
pub const METRICS: &[MetricDef] = &[
    // consumer
    MetricDef::gauge(
        "kafka_consumer_lag_messages",
        "Messages between this member's positions and the partition ends (librdkafka statistics), by topic and group",
    ),
    MetricDef::counter(
        "kafka_consumer_rebalances_total",
        "Partition assignments and revocations this member went through, by group and kind (assign, revoke)",
    ),
    MetricDef::counter(
        "kafka_consumer_commit_errors_total",
        "Offset commits that failed, by group",
    ),
    MetricDef::counter(
        "kafka_consumer_rejoins_total",
        "Times this member left its group and joined again to move a stalled partition, by group",
    ),
    MetricDef::counter(
        "kafka_consumer_tombstones_total",
        "Messages without a payload, skipped, by topic",
    ),
    MetricDef::histogram(
        "kafka_consumer_batch_size",
        "Messages per batch handed to the handler, by group",
    ),
    MetricDef::counter(
        "kafka_consumer_messages_total",
        "Messages handled (and then committed), by group",
    ),
    MetricDef::counter(
        "kafka_consumer_receive_errors_total",
        "Errors receiving from the brokers that librdkafka retries by itself, by group",
    ),
    MetricDef::counter(
        "kafka_consumer_poison_total",
        "Messages that cannot be decoded, skipped (copied to the dead-letter topic when there is one), by topic and reason",
    ),
    MetricDef::counter(
        "kafka_consumer_handler_errors_total",
        "Failed attempts to handle a batch (each is retried with back-off), by group",
    ),
    // progress watch
    MetricDef::gauge(
        "kafka_consumer_group_lag_messages",
        "Messages between the group's committed offsets and the partition ends, by group",
    ),
    MetricDef::gauge(
        "kafka_consumer_group_stalled_partitions",
        "Partitions with messages waiting and no commit for KAFKA_STALL_AFTER, by group",
    ),
    // producer
    MetricDef::counter(
        "kafka_producer_replaced_total",
        "Producers replaced by a new client after they were fenced or failed fatally",
    ),
    MetricDef::counter(
        "kafka_producer_messages_total",
        "Messages sent, delivered or not, by topic",
    ),
    MetricDef::counter(
        "kafka_producer_queue_full_total",
        "Sends that waited because librdkafka's queue was full",
    ),
    MetricDef::counter(
        "kafka_producer_errors_total",
        "Messages that could not be queued or were not delivered, by topic",
    ),
];
