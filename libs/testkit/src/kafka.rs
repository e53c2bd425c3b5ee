//! The embedded broker, reading topics back, and a group's progress.

use std::collections::{BTreeMap, HashSet};
use std::marker::PhantomData;
use std::time::Duration;

use fantasy_config::Env;
use fantasy_kafka::{
    EmbeddedBroker, KafkaConfig, KafkaError, Producer, ProgressWatch, StartFrom, TailReader,
    TailRecord, TailStart,
};
use fantasy_messages::{Message, Topic};
use futures::future::join_all;

use crate::{eventually, topic_prefix};

/// How long [`read_all`] may take to read a topic to its ends.
const READ_ALL_WITHIN: Duration = Duration::from_secs(30);

/// An embedded broker (librdkafka's mock cluster, over TCP) with every
/// topic of the stack under a prefix of this test's own, and a config that
/// points at both. The broker goes with it.
#[derive(Debug)]
pub struct Kafka {
    pub broker: EmbeddedBroker,
    /// `client_id` as given; the topic prefix set.
    pub config: KafkaConfig,
    /// Partitions of each topic.
    pub partitions: i32,
}

impl Kafka {
    /// `brokers` brokers, `partitions` partitions per topic.
    pub fn start(brokers: i32, partitions: i32, client_id: &str) -> Self {
        let broker = EmbeddedBroker::start(brokers).expect("starting the embedded broker");
        let mut config = KafkaConfig::new(broker.bootstrap_servers(), client_id);
        config.topic_prefix = topic_prefix();
        let specs: Vec<_> = Topic::ALL
            .iter()
            .map(|t| t.spec(&config.topic_prefix, partitions))
            .collect();
        broker.create_topics(&specs).expect("creating the topics");
        // Where [`Kafka::publish_markers`] finds out which key goes where.
        broker
            .create_topic(&scratch_topic(&config), partitions)
            .expect("creating the scratch topic");
        Self {
            broker,
            config,
            partitions,
        }
    }

    /// `KAFKA_BROKERS` and `KAFKA_TOPIC_PREFIX` for a service's config.
    pub fn env(&self) -> Env {
        Env::default()
            .with("KAFKA_BROKERS", self.broker.bootstrap_servers())
            .with("KAFKA_TOPIC_PREFIX", &self.config.topic_prefix)
    }

    /// A producer of the test's own.
    pub fn producer(&self) -> Producer {
        Producer::new(&self.config).expect("a producer")
    }

    /// Publishes one marker on each partition of `M`'s topic and returns
    /// them: they come after everything published before, so a reader that
    /// has seen them all has read every partition past it (the positive
    /// signal a test waits on before it checks that nothing more came).
    /// The markers are `marker(i)` for the first `i` whose keys cover the
    /// partitions, found on a scratch topic with as many partitions (the
    /// partitioner hashes the key: it places a key alike on both), so that
    /// the topic gets one marker a partition and no more.
    pub async fn publish_markers<M: Message>(
        &self,
        producer: &Producer,
        marker: impl Fn(usize) -> M,
    ) -> Vec<M> {
        let scratch = scratch_topic(&self.config);
        let round = usize::try_from(self.partitions).expect("a partition count");
        let mut chosen = BTreeMap::new();
        let mut tried = 0;
        while chosen.len() < round {
            let candidates: Vec<M> = (tried..tried + round).map(&marker).collect();
            tried += round;
            let placed =
                join_all(candidates.iter().map(|m| producer.publish_to(&scratch, m))).await;
            for (m, placed) in candidates.into_iter().zip(placed) {
                let (partition, _) = placed.unwrap_or_else(|e| panic!("publishing a probe: {e}"));
                chosen.entry(partition).or_insert(m);
            }
        }
        let markers: Vec<M> = chosen.into_values().collect();
        let landed = join_all(markers.iter().map(|m| producer.publish(m))).await;
        let covered: HashSet<i32> = landed
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("publishing a marker: {e}")).0)
            .collect();
        assert_eq!(
            covered.len(),
            round,
            "markers placed one per partition of the scratch topic landed on {covered:?}"
        );
        markers
    }
}

/// The topic [`Kafka::publish_markers`] probes.
fn scratch_topic(config: &KafkaConfig) -> String {
    format!("{}scratch", config.topic_prefix)
}

/// Reads `M`'s topic (every partition, outside any group) from its
/// beginning, decoding each message as `M`.
#[derive(Debug)]
pub struct TopicReader<M> {
    tail: TailReader,
    message: PhantomData<fn() -> M>,
}

impl<M: Message> TopicReader<M> {
    pub async fn open(kafka: &KafkaConfig) -> Self {
        let name = kafka.topics().name(M::TOPIC).to_owned();
        let tail = TailReader::open(kafka, &name, TailStart::LastPerPartition(i64::MAX / 4))
            .await
            .unwrap_or_else(|e| panic!("opening a reader of {name}: {e}"));
        Self {
            tail,
            message: PhantomData,
        }
    }

    /// The next `n` messages, or fewer when `within` passes first.
    pub async fn take(&self, n: usize, within: Duration) -> Vec<M> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Ok(record) = tokio::time::timeout_at(deadline, self.tail.recv()).await else {
                break;
            };
            out.push(self.decode(record).1);
        }
        out
    }

    fn decode(&self, record: Result<TailRecord, KafkaError>) -> (TailRecord, M) {
        let topic = self.tail.topic();
        let record = record.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
        let message = fantasy_messages::decode(record.payload.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| {
                panic!(
                    "{topic} partition {} offset {}: {e}",
                    record.partition, record.offset
                )
            });
        (record, message)
    }
}

/// Every message on `M`'s topic now: each partition from its beginning to
/// its end when called, in the order read (in order within a partition).
/// What was produced and acknowledged before the call is all there.
pub async fn read_all<M: Message>(kafka: &KafkaConfig) -> Vec<M> {
    let reader = TopicReader::<M>::open(kafka).await;
    let ends = reader.tail.ends().to_vec();
    // The next offset to read on each partition.
    let mut next = reader.tail.starts().to_vec();
    let deadline = tokio::time::Instant::now() + READ_ALL_WITHIN;
    let mut out = Vec::new();
    while next.iter().zip(&ends).any(|(n, end)| n < end) {
        let Ok(record) = tokio::time::timeout_at(deadline, reader.tail.recv()).await else {
            panic!(
                "{}: not read to its ends within {READ_ALL_WITHIN:?} (at {next:?} of {ends:?})",
                reader.tail.topic()
            );
        };
        let (record, message) = reader.decode(record);
        let p = usize::try_from(record.partition).expect("a partition number");
        // Past the end as it was: produced since the call.
        if record.offset < ends[p] {
            next[p] = record.offset + 1;
            out.push(message);
        }
    }
    out
}

/// Waits until consumer group `group` has committed the end of every
/// partition of `topics`: it handled everything on them. The positive
/// signal of progress a test waits on before it checks that nothing more
/// came of what it sent. Panics with the group's last progress after
/// `within`.
pub async fn wait_caught_up(kafka: &KafkaConfig, group: &str, topics: &[Topic], within: Duration) {
    let names: Vec<String> = topics
        .iter()
        .map(|t| kafka.topics().name(*t).to_owned())
        .collect();
    let mut cfg = kafka.clone();
    // A stall time of 4 s makes the watch look every second.
    cfg.stall_after = Duration::from_secs(4);
    let watch = ProgressWatch::start(&cfg, group, &names, StartFrom::Earliest, None)
        .unwrap_or_else(|e| panic!("watching group {group}: {e}"));
    let what = format!("group {group} to handle everything on {names:?}");
    eventually(&what, within, || {
        let progress = watch.progress();
        std::future::ready(
            if progress.observed && progress.error.is_none() && progress.lag == 0 {
                Ok(())
            } else {
                Err(progress)
            },
        )
    })
    .await;
}
