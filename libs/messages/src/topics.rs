//! The five topics of `DESIGN.md` and their default settings.

use std::fmt;
use std::time::Duration;

/// A topic of the stack. Its name on the broker is `prefix + base_name()`,
/// the prefix being configuration (empty in production, unique per test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `Game` events from the collector.
    Games,
    /// `Outcome` events from the collector.
    Outcomes,
    /// `Prediction` events from the predictor.
    Predictions,
    /// `ModelPublished` events from the trainer; compacted, keyed by model name.
    Models,
    /// `ModelMetrics` events from the trainer.
    Metrics,
}

impl Topic {
    /// Every topic, in pipeline order.
    pub const ALL: [Topic; 5] = [
        Topic::Games,
        Topic::Outcomes,
        Topic::Predictions,
        Topic::Models,
        Topic::Metrics,
    ];

    /// Default partition count: enough for 8 consumers of one group.
    pub const DEFAULT_PARTITIONS: i32 = 8;

    /// Default retention of the event topics: one week, so a consumer that was
    /// down over a weekend still finds its backlog.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(168 * 3600);

    /// The topic's name without prefix.
    pub fn base_name(self) -> &'static str {
        match self {
            Topic::Games => "games",
            Topic::Outcomes => "outcomes",
            Topic::Predictions => "predictions",
            Topic::Models => "models",
            Topic::Metrics => "metrics",
        }
    }

    /// Whether the broker keeps only the latest message per key.
    /// `models` is compacted so that a new predictor replica finds the active
    /// model of every name however old its announcement is.
    pub fn compacted(self) -> bool {
        matches!(self, Topic::Models)
    }

    /// The topic's full name under `prefix`.
    pub fn name(self, prefix: &str) -> String {
        format!("{prefix}{}", self.base_name())
    }

    /// How to create this topic under `prefix`.
    pub fn spec(self, prefix: &str, partitions: i32) -> TopicSpec {
        TopicSpec {
            name: self.name(prefix),
            partitions,
            retention: (!self.compacted()).then_some(Self::DEFAULT_RETENTION),
            compacted: self.compacted(),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base_name())
    }
}

/// What a topic is created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full name on the broker.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Time-based retention; `None` keeps messages until compaction removes them.
    pub retention: Option<Duration>,
    /// `cleanup.policy=compact`.
    pub compacted: bool,
}
