//! Property tests: the manager's invariants hold over long random call sequences, for both
//! policies, whatever mix of valid and invalid calls it receives.

use std::collections::HashSet;
use std::num::{NonZeroU32, NonZeroU64};

use kvoff_core::{BlockKey, BlockKeyRef, OffloadingManager, PolicyKind};
use proptest::prelude::*;

const KEY_SPACE: i128 = 24;

#[derive(Debug, Clone)]
enum Op {
    Lookup(Vec<i128>),
    PrepareLoad(Vec<i128>),
    CompleteLoad(Vec<i128>),
    Touch(Vec<i128>),
    PrepareStore(Vec<i128>),
    CompleteStore(Vec<i128>, bool),
    /// Set the usable limit to this many blocks (refused when it shrinks or passes the
    /// capacity).
    SetUsable(u64),
}

fn key_list() -> impl Strategy<Value = Vec<i128>> {
    prop::collection::vec(0..KEY_SPACE, 0..6)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => key_list().prop_map(Op::Lookup),
        1 => key_list().prop_map(Op::PrepareLoad),
        1 => key_list().prop_map(Op::CompleteLoad),
        1 => key_list().prop_map(Op::Touch),
        3 => key_list().prop_map(Op::PrepareStore),
        3 => (key_list(), any::<bool>()).prop_map(|(k, s)| Op::CompleteStore(k, s)),
        1 => (0u64..12).prop_map(Op::SetUsable),
    ]
}

/// Keys below this are ints; the rest are byte strings of growing length, some stored inline
/// in the index (up to 32 bytes) and some on the heap.
const FIRST_BYTES_KEY: i128 = 12;

static BYTE_KEYS: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
    (FIRST_BYTES_KEY..KEY_SPACE)
        .map(|x| vec![x as u8; (x as usize - 12) * 7])
        .collect()
});

fn key(x: i128) -> BlockKeyRef<'static> {
    if x < FIRST_BYTES_KEY {
        BlockKeyRef::Int(x)
    } else {
        BlockKeyRef::Bytes(&BYTE_KEYS[(x - FIRST_BYTES_KEY) as usize])
    }
}

/// The universe index of an owned key.
fn index_of(k: &BlockKey) -> i128 {
    (0..KEY_SPACE)
        .find(|&x| key(x).matches(k))
        .expect("keys come from the universe")
}

fn refs(v: &[i128]) -> Vec<BlockKeyRef<'static>> {
    v.iter().map(|&x| key(x)).collect()
}

/// Per key (id, state), the policy's lists as text, and [free, resident, pinned].
type Observed = (Vec<Option<(u32, i32)>>, String, [u64; 3]);

/// Everything observable about the manager, over the whole key space.
fn observe(m: &OffloadingManager) -> Observed {
    let per_key = (0..KEY_SPACE)
        .map(|x| m.block_id(key(x)).zip(m.block_state(key(x))))
        .collect();
    (
        per_key,
        format!("{:?}", m.policy_state()),
        [m.free(), m.resident(), m.pinned()],
    )
}

fn check_invariants(m: &OffloadingManager) {
    let (per_key, _, [free, resident, pinned]) = observe(m);
    assert!(m.usable() <= m.capacity());
    assert_eq!(free + resident, m.usable());
    let present: Vec<(u32, i32)> = per_key.iter().flatten().copied().collect();
    assert_eq!(present.len() as u64, resident);
    let ids: HashSet<u32> = present.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids.len(), present.len(), "block ids are unique");
    assert!(
        ids.iter().all(|&id| u64::from(id) < m.usable()),
        "no id at or above the usable limit is handed out"
    );
    assert!(present.iter().all(|&(_, s)| s >= -1));
    assert_eq!(
        present.iter().filter(|&&(_, s)| s != 0).count() as u64,
        pinned
    );
    let (lists, state) = m.policy_state();
    let mut listed: Vec<BlockKey> = lists.into_iter().flat_map(|(_, v)| v).collect();
    assert_eq!(
        listed.len() as u64,
        resident,
        "every resident block is in exactly one list"
    );
    listed.sort_by_key(|k| format!("{k:?}"));
    listed.dedup();
    assert_eq!(listed.len() as u64, resident);
    for (_, ghosts) in &state.ghosts {
        assert!(
            ghosts.len() as u64 <= m.capacity(),
            "ghost lists are bounded by capacity"
        );
        for g in ghosts {
            assert!(
                m.block_id(g.as_ref()).is_none(),
                "a ghost is never resident"
            );
        }
    }
    if let Some(p) = state.target {
        assert!(p <= m.capacity());
    }
}

fn run(capacity: u32, usable: u32, policy: PolicyKind, ops: &[Op]) {
    let mut m = OffloadingManager::new(
        NonZeroU32::new(capacity).expect("positive"),
        NonZeroU64::new(16).expect("positive"),
        policy,
        true,
    )
    .expect("valid manager")
    .with_usable(usable.min(capacity))
    .expect("within the capacity");
    for op in ops {
        let usable_before = m.usable();
        let before = observe(&m);
        let counters_before = m.counters();
        let failed = match op {
            Op::Lookup(v) => {
                let expect = v
                    .iter()
                    .take_while(|&&x| m.block_state(key(x)).is_some_and(|s| s >= 0))
                    .count();
                assert_eq!(m.lookup(&refs(v)), expect);
                false
            }
            Op::PrepareLoad(v) => m.prepare_load(&refs(v)).is_err(),
            Op::CompleteLoad(v) => m.complete_load(&refs(v)).is_err(),
            Op::Touch(v) => m.touch(&refs(v)).is_err(),
            Op::CompleteStore(v, ok) => m.complete_store(&refs(v), *ok).is_err(),
            Op::SetUsable(n) => {
                let refused = m.set_usable(*n).is_err();
                assert_eq!(refused, *n < usable_before || *n > m.capacity());
                assert_eq!(m.usable(), if refused { usable_before } else { *n });
                refused
            }
            Op::PrepareStore(v) => match m.prepare_store(&refs(v)) {
                Err(_) => true,
                Ok(None) => {
                    assert_eq!(
                        observe(&m),
                        before,
                        "a store that cannot fit changes nothing"
                    );
                    assert_eq!(
                        m.counters().allocation_failures,
                        counters_before.allocation_failures + 1
                    );
                    false
                }
                Ok(Some(plan)) => {
                    for k in &plan.evicted.to_vec() {
                        let x = index_of(k);
                        let (_, state) = before.0[x as usize].expect("evicted keys were resident");
                        assert_eq!(state, 0, "only unpinned ready blocks are evicted");
                        assert!(!v.contains(&x), "a call never evicts its own hashes");
                    }
                    for (&i, &id) in plan.to_store.iter().zip(&plan.block_ids) {
                        assert!(
                            before.0[v[i] as usize].is_none(),
                            "present keys are skipped"
                        );
                        assert_eq!(m.block_id(key(v[i])), Some(id));
                        assert_eq!(m.block_state(key(v[i])), Some(-1));
                    }
                    false
                }
            },
        };
        if failed {
            assert_eq!(
                observe(&m),
                before,
                "a rejected call changes nothing: {op:?}"
            );
            assert_eq!(m.counters(), counters_before);
        }
        check_invariants(&m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lru_invariants(capacity in 1u32..10, ops in prop::collection::vec(op(), 1..200)) {
        run(capacity, capacity, PolicyKind::Lru, &ops);
    }

    #[test]
    fn arc_invariants(capacity in 1u32..10, ops in prop::collection::vec(op(), 1..200)) {
        run(capacity, capacity, PolicyKind::Arc, &ops);
    }

    #[test]
    fn growing_tier_invariants(
        capacity in 1u32..10,
        usable in 0u32..10,
        arc in any::<bool>(),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let policy = if arc { PolicyKind::Arc } else { PolicyKind::Lru };
        run(capacity, usable, policy, &ops);
    }
}
