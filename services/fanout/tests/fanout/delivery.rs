//! Who gets what, in which order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fantasy_testkit::eventually;
use futures::StreamExt as _;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Infra, Ws, client, ids, pred, publish, spawn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_exactly_its_channels_messages_in_order() {
    let infra = Infra::new();
    let app = spawn(&infra, &[]).await;
    let mut all = client(&app).await;
    all.subscribe(&["all"]).await;
    let mut nba = client(&app).await;
    nba.subscribe(&["sport:nba"]).await;
    let mut g1 = client(&app).await;
    g1.subscribe(&["game:g1"]).await;
    let mut gone = client(&app).await;
    gone.subscribe(&["game:g2"]).await;
    gone.send(serde_json::json!({"op": "unsubscribe", "channels": ["game:g2"]}))
        .await;
    assert_eq!(gone.next().await["type"], "unsubscribed");

    let producer = infra.producer();
    // g1's updates in order on one partition (same key).
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.push(pred("g1", "nba", 0.1 * i as f32));
        batch.push(pred("g2", "nfl", 0.5));
        batch.push(pred(&format!("n{i}"), "nba", 0.3));
    }
    publish(&producer, &batch).await;

    let got_all = all.predictions(15).await;
    assert_eq!(got_all.len(), 15);
    assert!(got_all.iter().all(|f| f["channel"] == "all"));
    let got_nba = nba.predictions(10).await;
    assert!(
        got_nba
            .iter()
            .all(|f| f["data"]["sport"] == "nba" && f["channel"] == "sport:nba")
    );
    let got_g1 = g1.predictions(5).await;
    assert_eq!(ids(&got_g1), vec!["g1"; 5]);
    // g1's probabilities arrive in the order they were published.
    let probs: Vec<f64> = got_g1
        .iter()
        .map(|f| f["data"]["home_win_prob"].as_f64().unwrap())
        .collect();
    let mut sorted = probs.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(probs, sorted);
    // Nothing more for anyone, nothing at all after unsubscribing: each
    // client also takes the markers, published on every partition after the
    // rest, and gets nothing else before them.
    for c in [&mut all, &mut nba, &mut g1, &mut gone] {
        c.subscribe(&["sport:mlb"]).await;
    }
    let markers = infra.publish_markers(&producer, "mlb").await;
    for (name, c) in [
        ("all", &mut all),
        ("nba", &mut nba),
        ("g1", &mut g1),
        ("gone", &mut gone),
    ] {
        let more = c.until(&markers).await;
        assert!(more.is_empty(), "{name} got more: {more:?}");
    }
    // Positions increase per partition.
    let mut last: HashMap<i64, i64> = HashMap::new();
    for f in &got_all {
        let (p, o) = (
            f["position"]["partition"].as_i64().unwrap(),
            f["position"]["offset"].as_i64().unwrap(),
        );
        assert!(
            last.get(&p).is_none_or(|prev| *prev < o),
            "out of order on partition {p}"
        );
        last.insert(p, o);
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_each_get_every_message_once() {
    let infra = Infra::new();
    let app = spawn(&infra, &[]).await;
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut c = client(&app).await;
        c.subscribe(&[if i % 2 == 0 { "all" } else { "sport:nba" }])
            .await;
        clients.push(c);
    }
    let producer = infra.producer();
    let batch: Vec<_> = (0..20)
        .map(|i| pred(&format!("k{i}"), "nba", 0.5))
        .collect();
    publish(&producer, &batch).await;
    // Then markers on every partition: what a client gets before them is
    // all it gets of the 20.
    let markers = Arc::new(infra.publish_markers(&producer, "nba").await);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let markers = Arc::clone(&markers);
            tokio::spawn(async move { ids(&c.until(&markers).await) })
        })
        .collect();
    for t in tasks {
        let mut got = t.await.unwrap();
        got.sort();
        assert_eq!(got.len(), 20, "a duplicate or stray frame: {got:?}");
        got.dedup();
        assert_eq!(got.len(), 20);
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fanout_instances_deliver_identical_sequences() {
    let infra = Infra::new();
    let a = spawn(&infra, &[]).await;
    let b = spawn(&infra, &[]).await;
    let mut ca = client(&a).await;
    ca.subscribe(&["all"]).await;
    let mut cb = client(&b).await;
    cb.subscribe(&["all"]).await;
    let batch: Vec<_> = (0..60)
        .map(|i| pred(&format!("t{}", i % 7), "nba", i as f32 / 60.0))
        .collect();
    publish(&infra.producer(), &batch).await;
    let key = |f: &serde_json::Value| {
        (
            f["position"]["partition"].as_i64().unwrap(),
            f["position"]["offset"].as_i64().unwrap(),
            f["data"]["game_id"].as_str().unwrap().to_owned(),
        )
    };
    let mut sa: Vec<_> = ca.predictions(60).await.iter().map(key).collect();
    let mut sb: Vec<_> = cb.predictions(60).await.iter().map(key).collect();
    // Per partition the order is the same; across partitions each replica
    // may interleave differently.
    sa.sort();
    sb.sort();
    assert_eq!(sa, sb);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_closed_while_a_fast_one_gets_everything() {
    let infra = Infra::new();
    let app = spawn(&infra, &[("CLIENT_QUEUE", "256")]).await;
    // The slow client offers a tiny receive window and reads nothing until
    // the end; the fast one reads as frames come.
    let mut slow = Ws::connect_with(app.addr, "/v1/stream", None, Some(4096))
        .await
        .unwrap();
    slow.subscribe(&["all"]).await;
    let mut fast = client(&app).await;
    fast.subscribe(&["all"]).await;

    let producer = infra.producer();
    // More than the kernel buffers of a loopback connection hold (MiBs).
    let n = 20_000;
    let batch: Vec<_> = (0..n).map(|i| pred(&format!("s{i}"), "nba", 0.5)).collect();
    // The fast client reads as frames come; the stream is paced by it (a
    // chunk goes out once it has read the ones before), so it keeps up
    // however busy the machine is, while the slow one falls behind by
    // thousands.
    let received = Arc::new(AtomicUsize::new(0));
    let fast_reader = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(n);
            while ids.len() < n {
                let v = fast.next().await;
                if v["type"] == "prediction" {
                    ids.push(v["data"]["game_id"].as_str().unwrap().to_owned());
                    received.store(ids.len(), Ordering::Relaxed);
                }
            }
            ids.sort();
            ids.dedup();
            ids.len()
        })
    };
    let chunk = 100;
    for (k, part) in batch.chunks(chunk).enumerate() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while received.load(Ordering::Relaxed) < k * chunk {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fast client stalled"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        publish(&producer, part).await;
    }
    assert_eq!(
        fast_reader.await.unwrap(),
        n,
        "the fast client missed messages"
    );
    // The slow one reads what was already on its way, then the close.
    let (mut read, mut code) = (0, None);
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), slow.stream.next()).await {
        match m {
            Ok(Message::Text(_)) => read += 1,
            Ok(Message::Close(frame)) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("after {read} frames: {e}"),
        }
    }
    assert_eq!(code, Some(4001), "after {read} frames");
    assert!(read < n, "the slow client was not cut off ({read} frames)");
    eprintln!("the slow client read {read} of {n} frames before 4001");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_clients_with_going_away() {
    let infra = Infra::new();
    let app = spawn(&infra, &[]).await;
    let mut c = client(&app).await;
    c.subscribe(&["all"]).await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(c.close_code(Duration::from_secs(10)).await, Some(1001));
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_is_served() {
    let infra = Infra::new();
    let app = spawn(&infra, &[]).await;
    let r = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("/v1/stream") && body.contains("Live win probabilities"));
    app.stop().await.unwrap();
}

/// The metrics themselves. The recorder is the process's, shared with
/// anything else that runs in it: the test reads how far each moved from a
/// scrape of its own taken first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_subscriptions_and_deliveries() {
    let infra = Infra::new();
    let app = spawn(&infra, &[]).await;
    let scrape = || async {
        let text = app.get_text("/metrics").await;
        move |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        }
    };
    let before = scrape().await;
    let mut a = client(&app).await;
    a.subscribe(&["all", "sport:nba"]).await;
    a.next().await; // the second `subscribed`
    let mut b = client(&app).await;
    b.subscribe(&["game:m1"]).await;
    publish(
        &infra.producer(),
        &[pred("m1", "nba", 0.5), pred("m2", "nfl", 0.5)],
    )
    .await;
    a.predictions(3).await; // m1 on all and sport:nba, m2 on all
    b.predictions(1).await;

    // A connection counts its bytes and latency once its write is flushed,
    // which may be after the client has the frame: the counters follow.
    let series = [
        "fanout_connections",
        "fanout_subscriptions",
        "fanout_messages_in_total",
        "fanout_messages_out_total",
        "fanout_bytes_out_total",
        // The first frame of each connection is a latency sample, and
        // one of the fanout stage; the Kafka stage counts every message.
        "fanout_e2e_latency_seconds_count",
        "fanout_stage_seconds_count{stage=\"fanout\"}",
        "fanout_stage_seconds_count{stage=\"kafka\"}",
    ];
    eventually(
        "the metrics to count the clients and their frames",
        Duration::from_secs(10),
        || async {
            let now = scrape().await;
            let moved = series.map(|s| now(s) - before(s));
            let [
                connections,
                subscriptions,
                messages_in,
                messages_out,
                bytes_out,
                latencies,
                fanout_stage,
                kafka_stage,
            ] = moved;
            let counted = (
                connections,
                subscriptions,
                messages_in,
                messages_out,
                latencies,
                fanout_stage,
                kafka_stage,
            ) == (2.0, 3.0, 2.0, 4.0, 2.0, 2.0, 2.0)
                && bytes_out > 400.0;
            if counted { Ok(()) } else { Err(moved) }
        },
    )
    .await;

    a.send(serde_json::json!({"op": "unsubscribe", "channels": ["sport:nba"]}))
        .await;
    assert_eq!(a.next().await["type"], "unsubscribed");
    drop(b);
    eventually(
        "the gauges to follow the clients",
        Duration::from_secs(10),
        || async {
            let m = scrape().await;
            let gauges = ["fanout_connections", "fanout_subscriptions"].map(|g| m(g) - before(g));
            if gauges == [1.0, 1.0] {
                Ok(())
            } else {
                Err(gauges)
            }
        },
    )
    .await;
    app.stop().await.unwrap();
}
