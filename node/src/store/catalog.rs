//! The catalog replica: signed descriptors by product, their versions for anti-entropy, and
//! the bytes each owner key holds, which the catalog's quota shares out
//! ([`mesh_protocol::quota`]).

use mesh_protocol::quota::{Admission, CatalogQuota, CatalogUsage};
use mesh_protocol::{ProductDescriptor, ProductId, PublicKey, Signed};

use super::{Digest, Digests, Store, StoreError, split_versioned, trees, versioned};

impl Store {
    /// The stored envelope for a product and its version.
    pub fn descriptor(
        &self,
        id: &ProductId,
    ) -> Result<Option<(u64, Signed<ProductDescriptor>)>, StoreError> {
        let key = id.storage_key();
        let Some(value) = self.catalog.get(key.as_bytes())? else {
            return Ok(None);
        };
        let (version, bytes) = split_versioned(trees::CATALOG, key.as_bytes(), &value)?;
        let envelope = Signed::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
            tree: trees::CATALOG,
            key,
            reason: e.to_string(),
        })?;
        Ok(Some((version, envelope)))
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
        let mut out = Vec::new();
        for item in self.catalog.iter() {
            let (key, value) = item?;
            let (_, bytes) = split_versioned(trees::CATALOG, &key, &value)?;
            let corrupt = |reason: String| StoreError::Corrupt {
                tree: trees::CATALOG,
                key: String::from_utf8_lossy(&key).into_owned(),
                reason,
            };
            let envelope: Signed<ProductDescriptor> =
                Signed::from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))?;
            let descriptor = envelope
                .decode_trusted()
                .map_err(|e| corrupt(e.to_string()))?;
            out.push((descriptor, envelope));
        }
        Ok(out)
    }

    /// Number of catalog entries.
    pub fn catalog_len(&self) -> usize {
        // sled counts a tree by walking it; the digest is cached and has one entry per key.
        match self.catalog_digest() {
            Ok(digest) => digest.len(),
            Err(_) => self.catalog.len(),
        }
    }

    /// `{product id -> version}` for anti-entropy.
    pub fn catalog_digest(&self) -> Result<Digest<ProductId>, StoreError> {
        self.digest(
            &self.catalog,
            trees::CATALOG,
            |d| &mut d.catalog,
            ProductId::from_storage_key,
        )
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

    /// The catalog's usage in `digests`, counted from the tree if it was not yet.
    fn usage<'a>(&self, digests: &'a mut Digests) -> Result<&'a mut CatalogUsage, StoreError> {
        match digests.usage {
            Some(ref mut usage) => Ok(usage),
            None => Ok(digests.usage.insert(usage_of(&self.catalog)?)),
        }
    }

    /// The `n` owner keys holding the most bytes of stored descriptors, most first.
    pub fn catalog_largest_holders(&self, n: usize) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        Ok(self.usage(&mut self.lock_digests())?.largest_holders(n))
    }

    /// Bytes of stored descriptors, all owners together.
    pub fn catalog_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.usage(&mut self.lock_digests())?.total())
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
        let mut digests = self.lock_digests();
        let usage = self.usage(&mut digests)?;
        if usage.total().saturating_add(new) <= quota.max_bytes {
            return Ok(Admission::Fits);
        }
        let old = self.catalog.get(id.storage_key().as_bytes())?;
        Ok(quota.admit(usage, id.owner, stored_len(old.as_deref()), new))
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

/// What each owner holds in `catalog`, counted with one scan.
fn usage_of(catalog: &sled::Tree) -> Result<CatalogUsage, StoreError> {
    let mut usage = CatalogUsage::new();
    for item in catalog.iter() {
        let (key, value) = item?;
        if let Some(id) = ProductId::from_storage_key(&String::from_utf8_lossy(&key)) {
            usage.record(id.owner, 0, value.len() as u64);
        }
    }
    Ok(usage)
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
