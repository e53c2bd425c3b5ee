//! Secrets never reach the logs. The four service binaries run with known
//! secret values (the JWT key, the Postgres and Redis passwords, S3 keys)
//! under `LOG_FORMAT=json` at debug level, are exercised with good and bad
//! tokens (in headers and in the WebSocket's query string), and every line
//! they wrote is scanned for each secret and each token.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::procs::{Broker, Proc};
use common::token;
use fantasy_db::testing::TestDb;
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

const JWT_SECRET: &str = "jwt-secret-4b1f9e27c3d85a60e1b7f2c94d0a6e38";
const PG_PASSWORD: &str = "pg-password-8d2c61fa";
const REDIS_PASSWORD: &str = "redis-password-5a93e0c7";
const AWS_SECRET: &str = "aws-secret-key-e7c1b2d9f04a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_and_no_token_reaches_the_logs() {
    fantasy_telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await.unwrap();
    let broker = Broker::start(2, dir.path());
    // The local Postgres trusts loopback connections and the local Redis's
    // default user takes any password: the passwords are sent, and logged
    // if anything logs them.
    let mut pg = url::Url::parse(&db.url).unwrap();
    pg.set_password(Some(PG_PASSWORD)).unwrap();
    let redis = format!("redis://default:{REDIS_PASSWORD}@127.0.0.1:6379");
    let env: Vec<(String, String)> = [
        ("KAFKA_BROKERS", broker.addr.as_str()),
        ("KAFKA_CREATE_TOPICS", "false"),
        ("DATABASE_URL", pg.as_str()),
        ("REDIS_URL", &redis),
        (
            "REDIS_PREFIX",
            &format!("test:{}:", uuid::Uuid::new_v4().simple()),
        ),
        ("JWT_SECRET", JWT_SECRET),
        ("AWS_ACCESS_KEY_ID", "AKIASECRETSTEST"),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        (
            "MODEL_STORE_URL",
            &format!("file://{}/models", dir.path().display()),
        ),
        (
            "COLLECTOR_SOURCES",
            "sim:nba?seed=3&teams=10&games=24&history=16&minutes=0.2&batch=20",
        ),
        ("TRAIN_MIN_GAMES", "60"),
        ("RUST_LOG", "debug"),
        ("LOG_FORMAT", "json"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let fanout = Proc::start("fanout", &env, dir.path());
    let trainer = Proc::start("trainer", &env, dir.path());
    let predictor = Proc::start("predictor", &env, dir.path());
    let collector = Proc::start("collector", &env, dir.path());
    fanout.wait_ready(Duration::from_secs(60)).await;
    trainer.wait_ready(Duration::from_secs(60)).await;
    collector.wait_ready(Duration::from_secs(60)).await;
    predictor.wait_ready(Duration::from_secs(120)).await;

    let admin = token(JWT_SECRET, true, 600, None);
    let user = token(JWT_SECRET, false, 600, None);
    let expired = token(JWT_SECRET, true, -600, None);
    let forged = token("another-secret-of-at-least-32-bytes!!", true, 600, None);
    let tokens = [&admin, &user, &expired, &forged];
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, url: String, bearer: Option<&String>| {
        let mut request = http.request(method, url);
        if let Some(t) = bearer {
            request = request.bearer_auth(t);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let (p, t, c) = (&predictor.addr, &trainer.addr, &collector.addr);
    // What each token gets is the authorization tests' business; here the
    // calls only have to go through every path that could log them.
    for bearer in tokens.iter().copied().map(Some).chain([None]) {
        for (method, url) in [
            (reqwest::Method::GET, format!("http://{p}/v1/models/active")),
            (
                reqwest::Method::GET,
                format!("http://{p}/v1/predictions/nba-sim-3-1"),
            ),
            (reqwest::Method::GET, format!("http://{t}/v1/models")),
            (reqwest::Method::GET, format!("http://{t}/v1/runs")),
            (reqwest::Method::POST, format!("http://{t}/v1/rollback")),
            (reqwest::Method::GET, format!("http://{c}/v1/sources")),
        ] {
            call(method, url, bearer).await;
        }
        let predict = http
            .post(format!("http://{p}/v1/predict"))
            .json(&serde_json::json!({ "features": [0.1, 0.2, 0.3] }));
        let predict = match bearer {
            Some(b) => predict.bearer_auth(b),
            None => predict,
        };
        predict.send().await.unwrap();
    }
    assert_eq!(
        call(
            reqwest::Method::GET,
            format!("http://{t}/v1/models"),
            Some(&admin)
        )
        .await,
        200,
        "the admin token is good: the scan below covers a served request"
    );
    assert_eq!(
        call(
            reqwest::Method::GET,
            format!("http://{t}/v1/models"),
            Some(&forged)
        )
        .await,
        401
    );
    // The fanout takes its token in the query string (browsers cannot set
    // WebSocket headers): the URI must not be logged with it.
    for t in tokens {
        let url = format!("ws://{}/v1/stream?token={t}", fanout.addr);
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await {
            ws.send(Message::text(r#"{"op":"subscribe","channels":["all"]}"#))
                .await
                .unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
            let _ = ws.close(None).await;
        }
    }
    for p in [&predictor, &trainer, &collector, &fanout] {
        http.get(format!("http://{}/metrics", p.addr))
            .send()
            .await
            .unwrap();
    }

    for mut p in [collector, predictor, trainer, fanout] {
        p.signal("-TERM");
    }
    drop(broker);

    let secrets = [
        ("JWT_SECRET", JWT_SECRET),
        ("the Postgres password", PG_PASSWORD),
        ("the Redis password", REDIS_PASSWORD),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ("the admin token", &admin),
        ("the user token", &user),
        ("the expired token", &expired),
        ("the forged token", &forged),
    ];
    // A token's signature alone is enough to replay it with its header and
    // claims, which are not secret: look for that too.
    let signatures: Vec<(String, &str)> = tokens
        .iter()
        .map(|t| {
            (
                format!("a token's signature ({t})"),
                t.rsplit('.').next().unwrap(),
            )
        })
        .collect();
    for name in ["predictor", "trainer", "collector", "fanout"] {
        let log = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let debug = lines
            .iter()
            .filter(|l| l.contains(r#""level":"DEBUG""#))
            .count();
        assert!(
            debug > 10,
            "{name} wrote {debug} debug lines of {}: the scan must read a debug log",
            lines.len()
        );
        for (what, secret) in secrets
            .iter()
            .map(|(w, s)| ((*w).to_owned(), *s))
            .chain(signatures.iter().map(|(w, s)| (w.clone(), *s)))
        {
            if let Some(line) = lines.iter().find(|l| l.contains(secret)) {
                panic!("{name}'s log carries {what}:\n{line}");
            }
        }
    }
}
