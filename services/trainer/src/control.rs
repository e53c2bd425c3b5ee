//! When to train: one loop owns every training, so two never overlap in a
//! process; a Postgres advisory lock (taken by the run) keeps replicas apart.
//!
//! Automatic requests (a threshold crossed, enough new outcomes, the first
//! model) respect the cool-down since the last training started; a request
//! through the API does not, but it is refused while a training runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Triggers;
pub use crate::reason::Reason;
use crate::train::{RunError, RunReport, Trainer};

/// A request to train.
#[derive(Debug)]
pub struct Request {
    pub reason: Reason,
    pub detail: String,
    /// Where the result goes (the API waits for it).
    pub reply: Option<oneshot::Sender<Result<RunReport, RunError>>>,
}

impl Request {
    pub fn automatic(reason: Reason, detail: String) -> Self {
        Self {
            reason,
            detail,
            reply: None,
        }
    }
}

/// What the API and `/ready` can see of the loop.
#[derive(Debug, Default)]
pub struct ControlState {
    pub running: AtomicBool,
}

/// How often the loop looks at the outcome count and the bootstrap.
const TICK: Duration = Duration::from_secs(1);
/// How often a bootstrap without enough history is tried again.
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(5);

/// Runs trainings until `stop`.
pub async fn run_loop(
    trainer: Arc<Trainer>,
    triggers: Triggers,
    bootstrap: bool,
    new_outcomes: Arc<AtomicU64>,
    state: Arc<ControlState>,
    mut requests: mpsc::Receiver<Request>,
    stop: CancellationToken,
) {
    let mut last_started: Option<Instant> = None;
    // Until a model is active: when the first was last tried.
    let mut bootstrap_pending = bootstrap;
    let mut last_bootstrap: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let request = tokio::select! {
            () = stop.cancelled() => return,
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = tick.tick() => {
                let due_bootstrap = bootstrap_pending
                    && last_bootstrap.is_none_or(|t| t.elapsed() >= BOOTSTRAP_RETRY);
                if due_bootstrap {
                    last_bootstrap = Some(Instant::now());
                    match trainer.has_active().await {
                        Ok(false) => Request::automatic(Reason::Bootstrap, "no active model".into()),
                        Ok(true) => {
                            bootstrap_pending = false;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!("checking for an active model: {e:#}");
                            continue;
                        }
                    }
                } else {
                    let n = new_outcomes.load(Ordering::Relaxed);
                    if triggers.every_outcomes == 0 || n < triggers.every_outcomes {
                        continue;
                    }
                    Request::automatic(Reason::Outcomes, format!("{n} new outcomes"))
                }
            }
        };
        let automatic = request.reply.is_none();
        if automatic
            && request.reason != Reason::Bootstrap
            && let Some(t) = last_started
            && t.elapsed() < triggers.cooldown
        {
            metrics::counter!("trainer_triggers_suppressed_total", "reason" => request.reason.as_str())
                .increment(1);
            tracing::debug!(reason = request.reason.as_str(), detail = %request.detail,
                "retrain suppressed: cool-down");
            continue;
        }
        metrics::counter!("trainer_triggers_total", "reason" => request.reason.as_str())
            .increment(1);
        state.running.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let outcomes_before = new_outcomes.load(Ordering::Relaxed);
        let result = trainer.run(request.reason, &request.detail).await;
        state.running.store(false, Ordering::SeqCst);
        match &result {
            Ok(report) => {
                // The first model is not a retrain: a drift right after it
                // is answered at once.
                if request.reason != Reason::Bootstrap {
                    last_started = Some(started);
                }
                // Outcomes that came in during the run count towards the next.
                new_outcomes.fetch_sub(outcomes_before, Ordering::Relaxed);
                tracing::info!(reason = request.reason.as_str(), version = %report.version,
                    decision = report.decision.as_str(), "training finished");
            }
            Err(RunError::NotEnoughData { .. }) if request.reason == Reason::Bootstrap => {
                tracing::info!(
                    "bootstrap: {}",
                    result
                        .as_ref()
                        .err()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                );
            }
            Err(e) => {
                // A failed run still starts the cool-down: a broken input
                // must not make every batch retry a training.
                if !matches!(e, RunError::Busy) {
                    last_started = Some(started);
                }
                tracing::warn!(
                    reason = request.reason.as_str(),
                    "training did not complete: {e}"
                );
            }
        }
        if let Some(reply) = request.reply {
            let _ = reply.send(result);
        }
    }
}
