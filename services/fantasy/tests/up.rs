//! `fantasy up` in process: the whole stack on free ports, a fast simulated
//! league; a WebSocket client and a REST client see its predictions.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fantasy::up::{self, UpArgs};
use fantasy_config::Env;
use fantasy_db::testing::TestDb;
use futures::StreamExt as _;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stack_comes_up_trains_a_model_and_streams_predictions() {
    fantasy_telemetry::install_crypto_provider();
    let db = TestDb::new().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("DATABASE_URL", db.url.as_str()),
        (
            "REDIS_PREFIX",
            &format!("test:{}:", uuid::Uuid::new_v4().simple()),
        ),
        // 10 teams: 10 rounds of history (50 games) at once, then 10 more
        // rounds in 20 seconds.
        (
            "COLLECTOR_SOURCES",
            "sim:nba?teams=10&games=20&history=10&minutes=0.33",
        ),
        ("TRAIN_MIN_GAMES", "40"),
        ("RUST_LOG", "warn"),
    ]);
    let cfg = fantasy::Config::from_env(&env).unwrap();
    let args = UpArgs {
        port: 0,
        data_dir: data.path().to_owned(),
        partitions: 4,
        ..UpArgs::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stack = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { up::run(&cfg, &env, args, shutdown, Some(tx)).await })
    };
    let endpoints = tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .expect("the stack was not up within 2 minutes")
        .expect("the stack stopped before it was up");

    // A WebSocket client on `all` gets live predictions.
    let tcp = tokio::net::TcpStream::connect(endpoints.fanout)
        .await
        .unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}/v1/stream", endpoints.fanout), tcp)
            .await
            .unwrap();
    use futures::SinkExt as _;
    ws.send(Message::text(r#"{"op":"subscribe","channels":["all"]}"#))
        .await
        .unwrap();
    let prediction = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(frame) = ws.next().await {
            if let Message::Text(t) = frame.unwrap() {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "prediction" {
                    return v;
                }
            }
        }
        panic!("the stream ended");
    })
    .await
    .expect("no prediction within a minute");
    let game_id = prediction["data"]["game_id"].as_str().unwrap();
    let p = prediction["data"]["home_win_prob"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));

    // The same game over REST.
    let r = reqwest::get(format!(
        "http://{}/v1/predictions/{game_id}",
        endpoints.predictor
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["game_id"], game_id);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(90), stack)
        .await
        .expect("the stack did not stop within 90 s")
        .unwrap()
        .unwrap();
}
