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
    /// The operator started the node on a store that is behind its audit anchor
    /// (`meshnode run --accept-rollback`): the entries between are lost.
    RollbackAccepted,
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
            AuditKind::RollbackAccepted => "rollback_accepted",
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

/// Longest detail text an entry keeps: what [`MAX_AUDIT_ENTRY`] leaves after the other
/// fields (at most 10 + 32 + 10 + 1 bytes and a 5-byte length).
pub const MAX_AUDIT_DETAIL: usize = MAX_AUDIT_ENTRY - 64;
/// A string in a detail longer than this is cut when the detail is over [`MAX_AUDIT_DETAIL`].
const CLIPPED_STRING_CHARS: usize = 1024;
/// An array in a detail longer than this is cut when the detail is over [`MAX_AUDIT_DETAIL`].
const CLIPPED_ARRAY_ITEMS: usize = 64;

/// The detail text of an entry about `detail`, at most [`MAX_AUDIT_DETAIL`] bytes, so that
/// every entry appended can be read back: readers refuse entries over [`MAX_AUDIT_ENTRY`],
/// and one unreadable entry would leave the rest of the chain unverifiable.
///
/// Details carry values peers chose (a contract request's purpose, its columns), and JSON
/// may spell a byte as six (`\u0001`). A detail over the bound keeps its shape with every
/// string cut to 1,024 characters and every array to 64 items, and gains `"clipped": true`
/// and the BLAKE3 of the whole text (`"detail_blake3"`); if even that is too long, only
/// those two fields and the whole text's length remain.
pub fn bounded_detail(detail: &serde_json::Value) -> String {
    let text = detail.to_string();
    if text.len() <= MAX_AUDIT_DETAIL {
        return text;
    }
    let digest = blake3::hash(text.as_bytes()).to_hex().to_string();
    let mut clipped = clip(detail);
    if let Some(fields) = clipped.as_object_mut() {
        fields.insert("clipped".into(), true.into());
        fields.insert("detail_blake3".into(), digest.clone().into());
        let shorter = clipped.to_string();
        if shorter.len() <= MAX_AUDIT_DETAIL {
            return shorter;
        }
    }
    serde_json::json!({
        "clipped": true,
        "detail_blake3": digest,
        "detail_bytes": text.len(),
    })
    .to_string()
}

/// `value` with long strings and arrays cut (see [`bounded_detail`]).
fn clip(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.chars().count() > CLIPPED_STRING_CHARS => {
            let mut cut: String = s.chars().take(CLIPPED_STRING_CHARS).collect();
            cut.push('…');
            Value::String(cut)
        }
        Value::Array(items) => {
            let mut kept: Vec<Value> = items.iter().take(CLIPPED_ARRAY_ITEMS).map(clip).collect();
            if items.len() > CLIPPED_ARRAY_ITEMS {
                kept.push(Value::String(format!(
                    "… {} more",
                    items.len() - CLIPPED_ARRAY_ITEMS
                )));
            }
            Value::Array(kept)
        }
        Value::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), clip(v))).collect())
        }
        other => other.clone(),
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

/// How a store's chain stands against the signed head anchored outside the store (a file
/// written after each flush). The store may be ahead of the anchor (entries appended after the
/// last anchor write), never behind it or off it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorCheck {
    /// The store ends where the anchor does.
    Match,
    /// The store holds the anchored entries and `store - anchor` more.
    Ahead {
        /// Entries in the store.
        store: u64,
        /// Entries the anchor records.
        anchor: u64,
    },
    /// The store has fewer entries than the anchor records: it was rolled back or emptied.
    RolledBack {
        /// Entries in the store.
        store: u64,
        /// Entries the anchor records.
        anchor: u64,
    },
    /// The store's entry at the anchored position is another entry: the chain was replaced.
    Diverged {
        /// Entries the anchor records.
        anchor: u64,
    },
}

impl AnchorCheck {
    /// Whether the store may be used as it is.
    pub fn is_ok(&self) -> bool {
        matches!(self, AnchorCheck::Match | AnchorCheck::Ahead { .. })
    }

    /// The failure as a [`ChainError`], `None` when the store is consistent with the anchor.
    pub fn error(&self) -> Option<ChainError> {
        match *self {
            AnchorCheck::Match | AnchorCheck::Ahead { .. } => None,
            AnchorCheck::RolledBack { store, anchor } => {
                Some(ChainError::RolledBack { store, anchor })
            }
            AnchorCheck::Diverged { anchor } => Some(ChainError::Diverged { anchor }),
        }
    }
}

/// Compares a store's chain with an anchored head. `store_count` is the number of entries in
/// the store; `hash_at_anchor` is the hash of the store's entry at position
/// `anchor.count - 1` (`None` when the store has no such entry or the anchor is empty). The
/// anchor's signature is the caller's to check first ([`verify_anchor_signer`]).
pub fn check_anchor(
    anchor: &AuditHead,
    store_count: u64,
    hash_at_anchor: Option<[u8; 32]>,
) -> AnchorCheck {
    if store_count < anchor.count {
        return AnchorCheck::RolledBack {
            store: store_count,
            anchor: anchor.count,
        };
    }
    let anchored = if anchor.count == 0 {
        GENESIS
    } else {
        match hash_at_anchor {
            Some(hash) => hash,
            None => {
                return AnchorCheck::Diverged {
                    anchor: anchor.count,
                };
            }
        }
    };
    if anchored != anchor.last {
        return AnchorCheck::Diverged {
            anchor: anchor.count,
        };
    }
    if store_count == anchor.count {
        AnchorCheck::Match
    } else {
        AnchorCheck::Ahead {
            store: store_count,
            anchor: anchor.count,
        }
    }
}

/// Why an anchor cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnchorError {
    /// Signed by a key other than the node's: the identity or the anchor was replaced.
    #[error(
        "the audit anchor is signed by the key with fingerprint {anchor}, not by this node's key ({node})"
    )]
    OtherSigner {
        /// Fingerprint of the anchor's signer.
        anchor: String,
        /// Fingerprint of the node's key.
        node: String,
    },
    /// The signature does not verify, or the body does not decode.
    #[error("the audit anchor is damaged ({0})")]
    Invalid(String),
}

/// Checks that `anchor` was signed by `owner` and returns the head it records.
pub fn verify_anchor_signer(
    anchor: &Signed<AuditHead>,
    owner: &PublicKey,
) -> Result<AuditHead, AnchorError> {
    if anchor.signer() != *owner {
        return Err(AnchorError::OtherSigner {
            anchor: anchor.signer().fingerprint(),
            node: owner.fingerprint(),
        });
    }
    anchor
        .verify()
        .map_err(|e| AnchorError::Invalid(e.to_string()))
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
    /// The chain is shorter than the head anchored outside the store.
    #[error(
        "rolled back: the store has {store} audit entries, but the anchor file written after each flush says {anchor}: the database lost its latest state"
    )]
    RolledBack {
        /// Entries in the store.
        store: u64,
        /// Entries the anchor records.
        anchor: u64,
    },
    /// The chain's entry at the anchored position is not the anchored entry.
    #[error(
        "the store's audit entry {} is not the one anchored outside the store: the chain was replaced",
        anchor.saturating_sub(1)
    )]
    Diverged {
        /// Entries the anchor records.
        anchor: u64,
    },
    /// The entry does not link to the hash of its predecessor.
    #[error("audit entry {seq} does not link to entry {prev_seq}: one of them was altered")]
    BrokenLink {
        /// The entry whose `prev` is wrong.
        seq: u64,
        /// Its predecessor.
        prev_seq: u64,
    },
}

/// Where the entries a store keeps begin once the older ones were archived (`meshnode audit
/// --archive`): the first entry kept and the hash of the entry before it, the last one
/// archived. Signed by the node when it archives, so entries removed from the start of the
/// chain otherwise are found, and the archive file's last entry is tied to what the store
/// keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBase {
    /// Sequence number of the first entry kept.
    pub first: u64,
    /// Hash of entry `first - 1`.
    pub prev: [u8; 32],
}

impl Signable for AuditBase {
    const CONTEXT: &'static str = "meshnode/audit-base/v1";
    const MAX_BODY: usize = 128;
}

impl AuditBase {
    /// The start of a chain nothing was archived from.
    pub const GENESIS: AuditBase = AuditBase {
        first: 0,
        prev: GENESIS,
    };

    /// The base `owner` signed, checked.
    pub fn verified(signed: &Signed<AuditBase>, owner: &PublicKey) -> Result<Self, ChainError> {
        if signed.signer() != *owner {
            return Err(ChainError::Head(
                "the archive base is signed by another key".into(),
            ));
        }
        signed
            .verify()
            .map_err(|e| ChainError::Head(format!("the archive base signature is invalid ({e})")))
    }
}

/// Verifies a whole chain given the stored bytes in order. Returns the number of entries and
/// the hash of the last one.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(u64, [u8; 32]), ChainError> {
    verify_chain_from(AuditBase::GENESIS, entries)
}

/// Verifies the entries a store keeps from `base` on, in order. Returns the number of
/// entries of the whole chain (archived ones included: the next sequence number) and the
/// hash of the last one.
pub fn verify_chain_from<'a>(
    base: AuditBase,
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(u64, [u8; 32]), ChainError> {
    let mut chain = ChainVerifier::new(base);
    for bytes in entries {
        chain.push(bytes)?;
    }
    Ok((chain.count(), chain.last()))
}

/// A chain check fed one entry at a time, in order, so that a reader holds one entry, not the
/// chain: what [`verify_chain_from`] does over a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainVerifier {
    /// Hash of the last entry checked (the base's `prev` before any).
    prev: [u8; 32],
    /// Sequence number the next entry must carry.
    next: u64,
}

impl ChainVerifier {
    /// A check of the entries from `base` on.
    pub fn new(base: AuditBase) -> Self {
        Self {
            prev: base.prev,
            next: base.first,
        }
    }

    /// Checks the next entry's stored bytes: it decodes, carries the next sequence number and
    /// links to the entry before. Returns it decoded. After an error the check is over (the
    /// position is not advanced).
    pub fn push(&mut self, bytes: &[u8]) -> Result<AuditEntry, ChainError> {
        let entry = AuditEntry::from_bytes(bytes).map_err(|e| ChainError::Unreadable {
            seq: self.next,
            reason: e.to_string(),
        })?;
        if entry.seq != self.next {
            return Err(ChainError::Sequence {
                position: self.next,
                claimed: entry.seq,
            });
        }
        if entry.prev != self.prev {
            return Err(ChainError::BrokenLink {
                seq: self.next,
                prev_seq: self.next.saturating_sub(1),
            });
        }
        self.prev = entry_hash(bytes);
        self.next += 1;
        Ok(entry)
    }

    /// Entries of the whole chain checked so far, archived ones included: the sequence number
    /// the next entry must carry.
    pub fn count(&self) -> u64 {
        self.next
    }

    /// Hash of the last entry checked (the base's `prev` before any).
    pub fn last(&self) -> [u8; 32] {
        self.prev
    }
}

/// Default of [`AutoArchive::keep`]: the newest 100,000 entries stay in the store.
pub const DEFAULT_AUTO_ARCHIVE_KEEP: u64 = 100_000;

/// When a node archives the start of its audit chain on its own: once the store holds more
/// than twice `keep` entries, all but the newest `keep` go to a file. The slack makes each
/// archive move at least `keep` entries into one file, rather than a file for every few
/// entries appended past the bound. `keep` 0: never on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoArchive {
    /// Entries left in the store by an archive.
    pub keep: u64,
}

impl AutoArchive {
    /// The entries to keep if an archive is due with `held` entries in the store.
    pub fn due(&self, held: u64) -> Option<u64> {
        (self.keep > 0 && held > self.keep.saturating_mul(2)).then_some(self.keep)
    }

    /// Whether an archive is due because the entries in the store take `held_bytes`, more
    /// than `max_bytes` (never when archiving on its own is off). Such an archive keeps the
    /// newest entries that take no more than half of `max_bytes` (and at most `keep` of them):
    /// the same slack as [`AutoArchive::due`], for entries of up to [`MAX_AUDIT_ENTRY`].
    pub fn due_by_bytes(&self, held_bytes: u64, max_bytes: u64) -> bool {
        self.keep > 0 && held_bytes > max_bytes
    }
}

/// Bytes of entries past which a node archives the start of its chain on its own, whatever
/// their number ([`AutoArchive::due_by_bytes`]): 256 MiB. Entries are up to
/// [`MAX_AUDIT_ENTRY`] each, and a member can make a provider append two of that size every
/// few seconds (a contract request its policy rejects, with a long purpose), so a bound on
/// the count alone (twice [`DEFAULT_AUTO_ARCHIVE_KEEP`]) would let the store hold gigabytes.
pub const AUTO_ARCHIVE_MAX_BYTES: u64 = 256 * 1024 * 1024;

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

    /// An entry with `detail`, encoded as the store appends it.
    fn entry_with(detail: &serde_json::Value) -> Vec<u8> {
        AuditEntry {
            seq: u64::MAX,
            prev: GENESIS,
            at_ms: u64::MAX,
            kind: AuditKind::Request,
            detail: bounded_detail(detail),
        }
        .to_bytes()
    }

    #[test]
    fn a_detail_of_any_size_makes_a_readable_entry() {
        // A purpose of control characters: 30,000 bytes in the request, six times as many
        // in JSON.
        let purpose = "\u{1}".repeat(30_000);
        let columns: Vec<String> = (0..2000).map(|i| format!("column_{i}")).collect();
        let detail =
            serde_json::json!({ "purpose": purpose, "columns": columns, "agreement": "ab" });
        assert!(detail.to_string().len() > MAX_AUDIT_ENTRY);
        let bytes = entry_with(&detail);
        let entry = AuditEntry::from_bytes(&bytes).expect("readable");
        let kept: serde_json::Value = serde_json::from_str(&entry.detail).unwrap();
        assert_eq!(kept["clipped"], true);
        assert_eq!(
            kept["agreement"], "ab",
            "short fields are kept as they were"
        );
        assert_eq!(
            kept["detail_blake3"],
            blake3::hash(detail.to_string().as_bytes())
                .to_hex()
                .as_str()
        );
        assert_eq!(kept["purpose"].as_str().unwrap().chars().count(), 1025);
        assert_eq!(kept["columns"].as_array().unwrap().len(), 65);
        assert_eq!(kept["columns"][64], "… 1936 more");
        // Too many short strings to fit even when clipped: only the summary remains.
        let many: serde_json::Map<String, serde_json::Value> =
            (0..20_000).map(|i| (format!("k{i}"), "v".into())).collect();
        let many = serde_json::Value::Object(many);
        let entry = AuditEntry::from_bytes(&entry_with(&many)).expect("readable");
        let kept: serde_json::Value = serde_json::from_str(&entry.detail).unwrap();
        assert_eq!(kept["detail_bytes"], many.to_string().len());
        // Within the bound, the text is exactly the detail's.
        let small = serde_json::json!({ "purpose": "fraud", "columns": ["a", "b"] });
        assert_eq!(bounded_detail(&small), small.to_string());
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify_chain(c.iter().map(Vec::as_slice)).unwrap().0, 5);
        assert_eq!(verify_chain(std::iter::empty()).unwrap(), (0, GENESIS));
    }

    #[test]
    fn a_chain_kept_from_its_archive_base_verifies_and_its_start_is_checked() {
        let c = chain(6);
        let base = AuditBase {
            first: 2,
            prev: entry_hash(&c[1]),
        };
        let kept = || c[2..].iter().map(Vec::as_slice);
        assert_eq!(
            verify_chain_from(base, kept()).unwrap(),
            (6, entry_hash(&c[5]))
        );
        // One more entry gone from the start, or a base that names another predecessor.
        assert_eq!(
            verify_chain_from(base, c[3..].iter().map(Vec::as_slice)),
            Err(ChainError::Sequence {
                position: 2,
                claimed: 3
            })
        );
        let other = AuditBase {
            first: 2,
            prev: entry_hash(&c[0]),
        };
        assert_eq!(
            verify_chain_from(other, kept()),
            Err(ChainError::BrokenLink {
                seq: 2,
                prev_seq: 1
            })
        );
        // Without a base, a chain that does not start at 0 lost its start.
        assert!(matches!(
            verify_chain(kept()),
            Err(ChainError::Sequence { position: 0, .. })
        ));
        // The base is the node's: another key's, or an altered one, is refused.
        let node = crate::Identity::from_secret_bytes([4; 32]);
        let signed = Signed::sign(&node, &base);
        assert_eq!(AuditBase::verified(&signed, &node.public_key()), Ok(base));
        let stranger = crate::Identity::from_secret_bytes([5; 32]);
        assert!(AuditBase::verified(&signed, &stranger.public_key()).is_err());
        let forged = Signed::sign(&stranger, &base);
        assert!(AuditBase::verified(&forged, &node.public_key()).is_err());
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
    fn anchor_comparison() {
        let c = chain(5);
        let hashes: Vec<[u8; 32]> = c.iter().map(|b| entry_hash(b)).collect();
        let anchor = AuditHead {
            count: 3,
            last: hashes[2],
        };
        assert_eq!(
            check_anchor(&anchor, 3, Some(hashes[2])),
            AnchorCheck::Match
        );
        assert_eq!(
            check_anchor(&anchor, 5, Some(hashes[2])),
            AnchorCheck::Ahead {
                store: 5,
                anchor: 3
            }
        );
        let rolled = check_anchor(&anchor, 1, None);
        assert_eq!(
            rolled,
            AnchorCheck::RolledBack {
                store: 1,
                anchor: 3
            }
        );
        assert!(!rolled.is_ok());
        let shown = rolled.error().unwrap().to_string();
        assert!(shown.contains("rolled back"), "{shown}");
        assert!(
            shown.contains("has 1") && shown.contains("says 3"),
            "{shown}"
        );
        // Emptied.
        assert!(matches!(
            check_anchor(&anchor, 0, None),
            AnchorCheck::RolledBack { store: 0, .. }
        ));
        // Same length, another entry at the anchored position.
        assert_eq!(
            check_anchor(&anchor, 3, Some(hashes[1])),
            AnchorCheck::Diverged { anchor: 3 }
        );
        assert_eq!(
            check_anchor(&anchor, 4, None),
            AnchorCheck::Diverged { anchor: 3 }
        );
        // An empty anchor accepts any store.
        let empty = AuditHead {
            count: 0,
            last: GENESIS,
        };
        assert!(check_anchor(&empty, 0, None).is_ok());
        assert!(check_anchor(&empty, 2, None).is_ok());
        // Signer checks.
        let id = crate::identity::Identity::from_secret_bytes([4; 32]);
        let other = crate::identity::Identity::from_secret_bytes([5; 32]);
        let signed = Signed::sign(&id, &anchor);
        assert_eq!(verify_anchor_signer(&signed, &id.public_key()), Ok(anchor));
        assert!(matches!(
            verify_anchor_signer(&signed, &other.public_key()),
            Err(AnchorError::OtherSigner { .. })
        ));
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

    #[test]
    fn an_archive_is_due_past_twice_the_entries_kept_and_never_when_off() {
        let auto = AutoArchive { keep: 100 };
        assert_eq!(auto.due(0), None);
        assert_eq!(auto.due(200), None);
        assert_eq!(auto.due(201), Some(100));
        assert_eq!(auto.due(u64::MAX), Some(100));
        let off = AutoArchive { keep: 0 };
        assert_eq!(off.due(u64::MAX), None);
        let huge = AutoArchive { keep: u64::MAX };
        assert_eq!(huge.due(u64::MAX), None);
        // By bytes: past the bound, whatever the count; never when off.
        assert!(!auto.due_by_bytes(AUTO_ARCHIVE_MAX_BYTES, AUTO_ARCHIVE_MAX_BYTES));
        assert!(auto.due_by_bytes(AUTO_ARCHIVE_MAX_BYTES + 1, AUTO_ARCHIVE_MAX_BYTES));
        assert!(!off.due_by_bytes(u64::MAX, AUTO_ARCHIVE_MAX_BYTES));
    }

    #[test]
    fn a_chain_fed_one_entry_at_a_time_verifies_as_a_whole_one_does() {
        let c = chain(5);
        let mut one_by_one = ChainVerifier::new(AuditBase::GENESIS);
        for (seq, bytes) in c.iter().enumerate() {
            assert_eq!(one_by_one.push(bytes).unwrap().seq, seq as u64);
        }
        assert_eq!(
            (one_by_one.count(), one_by_one.last()),
            verify_chain(c.iter().map(Vec::as_slice)).unwrap()
        );
        // A failed entry leaves the position where it was.
        let mut from_two = ChainVerifier::new(AuditBase {
            first: 2,
            prev: entry_hash(&c[1]),
        });
        assert!(matches!(
            from_two.push(&c[3]),
            Err(ChainError::Sequence {
                position: 2,
                claimed: 3
            })
        ));
        assert_eq!(from_two.count(), 2);
        from_two.push(&c[2]).unwrap();
        assert_eq!(from_two.count(), 3);
    }
}
