//! The member set every connection gate reads.
//!
//! The control plane's gate is libp2p's allow list, kept in step by the actor; the data
//! plane and the fetch path read this set, which the actor replaces whenever membership
//! changes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use mesh_protocol::PublicKey;

/// The keys of the mesh's current members, shared between the actor (writer) and the data
/// plane (readers). Before a node's governance state is loaded (tools and benchmarks that
/// run a data plane alone) the set is *open*: everyone passes.
#[derive(Clone, Debug, Default)]
pub struct MemberSet(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// The members; `None` while open.
    keys: RwLock<Option<HashSet<PublicKey>>>,
    /// Data-plane connections refused because their key is not a member.
    refused: AtomicU64,
    /// Counts replacements, so that readers learn of each (the data plane closes removed
    /// members' connections).
    changes: tokio::sync::watch::Sender<u64>,
}

impl MemberSet {
    /// Whether `key` may connect: a member, or any key while the set is open.
    pub fn admits(&self, key: &PublicKey) -> bool {
        match &*self.0.keys.read().unwrap_or_else(|e| e.into_inner()) {
            Some(members) => members.contains(key),
            None => true,
        }
    }

    /// Counts a connection refused because its key is not a member.
    pub fn count_refusal(&self) {
        self.0.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused so far by [`MemberSet::count_refusal`].
    pub fn refusals(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// Replaces the members (and closes an open set).
    pub fn replace(&self, keys: impl IntoIterator<Item = PublicKey>) {
        let set = keys.into_iter().collect();
        *self.0.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(set);
        self.0.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes on every [`MemberSet::replace`] after this call.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changes.subscribe()
    }

    /// Number of members (0 while open).
    pub fn len(&self) -> usize {
        self.0
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, HashSet::len)
    }

    /// Whether the set holds no member (or is open).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_until_replaced() {
        let set = MemberSet::default();
        let k = PublicKey([1; 32]);
        assert!(set.admits(&k));
        let changes = set.changes();
        set.replace([PublicKey([2; 32])]);
        assert!(!set.admits(&k));
        assert!(
            changes.has_changed().unwrap_or(false),
            "readers learn of the change"
        );
        assert!(
            set.clone().admits(&PublicKey([2; 32])),
            "clones share the set"
        );
    }
}
