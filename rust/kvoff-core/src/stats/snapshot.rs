//! One interval's statistics as plain data: fixed-size arrays of `u64`, whatever the number of
//! transfers, so copying, aggregating and serializing it cost the same at 10 or 10^9 transfers.

use crate::direction::Direction;
use crate::error::{KvoffError, Result};
use crate::stats::histogram::{DURATION_BUCKETS, SIZE_BUCKETS, THROUGHPUT_BUCKETS};

/// Transfers in one direction. Histograms and byte / time totals count successful transfers
/// only; failures count in `failed_ops` / `failed_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionStats {
    pub ops: u64,
    pub failed_ops: u64,
    pub blocks: u64,
    pub bytes: u64,
    pub failed_bytes: u64,
    pub time_ns: u64,
    pub size_counts: [u64; SIZE_BUCKETS],
    pub duration_counts: [u64; DURATION_BUCKETS],
    /// Transfers with a zero duration have no throughput and are not counted here.
    pub throughput_counts: [u64; THROUGHPUT_BUCKETS],
    pub throughput_sum: u64,
}

impl Default for DirectionStats {
    fn default() -> Self {
        Self {
            ops: 0,
            failed_ops: 0,
            blocks: 0,
            bytes: 0,
            failed_bytes: 0,
            time_ns: 0,
            size_counts: [0; SIZE_BUCKETS],
            duration_counts: [0; DURATION_BUCKETS],
            throughput_counts: [0; THROUGHPUT_BUCKETS],
            throughput_sum: 0,
        }
    }
}

impl DirectionStats {
    /// Number of values `counters` yields.
    pub const NUM_COUNTERS: usize = 7 + SIZE_BUCKETS + DURATION_BUCKETS + THROUGHPUT_BUCKETS;

    /// Every counter, in the fixed order the binary encoding uses.
    pub fn counters(&self) -> impl Iterator<Item = &u64> {
        [
            &self.ops,
            &self.failed_ops,
            &self.blocks,
            &self.bytes,
            &self.failed_bytes,
            &self.time_ns,
            &self.throughput_sum,
        ]
        .into_iter()
        .chain(self.size_counts.iter())
        .chain(self.duration_counts.iter())
        .chain(self.throughput_counts.iter())
    }

    /// Mutable view of every counter, in the same order as `counters`.
    pub fn counters_mut(&mut self) -> impl Iterator<Item = &mut u64> {
        [
            &mut self.ops,
            &mut self.failed_ops,
            &mut self.blocks,
            &mut self.bytes,
            &mut self.failed_bytes,
            &mut self.time_ns,
            &mut self.throughput_sum,
        ]
        .into_iter()
        .chain(self.size_counts.iter_mut())
        .chain(self.duration_counts.iter_mut())
        .chain(self.throughput_counts.iter_mut())
    }

    /// Number of transfers in the throughput histogram (those with a non-zero duration). In
    /// `u128`: every count is a valid `u64` on its own, but 14 of them can sum past `u64::MAX`.
    #[must_use]
    pub fn throughput_observations(&self) -> u128 {
        self.throughput_counts.iter().map(|&c| u128::from(c)).sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupStats {
    pub blocks_queried: u64,
    pub blocks_hit: u64,
    pub tokens_queried: u64,
    pub tokens_hit: u64,
}

/// The block manager's share: interval counts, then occupancy gauges (latest values at `take`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagerStats {
    pub blocks_stored: u64,
    pub blocks_evicted: u64,
    pub allocation_failures: u64,
    pub capacity_blocks: u64,
    pub resident_blocks: u64,
    pub pinned_blocks: u64,
}

/// Everything one interval recorded (`OffloadingConnectorStats` in Python).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Indexed by [`Direction::index`].
    pub transfers: [DirectionStats; 2],
    pub lookups: LookupStats,
    pub manager: ManagerStats,
}

/// A value of `reduce()`: counts stay integers, averages and seconds are floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reduced {
    Int(u64),
    Float(f64),
}

/// Version of both the dict layout and the binary encoding.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 4] = b"KVOS";

/// `num / den` as a float, 0.0 for nothing over nothing. Both sides are rounded to `f64` first,
/// so any counts (even sums wider than `u64`) give a finite result.
fn ratio(num: impl Into<u128>, den: impl Into<u128>) -> f64 {
    let den = den.into();
    if den == 0 {
        0.0
    } else {
        num.into() as f64 / den as f64
    }
}

/// Per-direction `reduce()` keys, built at compile time so `reduce` allocates no strings.
macro_rules! direction_keys {
    ($d:literal) => {
        [
            concat!($d, "_total_bytes"),
            concat!($d, "_total_time"),
            concat!($d, "_ops"),
            concat!($d, "_failed_ops"),
            concat!($d, "_failed_bytes"),
            concat!($d, "_blocks"),
            concat!($d, "_avg_bytes"),
            concat!($d, "_avg_time"),
            concat!($d, "_avg_throughput"),
            concat!($d, "_throughput"),
        ]
    };
}

const DIRECTION_KEYS: [[&str; 10]; 2] =
    [direction_keys!("GPU_to_CPU"), direction_keys!("CPU_to_GPU")];

impl StatsSnapshot {
    /// Number of `u64` values in the snapshot (and in its binary encoding after the header).
    pub const NUM_COUNTERS: usize = 2 * DirectionStats::NUM_COUNTERS + 4 + 6;
    /// Length of `to_bytes()`: magic, version, then every counter, little-endian.
    pub const ENCODED_LEN: usize = 8 + 8 * Self::NUM_COUNTERS;

    #[must_use]
    pub fn direction(&self, d: Direction) -> &DirectionStats {
        &self.transfers[d.index()]
    }

    /// Every counter and gauge in a fixed order.
    pub fn counters(&self) -> impl Iterator<Item = &u64> {
        let l = &self.lookups;
        let m = &self.manager;
        self.transfers[0]
            .counters()
            .chain(self.transfers[1].counters())
            .chain([
                &l.blocks_queried,
                &l.blocks_hit,
                &l.tokens_queried,
                &l.tokens_hit,
            ])
            .chain([
                &m.blocks_stored,
                &m.blocks_evicted,
                &m.allocation_failures,
                &m.capacity_blocks,
                &m.resident_blocks,
                &m.pinned_blocks,
            ])
    }

    pub fn counters_mut(&mut self) -> impl Iterator<Item = &mut u64> {
        let [t0, t1] = &mut self.transfers;
        let l = &mut self.lookups;
        let m = &mut self.manager;
        t0.counters_mut()
            .chain(t1.counters_mut())
            .chain([
                &mut l.blocks_queried,
                &mut l.blocks_hit,
                &mut l.tokens_queried,
                &mut l.tokens_hit,
            ])
            .chain([
                &mut m.blocks_stored,
                &mut m.blocks_evicted,
                &mut m.allocation_failures,
                &mut m.capacity_blocks,
                &mut m.resident_blocks,
                &mut m.pinned_blocks,
            ])
    }

    /// True when nothing was recorded and every gauge is zero.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.counters().all(|&c| c == 0)
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Adds `other` into `self`, counters and gauges alike (the gauges of tensor-parallel
    /// workers and the scheduler describe disjoint things, so their sum is the total).
    /// On overflow nothing changes.
    pub fn aggregate(&mut self, other: &StatsSnapshot) -> Result<()> {
        let mut sum = self.clone();
        for (i, (a, b)) in sum.counters_mut().zip(other.counters()).enumerate() {
            *a = a.checked_add(*b).ok_or_else(|| {
                KvoffError::InvalidArgument(format!(
                    "aggregating stats overflows counter #{i} ({} + {b} > 2^64 - 1)",
                    *a
                ))
            })?;
        }
        *self = sum;
        Ok(())
    }

    /// Adds the interval `other` into the cumulative totals `self`: counters add, saturating at
    /// `2^64 - 1` (read a saturated total as "at least"), and the gauges take `other`'s values
    /// (the latest occupancy, not a sum). Never fails: the exporter's totals grow for as long as
    /// it runs, and a refusal there would drop every later interval of that engine.
    pub fn accumulate(&mut self, other: &StatsSnapshot) {
        for (a, b) in self.counters_mut().zip(other.counters()) {
            *a = a.saturating_add(*b);
        }
        self.copy_gauges(other);
    }

    /// Sets every gauge to `other`'s value.
    fn copy_gauges(&mut self, other: &StatsSnapshot) {
        let (m, o) = (&mut self.manager, &other.manager);
        m.capacity_blocks = o.capacity_blocks;
        m.resident_blocks = o.resident_blocks;
        m.pinned_blocks = o.pinned_blocks;
    }

    /// The summary the log line and dashboards want. Keys: `<dir>_total_bytes`,
    /// `<dir>_total_time` (seconds), `<dir>_ops`, `<dir>_failed_ops`, `<dir>_failed_bytes`,
    /// `<dir>_blocks`, `<dir>_avg_bytes`, `<dir>_avg_time` (seconds per op),
    /// `<dir>_avg_throughput` (mean of per-transfer bytes/s), `<dir>_throughput`
    /// (total bytes / total time), then lookups, hit rates and the manager's values.
    /// Averages of nothing are 0.0.
    #[must_use]
    pub fn reduce(&self) -> Vec<(&'static str, Reduced)> {
        use Reduced::{Float, Int};
        let mut out = Vec::with_capacity(2 * 10 + 6 + 6);
        for d in Direction::ALL {
            let s = self.direction(d);
            let k = &DIRECTION_KEYS[d.index()];
            let seconds = s.time_ns as f64 / 1e9;
            out.extend([
                (k[0], Int(s.bytes)),
                (k[1], Float(seconds)),
                (k[2], Int(s.ops)),
                (k[3], Int(s.failed_ops)),
                (k[4], Int(s.failed_bytes)),
                (k[5], Int(s.blocks)),
                (k[6], Float(ratio(s.bytes, s.ops))),
                (k[7], Float(ratio(s.time_ns, s.ops) / 1e9)),
                (
                    k[8],
                    Float(ratio(s.throughput_sum, s.throughput_observations())),
                ),
                (k[9], Float(ratio(s.bytes, s.time_ns) * 1e9)),
            ]);
        }
        let l = &self.lookups;
        let m = &self.manager;
        out.extend([
            ("blocks_queried", Int(l.blocks_queried)),
            ("blocks_hit", Int(l.blocks_hit)),
            ("hit_rate", Float(ratio(l.blocks_hit, l.blocks_queried))),
            ("tokens_queried", Int(l.tokens_queried)),
            ("tokens_hit", Int(l.tokens_hit)),
            (
                "token_hit_rate",
                Float(ratio(l.tokens_hit, l.tokens_queried)),
            ),
            ("blocks_stored", Int(m.blocks_stored)),
            ("blocks_evicted", Int(m.blocks_evicted)),
            ("allocation_failures", Int(m.allocation_failures)),
            ("capacity_blocks", Int(m.capacity_blocks)),
            ("resident_blocks", Int(m.resident_blocks)),
            ("pinned_blocks", Int(m.pinned_blocks)),
        ]);
        out
    }

    /// Fixed-length binary form (what pickle carries): `b"KVOS"`, the format version as `u32`
    /// LE, then every counter as `u64` LE. Same length for every snapshot.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for c in self.counters() {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: String| KvoffError::InvalidArgument(format!("stats bytes: {why}"));
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(bad(
                "not a kvoff stats encoding (missing b\"KVOS\" header)".into()
            ));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[4..8]);
        let version = u32::from_le_bytes(version);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
            )));
        }
        if bytes.len() != Self::ENCODED_LEN {
            return Err(bad(format!(
                "expected {} bytes for version {FORMAT_VERSION}, got {}",
                Self::ENCODED_LEN,
                bytes.len()
            )));
        }
        let mut snap = Self::default();
        for (c, chunk) in snap.counters_mut().zip(bytes[8..].chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *c = u64::from_le_bytes(word);
        }
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for (i, c) in s.counters_mut().enumerate() {
            *c = i as u64 * 3 + 1;
        }
        s
    }

    #[test]
    fn counter_counts_agree() {
        let s = StatsSnapshot::default();
        assert_eq!(s.counters().count(), StatsSnapshot::NUM_COUNTERS);
        assert_eq!(
            s.transfers[0].counters().count(),
            DirectionStats::NUM_COUNTERS
        );
    }

    #[test]
    fn bytes_round_trip_and_have_fixed_length() {
        let s = sample();
        let b = s.to_bytes();
        assert_eq!(b.len(), StatsSnapshot::ENCODED_LEN);
        assert_eq!(StatsSnapshot::default().to_bytes().len(), b.len());
        assert_eq!(StatsSnapshot::from_bytes(&b), Ok(s));
    }

    #[test]
    fn from_bytes_rejects_bad_input() {
        let b = sample().to_bytes();
        let msg = |r: Result<StatsSnapshot>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(StatsSnapshot::from_bytes(&b[..b.len() - 1])).contains("expected"));
        assert!(msg(StatsSnapshot::from_bytes(b"nope")).contains("header"));
        let mut v2 = b.clone();
        v2[4] = 2;
        assert!(msg(StatsSnapshot::from_bytes(&v2)).contains("version 2"));
    }

    #[test]
    fn aggregate_adds_everything_and_overflow_changes_nothing() {
        let a = sample();
        let mut b = sample();
        b.aggregate(&a).expect("no overflow");
        for (x, y) in b.counters().zip(a.counters()) {
            assert_eq!(*x, 2 * *y);
        }
        let mut big = StatsSnapshot::default();
        big.manager.pinned_blocks = u64::MAX;
        let before = b.clone();
        let err = b
            .aggregate(&big)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("overflows"), "{err}");
        assert_eq!(b, before);
    }

    #[test]
    fn accumulate_adds_counters_saturating_and_replaces_gauges() {
        let mut total = sample();
        let mut interval = sample();
        interval.manager.capacity_blocks = 7;
        interval.manager.resident_blocks = 5;
        interval.manager.pinned_blocks = 0;
        interval.lookups.blocks_hit = u64::MAX;
        let before = total.clone();
        total.accumulate(&interval);
        let d = total.direction(Direction::CpuToGpu);
        let b = before.direction(Direction::CpuToGpu);
        assert_eq!(d.ops, 2 * b.ops);
        assert_eq!(d.size_counts[3], 2 * b.size_counts[3]);
        assert_eq!(
            total.lookups.blocks_queried,
            2 * before.lookups.blocks_queried
        );
        assert_eq!(total.lookups.blocks_hit, u64::MAX, "saturates, never wraps");
        assert_eq!(
            total.manager.blocks_stored,
            2 * before.manager.blocks_stored
        );
        let m = &total.manager;
        assert_eq!(
            (m.capacity_blocks, m.resident_blocks, m.pinned_blocks),
            (7, 5, 0)
        );
    }

    #[test]
    fn empty_and_reset() {
        let mut s = sample();
        assert!(!s.is_empty());
        s.reset();
        assert!(s.is_empty());
        s.manager.capacity_blocks = 1;
        assert!(!s.is_empty());
    }

    fn reduced(s: &StatsSnapshot, key: &str) -> Reduced {
        s.reduce()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map_or_else(|| panic!("no key {key}"), |(_, v)| v)
    }

    #[test]
    fn reduce_survives_histogram_counts_whose_sum_passes_u64() {
        // Each count is a valid u64 alone; their sum needs 68 bits.
        let mut s = StatsSnapshot::default();
        let d = &mut s.transfers[Direction::CpuToGpu.index()];
        d.throughput_counts = [u64::MAX; THROUGHPUT_BUCKETS];
        d.size_counts = [u64::MAX; SIZE_BUCKETS];
        d.duration_counts = [u64::MAX; DURATION_BUCKETS];
        d.throughput_sum = u64::MAX;
        assert_eq!(
            d.throughput_observations(),
            14 * u128::from(u64::MAX),
            "the sum is exact in u128"
        );
        // (2^64 - 1) / (14 * (2^64 - 1)), each side rounded to f64 first: exactly 1/14.
        assert_eq!(
            reduced(&s, "CPU_to_GPU_avg_throughput"),
            Reduced::Float(1.0 / 14.0)
        );
        for (k, v) in s.reduce() {
            if let Reduced::Float(f) = v {
                assert!(f.is_finite() && f >= 0.0, "{k} = {f}");
            }
        }
    }

    #[test]
    fn reduce_of_nothing_is_zero_not_nan() {
        let r = StatsSnapshot::default().reduce();
        assert_eq!(r.len(), 32);
        for (k, v) in r {
            match v {
                Reduced::Int(i) => assert_eq!(i, 0, "{k}"),
                Reduced::Float(f) => assert!(f == 0.0, "{k}"),
            }
        }
    }
}
