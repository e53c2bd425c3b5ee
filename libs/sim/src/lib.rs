//! A season simulator for local runs, demos and tests.
//!
//! Teams have latent strengths (in logit units) that drift from round to
//! round; the home side has an advantage; the schedule is a repeated round
//! robin (circle method), home and away alternating. Each game's result is
//! drawn from a known logistic model:
//!
//! ```text
//! P(home wins) = 1 / (1 + exp(-(strength_home - strength_away + home_advantage)))
//! ```
//!
//! and every [`SimGame`] carries that true probability, so a model's quality
//! can be compared with the best possible (the oracle's Brier score,
//! [`oracle_brier`]). Everything follows from the seed: the same
//! [`SimConfig`] gives the same season on every machine (Xoshiro256++).
//! [`SimClock`] maps wall time to season time, so a season can play in
//! minutes.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::{Rng as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;

/// What season to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub sport: String,
    pub league: String,
    pub season: String,
    /// Teams in the league (at least 2; an odd count gets a bye each round).
    pub teams: usize,
    /// Games each team plays (rounded to whole rounds).
    pub games_per_team: usize,
    /// When the first round starts.
    pub start: DateTime<Utc>,
    /// Time between rounds.
    pub round_interval: chrono::Duration,
    /// The home side's advantage, in logit units.
    pub home_advantage: f64,
    /// Spread of the initial strengths (standard deviation, logit units).
    pub strength_sd: f64,
    /// How far a strength drifts per round (standard deviation).
    pub drift_sd: f64,
    /// From this round on, every strength is drawn afresh: a regime change
    /// that makes a model trained before it worse.
    pub regime_change_round: Option<usize>,
    /// Typical points of a losing side, and their spread.
    pub score_base: f64,
    pub score_spread: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            sport: "nba".into(),
            league: "NBA".into(),
            season: "sim-1".into(),
            teams: 30,
            games_per_team: 82,
            start: DateTime::from_timestamp(1_798_761_600, 0).unwrap_or_default(),
            round_interval: chrono::Duration::days(1),
            home_advantage: 0.25,
            strength_sd: 0.6,
            // About 0.13 logit over an 82-game season: form and injuries
            // move a team, they do not reshuffle the league (that is what
            // `regime_change_round` is for). At 0.03 a team's strength would
            // wander by most of the league's spread within one season.
            drift_sd: 0.01,
            regime_change_round: None,
            score_base: 100.0,
            score_spread: 10.0,
        }
    }
}

/// One simulated game, with its true probability and its result.
#[derive(Clone, Debug, PartialEq)]
pub struct SimGame {
    pub game_id: String,
    pub round: usize,
    pub home_team: String,
    pub away_team: String,
    pub scheduled_at: DateTime<Utc>,
    /// The probability the home team wins, from the model that draws the
    /// result.
    pub true_home_win_prob: f64,
    /// The latent strengths behind it (logit units).
    pub home_strength: f64,
    pub away_strength: f64,
    pub home_score: u32,
    pub away_score: u32,
}

impl SimGame {
    pub fn home_win(&self) -> bool {
        self.home_score > self.away_score
    }
}

/// A whole simulated season.
#[derive(Clone, Debug, PartialEq)]
pub struct Season {
    pub config: SimConfig,
    pub team_names: Vec<String>,
    /// In schedule order.
    pub games: Vec<SimGame>,
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut Xoshiro256PlusPlus) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Season {
    /// Simulates the season `config` describes.
    ///
    /// # Panics
    /// Never for a valid config; `teams < 2` gives an empty season.
    pub fn simulate(config: &SimConfig) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        let n = config.teams;
        let team_names: Vec<String> = (0..n)
            .map(|i| format!("{}-T{:02}", config.league, i + 1))
            .collect();
        let mut strength: Vec<f64> = (0..n)
            .map(|_| config.strength_sd * normal(&mut rng))
            .collect();
        let mut games = Vec::new();
        if n < 2 {
            return Self {
                config: config.clone(),
                team_names,
                games,
            };
        }
        // Circle method over n (or n + 1 with a bye) slots.
        let slots = n + n % 2;
        let mut home_minus_away = vec![0i64; n];
        // Each round every team plays once (but the one with the bye): stop
        // once the league has played its games.
        let max_rounds = 2 * config.games_per_team + 2;
        let mut order: Vec<usize> = (0..slots).collect();
        for round in 0..max_rounds {
            if config.regime_change_round == Some(round) {
                for s in &mut strength {
                    *s = config.strength_sd * normal(&mut rng);
                }
            } else if round > 0 {
                for s in &mut strength {
                    *s += config.drift_sd * normal(&mut rng);
                }
            }
            let day = config.start + config.round_interval * round as i32;
            for i in 0..slots / 2 {
                let (a, b) = (order[i], order[slots - 1 - i]);
                if a >= n || b >= n {
                    continue; // the bye
                }
                // The side with fewer home games so far hosts: each team's
                // home share stays within a game or two of half.
                let (home, away) = match home_minus_away[a].cmp(&home_minus_away[b]) {
                    std::cmp::Ordering::Less => (a, b),
                    std::cmp::Ordering::Greater => (b, a),
                    std::cmp::Ordering::Equal if (round + i) % 2 == 0 => (a, b),
                    std::cmp::Ordering::Equal => (b, a),
                };
                home_minus_away[home] += 1;
                home_minus_away[away] -= 1;
                let p = sigmoid(strength[home] - strength[away] + config.home_advantage);
                let home_wins = rng.random::<f64>() < p;
                let loser = (config.score_base + config.score_spread * normal(&mut rng))
                    .round()
                    .max(0.0) as u32;
                let margin = 1 + (config.score_spread * normal(&mut rng).abs()).round() as u32;
                let (home_score, away_score) = if home_wins {
                    (loser + margin, loser)
                } else {
                    (loser, loser + margin)
                };
                let index = games.len();
                games.push(SimGame {
                    game_id: format!("{}-{}-{:05}", config.sport, config.season, index),
                    round,
                    home_team: team_names[home].clone(),
                    away_team: team_names[away].clone(),
                    scheduled_at: day + chrono::Duration::minutes(30 * (i as i64 % 8)),
                    true_home_win_prob: p,
                    home_strength: strength[home],
                    away_strength: strength[away],
                    home_score,
                    away_score,
                });
            }
            // Rotate every slot but the first.
            let last = order.remove(slots - 1);
            order.insert(1, last);
            if games.len() * 2 >= config.games_per_team * n {
                break;
            }
        }
        Self {
            config: config.clone(),
            team_names,
            games,
        }
    }

    /// When the last game starts.
    pub fn end(&self) -> DateTime<Utc> {
        self.games
            .last()
            .map_or(self.config.start, |g| g.scheduled_at)
    }
}

/// The Brier score of the true probabilities against the results: what a
/// perfect model would score on these games.
pub fn oracle_brier(games: &[SimGame]) -> f64 {
    if games.is_empty() {
        return f64::NAN;
    }
    games
        .iter()
        .map(|g| {
            let y = if g.home_win() { 1.0 } else { 0.0 };
            (g.true_home_win_prob - y).powi(2)
        })
        .sum::<f64>()
        / games.len() as f64
}

/// Season time that runs `speed` times faster than the wall clock.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    started: Instant,
    sim_start: DateTime<Utc>,
    speed: f64,
}

impl SimClock {
    /// Starts now at `sim_start`, `speed` times faster than real time.
    pub fn new(sim_start: DateTime<Utc>, speed: f64) -> Self {
        Self {
            started: Instant::now(),
            sim_start,
            speed: speed.max(f64::MIN_POSITIVE),
        }
    }

    /// A clock that plays `season` (first to last game) in `real`.
    pub fn playing_in(season: &Season, real: Duration) -> Self {
        let span = (season.end() - season.config.start)
            .num_milliseconds()
            .max(1) as f64
            / 1000.0;
        Self::new(season.config.start, span / real.as_secs_f64().max(1e-3))
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// The season time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.at(self.started.elapsed())
    }

    /// The season time `real` after the clock started.
    pub fn at(&self, real: Duration) -> DateTime<Utc> {
        let sim_ms = (real.as_secs_f64() * self.speed * 1000.0) as i64;
        self.sim_start + chrono::Duration::milliseconds(sim_ms)
    }

    /// How long after the clock started (real time) season time reaches `t`.
    pub fn real_until(&self, t: DateTime<Utc>) -> Duration {
        let sim = (t - self.sim_start).num_milliseconds().max(0) as f64 / 1000.0;
        Duration::from_secs_f64(sim / self.speed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_seed_gives_the_same_season_and_another_seed_another() {
        let cfg = SimConfig::default();
        assert_eq!(Season::simulate(&cfg), Season::simulate(&cfg));
        let other = Season::simulate(&SimConfig {
            seed: 2,
            ..cfg.clone()
        });
        assert_ne!(other.games, Season::simulate(&cfg).games);
    }

    #[test]
    fn the_schedule_is_a_balanced_round_robin() {
        for teams in [30, 7] {
            let season = Season::simulate(&SimConfig {
                teams,
                games_per_team: 20,
                ..SimConfig::default()
            });
            let mut played: HashMap<&str, (usize, usize)> = HashMap::new();
            for g in &season.games {
                assert_ne!(g.home_team, g.away_team);
                assert_ne!(g.home_score, g.away_score);
                assert_eq!(g.home_win(), g.home_score > g.away_score);
                played.entry(&g.home_team).or_default().0 += 1;
                played.entry(&g.away_team).or_default().1 += 1;
            }
            assert_eq!(played.len(), teams);
            for (team, (home, away)) in played {
                let total = home + away;
                assert!((17..=21).contains(&total), "{team} played {total}");
                assert!(home.abs_diff(away) <= 4, "{team}: {home} home, {away} away");
            }
            // Rounds are in time order, one day apart.
            assert!(season.games.windows(2).all(|w| w[0].round <= w[1].round));
        }
    }

    #[test]
    fn results_follow_the_stated_probabilities() {
        // 20 seasons of 30 teams: about 24,600 games.
        let games: Vec<SimGame> = (0..20)
            .flat_map(|seed| {
                Season::simulate(&SimConfig {
                    seed,
                    ..SimConfig::default()
                })
                .games
            })
            .collect();
        let n = games.len() as f64;
        let expected: f64 = games.iter().map(|g| g.true_home_win_prob).sum();
        let observed = games.iter().filter(|g| g.home_win()).count() as f64;
        let sd = games
            .iter()
            .map(|g| g.true_home_win_prob * (1.0 - g.true_home_win_prob))
            .sum::<f64>()
            .sqrt();
        assert!(
            (observed - expected).abs() < 4.0 * sd,
            "wins {observed} vs {expected} ± {sd}"
        );
        // Home advantage shows.
        assert!(observed / n > 0.52);
        // Calibration by decile of the true probability.
        let mut buckets = vec![(0.0f64, 0.0f64, 0usize); 10];
        for g in &games {
            let b = &mut buckets[((g.true_home_win_prob * 10.0) as usize).min(9)];
            b.0 += g.true_home_win_prob;
            b.1 += if g.home_win() { 1.0 } else { 0.0 };
            b.2 += 1;
        }
        for (i, (p, y, count)) in buckets.into_iter().enumerate() {
            if count < 200 {
                continue;
            }
            let (p, y) = (p / count as f64, y / count as f64);
            let tol = 4.0 * (p * (1.0 - p) / count as f64).sqrt();
            assert!(
                (p - y).abs() < tol,
                "decile {i}: stated {p:.3}, observed {y:.3} over {count}"
            );
        }
        // The oracle's Brier score is its expected value, and beats a coin.
        let brier = oracle_brier(&games);
        let expected_brier = games
            .iter()
            .map(|g| g.true_home_win_prob * (1.0 - g.true_home_win_prob))
            .sum::<f64>()
            / n;
        assert!(
            (brier - expected_brier).abs() < 0.005,
            "{brier} vs {expected_brier}"
        );
        assert!(brier < 0.25);
    }

    #[test]
    fn strengths_drift_and_a_regime_change_redraws_them() {
        let cfg = SimConfig {
            teams: 4,
            games_per_team: 30,
            ..SimConfig::default()
        };
        // Each team's strength per round.
        let strengths = |s: &Season| -> HashMap<(String, usize), f64> {
            s.games
                .iter()
                .flat_map(|g| {
                    [
                        ((g.home_team.clone(), g.round), g.home_strength),
                        ((g.away_team.clone(), g.round), g.away_strength),
                    ]
                })
                .collect()
        };
        let drifting = strengths(&Season::simulate(&cfg));
        let t = "NBA-T01".to_owned();
        assert_ne!(drifting[&(t.clone(), 0)], drifting[&(t.clone(), 20)]);
        let changed = strengths(&Season::simulate(&SimConfig {
            regime_change_round: Some(10),
            drift_sd: 0.0,
            ..cfg
        }));
        for team in ["NBA-T01", "NBA-T02", "NBA-T03", "NBA-T04"] {
            let at = |round| changed[&(team.to_owned(), round)];
            assert_eq!(at(0), at(9), "{team} moved without drift");
            assert_ne!(
                at(9),
                at(10),
                "{team} kept its strength through the regime change"
            );
            assert_eq!(at(10), at(29));
        }
    }

    #[test]
    fn the_clock_plays_a_season_in_the_time_asked() {
        let season = Season::simulate(&SimConfig::default());
        let clock = SimClock::playing_in(&season, Duration::from_secs(300));
        assert_eq!(clock.at(Duration::ZERO), season.config.start);
        let end = clock.at(Duration::from_secs(300));
        assert!((end - season.end()).num_seconds().abs() <= 1);
        let mid = season.games[season.games.len() / 2].scheduled_at;
        let real = clock.real_until(mid);
        assert!(
            real > Duration::from_secs(100) && real < Duration::from_secs(200),
            "{real:?}"
        );
    }
}
