//! The dashboard page in a real headless browser (Chromium through
//! playwright-core, both installed by scripts/setup.sh).

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantasy_messages::testing::model_metrics;
use tokio::sync::mpsc;

use crate::support::{App, Infra, pred, publish};

/// Kills the browser driver if the test ends early.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_prediction_and_model_metrics_published_while_it_is_open() {
    let modules = workspace().join(".tools/browser/node_modules");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        modules.join("playwright-core").is_dir() && Path::new(&chromium).exists(),
        "the dashboard test needs Chromium ({chromium}) and playwright-core ({}): run `bash scripts/setup.sh`",
        modules.display()
    );
    let infra = Infra::new();
    let app = App::spawn(&infra, &[]).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .arg(format!("http://{}/", app.addr))
        .args(["dash-1", "m-7"])
        .env("NODE_PATH", &modules)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "the dashboard test needs Node.js 20 or newer (`node`): run `bash scripts/setup.sh`",
        );
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut driver = Driver(child);
    let (tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let next_line = async |lines: &mut mpsc::UnboundedReceiver<String>| {
        tokio::time::timeout(Duration::from_secs(60), lines.recv())
            .await
            .ok()
            .flatten()
    };

    // The page subscribed; now the stack publishes.
    let live = next_line(&mut lines).await;
    if live.as_deref() != Some("live") {
        let _ = driver.0.kill();
        panic!(
            "the page did not go live: {live:?}\n{}",
            errors.join().unwrap()
        );
    }
    let producer = infra.producer();
    let mut p = pred("dash-1", "nba", 0.42);
    p.model_version = "m-7".into();
    publish(&producer, &[p]).await;
    producer.publish(&model_metrics("m-7")).await.unwrap();

    let seen = next_line(&mut lines).await;
    let status = tokio::task::spawn_blocking(move || driver.0.wait())
        .await
        .unwrap()
        .unwrap();
    let stderr = errors.join().unwrap();
    assert!(status.success(), "the browser check failed: {stderr}");
    let seen: serde_json::Value =
        serde_json::from_str(&seen.expect("what the page showed")).unwrap();
    assert_eq!(seen["game"], "dash-1", "{seen}");
    assert_eq!(seen["home"], "BOS");
    assert_eq!(seen["sport"], "nba");
    assert_eq!(seen["prob"], "42.0%");
    assert_eq!(seen["games"], "1");
    assert_eq!(seen["model"], "m-7");
    assert_eq!(seen["metrics_model"], "m-7");
    assert_eq!(seen["accuracy"], "0.650");
    assert_eq!(seen["brier"], "0.220");
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "script errors on the page"
    );
    app.stop().await.unwrap();
}
