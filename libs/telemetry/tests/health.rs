//! The health router over real HTTP on a random port.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::anyhow;
use fantasy_telemetry::{Readiness, router};

async fn serve(readiness: Readiness) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(readiness)).await });
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    fantasy_telemetry::install_crypto_provider();
    reqwest::Client::new()
}

#[tokio::test]
async fn health_is_always_ok_and_ready_reflects_every_check() {
    let base = serve(
        Readiness::new()
            .timeout(Duration::from_millis(200))
            .check("postgres", || async { Ok(()) })
            .check("redis", || async { Err(anyhow!("connection refused")) })
            .check("kafka", || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            }),
    )
    .await;
    let http = client();

    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let started = std::time::Instant::now();
    let ready = http.get(format!("{base}/ready")).send().await.unwrap();
    // The slow check is cut at its timeout, not awaited for 5 s.
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], false);
    let checks = body["checks"].as_array().unwrap();
    let by_name = |n: &str| checks.iter().find(|c| c["name"] == n).unwrap().clone();
    assert_eq!(by_name("postgres")["ok"], true);
    assert_eq!(by_name("redis")["ok"], false);
    assert_eq!(by_name("redis")["error"], "connection refused");
    assert!(
        by_name("kafka")["error"]
            .as_str()
            .unwrap()
            .contains("no answer within")
    );
}

#[tokio::test]
async fn ready_is_200_when_all_checks_pass() {
    let base = serve(Readiness::new().check("postgres", || async { Ok(()) })).await;
    let ready = client().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true);
}

#[tokio::test]
async fn metrics_serves_what_the_process_recorded() {
    let _ = fantasy_telemetry::metrics_handle();
    metrics::counter!("telemetry_test_events_total", "kind" => "probe").increment(3);
    metrics::histogram!("inference_batch_rows").record(3.0);
    metrics::histogram!("telemetry_test_seconds").record(0.003);
    let base = serve(Readiness::new()).await;
    let response = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"telemetry_test_events_total{kind="probe"} 3"#),
        "{text}"
    );
    // Sizes are bucketed in items, durations in seconds.
    assert!(
        text.contains(r#"inference_batch_rows_bucket{le="4"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"inference_batch_rows_bucket{le="2"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"telemetry_test_seconds_bucket{le="0.005"} 1"#),
        "{text}"
    );
}

/// `describe` installs the recorder first, so it may come before anything
/// else; the help shows once the metric is recorded, and the unit changes
/// no name.
#[test]
fn described_metrics_show_their_help_and_type_once_recorded() {
    use fantasy_telemetry::{MetricDef, Unit};
    fantasy_telemetry::describe(&[
        MetricDef::counter("telemetry_test_described_total", "Probes counted"),
        MetricDef::histogram("telemetry_test_described_seconds", "Probe durations")
            .unit(Unit::Seconds),
        MetricDef::gauge("telemetry_test_described_level", "A probe level"),
        MetricDef::gauge("telemetry_test_never_recorded", "Shown once recorded"),
    ]);
    metrics::counter!("telemetry_test_described_total").increment(1);
    metrics::histogram!("telemetry_test_described_seconds").record(0.01);
    metrics::gauge!("telemetry_test_described_level").set(2.0);
    let text = fantasy_telemetry::metrics_handle().render();
    for expected in [
        "# HELP telemetry_test_described_total Probes counted\n\
         # TYPE telemetry_test_described_total counter\n",
        "# HELP telemetry_test_described_seconds Probe durations\n\
         # TYPE telemetry_test_described_seconds histogram\n",
        "# HELP telemetry_test_described_level A probe level\n\
         # TYPE telemetry_test_described_level gauge\n",
    ] {
        assert!(text.contains(expected), "no {expected:?} in {text}");
    }
    assert!(
        !text.contains("telemetry_test_never_recorded"),
        "a metric never recorded is not shown: {text}"
    );
}

/// Describing after a metric was recorded works too.
#[test]
fn metrics_recorded_before_they_are_described_get_their_help() {
    let _ = fantasy_telemetry::metrics_handle();
    metrics::counter!("telemetry_test_early_total").increment(1);
    let text = fantasy_telemetry::metrics_handle().render();
    assert!(
        !text.contains("# HELP telemetry_test_early_total"),
        "{text}"
    );
    fantasy_telemetry::describe(&[fantasy_telemetry::MetricDef::counter(
        "telemetry_test_early_total",
        "Counted before described",
    )]);
    let text = fantasy_telemetry::metrics_handle().render();
    assert!(
        text.contains("# HELP telemetry_test_early_total Counted before described\n"),
        "{text}"
    );
}
