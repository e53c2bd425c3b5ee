//! `spawn_app` and friends.

use std::path::PathBuf;
use std::time::Duration;

use fantasy_config::Env;
use fantasy_db::testing::TestDb;
use fantasy_kafka::{EmbeddedBroker, KafkaConfig};
use fantasy_messages::Topic;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../libs/inference/fixtures")
        .join(name)
}

/// Inputs and ONNX Runtime's own outputs for the fixture models.
pub struct Expected {
    pub inputs: Vec<Vec<f32>>,
    pub probs: Vec<f64>,
}

pub fn expected(model: &str) -> Expected {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    Expected {
        inputs: serde_json::from_value(v["inputs"].clone()).unwrap(),
        probs: serde_json::from_value(v["models"][model].clone()).unwrap(),
    }
}

/// The parts a test shares with the app it started.
pub struct Infra {
    /// Kept alive for the test.
    pub _broker: EmbeddedBroker,
    pub db: TestDb,
    pub kafka: KafkaConfig,
    pub redis_prefix: String,
    pub env: Vec<(String, String)>,
}

impl Infra {
    pub async fn new() -> Self {
        let broker = EmbeddedBroker::start(3).unwrap();
        let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
        let specs: Vec<_> = Topic::ALL.iter().map(|t| t.spec(&prefix, 8)).collect();
        broker.create_topics(&specs).unwrap();
        let mut kafka = KafkaConfig::new(broker.bootstrap_servers(), "predictor-test");
        kafka.topic_prefix = prefix.clone();
        let db = TestDb::new().await.unwrap();
        let redis_prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        let env = vec![
            (
                "KAFKA_BROKERS".into(),
                broker.bootstrap_servers().to_owned(),
            ),
            ("KAFKA_TOPIC_PREFIX".into(), prefix),
            ("DATABASE_URL".into(), db.url.clone()),
            ("REDIS_PREFIX".into(), redis_prefix.clone()),
            ("INFERENCE_DEVICE".into(), "cpu".into()),
            ("SHUTDOWN_TIMEOUT".into(), "5s".into()),
        ];
        Self {
            _broker: broker,
            db,
            kafka,
            redis_prefix,
            env,
        }
    }
}

/// A running predictor.
pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl App {
    /// Starts the predictor with the infra's settings plus `extra`, and waits
    /// until it answers `/health`.
    pub async fn spawn(infra: &Infra, extra: &[(&str, &str)]) -> App {
        fantasy_telemetry::install_crypto_provider();
        let mut pairs = infra.env.clone();
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cfg =
            predictor::Config::for_profile(&Env::from_pairs(pairs), fantasy_config::Profile::Local)
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(predictor::run(cfg, listener, shutdown.clone()));
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{base}/health")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(!task.is_finished(), "the predictor exited during start-up");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the predictor did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        App {
            base,
            http,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Stops the predictor and returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the predictor did not stop within 30 s")
            .unwrap()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
