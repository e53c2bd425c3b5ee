//! Simulated history, with the features the collector would have stored:
//! for tests, benchmarks and the quality figures in `benches/RESULTS.md`.

use fantasy_features::{EloParams, FEATURE_SET, Matchup, N_FEATURES, Ratings};
use fantasy_messages::{Game, GameStatus, Outcome, SchemaVersion};
use fantasy_sim::Season;

/// A season replayed through the `elo-v1` ratings, game by game, in
/// schedule order: each game's features come from the ratings before it,
/// then its result moves them (as the collector does).
#[derive(Clone, Debug, Default)]
pub struct SimHistory {
    /// Row-major, `N_FEATURES` per game.
    pub x: Vec<f32>,
    pub y: Vec<bool>,
    /// The simulator's true home-win probability of each game.
    pub truth: Vec<f64>,
}

impl SimHistory {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Games `from..` (features, results, truth).
    pub fn tail(&self, from: usize) -> (&[f32], &[bool], &[f64]) {
        (
            &self.x[from * N_FEATURES..],
            &self.y[from..],
            &self.truth[from..],
        )
    }
}

/// Replays `season` with `elo`.
pub fn replay(season: &Season, elo: EloParams) -> SimHistory {
    let mut ratings = Ratings::new(elo);
    let mut h = SimHistory::default();
    let c = &season.config;
    for g in &season.games {
        let m = Matchup {
            sport: &c.sport,
            league: &c.league,
            home: &g.home_team,
            away: &g.away_team,
            at: g.scheduled_at,
        };
        h.x.extend_from_slice(&ratings.features(&m));
        h.y.push(g.home_win());
        h.truth.push(g.true_home_win_prob);
        ratings.apply(&m, g.home_score, g.away_score);
    }
    h
}

/// `season` as the collector would have stored it: every game final, with
/// its `elo-v1` features from [`replay`], and its outcome (final three hours
/// after the start).
pub fn season_messages(season: &Season, elo: EloParams) -> (Vec<Game>, Vec<Outcome>) {
    let h = replay(season, elo);
    let c = &season.config;
    season
        .games
        .iter()
        .zip(h.x.chunks_exact(N_FEATURES))
        .map(|(g, features)| {
            let game = Game {
                schema_version: SchemaVersion,
                game_id: g.game_id.clone(),
                sport: c.sport.clone(),
                league: c.league.clone(),
                season: c.season.clone(),
                home_team: g.home_team.clone(),
                away_team: g.away_team.clone(),
                scheduled_at: g.scheduled_at,
                status: GameStatus::Final,
                features: features.to_vec(),
                feature_set: FEATURE_SET.into(),
                source: "sim:history".into(),
                source_updated_at: g.scheduled_at,
                produced_at: g.scheduled_at,
            };
            let outcome = Outcome {
                schema_version: SchemaVersion,
                game_id: g.game_id.clone(),
                home_score: g.home_score,
                away_score: g.away_score,
                home_win: g.home_win(),
                final_at: g.scheduled_at + chrono::Duration::hours(3),
            };
            (game, outcome)
        })
        .unzip()
}
