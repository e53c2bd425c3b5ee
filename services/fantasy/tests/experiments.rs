//! Model experiments end to end (docs/experiments.md): the predictor and
//! the trainer as services on a broker and a database of the test's own,
//! models of known quality in the registry, and a simulated league's games
//! and results published round by round, as the collector would.
//!
//! - a better challenger in a 50/50 split is promoted by the sequential
//!   test, with no operator step; every game is served by one variant, the
//!   one its hash says, on the stream and over REST alike;
//! - a worse challenger in a canary is stopped while it serves its first
//!   share (1%), never stepped up;
//! - a shadow experiment changes nothing a client sees: every prediction
//!   is the champion's, while the shadow scores every game.
//!
//! Each test prints how many outcomes its decision needed, and the effect
//! the simulator's true probabilities say the test was looking for.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fantasy_features::{EloParams, FEATURE_NAMES, FEATURE_SET, N_FEATURES};
use fantasy_messages::{Game, GameStatus, Outcome, Prediction};
use fantasy_model::export::{ExportMeta, to_onnx};
use fantasy_model::{FitOptions, LogisticModel, sequential};
use fantasy_registry::experiments::Experiment;
use fantasy_registry::{ModelRecord, ModelStore, Registry};
use fantasy_sim::{Season, SimConfig};
use fantasy_testkit::{READY_WITHIN, Rig, Spawned, env_with, eventually, read_all, wait_caught_up};
use serde_json::{Value, json};
use trainer::sim::{replay, season_messages};

const WAIT: Duration = Duration::from_secs(60);

/// A simulated league: the first third of its games trains the models, the
/// rest is played live.
struct League {
    live: Vec<(Game, Outcome, f64)>,
    x_train: Vec<f32>,
    y_train: Vec<bool>,
}

fn league(seed: u64) -> League {
    let season = Season::simulate(&SimConfig {
        seed,
        teams: 20,
        games_per_team: 38 * 3,
        ..SimConfig::default()
    });
    let h = replay(&season, EloParams::default());
    let (games, outcomes) = season_messages(&season, EloParams::default());
    let split = games.len() / 3;
    let live = games
        .into_iter()
        .zip(outcomes)
        .zip(h.truth.iter().copied())
        .skip(split)
        .map(|((mut g, o), truth)| {
            g.status = GameStatus::Scheduled;
            (g, o, truth)
        })
        .collect();
    League {
        live,
        x_train: h.x[..split * N_FEATURES].to_vec(),
        y_train: h.y[..split].to_vec(),
    }
}

/// The fitted model, and the same one overconfident (its logits doubled):
/// a model of known, worse quality.
fn models(l: &League) -> (LogisticModel, LogisticModel) {
    let good =
        LogisticModel::fit(&l.x_train, &l.y_train, N_FEATURES, &FitOptions::default()).unwrap();
    let bad = scaled(&good, 2.0);
    (good, bad)
}

/// `m` with its logits scaled by `k`: bolder (`k` > 1) or timider.
fn scaled(m: &LogisticModel, k: f64) -> LogisticModel {
    let mut out = m.clone();
    for w in &mut out.weights {
        *w *= k;
    }
    out.intercept *= k;
    out
}

/// What a test runs on: a broker, a database, a model store, a trainer and
/// a predictor.
struct Harness {
    rig: Rig,
    _store: tempfile::TempDir,
    trainer: Spawned,
    predictor: Spawned,
    producer: fantasy_kafka::Producer,
}

impl Harness {
    /// Stores `models` (name, model) in the registry, the first active.
    async fn start(models: &[(&str, &LogisticModel)]) -> Self {
        Self::start_with(models, &[]).await
    }

    /// [`Harness::start`] with settings of the predictor's own.
    async fn start_with(models: &[(&str, &LogisticModel)], predictor_env: &[(&str, &str)]) -> Self {
        let store = tempfile::tempdir().unwrap();
        let store_url = format!("file://{}", store.path().display());
        let settings = [
            ("INFERENCE_DEVICE", "cpu"),
            ("MODEL_STORE_URL", store_url.as_str()),
            ("TRAIN_BOOTSTRAP", "false"),
            ("RETRAIN_EVERY_OUTCOMES", "0"),
            ("RETRAIN_ACCURACY_BELOW", "0"),
            ("RETRAIN_BRIER_ABOVE", "1"),
            ("RETRAIN_BRIER_RISE", "0"),
            ("SHUTDOWN_TIMEOUT", "5s"),
        ];
        let rig = Rig::start(1, 4, "experiments-test", &settings).await;
        let registry = Registry::new(rig.db.db.clone());
        let model_store = ModelStore::open(&store_url).unwrap();
        for (i, (version, m)) in models.iter().enumerate() {
            let bytes = to_onnx(
                m,
                &ExportMeta {
                    model_name: "win-prob".into(),
                    version: (*version).into(),
                    feature_set: FEATURE_SET.into(),
                    feature_names: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
                    trained_at: chrono::Utc::now().to_rfc3339(),
                    extra: vec![],
                },
            )
            .unwrap();
            let (uri, sha256) = model_store.put("win-prob", version, bytes).await.unwrap();
            registry
                .insert(&ModelRecord {
                    model_name: "win-prob".into(),
                    version: (*version).into(),
                    artifact_uri: uri,
                    sha256,
                    feature_set: FEATURE_SET.into(),
                    n_features: N_FEATURES as u32,
                    status: fantasy_messages::ModelStatus::Candidate,
                    metrics: fantasy_messages::TrainingMetrics {
                        n_train: 100,
                        n_holdout: 20,
                        log_loss: 0.6,
                        brier: 0.2,
                        accuracy: 0.6,
                    },
                    created_at: chrono::Utc::now(),
                    activated_at: None,
                })
                .await
                .unwrap();
            if i == 0 {
                registry.activate("win-prob", version).await.unwrap();
            }
        }
        let local = fantasy_config::Profile::Local;
        let cfg = trainer::Config::for_profile(&rig.env, local).unwrap();
        let mut trainer = fantasy_testkit::spawn(trainer::run, cfg).await;
        trainer.wait_ready(READY_WITHIN).await;
        let cfg =
            predictor::Config::for_profile(&env_with(&rig.env, predictor_env), local).unwrap();
        let mut predictor = fantasy_testkit::spawn(predictor::run, cfg).await;
        predictor.wait_ready(READY_WITHIN).await;
        let producer = rig.kafka.producer();
        Self {
            rig,
            _store: store,
            trainer,
            predictor,
            producer,
        }
    }

    async fn post(&self, app: &Spawned, path: &str, body: &Value) -> (u16, Value) {
        let r = app
            .http
            .post(app.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Starts an experiment; waits until the predictor serves it.
    async fn experiment(&self, plan: Value) -> i64 {
        let (status, body) = self.post(&self.trainer, "/v1/experiments", &plan).await;
        assert_eq!(status, 201, "{body}");
        let id = body["experiment"]["id"].as_i64().unwrap();
        eventually("the predictor serves the experiment", WAIT, || async {
            let v = self.predictor.get_json("/v1/experiment").await;
            if v["experiment"]["id"].as_i64() == Some(id) {
                Ok(())
            } else {
                Err(v)
            }
        })
        .await;
        id
    }

    /// The registry's active version.
    async fn active(&self) -> String {
        sqlx::query_scalar(
            "SELECT version FROM models WHERE model_name = 'win-prob' AND status = 'active'",
        )
        .fetch_one(self.rig.db.db.pool())
        .await
        .unwrap()
    }

    async fn show(&self, id: i64) -> Value {
        self.trainer
            .get_json(&format!("/v1/experiments/{id}"))
            .await
    }

    /// Publishes `round`'s games, waits until every variant scored them
    /// (served and shadow rows; `variants` of them per game while the
    /// experiment runs), then publishes the results and waits until the
    /// trainer has judged them.
    async fn play(&self, round: &[(Game, Outcome, f64)], variants: i64) {
        let now = chrono::Utc::now();
        let games: Vec<Game> = round
            .iter()
            .map(|(g, _, _)| Game {
                produced_at: now,
                source_updated_at: now,
                ..g.clone()
            })
            .collect();
        self.producer.publish_batch(&games).await.unwrap();
        let ids: Vec<String> = games.iter().map(|g| g.game_id.clone()).collect();
        let pool = self.rig.db.db.pool();
        eventually(
            "every game predicted and scored by every variant",
            WAIT,
            || async {
                let predicted: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM predictions WHERE game_id = ANY($1)")
                        .bind(&ids)
                        .fetch_one(pool)
                        .await
                        .unwrap();
                let short: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT game_id FROM experiment_predictions
                 WHERE game_id = ANY($1) GROUP BY game_id HAVING count(*) < $2) x",
                )
                .bind(&ids)
                .bind(variants)
                .fetch_one(pool)
                .await
                .unwrap();
                if predicted == ids.len() as i64 && short == 0 {
                    Ok(())
                } else {
                    Err((predicted, short))
                }
            },
        )
        .await;
        let outcomes: Vec<Outcome> = round.iter().map(|(_, o, _)| o.clone()).collect();
        self.producer.publish_batch(&outcomes).await.unwrap();
        wait_caught_up(
            &self.rig.kafka.config,
            "trainer.outcomes",
            &[fantasy_messages::Topic::Outcomes],
            WAIT,
        )
        .await;
    }

    /// Plays rounds of `size` until the experiment ends; returns its view
    /// and the games played.
    async fn play_until_decided(
        &self,
        id: i64,
        league: &League,
        size: usize,
        variants: i64,
    ) -> (Value, usize) {
        let mut played = 0;
        for round in league.live.chunks(size) {
            self.play(round, variants).await;
            played += round.len();
            let view = self.show(id).await;
            if view["experiment"]["status"] != "running" {
                return (view, played);
            }
        }
        panic!("no decision after {played} games: {}", self.show(id).await);
    }
}

/// The expected log-loss difference per game (challenger minus champion)
/// under the simulator's true probabilities, over `games`.
fn true_effect(
    games: &[(Game, Outcome, f64)],
    champion: &LogisticModel,
    challenger: &LogisticModel,
) -> f64 {
    let expected = |m: &LogisticModel, g: &Game, truth: f64| {
        let p = m.predict(&g.features);
        truth * sequential::loss(p, true) + (1.0 - truth) * sequential::loss(p, false)
    };
    games
        .iter()
        .map(|(g, _, t)| expected(challenger, g, *t) - expected(champion, g, *t))
        .sum::<f64>()
        / games.len() as f64
}

fn decision<'a>(view: &'a Value, action: &str) -> &'a Value {
    view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["action"] == action)
        .unwrap_or_else(|| panic!("no {action} decision: {view}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_better_challenger_in_a_split_is_promoted_and_every_game_keeps_its_variant() {
    let league = league(11);
    let (good, bad) = models(&league);
    let h = Harness::start(&[("v-bad", &bad), ("v-good", &good)]).await;
    let id = h
        .experiment(json!({
            "mode": "split",
            "challengers": [{"version": "v-good", "weight": 0.5}],
            "settings": {"min_outcomes": 100, "tuned_for": 300}
        }))
        .await;
    let experiment: Experiment =
        serde_json::from_value(h.show(id).await["experiment"].clone()).unwrap();

    let (view, played) = h.play_until_decided(id, &league, 30, 2).await;
    assert_eq!(view["experiment"]["status"], "promoted", "{view}");
    let promoted = decision(&view, "promote");
    assert_eq!(promoted["variant"], "challenger");
    assert_eq!(promoted["decided_by"], "trainer");
    let cmp = &promoted["evidence"]["comparisons"][0];
    let n = cmp["n"].as_u64().unwrap();
    assert!(cmp["interval"]["upper"].as_f64().unwrap() < 0.0, "{cmp}");
    let effect = true_effect(&league.live[..played], &bad, &good);
    println!(
        "split 50/50, better challenger: promoted after {n} paired outcomes ({played} games played); \
         measured log-loss difference {:.4} per game, the simulator's truth {effect:.4}",
        cmp["interval"]["mean"].as_f64().unwrap()
    );
    assert!(effect < 0.0);

    // The registry, and then the predictor, serve the challenger.
    let active = h.active().await;
    assert_eq!(active, "v-good");
    eventually(
        "the predictor serves the promoted version alone",
        WAIT,
        || async {
            let m = h.predictor.get_json("/v1/models/active").await;
            let e = h.predictor.get_json("/v1/experiment").await;
            if m["version"] == "v-good" && e["experiment"].is_null() {
                Ok(())
            } else {
                Err((m, e))
            }
        },
    )
    .await;

    // Each game was served by the variant its hash gives, by the version
    // of that variant, about half by each.
    let predictions: Vec<Prediction> = read_all(&h.rig.kafka.config).await;
    let mut by_variant = std::collections::HashMap::<String, usize>::new();
    for p in &predictions {
        let want = experiment.assign(&p.game_id).unwrap();
        assert_eq!(p.variant.as_deref(), Some(want.name.as_str()), "{p:?}");
        assert_eq!(p.model_version, want.version, "{p:?}");
        *by_variant.entry(want.name.clone()).or_default() += 1;
    }
    let share = by_variant["challenger"] as f64 / predictions.len() as f64;
    assert!((0.35..0.65).contains(&share), "{by_variant:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worse_canary_is_stopped_at_its_first_share() {
    let league = league(12);
    let (good, bad) = models(&league);
    let h = Harness::start(&[("v-good", &good), ("v-bad", &bad)]).await;
    let id = h
        .experiment(json!({
            "mode": "canary",
            "challengers": [{"version": "v-bad"}],
            "settings": {"min_outcomes": 100, "tuned_for": 300, "step_outcomes": 600}
        }))
        .await;
    // Stickiness over REST: a game named in a request is answered by the
    // variant that serves it on the stream.
    let features = league.live[0].0.features.clone();
    let experiment: Experiment =
        serde_json::from_value(h.show(id).await["experiment"].clone()).unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..400 {
        let game = format!("rest-{i}");
        let (status, body) = h
            .post(
                &h.predictor,
                "/v1/predict",
                &json!({"game_id": game, "features": features}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let want = experiment.assign(&game).unwrap();
        assert_eq!(body["variant"], want.name.as_str(), "{game}: {body}");
        assert_eq!(
            body["model_version"],
            want.version.as_str(),
            "{game}: {body}"
        );
        seen.insert(want.name.clone());
    }
    assert_eq!(
        seen.len(),
        2,
        "400 games at 1% reach the canary too: {seen:?}"
    );

    let (view, played) = h.play_until_decided(id, &league, 30, 2).await;
    assert_eq!(view["experiment"]["status"], "stopped", "{view}");
    let stop = decision(&view, "stop");
    assert!(stop["reason"].as_str().unwrap().contains("worse"), "{stop}");
    assert!(
        view["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["action"] != "step"),
        "the canary stepped up: {view}"
    );
    assert_eq!(view["experiment"]["stage"], 0);
    let n = stop["evidence"]["comparisons"][0]["n"].as_u64().unwrap();
    let served: i64 =
        sqlx::query_scalar("SELECT count(*) FROM predictions WHERE model_version = 'v-bad'")
            .fetch_one(h.rig.db.db.pool())
            .await
            .unwrap();
    // At 1%, the served share stays within binomial noise of it.
    let limit = played as f64 * 0.01 + 3.0 * (played as f64 * 0.01).sqrt() + 1.0;
    assert!(
        (served as f64) <= limit,
        "served {served} of {played} games"
    );
    let effect = true_effect(&league.live[..played], &good, &bad);
    println!(
        "canary, worse challenger: stopped after {n} paired outcomes ({played} games, {served} \
         served by it); the simulator's truth: {effect:+.4} log loss per game"
    );
    assert!(effect > 0.0);
    eventually("the predictor drops the experiment", WAIT, || async {
        let e = h.predictor.get_json("/v1/experiment").await;
        if e["experiment"].is_null() {
            Ok(())
        } else {
            Err(e)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shadow_changes_nothing_a_client_sees() {
    let league = league(13);
    let (good, _) = models(&league);
    // A shadow as good as the champion (its logits 2% bolder): the test
    // has nothing to decide on this many games.
    let twin = scaled(&good, 1.02);
    let h = Harness::start(&[("v-good", &good), ("v-shadow", &twin)]).await;
    let id = h
        .experiment(json!({
            "mode": "shadow",
            "shadows": [{"version": "v-shadow"}],
            "settings": {"min_outcomes": 100, "tuned_for": 300}
        }))
        .await;
    let rounds = &league.live[..180];
    for round in rounds.chunks(60) {
        h.play(round, 2).await;
    }
    // Every prediction a client could see is the champion's own answer,
    // with no variant: as without the experiment.
    let predictions: Vec<Prediction> = read_all(&h.rig.kafka.config).await;
    assert_eq!(predictions.len(), rounds.len());
    for p in &predictions {
        assert_eq!(p.model_version, "v-good", "{p:?}");
        assert_eq!(p.variant, None, "{p:?}");
        let game = &rounds.iter().find(|r| r.0.game_id == p.game_id).unwrap().0;
        let want = good.predict(&game.features);
        assert!(
            (f64::from(p.home_win_prob) - want).abs() < 1e-5,
            "{p:?} vs {want}"
        );
    }
    let (status, body) = h
        .post(
            &h.predictor,
            "/v1/predict",
            &json!({"game_id": rounds[0].0.game_id, "features": rounds[0].0.features}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["model_version"], "v-good");
    assert!(body.get("variant").is_none(), "{body}");
    // The shadow scored that request too, after the answer.
    eventually("the shadow scores REST requests", WAIT, || async {
        let text = h.predictor.get_text("/metrics").await;
        let scored = text.lines().any(|l| {
            l.starts_with("predictor_shadow_predictions_total")
                && l.contains("source=\"rest\"")
                && l.contains("variant=\"shadow\"")
        });
        if scored { Ok(()) } else { Err(text) }
    })
    .await;

    // The shadow scored every game, unserved; the champion never changed.
    let view = h.show(id).await;
    let exposure = view["exposure"].as_array().unwrap();
    let shadow = exposure.iter().find(|e| e["variant"] == "shadow").unwrap();
    assert_eq!(shadow["served"], 0, "{view}");
    assert_eq!(shadow["scored"], rounds.len() as i64, "{view}");
    let active = h.active().await;
    assert_eq!(active, "v-good");
    assert_eq!(view["experiment"]["status"], "running", "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_holds_steps_up_on_every_replica_and_a_paused_one_serves_the_champion() {
    let league = league(14);
    let (good, _) = models(&league);
    let twin = scaled(&good, 1.02);
    let h = Harness::start(&[("v-good", &good), ("v-twin", &twin)]).await;
    let id = h
        .experiment(json!({
            "mode": "canary",
            "challengers": [{"version": "v-twin"}],
            "settings": {"min_outcomes": 100, "tuned_for": 300, "step_outcomes": 60,
                         "canary_steps": [0.01, 0.2, 0.5]}
        }))
        .await;
    // A second replica: the two share the games stream, and each follows
    // the registry on its own.
    let cfg =
        predictor::Config::for_profile(&env_with(&h.rig.env, &[]), fantasy_config::Profile::Local)
            .unwrap();
    let mut second = fantasy_testkit::spawn(predictor::run, cfg).await;
    second.wait_ready(READY_WITHIN).await;
    let replicas = [&h.predictor, &second];
    let live = &league.live;
    for round in live[..120].chunks(30) {
        h.play(round, 2).await;
    }
    // 60 outcomes at 1%, 60 at 20%: now at 50%, no further step to take.
    let view = h.show(id).await;
    assert_eq!(view["experiment"]["status"], "running", "{view}");
    assert_eq!(view["experiment"]["stage"], 2, "{view}");
    let steps: Vec<&Value> = view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "step")
        .collect();
    assert_eq!(steps.len(), 2, "{view}");
    assert!(
        steps[0]["reason"].as_str().unwrap().contains("20% next"),
        "{view}"
    );
    // Every replica follows: both serve the new share, and answer a game
    // from the same variant.
    for p in replicas {
        eventually("each replica serves the canary at 50%", WAIT, || async {
            let e = p.get_json("/v1/experiment").await;
            let weight = e["experiment"]["variants"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == "challenger"))
                .and_then(|v| v["weight"].as_f64());
            if weight == Some(0.5) { Ok(()) } else { Err(e) }
        })
        .await;
    }
    let features = &live[0].0.features;
    for i in 0..20 {
        let body = json!({"game_id": format!("both-{i}"), "features": features});
        let (_, a) = h.post(&h.predictor, "/v1/predict", &body).await;
        let (_, b) = h.post(&second, "/v1/predict", &body).await;
        assert_eq!(a["variant"], b["variant"], "{a} {b}");
        assert_eq!(a["model_version"], b["model_version"], "{a} {b}");
    }

    // Paused: the champion serves every game, nothing else scores them.
    let (status, body) = h
        .post(
            &h.trainer,
            &format!("/v1/experiments/{id}/pause"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        "the predictor serves the experiment paused",
        WAIT,
        || async {
            let e = h.predictor.get_json("/v1/experiment").await;
            if e["experiment"]["status"] == "paused" {
                Ok(())
            } else {
                Err(e)
            }
        },
    )
    .await;
    let round = &live[120..150];
    h.play(round, 1).await;
    let ids: Vec<&str> = round.iter().map(|r| r.0.game_id.as_str()).collect();
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT variant, served FROM experiment_predictions WHERE game_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(h.rig.db.db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), round.len());
    assert!(
        rows.iter().all(|(v, served)| v == "champion" && *served),
        "{rows:?}"
    );
    let (status, _) = h
        .post(
            &h.trainer,
            &format!("/v1/experiments/{id}/pause"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "pausing a paused experiment");
    let (status, body) = h
        .post(
            &h.trainer,
            &format!("/v1/experiments/{id}/stop"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["experiment"]["status"], "stopped");
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_experiment_over_the_model_memory_limit_is_refused_and_the_champion_serves_alone() {
    let league = league(15);
    let (good, bad) = models(&league);
    // Each exported model is a few hundred bytes: 100 holds none.
    let h = Harness::start_with(
        &[("v-good", &good), ("v-bad", &bad)],
        &[("EXPERIMENT_MAX_MODEL_BYTES", "100")],
    )
    .await;
    let (status, body) = h
        .post(
            &h.trainer,
            "/v1/experiments",
            &json!({"mode": "split", "challengers": [{"version": "v-bad", "weight": 0.5}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let refused = eventually("the predictor refuses the experiment", WAIT, || async {
        let v = h.predictor.get_json("/v1/experiment").await;
        match v["refused"].as_str() {
            Some(why) => Ok(why.to_owned()),
            None => Err(v),
        }
    })
    .await;
    assert!(
        refused.contains("EXPERIMENT_MAX_MODEL_BYTES is 100"),
        "{refused}"
    );
    h.play(&league.live[..30], 0).await;
    let versions: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT model_version FROM predictions")
            .fetch_all(h.rig.db.db.pool())
            .await
            .unwrap();
    assert_eq!(versions, ["v-good"]);
}
