//! The model registry.
//!
//! - [`ModelStore`]: ONNX artifacts in an object store, addressed by URI:
//!   `file:///models` (the default, a local folder) or `s3://bucket/prefix`
//!   (MinIO or S3, configured by the usual `AWS_*` variables, e.g.
//!   `AWS_ENDPOINT=http://minio:9000 AWS_ALLOW_HTTP=true`). Reads verify the
//!   SHA-256 the registry recorded: a tampered or truncated file is refused.
//! - [`Registry`]: model versions in Postgres (`models` table) with their
//!   status; at most one active version per model name (the database
//!   enforces it), activation and rollback in one transaction.
//!
//! - [`experiments`]: champion/challenger experiments (`experiments` and
//!   its tables): variants, sticky assignment of games ([`experiments::bucket`]),
//!   every variant's predictions, and the decisions with their evidence.
//!
//! The trainer writes; the predictor reads the active version at start-up
//! and whatever `models` announces later.

pub mod experiments;
mod records;
mod store;

pub use experiments::{Experiment, ExperimentError, Experiments};
pub use records::{ModelRecord, Registry, RegistryError};
pub use store::{ModelStore, StoreError, StoreSettings, fetch_artifact, fetch_artifact_with};

#[cfg(feature = "testing")]
pub mod testing;
