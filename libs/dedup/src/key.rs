//! The identity of a record version: a 128-bit digest of (source, event id,
//! content).

use std::fmt;

use xxhash_rust::xxh3::Xxh3Default;

/// What the dedup remembers about a record: a 16-byte digest of its source,
/// its event id and its content.
///
/// An updated record (a score changed) has other content and so another key;
/// an unchanged re-fetch has the same key. The digest is XXH3-128: fast
/// (a few tens of nanoseconds for a normalised record), well distributed, and
/// 128 bits make an accidental collision (which would drop a record) about as
/// likely as 2^-64 per pair of distinct records. It is not a cryptographic
/// hash: the sources are public scoreboards we poll, not parties that could
/// craft colliding records.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey([u8; 16]);

impl DedupKey {
    /// The key of one version of a record. Each field is length-prefixed, so
    /// `("ab", "c")` and `("a", "bc")` are different keys.
    pub fn new(source: &str, event_id: &str, content: &[u8]) -> Self {
        let mut h = Xxh3Default::new();
        // u64 lengths: the prefix must be unambiguous for any field size.
        h.update(&(source.len() as u64).to_le_bytes());
        h.update(source.as_bytes());
        h.update(&(event_id.len() as u64).to_le_bytes());
        h.update(event_id.as_bytes());
        h.update(content);
        Self(h.digest128().to_le_bytes())
    }

    /// A key from its stored bytes (a `dedup_keys.key` value).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes stored in `dedup_keys.key`.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The two independent 64-bit halves of the digest, from which every bit
    /// position of the bloom filters is derived (double hashing).
    pub fn halves(&self) -> (u64, u64) {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&self.0[..8]);
        hi.copy_from_slice(&self.0[8..]);
        (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
    }
}

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DedupKey({self})")
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_record_same_key_changed_content_new_key() {
        let a = DedupKey::new("espn", "g1", br#"{"home":1,"away":0}"#);
        let b = DedupKey::new("espn", "g1", br#"{"home":1,"away":0}"#);
        let c = DedupKey::new("espn", "g1", br#"{"home":2,"away":0}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, DedupKey::new("replay", "g1", br#"{"home":1,"away":0}"#));
        assert_ne!(a, DedupKey::new("espn", "g2", br#"{"home":1,"away":0}"#));
    }

    #[test]
    fn field_boundaries_are_part_of_the_key() {
        assert_ne!(DedupKey::new("ab", "c", b""), DedupKey::new("a", "bc", b""));
        assert_ne!(
            DedupKey::new("a", "bc", b"d"),
            DedupKey::new("a", "b", b"cd")
        );
        assert_ne!(DedupKey::new("", "", b"x"), DedupKey::new("", "x", b""));
    }

    #[test]
    fn bytes_round_trip_and_print_as_hex() {
        let k = DedupKey::new("s", "e", b"c");
        assert_eq!(DedupKey::from_bytes(*k.as_bytes()), k);
        let hex = k.to_string();
        assert_eq!(hex.len(), 32);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        let (lo, hi) = k.halves();
        assert_eq!(
            (u128::from(hi) << 64) | u128::from(lo),
            u128::from_le_bytes(*k.as_bytes())
        );
    }
}
