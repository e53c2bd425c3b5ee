//! The layers every API shares: limits, load shedding, metrics, tracing.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use fantasy_config::Parser;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::{ApiError, Client};

/// HTTP settings of a service.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `HTTP_ADDR`: where to listen.
    pub addr: SocketAddr,
    /// `REQUEST_TIMEOUT`: a request still running after this gets a 503.
    pub request_timeout: Duration,
    /// `CONCURRENCY_LIMIT`: requests handled at once; more are shed at once
    /// with a 503 rather than queued.
    pub concurrency_limit: usize,
    /// `MAX_BODY_BYTES`: larger bodies get a 413.
    pub max_body_bytes: usize,
    /// `RATE_LIMIT_PER_SECOND` (and `RATE_LIMIT_BURST`): per client; off when
    /// unset.
    pub rate_limit: Option<(u32, u32)>,
}

impl HttpConfig {
    /// Defaults, listening on all interfaces at `port`.
    pub fn new(port: u16) -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], port)),
            request_timeout: Duration::from_secs(5),
            concurrency_limit: 8192,
            max_body_bytes: 1 << 20,
            rate_limit: None,
        }
    }

    /// Reads `HTTP_ADDR`, `REQUEST_TIMEOUT`, `CONCURRENCY_LIMIT`,
    /// `MAX_BODY_BYTES`, `RATE_LIMIT_PER_SECOND`, `RATE_LIMIT_BURST`.
    pub fn from_env(p: &mut Parser<'_>, port: u16) -> Self {
        let d = Self::new(port);
        let rate: Option<u32> = p.parse_opt("RATE_LIMIT_PER_SECOND");
        let burst: Option<u32> = p.parse_opt("RATE_LIMIT_BURST");
        let rate_limit = match rate {
            Some(0) => {
                p.problem(
                    "RATE_LIMIT_PER_SECOND",
                    "must be at least 1 (unset it to turn limits off)",
                );
                None
            }
            Some(r) => Some((r, burst.unwrap_or(r).max(1))),
            None => None,
        };
        Self {
            addr: p.parse("HTTP_ADDR", d.addr),
            request_timeout: p.duration("REQUEST_TIMEOUT", d.request_timeout),
            concurrency_limit: p.ranged("CONCURRENCY_LIMIT", d.concurrency_limit, 1..=1_000_000),
            max_body_bytes: p.ranged("MAX_BODY_BYTES", d.max_body_bytes, 1024..=1 << 30),
            rate_limit,
        }
    }
}

impl std::fmt::Display for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "addr={} request_timeout={:?} concurrency_limit={} max_body_bytes={} rate_limit={}",
            self.addr,
            self.request_timeout,
            self.concurrency_limit,
            self.max_body_bytes,
            match self.rate_limit {
                Some((r, b)) => format!("{r}/s burst {b}"),
                None => "off".into(),
            }
        )
    }
}

/// Per-client request rate limit (a GCRA token bucket per client id).
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `per_second` sustained, up to `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_second);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ),
        }
    }

    /// Admits one request of `client`, or says when to come back.
    pub fn check(&self, client: &str) -> Result<(), ApiError> {
        // Keys are client ids; forget idle ones now and then so the map
        // stays bounded.
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("http_rate_limited_total").increment(1);
                ApiError::too_many_requests(wait.max(Duration::from_secs(1)))
            })
    }
}

/// Middleware: applies the rate limit to the [`Client`] the auth
/// middleware identified (it must run after it).
pub async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let key = request
        .extensions()
        .get::<Client>()
        .map_or("anonymous", |c| c.id.as_str());
    match limiter.check(key) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Metric names of one service, made once.
#[derive(Clone, Copy, Debug)]
struct MetricNames {
    requests: &'static str,
    duration: &'static str,
}

async fn record(State(names): State<MetricNames>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names.requests, "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(names.duration, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn tower_error(error: tower::BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::unavailable("timeout", "the request took too long; retry later")
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::overloaded(
            "too many requests in progress; retry later",
            Duration::from_secs(1),
        )
    } else {
        ApiError::internal(error)
    }
}

/// Wraps `router` in the shared stack, outermost first: panic → 500 JSON,
/// request id (set and echoed as `x-request-id`), a tracing span, request
/// metrics (`<service>_http_requests_total`,
/// `<service>_http_request_duration_seconds` by route), load shedding at the
/// concurrency limit, the request timeout, and the body limit.
pub fn apply(router: Router, cfg: &HttpConfig, service: &str) -> Router {
    let names = MetricNames {
        // Made once per service and kept for the process's life.
        requests: crate::metrics::requests_total(service).leak(),
        duration: crate::metrics::request_duration_seconds(service).leak(),
    };
    router
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(
                    |_: Box<dyn std::any::Any + Send>| {
                        ApiError::internal("a request handler panicked").into_response()
                    },
                ))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                // A 5xx is logged by `ApiError` (the cause of a 500 at ERROR,
                // an expected 503 such as /ready's before the first model at
                // WARN or below): tower-http's own line would repeat it at
                // ERROR.
                .layer(
                    TraceLayer::new_for_http()
                        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
                        .make_span_with(|req: &Request| {
                            let id = req
                                .headers()
                                .get("x-request-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("");
                            let span = tracing::info_span!(
                                "http",
                                otel.kind = "server",
                                method = %req.method(),
                                path = %req.uri().path(),
                                request_id = %id
                            );
                            fantasy_telemetry::adopt_http_parent(&span, req.headers());
                            span
                        }),
                )
                .layer(middleware::from_fn_with_state(names, record))
                .layer(HandleErrorLayer::new(tower_error))
                .load_shed()
                .concurrency_limit(cfg.concurrency_limit)
                .timeout(cfg.request_timeout),
        )
}
