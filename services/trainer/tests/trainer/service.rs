//! Evaluation, triggers, training, the gate, the registry and the API.

use std::time::Duration;

use fantasy_features::{FEATURE_NAMES, FEATURE_SET};
use fantasy_inference::{BatcherConfig, Runtime};
use fantasy_messages::testing;
use fantasy_messages::{ModelStatus, Prediction, Topic, TrainingMetrics};
use fantasy_model::LogisticModel;
use fantasy_model::export::{ExportMeta, to_onnx};
use fantasy_registry::{ModelRecord, ModelStore, Registry};
use serde_json::Value;

use fantasy_messages::{ModelMetrics, ModelPublished};
use fantasy_testkit::read_all;

use crate::support::{Infra, call, call_as, spawn, token};

const WAIT: Duration = Duration::from_secs(60);

fn prediction(game_id: &str, version: &str, prob: f32) -> Prediction {
    Prediction {
        model_version: version.into(),
        ..testing::prediction(game_id, prob)
    }
}

/// Latest stored scores of `version`: (count, accuracy, brier, log loss).
async fn stored_scores(infra: &Infra, version: &str) -> Option<(i64, f64, f64, f64)> {
    sqlx::query_as(
        "SELECT sample_count, accuracy, brier, log_loss FROM model_metrics
         WHERE model_version = $1 ORDER BY evaluated_at DESC LIMIT 1",
    )
    .bind(version)
    .fetch_optional(infra.db.db.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_are_exact_and_redelivery_bad_outcomes_change_nothing() {
    let infra = Infra::new().await;
    let games: Vec<_> = ["g1", "g2", "g3", "g4"].map(testing::game).into();
    infra.db.db.upsert_games(&games).await.unwrap();
    // Evaluations of a retired version, from long ago: purged past
    // METRICS_RETENTION, its latest kept.
    for days in [60, 50] {
        let mut old = testing::model_metrics("v-retired");
        old.evaluated_at = chrono::Utc::now() - chrono::Duration::days(days);
        infra.db.db.insert_model_metrics(&old).await.unwrap();
    }
    let app = spawn(
        &infra,
        &[("TRAIN_BOOTSTRAP", "false"), ("METRICS_RETENTION", "720h")],
    )
    .await;

    // p:    0.8 win, 0.3 loss, 0.6 loss, 0.5 win -> accuracy 3/4,
    // Brier (0.04 + 0.09 + 0.36 + 0.25) / 4 = 0.185,
    // log loss -(ln .8 + ln .7 + ln .4 + ln .5) / 4.
    let predictions = [
        prediction("g1", "v-eval", 0.8),
        prediction("g2", "v-eval", 0.3),
        prediction("g3", "v-eval", 0.6),
        prediction("g4", "v-eval", 0.5),
    ];
    let mut outcomes: Vec<_> = ["g1", "g2", "g3", "g4"].map(testing::outcome).into();
    for o in &mut outcomes[1..3] {
        (o.home_score, o.away_score, o.home_win) = (90, 100, false);
    }
    infra.publish(&predictions).await;
    infra.publish(&outcomes).await;
    let (count, accuracy, brier, log_loss) = infra
        .wait_for("scores of 4 games", WAIT, || async {
            stored_scores(&infra, "v-eval").await.filter(|s| s.0 == 4)
        })
        .await;
    // f32 probabilities on the wire: compare to float precision.
    let expected_ll = -(0.8f64.ln() + 0.7f64.ln() + 0.4f64.ln() + 0.5f64.ln()) / 4.0;
    assert_eq!(count, 4);
    assert!((accuracy - 0.75).abs() < 1e-9, "{accuracy}");
    assert!((brier - 0.185).abs() < 1e-6, "{brier}");
    assert!((log_loss - expected_ll).abs() < 1e-6, "{log_loss}");
    // Stored, then announced: every batch handled, the scores are on the
    // topic.
    infra.caught_up(Topic::Predictions).await;
    infra.caught_up(Topic::Outcomes).await;
    let announced = read_all::<ModelMetrics>(&infra.kafka.config).await;
    let last = announced
        .iter()
        .rev()
        .find(|m| m.model_version == "v-eval")
        .expect("scores on `metrics`");
    assert_eq!(last.count, 4);
    assert_eq!(last.window, 500);
    assert!(!last.calibration.is_empty());
    // The 60-day-old row is purged after the evaluation, the latest kept.
    let retired = infra
        .wait_for("old evaluations purged", WAIT, || async {
            let rows: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
                "SELECT evaluated_at FROM model_metrics WHERE model_version = 'v-retired'",
            )
            .fetch_all(infra.db.db.pool())
            .await
            .unwrap();
            (rows.len() == 1).then_some(rows)
        })
        .await;
    assert!(retired[0] > chrono::Utc::now() - chrono::Duration::days(51));

    // Everything again (a redelivery), a repeated outcome, and an outcome
    // for a game nobody knows.
    infra.publish(&predictions).await;
    infra.publish(&outcomes).await;
    infra
        .publish(&[testing::outcome("g1"), testing::outcome("ghost")])
        .await;
    // Once the trainer has handled them all: the repeats added no outcome,
    // the unknown game's is kept (the game may come later).
    infra.caught_up(Topic::Predictions).await;
    infra.caught_up(Topic::Outcomes).await;
    let outcomes: Vec<String> = sqlx::query_scalar("SELECT game_id FROM outcomes ORDER BY game_id")
        .fetch_all(infra.db.db.pool())
        .await
        .unwrap();
    assert_eq!(outcomes, ["g1", "g2", "g3", "g4", "ghost"]);
    let again = stored_scores(&infra, "v-eval").await.unwrap();
    assert_eq!(again.0, 4);
    assert!((again.1 - accuracy).abs() < 1e-12 && (again.2 - brier).abs() < 1e-12);
    assert!((again.3 - log_loss).abs() < 1e-12);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_model_is_bootstrapped_announced_and_loadable_and_a_tampered_one_refused() {
    let infra = Infra::new().await;
    infra.insert_history(11, 60).await;
    let app = spawn(&infra, &[]).await;
    let version = infra
        .wait_for("a bootstrapped model", WAIT, || infra.active())
        .await;

    let (status, body) = call(&app, "GET", &format!("/v1/models/{version}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["feature_set"], FEATURE_SET);
    assert!(body["metrics"]["n_holdout"].as_u64().unwrap() > 0);
    // The first version has nothing before it: the registry's refusal is a
    // 409 with its code, and the version stays active.
    let (status, refused) = call(&app, "POST", "/v1/rollback").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "nothing_to_roll_back");
    assert_eq!(infra.active().await.as_deref(), Some(version.as_str()));
    // The run is active in the registry before it is announced and its
    // row finished: wait for the row.
    let runs = infra
        .wait_for("the bootstrap run to finish", WAIT, || async {
            let (_, runs) = call(&app, "GET", "/v1/runs").await;
            (runs["runs"][0]["status"] != "running").then_some(runs)
        })
        .await;
    let run = &runs["runs"][0];
    assert_eq!(run["trigger"], "bootstrap");
    assert_eq!(run["status"], "promoted");
    assert!(
        run["details"]["report"]["export_max_diff"]
            .as_f64()
            .unwrap()
            < 1e-5
    );

    let announced = read_all::<ModelPublished>(&infra.kafka.config).await;
    let last = announced.last().expect("an announcement on `models`");
    assert_eq!(last.version, version);
    assert_eq!(last.status, ModelStatus::Active);
    assert_eq!(last.sha256, body["sha256"].as_str().unwrap());

    // The predictor's loader takes it from the registry and checks it.
    let runtime = Runtime::get(None).unwrap();
    let registry = Registry::new(infra.db.db.clone());
    let cfg = BatcherConfig::default();
    let batcher = predictor::models::from_registry(runtime, &registry, "win-prob", &cfg)
        .await
        .unwrap()
        .expect("an active model");
    assert_eq!(batcher.info().version, version);
    assert_eq!(batcher.n_features(), FEATURE_NAMES.len());
    drop(batcher);

    // One byte changed: refused on its checksum.
    let uri = body["artifact_uri"].as_str().unwrap();
    let path = url::Url::parse(uri).unwrap().to_file_path().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let last_byte = bytes.len() - 1;
    bytes[last_byte] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let Err(err) = predictor::models::from_registry(runtime, &registry, "win-prob", &cfg).await
    else {
        panic!("a tampered artifact was loaded");
    };
    assert!(err.to_string().contains("refusing"), "{err:#}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_in_accuracy_fires_one_retrain_and_the_cool_down_holds() {
    let infra = Infra::new().await;
    let (games, outcomes) = infra.insert_history(12, 60).await;
    let app = spawn(&infra, &[]).await;
    let v1 = infra
        .wait_for("a bootstrapped model", WAIT, || infra.active())
        .await;

    // The active version gets every game wrong: each batch re-scores it
    // under the threshold.
    let mut batches = games.chunks(100).zip(outcomes.chunks(100)).map(|(g, o)| {
        g.iter()
            .zip(o)
            .map(|(g, o)| Prediction {
                scheduled_at: g.scheduled_at,
                ..prediction(&g.game_id, &v1, if o.home_win { 0.1 } else { 0.9 })
            })
            .collect::<Vec<_>>()
    });
    infra.publish(&batches.next().unwrap()).await;
    let accuracy_runs = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM training_runs WHERE trigger = 'accuracy' AND status <> 'running'",
        )
        .fetch_one(infra.db.db.pool())
        .await
        .unwrap();
        n
    };
    infra
        .wait_for("the accuracy retrain", WAIT, || async {
            (accuracy_runs().await >= 1).then_some(())
        })
        .await;
    // Later drops within the cool-down are not trained on: each batch is
    // scored (the trainer's group has handled it), its drop asks for a
    // retrain, the cool-down holds it.
    for batch in batches.take(3) {
        infra.publish(&batch).await;
        infra.caught_up(Topic::Predictions).await;
    }
    // The training loop takes requests in order: once it has taken one
    // from the API (answered, or still running: 202), it has dealt with
    // those the drops made.
    let (status, report) = call(&app, "POST", "/v1/train").await;
    assert!(matches!(status, 200 | 202), "{status} {report}");
    assert_eq!(accuracy_runs().await, 1);
    // Same history, same model: not better by the margin, so rejected, and
    // the active version stays.
    let (_, runs) = call(&app, "GET", "/v1/runs").await;
    let run = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["trigger"] == "accuracy")
        .unwrap()
        .clone();
    assert_eq!(run["status"], "rejected", "{run}");
    let rejected = run["candidate_version"].as_str().unwrap();
    let (_, body) = call(&app, "GET", &format!("/v1/models/{rejected}")).await;
    assert_eq!(body["status"], "rejected");
    assert!(body["metrics"]["log_loss"].as_f64().unwrap() > 0.0);
    assert_eq!(infra.active().await.as_deref(), Some(v1.as_str()));
    app.stop().await.unwrap();
}

/// An active model that has everything backwards.
async fn install_bad_model(infra: &Infra) -> String {
    let model = LogisticModel {
        mean: vec![0.0; 8],
        scale: vec![1.0; 8],
        weights: vec![-20.0, -5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        intercept: 10.0,
    };
    let meta = ExportMeta {
        model_name: "win-prob".into(),
        version: "bad-1".into(),
        feature_set: FEATURE_SET.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        trained_at: chrono::Utc::now().to_rfc3339(),
        extra: vec![],
    };
    let store = ModelStore::open(&format!("file://{}", infra.store.path().display())).unwrap();
    let (uri, sha256) = store
        .put("win-prob", "bad-1", to_onnx(&model, &meta).unwrap())
        .await
        .unwrap();
    let registry = Registry::new(infra.db.db.clone());
    registry
        .insert(&ModelRecord {
            model_name: "win-prob".into(),
            version: "bad-1".into(),
            artifact_uri: uri,
            sha256,
            feature_set: FEATURE_SET.into(),
            n_features: 8,
            status: ModelStatus::Candidate,
            metrics: TrainingMetrics {
                n_train: 1,
                n_holdout: 1,
                log_loss: 1.0,
                brier: 0.5,
                accuracy: 0.1,
            },
            created_at: chrono::Utc::now(),
            activated_at: None,
        })
        .await
        .unwrap();
    registry.activate("win-prob", "bad-1").await.unwrap();
    "bad-1".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_better_candidate_is_promoted_rollback_restores_and_the_api_wants_an_admin() {
    let infra = Infra::new().await;
    infra.insert_history(13, 60).await;
    // History rows with NaN features: counted and left out.
    sqlx::query(
        "UPDATE games SET features[4] = 'NaN'
         WHERE game_id IN (SELECT game_id FROM games ORDER BY game_id LIMIT 10)",
    )
    .execute(infra.db.db.pool())
    .await
    .unwrap();
    let bad = install_bad_model(&infra).await;
    let app = spawn(&infra, &[("TRAIN_BOOTSTRAP", "false")]).await;

    assert_eq!(call_as(&app, "POST", "/v1/train", None).await.0, 401);
    let (status, body) = call_as(&app, "POST", "/v1/train", Some(&token(false))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        call_as(&app, "GET", "/v1/models", Some(&token(false)))
            .await
            .0,
        403
    );

    let (status, report) = call(&app, "POST", "/v1/train").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["decision"], "promoted");
    assert_eq!(report["skipped_rows"], 10);
    assert_eq!(report["active"]["version"], bad.as_str());
    let active_ll = report["active"]["scores"]["log_loss"].as_f64().unwrap();
    let candidate_ll = report["candidate"]["log_loss"].as_f64().unwrap();
    assert!(candidate_ll < active_ll, "{report}");
    let new = report["version"].as_str().unwrap().to_owned();
    assert_eq!(infra.active().await.as_deref(), Some(new.as_str()));
    let announced = read_all::<ModelPublished>(&infra.kafka.config).await;
    assert_eq!(announced.last().unwrap().version, new);

    // Roll back: the bad one serves again, announced.
    let (status, body) = call(&app, "POST", "/v1/rollback").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], bad.as_str());
    assert_eq!(infra.active().await.as_deref(), Some(bad.as_str()));
    let announced = read_all::<ModelPublished>(&infra.kafka.config).await;
    assert_eq!(announced.last().unwrap().version, bad);

    // And forward again by hand.
    let (status, body) = call(&app, "POST", &format!("/v1/models/{new}/promote")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(infra.active().await.as_deref(), Some(new.as_str()));
    let (_, list) = call(&app, "GET", "/v1/models").await;
    let statuses: Vec<(Value, Value)> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["version"].clone(), m["status"].clone()))
        .collect();
    assert!(statuses.contains(&(Value::from(new.as_str()), Value::from("active"))));
    assert!(statuses.contains(&(Value::from(bad.as_str()), Value::from("retired"))));
    // The info gauge says which one is active now: 1 for it alone.
    let m = app.get_text("/metrics").await;
    let info = |version: &str| {
        m.lines()
            .find(|l| {
                l.starts_with("trainer_active_model_info{")
                    && l.contains(&format!("version=\"{version}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(info(&new).as_deref(), Some("1"), "{m}");
    assert_eq!(info(&bad).as_deref(), Some("0"), "{m}");
    assert_eq!(call(&app, "POST", "/v1/models/nope/promote").await.0, 404);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enough_new_outcomes_fire_a_retrain_and_repeats_do_not_count() {
    let infra = Infra::new().await;
    infra.insert_history(14, 60).await;
    let app = spawn(
        &infra,
        &[("RETRAIN_EVERY_OUTCOMES", "50"), ("RETRAIN_COOLDOWN", "0s")],
    )
    .await;
    infra
        .wait_for("a bootstrapped model", WAIT, || infra.active())
        .await;
    let outcome_runs = || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM training_runs WHERE trigger = 'outcomes'")
                .fetch_one(infra.db.db.pool())
                .await
                .unwrap();
        n
    };
    // 40 new results, then the same 40 again: 40 new in all, no retrain.
    let first: Vec<_> = (0..40)
        .map(|i| testing::outcome(&format!("late-{i}")))
        .collect();
    infra.publish(&first).await;
    infra.publish(&first).await;
    // Handled, all 80: 40 new so far.
    infra.caught_up(Topic::Outcomes).await;
    assert_eq!(outcome_runs().await, 0);
    // Ten more make 50: one retrain.
    let more: Vec<_> = (40..50)
        .map(|i| testing::outcome(&format!("late-{i}")))
        .collect();
    infra.publish(&more).await;
    infra
        .wait_for("the retrain on 50 outcomes", WAIT, || async {
            (outcome_runs().await == 1).then_some(())
        })
        .await;
    // It is the first, and it counted 50: the repeats did not count (they
    // would have made 80 before the last ten came, and fired then).
    let detail: serde_json::Value = sqlx::query_scalar(
        "SELECT details->'detail' FROM training_runs WHERE trigger = 'outcomes'",
    )
    .fetch_one(infra.db.db.pool())
    .await
    .unwrap();
    assert_eq!(detail, "50 new outcomes");
    app.stop().await.unwrap();
}

/// A run that outlasts nine tenths of `REQUEST_TIMEOUT` is answered 202
/// while it goes on (not with the timeout's 503, which reads as a failure),
/// and ends on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_longer_than_the_request_timeout_is_answered_202_and_goes_on() {
    let infra = Infra::new().await;
    infra.insert_history(15, 60).await;
    let app = spawn(
        &infra,
        &[("TRAIN_BOOTSTRAP", "false"), ("REQUEST_TIMEOUT", "1s")],
    )
    .await;
    // Hold the run at its first write: its row in training_runs waits for
    // this lock (reads do not).
    let pool = infra.db.db.pool();
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE training_runs IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    let (status, body) = call(&app, "POST", "/v1/train").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "running");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // Still running: a second request is refused, and the runs read fine.
    assert_eq!(call(&app, "POST", "/v1/train").await.0, 409);
    assert_eq!(call(&app, "GET", "/v1/runs").await.0, 200);
    lock.commit().await.unwrap();

    let ended = infra
        .wait_for("the run to end", WAIT, || async {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM training_runs WHERE trigger = 'api' ORDER BY id DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await
            .unwrap();
            status.filter(|s| s != "running")
        })
        .await;
    // No model was active: the first candidate is promoted.
    assert_eq!(ended, "promoted");
    assert!(infra.active().await.is_some());
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_training_answers_500_without_its_cause_and_records_it() {
    let infra = Infra::new().await;
    infra.insert_history(15, 60).await;
    let app = spawn(&infra, &[("TRAIN_BOOTSTRAP", "false")]).await;
    // The model store's directory becomes a file: storing the artifact
    // fails (as root too) after the model is trained.
    let store = infra.store.path().to_owned();
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::write(&store, b"not a directory").unwrap();

    let (status, body) = call(&app, "POST", "/v1/train").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "training_failed");
    let message = body["error"]["message"].as_str().unwrap();
    let store_name = store.file_name().unwrap().to_str().unwrap();
    assert!(
        !message.contains(store_name) && !message.to_lowercase().contains("directory"),
        "the cause leaked to the client: {message}"
    );
    // The operator finds it in the run's row (and the log).
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM training_runs WHERE trigger = 'api' AND status = 'failed'",
    )
    .fetch_one(infra.db.db.pool())
    .await
    .unwrap();
    assert!(
        details["error"].as_str().unwrap().contains(store_name),
        "{details}"
    );
    app.stop().await.unwrap();
}
