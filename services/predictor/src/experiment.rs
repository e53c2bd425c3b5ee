//! The running experiment as this replica serves it (docs/experiments.md):
//! every version of it loaded, which variant serves a game, and the shadow
//! worker that scores what is not served, off the serving path.
//!
//! The registry holds the experiment; a `models` announcement wakes
//! [`crate::models::Models::sync`], which reads it and swaps in a [`Live`]
//! (the experiment and its loaded versions) here. A game's variant is
//! [`Experiment::assign`]: a hash of the experiment's id and the game's, so
//! every replica serves a game from the same variant without talking to
//! the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use fantasy_inference::{Batcher, Engine};
use fantasy_registry::experiments::{Mode, Role, Status, VariantPrediction};
use fantasy_registry::{Experiment, Experiments};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An experiment with its versions loaded, by variant name (the
/// champion's is the engine's model when the experiment was loaded; what
/// serves a champion's game is always the engine's).
#[derive(Debug)]
pub struct Live {
    pub experiment: Experiment,
    pub models: HashMap<String, Arc<Batcher>>,
    /// Each variant's artifact size.
    pub bytes: HashMap<String, u64>,
}

/// Who answers a game: the model and, in an experiment, the variant.
#[derive(Clone, Debug)]
pub struct Pick {
    pub batcher: Arc<Batcher>,
    pub variant: Option<String>,
    /// Whether clients are told the variant: not in a shadow experiment,
    /// where everything served is the champion's, as without one.
    pub shown: bool,
}

impl Pick {
    /// `batcher` answering outside any experiment.
    pub fn alone(batcher: Arc<Batcher>) -> Self {
        Self {
            batcher,
            variant: None,
            shown: false,
        }
    }

    /// The variant as clients see it.
    pub fn public_variant(&self) -> Option<String> {
        self.variant.clone().filter(|_| self.shown)
    }
}

/// The experiment this replica serves, if any, and why the last one could
/// not be loaded.
#[derive(Debug, Default)]
pub struct ExperimentState {
    live: ArcSwapOption<Live>,
    refused: Mutex<Option<String>>,
}

/// What `GET /v1/experiment` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServingView {
    /// The experiment being served; null when none (or none could be).
    #[schema(value_type = Option<Object>)]
    pub experiment: Option<Experiment>,
    /// The versions loaded for it, by variant.
    pub loaded: Vec<LoadedVariant>,
    /// Why the registry's live experiment is not served, if it is not.
    pub refused: Option<String>,
}

/// A loaded variant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoadedVariant {
    pub variant: String,
    pub version: String,
    pub artifact_bytes: u64,
}

impl ExperimentState {
    pub fn live(&self) -> Option<Arc<Live>> {
        self.live.load_full()
    }

    /// Serves `live` from now on (or nothing); clears the refusal.
    pub fn set(&self, live: Option<Live>) {
        let before = self.live.load().as_ref().map(|l| l.experiment.id);
        let after = live.as_ref().map(|l| l.experiment.id);
        if let Some(l) = &live {
            report(l);
        }
        if let Some(old) = self.live.swap(live.map(Arc::new))
            && after != Some(old.experiment.id)
        {
            unreport(&old);
        }
        if before != after {
            tracing::info!(?before, ?after, "experiment served");
        }
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Serves no experiment, because the registry's could not be loaded.
    pub fn refuse(&self, why: String) {
        if let Some(old) = self.live.swap(None) {
            unreport(&old);
        }
        metrics::counter!("predictor_experiment_refused_total").increment(1);
        tracing::error!("not serving the experiment: {why}");
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// The view for `GET /v1/experiment`.
    pub fn view(&self) -> ServingView {
        let live = self.live();
        ServingView {
            loaded: live.as_ref().map_or_else(Vec::new, |l| {
                let mut v: Vec<LoadedVariant> = l
                    .models
                    .iter()
                    .map(|(name, b)| LoadedVariant {
                        variant: name.clone(),
                        version: b.info().version.clone(),
                        artifact_bytes: l.bytes.get(name).copied().unwrap_or(0),
                    })
                    .collect();
                v.sort_by(|a, b| a.variant.cmp(&b.variant));
                v
            }),
            experiment: live.map(|l| l.experiment.clone()),
            refused: self
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Who answers `game_id` (none: a request that names no game is the
    /// champion's). `None` when no model is loaded.
    pub fn pick(&self, engine: &Engine, game_id: Option<&str>) -> Option<Pick> {
        let champion = engine.current()?;
        let (Some(live), Some(game_id)) = (self.live.load_full(), game_id) else {
            return Some(Pick::alone(champion));
        };
        Some(live.pick(champion, game_id))
    }
}

impl Live {
    /// Whether `champion` is the champion this experiment was made
    /// against (while a new active version is being swapped in, it is not:
    /// the champion then serves alone).
    fn is_champion(&self, champion: &Batcher) -> bool {
        self.experiment
            .champion()
            .is_some_and(|c| c.version == champion.info().version)
    }

    /// The variant that serves `game_id`, with its model.
    pub fn pick(&self, champion: Arc<Batcher>, game_id: &str) -> Pick {
        if !self.is_champion(&champion) {
            return Pick::alone(champion);
        }
        let Some(v) = self.experiment.assign(game_id) else {
            return Pick::alone(champion);
        };
        let batcher = match v.role {
            Role::Challenger => self.models.get(&v.name).map(Arc::clone),
            _ => None,
        };
        let (batcher, name) = match batcher {
            Some(b) => (b, v.name.clone()),
            None => (
                champion,
                self.experiment
                    .champion()
                    .map_or_else(|| "champion".into(), |c| c.name.clone()),
            ),
        };
        Pick {
            batcher,
            variant: Some(name),
            shown: self.experiment.mode != Mode::Shadow,
        }
    }

    /// Whether it scores anything off the serving path now.
    pub fn scoring(&self) -> bool {
        self.experiment.status == Status::Running
    }

    /// Whether it has shadows to score REST requests with.
    pub fn has_shadows(&self) -> bool {
        self.experiment
            .variants
            .iter()
            .any(|v| v.role == Role::Shadow && !v.dropped)
    }
}

/// `predictor_experiment_variant_info{experiment,variant,version,role}`:
/// each variant's weight while served.
fn report(l: &Live) {
    for v in &l.experiment.variants {
        metrics::gauge!("predictor_experiment_variant_info",
            "experiment" => l.experiment.id.to_string(), "variant" => v.name.clone(),
            "version" => v.version.clone(), "role" => v.role.as_str())
        .set(if v.dropped { 0.0 } else { v.weight });
    }
}

fn unreport(l: &Live) {
    for v in &l.experiment.variants {
        metrics::gauge!("predictor_experiment_variant_info",
            "experiment" => l.experiment.id.to_string(), "variant" => v.name.clone(),
            "version" => v.version.clone(), "role" => v.role.as_str())
        .set(0.0);
    }
}

/// A prediction served by a variant (`predictor_variant_predictions_total`).
pub fn count_served(variant: Option<&str>, path: &'static str, n: u64) {
    let variant = variant.unwrap_or("none").to_owned();
    metrics::counter!("predictor_variant_predictions_total", "variant" => variant, "path" => path)
        .increment(n);
}

/// Work for the shadow worker.
#[derive(Debug)]
pub enum ShadowJob {
    /// A REST request's rows, for the experiment's shadows.
    Rest {
        live: Arc<Live>,
        features: Vec<f32>,
        rows: usize,
    },
    /// A stream batch's games, for every variant but the one that served
    /// each: stored as the experiment's unserved predictions.
    Stream {
        live: Arc<Live>,
        /// (game id, features, the variant that served it).
        games: Vec<(String, Vec<f32>, String)>,
        predicted_at: DateTime<Utc>,
    },
}

/// The shadow queue's sending side: never waits; a full queue sheds the
/// job and counts it.
#[derive(Clone, Debug)]
pub struct Shadow {
    tx: mpsc::Sender<ShadowJob>,
}

impl Shadow {
    pub fn offer(&self, job: ShadowJob) {
        let source = match &job {
            ShadowJob::Rest { .. } => "rest",
            ShadowJob::Stream { .. } => "stream",
        };
        if self.tx.try_send(job).is_err() {
            metrics::counter!("predictor_shadow_shed_total", "source" => source).increment(1);
        }
    }
}

/// The shadow worker's queue: a [`Shadow`] to offer jobs, a
/// [`ShadowWorker`] to run them. The queue holds `capacity` jobs.
pub fn shadow_queue(capacity: usize, store: Experiments) -> (Shadow, ShadowWorker) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Shadow { tx }, ShadowWorker { rx, store })
}

/// Scores queued jobs one at a time with the models that did not serve
/// them, and stores the stream's in `experiment_predictions`.
#[derive(Debug)]
pub struct ShadowWorker {
    rx: mpsc::Receiver<ShadowJob>,
    store: Experiments,
}

/// Most jobs the worker takes from its queue at once: REST requests among
/// them are scored together, in one batch per shadow.
const TAKE: usize = 1024;

/// How long the worker lets jobs gather after the first: one wake-up and
/// one batch per shadow for every request of that time, instead of one per
/// request, so the shadows cost the serving threads next to nothing.
const GATHER: Duration = Duration::from_millis(50);

impl ShadowWorker {
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut jobs = Vec::with_capacity(TAKE);
        loop {
            jobs.clear();
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                n = self.rx.recv_many(&mut jobs, TAKE) => if n == 0 {
                    return Ok(());
                },
            }
            if jobs.len() < TAKE {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(GATHER) => {}
                }
                while jobs.len() < TAKE
                    && let Ok(job) = self.rx.try_recv()
                {
                    jobs.push(job);
                }
            }
            metrics::gauge!("predictor_shadow_queue_depth").set(self.rx.len() as f64);
            let started = Instant::now();
            // REST rows of one experiment, together.
            let mut rest: Option<(Arc<Live>, Vec<f32>, usize)> = None;
            for job in jobs.drain(..) {
                match job {
                    ShadowJob::Rest {
                        live,
                        features,
                        rows,
                    } => match &mut rest {
                        Some((l, f, n)) if Arc::ptr_eq(l, &live) => {
                            f.extend_from_slice(&features);
                            *n += rows;
                        }
                        _ => {
                            if let Some((l, f, n)) = rest.replace((live, features, rows)) {
                                score_rest(&l, f, n).await;
                            }
                        }
                    },
                    ShadowJob::Stream {
                        live,
                        games,
                        predicted_at,
                    } => {
                        let rows = score_stream(&live, &games, predicted_at).await;
                        store_rows(&self.store, &rows, &stop).await;
                    }
                }
            }
            if let Some((l, f, n)) = rest {
                score_rest(&l, f, n).await;
            }
            metrics::histogram!("predictor_shadow_job_seconds")
                .record(started.elapsed().as_secs_f64());
        }
    }
}

async fn score_rest(live: &Live, features: Vec<f32>, rows: usize) {
    for v in &live.experiment.variants {
        if v.role != Role::Shadow || v.dropped {
            continue;
        }
        let Some(b) = live.models.get(&v.name) else {
            continue;
        };
        match b.predict(features.clone(), rows).await {
            Ok(_) => metrics::counter!("predictor_shadow_predictions_total",
                "variant" => v.name.clone(), "source" => "rest")
            .increment(rows as u64),
            Err(e) => {
                metrics::counter!("predictor_shadow_failures_total", "variant" => v.name.clone())
                    .increment(1);
                tracing::debug!(variant = %v.name, "shadow prediction failed: {e}");
            }
        }
    }
}

/// Every variant's prediction of each game it did not serve.
async fn score_stream(
    live: &Live,
    games: &[(String, Vec<f32>, String)],
    predicted_at: DateTime<Utc>,
) -> Vec<VariantPrediction> {
    let mut out = Vec::new();
    for v in &live.experiment.variants {
        if v.dropped {
            continue;
        }
        let Some(batcher) = live.models.get(&v.name) else {
            continue;
        };
        let todo: Vec<&(String, Vec<f32>, String)> =
            games.iter().filter(|g| g.2 != v.name).collect();
        if todo.is_empty() {
            continue;
        }
        let rows: Vec<f32> = todo.iter().flat_map(|g| g.1.iter().copied()).collect();
        match batcher.predict(rows, todo.len()).await {
            Ok(probs) => {
                metrics::counter!("predictor_shadow_predictions_total",
                    "variant" => v.name.clone(), "source" => "stream")
                .increment(todo.len() as u64);
                out.extend(todo.iter().zip(probs).map(|(g, p)| VariantPrediction {
                    experiment_id: live.experiment.id,
                    game_id: g.0.clone(),
                    variant: v.name.clone(),
                    model_version: v.version.clone(),
                    home_win_prob: p,
                    served: false,
                    predicted_at,
                }));
            }
            Err(e) => {
                metrics::counter!("predictor_shadow_failures_total", "variant" => v.name.clone())
                    .increment(todo.len() as u64);
                tracing::warn!(variant = %v.name, "shadow scoring failed: {e}");
            }
        }
    }
    out
}

/// Stores the rows, trying three times; what still fails is counted and
/// left out (the games lose their pair: the test judges fewer games, never
/// wrong ones).
async fn store_rows(store: &Experiments, rows: &[VariantPrediction], stop: &CancellationToken) {
    if rows.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=3 {
        match store.upsert_predictions(rows).await {
            Ok(_) => return,
            Err(e) if attempt == 3 => {
                metrics::counter!("predictor_shadow_shed_total", "source" => "store").increment(1);
                tracing::warn!(
                    rows = rows.len(),
                    "storing shadow predictions failed: {e:#}"
                );
            }
            Err(e) => {
                tracing::debug!("storing shadow predictions: {e:#}; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay *= 2;
            }
        }
    }
}
