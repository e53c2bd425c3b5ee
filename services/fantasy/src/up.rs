//! `fantasy up`: the whole stack in one process.
//!
//! The embedded Kafka-protocol broker (unless `KAFKA_BROKERS` names one),
//! the migrations, then the collector, predictor, fanout and trainer, each
//! through its own `run`, with local defaults: no authentication, models in
//! a local folder, and a simulated league whose first season is played at
//! once as history (the trainer bootstraps the first model from it) and whose
//! second plays live in minutes. Prints the URLs once the predictor serves.
//! Shutdown is ordered: the collector stops producing first, the fanout
//! last, so the games in flight reach the clients.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use fantasy_config::{Env, Profile};
use fantasy_db::Db;
use fantasy_kafka::EmbeddedBroker;
use fantasy_messages::Topic;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Config;

/// The default source: a 30-team league, one season of history played at
/// once, then a live season in 10 minutes (a round every few seconds).
pub const DEFAULT_SOURCES: &str = "sim:nba?games=164&history=82&minutes=10";

/// What `fantasy up` was asked for.
#[derive(Clone, Debug)]
pub struct UpArgs {
    /// The address the four services bind (`127.0.0.1`, or `0.0.0.0` to be
    /// reached from other machines).
    pub host: String,
    /// The predictor's port; the fanout, collector and trainer take the
    /// next three. 0 picks free ports (tests).
    pub port: u16,
    /// Where models are stored (`MODEL_STORE_URL` wins when set).
    pub data_dir: PathBuf,
    /// Partitions of the embedded broker's topics.
    pub partitions: i32,
}

impl Default for UpArgs {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            data_dir: PathBuf::from(".fantasy"),
            partitions: 8,
        }
    }
}

/// The running stack's addresses.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub predictor: SocketAddr,
    pub fanout: SocketAddr,
    pub collector: SocketAddr,
    pub trainer: SocketAddr,
    pub kafka: String,
}

fn progress(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// The environment the services read: the caller's, with local defaults
/// for what it leaves unset.
fn service_env(env: &Env, kafka: &str, args: &UpArgs) -> anyhow::Result<Env> {
    let mut env = env.clone().with("KAFKA_BROKERS", kafka);
    let store = std::fs::create_dir_all(args.data_dir.join("models"))
        .and_then(|()| std::fs::canonicalize(args.data_dir.join("models")))
        .with_context(|| format!("creating {}", args.data_dir.join("models").display()))?;
    let defaults = [
        ("MODEL_STORE_URL", format!("file://{}", store.display())),
        ("COLLECTOR_SOURCES", DEFAULT_SOURCES.to_owned()),
        ("KAFKA_PARTITIONS", args.partitions.to_string()),
    ];
    for (name, value) in defaults {
        if env.get(name).is_none() {
            env = env.with(name, value);
        }
    }
    Ok(env)
}

async fn bind(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((host, port)).await.with_context(|| {
        format!("cannot listen on {host}:{port} (is another stack running? try --port)")
    })
}

/// Runs the stack until `shutdown`; `ready` gets the addresses once the
/// predictor serves a model.
pub async fn run(
    cfg: &Config,
    env: &Env,
    args: UpArgs,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<Endpoints>>,
) -> anyhow::Result<()> {
    // Kafka: the caller's, or an embedded one.
    let mut _broker: Option<EmbeddedBroker> = None;
    let kafka = match env.get("KAFKA_BROKERS") {
        Some(b) => {
            progress(format!("  kafka       {b} (KAFKA_BROKERS)"));
            b.to_owned()
        }
        None => {
            let broker = EmbeddedBroker::start(1)?;
            let prefix = &cfg.kafka.topic_prefix;
            let specs: Vec<_> = Topic::ALL
                .iter()
                .map(|t| t.spec(prefix, args.partitions))
                .collect();
            broker.create_topics(&specs)?;
            let b = broker.bootstrap_servers().to_owned();
            progress(format!(
                "  kafka       embedded broker at {b} ({} topics, {} partitions)",
                specs.len(),
                args.partitions
            ));
            _broker = Some(broker);
            b
        }
    };
    let db = Db::connect(&cfg.db).await?;
    let applied = db.migrate().await?;
    db.close().await;
    progress(format!("  postgres    {} migrations applied", applied));
    let env = service_env(env, &kafka, &args)?;

    let step = |i: u16| if args.port == 0 { 0 } else { args.port + i };
    let listeners = [
        bind(&args.host, step(0)).await?,
        bind(&args.host, step(1)).await?,
        bind(&args.host, step(2)).await?,
        bind(&args.host, step(3)).await?,
    ];
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<_, _>>()?;
    let [predictor_l, fanout_l, collector_l, trainer_l] = listeners;
    let endpoints = Endpoints {
        predictor: addrs[0],
        fanout: addrs[1],
        collector: addrs[2],
        trainer: addrs[3],
        kafka: kafka.clone(),
    };

    // Local defaults: no authentication unless AUTH_REQUIRED says so.
    let predictor_cfg = predictor::Config::for_profile(&env, Profile::Local)?;
    let fanout_cfg = fanout::Config::for_profile(&env, Profile::Local)?;
    let collector_cfg = collector::Config::from_env(&env)?;
    let trainer_cfg = trainer::Config::for_profile(&env, Profile::Local)?;
    let model_name = trainer_cfg.model_name.clone();

    // Started consumers before producers, stopped the other way round: the
    // collector first, the fanout last.
    let mut sup = fantasy_http::Supervisor::new("the stack");
    let deadline = Duration::from_secs(60);
    let [collector, predictor, trainer, fanout] = [
        sup.stage("stopping the collector", deadline),
        sup.stage("stopping the predictor", deadline),
        sup.stage("stopping the trainer", deadline),
        sup.stage("stopping the fanout", deadline),
    ];
    sup.critical(fanout, "fanout", |t| fanout::run(fanout_cfg, fanout_l, t));
    sup.critical(trainer, "trainer", |t| {
        trainer::run(trainer_cfg, trainer_l, t)
    });
    sup.critical(predictor, "predictor", |t| {
        predictor::run(predictor_cfg, predictor_l, t)
    });
    sup.critical(collector, "collector", |t| {
        collector::run(collector_cfg, collector_l, t)
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("an HTTP client")?;
    sup.background(collector, "progress report", |stop| {
        report_progress(http, endpoints, model_name, ready, stop)
    });
    let result = sup.run(shutdown).await;
    drop(_broker);
    result
}

/// Reports the way to the first model served, then the endpoints (and
/// sends them to `ready`).
async fn report_progress(
    http: reqwest::Client,
    endpoints: Endpoints,
    model_name: String,
    mut ready: Option<tokio::sync::oneshot::Sender<Endpoints>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut last_line = String::new();
    loop {
        let line = status_line(&http, &endpoints, &model_name).await;
        let serving = http
            .get(format!("http://{}/ready", endpoints.predictor))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if serving {
            print_ready(&endpoints);
            if let Some(tx) = ready.take() {
                let _ = tx.send(endpoints.clone());
            }
            break;
        }
        if line != last_line {
            progress(format!("  ...         {line}"));
            last_line = line;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    stop.cancelled().await;
    progress("  stopping    collector, predictor, trainer, fanout");
    Ok(())
}

/// One line on the way to the first model: history in, model trained.
async fn status_line(http: &reqwest::Client, e: &Endpoints, model: &str) -> String {
    let published = async {
        let v: serde_json::Value = http
            .get(format!("http://{}/v1/sources", e.collector))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let n: u64 = v["sources"]
            .as_array()?
            .iter()
            .filter_map(|s| s["totals"]["outcomes"].as_u64())
            .sum();
        Some(n)
    }
    .await;
    let active = async {
        let v: serde_json::Value = http
            .get(format!("http://{}/v1/models", e.trainer))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["models"]
            .as_array()?
            .iter()
            .find(|m| m["status"] == "active")
            .and_then(|m| m["version"].as_str().map(str::to_owned))
    }
    .await;
    match (published, active) {
        (_, Some(v)) => format!("model {model} {v} trained; the predictor is loading it"),
        (Some(n), None) if n > 0 => format!(
            "collector: {n} results in; the trainer trains the first model once it has TRAIN_MIN_GAMES of them"
        ),
        _ => "starting the services".into(),
    }
}

fn print_ready(e: &Endpoints) {
    let host = |a: &SocketAddr| {
        if a.ip().is_unspecified() {
            format!("localhost:{}", a.port())
        } else {
            a.to_string()
        }
    };
    progress(format!(
        "\nfantasy is up.\n\
         \n  dashboard   http://{fanout}/\
         \n  REST        http://{predictor}/v1/predict, /v1/predictions/<game_id>, /v1/models/active\
         \n  WebSocket   ws://{fanout}/v1/stream\
         \n  trainer     http://{trainer}/v1/models, POST /v1/train\
         \n  collector   http://{collector}/v1/sources\
         \n  kafka       {kafka}   (other processes: export KAFKA_BROKERS={kafka})\
         \n\nCtrl-C stops everything.",
        fanout = host(&e.fanout),
        predictor = host(&e.predictor),
        trainer = host(&e.trainer),
        collector = host(&e.collector),
        kafka = e.kafka,
    ));
}
