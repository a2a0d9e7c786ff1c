//! Lock-free transfer and lookup statistics (DESIGN §3): bucket bounds, the accumulator that
//! records from many threads, and the plain-data snapshot it hands out.

pub mod accumulator;
pub mod histogram;
pub mod plain;
pub mod snapshot;

pub use accumulator::{duration_ns, StatsAccumulator};
pub use plain::Value;
pub use snapshot::{DirectionStats, LookupStats, ManagerStats, Reduced, StatsSnapshot};
