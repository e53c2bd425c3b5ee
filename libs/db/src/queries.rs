//! The shared queries: batched, idempotent upserts and the reads services
//! share.

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use fantasy_messages::{
    CalibrationBucket, Game, GameStatus, ModelMetrics, Outcome, Prediction, SchemaVersion,
};
use sqlx::Row as _;

use crate::Db;

/// Keeps, for each key, the entry that wins by `newer`; preserves first-seen
/// order. Postgres refuses an `INSERT ... ON CONFLICT DO UPDATE` that touches
/// one row twice, so a batch holding two events of one game must be folded
/// first; the fold keeps the one the upsert would have kept anyway.
fn latest_per_key<'a, T, K: std::hash::Hash + Eq>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
    newer: impl Fn(&T, &T) -> bool,
) -> Vec<&'a T> {
    let mut index: HashMap<K, usize> = HashMap::with_capacity(items.len());
    let mut out: Vec<&T> = Vec::with_capacity(items.len());
    for item in items {
        match index.get(&key(item)) {
            Some(&i) => {
                if !newer(out[i], item) {
                    out[i] = item;
                }
            }
            None => {
                index.insert(key(item), out.len());
                out.push(item);
            }
        }
    }
    out
}

/// A rolling-metrics row as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMetrics(pub ModelMetrics);

impl Db {
    /// Upserts games by `game_id`, in one statement. A record older (by
    /// `source_updated_at`) than the stored one changes nothing. Returns the
    /// rows inserted or updated.
    pub async fn upsert_games(&self, games: &[Game]) -> anyhow::Result<u64> {
        let mut conn = self.pool().acquire().await.context("upserting games")?;
        upsert_games_on(&mut conn, games).await
    }

    /// Upserts outcomes by `game_id` (a corrected score replaces the old one).
    pub async fn upsert_outcomes(&self, outcomes: &[Outcome]) -> anyhow::Result<u64> {
        let mut conn = self.pool().acquire().await.context("upserting outcomes")?;
        upsert_outcomes_on(&mut conn, outcomes).await
    }

    /// The stored game, if any.
    pub async fn game(&self, game_id: &str) -> anyhow::Result<Option<Game>> {
        let row = sqlx::query(
            "SELECT game_id, sport, league, season, home_team, away_team, scheduled_at, status,
                    features, feature_set, source, source_updated_at, produced_at
             FROM games WHERE game_id = $1",
        )
        .bind(game_id)
        .fetch_optional(self.pool())
        .await
        .context("reading a game")?;
        row.map(|r| {
            let status: String = r.try_get("status")?;
            Ok(Game {
                schema_version: SchemaVersion,
                game_id: r.try_get("game_id")?,
                sport: r.try_get("sport")?,
                league: r.try_get("league")?,
                season: r.try_get("season")?,
                home_team: r.try_get("home_team")?,
                away_team: r.try_get("away_team")?,
                scheduled_at: r.try_get("scheduled_at")?,
                status: GameStatus::parse(&status)
                    .with_context(|| format!("unknown game status {status:?} in the database"))?,
                features: r.try_get("features")?,
                feature_set: r.try_get("feature_set")?,
                source: r.try_get("source")?,
                source_updated_at: r.try_get("source_updated_at")?,
                produced_at: r.try_get("produced_at")?,
            })
        })
        .transpose()
    }

    /// The stored outcome, if any.
    pub async fn outcome(&self, game_id: &str) -> anyhow::Result<Option<Outcome>> {
        let row = sqlx::query(
            "SELECT game_id, home_score, away_score, home_win, final_at FROM outcomes WHERE game_id = $1",
        )
        .bind(game_id)
        .fetch_optional(self.pool())
        .await
        .context("reading an outcome")?;
        row.map(|r| {
            Ok(Outcome {
                schema_version: SchemaVersion,
                game_id: r.try_get("game_id")?,
                home_score: u32::try_from(r.try_get::<i32, _>("home_score")?)?,
                away_score: u32::try_from(r.try_get::<i32, _>("away_score")?)?,
                home_win: r.try_get("home_win")?,
                final_at: r.try_get("final_at")?,
            })
        })
        .transpose()
    }

    /// Upserts predictions by `(game_id, model_version)`; a prediction older
    /// (by `predicted_at`) than the stored one changes nothing.
    pub async fn upsert_predictions(&self, predictions: &[Prediction]) -> anyhow::Result<u64> {
        if predictions.is_empty() {
            return Ok(0);
        }
        let predictions = latest_per_key(
            predictions,
            |p| (p.game_id.as_str(), p.model_version.as_str()),
            |kept, new| kept.predicted_at > new.predicted_at,
        );
        let n = predictions.len();
        let mut ids = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut sports = Vec::with_capacity(n);
        let mut leagues = Vec::with_capacity(n);
        let mut homes = Vec::with_capacity(n);
        let mut aways = Vec::with_capacity(n);
        let mut scheduled = Vec::with_capacity(n);
        let mut probs = Vec::with_capacity(n);
        let mut predicted = Vec::with_capacity(n);
        let mut produced: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
        let mut variants: Vec<Option<&str>> = Vec::with_capacity(n);
        for p in predictions {
            ids.push(p.game_id.as_str());
            versions.push(p.model_version.as_str());
            sports.push(p.sport.as_str());
            leagues.push(p.league.as_str());
            homes.push(p.home_team.as_str());
            aways.push(p.away_team.as_str());
            scheduled.push(p.scheduled_at);
            probs.push(p.home_win_prob);
            predicted.push(p.predicted_at);
            produced.push(p.event_produced_at);
            variants.push(p.variant.as_deref());
        }
        let result = sqlx::query(
            r#"
            INSERT INTO predictions (game_id, model_version, sport, league, home_team, away_team,
                                     scheduled_at, home_win_prob, predicted_at, event_produced_at,
                                     variant)
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::timestamptz[], $8::real[], $9::timestamptz[],
                                 $10::timestamptz[], $11::text[])
            ON CONFLICT (game_id, model_version) DO UPDATE SET
                sport = EXCLUDED.sport, league = EXCLUDED.league,
                home_team = EXCLUDED.home_team, away_team = EXCLUDED.away_team,
                scheduled_at = EXCLUDED.scheduled_at, home_win_prob = EXCLUDED.home_win_prob,
                predicted_at = EXCLUDED.predicted_at, event_produced_at = EXCLUDED.event_produced_at,
                variant = EXCLUDED.variant
            WHERE predictions.predicted_at <= EXCLUDED.predicted_at
            "#,
        )
        .bind(&ids)
        .bind(&versions)
        .bind(&sports)
        .bind(&leagues)
        .bind(&homes)
        .bind(&aways)
        .bind(&scheduled)
        .bind(&probs)
        .bind(&predicted)
        .bind(&produced)
        .bind(&variants)
        .execute(self.pool())
        .await
        .context("upserting predictions")?;
        Ok(result.rows_affected())
    }

    /// The most recent prediction for a game, whichever model made it.
    pub async fn latest_prediction(&self, game_id: &str) -> anyhow::Result<Option<Prediction>> {
        let row = sqlx::query(
            "SELECT game_id, model_version, sport, league, home_team, away_team, scheduled_at,
                    home_win_prob, predicted_at, event_produced_at, variant
             FROM predictions WHERE game_id = $1
             ORDER BY predicted_at DESC LIMIT 1",
        )
        .bind(game_id)
        .fetch_optional(self.pool())
        .await
        .context("reading the latest prediction")?;
        row.map(|r| {
            Ok(Prediction {
                schema_version: SchemaVersion,
                game_id: r.try_get("game_id")?,
                sport: r.try_get("sport")?,
                league: r.try_get("league")?,
                home_team: r.try_get("home_team")?,
                away_team: r.try_get("away_team")?,
                scheduled_at: r.try_get("scheduled_at")?,
                model_version: r.try_get("model_version")?,
                home_win_prob: r.try_get("home_win_prob")?,
                predicted_at: r.try_get("predicted_at")?,
                event_produced_at: r.try_get("event_produced_at")?,
                variant: r.try_get("variant")?,
            })
        })
        .transpose()
    }

    /// Stores one evaluation; storing the same one again changes nothing.
    pub async fn insert_model_metrics(&self, m: &ModelMetrics) -> anyhow::Result<bool> {
        let calibration = serde_json::to_value(&m.calibration)?;
        let result = sqlx::query(
            "INSERT INTO model_metrics (model_name, model_version, evaluated_at, window_size,
                                        sample_count, accuracy, brier, log_loss, calibration)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (model_name, model_version, evaluated_at) DO NOTHING",
        )
        .bind(&m.model_name)
        .bind(&m.model_version)
        .bind(m.evaluated_at)
        .bind(i32::try_from(m.window).context("window too large")?)
        .bind(i64::try_from(m.count).context("count too large")?)
        .bind(m.accuracy)
        .bind(m.brier)
        .bind(m.log_loss)
        .bind(calibration)
        .execute(self.pool())
        .await
        .context("storing model metrics")?;
        Ok(result.rows_affected() == 1)
    }

    /// Deletes evaluations older than `age`, except each version's latest
    /// (a retired version keeps its last scores). Returns how many.
    pub async fn purge_model_metrics(&self, age: std::time::Duration) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM model_metrics m
             WHERE m.evaluated_at < now() - make_interval(secs => $1)
               AND m.evaluated_at < (SELECT max(l.evaluated_at) FROM model_metrics l
                                     WHERE l.model_name = m.model_name
                                       AND l.model_version = m.model_version)",
        )
        .bind(age.as_secs_f64())
        .execute(self.pool())
        .await
        .context("purging old model metrics")?;
        Ok(done.rows_affected())
    }

    /// The most recent evaluation of a model version.
    pub async fn latest_model_metrics(
        &self,
        model_name: &str,
        model_version: &str,
    ) -> anyhow::Result<Option<StoredMetrics>> {
        let row = sqlx::query(
            "SELECT model_name, model_version, evaluated_at, window_size, sample_count,
                    accuracy, brier, log_loss, calibration
             FROM model_metrics WHERE model_name = $1 AND model_version = $2
             ORDER BY evaluated_at DESC LIMIT 1",
        )
        .bind(model_name)
        .bind(model_version)
        .fetch_optional(self.pool())
        .await
        .context("reading model metrics")?;
        row.map(|r| {
            let calibration: Vec<CalibrationBucket> =
                serde_json::from_value(r.try_get("calibration")?)?;
            Ok(StoredMetrics(ModelMetrics {
                schema_version: SchemaVersion,
                model_name: r.try_get("model_name")?,
                model_version: r.try_get("model_version")?,
                window: u32::try_from(r.try_get::<i32, _>("window_size")?)?,
                count: u64::try_from(r.try_get::<i64, _>("sample_count")?)?,
                accuracy: r.try_get("accuracy")?,
                brier: r.try_get("brier")?,
                log_loss: r.try_get("log_loss")?,
                calibration,
                evaluated_at: r.try_get("evaluated_at")?,
            }))
        })
        .transpose()
    }

    /// A source's resume point.
    pub async fn checkpoint(&self, source: &str) -> anyhow::Result<Option<String>> {
        let cursor = sqlx::query_scalar("SELECT cursor FROM source_checkpoints WHERE source = $1")
            .bind(source)
            .fetch_optional(self.pool())
            .await
            .context("reading a checkpoint")?;
        Ok(cursor)
    }

    /// Records a source's resume point.
    pub async fn set_checkpoint(&self, source: &str, cursor: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO source_checkpoints (source, cursor) VALUES ($1, $2)
             ON CONFLICT (source) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()",
        )
        .bind(source)
        .bind(cursor)
        .execute(self.pool())
        .await
        .context("writing a checkpoint")?;
        Ok(())
    }
}

/// [`Db::upsert_games`] on a connection or in a transaction: upserts games by
/// `game_id`, in one statement. A record older (by `source_updated_at`) than
/// the stored one changes nothing. Returns the rows inserted or updated.
pub async fn upsert_games_on(conn: &mut sqlx::PgConnection, games: &[Game]) -> anyhow::Result<u64> {
    if games.is_empty() {
        return Ok(0);
    }
    let games = latest_per_key(
        games,
        |g| g.game_id.as_str(),
        |kept, new| kept.source_updated_at > new.source_updated_at,
    );
    let n = games.len();
    let mut ids = Vec::with_capacity(n);
    let mut sports = Vec::with_capacity(n);
    let mut leagues = Vec::with_capacity(n);
    let mut seasons = Vec::with_capacity(n);
    let mut homes = Vec::with_capacity(n);
    let mut aways = Vec::with_capacity(n);
    let mut scheduled = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    // Postgres arrays must be rectangular, so the feature vectors travel
    // flattened, with each row's offset and length.
    let mut flat: Vec<f32> = Vec::new();
    let mut offsets = Vec::with_capacity(n);
    let mut lengths = Vec::with_capacity(n);
    let mut feature_sets = Vec::with_capacity(n);
    let mut sources = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    let mut produced = Vec::with_capacity(n);
    for g in games {
        ids.push(g.game_id.as_str());
        sports.push(g.sport.as_str());
        leagues.push(g.league.as_str());
        seasons.push(g.season.as_str());
        homes.push(g.home_team.as_str());
        aways.push(g.away_team.as_str());
        scheduled.push(g.scheduled_at);
        statuses.push(g.status.as_str());
        offsets.push(i32::try_from(flat.len()).context("feature batch too large")?);
        lengths.push(i32::try_from(g.features.len()).context("feature vector too long")?);
        flat.extend_from_slice(&g.features);
        feature_sets.push(g.feature_set.as_str());
        sources.push(g.source.as_str());
        updated.push(g.source_updated_at);
        produced.push(g.produced_at);
    }
    let result = sqlx::query(
        r#"
        INSERT INTO games (game_id, sport, league, season, home_team, away_team, scheduled_at,
                           status, features, feature_set, source, source_updated_at, produced_at)
        SELECT t.game_id, t.sport, t.league, t.season, t.home_team, t.away_team, t.scheduled_at,
               t.status,
               CASE WHEN t.len = 0 THEN '{}'::real[] ELSE ($9::real[])[t.off + 1 : t.off + t.len] END,
               t.feature_set, t.source, t.source_updated_at, t.produced_at
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::timestamptz[], $8::text[], $10::int[], $11::int[], $12::text[],
                    $13::text[], $14::timestamptz[], $15::timestamptz[])
             AS t(game_id, sport, league, season, home_team, away_team, scheduled_at, status,
                  off, len, feature_set, source, source_updated_at, produced_at)
        ON CONFLICT (game_id) DO UPDATE SET
            sport = EXCLUDED.sport, league = EXCLUDED.league, season = EXCLUDED.season,
            home_team = EXCLUDED.home_team, away_team = EXCLUDED.away_team,
            scheduled_at = EXCLUDED.scheduled_at, status = EXCLUDED.status,
            features = EXCLUDED.features, feature_set = EXCLUDED.feature_set,
            source = EXCLUDED.source, source_updated_at = EXCLUDED.source_updated_at,
            produced_at = EXCLUDED.produced_at, updated_at = now()
        WHERE games.source_updated_at <= EXCLUDED.source_updated_at
        "#,
    )
    .bind(&ids)
    .bind(&sports)
    .bind(&leagues)
    .bind(&seasons)
    .bind(&homes)
    .bind(&aways)
    .bind(&scheduled)
    .bind(&statuses)
    .bind(&flat)
    .bind(&offsets)
    .bind(&lengths)
    .bind(&feature_sets)
    .bind(&sources)
    .bind(&updated)
    .bind(&produced)
    .execute(&mut *conn)
    .await
    .context("upserting games")?;
    Ok(result.rows_affected())
}

/// [`Db::upsert_outcomes`] on a connection or in a transaction.
pub async fn upsert_outcomes_on(
    conn: &mut sqlx::PgConnection,
    outcomes: &[Outcome],
) -> anyhow::Result<u64> {
    if outcomes.is_empty() {
        return Ok(0);
    }
    let outcomes = latest_per_key(
        outcomes,
        |o| o.game_id.as_str(),
        |kept, new| kept.final_at > new.final_at,
    );
    let ids: Vec<&str> = outcomes.iter().map(|o| o.game_id.as_str()).collect();
    let home: Vec<i32> = outcomes.iter().map(|o| o.home_score as i32).collect();
    let away: Vec<i32> = outcomes.iter().map(|o| o.away_score as i32).collect();
    let wins: Vec<bool> = outcomes.iter().map(|o| o.home_win).collect();
    let finals: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.final_at).collect();
    let result = sqlx::query(
        r#"
        INSERT INTO outcomes (game_id, home_score, away_score, home_win, final_at)
        SELECT * FROM UNNEST($1::text[], $2::int[], $3::int[], $4::bool[], $5::timestamptz[])
        ON CONFLICT (game_id) DO UPDATE SET
            home_score = EXCLUDED.home_score, away_score = EXCLUDED.away_score,
            home_win = EXCLUDED.home_win, final_at = EXCLUDED.final_at, recorded_at = now()
        WHERE outcomes.final_at <= EXCLUDED.final_at
          AND (outcomes.home_score, outcomes.away_score, outcomes.home_win, outcomes.final_at)
              IS DISTINCT FROM
              (EXCLUDED.home_score, EXCLUDED.away_score, EXCLUDED.home_win, EXCLUDED.final_at)
        "#,
    )
    .bind(&ids)
    .bind(&home)
    .bind(&away)
    .bind(&wins)
    .bind(&finals)
    .execute(&mut *conn)
    .await
    .context("upserting outcomes")?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::latest_per_key;

    #[test]
    fn fold_keeps_the_newest_per_key_in_first_seen_order() {
        let items = [("a", 1), ("b", 5), ("a", 3), ("a", 2), ("c", 0), ("b", 4)];
        let kept = latest_per_key(&items, |i| i.0, |kept, new| kept.1 > new.1);
        assert_eq!(kept, [&("a", 3), &("b", 5), &("c", 0)]);
    }

    #[test]
    fn fold_prefers_the_later_of_equals() {
        let items = [("a", 1, "first"), ("a", 1, "second")];
        let kept = latest_per_key(&items, |i| i.0, |kept, new| kept.1 > new.1);
        assert_eq!(kept, [&("a", 1, "second")]);
    }
}
