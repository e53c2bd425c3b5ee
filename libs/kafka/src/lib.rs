//! Kafka for the services: a typed producer, a typed at-least-once consumer,
//! topic set-up, and an embedded broker for local runs and tests.
//!
//! - [`Producer`] publishes [`fantasy_messages::Message`]s: idempotent,
//!   `acks=all`, keyed by the message's key (the game id, so every game's
//!   events stay ordered), with the current trace context in the headers.
//! - [`Consumer`] reads batches, decodes them, hands them to a [`Handler`] and
//!   stores the batch's offsets only once the handler succeeded; offsets are
//!   committed from what was stored (periodically, on a partition revoke and on
//!   shutdown). A failing handler is retried with backoff and never skipped; a
//!   payload that cannot be decoded (a poison message) is counted, logged,
//!   optionally copied to a dead-letter topic, and passed over.
//! - [`ProgressWatch`] tells when a group's stream stops moving: messages
//!   wait and its committed offsets stay put (`/ready` reports it).
//! - [`TailReader`] reads every partition of a topic from chosen offsets,
//!   outside any group (each fanout replica reads everything).
//! - [`ensure_topics`] creates the stack's topics on a real broker.
//! - [`EmbeddedBroker`] (feature `embedded`) runs librdkafka's mock cluster in
//!   process: the Kafka protocol over TCP on 127.0.0.1, which other processes
//!   reach at its bootstrap address.
//! - [`metrics`]: the metrics the consumers, the progress watch and the
//!   producer record.

mod admin;
mod config;
mod consumer;
#[cfg(feature = "embedded")]
mod embedded;
pub mod metrics;
mod producer;
mod progress;
mod tail;
mod trace;

pub use admin::{BrokerInfo, BrokerProbe, ensure_stack_topics, ensure_topics, fetch_broker_info};
pub use config::{Compression, KafkaConfig, Topics};
pub use consumer::{
    AssignmentProbe, Consumer, ConsumerError, ConsumerOptions, Decode, Handler, NotYet, Raw,
    Record, RunSummary, StartFrom,
};
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedBroker;
pub use producer::{Producer, PublishError};
pub use progress::{GroupProgress, ProgressWatch, StalledPartition};
pub use rdkafka::error::KafkaError;
pub use tail::{TailReader, TailRecord, TailStart};
