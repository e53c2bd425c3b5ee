//! The fanout's rig: instances on the kit's broker and a Redis prefix of the
//! test's own, a WebSocket client, and prediction helpers.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use fantasy_config::Env;
use fantasy_kafka::Producer;
use fantasy_messages::Prediction;
use fantasy_messages::testing::prediction;
use fantasy_testkit::{Kafka, READY_WITHIN, Spawned, env_with};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// The broker, topics and Redis prefix fanout instances of a test share.
pub struct Infra {
    pub kafka: Kafka,
    pub env: Env,
    pub redis_prefix: String,
}

impl Infra {
    pub fn new() -> Self {
        let kafka = Kafka::start(3, 8, "fanout-test");
        let redis_prefix = fantasy_testkit::redis_prefix();
        let env = kafka
            .env()
            .with("REDIS_PREFIX", &redis_prefix)
            .with("SHUTDOWN_TIMEOUT", "5s");
        Self {
            kafka,
            env,
            redis_prefix,
        }
    }

    pub fn producer(&self) -> Producer {
        self.kafka.producer()
    }
}

/// A ready fanout with the infra's settings plus `extra`.
pub async fn spawn(infra: &Infra, extra: &[(&str, &str)]) -> Spawned {
    let cfg =
        fanout::Config::for_profile(&env_with(&infra.env, extra), fantasy_config::Profile::Local)
            .unwrap();
    let mut app = fantasy_testkit::spawn(fanout::run, cfg).await;
    app.wait_ready(READY_WITHIN).await;
    app
}

/// A client of `app` on `/v1/stream`.
pub async fn client(app: &Spawned) -> Ws {
    Ws::connect(app.addr, "/v1/stream", None).await.unwrap()
}

/// A WebSocket client speaking the protocol.
pub struct Ws {
    pub stream: WebSocketStream<TcpStream>,
}

impl Ws {
    /// Connects to `path`; `Err(status)` when the upgrade is refused.
    pub async fn connect(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Ws, u16> {
        Self::connect_with(addr, path, token, None).await
    }

    /// Like [`Ws::connect`], with a small receive buffer (a slow client).
    pub async fn connect_with(
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, u16> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let tcp = socket.connect(addr).await.unwrap();
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

    /// The next message before `deadline`; `None` on timeout or once the
    /// stream has ended.
    async fn recv_before(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        tokio::time::timeout_at(deadline, self.stream.next())
            .await
            .ok()?
    }

    /// The next JSON frame within `wait`; `None` on timeout.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.recv_before(deadline).await?.ok()? {
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
            match self.recv_before(deadline).await? {
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

    /// Reads prediction frames until every one of `markers` came (see
    /// [`publish_markers`]); returns the others, in order. Everything the
    /// fanout read before the markers came before them: what this returns is
    /// all the client got of it.
    pub async fn until(&mut self, markers: &Markers) -> Vec<Value> {
        let mut waiting: HashSet<&str> = markers.ids.iter().map(String::as_str).collect();
        let mut others = Vec::new();
        while !waiting.is_empty() {
            let v = self.next().await;
            if v["type"] != "prediction" {
                continue;
            }
            let id = v["data"]["game_id"].as_str().unwrap();
            if !waiting.remove(id) && !markers.ids.iter().any(|m| m == id) {
                others.push(v);
            }
        }
        others
    }
}

/// Predictions published after the ones a test checks, one on every
/// partition of the topic (see [`fantasy_testkit::Kafka::publish_markers`]).
pub struct Markers {
    ids: Vec<String>,
}

impl Infra {
    /// Publishes a `sport` marker on every partition.
    pub async fn publish_markers(&self, producer: &Producer, sport: &str) -> Markers {
        let markers = self
            .kafka
            .publish_markers(producer, |i| pred(&format!("marker-{i}"), sport, 0.5))
            .await;
        Markers {
            ids: markers.into_iter().map(|m| m.game_id).collect(),
        }
    }
}

/// A prediction of a new game event (the hub passes over a repeat of an
/// event already published).
pub fn pred(game_id: &str, sport: &str, prob: f32) -> Prediction {
    let mut p = prediction(game_id, prob);
    p.sport = sport.into();
    p.event_produced_at = Some(chrono::Utc::now());
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
