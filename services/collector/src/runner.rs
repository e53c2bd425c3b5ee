//! One task per source: resume from the checkpoint, then fetch, process,
//! checkpoint, until the source is done or the collector stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{BatchReport, Pipeline};
use crate::source::{Fetch, Source, backoff};

/// Where a source stands (`GET /v1/sources`).
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct SourceStatus {
    pub name: String,
    /// `starting`, `running`, `retrying`, `done`, `failed`, `stopped`.
    #[schema(value_type = String)]
    pub state: &'static str,
    pub cursor: Option<String>,
    pub batches: u64,
    pub errors: u64,
    pub rejected: u64,
    pub totals: BatchReport,
    pub last_batch_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// What the source itself reports (`Source::describe`).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// A source's status, shared between its task and the HTTP handlers.
pub type SharedStatus = Arc<Mutex<SourceStatus>>;

/// Changes a source's status (a poisoned lock still holds a status worth
/// showing: the panic that poisoned it is reported by its task).
pub(crate) fn update(status: &SharedStatus, f: impl FnOnce(&mut SourceStatus)) {
    f(&mut status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner));
}

/// The first back-off after a failed batch or fetch (the upper end of its
/// jitter); it doubles per attempt up to `COLLECTOR_RETRY_MAX`.
const RETRY_BASE: Duration = Duration::from_millis(100);

/// Sleeps `d`, or less when `stop` fires; `false` when stopped.
async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Drives `source` until it is done or `stop` fires. Never returns an error:
/// failures are logged, counted and retried (a source that cannot resume is
/// marked `failed`).
pub async fn run_source<S: Source>(
    mut source: S,
    pipeline: Arc<Pipeline>,
    status: SharedStatus,
    retry_max: Duration,
    stop: CancellationToken,
) {
    let name = source.name().to_owned();
    update(&status, |s| {
        s.name = name.clone();
        s.state = "starting";
    });
    let mut attempt = 0;
    let cursor = loop {
        match pipeline.db().checkpoint(&name).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(source = %name, "cannot read the checkpoint: {e:#}");
                update(&status, |s| s.last_error = Some(format!("{e:#}")));
                if !pause(backoff(attempt, RETRY_BASE, retry_max), &stop).await {
                    return;
                }
                attempt += 1;
            }
        }
    };
    if let Err(e) = source.resume(cursor.as_deref()) {
        tracing::error!(source = %name, "cannot resume: {e:#}");
        update(&status, |s| {
            s.state = "failed";
            s.last_error = Some(format!("{e:#}"));
        });
        return;
    }
    tracing::info!(source = %name, cursor = ?cursor, "source started");
    update(&status, |s| {
        s.state = "running";
        s.cursor = cursor;
        s.details = source.describe();
    });
    let mut fetch_errors = 0;
    loop {
        let fetched = tokio::select! {
            () = stop.cancelled() => break,
            f = source.next() => f,
        };
        match fetched {
            Ok(Fetch::Batch(batch)) => {
                fetch_errors = 0;
                let mut attempt = 0;
                loop {
                    let started = std::time::Instant::now();
                    let done = match pipeline.process(&name, &batch.games).await {
                        Ok(report) => pipeline
                            .record_truth(&name, &batch.truth)
                            .await
                            .map(|()| report),
                        Err(e) => Err(e),
                    };
                    match done {
                        Ok(report) => {
                            metrics::histogram!("collector_batch_seconds", "source" => name.clone())
                                .record(started.elapsed().as_secs_f64());
                            let stored = match &batch.cursor {
                                Some(c) => pipeline.db().set_checkpoint(&name, c).await,
                                None => Ok(()),
                            };
                            if let Err(e) = &stored {
                                // Published already; a restart before the
                                // next checkpoint re-reads these, and the
                                // dedup drops them.
                                tracing::warn!(source = %name, "cannot store the checkpoint: {e:#}");
                            }
                            update(&status, |s| {
                                s.state = "running";
                                s.batches += 1;
                                s.rejected += batch.rejected as u64;
                                s.totals += report;
                                s.last_batch_at = Some(Utc::now());
                                if stored.is_ok() && batch.cursor.is_some() {
                                    s.cursor.clone_from(&batch.cursor);
                                }
                                s.details = source.describe();
                            });
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(source = %name, attempt, "batch failed, will retry: {e:#}");
                            metrics::counter!("collector_batch_errors_total", "source" => name.clone())
                                .increment(1);
                            update(&status, |s| {
                                s.state = "retrying";
                                s.errors += 1;
                                s.last_error = Some(format!("{e:#}"));
                            });
                            if !pause(backoff(attempt, RETRY_BASE, retry_max), &stop).await {
                                update(&status, |s| s.state = "stopped");
                                return;
                            }
                            attempt += 1;
                        }
                    }
                }
            }
            Ok(Fetch::Wait(d)) => {
                if !pause(d, &stop).await {
                    break;
                }
            }
            Ok(Fetch::Done) => {
                tracing::info!(source = %name, "source done");
                update(&status, |s| {
                    s.state = "done";
                    s.details = source.describe();
                });
                return;
            }
            Err(e) => {
                tracing::warn!(source = %name, "fetch failed: {e:#}");
                metrics::counter!("collector_source_errors_total", "source" => name.clone())
                    .increment(1);
                update(&status, |s| {
                    s.errors += 1;
                    s.last_error = Some(format!("{e:#}"));
                });
                if !pause(backoff(fetch_errors, RETRY_BASE, retry_max), &stop).await {
                    break;
                }
                fetch_errors += 1;
            }
        }
    }
    update(&status, |s| s.state = "stopped");
}
