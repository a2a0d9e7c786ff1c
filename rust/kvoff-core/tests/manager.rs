//! Scenario tests of the block manager through its public API.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::{Arc, Mutex};

use kvoff_core::{
    BlockKey, BlockKeyRef, KvoffError, ManagerEvent, ManagerStatsSink, OffloadingManager,
    PolicyKind,
};

fn k(v: i128) -> BlockKeyRef<'static> {
    BlockKeyRef::Int(v)
}

fn keys(v: &[i128]) -> Vec<BlockKeyRef<'static>> {
    v.iter().map(|&x| k(x)).collect()
}

fn owned(v: &[i128]) -> Vec<BlockKey> {
    v.iter().map(|&x| BlockKey::Int(x)).collect()
}

fn kind(policy: &str) -> PolicyKind {
    match policy {
        "lru" => PolicyKind::Lru,
        "arc" => PolicyKind::Arc,
        other => panic!("no policy {other}"),
    }
}

fn new_manager(n: u32, block_size: u64, policy: &str, events: bool) -> OffloadingManager {
    OffloadingManager::new(
        NonZeroU32::new(n).expect("positive"),
        NonZeroU64::new(block_size).expect("positive"),
        kind(policy),
        events,
    )
    .expect("valid manager")
}

fn mgr(n: u32, policy: &str) -> OffloadingManager {
    new_manager(n, 16, policy, true)
}

/// Store and complete `v` in one go, returning the ids and evicted keys.
fn store(m: &mut OffloadingManager, v: &[i128]) -> (Vec<u32>, Vec<BlockKey>) {
    let plan = m
        .prepare_store(&keys(v))
        .expect("valid call")
        .expect("room");
    m.complete_store(&keys(v), true).expect("valid call");
    (plan.block_ids, plan.evicted.to_vec())
}

type Snapshot = (String, [u64; 3], String, Vec<Option<i32>>);

fn snapshot(m: &OffloadingManager, probe: &[i128]) -> Snapshot {
    (
        format!("{:?}", m.policy_state()),
        [m.free(), m.resident(), m.pinned()],
        format!("{:?}", m.counters()),
        probe.iter().map(|&x| m.block_state(k(x))).collect(),
    )
}

#[test]
fn lru_ids_evictions_and_events() {
    let mut m = mgr(4, "lru");
    assert_eq!(store(&mut m, &[1, 2, 3]), (vec![0, 1, 2], vec![]));
    assert_eq!(m.lookup(&keys(&[1, 2, 9, 3])), 2);
    m.touch(&keys(&[1, 2])).expect("touch");
    // LRU order now 3, 2, 1 (touch runs in reverse so 1 is most recent).
    let (ids, evicted) = store(&mut m, &[4, 5, 6]);
    // Fresh 3 first, then freed ids last-in-first-out: 2's id 1 (evicted last), then 3's id 2.
    assert_eq!(ids, [3, 1, 2]);
    assert_eq!(evicted, owned(&[3, 2]));
    assert_eq!(
        m.take_events(),
        vec![
            ManagerEvent {
                block_hashes: owned(&[1, 2, 3]),
                block_size: 16,
                removed: false
            },
            ManagerEvent {
                block_hashes: owned(&[3, 2]),
                block_size: 16,
                removed: true
            },
            ManagerEvent {
                block_hashes: owned(&[4, 5, 6]),
                block_size: 16,
                removed: false
            },
        ]
    );
    assert!(m.take_events().is_empty());
    let c = m.counters();
    assert_eq!(
        [
            c.blocks_queried,
            c.blocks_hit,
            c.blocks_stored,
            c.blocks_evicted,
            c.allocation_failures
        ],
        [4, 2, 6, 2, 0]
    );
}

#[test]
fn prepare_store_never_evicts_its_own_or_pinned_blocks() {
    let mut m = mgr(3, "lru");
    store(&mut m, &[1, 2, 3]);
    assert_eq!(m.prepare_load(&keys(&[2])).expect("load"), [1]);
    // 1 is named in the call, 2 is loading, so only 3 may go: one new block fits.
    let plan = m
        .prepare_store(&keys(&[1, 10]))
        .expect("valid")
        .expect("room");
    assert_eq!(
        (plan.to_store, plan.block_ids, plan.evicted.to_vec()),
        (vec![1], vec![2], owned(&[3]))
    );
    // Now 1 is evictable, 2 is loading, 10 is storing: two new blocks cannot fit.
    let before = snapshot(&m, &[1, 2, 10, 11, 12]);
    assert_eq!(m.prepare_store(&keys(&[11, 12])).expect("valid"), None);
    let mut after = snapshot(&m, &[1, 2, 10, 11, 12]);
    assert_eq!(m.counters().allocation_failures, 1);
    after.2 = before.2.clone();
    assert_eq!(before, after);
    assert_eq!(m.block_state(k(1)), Some(0));
    assert_eq!(m.block_state(k(2)), Some(1));
    assert_eq!(m.block_state(k(10)), Some(-1));
}

#[test]
fn failed_store_frees_only_blocks_not_yet_ready() {
    for policy in ["lru", "arc"] {
        let mut m = mgr(4, policy);
        store(&mut m, &[1]);
        let plan = m
            .prepare_store(&keys(&[1, 2, 3]))
            .expect("valid")
            .expect("room");
        assert_eq!(plan.block_ids, [1, 2]);
        m.complete_store(&keys(&[1, 2, 3]), false).expect("valid");
        assert_eq!([m.free(), m.resident(), m.pinned()], [3, 1, 0]);
        assert_eq!(m.block_state(k(1)), Some(0));
        assert_eq!(m.block_state(k(2)), None);
        // Freed LIFO: 3's id 2 was freed last, so it comes back first.
        let plan = m
            .prepare_store(&keys(&[7, 8]))
            .expect("valid")
            .expect("room");
        assert_eq!(plan.block_ids, [3, 2], "{policy}");
        assert_eq!(m.take_events().len(), 1, "failed stores announce nothing");
    }
}

#[test]
fn bad_calls_change_nothing() {
    for policy in ["lru", "arc"] {
        let mut m = mgr(4, policy);
        store(&mut m, &[1, 2]);
        m.prepare_store(&keys(&[3])).expect("valid").expect("room");
        m.prepare_load(&keys(&[1])).expect("load");
        m.take_events();
        let probe = [1, 2, 3, 4];
        let before = snapshot(&m, &probe);
        let cases: Vec<(KvoffError, KvoffError)> = vec![
            (
                m.prepare_load(&keys(&[2, 4])).expect_err("unknown"),
                KvoffError::UnknownHash("4 passed to prepare_load".into()),
            ),
            (
                m.prepare_load(&keys(&[2, 3])).expect_err("not ready"),
                KvoffError::InvalidState(
                    "block hash 3 is not ready (its store is in flight): cannot prepare_load it"
                        .into(),
                ),
            ),
            (
                m.prepare_load(&keys(&[2, 2])).expect_err("dup"),
                KvoffError::InvalidArgument(
                    "duplicate block hash 2 in one prepare_load call".into(),
                ),
            ),
            (
                m.complete_load(&keys(&[1, 2])).expect_err("no load"),
                KvoffError::InvalidState(
                    "complete_load of block hash 2, which has no load in flight".into(),
                ),
            ),
            (
                m.complete_store(&keys(&[3, 4]), true)
                    .expect_err("never prepared"),
                KvoffError::UnknownHash(
                    "4 passed to complete_store (never prepared, or already gone)".into(),
                ),
            ),
            (
                m.prepare_store(&keys(&[5, 6, 5])).expect_err("dup"),
                KvoffError::InvalidArgument(
                    "duplicate block hash 5 in one prepare_store call".into(),
                ),
            ),
            (
                m.touch(&keys(&[9, 1, 9])).expect_err("dup"),
                KvoffError::InvalidArgument("duplicate block hash 9 in one touch call".into()),
            ),
            (
                m.complete_store(&keys(&[3, 3]), false).expect_err("dup"),
                KvoffError::InvalidArgument(
                    "duplicate block hash 3 in one complete_store call".into(),
                ),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want, "{policy}");
        }
        assert_eq!(before, snapshot(&m, &probe), "{policy}");
        assert!(m.take_events().is_empty());
    }
}

#[test]
fn constructor_refuses_the_id_reserved_for_no_block() {
    let err = OffloadingManager::new(NonZeroU32::MAX, NonZeroU64::MIN, PolicyKind::Lru, false)
        .expect_err("too many blocks");
    assert_eq!(
        err,
        KvoffError::InvalidArgument(format!(
            "num_blocks must be between 1 and {}, got {}",
            u32::MAX - 1,
            u32::MAX
        ))
    );
}

#[test]
fn a_tier_larger_than_physical_memory_is_refused() {
    let n = u32::MAX - 1;
    for (name, policy) in [("lru", PolicyKind::Lru), ("arc", PolicyKind::Arc)] {
        let err = OffloadingManager::new(
            NonZeroU32::new(n).expect("positive"),
            NonZeroU64::new(16).expect("positive"),
            policy,
            false,
        )
        .expect_err("too large");
        let KvoffError::OutOfMemory(msg) = err else {
            panic!("{err:?} is not OutOfMemory")
        };
        let needed = OffloadingManager::memory_needed(n, policy);
        let head = format!(
            "OffloadingManager(num_blocks={n}, policy='{name}') needs {:.2} GiB ({needed} bytes) \
             for its index and per-block state, more than this machine's ",
            needed as f64 / f64::from(1u32 << 30)
        );
        assert!(msg.starts_with(&head), "{msg}");
        assert!(msg.ends_with(" bytes) of physical memory"), "{msg}");
    }
}

#[test]
fn bytes_and_int_keys_are_distinct_and_compared_in_full() {
    let mut m = mgr(4, "lru");
    let a: Vec<BlockKeyRef<'_>> =
        vec![BlockKeyRef::Bytes(b"\x05"), BlockKeyRef::Bytes(b"\x05\x00")];
    m.prepare_store(&a).expect("valid").expect("room");
    m.complete_store(&a, true).expect("valid");
    assert_eq!(m.lookup(&[k(5)]), 0);
    assert_eq!(m.block_id(BlockKeyRef::Bytes(b"\x05\x00")), Some(1));
    assert_eq!(m.block_id(BlockKeyRef::Bytes(b"")), None);
    // Keys longer than the inline limit compare in full too.
    let long_a = [7u8; 80];
    let mut long_b = [7u8; 80];
    long_b[79] = 8;
    let long = [
        BlockKeyRef::Bytes(&long_a),
        BlockKeyRef::Bytes(&long_b[..33]),
    ];
    assert_eq!(
        m.prepare_store(&long)
            .expect("valid")
            .expect("room")
            .block_ids,
        [2, 3]
    );
    assert_eq!(m.block_id(BlockKeyRef::Bytes(&long_b)), None);
    assert_eq!(m.block_id(BlockKeyRef::Bytes(&long_b[..33])), Some(3));
    m.complete_store(&long, false).expect("valid");
    // A huge int key is fine (ids freed 2 then 3 come back last-in-first-out).
    let big = [BlockKeyRef::Int(i128::MAX), BlockKeyRef::Int(i128::MIN)];
    assert_eq!(
        m.prepare_store(&big)
            .expect("valid")
            .expect("room")
            .block_ids,
        [3, 2]
    );
}

#[test]
fn arc_promotes_adapts_and_prefers_lists() {
    let mut m = mgr(4, "arc");
    store(&mut m, &[1, 2, 3, 4]);
    m.touch(&keys(&[1, 2])).expect("touch"); // 2 then 1 move to T2
    let (lists, state) = m.policy_state();
    assert_eq!(lists, vec![("t1", owned(&[3, 4])), ("t2", owned(&[2, 1]))]);
    assert_eq!(state.target, Some(0));
    // |T1| = 2 > p = 0: evict from T1 first.
    assert_eq!(store(&mut m, &[5, 6, 7]).1, owned(&[3, 4, 2]));
    let (lists, state) = m.policy_state();
    assert_eq!(lists, vec![("t1", owned(&[5, 6, 7])), ("t2", owned(&[1]))]);
    assert_eq!(
        state.ghosts,
        vec![("b1", owned(&[3, 4])), ("b2", owned(&[2]))]
    );
    // Touching ghost 3 (in B1): p += max(1, |B2| / |B1|) = 1.
    m.touch(&keys(&[3])).expect("touch");
    assert_eq!(m.policy_state().1.target, Some(1));
    // Storing 3 again puts it straight into T2; the victim is T1's oldest (|T1| = 3 > 1).
    let (ids, evicted) = store(&mut m, &[3]);
    // 5 had id 1 (ids 1, 3, 2 went to 5, 6, 7 LIFO after evicting ids 2, 3, 1).
    assert_eq!((ids, evicted), (vec![1], owned(&[5])));
    let (lists, state) = m.policy_state();
    assert_eq!(lists, vec![("t1", owned(&[6, 7])), ("t2", owned(&[1, 3]))]);
    assert_eq!(
        state.ghosts,
        vec![("b1", owned(&[4, 5])), ("b2", owned(&[2]))]
    );
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn push(&self, s: String) {
        self.0.lock().expect("not poisoned").push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

impl ManagerStatsSink for Recorder {
    fn record_lookup(&self, q: u64, h: u64, t: u64) {
        self.push(format!("lookup {q} {h} {t}"));
    }
    fn record_stored(&self, b: u64) {
        self.push(format!("stored {b}"));
    }
    fn record_evicted(&self, b: u64) {
        self.push(format!("evicted {b}"));
    }
    fn record_allocation_failure(&self) {
        self.push("failure".into());
    }
    fn set_occupancy(&self, c: u64, r: u64, p: u64) {
        self.push(format!("occupancy {c} {r} {p}"));
    }
}

#[test]
fn reports_into_the_stats_sink() {
    let rec = Arc::new(Recorder::default());
    let mut m = new_manager(2, 32, "lru", false);
    m.set_sink(Some(rec.clone()));
    assert_eq!(rec.take(), ["occupancy 2 0 0"]);
    m.prepare_store(&keys(&[1, 2]))
        .expect("valid")
        .expect("room");
    assert_eq!(rec.take(), ["stored 2", "occupancy 2 2 2"]);
    m.complete_store(&keys(&[1, 2]), true).expect("valid");
    assert_eq!(rec.take(), ["occupancy 2 2 0"]);
    assert_eq!(m.lookup(&keys(&[1, 2, 3])), 2);
    assert_eq!(rec.take(), ["lookup 3 2 32", "occupancy 2 2 0"]);
    m.prepare_load(&keys(&[1])).expect("valid");
    assert_eq!(rec.take(), ["occupancy 2 2 1"]);
    m.prepare_store(&keys(&[3])).expect("valid").expect("room");
    assert_eq!(rec.take(), ["stored 1", "evicted 1", "occupancy 2 2 2"]);
    assert_eq!(m.prepare_store(&keys(&[4])).expect("valid"), None);
    assert_eq!(rec.take(), ["failure", "occupancy 2 2 2"]);
    m.complete_load(&keys(&[1])).expect("valid");
    m.touch(&keys(&[1])).expect("valid");
    assert_eq!(rec.take(), ["occupancy 2 2 1", "occupancy 2 2 1"]);
    // A failed call reports nothing.
    m.complete_load(&keys(&[1])).expect_err("no load in flight");
    m.prepare_load(&keys(&[9])).expect_err("unknown");
    assert!(rec.take().is_empty());
}

#[test]
fn a_growing_tier_hands_out_only_usable_ids() {
    let rec = Arc::new(Recorder::default());
    let mut m = mgr(6, "lru").with_usable(2).expect("within the capacity");
    m.set_sink(Some(rec.clone()));
    assert_eq!(rec.take(), ["occupancy 2 0 0"]);
    assert_eq!((m.capacity(), m.usable(), m.free()), (6, 2, 2));
    assert_eq!(store(&mut m, &[1, 2]), (vec![0, 1], vec![]));
    // Full at the limit: the next store evicts rather than take id 2.
    assert_eq!(store(&mut m, &[3]), (vec![0], owned(&[1])));
    m.set_usable(4).expect("grows");
    assert_eq!(
        rec.take()[..],
        [
            "stored 2",
            "occupancy 2 2 2",
            "occupancy 2 2 0",
            "stored 1",
            "evicted 1",
            "occupancy 2 2 1",
            "occupancy 2 2 0",
            "occupancy 4 2 0"
        ]
    );
    assert_eq!(m.free(), 2);
    assert_eq!(store(&mut m, &[4, 5, 6]), (vec![2, 3, 1], owned(&[2])));
    let before = snapshot(&m, &[1, 2, 3, 4, 5, 6]);
    assert_eq!(
        m.set_usable(3),
        Err(KvoffError::InvalidState(
            "usable_blocks only grows: it is 4, so 3 is refused (blocks once usable stay \
             usable, and ids at or above 3 may be in use)"
                .into()
        ))
    );
    assert_eq!(
        m.set_usable(7),
        Err(KvoffError::InvalidArgument(
            "usable_blocks must be at most the capacity, 6 blocks, got 7".into()
        ))
    );
    assert_eq!(
        m.set_usable(u64::MAX),
        Err(KvoffError::InvalidArgument(format!(
            "usable_blocks must be at most the capacity, 6 blocks, got {}",
            u64::MAX
        )))
    );
    assert_eq!((snapshot(&m, &[1, 2, 3, 4, 5, 6]), m.usable()), (before, 4));
    m.set_usable(4).expect("the same limit again");
    m.set_usable(6).expect("up to the capacity");
    assert_eq!(store(&mut m, &[7, 8]), (vec![4, 5], vec![]));
    assert!(mgr(3, "arc").with_usable(4).is_err_and(|e| e
        == KvoffError::InvalidArgument(
            "usable_blocks must be at most the capacity, 3 blocks, got 4".into()
        )));
}
