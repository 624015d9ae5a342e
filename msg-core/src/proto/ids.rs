//! Maps keyed by ids that are sequential and unique, where hashing is wasted work.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a `u64` key with one multiplication: for ids a side numbers itself (wire ids,
/// ack ids, session ids), which are unique and need no more mixing than that.
///
/// The key itself would not do: the map keeps the hash's top 7 bits beside each entry to
/// rule entries out without comparing keys, and small sequential ids have those bits all
/// zero, so every lookup would compare the key of every entry in the group it probes.
/// Multiplying by an odd constant (Knuth's multiplicative hashing, with 2^64 divided by the
/// golden ratio) spreads the ids over the top bits and keeps the low bits distinct, as
/// they are a one-to-one function of the id's low bits.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

/// 2^64 divided by the golden ratio, rounded to odd.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(GOLDEN)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// A map from ids this side numbers to `V`. Not for keys a peer chooses: with no mixing,
/// a peer could pick keys that collide.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    /// Sequential ids, as a side numbers them, land on distinct buckets and spread over the
    /// 7 top bits the map uses to rule entries out.
    #[test]
    fn sequential_ids_spread_over_the_bits_the_map_reads() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1..=1024u64).map(|id| build.hash_one(id)).collect();
        let low: HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        assert_eq!(low.len(), 1024, "two of 1,024 ids share a bucket of 1,024");
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(
            top.len() > 100,
            "only {} of 128 top-bit tags used",
            top.len()
        );
    }
}
