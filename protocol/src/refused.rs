//! Versions this node refused, so that anti-entropy stops bringing them back.
//!
//! Set reconciliation cannot tell "refused" from "missing": a peer that holds a descriptor
//! this node refused (its key past its share of a full catalog, or over its product count)
//! sends it again in every sync session, up to a whole sync answer each time. The node
//! remembers what it refused, for a while, and its own sync queries claim those versions as
//! held: a peer then sends only what is newer. What the node serves is unchanged (its
//! answers are built from what it stores), so it never claims to a peer what it cannot give.
//!
//! Only refusals that do not depend on who relayed the bytes belong here: a version refused
//! for its claimed owner's budget, after its signature was checked (an unchecked envelope
//! could name any version, and claiming a forged high version would hold back the genuine
//! ones). A refusal is forgotten after a time to live, when the bound is reached (least
//! recently noted first), or all at once when room may have been made.

use std::collections::BTreeMap;
use std::hash::Hash;

use hashlink::LruCache;

use crate::reconcile::{KeyRange, SyncKey, SyncSet};

/// Most refusals remembered.
pub const MAX_REFUSED: usize = 8192;
/// How long a refusal is remembered: the budgets that caused it change as keys come and go.
pub const REFUSED_TTL_MS: u64 = 10 * 60 * 1000;

/// The versions refused, by key, each until its expiry.
#[derive(Debug)]
pub struct RefusedVersions<K: Hash + Eq> {
    entries: LruCache<K, Refused>,
    ttl_ms: u64,
    /// Changes whenever the claims may differ, so a set built from them can be cached.
    generation: u64,
}

#[derive(Clone, Copy, Debug)]
struct Refused {
    version: u64,
    until_ms: u64,
}

impl<K: SyncKey + Hash + Eq> RefusedVersions<K> {
    /// Remembers at most `capacity` refusals (at least one), each for `ttl_ms`.
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        Self {
            entries: LruCache::new(capacity.max(1)),
            ttl_ms,
            generation: 0,
        }
    }

    /// Notes that `version` of `key` was refused at `now_ms`. A lower version than one
    /// already noted changes nothing: the claim is the highest version refused.
    pub fn note(&mut self, key: K, version: u64, now_ms: u64) {
        let until_ms = now_ms.saturating_add(self.ttl_ms);
        let version = match self.entries.get(&key) {
            Some(held) if held.version > version => held.version,
            _ => version,
        };
        self.entries.insert(key, Refused { version, until_ms });
        self.generation += 1;
    }

    /// Whether `version` of `key` (or a newer one) was refused and is still remembered.
    pub fn holds(&self, key: &K, version: u64, now_ms: u64) -> bool {
        self.entries
            .peek(key)
            .is_some_and(|r| r.version >= version && r.until_ms > now_ms)
    }

    /// Drops the refusals whose time to live has passed.
    pub fn expire(&mut self, now_ms: u64) {
        let expired: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, r)| r.until_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        if !expired.is_empty() {
            for key in &expired {
                self.entries.remove(key);
            }
            self.generation += 1;
        }
    }

    /// Forgets every refusal (room was made: what was refused may fit now).
    pub fn forget_all(&mut self) {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.generation += 1;
        }
    }

    /// How many refusals are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A number that changes whenever [`Self::claimed`] may.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What this node's sync queries claim: the entries `held`, and for each key refused at
    /// a newer version than held (or not held), the refused version. Expired refusals are
    /// left out; call [`Self::expire`] to drop them for good.
    pub fn claimed(&self, held: &SyncSet<K>, now_ms: u64) -> SyncSet<K> {
        let mut claims: BTreeMap<K, u64> = held.items(&KeyRange::full()).iter().cloned().collect();
        for (key, refused) in self.entries.iter().filter(|(_, r)| r.until_ms > now_ms) {
            let version = claims.entry(key.clone()).or_default();
            *version = (*version).max(refused.version);
        }
        SyncSet::from_map(&claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PublicKey;
    use crate::reconcile::{self, Reconciler};

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    #[test]
    fn claims_add_refused_versions_newer_than_held_until_they_expire() {
        let mut refused = RefusedVersions::new(16, 1_000);
        let held = SyncSet::from_sorted([(key(1), 3), (key(3), 1)]);
        refused.note(key(2), 7, 0);
        refused.note(key(3), 5, 0);
        // An older version than held adds nothing.
        refused.note(key(1), 2, 0);
        // A lower version than one noted keeps the higher.
        refused.note(key(2), 4, 0);
        let claimed = refused.claimed(&held, 10);
        assert_eq!(
            claimed.items(&KeyRange::full()),
            &[(key(1), 3), (key(2), 7), (key(3), 5)]
        );
        assert!(refused.holds(&key(2), 7, 10));
        assert!(refused.holds(&key(2), 6, 10));
        assert!(!refused.holds(&key(2), 8, 10));
        // Expired: the claims are what is held again.
        let claimed = refused.claimed(&held, 1_000);
        assert_eq!(
            claimed.items(&KeyRange::full()),
            held.items(&KeyRange::full())
        );
        let before = refused.generation();
        refused.expire(1_000);
        assert!(refused.is_empty());
        assert_ne!(refused.generation(), before);
    }

    #[test]
    fn the_memory_is_bounded_and_can_be_cleared() {
        let mut refused = RefusedVersions::new(4, 1_000);
        for n in 0..10 {
            refused.note(key(n), 1, 0);
        }
        assert_eq!(refused.len(), 4);
        // The most recently noted are kept.
        assert!(refused.holds(&key(9), 1, 0));
        assert!(!refused.holds(&key(0), 1, 0));
        refused.forget_all();
        assert!(refused.is_empty());
    }

    #[test]
    fn a_peer_holding_what_was_refused_sends_only_what_is_newer() {
        // The peer holds 200 entries; we hold 100 of them and refused 50 others at the
        // version the peer holds, and one more at an older version than the peer's.
        let theirs = SyncSet::from_sorted((0..200u8).map(|n| (key(n), 2)));
        let ours = SyncSet::from_sorted((0..100u8).map(|n| (key(n), 2)));
        let mut refused = RefusedVersions::new(MAX_REFUSED, REFUSED_TTL_MS);
        for n in 100..150u8 {
            refused.note(key(n), 2, 0);
        }
        refused.note(key(150), 1, 0);
        let claimed = refused.claimed(&ours, 0);
        let mut session = Reconciler::new(&claimed);
        let mut wanted = Vec::new();
        while !session.is_done() {
            let query = session.next_query(&claimed, crate::wire::MAX_SET_QUERY);
            let response = reconcile::respond(&theirs, &query).unwrap();
            wanted.extend(query.want.iter().cloned());
            wanted.extend(response.send);
            session
                .on_answer(&claimed, &query, response.answer)
                .unwrap();
        }
        wanted.sort();
        wanted.dedup();
        let expected: Vec<PublicKey> = (150..200u8).map(key).collect();
        assert_eq!(wanted, expected);
    }
}
