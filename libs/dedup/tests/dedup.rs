//! The dedup against the real local Postgres (a fresh database per test) and
//! Redis (a unique key prefix per test).
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fantasy_cache::{Cache, RedisConfig};
use fantasy_db::testing::TestDb;
use fantasy_db::{Db, DbConfig};
use fantasy_dedup::{
    BloomParams, BloomVerdict, Clock as _, Dedup, DedupConfig, DedupKey, Generation, ManualClock,
    RedisBloom, SystemClock, Verdict,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

const HOUR: Duration = Duration::from_secs(3600);

fn redis_config() -> RedisConfig {
    let url = std::env::var("FANTASY_TEST_REDIS_URL")
        .unwrap_or_else(|_| fantasy_cache::DEFAULT_REDIS_URL.to_owned());
    let mut cfg = RedisConfig::new(url);
    cfg.prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    cfg
}

fn config() -> DedupConfig {
    DedupConfig {
        expected_items: 100_000,
        fp_rate: 0.01,
        window: HOUR,
        ..DedupConfig::default()
    }
}

fn dedup(db: &Db, cfg: DedupConfig, redis: RedisConfig) -> Dedup {
    Dedup::builder(cfg, db.clone())
        .redis(redis)
        .build()
        .unwrap()
}

fn keys(tag: &str, n: usize) -> Vec<DedupKey> {
    (0..n)
        .map(|i| DedupKey::new("test", &format!("{tag}-{i}"), b"v1"))
        .collect()
}

/// A second pool on the same database, as another replica would have.
async fn another_pool(t: &TestDb) -> Db {
    let mut cfg = DbConfig::new(&t.url);
    cfg.create_database = false;
    cfg.min_connections = 0;
    cfg.max_connections = 5;
    Db::connect(&cfg).await.unwrap()
}

fn all(v: &[Verdict], want: Verdict) -> bool {
    v.iter().all(|x| *x == want)
}

/// Makes `keys` seen as the collector does: claimed in a transaction on
/// `db` (`d`'s database), committed, then remembered in the bloom filters.
async fn store_seen(d: &Dedup, db: &Db, keys: &[DedupKey]) {
    let mut tx = db.pool().begin().await.unwrap();
    d.claim_in(&mut tx, keys).await.unwrap();
    tx.commit().await.unwrap();
    d.remember(keys).await;
}

/// `claim_in` in a transaction of its own on `db`, rolled back: which keys
/// could be taken now, changing nothing.
async fn could_claim(d: &Dedup, db: &Db, keys: &[DedupKey]) -> Vec<bool> {
    let mut tx = db.pool().begin().await.unwrap();
    let won = d.claim_in(&mut tx, keys).await.unwrap();
    tx.rollback().await.unwrap();
    won
}

/// A pending claim of the two-step protocol earlier releases used, as one
/// of them may have left it: `key` with a lease ending `secs` from now (in
/// the past when negative).
async fn leave_lease(db: &Db, key: DedupKey, secs: f64) {
    sqlx::query(
        "INSERT INTO dedup_keys (key, claimed_until) \
         VALUES ($1, now() + make_interval(secs => $2))",
    )
    .bind(key.as_bytes().to_vec())
    .bind(secs)
    .execute(db.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn marked_keys_are_duplicates_when_checked_again() {
    let t = TestDb::new().await.unwrap();
    let d = dedup(&t.db, config(), redis_config());
    let ks = keys("a", 300);
    assert!(all(&d.check(&ks).await.unwrap(), Verdict::New));
    // Checking marks nothing.
    assert!(all(&d.check(&ks).await.unwrap(), Verdict::New));
    store_seen(&d, &t.db, &ks).await;
    assert!(all(&d.check(&ks).await.unwrap(), Verdict::Duplicate));
    let s = d.stats();
    assert_eq!(s.checks, 900);
    assert_eq!(s.duplicates, 300);
    assert!(s.bloom_hits >= 300, "{s:?}");
    assert_eq!(s.bloom_hits, s.duplicates + s.false_positives, "{s:?}");
    assert_eq!(s.redis_fallbacks, 0);
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn changed_content_is_a_new_key_and_an_unchanged_refetch_is_not() {
    let t = TestDb::new().await.unwrap();
    let d = dedup(&t.db, config(), redis_config());
    let v1 = DedupKey::new("espn", "g1", br#"{"home":0,"away":0}"#);
    store_seen(&d, &t.db, &[v1]).await;
    let refetch = DedupKey::new("espn", "g1", br#"{"home":0,"away":0}"#);
    let scored = DedupKey::new("espn", "g1", br#"{"home":7,"away":0}"#);
    let verdicts = d.check(&[refetch, scored]).await.unwrap();
    assert_eq!(verdicts, [Verdict::Duplicate, Verdict::New]);
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_key_repeated_within_a_batch_is_new_once() {
    let t = TestDb::new().await.unwrap();
    let d = dedup(&t.db, config(), redis_config());
    let [a, b] = [DedupKey::new("s", "a", b""), DedupKey::new("s", "b", b"")];
    let verdicts = d.check(&[a, b, a, a]).await.unwrap();
    assert_eq!(
        verdicts,
        [
            Verdict::New,
            Verdict::New,
            Verdict::Duplicate,
            Verdict::Duplicate
        ]
    );
    assert_eq!(
        could_claim(&d, &t.db, &[a, a, b]).await,
        [true, false, true]
    );
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_replica_sees_through_redis_what_another_marked() {
    let t = TestDb::new().await.unwrap();
    let redis = redis_config();
    let a = dedup(&t.db, config(), redis.clone());
    let b = dedup(&another_pool(&t).await, config(), redis);
    let ks = keys("shared", 200);
    store_seen(&a, &t.db, &ks).await;
    // B's local filter is empty: its bloom hits come from Redis.
    assert!(all(&b.check(&ks).await.unwrap(), Verdict::Duplicate));
    assert!(b.stats().bloom_hits >= 200);
    // And again, now from its local filter, with the same answers.
    assert!(all(&b.check(&ks).await.unwrap(), Verdict::Duplicate));
    assert_eq!(b.stats().duplicates, 400);
    t.drop_database().await.unwrap();
}

/// Eight claimers on two replicas (two pools), each walking the same keys in
/// its own order, one transaction per batch: every key is taken by exactly
/// one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_key_is_claimed_exactly_once_under_concurrency() {
    let t = TestDb::new().await.unwrap();
    let redis = redis_config();
    let pools = [t.db.clone(), another_pool(&t).await];
    let replicas = [
        dedup(&pools[0], config(), redis.clone()),
        dedup(&pools[1], config(), redis),
    ];
    let ks = Arc::new(keys("race", 600));
    let mut tasks = Vec::new();
    for task in 0..8usize {
        let d = replicas[task % 2].clone();
        let db = pools[task % 2].clone();
        let ks = Arc::clone(&ks);
        tasks.push(tokio::spawn(async move {
            // Each task walks the keys in its own order, in batches of 50.
            let mut order: Vec<DedupKey> = ks.iter().copied().collect();
            order.rotate_left(task * 75);
            if task % 2 == 1 {
                order.reverse();
            }
            let mut won = Vec::new();
            for batch in order.chunks(50) {
                let mut tx = db.pool().begin().await.unwrap();
                let claimed = d.claim_in(&mut tx, batch).await.unwrap();
                tx.commit().await.unwrap();
                won.extend(
                    batch
                        .iter()
                        .zip(claimed)
                        .filter(|(_, w)| *w)
                        .map(|(k, _)| *k),
                );
            }
            won
        }));
    }
    let mut winners: HashMap<DedupKey, usize> = HashMap::new();
    for task in tasks {
        for key in task.await.unwrap() {
            *winners.entry(key).or_default() += 1;
        }
    }
    assert_eq!(winners.len(), ks.len(), "some key was never won");
    assert!(winners.values().all(|&n| n == 1), "a key was won twice");
    t.drop_database().await.unwrap();
}

/// Two replicas fed the same records in different orders, re-sent on every
/// poll as a scoreboard does, with publishes that fail now and then (except
/// in the last poll: a freed record is published when it comes again):
/// every record is published, and exactly once. Each claims the new keys
/// of a batch as the collector does: `claim_in` the transaction that stores
/// the records, commit (or roll back when the publish failed), then
/// `remember`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_in_the_storing_transaction_publish_every_record_exactly_once() {
    let t = TestDb::new().await.unwrap();
    let redis = redis_config();
    let pools = [t.db.clone(), another_pool(&t).await];
    let records = Arc::new(keys("record", 400));
    let published = Arc::new(std::sync::Mutex::new(Vec::<DedupKey>::new()));
    let mut tasks = Vec::new();
    for (r, db) in pools.iter().enumerate() {
        let d = dedup(db, config(), redis.clone());
        let (db, records, published) = (db.clone(), Arc::clone(&records), Arc::clone(&published));
        tasks.push(tokio::spawn(async move {
            let mut order: Vec<DedupKey> = records.iter().copied().collect();
            if r == 1 {
                order.reverse();
            }
            let mut attempt = 0u64;
            for poll in 0..5 {
                for batch in order.chunks(40) {
                    let verdicts = d.check(batch).await.unwrap();
                    let new: Vec<DedupKey> = batch
                        .iter()
                        .zip(&verdicts)
                        .filter(|(_, v)| v.is_new())
                        .map(|(k, _)| *k)
                        .collect();
                    attempt += 1;
                    let failed = poll < 4 && attempt.is_multiple_of(3);
                    let mut tx = db.pool().begin().await.unwrap();
                    let won = d.claim_in(&mut tx, &new).await.unwrap();
                    let mine: Vec<DedupKey> = new
                        .iter()
                        .zip(won)
                        .filter(|(_, w)| *w)
                        .map(|(k, _)| *k)
                        .collect();
                    if failed {
                        tx.rollback().await.unwrap();
                    } else {
                        published.lock().unwrap().extend(&mine);
                        tx.commit().await.unwrap();
                        d.remember(&mine).await;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let published = published.lock().unwrap().clone();
    let unique: HashSet<DedupKey> = published.iter().copied().collect();
    assert_eq!(unique.len(), records.len(), "a record was lost");
    assert_eq!(
        published.len(),
        records.len(),
        "a record was published twice"
    );
    t.drop_database().await.unwrap();
}

/// A key claimed in an open transaction: a check meanwhile says `New` (and
/// does not wait), a second replica's claim waits for it, then loses
/// (commit) or wins (rollback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_in_a_transaction_holds_the_key_until_it_ends() {
    let t = TestDb::new().await.unwrap();
    let other_db = another_pool(&t).await;
    let first = dedup(&t.db, config(), redis_config());
    let second = dedup(&other_db, config(), redis_config());
    let [a, b] = ["a", "b"].map(|id| DedupKey::new("s", id, b""));

    for (commit, expect_second) in [(true, false), (false, true)] {
        let key = if commit { a } else { b };
        let mut tx = t.db.pool().begin().await.unwrap();
        assert_eq!(
            first.claim_in(&mut tx, &[key, key]).await.unwrap(),
            [true, false]
        );
        let waiting = {
            let (second, db) = (second.clone(), other_db.clone());
            tokio::spawn(async move {
                let mut tx = db.pool().begin().await.unwrap();
                let won = second.claim_in(&mut tx, &[key]).await.unwrap();
                tx.commit().await.unwrap();
                won
            })
        };
        // Uncommitted, and not in the bloom filters (they learn a key after
        // the commit): a re-fetch checks `New` without waiting, and its
        // claim is what waits.
        assert_eq!(second.check(&[key]).await.unwrap(), [Verdict::New]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "the second claim must wait for the first"
        );
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        assert_eq!(waiting.await.unwrap(), [expect_second], "commit: {commit}");
        // Either way one of them committed it: seen for good.
        assert_eq!(could_claim(&first, &t.db, &[key]).await, [false]);
        first.remember(&[key]).await;
        assert_eq!(first.check(&[key]).await.unwrap(), [Verdict::Duplicate]);
    }
    t.drop_database().await.unwrap();
}

/// A replica that dies in the middle of its transaction (its connection
/// gone, no rollback sent): Postgres aborts the transaction, so the other
/// replica's waiting claim takes the key; the record is not lost and no
/// lease has to run out first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_replica_died_mid_transaction_is_taken_by_another() {
    use sqlx::Connection as _;

    let t = TestDb::new().await.unwrap();
    let redis = redis_config();
    let alive_db = another_pool(&t).await;
    let dead = dedup(&t.db, config(), redis.clone());
    let alive = dedup(&alive_db, config(), redis);
    let k = DedupKey::new("s", "orphan", b"");

    let mut conn = sqlx::PgConnection::connect(&t.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    assert_eq!(dead.claim_in(&mut conn, &[k]).await.unwrap(), [true]);
    let waiting = {
        let (alive, db) = (alive.clone(), alive_db.clone());
        tokio::spawn(async move {
            let mut tx = db.pool().begin().await.unwrap();
            let won = alive.claim_in(&mut tx, &[k]).await.unwrap();
            tx.commit().await.unwrap();
            alive.remember(&[k]).await;
            won
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the claim must wait for the first");
    // `dead` crashes here: neither publish, nor commit, nor rollback.
    drop(conn);
    let won = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting claim must end once the first replica is gone")
        .unwrap();
    assert_eq!(won, [true]);
    // Committed by `alive`: seen for good, by both.
    assert_eq!(dead.check(&[k]).await.unwrap(), [Verdict::Duplicate]);
    assert_eq!(could_claim(&dead, &t.db, &[k]).await, [false]);
    t.drop_database().await.unwrap();
}

/// Pending claims an earlier release's two-step protocol left in
/// `dedup_keys` (`claimed_until`): a live lease holds its key (a check says
/// `Duplicate` once a bloom filter hits, a claim loses); an expired one (that
/// replica died) is new again and taken over, for good.
#[tokio::test]
async fn leases_an_earlier_release_left_are_honoured() {
    let t = TestDb::new().await.unwrap();
    let d = dedup(&t.db, config(), redis_config());
    let [live, expired] = ["live", "expired"].map(|id| DedupKey::new("s", id, b""));
    leave_lease(&t.db, live, 600.0).await;
    leave_lease(&t.db, expired, -1.0).await;

    assert_eq!(
        could_claim(&d, &t.db, &[live, expired]).await,
        [false, true]
    );
    // The bloom filters knew neither (a lease was set before the publish):
    // a miss is `New`; once they hit, the exact store decides.
    d.remember(&[live, expired]).await;
    assert_eq!(
        d.check(&[live, expired]).await.unwrap(),
        [Verdict::Duplicate, Verdict::New]
    );

    let mut tx = t.db.pool().begin().await.unwrap();
    assert_eq!(
        d.claim_in(&mut tx, &[live, expired]).await.unwrap(),
        [false, true]
    );
    tx.commit().await.unwrap();
    // Taken over: no lease left to run out.
    let confirmed: bool =
        sqlx::query_scalar("SELECT claimed_until IS NULL FROM dedup_keys WHERE key = $1")
            .bind(expired.as_bytes().to_vec())
            .fetch_one(t.db.pool())
            .await
            .unwrap();
    assert!(confirmed);
    assert_eq!(
        d.check(&[live, expired]).await.unwrap(),
        [Verdict::Duplicate, Verdict::Duplicate]
    );
    t.drop_database().await.unwrap();
}

/// A batch of new keys with one stored key among them: the fast path's
/// plain INSERT fails on it, inside its savepoint; the transaction goes on
/// and takes exactly the new keys, with the records stored after them.
#[tokio::test]
async fn a_claim_batch_holding_a_stored_key_takes_exactly_the_new_ones() {
    let t = TestDb::new().await.unwrap();
    let d = dedup(&t.db, config(), redis_config());
    let old = keys("mixed-old", 3);
    store_seen(&d, &t.db, &old).await;
    let new = keys("mixed-new", 50);
    let mut batch = new.clone();
    batch.insert(10, old[1]);

    let mut tx = t.db.pool().begin().await.unwrap();
    let won = d.claim_in(&mut tx, &batch).await.unwrap();
    let expected: Vec<bool> = batch.iter().map(|k| *k != old[1]).collect();
    assert_eq!(won, expected);
    // The failed statement left the transaction usable.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM dedup_keys")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(stored, 53);
    tx.commit().await.unwrap();

    // All new keys are seen for good; an all-new batch takes the fast path.
    let mut tx = t.db.pool().begin().await.unwrap();
    assert!(d.claim_in(&mut tx, &new).await.unwrap().iter().all(|w| !w));
    let fresh = keys("mixed-fresh", 20);
    assert!(
        d.claim_in(&mut tx, &fresh)
            .await
            .unwrap()
            .iter()
            .all(|w| *w)
    );
    tx.commit().await.unwrap();
    let mut tx = t.db.pool().begin().await.unwrap();
    assert!(
        d.claim_in(&mut tx, &fresh)
            .await
            .unwrap()
            .iter()
            .all(|w| !w)
    );
    tx.rollback().await.unwrap();
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn without_redis_the_exact_store_keeps_every_answer_right() {
    // Install the Prometheus recorder before the dedup takes its counters.
    let metrics = fantasy_telemetry::metrics_handle();
    let t = TestDb::new().await.unwrap();
    let mut redis = RedisConfig::new("redis://127.0.0.1:1");
    redis.timeout = Duration::from_millis(500);
    let d = dedup(&t.db, config(), redis);
    let ks = keys("down", 100);
    let started = std::time::Instant::now();
    assert!(all(&d.check(&ks).await.unwrap(), Verdict::New));
    let mut tx = t.db.pool().begin().await.unwrap();
    let won = d.claim_in(&mut tx, &ks[..50]).await.unwrap();
    assert!(won.iter().all(|w| *w));
    tx.commit().await.unwrap();
    d.remember(&ks[..50]).await;
    let verdicts = d.check(&ks).await.unwrap();
    assert!(all(&verdicts[..50], Verdict::Duplicate));
    assert!(all(&verdicts[50..], Verdict::New));
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = d.stats();
    // check, remember, check: three calls without Redis (the claim never
    // uses it), one outage.
    assert_eq!(s.redis_fallbacks, 3, "{s:?}");
    assert_eq!(s.redis_outages, 1, "{s:?}");
    // Nothing went through a bloom filter but the local one.
    assert_eq!(s.duplicates, 50);
    assert_eq!(s.false_positives, 0);
    let text = metrics.render();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(value("dedup_redis_fallbacks_total") >= 3.0, "{text}");
    assert!(value("dedup_checks_total") >= 200.0, "{text}");
    assert!(value("dedup_duplicates_total") >= 50.0, "{text}");
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn generations_roll_over_and_the_exact_store_outlives_them() {
    let t = TestDb::new().await.unwrap();
    let redis = redis_config();
    let clock = ManualClock::at(SystemClock.now_unix_ms());
    // No local filter: every bloom answer comes from Redis.
    let cfg = DedupConfig {
        local_filter: false,
        ..config()
    };
    let d = Dedup::builder(cfg, t.db.clone())
        .redis(redis.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let first = d.generation();
    let ks = keys("old", 100);
    store_seen(&d, &t.db, &ks).await;

    // The generation key exists, expires at the end of the next window.
    let cache = Cache::connect(&redis).await.unwrap();
    let bloom = RedisBloom::new(cache.clone(), d.params());
    let mut conn = cache.connection();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(bloom.generation_key(first.index))
        .query_async(&mut conn)
        .await
        .unwrap();
    let max = i64::try_from(2 * HOUR.as_millis()).unwrap();
    assert!(pttl > 0 && pttl <= max, "pttl {pttl}");

    // One window later the keys are in the previous generation: still hits.
    clock.advance(HOUR);
    assert_eq!(d.generation().index, first.index + 1);
    let before = d.stats();
    assert!(all(&d.check(&ks).await.unwrap(), Verdict::Duplicate));
    assert_eq!(d.stats().bloom_hits - before.bloom_hits, 100);
    let newer = keys("new", 100);
    store_seen(&d, &t.db, &newer).await;

    // Two windows later the first generation is out of the lookup: the
    // bloom filters forgot those keys (a miss means New), the exact store
    // did not, so a claim still refuses them: never published twice.
    clock.advance(HOUR);
    assert_eq!(
        bloom
            .check(d.generation(), &ks)
            .await
            .unwrap()
            .iter()
            .filter(|v| **v == BloomVerdict::MaybePresent)
            .count(),
        0
    );
    assert!(all(&d.check(&ks).await.unwrap(), Verdict::New));
    assert!(could_claim(&d, &t.db, &ks).await.iter().all(|w| !*w));
    // The keys marked one window ago are still remembered.
    assert!(all(&d.check(&newer).await.unwrap(), Verdict::Duplicate));
    t.drop_database().await.unwrap();
}

#[tokio::test]
async fn redis_sets_exactly_the_bits_rust_computes() {
    let redis = redis_config();
    let cache = Cache::connect(&redis).await.unwrap();
    let params = BloomParams::for_items(1000, 0.001).unwrap();
    let bloom = RedisBloom::new(cache.clone(), params);
    let generation = Generation::at(SystemClock.now_unix_ms(), HOUR);
    let key = DedupKey::new("s", "bits", b"c");
    bloom.insert(generation, &[key]).await.unwrap();
    let redis_key = bloom.generation_key(generation.index);
    let mut conn = cache.connection();
    let positions: HashSet<u64> = params.positions(&key).collect();
    for &pos in &positions {
        let bit: u8 = redis::cmd("GETBIT")
            .arg(&redis_key)
            .arg(pos)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(bit, 1, "bit {pos}");
    }
    let set: usize = redis::cmd("BITCOUNT")
        .arg(&redis_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(set, positions.len());
    let _: i64 = redis::cmd("DEL")
        .arg(&redis_key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn check_and_insert_answers_then_remembers_in_one_call() {
    let cache = Cache::connect(&redis_config()).await.unwrap();
    let bloom = RedisBloom::new(cache, BloomParams::for_items(10_000, 0.001).unwrap());
    let generation = Generation::at(SystemClock.now_unix_ms(), HOUR);
    // More than one script call's worth, so the pipeline holds several.
    let mut ks = keys("cai", 1200);
    ks.push(ks[0]);
    let first = bloom.check_and_insert(generation, &ks).await.unwrap();
    assert_eq!(first.len(), ks.len());
    let absent = first.iter().filter(|v| **v == BloomVerdict::Absent).count();
    assert!(absent >= 1190, "{absent}");
    // The repeat, after its first occurrence was inserted.
    assert_eq!(first[1200], BloomVerdict::MaybePresent);
    let again = bloom.check_and_insert(generation, &ks).await.unwrap();
    assert!(again.iter().all(|v| *v == BloomVerdict::MaybePresent));
    // The next generation still sees them (as its previous one).
    let next = Generation {
        index: generation.index + 1,
        ..generation
    };
    assert!(
        bloom
            .check(next, &ks)
            .await
            .unwrap()
            .iter()
            .all(|v| *v == BloomVerdict::MaybePresent)
    );
}

#[tokio::test]
async fn purge_removes_old_keys_but_not_live_leases() {
    let t = TestDb::new().await.unwrap();
    let d = dedup(&t.db, config(), redis_config());
    let old = keys("old", 10);
    // Pending claims an earlier release left: 5 live, 2 expired.
    let leased = keys("leased", 7);
    store_seen(&d, &t.db, &old).await;
    for (i, k) in leased.iter().enumerate() {
        leave_lease(&t.db, *k, if i < 5 { 600.0 } else { -1.0 }).await;
    }
    sqlx::query("UPDATE dedup_keys SET seen_at = now() - interval '10 days'")
        .execute(t.db.pool())
        .await
        .unwrap();
    let fresh = keys("fresh", 3);
    store_seen(&d, &t.db, &fresh).await;
    assert_eq!(
        d.purge_older_than(Duration::from_secs(7 * 86_400), 4)
            .await
            .unwrap(),
        4
    );
    // The other 6 old keys and the 2 expired leases.
    assert_eq!(
        d.purge_older_than(Duration::from_secs(7 * 86_400), 1000)
            .await
            .unwrap(),
        8
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM dedup_keys")
        .fetch_one(t.db.pool())
        .await
        .unwrap();
    assert_eq!(left, 8);
    t.drop_database().await.unwrap();
}

/// One batch of the property test: which records come (id, content
/// version), and whether their publish succeeds.
#[derive(Clone, Debug)]
struct Batch {
    records: Vec<(u16, u8)>,
    publish_ok: bool,
}

fn batches() -> impl Strategy<Value = Vec<Batch>> {
    let batch = (
        prop::collection::vec((0u16..300, 0u8..3), 1..60),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(records, publish_ok)| Batch {
            records,
            publish_ok,
        });
    prop::collection::vec(batch, 1..25)
}

/// With a filter far too small (one 512-bit block for up to 900 keys:
/// nearly every check is a bloom hit), the verdicts still match an exact
/// model: every key never marked is `New` (no record lost) and every marked
/// key is `Duplicate` (none published twice).
#[test]
fn a_tiny_filter_loses_nothing_and_lets_no_duplicate_through() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(TestDb::new()).unwrap();
    let tiny = DedupConfig {
        expected_items: 20,
        fp_rate: 0.5,
        ..config()
    };
    assert_eq!(
        tiny.generation_params().unwrap().bits,
        fantasy_dedup::MIN_BITS
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let false_positives = std::cell::Cell::new(0u64);
    runner
        .run(&batches(), |batches| {
            rt.block_on(async {
                // A fresh filter in Redis and a namespace of its own in
                // Postgres for each case.
                let d = dedup(&t.db, tiny.clone(), redis_config());
                let case = uuid::Uuid::new_v4().simple().to_string();
                let mut model: HashSet<DedupKey> = HashSet::new();
                for batch in &batches {
                    let ks: Vec<DedupKey> = batch
                        .records
                        .iter()
                        .map(|(id, v)| DedupKey::new(&case, &id.to_string(), &[*v]))
                        .collect();
                    let verdicts = d.check(&ks).await.unwrap();
                    let mut in_batch = HashSet::new();
                    for (k, v) in ks.iter().zip(&verdicts) {
                        let expected = if model.contains(k) || !in_batch.insert(*k) {
                            Verdict::Duplicate
                        } else {
                            Verdict::New
                        };
                        prop_assert_eq!(*v, expected, "key {}", k);
                    }
                    let new: Vec<DedupKey> = ks
                        .iter()
                        .zip(&verdicts)
                        .filter(|(_, v)| v.is_new())
                        .map(|(k, _)| *k)
                        .collect();
                    let mut tx = t.db.pool().begin().await.unwrap();
                    let won = d.claim_in(&mut tx, &new).await.unwrap();
                    prop_assert!(won.iter().all(|w| *w), "one replica wins all");
                    if batch.publish_ok {
                        tx.commit().await.unwrap();
                        d.remember(&new).await;
                        model.extend(&new);
                    } else {
                        tx.rollback().await.unwrap();
                    }
                }
                let s = d.stats();
                prop_assert_eq!(
                    s.bloom_hits,
                    s.duplicates - repeats(&batches) + s.false_positives
                );
                false_positives.set(false_positives.get() + s.false_positives);
                Ok(())
            })
        })
        .unwrap();
    assert!(
        false_positives.get() > 0,
        "the tiny filter should have produced false positives"
    );
    rt.block_on(t.drop_database()).unwrap();
}

/// Keys repeated within their own batch (counted as duplicates without a
/// bloom look-up).
fn repeats(batches: &[Batch]) -> u64 {
    batches
        .iter()
        .map(|b| {
            let unique: HashSet<_> = b.records.iter().collect();
            (b.records.len() - unique.len()) as u64
        })
        .sum()
}

/// A TCP proxy to the test Redis that can be cut and restored, as a Redis
/// restart or a network partition would.
struct Proxy {
    addr: std::net::SocketAddr,
    upstream: String,
    tasks: Option<tokio::task::JoinSet<()>>,
}

impl Proxy {
    /// A proxy to the Redis of `redis_url` (`redis://host:port[/db]`).
    async fn start(redis_url: &str) -> Self {
        let rest = redis_url.trim_start_matches("redis://");
        let host_port = rest.split('/').next().unwrap();
        let upstream = host_port.rsplit('@').next().unwrap().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut p = Self {
            addr,
            upstream,
            tasks: None,
        };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let mut tasks = tokio::task::JoinSet::new();
        let upstream = self.upstream.clone();
        tasks.spawn(async move {
            // Dropped with this task when the proxy is cut: that aborts
            // every connection.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes every connection and refuses new ones.
    async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test]
async fn an_outage_is_counted_per_call_logged_once_and_redis_is_used_again_after_it() {
    let t = TestDb::new().await.unwrap();
    let mut redis = redis_config();
    let direct = redis.clone();
    let mut proxy = Proxy::start(direct.url.expose()).await;
    redis.url = fantasy_config::Secret::new(format!("redis://{}", proxy.addr));
    redis.timeout = Duration::from_millis(500);
    let cfg = DedupConfig {
        redis_retry: Duration::from_millis(200),
        local_filter: false,
        ..config()
    };
    let d = dedup(&t.db, cfg.clone(), redis);
    let before = keys("before", 50);
    store_seen(&d, &t.db, &before).await;
    assert!(all(&d.check(&before).await.unwrap(), Verdict::Duplicate));
    assert_eq!(d.stats().redis_fallbacks, 0);

    proxy.cut().await;
    let during = keys("during", 50);
    for _ in 0..5 {
        assert!(all(&d.check(&before).await.unwrap(), Verdict::Duplicate));
        assert!(all(&d.check(&during).await.unwrap(), Verdict::New));
    }
    store_seen(&d, &t.db, &during).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Past the retry interval Redis is tried again, and fails again: the
    // same outage.
    assert!(all(&d.check(&during).await.unwrap(), Verdict::Duplicate));
    let s = d.stats();
    assert_eq!(s.redis_fallbacks, 12, "{s:?}");
    assert_eq!(s.redis_outages, 1, "{s:?}");

    proxy.restore().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fallbacks = d.stats().redis_fallbacks;
        assert!(all(&d.check(&before).await.unwrap(), Verdict::Duplicate));
        if d.stats().redis_fallbacks == fallbacks {
            break; // Redis answered.
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.stats().redis_outages, 1);
    // Keys marked during the outage are in Postgres, not in Redis: another
    // replica's bloom misses them, and its claim is refused.
    let other_db = another_pool(&t).await;
    let other = dedup(&other_db, cfg, direct);
    assert!(all(&other.check(&during).await.unwrap(), Verdict::New));
    assert!(
        could_claim(&other, &other_db, &during)
            .await
            .iter()
            .all(|w| !*w)
    );

    // A second outage is a second log line.
    proxy.cut().await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(all(&d.check(&before).await.unwrap(), Verdict::Duplicate));
    assert_eq!(d.stats().redis_outages, 2);
    t.drop_database().await.unwrap();
}
