//! The rules of vLLM 0.33's CPU manager as `VllmTier` keeps them, with exact ids and keys.

use super::*;

fn key(name: &str) -> Key {
    let mut bytes = name.as_bytes().to_vec();
    bytes.extend_from_slice(&0u32.to_be_bytes());
    Key::from(bytes)
}

fn keys(names: &[&str]) -> Vec<Key> {
    names.iter().map(|n| key(n)).collect()
}

fn tier(chunks: u32, policy: VllmPolicy) -> VllmTier {
    VllmTier::new(chunks, policy, true, 0, 64_000)
}

/// Offer `names` with end-token positions 16, 32, ... by index in the call.
fn offer(t: &mut VllmTier, req: &mut RequestAccess, names: &[&str]) -> Option<StoreOutput> {
    offer_at(t, req, names, 16)
}

fn offer_at(
    t: &mut VllmTier,
    req: &mut RequestAccess,
    names: &[&str],
    first: i64,
) -> Option<StoreOutput> {
    let mut pos = |i: usize| Some(first + 16 * i as i64);
    t.prepare_store(&keys(names), req, &mut pos)
        .expect("a running request may offer keys")
}

/// Offer and complete successfully; returns the ids.
fn store(t: &mut VllmTier, req: &mut RequestAccess, names: &[&str]) -> Vec<u32> {
    let out = offer(t, req, names).expect("fits");
    t.complete_store(&out.keys(&keys(names)), true);
    out.ids
}

fn load(t: &mut VllmTier, req: &mut RequestAccess, names: &[&str]) -> Vec<u32> {
    let mut pos = |_| None;
    let ids = t
        .prepare_load(&keys(names), req, &mut pos)
        .expect("resident");
    t.complete_load(&keys(names)).expect("being loaded");
    ids
}

fn arc_lists(t: &VllmTier) -> [Vec<Key>; 4] {
    match &t.policy {
        Policy::Arc(a) => a.lists(),
        Policy::Lru(_) => panic!("not ARC"),
    }
}

#[test]
fn ids_are_fresh_in_offer_order_then_freed_ids_last_in_first_out() {
    let mut t = tier(4, VllmPolicy::Lru);
    let mut a = RequestAccess::default();
    assert_eq!(offer(&mut t, &mut a, &["a", "b"]).unwrap().ids, vec![0, 1]);
    t.complete_store(&keys(&["b"]), false); // id 1 is free again
    t.complete_store(&keys(&["a"]), true);
    // Two fresh ids first (2, 3), then the freed one.
    assert_eq!(store(&mut t, &mut a, &["c", "d", "e"]), vec![2, 3, 1]);
    // Full: the running request's tail goes first (e, then d), freeing 1 then 3; the id freed
    // last is handed out first.
    let mut b = RequestAccess::default();
    let out = offer(&mut t, &mut b, &["x", "y"]).unwrap();
    assert_eq!(out.evicted, keys(&["e", "d"]));
    assert_eq!(out.evicted_ids, vec![1, 3]);
    assert_eq!(out.ids, vec![3, 1]);
    assert_eq!(out.keys(&keys(&["x", "y"])), keys(&["x", "y"]));
}

#[test]
fn lru_running_request_loses_its_tail_first() {
    let mut t = tier(3, VllmPolicy::Lru);
    let mut a = RequestAccess::default();
    store(&mut t, &mut a, &["a0", "a1", "a2"]); // positions 16, 32, 48
    let mut b = RequestAccess::default();
    let out = offer(&mut t, &mut b, &["x"]).unwrap();
    assert_eq!(out.evicted, keys(&["a2"]));
}

#[test]
fn lru_a_finished_request_becomes_newer_than_one_still_running() {
    let mut t = tier(4, VllmPolicy::Lru);
    let (mut a, mut b) = (RequestAccess::default(), RequestAccess::default());
    store(&mut t, &mut a, &["a0", "a1"]);
    store(&mut t, &mut b, &["b0", "b1"]);
    // Running, `a` (first seen earlier) is older; its finish gives its keys fresh ranks.
    t.on_request_finished(&mut a);
    let mut c = RequestAccess::default();
    let out = offer(&mut t, &mut c, &["x", "y", "z"]).unwrap();
    // b's tail, b's head, then a's tail (a finished tail first, so its head is newest).
    assert_eq!(out.evicted, keys(&["b1", "b0", "a1"]));
}

#[test]
fn lru_keys_without_positions_take_fresh_ranks_in_offer_order() {
    let mut t = tier(2, VllmPolicy::Lru);
    let mut a = RequestAccess::default();
    let mut no_pos = |_| None;
    let out = t
        .prepare_store(&keys(&["p", "q"]), &mut a, &mut no_pos)
        .unwrap()
        .unwrap();
    t.complete_store(&out.keys(&keys(&["p", "q"])), true);
    let mut b = RequestAccess::default();
    assert_eq!(offer(&mut t, &mut b, &["x"]).unwrap().evicted, keys(&["p"]));
}

#[test]
fn prepare_store_never_evicts_an_offered_key() {
    let mut t = tier(2, VllmPolicy::Lru);
    let mut a = RequestAccess::default();
    store(&mut t, &mut a, &["a", "b"]);
    t.on_request_finished(&mut a); // finished tail first: b older than a
    let mut b = RequestAccess::default();
    // Offered without positions, b keeps its rank: the oldest, but offered, so a goes.
    let mut no_pos = |_| None;
    let out = t
        .prepare_store(&keys(&["b", "c"]), &mut b, &mut no_pos)
        .unwrap()
        .unwrap();
    assert_eq!(out.evicted, keys(&["a"]));
    assert_eq!(out.keys(&keys(&["b", "c"])), keys(&["c"]));
    assert!(t.contains(&key("b")));
}

#[test]
fn a_store_that_cannot_fit_returns_none_and_changes_nothing() {
    for policy in [VllmPolicy::Lru, VllmPolicy::Arc] {
        let mut t = tier(2, policy);
        let mut a = RequestAccess::default();
        store(&mut t, &mut a, &["a", "b"]);
        t.on_request_finished(&mut a);
        let _ = t.take_events();
        let lists_before = matches!(policy, VllmPolicy::Arc).then(|| arc_lists(&t));
        let mut b = RequestAccess::default();
        // Room only by evicting a or b, both offered.
        assert_eq!(offer(&mut t, &mut b, &["a", "b", "c"]), None);
        assert_eq!(t.len(), 2);
        assert!(t.contains(&key("a")) && t.contains(&key("b")) && !t.contains(&key("c")));
        assert_eq!(t.take_events(), Vec::new());
        assert_eq!(t.pinned(), 0);
        if let Some(before) = lists_before {
            assert_eq!(arc_lists(&t), before);
        }
        // The ids are where they were: the next store evicts as if the refusal never happened.
        let mut c = RequestAccess::default();
        let out = offer(&mut t, &mut c, &["x"]).unwrap();
        assert_eq!(out.ids.len(), 1);
        assert!(out.ids[0] < 2);
        assert_eq!(t.take_counters().allocation_failures, 1);
    }
}

#[test]
fn a_store_in_flight_is_hit_pending_and_not_evictable() {
    let mut t = tier(1, VllmPolicy::Lru);
    let mut a = RequestAccess::default();
    offer(&mut t, &mut a, &["a"]).unwrap();
    assert_eq!(t.lookup(&key("a")), Lookup::HitPending);
    let mut b = RequestAccess::default();
    assert_eq!(offer(&mut t, &mut b, &["x"]), None);
    t.complete_store(&keys(&["a"]), true);
    assert_eq!(t.lookup(&key("a")), Lookup::Hit);
}

#[test]
fn a_failed_store_frees_its_ids_and_emits_a_metadata_only_removal() {
    let mut t = tier(4, VllmPolicy::Arc);
    let mut a = RequestAccess::default();
    assert_eq!(offer(&mut t, &mut a, &["a", "b"]).unwrap().ids, vec![0, 1]);
    t.complete_store(&keys(&["a", "b"]), false);
    assert_eq!(t.len(), 0);
    assert_eq!(arc_lists(&t), [vec![], vec![], vec![], vec![]]);
    assert_eq!(
        t.take_events(),
        vec![TierEvent {
            keys: keys(&["a", "b"]),
            removed: true,
            metadata_only: true,
        }]
    );
    // Fresh ids first (2, 3), then the freed ones, last freed first (1, 0).
    assert_eq!(
        offer(&mut t, &mut a, &["c", "d", "e", "f"]).unwrap().ids,
        vec![2, 3, 1, 0]
    );
    // Completing again, or keys never offered, changes nothing and says nothing.
    t.complete_store(&keys(&["c", "d", "e", "f"]), true);
    let _ = t.take_events();
    t.complete_store(&keys(&["c", "zz"]), false);
    assert_eq!(t.take_events(), Vec::new());
    assert!(t.contains(&key("c")));
}

#[test]
fn a_failed_store_removal_drops_keys_stored_again_before_the_drain() {
    let mut t = tier(4, VllmPolicy::Lru);
    let mut a = RequestAccess::default();
    offer(&mut t, &mut a, &["a", "b"]).unwrap();
    t.complete_store(&keys(&["a", "b"]), false);
    let mut b = RequestAccess::default();
    store(&mut t, &mut b, &["a"]);
    assert_eq!(
        t.take_events(),
        vec![
            TierEvent {
                keys: keys(&["b"]),
                removed: true,
                metadata_only: true,
            },
            TierEvent {
                keys: keys(&["a"]),
                removed: false,
                metadata_only: false,
            },
        ]
    );
}

#[test]
fn arc_inserts_into_t1_and_a_request_reuse_promotes_to_t2() {
    let mut t = tier(4, VllmPolicy::Arc);
    let mut a = RequestAccess::default();
    store(&mut t, &mut a, &["a", "b"]);
    assert_eq!(arc_lists(&t)[0], keys(&["a", "b"]));
    // Finished: inserted-only keys keep T1, processed tail first, so the head is newest.
    t.on_request_finished(&mut a);
    assert_eq!(arc_lists(&t)[0], keys(&["b", "a"]));
    let mut b = RequestAccess::default();
    assert_eq!(load(&mut t, &mut b, &["a"]), vec![0]);
    assert_eq!(arc_lists(&t)[1], Vec::<Key>::new()); // reuse counts at the finish
    t.on_request_finished(&mut b);
    assert_eq!(arc_lists(&t), [keys(&["b"]), keys(&["a"]), vec![], vec![]]);
}

#[test]
fn arc_ghost_hits_move_the_target_and_pick_the_victim_list() {
    let mut t = tier(2, VllmPolicy::Arc);
    let mut a = RequestAccess::default();
    store(&mut t, &mut a, &["a", "b"]);
    t.on_request_finished(&mut a); // T1 = [b, a]
    let mut b = RequestAccess::default();
    load(&mut t, &mut b, &["a"]);
    t.on_request_finished(&mut b); // T1 = [b], T2 = [a]
    let mut c = RequestAccess::default();
    // Target 0: |T1| = 1 >= 0, so T1's oldest goes, to B1.
    assert_eq!(store_evicting(&mut t, &mut c, &["c"]), keys(&["b"]));
    assert_eq!(
        arc_lists(&t),
        [keys(&["c"]), keys(&["a"]), keys(&["b"]), vec![]]
    );
    // b again: a B1 ghost; the target rises by max(1, |B2| / |B1|) = 1. |T1| = 1 >= 1: T1.
    let mut d = RequestAccess::default();
    assert_eq!(store_evicting(&mut t, &mut d, &["b"]), keys(&["c"]));
    assert_eq!(t.arc_target(), Some(1.0));
    assert_eq!(
        arc_lists(&t),
        [keys(&["b"]), keys(&["a"]), keys(&["c"]), vec![]]
    );
    // c again: the target reaches 2 (the capacity); |T1| = 1 < 2, so T2 gives a, to B2.
    let mut e = RequestAccess::default();
    assert_eq!(store_evicting(&mut t, &mut e, &["c"]), keys(&["a"]));
    assert_eq!(t.arc_target(), Some(2.0));
    assert_eq!(
        arc_lists(&t),
        [keys(&["b", "c"]), vec![], vec![], keys(&["a"])]
    );
    // a again: a B2 ghost lowers the target by max(1, |B1| / |B2|) = 1.
    let mut f = RequestAccess::default();
    assert_eq!(store_evicting(&mut t, &mut f, &["a"]), keys(&["b"]));
    assert_eq!(t.arc_target(), Some(1.0));
}

/// Store `names` (which must evict) and complete it; the victims.
fn store_evicting(t: &mut VllmTier, req: &mut RequestAccess, names: &[&str]) -> Vec<Key> {
    let out = offer(t, req, names).expect("fits");
    t.complete_store(&out.keys(&keys(names)), true);
    out.evicted
}

#[test]
fn arc_ghost_lists_are_trimmed_to_the_capacity() {
    let mut t = tier(1, VllmPolicy::Arc);
    let mut r = RequestAccess::default();
    store(&mut t, &mut r, &["a"]);
    for (i, name) in ["b", "c", "d"].iter().enumerate() {
        let mut next = RequestAccess::default();
        let victims = store_evicting(&mut t, &mut next, &[name]);
        assert_eq!(victims.len(), 1, "step {i}");
    }
    // Evicted a, b, c in turn; B1 keeps only the newest ghost.
    assert_eq!(arc_lists(&t), [keys(&["d"]), vec![], keys(&["c"]), vec![]]);
}

#[test]
fn reset_empties_the_tier_restarts_ids_and_forgets_requests() {
    let mut t = tier(4, VllmPolicy::Lru);
    let mut a = RequestAccess::default();
    store(&mut t, &mut a, &["a", "b"]);
    t.reset_cache();
    assert_eq!(t.len(), 0);
    assert_eq!(t.lookup(&key("a")), Lookup::Miss);
    assert_eq!(t.pinned(), 0);
    // A record from before the reset starts over: its finish does nothing, its next offer
    // is its first access.
    t.on_request_finished(&mut a);
    assert!(!a.finished);
    assert_eq!(store(&mut t, &mut a, &["c"]), vec![0]);
    assert_eq!(a.len(), 1);
    let usage = t.take_usage();
    assert_eq!(
        (usage.capacity, usage.in_use, usage.write_pending),
        (4, 0, 0)
    );
}

#[test]
fn a_finished_request_offering_new_keys_is_refused_and_nothing_changes() {
    let mut t = tier(4, VllmPolicy::Arc);
    let mut a = RequestAccess::default();
    store(&mut t, &mut a, &["a"]);
    t.on_request_finished(&mut a);
    let before = arc_lists(&t);
    let mut pos = |_| Some(16);
    let err = t
        .prepare_store(&keys(&["a", "new"]), &mut a, &mut pos)
        .unwrap_err();
    assert!(matches!(&err, KvoffError::InvalidState(m) if m.contains("after it finished")));
    assert_eq!(arc_lists(&t), before);
    assert_eq!(a.len(), 1);
    assert!(!t.contains(&key("new")));
    assert_eq!(t.take_usage().allocation_sizes, vec![1]); // only the first store's
}

#[test]
fn a_double_complete_load_is_refused_and_the_pin_count_kept() {
    let mut t = tier(2, VllmPolicy::Lru);
    let mut a = RequestAccess::default();
    store(&mut t, &mut a, &["a"]);
    let mut no_pos = |_| None;
    t.prepare_load(&keys(&["a"]), &mut a, &mut no_pos).unwrap();
    t.complete_load(&keys(&["a"])).unwrap();
    let err = t.complete_load(&keys(&["a"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "OffloadKey 61 (group 0) is not being loaded (0 load(s) in flight, 1 completed)"
    );
    assert_eq!(t.pinned(), 0);
    // Unknown keys: nothing unpinned, even the known key listed with them.
    t.prepare_load(&keys(&["a"]), &mut a, &mut no_pos).unwrap();
    let err = t.complete_load(&keys(&["a", "zz"])).unwrap_err();
    assert_eq!(err.to_string(), "unknown block hash 7a7a (group 0)");
    assert_eq!(t.pinned(), 1);
}

#[test]
fn the_group_index_is_the_last_four_bytes_big_endian() {
    assert_eq!(group_index(b"hash\x00\x00\x01\x02"), 258);
    assert_eq!(group_index(&key("x")), 0);
}
