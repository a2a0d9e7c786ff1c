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

/// Blocks and tokens served to requests, by the tier that held them when the connector reported
/// the hit to the engine: each served block counts once, in exactly one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HitStats {
    pub cpu_blocks: u64,
    pub cpu_tokens: u64,
    pub remote_blocks: u64,
    pub remote_tokens: u64,
}

/// Why a remote-tier operation or value failed: the network or the server (`Connection` ..
/// `Server`), or a value that failed its check (`Truncated`, `Foreign`, `Corrupt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteErrorKind {
    Connection,
    Timeout,
    Auth,
    Oom,
    Server,
    Truncated,
    Foreign,
    Corrupt,
}

impl RemoteErrorKind {
    pub const ALL: [RemoteErrorKind; 8] = [
        RemoteErrorKind::Connection,
        RemoteErrorKind::Timeout,
        RemoteErrorKind::Auth,
        RemoteErrorKind::Oom,
        RemoteErrorKind::Server,
        RemoteErrorKind::Truncated,
        RemoteErrorKind::Foreign,
        RemoteErrorKind::Corrupt,
    ];

    /// The names of [`RemoteErrorKind::ALL`], in order.
    pub const ALL_NAMES: [&'static str; 8] = [
        "connection",
        "timeout",
        "auth",
        "oom",
        "server",
        "truncated",
        "foreign",
        "corrupt",
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RemoteErrorKind::Connection => "connection",
            RemoteErrorKind::Timeout => "timeout",
            RemoteErrorKind::Auth => "auth",
            RemoteErrorKind::Oom => "oom",
            RemoteErrorKind::Server => "server",
            RemoteErrorKind::Truncated => "truncated",
            RemoteErrorKind::Foreign => "foreign",
            RemoteErrorKind::Corrupt => "corrupt",
        }
    }

    /// Position in [`RemoteErrorKind::ALL`] (and in `RemoteTierStats::errors`).
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for RemoteErrorKind {
    type Err = KvoffError;

    fn from_str(s: &str) -> Result<Self> {
        RemoteErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let kinds = RemoteErrorKind::ALL.map(|k| format!("{:?}", k.as_str()));
                KvoffError::InvalidArgument(format!(
                    "unknown remote error kind {s:?}: expected one of {}",
                    kinds.join(", ")
                ))
            })
    }
}

/// The remote tier's own counters beyond its two transfer directions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteTierStats {
    /// Blocks the remote tier was asked about, and those it held (the leading run).
    pub lookup_blocks_queried: u64,
    pub lookup_blocks_hit: u64,
    /// Indexed by [`RemoteErrorKind::index`].
    pub errors: [u64; 8],
    /// Pending writes pushed out of a full write-behind queue.
    pub writes_dropped: u64,
    /// Gauge: blocks waiting in the write-behind queue.
    pub write_queue_blocks: u64,
}

/// Everything one interval recorded (`OffloadingConnectorStats` in Python).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Indexed by [`Direction::index`].
    pub transfers: [DirectionStats; 4],
    pub lookups: LookupStats,
    pub manager: ManagerStats,
    pub hits: HitStats,
    pub remote: RemoteTierStats,
}

/// A value of `reduce()`: counts stay integers, averages and seconds are floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reduced {
    Int(u64),
    Float(f64),
}

/// Version of both the dict layout and the binary encoding this build writes. Version 1 (the
/// GPU directions, lookups and manager only) is still read: its missing parts are zero.
pub const FORMAT_VERSION: u32 = 2;
/// The first version, still accepted by `from_bytes` and `from_value`.
pub const FORMAT_VERSION_1: u32 = 1;
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

const DIRECTION_KEYS: [[&str; 10]; 4] = [
    direction_keys!("GPU_to_CPU"),
    direction_keys!("CPU_to_GPU"),
    direction_keys!("CPU_to_REMOTE"),
    direction_keys!("REMOTE_to_CPU"),
];

const REMOTE_ERROR_KEYS: [&str; 8] = [
    "remote_errors_connection",
    "remote_errors_timeout",
    "remote_errors_auth",
    "remote_errors_oom",
    "remote_errors_server",
    "remote_errors_truncated",
    "remote_errors_foreign",
    "remote_errors_corrupt",
];

impl StatsSnapshot {
    /// Number of `u64` values in a version-1 snapshot: the GPU directions, lookups, manager.
    /// They come first in `counters()`, so a version-1 encoding is a prefix of a version-2 one.
    pub const NUM_COUNTERS_V1: usize = 2 * DirectionStats::NUM_COUNTERS + 4 + 6;
    /// Number of `u64` values in the snapshot (and in its binary encoding after the header).
    pub const NUM_COUNTERS: usize =
        Self::NUM_COUNTERS_V1 + 2 * DirectionStats::NUM_COUNTERS + 4 + 12;
    /// Length of `to_bytes()`: magic, version, then every counter, little-endian.
    pub const ENCODED_LEN: usize = 8 + 8 * Self::NUM_COUNTERS;
    /// Length of a version-1 encoding.
    pub const ENCODED_LEN_V1: usize = 8 + 8 * Self::NUM_COUNTERS_V1;

    #[must_use]
    pub fn direction(&self, d: Direction) -> &DirectionStats {
        &self.transfers[d.index()]
    }

    /// Every counter and gauge in a fixed order: the version-1 values first (GPU directions,
    /// lookups, manager), then the remote directions, hits and the remote tier's counters.
    pub fn counters(&self) -> impl Iterator<Item = &u64> {
        let l = &self.lookups;
        let m = &self.manager;
        let h = &self.hits;
        let r = &self.remote;
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
            .chain(self.transfers[2].counters())
            .chain(self.transfers[3].counters())
            .chain([
                &h.cpu_blocks,
                &h.cpu_tokens,
                &h.remote_blocks,
                &h.remote_tokens,
            ])
            .chain([&r.lookup_blocks_queried, &r.lookup_blocks_hit])
            .chain(r.errors.iter())
            .chain([&r.writes_dropped, &r.write_queue_blocks])
    }

    pub fn counters_mut(&mut self) -> impl Iterator<Item = &mut u64> {
        let [t0, t1, t2, t3] = &mut self.transfers;
        let l = &mut self.lookups;
        let m = &mut self.manager;
        let h = &mut self.hits;
        let r = &mut self.remote;
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
            .chain(t2.counters_mut())
            .chain(t3.counters_mut())
            .chain([
                &mut h.cpu_blocks,
                &mut h.cpu_tokens,
                &mut h.remote_blocks,
                &mut h.remote_tokens,
            ])
            .chain([&mut r.lookup_blocks_queried, &mut r.lookup_blocks_hit])
            .chain(r.errors.iter_mut())
            .chain([&mut r.writes_dropped, &mut r.write_queue_blocks])
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
        self.remote.write_queue_blocks = other.remote.write_queue_blocks;
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
        let mut out = Vec::with_capacity(Self::REDUCED_LEN);
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
        let h = &self.hits;
        let r = &self.remote;
        out.extend([
            ("cpu_hit_blocks", Int(h.cpu_blocks)),
            ("cpu_hit_tokens", Int(h.cpu_tokens)),
            ("remote_hit_blocks", Int(h.remote_blocks)),
            ("remote_hit_tokens", Int(h.remote_tokens)),
            ("remote_lookup_blocks_queried", Int(r.lookup_blocks_queried)),
            ("remote_lookup_blocks_hit", Int(r.lookup_blocks_hit)),
            (
                "remote_lookup_hit_rate",
                Float(ratio(r.lookup_blocks_hit, r.lookup_blocks_queried)),
            ),
        ]);
        out.extend(REMOTE_ERROR_KEYS.into_iter().zip(r.errors.map(Int)));
        out.extend([
            ("remote_writes_dropped", Int(r.writes_dropped)),
            ("remote_write_queue_blocks", Int(r.write_queue_blocks)),
        ]);
        out
    }

    /// Number of `reduce()` entries.
    pub const REDUCED_LEN: usize = 4 * 10 + 6 + 6 + 7 + 8 + 2;

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
        let expected = match version {
            FORMAT_VERSION => Self::ENCODED_LEN,
            FORMAT_VERSION_1 => Self::ENCODED_LEN_V1,
            _ => {
                return Err(bad(format!(
                    "unsupported format version {version} (this build reads versions \
                     {FORMAT_VERSION_1} and {FORMAT_VERSION})"
                )))
            }
        };
        if bytes.len() != expected {
            return Err(bad(format!(
                "expected {expected} bytes for version {version}, got {}",
                bytes.len()
            )));
        }
        // A version-1 encoding fills the prefix; the rest stays zero.
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
        let mut v3 = b.clone();
        v3[4] = 3;
        assert!(msg(StatsSnapshot::from_bytes(&v3)).contains("version 3"));
        let mut v1 = b.clone();
        v1[4] = 1;
        assert_eq!(
            msg(StatsSnapshot::from_bytes(&v1)),
            "stats bytes: expected 1016 bytes for version 1, got 2072"
        );
    }

    #[test]
    fn a_version_1_encoding_reads_as_its_prefix_with_the_rest_zero() {
        let s = sample();
        let mut v1 = s.to_bytes()[..StatsSnapshot::ENCODED_LEN_V1].to_vec();
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(StatsSnapshot::ENCODED_LEN_V1, 1016);
        let read = StatsSnapshot::from_bytes(&v1).expect("version 1 is read");
        let mut expected = s.clone();
        expected.transfers[2] = DirectionStats::default();
        expected.transfers[3] = DirectionStats::default();
        expected.hits = HitStats::default();
        expected.remote = RemoteTierStats::default();
        assert_eq!(read, expected);
    }

    #[test]
    fn remote_error_kinds_parse_by_name() {
        for (i, k) in RemoteErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(k.as_str().parse::<RemoteErrorKind>().ok(), Some(k));
            assert_eq!(k.index(), i);
            assert_eq!(
                REMOTE_ERROR_KEYS[i],
                format!("remote_errors_{}", k.as_str())
            );
        }
        let e = "eof"
            .parse::<RemoteErrorKind>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "unknown remote error kind \"eof\": expected one of \"connection\", \"timeout\", \
                 \"auth\", \"oom\", \"server\", \"truncated\", \"foreign\", \"corrupt\""
            )
        );
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
        interval.remote.write_queue_blocks = 3;
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
        assert_eq!(total.remote.write_queue_blocks, 3);
        assert_eq!(
            total.remote.writes_dropped,
            2 * before.remote.writes_dropped
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
        assert_eq!(r.len(), StatsSnapshot::REDUCED_LEN);
        assert_eq!(r.len(), 69);
        for (k, v) in r {
            match v {
                Reduced::Int(i) => assert_eq!(i, 0, "{k}"),
                Reduced::Float(f) => assert!(f == 0.0, "{k}"),
            }
        }
    }
}
