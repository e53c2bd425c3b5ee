//! The versioned JSON codec shared by every message type.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Topic;

/// The schema version this build writes and reads.
///
/// A zero-sized field in every message: it serialises as the number and
/// refuses any other number when deserialised, so a value of a message type
/// always carries the version its fields mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SchemaVersion;

impl SchemaVersion {
    /// The number written on the wire.
    pub const NUMBER: u16 = 1;
}

impl Serialize for SchemaVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(Self::NUMBER)
    }
}

impl<'de> Deserialize<'de> for SchemaVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let found = u16::deserialize(deserializer)?;
        if found == Self::NUMBER {
            Ok(SchemaVersion)
        } else {
            Err(serde::de::Error::custom(format_args!(
                "unsupported schema_version {found}"
            )))
        }
    }
}

impl utoipa::PartialSchema for SchemaVersion {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some([Self::NUMBER]))
            .description(Some(
                "The message schema's version: this build writes and reads 1",
            ))
            .into()
    }
}

impl utoipa::ToSchema for SchemaVersion {}

/// A message type: its topic, its Kafka key and its invariants.
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The topic this message is published on.
    const TOPIC: Topic;
    /// A short name for logs and errors (`game`, `prediction`, ...).
    const KIND: &'static str;

    /// The Kafka key. Messages with equal keys land on one partition, in order:
    /// the game id for game events, the model name for model events.
    fn key(&self) -> &str;

    /// Checks what the types cannot say (finite numbers, ranges, non-empty
    /// ids). `Err` carries a reason a person can act on.
    fn validate(&self) -> Result<(), String>;
}

/// Why a payload could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed {kind} message: {source}")]
    Malformed {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A `schema_version` this build does not read.
    #[error("{kind} message has schema_version {found}; this build reads {supported}")]
    UnsupportedVersion {
        kind: &'static str,
        /// The value as it appeared on the wire.
        found: String,
        supported: u16,
    },
    /// No `schema_version` field at all.
    #[error("{kind} message has no schema_version field")]
    MissingVersion { kind: &'static str },
    /// Well-formed, but breaks an invariant (a NaN, a probability above 1...).
    #[error("invalid {kind} message: {reason}")]
    Invalid { kind: &'static str, reason: String },
}

impl DecodeError {
    /// A stable, low-cardinality label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::MissingVersion { .. } => "missing_version",
            DecodeError::Invalid { .. } => "invalid",
        }
    }
}

/// Why a message could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The message breaks an invariant; a consumer would refuse it.
    #[error("refusing to encode invalid {kind} message: {reason}")]
    Invalid { kind: &'static str, reason: String },
    /// The serialiser failed (it does not for our types; kept for honesty).
    #[error("could not serialise {kind} message: {source}")]
    Json {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Decodes and validates one message.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    match serde_json::from_slice::<M>(bytes) {
        Ok(message) => {
            message.validate().map_err(|reason| DecodeError::Invalid {
                kind: M::KIND,
                reason,
            })?;
            Ok(message)
        }
        // The common path parses once; only a failure pays for a second look
        // that tells an unknown version apart from a broken payload.
        Err(source) => Err(classify_failure::<M>(bytes, source)),
    }
}

fn classify_failure<M: Message>(bytes: &[u8], source: serde_json::Error) -> DecodeError {
    #[derive(Deserialize)]
    struct Probe {
        schema_version: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            schema_version: None,
        }) => DecodeError::MissingVersion { kind: M::KIND },
        Ok(Probe {
            schema_version: Some(v),
        }) if v.as_u64() != Some(u64::from(SchemaVersion::NUMBER)) => {
            DecodeError::UnsupportedVersion {
                kind: M::KIND,
                found: v.to_string(),
                supported: SchemaVersion::NUMBER,
            }
        }
        _ => DecodeError::Malformed {
            kind: M::KIND,
            source,
        },
    }
}

/// Validates and encodes one message.
pub fn encode<M: Message>(message: &M) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::with_capacity(256);
    encode_into(message, &mut buf)?;
    Ok(buf)
}

/// Validates and appends one message to `buf` (for callers that reuse buffers).
pub fn encode_into<M: Message>(message: &M, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    message.validate().map_err(|reason| EncodeError::Invalid {
        kind: M::KIND,
        reason,
    })?;
    serde_json::to_writer(buf, message).map_err(|source| EncodeError::Json {
        kind: M::KIND,
        source,
    })
}
