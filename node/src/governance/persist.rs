//! The charter, the votes and the invitations in sled.

use mesh_protocol::governance::{
    Charter, GovernanceError, Invitation, Member, MeshState, Motion, VoteKey,
};
use mesh_protocol::{Identity, Signed, codec};

use crate::store::{Store, StoreError};

/// Key of the charter in the `meta` tree.
const CHARTER_KEY: &[u8] = b"charter";
/// Largest stored invitation.
const MAX_INVITATION: usize = 1024;

/// Why the governance state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceStoreError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// sled failed.
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode.
    #[error("the stored {what} is damaged ({reason}): restore the data directory from a backup")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The charter is not valid.
    #[error("the mesh charter is not valid: {0}")]
    Charter(#[source] GovernanceError),
    /// The store holds a mesh's votes or invitations but no charter: the charter record was
    /// lost, and founding a new mesh in its place would detach the node from its mesh.
    #[error(
        "the store holds {what} of a mesh but no mesh charter: the charter record is lost (a damaged or edited database). \
         The node does not found a new mesh in its place, which would detach it from its own: restore the data directory from a backup, \
         or, with the daemon stopped, join the mesh again with `meshnode mesh join TICKET` (a new ticket from a member)"
    )]
    CharterMissing {
        /// What the store still holds (`votes`, `invitations`).
        what: &'static str,
    },
    /// A mesh is already founded or joined here.
    #[error(
        "this node already belongs to mesh {0}: a node runs in exactly one mesh; initialise a new data directory to found or join another"
    )]
    AlreadyInMesh(String),
}

/// The governance trees.
#[derive(Clone)]
pub(super) struct Trees {
    /// `charter` -> signed charter.
    meta: sled::Tree,
    /// motion id || signer -> signed motion (a vote).
    votes: sled::Tree,
    /// invitation key -> invitation.
    invitations: sled::Tree,
}

impl Trees {
    pub(super) fn open(store: &Store) -> Result<Self, GovernanceStoreError> {
        Ok(Self {
            meta: store.governance_tree("meta")?,
            votes: store.governance_tree("votes")?,
            invitations: store.governance_tree("invitations")?,
        })
    }

    pub(super) fn charter(&self) -> Result<Option<Signed<Charter>>, GovernanceStoreError> {
        let Some(bytes) = self.meta.get(CHARTER_KEY)? else {
            return Ok(None);
        };
        Signed::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| GovernanceStoreError::Corrupt {
                what: "charter",
                reason: e.to_string(),
            })
    }

    /// What of a mesh the store holds besides its charter, if anything: a store initialised
    /// before meshes had charters holds neither votes nor invitations. Reads one key per tree.
    pub(super) fn mesh_records(&self) -> Result<Option<&'static str>, GovernanceStoreError> {
        let votes = self.votes.first()?.is_some();
        let invitations = self.invitations.first()?.is_some();
        Ok(match (votes, invitations) {
            (true, true) => Some("votes and invitations"),
            (true, false) => Some("votes"),
            (false, true) => Some("invitations"),
            (false, false) => None,
        })
    }

    fn put_charter(&self, charter: &Signed<Charter>) -> Result<(), GovernanceStoreError> {
        self.meta.insert(CHARTER_KEY, charter.to_bytes())?;
        Ok(())
    }

    pub(super) fn votes(&self) -> Result<Vec<Signed<Motion>>, GovernanceStoreError> {
        let mut out = Vec::new();
        for item in self.votes.iter() {
            let (_, bytes) = item?;
            out.push(
                Signed::from_bytes(&bytes).map_err(|e| GovernanceStoreError::Corrupt {
                    what: "vote",
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    pub(super) fn put_vote(
        &self,
        key: &VoteKey,
        vote: &Signed<Motion>,
    ) -> Result<(), GovernanceStoreError> {
        self.votes.insert(vote_key(key), vote.to_bytes())?;
        Ok(())
    }

    pub(super) fn delete_vote(&self, key: &VoteKey) -> Result<(), GovernanceStoreError> {
        self.votes.remove(vote_key(key))?;
        Ok(())
    }

    pub(super) fn invitations(&self) -> Result<Vec<Invitation>, GovernanceStoreError> {
        let mut out = Vec::new();
        for item in self.invitations.iter() {
            let (_, bytes) = item?;
            out.push(codec::decode(&bytes, MAX_INVITATION).map_err(|e| {
                GovernanceStoreError::Corrupt {
                    what: "invitation",
                    reason: e.to_string(),
                }
            })?);
        }
        Ok(out)
    }

    pub(super) fn put_invitation(
        &self,
        invitation: &Invitation,
    ) -> Result<(), GovernanceStoreError> {
        self.invitations
            .insert(invitation.key.0, codec::encode(invitation))?;
        Ok(())
    }

    pub(super) fn delete_invitation(
        &self,
        invitation: &Invitation,
    ) -> Result<(), GovernanceStoreError> {
        self.invitations.remove(invitation.key.0)?;
        Ok(())
    }
}

fn vote_key(key: &VoteKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(&key.motion.0);
    k.extend_from_slice(&key.signer.0);
    k
}

/// The signed charter stored in `store`, if a mesh was founded or joined.
pub fn load_charter(store: &Store) -> Result<Option<Signed<Charter>>, GovernanceStoreError> {
    Trees::open(store)?.charter()
}

/// Founds a mesh with this domain as its sole governor and stores its charter.
pub fn found_solo(
    store: &Store,
    identity: &Identity,
    domain: &str,
    now_ms: u64,
) -> Result<Signed<Charter>, GovernanceStoreError> {
    let founder = Member {
        key: identity.public_key(),
        domain: domain.to_owned(),
    };
    let charter = Charter::solo(domain, founder, now_ms, rand::random());
    let signed = Signed::sign(identity, &charter);
    install(store, &signed, &[])?;
    Ok(signed)
}

/// Stores a charter (checked) and votes: what `init --charter`, a join and the simulator's
/// nodes start from. Refuses a store that already holds another mesh's charter.
pub fn install(
    store: &Store,
    charter: &Signed<Charter>,
    votes: &[Signed<Motion>],
) -> Result<MeshState, GovernanceStoreError> {
    let trees = Trees::open(store)?;
    let (state, _) = MeshState::restore(charter.clone(), votes.iter().cloned())
        .map_err(GovernanceStoreError::Charter)?;
    if let Some(held) = trees.charter()?
        && held != *charter
    {
        let id = mesh_protocol::governance::MeshId::of_body(held.body());
        return Err(GovernanceStoreError::AlreadyInMesh(id.short()));
    }
    trees.put_charter(charter)?;
    for vote in state.votes() {
        trees.put_vote(&VoteKey::of(vote), vote)?;
    }
    Ok(state)
}

/// Moves a node from the mesh it founded alone into another (`mesh create --charter`,
/// `mesh join`): allowed only while its own mesh has no other member and no vote, so
/// nothing anyone else relies on is dropped. A node never leaves a shared mesh this way.
pub fn refound(
    store: &Store,
    identity: &Identity,
    charter: &Signed<Charter>,
    votes: &[Signed<Motion>],
) -> Result<MeshState, GovernanceStoreError> {
    let trees = Trees::open(store)?;
    if let Some(held) = trees.charter()? {
        if held == *charter {
            return install(store, charter, votes);
        }
        let (state, _) = MeshState::restore(held.clone(), trees.votes()?)
            .map_err(GovernanceStoreError::Charter)?;
        let solo = state.member_count() == 1
            && state.is_member(&identity.public_key())
            && state.votes().next().is_none();
        if !solo {
            return Err(GovernanceStoreError::AlreadyInMesh(state.id().short()));
        }
        trees.meta.remove(CHARTER_KEY)?;
        trees.votes.clear()?;
    }
    install(store, charter, votes)
}

/// The mesh state a store holds (charter and votes), read offline; `None` before a mesh
/// was founded or joined.
pub fn load_state(store: &Store) -> Result<Option<MeshState>, GovernanceStoreError> {
    let trees = Trees::open(store)?;
    let Some(charter) = trees.charter()? else {
        return Ok(None);
    };
    let (state, _) =
        MeshState::restore(charter, trees.votes()?).map_err(GovernanceStoreError::Charter)?;
    Ok(Some(state))
}
