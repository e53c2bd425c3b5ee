//! The fanout: live predictions from Kafka to WebSocket clients.
//!
//! Every replica reads every partition of `predictions` (and `metrics`)
//! through a [`fantasy_kafka::TailReader`], so a message's Kafka position is
//! its sequence on every replica and a client can resume on any of them.
//! The [`hub::Hub`] routes each message to its channels (`game:<id>`,
//! `sport:<sport>`, `all`), encodes it once per channel into a WebSocket
//! frame and shares those bytes with every subscriber's bounded queue; each
//! connection writes its queue's frames to its socket as they are
//! ([`ws`]). A full queue closes that client (4001), never slows the
//! others. Each channel keeps a bounded
//! history, refilled from Kafka at start-up, for clients that reconnect with
//! the positions they saw. `GET /` serves a live dashboard.
//! The protocol is in `PROTOCOL.md`.

pub mod config;
pub mod conn;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod ws;

pub use config::{Config, Limits};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use fantasy_cache::Cache;
use fantasy_http::auth::Authenticator;
use fantasy_http::{ApiError, Supervisor};
use fantasy_kafka::{BrokerProbe, TailReader, TailStart, ensure_stack_topics};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
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
    upgrade: ws::Upgrade,
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
    // tungstenite reads (a small buffer: most connections are idle most of
    // the time, and a client's own frames are tiny; a larger one takes more
    // reads) and writes only its answers to pings, at once; our frames go
    // out as bytes (see `ws`).
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(limits.max_frame_bytes))
        .max_frame_size(Some(limits.max_frame_bytes));
    upgrade.on_upgrade(config, move |socket| {
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
    let hub =
        Arc::new(Hub::new(cfg.limits.clone(), predictions.starts()).live_from(predictions.ends()));
    let caught_up = Arc::new(AtomicBool::new(predictions.starts() == predictions.ends()));

    // The shutdown's order: stop accepting and close every WebSocket with
    // 1001 (clients reconnect to another replica), then stop the readers.
    let mut sup = Supervisor::new("fanout");
    let clients = sup.stage("closing WebSockets (1001)", cfg.shutdown_timeout);
    let readers = sup.stage("stopping the Kafka readers", Duration::from_secs(5));
    {
        let (hub, caught_up) = (hub.clone(), caught_up.clone());
        let ends: Vec<i64> = predictions.ends().to_vec();
        sup.critical(readers, "predictions reader", |stop| async move {
            let mut pending: Vec<bool> = ends
                .iter()
                .zip(predictions.starts())
                .map(|(e, s)| e > s)
                .collect();
            loop {
                let record = tokio::select! {
                    () = stop.cancelled() => return Ok::<(), anyhow::Error>(()),
                    r = predictions.recv() => r,
                };
                match record {
                    Ok(r) => {
                        if r.trace.is_some() {
                            // The prediction's trace goes on here (only
                            // for traced messages: a span per message
                            // costs on the hot path).
                            let span = tracing::info_span!(
                                "fanout.publish",
                                otel.kind = "consumer",
                                game_id = %String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()),
                                partition = r.partition,
                                offset = r.offset,
                            );
                            r.continue_trace(&span);
                            span.in_scope(|| hub.publish(&r));
                        } else {
                            hub.publish(&r);
                        }
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
        });
    }
    {
        let hub = hub.clone();
        sup.critical(readers, "metrics reader", |stop| async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok::<(), anyhow::Error>(()),
                    r = model_metrics.recv() => match r {
                        Ok(r) => hub.publish_metrics(&r),
                        Err(e) => tracing::warn!("metrics reader: {e}"),
                    },
                }
            }
        });
    }
    {
        let hub = hub.clone();
        sup.background(readers, "history sweeper", |stop| async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok::<(), anyhow::Error>(()),
                    _ = tick.tick() => {
                        hub.sweep();
                    }
                }
            }
        });
    }

    let app = Arc::new(App {
        ctx: Arc::new(Context {
            hub: hub.clone(),
            cache: cache.clone(),
            limits: cfg.limits.clone(),
            shutdown: sup.stop_token(clients),
            metrics: Arc::new(ConnMetrics::new()),
        }),
        auth: Authenticator::new(&cfg.auth),
        connections: AtomicUsize::new(0),
        tracker: TaskTracker::new(),
        connections_gauge: ::metrics::gauge!("fanout_connections"),
    });
    let readiness = {
        let caught_up = caught_up.clone();
        sup.readiness()
            .state("history", move || {
                let done = caught_up.load(Ordering::Relaxed);
                anyhow::ensure!(done, "still refilling history from Kafka");
                Ok(())
            })
            .probe("redis", cache.clone(), |cache| async move {
                Ok(cache.ping().await?)
            })
            .probe("kafka", BrokerProbe::new(&cfg.kafka), |kafka| async move {
                kafka.check().await
            })
    };
    let routes = Router::new()
        .route("/", get(dashboard))
        .route("/v1/stream", get(stream))
        .with_state(Arc::clone(&app))
        .merge(fantasy_telemetry::router(readiness));
    sup.serve(clients, listener, routes, &cfg.http)?;
    {
        let tracker = app.tracker.clone();
        sup.background(clients, "WebSockets", |stop| async move {
            stop.cancelled().await;
            // Each connection saw the same token and is closing with 1001.
            tracker.close();
            tracker.wait().await;
            Ok::<(), anyhow::Error>(())
        });
    }
    sup.run(shutdown).await
}
