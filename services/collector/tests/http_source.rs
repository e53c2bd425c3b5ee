//! The `http` source against a real HTTP server: a local axum server that
//! plays back recorded ESPN payloads and scripted failures.
//!
//! The server runs on its own OS thread with its own runtime, so that it
//! keeps serving whatever the test's runtime does with its clock.
#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use chrono::{DateTime, TimeZone as _, Utc};
use collector::http_source::{HttpSource, HttpSourceConfig, USER_AGENT};
use collector::source::{Batch, Fetch, Source as _, SourceGame};
use fantasy_messages::GameStatus;
use fantasy_testkit::Served;

const NBA: &[u8] = include_bytes!("../fixtures/espn/nba-scoreboard.json");
const PARTIAL: &[u8] = include_bytes!("../fixtures/espn/partial.json");

/// One scripted answer.
#[derive(Clone, Debug)]
struct Reply {
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    body: Vec<u8>,
    /// Sent in small chunks without a Content-Length.
    chunked: bool,
}

impl Reply {
    fn ok(body: &[u8]) -> Self {
        Self::status(StatusCode::OK).body(body)
    }

    fn status(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
        }
    }

    fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    fn header(mut self, name: header::HeaderName, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
}

/// What the server answers and what it saw.
#[derive(Debug)]
struct Script {
    /// Answered in order, one per request...
    replies: Mutex<VecDeque<Reply>>,
    /// ...then this one for every further request.
    then: Reply,
    hits: AtomicUsize,
    user_agents: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct TestServer {
    served: Served,
    script: Arc<Script>,
}

impl TestServer {
    /// Serves `replies` in order, then `then` forever, on 127.0.0.1 at a
    /// random port.
    fn start(replies: Vec<Reply>, then: Reply) -> Self {
        let script = Arc::new(Script {
            replies: Mutex::new(replies.into()),
            then,
            hits: AtomicUsize::new(0),
            user_agents: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/scoreboard", get(answer))
            .with_state(script.clone());
        Self {
            served: fantasy_testkit::serve(app),
            script,
        }
    }

    fn url(&self) -> String {
        format!("{}/scoreboard", self.served.base())
    }

    fn hits(&self) -> usize {
        self.script.hits.load(Ordering::SeqCst)
    }
}

async fn answer(State(script): State<Arc<Script>>, headers: HeaderMap) -> Response {
    script.hits.fetch_add(1, Ordering::SeqCst);
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    script.user_agents.lock().unwrap().push(ua);
    let reply = script
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| script.then.clone());
    let body = if reply.chunked {
        let chunks: Vec<Result<Bytes, std::io::Error>> = reply
            .body
            .chunks(1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    } else {
        Body::from(reply.body)
    };
    let mut response = (reply.status, body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// A config for `server` with test-friendly politeness: fast retries and a
/// generous rate limit, so that only the test's subject is slow.
fn config(server: &TestServer) -> HttpSourceConfig {
    HttpSourceConfig {
        poll_interval: Duration::ZERO,
        rate_per_second: 1000.0,
        burst: 10,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..HttpSourceConfig::new("espn:basketball/nba", server.url(), "basketball", "nba")
    }
}

async fn batch(source: &mut HttpSource) -> Batch {
    match source.next().await {
        Ok(Fetch::Batch(b)) => b,
        other => panic!("expected a batch, got {other:?}"),
    }
}

fn game<'a>(batch: &'a Batch, event_id: &str) -> &'a SourceGame {
    batch
        .games
        .iter()
        .find(|g| g.event_id == event_id)
        .unwrap_or_else(|| panic!("no event {event_id} in {batch:?}"))
}

#[tokio::test]
async fn a_scoreboard_gives_every_event_as_a_source_game() {
    let server = TestServer::start(vec![], Reply::ok(NBA));
    let mut source = HttpSource::new(config(&server)).unwrap();
    let before = Utc::now();
    let batch = batch(&mut source).await;
    let after = Utc::now();

    assert_eq!(batch.rejected, 0);
    let ids: Vec<&str> = batch.games.iter().map(|g| g.event_id.as_str()).collect();
    assert_eq!(ids, ["401704123", "401704124", "401704125", "401704126"]);

    let fetched_at = batch.games[0].updated_at;
    assert!(before <= fetched_at && fetched_at <= after);
    assert!(batch.games.iter().all(|g| g.updated_at == fetched_at));
    let cursor = DateTime::parse_from_rfc3339(batch.cursor.as_deref().unwrap()).unwrap();
    assert!(
        (cursor.with_timezone(&Utc) - fetched_at)
            .num_milliseconds()
            .abs()
            <= 1
    );

    assert_eq!(
        *game(&batch, "401704123"),
        SourceGame {
            event_id: "401704123".into(),
            game_id: "nba-401704123".into(),
            sport: "basketball".into(),
            league: "nba".into(),
            season: "2027".into(),
            home_team: "BOS".into(),
            away_team: "NY".into(),
            scheduled_at: Utc.with_ymd_and_hms(2026, 11, 22, 0, 30, 0).unwrap(),
            status: GameStatus::Final,
            home_score: Some(112),
            away_score: Some(104),
            updated_at: fetched_at,
        }
    );
    let live = game(&batch, "401704124");
    assert_eq!(
        (
            live.game_id.as_str(),
            live.home_team.as_str(),
            live.away_team.as_str(),
            live.status,
            live.home_score,
            live.away_score,
            live.season.as_str()
        ),
        (
            "nba-401704124",
            "CHI",
            "MIA",
            GameStatus::InProgress,
            Some(58),
            Some(61),
            "2027"
        )
    );
    let upcoming = game(&batch, "401704125");
    assert_eq!(
        (
            upcoming.home_team.as_str(),
            upcoming.away_team.as_str(),
            upcoming.status,
            upcoming.home_score,
            upcoming.away_score,
        ),
        ("LAL", "DEN", GameStatus::Scheduled, None, None)
    );
    // No season in the payload: the year of the game's date.
    assert_eq!(upcoming.season, "2026");
    let postponed = game(&batch, "401704126");
    assert_eq!(
        (
            postponed.home_team.as_str(),
            postponed.away_team.as_str(),
            postponed.status
        ),
        ("PHX", "UTAH", GameStatus::Postponed)
    );

    assert_eq!(server.hits(), 1);
    let agents = server.script.user_agents.lock().unwrap().clone();
    assert_eq!(agents, [USER_AGENT]);
    assert!(USER_AGENT.starts_with("fantasy-collector/"));
}

#[tokio::test]
async fn a_partial_scoreboard_keeps_the_good_events_and_counts_the_rejected() {
    let server = TestServer::start(vec![], Reply::ok(PARTIAL));
    let mut source = HttpSource::new(config(&server)).unwrap();
    let batch = batch(&mut source).await;

    assert_eq!(batch.rejected, 5);
    let ids: Vec<&str> = batch.games.iter().map(|g| g.game_id.as_str()).collect();
    assert_eq!(ids, ["nba-9001", "nba-9007"]);
    let last = game(&batch, "9007");
    assert_eq!(
        (
            last.home_team.as_str(),
            last.status,
            last.home_score,
            last.away_score
        ),
        ("CGY", GameStatus::Final, Some(5), Some(1))
    );
    assert_eq!(server.hits(), 1);
}

/// Real time, because the collector's dev-dependencies do not enable tokio's
/// `test-util` (no paused clock): a `Retry-After` of 1 s against a back-off of
/// at most 5 ms shows which one the source waited for.
#[tokio::test]
async fn retry_after_on_429_is_honoured_before_the_second_attempt() {
    let server = TestServer::start(
        vec![Reply::status(StatusCode::TOO_MANY_REQUESTS).header(header::RETRY_AFTER, "1")],
        Reply::ok(NBA),
    );
    let mut source = HttpSource::new(HttpSourceConfig {
        // No request timeout: the test is about the wait between attempts.
        timeout: None,
        ..config(&server)
    })
    .unwrap();
    let started = std::time::Instant::now();
    let batch = batch(&mut source).await;
    let took = started.elapsed();

    assert_eq!(batch.games.len(), 4);
    assert_eq!(server.hits(), 2);
    assert!(took >= Duration::from_secs(1), "retried after {took:?}");
    assert!(took < Duration::from_secs(10), "retried after {took:?}");
}

#[tokio::test]
async fn retry_after_on_503_may_be_an_http_date() {
    // A date two seconds ahead, whole seconds: the wait is between 1 and 2 s.
    let at = (Utc::now() + chrono::Duration::seconds(2)).format("%a, %d %b %Y %H:%M:%S GMT");
    let server = TestServer::start(
        vec![
            Reply::status(StatusCode::SERVICE_UNAVAILABLE)
                .header(header::RETRY_AFTER, &at.to_string()),
        ],
        Reply::ok(NBA),
    );
    let mut source = HttpSource::new(config(&server)).unwrap();
    let started = std::time::Instant::now();
    let batch = batch(&mut source).await;
    let took = started.elapsed();

    assert_eq!(batch.games.len(), 4);
    assert_eq!(server.hits(), 2);
    assert!(took >= Duration::from_millis(900), "retried after {took:?}");
}

#[tokio::test]
async fn a_500_is_retried_and_then_succeeds() {
    let server = TestServer::start(
        vec![Reply::status(StatusCode::INTERNAL_SERVER_ERROR)],
        Reply::ok(NBA),
    );
    let mut source = HttpSource::new(config(&server)).unwrap();
    let batch = batch(&mut source).await;
    assert_eq!(batch.games.len(), 4);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_404_is_not_retried() {
    let server = TestServer::start(vec![], Reply::status(StatusCode::NOT_FOUND));
    let mut source = HttpSource::new(config(&server)).unwrap();
    let e = source.next().await.unwrap_err();
    let message = format!("{e:#}");
    assert!(message.contains("404"), "{message}");
    assert!(message.contains(&server.url()), "{message}");
    assert!(message.contains("espn:basketball/nba"), "{message}");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn retries_stop_after_max_retries_and_the_next_poll_waits_its_interval() {
    let server = TestServer::start(vec![], Reply::status(StatusCode::BAD_GATEWAY));
    let mut source = HttpSource::new(HttpSourceConfig {
        max_retries: 2,
        poll_interval: Duration::from_secs(30),
        ..config(&server)
    })
    .unwrap();
    let e = source.next().await.unwrap_err();
    let message = format!("{e:#}");
    assert!(message.contains("3 attempts"), "{message}");
    assert!(message.contains("502"), "{message}");
    assert_eq!(server.hits(), 3);

    match source.next().await.unwrap() {
        Fetch::Wait(d) => assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        ),
        other => panic!("expected a wait, got {other:?}"),
    }
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_given_up() {
    // A port that was free a moment ago: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut source = HttpSource::new(HttpSourceConfig {
        max_retries: 1,
        poll_interval: Duration::ZERO,
        rate_per_second: 1000.0,
        backoff_base: Duration::from_millis(1),
        ..HttpSourceConfig::new(
            "espn:basketball/nba",
            format!("http://{addr}/scoreboard"),
            "basketball",
            "nba",
        )
    })
    .unwrap();
    let message = format!("{:#}", source.next().await.unwrap_err());
    assert!(message.contains("gave up"), "{message}");
    assert!(message.contains("2 attempts"), "{message}");
}

#[tokio::test]
async fn polls_are_spaced_by_the_poll_interval() {
    let server = TestServer::start(vec![], Reply::ok(NBA));
    let mut source = HttpSource::new(HttpSourceConfig {
        poll_interval: Duration::from_millis(400),
        ..config(&server)
    })
    .unwrap();
    batch(&mut source).await;
    let wait = match source.next().await.unwrap() {
        Fetch::Wait(d) => d,
        other => panic!("expected a wait, got {other:?}"),
    };
    assert!(
        wait > Duration::from_millis(200) && wait <= Duration::from_millis(400),
        "{wait:?}"
    );
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(wait).await;
    batch(&mut source).await;
    assert_eq!(server.hits(), 2);
}

/// The limiter runs on real (monotonic) time, so this one is measured in
/// real time: 20 requests a second with no burst is one per 50 ms, so 11
/// fetches (the first at once) take at least 0.5 s; the bound leaves room
/// for clock granularity.
#[tokio::test]
async fn the_rate_limit_spaces_requests_even_with_no_poll_interval() {
    let server = TestServer::start(vec![], Reply::ok(NBA));
    let mut source = HttpSource::new(HttpSourceConfig {
        rate_per_second: 20.0,
        burst: 1,
        poll_interval: Duration::ZERO,
        ..config(&server)
    })
    .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..11 {
        batch(&mut source).await;
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450), "11 fetches in {took:?}");
    assert_eq!(server.hits(), 11);
}

#[tokio::test]
async fn the_rate_limit_holds_for_retries_too() {
    let server = TestServer::start(
        vec![
            Reply::status(StatusCode::INTERNAL_SERVER_ERROR),
            Reply::status(StatusCode::INTERNAL_SERVER_ERROR),
            Reply::status(StatusCode::INTERNAL_SERVER_ERROR),
        ],
        Reply::ok(NBA),
    );
    let mut source = HttpSource::new(HttpSourceConfig {
        rate_per_second: 10.0,
        burst: 1,
        ..config(&server)
    })
    .unwrap();
    let started = std::time::Instant::now();
    batch(&mut source).await;
    let took = started.elapsed();
    // Four attempts, one per 100 ms: the back-off alone is at most 15 ms.
    assert!(took >= Duration::from_millis(280), "4 attempts in {took:?}");
    assert_eq!(server.hits(), 4);
}

#[tokio::test]
async fn a_body_that_is_not_a_scoreboard_is_an_error_and_the_next_poll_works() {
    let server = TestServer::start(
        vec![Reply::ok(b"<html>rate limited</html>")],
        Reply::ok(NBA),
    );
    let mut source = HttpSource::new(config(&server)).unwrap();
    let message = format!("{:#}", source.next().await.unwrap_err());
    assert!(message.contains("espn:basketball/nba"), "{message}");
    assert!(message.contains("not JSON"), "{message}");
    assert_eq!(server.hits(), 1, "a bad body is not retried");

    let batch = batch(&mut source).await;
    assert_eq!(batch.games.len(), 4);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_body_over_the_limit_is_an_error_announced_or_not() {
    let server = TestServer::start(
        vec![Reply::ok(NBA), Reply::ok(NBA).chunked()],
        Reply::ok(NBA).chunked(),
    );
    let mut source = HttpSource::new(HttpSourceConfig {
        max_body_bytes: 2048,
        ..config(&server)
    })
    .unwrap();
    assert!(NBA.len() > 2048);
    for _ in 0..2 {
        let message = format!("{:#}", source.next().await.unwrap_err());
        assert!(message.contains("larger than the limit"), "{message}");
    }
    assert_eq!(server.hits(), 2, "a large body is not retried");

    // Within the limit, a chunked body is read whole.
    let mut source = HttpSource::new(config(&server)).unwrap();
    assert_eq!(batch(&mut source).await.games.len(), 4);
}

// `timeout: None`: on a paused clock tokio jumps to the next pending timer
// whenever the runtime idles, including while it waits on the server's real
// I/O, so a reqwest timeout would fire at once.
#[tokio::test(start_paused = true)]
async fn retry_after_120_is_honoured_on_a_paused_clock() {
    let server = TestServer::start(
        vec![Reply::status(StatusCode::TOO_MANY_REQUESTS).header(header::RETRY_AFTER, "120")],
        Reply::ok(NBA),
    );
    let mut source = HttpSource::new(HttpSourceConfig {
        timeout: None,
        ..config(&server)
    })
    .unwrap();
    let real = std::time::Instant::now();
    let started = tokio::time::Instant::now();
    let batch = batch(&mut source).await;
    assert!(
        started.elapsed() >= Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    assert!(
        real.elapsed() < Duration::from_secs(20),
        "the wait was virtual"
    );
    assert_eq!(batch.games.len(), 4);
    assert_eq!(server.hits(), 2);
}
