//! The wire protocol (see PROTOCOL.md): client operations in, frames out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A channel a client can subscribe to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Game(String),
    Sport(String),
    All,
    Metrics,
}

impl Channel {
    /// Parses `game:<id>`, `sport:<sport>`, `all`, `metrics`.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = |v: &str| !v.is_empty() && v.len() <= 256 && !v.chars().any(char::is_control);
        match s {
            "all" => Some(Channel::All),
            "metrics" => Some(Channel::Metrics),
            _ => {
                if let Some(id) = s.strip_prefix("game:") {
                    ok(id).then(|| Channel::Game(id.to_owned()))
                } else if let Some(sport) = s.strip_prefix("sport:") {
                    ok(sport).then(|| Channel::Sport(sport.to_owned()))
                } else {
                    None
                }
            }
        }
    }

    /// The channel's name on the wire.
    pub fn name(&self) -> String {
        match self {
            Channel::Game(id) => format!("game:{id}"),
            Channel::Sport(s) => format!("sport:{s}"),
            Channel::All => "all".into(),
            Channel::Metrics => "metrics".into(),
        }
    }

    /// Whether a `channels` claim pattern (`sport:nba`, `game:*`, `*`)
    /// allows this channel.
    pub fn allowed_by(&self, patterns: &[String]) -> bool {
        let name = self.name();
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => *p == name,
        })
    }
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientOp {
    Subscribe {
        channels: Vec<String>,
        /// channel -> partition -> last offset seen.
        #[serde(default)]
        since: BTreeMap<String, Positions>,
    },
    Unsubscribe {
        channels: Vec<String>,
    },
    Ping {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
}

/// Partition -> last offset seen, as a client sends it (`{"0": 41, "3": 7}`:
/// JSON object keys are strings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, i64>")]
pub struct Positions(pub BTreeMap<i32, i64>);

impl TryFrom<BTreeMap<String, i64>> for Positions {
    type Error = String;

    fn try_from(raw: BTreeMap<String, i64>) -> Result<Self, Self::Error> {
        raw.into_iter()
            .map(|(k, v)| match k.parse::<i32>() {
                Ok(p) if (0..1 << 16).contains(&p) => Ok((p, v)),
                _ => Err(format!("since: {k:?} is not a partition number")),
            })
            .collect::<Result<_, _>>()
            .map(Positions)
    }
}

/// Why a client frame was not understood.
#[derive(Debug, PartialEq, Eq)]
pub enum OpError {
    Malformed(String),
    UnknownOp(String),
}

/// Parses one client frame.
pub fn parse_op(text: &str) -> Result<ClientOp, OpError> {
    match serde_json::from_str::<ClientOp>(text) {
        Ok(op) => Ok(op),
        Err(e) => {
            // Tell an unknown op apart from a broken frame.
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
                && let Some(op) = v.get("op").and_then(|o| o.as_str())
                && !matches!(op, "subscribe" | "unsubscribe" | "ping")
            {
                return Err(OpError::UnknownOp(op.to_owned()));
            }
            Err(OpError::Malformed(e.to_string()))
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `{"type":"prediction",...}` with `payload` (the Kafka message, already
/// JSON) embedded as `data`: built once per channel, shared by every
/// subscriber of that channel.
pub fn prediction_frame(
    channel: &str,
    partition: i32,
    offset: i64,
    payload: &[u8],
) -> Option<Utf8Bytes> {
    let data = std::str::from_utf8(payload).ok()?;
    let mut s = String::with_capacity(payload.len() + channel.len() + 96);
    let _ = write!(
        s,
        r#"{{"type":"prediction","channel":{},"position":{{"partition":{partition},"offset":{offset}}},"data":{data}}}"#,
        json_str(channel)
    );
    Some(Utf8Bytes::from(s))
}

/// `{"type":"metrics",...}` with the `ModelMetrics` payload as `data`.
pub fn metrics_frame(payload: &[u8]) -> Option<Utf8Bytes> {
    let data = std::str::from_utf8(payload).ok()?;
    Some(Utf8Bytes::from(format!(
        r#"{{"type":"metrics","channel":"metrics","data":{data}}}"#
    )))
}

/// `{"type":"experiment",...}` with the `ExperimentStanding` payload as
/// `data`: on the `metrics` channel beside the metrics frames.
pub fn experiment_frame(payload: &[u8]) -> Option<Utf8Bytes> {
    let data = std::str::from_utf8(payload).ok()?;
    Some(Utf8Bytes::from(format!(
        r#"{{"type":"experiment","channel":"metrics","data":{data}}}"#
    )))
}

pub fn subscribed_frame(channel: &str, recovered: bool, positions: &[i64]) -> Utf8Bytes {
    let mut s = format!(
        r#"{{"type":"subscribed","channel":{},"recovered":{recovered},"positions":{{"#,
        json_str(channel)
    );
    let mut first = true;
    for (p, o) in positions.iter().enumerate() {
        // -1: nothing seen on that partition yet.
        if *o >= 0 {
            if !first {
                s.push(',');
            }
            first = false;
            let _ = write!(s, r#""{p}":{o}"#);
        }
    }
    s.push_str("}}");
    Utf8Bytes::from(s)
}

pub fn unsubscribed_frame(channel: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        r#"{{"type":"unsubscribed","channel":{}}}"#,
        json_str(channel)
    ))
}

/// `{"type":"snapshot","channel":...,"data":[...]}` from stored payloads.
pub fn snapshot_frame(channel: &str, payloads: &[Vec<u8>]) -> Utf8Bytes {
    let mut s = format!(
        r#"{{"type":"snapshot","channel":{},"data":["#,
        json_str(channel)
    );
    let mut first = true;
    for p in payloads {
        if let Ok(text) = std::str::from_utf8(p) {
            if !first {
                s.push(',');
            }
            first = false;
            s.push_str(text);
        }
    }
    s.push_str("]}");
    Utf8Bytes::from(s)
}

pub fn error_frame(code: &str, message: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        r#"{{"type":"error","code":{},"message":{}}}"#,
        json_str(code),
        json_str(message)
    ))
}

pub fn pong_frame(id: Option<&serde_json::Value>) -> Utf8Bytes {
    match id {
        Some(id) => Utf8Bytes::from(format!(r#"{{"type":"pong","id":{id}}}"#)),
        None => Utf8Bytes::from_static(r#"{"type":"pong"}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_and_print_back() {
        for s in ["all", "metrics", "game:nba-1", "sport:nba"] {
            assert_eq!(Channel::parse(s).unwrap().name(), s);
        }
        for s in ["", "game:", "sport:", "everything", "game:\u{7}"] {
            assert_eq!(Channel::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn claim_patterns_allow_exact_names_and_prefixes() {
        let pats = vec!["sport:nba".to_owned(), "game:*".to_owned()];
        assert!(Channel::parse("sport:nba").unwrap().allowed_by(&pats));
        assert!(Channel::parse("game:x").unwrap().allowed_by(&pats));
        assert!(!Channel::parse("sport:nfl").unwrap().allowed_by(&pats));
        assert!(!Channel::All.allowed_by(&pats));
        assert!(Channel::All.allowed_by(&["*".to_owned()]));
    }

    #[test]
    fn ops_parse_and_errors_are_told_apart() {
        let op = parse_op(r#"{"op":"subscribe","channels":["all"],"since":{"all":{"0":5,"3":9}}}"#)
            .unwrap();
        match op {
            ClientOp::Subscribe { channels, since } => {
                assert_eq!(channels, ["all"]);
                assert_eq!(since["all"].0[&3], 9);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse_op(r#"{"op":"dance"}"#), Err(OpError::UnknownOp(op)) if op == "dance")
        );
        assert!(matches!(parse_op("{not json"), Err(OpError::Malformed(_))));
        assert!(matches!(
            parse_op(r#"{"op":"subscribe"}"#),
            Err(OpError::Malformed(_))
        ));
        let bad = parse_op(r#"{"op":"subscribe","channels":["all"],"since":{"all":{"x":1}}}"#);
        assert!(
            matches!(bad, Err(OpError::Malformed(ref why)) if why.contains("partition")),
            "{bad:?}"
        );
    }

    #[test]
    fn frames_are_valid_json_with_the_payload_embedded() {
        let f = prediction_frame("game:a\"b", 3, 42, br#"{"game_id":"a\"b"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
        assert_eq!(v["channel"], "game:a\"b");
        assert_eq!(v["position"]["offset"], 42);
        assert_eq!(v["data"]["game_id"], "a\"b");
        let s: serde_json::Value =
            serde_json::from_str(subscribed_frame("all", true, &[5, -1, 7]).as_str()).unwrap();
        assert_eq!(s["positions"], serde_json::json!({"0": 5, "2": 7}));
        let snap: serde_json::Value = serde_json::from_str(
            snapshot_frame("all", &[b"{\"a\":1}".to_vec(), b"{\"a\":2}".to_vec()]).as_str(),
        )
        .unwrap();
        assert_eq!(snap["data"][1]["a"], 2);
        let e: serde_json::Value =
            serde_json::from_str(error_frame("x", "a \"quoted\" thing").as_str()).unwrap();
        assert_eq!(e["message"], "a \"quoted\" thing");
    }

    #[test]
    fn an_experiment_frame_carries_the_standing_on_the_metrics_channel() {
        let standing = fantasy_messages::testing::experiment_standing(300, -0.03, 0.01);
        let payload = fantasy_messages::encode(&standing).unwrap();
        let f = experiment_frame(&payload).unwrap();
        let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
        assert_eq!(v["type"], "experiment");
        assert_eq!(v["channel"], "metrics");
        assert_eq!(v["data"]["experiment_id"], 7);
        assert_eq!(v["data"]["variants"][1]["variant"], "challenger");
        assert_eq!(v["data"]["comparisons"][0]["upper"], 0.01);
        assert_eq!(experiment_frame(b"\xff"), None);
    }
}
