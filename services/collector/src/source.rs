//! What every source gives the collector, and the trait it implements.
//!
//! A source yields [`Batch`]es of [`SourceGame`]s: how one game looked at one
//! moment (scheduled, under way with a score, final). The pipeline turns them
//! into `Game` and `Outcome` messages, drops the versions already published
//! (dedup keyed by source, event id and content), and stores the batch's
//! [`Batch::cursor`] as the source's checkpoint once every record of the
//! batch is published. On restart the source is handed that cursor back
//! ([`Source::resume`]) and goes on after it.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fantasy_messages::GameStatus;

/// The wait before retry number `retry + 1` (`retry` from 0) of a fetch or
/// a batch: "full jitter", uniform in `[0, min(max, base × 2^retry)]`, so
/// replicas that failed together do not retry together.
pub fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    use rand::Rng as _;
    let ceiling = base.saturating_mul(2u32.saturating_pow(retry)).min(max);
    let ceiling = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=ceiling))
}

/// One game as a source saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceGame {
    /// The source's own id of the event (part of the dedup key).
    pub event_id: String,
    /// The stable id the stack knows the game by (`Game::game_id`), the same
    /// for every version of the game.
    pub game_id: String,
    pub sport: String,
    pub league: String,
    pub season: String,
    pub home_team: String,
    pub away_team: String,
    pub scheduled_at: DateTime<Utc>,
    pub status: GameStatus,
    /// Known once the game is under way; both are set for `Final`.
    pub home_score: Option<u32>,
    pub away_score: Option<u32>,
    /// When the source last changed this record (the fetch time when the
    /// source does not say).
    pub updated_at: DateTime<Utc>,
}

impl SourceGame {
    /// The bytes that make a version of this game: what changes when the
    /// source updates it (status, score, schedule, teams), and nothing that
    /// changes when it is fetched again unchanged (no fetch time).
    pub fn content(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        for part in [
            self.game_id.as_str(),
            self.sport.as_str(),
            self.league.as_str(),
            self.season.as_str(),
            self.home_team.as_str(),
            self.away_team.as_str(),
            self.status.as_str(),
        ] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(&self.scheduled_at.timestamp_millis().to_le_bytes());
        for score in [self.home_score, self.away_score] {
            match score {
                Some(s) => {
                    out.push(1);
                    out.extend_from_slice(&s.to_le_bytes());
                }
                None => out.push(0),
            }
        }
        out
    }

    /// The final score, when the game is over and both scores are known.
    pub fn final_score(&self) -> Option<(u32, u32)> {
        match (self.status, self.home_score, self.away_score) {
            (GameStatus::Final, Some(h), Some(a)) => Some((h, a)),
            _ => None,
        }
    }
}

/// What one call to [`Source::next`] gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub games: Vec<SourceGame>,
    /// Records the source could not read (malformed), already logged and
    /// counted by the source; the rest of the payload is in `games`.
    pub rejected: usize,
    /// The checkpoint to store once every game of this batch is published
    /// (`None`: keep the stored one).
    pub cursor: Option<String>,
    /// What only a simulator knows: the true home-win probability of games
    /// of this batch, stored in `game_truth` so a model's Brier score can be
    /// compared with the oracle's on the same games.
    pub truth: Vec<GameTruth>,
}

/// A game's true home-win probability (from the simulator's model).
#[derive(Clone, Debug, PartialEq)]
pub struct GameTruth {
    pub game_id: String,
    pub home_win_prob: f64,
}

/// What a source has to say when asked for more.
#[derive(Clone, Debug, PartialEq)]
pub enum Fetch {
    /// Records to publish (possibly none, with a new cursor).
    Batch(Batch),
    /// Nothing now: ask again after this long (a poll interval, the next
    /// simulated game).
    Wait(Duration),
    /// Nothing more, ever (a file read to its end).
    Done,
}

/// A source of games and results.
///
/// A source is driven by one task: `resume` once, then `next` in a loop.
/// Errors from `next` are logged and counted by the pipeline, which asks
/// again after a back-off; a source that retries on its own (HTTP) returns
/// an error only when it gave up on one fetch.
pub trait Source: Send + 'static {
    /// Unique among the configured sources (`espn:basketball/nba`,
    /// `sim:nba`, `file:history.csv`): the checkpoint's key, the dedup's
    /// source, the label on metrics.
    fn name(&self) -> &str;

    /// Goes on after `cursor`, the last stored checkpoint (`None`: from the
    /// beginning). A cursor the source cannot read is an error.
    fn resume(&mut self, cursor: Option<&str>) -> anyhow::Result<()>;

    /// The next records.
    fn next(&mut self) -> impl Future<Output = anyhow::Result<Fetch>> + Send;

    /// What the source wants operators to see on `GET /v1/sources` (its
    /// progress, for a simulator its oracle score); `null` by default.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
