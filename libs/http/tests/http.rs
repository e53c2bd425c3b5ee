//! The shared HTTP stack over real HTTP on a random port.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Extension, Router, middleware};
use fantasy_http::auth::{Authenticator, authenticate};
use fantasy_http::layers::{self, rate_limit};
use fantasy_http::{ApiError, ApiJson, AuthConfig, Claims, Client, HttpConfig, RateLimiter, serve};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct Body {
    n: u32,
}

async fn echo(ApiJson(b): ApiJson<Body>) -> String {
    b.n.to_string()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late"
}

async fn boom() -> Result<(), ApiError> {
    Err(ApiError::internal("database password is hunter2"))
}

async fn whoami(Extension(c): Extension<Client>) -> String {
    c.id
}

async fn start(
    cfg: HttpConfig,
    auth: AuthConfig,
    limiter: Option<RateLimiter>,
) -> (String, Arc<Authenticator>) {
    fantasy_telemetry::install_crypto_provider();
    let auth = Arc::new(Authenticator::new(&auth));
    let mut api = Router::new()
        .route("/echo", post(echo))
        .route("/slow", get(slow))
        .route("/boom", get(boom))
        .route("/whoami", get(whoami));
    if let Some(l) = limiter {
        api = api.layer(middleware::from_fn_with_state(Arc::new(l), rate_limit));
    }
    let api = api.layer(middleware::from_fn_with_state(auth.clone(), authenticate));
    let router = layers::apply(api, &cfg, "test");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, router, CancellationToken::new()));
    (format!("http://{addr}"), auth)
}

async fn error_of(r: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(ct, "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap().to_owned(),
        body,
    )
}

#[tokio::test]
async fn bad_bodies_get_clear_json_errors() {
    let mut cfg = HttpConfig::new(0);
    cfg.max_body_bytes = 4096;
    let (base, _) = start(cfg, AuthConfig::disabled(), None).await;
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>, ct: Option<&str>| {
        let mut r = http.post(format!("{base}/echo")).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let ok = post(br#"{"n": 7}"#.to_vec(), Some("application/json"))
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "7");
    assert!(matches!(
        error_of(post(br#"{"n": 7"#.to_vec(), Some("application/json")).await.unwrap()).await,
        (400, code, _) if code == "malformed_json"
    ));
    let (status, code, body) = error_of(
        post(br#"{"n": "seven"}"#.to_vec(), Some("application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_body"));
    assert!(
        body["error"]["message"].as_str().unwrap().contains("n"),
        "{body}"
    );
    assert!(matches!(
        error_of(post(br#"{"n": 7}"#.to_vec(), Some("text/plain")).await.unwrap()).await,
        (415, code, _) if code == "unsupported_media_type"
    ));
    assert!(matches!(
        error_of(post(br#"{"n": 7}"#.to_vec(), None).await.unwrap()).await,
        (415, _, _)
    ));
    let big = format!(r#"{{"n": 1, "pad": "{}"}}"#, "x".repeat(10_000));
    assert!(matches!(
        error_of(post(big.into_bytes(), Some("application/json")).await.unwrap()).await,
        (413, code, _) if code == "payload_too_large"
    ));
}

#[tokio::test]
async fn internal_errors_hide_their_cause_and_slow_requests_time_out() {
    let mut cfg = HttpConfig::new(0);
    cfg.request_timeout = Duration::from_millis(200);
    let (base, _) = start(cfg, AuthConfig::disabled(), None).await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{base}/boom")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    let (status, code, body) = error_of(r).await;
    assert_eq!((status, code.as_str()), (500, "internal"));
    assert!(!body.to_string().contains("hunter2"));

    let r = http.get(format!("{base}/slow")).send().await.unwrap();
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (503, "timeout"));
}

#[tokio::test]
async fn requests_past_the_concurrency_limit_are_shed_at_once() {
    let mut cfg = HttpConfig::new(0);
    cfg.concurrency_limit = 2;
    cfg.request_timeout = Duration::from_secs(10);
    let (base, _) = start(cfg, AuthConfig::disabled(), None).await;
    let http = reqwest::Client::new();
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(http.get(format!("{base}/slow")).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = http.get(format!("{base}/slow")).send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shed, not queued"
    );
    assert_eq!(r.headers()["retry-after"], "1");
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (503, "overloaded"));
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap().status(), 200);
    }
}

#[tokio::test]
async fn tokens_are_required_when_auth_is_on_and_rate_limits_apply_per_client() {
    let secret = "0123456789abcdef0123456789abcdef";
    let (base, auth) = start(
        HttpConfig::new(0),
        AuthConfig::with_secret(secret),
        Some(RateLimiter::new(1, 3)),
    )
    .await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{base}/whoami")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_of(r).await.0, 401);

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |sub: &str| {
        auth.issue(&Claims {
            sub: sub.into(),
            exp,
            admin: false,
            channels: None,
        })
        .unwrap()
    };
    let (a, b) = (token("alice"), token("bob"));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = http
            .get(format!("{base}/whoami"))
            .bearer_auth(&a)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // Another client has its own budget.
    let r = http
        .get(format!("{base}/whoami"))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "bob");
    let r = http
        .get(format!("{base}/whoami"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    if r.status() == 429 {
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(error_of(r).await.1, "rate_limited");
    }
}
