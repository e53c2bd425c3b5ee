//! Postgres for the services: the pool, the migrations, and the queries.
//!
//! The schema lives in `migrations/` at the workspace root and is compiled
//! into every binary; [`Db::migrate`] applies what is missing at start-up
//! (sqlx takes an advisory lock, so replicas starting together are safe).
//!
//! Every write is an upsert keyed by the natural key, so a redelivered Kafka
//! message never adds a row, and batches go in one statement (`UNNEST` over
//! column arrays) so high rates cost one round trip per batch, not per row.
//! A stale redelivery never overwrites newer data: updates apply only when the
//! incoming record is at least as recent as the stored one.

mod config;
mod queries;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::DbConfig;
pub use queries::{StoredMetrics, upsert_games_on, upsert_outcomes_on};

use anyhow::Context as _;
use sqlx::migrate::MigrateDatabase as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// The migrations of `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// A Postgres pool with the stack's queries. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    /// Connects, creating the database first when it is missing and
    /// `cfg.create_database` is set. Fails with the (redacted) URL and the
    /// cause when Postgres does not answer within `cfg.acquire_timeout`.
    pub async fn connect(cfg: &DbConfig) -> anyhow::Result<Self> {
        let redacted = cfg.redacted_url();
        let options: PgConnectOptions = cfg
            .url
            .expose()
            .parse()
            .with_context(|| format!("DATABASE_URL {redacted} is not a Postgres URL"))?;
        if cfg.create_database {
            let exists = tokio::time::timeout(
                cfg.acquire_timeout,
                Postgres::database_exists(cfg.url.expose()),
            )
            .await
            .with_context(|| {
                format!(
                    "Postgres at {redacted} did not answer within {:?}",
                    cfg.acquire_timeout
                )
            })?
            .with_context(|| format!("cannot reach Postgres at {redacted}"))?;
            if !exists {
                tracing::info!(url = %redacted, "creating database");
                // Two replicas may race here; losing the race is fine.
                if let Err(e) = Postgres::create_database(cfg.url.expose()).await
                    && !Postgres::database_exists(cfg.url.expose())
                        .await
                        .unwrap_or(false)
                {
                    return Err(e).with_context(|| format!("creating database at {redacted}"));
                }
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .min_connections(cfg.min_connections)
            .acquire_timeout(cfg.acquire_timeout)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to Postgres at {redacted}"))?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for queries a service keeps to itself.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations not yet applied; returns how many there are in
    /// all (this binary's).
    ///
    /// Migrations a newer release applied that this binary does not know
    /// are accepted, not an error: during a rolling update, or the rollback
    /// of one, the previous release starts against the newer schema, which
    /// it can use because every migration only adds or relaxes. (A changed
    /// or failed migration that both know still stops the start.)
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        self.apply(sqlx::migrate!("../../migrations")).await
    }

    /// [`Db::migrate`] with the migrations of `migrator` (a test stands in
    /// an older release's).
    pub async fn apply(&self, mut migrator: sqlx::migrate::Migrator) -> anyhow::Result<usize> {
        migrator.set_ignore_missing(true);
        migrator
            .run(&self.pool)
            .await
            .context("applying database migrations")?;
        Ok(migrator.iter().count())
    }

    /// `SELECT 1`, for readiness.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("Postgres did not answer")?;
        Ok(())
    }

    /// The server's version string, e.g. `15.19`.
    pub async fn server_version(&self) -> anyhow::Result<String> {
        let v: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }

    /// How many of the embedded migrations the database has applied.
    pub async fn applied_migrations(&self) -> anyhow::Result<i64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
