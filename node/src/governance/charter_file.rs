//! A charter as people write it: `charter.toml`.
//!
//! ```toml
//! name = "e-commerce"
//! quorum = 2                      # governing domains needed to carry a motion
//! admission = "any-member"        # or "quorum"
//!
//! [[governors]]
//! domain = "product"              # no key: the domain that founds the mesh with this file
//! [[governors]]
//! domain = "customer"
//! key = "9f3c...64 hex digits"
//!
//! [policies]
//! restricted_tags = ["pii"]
//! required_fields = ["contact", "freshness-sla"]
//! max_contract_days = 365
//! purposes = []
//! ```

use std::path::Path;

use mesh_protocol::governance::{AdmissionRule, Charter, Member, Policies, RequiredField};
use mesh_protocol::{Identity, PublicKey, Signed};
use serde::Deserialize;

use crate::localfile::LocalFileError;

/// Largest charter file read.
const MAX_CHARTER_FILE: u64 = 1024 * 1024;

/// Why a charter file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CharterFileError {
    /// Unreadable.
    #[error("cannot read the charter `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: LocalFileError,
    },
    /// Too large.
    #[error("the charter `{0}` is larger than 1 MiB: is it the right file?")]
    TooLarge(String),
    /// Not valid TOML, or fields of the wrong type.
    #[error("the charter `{path}` is not valid: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        #[source]
        source: toml::de::Error,
    },
    /// Breaks a rule of charters.
    #[error("the charter `{path}` is not valid: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CharterToml {
    name: String,
    #[serde(default = "one")]
    quorum: u16,
    #[serde(default)]
    admission: Option<String>,
    governors: Vec<MemberToml>,
    #[serde(default)]
    members: Vec<MemberToml>,
    #[serde(default)]
    policies: PoliciesToml,
}

fn one() -> u16 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberToml {
    domain: String,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoliciesToml {
    #[serde(default)]
    restricted_tags: Vec<String>,
    #[serde(default)]
    required_fields: Vec<String>,
    #[serde(default)]
    max_contract_days: Option<u32>,
    #[serde(default)]
    purposes: Vec<String>,
}

/// Reads `path` and signs the charter with `founder` (domain `domain`), which must be one
/// of its governors: by key, or as the governor entry without a key whose domain is
/// `domain`.
pub fn read_charter(
    path: &Path,
    founder: &Identity,
    domain: &str,
    founded_at_ms: u64,
) -> Result<Signed<Charter>, CharterFileError> {
    let shown = path.display().to_string();
    // Bounded, and a regular file only: a FIFO or a device named by mistake is refused, not
    // waited on or read without end.
    let text = crate::localfile::read_to_string(path, MAX_CHARTER_FILE).map_err(|e| match e {
        LocalFileError::TooLarge { .. } => CharterFileError::TooLarge(shown.clone()),
        source => CharterFileError::Read {
            path: shown.clone(),
            source,
        },
    })?;
    let parsed: CharterToml = toml::from_str(&text).map_err(|source| CharterFileError::Parse {
        path: shown.clone(),
        source,
    })?;
    let invalid = |reason: String| CharterFileError::Invalid {
        path: shown.clone(),
        reason,
    };
    let me = founder.public_key();
    let member = |m: &MemberToml| -> Result<Member, CharterFileError> {
        let key = match &m.key {
            Some(hex) => PublicKey::from_hex(hex).map_err(|e| {
                invalid(format!(
                    "the key of `{}` is not a public key: {e}",
                    m.domain
                ))
            })?,
            None if m.domain == domain => me,
            None => {
                return Err(invalid(format!(
                    "`{}` has no key: only the founding domain (`{domain}`) may be listed without one",
                    m.domain
                )));
            }
        };
        Ok(Member {
            key,
            domain: m.domain.clone(),
        })
    };
    let governors = parsed
        .governors
        .iter()
        .map(member)
        .collect::<Result<Vec<_>, _>>()?;
    let members = parsed
        .members
        .iter()
        .map(member)
        .collect::<Result<Vec<_>, _>>()?;
    let admission = match parsed.admission.as_deref() {
        None | Some("any-member") => AdmissionRule::AnyMember,
        Some("quorum") => AdmissionRule::Quorum,
        Some(other) => {
            return Err(invalid(format!(
                "admission `{other}`: choose `any-member` or `quorum`"
            )));
        }
    };
    let required_fields = parsed
        .policies
        .required_fields
        .iter()
        .map(|f| {
            RequiredField::parse(f).ok_or_else(|| {
                invalid(format!(
                    "required field `{f}`: choose from {}",
                    RequiredField::ALL.map(|f| f.as_str()).join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let charter = Charter {
        name: parsed.name,
        founded_at_ms,
        governors,
        quorum: parsed.quorum,
        admission,
        members,
        policies: Policies {
            version: 0,
            restricted_tags: parsed.policies.restricted_tags,
            required_fields,
            max_contract_days: parsed.policies.max_contract_days,
            purposes: parsed.policies.purposes,
        },
        nonce: rand::random(),
    };
    if !charter.is_governor(&me) {
        return Err(invalid(format!(
            "the founding domain `{domain}` (key {}) is not among its governors: the charter is signed by one of them",
            me.fingerprint()
        )));
    }
    if !charter.policies.tags_are_names() {
        return Err(invalid("restricted tags are names of [a-z0-9-]".into()));
    }
    charter.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(Signed::sign(founder, &charter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("charter.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_written_charter_is_read_and_signed() {
        let founder = Identity::from_secret_bytes([1; 32]);
        let other = Identity::from_secret_bytes([2; 32]).public_key();
        let (_d, path) = write(&format!(
            "name = \"shop\"\nquorum = 2\n[[governors]]\ndomain = \"product\"\n[[governors]]\ndomain = \"customer\"\nkey = \"{}\"\n[policies]\nrestricted_tags = [\"pii\"]\nrequired_fields = [\"contact\"]\n",
            other.to_hex()
        ));
        let signed = read_charter(&path, &founder, "product", 5).unwrap();
        let (_, charter) = mesh_protocol::governance::verify_charter(&signed).unwrap();
        assert_eq!(charter.governors.len(), 2);
        assert_eq!(charter.governors[0].key, founder.public_key());
        assert_eq!(charter.quorum, 2);
        assert_eq!(charter.policies.restricted_tags, vec!["pii"]);
        assert_eq!(
            charter.policies.required_fields,
            vec![RequiredField::Contact]
        );
    }

    #[test]
    fn mistakes_are_named() {
        let founder = Identity::from_secret_bytes([1; 32]);
        let (_d, path) =
            write("name = \"shop\"\nquorum = 3\n[[governors]]\ndomain = \"product\"\n");
        let err = read_charter(&path, &founder, "product", 5).unwrap_err();
        assert!(err.to_string().contains("decision rule"), "{err}");
        let (_d, path) = write("name = \"shop\"\n[[governors]]\ndomain = \"customer\"\n");
        let err = read_charter(&path, &founder, "product", 5).unwrap_err();
        assert!(err.to_string().contains("has no key"), "{err}");
        let (_d, path) = write("name = \"shop\"\ngovernors = 3\n");
        let err = read_charter(&path, &founder, "product", 5).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_named_as_the_charter_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("charter.toml");
        crate::localfile::tests::make_fifo(&path);
        let err = crate::localfile::tests::without_blocking(move || {
            read_charter(&path, &Identity::from_secret_bytes([1; 32]), "product", 5)
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("charter.toml") && err.contains("FIFO"),
            "{err}"
        );
    }

    #[test]
    fn a_charter_over_the_limit_is_refused_unread() {
        let (_d, path) = write(&"#".repeat(MAX_CHARTER_FILE as usize + 1));
        let err =
            read_charter(&path, &Identity::from_secret_bytes([1; 32]), "product", 5).unwrap_err();
        assert!(matches!(err, CharterFileError::TooLarge(_)), "{err}");
    }
}
