//! Where models come from: a file, the registry, and `models` events.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use fantasy_inference::{Batcher, BatcherConfig, Engine, Runtime};
use fantasy_kafka::{Handler, Record};
use fantasy_messages::ModelPublished;
use fantasy_registry::{Registry, StoreError, fetch_artifact};

/// Loads a model off the async threads (session creation and the probe run
/// take milliseconds to seconds).
pub async fn load(
    runtime: &'static Runtime,
    bytes: Vec<u8>,
    source: String,
    version: Option<String>,
    cfg: BatcherConfig,
) -> anyhow::Result<Batcher> {
    tokio::task::spawn_blocking(move || Batcher::load(runtime, &bytes, &source, version, &cfg))
        .await
        .context("the model loading task panicked")?
        .map_err(Into::into)
}

/// The model of `MODEL_PATH`.
pub async fn from_file(
    runtime: &'static Runtime,
    path: &Path,
    cfg: &BatcherConfig,
) -> anyhow::Result<Batcher> {
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("reading MODEL_PATH {}", path.display()))?;
    load(
        runtime,
        bytes,
        path.display().to_string(),
        None,
        cfg.clone(),
    )
    .await
    .with_context(|| format!("loading MODEL_PATH {}", path.display()))
}

/// The registry's active version of `model_name`, if there is one.
pub async fn from_registry(
    runtime: &'static Runtime,
    registry: &Registry,
    model_name: &str,
    cfg: &BatcherConfig,
) -> anyhow::Result<Option<Batcher>> {
    let Some(active) = registry.active(model_name).await? else {
        return Ok(None);
    };
    let bytes = fetch_artifact(&active.artifact_uri, &active.sha256).await?;
    let batcher = load(
        runtime,
        bytes,
        active.artifact_uri.clone(),
        Some(active.version.clone()),
        cfg.clone(),
    )
    .await
    .with_context(|| format!("loading {model_name} {}", active.version))?;
    Ok(Some(batcher))
}

/// Keeps the served model in step with the registry's active version.
///
/// An announcement on `models` is a wake-up call, not the truth: on each one
/// for our model, the handler reads the registry's active version and swaps
/// it in if it differs from the one serving. So a replay of the (compacted)
/// topic at start-up, a rollback, or announcements arriving out of order can
/// never leave an older version serving.
#[derive(Debug)]
pub struct ModelsHandler {
    pub runtime: &'static Runtime,
    pub engine: Arc<Engine>,
    pub registry: Registry,
    pub model_name: String,
    pub cfg: BatcherConfig,
    /// Versions refused already (by SHA-256), not tried again.
    pub refused: HashSet<String>,
}

fn reject(reason: &'static str) {
    metrics::counter!("predictor_model_rejected_total", "reason" => reason).increment(1);
}

impl Handler<ModelPublished> for ModelsHandler {
    async fn handle(&mut self, batch: &[Record<ModelPublished>]) -> anyhow::Result<()> {
        if !batch.iter().any(|r| r.value.model_name == self.model_name) {
            return Ok(());
        }
        // Registry errors fail the batch: it is retried, nothing is lost.
        let Some(active) = self.registry.active(&self.model_name).await? else {
            return Ok(());
        };
        if self
            .engine
            .info()
            .is_some_and(|i| i.sha256 == active.sha256 && i.version == active.version)
        {
            return Ok(());
        }
        if self.refused.contains(&active.sha256) {
            return Ok(());
        }
        let bytes = match fetch_artifact(&active.artifact_uri, &active.sha256).await {
            Ok(b) => b,
            // A file that is not what the registry recorded will not become
            // right by retrying: refuse it, keep serving the old model.
            Err(e @ (StoreError::Checksum { .. } | StoreError::BadUrl(..))) => {
                reject("artifact");
                self.refused.insert(active.sha256.clone());
                tracing::error!(version = %active.version, "refusing the announced model: {e}");
                return Ok(());
            }
            // The store is unreachable: retry the batch later.
            Err(e) => return Err(e.into()),
        };
        let loaded = load(
            self.runtime,
            bytes,
            active.artifact_uri.clone(),
            Some(active.version.clone()),
            self.cfg.clone(),
        )
        .await;
        match loaded {
            Ok(batcher) => {
                self.engine.swap(batcher);
                metrics::counter!("predictor_model_swaps_total").increment(1);
            }
            Err(e) => {
                reject("invalid");
                self.refused.insert(active.sha256.clone());
                tracing::error!(version = %active.version, "the announced model does not load; still serving the old one: {e:#}");
            }
        }
        Ok(())
    }
}
