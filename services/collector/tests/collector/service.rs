//! Whole collector instances: replicas, shards, restarts, Redis down.

use std::collections::HashSet;
use std::time::Duration;

use fantasy_messages::GameStatus;

use crate::support::{
    NBA, Scoreboards, batches, counts, nba_with_home_score, published_games, published_outcomes,
    rig, sources_of, spawn, wait_all, wait_batches,
};

fn espn(board: &Scoreboards, league: &str) -> String {
    format!(
        "espn:basketball/{league}?base={}&interval=100ms&rps=100&burst=10",
        board.base()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_publish_each_version_once_and_a_changed_score_once_more() {
    let infra = rig().await;
    let board = Scoreboards::start(NBA);
    let sources = espn(&board, "nba");
    let env = [("COLLECTOR_SOURCES", sources.as_str())];
    // Same sources, no sharding: both fetch everything and race to publish.
    let a = spawn(&infra, &env).await;
    let b = spawn(&infra, &env).await;
    // Each replica fetched and processed the scoreboard three times: all
    // they published of it is on the topic.
    wait_batches(&a, 3).await;
    wait_batches(&b, 3).await;

    let games = published_games(&infra).await;
    let per_game = counts(games.iter().map(|g| g.game_id.as_str()));
    assert_eq!(
        per_game.len(),
        4,
        "every event of the scoreboard: {per_game:?}"
    );
    assert!(
        per_game.values().all(|n| *n == 1),
        "re-fetches and a second replica published nothing twice: {per_game:?}"
    );
    let outcomes = published_outcomes(&infra).await;
    assert_eq!(outcomes.len(), 1, "the one final game has one outcome");
    assert_eq!(outcomes[0].game_id, "nba-401704123");
    assert!(outcomes[0].home_win);

    // A score changes: that game, and only it, is published once more.
    // The batch a replica is in may have been fetched before the change;
    // the one after it was not.
    board.set_body(nba_with_home_score("401704124", 63));
    let (done_a, done_b) = (batches(&a).await, batches(&b).await);
    wait_batches(&a, done_a + 3).await;
    wait_batches(&b, done_b + 3).await;
    let games = published_games(&infra).await;
    let per_game = counts(games.iter().map(|g| g.game_id.as_str()));
    assert_eq!(per_game["nba-401704124"], 2, "{per_game:?}");
    assert_eq!(games.len(), 5, "{per_game:?}");
    let changed: Vec<_> = games
        .iter()
        .filter(|g| g.game_id == "nba-401704124")
        .collect();
    assert_eq!(changed[0].status, GameStatus::InProgress);
    // Under way: the second version keeps the features of the first.
    assert_eq!(changed[0].features, changed[1].features);

    let reports = [sources_of(&a).await, sources_of(&b).await];
    let published: u64 = reports
        .iter()
        .map(|r| {
            r["espn:basketball/nba"]["totals"]["games"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(published, 5, "the replicas' own counts agree: {reports:#?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_the_sources_and_never_fetch_one_twice() {
    let infra = rig().await;
    let board = Scoreboards::start(NBA);
    let leagues = ["nba", "wnba", "nbl", "gleague", "euro", "cba"];
    let sources: Vec<String> = leagues.iter().map(|l| espn(&board, l)).collect();
    let sources = sources.join(",");
    let one = spawn(
        &infra,
        &[
            ("COLLECTOR_SOURCES", &sources),
            ("COLLECTOR_SHARDS", "2"),
            ("COLLECTOR_SHARD", "1"),
        ],
    )
    .await;
    let two = spawn(
        &infra,
        &[
            ("COLLECTOR_SOURCES", &sources),
            ("COLLECTOR_SHARDS", "2"),
            ("COLLECTOR_SHARD", "2"),
        ],
    )
    .await;
    let (s1, s2) = (sources_of(&one).await, sources_of(&two).await);
    let k1: HashSet<&String> = s1.keys().collect();
    let k2: HashSet<&String> = s2.keys().collect();
    assert!(
        k1.is_disjoint(&k2),
        "a source on both shards: {k1:?} {k2:?}"
    );
    assert_eq!(k1.len() + k2.len(), leagues.len());
    assert!(
        !k1.is_empty() && !k2.is_empty(),
        "both shards work: {k1:?} {k2:?}"
    );
    // Every source of each shard fetched and published once at least.
    wait_batches(&one, 1).await;
    wait_batches(&two, 1).await;
    for l in leagues {
        assert!(
            board.hits().contains_key(&format!("basketball/{l}")),
            "{l} fetched"
        );
    }
    let games = published_games(&infra).await;
    let per_game = counts(games.iter().map(|g| g.game_id.as_str()));
    assert_eq!(per_game.len(), 4 * leagues.len());
    assert!(per_game.values().all(|n| *n == 1), "{per_game:?}");
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

fn history_csv(n: usize) -> String {
    let mut csv = String::from(
        "game_id,sport,league,season,home_team,away_team,scheduled_at,status,home_score,away_score\n",
    );
    let teams = ["AAA", "BBB", "CCC", "DDD", "EEE"];
    for i in 0..n {
        let home = teams[i % teams.len()];
        let away = teams[(i + 1 + i / teams.len()) % teams.len()];
        let away = if away == home {
            teams[(i + 2) % teams.len()]
        } else {
            away
        };
        csv.push_str(&format!(
            "hist-{i:03},nba,nba,2024,{home},{away},2024-11-{:02}T19:00:00Z,final,{},{}\n",
            1 + i / 3,
            90 + (i * 7) % 30,
            95 + (i * 3) % 20,
        ));
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_checkpoint() {
    let infra = rig().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.csv");
    std::fs::write(&path, history_csv(30)).unwrap();
    let name = format!("file:{}", path.display());
    let spec = format!("{name}?batch=7");
    // As if an earlier run had published the first 10 records.
    infra.db.db.set_checkpoint(&name, "10").await.unwrap();

    let app = spawn(&infra, &[("COLLECTOR_SOURCES", &spec)]).await;
    let done = wait_all(&app, "done", Duration::from_secs(60)).await;
    assert_eq!(done[&name]["cursor"], "30");
    app.stop().await.unwrap();
    let games = published_games(&infra).await;
    let mut ids: Vec<&str> = games.iter().map(|g| g.game_id.as_str()).collect();
    ids.sort_unstable();
    let expected: Vec<String> = (10..30).map(|i| format!("hist-{i:03}")).collect();
    assert_eq!(ids, expected, "exactly the records after the checkpoint");
    assert_eq!(published_outcomes(&infra).await.len(), 20);

    // Restarted: the source resumes at its end; nothing is published again.
    let app = spawn(&infra, &[("COLLECTOR_SOURCES", &spec)]).await;
    wait_all(&app, "done", Duration::from_secs(60)).await;
    app.stop().await.unwrap();
    assert_eq!(published_games(&infra).await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_exact_store_keeps_every_record_once() {
    let infra = rig().await;
    let spec = "sim:nba?teams=6&games=10&minutes=0&batch=16";
    // Nothing listens on port 1: every dedup call goes to Postgres.
    let env = [
        ("COLLECTOR_SOURCES", spec),
        ("REDIS_URL", "redis://127.0.0.1:1"),
    ];
    let app = spawn(&infra, &env).await;
    let done = wait_all(&app, "done", Duration::from_secs(60)).await;
    app.stop().await.unwrap();
    let games = published_games(&infra).await;
    let n_games = done["sim:nba"]["details"]["games"].as_u64().unwrap() as usize;
    assert_eq!(n_games, 30);
    assert_eq!(
        games.len(),
        2 * n_games,
        "a scheduled and a final version each"
    );
    assert_eq!(published_outcomes(&infra).await.len(), n_games);
    // The simulator's truth is stored: the oracle Brier from Postgres is the
    // one the source reports.
    let brier: f64 = sqlx::query_scalar(
        "SELECT avg(power(t.home_win_prob - CASE WHEN o.home_win THEN 1 ELSE 0 END, 2))
         FROM game_truth t JOIN outcomes o USING (game_id)",
    )
    .fetch_one(infra.db.db.pool())
    .await
    .unwrap();
    let reported = done["sim:nba"]["details"]["oracle_brier"].as_f64().unwrap();
    assert!((brier - reported).abs() < 1e-9, "{brier} vs {reported}");

    // The source forgets where it was and yields everything again: the
    // exact store knows every version, so nothing goes out twice.
    sqlx::query("DELETE FROM source_checkpoints")
        .execute(infra.db.db.pool())
        .await
        .unwrap();
    let app = spawn(&infra, &env).await;
    let done = wait_all(&app, "done", Duration::from_secs(60)).await;
    app.stop().await.unwrap();
    assert_eq!(done["sim:nba"]["totals"]["duplicates"], 2 * n_games);
    assert_eq!(done["sim:nba"]["totals"]["games"], 0);
    assert_eq!(published_games(&infra).await.len(), 2 * n_games);
}
