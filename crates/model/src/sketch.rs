//! Bounded, mergeable counting of distinct replicas.
//!
//! Every behaviour entry says how many distinct replicas (pods) showed it. Keeping every pod
//! id per entry would make profiles grow with the number of rollouts, so a [`ReplicaSketch`]
//! keeps only the `K` smallest 16-bit hashes of the pod ids it has seen (a "k minimum values"
//! sketch). Merging two sketches is a set union truncated to the `K` smallest, which is
//! commutative, associative and idempotent: deltas from many nodes can arrive in any order,
//! and the same delta can be merged twice, with the same result. The count is exact up to
//! `K` replicas (barring a 16-bit hash collision) and an estimate above.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable 64-bit FNV-1a hash. herdwatch names objects and sketches replicas with it, so it
/// must not change between releases or machines (unlike `std`'s `DefaultHasher`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The compact id of one replica: a 16-bit hash of its pod UID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplicaId(pub u16);

impl ReplicaId {
    /// The id of the pod with this UID (or, when the UID is not known, its name).
    pub fn from_pod_uid(uid: &str) -> Self {
        let h = fnv1a64(uid.as_bytes());
        // Fold all 64 bits so that every input byte influences the 16 kept.
        Self((h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) as u16)
    }
}

/// Keeps the `K` smallest replica ids seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<ReplicaId>", into = "Vec<ReplicaId>")]
pub struct ReplicaSketch<const K: usize> {
    /// Sorted, distinct, at most `K` long.
    ids: Vec<ReplicaId>,
}

/// Sketch kept on every behaviour entry: exact up to 8 replicas.
pub type EntryReplicas = ReplicaSketch<8>;
/// Sketch kept per profile and per observation: exact up to 64 replicas, which is what
/// `learning.minReplicas` is checked against.
pub type WorkloadReplicas = ReplicaSketch<64>;

impl<const K: usize> ReplicaSketch<K> {
    /// An empty sketch.
    pub const fn new() -> Self {
        Self { ids: Vec::new() }
    }

    /// A sketch holding exactly these ids (the `K` smallest of them).
    pub fn from_ids(ids: impl IntoIterator<Item = ReplicaId>) -> Self {
        let mut s = Self::new();
        for id in ids {
            s.insert(id);
        }
        s
    }

    /// Records one replica; returns whether the sketch changed.
    pub fn insert(&mut self, id: ReplicaId) -> bool {
        match self.ids.binary_search(&id) {
            Ok(_) => false,
            Err(pos) if pos >= K => false,
            Err(pos) => {
                self.ids.insert(pos, id);
                self.ids.truncate(K);
                true
            }
        }
    }

    /// Whether [`ReplicaSketch::insert`] of `id` would change the sketch.
    pub fn would_insert(&self, id: ReplicaId) -> bool {
        matches!(self.ids.binary_search(&id), Err(pos) if pos < K)
    }

    /// Unions `other` into `self`; returns whether `self` changed.
    pub fn merge<const J: usize>(&mut self, other: &ReplicaSketch<J>) -> bool {
        let mut changed = false;
        for &id in &other.ids {
            changed |= self.insert(id);
        }
        changed
    }

    /// The ids kept, smallest first.
    pub fn ids(&self) -> &[ReplicaId] {
        &self.ids
    }

    /// Whether no replica was recorded.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Distinct replicas seen: exact while fewer than `K` are kept, estimated from the
    /// `K`-th smallest hash above that.
    pub fn count(&self) -> u32 {
        if self.ids.len() < K {
            return self.ids.len() as u32;
        }
        let kth = f64::from(self.ids[K - 1].0) + 1.0;
        let estimate = (K as f64 - 1.0) * 65_536.0 / kth;
        (estimate.round() as u32).max(K as u32)
    }
}

impl<const K: usize> From<Vec<ReplicaId>> for ReplicaSketch<K> {
    fn from(ids: Vec<ReplicaId>) -> Self {
        Self::from_ids(ids)
    }
}

impl<const K: usize> From<ReplicaSketch<K>> for Vec<ReplicaId> {
    fn from(s: ReplicaSketch<K>) -> Self {
        s.ids
    }
}

impl<const K: usize> fmt::Display for ReplicaSketch<K> {
    /// Four hex digits per id, e.g. `03e8a1f0`: the compact form stored in objects.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in &self.ids {
            write!(f, "{:04x}", id.0)?;
        }
        Ok(())
    }
}

impl<const K: usize> std::str::FromStr for ReplicaSketch<K> {
    type Err = crate::Error;

    /// Reads the form [`fmt::Display`] writes.
    fn from_str(s: &str) -> crate::Result<Self> {
        if !s.len().is_multiple_of(4) || !s.is_ascii() {
            return Err(crate::Error::InvalidSketch(s.to_owned()));
        }
        let mut sketch = Self::new();
        for chunk in s.as_bytes().chunks(4) {
            let text = std::str::from_utf8(chunk)
                .map_err(|_| crate::Error::InvalidSketch(s.to_owned()))?;
            let id = u16::from_str_radix(text, 16)
                .map_err(|_| crate::Error::InvalidSketch(s.to_owned()))?;
            sketch.insert(ReplicaId(id));
        }
        Ok(sketch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(range: std::ops::Range<u32>) -> impl Iterator<Item = ReplicaId> {
        range.map(|i| ReplicaId::from_pod_uid(&format!("4c1e6a2b-0000-4000-8000-{i:012}")))
    }

    #[test]
    fn exact_below_capacity_and_idempotent() {
        let mut s = EntryReplicas::new();
        for id in pods(0..5) {
            assert!(s.insert(id));
            assert!(!s.insert(id), "a replica seen twice counts once");
        }
        assert_eq!(s.count(), 5);
    }

    #[test]
    fn merge_is_order_independent_and_bounded() {
        let a = EntryReplicas::from_ids(pods(0..6));
        let b = EntryReplicas::from_ids(pods(4..12));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.ids().len(), 8);
        let again = ab.clone();
        assert!(!ab.merge(&again), "merging twice changes nothing");
    }

    #[test]
    fn estimate_above_capacity_is_in_the_right_range() {
        let s = WorkloadReplicas::from_ids(pods(0..500));
        let n = s.count();
        assert!((300..800).contains(&n), "estimate {n} for 500 replicas");
        let exact = WorkloadReplicas::from_ids(pods(0..40));
        assert!((39..=40).contains(&exact.count()));
    }

    #[test]
    fn text_form_round_trips_and_rejects_garbage() {
        let s = EntryReplicas::from_ids(pods(0..3));
        let parsed: EntryReplicas = s.to_string().parse().unwrap();
        assert_eq!(parsed, s);
        assert!("abc".parse::<EntryReplicas>().is_err());
        assert!("zzzz".parse::<EntryReplicas>().is_err());
    }

    #[test]
    fn fnv_is_stable() {
        // Pinned: object names and stored sketches depend on these values.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
