//! The predictor's stream path at full speed: `games` -> predict ->
//! Postgres + Redis + `predictions`, on this machine's two cores (the
//! embedded broker, Postgres and Redis share them).
//!
//! A backlog of N game events is produced first; then the predictor starts
//! and the clock runs from its first prediction to its N-th. This measures
//! what one predictor sustains when it is the bottleneck.
//!
//! `cargo bench -p fantasy-benches --bench stream`
//! (`STREAM_GAMES`, default 200000; `STREAM_MAX_BATCH`, default 2000)

use std::time::{Duration, Instant};

use fantasy_config::Env;
use fantasy_db::testing::TestDb;
use fantasy_kafka::{EmbeddedBroker, KafkaConfig, Producer};
use fantasy_messages::{Game, GameStatus, SchemaVersion, Topic};
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n = env_or("STREAM_GAMES", 200_000);
    let max_batch = env_or("STREAM_MAX_BATCH", 2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        fantasy_telemetry::install_crypto_provider();
        let metrics = fantasy_telemetry::metrics_handle();
        let broker = EmbeddedBroker::start(3)?;
        let prefix = "bench.";
        let specs: Vec<_> = Topic::ALL.iter().map(|t| t.spec(prefix, 8)).collect();
        broker.create_topics(&specs)?;
        let mut kafka = KafkaConfig::new(broker.bootstrap_servers(), "stream-bench");
        kafka.topic_prefix = prefix.into();
        let db = TestDb::new().await?;

        // The backlog.
        let producer = Producer::new(&kafka)?;
        let now = chrono::Utc::now();
        let started = Instant::now();
        for chunk in 0..n.div_ceil(10_000) {
            let games: Vec<Game> = (chunk * 10_000..((chunk + 1) * 10_000).min(n))
                .map(|i| Game {
                    schema_version: SchemaVersion,
                    game_id: format!("bench-{i}"),
                    sport: "nba".into(),
                    league: "NBA".into(),
                    season: "2026-27".into(),
                    home_team: format!("H{}", i % 30),
                    away_team: format!("A{}", (i + 7) % 30),
                    scheduled_at: now,
                    status: GameStatus::Scheduled,
                    features: (0..8).map(|j| ((i * 8 + j) % 17) as f32 / 8.0 - 1.0).collect(),
                    feature_set: "fixture-v1".into(),
                    source: "bench".into(),
                    source_updated_at: now,
                    produced_at: now,
                })
                .collect();
            producer.publish_batch(&games).await?;
        }
        println!("produced {n} games in {:.2?}", started.elapsed());

        let model = format!(
            "{}/../libs/inference/fixtures/mlp_torch.onnx",
            env!("CARGO_MANIFEST_DIR")
        );
        let cfg = predictor::Config::for_profile(
            &Env::from_pairs([
                ("KAFKA_BROKERS", broker.bootstrap_servers()),
                ("KAFKA_TOPIC_PREFIX", prefix),
                ("DATABASE_URL", db.url.as_str()),
                ("REDIS_PREFIX", "bench:"),
                ("MODEL_PATH", model.as_str()),
                ("INFERENCE_DEVICE", "cpu"),
                ("STREAM_MAX_BATCH", &max_batch.to_string()),
                ("MAX_BATCH", &max_batch.to_string()),
                ("PREDICTION_TTL", "10m"),
            ]),
            fantasy_config::Profile::Local,
        )?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let shutdown = CancellationToken::new();
        let app = tokio::spawn(predictor::run(cfg, listener, shutdown.clone()));

        let mut first: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut last_report = Instant::now();
        loop {
            let done = counter(&metrics.render(), "predictor_stream_predictions_total");
            if done > 0.0 && first.is_none() {
                first = Some(Instant::now());
            }
            if done as usize >= n {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "only {done} of {n} predictions after 10 minutes");
            anyhow::ensure!(!app.is_finished(), "the predictor stopped");
            if last_report.elapsed() > Duration::from_secs(5) {
                println!("  {done} predictions so far");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM predictions").fetch_one(db.db.pool()).await?;
        println!(
            "stream path: {n} predictions in {elapsed:.2?} = {:.0} predictions/s (max batch {max_batch}); {rows} rows in Postgres",
            n as f64 / elapsed.as_secs_f64()
        );
        let text = metrics.render();
        for line in text.lines().filter(|l| {
            l.starts_with("predictor_stream_sink_seconds_sum")
                || l.starts_with("predictor_stream_sink_seconds_count")
                || l.starts_with("inference_batch_seconds_sum")
                || l.starts_with("inference_batch_rows_sum")
                || l.starts_with("inference_batch_rows_count")
                || l.starts_with("kafka_consumer_batch_size_sum")
                || l.starts_with("kafka_consumer_batch_size_count")
        }) {
            println!("  {line}");
        }
        shutdown.cancel();
        app.await??;
        db.drop_database().await?;
        drop(broker);
        Ok(())
    })
}
