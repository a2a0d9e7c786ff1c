//! vLLM's `OffloadKey` as the tier holds it: the block hash bytes and a 4-byte group index.
//!
//! A key carries its hash, computed once when it is made from the caller's bytes: one vLLM call
//! probes the tier's chunks, the request's record and ARC's lists with the same key, and
//! hashing 36 bytes each time was the largest single cost of a `prepare_store`. The tier's maps
//! therefore use [`Prehashed`], which takes the stored hash as it is. Keys of vLLM's hashes
//! (32-byte sha256 plus the group) are kept inline, so that taking one in costs no allocation
//! and comparing one reads no second cache line; longer keys go to the heap. Equality and
//! order are the bytes' (the hash only rules out unequal keys quickly).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// The longest key held inline: with the length byte and the variant's tag, the inline form
/// is as large as the heap form's alignment lets the enum be anyway (40 bytes).
const INLINE: usize = 38;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Arc<[u8]>),
}

#[derive(Clone)]
pub struct Key {
    hash: u64,
    repr: Repr,
}

/// The hash a key carries: a fixed foldhash of its bytes (the same in every process, which
/// does not matter here but keeps runs repeatable).
fn hash_bytes(b: &[u8]) -> u64 {
    foldhash::fast::FixedState::default().hash_one(b)
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Self {
        let repr = if b.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            // The length fits: it is at most INLINE.
            #[allow(clippy::cast_possible_truncation)]
            Repr::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Repr::Heap(Arc::from(b))
        };
        Key {
            hash: hash_bytes(b),
            repr,
        }
    }
}

impl From<Vec<u8>> for Key {
    fn from(b: Vec<u8>) -> Self {
        Key::from(b.as_slice())
    }
}

impl Key {
    /// The hash this key carries (what [`Prehashed`] hands a map).
    #[must_use]
    pub fn prehash(&self) -> u64 {
        self.hash
    }
}

impl Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.repr {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(b) => b,
        }
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && **self == **other
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::show(self))
    }
}

/// The tier maps' hasher: a [`Key`] hands over the hash it carries, untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;

    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

#[derive(Debug)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    // Only keys (and references to them) are hashed with this hasher, and they write one u64;
    // anything else still gets a proper hash rather than a silent constant.
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_bytes(bytes) ^ self.0.rotate_left(5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(key: &Key) -> u64 {
        Prehashed.hash_one(key)
    }

    #[test]
    fn both_forms_are_their_bytes_and_carry_the_bytes_hash() {
        for len in [0, 1, 36, INLINE, INLINE + 1, 100] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let key = Key::from(bytes.as_slice());
            assert_eq!(matches!(key.repr, Repr::Inline { .. }), len <= INLINE);
            assert_eq!(&*key, bytes.as_slice());
            assert_eq!(hash_of(&key), hash_bytes(&bytes));
            assert_eq!(hash_of(&key), hash_of(&Key::from(bytes.clone())));
            assert_eq!(key.clone(), key);
        }
    }

    #[test]
    fn order_and_equality_follow_the_bytes_across_forms() {
        let short = Key::from(&[1u8, 2][..]);
        let long = Key::from(vec![1u8; INLINE + 2]);
        let long2 = Key::from(vec![1u8; INLINE + 2]);
        assert_eq!(long, long2);
        assert_ne!(short, long);
        assert_eq!(
            short.cmp(&long),
            [1u8, 2][..].cmp(&vec![1u8; INLINE + 2][..])
        );
        // A prefix with trailing zeros is not the shorter key (the length counts).
        assert_ne!(Key::from(&[1u8, 0][..]), Key::from(&[1u8][..]));
    }

    #[test]
    fn keys_with_the_same_hash_but_other_bytes_differ() {
        let a = Key::from(&b"a"[..]);
        let mut b = Key::from(&b"b"[..]);
        b.hash = a.hash;
        assert_ne!(a, b);
        let mut map: hashbrown::HashMap<Key, u32, Prehashed> = hashbrown::HashMap::default();
        map.insert(a.clone(), 1);
        map.insert(b.clone(), 2);
        assert_eq!((map[&a], map[&b], map.len()), (1, 2, 2));
    }
}
