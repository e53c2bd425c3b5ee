//! The `sim` source: a whole simulated season (see `fantasy-sim`) played at a
//! chosen speed, for local runs, demos and tests.
//!
//! Each game yields two versions: `scheduled` one round ahead of its start
//! (when the round before it starts, so a predictor can score it first), and
//! `final` with its score a game's length after it starts. Season time runs
//! `speed` times faster than the wall clock, so a season can be played in
//! minutes (`minutes=10`), or at once (`minutes=0`, for back-filling and
//! benchmarks).
//!
//! The cursor is the number of versions yielded; on restart the season (the
//! same for the same seed) goes on after it, its clock set to the season time
//! of the next version.
//!
//! Every game carries its true home-win probability (the logistic model that
//! drew its result); [`SimSource::describe`] reports the oracle Brier score
//! of the games played so far, the best any model can do on them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fantasy_messages::GameStatus;
use fantasy_sim::{Season, SimClock, SimConfig, SimGame};

use crate::source::{Batch, Fetch, GameTruth, Source, SourceGame};

/// How long a simulated game lasts (season time), from start to final.
pub const GAME_LENGTH: chrono::Duration = chrono::Duration::hours(2);

/// Settings of one simulated league.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSourceConfig {
    /// `sim:<league>`.
    pub name: String,
    pub season: SimConfig,
    /// Wall time the season takes after its history; zero plays it at once.
    pub season_duration: Duration,
    /// Rounds played at once at the start (history to train on), before the
    /// clock starts.
    pub history_rounds: usize,
    /// Most versions per batch.
    pub batch_size: usize,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Scheduled,
    Final,
}

#[derive(Clone, Copy, Debug)]
struct Event {
    at: DateTime<Utc>,
    game: usize,
    kind: Kind,
}

/// A simulated league as a [`Source`].
#[derive(Debug)]
pub struct SimSource {
    cfg: SimSourceConfig,
    season: Season,
    events: Vec<Event>,
    next: usize,
    /// Started on the first `next` (after `resume`).
    clock: Option<Option<SimClock>>,
    brier_sum: f64,
    finals: usize,
}

impl SimSource {
    /// Simulates the season (deterministic for its seed) and lays out its
    /// versions in time.
    pub fn new(cfg: SimSourceConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cfg.season.teams >= 2,
            "{}: teams must be at least 2",
            cfg.name
        );
        anyhow::ensure!(cfg.batch_size > 0, "{}: batch must be at least 1", cfg.name);
        let season = Season::simulate(&cfg.season);
        let lead = cfg.season.round_interval;
        let mut events: Vec<Event> = Vec::with_capacity(season.games.len() * 2);
        for (i, g) in season.games.iter().enumerate() {
            events.push(Event {
                at: (g.scheduled_at - lead).max(cfg.season.start),
                game: i,
                kind: Kind::Scheduled,
            });
            events.push(Event {
                at: g.scheduled_at + GAME_LENGTH,
                game: i,
                kind: Kind::Final,
            });
        }
        // Stable: a game's scheduled version stays ahead of its final one.
        events.sort_by_key(|e| e.at);
        Ok(Self {
            cfg,
            season,
            events,
            next: 0,
            clock: None,
            brier_sum: 0.0,
            finals: 0,
        })
    }

    /// The simulated season (with every game's true probability).
    pub fn season(&self) -> &Season {
        &self.season
    }

    /// A clock that starts at the next version's season time and plays the
    /// season in `season_duration`; `None` when it plays at once.
    fn start_clock(&self) -> Option<SimClock> {
        let real = self.cfg.season_duration.as_secs_f64();
        if real == 0.0 {
            return None;
        }
        let live_from = self.history_until();
        let from = self
            .events
            .get(self.next)
            .map_or(self.cfg.season.start, |e| e.at)
            .max(live_from);
        let total = self
            .events
            .last()
            .map_or(1.0, |e| (e.at - live_from).num_milliseconds() as f64 / 1e3);
        Some(SimClock::new(from, total.max(1.0) / real))
    }

    /// Versions before this season time are history: due at once.
    fn history_until(&self) -> DateTime<Utc> {
        let c = &self.cfg.season;
        c.start + c.round_interval * i32::try_from(self.cfg.history_rounds).unwrap_or(i32::MAX)
    }

    fn version(&self, e: &Event) -> SourceGame {
        let g: &SimGame = &self.season.games[e.game];
        let c = &self.cfg.season;
        let (status, home_score, away_score, updated_at) = match e.kind {
            Kind::Scheduled => (GameStatus::Scheduled, None, None, e.at),
            Kind::Final => (
                GameStatus::Final,
                Some(g.home_score),
                Some(g.away_score),
                e.at,
            ),
        };
        SourceGame {
            event_id: g.game_id.clone(),
            game_id: g.game_id.clone(),
            sport: c.sport.clone(),
            league: c.league.clone(),
            season: c.season.clone(),
            home_team: g.home_team.clone(),
            away_team: g.away_team.clone(),
            scheduled_at: g.scheduled_at,
            status,
            home_score,
            away_score,
            updated_at,
        }
    }
}

impl Source for SimSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn resume(&mut self, cursor: Option<&str>) -> anyhow::Result<()> {
        self.next = match cursor {
            None => 0,
            Some(c) => {
                let n: usize = c.parse().map_err(|_| {
                    anyhow::anyhow!("{}: checkpoint {c:?} is not a version count", self.cfg.name)
                })?;
                n.min(self.events.len())
            }
        };
        self.brier_sum = 0.0;
        self.finals = 0;
        for e in &self.events[..self.next] {
            if let Kind::Final = e.kind {
                let g = &self.season.games[e.game];
                let y = if g.home_win() { 1.0 } else { 0.0 };
                self.brier_sum += (g.true_home_win_prob - y).powi(2);
                self.finals += 1;
            }
        }
        self.clock = None;
        Ok(())
    }

    async fn next(&mut self) -> anyhow::Result<Fetch> {
        if self.next >= self.events.len() {
            return Ok(Fetch::Done);
        }
        let clock = match self.clock {
            Some(c) => c,
            None => {
                let c = self.start_clock();
                self.clock = Some(c);
                c
            }
        };
        let pending = self.events[self.next..].iter().take(self.cfg.batch_size);
        let due = match &clock {
            None => pending.count(),
            Some(clock) => {
                let (now, history) = (clock.now(), self.history_until());
                pending
                    .take_while(|e| e.at < history || e.at <= now)
                    .count()
            }
        };
        if due == 0 {
            let wait = clock.map_or(Duration::ZERO, |c| {
                c.real_until(self.events[self.next].at)
                    .saturating_sub(c.real_until(c.now()))
            });
            return Ok(Fetch::Wait(
                wait.clamp(Duration::from_millis(1), Duration::from_secs(1)),
            ));
        }
        let events: Vec<Event> = self.events[self.next..self.next + due].to_vec();
        let games: Vec<SourceGame> = events.iter().map(|e| self.version(e)).collect();
        let truth: Vec<GameTruth> = events
            .iter()
            .filter(|e| matches!(e.kind, Kind::Scheduled))
            .map(|e| {
                let g = &self.season.games[e.game];
                GameTruth {
                    game_id: g.game_id.clone(),
                    home_win_prob: g.true_home_win_prob,
                }
            })
            .collect();
        for e in &events {
            if let Kind::Final = e.kind {
                let g = &self.season.games[e.game];
                let y = if g.home_win() { 1.0 } else { 0.0 };
                self.brier_sum += (g.true_home_win_prob - y).powi(2);
                self.finals += 1;
            }
        }
        self.next += due;
        Ok(Fetch::Batch(Batch {
            games,
            rejected: 0,
            cursor: Some(self.next.to_string()),
            truth,
        }))
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "seed": self.cfg.season.seed,
            "season": self.cfg.season.season,
            "games": self.season.games.len(),
            "versions_yielded": self.next,
            "versions_total": self.events.len(),
            "finals": self.finals,
            "oracle_brier": (self.finals > 0).then(|| self.brier_sum / self.finals as f64),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn source(seed: u64, duration: Duration) -> SimSource {
        SimSource::new(SimSourceConfig {
            name: "sim:nba".into(),
            season: SimConfig {
                seed,
                teams: 6,
                games_per_team: 10,
                ..SimConfig::default()
            },
            season_duration: duration,
            history_rounds: 0,
            batch_size: 7,
        })
        .unwrap()
    }

    async fn drain(s: &mut SimSource) -> Vec<SourceGame> {
        let mut out = Vec::new();
        loop {
            match s.next().await.unwrap() {
                Fetch::Batch(b) => out.extend(b.games),
                Fetch::Wait(d) => tokio::time::sleep(d).await,
                Fetch::Done => return out,
            }
        }
    }

    #[tokio::test]
    async fn a_season_yields_each_game_scheduled_then_final_and_resumes_after_its_cursor() {
        let mut s = source(3, Duration::ZERO);
        s.resume(None).unwrap();
        let all = drain(&mut s).await;
        assert_eq!(all.len(), 2 * s.season().games.len());
        for g in &s.season().games {
            let versions: Vec<_> = all.iter().filter(|v| v.game_id == g.game_id).collect();
            assert_eq!(versions.len(), 2);
            assert_eq!(versions[0].status, GameStatus::Scheduled);
            assert_eq!(
                versions[1].final_score(),
                Some((g.home_score, g.away_score))
            );
        }
        assert_eq!(
            drain(&mut source(3, Duration::ZERO)).await,
            all,
            "deterministic"
        );
        assert_ne!(drain(&mut source(4, Duration::ZERO)).await, all);
        let mut resumed = source(3, Duration::ZERO);
        resumed.resume(Some("25")).unwrap();
        assert_eq!(drain(&mut resumed).await, all[25..]);
        assert!(resumed.resume(Some("x")).is_err());
        let brier = resumed.describe()["oracle_brier"].as_f64().unwrap();
        assert!(brier > 0.0 && brier < 0.25, "{brier}");
    }

    #[tokio::test]
    async fn the_season_plays_in_the_time_asked() {
        let mut s = source(3, Duration::from_millis(600));
        s.resume(None).unwrap();
        let started = std::time::Instant::now();
        let all = drain(&mut s).await;
        let took = started.elapsed();
        assert_eq!(all.len(), 2 * s.season().games.len());
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn history_rounds_come_at_once_then_the_clock_runs() {
        let mut s = source(4, Duration::from_secs(3600));
        s.cfg.history_rounds = 4;
        s.resume(None).unwrap();
        let history_end = s.history_until();
        let mut first = Vec::new();
        loop {
            match s.next().await.unwrap() {
                Fetch::Batch(b) => first.extend(b.games),
                Fetch::Wait(_) => break,
                Fetch::Done => panic!("a season of an hour ended at once"),
            }
        }
        // Every version before round 4 starts, and none after (the next is
        // an hour's season away).
        let finals = first
            .iter()
            .filter(|g| g.status == GameStatus::Final)
            .count();
        let played = s
            .season()
            .games
            .iter()
            .filter(|g| g.scheduled_at + GAME_LENGTH < history_end)
            .count();
        assert!(finals > 0);
        assert_eq!(finals, played);
        assert!(first.iter().all(|g| g.updated_at <= history_end));
    }
}
