//! Control-plane messages: what travels on the gossip topic and the sync protocol.

use serde::{Deserialize, Serialize};

use crate::catalog::NodeRecord;
use crate::codec::{self, DecodeError};
use crate::contract::Revocation;
use crate::descriptor::{ProductDescriptor, ProductId};
use crate::envelope::Signed;
use crate::governance::{Motion, VoteKey};
use crate::identity::PublicKey;
use crate::reconcile::{SetAnswer, SetQuery};

/// Gossipsub topic of a bare catalog with no mesh (the gossip baseline of the benchmarks).
pub const CATALOG_TOPIC: &str = "meshnode/catalog/v1";

/// The gossipsub topic carrying a mesh's catalog, node records, revocations and votes: it
/// names the mesh, so two meshes never mix. Version 2: messages carry no author signature
/// (`mesh_node::gossipsub_authenticity`); a node of version 1 would count each one invalid
/// against the peer that sent it, so the two never share a topic.
pub fn catalog_topic(mesh: &crate::governance::MeshId) -> String {
    format!("meshnode/{}/catalog/v2", mesh.short())
}
/// Largest gossip message.
pub const MAX_GOSSIP_MESSAGE: usize = 128 * 1024;
/// Largest sync request: one reconciliation round, whatever the catalog's size.
pub const MAX_SYNC_REQUEST: usize = 64 * 1024;
/// Byte budget of each of the three set queries (catalog, node records, votes) in a sync
/// request.
pub const MAX_SET_QUERY: usize = 20 * 1024;
/// Largest sync response; a responder stops adding entries before it and the requester
/// pulls the rest on its next round.
pub const MAX_SYNC_RESPONSE: usize = 8 * 1024 * 1024;

/// One message on the catalog topic. Each variant is independently signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMessage {
    /// A product descriptor, new or a new version.
    Descriptor(Signed<ProductDescriptor>),
    /// A node announcing its domain and addresses.
    Node(Signed<NodeRecord>),
    /// An agreement ended early by one of its parties. Relays can only check the signature
    /// (`contract::verify_revocation_signer`); the parties check it against their terms.
    Revocation(Signed<Revocation>),
    /// A vote on a governance motion (an admission, a removal, an amendment).
    Vote(Signed<Motion>),
}

impl GossipMessage {
    /// Encodes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes with the gossip size limit.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_GOSSIP_MESSAGE)
    }
}

/// Anti-entropy request, one round of a range-based reconciliation (see [`crate::reconcile`]):
/// "in these key ranges I hold this (fingerprint or entries); send me these keys". Its size
/// does not grow with the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The catalog's ranges and wanted product ids.
    pub products: SetQuery<ProductId>,
    /// The node records' ranges and wanted node keys.
    pub nodes: SetQuery<PublicKey>,
    /// The governance votes' ranges and wanted votes.
    pub votes: SetQuery<VoteKey>,
}

/// Anti-entropy response: replies to the request's ranges, and the envelopes the requester
/// lacks, exactly as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Replies to the catalog ranges that differ.
    pub products: SetAnswer<ProductId>,
    /// Replies to the node-record ranges that differ.
    pub nodes: SetAnswer<PublicKey>,
    /// Replies to the vote ranges that differ.
    pub votes: SetAnswer<VoteKey>,
    /// Descriptors newer than, or missing from, what the requester holds.
    pub descriptors: Vec<Signed<ProductDescriptor>>,
    /// Node records newer than, or missing from, what the requester holds.
    pub records: Vec<Signed<NodeRecord>>,
    /// Votes missing from what the requester holds.
    pub vote_envelopes: Vec<Signed<Motion>>,
    /// True when the size limit cut the envelopes short; the requester syncs again later.
    pub truncated: bool,
}

impl SyncRequest {
    /// The first request of a node that holds nothing: "send me every entry you hold"
    /// (the responder stops at its size limit and says so).
    pub fn everything() -> Self {
        Self {
            products: SetQuery::everything(),
            nodes: SetQuery::everything(),
            votes: SetQuery::everything(),
        }
    }

    /// Encodes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }
    /// Decodes with the request size limit.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_SYNC_REQUEST)
    }
}

impl SyncResponse {
    /// Encodes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }
    /// Decodes with the response size limit.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_SYNC_RESPONSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error() {
        assert!(GossipMessage::from_bytes(&[9, 9, 9]).is_err());
        assert!(GossipMessage::from_bytes(&vec![0; MAX_GOSSIP_MESSAGE + 1]).is_err());
        assert!(SyncResponse::from_bytes(&[0xff; 3]).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::audit::AuditEntry;
    use crate::descriptor::ProductDescriptor;
    use crate::envelope::Signed;

    proptest! {
        /// No decoder panics on arbitrary bytes, and none accepts more than its limit.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = GossipMessage::from_bytes(&bytes);
            let _ = SyncRequest::from_bytes(&bytes);
            let _ = SyncResponse::from_bytes(&bytes);
            let _ = Signed::<ProductDescriptor>::from_bytes(&bytes);
            let _ = AuditEntry::from_bytes(&bytes);
        }

        /// Flipping any byte of a valid signed descriptor never yields a message that
        /// verifies with different content.
        #[test]
        fn bit_flips_never_verify(index in 0usize..2000, bit in 0u8..8) {
            let id = crate::identity::Identity::from_secret_bytes([5; 32]);
            let descriptor = crate::descriptor::tests::sample(&id, "p", 3);
            let message = GossipMessage::Descriptor(Signed::sign(&id, &descriptor)).to_bytes();
            let mut bytes = message.clone();
            let i = index % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(GossipMessage::Descriptor(envelope)) = GossipMessage::from_bytes(&bytes)
                && let Ok(d) = envelope.verify()
            {
                prop_assert_eq!(d, descriptor);
            }
        }
    }
}
