//! Contract negotiation over `/meshnode/contract/1`, and revocations from gossip.

use libp2p::request_response;
use mesh_protocol::contract::{Revocation, verify_revocation_signer};
use mesh_protocol::{RejectReason, Signed};

use crate::node::Node;

impl Node {
    /// Handles contract protocol events.
    pub(crate) async fn on_contract_event(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        tracing::debug!(?event, "contract event");
    }

    /// A revocation heard on gossip: stored if well signed and new; checked against the
    /// agreement's parties when this node holds the agreement.
    pub(crate) fn accept_revocation(
        &mut self,
        envelope: &Signed<Revocation>,
    ) -> Result<bool, RejectReason> {
        let revocation = verify_revocation_signer(envelope).map_err(|_| {
            self.metrics.reject(RejectReason::BadSignature);
            RejectReason::BadSignature
        })?;
        let key = revocation.agreement_id.0;
        match self.store.revocations().get(key) {
            Ok(Some(_)) => Ok(false),
            Ok(None) => {
                let _ = self.store.revocations().insert(key, envelope.to_bytes());
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}

/// Contract commands from [`crate::NodeHandle`] to the actor.
#[derive(Debug)]
pub(crate) enum ContractCommand {}

impl Node {
    /// Handles a contract command.
    pub(crate) async fn on_contract_command(&mut self, command: ContractCommand) {
        match command {}
    }
}

/// Control API routes for contracts.
pub(crate) fn routes() -> axum::Router<crate::api::ApiState> {
    axum::Router::new()
}
