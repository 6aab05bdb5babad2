//! Where a fetch may write. The daemon writes with its own rights, so `--out` is checked
//! before anything is created:
//!
//! - the directory must exist (nothing is created on the caller's behalf) and is resolved
//!   to its real path, so `..` and symbolic links cannot lead elsewhere;
//! - never inside a node's data directory (this node's, or any directory holding
//!   `meshnode.toml` or `identity.key`), except its `received/` directory;
//! - an existing file is replaced only when asked (`--force`), and the final step of a
//!   fetch without `--force` cannot replace a file that appeared meanwhile;
//! - one fetch per output path at a time: an advisory lock on `OUT.partial.lock`, held for
//!   the whole fetch and released by the kernel if the daemon dies. A symbolic link planted
//!   there is removed, never followed (the file is opened with `O_NOFOLLOW`), like the links
//!   planted at the partial file and its state.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::config::CONFIG_FILE;

/// Files whose presence marks a node data directory.
const DATA_DIR_MARKERS: [&str; 2] = [CONFIG_FILE, "identity.key"];
/// The directory of a data directory that fetches may write into.
const RECEIVED: &str = "received";

/// Why a fetch may not write to the output path. Each message names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The path is relative (the CLI sends absolute paths).
    #[error("the output path `{0}` must be absolute")]
    NotAbsolute(PathBuf),
    /// The path names no file (`/`, `..`).
    #[error("the output path `{0}` names no file: give a file name such as data.arrow")]
    NoFileName(PathBuf),
    /// The path is an existing directory.
    #[error("the output path `{0}` is a directory; name a file inside it such as {0}/data.arrow")]
    IsDirectory(PathBuf),
    /// The directory of the output does not exist.
    #[error("the output directory `{dir}` does not exist: create it first or choose another --out")]
    MissingDirectory {
        /// The directory.
        dir: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The directory of the output is not a directory.
    #[error("`{0}` is not a directory: choose another --out")]
    NotADirectory(PathBuf),
    /// The daemon may not write into the directory (permissions, read-only file system).
    #[error(
        "the meshnode daemon cannot write into `{dir}` ({source}): choose a directory it can write to"
    )]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The path is inside a node's data directory.
    #[error(
        "refusing to write `{path}`: it is inside the meshnode data directory `{data_dir}`; choose a path outside it (or in its {RECEIVED}/ directory)"
    )]
    InsideDataDir {
        /// The output path (resolved).
        path: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
    },
    /// A file exists at the path and `--force` was not given.
    #[error("`{0}` already exists: pass --force to replace it, or choose another --out")]
    Exists(PathBuf),
    /// Another fetch is writing the same path.
    #[error(
        "`{0}` is already being written by another fetch: wait for it to finish or choose another --out"
    )]
    Locked(PathBuf),
    /// The lock could not be taken for another reason.
    #[error("cannot lock `{path}`: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
}

/// How an [`OutputError`] is reported to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// The caller asked for something it may not have (400).
    BadRequest,
    /// The path is taken (409).
    Conflict,
    /// Our fault (500).
    Internal,
}

impl OutputError {
    /// Short machine-readable label.
    pub fn code(&self) -> &'static str {
        match self {
            OutputError::NotAbsolute(_) | OutputError::NoFileName(_) => "bad_output_path",
            OutputError::IsDirectory(_) | OutputError::NotADirectory(_) => "bad_output_path",
            OutputError::MissingDirectory { .. } => "missing_directory",
            OutputError::NotWritable { .. } => "not_writable",
            OutputError::InsideDataDir { .. } => "inside_data_dir",
            OutputError::Exists(_) => "exists",
            OutputError::Locked(_) => "locked",
            OutputError::Lock { .. } => "io",
        }
    }

    pub(super) fn status(&self) -> Status {
        match self {
            OutputError::Exists(_) | OutputError::Locked(_) => Status::Conflict,
            OutputError::Lock { .. } => Status::Internal,
            _ => Status::BadRequest,
        }
    }
}

/// Whether an I/O error is one the operator fixes (permissions, read-only or full disk, a
/// missing directory) rather than a fault of the daemon.
pub(crate) fn is_user_fixable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::PermissionDenied
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::StorageFull
            | ErrorKind::QuotaExceeded
            | ErrorKind::NotFound
            | ErrorKind::NotADirectory
    )
}

/// A checked output path, locked for one fetch until dropped.
#[derive(Debug)]
pub(super) struct OutputTarget {
    /// The output file: the real path of its directory plus its file name.
    pub(super) path: PathBuf,
    /// The lock on it.
    _lock: OutputLock,
}

/// Checks `out` for a fetch by the node whose data directory is `own_data_dir` and locks
/// it. `force` allows replacing an existing file.
pub(super) fn prepare(
    out: &Path,
    own_data_dir: &Path,
    force: bool,
) -> Result<OutputTarget, OutputError> {
    if !out.is_absolute() {
        return Err(OutputError::NotAbsolute(out.to_owned()));
    }
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else {
        return Err(OutputError::NoFileName(out.to_owned()));
    };
    let dir = match std::fs::canonicalize(parent) {
        Ok(d) => d,
        Err(source) if source.kind() == ErrorKind::NotFound => {
            return Err(OutputError::MissingDirectory {
                dir: parent.to_owned(),
                source,
            });
        }
        Err(source) if source.kind() == ErrorKind::NotADirectory => {
            return Err(OutputError::NotADirectory(parent.to_owned()));
        }
        Err(source) => {
            return Err(OutputError::NotWritable {
                dir: parent.to_owned(),
                source,
            });
        }
    };
    if !dir.is_dir() {
        return Err(OutputError::NotADirectory(parent.to_owned()));
    }
    let path = dir.join(name);
    check_not_in_data_dir(&path, &dir, own_data_dir)?;
    let existing = std::fs::symlink_metadata(&path).ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(OutputError::IsDirectory(path));
    }
    if existing.is_some() && !force {
        return Err(OutputError::Exists(path));
    }
    let lock = OutputLock::acquire(&path, &dir)?;
    // A file may have appeared while the lock was taken.
    if !force && std::fs::symlink_metadata(&path).is_ok() {
        return Err(OutputError::Exists(path));
    }
    Ok(OutputTarget { path, _lock: lock })
}

/// Refuses `path` (in the resolved directory `dir`) when a data directory holds it.
fn check_not_in_data_dir(path: &Path, dir: &Path, own_data_dir: &Path) -> Result<(), OutputError> {
    let own = std::fs::canonicalize(own_data_dir).unwrap_or_else(|_| own_data_dir.to_owned());
    for ancestor in dir.ancestors() {
        let is_data_dir = ancestor == own
            || DATA_DIR_MARKERS
                .iter()
                .any(|m| std::fs::symlink_metadata(ancestor.join(m)).is_ok());
        if is_data_dir && !dir.starts_with(ancestor.join(RECEIVED)) {
            return Err(OutputError::InsideDataDir {
                path: path.to_owned(),
                data_dir: ancestor.to_owned(),
            });
        }
    }
    Ok(())
}

/// `OUT.partial.lock`, locked; removed when dropped.
#[derive(Debug)]
struct OutputLock {
    /// The lock file.
    path: PathBuf,
    /// The open, locked file (the kernel drops the lock with it).
    _file: File,
}

impl OutputLock {
    fn acquire(out: &Path, dir: &Path) -> Result<Self, OutputError> {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(".partial.lock");
        let path = out.with_file_name(name);
        let not_writable = |source| OutputError::NotWritable {
            dir: dir.to_owned(),
            source,
        };
        // A holder removes the file before it unlocks it; if that happened between our open
        // and our lock, we hold a lock on a removed file and must try again.
        for _ in 0..16 {
            // A lock file is always a plain file: a symbolic link there was planted, and is
            // removed (not what it points to). One planted between this check and the open
            // makes the open fail rather than follow it, and the next round removes it.
            if is_link(&path) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(not_writable(e)),
                }
            }
            let file = match open_lock_file(&path) {
                Ok(file) => file,
                Err(_) if is_link(&path) => continue,
                Err(source) => {
                    return Err(match source.kind() {
                        ErrorKind::AlreadyExists | ErrorKind::IsADirectory => {
                            OutputError::Locked(out.to_owned())
                        }
                        _ => not_writable(source),
                    });
                }
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(OutputError::Locked(out.to_owned())),
                Err(TryLockError::Error(source)) => {
                    return Err(OutputError::Lock { path, source });
                }
            }
            if same_file(&file, &path) {
                return Ok(Self { path, _file: file });
            }
        }
        Err(OutputError::Locked(out.to_owned()))
    }
}

/// Whether `path` is a symbolic link.
fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Opens `path` for the lock, creating it, without following a symbolic link there
/// (`O_NOFOLLOW`: the open fails instead). Off Linux the node has no binding for the flag
/// (`rustix` is a Linux-only dependency), and only the check before the open guards it.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    options.open(path)
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked: see `acquire`.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `path` still names the open `file`.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// Moves the verified `partial` to `out`: replacing a file there only with `force`.
pub(super) fn place(partial: &Path, out: &Path, force: bool) -> Result<(), PlaceError> {
    if force {
        return std::fs::rename(partial, out).map_err(PlaceError::Io);
    }
    // A hard link fails if `out` exists, atomically.
    match std::fs::hard_link(partial, out) {
        Ok(()) => {
            let _ = std::fs::remove_file(partial);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Err(PlaceError::Exists(OutputError::Exists(out.to_owned())))
        }
        // File systems without hard links: check, then rename.
        Err(_) if std::fs::symlink_metadata(out).is_ok() => {
            Err(PlaceError::Exists(OutputError::Exists(out.to_owned())))
        }
        Err(_) => std::fs::rename(partial, out).map_err(PlaceError::Io),
    }
}

/// Why [`place`] failed.
#[derive(Debug)]
pub(super) enum PlaceError {
    /// A file appeared at the output path.
    Exists(OutputError),
    /// The file system failed.
    Io(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join(RECEIVED)).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), "domain = \"x\"\n").unwrap();
        std::fs::write(dir.join("identity.key"), "00").unwrap();
        dir
    }

    #[test]
    fn output_paths_get_the_verdict_of_the_table() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let own = data_dir(&root, "own");
        let other = data_dir(&root, "other");
        // A data directory without markers is still ours.
        let bare = root.join("bare");
        std::fs::create_dir_all(bare.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("out")).unwrap();
        std::fs::write(root.join("out/existing.arrow"), "x").unwrap();
        std::fs::create_dir_all(root.join("out/dir.arrow")).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&own, root.join("out/link")).unwrap();
        let mut table: Vec<(PathBuf, &PathBuf, bool, &str)> = vec![
            (root.join("out/new.arrow"), &own, false, "ok"),
            (root.join("out/existing.arrow"), &own, false, "exists"),
            (root.join("out/existing.arrow"), &own, true, "ok"),
            (root.join("out/dir.arrow"), &own, true, "bad_output_path"),
            (
                root.join("missing/x.arrow"),
                &own,
                false,
                "missing_directory",
            ),
            (root.join("file/x.arrow"), &own, false, "bad_output_path"),
            (PathBuf::from("rel.arrow"), &own, false, "bad_output_path"),
            (PathBuf::from("/"), &own, false, "bad_output_path"),
            (own.join("identity.key"), &own, true, "inside_data_dir"),
            (own.join("new.arrow"), &own, false, "inside_data_dir"),
            (own.join("db/x.arrow"), &own, false, "missing_directory"),
            (own.join("received/x.arrow"), &own, false, "ok"),
            (
                own.join("received/../identity.key"),
                &own,
                true,
                "inside_data_dir",
            ),
            (other.join("meshnode.toml"), &own, true, "inside_data_dir"),
            (other.join("received/x.arrow"), &own, false, "ok"),
            (bare.join("sub/x.arrow"), &bare, false, "inside_data_dir"),
        ];
        #[cfg(unix)]
        table.push((
            root.join("out/link/identity.key"),
            &own,
            true,
            "inside_data_dir",
        ));
        for (i, (out, own, force, want)) in table.iter().enumerate() {
            let got = match prepare(out, own, *force) {
                Ok(target) => {
                    assert!(target.path.is_absolute());
                    "ok"
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    e.code()
                }
            };
            assert_eq!(got, *want, "row {i}: {}", out.display());
        }
        // Nothing was created by the checks (the locks are gone with their targets).
        assert!(!root.join("out/new.arrow").exists());
        assert!(!root.join("out/new.arrow.partial.lock").exists());
        assert_eq!(std::fs::read(own.join("identity.key")).unwrap(), b"00");
    }

    #[test]
    fn one_fetch_per_output_path() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("node");
        let out = tmp.path().join("x.arrow");
        let first = prepare(&out, &own, false).unwrap();
        let second = prepare(&out, &own, false).unwrap_err();
        assert_eq!(second.code(), "locked", "{second}");
        assert!(
            second
                .to_string()
                .contains("already being written by another fetch")
        );
        drop(first);
        let third = prepare(&out, &own, false).unwrap();
        drop(third);
        assert!(!tmp.path().join("x.arrow.partial.lock").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_link_at_the_lock_is_removed_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("node");
        let out = tmp.path().join("x.arrow");
        let lock = tmp.path().join("x.arrow.partial.lock");
        let absent = tmp.path().join("absent");
        let precious = tmp.path().join("precious");
        std::fs::write(&precious, "precious").unwrap();
        for target in [&absent, &precious] {
            std::os::unix::fs::symlink(target, &lock).unwrap();
            let held = prepare(&out, &own, false).unwrap();
            let meta = std::fs::symlink_metadata(&lock).unwrap();
            assert!(meta.is_file(), "the lock is a plain file of its own");
            drop(held);
            assert!(std::fs::symlink_metadata(&lock).is_err());
        }
        assert!(std::fs::symlink_metadata(&absent).is_err());
        assert_eq!(std::fs::read(&precious).unwrap(), b"precious");
    }

    #[test]
    fn placing_does_not_replace_a_file_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let partial = tmp.path().join("x.partial");
        let out = tmp.path().join("x.arrow");
        std::fs::write(&out, "old").unwrap();
        std::fs::write(&partial, "new").unwrap();
        assert!(matches!(
            place(&partial, &out, false),
            Err(PlaceError::Exists(_))
        ));
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
        place(&partial, &out, true).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert!(!partial.exists());
        std::fs::write(&partial, "newer").unwrap();
        let fresh = tmp.path().join("y.arrow");
        place(&partial, &fresh, false).unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"newer");
        assert!(!partial.exists());
    }
}
