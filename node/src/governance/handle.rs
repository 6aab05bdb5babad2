//! Typed governance requests from the control API to the actor.

use mesh_protocol::Signed;
use mesh_protocol::governance::{Charter, JoinReply, Member, Motion};

use super::GovernanceCommand;
use crate::error::NodeError;
use crate::node::{Command, NodeHandle};
use crate::views::{
    InviteRequest, MeshView, MotionJson, ProposeRequest, RemoveRequest, TicketView,
};

impl NodeHandle {
    /// The charter, members and policies in force.
    pub async fn mesh(&self) -> Result<MeshView, NodeError> {
        self.call(|reply| Command::Governance(GovernanceCommand::Show { reply }))
            .await
    }

    /// Every motion with its signatures.
    pub async fn motions(&self) -> Result<Vec<MotionJson>, NodeError> {
        self.call(|reply| Command::Governance(GovernanceCommand::Motions { reply }))
            .await
    }

    /// Proposes (and signs) an amendment of the policies.
    pub async fn propose(&self, request: ProposeRequest) -> Result<MotionJson, NodeError> {
        self.call(|reply| Command::Governance(GovernanceCommand::Propose { request, reply }))
            .await?
    }

    /// Signs a motion, named by an id prefix.
    pub async fn sign_motion(&self, motion: String) -> Result<MotionJson, NodeError> {
        self.call(|reply| Command::Governance(GovernanceCommand::Sign { motion, reply }))
            .await?
    }

    /// Proposes (and signs) a member's removal, or signs the open one.
    pub async fn remove_member(&self, request: RemoveRequest) -> Result<MotionJson, NodeError> {
        self.call(|reply| Command::Governance(GovernanceCommand::Remove { request, reply }))
            .await?
    }

    /// Admits a domain whose key is known here without a ticket (in-process tools such as
    /// the simulator): signs its admission and returns the charter and the votes a join
    /// would bring it, to install in its store before it starts.
    pub async fn admit(
        &self,
        member: Member,
    ) -> Result<(Signed<Charter>, Vec<Signed<Motion>>), NodeError> {
        let reply = self
            .call(|reply| Command::Governance(GovernanceCommand::Admit { member, reply }))
            .await??;
        match reply {
            JoinReply::Welcome { charter, votes } => Ok((charter, votes)),
            JoinReply::Refused(why) => Err(NodeError::Refused(why)),
        }
    }

    /// Makes an invitation; the ticket carries it.
    pub async fn invite(&self, request: InviteRequest) -> Result<TicketView, NodeError> {
        self.call(|reply| Command::Governance(GovernanceCommand::Invite { request, reply }))
            .await?
    }
}
