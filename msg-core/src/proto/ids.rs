//! Maps keyed by ids that are sequential and unique, where hashing is wasted work.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes ids a side numbers itself (wire ids, ack ids, session ids), which are unique and
/// need little mixing: each word written is folded in with an exclusive or and one
/// multiplication, so that a single `u64` key hashes to itself times the constant, and a
/// key of several small integers keeps its last word's low bits distinct. For integer ids:
/// keys that differ only in the high bits of an earlier word share a bucket.
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

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(GOLDEN);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut le = [0; 8];
            le.copy_from_slice(word);
            self.add(u64::from_le_bytes(le));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut le = [0; 8];
            le[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(le));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, id: u64) {
        self.add(id);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// A map from ids this side numbers to `V`. Not for keys a peer chooses: the hash has no
/// secret, so a peer could pick keys that collide.
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

    /// Keys of other integer widths, and tuples, spread as well: no width is read in a way
    /// that leaves the low bits equal.
    #[test]
    fn other_key_types_spread_too() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let narrow: HashSet<u64> = (1..=1024u32).map(|id| build.hash_one(id) & 1023).collect();
        assert!(
            narrow.len() > 600,
            "u32 keys took {} of 1,024 buckets",
            narrow.len()
        );
        let pairs: HashSet<u64> = (1..=1024u64)
            .map(|id| build.hash_one((id, 7u64)) & 1023)
            .collect();
        assert!(
            pairs.len() > 600,
            "pairs took {} of 1,024 buckets",
            pairs.len()
        );
    }
}
