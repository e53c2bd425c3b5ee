//! The exact store: `dedup_keys` in Postgres.
//!
//! A committed row is a seen key: [`claim_on`] inserts it in the transaction
//! that stores its record. `claimed_until` is the lease of the two-step claim
//! earlier releases made (claim, publish, confirm); no lease is written now,
//! but a row one of them left is still read as it meant: a lease in the
//! future holds the key (that replica is publishing it), one in the past
//! frees it (that replica died) for [`claim_on`] to take over, and a row
//! with none is seen. Every statement takes one batch, sorted, so two
//! replicas writing overlapping batches lock rows in the same order and
//! cannot deadlock each other.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use fantasy_db::Db;

use crate::DedupKey;

/// `dedup_keys` through a pool.
#[derive(Clone, Debug)]
pub(crate) struct ExactStore {
    db: Db,
}

fn sorted_bytes(keys: &[DedupKey]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn key_set(rows: Vec<Vec<u8>>) -> anyhow::Result<HashSet<DedupKey>> {
    rows.into_iter()
        .map(|b| {
            let bytes: [u8; 16] = b
                .as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("dedup_keys holds a {}-byte key", b.len()))?;
            Ok(DedupKey::from_bytes(bytes))
        })
        .collect()
}

impl ExactStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    /// The keys of `keys` that are seen: committed, or held by a lease (of
    /// an earlier release) that has not run out.
    pub(crate) async fn seen(&self, keys: &[DedupKey]) -> anyhow::Result<HashSet<DedupKey>> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT key FROM dedup_keys \
             WHERE key = ANY($1) AND (claimed_until IS NULL OR claimed_until > now())",
        )
        .bind(sorted_bytes(keys))
        .fetch_all(self.db.pool())
        .await
        .context("looking up dedup keys")?;
        key_set(rows)
    }

    /// Deletes up to `limit` rows first seen more than `age` ago, never a
    /// live lease. Returns how many. Found through the BRIN index on
    /// `seen_at` (rows arrive in time order), in no particular order: any
    /// old rows will do, and not sorting keeps a large backlog cheap.
    pub(crate) async fn purge(&self, age: Duration, limit: u32) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM dedup_keys WHERE key IN ( \
                SELECT key FROM dedup_keys \
                WHERE seen_at < now() - make_interval(secs => $1) \
                  AND (claimed_until IS NULL OR claimed_until <= now()) \
                LIMIT $2)",
        )
        .bind(age.as_secs_f64())
        .bind(i64::from(limit))
        .execute(self.db.pool())
        .await
        .context("purging old dedup keys")?;
        Ok(done.rows_affected())
    }
}

/// Claims `keys` for good inside the caller's transaction: inserts the new
/// ones as seen, takes over expired leases (an earlier release's), and
/// returns the keys it took.
/// Nothing is visible to other replicas until the commit; one that inserts
/// the same key meanwhile waits for it, then finds the key seen (commit) or
/// takes it (rollback). So a rolled-back transaction releases its keys with
/// no further statement, and a committed one made them seen with its
/// records: one write per key.
pub(crate) async fn claim_on(
    conn: &mut sqlx::PgConnection,
    keys: &[DedupKey],
) -> anyhow::Result<HashSet<DedupKey>> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let sorted = sorted_bytes(keys);
    // Fast path: the keys reaching a claim passed the bloom filters, so
    // nearly always none is stored yet. A plain INSERT checks uniqueness in
    // one index descent per key, where `ON CONFLICT` takes two and logs the
    // speculative insertion (measured: 20-40% less time per key). Any key
    // already there (another replica's, an expired lease) fails it with a
    // unique violation, which the savepoint confines to this statement:
    // then the general form below decides key by key.
    sqlx::query("SAVEPOINT dedup_claim")
        .execute(&mut *conn)
        .await
        .context("claiming dedup keys")?;
    // In key order, as every replica inserts: two transactions with
    // overlapping keys wait for each other in one order, never deadlock.
    let plain = sqlx::query(
        "INSERT INTO dedup_keys (key) SELECT k FROM UNNEST($1::bytea[]) AS t(k) ORDER BY k",
    )
    .bind(&sorted)
    .execute(&mut *conn)
    .await;
    match plain {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT dedup_claim")
                .execute(&mut *conn)
                .await
                .context("claiming dedup keys")?;
            return key_set(sorted);
        }
        Err(e) if is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT dedup_claim")
                .execute(&mut *conn)
                .await
                .context("claiming dedup keys")?;
        }
        Err(e) => return Err(anyhow::Error::new(e).context("claiming dedup keys")),
    }
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "INSERT INTO dedup_keys (key) \
         SELECT k FROM UNNEST($1::bytea[]) AS t(k) ORDER BY k \
         ON CONFLICT (key) DO UPDATE SET seen_at = now(), claimed_until = NULL \
            WHERE dedup_keys.claimed_until IS NOT NULL AND dedup_keys.claimed_until <= now() \
         RETURNING key",
    )
    .bind(&sorted)
    .fetch_all(&mut *conn)
    .await
    .context("claiming dedup keys")?;
    key_set(rows)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}
