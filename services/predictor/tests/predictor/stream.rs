//! The games -> predictions stream.

use std::collections::HashSet;
use std::time::Duration;

use fantasy_cache::{Cache, RedisConfig};
use fantasy_kafka::KafkaConfig;
use fantasy_messages::testing::game;
use fantasy_messages::{Game, GameStatus, Prediction, Topic};
use fantasy_testkit::{Spawned, TopicReader, eventually, read_all, wait_caught_up};

use crate::support::{Infra, fixture, post_json, rig, spawn};

/// The predictor's consumer group on `games` (`PREDICTOR_GROUP`'s default).
const GROUP: &str = "predictor";

/// A game the fixture model predicts.
fn forecastable(id: &str) -> Game {
    let mut g = game(id);
    g.features = vec![0.0; 8];
    g.feature_set = "fixture-v1".into();
    g
}

fn games(n: usize) -> Vec<Game> {
    (0..n)
        .map(|i| {
            let mut g = forecastable(&format!("s-{i}"));
            g.features = (0..8)
                .map(|j| ((i * 8 + j) % 13) as f32 / 7.0 - 0.9)
                .collect();
            if i % 10 == 9 {
                g.status = GameStatus::Final;
            }
            g
        })
        .collect()
}

async fn predictions_in_db(infra: &Infra) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM predictions")
        .fetch_one(infra.db.db.pool())
        .await
        .unwrap()
}

/// The predictor with the fixture model and the infra's settings plus
/// `extra`.
async fn start(infra: &Infra, extra: &[(&str, &str)]) -> Spawned {
    let model = fixture("mlp_torch.onnx").display().to_string();
    let mut env = vec![("MODEL_PATH", model.as_str())];
    env.extend_from_slice(extra);
    spawn(infra, &env).await
}

/// `GET /ready`: the status and the body.
async fn ready(app: &Spawned) -> (u16, serde_json::Value) {
    let r = app.http.get(app.url("/ready")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The names of the checks that fail in a `/ready` body.
fn failing(body: &serde_json::Value) -> Vec<&str> {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

async fn caught_up(kafka: &KafkaConfig) {
    wait_caught_up(kafka, GROUP, &[Topic::Games], Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn games_become_predictions_in_postgres_redis_and_kafka_and_redelivery_adds_no_rows() {
    let infra = rig().await;
    let kafka = &infra.kafka.config;
    let app = start(&infra, &[]).await;
    let announced = TopicReader::<Prediction>::open(kafka).await;

    let producer = infra.kafka.producer();
    let sent = games(200);
    producer.publish_batch(&sent).await.unwrap();
    // 20 of them are final: no forecast for those.
    let records = announced.take(180, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 180, "predictions on Kafka");
    eventually("180 rows in Postgres", Duration::from_secs(10), || async {
        predictions_in_db(&infra).await == 180
    })
    .await;

    let ids: HashSet<_> = records.iter().map(|p| p.game_id.clone()).collect();
    assert_eq!(ids.len(), 180);
    assert!(!ids.contains("s-9"), "final games get no prediction");
    let p = records.iter().find(|p| p.game_id == "s-0").unwrap();
    assert_eq!(p.model_version, "torch-1");
    assert_eq!(p.event_produced_at, Some(sent[0].produced_at));
    assert_eq!(p.home_team, "BOS");

    // The same probability over REST, from Redis.
    let mut redis_cfg = RedisConfig::new(fantasy_cache::DEFAULT_REDIS_URL);
    redis_cfg.prefix = infra.redis_prefix.clone();
    let cache = Cache::connect(&redis_cfg).await.unwrap();
    assert_eq!(
        cache
            .latest_prediction("s-0")
            .await
            .unwrap()
            .unwrap()
            .home_win_prob,
        p.home_win_prob
    );
    let rest = app.get_json("/v1/predictions/s-0").await;
    assert_eq!(
        rest["home_win_prob"].as_f64().unwrap() as f32,
        p.home_win_prob
    );
    let direct: serde_json::Value = post_json(
        &app,
        "/v1/predict",
        &serde_json::json!({"features": sent[0].features}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        direct["home_win_prob"].as_f64().unwrap() as f32,
        p.home_win_prob
    );

    // Redelivered events (as after a crash before commit): announced again,
    // no new rows once the group has handled them.
    producer.publish_batch(&sent[..50]).await.unwrap();
    assert_eq!(
        announced.take(45, Duration::from_secs(30)).await.len(),
        45,
        "the redelivered 45 handled"
    );
    caught_up(kafka).await;
    assert_eq!(predictions_in_db(&infra).await, 180);

    // Undecodable events are skipped without stalling the stream.
    producer
        .send_bytes(&kafka.topics().games, Some(b"x"), b"{broken", None)
        .await
        .unwrap();
    producer.publish(&forecastable("late")).await.unwrap();
    let after = announced.take(1, Duration::from_secs(30)).await;
    assert_eq!(
        after.iter().map(|p| p.game_id.as_str()).collect::<Vec<_>>(),
        ["late"],
        "the event after the poison one"
    );
    app.stop().await.unwrap();

    // Offsets were committed: a restarted predictor in the same group does
    // not redo the work. Once it has handled markers on every partition,
    // all it announced is on the topic: the markers, nothing more.
    let before = read_all::<Prediction>(kafka).await.len();
    let app = start(&infra, &[]).await;
    // Games on every partition: once the group has handled them all, the
    // predictor has read every partition past the earlier ones.
    let markers = infra
        .kafka
        .publish_markers(&producer, |i| forecastable(&format!("marker-{i}")))
        .await
        .len();
    caught_up(kafka).await;
    app.stop().await.unwrap();
    assert_eq!(
        read_all::<Prediction>(kafka).await.len(),
        before + markers,
        "events were handled again after the restart"
    );
}

/// A sink that fails for a while (Postgres: its table renamed away) holds
/// the batch, which is retried until Postgres takes it; Kafka, which took
/// it the first time, announces each prediction once.
///
/// The consumer holds the stream on the failing batch: games that arrive
/// meanwhile wait behind it. The games come in two sends so that they are
/// surely two batches (one send may also be split across batches when the
/// three brokers' fetches arrive apart, as they do on a loaded machine: the
/// test once waited for all 20 to be announced while the first batch held
/// the rest back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_retried_without_announcing_twice() {
    let infra = rig().await;
    let kafka = &infra.kafka.config;
    // A stream held for a second shows on /ready.
    let app = start(&infra, &[("KAFKA_STALL_AFTER", "1s")]).await;
    let announced = TopicReader::<Prediction>::open(kafka).await;

    let pool = infra.db.db.pool();
    sqlx::query("ALTER TABLE predictions RENAME TO predictions_away")
        .execute(pool)
        .await
        .unwrap();
    let producer = infra.kafka.producer();
    // 18 of 20 get a prediction (two are final), 9 of each half.
    let sent = games(20);
    producer.publish_batch(&sent[..10]).await.unwrap();
    assert!(
        !announced.take(1, Duration::from_secs(60)).await.is_empty(),
        "the first batch's predictions on Kafka"
    );
    producer.publish_batch(&sent[10..]).await.unwrap();
    // The first batch's retries fail (backoff from 100 ms) and the second
    // waits behind it: the predictor's own /ready says its games stream has
    // not moved for the stall time.
    eventually(
        "the games stream held (on /ready)",
        Duration::from_secs(30),
        || async {
            let (status, body) = ready(&app).await;
            if status == 503 && failing(&body).contains(&"games stream") {
                Ok(())
            } else {
                Err((status, body))
            }
        },
    )
    .await;
    let held = read_all::<Prediction>(kafka).await.len();
    assert!(
        (1..=9).contains(&held),
        "{held} announced while the first batch was held"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM predictions_away")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing can be stored while the table is away");
    sqlx::query("ALTER TABLE predictions_away RENAME TO predictions")
        .execute(pool)
        .await
        .unwrap();
    eventually("18 rows in Postgres", Duration::from_secs(30), || async {
        predictions_in_db(&infra).await == 18
    })
    .await;
    // Every batch handled (all three sinks took it): all it announced is on
    // the topic.
    caught_up(kafka).await;
    let records = read_all::<Prediction>(kafka).await;
    let games: HashSet<&str> = records.iter().map(|p| p.game_id.as_str()).collect();
    assert_eq!((records.len(), games.len()), (18, 18), "announced again");
    app.stop().await.unwrap();
}

/// `/ready` sees a stream that does not move: games wait, every batch
/// fails (the predictions table is away), every other check passes; it is
/// ready again once the stream moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_move_makes_it_unready_until_it_moves() {
    let infra = rig().await;
    let app = start(&infra, &[("KAFKA_STALL_AFTER", "2s")]).await;
    eventually("ready", Duration::from_secs(30), || async {
        ready(&app).await.0 == 200
    })
    .await;

    let pool = infra.db.db.pool();
    sqlx::query("ALTER TABLE predictions RENAME TO predictions_away")
        .execute(pool)
        .await
        .unwrap();
    let producer = infra.kafka.producer();
    producer.publish_batch(&games(10)).await.unwrap();
    eventually("not ready", Duration::from_secs(30), || async {
        ready(&app).await.0 == 503
    })
    .await;
    let (_, body) = ready(&app).await;
    assert_eq!(failing(&body), ["games stream"], "{body}");
    let checks = body["checks"].as_array().unwrap();
    let why = checks.iter().find(|c| c["name"] == "games stream").unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("have not moved"), "{why}");

    sqlx::query("ALTER TABLE predictions_away RENAME TO predictions")
        .execute(pool)
        .await
        .unwrap();
    eventually("ready again", Duration::from_secs(30), || async {
        ready(&app).await.0 == 200
    })
    .await;
    // Ready once the stream moves: the rest of the games follow (a batch
    // fetched after the pause lifts may still be on its way).
    eventually("9 rows in Postgres", Duration::from_secs(30), || async {
        predictions_in_db(&infra).await == 9
    })
    .await;
    app.stop().await.unwrap();
}
