//! The CPU-tier block manager: which content hashes live in the CPU tier, in which block, in
//! which state, and which blocks make room for new ones.
//!
//! Semantics follow vLLM's `OffloadingManager` (`lookup`, `prepare_load`, `touch`,
//! `complete_load`, `prepare_store`, `complete_store`, `take_events`), with the gaps closed:
//! every call validates its whole argument before it changes anything, `prepare_store` evicts
//! nothing when it cannot make room, and a failed store frees exactly the blocks it had not yet
//! made ready. The key index is `index.rs`, recency and victims the policy's (`policy/`), block
//! ids the pool's (`pool.rs`); this file holds the block states and the rules.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::error::{KvoffError, Result};
use crate::index::{prefetch_line, BlockIndex, PREFETCH_AHEAD};
use crate::key::{BlockKey, BlockKeyRef};
use crate::memory::{self, AllocFailed};
use crate::policy::{EvictionPolicy, PolicyKind, PolicyState};
use crate::pool::{IdPool, LimitRefused};
use crate::sink::ManagerStatsSink;

pub use crate::index::EvictedKeys;

/// The only medium this manager hands out.
pub const MEDIUM_CPU: &str = "CPU";

/// Largest tier: ids are `u32` and `u32::MAX` marks "no block" in the intrusive lists.
pub const MAX_BLOCKS: u32 = u32::MAX - 1;

/// `ref_cnt` of a block whose store is in flight.
const STORING: i32 = -1;

/// A key a call names that is not resident, in the call's resolved ids.
const ABSENT: u32 = u32::MAX;

/// A block's state, one per block id, together so that one cache miss serves a victim scan or
/// a state check.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    /// The index hash of the block's key (to remove it without the key at hand).
    hash: u64,
    /// -1 store in flight, 0 evictable, n > 0 loads in flight.
    ref_cnt: i32,
    /// The call that last named the block (duplicate and same-call detection).
    mark: u32,
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
    index: BlockIndex,
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
}

impl std::fmt::Debug for OffloadingManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadingManager")
            .field("capacity", &self.capacity())
            .field("usable", &self.usable())
            .field("resident", &self.resident())
            .field("pinned", &self.pinned)
            .field("policy", &self.policy_kind)
            .finish_non_exhaustive()
    }
}

impl OffloadingManager {
    /// A manager of `capacity` CPU blocks (at most [`MAX_BLOCKS`]) of `block_size` tokens
    /// each. `OutOfMemory` when the tier's bookkeeping would not fit in physical memory or the
    /// system refuses it.
    pub fn new(
        capacity: NonZeroU32,
        block_size: NonZeroU64,
        policy: PolicyKind,
        enable_events: bool,
    ) -> Result<Self> {
        let capacity = capacity.get();
        if capacity > MAX_BLOCKS {
            return Err(KvoffError::InvalidArgument(format!(
                "num_blocks must be between 1 and {MAX_BLOCKS}, got {capacity}"
            )));
        }
        let needed = Self::memory_needed(capacity, policy);
        let shown = format!(
            "OffloadingManager(num_blocks={capacity}, policy='{}')",
            policy.as_str()
        );
        if let Some(physical) = memory::physical_memory_bytes().filter(|&p| needed > p) {
            return Err(KvoffError::OutOfMemory(format!(
                "{shown} needs {} for its index and per-block state, more than this machine's \
                 {} of physical memory",
                memory::describe_bytes(needed),
                memory::describe_bytes(physical),
            )));
        }
        Self::try_build(capacity, block_size.get(), policy, enable_events).map_err(|failed| {
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
            BlockIndex::bytes_for(n),
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
        policy: PolicyKind,
        enable_events: bool,
    ) -> Result<Self, AllocFailed> {
        let n = capacity as usize;
        Ok(OffloadingManager {
            block_size,
            policy_kind: policy,
            index: BlockIndex::try_new(n)?,
            meta: memory::try_filled_vec(n, Meta::default(), "per-block state")?,
            epoch: 0,
            pool: IdPool::try_new(capacity)?,
            policy: policy.try_build(capacity)?,
            pinned: 0,
            counters: ManagerCounters::default(),
            events: enable_events.then(Vec::new),
            sink: None,
            scratch_ids: Vec::new(),
            scratch_hashes: Vec::new(),
            scratch_absent: HashTable::new(),
        })
    }

    /// The same manager with only block ids `0..usable` usable for now: a tier whose memory
    /// arrives chunk by chunk (pinned in the background) starts with what is ready, and
    /// [`OffloadingManager::set_usable`] raises the limit as more arrives. No id at or above
    /// the limit is ever handed out. `InvalidArgument` above the capacity.
    pub fn with_usable(mut self, usable: u32) -> Result<Self> {
        self.pool = self
            .pool
            .with_limit(usable)
            .map_err(|refused| Self::limit_error(u64::from(usable), refused))?;
        self.report_occupancy();
        Ok(self)
    }

    /// Raise the usable limit to `usable` blocks (ids `0..usable`); the same value again is a
    /// no-op. Refused, with nothing changed: below the current limit (`InvalidState`: memory
    /// that was usable never goes away, and ids above the new limit may be in use), above the
    /// capacity (`InvalidArgument`).
    pub fn set_usable(&mut self, usable: u64) -> Result<()> {
        let beyond = LimitRefused::BeyondCapacity {
            capacity: self.pool.capacity(),
        };
        let limit = u32::try_from(usable).map_err(|_| Self::limit_error(usable, beyond))?;
        self.pool
            .set_limit(limit)
            .map_err(|refused| Self::limit_error(usable, refused))?;
        self.report_occupancy();
        Ok(())
    }

    fn limit_error(usable: u64, refused: LimitRefused) -> KvoffError {
        match refused {
            LimitRefused::BeyondCapacity { capacity } => KvoffError::InvalidArgument(format!(
                "usable_blocks must be at most the capacity, {capacity} blocks, got {usable}"
            )),
            LimitRefused::Shrinks { limit } => KvoffError::InvalidState(format!(
                "usable_blocks only grows: it is {limit}, so {usable} is refused (blocks once \
                 usable stay usable, and ids at or above {usable} may be in use)"
            )),
        }
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

    /// Blocks that may be handed out now: ids `0..usable`, at most the capacity.
    #[must_use]
    pub fn usable(&self) -> u64 {
        u64::from(self.pool.limit())
    }

    /// Blocks that can be allocated without evicting (`usable - resident`).
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

    /// The block id of `key`, if resident.
    #[must_use]
    pub fn block_id(&self, key: BlockKeyRef<'_>) -> Option<u32> {
        self.index.find(key, self.index.hash(key))
    }

    /// The state of `key`'s block (-1 store in flight, 0 evictable, n > 0 loads in flight).
    #[must_use]
    pub fn block_state(&self, key: BlockKeyRef<'_>) -> Option<i32> {
        self.block_id(key).map(|id| self.meta[id as usize].ref_cnt)
    }

    /// The policy's lists, with block ids turned back into keys.
    #[must_use]
    pub fn policy_state(&self) -> (Vec<(&'static str, Vec<BlockKey>)>, PolicyState) {
        let by_id = self.index.keys_by_id(self.meta.len());
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
        hashes.extend(keys.iter().map(|&key| self.index.hash(key)));
        for &hash in hashes.iter().take(PREFETCH_AHEAD) {
            self.index.prefetch(hash);
        }
        let mut outcome = Ok(epoch);
        for (i, &key) in keys.iter().enumerate() {
            if let Some(&ahead) = hashes.get(i + PREFETCH_AHEAD) {
                self.index.prefetch(ahead);
            }
            let hash = hashes[i];
            let id = self.index.find(key, hash);
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
            *slot = self.index.hash(key);
            self.index.prefetch(*slot);
        }
        let mut hit = 0;
        for (i, &key) in keys.iter().enumerate() {
            let hash = ahead[i % PREFETCH_AHEAD];
            if let Some(&next) = keys.get(i + PREFETCH_AHEAD) {
                let h = self.index.hash(next);
                self.index.prefetch(h);
                ahead[i % PREFETCH_AHEAD] = h;
            }
            if !self.index.is_ready(key, hash) {
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
        let evicted = self.evict(&victims);
        let block_ids = self.allocate(keys, &to_store);
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

    /// Take `victims` out of the index, the policy and the pool, in order, giving back their
    /// keys.
    fn evict(&mut self, victims: &[u32]) -> EvictedKeys {
        let mut evicted = Vec::with_capacity(victims.len());
        for (j, &id) in victims.iter().enumerate() {
            // Two stages ahead: a victim's state line first, then (with the hash it holds)
            // its index lines.
            if let Some(&far) = victims.get(j + 2 * PREFETCH_AHEAD) {
                prefetch_line(std::ptr::from_ref(&self.meta[far as usize]) as usize);
            }
            if let Some(&near) = victims.get(j + PREFETCH_AHEAD) {
                self.index.prefetch(self.meta[near as usize].hash);
            }
            let hash = self.meta[id as usize].hash;
            let Some(key) = self.index.remove(hash, id) else {
                unreachable!("block {id} chosen for eviction is not in the index")
            };
            self.policy.on_evict(id, key.as_ref(), hash);
            self.pool.release(id);
            evicted.push(key);
        }
        EvictedKeys(evicted)
    }

    /// Give each key at `positions` (absent, resolved by this call) a block, its store in
    /// flight. The caller has made room for all of them.
    fn allocate(&mut self, keys: &[BlockKeyRef<'_>], positions: &[usize]) -> Vec<u32> {
        let mut block_ids = Vec::with_capacity(positions.len());
        for &i in positions.iter().take(PREFETCH_AHEAD) {
            self.index.prefetch(self.scratch_hashes[i]);
        }
        for (k, &i) in positions.iter().enumerate() {
            if let Some(&ahead) = positions.get(k + PREFETCH_AHEAD) {
                self.index.prefetch(self.scratch_hashes[ahead]);
            }
            let Some(id) = self.pool.allocate() else {
                unreachable!("room was made for every block to store")
            };
            let (key, hash) = (keys[i], self.scratch_hashes[i]);
            self.meta[id as usize].hash = hash;
            self.meta[id as usize].ref_cnt = STORING;
            self.index.insert(key, hash, id);
            self.policy.on_insert(id, key, hash);
            block_ids.push(id);
        }
        block_ids
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
                self.index.set_ready(self.scratch_hashes[i], id);
                if self.events.is_some() {
                    stored.push(key.to_owned_key());
                }
            } else {
                self.index.remove(self.scratch_hashes[i], id);
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

    /// The capacity gauge is the usable capacity: it shows a tier still being pinned growing.
    fn report_occupancy(&self) {
        if let Some(sink) = &self.sink {
            sink.set_occupancy(self.usable(), self.resident(), self.pinned);
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
        let index = BlockIndex::bytes_for((u32::MAX - 1) as usize);
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
}
