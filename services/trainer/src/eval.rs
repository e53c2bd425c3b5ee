//! Rolling evaluation: predictions joined with outcomes in Postgres, scored
//! per model version over the most recent games.
//!
//! Both topics are upserted by natural key before anything is scored, and a
//! version's scores are computed from the stored rows, never accumulated in
//! memory: a redelivered batch changes no row and so no score.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use fantasy_db::Db;
use fantasy_kafka::{Handler, Producer, Record};
use fantasy_messages::{CalibrationBucket, ModelMetrics, Outcome, Prediction, SchemaVersion};
use fantasy_model::Scores;
use tokio::sync::mpsc;

use crate::config::{CALIBRATION_BUCKETS, Triggers};
use crate::control::Request;
use crate::reason::Reason;

/// The calibration table of `s` as messages carry it.
pub fn calibration_table(s: &Scores) -> Vec<CalibrationBucket> {
    s.calibration
        .iter()
        .map(|b| CalibrationBucket {
            lower: b.lower,
            upper: b.upper,
            count: b.count,
            mean_predicted: b.mean_predicted,
            observed_rate: b.observed_rate,
        })
        .collect()
}

/// Scores versions and tells the control loop when the active one drifts.
#[derive(Debug)]
pub struct Evaluator {
    pub db: Db,
    pub producer: Producer,
    pub model_name: String,
    pub window: u32,
    /// Stored evaluations older than this are purged (at most hourly).
    pub retention: std::time::Duration,
    pub purged_at: std::sync::Mutex<Option<Instant>>,
    pub triggers: Triggers,
    /// New outcomes since the last training started (the control loop
    /// resets it).
    pub new_outcomes: Arc<AtomicU64>,
    pub control: mpsc::Sender<Request>,
    /// Judges the live experiment after each batch of outcomes.
    pub judge: Option<Arc<crate::experiments::Judge>>,
}

impl Evaluator {
    /// Scores `version` on its most recent `window` finished games; `None`
    /// when none of its games has finished.
    pub async fn score(&self, version: &str) -> anyhow::Result<Option<ModelMetrics>> {
        // Walks the version's predictions newest first (index on
        // (model_version, predicted_at)) and stops after `window` finished.
        let rows: Vec<(f32, bool)> = sqlx::query_as(
            "SELECT p.home_win_prob, o.home_win
             FROM predictions p JOIN outcomes o USING (game_id)
             WHERE p.model_version = $1
             ORDER BY p.predicted_at DESC, p.game_id DESC
             LIMIT $2",
        )
        .bind(version)
        .bind(i64::from(self.window))
        .fetch_all(self.db.pool())
        .await
        .context("joining predictions with outcomes")?;
        let Some(s) = Scores::of(
            rows.into_iter().map(|(p, w)| (f64::from(p), w)),
            CALIBRATION_BUCKETS,
        ) else {
            return Ok(None);
        };
        Ok(Some(ModelMetrics {
            schema_version: SchemaVersion,
            model_name: self.model_name.clone(),
            model_version: version.to_owned(),
            window: self.window,
            count: s.count,
            accuracy: s.accuracy,
            brier: s.brier,
            log_loss: s.log_loss,
            calibration: calibration_table(&s),
            evaluated_at: Utc::now(),
        }))
    }

    /// Deletes stored evaluations past the retention, once an hour at most
    /// (one row per version per outcome batch adds up). A failure is logged:
    /// it only delays the clean-up.
    async fn purge_if_due(&self) {
        const EVERY: Duration = Duration::from_secs(3600);
        {
            let mut last = self
                .purged_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.db.purge_model_metrics(self.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "purged old model metrics"),
            Err(e) => tracing::warn!("purging old model metrics failed: {e:#}"),
        }
    }

    /// Scores each version, stores and announces the scores, updates the
    /// gauges, and asks for a retrain when the active version has drifted.
    async fn evaluate(&self, versions: &[String]) -> anyhow::Result<()> {
        if versions.is_empty() {
            return Ok(());
        }
        // The active version, the Brier it had on its held-out games and
        // on how many.
        let active: Option<(String, Option<f64>, Option<i64>)> = sqlx::query_as(
            "SELECT version, (metrics->>'brier')::float8, (metrics->>'n_holdout')::int8
             FROM models WHERE model_name = $1 AND status = 'active'",
        )
        .bind(&self.model_name)
        .fetch_optional(self.db.pool())
        .await
        .context("reading the active version")?;
        for version in versions {
            let Some(m) = self.score(version).await? else {
                continue;
            };
            self.db.insert_model_metrics(&m).await?;
            self.producer
                .publish(&m)
                .await
                .context("publishing model metrics")?;
            let labels = [
                ("model", self.model_name.clone()),
                ("version", version.clone()),
            ];
            metrics::gauge!("trainer_model_accuracy", &labels).set(m.accuracy);
            metrics::gauge!("trainer_model_brier", &labels).set(m.brier);
            metrics::gauge!("trainer_model_log_loss", &labels).set(m.log_loss);
            metrics::gauge!("trainer_model_evaluated_games", &labels).set(m.count as f64);
            if let Some((_, brier, n)) = active.as_ref().filter(|a| &a.0 == version) {
                // A baseline from a handful of held-out games is noise: the
                // rise trigger needs as many as the thresholds do.
                let trusted = n.is_some_and(|n| n >= 0 && n as u64 >= self.triggers.min_samples);
                self.check_drift(&m, brier.filter(|_| trusted));
            }
        }
        self.purge_if_due().await;
        Ok(())
    }

    /// The threshold triggers, on the active version's scores.
    fn check_drift(&self, m: &ModelMetrics, baseline_brier: Option<f64>) {
        let t = &self.triggers;
        if m.count < t.min_samples {
            return;
        }
        let reason = if t.accuracy_below > 0.0 && m.accuracy < t.accuracy_below {
            Some((
                Reason::Accuracy,
                format!(
                    "rolling accuracy {:.4} < {} over {} games",
                    m.accuracy, t.accuracy_below, m.count
                ),
            ))
        } else if t.brier_above < 1.0 && m.brier > t.brier_above {
            Some((
                Reason::Brier,
                format!(
                    "rolling Brier {:.4} > {} over {} games",
                    m.brier, t.brier_above, m.count
                ),
            ))
        } else if let Some(b) = baseline_brier.filter(|_| t.brier_rise > 0.0)
            && m.brier > b + t.brier_rise
        {
            Some((
                Reason::Brier,
                format!(
                    "rolling Brier {:.4} is more than {} over its held-out {b:.4}, over {} games",
                    m.brier, t.brier_rise, m.count
                ),
            ))
        } else {
            None
        };
        if let Some((reason, detail)) = reason {
            // A full queue already holds a request: this one adds nothing.
            let _ = self.control.try_send(Request::automatic(reason, detail));
        }
    }
}

/// Upserts `predictions`; scores the versions whose new predictions are for
/// games already finished (a late prediction).
#[derive(Debug)]
pub struct PredictionsHandler(pub Arc<Evaluator>);

impl Handler<Prediction> for PredictionsHandler {
    async fn handle(&mut self, batch: &[Record<Prediction>]) -> anyhow::Result<()> {
        let e = &self.0;
        let predictions: Vec<Prediction> = batch.iter().map(|r| r.value.clone()).collect();
        e.db.upsert_predictions(&predictions).await?;
        let games: Vec<&str> = predictions.iter().map(|p| p.game_id.as_str()).collect();
        let versions: Vec<&str> = predictions
            .iter()
            .map(|p| p.model_version.as_str())
            .collect();
        let finished: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT p.version
             FROM UNNEST($1::text[], $2::text[]) AS p(game_id, version)
             JOIN outcomes o USING (game_id)",
        )
        .bind(&games)
        .bind(&versions)
        .fetch_all(e.db.pool())
        .await
        .context("finding finished games among new predictions")?;
        metrics::counter!("trainer_predictions_total").increment(batch.len() as u64);
        e.evaluate(&finished).await
    }
}

/// Upserts `outcomes`, counts the new, the repeated and those for games we
/// do not know, and scores every version that predicted one of them.
#[derive(Debug)]
pub struct OutcomesHandler(pub Arc<Evaluator>);

impl Handler<Outcome> for OutcomesHandler {
    async fn handle(&mut self, batch: &[Record<Outcome>]) -> anyhow::Result<()> {
        let e = &self.0;
        let outcomes: Vec<Outcome> = batch.iter().map(|r| r.value.clone()).collect();
        let ids: Vec<&str> = outcomes.iter().map(|o| o.game_id.as_str()).collect();
        // Unknown games are counted, and their outcomes kept: the game may
        // arrive later, and the label is only used once it joins a game.
        let unknown: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT g.id) FROM UNNEST($1::text[]) AS g(id)
             WHERE NOT EXISTS (SELECT 1 FROM games WHERE game_id = g.id)",
        )
        .bind(&ids)
        .fetch_one(e.db.pool())
        .await
        .context("looking up the outcomes' games")?;
        let changed = e.db.upsert_outcomes(&outcomes).await?;
        let repeated = (outcomes.len() as u64).saturating_sub(changed);
        metrics::counter!("trainer_outcomes_total", "kind" => "new").increment(changed);
        metrics::counter!("trainer_outcomes_total", "kind" => "duplicate").increment(repeated);
        if unknown > 0 {
            metrics::counter!("trainer_outcomes_total", "kind" => "unknown_game")
                .increment(unknown as u64);
            tracing::warn!(
                unknown,
                "outcomes for games not in the games table: kept, not scored until the game arrives"
            );
        }
        e.new_outcomes.fetch_add(changed, Ordering::Relaxed);
        let versions: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT model_version FROM predictions WHERE game_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(e.db.pool())
        .await
        .context("finding the versions that predicted these games")?;
        e.evaluate(&versions).await?;
        if let Some(judge) = &e.judge {
            judge.look().await?;
        }
        Ok(())
    }
}
