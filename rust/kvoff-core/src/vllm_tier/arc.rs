//! vLLM 0.33's ARC: resident lists T1 (seen once) and T2 (reused), ghost lists B1 and B2, and
//! a real-valued target size for T1. Every insert goes to T1; a ghost seen again (a store miss,
//! once per request, or a touch) moves the target by `max(1, |other ghost| / |own ghost|)`;
//! reuse, applied when a request finishes, promotes T1 to T2.

use super::ordered::OrderedKeys;
use super::{Chunks, Key};

// The four lists, all in one `OrderedKeys` so that a key's move between them is one lookup.
const T1: usize = 0;
const T2: usize = 1;
const B1: usize = 2;
const B2: usize = 3;

fn resident(list: usize) -> bool {
    list == T1 || list == T2
}

#[derive(Debug, Default)]
pub(crate) struct ArcPolicy {
    capacity: usize,
    pub(crate) target_t1: f64,
    lists: OrderedKeys<(), 4>,
}

impl ArcPolicy {
    pub(crate) fn new(capacity: usize) -> Self {
        ArcPolicy {
            capacity,
            ..Self::default()
        }
    }

    /// A newly stored key (never resident before the call) joins T1, leaving its ghost list.
    pub(crate) fn insert(&mut self, key: &Key) {
        let was = self.lists.put_back(T1, key, ());
        debug_assert!(was.is_none_or(|l| !resident(l)), "insert of a resident key");
    }

    pub(crate) fn remove(&mut self, key: &Key) {
        if self.lists.list_of(key).is_some_and(resident) {
            self.lists.remove(key);
        }
    }

    /// A ghost seen again moves the target and becomes its list's newest. `key` is not resident.
    fn adapt_to_ghost(&mut self, key: &Key) {
        let (b1, b2) = (self.lists.len(B1) as f64, self.lists.len(B2) as f64);
        match self.lists.relink(key, |l| (!resident(l)).then_some(l)) {
            Some(B1) => {
                self.target_t1 = (self.target_t1 + (b2 / b1).max(1.0)).min(self.capacity as f64);
            }
            Some(B2) => self.target_t1 = (self.target_t1 - (b1 / b2).max(1.0)).max(0.0),
            _ => {}
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
            // T1 to T2 when ready (a key whose store is in flight only becomes T1's newest);
            // T2 refreshed; a ghost adapts the target.
            let ready = || chunks.get(key).is_some_and(|c| c.ref_cnt >= 0);
            let was = self.lists.relink(key, |l| match l {
                T1 if ready() => Some(T2),
                T1 | T2 => Some(l),
                _ => None,
            });
            if was.is_some_and(|l| !resident(l)) {
                self.adapt_to_ghost(key);
            }
        }
    }

    /// A finished request's keys head to tail: processed tail first; keys it only inserted
    /// keep their list and become its newest, keys it reused are promoted to (or refreshed in)
    /// T2.
    pub(crate) fn on_request_finished<'a>(
        &mut self,
        ordered: impl DoubleEndedIterator<Item = (&'a Key, bool, bool)>,
    ) {
        for (key, inserted, reused) in ordered.rev() {
            if inserted && !reused {
                self.lists.relink(key, |l| resident(l).then_some(l));
            } else if reused {
                self.lists.relink(key, |l| resident(l).then_some(T2));
            }
        }
    }

    fn next_candidate(
        lists: &OrderedKeys<(), 4>,
        list: usize,
        cursor: &mut Option<u32>,
        chunks: &Chunks,
        protected: &dyn Fn(&Key) -> bool,
    ) -> Option<u32> {
        while let Some((slot, key)) = lists.next_after(list, *cursor) {
            *cursor = Some(slot);
            if chunks.get(key).is_some_and(|c| c.ref_cnt == 0) && !protected(key) {
                return Some(slot);
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
        protected: &dyn Fn(&Key) -> bool,
    ) -> Option<Vec<Key>> {
        // (slot, from T1): slots stay put until the victims are relinked below.
        let mut picked: Vec<(u32, bool)> = Vec::with_capacity(n);
        let mut virtual_t1 = self.lists.len(T1);
        let (mut c1, mut c2) = (None, None);
        let target = self.target_t1.trunc() as usize;
        for _ in 0..n {
            let mut pick = None;
            if virtual_t1 >= target {
                if let Some(k) = Self::next_candidate(&self.lists, T1, &mut c1, chunks, protected) {
                    pick = Some((k, true));
                    virtual_t1 = virtual_t1.saturating_sub(1);
                }
            }
            if pick.is_none() {
                pick = Self::next_candidate(&self.lists, T2, &mut c2, chunks, protected)
                    .map(|k| (k, false));
            }
            if pick.is_none() {
                let k = Self::next_candidate(&self.lists, T1, &mut c1, chunks, protected)?;
                virtual_t1 = virtual_t1.saturating_sub(1);
                pick = Some((k, true));
            }
            picked.extend(pick);
        }
        let mut victims = Vec::with_capacity(n);
        for (slot, from_t1) in picked {
            victims.push(self.lists.key_at(slot).clone());
            self.lists.relink_slot(slot, if from_t1 { B1 } else { B2 });
        }
        for ghost in [B1, B2] {
            while self.lists.len(ghost) > self.capacity {
                self.lists.pop_front(ghost);
            }
        }
        Some(victims)
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::new(self.capacity);
    }

    #[cfg(test)]
    pub(crate) fn lists(&self) -> [Vec<Key>; 4] {
        [T1, T2, B1, B2].map(|l| self.lists.keys(l))
    }
}
