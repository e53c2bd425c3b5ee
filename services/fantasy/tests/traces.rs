//! A game's journey is one trace: the collector's batch, the predictor's
//! consumer and stream handler, and the fanout's publish share one trace id
//! (W3C context in Kafka headers at each hop). The whole stack runs in this
//! process (`fantasy up` on free ports) with its spans captured in memory.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fantasy::up::{self, UpArgs};
use fantasy_config::Env;
use fantasy_db::testing::TestDb;
use fantasy_telemetry::testing::{CapturedSpan, SpanCapture};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_games_spans_share_one_trace_from_collector_to_fanout() {
    let capture = SpanCapture::install().expect("this test's process has no subscriber yet");
    fantasy_telemetry::install_crypto_provider();
    let db = TestDb::new().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    // 40 rounds of history (200 games: the first model), then live rounds.
    let env = Env::from_pairs([
        ("DATABASE_URL", db.url.as_str()),
        (
            "REDIS_PREFIX",
            &format!("test:{}:", uuid::Uuid::new_v4().simple()),
        ),
        (
            "COLLECTOR_SOURCES",
            "sim:nba?seed=9&teams=10&games=60&history=40&minutes=0.3",
        ),
        ("TRAIN_MIN_GAMES", "150"),
        ("RUST_LOG", "warn"),
    ]);
    let cfg = fantasy::Config::from_env(&env).unwrap();
    let args = UpArgs {
        port: 0,
        data_dir: data.path().to_owned(),
        partitions: 2,
        ..UpArgs::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stack = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { up::run(&cfg, &env, args, shutdown, None).await })
    };

    // A prediction the fanout sent out, in a trace that began at the
    // collector and went through the predictor.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let (publish, trace) = loop {
        let spans = capture.spans();
        let found = spans
            .iter()
            .filter(|s| s.name == "fanout.publish")
            .find_map(|publish| {
                let trace: Vec<&CapturedSpan> = spans
                    .iter()
                    .filter(|s| s.trace_id == publish.trace_id)
                    .collect();
                let has = |name: &str| trace.iter().any(|s| s.name == name);
                (has("collector.batch") && has("kafka.consume") && has("predictor.stream_batch"))
                    .then(|| {
                        (
                            publish.clone(),
                            trace.into_iter().cloned().collect::<Vec<_>>(),
                        )
                    })
            });
        if let Some(found) = found {
            break found;
        }
        assert!(!stack.is_finished(), "the stack stopped: {:?}", stack.await);
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fanout span shares a trace with the collector's and the predictor's; spans seen: {:?}",
            spans
                .iter()
                .map(|s| (s.name.as_str(), &s.trace_id[..8]))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // The chain, parent to child: the collector's batch is the root; the
    // predictor's consumer span is its child across Kafka; the handler's
    // span is the consumer span's child; the fanout's is a child of a span
    // of the predictor's (the publish happened inside the handler).
    let by_id = |id: &str| trace.iter().find(|s| s.span_id == id);
    let game = publish.attribute("game_id").unwrap().to_owned();
    assert!(game.starts_with("nba-sim-9-"), "{game}");
    let root = trace.iter().find(|s| s.name == "collector.batch").unwrap();
    assert_eq!(root.parent_span_id, "0000000000000000");
    let predictor_consume = trace
        .iter()
        .find(|s| s.name == "kafka.consume" && s.parent_span_id == root.span_id)
        .expect("a consumer span whose parent is the collector's batch");
    assert!(
        predictor_consume.links.contains(&root.trace_id),
        "the batch span links its records' traces"
    );
    let handler = trace
        .iter()
        .find(|s| s.name == "predictor.stream_batch")
        .unwrap();
    assert_eq!(
        by_id(&handler.parent_span_id).map(|s| s.name.as_str()),
        Some("kafka.consume")
    );
    assert_eq!(
        by_id(&publish.parent_span_id).map(|s| s.name.as_str()),
        Some("predictor.stream_batch"),
        "the fanout continues the span that published the prediction"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), stack)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
