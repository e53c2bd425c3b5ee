//! The predictor's settings.

use std::path::PathBuf;
use std::time::Duration;

use fantasy_cache::RedisConfig;
use fantasy_config::{ConfigError, Env, Parser, Profile};
use fantasy_db::DbConfig;
use fantasy_http::{AuthConfig, HttpConfig};
use fantasy_inference::InferenceConfig;
use fantasy_kafka::KafkaConfig;
use fantasy_telemetry::TelemetryConfig;

/// The predictor's port.
pub const DEFAULT_PORT: u16 = 8080;

/// The model name the predictor serves unless told otherwise.
pub const DEFAULT_MODEL_NAME: &str = "win-prob";

/// Everything the predictor reads at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    pub telemetry: TelemetryConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub db: DbConfig,
    pub redis: RedisConfig,
    pub inference: InferenceConfig,
    /// `MODEL_PATH`: serve this ONNX file and ignore the registry.
    pub model_path: Option<PathBuf>,
    /// `MODEL_NAME`: the registry model to serve.
    pub model_name: String,
    /// `PREDICTOR_STREAM`: consume `games` and publish `predictions`.
    pub stream: bool,
    /// `PREDICTOR_GROUP`: the consumer group of the games stream.
    pub group_id: String,
    /// `STREAM_MAX_BATCH`: most game events handled at once.
    pub stream_max_batch: usize,
    /// `STREAM_MAX_WAIT`: how long the stream waits to fill a batch.
    pub stream_max_wait: Duration,
    /// `MAX_BATCH_ITEMS`: most items in one `/v1/predict/batch` request.
    pub max_batch_items: usize,
    /// `SHUTDOWN_TIMEOUT`: how long shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// `EXPERIMENT_MAX_MODEL_BYTES`: the most artifact bytes an experiment
    /// may load besides the champion (beyond it, the experiment is refused
    /// and the champion serves alone).
    pub max_experiment_bytes: u64,
    /// `SHADOW_QUEUE`: jobs the shadow worker may have waiting; beyond it,
    /// shadow scoring is shed (`predictor_shadow_shed_total`).
    pub shadow_queue: usize,
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
            telemetry: TelemetryConfig::from_env(&mut p, "predictor"),
            http: HttpConfig::from_env(&mut p, DEFAULT_PORT),
            auth: AuthConfig::from_env(&mut p, profile),
            kafka: KafkaConfig::from_env(&mut p, "predictor"),
            db: DbConfig::from_env(&mut p),
            redis: RedisConfig::from_env(&mut p),
            inference: InferenceConfig::from_env(&mut p),
            model_path: p.string_opt("MODEL_PATH").map(PathBuf::from),
            model_name: p.string("MODEL_NAME", DEFAULT_MODEL_NAME),
            stream: p.flag("PREDICTOR_STREAM", true),
            group_id: p.string("PREDICTOR_GROUP", "predictor"),
            stream_max_batch: p.ranged("STREAM_MAX_BATCH", 1000, 1..=100_000),
            stream_max_wait: p.duration("STREAM_MAX_WAIT", Duration::from_millis(5)),
            max_batch_items: p.ranged("MAX_BATCH_ITEMS", 1024, 1..=100_000),
            shutdown_timeout: p.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(10)),
            max_experiment_bytes: p.ranged("EXPERIMENT_MAX_MODEL_BYTES", 512 << 20, 1..=u64::MAX),
            shadow_queue: p.ranged("SHADOW_QUEUE", 4096, 1..=1_000_000),
        };
        if let Some(path) = &cfg.model_path
            && !path.is_file()
        {
            p.problem("MODEL_PATH", format!("{} is not a file", path.display()));
        }
        p.finish()?;
        Ok(cfg)
    }

    /// Logs the effective configuration, secrets redacted.
    pub fn log(&self) {
        tracing::info!(
            http = %self.http,
            auth = %self.auth,
            kafka = %self.kafka,
            db = %self.db,
            redis = %self.redis,
            inference = %self.inference,
            model_path = ?self.model_path,
            model_name = %self.model_name,
            stream = self.stream,
            group_id = %self.group_id,
            stream_max_batch = self.stream_max_batch,
            stream_max_wait = ?self.stream_max_wait,
            max_batch_items = self.max_batch_items,
            shutdown_timeout = ?self.shutdown_timeout,
            max_experiment_bytes = self.max_experiment_bytes,
            shadow_queue = self.shadow_queue,
            "effective configuration"
        );
    }
}

fantasy_http::service_config!(Config);
