//! The collector's test rig: the embedded Kafka broker, a database of the
//! test's own, the local Redis under a prefix of its own, a scoreboard
//! server, and collector instances on random ports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use fantasy_messages::{Game, Outcome};
use fantasy_testkit::{READY_WITHIN, Rig, Served, Spawned, env_with, eventually, read_all};
use serde_json::Value;

/// What the instances of one test share.
pub type Infra = Rig;

/// A broker of three (four partitions a topic), a database and a Redis
/// prefix of the test's own.
pub async fn rig() -> Infra {
    let settings = [
        ("KAFKA_CREATE_TOPICS", "false"),
        // A small filter: the tests cross generations and false
        // positives, which must cost nothing but a lookup.
        ("DEDUP_EXPECTED_ITEMS", "1000"),
        ("COLLECTOR_RETRY_MAX", "500ms"),
        ("SHUTDOWN_TIMEOUT", "10s"),
    ];
    Rig::start(3, 4, "collector-test", &settings).await
}

/// Every game on the topic now.
pub async fn published_games(infra: &Infra) -> Vec<Game> {
    read_all(&infra.kafka.config).await
}

/// Every outcome on the topic now.
pub async fn published_outcomes(infra: &Infra) -> Vec<Outcome> {
    read_all(&infra.kafka.config).await
}

/// A ready collector instance with the infra's settings plus `extra`.
pub async fn spawn(infra: &Infra, extra: &[(&str, &str)]) -> Spawned {
    let cfg = collector::Config::from_env(&env_with(&infra.env, extra)).unwrap();
    let mut app = fantasy_testkit::spawn(collector::run, cfg).await;
    app.wait_ready(READY_WITHIN).await;
    app
}

/// `GET /v1/sources`: the sources of an instance by name.
pub async fn sources_of(app: &Spawned) -> HashMap<String, Value> {
    let body = app.get_json("/v1/sources").await;
    body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s.clone()))
        .collect()
}

/// Waits until every source of `app` is in `state`.
pub async fn wait_all(app: &Spawned, state: &str, within: Duration) -> HashMap<String, Value> {
    eventually(&format!("every source {state}"), within, || async {
        let sources = sources_of(app).await;
        if sources.values().all(|s| s["state"] == state) {
            Ok(sources)
        } else {
            Err(sources)
        }
    })
    .await
}

/// The fewest batches any source of `app` has processed (published,
/// checkpointed) so far.
pub async fn batches(app: &Spawned) -> u64 {
    sources_of(app)
        .await
        .values()
        .map(|s| s["batches"].as_u64().unwrap())
        .min()
        .unwrap_or(0)
}

/// Waits until every source of `app` has processed `n` batches: all it
/// published in them is on Kafka.
pub async fn wait_batches(app: &Spawned, n: u64) {
    eventually(
        &format!("{n} batches from every source"),
        Duration::from_secs(30),
        || async {
            let sources = sources_of(app).await;
            let done = sources.values().all(|s| s["batches"].as_u64() >= Some(n));
            if done { Ok(()) } else { Err(sources) }
        },
    )
    .await;
}

/// A scoreboard server (ESPN site-API paths).
pub struct Scoreboards {
    served: Served,
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
            ..ServerState::default()
        }));
        let served = fantasy_testkit::serve(
            Router::new()
                .route("/{sport}/{league}/scoreboard", get(scoreboard))
                .with_state(Arc::clone(&state)),
        );
        Self { served, state }
    }

    pub fn base(&self) -> String {
        self.served.base()
    }

    pub fn set_body(&self, body: Vec<u8>) {
        self.state.lock().unwrap().body = body;
    }

    /// Requests per `sport/league` so far.
    pub fn hits(&self) -> HashMap<String, u64> {
        self.state.lock().unwrap().hits.clone()
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
