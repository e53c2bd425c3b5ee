//! The registry on the real local Postgres, a temporary folder and a real
//! S3-compatible server (moto's).
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use fantasy_db::testing::TestDb;
use fantasy_messages::ModelStatus;
use fantasy_messages::testing::model_published;
use fantasy_registry::testing::S3Server;
use fantasy_registry::{
    ModelRecord, ModelStore, Registry, StoreError, StoreSettings, fetch_artifact,
    fetch_artifact_with,
};

#[tokio::test]
async fn artifacts_round_trip_and_a_tampered_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(&format!("file://{}/models", dir.path().display())).unwrap();
    let (uri, sha) = store
        .put("win-prob", "v1", b"onnx bytes".to_vec())
        .await
        .unwrap();
    assert!(
        uri.starts_with("file://") && uri.ends_with("/models/win-prob/v1.onnx"),
        "{uri}"
    );
    assert_eq!(fetch_artifact(&uri, &sha).await.unwrap(), b"onnx bytes");

    // Someone edits the file after the registry recorded it.
    let path = url::Url::parse(&uri).unwrap().to_file_path().unwrap();
    std::fs::write(&path, b"onnx bytez").unwrap();
    let err = fetch_artifact(&uri, &sha).await.unwrap_err();
    assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("refusing"));

    let missing = fetch_artifact(&format!("file://{}/nope.onnx", dir.path().display()), &sha).await;
    assert!(matches!(missing, Err(StoreError::Store { .. })));
    assert!(matches!(
        ModelStore::open("ftp://x/y"),
        Err(StoreError::BadUrl(..))
    ));
}

#[tokio::test]
async fn artifacts_round_trip_through_s3_with_keys_from_files_and_a_tampered_one_is_refused() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("models").await.unwrap();
    let settings = s3.settings();
    let store = ModelStore::open_with("s3://models/fantasy", &settings).unwrap();
    let (uri, sha) = store
        .put("win-prob", "v1", b"onnx bytes".to_vec())
        .await
        .unwrap();
    assert_eq!(uri, "s3://models/fantasy/win-prob/v1.onnx");
    assert_eq!(
        fetch_artifact_with(&uri, &sha, &settings).await.unwrap(),
        b"onnx bytes"
    );

    // Someone overwrites the object after the registry recorded it.
    store
        .put("win-prob", "v1", b"onnx bytez".to_vec())
        .await
        .unwrap();
    let err = fetch_artifact_with(&uri, &sha, &settings)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Checksum { .. }), "{err}");

    // Missing objects and buckets are store errors, not panics.
    let missing = fetch_artifact_with("s3://models/fantasy/nope.onnx", &sha, &settings).await;
    assert!(
        matches!(missing, Err(StoreError::Store { .. })),
        "{missing:?}"
    );
    let no_bucket = ModelStore::open_with("s3://nobucket/x", &settings)
        .unwrap()
        .put("win-prob", "v1", b"x".to_vec())
        .await;
    assert!(
        matches!(no_bucket, Err(StoreError::Store { .. })),
        "{no_bucket:?}"
    );

    // A key file that cannot be read is named when the store is opened.
    let mut env = s3.env();
    env.push((
        "AWS_SECRET_ACCESS_KEY_FILE".into(),
        "/nonexistent/key".into(),
    ));
    let err = ModelStore::open_with("s3://models/fantasy", &StoreSettings::from_pairs(env))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("AWS_SECRET_ACCESS_KEY_FILE") && err.contains("/nonexistent/key"),
        "{err}"
    );
}

fn record(version: &str, status: ModelStatus, age_minutes: i64) -> ModelRecord {
    let p = model_published(version);
    ModelRecord {
        model_name: p.model_name,
        version: p.version,
        artifact_uri: p.artifact_uri,
        sha256: p.sha256,
        feature_set: p.feature_set,
        n_features: p.n_features,
        status,
        metrics: p.metrics,
        created_at: Utc::now() - Duration::minutes(age_minutes),
        activated_at: None,
    }
}

#[tokio::test]
async fn activation_keeps_one_active_version_and_rollback_restores_the_previous() {
    let t = TestDb::new().await.unwrap();
    let reg = Registry::new(t.db.clone());
    assert!(reg.active("win-prob").await.unwrap().is_none());
    assert!(
        reg.insert(&record("v1", ModelStatus::Candidate, 30))
            .await
            .unwrap()
    );
    assert!(
        !reg.insert(&record("v1", ModelStatus::Candidate, 30))
            .await
            .unwrap()
    );
    reg.insert(&record("v2", ModelStatus::Candidate, 20))
        .await
        .unwrap();
    reg.insert(&record("v3", ModelStatus::Candidate, 10))
        .await
        .unwrap();

    assert_eq!(
        reg.activate("win-prob", "v1").await.unwrap().status,
        ModelStatus::Active
    );
    let v2 = reg.activate("win-prob", "v2").await.unwrap();
    assert_eq!(v2.version, "v2");
    assert!(v2.activated_at.is_some());
    assert_eq!(
        reg.get("win-prob", "v1").await.unwrap().unwrap().status,
        ModelStatus::Retired
    );
    reg.set_status("win-prob", "v3", ModelStatus::Rejected)
        .await
        .unwrap();

    let back = reg.rollback("win-prob").await.unwrap();
    assert_eq!(back.version, "v1");
    assert_eq!(reg.active("win-prob").await.unwrap().unwrap().version, "v1");
    assert_eq!(
        reg.get("win-prob", "v2").await.unwrap().unwrap().status,
        ModelStatus::Retired
    );

    let all: Vec<_> = reg
        .list("win-prob")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(all, ["v3", "v2", "v1"]);
    assert!(reg.activate("win-prob", "v9").await.is_err());
    assert!(
        reg.set_status("win-prob", "v3", ModelStatus::Active)
            .await
            .is_err()
    );

    let published = back.to_published();
    assert_eq!(published.status, ModelStatus::Active);
    assert_eq!(published.version, "v1");
    t.drop_database().await.unwrap();
}
