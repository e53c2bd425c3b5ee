//! A model run off the serving path, for evaluation.

use ort::session::Session;

use crate::model::{inspect, probe, run_rows};
use crate::{Device, InferenceError, ModelSpec, Runtime};

/// Rows per run: bounds the input and output tensors of a large evaluation.
const CHUNK: usize = 4096;

/// One CPU session of a model, checked like a served one (its shape, and
/// probability answers on probe rows), that scores rows in bulk. The trainer
/// uses it to put candidate and active model through the same ONNX Runtime
/// the predictor serves them with.
#[derive(Debug)]
pub struct Scorer {
    session: Session,
    spec: ModelSpec,
}

impl Scorer {
    /// Loads `model` on the CPU with one thread.
    pub fn new(runtime: &Runtime, model: &[u8]) -> Result<Self, InferenceError> {
        let (mut session, _) = runtime.session(model, Device::Cpu, 1)?;
        let spec = inspect(&session, None)?;
        probe(&mut session, &spec)?;
        Ok(Self { session, spec })
    }

    /// What the model reads and writes.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Home-win probabilities of `rows` (row-major, `spec().n_features`
    /// values each).
    pub fn predict(&mut self, rows: &[f32]) -> Result<Vec<f32>, InferenceError> {
        let n = self.spec.n_features;
        if !rows.len().is_multiple_of(n) {
            return Err(InferenceError::Model(format!(
                "{} values are not whole rows of {n} features",
                rows.len()
            )));
        }
        let mut all = Vec::with_capacity(rows.len() / n);
        let mut out = Vec::new();
        for chunk in rows.chunks(CHUNK * n) {
            run_rows(
                &mut self.session,
                &self.spec,
                chunk,
                chunk.len() / n,
                &mut out,
            )
            .map_err(InferenceError::Model)?;
            all.extend_from_slice(&out);
        }
        Ok(all)
    }
}
