//! Fixed histogram bucket bounds (docs/ARCHITECTURE.md, "Bucket bounds") and the functions that
//! place one observation. Every bound is compared in integers (bytes, nanoseconds, or the exact
//! rational bytes / duration), so `le` placement never depends on floating-point rounding.

/// Upper bounds of the transfer-size buckets, in bytes. A superset of the `vllm:kv_offload_size`
/// buckets (1e6 .. 2e8), so the vLLM-compatible histogram is an exact merge of ours.
pub const SIZE_BOUNDS_BYTES: [u64; 17] = [
    4_096,
    16_384,
    65_536,
    262_144,
    1_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    40_000_000,
    60_000_000,
    80_000_000,
    100_000_000,
    150_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    4_000_000_000,
];

/// Upper bounds of the duration buckets in seconds, as written in the format.
pub const DURATION_BOUNDS_SECONDS: [f64; 18] = [
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds (every one is a whole number of them), used for placement.
pub const DURATION_BOUNDS_NS: [u64; 18] = [
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of the throughput buckets, in bytes per second.
pub const THROUGHPUT_BOUNDS_BPS: [u64; 13] = [
    100_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    20_000_000_000,
    30_000_000_000,
    40_000_000_000,
    50_000_000_000,
    60_000_000_000,
    80_000_000_000,
    100_000_000_000,
];

/// Counts per histogram: one per bound plus the implicit `+Inf` bucket.
pub const SIZE_BUCKETS: usize = SIZE_BOUNDS_BYTES.len() + 1;
pub const DURATION_BUCKETS: usize = DURATION_BOUNDS_NS.len() + 1;
pub const THROUGHPUT_BUCKETS: usize = THROUGHPUT_BOUNDS_BPS.len() + 1;

const NS_PER_SECOND: u128 = 1_000_000_000;

/// Index of the first bound `>= value` (Prometheus `le`), or `bounds.len()` for `+Inf`.
fn le_index(bounds: &[u64], value: u64) -> usize {
    bounds.partition_point(|&bound| bound < value)
}

#[must_use]
pub fn size_bucket(bytes: u64) -> usize {
    le_index(&SIZE_BOUNDS_BYTES, bytes)
}

#[must_use]
pub fn duration_bucket(ns: u64) -> usize {
    le_index(&DURATION_BOUNDS_NS, ns)
}

/// Bucket of the throughput `bytes / (ns * 1e-9)`, decided exactly: `bytes * 1e9 <= bound * ns`.
/// `None` for a zero duration, whose throughput is undefined (it is left out of the histogram).
#[must_use]
pub fn throughput_bucket(bytes: u64, ns: u64) -> Option<usize> {
    if ns == 0 {
        return None;
    }
    let scaled = u128::from(bytes) * NS_PER_SECOND;
    let ns = u128::from(ns);
    Some(THROUGHPUT_BOUNDS_BPS.partition_point(|&bound| u128::from(bound) * ns < scaled))
}

/// Throughput in whole bytes per second, rounded half up; `None` for a zero duration.
#[must_use]
pub fn throughput_bps(bytes: u64, ns: u64) -> Option<u64> {
    if ns == 0 {
        return None;
    }
    let ns = u128::from(ns);
    let rounded = (u128::from(bytes) * NS_PER_SECOND + ns / 2) / ns;
    Some(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// Seconds as whole nanoseconds, rounded to nearest. The caller has checked `seconds` is finite
/// and not negative; durations beyond ~584 years saturate.
#[must_use]
pub fn seconds_to_ns(seconds: f64) -> u64 {
    (seconds * 1e9).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_bounds_match_their_nanoseconds() {
        for (s, ns) in DURATION_BOUNDS_SECONDS.iter().zip(DURATION_BOUNDS_NS) {
            assert_eq!(seconds_to_ns(*s), ns);
            // Exactly the literal the format writes, bit for bit.
            assert_eq!((ns as f64 / 1e9).to_bits(), s.to_bits());
        }
    }

    #[test]
    fn bounds_are_strictly_ascending() {
        assert!(SIZE_BOUNDS_BYTES.windows(2).all(|w| w[0] < w[1]));
        assert!(DURATION_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        assert!(THROUGHPUT_BOUNDS_BPS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn size_edges_follow_le() {
        assert_eq!(size_bucket(0), 0);
        assert_eq!(size_bucket(4_096), 0);
        assert_eq!(size_bucket(4_097), 1);
        assert_eq!(size_bucket(16_384), 1);
        assert_eq!(size_bucket(1_000_000), 4);
        assert_eq!(size_bucket(1_000_001), 5);
        assert_eq!(size_bucket(4_000_000_000), 16);
        assert_eq!(size_bucket(4_000_000_001), 17);
        assert_eq!(size_bucket(u64::MAX), 17);
    }

    #[test]
    fn duration_edges_follow_le() {
        assert_eq!(duration_bucket(0), 0);
        assert_eq!(duration_bucket(seconds_to_ns(1e-5)), 0);
        assert_eq!(duration_bucket(10_001), 1);
        assert_eq!(duration_bucket(seconds_to_ns(0.25)), 12);
        assert_eq!(duration_bucket(seconds_to_ns(10.0)), 17);
        assert_eq!(duration_bucket(10_000_000_001), 18);
    }

    #[test]
    fn throughput_edges_are_exact() {
        // 1e8 B/s exactly: 100 bytes in 1 µs.
        assert_eq!(throughput_bucket(100, 1_000), Some(0));
        assert_eq!(throughput_bucket(101, 1_000), Some(1));
        // 1e9 bytes in 0.1 s = 1e10 B/s, on the bound.
        assert_eq!(throughput_bucket(1_000_000_000, 100_000_000), Some(5));
        assert_eq!(throughput_bucket(1_000_000_001, 100_000_000), Some(6));
        // 1e11 + a bit: +Inf.
        assert_eq!(throughput_bucket(100_000_000_001, 1_000_000_000), Some(13));
        assert_eq!(throughput_bucket(u64::MAX, 1), Some(13));
        assert_eq!(throughput_bucket(5, 0), None);
        assert_eq!(throughput_bucket(0, 7), Some(0));
    }

    #[test]
    fn throughput_rounds_half_up() {
        assert_eq!(throughput_bps(1, 3), Some(333_333_333));
        assert_eq!(throughput_bps(2, 3), Some(666_666_667));
        assert_eq!(throughput_bps(1_000, 1_000_000_000), Some(1_000));
        assert_eq!(throughput_bps(u64::MAX, 1), Some(u64::MAX));
        assert_eq!(throughput_bps(1, 0), None);
    }

    #[test]
    fn seconds_round_to_nearest_nanosecond() {
        assert_eq!(seconds_to_ns(0.0), 0);
        assert_eq!(seconds_to_ns(4e-10), 0);
        assert_eq!(seconds_to_ns(6e-10), 1);
        assert_eq!(seconds_to_ns(1.5), 1_500_000_000);
        assert_eq!(seconds_to_ns(1e30), u64::MAX);
    }
}
