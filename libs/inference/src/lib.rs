//! ONNX Runtime for the stack: finding the library, choosing the device,
//! checking that a model serves, batching requests, and swapping models.
//!
//! - [`Runtime`]: loads `libonnxruntime` once per process (see
//!   [`runtime::search_dirs`] for where it looks) and builds sessions on the
//!   CPU, CUDA or TensorRT execution provider.
//! - [`model`]: what a servable model is: any binary classifier with one
//!   float32 `[batch, n_features]` input and a `[batch]`, `[batch, 1]` or
//!   `[batch, 2]` probability output (skl2onnx with zipmap off,
//!   torch.onnx.export), with `feature_set` and `version` read from its
//!   metadata when present.
//! - [`Batcher`]: the dynamic batcher on dedicated threads, bounded.
//! - [`Engine`]: the current model behind an atomic pointer, for hot swaps.
//! - [`Scorer`]: a model scoring rows in bulk off the serving path (the
//!   trainer's evaluation).
//! - [`metrics`]: the metrics the engine and the batcher record.

pub mod batcher;
pub mod engine;
pub mod metrics;
pub mod model;
pub mod runtime;
pub mod scorer;

pub use batcher::{Batcher, FEATURE_LIMIT, PredictError};
pub use engine::Engine;
pub use model::{ModelInfo, ModelSpec, OutputKind, sha256_hex};
pub use runtime::{Device, Runtime};
pub use scorer::Scorer;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use fantasy_config::Parser;

/// Why a model or the runtime could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    /// The ONNX Runtime library is missing or unusable.
    #[error("{0}")]
    Library(String),
    /// The requested execution provider is unusable.
    #[error("{0}")]
    Device(String),
    /// The model does not load or does not fit.
    #[error("{0}")]
    Model(String),
}

/// How models run.
#[derive(Clone, Debug)]
pub struct BatcherConfig {
    /// `INFERENCE_DEVICE`: `cpu`, `cuda`, `tensorrt` or `auto`.
    pub device: Device,
    /// `INFERENCE_WORKERS`: threads running batches, each with its own session.
    pub workers: usize,
    /// `INFERENCE_THREADS`: ONNX Runtime's intra-op threads per session.
    pub intra_threads: usize,
    /// `MAX_BATCH`: most rows in one run.
    pub max_batch: usize,
    /// `MAX_QUEUE_DELAY`: how long a batch waits to fill (0: never waits,
    /// takes whatever queued meanwhile).
    pub max_queue_delay: Duration,
    /// `QUEUE_CAPACITY`: requests waiting before new ones are refused.
    pub queue_capacity: usize,
    /// `MODEL_OUTPUT`: the output to read, when the model has several.
    pub output: Option<String>,
    /// `INFERENCE_TF32`: let CUDA use TF32 tensor cores (off: answers match
    /// the CPU's within 1e-5).
    pub tf32: bool,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            device: Device::Auto,
            workers: 1,
            intra_threads: 1,
            max_batch: 256,
            max_queue_delay: Duration::ZERO,
            queue_capacity: 4096,
            output: None,
            tf32: false,
        }
    }
}

/// Inference settings of a service.
#[derive(Clone, Debug, Default)]
pub struct InferenceConfig {
    /// `ORT_DYLIB_PATH`: the library, when not found by searching.
    pub library: Option<PathBuf>,
    pub batcher: BatcherConfig,
}

impl InferenceConfig {
    /// Reads `INFERENCE_*`, `ORT_DYLIB_PATH`, `MAX_BATCH`, `MAX_QUEUE_DELAY`,
    /// `QUEUE_CAPACITY` and `MODEL_OUTPUT`.
    pub fn from_env(p: &mut Parser<'_>) -> Self {
        let d = BatcherConfig::default();
        Self {
            library: p.string_opt("ORT_DYLIB_PATH").map(PathBuf::from),
            batcher: BatcherConfig {
                device: p.parse("INFERENCE_DEVICE", d.device),
                workers: p.ranged("INFERENCE_WORKERS", d.workers, 1..=64),
                intra_threads: p.ranged("INFERENCE_THREADS", d.intra_threads, 1..=256),
                max_batch: p.ranged("MAX_BATCH", d.max_batch, 1..=65_536),
                max_queue_delay: p.duration("MAX_QUEUE_DELAY", d.max_queue_delay),
                queue_capacity: p.ranged("QUEUE_CAPACITY", d.queue_capacity, 1..=1_000_000),
                output: p.string_opt("MODEL_OUTPUT"),
                tf32: p.flag("INFERENCE_TF32", d.tf32),
            },
        }
    }
}

impl fmt::Display for InferenceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.batcher;
        write!(
            f,
            "library={} device={} workers={} intra_threads={} max_batch={} max_queue_delay={:?} \
             queue_capacity={} output={} tf32={}",
            self.library
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(search)".into()),
            b.device,
            b.workers,
            b.intra_threads,
            b.max_batch,
            b.max_queue_delay,
            b.queue_capacity,
            b.output.as_deref().unwrap_or("(by shape)"),
            b.tf32
        )
    }
}
