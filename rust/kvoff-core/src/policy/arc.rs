//! Adaptive Replacement Cache (Megiddo & Modha, "ARC: A Self-Tuning, Low Overhead Replacement
//! Cache", FAST 2003), fitted to a tier whose blocks can be pinned.
//!
//! T1 holds blocks seen once, T2 blocks touched again after their store completed. B1 and B2
//! remember the keys recently evicted from T1 and T2 (each at most `capacity` keys). A touch of
//! a B1 key means T1 was too small: the target size `p` of T1 grows by
//! `max(1, |B2| / |B1|)`; a touch of a B2 key shrinks it by `max(1, |B1| / |B2|)` (integer
//! division, `0 <= p <= capacity`). A block stored again while its key is a ghost goes
//! straight to T2, as in the paper. Eviction takes the least recent evictable block of T1
//! while `|T1| > p`, else of T2, and falls back to the other list when the preferred one has
//! nothing evictable.

use hashbrown::HashTable;

use super::{EvictionPolicy, PolicyState};
use crate::key::{BlockKey, BlockKeyRef};
use crate::list::{Links, List, NIL};
use crate::memory::{self, AllocFailed};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    None,
    T1,
    T2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ghost {
    B1,
    B2,
}

/// One remembered key. Ghost nodes live in an arena of their own (they have no block id).
#[derive(Debug, Clone)]
struct GhostNode {
    key: Option<BlockKey>,
    hash: u64,
    list: Ghost,
}

#[derive(Debug, Clone)]
pub struct ArcPolicy {
    capacity: u64,
    target: u64,
    links: Links,
    place: Vec<Where>,
    t1: List,
    t2: List,
    ghosts: Vec<GhostNode>,
    ghost_links: Links,
    ghost_free: Vec<u32>,
    ghost_index: HashTable<u32>,
    b1: List,
    b2: List,
}

/// Ghosts that can exist at once: each ghost list holds at most `capacity` keys, and one
/// more for a moment while its oldest is forgotten.
fn max_ghosts(capacity: u32) -> usize {
    2 * capacity as usize + 1
}

/// Room in the ghost index: twice the ghosts, so that the tombstones forgotten ghosts leave
/// are always cleaned up in place, never by moving into a larger table.
fn ghost_index_room(capacity: u32) -> usize {
    2 * max_ghosts(capacity)
}

impl ArcPolicy {
    /// Every array at the size it can reach, so that a full tier never allocates a larger
    /// one (which could fail) in the middle of a call.
    pub(crate) fn try_new(capacity: u32) -> Result<Self, AllocFailed> {
        let n = capacity as usize;
        Ok(ArcPolicy {
            capacity: u64::from(capacity),
            target: 0,
            links: Links::try_with_len(n, "ARC links")?,
            place: memory::try_filled_vec(n, Where::None, "ARC list membership")?,
            t1: List::default(),
            t2: List::default(),
            ghosts: memory::try_empty_vec(max_ghosts(capacity), "ARC ghost keys")?,
            ghost_links: Links::try_with_room(max_ghosts(capacity), "ARC ghost links")?,
            ghost_free: memory::try_empty_vec(max_ghosts(capacity), "ARC free ghost slots")?,
            ghost_index: memory::try_table(ghost_index_room(capacity), "ARC ghost index")?,
            b1: List::default(),
            b2: List::default(),
        })
    }

    /// Bytes a policy for `capacity` blocks takes with full ghost lists, not counting the
    /// heap copies of byte keys longer than an int.
    pub(crate) fn bytes_for(capacity: u32) -> u64 {
        let ghosts = max_ghosts(capacity);
        [
            Links::bytes_for(capacity as usize),
            memory::array_bytes::<Where>(capacity as usize),
            memory::array_bytes::<GhostNode>(ghosts),
            Links::bytes_for(ghosts),
            memory::array_bytes::<u32>(ghosts),
            memory::table_bytes::<u32>(ghost_index_room(capacity)),
        ]
        .iter()
        .fold(0, |sum, &b| sum.saturating_add(b))
    }

    fn find_ghost(&self, key: BlockKeyRef<'_>, hash: u64) -> Option<u32> {
        self.ghost_index
            .find(hash, |&g| {
                self.ghosts[g as usize]
                    .key
                    .as_ref()
                    .is_some_and(|k| key.matches(k))
            })
            .copied()
    }

    fn ghost_list(&mut self, which: Ghost) -> &mut List {
        match which {
            Ghost::B1 => &mut self.b1,
            Ghost::B2 => &mut self.b2,
        }
    }

    fn drop_ghost(&mut self, g: u32) {
        let node = &mut self.ghosts[g as usize];
        let (hash, which) = (node.hash, node.list);
        node.key = None;
        let mut list = *self.ghost_list(which);
        list.remove(&mut self.ghost_links, g);
        *self.ghost_list(which) = list;
        if let Ok(entry) = self.ghost_index.find_entry(hash, |&x| x == g) {
            entry.remove();
        }
        self.ghost_free.push(g);
    }

    fn add_ghost(&mut self, key: BlockKeyRef<'_>, hash: u64, which: Ghost) {
        let node = GhostNode {
            key: Some(key.to_owned_key()),
            hash,
            list: which,
        };
        let g = if let Some(g) = self.ghost_free.pop() {
            self.ghosts[g as usize] = node;
            g
        } else {
            self.ghosts.push(node);
            self.ghost_links.push_slot();
            (self.ghosts.len() - 1) as u32
        };
        let ghosts = &self.ghosts;
        self.ghost_index
            .insert_unique(hash, g, |&x| ghosts[x as usize].hash);
        let mut list = *self.ghost_list(which);
        list.push_back(&mut self.ghost_links, g);
        // Each ghost list remembers at most `capacity` keys: the oldest is forgotten.
        let oldest = (list.len() as u64 > self.capacity).then(|| list.head());
        *self.ghost_list(which) = list;
        if let Some(oldest) = oldest {
            self.drop_ghost(oldest);
        }
    }

    fn ghost_keys(&self, list: List) -> Vec<BlockKey> {
        list.iter(&self.ghost_links)
            .filter_map(|g| self.ghosts[g as usize].key.clone())
            .collect()
    }

    fn unlink(&mut self, id: u32) -> Where {
        let was = self.place[id as usize];
        match was {
            Where::T1 => self.t1.remove(&mut self.links, id),
            Where::T2 => self.t2.remove(&mut self.links, id),
            Where::None => {}
        }
        self.place[id as usize] = Where::None;
        was
    }
}

/// First id at or after `cur` in its list that `evictable` accepts.
fn skip(links: &Links, mut cur: u32, evictable: &mut dyn FnMut(u32) -> bool) -> u32 {
    while cur != NIL && !evictable(cur) {
        cur = links.next(cur);
    }
    cur
}

impl EvictionPolicy for ArcPolicy {
    fn on_insert(&mut self, id: u32, key: BlockKeyRef<'_>, hash: u64) {
        if let Some(g) = self.find_ghost(key, hash) {
            self.drop_ghost(g);
            self.t2.push_back(&mut self.links, id);
            self.place[id as usize] = Where::T2;
        } else {
            self.t1.push_back(&mut self.links, id);
            self.place[id as usize] = Where::T1;
        }
    }

    fn on_touch(&mut self, id: u32, ready: bool) {
        match self.place[id as usize] {
            // A block whose store is in flight has not been reused yet: recency only.
            Where::T1 if !ready => self.t1.move_to_back(&mut self.links, id),
            Where::T1 => {
                self.t1.remove(&mut self.links, id);
                self.t2.push_back(&mut self.links, id);
                self.place[id as usize] = Where::T2;
            }
            Where::T2 => self.t2.move_to_back(&mut self.links, id),
            Where::None => {}
        }
    }

    fn on_touch_absent(&mut self, key: BlockKeyRef<'_>, hash: u64) {
        let Some(g) = self.find_ghost(key, hash) else {
            return;
        };
        let (b1, b2) = (self.b1.len() as u64, self.b2.len() as u64);
        let which = self.ghosts[g as usize].list;
        match which {
            Ghost::B1 => {
                self.target = (self.target + (b2 / b1).max(1)).min(self.capacity);
            }
            Ghost::B2 => {
                self.target = self.target.saturating_sub((b1 / b2).max(1));
            }
        }
        let mut list = *self.ghost_list(which);
        list.move_to_back(&mut self.ghost_links, g);
        *self.ghost_list(which) = list;
    }

    fn on_evict(&mut self, id: u32, key: BlockKeyRef<'_>, hash: u64) {
        match self.unlink(id) {
            Where::T1 => self.add_ghost(key, hash, Ghost::B1),
            Where::T2 => self.add_ghost(key, hash, Ghost::B2),
            Where::None => {}
        }
    }

    fn on_remove(&mut self, id: u32) {
        self.unlink(id);
    }

    fn select_victims(
        &self,
        n: usize,
        evictable: &mut dyn FnMut(u32) -> bool,
        out: &mut Vec<u32>,
    ) -> bool {
        // Walk both lists with cursors, tracking T1's size as if the victims were gone.
        let mut t1_len = self.t1.len() as u64;
        let (mut c1, mut c2) = (self.t1.head(), self.t2.head());
        for _ in 0..n {
            c1 = skip(&self.links, c1, evictable);
            c2 = skip(&self.links, c2, evictable);
            let from_t1 = c1 != NIL && (t1_len > self.target || c2 == NIL);
            if from_t1 {
                out.push(c1);
                t1_len -= 1;
                c1 = self.links.next(c1);
            } else if c2 != NIL {
                out.push(c2);
                c2 = self.links.next(c2);
            } else {
                return false;
            }
        }
        true
    }

    fn state(&self) -> PolicyState {
        PolicyState {
            resident: vec![
                ("t1", self.t1.iter(&self.links).collect()),
                ("t2", self.t2.iter(&self.links).collect()),
            ],
            ghosts: vec![
                ("b1", self.ghost_keys(self.b1)),
                ("b2", self.ghost_keys(self.b2)),
            ],
            target: Some(self.target),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::key::KeyHasher;

    struct Fixture {
        p: ArcPolicy,
        h: KeyHasher,
    }

    impl Fixture {
        fn new(capacity: u32) -> Self {
            Fixture {
                p: ArcPolicy::try_new(capacity).unwrap(),
                h: KeyHasher::default(),
            }
        }
        fn insert(&mut self, id: u32, key: i128) {
            let k = BlockKeyRef::Int(key);
            self.p.on_insert(id, k, self.h.hash(k));
        }
        fn evict(&mut self, id: u32, key: i128) {
            let k = BlockKeyRef::Int(key);
            self.p.on_evict(id, k, self.h.hash(k));
        }
        fn touch_absent(&mut self, key: i128) {
            let k = BlockKeyRef::Int(key);
            self.p.on_touch_absent(k, self.h.hash(k));
        }
        fn lists(&self) -> (Vec<u32>, Vec<u32>, Vec<BlockKey>, Vec<BlockKey>, u64) {
            let s = self.p.state();
            (
                s.resident[0].1.clone(),
                s.resident[1].1.clone(),
                s.ghosts[0].1.clone(),
                s.ghosts[1].1.clone(),
                s.target.unwrap_or(u64::MAX),
            )
        }
    }

    fn ints(v: &[i128]) -> Vec<BlockKey> {
        v.iter().map(|&x| BlockKey::Int(x)).collect()
    }

    #[test]
    fn touch_promotes_only_ready_blocks() {
        let mut f = Fixture::new(4);
        for id in 0..3 {
            f.insert(id, i128::from(id) + 100);
        }
        f.p.on_touch(0, false);
        assert_eq!(f.lists().0, [1, 2, 0]);
        f.p.on_touch(1, true);
        f.p.on_touch(2, true);
        f.p.on_touch(1, true);
        assert_eq!(f.lists(), (vec![0], vec![2, 1], vec![], vec![], 0));
    }

    #[test]
    fn ghost_hits_adapt_target_and_reinsert_into_t2() {
        let mut f = Fixture::new(2);
        f.insert(0, 10);
        f.insert(1, 11);
        f.p.on_touch(1, true);
        f.evict(0, 10); // T1 -> B1
        f.evict(1, 11); // T2 -> B2
        assert_eq!(f.lists(), (vec![], vec![], ints(&[10]), ints(&[11]), 0));
        f.touch_absent(10); // B1 hit: p += max(1, 1/1)
        assert_eq!(f.lists().4, 1);
        f.touch_absent(10);
        assert_eq!(f.lists().4, 2);
        f.touch_absent(10); // capped at capacity
        assert_eq!(f.lists().4, 2);
        f.touch_absent(11); // B2 hit: p -= max(1, 1/1)
        assert_eq!(f.lists().4, 1);
        f.touch_absent(99); // not a ghost: nothing
        assert_eq!(f.lists().4, 1);
        f.insert(1, 10); // a ghost stored again goes to T2 and stops being a ghost
        assert_eq!(f.lists(), (vec![], vec![1], vec![], ints(&[11]), 1));
    }

    #[test]
    fn ghost_lists_are_bounded_by_capacity() {
        let mut f = Fixture::new(2);
        for key in 0..5 {
            f.insert(0, key);
            f.evict(0, key);
        }
        assert_eq!(f.lists().2, ints(&[3, 4]));
        assert_eq!(f.p.ghost_index.len(), 2);
        // Forgotten keys are no longer ghosts.
        f.touch_absent(1);
        assert_eq!(f.lists().4, 0);
    }

    #[test]
    fn victims_follow_target_and_fall_back() {
        let mut f = Fixture::new(4);
        for id in 0..4 {
            f.insert(id, i128::from(id));
        }
        f.p.on_touch(2, true);
        f.p.on_touch(3, true);
        // T1 = [0, 1], T2 = [2, 3], p = 0: T1 first while |T1| > p, then T2.
        let mut out = Vec::new();
        assert!(f.p.select_victims(3, &mut |_| true, &mut out));
        assert_eq!(out, [0, 1, 2]);
        // p = 1: one from T1 (|T1| = 2 > 1), then T2 (|T1| = 1 is not > 1).
        f.p.target = 1;
        out.clear();
        assert!(f.p.select_victims(3, &mut |_| true, &mut out));
        assert_eq!(out, [0, 2, 3]);
        // T2 has nothing evictable: fall back to T1.
        f.p.target = 4;
        out.clear();
        assert!(f.p.select_victims(2, &mut |id| id < 2, &mut out));
        assert_eq!(out, [0, 1]);
        out.clear();
        assert!(!f.p.select_victims(3, &mut |id| id < 2, &mut out));
    }

    #[test]
    fn removal_leaves_no_ghost() {
        let mut f = Fixture::new(2);
        f.insert(0, 7);
        f.p.on_remove(0);
        assert_eq!(f.lists(), (vec![], vec![], vec![], vec![], 0));
    }
}
