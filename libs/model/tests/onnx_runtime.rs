//! The exported graph, run by ONNX Runtime (the library the predictor
//! serves with), gives the trainer's own probabilities.

use fantasy_inference::{Runtime, Scorer};
use fantasy_model::export::{ExportMeta, OUTPUT, to_onnx};
use fantasy_model::{FitOptions, LogisticModel};
use proptest::prelude::*;

fn runtime() -> &'static Runtime {
    Runtime::get(None).expect("ONNX Runtime (run scripts/setup.sh)")
}

fn meta(n: usize) -> ExportMeta {
    ExportMeta {
        model_name: "home-win".into(),
        version: "test-1".into(),
        feature_set: "test-v1".into(),
        feature_names: (0..n).map(|i| format!("f{i}")).collect(),
        trained_at: "2026-11-23T00:00:00Z".into(),
        extra: vec![],
    }
}

/// Rows in a wide range, labels from a fixed rule with noise: enough for a
/// fit with weights of both signs.
fn data(rows: usize, n: usize) -> (Vec<f32>, Vec<bool>) {
    let mut x = Vec::with_capacity(rows * n);
    let mut y = Vec::with_capacity(rows);
    for r in 0..rows {
        let row: Vec<f32> = (0..n)
            .map(|j| (((r * 31 + j * 17) % 97) as f32 / 97.0 - 0.5) * (j as f32 + 1.0) * 3.0)
            .collect();
        let s: f32 = row
            .iter()
            .enumerate()
            .map(|(j, v)| if j % 2 == 0 { *v } else { -*v })
            .sum();
        y.push(s + ((r * 7919) % 13) as f32 / 6.0 - 1.0 > 0.0);
        x.extend(row);
    }
    (x, y)
}

#[test]
fn a_fitted_model_exports_to_the_same_probabilities() {
    let n = 8;
    let (x, y) = data(5_000, n);
    let model = LogisticModel::fit(&x, &y, n, &FitOptions::default()).expect("fits");
    let bytes = to_onnx(&model, &meta(n)).expect("exports");
    let mut scorer = Scorer::new(runtime(), &bytes).expect("ONNX Runtime loads the export");
    assert_eq!(scorer.spec().n_features, n);
    assert_eq!(scorer.spec().output, OUTPUT);
    assert_eq!(scorer.spec().feature_set.as_deref(), Some("test-v1"));
    assert_eq!(scorer.spec().version.as_deref(), Some("test-1"));
    let onnx = scorer.predict(&x).expect("runs");
    let ours = model.predict_all(&x);
    assert_eq!(onnx.len(), ours.len());
    let worst = onnx
        .iter()
        .zip(&ours)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "largest difference {worst}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any finite parameters, any rows in a wide range: equal within 1e-5.
    #[test]
    fn any_parameters_export_faithfully(
        params in prop::collection::vec((-3.0f64..3.0, 0.1f64..5.0, -2.0f64..2.0), 1..12),
        intercept in -2.0f64..2.0,
        rows in prop::collection::vec(-10.0f32..10.0, 12 * 16),
    ) {
        let n = params.len();
        let model = LogisticModel {
            mean: params.iter().map(|p| p.0).collect(),
            scale: params.iter().map(|p| p.1).collect(),
            weights: params.iter().map(|p| p.2).collect(),
            intercept,
        };
        let bytes = to_onnx(&model, &meta(n)).expect("exports");
        let mut scorer = Scorer::new(runtime(), &bytes).expect("loads");
        let x = &rows[..(rows.len() / n) * n];
        let onnx = scorer.predict(x).expect("runs");
        for (a, b) in onnx.iter().zip(model.predict_all(x)) {
            prop_assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

/// The reference checker of the `onnx` package (full check, with shape
/// inference) accepts the export; scripts/setup.sh puts it in .tools/python.
#[test]
fn the_onnx_checker_accepts_the_export() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let site = root.join(".tools/python");
    assert!(
        site.join("onnx").is_dir(),
        "the onnx package is missing from {}: run scripts/setup.sh",
        site.display()
    );
    let n = 8;
    let (x, y) = data(2_000, n);
    let model = LogisticModel::fit(&x, &y, n, &FitOptions::default()).expect("fits");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, to_onnx(&model, &meta(n)).expect("exports")).expect("written");
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", &site)
        .arg("-c")
        .arg(
            "import sys, onnx\n\
             m = onnx.load(sys.argv[1])\n\
             onnx.checker.check_model(m, full_check=True)\n\
             out = onnx.shape_inference.infer_shapes(m, strict_mode=True).graph.output[0]\n\
             print(out.name, [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim])",
        )
        .arg(&path)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "onnx.checker refused the export: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "home_win_prob ['batch', 1]");
}
