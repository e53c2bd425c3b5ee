//! Team ratings and the feature vector of a game.
//!
//! The collector computes each game's features with this crate when it
//! publishes the game, and the trainer trains on those vectors (stored with
//! the game in Postgres) and computes new ones the same way, so training and
//! serving never disagree on what a feature means.
//!
//! # Feature set `elo-v1`
//!
//! Computed before the game, from the state of both teams then (never from
//! the game's own result):
//!
//! | index | name | meaning |
//! | --- | --- | --- |
//! | 0 | `elo_expectation` | the Elo win expectation of the home team, home advantage included: `1 / (1 + 10^(-d/400))`, `d = home − away + HOME_ADVANTAGE` |
//! | 1 | `elo_diff` | `d / 400` |
//! | 2 | `home_rating` | `(home − 1500) / 200` |
//! | 3 | `away_rating` | `(away − 1500) / 200` |
//! | 4 | `home_rest` | days since the home team's last game, capped at 14, divided by 7 (1.0 when unknown) |
//! | 5 | `away_rest` | the same for the away team |
//! | 6 | `home_form` | the home team's share of wins over its last 5 games (draws count half; 0.5 when none) |
//! | 7 | `away_form` | the same for the away team |
//!
//! Ratings start at 1500 and move after each result by `K · (S − E)`, with
//! `S` = 1, ½ or 0 for the home team and `E` its expectation; the away team
//! moves by the opposite amount, so ratings are zero-sum.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The name (and version) of the feature set this crate computes.
pub const FEATURE_SET: &str = "elo-v1";

/// The features of [`FEATURE_SET`], in order.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "elo_expectation",
    "elo_diff",
    "home_rating",
    "away_rating",
    "home_rest",
    "away_rest",
    "home_form",
    "away_form",
];

/// How many features a game has.
pub const N_FEATURES: usize = 8;

/// How the ratings move.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EloParams {
    /// Where a new team starts.
    pub initial: f64,
    /// How far one result moves a rating.
    pub k: f64,
    /// Rating points the home side is worth.
    pub home_advantage: f64,
}

impl Default for EloParams {
    fn default() -> Self {
        Self {
            initial: 1500.0,
            k: 20.0,
            home_advantage: 65.0,
        }
    }
}

/// Games remembered for the form feature.
pub const FORM_GAMES: usize = 5;

/// What is known of one team.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamState {
    pub rating: f64,
    pub games_played: u32,
    pub last_game_at: Option<DateTime<Utc>>,
    /// Its last results, oldest first (1 win, 0.5 draw, 0 loss).
    pub recent: VecDeque<f32>,
}

impl TeamState {
    fn new(params: &EloParams) -> Self {
        Self {
            rating: params.initial,
            games_played: 0,
            last_game_at: None,
            recent: VecDeque::with_capacity(FORM_GAMES),
        }
    }

    fn form(&self) -> f32 {
        if self.recent.is_empty() {
            0.5
        } else {
            self.recent.iter().sum::<f32>() / self.recent.len() as f32
        }
    }

    fn rest(&self, at: DateTime<Utc>) -> f32 {
        match self.last_game_at {
            Some(last) => {
                let days = (at - last).num_seconds() as f64 / 86_400.0;
                (days.clamp(0.0, 14.0) / 7.0) as f32
            }
            None => 1.0,
        }
    }

    fn record(&mut self, score: f32, at: DateTime<Utc>) {
        self.games_played += 1;
        self.last_game_at = Some(self.last_game_at.map_or(at, |l| l.max(at)));
        if self.recent.len() == FORM_GAMES {
            self.recent.pop_front();
        }
        self.recent.push_back(score);
    }
}

/// A team, within its sport and league.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TeamKey {
    pub sport: String,
    pub league: String,
    pub team: String,
}

impl TeamKey {
    pub fn new(sport: &str, league: &str, team: &str) -> Self {
        Self {
            sport: sport.to_owned(),
            league: league.to_owned(),
            team: team.to_owned(),
        }
    }
}

/// The two sides of a game and when it is played.
#[derive(Clone, Copy, Debug)]
pub struct Matchup<'a> {
    pub sport: &'a str,
    pub league: &'a str,
    pub home: &'a str,
    pub away: &'a str,
    pub at: DateTime<Utc>,
}

/// The ratings of every team seen, and the features they give.
#[derive(Clone, Debug, Default)]
pub struct Ratings {
    params: EloParams,
    teams: HashMap<TeamKey, TeamState>,
}

impl Ratings {
    pub fn new(params: EloParams) -> Self {
        Self {
            params,
            teams: HashMap::new(),
        }
    }

    /// Ratings restored from storage.
    pub fn from_states(
        params: EloParams,
        states: impl IntoIterator<Item = (TeamKey, TeamState)>,
    ) -> Self {
        Self {
            params,
            teams: states.into_iter().collect(),
        }
    }

    pub fn params(&self) -> &EloParams {
        &self.params
    }

    /// A team's state, if it has been seen.
    pub fn team(&self, key: &TeamKey) -> Option<&TeamState> {
        self.teams.get(key)
    }

    /// Replaces a team's state (one read back from storage).
    pub fn set(&mut self, key: TeamKey, state: TeamState) {
        self.teams.insert(key, state);
    }

    /// Every team's state (for storage).
    pub fn teams(&self) -> impl Iterator<Item = (&TeamKey, &TeamState)> {
        self.teams.iter()
    }

    fn state(&self, sport: &str, league: &str, team: &str) -> TeamState {
        self.teams
            .get(&TeamKey::new(sport, league, team))
            .cloned()
            .unwrap_or_else(|| TeamState::new(&self.params))
    }

    /// The home team's Elo win expectation.
    pub fn expectation(&self, m: &Matchup<'_>) -> f64 {
        let home = self.state(m.sport, m.league, m.home).rating;
        let away = self.state(m.sport, m.league, m.away).rating;
        expectation(home - away + self.params.home_advantage)
    }

    /// The `elo-v1` features of a game about to be played.
    pub fn features(&self, m: &Matchup<'_>) -> [f32; N_FEATURES] {
        let home = self.state(m.sport, m.league, m.home);
        let away = self.state(m.sport, m.league, m.away);
        let d = home.rating - away.rating + self.params.home_advantage;
        [
            expectation(d) as f32,
            (d / 400.0) as f32,
            ((home.rating - 1500.0) / 200.0) as f32,
            ((away.rating - 1500.0) / 200.0) as f32,
            home.rest(m.at),
            away.rest(m.at),
            home.form(),
            away.form(),
        ]
    }

    /// Absorbs a final result; returns both teams' new states. Call it once
    /// per game (storage keeps that promise with `ratings_applied`).
    pub fn apply(
        &mut self,
        m: &Matchup<'_>,
        home_score: u32,
        away_score: u32,
    ) -> (TeamState, TeamState) {
        let s = match home_score.cmp(&away_score) {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Less => 0.0,
        };
        let e = self.expectation(m);
        let delta = self.params.k * (s - e);
        let mut home = self.state(m.sport, m.league, m.home);
        let mut away = self.state(m.sport, m.league, m.away);
        home.rating += delta;
        away.rating -= delta;
        home.record(s as f32, m.at);
        away.record((1.0 - s) as f32, m.at);
        self.teams
            .insert(TeamKey::new(m.sport, m.league, m.home), home.clone());
        self.teams
            .insert(TeamKey::new(m.sport, m.league, m.away), away.clone());
        (home, away)
    }
}

/// The Elo expectation of a side `d` rating points ahead.
pub fn expectation(d: f64) -> f64 {
    1.0 / (1.0 + 10f64.powf(-d / 400.0))
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn at(day: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 10, 1, 19, 0, 0)
            .single()
            .unwrap_or_default()
            + Duration::days(day)
    }

    fn game<'a>(home: &'a str, away: &'a str, day: i64) -> Matchup<'a> {
        Matchup {
            sport: "nba",
            league: "NBA",
            home,
            away,
            at: at(day),
        }
    }

    #[test]
    fn new_teams_give_the_home_advantage_alone() {
        let r = Ratings::default();
        let f = r.features(&game("BOS", "NYK", 0));
        assert_eq!(f.len(), FEATURE_NAMES.len());
        assert!((f64::from(f[0]) - expectation(65.0)).abs() < 1e-6);
        assert!(f[0] > 0.5);
        assert_eq!((f[2], f[3]), (0.0, 0.0));
        assert_eq!((f[4], f[5], f[6], f[7]), (1.0, 1.0, 0.5, 0.5));
    }

    #[test]
    fn results_move_ratings_zero_sum_and_feed_rest_and_form() {
        let mut r = Ratings::default();
        let (home, away) = r.apply(&game("BOS", "NYK", 0), 110, 100);
        assert!(home.rating > 1500.0 && away.rating < 1500.0);
        assert!((home.rating + away.rating - 3000.0).abs() < 1e-9);
        // An upset moves ratings more than an expected win.
        let expected_win = home.rating - 1500.0;
        let mut r2 = Ratings::default();
        let (h2, _) = r2.apply(&game("BOS", "NYK", 0), 90, 100);
        assert!(1500.0 - h2.rating > expected_win);

        let f = r.features(&game("NYK", "BOS", 3));
        // NYK now at home, rated lower; three days of rest each.
        assert!(f[2] < 0.0 && f[3] > 0.0);
        assert!((f[4] - 3.0 / 7.0).abs() < 1e-6 && (f[5] - 3.0 / 7.0).abs() < 1e-6);
        assert_eq!((f[6], f[7]), (0.0, 1.0));
        // Rest is capped at two weeks.
        assert_eq!(r.features(&game("NYK", "BOS", 40))[4], 2.0);
    }

    #[test]
    fn form_keeps_the_last_five_games_and_draws_count_half() {
        let mut r = Ratings::default();
        for day in 0..7 {
            r.apply(&game("BOS", "NYK", day), 100, 90);
        }
        r.apply(&game("BOS", "NYK", 8), 95, 95);
        let bos = r.team(&TeamKey::new("nba", "NBA", "BOS")).unwrap();
        assert_eq!(bos.recent.len(), FORM_GAMES);
        assert_eq!(bos.games_played, 8);
        assert!((r.features(&game("BOS", "NYK", 9))[6] - 0.9).abs() < 1e-6);
    }

    #[test]
    fn the_same_history_gives_the_same_features_and_states_round_trip() {
        let play = || {
            let mut r = Ratings::default();
            for (i, (h, a, hs, as_)) in [("A", "B", 3, 1), ("B", "C", 0, 2), ("C", "A", 1, 1)]
                .into_iter()
                .enumerate()
            {
                r.apply(&game(h, a, i as i64), hs, as_);
            }
            r
        };
        let (r1, r2) = (play(), play());
        assert_eq!(
            r1.features(&game("A", "C", 5)),
            r2.features(&game("A", "C", 5))
        );
        let restored = Ratings::from_states(
            *r1.params(),
            r1.teams().map(|(k, s)| (k.clone(), s.clone())),
        );
        assert_eq!(
            restored.features(&game("A", "C", 5)),
            r1.features(&game("A", "C", 5))
        );
        // Leagues are apart: the same name elsewhere is a new team.
        let nfl = Matchup {
            sport: "nfl",
            league: "NFL",
            ..game("A", "C", 5)
        };
        assert_eq!(r1.features(&nfl)[2], 0.0);
    }
}
