//! Reading every partition of a topic, outside any consumer group.
//!
//! For services where each replica must see every message (the fanout) and
//! where the position to start from is the service's own choice (refilling
//! an in-memory history at start-up), not a committed offset.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::KafkaConfig;
use crate::trace::TraceHeaders;

/// Where a [`TailReader`] starts on each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailStart {
    /// Only messages produced from now on.
    End,
    /// Up to this many messages back on each partition, then live.
    LastPerPartition(i64),
}

/// One message as read, undecoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailRecord {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, as stamped by the producer or broker.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    /// The producer's trace context, when it sent one.
    pub trace: Option<TraceHeaders>,
}

impl TailRecord {
    /// Makes `span` a child of the producer's span (when the message carried
    /// trace headers and tracing is on).
    pub fn continue_trace(&self, span: &tracing::Span) {
        if let Some(t) = &self.trace {
            t.adopt(span);
        }
    }
}

/// Reads all partitions of one topic from chosen offsets; commits nothing.
pub struct TailReader {
    inner: StreamConsumer,
    topic: String,
    /// Where reading began on each partition (index = partition).
    starts: Vec<i64>,
    /// The end of each partition when the reader opened.
    ends: Vec<i64>,
}

impl std::fmt::Debug for TailReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailReader")
            .field("topic", &self.topic)
            .field("starts", &self.starts)
            .finish_non_exhaustive()
    }
}

impl TailReader {
    /// Assigns every partition of `topic` at the offsets `start` asks for.
    pub async fn open(
        cfg: &KafkaConfig,
        topic: &str,
        start: TailStart,
    ) -> Result<Self, KafkaError> {
        let mut c = cfg.client_config();
        // A group id is required by the client but never joined: partitions
        // are assigned, not subscribed, and nothing is committed.
        c.set("group.id", format!("{}-tail", cfg.client_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // Fanout latency: do not let the broker hold fetches for long.
            .set("fetch.wait.max.ms", "10");
        cfg.apply_extra(&mut c);
        let topic = topic.to_owned();
        let name = topic.clone();
        let timeout = cfg.request_timeout;
        // Metadata and watermarks block their thread.
        let (consumer, starts, ends) =
            tokio::task::spawn_blocking(move || -> Result<_, KafkaError> {
                let probe: BaseConsumer = c.create()?;
                let metadata = probe.fetch_metadata(Some(&topic), timeout)?;
                let partitions = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map(|t| t.partitions().len())
                    .unwrap_or(0);
                if partitions == 0 {
                    return Err(KafkaError::MetadataFetch(
                        RDKafkaErrorCode::UnknownTopicOrPartition,
                    ));
                }
                let mut starts = Vec::with_capacity(partitions);
                let mut ends = Vec::with_capacity(partitions);
                let mut tpl = TopicPartitionList::with_capacity(partitions);
                for p in 0..partitions as i32 {
                    let (low, high) = probe.fetch_watermarks(&topic, p, timeout)?;
                    let from = match start {
                        TailStart::End => high,
                        TailStart::LastPerPartition(n) => (high - n.max(0)).max(low),
                    };
                    starts.push(from);
                    ends.push(high);
                    tpl.add_partition_offset(&topic, p, Offset::Offset(from))?;
                }
                drop(probe);
                let consumer: StreamConsumer = c.create()?;
                consumer.assign(&tpl)?;
                Ok((consumer, starts, ends))
            })
            .await
            .unwrap_or(Err(KafkaError::Canceled))?;
        Ok(Self {
            inner: consumer,
            topic: name,
            starts,
            ends,
        })
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The offset reading began at on each partition (index = partition):
    /// nothing before it was seen.
    pub fn starts(&self) -> &[i64] {
        &self.starts
    }

    /// Each partition's end when the reader opened: once a partition's
    /// offset reaches `end - 1`, its backlog is read.
    pub fn ends(&self) -> &[i64] {
        &self.ends
    }

    /// The next message, waiting for one.
    pub async fn recv(&self) -> Result<TailRecord, KafkaError> {
        let m = self.inner.recv().await?;
        Ok(TailRecord {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            trace: TraceHeaders::from_message(m.headers()),
        })
    }

    /// The next message if one arrives within `wait`.
    pub async fn recv_timeout(&self, wait: Duration) -> Option<Result<TailRecord, KafkaError>> {
        tokio::time::timeout(wait, self.recv()).await.ok()
    }
}
