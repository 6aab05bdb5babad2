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

/// Why a data directory may not hold a node: another user could read or replace what the
/// node keeps there (its key, the API token and `api.addr`, products, received data, the
/// store).
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory belongs to another user.
    #[error(
        "the data directory `{path}` belongs to user {owner}, not to this user ({user}): its owner could replace `api.addr` to receive the API token, and read the node's data. Use a directory of your own, or have root run `chown -R {user} {path}` if this user is meant to own it"
    )]
    OtherOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// This process's effective uid.
        user: u32,
    },
    /// Group or others may create, rename or delete entries in the directory.
    #[error(
        "the data directory `{path}` is writable by other users (mode {mode:04o}): they could replace its files and read the node's data; run `chmod 700 {path}`"
    )]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Something else is at the path.
    #[error("the data directory `{0}` is not a directory")]
    NotADirectory(PathBuf),
    /// The directory could not be inspected or its mode changed.
    #[error("cannot check the permissions of the data directory `{path}`: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl DataDirError {
    /// Whether the directory is unfit rather than unreadable: the operator has to change its
    /// owner or mode (or choose another), which is a usage error.
    pub fn is_unfit(&self) -> bool {
        !matches!(self, DataDirError::Io { .. })
    }
}

/// This process's effective uid, where the platform tells it without `unsafe` code.
fn effective_uid() -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        Some(rustix::process::geteuid().as_raw())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Checks that the existing data directory `path` is this user's and that no one else may
/// write to it, and removes the group's and others' read and search permissions if it has
/// them (a directory made before meshnode kept it private, or by `mkdir` under umask 022),
/// with a warning. Returns the mode it had when it was changed.
///
/// A directory of another user or writable by others is refused ([`DataDirError::is_unfit`]):
/// whoever can write it can replace `api.addr` to receive the API token, or the node's files.
pub fn make_private_dir(path: &Path) -> Result<Option<u32>, DataDirError> {
    use std::os::unix::fs::MetadataExt;
    let io = |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Err(DataDirError::NotADirectory(path.to_owned()));
    }
    if let Some(user) = effective_uid()
        && meta.uid() != user
    {
        return Err(DataDirError::OtherOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            user,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DataDirError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    tracing::warn!(
        path = %path.display(),
        was = %format!("{mode:04o}"),
        "the data directory was readable by other users: its mode is now 0700"
    );
    Ok(Some(mode))
}

/// Creates the data directory `path` with mode 0700; missing parents are created as the
/// process's umask makes them.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Makes every file and directory this process creates from now on private to its user:
/// adds group and other bits to the umask (022 becomes 077; a stricter mask stays). Returns
/// the mask the process had, or `None` where the platform offers no safe call for it (the
/// files keep the modes meshnode gives them: 0600 for keys, tokens and staged data).
pub fn restrict_umask() -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::Mode;
        let private = Mode::from_raw_mode(0o077);
        let was = rustix::process::umask(private);
        if !private.contains(was) {
            rustix::process::umask(was | private);
        }
        Some(was.as_raw_mode())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
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

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_data_directory_is_private_and_its_parents_are_not_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("parent").join("node");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        assert!(
            create_private_dir(&dir).is_err(),
            "an existing one is not created"
        );
        assert_eq!(make_private_dir(&dir).unwrap(), None);
    }

    #[test]
    fn a_readable_data_directory_is_made_private_and_a_writable_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(make_private_dir(&dir).unwrap(), Some(0o755));
        assert_eq!(mode_of(&dir), 0o700);
        for mode in [0o777, 0o770, 0o702, 0o1777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = make_private_dir(&dir).unwrap_err();
            assert!(
                matches!(err, DataDirError::Writable { .. }),
                "{mode:o}: {err}"
            );
            assert!(err.is_unfit());
            assert!(err.to_string().contains("chmod 700"), "{err}");
            assert_eq!(mode_of(&dir), mode, "a refused directory is left as it is");
        }
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            make_private_dir(&file),
            Err(DataDirError::NotADirectory(_))
        ));
        let err = make_private_dir(&tmp.path().join("missing")).unwrap_err();
        assert!(
            matches!(err, DataDirError::Io { .. }) && !err.is_unfit(),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    /// As root (the tests' container): a directory of another user is refused.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_data_directory_of_another_user_is_refused() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        create_private_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let err = make_private_dir(&dir).unwrap_err();
        assert!(
            matches!(err, DataDirError::OtherOwner { owner: 65534, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chown"), "{err}");
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
