//! The catalog replica: signed descriptors by product, their versions for anti-entropy, and
//! the bytes each owner key holds, which the catalog's quota shares out
//! ([`mesh_protocol::quota`]).

use mesh_protocol::quota::{Admission, CatalogQuota, CatalogUsage};
use mesh_protocol::{ProductDescriptor, ProductId, PublicKey, Signed};

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Digest, Store, StoreError, trees, version_of, versioned};

impl Store {
    /// The stored envelope for a product and its version.
    pub fn descriptor(
        &self,
        id: &ProductId,
    ) -> Result<Option<(u64, Signed<ProductDescriptor>)>, StoreError> {
        super::stored(&self.catalog, trees::CATALOG, &id.storage_key())
    }

    /// Stores a verified descriptor envelope, replacing any older version.
    pub fn put_descriptor(
        &self,
        descriptor: &ProductDescriptor,
        envelope: &Signed<ProductDescriptor>,
    ) -> Result<(), StoreError> {
        // The digest lock orders writes, so the cached digest ends with the version sled has.
        let mut digests = self.lock_digests();
        let value = versioned(descriptor.version, &envelope.to_bytes());
        let new = value.len() as u64;
        let old = self
            .catalog
            .insert(descriptor.id().storage_key().as_bytes(), value)?;
        if let Some(usage) = digests.usage.as_mut() {
            usage.record(descriptor.owner, stored_len(old.as_deref()), new);
        }
        digests.record(|d| &mut d.catalog, descriptor.id(), descriptor.version);
        Ok(())
    }

    /// Every catalog entry, decoded.
    pub fn catalog(
        &self,
    ) -> Result<Vec<(ProductDescriptor, Signed<ProductDescriptor>)>, StoreError> {
        super::decoded(&self.catalog, trees::CATALOG)
    }

    /// Number of catalog entries.
    pub fn catalog_len(&self) -> usize {
        // sled counts a tree by walking it; the digest is cached and has one entry per key.
        match self.catalog_digest() {
            Ok(digest) => digest.len(),
            Err(_) => self.catalog.len(),
        }
    }

    /// `{product id -> version}` for anti-entropy. Built with one scan of the tree, which
    /// counts the bytes each owner holds as well; both are cached unless a write ran during
    /// the scan, then kept up to date by every write.
    pub fn catalog_digest(&self) -> Result<Digest<ProductId>, StoreError> {
        let generation = {
            let digests = self.lock_digests();
            if let Some(cached) = &digests.catalog {
                return Ok(cached.clone());
            }
            digests.generation
        };
        let (versions, usage) = scan(&self.catalog)?;
        let versions = Arc::new(versions);
        let mut digests = self.lock_digests();
        if digests.generation == generation {
            digests.catalog = Some(versions.clone());
            digests.usage.get_or_insert(usage);
        }
        Ok(versions)
    }

    /// Deletes every catalog entry owned by `owner` and its node record: what a node keeps
    /// of a key removed from the mesh. Returns how many descriptors went.
    pub fn forget_owner(&self, owner: &PublicKey) -> Result<usize, StoreError> {
        let mut digests = self.lock_digests();
        let mut gone = 0;
        let prefix = ProductId {
            owner: *owner,
            name: String::new(),
        }
        .storage_key();
        for item in self.catalog.scan_prefix(prefix.as_bytes()) {
            let (key, _) = item?;
            let old = self.catalog.remove(&key)?;
            if let Some(usage) = digests.usage.as_mut() {
                usage.record(*owner, stored_len(old.as_deref()), 0);
            }
            if let Some(id) = ProductId::from_storage_key(&String::from_utf8_lossy(&key)) {
                digests.forget(|d| &mut d.catalog, &id);
            }
            gone += 1;
        }
        self.peers.remove(owner.to_hex().as_bytes())?;
        digests.forget(|d| &mut d.nodes, owner);
        Ok(gone)
    }

    /// Runs `f` on the catalog's usage, counted with the digest's scan the first time.
    fn with_usage<R>(&self, f: impl FnOnce(&CatalogUsage) -> R) -> Result<R, StoreError> {
        if self.lock_digests().usage.is_none() {
            self.catalog_digest()?;
        }
        let mut digests = self.lock_digests();
        let usage = match digests.usage {
            Some(ref usage) => usage,
            // A write ran during the digest's scan: count again, under the lock.
            None => digests.usage.insert(scan(&self.catalog)?.1),
        };
        Ok(f(usage))
    }

    /// The `n` owner keys holding the most bytes of stored descriptors, most first.
    pub fn catalog_largest_holders(&self, n: usize) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        self.with_usage(|usage| usage.largest_holders(n))
    }

    /// Bytes of stored descriptors, all owners together.
    pub fn catalog_bytes(&self) -> Result<u64, StoreError> {
        self.with_usage(CatalogUsage::total)
    }

    /// Whether one more entry could take the catalog past `quota`. Far from it (the common
    /// case) every write fits: nothing need be decoded or encoded to be measured.
    pub fn catalog_near_quota(&self, quota: &CatalogQuota) -> Result<bool, StoreError> {
        let largest = 8 + Signed::<ProductDescriptor>::max_encoded_len() as u64;
        Ok(self.catalog_bytes()?.saturating_add(largest) > quota.max_bytes)
    }

    /// What the catalog's `quota` says of storing `envelope` (a verified descriptor of
    /// `id`), given what each owner holds now.
    pub fn catalog_admission(
        &self,
        quota: &CatalogQuota,
        id: &ProductId,
        version: u64,
        envelope: &Signed<ProductDescriptor>,
    ) -> Result<Admission, StoreError> {
        if !self.catalog_near_quota(quota)? {
            return Ok(Admission::Fits);
        }
        let new = versioned(version, &envelope.to_bytes()).len() as u64;
        // The actor is the catalog's only writer: the entry cannot change before the decision.
        let old = stored_len(self.catalog.get(id.storage_key().as_bytes())?.as_deref());
        self.with_usage(|usage| {
            if usage.total().saturating_add(new) <= quota.max_bytes {
                Admission::Fits
            } else {
                quota.admit(usage, id.owner, old, new)
            }
        })
    }

    /// Removes `owner`'s largest descriptors until at least `bytes` are freed, none is left
    /// or `limit` are gone, to make room in a full catalog; those `kept` says to keep stay.
    /// Returns the products removed, largest first.
    pub fn make_room(
        &self,
        owner: &PublicKey,
        bytes: u64,
        limit: usize,
        mut kept: impl FnMut(&ProductId) -> bool,
    ) -> Result<Vec<ProductId>, StoreError> {
        let mut digests = self.lock_digests();
        let prefix = ProductId {
            owner: *owner,
            name: String::new(),
        }
        .storage_key();
        // One key holds at most `MAX_PRODUCTS_PER_OWNER` entries: the scan is bounded.
        let mut entries = Vec::new();
        for item in self.catalog.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            if let Some(id) = ProductId::from_storage_key(&String::from_utf8_lossy(&key))
                && !kept(&id)
            {
                entries.push((key, id, value.len() as u64));
            }
        }
        entries.sort_by_key(|(_, _, len)| std::cmp::Reverse(*len));
        let mut freed = 0u64;
        let mut gone = Vec::new();
        for (key, id, _) in entries {
            if freed >= bytes || gone.len() >= limit {
                break;
            }
            if let Some(old) = self.catalog.remove(&key)? {
                if let Some(usage) = digests.usage.as_mut() {
                    usage.record(*owner, old.len() as u64, 0);
                }
                freed += old.len() as u64;
            }
            digests.forget(|d| &mut d.catalog, &id);
            gone.push(id);
        }
        Ok(gone)
    }
}

/// The version of every entry in `catalog` and the bytes each owner holds, with one scan
/// (keys that do not parse are skipped).
fn scan(catalog: &sled::Tree) -> Result<(BTreeMap<ProductId, u64>, CatalogUsage), StoreError> {
    let mut versions = BTreeMap::new();
    let mut usage = CatalogUsage::new();
    for item in catalog.iter() {
        let (key, value) = item?;
        let version = version_of(trees::CATALOG, &key, &value)?;
        if let Some(id) = ProductId::from_storage_key(&String::from_utf8_lossy(&key)) {
            usage.record(id.owner, 0, value.len() as u64);
            versions.insert(id, version);
        }
    }
    Ok((versions, usage))
}

/// Bytes of a stored entry (0 when there is none).
fn stored_len(value: Option<&[u8]>) -> u64 {
    value.map_or(0, |v| v.len() as u64)
}

#[cfg(test)]
mod tests {
    use mesh_protocol::Identity;
    use mesh_protocol::descriptor::{ContentDigest, Status};

    use super::*;

    /// A descriptor of `owner` named `name` whose description pads it to about `pad` bytes.
    fn descriptor(owner: &Identity, name: &str, pad: usize) -> ProductDescriptor {
        ProductDescriptor {
            owner: owner.public_key(),
            domain: "sales".into(),
            name: name.into(),
            version: 1,
            title: name.into(),
            description: "x".repeat(pad),
            tags: vec![],
            schema: vec![],
            rows: 0,
            bytes: 0,
            digest: ContentDigest([0; 32]),
            published_at_ms: 1,
            sla: Default::default(),
            policy: Default::default(),
            lineage: vec![],
            data_addr: None,
            status: Status::Active,
            stewardship: Default::default(),
        }
    }

    fn put(store: &Store, owner: &Identity, name: &str, pad: usize) -> u64 {
        let d = descriptor(owner, name, pad);
        let envelope = Signed::sign(owner, &d);
        store.put_descriptor(&d, &envelope).unwrap();
        versioned(d.version, &envelope.to_bytes()).len() as u64
    }

    #[test]
    fn the_bytes_of_each_owner_follow_writes_and_are_counted_again_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (
            Identity::from_secret_bytes([1; 32]),
            Identity::from_secret_bytes([2; 32]),
        );
        let a1 = put(&store, &a, "one", 1000);
        let a2 = put(&store, &a, "two", 3000);
        let b1 = put(&store, &b, "one", 500);
        assert_eq!(store.catalog_bytes().unwrap(), a1 + a2 + b1);
        // A new version replaces the old entry's bytes.
        let a2_smaller = put(&store, &a, "two", 100);
        assert_eq!(store.catalog_bytes().unwrap(), a1 + a2_smaller + b1);
        assert_eq!(store.forget_owner(&b.public_key()).unwrap(), 1);
        assert_eq!(store.catalog_bytes().unwrap(), a1 + a2_smaller);
        let counted = store.catalog_bytes().unwrap();
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.catalog_bytes().unwrap(), counted);
    }

    #[test]
    fn room_is_made_with_the_largest_descriptors_of_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (flood, honest, own) = (
            Identity::from_secret_bytes([1; 32]),
            Identity::from_secret_bytes([2; 32]),
            Identity::from_secret_bytes([3; 32]),
        );
        let small = put(&store, &flood, "small", 100);
        put(&store, &flood, "big", 9000);
        put(&store, &flood, "middle", 4000);
        put(&store, &own, "ours", 2000);
        let quota = CatalogQuota {
            max_bytes: store.catalog_bytes().unwrap() + 500,
            own: own.public_key(),
        };
        // Room for the honest key's 3,000 bytes comes from the flooding key's largest entry.
        let honest_d = descriptor(&honest, "orders", 3000);
        let honest_envelope = Signed::sign(&honest, &honest_d);
        let Admission::MakeRoom { owner, bytes } = store
            .catalog_admission(&quota, &honest_d.id(), 1, &honest_envelope)
            .unwrap()
        else {
            panic!("no room asked for")
        };
        assert_eq!(owner, flood.public_key());
        let gone = store
            .make_room(&owner, bytes, usize::MAX, |_| false)
            .unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].name, "big");
        assert!(store.descriptor(&gone[0]).unwrap().is_none());
        assert!(!store.catalog_digest().unwrap().contains_key(&gone[0]));
        assert_eq!(
            store
                .catalog_admission(&quota, &honest_d.id(), 1, &honest_envelope)
                .unwrap(),
            Admission::Fits
        );
        // Descriptors the caller keeps (products it consumes) are passed over.
        let gone = store
            .make_room(&flood.public_key(), 1, usize::MAX, |id| id.name == "middle")
            .unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].name, "small");
        let gone = store
            .make_room(&flood.public_key(), u64::MAX, usize::MAX, |id| {
                id.name == "middle"
            })
            .unwrap();
        assert!(gone.is_empty());
        // At most `limit` go at once; asked for more than it holds, a key gives all it has
        // and no more.
        put(&store, &flood, "again", 9000);
        let one = store
            .make_room(&flood.public_key(), u64::MAX, 1, |_| false)
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "again");
        let all = store
            .make_room(&flood.public_key(), u64::MAX, usize::MAX, |_| false)
            .unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "middle");
        assert!(
            store
                .make_room(&flood.public_key(), small, usize::MAX, |_| false)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.catalog_len(), 1);
    }
}
