//! Bloom filter sizing, bit positions and time windows.

use std::f64::consts::LN_2;
use std::fmt;
use std::time::Duration;

use crate::DedupKey;

/// The largest filter: a Redis string holds at most 512 MiB = 2^32 bits.
pub const MAX_BITS: u64 = 1 << 32;

/// Bits per block: all k bits of a key lie in one block of 512 bits (64
/// bytes, one cache line), so the shared filter reads or writes one short
/// range of its Redis string per key, and the local one touches one cache
/// line.
pub const BLOCK_BITS: u64 = 512;

/// The smallest filter: one block.
pub const MIN_BITS: u64 = BLOCK_BITS;

/// The largest number of bit positions per key.
pub const MAX_HASHES: u32 = 32;

/// The shape of one blocked bloom filter: `bits` (m, whole blocks of
/// [`BLOCK_BITS`]) and `hashes` (k).
///
/// Sized for `n` expected items and a target false-positive rate `p`: k and
/// a first m from the standard formulas
///
/// ```text
/// m = ceil(-n · ln p / (ln 2)²)        k = round((m / n) · ln 2)
/// ```
///
/// then m grows until the *blocked* filter's rate
/// ([`BloomParams::expected_fp_rate`]) is at most p: blocks fill unevenly
/// (their item counts vary), which costs a blocked filter some accuracy at
/// equal size. For n = 1,000,000 and p = 0.0005 (the defaults, each of the
/// two generations getting half of 0.001, see [`crate::DedupConfig`]):
/// k = 11, m ≈ 17.5 million bits (2.1 MiB), 10% above the standard formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BloomParams {
    /// m: bits in the filter, a multiple of [`BLOCK_BITS`].
    pub bits: u64,
    /// k: bit positions per key, all in one block.
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
        let too_big = |m: f64| {
            format!(
                "{items} items at false-positive rate {fp_rate} need {m:.0} bits; \
                 a Redis string holds at most {MAX_BITS} bits (512 MiB)"
            )
        };
        if m > MAX_BITS as f64 {
            return Err(too_big(m));
        }
        let k = ((m / n) * LN_2).round();
        let hashes = (k as u32).clamp(1, MAX_HASHES);
        let mut p = Self {
            bits: (m as u64).max(MIN_BITS).next_multiple_of(BLOCK_BITS),
            hashes,
        };
        // Grow by about 2% at a time: the blocked rate falls smoothly
        // with m.
        while p.expected_fp_rate(items.max(1)) > fp_rate {
            let bits = (p.bits + (p.bits / 50).max(BLOCK_BITS)).next_multiple_of(BLOCK_BITS);
            if bits > MAX_BITS {
                return Err(too_big(bits as f64));
            }
            p.bits = bits;
        }
        Ok(p)
    }

    /// Blocks in the filter.
    pub fn blocks(&self) -> u64 {
        (self.bits / BLOCK_BITS).max(1)
    }

    /// The expected false-positive rate with `items` keys inserted, for a
    /// blocked filter: the number of items in a block is Poisson with mean
    /// λ = items / blocks, and a block holding c items has each of its
    /// bits set with probability 1 - (1 - 1/512)^(k·c):
    ///
    /// ```text
    /// fp = Σ_c Poisson(c; λ) · (1 - (1 - 1/512)^(k·c))^k
    /// ```
    pub fn expected_fp_rate(&self, items: u64) -> f64 {
        let k = f64::from(self.hashes);
        let lambda = items as f64 / self.blocks() as f64;
        let fp_given = |c: f64| (1.0 - (1.0 - 1.0 / BLOCK_BITS as f64).powf(k * c)).powf(k);
        if lambda == 0.0 {
            return 0.0;
        }
        // Sum outwards from the mode until the terms vanish; the mode's
        // probability from Stirling's series (no underflow for large λ).
        let mode = lambda.floor();
        let ln_fact = |n: f64| {
            if n < 1.0 {
                0.0
            } else {
                n * n.ln() - n + 0.5 * (2.0 * std::f64::consts::PI * n).ln() + 1.0 / (12.0 * n)
                    - 1.0 / (360.0 * n * n * n)
            }
        };
        let p_mode = (-lambda + mode * lambda.ln() - ln_fact(mode)).exp();
        let mut sum = p_mode * fp_given(mode);
        let (mut pc, mut c) = (p_mode, mode);
        while pc > 1e-18 {
            c += 1.0;
            pc *= lambda / c;
            sum += pc * fp_given(c);
        }
        let (mut pc, mut c) = (p_mode, mode);
        while c > 0.0 && pc > 1e-18 {
            pc *= c / lambda;
            c -= 1.0;
            sum += pc * fp_given(c);
        }
        sum.min(1.0)
    }

    /// Bytes one filter of this shape takes (in Redis, and in memory).
    pub fn bytes(&self) -> u64 {
        self.bits.div_ceil(8)
    }

    /// The block of `key` (from the low half of its digest) and the k
    /// distinct bit offsets within the block (from the high half):
    /// `(h1 + i·h2) mod 512` with `h2` odd, so no two coincide.
    pub fn slot(&self, key: &DedupKey) -> (u64, impl Iterator<Item = u64> + Clone + use<>) {
        let (lo, hi) = key.halves();
        let h1 = hi % BLOCK_BITS;
        let h2 = ((hi >> 9) % BLOCK_BITS) | 1;
        let offsets = (0..u64::from(self.hashes)).map(move |i| (h1 + i * h2) % BLOCK_BITS);
        (lo % self.blocks(), offsets)
    }

    /// The k bit positions of `key` in the whole filter (Redis bit offsets,
    /// bit 0 being the high bit of byte 0).
    pub fn positions(&self, key: &DedupKey) -> impl Iterator<Item = u64> + use<> {
        let (block, offsets) = self.slot(key);
        offsets.map(move |o| block * BLOCK_BITS + o)
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
    fn the_default_sizing_meets_the_rate_in_whole_blocks() {
        let p = BloomParams::for_items(1_000_000, 0.0005).unwrap();
        assert_eq!(p.hashes, 11);
        assert_eq!(p.bits % BLOCK_BITS, 0);
        // The standard formula's 15.8 million bits, grown for blocking.
        assert!((17_000_000..18_000_000).contains(&p.bits), "{p:?}");
        let fp = p.expected_fp_rate(1_000_000);
        assert!((0.00045..=0.0005).contains(&fp), "{fp}");
        assert_eq!(p.bytes(), p.bits / 8);
    }

    #[test]
    fn the_blocked_rate_is_above_the_standard_one_at_equal_size() {
        // m/n = 16, k = 11: a standard filter's rate is 0.00046.
        let p = BloomParams {
            bits: 16 * BLOCK_BITS * 1000,
            hashes: 11,
        };
        let standard = (1.0f64 - (-11.0f64 / 16.0).exp()).powi(11);
        let blocked = p.expected_fp_rate(BLOCK_BITS * 1000);
        assert!(
            blocked > standard && blocked < 4.0 * standard,
            "{blocked} vs {standard}"
        );
        assert_eq!(p.expected_fp_rate(0), 0.0);
        // Full to bursting: every bit set, every probe positive.
        assert!(p.expected_fp_rate(1 << 40) > 0.999);
    }

    #[test]
    fn measured_rate_matches_the_blocked_formula() {
        // Insert n keys' positions into a bit set, probe fresh keys.
        let n = 20_000u64;
        let p = BloomParams::for_items(n, 0.01).unwrap();
        let mut bits = vec![false; p.bits as usize];
        for i in 0..n {
            for pos in p.positions(&DedupKey::new("in", &i.to_string(), b"")) {
                bits[pos as usize] = true;
            }
        }
        let probes = 200_000;
        let positives = (0..probes)
            .filter(|i| {
                p.positions(&DedupKey::new("out", &i.to_string(), b""))
                    .all(|pos| bits[pos as usize])
            })
            .count();
        let rate = positives as f64 / probes as f64;
        let expected = p.expected_fp_rate(n);
        assert!(expected <= 0.01);
        assert!(
            (rate - expected).abs() < 0.25 * expected + 0.0005,
            "{rate} vs {expected}"
        );
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        assert!(BloomParams::for_items(10, 0.0).is_err());
        assert!(BloomParams::for_items(10, 1.0).is_err());
        assert!(BloomParams::for_items(10, f64::NAN).is_err());
        let err = BloomParams::for_items(1_000_000_000, 1e-9).unwrap_err();
        assert!(err.contains("512 MiB"), "{err}");
        // Tiny filters are allowed (tests use them) but never below a block.
        let tiny = BloomParams::for_items(1, 0.5).unwrap();
        assert_eq!(tiny.bits, MIN_BITS);
        assert!(tiny.hashes >= 1);
    }

    #[test]
    fn positions_are_k_distinct_values_in_one_block_below_m() {
        let p = BloomParams::for_items(1000, 0.01).unwrap();
        let mut blocks = std::collections::HashSet::new();
        for i in 0..1000 {
            let key = DedupKey::new("s", &i.to_string(), b"");
            let pos: std::collections::BTreeSet<u64> = p.positions(&key).collect();
            assert_eq!(pos.len(), p.hashes as usize);
            assert!(pos.iter().all(|&x| x < p.bits));
            let block = p.slot(&key).0;
            assert!(pos.iter().all(|&x| x / BLOCK_BITS == block));
            blocks.insert(block);
        }
        // The keys spread over the blocks.
        assert!(
            blocks.len() as u64 > p.blocks() / 2,
            "{} of {}",
            blocks.len(),
            p.blocks()
        );
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
