//! `fantasy migrate`: apply the database schema.

use fantasy_db::{Db, DbConfig};

/// Connects (creating the database if missing) and applies the migrations;
/// returns how many the schema has.
pub async fn run(cfg: &DbConfig) -> anyhow::Result<usize> {
    let db = Db::connect(cfg).await?;
    let count = db.migrate().await?;
    println!(
        "Database {} is up to date ({count} migration{}).",
        cfg.redacted_url(),
        if count == 1 { "" } else { "s" }
    );
    db.close().await;
    Ok(count)
}
