//! Topic creation and broker metadata.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fantasy_messages::TopicSpec;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

use crate::KafkaConfig;

/// What the cluster says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    /// `(id, host:port)` of every broker.
    pub brokers: Vec<(i32, String)>,
    /// `(name, partition count)` of every topic, sorted by name.
    pub topics: Vec<(String, usize)>,
}

impl BrokerInfo {
    /// The partition count of `topic`, if it exists.
    pub fn partitions(&self, topic: &str) -> Option<usize> {
        self.topics
            .iter()
            .find(|(name, _)| name == topic)
            .map(|(_, n)| *n)
    }
}

fn broker_info(metadata: &Metadata) -> BrokerInfo {
    let mut topics: Vec<_> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect();
    topics.sort();
    BrokerInfo {
        brokers: metadata
            .brokers()
            .iter()
            .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
            .collect(),
        topics,
    }
}

/// Asks the cluster for its brokers and topics; an error means no broker
/// answered within `timeout`.
pub async fn fetch_broker_info(
    cfg: &KafkaConfig,
    timeout: Duration,
) -> Result<BrokerInfo, KafkaError> {
    let mut client_config = cfg.client_config();
    cfg.apply_extra(&mut client_config);
    // librdkafka's metadata call blocks its thread.
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config.create()?;
        let metadata = consumer.fetch_metadata(None, timeout)?;
        Ok(broker_info(&metadata))
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// A service's start-up: when `KAFKA_CREATE_TOPICS` is on, creates the
/// stack's topics that do not exist yet (with `KAFKA_PARTITIONS`, under
/// `KAFKA_TOPIC_PREFIX`).
pub async fn ensure_stack_topics(cfg: &KafkaConfig) -> anyhow::Result<()> {
    if cfg.create_topics {
        let specs: Vec<TopicSpec> = fantasy_messages::Topic::ALL
            .iter()
            .map(|t| t.spec(&cfg.topic_prefix, cfg.partitions))
            .collect();
        ensure_topics(cfg, &specs).await?;
    }
    Ok(())
}

/// A service's `/ready` check: does a broker answer within 2 s? One
/// long-lived librdkafka client asks (made on the first check; a client per
/// check costs threads and a new connection each time, and under load made
/// the check slower than the gateway's health-check timeout), and one
/// metadata request at a time: a check that comes while one is in flight,
/// or within a second of the last answer, gets that answer. Cheap to clone;
/// clones share the client.
#[derive(Clone)]
pub struct BrokerProbe {
    inner: Arc<ProbeInner>,
}

struct ProbeInner {
    config: ClientConfig,
    client: std::sync::Mutex<Option<Arc<BaseConsumer>>>,
    /// The last answer and when it came; held while a request is in flight.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl std::fmt::Debug for BrokerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerProbe").finish_non_exhaustive()
    }
}

impl BrokerProbe {
    /// How long one check waits for a broker.
    pub const TIMEOUT: Duration = Duration::from_secs(2);
    /// How long an answer is given to later checks.
    pub const FRESH: Duration = Duration::from_secs(1);

    /// A probe of `cfg`'s brokers; connects on the first check.
    pub fn new(cfg: &KafkaConfig) -> Self {
        let mut config = cfg.client_config();
        cfg.apply_extra(&mut config);
        // After an outage, the broker's return shows within a second or two
        // (librdkafka's default backs off up to 10 s between attempts).
        config.set("reconnect.backoff.max.ms", "1000");
        Self {
            inner: Arc::new(ProbeInner {
                config,
                client: std::sync::Mutex::new(None),
                last: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// `Ok` when some broker answered a metadata request within
    /// [`Self::TIMEOUT`], at most [`Self::FRESH`] ago.
    pub async fn check(&self) -> anyhow::Result<()> {
        let mut last = self.inner.last.lock().await;
        let answer = match &*last {
            Some((at, answer)) if at.elapsed() < Self::FRESH => answer.clone(),
            _ => {
                let inner = Arc::clone(&self.inner);
                // librdkafka's metadata call blocks its thread.
                let answer = tokio::task::spawn_blocking(move || inner.ask())
                    .await
                    .unwrap_or_else(|e| Err(format!("the probe failed: {e}")));
                *last = Some((Instant::now(), answer.clone()));
                answer
            }
        };
        answer.map_err(|e| anyhow::anyhow!("no broker answered: {e}"))
    }
}

impl ProbeInner {
    fn ask(&self) -> Result<(), String> {
        let client = {
            let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
            match &*slot {
                Some(c) => Arc::clone(c),
                None => {
                    let c: Arc<BaseConsumer> =
                        Arc::new(self.config.create().map_err(|e| e.to_string())?);
                    *slot = Some(Arc::clone(&c));
                    c
                }
            }
        };
        let answer = client
            .fetch_metadata(None, BrokerProbe::TIMEOUT)
            .map(|_| ())
            .map_err(|e| e.to_string());
        // Errors the client queued (a broker that went away) are not read by
        // anyone else: drop them so they do not pile up.
        while client.poll(Duration::ZERO).is_some() {}
        answer
    }
}

/// Creates the topics of `specs` that do not exist yet; returns the names it
/// created. Topics that exist are left as they are (a smaller partition count
/// than asked is logged: partitions can be added, never removed).
pub async fn ensure_topics(cfg: &KafkaConfig, specs: &[TopicSpec]) -> anyhow::Result<Vec<String>> {
    let timeout = cfg.request_timeout;
    let info = fetch_broker_info(cfg, timeout)
        .await
        .with_context(|| format!("no Kafka broker answered at {}", cfg.brokers))?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| match info.partitions(&s.name) {
            Some(n) => {
                if (n as i32) < s.partitions {
                    tracing::warn!(
                        topic = %s.name,
                        partitions = n,
                        wanted = s.partitions,
                        "topic has fewer partitions than configured"
                    );
                }
                false
            }
            None => true,
        })
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }

    let retention: Vec<Option<String>> = missing
        .iter()
        .map(|s| s.retention.map(|r| r.as_millis().to_string()))
        .collect();
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .zip(&retention)
        .map(|(s, retention)| {
            let mut t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(cfg.replication_factor),
            );
            if s.compacted {
                t = t.set("cleanup.policy", "compact");
            }
            if let Some(ms) = retention {
                t = t.set("retention.ms", ms);
            }
            t
        })
        .collect();

    let admin: AdminClient<DefaultClientContext> = cfg
        .client_config()
        .create()
        .context("creating the Kafka admin client")?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    // The client-side timeout above does not cover every way a broker can
    // stay silent (one without the CreateTopics API, say); bound it here too.
    let results = tokio::time::timeout(timeout * 2, admin.create_topics(&new_topics, &opts))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the broker did not answer CreateTopics within {:?}",
                timeout * 2
            )
        })
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| {
            format!(
                "creating Kafka topics {}; create them with the topic-init job or `kafka-topics.sh`",
                missing.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        })?;

    let mut created = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            // Another replica created it first.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => failures.push(format!("{name}: {code}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "could not create Kafka topics ({}); create them with the topic-init job or `kafka-topics.sh`",
            failures.join("; ")
        );
    }
    tracing::info!(topics = ?created, "created Kafka topics");
    Ok(created)
}
