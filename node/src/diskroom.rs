//! The disk space the node keeps free (`disk_reserve_mib`).
//!
//! A file that expands far beyond its size (a Parquet file of a few hundred bytes can declare
//! millions of rows of nulls), a product larger than the disk, or an operator who forgot what
//! else lives on that disk would otherwise fill it: the node's own state (the store, the
//! audit chain and its anchor) then fails to write, and so does every other program there.
//! So every write of product data — `publish` ingesting its input, a fetch receiving a
//! product — checks the file system it writes to before each piece and stops while the
//! reserve is still free, with an error that says where, how much is free and what to do.
//!
//! [`Reserve::admits`] is the rule (pure); [`Room::check`] applies it to a path through a
//! [`Probe`], which is the file system's own figure unless a test gives another.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Default of `disk_reserve_mib`: room for the store and the audit chain to go on working.
pub const DEFAULT_RESERVE_MIB: u64 = 256;

/// Bytes that must stay free on a disk a product is written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserve {
    bytes: u64,
}

impl Default for Reserve {
    fn default() -> Self {
        Self::mib(DEFAULT_RESERVE_MIB)
    }
}

impl Reserve {
    /// A reserve of `mib` MiB; 0 turns the check off.
    pub fn mib(mib: u64) -> Self {
        Self {
            bytes: mib.saturating_mul(1024 * 1024),
        }
    }

    /// The reserve in bytes.
    pub fn bytes(self) -> u64 {
        self.bytes
    }

    /// Whether writing `more` bytes where `available` bytes are free leaves the reserve free.
    /// `dir` names the place in the refusal.
    pub fn admits(self, dir: &Path, available: u64, more: u64) -> Result<(), NoRoom> {
        if self.bytes == 0 || available.saturating_sub(more) >= self.bytes {
            return Ok(());
        }
        Err(NoRoom {
            dir: dir.to_owned(),
            available,
            more,
            reserve: self.bytes,
        })
    }
}

/// A reserve and where the free space comes from: what a writer of product data checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Room {
    /// The space to leave free.
    pub reserve: Reserve,
    /// Where to learn what is free.
    pub probe: Probe,
}

impl Room {
    /// The file system's own figures against `reserve`.
    pub fn keeping(reserve: Reserve) -> Self {
        Self {
            reserve,
            probe: Probe::FileSystem,
        }
    }

    /// [`Reserve::admits`] for the file system holding `path` (a file or a directory; a file
    /// not yet created is looked up by its directory). A file system that cannot say how
    /// much is free is not refused: the write itself then reports a full disk.
    pub fn check(self, path: &Path, more: u64) -> Result<(), NoRoom> {
        if self.reserve.bytes == 0 {
            return Ok(());
        }
        let dir = place(path);
        match self.probe.available(dir) {
            Ok(Some(available)) => self.reserve.admits(dir, available, more),
            Ok(None) | Err(_) => Ok(()),
        }
    }
}

/// The directory whose file system holds `path`.
fn place(path: &Path) -> &Path {
    if path.is_dir() {
        return path;
    }
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Where the free space of a file system comes from.
#[derive(Clone, Copy, Default)]
pub enum Probe {
    /// The file system's own figure (`statvfs`: blocks available to unprivileged users).
    #[default]
    FileSystem,
    /// A figure from elsewhere (tests: a disk that fills up at a chosen point).
    With(fn(&Path) -> u64),
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::FileSystem => f.write_str("FileSystem"),
            Probe::With(_) => f.write_str("With(..)"),
        }
    }
}

impl Probe {
    /// Bytes free for the node in the file system holding `dir`; `None` where the platform
    /// does not say.
    pub fn available(self, dir: &Path) -> io::Result<Option<u64>> {
        match self {
            Probe::With(f) => Ok(Some(f(dir))),
            Probe::FileSystem => statvfs_available(dir),
        }
    }
}

#[cfg(target_os = "linux")]
fn statvfs_available(dir: &Path) -> io::Result<Option<u64>> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(Some(s.f_bavail.saturating_mul(s.f_frsize)))
}

#[cfg(not(target_os = "linux"))]
fn statvfs_available(_dir: &Path) -> io::Result<Option<u64>> {
    Ok(None)
}

/// A write refused because it would leave less than the reserve free.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the disk holding `{}` has {} free, and writing {} more would leave less than the {} \
     the node keeps free for its own state (`disk_reserve_mib` in meshnode.toml): free some \
     space there, or write elsewhere",
    dir.display(),
    human(*available),
    human(*more),
    human(*reserve)
)]
pub struct NoRoom {
    /// The directory written to.
    pub dir: PathBuf,
    /// Bytes free there.
    pub available: u64,
    /// Bytes about to be written.
    pub more: u64,
    /// The reserve, bytes.
    pub reserve: u64,
}

/// `bytes` for people: `512 B`, `3.2 MiB`, `1.5 GiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_write_is_admitted_only_while_the_reserve_stays_free() {
        let reserve = Reserve::mib(256);
        let dir = Path::new("/data");
        assert_eq!(reserve.admits(dir, 1024 * MIB, 768 * MIB), Ok(()));
        let refused = reserve.admits(dir, 1024 * MIB, 768 * MIB + 1).unwrap_err();
        assert_eq!(
            (refused.available, refused.more, refused.reserve),
            (1024 * MIB, 768 * MIB + 1, 256 * MIB)
        );
        // Already below the reserve: even an empty write is refused.
        assert!(reserve.admits(dir, 100 * MIB, 0).is_err());
        // More than is free at all.
        assert!(reserve.admits(dir, MIB, u64::MAX).is_err());
    }

    #[test]
    fn a_reserve_of_zero_admits_everything() {
        let off = Reserve::mib(0);
        assert_eq!(off.admits(Path::new("/"), 0, u64::MAX), Ok(()));
        let room = Room {
            reserve: off,
            probe: Probe::With(|_| 0),
        };
        assert_eq!(room.check(Path::new("/"), u64::MAX), Ok(()));
    }

    #[test]
    fn the_refusal_says_where_how_much_and_what_to_do() {
        let refused = Reserve::mib(256)
            .admits(Path::new("/srv/mesh/staging"), 100 * MIB, 3 * MIB / 2)
            .unwrap_err();
        let message = refused.to_string();
        for part in [
            "`/srv/mesh/staging`",
            "100.0 MiB free",
            "1.5 MiB more",
            "256.0 MiB",
            "disk_reserve_mib",
            "free some space",
        ] {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_file_system_is_asked_for_the_directory_of_a_file_not_yet_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("product.arrow.partial");
        // Whatever is free there, a reserve larger than any disk is refused, naming the
        // directory.
        let refused = Room::keeping(Reserve::mib(u64::MAX))
            .check(&file, 0)
            .unwrap_err();
        assert_eq!(refused.dir, dir.path());
        assert!(refused.available > 0);
        // And the figure is the file system's: a small reserve passes on this disk.
        assert_eq!(Room::keeping(Reserve::mib(1)).check(&file, 0), Ok(()));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(256 * MIB), "256.0 MiB");
        assert_eq!(human(3 * 1024 * MIB / 2), "1.5 GiB");
    }
}
