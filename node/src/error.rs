//! Errors of node operations, mapped to HTTP statuses by the control API.

use crate::store::StoreError;

/// Why a node operation failed. Each message is a sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The caller asked for something invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation conflicts with current state (already revoked, already decided, ...).
    #[error("{0}")]
    Conflict(String),
    /// A remote peer could not be reached or did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// The remote side refused.
    #[error("{0}")]
    Refused(String),
    /// Local storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// The node actor has stopped.
    #[error("the node is shutting down")]
    ActorClosed,
    /// A write of product data stopped before it ate into the disk space the node keeps
    /// free (`disk_reserve_mib`).
    #[error("{0}")]
    NoRoom(String),
    /// A local file could not be read or written at the operating system's level (a
    /// permission, a failing disk): not the request's fault, nor the node's.
    #[error("{0}")]
    Io(String),
}

impl NodeError {
    /// HTTP status for the control API.
    pub fn status_code(&self) -> u16 {
        match self {
            NodeError::BadRequest(_) => 400,
            NodeError::NotFound(_) => 404,
            NodeError::Conflict(_) => 409,
            NodeError::Refused(_) => 403,
            NodeError::Unavailable(_) => 503,
            NodeError::ActorClosed => 503,
            // Insufficient Storage.
            NodeError::NoRoom(_) => 507,
            NodeError::Io(_) => 500,
            NodeError::Store(_) | NodeError::Internal(_) => 500,
        }
    }
}

impl From<crate::store::ArchiveError> for NodeError {
    fn from(e: crate::store::ArchiveError) -> Self {
        use crate::store::ArchiveError as A;
        match e {
            A::Broken(_) => NodeError::Conflict(e.to_string()),
            A::KeepNothing => NodeError::BadRequest(e.to_string()),
            A::Write { ref source, .. } if crate::dataplane::outpath_is_user_fixable(source) => {
                NodeError::BadRequest(e.to_string())
            }
            A::NoSigner | A::Write { .. } => NodeError::Internal(e.to_string()),
            A::Store(s) => NodeError::Store(s),
        }
    }
}
