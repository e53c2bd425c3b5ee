//! `spawn_app`, a WebSocket client, and prediction helpers.

use std::time::Duration;

use fantasy_config::Env;
use fantasy_kafka::{EmbeddedBroker, KafkaConfig, Producer};
use fantasy_messages::testing::prediction;
use fantasy_messages::{Prediction, Topic};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::sync::CancellationToken;

/// The broker, topics and Redis prefix fanout instances of a test share.
pub struct Infra {
    pub _broker: EmbeddedBroker,
    pub kafka: KafkaConfig,
    pub env: Vec<(String, String)>,
    pub redis_prefix: String,
}

impl Infra {
    pub fn new() -> Self {
        let broker = EmbeddedBroker::start(3).unwrap();
        let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
        let specs: Vec<_> = Topic::ALL.iter().map(|t| t.spec(&prefix, 8)).collect();
        broker.create_topics(&specs).unwrap();
        let mut kafka = KafkaConfig::new(broker.bootstrap_servers(), "fanout-test");
        kafka.topic_prefix = prefix.clone();
        let redis_prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        let env = vec![
            (
                "KAFKA_BROKERS".into(),
                broker.bootstrap_servers().to_owned(),
            ),
            ("KAFKA_TOPIC_PREFIX".into(), prefix),
            ("REDIS_PREFIX".into(), redis_prefix.clone()),
            ("SHUTDOWN_TIMEOUT".into(), "5s".into()),
        ];
        Self {
            _broker: broker,
            kafka,
            env,
            redis_prefix,
        }
    }

    pub fn producer(&self) -> Producer {
        Producer::new(&self.kafka).unwrap()
    }
}

pub struct App {
    pub addr: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl App {
    pub async fn spawn(infra: &Infra, extra: &[(&str, &str)]) -> App {
        fantasy_telemetry::install_crypto_provider();
        let mut pairs = infra.env.clone();
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cfg =
            fanout::Config::for_profile(&Env::from_pairs(pairs), fantasy_config::Profile::Local)
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(fanout::run(cfg, listener, shutdown.clone()));
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/ready")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(!task.is_finished(), "the fanout exited during start-up");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fanout did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        App {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Ws {
        Ws::connect(&self.addr, "/v1/stream", None).await.unwrap()
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the fanout did not stop within 30 s")
            .unwrap()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A WebSocket client speaking the protocol.
pub struct Ws {
    pub stream: WebSocketStream<TcpStream>,
}

impl Ws {
    /// Connects to `path`; `Err(status)` when the upgrade is refused.
    pub async fn connect(addr: &str, path: &str, token: Option<&str>) -> Result<Ws, u16> {
        Self::connect_with(addr, path, token, None).await
    }

    /// Like [`Ws::connect`], with a small receive buffer (a slow client).
    pub async fn connect_with(
        addr: &str,
        path: &str,
        token: Option<&str>,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, u16> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        if let Some(t) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        match tokio_tungstenite::client_async(request, tcp).await {
            Ok((stream, _)) => Ok(Ws { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("websocket handshake: {e}"),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.stream.send(m).await.unwrap();
    }

    /// The next JSON frame within `wait`; `None` on timeout.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match m.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(20))
            .await
            .expect("a frame within 20 s")
    }

    /// Subscribes and returns the `subscribed` frame.
    pub async fn subscribe(&mut self, channels: &[&str]) -> Value {
        self.send(serde_json::json!({"op": "subscribe", "channels": channels}))
            .await;
        let v = self.next().await;
        assert_eq!(v["type"], "subscribed", "{v}");
        v
    }

    /// The close code the server sent, reading past other frames.
    pub async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match m {
                Ok(Message::Close(Some(frame))) => return Some(frame.code.into()),
                Ok(Message::Close(None)) => return Some(1005),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Reads `n` prediction frames (skipping other types).
    pub async fn predictions(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let v = self.next().await;
            if v["type"] == "prediction" {
                out.push(v);
            }
        }
        out
    }
}

pub fn pred(game_id: &str, sport: &str, prob: f32) -> Prediction {
    let mut p = prediction(game_id, prob);
    p.sport = sport.into();
    p
}

/// Publishes one by one, so the order on each partition is the call order.
pub async fn publish(producer: &Producer, predictions: &[Prediction]) {
    producer.publish_batch(predictions).await.unwrap();
}

pub fn ids(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["data"]["game_id"].as_str().unwrap().to_owned())
        .collect()
}
