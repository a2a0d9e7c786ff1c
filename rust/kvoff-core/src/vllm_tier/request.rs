//! What one request did to the tier, as vLLM 0.33's manager records it per `ReqContext`:
//! the keys it loaded or offered (in first-seen order, with their token positions), which it
//! inserted, reused or missed on, and the LRU rank its running keys share.

use hashbrown::HashTable;

use super::{group_index, Key};

/// One key as a request saw it. vLLM keeps four sets (seen, inserted, reused, store misses);
/// every key in the last three is also seen, so one record with flags answers each with one
/// lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The key's end-token position, read once, when the request first saw it.
    pub(crate) position: Option<i64>,
    pub(crate) inserted: bool,
    pub(crate) reused: bool,
    /// The `prepare_store` call (the tier's call serial) that first reported the key as a store
    /// miss; 0: never. A duplicate within that same call is reported again, as vLLM's
    /// list-then-set does.
    pub(crate) store_miss_call: u64,
}

#[derive(Debug, Default)]
pub struct RequestAccess {
    pub(crate) owner: u64,
    pub(crate) generation: u64,
    /// The keys seen, in first-seen order (vLLM's per-group lists are this order split by
    /// group), each with its record.
    seen: Vec<(Key, Seen)>,
    /// Where each key is in `seen`, found by the hash the key carries.
    index: HashTable<u32>,
    pub(crate) finished: bool,
    /// The LRU major rank this request's positioned keys share while it runs.
    pub(crate) lru_rank: Option<u64>,
}

impl RequestAccess {
    /// A fresh record, bound to a tier and its cache generation.
    pub(crate) fn bound(owner: u64, generation: u64) -> Self {
        RequestAccess {
            owner,
            generation,
            ..RequestAccess::default()
        }
    }

    /// Keys seen.
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn find(&self, key: &Key) -> Option<u32> {
        let seen = &self.seen;
        self.index
            .find(key.prehash(), |&i| seen[i as usize].0 == *key)
            .copied()
    }

    pub(crate) fn contains(&self, key: &Key) -> bool {
        self.find(key).is_some()
    }

    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut Seen> {
        let i = self.find(key)?;
        Some(&mut self.seen[i as usize].1)
    }

    /// `key`'s record, made by `first()` when the request had not seen it (then `true`).
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: &Key,
        first: impl FnOnce() -> Seen,
    ) -> (&mut Seen, bool) {
        if let Some(i) = self.find(key) {
            return (&mut self.seen[i as usize].1, false);
        }
        // Indices fit: a request's keys are far fewer than u32::MAX.
        #[allow(clippy::cast_possible_truncation)]
        let i = self.seen.len() as u32;
        self.seen.push((key.clone(), first()));
        let seen = &self.seen;
        self.index
            .insert_unique(key.prehash(), i, |&j| seen[j as usize].0.prehash());
        (&mut self.seen[i as usize].1, true)
    }

    /// Head to tail, as vLLM orders a finished request: each group by position when all of
    /// its keys have one, groups in index order, then all keys by position when all have one
    /// (all sorts stable, groups' keys in first-seen order before them).
    pub(crate) fn prefix_order(&self) -> Vec<(&Key, Seen)> {
        let mut all: Vec<(&Key, Seen)> = self.seen.iter().map(|(k, s)| (k, *s)).collect();
        all.sort_by_key(|(k, _)| group_index(k));
        let mut start = 0;
        while start < all.len() {
            let group = group_index(all[start].0);
            let len = all[start..]
                .iter()
                .take_while(|(k, _)| group_index(k) == group)
                .count();
            let keys = &mut all[start..start + len];
            if keys.iter().all(|(_, s)| s.position.is_some()) {
                keys.sort_by_key(|(_, s)| s.position);
            }
            start += len;
        }
        if all.iter().all(|(_, s)| s.position.is_some()) {
            all.sort_by_key(|(_, s)| s.position);
        }
        all
    }
}
