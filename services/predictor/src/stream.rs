//! The stream path: `games` in, `predictions` out.

use std::sync::Arc;

use chrono::Utc;
use fantasy_cache::Cache;
use fantasy_db::Db;
use fantasy_inference::Engine;
use fantasy_kafka::{Handler, Producer, Record};
use fantasy_messages::{Game, GameStatus, Prediction, SchemaVersion};

/// Predicts each batch of game events, then stores and announces the
/// predictions. The consumer commits the batch only after all three sinks
/// took it: Postgres (upsert), Redis (latest per game), Kafka (`predictions`).
#[derive(Debug)]
pub struct GamesHandler {
    pub engine: Arc<Engine>,
    pub db: Db,
    pub cache: Cache,
    pub producer: Producer,
    rows: Vec<f32>,
}

impl GamesHandler {
    pub fn new(engine: Arc<Engine>, db: Db, cache: Cache, producer: Producer) -> Self {
        Self {
            engine,
            db,
            cache,
            producer,
            rows: Vec::new(),
        }
    }
}

fn skip(reason: &'static str) {
    metrics::counter!("predictor_stream_skipped_total", "reason" => reason).increment(1);
}

impl Handler<Game> for GamesHandler {
    async fn handle(&mut self, batch: &[Record<Game>]) -> anyhow::Result<()> {
        // No model yet: fail, so the batch is retried (and not committed)
        // until the first model arrives.
        let Some(batcher) = self.engine.current() else {
            anyhow::bail!("no model loaded yet; holding the games stream");
        };
        let info = Arc::clone(batcher.info());
        let width = batcher.n_features();
        self.rows.clear();
        let mut games: Vec<&Game> = Vec::with_capacity(batch.len());
        for record in batch {
            let g = &record.value;
            // A finished game needs no forecast.
            if g.status == GameStatus::Final {
                skip("final");
                continue;
            }
            if let Some(set) = &info.feature_set
                && *set != g.feature_set
            {
                skip("feature_set");
                tracing::warn!(game_id = %g.game_id, game = %g.feature_set, model = %set, "feature set differs from the model's; skipping");
                continue;
            }
            if g.features.len() != width {
                skip("feature_count");
                tracing::warn!(game_id = %g.game_id, got = g.features.len(), want = width, "wrong feature count; skipping");
                continue;
            }
            self.rows.extend_from_slice(&g.features);
            games.push(g);
        }
        if games.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let probs = batcher.predict(rows, games.len()).await?;
        let now = Utc::now();
        let predictions: Vec<Prediction> = games
            .iter()
            .zip(&probs)
            .map(|(g, p)| Prediction {
                schema_version: SchemaVersion,
                game_id: g.game_id.clone(),
                sport: g.sport.clone(),
                league: g.league.clone(),
                home_team: g.home_team.clone(),
                away_team: g.away_team.clone(),
                scheduled_at: g.scheduled_at,
                model_version: info.version.clone(),
                home_win_prob: *p,
                predicted_at: now,
                event_produced_at: Some(g.produced_at),
            })
            .collect();
        // Three sinks, all idempotent, written concurrently; any failure
        // fails the batch, which is then retried whole.
        let timed = |sink: &'static str, started: std::time::Instant| {
            metrics::histogram!("predictor_stream_sink_seconds", "sink" => sink)
                .record(started.elapsed().as_secs_f64());
        };
        let (db, cache, kafka) = tokio::join!(
            async {
                let t = std::time::Instant::now();
                let r = self.db.upsert_predictions(&predictions).await;
                timed("postgres", t);
                r
            },
            async {
                let t = std::time::Instant::now();
                let r = self.cache.set_latest_predictions(&predictions).await;
                timed("redis", t);
                r
            },
            async {
                let t = std::time::Instant::now();
                let r = self.producer.publish_batch(&predictions).await;
                timed("kafka", t);
                r
            },
        );
        db?;
        cache?;
        kafka?;
        metrics::counter!("predictor_stream_predictions_total").increment(predictions.len() as u64);
        let event_age = metrics::histogram!("predictor_stream_event_age_seconds");
        for g in &games {
            let age = (now - g.produced_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            event_age.record(age.max(0.0));
        }
        Ok(())
    }
}
