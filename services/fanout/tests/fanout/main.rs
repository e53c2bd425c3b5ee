//! The fanout as its clients see it: real WebSocket clients on a random
//! port, the Kafka protocol through the embedded broker, the local Redis.
#![allow(clippy::unwrap_used)]

mod support;

mod browser;
mod delivery;
mod errors;
mod recovery;
