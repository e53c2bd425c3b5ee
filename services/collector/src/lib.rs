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

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;

use axum::Json;
use fantasy_db::Db;
use fantasy_dedup::Dedup;
use fantasy_http::Supervisor;
use fantasy_http::openapi::Access;
use fantasy_kafka::{BrokerProbe, Producer, ensure_stack_topics};
use futures::FutureExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::{Config, SourceSpec};
use runner::{SharedStatus, SourceStatus, run_source};

/// The statuses of this replica's sources, in configuration order.
#[derive(Clone, Debug, Default)]
struct Statuses(Arc<Vec<SharedStatus>>);

/// This replica's sources (`GET /v1/sources`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SourceList {
    pub sources: Vec<SourceStatus>,
}

/// Where each of this replica's sources stands. Open: it says what is
/// collected, not what was.
#[utoipa::path(
    get,
    path = "/v1/sources",
    responses((status = 200, description = "This replica's sources, in configuration order", body = SourceList))
)]
async fn sources(State(statuses): State<Statuses>) -> Json<SourceList> {
    let sources = statuses
        .0
        .iter()
        .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).clone())
        .collect();
    Json(SourceList { sources })
}

fn api_routes() -> OpenApiRouter<Statuses> {
    OpenApiRouter::new().routes(routes!(sources))
}

/// The API's OpenAPI document (what `GET /openapi.json` answers).
pub fn openapi() -> utoipa::openapi::OpenApi {
    fantasy_http::openapi::document(
        api_routes().split_for_parts().1,
        "collector",
        Access::Open,
        false,
    )
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

    // The shutdown's order: the sources finish the batches in flight, then
    // HTTP stops; then the producer is flushed and the pool closed.
    let mut sup = Supervisor::new("collector");
    let sourcing = sup.stage("finishing batches in flight", cfg.shutdown_timeout);
    let http_stage = sup.stage("draining HTTP requests", Duration::from_secs(5));
    {
        let (pipeline, retention) = (pipeline.clone(), cfg.dedup_retention);
        sup.background(sourcing, "dedup key purge", |stop| async move {
            purge_dedup_keys(pipeline, retention, stop).await;
            Ok::<(), anyhow::Error>(())
        });
    }
    let mut statuses = Vec::new();
    for spec in cfg.my_sources() {
        let status: SharedStatus = Arc::new(Mutex::new(SourceStatus {
            name: spec.name().to_owned(),
            state: "starting",
            ..SourceStatus::default()
        }));
        statuses.push(status.clone());
        let (p, max) = (pipeline.clone(), cfg.retry_max);
        let name = format!("source {}", spec.name());
        match spec.clone() {
            SourceSpec::Sim(c) => {
                let source = sim_source::SimSource::new(c)?;
                sup.critical(sourcing, name, |stop| {
                    supervise_source(source, p, status, max, stop)
                });
            }
            SourceSpec::Http(c) => {
                let source = http_source::HttpSource::new(c)?;
                sup.critical(sourcing, name, |stop| {
                    supervise_source(source, p, status, max, stop)
                });
            }
            SourceSpec::File(c) => {
                let source = file_source::FileSource::new(c)?;
                sup.critical(sourcing, name, |stop| {
                    supervise_source(source, p, status, max, stop)
                });
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

    let readiness = sup
        .readiness()
        .probe("postgres", db.clone(), |db| async move { db.ping().await })
        .probe("kafka", BrokerProbe::new(&cfg.kafka), |kafka| async move {
            kafka.check().await
        });
    let routes = api_routes()
        .with_state(Statuses(Arc::new(statuses)))
        .split_for_parts()
        .0
        .merge(fantasy_http::openapi::route(openapi()))
        .merge(fantasy_telemetry::router(readiness));
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

/// One source's task: it runs until the source is done (or gave up: its
/// status says `failed`) and then holds until `stop`, so that a finished
/// source does not stop the replica; a panic marks the source `failed` and
/// fails the task (the replica stops, and its successor resumes the source
/// from its checkpoint).
async fn supervise_source<S: source::Source>(
    source: S,
    pipeline: Arc<pipeline::Pipeline>,
    status: SharedStatus,
    retry_max: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let run = run_source(source, pipeline, status.clone(), retry_max, stop.clone());
    if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
        let why = fantasy_http::panic_message(&*panic);
        runner::update(&status, |s| {
            s.state = "failed";
            s.last_error = Some(format!("panicked: {why}"));
        });
        anyhow::bail!("panicked: {why}");
    }
    stop.cancelled().await;
    Ok(())
}
