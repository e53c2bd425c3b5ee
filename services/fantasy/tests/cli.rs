//! The `fantasy` binary as a user runs it: separate processes over TCP.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantasy_kafka::{Consumer, ConsumerOptions, Handler, KafkaConfig, Producer, Record};
use fantasy_messages::Game;
use fantasy_messages::testing::game;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_fantasy");

/// A `fantasy broker` child process, stopped with SIGTERM on drop.
struct BrokerProcess {
    child: Child,
    bootstrap: String,
}

impl BrokerProcess {
    fn start(dir: &Path) -> Self {
        let file = dir.join("bootstrap");
        let child = Command::new(BIN)
            .args(["broker", "--bootstrap-file"])
            .arg(&file)
            .env("KAFKA_TOPIC_PREFIX", "")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let bootstrap = loop {
            if let Ok(s) = std::fs::read_to_string(&file) {
                break s;
            }
            assert!(Instant::now() < deadline, "fantasy broker wrote no address");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { child, bootstrap }
    }

    /// Sends SIGTERM (what `docker stop` sends) and waits for a clean exit.
    fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "fantasy broker ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fantasy(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Record<Game>>>>);

impl Handler<Game> for Collect {
    async fn handle(&mut self, batch: &[Record<Game>]) -> anyhow::Result<()> {
        self.0.lock().unwrap().extend(batch.iter().cloned());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_produces_to_and_consumes_from_fantasy_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let cfg = KafkaConfig::new(&broker.bootstrap, "cli-test");

    // `fantasy check`, a third process, sees the broker and its five topics.
    let out = fantasy(
        &["check", "--timeout", "5s"],
        &[("KAFKA_BROKERS", broker.bootstrap.as_str())],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let kafka_line = text.lines().find(|l| l.starts_with("kafka")).unwrap();
    assert!(kafka_line.contains(" ok "), "{text}");
    for topic in [
        "games(8)",
        "outcomes(8)",
        "predictions(8)",
        "models(8)",
        "metrics(8)",
    ] {
        assert!(kafka_line.contains(topic), "{kafka_line}");
    }

    // This process produces and consumes over TCP.
    let producer = Producer::new(&cfg).unwrap();
    let sent: Vec<Game> = (0..100).map(|i| game(&format!("cli-{i}"))).collect();
    tokio::time::timeout(Duration::from_secs(30), producer.publish_batch(&sent))
        .await
        .unwrap()
        .unwrap();
    let collected = Collect::default();
    let mut opts = ConsumerOptions::new("cli-test", [cfg.topics().games]);
    opts.session_timeout = Duration::from_secs(4);
    let consumer = Consumer::<Game>::new(&cfg, opts).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer.run(collected.clone(), stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while collected.0.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "messages did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: HashSet<String> = collected
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.value.game_id.clone())
        .collect();
    assert_eq!(ids.len(), 100);
    stop.cancel();
    task.await.unwrap().unwrap();

    let status = broker.terminate();
    assert!(status.success(), "fantasy broker exited with {status}");
    assert!(
        !dir.path().join("bootstrap").exists(),
        "the address file is removed on exit"
    );
}

#[test]
fn check_reports_an_unreachable_dependency_with_a_hint_and_fails() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let brokers = format!("127.0.0.1:{port}");
    let out = fantasy(
        &["check", "--timeout", "1s"],
        &[("KAFKA_BROKERS", &brokers)],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let kafka: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("kafka"))
        .collect();
    assert!(kafka[0].contains("FAIL"), "{text}");
    assert!(kafka[0].contains(&brokers), "{text}");
    assert!(
        kafka[1].contains("hint:") && kafka[1].contains("fantasy broker"),
        "{text}"
    );
}

#[test]
fn a_bad_variable_stops_the_command_and_is_named() {
    let out = fantasy(
        &["check"],
        &[
            ("KAFKA_PARTITIONS", "eight"),
            ("DATABASE_URL", "mysql://root:hunter2@db/x"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KAFKA_PARTITIONS"), "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let name = format!("fantasy_cli_{}", uuid::Uuid::new_v4().simple());
    let mut url = url::Url::parse(&fantasy_db::testing::server_url()).unwrap();
    url.set_path(&name);
    let url = url.to_string();
    for _ in 0..2 {
        let out = fantasy(&["migrate"], &[("DATABASE_URL", &url)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    }
    let out = fantasy(
        &["check", "--timeout", "2s"],
        &[("DATABASE_URL", &url), ("KAFKA_BROKERS", "127.0.0.1:1")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let pg = text.lines().find(|l| l.starts_with("postgres")).unwrap();
    assert!(
        pg.contains(" ok ") && pg.contains("schema up to date"),
        "{text}"
    );

    let admin = sqlx::PgPool::connect(&fantasy_db::testing::server_url())
        .await
        .unwrap();
    sqlx::query(&format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#))
        .execute(&admin)
        .await
        .unwrap();
}

/// `fantasy train` on the database at `url`, announcing on `broker`,
/// artifacts in `store`.
fn train(url: &str, broker: &BrokerProcess, store: &Path) -> std::process::Output {
    let store = url::Url::from_directory_path(store).unwrap();
    train_into(url, broker, store.as_str(), &[])
}

/// `fantasy train` with artifacts at `store_url`, and more variables.
fn train_into(
    url: &str,
    broker: &BrokerProcess,
    store_url: &str,
    more: &[(String, String)],
) -> std::process::Output {
    let mut env = vec![
        ("DATABASE_URL", url),
        ("KAFKA_BROKERS", broker.bootstrap.as_str()),
        ("KAFKA_TOPIC_PREFIX", ""),
        ("MODEL_STORE_URL", store_url),
    ];
    env.extend(more.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    fantasy(&["train"], &env)
}

/// A simulated season's games and results in the database.
async fn store_a_season(db: &fantasy_db::Db) {
    let season = fantasy_sim::Season::simulate(&fantasy_sim::SimConfig {
        seed: 5,
        teams: 20,
        games_per_team: 60,
        ..fantasy_sim::SimConfig::default()
    });
    let (games, outcomes) =
        trainer::sim::season_messages(&season, fantasy_features::EloParams::default());
    db.upsert_games(&games).await.unwrap();
    db.upsert_outcomes(&outcomes).await.unwrap();
}

/// [`train`] that must succeed: its report.
fn trained(url: &str, broker: &BrokerProcess, store: &Path) -> serde_json::Value {
    let out = train(url, broker, store);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_once_promotes_the_first_model_rejects_a_same_one_and_fails_on_no_history() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let t = fantasy_db::testing::TestDb::new().await.unwrap();

    // A bad trainer variable: named, exit 2, before anything runs.
    let out = fantasy(
        &["train"],
        &[("DATABASE_URL", &t.url), ("TRAIN_MIN_GAMES", "lots")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TRAIN_MIN_GAMES"), "{err}");

    // Too little history: a clear error, exit 1, nothing registered.
    let out = train(&t.url, &broker, dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TRAIN_MIN_GAMES"), "{err}");

    store_a_season(&t.db).await;

    let report = trained(&t.url, &broker, dir.path());
    assert_eq!(report["reason"], "cli");
    assert_eq!(report["decision"], "promoted");
    let version = report["version"].as_str().unwrap().to_owned();
    let active: Option<String> = sqlx::query_scalar(
        "SELECT version FROM models WHERE model_name = 'win-prob' AND status = 'active'",
    )
    .fetch_optional(t.db.pool())
    .await
    .unwrap();
    assert_eq!(active.as_deref(), Some(version.as_str()));
    let uri = report["artifact_uri"].as_str().unwrap();
    assert!(
        url::Url::parse(uri)
            .unwrap()
            .to_file_path()
            .unwrap()
            .exists()
    );
    // Announced on `models`, where the predictors pick it up.
    let kafka = KafkaConfig::new(&broker.bootstrap, "cli-test");
    let reader = fantasy_kafka::TailReader::open(
        &kafka,
        &kafka.topics().models,
        fantasy_kafka::TailStart::LastPerPartition(100),
    )
    .await
    .unwrap();
    let mut announced = Vec::new();
    while let Some(r) = reader.recv_timeout(Duration::from_secs(3)).await {
        let v: serde_json::Value = serde_json::from_slice(&r.unwrap().payload.unwrap()).unwrap();
        announced.push(v);
    }
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0]["version"], version.as_str());
    assert_eq!(announced[0]["status"], "active");

    // The same history again: the candidate is not better by the margin,
    // so it is recorded as rejected and the first version stays active.
    let report = trained(&t.url, &broker, dir.path());
    assert_eq!(report["decision"], "rejected", "{report}");
    assert_eq!(report["active"]["version"], version.as_str());
    let runs: Vec<(String, String)> =
        sqlx::query_as("SELECT trigger, status FROM training_runs ORDER BY id")
            .fetch_all(t.db.pool())
            .await
            .unwrap();
    assert_eq!(
        runs,
        [
            ("cli".into(), "promoted".into()),
            ("cli".into(), "rejected".into())
        ]
    );
    t.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_once_stores_the_model_in_s3_with_keys_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let s3 = fantasy_registry::testing::S3Server::start().unwrap();
    s3.create_bucket("models").await.unwrap();
    let t = fantasy_db::testing::TestDb::new().await.unwrap();
    store_a_season(&t.db).await;

    // The stacks' setting: s3://models/fantasy, the keys as secret files.
    let out = train_into(&t.url, &broker, "s3://models/fantasy", &s3.env());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["decision"], "promoted", "{report}");
    let (uri, sha): (String, String) = sqlx::query_as(
        "SELECT artifact_uri, sha256 FROM models WHERE model_name = 'win-prob' AND status = 'active'",
    )
    .fetch_one(t.db.pool())
    .await
    .unwrap();
    assert!(uri.starts_with("s3://models/fantasy/win-prob/"), "{uri}");
    assert_eq!(report["artifact_uri"], uri.as_str());
    // What a predictor fetches: the bytes the registry recorded (the
    // SHA-256 is checked), which the trainer checked with ONNX Runtime.
    let bytes = fantasy_registry::fetch_artifact_with(&uri, &sha, &s3.settings())
        .await
        .unwrap();
    assert!(bytes.len() > 100, "{} bytes", bytes.len());
    t.drop_database().await.unwrap();
}

#[test]
fn run_starts_a_service_as_its_binary_does() {
    // The service's own configuration is read: the collector refuses to
    // start without sources, naming the variable.
    let out = fantasy(&["run", "collector"], &[("COLLECTOR_SOURCES", "")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("collector: ") && err.contains("COLLECTOR_SOURCES"),
        "{err}"
    );

    // A fanout serves, and SIGTERM stops it cleanly.
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["run", "fanout"])
        .env("KAFKA_BROKERS", &broker.bootstrap)
        .env("KAFKA_TOPIC_PREFIX", "")
        .env("AUTH_REQUIRED", "false")
        .env("HTTP_ADDR", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            use std::io::{Read as _, Write as _};
            s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "fantasy run fanout did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "fantasy run fanout ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exited with {status}");
}
