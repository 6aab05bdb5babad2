//! Mesh membership and governance in the daemon: the charter and votes on disk, the member
//! set the connection gates read, the join protocol, and the actor's handlers.
//!
//! The decisions are `mesh_protocol::governance`'s pure functions; this module stores what
//! they take, executes what they decide and wires them to the swarm:
//!
//! - `persist`: the charter, votes and invitations in sled;
//! - [`charter_file`]: a charter as people write it (`charter.toml`);
//! - [`gate`]: [`MemberSet`], the member keys the data plane and the fetch path check;
//! - [`join`]: the newcomer's side of a join (a one-shot swarm with the ticket's key);
//! - `actor`: the handlers of the node actor (votes from gossip and sync, joins, commands);
//! - `handle`: typed requests from the control API to the actor.
//!
//! The HTTP routes live with the API (`api::governance`).

mod actor;
pub mod charter_file;
pub mod gate;
mod handle;
pub mod join;
mod persist;

pub(crate) use actor::GovernanceCommand;
pub use charter_file::{CharterFileError, read_charter};
pub use gate::MemberSet;
pub use persist::{GovernanceStoreError, found_solo, install, load_charter, load_state, refound};

use std::collections::HashMap;

use libp2p::PeerId;
use mesh_protocol::governance::{
    Changes, Invitation, MeshState, Motion, VoteKey, VoteOutcome, VoteRefusal,
};
use mesh_protocol::{PublicKey, Signed};

use crate::store::Store;

/// Most open invitations a node keeps.
pub const MAX_OPEN_INVITATIONS: usize = 64;

/// The node's governance state: the pure state, its persistence and the shared member set.
pub(crate) struct Governance {
    /// Charter and votes, and what they decide.
    pub(crate) state: MeshState,
    /// Member keys, shared with the data plane.
    pub(crate) members: MemberSet,
    /// Trees on disk.
    trees: persist::Trees,
    /// Open invitations by the peer id of their key (the id a newcomer connects with).
    invitations: HashMap<PeerId, Invitation>,
    /// Control-plane connections refused because the key is not a member.
    pub(crate) refused_inbound: u64,
    /// Keys to shut out a little later, and since when: invitation keys whose join was
    /// answered (closing at once drops the answer in flight) and removed members (so the
    /// vote that removed them reaches them too, and they learn it).
    pub(crate) answered: Vec<(PeerId, std::time::Instant)>,
}

impl std::fmt::Debug for Governance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governance")
            .field("mesh", &self.state.id())
            .field("members", &self.state.member_count())
            .finish_non_exhaustive()
    }
}

impl Governance {
    /// Reads the charter, votes and invitations from the store. A store without a charter
    /// (initialised before meshes had charters) founds a mesh with this node alone.
    pub(crate) fn load(
        store: &Store,
        identity: &mesh_protocol::Identity,
        domain: &str,
        now_ms: u64,
        members: MemberSet,
    ) -> Result<Self, GovernanceStoreError> {
        let trees = persist::Trees::open(store)?;
        let charter = match trees.charter()? {
            Some(c) => c,
            None => {
                tracing::info!(
                    "no mesh charter in the store: founding a mesh with this domain alone"
                );
                persist::found_solo(store, identity, domain, now_ms)?
            }
        };
        let votes = trees.votes()?;
        let (state, refused) =
            MeshState::restore(charter, votes).map_err(GovernanceStoreError::Charter)?;
        for (vote, why) in &refused {
            tracing::debug!(motion = %mesh_protocol::governance::MotionId::of(vote), "stored vote no longer counts: {why}");
            trees.delete_vote(&VoteKey::of(vote))?;
        }
        members.replace(state.members().map(|(k, _)| *k));
        let invitations = trees
            .invitations()?
            .into_iter()
            .filter(|i| i.expires_at_ms > now_ms)
            .filter_map(|i| crate::negotiation::peer_id_of(&i.key).map(|p| (p, i)))
            .collect();
        Ok(Self {
            state,
            members,
            trees,
            invitations,
            refused_inbound: 0,
            answered: Vec::new(),
        })
    }

    /// Offers a vote; stores it and drops the votes that stopped counting.
    pub(crate) fn offer(&mut self, vote: &Signed<Motion>) -> Result<OfferResult, VoteRefusal> {
        let outcome = self.state.offer(vote)?;
        let VoteOutcome::Accepted(changes) = outcome else {
            return Ok(OfferResult::Duplicate);
        };
        if let Err(e) = self.trees.put_vote(&VoteKey::of(vote), vote) {
            tracing::error!("cannot store a vote: {e}");
        }
        for key in &changes.pruned {
            if let Err(e) = self.trees.delete_vote(key) {
                tracing::error!("cannot delete a vote that no longer counts: {e}");
            }
        }
        if !changes.admitted.is_empty() || !changes.removed.is_empty() {
            self.members.replace(self.state.members().map(|(k, _)| *k));
        }
        Ok(OfferResult::Accepted(changes))
    }

    /// Whether `key` is a member.
    pub(crate) fn is_member(&self, key: &PublicKey) -> bool {
        self.state.is_member(key)
    }

    /// Whether `peer` is a member's peer id.
    pub(crate) fn is_member_peer(&self, peer: &PeerId) -> bool {
        crate::negotiation::key_of(peer).is_some_and(|k| self.is_member(&k))
    }

    /// The open invitation a connection from `peer` holds, if any.
    pub(crate) fn invitation(&self, peer: &PeerId) -> Option<&Invitation> {
        self.invitations.get(peer)
    }

    /// Peer ids of the unused invitations (the gate lets them in for the join protocol).
    pub(crate) fn invitation_peers(&self) -> impl Iterator<Item = &PeerId> {
        self.invitations
            .iter()
            .filter(|(_, i)| !i.used)
            .map(|(p, _)| p)
    }
}

/// What offering a vote did.
#[derive(Debug)]
pub(crate) enum OfferResult {
    /// New, stored; what it changed.
    Accepted(Changes),
    /// Already held.
    Duplicate,
}

impl Governance {
    /// Remembers an invitation (persisted) and returns the peer id its key connects with.
    /// Expired and used invitations are dropped first; at most [`MAX_OPEN_INVITATIONS`].
    pub(crate) fn add_invitation(
        &mut self,
        invitation: Invitation,
        now_ms: u64,
    ) -> Result<PeerId, crate::error::NodeError> {
        use crate::error::NodeError;
        let expired: Vec<PeerId> = self
            .invitations
            .iter()
            .filter(|(_, i)| i.expires_at_ms <= now_ms)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            if let Some(i) = self.invitations.remove(&peer) {
                let _ = self.trees.delete_invitation(&i);
            }
        }
        if self.invitations.values().filter(|i| !i.used).count() >= MAX_OPEN_INVITATIONS {
            return Err(NodeError::Conflict(format!(
                "{MAX_OPEN_INVITATIONS} invitations are open, the most a node keeps: wait until some are used or expire"
            )));
        }
        let peer = crate::negotiation::peer_id_of(&invitation.key)
            .ok_or_else(|| NodeError::Internal("invitation key is not ed25519".into()))?;
        self.trees
            .put_invitation(&invitation)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        self.invitations.insert(peer, invitation);
        Ok(peer)
    }

    /// Marks the invitation held by `peer` used by `member` (persisted). It stays known
    /// until it expires, so the same newcomer can claim again if its answer was lost.
    pub(crate) fn spend_invitation(&mut self, peer: &PeerId, member: PublicKey) {
        if let Some(invitation) = self.invitations.get_mut(peer) {
            invitation.used = true;
            invitation.claimed_by = Some(member);
            if let Err(e) = self.trees.put_invitation(invitation) {
                tracing::error!("cannot record a used invitation: {e}");
            }
        }
    }
}
