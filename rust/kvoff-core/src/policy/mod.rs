//! Eviction policies: which resident blocks go first when the CPU tier is full.
//!
//! The manager owns the key index, the id pool and the block states; a policy only keeps
//! recency order (and, for ARC, its ghost lists) and picks victims among the blocks the
//! manager says are evictable. New policies implement [`EvictionPolicy`].

mod arc;
mod lru;

pub use arc::ArcPolicy;
pub use lru::LruPolicy;

use crate::key::{BlockKey, BlockKeyRef};
use crate::memory::AllocFailed;

/// The order-keeping half of the block manager.
pub trait EvictionPolicy: Send {
    /// A block `id` named `key` (whose index hash is `hash`) was just allocated; its store is
    /// in flight.
    fn on_insert(&mut self, id: u32, key: BlockKeyRef<'_>, hash: u64);
    /// `touch` reached resident block `id`; `ready` says whether its store has completed.
    fn on_touch(&mut self, id: u32, ready: bool);
    /// `touch` named a key that is not resident.
    fn on_touch_absent(&mut self, key: BlockKeyRef<'_>, hash: u64);
    /// Block `id` was evicted to make room; `key` leaves the tier.
    fn on_evict(&mut self, id: u32, key: BlockKeyRef<'_>, hash: u64);
    /// Block `id` left without being evicted (its store failed).
    fn on_remove(&mut self, id: u32);
    /// Push exactly `n` distinct victims, in eviction order, onto `out`, choosing only ids for
    /// which `evictable` is true. Changes nothing; returns `false` when fewer than `n` exist.
    fn select_victims(
        &self,
        n: usize,
        evictable: &mut dyn FnMut(u32) -> bool,
        out: &mut Vec<u32>,
    ) -> bool;
    /// The policy's lists, for inspection and tests.
    fn state(&self) -> PolicyState;
}

/// A policy's lists, each from least to most recently used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    /// Lists of resident block ids (`"lru"`, or ARC's `"t1"` and `"t2"`).
    pub resident: Vec<(&'static str, Vec<u32>)>,
    /// Lists of keys no longer resident (ARC's `"b1"` and `"b2"`).
    pub ghosts: Vec<(&'static str, Vec<BlockKey>)>,
    /// ARC's target size for T1.
    pub target: Option<u64>,
}

/// The policies a manager can be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Lru,
    Arc,
}

impl PolicyKind {
    /// A policy for `capacity` blocks, its arrays allocated at their full size.
    pub(crate) fn try_build(self, capacity: u32) -> Result<Box<dyn EvictionPolicy>, AllocFailed> {
        Ok(match self {
            PolicyKind::Lru => Box::new(LruPolicy::try_new(capacity)?),
            PolicyKind::Arc => Box::new(ArcPolicy::try_new(capacity)?),
        })
    }

    /// Bytes the policy for `capacity` blocks takes at most.
    pub(crate) fn bytes_for(self, capacity: u32) -> u64 {
        match self {
            PolicyKind::Lru => LruPolicy::bytes_for(capacity),
            PolicyKind::Arc => ArcPolicy::bytes_for(capacity),
        }
    }

    /// The name the policy goes by in messages and in Python (`"lru"`, `"arc"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::Arc => "arc",
        }
    }
}
