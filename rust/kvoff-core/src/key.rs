//! Block keys: the content hashes that name CPU-tier blocks.
//!
//! A key is either a byte string of any length or an integer. The two kinds never compare
//! equal (`Int(5)` is not `Bytes(b"\x05")`), and byte keys compare in full, so a hash
//! collision in the index can never serve a wrong block.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

/// An owned block key, as the manager stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockKey {
    /// An integer hash. `i128` covers both signed and unsigned 64-bit hashes.
    Int(i128),
    /// A byte-string hash of any length.
    Bytes(Box<[u8]>),
}

/// A borrowed block key: what callers pass in, so a lookup never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKeyRef<'a> {
    Int(i128),
    Bytes(&'a [u8]),
}

impl BlockKey {
    #[must_use]
    pub fn as_ref(&self) -> BlockKeyRef<'_> {
        match self {
            BlockKey::Int(v) => BlockKeyRef::Int(*v),
            BlockKey::Bytes(b) => BlockKeyRef::Bytes(b),
        }
    }
}

impl BlockKeyRef<'_> {
    #[must_use]
    pub fn to_owned_key(self) -> BlockKey {
        match self {
            BlockKeyRef::Int(v) => BlockKey::Int(v),
            BlockKeyRef::Bytes(b) => BlockKey::Bytes(b.into()),
        }
    }

    /// Whether this borrowed key names the same block as `key`.
    #[must_use]
    pub fn matches(self, key: &BlockKey) -> bool {
        match (self, key) {
            (BlockKeyRef::Int(a), BlockKey::Int(b)) => a == *b,
            (BlockKeyRef::Bytes(a), BlockKey::Bytes(b)) => a == &**b,
            _ => false,
        }
    }
}

// Owned and borrowed keys must hash identically: the index is probed with borrowed keys.
// No kind tag is hashed: an int and a byte string that collide are still told apart by the
// full comparison, and the hot path saves a round of mixing.
impl Hash for BlockKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            BlockKeyRef::Int(v) => state.write_i128(*v),
            BlockKeyRef::Bytes(b) => state.write(b),
        }
    }
}

impl Hash for BlockKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl From<i128> for BlockKey {
    fn from(v: i128) -> Self {
        BlockKey::Int(v)
    }
}

impl From<&[u8]> for BlockKey {
    fn from(b: &[u8]) -> Self {
        BlockKey::Bytes(b.into())
    }
}

/// Keys longer than this are shortened in messages; content hashes are 8 to 64 bytes.
const MAX_SHOWN_BYTES: usize = 64;

/// Python-style display (`b'\x05ab'`, `42`), because the messages reach Python users.
impl fmt::Display for BlockKeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockKeyRef::Int(v) => write!(f, "{v}"),
            BlockKeyRef::Bytes(b) => {
                f.write_str("b'")?;
                for &c in b.iter().take(MAX_SHOWN_BYTES) {
                    match c {
                        b'\\' => f.write_str("\\\\")?,
                        b'\'' => f.write_str("\\'")?,
                        b'\n' => f.write_str("\\n")?,
                        b'\r' => f.write_str("\\r")?,
                        b'\t' => f.write_str("\\t")?,
                        0x20..=0x7e => write!(f, "{}", c as char)?,
                        _ => write!(f, "\\x{c:02x}")?,
                    }
                }
                f.write_str("'")?;
                if b.len() > MAX_SHOWN_BYTES {
                    write!(f, "... ({} bytes)", b.len())?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// The hasher every key table uses (foldhash: fast on short keys, seeded per process).
#[derive(Clone, Default)]
pub struct KeyHasher(foldhash::fast::RandomState);

impl KeyHasher {
    #[must_use]
    pub fn hash(&self, key: BlockKeyRef<'_>) -> u64 {
        self.0.hash_one(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_and_borrowed_hash_alike() {
        let h = KeyHasher::default();
        let owned = BlockKey::from(&b"abc"[..]);
        assert_eq!(h.hash(owned.as_ref()), h.hash(BlockKeyRef::Bytes(b"abc")));
        assert_eq!(h.0.hash_one(&owned), h.hash(BlockKeyRef::Bytes(b"abc")));
    }

    #[test]
    fn int_and_bytes_differ() {
        assert!(!BlockKeyRef::Int(5).matches(&BlockKey::Bytes(Box::new([5]))));
        assert!(!BlockKeyRef::Bytes(&[5]).matches(&BlockKey::Int(5)));
        assert!(BlockKeyRef::Int(5).matches(&BlockKey::Int(5)));
        assert!(!BlockKeyRef::Bytes(b"ab").matches(&BlockKey::from(&b"abc"[..])));
    }

    #[test]
    fn displays_like_python() {
        assert_eq!(BlockKeyRef::Bytes(b"a\x05'\\").to_string(), r"b'a\x05\'\\'");
        assert_eq!(BlockKeyRef::Int(-7).to_string(), "-7");
        let long = [b'x'; 70];
        assert!(BlockKeyRef::Bytes(&long)
            .to_string()
            .ends_with("... (70 bytes)"));
    }
}
