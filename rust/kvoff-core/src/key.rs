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

/// The hasher every key table uses: foldhash (fast on short keys, seeded per process), with
/// 32-byte keys, the size of a SHA-256 content hash, hashed inline from their four words.
/// foldhash's path for keys over 16 bytes is a call into a loop built for long inputs, which
/// cost a fifth of a whole lookup at 10^4 resident blocks.
#[derive(Clone)]
pub struct KeyHasher {
    state: foldhash::fast::RandomState,
    seeds: [u64; 6],
}

impl Default for KeyHasher {
    fn default() -> Self {
        let state = foldhash::fast::RandomState::default();
        // Per-process seeds for the 32-byte path, drawn from foldhash's own random state.
        let seeds = std::array::from_fn(|i| state.hash_one(i as u64));
        KeyHasher { state, seeds }
    }
}

/// The 128-bit product of `x` and `y`, folded to 64 bits (foldhash's and ahash's mixing step).
#[inline]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    (full as u64) ^ ((full >> 64) as u64)
}

impl KeyHasher {
    #[must_use]
    // Measured: left to the compiler, these stayed out of line in the probe loops.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn hash(&self, key: BlockKeyRef<'_>) -> u64 {
        match key {
            BlockKeyRef::Bytes(b) if b.len() == 32 => self.hash32(b),
            _ => self.state.hash_one(key),
        }
    }

    /// Two independent folded products of seeded word pairs, folded together once more so
    /// that every input bit reaches both ends of the result (hashbrown probes with the low
    /// bits and filters with the top seven).
    #[inline]
    fn hash32(&self, b: &[u8]) -> u64 {
        let mut w = [0u64; 4];
        for (word, chunk) in w.iter_mut().zip(b.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        }
        let s = &self.seeds;
        let lo = folded_multiply(w[0] ^ s[0], w[1] ^ s[1]);
        let hi = folded_multiply(w[2] ^ s[2], w[3] ^ s[3]);
        folded_multiply(lo ^ s[4], hi ^ s[5])
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
        assert_eq!(h.state.hash_one(&owned), h.hash(BlockKeyRef::Bytes(b"abc")));
        let long = BlockKey::from(&[7u8; 32][..]);
        assert_eq!(h.hash(long.as_ref()), h.hash(BlockKeyRef::Bytes(&[7; 32])));
    }

    #[test]
    fn thirty_two_byte_keys_spread_over_low_and_high_bits() {
        // Keys differing in one bit of any word: the probe position (low bits) and the
        // control tag (top seven bits) must both vary, or the table degrades to a scan.
        let h = KeyHasher::default();
        let mut low = std::collections::HashSet::new();
        let mut top = std::collections::HashSet::new();
        for byte in 0..32 {
            for bit in 0..8 {
                let mut k = [0u8; 32];
                k[byte] = 1 << bit;
                let x = h.hash(BlockKeyRef::Bytes(&k));
                low.insert(x & 0xfff);
                top.insert(x >> 57);
            }
        }
        assert!(low.len() > 200, "{} distinct low values of 256", low.len());
        assert!(top.len() > 100, "{} distinct tags of 128", top.len());
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
