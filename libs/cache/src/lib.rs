//! Redis for the services: the latest prediction per game, JSON values with a
//! time to live, and pipelines.
//!
//! [`Cache`] holds a `ConnectionManager`: one multiplexed connection that
//! reconnects by itself after Redis restarts (commands in the gap fail fast
//! with an error, they do not hang). The first command after the connection
//! dropped meets the dead socket ("broken pipe") while the manager reconnects
//! behind it: every command here is idempotent and runs once more on the new
//! connection ([`Cache::idempotent`]), so a Redis restart costs no failed
//! readiness probe, cache read or write. Every key is put under a prefix, so
//! several stacks (or tests) share one Redis without seeing each other.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use fantasy_config::{Parser, Secret, redact_url};
use fantasy_messages::{Message, Prediction};
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The Redis a local run uses.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Redis settings of a service.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `REDIS_URL` (or `REDIS_URL_FILE`): may hold a password.
    pub url: Secret,
    /// `REDIS_PREFIX`: put before every key.
    pub prefix: String,
    /// `REDIS_TIMEOUT`: how long one command may take before it fails.
    pub timeout: Duration,
    /// `PREDICTION_TTL`: how long the latest prediction of a game is kept.
    pub prediction_ttl: Duration,
}

impl RedisConfig {
    /// Settings for `url`, with defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            prefix: "fantasy:".into(),
            timeout: Duration::from_secs(2),
            prediction_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// Reads the `REDIS_*` variables.
    pub fn from_env(p: &mut Parser<'_>) -> Self {
        let d = Self::new(DEFAULT_REDIS_URL);
        Self {
            url: p.secret_url_with_password(
                "REDIS_URL",
                "REDIS_PASSWORD",
                DEFAULT_REDIS_URL,
                &["redis", "rediss", "redis+unix", "unix"],
            ),
            prefix: p.string("REDIS_PREFIX", &d.prefix),
            timeout: p.duration("REDIS_TIMEOUT", d.timeout),
            prediction_ttl: p.duration("PREDICTION_TTL", d.prediction_ttl),
        }
    }
}

impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "url={} prefix={:?} timeout={:?} prediction_ttl={:?}",
            redact_url(self.url.expose()),
            self.prefix,
            self.timeout,
            self.prediction_ttl
        )
    }
}

/// Why a cache call failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cached value under {key} is not valid JSON for its type: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot cache an invalid value: {0}")]
    Encode(#[from] fantasy_messages::EncodeError),
}

/// A Redis client under a key prefix. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    conn: ConnectionManager,
    prefix: String,
    prediction_ttl: Duration,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Connects; fails when Redis does not answer within `cfg.timeout`.
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, CacheError> {
        let client = redis::Client::open(cfg.url.expose())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, manager_config).await?;
        Ok(Self {
            conn,
            prefix: cfg.prefix.clone(),
            prediction_ttl: cfg.prediction_ttl,
        })
    }

    /// `key` under this cache's prefix.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The multiplexed connection, for commands not wrapped here (the bloom
    /// filter's scripts, say). Keys passed to it must go through [`Cache::key`].
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs `command` on the connection, and once more when the connection
    /// had dropped (Redis restarted, or closed it): the manager reconnects
    /// when a command fails that way, and the second run waits for that.
    /// `command` must be safe to run twice, as it may have run before the
    /// connection dropped.
    pub async fn idempotent<T, F, Fut>(&self, mut command: F) -> redis::RedisResult<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match command(self.conn.clone()).await {
            Err(e) if e.is_connection_dropped() => {
                tracing::info!(
                    "redis: the connection dropped ({e}); running the command again on a new one"
                );
                command(self.conn.clone()).await
            }
            answer => answer,
        }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let _: String = self
            .idempotent(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await })
            .await?;
        Ok(())
    }

    /// The server's version, from `INFO server`.
    pub async fn server_version(&self) -> Result<String, CacheError> {
        let info: String = self
            .idempotent(|mut conn| async move {
                redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned())
    }

    /// Stores `value` as JSON under `key` for `ttl`.
    pub async fn set_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(value).map_err(|source| CacheError::Corrupt {
            key: key.to_owned(),
            source,
        })?;
        let (key, bytes) = (&self.key(key), &bytes);
        let () = self
            .idempotent(|mut conn| async move { conn.set_ex(key, bytes, ttl_secs(ttl)).await })
            .await?;
        Ok(())
    }

    /// The JSON value under `key`, if present and not expired.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, CacheError> {
        let full = &self.key(key);
        let bytes: Option<Vec<u8>> = self
            .idempotent(|mut conn| async move { conn.get(full).await })
            .await?;
        bytes
            .map(|b| {
                serde_json::from_slice(&b).map_err(|source| CacheError::Corrupt {
                    key: key.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let key = &self.key(key);
        let _: i64 = self
            .idempotent(|mut conn| async move { conn.del(key).await })
            .await?;
        Ok(())
    }

    fn prediction_key(&self, game_id: &str) -> String {
        format!("{}prediction:{game_id}", self.prefix)
    }

    /// Stores each prediction as its game's latest, unless a newer one is
    /// already there (a redelivered or reordered message never rolls the
    /// cache back). Within `predictions`, the last of each game wins unless
    /// an earlier one is newer.
    ///
    /// The compare-and-set runs in Redis as one script call per chunk of
    /// predictions (not one per prediction): at stream rates the per-command
    /// cost, not the network, is what limits Redis.
    pub async fn set_latest_predictions(
        &self,
        predictions: &[Prediction],
    ) -> Result<(), CacheError> {
        if predictions.is_empty() {
            return Ok(());
        }
        const CHUNK: usize = 500;
        let script = latest_prediction_script();
        let ttl = ttl_secs(self.prediction_ttl);
        let mut pipe = redis::pipe();
        // Loading first costs one SHA-1 of a short script on the server and
        // makes the pipeline work on a Redis that restarted since last time.
        pipe.load_script(script).ignore();
        for chunk in predictions.chunks(CHUNK) {
            let mut invocation = script.prepare_invoke();
            invocation.arg(ttl);
            for p in chunk {
                invocation
                    .key(self.prediction_key(p.key()))
                    .arg(p.predicted_at.timestamp_micros())
                    .arg(fantasy_messages::encode(p)?);
            }
            pipe.invoke_script(&invocation).ignore();
        }
        // Idempotent: a prediction already stored is not stored again.
        let pipe = &pipe;
        let () = self
            .idempotent(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        Ok(())
    }

    /// The latest prediction stored for a game.
    pub async fn latest_prediction(&self, game_id: &str) -> Result<Option<Prediction>, CacheError> {
        let key = self.prediction_key(game_id);
        let bytes: Option<Vec<u8>> = self
            .idempotent(|mut conn| {
                let key = &key;
                async move { conn.hget(key, "json").await }
            })
            .await?;
        decode_cached(&key, bytes)
    }

    /// The latest predictions of many games in one round trip, in order.
    pub async fn latest_predictions(
        &self,
        game_ids: &[&str],
    ) -> Result<Vec<Option<Prediction>>, CacheError> {
        if game_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in game_ids {
            pipe.hget(self.prediction_key(id), "json");
        }
        let pipe = &pipe;
        let values: Vec<Option<Vec<u8>>> = self
            .idempotent(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        values
            .into_iter()
            .zip(game_ids)
            .map(|(bytes, id)| decode_cached(&self.prediction_key(id), bytes))
            .collect()
    }
}

fn decode_cached<M: Message>(key: &str, bytes: Option<Vec<u8>>) -> Result<Option<M>, CacheError> {
    bytes
        .map(|b| {
            fantasy_messages::decode(&b).map_err(|e| CacheError::Corrupt {
                key: key.to_owned(),
                source: match e {
                    fantasy_messages::DecodeError::Malformed { source, .. } => source,
                    other => serde_json::Error::io(std::io::Error::other(other.to_string())),
                },
            })
        })
        .transpose()
}

fn latest_prediction_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        // KEYS[i]: a game's hash; ARGV[1]: TTL in seconds; then for key i,
        // ARGV[2i]: predicted_at (µs since the epoch), ARGV[2i+1]: the JSON.
        redis::Script::new(
            r#"
            local ttl = ARGV[1]
            for i, key in ipairs(KEYS) do
                local at = ARGV[2 * i]
                local current = redis.call('HGET', key, 'at')
                if not current or tonumber(current) <= tonumber(at) then
                    redis.call('HSET', key, 'at', at, 'json', ARGV[2 * i + 1])
                    redis.call('EXPIRE', key, ttl)
                end
            end
            return #KEYS
            "#,
        )
    })
}

fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}
