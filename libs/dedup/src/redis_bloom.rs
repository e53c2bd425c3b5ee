//! The bloom filter shared by every replica: a blocked bit array per
//! generation in a Redis string, read with `GETRANGE` and written with
//! `BITFIELD`, many keys per round trip.

use std::fmt;

use fantasy_cache::Cache;
use redis::Value;

use crate::params::BLOCK_BITS;
use crate::{BloomParams, BloomVerdict, DedupKey, Generation};

/// Bytes per block.
const BLOCK_BYTES: u64 = BLOCK_BITS / 8;

/// The shared filter: generation `g` is the Redis string
/// `<prefix>dedup:{bloom}:b512:<g>` of m bits (the `{bloom}` hash tag keeps
/// every generation in one Redis Cluster slot, as a transaction's keys must
/// be; `b512` names the layout, so replicas of an older layout, which used
/// other keys, never misread these bits).
///
/// A key's k bits lie in one 64-byte block ([`BloomParams::slot`]): a
/// lookup is one `GETRANGE` of that block per generation, its bits tested
/// here; an insert is one `BITFIELD … SET u1` per key (atomic in Redis, so
/// replicas inserting into the same block never lose each other's bits).
/// Plain commands in one pipeline: no script, no number formatting on the
/// server (Lua's number-to-string conversions were a third of Redis' time
/// with the earlier script). Every method is one round trip, whatever the
/// batch size.
#[derive(Clone)]
pub struct RedisBloom {
    cache: Cache,
    params: BloomParams,
}

impl fmt::Debug for RedisBloom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBloom")
            .field("cache", &self.cache)
            .field("params", &self.params)
            .finish()
    }
}

impl RedisBloom {
    /// The shared filter of shape `params`, in `cache`'s Redis under its
    /// prefix. Every replica must use the same `params` (they do when they
    /// read the same `DEDUP_*` settings); a replica with other params reads
    /// other bits, which costs false positives and misses, not records,
    /// as long as the exact store is consulted.
    pub fn new(cache: Cache, params: BloomParams) -> Self {
        Self { cache, params }
    }

    /// The filter's shape.
    pub fn params(&self) -> BloomParams {
        self.params
    }

    /// The Redis key (prefix included) of generation `index`.
    pub fn generation_key(&self, index: u64) -> String {
        self.cache.key(&format!("dedup:{{bloom}}:b512:{index}"))
    }

    /// The keys of `generation` and the one before it. Generation 0 has no
    /// predecessor; a key never written reads as all zeros, which is what
    /// "no previous generation" means.
    fn keys_of(&self, generation: Generation) -> (String, String) {
        let previous = match generation.previous() {
            Some(g) => self.generation_key(g.index),
            None => self.cache.key("dedup:{bloom}:b512:none"),
        };
        (self.generation_key(generation.index), previous)
    }

    /// The byte range of `key`'s block and its bit offsets in the block.
    fn range(&self, key: &DedupKey) -> (u64, u64, impl Iterator<Item = u64> + Clone + use<>) {
        let (block, offsets) = self.params.slot(key);
        let start = block * BLOCK_BYTES;
        (start, start + BLOCK_BYTES - 1, offsets)
    }

    /// For each key, whether it may be in `generation` or the one before.
    pub async fn check(
        &self,
        generation: Generation,
        keys: &[DedupKey],
    ) -> redis::RedisResult<Vec<BloomVerdict>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (current, previous) = self.keys_of(generation);
        let mut pipe = redis::pipe();
        for key in keys {
            let (start, end, _) = self.range(key);
            pipe.cmd("GETRANGE").arg(&current).arg(start).arg(end);
            pipe.cmd("GETRANGE").arg(&previous).arg(start).arg(end);
        }
        let pipe = &pipe;
        let blocks: Vec<Vec<u8>> = self
            .cache
            .idempotent(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        expect_answers(keys.len() * 2, blocks.len())?;
        Ok(keys
            .iter()
            .zip(blocks.chunks_exact(2))
            .map(|(key, pair)| {
                let (_, _, offsets) = self.range(key);
                BloomVerdict::from_maybe_present(
                    all_set(&pair[0], offsets.clone()) || all_set(&pair[1], offsets),
                )
            })
            .collect())
    }

    /// Sets every key's bits in `generation` and (re)sets its expiry.
    pub async fn insert(
        &self,
        generation: Generation,
        keys: &[DedupKey],
    ) -> redis::RedisResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let (current, _) = self.keys_of(generation);
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.add_command(self.set_bits(&current, key)).ignore();
        }
        pipe.cmd("PEXPIREAT")
            .arg(&current)
            .arg(generation.expires_at_ms())
            .ignore();
        let pipe = &pipe;
        self.cache
            .idempotent(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
    }

    /// For each key, whether it may have been in `generation` or the one
    /// before, and sets its bits in `generation`: atomically (one
    /// `MULTI`/`EXEC`, so no other client's command runs in between; it
    /// holds Redis for the whole batch, about 3 µs a key), in order (a key
    /// repeated in `keys` is `MaybePresent` the second time).
    pub async fn check_and_insert(
        &self,
        generation: Generation,
        keys: &[DedupKey],
    ) -> redis::RedisResult<Vec<BloomVerdict>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (current, previous) = self.keys_of(generation);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys {
            let (start, end, _) = self.range(key);
            // The old bits answer for the current generation.
            pipe.add_command(self.set_bits(&current, key));
            pipe.cmd("GETRANGE").arg(&previous).arg(start).arg(end);
        }
        pipe.cmd("PEXPIREAT")
            .arg(&current)
            .arg(generation.expires_at_ms())
            .ignore();
        // Run twice, a key inserted by the first run reads as `MaybePresent`:
        // the dedup then asks Postgres, which has the last word.
        let pipe = &pipe;
        let replies: Vec<Value> = self
            .cache
            .idempotent(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        expect_answers(keys.len() * 2, replies.len())?;
        keys.iter()
            .zip(replies.chunks_exact(2))
            .map(|(key, pair)| {
                let in_current = match &pair[0] {
                    Value::Array(old) => old.iter().all(|b| matches!(b, Value::Int(1))),
                    other => return Err(unexpected("BITFIELD", other)),
                };
                let in_previous = match &pair[1] {
                    Value::BulkString(block) => {
                        let (_, _, offsets) = self.range(key);
                        all_set(block, offsets)
                    }
                    other => return Err(unexpected("GETRANGE", other)),
                };
                Ok(BloomVerdict::from_maybe_present(in_current || in_previous))
            })
            .collect()
    }

    /// `BITFIELD <generation> SET u1 <bit> 1 …` for `key`'s k bits.
    fn set_bits(&self, generation_key: &str, key: &DedupKey) -> redis::Cmd {
        let mut cmd = redis::cmd("BITFIELD");
        cmd.arg(generation_key);
        for bit in self.params.positions(key) {
            cmd.arg("SET").arg("u1").arg(bit).arg(1);
        }
        cmd
    }
}

/// Whether every bit at `offsets` (within the block, Redis' bit order: bit 0
/// is the high bit of the first byte) is set in `block`, which may be short
/// or empty where the string ends (those bits are 0).
fn all_set(block: &[u8], mut offsets: impl Iterator<Item = u64>) -> bool {
    offsets.all(|o| {
        block
            .get((o / 8) as usize)
            .is_some_and(|byte| byte & (0x80 >> (o % 8)) != 0)
    })
}

fn expect_answers(wanted: usize, got: usize) -> redis::RedisResult<()> {
    if wanted == got {
        return Ok(());
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Client,
        "the dedup filter got a different number of answers than it asked",
        format!("{wanted} asked, {got} answered"),
    )))
}

fn unexpected(command: &'static str, value: &Value) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected reply to the dedup filter",
        format!("{command} answered {value:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_read_in_redis_order() {
        // Bit 0 is the high bit of byte 0; bit 9 the second of byte 1.
        let block = [0x80, 0x40];
        assert!(all_set(&block, [0, 9].into_iter()));
        assert!(!all_set(&block, [1].into_iter()));
        // Past the end of a short string: unset.
        assert!(!all_set(&block, [16].into_iter()));
        assert!(!all_set(&[], [0].into_iter()));
        assert!(all_set(&[], std::iter::empty()));
    }
}
