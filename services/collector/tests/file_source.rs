//! The `file` source read end to end from real files: the fixtures under
//! `fixtures/history/` (described in FILES.md) and files written to a
//! temporary directory.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test's failure

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use collector::file_source::{
    DEFAULT_BATCH_SIZE, FileFormat, FileSource, FileSourceConfig, REJECTED_TOTAL,
};
use collector::source::{Batch, Fetch, Source, SourceGame};
use fantasy_messages::GameStatus;
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/history")
        .join(name)
}

fn source(path: &Path, batch_size: usize) -> FileSource {
    let cfg = FileSourceConfig {
        batch_size,
        ..FileSourceConfig::for_path(path).unwrap()
    };
    FileSource::new(cfg).unwrap()
}

/// Every batch up to `Done`, checking that `Done` stays `Done`.
async fn batches(source: &mut FileSource) -> Vec<Batch> {
    let mut out = Vec::new();
    loop {
        match source.next().await.unwrap() {
            Fetch::Batch(b) => out.push(b),
            Fetch::Done => break,
            Fetch::Wait(d) => panic!("a file source waited {d:?}"),
        }
        assert!(out.len() < 100_000, "the source never said Done");
    }
    assert_eq!(source.next().await.unwrap(), Fetch::Done);
    out
}

fn games(batches: &[Batch]) -> Vec<SourceGame> {
    batches.iter().flat_map(|b| b.games.clone()).collect()
}

fn rejected(batches: &[Batch]) -> usize {
    batches.iter().map(|b| b.rejected).sum()
}

fn ids(games: &[SourceGame]) -> Vec<&str> {
    games.iter().map(|g| g.game_id.as_str()).collect()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const SAMPLE_IDS: [&str; 12] = [
    "nba-0001", "nba-0002", "nba-0004", "nba-0005", "nba-0007", "nba-0008", "nba-0010", "nhl-0001",
    "nhl-0002", "nhl-0004", "nhl-0005", "nhl-0006",
];

#[tokio::test]
async fn csv_and_ndjson_fixtures_give_the_same_games() {
    let csv = batches(&mut source(&fixture("sample.csv"), DEFAULT_BATCH_SIZE)).await;
    let ndjson = batches(&mut source(&fixture("sample.ndjson"), DEFAULT_BATCH_SIZE)).await;
    assert_eq!(games(&csv), games(&ndjson));
    assert_eq!(ids(&games(&csv)), SAMPLE_IDS);

    let all = games(&csv);
    let by_id = |id: &str| all.iter().find(|g| g.game_id == id).unwrap().clone();
    assert_eq!(
        by_id("nba-0001"),
        SourceGame {
            event_id: "nba-0001".into(),
            game_id: "nba-0001".into(),
            sport: "basketball".into(),
            league: "nba".into(),
            season: "2025".into(),
            home_team: "BOS".into(),
            away_team: "NY".into(),
            scheduled_at: at("2024-10-22T23:30:00Z"),
            status: GameStatus::Final,
            home_score: Some(132),
            away_score: Some(109),
            updated_at: at("2024-10-23T02:05:00Z"),
        }
    );
    // A date alone, no season and no status: a final at midnight UTC of the
    // scheduled year, updated when scheduled.
    let defaulted = by_id("nba-0004");
    assert_eq!(
        (
            defaulted.scheduled_at,
            defaulted.season.as_str(),
            defaulted.status,
            defaulted.final_score(),
            defaulted.updated_at
        ),
        (
            Utc.with_ymd_and_hms(2024, 10, 23, 0, 0, 0).unwrap(),
            "2024",
            GameStatus::Final,
            Some((120, 116)),
            Utc.with_ymd_and_hms(2024, 10, 23, 0, 0, 0).unwrap()
        )
    );
    assert_eq!(by_id("nba-0010").scheduled_at, at("2024-10-24T02:00:00Z"));
    let scheduled = by_id("nba-0008");
    assert_eq!(
        (scheduled.status, scheduled.home_score, scheduled.away_score),
        (GameStatus::Scheduled, None, None)
    );
    assert_eq!(by_id("nba-0007").status, GameStatus::Postponed);
    assert_eq!(by_id("nba-0005").status, GameStatus::InProgress);
    assert_eq!(by_id("nhl-0005").home_team, "TB");
    assert_eq!(by_id("nhl-0006").final_score(), Some((0, 6)));
}

#[tokio::test]
async fn the_fixtures_reject_exactly_their_malformed_records() {
    for name in ["sample.csv", "sample.ndjson"] {
        let mut s = source(&fixture(name), DEFAULT_BATCH_SIZE);
        let all = batches(&mut s).await;
        let progress = s.describe();
        assert_eq!(
            (&progress["records_read"], &progress["finished"]),
            (&serde_json::json!(18), &serde_json::json!(true)),
            "{name}: {progress}"
        );
        assert_eq!(all.len(), 1, "{name}");
        assert_eq!(
            (
                all[0].games.len(),
                all[0].rejected,
                all[0].cursor.as_deref()
            ),
            (12, 6, Some("18")),
            "{name}"
        );
    }
}

/// A file of `n` valid games `g0`, `g1`, ..., with malformed records after
/// every game whose index is in `bad_after`.
fn write_csv(dir: &Path, n: usize, bad_after: &[usize]) -> PathBuf {
    let mut text = String::from("game_id,sport,league,home_team,away_team,scheduled_at\n");
    for i in 0..n {
        writeln!(
            text,
            "g{i},basketball,nba,H{i},A{i},2024-10-22T23:{:02}:00Z",
            i % 60
        )
        .unwrap();
        if bad_after.contains(&i) {
            writeln!(text, "bad{i},basketball,nba,H{i},A{i},not a date").unwrap();
        }
    }
    let path = dir.join("games.csv");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn batches_have_the_requested_size_and_count_records_in_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path(), 24, &[3]);
    let all = batches(&mut source(&path, 10)).await;
    let shape: Vec<(usize, usize, Option<&str>)> = all
        .iter()
        .map(|b| (b.games.len(), b.rejected, b.cursor.as_deref()))
        .collect();
    // 25 records: the malformed one takes a place in the first batch.
    assert_eq!(
        shape,
        [(9, 1, Some("10")), (10, 0, Some("20")), (5, 0, Some("25"))]
    );
    assert_eq!(all[1].games[0].game_id, "g9");

    // A file that ends on a batch boundary: the next call is Done.
    let path = write_csv(dir.path(), 20, &[]);
    let all = batches(&mut source(&path, 10)).await;
    let cursors: Vec<Option<&str>> = all.iter().map(|b| b.cursor.as_deref()).collect();
    assert_eq!(cursors, [Some("10"), Some("20")]);
}

#[tokio::test]
async fn resuming_from_a_cursor_gives_exactly_the_remainder() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path(), 30, &[0, 7, 8, 29]);
    let full = games(&batches(&mut source(&path, 1000)).await);
    assert_eq!(full.len(), 30);
    // Record positions: game `gi` sits after the malformed records before it.
    let record_of = |game: usize| game + [0, 7, 8, 29].iter().filter(|&&b| b < game).count();
    for cursor in 0..=40usize {
        for batch_size in [1, 4, 1000] {
            let mut s = source(&path, batch_size);
            s.resume(Some(&cursor.to_string())).unwrap();
            let rest = batches(&mut s).await;
            let expected: Vec<SourceGame> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| record_of(*i) >= cursor)
                .map(|(_, g)| g.clone())
                .collect();
            assert_eq!(games(&rest), expected, "cursor {cursor}");
            if let Some(first) = rest.first() {
                let first_cursor: usize = first.cursor.as_deref().unwrap().parse().unwrap();
                assert_eq!(
                    first_cursor,
                    (cursor + batch_size).min(34),
                    "cursor {cursor}"
                );
            } else {
                assert!(cursor >= 34, "nothing after cursor {cursor}");
            }
        }
    }
    // Resuming from the cursor of a batch read in the same process.
    let mut s = source(&path, 5);
    let Fetch::Batch(first) = s.next().await.unwrap() else {
        panic!("no first batch");
    };
    let mut again = source(&path, 5);
    again.resume(first.cursor.as_deref()).unwrap();
    let mut rest = first.games.clone();
    rest.extend(games(&batches(&mut again).await));
    assert_eq!(rest, full);
    // And `None` is the beginning, after the source has moved on.
    s.resume(None).unwrap();
    assert_eq!(games(&batches(&mut s).await), full);
}

/// A recorder that keeps counters by name and labels.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

struct Count(Arc<AtomicU64>);

impl metrics::CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl Counters {
    fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let count = Arc::clone(self.0.lock().unwrap().entry(name).or_default());
        metrics::Counter::from_arc(Arc::new(Count(count)))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn malformed_records_are_counted_and_skipped_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "game_id,sport,league,home_team,away_team,scheduled_at,status,home_score,away_score\n\
        ok1,basketball,nba,BOS,NY,2024-10-22,,,\n\
        ,basketball,nba,BOS,NY,2024-10-22,,,\n\
        no-away,basketball,nba,BOS,,2024-10-22,,,\n\
        bad-date,basketball,nba,BOS,NY,2024-02-30,,,\n\
        negative,basketball,nba,BOS,NY,2024-10-22,final,-1,3\n\
        text-score,basketball,nba,BOS,NY,2024-10-22,final,ten,3\n\
        half-final,basketball,nba,BOS,NY,2024-10-22,final,,3\n\
        itself,basketball,nba,BOS,BOS,2024-10-22,,,\n\
        odd-status,basketball,nba,BOS,NY,2024-10-22,cancelled,,\n\
        short,basketball,nba,BOS,NY\n\
        ok2,basketball,nba,LAL,MIN,2024-10-23T02:00:00Z,final,110,103\n";
    let mut csv = csv.as_bytes().to_vec();
    csv.extend_from_slice(
        b"bad-utf8,basketball,nba,BOS,N\xffY,2024-10-22,,,\nok3,basketball,nba,A,B,2024-10-24,,,\n",
    );
    let csv_path = dir.path().join("bad.csv");
    std::fs::write(&csv_path, csv).unwrap();

    let mut ndjson = String::new();
    for line in [
        r#"{"game_id": "ok1", "sport": "basketball", "league": "nba", "home_team": "BOS", "away_team": "NY", "scheduled_at": "2024-10-22"}"#,
        r#"{"sport": "basketball", "league": "nba", "home_team": "BOS", "away_team": "NY", "scheduled_at": "2024-10-22"}"#,
        r#"{"game_id": "no-away", "sport": "basketball", "league": "nba", "home_team": "BOS", "scheduled_at": "2024-10-22"}"#,
        r#"{"game_id": "bad-date", "sport": "basketball", "league": "nba", "home_team": "BOS", "away_team": "NY", "scheduled_at": "2024-02-30"}"#,
        r#"{"game_id": "negative", "sport": "basketball", "league": "nba", "home_team": "BOS", "away_team": "NY", "scheduled_at": "2024-10-22", "home_score": -1, "away_score": 3}"#,
        r#"{"game_id": "float-score", "sport": "basketball", "league": "nba", "home_team": "BOS", "away_team": "NY", "scheduled_at": "2024-10-22", "home_score": 1.5, "away_score": 3}"#,
        r#"{"game_id": "half-final", "sport": "basketball", "league": "nba", "home_team": "BOS", "away_team": "NY", "scheduled_at": "2024-10-22", "status": "final", "away_score": 3}"#,
        r#"{"game_id": "itself", "sport": "basketball", "league": "nba", "home_team": "BOS", "away_team": "BOS", "scheduled_at": "2024-10-22"}"#,
        r#"{"game_id": "list-team", "sport": "basketball", "league": "nba", "home_team": ["BOS"], "away_team": "NY", "scheduled_at": "2024-10-22"}"#,
        "",
        "   ",
        r#"["not", "an", "object"]"#,
        r#"{"game_id": "ok2", "sport": "basketball", "league": "nba", "home_team": "LAL", "away_team": "MIN", "scheduled_at": "2024-10-23T02:00:00Z", "home_score": 110, "away_score": 103}"#,
        "{not json",
    ] {
        ndjson.push_str(line);
        ndjson.push('\n');
    }
    let mut ndjson = ndjson.into_bytes();
    ndjson.extend_from_slice(b"{\"game_id\": \"bad-utf8\", \"home_team\": \"N\xffY\"}\r\n");
    ndjson.extend_from_slice(br#"{"game_id": "ok3", "sport": "basketball", "league": "nba", "home_team": "A", "away_team": "B", "scheduled_at": "2024-10-24"}"#);
    let ndjson_path = dir.path().join("bad.ndjson");
    std::fs::write(&ndjson_path, ndjson).unwrap();

    for (path, records, bad) in [(&csv_path, 13, 10), (&ndjson_path, 14, 11)] {
        let counters = Counters::default();
        let all = metrics::with_local_recorder(&counters, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async { batches(&mut source(path, 4)).await })
        });
        let name = format!("file:{}", path.display());
        assert_eq!(ids(&games(&all)), ["ok1", "ok2", "ok3"], "{name}");
        assert_eq!(rejected(&all), bad, "{name}");
        assert_eq!(
            all.last().unwrap().cursor,
            Some(records.to_string()),
            "{name}"
        );
        assert_eq!(
            counters.get(&format!("{REJECTED_TOTAL}{{source={name}}}")),
            bad as u64,
            "{name}"
        );
    }
}

/// A subscriber that keeps each warning as `field=value` pairs.
#[derive(Default)]
struct Warnings(Mutex<Vec<String>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        write!(self.0, "{}={value:?} ", field.name()).unwrap();
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() == tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_rejected_record_is_logged_with_the_source_its_position_and_the_reason() {
    let warnings = Arc::new(Warnings::default());
    let path = fixture("sample.ndjson");
    tracing::subscriber::with_default(Arc::clone(&warnings), || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut s = source(&path, 5);
                // Past the first three malformed records.
                s.resume(Some("10")).unwrap();
                batches(&mut s).await
            })
    });
    let logged = warnings.0.lock().unwrap().clone();
    assert_eq!(logged.len(), 3, "{logged:#?}");
    let source = format!("source=file:{}", path.display());
    // Record 11 is on line 12: the blank line after record 8 is not a record.
    for (entry, (record, line, reason)) in logged.iter().zip([
        ("record=11", "line=12", "plays itself"),
        ("record=14", "line=15", "not a JSON value"),
        ("record=18", "line=19", "no `game_id`"),
    ]) {
        for part in [source.as_str(), record, line, reason] {
            assert!(entry.contains(part), "{part:?} not in {entry}");
        }
    }
}

#[tokio::test]
async fn blank_ndjson_lines_are_skipped_silently_and_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("games.jsonl");
    let game = |id: &str| {
        format!(
            r#"{{"game_id": "{id}", "sport": "hockey", "league": "nhl", "home_team": "A", "away_team": "B", "scheduled_at": "2024-10-09"}}"#
        )
    };
    let text = format!("\n{}\n\n \t\n{}\r\n\r\n{}", game("a"), game("b"), game("c"));
    std::fs::write(&path, text).unwrap();
    let all = batches(&mut source(&path, 2)).await;
    let shape: Vec<(usize, usize, Option<&str>)> = all
        .iter()
        .map(|b| (b.games.len(), b.rejected, b.cursor.as_deref()))
        .collect();
    assert_eq!(shape, [(2, 0, Some("2")), (1, 0, Some("3"))]);
    let mut s = source(&path, 2);
    s.resume(Some("2")).unwrap();
    assert_eq!(ids(&games(&batches(&mut s).await)), ["c"]);
}

#[tokio::test]
async fn defaults_fill_an_absent_sport_and_league() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nba.csv");
    std::fs::write(
        &path,
        "game_id,home_team,away_team,scheduled_at,league\ng1,BOS,NY,2024-10-22,\ng2,BOS,NY,2024-10-23,wnba\n",
    )
    .unwrap();
    let plain = FileSourceConfig::for_path(&path).unwrap();
    let err = FileSource::new(plain.clone()).unwrap_err();
    assert!(format!("{err:#}").contains("`sport`"), "{err:#}");

    let cfg = FileSourceConfig {
        default_sport: Some("basketball".into()),
        default_league: Some("nba".into()),
        ..plain
    };
    let all = games(&batches(&mut FileSource::new(cfg).unwrap()).await);
    let leagues: Vec<(&str, &str)> = all
        .iter()
        .map(|g| (g.sport.as_str(), g.league.as_str()))
        .collect();
    assert_eq!(leagues, [("basketball", "nba"), ("basketball", "wnba")]);
}

#[test]
fn a_cursor_that_is_not_a_count_of_records_is_an_error() {
    let mut s = source(&fixture("sample.csv"), 10);
    for bad in ["", "abc", "-1", "1.5", "12 ", "0x10"] {
        let err = s.resume(Some(bad)).unwrap_err();
        assert!(format!("{err:#}").contains("cursor"), "{bad:?}: {err:#}");
    }
    s.resume(Some("0")).unwrap();
    s.resume(None).unwrap();
}

#[tokio::test]
async fn a_cursor_beyond_the_end_is_done() {
    let mut s = source(&fixture("sample.ndjson"), 10);
    s.resume(Some("18")).unwrap();
    assert_eq!(s.next().await.unwrap(), Fetch::Done);
    s.resume(Some("1000000")).unwrap();
    assert_eq!(s.next().await.unwrap(), Fetch::Done);
}

#[test]
fn a_missing_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere-2019.csv");
    let err = FileSource::new(FileSourceConfig::for_path(&path).unwrap()).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn the_extension_picks_the_format() {
    assert_eq!(
        FileFormat::from_path(Path::new("a/b.csv")).unwrap(),
        FileFormat::Csv
    );
    assert_eq!(
        FileFormat::from_path(Path::new("b.NDJSON")).unwrap(),
        FileFormat::Ndjson
    );
    assert_eq!(
        FileFormat::from_path(Path::new("b.jsonl")).unwrap(),
        FileFormat::Ndjson
    );
    for other in ["b.json", "b.tsv", "b", "csv"] {
        let err = FileFormat::from_path(Path::new(other)).unwrap_err();
        assert!(err.to_string().contains(other), "{err}");
    }
}

#[test]
fn a_csv_without_a_required_column_or_a_header_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.csv");
    std::fs::write(
        &path,
        "game_id,sport,league,home_team,scheduled_at\ng1,b,n,A,2024-01-01\n",
    )
    .unwrap();
    let err = FileSource::new(FileSourceConfig::for_path(&path).unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains("`away_team`"), "{err:#}");

    std::fs::write(&path, "").unwrap();
    let err = FileSource::new(FileSourceConfig::for_path(&path).unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains("header"), "{err:#}");
}

#[test]
fn a_batch_size_of_zero_is_an_error() {
    let cfg = FileSourceConfig {
        batch_size: 0,
        ..FileSourceConfig::for_path(fixture("sample.csv")).unwrap()
    };
    assert!(FileSource::new(cfg).is_err());
}

/// A valid game and how it is written: optional fields sometimes left out to
/// be defaulted.
fn game_strategy() -> impl Strategy<Value = (SourceGame, bool, bool, bool)> {
    let team = "[A-Z][A-Za-z ,\"']{0,6}[a-z]";
    let status = prop_oneof![
        Just(GameStatus::Scheduled),
        Just(GameStatus::InProgress),
        Just(GameStatus::Final),
        Just(GameStatus::Postponed),
    ];
    (
        (team, team).prop_filter("a team does not play itself", |(h, a)| h != a),
        status,
        (0u32..200, 0u32..200, any::<bool>(), any::<bool>()),
        0i64..4_000_000_000,
        0i64..1_000_000,
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((home, away), status, (hs, aws, has_h, has_a), start, lag, (season, st, upd))| {
                let final_ = status == GameStatus::Final;
                let home_score = (final_ || has_h).then_some(hs);
                let away_score = (final_ || has_a).then_some(aws);
                // The status can be left out when the default gives it back.
                let default_status = if home_score.is_some() && away_score.is_some() {
                    GameStatus::Final
                } else {
                    GameStatus::Scheduled
                };
                let write_status = st || status != default_status;
                let scheduled_at = Utc.timestamp_opt(start, 0).unwrap();
                let updated_at = if upd {
                    Utc.timestamp_opt(start + lag, 0).unwrap()
                } else {
                    scheduled_at
                };
                let game = SourceGame {
                    event_id: String::new(),
                    game_id: String::new(),
                    sport: "basketball".into(),
                    league: "nba".into(),
                    season: if season {
                        "2024-25".into()
                    } else {
                        chrono::Datelike::year(&scheduled_at).to_string()
                    },
                    home_team: home,
                    away_team: away,
                    scheduled_at,
                    status,
                    home_score,
                    away_score,
                    updated_at,
                };
                (game, season, write_status, upd)
            },
        )
}

proptest! {
        #[test]
    fn a_csv_read_from_any_cursor_gives_exactly_the_games_after_it(
        written in proptest::collection::vec(game_strategy(), 0..60),
        batch_size in 1usize..25,
        resume_at in 0usize..70,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("random.csv");
        let mut w = csv::Writer::from_path(&path).unwrap();
        w.write_record([
            "game_id", "sport", "league", "season", "home_team", "away_team",
            "scheduled_at", "status", "home_score", "away_score", "updated_at",
        ]).unwrap();
        let mut expected = Vec::new();
        for (i, (mut game, season, status, updated)) in written.into_iter().enumerate() {
            game.game_id = format!("game-{i}");
            game.event_id = game.game_id.clone();
            let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
            let score = |s: Option<u32>| s.map(|s| s.to_string()).unwrap_or_default();
            w.write_record([
                game.game_id.clone(),
                game.sport.clone(),
                game.league.clone(),
                if season { game.season.clone() } else { String::new() },
                game.home_team.clone(),
                game.away_team.clone(),
                time(game.scheduled_at),
                if status { game.status.as_str().to_owned() } else { String::new() },
                score(game.home_score),
                score(game.away_score),
                if updated { time(game.updated_at) } else { String::new() },
            ]).unwrap();
            expected.push(game);
        }
        w.flush().unwrap();
        drop(w);

        let read = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut s = source(&path, batch_size);
                s.resume(Some(&resume_at.to_string())).unwrap();
                batches(&mut s).await
            });
        let mut last = resume_at.min(expected.len());
        for b in &read {
            prop_assert!(!b.games.is_empty() && b.games.len() <= batch_size);
            prop_assert_eq!(b.rejected, 0);
            let cursor: usize = b.cursor.as_deref().unwrap().parse().unwrap();
            prop_assert_eq!(cursor, last + b.games.len());
            last = cursor;
        }
        prop_assert_eq!(last, expected.len());
        let rest = expected.get(resume_at..).unwrap_or_default();
        prop_assert_eq!(games(&read), rest.to_vec());
    }
}
