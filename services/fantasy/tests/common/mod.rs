//! What the stack-wide tests share: the whole stack in this test's process
//! ([`Stack`]: `fantasy up` on free ports, on a database and a Redis prefix
//! of its own, stopped and cleaned up when the test ends, pass or fail), the
//! stack as processes ([`procs`]), dependencies a test can break
//! ([`faults`]), and tokens ([`token`]).
#![allow(dead_code, clippy::unwrap_used)]

pub mod faults;
pub mod procs;

use std::time::Duration;

use fantasy::up::{self, Endpoints, UpArgs};
use fantasy_config::Env;
use fantasy_db::testing::TestDb;
use fantasy_http::auth::{AuthConfig, Authenticator, Claims};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// An HS256 token signed with `secret`, expiring `expires_in` seconds from
/// now (negative: already expired).
pub fn token(secret: &str, admin: bool, expires_in: i64, channels: Option<&[&str]>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Authenticator::new(&AuthConfig::with_secret(secret))
        .issue(&Claims {
            sub: "fantasy-test".into(),
            exp: u64::try_from(now + expires_in).unwrap(),
            admin,
            channels: channels.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
        })
        .unwrap()
}

pub struct Stack {
    pub db: TestDb,
    /// The stack's data directory (models).
    pub data: tempfile::TempDir,
    shutdown: CancellationToken,
    /// A failing assertion stops the stack too (its tasks hold the runtime).
    _stop_on_panic: DropGuard,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    up: Option<tokio::sync::oneshot::Receiver<Endpoints>>,
}

impl Stack {
    /// Starts the stack with `partitions` partitions per topic and
    /// `settings` over the defaults (`RUST_LOG=warn`).
    pub async fn start(partitions: i32, settings: &[(&str, &str)]) -> Self {
        fantasy_telemetry::install_crypto_provider();
        let db = TestDb::new().await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        let env = settings.iter().fold(
            Env::from_pairs([
                ("DATABASE_URL", db.url.as_str()),
                ("REDIS_PREFIX", &prefix),
                ("RUST_LOG", "warn"),
            ]),
            |env, (name, value)| env.with(*name, *value),
        );
        let cfg = fantasy::Config::from_env(&env).unwrap();
        let args = UpArgs {
            port: 0,
            data_dir: data.path().to_owned(),
            partitions,
            ..UpArgs::default()
        };
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { up::run(&cfg, &env, args, shutdown, Some(tx)).await })
        };
        Self {
            db,
            data,
            _stop_on_panic: shutdown.clone().drop_guard(),
            shutdown,
            task: Some(task),
            up: Some(rx),
        }
    }

    /// The services' addresses, once the stack is up (its first model
    /// loaded) within `within`.
    pub async fn up(&mut self, within: Duration) -> Endpoints {
        let rx = self.up.take().expect("up is asked once");
        tokio::time::timeout(within, rx)
            .await
            .unwrap_or_else(|_| panic!("the stack was not up within {within:?}"))
            .expect("the stack stopped before it was up")
    }

    /// Fails the test when the stack has stopped on its own.
    pub async fn assert_running(&mut self) {
        let task = self.task.as_mut().expect("the stack was stopped");
        if task.is_finished() {
            let ended = self.task.take().unwrap().await;
            panic!("the stack stopped: {ended:?}");
        }
    }

    /// Stops the stack and asserts it stopped cleanly within `within`.
    pub async fn stop(mut self, within: Duration) {
        self.shutdown.cancel();
        let task = self.task.take().expect("the stack was stopped");
        tokio::time::timeout(within, task)
            .await
            .unwrap_or_else(|_| panic!("the stack did not stop within {within:?}"))
            .unwrap()
            .unwrap();
    }
}
