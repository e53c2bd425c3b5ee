//! The codec's promises: round trips, typed rejections, no panics.
#![allow(clippy::unwrap_used)]

use fantasy_messages::testing::{game, model_metrics, model_published, outcome, prediction};
use fantasy_messages::{
    CalibrationBucket, DecodeError, EncodeError, Game, Message, ModelMetrics, ModelPublished,
    Outcome, Prediction, decode, encode,
};
use proptest::prelude::*;

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(message: M) {
    let bytes = encode(&message).expect("encode");
    let back: M = decode(&bytes).expect("decode");
    assert_eq!(back, message);
}

#[test]
fn every_message_type_round_trips() {
    round_trip(game("g1"));
    round_trip(outcome("g1"));
    round_trip(prediction("g1", 0.625));
    round_trip(model_published("v7"));
    let mut metrics = model_metrics("v7");
    metrics.calibration.push(CalibrationBucket {
        lower: 0.5,
        upper: 0.6,
        count: 10,
        mean_predicted: 0.55,
        observed_rate: 0.5,
    });
    round_trip(metrics);
}

#[test]
fn schema_version_is_written_first_and_is_one() {
    let bytes = encode(&prediction("g1", 0.5)).unwrap();
    assert!(
        bytes.starts_with(br#"{"schema_version":1,"#),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

fn with_version(version: &str) -> Vec<u8> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&encode(&game("g1")).unwrap()).unwrap();
    value["schema_version"] = serde_json::from_str(version).unwrap();
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn unknown_version_is_a_typed_error() {
    match decode::<Game>(&with_version("2")) {
        Err(DecodeError::UnsupportedVersion {
            found, supported, ..
        }) => {
            assert_eq!(found, "2");
            assert_eq!(supported, 1);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    // A version that is not even a number is still reported as a version.
    assert!(matches!(
        decode::<Game>(&with_version("\"one\"")),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    // A future version with a different shape still says "version", not "malformed".
    let future = br#"{"schema_version":9,"id":"x","teams":["a","b"]}"#;
    assert!(matches!(
        decode::<Game>(future),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
}

#[test]
fn missing_version_is_a_typed_error() {
    let mut value: serde_json::Value =
        serde_json::from_slice(&encode(&outcome("g1")).unwrap()).unwrap();
    value.as_object_mut().unwrap().remove("schema_version");
    let bytes = serde_json::to_vec(&value).unwrap();
    assert!(matches!(
        decode::<Outcome>(&bytes),
        Err(DecodeError::MissingVersion { kind: "outcome" })
    ));
}

#[test]
fn malformed_and_truncated_payloads_are_typed_errors() {
    let bytes = encode(&prediction("g1", 0.5)).unwrap();
    for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
        let err = decode::<Prediction>(&bytes[..cut]).unwrap_err();
        assert_eq!(err.code(), "malformed", "cut at {cut}: {err}");
    }
    for junk in [&b"not json"[..], b"[]", b"42", b"null", b"\xff\xfe"] {
        assert_eq!(decode::<Prediction>(junk).unwrap_err().code(), "malformed");
    }
    // Right version, wrong field type.
    let wrong = br#"{"schema_version":1,"game_id":7}"#;
    assert_eq!(decode::<Prediction>(wrong).unwrap_err().code(), "malformed");
}

#[test]
fn invariants_are_checked_on_decode() {
    // JSON has no NaN; a peer can still send an out-of-range probability.
    let mut value: serde_json::Value =
        serde_json::from_slice(&encode(&prediction("g1", 0.5)).unwrap()).unwrap();
    value["home_win_prob"] = serde_json::json!(1.5);
    let err = decode::<Prediction>(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Invalid {
                kind: "prediction",
                ..
            }
        ),
        "{err}"
    );

    let mut value: serde_json::Value =
        serde_json::from_slice(&encode(&outcome("g1")).unwrap()).unwrap();
    value["home_win"] = serde_json::json!(false);
    let err = decode::<Outcome>(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(err.to_string().contains("101-99"), "{err}");

    let mut value: serde_json::Value =
        serde_json::from_slice(&encode(&game("g1")).unwrap()).unwrap();
    value["game_id"] = serde_json::json!("  ");
    assert_eq!(
        decode::<Game>(&serde_json::to_vec(&value).unwrap())
            .unwrap_err()
            .code(),
        "invalid"
    );
}

#[test]
fn encoding_refuses_what_a_consumer_would_refuse() {
    let mut g = game("g1");
    g.features[1] = f32::NAN;
    let err = encode(&g).unwrap_err();
    assert!(matches!(err, EncodeError::Invalid { kind: "game", .. }));
    assert!(err.to_string().contains("features[1]"), "{err}");

    g.features[1] = f32::INFINITY;
    assert!(encode(&g).is_err());

    assert!(encode(&prediction("g1", f32::NAN)).is_err());
    assert!(encode(&prediction("g1", -0.1)).is_err());

    let mut m: ModelPublished = model_published("v1");
    m.sha256 = "ABC".into();
    assert!(encode(&m).unwrap_err().to_string().contains("sha256"));

    let mut mm: ModelMetrics = model_metrics("v1");
    mm.count = 501;
    assert!(encode(&mm).is_err());
}

#[test]
fn unknown_fields_are_tolerated_within_a_version() {
    // A v1 producer may add fields; v1 readers ignore them (tolerant reader).
    let mut value: serde_json::Value =
        serde_json::from_slice(&encode(&game("g1")).unwrap()).unwrap();
    value["venue"] = serde_json::json!("TD Garden");
    let back: Game = decode(&serde_json::to_vec(&value).unwrap()).unwrap();
    assert_eq!(back, game("g1"));
}

#[test]
fn keys_are_game_ids_or_model_names() {
    assert_eq!(game("g9").key(), "g9");
    assert_eq!(outcome("g9").key(), "g9");
    assert_eq!(prediction("g9", 0.1).key(), "g9");
    assert_eq!(model_published("v2").key(), "win-prob");
    assert_eq!(model_metrics("v2").key(), "win-prob");
}

proptest! {
    #[test]
    fn games_with_any_finite_features_and_ids_round_trip(
        id in "[\\PC]{1,40}",
        team in "\\PC{1,20}",
        features in proptest::collection::vec(-1e30f32..1e30f32, 0..64),
    ) {
        prop_assume!(!id.trim().is_empty() && !team.trim().is_empty());
        let mut g = game(&id);
        g.home_team = team;
        g.features = features;
        let back: Game = decode(&encode(&g).unwrap()).unwrap();
        prop_assert_eq!(back, g);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<Game>(&bytes);
        let _ = decode::<Prediction>(&bytes);
        let _ = decode::<ModelPublished>(&bytes);
    }

    #[test]
    fn mutated_valid_payloads_never_panic(cut in 0usize..400, byte in any::<u8>()) {
        let mut bytes = encode(&prediction("g1", 0.5)).unwrap();
        let i = cut % bytes.len();
        bytes[i] = byte;
        let _ = decode::<Prediction>(&bytes);
    }
}
