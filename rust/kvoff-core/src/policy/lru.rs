use super::{EvictionPolicy, PolicyState};
use crate::key::BlockKeyRef;
use crate::list::{Links, List, NIL};
use crate::memory::AllocFailed;

/// Least recently used first. New blocks and touched blocks go to the most-recent end.
#[derive(Debug, Clone)]
pub struct LruPolicy {
    links: Links,
    order: List,
}

impl LruPolicy {
    pub(crate) fn try_new(capacity: u32) -> Result<Self, AllocFailed> {
        Ok(LruPolicy {
            links: Links::try_with_len(capacity as usize, "LRU links")?,
            order: List::default(),
        })
    }

    /// Bytes a policy for `capacity` blocks takes.
    pub(crate) fn bytes_for(capacity: u32) -> u64 {
        Links::bytes_for(capacity as usize)
    }
}

impl EvictionPolicy for LruPolicy {
    fn on_insert(&mut self, id: u32, _key: BlockKeyRef<'_>, _hash: u64) {
        self.order.push_back(&mut self.links, id);
    }

    fn on_touch(&mut self, id: u32, _ready: bool) {
        self.order.move_to_back(&mut self.links, id);
    }

    fn on_touch_absent(&mut self, _key: BlockKeyRef<'_>, _hash: u64) {}

    fn on_evict(&mut self, id: u32, _key: BlockKeyRef<'_>, _hash: u64) {
        self.order.remove(&mut self.links, id);
    }

    fn on_remove(&mut self, id: u32) {
        self.order.remove(&mut self.links, id);
    }

    fn select_victims(
        &self,
        n: usize,
        evictable: &mut dyn FnMut(u32) -> bool,
        out: &mut Vec<u32>,
    ) -> bool {
        let mut found = 0;
        let mut cur = self.order.head();
        while found < n && cur != NIL {
            if evictable(cur) {
                out.push(cur);
                found += 1;
            }
            cur = self.links.next(cur);
        }
        found == n
    }

    fn state(&self) -> PolicyState {
        PolicyState {
            resident: vec![("lru", self.order.iter(&self.links).collect())],
            ghosts: Vec::new(),
            target: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids(p: &LruPolicy) -> Vec<u32> {
        p.order.iter(&p.links).collect()
    }

    #[test]
    fn evicts_least_recent_evictable_first() {
        let mut p = LruPolicy::try_new(4).unwrap();
        for id in 0..4 {
            p.on_insert(id, BlockKeyRef::Int(i128::from(id)), 0);
        }
        p.on_touch(0, true);
        assert_eq!(ids(&p), [1, 2, 3, 0]);
        let mut out = Vec::new();
        assert!(p.select_victims(2, &mut |id| id != 1, &mut out));
        assert_eq!(out, [2, 3]);
        // Selection changes nothing; asking for too many fails.
        assert_eq!(ids(&p), [1, 2, 3, 0]);
        out.clear();
        assert!(!p.select_victims(4, &mut |id| id != 1, &mut out));
        p.on_evict(2, BlockKeyRef::Int(2), 0);
        p.on_remove(0);
        assert_eq!(ids(&p), [1, 3]);
        assert_eq!(p.state().resident, vec![("lru", vec![1, 3])]);
    }
}
