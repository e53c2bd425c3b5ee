//! The predictor's rig: fixture models, and instances on the kit's broker, a
//! database and a Redis prefix of the test's own.

use std::path::PathBuf;

use fantasy_testkit::{READY_WITHIN, Rig, Spawned, env_with};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../libs/inference/fixtures")
        .join(name)
}

/// Inputs and ONNX Runtime's own outputs for the fixture models.
pub struct Expected {
    pub inputs: Vec<Vec<f32>>,
    pub probs: Vec<f64>,
}

pub fn expected(model: &str) -> Expected {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    Expected {
        inputs: serde_json::from_value(v["inputs"].clone()).unwrap(),
        probs: serde_json::from_value(v["models"][model].clone()).unwrap(),
    }
}

/// The parts a test shares with the predictors it starts.
pub type Infra = Rig;

/// A broker of three (eight partitions a topic), a database and a Redis
/// prefix of the test's own.
pub async fn rig() -> Infra {
    let settings = [("INFERENCE_DEVICE", "cpu"), ("SHUTDOWN_TIMEOUT", "5s")];
    Rig::start(3, 8, "predictor-test", &settings).await
}

/// Starts the predictor with the infra's settings plus `extra`, and waits
/// until it answers `/health` (with no model yet it is not ready).
pub async fn spawn(infra: &Infra, extra: &[(&str, &str)]) -> Spawned {
    let cfg = predictor::Config::for_profile(
        &env_with(&infra.env, extra),
        fantasy_config::Profile::Local,
    )
    .unwrap();
    let mut app = fantasy_testkit::spawn(predictor::run, cfg).await;
    app.wait_ok("/health", READY_WITHIN).await;
    app
}

/// `POST path` with a JSON body.
pub async fn post_json(app: &Spawned, path: &str, body: &serde_json::Value) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}
