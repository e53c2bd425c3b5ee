//! The collector's settings, and the source specs of `COLLECTOR_SOURCES`.
//!
//! `COLLECTOR_SOURCES` lists sources separated by commas or white space, each
//! `kind:argument[?option=value&...]`; its name (the checkpoint key, the
//! dedup's source, the metrics label) is `kind:argument`:
//!
//! | kind | argument | options (default) |
//! | --- | --- | --- |
//! | `sim` | the league, e.g. `nba` | `seed` (1), `teams` (30), `games` (82 per team), `season` (`sim-<seed>`), `minutes` (10: wall time of the season after its history; 0 plays it at once), `history` (0: rounds played at once at the start, as a back-fill), `batch` (1000), `regime_round` (none), `spread` (0.6: the standard deviation of the teams' strengths, in logits) |
//! | `espn` | `<sport>/<league>`, e.g. `basketball/nba` | `base` (`https://site.api.espn.com/apis/site/v2/sports`), `interval` (30s), `rps` (1: requests per second, retries included), `burst` (1), `timeout` (10s), `retries` (5) |
//! | `file` | a path to `.csv` or `.ndjson` (see FILES.md) | `batch` (1000), `sport`, `league` (when the file has no such column) |
//!
//! Example: `sim:nba?minutes=5, espn:basketball/nba?interval=60s, file:/data/nba-2024.csv`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use fantasy_cache::RedisConfig;
use fantasy_config::{ConfigError, Env, Parser, parse_duration};
use fantasy_db::DbConfig;
use fantasy_dedup::DedupConfig;
use fantasy_features::EloParams;
use fantasy_http::HttpConfig;
use fantasy_kafka::KafkaConfig;
use fantasy_sim::SimConfig;
use fantasy_telemetry::TelemetryConfig;

use crate::file_source::{FileFormat, FileSourceConfig};
use crate::http_source::HttpSourceConfig;
use crate::sim_source::SimSourceConfig;

/// The collector's port.
pub const DEFAULT_PORT: u16 = 8082;

/// The ESPN site API's scoreboard root.
pub const ESPN_BASE: &str = "https://site.api.espn.com/apis/site/v2/sports";

/// One configured source.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    Sim(SimSourceConfig),
    Http(HttpSourceConfig),
    File(FileSourceConfig),
}

impl SourceSpec {
    pub fn name(&self) -> &str {
        match self {
            SourceSpec::Sim(c) => &c.name,
            SourceSpec::Http(c) => &c.name,
            SourceSpec::File(c) => &c.name,
        }
    }

    /// Reads one `kind:argument?options` spec.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (head, query) = match spec.split_once('?') {
            Some((h, q)) => (h, q),
            None => (spec, ""),
        };
        let (kind, arg) = head
            .split_once(':')
            .ok_or_else(|| format!("{spec:?}: expected kind:argument (sim:, espn:, file:)"))?;
        if arg.is_empty() {
            return Err(format!("{spec:?}: the {kind} source needs an argument"));
        }
        let name = format!("{kind}:{arg}");
        let mut opts = Options::parse(&name, query)?;
        let parsed = match kind {
            "sim" => {
                let seed: u64 = opts.get("seed", 1)?;
                let d = SimConfig::default();
                let season = SimConfig {
                    seed,
                    sport: arg.to_ascii_lowercase(),
                    league: arg.to_ascii_uppercase(),
                    season: opts
                        .string("season")
                        .unwrap_or_else(|| format!("sim-{seed}")),
                    teams: opts.get("teams", d.teams)?,
                    games_per_team: opts.get("games", d.games_per_team)?,
                    regime_change_round: opts.get_opt("regime_round")?,
                    strength_sd: opts.get("spread", d.strength_sd)?,
                    ..d
                };
                if !(0.0..=5.0).contains(&season.strength_sd) {
                    return Err(format!("{name}: spread must be 0..=5 (logits)"));
                }
                if !(2..=1000).contains(&season.teams) {
                    return Err(format!("{name}: teams must be 2..=1000"));
                }
                let minutes: f64 = opts.get("minutes", 10.0)?;
                if !(0.0..=1e6).contains(&minutes) {
                    return Err(format!("{name}: minutes must be 0..=1000000"));
                }
                SourceSpec::Sim(SimSourceConfig {
                    name,
                    season,
                    season_duration: Duration::from_secs_f64(minutes * 60.0),
                    history_rounds: opts.get_ranged("history", 0, 0..=100_000)?,
                    batch_size: opts.get_ranged("batch", 1000, 1..=100_000)?,
                })
            }
            "espn" => {
                let (sport, league) = arg
                    .split_once('/')
                    .filter(|(s, l)| !s.is_empty() && !l.is_empty() && !l.contains('/'))
                    .ok_or_else(|| format!("{name}: expected espn:<sport>/<league>"))?;
                let base = opts.string("base").unwrap_or_else(|| ESPN_BASE.to_owned());
                let url = format!("{}/{sport}/{league}/scoreboard", base.trim_end_matches('/'));
                let mut c = HttpSourceConfig::new(
                    name.clone(),
                    url,
                    sport.to_ascii_lowercase(),
                    league.to_ascii_lowercase(),
                );
                c.poll_interval = opts.duration("interval", c.poll_interval)?;
                c.rate_per_second = opts.get("rps", c.rate_per_second)?;
                if !(c.rate_per_second > 0.0 && c.rate_per_second <= 1000.0) {
                    return Err(format!("{name}: rps must be in (0, 1000]"));
                }
                c.burst = opts.get_ranged("burst", c.burst, 1..=1000)?;
                c.timeout =
                    Some(opts.duration("timeout", c.timeout.unwrap_or(Duration::from_secs(10)))?);
                c.max_retries = opts.get_ranged("retries", c.max_retries, 0..=100)?;
                SourceSpec::Http(c)
            }
            "file" => {
                let path = PathBuf::from(arg);
                let format = FileFormat::from_path(&path).map_err(|e| format!("{name}: {e}"))?;
                SourceSpec::File(FileSourceConfig {
                    name,
                    path,
                    format,
                    batch_size: opts.get_ranged("batch", 1000, 1..=100_000)?,
                    default_sport: opts.string("sport"),
                    default_league: opts.string("league"),
                })
            }
            other => {
                return Err(format!(
                    "{spec:?}: unknown source kind {other:?} (sim, espn, file)"
                ));
            }
        };
        opts.finish()?;
        Ok(parsed)
    }

    /// Whether replica `shard` (1-based) of `shards` runs this source: a
    /// stable hash of the name, so adding a source moves no other.
    pub fn runs_on(&self, shard: u32, shards: u32) -> bool {
        shard_of(self.name(), shards) == shard
    }
}

/// The replica (1-based) of `shards` that runs the source `name`.
pub fn shard_of(name: &str, shards: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % u64::from(shards.max(1))) as u32 + 1
}

/// A spec's options, each to be taken once; leftovers are errors.
struct Options {
    name: String,
    values: BTreeMap<String, String>,
}

impl Options {
    fn parse(name: &str, query: &str) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{name}: option {pair:?} is not key=value"))?;
            if values.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err(format!("{name}: option {k} given twice"));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            values,
        })
    }

    fn string(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    fn get_opt<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>, String> {
        self.values
            .remove(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("{}: option {key}={v:?} is not valid", self.name))
            })
            .transpose()
    }

    fn get<T: std::str::FromStr>(&mut self, key: &str, default: T) -> Result<T, String> {
        Ok(self.get_opt(key)?.unwrap_or(default))
    }

    fn get_ranged<T>(
        &mut self,
        key: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, String>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Debug,
    {
        let v = self.get(key, default)?;
        if !range.contains(&v) {
            return Err(format!("{}: option {key} must be in {range:?}", self.name));
        }
        Ok(v)
    }

    fn duration(&mut self, key: &str, default: Duration) -> Result<Duration, String> {
        match self.values.remove(key) {
            None => Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| format!("{}: option {key}: {e}", self.name)),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(k) => Err(format!("{}: unknown option {k:?}", self.name)),
        }
    }
}

/// Everything the collector reads at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    pub telemetry: TelemetryConfig,
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
    pub db: DbConfig,
    pub dedup: DedupConfig,
    /// `COLLECTOR_SOURCES`: every source of the deployment (each replica
    /// runs its share).
    pub sources: Vec<SourceSpec>,
    /// `COLLECTOR_SHARD` (1-based, Swarm's `{{.Task.Slot}}`), or
    /// `COLLECTOR_SHARD_INDEX` + 1 (0-based, a StatefulSet pod's index), of
    /// `COLLECTOR_SHARDS`.
    pub shard: u32,
    pub shards: u32,
    /// `ELO_K`, `ELO_HOME_ADVANTAGE`: how the ratings behind the features
    /// move (the trainer must use the same).
    pub elo: EloParams,
    /// `COLLECTOR_RETRY_MAX`: the longest back-off between attempts at a
    /// failing batch or source.
    pub retry_max: Duration,
    /// `SHUTDOWN_TIMEOUT`: how long shutdown waits for batches in flight.
    pub shutdown_timeout: Duration,
    /// `DEDUP_RETENTION`: how long the exact store keeps a version's key.
    /// A version that comes again after that is published again, so keep it
    /// longer than any source re-sends old records (and than two windows).
    pub dedup_retention: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut p = Parser::new(env);
        let raw = p.string("COLLECTOR_SOURCES", "");
        let mut sources = Vec::new();
        let mut names = HashSet::new();
        for spec in raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            match SourceSpec::parse(spec) {
                Ok(s) => {
                    if !names.insert(s.name().to_owned()) {
                        p.problem("COLLECTOR_SOURCES", format!("{} is listed twice", s.name()));
                    }
                    sources.push(s);
                }
                Err(e) => p.problem("COLLECTOR_SOURCES", e),
            }
        }
        if raw.trim().is_empty() {
            p.problem(
                "COLLECTOR_SOURCES",
                "no sources: set e.g. COLLECTOR_SOURCES=sim:nba or espn:basketball/nba",
            );
        }
        let shards: u32 = p.ranged("COLLECTOR_SHARDS", 1, 1..=1024);
        // Swarm numbers its tasks from 1 (`{{.Task.Slot}}`), a Kubernetes
        // StatefulSet its pods from 0 (the `apps.kubernetes.io/pod-index`
        // label): either may name the shard.
        let shard: u32 = match p.parse_opt::<u32>("COLLECTOR_SHARD_INDEX") {
            Some(_) if p.env().get("COLLECTOR_SHARD").is_some() => {
                p.problem(
                    "COLLECTOR_SHARD_INDEX",
                    "both COLLECTOR_SHARD and COLLECTOR_SHARD_INDEX are set; set only one",
                );
                1
            }
            Some(index) if index < shards => index + 1,
            Some(index) => {
                p.problem(
                    "COLLECTOR_SHARD_INDEX",
                    format!("{index} is beyond COLLECTOR_SHARDS ({shards}); indices count from 0"),
                );
                1
            }
            None => p.ranged("COLLECTOR_SHARD", 1, 1..=1024),
        };
        if shard > shards {
            p.problem(
                "COLLECTOR_SHARD",
                format!("{shard} is beyond COLLECTOR_SHARDS ({shards}); shards count from 1"),
            );
        }
        let d = EloParams::default();
        let cfg = Self {
            telemetry: TelemetryConfig::from_env(&mut p, "collector"),
            http: HttpConfig::from_env(&mut p, DEFAULT_PORT),
            kafka: KafkaConfig::from_env(&mut p, "collector"),
            redis: RedisConfig::from_env(&mut p),
            db: DbConfig::from_env(&mut p),
            dedup: DedupConfig::from_env(&mut p),
            sources,
            shard,
            shards,
            elo: EloParams {
                k: p.parse("ELO_K", d.k),
                home_advantage: p.parse("ELO_HOME_ADVANTAGE", d.home_advantage),
                ..d
            },
            retry_max: p.duration("COLLECTOR_RETRY_MAX", Duration::from_secs(30)),
            shutdown_timeout: p.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(10)),
            dedup_retention: p.duration("DEDUP_RETENTION", Duration::from_secs(30 * 24 * 3600)),
        };
        if cfg.dedup_retention < cfg.dedup.window * 2 {
            p.problem(
                "DEDUP_RETENTION",
                format!(
                    "{:?} is shorter than two DEDUP_WINDOWs ({:?}): the exact store would forget keys the filters still hold",
                    cfg.dedup_retention,
                    cfg.dedup.window * 2
                ),
            );
        }
        if !(cfg.elo.k > 0.0 && cfg.elo.k <= 200.0) {
            p.problem("ELO_K", "must be in (0, 200]");
        }
        if !cfg.elo.home_advantage.is_finite() || cfg.elo.home_advantage.abs() > 400.0 {
            p.problem("ELO_HOME_ADVANTAGE", "must be within ±400 rating points");
        }
        p.finish()?;
        Ok(cfg)
    }

    /// The sources this replica runs.
    pub fn my_sources(&self) -> impl Iterator<Item = &SourceSpec> {
        self.sources
            .iter()
            .filter(|s| s.runs_on(self.shard, self.shards))
    }

    pub fn log(&self) {
        let mine: Vec<&str> = self.my_sources().map(SourceSpec::name).collect();
        tracing::info!(
            http = %self.http,
            kafka = %self.kafka,
            redis = %self.redis,
            db = %self.db.redacted_url(),
            dedup = ?self.dedup,
            shard = self.shard,
            shards = self.shards,
            sources = ?mine,
            elo = ?self.elo,
            "effective configuration"
        );
    }
}

fantasy_http::service_config!(Config);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn specs_are_read_with_their_options() {
        let SourceSpec::Sim(s) = SourceSpec::parse("sim:nba?seed=7&teams=10&minutes=0").unwrap()
        else {
            panic!("not sim");
        };
        assert_eq!(
            (s.name.as_str(), s.season.seed, s.season.teams),
            ("sim:nba", 7, 10)
        );
        assert_eq!(s.season_duration, Duration::ZERO);
        let SourceSpec::Http(h) =
            SourceSpec::parse("espn:basketball/nba?base=http://x:1/&interval=5s&rps=0.5").unwrap()
        else {
            panic!("not espn");
        };
        assert_eq!(h.url, "http://x:1/basketball/nba/scoreboard");
        assert_eq!((h.sport.as_str(), h.league.as_str()), ("basketball", "nba"));
        assert_eq!(h.poll_interval, Duration::from_secs(5));
        assert_eq!(h.rate_per_second, 0.5);
        let SourceSpec::File(f) =
            SourceSpec::parse("file:/data/h.ndjson?batch=10&league=nba").unwrap()
        else {
            panic!("not file");
        };
        assert_eq!(f.format, FileFormat::Ndjson);
        assert_eq!(
            (f.batch_size, f.default_league.as_deref()),
            (10, Some("nba"))
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, says) in [
            ("nba", "kind:argument"),
            ("ftp:x", "unknown source kind"),
            ("sim:nba?teamz=3", "unknown option \"teamz\""),
            ("sim:nba?teams=1", "teams must be"),
            ("sim:nba?seed=x", "seed=\"x\" is not valid"),
            ("espn:nba", "espn:<sport>/<league>"),
            ("espn:basketball/nba?rps=0", "rps must be"),
            ("espn:basketball/nba?interval=soon", "interval"),
            ("file:/data/h.txt", "file:/data/h.txt"),
            ("sim:nba?seed=1&seed=2", "given twice"),
        ] {
            let e = SourceSpec::parse(spec).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn the_configuration_needs_sources_and_a_shard_within_the_shards() {
        let e = Config::from_env(&env(&[])).unwrap_err().to_string();
        assert!(e.contains("COLLECTOR_SOURCES"), "{e}");
        let e = Config::from_env(&env(&[
            ("COLLECTOR_SOURCES", "sim:nba, sim:nba"),
            ("COLLECTOR_SHARDS", "2"),
            ("COLLECTOR_SHARD", "3"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("listed twice") && e.contains("COLLECTOR_SHARD"),
            "{e}"
        );
        let e = Config::from_env(&env(&[
            ("COLLECTOR_SOURCES", "sim:nba"),
            ("DEDUP_WINDOW", "24h"),
            ("DEDUP_RETENTION", "36h"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("DEDUP_RETENTION") && e.contains("two DEDUP_WINDOW"),
            "{e}"
        );
        let cfg = Config::from_env(&env(&[("COLLECTOR_SOURCES", "sim:nba,sim:nfl")])).unwrap();
        assert_eq!(cfg.my_sources().count(), 2, "one replica runs everything");
    }

    #[test]
    fn a_statefulset_pod_index_names_the_shard_from_zero() {
        let with = |pairs: &[(&str, &str)]| {
            let mut all = vec![("COLLECTOR_SOURCES", "sim:nba"), ("COLLECTOR_SHARDS", "3")];
            all.extend_from_slice(pairs);
            Config::from_env(&env(&all))
        };
        assert_eq!(with(&[("COLLECTOR_SHARD_INDEX", "0")]).unwrap().shard, 1);
        assert_eq!(with(&[("COLLECTOR_SHARD_INDEX", "2")]).unwrap().shard, 3);
        assert_eq!(with(&[("COLLECTOR_SHARD", "2")]).unwrap().shard, 2);
        let e = with(&[("COLLECTOR_SHARD_INDEX", "3")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("COLLECTOR_SHARD_INDEX") && e.contains("from 0"),
            "{e}"
        );
        let e = with(&[("COLLECTOR_SHARD_INDEX", "1"), ("COLLECTOR_SHARD", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("set only one"), "{e}");
    }

    #[test]
    fn every_source_falls_to_exactly_one_shard() {
        let names: Vec<String> = (0..200).map(|i| format!("espn:s/l{i}")).collect();
        for shards in 1..=5u32 {
            let mut per = vec![0; shards as usize];
            for n in &names {
                let s = shard_of(n, shards);
                assert!((1..=shards).contains(&s));
                per[(s - 1) as usize] += 1;
            }
            assert!(per.iter().all(|c| *c > 0), "{shards}: {per:?}");
        }
        // Stable: the same name, the same shard, whatever else is listed.
        assert_eq!(
            shard_of("espn:basketball/nba", 3),
            shard_of("espn:basketball/nba", 3)
        );
    }
}
