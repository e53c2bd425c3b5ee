//! `fantasy check`: does each dependency answer?

use std::fmt;
use std::time::{Duration, Instant};

use fantasy_cache::Cache;
use fantasy_config::redact_url;
use fantasy_db::{Db, MIGRATOR};
use fantasy_kafka::fetch_broker_info;
use fantasy_messages::Topic;

use crate::Config;

/// One dependency's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub name: &'static str,
    pub target: String,
    pub ok: bool,
    pub detail: String,
    /// What to do about a failure.
    pub hint: Option<String>,
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<9} {:<5} {}  [{}, {} ms]",
            self.name,
            if self.ok { "ok" } else { "FAIL" },
            self.detail,
            self.target,
            self.elapsed.as_millis()
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n{:<15} hint: {hint}", "")?;
        }
        Ok(())
    }
}

/// Checks Postgres, Redis and Kafka concurrently, each within `timeout`.
pub async fn run(cfg: &Config, timeout: Duration) -> Vec<Report> {
    let (pg, redis, kafka) = tokio::join!(
        timed(
            "postgres",
            cfg.db.redacted_url(),
            "start Postgres (scripts/services.sh does) or set DATABASE_URL; \
             `fantasy migrate` creates the database",
            timeout,
            postgres(cfg),
        ),
        timed(
            "redis",
            redact_url(cfg.redis.url.expose()),
            "start Redis (scripts/services.sh does) or set REDIS_URL",
            timeout,
            redis(cfg),
        ),
        timed(
            "kafka",
            cfg.kafka.brokers.clone(),
            "run `fantasy broker` and set KAFKA_BROKERS to the address it prints",
            timeout,
            kafka(cfg, timeout),
        ),
    );
    vec![pg, redis, kafka]
}

/// A check's detail line, or why it failed.
type Answer = Result<String, String>;

async fn timed(
    name: &'static str,
    target: String,
    hint: &str,
    timeout: Duration,
    check: impl std::future::Future<Output = Answer>,
) -> Report {
    let start = Instant::now();
    let answer = tokio::time::timeout(timeout, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
    let (ok, detail, hint) = match answer {
        Ok(detail) => (true, detail, None),
        Err(detail) => (false, detail, Some(hint.to_owned())),
    };
    Report {
        name,
        target,
        ok,
        detail,
        hint,
        elapsed: start.elapsed(),
    }
}

async fn postgres(cfg: &Config) -> Answer {
    let mut db_cfg = cfg.db.clone();
    // A check looks; it does not create the database.
    db_cfg.create_database = false;
    db_cfg.max_connections = 1;
    db_cfg.min_connections = 0;
    let db = Db::connect(&db_cfg).await.map_err(|e| error_chain(&e))?;
    let version = db.server_version().await.unwrap_or_else(|_| "?".into());
    let total = MIGRATOR.iter().count();
    let schema = match db.applied_migrations().await {
        Ok(n) if n as usize >= total => format!("schema up to date ({})", migrations(total)),
        Ok(n) => format!("schema has {n} of {total} migrations: run `fantasy migrate`"),
        Err(_) => "schema not created yet: run `fantasy migrate`".to_owned(),
    };
    db.close().await;
    Ok(format!("PostgreSQL {version}, {schema}"))
}

async fn redis(cfg: &Config) -> Answer {
    let cache = Cache::connect(&cfg.redis)
        .await
        .map_err(|e| e.to_string())?;
    cache.ping().await.map_err(|e| e.to_string())?;
    let version = cache.server_version().await.unwrap_or_else(|_| "?".into());
    Ok(format!("Redis {version}"))
}

async fn kafka(cfg: &Config, timeout: Duration) -> Answer {
    let info = fetch_broker_info(&cfg.kafka, timeout)
        .await
        .map_err(|e| format!("no broker answered: {e}"))?;
    let topics = cfg.kafka.topics();
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for t in Topic::ALL {
        let name = topics.name(t);
        match info.partitions(name) {
            Some(n) => present.push(format!("{name}({n})")),
            None => missing.push(name.to_owned()),
        }
    }
    let mut detail = format!(
        "{} brokers; topics: {}",
        info.brokers.len(),
        present.join(" ")
    );
    if !missing.is_empty() {
        detail.push_str(&format!(
            "; missing: {} (services create them at start-up)",
            missing.join(" ")
        ));
    }
    Ok(detail)
}

fn migrations(n: usize) -> String {
    format!("{n} migration{}", if n == 1 { "" } else { "s" })
}

/// The error's causes, joined, leaving out a cause that only repeats the one
/// before it (sqlx's errors do).
fn error_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
