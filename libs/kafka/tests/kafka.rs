//! The Kafka crate against the Kafka protocol: the embedded broker (librdkafka's
//! mock cluster) over TCP, real producers and consumer groups.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantasy_kafka::{
    BrokerProbe, Consumer, ConsumerOptions, EmbeddedBroker, Handler, KafkaConfig, NotYet, Producer,
    Raw, Record, RunSummary, ensure_topics, fetch_broker_info,
};
use fantasy_messages::testing::game;
use fantasy_messages::{Game, Topic};
use fantasy_testkit::{Kafka, eventually_sync as eventually};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 8;

/// A broker of three, a unique topic prefix, and a config pointing at both.
fn setup() -> (EmbeddedBroker, KafkaConfig) {
    let Kafka { broker, config, .. } = Kafka::start(3, PARTITIONS, "kafka-test");
    (broker, config)
}

fn games(n: usize, tag: &str) -> Vec<Game> {
    (0..n).map(|i| game(&format!("{tag}-{i}"))).collect()
}

/// Keeps every record it is given.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Record<Game>>>>);

impl Collect {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.value.game_id.clone())
            .collect()
    }
    fn partitions(&self) -> BTreeSet<i32> {
        self.0.lock().unwrap().iter().map(|r| r.partition).collect()
    }
}

impl Handler<Game> for Collect {
    async fn handle(&mut self, batch: &[Record<Game>]) -> anyhow::Result<()> {
        self.0.lock().unwrap().extend(batch.iter().cloned());
        Ok(())
    }
}

/// Fails its first `failures` calls, counting every call, then collects.
#[derive(Clone)]
struct FlakyThenCollect {
    calls: Arc<Mutex<Vec<usize>>>,
    failures: usize,
    /// Answer "not yet" instead of failing.
    hold: bool,
    inner: Collect,
}

impl Handler<Game> for FlakyThenCollect {
    async fn handle(&mut self, batch: &[Record<Game>]) -> anyhow::Result<()> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(batch.len());
            calls.len()
        };
        if call <= self.failures {
            if self.hold {
                return Err(NotYet(format!("no model yet (attempt {call})")).into());
            }
            anyhow::bail!("sink unavailable (attempt {call})");
        }
        self.inner.handle(batch).await
    }
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<RunSummary>,
    probe: fantasy_kafka::AssignmentProbe,
}

impl Running {
    async fn stop(self) -> RunSummary {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("consumer did not stop within 20 s")
            .unwrap()
    }
}

fn start<H>(cfg: &KafkaConfig, opts: ConsumerOptions, handler: H) -> Running
where
    H: Handler<Game> + 'static,
{
    let consumer = Consumer::<Game>::new(cfg, opts).unwrap();
    let probe = consumer.assignment_probe();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { consumer.run(handler, token).await.unwrap() });
    Running {
        shutdown,
        task,
        probe,
    }
}

/// Options for a test consumer: a short session timeout, since the mock
/// cluster makes a join wait that long for members that left.
fn options(group: &str, topic: &str) -> ConsumerOptions {
    let mut opts = ConsumerOptions::new(group, [topic]);
    opts.session_timeout = Duration::from_secs(4);
    opts
}

fn group() -> String {
    format!("g-{}", uuid::Uuid::new_v4().simple())
}

async fn with_timeout<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test step took over 60 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_one_group_split_the_partitions_and_see_each_message_once() {
    let (_broker, cfg) = setup();
    let topics = cfg.topics();
    let group_a = group();
    let (a1, a2) = (Collect::default(), Collect::default());
    let opts = options(&group_a, &topics.games);
    let m1 = start(&cfg, opts.clone(), a1.clone());
    let m2 = start(&cfg, opts, a2.clone());
    eventually(
        "both members hold 4 partitions",
        Duration::from_secs(30),
        || m1.probe.assignment().len() == 4 && m2.probe.assignment().len() == 4,
    )
    .await;

    let producer = Producer::new(&cfg).unwrap();
    let sent = games(400, "split");
    with_timeout(producer.publish_batch(&sent)).await.unwrap();

    eventually(
        "400 messages across the group",
        Duration::from_secs(30),
        || a1.len() + a2.len() >= 400,
    )
    .await;
    // Nothing more arrives: no duplicates hiding behind a late delivery.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut all: Vec<String> = a1.ids();
    all.extend(a2.ids());
    assert_eq!(all.len(), 400, "every message once across the group");
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), 400);
    assert!(a1.len() > 0 && a2.len() > 0, "both members got work");
    assert!(a1.partitions().is_disjoint(&a2.partitions()));

    // Each game's events stay on one partition, in order: the key is the game id.
    let records = a1.0.lock().unwrap().clone();
    for pair in records.windows(2) {
        if pair[0].partition == pair[1].partition {
            assert!(pair[0].offset < pair[1].offset);
        }
    }

    // A second group reads everything again.
    let b = Collect::default();
    let other = start(&cfg, options(&group(), &topics.games), b.clone());
    eventually(
        "the second group reads all 400",
        Duration::from_secs(30),
        || b.len() >= 400,
    )
    .await;
    let ids: HashSet<_> = b.ids().into_iter().collect();
    assert_eq!(ids.len(), 400);

    let (s1, s2) = (m1.stop().await, m2.stop().await);
    assert_eq!(s1.messages + s2.messages, 400);
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_before_committing_has_its_messages_redelivered() {
    let (_broker, cfg) = setup();
    let topics = cfg.topics();
    let group_a = group();
    let producer = Producer::new(&cfg).unwrap();
    with_timeout(producer.publish_batch(&games(50, "redo")))
        .await
        .unwrap();

    // The first member's sink is down the whole time it runs.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let failing = FlakyThenCollect {
        calls: calls.clone(),
        failures: usize::MAX,
        hold: false,
        inner: Collect::default(),
    };
    let first = start(&cfg, options(&group_a, &topics.games), failing);
    eventually(
        "the failing handler was offered a batch",
        Duration::from_secs(30),
        || !calls.lock().unwrap().is_empty(),
    )
    .await;
    let summary = first.stop().await;
    assert_eq!(summary.messages, 0);
    assert!(summary.handler_failures >= 1);

    // The next member of the group gets all 50 again: nothing was committed.
    let second = Collect::default();
    let member = start(&cfg, options(&group_a, &topics.games), second.clone());
    eventually("all 50 redelivered", Duration::from_secs(30), || {
        second.len() >= 50
    })
    .await;
    let ids: HashSet<_> = second.ids().into_iter().collect();
    assert_eq!(ids.len(), 50);
    member.stop().await;

    // ...and its success was committed: a third member sees only what is new.
    with_timeout(producer.publish(&game("redo-new")))
        .await
        .unwrap();
    let third = Collect::default();
    let member = start(&cfg, options(&group_a, &topics.games), third.clone());
    eventually("the new message", Duration::from_secs(30), || {
        third.len() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(third.ids(), ["redo-new"]);
    member.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_answers_not_yet_holds_the_batch_without_counting_failures() {
    let (_broker, cfg) = setup();
    let topics = cfg.topics();
    let producer = Producer::new(&cfg).unwrap();
    with_timeout(producer.publish_batch(&games(20, "hold")))
        .await
        .unwrap();
    let collected = Collect::default();
    let handler = FlakyThenCollect {
        calls: Arc::default(),
        failures: 2,
        hold: true,
        inner: collected.clone(),
    };
    let mut opts = options(&group(), &topics.games);
    opts.retry_initial = Duration::from_millis(10);
    let member = start(&cfg, opts, handler);
    eventually("all 20 handled", Duration::from_secs(30), || {
        collected.len() >= 20
    })
    .await;
    let summary = member.stop().await;
    // Held twice, then taken: a wait, not a fault.
    assert_eq!(summary.held, 2);
    assert_eq!(summary.handler_failures, 0);
    assert_eq!(summary.messages, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_is_retried_until_it_succeeds_never_skipped() {
    let (_broker, cfg) = setup();
    let topics = cfg.topics();
    let producer = Producer::new(&cfg).unwrap();
    with_timeout(producer.publish_batch(&games(20, "retry")))
        .await
        .unwrap();

    let calls = Arc::new(Mutex::new(Vec::new()));
    let collected = Collect::default();
    let handler = FlakyThenCollect {
        calls: calls.clone(),
        failures: 2,
        hold: false,
        inner: collected.clone(),
    };
    let mut opts = options(&group(), &topics.games);
    opts.retry_initial = Duration::from_millis(10);
    let member = start(&cfg, opts, handler);
    eventually("all 20 handled", Duration::from_secs(30), || {
        collected.len() >= 20
    })
    .await;
    let summary = member.stop().await;
    assert_eq!(summary.handler_failures, 2);
    assert_eq!(summary.messages, 20);
    let calls = calls.lock().unwrap().clone();
    // The same batch was offered three times: twice failing, then accepted.
    assert_eq!(calls[0], calls[1]);
    assert_eq!(calls[1], calls[2]);
    let ids: HashSet<_> = collected.ids().into_iter().collect();
    assert_eq!(ids.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_counted_skipped_and_dead_lettered() {
    let (broker, cfg) = setup();
    let topics = cfg.topics();
    let dlq = format!("{}games.dlq", cfg.topic_prefix);
    broker.create_topic(&dlq, 1).unwrap();
    let producer = Producer::new(&cfg).unwrap();

    // Everything on one key, so one partition, so a known order.
    let key = Some(&b"same-key"[..]);
    let future_version = br#"{"schema_version":2,"game_id":"x"}"#;
    let good = |id: &str| fantasy_messages::encode(&game(id)).unwrap();
    for payload in [
        good("before"),
        b"not json at all".to_vec(),
        future_version.to_vec(),
        good("after"),
    ] {
        with_timeout(producer.send_bytes(&topics.games, key, &payload, None))
            .await
            .unwrap();
    }

    let collected = Collect::default();
    let mut opts = options(&group(), &topics.games);
    opts.dead_letter_topic = Some(dlq.clone());
    let member = start(&cfg, opts, collected.clone());
    eventually("both good messages", Duration::from_secs(30), || {
        collected.len() >= 2
    })
    .await;
    assert_eq!(collected.ids(), ["before", "after"]);

    // The dead-letter topic holds both poison messages with their error.
    #[derive(Clone, Default)]
    struct RawCollect(Arc<Mutex<Vec<Record<Raw>>>>);
    impl Handler<Raw> for RawCollect {
        async fn handle(&mut self, batch: &[Record<Raw>]) -> anyhow::Result<()> {
            self.0.lock().unwrap().extend(batch.iter().cloned());
            Ok(())
        }
    }
    let dead = RawCollect::default();
    let reader = Consumer::<Raw>::new(&cfg, options(&group(), &dlq)).unwrap();
    let token = CancellationToken::new();
    let task = tokio::spawn(reader.run(dead.clone(), token.clone()));
    eventually("two dead letters", Duration::from_secs(30), || {
        dead.0.lock().unwrap().len() >= 2
    })
    .await;
    let payloads: Vec<Vec<u8>> = dead
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.value.0.clone())
        .collect();
    assert_eq!(
        payloads,
        [b"not json at all".to_vec(), future_version.to_vec()]
    );
    token.cancel();
    task.await.unwrap().unwrap();

    let summary = member.stop().await;
    assert_eq!(summary.poison, 2);
    assert_eq!(summary.messages, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_info_lists_brokers_and_topics_and_ensure_topics_leaves_existing_ones() {
    let (_broker, cfg) = setup();
    let info = fetch_broker_info(&cfg, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(info.brokers.len(), 3);
    for t in Topic::ALL {
        assert_eq!(
            info.partitions(&t.name(&cfg.topic_prefix)),
            Some(PARTITIONS as usize)
        );
    }
    let specs: Vec<_> = Topic::ALL
        .iter()
        .map(|t| t.spec(&cfg.topic_prefix, PARTITIONS))
        .collect();
    let created = ensure_topics(&cfg, &specs).await.unwrap();
    assert!(created.is_empty(), "all topics existed: {created:?}");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_clear_error() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = KafkaConfig::new(format!("127.0.0.1:{port}"), "kafka-test");
    cfg.request_timeout = Duration::from_millis(500);
    let err = fetch_broker_info(&cfg, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    let err = ensure_topics(&cfg, &[Topic::Games.spec("", 8)])
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("127.0.0.1:{port}")),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_probe_follows_the_broker_down_and_up_again() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let cfg = KafkaConfig::new(broker.bootstrap_servers(), "kafka-test");
    let probe = BrokerProbe::new(&cfg);
    // Many checks at once (the gateway's, the engine's, a scrape) share
    // one client and answer alike.
    let answers = futures::future::join_all((0..16).map(|_| probe.check())).await;
    for a in answers {
        a.unwrap();
    }

    broker.broker_down(1).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let err = loop {
        match probe.check().await {
            Err(e) => break e,
            Ok(()) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still answering with the broker down"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(err.to_string().starts_with("no broker answered"), "{err:#}");

    broker.broker_up(1).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Err(e) = probe.check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker came back, the probe did not see it: {e:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn trace_context_travels_in_message_headers() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let (_broker, cfg) = setup();
    let producer = Producer::new(&cfg).unwrap();
    let span = tracing::info_span!("collect");
    let trace_id = {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        span.context().span().span_context().trace_id()
    };
    {
        use tracing::Instrument as _;
        with_timeout(producer.publish(&game("traced")).instrument(span))
            .await
            .unwrap();
    }

    let collected = Collect::default();
    let member = start(
        &cfg,
        options(&group(), &cfg.topics().games),
        collected.clone(),
    );
    eventually("the traced message", Duration::from_secs(30), || {
        collected.len() >= 1
    })
    .await;
    let record = collected.0.lock().unwrap()[0].clone();
    let remote = {
        use opentelemetry::trace::TraceContextExt as _;
        record
            .trace
            .as_ref()
            .expect("trace headers")
            .context()
            .span()
            .span_context()
            .clone()
    };
    assert!(remote.is_remote());
    assert_eq!(remote.trace_id(), trace_id);
    member.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_the_broker_cannot_create_is_a_clear_error() {
    // The mock cluster has no CreateTopics API: what a locked-down real
    // cluster (no create ACL) looks like to us too.
    let (_broker, mut cfg) = setup();
    cfg.request_timeout = Duration::from_secs(5);
    let missing = Topic::Games.spec("not-created.", 8);
    let err = tokio::time::timeout(Duration::from_secs(30), ensure_topics(&cfg, &[missing]))
        .await
        .expect("ensure_topics hung")
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("not-created.games") || text.contains("creating Kafka topics"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_readers_see_every_partition_from_where_they_start() {
    use fantasy_kafka::{TailReader, TailStart};
    let (_broker, cfg) = setup();
    let topic = cfg.topics().predictions;
    let producer = Producer::new(&cfg).unwrap();
    let batch: Vec<Game> = games(40, "tail");
    with_timeout(producer.publish_batch_to(&topic, &batch))
        .await
        .unwrap();

    // The last 2 of each partition, then live.
    let history = TailReader::open(&cfg, &topic, TailStart::LastPerPartition(2))
        .await
        .unwrap();
    let live = TailReader::open(&cfg, &topic, TailStart::End)
        .await
        .unwrap();
    assert_eq!(history.starts().len(), 8);
    let mut seen = Vec::new();
    while let Some(r) = history.recv_timeout(Duration::from_secs(3)).await {
        seen.push(r.unwrap());
    }
    let mut per_partition = std::collections::HashMap::<i32, usize>::new();
    for r in &seen {
        *per_partition.entry(r.partition).or_default() += 1;
    }
    assert!(per_partition.values().all(|&n| n <= 2), "{per_partition:?}");
    assert_eq!(seen.len(), per_partition.values().sum::<usize>());

    // New messages reach both readers, at the same positions.
    let more = games(10, "tail-new");
    with_timeout(producer.publish_batch_to(&topic, &more))
        .await
        .unwrap();
    let mut a = Vec::new();
    let mut b = Vec::new();
    while a.len() < 10 || b.len() < 10 {
        if a.len() < 10 {
            let r = history
                .recv_timeout(Duration::from_secs(10))
                .await
                .expect("history reader")
                .unwrap();
            a.push((r.partition, r.offset));
        }
        if b.len() < 10 {
            let r = live
                .recv_timeout(Duration::from_secs(10))
                .await
                .expect("live reader")
                .unwrap();
            b.push((r.partition, r.offset));
        }
    }
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

/// Produces `n` games and returns how many a fresh group reads back.
async fn read_back(cfg: &KafkaConfig, expect: usize) -> Vec<String> {
    let collected = Collect::default();
    let running = start(
        cfg,
        options(&group(), &cfg.topics().games),
        collected.clone(),
    );
    eventually("the games to be read back", Duration::from_secs(30), || {
        collected.len() >= expect
    })
    .await;
    running.stop().await;
    collected.ids()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_is_replaced_and_the_next_send_goes_through() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (broker, mut cfg) = setup();
    cfg.delivery_timeout = Duration::from_secs(5);
    let producer = Producer::new(&cfg).unwrap();
    with_timeout(producer.publish(&game("before")))
        .await
        .unwrap();
    assert_eq!(producer.generation(), 0);

    // The broker gives our producer id to someone else (what tansu did to a
    // collector): every Produce of this client is refused from now on.
    broker
        .fail_requests(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
        )
        .unwrap();
    let err = with_timeout(producer.publish(&game("fenced")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ProducerFenced"), "{err}");
    assert_eq!(producer.generation(), 1, "the fenced client was replaced");

    // The caller's retry goes through the new client; clones share it.
    let clone = producer.clone();
    with_timeout(clone.publish(&game("fenced"))).await.unwrap();
    with_timeout(producer.publish_batch(&games(5, "after")))
        .await
        .unwrap();
    assert_eq!(producer.generation(), 1, "replaced once, not per send");

    let mut ids = read_back(&cfg, 7).await;
    ids.sort();
    assert_eq!(
        ids,
        [
            "after-0", "after-1", "after-2", "after-3", "after-4", "before", "fenced"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_with_a_fatal_error_is_replaced_instead_of_failing_forever() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (broker, mut cfg) = setup();
    cfg.delivery_timeout = Duration::from_secs(5);
    // Fenced while getting its producer id: librdkafka makes that a fatal
    // error, after which the client never sends again.
    broker
        .fail_requests(
            RDKafkaApiKey::InitProducerId,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
        )
        .unwrap();
    let producer = Producer::new(&cfg).unwrap();
    let err = with_timeout(producer.publish(&game("lost")))
        .await
        .unwrap_err();
    assert_eq!(producer.generation(), 1, "replaced after: {err}");
    for i in 0..3 {
        with_timeout(producer.publish(&game(&format!("sent-{i}"))))
            .await
            .unwrap();
    }
    let mut ids = read_back(&cfg, 3).await;
    ids.sort();
    assert_eq!(ids, ["sent-0", "sent-1", "sent-2"]);
}

/// Collects what it is given, except batches with a record of partition
/// `stuck`, which it fails: that partition never moves.
#[derive(Clone, Default)]
struct StuckOn {
    stuck: i32,
    inner: Collect,
}

impl Handler<Game> for StuckOn {
    async fn handle(&mut self, batch: &[Record<Game>]) -> anyhow::Result<()> {
        anyhow::ensure!(
            batch.iter().all(|r| r.partition != self.stuck),
            "partition {} cannot be handled",
            self.stuck
        );
        self.inner.handle(batch).await
    }
}

/// Takes `ms` per batch.
#[derive(Clone, Default)]
struct Slow {
    ms: u64,
    inner: Collect,
}

impl Handler<Game> for Slow {
    async fn handle(&mut self, batch: &[Record<Game>]) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        self.inner.handle(batch).await
    }
}

/// A topic of its own with `partitions` partitions, and `n` games on it.
async fn topic_with_games(
    broker: &EmbeddedBroker,
    cfg: &KafkaConfig,
    partitions: i32,
    n: usize,
) -> String {
    let topic = format!(
        "{}watched-{}",
        cfg.topic_prefix,
        uuid::Uuid::new_v4().simple()
    );
    broker.create_topic(&topic, partitions).unwrap();
    let producer = Producer::new(cfg).unwrap();
    for g in games(n, "w") {
        with_timeout(producer.publish_to(&topic, &g)).await.unwrap();
    }
    topic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_reads_nothing_is_stalled_until_it_moves() {
    let (broker, mut cfg) = setup();
    cfg.stall_after = Duration::from_secs(2);
    let topic = topic_with_games(&broker, &cfg, 2, 20).await;
    let group = group();
    // Nobody reads yet: 20 messages wait and nothing moves.
    let watch = fantasy_kafka::ProgressWatch::start(
        &cfg,
        &group,
        std::slice::from_ref(&topic),
        fantasy_kafka::StartFrom::Earliest,
        None,
    )
    .unwrap();
    eventually(
        "the group to show as stalled",
        Duration::from_secs(15),
        || watch.check().is_err(),
    )
    .await;
    let progress = watch.progress();
    assert_eq!(progress.lag, 20);
    assert_eq!(progress.stalled.iter().map(|s| s.lag).sum::<i64>(), 20);
    assert!(progress.stalled.iter().all(|s| s.committed.is_none()));
    let err = watch.check().unwrap_err().to_string();
    assert!(err.contains(&group) && err.contains("20 messages"), "{err}");

    // A member reads everything: the stall clears.
    let collected = Collect::default();
    let running = start(&cfg, options(&group, &topic), collected.clone());
    eventually("the group to catch up", Duration::from_secs(30), || {
        let p = watch.progress();
        watch.check().is_ok() && p.lag == 0 && p.stalled.is_empty()
    })
    .await;
    assert_eq!(collected.len(), 20);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_group_that_moves_is_not_stalled() {
    let (broker, mut cfg) = setup();
    cfg.stall_after = Duration::from_secs(2);
    // One partition handled one message per 200 ms: 6 s of steady progress,
    // three times the stall time.
    let topic = topic_with_games(&broker, &cfg, 1, 30).await;
    let group = group();
    let mut opts = options(&group, &topic);
    opts.max_batch = 1;
    let consumer = Consumer::<Game>::new(&cfg, opts).unwrap();
    let watch = consumer.progress_watch(&cfg).unwrap();
    let slow = Slow {
        ms: 200,
        inner: Collect::default(),
    };
    let collected = slow.inner.clone();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { consumer.run(slow, token).await.unwrap() });
    // The join alone looks like a stall (messages wait, nothing commits):
    // the watch is asked once the group has moved.
    eventually("the group to start moving", Duration::from_secs(30), || {
        collected.len() >= 8
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut looked_while_waiting = 0;
    while collected.len() < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never finished"
        );
        if let Err(e) = watch.check() {
            panic!("a moving group was called stalled: {e:#}");
        }
        if watch.progress().lag > 0 {
            looked_while_waiting += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(looked_while_waiting > 10, "the watch saw the backlog");
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_answers_for_the_partitions_it_holds() {
    let (broker, mut cfg) = setup();
    cfg.stall_after = Duration::from_secs(2);
    // Two partitions, three members: one holds partition 0 and cannot
    // handle it, one holds partition 1 and keeps up, one holds nothing.
    // The games come once the group has formed, so that no member fails a
    // batch holding both partitions before the others join.
    let topic = topic_with_games(&broker, &cfg, 2, 0).await;
    let group = group();
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut opts = options(&group, &topic);
        // Rejoins would move the partitions while the test reads them.
        opts.rejoin_when_stalled = false;
        let consumer = Consumer::<Game>::new(&cfg, opts).unwrap();
        let watch = consumer.progress_watch(&cfg).unwrap();
        let probe = consumer.assignment_probe();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handler = StuckOn {
            stuck: 0,
            inner: Collect::default(),
        };
        let task = tokio::spawn(async move { consumer.run(handler, token).await.unwrap() });
        members.push((watch, probe, shutdown, task));
    }
    eventually("the group to form", Duration::from_secs(30), || {
        let held: usize = members.iter().map(|m| m.1.assignment().len()).sum();
        held == 2 && members.iter().all(|m| m.1.settled_for().is_some())
    })
    .await;
    let producer = Producer::new(&cfg).unwrap();
    for g in games(20, "w") {
        with_timeout(producer.publish_to(&topic, &g)).await.unwrap();
    }
    // Every member's own watch sees it (each looks on its own schedule).
    eventually("partition 0 to stall", Duration::from_secs(30), || {
        members.iter().all(|m| {
            let p = m.0.progress();
            p.stalled.len() == 1 && p.stalled[0].partition == 0
        })
    })
    .await;
    // Settled, and for the stall time: a partition that just came to a
    // member is not yet its stall.
    eventually("the group to settle", Duration::from_secs(30), || {
        let held: usize = members.iter().map(|m| m.1.assignment().len()).sum();
        held == 2
            && members
                .iter()
                .all(|m| m.1.settled_for().is_some_and(|d| d >= cfg.stall_after))
    })
    .await;
    for (watch, probe, _, _) in &members {
        let held: Vec<i32> = probe.assignment().iter().map(|(_, p)| *p).collect();
        let answer = watch.check();
        match held.as_slice() {
            [0] => {
                let err = answer.unwrap_err().to_string();
                assert!(
                    err.contains("partitions this member holds, whose handler is failing"),
                    "{err}"
                );
                assert!(err.contains(&format!("{topic}/0")), "{err}");
            }
            [1] => assert!(answer.is_ok(), "partition 1 moves: {answer:?}"),
            // Idle, not stuck: it can serve (and would rejoin, were that on).
            [] => assert!(answer.is_ok(), "an idle member: {answer:?}"),
            other => panic!("unexpected assignment {other:?}"),
        }
    }
    for (_, _, shutdown, task) in members {
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_rejoins_when_partitions_it_does_not_hold_stall() {
    let (broker, mut cfg) = setup();
    cfg.stall_after = Duration::from_secs(2);
    // Two partitions, two members; whoever holds partition 1 cannot handle
    // it. The other sees a partition it does not hold stall, and leaves and
    // rejoins the group (what gives a stranded partition a live owner).
    let topic = topic_with_games(&broker, &cfg, 2, 20).await;
    let group = group();
    let mut members = Vec::new();
    for _ in 0..2 {
        let consumer = Consumer::<Game>::new(&cfg, options(&group, &topic)).unwrap();
        let watch = consumer.progress_watch(&cfg).unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handler = StuckOn {
            stuck: 1,
            inner: Collect::default(),
        };
        let collected = handler.inner.clone();
        let task = tokio::spawn(async move { consumer.run(handler, token).await.unwrap() });
        members.push((watch, shutdown, task, collected));
    }
    eventually("partition 1 to stall", Duration::from_secs(30), || {
        members[0]
            .0
            .progress()
            .stalled
            .iter()
            .any(|s| s.partition == 1)
    })
    .await;
    // A member rejoins once it has held its assignment for the stall time,
    // at the watch's next look (every second here).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut rejoins = 0;
    for (_, shutdown, task, _) in members {
        shutdown.cancel();
        let summary = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("member did not stop")
            .unwrap();
        rejoins += summary.rejoins;
    }
    assert!(rejoins >= 1, "no member rejoined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_retrying_a_failing_batch_lets_its_group_rebalance() {
    let (broker, cfg) = setup();
    // One member holds both partitions and cannot handle partition 1, so
    // every batch it reads fails. A second member joins: the group must
    // rebalance around the failing one (which keeps polling between
    // attempts) instead of waiting out max.poll.interval.ms, and
    // partition 0's games must all be handled by whoever holds it then.
    let topic = topic_with_games(&broker, &cfg, 2, 0).await;
    let producer = Producer::new(&cfg).unwrap();
    let mut on_zero = 0;
    for g in games(40, "r") {
        let (partition, _) = with_timeout(producer.publish_to(&topic, &g)).await.unwrap();
        on_zero += usize::from(partition == 0);
    }
    let group = group();
    let member = |collected: Collect| {
        let mut opts = options(&group, &topic);
        opts.rejoin_when_stalled = false;
        let consumer = Consumer::<Game>::new(&cfg, opts).unwrap();
        let probe = consumer.assignment_probe();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handler = StuckOn {
            stuck: 1,
            inner: collected,
        };
        let task = tokio::spawn(async move { consumer.run(handler, token).await.unwrap() });
        (probe, shutdown, task)
    };
    let collected = Collect::default();
    let first = member(collected.clone());
    eventually(
        "the first member to fail a batch with both partitions",
        Duration::from_secs(30),
        || first.0.assignment().len() == 2 && first.0.handler_failing(),
    )
    .await;
    let second = member(collected.clone());
    eventually(
        "the group to rebalance around the failing member",
        Duration::from_secs(30),
        || second.0.assignment().len() == 1 && first.0.assignment().len() == 1,
    )
    .await;

    assert!(on_zero > 0, "no games on partition 0");
    eventually(
        "partition 0's games to be handled",
        Duration::from_secs(30),
        || collected.partitions() == BTreeSet::from([0]) && collected.len() >= on_zero,
    )
    .await;
    let mut abandoned = 0;
    for (_, shutdown, task) in [first, second] {
        shutdown.cancel();
        let summary = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("member did not stop")
            .unwrap();
        abandoned += summary.abandoned;
    }
    assert!(
        abandoned >= 1,
        "the failing batch was not given up on the rebalance"
    );
    let ids: HashSet<String> = collected.ids().into_iter().collect();
    assert_eq!(ids.len(), on_zero, "partition 0's games, each handled");
}
