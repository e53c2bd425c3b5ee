//! The all-in-one `fantasy` command.
//!
//! `fantasy up` runs the whole stack in one process (see [`up`]); `fantasy
//! run <service>` runs one service through the code of its own binary;
//! `fantasy train` trains once ([`trainer::train_once`]); `fantasy broker`
//! runs the embedded Kafka-protocol broker on its own, `fantasy migrate`
//! applies the database schema, and `fantasy check` tells whether Postgres,
//! Redis and Kafka answer.
//!
//! The binary (`main.rs`) only parses arguments and calls into this library,
//! so tests run the same code.

pub mod broker;
pub mod check;
pub mod migrate;
pub mod up;

use fantasy_cache::RedisConfig;
use fantasy_config::{ConfigError, Env, Parser};
use fantasy_db::DbConfig;
use fantasy_kafka::KafkaConfig;
use fantasy_telemetry::TelemetryConfig;

/// Everything the subcommands read from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub telemetry: TelemetryConfig,
    pub kafka: KafkaConfig,
    pub db: DbConfig,
    pub redis: RedisConfig,
}

impl Config {
    /// Reads and checks every variable; the error lists all bad ones.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut p = Parser::new(env);
        let cfg = Self {
            telemetry: TelemetryConfig::from_env(&mut p, "fantasy"),
            kafka: KafkaConfig::from_env(&mut p, "fantasy"),
            db: DbConfig::from_env(&mut p),
            redis: RedisConfig::from_env(&mut p),
        };
        p.finish()?;
        Ok(cfg)
    }

    /// Logs the effective configuration, secrets redacted.
    pub fn log(&self) {
        tracing::info!(
            telemetry = %self.telemetry,
            kafka = %self.kafka,
            db = %self.db,
            redis = %self.redis,
            "effective configuration"
        );
    }
}
