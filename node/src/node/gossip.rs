//! The catalog topic: what the node publishes and how it judges what gossip brings.

use std::time::Instant;

use libp2p::gossipsub;
use mesh_protocol::catalog::{self, MergeOutcome, merge_node_record};
use mesh_protocol::wire::GossipMessage;
use mesh_protocol::{NodeRecord, ProductDescriptor, PublicKey, RejectReason, Signed};

use super::{Node, NodeEvent, now_ms};

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

    pub(super) fn on_gossip(
        &mut self,
        data: &[u8],
        source: libp2p::PeerId,
    ) -> gossipsub::MessageAcceptance {
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
        if result == Err(RejectReason::RateLimited) {
            // `source` holds a version newer than the one this node took: sync with it once
            // the signer's bucket has a token again.
            let after = std::time::Duration::from_millis(self.config.gossip_refill_ms);
            self.policy.sync_after(source, after, Instant::now());
        }
        let mut verdict = match result {
            Ok(true) => gossipsub::MessageAcceptance::Accept,
            Ok(false) => gossipsub::MessageAcceptance::Ignore,
            // Rejected: not forwarded, and the sender's gossip score pays for it.
            Err(reason) if penalised(reason) => gossipsub::MessageAcceptance::Reject,
            // Not forwarded, but an honest peer can send it: no penalty.
            Err(_) => gossipsub::MessageAcceptance::Ignore,
        };
        // gossipsub keeps what it hands us (its duplicate cache, its score records) for a
        // minute or two whatever the verdict, and what is ignored costs its sender nothing:
        // past a budget an honest relay does not reach, it costs the sender as a rejection.
        if verdict == gossipsub::MessageAcceptance::Ignore
            && self.ignored_gossip.take(&source, now_ms()).is_err()
        {
            tracing::debug!(peer = %source, "past its budget of ignored gossip: rejected");
            verdict = gossipsub::MessageAcceptance::Reject;
        }
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
        if let Some(claimed) = self.past_share_of_full_catalog(envelope) {
            let reason = self.refuse_past_share(envelope, &claimed);
            self.rejected(reason);
            return Err(reason);
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
                self.refused
                    .note(descriptor.id(), descriptor.version, now_ms());
                self.rejected(RejectReason::OverBudget);
                Err(RejectReason::OverBudget)
            }
            MergeOutcome::Accepted(descriptor) => {
                // The rate is asked first (nothing is removed to make room for a message
                // then dropped) and charged only once the quota took it.
                if let Err(reason) = self
                    .gossip_rate_allows(descriptor.owner, via)
                    .and_then(|()| self.make_room_for(&descriptor, envelope, via))
                {
                    if reason == RejectReason::OverBudget {
                        self.refused
                            .note(descriptor.id(), descriptor.version, now_ms());
                    }
                    self.rejected(reason);
                    return Err(reason);
                }
                self.charge_gossip_rate(descriptor.owner, via);
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

    /// Why a descriptor whose `claimed` owner is past its share of a full catalog is
    /// refused. Its signature is checked once, to remember the refusal (only a genuine
    /// version may hold back what peers send: a forged one could claim any version); a
    /// version already remembered is refused for its budget at once, and a forgery as one.
    fn refuse_past_share(
        &mut self,
        envelope: &Signed<ProductDescriptor>,
        claimed: &ProductDescriptor,
    ) -> RejectReason {
        let now = now_ms();
        if self.refused.holds(&claimed.id(), claimed.version, now) {
            return RejectReason::OverBudget;
        }
        match catalog::verify_descriptor(envelope) {
            Ok(descriptor) => {
                self.refused.note(descriptor.id(), descriptor.version, now);
                RejectReason::OverBudget
            }
            Err(reason) => reason,
        }
    }

    /// Whether `signer` has a gossip token for a verified, new message that came by `via`;
    /// only gossip is limited (sync is pulled, one version per product a round).
    fn gossip_rate_allows(
        &mut self,
        signer: PublicKey,
        via: &'static str,
    ) -> Result<(), RejectReason> {
        if via != "gossip" {
            return Ok(());
        }
        match self.gossip_rates.limited(&signer, now_ms()) {
            None => Ok(()),
            Some(retry_after_ms) => {
                tracing::debug!(signer = %signer.fingerprint(), retry_after_ms, "a key gossips faster than its rate");
                Err(RejectReason::RateLimited)
            }
        }
    }

    /// Takes the token [`Self::gossip_rate_allows`] found, for a message now stored.
    fn charge_gossip_rate(&mut self, signer: PublicKey, via: &'static str) {
        if via == "gossip" {
            // A token is there: asked just before, with no other message in between.
            let _ = self.gossip_rates.take(&signer, now_ms());
        }
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
                if let Err(reason) = self.gossip_rate_allows(record.key, via) {
                    self.rejected(reason);
                    return Err(reason);
                }
                self.charge_gossip_rate(record.key, via);
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

/// Gossip messages from one peer that may be dropped without a penalty in a burst: what
/// its validation ignores (a stale version, a product over its key's budget, a key no longer
/// a member, one over its gossip rate, a copy of what sync brought first). An honest relay
/// forwards only what it took itself, each message once, and every key's gossip is rate
/// limited (`gossip_burst`), so it stays far within this; a peer pushing what is ignored
/// (descriptors signed by any key it makes up cost a decode each) would make gossipsub
/// hold every one of them for a minute.
pub(crate) const IGNORED_GOSSIP_BURST: u32 = 1_024;
/// Milliseconds per further ignored message (100 a second).
pub(crate) const IGNORED_GOSSIP_REFILL_MS: u64 = 10;
/// Peers whose ignored messages are counted (the connected ones at most).
pub(crate) const IGNORED_GOSSIP_PEERS: usize = 4_096;

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
