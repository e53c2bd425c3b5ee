//! The `http` source: one league's live scoreboard, polled over HTTP.
//!
//! Each poll GETs the configured URL (an ESPN site-API scoreboard), reads it
//! with [`crate::espn::parse`] and hands every event to the pipeline as a
//! [`SourceGame`]. A scoreboard only shows the games of the moment, so there
//! is nothing to resume from: every poll re-reads the whole board, and the
//! pipeline's dedup drops the games that did not change since the last poll.
//! The batch's cursor is the fetch time, kept for the record only.
//!
//! # Politeness
//!
//! The scoreboard belongs to someone else, and we must never be the client
//! that gets a whole address range blocked. So:
//!
//! - **One poll per interval.** A poll starts [`HttpSourceConfig::poll_interval`]
//!   after the previous one started. [`Source::next`] does not sleep for it:
//!   it answers [`Fetch::Wait`] and the pipeline sleeps. After a poll that
//!   failed for good the next one waits a whole interval from the failure,
//!   so a struggling server is not hit again at once.
//! - **A rate limit on every request.** Every attempt, retries included,
//!   first takes a permit from a token bucket
//!   ([`HttpSourceConfig::rate_per_second`], [`HttpSourceConfig::burst`]).
//!   Retries can therefore never burst past the limit, whatever the back-off.
//! - **Retries only when they can help.** Network errors, timeouts and 5xx
//!   answers (and 429) are retried up to [`HttpSourceConfig::max_retries`]
//!   times, with exponential back-off and full jitter (a uniform wait between
//!   zero and `min(backoff_max, backoff_base × 2^attempt)`), so that many
//!   collectors restarted together do not retry in lock-step. Other 4xx
//!   answers and bodies that are not a scoreboard are not retried: asking
//!   again would give the same answer.
//! - **`Retry-After` is obeyed.** On a 429 or a 503 the server's
//!   `Retry-After` (seconds or an HTTP-date) replaces the back-off, capped at
//!   [`MAX_RETRY_AFTER`] so that a bogus value cannot stall the source.
//! - **Bounded bodies.** A body larger than
//!   [`HttpSourceConfig::max_body_bytes`] is an error; it is read chunk by
//!   chunk and dropped as soon as it passes the limit, never read whole.
//! - **Identified.** Requests carry the User-Agent [`USER_AGENT`].
//!
//! All sleeps use `tokio::time`, so tests can run them on a paused clock.
//! The rate limiter's own clock is real (monotonic) time.
//!
//! # Metrics
//!
//! - `collector_fetches_total{source, result}`: polls that read a scoreboard
//!   (`ok`), polls that failed (`error`), and attempts that failed and were
//!   retried (`retry`).
//! - `collector_fetch_seconds{source}`: the time of each request attempt,
//!   from sending it to the end of its body.
//! - `collector_rejected_total{source}`: scoreboard events that could not be
//!   read (each is also logged with its id and the reason).

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, SecondsFormat, Utc};
use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::RETRY_AFTER;
use reqwest::{StatusCode, Url};
use tokio::time::Instant;

use crate::espn;
use crate::source::{Batch, Fetch, Source, SourceGame, backoff};

/// The User-Agent of every request: who is asking, so that the owner of the
/// server can tell us apart (and tell us off).
pub const USER_AGENT: &str = concat!("fantasy-collector/", env!("CARGO_PKG_VERSION"));

/// Default time between the starts of two polls.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Default sustained request rate (retries included).
pub const DEFAULT_RATE_PER_SECOND: f64 = 1.0;
/// Default number of requests that may go out back to back.
pub const DEFAULT_BURST: u32 = 1;
/// Default limit on one request, from connecting to the end of the body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of retries of one poll.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// Default back-off before the first retry (the upper end of its jitter).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Default cap on the back-off.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Default limit on a body: a scoreboard is a few hundred KiB at most.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// The longest a `Retry-After` is obeyed for; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// The longest poll interval accepted (a day), which keeps the deadline
/// arithmetic far from overflowing.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Settings of one `http` source.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSourceConfig {
    /// The source's name (`espn:basketball/nba`): the checkpoint's key, the
    /// dedup's source, the `source` label on metrics, and in every log line
    /// and error.
    pub name: String,
    /// The full scoreboard URL to GET.
    pub url: String,
    /// The sport of every game of this scoreboard, lower case (`basketball`).
    pub sport: String,
    /// The league of every game, lower case (`nba`); also the prefix of the
    /// game ids (`nba-401704123`).
    pub league: String,
    /// Time from the start of one poll to the start of the next.
    pub poll_interval: Duration,
    /// Sustained limit on requests, retries included (may be below 1: 0.2 is
    /// one request every 5 s).
    pub rate_per_second: f64,
    /// How many requests may go out back to back before the rate applies.
    pub burst: u32,
    /// Limit on one request, from connecting to the end of the body (`None`:
    /// no limit).
    pub timeout: Option<Duration>,
    /// Retries of one poll after its first attempt failed in a way worth
    /// retrying.
    pub max_retries: u32,
    /// The back-off before the first retry; it doubles for each further one.
    pub backoff_base: Duration,
    /// The cap on the back-off.
    pub backoff_max: Duration,
    /// Larger bodies are an error (and are never read whole).
    pub max_body_bytes: usize,
}

impl HttpSourceConfig {
    /// A source with the default politeness settings.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        sport: impl Into<String>,
        league: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            sport: sport.into(),
            league: league.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            rate_per_second: DEFAULT_RATE_PER_SECOND,
            burst: DEFAULT_BURST,
            timeout: Some(DEFAULT_TIMEOUT),
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// The token bucket for `rate_per_second` and `burst`.
    fn quota(&self) -> anyhow::Result<Quota> {
        let rate = self.rate_per_second;
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "{}: rate_per_second must be a positive number, not {rate}",
            self.name
        );
        let burst = NonZeroU32::new(self.burst)
            .with_context(|| format!("{}: burst must be at least 1", self.name))?;
        // A whole rate takes governor's exact per-second quota; anything else
        // (below 1/s, or fractional) is one request per period.
        let quota = if rate >= 1.0 && rate.fract() == 0.0 && rate <= f64::from(u32::MAX) {
            NonZeroU32::new(rate as u32).map(Quota::per_second)
        } else {
            Duration::try_from_secs_f64(1.0 / rate)
                .ok()
                .and_then(Quota::with_period)
        };
        let quota = quota.with_context(|| {
            format!(
                "{}: rate_per_second {rate} is out of range (one request per nanosecond to one per ~584 years)",
                self.name
            )
        })?;
        Ok(quota.allow_burst(burst))
    }
}

/// Why a poll failed. Every message names the source.
#[derive(Debug, thiserror::Error)]
pub enum HttpSourceError {
    /// An answer that asking again would not change (a 4xx other than 429).
    #[error("{source_name}: HTTP {status} from {url} (not retried)")]
    Status {
        source_name: String,
        status: StatusCode,
        url: Url,
    },
    /// The body is not a scoreboard (not JSON, no `events`).
    #[error("{source_name}: the body from {url} is not a scoreboard: {reason}")]
    NotAScoreboard {
        source_name: String,
        url: Url,
        reason: espn::PayloadError,
    },
    /// The body is larger than `max_body_bytes`.
    #[error("{source_name}: the body from {url} is larger than the limit of {limit} bytes")]
    TooLarge {
        source_name: String,
        url: Url,
        limit: usize,
    },
    /// A request that cannot succeed (a redirect loop, a URL reqwest
    /// refuses).
    #[error("{source_name}: the request to {url} failed (not retried): {reason}")]
    Request {
        source_name: String,
        url: Url,
        reason: String,
    },
    /// Every attempt failed in a way worth retrying; `last` is the last
    /// failure.
    #[error("{source_name}: gave up on {url} after {attempts} attempts: {last}")]
    GaveUp {
        source_name: String,
        url: Url,
        attempts: u32,
        last: String,
    },
}

/// A scoreboard polled over HTTP; see the [module docs](self).
pub struct HttpSource {
    cfg: HttpSourceConfig,
    url: Url,
    client: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    /// When the next poll is due (`None`: at once).
    next_poll: Option<Instant>,
}

impl fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSource")
            .field("cfg", &self.cfg)
            .field("next_poll", &self.next_poll)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// Checks the settings and builds the HTTP client. The first poll is due
    /// at once.
    pub fn new(cfg: HttpSourceConfig) -> anyhow::Result<Self> {
        let name = &cfg.name;
        anyhow::ensure!(!name.is_empty(), "an http source needs a name");
        let url = Url::parse(&cfg.url)
            .with_context(|| format!("{name}: the URL {:?} is not a URL", cfg.url))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "{name}: the URL {url} is not http or https"
        );
        anyhow::ensure!(
            !cfg.sport.is_empty() && !cfg.league.is_empty(),
            "{name}: sport and league must be set"
        );
        anyhow::ensure!(
            cfg.poll_interval <= MAX_POLL_INTERVAL,
            "{name}: poll_interval {:?} is longer than {MAX_POLL_INTERVAL:?}",
            cfg.poll_interval
        );
        anyhow::ensure!(
            cfg.timeout != Some(Duration::ZERO),
            "{name}: a timeout of zero would fail every request (use None for no timeout)"
        );
        anyhow::ensure!(
            cfg.max_body_bytes > 0,
            "{name}: max_body_bytes must be at least 1"
        );
        let quota = cfg.quota()?;

        // reqwest is built on rustls without a bundled crypto provider: the
        // workspace's one (ring) must be installed before building a client.
        fantasy_telemetry::install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .build()
            .with_context(|| format!("{name}: building the HTTP client"))?;
        Ok(Self {
            url,
            client,
            limiter: RateLimiter::direct(quota),
            next_poll: None,
            cfg,
        })
    }

    /// One poll: the scoreboard, fetched (with retries) and read.
    #[tracing::instrument(skip_all, fields(source = %self.cfg.name))]
    async fn poll(&mut self) -> Result<Batch, HttpSourceError> {
        let body = self.fetch().await?;
        let fetched_at = Utc::now();
        let board = espn::parse(&body).map_err(|reason| HttpSourceError::NotAScoreboard {
            source_name: self.cfg.name.clone(),
            url: self.url.clone(),
            reason,
        })?;
        for r in &board.rejected {
            tracing::warn!(
                source = %self.cfg.name,
                event_id = r.event_id.as_deref().unwrap_or("-"),
                index = r.index,
                reason = %r.reason,
                "rejected a scoreboard event"
            );
        }
        if !board.rejected.is_empty() {
            metrics::counter!("collector_rejected_total", "source" => self.cfg.name.clone())
                .increment(board.rejected.len() as u64);
        }
        let games = board
            .events
            .into_iter()
            .map(|e| self.game(e, fetched_at))
            .collect();
        Ok(Batch {
            games,
            rejected: board.rejected.len(),
            cursor: Some(fetched_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            truth: Vec::new(),
        })
    }

    fn game(&self, e: espn::ScoreboardEvent, fetched_at: DateTime<Utc>) -> SourceGame {
        SourceGame {
            game_id: format!("{}-{}", self.cfg.league, e.event_id),
            event_id: e.event_id,
            sport: self.cfg.sport.clone(),
            league: self.cfg.league.clone(),
            season: e
                .season
                .unwrap_or_else(|| e.scheduled_at.year().to_string()),
            home_team: e.home_team,
            away_team: e.away_team,
            scheduled_at: e.scheduled_at,
            status: e.status,
            home_score: e.home_score,
            away_score: e.away_score,
            // The scoreboard does not say when a game last changed.
            updated_at: fetched_at,
        }
    }

    /// The body of the scoreboard, retrying what is worth retrying.
    async fn fetch(&mut self) -> Result<Vec<u8>, HttpSourceError> {
        let mut retries = 0u32;
        loop {
            self.wait_for_permit().await;
            // Real time, not tokio's (possibly paused) clock: this is a latency.
            let started = std::time::Instant::now();
            let result = self.attempt().await;
            metrics::histogram!("collector_fetch_seconds", "source" => self.cfg.name.clone())
                .record(started.elapsed().as_secs_f64());
            let (reason, retry_after) = match result {
                Ok(body) => return Ok(body),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry {
                    reason,
                    retry_after,
                }) => (reason, retry_after),
            };
            if retries >= self.cfg.max_retries {
                return Err(HttpSourceError::GaveUp {
                    source_name: self.cfg.name.clone(),
                    url: self.url.clone(),
                    attempts: retries + 1,
                    last: reason,
                });
            }
            retries += 1;
            let wait = match retry_after {
                Some(asked) => {
                    let wait = asked.min(MAX_RETRY_AFTER);
                    tracing::info!(
                        source = %self.cfg.name,
                        asked_secs = asked.as_secs_f64(),
                        wait_secs = wait.as_secs_f64(),
                        "the server asked us to wait (Retry-After)"
                    );
                    wait
                }
                None => backoff(retries - 1, self.cfg.backoff_base, self.cfg.backoff_max),
            };
            metrics::counter!("collector_fetches_total", "source" => self.cfg.name.clone(), "result" => "retry")
                .increment(1);
            tracing::warn!(
                source = %self.cfg.name,
                retry = retries,
                of = self.cfg.max_retries,
                wait_ms = wait.as_millis() as u64,
                %reason,
                "fetching the scoreboard failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits until the rate limiter lets one more request out.
    async fn wait_for_permit(&self) {
        while let Err(not_until) = self.limiter.check() {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            // At least a millisecond: a zero wait that rounds the wrong way
            // must not spin.
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// One request, and its body.
    async fn attempt(&self) -> Result<Vec<u8>, Failure> {
        let mut request = self.client.get(self.url.clone());
        if let Some(timeout) = self.cfg.timeout {
            request = request.timeout(timeout);
        }
        let mut response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            return Err(Failure::Retry {
                reason: format!("HTTP {status}"),
                retry_after,
            });
        }
        if status.is_server_error() {
            return Err(Failure::Retry {
                reason: format!("HTTP {status}"),
                retry_after: None,
            });
        }
        if !status.is_success() {
            return Err(Failure::Fatal(HttpSourceError::Status {
                source_name: self.cfg.name.clone(),
                status,
                url: self.url.clone(),
            }));
        }

        let limit = self.cfg.max_body_bytes;
        let too_large = || {
            Failure::Fatal(HttpSourceError::TooLarge {
                source_name: self.cfg.name.clone(),
                url: self.url.clone(),
                limit,
            })
        };
        let announced = response.content_length();
        if announced.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        // The announced length is at most the limit here; without one, start
        // small and let the Vec grow.
        let mut body = Vec::with_capacity(announced.map_or(64 << 10, |n| n as usize));
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if chunk.len() > limit - body.len() {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A reqwest error: retried unless asking again cannot help.
    fn transport(&self, e: &reqwest::Error) -> Failure {
        let reason = chain(e);
        if e.is_builder() || e.is_redirect() {
            Failure::Fatal(HttpSourceError::Request {
                source_name: self.cfg.name.clone(),
                url: self.url.clone(),
                reason,
            })
        } else {
            Failure::Retry {
                reason,
                retry_after: None,
            }
        }
    }
}

impl Source for HttpSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The cursor is the time of the last fetch, for the record only: a
    /// scoreboard shows the games of the moment, so the next poll reads it
    /// whole whatever the cursor. One that is not an RFC 3339 time was not
    /// written by this source and is an error.
    fn resume(&mut self, cursor: Option<&str>) -> anyhow::Result<()> {
        if let Some(c) = cursor {
            DateTime::parse_from_rfc3339(c).with_context(|| {
                format!(
                    "{}: the checkpoint {c:?} is not an RFC 3339 fetch time",
                    self.cfg.name
                )
            })?;
            tracing::debug!(source = %self.cfg.name, last_fetch = c, "resuming");
        }
        Ok(())
    }

    async fn next(&mut self) -> anyhow::Result<Fetch> {
        let now = Instant::now();
        if let Some(due) = self.next_poll
            && now < due
        {
            return Ok(Fetch::Wait(due - now));
        }
        // Set before polling: a poll that fails still counts as one.
        self.next_poll = Some(now + self.cfg.poll_interval);
        match self.poll().await {
            Ok(batch) => {
                metrics::counter!("collector_fetches_total", "source" => self.cfg.name.clone(), "result" => "ok")
                    .increment(1);
                Ok(Fetch::Batch(batch))
            }
            Err(e) => {
                metrics::counter!("collector_fetches_total", "source" => self.cfg.name.clone(), "result" => "error")
                    .increment(1);
                // Retries may have taken longer than the interval: wait a
                // whole interval from the failure, not from the poll's start,
                // so that the pipeline's next call does not poll again at once.
                self.next_poll = Some(Instant::now() + self.cfg.poll_interval);
                Err(e.into())
            }
        }
    }
}

/// How one attempt failed.
enum Failure {
    /// Worth another attempt; `retry_after` is what the server asked for.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Not worth another attempt.
    Fatal(HttpSourceError),
}

/// A `Retry-After` value: whole seconds, or an HTTP-date (a date in the past
/// is no wait). Anything else is `None` (the back-off applies).
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // An HTTP-date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) is an
    // RFC 2822 date.
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// An error with its causes, `: `-separated (reqwest's own message leaves
/// the cause, such as "connection refused", to its sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn backoff_is_full_jitter_below_a_doubling_capped_ceiling() {
        let (base, max) = (Duration::from_millis(500), Duration::from_secs(60));
        for retry in 0..40 {
            let ceiling = base.saturating_mul(2u32.saturating_pow(retry)).min(max);
            let waits: Vec<Duration> = (0..200).map(|_| backoff(retry, base, max)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "retry {retry}");
            // Full jitter: spread over the whole range, not bunched at the top.
            assert!(waits.iter().any(|w| *w < ceiling / 4), "retry {retry}");
            assert!(waits.iter().any(|w| *w > ceiling * 3 / 4), "retry {retry}");
        }
        assert_eq!(
            backoff(3, Duration::ZERO, max),
            Duration::ZERO,
            "a zero base never waits"
        );
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 8, 0, 0).unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 08:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past is no wait"
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn rates_below_one_per_second_and_fractional_rates_are_periods() {
        let cfg = |rate: f64, burst: u32| HttpSourceConfig {
            rate_per_second: rate,
            burst,
            ..HttpSourceConfig::new("t", "http://127.0.0.1/", "s", "l")
        };
        let q = cfg(1.0, 1).quota().unwrap();
        assert_eq!(q.replenish_interval(), Duration::from_secs(1));
        assert_eq!(q.burst_size().get(), 1);
        let q = cfg(20.0, 3).quota().unwrap();
        assert_eq!(q.replenish_interval(), Duration::from_millis(50));
        assert_eq!(q.burst_size().get(), 3);
        let q = cfg(0.2, 1).quota().unwrap();
        assert_eq!(q.replenish_interval(), Duration::from_secs(5));
        let q = cfg(2.5, 1).quota().unwrap();
        assert_eq!(q.replenish_interval(), Duration::from_millis(400));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300] {
            assert!(cfg(bad, 1).quota().is_err(), "rate {bad}");
        }
        assert!(cfg(1.0, 0).quota().is_err(), "burst 0");
    }

    #[test]
    fn bad_settings_are_refused_with_the_source_name() {
        let ok = HttpSourceConfig::new("espn:x/y", "http://127.0.0.1:9/sb", "x", "y");
        assert!(HttpSource::new(ok.clone()).is_ok());
        let bad = [
            HttpSourceConfig {
                url: "not a url".into(),
                ..ok.clone()
            },
            HttpSourceConfig {
                url: "ftp://example.com/sb".into(),
                ..ok.clone()
            },
            HttpSourceConfig {
                timeout: Some(Duration::ZERO),
                ..ok.clone()
            },
            HttpSourceConfig {
                max_body_bytes: 0,
                ..ok.clone()
            },
            HttpSourceConfig {
                poll_interval: Duration::MAX,
                ..ok.clone()
            },
        ];
        for cfg in bad {
            let e = HttpSource::new(cfg.clone()).unwrap_err();
            assert!(format!("{e:#}").contains("espn:x/y"), "{cfg:?}: {e:#}");
        }
    }

    #[test]
    fn a_checkpoint_must_be_a_fetch_time() {
        let cfg = HttpSourceConfig::new("espn:x/y", "http://127.0.0.1:9/sb", "x", "y");
        let mut source = HttpSource::new(cfg).unwrap();
        source.resume(None).unwrap();
        source.resume(Some("2026-11-22T08:00:00.000Z")).unwrap();
        assert!(source.resume(Some("line 42")).is_err());
    }
}
