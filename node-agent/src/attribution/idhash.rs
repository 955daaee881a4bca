//! A cheap hasher for maps keyed by kernel-assigned integers (pids, cgroup ids).
//!
//! The hot path looks up a pid and a cgroup id for every event; SipHash costs more than
//! the rest of the lookup. These keys are chosen by the kernel, not by whoever sends us
//! data, so the flooding resistance SipHash buys is not needed here. Never use this for
//! strings that come from outside.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing of integer keys (one multiplication per word).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(SEED);
    }
}

pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_sequential_keys_hash_distinctly() {
        let hashes: HashSet<u64> = (0u64..10_000)
            .map(|k| {
                let mut h = IdHasher::default();
                h.write_u64(k);
                h.finish()
            })
            .collect();
        assert_eq!(hashes.len(), 10_000);
    }

    #[test]
    fn map_works_as_a_map() {
        let mut m: IdMap<u32, &str> = IdMap::default();
        m.insert(1, "a");
        m.insert(4_194_304, "b");
        assert_eq!(m.get(&1), Some(&"a"));
        assert_eq!(m.get(&4_194_304), Some(&"b"));
        assert_eq!(m.get(&2), None);
    }
}
