//! The CPU-tier block manager (DESIGN §1): which content hashes live in the CPU tier, in which
//! block, in which state, and which blocks make room for new ones.
//!
//! Semantics follow vLLM's `OffloadingManager` (`lookup`, `prepare_load`, `touch`,
//! `complete_load`, `prepare_store`, `complete_store`, `take_events`), with the gaps closed: every call validates
//! its whole argument before it changes anything, `prepare_store` evicts nothing when it
//! cannot make room, and a failed store frees exactly the blocks it had not yet made ready.

use std::sync::Arc;

use hashbrown::HashTable;

use crate::error::{KvoffError, Result};
use crate::hugepages;
use crate::key::{BlockKey, BlockKeyRef, KeyHasher};
use crate::memory::{self, AllocFailed};
use crate::policy::{EvictionPolicy, PolicyKind, PolicyState};
use crate::pool::IdPool;
use crate::sink::ManagerStatsSink;

/// The only medium this manager hands out.
pub const MEDIUM_CPU: &str = "CPU";

/// `ref_cnt` of a block whose store is in flight.
const STORING: i32 = -1;

/// Largest tier: ids are `u32` and `u32::MAX` marks "no block" in the intrusive lists.
pub const MAX_BLOCKS: i64 = (u32::MAX - 1) as i64;

/// Byte keys up to this length live inside the index slot: content hashes are 8 to 32 bytes,
/// and comparing them in place saves a pointer chase (a cache miss on large tiers).
const INLINE_BYTES: usize = 32;

/// Inline key bytes, aligned so that moving a slot or a key moves whole words (unaligned,
/// they were copied bytewise and read back wider, stalling on store forwarding).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct KeyBytes([u8; INLINE_BYTES]);

/// A key as the index stores it.
#[derive(Debug, Clone)]
enum StoredKey {
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

    fn as_ref(&self) -> BlockKeyRef<'_> {
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

#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    /// The index hash of the block's key (to remove it without the key at hand).
    hash: u64,
    /// -1 store in flight, 0 evictable, n > 0 loads in flight.
    ref_cnt: i32,
    /// The call that last named the block (duplicate and same-call detection).
    mark: u32,
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
const PREFETCH_AHEAD: usize = 8;

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
        // miss it saves (prepare_store at 10^4 blocks: 107 -> 95 ns a block).
        prefetch_line(slot.wrapping_sub(std::mem::size_of::<Slot>()));
        prefetch_line(self.ctrl.wrapping_add(pos));
    }
}

/// Entries the index has room for, for a tier of `n` blocks: twice the blocks. Evictions
/// leave tombstones, and once they use up the spare room hashbrown rebuilds the table: in
/// place while it is at most half full, otherwise into one twice the size, which with room for
/// only `n` happened in the middle of some `prepare_store` within the first few evictions of a
/// full tier (all of them moved at once, and the new buckets without huge pages). Sized for 2n
/// it always rebuilds in place.
fn index_room(n: usize) -> usize {
    2 * n
}

/// An empty index with room for `n` blocks, its buckets in huge pages where the system allows.
fn try_index_with_capacity(n: usize) -> Result<HashTable<Slot>, AllocFailed> {
    let mut index = memory::try_table(index_room(n), "block index")?;
    // Where the buckets lie shows only from a bucket, so one is borrowed for a moment (no
    // growth: there is room for `n`).
    let entry = index.insert_unique(
        0,
        Slot {
            key: StoredKey::new(BlockKeyRef::Int(0)),
            id: ABSENT,
            ready: false,
        },
        |_| 0,
    );
    let (bucket, slot) = (entry.bucket_index(), std::ptr::from_ref(entry.get()));
    entry.remove();
    let ctrl = ProbeHint::from_bucket(&index, bucket, slot).ctrl;
    let len = index.num_buckets() * std::mem::size_of::<Slot>();
    hugepages::advise(ctrl.wrapping_sub(len), len);
    Ok(index)
}

/// A prefetch hint for the line holding `addr`; any address is allowed (it never faults).
#[inline]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Counters since construction (the stats sink gets the same numbers per call).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ManagerCounters {
    /// Blocks passed to `lookup`.
    pub blocks_queried: u64,
    /// Blocks `lookup` found (the ready prefix).
    pub blocks_hit: u64,
    /// Blocks allocated by `prepare_store`.
    pub blocks_stored: u64,
    /// Blocks evicted to make room.
    pub blocks_evicted: u64,
    /// `prepare_store` calls that could not make room.
    pub allocation_failures: u64,
}

/// `prepare_store`'s answer when it made room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePlan {
    /// Positions, in the call's key list, of the keys to store (those not already present).
    pub to_store: Vec<usize>,
    /// Their block ids, aligned with `to_store`.
    pub block_ids: Vec<u32>,
    /// Keys evicted to make room, in eviction order.
    pub evicted: EvictedKeys,
    /// The block ids they held, aligned with `evicted` (some are reused by `block_ids`).
    pub evicted_ids: Vec<u32>,
}

/// Keys that `prepare_store` evicted, as the index held them: taking them out of the index
/// allocates nothing (an owned `BlockKey` per victim cost a malloc and a free each).
#[derive(Debug, Clone, Default)]
pub struct EvictedKeys(Vec<StoredKey>);

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

/// Blocks that entered (`removed == false`) or left the tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerEvent {
    pub block_hashes: Vec<BlockKey>,
    pub block_size: u64,
    pub removed: bool,
}

pub struct OffloadingManager {
    block_size: u64,
    policy_kind: PolicyKind,
    hasher: KeyHasher,
    index: HashTable<Slot>,
    /// Per block id, together so that one cache miss serves a victim scan or a state check.
    meta: Vec<Meta>,
    epoch: u32,
    pool: IdPool,
    policy: Box<dyn EvictionPolicy>,
    pinned: u64,
    counters: ManagerCounters,
    events: Option<Vec<ManagerEvent>>,
    sink: Option<Arc<dyn ManagerStatsSink>>,
    // Scratch space reused across calls so that steady-state calls do not allocate.
    scratch_ids: Vec<u32>,
    scratch_hashes: Vec<u64>,
    scratch_absent: HashTable<u32>,
    hint: ProbeHint,
}

impl std::fmt::Debug for OffloadingManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadingManager")
            .field("capacity", &self.capacity())
            .field("resident", &self.resident())
            .field("pinned", &self.pinned)
            .field("policy", &self.policy_kind)
            .finish_non_exhaustive()
    }
}

const ABSENT: u32 = u32::MAX;

impl OffloadingManager {
    /// A manager of `num_blocks` CPU blocks of `block_size` tokens each.
    pub fn new(
        num_blocks: i64,
        block_size: i64,
        policy: &str,
        enable_events: bool,
    ) -> Result<Self> {
        if num_blocks <= 0 || num_blocks > MAX_BLOCKS {
            return Err(KvoffError::InvalidArgument(format!(
                "num_blocks must be between 1 and {MAX_BLOCKS}, got {num_blocks}"
            )));
        }
        if block_size <= 0 {
            return Err(KvoffError::InvalidArgument(format!(
                "block_size must be positive, got {block_size}"
            )));
        }
        let kind: PolicyKind = policy.parse()?;
        let capacity = num_blocks as u32;
        let needed = Self::memory_needed(capacity, kind);
        let shown = format!(
            "OffloadingManager(num_blocks={capacity}, policy='{}')",
            kind.as_str()
        );
        if let Some(physical) = memory::physical_memory_bytes().filter(|&p| needed > p) {
            return Err(KvoffError::OutOfMemory(format!(
                "{shown} needs {} for its index and per-block state, more than this machine's \
                 {} of physical memory",
                memory::describe_bytes(needed),
                memory::describe_bytes(physical),
            )));
        }
        Self::try_build(capacity, block_size as u64, kind, enable_events).map_err(|failed| {
            KvoffError::OutOfMemory(format!(
                "{shown}: the system refused {} for its {} ({} in all)",
                memory::describe_bytes(failed.bytes),
                failed.what,
                memory::describe_bytes(needed),
            ))
        })
    }

    /// Bytes a manager of `capacity` blocks takes for its index, per-block state and policy
    /// (at most: ARC's ghost lists full), not counting heap copies of byte keys over 32 bytes
    /// and the per-call scratch space, which scale with the calls' arguments.
    #[must_use]
    pub fn memory_needed(capacity: u32, policy: PolicyKind) -> u64 {
        let n = capacity as usize;
        [
            memory::table_bytes::<Slot>(index_room(n)),
            memory::array_bytes::<Meta>(n),
            IdPool::bytes_for(capacity),
            policy.bytes_for(capacity),
        ]
        .iter()
        .fold(0, |sum, &b| sum.saturating_add(b))
    }

    /// Allocate everything, fallibly; what was already allocated is freed on failure.
    fn try_build(
        capacity: u32,
        block_size: u64,
        kind: PolicyKind,
        enable_events: bool,
    ) -> Result<Self, AllocFailed> {
        let n = capacity as usize;
        Ok(OffloadingManager {
            block_size,
            policy_kind: kind,
            hasher: KeyHasher::default(),
            index: try_index_with_capacity(n)?,
            meta: memory::try_filled_vec(n, Meta::default(), "per-block state")?,
            epoch: 0,
            pool: IdPool::try_new(capacity)?,
            policy: kind.try_build(capacity)?,
            pinned: 0,
            counters: ManagerCounters::default(),
            events: enable_events.then(Vec::new),
            sink: None,
            scratch_ids: Vec::new(),
            scratch_hashes: Vec::new(),
            scratch_absent: HashTable::new(),
            hint: ProbeHint::default(),
        })
    }

    /// Report into `sink` after every successful call from now on.
    pub fn set_sink(&mut self, sink: Option<Arc<dyn ManagerStatsSink>>) {
        self.sink = sink;
        // The gauges are visible from the first snapshot, before any call changes them.
        self.report_occupancy();
    }

    #[must_use]
    pub fn capacity(&self) -> u64 {
        u64::from(self.pool.capacity())
    }

    #[must_use]
    pub fn free(&self) -> u64 {
        u64::from(self.pool.free())
    }

    /// Allocated blocks, in any state.
    #[must_use]
    pub fn resident(&self) -> u64 {
        u64::from(self.pool.allocated())
    }

    /// Blocks with a store or a load in flight.
    #[must_use]
    pub fn pinned(&self) -> u64 {
        self.pinned
    }

    #[must_use]
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    #[must_use]
    pub fn policy(&self) -> PolicyKind {
        self.policy_kind
    }

    #[must_use]
    pub fn events_enabled(&self) -> bool {
        self.events.is_some()
    }

    #[must_use]
    pub fn counters(&self) -> ManagerCounters {
        self.counters
    }

    // Measured: left to the compiler, these stayed out of line in the probe loops.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn hash(&self, key: BlockKeyRef<'_>) -> u64 {
        self.hasher.hash(key)
    }

    #[inline]
    fn find(&self, key: BlockKeyRef<'_>, hash: u64) -> Option<u32> {
        self.index.find(hash, |s| s.key.matches(key)).map(|s| s.id)
    }

    /// The block id of `key`, if resident.
    #[must_use]
    pub fn block_id(&self, key: BlockKeyRef<'_>) -> Option<u32> {
        self.find(key, self.hash(key))
    }

    /// The state of `key`'s block (-1 store in flight, 0 evictable, n > 0 loads in flight).
    #[must_use]
    pub fn block_state(&self, key: BlockKeyRef<'_>) -> Option<i32> {
        self.block_id(key).map(|id| self.meta[id as usize].ref_cnt)
    }

    /// The policy's lists, with block ids turned back into keys.
    #[must_use]
    pub fn policy_state(&self) -> (Vec<(&'static str, Vec<BlockKey>)>, PolicyState) {
        let mut by_id: Vec<Option<BlockKey>> = vec![None; self.meta.len()];
        for slot in &self.index {
            by_id[slot.id as usize] = Some(slot.key.as_ref().to_owned_key());
        }
        let state = self.policy.state();
        let lists = state
            .resident
            .iter()
            .map(|(name, ids)| {
                (
                    *name,
                    ids.iter()
                        .filter_map(|&id| by_id[id as usize].clone())
                        .collect(),
                )
            })
            .collect();
        (lists, state)
    }

    fn next_epoch(&mut self) -> u32 {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            for m in &mut self.meta {
                m.mark = 0;
            }
            self.epoch = 1;
        }
        self.epoch
    }

    fn duplicate(key: BlockKeyRef<'_>, call: &str) -> KvoffError {
        KvoffError::InvalidArgument(format!("duplicate block hash {key} in one {call} call"))
    }

    /// Resolve every key to its block id (or `ABSENT`) into `scratch_ids`, with hashes in
    /// `scratch_hashes`; reject a key named twice. Changes no manager state.
    fn resolve(&mut self, keys: &[BlockKeyRef<'_>], call: &str) -> Result<u32> {
        let epoch = self.next_epoch();
        let mut ids = std::mem::take(&mut self.scratch_ids);
        let mut hashes = std::mem::take(&mut self.scratch_hashes);
        ids.clear();
        hashes.clear();
        self.scratch_absent.clear();
        hashes.extend(keys.iter().map(|&key| self.hash(key)));
        for &hash in hashes.iter().take(PREFETCH_AHEAD) {
            self.hint.prefetch(hash);
        }
        let mut outcome = Ok(epoch);
        for (i, &key) in keys.iter().enumerate() {
            if let Some(&ahead) = hashes.get(i + PREFETCH_AHEAD) {
                self.hint.prefetch(ahead);
            }
            let hash = hashes[i];
            let id = self.find(key, hash);
            if let Some(id) = id {
                let mark = &mut self.meta[id as usize].mark;
                if *mark == epoch {
                    outcome = Err(Self::duplicate(key, call));
                    break;
                }
                *mark = epoch;
            } else if self
                .scratch_absent
                .find(hash, |&j| keys[j as usize] == key)
                .is_some()
            {
                outcome = Err(Self::duplicate(key, call));
                break;
            } else {
                self.scratch_absent
                    .insert_unique(hash, i as u32, |&j| hashes[j as usize]);
            }
            ids.push(id.unwrap_or(ABSENT));
        }
        self.scratch_ids = ids;
        self.scratch_hashes = hashes;
        outcome
    }

    /// Length of the longest run of present and ready blocks from the first key.
    pub fn lookup(&mut self, keys: &[BlockKeyRef<'_>]) -> usize {
        // Hashes of the next keys, computed and prefetched ahead of the probes.
        let mut ahead = [0u64; PREFETCH_AHEAD];
        for (slot, &key) in ahead.iter_mut().zip(keys) {
            *slot = self.hash(key);
            self.hint.prefetch(*slot);
        }
        let mut hit = 0;
        for (i, &key) in keys.iter().enumerate() {
            let hash = ahead[i % PREFETCH_AHEAD];
            if let Some(&next) = keys.get(i + PREFETCH_AHEAD) {
                let h = self.hash(next);
                self.hint.prefetch(h);
                ahead[i % PREFETCH_AHEAD] = h;
            }
            if !self
                .index
                .find(hash, |s| s.key.matches(key))
                .is_some_and(|s| s.ready)
            {
                break;
            }
            hit += 1;
        }
        self.counters.blocks_queried += keys.len() as u64;
        self.counters.blocks_hit += hit as u64;
        if let Some(sink) = &self.sink {
            sink.record_lookup(keys.len() as u64, hit as u64, self.block_size);
        }
        self.report_occupancy();
        hit
    }

    /// Pin the blocks of `keys` for a load and return their ids. Each must be present and
    /// ready.
    pub fn prepare_load(&mut self, keys: &[BlockKeyRef<'_>]) -> Result<Vec<u32>> {
        self.resolve(keys, "prepare_load")?;
        for (&key, &id) in keys.iter().zip(&self.scratch_ids) {
            if id == ABSENT {
                return Err(KvoffError::UnknownHash(format!(
                    "{key} passed to prepare_load"
                )));
            }
            if self.meta[id as usize].ref_cnt == STORING {
                return Err(KvoffError::InvalidState(format!(
                    "block hash {key} is not ready (its store is in flight): cannot prepare_load it"
                )));
            }
        }
        for &id in &self.scratch_ids {
            let r = &mut self.meta[id as usize].ref_cnt;
            if *r == 0 {
                self.pinned += 1;
            }
            *r += 1;
        }
        self.report_occupancy();
        Ok(self.scratch_ids.clone())
    }

    /// Unpin blocks pinned by `prepare_load`.
    pub fn complete_load(&mut self, keys: &[BlockKeyRef<'_>]) -> Result<()> {
        self.resolve(keys, "complete_load")?;
        for (&key, &id) in keys.iter().zip(&self.scratch_ids) {
            if id == ABSENT {
                return Err(KvoffError::UnknownHash(format!(
                    "{key} passed to complete_load"
                )));
            }
            if self.meta[id as usize].ref_cnt <= 0 {
                return Err(KvoffError::InvalidState(format!(
                    "complete_load of block hash {key}, which has no load in flight"
                )));
            }
        }
        for &id in &self.scratch_ids {
            let r = &mut self.meta[id as usize].ref_cnt;
            *r -= 1;
            if *r == 0 {
                self.pinned -= 1;
            }
        }
        self.report_occupancy();
        Ok(())
    }

    /// Recency update, last key first, so the first key of a prefix ends most recent. Keys
    /// that are not resident are skipped (ARC counts them as ghost hits when it remembers
    /// them).
    pub fn touch(&mut self, keys: &[BlockKeyRef<'_>]) -> Result<()> {
        self.resolve(keys, "touch")?;
        for (i, &key) in keys.iter().enumerate().rev() {
            let id = self.scratch_ids[i];
            if id == ABSENT {
                self.policy.on_touch_absent(key, self.scratch_hashes[i]);
            } else {
                self.policy
                    .on_touch(id, self.meta[id as usize].ref_cnt != STORING);
            }
        }
        self.report_occupancy();
        Ok(())
    }

    /// Allocate blocks for the keys not yet present, evicting unpinned ready blocks (never
    /// one named in this call) as needed. `Ok(None)`, with nothing changed but the failure
    /// counter, when there is not enough room.
    pub fn prepare_store(&mut self, keys: &[BlockKeyRef<'_>]) -> Result<Option<StorePlan>> {
        let epoch = self.resolve(keys, "prepare_store")?;
        let to_store: Vec<usize> = (0..keys.len())
            .filter(|&i| self.scratch_ids[i] == ABSENT)
            .collect();
        let free = self.pool.free() as usize;
        let mut victims = Vec::new();
        if to_store.len() > free {
            let meta = &self.meta;
            let mut evictable = |id: u32| {
                let m = &meta[id as usize];
                m.ref_cnt == 0 && m.mark != epoch
            };
            if !self
                .policy
                .select_victims(to_store.len() - free, &mut evictable, &mut victims)
            {
                self.counters.allocation_failures += 1;
                if let Some(sink) = &self.sink {
                    sink.record_allocation_failure();
                }
                self.report_occupancy();
                return Ok(None);
            }
        }
        let mut evicted = Vec::with_capacity(victims.len());
        for (j, &id) in victims.iter().enumerate() {
            // Two stages ahead: a victim's state line first, then (with the hash it holds)
            // its index lines.
            if let Some(&far) = victims.get(j + 2 * PREFETCH_AHEAD) {
                prefetch_line(std::ptr::from_ref(&self.meta[far as usize]) as usize);
            }
            if let Some(&near) = victims.get(j + PREFETCH_AHEAD) {
                self.hint.prefetch(self.meta[near as usize].hash);
            }
            let hash = self.meta[id as usize].hash;
            let key = match self.index.find_entry(hash, |s| s.id == id) {
                Ok(entry) => entry.remove().0.key,
                Err(_) => unreachable!("block {id} chosen for eviction is not in the index"),
            };
            self.policy.on_evict(id, key.as_ref(), hash);
            self.pool.release(id);
            evicted.push(key);
        }
        let evicted = EvictedKeys(evicted);
        let mut block_ids = Vec::with_capacity(to_store.len());
        for &i in to_store.iter().take(PREFETCH_AHEAD) {
            self.hint.prefetch(self.scratch_hashes[i]);
        }
        for (k, &i) in to_store.iter().enumerate() {
            if let Some(&ahead) = to_store.get(k + PREFETCH_AHEAD) {
                self.hint.prefetch(self.scratch_hashes[ahead]);
            }
            let Some(id) = self.pool.allocate() else {
                unreachable!("room was made for every block to store")
            };
            let (key, hash) = (keys[i], self.scratch_hashes[i]);
            self.meta[id as usize].hash = hash;
            self.meta[id as usize].ref_cnt = STORING;
            let meta = &self.meta;
            let entry = self.index.insert_unique(
                hash,
                Slot {
                    key: StoredKey::new(key),
                    id,
                    ready: false,
                },
                |s| meta[s.id as usize].hash,
            );
            // An insert may move the table; the newest bucket tells where it is now.
            let (index, slot) = (entry.bucket_index(), std::ptr::from_ref(entry.get()));
            self.hint = ProbeHint::from_bucket(&self.index, index, slot);
            self.policy.on_insert(id, key, hash);
            block_ids.push(id);
        }
        self.pinned += to_store.len() as u64;
        self.counters.blocks_stored += to_store.len() as u64;
        self.counters.blocks_evicted += evicted.len() as u64;
        if let Some(sink) = &self.sink {
            if !to_store.is_empty() {
                sink.record_stored(to_store.len() as u64);
            }
            if !evicted.is_empty() {
                sink.record_evicted(evicted.len() as u64);
            }
        }
        if let (Some(events), false) = (&mut self.events, evicted.is_empty()) {
            events.push(ManagerEvent {
                block_hashes: evicted.to_vec(),
                block_size: self.block_size,
                removed: true,
            });
        }
        self.report_occupancy();
        Ok(Some(StorePlan {
            to_store,
            block_ids,
            evicted,
            evicted_ids: victims,
        }))
    }

    /// Finish the stores of `keys`: on success their blocks become loadable; on failure the
    /// blocks that were not yet ready are freed. Blocks already ready are left as they are.
    pub fn complete_store(&mut self, keys: &[BlockKeyRef<'_>], success: bool) -> Result<()> {
        self.resolve(keys, "complete_store")?;
        if let Some(i) = self.scratch_ids.iter().position(|&id| id == ABSENT) {
            return Err(KvoffError::UnknownHash(format!(
                "{} passed to complete_store (never prepared, or already gone)",
                keys[i]
            )));
        }
        let mut stored = Vec::new();
        for (i, &key) in keys.iter().enumerate() {
            let id = self.scratch_ids[i];
            if self.meta[id as usize].ref_cnt != STORING {
                continue;
            }
            self.pinned -= 1;
            if success {
                self.meta[id as usize].ref_cnt = 0;
                if let Some(slot) = self.index.find_mut(self.scratch_hashes[i], |s| s.id == id) {
                    slot.ready = true;
                }
                if self.events.is_some() {
                    stored.push(key.to_owned_key());
                }
            } else {
                let hash = self.scratch_hashes[i];
                if let Ok(entry) = self.index.find_entry(hash, |s| s.id == id) {
                    entry.remove();
                }
                self.meta[id as usize].ref_cnt = 0;
                self.policy.on_remove(id);
                self.pool.release(id);
            }
        }
        if let (Some(events), false) = (&mut self.events, stored.is_empty()) {
            events.push(ManagerEvent {
                block_hashes: stored,
                block_size: self.block_size,
                removed: false,
            });
        }
        self.report_occupancy();
        Ok(())
    }

    /// Events since the last call (always empty when events are disabled).
    pub fn take_events(&mut self) -> Vec<ManagerEvent> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn report_occupancy(&self) {
        if let Some(sink) = &self.sink {
            sink.set_occupancy(self.capacity(), self.resident(), self.pinned);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn memory_needed_counts_the_index_and_every_per_block_array() {
        let n = u32::MAX - 1;
        // Room for 2n entries: 2^34 buckets of a 64-byte slot and a control byte, plus 16
        // bytes a block of state, 4 of the free-id list and 8 of LRU links.
        let lru = (1u64 << 34) * 65 + 16 + 28 * u64::from(n);
        assert_eq!(OffloadingManager::memory_needed(n, PolicyKind::Lru), lru);
        assert!(OffloadingManager::memory_needed(n, PolicyKind::Arc) > lru);
        assert_eq!(
            OffloadingManager::memory_needed(1000, PolicyKind::Lru),
            4096 * 65 + 16 + 28 * 1000
        );
    }

    #[test]
    fn a_refused_allocation_is_an_error_not_an_abort() {
        // Only where the kernel refuses an allocation larger than its memory outright
        // (heuristic or strict overcommit); where it grants anything, the index would be
        // granted and its control bytes written, which is no test to run on a shared machine.
        let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
        let index = memory::table_bytes::<Slot>(index_room((u32::MAX - 1) as usize));
        let small = memory::physical_memory_bytes().is_some_and(|p| p < index / 4);
        if !(matches!(mode.trim(), "0" | "2") && small) {
            return;
        }
        let err =
            OffloadingManager::try_build(u32::MAX - 1, 16, PolicyKind::Lru, false).unwrap_err();
        assert_eq!(
            err,
            AllocFailed {
                what: "block index",
                bytes: index
            }
        );
    }

    #[test]
    fn probe_hint_matches_the_table_layout() {
        // The prefetch addresses must be where hashbrown keeps the slots, or the prefetches
        // silently stop helping.
        let mut m = OffloadingManager::new(3000, 16, "lru", false).unwrap();
        let keys: Vec<[u8; 32]> = (0..3000u32)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_le_bytes());
                k
            })
            .collect();
        let refs: Vec<BlockKeyRef<'_>> = keys.iter().map(|k| BlockKeyRef::Bytes(k)).collect();
        for chunk in refs.chunks(1000) {
            m.prepare_store(chunk).unwrap();
        }
        let hint = m.hint;
        assert_eq!(hint.mask, m.index.num_buckets() - 1);
        let mut at_home = 0;
        for &key in &refs {
            let hash = m.hash(key);
            let index = m
                .index
                .find_bucket_index(hash, |s| s.key.matches(key))
                .unwrap();
            let slot = std::ptr::from_ref(m.index.get_bucket(index).unwrap()) as usize;
            assert_eq!(slot, hint.ctrl - (index + 1) * std::mem::size_of::<Slot>());
            if index == (hash as usize) & hint.mask {
                at_home += 1;
            }
        }
        // Most keys sit in the very bucket their probe starts at (the one prefetched).
        assert!(at_home > refs.len() / 2, "{at_home} of {}", refs.len());
    }
}
