//! Typed configuration from environment variables.
//!
//! Services read their settings through an [`Env`], a snapshot of variables
//! taken once in `main` (tests build one from pairs: nothing reads global
//! state behind their back). A [`Parser`] reads typed values with named
//! defaults and *collects* every problem, so a bad start-up reports all the
//! bad variables at once, each by name with what was expected:
//!
//! ```
//! use fantasy_config::{Env, Parser};
//!
//! let env = Env::from_pairs([("WORKERS", "four")]);
//! let mut p = Parser::new(&env);
//! let workers: u32 = p.parse("WORKERS", 4);
//! let err = p.finish().unwrap_err();
//! assert_eq!(workers, 4);
//! assert!(err.to_string().contains("WORKERS"));
//! ```
//!
//! Secrets come from `NAME` or from the file named by `NAME_FILE` (the Docker
//! secrets convention) and are wrapped in [`Secret`], whose `Debug` and
//! `Display` never print the value. [`redact_url`] hides passwords in
//! connection URLs for the effective-configuration log line.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a configuration is read for; the defaults differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A service binary in a deployment: clients authenticate unless
    /// `AUTH_REQUIRED=false`.
    Service,
    /// The local all-in-one (`fantasy up`, `fantasy train`): no
    /// authentication unless `AUTH_REQUIRED=true`.
    Local,
}

/// A snapshot of environment variables.
///
/// It remembers every name looked up (set or not), shared by its clones, so
/// a deployment check can ask which variables a service reads
/// ([`names_read`](Self::names_read)).
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl fmt::Debug for Env {
    // Values may be secrets: list names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    /// The process environment (variables that are not valid UTF-8 are skipped).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            read: Arc::default(),
        }
    }

    /// An environment built in code, for tests and embedding.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            read: Arc::default(),
        }
    }

    /// Returns a copy with `name` set to `value`.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// The value of `name`; an empty or all-blank value counts as unset, as
    /// Compose files often write `NAME=` to mean "not set".
    pub fn get(&self, name: &str) -> Option<&str> {
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned());
        self.vars
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

impl Env {
    /// Every name looked up in this environment or a clone of it so far,
    /// set or not: after a service's `Config::from_env`, the variables that
    /// service reads.
    pub fn names_read(&self) -> BTreeSet<String> {
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A value that must not be printed: passwords, tokens, URLs with credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself; call it only where it is used, never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One bad variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable's name.
    pub name: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Every problem found while reading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order they were found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.name, p.message)?;
        }
        Ok(())
    }
}

/// Reads typed values from an [`Env`], collecting problems.
#[derive(Debug)]
pub struct Parser<'e> {
    env: &'e Env,
    problems: Vec<Problem>,
}

impl<'e> Parser<'e> {
    /// Starts reading `env`.
    pub fn new(env: &'e Env) -> Self {
        Self {
            env,
            problems: Vec::new(),
        }
    }

    /// The environment being read.
    pub fn env(&self) -> &'e Env {
        self.env
    }

    /// Records a problem found by the caller (a cross-field check, say).
    pub fn problem(&mut self, name: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            name: name.into(),
            message: message.into(),
        });
    }

    /// `name` parsed as `T`, or `default` when unset. A value that does not
    /// parse is recorded as a problem (and `default` returned so that reading
    /// goes on and finds the other problems too).
    pub fn parse<T>(&mut self, name: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.parse_opt(name).unwrap_or(default)
    }

    /// `name` parsed as `T`, or `None` when unset or bad (bad is recorded).
    pub fn parse_opt<T>(&mut self, name: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.env.get(name)?;
        match raw.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(
                    name,
                    format!("cannot use {:?}: {e}", truncate_for_message(raw)),
                );
                None
            }
        }
    }

    /// A string, or `default` when unset.
    pub fn string(&mut self, name: &str, default: &str) -> String {
        self.env.get(name).unwrap_or(default).trim().to_owned()
    }

    /// An optional string.
    pub fn string_opt(&mut self, name: &str) -> Option<String> {
        self.env.get(name).map(|v| v.trim().to_owned())
    }

    /// An integer in `range`, or `default` when unset.
    pub fn ranged<T>(&mut self, name: &str, default: T, range: std::ops::RangeInclusive<T>) -> T
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        match self.parse_opt::<T>(name) {
            Some(v) if range.contains(&v) => v,
            Some(v) => {
                self.problem(
                    name,
                    format!(
                        "{v} is out of range; expected {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
            None => default,
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), or `default`.
    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        let Some(raw) = self.env.get(name) else {
            return default;
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                self.problem(name, format!("cannot use {raw:?}: expected true or false"));
                default
            }
        }
    }

    /// A duration written as `250ms`, `5s`, `2m`, `1h` (a bare number is
    /// seconds), or `default` when unset.
    pub fn duration(&mut self, name: &str, default: Duration) -> Duration {
        let Some(raw) = self.env.get(name) else {
            return default;
        };
        match parse_duration(raw) {
            Ok(d) => d,
            Err(e) => {
                self.problem(name, format!("cannot use {raw:?}: {e}"));
                default
            }
        }
    }

    /// A URL whose scheme is one of `schemes`; `None` when unset or bad (bad
    /// is recorded).
    pub fn url_opt(&mut self, name: &str, schemes: &[&str]) -> Option<url::Url> {
        let raw = self.env.get(name)?.trim();
        self.check_url(name, raw, schemes)
    }

    fn check_url(&mut self, name: &str, raw: &str, schemes: &[&str]) -> Option<url::Url> {
        match url::Url::parse(raw) {
            Ok(u) if schemes.contains(&u.scheme()) => Some(u),
            Ok(u) => {
                self.problem(
                    name,
                    format!(
                        "scheme {:?} is not supported; expected one of {}",
                        u.scheme(),
                        schemes.join(", ")
                    ),
                );
                None
            }
            Err(e) => {
                self.problem(name, format!("cannot use {:?}: {e}", redact_url(raw)));
                None
            }
        }
    }

    /// A secret from `name`, or from the file named by `name_FILE`. Setting
    /// both is a problem (which one wins would be a guess); so is a file that
    /// cannot be read. A trailing newline in the file is dropped, as editors
    /// and `echo` add one.
    pub fn secret(&mut self, name: &str) -> Option<Secret> {
        let file_var = format!("{name}_FILE");
        match (self.env.get(name), self.env.get(&file_var)) {
            (Some(_), Some(_)) => {
                self.problem(
                    name,
                    format!("both {name} and {file_var} are set; set only one"),
                );
                None
            }
            (Some(v), None) => Some(Secret::new(v)),
            (None, Some(path)) => {
                let path = PathBuf::from(path.trim());
                match std::fs::read_to_string(&path) {
                    Ok(contents) => {
                        let value = contents.trim_end_matches(['\n', '\r']);
                        if value.is_empty() {
                            self.problem(&file_var, format!("{} is empty", path.display()));
                            None
                        } else {
                            Some(Secret::new(value))
                        }
                    }
                    Err(e) => {
                        self.problem(&file_var, format!("cannot read {}: {e}", path.display()));
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }

    /// A URL that may hold credentials: `name` or `name_FILE`, or `default`.
    /// Its scheme must be one of `schemes`.
    pub fn secret_url(&mut self, name: &str, default: &str, schemes: &[&str]) -> Secret {
        let value = self.secret(name).unwrap_or_else(|| Secret::new(default));
        if self.check_url(name, value.expose(), schemes).is_none() {
            return Secret::new(default);
        }
        value
    }

    /// [`secret_url`](Self::secret_url), with the password taken from
    /// `password_name` or `password_name_FILE` when set: the URL names the
    /// host and user, a Docker secret holds only the password (the one file
    /// Postgres' or Redis' own container reads too). A URL that holds a
    /// password already, and a password set too, is a problem.
    pub fn secret_url_with_password(
        &mut self,
        name: &str,
        password_name: &str,
        default: &str,
        schemes: &[&str],
    ) -> Secret {
        let value = self.secret_url(name, default, schemes);
        let Some(password) = self.secret(password_name) else {
            return value;
        };
        let Ok(mut url) = url::Url::parse(value.expose()) else {
            return value;
        };
        if url.password().is_some() {
            self.problem(
                password_name,
                format!("{name} holds a password already; set it in one place"),
            );
            return value;
        }
        if url.set_password(Some(password.expose())).is_err() {
            self.problem(password_name, format!("{name} has no host to log in to"));
            return value;
        }
        Secret::new(url.to_string())
    }

    /// Ends reading: `Err` lists every problem found.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

fn truncate_for_message(raw: &str) -> String {
    const MAX: usize = 80;
    if raw.len() <= MAX {
        raw.to_owned()
    } else {
        let mut end = MAX;
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &raw[..end])
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `1.5s`; a bare number is seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| "expected a duration such as 500ms, 5s, 2m or 1h".to_owned())?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

/// `url` with its password replaced by `***`, for logs. Text that is not a URL
/// is replaced whole, as it may be a secret typed in the wrong place.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "[unparseable, redacted]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_variable_is_reported_by_name() {
        let env = Env::from_pairs([
            ("PARTITIONS", "eight"),
            ("LINGER", "5 parsecs"),
            ("ENABLED", "maybe"),
            ("WORKERS", "0"),
        ]);
        let mut p = Parser::new(&env);
        assert_eq!(p.parse::<i32>("PARTITIONS", 8), 8);
        assert_eq!(
            p.duration("LINGER", Duration::from_millis(5)),
            Duration::from_millis(5)
        );
        assert!(p.flag("ENABLED", true));
        assert_eq!(p.ranged::<u32>("WORKERS", 2, 1..=64), 2);
        let err = p.finish().unwrap_err();
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["PARTITIONS", "LINGER", "ENABLED", "WORKERS"]);
        let text = err.to_string();
        assert!(text.contains("\"eight\""), "{text}");
        assert!(text.contains("expected 1 to 64"), "{text}");
    }

    #[test]
    fn defaults_apply_when_unset_or_blank() {
        let env = Env::from_pairs([("BLANK", "  ")]);
        let mut p = Parser::new(&env);
        assert_eq!(p.parse::<u16>("BLANK", 7), 7);
        assert_eq!(p.string("MISSING", "x"), "x");
        assert_eq!(p.parse_opt::<u16>("MISSING"), None);
        p.finish().unwrap();
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn the_environment_remembers_every_name_read_set_or_not() {
        let env = Env::from_pairs([("A", "1"), ("UNUSED", "x")]);
        assert!(env.names_read().is_empty());
        let clone = env.clone();
        let mut p = Parser::new(&clone);
        let _: u32 = p.parse("A", 0);
        let _ = p.secret("B");
        p.finish().unwrap();
        let read: Vec<_> = env.names_read().into_iter().collect();
        assert_eq!(read, ["A", "B", "B_FILE"], "UNUSED was never asked for");
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        std::fs::write(&path, "s3cret\n").unwrap();
        let env = Env::from_pairs([("JWT_SECRET_FILE", path.to_str().unwrap())]);
        let mut p = Parser::new(&env);
        let secret = p.secret("JWT_SECRET").unwrap();
        p.finish().unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert!(!format!("{secret:?} {secret}").contains("s3cret"));
    }

    #[test]
    fn a_password_file_completes_a_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg_password");
        std::fs::write(&path, "p@ss/w:rd\n").unwrap();
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://fantasy@db:5432/fantasy"),
            ("DATABASE_PASSWORD_FILE", path.to_str().unwrap()),
            ("REDIS_URL", "redis://:inline@cache:6379"),
            ("REDIS_PASSWORD", "again"),
        ]);
        let mut p = Parser::new(&env);
        let db = p.secret_url_with_password(
            "DATABASE_URL",
            "DATABASE_PASSWORD",
            "postgres://localhost",
            &["postgres"],
        );
        let parsed = url::Url::parse(db.expose()).unwrap();
        assert_eq!(parsed.username(), "fantasy");
        // Reserved characters are escaped, so the URL still parses as meant.
        assert_eq!(parsed.password(), Some("p%40ss%2Fw%3Ard"));
        assert_eq!(parsed.host_str(), Some("db"));
        let redis = p.secret_url_with_password(
            "REDIS_URL",
            "REDIS_PASSWORD",
            "redis://127.0.0.1",
            &["redis"],
        );
        assert_eq!(redis.expose(), "redis://:inline@cache:6379");
        let err = p.finish().unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].name, "REDIS_PASSWORD");
        assert!(!err.to_string().contains("again"), "{err}");
    }

    #[test]
    fn secret_set_twice_or_unreadable_is_a_problem() {
        let env = Env::from_pairs([
            ("A", "x"),
            ("A_FILE", "/nope"),
            ("B_FILE", "/does/not/exist"),
        ]);
        let mut p = Parser::new(&env);
        assert!(p.secret("A").is_none());
        assert!(p.secret("B").is_none());
        let err = p.finish().unwrap_err();
        assert_eq!(err.problems[0].name, "A");
        assert_eq!(err.problems[1].name, "B_FILE");
        assert!(err.problems[1].message.contains("/does/not/exist"));
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "mysql://root:hunter2@db/x"),
            ("REDIS_URL", "redis://:pw@cache:6379"),
        ]);
        let mut p = Parser::new(&env);
        p.secret_url(
            "DATABASE_URL",
            "postgres://localhost/x",
            &["postgres", "postgresql"],
        );
        let redis = p.secret_url("REDIS_URL", "redis://127.0.0.1", &["redis", "rediss"]);
        let err = p.finish().unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.to_string().contains("\"mysql\""));
        assert!(!err.to_string().contains("hunter2"));
        assert_eq!(redact_url(redis.expose()), "redis://:***@cache:6379");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("hunter2"), "[unparseable, redacted]");
    }
}
