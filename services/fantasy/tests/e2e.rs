//! The whole loop in one process (`fantasy up` on free ports): collect ->
//! predict -> fan out -> evaluate -> retrain -> hot swap, with a regime
//! change in the simulated league. Nothing lost, nothing duplicated.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loop_closes_and_loses_nothing() {
    // 10 teams, 80 rounds of 5 games: 40 rounds of history at once (the
    // first model trains on at least 150 of its games, holding out 30 or
    // more), 40 live in about 30 s; from round 60 every strength is drawn
    // again (the spread is wide, so the change is a shock).
    let mut stack = common::Stack::start(
        4,
        &[
            (
                "COLLECTOR_SOURCES",
                "sim:nba?seed=5&teams=10&games=80&history=40&minutes=0.5&regime_round=60&spread=1.5",
            ),
            ("TRAIN_MIN_GAMES", "150"),
            ("EVAL_WINDOW", "60"),
            ("RETRAIN_MIN_SAMPLES", "30"),
            ("RETRAIN_EVERY_OUTCOMES", "0"),
            ("RETRAIN_ACCURACY_BELOW", "0"),
            ("RETRAIN_BRIER_ABOVE", "1"),
            // Strengths spread wide (1.5 logits): the old ratings are
            // confidently wrong after the change, far beyond the noise of a
            // 60-game window.
            ("RETRAIN_BRIER_RISE", "0.12"),
            ("RETRAIN_COOLDOWN", "1h"),
            // Any retrained model is promoted: the test follows the swap.
            ("PROMOTE_MARGIN", "-1"),
        ],
    )
    .await;
    let e = stack.up(Duration::from_secs(120)).await;

    // A WebSocket client on `all`, from the first prediction on (the
    // fanout's history reaches back to it: recovered).
    let tcp = tokio::net::TcpStream::connect(e.fanout).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/v1/stream", e.fanout), tcp)
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"op":"subscribe","channels":["all"],"since":{"all":{}}}"#,
    ))
    .await
    .unwrap();
    let frames = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let reader = {
        let frames = frames.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                if let Message::Text(t) = frame {
                    frames
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(t.as_str()).unwrap());
                }
            }
        })
    };

    // A REST client asking all along: not one request may fail, through the
    // model swap.
    let stop_rest = Arc::new(AtomicBool::new(false));
    let rest = {
        let stop = stop_rest.clone();
        let url = format!("http://{}/v1/predict", e.predictor);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut versions = BTreeSet::new();
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .json(
                        &serde_json::json!({"features": [0.6, 0.2, 0.3, -0.2, 1.0, 1.0, 0.6, 0.4]}),
                    )
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        versions.insert(v["model_version"].as_str().unwrap().to_owned());
                        ok += 1;
                    }
                    Ok(r) => failed.push(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(err) => failed.push(err.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed, versions)
        })
    };

    // The season ends: every source done.
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    loop {
        let v: Value = http
            .get(format!("http://{}/v1/sources", e.collector))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "done")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the season did not end: {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pool = stack.db.db.pool();
    let games: i64 = sqlx::query_scalar("SELECT count(*) FROM games")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(games, 400, "every game of the season is stored");
    // Every game gets its prediction, in Postgres and on the socket.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let predicted: i64 = sqlx::query_scalar("SELECT count(DISTINCT game_id) FROM predictions")
            .fetch_one(pool)
            .await
            .unwrap();
        let received = frames
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f["type"] == "prediction")
            .count();
        if predicted == games && received as i64 >= games {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "predictions: {predicted} games in Postgres, {received} frames, of {games} games"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_rest.store(true, Ordering::Relaxed);
    // A game's latest prediction over REST.
    let r = reqwest::get(format!(
        "http://{}/v1/predictions/nba-sim-5-00350",
        e.predictor
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let latest: Value = r.json().await.unwrap();
    assert_eq!(latest["game_id"], "nba-sim-5-00350");
    let (ok, failed, rest_versions) = rest.await.unwrap();

    // The regime change fired a retrain, its model was promoted, and later
    // predictions carry it.
    let runs: Vec<(String, String)> =
        sqlx::query_as("SELECT trigger, status FROM training_runs ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    println!("training runs: {runs:?}");
    // Outcomes reached the trainer: it scored the models on them.
    let scored: i64 =
        sqlx::query_scalar("SELECT COALESCE(max(sample_count), 0) FROM model_metrics")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(scored >= 30, "the trainer scored {scored} games");
    assert_eq!(
        runs.first().map(|r| r.0.as_str()),
        Some("bootstrap"),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(|r| r.0 == "brier" && r.1 == "promoted"),
        "no retrain on the regime change: {runs:?}"
    );
    let versions: Vec<(String, i64)> = sqlx::query_as(
        "SELECT model_version, count(*) FROM predictions GROUP BY model_version ORDER BY min(predicted_at)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    println!("predictions by model version: {versions:?}; REST requests: {ok}");
    assert!(
        versions.len() >= 2,
        "one model served all along: {versions:?}"
    );
    // The retrained model answers games after the change (round 60 starts
    // with game 300), not before: the trigger followed the change.
    let first_of_new: String =
        sqlx::query_scalar("SELECT min(game_id) FROM predictions WHERE model_version = $1")
            .bind(&versions.last().unwrap().0)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(first_of_new.as_str() > "nba-sim-5-00300", "{first_of_new}");
    assert!(
        failed.is_empty(),
        "{} REST requests failed: {failed:?}",
        failed.len()
    );
    assert!(
        rest_versions.len() >= 2,
        "REST saw one model: {rest_versions:?} ({ok} requests)"
    );

    // Nothing lost, nothing duplicated: one prediction per game in
    // Postgres, and the socket received each prediction message once.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM predictions")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rows, games);
    let frames = frames.lock().unwrap().clone();
    let subscribed = frames.iter().find(|f| f["type"] == "subscribed").unwrap();
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let mut seen = HashMap::new();
    for f in frames.iter().filter(|f| f["type"] == "prediction") {
        let key = (
            f["position"]["partition"].as_i64().unwrap(),
            f["position"]["offset"].as_i64().unwrap(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a frame came twice");
    let game_ids: BTreeSet<&str> = frames
        .iter()
        .filter(|f| f["type"] == "prediction")
        .map(|f| f["data"]["game_id"].as_str().unwrap())
        .collect();
    assert_eq!(game_ids.len() as i64, games);
    assert_eq!(seen.len() as i64, games, "one prediction message per game");

    reader.abort();
    stack.stop(Duration::from_secs(90)).await;
}
