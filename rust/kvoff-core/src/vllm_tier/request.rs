//! What one request did to the tier, as vLLM 0.33's manager records it per `ReqContext`:
//! the keys it loaded or offered (grouped by KV-cache group, with their token positions),
//! which it inserted, reused or missed on, and the LRU rank its running keys share.

use super::{Key, KeyMap};
use std::collections::BTreeMap;

/// One key as a request saw it. vLLM keeps four sets (seen, inserted, reused, store misses);
/// every key in the last three is also seen, so one map with flags answers each with one lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The key's end-token position, read once, when the request first saw it.
    pub(crate) position: Option<i64>,
    pub(crate) inserted: bool,
    pub(crate) reused: bool,
    /// The `prepare_store` call (the tier's call serial) that first reported the key as a store
    /// miss; 0: never. A duplicate within that same call is reported again, as vLLM's
    /// list-then-set does.
    pub(crate) store_miss_call: u64,
}

#[derive(Debug, Default)]
pub struct RequestAccess {
    pub(crate) owner: u64,
    pub(crate) generation: u64,
    /// Per group index (ascending), keys in first-seen order.
    pub(crate) groups: BTreeMap<u32, Vec<Key>>,
    pub(crate) seen: KeyMap<Seen>,
    pub(crate) finished: bool,
    /// The LRU major rank this request's positioned keys share while it runs.
    pub(crate) lru_rank: Option<u64>,
}

impl RequestAccess {
    fn seen_of(&self, key: &[u8]) -> Seen {
        self.seen.get(key).copied().unwrap_or_default()
    }

    /// Head to tail, as vLLM orders a finished request: each group by position when all of
    /// its keys have one, groups in index order, then all keys by position when all have one
    /// (both sorts stable).
    pub(crate) fn prefix_order(&self) -> Vec<(&Key, Seen)> {
        let mut all = Vec::with_capacity(self.seen.len());
        for keys in self.groups.values() {
            let start = all.len();
            all.extend(keys.iter().map(|k| (k, self.seen_of(k))));
            let group = &mut all[start..];
            if group.iter().all(|(_, s)| s.position.is_some()) {
                group.sort_by_key(|(_, s)| s.position);
            }
        }
        if all.iter().all(|(_, s)| s.position.is_some()) {
            all.sort_by_key(|(_, s)| s.position);
        }
        all
    }
}
