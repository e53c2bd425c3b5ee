//! The games -> predictions stream.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantasy_cache::{Cache, RedisConfig};
use fantasy_kafka::{Consumer, ConsumerOptions, Handler, Producer, Record};
use fantasy_messages::testing::game;
use fantasy_messages::{Game, GameStatus, Prediction};
use tokio_util::sync::CancellationToken;

use crate::support::{App, Infra, eventually, fixture};

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Record<Prediction>>>>);

impl Handler<Prediction> for Collect {
    async fn handle(&mut self, batch: &[Record<Prediction>]) -> anyhow::Result<()> {
        self.0.lock().unwrap().extend(batch.iter().cloned());
        Ok(())
    }
}

fn games(n: usize) -> Vec<Game> {
    (0..n)
        .map(|i| {
            let mut g = game(&format!("s-{i}"));
            g.features = (0..8)
                .map(|j| ((i * 8 + j) % 13) as f32 / 7.0 - 0.9)
                .collect();
            g.feature_set = "fixture-v1".into();
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

/// The predictor with the fixture model, and a reader of the predictions
/// topic (as the fanout reads it).
async fn start(
    infra: &Infra,
) -> (
    App,
    Collect,
    CancellationToken,
    tokio::task::JoinHandle<Result<fantasy_kafka::RunSummary, fantasy_kafka::ConsumerError>>,
) {
    let model = fixture("mlp_torch.onnx").display().to_string();
    let app = App::spawn(infra, &[("MODEL_PATH", &model)]).await;
    let collected = Collect::default();
    let mut opts = ConsumerOptions::new("fanout-test", [infra.kafka.topics().predictions]);
    opts.session_timeout = Duration::from_secs(4);
    let reader = Consumer::<Prediction>::new(&infra.kafka, opts).unwrap();
    let stop = CancellationToken::new();
    let reader = tokio::spawn(reader.run(collected.clone(), stop.clone()));
    (app, collected, stop, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn games_become_predictions_in_postgres_redis_and_kafka_and_redelivery_adds_no_rows() {
    let infra = Infra::new().await;
    let (app, collected, stop, reader) = start(&infra).await;

    let producer = Producer::new(&infra.kafka).unwrap();
    let sent = games(200);
    producer.publish_batch(&sent).await.unwrap();
    // 20 of them are final: no forecast for those.
    eventually(
        "180 predictions on Kafka",
        Duration::from_secs(60),
        || async { collected.0.lock().unwrap().len() >= 180 },
    )
    .await;
    eventually("180 rows in Postgres", Duration::from_secs(10), || async {
        predictions_in_db(&infra).await == 180
    })
    .await;

    let records = collected.0.lock().unwrap().clone();
    let ids: HashSet<_> = records.iter().map(|r| r.value.game_id.clone()).collect();
    assert_eq!(ids.len(), 180);
    assert!(!ids.contains("s-9"), "final games get no prediction");
    let p = &records
        .iter()
        .find(|r| r.value.game_id == "s-0")
        .unwrap()
        .value;
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
    let rest: serde_json::Value = app
        .http
        .get(app.url("/v1/predictions/s-0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rest["home_win_prob"].as_f64().unwrap() as f32,
        p.home_win_prob
    );
    let direct: serde_json::Value = app
        .post_json(
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

    // Redelivered events (as after a crash before commit): no new rows.
    producer.publish_batch(&sent[..50]).await.unwrap();
    eventually(
        "the redelivered 45 handled",
        Duration::from_secs(30),
        || async { collected.0.lock().unwrap().len() >= 225 },
    )
    .await;
    assert_eq!(predictions_in_db(&infra).await, 180);

    // Undecodable events are skipped without stalling the stream.
    producer
        .send_bytes(&infra.kafka.topics().games, Some(b"x"), b"{broken", None)
        .await
        .unwrap();
    let mut late = game("late");
    late.features = vec![0.0; 8];
    late.feature_set = "fixture-v1".into();
    producer.publish(&late).await.unwrap();
    eventually(
        "the event after the poison one",
        Duration::from_secs(30),
        || async {
            collected
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.value.game_id == "late")
        },
    )
    .await;

    stop.cancel();
    reader.await.unwrap().unwrap();
    app.stop().await.unwrap();

    // Offsets were committed: a restarted predictor in the same group does
    // not redo the work.
    let model = fixture("mlp_torch.onnx").display().to_string();
    let app = App::spawn(&infra, &[("MODEL_PATH", &model)]).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let handled_again = text
        .lines()
        .find(|l| l.starts_with("predictor_stream_predictions_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    // The metric is process-wide: the first app's 180 + 45 + 1 are there,
    // and nothing more.
    assert_eq!(
        handled_again, 226.0,
        "events were handled again after the restart"
    );
    app.stop().await.unwrap();
    infra.db.drop_database().await.unwrap();
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
    let infra = Infra::new().await;
    let (app, collected, stop, reader) = start(&infra).await;

    let pool = infra.db.db.pool();
    sqlx::query("ALTER TABLE predictions RENAME TO predictions_away")
        .execute(pool)
        .await
        .unwrap();
    let producer = Producer::new(&infra.kafka).unwrap();
    // 18 of 20 get a prediction (two are final), 9 of each half.
    let sent = games(20);
    let announced = || collected.0.lock().unwrap().len();
    producer.publish_batch(&sent[..10]).await.unwrap();
    eventually(
        "the first batch's predictions on Kafka",
        Duration::from_secs(60),
        || async { announced() > 0 },
    )
    .await;
    producer.publish_batch(&sent[10..]).await.unwrap();
    // Several retries of the first batch fail meanwhile (backoff from
    // 100 ms), and the second waits behind it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = announced();
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
    eventually(
        "18 predictions on Kafka",
        Duration::from_secs(30),
        || async { announced() >= 18 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (total, distinct) = {
        let records = collected.0.lock().unwrap();
        let games: HashSet<&str> = records.iter().map(|r| r.value.game_id.as_str()).collect();
        (records.len(), games.len())
    };
    assert_eq!((total, distinct), (18, 18), "announced again");

    stop.cancel();
    reader.await.unwrap().unwrap();
    app.stop().await.unwrap();
}

/// `/ready` sees a stream that does not move: games wait, every batch
/// fails (the predictions table is away), every other check passes; it is
/// ready again once the stream moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_move_makes_it_unready_until_it_moves() {
    let infra = Infra::new().await;
    let model = fixture("mlp_torch.onnx").display().to_string();
    let app = App::spawn(
        &infra,
        &[("MODEL_PATH", &model), ("KAFKA_STALL_AFTER", "2s")],
    )
    .await;
    let ready = || async {
        let r = app.http.get(app.url("/ready")).send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body)
    };
    eventually("ready", Duration::from_secs(30), || async {
        ready().await.0 == 200
    })
    .await;

    let pool = infra.db.db.pool();
    sqlx::query("ALTER TABLE predictions RENAME TO predictions_away")
        .execute(pool)
        .await
        .unwrap();
    let producer = Producer::new(&infra.kafka).unwrap();
    producer.publish_batch(&games(10)).await.unwrap();
    eventually("not ready", Duration::from_secs(30), || async {
        ready().await.0 == 503
    })
    .await;
    let (_, body) = ready().await;
    let checks = body["checks"].as_array().unwrap();
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["games stream"], "{body}");
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
        ready().await.0 == 200
    })
    .await;
    assert_eq!(predictions_in_db(&infra).await, 9);
    app.stop().await.unwrap();
}
