//! The Postgres crate against the real local Postgres, a fresh database per
//! test.
#![allow(clippy::unwrap_used)]

use chrono::Duration;
use fantasy_db::testing::TestDb;
use fantasy_db::{Db, DbConfig, MIGRATOR};
use fantasy_messages::testing::{epoch, game, model_metrics, outcome, prediction};
use fantasy_messages::{CalibrationBucket, GameStatus};

async fn count(db: &Db, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// The previous release, started against a schema the new one migrated (a
/// rolling update, or its rollback): the migration it does not know is no
/// reason to stop, where sqlx alone refuses to start.
#[tokio::test]
async fn an_older_release_starts_against_a_newer_schema() {
    let t = TestDb::new().await.unwrap();
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let older =
        std::env::temp_dir().join(format!("fantasy-older-migrations-{}", std::process::id()));
    std::fs::create_dir_all(&older).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&here)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let newest = files.pop().unwrap();
    for f in &files {
        std::fs::copy(f, older.join(f.file_name().unwrap())).unwrap();
    }
    let old_release = || async { sqlx::migrate::Migrator::new(older.as_path()).await.unwrap() };

    // On a connection of its own: sqlx returns this error still holding
    // its migration lock, which closing the connection releases.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&t.url)
        .await
        .unwrap();
    let strict = old_release().await.run_direct(&mut conn).await;
    assert!(strict.is_err(), "sqlx alone accepts {newest:?} missing");
    sqlx::Connection::close(conn).await.unwrap();
    assert_eq!(
        t.db.apply(old_release().await).await.unwrap(),
        MIGRATOR.iter().count() - 1
    );
    // Nothing was undone or applied twice.
    assert_eq!(
        t.db.applied_migrations().await.unwrap() as usize,
        MIGRATOR.iter().count()
    );
    std::fs::remove_dir_all(&older).unwrap();
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn migrations_apply_once_and_again_change_nothing() {
    let t = TestDb::new().await.unwrap();
    let applied = t.db.applied_migrations().await.unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count());
    // Running them again (another replica starting) is a no-op.
    t.db.migrate().await.unwrap();
    assert_eq!(t.db.applied_migrations().await.unwrap(), applied);
    for table in [
        "games",
        "outcomes",
        "predictions",
        "models",
        "model_metrics",
        "training_runs",
        "team_ratings",
        "ratings_applied",
        "source_checkpoints",
        "dedup_keys",
    ] {
        assert_eq!(count(&t.db, table).await, 0, "{table}");
    }
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn games_upsert_by_id_and_never_go_back_in_time() {
    let t = TestDb::new().await.unwrap();
    let db = &t.db;
    let mut a = game("a");
    a.features = vec![];
    let b = game("b");
    assert_eq!(db.upsert_games(&[a.clone(), b.clone()]).await.unwrap(), 2);
    assert_eq!(db.game("a").await.unwrap().unwrap(), a);
    assert_eq!(db.game("b").await.unwrap().unwrap(), b);

    // Redelivery: no new row.
    db.upsert_games(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(count(db, "games").await, 2);

    // A newer version replaces; an older one changes nothing.
    let mut newer = b.clone();
    newer.status = GameStatus::InProgress;
    newer.features = vec![9.5, -0.25];
    newer.source_updated_at = b.source_updated_at + Duration::minutes(5);
    db.upsert_games(&[newer.clone()]).await.unwrap();
    let mut stale = b.clone();
    stale.status = GameStatus::Postponed;
    stale.source_updated_at = b.source_updated_at - Duration::minutes(5);
    assert_eq!(db.upsert_games(&[stale]).await.unwrap(), 0);
    assert_eq!(db.game("b").await.unwrap().unwrap(), newer);

    // A batch carrying two versions of one game keeps the newer, whatever the order.
    let mut final_b = newer.clone();
    final_b.status = GameStatus::Final;
    final_b.source_updated_at = newer.source_updated_at + Duration::minutes(90);
    db.upsert_games(&[final_b.clone(), newer.clone(), game("c")])
        .await
        .unwrap();
    assert_eq!(db.game("b").await.unwrap().unwrap(), final_b);
    assert_eq!(count(db, "games").await, 3);
    assert!(db.game("nope").await.unwrap().is_none());
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_large_batch_goes_in_one_statement_with_every_feature_vector_intact() {
    let t = TestDb::new().await.unwrap();
    let games: Vec<_> = (0..5_000)
        .map(|i| {
            let mut g = game(&format!("bulk-{i}"));
            // Vectors of varying length, including empty, to check the slicing.
            g.features = (0..(i % 7)).map(|j| (i * 10 + j) as f32 / 3.0).collect();
            g
        })
        .collect();
    assert_eq!(t.db.upsert_games(&games).await.unwrap(), 5_000);
    assert_eq!(count(&t.db, "games").await, 5_000);
    for i in [0, 1, 6, 7, 4_999] {
        let stored = t.db.game(&format!("bulk-{i}")).await.unwrap().unwrap();
        assert_eq!(stored.features, games[i].features, "bulk-{i}");
    }
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn outcomes_are_idempotent_and_corrections_apply() {
    let t = TestDb::new().await.unwrap();
    let db = &t.db;
    let o = outcome("g1");
    assert_eq!(
        db.upsert_outcomes(std::slice::from_ref(&o)).await.unwrap(),
        1
    );
    // The same outcome again touches nothing.
    assert_eq!(
        db.upsert_outcomes(std::slice::from_ref(&o)).await.unwrap(),
        0
    );
    let mut corrected = o.clone();
    corrected.home_score = 98;
    corrected.home_win = false;
    assert_eq!(db.upsert_outcomes(&[corrected.clone()]).await.unwrap(), 1);
    assert_eq!(db.outcome("g1").await.unwrap().unwrap(), corrected);
    assert_eq!(count(db, "outcomes").await, 1);
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn predictions_keep_the_latest_per_game_and_version() {
    let t = TestDb::new().await.unwrap();
    let db = &t.db;
    let first = prediction("g1", 0.40);
    let mut later = prediction("g1", 0.45);
    later.predicted_at = first.predicted_at + Duration::seconds(30);
    later.event_produced_at = None;
    let mut other_model = prediction("g1", 0.70);
    other_model.model_version = "v2".into();
    other_model.predicted_at = first.predicted_at + Duration::seconds(10);

    db.upsert_predictions(&[first.clone(), other_model.clone()])
        .await
        .unwrap();
    db.upsert_predictions(&[later.clone()]).await.unwrap();
    // A stale redelivery of the first changes nothing.
    assert_eq!(
        db.upsert_predictions(std::slice::from_ref(&first))
            .await
            .unwrap(),
        0
    );
    assert_eq!(count(db, "predictions").await, 2);
    assert_eq!(db.latest_prediction("g1").await.unwrap().unwrap(), later);
    assert!(db.latest_prediction("g2").await.unwrap().is_none());

    // Duplicate keys inside one batch are folded, not an error.
    let batch: Vec<_> = (0..100)
        .map(|i| {
            let mut p = prediction(&format!("g{}", i % 10), 0.5);
            p.predicted_at = epoch() + Duration::seconds(i);
            p
        })
        .collect();
    db.upsert_predictions(&batch).await.unwrap();
    let g3 = db.latest_prediction("g3").await.unwrap().unwrap();
    assert_eq!(g3.predicted_at, epoch() + Duration::seconds(93));
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn model_metrics_are_stored_once() {
    let t = TestDb::new().await.unwrap();
    let mut m = model_metrics("v3");
    m.calibration = vec![CalibrationBucket {
        lower: 0.6,
        upper: 0.7,
        count: 12,
        mean_predicted: 0.65,
        observed_rate: 0.58,
    }];
    assert!(t.db.insert_model_metrics(&m).await.unwrap());
    assert!(!t.db.insert_model_metrics(&m).await.unwrap());
    let stored =
        t.db.latest_model_metrics("win-prob", "v3")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(stored.0, m);
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn old_model_metrics_are_purged_but_each_version_keeps_its_latest() {
    let t = TestDb::new().await.unwrap();
    let days_ago = |d: i64| chrono::Utc::now() - chrono::Duration::days(d);
    for (version, age) in [("v1", 40), ("v1", 35), ("v1", 1), ("v2", 50), ("v2", 45)] {
        let mut m = model_metrics(version);
        m.evaluated_at = days_ago(age);
        assert!(t.db.insert_model_metrics(&m).await.unwrap());
    }
    let month = std::time::Duration::from_secs(30 * 86_400);
    assert_eq!(t.db.purge_model_metrics(month).await.unwrap(), 3);
    let left: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT model_version, evaluated_at FROM model_metrics ORDER BY model_version",
    )
    .fetch_all(t.db.pool())
    .await
    .unwrap();
    let versions: Vec<&str> = left.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(versions, ["v1", "v2"], "{left:?}");
    // v1's recent row, and v2's latest although it is old.
    assert!(left[0].1 > days_ago(2));
    assert!(left[1].1 < days_ago(44) && left[1].1 > days_ago(46));
    assert_eq!(t.db.purge_model_metrics(month).await.unwrap(), 0);
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn checkpoints_resume_where_they_were_left() {
    let t = TestDb::new().await.unwrap();
    assert_eq!(t.db.checkpoint("sim").await.unwrap(), None);
    t.db.set_checkpoint("sim", "day-3").await.unwrap();
    t.db.set_checkpoint("sim", "day-4").await.unwrap();
    assert_eq!(
        t.db.checkpoint("sim").await.unwrap().as_deref(),
        Some("day-4")
    );
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn the_schema_allows_one_active_model_per_name() {
    let t = TestDb::new().await.unwrap();
    let insert = |version: &'static str| {
        sqlx::query(
            "INSERT INTO models (model_name, version, artifact_uri, sha256, feature_set, n_features, status, metrics)
             VALUES ('win-prob', $1, 'file:///m.onnx', repeat('a', 64), 'elo-v1', 3, 'active', '{}')",
        )
        .bind(version)
        .execute(t.db.pool())
    };
    insert("v1").await.unwrap();
    let err = insert("v2").await.unwrap_err();
    assert!(err.to_string().contains("models_one_active"), "{err}");
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_error_without_the_password() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = DbConfig::new(format!("postgres://app:hunter2@127.0.0.1:{port}/fantasy"));
    cfg.acquire_timeout = std::time::Duration::from_secs(1);
    let err = Db::connect(&cfg).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
