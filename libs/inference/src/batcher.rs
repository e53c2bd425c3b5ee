//! The dynamic batcher: concurrent requests run together, as Triton does.
//!
//! Requests wait in one bounded queue. Each worker thread owns an ONNX
//! Runtime session (`Session::run` takes `&mut self`) and loops: take the
//! first waiting request, add whatever else waits until `max_batch` rows or
//! `max_queue_delay`, run them as one tensor, hand each caller its rows.
//! Inference never runs on the async workers' threads, and a full queue
//! refuses at once ([`PredictError::Overloaded`]) instead of growing.
//!
//! With `max_queue_delay` at zero the batcher is greedy: it never waits, but
//! under load everything that queued while the last batch ran goes into the
//! next one, so batches grow exactly when it pays.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use ort::session::Session;
use tokio::sync::oneshot;

use crate::model::{ModelInfo, ModelSpec, inspect, probe, run_rows, sha256_hex};
use crate::{BatcherConfig, InferenceError, Runtime};

/// The largest magnitude a feature may have (the features of the stack's
/// feature sets are ratings, differences and rates, far below it).
pub const FEATURE_LIMIT: f32 = 1e6;

/// Why one request got no prediction.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PredictError {
    /// The queue is full: shed load, ask the client to retry.
    #[error("the inference queue is full")]
    Overloaded,
    /// No model is loaded yet.
    #[error("no model is loaded")]
    NoModel,
    #[error("expected {expected} features per row, got {got}")]
    FeatureCount { expected: usize, got: usize },
    #[error("feature {col} of row {row} is {value}: not a finite number")]
    NonFinite { row: usize, col: usize, value: f32 },
    /// A finite feature beyond [`FEATURE_LIMIT`]: no model of ours was
    /// trained anywhere near it, and its score could overflow (the
    /// probability would be NaN, failing the whole batch it ran in).
    #[error("feature {col} of row {row} is {value}: beyond ±{FEATURE_LIMIT}")]
    OutOfRange { row: usize, col: usize, value: f32 },
    /// The batch this request ran in failed (the cause is logged).
    #[error("inference failed")]
    Failed(String),
    /// The model is being shut down.
    #[error("the model is shutting down")]
    Stopped,
}

struct Job {
    rows: usize,
    features: Vec<f32>,
    reply: oneshot::Sender<Result<Vec<f32>, PredictError>>,
    enqueued: Instant,
}

/// One loaded model and the threads that run it. Dropping the last handle
/// closes the queue; the workers finish what is queued, then exit.
pub struct Batcher {
    info: Arc<ModelInfo>,
    spec: Arc<ModelSpec>,
    queue: Sender<Job>,
    rejected: metrics::Counter,
    _workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("version", &self.info.version)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Loads `model`, checks that it serves (one float32 `[batch, n]` input,
    /// a probability output, sane answers on probe rows), and starts its
    /// workers. `version` is the registry's name for it, if any.
    pub fn load(
        runtime: &Runtime,
        model: &[u8],
        source: &str,
        version: Option<String>,
        cfg: &BatcherConfig,
    ) -> Result<Self, InferenceError> {
        let sha256 = sha256_hex(model);
        let mut sessions = Vec::with_capacity(cfg.workers.max(1));
        let (first, device) =
            runtime.session_with(model, cfg.device, cfg.intra_threads, cfg.tf32)?;
        let spec = inspect(&first, cfg.output.as_deref())?;
        sessions.push(first);
        for _ in 1..cfg.workers.max(1) {
            // Same device as the first: `auto` was resolved there.
            sessions.push(
                runtime
                    .session_with(model, device, cfg.intra_threads, cfg.tf32)?
                    .0,
            );
        }
        probe(&mut sessions[0], &spec)?;

        let version = version
            .or_else(|| spec.version.clone())
            .unwrap_or_else(|| sha256[..12].to_owned());
        let info = Arc::new(ModelInfo {
            version,
            sha256,
            feature_set: spec.feature_set.clone(),
            n_features: spec.n_features,
            input: spec.input.clone(),
            output: spec.output.clone(),
            output_kind: spec.kind,
            device: device.to_string(),
            source: source.to_owned(),
            loaded_at: Utc::now(),
        });
        let spec = Arc::new(spec);
        let (queue, jobs) = crossbeam_channel::bounded(cfg.queue_capacity.max(1));
        let workers = sessions
            .into_iter()
            .enumerate()
            .map(|(i, session)| {
                let worker = Worker {
                    session,
                    spec: Arc::clone(&spec),
                    jobs: jobs.clone(),
                    max_batch: cfg.max_batch.max(1),
                    max_queue_delay: cfg.max_queue_delay,
                    version: info.version.clone(),
                    metrics: WorkerMetrics::new(),
                };
                std::thread::Builder::new()
                    .name(format!("inference-{i}"))
                    .spawn(move || worker.run())
                    .map_err(|e| {
                        InferenceError::Model(format!("cannot start an inference thread: {e}"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(
            version = %info.version,
            sha256 = %info.sha256,
            device = %info.device,
            n_features = info.n_features,
            output = %info.output,
            workers = workers.len(),
            "model loaded"
        );
        Ok(Self {
            info,
            spec,
            queue,
            rejected: metrics::counter!("inference_rejected_total", "reason" => "overloaded"),
            _workers: workers,
        })
    }

    /// What is being served.
    pub fn info(&self) -> &Arc<ModelInfo> {
        &self.info
    }

    /// Features per row.
    pub fn n_features(&self) -> usize {
        self.spec.n_features
    }

    /// Requests waiting.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Checks a request's rows before it takes a place in the queue.
    pub fn validate(&self, features: &[f32], rows: usize) -> Result<(), PredictError> {
        let n = self.spec.n_features;
        if rows == 0 || features.len() != rows * n {
            return Err(PredictError::FeatureCount {
                expected: n,
                got: features.len().checked_div(rows).unwrap_or(0),
            });
        }
        if let Some(i) = features.iter().position(|f| !f.is_finite()) {
            return Err(PredictError::NonFinite {
                row: i / n,
                col: i % n,
                value: features[i],
            });
        }
        if let Some(i) = features.iter().position(|f| f.abs() > FEATURE_LIMIT) {
            return Err(PredictError::OutOfRange {
                row: i / n,
                col: i % n,
                value: features[i],
            });
        }
        Ok(())
    }

    /// Predicts `rows` rows (row-major in `features`); one probability each.
    pub async fn predict(&self, features: Vec<f32>, rows: usize) -> Result<Vec<f32>, PredictError> {
        self.validate(&features, rows)?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            rows,
            features,
            reply,
            enqueued: Instant::now(),
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.rejected.increment(1);
                return Err(PredictError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => return Err(PredictError::Stopped),
        }
        answer.await.unwrap_or(Err(PredictError::Stopped))
    }
}

/// Metric handles, looked up once: the hot loop only touches atomics.
struct WorkerMetrics {
    queue_wait: metrics::Histogram,
    queue_depth: metrics::Gauge,
    batch_seconds: metrics::Histogram,
    batch_rows: metrics::Histogram,
    rows: metrics::Counter,
    failures: metrics::Counter,
}

impl WorkerMetrics {
    fn new() -> Self {
        Self {
            queue_wait: metrics::histogram!("inference_queue_wait_seconds"),
            queue_depth: metrics::gauge!("inference_queue_depth"),
            batch_seconds: metrics::histogram!("inference_batch_seconds"),
            batch_rows: metrics::histogram!("inference_batch_rows"),
            rows: metrics::counter!("inference_rows_total"),
            failures: metrics::counter!("inference_batch_failures_total"),
        }
    }
}

struct Worker {
    session: Session,
    spec: Arc<ModelSpec>,
    jobs: Receiver<Job>,
    max_batch: usize,
    max_queue_delay: Duration,
    version: String,
    metrics: WorkerMetrics,
}

impl Worker {
    fn run(mut self) {
        let mut batch: Vec<Job> = Vec::with_capacity(64);
        let mut input: Vec<f32> = Vec::new();
        let mut probs: Vec<f32> = Vec::new();
        let mut carry: Option<Job> = None;
        loop {
            let first = match carry.take() {
                Some(job) => job,
                None => match self.jobs.recv() {
                    Ok(job) => job,
                    // The last handle is gone and the queue is empty.
                    Err(_) => break,
                },
            };
            let mut rows = first.rows;
            batch.push(first);
            let deadline = Instant::now() + self.max_queue_delay;
            loop {
                // Take everything already queued, up to max_batch.
                while rows < self.max_batch && carry.is_none() {
                    let Ok(job) = self.jobs.try_recv() else { break };
                    if rows + job.rows > self.max_batch {
                        carry = Some(job);
                    } else {
                        rows += job.rows;
                        batch.push(job);
                    }
                }
                if rows >= self.max_batch || carry.is_some() {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                // Nap rather than block on the queue: a blocked receiver
                // makes every sender pay a wake-up system call, which at
                // thousands of requests per batch costs more than the model.
                std::thread::sleep((deadline - now).min(Duration::from_micros(50)));
            }
            // A caller that gave up (timeout, disconnect) needs no answer.
            batch.retain(|j| !j.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            rows = batch.iter().map(|j| j.rows).sum();
            input.clear();
            for job in &batch {
                input.extend_from_slice(&job.features);
            }
            // The first job waited longest: one sample per batch is enough.
            self.metrics
                .queue_wait
                .record(batch[0].enqueued.elapsed().as_secs_f64());
            self.metrics.queue_depth.set(self.jobs.len() as f64);
            let started = Instant::now();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                run_rows(&mut self.session, &self.spec, &input, rows, &mut probs)
            }))
            .unwrap_or_else(|_| Err("ONNX Runtime panicked".to_owned()));
            self.metrics
                .batch_seconds
                .record(started.elapsed().as_secs_f64());
            self.metrics.batch_rows.record(rows as f64);
            match result {
                Ok(()) => {
                    self.metrics.rows.increment(rows as u64);
                    let mut at = 0;
                    for job in batch.drain(..) {
                        // The answer goes back in the request's own buffer:
                        // no allocation per request.
                        let mut answer = job.features;
                        answer.clear();
                        answer.extend_from_slice(&probs[at..at + job.rows]);
                        at += job.rows;
                        let _ = job.reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    // Only this batch's requests fail; the worker goes on.
                    tracing::error!(version = %self.version, rows, requests = batch.len(), "inference batch failed: {e}");
                    self.metrics.failures.increment(1);
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Err(PredictError::Failed(e.clone())));
                    }
                }
            }
        }
        tracing::debug!(version = %self.version, "inference worker stopped");
    }
}
