//! Postgres settings.

use std::fmt;
use std::time::Duration;

use fantasy_config::{Parser, Secret, redact_url};

/// The database a local run uses.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/fantasy";

/// Postgres settings of a service.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// `DATABASE_URL` (or `DATABASE_URL_FILE`): may hold a password.
    pub url: Secret,
    /// `DATABASE_MAX_CONNECTIONS`: pool size.
    pub max_connections: u32,
    /// `DATABASE_MIN_CONNECTIONS`: connections kept open when idle.
    pub min_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT`: how long a query waits for a connection
    /// (and start-up waits for Postgres) before failing.
    pub acquire_timeout: Duration,
    /// `DATABASE_CREATE`: create the database if it does not exist.
    pub create_database: bool,
}

impl DbConfig {
    /// Settings for `url`, with defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            max_connections: 10,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            create_database: true,
        }
    }

    /// Reads the `DATABASE_*` variables.
    pub fn from_env(p: &mut Parser<'_>) -> Self {
        let d = Self::new(DEFAULT_DATABASE_URL);
        let cfg = Self {
            url: p.secret_url_with_password(
                "DATABASE_URL",
                "DATABASE_PASSWORD",
                DEFAULT_DATABASE_URL,
                &["postgres", "postgresql"],
            ),
            max_connections: p.ranged("DATABASE_MAX_CONNECTIONS", d.max_connections, 1..=1000),
            min_connections: p.ranged("DATABASE_MIN_CONNECTIONS", d.min_connections, 0..=1000),
            acquire_timeout: p.duration("DATABASE_ACQUIRE_TIMEOUT", d.acquire_timeout),
            create_database: p.flag("DATABASE_CREATE", d.create_database),
        };
        if cfg.min_connections > cfg.max_connections {
            p.problem(
                "DATABASE_MIN_CONNECTIONS",
                format!(
                    "{} is above DATABASE_MAX_CONNECTIONS ({})",
                    cfg.min_connections, cfg.max_connections
                ),
            );
        }
        cfg
    }

    /// The URL with its password hidden, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose())
    }
}

impl fmt::Display for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "url={} max_connections={} min_connections={} acquire_timeout={:?} create_database={}",
            self.redacted_url(),
            self.max_connections,
            self.min_connections,
            self.acquire_timeout,
            self.create_database
        )
    }
}
