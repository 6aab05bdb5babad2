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
    Changes, Invitation, JoinAnswers, MeshState, Motion, VoteKey, VoteOutcome, VoteRefusal,
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
    /// Join requests answered per invitation key.
    pub(crate) join_answers: JoinAnswers,
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
    /// Reads the charter, votes and invitations from the store and forgets the expired
    /// invitations. A store without a charter (initialised before meshes had charters)
    /// founds a mesh with this node alone, unless it holds votes or invitations: then the
    /// charter record was lost, and founding a new mesh would detach the node from its own.
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
                if let Some(what) = trees.mesh_records()? {
                    return Err(GovernanceStoreError::CharterMissing { what });
                }
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
            .filter_map(|i| crate::negotiation::peer_id_of(&i.key).map(|p| (p, i)))
            .collect();
        let mut governance = Self {
            state,
            members,
            trees,
            invitations,
            refused_inbound: 0,
            answered: Vec::new(),
            join_answers: JoinAnswers::default(),
        };
        // The gate is opened after this, for the invitations that remain.
        governance.expire_invitations(now_ms);
        Ok(governance)
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

    /// Whether the join protocol is over for `peer`'s key: it holds no invitation, or one
    /// used or asked about too often.
    pub(crate) fn join_done(&self, peer: &PeerId) -> bool {
        self.invitations
            .get(peer)
            .is_none_or(|i| i.used || self.join_answers.exhausted(&i.key))
    }

    /// Whether `peer` is already waiting in [`Governance::answered`].
    pub(crate) fn is_answered(&self, peer: &PeerId) -> bool {
        self.answered.iter().any(|(p, _)| p == peer)
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
        self.expire_invitations(now_ms);
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

    /// Forgets the invitations expired at `now_ms` (used or not: an expired key may no
    /// longer join), in memory and in the store, and returns the peer ids the gate shuts
    /// now. Keys whose join was just answered are left to `Governance::answered`, so the
    /// answer in flight is not dropped.
    pub(crate) fn expire_invitations(&mut self, now_ms: u64) -> Vec<PeerId> {
        let mut shut = Vec::new();
        for peer in expired_invitations(&self.invitations, now_ms) {
            let Some(invitation) = self.invitations.remove(&peer) else {
                continue;
            };
            if let Err(e) = self.trees.delete_invitation(&invitation) {
                tracing::error!("cannot delete an expired invitation: {e}");
            }
            self.join_answers.forget(&invitation.key);
            tracing::debug!(domain = %invitation.domain, %peer, "invitation expired");
            let answering = self.answered.iter().any(|(p, _)| *p == peer);
            if !answering && !self.is_member_peer(&peer) {
                shut.push(peer);
            }
        }
        shut
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

/// The invitations of `invitations` that have expired at `now_ms`, used or not: from their
/// expiry on, a claim is refused (`check_claim`), so neither the gate nor the store keeps
/// them.
fn expired_invitations<'a, K: Copy + 'a>(
    invitations: impl IntoIterator<Item = (&'a K, &'a Invitation)>,
    now_ms: u64,
) -> Vec<K> {
    invitations
        .into_iter()
        .filter(|(_, i)| now_ms >= i.expires_at_ms)
        .map(|(k, _)| *k)
        .collect()
}

#[cfg(test)]
mod tests {
    use mesh_protocol::Identity;
    use mesh_protocol::governance::{Action, Member};

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn invitation(n: u8, expires_at_ms: u64) -> Invitation {
        Invitation {
            key: Identity::from_secret_bytes([n; 32]).public_key(),
            domain: format!("domain{n}"),
            expires_at_ms,
            used: false,
            claimed_by: None,
        }
    }

    fn founder() -> Identity {
        Identity::from_secret_bytes([7; 32])
    }

    fn load(store: &Store, now_ms: u64) -> Result<Governance, GovernanceStoreError> {
        Governance::load(store, &founder(), "sales", now_ms, MemberSet::default())
    }

    /// Loses the charter record, as a damaged or hand-edited database does.
    fn drop_charter(store: &Store) {
        let meta = store.governance_tree("meta").unwrap();
        assert!(meta.remove(b"charter").unwrap().is_some());
    }

    #[test]
    fn invitations_expire_at_their_expiry() {
        let held: HashMap<u8, Invitation> = [
            (1, invitation(1, NOW - 1)),
            (2, invitation(2, NOW)),
            (3, invitation(3, NOW + 1)),
            (
                4,
                Invitation {
                    used: true,
                    ..invitation(4, NOW - 10)
                },
            ),
        ]
        .into_iter()
        .collect();
        let mut expired = expired_invitations(&held, NOW);
        expired.sort();
        // At its expiry a claim is refused already (`check_claim`); used ones go too.
        assert_eq!(expired, [1, 2, 4]);
        assert!(expired_invitations(&held, NOW - 11).is_empty());
        assert_eq!(expired_invitations(&held, u64::MAX).len(), 4);
    }

    #[test]
    fn expired_invitations_leave_the_gate_and_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut governance = load(&store, NOW).unwrap();
        let early = governance
            .add_invitation(invitation(1, NOW + 1_000), NOW)
            .unwrap();
        let late = governance
            .add_invitation(invitation(2, NOW + 60_000), NOW)
            .unwrap();
        let used = governance
            .add_invitation(invitation(3, NOW + 2_000), NOW)
            .unwrap();
        let answered = governance
            .add_invitation(invitation(4, NOW + 2_000), NOW)
            .unwrap();
        let newcomer = Identity::from_secret_bytes([9; 32]).public_key();
        governance.spend_invitation(&used, newcomer);
        // Its join was answered just now: the answered list closes it after a grace.
        governance
            .answered
            .push((answered, std::time::Instant::now()));

        assert!(governance.expire_invitations(NOW + 999).is_empty());
        assert_eq!(governance.expire_invitations(NOW + 1_000), [early]);
        assert!(governance.invitation(&early).is_none());
        assert_eq!(
            governance.expire_invitations(NOW + 2_000),
            [used],
            "used invitations go too; an answered one is left to its grace"
        );
        for peer in [used, answered] {
            assert!(governance.invitation(&peer).is_none());
        }
        let open: Vec<PeerId> = governance.invitation_peers().copied().collect();
        assert_eq!(open, [late]);

        // Gone from the store too: a restart before their expiry does not bring them back.
        let reloaded = load(&store, NOW).unwrap();
        let open: Vec<PeerId> = reloaded.invitation_peers().copied().collect();
        assert_eq!(open, [late]);
        assert!(reloaded.invitation(&used).is_none());
        // And a restart after an expiry forgets it for good.
        drop(reloaded);
        let later = load(&store, NOW + 60_000).unwrap();
        assert_eq!(later.invitation_peers().count(), 0);
        assert!(load(&store, NOW).unwrap().invitation(&late).is_none());
    }

    #[test]
    fn a_store_without_a_charter_or_mesh_records_founds_a_solo_mesh() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(load_charter(&store).unwrap().is_none());
        let governance = load(&store, NOW).unwrap();
        assert_eq!(governance.state.member_count(), 1);
        assert!(governance.is_member(&founder().public_key()));
        let charter = load_charter(&store)
            .unwrap()
            .expect("the charter is stored");
        assert_eq!(
            mesh_protocol::governance::MeshId::of_body(charter.body()),
            governance.state.id()
        );
    }

    #[test]
    fn a_store_that_lost_its_charter_but_holds_votes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut governance = load(&store, NOW).unwrap();
        let motion = Motion {
            mesh: governance.state.id(),
            action: Action::Admit(Member {
                key: Identity::from_secret_bytes([9; 32]).public_key(),
                domain: "churn".into(),
            }),
            proposer: founder().public_key(),
            proposed_at_ms: NOW,
        };
        let vote = Signed::sign(&founder(), &motion);
        assert!(matches!(
            governance.offer(&vote),
            Ok(OfferResult::Accepted(_))
        ));
        assert_eq!(governance.state.member_count(), 2);
        drop(governance);
        drop_charter(&store);

        let err = load(&store, NOW).unwrap_err();
        assert!(
            matches!(err, GovernanceStoreError::CharterMissing { what: "votes" }),
            "{err:?}"
        );
        let message = err.to_string();
        for hint in ["no mesh charter", "backup", "meshnode mesh join"] {
            assert!(message.contains(hint), "{hint}: {message}");
        }
        // Nothing was founded in its place.
        assert!(load_charter(&store).unwrap().is_none());
    }

    #[test]
    fn a_store_that_lost_its_charter_but_holds_invitations_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut governance = load(&store, NOW).unwrap();
        governance
            .add_invitation(invitation(1, NOW + 60_000), NOW)
            .unwrap();
        drop(governance);
        drop_charter(&store);

        let err = load(&store, NOW).unwrap_err();
        assert!(
            matches!(
                err,
                GovernanceStoreError::CharterMissing {
                    what: "invitations"
                }
            ),
            "{err:?}"
        );
        assert!(load_charter(&store).unwrap().is_none());
    }
}
