//! The typed, at-least-once consumer.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantasy_messages::{DecodeError, Message};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message as _, OwnedHeaders};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing::{debug, error, info, warn};

use crate::trace::TraceHeaders;
use crate::{KafkaConfig, Producer, ProgressWatch};

/// Turns a payload into a value; implemented for every message type, for
/// [`Raw`] bytes, and by services for enums over several topics.
pub trait Decode: Sized + Send + Sync + 'static {
    /// Decodes a payload read from `topic`.
    fn decode(topic: &str, payload: &[u8]) -> Result<Self, DecodeError>;
}

impl<M: Message> Decode for M {
    fn decode(_topic: &str, payload: &[u8]) -> Result<Self, DecodeError> {
        fantasy_messages::decode(payload)
    }
}

/// Undecoded bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raw(pub Vec<u8>);

impl Decode for Raw {
    fn decode(_topic: &str, payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(Raw(payload.to_vec()))
    }
}

/// One decoded message and where it came from.
#[derive(Clone, Debug)]
pub struct Record<M> {
    pub topic: String,
    pub partition: i32,
    /// The message's offset: with the partition, its position in the log,
    /// the same for every consumer.
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// Milliseconds since the epoch, as the producer or broker stamped it.
    pub timestamp_ms: Option<i64>,
    /// The producer's trace context, when it sent one.
    pub trace: Option<TraceHeaders>,
    pub value: M,
}

impl<M> Record<M> {
    /// Makes `span` a child of the producer's span (when the message carried
    /// trace headers and tracing is on).
    pub fn continue_trace(&self, span: &tracing::Span) {
        if let Some(t) = &self.trace {
            t.adopt(span);
        }
    }
}

/// Handles one batch. Returning `Err` means "not done": the batch is offered
/// again after a backoff and its offsets are not stored until it succeeds, so
/// a handler must be idempotent (our sinks upsert by natural key).
pub trait Handler<M>: Send {
    fn handle(&mut self, batch: &[Record<M>]) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Where a group with no committed offset starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// How one consumer reads.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// The consumer group: members split the partitions between them.
    pub group_id: String,
    pub topics: Vec<String>,
    /// Most messages handed to the handler at once.
    pub max_batch: usize,
    /// After the first message of a batch, how long to wait for more. Small:
    /// it adds to latency when traffic is light.
    pub max_wait: Duration,
    pub start_from: StartFrom,
    /// How often stored offsets are committed (also on revoke and shutdown).
    pub commit_interval: Duration,
    /// How long the group waits for a silent member before giving its
    /// partitions to others (and, on some brokers, how long a join waits for
    /// members that left).
    pub session_timeout: Duration,
    /// Where undecodable messages are copied (with the error in a header)
    /// before being passed over; `None` only counts and logs them.
    pub dead_letter_topic: Option<String>,
    /// First and longest wait between attempts of a failing batch.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Whether the member leaves and rejoins its group when its
    /// [`ProgressWatch`] sees partitions it does not hold stall (or its own
    /// while its handler succeeds).
    pub rejoin_when_stalled: bool,
}

impl ConsumerOptions {
    /// Defaults for `group_id` reading `topics`.
    pub fn new(
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            max_batch: 500,
            max_wait: Duration::from_millis(5),
            start_from: StartFrom::Earliest,
            commit_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
            dead_letter_topic: None,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            rejoin_when_stalled: true,
        }
    }
}

/// Why a consumer could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("could not create the Kafka consumer for group {group}: {source}")]
    Create {
        group: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("could not subscribe group {group} to {topics}: {source}")]
    Subscribe {
        group: String,
        topics: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("fatal Kafka consumer error in group {group}: {source}")]
    Fatal {
        group: String,
        #[source]
        source: Box<KafkaError>,
    },
}

/// A handler's "not yet" (the predictor before its first model): the batch
/// is held, offered again with back-off and not committed, like a failure;
/// but it is an expected state, not a fault: logged once at INFO, not counted
/// in `kafka_consumer_handler_errors_total` nor in
/// [`RunSummary::handler_failures`], counted in [`RunSummary::held`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotYet(pub String);

/// What a consumer did before it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub batches: u64,
    /// Messages handed to the handler successfully.
    pub messages: u64,
    /// Undecodable messages passed over.
    pub poison: u64,
    /// Failed handler attempts (each retried).
    pub handler_failures: u64,
    /// Attempts the handler answered [`NotYet`] (each retried).
    pub held: u64,
    /// Times the member left and rejoined its group on a stall (see
    /// [`ConsumerOptions::rejoin_when_stalled`]).
    pub rejoins: u64,
    /// Failing batches given up because the group rebalanced meanwhile
    /// (read again from the last commit by the partitions' new owners).
    pub abandoned: u64,
}

/// How a batch's handling ended.
enum Handled {
    Done,
    Shutdown,
    Abandoned,
}

/// librdkafka callbacks: logs, statistics (consumer lag), rebalances.
struct Ctx {
    group: String,
    /// Bumped on every revoke: a message received before the bump may be
    /// re-fetched by whoever owns its partition now, so it is not handled.
    generation: AtomicU64,
    /// The partitions held now, kept here so that a probe can read them
    /// without holding the consumer open.
    assignment: Arc<Mutex<Assignment>>,
    /// Set once the final commit is done: the revoke of the close then
    /// commits nothing more (a synchronous commit from inside the close's
    /// rebalance can stall it).
    closing: AtomicBool,
}

impl Ctx {
    fn set_assignment(&self, f: impl FnOnce(&mut Vec<(String, i32)>)) {
        if let Ok(mut a) = self.assignment.lock() {
            f(&mut a.partitions);
        }
    }

    /// Marks the member as settled in a generation (`true`, on an assign)
    /// or between generations (on a revoke or an error).
    fn set_settled(&self, settled: bool) {
        if let Ok(mut a) = self.assignment.lock() {
            a.since = settled.then(Instant::now);
        }
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, t) in statistics.topics {
            // -1 marks partitions with no position yet (and the internal
            // partition -1); they do not count as lag.
            let lag: i64 = t
                .partitions
                .values()
                .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                .map(|p| p.consumer_lag)
                .sum();
            metrics::gauge!("kafka_consumer_lag_messages", "topic" => topic, "group" => self.group.clone())
                .set(lag as f64);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(group = %self.group, %error, "kafka client error: {reason}");
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.generation.fetch_add(1, Ordering::SeqCst);
            // Commit what was handled on the partitions we are about to lose,
            // so their next owner starts right after it (on close, `run` has
            // committed already).
            if !self.closing.load(Ordering::SeqCst) {
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => warn!(group = %self.group, error = %e, "commit on revoke failed"),
                }
            }
            self.set_assignment(|a| {
                a.retain(|(t, p)| {
                    !tpl.elements()
                        .iter()
                        .any(|e| e.topic() == t && e.partition() == *p)
                })
            });
            self.set_settled(false);
            info!(group = %self.group, partitions = tpl.count(), "partitions revoked");
            metrics::counter!("kafka_consumer_rebalances_total", "group" => self.group.clone(), "kind" => "revoke")
                .increment(1);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // A partition paused while a batch failed (see
                // `handle_with_retry`) would stay paused in its new
                // generation: the batch was given up, so fetch anew.
                if let Err(e) = consumer.resume(tpl) {
                    warn!(group = %self.group, error = %e, "cannot resume the assigned partitions");
                }
                self.set_assignment(|a| {
                    for e in tpl.elements() {
                        let entry = (e.topic().to_owned(), e.partition());
                        if !a.contains(&entry) {
                            a.push(entry);
                        }
                    }
                });
                self.set_settled(true);
                info!(group = %self.group, partitions = tpl.count(), "partitions assigned");
                metrics::counter!("kafka_consumer_rebalances_total", "group" => self.group.clone(), "kind" => "assign")
                    .increment(1);
            }
            Rebalance::Error(e) => {
                self.set_assignment(Vec::clear);
                self.set_settled(false);
                warn!(group = %self.group, error = %e, "rebalance error")
            }
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: Result<(), KafkaError>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(group = %self.group, error = %e, "offset commit failed");
                metrics::counter!("kafka_consumer_commit_errors_total", "group" => self.group.clone())
                    .increment(1);
            }
        }
    }
}

/// A message taken off the wire, before the handler.
enum Taken<M> {
    Good(Record<M>),
    Poison {
        topic: String,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        error: DecodeError,
    },
    /// A message with no payload: compaction's delete marker. Nothing to
    /// handle; counted and passed over.
    Tombstone {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

impl<M> Taken<M> {
    fn position(&self) -> (&str, i32, i64) {
        match self {
            Taken::Good(r) => (&r.topic, r.partition, r.offset),
            Taken::Poison {
                topic,
                partition,
                offset,
                ..
            }
            | Taken::Tombstone {
                topic,
                partition,
                offset,
            } => (topic, *partition, *offset),
        }
    }
}

/// A consumer-group member that decodes into `M`.
pub struct Consumer<M> {
    inner: StreamConsumer<Ctx>,
    opts: ConsumerOptions,
    /// Told by this consumer's [`ProgressWatch`] to leave and rejoin.
    rejoin: Arc<tokio::sync::Notify>,
    dead_letters: Option<Producer>,
    _value: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for Consumer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_id", &self.opts.group_id)
            .field("topics", &self.opts.topics)
            .finish_non_exhaustive()
    }
}

impl<M: Decode> Consumer<M> {
    /// Creates the consumer and subscribes it; it joins the group on its
    /// first poll, inside [`Consumer::run`].
    pub fn new(cfg: &KafkaConfig, opts: ConsumerOptions) -> Result<Self, ConsumerError> {
        let mut c = cfg.client_config();
        c.set("group.id", &opts.group_id)
            // Offsets are stored by us, after the handler succeeded, and
            // committed from the store: never ahead of the work.
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                opts.commit_interval.as_millis().max(1).to_string(),
            )
            .set(
                "auto.offset.reset",
                match opts.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .set("statistics.interval.ms", "5000")
            // A fetch returns as soon as data is there (fetch.min.bytes is
            // 1), but librdkafka's mock cluster holds it to the wait: the
            // default 500 ms put ~300 ms on every hop of the pipeline there.
            // On an idle topic this costs a fetch per 10 ms per broker.
            .set("fetch.wait.max.ms", "10")
            .set(
                "session.timeout.ms",
                opts.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (opts.session_timeout.as_millis() / 5)
                    .clamp(100, 3000)
                    .to_string(),
            );
        cfg.apply_extra(&mut c);
        let ctx = Ctx {
            group: opts.group_id.clone(),
            generation: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            assignment: Arc::default(),
        };
        let inner: StreamConsumer<Ctx> =
            c.create_with_context(ctx)
                .map_err(|source| ConsumerError::Create {
                    group: opts.group_id.clone(),
                    source: Box::new(source),
                })?;
        subscribe(&inner, &opts)?;
        let dead_letters = match &opts.dead_letter_topic {
            Some(_) => Some(Producer::new(cfg).map_err(|source| ConsumerError::Create {
                group: opts.group_id.clone(),
                source: Box::new(source),
            })?),
            None => None,
        };
        Ok(Self {
            inner,
            opts,
            rejoin: Arc::default(),
            dead_letters,
            _value: PhantomData,
        })
    }

    /// A handle that reports the partitions this member holds, also while
    /// `run` owns the consumer.
    pub fn assignment_probe(&self) -> AssignmentProbe {
        AssignmentProbe(Arc::clone(&self.inner.context().assignment))
    }

    /// Watches this consumer's group (see [`ProgressWatch`]), answering for
    /// this member. When partitions it does not hold stall (or its own
    /// while its handler succeeds), the member leaves the group and joins
    /// again, at most once per stall time: the
    /// coordinator then shares the partitions among the live members again
    /// (what recovers a group that a coordinator left with a dead member's
    /// partitions).
    pub fn progress_watch(&self, cfg: &KafkaConfig) -> Result<ProgressWatch, KafkaError> {
        ProgressWatch::start_for(
            cfg,
            &self.opts.group_id,
            &self.opts.topics,
            self.opts.start_from,
            Some(self.assignment_probe()),
            self.opts
                .rejoin_when_stalled
                .then(|| Arc::clone(&self.rejoin)),
        )
    }

    /// Leaves the group and joins it again as a new member.
    fn rejoin(&self) -> Result<(), ConsumerError> {
        warn!(
            group = %self.opts.group_id,
            "the group's stream has stalled where this member cannot move it: leaving the group and joining again"
        );
        metrics::counter!("kafka_consumer_rejoins_total", "group" => self.opts.group_id.clone())
            .increment(1);
        // librdkafka leaves the group once the revoke is done and holds the
        // new subscription until then.
        self.inner.context().set_settled(false);
        self.inner.unsubscribe();
        subscribe(&self.inner, &self.opts)
    }

    /// Reads until `shutdown`, handing batches to `handler`. On shutdown the
    /// batch in hand is finished (or, if its handler is failing, left
    /// uncommitted for redelivery), stored offsets are committed, and the
    /// member leaves its group.
    pub async fn run<H: Handler<M>>(
        self,
        mut handler: H,
        shutdown: CancellationToken,
    ) -> Result<RunSummary, ConsumerError> {
        let group = self.opts.group_id.clone();
        let mut summary = RunSummary::default();
        let result = self.read_loop(&mut handler, &shutdown, &mut summary).await;
        let consumer = self.inner;
        // Commit and close block their thread for a broker round trip; the
        // close waits for the group to take the partitions back, which a
        // struggling broker can drag out. Both run on a thread of their own
        // (not the runtime's blocking pool, which a runtime waits for when
        // it shuts down), and `run` waits for them up to CLOSE_TIMEOUT; past
        // it the group notices the member gone by its session timeout.
        const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("kafka-consumer-close".into())
            .spawn(move || {
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => warn!(error = %e, "final offset commit failed"),
                }
                consumer.context().closing.store(true, Ordering::SeqCst);
                drop(consumer);
                let _ = done_tx.send(());
            });
        match spawned {
            Err(e) => warn!(%group, "cannot start the consumer's close thread: {e}"),
            Ok(_) => match tokio::time::timeout(CLOSE_TIMEOUT, done_rx).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => warn!(%group, "closing the consumer panicked"),
                Err(_) => warn!(
                    %group,
                    "the consumer did not close within {CLOSE_TIMEOUT:?}; the group will drop it after its session timeout"
                ),
            },
        }
        info!(%group, ?summary, "consumer stopped");
        result.map(|()| summary)
    }

    async fn read_loop<H: Handler<M>>(
        &self,
        handler: &mut H,
        shutdown: &CancellationToken,
        summary: &mut RunSummary,
    ) -> Result<(), ConsumerError> {
        let mut taken: Vec<(u64, Taken<M>)> = Vec::with_capacity(self.opts.max_batch);
        let mut records: Vec<Record<M>> = Vec::with_capacity(self.opts.max_batch);
        // Messages received while a batch was retried, in order: they come
        // before anything fetched after them.
        let mut pending: VecDeque<(u64, Taken<M>)> = VecDeque::new();
        loop {
            taken.clear();
            // Wait for the first message, or shutdown.
            if let Some(first) = pending.pop_front() {
                taken.push(first);
            } else {
                let first = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(()),
                    () = self.rejoin.notified() => {
                        self.rejoin()?;
                        summary.rejoins += 1;
                        continue;
                    }
                    m = self.inner.recv() => m,
                };
                match first {
                    Ok(m) => taken.push((self.generation(), self.take(&m))),
                    Err(e) => {
                        self.on_receive_error(e)?;
                        continue;
                    }
                }
            }
            while taken.len() < self.opts.max_batch {
                match pending.pop_front() {
                    Some(t) => taken.push(t),
                    None => break,
                }
            }
            // Then fill the batch from what is already buffered, up to
            // `max_wait`.
            let deadline = tokio::time::Instant::now() + self.opts.max_wait;
            while taken.len() < self.opts.max_batch {
                match tokio::time::timeout_at(deadline, self.inner.recv()).await {
                    Ok(Ok(m)) => taken.push((self.generation(), self.take(&m))),
                    Ok(Err(e)) => self.on_receive_error(e)?,
                    Err(_elapsed) => break,
                }
            }
            // Messages received before a revoke will be fetched again from
            // the committed offset by whoever owns their partition now.
            let current = self.generation();
            let before = taken.len();
            taken.retain(|(g, _)| *g == current);
            if taken.len() < before {
                debug!(
                    dropped = before - taken.len(),
                    "dropped messages received before a rebalance"
                );
            }
            if taken.is_empty() {
                continue;
            }

            let offsets = next_offsets(taken.iter().map(|(_, t)| t.position()));
            records.clear();
            let mut poison = Vec::new();
            for (_, t) in taken.drain(..) {
                match t {
                    Taken::Good(r) => records.push(r),
                    Taken::Tombstone { topic, .. } => {
                        metrics::counter!("kafka_consumer_tombstones_total", "topic" => topic)
                            .increment(1);
                    }
                    p @ Taken::Poison { .. } => poison.push(p),
                }
            }
            if !poison.is_empty() && !self.dispose_poison(&poison, shutdown).await {
                return Ok(());
            }
            summary.poison += poison.len() as u64;

            if !records.is_empty() {
                metrics::histogram!("kafka_consumer_batch_size", "group" => self.opts.group_id.clone())
                    .record(records.len() as f64);
                match self
                    .handle_with_retry(handler, &records, shutdown, summary, &mut pending)
                    .await?
                {
                    Handled::Done => {}
                    Handled::Shutdown => return Ok(()),
                    // The group rebalanced while the batch failed: whoever
                    // owns its partitions now reads them again from the
                    // last commit (this member too, for those it kept).
                    Handled::Abandoned => {
                        summary.abandoned += 1;
                        continue;
                    }
                }
                summary.messages += records.len() as u64;
                metrics::counter!("kafka_consumer_messages_total", "group" => self.opts.group_id.clone())
                    .increment(records.len() as u64);
            }
            summary.batches += 1;
            if let Err(e) = self.inner.store_offsets(&offsets) {
                // The partition moved while we worked: its new owner reads it
                // again from the last commit (at-least-once).
                warn!(group = %self.opts.group_id, error = %e, "could not store offsets after a rebalance");
            }
        }
    }

    fn generation(&self) -> u64 {
        self.inner.context().generation.load(Ordering::SeqCst)
    }

    fn take(&self, m: &BorrowedMessage<'_>) -> Taken<M> {
        let topic = m.topic().to_owned();
        let key = m.key().map(<[u8]>::to_vec);
        let Some(payload) = m.payload() else {
            return Taken::Tombstone {
                topic,
                partition: m.partition(),
                offset: m.offset(),
            };
        };
        match M::decode(&topic, payload) {
            Ok(value) => Taken::Good(Record {
                partition: m.partition(),
                offset: m.offset(),
                key,
                timestamp_ms: m.timestamp().to_millis(),
                trace: TraceHeaders::from_message(m.headers()),
                value,
                topic,
            }),
            Err(error) => Taken::Poison {
                partition: m.partition(),
                offset: m.offset(),
                key,
                payload: payload.to_vec(),
                error,
                topic,
            },
        }
    }

    fn on_receive_error(&self, e: KafkaError) -> Result<(), ConsumerError> {
        let fatal = matches!(e, KafkaError::MessageConsumptionFatal(_))
            || e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal);
        if fatal {
            return Err(ConsumerError::Fatal {
                group: self.opts.group_id.clone(),
                source: Box::new(e),
            });
        }
        // Transport errors and the like: librdkafka reconnects by itself.
        warn!(group = %self.opts.group_id, error = %e, "kafka receive error");
        metrics::counter!("kafka_consumer_receive_errors_total", "group" => self.opts.group_id.clone())
            .increment(1);
        Ok(())
    }

    /// Counts, logs and (if configured) dead-letters poison messages.
    /// Returns `false` if shutdown came while the dead-letter topic was
    /// unreachable (the batch is then left uncommitted).
    async fn dispose_poison(&self, poison: &[Taken<M>], shutdown: &CancellationToken) -> bool {
        for p in poison {
            let Taken::Poison {
                topic,
                partition,
                offset,
                key,
                payload,
                error,
            } = p
            else {
                continue;
            };
            warn!(
                group = %self.opts.group_id,
                %topic, partition, offset,
                error = %error,
                "skipping a message that cannot be decoded"
            );
            metrics::counter!(
                "kafka_consumer_poison_total",
                "topic" => topic.clone(),
                "reason" => error.code()
            )
            .increment(1);
            let (Some(producer), Some(dlq)) = (&self.dead_letters, &self.opts.dead_letter_topic)
            else {
                continue;
            };
            let mut backoff = self.opts.retry_initial;
            loop {
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "x-error",
                        value: Some(error.to_string().as_bytes()),
                    })
                    .insert(Header {
                        key: "x-original-topic",
                        value: Some(topic.as_bytes()),
                    })
                    .insert(Header {
                        key: "x-original-partition",
                        value: Some(partition.to_string().as_bytes()),
                    })
                    .insert(Header {
                        key: "x-original-offset",
                        value: Some(offset.to_string().as_bytes()),
                    });
                match producer
                    .send_bytes(dlq, key.as_deref(), payload, Some(headers))
                    .await
                {
                    Ok(_) => break,
                    Err(e) => {
                        error!(%dlq, error = %e, "could not write to the dead-letter topic; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return false,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(self.opts.retry_max);
                    }
                }
            }
        }
        true
    }

    /// Offers `records` to the handler until it succeeds, shutdown comes, or
    /// the group rebalances (the batch is then given up uncommitted).
    /// Between attempts the member fetches nothing and keeps polling.
    async fn handle_with_retry<H: Handler<M>>(
        &self,
        handler: &mut H,
        records: &[Record<M>],
        shutdown: &CancellationToken,
        summary: &mut RunSummary,
        pending: &mut VecDeque<(u64, Taken<M>)>,
    ) -> Result<Handled, ConsumerError> {
        let mut backoff = self.opts.retry_initial;
        let probe = self.assignment_probe();
        let generation = self.generation();
        let mut failed = false;
        let span = batch_span(&self.opts.group_id, records);
        let handled = loop {
            match handler.handle(records).instrument(span.clone()).await {
                Ok(()) => break Handled::Done,
                Err(e) => {
                    if !failed {
                        probe.set_failing(true);
                        failed = true;
                        // Fetch nothing more while the batch fails, but keep
                        // polling: a member that stops polling holds up
                        // every rebalance of its group until
                        // max.poll.interval.ms (five minutes) drops it.
                        self.pause_held(true);
                    }
                    if let Some(why) = e.downcast_ref::<NotYet>() {
                        if summary.held == 0 {
                            tracing::info!(group = %self.opts.group_id, "holding the stream: {why}");
                        }
                        summary.held += 1;
                    } else {
                        summary.handler_failures += 1;
                        metrics::counter!("kafka_consumer_handler_errors_total", "group" => self.opts.group_id.clone())
                            .increment(1);
                        error!(
                            group = %self.opts.group_id,
                            batch = records.len(),
                            retry_in = ?backoff,
                            "batch handler failed: {e:#}"
                        );
                    }
                    let wake = tokio::time::sleep(backoff);
                    tokio::pin!(wake);
                    loop {
                        tokio::select! {
                            biased;
                            () = shutdown.cancelled() => return Ok(Handled::Shutdown),
                            () = &mut wake => break,
                            // Serves rebalances (their callbacks run in the
                            // poll); a message fetched before the pause
                            // waits its turn.
                            m = self.inner.recv() => match m {
                                Ok(m) => pending.push_back((self.generation(), self.take(&m))),
                                Err(e) => self.on_receive_error(e)?,
                            },
                        }
                        if self.generation() != generation {
                            break;
                        }
                    }
                    if self.generation() != generation {
                        break Handled::Abandoned;
                    }
                    backoff = (backoff * 2).min(self.opts.retry_max);
                }
            }
        };
        if failed {
            probe.set_failing(false);
            self.pause_held(false);
        }
        Ok(handled)
    }

    /// Pauses (or resumes) fetching on every partition held now. Resuming
    /// covers partitions a rebalance during the pause may have left paused.
    fn pause_held(&self, pause: bool) {
        let done = self.inner.assignment().and_then(|held| {
            if pause {
                self.inner.pause(&held)
            } else {
                self.inner.resume(&held)
            }
        });
        if let Err(e) = done {
            let what = if pause { "pause" } else { "resume" };
            warn!(group = %self.opts.group_id, error = %e, "cannot {what} the partitions of a failing batch");
        }
    }
}

/// The span of one batch's handling (its retries included): a child of the
/// first traced record's producer span, linked to every traced record's, so
/// a message's trace goes on through the handler and whatever it publishes.
fn batch_span<M>(group: &str, records: &[Record<M>]) -> tracing::Span {
    let topic = records.first().map_or("", |r| r.topic.as_str());
    let span = tracing::info_span!(
        "kafka.consume",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = %topic,
        messaging.consumer.group.name = %group,
        messaging.batch.message_count = records.len(),
    );
    let mut traced = records.iter().filter_map(|r| r.trace.as_ref());
    if let Some(first) = traced.next() {
        first.adopt(&span);
        first.link(&span);
    }
    for t in traced {
        t.link(&span);
    }
    span
}

/// Subscribes `consumer` to the topics of `opts`.
fn subscribe(consumer: &StreamConsumer<Ctx>, opts: &ConsumerOptions) -> Result<(), ConsumerError> {
    let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| ConsumerError::Subscribe {
            group: opts.group_id.clone(),
            topics: opts.topics.join(","),
            source: Box::new(source),
        })
}

/// The offsets to store after a batch: one past the highest offset seen on
/// each partition.
fn next_offsets<'a>(positions: impl Iterator<Item = (&'a str, i32, i64)>) -> TopicPartitionList {
    let mut highest: Vec<(&str, i32, i64)> = Vec::new();
    for (topic, partition, offset) in positions {
        match highest
            .iter_mut()
            .find(|(t, p, _)| *t == topic && *p == partition)
        {
            Some(entry) => entry.2 = entry.2.max(offset),
            None => highest.push((topic, partition, offset)),
        }
    }
    let mut tpl = TopicPartitionList::with_capacity(highest.len());
    for (topic, partition, offset) in highest {
        // Only fails for an invalid offset value, which offset + 1 is not.
        let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(offset + 1));
    }
    tpl
}

/// The partitions a member holds, and since when (none while it is between
/// generations: joining, or after a revoke).
#[derive(Debug, Default)]
struct Assignment {
    partitions: Vec<(String, i32)>,
    since: Option<Instant>,
    /// Whether the handler's last attempt failed (its batch is being
    /// retried).
    failing: bool,
}

/// Reports a consumer's assignment (tests and readiness use it).
#[derive(Clone, Debug)]
pub struct AssignmentProbe(Arc<Mutex<Assignment>>);

impl AssignmentProbe {
    /// The partitions held now, as `(topic, partition)`.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.0
            .lock()
            .map(|a| a.partitions.clone())
            .unwrap_or_default()
    }

    /// How long the member has held its assignment (possibly empty) since
    /// the group last settled; `None` while it joins or rebalances.
    pub fn settled_for(&self) -> Option<std::time::Duration> {
        self.0.lock().ok()?.since.map(|t| t.elapsed())
    }

    /// Whether the member's handler is failing (retrying a batch).
    pub fn handler_failing(&self) -> bool {
        self.0.lock().map(|a| a.failing).unwrap_or(false)
    }

    fn set_failing(&self, failing: bool) {
        if let Ok(mut a) = self.0.lock() {
            a.failing = failing;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_offsets_are_one_past_the_highest_per_partition() {
        let tpl = next_offsets(
            [
                ("a", 0, 5),
                ("a", 1, 2),
                ("a", 0, 9),
                ("b", 0, 0),
                ("a", 0, 7),
            ]
            .into_iter(),
        );
        let mut got: Vec<_> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        got.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
        assert_eq!(
            got,
            [
                ("a".to_owned(), 0, Offset::Offset(10)),
                ("a".to_owned(), 1, Offset::Offset(3)),
                ("b".to_owned(), 0, Offset::Offset(1)),
            ]
        );
    }
}
