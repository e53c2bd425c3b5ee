//! The collector with its real parts: Postgres, the local Redis, Kafka
//! through the embedded broker, scoreboards from a local HTTP server.
#![allow(clippy::unwrap_used)]

mod support;

mod pipeline;
mod service;
