//! Bloom filter sizing, bit positions and time windows.

use std::f64::consts::LN_2;
use std::fmt;
use std::time::Duration;

use crate::DedupKey;

/// The largest filter: a Redis string holds at most 512 MiB = 2^32 bits.
pub const MAX_BITS: u64 = 1 << 32;

/// The smallest filter, so that the bit positions below stay well defined
/// (`m` larger than any `k`).
pub const MIN_BITS: u64 = 64;

/// The largest number of bit positions per key.
pub const MAX_HASHES: u32 = 32;

/// The shape of one bloom filter: `bits` (m) and `hashes` (k).
///
/// Sized with the standard formulas for `n` expected items and a target
/// false-positive rate `p`:
///
/// ```text
/// m = ceil(-n · ln p / (ln 2)²)        k = round((m / n) · ln 2)
/// ```
///
/// which give a false-positive rate of about `(1 - e^(-k·n/m))^k ≈ p` once
/// `n` items are in. For n = 10,000,000 and p = 0.0005 (each of the two
/// generations gets half of the 0.001 default, see [`crate::DedupConfig`]):
/// m ≈ 158 million bits (19 MiB), k = 11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BloomParams {
    /// m: bits in the filter.
    pub bits: u64,
    /// k: bit positions per key.
    pub hashes: u32,
}

impl BloomParams {
    /// The filter for `items` keys at false-positive rate `fp_rate`. Fails
    /// when the rate is not in (0, 1) or the filter would exceed
    /// [`MAX_BITS`].
    pub fn for_items(items: u64, fp_rate: f64) -> Result<Self, String> {
        if !(fp_rate > 0.0 && fp_rate < 1.0) {
            return Err(format!(
                "false-positive rate {fp_rate} must be above 0 and below 1"
            ));
        }
        let n = items.max(1) as f64;
        let m = (-n * fp_rate.ln() / (LN_2 * LN_2)).ceil();
        if m > MAX_BITS as f64 {
            return Err(format!(
                "{items} items at false-positive rate {fp_rate} need {m:.0} bits; \
                 a Redis string holds at most {MAX_BITS} bits (512 MiB)"
            ));
        }
        let bits = (m as u64).max(MIN_BITS);
        let k = ((bits as f64 / n) * LN_2).round();
        let hashes = (k as u32).clamp(1, MAX_HASHES);
        Ok(Self { bits, hashes })
    }

    /// The expected false-positive rate with `items` keys inserted.
    pub fn expected_fp_rate(&self, items: u64) -> f64 {
        let k = f64::from(self.hashes);
        (1.0 - (-k * items as f64 / self.bits as f64).exp()).powf(k)
    }

    /// Bytes one filter of this shape takes (in Redis, and in memory).
    pub fn bytes(&self) -> u64 {
        self.bits.div_ceil(8)
    }

    /// The two numbers the bit positions of `key` are derived from: the
    /// halves of its digest reduced modulo m. The Redis script receives
    /// these and walks the same sequence as [`BloomParams::positions`].
    pub fn seeds(&self, key: &DedupKey) -> (u64, u64) {
        let (lo, hi) = key.halves();
        (lo % self.bits, hi % self.bits)
    }

    /// The k bit positions of `key`, by enhanced double hashing (Dillinger
    /// and Manolios): `x += y; y += i`, all modulo m. Plain double hashing
    /// (`x += y`) degenerates when `y` shares a large factor with m; the
    /// growing step avoids that without requiring m to be prime. Every value
    /// stays below 2m < 2^33, so the Lua script (whose numbers are doubles)
    /// computes exactly the same positions.
    pub fn positions(&self, key: &DedupKey) -> impl Iterator<Item = u64> + use<> {
        let m = self.bits;
        let (mut x, mut y) = self.seeds(key);
        (0..u64::from(self.hashes)).map(move |i| {
            let pos = x;
            x += y;
            if x >= m {
                x -= m;
            }
            y += i;
            if y >= m {
                y -= m;
            }
            pos
        })
    }
}

impl fmt::Display for BloomParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bits ({:.1} MiB), {} hashes",
            self.bits,
            self.bytes() as f64 / (1024.0 * 1024.0),
            self.hashes
        )
    }
}

/// One time window of the filters. Every replica computes the same index
/// from the wall clock, so they share the Redis key of each generation.
///
/// A key is inserted into the current generation and looked up in the
/// current and the previous one: a key stays remembered for at least one
/// full window and at most two. Generations expire on their own (Redis
/// TTL), so the filter never fills up and its false-positive rate stays
/// bounded however many items pass through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation {
    /// Whole windows since the Unix epoch.
    pub index: u64,
    /// The window's length in milliseconds.
    pub window_ms: u64,
}

impl Generation {
    /// The generation that `unix_ms` falls into.
    pub fn at(unix_ms: u64, window: Duration) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        Self {
            index: unix_ms / window_ms,
            window_ms,
        }
    }

    /// The generation before this one, if there is one.
    pub fn previous(&self) -> Option<Self> {
        self.index.checked_sub(1).map(|index| Self {
            index,
            window_ms: self.window_ms,
        })
    }

    /// When this generation's Redis key expires (Unix ms): the end of the
    /// window after its own, so it lives while it is current or previous.
    pub fn expires_at_ms(&self) -> u64 {
        self.index.saturating_add(2).saturating_mul(self.window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_sizing_matches_the_formulas() {
        let p = BloomParams::for_items(10_000_000, 0.0005).unwrap();
        assert_eq!(p.hashes, 11);
        assert!((158_000_000..158_300_000).contains(&p.bits), "{p:?}");
        let fp = p.expected_fp_rate(10_000_000);
        assert!((0.0004..0.0006).contains(&fp), "{fp}");
        assert_eq!(p.bytes(), p.bits.div_ceil(8));
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        assert!(BloomParams::for_items(10, 0.0).is_err());
        assert!(BloomParams::for_items(10, 1.0).is_err());
        assert!(BloomParams::for_items(10, f64::NAN).is_err());
        let err = BloomParams::for_items(1_000_000_000, 1e-9).unwrap_err();
        assert!(err.contains("512 MiB"), "{err}");
        // Tiny filters are allowed (tests use them) but never below 64 bits.
        let tiny = BloomParams::for_items(1, 0.5).unwrap();
        assert_eq!(tiny.bits, MIN_BITS);
        assert!(tiny.hashes >= 1);
    }

    #[test]
    fn positions_are_k_values_below_m() {
        let p = BloomParams::for_items(1000, 0.01).unwrap();
        for i in 0..1000 {
            let key = DedupKey::new("s", &i.to_string(), b"");
            let pos: Vec<u64> = p.positions(&key).collect();
            assert_eq!(pos.len(), p.hashes as usize);
            assert!(pos.iter().all(|&x| x < p.bits));
        }
    }

    #[test]
    fn generations_follow_the_window() {
        let w = Duration::from_secs(3600);
        let g = Generation::at(7_200_000 + 5, w);
        assert_eq!(g.index, 2);
        assert_eq!(g.previous().unwrap().index, 1);
        assert_eq!(g.expires_at_ms(), 4 * 3_600_000);
        assert_eq!(Generation::at(0, w).previous(), None);
    }
}
