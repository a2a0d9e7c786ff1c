//! Block id allocation for the CPU tier.

use crate::memory::{self, AllocFailed};

/// Hands out block ids `0..capacity`: fresh ids in increasing order first, then freed ids
/// last-in-first-out. That is the order vLLM's CPU backend uses, so the same call sequence
/// yields the same ids in both.
#[derive(Debug, Clone)]
pub struct IdPool {
    capacity: u32,
    next_fresh: u32,
    freed: Vec<u32>,
}

impl IdPool {
    #[must_use]
    pub fn new(capacity: u32) -> Self {
        IdPool {
            capacity,
            next_fresh: 0,
            freed: Vec::new(),
        }
    }

    /// A pool whose list of freed ids has room for every id up front, so that freeing never
    /// allocates (a larger list in the middle of a call could fail).
    pub(crate) fn try_new(capacity: u32) -> Result<Self, AllocFailed> {
        Ok(IdPool {
            capacity,
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

    /// Ids that can be allocated now.
    #[must_use]
    pub fn free(&self) -> u32 {
        self.capacity - self.next_fresh + self.freed.len() as u32
    }

    /// Ids currently handed out.
    #[must_use]
    pub fn allocated(&self) -> u32 {
        self.capacity - self.free()
    }

    /// One id, or `None` when every id is in use.
    pub fn allocate(&mut self) -> Option<u32> {
        if self.next_fresh < self.capacity {
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
    fn exhausted_pool_allocates_nothing() {
        let mut p = IdPool::new(1);
        assert_eq!(p.allocate(), Some(0));
        assert_eq!(p.allocate(), None);
        p.release(0);
        assert_eq!(p.allocate(), Some(0));
    }
}
