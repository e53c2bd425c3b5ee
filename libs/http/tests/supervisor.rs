//! The supervisor: what stops a service, and the order of its shutdown.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantasy_http::Supervisor;
use tokio_util::sync::CancellationToken;

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, what: impl Into<String>) {
    log.lock().unwrap().push(what.into());
}

/// A task that waits for its stop, then notes it stopped.
fn until_stopped(
    log: &Log,
    name: &'static str,
) -> impl FnOnce(CancellationToken) -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
    let log = log.clone();
    move |stop| {
        Box::pin(async move {
            stop.cancelled().await;
            note(&log, format!("{name} stopped"));
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_panicking_critical_task_stops_the_service_with_its_name_and_shuts_down_in_order() {
    let log: Log = Arc::default();
    let mut sup = Supervisor::new("test");
    let http = sup.stage("draining HTTP requests", Duration::from_secs(5));
    let consumers = sup.stage("stopping consumers", Duration::from_secs(5));
    sup.critical(http, "HTTP server", until_stopped(&log, "http"));
    sup.critical(consumers, "games consumer", |_stop| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if true {
            panic!("the model exploded");
        }
        Ok::<(), anyhow::Error>(())
    });
    sup.background(consumers, "sweeper", until_stopped(&log, "sweeper"));
    let flushed = log.clone();
    sup.finally(
        "flushing the producer",
        Duration::from_secs(1),
        async move {
            note(&flushed, "flushed");
        },
    );
    let health = sup.health();
    health.check().unwrap();

    let err = tokio::time::timeout(Duration::from_secs(10), sup.run(CancellationToken::new()))
        .await
        .expect("the service stopped by itself")
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("the games consumer failed"), "{message}");
    assert!(
        message.contains("panicked: the model exploded"),
        "{message}"
    );
    // /ready says why, from the failure on.
    let why = health.check().unwrap_err().to_string();
    assert!(why.contains("games consumer"), "{why}");
    // The stages in their order, then the last steps.
    assert_eq!(
        *log.lock().unwrap(),
        ["http stopped", "sweeper stopped", "flushed"]
    );
}

#[tokio::test]
async fn a_critical_task_that_returns_before_shutdown_stops_the_service() {
    let mut sup = Supervisor::new("test");
    let stage = sup.stage("stopping", Duration::from_secs(1));
    sup.critical(stage, "control loop", |_stop| async {
        Ok::<(), anyhow::Error>(())
    });
    let err = sup.run(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.to_string(), "the control loop stopped unexpectedly");
}

#[tokio::test]
async fn a_failed_background_task_is_logged_and_the_service_goes_on_until_shutdown() {
    let log: Log = Arc::default();
    let mut sup = Supervisor::new("test");
    let stage = sup.stage("stopping", Duration::from_secs(5));
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
    sup.background(stage, "purge", |_stop| async move {
        let _ = failed_tx.send(());
        anyhow::bail!("the database went away")
    });
    sup.critical(stage, "HTTP server", until_stopped(&log, "http"));
    let health = sup.health();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(sup.run(shutdown.clone()));

    // The purge failed; the service is still up and ready.
    failed_rx.await.unwrap();
    tokio::task::yield_now().await;
    assert!(!run.is_finished());
    health.check().unwrap();

    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(*log.lock().unwrap(), ["http stopped"]);
    let why = health.check().unwrap_err().to_string();
    assert!(why.contains("shutting down"), "{why}");
}

#[tokio::test]
async fn a_task_that_ignores_its_stop_is_aborted_at_its_stage_deadline_and_later_stages_still_run()
{
    let log: Log = Arc::default();
    let mut sup = Supervisor::new("test");
    let first = sup.stage("finishing a training", Duration::from_millis(200));
    let second = sup.stage("draining HTTP requests", Duration::from_secs(5));
    sup.critical(first, "stubborn", |_stop| async {
        std::future::pending::<()>().await;
        Ok::<(), anyhow::Error>(())
    });
    sup.critical(second, "HTTP server", until_stopped(&log, "http"));
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), sup.run(shutdown))
        .await
        .expect("the deadline cut the stubborn task")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(*log.lock().unwrap(), ["http stopped"]);
}

/// A service of nothing but an HTTP server and a task that panics.
struct TestConfig(fantasy_telemetry::TelemetryConfig);

impl fantasy_http::ServiceConfig for TestConfig {
    fn from_env(_: &fantasy_config::Env) -> Result<Self, fantasy_config::ConfigError> {
        Ok(Self(fantasy_telemetry::TelemetryConfig::new(
            "supervisor-test",
        )))
    }
    fn telemetry(&self) -> &fantasy_telemetry::TelemetryConfig {
        &self.0
    }
    fn http_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 0))
    }
    fn log(&self) {}
}

#[test]
fn a_binary_whose_critical_task_panics_exits_non_zero() {
    let code = fantasy_http::service_main::<TestConfig, _, _>(
        "supervisor-test",
        |_cfg, listener, shutdown| async move {
            let mut sup = Supervisor::new("supervisor-test");
            let stage = sup.stage("stopping", Duration::from_secs(1));
            sup.critical(stage, "HTTP server", |stop| {
                fantasy_http::serve(listener, axum::Router::new(), stop)
            });
            sup.critical(stage, "control loop", |_stop| async {
                if true {
                    panic!("lost its channel");
                }
                Ok::<(), anyhow::Error>(())
            });
            sup.run(shutdown).await
        },
    );
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::FAILURE)
    );
}
