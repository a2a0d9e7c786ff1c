//! Lock-free transfer and lookup statistics (docs/DESIGN.md, "Stats"): bucket bounds, the accumulator that
//! records from many threads, and the plain-data snapshot it hands out.

pub mod accumulator;
pub mod histogram;
pub mod plain;
pub mod snapshot;

pub use accumulator::{
    check_transfer_bytes, duration_ns, StatsAccumulator, MAX_TRANSFER_BYTES, MAX_TRANSFER_SECONDS,
};
pub use plain::Value;
pub use snapshot::{
    DirectionStats, HitStats, LookupStats, ManagerStats, Reduced, RemoteErrorKind, RemoteTierStats,
    StatsSnapshot,
};
