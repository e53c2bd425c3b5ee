//! A [`LogisticModel`] as an ONNX graph.
//!
//! ```text
//! features [N, n] ─Sub(mean)─Div(scale)─MatMul(weights [n,1])─Add(bias)─Sigmoid─> home_win_prob [N, 1]
//! ```
//!
//! Opset 17, IR version 8: what ONNX Runtime 1.14 and later load. The
//! model's metadata carries `feature_set`, `feature_names` (comma-separated,
//! in input order), `version`, `trained_at` and whatever else the trainer
//! adds (its training metrics).

use prost::Message as _;

use crate::LogisticModel;
use crate::proto::tensor_proto::DataType;
use crate::proto::tensor_shape_proto::{Dimension, dimension};
use crate::proto::type_proto::{self, Tensor};
use crate::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The graph's input: `[batch, n_features]` float32.
pub const INPUT: &str = "features";
/// The graph's output: `[batch, 1]` float32 home-win probabilities.
pub const OUTPUT: &str = "home_win_prob";
pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;

/// What the artifact says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportMeta {
    pub model_name: String,
    pub version: String,
    pub feature_set: String,
    pub feature_names: Vec<String>,
    /// RFC 3339.
    pub trained_at: String,
    /// More `metadata_props` (e.g. training metrics as JSON).
    pub extra: Vec<(String, String)>,
}

/// Why a model could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the model has {model} features but {names} feature names were given")]
    Names { model: usize, names: usize },
    #[error("the model has no features")]
    Empty,
    #[error("parameter {0} is not finite")]
    NotFinite(&'static str),
}

fn tensor(name: &str, dims: &[i64], values: impl IntoIterator<Item = f64>) -> TensorProto {
    TensorProto {
        name: Some(name.to_owned()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: values.into_iter().map(|v| v as f32).collect(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: Some(op.to_owned()),
        name: Some(format!("{op}_{output}")),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        ..Default::default()
    }
}

fn float_value(name: &str, dims: [Dimension; 2]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim: dims.into() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn dim_param(name: &str) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimParam(name.to_owned())),
        ..Default::default()
    }
}

fn dim_value(v: i64) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimValue(v)),
        ..Default::default()
    }
}

fn entry(key: &str, value: impl Into<String>) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.to_owned()),
        value: Some(value.into()),
    }
}

/// The ONNX graph of `model`, serialised.
pub fn to_onnx(model: &LogisticModel, meta: &ExportMeta) -> Result<Vec<u8>, ExportError> {
    Ok(to_proto(model, meta)?.encode_to_vec())
}

/// The ONNX graph of `model`.
pub fn to_proto(model: &LogisticModel, meta: &ExportMeta) -> Result<ModelProto, ExportError> {
    let n = model.n_features();
    if n == 0 {
        return Err(ExportError::Empty);
    }
    if meta.feature_names.len() != n {
        return Err(ExportError::Names {
            model: n,
            names: meta.feature_names.len(),
        });
    }
    for (name, values) in [
        ("mean", &model.mean),
        ("scale", &model.scale),
        ("weights", &model.weights),
    ] {
        if values.len() != n || values.iter().any(|v| !v.is_finite()) {
            return Err(ExportError::NotFinite(name));
        }
    }
    if !model.intercept.is_finite() {
        return Err(ExportError::NotFinite("intercept"));
    }
    let n_i64 = n as i64;
    let graph = GraphProto {
        name: Some(format!("{}-{}", meta.model_name, meta.version)),
        doc_string: Some(
            "Logistic regression on standardised features: \
             sigmoid(((features - mean) / scale) @ weights + bias)"
                .to_owned(),
        ),
        node: vec![
            node("Sub", &[INPUT, "mean"], "centred"),
            node("Div", &["centred", "scale"], "standardised"),
            node("MatMul", &["standardised", "weights"], "logit_linear"),
            node("Add", &["logit_linear", "bias"], "logit"),
            node("Sigmoid", &["logit"], OUTPUT),
        ],
        initializer: vec![
            tensor("mean", &[n_i64], model.mean.iter().copied()),
            tensor("scale", &[n_i64], model.scale.iter().copied()),
            tensor("weights", &[n_i64, 1], model.weights.iter().copied()),
            tensor("bias", &[1], [model.intercept]),
        ],
        input: vec![float_value(INPUT, [dim_param("batch"), dim_value(n_i64)])],
        output: vec![float_value(OUTPUT, [dim_param("batch"), dim_value(1)])],
        ..Default::default()
    };
    let mut props = vec![
        entry("model_name", &meta.model_name),
        entry("version", &meta.version),
        entry("feature_set", &meta.feature_set),
        entry("feature_names", meta.feature_names.join(",")),
        entry("trained_at", &meta.trained_at),
    ];
    props.extend(meta.extra.iter().map(|(k, v)| entry(k, v.as_str())));
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("fantasy-trainer".to_owned()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        domain: Some("fantasy".to_owned()),
        model_version: Some(1),
        doc_string: Some(format!(
            "{} {}: home-win probability from {} features",
            meta.model_name, meta.version, meta.feature_set
        )),
        graph: Some(graph),
        metadata_props: props,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> LogisticModel {
        LogisticModel {
            mean: vec![0.5, 1.0],
            scale: vec![2.0, 0.5],
            weights: vec![1.2, -0.4],
            intercept: 0.1,
        }
    }

    fn meta() -> ExportMeta {
        ExportMeta {
            model_name: "m".into(),
            version: "v1".into(),
            feature_set: "fs".into(),
            feature_names: vec!["a".into(), "b".into()],
            trained_at: "2026-11-23T00:00:00Z".into(),
            extra: vec![("training_metrics".into(), "{}".into())],
        }
    }

    #[test]
    fn the_graph_decodes_with_its_parameters_and_metadata() {
        let bytes = to_onnx(&model(), &meta()).expect("exports");
        let decoded = ModelProto::decode(bytes.as_slice()).expect("decodes");
        let graph = decoded.graph.expect("graph");
        let ops: Vec<_> = graph
            .node
            .iter()
            .filter_map(|n| n.op_type.clone())
            .collect();
        assert_eq!(ops, ["Sub", "Div", "MatMul", "Add", "Sigmoid"]);
        let weights = graph
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("weights"))
            .expect("weights");
        assert_eq!(weights.dims, [2, 1]);
        assert_eq!(weights.float_data, [1.2f32, -0.4]);
        let props: Vec<_> = decoded
            .metadata_props
            .iter()
            .map(|e| {
                (
                    e.key.clone().unwrap_or_default(),
                    e.value.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert!(props.contains(&("feature_names".into(), "a,b".into())));
        assert!(props.contains(&("version".into(), "v1".into())));
        assert!(props.contains(&("training_metrics".into(), "{}".into())));
    }

    #[test]
    fn refuses_mismatched_names_and_non_finite_parameters() {
        let mut m = meta();
        m.feature_names.pop();
        assert!(matches!(
            to_onnx(&model(), &m),
            Err(ExportError::Names { .. })
        ));
        let mut bad = model();
        bad.weights[0] = f64::NAN;
        assert!(matches!(
            to_onnx(&bad, &meta()),
            Err(ExportError::NotFinite("weights"))
        ));
    }
}
