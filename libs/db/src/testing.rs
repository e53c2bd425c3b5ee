//! A fresh database per test (feature `testing`).
//!
//! Each test gets its own database, named `fantasy_test_<uuid>`, with the
//! migrations applied, so tests run in parallel without seeing each other's
//! rows. [`TestDb::drop_database`] removes it; a test that panics leaves it
//! behind for inspection (`scripts/clean-test-dbs.sh` removes leftovers).

use anyhow::Context as _;
use sqlx::Executor as _;
use sqlx::postgres::PgPoolOptions;

use crate::{Db, DbConfig};

/// The server tests use: `FANTASY_TEST_DATABASE_URL`, else the local one.
pub fn server_url() -> String {
    std::env::var("FANTASY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A migrated database of its own.
#[derive(Debug)]
pub struct TestDb {
    pub db: Db,
    pub name: String,
    pub url: String,
    server: String,
}

impl TestDb {
    /// Creates and migrates a new database.
    pub async fn new() -> anyhow::Result<Self> {
        let server = server_url();
        let name = format!("fantasy_test_{}", uuid::Uuid::new_v4().simple());
        let mut url = url::Url::parse(&server).context("FANTASY_TEST_DATABASE_URL")?;
        url.set_path(&name);
        let url = url.to_string();
        let mut cfg = DbConfig::new(&url);
        cfg.max_connections = 5;
        cfg.min_connections = 0;
        let db = Db::connect(&cfg).await?;
        db.migrate().await?;
        Ok(Self {
            db,
            name,
            url,
            server,
        })
    }

    /// Closes the pool and drops the database.
    pub async fn drop_database(self) -> anyhow::Result<()> {
        self.db.close().await;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.server)
            .await?;
        admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name).as_str())
            .await?;
        admin.close().await;
        Ok(())
    }
}
