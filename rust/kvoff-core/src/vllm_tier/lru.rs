//! vLLM 0.33's LRU as a rank order: a key's recency is `(major, minor)`, compared as a tuple
//! and then by key bytes. A running request's positioned keys share the request's major rank
//! with minor `-position` (its tail older than its head, the whole request as old as its first
//! access); a finished request's keys, and keys without a position, take fresh major ranks.
//! Evictable keys sit in an ordered set, so ranks can change while a key is pinned and count
//! when it becomes evictable again.

use std::collections::BTreeSet;

use super::request::RequestAccess;
use super::{Chunks, Key};

pub(crate) type Rank = (u64, i64);

#[derive(Debug, Default)]
pub(crate) struct LruPolicy {
    evictable: BTreeSet<(Rank, Key)>,
    next_rank: u64,
}

impl LruPolicy {
    fn fresh(&mut self) -> u64 {
        self.next_rank += 1;
        self.next_rank
    }

    pub(crate) fn request_rank(&mut self, req: &mut RequestAccess) -> u64 {
        if let Some(r) = req.lru_rank {
            return r;
        }
        let r = self.fresh();
        req.lru_rank = Some(r);
        r
    }

    fn set_rank(&mut self, chunks: &mut Chunks, key: &Key, rank: Rank) {
        let Some(c) = chunks.get_mut(key) else {
            return;
        };
        let old = c.rank;
        c.rank = rank;
        if c.ref_cnt == 0 {
            self.evictable.remove(&(old, key.clone()));
            self.evictable.insert((rank, key.clone()));
        }
    }

    /// Rank a newly inserted key (its chunk is already in `chunks`, write pending).
    pub(crate) fn insert(
        &mut self,
        chunks: &mut Chunks,
        key: &Key,
        position: Option<i64>,
        req: &mut RequestAccess,
    ) {
        let rank = match position {
            None => (self.fresh(), 0),
            Some(p) => (self.request_rank(req), -p),
        };
        if let Some(c) = chunks.get_mut(key) {
            c.rank = rank;
        }
    }

    /// Fresh ranks, last key first, for resident keys (a touch; a request's finish).
    pub(crate) fn refresh_reversed<'a>(
        &mut self,
        chunks: &mut Chunks,
        keys: impl DoubleEndedIterator<Item = &'a Key>,
    ) {
        for key in keys.rev() {
            if chunks.contains_key(key) {
                let r = self.fresh();
                self.set_rank(chunks, key, (r, 0));
            }
        }
    }

    /// A request's first access to `keys`: raise positioned resident keys to the request's rank.
    pub(crate) fn on_request_access(
        &mut self,
        chunks: &mut Chunks,
        keys: &[(Key, Option<i64>)],
        req: &mut RequestAccess,
    ) {
        let major = self.request_rank(req);
        for (key, pos) in keys {
            let Some(p) = *pos else { continue };
            let Some(c) = chunks.get(key) else {
                continue;
            };
            let rank = (major, -p);
            if c.rank < rank {
                self.set_rank(chunks, key, rank);
            }
        }
    }

    pub(crate) fn mark_evictable(&mut self, chunks: &Chunks, key: &Key) {
        if let Some(c) = chunks.get(key) {
            self.evictable.insert((c.rank, key.clone()));
        }
    }

    pub(crate) fn mark_non_evictable(&mut self, chunks: &Chunks, key: &Key) {
        if let Some(c) = chunks.get(key) {
            self.evictable.remove(&(c.rank, key.clone()));
        }
    }

    /// The `n` oldest evictable keys outside `protected`, removed from the order; `None` (and
    /// nothing changed) when there are fewer.
    pub(crate) fn evict(&mut self, n: usize, protected: &dyn Fn(&Key) -> bool) -> Option<Vec<Key>> {
        let picked: Vec<(Rank, Key)> = self
            .evictable
            .iter()
            .filter(|(_, k)| !protected(k))
            .take(n)
            .cloned()
            .collect();
        if picked.len() < n {
            return None;
        }
        for e in &picked {
            self.evictable.remove(e);
        }
        Some(picked.into_iter().map(|(_, k)| k).collect())
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}
