//! The stack as separate processes: `fantasy broker` and the service
//! binaries (built next to `fantasy` by `cargo nextest run --workspace`).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub const FANTASY: &str = env!("CARGO_BIN_EXE_fantasy");

pub fn binary(name: &str) -> PathBuf {
    let path = Path::new(FANTASY).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries (cargo build --bins, or run the tests with --workspace)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebSocket client on `all` that reconnects and resubscribes with the
/// positions it has seen; keeps every prediction frame.
pub async fn client(
    addr: String,
    frames: Arc<Mutex<Vec<Value>>>,
    recovered: Arc<Mutex<Vec<bool>>>,
) {
    let mut positions: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok((mut ws, _)) =
            tokio_tungstenite::client_async(format!("ws://{addr}/v1/stream"), tcp).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let since = serde_json::json!({ "all": positions });
        let sub = serde_json::json!({"op": "subscribe", "channels": ["all"], "since": since});
        if ws.send(Message::text(sub.to_string())).await.is_err() {
            continue;
        }
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(t) = frame else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            match v["type"].as_str() {
                Some("subscribed") => recovered.lock().unwrap().push(v["recovered"] == true),
                Some("prediction") => {
                    let p = v["position"]["partition"].as_i64().unwrap().to_string();
                    let o = v["position"]["offset"].as_i64().unwrap();
                    let e = positions.entry(p).or_insert(-1);
                    *e = (*e).max(o);
                    frames.lock().unwrap().push(v);
                }
                _ => {}
            }
        }
    }
}

/// The settings the service processes share: `settings` (the broker,
/// Postgres, Redis), no authentication, models under `dir`, the collector
/// on `season`, a first model after 60 games, warnings as JSON.
pub fn stack_env(dir: &Path, season: &str, settings: &[(&str, &str)]) -> Vec<(String, String)> {
    let models = format!("file://{}/models", dir.display());
    [
        ("KAFKA_CREATE_TOPICS", "false"),
        ("AUTH_REQUIRED", "false"),
        ("MODEL_STORE_URL", models.as_str()),
        ("COLLECTOR_SOURCES", season),
        ("TRAIN_MIN_GAMES", "60"),
        ("RUST_LOG", "warn"),
        ("LOG_FORMAT", "json"),
    ]
    .iter()
    .chain(settings)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A service process; its output goes to `<dir>/<name>.log`.
pub struct Proc {
    pub name: &'static str,
    pub addr: String,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl Proc {
    pub fn start(name: &'static str, env: &[(String, String)], dir: &Path) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut p = Proc {
            name,
            addr,
            env: env.to_vec(),
            dir: dir.to_owned(),
            child: None,
        };
        p.spawn();
        p
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", self.name)))
            .unwrap();
        let child = Command::new(binary(self.name))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HTTP_ADDR", &self.addr)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn signal(&mut self, sig: &str) {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} ignored {sig}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its `/ready` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        let http = reqwest::Client::new();
        http.get(format!("http://{}/ready", self.addr))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    /// The process is running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("http://{}/ready", self.addr)).send().await
                && r.status() == 200
            {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join(format!("{}.log", self.name)))
                .unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "{} not ready in {within:?}; its log:\n{log}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `fantasy broker`: an embedded Kafka cluster in a process of its own,
/// with the stack's topics; stopped (SIGTERM) when dropped.
pub struct Broker {
    /// Its bootstrap address, for `KAFKA_BROKERS`.
    pub addr: String,
    child: Child,
}

impl Broker {
    /// One broker, `partitions` partitions per topic; it writes its address
    /// into `dir`.
    pub fn start(partitions: u32, dir: &Path) -> Self {
        let bootstrap_file = dir.join("bootstrap");
        let child = Command::new(FANTASY)
            .args(["broker", "--brokers", "1", "--partitions"])
            .arg(partitions.to_string())
            .arg("--bootstrap-file")
            .arg(&bootstrap_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            if let Ok(s) = std::fs::read_to_string(&bootstrap_file) {
                break s;
            }
            assert!(Instant::now() < deadline, "fantasy broker wrote no address");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { addr, child }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
