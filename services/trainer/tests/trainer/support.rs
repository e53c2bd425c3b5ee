//! The trainer's test rig.

use std::time::Duration;

use fantasy_features::EloParams;
use fantasy_http::auth::{AuthConfig, Authenticator, Claims};
use fantasy_kafka::Producer;
use fantasy_messages::{Game, Message, Outcome, Topic};
use fantasy_sim::{Season, SimConfig};
use fantasy_testkit::{READY_WITHIN, Rig, Spawned, env_with, eventually, wait_caught_up};
use serde_json::Value;
use trainer::sim::season_messages;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// What one test's trainer instances share: the kit's rig (a broker, a
/// database), a model store, a producer.
pub struct Infra {
    pub rig: Rig,
    pub store: tempfile::TempDir,
    pub producer: Producer,
}

impl std::ops::Deref for Infra {
    type Target = Rig;
    fn deref(&self) -> &Rig {
        &self.rig
    }
}

impl Infra {
    pub async fn new() -> Self {
        let store = tempfile::tempdir().unwrap();
        let store_url = format!("file://{}", store.path().display());
        let settings = [
            ("KAFKA_CREATE_TOPICS", "false"),
            ("JWT_SECRET", SECRET),
            ("MODEL_STORE_URL", &store_url),
            ("TRAIN_MIN_GAMES", "200"),
            ("RETRAIN_MIN_SAMPLES", "50"),
            ("RETRAIN_EVERY_OUTCOMES", "0"),
            ("RETRAIN_COOLDOWN", "1h"),
            ("SHUTDOWN_TIMEOUT", "10s"),
        ];
        let rig = Rig::start(1, 4, "trainer-test", &settings).await;
        let producer = rig.kafka.producer();
        Self {
            rig,
            store,
            producer,
        }
    }

    /// Stores a simulated league's finished games (with `elo-v1` features,
    /// as the collector would) and their outcomes; returns both.
    pub async fn insert_history(
        &self,
        seed: u64,
        games_per_team: usize,
    ) -> (Vec<Game>, Vec<Outcome>) {
        let season = Season::simulate(&SimConfig {
            seed,
            teams: 20,
            games_per_team,
            ..SimConfig::default()
        });
        let (games, outcomes) = season_messages(&season, EloParams::default());
        for chunk in games.chunks(2000) {
            self.db.db.upsert_games(chunk).await.unwrap();
        }
        for chunk in outcomes.chunks(2000) {
            self.db.db.upsert_outcomes(chunk).await.unwrap();
        }
        (games, outcomes)
    }

    pub async fn publish<M: Message>(&self, messages: &[M]) {
        self.producer.publish_batch(messages).await.unwrap();
    }

    /// The active version in the registry, if any.
    pub async fn active(&self) -> Option<String> {
        sqlx::query_scalar(
            "SELECT version FROM models WHERE model_name = 'win-prob' AND status = 'active'",
        )
        .fetch_optional(self.db.db.pool())
        .await
        .unwrap()
    }

    /// Waits until `check` gives a value; after `within`, fails with `what`
    /// and the runs and latest scores in the database.
    pub async fn wait_for<F, Fut, T>(&self, what: &str, within: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        eventually(what, within, || {
            let checked = check();
            async move {
                match checked.await {
                    Some(v) => Ok(v),
                    None => Err(self.state().await),
                }
            }
        })
        .await
    }

    /// The training runs and the latest scores, for failure messages.
    async fn state(&self) -> String {
        let runs: Vec<(String, String)> =
            sqlx::query_as("SELECT trigger, status FROM training_runs ORDER BY id")
                .fetch_all(self.db.db.pool())
                .await
                .unwrap_or_default();
        let scores: Vec<(String, i64, f64)> = sqlx::query_as(
            "SELECT model_version, sample_count, accuracy FROM model_metrics
             ORDER BY evaluated_at DESC LIMIT 5",
        )
        .fetch_all(self.db.db.pool())
        .await
        .unwrap_or_default();
        format!("runs {runs:?}; latest scores {scores:?}")
    }

    /// Waits until the trainer's consumer of `topic` has handled everything
    /// on it (its group, `<TRAINER_GROUP>.<topic>`, committed every end).
    pub async fn caught_up(&self, topic: Topic) {
        let group = format!("trainer.{}", topic.name(""));
        wait_caught_up(
            &self.kafka.config,
            &group,
            &[topic],
            Duration::from_secs(60),
        )
        .await;
    }
}

/// A signed token.
pub fn token(admin: bool) -> String {
    Authenticator::new(&AuthConfig::with_secret(SECRET))
        .issue(&Claims {
            sub: if admin { "ops" } else { "viewer" }.into(),
            exp: (chrono::Utc::now().timestamp() + 3600) as u64,
            admin,
            channels: None,
        })
        .unwrap()
}

/// A ready trainer with the infra's settings plus `extra`.
pub async fn spawn(infra: &Infra, extra: &[(&str, &str)]) -> Spawned {
    let cfg = trainer::Config::from_env(&env_with(&infra.env, extra)).unwrap();
    let mut app = fantasy_testkit::spawn(trainer::run, cfg).await;
    app.wait_ready(READY_WITHIN).await;
    app
}

/// `method path` with an admin token; the status and the JSON body.
pub async fn call(app: &Spawned, method: &str, path: &str) -> (u16, Value) {
    call_as(app, method, path, Some(&token(true))).await
}

pub async fn call_as(app: &Spawned, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let url = app.url(path);
    let mut req = match method {
        "POST" => app.http.post(url),
        _ => app.http.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
