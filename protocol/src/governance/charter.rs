//! The charter that founds a mesh, and the mesh id derived from it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bounds::BoundsError;
use crate::descriptor::{DescriptorError, validate_name};
use crate::envelope::{Signable, Signed};
use crate::governance::GovernanceError;
use crate::governance::policy::Policies;
use crate::identity::PublicKey;

/// Most governing domains in a charter.
pub const MAX_GOVERNORS: usize = 32;
/// Most founding members (besides the governors) a charter lists.
pub const MAX_FOUNDING_MEMBERS: usize = 2048;

/// A mesh's id: the BLAKE3 hash of its charter's signed body. Two meshes with different
/// charters never share an id, and an id names exactly one charter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MeshId(pub [u8; 32]);

impl MeshId {
    /// The id of a charter body.
    pub fn of_body(body: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"meshnode/mesh-id/v1");
        hasher.update(body);
        Self(*hasher.finalize().as_bytes())
    }

    /// Full lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 16 hex digits: in protocol names, the gossip topic and displays.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for MeshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// A domain of the mesh: its key and its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The domain's node key.
    pub key: PublicKey,
    /// The domain's name (a label; keys are the identity).
    pub domain: String,
}

/// Who may admit a new domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdmissionRule {
    /// Any member may admit a domain on its own signature (`mesh invite` is enough). A
    /// member's admissions stand only while it does: removing it removes the domains that
    /// no remaining member signed for.
    #[default]
    AnyMember,
    /// Admission is a motion carried by the decision rule's quorum of governing domains.
    Quorum,
}

impl fmt::Display for AdmissionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdmissionRule::AnyMember => "any-member",
            AdmissionRule::Quorum => "quorum",
        })
    }
}

/// The founding document of a mesh: who governs, how decisions are carried, who may join,
/// and the global policies at version 0. Signed by one of its governors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charter {
    /// The mesh's name, `[a-z0-9-]`.
    pub name: String,
    /// Founding time, Unix milliseconds.
    pub founded_at_ms: u64,
    /// The governing domains: they carry amendments, removals and (under
    /// [`AdmissionRule::Quorum`]) admissions.
    pub governors: Vec<Member>,
    /// How many distinct governors must sign a motion to carry it (the decision rule, "2 of 3").
    pub quorum: u16,
    /// Who may admit a new domain.
    pub admission: AdmissionRule,
    /// Members from the start besides the governors (no admission needed).
    pub members: Vec<Member>,
    /// Global policies at version 0.
    pub policies: Policies,
    /// Random bytes, so that two meshes founded with the same text have different ids.
    pub nonce: [u8; 16],
}

impl Signable for Charter {
    const CONTEXT: &'static str = "meshnode/charter/v1";
    const MAX_BODY: usize = 160 * 1024;
}

impl Charter {
    /// The charter of a mesh founded by one domain alone: its sole governor, a quorum of
    /// one, admission by any member, no policies.
    pub fn solo(name: &str, founder: Member, founded_at_ms: u64, nonce: [u8; 16]) -> Self {
        Self {
            name: name.into(),
            founded_at_ms,
            governors: vec![founder],
            quorum: 1,
            admission: AdmissionRule::AnyMember,
            members: vec![],
            policies: Policies::default(),
            nonce,
        }
    }

    /// Checks names, counts, the decision rule and the policies.
    pub fn validate(&self) -> Result<(), GovernanceError> {
        validate_name("mesh", &self.name).map_err(invalid)?;
        if self.governors.is_empty() {
            return Err(GovernanceError::Invalid(
                "a charter needs at least one governing domain".into(),
            ));
        }
        bounded("the governors", self.governors.len(), MAX_GOVERNORS)?;
        bounded(
            "the founding members",
            self.members.len(),
            MAX_FOUNDING_MEMBERS,
        )?;
        if self.quorum == 0 || usize::from(self.quorum) > self.governors.len() {
            return Err(GovernanceError::Invalid(format!(
                "the decision rule needs between 1 and {} governors, not {}",
                self.governors.len(),
                self.quorum
            )));
        }
        let mut keys: Vec<&PublicKey> = self
            .governors
            .iter()
            .chain(&self.members)
            .map(|m| &m.key)
            .collect();
        for m in self.governors.iter().chain(&self.members) {
            validate_name("domain", &m.domain).map_err(invalid)?;
        }
        keys.sort();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(GovernanceError::Invalid(
                "a key is listed twice among the governors and members".into(),
            ));
        }
        if self.policies.version != 0 {
            return Err(GovernanceError::Invalid(
                "a charter's policies are version 0".into(),
            ));
        }
        self.policies.validate()?;
        Ok(())
    }

    /// Whether `key` is a governing domain.
    pub fn is_governor(&self, key: &PublicKey) -> bool {
        self.governors.iter().any(|g| &g.key == key)
    }
}

/// Verifies a charter envelope: a good signature by one of its governors, and a valid
/// charter. Returns the mesh id and the charter.
pub fn verify_charter(envelope: &Signed<Charter>) -> Result<(MeshId, Charter), GovernanceError> {
    let charter = envelope.verify()?;
    if !charter.is_governor(&envelope.signer()) {
        return Err(GovernanceError::Invalid(
            "the charter is not signed by one of its governors".into(),
        ));
    }
    charter.validate()?;
    Ok((MeshId::of_body(envelope.body()), charter))
}

fn invalid(e: DescriptorError) -> GovernanceError {
    GovernanceError::Invalid(e.to_string())
}

fn bounded(what: &str, count: usize, max: usize) -> Result<(), GovernanceError> {
    crate::bounds::check_count(what, count, max).map_err(|e: BoundsError| e.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn member(seed: u8, domain: &str) -> (Identity, Member) {
        let id = Identity::from_secret_bytes([seed; 32]);
        let m = Member {
            key: id.public_key(),
            domain: domain.into(),
        };
        (id, m)
    }

    #[test]
    fn the_id_is_the_hash_of_the_signed_body() {
        let (founder, m) = member(1, "product");
        let charter = Charter::solo("shop", m, 1, [0; 16]);
        let signed = Signed::sign(&founder, &charter);
        let (id, back) = verify_charter(&signed).unwrap();
        assert_eq!(back, charter);
        assert_eq!(id, MeshId::of_body(signed.body()));
        let other = Charter {
            nonce: [1; 16],
            ..charter.clone()
        };
        let (other_id, _) = verify_charter(&Signed::sign(&founder, &other)).unwrap();
        assert_ne!(id, other_id, "same text, other nonce: another mesh");
    }

    #[test]
    fn only_a_governor_signs_a_charter() {
        let (_, m) = member(1, "product");
        let (outsider, _) = member(2, "mallory");
        let signed = Signed::sign(&outsider, &Charter::solo("shop", m, 1, [0; 16]));
        assert!(matches!(
            verify_charter(&signed),
            Err(GovernanceError::Invalid(_))
        ));
    }

    #[test]
    fn the_decision_rule_must_be_reachable() {
        let (_, a) = member(1, "product");
        let (_, b) = member(2, "customer");
        let mut charter = Charter::solo("shop", a.clone(), 1, [0; 16]);
        charter.governors.push(b);
        charter.quorum = 3;
        assert!(charter.validate().is_err());
        charter.quorum = 2;
        assert!(charter.validate().is_ok());
        charter.members.push(a);
        assert!(charter.validate().is_err(), "a key listed twice");
    }
}
