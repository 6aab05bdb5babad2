//! The newcomer's side of a join: a one-shot libp2p swarm that connects with the ticket's
//! invitation key (the only key of ours the member's gate lets in), presents a claim signed
//! by our own node key, and receives the charter and the mesh's votes.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, request_response};
use mesh_protocol::governance::join::MAX_JOIN_REPLY;
use mesh_protocol::governance::{
    Charter, JoinClaim, JoinReply, Member, MeshId, MeshState, Motion, Ticket,
};
use mesh_protocol::{Identity, Signed};

use crate::net::{BytesCodec, MAX_JOIN_REQUEST, Protocols, keypair};

/// Attempts at the exchange before a join gives up.
const MAX_ATTEMPTS: u32 = 3;

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The ticket expired before it was used.
    #[error("the ticket expired: ask a member for a new one (`meshnode mesh invite`)")]
    Expired,
    /// The ticket's addresses are unusable.
    #[error("the ticket carries no usable address of its member")]
    NoAddress,
    /// No member answered in time.
    #[error(
        "no answer from the inviting member at {addrs} within {secs} s: is its daemon running and reachable?"
    )]
    Unreachable {
        /// Addresses tried.
        addrs: String,
        /// Time waited.
        secs: u64,
    },
    /// The member refused the claim.
    #[error("the inviting member refused: {0}")]
    Refused(String),
    /// The answer is not what the ticket promised.
    #[error("the answer does not match the ticket: {0}")]
    Mismatch(String),
    /// The swarm could not be built.
    #[error("cannot start the control plane: {0}")]
    Transport(String),
}

#[derive(NetworkBehaviour)]
struct JoinBehaviour {
    join: request_response::Behaviour<BytesCodec>,
}

/// What a join brings home.
#[derive(Debug)]
pub struct Welcome {
    /// The charter, as signed.
    pub charter: Signed<Charter>,
    /// The votes received.
    pub votes: Vec<Signed<Motion>>,
    /// What they add up to.
    pub state: MeshState,
    /// Whether we are a member already (`false`: the admission waits for a quorum).
    pub admitted: bool,
}

/// Joins the mesh of `ticket` as `identity` with domain name `domain`.
pub async fn join(
    ticket: &Ticket,
    identity: &Identity,
    domain: &str,
    now_ms: u64,
    timeout: Duration,
) -> Result<Welcome, JoinError> {
    if now_ms >= ticket.expires_at_ms {
        return Err(JoinError::Expired);
    }
    let addrs: Vec<Multiaddr> = ticket
        .bootstrap
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    if addrs.is_empty() {
        return Err(JoinError::NoAddress);
    }
    let claim = Signed::sign(
        identity,
        &JoinClaim {
            mesh: ticket.mesh,
            invitation: ticket.invitation_identity().public_key(),
            member: Member {
                key: identity.public_key(),
                domain: domain.to_owned(),
            },
        },
    );
    let protocol = Protocols::of(&ticket.mesh).join;
    let mut swarm =
        libp2p::SwarmBuilder::with_existing_identity(keypair(&ticket.invitation_identity()))
            .with_tokio()
            .with_quic()
            .with_behaviour(|_| JoinBehaviour {
                join: request_response::Behaviour::with_codec(
                    BytesCodec::new(MAX_JOIN_REQUEST, MAX_JOIN_REPLY),
                    [(protocol, request_response::ProtocolSupport::Outbound)],
                    request_response::Config::default().with_request_timeout(timeout),
                ),
            })
            .map_err(|e| JoinError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(5)))
            .build();
    for addr in &addrs {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::debug!(%addr, "cannot dial: {e}");
        }
    }
    let unreachable = || JoinError::Unreachable {
        addrs: ticket.bootstrap.join(", "),
        secs: timeout.as_secs(),
    };
    // A connection lost before the answer arrived is tried again: the member answers the
    // same claim from the same newcomer again, so a retry is safe.
    let exchange = async {
        let mut sent = false;
        let mut failures = 0;
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if !sent => {
                    sent = true;
                    swarm
                        .behaviour_mut()
                        .join
                        .send_request(&peer_id, claim.to_bytes());
                }
                SwarmEvent::Behaviour(JoinBehaviourEvent::Join(
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    },
                )) => return Ok(response),
                SwarmEvent::Behaviour(JoinBehaviourEvent::Join(
                    request_response::Event::OutboundFailure { error, .. },
                )) if failures < MAX_ATTEMPTS - 1 => {
                    failures += 1;
                    tracing::debug!("join attempt {failures} failed, trying again: {error}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    sent = false;
                    for addr in &addrs {
                        let _ = swarm.dial(addr.clone());
                    }
                }
                SwarmEvent::Behaviour(JoinBehaviourEvent::Join(
                    request_response::Event::OutboundFailure { error, .. },
                )) => {
                    return Err(JoinError::Unreachable {
                        addrs: format!("{} ({error})", ticket.bootstrap.join(", ")),
                        secs: timeout.as_secs(),
                    });
                }
                _ => {}
            }
        }
    };
    let bytes = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable())??;
    let reply = JoinReply::from_bytes(&bytes)
        .map_err(|e| JoinError::Mismatch(format!("undecodable answer: {e}")))?;
    let (charter, votes) = match reply {
        JoinReply::Welcome { charter, votes } => (charter, votes),
        JoinReply::Refused(why) => return Err(JoinError::Refused(why)),
    };
    if MeshId::of_body(charter.body()) != ticket.mesh {
        return Err(JoinError::Mismatch(
            "the charter received is not the ticket's mesh".into(),
        ));
    }
    let (state, _) = MeshState::restore(charter.clone(), votes.iter().cloned())
        .map_err(|e| JoinError::Mismatch(e.to_string()))?;
    let admitted = state.is_member(&identity.public_key());
    Ok(Welcome {
        charter,
        votes,
        state,
        admitted,
    })
}
