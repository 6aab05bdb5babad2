//! How many bytes of descriptors a node keeps in its catalog, and whose make room when it is
//! full.
//!
//! Every member's descriptors reach every node, and each key may hold up to
//! [`MAX_PRODUCTS_PER_OWNER`](crate::catalog::MAX_PRODUCTS_PER_OWNER) descriptors of up to
//! [`MAX_DESCRIPTOR_BYTES`](crate::descriptor::MAX_DESCRIPTOR_BYTES): 64 MiB per key, and a
//! mesh may have thousands of keys (under `any-member` admission one member can admit many).
//! Without a bound on the whole, a few keys could make every node store tens of GiB.
//!
//! A node therefore keeps at most [`CatalogQuota::max_bytes`] of descriptors in all, shared
//! fairly between the keys that hold any (max-min fairness). While the catalog has room,
//! everything is taken. Once it is full, a key may still grow up to its *fair share*, the
//! quota divided by the number of keys holding descriptors (the newcomer included): room is
//! made by removing descriptors of the key that holds the most, as long as it holds more
//! than that share. A key at or past its share is refused (`over_budget`). So a key that
//! floods the catalog first is cut back to its share as other keys publish, and no number of
//! keys can keep an honest key from its share: with the mesh's 4,096 members and the default
//! 1 GiB, every key keeps at least 256 KiB (dozens of typical descriptors).
//!
//! The node's own key is never refused and its descriptors are never removed: they are what
//! it serves. A descriptor removed to make room is gone from this node only; its owner and
//! the other nodes still have it, and it comes back by sync once its owner is under its share
//! again.
//!
//! The sizes are counted by the store; what to do with a write, given them, is decided here.

use std::collections::BTreeMap;

use crate::identity::PublicKey;

/// Default of [`CatalogQuota::max_bytes`]: 1 GiB.
pub const DEFAULT_CATALOG_BYTES: u64 = 1 << 30;

/// Bytes of stored descriptors, in all and per owner key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogUsage {
    total: u64,
    owners: BTreeMap<PublicKey, u64>,
}

impl CatalogUsage {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that one of `owner`'s entries went from `old` bytes to `new` (0: absent).
    pub fn record(&mut self, owner: PublicKey, old: u64, new: u64) {
        self.total = (self.total.saturating_sub(old)).saturating_add(new);
        let held = self.owners.entry(owner).or_default();
        *held = held.saturating_sub(old).saturating_add(new);
        if *held == 0 {
            self.owners.remove(&owner);
        }
    }

    /// Bytes of all stored descriptors.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes of `owner`'s stored descriptors.
    pub fn held(&self, owner: &PublicKey) -> u64 {
        self.owners.get(owner).copied().unwrap_or(0)
    }

    /// Keys holding at least one stored descriptor.
    pub fn owners(&self) -> usize {
        self.owners.len()
    }

    /// The `n` keys holding the most bytes, most first (ties by key).
    pub fn largest_holders(&self, n: usize) -> Vec<(PublicKey, u64)> {
        let mut holders: Vec<(PublicKey, u64)> =
            self.owners.iter().map(|(k, b)| (*k, *b)).collect();
        holders.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        holders.truncate(n);
        holders
    }

    /// The key holding the most bytes, among those `eligible`.
    fn largest(&self, eligible: impl Fn(&PublicKey) -> bool) -> Option<(PublicKey, u64)> {
        self.owners
            .iter()
            .filter(|(key, _)| eligible(key))
            .max_by_key(|(_, held)| **held)
            .map(|(key, held)| (*key, *held))
    }
}

/// What to do with a write of a descriptor, given the catalog's usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Store it.
    Fits,
    /// Remove at least `bytes` of `owner`'s descriptors first, then ask again.
    MakeRoom {
        /// The key that holds the most, past its fair share.
        owner: PublicKey,
        /// Bytes to remove: what the write lacks, or the excess of `owner` over its share
        /// when that is less.
        bytes: u64,
    },
    /// Refuse it: its key would hold more than its fair share of a full catalog.
    Refuse {
        /// What the key would hold with this write.
        held: u64,
        /// Its fair share.
        share: u64,
    },
}

/// The bound on the bytes of descriptors a node keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogQuota {
    /// Most bytes of stored descriptors, all keys together.
    pub max_bytes: u64,
    /// The node's own key: never refused, never made to give room.
    pub own: PublicKey,
}

impl CatalogQuota {
    /// Each key's share when `keys` keys hold descriptors.
    pub fn share(&self, keys: usize) -> u64 {
        self.max_bytes / (keys.max(1) as u64)
    }

    /// Decides a write of `new` bytes for one of `owner`'s products, whose stored entry has
    /// `old` bytes (0 when the product is new here).
    pub fn admit(&self, usage: &CatalogUsage, owner: PublicKey, old: u64, new: u64) -> Admission {
        let growth = new.saturating_sub(old);
        let total = usage.total().saturating_add(growth);
        if growth == 0 || total <= self.max_bytes {
            return Admission::Fits;
        }
        let held_now = usage.held(&owner);
        let newcomer = held_now == 0;
        let share = self.share(usage.owners() + usize::from(newcomer));
        let held = held_now.saturating_sub(old).saturating_add(new);
        if owner != self.own && held > share {
            return Admission::Refuse { held, share };
        }
        match usage.largest(|key| *key != owner && *key != self.own) {
            Some((largest, largest_held)) if largest_held > share => Admission::MakeRoom {
                owner: largest,
                bytes: (total - self.max_bytes).min(largest_held - share),
            },
            // Only our own descriptors take the catalog past its quota.
            _ if owner == self.own => Admission::Fits,
            _ => Admission::Refuse { held, share },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn key(n: u8) -> PublicKey {
        Identity::from_secret_bytes([n; 32]).public_key()
    }

    const OWN: u8 = 0;

    fn quota(max_bytes: u64) -> CatalogQuota {
        CatalogQuota {
            max_bytes,
            own: key(OWN),
        }
    }

    /// Stored entries by `(owner, product)`: their bytes.
    type Entries = BTreeMap<(u8, u32), u64>;

    /// Plays writes of `(owner, product, bytes)` against a quota the way the store does:
    /// room is made by removing the largest entries of the key named, refusals store
    /// nothing. Returns the usage and the refused writes.
    fn play(
        quota: &CatalogQuota,
        writes: &[(u8, u32, u64)],
    ) -> (CatalogUsage, Entries, Vec<(u8, u32)>) {
        let mut usage = CatalogUsage::new();
        let mut entries = Entries::new();
        let mut refused = Vec::new();
        for &(owner, product, bytes) in writes {
            let old = entries.get(&(owner, product)).copied().unwrap_or(0);
            let mut rounds = 0;
            loop {
                rounds += 1;
                assert!(rounds < 1000, "the quota never settles");
                match quota.admit(&usage, key(owner), old, bytes) {
                    Admission::Fits => {
                        entries.insert((owner, product), bytes);
                        usage.record(key(owner), old, bytes);
                        break;
                    }
                    Admission::Refuse { .. } => {
                        refused.push((owner, product));
                        break;
                    }
                    Admission::MakeRoom {
                        owner: victim,
                        bytes: needed,
                    } => {
                        assert!(needed > 0);
                        let victim = (0..=u8::MAX).find(|n| key(*n) == victim).unwrap();
                        assert_ne!(victim, OWN, "our own descriptors gave room");
                        assert_ne!(victim, owner, "a key gave room to itself");
                        let mut theirs: Vec<((u8, u32), u64)> = entries
                            .iter()
                            .filter(|((o, _), _)| *o == victim)
                            .map(|(k, v)| (*k, *v))
                            .collect();
                        theirs.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
                        let mut freed = 0;
                        for (k, b) in theirs {
                            if freed >= needed {
                                break;
                            }
                            entries.remove(&k);
                            usage.record(key(victim), b, 0);
                            freed += b;
                        }
                    }
                }
            }
        }
        (usage, entries, refused)
    }

    #[test]
    fn usage_follows_writes_replacements_and_removals() {
        let mut usage = CatalogUsage::new();
        usage.record(key(1), 0, 100);
        usage.record(key(1), 0, 50);
        usage.record(key(2), 0, 10);
        assert_eq!(
            (usage.total(), usage.held(&key(1)), usage.owners()),
            (160, 150, 2)
        );
        usage.record(key(1), 100, 30);
        assert_eq!((usage.total(), usage.held(&key(1))), (90, 80));
        usage.record(key(2), 10, 0);
        assert_eq!(
            (usage.total(), usage.held(&key(2)), usage.owners()),
            (80, 0, 1)
        );
        usage.record(key(3), 0, 500);
        usage.record(key(4), 0, 5);
        assert_eq!(usage.largest_holders(2), [(key(3), 500), (key(1), 80)]);
        assert_eq!(usage.largest_holders(10).len(), 3);
    }

    #[test]
    fn everything_fits_while_there_is_room_and_shrinking_always_does() {
        let quota = quota(1000);
        let mut usage = CatalogUsage::new();
        usage.record(key(1), 0, 990);
        assert_eq!(quota.admit(&usage, key(2), 0, 10), Admission::Fits);
        // A key far past its share may still replace an entry by a smaller or equal one.
        usage.record(key(2), 0, 10);
        assert_eq!(quota.admit(&usage, key(1), 500, 400), Admission::Fits);
        assert_eq!(quota.admit(&usage, key(1), 500, 500), Admission::Fits);
    }

    #[test]
    fn a_full_catalog_refuses_a_key_past_its_share() {
        let quota = quota(1000);
        let mut usage = CatalogUsage::new();
        usage.record(key(1), 0, 600);
        usage.record(key(2), 0, 400);
        // Two keys: a share of 500 each; key 1 already holds more.
        assert_eq!(
            quota.admit(&usage, key(1), 0, 10),
            Admission::Refuse {
                held: 610,
                share: 500
            }
        );
        // Key 2 may grow to its share, at key 1's expense.
        assert_eq!(
            quota.admit(&usage, key(2), 0, 100),
            Admission::MakeRoom {
                owner: key(1),
                bytes: 100
            }
        );
        assert_eq!(
            quota.admit(&usage, key(2), 0, 101),
            Admission::Refuse {
                held: 501,
                share: 500
            }
        );
    }

    #[test]
    fn a_newcomer_counts_in_the_shares_and_takes_room_from_the_largest() {
        let quota = quota(900);
        let mut usage = CatalogUsage::new();
        usage.record(key(1), 0, 700);
        usage.record(key(2), 0, 200);
        // Three keys with the newcomer: 300 each. Key 1 is past it, key 2 is not.
        assert_eq!(
            quota.admit(&usage, key(3), 0, 250),
            Admission::MakeRoom {
                owner: key(1),
                bytes: 250
            }
        );
        // Room is asked of the largest key only up to its excess over the share.
        let mut usage = CatalogUsage::new();
        usage.record(key(1), 0, 330);
        usage.record(key(2), 0, 320);
        assert_eq!(
            quota.admit(&usage, key(3), 0, 290),
            Admission::MakeRoom {
                owner: key(1),
                bytes: 30
            }
        );
    }

    #[test]
    fn our_own_products_are_always_kept_and_never_give_room() {
        let quota = quota(1000);
        let mut usage = CatalogUsage::new();
        usage.record(key(OWN), 0, 400);
        usage.record(key(1), 0, 600);
        // Others give room for ours while they are past their share...
        assert_eq!(
            quota.admit(&usage, key(OWN), 0, 50),
            Admission::MakeRoom {
                owner: key(1),
                bytes: 50
            }
        );
        // ...and with no one past a share, ours is stored over the quota.
        let mut usage = CatalogUsage::new();
        usage.record(key(OWN), 0, 990);
        usage.record(key(1), 0, 10);
        assert_eq!(quota.admit(&usage, key(OWN), 0, 500), Admission::Fits);
        // Another key never makes room by removing ours.
        assert_eq!(
            quota.admit(&usage, key(1), 0, 100),
            Admission::Refuse {
                held: 110,
                share: 500
            }
        );
    }

    #[test]
    fn a_flood_of_one_key_is_cut_to_its_share_as_others_publish() {
        let quota = quota(10_000);
        // Key 1 fills the whole catalog with 100 entries of 100 bytes.
        let mut writes: Vec<(u8, u32, u64)> = (0..100).map(|p| (1, p, 100)).collect();
        // Then 99 more entries of key 1 come: all refused.
        writes.extend((100..199).map(|p| (1, p, 100)));
        // Then four honest keys publish 10 entries of 100 bytes each, and we publish ours.
        for honest in 2..=5 {
            writes.extend((0..10).map(|p| (honest, p, 100)));
        }
        writes.extend((0..10).map(|p| (OWN, p, 100)));
        let (usage, entries, refused) = play(&quota, &writes);
        assert_eq!(refused.len(), 99, "{refused:?}");
        assert!(refused.iter().all(|(owner, _)| *owner == 1));
        // Every honest key and ours got everything it published.
        for owner in [2, 3, 4, 5, OWN] {
            assert_eq!(entries.keys().filter(|(o, _)| *o == owner).count(), 10);
        }
        assert!(usage.total() <= quota.max_bytes, "{}", usage.total());
        // Key 1 gave exactly the room the others took.
        assert_eq!(usage.held(&key(1)), 10_000 - 5 * 1000);
    }

    #[test]
    fn no_number_of_keys_keeps_an_honest_key_from_its_share() {
        // 50 keys each try to fill the catalog, then an honest key publishes its share.
        let quota = quota(51 * 1000);
        let mut writes = Vec::new();
        for sybil in 1..=50 {
            writes.extend((0..60).map(|p| (sybil, p, 1000)));
        }
        writes.extend((0..1000).map(|p| (51, p, 1000)));
        let (usage, entries, _) = play(&quota, &writes);
        let honest = entries.keys().filter(|(o, _)| *o == 51).count() as u64;
        assert!(honest * 1000 >= quota.share(51), "honest kept {honest}");
        assert!(usage.total() <= quota.max_bytes);
    }
}
