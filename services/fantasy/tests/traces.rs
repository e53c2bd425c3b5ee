//! A game's journey is one trace: the collector's batch, the predictor's
//! consumer and stream handler, and the fanout's publish share one trace id
//! (W3C context in Kafka headers at each hop). The whole stack runs in this
//! process (`fantasy up` on free ports) with its spans captured in memory.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use fantasy_telemetry::testing::{CapturedSpan, SpanCapture};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_games_spans_share_one_trace_from_collector_to_fanout() {
    let capture = SpanCapture::install().expect("this test's process has no subscriber yet");
    // 40 rounds of history (200 games: the first model), then live rounds.
    let mut stack = common::Stack::start(
        2,
        &[
            (
                "COLLECTOR_SOURCES",
                "sim:nba?seed=9&teams=10&games=60&history=40&minutes=0.3",
            ),
            ("TRAIN_MIN_GAMES", "150"),
        ],
    )
    .await;

    // A prediction the fanout sent out, whose chain of parents runs, within
    // one trace, through the predictor's handler and consumer back to the
    // collector's batch. (Spans are exported as they end: the consumer's
    // ends after its handler's, so the chain may take a moment to complete.)
    const CHAIN: [&str; 4] = [
        "fanout.publish",
        "predictor.stream_batch",
        "kafka.consume",
        "collector.batch",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let chain = loop {
        let spans = capture.spans();
        let found = spans
            .iter()
            .filter(|s| s.name == CHAIN[0])
            .map(|publish| ancestors(publish, &spans))
            .find(|chain| chain.iter().map(|s| s.name.as_str()).eq(CHAIN));
        if let Some(chain) = found {
            break chain;
        }
        stack.assert_running().await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fanout span descends from the collector's batch through the predictor; \
             chains seen: {:?}",
            spans
                .iter()
                .filter(|s| s.name == CHAIN[0])
                .map(|p| ancestors(p, &spans)
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>())
                .collect::<std::collections::BTreeSet<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let [publish, _handler, consume, root] = &chain[..] else {
        unreachable!("the chain has four spans")
    };
    // One trace id from the collector to the fanout.
    assert!(chain.iter().all(|s| s.trace_id == root.trace_id));
    assert_eq!(
        root.parent_span_id, "0000000000000000",
        "the batch is the root"
    );
    assert!(
        consume.links.contains(&root.trace_id),
        "the consumer's batch span links its records' traces"
    );
    let game = publish.attribute("game_id").unwrap();
    assert!(game.starts_with("nba-sim-9-"), "{game}");

    stack.stop(Duration::from_secs(60)).await;
}

/// `span` and its parents, as far as they were exported.
fn ancestors(span: &CapturedSpan, spans: &[CapturedSpan]) -> Vec<CapturedSpan> {
    let mut chain = vec![span.clone()];
    while let Some(parent) = spans
        .iter()
        .find(|s| s.span_id == chain.last().unwrap().parent_span_id)
    {
        chain.push(parent.clone());
    }
    chain
}
