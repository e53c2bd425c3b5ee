//! The collector's dedup: drops records it has already published, and never
//! drops one it has not.
//!
//! # Layers
//!
//! A record version is identified by a [`DedupKey`]: a 128-bit digest of its
//! source, its event id and its content, so an updated record (the score
//! changed) is a new key and an unchanged re-fetch is the same key.
//!
//! 1. **Local bloom filter** ([`LocalBloom`], `fastbloom`): this replica's own
//!    memory of the keys it marked. A hit skips the Redis round trip.
//! 2. **Shared bloom filter** ([`RedisBloom`]): a blocked bit array per time
//!    window in a Redis string, shared by every replica; a key's bits lie in
//!    one 64-byte block, read with one `GETRANGE` and set with one
//!    `BITFIELD`, a batch's commands in one pipeline (one round trip). Keys
//!    are inserted into the current generation and looked up in the current
//!    and the previous one; each generation expires after two windows, so
//!    the filters never fill up and the false-positive rate stays bounded
//!    however many records pass.
//! 3. **Exact store**: the `dedup_keys` table in Postgres. A bloom *hit* is
//!    only a "maybe": it is confirmed here before anything is called a
//!    duplicate, so a false positive costs one look-up, never a record. A
//!    bloom *miss* is certain: the key was not marked within the window.
//!
//! The filters are sized by [`BloomParams::for_items`] from
//! `DEDUP_EXPECTED_ITEMS` (n, per window) and `DEDUP_FP_RATE` (p, per check;
//! each of the two generations gets p/2), see [`DedupConfig`].
//!
//! # Protocol
//!
//! Marking a key seen must go with storing and publishing its record (a
//! record marked but never published would be lost), and two replicas may
//! fetch the same record. The collector does, per batch:
//!
//! 1. [`Dedup::check`]: cheap (bloom, then Postgres for the hits only).
//!    Drop the [`Verdict::Duplicate`]s.
//! 2. Open the Postgres transaction that stores the records, and
//!    [`Dedup::claim_in`] the [`Verdict::New`] ones first: one `INSERT` of
//!    their keys that exactly one caller wins per key, across replicas. Drop
//!    the lost ones: another replica has them. A second replica's claim of a
//!    key that is still uncommitted waits for the outcome: it loses when the
//!    first commits and wins when it rolls back.
//! 3. Store and publish the claimed records in that transaction, and commit
//!    only when both succeeded: a key is seen exactly when its records are,
//!    with one write per key. Any failure rolls the transaction back, claims
//!    included, so the keys are free again and the records are published
//!    when the source yields them again (a source must not advance its
//!    checkpoint past them). A replica that dies mid-transaction loses its
//!    claims with it; nothing waits for a lease.
//! 4. After the commit, [`Dedup::remember`] the won keys: their bloom bits,
//!    so a re-fetch is cheap.
//!
//! The claim is what makes the publish exactly-once across replicas; the
//! bloom filters only make it cheap.
//!
//! `dedup_keys` still has the `claimed_until` column of a two-step claim
//! (claim, publish, confirm, with a lease) that earlier releases used; it is
//! kept, as applied migrations never change. No lease is written now, but
//! rows an earlier release left are honoured: a live lease holds its key, an
//! expired one is taken over by [`Dedup::claim_in`] (so none is lost), and
//! the purge leaves live ones alone.
//!
//! # When Redis is down
//!
//! Every key goes to the exact store: `check` stays correct, just slower.
//! Claims are in Postgres alone anyway, and `remember` still sets the local
//! filter; the Redis bits are not set, so other replicas may see those keys
//! as `New` and then lose the claim. Each call that could not use Redis is
//! counted (`dedup_redis_fallbacks_total`); the outage is logged once when it
//! starts and once when Redis answers again, and for `DEDUP_REDIS_RETRY`
//! after a failure calls do not try Redis at all (no timeout per batch).
//!
//! # Metrics
//!
//! Counters, declared with their help in [`metrics::METRICS`]: keys checked
//! (`dedup_checks_total`), bloom hits (`dedup_bloom_hits_total`), duplicates
//! (`dedup_duplicates_total`), bloom hits the exact store did not confirm
//! (`dedup_false_positives_total`) and calls that went without Redis
//! (`dedup_redis_fallbacks_total`).
//!
//! The counters are registered when the dedup is built: install the metrics
//! recorder first. [`Dedup::stats`] gives the same counts for one instance.

mod clock;
mod config;
mod key;
mod local;
pub mod metrics;
mod params;
mod redis_bloom;
mod store;

use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantasy_cache::{Cache, RedisConfig};
use fantasy_db::Db;
use tracing::instrument;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    DEFAULT_EXPECTED_ITEMS, DEFAULT_FP_RATE, DEFAULT_REDIS_RETRY, DEFAULT_WINDOW, DedupConfig,
};
pub use key::DedupKey;
pub use local::LocalBloom;
pub use params::{BLOCK_BITS, BloomParams, Generation, MAX_BITS, MAX_HASHES, MIN_BITS};
pub use redis_bloom::RedisBloom;

use store::ExactStore;

/// What [`Dedup::check`] says about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Not seen: publish it, after winning its [`Dedup::claim_in`].
    New,
    /// Seen for certain (confirmed by the exact store, or an earlier key of
    /// the same batch): drop it.
    Duplicate,
}

impl Verdict {
    /// `true` for [`Verdict::New`].
    pub fn is_new(self) -> bool {
        self == Self::New
    }
}

/// What a bloom filter says about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BloomVerdict {
    /// Certainly never inserted (in the generations looked at).
    Absent,
    /// Inserted, or a false positive.
    MaybePresent,
}

impl BloomVerdict {
    /// `MaybePresent` when `maybe` is true.
    pub fn from_maybe_present(maybe: bool) -> Self {
        if maybe {
            Self::MaybePresent
        } else {
            Self::Absent
        }
    }
}

/// What one [`Dedup`] has counted since it was built (the same events as the
/// `dedup_*` metrics, for this instance alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Keys checked.
    pub checks: u64,
    /// Keys a bloom filter said may be seen.
    pub bloom_hits: u64,
    /// Keys confirmed seen.
    pub duplicates: u64,
    /// Bloom hits the exact store did not confirm.
    pub false_positives: u64,
    /// Calls that went without Redis.
    pub redis_fallbacks: u64,
    /// Redis outages begun (each logged once).
    pub redis_outages: u64,
}

struct Counters {
    checks: AtomicU64,
    bloom_hits: AtomicU64,
    duplicates: AtomicU64,
    false_positives: AtomicU64,
    redis_fallbacks: AtomicU64,
    redis_outages: AtomicU64,
    m_checks: ::metrics::Counter,
    m_bloom_hits: ::metrics::Counter,
    m_duplicates: ::metrics::Counter,
    m_false_positives: ::metrics::Counter,
    m_redis_fallbacks: ::metrics::Counter,
}

impl Counters {
    fn new() -> Self {
        Self {
            checks: AtomicU64::new(0),
            bloom_hits: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            false_positives: AtomicU64::new(0),
            redis_fallbacks: AtomicU64::new(0),
            redis_outages: AtomicU64::new(0),
            m_checks: ::metrics::counter!("dedup_checks_total"),
            m_bloom_hits: ::metrics::counter!("dedup_bloom_hits_total"),
            m_duplicates: ::metrics::counter!("dedup_duplicates_total"),
            m_false_positives: ::metrics::counter!("dedup_false_positives_total"),
            m_redis_fallbacks: ::metrics::counter!("dedup_redis_fallbacks_total"),
        }
    }

    fn add(atomic: &AtomicU64, counter: &::metrics::Counter, n: u64) {
        if n > 0 {
            atomic.fetch_add(n, Ordering::Relaxed);
            counter.increment(n);
        }
    }

    fn check(&self, checks: u64, bloom_hits: u64, duplicates: u64, false_positives: u64) {
        Self::add(&self.checks, &self.m_checks, checks);
        Self::add(&self.bloom_hits, &self.m_bloom_hits, bloom_hits);
        Self::add(&self.duplicates, &self.m_duplicates, duplicates);
        Self::add(
            &self.false_positives,
            &self.m_false_positives,
            false_positives,
        );
    }

    fn fallback(&self) {
        Self::add(&self.redis_fallbacks, &self.m_redis_fallbacks, 1);
    }

    fn snapshot(&self) -> DedupStats {
        DedupStats {
            checks: self.checks.load(Ordering::Relaxed),
            bloom_hits: self.bloom_hits.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            false_positives: self.false_positives.load(Ordering::Relaxed),
            redis_fallbacks: self.redis_fallbacks.load(Ordering::Relaxed),
            redis_outages: self.redis_outages.load(Ordering::Relaxed),
        }
    }
}

/// The way to Redis: connected lazily (a replica starts, and stays correct,
/// while Redis is down), and skipped for a while after a failure.
struct RedisLink {
    config: Option<RedisConfig>,
    params: BloomParams,
    bloom: tokio::sync::OnceCell<RedisBloom>,
    retry: Duration,
    // Not held across an await.
    retry_at: Mutex<Option<Instant>>,
    down: AtomicBool,
}

impl RedisLink {
    /// The shared filter, or `None` when Redis is to be skipped now: it
    /// failed less than `retry` ago, or connecting failed just now.
    async fn bloom(&self, counters: &Counters) -> Option<&RedisBloom> {
        if let Ok(retry_at) = self.retry_at.lock()
            && let Some(at) = *retry_at
            && Instant::now() < at
        {
            return None;
        }
        if let Some(bloom) = self.bloom.get() {
            return Some(bloom);
        }
        let config = self.config.as_ref()?;
        match self
            .bloom
            .get_or_try_init(|| async {
                Cache::connect(config)
                    .await
                    .map(|cache| RedisBloom::new(cache, self.params))
            })
            .await
        {
            Ok(bloom) => Some(bloom),
            Err(e) => {
                self.failed(&e, counters);
                None
            }
        }
    }

    fn failed(&self, error: &dyn fmt::Display, counters: &Counters) {
        if let Ok(mut retry_at) = self.retry_at.lock() {
            *retry_at = Some(Instant::now() + self.retry);
        }
        if !self.down.swap(true, Ordering::SeqCst) {
            counters.redis_outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = %error,
                retry_in = ?self.retry,
                "Redis unavailable: dedup falls back to Postgres alone until it answers"
            );
        }
    }

    fn succeeded(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            if let Ok(mut retry_at) = self.retry_at.lock() {
                *retry_at = None;
            }
            tracing::info!("Redis answers again: dedup uses the shared bloom filter");
        }
    }
}

/// The local filters of the current and the previous generation.
#[derive(Default)]
struct LocalGenerations {
    current: Option<(u64, Arc<LocalBloom>)>,
    previous: Option<(u64, Arc<LocalBloom>)>,
}

impl LocalGenerations {
    /// The filters for `index`, rotating when the window moved on. A clock
    /// that goes back keeps the newest filters: what the local filters hold
    /// changes only how many keys skip Redis, never a verdict.
    fn at(
        &mut self,
        index: u64,
        params: BloomParams,
    ) -> (Arc<LocalBloom>, Option<Arc<LocalBloom>>) {
        match &self.current {
            Some((i, _)) if *i >= index => {}
            Some((i, _)) if *i + 1 == index => {
                self.previous = self.current.take();
                self.current = Some((index, Arc::new(LocalBloom::new(params))));
            }
            _ => {
                self.previous = None;
                self.current = Some((index, Arc::new(LocalBloom::new(params))));
            }
        }
        let current = self
            .current
            .as_ref()
            .map(|(_, b)| Arc::clone(b))
            .unwrap_or_else(|| Arc::new(LocalBloom::new(params)));
        (current, self.previous.as_ref().map(|(_, b)| Arc::clone(b)))
    }
}

struct Inner {
    config: DedupConfig,
    params: BloomParams,
    store: ExactStore,
    redis: RedisLink,
    local: Option<Mutex<LocalGenerations>>,
    clock: Arc<dyn Clock>,
    counters: Counters,
}

/// The dedup of one collector replica. Cheap to clone; clones share
/// everything.
#[derive(Clone)]
pub struct Dedup {
    inner: Arc<Inner>,
}

impl fmt::Debug for Dedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("config", &self.inner.config)
            .field("params", &self.inner.params)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Dedup`]: see [`Dedup::builder`].
#[derive(Debug)]
pub struct DedupBuilder {
    config: DedupConfig,
    db: Db,
    redis: Option<RedisConfig>,
    cache: Option<Cache>,
    clock: Arc<dyn Clock>,
}

impl DedupBuilder {
    /// Redis from settings: connected on first use, and again after a
    /// failure, so building never waits for Redis.
    #[must_use]
    pub fn redis(mut self, config: RedisConfig) -> Self {
        self.redis = Some(config);
        self
    }

    /// Redis through a connected [`Cache`] (its prefix applies).
    #[must_use]
    pub fn cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The clock that picks generations (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the settings and builds the dedup; connects to nothing.
    pub fn build(self) -> anyhow::Result<Dedup> {
        let params = self
            .config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid dedup settings: {e}"))?;
        if self.redis.is_none() && self.cache.is_none() {
            anyhow::bail!("the dedup needs Redis: give it a RedisConfig or a Cache");
        }
        let bloom = tokio::sync::OnceCell::new_with(self.cache.map(|c| RedisBloom::new(c, params)));
        tracing::debug!(config = %self.config, "dedup ready");
        Ok(Dedup {
            inner: Arc::new(Inner {
                local: self
                    .config
                    .local_filter
                    .then(|| Mutex::new(LocalGenerations::default())),
                redis: RedisLink {
                    config: self.redis,
                    params,
                    bloom,
                    retry: self.config.redis_retry,
                    retry_at: Mutex::new(None),
                    down: AtomicBool::new(false),
                },
                store: ExactStore::new(self.db),
                config: self.config,
                params,
                clock: self.clock,
                counters: Counters::new(),
            }),
        })
    }
}

impl Dedup {
    /// Starts building a dedup over `db` (migrated: `dedup_keys` must
    /// exist); Redis comes next, through [`DedupBuilder::redis`] or
    /// [`DedupBuilder::cache`].
    ///
    /// ```no_run
    /// # async fn example(db: fantasy_db::Db) -> anyhow::Result<()> {
    /// use fantasy_dedup::{Dedup, DedupConfig, DedupKey, Verdict};
    ///
    /// let dedup = Dedup::builder(DedupConfig::default(), db.clone())
    ///     .redis(fantasy_cache::RedisConfig::new("redis://127.0.0.1:6379"))
    ///     .build()?;
    /// let keys = [DedupKey::new("espn", "401585601", br#"{"home":101,"away":99}"#)];
    /// let verdicts = dedup.check(&keys).await?;
    /// let new: Vec<DedupKey> = keys
    ///     .iter()
    ///     .zip(&verdicts)
    ///     .filter(|(_, v)| **v == Verdict::New)
    ///     .map(|(k, _)| *k)
    ///     .collect();
    /// let mut tx = db.pool().begin().await?;
    /// let won = dedup.claim_in(&mut tx, &new).await?;
    /// let mine: Vec<DedupKey> = new.iter().zip(&won).filter(|(_, w)| **w).map(|(k, _)| *k).collect();
    /// // ... store and publish the records of `mine` in `tx`; then (on a
    /// // failure, drop or roll back `tx` instead: the keys are free again):
    /// tx.commit().await?;
    /// dedup.remember(&mine).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(config: DedupConfig, db: Db) -> DedupBuilder {
        DedupBuilder {
            config,
            db,
            redis: None,
            cache: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DedupConfig {
        &self.inner.config
    }

    /// The shape of each generation's filter.
    pub fn params(&self) -> BloomParams {
        self.inner.params
    }

    /// The generation the clock is in now.
    pub fn generation(&self) -> Generation {
        Generation::at(self.inner.clock.now_unix_ms(), self.inner.config.window)
    }

    /// What this instance has counted so far.
    pub fn stats(&self) -> DedupStats {
        self.inner.counters.snapshot()
    }

    fn local_filters(
        &self,
        generation: Generation,
    ) -> Option<(Arc<LocalBloom>, Option<Arc<LocalBloom>>)> {
        let local = self.inner.local.as_ref()?;
        // A poisoned lock only means a panic elsewhere while rotating; the
        // filters are an accelerator, so go on without them.
        let mut gens = local.lock().ok()?;
        Some(gens.at(generation.index, self.inner.params))
    }

    /// One verdict per key, in order. A bloom miss is `New`; a bloom hit is
    /// `Duplicate` only when the exact store has the key (committed, or held
    /// by a live lease an earlier release left); a key repeated within
    /// `keys` is `Duplicate` after its first occurrence. Marks nothing.
    ///
    /// An error (Postgres failed) decides nothing: check again later.
    #[instrument(skip_all, fields(keys = keys.len()))]
    pub async fn check(&self, keys: &[DedupKey]) -> anyhow::Result<Vec<Verdict>> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Via {
            Local,
            Redis,
            // Redis could not be asked: the exact store decides alone.
            Unverified,
        }

        let inner = &self.inner;
        let mut verdicts = vec![Verdict::New; keys.len()];
        if keys.is_empty() {
            return Ok(verdicts);
        }
        let mut first: HashMap<DedupKey, usize> = HashMap::with_capacity(keys.len());
        let mut undecided: Vec<usize> = Vec::with_capacity(keys.len());
        let mut repeats = 0u64;
        for (i, key) in keys.iter().enumerate() {
            match first.entry(*key) {
                Entry::Occupied(_) => {
                    verdicts[i] = Verdict::Duplicate;
                    repeats += 1;
                }
                Entry::Vacant(e) => {
                    e.insert(i);
                    undecided.push(i);
                }
            }
        }

        let generation = self.generation();
        let local = self.local_filters(generation);
        let mut candidates: Vec<(usize, Via)> = Vec::new();
        if let Some((current, previous)) = &local {
            undecided.retain(|&i| {
                let hit = current.contains(&keys[i])
                    || previous.as_ref().is_some_and(|p| p.contains(&keys[i]));
                if hit {
                    candidates.push((i, Via::Local));
                }
                !hit
            });
        }
        if !undecided.is_empty() {
            let probe: Vec<DedupKey> = undecided.iter().map(|&i| keys[i]).collect();
            match self.redis_check(generation, &probe).await {
                Some(answers) => candidates.extend(
                    undecided
                        .iter()
                        .zip(answers)
                        .filter(|(_, a)| *a == BloomVerdict::MaybePresent)
                        .map(|(&i, _)| (i, Via::Redis)),
                ),
                None => candidates.extend(undecided.iter().map(|&i| (i, Via::Unverified))),
            }
        }

        let probe: Vec<DedupKey> = candidates.iter().map(|&(i, _)| keys[i]).collect();
        let seen = inner.store.seen(&probe).await?;
        let (mut bloom_hits, mut false_positives, mut duplicates) = (0u64, 0u64, repeats);
        let mut learned = Vec::new();
        for &(i, via) in &candidates {
            let hit = via != Via::Unverified;
            bloom_hits += u64::from(hit);
            if seen.contains(&keys[i]) {
                verdicts[i] = Verdict::Duplicate;
                duplicates += 1;
                if via != Via::Local {
                    learned.push(keys[i]);
                }
            } else {
                false_positives += u64::from(hit);
            }
        }
        // Seen keys this replica's filter lacked (marked elsewhere): the next
        // re-fetch of them skips Redis.
        if let Some((current, _)) = &local {
            current.insert_all(&learned);
        }
        inner
            .counters
            .check(keys.len() as u64, bloom_hits, duplicates, false_positives);
        Ok(verdicts)
    }

    async fn redis_check(
        &self,
        generation: Generation,
        keys: &[DedupKey],
    ) -> Option<Vec<BloomVerdict>> {
        let inner = &self.inner;
        let Some(bloom) = inner.redis.bloom(&inner.counters).await else {
            inner.counters.fallback();
            return None;
        };
        match bloom.check(generation, keys).await {
            Ok(answers) => {
                inner.redis.succeeded();
                Some(answers)
            }
            Err(e) => {
                inner.redis.failed(&e, &inner.counters);
                inner.counters.fallback();
                None
            }
        }
    }

    /// Claims keys inside the caller's transaction (`store::claim_on`): one
    /// `bool` per key, `true` where this call took it. A key is taken when it
    /// is new (or holds an expired lease an earlier release left), and is
    /// seen once the transaction commits; a rollback gives it back. Exactly
    /// one caller takes a key, across replicas: another's claim of a key
    /// still uncommitted waits for that transaction to end. Use it at the
    /// start of the transaction that stores the records, then
    /// [`Dedup::remember`] the taken keys after the commit. A key repeated in
    /// `keys` is taken once.
    #[instrument(skip_all, fields(keys = keys.len()))]
    pub async fn claim_in(
        &self,
        conn: &mut sqlx::PgConnection,
        keys: &[DedupKey],
    ) -> anyhow::Result<Vec<bool>> {
        let won = store::claim_on(conn, keys).await?;
        let mut taken = HashSet::with_capacity(won.len());
        Ok(keys
            .iter()
            .map(|k| won.contains(k) && taken.insert(*k))
            .collect())
    }

    /// Sets the keys' bits in the local and the shared filters, after the
    /// keys are seen in Postgres (the commit of [`Dedup::claim_in`]'s
    /// transaction). Cannot fail: without Redis the keys are still in
    /// Postgres (the fallback is counted), which keeps every verdict right.
    #[instrument(skip_all, fields(keys = keys.len()))]
    pub async fn remember(&self, keys: &[DedupKey]) {
        if keys.is_empty() {
            return;
        }
        let inner = &self.inner;
        let generation = self.generation();
        if let Some((current, _)) = self.local_filters(generation) {
            current.insert_all(keys);
        }
        match inner.redis.bloom(&inner.counters).await {
            Some(bloom) => match bloom.insert(generation, keys).await {
                Ok(()) => inner.redis.succeeded(),
                Err(e) => {
                    inner.redis.failed(&e, &inner.counters);
                    inner.counters.fallback();
                }
            },
            None => inner.counters.fallback(),
        }
    }

    /// Deletes up to `limit` keys first seen more than `age` ago from the
    /// exact store (live leases of an earlier release excepted); returns how
    /// many. Keep `age` well
    /// above two windows and above how far back the sources re-send records:
    /// a purged key that comes again is published again.
    pub async fn purge_older_than(&self, age: Duration, limit: u32) -> anyhow::Result<u64> {
        self.inner.store.purge(age, limit).await
    }
}
