//! A fresh database per test (feature `testing`).
//!
//! Each test gets its own database, named `fantasy_test_<uuid>`, with the
//! migrations applied, so tests run in parallel without seeing each other's
//! rows. It is dropped with the [`TestDb`], pass or fail (a panicking test
//! unwinds through the drop): after a run none is left.
//! [`TestDb::drop_database`] does the same from async code, and reports
//! errors.

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
    dropped: bool,
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
            dropped: false,
        })
    }

    /// Closes the pool and drops the database.
    pub async fn drop_database(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        self.db.close().await;
        drop_named(&self.server, &self.name).await
    }
}

async fn drop_named(server: &str, name: &str) -> anyhow::Result<()> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(server)
        .await?;
    // FORCE ends the connections still open to it (a pool a test leaked).
    admin
        .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
        .await?;
    admin.close().await;
    Ok(())
}

impl Drop for TestDb {
    /// Drops the database on a thread of its own (a drop cannot await, and
    /// may run inside a runtime that a blocking wait would stall).
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_named(&server, &name))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("test database {} left behind: {e:#}", self.name),
            Err(_) => eprintln!("test database {} left behind: the drop panicked", self.name),
        }
    }
}
