//! The catalog topic: what the node publishes and how it judges what gossip brings.

use std::collections::HashSet;
use std::time::Instant;

use libp2p::gossipsub;
use mesh_protocol::catalog::{self, MergeOutcome, merge_node_record};
use mesh_protocol::quota::Admission;
use mesh_protocol::wire::GossipMessage;
use mesh_protocol::{
    ContractState, NodeRecord, ProductDescriptor, ProductId, PublicKey, RejectReason, Signed,
};

use super::{Node, NodeEvent, now_ms};
use crate::agreements::Role;

/// Most contracts of each open state read to find the products this node consumes.
const MAX_CONSUMED: usize = 4096;

impl Node {
    /// Publishes on the catalog topic. No peers yet is fine: anti-entropy delivers later.
    pub(crate) fn gossip(&mut self, message: GossipMessage) {
        let bytes = message.to_bytes();
        let len = bytes.len() as u64;
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) => {
                self.metrics.gossip_out.inc();
                self.metrics.gossip_bytes_out.inc_by(len);
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic)
            | Err(gossipsub::PublishError::Duplicate) => {}
            Err(e) => tracing::warn!("gossip publish failed: {e}"),
        }
    }

    pub(super) fn on_gossip(&mut self, data: &[u8]) -> gossipsub::MessageAcceptance {
        self.metrics.gossip_in.inc();
        self.metrics.gossip_bytes_in.inc_by(data.len() as u64);
        let message = match GossipMessage::from_bytes(data) {
            Ok(m) => m,
            Err(e) => {
                let reason = match e {
                    mesh_protocol::codec::DecodeError::TooLarge { .. } => RejectReason::Oversized,
                    _ => RejectReason::Malformed,
                };
                self.rejected(reason);
                self.metrics
                    .gossip_validated(&gossipsub::MessageAcceptance::Reject);
                return gossipsub::MessageAcceptance::Reject;
            }
        };
        let result = match message {
            GossipMessage::Descriptor(envelope) => self.accept_descriptor(&envelope, "gossip"),
            GossipMessage::Node(envelope) => self.accept_node_record(&envelope, "gossip"),
            GossipMessage::Revocation(envelope) => self.accept_revocation(&envelope),
            GossipMessage::Vote(envelope) => self.accept_vote(&envelope, "gossip"),
        };
        let verdict = match result {
            Ok(true) => gossipsub::MessageAcceptance::Accept,
            Ok(false) => gossipsub::MessageAcceptance::Ignore,
            // Rejected: not forwarded, and the sender's gossip score pays for it.
            Err(reason) if penalised(reason) => gossipsub::MessageAcceptance::Reject,
            // Not forwarded, but an honest peer can send it: no penalty.
            Err(_) => gossipsub::MessageAcceptance::Ignore,
        };
        self.metrics.gossip_validated(&verdict);
        verdict
    }

    pub(crate) fn rejected(&self, reason: RejectReason) {
        self.metrics.reject(reason);
        self.emit(NodeEvent::Rejected { reason });
    }

    /// Offers a descriptor to the catalog. `Ok(true)`: stored (new or newer); `Ok(false)`:
    /// duplicate; `Err`: rejected and counted.
    pub(super) fn accept_descriptor(
        &mut self,
        envelope: &Signed<ProductDescriptor>,
        via: &'static str,
    ) -> Result<bool, RejectReason> {
        if !self.governance.is_member(&envelope.signer()) {
            tracing::debug!(signer = %envelope.signer().fingerprint(), via, "refused a descriptor of a non-member");
            self.rejected(RejectReason::NotMember);
            return Err(RejectReason::NotMember);
        }
        let store = &self.store;
        let mut held = false;
        // The cached digest knows every stored version: the stored envelope is read only when
        // the incoming one claims that same version (a possible duplicate).
        let outcome = mesh_protocol::merge_lazy(envelope, |id| {
            let version = match store.catalog_digest() {
                Ok(digest) => digest.get(id).copied(),
                Err(_) => store.descriptor(id).ok().flatten().map(|(v, _)| v),
            };
            held = version.is_some();
            let id = id.clone();
            version.map(|v| {
                (v, move || {
                    store
                        .descriptor(&id)
                        .ok()
                        .flatten()
                        .map(|(_, envelope)| envelope)
                })
            })
        });
        match outcome {
            MergeOutcome::Accepted(descriptor)
                if !held && !self.owner_has_room(descriptor.owner) =>
            {
                tracing::info!(owner = %descriptor.owner.fingerprint(), via, "refused a product over its key's budget");
                self.rejected(RejectReason::OverBudget);
                Err(RejectReason::OverBudget)
            }
            MergeOutcome::Accepted(descriptor) => {
                if let Err(reason) = self
                    .gossip_rate(descriptor.owner, via)
                    .and_then(|()| self.make_room_for(&descriptor, envelope, via))
                {
                    self.rejected(reason);
                    return Err(reason);
                }
                if let Err(e) = self.store.put_descriptor(&descriptor, envelope) {
                    tracing::error!("cannot store descriptor: {e}");
                    return Ok(false);
                }
                self.metrics
                    .catalog_size
                    .set(self.store.catalog_len() as i64);
                tracing::debug!(product = %descriptor.display_name(), version = descriptor.version, via, "catalog updated");
                self.emit(NodeEvent::CatalogUpdated {
                    id: descriptor.id(),
                    version: descriptor.version,
                    via,
                    at: Instant::now(),
                });
                Ok(true)
            }
            MergeOutcome::Duplicate => Ok(false),
            MergeOutcome::Rejected(reason) => {
                tracing::info!(?reason, via, "rejected a descriptor");
                self.rejected(reason);
                Err(reason)
            }
        }
    }

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
        // Each round empties one key down to its share, and no key is asked twice for the
        // same write: one round per member at most.
        for _ in 0..=mesh_protocol::governance::state::MAX_MEMBERS {
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
                    match self.store.make_room(&owner, bytes, |id| {
                        consumed
                            .get_or_insert_with(|| self.products_we_consume())
                            .contains(id)
                    }) {
                        Ok(gone) if !gone.is_empty() => {
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

    /// Takes one of `signer`'s gossip tokens for a verified, new message that came by
    /// `via`; only gossip is charged (sync is pulled, one version per product a round).
    fn gossip_rate(&mut self, signer: PublicKey, via: &'static str) -> Result<(), RejectReason> {
        if via != "gossip" {
            return Ok(());
        }
        self.gossip_rates
            .take(&signer, now_ms())
            .map_err(|retry_after_ms| {
                tracing::debug!(signer = %signer.fingerprint(), retry_after_ms, "a key gossips faster than its rate");
                RejectReason::RateLimited
            })
    }

    pub(super) fn accept_node_record(
        &mut self,
        envelope: &Signed<NodeRecord>,
        via: &'static str,
    ) -> Result<bool, RejectReason> {
        if !self.governance.is_member(&envelope.signer()) {
            self.rejected(RejectReason::NotMember);
            return Err(RejectReason::NotMember);
        }
        let current = self.store.node_record(&envelope.signer()).ok().flatten();
        // Byte-identical to the stored record: verified when it was stored.
        if current
            .as_ref()
            .is_some_and(|(_, stored)| stored == envelope)
        {
            return Ok(false);
        }
        match merge_node_record(envelope, current.map(|(t, _)| t)) {
            Ok(Some(record)) => {
                if let Err(reason) = self.gossip_rate(record.key, via) {
                    self.rejected(reason);
                    return Err(reason);
                }
                if let Err(e) = self.store.put_node_record(&record, envelope) {
                    tracing::error!("cannot store node record: {e}");
                    return Ok(false);
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(reason) => {
                self.rejected(reason);
                Err(reason)
            }
        }
    }

    pub(super) fn publish_node_record(&mut self) {
        let me = self.identity.public_key();
        let previous = self
            .store
            .node_record(&me)
            .ok()
            .flatten()
            .map(|(t, _)| t)
            .unwrap_or(0);
        let record = NodeRecord {
            key: me,
            domain: self.config.domain.clone(),
            peer_id: self.peer_id.to_string(),
            // Peers refuse records with more addresses than this.
            addrs: self
                .announced_addrs()
                .into_iter()
                .take(catalog::MAX_NODE_ADDRS)
                .collect(),
            data_addr: self.data_addr.map(|a| a.to_string()),
            issued_at_ms: now_ms().max(previous + 1),
        };
        let envelope = Signed::sign(&self.identity, &record);
        if let Err(e) = self.store.put_node_record(&record, &envelope) {
            tracing::error!("cannot store our node record: {e}");
        }
        self.gossip(GossipMessage::Node(envelope));
        self.record_dirty = false;
    }
}

/// Whether a rejection is the sender's fault, so it costs the sender gossip score. A stale
/// version, or a product over its key's budget, can reach an honest peer first (messages
/// race, catalogs differ for a while): those are dropped without a penalty.
pub(super) fn penalised(reason: RejectReason) -> bool {
    // Not a member: only members connect, so the sender relays what a key signed before its
    // removal reached the sender, or a vote that arrived before its signer's admission.
    !matches!(
        reason,
        RejectReason::Stale
            | RejectReason::OverBudget
            | RejectReason::NotMember
            | RejectReason::RateLimited
    )
}
