//! The contract methods of [`NodeHandle`]: typed requests to the actor, each carrying a
//! oneshot for its answer. The actor side is in [`super`]; the HTTP routes that call these
//! are in `crate::api::contracts`.

use tokio::sync::oneshot;

use crate::error::NodeError;
use crate::node::{Command, NodeHandle};
use crate::odcs::DataContract;
use crate::views::{AgreementView, AuditView, SharePage, ShareQuery, ShareRequest};

/// Contract commands from [`crate::NodeHandle`] to the actor.
#[derive(Debug)]
pub(crate) enum ContractCommand {
    /// `share request`.
    Request {
        /// What the user asked for.
        request: ShareRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<AgreementView, NodeError>>,
    },
    /// `share list`: a page of contracts, read off the actor.
    List {
        /// The page asked for.
        query: ShareQuery,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<SharePage, NodeError>>,
    },
    /// `share pending`.
    Pending {
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Vec<AgreementView>, NodeError>>,
    },
    /// `share show`.
    Show {
        /// Full id or unique prefix, as typed.
        id: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<AgreementView, NodeError>>,
    },
    /// `share show --odcs`.
    Odcs {
        /// Full id or unique prefix, as typed.
        id: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<DataContract, NodeError>>,
    },
    /// `share accept`.
    Accept {
        /// Full id or unique prefix, as typed.
        id: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<AgreementView, NodeError>>,
    },
    /// `share reject`.
    Reject {
        /// Full id or unique prefix, as typed.
        id: String,
        /// Why, for the consumer.
        reason: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<AgreementView, NodeError>>,
    },
    /// `share revoke`.
    Revoke {
        /// Full id or unique prefix, as typed.
        id: String,
        /// Why, for the other party.
        reason: Option<String>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<AgreementView, NodeError>>,
    },
    /// `audit`.
    Audit {
        /// The page asked for, or only the verdict.
        query: crate::integrity::AuditQuery,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<AuditView, NodeError>>,
    },
    /// `audit --archive`.
    ArchiveAudit {
        /// Entries to keep in the store, the newest.
        keep: u64,
        /// Where the answer goes: what was archived, if anything.
        reply: oneshot::Sender<Result<Option<crate::store::Archived>, NodeError>>,
    },
}

impl NodeHandle {
    /// Requests a contract for a product; returns once the provider answered (agreed,
    /// pending or rejected: the view's `state` says which).
    pub async fn share_request(&self, request: ShareRequest) -> Result<AgreementView, NodeError> {
        self.call(|reply| Command::Contract(ContractCommand::Request { request, reply }))
            .await?
    }

    /// A page of the contracts this node holds, newest first (see [`ShareQuery`]), with
    /// the count of older ones and where their page starts. Read off the actor, one record
    /// at a time: memory stays within the page whatever other members' requests left here.
    pub async fn share_list(&self, query: ShareQuery) -> Result<SharePage, NodeError> {
        query.page_limit().map_err(NodeError::BadRequest)?;
        self.call(|reply| Command::Contract(ContractCommand::List { query, reply }))
            .await?
    }

    /// Requests waiting for this node's operator.
    pub async fn share_pending(&self) -> Result<Vec<AgreementView>, NodeError> {
        self.call(|reply| Command::Contract(ContractCommand::Pending { reply }))
            .await?
    }

    /// One contract by full id or unique prefix.
    pub async fn share_show(&self, id: String) -> Result<AgreementView, NodeError> {
        self.call(|reply| Command::Contract(ContractCommand::Show { id, reply }))
            .await?
    }

    /// One contract as an ODCS v3 document.
    pub async fn share_odcs(&self, id: String) -> Result<DataContract, NodeError> {
        self.call(|reply| Command::Contract(ContractCommand::Odcs { id, reply }))
            .await?
    }

    /// Accepts a pending request (provider).
    pub async fn share_accept(&self, id: String) -> Result<AgreementView, NodeError> {
        self.call(|reply| Command::Contract(ContractCommand::Accept { id, reply }))
            .await?
    }

    /// Rejects a pending request with a reason (provider).
    pub async fn share_reject(
        &self,
        id: String,
        reason: String,
    ) -> Result<AgreementView, NodeError> {
        self.call(|reply| Command::Contract(ContractCommand::Reject { id, reason, reply }))
            .await?
    }

    /// Revokes an agreed contract (either party).
    pub async fn share_revoke(
        &self,
        id: String,
        reason: Option<String>,
    ) -> Result<AgreementView, NodeError> {
        self.call(|reply| Command::Contract(ContractCommand::Revoke { id, reason, reply }))
            .await?
    }

    /// A page of the audit log (or none, with `query.verify`) and the whole chain's check.
    pub async fn audit(&self, query: crate::integrity::AuditQuery) -> Result<AuditView, NodeError> {
        query.page_limit().map_err(NodeError::BadRequest)?;
        self.call(|reply| Command::Contract(ContractCommand::Audit { query, reply }))
            .await?
    }

    /// Moves the audit log's entries but the newest `keep` to a file under
    /// `<data-dir>/audit-archive/`.
    pub async fn archive_audit(
        &self,
        keep: u64,
    ) -> Result<Option<crate::store::Archived>, NodeError> {
        self.call(|reply| Command::Contract(ContractCommand::ArchiveAudit { keep, reply }))
            .await?
    }
}
