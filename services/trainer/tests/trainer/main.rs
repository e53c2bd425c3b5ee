//! The trainer as a service: real Postgres, the Kafka protocol through the
//! embedded mock cluster, artifacts in a temporary folder, ONNX Runtime.
#![allow(clippy::unwrap_used)]

mod service;
mod support;
