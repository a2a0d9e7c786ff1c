//! The block index: which block id holds each key, and whether that block is ready.
//!
//! A `hashbrown::HashTable` of 64-byte slots (the key inline up to 32 bytes, the block id and
//! a ready flag), probed with borrowed keys, so no call allocates a key to look it up. Probe
//! loops prefetch the lines a key's probe will touch a few keys ahead; the addresses come from
//! hashbrown's bucket layout, which is why `Cargo.toml` pins hashbrown's exact version and a
//! unit test checks the layout. A wrong guess would only waste a prefetch.

use hashbrown::HashTable;

use crate::hugepages;
use crate::key::{BlockKey, BlockKeyRef, KeyHasher};
use crate::memory::{self, AllocFailed};

/// Byte keys up to this length live inside the index slot: content hashes are 8 to 32 bytes,
/// and comparing them in place saves a pointer chase (a cache miss on large tiers).
const INLINE_BYTES: usize = 32;

/// Inline key bytes, aligned so that moving a slot or a key moves whole words (unaligned,
/// they were copied bytewise and read back wider, stalling on store forwarding).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
pub(crate) struct KeyBytes([u8; INLINE_BYTES]);

/// A key as the index stores it.
#[derive(Debug, Clone)]
pub(crate) enum StoredKey {
    Int(i128),
    Inline { len: u8, data: KeyBytes },
    Heap(Box<[u8]>),
}

impl StoredKey {
    fn new(key: BlockKeyRef<'_>) -> Self {
        match key {
            BlockKeyRef::Int(v) => StoredKey::Int(v),
            BlockKeyRef::Bytes(b) if b.len() <= INLINE_BYTES => {
                // The full length as a fixed-size copy (no memcpy call), the rest padded.
                let data = <[u8; INLINE_BYTES]>::try_from(b).unwrap_or_else(|_| {
                    let mut data = [0; INLINE_BYTES];
                    data[..b.len()].copy_from_slice(b);
                    data
                });
                StoredKey::Inline {
                    len: b.len() as u8,
                    data: KeyBytes(data),
                }
            }
            BlockKeyRef::Bytes(b) => StoredKey::Heap(b.into()),
        }
    }

    pub(crate) fn as_ref(&self) -> BlockKeyRef<'_> {
        match self {
            StoredKey::Int(v) => BlockKeyRef::Int(*v),
            StoredKey::Inline { len, data } => BlockKeyRef::Bytes(&data.0[..*len as usize]),
            StoredKey::Heap(b) => BlockKeyRef::Bytes(b),
        }
    }

    /// Inlined into every probe for the common cases (32-byte keys, ints); the rest goes out
    /// of line so that the probe loops stay small.
    // Measured: left to the compiler, these stayed out of line in the probe loops.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn matches(&self, key: BlockKeyRef<'_>) -> bool {
        match (self, key) {
            // Compared at a fixed length, so the compiler inlines it instead of calling
            // memcmp (which showed in profiles for every probe).
            (StoredKey::Inline { len, data }, BlockKeyRef::Bytes(b)) if b.len() == INLINE_BYTES => {
                usize::from(*len) == INLINE_BYTES && data.0 == *b
            }
            (StoredKey::Int(a), BlockKeyRef::Int(b)) => *a == b,
            _ => self.matches_other(key),
        }
    }

    #[inline(never)]
    fn matches_other(&self, key: BlockKeyRef<'_>) -> bool {
        self.as_ref() == key
    }
}

#[derive(Debug)]
struct Slot {
    key: StoredKey,
    id: u32,
    /// Mirrors `ref_cnt[id] >= 0`, so that `lookup` answers from the slot it already has in
    /// cache instead of missing again on the state array (it fits the slot's padding).
    ready: bool,
}

// One slot per cache line: the probe that finds a key also brings its readiness.
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// How many keys ahead of the probe their index lines are prefetched: enough misses in flight
/// to overlap their latency, few enough to stay within the core's fill buffers.
pub(crate) const PREFETCH_AHEAD: usize = 8;

/// Entries the index has room for, for a tier of `n` blocks: twice the blocks. Evictions
/// leave tombstones, and once they use up the spare room hashbrown rebuilds the table: in
/// place while it is at most half full, otherwise into one twice the size, which with room for
/// only `n` happened in the middle of some `prepare_store` within the first few evictions of a
/// full tier (all of them moved at once, and the new buckets without huge pages). Sized for 2n
/// it always rebuilds in place, so the table never moves after construction.
fn room(n: usize) -> usize {
    2 * n
}

/// Keys to block ids, for a tier of a fixed number of blocks.
pub(crate) struct BlockIndex {
    table: HashTable<Slot>,
    hasher: KeyHasher,
    hint: ProbeHint,
}

impl BlockIndex {
    /// An empty index for `n` blocks, its buckets in huge pages where the system allows.
    pub(crate) fn try_new(n: usize) -> Result<Self, AllocFailed> {
        let mut table = memory::try_table(room(n), "block index")?;
        // Where the buckets lie shows only from a bucket, so one is borrowed for a moment (no
        // growth: there is room).
        let entry = table.insert_unique(
            0,
            Slot {
                key: StoredKey::new(BlockKeyRef::Int(0)),
                id: u32::MAX,
                ready: false,
            },
            |_| 0,
        );
        let (bucket, slot) = (entry.bucket_index(), std::ptr::from_ref(entry.get()));
        entry.remove();
        let hint = ProbeHint::from_bucket(&table, bucket, slot);
        let len = table.num_buckets() * std::mem::size_of::<Slot>();
        hugepages::advise(hint.ctrl.wrapping_sub(len), len);
        Ok(BlockIndex {
            table,
            hasher: KeyHasher::default(),
            hint,
        })
    }

    /// Bytes the index for `n` blocks takes.
    pub(crate) fn bytes_for(n: usize) -> u64 {
        memory::table_bytes::<Slot>(room(n))
    }

    /// The index hash of `key`.
    // Measured: left to the compiler, these stayed out of line in the probe loops.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub(crate) fn hash(&self, key: BlockKeyRef<'_>) -> u64 {
        self.hasher.hash(key)
    }

    /// Start loading the lines a probe for `hash` will read.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        self.hint.prefetch(hash);
    }

    /// The block id of `key` (whose hash is `hash`), if present.
    #[inline]
    pub(crate) fn find(&self, key: BlockKeyRef<'_>, hash: u64) -> Option<u32> {
        self.table.find(hash, |s| s.key.matches(key)).map(|s| s.id)
    }

    /// Whether `key` is present and its block ready, from the slot alone.
    #[inline]
    pub(crate) fn is_ready(&self, key: BlockKeyRef<'_>, hash: u64) -> bool {
        self.table
            .find(hash, |s| s.key.matches(key))
            .is_some_and(|s| s.ready)
    }

    /// Add `key`, which must be absent, as block `id`, not ready.
    pub(crate) fn insert(&mut self, key: BlockKeyRef<'_>, hash: u64, id: u32) {
        let hasher = &self.hasher;
        // The table has room for every block, so this never grows it; a rebuild in place
        // rehashes each entry from its key (in the slot at hand, unlike the block's state).
        let entry = self.table.insert_unique(
            hash,
            Slot {
                key: StoredKey::new(key),
                id,
                ready: false,
            },
            |s| hasher.hash(s.key.as_ref()),
        );
        // The newest bucket tells where the table is, should it ever have moved.
        let (bucket, slot) = (entry.bucket_index(), std::ptr::from_ref(entry.get()));
        self.hint = ProbeHint::from_bucket(&self.table, bucket, slot);
    }

    /// Mark block `id` (whose key hashes to `hash`) ready.
    pub(crate) fn set_ready(&mut self, hash: u64, id: u32) {
        if let Some(slot) = self.table.find_mut(hash, |s| s.id == id) {
            slot.ready = true;
        }
    }

    /// Take block `id` (whose key hashes to `hash`) out, giving back its key.
    pub(crate) fn remove(&mut self, hash: u64, id: u32) -> Option<StoredKey> {
        let entry = self.table.find_entry(hash, |s| s.id == id).ok()?;
        Some(entry.remove().0.key)
    }

    /// Every key present, by block id (`None` for ids not in use), for inspection.
    pub(crate) fn keys_by_id(&self, n: usize) -> Vec<Option<BlockKey>> {
        let mut by_id = vec![None; n];
        for slot in &self.table {
            by_id[slot.id as usize] = Some(slot.key.as_ref().to_owned_key());
        }
        by_id
    }
}

/// Where a hash's index lines lie, for prefetching. hashbrown 0.16 keeps the control bytes
/// from a pointer `ctrl` on and bucket `i`'s slot at `ctrl - (i + 1) * size_of::<Slot>()`, and
/// starts probing `hash` at bucket `hash & (buckets - 1)` (its `raw` module); a test checks
/// these against `HashTable::get_bucket`. Only prefetch hints come from here, so if the layout
/// ever changed, a hint would miss and nothing else would.
#[derive(Debug, Clone, Copy, Default)]
struct ProbeHint {
    /// `ctrl` as an address; 0 until the table has had an entry.
    ctrl: usize,
    mask: usize,
}

impl ProbeHint {
    /// The hint for `table`, from a bucket it holds (`index`, its slot at `slot`).
    fn from_bucket(table: &HashTable<Slot>, index: usize, slot: *const Slot) -> Self {
        ProbeHint {
            ctrl: (slot as usize).wrapping_add((index + 1) * std::mem::size_of::<Slot>()),
            mask: table.num_buckets().wrapping_sub(1),
        }
    }

    /// Start loading the control group and the first two slots `hash` probes.
    #[inline]
    fn prefetch(self, hash: u64) {
        if self.ctrl == 0 {
            return;
        }
        let pos = (hash as usize) & self.mask;
        let slot = self
            .ctrl
            .wrapping_sub((pos + 1) * std::mem::size_of::<Slot>());
        prefetch_line(slot);
        // The key sits in the first free bucket from `pos` on when it went in, often the
        // next one (just below: buckets run downwards); one more line costs less than the
        // miss it saves (measured: docs/PERFORMANCE.md).
        prefetch_line(slot.wrapping_sub(std::mem::size_of::<Slot>()));
        prefetch_line(self.ctrl.wrapping_add(pos));
    }
}

/// A prefetch hint for the line holding `addr`; any address is allowed (it never faults).
#[inline]
pub(crate) fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Keys that `prepare_store` evicted, as the index held them: taking them out of the index
/// allocates nothing (an owned `BlockKey` per victim cost a malloc and a free each).
#[derive(Debug, Clone, Default)]
pub struct EvictedKeys(pub(crate) Vec<StoredKey>);

impl EvictedKeys {
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The evicted keys, in eviction order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = BlockKeyRef<'_>> {
        self.0.iter().map(StoredKey::as_ref)
    }

    /// Owned copies, in eviction order.
    #[must_use]
    pub fn to_vec(&self) -> Vec<BlockKey> {
        self.iter().map(BlockKeyRef::to_owned_key).collect()
    }
}

impl PartialEq for EvictedKeys {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for EvictedKeys {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(i: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn probe_hint_matches_the_table_layout() {
        // The prefetch addresses must be where hashbrown keeps the slots, or the prefetches
        // silently stop helping (hashbrown's version is pinned for this).
        let n = 3000;
        let mut index = BlockIndex::try_new(n).unwrap();
        let keys: Vec<[u8; 32]> = (0..n as u32).map(key).collect();
        for (id, k) in keys.iter().enumerate() {
            let k = BlockKeyRef::Bytes(k);
            index.insert(k, index.hash(k), id as u32);
        }
        let hint = index.hint;
        assert_eq!(hint.mask, index.table.num_buckets() - 1);
        let mut at_home = 0;
        for k in &keys {
            let k = BlockKeyRef::Bytes(k);
            let hash = index.hash(k);
            let bucket = index
                .table
                .find_bucket_index(hash, |s| s.key.matches(k))
                .unwrap();
            let slot = std::ptr::from_ref(index.table.get_bucket(bucket).unwrap()) as usize;
            assert_eq!(slot, hint.ctrl - (bucket + 1) * std::mem::size_of::<Slot>());
            if bucket == (hash as usize) & hint.mask {
                at_home += 1;
            }
        }
        // Most keys sit in the very bucket their probe starts at (the one prefetched).
        assert!(at_home > keys.len() / 2, "{at_home} of {}", keys.len());
    }

    #[test]
    fn find_insert_set_ready_remove() {
        let mut index = BlockIndex::try_new(4).unwrap();
        let long = [9u8; 40];
        let keys = [
            BlockKeyRef::Int(-5),
            BlockKeyRef::Bytes(b"short"),
            BlockKeyRef::Bytes(&long),
        ];
        for (id, &k) in keys.iter().enumerate() {
            index.insert(k, index.hash(k), id as u32);
        }
        let hashes: Vec<u64> = keys.iter().map(|&k| index.hash(k)).collect();
        assert_eq!(index.find(keys[2], hashes[2]), Some(2));
        let other = BlockKeyRef::Bytes(&[5]);
        assert_eq!(index.find(other, index.hash(other)), None);
        assert!(!index.is_ready(keys[1], hashes[1]));
        index.set_ready(hashes[1], 1);
        assert!(index.is_ready(keys[1], hashes[1]));
        let removed = index.remove(hashes[2], 2).unwrap();
        assert_eq!(removed.as_ref(), keys[2]);
        assert!(index.remove(hashes[2], 2).is_none());
        assert_eq!(index.find(keys[2], hashes[2]), None);
        assert_eq!(
            index.keys_by_id(4),
            [
                Some(BlockKey::Int(-5)),
                Some(BlockKey::from(&b"short"[..])),
                None,
                None
            ]
        );
    }

    #[test]
    fn slots_fill_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(
            BlockIndex::bytes_for(1000),
            memory::table_bytes::<Slot>(2000)
        );
    }
}
