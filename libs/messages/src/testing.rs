//! Sample messages for tests (feature `testing`).

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::{
    CalibrationBucket, ComparisonStanding, ExperimentStanding, Game, GameStatus, ModelMetrics,
    ModelPublished, ModelStatus, Outcome, Prediction, SchemaVersion, TrainingMetrics,
    VariantStanding,
};

/// A fixed instant, so samples compare equal across calls.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 18, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A scheduled game with three features.
pub fn game(game_id: &str) -> Game {
    Game {
        schema_version: SchemaVersion,
        game_id: game_id.to_owned(),
        sport: "nba".into(),
        league: "NBA".into(),
        season: "2026-27".into(),
        home_team: "BOS".into(),
        away_team: "NYK".into(),
        scheduled_at: epoch() + Duration::hours(2),
        status: GameStatus::Scheduled,
        features: vec![0.25, -1.5, 3.0],
        feature_set: "elo-v1".into(),
        source: "sim".into(),
        source_updated_at: epoch(),
        produced_at: epoch(),
    }
}

/// A home win, 101-99.
pub fn outcome(game_id: &str) -> Outcome {
    Outcome {
        schema_version: SchemaVersion,
        game_id: game_id.to_owned(),
        home_score: 101,
        away_score: 99,
        home_win: true,
        final_at: epoch() + Duration::hours(5),
    }
}

/// A prediction of `prob` by model version `v1`.
pub fn prediction(game_id: &str, prob: f32) -> Prediction {
    Prediction {
        schema_version: SchemaVersion,
        game_id: game_id.to_owned(),
        sport: "nba".into(),
        league: "NBA".into(),
        home_team: "BOS".into(),
        away_team: "NYK".into(),
        scheduled_at: epoch() + Duration::hours(2),
        model_version: "v1".into(),
        home_win_prob: prob,
        predicted_at: epoch() + Duration::seconds(1),
        event_produced_at: Some(epoch()),
        variant: None,
    }
}

/// An active model announcement.
pub fn model_published(version: &str) -> ModelPublished {
    ModelPublished {
        schema_version: SchemaVersion,
        model_name: "win-prob".into(),
        version: version.to_owned(),
        artifact_uri: format!("file:///models/win-prob/{version}.onnx"),
        sha256: "0".repeat(64),
        feature_set: "elo-v1".into(),
        n_features: 3,
        status: ModelStatus::Active,
        metrics: TrainingMetrics {
            n_train: 1000,
            n_holdout: 200,
            log_loss: 0.62,
            brier: 0.21,
            accuracy: 0.66,
        },
        published_at: epoch(),
    }
}

/// Rolling metrics of model version `v1` with no calibration buckets.
pub fn model_metrics(version: &str) -> ModelMetrics {
    ModelMetrics {
        schema_version: SchemaVersion,
        model_name: "win-prob".into(),
        model_version: version.to_owned(),
        window: 500,
        count: 120,
        accuracy: 0.65,
        brier: 0.22,
        log_loss: 0.63,
        calibration: Vec::new(),
        evaluated_at: epoch(),
    }
}

/// A canary experiment's standing: a champion and a challenger at 5%,
/// `outcomes` games in, the challenger's interval `[lower, upper]`.
pub fn experiment_standing(outcomes: u64, lower: f64, upper: f64) -> ExperimentStanding {
    let bucket = |lower: f64, predicted: f64, observed: f64| CalibrationBucket {
        lower,
        upper: lower + 0.1,
        count: outcomes / 4,
        mean_predicted: predicted,
        observed_rate: observed,
    };
    let variant = |name: &str, role: &str, weight: f64, log_loss: f64| VariantStanding {
        variant: name.into(),
        version: format!("v-{name}"),
        role: role.into(),
        weight,
        dropped: false,
        outcomes,
        accuracy: 0.66,
        brier: log_loss / 3.0,
        log_loss,
        calibration_error: 0.03,
        calibration: vec![
            bucket(0.2, 0.25, 0.22),
            bucket(0.4, 0.45, 0.47),
            bucket(0.6, 0.65, 0.61),
            bucket(0.8, 0.84, 0.86),
        ],
    };
    ExperimentStanding {
        schema_version: SchemaVersion,
        model_name: "win-prob".into(),
        experiment_id: 7,
        mode: "canary".into(),
        status: "running".into(),
        stage: 1,
        outcomes,
        variants: vec![
            variant("champion", "champion", 0.95, 0.62),
            variant("challenger", "challenger", 0.05, 0.60),
        ],
        comparisons: vec![ComparisonStanding {
            variant: "challenger".into(),
            n: outcomes,
            mean: (lower + upper) / 2.0,
            lower,
            upper,
            verdict: if upper < 0.0 {
                "better"
            } else if lower > 0.0 {
                "worse"
            } else {
                "undecided"
            }
            .into(),
        }],
        last_decision: Some(
            "step: held at 1% for 100 outcomes without being worse: 5% next".into(),
        ),
        evaluated_at: epoch() + Duration::hours(6),
    }
}
