//! Whether a consumer group's stream moves.
//!
//! A group can be healthy by every other measure (the broker answers, the
//! member is in the group, its handler succeeds) and still read nothing: a
//! broker whose coordinator keeps a dead member's partitions (tansu 0.6 after
//! a member is killed; see docs/deploy.md), a handler that fails on every
//! batch, a member stuck in a rebalance. What shows it is the group's own
//! committed offsets: messages wait on a partition and its committed offset
//! does not move.
//!
//! A [`ProgressWatch`] asks the broker, every few seconds, for the group's
//! committed offsets and each partition's end (`OffsetFetch` and
//! `ListOffsets`, from a client of its own that never joins the group), and
//! calls a partition stalled when messages have waited on it for
//! `KAFKA_STALL_AFTER` with its committed offset unchanged. It sees every
//! partition of the group, also those no live member holds, which a member's
//! own statistics cannot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::KafkaConfig;
use crate::consumer::{AssignmentProbe, StartFrom};

/// One partition on which messages wait and the group's committed offset has
/// not moved for the stall time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalledPartition {
    pub topic: String,
    pub partition: i32,
    /// Messages between the committed offset and the partition's end.
    pub lag: i64,
    /// The committed offset (`None`: the group never committed here).
    pub committed: Option<i64>,
    /// How long messages have waited with the committed offset unchanged.
    pub waiting: Duration,
}

/// What the last look at the group found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupProgress {
    /// Whether the watch has looked at all yet.
    pub observed: bool,
    /// Messages waiting in the whole group.
    pub lag: i64,
    /// Partitions that wait and do not move, by topic and partition.
    pub stalled: Vec<StalledPartition>,
    /// Why the last look failed (the broker did not answer, say); the
    /// previous findings stay.
    pub error: Option<String>,
}

/// Per partition: the committed offset last seen, and since when messages
/// have waited with it unchanged.
#[derive(Clone, Copy, Debug)]
struct Track {
    committed: i64,
    waiting_since: Option<Instant>,
}

struct Shared {
    group: String,
    stall_after: Duration,
    /// The partitions this process's member holds, when there is one.
    member: Option<AssignmentProbe>,
    /// Told when partitions this member does not hold have stalled: the
    /// member then leaves the group and joins again (see [`watch`]).
    rejoin: Option<Arc<tokio::sync::Notify>>,
    progress: Mutex<GroupProgress>,
    /// Set when the watching task ended while the watch is still held (it
    /// panicked): the findings are stale from then on, which `check` says.
    stopped: AtomicBool,
}

/// Held by the watching task: when the task ends while the watch is still
/// held, the watch says so instead of reporting its last findings forever.
struct Alive(Weak<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.stopped.store(true, Ordering::Relaxed);
            tracing::error!(
                group = %shared.group,
                "the progress watch stopped; /ready reports the stream as unknown"
            );
        }
    }
}

/// Watches one consumer group's progress; cheap to clone. The watching stops
/// when the last clone is dropped. See the module documentation.
#[derive(Clone)]
pub struct ProgressWatch {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for ProgressWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            None => f.write_str("ProgressWatch(off)"),
            Some(s) => f
                .debug_struct("ProgressWatch")
                .field("group", &s.group)
                .field("stall_after", &s.stall_after)
                .finish_non_exhaustive(),
        }
    }
}

impl ProgressWatch {
    /// Starts watching `group` reading `topics` (a group with no committed
    /// offset reads from `start_from`). With `member`, [`ProgressWatch::check`]
    /// answers for that member; `cfg.stall_after` of zero turns the watch off.
    /// Must be called inside a Tokio runtime.
    pub fn start(
        cfg: &KafkaConfig,
        group: &str,
        topics: &[String],
        start_from: StartFrom,
        member: Option<AssignmentProbe>,
    ) -> Result<Self, KafkaError> {
        Self::start_for(cfg, group, topics, start_from, member, None)
    }

    /// [`ProgressWatch::start`] for a member that can rejoin its group.
    pub(crate) fn start_for(
        cfg: &KafkaConfig,
        group: &str,
        topics: &[String],
        start_from: StartFrom,
        member: Option<AssignmentProbe>,
        rejoin: Option<Arc<tokio::sync::Notify>>,
    ) -> Result<Self, KafkaError> {
        if cfg.stall_after.is_zero() {
            return Ok(Self { shared: None });
        }
        let mut c = cfg.client_config();
        c.set("group.id", group)
            // It only reads the group's offsets; it never joins or commits.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        cfg.apply_extra(&mut c);
        let client: BaseConsumer = c.create()?;
        let shared = Arc::new(Shared {
            group: group.to_owned(),
            stall_after: cfg.stall_after,
            member,
            rejoin,
            progress: Mutex::default(),
            stopped: AtomicBool::new(false),
        });
        let every = (cfg.stall_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(15));
        tokio::spawn(watch(
            Arc::downgrade(&shared),
            Arc::new(client),
            topics.to_vec(),
            start_from,
            cfg.request_timeout.min(every * 2),
            every,
        ));
        Ok(Self {
            shared: Some(shared),
        })
    }

    /// What the last look found (the default when the watch is off).
    pub fn progress(&self) -> GroupProgress {
        self.shared
            .as_ref()
            .and_then(|s| s.progress.lock().ok().map(|p| p.clone()))
            .unwrap_or_default()
    }

    /// The readiness check: an error when this member holds a stalled
    /// partition, and has held its assignment for the stall time at least. Stalled partitions it does not hold are not its to report
    /// (it rejoins the group instead, see [`crate::Consumer::progress_watch`]):
    /// a member the coordinator left idle is no less able to serve. Without
    /// a member, any stalled partition is an error.
    pub fn check(&self) -> anyhow::Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        anyhow::ensure!(
            !shared.stopped.load(Ordering::Relaxed),
            "group {}: the progress watch stopped, so whether the stream moves is unknown",
            shared.group
        );
        let progress = self.progress();
        if progress.stalled.is_empty() {
            return Ok(());
        }
        // A partition that came to this member in the last stall time (a
        // rebalance) is not its stall yet: it gets the time to move it.
        if shared
            .member
            .as_ref()
            .is_some_and(|m| m.settled_for().is_none_or(|d| d < shared.stall_after))
        {
            return Ok(());
        }
        let held = shared.member.as_ref().map(AssignmentProbe::assignment);
        let mine: Vec<&StalledPartition> = match &held {
            Some(held) => progress
                .stalled
                .iter()
                .filter(|s| held.iter().any(|(t, p)| *t == s.topic && *p == s.partition))
                .collect(),
            None => progress.stalled.iter().collect(),
        };
        if mine.is_empty() {
            return Ok(());
        }
        let waiting: i64 = mine.iter().map(|s| s.lag).sum();
        let longest = mine.iter().map(|s| s.waiting).max().unwrap_or_default();
        let partitions = mine
            .iter()
            .map(|s| format!("{}/{}", s.topic, s.partition))
            .collect::<Vec<_>>()
            .join(", ");
        let whose = match (
            &held,
            shared
                .member
                .as_ref()
                .is_some_and(AssignmentProbe::handler_failing),
        ) {
            (Some(_), true) => " on partitions this member holds, whose handler is failing",
            (Some(_), false) => " on partitions this member holds",
            (None, _) => "",
        };
        anyhow::bail!(
            "group {}: {waiting} messages wait on {partitions} and its committed offsets have not moved for {}s{whose}",
            shared.group,
            longest.as_secs(),
        )
    }
}

/// One look at the group: `(topic, partition, committed, low, high)` for
/// every partition of `topics`.
type Positions = Vec<(String, i32, Option<i64>, i64, i64)>;

fn look(
    client: &BaseConsumer,
    topics: &[String],
    timeout: Duration,
) -> Result<Positions, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            if t.error().is_some() {
                continue;
            }
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = client.committed_offsets(tpl, timeout)?;
    let mut positions = Vec::with_capacity(committed.count());
    for e in committed.elements() {
        let (low, high) = client.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let committed = match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        positions.push((e.topic().to_owned(), e.partition(), committed, low, high));
    }
    Ok(positions)
}

async fn watch(
    shared: Weak<Shared>,
    client: Arc<BaseConsumer>,
    topics: Vec<String>,
    start_from: StartFrom,
    timeout: Duration,
    every: Duration,
) {
    let _alive = Alive(shared.clone());
    let mut tracks: HashMap<(String, i32), Track> = HashMap::new();
    let mut last_rejoin: Option<Instant> = None;
    loop {
        let (c, t) = (Arc::clone(&client), topics.clone());
        let looked = tokio::task::spawn_blocking(move || look(&c, &t, timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled));
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut progress = match shared.progress.lock() {
            Ok(p) => p.clone(),
            Err(_) => return,
        };
        match looked {
            Err(e) => progress.error = Some(e.to_string()),
            Ok(positions) => {
                progress.error = None;
                progress.observed = true;
                progress.lag = 0;
                progress.stalled.clear();
                for (topic, partition, committed, low, high) in positions {
                    // Where the group would read from: its commit, else where
                    // a new member starts.
                    let from = committed.unwrap_or(match start_from {
                        StartFrom::Earliest => low,
                        StartFrom::Latest => high,
                    });
                    let lag = (high - from.max(low)).max(0);
                    progress.lag += lag;
                    let key = (topic.clone(), partition);
                    let track = tracks.entry(key).or_insert(Track {
                        committed: from,
                        waiting_since: None,
                    });
                    if lag == 0 || track.committed != from {
                        // Nothing waits, or the group moved: the clock
                        // restarts.
                        track.committed = from;
                        track.waiting_since = (lag > 0).then_some(now);
                        continue;
                    }
                    let since = *track.waiting_since.get_or_insert(now);
                    let waiting = now.duration_since(since);
                    if waiting >= shared.stall_after {
                        progress.stalled.push(StalledPartition {
                            topic,
                            partition,
                            lag,
                            committed,
                            waiting,
                        });
                    }
                }
                progress
                    .stalled
                    .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                metrics::gauge!("kafka_consumer_group_lag_messages", "group" => shared.group.clone())
                    .set(progress.lag as f64);
                metrics::gauge!("kafka_consumer_group_stalled_partitions", "group" => shared.group.clone())
                    .set(progress.stalled.len() as f64);
                if !progress.stalled.is_empty() {
                    tracing::warn!(
                        group = %shared.group,
                        partitions = progress.stalled.len(),
                        lag = progress.lag,
                        "consumer group stalled: messages wait and its committed offsets do not move"
                    );
                }
                // Stalled partitions this member does not hold (another
                // member fails on them, or nobody holds them: a coordinator
                // that kept a dead member's share, as tansu 0.6 does), or
                // that it holds while its handler succeeds (its fetch is
                // stuck). A member that leaves and joins again makes the
                // coordinator rebalance the group among its live members,
                // and fetches anew; at most once per stall time, and only
                // once the member has held its
                // assignment for a stall time: never while it joins (a join
                // can take longer than a short stall time, and a rejoin then
                // starts it over), nor right after a rebalance that may yet
                // get the partition moving.
                if let (Some(member), Some(rejoin)) = (&shared.member, &shared.rejoin) {
                    let held = member.assignment();
                    let failing = member.handler_failing();
                    let elsewhere = progress.stalled.iter().any(|s| {
                        !failing || !held.iter().any(|(t, p)| *t == s.topic && *p == s.partition)
                    });
                    let settled = member
                        .settled_for()
                        .is_some_and(|d| d >= shared.stall_after);
                    let due =
                        last_rejoin.is_none_or(|t| now.duration_since(t) >= shared.stall_after);
                    if elsewhere && settled && due {
                        last_rejoin = Some(now);
                        rejoin.notify_one();
                    }
                }
            }
        }
        if let Ok(mut p) = shared.progress.lock() {
            *p = progress;
        }
        drop(shared);
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            group: "g".into(),
            stall_after: Duration::from_secs(30),
            member: None,
            rejoin: None,
            progress: Mutex::default(),
            stopped: AtomicBool::new(false),
        })
    }

    #[test]
    fn a_watch_whose_task_ended_fails_its_check() {
        let shared = shared();
        let watch = ProgressWatch {
            shared: Some(Arc::clone(&shared)),
        };
        let alive = Alive(Arc::downgrade(&shared));
        watch
            .check()
            .expect("a live watch with nothing stalled passes");
        // What a panic in the watching task does: its guard is dropped.
        drop(alive);
        let err = watch.check().expect_err("a stopped watch must not pass");
        assert!(err.to_string().contains("progress watch stopped"), "{err}");
    }
}
