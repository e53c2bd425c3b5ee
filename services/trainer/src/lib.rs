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
pub mod experiments;
pub mod metrics;
pub mod reason;
pub mod sim;
pub mod train;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use fantasy_db::Db;
use fantasy_http::Supervisor;
use fantasy_http::auth::Authenticator;
use fantasy_inference::Runtime;
use fantasy_kafka::{
    BrokerProbe, Consumer, ConsumerOptions, Producer, ProgressWatch, ensure_stack_topics,
};
use fantasy_messages::{Outcome, Prediction};
use fantasy_registry::{ModelStore, Registry};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
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
    let result = trainer.run(reason::Reason::Cli, "fantasy train").await;
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
        judge: Some(Arc::new(experiments::Judge {
            store: fantasy_registry::Experiments::new(db.clone()),
            trainer: trainer.clone(),
        })),
    });

    // The shutdown's order: stop the consumers (they commit what was
    // handled), let the control loop finish the training in progress (its
    // lock, its run row), stop HTTP; then flush the producer, close the pool.
    let mut sup = Supervisor::new("trainer");
    // A consumer finishes its batch and commits: seconds, not a drain.
    let consumers = sup.stage("stopping consumers", Duration::from_secs(5));
    let control_stage = sup.stage("finishing the training in progress", cfg.shutdown_timeout);
    let http_stage = sup.stage("draining HTTP requests", Duration::from_secs(5));
    let mut watches = Vec::new();
    {
        let opts = ConsumerOptions::new(format!("{}.outcomes", cfg.group_id), [&topics.outcomes]);
        let consumer = Consumer::<Outcome>::new(&cfg.kafka, opts)?;
        watches.push(consumer.progress_watch(&cfg.kafka)?);
        let handler = eval::OutcomesHandler(evaluator.clone());
        sup.critical(consumers, "outcomes consumer", |stop| async move {
            consumer.run(handler, stop).await.map(|_| ())
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
        sup.critical(consumers, "predictions consumer", |stop| async move {
            consumer.run(handler, stop).await.map(|_| ())
        });
    }
    {
        let (trainer, triggers, bootstrap, state) = (
            trainer.clone(),
            cfg.triggers.clone(),
            cfg.bootstrap,
            control_state.clone(),
        );
        sup.critical(control_stage, "control loop", |stop| async move {
            control::run_loop(
                trainer,
                triggers,
                bootstrap,
                new_outcomes,
                state,
                control_rx,
                stop,
            )
            .await;
            Ok::<(), anyhow::Error>(())
        });
    }

    let readiness = sup
        .readiness()
        .probe("postgres", db.clone(), |db| async move { db.ping().await })
        .probe("kafka", BrokerProbe::new(&cfg.kafka), |kafka| async move {
            kafka.check().await
        })
        .state("streams", move || {
            watches.iter().try_for_each(ProgressWatch::check)
        });
    let state = Arc::new(api::AppState {
        trainer: trainer.clone(),
        control: control_tx,
        state: control_state,
        auth_required: cfg.auth.required,
        experiments: fantasy_registry::Experiments::new(db.clone()),
        experiment_defaults: cfg.experiments.clone(),
        // Before the timeout layer's 503.
        answer_within: cfg.http.request_timeout - cfg.http.request_timeout / 10,
    });
    let auth = Arc::new(Authenticator::new(&cfg.auth));
    let routes: Router = api::router(state, auth).merge(fantasy_telemetry::router(readiness));
    sup.serve(http_stage, listener, routes, &cfg.http)?;
    sup.finally(
        "flushing the producer, closing the pool",
        Duration::from_secs(5),
        async move {
            producer.close(Duration::from_secs(4)).await;
            db.close().await;
        },
    );
    sup.run(shutdown).await
}
