//! The `file` source: replays historical games and results from a CSV or
//! NDJSON file, to back-fill the history the models train on.
//!
//! The columns (CSV header names, NDJSON keys) and an example of each format
//! are in `services/collector/FILES.md`. In short: `game_id`, `sport`,
//! `league`, `season`, `home_team`, `away_team`, `scheduled_at`, `status`,
//! `home_score`, `away_score`, `updated_at`; other columns are ignored.
//!
//! Records are read in file order, streaming, [`FileSourceConfig::batch_size`]
//! at a time. Each [`Batch`]'s cursor is the number of data records consumed
//! so far (`"2000"`); a CSV header and blank lines are not data records, a
//! malformed record is. [`Source::resume`] skips that many records, so a
//! restarted back-fill goes on where its last published batch ended, and the
//! source says [`Fetch::Done`] at the end of the file.
//!
//! A malformed record is logged (source, record and line number, reason),
//! counted in [`REJECTED_TOTAL`] and [`Batch::rejected`], and skipped; the
//! rest of the file is kept.
//!
//! Reading is blocking file I/O, and skipping to a cursor deep in a large file
//! can take a while, so it runs on tokio's blocking pool, never on the async
//! workers that drive the other sources.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use fantasy_messages::GameStatus;
use serde_json::{Map, Value};

use crate::source::{Batch, Fetch, Source, SourceGame};

/// Records per [`Batch`] unless configured otherwise: big enough that the
/// per-batch costs (a checkpoint write, a Kafka flush) are amortised over a
/// back-fill of millions of games, small enough that a batch is quick to
/// publish and a restart repeats little.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// Counter, labelled `source`: records a source could not read (malformed)
/// and skipped.
pub const REJECTED_TOTAL: &str = "collector_rejected_total";

/// The longest NDJSON line read; a longer one is rejected without being held
/// in memory, so a file with no newlines cannot make the collector read it
/// whole. A game record is a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How the file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated, with a header row naming the columns.
    Csv,
    /// One JSON object per line (blank lines are skipped).
    Ndjson,
}

impl FileFormat {
    /// The format's name: `csv` or `ndjson`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Ndjson => "ndjson",
        }
    }

    /// The format a file's extension says: `.csv`, or `.ndjson`/`.jsonl`
    /// (any case). Any other extension is an error.
    pub fn from_path(path: &Path) -> anyhow::Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(FileFormat::Csv),
            Some("ndjson" | "jsonl") => Ok(FileFormat::Ndjson),
            _ => bail!(
                "cannot tell the format of {}: expected a .csv, .ndjson or .jsonl file",
                path.display()
            ),
        }
    }
}

/// What the `file` source reads and how.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSourceConfig {
    /// The source's name (`file:/data/nba-2024.csv`): the checkpoint's key,
    /// the dedup's source, the label on metrics.
    pub name: String,
    /// The file to read.
    pub path: PathBuf,
    /// How the file is laid out.
    pub format: FileFormat,
    /// Records per batch (at least 1), [`DEFAULT_BATCH_SIZE`] by default.
    pub batch_size: usize,
    /// The sport of records without one (no column, or an empty cell).
    pub default_sport: Option<String>,
    /// The league of records without one (no column, or an empty cell).
    pub default_league: Option<String>,
}

impl FileSourceConfig {
    /// The config for `path` with the defaults: named `file:<path>`, the
    /// format its extension says, [`DEFAULT_BATCH_SIZE`], no default sport
    /// or league.
    pub fn for_path(path: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let path = path.into();
        Ok(Self {
            name: format!("file:{}", path.display()),
            format: FileFormat::from_path(&path)?,
            path,
            batch_size: DEFAULT_BATCH_SIZE,
            default_sport: None,
            default_league: None,
        })
    }
}

/// Replays a CSV or NDJSON file of games (see the module docs).
pub struct FileSource {
    cfg: Arc<FileSourceConfig>,
    /// Data records consumed so far; the open reader, when there is one, is
    /// positioned just after them. Without one (after `resume` to another
    /// position, or a read error) the next read reopens the file and skips
    /// this many records.
    position: u64,
    reader: Option<Records>,
    /// Whether the end of the file was reached (and logged) since the last
    /// move.
    finished: bool,
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSource")
            .field("cfg", &self.cfg)
            .field("position", &self.position)
            .field("open", &self.reader.is_some())
            .finish()
    }
}

impl FileSource {
    /// Opens the file (and for CSV checks its header): a missing or
    /// unreadable file, a CSV without a required column, or a batch size of
    /// 0 is an error.
    pub fn new(cfg: FileSourceConfig) -> anyhow::Result<Self> {
        if cfg.batch_size == 0 {
            bail!("{}: the batch size must be at least 1", cfg.name);
        }
        let reader = Records::open(&cfg)?;
        Ok(Self {
            cfg: Arc::new(cfg),
            position: 0,
            reader: Some(reader),
            finished: false,
        })
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn resume(&mut self, cursor: Option<&str>) -> anyhow::Result<()> {
        let position = match cursor {
            None => 0,
            Some(c) => c.parse::<u64>().map_err(|_| {
                anyhow::anyhow!(
                    "{}: cursor {c:?} is not a count of records (a non-negative integer)",
                    self.cfg.name
                )
            })?,
        };
        if position != self.position {
            // Reopened and skipped on the next read, on the blocking pool.
            self.reader = None;
            self.position = position;
            self.finished = false;
        }
        Ok(())
    }

    async fn next(&mut self) -> anyhow::Result<Fetch> {
        let cfg = Arc::clone(&self.cfg);
        let position = self.position;
        // Taken, not borrowed: if this future is dropped (shutdown) the
        // reader is lost with it, and the next call reopens the file at
        // `position`, which only moves once a batch is handed out.
        let reader = self.reader.take();
        let (reader, chunk) = tokio::task::spawn_blocking(move || {
            let mut reader = match reader {
                Some(r) => r,
                None => Records::open_at(&cfg, position)?,
            };
            let chunk = reader.read_batch(&cfg, position)?;
            anyhow::Ok((reader, chunk))
        })
        .await
        .context("the file reader task failed")??;
        self.reader = Some(reader);

        if chunk.consumed == 0 {
            if !self.finished {
                self.finished = true;
                tracing::info!(source = %self.cfg.name, records = self.position, "read to the end of the file");
            }
            return Ok(Fetch::Done);
        }
        self.position += chunk.consumed;
        for r in &chunk.rejected {
            tracing::warn!(
                source = %self.cfg.name,
                record = r.record,
                line = r.line,
                reason = %r.reason,
                "skipped a malformed record"
            );
        }
        let rejected = chunk.rejected.len();
        if rejected > 0 {
            metrics::counter!(REJECTED_TOTAL, "source" => self.cfg.name.clone())
                .increment(rejected as u64);
        }
        tracing::debug!(
            source = %self.cfg.name,
            games = chunk.games.len(),
            rejected,
            cursor = self.position,
            "read a batch"
        );
        Ok(Fetch::Batch(Batch {
            games: chunk.games,
            rejected,
            cursor: Some(self.position.to_string()),
            truth: Vec::new(),
        }))
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.cfg.path.display().to_string(),
            "format": self.cfg.format.as_str(),
            "records_read": self.position,
            "finished": self.finished,
        })
    }
}

/// What one batch read gave.
struct Chunk {
    games: Vec<SourceGame>,
    rejected: Vec<Rejected>,
    /// Data records consumed (games and rejected): 0 at the end of the file.
    consumed: u64,
}

/// A record that could not be read.
struct Rejected {
    /// Its number among the data records, from 1.
    record: u64,
    /// The line it starts on, from 1.
    line: u64,
    reason: String,
}

/// One data record as read, before it is checked.
struct Item {
    line: u64,
    record: Result<Raw, String>,
}

/// A record's fields as text, `None` when absent or empty.
#[derive(Default)]
struct Raw {
    game_id: Option<String>,
    sport: Option<String>,
    league: Option<String>,
    season: Option<String>,
    home_team: Option<String>,
    away_team: Option<String>,
    scheduled_at: Option<String>,
    status: Option<String>,
    home_score: Option<String>,
    away_score: Option<String>,
    updated_at: Option<String>,
}

/// An open file (or, for the fuzz targets, bytes in memory), positioned
/// after some data records.
#[derive(Debug)]
enum Records<R = File> {
    // Boxed: the csv reader carries its buffers inline.
    Csv(Box<CsvRecords<R>>),
    Ndjson(NdjsonRecords<R>),
}

impl Records {
    fn open(cfg: &FileSourceConfig) -> anyhow::Result<Self> {
        let file = File::open(&cfg.path)
            .with_context(|| format!("{}: cannot open {}", cfg.name, cfg.path.display()))?;
        Self::from_reader(cfg, file)
    }

    /// Opens the file and skips `position` data records (fewer when the file
    /// is shorter: the next read then finds its end).
    fn open_at(cfg: &FileSourceConfig, position: u64) -> anyhow::Result<Self> {
        let mut records = Self::open(cfg)?;
        for _ in 0..position {
            if !records.skip().with_context(|| read_error(cfg))? {
                break;
            }
        }
        Ok(records)
    }
}

impl<R: Read> Records<R> {
    /// Starts reading `reader` laid out as `cfg.format` (for CSV, reads and
    /// checks the header).
    fn from_reader(cfg: &FileSourceConfig, reader: R) -> anyhow::Result<Self> {
        Ok(match cfg.format {
            FileFormat::Csv => Records::Csv(Box::new(CsvRecords::new(cfg, reader)?)),
            FileFormat::Ndjson => Records::Ndjson(NdjsonRecords::new(reader)),
        })
    }

    /// Consumes one data record without reading it; false at the end.
    fn skip(&mut self) -> io::Result<bool> {
        match self {
            Records::Csv(r) => r.skip(),
            Records::Ndjson(r) => r.skip(),
        }
    }

    /// The next data record; `None` at the end.
    fn read(&mut self) -> io::Result<Option<Item>> {
        match self {
            Records::Csv(r) => r.read(),
            Records::Ndjson(r) => r.read(),
        }
    }

    /// Reads up to a batch of records; `position` is the count consumed
    /// before, to number the rejected ones.
    fn read_batch(&mut self, cfg: &FileSourceConfig, position: u64) -> anyhow::Result<Chunk> {
        let mut chunk = Chunk {
            games: Vec::with_capacity(cfg.batch_size.min(DEFAULT_BATCH_SIZE)),
            rejected: Vec::new(),
            consumed: 0,
        };
        while chunk.consumed < cfg.batch_size as u64 {
            let Some(item) = self.read().with_context(|| read_error(cfg))? else {
                break;
            };
            chunk.consumed += 1;
            match item.record.and_then(|raw| game(raw, cfg)) {
                Ok(g) => chunk.games.push(g),
                Err(reason) => chunk.rejected.push(Rejected {
                    record: position + chunk.consumed,
                    line: item.line,
                    reason,
                }),
            }
        }
        Ok(chunk)
    }
}

fn read_error(cfg: &FileSourceConfig) -> String {
    format!("{}: cannot read {}", cfg.name, cfg.path.display())
}

/// The column of each field in a CSV file.
#[derive(Debug)]
struct Columns {
    game_id: usize,
    sport: Option<usize>,
    league: Option<usize>,
    season: Option<usize>,
    home_team: usize,
    away_team: usize,
    scheduled_at: usize,
    status: Option<usize>,
    home_score: Option<usize>,
    away_score: Option<usize>,
    updated_at: Option<usize>,
    /// Fields in the header: a record with another count is malformed
    /// (its columns would be read shifted).
    width: usize,
}

#[derive(Debug)]
struct CsvRecords<R = File> {
    // The csv reader buffers on its own, so it gets the bare file.
    reader: csv::Reader<R>,
    columns: Columns,
    record: csv::ByteRecord,
}

impl<R: Read> CsvRecords<R> {
    fn new(cfg: &FileSourceConfig, file: R) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            // Records with the wrong field count are rejected one by one
            // (`Columns::width`) instead of failing the reader.
            .flexible(true)
            .from_reader(file);
        let header = reader.byte_headers().with_context(|| read_error(cfg))?;
        if header.is_empty() {
            bail!(
                "{}: {} has no header row naming the columns",
                cfg.name,
                cfg.path.display()
            );
        }
        let names: Vec<String> = header
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_owned())
            .collect();
        let find = |name: &str| names.iter().position(|n| n == name);
        let require = |name: &str| {
            find(name).with_context(|| {
                format!(
                    "{}: {} has no `{name}` column (the header is {names:?})",
                    cfg.name,
                    cfg.path.display()
                )
            })
        };
        let defaulted = |name: &str, default: &Option<String>| match (find(name), default) {
            (None, None) => Err(anyhow::anyhow!(
                "{}: {} has no `{name}` column and no default {name} is configured",
                cfg.name,
                cfg.path.display()
            )),
            (column, _) => Ok(column),
        };
        let columns = Columns {
            game_id: require("game_id")?,
            sport: defaulted("sport", &cfg.default_sport)?,
            league: defaulted("league", &cfg.default_league)?,
            season: find("season"),
            home_team: require("home_team")?,
            away_team: require("away_team")?,
            scheduled_at: require("scheduled_at")?,
            status: find("status"),
            home_score: find("home_score"),
            away_score: find("away_score"),
            updated_at: find("updated_at"),
            width: names.len(),
        };
        Ok(Self {
            reader,
            columns,
            record: csv::ByteRecord::new(),
        })
    }

    fn next_record(&mut self) -> io::Result<bool> {
        self.reader
            .read_byte_record(&mut self.record)
            .map_err(io::Error::other)
    }

    fn skip(&mut self) -> io::Result<bool> {
        self.next_record()
    }

    fn read(&mut self) -> io::Result<Option<Item>> {
        if !self.next_record()? {
            return Ok(None);
        }
        let line = self.record.position().map_or(0, csv::Position::line);
        Ok(Some(Item {
            line,
            record: self.raw(),
        }))
    }

    fn raw(&self) -> Result<Raw, String> {
        let c = &self.columns;
        if self.record.len() != c.width {
            return Err(format!(
                "{} fields where the header has {}",
                self.record.len(),
                c.width
            ));
        }
        let field = |name: &str, column: Option<usize>| -> Result<Option<String>, String> {
            let Some(bytes) = column.and_then(|i| self.record.get(i)) else {
                return Ok(None);
            };
            let text = std::str::from_utf8(bytes)
                .map_err(|_| format!("`{name}` is not valid UTF-8"))?
                .trim();
            Ok((!text.is_empty()).then(|| text.to_owned()))
        };
        Ok(Raw {
            game_id: field("game_id", Some(c.game_id))?,
            sport: field("sport", c.sport)?,
            league: field("league", c.league)?,
            season: field("season", c.season)?,
            home_team: field("home_team", Some(c.home_team))?,
            away_team: field("away_team", Some(c.away_team))?,
            scheduled_at: field("scheduled_at", Some(c.scheduled_at))?,
            status: field("status", c.status)?,
            home_score: field("home_score", c.home_score)?,
            away_score: field("away_score", c.away_score)?,
            updated_at: field("updated_at", c.updated_at)?,
        })
    }
}

#[derive(Debug)]
struct NdjsonRecords<R = File> {
    reader: BufReader<R>,
    /// Lines read so far, blank ones included.
    line: u64,
    buf: Vec<u8>,
}

/// One line as read.
enum Line {
    End,
    Blank,
    TooLong,
    Text,
}

impl<R: Read> NdjsonRecords<R> {
    fn new(file: R) -> Self {
        Self {
            reader: BufReader::new(file),
            line: 0,
            buf: Vec::new(),
        }
    }

    /// Reads the next line into `buf` (without its line ending), keeping at
    /// most [`MAX_LINE_BYTES`] of it.
    fn next_line(&mut self) -> io::Result<Line> {
        self.buf.clear();
        let mut any = false;
        let mut too_long = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            any = true;
            let (part, used, ended) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            if !too_long {
                if self.buf.len() + part.len() > MAX_LINE_BYTES {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            self.reader.consume(used);
            if ended {
                break;
            }
        }
        if !any {
            return Ok(Line::End);
        }
        self.line += 1;
        if too_long {
            return Ok(Line::TooLong);
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.line == 1 && self.buf.starts_with(b"\xef\xbb\xbf") {
            self.buf.drain(..3);
        }
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            return Ok(Line::Blank);
        }
        Ok(Line::Text)
    }

    fn skip(&mut self) -> io::Result<bool> {
        loop {
            match self.next_line()? {
                Line::End => return Ok(false),
                Line::Blank => continue,
                Line::TooLong | Line::Text => return Ok(true),
            }
        }
    }

    fn read(&mut self) -> io::Result<Option<Item>> {
        let record = loop {
            match self.next_line()? {
                Line::End => return Ok(None),
                Line::Blank => continue,
                Line::TooLong => break Err(format!("longer than {MAX_LINE_BYTES} bytes")),
                Line::Text => break self.raw(),
            }
        };
        Ok(Some(Item {
            line: self.line,
            record,
        }))
    }

    fn raw(&self) -> Result<Raw, String> {
        let text = std::str::from_utf8(&self.buf).map_err(|_| "not valid UTF-8".to_owned())?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON value: {e}"))?;
        let Value::Object(object) = value else {
            return Err("not a JSON object".into());
        };
        let field = |name: &str| json_text(&object, name);
        Ok(Raw {
            game_id: field("game_id")?,
            sport: field("sport")?,
            league: field("league")?,
            season: field("season")?,
            home_team: field("home_team")?,
            away_team: field("away_team")?,
            scheduled_at: field("scheduled_at")?,
            status: field("status")?,
            home_score: field("home_score")?,
            away_score: field("away_score")?,
            updated_at: field("updated_at")?,
        })
    }
}

/// A key's value as text: strings (trimmed) and numbers are read, `null`
/// and empty strings are absent, anything else is malformed.
fn json_text(object: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("`{name}` is not a string or a number: {other}")),
    }
}

/// Reads `bytes` as a whole file laid out as `cfg.format`, a batch of
/// `cfg.batch_size` at a time, as [`FileSource`] reads a file: the games and
/// the number of records rejected. For the fuzz targets (`fuzz/`), not part
/// of the API.
#[doc(hidden)]
pub fn read_bytes(cfg: &FileSourceConfig, bytes: &[u8]) -> anyhow::Result<(Vec<SourceGame>, u64)> {
    if cfg.batch_size == 0 {
        bail!("{}: the batch size must be at least 1", cfg.name);
    }
    let mut records = Records::from_reader(cfg, bytes)?;
    let (mut games, mut rejected, mut position) = (Vec::new(), 0, 0);
    loop {
        let chunk = records.read_batch(cfg, position)?;
        if chunk.consumed == 0 {
            return Ok((games, rejected));
        }
        position += chunk.consumed;
        rejected += chunk.rejected.len() as u64;
        games.extend(chunk.games);
    }
}

/// The number of data records in `bytes` as [`Source::resume`] counts them
/// when it skips (for the fuzz targets: it must agree with [`read_bytes`]).
#[doc(hidden)]
pub fn count_bytes(cfg: &FileSourceConfig, bytes: &[u8]) -> anyhow::Result<u64> {
    let mut records = Records::from_reader(cfg, bytes)?;
    let mut count = 0;
    while records.skip().with_context(|| read_error(cfg))? {
        count += 1;
    }
    Ok(count)
}

/// Checks a record and makes the game of it.
fn game(raw: Raw, cfg: &FileSourceConfig) -> Result<SourceGame, String> {
    let required = |v: Option<String>, name: &str| v.ok_or_else(|| format!("no `{name}`"));
    let game_id = required(raw.game_id, "game_id")?;
    let sport = raw
        .sport
        .or_else(|| cfg.default_sport.clone())
        .ok_or("no `sport` and no default sport")?;
    let league = raw
        .league
        .or_else(|| cfg.default_league.clone())
        .ok_or("no `league` and no default league")?;
    let home_team = required(raw.home_team, "home_team")?;
    let away_team = required(raw.away_team, "away_team")?;
    if home_team == away_team {
        return Err(format!("{home_team:?} plays itself"));
    }
    let scheduled_at = time(&required(raw.scheduled_at, "scheduled_at")?, "scheduled_at")?;
    let updated_at = match raw.updated_at {
        Some(t) => time(&t, "updated_at")?,
        None => scheduled_at,
    };
    let home_score = score(raw.home_score, "home_score")?;
    let away_score = score(raw.away_score, "away_score")?;
    let status = match raw.status {
        Some(s) => GameStatus::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
            format!("status {s:?} is not one of scheduled, in_progress, final, postponed")
        })?,
        None if home_score.is_some() && away_score.is_some() => GameStatus::Final,
        None => GameStatus::Scheduled,
    };
    if status == GameStatus::Final && (home_score.is_none() || away_score.is_none()) {
        return Err("a final without both scores".into());
    }
    let season = raw
        .season
        .unwrap_or_else(|| scheduled_at.year().to_string());
    Ok(SourceGame {
        event_id: game_id.clone(),
        game_id,
        sport,
        league,
        season,
        home_team,
        away_team,
        scheduled_at,
        status,
        home_score,
        away_score,
        updated_at,
    })
}

/// RFC 3339, or a `YYYY-MM-DD` date meaning its midnight UTC.
fn time(s: &str, name: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
        .ok_or_else(|| format!("`{name}` {s:?} is not an RFC 3339 time or a YYYY-MM-DD date"))
}

fn score(s: Option<String>, name: &str) -> Result<Option<u32>, String> {
    s.map(|s| {
        s.parse::<u32>()
            .map_err(|_| format!("`{name}` {s:?} is not a non-negative integer"))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FileSourceConfig {
        FileSourceConfig {
            name: "file:test".into(),
            path: PathBuf::from("test.csv"),
            format: FileFormat::Csv,
            batch_size: 10,
            default_sport: Some("basketball".into()),
            default_league: Some("nba".into()),
        }
    }

    fn raw() -> Raw {
        Raw {
            game_id: Some("g1".into()),
            home_team: Some("BOS".into()),
            away_team: Some("NY".into()),
            scheduled_at: Some("2024-10-22".into()),
            ..Raw::default()
        }
    }

    #[test]
    fn bytes_in_memory_read_as_the_file_does_and_skipping_counts_the_same() {
        for (format, bytes) in [
            (
                FileFormat::Csv,
                &include_bytes!("../fixtures/history/sample.csv")[..],
            ),
            (
                FileFormat::Ndjson,
                &include_bytes!("../fixtures/history/sample.ndjson")[..],
            ),
        ] {
            let cfg = FileSourceConfig {
                format,
                batch_size: 5,
                ..cfg()
            };
            let (games, rejected) = read_bytes(&cfg, bytes).unwrap();
            // The fixtures' 18 records: 12 games, 6 malformed (as the file
            // source's own tests find them).
            assert_eq!((games.len(), rejected), (12, 6), "{format:?}");
            assert_eq!(count_bytes(&cfg, bytes).unwrap(), 18, "{format:?}");
        }
    }

    #[test]
    fn a_date_is_midnight_utc_and_rfc3339_offsets_are_converted() {
        assert_eq!(
            time("2024-10-22", "t").unwrap().to_rfc3339(),
            "2024-10-22T00:00:00+00:00"
        );
        assert_eq!(
            time("2024-10-22T19:30:00-04:00", "t").unwrap().to_rfc3339(),
            "2024-10-22T23:30:00+00:00"
        );
        assert!(time("22/10/2024", "t").is_err());
        assert!(time("2024-13-01", "t").is_err());
    }

    #[test]
    fn the_status_defaults_from_the_scores() {
        let g = game(raw(), &cfg()).unwrap();
        assert_eq!(
            (g.status, g.season.as_str()),
            (GameStatus::Scheduled, "2024")
        );
        assert_eq!((g.sport.as_str(), g.league.as_str()), ("basketball", "nba"));
        assert_eq!(g.updated_at, g.scheduled_at);
        let g = game(
            Raw {
                home_score: Some("101".into()),
                away_score: Some("99".into()),
                ..raw()
            },
            &cfg(),
        )
        .unwrap();
        assert_eq!(g.final_score(), Some((101, 99)));
        let g = game(
            Raw {
                home_score: Some("3".into()),
                ..raw()
            },
            &cfg(),
        )
        .unwrap();
        assert_eq!(g.status, GameStatus::Scheduled);
    }

    #[test]
    fn contradictions_are_rejected() {
        let final_without_scores = Raw {
            status: Some("final".into()),
            home_score: Some("3".into()),
            ..raw()
        };
        assert!(game(final_without_scores, &cfg()).is_err());
        let negative = Raw {
            home_score: Some("-3".into()),
            ..raw()
        };
        let reason = game(negative, &cfg()).err().unwrap();
        assert!(reason.contains("\"-3\""), "{reason}");
        let itself = Raw {
            away_team: Some("BOS".into()),
            ..raw()
        };
        assert!(game(itself, &cfg()).is_err());
        let no_defaults = FileSourceConfig {
            default_league: None,
            ..cfg()
        };
        let reason = game(raw(), &no_defaults).err().unwrap();
        assert!(reason.contains("league"), "{reason}");
    }
}
