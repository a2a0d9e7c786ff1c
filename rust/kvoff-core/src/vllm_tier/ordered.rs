//! An insertion-ordered hash map with O(1) move-to-back: what Python's `OrderedDict` gives
//! vLLM's ARC lists and reuse tracker, over a slab of doubly-linked nodes.

use super::{Key, KeyMap};

const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Node<V> {
    key: Key,
    val: V,
    prev: u32,
    next: u32,
}

#[derive(Debug)]
pub(crate) struct OrderedKeys<V> {
    slots: KeyMap<u32>,
    nodes: Vec<Option<Node<V>>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
}

impl<V> Default for OrderedKeys<V> {
    fn default() -> Self {
        OrderedKeys {
            slots: KeyMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }
}

impl<V> OrderedKeys<V> {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.slots.contains_key(key)
    }

    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let slot = *self.slots.get(key)?;
        self.nodes[slot as usize].as_mut().map(|n| &mut n.val)
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

    fn link_back(&mut self, slot: u32) {
        let tail = self.tail;
        {
            let n = self.node_mut(slot);
            n.prev = tail;
            n.next = NIL;
        }
        if tail == NIL {
            self.head = slot;
        } else {
            self.node_mut(tail).next = slot;
        }
        self.tail = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let (p, n) = {
            let node = self.node(slot);
            (node.prev, node.next)
        };
        if p == NIL {
            self.head = n;
        } else {
            self.node_mut(p).next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.node_mut(n).prev = p;
        }
    }

    /// Append `key`, which the caller knows to be absent.
    pub(crate) fn push_back(&mut self, key: Key, val: V) {
        let node = Some(Node {
            key: key.clone(),
            val,
            prev: NIL,
            next: NIL,
        });
        let slot = if let Some(s) = self.free.pop() {
            self.nodes[s as usize] = node;
            s
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        self.slots.insert(key, slot);
        self.link_back(slot);
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<(Key, V)> {
        let slot = self.slots.remove(key)?;
        self.unlink(slot);
        self.free.push(slot);
        self.nodes[slot as usize].take().map(|n| (n.key, n.val))
    }

    /// Move `key` to the most recent end; false when absent.
    pub(crate) fn move_to_back(&mut self, key: &[u8]) -> bool {
        let Some(&slot) = self.slots.get(key) else {
            return false;
        };
        if self.tail != slot {
            self.unlink(slot);
            self.link_back(slot);
        }
        true
    }

    pub(crate) fn pop_front(&mut self) -> Option<(Key, V)> {
        if self.head == NIL {
            return None;
        }
        let key = self.node(self.head).key.clone();
        self.remove(&key)
    }

    /// Keys from oldest to newest, starting after `cursor` (`None`: from the oldest).
    pub(crate) fn next_after(&self, cursor: Option<u32>) -> Option<(u32, &Key)> {
        let slot = match cursor {
            None => self.head,
            Some(s) => self.node(s).next,
        };
        (slot != NIL).then(|| (slot, &self.node(slot).key))
    }
}
