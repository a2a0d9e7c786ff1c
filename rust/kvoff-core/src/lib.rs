//! kvoff's core: everything that decides and counts, with no Python in sight.
//!
//! The binding crate (`kvoff-py`) converts arguments and maps [`KvoffError`] onto Python
//! exceptions; nothing here knows about `PyO3`, `torch` or Prometheus.

pub mod direction;
pub mod error;
mod hugepages;
mod index;
pub mod jobs;
pub mod key;
mod list;
pub mod manager;
mod memory;
pub mod policy;
pub mod pool;
pub mod sink;
pub mod stats;
pub mod vllm_tier;

pub use direction::Direction;
pub use error::{KvoffError, Result};
pub use jobs::{CompletedJob, Finished, JobTracker};
pub use key::{BlockKey, BlockKeyRef};
pub use manager::{EvictedKeys, ManagerCounters, ManagerEvent, OffloadingManager, StorePlan};
pub use policy::{EvictionPolicy, PolicyKind, PolicyState};
pub use pool::IdPool;
pub use sink::ManagerStatsSink;
pub use stats::{StatsAccumulator, StatsSnapshot};
