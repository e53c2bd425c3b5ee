//! What a model must look like to serve, and running it on rows.

use chrono::{DateTime, Utc};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::InferenceError;

/// How the chosen output holds the home-win probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// `[batch]` or `[batch, 1]`: the probability itself (torch-style sigmoid).
    Probability,
    /// `[batch, 2]`: class probabilities; column 1 is the home win
    /// (skl2onnx with zipmap off).
    TwoClass,
}

/// The shape of a servable model, read from the model itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub input: String,
    pub n_features: usize,
    pub output: String,
    pub kind: OutputKind,
    /// `feature_set` from the model's metadata, when present.
    pub feature_set: Option<String>,
    /// `version` from the model's metadata, when present.
    pub version: Option<String>,
}

/// A model being served, as `/v1/models/active` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// The registry version, else the model's `version` metadata, else the
    /// first 12 hex digits of its SHA-256.
    pub version: String,
    pub sha256: String,
    pub feature_set: Option<String>,
    pub n_features: usize,
    pub input: String,
    pub output: String,
    pub output_kind: OutputKind,
    /// Where it runs: `cpu`, `cuda` or `tensorrt`.
    pub device: String,
    /// Where it came from (a path or a registry URI).
    pub source: String,
    pub loaded_at: DateTime<Utc>,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn describe(t: &ValueType) -> String {
    t.to_string()
}

/// Reads the input and output of `session` and checks that it is a binary
/// classifier we can serve. `output` picks the output by name; otherwise the
/// one float output shaped `[N]`, `[N,1]` or `[N,2]` (preferring `[N,2]`
/// probabilities, as skl2onnx also emits an int64 label).
pub fn inspect(session: &Session, output: Option<&str>) -> Result<ModelSpec, InferenceError> {
    let bad = |m: String| Err(InferenceError::Model(m));
    let inputs = session.inputs();
    if inputs.len() != 1 {
        return bad(format!(
            "the model has {} inputs ({}); a servable model has exactly one float32 [batch, n_features] input",
            inputs.len(),
            inputs
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let input = &inputs[0];
    let n_features = match input.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if shape.len() == 2 && shape[1] > 0 && shape[0] != 0 => shape[1] as usize,
        other => {
            return bad(format!(
                "input `{}` is {}; a servable model takes float32 [batch, n_features] with a fixed n_features",
                input.name(),
                describe(other)
            ));
        }
    };

    let candidate = |t: &ValueType| -> Option<OutputKind> {
        match t {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } => match shape.len() {
                1 => Some(OutputKind::Probability),
                2 if shape[1] == 1 => Some(OutputKind::Probability),
                2 if shape[1] == 2 => Some(OutputKind::TwoClass),
                _ => None,
            },
            _ => None,
        }
    };
    let outputs = session.outputs();
    let listing = || {
        outputs
            .iter()
            .map(|o| format!("{}: {}", o.name(), describe(o.dtype())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (output_name, kind) = match output {
        Some(wanted) => {
            let Some(o) = outputs.iter().find(|o| o.name() == wanted) else {
                return bad(format!(
                    "MODEL_OUTPUT is `{wanted}` but the model's outputs are {}",
                    listing()
                ));
            };
            let Some(kind) = candidate(o.dtype()) else {
                return bad(format!(
                    "output `{wanted}` is {}; expected float32 [batch], [batch, 1] or [batch, 2]",
                    describe(o.dtype())
                ));
            };
            (wanted.to_owned(), kind)
        }
        None => {
            let mut found: Vec<(String, OutputKind)> = outputs
                .iter()
                .filter_map(|o| candidate(o.dtype()).map(|k| (o.name().to_owned(), k)))
                .collect();
            // Class probabilities beat a bare score when both are there.
            found.sort_by_key(|(_, k)| *k != OutputKind::TwoClass);
            match found.into_iter().next() {
                Some(f) => f,
                None => {
                    return bad(format!(
                        "no output is a probability (float32 [batch], [batch, 1] or [batch, 2]); outputs: {}",
                        listing()
                    ));
                }
            }
        }
    };
    let metadata = session.metadata().ok();
    let custom = |key: &str| {
        metadata
            .as_ref()
            .and_then(|m| m.custom(key))
            .filter(|v| !v.is_empty())
    };
    Ok(ModelSpec {
        input: input.name().to_owned(),
        n_features,
        output: output_name,
        kind,
        feature_set: custom("feature_set"),
        version: custom("version"),
    })
}

/// Runs `n_rows` rows (row-major in `rows`) and returns one home-win
/// probability per row. Fails if the output has the wrong size or holds a
/// value that is not a probability: a model that emits NaN must not answer.
pub fn run_rows(
    session: &mut Session,
    spec: &ModelSpec,
    rows: &[f32],
    n_rows: usize,
    out: &mut Vec<f32>,
) -> Result<(), String> {
    debug_assert_eq!(rows.len(), n_rows * spec.n_features);
    let tensor = TensorRef::from_array_view(([n_rows, spec.n_features], rows))
        .map_err(|e| format!("building the input tensor: {e}"))?;
    let outputs = session
        .run(ort::inputs![spec.input.as_str() => tensor])
        .map_err(|e| format!("ONNX Runtime: {e}"))?;
    let value = outputs
        .get(&spec.output)
        .ok_or_else(|| format!("the model produced no output `{}`", spec.output))?;
    let (_, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| format!("reading output `{}`: {e}", spec.output))?;
    let width = match spec.kind {
        OutputKind::Probability => 1,
        OutputKind::TwoClass => 2,
    };
    if data.len() != n_rows * width {
        return Err(format!(
            "output `{}` has {} values for {n_rows} rows; expected {}",
            spec.output,
            data.len(),
            n_rows * width
        ));
    }
    out.clear();
    out.extend(data.iter().skip(width - 1).step_by(width).copied());
    if let Some((row, p)) = out
        .iter()
        .enumerate()
        .find(|(_, p)| !(0.0..=1.0).contains(*p))
    {
        return Err(format!(
            "output `{}` is {p} for row {row}: not a probability",
            spec.output
        ));
    }
    Ok(())
}

/// Runs the probe rows as one batch and the first as a single row, so a
/// model whose batch dimension is not really dynamic, or whose answers are
/// not probabilities, fails here and not live.
pub fn probe(session: &mut Session, spec: &ModelSpec) -> Result<(), InferenceError> {
    let (rows, n) = probe_rows(spec.n_features);
    let mut out = Vec::new();
    run_rows(session, spec, &rows, n, &mut out)
        .and_then(|()| run_rows(session, spec, &rows[..spec.n_features], 1, &mut out))
        .map_err(|e| InferenceError::Model(format!("the model failed its probe run: {e}")))
}

/// Probe rows that check a model behaves before it serves: zeros, ones,
/// minus ones, and large values of both signs (where an unbounded score
/// leaves [0, 1]).
pub fn probe_rows(n_features: usize) -> (Vec<f32>, usize) {
    let patterns: [fn(usize) -> f32; 6] = [
        |_| 0.0,
        |_| 1.0,
        |_| -1.0,
        |i| if i % 2 == 0 { 3.0 } else { -3.0 },
        |_| 50.0,
        |_| -50.0,
    ];
    let mut rows = Vec::with_capacity(patterns.len() * n_features);
    for p in patterns {
        rows.extend((0..n_features).map(p));
    }
    (rows, patterns.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_lower_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
