//! The predictor: ONNX Runtime inference with dynamic batching, over REST and
//! on the `games` stream, with hot model swaps.
//!
//! - REST (`api`): `POST /v1/predict`, `POST /v1/predict/batch`,
//!   `GET /v1/predictions/{game_id}`, `GET /v1/models/active`, plus
//!   `/health`, `/ready`, `/metrics`.
//! - Stream (`stream`): consumes `games`, predicts in batches, upserts
//!   Postgres, updates Redis, publishes `predictions`; commits after all three.
//! - Models (`models`): the registry's active model (or `MODEL_PATH`) at
//!   start-up, then every activation announced on `models`, swapped in
//!   without failing a request.
//!
//! `main.rs` reads the configuration and calls [`run`]; `fantasy up` and the
//! tests call the same function.

pub mod api;
pub mod config;
pub mod experiment;
pub mod metrics;
pub mod models;
pub mod stream;

pub use config::Config;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fantasy_cache::Cache;
use fantasy_db::Db;
use fantasy_http::auth::Authenticator;
use fantasy_http::{RateLimiter, Supervisor};
use fantasy_inference::{Engine, Runtime};
use fantasy_kafka::{
    BrokerProbe, Consumer, ConsumerOptions, Producer, ProgressWatch, StartFrom, ensure_stack_topics,
};
use fantasy_messages::{Game, ModelPublished};
use fantasy_registry::{Experiments, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the predictor until `shutdown` (or until one of its parts fails,
/// which stops the others and returns the error).
///
/// Shutdown is ordered: stop accepting HTTP and finish the requests in
/// flight (up to `shutdown_timeout`), stop the consumers (they commit what
/// was handled), flush the producer, close the pools.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // /metrics serves this process's recorder; install it if `main` did not
    // and describe what the process records.
    crate::metrics::describe();
    let runtime = Runtime::get(cfg.inference.library.as_deref())?;
    let db = Db::connect(&cfg.db).await?;
    db.migrate().await?;
    let cache = Cache::connect(&cfg.redis).await.with_context(|| {
        format!(
            "cannot connect to Redis at {}",
            fantasy_config::redact_url(cfg.redis.url.expose())
        )
    })?;
    let topics = cfg.kafka.topics();
    ensure_stack_topics(&cfg.kafka).await?;
    let producer = Producer::new(&cfg.kafka).context("creating the Kafka producer")?;

    let engine = Arc::new(Engine::empty());
    let batcher_cfg = cfg.inference.batcher.clone();
    let registry = Registry::new(db.clone());
    match &cfg.model_path {
        Some(path) => {
            engine.swap(models::from_file(runtime, path, &batcher_cfg).await?);
        }
        None => {
            match models::from_registry(runtime, &registry, &cfg.model_name, &batcher_cfg).await? {
                Some(b) => {
                    engine.swap(b);
                }
                None => tracing::warn!(
                    model = %cfg.model_name,
                    "no active model in the registry yet: serving 503 until one is announced on `models`"
                ),
            }
        }
    }

    // The shutdown's order: stop accepting HTTP and finish the requests in
    // flight, then stop the consumers (they commit what was handled); then
    // flush the producer and close the pool.
    let mut sup = Supervisor::new("predictor");
    let http_stage = sup.stage("draining HTTP requests", cfg.shutdown_timeout);
    // A consumer finishes its batch and commits: seconds, not a drain.
    let consumers = sup.stage("stopping consumers", Duration::from_secs(5));
    let experiments = Arc::new(experiment::ExperimentState::default());
    let mut models = models::Models {
        runtime,
        engine: engine.clone(),
        experiments: experiments.clone(),
        registry: registry.clone(),
        store: Experiments::new(db.clone()),
        model_name: cfg.model_name.clone(),
        cfg: batcher_cfg.clone(),
        max_experiment_bytes: cfg.max_experiment_bytes,
        refused: Default::default(),
    };
    if cfg.model_path.is_none() {
        // The live experiment, if any, before the first request.
        models.sync().await?;
    }
    // Stopped with the consumers: what it has not scored yet is shadow
    // work, given up (its games only lose their pairs).
    let (shadow, worker) = experiment::shadow_queue(cfg.shadow_queue, models.store.clone());
    sup.background(consumers, "shadow worker", |stop| worker.run(stop));
    let mut games_watch = None;
    if cfg.stream {
        let mut opts = ConsumerOptions::new(&cfg.group_id, [&topics.games]);
        opts.max_batch = cfg.stream_max_batch;
        opts.max_wait = cfg.stream_max_wait;
        let consumer = Consumer::<Game>::new(&cfg.kafka, opts)?;
        games_watch = Some(consumer.progress_watch(&cfg.kafka)?);
        let handler =
            stream::GamesHandler::new(engine.clone(), db.clone(), cache.clone(), producer.clone())
                .with_experiments(experiments.clone(), shadow.clone());
        sup.critical(consumers, "games consumer", |stop| async move {
            consumer.run(handler, stop).await.map(|_| ())
        });
    }
    if cfg.model_path.is_none() {
        // Every replica reads every announcement: a group of its own.
        let mut opts = ConsumerOptions::new(
            format!("predictor-models-{}", uuid::Uuid::new_v4().simple()),
            [&topics.models],
        );
        // From the start of the compacted topic: an activation made while
        // this replica was loading is not missed.
        opts.start_from = StartFrom::Earliest;
        let consumer = Consumer::<ModelPublished>::new(&cfg.kafka, opts)?;
        let handler = models::ModelsHandler(models);
        sup.critical(consumers, "models consumer", |stop| async move {
            consumer.run(handler, stop).await.map(|_| ())
        });
    }

    let readiness = {
        let engine = engine.clone();
        sup.readiness()
            .state("model", move || {
                anyhow::ensure!(engine.current().is_some(), "no model loaded");
                Ok(())
            })
            .probe("postgres", db.clone(), |db| async move { db.ping().await })
            .probe("redis", cache.clone(), |cache| async move {
                Ok(cache.ping().await?)
            })
            .probe("kafka", BrokerProbe::new(&cfg.kafka), |kafka| async move {
                kafka.check().await
            })
            .state("games stream", move || {
                games_watch.as_ref().map_or(Ok(()), ProgressWatch::check)
            })
    };
    let state = Arc::new(api::AppState {
        engine: engine.clone(),
        experiments,
        shadow,
        db: db.clone(),
        cache,
        max_batch_items: cfg.max_batch_items,
    });
    let auth = Arc::new(Authenticator::new(&cfg.auth));
    let limiter = cfg
        .http
        .rate_limit
        .map(|(r, b)| Arc::new(RateLimiter::new(r, b)));
    let routes = api::router(state, auth, limiter).merge(fantasy_telemetry::router(readiness));
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
