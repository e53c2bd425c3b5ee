//! The fanout: live predictions from Kafka to WebSocket clients.
//!
//! Every replica reads every partition of `predictions` (and `metrics`)
//! through a [`fantasy_kafka::TailReader`], so a message's Kafka position is
//! its sequence on every replica and a client can resume on any of them.
//! The [`hub::Hub`] routes each message to its channels (`game:<id>`,
//! `sport:<sport>`, `all`), serialises it once per channel and shares those
//! bytes with every subscriber's bounded queue; a full queue closes that
//! client (4001), never slows the others. Each channel keeps a bounded
//! history, refilled from Kafka at start-up, for clients that reconnect with
//! the positions they saw. `GET /` serves a live dashboard.
//! The protocol is in `PROTOCOL.md`.

pub mod config;
pub mod conn;
pub mod hub;
pub mod metrics;
pub mod protocol;

pub use config::{Config, Limits};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use fantasy_cache::Cache;
use fantasy_http::auth::Authenticator;
use fantasy_http::{ApiError, layers};
use fantasy_kafka::{TailReader, TailStart, broker_answers, ensure_stack_topics};
use fantasy_telemetry::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{ConnMetrics, Context};
use crate::hub::Hub;

/// The dashboard, served from the binary.
const DASHBOARD: &str = include_str!("../static/index.html");

struct App {
    ctx: Arc<Context>,
    auth: Authenticator,
    connections: AtomicUsize,
    tracker: TaskTracker,
    connections_gauge: ::metrics::Gauge,
}

/// Counts a connection for as long as it lives.
struct ConnSlot(Arc<App>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let n = self.0.connections.fetch_sub(1, Ordering::Relaxed) - 1;
        self.0.connections_gauge.set(n as f64);
    }
}

async fn stream(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let client = match app.auth.authenticate(&headers, uri.query(), Some(peer)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let limits = &app.ctx.limits;
    let n = app.connections.fetch_add(1, Ordering::Relaxed) + 1;
    if n > limits.max_connections {
        app.connections.fetch_sub(1, Ordering::Relaxed);
        ::metrics::counter!("fanout_refused_total", "reason" => "max_connections").increment(1);
        return ApiError::overloaded(
            format!(
                "this fanout holds {} connections, its limit; try another replica",
                limits.max_connections
            ),
            Duration::from_secs(1),
        )
        .into_response();
    }
    app.connections_gauge.set(n as f64);
    let slot = ConnSlot(Arc::clone(&app));
    let ctx = Arc::clone(&app.ctx);
    let tracker = app.tracker.clone();
    upgrade
        // Small buffers: most connections are idle most of the time, and a
        // client's own frames are tiny (subscribe, ping).
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(1 << 20)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                let _slot = slot;
                conn::run(socket, client, ctx).await;
            })
        })
}

async fn dashboard() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(DASHBOARD))
}

/// Runs the fanout until `shutdown` (or until its Kafka reader fails).
///
/// Shutdown: stop accepting, close every WebSocket with 1001 and wait for
/// them (up to `shutdown_timeout`).
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::metrics::describe();
    let cache = Cache::connect(&cfg.redis).await.with_context(|| {
        format!(
            "cannot connect to Redis at {}",
            fantasy_config::redact_url(cfg.redis.url.expose())
        )
    })?;
    let topics = cfg.kafka.topics();
    ensure_stack_topics(&cfg.kafka).await?;
    let predictions = TailReader::open(
        &cfg.kafka,
        &topics.predictions,
        TailStart::LastPerPartition(cfg.limits.history_refill),
    )
    .await
    .with_context(|| format!("reading {}", topics.predictions))?;
    let model_metrics =
        TailReader::open(&cfg.kafka, &topics.metrics, TailStart::LastPerPartition(20))
            .await
            .with_context(|| format!("reading {}", topics.metrics))?;
    let hub = Arc::new(Hub::new(cfg.limits.clone(), predictions.starts()));
    let caught_up = Arc::new(AtomicBool::new(predictions.starts() == predictions.ends()));

    let readers = CancellationToken::new();
    let mut reader_task = {
        let (hub, token, caught_up) = (hub.clone(), readers.clone(), caught_up.clone());
        let ends: Vec<i64> = predictions.ends().to_vec();
        tokio::spawn(async move {
            let mut pending: Vec<bool> = ends
                .iter()
                .zip(predictions.starts())
                .map(|(e, s)| e > s)
                .collect();
            loop {
                let record = tokio::select! {
                    () = token.cancelled() => return Ok::<(), anyhow::Error>(()),
                    r = predictions.recv() => r,
                };
                match record {
                    Ok(r) => {
                        hub.publish(&r);
                        let p = r.partition as usize;
                        if !caught_up.load(Ordering::Relaxed)
                            && p < pending.len()
                            && r.offset + 1 >= ends[p]
                        {
                            pending[p] = false;
                            if pending.iter().all(|x| !x) {
                                caught_up.store(true, Ordering::Relaxed);
                                tracing::info!("history refilled from Kafka");
                            }
                        }
                    }
                    Err(e) => tracing::warn!("predictions reader: {e}"),
                }
            }
        })
    };
    let metrics_task = {
        let (hub, token) = (hub.clone(), readers.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    r = model_metrics.recv() => match r {
                        Ok(r) => hub.publish_metrics(&r),
                        Err(e) => tracing::warn!("metrics reader: {e}"),
                    },
                }
            }
        })
    };
    let sweeper = {
        let (hub, token) = (hub.clone(), readers.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => {
                        hub.sweep();
                    }
                }
            }
        })
    };

    let clients_stop = CancellationToken::new();
    let app = Arc::new(App {
        ctx: Arc::new(Context {
            hub: hub.clone(),
            cache: cache.clone(),
            limits: cfg.limits.clone(),
            shutdown: clients_stop.clone(),
            metrics: Arc::new(ConnMetrics::new()),
        }),
        auth: Authenticator::new(&cfg.auth),
        connections: AtomicUsize::new(0),
        tracker: TaskTracker::new(),
        connections_gauge: ::metrics::gauge!("fanout_connections"),
    });
    let readiness = {
        let (cache, kafka, caught_up) = (cache.clone(), cfg.kafka.clone(), caught_up.clone());
        Readiness::new()
            .check("history", move || {
                let done = caught_up.load(Ordering::Relaxed);
                async move {
                    anyhow::ensure!(done, "still refilling history from Kafka");
                    Ok(())
                }
            })
            .check("redis", move || {
                let cache = cache.clone();
                async move { cache.ping().await.map_err(Into::into) }
            })
            .check("kafka", move || {
                let kafka = kafka.clone();
                async move { broker_answers(&kafka).await }
            })
    };
    let routes = Router::new()
        .route("/", get(dashboard))
        .route("/v1/stream", get(stream))
        .with_state(Arc::clone(&app))
        .merge(fantasy_telemetry::router(readiness));
    let router = layers::apply(routes, &cfg.http, "fanout");
    let http_stop = CancellationToken::new();
    let addr = listener.local_addr()?;
    let mut http = tokio::spawn(fantasy_http::serve(listener, router, http_stop.clone()));
    tracing::info!(%addr, "fanout listening");

    let failure = tokio::select! {
        () = shutdown.cancelled() => None,
        r = &mut reader_task => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("the predictions reader stopped"),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("the predictions reader panicked: {e}"),
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
    tracing::info!("shutting down: closing WebSockets (1001)");
    http_stop.cancel();
    clients_stop.cancel();
    app.tracker.close();
    if tokio::time::timeout(cfg.shutdown_timeout, app.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some WebSockets did not close before the shutdown deadline");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut http).await;
    readers.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), metrics_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), sweeper).await;
    tracing::info!("fanout stopped");
    failure.map_or(Ok(()), Err)
}
