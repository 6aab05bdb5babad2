//! The identity file: the node's ed25519 secret as hex, readable by its owner only.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mesh_protocol::Identity;

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
    writeln!(file, "{}", hex::encode(identity.secret_bytes())).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(identity)
}

/// Loads an identity, checking that it is a 32-byte hex secret.
pub fn load(path: &Path) -> Result<Identity, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => KeyFileError::Missing(path.to_owned()),
        std::io::ErrorKind::InvalidData => KeyFileError::Corrupt {
            path: path.to_owned(),
            reason: "not text".into(),
        },
        _ => KeyFileError::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    let corrupt = |reason: String| KeyFileError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let bytes = hex::decode(text.trim()).map_err(|e| corrupt(format!("not hex: {e}")))?;
    let identity = Identity::from_secret_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
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
    std::fs::rename(&tmp, path)
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
    }
}
