//! The hash-chained audit log: entry format and chain verification.
//!
//! Each entry names the hash of the entry before it, so altering, removing or reordering
//! any stored entry breaks every later link. The node appends; this module only defines the
//! format and checks a chain.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::envelope::{Signable, Signed};
use crate::identity::PublicKey;

/// Largest encoded audit entry.
pub const MAX_AUDIT_ENTRY: usize = 64 * 1024;

/// Hash that the first entry links to.
pub const GENESIS: [u8; 32] = [0; 32];

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A product version was published by this node.
    Publish,
    /// A contract request was sent or received.
    Request,
    /// An agreement was concluded.
    Agreement,
    /// A request was rejected.
    Rejection,
    /// An agreement was revoked.
    Revocation,
    /// This node served a transfer.
    TransferServed,
    /// This node received a transfer.
    TransferReceived,
}

impl AuditKind {
    /// Label for tables and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuditKind::Publish => "publish",
            AuditKind::Request => "request",
            AuditKind::Agreement => "agreement",
            AuditKind::Rejection => "rejection",
            AuditKind::Revocation => "revocation",
            AuditKind::TransferServed => "transfer_served",
            AuditKind::TransferReceived => "transfer_received",
        }
    }
}

/// One audit log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Hash of the previous entry ([`GENESIS`] for the first).
    pub prev: [u8; 32],
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: AuditKind,
    /// Details as a JSON object in text form (product, agreement id, peer, figures).
    pub detail: String,
}

impl AuditEntry {
    /// Encodes for the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a stored entry.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_AUDIT_ENTRY)
    }
}

/// Hash of an entry's stored bytes; the next entry's `prev`.
pub fn entry_hash(bytes: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"meshnode/audit/v1\0");
    hasher.update(bytes);
    *hasher.finalize().as_bytes()
}

/// The signed head of the log: how many entries and the hash of the last one. The node signs
/// a new head with each append, so the end of the chain is anchored too: without it, editing
/// or dropping the last entry would go unnoticed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Number of entries.
    pub count: u64,
    /// Hash of the last entry ([`GENESIS`] when empty).
    pub last: [u8; 32],
}

impl Signable for AuditHead {
    const CONTEXT: &'static str = "meshnode/audit-head/v1";
    const MAX_BODY: usize = 128;
}

/// Checks a verified chain (its entry count and last hash) against the signed head that
/// `owner` wrote.
pub fn verify_head(
    head: &Signed<AuditHead>,
    owner: &PublicKey,
    count: u64,
    last: [u8; 32],
) -> Result<(), ChainError> {
    if head.signer() != *owner {
        return Err(ChainError::Head("the head is signed by another key".into()));
    }
    let head = head
        .verify()
        .map_err(|e| ChainError::Head(format!("the head signature is invalid ({e})")))?;
    if head.count != count {
        return Err(ChainError::Head(format!(
            "the log holds {count} entries but its signed head records {}: entries were added or removed at the end",
            head.count
        )));
    }
    if head.last != last {
        return Err(ChainError::Head(format!(
            "audit entry {} does not match the signed head: it was altered",
            count.saturating_sub(1)
        )));
    }
    Ok(())
}

/// Where and why a chain check failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The entry's bytes do not decode.
    #[error("audit entry {seq} is unreadable: {reason}")]
    Unreadable {
        /// Position of the entry.
        seq: u64,
        /// Decoder message.
        reason: String,
    },
    /// The entry's sequence number is not its position.
    #[error(
        "audit entry at position {position} claims sequence {claimed}: entries were removed or reordered"
    )]
    Sequence {
        /// Position in the log.
        position: u64,
        /// Sequence number stored in the entry.
        claimed: u64,
    },
    /// The end of the chain does not match the signed head.
    #[error("{0}")]
    Head(String),
    /// The entry does not link to the hash of its predecessor.
    #[error("audit entry {seq} does not link to entry {prev_seq}: one of them was altered")]
    BrokenLink {
        /// The entry whose `prev` is wrong.
        seq: u64,
        /// Its predecessor.
        prev_seq: u64,
    },
}

/// Verifies a whole chain given the stored bytes in order. Returns the number of entries and
/// the hash of the last one.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(u64, [u8; 32]), ChainError> {
    let mut prev = GENESIS;
    let mut count = 0u64;
    for bytes in entries {
        let entry = AuditEntry::from_bytes(bytes).map_err(|e| ChainError::Unreadable {
            seq: count,
            reason: e.to_string(),
        })?;
        if entry.seq != count {
            return Err(ChainError::Sequence {
                position: count,
                claimed: entry.seq,
            });
        }
        if entry.prev != prev {
            return Err(ChainError::BrokenLink {
                seq: count,
                prev_seq: count.saturating_sub(1),
            });
        }
        prev = entry_hash(bytes);
        count += 1;
    }
    Ok((count, prev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS;
        (0..n)
            .map(|seq| {
                let bytes = AuditEntry {
                    seq,
                    prev,
                    at_ms: 1000 + seq,
                    kind: AuditKind::Publish,
                    detail: format!("{{\"n\":{seq}}}"),
                }
                .to_bytes();
                prev = entry_hash(&bytes);
                bytes
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify_chain(c.iter().map(Vec::as_slice)).unwrap().0, 5);
        assert_eq!(verify_chain(std::iter::empty()).unwrap(), (0, GENESIS));
    }

    #[test]
    fn edited_entry_breaks_the_next_link() {
        let mut c = chain(5);
        let mut e = AuditEntry::from_bytes(&c[2]).unwrap();
        e.detail = "{\"n\":99}".into();
        c[2] = e.to_bytes();
        assert_eq!(
            verify_chain(c.iter().map(Vec::as_slice)),
            Err(ChainError::BrokenLink {
                seq: 3,
                prev_seq: 2
            })
        );
    }

    #[test]
    fn signed_head_anchors_the_last_entry() {
        let id = crate::identity::Identity::from_secret_bytes([4; 32]);
        let mut c = chain(3);
        let (n, last) = verify_chain(c.iter().map(Vec::as_slice)).unwrap();
        let head = Signed::sign(&id, &AuditHead { count: n, last });
        assert_eq!(verify_head(&head, &id.public_key(), n, last), Ok(()));
        // Edit the last entry: the chain alone still verifies, the head does not.
        let mut e = AuditEntry::from_bytes(&c[2]).unwrap();
        e.detail = "{}".into();
        c[2] = e.to_bytes();
        let (n2, last2) = verify_chain(c.iter().map(Vec::as_slice)).unwrap();
        let err = verify_head(&head, &id.public_key(), n2, last2).unwrap_err();
        assert!(err.to_string().contains("entry 2"), "{err}");
        // Drop the last entry.
        let (n3, last3) = verify_chain(c[..2].iter().map(Vec::as_slice)).unwrap();
        assert!(verify_head(&head, &id.public_key(), n3, last3).is_err());
        // A head re-signed by someone else is refused.
        let mallory = crate::identity::Identity::from_secret_bytes([5; 32]);
        let forged = Signed::sign(
            &mallory,
            &AuditHead {
                count: n2,
                last: last2,
            },
        );
        assert!(verify_head(&forged, &id.public_key(), n2, last2).is_err());
    }

    #[test]
    fn removed_entry_is_found() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            verify_chain(c.iter().map(Vec::as_slice)),
            Err(ChainError::Sequence {
                position: 1,
                claimed: 2
            })
        );
    }

    #[test]
    fn garbage_entry_is_unreadable() {
        let mut c = chain(3);
        c[1] = vec![0xff, 0xff];
        assert!(matches!(
            verify_chain(c.iter().map(Vec::as_slice)),
            Err(ChainError::Unreadable { seq: 1, .. })
        ));
    }
}
