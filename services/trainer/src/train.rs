//! One training run: history from Postgres, a logistic model fitted on a
//! blocking thread, exported to ONNX and checked through ONNX Runtime,
//! judged against the active model on the most recent games, stored, and
//! promoted or rejected.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use fantasy_db::Db;
use fantasy_features::{FEATURE_NAMES, FEATURE_SET, N_FEATURES};
use fantasy_inference::{Runtime, Scorer};
use fantasy_kafka::Producer;
use fantasy_messages::{ModelStatus, TrainingMetrics};
use fantasy_model::export::{ExportMeta, to_onnx};
use fantasy_model::{FitOptions, LogisticModel, Scores};
use fantasy_registry::{
    Experiments, ModelRecord, ModelStore, Registry, RegistryError, fetch_artifact,
};
use serde::Serialize;

use crate::config::{CALIBRATION_BUCKETS, GateMetric, TrainConfig};
use crate::reason::Reason;

/// The exported graph must give the fitted model's probabilities within
/// this (float32 arithmetic against float64).
pub const EXPORT_TOLERANCE: f64 = 1e-5;

/// Why a run did not produce a judged model.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("another training is running (in this process or another replica)")]
    Busy,
    #[error(
        "not enough history: {usable} finished games with usable features, TRAIN_MIN_GAMES is {needed}"
    )]
    NotEnoughData { usable: usize, needed: u32 },
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

/// What the gate decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Promoted,
    Rejected,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promoted => "promoted",
            Decision::Rejected => "rejected",
        }
    }
}

/// Scores on the held-out games.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HoldoutScores {
    pub count: u64,
    pub accuracy: f64,
    pub brier: f64,
    pub log_loss: f64,
}

impl From<&Scores> for HoldoutScores {
    fn from(s: &Scores) -> Self {
        Self {
            count: s.count,
            accuracy: s.accuracy,
            brier: s.brier,
            log_loss: s.log_loss,
        }
    }
}

impl HoldoutScores {
    fn get(&self, metric: GateMetric) -> f64 {
        match metric {
            GateMetric::LogLoss => self.log_loss,
            GateMetric::Brier => self.brier,
        }
    }
}

/// The active model as the gate saw it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ActiveJudged {
    pub version: String,
    /// `None` when it cannot be scored on these features (another feature
    /// set or width): the candidate then replaces it.
    pub scores: Option<HoldoutScores>,
}

/// What one run did.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RunReport {
    pub run_id: i64,
    pub reason: Reason,
    pub version: String,
    pub decision: Decision,
    pub gate_metric: &'static str,
    pub candidate: HoldoutScores,
    pub active: Option<ActiveJudged>,
    pub n_train: u64,
    pub n_holdout: u64,
    /// History rows left out (NaN features, wrong width).
    pub skipped_rows: u64,
    /// Largest difference between the exported graph and the fitted model.
    pub export_max_diff: f64,
    pub artifact_uri: String,
    pub sha256: String,
    pub seconds: f64,
}

/// Finished games with usable features, oldest first.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Row-major, `N_FEATURES` per row.
    pub x: Vec<f32>,
    pub y: Vec<bool>,
    pub skipped: u64,
}

impl History {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Adds a row if it is usable; counts it otherwise.
    pub fn push(&mut self, features: &[Option<f32>], home_win: bool) {
        let usable =
            features.len() == N_FEATURES && features.iter().all(|f| f.is_some_and(f32::is_finite));
        if !usable {
            self.skipped += 1;
            let reason = if features.len() == N_FEATURES {
                "not_finite"
            } else {
                "width"
            };
            metrics::counter!("trainer_history_rows_skipped_total", "reason" => reason)
                .increment(1);
            return;
        }
        self.x
            .extend(features.iter().map(|f| f.unwrap_or_default()));
        self.y.push(home_win);
    }
}

/// The most recent `window` finished games of `FEATURE_SET`, oldest first.
pub async fn load_history(db: &Db, window: u32) -> anyhow::Result<History> {
    let rows: Vec<(Vec<Option<f32>>, bool)> = sqlx::query_as(
        "SELECT g.features, o.home_win
         FROM games g JOIN outcomes o USING (game_id)
         WHERE g.feature_set = $1
         ORDER BY g.scheduled_at DESC, g.game_id DESC
         LIMIT $2",
    )
    .bind(FEATURE_SET)
    .bind(i64::from(window))
    .fetch_all(db.pool())
    .await
    .context("reading the training history")?;
    let mut history = History::default();
    for (features, home_win) in rows.iter().rev() {
        history.push(features, *home_win);
    }
    Ok(history)
}

/// The fitted, exported and judged candidate.
#[derive(Debug)]
pub struct Judged {
    pub bytes: Vec<u8>,
    pub model: LogisticModel,
    pub candidate: HoldoutScores,
    pub active: Option<HoldoutScores>,
    pub n_train: u64,
    pub n_holdout: u64,
    pub export_max_diff: f64,
}

/// Splits `history` in time (the most recent `holdout` share held out),
/// fits on the rest, exports, and scores the export and the active model
/// (its ONNX bytes) on the held-out games through ONNX Runtime. CPU-bound:
/// call it on a blocking thread.
pub fn fit_and_judge(
    runtime: &Runtime,
    history: &History,
    cfg: &TrainConfig,
    meta: &mut ExportMeta,
    active: Option<&[u8]>,
) -> anyhow::Result<Judged> {
    let n = history.len();
    let n_holdout = ((n as f64 * cfg.holdout).round() as usize).clamp(1, n.saturating_sub(2));
    let n_train = n - n_holdout;
    let split = n_train * N_FEATURES;
    let (x_train, x_hold) = history.x.split_at(split);
    let (y_train, y_hold) = history.y.split_at(n_train);
    let model = LogisticModel::fit(
        x_train,
        y_train,
        N_FEATURES,
        &FitOptions {
            l2: cfg.l2,
            ..FitOptions::default()
        },
    )
    .context("fitting the model")?;
    let ours = model.predict_all(x_hold);
    let own = Scores::of(
        ours.iter().copied().zip(y_hold.iter().copied()),
        CALIBRATION_BUCKETS,
    )
    .context("no held-out games to score")?;
    let metrics = TrainingMetrics {
        n_train: n_train as u64,
        n_holdout: n_holdout as u64,
        log_loss: own.log_loss,
        brier: own.brier,
        accuracy: own.accuracy,
    };
    meta.extra.push((
        "training_metrics".into(),
        serde_json::to_string(&metrics).context("training metrics as JSON")?,
    ));
    meta.extra.push((
        "model_params".into(),
        serde_json::to_string(&model).context("model parameters as JSON")?,
    ));
    let bytes = to_onnx(&model, meta).context("exporting to ONNX")?;

    let mut scorer = Scorer::new(runtime, &bytes).context("ONNX Runtime refuses the export")?;
    let onnx = scorer.predict(x_hold).context("running the export")?;
    let export_max_diff = onnx
        .iter()
        .zip(&ours)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    anyhow::ensure!(
        export_max_diff < EXPORT_TOLERANCE,
        "the exported graph differs from the fitted model by {export_max_diff} (tolerance {EXPORT_TOLERANCE})"
    );
    let candidate = score_f32(&onnx, y_hold).context("scoring the candidate")?;

    let active = match active {
        None => None,
        Some(bytes) => {
            let mut scorer = Scorer::new(runtime, bytes).context("loading the active model")?;
            let spec = scorer.spec();
            let comparable = spec.n_features == N_FEATURES
                && spec.feature_set.as_deref().is_none_or(|f| f == FEATURE_SET);
            if comparable {
                let p = scorer.predict(x_hold).context("running the active model")?;
                Some(score_f32(&p, y_hold).context("scoring the active model")?)
            } else {
                tracing::warn!(
                    n_features = spec.n_features,
                    feature_set = ?spec.feature_set,
                    "the active model does not read {FEATURE_SET}: it cannot be compared, the candidate replaces it"
                );
                None
            }
        }
    };
    Ok(Judged {
        bytes,
        model,
        candidate,
        active,
        n_train: n_train as u64,
        n_holdout: n_holdout as u64,
        export_max_diff,
    })
}

fn score_f32(p: &[f32], y: &[bool]) -> Option<HoldoutScores> {
    Scores::of(
        p.iter().map(|v| f64::from(*v)).zip(y.iter().copied()),
        CALIBRATION_BUCKETS,
    )
    .map(|s| HoldoutScores::from(&s))
}

/// Promote when there is nothing to beat, or when the candidate beats it by
/// the margin.
pub fn decide(
    candidate: &HoldoutScores,
    active: Option<&HoldoutScores>,
    metric: GateMetric,
    margin: f64,
) -> Decision {
    match active {
        None => Decision::Promoted,
        Some(a) if candidate.get(metric) <= a.get(metric) - margin => Decision::Promoted,
        Some(_) => Decision::Rejected,
    }
}

/// A new version name: UTC time to the millisecond (sortable, unique while
/// one trainer runs at a time).
pub fn new_version(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// The advisory lock key of a model's trainings (FNV-1a of its name).
fn lock_key(model_name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "fantasy-trainer:".bytes().chain(model_name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// `trainer_active_model_info{model,version}`: 1 for the version this
/// process last made active, 0 for the one it replaced (an info gauge that
/// stayed 1 for every version ever promoted would not say which is active).
fn report_active(model: &str, version: &str) {
    static REPORTED: std::sync::Mutex<BTreeMap<String, String>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(old) = reported.insert(model.to_owned(), version.to_owned())
        && old != version
    {
        metrics::gauge!("trainer_active_model_info", "model" => model.to_owned(), "version" => old)
            .set(0.0);
    }
    metrics::gauge!("trainer_active_model_info", "model" => model.to_owned(),
        "version" => version.to_owned())
    .set(1.0);
}

/// Trains, judges, stores and announces models.
#[derive(Debug)]
pub struct Trainer {
    pub db: Db,
    pub registry: Registry,
    pub store: ModelStore,
    pub producer: Producer,
    pub runtime: &'static Runtime,
    pub model_name: String,
    pub cfg: TrainConfig,
}

/// One training run as `training_runs` holds it (`GET /v1/runs`).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunRow {
    pub id: i64,
    pub trigger: String,
    pub status: String,
    pub candidate_version: Option<String>,
    /// The run's report, or why it failed.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Trainer {
    pub async fn has_active(&self) -> anyhow::Result<bool> {
        Ok(self.registry.active(&self.model_name).await?.is_some())
    }

    /// One run, under the model's advisory lock.
    #[tracing::instrument(name = "trainer.run", skip_all, fields(reason = ?reason))]
    pub async fn run(&self, reason: Reason, detail: &str) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .context("connecting for the training lock")?;
        let key = lock_key(&self.model_name);
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .context("taking the training lock")?;
        if !locked {
            return Err(RunError::Busy);
        }
        let result = self.run_locked(reason, detail, started).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await;
        if let Err(e) = unlocked {
            // Closing the session releases the lock.
            tracing::warn!("releasing the training lock: {e}; closing its connection");
            drop(conn.detach());
        }
        let result_label = match &result {
            Ok(r) => r.decision.as_str(),
            Err(RunError::NotEnoughData { .. }) => "not_enough_data",
            Err(RunError::Busy) => "busy",
            Err(RunError::Failed(_)) => "failed",
        };
        metrics::counter!("trainer_training_runs_total",
            "reason" => reason.as_str(), "result" => result_label)
        .increment(1);
        result
    }

    async fn run_locked(
        &self,
        reason: Reason,
        detail: &str,
        started: Instant,
    ) -> Result<RunReport, RunError> {
        let history = load_history(&self.db, self.cfg.window).await?;
        if history.len() < self.cfg.min_games as usize {
            return Err(RunError::NotEnoughData {
                usable: history.len(),
                needed: self.cfg.min_games,
            });
        }
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO training_runs (model_name, trigger, status, details)
             VALUES ($1, $2, 'running', $3) RETURNING id",
        )
        .bind(&self.model_name)
        .bind(reason.as_str())
        .bind(serde_json::json!({ "detail": detail }))
        .fetch_one(self.db.pool())
        .await
        .context("recording the training run")?;
        tracing::info!(
            run_id,
            reason = reason.as_str(),
            detail,
            games = history.len(),
            "training"
        );
        match self.train_and_judge(run_id, reason, history, started).await {
            Ok(report) => {
                self.finish_run(
                    run_id,
                    report.decision.as_str(),
                    Some(&report.version),
                    serde_json::json!({ "detail": detail, "report": &report }),
                )
                .await?;
                Ok(report)
            }
            Err(e) => {
                let _ = self
                    .finish_run(
                        run_id,
                        "failed",
                        None,
                        serde_json::json!({ "detail": detail, "error": format!("{e:#}") }),
                    )
                    .await;
                Err(RunError::Failed(e))
            }
        }
    }

    async fn finish_run(
        &self,
        run_id: i64,
        status: &str,
        version: Option<&str>,
        details: serde_json::Value,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE training_runs SET status = $2, candidate_version = $3, details = $4,
                    finished_at = now()
             WHERE id = $1",
        )
        .bind(run_id)
        .bind(status)
        .bind(version)
        .bind(details)
        .execute(self.db.pool())
        .await
        .context("recording the end of the training run")?;
        Ok(())
    }

    async fn train_and_judge(
        &self,
        run_id: i64,
        reason: Reason,
        history: History,
        started: Instant,
    ) -> anyhow::Result<RunReport> {
        let active = self.registry.active(&self.model_name).await?;
        let active_bytes = match &active {
            Some(a) => Some(
                fetch_artifact(&a.artifact_uri, &a.sha256)
                    .await
                    .with_context(|| format!("reading the active model {}", a.version))?,
            ),
            None => None,
        };
        let trained_at = Utc::now();
        let version = new_version(trained_at);
        let mut meta = ExportMeta {
            model_name: self.model_name.clone(),
            version: version.clone(),
            feature_set: FEATURE_SET.to_owned(),
            feature_names: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            trained_at: trained_at.to_rfc3339(),
            extra: vec![("trigger".into(), reason.as_str().into())],
        };
        let (runtime, cfg) = (self.runtime, self.cfg.clone());
        let skipped = history.skipped;
        let judged = tokio::task::spawn_blocking(move || {
            fit_and_judge(runtime, &history, &cfg, &mut meta, active_bytes.as_deref())
        })
        .await
        .context("the training thread panicked")??;

        let decision = decide(
            &judged.candidate,
            judged.active.as_ref(),
            self.cfg.gate_metric,
            self.cfg.promote_margin,
        );
        let (uri, sha256) = self
            .store
            .put(&self.model_name, &version, judged.bytes)
            .await
            .context("storing the artifact")?;
        let record = ModelRecord {
            model_name: self.model_name.clone(),
            version: version.clone(),
            artifact_uri: uri.clone(),
            sha256: sha256.clone(),
            feature_set: FEATURE_SET.to_owned(),
            n_features: N_FEATURES as u32,
            status: ModelStatus::Candidate,
            metrics: TrainingMetrics {
                n_train: judged.n_train,
                n_holdout: judged.n_holdout,
                log_loss: judged.candidate.log_loss,
                brier: judged.candidate.brier,
                accuracy: judged.candidate.accuracy,
            },
            created_at: trained_at,
            activated_at: None,
        };
        self.registry.insert(&record).await?;
        let report = RunReport {
            run_id,
            reason,
            version: version.clone(),
            decision,
            gate_metric: self.cfg.gate_metric.as_str(),
            candidate: judged.candidate,
            active: active.map(|a| ActiveJudged {
                version: a.version,
                scores: judged.active,
            }),
            n_train: judged.n_train,
            n_holdout: judged.n_holdout,
            skipped_rows: skipped,
            export_max_diff: judged.export_max_diff,
            artifact_uri: uri,
            sha256,
            seconds: started.elapsed().as_secs_f64(),
        };
        metrics::histogram!("trainer_training_duration_seconds").record(report.seconds);
        match decision {
            Decision::Promoted => {
                self.promote(&version).await?;
            }
            Decision::Rejected => {
                self.registry
                    .set_status(&self.model_name, &version, ModelStatus::Rejected)
                    .await?;
                tracing::info!(%version, candidate = ?report.candidate, active = ?report.active,
                    "candidate rejected: not better than the active model by the margin");
            }
        }
        Ok(report)
    }

    /// Makes `version` active and announces it on `models`. A live
    /// experiment, whose champion this replaces, ends (`stopped`).
    pub async fn promote(&self, version: &str) -> Result<ModelRecord, RegistryError> {
        let record = self.registry.activate(&self.model_name, version).await?;
        self.end_experiment(&record.version).await?;
        self.announce(&record).await?;
        tracing::info!(%version, "model promoted and announced");
        Ok(record)
    }

    /// Re-activates the version active before the current one, and
    /// announces it.
    pub async fn rollback(&self) -> Result<ModelRecord, RegistryError> {
        let record = self.registry.rollback(&self.model_name).await?;
        self.end_experiment(&record.version).await?;
        self.announce(&record).await?;
        tracing::info!(version = %record.version, "rolled back and announced");
        Ok(record)
    }

    /// The last training runs, newest first.
    pub async fn recent_runs(&self, limit: i64) -> anyhow::Result<Vec<RunRow>> {
        sqlx::query_as(
            "SELECT id, trigger, status, candidate_version, details, started_at, finished_at
             FROM training_runs WHERE model_name = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(&self.model_name)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await
        .context("reading the training runs")
    }

    /// Ends the live experiment, if any: its champion was just replaced.
    async fn end_experiment(&self, new_active: &str) -> anyhow::Result<()> {
        let ended = Experiments::new(self.db.clone())
            .end_superseded(&self.model_name, "trainer", new_active)
            .await?;
        if let Some(id) = ended {
            tracing::warn!(experiment = id, %new_active, "the champion was replaced: experiment stopped");
        }
        Ok(())
    }

    /// Announces the active version again: every predictor re-reads the
    /// registry (its active version and its experiment).
    pub async fn wake_predictors(&self) -> anyhow::Result<()> {
        match self.registry.active(&self.model_name).await? {
            Some(record) => self.announce(&record).await,
            None => Ok(()),
        }
    }

    /// Publishes `record` on `models`.
    pub async fn announce(&self, record: &ModelRecord) -> anyhow::Result<()> {
        self.producer
            .publish(&record.to_published())
            .await
            .with_context(|| {
                format!(
                    "{} is active in the registry but its announcement on `models` failed; \
                     POST /v1/models/{}/promote announces it again",
                    record.version, record.version
                )
            })?;
        report_active(&self.model_name, &record.version);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(log_loss: f64) -> HoldoutScores {
        HoldoutScores {
            count: 10,
            accuracy: 0.6,
            brier: log_loss / 3.0,
            log_loss,
        }
    }

    #[test]
    fn the_gate_wants_the_margin() {
        let m = GateMetric::LogLoss;
        assert_eq!(decide(&s(0.60), None, m, 0.01), Decision::Promoted);
        assert_eq!(
            decide(&s(0.60), Some(&s(0.62)), m, 0.01),
            Decision::Promoted
        );
        assert_eq!(
            decide(&s(0.615), Some(&s(0.62)), m, 0.01),
            Decision::Rejected
        );
        assert_eq!(decide(&s(0.70), Some(&s(0.62)), m, 0.0), Decision::Rejected);
    }

    #[test]
    fn history_skips_nan_and_wrong_width_rows() {
        let mut h = History::default();
        h.push(&[Some(0.5); N_FEATURES], true);
        let mut nan = [Some(0.5); N_FEATURES];
        nan[3] = Some(f32::NAN);
        h.push(&nan, false);
        let mut null = [Some(0.5); N_FEATURES];
        null[0] = None;
        h.push(&null, false);
        h.push(&[Some(0.5); 3], false);
        assert_eq!(h.len(), 1);
        assert_eq!(h.skipped, 3);
        assert_eq!(h.x.len(), N_FEATURES);
    }

    #[test]
    fn versions_sort_by_time() {
        let a = new_version(DateTime::from_timestamp(1_800_000_000, 5_000_000).unwrap_or_default());
        let b = new_version(DateTime::from_timestamp(1_800_000_001, 0).unwrap_or_default());
        assert!(a < b, "{a} {b}");
        assert_eq!(a, "20270115T080000.005Z");
    }
}
