//! The model being served, swappable without dropping a request.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::{Batcher, ModelInfo, PredictError};

/// Holds the current [`Batcher`]. A request takes the current one and keeps
/// it until answered; [`Engine::swap`] only changes what the *next* request
/// takes. The old model's queue drains and its threads exit once its last
/// request is answered, so a swap fails no request.
#[derive(Debug, Default)]
pub struct Engine {
    current: ArcSwapOption<Batcher>,
}

impl Engine {
    /// An engine with no model yet (requests get [`PredictError::NoModel`]).
    pub fn empty() -> Self {
        Self::default()
    }

    /// An engine serving `batcher`.
    pub fn new(batcher: Batcher) -> Self {
        let engine = Self::default();
        engine.swap(batcher);
        engine
    }

    /// The model now serving.
    pub fn current(&self) -> Option<Arc<Batcher>> {
        self.current.load_full()
    }

    /// What the model now serving is.
    pub fn info(&self) -> Option<Arc<ModelInfo>> {
        self.current.load().as_ref().map(|b| Arc::clone(b.info()))
    }

    /// Serves `batcher` from now on; returns the model it replaced.
    pub fn swap(&self, batcher: Batcher) -> Option<Arc<Batcher>> {
        let info = Arc::clone(batcher.info());
        let old = self.current.swap(Some(Arc::new(batcher)));
        tracing::info!(
            version = %info.version,
            previous = old.as_ref().map(|b| b.info().version.as_str()).unwrap_or("none"),
            "now serving model"
        );
        metrics::counter!("inference_model_swaps_total").increment(1);
        // An info-style gauge: 1 for the version serving, 0 for the one before.
        if let Some(old) = &old {
            let i = old.info();
            metrics::gauge!("inference_model_info", "version" => i.version.clone(), "device" => i.device.clone())
                .set(0.0);
        }
        metrics::gauge!("inference_model_info", "version" => info.version.clone(), "device" => info.device.clone())
            .set(1.0);
        old
    }

    /// Predicts with the model now serving; says which model answered.
    pub async fn predict(
        &self,
        features: Vec<f32>,
        rows: usize,
    ) -> Result<(Vec<f32>, Arc<ModelInfo>), PredictError> {
        let batcher = self.current().ok_or(PredictError::NoModel)?;
        let probs = batcher.predict(features, rows).await?;
        Ok((probs, Arc::clone(batcher.info())))
    }
}
