//! One WebSocket connection.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantasy_cache::Cache;
use fantasy_http::Client;
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::hub::{Conn, Frame, Hub, Inbox};
use crate::protocol::{self, Channel, ClientOp, OpError};
use crate::ws::{self, Socket};

/// Frames written per flush: a burst goes out in few system calls.
const WRITE_BATCH: usize = 64;

/// How long one batch of writes may take before the client counts as slow.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the close frame may wait behind frames already on their way
/// (a slow client reads those first).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server waits for the client's close frame.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// Metric handles of the connection tasks.
#[derive(Debug)]
pub struct ConnMetrics {
    bytes_out: metrics::Counter,
    latency: metrics::Histogram,
    /// The hub's receipt of a message to its frame's write (hub, queue,
    /// socket).
    fanout_stage: metrics::Histogram,
    recovered: metrics::Counter,
    not_recovered: metrics::Counter,
}

impl ConnMetrics {
    pub fn new() -> Self {
        Self {
            bytes_out: metrics::counter!("fanout_bytes_out_total"),
            latency: metrics::histogram!("fanout_e2e_latency_seconds"),
            fanout_stage: metrics::histogram!("fanout_stage_seconds", "stage" => "fanout"),
            recovered: metrics::counter!("fanout_recovery_total", "result" => "hit"),
            not_recovered: metrics::counter!("fanout_recovery_total", "result" => "miss"),
        }
    }
}

impl Default for ConnMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What a connection task needs.
#[derive(Debug)]
pub struct Context {
    pub hub: Arc<Hub>,
    pub cache: Cache,
    pub limits: Limits,
    pub shutdown: CancellationToken,
    pub metrics: Arc<ConnMetrics>,
}

enum Exit {
    Close(u16, &'static str),
    Gone,
}

struct Session {
    ctx: Arc<Context>,
    client: Client,
    conn: Arc<Conn>,
    socket: Socket,
    subs: BTreeSet<Channel>,
    written: u64,
}

/// Runs a connection until the client leaves, is kicked, or the server
/// stops; always unsubscribes it everywhere on the way out.
///
/// Not an `async fn`: its arguments would be kept in the task beside the
/// session made of them. Every byte of a connection's task counts ten
/// thousand times, so the rarely taken paths (requests, the close) are
/// boxed while they run, too.
pub fn run(socket: Socket, client: Client, ctx: Arc<Context>) -> impl Future<Output = ()> + Send {
    let (conn, rx) = ctx.hub.connect();
    let session = Session {
        ctx,
        client,
        conn,
        socket,
        subs: BTreeSet::new(),
        written: 0,
    };
    session.run(rx)
}

/// The closing handshake: send the close frame (behind what is already on
/// its way), then read until the client answers with its own, so the TCP
/// connection ends cleanly. Dropping the socket at once would reset it when
/// the client's late frames (a pong) arrive, and the client could lose the
/// close frame, and with it the reason, from its receive buffer.
async fn close(socket: &mut Socket, code: u16, reason: &'static str) {
    if write(socket, &[ws::close(code, reason)], CLOSE_TIMEOUT)
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        while let Some(Ok(m)) = socket.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Writes frames made by [`ws`], after whatever tungstenite has queued (a
/// pong, possibly half written when the socket was full), within `limit`.
async fn write<B: AsRef<[u8]>>(
    socket: &mut Socket,
    frames: &[B],
    limit: Duration,
) -> Result<(), Exit> {
    let write = async {
        socket.flush().await.map_err(|_| Exit::Gone)?;
        ws::write_frames(socket.get_mut(), frames)
            .await
            .map_err(|_| Exit::Gone)
    };
    match tokio::time::timeout(limit, write).await {
        Ok(done) => done,
        Err(_) => Err(Exit::Close(4001, "slow client: writes time out")),
    }
}

impl Session {
    async fn run(mut self, rx: Inbox) {
        let exit = self.serve(rx).await;
        for ch in &self.subs {
            self.ctx.hub.unsubscribe(self.conn.id, ch);
        }
        if let Exit::Close(code, reason) = exit {
            Box::pin(close(&mut self.socket, code, reason)).await;
        }
    }

    async fn serve(&mut self, rx: Inbox) -> Exit {
        let (ping_interval, idle_timeout) =
            (self.ctx.limits.ping_interval, self.ctx.limits.idle_timeout);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        let mut last_heard = Instant::now();
        // Made once, not per loop turn: a fresh `cancelled()` would register
        // with the token shared by every connection (one lock for all) on
        // each wake-up.
        let shutdown = self.ctx.shutdown.clone().cancelled_owned();
        let conn = Arc::clone(&self.conn);
        let kicked = conn.kicked.notified();
        tokio::pin!(shutdown, kicked);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return Exit::Close(1001, "server shutting down"),
                () = &mut kicked => {
                    let (code, reason) = conn.kick_reason().unwrap_or((4001, "slow client"));
                    return Exit::Close(code, reason);
                }
                frame = rx.recv() => {
                    if let Err(exit) = self.write_burst(frame, &rx).await {
                        return exit;
                    }
                }
                msg = self.socket.next() => {
                    last_heard = Instant::now();
                    match msg {
                        None | Some(Ok(Message::Close(_))) => return Exit::Gone,
                        Some(Err(e)) => {
                            // A frame over the limit is the one error the
                            // client can fix; anything else is a dead link.
                            let too_big = matches!(e, tungstenite::Error::Capacity(_));
                            return if too_big { Exit::Close(1009, "frame too large") } else { Exit::Gone };
                        }
                        Some(Ok(Message::Text(text))) => {
                            if let Err(exit) = Box::pin(self.handle_op(&text)).await {
                                return exit;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            if self.send(protocol::error_frame("malformed", "send JSON text frames")).await.is_err() {
                                return Exit::Gone;
                            }
                        }
                        // Pings are answered by the WebSocket layer; a pong
                        // only proves the client is alive.
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > idle_timeout {
                        return Exit::Close(4002, "idle: no pong within IDLE_TIMEOUT");
                    }
                    if let Err(exit) = write(&mut self.socket, &[ws::ping()], WRITE_TIMEOUT).await {
                        return exit;
                    }
                }
            }
        }
    }

    async fn send(&mut self, text: Utf8Bytes) -> Result<(), Exit> {
        write(&mut self.socket, &[ws::text(&text)], WRITE_TIMEOUT).await
    }

    /// Writes `first` and whatever else is queued (up to a batch) in as few
    /// system calls as the socket takes.
    async fn write_burst(&mut self, first: Frame, rx: &Inbox) -> Result<(), Exit> {
        let mut burst = Vec::with_capacity(8);
        burst.push(first);
        rx.drain_into(&mut burst, WRITE_BATCH);
        let mut bytes = 0u64;
        let mut sampled = Vec::new();
        for frame in &burst {
            bytes += frame.wire.len() as u64;
            self.written += 1;
            // One latency sample in 16 frames of a connection (its 1st,
            // 17th, ...): histograms keep samples until scraped, and a
            // busy process writes 10^5 frames/s.
            if frame.produced_us > 0 && self.written % 16 == 1 {
                sampled.push(frame.clone());
            }
        }
        write(&mut self.socket, &burst, WRITE_TIMEOUT).await?;
        // Sampled once written: the stages end when the socket has the bytes.
        if !sampled.is_empty() {
            let now = chrono::Utc::now().timestamp_micros();
            let metrics = &self.ctx.metrics;
            for frame in sampled {
                metrics
                    .latency
                    .record((now - frame.produced_us).max(0) as f64 / 1e6);
                metrics
                    .fanout_stage
                    .record(frame.received.elapsed().as_secs_f64());
            }
        }
        self.ctx.metrics.bytes_out.increment(bytes);
        Ok(())
    }

    async fn handle_op(&mut self, text: &str) -> Result<(), Exit> {
        let op = match protocol::parse_op(text) {
            Ok(op) => op,
            Err(OpError::UnknownOp(op)) => {
                return self
                    .send(protocol::error_frame(
                        "unknown_op",
                        &format!("unknown op {op:?}; use subscribe, unsubscribe or ping"),
                    ))
                    .await;
            }
            Err(OpError::Malformed(why)) => {
                return self.send(protocol::error_frame("malformed", &why)).await;
            }
        };
        match op {
            ClientOp::Ping { id } => self.send(protocol::pong_frame(id.as_ref())).await,
            ClientOp::Unsubscribe { channels } => {
                let Some(channels) = self.bounded(channels).await? else {
                    return Ok(());
                };
                for name in channels {
                    match Channel::parse(&name) {
                        Some(ch) => {
                            self.ctx.hub.unsubscribe(self.conn.id, &ch);
                            self.subs.remove(&ch);
                            self.send(protocol::unsubscribed_frame(&name)).await?;
                        }
                        None => self.send(unknown_channel(&name)).await?,
                    }
                }
                Ok(())
            }
            ClientOp::Subscribe { channels, since } => {
                let Some(channels) = self.bounded(channels).await? else {
                    return Ok(());
                };
                // All or nothing: a request that would take the connection
                // over the limit subscribes to none of its channels.
                let max = self.ctx.limits.max_subscriptions;
                let adding = channels
                    .iter()
                    .filter_map(|name| Channel::parse(name))
                    .filter(|ch| !self.subs.contains(ch))
                    .filter(|ch| {
                        self.client
                            .channels
                            .as_ref()
                            .is_none_or(|a| ch.allowed_by(a))
                    })
                    .count();
                if self.subs.len() + adding > max {
                    return self
                        .send(protocol::error_frame(
                            "too_many_subscriptions",
                            &format!(
                                "this would hold {} channels; at most {max} per connection \
                                 (MAX_SUBSCRIPTIONS): nothing was subscribed",
                                self.subs.len() + adding
                            ),
                        ))
                        .await;
                }
                for name in channels {
                    let Some(ch) = Channel::parse(&name) else {
                        self.send(unknown_channel(&name)).await?;
                        continue;
                    };
                    if let Some(allowed) = &self.client.channels
                        && !ch.allowed_by(allowed)
                    {
                        self.send(protocol::error_frame(
                            "forbidden_channel",
                            &format!("your token does not allow {name}"),
                        ))
                        .await?;
                        continue;
                    }
                    self.subscribe(ch, &name, since.get(&name)).await?;
                }
                Ok(())
            }
        }
    }

    /// The channels of one request, each once, in the order asked; `None`
    /// (after one `too_many_subscriptions` error frame, and with nothing
    /// changed) when the request names more distinct channels than a
    /// connection may hold. Every later answer is one frame per channel, so
    /// this bounds what one request can make the server send (a request
    /// naming thousands would otherwise fill the client's queue with
    /// answers and get it closed as slow). Whether a subscription fits
    /// beside the ones held is the caller's check.
    async fn bounded(&mut self, channels: Vec<String>) -> Result<Option<Vec<String>>, Exit> {
        let max = self.ctx.limits.max_subscriptions;
        let mut seen = std::collections::HashSet::new();
        let mut distinct = Vec::new();
        for name in channels {
            if seen.contains(&name) {
                continue;
            }
            if seen.len() == max {
                self.send(protocol::error_frame(
                    "too_many_subscriptions",
                    &format!("a request names at most {max} channels (MAX_SUBSCRIPTIONS)"),
                ))
                .await?;
                return Ok(None);
            }
            seen.insert(name.clone());
            distinct.push(name);
        }
        Ok(Some(distinct))
    }

    async fn subscribe(
        &mut self,
        ch: Channel,
        name: &str,
        since: Option<&protocol::Positions>,
    ) -> Result<(), Exit> {
        let found = self.ctx.hub.subscribe(&self.conn, &ch, since.map(|s| &s.0));
        self.subs.insert(ch.clone());
        let recovered = found.recovered.unwrap_or(false);
        self.send(protocol::subscribed_frame(
            name,
            recovered,
            &found.positions,
        ))
        .await?;
        match found.recovered {
            Some(true) => {
                self.ctx.metrics.recovered.increment(1);
                write(&mut self.socket, &found.replay, WRITE_TIMEOUT).await?;
            }
            Some(false) => {
                self.ctx.metrics.not_recovered.increment(1);
                let snapshot = snapshot(&self.ctx, &ch, name).await;
                self.send(snapshot).await?;
            }
            None => {
                write(&mut self.socket, &found.replay, WRITE_TIMEOUT).await?;
            }
        }
        Ok(())
    }
}

/// The latest prediction of each game of the channel, from Redis.
async fn snapshot(ctx: &Context, ch: &Channel, name: &str) -> Utf8Bytes {
    let games = ctx.hub.snapshot_games(ch);
    let ids: Vec<&str> = games.iter().map(String::as_str).collect();
    let payloads = match ctx.cache.latest_predictions(&ids).await {
        Ok(found) => found
            .into_iter()
            .flatten()
            .filter_map(|p| fantasy_messages::encode(&p).ok())
            .collect(),
        Err(e) => {
            tracing::warn!(channel = name, "snapshot from Redis failed: {e}");
            Vec::new()
        }
    };
    protocol::snapshot_frame(name, &payloads)
}

fn unknown_channel(name: &str) -> Utf8Bytes {
    protocol::error_frame(
        "unknown_channel",
        &format!("{name:?} is not a channel; use game:<id>, sport:<sport>, all or metrics"),
    )
}
