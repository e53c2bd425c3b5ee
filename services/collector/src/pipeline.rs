//! From a source's batch to Kafka and Postgres, each record version once.
//!
//! Per batch ([`Pipeline::process`]):
//!
//! 1. Versions that do not make valid messages are rejected (logged with
//!    the source and the reason, counted) before anything else.
//! 2. Dedup: [`Dedup::check`] drops versions already published (bloom
//!    filters, hits confirmed in Postgres).
//! 3. One Postgres transaction: first [`Dedup::claim_in`] takes the new
//!    versions' keys (of two replicas that fetched the same version, the
//!    second waits on the first's uncommitted key and then finds it seen, so
//!    exactly one goes on with it); the outcomes the ratings have not absorbed
//!    yet are recorded in `ratings_applied`; the rows of every team involved
//!    are locked (in a fixed order, so replicas cannot deadlock) and read;
//!    the games are walked in schedule order, each getting its `elo-v1`
//!    features from the ratings *before* it (a game already stored keeps the
//!    features it was first published with once under way), each new final
//!    result moving the ratings; the teams are written back; the `Game`s and
//!    `Outcome`s are published to Kafka (idempotent producer, acks=all) and
//!    upserted, the two at once. Then, if both succeeded, the transaction
//!    commits: a version is seen exactly when its records are stored and
//!    published, with one write of its key.
//! 4. [`Dedup::remember`]: the bloom bits, so a re-fetch is cheap.
//!
//! Any failure in 3 rolls the transaction back, claims included, so the
//! versions are published when the source yields them again (and the source's
//! checkpoint does not move past them). A Kafka publish that succeeded before a
//! failed commit is repeated on the retry: a duplicate on the topic, which the
//! consumers absorb (they upsert by game), never a loss.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use fantasy_db::{Db, upsert_games_on, upsert_outcomes_on};
use fantasy_dedup::{Dedup, DedupKey};
use fantasy_features::{EloParams, FEATURE_SET, Matchup, Ratings, TeamKey, TeamState};
use fantasy_kafka::Producer;
use fantasy_messages::{Game, GameStatus, Message as _, Outcome, SchemaVersion};
use sqlx::Row as _;

use crate::source::{GameTruth, SourceGame};

/// What one batch came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BatchReport {
    /// Versions in the batch.
    pub received: usize,
    /// Versions that made no valid message (dropped, logged).
    pub invalid: usize,
    /// Versions already published (by this replica or another).
    pub duplicates: usize,
    /// New versions another replica claimed first (it publishes them).
    pub claimed_elsewhere: usize,
    /// `Game` messages published.
    pub games: usize,
    /// `Outcome` messages published.
    pub outcomes: usize,
    /// Final results the ratings absorbed.
    pub ratings_applied: usize,
}

impl std::ops::AddAssign for BatchReport {
    fn add_assign(&mut self, o: Self) {
        self.received += o.received;
        self.invalid += o.invalid;
        self.duplicates += o.duplicates;
        self.claimed_elsewhere += o.claimed_elsewhere;
        self.games += o.games;
        self.outcomes += o.outcomes;
        self.ratings_applied += o.ratings_applied;
    }
}

/// The way out of the collector; shared by every source task.
#[derive(Clone)]
pub struct Pipeline {
    db: Db,
    producer: Producer,
    dedup: Dedup,
    elo: EloParams,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("elo", &self.elo)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    pub fn new(db: Db, producer: Producer, dedup: Dedup, elo: EloParams) -> Arc<Self> {
        Arc::new(Self {
            db,
            producer,
            dedup,
            elo,
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// Publishes the versions of `games` that were not published before.
    /// An error publishes nothing for good: process the batch again later.
    #[tracing::instrument(name = "collector.batch", skip_all, fields(otel.kind = "producer", source = %source, games = games.len()))]
    pub async fn process(&self, source: &str, games: &[SourceGame]) -> anyhow::Result<BatchReport> {
        let mut report = BatchReport {
            received: games.len(),
            ..BatchReport::default()
        };
        let now = Utc::now();
        let valid: Vec<&SourceGame> = games
            .iter()
            .filter(|g| match validate(source, g, now) {
                Ok(()) => true,
                Err(reason) => {
                    tracing::warn!(source, game_id = %g.game_id, "record rejected: {reason}");
                    metrics::counter!("collector_rejected_total", "source" => source.to_owned())
                        .increment(1);
                    report.invalid += 1;
                    false
                }
            })
            .collect();
        if valid.is_empty() {
            return Ok(report);
        }
        let keys: Vec<DedupKey> = valid
            .iter()
            .map(|g| DedupKey::new(source, &g.event_id, &g.content()))
            .collect();
        let verdicts = self.dedup.check(&keys).await.context("dedup check")?;
        let (new_games, new_keys): (Vec<&SourceGame>, Vec<DedupKey>) = valid
            .iter()
            .zip(&keys)
            .zip(&verdicts)
            .filter(|(_, v)| v.is_new())
            .map(|((g, k), _)| (*g, *k))
            .unzip();
        report.duplicates = valid.len() - new_games.len();
        if new_games.is_empty() {
            return Ok(report);
        }
        // An error rolled the transaction back, the claims with it.
        let (out, mine_keys) = self.publish(source, &new_games, &new_keys).await?;
        report.claimed_elsewhere = out.claimed_elsewhere;
        report.games = out.games;
        report.outcomes = out.outcomes;
        report.ratings_applied = out.ratings_applied;
        // Committed with the records; now the bloom bits, so the next
        // re-fetch is cheap.
        self.dedup.remember(&mine_keys).await;
        Ok(report)
    }

    /// Steps 2 (the claim) and 3 of the module docs, for versions no
    /// replica published yet; returns the keys this replica took.
    async fn publish(
        &self,
        source: &str,
        new_games: &[&SourceGame],
        new_keys: &[DedupKey],
    ) -> anyhow::Result<(BatchReport, Vec<DedupKey>)> {
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .context("starting a transaction")?;

        let won = self
            .dedup
            .claim_in(&mut tx, new_keys)
            .await
            .context("dedup claim")?;
        let (mine, keys): (Vec<&SourceGame>, Vec<DedupKey>) = new_games
            .iter()
            .zip(new_keys)
            .zip(&won)
            .filter(|(_, w)| **w)
            .map(|((g, k), _)| (*g, *k))
            .unzip();
        let claimed_elsewhere = new_games.len() - mine.len();
        if mine.is_empty() {
            tx.rollback().await.context("ending the transaction")?;
            return Ok((
                BatchReport {
                    claimed_elsewhere,
                    ..BatchReport::default()
                },
                keys,
            ));
        }
        let mine = &mine[..];

        // Final results not yet absorbed by the ratings (once per game, ever).
        let finals: Vec<&str> = dedup_strs(
            mine.iter()
                .filter(|g| g.final_score().is_some())
                .map(|g| g.game_id.as_str()),
        );
        let mut to_apply: HashSet<String> = if finals.is_empty() {
            HashSet::new()
        } else {
            sqlx::query_scalar(
                "INSERT INTO ratings_applied (game_id) SELECT * FROM UNNEST($1::text[])
                 ON CONFLICT (game_id) DO NOTHING RETURNING game_id",
            )
            .bind(&finals)
            .fetch_all(&mut *tx)
            .await
            .context("recording applied ratings")?
            .into_iter()
            .collect()
        };

        // Games under way or over keep the features they were published with.
        let started: Vec<&str> = dedup_strs(
            mine.iter()
                .filter(|g| g.status != GameStatus::Scheduled)
                .map(|g| g.game_id.as_str()),
        );
        let mut features: HashMap<String, Vec<f32>> = HashMap::new();
        if !started.is_empty() {
            let rows = sqlx::query(
                "SELECT game_id, features FROM games
                 WHERE game_id = ANY($1::text[]) AND feature_set = $2 AND cardinality(features) > 0",
            )
            .bind(&started)
            .bind(FEATURE_SET)
            .fetch_all(&mut *tx)
            .await
            .context("reading stored features")?;
            for row in rows {
                features.insert(row.try_get("game_id")?, row.try_get("features")?);
            }
        }

        // The teams involved, locked in one order across replicas.
        let teams: BTreeSet<TeamKey> = mine
            .iter()
            .flat_map(|g| {
                [
                    TeamKey::new(&g.sport, &g.league, &g.home_team),
                    TeamKey::new(&g.sport, &g.league, &g.away_team),
                ]
            })
            .collect();
        let mut ratings = lock_teams(&mut tx, &teams, self.elo).await?;

        // Walk the games in schedule order: features before, results after.
        let mut order: Vec<&SourceGame> = mine.to_vec();
        order.sort_by_key(|g| g.scheduled_at);
        let now = Utc::now();
        let mut game_msgs = Vec::with_capacity(order.len());
        let mut outcome_msgs = Vec::new();
        let mut touched: BTreeSet<TeamKey> = BTreeSet::new();
        let mut applied = 0;
        for g in order {
            let m = Matchup {
                sport: &g.sport,
                league: &g.league,
                home: &g.home_team,
                away: &g.away_team,
                at: g.scheduled_at,
            };
            let f = match features.get(&g.game_id) {
                Some(f) if g.status != GameStatus::Scheduled => f.clone(),
                _ => ratings.features(&m).to_vec(),
            };
            features.insert(g.game_id.clone(), f.clone());
            game_msgs.push(game_message(source, g, f, now));
            if let Some((h, a)) = g.final_score() {
                outcome_msgs.push(outcome_message(g, h, a));
                if to_apply.remove(&g.game_id) {
                    ratings.apply(&m, h, a);
                    touched.insert(TeamKey::new(&g.sport, &g.league, &g.home_team));
                    touched.insert(TeamKey::new(&g.sport, &g.league, &g.away_team));
                    applied += 1;
                }
            }
        }
        store_teams(&mut tx, &ratings, &touched).await?;

        // Kafka and Postgres take the batch at once (the team rows stay
        // locked until the commit, so this is time other replicas and
        // sources wait). Each side runs to its end even when the other
        // failed: no statement is cut off mid-flight, and the commit
        // happens only when both succeeded.
        let (published, stored) = tokio::join!(
            async {
                let (games, outcomes) = tokio::join!(
                    self.producer.publish_batch(&game_msgs),
                    self.producer.publish_batch(&outcome_msgs),
                );
                games.context("publishing games")?;
                outcomes.context("publishing outcomes")
            },
            async {
                upsert_games_on(&mut tx, &game_msgs).await?;
                upsert_outcomes_on(&mut tx, &outcome_msgs).await
            },
        );
        published?;
        stored?;
        tx.commit().await.context("committing the batch")?;

        metrics::counter!("collector_published_total", "source" => source.to_owned(), "kind" => "game")
            .increment(game_msgs.len() as u64);
        metrics::counter!("collector_published_total", "source" => source.to_owned(), "kind" => "outcome")
            .increment(outcome_msgs.len() as u64);
        metrics::counter!("collector_ratings_applied_total").increment(applied as u64);
        Ok((
            BatchReport {
                claimed_elsewhere,
                games: game_msgs.len(),
                outcomes: outcome_msgs.len(),
                ratings_applied: applied,
                ..BatchReport::default()
            },
            keys,
        ))
    }
}

impl Pipeline {
    /// Stores a simulator's true probabilities (`game_truth`); a game
    /// already there keeps its first value (the simulator is deterministic).
    pub async fn record_truth(&self, source: &str, truth: &[GameTruth]) -> anyhow::Result<()> {
        if truth.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = truth.iter().map(|t| t.game_id.as_str()).collect();
        let probs: Vec<f64> = truth.iter().map(|t| t.home_win_prob).collect();
        sqlx::query(
            "INSERT INTO game_truth (game_id, source, home_win_prob)
             SELECT g, $3, p FROM UNNEST($1::text[], $2::float8[]) AS t(g, p)
             ON CONFLICT (game_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&probs)
        .bind(source)
        .execute(self.db.pool())
        .await
        .context("storing true probabilities")?;
        Ok(())
    }
}

/// Why a version cannot become valid messages, if it cannot.
fn validate(source: &str, g: &SourceGame, now: DateTime<Utc>) -> Result<(), String> {
    if g.home_team == g.away_team {
        return Err(format!("home and away are both {:?}", g.home_team));
    }
    if g.status == GameStatus::Final && g.final_score().is_none() {
        return Err("final without both scores".into());
    }
    game_message(source, g, Vec::new(), now).validate()?;
    if let Some((h, a)) = g.final_score() {
        outcome_message(g, h, a).validate()?;
    }
    Ok(())
}

fn game_message(source: &str, g: &SourceGame, features: Vec<f32>, now: DateTime<Utc>) -> Game {
    Game {
        schema_version: SchemaVersion,
        game_id: g.game_id.clone(),
        sport: g.sport.clone(),
        league: g.league.clone(),
        season: g.season.clone(),
        home_team: g.home_team.clone(),
        away_team: g.away_team.clone(),
        scheduled_at: g.scheduled_at,
        status: g.status,
        features,
        feature_set: FEATURE_SET.to_owned(),
        source: source.to_owned(),
        source_updated_at: g.updated_at,
        produced_at: now,
    }
}

fn outcome_message(g: &SourceGame, home: u32, away: u32) -> Outcome {
    Outcome {
        schema_version: SchemaVersion,
        game_id: g.game_id.clone(),
        home_score: home,
        away_score: away,
        home_win: home > away,
        final_at: g.updated_at,
    }
}

fn dedup_strs<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    it.filter(|s| seen.insert(*s)).collect()
}

/// Creates the missing team rows, then locks and reads all of `teams`.
async fn lock_teams(
    tx: &mut sqlx::PgConnection,
    teams: &BTreeSet<TeamKey>,
    elo: EloParams,
) -> anyhow::Result<Ratings> {
    let sports: Vec<&str> = teams.iter().map(|t| t.sport.as_str()).collect();
    let leagues: Vec<&str> = teams.iter().map(|t| t.league.as_str()).collect();
    let names: Vec<&str> = teams.iter().map(|t| t.team.as_str()).collect();
    // Sorted input, sorted locks: two replicas never wait on each other in
    // a cycle.
    sqlx::query(
        "INSERT INTO team_ratings (sport, league, team, rating)
         SELECT s, l, t, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS x(s, l, t)
         ORDER BY s, l, t
         ON CONFLICT (sport, league, team) DO NOTHING",
    )
    .bind(&sports)
    .bind(&leagues)
    .bind(&names)
    .bind(elo.initial)
    .execute(&mut *tx)
    .await
    .context("creating team ratings")?;
    let rows = sqlx::query(
        "SELECT r.sport, r.league, r.team, r.rating, r.games_played, r.last_game_at, r.recent
         FROM team_ratings r
         JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS x(s, l, t)
           ON r.sport = x.s AND r.league = x.l AND r.team = x.t
         ORDER BY r.sport, r.league, r.team
         FOR UPDATE OF r",
    )
    .bind(&sports)
    .bind(&leagues)
    .bind(&names)
    .fetch_all(&mut *tx)
    .await
    .context("locking team ratings")?;
    ratings_from_rows(rows, elo)
}

/// Writes back the teams whose ratings moved.
async fn store_teams(
    tx: &mut sqlx::PgConnection,
    ratings: &Ratings,
    touched: &BTreeSet<TeamKey>,
) -> anyhow::Result<()> {
    if touched.is_empty() {
        return Ok(());
    }
    let mut sports = Vec::new();
    let mut leagues = Vec::new();
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut played = Vec::new();
    let mut last = Vec::new();
    // Rectangular arrays only: the recent results travel as text.
    let mut recent = Vec::new();
    for key in touched {
        let Some(state) = ratings.team(key) else {
            continue;
        };
        sports.push(key.sport.as_str());
        leagues.push(key.league.as_str());
        names.push(key.team.as_str());
        values.push(state.rating);
        played.push(i32::try_from(state.games_played).unwrap_or(i32::MAX));
        last.push(state.last_game_at);
        let r: Vec<String> = state.recent.iter().map(f32::to_string).collect();
        recent.push(format!("{{{}}}", r.join(",")));
    }
    sqlx::query(
        "UPDATE team_ratings r SET rating = x.rating, games_played = x.played,
                last_game_at = x.last, recent = x.recent::real[], updated_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::int[],
                     $6::timestamptz[], $7::text[])
              AS x(s, l, t, rating, played, last, recent)
         WHERE r.sport = x.s AND r.league = x.l AND r.team = x.t",
    )
    .bind(&sports)
    .bind(&leagues)
    .bind(&names)
    .bind(&values)
    .bind(&played)
    .bind(&last)
    .bind(&recent)
    .execute(&mut *tx)
    .await
    .context("storing team ratings")?;
    Ok(())
}

/// Every team's ratings as stored (for readers outside a batch, such as the
/// trainer; the tests compare them with an offline replay).
pub async fn load_ratings(db: &Db, elo: EloParams) -> anyhow::Result<Ratings> {
    let rows = sqlx::query(
        "SELECT sport, league, team, rating, games_played, last_game_at, recent FROM team_ratings",
    )
    .fetch_all(db.pool())
    .await
    .context("reading team ratings")?;
    ratings_from_rows(rows, elo)
}

fn ratings_from_rows(rows: Vec<sqlx::postgres::PgRow>, elo: EloParams) -> anyhow::Result<Ratings> {
    let mut ratings = Ratings::new(elo);
    for row in rows {
        let recent: Vec<f32> = row.try_get("recent")?;
        let games_played: i32 = row.try_get("games_played")?;
        ratings.set(
            TeamKey::new(
                row.try_get("sport")?,
                row.try_get("league")?,
                row.try_get("team")?,
            ),
            TeamState {
                rating: row.try_get("rating")?,
                games_played: games_played.max(0) as u32,
                last_game_at: row.try_get("last_game_at")?,
                recent: recent.into(),
            },
        );
    }
    Ok(ratings)
}
