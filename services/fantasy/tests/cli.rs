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
