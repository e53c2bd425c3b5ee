//! Channels, their subscribers and their history.
//!
//! One Kafka reader task publishes into the hub; connection tasks subscribe
//! and unsubscribe. Each channel has its own lock, held only for in-memory
//! work (never across an await): publishing to a channel pushes the frame
//! into its history and hands a clone of the same bytes to each subscriber's
//! bounded queue. A subscriber whose queue is full is kicked (closed with
//! 4001), never waited for: one slow client cannot slow the others.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantasy_kafka::TailRecord;
use fantasy_messages::{ExperimentStanding, ModelMetrics, Prediction};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::Limits;
use crate::protocol::{self, Channel};

/// One frame on its way to clients, shared by every queue and history it
/// is in: a queued frame costs one pointer, so the first block of a
/// connection's queue (32 slots, allocated up front) stays small.
#[derive(Clone, Debug)]
pub struct Frame(Arc<FrameData>);

#[derive(Debug)]
pub struct FrameData {
    /// The whole WebSocket text frame, header and all, as every socket
    /// gets it (see [`crate::ws`]).
    pub wire: Bytes,
    pub partition: i32,
    pub offset: i64,
    /// When the prediction was made (µs since the epoch), for the
    /// end-to-end latency metric; 0 for frames that are not predictions.
    pub produced_us: i64,
    pub received: Instant,
}

impl std::ops::Deref for Frame {
    type Target = FrameData;

    fn deref(&self) -> &FrameData {
        &self.0
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.wire
    }
}

impl Frame {
    /// A frame outside the position sequence (metrics, ...).
    pub fn control(text: &Utf8Bytes) -> Self {
        Self(Arc::new(FrameData {
            wire: crate::ws::text(text),
            partition: -1,
            offset: -1,
            produced_us: 0,
            received: Instant::now(),
        }))
    }
}

/// A connection as the hub sees it.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    /// Frames on their way to the client, at most `CLIENT_QUEUE`. A deque
    /// under a lock and a [`Notify`]: about a hundred bytes a connection
    /// (tokio's mpsc channel takes about a kilobyte: cache-padded halves
    /// and a block of 32 slots).
    queue: Mutex<VecDeque<Frame>>,
    bound: usize,
    ready: Notify,
    kick: Mutex<Option<(u16, &'static str)>>,
    pub kicked: Notify,
}

/// The full queue's frame, not queued.
struct Full;

impl Conn {
    fn push(&self, frame: Frame) -> Result<(), Full> {
        {
            let mut q = lock(&self.queue);
            if q.len() >= self.bound {
                return Err(Full);
            }
            q.push_back(frame);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Asks the connection to close with `code` and `reason` (the first
    /// request wins).
    pub fn kick(&self, code: u16, reason: &'static str) {
        if let Ok(mut k) = self.kick.lock()
            && k.is_none()
        {
            *k = Some((code, reason));
            self.kicked.notify_one();
        }
    }

    /// Why the connection was asked to close.
    pub fn kick_reason(&self) -> Option<(u16, &'static str)> {
        self.kick.lock().ok().and_then(|k| *k)
    }
}

/// The connection task's end of its queue.
#[derive(Debug)]
pub struct Inbox(Arc<Conn>);

impl Inbox {
    /// The next frame, if one is queued.
    pub fn try_recv(&self) -> Option<Frame> {
        lock(&self.0.queue).pop_front()
    }

    /// Moves queued frames into `burst` until it holds `max`, under one
    /// lock.
    pub fn drain_into(&self, burst: &mut Vec<Frame>, max: usize) {
        let mut q = lock(&self.0.queue);
        let n = q.len().min(max.saturating_sub(burst.len()));
        burst.extend(q.drain(..n));
        // A slow client's backlog grew the deque; once drained it gives the
        // room back instead of keeping its peak.
        if q.is_empty() && q.capacity() > 64 {
            q.shrink_to(8);
        }
    }

    /// The next frame, once one is queued. Cancel-safe: a frame leaves the
    /// queue only when this returns it.
    pub async fn recv(&self) -> Frame {
        loop {
            if let Some(frame) = self.try_recv() {
                return frame;
            }
            self.0.ready.notified().await;
        }
    }
}

struct Sub {
    conn: Arc<Conn>,
    /// Positions the client has seen already (when it recovered from a
    /// replica ahead of this one): frames at or below are not sent again.
    floor: Option<Vec<i64>>,
}

#[derive(Default)]
struct ChannelState {
    subs: HashMap<u64, Sub>,
    history: VecDeque<Frame>,
    /// Per partition, the highest offset this channel's history dropped.
    evicted: Vec<i64>,
    last_message: Option<Instant>,
}

/// What a subscription found.
#[derive(Debug)]
pub struct Subscribed {
    /// `Some(true)`: everything after `since` is in `replay`;
    /// `Some(false)`: history does not reach back, send a snapshot;
    /// `None`: no `since` given.
    pub recovered: Option<bool>,
    pub replay: Vec<Frame>,
    /// Where this replica stood on each partition.
    pub positions: Vec<i64>,
}

/// Metric handles used per message.
struct HubMetrics {
    messages: metrics::Counter,
    deliveries: metrics::Counter,
    slow: metrics::Counter,
    undecodable: metrics::Counter,
    repeated: metrics::Counter,
    subscriptions: metrics::Gauge,
    /// `predicted_at` to the hub (the Kafka hop: produce, replicate, fetch).
    kafka_stage: metrics::Histogram,
}

/// A game's latest prediction, as the hub last published it: what a
/// snapshot covers, and what a redelivered record repeats.
#[derive(Debug)]
struct Latest {
    sport: String,
    /// `predicted_at`, µs since the epoch.
    predicted_us: i64,
    /// `event_produced_at` (the game event it answers), else `predicted_at`.
    event_us: i64,
    model_version: String,
}

impl Latest {
    /// Whether `p` repeats what was published already: the same game event
    /// predicted by the same model, or an earlier event than the latest.
    /// A predictor that failed between announcing a batch and committing
    /// its offsets (a SIGKILL, a producer timeout after the broker came
    /// back) announces those games again, with the same event times; each
    /// game's records are on one partition, in order, so every replica
    /// makes the same call.
    fn repeated_by(&self, p: &Prediction, event_us: i64) -> bool {
        event_us < self.event_us
            || (event_us == self.event_us && p.model_version == self.model_version)
    }
}

/// The channels of one fanout process.
pub struct Hub {
    channels: RwLock<HashMap<Channel, Arc<Mutex<ChannelState>>>>,
    /// Per partition, the last offset published (starts one before where
    /// the reader began: everything after it is known here).
    positions: Mutex<Vec<i64>>,
    known_from: Vec<i64>,
    /// Latest prediction time per game, with its sport: what a snapshot
    /// covers.
    latest: Mutex<HashMap<String, Latest>>,
    limits: Limits,
    next_id: AtomicU64,
    metrics: HubMetrics,
    /// Per partition, the first offset read live (before it: the history
    /// refill, whose age is not the Kafka hop's).
    live_from: Vec<i64>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A mutex's guard, poisoned or not (the data stays consistent: every
/// writer here finishes its update before anything can panic).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Moves a partition's position up to `offset`.
fn advance(positions: &mut Vec<i64>, partition: i32, offset: i64) {
    let p = partition as usize;
    if p >= positions.len() {
        positions.resize(p + 1, -1);
    }
    positions[p] = positions[p].max(offset);
}

impl Hub {
    /// A hub whose reader began at `starts` (offset per partition).
    pub fn new(limits: Limits, starts: &[i64]) -> Self {
        let known_from: Vec<i64> = starts.iter().map(|s| s - 1).collect();
        Self {
            channels: RwLock::default(),
            positions: Mutex::new(known_from.clone()),
            known_from,
            latest: Mutex::default(),
            limits,
            next_id: AtomicU64::new(1),
            metrics: HubMetrics {
                messages: metrics::counter!("fanout_messages_in_total"),
                deliveries: metrics::counter!("fanout_messages_out_total"),
                slow: metrics::counter!("fanout_slow_closes_total"),
                undecodable: metrics::counter!("fanout_undecodable_total"),
                repeated: metrics::counter!("fanout_repeated_total"),
                subscriptions: metrics::gauge!("fanout_subscriptions"),
                kafka_stage: metrics::histogram!("fanout_stage_seconds", "stage" => "kafka"),
            },
            live_from: Vec::new(),
        }
    }

    /// Records before `ends` (per partition, where the topic ended when the
    /// reader opened) refill the history: the Kafka stage leaves them out.
    #[must_use]
    pub fn live_from(mut self, ends: &[i64]) -> Self {
        self.live_from = ends.to_vec();
        self
    }

    /// Whether a record was read live, not as part of the refill.
    fn is_live(&self, partition: i32, offset: i64) -> bool {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.live_from.get(p))
            .is_none_or(|end| offset >= *end)
    }

    /// A new connection with a queue of `CLIENT_QUEUE` frames.
    pub fn connect(&self) -> (Arc<Conn>, Inbox) {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::new(VecDeque::new()),
            bound: self.limits.client_queue,
            ready: Notify::new(),
            kick: Mutex::new(None),
            kicked: Notify::new(),
        });
        (Arc::clone(&conn), Inbox(conn))
    }

    fn channel(&self, ch: &Channel) -> Arc<Mutex<ChannelState>> {
        if let Ok(map) = self.channels.read()
            && let Some(c) = map.get(ch)
        {
            return Arc::clone(c);
        }
        let mut map = match self.channels.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(map.entry(ch.clone()).or_default())
    }

    /// Routes one `predictions` record to its game's, sport's and the `all`
    /// channel.
    pub fn publish(&self, record: &TailRecord) {
        self.metrics.messages.increment(1);
        let Some(payload) = &record.payload else {
            return;
        };
        let prediction: Prediction = match fantasy_messages::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.undecodable.increment(1);
                tracing::warn!(
                    partition = record.partition,
                    offset = record.offset,
                    "undecodable prediction: {e}"
                );
                advance(&mut lock(&self.positions), record.partition, record.offset);
                return;
            }
        };
        let produced_us = prediction.predicted_at.timestamp_micros();
        let event_us = prediction
            .event_produced_at
            .map_or(produced_us, |t| t.timestamp_micros());
        let received = Instant::now();
        if self.is_live(record.partition, record.offset) {
            self.metrics
                .kafka_stage
                .record((chrono::Utc::now().timestamp_micros() - produced_us).max(0) as f64 / 1e6);
        }
        // Held until the position has advanced: a subscriber (which takes
        // this lock first) sees either none of this record's frames and the
        // position before it, or all of them and the position after it.
        // Without it, one that subscribed to `all` between the delivery and
        // the advance was told the earlier position and never got the frame.
        let mut positions = lock(&self.positions);
        // One reader publishes, so nothing changes `latest` between this
        // look and the insert below; neither holds it across the delivery
        // (snapshots read it).
        if lock(&self.latest)
            .get(&prediction.game_id)
            .is_some_and(|l| l.repeated_by(&prediction, event_us))
        {
            self.metrics.repeated.increment(1);
            advance(&mut positions, record.partition, record.offset);
            return;
        }
        for ch in [
            Channel::Game(prediction.game_id.clone()),
            Channel::Sport(prediction.sport.clone()),
            Channel::All,
        ] {
            let Some(text) =
                protocol::prediction_frame(&ch.name(), record.partition, record.offset, payload)
            else {
                continue;
            };
            let frame = Frame(Arc::new(FrameData {
                wire: crate::ws::text(&text),
                partition: record.partition,
                offset: record.offset,
                produced_us,
                received,
            }));
            self.deliver(&ch, frame);
        }
        advance(&mut positions, record.partition, record.offset);
        drop(positions);
        lock(&self.latest).insert(
            prediction.game_id,
            Latest {
                sport: prediction.sport,
                predicted_us: produced_us,
                event_us,
                model_version: prediction.model_version,
            },
        );
    }

    /// Routes one `metrics` record to the `metrics` channel: a
    /// `ModelMetrics` as a `metrics` frame, an `ExperimentStanding` (the
    /// trainer publishes both on the topic) as an `experiment` frame.
    pub fn publish_metrics(&self, record: &TailRecord) {
        let Some(payload) = &record.payload else {
            return;
        };
        let frame = if fantasy_messages::decode::<ModelMetrics>(payload).is_ok() {
            protocol::metrics_frame(payload)
        } else if fantasy_messages::decode::<ExperimentStanding>(payload).is_ok() {
            protocol::experiment_frame(payload)
        } else {
            self.metrics.undecodable.increment(1);
            tracing::warn!(
                partition = record.partition,
                offset = record.offset,
                "undecodable metrics record: neither model metrics nor an experiment standing"
            );
            return;
        };
        if let Some(text) = frame {
            // Metrics frames carry no prediction position: history keeps
            // them for new subscribers, recovery does not apply.
            self.deliver(&Channel::Metrics, Frame::control(&text));
        }
    }

    fn deliver(&self, ch: &Channel, frame: Frame) {
        let channel = self.channel(ch);
        let mut kicked: Vec<u64> = Vec::new();
        let mut state = match channel.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut delivered = 0u64;
        for (id, sub) in &state.subs {
            if let Some(floor) = &sub.floor
                && frame.partition >= 0
                && floor
                    .get(frame.partition as usize)
                    .is_some_and(|f| frame.offset <= *f)
            {
                continue;
            }
            match sub.conn.push(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(Full) => {
                    sub.conn.kick(4001, "slow client: too many frames waiting");
                    self.metrics.slow.increment(1);
                    kicked.push(*id);
                }
            }
        }
        for id in kicked {
            if state.subs.remove(&id).is_some() {
                self.metrics.subscriptions.decrement(1.0);
            }
        }
        self.metrics.deliveries.increment(delivered);
        state.last_message = Some(frame.received);
        if self.limits.history_size > 0 {
            state.history.push_back(frame);
            while state.history.len() > self.limits.history_size {
                if let Some(old) = state.history.pop_front() {
                    Self::note_evicted(&mut state.evicted, &old);
                }
            }
        }
        self.expire(&mut state);
    }

    fn note_evicted(evicted: &mut Vec<i64>, frame: &Frame) {
        if frame.partition < 0 {
            return;
        }
        let p = frame.partition as usize;
        if p >= evicted.len() {
            evicted.resize(p + 1, -1);
        }
        evicted[p] = evicted[p].max(frame.offset);
    }

    fn expire(&self, state: &mut ChannelState) {
        let age = self.limits.history_age;
        while let Some(front) = state.history.front() {
            if front.received.elapsed() <= age {
                break;
            }
            if let Some(old) = state.history.pop_front() {
                Self::note_evicted(&mut state.evicted, &old);
            }
        }
    }

    /// Adds `conn` to `ch`. With `since`, collects what the client missed;
    /// the subscriber is added under the same lock, so nothing falls between
    /// the replay and the live frames.
    pub fn subscribe(
        &self,
        conn: &Arc<Conn>,
        ch: &Channel,
        since: Option<&BTreeMap<i32, i64>>,
    ) -> Subscribed {
        // The positions first, as `publish` takes them: while held, no
        // record is half delivered.
        let positions_now = lock(&self.positions);
        let channel = self.channel(ch);
        let mut state = match channel.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.expire(&mut state);
        let positions = positions_now.clone();
        let (recovered, replay, floor) = if *ch == Channel::Metrics {
            // New subscribers get the recent metrics; there is no position.
            (None, state.history.iter().cloned().collect(), None)
        } else {
            match since {
                None => (None, Vec::new(), None),
                Some(since) => {
                    let n = positions.len().max(state.evicted.len());
                    let floor: Vec<i64> = (0..n)
                        .map(|p| since.get(&(p as i32)).copied().unwrap_or(-1))
                        .collect();
                    let complete = (0..n).all(|p| {
                        let evicted = state.evicted.get(p).copied().unwrap_or(-1);
                        let known = self.known_from.get(p).copied().unwrap_or(-1);
                        floor[p] >= evicted && floor[p] >= known
                    });
                    if complete {
                        let replay: Vec<Frame> = state
                            .history
                            .iter()
                            .filter(|f| {
                                f.offset > floor.get(f.partition as usize).copied().unwrap_or(-1)
                            })
                            .cloned()
                            .collect();
                        (Some(true), replay, Some(floor))
                    } else {
                        (Some(false), Vec::new(), None)
                    }
                }
            }
        };
        let previous = state.subs.insert(
            conn.id,
            Sub {
                conn: Arc::clone(conn),
                floor,
            },
        );
        drop(state);
        drop(positions_now);
        if previous.is_none() {
            self.metrics.subscriptions.increment(1.0);
        }
        Subscribed {
            recovered,
            replay,
            positions,
        }
    }

    /// Removes `conn` from `ch`.
    pub fn unsubscribe(&self, conn_id: u64, ch: &Channel) {
        let channel = self.channel(ch);
        if let Ok(mut state) = channel.lock()
            && state.subs.remove(&conn_id).is_some()
        {
            self.metrics.subscriptions.decrement(1.0);
        }
    }

    /// The games a snapshot of `ch` covers, most recent first.
    pub fn snapshot_games(&self, ch: &Channel) -> Vec<String> {
        match ch {
            Channel::Game(id) => vec![id.clone()],
            Channel::Metrics => Vec::new(),
            Channel::Sport(_) | Channel::All => {
                let Ok(latest) = self.latest.lock() else {
                    return Vec::new();
                };
                let mut games: Vec<(&String, i64)> = latest
                    .iter()
                    .filter(|(_, l)| match ch {
                        Channel::Sport(s) => *s == l.sport,
                        _ => true,
                    })
                    .map(|(id, l)| (id, l.predicted_us))
                    .collect();
                games.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
                games
                    .into_iter()
                    .take(self.limits.snapshot_max)
                    .map(|(id, _)| id.clone())
                    .collect()
            }
        }
    }

    /// Drops game channels nobody listens to whose history has expired, and
    /// forgets games not predicted for a day. Run now and then.
    pub fn sweep(&self) {
        let age = self.limits.history_age;
        if let Ok(mut map) = self.channels.write() {
            map.retain(|ch, state| {
                if !matches!(ch, Channel::Game(_)) {
                    return true;
                }
                let Ok(s) = state.lock() else { return true };
                !s.subs.is_empty() || s.last_message.is_some_and(|t| t.elapsed() <= age)
            });
            metrics::gauge!("fanout_channels").set(map.len() as f64);
        }
        let horizon = chrono::Utc::now().timestamp_micros()
            - Duration::from_secs(24 * 3600).as_micros() as i64;
        if let Ok(mut latest) = self.latest.lock() {
            latest.retain(|_, l| l.predicted_us >= horizon);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    impl FrameData {
        /// The message the frame carries.
        fn text(&self) -> &str {
            let at = match self.wire[1] & 0x7F {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            std::str::from_utf8(&self.wire[at..]).expect("a text frame")
        }
    }
    use fantasy_kafka::TailRecord;
    use fantasy_messages::testing::prediction;

    /// A prediction by `model` of `game`'s event number `event`.
    fn event(game: &str, event: i64, model: &str) -> Prediction {
        let mut p = prediction(game, 0.6);
        p.event_produced_at = Some(chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(event));
        p.model_version = model.into();
        p
    }

    fn record(partition: i32, offset: i64, p: &Prediction) -> TailRecord {
        TailRecord {
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            payload: Some(fantasy_messages::encode(p).unwrap()),
            trace: None,
        }
    }

    /// A predictor that fails after announcing and before committing
    /// announces the same game events again: subscribers get each once, and
    /// the positions move past the repeats (a client resuming after one
    /// is not sent it either). A new event, or a new model's prediction of
    /// the same event, goes out.
    #[test]
    fn a_redelivered_prediction_is_passed_over_and_new_ones_go_out() {
        let hub = Hub::new(Limits::default(), &[0]);
        let (conn, rx) = hub.connect();
        hub.subscribe(&conn, &Channel::All, None);
        let published = [
            event("g1", 1, "v1"),
            event("g2", 1, "v1"),
            event("g1", 1, "v1"), // redelivered
            event("g2", 1, "v1"), // redelivered
            event("g1", 0, "v1"), // an older event, redelivered late
            event("g1", 2, "v1"), // the game's next event
            event("g1", 2, "v2"), // the same event by a new model
        ];
        for (offset, p) in published.iter().enumerate() {
            hub.publish(&record(0, offset as i64, p));
        }
        let mut got = Vec::new();
        while let Some(frame) = rx.try_recv() {
            got.push(frame.offset);
        }
        assert_eq!(got, [0, 1, 5, 6]);
        let since = BTreeMap::from([(0, 1)]);
        let resumed = hub.subscribe(&hub.connect().0, &Channel::All, Some(&since));
        assert_eq!(resumed.recovered, Some(true));
        let replayed: Vec<i64> = resumed.replay.iter().map(|f| f.offset).collect();
        assert_eq!(replayed, [5, 6]);
        assert_eq!(resumed.positions, [6]);
    }

    /// Subscribers joining `all` while records are being published are
    /// told a position and then get every frame after it, none before: the
    /// first frame each one receives on the partition is the position + 1.
    #[test]
    fn a_subscriber_joining_mid_publish_gets_every_frame_after_its_position() {
        const RECORDS: i64 = 5_000;
        let hub = Arc::new(Hub::new(
            Limits {
                client_queue: RECORDS as usize + 16,
                ..Limits::default()
            },
            &[0],
        ));
        let publisher = {
            let hub = Arc::clone(&hub);
            std::thread::spawn(move || {
                for offset in 0..RECORDS {
                    hub.publish(&record(0, offset, &event("nba-1", offset, "v1")));
                }
            })
        };
        let mut subscribers = Vec::new();
        while !publisher.is_finished() && subscribers.len() < 300 {
            let (conn, rx) = hub.connect();
            let told = hub.subscribe(&conn, &Channel::All, None).positions[0];
            subscribers.push((conn, rx, told));
            std::thread::yield_now();
        }
        publisher.join().unwrap();
        assert!(subscribers.len() > 10, "too few subscribed mid-publish");
        for (_, rx, told) in subscribers {
            let mut expected = told + 1;
            while let Some(frame) = rx.try_recv() {
                assert_eq!(frame.offset, expected, "told position {told}");
                expected += 1;
            }
            assert_eq!(
                expected, RECORDS,
                "told position {told}: frames stopped early"
            );
        }
    }

    fn metrics_record(offset: i64, payload: Vec<u8>) -> TailRecord {
        TailRecord {
            partition: 0,
            offset,
            timestamp_ms: None,
            key: Some(b"win-prob".to_vec()),
            payload: Some(payload),
            trace: None,
        }
    }

    /// The `metrics` topic carries model metrics and experiment standings:
    /// each goes out as its own frame type, both stay in the channel's
    /// history for later subscribers, anything else is dropped.
    #[test]
    fn metrics_and_experiment_standings_go_out_on_the_metrics_channel() {
        use fantasy_messages::testing::{experiment_standing, model_metrics};
        let hub = Hub::new(Limits::default(), &[0]);
        let (conn, rx) = hub.connect();
        hub.subscribe(&conn, &Channel::Metrics, None);
        let records = [
            fantasy_messages::encode(&model_metrics("v1")).unwrap(),
            fantasy_messages::encode(&experiment_standing(100, -0.05, 0.04)).unwrap(),
            br#"{"schema_version":1,"something":"else"}"#.to_vec(),
            b"not json".to_vec(),
            fantasy_messages::encode(&experiment_standing(200, -0.04, 0.02)).unwrap(),
        ];
        for (offset, payload) in records.into_iter().enumerate() {
            hub.publish_metrics(&metrics_record(offset as i64, payload));
        }
        let frames = |frames: Vec<Frame>| -> Vec<(String, u64)> {
            frames
                .iter()
                .map(|f| {
                    let v: serde_json::Value = serde_json::from_str(f.text()).unwrap();
                    assert_eq!(v["channel"], "metrics", "{v}");
                    let n = v["data"]["outcomes"]
                        .as_u64()
                        .or(v["data"]["count"].as_u64())
                        .unwrap();
                    (v["type"].as_str().unwrap().to_owned(), n)
                })
                .collect()
        };
        let expected = [
            ("metrics".to_owned(), 120),
            ("experiment".to_owned(), 100),
            ("experiment".to_owned(), 200),
        ];
        let mut live = Vec::new();
        while let Some(frame) = rx.try_recv() {
            live.push(frame);
        }
        assert_eq!(frames(live), expected);
        let later = hub.subscribe(&hub.connect().0, &Channel::Metrics, None);
        assert_eq!(frames(later.replay), expected);
    }

    #[test]
    fn a_queue_holds_its_bound_drains_in_order_and_gives_back_a_backlog() {
        let limits = Limits {
            client_queue: 200,
            ..Limits::default()
        };
        let hub = Hub::new(limits, &[0]);
        let (conn, rx) = hub.connect();
        let frame = |i: i64| {
            Frame(Arc::new(FrameData {
                wire: crate::ws::text("{}"),
                partition: 0,
                offset: i,
                produced_us: 0,
                received: Instant::now(),
            }))
        };
        for i in 0..200 {
            assert!(conn.push(frame(i)).is_ok());
        }
        assert!(conn.push(frame(200)).is_err(), "past CLIENT_QUEUE");
        let mut offsets = Vec::new();
        let mut burst = Vec::new();
        loop {
            burst.clear();
            rx.drain_into(&mut burst, 64);
            if burst.is_empty() {
                break;
            }
            assert!(burst.len() <= 64);
            offsets.extend(burst.iter().map(|f| f.offset));
        }
        assert_eq!(offsets, (0..200).collect::<Vec<_>>());
        assert!(
            lock(&conn.queue).capacity() <= 64,
            "the backlog's room is kept"
        );
    }

    #[test]
    fn the_refill_is_not_the_live_stream() {
        let hub = Hub::new(Limits::default(), &[0, 0]).live_from(&[10, 0]);
        assert!(!hub.is_live(0, 9), "before the end at open: refill");
        assert!(hub.is_live(0, 10));
        assert!(hub.is_live(1, 0), "an empty partition at open");
        assert!(hub.is_live(2, 0), "a partition the reader did not know");
        assert!(Hub::new(Limits::default(), &[0]).is_live(0, 0));
    }
}
