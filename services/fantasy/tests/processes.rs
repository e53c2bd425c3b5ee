//! The stack as separate processes, as it runs in production: `fantasy
//! broker` and the four service binaries, over TCP. Mid-stream the fanout is
//! killed (SIGKILL) and started again, and the collector is stopped
//! (SIGTERM) and started again; afterwards nothing is missing and nothing is
//! duplicated, in Postgres or on a WebSocket client that recovers on
//! reconnect.
//!
//! The service binaries are the workspace's (`cargo nextest run --workspace`
//! builds them next to `fantasy`).
#![allow(clippy::unwrap_used)]

mod common;

use common::procs::{Broker, Proc, binary, client, free_port, stack_env};

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantasy_db::testing::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_binaries_and_a_broker_survive_restarts_without_loss_or_duplicates() {
    fantasy_telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await.unwrap();
    let broker = Broker::start(4, dir.path());
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    // 10 teams: 16 rounds of history (80 games), 14 live rounds (70 games)
    // in about 20 s.
    let env = stack_env(
        dir.path(),
        "sim:nba?seed=7&teams=10&games=30&history=16&minutes=0.33&batch=20",
        &[
            ("KAFKA_BROKERS", broker.addr.as_str()),
            ("DATABASE_URL", db.url.as_str()),
            ("REDIS_PREFIX", &prefix),
        ],
    );

    let mut fanout = Proc::start("fanout", &env, dir.path());
    let trainer = Proc::start("trainer", &env, dir.path());
    let predictor = Proc::start("predictor", &env, dir.path());
    fanout.wait_ready(Duration::from_secs(60)).await;
    trainer.wait_ready(Duration::from_secs(60)).await;
    // The container health check: the binary asks its own /health.
    let probe = |p: &Proc| {
        Command::new(binary(p.name))
            .arg("healthcheck")
            .envs(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HTTP_ADDR", &p.addr)
            .output()
            .unwrap()
    };
    assert!(probe(&fanout).status.success());
    assert!(probe(&trainer).status.success());
    let nobody = Proc {
        name: "fanout",
        addr: format!("127.0.0.1:{}", free_port()),
        env: env.clone(),
        dir: dir.path().to_owned(),
        child: None,
    };
    let down = probe(&nobody);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));
    let frames = Arc::new(Mutex::new(Vec::new()));
    let recovered = Arc::new(Mutex::new(Vec::new()));
    let ws = tokio::spawn(client(
        fanout.addr.clone(),
        frames.clone(),
        recovered.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut collector = Proc::start("collector", &env, dir.path());
    // The predictor is ready once the trainer's first model is loaded.
    predictor.wait_ready(Duration::from_secs(120)).await;

    let pool = db.db.pool();
    let count = |sql: &'static str| async move {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        n
    };
    // Mid-stream: some live predictions out, kill the fanout and start it
    // again; stop the collector and start it again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count("SELECT count(*) FROM predictions").await < 90 {
        assert!(Instant::now() < deadline, "no live predictions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fanout.signal("-KILL");
    fanout.spawn();
    collector.signal("-TERM");
    collector.spawn();
    fanout.wait_ready(Duration::from_secs(60)).await;
    collector.wait_ready(Duration::from_secs(60)).await;

    // The season ends; every game is predicted.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let finals = count("SELECT count(*) FROM games WHERE status = 'final'").await;
        let predicted = count("SELECT count(DISTINCT game_id) FROM predictions").await;
        let received = frames.lock().unwrap().len();
        if finals == 150 && predicted == 150 && received >= 150 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{finals} finals, {predicted} games predicted, {received} frames (of 150)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    ws.abort();

    // Postgres: one game row and one prediction per game.
    assert_eq!(count("SELECT count(*) FROM games").await, 150);
    assert_eq!(count("SELECT count(*) FROM predictions").await, 150);
    assert_eq!(count("SELECT count(*) FROM outcomes").await, 150);
    // The client: it reconnected and recovered, and saw each prediction
    // message once, one per game.
    let recovered = recovered.lock().unwrap().clone();
    assert!(
        recovered.len() >= 2 && recovered.iter().all(|r| *r),
        "{recovered:?}"
    );
    let frames = frames.lock().unwrap().clone();
    let mut by_position: HashMap<(i64, i64), usize> = HashMap::new();
    let mut by_game: HashMap<String, usize> = HashMap::new();
    for f in &frames {
        let key = (
            f["position"]["partition"].as_i64().unwrap(),
            f["position"]["offset"].as_i64().unwrap(),
        );
        *by_position.entry(key).or_default() += 1;
        *by_game
            .entry(f["data"]["game_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(by_position.values().all(|n| *n == 1), "a frame came twice");
    assert_eq!(by_game.len(), 150, "a game's prediction is missing");
    assert!(
        by_game.values().all(|n| *n == 1),
        "a game was predicted twice"
    );

    for mut p in [collector, predictor, trainer, fanout] {
        p.signal("-TERM");
    }
    drop(broker);
}
