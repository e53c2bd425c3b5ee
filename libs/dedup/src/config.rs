//! Dedup settings.

use std::fmt;
use std::time::Duration;

use fantasy_config::Parser;

use crate::BloomParams;

/// `DEDUP_EXPECTED_ITEMS` default: distinct record versions per window.
///
/// A million a day is far above what scoreboards produce (every game of
/// every major league, a version per score change: tens of thousands), and
/// keeps a generation at 1.9 MiB: the local filter stays in the CPU caches
/// (23 M checks/s here against 4.7 M/s at 10M items, benches/RESULTS.md) and
/// Redis holds two small strings. Beyond it the false-positive rate climbs,
/// which costs Postgres lookups, never records.
pub const DEFAULT_EXPECTED_ITEMS: u64 = 1_000_000;
/// `DEDUP_FP_RATE` default.
pub const DEFAULT_FP_RATE: f64 = 0.001;
/// `DEDUP_WINDOW` default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// `DEDUP_REDIS_RETRY` default.
pub const DEFAULT_REDIS_RETRY: Duration = Duration::from_secs(5);

const MAX_EXPECTED_ITEMS: u64 = 1_000_000_000;
const MIN_FP_RATE: f64 = 1e-9;
const MAX_FP_RATE: f64 = 0.5;
const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_REDIS_RETRY: Duration = Duration::from_secs(600);

/// Dedup settings of the collector.
#[derive(Clone, Debug, PartialEq)]
pub struct DedupConfig {
    /// `DEDUP_EXPECTED_ITEMS`: distinct record versions expected per window
    /// (n). Each generation's filter is sized for this many; more make the
    /// false-positive rate climb (costing Postgres look-ups, never records).
    pub expected_items: u64,
    /// `DEDUP_FP_RATE`: target false-positive rate of one check (p), across
    /// both generations: each is sized for p/2. A false positive costs an
    /// exact look-up in Postgres, never a record.
    pub fp_rate: f64,
    /// `DEDUP_WINDOW`: length of a generation. A key is remembered by the
    /// bloom filters for one to two windows, and by the exact store until it
    /// is purged.
    pub window: Duration,
    /// `DEDUP_REDIS_RETRY`: after Redis fails, how long calls go straight to
    /// Postgres before Redis is tried again (so an outage does not add a
    /// timeout to every batch).
    pub redis_retry: Duration,
    /// `DEDUP_LOCAL_FILTER`: keep an in-process filter per generation in
    /// front of Redis (the same size as one Redis generation, twice), so the
    /// keys this replica marked skip the Redis round trip.
    pub local_filter: bool,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            expected_items: DEFAULT_EXPECTED_ITEMS,
            fp_rate: DEFAULT_FP_RATE,
            window: DEFAULT_WINDOW,
            redis_retry: DEFAULT_REDIS_RETRY,
            local_filter: true,
        }
    }
}

impl DedupConfig {
    /// Reads the `DEDUP_*` variables, checking their ranges and that the
    /// filter they describe fits in Redis.
    pub fn from_env(p: &mut Parser<'_>) -> Self {
        let d = Self::default();
        let cfg = Self {
            expected_items: p.ranged(
                "DEDUP_EXPECTED_ITEMS",
                d.expected_items,
                1..=MAX_EXPECTED_ITEMS,
            ),
            fp_rate: p.ranged("DEDUP_FP_RATE", d.fp_rate, MIN_FP_RATE..=MAX_FP_RATE),
            window: duration_in(p, "DEDUP_WINDOW", d.window, MIN_WINDOW, MAX_WINDOW),
            redis_retry: duration_in(
                p,
                "DEDUP_REDIS_RETRY",
                d.redis_retry,
                Duration::ZERO,
                MAX_REDIS_RETRY,
            ),
            local_filter: p.flag("DEDUP_LOCAL_FILTER", d.local_filter),
        };
        if let Err(e) = cfg.generation_params() {
            p.problem("DEDUP_EXPECTED_ITEMS", e);
        }
        cfg
    }

    /// The shape of one generation's filter: n items at p/2, so that a check
    /// of two generations stays near p.
    pub fn generation_params(&self) -> Result<BloomParams, String> {
        BloomParams::for_items(self.expected_items, self.fp_rate / 2.0)
    }

    /// Checks what a config built in code may have got wrong.
    pub fn validate(&self) -> Result<BloomParams, String> {
        if self.window < Duration::from_millis(1) {
            return Err("the dedup window must be at least 1 ms".into());
        }
        self.generation_params()
    }
}

fn duration_in(
    p: &mut Parser<'_>,
    name: &str,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Duration {
    let v = p.duration(name, default);
    if v < min || v > max {
        p.problem(
            name,
            format!("{v:?} is out of range; expected {min:?} to {max:?}"),
        );
        return default;
    }
    v
}

impl fmt::Display for DedupConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected_items={} fp_rate={} window={:?} redis_retry={:?} local_filter={}",
            self.expected_items, self.fp_rate, self.window, self.redis_retry, self.local_filter
        )?;
        if let Ok(params) = self.generation_params() {
            write!(f, " filter=[{params}]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use fantasy_config::Env;

    use super::*;

    #[test]
    fn defaults_apply_when_unset() {
        let env = Env::default();
        let mut p = Parser::new(&env);
        let cfg = DedupConfig::from_env(&mut p);
        p.finish().unwrap();
        assert_eq!(cfg, DedupConfig::default());
        assert_eq!(cfg.expected_items, 1_000_000);
        assert_eq!(cfg.window, Duration::from_secs(86_400));
        let params = cfg.validate().unwrap();
        assert_eq!(params.hashes, 11);
        assert!(cfg.to_string().contains("hashes"), "{cfg}");
    }

    #[test]
    fn values_are_read_and_ranges_checked() {
        let env = Env::from_pairs([
            ("DEDUP_EXPECTED_ITEMS", "5000"),
            ("DEDUP_FP_RATE", "0.01"),
            ("DEDUP_WINDOW", "1h"),
            ("DEDUP_LOCAL_FILTER", "false"),
        ]);
        let mut p = Parser::new(&env);
        let cfg = DedupConfig::from_env(&mut p);
        p.finish().unwrap();
        assert_eq!(cfg.expected_items, 5000);
        assert_eq!(cfg.fp_rate, 0.01);
        assert_eq!(cfg.window, Duration::from_secs(3600));
        assert!(!cfg.local_filter);

        let env = Env::from_pairs([
            ("DEDUP_EXPECTED_ITEMS", "0"),
            ("DEDUP_FP_RATE", "1.5"),
            ("DEDUP_WINDOW", "100ms"),
            ("DEDUP_REDIS_RETRY", "1h"),
        ]);
        let mut p = Parser::new(&env);
        DedupConfig::from_env(&mut p);
        let err = p.finish().unwrap_err();
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DEDUP_EXPECTED_ITEMS",
                "DEDUP_FP_RATE",
                "DEDUP_WINDOW",
                "DEDUP_REDIS_RETRY"
            ]
        );
    }

    /// `DEDUP_CLAIM_LEASE` served the two-step claim, since removed: left
    /// in an environment, it is not read (as no unknown variable is), so
    /// even a value once out of range changes nothing and stops nothing.
    #[test]
    fn the_removed_claim_lease_is_ignored() {
        let env = Env::from_pairs([("DEDUP_CLAIM_LEASE", "48h")]);
        let mut p = Parser::new(&env);
        let cfg = DedupConfig::from_env(&mut p);
        p.finish().unwrap();
        assert_eq!(cfg, DedupConfig::default());
    }

    #[test]
    fn a_filter_too_large_for_redis_is_refused() {
        let env = Env::from_pairs([
            ("DEDUP_EXPECTED_ITEMS", "1000000000"),
            ("DEDUP_FP_RATE", "0.000001"),
        ]);
        let mut p = Parser::new(&env);
        DedupConfig::from_env(&mut p);
        let err = p.finish().unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].name, "DEDUP_EXPECTED_ITEMS");
        assert!(err.to_string().contains("512 MiB"), "{err}");
    }
}
