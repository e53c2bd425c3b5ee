//! The fanout's settings.

use std::time::Duration;

use fantasy_cache::RedisConfig;
use fantasy_config::{ConfigError, Env, Parser, Profile};
use fantasy_http::{AuthConfig, HttpConfig};
use fantasy_kafka::KafkaConfig;
use fantasy_telemetry::TelemetryConfig;

/// The fanout's port.
pub const DEFAULT_PORT: u16 = 8081;

/// Everything the fanout reads at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    pub telemetry: TelemetryConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
    pub limits: Limits,
    /// `SHUTDOWN_TIMEOUT`: how long shutdown waits for clients to close.
    pub shutdown_timeout: Duration,
}

/// Bounds on memory and on what one client may do.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `HISTORY_SIZE`: messages kept per channel for recovery.
    pub history_size: usize,
    /// `HISTORY_AGE`: how long a message stays recoverable.
    pub history_age: Duration,
    /// `HISTORY_REFILL`: messages read back per partition at start-up to
    /// refill the history.
    pub history_refill: i64,
    /// `CLIENT_QUEUE`: frames waiting for one client before it is closed as
    /// slow (4001).
    pub client_queue: usize,
    /// `MAX_CONNECTIONS`: WebSocket connections per process; more are
    /// refused with 503.
    pub max_connections: usize,
    /// `MAX_SUBSCRIPTIONS`: channels per connection.
    pub max_subscriptions: usize,
    /// `MAX_FRAME_BYTES`: the largest frame a client may send (1009 beyond).
    pub max_frame_bytes: usize,
    /// `PING_INTERVAL`: how often the server pings a connection.
    pub ping_interval: Duration,
    /// `IDLE_TIMEOUT`: a connection silent this long (no pong) is closed
    /// (4002).
    pub idle_timeout: Duration,
    /// `SNAPSHOT_MAX`: most games in one snapshot.
    pub snapshot_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            history_size: 1000,
            history_age: Duration::from_secs(600),
            history_refill: 5000,
            client_queue: 1024,
            max_connections: 20_000,
            max_subscriptions: 100,
            max_frame_bytes: 4096,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            snapshot_max: 1000,
        }
    }
}

impl Config {
    /// Reads every variable, with the binary's defaults.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::for_profile(env, Profile::Service)
    }

    /// Reads every variable, with `profile`'s defaults.
    pub fn for_profile(env: &Env, profile: Profile) -> Result<Self, ConfigError> {
        let mut p = Parser::new(env);
        let d = Limits::default();
        let cfg = Self {
            telemetry: TelemetryConfig::from_env(&mut p, "fanout"),
            http: HttpConfig::from_env(&mut p, DEFAULT_PORT),
            auth: AuthConfig::from_env(&mut p, profile),
            kafka: KafkaConfig::from_env(&mut p, "fanout"),
            redis: RedisConfig::from_env(&mut p),
            limits: Limits {
                history_size: p.ranged("HISTORY_SIZE", d.history_size, 0..=1_000_000),
                history_age: p.duration("HISTORY_AGE", d.history_age),
                history_refill: p.ranged("HISTORY_REFILL", d.history_refill, 0..=10_000_000),
                client_queue: p.ranged("CLIENT_QUEUE", d.client_queue, 1..=1_000_000),
                max_connections: p.ranged("MAX_CONNECTIONS", d.max_connections, 1..=10_000_000),
                max_subscriptions: p.ranged("MAX_SUBSCRIPTIONS", d.max_subscriptions, 1..=100_000),
                max_frame_bytes: p.ranged("MAX_FRAME_BYTES", d.max_frame_bytes, 64..=1 << 24),
                ping_interval: p.duration("PING_INTERVAL", d.ping_interval),
                idle_timeout: p.duration("IDLE_TIMEOUT", d.idle_timeout),
                snapshot_max: p.ranged("SNAPSHOT_MAX", d.snapshot_max, 0..=1_000_000),
            },
            shutdown_timeout: p.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(10)),
        };
        if cfg.limits.idle_timeout <= cfg.limits.ping_interval {
            p.problem(
                "IDLE_TIMEOUT",
                format!(
                    "{:?} must be longer than PING_INTERVAL ({:?})",
                    cfg.limits.idle_timeout, cfg.limits.ping_interval
                ),
            );
        }
        p.finish()?;
        Ok(cfg)
    }

    pub fn log(&self) {
        tracing::info!(
            http = %self.http,
            auth = %self.auth,
            kafka = %self.kafka,
            redis = %self.redis,
            limits = ?self.limits,
            shutdown_timeout = ?self.shutdown_timeout,
            "effective configuration"
        );
    }
}

fantasy_http::service_config!(Config);
