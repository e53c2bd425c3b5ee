//! Real ONNX Runtime (the library `scripts/setup.sh` fetches) on the fixture
//! models of `fixtures/` (made by `fixtures/generate.py`).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fantasy_inference::{
    Batcher, BatcherConfig, Device, Engine, InferenceError, OutputKind, PredictError, Runtime,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn runtime() -> &'static Runtime {
    Runtime::get(None).expect("ONNX Runtime: run scripts/setup.sh")
}

fn cpu() -> BatcherConfig {
    BatcherConfig {
        device: Device::Cpu,
        ..BatcherConfig::default()
    }
}

fn load(name: &str, cfg: &BatcherConfig) -> Result<Batcher, InferenceError> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    Batcher::load(runtime(), &bytes, name, None, cfg)
}

struct Expected {
    inputs: Vec<Vec<f32>>,
    models: serde_json::Map<String, serde_json::Value>,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    Expected {
        inputs: serde_json::from_value(v["inputs"].clone()).unwrap(),
        models: v["models"].as_object().unwrap().clone(),
    }
}

const SERVABLE: [&str; 3] = ["logreg_skl.onnx", "mlp_torch.onnx", "prob_1d.onnx"];

#[tokio::test]
async fn every_servable_fixture_matches_onnx_runtime_within_1e_5_single_and_batched() {
    let expected = expected();
    for name in SERVABLE {
        let batcher = load(name, &cpu()).unwrap();
        let want: Vec<f64> = expected.models[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        // All rows in one request.
        let flat: Vec<f32> = expected.inputs.iter().flatten().copied().collect();
        let got = batcher.predict(flat, expected.inputs.len()).await.unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5,
                "{name} row {i}: {g} vs {w}"
            );
        }
        // One row per request, all at once, so the batcher mixes them.
        let answers = futures::future::join_all(
            expected
                .inputs
                .iter()
                .map(|row| batcher.predict(row.clone(), 1)),
        )
        .await;
        for (i, (a, w)) in answers.into_iter().zip(&want).enumerate() {
            let g = a.unwrap()[0];
            assert!(
                (f64::from(g) - w).abs() <= 1e-5,
                "{name} single row {i}: {g} vs {w}"
            );
        }
    }
}

#[tokio::test]
async fn models_are_read_from_their_own_shape_and_metadata() {
    let skl = load("logreg_skl.onnx", &cpu()).unwrap();
    let info = skl.info();
    assert_eq!(info.n_features, 8);
    assert_eq!(info.output, "probabilities");
    assert_eq!(info.output_kind, OutputKind::TwoClass);
    assert_eq!(info.feature_set.as_deref(), Some("fixture-v1"));
    assert_eq!(info.version, "skl-1");
    assert_eq!(info.device, "cpu");
    assert_eq!(info.sha256.len(), 64);

    let torch = load("mlp_torch.onnx", &cpu()).unwrap();
    assert_eq!(torch.info().output, "output");
    assert_eq!(torch.info().output_kind, OutputKind::Probability);

    // An output named explicitly wins; a wrong name is refused.
    let named = BatcherConfig {
        output: Some("nope".into()),
        ..cpu()
    };
    let err = load("logreg_skl.onnx", &named).unwrap_err().to_string();
    assert!(
        err.contains("MODEL_OUTPUT") && err.contains("probabilities"),
        "{err}"
    );
}

#[tokio::test]
async fn models_that_do_not_fit_are_refused_with_the_reason() {
    for (name, needle) in [
        ("bad_int_input.onnx", "float32 [batch, n_features]"),
        ("bad_3class.onnx", "no output is a probability"),
        ("bad_two_inputs.onnx", "2 inputs"),
        ("bad_logits.onnx", "not a probability"),
        ("not_a_model.onnx", "cannot load the model"),
    ] {
        let err = load(name, &cpu()).unwrap_err();
        assert!(matches!(err, InferenceError::Model(_)), "{name}: {err:?}");
        assert!(err.to_string().contains(needle), "{name}: {err}");
    }
}

#[tokio::test]
async fn bad_rows_are_refused_before_they_queue() {
    let b = load("mlp_torch.onnx", &cpu()).unwrap();
    assert_eq!(
        b.predict(vec![0.0; 7], 1).await,
        Err(PredictError::FeatureCount {
            expected: 8,
            got: 7
        })
    );
    let mut row = vec![0.5; 16];
    row[11] = f32::NAN;
    match b.predict(row, 2).await {
        Err(PredictError::NonFinite { row: 1, col: 3, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.predict(vec![f32::INFINITY; 8], 1).await,
        Err(PredictError::NonFinite { row: 0, col: 0, .. })
    ));
}

#[test]
fn the_cuda_path_fails_clearly_without_cuda_and_auto_falls_back() {
    let rt = runtime();
    let bytes = std::fs::read(fixture("mlp_torch.onnx")).unwrap();
    if rt.has_cuda() {
        // On a GPU build the CUDA path is exercised by the device checks.
        return;
    }
    for device in [Device::Cuda, Device::TensorRt] {
        let err = rt.session(&bytes, device, 1).map(|_| ()).unwrap_err();
        assert!(matches!(err, InferenceError::Device(_)), "{err:?}");
        assert!(err.to_string().contains("without"), "{err}");
    }
    let (_, used) = rt.session(&bytes, Device::Auto, 1).unwrap();
    assert_eq!(used, Device::Cpu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_serves_the_rest_correctly() {
    let cfg = BatcherConfig {
        queue_capacity: 4,
        max_batch: 2,
        ..cpu()
    };
    let b = Arc::new(load("mlp_torch.onnx", &cfg).unwrap());
    let expected = expected();
    let want = expected.models["mlp_torch.onnx"]
        .as_array()
        .unwrap()
        .clone();
    let mut tasks = Vec::new();
    for i in 0..5000 {
        let b = Arc::clone(&b);
        let row = expected.inputs[i % 64].clone();
        tasks.push(tokio::spawn(
            async move { (i % 64, b.predict(row, 1).await) },
        ));
    }
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match r {
            Ok(p) => {
                ok += 1;
                assert!((f64::from(p[0]) - want[i].as_f64().unwrap()).abs() <= 1e-5);
            }
            Err(PredictError::Overloaded) => shed += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(ok > 0 && shed > 0, "ok {ok}, shed {shed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_under_load_fails_no_request_and_changes_the_version() {
    let engine = Arc::new(Engine::new(load("mlp_torch.onnx", &cpu()).unwrap()));
    let stop = Arc::new(AtomicBool::new(false));
    let served_new = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (engine, stop, served_new) = (engine.clone(), stop.clone(), served_new.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (p, info) = engine
                    .predict(vec![0.1 * c as f32; 8], 1)
                    .await
                    .expect("no request fails");
                assert!((0.0..=1.0).contains(&p[0]));
                if info.version == "skl-1" {
                    served_new.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let old = engine
        .swap(load("logreg_skl.onnx", &cpu()).unwrap())
        .unwrap();
    assert_eq!(old.info().version, "torch-1");
    drop(old);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert!(total > 100, "only {total} requests ran");
    assert!(served_new.load(Ordering::Relaxed) > 0);
    assert_eq!(engine.info().unwrap().version, "skl-1");
}

#[tokio::test]
async fn an_empty_engine_says_so() {
    let engine = Engine::empty();
    assert_eq!(
        engine.predict(vec![0.0; 8], 1).await.unwrap_err(),
        PredictError::NoModel
    );
}
