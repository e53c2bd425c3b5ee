//! Model lifecycle: the registry at start-up, hot swaps, refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use fantasy_kafka::Producer;
use fantasy_messages::{ModelPublished, ModelStatus, TrainingMetrics};
use fantasy_registry::{ModelRecord, ModelStore, Registry};
use serde_json::json;

use fantasy_testkit::{Spawned, eventually};

use crate::support::{fixture, post_json, rig, spawn};

async fn register(reg: &Registry, store: &ModelStore, version: &str, file: &str) -> ModelRecord {
    let bytes = std::fs::read(fixture(file)).unwrap();
    let (uri, sha256) = store.put("win-prob", version, bytes).await.unwrap();
    let record = ModelRecord {
        model_name: "win-prob".into(),
        version: version.into(),
        artifact_uri: uri,
        sha256,
        feature_set: "fixture-v1".into(),
        n_features: 8,
        status: ModelStatus::Candidate,
        metrics: TrainingMetrics {
            n_train: 1,
            n_holdout: 1,
            log_loss: 0.6,
            brier: 0.2,
            accuracy: 0.6,
        },
        created_at: Utc::now(),
        activated_at: None,
    };
    reg.insert(&record).await.unwrap();
    record
}

async fn announce(producer: &Producer, reg: &Registry, version: &str) -> ModelPublished {
    let active = reg.activate("win-prob", version).await.unwrap();
    let msg = active.to_published();
    producer.publish(&msg).await.unwrap();
    msg
}

async fn version_of(app: &Spawned) -> Option<String> {
    app.get_json("/v1/models/active").await["version"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_under_load_fails_no_request_and_broken_models_are_refused() {
    let infra = rig().await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(&format!("file://{}", dir.path().display())).unwrap();
    let reg = Registry::new(infra.db.db.clone());
    register(&reg, &store, "v1", "mlp_torch.onnx").await;
    reg.activate("win-prob", "v1").await.unwrap();
    let app = Arc::new(spawn(&infra, &[("PREDICTOR_STREAM", "false")]).await);
    assert_eq!(version_of(&app).await.as_deref(), Some("v1"));

    // Continuous load from 8 clients, counting every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let seen_v2 = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (app, stop, failures, seen_v2) =
            (app.clone(), stop.clone(), failures.clone(), seen_v2.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = post_json(&app, "/v1/predict", &json!({"features": vec![0.5; 8]})).await;
                if r.status() != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let v: serde_json::Value = r.json().await.unwrap();
                if v["model_version"] == "v2" {
                    seen_v2.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        }));
    }

    let producer = infra.kafka.producer();
    register(&reg, &store, "v2", "logreg_skl.onnx").await;
    announce(&producer, &reg, "v2").await;
    eventually("v2 serving", Duration::from_secs(30), || async {
        version_of(&app).await.as_deref() == Some("v2")
    })
    .await;
    eventually(
        "clients answered by v2",
        Duration::from_secs(10),
        || async { seen_v2.load(Ordering::Relaxed) > 10 },
    )
    .await;

    // A model that fails validation (scores outside [0, 1]) is refused.
    // Refusals show nowhere but in the log and the process's recorder
    // (shared with whatever else runs in the process): the test reads how
    // far the counter moved from its own first reading.
    let rejected = |reason: &'static str| {
        let app = app.clone();
        async move {
            let text = app.get_text("/metrics").await;
            let series = format!(r#"predictor_model_rejected_total{{reason="{reason}"}} "#);
            text.lines()
                .find_map(|l| l.strip_prefix(&series)?.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    let (invalid, artifact) = (rejected("invalid").await, rejected("artifact").await);
    register(&reg, &store, "v3", "bad_logits.onnx").await;
    announce(&producer, &reg, "v3").await;
    eventually(
        "the invalid model refused",
        Duration::from_secs(30),
        || async { rejected("invalid").await == invalid + 1 },
    )
    .await;
    assert_eq!(version_of(&app).await.as_deref(), Some("v2"));
    // An artifact changed after registration is refused too.
    let v4 = register(&reg, &store, "v4", "prob_1d.onnx").await;
    let path = url::Url::parse(&v4.artifact_uri)
        .unwrap()
        .to_file_path()
        .unwrap();
    std::fs::write(&path, std::fs::read(fixture("mlp_torch.onnx")).unwrap()).unwrap();
    announce(&producer, &reg, "v4").await;
    eventually(
        "the tampered artifact refused",
        Duration::from_secs(30),
        || async { rejected("artifact").await == artifact + 1 },
    )
    .await;
    assert_eq!(version_of(&app).await.as_deref(), Some("v2"));

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the swaps"
    );
    assert!(total > 100, "only {total} requests ran");
    Arc::try_unwrap(app).ok().unwrap().stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_model_yet_it_answers_503_and_is_not_ready_then_serves_the_first_announced() {
    let infra = rig().await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(&format!("file://{}", dir.path().display())).unwrap();
    let reg = Registry::new(infra.db.db.clone());
    let app = spawn(&infra, &[("PREDICTOR_STREAM", "false")]).await;
    let r = post_json(&app, "/v1/predict", &json!({"features": vec![0.5; 8]})).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_model");
    assert_eq!(
        app.http
            .get(app.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    let producer = infra.kafka.producer();
    register(&reg, &store, "v1", "prob_1d.onnx").await;
    announce(&producer, &reg, "v1").await;
    eventually("the first model", Duration::from_secs(30), || async {
        version_of(&app).await.as_deref() == Some("v1")
    })
    .await;
    assert_eq!(
        post_json(&app, "/v1/predict", &json!({"features": vec![0.5; 8]}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_model_file_or_library_is_a_clear_start_up_error() {
    let env = fantasy_config::Env::from_pairs([("MODEL_PATH", "/no/such/model.onnx")]);
    let err = predictor::Config::for_profile(&env, fantasy_config::Profile::Local).unwrap_err();
    assert!(err.to_string().contains("MODEL_PATH"), "{err}");

    let env = fantasy_config::Env::default();
    let err = predictor::Config::from_env(&env).unwrap_err();
    assert!(err.to_string().contains("JWT_SECRET"), "{err}");
}
