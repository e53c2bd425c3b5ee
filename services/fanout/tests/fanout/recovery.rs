//! Reconnecting clients resume without gaps or duplicates.

use std::collections::BTreeMap;

use fantasy_cache::{Cache, RedisConfig};
use serde_json::{Value, json};

use crate::support::{Infra, client, ids, pred, publish, spawn};

/// The client-side position tracking PROTOCOL.md describes.
fn track(since: &mut BTreeMap<String, i64>, frame: &Value) {
    let mut bump = |p: String, o: i64| {
        let e = since.entry(p).or_insert(-1);
        *e = (*e).max(o);
    };
    match frame["type"].as_str() {
        Some("subscribed") => {
            for (p, o) in frame["positions"].as_object().unwrap() {
                bump(p.clone(), o.as_i64().unwrap());
            }
        }
        Some("prediction") => bump(
            frame["position"]["partition"].to_string(),
            frame["position"]["offset"].as_i64().unwrap(),
        ),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_gets_exactly_what_it_missed() {
    let infra = Infra::new();
    let app = spawn(&infra, &[]).await;
    let producer = infra.producer();
    let mut since = BTreeMap::new();
    // A client that stays: what it gets, the fanout has read.
    let mut watcher = client(&app).await;
    watcher.subscribe(&["all"]).await;

    let mut c = client(&app).await;
    track(&mut since, &c.subscribe(&["all"]).await);
    publish(
        &producer,
        &(0..10)
            .map(|i| pred(&format!("before{i}"), "nba", 0.5))
            .collect::<Vec<_>>(),
    )
    .await;
    for f in c.predictions(10).await {
        track(&mut since, &f);
    }
    drop(c);

    let missed: Vec<_> = (0..50)
        .map(|i| pred(&format!("missed{}", i % 9), "nba", i as f32 / 50.0))
        .collect();
    publish(&producer, &missed).await;
    // The fanout read them before the client comes back.
    watcher.predictions(10 + missed.len()).await;

    let mut c = client(&app).await;
    c.send(json!({"op": "subscribe", "channels": ["all"], "since": {"all": since}}))
        .await;
    let sub = c.next().await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["recovered"], true);
    // Then it is live again: markers published now, on every partition,
    // come after the replay, and nothing but the replay before them.
    let markers = infra.publish_markers(&producer, "nba").await;
    let replay = c.until(&markers).await;
    assert_eq!(replay.len(), 50, "not the 50 missed: {:?}", ids(&replay));
    // Exactly the 50, each once, in order per game (and per partition).
    let mut got = ids(&replay);
    let mut want: Vec<String> = missed.iter().map(|p| p.game_id.clone()).collect();
    let per_game = |v: &[Value], g: &str| -> Vec<f64> {
        v.iter()
            .filter(|f| f["data"]["game_id"] == g)
            .map(|f| f["data"]["home_win_prob"].as_f64().unwrap())
            .collect()
    };
    for g in 0..9 {
        let game = format!("missed{g}");
        let probs = per_game(&replay, &game);
        let mut sorted = probs.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(probs, sorted, "{game} out of order");
    }
    got.sort();
    want.sort();
    assert_eq!(got, want);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_history_a_client_gets_recovered_false_and_a_snapshot() {
    let infra = Infra::new();
    let app = spawn(&infra, &[("HISTORY_SIZE", "10")]).await;
    let producer = infra.producer();
    let mut cfg = RedisConfig::new(fantasy_cache::DEFAULT_REDIS_URL);
    cfg.prefix = infra.redis_prefix.clone();
    let cache = Cache::connect(&cfg).await.unwrap();
    let mut since = BTreeMap::new();
    // A client that stays: what it gets, the fanout has read.
    let mut watcher = client(&app).await;
    watcher.subscribe(&["sport:nba"]).await;

    let mut c = client(&app).await;
    track(&mut since, &c.subscribe(&["sport:nba"]).await);
    drop(c);

    // 40 updates of 4 games: more than the history holds. The predictor
    // keeps the latest per game in Redis; here the test does.
    let updates: Vec<_> = (0..40)
        .map(|i| pred(&format!("h{}", i % 4), "nba", i as f32 / 40.0))
        .collect();
    cache.set_latest_predictions(&updates).await.unwrap();
    publish(&producer, &updates).await;
    // The fanout read them before the client comes back.
    watcher.predictions(updates.len()).await;

    let mut c = client(&app).await;
    c.send(json!({"op": "subscribe", "channels": ["sport:nba"], "since": {"sport:nba": since}}))
        .await;
    let sub = c.next().await;
    assert_eq!(sub["recovered"], false);
    let snap = c.next().await;
    assert_eq!(snap["type"], "snapshot");
    let mut games: Vec<_> = snap["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["game_id"].as_str().unwrap().to_owned())
        .collect();
    games.sort();
    assert_eq!(games, ["h0", "h1", "h2", "h3"]);
    // The snapshot holds each game's latest probability.
    for p in snap["data"].as_array().unwrap() {
        let g: usize = p["game_id"].as_str().unwrap()[1..].parse().unwrap();
        let latest = (36 + g) as f64 / 40.0;
        assert!((p["home_win_prob"].as_f64().unwrap() - latest).abs() < 1e-6);
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_fanout_refills_its_history_from_kafka() {
    let infra = Infra::new();
    let producer = infra.producer();
    let mut since = BTreeMap::new();
    let first = spawn(&infra, &[]).await;
    let mut c = client(&first).await;
    track(&mut since, &c.subscribe(&["game:r1"]).await);
    publish(&producer, &[pred("r1", "nba", 0.1)]).await;
    for f in c.predictions(1).await {
        track(&mut since, &f);
    }
    drop(c);
    first.stop().await.unwrap();

    // While no fanout runs, r1 changes twice.
    publish(&producer, &[pred("r1", "nba", 0.2), pred("r1", "nba", 0.3)]).await;
    let second = spawn(&infra, &[]).await;
    let mut c = client(&second).await;
    c.send(json!({"op": "subscribe", "channels": ["game:r1"], "since": {"game:r1": since}}))
        .await;
    assert_eq!(c.next().await["recovered"], true);
    let got: Vec<f64> = c
        .predictions(2)
        .await
        .iter()
        .map(|f| f["data"]["home_win_prob"].as_f64().unwrap())
        .collect();
    assert!(
        (got[0] - 0.2).abs() < 1e-6 && (got[1] - 0.3).abs() < 1e-6,
        "{got:?}"
    );
    second.stop().await.unwrap();
}
