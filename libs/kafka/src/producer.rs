//! The typed, idempotent producer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use fantasy_messages::{EncodeError, Message};
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use crate::{KafkaConfig, Topics, trace};

/// Why a message was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message breaks its own invariants; nothing was sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The broker did not take it within the delivery timeout.
    #[error("kafka delivery to {topic} failed: {source}")]
    Delivery {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// An idempotent producer (`acks=all`, `enable.idempotence`): a retried send
/// never duplicates or reorders a message within its partition. Cheap to
/// clone; clones share one connection set.
///
/// A librdkafka producer that was fenced (`PRODUCER_FENCED`: the broker gave
/// its producer id to someone else) or hit a fatal error never sends again;
/// librdkafka leaves it to the application to make a new one. This one does
/// that itself: the send that sees it fails (the caller's retry is safe, as
/// every consumer is idempotent) and the next goes through a new client with
/// a new producer id.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ArcSwap<Client>>,
    /// How to make a new client; serializes replacements.
    config: Arc<Mutex<ClientConfig>>,
    topics: Topics,
}

/// One librdkafka producer and its place in the line of replacements.
struct Client {
    generation: u64,
    producer: FutureProducer,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topics", &self.topics)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Creates a producer. It connects lazily: an unreachable broker shows as
    /// delivery timeouts, and in [`crate::fetch_broker_info`].
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut c = cfg.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", cfg.linger.as_millis().to_string())
            .set("batch.size", cfg.batch_bytes.to_string())
            .set("compression.type", cfg.compression.to_string())
            .set(
                "delivery.timeout.ms",
                cfg.delivery_timeout.as_millis().to_string(),
            )
            // Keyed messages go to murmur2(key) % partitions, as the Java
            // client does, so our services and any JVM peer agree on where a
            // game's events live.
            .set("partitioner", "murmur2_random")
            // Room for bursts of 100k+ messages in flight.
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576");
        cfg.apply_extra(&mut c);
        let producer = c.create()?;
        Ok(Self {
            inner: Arc::new(ArcSwap::from_pointee(Client {
                generation: 0,
                producer,
            })),
            config: Arc::new(Mutex::new(c)),
            topics: cfg.topics(),
        })
    }

    /// How many times the librdkafka client was replaced after it was fenced
    /// or failed fatally (0 for the first one).
    pub fn generation(&self) -> u64 {
        self.inner.load().generation
    }

    /// After a failed delivery by the client of `generation`: if librdkafka
    /// will never send with that client again, makes a new one (once, however
    /// many sends saw the failure).
    fn recover(&self, generation: u64, error: &KafkaError) {
        let current = self.inner.load();
        if current.generation != generation {
            return;
        }
        let reason = if error.rdkafka_error_code() == Some(RDKafkaErrorCode::ProducerFenced) {
            "fenced".to_owned()
        } else if let Some((code, why)) = current.producer.client().fatal_error() {
            format!("fatal error {code:?}: {why}")
        } else {
            return;
        };
        drop(current);
        let Ok(config) = self.config.lock() else {
            return;
        };
        if self.inner.load().generation != generation {
            return;
        }
        match config.create::<FutureProducer>() {
            Ok(producer) => {
                let old = self.inner.swap(Arc::new(Client {
                    generation: generation + 1,
                    producer,
                }));
                tracing::warn!(
                    %reason,
                    generation = generation + 1,
                    "the Kafka producer can no longer send; replaced it with a new one"
                );
                metrics::counter!("kafka_producer_replaced_total").increment(1);
                // Dropping a producer purges and flushes it (up to 500 ms)
                // and joins its thread: not on the async runtime.
                let _ = std::thread::Builder::new()
                    .name("kafka-producer-drop".into())
                    .spawn(move || drop(old));
            }
            Err(e) => tracing::error!(
                %reason,
                "the Kafka producer can no longer send and a new one could not be made: {e}"
            ),
        }
    }

    /// Publishes `message` on its own topic (`M::TOPIC` under the prefix).
    pub async fn publish<M: Message>(&self, message: &M) -> Result<(i32, i64), PublishError> {
        let topic = self.topics.name(M::TOPIC).to_owned();
        self.publish_to(&topic, message).await
    }

    /// Publishes `message` on `topic`; returns its partition and offset once
    /// the broker has it on every in-sync replica.
    pub async fn publish_to<M: Message>(
        &self,
        topic: &str,
        message: &M,
    ) -> Result<(i32, i64), PublishError> {
        let payload = fantasy_messages::encode(message)?;
        let headers = trace::current_context_headers();
        self.send_bytes(topic, Some(message.key().as_bytes()), &payload, headers)
            .await
    }

    /// Publishes many messages on their own topic, all in flight at once;
    /// returns when every one is delivered. Validation happens first: one
    /// invalid message fails the call before anything is sent. On a delivery
    /// failure the others may still have been delivered (retrying the whole
    /// batch is safe: consumers are idempotent).
    pub async fn publish_batch<M: Message>(&self, messages: &[M]) -> Result<(), PublishError> {
        let topic = self.topics.name(M::TOPIC).to_owned();
        self.publish_batch_to(&topic, messages).await
    }

    /// [`Producer::publish_batch`] to a named topic.
    pub async fn publish_batch_to<M: Message>(
        &self,
        topic: &str,
        messages: &[M],
    ) -> Result<(), PublishError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut payloads = Vec::with_capacity(messages.len());
        for m in messages {
            payloads.push(fantasy_messages::encode(m)?);
        }
        let headers = trace::current_context_headers();
        let mut pending = Vec::with_capacity(messages.len());
        let mut generation = 0;
        for (m, payload) in messages.iter().zip(&payloads) {
            let (future, g) = self
                .enqueue(topic, Some(m.key().as_bytes()), payload, headers.clone())
                .await?;
            generation = g;
            pending.push(future);
        }
        let mut first_error = None;
        for result in join_all(pending).await {
            if let Err(e) = self.delivery_result(topic, generation, result) {
                first_error.get_or_insert(e);
            }
        }
        metrics::counter!("kafka_producer_messages_total", "topic" => topic.to_owned())
            .increment(messages.len() as u64);
        first_error.map_or(Ok(()), Err)
    }

    /// Sends raw bytes (a dead-letter copy, a test's poison message).
    pub async fn send_bytes(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(i32, i64), PublishError> {
        let (future, generation) = self.enqueue(topic, key, payload, headers).await?;
        let result = self.delivery_result(topic, generation, future.await);
        metrics::counter!("kafka_producer_messages_total", "topic" => topic.to_owned())
            .increment(1);
        result
    }

    /// Hands one record to librdkafka's queue; waits (asynchronously) while
    /// the queue is full rather than failing: the queue is the bound. Returns
    /// the delivery and the generation of the client that took it.
    async fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(DeliveryFuture, u64), PublishError> {
        let mut headers = headers;
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(h) = headers.take() {
                record = record.headers(h);
            }
            let client = self.inner.load();
            match client.producer.send_result(record) {
                Ok(future) => return Ok((future, client.generation)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    headers = record.headers;
                    metrics::counter!("kafka_producer_queue_full_total").increment(1);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((source, _)) => {
                    metrics::counter!("kafka_producer_errors_total", "topic" => topic.to_owned())
                        .increment(1);
                    let generation = client.generation;
                    drop(client);
                    self.recover(generation, &source);
                    return Err(PublishError::Delivery {
                        topic: topic.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Waits until everything queued is delivered, or `timeout` passes.
    /// Call before exit: librdkafka drops what is still queued on close.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.load().producer.flush(Timeout::After(timeout))
    }

    /// At shutdown: waits up to `timeout` for what is queued or in flight to
    /// be delivered (on a blocking thread: librdkafka's flush blocks), and
    /// logs what was not.
    pub async fn close(self, timeout: Duration) {
        let flushed = tokio::task::spawn_blocking(move || {
            let in_flight = self.in_flight();
            self.flush(timeout).map_err(|e| (e, in_flight))
        })
        .await;
        if let Ok(Err((e, in_flight))) = flushed {
            tracing::warn!(in_flight, "Kafka messages not delivered before exit: {e}");
        }
    }

    /// Messages queued or in flight, not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.inner.load().producer.in_flight_count()
    }

    fn delivery_result(
        &self,
        topic: &str,
        generation: u64,
        result: Result<
            rdkafka::producer::future_producer::OwnedDeliveryResult,
            futures::channel::oneshot::Canceled,
        >,
    ) -> Result<(i32, i64), PublishError> {
        let source = match result {
            Ok(Ok(d)) => return Ok((d.partition, d.offset)),
            Ok(Err((e, _message))) => e,
            // The producer was torn down with the message queued.
            Err(_) => KafkaError::Canceled,
        };
        metrics::counter!("kafka_producer_errors_total", "topic" => topic.to_owned()).increment(1);
        self.recover(generation, &source);
        Err(PublishError::Delivery {
            topic: topic.to_owned(),
            source,
        })
    }
}
