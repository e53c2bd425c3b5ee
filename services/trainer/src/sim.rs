//! Simulated history, with the features the collector would have stored:
//! for tests, benchmarks and the quality figures in `benches/RESULTS.md`.

use fantasy_features::{EloParams, Matchup, N_FEATURES, Ratings};
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
