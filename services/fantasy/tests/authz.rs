//! The authorization matrix: every route of every service, called with no
//! token, an expired one, a forged one (another key), a valid one without
//! the admin claim and a valid admin one, answers as its decision says.
//!
//! The REST routes come from each service's own OpenAPI document (built
//! from the same `OpenApiRouter` as its router, so they cannot differ): a
//! route with no decision in [`DECISIONS`] fails the test, as does a
//! decision for a route that is gone, or a document whose security does
//! not match the decision. `/health`, `/ready`, `/metrics` and
//! `/openapi.json` stay open by design (probes, Prometheus, clients reading
//! the contract); the fanout's WebSocket takes its token in the query
//! string, and its `channels` claim limits what a client may subscribe to.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::token;
use fantasy_config::Profile;
use fantasy_http::openapi::{Access, BEARER};
use fantasy_testkit::{READY_WITHIN, Rig, Spawned, env_with};
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const SECRET: &str = "authz-test-secret-0123456789abcdef";

/// Who may call each REST route: (service, method, path template).
const DECISIONS: &[(&str, &str, &str, Access)] = &[
    ("predictor", "POST", "/v1/predict", Access::Token),
    ("predictor", "POST", "/v1/predict/batch", Access::Token),
    (
        "predictor",
        "GET",
        "/v1/predictions/{game_id}",
        Access::Token,
    ),
    ("predictor", "GET", "/v1/models/active", Access::Token),
    ("predictor", "GET", "/v1/experiment", Access::Token),
    ("trainer", "GET", "/v1/models", Access::Admin),
    ("trainer", "GET", "/v1/models/{version}", Access::Admin),
    (
        "trainer",
        "POST",
        "/v1/models/{version}/promote",
        Access::Admin,
    ),
    ("trainer", "POST", "/v1/rollback", Access::Admin),
    ("trainer", "POST", "/v1/train", Access::Admin),
    ("trainer", "GET", "/v1/runs", Access::Admin),
    ("trainer", "GET", "/v1/experiments", Access::Admin),
    ("trainer", "POST", "/v1/experiments", Access::Admin),
    ("trainer", "GET", "/v1/experiments/{id}", Access::Admin),
    (
        "trainer",
        "POST",
        "/v1/experiments/{id}/pause",
        Access::Admin,
    ),
    (
        "trainer",
        "POST",
        "/v1/experiments/{id}/resume",
        Access::Admin,
    ),
    (
        "trainer",
        "POST",
        "/v1/experiments/{id}/stop",
        Access::Admin,
    ),
    (
        "trainer",
        "POST",
        "/v1/experiments/{id}/promote",
        Access::Admin,
    ),
    // What is being collected, not what was: no token needed.
    ("collector", "GET", "/v1/sources", Access::Open),
];

/// Open on every service, by design.
const OPEN_BY_DESIGN: &[&str] = &["/health", "/ready", "/metrics", "/openapi.json"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Expired,
    Forged,
    User,
    Admin,
}

const CALLERS: [Caller; 5] = [
    Caller::Anonymous,
    Caller::Expired,
    Caller::Forged,
    Caller::User,
    Caller::Admin,
];

impl Caller {
    fn token(self) -> Option<String> {
        match self {
            Caller::Anonymous => None,
            // Past jsonwebtoken's 60 s of leeway.
            Caller::Expired => Some(token(SECRET, true, -600, None)),
            Caller::Forged => Some(token("another-key-of-at-least-32-bytes!!", true, 600, None)),
            Caller::User => Some(token(SECRET, false, 600, None)),
            Caller::Admin => Some(token(SECRET, true, 600, None)),
        }
    }
}

/// What `caller` must get from a route with `access`: `Some(status)`, or
/// `None` for "let through" (the handler's own answer, anything but 401
/// and 403).
fn expected(access: Access, caller: Caller) -> Option<u16> {
    match (access, caller) {
        (Access::Open, _) => None,
        (_, Caller::Anonymous | Caller::Expired | Caller::Forged) => Some(401),
        (Access::Token, Caller::User | Caller::Admin) => None,
        (Access::Admin, Caller::User) => Some(403),
        (Access::Admin, Caller::Admin) => None,
    }
}

/// Each operation of `doc`: (method, path template, whether it declares
/// the bearer scheme).
fn operations(doc: &serde_json::Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get(BEARER).is_some()));
            out.push((method.to_uppercase(), path.clone(), secured));
        }
    }
    out
}

/// A concrete path for a template: each `{param}` becomes a value no route
/// holds data for.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|part| {
            if part.starts_with('{') {
                "authz-none"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(app: &Spawned, method: &str, path: &str, caller: Caller) -> u16 {
    let mut request = app
        .http
        .request(method.parse().unwrap(), app.url(path))
        .timeout(Duration::from_secs(30));
    if method == "POST" {
        request = request.json(&serde_json::json!({}));
    }
    if let Some(t) = caller.token() {
        request = request.bearer_auth(t);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_its_decision_says() {
    let store = tempfile::tempdir().unwrap();
    let store_url = format!("file://{}", store.path().display());
    let rig = Rig::start(
        1,
        2,
        "authz-test",
        &[
            ("JWT_SECRET", SECRET),
            ("AUTH_REQUIRED", "true"),
            ("MODEL_STORE_URL", &store_url),
            ("INFERENCE_DEVICE", "cpu"),
            ("SHUTDOWN_TIMEOUT", "5s"),
            ("COLLECTOR_SOURCES", "sim:nba?seed=1&teams=4&games=2"),
        ],
    )
    .await;
    let env = env_with(&rig.env, &[]);
    let mut services = vec![
        (
            "predictor",
            fantasy_testkit::spawn(
                predictor::run,
                predictor::Config::for_profile(&env, Profile::Service).unwrap(),
            )
            .await,
        ),
        (
            "trainer",
            fantasy_testkit::spawn(
                trainer::run,
                trainer::Config::for_profile(&env, Profile::Service).unwrap(),
            )
            .await,
        ),
        (
            "collector",
            fantasy_testkit::spawn(collector::run, collector::Config::from_env(&env).unwrap())
                .await,
        ),
    ];
    for (_, app) in &mut services {
        app.wait_ok("/health", READY_WITHIN).await;
    }

    let mut decided = BTreeSet::new();
    let mut failures = Vec::new();
    for (service, app) in &services {
        for path in OPEN_BY_DESIGN {
            let status = call(app, "GET", path, Caller::Anonymous).await;
            if status == 401 || status == 403 {
                failures.push(format!("{service} GET {path}: {status} without a token"));
            }
        }
        let doc = app.get_json("/openapi.json").await;
        let ops = operations(&doc);
        assert!(
            !ops.is_empty(),
            "{service}'s document lists no route: {doc}"
        );
        for (method, template, secured) in ops {
            let Some(&(_, _, _, access)) = DECISIONS
                .iter()
                .find(|(s, m, p, _)| s == service && *m == method && *p == template)
            else {
                failures.push(format!(
                    "{service} {method} {template} has no decision: add it to DECISIONS"
                ));
                continue;
            };
            decided.insert((*service, method.clone(), template.clone()));
            if secured != (access != Access::Open) {
                failures.push(format!(
                    "{service} {method} {template}: the document's security ({secured}) \
                     does not match the decision {access:?}"
                ));
            }
            let path = concrete(&template);
            for caller in CALLERS {
                let status = call(app, &method, &path, caller).await;
                let ok = match expected(access, caller) {
                    Some(want) => status == want,
                    None => status != 401 && status != 403,
                };
                if !ok {
                    failures.push(format!(
                        "{service} {method} {path} as {caller:?}: {status}, expected {}",
                        expected(access, caller)
                            .map_or_else(|| "neither 401 nor 403".to_owned(), |s| s.to_string())
                    ));
                }
            }
        }
    }
    for (service, method, path, _) in DECISIONS {
        if !decided.contains(&(*service, (*method).to_owned(), (*path).to_owned())) {
            failures.push(format!(
                "DECISIONS has {service} {method} {path}, which its document does not list"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (_, app) in services {
        app.stop().await.unwrap();
    }
}

/// The fanout's WebSocket: the token in the query string (or a header);
/// without a valid one the upgrade is refused with 401; a `channels` claim
/// limits what the client may subscribe to.
#[tokio::test]
async fn the_stream_refuses_bad_tokens_and_holds_clients_to_their_channels() {
    let rig = Rig::start(
        1,
        2,
        "authz-fanout",
        &[
            ("JWT_SECRET", SECRET),
            ("AUTH_REQUIRED", "true"),
            ("SHUTDOWN_TIMEOUT", "5s"),
        ],
    )
    .await;
    let cfg = fanout::Config::for_profile(&rig.env, Profile::Service).unwrap();
    let mut app = fantasy_testkit::spawn(fanout::run, cfg).await;
    app.wait_ready(READY_WITHIN).await;
    let connect = |token: Option<String>| {
        let url = match token {
            Some(t) => format!("ws://{}/v1/stream?token={t}", app.addr),
            None => format!("ws://{}/v1/stream", app.addr),
        };
        async move { tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await }
    };
    for caller in CALLERS {
        let answer = connect(caller.token()).await;
        match expected(Access::Token, caller) {
            Some(status) => match answer {
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                    assert_eq!(r.status().as_u16(), status, "{caller:?}");
                }
                other => panic!("{caller:?}: expected {status}, got {:?}", other.map(|_| ())),
            },
            None => {
                answer.unwrap_or_else(|e| panic!("{caller:?}: {e}"));
            }
        }
    }
    // A client limited to one sport may not subscribe to another's games.
    let limited = token(SECRET, false, 600, Some(&["sport:nfl"]));
    let (mut ws, _) = connect(Some(limited)).await.unwrap();
    let mut subscribe = async |channel: &str| {
        let op = serde_json::json!({"op": "subscribe", "channels": [channel]});
        ws.send(Message::text(op.to_string())).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer to the subscribe")
            .unwrap()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(frame.to_text().unwrap()).unwrap()
    };
    let v = subscribe("sport:nba").await;
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], "forbidden_channel", "{v}");
    let v = subscribe("sport:nfl").await;
    assert_eq!(v["type"], "subscribed", "{v}");
    drop(ws);
    app.stop().await.unwrap();
}
