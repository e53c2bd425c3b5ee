//! Connection and producer settings shared by every client.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use fantasy_config::Parser;
use fantasy_messages::Topic;
use rdkafka::ClientConfig;

/// The default bootstrap address for services started on their own.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Producer compression codec. `zstd` is left out: it would need another C
/// library in every image for a small gain over lz4 on small JSON messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            _ => return Err("expected none, gzip, snappy or lz4".into()),
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings for every Kafka client of a service.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `KAFKA_BROKERS`: bootstrap servers, comma separated.
    pub brokers: String,
    /// `KAFKA_CLIENT_ID`: shows in broker logs and metrics.
    pub client_id: String,
    /// `KAFKA_TOPIC_PREFIX`: put before every topic name (tests isolate with it).
    pub topic_prefix: String,
    /// `KAFKA_PARTITIONS`: partitions of topics this service creates.
    pub partitions: i32,
    /// `KAFKA_REPLICATION_FACTOR`: of topics this service creates; -1 takes the
    /// broker's `default.replication.factor`.
    pub replication_factor: i32,
    /// `KAFKA_CREATE_TOPICS`: create missing topics at start-up.
    pub create_topics: bool,
    /// `KAFKA_LINGER`: how long the producer waits to fill a batch. A few
    /// milliseconds buys large batches at high rates for little latency.
    pub linger: Duration,
    /// `KAFKA_BATCH_BYTES`: the producer's largest batch per partition.
    pub batch_bytes: u32,
    /// `KAFKA_COMPRESSION`: `none`, `gzip`, `snappy` or `lz4`.
    pub compression: Compression,
    /// `KAFKA_DELIVERY_TIMEOUT`: how long the producer keeps retrying one
    /// message before reporting it failed.
    pub delivery_timeout: Duration,
    /// `KAFKA_REQUEST_TIMEOUT`: how long metadata and admin requests wait for
    /// the cluster (start-up checks, topic creation), and how long any
    /// request waits for a broker's answer before it is sent again on a new
    /// connection (`socket.timeout.ms`).
    pub request_timeout: Duration,
    /// `KAFKA_STALL_AFTER`: how long messages may wait on a partition with
    /// its group's committed offset unchanged before `/ready` calls the
    /// stream stalled (zero turns the watch off).
    pub stall_after: Duration,
    /// `KAFKA_EXTRA`: further librdkafka properties, `key=value` pairs separated
    /// by commas (security settings, tuning). They override ours.
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Settings for a client of `client_id` talking to `brokers`, with defaults.
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            topic_prefix: String::new(),
            partitions: Topic::DEFAULT_PARTITIONS,
            replication_factor: -1,
            create_topics: true,
            linger: Duration::from_millis(5),
            batch_bytes: 1_000_000,
            compression: Compression::Lz4,
            delivery_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            stall_after: Duration::from_secs(60),
            extra: Vec::new(),
        }
    }

    /// Reads the `KAFKA_*` variables; `client_id` names the service.
    pub fn from_env(p: &mut Parser<'_>, client_id: &str) -> Self {
        let d = Self::new(DEFAULT_BROKERS, client_id);
        let extra_raw = p.string_opt("KAFKA_EXTRA").unwrap_or_default();
        let mut extra = Vec::new();
        for pair in extra_raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    extra.push((k.trim().to_owned(), v.trim().to_owned()))
                }
                _ => p.problem("KAFKA_EXTRA", format!("{pair:?} is not key=value")),
            }
        }
        Self {
            brokers: p.string("KAFKA_BROKERS", &d.brokers),
            client_id: p.string("KAFKA_CLIENT_ID", &d.client_id),
            topic_prefix: p.string("KAFKA_TOPIC_PREFIX", ""),
            partitions: p.ranged("KAFKA_PARTITIONS", d.partitions, 1..=10_000),
            replication_factor: p.ranged("KAFKA_REPLICATION_FACTOR", d.replication_factor, -1..=16),
            create_topics: p.flag("KAFKA_CREATE_TOPICS", d.create_topics),
            linger: p.duration("KAFKA_LINGER", d.linger),
            batch_bytes: p.ranged("KAFKA_BATCH_BYTES", d.batch_bytes, 1..=2_147_483_647),
            compression: p.parse("KAFKA_COMPRESSION", d.compression),
            delivery_timeout: p.duration("KAFKA_DELIVERY_TIMEOUT", d.delivery_timeout),
            request_timeout: p.duration("KAFKA_REQUEST_TIMEOUT", d.request_timeout),
            stall_after: p.duration("KAFKA_STALL_AFTER", d.stall_after),
            extra,
        }
    }

    /// The topic names under this configuration's prefix.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }

    /// Properties every client shares.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            // Resolve each broker address to all its IPs; needed behind Swarm's
            // DNS round robin.
            .set("client.dns.lookup", "use_all_dns_ips")
            .set("log.connection.close", "false")
            // A request a broker never answers (it went away with the
            // request in flight, and came back) is given up on after this,
            // and sent again on a new connection. librdkafka's 60 s default
            // held the stream up for over a minute after a broker that was
            // down for 10 s came back (the fault matrix, kafka_broker_down).
            .set(
                "socket.timeout.ms",
                self.request_timeout
                    .as_millis()
                    .clamp(10, 300_000)
                    .to_string(),
            );
        c
    }

    pub(crate) fn apply_extra(&self, c: &mut ClientConfig) {
        for (k, v) in &self.extra {
            c.set(k, v);
        }
    }
}

impl fmt::Display for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "brokers={} client_id={} topic_prefix={:?} partitions={} replication_factor={} \
             create_topics={} linger={:?} batch_bytes={} compression={} delivery_timeout={:?} \
             request_timeout={:?} stall_after={:?} extra_keys=[{}]",
            self.brokers,
            self.client_id,
            self.topic_prefix,
            self.partitions,
            self.replication_factor,
            self.create_topics,
            self.linger,
            self.batch_bytes,
            self.compression,
            self.delivery_timeout,
            self.request_timeout,
            self.stall_after,
            // Extra values may be SASL passwords: print keys only.
            self.extra
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}

/// The five topics' names under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub games: String,
    pub outcomes: String,
    pub predictions: String,
    pub models: String,
    pub metrics: String,
}

impl Topics {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            games: Topic::Games.name(prefix),
            outcomes: Topic::Outcomes.name(prefix),
            predictions: Topic::Predictions.name(prefix),
            models: Topic::Models.name(prefix),
            metrics: Topic::Metrics.name(prefix),
        }
    }

    /// The name of `topic`.
    pub fn name(&self, topic: Topic) -> &str {
        match topic {
            Topic::Games => &self.games,
            Topic::Outcomes => &self.outcomes,
            Topic::Predictions => &self.predictions,
            Topic::Models => &self.models,
            Topic::Metrics => &self.metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fantasy_config::Env;

    #[test]
    fn env_overrides_defaults_and_bad_values_are_named() {
        let env = Env::from_pairs([
            ("KAFKA_BROKERS", "k1:9092,k2:9092"),
            ("KAFKA_COMPRESSION", "brotli"),
            ("KAFKA_PARTITIONS", "0"),
            (
                "KAFKA_EXTRA",
                "security.protocol=SASL_SSL,sasl.password=hunter2,oops",
            ),
        ]);
        let mut p = Parser::new(&env);
        let cfg = KafkaConfig::from_env(&mut p, "predictor");
        assert_eq!(cfg.brokers, "k1:9092,k2:9092");
        assert_eq!(cfg.extra.len(), 2);
        assert!(!cfg.to_string().contains("hunter2"));
        let err = p.finish().unwrap_err();
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["KAFKA_EXTRA", "KAFKA_PARTITIONS", "KAFKA_COMPRESSION"]
        );
    }

    #[test]
    fn every_client_gives_up_on_an_unanswered_request_after_the_request_timeout() {
        let env = Env::from_pairs([("KAFKA_REQUEST_TIMEOUT", "4s")]);
        let mut p = Parser::new(&env);
        let cfg = KafkaConfig::from_env(&mut p, "predictor");
        assert_eq!(cfg.client_config().get("socket.timeout.ms"), Some("4000"));
        let env = Env::from_pairs([("KAFKA_EXTRA", "socket.timeout.ms=900")]);
        let mut p = Parser::new(&env);
        let cfg = KafkaConfig::from_env(&mut p, "predictor");
        let mut c = cfg.client_config();
        assert_eq!(c.get("socket.timeout.ms"), Some("10000"));
        cfg.apply_extra(&mut c);
        assert_eq!(c.get("socket.timeout.ms"), Some("900"));
    }

    #[test]
    fn topics_take_the_prefix() {
        let t = Topics::new("test-1.");
        assert_eq!(t.games, "test-1.games");
        assert_eq!(t.name(Topic::Models), "test-1.models");
    }
}
