//! The trainer's test rig.

use std::time::Duration;

use fantasy_config::Env;
use fantasy_db::testing::TestDb;
use fantasy_features::EloParams;
use fantasy_http::auth::{AuthConfig, Authenticator, Claims};
use fantasy_kafka::{EmbeddedBroker, KafkaConfig, Producer, TailReader, TailStart};
use fantasy_messages::{Game, Message, Outcome, Topic};
use fantasy_sim::{Season, SimConfig};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trainer::sim::season_messages;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// What one test's trainer instances share.
pub struct Infra {
    pub _broker: EmbeddedBroker,
    pub kafka: KafkaConfig,
    pub db: TestDb,
    pub store: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub producer: Producer,
}

impl Infra {
    pub async fn new() -> Self {
        fantasy_telemetry::install_crypto_provider();
        let broker = EmbeddedBroker::start(1).unwrap();
        let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
        let specs: Vec<_> = Topic::ALL.iter().map(|t| t.spec(&prefix, 4)).collect();
        broker.create_topics(&specs).unwrap();
        let mut kafka = KafkaConfig::new(broker.bootstrap_servers(), "trainer-test");
        kafka.topic_prefix = prefix.clone();
        let db = TestDb::new().await.unwrap();
        let store = tempfile::tempdir().unwrap();
        let env = vec![
            (
                "KAFKA_BROKERS".into(),
                broker.bootstrap_servers().to_owned(),
            ),
            ("KAFKA_TOPIC_PREFIX".into(), prefix),
            ("KAFKA_CREATE_TOPICS".into(), "false".into()),
            ("DATABASE_URL".into(), db.url.clone()),
            ("JWT_SECRET".into(), SECRET.into()),
            (
                "MODEL_STORE_URL".into(),
                format!("file://{}", store.path().display()),
            ),
            ("TRAIN_MIN_GAMES".into(), "200".into()),
            ("RETRAIN_MIN_SAMPLES".into(), "50".into()),
            ("RETRAIN_EVERY_OUTCOMES".into(), "0".into()),
            ("RETRAIN_COOLDOWN".into(), "1h".into()),
            ("SHUTDOWN_TIMEOUT".into(), "10s".into()),
        ];
        let producer = Producer::new(&kafka).unwrap();
        Self {
            _broker: broker,
            kafka,
            db,
            store,
            env,
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

    /// Every message on `topic` so far (waits until none came for `quiet`).
    pub async fn read(&self, topic: Topic, quiet: Duration) -> Vec<Value> {
        let name = self.kafka.topics().name(topic).to_owned();
        let reader = TailReader::open(
            &self.kafka,
            &name,
            TailStart::LastPerPartition(i64::MAX / 4),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        while let Some(r) = reader.recv_timeout(quiet).await {
            let r = r.unwrap();
            out.push(serde_json::from_slice(&r.payload.unwrap()).unwrap());
        }
        out
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

    /// Waits until `check` holds (polling), or fails with `what`.
    pub async fn wait_for<F, Fut, T>(&self, what: &str, within: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
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
                panic!("timed out waiting for {what}; runs {runs:?}; latest scores {scores:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

/// A trainer instance.
pub struct App {
    pub addr: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl App {
    pub async fn spawn(infra: &Infra, extra: &[(&str, &str)]) -> App {
        let mut pairs = infra.env.clone();
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cfg = trainer::Config::from_env(&Env::from_pairs(pairs)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(trainer::run(cfg, listener, shutdown.clone()));
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/ready")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(!task.is_finished(), "the trainer exited during start-up");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the trainer did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        App {
            addr,
            http,
            shutdown,
            task: Some(task),
        }
    }

    /// `method path` with an admin token; the status and the JSON body.
    pub async fn call(&self, method: &str, path: &str) -> (u16, Value) {
        self.call_as(method, path, Some(&token(true))).await
    }

    pub async fn call_as(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let url = format!("http://{}{path}", self.addr);
        let mut req = match method {
            "POST" => self.http.post(url),
            _ => self.http.get(url),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the trainer did not stop within 30 s")
            .unwrap()
            .unwrap();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
