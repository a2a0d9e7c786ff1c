//! What one request did to the tier, as vLLM 0.33's manager records it per `ReqContext`:
//! the keys it loaded or offered (grouped by KV-cache group, with their token positions),
//! which it inserted, reused or missed on, and the LRU rank its running keys share.

use super::{Key, KeyMap, KeySet};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct RequestAccess {
    pub(crate) owner: u64,
    pub(crate) generation: u64,
    /// Per group index (ascending), keys in first-seen order.
    pub(crate) groups: BTreeMap<u32, Vec<Key>>,
    /// Every key seen, with its end-token position (read once, when first seen).
    pub(crate) seen: KeyMap<Option<i64>>,
    pub(crate) inserted: KeySet,
    pub(crate) reused: KeySet,
    pub(crate) store_misses: KeySet,
    pub(crate) finished: bool,
    /// The LRU major rank this request's positioned keys share while it runs.
    pub(crate) lru_rank: Option<u64>,
}

impl RequestAccess {
    pub(crate) fn position_of(&self, key: &[u8]) -> Option<i64> {
        self.seen.get(key).copied().flatten()
    }

    /// Head to tail, as vLLM orders a finished request: each group by position when all of
    /// its keys have one, groups in index order, then all keys by position when all have one
    /// (both sorts stable).
    pub(crate) fn prefix_order(&self) -> Vec<(Key, Option<i64>)> {
        let mut all = Vec::with_capacity(self.seen.len());
        for keys in self.groups.values() {
            let mut g: Vec<(Key, Option<i64>)> = keys
                .iter()
                .map(|k| (k.clone(), self.position_of(k)))
                .collect();
            if g.iter().all(|(_, p)| p.is_some()) {
                g.sort_by_key(|(_, p)| *p);
            }
            all.extend(g);
        }
        if all.iter().all(|(_, p)| p.is_some()) {
            all.sort_by_key(|(_, p)| *p);
        }
        all
    }
}
