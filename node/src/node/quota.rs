//! What the catalog keeps: each key's count of products and the byte quota shared between
//! keys (`mesh_protocol::quota`), applied to what gossip, sync and `publish` bring.

use std::collections::HashSet;

use mesh_protocol::catalog;
use mesh_protocol::quota::Admission;
use mesh_protocol::{ContractState, ProductDescriptor, ProductId, PublicKey, RejectReason, Signed};

use super::Node;
use crate::agreements::Role;

/// Most contracts of each open state read to find the products this node consumes.
const MAX_CONSUMED: usize = 4096;
/// Most descriptors removed to make room for one write: a catalog far past its quota (one
/// whose `max_catalog_mib` was lowered) shrinks over the next writes instead of in one long
/// pause of the actor; a write that does not fit yet is refused meanwhile.
const MAX_REMOVED_PER_WRITE: usize = 64;

impl Node {
    /// Makes room in the catalog's byte quota (`max_catalog_mib`) for a verified
    /// `descriptor`: while it would not fit, descriptors of the key holding the most past its
    /// fair share are removed (see `mesh_protocol::quota`). `Err(OverBudget)` when the
    /// descriptor's own key would be past its share. Our own descriptors are never refused.
    pub(super) fn make_room_for(
        &mut self,
        descriptor: &ProductDescriptor,
        envelope: &Signed<ProductDescriptor>,
        via: &'static str,
    ) -> Result<(), RejectReason> {
        let quota = self.config.catalog_quota(self.identity.public_key());
        let id = descriptor.id();
        // Read only once room is to be made.
        let mut consumed: Option<HashSet<ProductId>> = None;
        let mut removed = 0;
        // Each round removes at least one descriptor or ends the loop.
        for _ in 0..=MAX_REMOVED_PER_WRITE {
            let admission =
                match self
                    .store
                    .catalog_admission(&quota, &id, descriptor.version, envelope)
                {
                    Ok(admission) => admission,
                    Err(e) => {
                        // The write that follows reports the store's failure.
                        tracing::error!("cannot read the catalog's usage: {e}");
                        return Ok(());
                    }
                };
            match admission {
                Admission::Fits => return Ok(()),
                Admission::Refuse { held, share } => {
                    tracing::info!(owner = %descriptor.owner.fingerprint(), held, share, via,
                        "refused a descriptor: the catalog is full and its key is past its fair share");
                    return Err(RejectReason::OverBudget);
                }
                Admission::MakeRoom { owner, bytes } => {
                    let limit = MAX_REMOVED_PER_WRITE.saturating_sub(removed);
                    if limit == 0 {
                        tracing::info!(
                            via,
                            "the catalog is far past its quota: it shrinks over the next writes"
                        );
                        return if descriptor.owner == quota.own {
                            Ok(())
                        } else {
                            Err(RejectReason::OverBudget)
                        };
                    }
                    match self.store.make_room(&owner, bytes, limit, |id| {
                        consumed
                            .get_or_insert_with(|| self.products_we_consume())
                            .contains(id)
                    }) {
                        Ok(gone) if !gone.is_empty() => {
                            removed += gone.len();
                            self.metrics.catalog_evicted.inc_by(gone.len() as u64);
                            tracing::info!(owner = %owner.fingerprint(), removed = gone.len(), for_owner = %descriptor.owner.fingerprint(),
                            "the catalog is full: removed descriptors of the key holding the most, past its fair share");
                        }
                        Ok(_) => return Err(RejectReason::OverBudget),
                        Err(e) => {
                            tracing::error!("cannot make room in the catalog: {e}");
                            return Err(RejectReason::OverBudget);
                        }
                    }
                }
            }
        }
        Err(RejectReason::OverBudget)
    }

    /// The descriptor `envelope` claims, if the key it claims as owner is past its share of
    /// a full catalog for it, checked before its signature is: whoever signed it, it would
    /// not be stored. Nothing is removed here; a descriptor that may fit goes on to be
    /// verified.
    pub(super) fn past_share_of_full_catalog(
        &self,
        envelope: &Signed<ProductDescriptor>,
    ) -> Option<ProductDescriptor> {
        let quota = self.config.catalog_quota(self.identity.public_key());
        if !self.store.catalog_near_quota(&quota).unwrap_or(false) {
            return None;
        }
        let claimed = envelope.decode_trusted().ok()?;
        matches!(
            self.store
                .catalog_admission(&quota, &claimed.id(), claimed.version, envelope),
            Ok(Admission::Refuse { .. })
        )
        .then_some(claimed)
    }

    /// Products this node has asked for or holds an agreement on, as a consumer: their
    /// descriptors are not removed to make room (a fetch resolves the product from them).
    fn products_we_consume(&self) -> HashSet<ProductId> {
        let mut products = HashSet::new();
        for state in [
            ContractState::Requested,
            ContractState::Pending,
            ContractState::Agreed,
        ] {
            let ids = self
                .store
                .agreement_ids_in(Role::Consumer, state, MAX_CONSUMED)
                .unwrap_or_default();
            for id in ids {
                if let Ok(Some(record)) = self.store.agreement(&id)
                    && let Ok(terms) = record.terms()
                {
                    products.insert(terms.product);
                }
            }
        }
        products
    }

    /// Whether `owner` may add one more product to our catalog
    /// (`catalog::MAX_PRODUCTS_PER_OWNER`); counted from the cached digest.
    pub(super) fn owner_has_room(&self, owner: PublicKey) -> bool {
        let Ok(digest) = self.store.catalog_digest() else {
            return true;
        };
        let first = ProductId {
            owner,
            name: String::new(),
        };
        let held = digest
            .range(first..)
            .take_while(|(id, _)| id.owner == owner)
            .take(catalog::MAX_PRODUCTS_PER_OWNER)
            .count();
        catalog::owner_has_room(held)
    }
}
