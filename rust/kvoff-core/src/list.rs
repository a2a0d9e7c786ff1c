//! Intrusive doubly-linked lists over dense `u32` ids.
//!
//! The links live in two arrays indexed by id, shared by every list an id may belong to (an id
//! is in at most one list of a [`Links`] at a time), so moving a block to the most-recent end
//! is two array writes, with no allocation and no hashing.

use crate::memory::{self, AllocFailed};

pub(crate) const NIL: u32 = u32::MAX;

/// Both links of an id side by side: unlinking touches one cache line per neighbour.
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    links: Vec<Link>,
}

impl Links {
    /// Links for ids `0..n`, all unlinked.
    pub(crate) fn try_with_len(n: usize, what: &'static str) -> Result<Self, AllocFailed> {
        Ok(Links {
            links: memory::try_filled_vec(n, UNLINKED, what)?,
        })
    }

    /// No ids yet, with room for `n` (for arenas that grow up to a known bound).
    pub(crate) fn try_with_room(n: usize, what: &'static str) -> Result<Self, AllocFailed> {
        Ok(Links {
            links: memory::try_empty_vec(n, what)?,
        })
    }

    /// Bytes the links of `n` ids take.
    pub(crate) fn bytes_for(n: usize) -> u64 {
        memory::array_bytes::<Link>(n)
    }

    /// Room for one more id at the end (for arenas that grow).
    pub(crate) fn push_slot(&mut self) {
        self.links.push(UNLINKED);
    }

    pub(crate) fn next(&self, id: u32) -> u32 {
        self.links[id as usize].next
    }
}

/// One list: head is the least recently used end, tail the most recent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl List {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn head(&self) -> u32 {
        self.head
    }

    pub(crate) fn push_back(&mut self, links: &mut Links, id: u32) {
        links.links[id as usize] = Link {
            prev: self.tail,
            next: NIL,
        };
        if self.tail == NIL {
            self.head = id;
        } else {
            links.links[self.tail as usize].next = id;
        }
        self.tail = id;
        self.len += 1;
    }

    /// Unlink `id`, which the caller knows to be in this list.
    pub(crate) fn remove(&mut self, links: &mut Links, id: u32) {
        let Link { prev: p, next: n } = links.links[id as usize];
        if p == NIL {
            self.head = n;
        } else {
            links.links[p as usize].next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            links.links[n as usize].prev = p;
        }
        links.links[id as usize] = UNLINKED;
        self.len -= 1;
    }

    pub(crate) fn move_to_back(&mut self, links: &mut Links, id: u32) {
        if self.tail != id {
            self.remove(links, id);
            self.push_back(links, id);
        }
    }

    /// Ids from least to most recently used.
    pub(crate) fn iter<'a>(&self, links: &'a Links) -> impl Iterator<Item = u32> + 'a {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            (cur != NIL).then(|| {
                let id = cur;
                cur = links.next(id);
                id
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn push_remove_move() {
        let mut links = Links::try_with_len(5, "test").unwrap();
        let mut l = List::default();
        for id in [3, 1, 4, 0] {
            l.push_back(&mut links, id);
        }
        assert_eq!(l.iter(&links).collect::<Vec<_>>(), [3, 1, 4, 0]);
        l.move_to_back(&mut links, 3);
        l.remove(&mut links, 4);
        assert_eq!(l.iter(&links).collect::<Vec<_>>(), [1, 0, 3]);
        assert_eq!((l.len(), l.head()), (3, 1));
        for id in [1, 0, 3] {
            l.remove(&mut links, id);
        }
        assert_eq!((l.len(), l.head(), l.iter(&links).count()), (0, NIL, 0));
    }
}
