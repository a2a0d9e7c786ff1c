//! Block id allocation for the CPU tier.

use crate::memory::{self, AllocFailed};

/// Hands out block ids `0..capacity`: fresh ids in increasing order first, then freed ids
/// last-in-first-out. That is the order vLLM's CPU backend uses, so the same call sequence
/// yields the same ids in both.
///
/// Only ids below `limit` are ever handed out. The limit follows a tier whose memory arrives
/// in chunks (pinned in the background): it only grows, up to `capacity`. Since fresh ids come
/// lowest first and a freed id was handed out before, capping the fresh ids is enough.
#[derive(Debug, Clone)]
pub struct IdPool {
    capacity: u32,
    limit: u32,
    next_fresh: u32,
    freed: Vec<u32>,
}

/// Why [`IdPool::set_limit`] refused a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefused {
    /// Below the current limit: ids at or above it may be in use, and usable memory never
    /// goes away.
    Shrinks { limit: u32 },
    /// Above the capacity.
    BeyondCapacity { capacity: u32 },
}

impl IdPool {
    #[must_use]
    pub fn new(capacity: u32) -> Self {
        IdPool {
            capacity,
            limit: capacity,
            next_fresh: 0,
            freed: Vec::new(),
        }
    }

    /// A pool whose list of freed ids has room for every id up front, so that freeing never
    /// allocates (a larger list in the middle of a call could fail).
    pub(crate) fn try_new(capacity: u32) -> Result<Self, AllocFailed> {
        Ok(IdPool {
            capacity,
            limit: capacity,
            next_fresh: 0,
            freed: memory::try_empty_vec(capacity as usize, "free block ids")?,
        })
    }

    /// Bytes a pool of `capacity` ids takes at most.
    pub(crate) fn bytes_for(capacity: u32) -> u64 {
        memory::array_bytes::<u32>(capacity as usize)
    }

    #[must_use]
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Ids below this may be handed out; `capacity` unless lowered at construction.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The same pool with only ids below `limit` usable for now, for a tier that starts with
    /// part of its memory (the limit then grows with [`IdPool::set_limit`]). Refused above the
    /// capacity, or below an id already handed out.
    pub fn with_limit(mut self, limit: u32) -> Result<Self, LimitRefused> {
        if limit > self.capacity {
            return Err(LimitRefused::BeyondCapacity {
                capacity: self.capacity,
            });
        }
        if limit < self.next_fresh {
            return Err(LimitRefused::Shrinks {
                limit: self.next_fresh,
            });
        }
        self.limit = limit;
        Ok(self)
    }

    /// Raise the limit (setting it to its current value is a no-op). Nothing changes on a
    /// refusal.
    pub fn set_limit(&mut self, limit: u32) -> Result<(), LimitRefused> {
        if limit < self.limit {
            return Err(LimitRefused::Shrinks { limit: self.limit });
        }
        if limit > self.capacity {
            return Err(LimitRefused::BeyondCapacity {
                capacity: self.capacity,
            });
        }
        self.limit = limit;
        Ok(())
    }

    /// Ids that can be allocated now (below the limit).
    #[must_use]
    pub fn free(&self) -> u32 {
        self.limit - self.next_fresh + self.freed.len() as u32
    }

    /// Ids currently handed out.
    #[must_use]
    pub fn allocated(&self) -> u32 {
        self.next_fresh - self.freed.len() as u32
    }

    /// One id, or `None` when every id below the limit is in use.
    pub fn allocate(&mut self) -> Option<u32> {
        if self.next_fresh < self.limit {
            let id = self.next_fresh;
            self.next_fresh += 1;
            Some(id)
        } else {
            self.freed.pop()
        }
    }

    /// Return an id. The caller guarantees it is currently allocated (the manager owns every
    /// id it frees); a double free would hand one id to two blocks.
    pub fn release(&mut self, id: u32) {
        debug_assert!(
            id < self.next_fresh && !self.freed.contains(&id),
            "double free of {id}"
        );
        self.freed.push(id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_first_then_lifo() {
        let mut p = IdPool::new(4);
        assert_eq!((p.free(), p.allocated()), (4, 0));
        assert_eq!([p.allocate(), p.allocate()], [Some(0), Some(1)]);
        p.release(0);
        // Fresh id 2 comes before the freed 0.
        assert_eq!(p.allocate(), Some(2));
        assert_eq!(p.allocate(), Some(3));
        p.release(2);
        p.release(1);
        assert_eq!(p.free(), 3);
        // Freed ids: 0, 2, 1 -> reused 1, 2, 0.
        assert_eq!(
            [p.allocate(), p.allocate(), p.allocate()],
            [Some(1), Some(2), Some(0)]
        );
        assert_eq!(p.allocate(), None);
        assert_eq!((p.free(), p.allocated()), (0, 4));
    }

    #[test]
    fn no_id_at_or_above_the_limit_is_handed_out() {
        let mut p = IdPool::new(6).with_limit(0).unwrap();
        assert_eq!((p.free(), p.allocated(), p.allocate()), (0, 0, None));
        p.set_limit(2).unwrap();
        assert_eq!(
            [p.allocate(), p.allocate(), p.allocate()],
            [Some(0), Some(1), None]
        );
        p.release(0);
        // The freed id comes back; the fresh ids still stop at the limit.
        assert_eq!([p.allocate(), p.allocate()], [Some(0), None]);
        p.set_limit(2).unwrap(); // the same limit again: nothing changes
        assert_eq!(p.free(), 0);
        p.set_limit(5).unwrap();
        assert_eq!((p.free(), p.allocated()), (3, 2));
        assert_eq!(
            [p.allocate(), p.allocate(), p.allocate(), p.allocate()],
            [Some(2), Some(3), Some(4), None]
        );
    }

    #[test]
    fn the_limit_never_shrinks_nor_passes_the_capacity() {
        let mut p = IdPool::new(4).with_limit(3).unwrap();
        assert_eq!(p.set_limit(2), Err(LimitRefused::Shrinks { limit: 3 }));
        assert_eq!(
            p.set_limit(5),
            Err(LimitRefused::BeyondCapacity { capacity: 4 })
        );
        assert_eq!((p.limit(), p.free()), (3, 3));
        p.set_limit(4).unwrap();
        assert_eq!((p.limit(), p.free()), (4, 4));
    }

    #[test]
    fn a_starting_limit_is_checked_against_the_capacity_and_the_ids_in_use() {
        assert_eq!(
            IdPool::new(4).with_limit(5).unwrap_err(),
            LimitRefused::BeyondCapacity { capacity: 4 }
        );
        let mut p = IdPool::new(4);
        p.allocate();
        p.allocate();
        assert_eq!(
            p.with_limit(1).unwrap_err(),
            LimitRefused::Shrinks { limit: 2 }
        );
    }

    #[test]
    fn exhausted_pool_allocates_nothing() {
        let mut p = IdPool::new(1);
        assert_eq!(p.allocate(), Some(0));
        assert_eq!(p.allocate(), None);
        p.release(0);
        assert_eq!(p.allocate(), Some(0));
    }
}
