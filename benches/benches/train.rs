//! The trainer on 100,000 simulated games (30 teams, strengths drifting,
//! `elo-v1` features replayed as the collector computes them).
//!
//! - `train/fit`: logistic regression (linfa-logistic, L-BFGS) on 80,000
//!   standardised rows.
//! - `train/run`: what a training run does off the async threads: the fit,
//!   the ONNX export, the export checked through ONNX Runtime on the 20,000
//!   held-out games, and the active model scored on them (the gate).
//! - `train/load_history`: the 100,000 most recent finished games with their
//!   features, read from Postgres (games joined with outcomes).
//!
//! `cargo bench -p fantasy-benches --bench train`
//! (needs ONNX Runtime from scripts/setup.sh and the local Postgres)

use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use fantasy_db::testing::TestDb;
use fantasy_features::{EloParams, FEATURE_NAMES, FEATURE_SET, N_FEATURES};
use fantasy_inference::Runtime;
use fantasy_messages::{Game, GameStatus, Outcome, SchemaVersion};
use fantasy_model::export::ExportMeta;
use fantasy_model::{FitOptions, LogisticModel};
use fantasy_sim::{Season, SimConfig};
use trainer::config::{GateMetric, TrainConfig};
use trainer::sim::replay;
use trainer::train::{History, fit_and_judge, load_history};

const GAMES: usize = 100_000;

fn season() -> Season {
    // 30 teams: 15 games a round; 6,667 games per team gives 100,005.
    Season::simulate(&SimConfig {
        teams: 30,
        games_per_team: GAMES * 2 / 30 + 1,
        ..SimConfig::default()
    })
}

fn meta() -> ExportMeta {
    ExportMeta {
        model_name: "win-prob".into(),
        version: "bench".into(),
        feature_set: FEATURE_SET.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
        trained_at: Utc::now().to_rfc3339(),
        extra: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let season = season();
    let sim = replay(&season, EloParams::default());
    let n = sim.len().min(GAMES);
    let history = History {
        x: sim.x[..n * N_FEATURES].to_vec(),
        y: sim.y[..n].to_vec(),
        skipped: 0,
    };
    let cfg = TrainConfig {
        window: GAMES as u32,
        min_games: 500,
        holdout: 0.2,
        l2: 1.0,
        gate_metric: GateMetric::LogLoss,
        promote_margin: 0.0005,
    };
    let runtime = Runtime::get(None).expect("ONNX Runtime (scripts/setup.sh)");
    let active = fit_and_judge(runtime, &history, &cfg, &mut meta(), None)
        .expect("a first model")
        .bytes;

    let mut g = c.benchmark_group("train");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    let cut = n * 4 / 5;
    g.bench_function("fit/80k_rows", |b| {
        b.iter(|| {
            LogisticModel::fit(
                &history.x[..cut * N_FEATURES],
                &history.y[..cut],
                N_FEATURES,
                &FitOptions::default(),
            )
            .expect("fits")
        });
    });
    g.bench_function("run/100k_games", |b| {
        b.iter(|| {
            fit_and_judge(runtime, &history, &cfg, &mut meta(), Some(&active)).expect("judged")
        });
    });

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(async {
        let db = TestDb::new().await.expect("test database");
        let c = &season.config;
        let (mut games, mut outcomes) = (Vec::new(), Vec::new());
        for (i, s) in season.games.iter().take(n).enumerate() {
            games.push(Game {
                schema_version: SchemaVersion,
                game_id: s.game_id.clone(),
                sport: c.sport.clone(),
                league: c.league.clone(),
                season: c.season.clone(),
                home_team: s.home_team.clone(),
                away_team: s.away_team.clone(),
                scheduled_at: s.scheduled_at,
                status: GameStatus::Final,
                features: sim.x[i * N_FEATURES..(i + 1) * N_FEATURES].to_vec(),
                feature_set: FEATURE_SET.into(),
                source: "sim:bench".into(),
                source_updated_at: s.scheduled_at,
                produced_at: s.scheduled_at,
            });
            outcomes.push(Outcome {
                schema_version: SchemaVersion,
                game_id: s.game_id.clone(),
                home_score: s.home_score,
                away_score: s.away_score,
                home_win: s.home_win(),
                final_at: s.scheduled_at,
            });
        }
        for chunk in games.chunks(5_000) {
            db.db.upsert_games(chunk).await.expect("games");
        }
        for chunk in outcomes.chunks(5_000) {
            db.db.upsert_outcomes(chunk).await.expect("outcomes");
        }
        sqlx::query("ANALYZE")
            .execute(db.db.pool())
            .await
            .expect("analyze");
        db
    });
    g.bench_function("load_history/100k_games", |b| {
        b.iter(|| {
            let h = rt
                .block_on(load_history(&db.db, GAMES as u32))
                .expect("history");
            assert_eq!(h.len(), n);
            h
        });
    });
    g.finish();
    rt.block_on(async {
        let _ = db.drop_database().await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
