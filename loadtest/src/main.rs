//! `wsload`: load tools for the fanout.
//!
//! ```text
//! wsload clients --url ws://127.0.0.1:8081/v1/stream --connections 19000 \
//!                --source-ips 127.0.0.2-127.0.0.5 --channels all --hold 60s
//! wsload publish --brokers 127.0.0.1:40123 --rate 20 --duration 30s
//! ```
//!
//! `clients` opens many WebSocket connections (spread over several target
//! URLs and several local source addresses, so one process is bounded by its
//! open-files limit, not by ephemeral ports), subscribes each, counts the
//! prediction frames that arrive and samples their end-to-end latency (the
//! prediction's `predicted_at` to the frame's arrival). It prints progress
//! every few seconds and one JSON summary at the end.
//!
//! `publish` writes predictions to Kafka at a steady rate, in bursts, with
//! `predicted_at` set when each burst is made; with `--peer`, it sends them
//! to a peer broadcast server instead (loadtest/peers/), on the same
//! schedule.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use fantasy_kafka::{KafkaConfig, Producer};
use fantasy_messages::{Prediction, SchemaVersion};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "wsload", about = "Load tools for the fanout")]
struct Cli {
    /// Runtime worker threads (default: one per core). On a machine shared
    /// with the server under test, fewer leaves it more of the cores.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold many subscribed WebSocket clients and measure what they receive.
    Clients(ClientsArgs),
    /// Publish predictions to Kafka at a steady rate.
    Publish(PublishArgs),
}

#[derive(Debug, Args)]
struct ClientsArgs {
    /// Fanout stream URLs (`ws://host:port/v1/stream`), comma-separated;
    /// connections go to them in turn.
    #[arg(long, value_delimiter = ',', required = true)]
    url: Vec<String>,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Local source addresses, comma-separated, or a range such as
    /// `127.0.0.2-127.0.0.9` (each gives its own ephemeral ports).
    #[arg(long, default_value = "127.0.0.1")]
    source_ips: String,
    /// Channels each client subscribes to, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    channels: Vec<String>,
    /// New connections per second.
    #[arg(long, default_value_t = 2000)]
    connect_rate: u32,
    /// How long to hold the connections once all are open (`0s`: until
    /// Ctrl-C).
    #[arg(long, default_value = "60s", value_parser = fantasy_config_duration)]
    hold: Duration,
    /// Stop early once this many prediction frames arrived, in all.
    #[arg(long)]
    expect: Option<u64>,
    /// Stop once frames have flowed and then none came for this long.
    #[arg(long, value_parser = fantasy_config_duration)]
    quiet_exit: Option<Duration>,
    /// A bearer token, when the fanout requires one.
    #[arg(long, env = "WSLOAD_TOKEN")]
    token: Option<String>,
    /// Written (with the connection count) once every client is subscribed.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    report_every: u64,
    /// One latency sample per this many frames of a connection.
    #[arg(long, default_value_t = 16)]
    sample_every: u64,
    /// What latency is measured from: the prediction's `predicted_at`, or
    /// `event_produced_at` (when the collector produced the game event: the
    /// whole pipeline).
    #[arg(long, default_value = "predicted_at", value_parser = ["predicted_at", "event_produced_at"])]
    latency_from: String,
}

#[derive(Debug, Args)]
struct PublishArgs {
    /// Kafka bootstrap servers (what the fanout reads).
    #[arg(long, env = "KAFKA_BROKERS", required_unless_present = "peer")]
    brokers: Option<String>,
    /// A peer broadcast server's publish URL instead of Kafka
    /// (`ws://127.0.0.1:18091/publish`, loadtest/peers/ws-broadcast.js):
    /// each burst goes to it as one JSON array, over one WebSocket (Kafka
    /// is then not used, even with KAFKA_BROKERS set).
    #[arg(long)]
    peer: Option<String>,
    /// Topic name prefix (as the services' `KAFKA_TOPIC_PREFIX`).
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Predictions per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Predictions per burst (a predictor publishes its batches at once).
    #[arg(long, default_value_t = 5)]
    burst: usize,
    /// How long to publish.
    #[arg(long, default_value = "30s", value_parser = fantasy_config_duration)]
    duration: Duration,
    /// Distinct games the predictions are about.
    #[arg(long, default_value_t = 1000)]
    games: usize,
    /// Sports the games are spread over, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "nba,nfl,mlb,nhl")]
    sports: Vec<String>,
}

fn fantasy_config_duration(s: &str) -> Result<Duration, String> {
    fantasy_config::parse_duration(s)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Clients(args) => clients(args).await,
            Command::Publish(args) => publish(args).await,
        }
    })
}

// --- clients -----------------------------------------------------------------

/// Where one URL points.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    addr: SocketAddr,
}

fn parse_target(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("{url}: only ws:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {authority}"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{url}: no IPv4 address for {authority}"))?;
    Ok(Target {
        url: url.to_owned(),
        addr,
    })
}

fn parse_sources(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (Ipv4Addr, Ipv4Addr) = (a.parse()?, b.parse()?);
            let (lo, hi) = (u32::from(a), u32::from(b));
            if hi < lo || hi - lo > 1024 {
                bail!("{part}: a range of at most 1024 addresses, low to high");
            }
            out.extend((lo..=hi).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("{part}: not an IP address"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("--source-ips: no address given");
    }
    Ok(out)
}

/// What every client adds to.
#[derive(Debug, Default)]
struct Stats {
    open: AtomicU64,
    subscribed: AtomicU64,
    failed: AtomicU64,
    predictions: AtomicU64,
    bytes: AtomicU64,
    /// µs since `start` of the first and last prediction frame.
    first_us: AtomicU64,
    last_us: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    failures: Mutex<BTreeMap<String, u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        if let Ok(mut m) = map.lock() {
            *m.entry(key).or_default() += 1;
        }
    }
}

/// `"<field>":"<RFC 3339>"` in a frame, as µs since the epoch.
fn timestamp_us(frame: &str, field: &str) -> Option<i64> {
    let key = format!("\"{field}\":\"");
    let start = frame.find(&key)? + key.len();
    let len = frame[start..].find('"')?;
    let t = chrono::DateTime::parse_from_rfc3339(&frame[start..start + len]).ok()?;
    Some(t.timestamp_micros())
}

async fn clients(args: ClientsArgs) -> anyhow::Result<()> {
    let targets: Vec<Target> = args
        .url
        .iter()
        .map(|u| parse_target(u))
        .collect::<Result<_, _>>()?;
    let sources = parse_sources(&args.source_ips)?;
    let subscribe: Arc<str> = serde_json::json!({"op": "subscribe", "channels": args.channels})
        .to_string()
        .into();
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let start = Instant::now();
    let latency_from: Arc<str> = args.latency_from.as_str().into();
    // Handshakes in flight at once: a burst of SYNs beyond the listen
    // backlog only costs retries.
    let handshakes = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();

    let ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("wsload: interrupted");
                stop.cancel();
            }
        })
    };
    let reporter = {
        let (stats, stop) = (stats.clone(), stop.clone());
        let every = Duration::from_secs(args.report_every.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let mut last = 0;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let n = stats.predictions.load(Ordering::Relaxed);
                eprintln!(
                    "wsload: {:>6.1}s open={} subscribed={} failed={} frames/s={:.0}",
                    start.elapsed().as_secs_f64(),
                    stats.open.load(Ordering::Relaxed),
                    stats.subscribed.load(Ordering::Relaxed),
                    stats.failed.load(Ordering::Relaxed),
                    (n - last) as f64 / every.as_secs_f64(),
                );
                last = n;
            }
        })
    };

    let pace = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate.max(1)));
    let mut next = tokio::time::Instant::now();
    for i in 0..args.connections {
        if stop.is_cancelled() {
            break;
        }
        tokio::time::sleep_until(next).await;
        next += pace;
        let target = targets[i % targets.len()].clone();
        let source = sources[(i / targets.len()) % sources.len()];
        let permit = Arc::clone(&handshakes).acquire_owned().await?;
        let client = Client {
            target,
            source,
            token: args.token.clone(),
            subscribe: Arc::clone(&subscribe),
            stats: Arc::clone(&stats),
            stop: stop.clone(),
            start,
            sample_every: args.sample_every.max(1),
            latency_from: latency_from.clone(),
        };
        tasks.spawn(client.run(permit));
    }

    // Wait for every client to be subscribed (or to have failed).
    let total = args.connections as u64;
    while !stop.is_cancelled() {
        let done = stats.subscribed.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed);
        if done >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected_in = start.elapsed();
    let subscribed = stats.subscribed.load(Ordering::Relaxed);
    eprintln!(
        "wsload: {subscribed} of {total} subscribed in {:.1}s ({} failed)",
        connected_in.as_secs_f64(),
        stats.failed.load(Ordering::Relaxed)
    );
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{subscribed}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }

    let hold_until = (!args.hold.is_zero()).then(|| tokio::time::Instant::now() + args.hold);
    loop {
        if stop.is_cancelled() || hold_until.is_some_and(|t| tokio::time::Instant::now() >= t) {
            break;
        }
        if args
            .expect
            .is_some_and(|n| stats.predictions.load(Ordering::Relaxed) >= n)
        {
            break;
        }
        let last = stats.last_us.load(Ordering::Relaxed);
        if let Some(quiet) = args.quiet_exit
            && last > 0
            && start.elapsed().saturating_sub(Duration::from_micros(last)) >= quiet
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_at_end = stats.open.load(Ordering::Relaxed);
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    reporter.abort();
    ctrl_c.abort();

    println!(
        "{}",
        summary(&stats, total, subscribed, open_at_end, connected_in)
    );
    Ok(())
}

fn summary(
    stats: &Stats,
    total: u64,
    subscribed: u64,
    open_at_end: u64,
    connected_in: Duration,
) -> serde_json::Value {
    let predictions = stats.predictions.load(Ordering::Relaxed);
    let window_s = (stats
        .last_us
        .load(Ordering::Relaxed)
        .saturating_sub(stats.first_us.load(Ordering::Relaxed))) as f64
        / 1e6;
    let mut lat = stats
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let pct = |q: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * q).round() as usize;
        f64::from(lat[i]) / 1000.0
    };
    serde_json::json!({
        "connections": total,
        "subscribed": subscribed,
        "failed": stats.failed.load(Ordering::Relaxed),
        "open_at_end": open_at_end,
        "connect_seconds": connected_in.as_secs_f64(),
        "predictions": predictions,
        "bytes": stats.bytes.load(Ordering::Relaxed),
        "window_seconds": window_s,
        "deliveries_per_second": if window_s > 0.0 { predictions as f64 / window_s } else { 0.0 },
        "latency_ms": {
            "samples": lat.len(),
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "max": pct(1.0),
        },
        "failures": stats.failures.lock().map(|m| m.clone()).unwrap_or_default(),
        "closes": stats.closes.lock().map(|m| m.clone()).unwrap_or_default(),
    })
}

struct Client {
    target: Target,
    source: IpAddr,
    token: Option<String>,
    subscribe: Arc<str>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    start: Instant,
    sample_every: u64,
    latency_from: Arc<str>,
}

impl Client {
    async fn run(self, permit: tokio::sync::OwnedSemaphorePermit) {
        let ws = match tokio::time::timeout(Duration::from_secs(30), self.connect()).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(why)) => return self.failed(why),
            Err(_) => return self.failed("timeout".into()),
        };
        drop(permit);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        self.read(ws).await;
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn failed(&self, why: String) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        Stats::count(&self.stats.failures, why);
    }

    async fn connect(
        &self,
    ) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, String> {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {}", e.kind()))?;
        socket
            .bind(SocketAddr::new(self.source, 0))
            .map_err(|e| format!("bind {}: {}", self.source, e.kind()))?;
        let tcp = socket
            .connect(self.target.addr)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = tcp.set_nodelay(true);
        let mut request = self
            .target
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("request: {e}"))?;
        if let Some(t) = &self.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            request.headers_mut().insert("authorization", v);
        }
        // Small buffers: many connections per process.
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(resp) => format!("http {}", resp.status().as_u16()),
                other => format!("handshake: {other}"),
            })?;
        ws.send(Message::Text(self.subscribe.as_ref().into()))
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        Ok(ws)
    }

    async fn read(&self, mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
        let mut frames = 0u64;
        loop {
            let msg = tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return;
                }
                m = ws.next() => m,
            };
            match msg {
                Some(Ok(Message::Text(text))) => {
                    let t = text.as_str();
                    if t.starts_with(r#"{"type":"prediction""#) {
                        frames += 1;
                        let now_us = self.start.elapsed().as_micros() as u64;
                        let _ = self.stats.first_us.compare_exchange(
                            0,
                            now_us,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        self.stats.last_us.fetch_max(now_us, Ordering::Relaxed);
                        self.stats.predictions.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .bytes
                            .fetch_add(t.len() as u64, Ordering::Relaxed);
                        if frames % self.sample_every == 1 % self.sample_every
                            && let Some(at) = timestamp_us(t, &self.latency_from)
                        {
                            let lat = (chrono::Utc::now().timestamp_micros() - at)
                                .clamp(0, i64::from(u32::MAX));
                            if let Ok(mut l) = self.stats.latencies_us.lock() {
                                l.push(lat as u32);
                            }
                        }
                    } else if t.starts_with(r#"{"type":"subscribed""#) {
                        self.stats.subscribed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code =
                        frame.map_or_else(|| "none".to_owned(), |f| u16::from(f.code).to_string());
                    Stats::count(&self.stats.closes, code);
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    Stats::count(&self.stats.closes, format!("error: {e}"));
                    return;
                }
                None => {
                    Stats::count(&self.stats.closes, "eof".into());
                    return;
                }
            }
        }
    }
}

// --- publish -----------------------------------------------------------------

/// Where `publish` sends its bursts.
enum Sink {
    Kafka(Producer),
    Peer(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>),
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    if args.sports.is_empty() || args.games == 0 || args.burst == 0 {
        bail!("--sports, --games and --burst must not be empty or zero");
    }
    let mut sink = match (&args.peer, &args.brokers) {
        (Some(url), _) => {
            let target = parse_target(url)?;
            let tcp = tokio::net::TcpStream::connect(target.addr)
                .await
                .with_context(|| format!("connecting to the peer at {url}"))?;
            tcp.set_nodelay(true)?;
            let (ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
                .await
                .with_context(|| format!("the WebSocket handshake with {url}"))?;
            Sink::Peer(ws)
        }
        (None, Some(brokers)) => {
            let mut cfg = KafkaConfig::new(brokers.clone(), "wsload");
            cfg.topic_prefix = args.topic_prefix.clone();
            Sink::Kafka(Producer::new(&cfg).context("creating the Kafka producer")?)
        }
        (None, None) => bail!("--brokers or --peer"),
    };
    let period = Duration::from_secs_f64(args.burst as f64 / args.rate);
    let start = tokio::time::Instant::now();
    let mut next = start;
    let mut sent = 0usize;
    let mut batch = Vec::with_capacity(args.burst);
    while start.elapsed() < args.duration {
        tokio::time::sleep_until(next).await;
        next += period;
        let now = chrono::Utc::now();
        batch.clear();
        for _ in 0..args.burst {
            let g = sent % args.games;
            let sport = &args.sports[g % args.sports.len()];
            batch.push(Prediction {
                schema_version: SchemaVersion,
                game_id: format!("load-{g}"),
                sport: sport.clone(),
                league: sport.to_uppercase(),
                home_team: format!("H{}", g % 30),
                away_team: format!("A{}", (g + 7) % 30),
                scheduled_at: now + chrono::Duration::hours(2),
                model_version: "load".into(),
                home_win_prob: ((sent * 7919) % 1000) as f32 / 1000.0,
                predicted_at: now,
                event_produced_at: Some(now),
                variant: None,
            });
            sent += 1;
        }
        match &mut sink {
            Sink::Kafka(producer) => producer.publish_batch(&batch).await.context("publishing")?,
            Sink::Peer(ws) => ws
                .send(Message::Text(serde_json::to_string(&batch)?.into()))
                .await
                .context("publishing to the peer")?,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"published": sent, "seconds": secs, "rate": sent as f64 / secs})
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_and_lists_parse() {
        let ips = parse_sources("127.0.0.2-127.0.0.4,10.0.0.1").unwrap();
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[2], "127.0.0.4".parse::<IpAddr>().unwrap());
        assert!(parse_sources("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_sources("nope").is_err());
    }

    #[test]
    fn latency_reads_predicted_at_from_a_frame() {
        let f = r#"{"type":"prediction","data":{"predicted_at":"2026-11-22T10:00:00.000001Z"}}"#;
        assert_eq!(timestamp_us(f, "predicted_at"), Some(1_795_341_600_000_001));
        assert_eq!(
            timestamp_us(r#"{"type":"prediction"}"#, "predicted_at"),
            None
        );
        let g = r#"{"data":{"predicted_at":"2026-11-22T10:00:01Z","event_produced_at":"2026-11-22T10:00:00Z"}}"#;
        assert_eq!(
            timestamp_us(g, "event_produced_at"),
            Some(1_795_341_600_000_000)
        );
    }
}
