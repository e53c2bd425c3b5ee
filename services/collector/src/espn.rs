//! The ESPN site-API scoreboard format, as the `http` source fetches it
//! (`https://site.api.espn.com/apis/site/v2/sports/<sport>/<league>/scoreboard`).
//!
//! The parts read: `events[]` with `id` and `date`; `competitions[0]` with
//! two `competitors` (`homeAway`: `home`/`away`, `score`, `team.abbreviation`
//! or `team.id`) and `status.type` (`state`: `pre`/`in`/`post`, `completed`,
//! `name` such as `STATUS_POSTPONED`). Everything else is ignored.
//!
//! Each event is read on its own: a malformed one is rejected with its id
//! and the reason, and the rest of the payload is kept. Dates come as
//! RFC 3339 or, as ESPN writes them, without seconds (`2026-11-22T00:30Z`).

use chrono::{DateTime, NaiveDateTime, Utc};
use fantasy_messages::GameStatus;
use serde::Deserialize;
use serde_json::Value;

/// One game as the scoreboard shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreboardEvent {
    pub event_id: String,
    pub home_team: String,
    pub away_team: String,
    pub scheduled_at: DateTime<Utc>,
    pub status: GameStatus,
    /// Known once the game is under way (always for `Final`).
    pub home_score: Option<u32>,
    pub away_score: Option<u32>,
    /// The season's year, when the payload says.
    pub season: Option<String>,
}

/// An event that could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// Its position in `events`.
    pub index: usize,
    pub event_id: Option<String>,
    pub reason: String,
}

/// What one payload held.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scoreboard {
    pub events: Vec<ScoreboardEvent>,
    pub rejected: Vec<Rejected>,
}

/// The payload as a whole is unusable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no `events` array")]
    NoEvents,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    S(String),
    N(serde_json::Number),
}

impl Text {
    fn into_string(self) -> String {
        match self {
            Text::S(s) => s,
            Text::N(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct RawEvent {
    id: Option<Text>,
    date: Option<String>,
    season: Option<RawSeason>,
    #[serde(default)]
    competitions: Vec<RawCompetition>,
    status: Option<RawStatus>,
}

#[derive(Deserialize)]
struct RawSeason {
    year: Option<Text>,
}

#[derive(Deserialize)]
struct RawCompetition {
    date: Option<String>,
    #[serde(default)]
    competitors: Vec<RawCompetitor>,
    status: Option<RawStatus>,
}

#[derive(Deserialize)]
struct RawCompetitor {
    #[serde(rename = "homeAway")]
    home_away: Option<String>,
    score: Option<Text>,
    team: Option<RawTeam>,
}

#[derive(Deserialize)]
struct RawTeam {
    id: Option<Text>,
    abbreviation: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    #[serde(rename = "type")]
    kind: Option<RawStatusType>,
}

#[derive(Deserialize)]
struct RawStatusType {
    name: Option<String>,
    state: Option<String>,
    completed: Option<bool>,
}

/// Reads a scoreboard payload.
pub fn parse(body: &[u8]) -> Result<Scoreboard, PayloadError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let Some(events) = root.get("events").and_then(Value::as_array) else {
        return Err(PayloadError::NoEvents);
    };
    let mut out = Scoreboard::default();
    for (index, raw) in events.iter().enumerate() {
        let id = raw.get("id").and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        match event(raw) {
            Ok(e) => out.events.push(e),
            Err(reason) => out.rejected.push(Rejected {
                index,
                event_id: id,
                reason,
            }),
        }
    }
    Ok(out)
}

fn event(raw: &Value) -> Result<ScoreboardEvent, String> {
    let raw = RawEvent::deserialize(raw).map_err(|e| format!("unexpected shape: {e}"))?;
    let event_id = raw
        .id
        .map(Text::into_string)
        .filter(|s| !s.is_empty())
        .ok_or("no id")?;
    let competition = raw
        .competitions
        .into_iter()
        .next()
        .ok_or("no competition")?;
    let date = competition.date.or(raw.date).ok_or("no date")?;
    let scheduled_at = parse_date(&date).ok_or_else(|| format!("date {date:?} is not a date"))?;
    let status_type = competition
        .status
        .or(raw.status)
        .and_then(|s| s.kind)
        .ok_or("no status")?;
    let status = status_of(&status_type)?;

    let (mut home, mut away) = (None, None);
    for c in competition.competitors {
        let slot = match c.home_away.as_deref() {
            Some("home") => &mut home,
            Some("away") => &mut away,
            other => return Err(format!("competitor with homeAway {other:?}")),
        };
        if slot.is_some() {
            return Err("two competitors on one side".into());
        }
        *slot = Some(c);
    }
    let (home, away) = match (home, away) {
        (Some(h), Some(a)) => (h, a),
        _ => return Err("a home and an away competitor are needed".into()),
    };
    let team = |c: &RawCompetitor| -> Result<String, String> {
        let t = c.team.as_ref().ok_or("competitor without team")?;
        t.abbreviation
            .clone()
            .filter(|a| !a.is_empty())
            .or_else(|| {
                t.id.as_ref().map(|id| match id {
                    Text::S(s) => s.clone(),
                    Text::N(n) => n.to_string(),
                })
            })
            .ok_or_else(|| "team without abbreviation or id".into())
    };
    let (home_team, away_team) = (team(&home)?, team(&away)?);
    if home_team == away_team {
        return Err(format!("{home_team} plays itself"));
    }
    let (home_score, away_score) = match status {
        GameStatus::Scheduled | GameStatus::Postponed => (None, None),
        GameStatus::InProgress | GameStatus::Final => (score(home.score)?, score(away.score)?),
    };
    if status == GameStatus::Final && (home_score.is_none() || away_score.is_none()) {
        return Err("a final without both scores".into());
    }
    Ok(ScoreboardEvent {
        event_id,
        home_team,
        away_team,
        scheduled_at,
        status,
        home_score,
        away_score,
        season: raw.season.and_then(|s| s.year).map(Text::into_string),
    })
}

fn score(raw: Option<Text>) -> Result<Option<u32>, String> {
    match raw.map(Text::into_string) {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("score {s:?} is not a count of points")),
    }
}

fn status_of(t: &RawStatusType) -> Result<GameStatus, String> {
    let name = t.name.as_deref().unwrap_or_default();
    if ["POSTPONED", "CANCELED", "CANCELLED", "SUSPENDED"]
        .iter()
        .any(|w| name.contains(w))
    {
        return Ok(GameStatus::Postponed);
    }
    match (t.state.as_deref(), t.completed) {
        (Some("pre"), _) => Ok(GameStatus::Scheduled),
        (Some("in"), _) => Ok(GameStatus::InProgress),
        (Some("post"), Some(true)) => Ok(GameStatus::Final),
        (Some("post"), _) => Ok(GameStatus::Postponed),
        (other, _) => Err(format!("status state {other:?}")),
    }
}

fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ")
                .ok()
                .map(|n| n.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const NBA: &[u8] = include_bytes!("../fixtures/espn/nba-scoreboard.json");
    const PARTIAL: &[u8] = include_bytes!("../fixtures/espn/partial.json");

    #[test]
    fn a_scoreboard_gives_each_game_with_its_status_and_scores() {
        let board = parse(NBA).unwrap();
        assert_eq!(board.rejected, []);
        let by_id = |id: &str| board.events.iter().find(|e| e.event_id == id).unwrap();
        let final_game = by_id("401704123");
        assert_eq!(
            *final_game,
            ScoreboardEvent {
                event_id: "401704123".into(),
                home_team: "BOS".into(),
                away_team: "NY".into(),
                scheduled_at: Utc.with_ymd_and_hms(2026, 11, 22, 0, 30, 0).unwrap(),
                status: GameStatus::Final,
                home_score: Some(112),
                away_score: Some(104),
                season: Some("2027".into()),
            }
        );
        let live = by_id("401704124");
        assert_eq!(
            (live.status, live.home_score, live.away_score),
            (GameStatus::InProgress, Some(58), Some(61))
        );
        let upcoming = by_id("401704125");
        assert_eq!(
            (upcoming.status, upcoming.home_score),
            (GameStatus::Scheduled, None)
        );
        let postponed = by_id("401704126");
        assert_eq!(
            (postponed.status, postponed.home_team.as_str()),
            (GameStatus::Postponed, "PHX")
        );
    }

    #[test]
    fn malformed_events_are_rejected_by_id_and_the_rest_kept() {
        let board = parse(PARTIAL).unwrap();
        let ids: Vec<&str> = board.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["9001", "9007"]);
        assert_eq!(board.events[1].home_score, Some(5));
        let rejected: Vec<(usize, Option<&str>)> = board
            .rejected
            .iter()
            .map(|r| (r.index, r.event_id.as_deref()))
            .collect();
        assert_eq!(
            rejected,
            [
                (1, Some("9002")),
                (2, Some("9003")),
                (3, None),
                (4, Some("9005")),
                (5, None)
            ]
        );
        assert!(
            board.rejected[0].reason.contains("not a date"),
            "{:?}",
            board.rejected[0]
        );
        assert!(board.rejected[1].reason.contains("home and an away"));
        assert!(board.rejected[3].reason.contains("\"-1\""));
    }

    #[test]
    fn unusable_payloads_are_errors() {
        assert!(matches!(
            parse(b"<html>rate limited</html>"),
            Err(PayloadError::NotJson(_))
        ));
        assert_eq!(parse(br#"{"leagues": []}"#), Err(PayloadError::NoEvents));
        assert_eq!(parse(br#"{"events": []}"#).unwrap(), Scoreboard::default());
    }
}
