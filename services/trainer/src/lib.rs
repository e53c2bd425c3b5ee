//! The trainer: rolling evaluation, retrain triggers, training in Rust,
//! ONNX export, a champion/challenger gate, and the model registry.
//!
//! - [`eval`]: consumes `predictions` and `outcomes`, upserts both, and
//!   scores each model version over its most recent `EVAL_WINDOW` finished
//!   games (accuracy, Brier, log loss, calibration): stored in
//!   `model_metrics`, published on `metrics`, exported as gauges.
//! - [`control`]: the one loop that trains: on a threshold crossed by the
//!   active version, every `RETRAIN_EVERY_OUTCOMES` outcomes, on
//!   `POST /v1/train`, or to bootstrap the first model; with a cool-down,
//!   never two at once (a Postgres advisory lock spans replicas).
//! - [`train`]: history from Postgres (`elo-v1` features the collector
//!   stored), logistic regression on a blocking thread, the ONNX export
//!   checked through ONNX Runtime, the gate against the active model on the
//!   most recent games, the artifact to `MODEL_STORE_URL`, the version to
//!   the registry, and the promotion announced on `models`.
//! - [`api`]: the admin REST API.

pub mod api;
pub mod config;
pub mod control;
pub mod eval;
pub mod metrics;
pub mod sim;
pub mod train;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use fantasy_db::Db;
use fantasy_http::auth::Authenticator;
use fantasy_http::layers;
use fantasy_inference::Runtime;
use fantasy_kafka::{
    Consumer, ConsumerOptions, Producer, ProgressWatch, broker_answers, ensure_stack_topics,
};
use fantasy_messages::{Outcome, Prediction};
use fantasy_registry::{ModelStore, Registry};
use fantasy_telemetry::Readiness;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// What the service and [`train_once`] train with: ONNX Runtime, Postgres
/// (migrated), the model store, the stack's topics and a producer.
async fn connect(cfg: &Config) -> anyhow::Result<train::Trainer> {
    let runtime = Runtime::get(cfg.ort_library.as_deref())?;
    let db = Db::connect(&cfg.db).await?;
    db.migrate().await?;
    let store = ModelStore::open(&cfg.store_url)?;
    ensure_stack_topics(&cfg.kafka).await?;
    let producer = Producer::new(&cfg.kafka).context("creating the Kafka producer")?;
    Ok(train::Trainer {
        registry: Registry::new(db.clone()),
        db,
        store,
        producer,
        runtime,
        model_name: cfg.model_name.clone(),
        cfg: cfg.train.clone(),
    })
}

/// One training now, without the service (`fantasy train`): the same run
/// as `POST /v1/train` (history, fit, export check, the gate against the
/// active model, the registry, and the announcement on `models` when
/// promoted), under the same advisory lock, so it is safe beside running
/// trainers.
pub async fn train_once(cfg: &Config) -> Result<train::RunReport, train::RunError> {
    let trainer = connect(cfg).await?;
    let result = trainer.run(control::Reason::Cli, "fantasy train").await;
    if let Err(e) = trainer.producer.flush(Duration::from_secs(5)) {
        tracing::warn!("flushing the Kafka producer: {e}");
    }
    trainer.db.close().await;
    result
}

/// Runs the trainer until `shutdown` (or until one of its parts fails).
///
/// Shutdown: stop the consumers (they commit what was handled), let a
/// training in progress finish (up to `SHUTDOWN_TIMEOUT`), stop HTTP, flush
/// the producer.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::metrics::describe();
    let trainer = Arc::new(connect(&cfg).await?);
    let (db, producer) = (trainer.db.clone(), trainer.producer.clone());
    let topics = cfg.kafka.topics();

    let (control_tx, control_rx) = mpsc::channel(8);
    let new_outcomes = Arc::new(AtomicU64::new(0));
    let control_state = Arc::new(control::ControlState::default());
    let evaluator = Arc::new(eval::Evaluator {
        db: db.clone(),
        producer: producer.clone(),
        model_name: cfg.model_name.clone(),
        window: cfg.eval_window,
        retention: cfg.metrics_retention,
        purged_at: std::sync::Mutex::default(),
        triggers: cfg.triggers.clone(),
        new_outcomes: new_outcomes.clone(),
        control: control_tx.clone(),
    });

    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let consumers = CancellationToken::new();
    let mut watches = Vec::new();
    {
        let opts = ConsumerOptions::new(format!("{}.outcomes", cfg.group_id), [&topics.outcomes]);
        let consumer = Consumer::<Outcome>::new(&cfg.kafka, opts)?;
        watches.push(consumer.progress_watch(&cfg.kafka)?);
        let handler = eval::OutcomesHandler(evaluator.clone());
        let token = consumers.clone();
        tasks.spawn(async move {
            let r = consumer.run(handler, token).await;
            ("outcomes consumer", r.map(|_| ()).map_err(Into::into))
        });
    }
    {
        let opts = ConsumerOptions::new(
            format!("{}.predictions", cfg.group_id),
            [&topics.predictions],
        );
        let consumer = Consumer::<Prediction>::new(&cfg.kafka, opts)?;
        watches.push(consumer.progress_watch(&cfg.kafka)?);
        let handler = eval::PredictionsHandler(evaluator.clone());
        let token = consumers.clone();
        tasks.spawn(async move {
            let r = consumer.run(handler, token).await;
            ("predictions consumer", r.map(|_| ()).map_err(Into::into))
        });
    }
    let control_stop = CancellationToken::new();
    let mut control_task = tokio::spawn(control::run_loop(
        trainer.clone(),
        cfg.triggers.clone(),
        cfg.bootstrap,
        new_outcomes,
        control_state.clone(),
        control_rx,
        control_stop.clone(),
    ));

    let readiness = {
        let (db, kafka) = (db.clone(), cfg.kafka.clone());
        Readiness::new()
            .check("postgres", move || {
                let db = db.clone();
                async move { db.ping().await }
            })
            .check("kafka", move || {
                let kafka = kafka.clone();
                async move { broker_answers(&kafka).await }
            })
            .check("streams", move || {
                let answer = watches.iter().try_for_each(ProgressWatch::check);
                async move { answer }
            })
    };
    let state = Arc::new(api::AppState {
        trainer: trainer.clone(),
        control: control_tx,
        state: control_state,
        auth_required: cfg.auth.required,
        // Before the timeout layer's 503.
        answer_within: cfg.http.request_timeout - cfg.http.request_timeout / 10,
    });
    let auth = Arc::new(Authenticator::new(&cfg.auth));
    let routes: Router = api::router(state, auth).merge(fantasy_telemetry::router(readiness));
    let router = layers::apply(routes, &cfg.http, "trainer");
    let http_stop = CancellationToken::new();
    let addr = listener.local_addr()?;
    let mut http = tokio::spawn(fantasy_http::serve(listener, router, http_stop.clone()));
    tracing::info!(%addr, "trainer listening");

    let failure = tokio::select! {
        () = shutdown.cancelled() => None,
        Some(done) = tasks.join_next() => Some(match done {
            Ok((name, Ok(()))) => anyhow::anyhow!("the {name} stopped unexpectedly"),
            Ok((name, Err(e))) => e.context(format!("the {name} failed")),
            Err(e) => anyhow::anyhow!("a task panicked: {e}"),
        }),
        r = &mut http => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("the HTTP server stopped unexpectedly"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the HTTP server failed"),
            Err(e) => anyhow::anyhow!("the HTTP server panicked: {e}"),
        }),
    };
    if let Some(e) = &failure {
        tracing::error!("stopping: {e:#}");
    }
    tracing::info!("shutting down: stopping consumers");
    consumers.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Ok((name, Err(e))) = done {
            tracing::warn!("the {name} stopped with an error: {e:#}");
        }
    }
    // The loop finishes the training it is in (its lock, its run row).
    control_stop.cancel();
    if tokio::time::timeout(cfg.shutdown_timeout, &mut control_task)
        .await
        .is_err()
    {
        tracing::warn!("a training was still running at the shutdown deadline");
        control_task.abort();
    }
    http_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut http).await;
    if let Err(e) = producer.flush(Duration::from_secs(5)) {
        tracing::warn!("flushing the Kafka producer: {e}");
    }
    db.close().await;
    tracing::info!("trainer stopped");
    failure.map_or(Ok(()), Err)
}
