//! The predictor as its clients see it: real HTTP on a random port, the
//! Kafka protocol through the embedded broker, the local Postgres (a fresh
//! database per test) and Redis (a key prefix per test), real ONNX Runtime.
#![allow(clippy::unwrap_used)]

mod support;

mod api;
mod lifecycle;
mod stream;
