//! The collector: games and results from pluggable sources (a public
//! scoreboard format over HTTP, file replay, a season simulator), rate-limited
//! per source, deduplicated with a bloom filter shared through Redis and
//! confirmed in Postgres, with `elo-v1` features, published to Kafka
//! (`games`, `outcomes`) and upserted into Postgres.
//!
//! - [`source`]: the [`Source`](source::Source) trait and what sources yield;
//!   [`http_source`], [`file_source`], [`sim_source`] implement it, [`espn`]
//!   reads the scoreboard format.
//! - [`pipeline`]: dedup, features and ratings, Kafka and Postgres, in the
//!   order that loses nothing and publishes each version once.
//! - [`runner`]: one task per source, checkpoints, back-off.
//! - [`config`]: settings and the `COLLECTOR_SOURCES` specs; replicas split
//!   the sources with `COLLECTOR_SHARD` / `COLLECTOR_SHARDS`.
//!
//! HTTP (port 8082): `GET /v1/sources` (each source's state, counts,
//! checkpoint; for a simulator its oracle Brier score), `/health`, `/ready`,
//! `/metrics`. A simulator's true probabilities go to `game_truth`, so a
//! model's Brier score can be set against the oracle's on the same games.
//! Keys older than `DEDUP_RETENTION` leave the exact store every 10 minutes.

pub mod config;
pub mod espn;
pub mod file_source;
pub mod http_source;
pub mod metrics;
pub mod pipeline;
pub mod runner;
pub mod sim_source;
pub mod source;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use fantasy_db::Db;
use fantasy_dedup::Dedup;
use fantasy_http::layers;
use fantasy_kafka::{Producer, broker_answers, ensure_stack_topics};
use fantasy_telemetry::Readiness;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{Config, SourceSpec};
use runner::{SharedStatus, SourceStatus, run_source};

/// The statuses of this replica's sources, in configuration order.
#[derive(Clone, Debug, Default)]
struct Statuses(Arc<Vec<SharedStatus>>);

async fn sources(State(statuses): State<Statuses>) -> Json<serde_json::Value> {
    let list: Vec<SourceStatus> = statuses
        .0
        .iter()
        .filter_map(|s| s.lock().ok().map(|s| s.clone()))
        .collect();
    Json(serde_json::json!({ "sources": list }))
}

/// Every 10 minutes, deletes the exact store's keys older than `retention`
/// (in slices, so no statement holds many locks). Every replica may run it:
/// the deletes are idempotent.
async fn purge_dedup_keys(
    pipeline: Arc<pipeline::Pipeline>,
    retention: Duration,
    stop: CancellationToken,
) {
    const SLICE: u32 = 10_000;
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        loop {
            match pipeline.dedup().purge_older_than(retention, SLICE).await {
                Ok(n) => {
                    ::metrics::counter!("collector_dedup_keys_purged_total").increment(n);
                    if n < u64::from(SLICE) || stop.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("purging old dedup keys: {e:#}");
                    break;
                }
            }
        }
    }
}

/// Runs the collector until `shutdown`: this replica's sources, and HTTP on
/// `listener`.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::metrics::describe();
    let db = Db::connect(&cfg.db).await?;
    db.migrate().await?;
    ensure_stack_topics(&cfg.kafka).await?;
    let producer = Producer::new(&cfg.kafka).context("creating the Kafka producer")?;
    // Redis is connected lazily: the collector starts, and stays correct
    // (slower), while Redis is down.
    let dedup = Dedup::builder(cfg.dedup.clone(), db.clone())
        .redis(cfg.redis.clone())
        .build()?;
    let pipeline = pipeline::Pipeline::new(db.clone(), producer.clone(), dedup, cfg.elo);

    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(purge_dedup_keys(
        pipeline.clone(),
        cfg.dedup_retention,
        stop.clone(),
    ));
    let mut statuses = Vec::new();
    for spec in cfg.my_sources() {
        let status: SharedStatus = Arc::new(Mutex::new(SourceStatus {
            name: spec.name().to_owned(),
            state: "starting",
            ..SourceStatus::default()
        }));
        statuses.push(status.clone());
        let (p, s, max) = (pipeline.clone(), stop.clone(), cfg.retry_max);
        match spec.clone() {
            SourceSpec::Sim(c) => {
                let source = sim_source::SimSource::new(c)?;
                tasks.spawn(run_source(source, p, status, max, s));
            }
            SourceSpec::Http(c) => {
                let source = http_source::HttpSource::new(c)?;
                tasks.spawn(run_source(source, p, status, max, s));
            }
            SourceSpec::File(c) => {
                let source = file_source::FileSource::new(c)?;
                tasks.spawn(run_source(source, p, status, max, s));
            }
        }
    }
    if statuses.is_empty() {
        tracing::warn!(
            shard = cfg.shard,
            shards = cfg.shards,
            "no source falls to this replica; it only serves HTTP"
        );
    }

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
    };
    let routes = Router::new()
        .route("/v1/sources", get(sources))
        .with_state(Statuses(Arc::new(statuses)))
        .merge(fantasy_telemetry::router(readiness));
    let router = layers::apply(routes, &cfg.http, "collector");
    let http_stop = CancellationToken::new();
    let addr = listener.local_addr()?;
    let mut http = tokio::spawn(fantasy_http::serve(listener, router, http_stop.clone()));
    tracing::info!(%addr, "collector listening");

    let failure = tokio::select! {
        () = shutdown.cancelled() => None,
        r = &mut http => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("the HTTP server stopped unexpectedly"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the HTTP server failed"),
            Err(e) => anyhow::anyhow!("the HTTP server panicked: {e}"),
        }),
    };
    tracing::info!("shutting down: finishing batches in flight");
    stop.cancel();
    let drained = tokio::time::timeout(cfg.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some sources did not stop before the shutdown deadline");
        tasks.abort_all();
    }
    if let Err(e) = producer.flush(Duration::from_secs(5)) {
        tracing::warn!("flushing the Kafka producer: {e}");
    }
    http_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut http).await;
    db.close().await;
    tracing::info!("collector stopped");
    failure.map_or(Ok(()), Err)
}
