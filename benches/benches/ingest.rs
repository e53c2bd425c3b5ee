//! The collector's way out at full speed: batches of new record versions
//! through dedup (bloom in Redis, claims and marks in Postgres), features and
//! ratings, the Kafka publish (idempotent producer, acks=all, to the embedded
//! broker) and the Postgres upserts, all in one transaction per batch, as
//! `Pipeline::process` runs them for every source.
//!
//! Each measured batch is new (a score update of every game of a league-day,
//! with some finals), so every stage does its full work; the embedded
//! broker, Postgres and Redis share this machine's cores with the pipeline.
//!
//! `cargo bench -p fantasy-benches --bench ingest`
//! (needs the local Postgres and Redis)

// A bench that cannot set up, or whose batch fails, must stop loudly.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{TimeZone as _, Utc};
use collector::pipeline::Pipeline;
use collector::source::SourceGame;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use fantasy_cache::RedisConfig;
use fantasy_db::testing::TestDb;
use fantasy_dedup::{Dedup, DedupConfig};
use fantasy_features::EloParams;
use fantasy_kafka::{EmbeddedBroker, KafkaConfig, Producer};
use fantasy_messages::{GameStatus, Topic};

/// Version `v` of game `g`: scheduled first, then score updates, every
/// tenth version final.
fn version(g: u64, v: u64) -> SourceGame {
    let at =
        Utc.with_ymd_and_hms(2026, 11, 1, 19, 0, 0).unwrap() + chrono::Duration::minutes(g as i64);
    let (status, home, away) = match v {
        0 => (GameStatus::Scheduled, None, None),
        v if v % 10 == 9 => (
            GameStatus::Final,
            Some(100 + v as u32),
            Some(88 + (g % 17) as u32),
        ),
        v => (
            GameStatus::InProgress,
            Some(v as u32),
            Some((g % 13) as u32),
        ),
    };
    SourceGame {
        event_id: g.to_string(),
        game_id: format!("ingest-{g}"),
        sport: "nba".into(),
        league: "nba".into(),
        season: "2026-27".into(),
        home_team: format!("T{:02}", g % 30),
        away_team: format!("T{:02}", (g + 1 + (g / 30) % 29) % 30),
        scheduled_at: at,
        status,
        home_score: home,
        away_score: away,
        updated_at: at + chrono::Duration::seconds(v as i64),
    }
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    fantasy_telemetry::install_crypto_provider();
    let broker = EmbeddedBroker::start(3).unwrap();
    let prefix = "ingest.";
    let specs: Vec<_> = Topic::ALL.iter().map(|t| t.spec(prefix, 8)).collect();
    broker.create_topics(&specs).unwrap();
    let mut kafka = KafkaConfig::new(broker.bootstrap_servers(), "ingest-bench");
    kafka.topic_prefix = prefix.into();
    let Ok(t) = rt.block_on(TestDb::new()) else {
        eprintln!("ingest bench skipped: no Postgres");
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut redis = RedisConfig::new("redis://127.0.0.1:6379");
    redis.prefix = format!("bench:ingest:{nanos}:");
    let dedup = Dedup::builder(DedupConfig::default(), t.db.clone())
        .redis(redis)
        .build()
        .unwrap();
    let producer = Producer::new(&kafka).unwrap();
    let pipeline = Pipeline::new(t.db.clone(), producer, dedup, EloParams::default());

    let mut group = c.benchmark_group("ingest");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    // Each iteration: one batch of `batch` new versions (games 0..batch,
    // version `round`), so nothing is a duplicate.
    for batch in [1_000u64, 5_000] {
        group.throughput(Throughput::Elements(batch));
        let mut round = 0u64;
        group.bench_with_input(
            BenchmarkId::new("process/new", batch),
            &batch,
            |b, &batch| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let games: Vec<SourceGame> = (0..batch)
                            .map(|g| version(g + batch * 1_000_000, round))
                            .collect();
                        round += 1;
                        let t = Instant::now();
                        let report = rt.block_on(pipeline.process("bench", &games)).unwrap();
                        spent += t.elapsed();
                        assert_eq!(
                            report.games as u64, batch,
                            "every version is new: {report:?}"
                        );
                    }
                    spent
                });
            },
        );
    }
    // Several sources at once (leagues of their own, as shards of one
    // replica would have): their batches overlap, one in Postgres while
    // another is in Kafka.
    let streams = 4u64;
    let batch = 2_000u64;
    group.throughput(Throughput::Elements(streams * batch));
    let mut round = 0u64;
    group.bench_function(BenchmarkId::new("process/new/4_sources_x", batch), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let batches: Vec<Vec<SourceGame>> = (0..streams)
                    .map(|s| {
                        (0..batch)
                            .map(|g| {
                                let mut v = version(g + 7_000_000_000 + s * 1_000_000, round);
                                v.league = format!("l{s}");
                                v
                            })
                            .collect()
                    })
                    .collect();
                round += 1;
                let t = Instant::now();
                let reports =
                    rt.block_on(futures::future::join_all(batches.iter().enumerate().map(
                        |(s, games)| pipeline.process(["s0", "s1", "s2", "s3"][s], games),
                    )));
                spent += t.elapsed();
                for r in reports {
                    assert_eq!(r.unwrap().games as u64, batch, "every version is new");
                }
            }
            spent
        });
    });
    group.finish();
    drop(pipeline);
    let _ = rt.block_on(t.drop_database());
}

criterion_group!(benches, ingest);
criterion_main!(benches);
