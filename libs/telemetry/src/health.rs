//! `/health`, `/ready` and `/metrics`: one router every service mounts.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde::Serialize;

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// The checks behind `/ready`: each dependency the service needs to do its
/// work, asked concurrently, each within a timeout.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<(String, CheckFn)>,
    timeout: Duration,
    /// Each check's last failure (`None`: it passed), so that the log has a
    /// line when a check starts failing and when it passes again, not one
    /// per probe of a state that lasts (a model not trained yet).
    last: Arc<std::sync::Mutex<std::collections::HashMap<String, bool>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "checks",
                &self.checks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

/// One check's answer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub latency_ms: f64,
    /// Why it failed (the check's own message, not a stack of causes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// All checks' answers.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReadinessReport {
    pub ready: bool,
    pub checks: Vec<CheckResult>,
}

impl Readiness {
    /// No checks yet; 2 s per check.
    pub fn new() -> Self {
        Self {
            checks: Vec::new(),
            timeout: Duration::from_secs(2),
            last: Arc::default(),
        }
    }

    /// Sets how long one check may take before it counts as failed.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a check named `name` (`postgres`, `redis`, `kafka`, `model`...).
    #[must_use]
    pub fn check<F, Fut>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.checks
            .push((name.into(), Arc::new(move || Box::pin(check()))));
        self
    }

    /// Adds a check that asks `target` (a pool, a client: cloned for each
    /// probe) with `ask`: `.probe("postgres", db, |db| async move { db.ping().await })`.
    #[must_use]
    pub fn probe<T, F, Fut>(self, name: impl Into<String>, target: T, ask: F) -> Self
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.check(name, move || ask(target.clone()))
    }

    /// Adds a check answered at once from the service's own state (a flag,
    /// a watch), with no I/O.
    #[must_use]
    pub fn state(
        self,
        name: impl Into<String>,
        answer: impl Fn() -> anyhow::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.check(name, move || std::future::ready(answer()))
    }

    /// Runs every check concurrently.
    pub async fn evaluate(&self) -> ReadinessReport {
        let runs = self.checks.iter().map(|(name, check)| {
            let name = name.clone();
            let fut = check();
            let timeout = self.timeout;
            let last = Arc::clone(&self.last);
            async move {
                let start = Instant::now();
                let outcome = tokio::time::timeout(timeout, fut).await;
                let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
                // The check's own message for the report; its causes too for
                // the log.
                let (error, detail) = match outcome {
                    Ok(Ok(())) => (None, None),
                    Ok(Err(e)) => (Some(e.to_string()), Some(format!("{e:#}"))),
                    Err(_) => {
                        let e = format!("no answer within {timeout:?}");
                        (Some(e.clone()), Some(e))
                    }
                };
                let failing = error.is_some();
                let was_failing = last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(name.clone(), failing)
                    .unwrap_or(false);
                match (&detail, was_failing) {
                    (Some(e), false) => {
                        tracing::warn!(check = %name, "readiness check failed: {e}")
                    }
                    (Some(e), true) => {
                        tracing::debug!(check = %name, "readiness check still failing: {e}")
                    }
                    (None, true) => tracing::info!(check = %name, "readiness check passes again"),
                    (None, false) => {}
                }
                CheckResult {
                    ok: error.is_none(),
                    name,
                    latency_ms,
                    error,
                }
            }
        });
        let checks = futures::future::join_all(runs).await;
        ReadinessReport {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

/// The router for `/health` (the process is alive: always 200), `/ready`
/// (200 when every check passes, else 503, with each check's result as JSON)
/// and `/metrics` (Prometheus text format).
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(readiness))
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    let report = readiness.evaluate().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

async fn metrics_text() -> Response {
    let body = crate::metrics_handle().render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
