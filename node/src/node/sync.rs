//! Anti-entropy: range reconciliation of the catalog, the node records and the votes with
//! one peer at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use libp2p::PeerId;
use mesh_protocol::governance::Motion;
use mesh_protocol::governance::VoteKey;
use mesh_protocol::peers::SyncOutcome;
use mesh_protocol::reconcile::{self, Reconciler, SyncSet};
use mesh_protocol::wire::{self, GossipMessage, SyncRequest, SyncResponse};
use mesh_protocol::{NodeRecord, ProductDescriptor, ProductId, PublicKey, RejectReason, Signed};

use super::gossip::penalised;
use super::{Node, now_ms};
use crate::store::Digest;

/// Penalty points for each message from a peer that our validation rejects outside gossip
/// (sync answers and requests); gossipsub scores gossip rejections itself.
const SYNC_REJECT_PENALTY: f64 = 1.0;
/// Descriptors learnt through anti-entropy that were published less than this long ago are
/// gossiped on: after a partition heals or a peer reconnects, one sync round brings the news
/// across and gossip spreads it on the other side, instead of one sync interval per hop.
/// Older entries are left to anti-entropy, so a late joiner does not re-gossip the catalog.
const REGOSSIP_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Most descriptors gossiped on from one sync response.
const REGOSSIP_MAX_PER_SYNC: usize = 64;

/// A sync session in flight with one peer: one reconciliation per set, and the request in
/// flight to check the answer against.
#[derive(Debug)]
pub(super) struct SyncSession {
    /// Reconciliation of the catalog.
    products: Reconciler<ProductId>,
    /// Reconciliation of the node records.
    nodes: Reconciler<PublicKey>,
    /// Reconciliation of the governance votes.
    votes: Reconciler<VoteKey>,
    /// The request in flight.
    asked: SyncRequest,
    /// Entries stored from this session's answers so far.
    stored: usize,
}

/// Reconciliation sets built from the store's digests, rebuilt when a digest changes. Only
/// a weak reference to the digest is kept: a strong one would make the store copy the whole
/// digest on every write. A write moves the digest to a new allocation (and a weak
/// reference to the old one no longer upgrades), so a live, identical pointer means "same
/// digest"; the weak reference also keeps the old address from being reused.
#[derive(Debug, Default)]
pub(super) struct SyncSets {
    /// The catalog digest the set was built from, and the set.
    products: Option<CachedSet<ProductId>>,
    /// The node-record digest the set was built from, and the set.
    nodes: Option<CachedSet<PublicKey>>,
    /// The votes held, as a set; dropped whenever a vote is taken or pruned.
    votes: Option<Arc<SyncSet<VoteKey>>>,
    /// What our queries claim of the catalog (held, and refused versions), the set of held
    /// entries and the refusals' generation it was built from.
    claimed: Option<ClaimedSet>,
}

/// The catalog set our queries claim, the held set and the refusals' generation it was
/// built from.
type ClaimedSet = (Weak<SyncSet<ProductId>>, u64, Arc<SyncSet<ProductId>>);

/// A reconciliation set and the digest it was built from.
type CachedSet<K> = (Weak<BTreeMap<K, u64>>, Arc<SyncSet<K>>);

/// The set cached in `slot` if it was built from `digest`, else a new one (cached).
fn cached_set<K: reconcile::SyncKey>(
    slot: &mut Option<CachedSet<K>>,
    digest: Digest<K>,
) -> Arc<SyncSet<K>> {
    if let Some((held, set)) = slot
        && held.upgrade().is_some_and(|d| Arc::ptr_eq(&d, &digest))
    {
        return set.clone();
    }
    let set = Arc::new(SyncSet::from_map(&digest));
    *slot = Some((Arc::downgrade(&digest), set.clone()));
    set
}

impl Node {
    /// The reconciliation set of the catalog, rebuilt only when the catalog changed.
    pub(super) fn product_set(&mut self) -> Arc<SyncSet<ProductId>> {
        let digest = self.store.catalog_digest().unwrap_or_default();
        cached_set(&mut self.sync_sets.products, digest)
    }

    /// What this node's sync queries claim of the catalog: the entries held, and the
    /// versions it refused for their owner's budget (`refused`), so that a peer holding them
    /// does not send them again. Answers to peers are built from [`Self::product_set`].
    pub(super) fn product_query_set(&mut self) -> Arc<SyncSet<ProductId>> {
        let held = self.product_set();
        let now = now_ms();
        self.refused.expire(now);
        if self.refused.is_empty() {
            return held;
        }
        let generation = self.refused.generation();
        if let Some((from, built_at, set)) = &self.sync_sets.claimed
            && *built_at == generation
            && from.upgrade().is_some_and(|f| Arc::ptr_eq(&f, &held))
        {
            return set.clone();
        }
        let set = Arc::new(self.refused.claimed(&held, now));
        self.sync_sets.claimed = Some((Arc::downgrade(&held), generation, set.clone()));
        set
    }

    /// The reconciliation set of the node records, rebuilt only when they changed.
    pub(super) fn node_set(&mut self) -> Arc<SyncSet<PublicKey>> {
        let digest = self.store.node_digest().unwrap_or_default();
        cached_set(&mut self.sync_sets.nodes, digest)
    }

    /// Drops the cached vote set (a vote was taken or pruned).
    pub(crate) fn drop_vote_set(&mut self) {
        self.sync_sets.votes = None;
    }

    /// The reconciliation set of the votes held, rebuilt only when a vote was taken or pruned.
    pub(super) fn vote_set(&mut self) -> Arc<SyncSet<VoteKey>> {
        if let Some(set) = &self.sync_sets.votes {
            return set.clone();
        }
        let set = Arc::new(SyncSet::from_sorted(
            self.governance.state.vote_keys().map(|k| (k, 0)),
        ));
        self.sync_sets.votes = Some(set.clone());
        set
    }

    /// Starts a sync session with `peer` (the policy decided it; see `execute`).
    pub(super) fn start_sync(&mut self, peer: PeerId) {
        let products = self.product_query_set();
        let nodes = self.node_set();
        let votes = self.vote_set();
        self.sync_sessions.insert(
            peer,
            SyncSession {
                products: Reconciler::new(&products),
                nodes: Reconciler::new(&nodes),
                votes: Reconciler::new(&votes),
                asked: SyncRequest::default(),
                stored: 0,
            },
        );
        self.send_sync_round(peer);
    }

    /// Sends the next round of the session with `peer`, or ends it when nothing is left.
    pub(super) fn send_sync_round(&mut self, peer: PeerId) {
        let products = self.product_query_set();
        let nodes = self.node_set();
        let votes = self.vote_set();
        let Some(session) = self.sync_sessions.get_mut(&peer) else {
            return;
        };
        let request = SyncRequest {
            products: session.products.next_query(&products, wire::MAX_SET_QUERY),
            nodes: session.nodes.next_query(&nodes, wire::MAX_SET_QUERY),
            votes: session.votes.next_query(&votes, wire::MAX_SET_QUERY),
        };
        if request.products.ranges.is_empty()
            && request.products.want.is_empty()
            && request.nodes.ranges.is_empty()
            && request.nodes.want.is_empty()
            && request.votes.ranges.is_empty()
            && request.votes.want.is_empty()
        {
            let outcome = if session.products.overflowed()
                || session.nodes.overflowed()
                || session.votes.overflowed()
            {
                SyncOutcome::Truncated {
                    progress: session.stored > 0,
                }
            } else {
                SyncOutcome::Complete {
                    progress: session.stored > 0,
                }
            };
            self.finish_sync(peer, outcome);
            return;
        }
        let bytes = request.to_bytes();
        session.asked = request;
        self.mark_used(peer);
        self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
    }

    /// Ends the session with `peer` and tells the policy how it went.
    pub(super) fn finish_sync(&mut self, peer: PeerId, outcome: SyncOutcome) {
        self.sync_sessions.remove(&peer);
        self.policy.on_sync_finished(&peer, outcome, Instant::now());
    }

    /// `peer` sent something our validation rejects outside gossip: a lower gossip score.
    pub(super) fn penalise(&mut self, peer: PeerId, points: f64) {
        let actions = self.policy.on_misbehaviour(peer, points, Instant::now());
        self.execute(actions);
    }

    pub(super) fn sync_with_random_peer(&mut self) {
        let actions = self.policy.sync_round(Instant::now(), rand::random());
        self.execute(actions);
    }

    pub(super) fn answer_sync(&mut self, peer: PeerId, request: &[u8]) -> Vec<u8> {
        let Some(allowed) = self.policy.allow_sync_answer(&peer, Instant::now()) else {
            // Over its budget: an empty answer marked truncated makes it back off.
            tracing::debug!(%peer, "sync request over the peer's budget");
            return SyncResponse {
                truncated: true,
                ..SyncResponse::default()
            }
            .to_bytes();
        };
        let request = match SyncRequest::from_bytes(request) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%peer, "refused a sync request: {e}");
                self.rejected(RejectReason::Malformed);
                self.penalise(peer, SYNC_REJECT_PENALTY);
                return SyncResponse::default().to_bytes();
            }
        };
        let products = self.product_set();
        let nodes = self.node_set();
        let votes = self.vote_set();
        let (products, nodes, votes) = match (
            reconcile::respond(&products, &request.products),
            reconcile::respond(&nodes, &request.nodes),
            reconcile::respond(&votes, &request.votes),
        ) {
            (Ok(p), Ok(n), Ok(v)) => (p, n, v),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                tracing::debug!(%peer, "refused a sync request: {e}");
                self.rejected(RejectReason::OverLimit);
                self.penalise(peer, SYNC_REJECT_PENALTY);
                return SyncResponse::default().to_bytes();
            }
        };
        let mut response = SyncResponse {
            products: products.answer,
            nodes: nodes.answer,
            votes: votes.answer,
            truncated: products.truncated || nodes.truncated || votes.truncated,
            ..SyncResponse::default()
        };
        // At most what the peer's byte budget has left.
        let mut budget = wire::MAX_SYNC_RESPONSE
            .min(allowed)
            .saturating_sub(1024)
            .saturating_sub(response.to_bytes().len());
        for id in products.send {
            if let Ok(Some((_, envelope))) = self.store.descriptor(&id) {
                let len = envelope.to_bytes().len() + 8;
                if len > budget {
                    response.truncated = true;
                    break;
                }
                budget -= len;
                response.descriptors.push(envelope);
            }
        }
        for key in nodes.send {
            if response.truncated {
                break;
            }
            if let Ok(Some((_, envelope))) = self.store.node_record(&key) {
                let len = envelope.to_bytes().len() + 8;
                if len > budget {
                    response.truncated = true;
                    break;
                }
                budget -= len;
                response.records.push(envelope);
            }
        }
        for key in votes.send {
            if response.truncated {
                break;
            }
            if let Some(vote) = self.governance.state.vote(&key) {
                let len = vote.to_bytes().len() + 8;
                if len > budget {
                    response.truncated = true;
                    break;
                }
                budget -= len;
                response.vote_envelopes.push(vote.clone());
            }
        }
        let answer = response.to_bytes();
        self.policy.charge_sync_answer(&peer, answer.len());
        answer
    }

    pub(super) fn on_sync_response(&mut self, peer: PeerId, bytes: &[u8]) {
        self.metrics.sync_rounds.inc();
        // An answer nobody asked for (the session ended meanwhile) is dropped.
        let Some(mut session) = self.sync_sessions.remove(&peer) else {
            return;
        };
        let response = match SyncResponse::from_bytes(bytes) {
            Ok(r) => r,
            Err(_) => {
                self.rejected(RejectReason::Malformed);
                self.penalise(peer, SYNC_REJECT_PENALTY);
                self.finish_sync(peer, SyncOutcome::Failed);
                return;
            }
        };
        let now = now_ms();
        let mut regossip = Vec::new();
        let mut stored = 0;
        let mut refused = 0usize;
        let (
            Solicited {
                votes,
                descriptors,
                records,
            },
            unsolicited,
        ) = solicited(&session.asked, &response);
        for _ in 0..unsolicited {
            self.rejected(RejectReason::Unsolicited);
        }
        refused += unsolicited;
        // Votes first: an admission learnt here lets the new member's descriptors and
        // records in.
        for vote in votes {
            match self.accept_vote(vote, "sync") {
                Ok(true) => stored += 1,
                Ok(false) => {}
                Err(reason) => refused += usize::from(penalised(reason)),
            }
        }
        for envelope in descriptors {
            match self.accept_descriptor(envelope, "sync") {
                Ok(true) => {
                    stored += 1;
                    self.metrics.sync_entries.inc();
                    let fresh = envelope
                        .decode_trusted()
                        .is_ok_and(|d| now.saturating_sub(d.published_at_ms) < REGOSSIP_WINDOW_MS);
                    if fresh && regossip.len() < REGOSSIP_MAX_PER_SYNC {
                        regossip.push(envelope.clone());
                    }
                }
                Ok(false) => {}
                Err(reason) => refused += usize::from(penalised(reason)),
            }
        }
        for envelope in regossip {
            self.gossip(GossipMessage::Descriptor(envelope));
        }
        for envelope in records {
            match self.accept_node_record(envelope, "sync") {
                Ok(true) => stored += 1,
                Ok(false) => {}
                Err(reason) => refused += usize::from(penalised(reason)),
            }
        }
        if refused > 0 {
            self.penalise(peer, SYNC_REJECT_PENALTY * refused as f64);
        }
        session.stored += stored;
        let products = self.product_query_set();
        let nodes = self.node_set();
        let votes = self.vote_set();
        let answered = session
            .products
            .on_answer(&products, &session.asked.products, response.products)
            .and_then(|()| {
                session
                    .nodes
                    .on_answer(&nodes, &session.asked.nodes, response.nodes)
            })
            .and_then(|()| {
                session
                    .votes
                    .on_answer(&votes, &session.asked.votes, response.votes)
            });
        if let Err(e) = answered {
            tracing::debug!(%peer, "refused a sync answer: {e}");
            self.rejected(RejectReason::OverLimit);
            self.penalise(peer, SYNC_REJECT_PENALTY);
            self.finish_sync(peer, SyncOutcome::Failed);
            return;
        }
        if response.truncated {
            // Never at once: the policy schedules the next session after a delay.
            self.finish_sync(
                peer,
                SyncOutcome::Truncated {
                    progress: stored > 0,
                },
            );
            return;
        }
        self.sync_sessions.insert(peer, session);
        self.send_sync_round(peer);
    }
}

/// The entries of a sync answer that its query asked for.
struct Solicited<'r> {
    votes: Vec<&'r Signed<Motion>>,
    descriptors: Vec<&'r Signed<ProductDescriptor>>,
    records: Vec<&'r Signed<NodeRecord>>,
}

/// Splits `response` into what the query `asked` solicits ([`reconcile::SetQuery::solicits`])
/// and the number of entries it carried besides, which no honest responder sends. Read
/// from the claimed bodies, before any signature is checked.
fn solicited<'r>(asked: &SyncRequest, response: &'r SyncResponse) -> (Solicited<'r>, usize) {
    let (votes, extra_votes): (Vec<_>, Vec<_>) = response
        .vote_envelopes
        .iter()
        .partition(|v| asked.votes.solicits(&VoteKey::of(v), 0));
    let (descriptors, extra_descriptors): (Vec<_>, Vec<_>) =
        response.descriptors.iter().partition(|d| {
            d.decode_trusted()
                .is_ok_and(|d| asked.products.solicits(&d.id(), d.version))
        });
    let (records, extra_records): (Vec<_>, Vec<_>) = response.records.iter().partition(|r| {
        r.decode_trusted()
            .is_ok_and(|r| asked.nodes.solicits(&r.key, r.issued_at_ms))
    });
    let extra = extra_votes.len() + extra_descriptors.len() + extra_records.len();
    (
        Solicited {
            votes,
            descriptors,
            records,
        },
        extra,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_sets_follow_digest_writes_without_pinning_the_digest() {
        let mut slot = None;
        let mut digest: Digest<PublicKey> =
            Arc::new([(PublicKey([1; 32]), 1)].into_iter().collect());
        let first = cached_set(&mut slot, digest.clone());
        assert!(Arc::ptr_eq(&first, &cached_set(&mut slot, digest.clone())));
        // The cache holds no strong reference: the store's write updates the digest in place.
        assert_eq!(Arc::strong_count(&digest), 1);
        Arc::make_mut(&mut digest).insert(PublicKey([2; 32]), 1);
        let second = cached_set(&mut slot, digest.clone());
        assert_eq!((first.len(), second.len()), (1, 2));
        assert!(Arc::ptr_eq(&second, &cached_set(&mut slot, digest)));
    }
}
