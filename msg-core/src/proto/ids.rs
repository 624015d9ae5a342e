//! Maps keyed by ids that are sequential and unique, where hashing is wasted work.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Passes a `u64` key through as its own hash: for ids a side numbers itself (wire ids,
/// ack ids, session ids), which are unique and need no mixing.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
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
