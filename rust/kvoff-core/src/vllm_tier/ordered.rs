//! Insertion-ordered key lists with O(1) move-to-back, over one hash table and a slab of
//! doubly-linked nodes: what Python's `OrderedDict` gives vLLM's ARC lists and reuse tracker.
//! A key is in at most one of the `L` lists, so moving it between lists (ARC's T1 to T2, a
//! resident key to a ghost list) costs one hash lookup instead of a removal and an insertion.
//! The table holds only slot numbers and finds a slot by the hash its node's key carries, so
//! each key is stored once, and a caller that already holds a slot moves it without a lookup.

use hashbrown::HashTable;

use super::Key;

const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Node<V> {
    key: Key,
    val: V,
    list: u8,
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
    len: usize,
}

const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
    len: 0,
};

#[derive(Debug)]
pub(crate) struct OrderedKeys<V, const L: usize = 1> {
    /// Slot numbers, found by their node's key.
    slots: HashTable<u32>,
    nodes: Vec<Option<Node<V>>>,
    free: Vec<u32>,
    lists: [Ends; L],
}

impl<V, const L: usize> Default for OrderedKeys<V, L> {
    fn default() -> Self {
        OrderedKeys {
            slots: HashTable::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            lists: [EMPTY; L],
        }
    }
}

impl<V, const L: usize> OrderedKeys<V, L> {
    /// Keys in all lists.
    pub(crate) fn total_len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn len(&self, list: usize) -> usize {
        self.lists[list].len
    }

    /// The slot holding `key`.
    fn slot_of(&self, key: &Key) -> Option<u32> {
        let nodes = &self.nodes;
        self.slots
            .find(key.prehash(), |&s| Self::holds(nodes, s, key))
            .copied()
    }

    fn holds(nodes: &[Option<Node<V>>], slot: u32, key: &Key) -> bool {
        nodes[slot as usize].as_ref().is_some_and(|n| n.key == *key)
    }

    pub(crate) fn contains(&self, key: &Key) -> bool {
        self.slot_of(key).is_some()
    }

    /// The list holding `key`.
    pub(crate) fn list_of(&self, key: &Key) -> Option<usize> {
        let slot = self.slot_of(key)?;
        Some(usize::from(self.node(slot).list))
    }

    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut V> {
        let slot = self.slot_of(key)?;
        Some(&mut self.node_mut(slot).val)
    }

    fn node(&self, slot: u32) -> &Node<V> {
        self.nodes[slot as usize]
            .as_ref()
            .expect("a linked slot holds a node")
    }

    fn node_mut(&mut self, slot: u32) -> &mut Node<V> {
        self.nodes[slot as usize]
            .as_mut()
            .expect("a linked slot holds a node")
    }

    fn link_back(&mut self, slot: u32, list: usize) {
        let tail = self.lists[list].tail;
        {
            let n = self.node_mut(slot);
            n.list = list as u8;
            n.prev = tail;
            n.next = NIL;
        }
        if tail == NIL {
            self.lists[list].head = slot;
        } else {
            self.node_mut(tail).next = slot;
        }
        self.lists[list].tail = slot;
        self.lists[list].len += 1;
    }

    fn unlink(&mut self, slot: u32) -> usize {
        let (p, n, list) = {
            let node = self.node(slot);
            (node.prev, node.next, usize::from(node.list))
        };
        if p == NIL {
            self.lists[list].head = n;
        } else {
            self.node_mut(p).next = n;
        }
        if n == NIL {
            self.lists[list].tail = p;
        } else {
            self.node_mut(n).prev = p;
        }
        self.lists[list].len -= 1;
        list
    }

    fn new_node(&mut self, key: Key, val: V) -> u32 {
        let node = Some(Node {
            key,
            val,
            list: 0,
            prev: NIL,
            next: NIL,
        });
        if let Some(s) = self.free.pop() {
            self.nodes[s as usize] = node;
            s
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    /// Append `key`, which the caller knows to be absent, to `list`.
    pub(crate) fn push_back(&mut self, list: usize, key: Key, val: V) {
        let hash = key.prehash();
        let slot = self.new_node(key, val);
        let nodes = &self.nodes;
        self.slots.insert_unique(hash, slot, |&s| {
            nodes[s as usize]
                .as_ref()
                .expect("a slot in the table holds a node")
                .key
                .prehash()
        });
        self.link_back(slot, list);
    }

    /// Put `key` at the back of `list`: moved there from wherever it is (its value kept), or
    /// appended with `val`. Returns the list it was in.
    pub(crate) fn put_back(&mut self, list: usize, key: &Key, val: V) -> Option<usize> {
        if let Some(slot) = self.slot_of(key) {
            let was = self.unlink(slot);
            self.link_back(slot, list);
            return Some(was);
        }
        self.push_back(list, key.clone(), val);
        None
    }

    /// Take `slot` out of the table, its list and the slab.
    fn remove_slot(&mut self, slot: u32) -> (usize, Key, V) {
        let hash = self.node(slot).key.prehash();
        if let Ok(entry) = self.slots.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        let list = self.unlink(slot);
        self.free.push(slot);
        let node = self.nodes[slot as usize]
            .take()
            .expect("a linked slot holds a node");
        (list, node.key, node.val)
    }

    /// Remove `key` from whichever list holds it: `(list, key, value)`.
    pub(crate) fn remove(&mut self, key: &Key) -> Option<(usize, Key, V)> {
        let slot = self.slot_of(key)?;
        Some(self.remove_slot(slot))
    }

    /// The key in `slot` (one `next_after` returned).
    pub(crate) fn key_at(&self, slot: u32) -> &Key {
        &self.node(slot).key
    }

    /// Move `slot` to the back of `dest` (a no-op when it is there already).
    pub(crate) fn relink_slot(&mut self, slot: u32, dest: usize) {
        if usize::from(self.node(slot).list) != dest || self.lists[dest].tail != slot {
            self.unlink(slot);
            self.link_back(slot, dest);
        }
    }

    /// Look `key` up once; when `to(its list)` names a list, move it to that list's back.
    /// Returns the list it was in (`None`: absent).
    pub(crate) fn relink(
        &mut self,
        key: &Key,
        to: impl FnOnce(usize) -> Option<usize>,
    ) -> Option<usize> {
        let slot = self.slot_of(key)?;
        let list = usize::from(self.node(slot).list);
        if let Some(dest) = to(list) {
            self.relink_slot(slot, dest);
        }
        Some(list)
    }

    /// Move `key` to the back of its own list; false when absent.
    pub(crate) fn move_to_back(&mut self, key: &Key) -> bool {
        self.relink(key, Some).is_some()
    }

    pub(crate) fn pop_front(&mut self, list: usize) -> Option<(Key, V)> {
        let head = self.lists[list].head;
        if head == NIL {
            return None;
        }
        let (_, key, val) = self.remove_slot(head);
        Some((key, val))
    }

    /// `list`'s keys from oldest to newest, starting after `cursor` (`None`: from the oldest).
    pub(crate) fn next_after(&self, list: usize, cursor: Option<u32>) -> Option<(u32, &Key)> {
        let slot = match cursor {
            None => self.lists[list].head,
            Some(s) => self.node(s).next,
        };
        (slot != NIL).then(|| (slot, &self.node(slot).key))
    }

    /// `list`'s keys from oldest to newest.
    #[cfg(test)]
    pub(crate) fn keys(&self, list: usize) -> Vec<Key> {
        let mut out = Vec::new();
        let mut cursor = None;
        while let Some((slot, key)) = self.next_after(list, cursor) {
            out.push(key.clone());
            cursor = Some(slot);
        }
        out
    }
}
