//! Mesh membership and federated computational governance, as pure data and functions.
//!
//! - [`charter`]: the signed document that founds a mesh; the mesh id is its hash.
//! - [`motion`]: admissions, removals and amendments; every signature is a vote.
//! - [`state`]: what a set of votes decides (members, removed keys, policies in force),
//!   independent of arrival order, with bounded state per signer.
//! - [`policy`]: the global rules (classification, required fields, contract caps), each
//!   with an id, an explanation and a check.
//! - [`join`]: tickets, invitations and the join claim.

pub mod charter;
pub mod join;
pub mod motion;
pub mod policy;
pub mod state;

pub use charter::{AdmissionRule, Charter, Member, MeshId, verify_charter};
pub use join::{
    ClaimRefusal, Invitation, JoinAnswers, JoinClaim, JoinReply, Ticket, TicketError, check_claim,
};
pub use motion::{Action, Motion, MotionId, VoteKey};
pub use policy::{Policies, RequiredField, Rule, Violation};
pub use state::{Changes, Eligible, MeshState, MotionView, VoteOutcome, VoteRefusal};

use crate::bounds::BoundsError;
use crate::envelope::EnvelopeError;

/// Why a charter or governance request is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GovernanceError {
    /// Bad signature or encoding.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Over a size or count limit.
    #[error(transparent)]
    OverLimit(#[from] BoundsError),
    /// Breaks a rule of charters or motions.
    #[error("{0}")]
    Invalid(String),
    /// No motion with that id.
    #[error("no motion `{0}` is known here: `meshnode governance status` lists them")]
    UnknownMotion(String),
}
