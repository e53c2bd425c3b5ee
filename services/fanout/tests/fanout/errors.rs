//! Bad clients get clear errors; nobody else notices.

use std::time::Duration;

use fantasy_http::auth::Authenticator;
use fantasy_http::{AuthConfig, Claims};
use tokio_tungstenite::tungstenite::Message;

use fantasy_testkit::eventually;

use crate::support::{Infra, Ws, client, pred, publish, spawn};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn token(channels: Option<Vec<&str>>, exp_offset: i64) -> String {
    Authenticator::new(&AuthConfig::with_secret(SECRET))
        .issue(&Claims {
            sub: "viewer".into(),
            exp: (chrono::Utc::now().timestamp() + exp_offset) as u64,
            admin: false,
            channels: channels.map(|c| c.into_iter().map(str::to_owned).collect()),
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_excessive_requests_get_errors_and_others_are_unaffected() {
    let infra = Infra::new();
    let app = spawn(
        &infra,
        &[("MAX_SUBSCRIPTIONS", "3"), ("MAX_FRAME_BYTES", "512")],
    )
    .await;
    let mut bystander = client(&app).await;
    bystander.subscribe(&["all"]).await;
    let mut bad = client(&app).await;

    bad.send_raw(Message::Text("{not json".into())).await;
    assert_eq!(bad.next().await["code"], "malformed");
    bad.send(serde_json::json!({"op": "dance"})).await;
    assert_eq!(bad.next().await["code"], "unknown_op");
    bad.send(serde_json::json!({"op": "subscribe", "channels": ["everything"]}))
        .await;
    assert_eq!(bad.next().await["code"], "unknown_channel");
    bad.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(bad.next().await["code"], "malformed");
    // Over the limit: one error frame, and none of the channels taken.
    bad.send(serde_json::json!({"op": "subscribe", "channels": ["game:a", "game:b", "game:c", "game:d"]})).await;
    let refused = bad.next().await;
    assert_eq!(refused["code"], "too_many_subscriptions", "{refused}");
    bad.send(serde_json::json!({"op": "ping", "id": 42})).await;
    let pong = bad.next().await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_i64()),
        (Some("pong"), Some(42))
    );

    // An oversized frame closes that connection with 1009.
    bad.send_raw(Message::Text("x".repeat(4096).into())).await;
    assert_eq!(bad.close_code(Duration::from_secs(10)).await, Some(1009));

    // The bystander saw none of it and still gets predictions.
    publish(&infra.producer(), &[pred("z1", "nba", 0.4)]).await;
    let got = bystander.predictions(1).await;
    assert_eq!(got[0]["data"]["game_id"], "z1");
    app.stop().await.unwrap();
}

/// One request gets at most one answer per distinct channel, and a request
/// over the limit one error: a client cannot make the server flood it (3,000
/// names used to get 3,000 frames, enough to close the asker as slow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_gets_one_answer_per_distinct_channel_or_one_refusal() {
    let infra = Infra::new();
    let app = spawn(
        &infra,
        &[("MAX_SUBSCRIPTIONS", "3"), ("MAX_FRAME_BYTES", "65536")],
    )
    .await;
    let mut bad = client(&app).await;
    // A channel named thousands of times is one channel: one answer.
    let many = vec!["game:a"; 3000];
    bad.send(serde_json::json!({"op": "subscribe", "channels": many}))
        .await;
    assert_eq!(bad.next().await["channel"], "game:a");
    // Thousands of distinct names: one error frame, not one per name.
    let names: Vec<String> = (0..3000).map(|i| format!("game:g{i}")).collect();
    bad.send(serde_json::json!({"op": "subscribe", "channels": names}))
        .await;
    assert_eq!(bad.next().await["code"], "too_many_subscriptions");
    bad.send(serde_json::json!({"op": "unsubscribe", "channels": names}))
        .await;
    assert_eq!(bad.next().await["code"], "too_many_subscriptions");
    // Up to the limit still works: game:a held, two more fit, a third not.
    bad.send(serde_json::json!({"op": "subscribe", "channels": ["game:b", "game:a", "game:c"]}))
        .await;
    for _ in 0..3 {
        assert_eq!(bad.next().await["type"], "subscribed");
    }
    bad.send(serde_json::json!({"op": "subscribe", "channels": ["game:d"]}))
        .await;
    assert_eq!(bad.next().await["code"], "too_many_subscriptions");
    // Nothing else was queued: the next answer is the pong.
    bad.send(serde_json::json!({"op": "ping", "id": 7})).await;
    assert_eq!(bad.next().await["type"], "pong");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_before_the_upgrade_and_channel_claims_apply() {
    let infra = Infra::new();
    let app = spawn(&infra, &[("AUTH_REQUIRED", "true"), ("JWT_SECRET", SECRET)]).await;
    assert_eq!(
        Ws::connect(app.addr, "/v1/stream", None).await.err(),
        Some(401)
    );
    assert_eq!(
        Ws::connect(app.addr, "/v1/stream", Some("garbage"))
            .await
            .err(),
        Some(401)
    );
    let expired = token(None, -3600);
    assert_eq!(
        Ws::connect(app.addr, "/v1/stream", Some(&expired))
            .await
            .err(),
        Some(401)
    );

    // A token in the query string works (browsers), and its claim limits channels.
    let limited = token(Some(vec!["sport:nba", "game:*"]), 600);
    let mut c = Ws::connect(app.addr, &format!("/v1/stream?token={limited}"), None)
        .await
        .unwrap();
    c.subscribe(&["sport:nba"]).await;
    c.subscribe(&["game:any"]).await;
    c.send(serde_json::json!({"op": "subscribe", "channels": ["all"]}))
        .await;
    assert_eq!(c.next().await["code"], "forbidden_channel");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_with_503() {
    let infra = Infra::new();
    let app = spawn(&infra, &[("MAX_CONNECTIONS", "2")]).await;
    let _a = client(&app).await;
    let _b = client(&app).await;
    assert_eq!(
        Ws::connect(app.addr, "/v1/stream", None).await.err(),
        Some(503)
    );
    drop(_a);
    // The slot frees once the server sees the first one go.
    eventually(
        "the freed slot to be reused",
        Duration::from_secs(5),
        || async { Ws::connect(app.addr, "/v1/stream", None).await.is_ok() },
    )
    .await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_as_idle() {
    let infra = Infra::new();
    let app = spawn(
        &infra,
        &[("PING_INTERVAL", "200ms"), ("IDLE_TIMEOUT", "700ms")],
    )
    .await;
    // This client never reads, so it never answers the server's pings.
    let mut c = client(&app).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.close_code(Duration::from_secs(5)).await, Some(4002));
    app.stop().await.unwrap();
}

/// The status line and headers of a raw HTTP/1.1 `request` to `/v1/stream`.
async fn raw_http(addr: std::net::SocketAddr, headers: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_websocket_upgrade_gets_a_clear_error_and_client_pings_get_pongs() {
    let infra = Infra::new();
    let app = spawn(&infra, &[]).await;

    let plain = raw_http(app.addr, "").await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    assert!(plain.contains("not_a_websocket_upgrade"), "{plain}");
    let old = raw_http(
        app.addr,
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
    )
    .await;
    assert!(old.starts_with("HTTP/1.1 426"), "{old}");
    assert!(
        old.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{old}"
    );

    // A client's pings are answered between the frames the server writes,
    // and every frame arrives whole.
    let mut c = client(&app).await;
    c.subscribe(&["all"]).await;
    let producer = infra.producer();
    let mut pongs = 0;
    for round in 0..20u8 {
        let preds: Vec<_> = (0..5)
            .map(|i| pred(&format!("p{round}-{i}"), "nba", 0.5))
            .collect();
        publish(&producer, &preds).await;
        c.send_raw(Message::Ping(vec![round; 3].into())).await;
    }
    let mut predictions = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while predictions < 100 || pongs < 20 {
        let m = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut c.stream))
            .await
            .expect("every prediction and pong within 30 s")
            .expect("the stream goes on")
            .expect("well-formed frames");
        match m {
            Message::Pong(data) => {
                assert_eq!(&data[..], &[pongs; 3], "pongs answer pings in order");
                pongs += 1;
            }
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                predictions += usize::from(v["type"] == "prediction");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    app.stop().await.unwrap();
}
