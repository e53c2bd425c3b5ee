//! The trainer's settings.

use std::path::PathBuf;
use std::time::Duration;

use fantasy_config::{ConfigError, Env, Parser, Profile};
use fantasy_db::DbConfig;
use fantasy_http::HttpConfig;
use fantasy_http::auth::AuthConfig;
use fantasy_kafka::KafkaConfig;
use fantasy_registry::experiments::Settings;
use fantasy_telemetry::TelemetryConfig;

/// The trainer's port.
pub const DEFAULT_PORT: u16 = 8083;
/// The model the stack trains and serves (the predictor's `MODEL_NAME`).
pub const DEFAULT_MODEL_NAME: &str = "win-prob";
/// Buckets of the calibration table.
pub const CALIBRATION_BUCKETS: usize = 10;

/// Which score the promotion gate compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMetric {
    LogLoss,
    Brier,
}

impl GateMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            GateMetric::LogLoss => "log_loss",
            GateMetric::Brier => "brier",
        }
    }
}

impl std::str::FromStr for GateMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "log_loss" | "logloss" => Ok(GateMetric::LogLoss),
            "brier" => Ok(GateMetric::Brier),
            other => Err(format!("{other:?}: expected log_loss or brier")),
        }
    }
}

/// When to retrain.
#[derive(Clone, Debug, PartialEq)]
pub struct Triggers {
    /// `RETRAIN_ACCURACY_BELOW`: the active model's rolling accuracy under
    /// this fires a retrain (0 turns it off).
    pub accuracy_below: f64,
    /// `RETRAIN_BRIER_ABOVE`: its rolling Brier score over this fires one
    /// (1 turns it off).
    pub brier_above: f64,
    /// `RETRAIN_BRIER_RISE`: its rolling Brier score this much over the
    /// Brier it had on its held-out games at training fires one (0 turns it
    /// off; not used when it held out fewer than `min_samples` games).
    /// Relative, so it suits any sport's base rate.
    pub brier_rise: f64,
    /// `RETRAIN_MIN_SAMPLES`: games in the window before either threshold is
    /// trusted.
    pub min_samples: u64,
    /// `RETRAIN_EVERY_OUTCOMES`: retrain after this many new outcomes (0:
    /// never on count).
    pub every_outcomes: u64,
    /// `RETRAIN_COOLDOWN`: no automatic retrain sooner than this after the
    /// last one started.
    pub cooldown: Duration,
}

/// How to train and judge a model.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// `TRAIN_WINDOW`: the most recent finished games trained on.
    pub window: u32,
    /// `TRAIN_MIN_GAMES`: fewer usable games than this and no model is
    /// trained (the run waits for more history).
    pub min_games: u32,
    /// `TRAIN_HOLDOUT`: the most recent share of the window held out for the
    /// gate.
    pub holdout: f64,
    /// `TRAIN_L2`: the L2 penalty.
    pub l2: f64,
    /// `PROMOTE_METRIC`: `log_loss` (default) or `brier`.
    pub gate_metric: GateMetric,
    /// `PROMOTE_MARGIN`: how much lower the candidate's score must be than
    /// the active model's on the held-out games (negative: how much worse it
    /// may be; -1 promotes every candidate, for demos and tests).
    pub promote_margin: f64,
}

/// Everything the trainer reads from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub telemetry: TelemetryConfig,
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub db: DbConfig,
    /// Admin endpoints need a token with the `admin` claim.
    pub auth: AuthConfig,
    /// `ORT_DYLIB_PATH`: the ONNX Runtime library, when not found by
    /// searching (models are checked through the runtime that serves them).
    pub ort_library: Option<PathBuf>,
    /// `MODEL_NAME`.
    pub model_name: String,
    /// `MODEL_STORE_URL`: `file:///path` or `s3://bucket/prefix`.
    pub store_url: String,
    /// `TRAINER_GROUP`: the consumer group of `predictions` and `outcomes`.
    pub group_id: String,
    /// `EVAL_WINDOW`: the most recent finished games a version is scored on.
    pub eval_window: u32,
    /// `METRICS_RETENTION`: how long stored evaluations are kept (each
    /// version's latest is kept for good).
    pub metrics_retention: Duration,
    pub triggers: Triggers,
    pub train: TrainConfig,
    /// `TRAIN_BOOTSTRAP`: with no active model, train the first one as soon
    /// as there is history.
    pub bootstrap: bool,
    /// `SHUTDOWN_TIMEOUT`: how long a training in progress may finish.
    pub shutdown_timeout: Duration,
    /// How experiments are judged unless their creator says otherwise:
    /// `EXPERIMENT_ALPHA`, `EXPERIMENT_MIN_OUTCOMES`,
    /// `EXPERIMENT_MAX_OUTCOMES`, `EXPERIMENT_STEP_OUTCOMES`,
    /// `EXPERIMENT_CANARY_STEPS` (comma-separated shares).
    pub experiments: Settings,
}

fn default_store() -> String {
    let dir = std::env::current_dir()
        .unwrap_or_else(|_| PathBuf::from("/tmp"))
        .join("models");
    format!("file://{}", dir.display())
}

impl Config {
    /// Reads every variable, with the binary's defaults.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::for_profile(env, Profile::Service)
    }

    /// Reads every variable, with `profile`'s defaults.
    pub fn for_profile(env: &Env, profile: Profile) -> Result<Self, ConfigError> {
        let mut p = Parser::new(env);
        let cfg = Self {
            telemetry: TelemetryConfig::from_env(&mut p, "trainer"),
            http: HttpConfig::from_env(&mut p, DEFAULT_PORT),
            kafka: KafkaConfig::from_env(&mut p, "trainer"),
            db: DbConfig::from_env(&mut p),
            auth: AuthConfig::from_env(&mut p, profile),
            ort_library: p.string_opt("ORT_DYLIB_PATH").map(PathBuf::from),
            model_name: p.string("MODEL_NAME", DEFAULT_MODEL_NAME),
            store_url: p.string("MODEL_STORE_URL", &default_store()),
            group_id: p.string("TRAINER_GROUP", "trainer"),
            eval_window: p.ranged("EVAL_WINDOW", 500, 10..=1_000_000),
            metrics_retention: p.duration("METRICS_RETENTION", Duration::from_secs(30 * 86_400)),
            triggers: Triggers {
                accuracy_below: p.ranged("RETRAIN_ACCURACY_BELOW", 0.55, 0.0..=1.0),
                brier_above: p.ranged("RETRAIN_BRIER_ABOVE", 0.25, 0.0..=1.0),
                brier_rise: p.ranged("RETRAIN_BRIER_RISE", 0.02, 0.0..=1.0),
                min_samples: p.ranged("RETRAIN_MIN_SAMPLES", 200, 1..=1_000_000),
                every_outcomes: p.parse("RETRAIN_EVERY_OUTCOMES", 10_000),
                cooldown: p.duration("RETRAIN_COOLDOWN", Duration::from_secs(15 * 60)),
            },
            train: TrainConfig {
                window: p.ranged("TRAIN_WINDOW", 100_000, 100..=10_000_000),
                min_games: p.ranged("TRAIN_MIN_GAMES", 500, 20..=10_000_000),
                holdout: p.ranged("TRAIN_HOLDOUT", 0.2, 0.05..=0.5),
                l2: p.ranged("TRAIN_L2", 1.0, 0.0..=1e6),
                gate_metric: p.parse("PROMOTE_METRIC", GateMetric::LogLoss),
                promote_margin: p.ranged("PROMOTE_MARGIN", 0.0005, -1.0..=1.0),
            },
            bootstrap: p.flag("TRAIN_BOOTSTRAP", true),
            shutdown_timeout: p.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(30)),
            experiments: experiment_settings(&mut p),
        };
        if cfg.train.min_games > cfg.train.window {
            p.problem(
                "TRAIN_MIN_GAMES",
                format!(
                    "{} is more than TRAIN_WINDOW ({}): no training could ever start",
                    cfg.train.min_games, cfg.train.window
                ),
            );
        }
        if let Err(e) = fantasy_registry::ModelStore::check_url(&cfg.store_url) {
            p.problem("MODEL_STORE_URL", e.to_string());
        }
        p.finish()?;
        Ok(cfg)
    }

    pub fn log(&self) {
        tracing::info!(
            http = %self.http,
            kafka = %self.kafka,
            db = %self.db.redacted_url(),
            auth = %self.auth,
            model_name = %self.model_name,
            store = %self.store_url,
            eval_window = self.eval_window,
            metrics_retention = ?self.metrics_retention,
            triggers = ?self.triggers,
            train = ?self.train,
            bootstrap = self.bootstrap,
            "effective configuration"
        );
    }
}

fn experiment_settings(p: &mut Parser<'_>) -> Settings {
    let d = Settings::default();
    let steps_default = d
        .canary_steps
        .iter()
        .map(f64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let steps = p.string("EXPERIMENT_CANARY_STEPS", &steps_default);
    let s = Settings {
        alpha: p.ranged("EXPERIMENT_ALPHA", d.alpha, 1e-6..=0.49),
        min_outcomes: p.ranged("EXPERIMENT_MIN_OUTCOMES", d.min_outcomes, 1..=100_000_000),
        max_outcomes: p.ranged("EXPERIMENT_MAX_OUTCOMES", d.max_outcomes, 1..=100_000_000),
        step_outcomes: p.ranged("EXPERIMENT_STEP_OUTCOMES", d.step_outcomes, 1..=100_000_000),
        canary_steps: match steps.split(',').map(|x| x.trim().parse()).collect() {
            Ok(steps) => steps,
            Err(e) => {
                p.problem(
                    "EXPERIMENT_CANARY_STEPS",
                    format!("{steps:?}: {e}; expected shares like 0.01,0.05,0.25,1"),
                );
                d.canary_steps.clone()
            }
        },
        ..d.clone()
    };
    if let Err(e) = s.validate() {
        p.problem("EXPERIMENT_*", e);
    }
    s
}

fantasy_http::service_config!(Config);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_need_only_a_secret() {
        let cfg =
            Config::from_env(&env(&[("JWT_SECRET", "0123456789abcdef0123456789abcdef")])).unwrap();
        assert_eq!(cfg.http.addr.port(), DEFAULT_PORT);
        assert_eq!(cfg.model_name, DEFAULT_MODEL_NAME);
        assert!(cfg.store_url.starts_with("file:///"));
        assert_eq!(cfg.train.gate_metric, GateMetric::LogLoss);
        assert!(cfg.auth.required);
    }

    #[test]
    fn every_bad_setting_is_reported_at_once() {
        let err = Config::from_env(&env(&[
            ("AUTH_REQUIRED", "false"),
            ("TRAIN_WINDOW", "1000"),
            ("TRAIN_MIN_GAMES", "5000"),
            ("PROMOTE_METRIC", "auc"),
            ("MODEL_STORE_URL", "ftp://x/y"),
            ("TRAIN_HOLDOUT", "0.9"),
        ]))
        .unwrap_err()
        .to_string();
        for name in [
            "TRAIN_MIN_GAMES",
            "PROMOTE_METRIC",
            "MODEL_STORE_URL",
            "TRAIN_HOLDOUT",
        ] {
            assert!(err.contains(name), "{name} missing from: {err}");
        }
    }
}
