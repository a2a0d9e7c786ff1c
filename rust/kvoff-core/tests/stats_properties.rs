//! Property tests of the stats invariants: takes never lose or duplicate a record, and the
//! snapshot survives both of its encodings unchanged.

use kvoff_core::stats::histogram::{
    duration_bucket, size_bucket, throughput_bps, throughput_bucket,
};
use kvoff_core::stats::{Reduced, StatsAccumulator, StatsSnapshot};
use kvoff_core::{Direction, ManagerStatsSink};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Transfer {
        dir: bool,
        bytes: u64,
        blocks: u64,
        ns: u64,
        success: bool,
    },
    Lookup {
        queried: u64,
        hit: u64,
        tokens_per_block: u64,
    },
    Stored(u64),
    Evicted(u64),
    AllocationFailure,
    Occupancy(u64, u64, u64),
    Take,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u64..10_000_000_000, 0u64..1_000, 0u64..20_000_000_000, any::<bool>())
            .prop_map(|(dir, bytes, blocks, ns, success)| Op::Transfer { dir, bytes, blocks, ns, success }),
        2 => (0u64..1_000, 0u64..1_000, 1u64..64).prop_map(|(q, h, t)| Op::Lookup {
            queried: q.max(h),
            hit: q.min(h),
            tokens_per_block: t
        }),
        1 => (0u64..100).prop_map(Op::Stored),
        1 => (0u64..100).prop_map(Op::Evicted),
        1 => Just(Op::AllocationFailure),
        1 => (0u64..1_000, 0u64..1_000, 0u64..1_000).prop_map(|(a, b, c)| Op::Occupancy(a, b, c)),
        2 => Just(Op::Take),
    ]
}

fn direction(dir: bool) -> Direction {
    if dir {
        Direction::GpuToCpu
    } else {
        Direction::CpuToGpu
    }
}

/// What the whole sequence should add up to, built field by field without the accumulator.
fn model(ops: &[Op]) -> StatsSnapshot {
    let mut s = StatsSnapshot::default();
    for op in ops {
        match *op {
            Op::Transfer {
                dir,
                bytes,
                blocks,
                ns,
                success,
            } => {
                let d = &mut s.transfers[direction(dir).index()];
                if success {
                    d.ops += 1;
                    d.blocks += blocks;
                    d.bytes += bytes;
                    d.time_ns += ns;
                    d.size_counts[size_bucket(bytes)] += 1;
                    d.duration_counts[duration_bucket(ns)] += 1;
                    if ns > 0 {
                        d.throughput_counts[throughput_bucket(bytes, ns).expect("ns > 0")] += 1;
                        d.throughput_sum += throughput_bps(bytes, ns).expect("ns > 0");
                    }
                } else {
                    d.failed_ops += 1;
                    d.failed_bytes += bytes;
                }
            }
            Op::Lookup {
                queried,
                hit,
                tokens_per_block,
            } => {
                s.lookups.blocks_queried += queried;
                s.lookups.blocks_hit += hit;
                s.lookups.tokens_queried += queried * tokens_per_block;
                s.lookups.tokens_hit += hit * tokens_per_block;
            }
            Op::Stored(n) => s.manager.blocks_stored += n,
            Op::Evicted(n) => s.manager.blocks_evicted += n,
            Op::AllocationFailure => s.manager.allocation_failures += 1,
            Op::Occupancy(..) | Op::Take => {}
        }
    }
    s
}

fn any_snapshot() -> impl Strategy<Value = StatsSnapshot> {
    proptest::collection::vec(
        prop_oneof![
            any::<u64>(),
            0u64..(1 << 62),
            Just(u64::MAX),
            Just(0),
            (u64::MAX - 16)..=u64::MAX
        ],
        StatsSnapshot::NUM_COUNTERS,
    )
    .prop_map(|values| {
        let mut s = StatsSnapshot::default();
        for (c, v) in s.counters_mut().zip(values) {
            *c = v;
        }
        s
    })
}

proptest! {
    #[test]
    fn takes_at_any_point_sum_to_the_whole(ops in proptest::collection::vec(op(), 0..200)) {
        let acc = StatsAccumulator::new();
        let mut total = StatsSnapshot::default();
        let mut gauges = (0, 0, 0);
        for op in &ops {
            match *op {
                Op::Transfer { dir, bytes, blocks, ns, success } => {
                    acc.record_transfer_ns(direction(dir), bytes, blocks, ns, success);
                }
                Op::Lookup { queried, hit, tokens_per_block } => {
                    ManagerStatsSink::record_lookup(&acc, queried, hit, tokens_per_block);
                }
                Op::Stored(n) => acc.record_stored(n),
                Op::Evicted(n) => acc.record_evicted(n),
                Op::AllocationFailure => acc.record_allocation_failure(),
                Op::Occupancy(c, r, p) => {
                    acc.set_occupancy(c, r, p);
                    gauges = (c, r, p);
                }
                Op::Take => {
                    let mut s = acc.take();
                    let m = &s.manager;
                    prop_assert_eq!((m.capacity_blocks, m.resident_blocks, m.pinned_blocks), gauges);
                    // Gauges are latest values, not interval counts: leave them out of the sum.
                    s.manager.capacity_blocks = 0;
                    s.manager.resident_blocks = 0;
                    s.manager.pinned_blocks = 0;
                    total.aggregate(&s).expect("no overflow");
                }
            }
        }
        let mut last = acc.take();
        last.manager.capacity_blocks = 0;
        last.manager.resident_blocks = 0;
        last.manager.pinned_blocks = 0;
        total.aggregate(&last).expect("no overflow");
        prop_assert_eq!(total, model(&ops));
    }

    /// Any snapshot the door lets in (every counter any u64) reduces without a panic: counts as
    /// they are, every statistic a finite float >= 0.
    #[test]
    fn reduce_is_total_over_every_snapshot(s in any_snapshot()) {
        let reduced = s.reduce();
        prop_assert_eq!(reduced.len(), StatsSnapshot::REDUCED_LEN);
        for (key, v) in reduced {
            match v {
                Reduced::Int(_) => {}
                Reduced::Float(f) => prop_assert!(f.is_finite() && f >= 0.0, "{} = {}", key, f),
            }
        }
        let back = StatsSnapshot::from_bytes(&s.to_bytes());
        prop_assert_eq!(back.map(|b| b.reduce()), Ok(s.reduce()));
    }

    #[test]
    fn plain_value_round_trips(s in any_snapshot()) {
        prop_assert_eq!(StatsSnapshot::from_value(&s.to_value()), Ok(s.clone()));
    }

    #[test]
    fn bytes_round_trip_at_fixed_length(s in any_snapshot()) {
        let b = s.to_bytes();
        prop_assert_eq!(b.len(), StatsSnapshot::ENCODED_LEN);
        prop_assert_eq!(StatsSnapshot::from_bytes(&b), Ok(s));
    }

    #[test]
    fn aggregate_is_commutative_counterwise_addition(a in any_snapshot(), b in any_snapshot()) {
        let mut ab = a.clone();
        let mut ba = b.clone();
        let r1 = ab.aggregate(&b);
        let r2 = ba.aggregate(&a);
        let overflows = a.counters().zip(b.counters()).any(|(x, y)| x.checked_add(*y).is_none());
        prop_assert_eq!(r1.is_err(), overflows);
        prop_assert_eq!(r2.is_err(), overflows);
        if overflows {
            prop_assert_eq!(&ab, &a);
            prop_assert_eq!(&ba, &b);
        } else {
            prop_assert_eq!(&ab, &ba);
            for ((s, x), y) in ab.counters().zip(a.counters()).zip(b.counters()) {
                prop_assert_eq!(*s, x + y);
            }
        }
    }
}
