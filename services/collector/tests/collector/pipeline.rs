//! The pipeline on its own: dedup with a saturated filter, and features that
//! match an offline replay of the same season.

use std::collections::{HashMap, HashSet};

use chrono::{TimeZone as _, Utc};
use collector::pipeline::{BatchReport, Pipeline};
use collector::source::SourceGame;
use fantasy_dedup::{Dedup, DedupConfig};
use fantasy_features::{EloParams, Matchup, Ratings};
use fantasy_messages::{Game, GameStatus};
use fantasy_sim::{Season, SimConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

use crate::support::{Infra, published_games, rig};

/// The pipeline on the infra's database and broker, with a Redis prefix of
/// its own.
fn pipeline(infra: &Infra, dedup: DedupConfig) -> std::sync::Arc<Pipeline> {
    let producer = infra.kafka.producer();
    let mut redis = fantasy_cache::RedisConfig::new("redis://127.0.0.1:6379");
    redis.prefix = fantasy_testkit::redis_prefix();
    let dedup = Dedup::builder(dedup, infra.db.db.clone())
        .redis(redis)
        .build()
        .unwrap();
    Pipeline::new(infra.db.db.clone(), producer, dedup, EloParams::default())
}

fn version(event: u32, score: u32) -> SourceGame {
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 19, 0, 0).unwrap()
        + chrono::Duration::hours(event.into());
    SourceGame {
        event_id: event.to_string(),
        game_id: format!("p-{event}"),
        sport: "nba".into(),
        league: "nba".into(),
        season: "2026".into(),
        home_team: format!("H{}", event % 7),
        away_team: format!("A{}", event % 5),
        scheduled_at: at,
        status: GameStatus::InProgress,
        home_score: Some(score),
        away_score: Some(0),
        updated_at: at,
    }
}

/// A filter sized for 8 items takes thousands: nearly every check is a
/// bloom hit, most of them false. Every version must still go out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_filter_loses_nothing_and_publishes_nothing_twice() {
    let infra = rig().await;
    let cfg = DedupConfig {
        expected_items: 8,
        fp_rate: 0.3,
        ..DedupConfig::default()
    };
    let p = pipeline(&infra, cfg);
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(PtConfig {
        cases: 12,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let expected_total = std::cell::Cell::new(0usize);
    let case = std::cell::Cell::new(0u32);
    let strategy = (
        prop::collection::vec((0u32..60, 0u32..4), 1..300),
        1usize..64,
    );
    let result = runner.run(&strategy, |(versions, batch)| {
        case.set(case.get() + 1);
        // Each case its own source: cases do not dedup against each other.
        let source = format!("prop-{}", case.get());
        let games: Vec<SourceGame> = versions.iter().map(|&(e, s)| version(e, s)).collect();
        let distinct: HashSet<(u32, u32)> = versions.iter().copied().collect();
        let mut total = BatchReport::default();
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                for chunk in games.chunks(batch) {
                    total += p.process(&source, chunk).await.unwrap();
                }
            })
        });
        expected_total.set(expected_total.get() + distinct.len());
        prop_assert_eq!(total.games, distinct.len(), "every distinct version once");
        prop_assert_eq!(total.duplicates, versions.len() - distinct.len());
        prop_assert_eq!(total.claimed_elsewhere, 0);
        Ok::<(), TestCaseError>(())
    });
    result.unwrap();
    let stats = p.dedup().stats();
    assert!(
        stats.false_positives > 0,
        "the filter was saturated enough to give false positives: {stats:?}"
    );
    // And on the topic itself: each case's versions, once.
    let games = published_games(&infra).await;
    assert_eq!(games.len(), expected_total.get());
}

/// The features published with each game are those an offline replay of
/// the season computes with the same crate (what the trainer does), however
/// the season is cut into batches and even when a batch is processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_features_match_an_offline_replay_of_the_season() {
    let infra = rig().await;
    let p = pipeline(&infra, DedupConfig::default());
    let season = Season::simulate(&SimConfig {
        teams: 8,
        games_per_team: 14,
        seed: 42,
        ..SimConfig::default()
    });
    // The stream a source would give: each game scheduled, then final, in
    // time order (a round's results before the next round starts).
    let mut versions = Vec::new();
    for g in &season.games {
        let base = SourceGame {
            event_id: g.game_id.clone(),
            game_id: g.game_id.clone(),
            sport: "nba".into(),
            league: "NBA".into(),
            season: "sim".into(),
            home_team: g.home_team.clone(),
            away_team: g.away_team.clone(),
            scheduled_at: g.scheduled_at,
            status: GameStatus::Scheduled,
            home_score: None,
            away_score: None,
            updated_at: g.scheduled_at,
        };
        versions.push((g.scheduled_at - chrono::Duration::hours(12), base.clone()));
        versions.push((
            g.scheduled_at + chrono::Duration::hours(2),
            SourceGame {
                status: GameStatus::Final,
                home_score: Some(g.home_score),
                away_score: Some(g.away_score),
                updated_at: g.scheduled_at + chrono::Duration::hours(2),
                ..base
            },
        ));
    }
    versions.sort_by_key(|(at, _)| *at);
    let stream: Vec<SourceGame> = versions.into_iter().map(|(_, v)| v).collect();
    let mut applied = 0;
    for (i, chunk) in stream.chunks(13).enumerate() {
        applied += p.process("sim:nba", chunk).await.unwrap().ratings_applied;
        if i % 3 == 0 {
            // Processed again (a redelivery): nothing new, ratings untouched.
            let again = p.process("sim:nba", chunk).await.unwrap();
            assert_eq!(again.games, 0);
            assert_eq!(again.ratings_applied, 0);
        }
    }
    assert_eq!(applied, season.games.len());

    // The offline replay.
    let mut ratings = Ratings::new(EloParams::default());
    let mut expected: HashMap<String, Vec<f32>> = HashMap::new();
    for v in &stream {
        let m = Matchup {
            sport: &v.sport,
            league: &v.league,
            home: &v.home_team,
            away: &v.away_team,
            at: v.scheduled_at,
        };
        match v.status {
            GameStatus::Scheduled => {
                expected.insert(v.game_id.clone(), ratings.features(&m).to_vec());
            }
            _ => {
                ratings.apply(&m, v.home_score.unwrap(), v.away_score.unwrap());
            }
        }
    }
    let games: Vec<Game> = published_games(&infra).await;
    assert_eq!(games.len(), 2 * season.games.len());
    for g in &games {
        assert_eq!(
            g.features, expected[&g.game_id],
            "features of {} ({:?})",
            g.game_id, g.status
        );
    }
    // The stored ratings are the replay's.
    let stored = collector::pipeline::load_ratings(&infra.db.db, EloParams::default())
        .await
        .unwrap();
    for (key, state) in ratings.teams() {
        let s = stored.team(key).unwrap();
        assert!((s.rating - state.rating).abs() < 1e-9, "{key:?}");
        assert_eq!(s.games_played, state.games_played);
        assert_eq!(s.recent, state.recent);
        assert_eq!(s.last_game_at, state.last_game_at);
    }
}

/// Kafka and Postgres take a batch at once; when Postgres fails (here the
/// outcomes upsert: its table renamed away) after Kafka took the batch, the
/// transaction rolls back whole: no key claimed, no game stored, no result
/// absorbed by the ratings. The same batch processed again goes out in full
/// (Kafka may carry a version twice, which its consumers absorb; it never
/// misses one), and once more is all duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_in_postgres_after_kafka_took_it_is_kept_whole_for_the_retry() {
    let infra = rig().await;
    let p = pipeline(&infra, DedupConfig::default());
    let pool = infra.db.db.pool();
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .unwrap()
    };
    // Ten games under way, five of them final.
    let batch: Vec<SourceGame> = (0..10)
        .map(|e| SourceGame {
            status: if e % 2 == 0 {
                GameStatus::Final
            } else {
                GameStatus::InProgress
            },
            ..version(e, 90 + e)
        })
        .collect();

    sqlx::query("ALTER TABLE outcomes RENAME TO outcomes_away")
        .execute(pool)
        .await
        .unwrap();
    let err = p.process("fail", &batch).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("outcomes"),
        "the error names the failed write: {err:#}"
    );
    let on_kafka = published_games(&infra).await;
    assert_eq!(on_kafka.len(), 10, "Kafka took the batch meanwhile");
    for table in ["dedup_keys", "games", "ratings_applied", "team_ratings"] {
        assert_eq!(count(table).await, 0, "{table} rolled back");
    }
    sqlx::query("ALTER TABLE outcomes_away RENAME TO outcomes")
        .execute(pool)
        .await
        .unwrap();

    let report = p.process("fail", &batch).await.unwrap();
    assert_eq!(
        (report.games, report.outcomes, report.ratings_applied),
        (10, 5, 5)
    );
    assert_eq!(
        (count("games").await, count("outcomes").await),
        (10, 5),
        "every record stored"
    );
    assert_eq!(count("dedup_keys").await, 10);
    let on_kafka = published_games(&infra).await;
    let ids: HashSet<&str> = on_kafka.iter().map(|g| g.game_id.as_str()).collect();
    assert_eq!((on_kafka.len(), ids.len()), (20, 10), "each version twice");
    let report = p.process("fail", &batch).await.unwrap();
    assert_eq!((report.games, report.duplicates), (0, 10));
}
