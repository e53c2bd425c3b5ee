//! The bloom filter shared by every replica: a bit array per generation in a
//! Redis string, read and written by one Lua script.

use std::fmt;

use fantasy_cache::Cache;

use crate::{BloomParams, BloomVerdict, DedupKey, Generation};

/// Keys per script call. A script blocks Redis while it runs; 500 keys are at
/// most about 2,000 `GETBIT`/`BITFIELD` calls, a few milliseconds.
/// Larger batches become several calls in one pipeline (one round trip).
const KEYS_PER_CALL: usize = 500;

/// What the script does with each key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Report whether each key is in the current or the previous generation.
    Check = 0,
    /// Set each key's bits in the current generation.
    Insert = 1,
    /// Both, atomically, key by key.
    CheckAndInsert = 2,
}

/// The shared filter: generation `g` is the Redis string
/// `<prefix>dedup:{bloom}:<g>` of m bits (the `{bloom}` hash tag keeps every
/// generation in one Redis Cluster slot, as a script's keys must be).
///
/// Each call sends the keys' two seeds ([`BloomParams::seeds`]), not their k
/// positions: the script walks the same enhanced double-hashing sequence as
/// [`BloomParams::positions`], so a batch of 1,000 keys is 2,000 numbers on
/// the wire. Every method is one round trip, whatever the batch size.
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
        self.cache.key(&format!("dedup:{{bloom}}:{index}"))
    }

    /// For each key, whether it may be in `generation` or the one before.
    pub async fn check(
        &self,
        generation: Generation,
        keys: &[DedupKey],
    ) -> redis::RedisResult<Vec<BloomVerdict>> {
        self.run(Mode::Check, generation, keys).await
    }

    /// Sets every key's bits in `generation` and (re)sets its expiry.
    pub async fn insert(
        &self,
        generation: Generation,
        keys: &[DedupKey],
    ) -> redis::RedisResult<()> {
        self.run(Mode::Insert, generation, keys).await.map(|_| ())
    }

    /// For each key, whether it may have been in `generation` or the one
    /// before, and sets its bits in `generation`: atomically per script call
    /// (no other client's command runs in between), in order (a key repeated
    /// in `keys` is `MaybePresent` the second time).
    pub async fn check_and_insert(
        &self,
        generation: Generation,
        keys: &[DedupKey],
    ) -> redis::RedisResult<Vec<BloomVerdict>> {
        self.run(Mode::CheckAndInsert, generation, keys).await
    }

    async fn run(
        &self,
        mode: Mode,
        generation: Generation,
        keys: &[DedupKey],
    ) -> redis::RedisResult<Vec<BloomVerdict>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let script = bloom_script();
        let current = self.generation_key(generation.index);
        // Generation 0 has no predecessor; any key that is never written
        // reads as all zeros, which is what "no previous generation" means.
        let previous = match generation.previous() {
            Some(g) => self.generation_key(g.index),
            None => self.cache.key("dedup:{bloom}:none"),
        };
        let mut pipe = redis::pipe();
        // EVALSHA, with the script loaded in the same round trip: costs one
        // SHA-1 of a short text on the server and keeps working after a
        // Redis restart (which forgets loaded scripts).
        pipe.load_script(script).ignore();
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let mut call = script.prepare_invoke();
            call.key(&current)
                .key(&previous)
                .arg(mode as u8)
                .arg(self.params.bits)
                .arg(self.params.hashes)
                .arg(generation.expires_at_ms());
            for key in chunk {
                let (x, y) = self.params.seeds(key);
                call.arg(x).arg(y);
            }
            pipe.invoke_script(&call);
        }
        let mut conn = self.cache.connection();
        let replies: Vec<Vec<u8>> = pipe.query_async(&mut conn).await?;
        if mode == Mode::Insert {
            return Ok(Vec::new());
        }
        // One string of '0'/'1' per call: a bulk string is cheaper to build
        // in Lua and to parse here than an array of integers.
        let verdicts: Vec<BloomVerdict> = replies
            .iter()
            .flatten()
            .map(|&b| BloomVerdict::from_maybe_present(b == b'1'))
            .collect();
        if verdicts.len() != keys.len() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "dedup script answered for a different number of keys",
                format!("{} keys, {} answers", keys.len(), verdicts.len()),
            )));
        }
        Ok(verdicts)
    }
}

/// The script, loaded once per process.
///
/// KEYS[1]: the current generation, KEYS[2]: the previous one.
/// ARGV[1]: mode (0 check, 1 insert, 2 check and insert); ARGV[2]: m;
/// ARGV[3]: k; ARGV[4]: when KEYS[1] expires (Unix ms); then two seeds
/// (x, y) per item. Returns one character per item, '1' for "may be
/// present", '0' for "certainly absent" (empty in insert mode).
///
/// Positions follow enhanced double hashing exactly as the Rust side does:
/// `pos = x; x = x + y (mod m); y = y + i (mod m)`. Lua numbers are doubles,
/// exact up to 2^53, and nothing here exceeds 2m < 2^33. A lookup reads the
/// first bit with `GETBIT` (a new key usually stops there) and the others
/// with one `BITFIELD`; an insert sets all k bits with one `BITFIELD`, whose
/// answer (the old bits) is also the lookup in the current generation.
fn bloom_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        redis::Script::new(
            r#"
            local mode = tonumber(ARGV[1])
            local m = tonumber(ARGV[2])
            local k = tonumber(ARGV[3])
            local n = (#ARGV - 4) / 2
            local cur, prev = KEYS[1], KEYS[2]
            local cur_exists = redis.call('EXISTS', cur) == 1
            local prev_exists = redis.call('EXISTS', prev) == 1

            -- The k positions of one item (at most MAX_HASHES = 32).
            local function positions(x, y)
                local pos = {}
                for i = 0, k - 1 do
                    pos[i + 1] = x
                    x = x + y
                    if x >= m then x = x - m end
                    y = y + i
                    if y >= m then y = y - m end
                end
                return pos
            end

            -- One GETBIT first: a new item is usually out after it (the
            -- other positions are not even computed). The rest in one
            -- BITFIELD call rather than k - 1 GETBITs (each redis.call costs
            -- about a microsecond). `pos` may be given, or nil.
            local function has(key, x, y, pos)
                if redis.call('GETBIT', key, x) == 0 then
                    return false
                end
                if k == 1 then return true end
                pos = pos or positions(x, y)
                local args = {}
                for i = 2, k do
                    args[#args + 1] = 'GET'
                    args[#args + 1] = 'u1'
                    args[#args + 1] = pos[i]
                end
                for _, bit in ipairs(redis.call('BITFIELD', key, unpack(args))) do
                    if bit == 0 then return false end
                end
                return true
            end

            -- Sets the bits in one BITFIELD call; true when all were set
            -- already (the item may have been in this generation).
            local function set(key, pos)
                local args = {}
                for i = 1, k do
                    args[#args + 1] = 'SET'
                    args[#args + 1] = 'u1'
                    args[#args + 1] = pos[i]
                    args[#args + 1] = 1
                end
                local all = true
                for _, bit in ipairs(redis.call('BITFIELD', key, unpack(args))) do
                    if bit == 0 then all = false end
                end
                return all
            end

            local out = {}
            for i = 1, n do
                local x = tonumber(ARGV[3 + 2 * i])
                local y = tonumber(ARGV[4 + 2 * i])
                if mode == 0 then
                    local hit = (cur_exists and has(cur, x, y, nil))
                        or (prev_exists and has(prev, x, y, nil))
                    out[i] = hit and '1' or '0'
                else
                    local pos = positions(x, y)
                    -- The old bits answer for the current generation.
                    local hit = set(cur, pos)
                    if mode == 2 then
                        hit = hit or (prev_exists and has(prev, x, y, pos))
                        out[i] = hit and '1' or '0'
                    end
                end
            end
            if mode ~= 0 and n > 0 then
                redis.call('PEXPIREAT', cur, ARGV[4])
            end
            return table.concat(out)
            "#,
        )
    })
}
