//! One supervisor for a service's tasks: what runs, what stops the service,
//! and in which order it shuts down.
//!
//! A service registers every task it spawns, each in a *stage*:
//!
//! - a **critical** task is one the service cannot work without (its HTTP
//!   server, a consumer, the trainer's control loop): if it ends before
//!   shutdown (an error, a panic, or an unexpected return), the service stops,
//!   its name in the log and in the error `run` returns (so the binary exits
//!   non-zero and Swarm starts a new one);
//! - a **background** task (a sweeper, a purge) may fail: its end is logged,
//!   the service goes on.
//!
//! [`Supervisor::run`] waits for the shutdown signal or the first critical
//! failure, then stops the stages in the order they were made: each stage's
//! token is cancelled and its tasks get the stage's deadline to finish (then
//! they are aborted). Last come the [`Supervisor::finally`] steps (flush a
//! producer, close a pool). From the first failure or the shutdown signal on,
//! [`TaskHealth::check`] fails: `/ready` turns false and the gateway stops
//! sending requests while the service drains.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Whether the service's tasks are all there: a `/ready` check.
#[derive(Clone, Debug, Default)]
pub struct TaskHealth {
    down: Arc<Mutex<Option<String>>>,
}

impl TaskHealth {
    /// `Err` once a critical task is gone or the service is shutting down.
    pub fn check(&self) -> anyhow::Result<()> {
        match &*self.down.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => Ok(()),
        }
    }

    fn set(&self, why: String) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if down.is_none() {
            *down = Some(why);
        }
    }
}

/// A stage of the shutdown: its tasks stop together when its token is
/// cancelled. Copy it to register more tasks in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage(usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Critical,
    Background,
}

struct StageSpec {
    name: &'static str,
    deadline: Duration,
    stop: CancellationToken,
    running: usize,
    handles: Vec<tokio::task::AbortHandle>,
}

struct Ended {
    name: String,
    kind: Kind,
    stage: usize,
    result: anyhow::Result<()>,
}

type Step = (&'static str, Duration, BoxFuture<'static, ()>);

/// The tasks of one service; see the module docs.
pub struct Supervisor {
    service: &'static str,
    stages: Vec<StageSpec>,
    tasks: JoinSet<Ended>,
    finally: Vec<Step>,
    health: TaskHealth,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("service", &self.service)
            .field(
                "stages",
                &self.stages.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor for `service` (its name in the log), with no task yet.
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            stages: Vec::new(),
            tasks: JoinSet::new(),
            finally: Vec::new(),
            health: TaskHealth::default(),
        }
    }

    /// A new stage, stopped after the stages made before it: `name` says
    /// what stopping it does ("draining HTTP requests"); its tasks get
    /// `deadline` to finish once told to stop.
    pub fn stage(&mut self, name: &'static str, deadline: Duration) -> Stage {
        self.stages.push(StageSpec {
            name,
            deadline,
            stop: CancellationToken::new(),
            running: 0,
            handles: Vec::new(),
        });
        Stage(self.stages.len() - 1)
    }

    /// The token cancelled when `stage` stops: for parts of the service that
    /// are not tasks of their own (connections that watch it).
    pub fn stop_token(&self, stage: Stage) -> CancellationToken {
        self.stages[stage.0].stop.clone()
    }

    /// The readiness of the tasks, for `/ready`.
    pub fn health(&self) -> TaskHealth {
        self.health.clone()
    }

    /// A service's `/ready` checks, starting with `tasks` (every critical
    /// task running, no shutdown under way); add the service's own.
    pub fn readiness(&self) -> fantasy_telemetry::Readiness {
        let tasks = self.health();
        fantasy_telemetry::Readiness::new().state("tasks", move || tasks.check())
    }

    /// Serves `routes` (with the common layers of `cfg`) on `listener` as the
    /// critical task "HTTP server" of `stage`, and logs the address.
    pub fn serve(
        &mut self,
        stage: Stage,
        listener: tokio::net::TcpListener,
        routes: axum::Router,
        cfg: &crate::HttpConfig,
    ) -> std::io::Result<std::net::SocketAddr> {
        let addr = listener.local_addr()?;
        let router = crate::layers::apply(routes, cfg, self.service);
        self.critical(stage, "HTTP server", |stop| {
            crate::serve(listener, router, stop)
        });
        tracing::info!(%addr, "{} listening", self.service);
        Ok(addr)
    }

    /// Registers a task the service cannot do without. `task` gets the
    /// stage's stop token; it should return once that is cancelled.
    pub fn critical<F, Fut, E>(&mut self, stage: Stage, name: impl Into<String>, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<anyhow::Error>,
    {
        self.spawn(stage, name.into(), Kind::Critical, task);
    }

    /// Registers a task whose failure is logged and does not stop the
    /// service.
    pub fn background<F, Fut, E>(&mut self, stage: Stage, name: impl Into<String>, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<anyhow::Error>,
    {
        self.spawn(stage, name.into(), Kind::Background, task);
    }

    /// A last step, run after every stage stopped, in the order given, each
    /// within `deadline`.
    pub fn finally(
        &mut self,
        name: &'static str,
        deadline: Duration,
        step: impl Future<Output = ()> + Send + 'static,
    ) {
        self.finally.push((name, deadline, step.boxed()));
    }

    fn spawn<F, Fut, E>(&mut self, stage: Stage, name: String, kind: Kind, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<anyhow::Error>,
    {
        let fut = task(self.stages[stage.0].stop.clone());
        let handle = self.tasks.spawn(async move {
            let result = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r.map_err(Into::into),
                Err(panic) => Err(anyhow::anyhow!("panicked: {}", panic_message(&*panic))),
            };
            Ended {
                name,
                kind,
                stage: stage.0,
                result,
            }
        });
        let spec = &mut self.stages[stage.0];
        spec.running += 1;
        spec.handles.push(handle);
    }

    /// Runs until `shutdown` is cancelled or a critical task ends, then stops
    /// the stages in order and runs the last steps. `Err` names the critical
    /// task that ended the service.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let service = self.service;
        let mut failure = None;
        loop {
            let ended = tokio::select! {
                () = shutdown.cancelled() => break,
                ended = self.tasks.join_next() => ended,
            };
            let Some(ended) = ended else {
                // No task at all: nothing to supervise but the signal.
                shutdown.cancelled().await;
                break;
            };
            let Some(ended) = self.account(ended) else {
                continue;
            };
            match (ended.kind, ended.result) {
                (Kind::Critical, result) => {
                    let e = match result {
                        Ok(()) => anyhow::anyhow!("the {} stopped unexpectedly", ended.name),
                        Err(e) => e.context(format!("the {} failed", ended.name)),
                    };
                    tracing::error!(task = %ended.name, "stopping {service}: {e:#}");
                    failure = Some(e);
                    break;
                }
                (Kind::Background, Ok(())) => {
                    tracing::info!(task = %ended.name, "background task finished");
                }
                (Kind::Background, Err(e)) => {
                    tracing::error!(task = %ended.name, "background task failed: {e:#}");
                }
            }
        }
        self.health.set(match &failure {
            Some(e) => format!("{service} is stopping: {e:#}"),
            None => format!("{service} is shutting down"),
        });

        for i in 0..self.stages.len() {
            let (name, deadline) = (self.stages[i].name, self.stages[i].deadline);
            tracing::info!("shutting down: {name}");
            self.stages[i].stop.cancel();
            let waited = tokio::time::timeout(deadline, async {
                while self.stages[i].running > 0 {
                    let Some(ended) = self.tasks.join_next().await else {
                        break;
                    };
                    if let Some(ended) = self.account(ended)
                        && let Err(e) = ended.result
                    {
                        tracing::warn!(task = %ended.name, "stopped with an error: {e:#}");
                    }
                }
            })
            .await;
            if waited.is_err() {
                tracing::warn!(
                    stage = name,
                    ?deadline,
                    running = self.stages[i].running,
                    "tasks still running at the stage's deadline; aborting them"
                );
                for handle in &self.stages[i].handles {
                    handle.abort();
                }
            }
        }
        // What is left (stragglers just aborted) goes before the last steps.
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}

        for (name, deadline, step) in std::mem::take(&mut self.finally) {
            if tokio::time::timeout(deadline, step).await.is_err() {
                tracing::warn!(
                    step = name,
                    ?deadline,
                    "shutdown step did not finish in time"
                );
            }
        }
        tracing::info!("{service} stopped");
        failure.map_or(Ok(()), Err)
    }

    /// Books a finished task against its stage; `None` for an aborted one.
    fn account(&mut self, joined: Result<Ended, tokio::task::JoinError>) -> Option<Ended> {
        let ended = joined.ok()?;
        self.stages[ended.stage].running -= 1;
        Some(ended)
    }
}

/// The message a panic was raised with (`panic!("...")`), or `(no message)`.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
