//! The collector's test rig: the embedded Kafka broker, a database of the
//! test's own, the local Redis under a prefix of its own, a scoreboard
//! server, and collector instances on random ports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use fantasy_config::Env;
use fantasy_db::testing::TestDb;
use fantasy_kafka::{EmbeddedBroker, KafkaConfig, TailReader, TailStart};
use fantasy_messages::{Game, Outcome, Topic};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the instances of one test share.
pub struct Infra {
    pub _broker: EmbeddedBroker,
    pub kafka: KafkaConfig,
    pub db: TestDb,
    pub env: Vec<(String, String)>,
}

impl Infra {
    pub async fn new() -> Self {
        let broker = EmbeddedBroker::start(3).unwrap();
        let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
        let specs: Vec<_> = Topic::ALL.iter().map(|t| t.spec(&prefix, 4)).collect();
        broker.create_topics(&specs).unwrap();
        let mut kafka = KafkaConfig::new(broker.bootstrap_servers(), "collector-test");
        kafka.topic_prefix = prefix.clone();
        let db = TestDb::new().await.unwrap();
        let env = vec![
            (
                "KAFKA_BROKERS".into(),
                broker.bootstrap_servers().to_owned(),
            ),
            ("KAFKA_TOPIC_PREFIX".into(), prefix),
            ("KAFKA_CREATE_TOPICS".into(), "false".into()),
            ("DATABASE_URL".into(), db.url.clone()),
            (
                "REDIS_PREFIX".into(),
                format!("test:{}:", uuid::Uuid::new_v4().simple()),
            ),
            // A small filter: the tests cross generations and false
            // positives, which must cost nothing but a lookup.
            ("DEDUP_EXPECTED_ITEMS".into(), "1000".into()),
            ("COLLECTOR_RETRY_MAX".into(), "500ms".into()),
            ("SHUTDOWN_TIMEOUT".into(), "10s".into()),
        ];
        Self {
            _broker: broker,
            kafka,
            db,
            env,
        }
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

    pub async fn games(&self) -> Vec<Game> {
        self.read(Topic::Games, Duration::from_millis(1500))
            .await
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    }

    pub async fn outcomes(&self) -> Vec<Outcome> {
        self.read(Topic::Outcomes, Duration::from_millis(1500))
            .await
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    }
}

/// A collector instance.
pub struct App {
    pub addr: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl App {
    pub async fn spawn(infra: &Infra, extra: &[(&str, &str)]) -> App {
        fantasy_telemetry::install_crypto_provider();
        let mut pairs = infra.env.clone();
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cfg = collector::Config::from_env(&Env::from_pairs(pairs)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(collector::run(cfg, listener, shutdown.clone()));
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/ready")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(!task.is_finished(), "the collector exited during start-up");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the collector did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        App {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// `GET /v1/sources`: the sources of this instance by name.
    pub async fn sources(&self) -> HashMap<String, Value> {
        let body: Value = reqwest::get(format!("http://{}/v1/sources", self.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_owned(), s.clone()))
            .collect()
    }

    /// Waits until every source of this instance is in `state`.
    pub async fn wait_all(&self, state: &str, within: Duration) -> HashMap<String, Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let sources = self.sources().await;
            if sources.values().all(|s| s["state"] == state) {
                return sources;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sources not {state} in time: {sources:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the collector did not stop within 30 s")
            .unwrap()
            .unwrap();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A scoreboard server (ESPN site-API paths) on its own thread and runtime.
#[derive(Clone)]
pub struct Scoreboards {
    pub addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
}

#[derive(Default)]
struct ServerState {
    body: Vec<u8>,
    hits: HashMap<String, u64>,
}

async fn scoreboard(
    State(state): State<Arc<Mutex<ServerState>>>,
    Path((sport, league)): Path<(String, String)>,
) -> (StatusCode, Vec<u8>) {
    let mut s = state.lock().unwrap();
    *s.hits.entry(format!("{sport}/{league}")).or_default() += 1;
    (StatusCode::OK, s.body.clone())
}

impl Scoreboards {
    pub fn start(body: &[u8]) -> Self {
        let state = Arc::new(Mutex::new(ServerState {
            body: body.to_vec(),
            hits: HashMap::new(),
        }));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let router = Router::new()
            .route("/{sport}/{league}/scoreboard", get(scoreboard))
            .with_state(state.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                axum::serve(listener, router).await.unwrap();
            });
        });
        Self { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_body(&self, body: Vec<u8>) {
        self.state.lock().unwrap().body = body;
    }

    /// Requests per `sport/league` so far.
    pub fn hits(&self) -> HashMap<String, u64> {
        self.state.lock().unwrap().hits.clone()
    }

    pub fn total_hits(&self) -> u64 {
        self.hits().values().sum()
    }

    /// Waits until at least `n` more requests than `from` arrived.
    pub async fn wait_hits(&self, from: u64, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.total_hits() < from + n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scoreboard was not polled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub const NBA: &[u8] = include_bytes!("../../fixtures/espn/nba-scoreboard.json");

/// The NBA fixture with one event's home score changed.
pub fn nba_with_home_score(event_id: &str, score: u32) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(NBA).unwrap();
    for e in v["events"].as_array_mut().unwrap() {
        if e["id"] == event_id {
            for c in e["competitions"][0]["competitors"].as_array_mut().unwrap() {
                if c["homeAway"] == "home" {
                    c["score"] = Value::String(score.to_string());
                }
            }
        }
    }
    serde_json::to_vec(&v).unwrap()
}

/// Counts of each key in `items`.
pub fn counts<'a>(items: impl IntoIterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i.to_owned()).or_default() += 1;
    }
    m
}
