//! The stream path: `games` in, `predictions` out.

use std::sync::Arc;

use chrono::Utc;
use fantasy_cache::Cache;
use fantasy_db::Db;
use fantasy_inference::{Engine, FEATURE_LIMIT};
use fantasy_kafka::{Handler, NotYet, Producer, Record};
use fantasy_messages::{Game, GameStatus, Prediction, SchemaVersion};
use fantasy_registry::Experiments;
use fantasy_registry::experiments::VariantPrediction;

use crate::experiment::{ExperimentState, Pick, Shadow, ShadowJob, count_served};

/// Predicts each batch of game events, then stores and announces the
/// predictions. The consumer commits the batch only after all three sinks
/// took it: Postgres (upsert), Redis (latest per game), Kafka (`predictions`).
///
/// A batch that failed in some sink is retried by the consumer with the
/// same records; the retry writes the predictions already made to the sinks
/// that failed only, so a Postgres or Redis hiccup does not announce them on
/// Kafka twice.
#[derive(Debug)]
pub struct GamesHandler {
    pub engine: Arc<Engine>,
    pub db: Db,
    pub cache: Cache,
    pub producer: Producer,
    experiments: Option<(Arc<ExperimentState>, Shadow, Experiments)>,
    pending: Option<Pending>,
}

/// A batch of records: its first and last positions (partition, offset)
/// and its length.
type BatchId = ((i32, i64), (i32, i64), usize);

/// A batch not all sinks took yet.
#[derive(Debug)]
struct Pending {
    batch: BatchId,
    predictions: Vec<Prediction>,
    /// In an experiment: the served variants' rows (Postgres sink).
    served: Vec<VariantPrediction>,
    /// Which sinks took it: Postgres, Redis, Kafka.
    done: [bool; 3],
}

fn batch_id(batch: &[Record<Game>]) -> Option<BatchId> {
    let (first, last) = (batch.first()?, batch.last()?);
    Some((
        (first.partition, first.offset),
        (last.partition, last.offset),
        batch.len(),
    ))
}

impl GamesHandler {
    pub fn new(engine: Arc<Engine>, db: Db, cache: Cache, producer: Producer) -> Self {
        Self {
            engine,
            db,
            cache,
            producer,
            experiments: None,
            pending: None,
        }
    }

    /// Serves the experiment in `state` (each game from its variant), and
    /// hands every game to the shadow worker for the other variants.
    pub fn with_experiments(mut self, state: Arc<ExperimentState>, shadow: Shadow) -> Self {
        self.experiments = Some((state, shadow, Experiments::new(self.db.clone())));
        self
    }
}

fn skip(reason: &'static str) {
    metrics::counter!("predictor_stream_skipped_total", "reason" => reason).increment(1);
}

impl Handler<Game> for GamesHandler {
    #[tracing::instrument(name = "predictor.stream_batch", skip_all, fields(games = batch.len()))]
    async fn handle(&mut self, batch: &[Record<Game>]) -> anyhow::Result<()> {
        let id = batch_id(batch);
        let pending = match self.pending.take() {
            Some(p) if Some(p.batch) == id => p,
            _ => match self.predict(batch).await? {
                Some((predictions, served)) => Pending {
                    batch: id.unwrap_or_default(),
                    predictions,
                    served,
                    done: [false; 3],
                },
                None => return Ok(()),
            },
        };
        self.store(pending).await
    }
}

impl GamesHandler {
    /// The predictions of `batch`'s games that need one, with the served
    /// variants' experiment rows (none: nothing to store).
    async fn predict(
        &mut self,
        batch: &[Record<Game>],
    ) -> anyhow::Result<Option<(Vec<Prediction>, Vec<VariantPrediction>)>> {
        // No model yet: fail, so the batch is retried (and not committed)
        // until the first model arrives.
        let Some(champion) = self.engine.current() else {
            return Err(NotYet("no model loaded yet".into()).into());
        };
        let info = Arc::clone(champion.info());
        let width = champion.n_features();
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
            if g.features.iter().any(|f| f.abs() > FEATURE_LIMIT) {
                skip("feature_range");
                tracing::warn!(game_id = %g.game_id, "a feature is beyond ±{FEATURE_LIMIT}; skipping");
                continue;
            }
            games.push(g);
        }
        if games.is_empty() {
            return Ok(None);
        }
        let live = self
            .experiments
            .as_ref()
            .and_then(|(state, _, _)| state.live());
        // Games by the model that answers them (one group outside an
        // experiment).
        let mut groups: Vec<(Pick, Vec<usize>, Vec<f32>)> = Vec::new();
        for (i, g) in games.iter().enumerate() {
            let pick = match &live {
                Some(l) => l.pick(Arc::clone(&champion), &g.game_id),
                None => Pick::alone(Arc::clone(&champion)),
            };
            let at = groups.iter().position(|x| x.0.variant == pick.variant);
            let at = at.unwrap_or_else(|| {
                groups.push((pick, Vec::new(), Vec::new()));
                groups.len() - 1
            });
            groups[at].1.push(i);
            groups[at].2.extend_from_slice(&g.features);
        }
        let answers = futures::future::try_join_all(groups.iter_mut().map(|(pick, idx, rows)| {
            let rows = std::mem::take(rows);
            async move { pick.batcher.predict(rows, idx.len()).await }
        }))
        .await?;
        let now = Utc::now();
        let mut predictions: Vec<Option<Prediction>> = games.iter().map(|_| None).collect();
        let mut served = Vec::new();
        let mut jobs = Vec::new();
        for ((pick, idx, _), probs) in groups.iter().zip(answers) {
            count_served(pick.variant.as_deref(), "stream", idx.len() as u64);
            let version = &pick.batcher.info().version;
            for (i, p) in idx.iter().zip(probs) {
                let g = games[*i];
                if let (Some(l), Some(variant)) = (&live, &pick.variant) {
                    served.push(VariantPrediction {
                        experiment_id: l.experiment.id,
                        game_id: g.game_id.clone(),
                        variant: variant.clone(),
                        model_version: version.clone(),
                        home_win_prob: p,
                        served: true,
                        predicted_at: now,
                    });
                    jobs.push((g.game_id.clone(), g.features.clone(), variant.clone()));
                }
                predictions[*i] = Some(Prediction {
                    schema_version: SchemaVersion,
                    game_id: g.game_id.clone(),
                    sport: g.sport.clone(),
                    league: g.league.clone(),
                    home_team: g.home_team.clone(),
                    away_team: g.away_team.clone(),
                    scheduled_at: g.scheduled_at,
                    model_version: version.clone(),
                    home_win_prob: p,
                    predicted_at: now,
                    event_produced_at: Some(g.produced_at),
                    variant: pick.public_variant(),
                });
            }
        }
        // The other variants score these games off the serving path.
        if let (Some(live), Some((_, shadow, _))) = (live, &self.experiments)
            && live.scoring()
            && !jobs.is_empty()
        {
            shadow.offer(ShadowJob::Stream {
                live,
                games: jobs,
                predicted_at: now,
            });
        }
        Ok(Some((predictions.into_iter().flatten().collect(), served)))
    }

    /// Writes the predictions to the sinks that did not take them yet.
    async fn store(&mut self, mut p: Pending) -> anyhow::Result<()> {
        let predictions = &p.predictions;
        let served = &p.served;
        let experiments = self.experiments.as_ref().map(|e| &e.2);
        // Three sinks, all idempotent, written concurrently; any failure
        // fails the batch, whose retry writes to the failed ones again.
        let timed = |sink: &'static str, started: std::time::Instant| {
            metrics::histogram!("predictor_stream_sink_seconds", "sink" => sink)
                .record(started.elapsed().as_secs_f64());
        };
        let done = p.done;
        let (db, cache, kafka) = tokio::join!(
            async {
                if done[0] {
                    return Ok(0);
                }
                let t = std::time::Instant::now();
                let mut r = self.db.upsert_predictions(predictions).await;
                if let (Ok(_), Some(store)) = (&r, experiments) {
                    r = store.upsert_predictions(served).await;
                }
                timed("postgres", t);
                r
            },
            async {
                if done[1] {
                    return Ok(());
                }
                let t = std::time::Instant::now();
                let r = self.cache.set_latest_predictions(predictions).await;
                timed("redis", t);
                r.map_err(anyhow::Error::from)
            },
            async {
                if done[2] {
                    return Ok(());
                }
                let t = std::time::Instant::now();
                let r = self.producer.publish_batch(predictions).await;
                timed("kafka", t);
                r.map_err(anyhow::Error::from)
            },
        );
        p.done = [
            done[0] || db.is_ok(),
            done[1] || cache.is_ok(),
            done[2] || kafka.is_ok(),
        ];
        if let Err(e) = db.map(|_| ()).and(cache).and(kafka) {
            self.pending = Some(p);
            return Err(e);
        }
        metrics::counter!("predictor_stream_predictions_total").increment(predictions.len() as u64);
        let event_age = metrics::histogram!("predictor_stream_event_age_seconds");
        let now = Utc::now();
        for produced in predictions.iter().filter_map(|p| p.event_produced_at) {
            let age = (now - produced).num_microseconds().unwrap_or(0) as f64 / 1e6;
            event_age.record(age.max(0.0));
        }
        Ok(())
    }
}
