//! The messages the services exchange over Kafka, the topics they travel on,
//! and their JSON codec.
//!
//! Every message carries a `schema_version` field, written first. Decoding
//! checks it and the message's own invariants (finite numbers, probabilities in
//! `[0, 1]`, non-empty keys), so a consumer either gets a valid value or a typed
//! [`DecodeError`] it can count and skip; it never panics on a peer's bytes.
//! Encoding runs the same checks, so a producer cannot publish what a consumer
//! would refuse (JSON has no NaN: `serde_json` would silently write `null`).
//!
//! The types are the contracts of `DESIGN.md`: field names may be refined,
//! their meaning may not. A change of meaning is a new schema version.

mod codec;
mod topics;
mod types;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use codec::{DecodeError, EncodeError, Message, SchemaVersion, decode, encode, encode_into};
pub use topics::{Topic, TopicSpec};
pub use types::{
    CalibrationBucket, ComparisonStanding, ExperimentStanding, Game, GameStatus, ModelMetrics,
    ModelPublished, ModelStatus, Outcome, Prediction, TrainingMetrics, VariantStanding,
};
