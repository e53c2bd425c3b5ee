//! What the services' integration tests share (a dev-dependency only).
//!
//! - [`fresh_db`]: a migrated database of the test's own ([`TestDb`]); the
//!   `TestDb` drops it when it goes, pass or fail.
//! - [`topic_prefix`], [`redis_prefix`]: names no other test uses.
//! - [`Kafka`]: an embedded broker with the stack's topics under a prefix of
//!   the test's own.
//! - [`Rig`]: all three (a broker, a database, a Redis prefix) and the
//!   settings that point a service at them.
//! - [`spawn`]: a service's `run` on 127.0.0.1:0, as a [`Spawned`] handle
//!   (address, readiness, stop).
//! - [`serve`]: a stand-in HTTP server for a service to call.
//! - [`eventually`] (and [`eventually_sync`]): the one polling helper, with a
//!   deadline.
//! - [`read_all`] and [`TopicReader`]: the one way to read a topic back,
//!   decoded as its message type.
//! - [`wait_caught_up`]: a consumer group has handled everything on its
//!   topics; [`Kafka::publish_markers`]: one message on every partition,
//!   after the rest.
//!
//! The rules the tests keep: assertions read the service's own state (its
//! API), the database or a topic, never process-global counters (the
//! Prometheus recorder is shared by every service in the process); and a
//! check that nothing (more) happened first waits on a positive signal that
//! the service got that far (a group caught up, N batches processed, a marker
//! message through), never on a sleep.

mod kafka;
mod serve;
mod spawn;
mod wait;

use std::time::Duration;

pub use fantasy_db::testing::TestDb;
pub use kafka::{Kafka, TopicReader, read_all, wait_caught_up};
pub use serve::{Served, serve};
pub use spawn::{Spawned, spawn};
pub use wait::{Done, eventually, eventually_sync};

/// How long a service gets to become ready.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// A migrated database of the test's own on the test server
/// (`FANTASY_TEST_DATABASE_URL`, else the local one). Dropped with the
/// [`TestDb`].
pub async fn fresh_db() -> TestDb {
    TestDb::new().await.unwrap_or_else(|e| {
        panic!(
            "a fresh test database on {} (is Postgres up? see scripts/setup.sh): {e:#}",
            fantasy_config::redact_url(&fantasy_db::testing::server_url())
        )
    })
}

/// A Kafka topic prefix no other test uses (`t<uuid>.`).
pub fn topic_prefix() -> String {
    format!("t{}.", uuid::Uuid::new_v4().simple())
}

/// A Redis key prefix no other test uses (`test:<uuid>:`).
pub fn redis_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// What a service's tests share: an embedded broker with the stack's topics
/// under a prefix of the test's own, a fresh database, a Redis prefix of its
/// own, and the settings that point a service at the three.
#[derive(Debug)]
pub struct Rig {
    pub kafka: Kafka,
    pub db: TestDb,
    pub redis_prefix: String,
    /// `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `DATABASE_URL`, `REDIS_PREFIX`,
    /// and the service's own settings.
    pub env: fantasy_config::Env,
}

impl Rig {
    /// `brokers` brokers, `partitions` partitions per topic, `client_id` for
    /// the test's own Kafka clients, and the service's own `settings`.
    pub async fn start(
        brokers: i32,
        partitions: i32,
        client_id: &str,
        settings: &[(&str, &str)],
    ) -> Self {
        let kafka = Kafka::start(brokers, partitions, client_id);
        let db = fresh_db().await;
        let redis_prefix = redis_prefix();
        let env = kafka
            .env()
            .with("DATABASE_URL", &db.url)
            .with("REDIS_PREFIX", &redis_prefix);
        let env = env_with(&env, settings);
        Self {
            kafka,
            db,
            redis_prefix,
            env,
        }
    }
}

/// `env` with `extra` set on top (a test's own settings over its rig's).
pub fn env_with(env: &fantasy_config::Env, extra: &[(&str, &str)]) -> fantasy_config::Env {
    extra
        .iter()
        .fold(env.clone(), |env, (name, value)| env.with(*name, *value))
}
