//! The message codec on the hot paths: every game event, prediction and
//! delivery goes through `encode`/`decode` once per service hop.
//!
//! `cargo bench -p fantasy-benches --bench codec`

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fantasy_messages::{Game, GameStatus, Prediction, SchemaVersion, decode, encode, encode_into};

fn game() -> Game {
    let at = Utc
        .with_ymd_and_hms(2026, 11, 22, 19, 30, 0)
        .single()
        .unwrap_or_default();
    Game {
        schema_version: SchemaVersion,
        game_id: "nba-2026-27-0457".into(),
        sport: "nba".into(),
        league: "NBA".into(),
        season: "2026-27".into(),
        home_team: "Boston Celtics".into(),
        away_team: "New York Knicks".into(),
        scheduled_at: at,
        status: GameStatus::Scheduled,
        features: vec![0.125, -35.5, 1.0, 2.0, 3.0, 0.6, 0.4, 12.0],
        feature_set: "elo-v1".into(),
        source: "sim".into(),
        source_updated_at: at,
        produced_at: at,
    }
}

fn prediction() -> Prediction {
    let at = Utc
        .with_ymd_and_hms(2026, 11, 22, 19, 30, 0)
        .single()
        .unwrap_or_default();
    Prediction {
        schema_version: SchemaVersion,
        game_id: "nba-2026-27-0457".into(),
        sport: "nba".into(),
        league: "NBA".into(),
        home_team: "Boston Celtics".into(),
        away_team: "New York Knicks".into(),
        scheduled_at: at,
        model_version: "win-prob-v12".into(),
        home_win_prob: 0.6234,
        predicted_at: at,
        event_produced_at: Some(at),
        variant: None,
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));

    let g = game();
    let g_bytes = encode(&g).unwrap_or_default();
    let p = prediction();
    let p_bytes = encode(&p).unwrap_or_default();

    let mut buf = Vec::with_capacity(512);
    group.bench_function("encode_game", |b| {
        b.iter(|| {
            buf.clear();
            encode_into(black_box(&g), &mut buf).is_ok()
        })
    });
    group.bench_function("decode_game", |b| {
        b.iter(|| decode::<Game>(black_box(&g_bytes)).is_ok())
    });
    group.bench_function("encode_prediction", |b| {
        b.iter(|| {
            buf.clear();
            encode_into(black_box(&p), &mut buf).is_ok()
        })
    });
    group.bench_function("decode_prediction", |b| {
        b.iter(|| decode::<Prediction>(black_box(&p_bytes)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
