//! Intrusive doubly-linked lists over dense `u32` ids.
//!
//! The links live in two arrays indexed by id, shared by every list an id may belong to (an id
//! is in at most one list of a [`Links`] at a time), so moving a block to the most-recent end
//! is two array writes, with no allocation and no hashing.

pub(crate) const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    prev: Vec<u32>,
    next: Vec<u32>,
}

impl Links {
    pub(crate) fn with_len(n: usize) -> Self {
        Links {
            prev: vec![NIL; n],
            next: vec![NIL; n],
        }
    }

    /// Room for one more id at the end (for arenas that grow).
    pub(crate) fn push_slot(&mut self) {
        self.prev.push(NIL);
        self.next.push(NIL);
    }

    pub(crate) fn next(&self, id: u32) -> u32 {
        self.next[id as usize]
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
        let i = id as usize;
        links.prev[i] = self.tail;
        links.next[i] = NIL;
        if self.tail == NIL {
            self.head = id;
        } else {
            links.next[self.tail as usize] = id;
        }
        self.tail = id;
        self.len += 1;
    }

    /// Unlink `id`, which the caller knows to be in this list.
    pub(crate) fn remove(&mut self, links: &mut Links, id: u32) {
        let i = id as usize;
        let (p, n) = (links.prev[i], links.next[i]);
        if p == NIL {
            self.head = n;
        } else {
            links.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            links.prev[n as usize] = p;
        }
        links.prev[i] = NIL;
        links.next[i] = NIL;
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
mod tests {
    use super::*;

    #[test]
    fn push_remove_move() {
        let mut links = Links::with_len(5);
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
