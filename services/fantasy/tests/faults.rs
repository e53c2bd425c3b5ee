//! The fault matrix: the four service binaries as processes on a paced
//! simulated league, a WebSocket client that reconnects with `since`, and
//! one fault per test, injected once live predictions flow:
//!
//! | cell                     | fault                                                      |
//! |--------------------------|------------------------------------------------------------|
//! | `postgres_restarted`     | `pg_ctl restart -m fast` (connections ended, server back)  |
//! | `postgres_unreachable`   | packets held for 20 s (connections stall, new ones hang)   |
//! | `redis_restarted`        | `redis-server` SIGKILLed (its data gone) and started again |
//! | `kafka_broker_down`      | the broker down for 10 s (connections refused), then up    |
//! | `<service>_sigterm`      | the service SIGTERMed, then started again                  |
//! | `<service>_sigkill`      | the service SIGKILLed, then started again                  |
//!
//! Every cell asserts the same end state: every game stored once and
//! predicted exactly once in Postgres; the client saw every message once
//! (no position twice) and every game's prediction exactly once (a
//! predictor that announced a batch and then failed to commit it, killed or
//! timed out by a broker that went away, announces it again: the fanout
//! passes over the repeats); the trainer's
//! latest evaluation of each model version covers every finished game it
//! predicted; every service running and ready. The recovery time is from
//! the fault healed (the dependency back, the service started again) to
//! every service ready and a new prediction both stored and delivered.
//!
//! Each cell runs its own Postgres and Redis servers (the machine's are
//! shared with the tests beside it) and its own broker.
//! `scripts/fault-matrix.sh` runs the cells one at a time and prints the
//! table for benches/RESULTS.md from what each wrote under
//! `target/tmp/fault-matrix/`.
#![allow(clippy::unwrap_used)]

mod common;

use common::faults::{Partition, Postgres, Redis};
use common::procs::{Proc, client, stack_env};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantasy::broker::BrokerArgs;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;

/// 10 teams, 40 games each: 16 rounds of history (80 games), then 24 live
/// rounds (120 games) over 45 s.
const SEASON: &str = "sim:nba?seed=11&teams=10&games=40&history=16&minutes=0.75&batch=20";
const GAMES: i64 = 200;
/// The fault strikes once this many games are predicted (40 live: the
/// backlog from before the first model is worked off), and two offset
/// commit intervals later.
const STRIKE_AT: i64 = 120;

#[derive(Clone, Copy, Debug)]
enum Fault {
    PostgresRestarted,
    PostgresUnreachable(Duration),
    RedisRestarted,
    BrokerDown(Duration),
    Signal(&'static str, &'static str),
}

/// What a cell measured, for the table.
struct Report {
    recovery: Duration,
    /// The longest time no new prediction was stored, from the fault to
    /// the recovery.
    pause: Duration,
    frames: usize,
}

async fn cell(name: &str, fault: Fault) {
    fantasy_telemetry::install_crypto_provider();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let _logs = KeepLogs {
        from: dir.path().to_owned(),
        to: report_dir().join(name),
    };
    let pg = tokio::task::block_in_place(Postgres::start);
    let pg_path = Partition::start(([127, 0, 0, 1], pg.port).into()).await;
    let mut redis = Redis::start(dir.path());
    let broker = fantasy::broker::start(&BrokerArgs {
        brokers: 1,
        partitions: 4,
        topic_prefix: String::new(),
        bootstrap_file: None,
    })
    .unwrap();
    let env = stack_env(
        dir.path(),
        SEASON,
        &[
            ("KAFKA_BROKERS", broker.bootstrap_servers()),
            ("DATABASE_URL", &pg.url(pg_path.port)),
            ("REDIS_URL", &redis.url()),
        ],
    );

    let mut procs: Vec<Proc> = ["fanout", "trainer", "predictor"]
        .into_iter()
        .map(|n| Proc::start(n, &env, dir.path()))
        .collect();
    for p in &procs[..2] {
        p.wait_ready(Duration::from_secs(60)).await;
    }
    let frames = Arc::new(Mutex::new(Vec::<Value>::new()));
    let recovered = Arc::new(Mutex::new(Vec::new()));
    let ws = tokio::spawn(client(
        procs[0].addr.clone(),
        frames.clone(),
        recovered.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    procs.push(Proc::start("collector", &env, dir.path()));
    procs[2].wait_ready(Duration::from_secs(120)).await;

    // The test reads Postgres directly, never through the partition; a
    // query that fails while the server restarts is asked again.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&pg.url(pg.port))
        .unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .ok()
        }
    };
    let predicted = || count("SELECT count(*) FROM predictions");
    let received = || frames.lock().unwrap().len();

    let deadline = Instant::now() + Duration::from_secs(60);
    while predicted().await.unwrap_or(0) < STRIKE_AT {
        assert!(Instant::now() < deadline, "{name}: no live predictions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // How many predictions are stored, every 100 ms from the fault on.
    let samples = Arc::new(Mutex::new(Vec::<(Instant, i64)>::new()));
    let sampler = {
        let (samples, pool) = (samples.clone(), pool.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(n) = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM predictions")
                    .fetch_one(&pool)
                    .await
                {
                    samples.lock().unwrap().push((Instant::now(), n));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let struck = Instant::now();

    // The fault, then the moment it is healed.
    match fault {
        Fault::PostgresRestarted => tokio::task::block_in_place(|| pg.restart()),
        Fault::PostgresUnreachable(for_) => {
            pg_path.cut();
            tokio::time::sleep(for_).await;
            pg_path.heal();
        }
        Fault::RedisRestarted => tokio::task::block_in_place(|| redis.kill_and_restart()),
        Fault::BrokerDown(for_) => {
            broker.broker_down(1).unwrap();
            tokio::time::sleep(for_).await;
            broker.broker_up(1).unwrap();
        }
        Fault::Signal(service, sig) => {
            let p = procs.iter_mut().find(|p| p.name == service).unwrap();
            tokio::task::block_in_place(|| p.signal(sig));
            p.spawn();
        }
    }
    let healed = Instant::now();
    let (stored_then, received_then) = (predicted().await.unwrap_or(0), received());
    let recovery = loop {
        let mut ready = true;
        for p in &procs {
            ready &= p.is_ready().await;
        }
        let stored = predicted().await.unwrap_or(0);
        if ready && stored > stored_then && received() > received_then {
            break healed.elapsed();
        }
        assert!(
            healed.elapsed() < Duration::from_secs(90),
            "{name}: not recovered 90 s after the fault was healed (ready: {ready}, \
             predictions stored {stored_then} -> {stored}, delivered {received_then} -> {})",
            received()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sampler.abort();
    let pause = longest_pause(&samples.lock().unwrap(), struck, healed + recovery);

    // The season ends; every game is predicted and delivered.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let finals = count("SELECT count(*) FROM games WHERE status = 'final'").await;
        let games = count("SELECT count(DISTINCT game_id) FROM predictions").await;
        let delivered = games_delivered(&frames.lock().unwrap()).len() as i64;
        if finals == Some(GAMES) && games == Some(GAMES) && delivered == GAMES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {finals:?} finals, {games:?} games predicted, {delivered} delivered (of {GAMES})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Postgres: each game, its outcome and its prediction once.
    for (sql, what) in [
        ("SELECT count(*) FROM games", "games"),
        ("SELECT count(*) FROM outcomes", "outcomes"),
        ("SELECT count(*) FROM predictions", "predictions"),
    ] {
        assert_eq!(count(sql).await, Some(GAMES), "{name}: {what}");
    }
    // The trainer: its latest evaluation of each version covers every
    // finished game that version predicted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let behind: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT p.model_version, count(*),
                    (SELECT m.sample_count FROM model_metrics m
                     WHERE m.model_version = p.model_version
                     ORDER BY m.evaluated_at DESC LIMIT 1)
             FROM predictions p JOIN outcomes o USING (game_id)
             GROUP BY p.model_version",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let behind: Vec<_> = behind
            .into_iter()
            .filter(|(_, n, scored)| *scored != Some(*n))
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: evaluations behind (version, finished games, latest sample count): {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // No service gone for good.
    for p in &mut procs {
        assert!(p.is_running(), "{name}: {} exited", p.name);
        assert!(p.is_ready().await, "{name}: {} is not ready", p.name);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    ws.abort();

    // The client: it recovered on every reconnect, saw no message twice and
    // every game.
    let recovered = recovered.lock().unwrap().clone();
    assert!(recovered.iter().all(|r| *r), "{name}: {recovered:?}");
    let frames = frames.lock().unwrap().clone();
    let mut by_position: HashMap<(i64, i64), usize> = HashMap::new();
    for f in &frames {
        let key = (
            f["position"]["partition"].as_i64().unwrap(),
            f["position"]["offset"].as_i64().unwrap(),
        );
        *by_position.entry(key).or_default() += 1;
    }
    assert!(
        by_position.values().all(|n| *n == 1),
        "{name}: a message came twice"
    );
    let by_game = games_delivered(&frames);
    let twice = by_game.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "{name}: games delivered twice");

    let report = Report {
        recovery,
        pause,
        frames: frames.len(),
    };
    write_report(name, fault, &report, started.elapsed());
    for mut p in procs {
        p.signal("-TERM");
    }
    drop(broker);
    pool.close().await;
}

/// The longest stretch from `since` to `until` with no new prediction
/// stored.
fn longest_pause(samples: &[(Instant, i64)], since: Instant, until: Instant) -> Duration {
    let mut longest = Duration::ZERO;
    let (mut changed_at, mut last) = (since, None);
    for &(t, n) in samples {
        if last.is_some_and(|l| l != n) {
            longest = longest.max(t - changed_at);
            changed_at = t;
        }
        last = Some(n);
    }
    longest.max(until.saturating_duration_since(changed_at))
}

fn games_delivered(frames: &[Value]) -> HashMap<String, usize> {
    let mut by_game = HashMap::new();
    for f in frames {
        *by_game
            .entry(f["data"]["game_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    by_game
}

fn report_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-matrix")
}

/// Copies the services' logs to `target/tmp/fault-matrix/<cell>/` when the
/// cell ends, pass or fail.
struct KeepLogs {
    from: PathBuf,
    to: PathBuf,
}

impl Drop for KeepLogs {
    fn drop(&mut self) {
        let _ = std::fs::create_dir_all(&self.to);
        for e in std::fs::read_dir(&self.from)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = std::fs::copy(e.path(), self.to.join(e.file_name()));
            }
        }
    }
}

/// `target/tmp/fault-matrix/<cell>.json`, for scripts/fault-matrix.sh.
fn write_report(name: &str, fault: Fault, r: &Report, took: Duration) {
    let dir = report_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let line = json!({
        "cell": name,
        "fault": format!("{fault:?}"),
        "recovery_s": r.recovery.as_secs_f64(),
        "pause_s": r.pause.as_secs_f64(),
        "games": GAMES,
        "frames": r.frames,
        "test_s": took.as_secs_f64(),
    });
    println!("{line}");
    std::fs::write(dir.join(format!("{name}.json")), line.to_string()).unwrap();
}

macro_rules! cells {
    ($($name:ident: $fault:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            cell(stringify!($name), $fault).await;
        }
    )*};
}

cells! {
    postgres_restarted: Fault::PostgresRestarted;
    postgres_unreachable: Fault::PostgresUnreachable(Duration::from_secs(20));
    redis_restarted: Fault::RedisRestarted;
    kafka_broker_down: Fault::BrokerDown(Duration::from_secs(10));
    predictor_sigterm: Fault::Signal("predictor", "-TERM");
    predictor_sigkill: Fault::Signal("predictor", "-KILL");
    trainer_sigterm: Fault::Signal("trainer", "-TERM");
    trainer_sigkill: Fault::Signal("trainer", "-KILL");
    collector_sigterm: Fault::Signal("collector", "-TERM");
    collector_sigkill: Fault::Signal("collector", "-KILL");
    fanout_sigterm: Fault::Signal("fanout", "-TERM");
    fanout_sigkill: Fault::Signal("fanout", "-KILL");
}
