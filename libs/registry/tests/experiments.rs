//! Experiments in the real local Postgres: what creation refuses, the
//! lifecycle's transitions, a promotion that activates and ends in one
//! transaction, a drop that hands the share back, and the paired reads.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use fantasy_db::testing::TestDb;
use fantasy_messages::testing::{model_published, outcome};
use fantasy_messages::{ModelStatus, Outcome};
use fantasy_registry::experiments::{
    Decision, Mode, NewExperiment, NewVariant, Role, Settings, Status, VariantPrediction,
};
use fantasy_registry::{ExperimentError, Experiments, ModelRecord, Registry};

fn record(version: &str, feature_set: &str) -> ModelRecord {
    let p = model_published(version);
    ModelRecord {
        model_name: p.model_name,
        version: p.version,
        artifact_uri: p.artifact_uri,
        sha256: p.sha256,
        feature_set: feature_set.into(),
        n_features: p.n_features,
        status: ModelStatus::Candidate,
        metrics: p.metrics,
        created_at: Utc::now(),
        activated_at: None,
    }
}

fn plan(mode: Mode, challengers: &[(&str, Option<f64>)], shadows: &[&str]) -> NewExperiment {
    let v = |version: &str, weight| NewVariant {
        version: version.into(),
        name: None,
        weight,
    };
    NewExperiment {
        mode,
        challengers: challengers.iter().map(|(c, w)| v(c, *w)).collect(),
        shadows: shadows.iter().map(|s| v(s, None)).collect(),
        settings: None,
    }
}

fn by(action: &'static str) -> Decision {
    Decision {
        action,
        variant: None,
        reason: format!("{action} by the test"),
        evidence: serde_json::json!({"n": 1}),
        decided_by: "test".into(),
    }
}

async fn setup() -> (TestDb, Registry, Experiments) {
    let t = TestDb::new().await.unwrap();
    let reg = Registry::new(t.db.clone());
    for v in ["v1", "v2", "v3"] {
        reg.insert(&record(v, "elo-v1")).await.unwrap();
    }
    reg.insert(&record("other", "elo-v2")).await.unwrap();
    let store = Experiments::new(t.db.clone());
    (t, reg, store)
}

#[tokio::test]
async fn creation_needs_a_champion_known_versions_and_no_live_experiment() {
    let (_t, reg, store) = setup().await;
    let d = Settings::default();
    let canary = plan(Mode::Canary, &[("v2", None)], &[]);
    assert!(matches!(
        store.create("win-prob", &canary, &d, "ops").await,
        Err(ExperimentError::NoChampion { .. })
    ));
    reg.activate("win-prob", "v1").await.unwrap();
    assert!(matches!(
        store
            .create(
                "win-prob",
                &plan(Mode::Canary, &[("nope", None)], &[]),
                &d,
                "ops"
            )
            .await,
        Err(ExperimentError::NoSuchVersion { .. })
    ));
    let other = store
        .create("win-prob", &plan(Mode::Shadow, &[], &["other"]), &d, "ops")
        .await;
    assert!(
        matches!(&other, Err(ExperimentError::Invalid(m)) if m.contains("cannot score the same games")),
        "{other:?}"
    );

    let e = store.create("win-prob", &canary, &d, "ops").await.unwrap();
    assert_eq!(e.status, Status::Running);
    assert_eq!(e.champion().unwrap().version, "v1");
    let challenger = e.variant("challenger").unwrap();
    assert_eq!(
        (challenger.role, challenger.weight),
        (Role::Challenger, 0.01)
    );
    assert!((e.champion().unwrap().weight - 0.99).abs() < 1e-12);
    let second = store
        .create("win-prob", &plan(Mode::Shadow, &[], &["v3"]), &d, "ops")
        .await;
    assert!(
        matches!(second, Err(ExperimentError::AlreadyLive { id, .. }) if id == e.id),
        "{second:?}"
    );
    let decisions = store.decisions(e.id).await.unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].action, "create");
    assert_eq!(decisions[0].decided_by, "ops");
}

#[tokio::test]
async fn the_lifecycle_refuses_what_its_state_does_not_allow() {
    let (_t, reg, store) = setup().await;
    reg.activate("win-prob", "v1").await.unwrap();
    let d = Settings::default();
    let e = store
        .create(
            "win-prob",
            &plan(Mode::Split, &[("v2", Some(0.2)), ("v3", Some(0.3))], &[]),
            &d,
            "ops",
        )
        .await
        .unwrap();
    assert!(matches!(
        store.set_status(e.id, Status::Running, &by("resume")).await,
        Err(ExperimentError::WrongState { .. })
    ));
    let paused = store
        .set_status(e.id, Status::Paused, &by("pause"))
        .await
        .unwrap();
    assert_eq!(paused.status, Status::Paused);
    // Paused: every game is the champion's.
    assert_eq!(paused.assign("any-game").unwrap().role, Role::Champion);
    store
        .set_status(e.id, Status::Running, &by("resume"))
        .await
        .unwrap();

    // A drop hands the share back to the champion.
    let dropped = store
        .drop_variant(e.id, "challenger-1", &by("drop"))
        .await
        .unwrap();
    assert!(dropped.variant("challenger-1").unwrap().dropped);
    assert!((dropped.champion().unwrap().weight - 0.7).abs() < 1e-12);
    assert!(matches!(
        store.drop_variant(e.id, "champion", &by("drop")).await,
        Err(ExperimentError::Invalid(_))
    ));

    // Promotion activates the version and ends the experiment, together.
    let (ended, active) = store
        .promote(e.id, "challenger-2", &by("promote"))
        .await
        .unwrap();
    assert_eq!(ended.status, Status::Promoted);
    assert!(ended.ended_at.is_some());
    assert_eq!(active.version, "v3");
    assert_eq!(reg.active("win-prob").await.unwrap().unwrap().version, "v3");
    assert!(store.live("win-prob").await.unwrap().is_none());
    assert!(matches!(
        store.set_status(e.id, Status::Stopped, &by("stop")).await,
        Err(ExperimentError::WrongState { .. })
    ));
    let actions: Vec<String> = store
        .decisions(e.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.action)
        .collect();
    assert_eq!(actions, ["create", "pause", "resume", "drop", "promote"]);

    // A new champion: the next experiment is against it.
    let next = store
        .create("win-prob", &plan(Mode::Shadow, &[], &["v1"]), &d, "ops")
        .await
        .unwrap();
    assert_eq!(next.champion().unwrap().version, "v3");
    assert_eq!(
        store.end_superseded("win-prob", "ops", "v2").await.unwrap(),
        Some(next.id)
    );
    assert_eq!(
        store.get(next.id).await.unwrap().unwrap().status,
        Status::Stopped
    );
}

#[tokio::test]
async fn predictions_pair_up_on_finished_games_and_never_go_back_in_time() {
    let (t, reg, store) = setup().await;
    reg.activate("win-prob", "v1").await.unwrap();
    let e = store
        .create(
            "win-prob",
            &plan(Mode::Shadow, &[], &["v2"]),
            &Settings::default(),
            "ops",
        )
        .await
        .unwrap();
    let at = Utc::now();
    let row = |game: &str, variant: &str, p: f32, served: bool, at| VariantPrediction {
        experiment_id: e.id,
        game_id: game.into(),
        variant: variant.into(),
        model_version: if variant == "champion" { "v1" } else { "v2" }.into(),
        home_win_prob: p,
        served,
        predicted_at: at,
    };
    let rows = [
        row("g1", "champion", 0.6, true, at),
        row("g1", "shadow", 0.7, false, at),
        row("g2", "champion", 0.4, true, at),
        row("g2", "shadow", 0.3, false, at),
        row("g3", "champion", 0.5, true, at),
    ];
    assert_eq!(store.upsert_predictions(&rows).await.unwrap(), 5);
    // An older redelivery changes nothing; a newer one replaces.
    store
        .upsert_predictions(&[
            row("g1", "shadow", 0.1, false, at - Duration::seconds(5)),
            row("g2", "shadow", 0.35, false, at + Duration::seconds(5)),
        ])
        .await
        .unwrap();
    let finish = |game: &str, home_win: bool, minutes: i64| Outcome {
        home_score: if home_win { 100 } else { 90 },
        away_score: 95,
        home_win,
        final_at: at + Duration::minutes(minutes),
        ..outcome(game)
    };
    t.db.upsert_outcomes(&[finish("g2", false, 1), finish("g1", true, 2)])
        .await
        .unwrap();
    let games = store.paired(e.id).await.unwrap();
    let ids: Vec<&str> = games.iter().map(|g| g.game_id.as_str()).collect();
    assert_eq!(ids, ["g2", "g1"], "in the order they finished; g3 has not");
    assert_eq!(
        games[1].probs,
        [
            ("champion".to_owned(), f64::from(0.6f32)),
            ("shadow".to_owned(), f64::from(0.7f32))
        ]
    );
    assert_eq!(games[0].probs[1].1, f64::from(0.35f32));
    assert!(!games[0].home_win && games[1].home_win);
    let exposure = store.exposure(e.id).await.unwrap();
    assert_eq!(
        exposure,
        [("champion".to_owned(), 3, 0), ("shadow".to_owned(), 0, 2)]
    );
}
