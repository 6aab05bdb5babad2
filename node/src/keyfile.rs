//! The identity file: the node's ed25519 secret and its public key as hex, readable by its
//! owner only.
//!
//! ```text
//! # meshnode identity: ...
//! secret <64 hex digits>
//! public <64 hex digits>
//! ```
//!
//! The public key is written beside the secret so that damage to either is found at start
//! (the key derived from the secret must be the one recorded) instead of starting the node
//! as another domain. A file of the first format (one line: the secret alone) is accepted
//! once and rewritten with its public key, with a log line.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mesh_protocol::Identity;

use crate::localfile::LocalFileError;

/// Largest identity file read.
const MAX_KEY_FILE: u64 = 4096;

/// Why the identity could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// `init` found an identity already there.
    #[error(
        "an identity already exists at `{0}`: refusing to overwrite it (use another --data-dir, or delete the file if you really mean to replace this domain's key)"
    )]
    Exists(PathBuf),
    /// No identity file.
    #[error("no identity at `{0}`: run `meshnode init --data-dir DIR --domain NAME` first")]
    Missing(PathBuf),
    /// The file is not a valid key.
    #[error(
        "identity file `{path}` is corrupt ({reason}): restore it from a backup, or run `meshnode init` in a new data directory"
    )]
    Corrupt {
        /// Path of the file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The secret does not derive the public key recorded beside it: one of them changed.
    #[error(
        "identity file `{path}` is damaged: its secret key belongs to the key with fingerprint {derived}, but the file records the public key with fingerprint {recorded}; starting would run this node as a different domain. Restore `{path}` from a backup (the key with fingerprint {recorded}); do not edit it by hand"
    )]
    Mismatch {
        /// Path of the file.
        path: PathBuf,
        /// Fingerprint of the key derived from the stored secret.
        derived: String,
        /// Fingerprint of the public key recorded in the file.
        recorded: String,
    },
    /// Any other I/O failure.
    #[error("cannot access identity file `{path}`: {source}")]
    Io {
        /// Path of the file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// Writes a new identity from `secret` (fresh random bytes from the caller), mode 0600,
/// refusing to replace an existing file.
pub fn create(path: &Path, secret: [u8; 32]) -> Result<Identity, KeyFileError> {
    let identity = Identity::from_secret_bytes(secret);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyFileError::Exists(path.to_owned()),
            _ => KeyFileError::Io {
                path: path.to_owned(),
                source,
            },
        })?;
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    file.write_all(key_file_text(&identity).as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    sync_parent(path).map_err(io)?;
    Ok(identity)
}

/// The text of an identity file: a comment, the secret, the public key.
fn key_file_text(identity: &Identity) -> String {
    format!(
        "# meshnode identity of this domain: keep it secret and back it up; never edit it\n\
         secret {}\npublic {}\n",
        hex::encode(identity.secret_bytes()),
        identity.public_key().to_hex()
    )
}

/// Fsyncs the directory holding `path`, so a new or renamed file survives a crash.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// The two parts of an identity file as read, before they are checked against each other.
#[derive(Debug, PartialEq, Eq)]
struct KeyFileParts {
    /// The secret seed's bytes.
    secret: Vec<u8>,
    /// The recorded public key; `None` in a file of the first format.
    public: Option<Vec<u8>>,
}

/// Splits an identity file into its parts; `Err` says what is wrong.
fn parse_key_file(text: &str) -> Result<KeyFileParts, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if let [only] = lines.as_slice()
        && !only.contains(' ')
    {
        // The first format: the secret alone.
        let secret = hex::decode(only).map_err(|e| format!("not hex: {e}"))?;
        return Ok(KeyFileParts {
            secret,
            public: None,
        });
    }
    let (mut secret, mut public) = (None, None);
    for line in lines {
        let (label, value) = line.split_once(' ').ok_or_else(|| {
            format!(
                "unexpected line `{}`",
                line.chars().take(20).collect::<String>()
            )
        })?;
        let slot = match label {
            "secret" => &mut secret,
            "public" => &mut public,
            other => {
                return Err(format!(
                    "unexpected entry `{}`",
                    other.chars().take(20).collect::<String>()
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("`{label}` appears twice"));
        }
        *slot =
            Some(hex::decode(value.trim()).map_err(|e| format!("{label} key is not hex: {e}"))?);
    }
    Ok(KeyFileParts {
        secret: secret.ok_or("no `secret` line")?,
        public: Some(public.ok_or("no `public` line")?),
    })
}

/// Loads an identity, checking that it is a 32-byte hex secret.
pub fn load(path: &Path) -> Result<Identity, KeyFileError> {
    // An identity file is about 200 bytes: nothing of any length is read, and only a file.
    let text =
        crate::localfile::read_to_string(path, MAX_KEY_FILE).map_err(|error| match error {
            e if e.is_not_found() => KeyFileError::Missing(path.to_owned()),
            LocalFileError::Io(source) => KeyFileError::Io {
                path: path.to_owned(),
                source,
            },
            refused => KeyFileError::Corrupt {
                path: path.to_owned(),
                reason: refused.to_string(),
            },
        })?;
    let corrupt = |reason: String| KeyFileError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let parts = parse_key_file(&text).map_err(corrupt)?;
    let identity =
        Identity::from_secret_slice(&parts.secret).map_err(|e| corrupt(e.to_string()))?;
    let derived = identity.public_key();
    match parts.public {
        Some(recorded) if recorded.as_slice() == derived.0.as_slice() => {}
        Some(recorded) => {
            let recorded = match <[u8; 32]>::try_from(recorded.as_slice()) {
                Ok(bytes) => mesh_protocol::PublicKey(bytes).fingerprint(),
                Err(_) => format!("(unreadable: {} bytes)", recorded.len()),
            };
            return Err(KeyFileError::Mismatch {
                path: path.to_owned(),
                derived: derived.fingerprint(),
                recorded,
            });
        }
        None => {
            // Accepted: nothing on disk says which key this file held before, so the first
            // start after the upgrade records the key it derives (the audit anchor, signed
            // by the node key, is checked against it at start).
            write_secret_file(path, &key_file_text(&identity)).map_err(|source| {
                KeyFileError::Io {
                    path: path.to_owned(),
                    source,
                }
            })?;
            tracing::warn!(
                path = %path.display(),
                fingerprint = %derived.fingerprint(),
                "identity file had no public key: recorded the key its secret derives; from now on a change to either is refused at start"
            );
        }
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "identity file is readable by other users; run `chmod 600` on it"
        );
    }
    Ok(identity)
}

/// Writes a secret token file (mode 0600), replacing any previous one atomically.
pub fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let id = create(&path, [5; 32]).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(&path).unwrap().public_key(), id.public_key());
        assert!(matches!(
            create(&path, [6; 32]),
            Err(KeyFileError::Exists(_))
        ));
        assert_eq!(load(&path).unwrap().public_key(), id.public_key());
    }

    #[test]
    fn corrupt_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        assert!(matches!(load(&path), Err(KeyFileError::Missing(_))));
        std::fs::write(&path, "zz").unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Corrupt { .. })));
        std::fs::write(&path, "abcd").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        std::fs::write(&path, "#".repeat(1 << 20)).unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Corrupt { .. })));
        for text in [
            "secret 00\n",
            "public 00\n",
            "secret 00\nsecret 00\npublic 00\n",
            "secret 00\nprivate 00\n",
            "secret zz\npublic 00\n",
        ] {
            std::fs::write(&path, text).unwrap();
            assert!(
                matches!(load(&path), Err(KeyFileError::Corrupt { .. })),
                "{text}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_in_place_of_the_identity_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        crate::localfile::tests::make_fifo(&path);
        let err = crate::localfile::tests::without_blocking(move || load(&path)).unwrap_err();
        assert!(matches!(err, KeyFileError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("FIFO"), "{err}");
    }

    #[test]
    fn every_changed_digit_is_refused_with_both_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let id = create(&path, [5; 32]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("public {}", id.public_key().to_hex())));
        // Change one hex digit of the secret, then of the public key.
        for label in ["\nsecret ", "\npublic "] {
            let at = text.find(label).unwrap() + label.len() + 10;
            let mut bytes = text.clone().into_bytes();
            bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
            std::fs::write(&path, &bytes).unwrap();
            let err = load(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::Mismatch { .. }), "{err}");
            let shown = err.to_string();
            assert!(shown.contains(&id.public_key().fingerprint()), "{shown}");
            assert!(shown.contains("identity.key"), "{shown}");
            assert!(shown.contains("backup"), "{shown}");
        }
    }

    #[test]
    fn a_file_of_the_first_format_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let id = Identity::from_secret_bytes([9; 32]);
        std::fs::write(&path, format!("{}\n", hex::encode(id.secret_bytes()))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&path).unwrap().public_key(), id.public_key());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("public {}", id.public_key().to_hex())));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(&path).unwrap().public_key(), id.public_key());
    }
}
