//! `StatsAccumulator`: records transfers, lookups and the manager's counters from any number of
//! threads with atomic operations only, and hands out one interval at a time with `take()`.
//!
//! # Why two banks and not `swap(0)` per field
//!
//! Swapping each counter to zero on `take()` is exact for every counter on its own, but one
//! transfer touches up to eight counters (ops, bytes, blocks, time, three histograms, throughput
//! sum). A `take()` that lands between a writer's first and last increment would put the ops in
//! one snapshot and the bytes in the next: a snapshot could show more hits than queries, or an
//! average size computed from halves of two transfers. Every record must land whole in exactly
//! one snapshot.
//!
//! So there are two banks of counters and an `active` bank index. A writer announces itself in
//! the bank's `in_flight` count, re-reads `active`, and only if the bank is still active writes
//! all its increments there (otherwise it backs out and retries on the new bank); then it
//! leaves. `take()` flips `active` and waits until the old bank's `in_flight` drops to zero,
//! then drains it. With sequentially consistent increments of `in_flight` and the flip, either
//! the writer's announcement is ordered before the flip (and `take` waits for it), or the
//! writer's re-read sees the flip (and it moves to the new bank): no record is lost, split or
//! counted twice. A writer never waits on anything: at worst it retries once per concurrent
//! `take`. Only `take()` waits, for writers already inside the old bank (a few increments, unless
//! one is descheduled there), and concurrent `take()` calls are serialized by a mutex that
//! writers never touch.
//!
//! Gauges (capacity, resident, pinned) are latest values, not interval counts: they live outside
//! the banks and `take()` copies them without resetting.
//!
//! # Overflow: refuse the absurd, saturate the rest
//!
//! One transfer longer than [`MAX_TRANSFER_SECONDS`] or larger than [`MAX_TRANSFER_BYTES`] is
//! a caller bug (a clock read wrong, a size in bits): `record_transfer` refuses it and records
//! nothing. Everything else is accepted, and a counter that would pass `2^64 - 1` within one
//! interval stays at `2^64 - 1` (saturates) rather than wrapping to a small, plausible number:
//! a reader seeing `u64::MAX` knows the count is at least that. Saturation costs the writer one
//! comparison, not a compare-and-swap loop; see [`add`].

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;

use crate::direction::Direction;
use crate::error::{KvoffError, Result};
use crate::sink::ManagerStatsSink;
use crate::stats::histogram::{
    duration_bucket, seconds_to_ns, size_bucket, throughput_bps, throughput_bucket,
    DURATION_BUCKETS, SIZE_BUCKETS, THROUGHPUT_BUCKETS,
};
use crate::stats::snapshot::{
    DirectionStats, HitStats, LookupStats, ManagerStats, RemoteErrorKind, RemoteTierStats,
    StatsSnapshot,
};

/// Keeps each bank and each `in_flight` count on its own cache lines (128 bytes covers the
/// adjacent-line prefetcher on x86), so writers of one do not bounce the other's lines.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

#[derive(Default)]
struct AtomicDirection {
    ops: AtomicU64,
    failed_ops: AtomicU64,
    blocks: AtomicU64,
    bytes: AtomicU64,
    failed_bytes: AtomicU64,
    time_ns: AtomicU64,
    throughput_sum: AtomicU64,
    size_counts: [AtomicU64; SIZE_BUCKETS],
    duration_counts: [AtomicU64; DURATION_BUCKETS],
    throughput_counts: [AtomicU64; THROUGHPUT_BUCKETS],
}

/// Adds `v`, saturating at `u64::MAX`.
///
/// A plain `fetch_add` wraps, so a writer whose add carries past `2^64` (it sees
/// `old + v > u64::MAX`) stores `u64::MAX` afterwards. That suffices with any number of racing
/// writers: every add that lands on a saturated (`u64::MAX`) value carries again and stores it
/// again, so the last operation on the counter is always one of those stores once any add has
/// carried; adds that slip in between a carry and its store are overwritten, which is what
/// saturation means. `take()` reads the bank only after every writer in it has left, stores
/// included.
fn add(c: &AtomicU64, v: u64) {
    // Relaxed: ordering comes from the bank's in_flight count, see the module comment; the
    // argument above needs only the counter's own modification order.
    let old = c.fetch_add(v, Ordering::Relaxed);
    if old.checked_add(v).is_none() {
        c.store(u64::MAX, Ordering::Relaxed);
    }
}

/// Reads and zeroes a counter of a bank that `take()` has closed. No writer can touch that bank
/// until the next flip (a late writer sees the flip and backs out before writing), so a plain
/// load and store suffice where a `swap` would cost a locked instruction per counter.
fn drain(c: &AtomicU64) -> u64 {
    let v = c.load(Ordering::Relaxed);
    c.store(0, Ordering::Relaxed);
    v
}

fn drain_array<const N: usize>(a: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| drain(&a[i]))
}

impl AtomicDirection {
    fn record(&self, bytes: u64, blocks: u64, ns: u64, success: bool) {
        if !success {
            add(&self.failed_ops, 1);
            add(&self.failed_bytes, bytes);
            return;
        }
        add(&self.ops, 1);
        add(&self.blocks, blocks);
        add(&self.bytes, bytes);
        add(&self.time_ns, ns);
        add(&self.size_counts[size_bucket(bytes)], 1);
        add(&self.duration_counts[duration_bucket(ns)], 1);
        if let (Some(bucket), Some(bps)) = (throughput_bucket(bytes, ns), throughput_bps(bytes, ns))
        {
            add(&self.throughput_counts[bucket], 1);
            add(&self.throughput_sum, bps);
        }
    }

    fn drain(&self) -> DirectionStats {
        DirectionStats {
            ops: drain(&self.ops),
            failed_ops: drain(&self.failed_ops),
            blocks: drain(&self.blocks),
            bytes: drain(&self.bytes),
            failed_bytes: drain(&self.failed_bytes),
            time_ns: drain(&self.time_ns),
            size_counts: drain_array(&self.size_counts),
            duration_counts: drain_array(&self.duration_counts),
            throughput_counts: drain_array(&self.throughput_counts),
            throughput_sum: drain(&self.throughput_sum),
        }
    }
}

#[derive(Default)]
struct Bank {
    transfers: [AtomicDirection; 4],
    blocks_queried: AtomicU64,
    blocks_hit: AtomicU64,
    tokens_queried: AtomicU64,
    tokens_hit: AtomicU64,
    blocks_stored: AtomicU64,
    blocks_evicted: AtomicU64,
    allocation_failures: AtomicU64,
    hit_cpu_blocks: AtomicU64,
    hit_cpu_tokens: AtomicU64,
    hit_remote_blocks: AtomicU64,
    hit_remote_tokens: AtomicU64,
    remote_lookup_blocks_queried: AtomicU64,
    remote_lookup_blocks_hit: AtomicU64,
    remote_errors: [AtomicU64; 8],
    writes_dropped: AtomicU64,
}

#[derive(Default)]
struct Gauges {
    capacity: AtomicU64,
    resident: AtomicU64,
    pinned: AtomicU64,
    write_queue_blocks: AtomicU64,
}

/// Lock-free recorder of transfers, lookups and manager counters. Share it as
/// `Arc<StatsAccumulator>`; it is also the manager's [`ManagerStatsSink`].
#[derive(Default)]
pub struct StatsAccumulator {
    /// Index (0 or 1) of the bank writers record into.
    active: AtomicUsize,
    in_flight: [Padded<AtomicU64>; 2],
    banks: [Padded<Bank>; 2],
    gauges: Padded<Gauges>,
    /// Serializes `take()` calls only; writers never touch it.
    take_lock: Mutex<()>,
}

/// A writer's presence in one bank; leaving on drop lets `take()` drain it.
struct BankGuard<'a> {
    acc: &'a StatsAccumulator,
    bank: usize,
}

impl BankGuard<'_> {
    fn bank(&self) -> &Bank {
        &self.acc.banks[self.bank].0
    }
}

impl Drop for BankGuard<'_> {
    fn drop(&mut self) {
        // Release: the increments made in the bank happen-before take()'s acquire of zero.
        self.acc.in_flight[self.bank]
            .0
            .fetch_sub(1, Ordering::Release);
    }
}

/// The largest size one transfer may report: 2^50 bytes (1 PiB), far beyond any CPU tier.
pub const MAX_TRANSFER_BYTES: u64 = 1 << 50;
/// The longest duration one transfer may report: one day.
pub const MAX_TRANSFER_SECONDS: f64 = 86_400.0;

/// Checks a duration given in seconds (finite, `0..=MAX_TRANSFER_SECONDS`) and converts it to
/// whole nanoseconds.
pub fn duration_ns(seconds: f64) -> Result<u64> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(KvoffError::InvalidArgument(format!(
            "transfer time must be a finite, non-negative number of seconds, got {seconds}"
        )));
    }
    if seconds > MAX_TRANSFER_SECONDS {
        return Err(KvoffError::InvalidArgument(format!(
            "transfer time must be at most {MAX_TRANSFER_SECONDS} seconds (one day) for one \
             transfer, got {seconds}"
        )));
    }
    Ok(seconds_to_ns(seconds))
}

/// Checks the size of one transfer (`0..=MAX_TRANSFER_BYTES`); the message names the Python
/// argument, `num_bytes`.
pub fn check_transfer_bytes(bytes: u64) -> Result<u64> {
    if bytes > MAX_TRANSFER_BYTES {
        return Err(KvoffError::InvalidArgument(format!(
            "num_bytes must be at most 2^50 (1 PiB) for one transfer, got {bytes}"
        )));
    }
    Ok(bytes)
}

impl StatsAccumulator {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn enter(&self) -> BankGuard<'_> {
        loop {
            let bank = self.active.load(Ordering::SeqCst);
            self.in_flight[bank].0.fetch_add(1, Ordering::SeqCst);
            if self.active.load(Ordering::SeqCst) == bank {
                return BankGuard { acc: self, bank };
            }
            // A take() flipped the banks in between and may already have found this bank idle:
            // back out and record into the new one.
            self.in_flight[bank].0.fetch_sub(1, Ordering::Release);
        }
    }

    /// Records one finished transfer. `ns` is its duration in nanoseconds; bytes, blocks and the
    /// histograms count only successful transfers, a failure counts in `failed_ops` and
    /// `failed_bytes`. Not bounds-checked (counters saturate); callers with untrusted input use
    /// [`record_transfer`](Self::record_transfer).
    pub fn record_transfer_ns(
        &self,
        direction: Direction,
        bytes: u64,
        blocks: u64,
        ns: u64,
        success: bool,
    ) {
        let guard = self.enter();
        guard.bank().transfers[direction.index()].record(bytes, blocks, ns, success);
    }

    /// [`record_transfer_ns`](Self::record_transfer_ns) with the duration in seconds; refuses a
    /// duration or size beyond one transfer's bounds and then records nothing.
    pub fn record_transfer(
        &self,
        direction: Direction,
        bytes: u64,
        blocks: u64,
        seconds: f64,
        success: bool,
    ) -> Result<()> {
        let bytes = check_transfer_bytes(bytes)?;
        let ns = duration_ns(seconds)?;
        self.record_transfer_ns(direction, bytes, blocks, ns, success);
        Ok(())
    }

    /// Records one lookup; hits may not exceed what was queried.
    pub fn record_lookup(
        &self,
        blocks_queried: u64,
        blocks_hit: u64,
        tokens_queried: u64,
        tokens_hit: u64,
    ) -> Result<()> {
        if blocks_hit > blocks_queried || tokens_hit > tokens_queried {
            return Err(KvoffError::InvalidArgument(format!(
                "a lookup cannot hit more than it queried: blocks {blocks_hit}/{blocks_queried}, \
                 tokens {tokens_hit}/{tokens_queried}"
            )));
        }
        self.add_lookup(blocks_queried, blocks_hit, tokens_queried, tokens_hit);
        Ok(())
    }

    fn add_lookup(
        &self,
        blocks_queried: u64,
        blocks_hit: u64,
        tokens_queried: u64,
        tokens_hit: u64,
    ) {
        let guard = self.enter();
        let b = guard.bank();
        add(&b.blocks_queried, blocks_queried);
        add(&b.blocks_hit, blocks_hit);
        add(&b.tokens_queried, tokens_queried);
        add(&b.tokens_hit, tokens_hit);
    }

    fn add_one(&self, field: fn(&Bank) -> &AtomicU64, v: u64) {
        let guard = self.enter();
        add(field(guard.bank()), v);
    }

    /// Records one request's hit as the connector reported it to the engine: blocks (and the
    /// tokens they cover) served by the CPU tier, and those served by the remote tier (fetched
    /// into the CPU tier for this request). One call per reported hit, so the split lands in
    /// one snapshot.
    pub fn record_hits(
        &self,
        cpu_blocks: u64,
        cpu_tokens: u64,
        remote_blocks: u64,
        remote_tokens: u64,
    ) {
        let guard = self.enter();
        let b = guard.bank();
        add(&b.hit_cpu_blocks, cpu_blocks);
        add(&b.hit_cpu_tokens, cpu_tokens);
        add(&b.hit_remote_blocks, remote_blocks);
        add(&b.hit_remote_tokens, remote_tokens);
    }

    /// Records one answered remote-tier lookup; hits may not exceed what was queried.
    pub fn record_remote_lookup(&self, blocks_queried: u64, blocks_hit: u64) -> Result<()> {
        if blocks_hit > blocks_queried {
            return Err(KvoffError::InvalidArgument(format!(
                "a remote lookup cannot hit more than it queried: blocks \
                 {blocks_hit}/{blocks_queried}"
            )));
        }
        let guard = self.enter();
        let b = guard.bank();
        add(&b.remote_lookup_blocks_queried, blocks_queried);
        add(&b.remote_lookup_blocks_hit, blocks_hit);
        Ok(())
    }

    /// Counts `n` remote-tier errors of one kind.
    pub fn record_remote_error(&self, kind: RemoteErrorKind, n: u64) {
        let guard = self.enter();
        add(&guard.bank().remote_errors[kind.index()], n);
    }

    /// Counts `n` pending writes pushed out of the full write-behind queue.
    pub fn record_writes_dropped(&self, n: u64) {
        self.add_one(|b| &b.writes_dropped, n);
    }

    /// Sets the write-behind queue depth gauge (latest value; `take()` does not reset it).
    pub fn set_write_queue(&self, blocks: u64) {
        self.gauges
            .0
            .write_queue_blocks
            .store(blocks, Ordering::Relaxed);
    }

    /// Sets the occupancy gauges from untrusted input: pinned blocks are resident, and resident
    /// blocks fit the capacity. (The manager's own reports go through the sink unchecked.)
    pub fn set_occupancy_checked(&self, capacity: u64, resident: u64, pinned: u64) -> Result<()> {
        if pinned > resident || resident > capacity {
            return Err(KvoffError::InvalidArgument(format!(
                "occupancy must satisfy pinned <= resident <= capacity, got capacity {capacity}, \
                 resident {resident}, pinned {pinned}"
            )));
        }
        ManagerStatsSink::set_occupancy(self, capacity, resident, pinned);
        Ok(())
    }

    /// Ends the current interval: returns everything recorded since the previous `take()` and
    /// starts a new interval, plus the latest gauges.
    pub fn take(&self) -> StatsSnapshot {
        let _serial = self
            .take_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only take() writes `active`, and takes are serialized, so this read is current.
        let old = self.active.load(Ordering::Relaxed);
        self.active.store(old ^ 1, Ordering::SeqCst);
        let mut spins = 0u32;
        while self.in_flight[old].0.load(Ordering::SeqCst) != 0 {
            if spins < 128 {
                spin_loop();
            } else {
                thread::yield_now();
            }
            spins = spins.saturating_add(1);
        }
        let bank = &self.banks[old].0;
        let g = &self.gauges.0;
        StatsSnapshot {
            transfers: std::array::from_fn(|i| bank.transfers[i].drain()),
            lookups: LookupStats {
                blocks_queried: drain(&bank.blocks_queried),
                blocks_hit: drain(&bank.blocks_hit),
                tokens_queried: drain(&bank.tokens_queried),
                tokens_hit: drain(&bank.tokens_hit),
            },
            manager: ManagerStats {
                blocks_stored: drain(&bank.blocks_stored),
                blocks_evicted: drain(&bank.blocks_evicted),
                allocation_failures: drain(&bank.allocation_failures),
                capacity_blocks: g.capacity.load(Ordering::Relaxed),
                resident_blocks: g.resident.load(Ordering::Relaxed),
                pinned_blocks: g.pinned.load(Ordering::Relaxed),
            },
            hits: HitStats {
                cpu_blocks: drain(&bank.hit_cpu_blocks),
                cpu_tokens: drain(&bank.hit_cpu_tokens),
                remote_blocks: drain(&bank.hit_remote_blocks),
                remote_tokens: drain(&bank.hit_remote_tokens),
            },
            remote: RemoteTierStats {
                lookup_blocks_queried: drain(&bank.remote_lookup_blocks_queried),
                lookup_blocks_hit: drain(&bank.remote_lookup_blocks_hit),
                errors: drain_array(&bank.remote_errors),
                writes_dropped: drain(&bank.writes_dropped),
                write_queue_blocks: g.write_queue_blocks.load(Ordering::Relaxed),
            },
        }
    }
}

impl ManagerStatsSink for StatsAccumulator {
    fn record_lookup(&self, blocks_queried: u64, blocks_hit: u64, tokens_per_block: u64) {
        self.add_lookup(
            blocks_queried,
            blocks_hit,
            blocks_queried.saturating_mul(tokens_per_block),
            blocks_hit.saturating_mul(tokens_per_block),
        );
    }

    fn record_stored(&self, blocks: u64) {
        self.add_one(|b| &b.blocks_stored, blocks);
    }

    fn record_evicted(&self, blocks: u64) {
        self.add_one(|b| &b.blocks_evicted, blocks);
    }

    fn record_allocation_failure(&self) {
        self.add_one(|b| &b.allocation_failures, 1);
    }

    /// Three independent stores: a reader racing two `set_occupancy` calls from different
    /// threads may mix their values. The manager reports under its own lock, so in practice
    /// the triple is consistent.
    fn set_occupancy(&self, capacity: u64, resident: u64, pinned: u64) {
        let g = &self.gauges.0;
        g.capacity.store(capacity, Ordering::Relaxed);
        g.resident.store(resident, Ordering::Relaxed);
        g.pinned.store(pinned, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::stats::histogram::{DURATION_BOUNDS_NS, SIZE_BOUNDS_BYTES};

    #[test]
    fn one_transfer_lands_in_every_histogram() {
        let acc = StatsAccumulator::new();
        // 1 MB in 1 ms = 1e9 B/s: size bucket 1e6 (4), duration 1e-3 (5), throughput 1e9 (2).
        acc.record_transfer(Direction::GpuToCpu, 1_000_000, 4, 1e-3, true)
            .expect("valid");
        let s = acc.take();
        let d = s.direction(Direction::GpuToCpu);
        assert_eq!(
            (d.ops, d.blocks, d.bytes, d.time_ns),
            (1, 4, 1_000_000, 1_000_000)
        );
        assert_eq!(SIZE_BOUNDS_BYTES[4], 1_000_000);
        assert_eq!(DURATION_BOUNDS_NS[5], 1_000_000);
        let ones = |a: &[u64], i: usize| a.iter().enumerate().all(|(j, &c)| c == u64::from(i == j));
        assert!(ones(&d.size_counts, 4));
        assert!(ones(&d.duration_counts, 5));
        assert!(ones(&d.throughput_counts, 2));
        assert_eq!(d.throughput_sum, 1_000_000_000);
        assert!(s.direction(Direction::CpuToGpu).counters().all(|&c| c == 0));
    }

    #[test]
    fn failures_count_apart_and_zero_duration_has_no_throughput() {
        let acc = StatsAccumulator::new();
        acc.record_transfer(Direction::CpuToGpu, 500, 2, 0.5, false)
            .expect("valid");
        acc.record_transfer(Direction::CpuToGpu, 700, 3, 0.0, true)
            .expect("valid");
        let s = acc.take();
        let d = s.direction(Direction::CpuToGpu);
        assert_eq!(
            (d.ops, d.failed_ops, d.bytes, d.failed_bytes, d.blocks),
            (1, 1, 700, 500, 3)
        );
        assert_eq!(d.size_counts.iter().sum::<u64>(), 1);
        assert_eq!(d.duration_counts[0], 1);
        assert_eq!(d.throughput_observations(), 0);
        assert_eq!(d.throughput_sum, 0);
    }

    #[test]
    fn take_starts_a_new_interval_but_keeps_gauges() {
        let acc = StatsAccumulator::new();
        acc.set_occupancy(100, 10, 2);
        ManagerStatsSink::record_lookup(&acc, 8, 3, 16);
        acc.record_stored(5);
        acc.record_evicted(1);
        acc.record_allocation_failure();
        let s = acc.take();
        assert_eq!(
            s.lookups,
            LookupStats {
                blocks_queried: 8,
                blocks_hit: 3,
                tokens_queried: 128,
                tokens_hit: 48
            }
        );
        assert_eq!(
            s.manager,
            ManagerStats {
                blocks_stored: 5,
                blocks_evicted: 1,
                allocation_failures: 1,
                capacity_blocks: 100,
                resident_blocks: 10,
                pinned_blocks: 2,
            }
        );
        let t = acc.take();
        assert_eq!(t.lookups, LookupStats::default());
        assert_eq!(
            (t.manager.blocks_stored, t.manager.capacity_blocks),
            (0, 100)
        );
        // Several takes in a row keep using both banks correctly.
        acc.record_stored(1);
        assert_eq!(acc.take().manager.blocks_stored, 1);
        acc.record_stored(2);
        assert_eq!(acc.take().manager.blocks_stored, 2);
    }

    #[test]
    fn remote_tier_records_land_in_their_fields() {
        let acc = StatsAccumulator::new();
        acc.record_transfer(Direction::CpuToRemote, 4_194_352, 1, 2e-3, true)
            .expect("valid");
        acc.record_transfer(Direction::RemoteToCpu, 4_194_304, 1, 0.5, false)
            .expect("valid");
        acc.record_hits(3, 48, 2, 32);
        acc.record_hits(1, 16, 0, 0);
        acc.record_remote_lookup(8, 5).expect("valid");
        acc.record_remote_error(RemoteErrorKind::Timeout, 2);
        acc.record_remote_error(RemoteErrorKind::Corrupt, 1);
        acc.record_writes_dropped(7);
        acc.set_write_queue(12);
        let snap = acc.take();
        let write = snap.direction(Direction::CpuToRemote);
        assert_eq!(
            (write.ops, write.blocks, write.bytes, write.time_ns),
            (1, 1, 4_194_352, 2_000_000)
        );
        let read = snap.direction(Direction::RemoteToCpu);
        assert_eq!(
            (read.ops, read.failed_ops, read.failed_bytes),
            (0, 1, 4_194_304)
        );
        assert!(snap.transfers[..2]
            .iter()
            .all(|d| d.counters().all(|&c| c == 0)));
        assert_eq!(
            snap.hits,
            HitStats {
                cpu_blocks: 4,
                cpu_tokens: 64,
                remote_blocks: 2,
                remote_tokens: 32
            }
        );
        assert_eq!(
            snap.remote,
            RemoteTierStats {
                lookup_blocks_queried: 8,
                lookup_blocks_hit: 5,
                errors: [0, 2, 0, 0, 0, 0, 0, 1],
                writes_dropped: 7,
                write_queue_blocks: 12,
            }
        );
        // Interval counters restart; the queue gauge stays.
        let t = acc.take();
        assert_eq!(t.hits, HitStats::default());
        assert_eq!(t.remote.errors, [0; 8]);
        assert_eq!(t.remote.write_queue_blocks, 12);
        let e = acc
            .record_remote_lookup(2, 3)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            "a remote lookup cannot hit more than it queried: blocks 3/2"
        );
        assert_eq!(acc.take().remote.lookup_blocks_queried, 0);
    }

    #[test]
    fn bad_input_is_rejected_and_records_nothing() {
        let acc = StatsAccumulator::new();
        for bad in [f64::NAN, f64::INFINITY, -1e-9] {
            let err = acc.record_transfer(Direction::GpuToCpu, 1, 1, bad, true);
            assert!(matches!(err, Err(KvoffError::InvalidArgument(_))));
        }
        assert!(matches!(
            acc.record_lookup(2, 3, 0, 0),
            Err(KvoffError::InvalidArgument(_))
        ));
        assert!(matches!(
            acc.record_lookup(3, 2, 5, 6),
            Err(KvoffError::InvalidArgument(_))
        ));
        assert!(acc.take().is_empty());
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let acc = StatsAccumulator::new();
        // 2^63 + 2^62 + 2^62 = 2^64: wrapping would give 0.
        for n in [1 << 63, 1 << 62, 1 << 62] {
            acc.record_stored(n);
        }
        acc.record_evicted(u64::MAX);
        acc.record_evicted(1);
        ManagerStatsSink::record_lookup(&acc, u64::MAX, u64::MAX, 16);
        ManagerStatsSink::record_lookup(&acc, 2, 1, 16);
        for _ in 0..2 {
            acc.record_transfer_ns(Direction::GpuToCpu, u64::MAX, u64::MAX, 1 << 63, true);
            // 2^50 bytes in 1 ns: a throughput beyond u64, itself saturated.
            acc.record_transfer_ns(Direction::GpuToCpu, 1 << 50, 0, 1, true);
            acc.record_transfer_ns(Direction::GpuToCpu, u64::MAX, 0, 0, false);
        }
        let s = acc.take();
        assert_eq!(s.manager.blocks_stored, u64::MAX);
        assert_eq!(s.manager.blocks_evicted, u64::MAX);
        assert_eq!(s.lookups.blocks_queried, u64::MAX);
        assert_eq!(s.lookups.tokens_hit, u64::MAX);
        let d = s.direction(Direction::GpuToCpu);
        assert_eq!(
            (d.ops, d.blocks, d.bytes, d.time_ns, d.throughput_sum),
            (4, u64::MAX, u64::MAX, u64::MAX, u64::MAX)
        );
        assert_eq!((d.failed_ops, d.failed_bytes), (2, u64::MAX));
        // A saturated interval does not leak into the next one.
        acc.record_stored(3);
        assert_eq!(acc.take().manager.blocks_stored, 3);
    }

    #[test]
    fn threads_pushing_a_counter_past_u64_leave_it_saturated() {
        let acc = Arc::new(StatsAccumulator::new());
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let acc = Arc::clone(&acc);
                thread::spawn(move || {
                    for i in 0..2_000 {
                        // Far more than 2^64 in all: the counter wraps many times over.
                        acc.record_evicted((1 << 61) + t * 7 + i);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer thread");
        }
        assert_eq!(acc.take().manager.blocks_evicted, u64::MAX);
    }

    #[test]
    fn absurd_transfers_are_refused_and_record_nothing() {
        let acc = StatsAccumulator::new();
        let err = |r: Result<()>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let e = err(acc.record_transfer(Direction::GpuToCpu, 1, 1, 1e12, true));
        assert_eq!(
            e,
            "transfer time must be at most 86400 seconds (one day) for one transfer, got 1000000000000"
        );
        let e = err(acc.record_transfer(Direction::CpuToGpu, MAX_TRANSFER_BYTES + 1, 1, 0.1, true));
        assert_eq!(
            e,
            "num_bytes must be at most 2^50 (1 PiB) for one transfer, got 1125899906842625"
        );
        let e = err(acc.record_transfer(Direction::CpuToGpu, u64::MAX, 1, 0.1, false));
        assert!(e.contains("got 18446744073709551615"), "{e}");
        assert!(acc.take().is_empty());
        // The bounds themselves are accepted.
        acc.record_transfer(
            Direction::GpuToCpu,
            MAX_TRANSFER_BYTES,
            1,
            MAX_TRANSFER_SECONDS,
            true,
        )
        .expect("on the bounds");
        let s = acc.take();
        let d = s.direction(Direction::GpuToCpu);
        assert_eq!((d.bytes, d.time_ns), (1 << 50, 86_400_000_000_000));
    }

    #[test]
    fn occupancy_must_nest() {
        let acc = StatsAccumulator::new();
        acc.set_occupancy_checked(10, 5, 5).expect("valid");
        for (c, r, p) in [(1, 5, 9), (1, 2, 0), (10, 5, 6)] {
            let e = acc
                .set_occupancy_checked(c, r, p)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(
                e,
                format!(
                    "occupancy must satisfy pinned <= resident <= capacity, got capacity {c}, \
                     resident {r}, pinned {p}"
                )
            );
        }
        let m = acc.take().manager;
        assert_eq!(
            (m.capacity_blocks, m.resident_blocks, m.pinned_blocks),
            (10, 5, 5)
        );
    }

    #[test]
    fn racing_takes_lose_and_duplicate_nothing() {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 20_000;
        let acc = Arc::new(StatsAccumulator::new());
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let acc = Arc::clone(&acc);
                thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        let bytes = (i % 7) * 1_000_003 + t;
                        acc.record_transfer_ns(Direction::ALL[(i % 2) as usize], bytes, 2, i, true);
                        ManagerStatsSink::record_lookup(&*acc, 3, 1, 16);
                    }
                })
            })
            .collect();
        let mut total = StatsSnapshot::default();
        while writers.iter().any(|w| !w.is_finished()) {
            let s = acc.take();
            // Each record is whole: blocks are always twice the ops, hits a third of queries.
            for d in &s.transfers {
                assert_eq!(d.blocks, 2 * d.ops);
                assert_eq!(d.size_counts.iter().sum::<u64>(), d.ops);
            }
            assert_eq!(s.lookups.blocks_queried, 3 * s.lookups.blocks_hit);
            total.aggregate(&s).expect("no overflow");
        }
        for w in writers {
            w.join().expect("writer thread");
        }
        total.aggregate(&acc.take()).expect("no overflow");

        let expected = StatsAccumulator::new();
        for t in 0..THREADS {
            for i in 0..PER_THREAD {
                let bytes = (i % 7) * 1_000_003 + t;
                expected.record_transfer_ns(Direction::ALL[(i % 2) as usize], bytes, 2, i, true);
                ManagerStatsSink::record_lookup(&expected, 3, 1, 16);
            }
        }
        assert_eq!(total, expected.take());
    }
}
