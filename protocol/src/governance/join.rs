//! Joining a mesh with a ticket: one step for the newcomer.
//!
//! `mesh invite` on a member makes an invitation: a fresh key pair whose secret goes into the
//! ticket and whose public half the member remembers (single use, expiring). The newcomer
//! connects to the member *as the invitation key*, so the member's connection gate (which
//! admits only members' keys) lets exactly that connection in, and presents a [`JoinClaim`]
//! signed by its own node key. The member checks the claim ([`check_claim`]), signs the
//! admission motion and answers with the charter and the votes the newcomer needs.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::envelope::{Signable, Signed};
use crate::governance::charter::{Charter, Member, MeshId};
use crate::governance::motion::Motion;
use crate::identity::{Identity, PublicKey};

/// Text that starts every ticket.
pub const TICKET_PREFIX: &str = "meshnode-ticket-";
/// Largest encoded ticket (before base64).
pub const MAX_TICKET_BYTES: usize = 4 * 1024;
/// Most bootstrap addresses in a ticket.
pub const MAX_TICKET_ADDRS: usize = 8;
/// Largest join answer: the charter and the votes a newcomer needs; the rest comes by sync.
pub const MAX_JOIN_REPLY: usize = 4 * 1024 * 1024;
/// How long an invitation is valid by default.
pub const DEFAULT_INVITE_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Longest an invitation may stay open: a claimed one is kept until it expires (so that a
/// newcomer whose answer was lost can claim again), so its lifetime bounds what invitations
/// a node holds.
pub const MAX_INVITE_TTL_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// What `mesh invite` prints: everything a newcomer needs to join in one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The mesh to join; the charter the inviter sends must hash to it.
    pub mesh: MeshId,
    /// The domain name the invitation is for.
    pub domain: String,
    /// The inviting member's key (its peer id), so the newcomer knows whom it talks to.
    pub inviter: PublicKey,
    /// Control-plane multiaddrs of the inviter.
    pub bootstrap: Vec<String>,
    /// The invitation key's secret: the newcomer connects with it. Single use.
    pub secret: [u8; 32],
    /// End of validity, Unix milliseconds.
    pub expires_at_ms: u64,
}

/// Why a ticket could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// Not a meshnode ticket.
    #[error("not a meshnode ticket: it should start with `{TICKET_PREFIX}`")]
    Prefix,
    /// Bad base64 or a bad encoding.
    #[error("the ticket is damaged (copy it again, in one piece): {0}")]
    Damaged(String),
    /// Over a limit.
    #[error("the ticket is damaged: {0}")]
    OverLimit(String),
}

impl Ticket {
    /// The ticket as one line of text.
    pub fn encode(&self) -> String {
        let bytes = codec::encode(self);
        format!(
            "{TICKET_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&bytes)
        )
    }

    /// Reads a ticket, bounded before any decoding.
    pub fn decode(text: &str) -> Result<Self, TicketError> {
        let text = text.trim();
        let body = text
            .strip_prefix(TICKET_PREFIX)
            .ok_or(TicketError::Prefix)?;
        if body.len() > MAX_TICKET_BYTES * 4 / 3 + 4 {
            return Err(TicketError::OverLimit("too long".into()));
        }
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|e| TicketError::Damaged(e.to_string()))?;
        let ticket: Ticket = codec::decode(&bytes, MAX_TICKET_BYTES)
            .map_err(|e: DecodeError| TicketError::Damaged(e.to_string()))?;
        if ticket.bootstrap.len() > MAX_TICKET_ADDRS {
            return Err(TicketError::OverLimit("too many addresses".into()));
        }
        Ok(ticket)
    }

    /// The invitation key pair.
    pub fn invitation_identity(&self) -> Identity {
        Identity::from_secret_bytes(self.secret)
    }
}

/// What an inviting member remembers of an invitation it gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The invitation key (the public half of the ticket's secret).
    pub key: PublicKey,
    /// The domain name the invitation is for.
    pub domain: String,
    /// End of validity, Unix milliseconds.
    pub expires_at_ms: u64,
    /// Whether it was used (an invitation admits one domain).
    pub used: bool,
    /// The key that used it: the same newcomer claiming again (its answer was lost on the
    /// way) gets the same answer; anyone else is refused.
    #[serde(default)]
    pub claimed_by: Option<PublicKey>,
}

/// A newcomer's claim on an invitation, signed by the newcomer's own node key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaim {
    /// The mesh joined.
    pub mesh: MeshId,
    /// The invitation key the claim spends.
    pub invitation: PublicKey,
    /// The newcomer: its key (the signer) and domain name.
    pub member: Member,
}

impl Signable for JoinClaim {
    const CONTEXT: &'static str = "meshnode/join-claim/v1";
    const MAX_BODY: usize = 1024;
}

/// The inviter's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinReply {
    /// The claim was good: the charter, and the votes that make the mesh's current state
    /// (the newcomer's admission among them, carried or waiting for a quorum).
    Welcome {
        /// The charter as signed.
        charter: Signed<Charter>,
        /// Votes, as many as fit in [`MAX_JOIN_REPLY`].
        votes: Vec<Signed<Motion>>,
    },
    /// Refused, and why.
    Refused(String),
}

impl JoinReply {
    /// Encodes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes with the size limit.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_JOIN_REPLY)
    }
}

/// Why a claim is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefusal {
    /// Bad signature or encoding.
    #[error("the claim is not validly signed")]
    BadSignature,
    /// Not for this mesh.
    #[error("the claim is for another mesh")]
    OtherMesh,
    /// The connection is not the invitation key's, or the claim names another one.
    #[error("the claim does not match the invitation this connection holds")]
    WrongInvitation,
    /// No such invitation here.
    #[error("no such invitation: it was never issued here, or was revoked")]
    Unknown,
    /// Used already.
    #[error("the invitation was already used: ask for a new one")]
    Used,
    /// Expired.
    #[error("the invitation expired: ask for a new one")]
    Expired,
    /// The claim's domain is not the invited one.
    #[error("the invitation is for domain `{invited}`, not `{claimed}`")]
    WrongDomain {
        /// The invited domain.
        invited: String,
        /// The claimed domain.
        claimed: String,
    },
}

/// Checks a join claim that arrived on a connection authenticated as `connection_key`,
/// against the invitation stored for that key. Returns the member to admit.
pub fn check_claim(
    mesh: MeshId,
    invitation: Option<&Invitation>,
    claim: &Signed<JoinClaim>,
    connection_key: &PublicKey,
    now_ms: u64,
) -> Result<Member, ClaimRefusal> {
    let parsed = claim.verify().map_err(|_| ClaimRefusal::BadSignature)?;
    if parsed.member.key != claim.signer() {
        return Err(ClaimRefusal::BadSignature);
    }
    if parsed.mesh != mesh {
        return Err(ClaimRefusal::OtherMesh);
    }
    if &parsed.invitation != connection_key {
        return Err(ClaimRefusal::WrongInvitation);
    }
    let invitation = invitation.ok_or(ClaimRefusal::Unknown)?;
    if invitation.key != parsed.invitation {
        return Err(ClaimRefusal::WrongInvitation);
    }
    if invitation.used && invitation.claimed_by != Some(parsed.member.key) {
        return Err(ClaimRefusal::Used);
    }
    if now_ms >= invitation.expires_at_ms {
        return Err(ClaimRefusal::Expired);
    }
    if invitation.domain != parsed.member.domain {
        return Err(ClaimRefusal::WrongDomain {
            invited: invitation.domain.clone(),
            claimed: parsed.member.domain,
        });
    }
    Ok(parsed.member)
}

/// Most join requests answered on one invitation key, whatever the answers: the claim and a
/// few repeats of a newcomer whose answer was lost. Each welcome carries up to
/// [`MAX_JOIN_REPLY`] bytes and is flushed to disk first, so without a count a ticket holder
/// could ask for one after another (or send refused claims until the invitation expires).
pub const MAX_JOIN_ANSWERS: u32 = 8;

/// Join requests answered per invitation key (sans I/O: the node keeps one and forgets a key
/// when its invitation goes). Holds at most one entry per invitation the node keeps.
#[derive(Clone, Debug, Default)]
pub struct JoinAnswers {
    given: std::collections::HashMap<PublicKey, u32>,
}

impl JoinAnswers {
    /// Counts a request on invitation key `key`: whether it may still be answered in full
    /// (otherwise it gets a short refusal and the connection is shut like a spent one's).
    pub fn take(&mut self, key: &PublicKey) -> bool {
        let given = self.given.entry(*key).or_insert(0);
        if *given >= MAX_JOIN_ANSWERS {
            return false;
        }
        *given += 1;
        true
    }

    /// Whether `key` has had all its answers.
    pub fn exhausted(&self, key: &PublicKey) -> bool {
        self.given.get(key).is_some_and(|n| *n >= MAX_JOIN_ANSWERS)
    }

    /// Forgets `key` (its invitation expired or was removed).
    pub fn forget(&mut self, key: &PublicKey) {
        self.given.remove(key);
    }

    /// Keys counted.
    pub fn len(&self) -> usize {
        self.given.len()
    }

    /// Whether no key is counted.
    pub fn is_empty(&self) -> bool {
        self.given.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (MeshId, Identity, Invitation, Signed<JoinClaim>) {
        let mesh = MeshId([5; 32]);
        let invite = Identity::from_secret_bytes([7; 32]);
        let newcomer = Identity::from_secret_bytes([8; 32]);
        let invitation = Invitation {
            key: invite.public_key(),
            domain: "churn".into(),
            expires_at_ms: 1_000,
            used: false,
            claimed_by: None,
        };
        let claim = Signed::sign(
            &newcomer,
            &JoinClaim {
                mesh,
                invitation: invite.public_key(),
                member: Member {
                    key: newcomer.public_key(),
                    domain: "churn".into(),
                },
            },
        );
        (mesh, invite, invitation, claim)
    }

    #[test]
    fn a_ticket_round_trips_and_garbage_is_refused() {
        let ticket = Ticket {
            mesh: MeshId([1; 32]),
            domain: "churn".into(),
            inviter: Identity::from_secret_bytes([2; 32]).public_key(),
            bootstrap: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()],
            secret: [3; 32],
            expires_at_ms: 99,
        };
        let text = ticket.encode();
        assert!(text.starts_with(TICKET_PREFIX));
        assert_eq!(Ticket::decode(&format!("  {text}\n")).unwrap(), ticket);
        assert_eq!(Ticket::decode("hello"), Err(TicketError::Prefix));
        assert!(matches!(
            Ticket::decode(&format!("{TICKET_PREFIX}!!!")),
            Err(TicketError::Damaged(_))
        ));
        assert!(matches!(
            Ticket::decode(&format!("{TICKET_PREFIX}{}", "A".repeat(100_000))),
            Err(TicketError::OverLimit(_))
        ));
        assert!(matches!(
            Ticket::decode(&text[..text.len() - 5]),
            Err(TicketError::Damaged(_))
        ));
    }

    #[test]
    fn a_claim_is_checked_against_its_invitation() {
        let (mesh, invite, invitation, claim) = setup();
        let key = invite.public_key();
        let member = check_claim(mesh, Some(&invitation), &claim, &key, 10).unwrap();
        assert_eq!(member.domain, "churn");
        assert_eq!(
            check_claim(mesh, None, &claim, &key, 10),
            Err(ClaimRefusal::Unknown)
        );
        let used = Invitation {
            used: true,
            ..invitation.clone()
        };
        assert_eq!(
            check_claim(mesh, Some(&used), &claim, &key, 10),
            Err(ClaimRefusal::Used)
        );
        // The newcomer that used it may claim again (its answer was lost), nobody else.
        let used_by_it = Invitation {
            claimed_by: Some(claim.signer()),
            ..used.clone()
        };
        assert!(check_claim(mesh, Some(&used_by_it), &claim, &key, 10).is_ok());
        let used_by_other = Invitation {
            claimed_by: Some(Identity::from_secret_bytes([99; 32]).public_key()),
            ..used
        };
        assert_eq!(
            check_claim(mesh, Some(&used_by_other), &claim, &key, 10),
            Err(ClaimRefusal::Used)
        );
        assert_eq!(
            check_claim(mesh, Some(&invitation), &claim, &key, 1_000),
            Err(ClaimRefusal::Expired)
        );
        let other = Identity::from_secret_bytes([9; 32]).public_key();
        assert_eq!(
            check_claim(mesh, Some(&invitation), &claim, &other, 10),
            Err(ClaimRefusal::WrongInvitation)
        );
        assert_eq!(
            check_claim(MeshId([6; 32]), Some(&invitation), &claim, &key, 10),
            Err(ClaimRefusal::OtherMesh)
        );
        let sales = Invitation {
            domain: "sales".into(),
            ..invitation
        };
        assert!(matches!(
            check_claim(mesh, Some(&sales), &claim, &key, 10),
            Err(ClaimRefusal::WrongDomain { .. })
        ));
        let forged = claim.with_claimed_signer(other);
        assert_eq!(
            check_claim(mesh, Some(&sales), &forged, &key, 10),
            Err(ClaimRefusal::BadSignature)
        );
    }

    #[test]
    fn an_invitation_key_gets_a_bounded_number_of_answers() {
        let mut answers = JoinAnswers::default();
        let (a, b) = (
            Identity::from_secret_bytes([1; 32]).public_key(),
            Identity::from_secret_bytes([2; 32]).public_key(),
        );
        for _ in 0..MAX_JOIN_ANSWERS {
            assert!(answers.take(&a));
        }
        assert!(!answers.take(&a));
        assert!(!answers.take(&a));
        assert!(answers.exhausted(&a));
        assert!(!answers.exhausted(&b));
        // Each key has its own count.
        assert!(answers.take(&b));
        assert_eq!(answers.len(), 2);
        // A forgotten key (its invitation went) holds nothing.
        answers.forget(&a);
        answers.forget(&b);
        assert!(answers.is_empty());
    }
}
