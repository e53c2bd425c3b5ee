//! Where models come from: a file, the registry, and `models` events.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use fantasy_inference::{Batcher, BatcherConfig, Engine, Runtime};
use fantasy_kafka::{Handler, Record};
use fantasy_messages::ModelPublished;
use fantasy_registry::experiments::Role;
use fantasy_registry::{Experiments, ModelRecord, Registry, StoreError, fetch_artifact};

use crate::experiment::{ExperimentState, Live};

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

/// Keeps the served model, and the experiment, in step with the registry.
///
/// An announcement on `models` is a wake-up call, not the truth: on each one
/// for our model, [`Models::sync`] reads the registry's active version and
/// its live experiment and loads what differs from what is serving. So a
/// replay of the (compacted) topic at start-up, a rollback, or
/// announcements arriving out of order can never leave an older version
/// serving.
#[derive(Debug)]
pub struct Models {
    pub runtime: &'static Runtime,
    pub engine: Arc<Engine>,
    pub experiments: Arc<ExperimentState>,
    pub registry: Registry,
    pub store: Experiments,
    pub model_name: String,
    pub cfg: BatcherConfig,
    /// `EXPERIMENT_MAX_MODEL_BYTES`: the most artifact bytes an
    /// experiment may load besides the champion.
    pub max_experiment_bytes: u64,
    /// Versions refused already (by SHA-256), not tried again.
    pub refused: HashSet<String>,
}

/// The `models` consumer's handler: a wake-up for [`Models::sync`].
#[derive(Debug)]
pub struct ModelsHandler(pub Models);

fn reject(reason: &'static str) {
    metrics::counter!("predictor_model_rejected_total", "reason" => reason).increment(1);
}

impl Handler<ModelPublished> for ModelsHandler {
    async fn handle(&mut self, batch: &[Record<ModelPublished>]) -> anyhow::Result<()> {
        if !batch
            .iter()
            .any(|r| r.value.model_name == self.0.model_name)
        {
            return Ok(());
        }
        self.0.sync().await
    }
}

/// Why an artifact was not loaded.
enum Refusal {
    /// It will not become right by retrying (a checksum, a bad URI, a
    /// model that does not load).
    Final(String),
    /// The store or the registry failed: retry later.
    Retry(anyhow::Error),
}

impl Models {
    /// Brings the champion and the experiment in line with the registry.
    /// Registry and store errors fail it (the consumer retries the
    /// announcement, nothing is lost).
    pub async fn sync(&mut self) -> anyhow::Result<()> {
        self.sync_champion().await?;
        self.sync_experiment().await
    }

    async fn sync_champion(&mut self) -> anyhow::Result<()> {
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
        match self.load_record(&active).await {
            Ok((batcher, _)) => {
                self.engine.swap(batcher);
                metrics::counter!("predictor_model_swaps_total").increment(1);
                Ok(())
            }
            Err(Refusal::Final(why)) => {
                tracing::error!(version = %active.version, "refusing the announced model; still serving the old one: {why}");
                Ok(())
            }
            Err(Refusal::Retry(e)) => Err(e),
        }
    }

    /// Fetches and loads a registry version.
    async fn load_record(&mut self, record: &ModelRecord) -> Result<(Batcher, u64), Refusal> {
        if self.refused.contains(&record.sha256) {
            return Err(Refusal::Final(format!(
                "version {} was refused before",
                record.version
            )));
        }
        let bytes = match fetch_artifact(&record.artifact_uri, &record.sha256).await {
            Ok(b) => b,
            Err(e @ (StoreError::Checksum { .. } | StoreError::BadUrl(..))) => {
                reject("artifact");
                self.refused.insert(record.sha256.clone());
                return Err(Refusal::Final(e.to_string()));
            }
            Err(e) => return Err(Refusal::Retry(e.into())),
        };
        let size = bytes.len() as u64;
        let loaded = load(
            self.runtime,
            bytes,
            record.artifact_uri.clone(),
            Some(record.version.clone()),
            self.cfg.clone(),
        )
        .await;
        match loaded {
            Ok(b) => Ok((b, size)),
            Err(e) => {
                reject("invalid");
                self.refused.insert(record.sha256.clone());
                Err(Refusal::Final(format!("{e:#}")))
            }
        }
    }

    async fn sync_experiment(&mut self) -> anyhow::Result<()> {
        let Some(experiment) = self.store.live(&self.model_name).await? else {
            if self.experiments.live().is_some() {
                self.experiments.set(None);
            }
            return Ok(());
        };
        let Some(champion) = self.engine.current() else {
            self.experiments
                .refuse(format!("experiment {}: no champion loaded", experiment.id));
            return Ok(());
        };
        let wanted = experiment.champion().map(|c| c.version.clone());
        if wanted.as_deref() != Some(champion.info().version.as_str()) {
            self.experiments.refuse(format!(
                "experiment {} is against champion {}, but {} is serving",
                experiment.id,
                wanted.unwrap_or_default(),
                champion.info().version
            ));
            return Ok(());
        }
        // What is loaded already, by version.
        let mut have: HashMap<String, (Arc<Batcher>, u64)> = HashMap::new();
        if let Some(live) = self.experiments.live() {
            for (name, b) in &live.models {
                let size = live.bytes.get(name).copied().unwrap_or(0);
                have.insert(b.info().version.clone(), (Arc::clone(b), size));
            }
        }
        let mut models = HashMap::new();
        let mut bytes = HashMap::new();
        let mut total = 0u64;
        for v in &experiment.variants {
            if v.role == Role::Champion {
                models.insert(v.name.clone(), Arc::clone(&champion));
                continue;
            }
            if v.dropped {
                continue;
            }
            let (batcher, size) = match have.remove(&v.version) {
                Some(loaded) => loaded,
                None => {
                    let Some(record) = self.registry.get(&self.model_name, &v.version).await?
                    else {
                        self.experiments.refuse(format!(
                            "experiment {}: version {} is not in the registry",
                            experiment.id, v.version
                        ));
                        return Ok(());
                    };
                    match self.load_record(&record).await {
                        Ok((b, size)) => (Arc::new(b), size),
                        Err(Refusal::Final(why)) => {
                            self.experiments.refuse(format!(
                                "experiment {}: version {} ({}) does not load: {why}",
                                experiment.id, v.version, v.name
                            ));
                            return Ok(());
                        }
                        Err(Refusal::Retry(e)) => return Err(e),
                    }
                }
            };
            total += size;
            if total > self.max_experiment_bytes {
                self.experiments.refuse(format!(
                    "experiment {} needs more than {total} bytes of models besides the \
                     champion; EXPERIMENT_MAX_MODEL_BYTES is {}",
                    experiment.id, self.max_experiment_bytes
                ));
                return Ok(());
            }
            models.insert(v.name.clone(), batcher);
            bytes.insert(v.name.clone(), size);
        }
        self.experiments.set(Some(Live {
            experiment,
            models,
            bytes,
        }));
        Ok(())
    }
}
