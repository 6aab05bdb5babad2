//! Catalog merge rules: what a node accepts into its replica of the mesh catalog.
//!
//! Pure functions over envelopes; the caller supplies what it currently stores.

use serde::{Deserialize, Serialize};

use crate::descriptor::{ProductDescriptor, ProductId};
use crate::envelope::{EnvelopeError, Signable, Signed};
use crate::identity::PublicKey;

/// Why a gossiped or synced message was not accepted. Counted per reason by the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not decodable.
    Malformed,
    /// Larger than the limit for its type.
    Oversized,
    /// Signature does not verify.
    BadSignature,
    /// Signed by a key that is not the product's owner (or the record's subject).
    NotOwner,
    /// A version not newer than the stored one, with different bytes.
    Stale,
    /// Well signed but breaks a descriptor rule.
    Invalid,
    /// Well signed but over a length, count or nesting limit (e.g. a column type nested
    /// thousands of levels deep); refused before any parser saw the field.
    OverLimit,
    /// Well formed and signed, but its key already holds as many products as a node keeps
    /// for one key ([`MAX_PRODUCTS_PER_OWNER`]).
    OverBudget,
    /// Signed by a key that is not a member of the mesh (never admitted, or removed).
    NotMember,
    /// Well formed, signed and new, but gossiped faster than a node takes one key's
    /// descriptors and node records ([`crate::budget::DEFAULT_GOSSIP_BURST`]): not stored
    /// nor forwarded; anti-entropy brings the newest version later.
    RateLimited,
    /// Sent in a sync answer that did not ask for it: an entry the query claimed to hold at
    /// that version or newer, or outside every range it listed. An honest responder sends
    /// only what the query lacks.
    Unsolicited,
    /// A gossip message on a topic other than the mesh's catalog: refused before gossipsub
    /// keeps anything of it.
    OffTopic,
}

impl RejectReason {
    /// Every reason, for metrics.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::Malformed,
        RejectReason::Oversized,
        RejectReason::BadSignature,
        RejectReason::NotOwner,
        RejectReason::Stale,
        RejectReason::Invalid,
        RejectReason::OverLimit,
        RejectReason::OverBudget,
        RejectReason::NotMember,
        RejectReason::RateLimited,
        RejectReason::Unsolicited,
        RejectReason::OffTopic,
    ];

    /// Label used in metrics and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Oversized => "oversized",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::NotOwner => "not_owner",
            RejectReason::Stale => "stale",
            RejectReason::Invalid => "invalid",
            RejectReason::OverLimit => "over_limit",
            RejectReason::OverBudget => "over_budget",
            RejectReason::NotMember => "not_member",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Unsolicited => "unsolicited",
            RejectReason::OffTopic => "off_topic",
        }
    }
}

impl From<&EnvelopeError> for RejectReason {
    fn from(e: &EnvelopeError) -> Self {
        match e {
            EnvelopeError::Decode(crate::codec::DecodeError::TooLarge { .. }) => {
                RejectReason::Oversized
            }
            EnvelopeError::Decode(_) => RejectReason::Malformed,
            EnvelopeError::Signature(_) => RejectReason::BadSignature,
        }
    }
}

/// Most products a node keeps for one owner key: a key cannot make every node store an
/// unbounded number of descriptors (at most this many times `MAX_DESCRIPTOR_BYTES`, 64 MiB).
/// New versions of a held product are always taken; a new product beyond this is refused.
pub const MAX_PRODUCTS_PER_OWNER: usize = 1024;
/// Most addresses in a node record.
pub const MAX_NODE_ADDRS: usize = 16;

/// Whether an owner holding `held` products may add one more.
pub fn owner_has_room(held: usize) -> bool {
    held < MAX_PRODUCTS_PER_OWNER
}

/// Result of offering a descriptor to the catalog.
#[derive(Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// New, or newer than what is stored: store these bytes and forward them.
    Accepted(Box<ProductDescriptor>),
    /// Byte-identical to what is stored: nothing to do, do not forward again.
    Duplicate,
    /// Refused: neither stored nor forwarded.
    Rejected(RejectReason),
}

/// Checks an envelope on its own: signature, signer is the owner, descriptor rules.
pub fn verify_descriptor(
    incoming: &Signed<ProductDescriptor>,
) -> Result<ProductDescriptor, RejectReason> {
    let descriptor = incoming.verify().map_err(|e| RejectReason::from(&e))?;
    if descriptor.owner != incoming.signer() {
        return Err(RejectReason::NotOwner);
    }
    descriptor.validate().map_err(|e| {
        if e.is_over_limit() {
            RejectReason::OverLimit
        } else {
            RejectReason::Invalid
        }
    })?;
    Ok(descriptor)
}

/// The catalog merge rule. `current` returns what the catalog stores for a product id
/// (an envelope it verified when it stored it, with its version).
///
/// Accept iff the signature verifies, the signer is the owner and the version is newer than
/// the stored one; identical bytes are a duplicate; anything else is rejected.
pub fn merge(
    incoming: &Signed<ProductDescriptor>,
    current: impl FnOnce(&ProductId) -> Option<(u64, Signed<ProductDescriptor>)>,
) -> MergeOutcome {
    merge_lazy(incoming, |id| {
        current(id).map(|(version, envelope)| (version, move || Some(envelope)))
    })
}

/// [`merge`] for a catalog that knows its versions without reading its envelopes: `current`
/// returns the stored version and a loader of the stored envelope, which is called only when
/// the stored version is the one the incoming envelope claims (only then can the bytes be
/// identical). Same outcomes as [`merge`].
pub fn merge_lazy<L: FnOnce() -> Option<Signed<ProductDescriptor>>>(
    incoming: &Signed<ProductDescriptor>,
    current: impl FnOnce(&ProductId) -> Option<(u64, L)>,
) -> MergeOutcome {
    // An envelope byte-identical to the stored one was verified when it was stored: a
    // duplicate (sync answers from several peers, gossip's second copy) costs no signature
    // check. Anything else is verified before its version is even compared.
    let stored_version = match incoming.decode_trusted() {
        Ok(claimed) => match current(&claimed.id()) {
            Some((version, load)) => {
                if version == claimed.version && load().is_some_and(|s| &s == incoming) {
                    return MergeOutcome::Duplicate;
                }
                Some(version)
            }
            None => None,
        },
        Err(_) => None,
    };
    let descriptor = match verify_descriptor(incoming) {
        Ok(d) => d,
        Err(reason) => return MergeOutcome::Rejected(reason),
    };
    match stored_version {
        Some(version) if version >= descriptor.version => {
            MergeOutcome::Rejected(RejectReason::Stale)
        }
        _ => MergeOutcome::Accepted(Box::new(descriptor)),
    }
}

/// A node's self-description, gossiped so peers can map keys to domains and data addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's key; must equal the signer.
    pub key: PublicKey,
    /// Domain name the node serves.
    pub domain: String,
    /// libp2p peer id (derived from `key`), as a string.
    pub peer_id: String,
    /// Control-plane multiaddrs.
    pub addrs: Vec<String>,
    /// Data-plane `host:port`.
    pub data_addr: Option<String>,
    /// Issue time in milliseconds; a newer record replaces an older one.
    pub issued_at_ms: u64,
}

impl Signable for NodeRecord {
    const CONTEXT: &'static str = "meshnode/node-record/v1";
    const MAX_BODY: usize = 8 * 1024;
}

/// Checks a node record and decides whether it replaces `current_issued_at`.
pub fn merge_node_record(
    incoming: &Signed<NodeRecord>,
    current_issued_at_ms: Option<u64>,
) -> Result<Option<NodeRecord>, RejectReason> {
    let record = incoming.verify().map_err(|e| RejectReason::from(&e))?;
    if record.key != incoming.signer() {
        return Err(RejectReason::NotOwner);
    }
    crate::descriptor::validate_name("domain", &record.domain)
        .map_err(|_| RejectReason::Invalid)?;
    if record.addrs.len() > MAX_NODE_ADDRS {
        return Err(RejectReason::OverLimit);
    }
    match current_issued_at_ms {
        Some(t) if t == record.issued_at_ms => Ok(None),
        Some(t) if t > record.issued_at_ms => Err(RejectReason::Stale),
        _ => Ok(Some(record)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::tests::sample;
    use crate::identity::Identity;

    fn owner() -> Identity {
        Identity::from_secret_bytes([1; 32])
    }

    #[test]
    fn accepts_new_and_newer() {
        let id = owner();
        let v1 = Signed::sign(&id, &sample(&id, "p", 1));
        let v2 = Signed::sign(&id, &sample(&id, "p", 2));
        assert!(matches!(merge(&v1, |_| None), MergeOutcome::Accepted(d) if d.version == 1));
        assert!(
            matches!(merge(&v2, |_| Some((1, v1.clone()))), MergeOutcome::Accepted(d) if d.version == 2)
        );
    }

    #[test]
    fn duplicate_and_stale() {
        let id = owner();
        let v1 = Signed::sign(&id, &sample(&id, "p", 1));
        let v2 = Signed::sign(&id, &sample(&id, "p", 2));
        assert_eq!(
            merge(&v2, |_| Some((2, v2.clone()))),
            MergeOutcome::Duplicate
        );
        assert_eq!(
            merge(&v1, |_| Some((2, v2.clone()))),
            MergeOutcome::Rejected(RejectReason::Stale)
        );
        // Same version, different content: equivocation is stale too.
        let mut other = sample(&id, "p", 2);
        other.title = "changed".into();
        let other = Signed::sign(&id, &other);
        assert_eq!(
            merge(&other, |_| Some((2, v2.clone()))),
            MergeOutcome::Rejected(RejectReason::Stale)
        );
    }

    #[test]
    fn the_stored_envelope_is_read_only_when_the_versions_match() {
        let id = owner();
        let v1 = Signed::sign(&id, &sample(&id, "p", 1));
        let v2 = Signed::sign(&id, &sample(&id, "p", 2));
        let unread = || -> Option<Signed<ProductDescriptor>> {
            panic!("the stored envelope was read although the versions differ")
        };
        assert!(
            matches!(merge_lazy(&v2, |_| Some((1, unread))), MergeOutcome::Accepted(d) if d.version == 2)
        );
        assert_eq!(
            merge_lazy(&v1, |_| Some((2, unread))),
            MergeOutcome::Rejected(RejectReason::Stale)
        );
        // At the same version the bytes decide: identical is a duplicate, different is stale.
        let mut loads = 0;
        let outcome = merge_lazy(&v2, |_| {
            Some((2, || {
                loads += 1;
                Some(v2.clone())
            }))
        });
        assert_eq!((outcome, loads), (MergeOutcome::Duplicate, 1));
        let mut other = sample(&id, "p", 2);
        other.title = "changed".into();
        let other = Signed::sign(&id, &other);
        assert_eq!(
            merge_lazy(&other, |_| Some((2, || Some(v2.clone())))),
            MergeOutcome::Rejected(RejectReason::Stale)
        );
        // A forgery claiming a newer version is refused without any read.
        let forged = Signed::sign(&Identity::from_secret_bytes([9; 32]), &sample(&id, "p", 3));
        assert_eq!(
            merge_lazy(&forged, |_| Some((2, unread))),
            MergeOutcome::Rejected(RejectReason::NotOwner)
        );
    }

    #[test]
    fn forged_signer_and_bad_signature() {
        let id = owner();
        let mallory = Identity::from_secret_bytes([2; 32]);
        // Mallory signs a descriptor that names the real owner.
        let forged = Signed::sign(&mallory, &sample(&id, "p", 9));
        assert_eq!(
            merge(&forged, |_| None),
            MergeOutcome::Rejected(RejectReason::NotOwner)
        );
        // Mallory claims the owner's key on a body she changed.
        let good = Signed::sign(&id, &sample(&id, "p", 1));
        let tampered = good.with_tampered_body(crate::codec::encode(&sample(&id, "p", 99)));
        assert_eq!(
            merge(&tampered, |_| None),
            MergeOutcome::Rejected(RejectReason::BadSignature)
        );
    }

    #[test]
    fn invalid_descriptor_rejected() {
        let id = owner();
        let mut d = sample(&id, "p", 1);
        d.name = "Bad Name".into();
        assert_eq!(
            merge(&Signed::sign(&id, &d), |_| None),
            MergeOutcome::Rejected(RejectReason::Invalid)
        );
    }

    #[test]
    fn garbage_body() {
        let id = owner();
        let good = Signed::sign(&id, &sample(&id, "p", 1));
        // Garbage signed properly still fails to decode.
        let garbage = Signed::<ProductDescriptor>::sign_raw_for_tests(&id, vec![0xff; 40]);
        assert_eq!(
            merge(&garbage, |_| None),
            MergeOutcome::Rejected(RejectReason::Malformed)
        );
        assert!(Signed::<ProductDescriptor>::from_bytes(&good.to_bytes()[..10]).is_err());
    }

    #[test]
    fn owner_budget() {
        assert!(owner_has_room(0));
        assert!(owner_has_room(MAX_PRODUCTS_PER_OWNER - 1));
        assert!(!owner_has_room(MAX_PRODUCTS_PER_OWNER));
    }

    #[test]
    fn node_records() {
        let id = owner();
        let rec = NodeRecord {
            key: id.public_key(),
            domain: "sales".into(),
            peer_id: "x".into(),
            addrs: vec![],
            data_addr: Some("127.0.0.1:1".into()),
            issued_at_ms: 10,
        };
        let signed = Signed::sign(&id, &rec);
        assert_eq!(merge_node_record(&signed, None), Ok(Some(rec.clone())));
        assert_eq!(merge_node_record(&signed, Some(10)), Ok(None));
        assert_eq!(
            merge_node_record(&signed, Some(11)),
            Err(RejectReason::Stale)
        );
        let mallory = Identity::from_secret_bytes([2; 32]);
        assert_eq!(
            merge_node_record(&Signed::sign(&mallory, &rec), None),
            Err(RejectReason::NotOwner)
        );
        // A record is bounded in its addresses (one record per key, replaced by newer ones).
        let crowded = NodeRecord {
            addrs: vec!["/ip4/127.0.0.1/udp/1/quic-v1".into(); MAX_NODE_ADDRS + 1],
            issued_at_ms: 11,
            ..rec.clone()
        };
        assert_eq!(
            merge_node_record(&Signed::sign(&id, &crowded), Some(10)),
            Err(RejectReason::OverLimit)
        );
    }
}
