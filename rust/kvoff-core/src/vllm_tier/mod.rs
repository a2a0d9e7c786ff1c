//! The CPU tier with vLLM 0.33's `CPUOffloadingManager` semantics, step for step: chunk ids
//! (fresh first, then a LIFO of freed ids), per-request access records, `lru` and `arc` as
//! 0.33 rank them, the reuse filter (`store_threshold`), failed stores, `reset_cache` and the
//! tier gauges. kvoff's own [`crate::OffloadingManager`] keeps its 0.16-shaped contract; this
//! is the second contract, held to vLLM's (`docs/VLLM_NOTES.md` §4 lists the rules).

mod arc;
mod lru;
mod offload_key;
mod ordered;
mod request;
#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::many_single_char_names,
    clippy::cast_possible_wrap
)]
mod tests;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{KvoffError, Result};
use arc::ArcPolicy;
use lru::{LruPolicy, Rank};
use ordered::OrderedKeys;
pub use request::RequestAccess;
use request::Seen;

pub use offload_key::Key;
use offload_key::Prehashed;
pub(crate) type KeyMap<V> = hashbrown::HashMap<Key, V, Prehashed>;
pub(crate) type KeySet = hashbrown::HashSet<Key, Prehashed>;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    id: u32,
    /// -1 while its store is in flight, else the number of loads reading it.
    ref_cnt: i32,
    rank: Rank,
}
pub(crate) type Chunks = KeyMap<Chunk>;

/// A key for an error message: its hash bytes in hex and its group.
pub(crate) fn show(key: &[u8]) -> String {
    let hash = &key[..key.len().saturating_sub(4)];
    let mut out = String::with_capacity(hash.len() * 2 + 12);
    for b in hash {
        let _ = write!(out, "{b:02x}");
    }
    let _ = write!(out, " (group {})", group_index(key));
    out
}

/// The KV-cache group index of a key (its last four bytes, big-endian).
pub(crate) fn group_index(key: &[u8]) -> u32 {
    let tail = &key[key.len().saturating_sub(4)..];
    tail.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VllmPolicy {
    Lru,
    Arc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Miss,
    Hit,
    HitPending,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierEvent {
    pub keys: Vec<Key>,
    pub removed: bool,
    pub metadata_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreOutput {
    /// Where each key to store is in the offer, in store order (so a binding hands back the
    /// caller's objects; [`StoreOutput::keys`] gives the keys themselves).
    pub offer_indices: Vec<usize>,
    pub ids: Vec<u32>,
    pub evicted: Vec<Key>,
    /// The ids `evicted` were stored at, in the same order (freed by this call).
    pub evicted_ids: Vec<u32>,
}

impl StoreOutput {
    /// The keys to store, taken from the `offered` keys this output answered.
    #[must_use]
    pub fn keys(&self, offered: &[Key]) -> Vec<Key> {
        self.offer_indices
            .iter()
            .map(|&i| offered[i].clone())
            .collect()
    }
}

/// What the gauges of `get_stats` are computed from, and the interval's histogram/counter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TierUsage {
    pub capacity: u32,
    pub in_use: u32,
    pub write_pending: u32,
    pub allocation_sizes: Vec<u32>,
    pub stores_skipped: u64,
}

// Both policies are per tier, one of each at most: their size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Policy {
    Lru(LruPolicy),
    Arc(ArcPolicy),
}

/// What a call does to one of its keys in the request's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Not recorded (a store in flight; a candidate the reuse filter held back).
    Skip,
    /// A resident, readable key loaded or offered again.
    Reuse,
    /// An offered key that is not resident: a store miss, to be stored if it fits.
    StoreCandidate,
}

/// Where a call's keys' positions come from: asked once per key, when a request first sees it,
/// by the key's index in the call.
pub type Positions<'a> = &'a mut dyn FnMut(usize) -> Option<i64>;

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

pub struct VllmTier {
    owner: u64,
    generation: u64,
    num_chunks: u32,
    allocated: u32,
    free: Vec<u32>,
    chunks: Chunks,
    policy: Policy,
    evictable: u32,
    write_pending: u32,
    events: Option<Vec<TierEvent>>,
    store_threshold: u32,
    max_tracker_size: usize,
    counts: Option<OrderedKeys<u64>>,
    /// Numbers the calls that record accesses (see `Seen::store_miss_call`).
    call_serial: u64,
    stores_skipped: u64,
    allocation_sizes: Vec<u32>,
    counters: TierCounters,
}

/// kvoff's own interval counts (its `OffloadingConnectorStats`), drained by `take_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierCounters {
    pub lookups: u64,
    pub lookup_hits: u64,
    pub stored: u64,
    pub evicted: u64,
    pub allocation_failures: u64,
}

impl VllmTier {
    #[must_use]
    pub fn new(
        num_chunks: u32,
        policy: VllmPolicy,
        enable_events: bool,
        store_threshold: u32,
        max_tracker_size: usize,
    ) -> Self {
        VllmTier {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            generation: 0,
            num_chunks,
            allocated: 0,
            free: Vec::new(),
            chunks: Chunks::default(),
            policy: match policy {
                VllmPolicy::Lru => Policy::Lru(LruPolicy::default()),
                VllmPolicy::Arc => Policy::Arc(ArcPolicy::new(num_chunks as usize)),
            },
            evictable: 0,
            write_pending: 0,
            events: enable_events.then(Vec::new),
            store_threshold,
            max_tracker_size,
            counts: (store_threshold >= 2).then(OrderedKeys::default),
            call_serial: 0,
            stores_skipped: 0,
            allocation_sizes: Vec::new(),
            counters: TierCounters::default(),
        }
    }

    #[must_use]
    pub fn num_chunks(&self) -> u32 {
        self.num_chunks
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    #[must_use]
    pub fn contains(&self, key: &Key) -> bool {
        self.chunks.contains_key(key)
    }

    /// ARC's target size for T1 (`None` under LRU).
    #[must_use]
    pub fn arc_target(&self) -> Option<f64> {
        match &self.policy {
            Policy::Arc(a) => Some(a.target_t1),
            Policy::Lru(_) => None,
        }
    }

    /// Bind `req` to this tier: a record from another tier or from before a reset starts over.
    fn bind(&self, req: &mut RequestAccess) {
        if req.owner != self.owner || req.generation != self.generation {
            *req = RequestAccess::bound(self.owner, self.generation);
        }
    }

    pub fn on_new_request(&self, req: &mut RequestAccess) {
        self.bind(req);
    }

    #[must_use]
    pub fn lookup(&mut self, key: &Key) -> Lookup {
        self.counters.lookups += 1;
        match self.chunks.get(key) {
            None => Lookup::Miss,
            Some(c) if c.ref_cnt < 0 => Lookup::HitPending,
            Some(_) => {
                self.counters.lookup_hits += 1;
                Lookup::Hit
            }
        }
    }

    pub fn take_counters(&mut self) -> TierCounters {
        std::mem::take(&mut self.counters)
    }

    /// Chunks pinned by a load or a store in flight.
    #[must_use]
    pub fn pinned(&self) -> u32 {
        self.allocated - self.free.len() as u32 - self.evictable
    }

    /// Refuse, before anything changes, a finished request that brings keys it never saw.
    fn check_not_finished(
        req: &RequestAccess,
        keys: &[Key],
        access: impl Fn(usize) -> Access,
    ) -> Result<()> {
        let brings_new = |(i, k): (usize, &Key)| access(i) != Access::Skip && !req.contains(k);
        if req.finished && keys.iter().enumerate().any(brings_new) {
            return Err(KvoffError::InvalidState(
                "a request offered or loaded new keys after it finished".into(),
            ));
        }
        Ok(())
    }

    /// Record `keys` as accessed by `req`, each as `access` classifies it; new ones get their
    /// positions and, under LRU, the request's running rank. Returns the indices of the store
    /// candidates the request had not missed on before this call. The caller has checked
    /// [`Self::check_not_finished`].
    fn record(
        &mut self,
        keys: &[Key],
        access: impl Fn(usize) -> Access,
        req: &mut RequestAccess,
        positions: Positions<'_>,
    ) -> Vec<usize> {
        self.call_serial += 1;
        let call = self.call_serial;
        let mut new_misses = Vec::new();
        let lru = matches!(self.policy, Policy::Lru(_));
        let mut new_keys = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let how = access(i);
            if how == Access::Skip {
                continue;
            }
            let (seen, first) = req.get_or_insert_with(key, || Seen {
                position: positions(i),
                ..Seen::default()
            });
            // Only LRU ranks the keys a request sees first.
            if first && lru {
                new_keys.push((key.clone(), seen.position));
            }
            match how {
                // Re-reading a key this request inserted is not a second access.
                Access::Reuse => seen.reused |= !seen.inserted,
                Access::StoreCandidate => {
                    if seen.store_miss_call == 0 {
                        seen.store_miss_call = call;
                    }
                    if seen.store_miss_call == call {
                        new_misses.push(i);
                    }
                }
                Access::Skip => {}
            }
        }
        if !new_keys.is_empty() {
            if let Policy::Lru(l) = &mut self.policy {
                l.on_request_access(&mut self.chunks, &new_keys, req);
            }
        }
        new_misses
    }

    pub fn prepare_load(
        &mut self,
        keys: &[Key],
        req: &mut RequestAccess,
        positions: Positions<'_>,
    ) -> Result<Vec<u32>> {
        for key in keys {
            match self.chunks.get(key) {
                None => return Err(KvoffError::UnknownHash(show(key))),
                Some(c) if c.ref_cnt < 0 => {
                    return Err(KvoffError::InvalidState(format!(
                        "OffloadKey {} is not ready for reading (its store is in flight)",
                        show(key)
                    )))
                }
                Some(_) => {}
            }
        }
        self.bind(req);
        Self::check_not_finished(req, keys, |_| Access::Reuse)?;
        let mut ids = Vec::with_capacity(keys.len());
        for key in keys {
            let c = self.chunks.get_mut(key).expect("checked above");
            c.ref_cnt += 1;
            ids.push(c.id);
            if c.ref_cnt == 1 {
                self.evictable -= 1;
                if let Policy::Lru(l) = &mut self.policy {
                    l.mark_non_evictable(&self.chunks, key);
                }
            }
        }
        self.record(keys, |_| Access::Reuse, req, positions);
        Ok(ids)
    }

    pub fn touch(&mut self, keys: &[Key]) {
        match &mut self.policy {
            Policy::Lru(l) => l.refresh_reversed(&mut self.chunks, keys.iter()),
            Policy::Arc(a) => a.touch(&self.chunks, keys.iter()),
        }
    }

    pub fn complete_load(&mut self, keys: &[Key]) -> Result<()> {
        // Check first so that a bad call changes nothing; repeats must fit the pin count.
        let mut need: hashbrown::HashMap<&Key, i32, Prehashed> = hashbrown::HashMap::default();
        for key in keys {
            *need.entry(key).or_default() += 1;
        }
        for (key, n) in &need {
            match self.chunks.get(*key) {
                None => return Err(KvoffError::UnknownHash(show(key))),
                Some(c) if c.ref_cnt < *n => {
                    return Err(KvoffError::InvalidState(format!(
                        "OffloadKey {} is not being loaded ({} load(s) in flight, {n} completed)",
                        show(key),
                        c.ref_cnt.max(0)
                    )))
                }
                Some(_) => {}
            }
        }
        for key in keys {
            let (owned, c) = self.chunks.get_key_value_mut(key).expect("checked above");
            c.ref_cnt -= 1;
            if c.ref_cnt == 0 {
                self.evictable += 1;
                let owned = owned.clone();
                if let Policy::Lru(l) = &mut self.policy {
                    l.mark_evictable(&self.chunks, &owned);
                }
            }
        }
        Ok(())
    }

    fn free_chunks(&self) -> u32 {
        self.free.len() as u32 + self.num_chunks - self.allocated
    }

    fn count_offers(&mut self, keys: &[Key]) {
        let Some(counts) = &mut self.counts else {
            return;
        };
        let mut protected = KeySet::default();
        for key in keys {
            if let Some(n) = counts.get_mut(key) {
                *n += 1;
                counts.move_to_back(key);
                protected.insert(key.clone());
            }
        }
        let mut unprotected = counts.total_len() - protected.len();
        for key in keys {
            if counts.contains(key) {
                continue;
            }
            if counts.total_len() >= self.max_tracker_size {
                if unprotected == 0 {
                    continue;
                }
                counts.pop_front(0);
                unprotected -= 1;
            }
            counts.push_back(0, key.clone(), 1);
        }
    }

    #[allow(clippy::too_many_lines)] // one step of vLLM's prepare_store after another
    pub fn prepare_store(
        &mut self,
        keys: &[Key],
        req: &mut RequestAccess,
        positions: Positions<'_>,
    ) -> Result<Option<StoreOutput>> {
        self.bind(req);
        // Each offered key's part, by index: a duplicate gets its twin's part (the same key
        // answers every test the same), as vLLM's set test gives it.
        let mut access: Vec<Access> = keys
            .iter()
            .map(|key| match self.chunks.get(key) {
                None => Access::StoreCandidate,
                Some(c) if c.ref_cnt >= 0 => Access::Reuse,
                Some(_) => Access::Skip,
            })
            .collect();
        Self::check_not_finished(req, keys, |i| access[i])?;
        self.count_offers(keys);
        if let Some(counts) = &mut self.counts {
            let threshold = u64::from(self.store_threshold);
            for (i, key) in keys.iter().enumerate() {
                if access[i] == Access::StoreCandidate
                    && counts.get_mut(key).is_none_or(|n| *n < threshold)
                {
                    access[i] = Access::Skip;
                    self.stores_skipped += 1;
                }
            }
        }
        let candidates: Vec<usize> = (0..keys.len())
            .filter(|&i| access[i] == Access::StoreCandidate)
            .collect();
        let new_misses = self.record(keys, |i| access[i], req, positions);
        // Only ARC learns from misses (its ghosts); recording does not touch its lists, so the
        // order of the two steps does not matter.
        if let Policy::Arc(a) = &mut self.policy {
            a.on_store_miss(new_misses.iter().map(|&i| &keys[i]));
        }
        if candidates.is_empty() {
            return Ok(Some(StoreOutput::default()));
        }
        let want = candidates.len() as u32;
        self.allocation_sizes.push(want);
        let need = want.saturating_sub(self.free_chunks());
        let mut evicted = Vec::new();
        let mut evicted_ids = Vec::new();
        if need > 0 {
            if need > self.evictable {
                self.counters.allocation_failures += 1;
                return Ok(None);
            }
            // Of the offered keys only the resident, readable ones could be picked: protect
            // those (usually none, so the set is usually empty and never hashed into).
            let offered: KeySet = (0..keys.len())
                .filter(|&i| access[i] == Access::Reuse)
                .map(|i| keys[i].clone())
                .collect();
            let protected = |k: &Key| !offered.is_empty() && offered.contains(k);
            let victims = match &mut self.policy {
                Policy::Lru(l) => l.evict(need as usize, &protected),
                Policy::Arc(a) => a.evict(need as usize, &self.chunks, &protected),
            };
            let Some(victims) = victims else {
                self.counters.allocation_failures += 1;
                return Ok(None);
            };
            self.evictable -= victims.len() as u32;
            self.counters.evicted += victims.len() as u64;
            evicted_ids.reserve(victims.len());
            for key in &victims {
                let c = self.chunks.remove(key).expect("a victim is resident");
                self.free.push(c.id);
                evicted_ids.push(c.id);
            }
            evicted = victims;
        }
        if !evicted.is_empty() {
            if let Some(ev) = &mut self.events {
                ev.push(TierEvent {
                    keys: evicted.clone(),
                    removed: true,
                    metadata_only: false,
                });
            }
        }
        let mut out = StoreOutput {
            offer_indices: Vec::new(),
            ids: Vec::with_capacity(candidates.len()),
            evicted,
            evicted_ids,
        };
        for &i in &candidates {
            let key = &keys[i];
            let id = if self.allocated < self.num_chunks {
                self.allocated += 1;
                self.allocated - 1
            } else {
                self.free.pop().expect("room was made above")
            };
            self.chunks.insert(
                key.clone(),
                Chunk {
                    id,
                    ref_cnt: -1,
                    rank: (0, 0),
                },
            );
            let seen = req.get_mut(key).expect("recorded above");
            seen.inserted = true;
            let position = seen.position;
            match &mut self.policy {
                Policy::Lru(l) => l.insert(&mut self.chunks, key, position, req),
                Policy::Arc(a) => a.insert(key),
            }
            out.ids.push(id);
        }
        self.write_pending += want;
        out.offer_indices = candidates;
        Ok(Some(out))
    }

    /// Keys absent or already stored are skipped. Success makes the rest readable ("stored"
    /// event); failure drops them (a `metadata_only` removal event). Returns where the keys
    /// completed are in `keys` (an event's keys, in its order).
    pub fn complete_store(&mut self, keys: &[Key], success: bool) -> Vec<usize> {
        let mut done = Vec::new();
        let mut done_at = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let Some((owned, c)) = self.chunks.get_key_value_mut(key) else {
                continue;
            };
            if c.ref_cnt >= 0 {
                continue;
            }
            let owned = owned.clone();
            self.write_pending -= 1;
            if success {
                c.ref_cnt = 0;
                self.evictable += 1;
                self.counters.stored += 1;
                if let Policy::Lru(l) = &mut self.policy {
                    l.mark_evictable(&self.chunks, &owned);
                }
            } else {
                let id = c.id;
                self.chunks.remove(&owned);
                if let Policy::Arc(a) = &mut self.policy {
                    a.remove(&owned);
                }
                self.free.push(id);
            }
            done.push(owned);
            done_at.push(i);
        }
        if let (Some(ev), false) = (&mut self.events, done.is_empty()) {
            ev.push(TierEvent {
                keys: done,
                removed: !success,
                metadata_only: !success,
            });
        }
        done_at
    }

    #[must_use]
    pub fn events_enabled(&self) -> bool {
        self.events.is_some()
    }

    pub fn on_request_finished(&mut self, req: &mut RequestAccess) {
        if req.owner != self.owner || req.generation != self.generation || req.finished {
            return;
        }
        req.finished = true;
        let ordered = req.prefix_order();
        match &mut self.policy {
            Policy::Lru(l) => {
                l.refresh_reversed(&mut self.chunks, ordered.iter().map(|(k, _)| *k));
            }
            Policy::Arc(a) => {
                a.on_request_finished(ordered.iter().map(|(k, s)| (*k, s.inserted, s.reused)));
            }
        }
    }

    pub fn reset_cache(&mut self) {
        self.chunks.clear();
        match &mut self.policy {
            Policy::Lru(l) => l.clear(),
            Policy::Arc(a) => a.clear(),
        }
        self.generation += 1;
        self.evictable = 0;
        self.write_pending = 0;
        self.free.clear();
        self.allocated = 0;
    }

    /// Drain the events; a failed store's removal drops keys stored again since.
    pub fn take_events(&mut self) -> Vec<TierEvent> {
        let Some(ev) = &mut self.events else {
            return Vec::new();
        };
        let mut out = std::mem::take(ev);
        out.retain_mut(|e| {
            if e.metadata_only {
                e.keys.retain(|k| !self.chunks.contains_key(k));
                !e.keys.is_empty()
            } else {
                true
            }
        });
        out
    }

    /// The gauges' inputs now; drains the allocation sizes and the skipped count.
    pub fn take_usage(&mut self) -> TierUsage {
        TierUsage {
            capacity: self.num_chunks,
            in_use: self.allocated - self.free.len() as u32 - self.evictable,
            write_pending: self.write_pending,
            allocation_sizes: std::mem::take(&mut self.allocation_sizes),
            stores_skipped: std::mem::take(&mut self.stores_skipped),
        }
    }

    #[must_use]
    pub fn store_threshold(&self) -> u32 {
        self.store_threshold
    }
}
