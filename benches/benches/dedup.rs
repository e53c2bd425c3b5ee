//! The collector's dedup: the local bloom filter, the shared one in Redis,
//! and the whole protocol with Postgres.
//!
//! - `dedup/local`: keys through the in-process filter (check and insert in
//!   batches of 1,000 under one lock; contains one at a time), sized
//!   as one default generation (1M items at p/2 = 0.0005: 2.1 MiB, k = 11),
//!   and as one of 10M items (21 MiB), which no longer fits the caches.
//!   Filled to at most its expected items, then replaced (outside the
//!   timing), so every insert is of a new key at a realistic fill.
//! - `dedup/redis`: batches of 1,000 keys on the local Redis (`GETRANGE`
//!   of each key's block, `BITFIELD` to set its bits; one pipelined round
//!   trip per batch), the filter of the same default size; per batch, so
//!   per key is the time / 1,000.
//! - `dedup/protocol`: the collector's dedup on a batch of 1,000 new keys
//!   (check; `claim_in` a transaction of its own, which stores nothing
//!   else, and commit; remember: Redis, and Postgres for the transaction),
//!   and a re-fetch of 1,000 seen keys (check: bloom hits confirmed in
//!   Postgres).
//!
//! `cargo bench -p fantasy-benches --bench dedup`
//! (needs the local Redis and Postgres, as the tests do)

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use fantasy_cache::{Cache, RedisConfig};
use fantasy_db::testing::TestDb;
use fantasy_dedup::{
    BloomVerdict, Dedup, DedupConfig, DedupKey, Generation, LocalBloom, RedisBloom, Verdict,
};

const BATCH: usize = 1_000;

/// A record-sized key: a normalised game of about 200 bytes.
fn key(i: u64) -> DedupKey {
    let content = format!(
        r#"{{"game_id":"nba-2026-27-{i:07}","status":"in_progress","home_score":{},"away_score":{},"period":3,"clock":"04:12","updated_at":"2026-11-22T20:15:00Z","home":"BOS","away":"NYK"}}"#,
        i % 140,
        (i / 7) % 140
    );
    DedupKey::new(
        "scoreboard",
        &format!("nba-2026-27-{i:07}"),
        content.as_bytes(),
    )
}

fn keys(from: u64, n: usize) -> Vec<DedupKey> {
    (from..from + n as u64).map(key).collect()
}

fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("bench:{}:{nanos}:", std::process::id())
}

fn check_and_insert_new(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    params: fantasy_dedup::BloomParams,
    capacity: u64,
) {
    group.bench_function(name, |b| {
        let mut bloom = LocalBloom::new(params);
        let mut inserted = 0u64;
        let mut next = 0u64;
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(1 << 20);
                if inserted + n > capacity {
                    bloom = LocalBloom::new(params);
                    inserted = 0;
                }
                let chunk = keys(next, n as usize);
                next += n;
                // In batches of 1,000 under one lock, as the dedup calls it.
                let t = Instant::now();
                for batch in chunk.chunks(BATCH) {
                    std::hint::black_box(bloom.check_and_insert(batch));
                }
                spent += t.elapsed();
                inserted += n;
                left -= n;
            }
            spent
        });
    });
}

fn local(c: &mut Criterion) {
    let cfg = DedupConfig::default();
    let Ok(params) = cfg.generation_params() else {
        return;
    };
    let capacity = cfg.expected_items;
    let mut group = c.benchmark_group("dedup/local");
    group.throughput(Throughput::Elements(1));

    // Digests are computed outside the timing in chunks; the filter is
    // replaced when it holds its expected number of items.
    check_and_insert_new(&mut group, "check_and_insert/new", params, capacity);
    // The default fits the CPU caches (1M items per window: 1.9 MiB); a
    // filter for 10M items (19 MiB) pays a memory access per key.
    let large = DedupConfig {
        expected_items: 10_000_000,
        ..DedupConfig::default()
    };
    if let Ok(p) = large.generation_params() {
        check_and_insert_new(
            &mut group,
            "check_and_insert/new/10M_items",
            p,
            large.expected_items,
        );
    }

    group.bench_function("contains/present", |b| {
        let bloom = LocalBloom::new(params);
        let present = keys(0, 1 << 20);
        for k in &present {
            bloom.insert(k);
        }
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) & ((1 << 20) - 1);
            std::hint::black_box(bloom.contains(&present[i]))
        });
    });

    group.bench_function("key_digest", |b| {
        let content = r#"{"game_id":"nba-2026-27-0000457","status":"in_progress","home_score":77,"away_score":81,"period":3,"clock":"04:12","updated_at":"2026-11-22T20:15:00Z","home":"BOS","away":"NYK"}"#;
        b.iter(|| {
            DedupKey::new(
                std::hint::black_box("scoreboard"),
                std::hint::black_box("nba-2026-27-0000457"),
                std::hint::black_box(content.as_bytes()),
            )
        });
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut redis_cfg = RedisConfig::new(
        std::env::var("REDIS_URL").unwrap_or_else(|_| fantasy_cache::DEFAULT_REDIS_URL.into()),
    );
    redis_cfg.prefix = unique_prefix();
    let Ok(cache) = rt.block_on(Cache::connect(&redis_cfg)) else {
        eprintln!("dedup/redis skipped: no Redis at {}", redis_cfg);
        return;
    };
    let Ok(params) = DedupConfig::default().generation_params() else {
        return;
    };
    let bloom = RedisBloom::new(cache.clone(), params);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let generation = Generation::at(now_ms, DedupConfig::default().window);

    let mut group = c.benchmark_group("dedup/redis");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_with_input(
        BenchmarkId::new("check_and_insert/new", BATCH),
        &BATCH,
        |b, &n| {
            fresh_batches(b, 0, n, |batch| {
                rt.block_on(bloom.check_and_insert(generation, batch))
                    .is_ok_and(|v| v.len() == n)
            });
        },
    );
    let present = keys(1 << 40, BATCH);
    let _ = rt.block_on(bloom.insert(generation, &present));
    group.bench_with_input(BenchmarkId::new("check/present", BATCH), &BATCH, |b, _| {
        b.iter(|| {
            let v = rt.block_on(bloom.check(generation, &present));
            assert!(v.is_ok_and(|v| v.iter().all(|x| *x == BloomVerdict::MaybePresent)));
        });
    });
    group.bench_with_input(BenchmarkId::new("check/absent", BATCH), &BATCH, |b, &n| {
        fresh_batches(b, 1 << 41, n, |batch| {
            rt.block_on(bloom.check(generation, batch)).is_ok()
        });
    });
    // What the collector does after a commit: set new keys' bits.
    group.bench_with_input(BenchmarkId::new("insert/new", BATCH), &BATCH, |b, &n| {
        fresh_batches(b, 1 << 42, n, |batch| {
            rt.block_on(bloom.insert(generation, batch)).is_ok()
        });
    });
    group.finish();
    // Clean up the generation this bench wrote.
    let mut conn = cache.connection();
    let _: Result<i64, _> = rt.block_on(
        redis::cmd("DEL")
            .arg(bloom.generation_key(generation.index))
            .query_async(&mut conn),
    );
}

/// Times `run` on batches of `n` keys never seen before (numbered from
/// `start`), made outside the timing; `run` says whether the batch worked.
fn fresh_batches(
    b: &mut criterion::Bencher<'_>,
    start: u64,
    n: usize,
    mut run: impl FnMut(&[DedupKey]) -> bool,
) {
    let mut next = start;
    b.iter_custom(|iters| {
        let mut spent = Duration::ZERO;
        for _ in 0..iters {
            let batch = keys(next, n);
            next += n as u64;
            let t = Instant::now();
            let ok = run(&batch);
            spent += t.elapsed();
            assert!(ok);
        }
        spent
    });
}

fn protocol(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let Ok(t) = rt.block_on(TestDb::new()) else {
        eprintln!("dedup/protocol skipped: no Postgres");
        return;
    };
    let mut redis_cfg = RedisConfig::new(
        std::env::var("REDIS_URL").unwrap_or_else(|_| fantasy_cache::DEFAULT_REDIS_URL.into()),
    );
    redis_cfg.prefix = unique_prefix();
    let Ok(dedup) = Dedup::builder(DedupConfig::default(), t.db.clone())
        .redis(redis_cfg)
        .build()
    else {
        return;
    };

    let mut group = c.benchmark_group("dedup/protocol");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    group.bench_with_input(
        BenchmarkId::new("check_claim_in_remember/new", BATCH),
        &BATCH,
        |b, &n| {
            fresh_batches(b, 0, n, |batch| {
                rt.block_on(async {
                    let verdicts = dedup.check(batch).await?;
                    let new: Vec<DedupKey> = batch
                        .iter()
                        .zip(verdicts)
                        .filter(|(_, v)| *v == Verdict::New)
                        .map(|(k, _)| *k)
                        .collect();
                    let mine = claim_commit(&t.db, &dedup, &new).await?;
                    dedup.remember(&mine).await;
                    anyhow::Ok(())
                })
                .unwrap_or_else(|e| panic!("protocol failed: {e:#}"));
                true
            });
        },
    );
    // Seen keys coming again, as a scoreboard re-sends unchanged games: the
    // local filter hits, Postgres confirms.
    let seen = keys(1 << 42, BATCH);
    if let Ok(mine) = rt.block_on(claim_commit(&t.db, &dedup, &seen)) {
        rt.block_on(dedup.remember(&mine));
    }
    group.bench_with_input(
        BenchmarkId::new("check/duplicates", BATCH),
        &BATCH,
        |b, _| {
            b.iter(|| {
                let v = rt.block_on(dedup.check(&seen));
                assert!(v.is_ok_and(|v| v.iter().all(|x| *x == Verdict::Duplicate)));
            });
        },
    );
    group.finish();
    let _ = rt.block_on(t.drop_database());
}

/// Claims `keys` in a transaction of their own and commits it: the keys
/// this call took.
async fn claim_commit(
    db: &fantasy_db::Db,
    dedup: &Dedup,
    keys: &[DedupKey],
) -> anyhow::Result<Vec<DedupKey>> {
    let mut tx = db.pool().begin().await?;
    let won = dedup.claim_in(&mut tx, keys).await?;
    tx.commit().await?;
    Ok(keys
        .iter()
        .zip(won)
        .filter(|(_, w)| *w)
        .map(|(k, _)| *k)
        .collect())
}

criterion_group!(benches, local, redis, protocol);
criterion_main!(benches);
