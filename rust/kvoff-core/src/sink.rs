/// Where the block manager reports what it did, so that one stats snapshot describes an interval
/// for both halves (scheduler and worker). `StatsAccumulator` implements it with atomics; the
/// manager holds an `Option<Arc<dyn ManagerStatsSink>>` and calls it after each successful call.
pub trait ManagerStatsSink: Send + Sync {
    /// `lookup` queried `blocks_queried` blocks and found a ready prefix of `blocks_hit`; each
    /// block holds `tokens_per_block` tokens (the manager's `block_size`).
    fn record_lookup(&self, blocks_queried: u64, blocks_hit: u64, tokens_per_block: u64);
    /// `prepare_store` allocated `blocks` new blocks.
    fn record_stored(&self, blocks: u64);
    /// Blocks evicted to make room.
    fn record_evicted(&self, blocks: u64);
    /// `prepare_store` could not make room and returned nothing.
    fn record_allocation_failure(&self);
    /// Current occupancy (gauges): capacity, resident (allocated, any state) and pinned
    /// (store or load in flight) blocks.
    fn set_occupancy(&self, capacity: u64, resident: u64, pinned: u64);
}
