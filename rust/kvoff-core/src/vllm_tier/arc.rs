//! vLLM 0.33's ARC: resident lists T1 (seen once) and T2 (reused), ghost lists B1 and B2, and
//! a real-valued target size for T1. Every insert goes to T1; a ghost seen again (a store miss,
//! once per request, or a touch) moves the target by `max(1, |other ghost| / |own ghost|)`;
//! reuse, applied when a request finishes, promotes T1 to T2.

use super::ordered::OrderedKeys;
use super::{Chunks, Key, KeySet};

#[derive(Debug, Default)]
pub(crate) struct ArcPolicy {
    capacity: usize,
    pub(crate) target_t1: f64,
    t1: OrderedKeys<()>,
    t2: OrderedKeys<()>,
    b1: OrderedKeys<()>,
    b2: OrderedKeys<()>,
}

impl ArcPolicy {
    pub(crate) fn new(capacity: usize) -> Self {
        ArcPolicy {
            capacity,
            ..Self::default()
        }
    }

    pub(crate) fn insert(&mut self, key: &Key) {
        self.t1.push_back(key.clone(), ());
        self.b1.remove(key);
        self.b2.remove(key);
    }

    pub(crate) fn remove(&mut self, key: &[u8]) {
        if self.t1.remove(key).is_none() {
            self.t2.remove(key);
        }
    }

    fn adapt_to_ghost(&mut self, key: &[u8]) {
        let (b1, b2) = (self.b1.len() as f64, self.b2.len() as f64);
        if self.b1.contains(key) {
            self.target_t1 = (self.target_t1 + (b2 / b1).max(1.0)).min(self.capacity as f64);
            self.b1.move_to_back(key);
        } else if self.b2.contains(key) {
            self.target_t1 = (self.target_t1 - (b1 / b2).max(1.0)).max(0.0);
            self.b2.move_to_back(key);
        }
    }

    /// Store misses, last first: ghosts among them adapt the target.
    pub(crate) fn on_store_miss<'a>(&mut self, keys: impl DoubleEndedIterator<Item = &'a Key>) {
        for key in keys.rev() {
            self.adapt_to_ghost(key);
        }
    }

    pub(crate) fn touch<'a>(
        &mut self,
        chunks: &Chunks,
        keys: impl DoubleEndedIterator<Item = &'a Key>,
    ) {
        for key in keys.rev() {
            if let Some((k, ())) = self.t1.remove(key) {
                let ready = chunks.get(&**key).is_some_and(|c| c.ref_cnt >= 0);
                if ready {
                    self.t2.push_back(k, ());
                } else {
                    self.t1.push_back(k, ());
                }
            } else if !self.t2.move_to_back(key) {
                self.adapt_to_ghost(key);
            }
        }
    }

    /// A finished request's keys head to tail: processed tail first; keys it only inserted
    /// keep their list and become its newest, keys it reused are promoted to (or refreshed in)
    /// T2.
    pub(crate) fn on_request_finished(
        &mut self,
        ordered: &[(Key, Option<i64>)],
        inserted: &KeySet,
        reused: &KeySet,
    ) {
        for (key, _) in ordered.iter().rev() {
            let k: &[u8] = key;
            if inserted.contains(k) && !reused.contains(k) {
                if !self.t1.move_to_back(k) {
                    self.t2.move_to_back(k);
                }
            } else if reused.contains(k) {
                if let Some((owned, ())) = self.t1.remove(k) {
                    self.t2.push_back(owned, ());
                } else {
                    self.t2.move_to_back(k);
                }
            }
        }
    }

    fn next_candidate(
        list: &OrderedKeys<()>,
        cursor: &mut Option<u32>,
        chunks: &Chunks,
        protected: &dyn Fn(&[u8]) -> bool,
    ) -> Option<Key> {
        while let Some((slot, key)) = list.next_after(*cursor) {
            *cursor = Some(slot);
            if chunks.get(&**key).is_some_and(|c| c.ref_cnt == 0) && !protected(key) {
                return Some(key.clone());
            }
        }
        None
    }

    /// Exactly `n` victims, atomically: T1's oldest evictable key while T1 (as the selection
    /// shrinks it) is at least the target's integer part, else T2's, each falling back to the
    /// other list. Victims become ghosts; the ghost lists are then trimmed to the capacity.
    pub(crate) fn evict(
        &mut self,
        n: usize,
        chunks: &Chunks,
        protected: &dyn Fn(&[u8]) -> bool,
    ) -> Option<Vec<Key>> {
        let mut picked: Vec<(Key, bool)> = Vec::with_capacity(n);
        let mut virtual_t1 = self.t1.len();
        let (mut c1, mut c2) = (None, None);
        let target = self.target_t1.trunc() as usize;
        for _ in 0..n {
            let mut pick = None;
            if virtual_t1 >= target {
                if let Some(k) = Self::next_candidate(&self.t1, &mut c1, chunks, protected) {
                    pick = Some((k, true));
                    virtual_t1 = virtual_t1.saturating_sub(1);
                }
            }
            if pick.is_none() {
                pick =
                    Self::next_candidate(&self.t2, &mut c2, chunks, protected).map(|k| (k, false));
            }
            if pick.is_none() {
                let k = Self::next_candidate(&self.t1, &mut c1, chunks, protected)?;
                virtual_t1 = virtual_t1.saturating_sub(1);
                pick = Some((k, true));
            }
            picked.extend(pick);
        }
        let mut victims = Vec::with_capacity(n);
        for (key, from_t1) in picked {
            if from_t1 {
                self.t1.remove(&key);
                self.b1.push_back(key.clone(), ());
            } else {
                self.t2.remove(&key);
                self.b2.push_back(key.clone(), ());
            }
            victims.push(key);
        }
        for ghost in [&mut self.b1, &mut self.b2] {
            while ghost.len() > self.capacity {
                ghost.pop_front();
            }
        }
        Some(victims)
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::new(self.capacity);
    }

    #[cfg(test)]
    pub(crate) fn lists(&self) -> [usize; 4] {
        [self.t1.len(), self.t2.len(), self.b1.len(), self.b2.len()]
    }
}
