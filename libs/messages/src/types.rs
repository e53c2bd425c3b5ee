//! The message types of `DESIGN.md`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Message, SchemaVersion, Topic};

/// Longest id we accept: ids become Kafka keys, Redis keys and primary keys.
const MAX_ID_LEN: usize = 256;

/// Longest feature vector we accept in a message.
const MAX_FEATURES: usize = 4096;

fn check_id(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(format!(
            "{field} is {} bytes long; the limit is {MAX_ID_LEN}",
            value.len()
        ));
    }
    Ok(())
}

fn check_probability(field: &str, value: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&value) {
        // NaN fails `contains` too, and lands here.
        return Err(format!("{field} is {value}; expected a number in [0, 1]"));
    }
    Ok(())
}

fn check_non_negative(field: &str, value: f64) -> Result<(), String> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{field} is {value}; expected a finite number >= 0"));
    }
    Ok(())
}

/// Where a game stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GameStatus {
    Scheduled,
    InProgress,
    Final,
    Postponed,
}

impl GameStatus {
    /// The name used on the wire and in Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            GameStatus::Scheduled => "scheduled",
            GameStatus::InProgress => "in_progress",
            GameStatus::Final => "final",
            GameStatus::Postponed => "postponed",
        }
    }

    /// Parses the name used on the wire and in Postgres.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => GameStatus::Scheduled,
            "in_progress" => GameStatus::InProgress,
            "final" => GameStatus::Final,
            "postponed" => GameStatus::Postponed,
            _ => return None,
        })
    }
}

/// A game as the collector last saw it, with its feature vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Game {
    pub schema_version: SchemaVersion,
    /// Stable id across sources and updates (the natural key everywhere).
    pub game_id: String,
    /// `nba`, `nfl`, `soccer`, ... (lower case).
    pub sport: String,
    pub league: String,
    /// `2026` or `2026-27`, as the league names its seasons.
    pub season: String,
    pub home_team: String,
    pub away_team: String,
    pub scheduled_at: DateTime<Utc>,
    pub status: GameStatus,
    /// The model's input, computed by the shared feature crate.
    pub features: Vec<f32>,
    /// Name and version of the feature schema, e.g. `elo-v1`: a model serves
    /// only games whose feature set it was trained on.
    pub feature_set: String,
    /// The source that produced this record (`sim`, `espn:nba`, `file:...`).
    pub source: String,
    /// When the source last changed this record.
    pub source_updated_at: DateTime<Utc>,
    /// When the collector published this event: the predictor measures the
    /// event's age from it (`predictor_stream_event_age_seconds`) and passes
    /// it on as `Prediction::event_produced_at`. (The fanout's
    /// `fanout_e2e_latency_seconds` runs from `Prediction::predicted_at`.)
    pub produced_at: DateTime<Utc>,
}

impl Message for Game {
    const TOPIC: Topic = Topic::Games;
    const KIND: &'static str = "game";

    fn key(&self) -> &str {
        &self.game_id
    }

    fn validate(&self) -> Result<(), String> {
        check_id("game_id", &self.game_id)?;
        check_id("sport", &self.sport)?;
        check_id("home_team", &self.home_team)?;
        check_id("away_team", &self.away_team)?;
        if self.features.len() > MAX_FEATURES {
            return Err(format!(
                "{} features; the limit is {MAX_FEATURES}",
                self.features.len()
            ));
        }
        if let Some(i) = self.features.iter().position(|f| !f.is_finite()) {
            return Err(format!("features[{i}] is {}", self.features[i]));
        }
        if !self.features.is_empty() {
            check_id("feature_set", &self.feature_set)?;
        }
        Ok(())
    }
}

/// A final result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub schema_version: SchemaVersion,
    pub game_id: String,
    pub home_score: u32,
    pub away_score: u32,
    /// The label the models learn: the home team won. A draw is not a win.
    pub home_win: bool,
    pub final_at: DateTime<Utc>,
}

impl Message for Outcome {
    const TOPIC: Topic = Topic::Outcomes;
    const KIND: &'static str = "outcome";

    fn key(&self) -> &str {
        &self.game_id
    }

    fn validate(&self) -> Result<(), String> {
        check_id("game_id", &self.game_id)?;
        let won = self.home_score > self.away_score;
        if won != self.home_win {
            return Err(format!(
                "home_win is {} but the score is {}-{}",
                self.home_win, self.home_score, self.away_score
            ));
        }
        Ok(())
    }
}

/// A win probability for one game from one model version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Prediction {
    pub schema_version: SchemaVersion,
    pub game_id: String,
    pub sport: String,
    pub league: String,
    pub home_team: String,
    pub away_team: String,
    pub scheduled_at: DateTime<Utc>,
    /// The model version that produced it (the trainer's registry version).
    pub model_version: String,
    /// Probability that the home team wins, in `[0, 1]`.
    pub home_win_prob: f32,
    pub predicted_at: DateTime<Utc>,
    /// `Game::produced_at` of the event this prediction answers; `None` for
    /// predictions not made from a game event.
    pub event_produced_at: Option<DateTime<Utc>>,
    /// The experiment variant that served it (`champion`, `challenger`,
    /// ...; docs/experiments.md), absent outside an experiment. Readers of
    /// schema 1 without this field read it as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Message for Prediction {
    const TOPIC: Topic = Topic::Predictions;
    const KIND: &'static str = "prediction";

    fn key(&self) -> &str {
        &self.game_id
    }

    fn validate(&self) -> Result<(), String> {
        check_id("game_id", &self.game_id)?;
        check_id("sport", &self.sport)?;
        check_id("model_version", &self.model_version)?;
        if let Some(variant) = &self.variant {
            check_id("variant", variant)?;
        }
        check_probability("home_win_prob", f64::from(self.home_win_prob))
    }
}

/// Where a model version stands in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Trained and stored, not yet judged.
    Candidate,
    /// Serving.
    Active,
    /// Lost to the active model at the gate.
    Rejected,
    /// Served once, replaced since.
    Retired,
}

impl ModelStatus {
    /// The name used on the wire and in Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Candidate => "candidate",
            ModelStatus::Active => "active",
            ModelStatus::Rejected => "rejected",
            ModelStatus::Retired => "retired",
        }
    }

    /// Parses the name used on the wire and in Postgres.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "candidate" => ModelStatus::Candidate,
            "active" => ModelStatus::Active,
            "rejected" => ModelStatus::Rejected,
            "retired" => ModelStatus::Retired,
            _ => return None,
        })
    }
}

/// A model's scores on its held-out data at training time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrainingMetrics {
    pub n_train: u64,
    pub n_holdout: u64,
    pub log_loss: f64,
    pub brier: f64,
    pub accuracy: f64,
}

impl TrainingMetrics {
    fn validate(&self) -> Result<(), String> {
        check_non_negative("metrics.log_loss", self.log_loss)?;
        check_probability("metrics.brier", self.brier)?;
        check_probability("metrics.accuracy", self.accuracy)
    }
}

/// A model version announced by the trainer (on promotion, rollback, or as a
/// candidate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPublished {
    pub schema_version: SchemaVersion,
    /// The model's name; the Kafka key, so compaction keeps the latest per name.
    pub model_name: String,
    pub version: String,
    /// Where the ONNX file is (`file:///...`, `s3://bucket/key`).
    pub artifact_uri: String,
    /// Hex SHA-256 of the artifact; a loader refuses a file that differs.
    pub sha256: String,
    pub feature_set: String,
    pub n_features: u32,
    pub status: ModelStatus,
    pub metrics: TrainingMetrics,
    pub published_at: DateTime<Utc>,
}

impl Message for ModelPublished {
    const TOPIC: Topic = Topic::Models;
    const KIND: &'static str = "model";

    fn key(&self) -> &str {
        &self.model_name
    }

    fn validate(&self) -> Result<(), String> {
        check_id("model_name", &self.model_name)?;
        check_id("version", &self.version)?;
        check_id("artifact_uri", &self.artifact_uri)?;
        check_id("feature_set", &self.feature_set)?;
        let hex = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(format!(
                "sha256 {:?} is not 64 lower-case hex digits",
                self.sha256
            ));
        }
        if self.n_features == 0 {
            return Err("n_features is 0".into());
        }
        self.metrics.validate()
    }
}

/// One bucket of a calibration table: predictions in `[lower, upper)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBucket {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    /// Mean predicted probability in the bucket.
    pub mean_predicted: f64,
    /// Fraction of home wins among the bucket's games.
    pub observed_rate: f64,
}

/// Rolling scores of one model version on games that have finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub schema_version: SchemaVersion,
    pub model_name: String,
    pub model_version: String,
    /// The configured window (the most recent games considered).
    pub window: u32,
    /// Games actually in the window (fewer than `window` early on).
    pub count: u64,
    pub accuracy: f64,
    pub brier: f64,
    pub log_loss: f64,
    pub calibration: Vec<CalibrationBucket>,
    pub evaluated_at: DateTime<Utc>,
}

impl Message for ModelMetrics {
    const TOPIC: Topic = Topic::Metrics;
    const KIND: &'static str = "metrics";

    fn key(&self) -> &str {
        &self.model_name
    }

    fn validate(&self) -> Result<(), String> {
        check_id("model_name", &self.model_name)?;
        check_id("model_version", &self.model_version)?;
        if self.count > u64::from(self.window) {
            return Err(format!(
                "count {} exceeds window {}",
                self.count, self.window
            ));
        }
        check_probability("accuracy", self.accuracy)?;
        check_probability("brier", self.brier)?;
        check_non_negative("log_loss", self.log_loss)?;
        for (i, b) in self.calibration.iter().enumerate() {
            let ok = b.lower.is_finite()
                && b.upper.is_finite()
                && b.lower < b.upper
                && (0.0..=1.0).contains(&b.mean_predicted)
                && (0.0..=1.0).contains(&b.observed_rate);
            if !ok {
                return Err(format!("calibration[{i}] is out of range: {b:?}"));
            }
        }
        Ok(())
    }
}

/// One variant of a running experiment, as the trainer last judged it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantStanding {
    pub variant: String,
    pub version: String,
    /// `champion`, `challenger` or `shadow`.
    pub role: String,
    /// The share of games it serves.
    pub weight: f64,
    pub dropped: bool,
    /// Finished games it scored.
    pub outcomes: u64,
    pub accuracy: f64,
    pub brier: f64,
    pub log_loss: f64,
    pub calibration_error: f64,
    /// The reliability diagram.
    pub calibration: Vec<CalibrationBucket>,
}

/// A challenger or shadow against the champion: the sequential test's
/// interval of the mean per-game log-loss difference (variant minus
/// champion) on `n` paired games.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparisonStanding {
    pub variant: String,
    pub n: u64,
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
    /// `better`, `worse` or `undecided`.
    pub verdict: String,
}

/// Where a running experiment stands (docs/experiments.md): published on
/// `metrics` beside [`ModelMetrics`] after each look of the trainer's
/// sequential test, for the dashboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentStanding {
    pub schema_version: SchemaVersion,
    pub model_name: String,
    pub experiment_id: i64,
    /// `split`, `shadow` or `canary`.
    pub mode: String,
    /// `running`, `paused`, `promoted`, `stopped` or `inconclusive`.
    pub status: String,
    /// The canary's step.
    pub stage: u32,
    /// Finished games the champion scored.
    pub outcomes: u64,
    pub variants: Vec<VariantStanding>,
    pub comparisons: Vec<ComparisonStanding>,
    /// The latest decision: `promote`, `drop`, `stop`, `step`, ... and why.
    pub last_decision: Option<String>,
    pub evaluated_at: DateTime<Utc>,
}

impl Message for ExperimentStanding {
    const TOPIC: Topic = Topic::Metrics;
    const KIND: &'static str = "experiment";

    fn key(&self) -> &str {
        &self.model_name
    }

    fn validate(&self) -> Result<(), String> {
        check_id("model_name", &self.model_name)?;
        for v in &self.variants {
            check_id("variant", &v.variant)?;
            check_probability("weight", v.weight)?;
            check_probability("accuracy", v.accuracy)?;
            check_probability("brier", v.brier)?;
            check_non_negative("log_loss", v.log_loss)?;
        }
        for c in &self.comparisons {
            check_id("comparison variant", &c.variant)?;
            if !(c.lower.is_finite() && c.upper.is_finite() && c.lower <= c.upper) {
                return Err(format!(
                    "comparison {} has interval [{}, {}]",
                    c.variant, c.lower, c.upper
                ));
            }
        }
        Ok(())
    }
}
