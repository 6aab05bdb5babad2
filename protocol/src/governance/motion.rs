//! Motions: admissions, removals and amendments, carried by signatures.
//!
//! A motion is one body; each signature over it is a vote, a `Signed<Motion>` of its own.
//! Every vote travels and is stored on its own, so a motion collects its signatures over
//! gossip and anti-entropy from wherever they were given.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::{Signable, Signed};
use crate::governance::charter::{Member, MeshId};
use crate::governance::policy::Policies;
use crate::identity::PublicKey;
use crate::reconcile::SyncKey;

/// Longest removal reason or amendment summary, in bytes.
pub const MAX_NOTE_LEN: usize = 1024;

/// What a motion decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Admit a domain as a member.
    Admit(Member),
    /// Remove a member: every node refuses its key, and its agreements end.
    Remove {
        /// The member's key.
        key: PublicKey,
        /// Why, for the record.
        reason: String,
    },
    /// Replace the global policies by a new version.
    Amend {
        /// The new policies; their version must be higher than the one in force.
        policies: Policies,
        /// What changes and why, for the record.
        summary: String,
    },
}

impl Action {
    /// A short label: `admit`, `remove` or `amend`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Admit(_) => "admit",
            Action::Remove { .. } => "remove",
            Action::Amend { .. } => "amend",
        }
    }
}

/// A proposal to the mesh. Signatures over the same body are votes for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Motion {
    /// The mesh it belongs to; a motion of another mesh is refused.
    pub mesh: MeshId,
    /// What it decides.
    pub action: Action,
    /// Who proposed it (the first signer), so that two proposals of the same action differ.
    pub proposer: PublicKey,
    /// When it was proposed, Unix milliseconds.
    pub proposed_at_ms: u64,
}

impl Signable for Motion {
    const CONTEXT: &'static str = "meshnode/motion/v1";
    const MAX_BODY: usize = 16 * 1024;
}

/// A motion's id: the hash of its body, the same for every vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MotionId(pub [u8; 32]);

impl MotionId {
    /// The id of a motion body.
    pub fn of_body(body: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"meshnode/motion-id/v1");
        hasher.update(body);
        Self(*hasher.finalize().as_bytes())
    }

    /// The id of the motion a vote is for.
    pub fn of(vote: &Signed<Motion>) -> Self {
        Self::of_body(vote.body())
    }

    /// Full lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `prefix` (hex, any length) starts this id.
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.to_hex().starts_with(&prefix.to_ascii_lowercase())
    }
}

impl fmt::Display for MotionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

/// The key of one vote in the reconciled set of votes: the motion and the signer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VoteKey {
    /// The motion voted for.
    pub motion: MotionId,
    /// The voter.
    pub signer: PublicKey,
}

impl VoteKey {
    /// The key of a vote envelope.
    pub fn of(vote: &Signed<Motion>) -> Self {
        Self {
            motion: MotionId::of(vote),
            signer: vote.signer(),
        }
    }
}

impl SyncKey for VoteKey {
    fn hash_into(&self, hasher: &mut blake3::Hasher) {
        hasher.update(&self.motion.0);
        hasher.update(&self.signer.0);
    }
}
