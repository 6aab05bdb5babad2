//! Received files kept for later queries.
//!
//! A file is named by the BLAKE3 of what decides its content: agreement, version, columns
//! and filter. It is fetched under a temporary name (the data plane writes it atomically:
//! `*.partial`, verified, renamed) and renamed to its key only when complete, so a reader
//! never sees a partial file. A key is looked up only for the version that is currently
//! the latest the agreement covers, so a newer version is fetched anew and the old files
//! age out. Above the size cap the least recently used files are removed (an open file
//! stays readable on Unix until its reader closes it).
//!
//! Each complete file has a seal beside it, `<key>.seal`: the BLAKE3 and length of the
//! file as it was written right after its content was verified against the provider's
//! signed digest. A lookup reads the file through once against its seal: a file truncated,
//! edited or damaged on disk (or one without its seal) is removed and fetched again,
//! instead of failing every query or answering with altered values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use mesh_protocol::Narrowing;
use mesh_protocol::contract::AgreementId;

/// Directory of `received/` that holds the cache.
pub(super) const CACHE_DIR: &str = ".sql-cache";
/// Bytes the cache may hold before the least recently used files go.
pub(super) const CACHE_CAP_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Prefix of files being fetched.
const TEMP_PREFIX: &str = "fetching-";
/// Extension of a complete file's seal.
const SEAL_EXTENSION: &str = "seal";
/// Bytes of a seal: the BLAKE3 of the file, then its length (u64 little-endian).
const SEAL_LEN: usize = 40;

/// The cache directory and the fills in progress.
#[derive(Debug)]
pub(crate) struct Cache {
    /// `<data-dir>/received/.sql-cache`.
    dir: PathBuf,
    /// Size cap in bytes.
    cap: u64,
    /// One lock per key being filled, so that two scans of the same data fetch it once.
    /// Entries die with their last holder and are pruned on the next lookup.
    filling: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Cache {
    /// The cache in `dir`; temporary files a stopped daemon left are removed.
    pub(super) fn new(dir: PathBuf, cap: u64) -> Self {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TEMP_PREFIX) || name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Self {
            dir,
            cap,
            filling: Mutex::new(HashMap::new()),
        }
    }

    /// The key of the data fetched under `agreement` at `version` with `narrowing`.
    pub(super) fn key(
        agreement: &AgreementId,
        version: u64,
        narrowing: Option<&Narrowing>,
    ) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"meshnode/sql-cache/v1\0");
        hasher.update(agreement.to_hex().as_bytes());
        hasher.update(&version.to_le_bytes());
        let encoded = serde_json::to_vec(&narrowing).unwrap_or_default();
        hasher.update(&encoded);
        hasher.finalize().to_hex().to_string()
    }

    /// Where the complete file of `key` lives.
    pub(super) fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.arrow"))
    }

    /// A fresh temporary path to fetch into.
    pub(super) fn temp_path(&self) -> PathBuf {
        self.dir.join(format!(
            "{TEMP_PREFIX}{}.arrow",
            hex::encode(rand::random::<[u8; 16]>())
        ))
    }

    /// Creates the directory (mode 0700).
    pub(super) fn ensure_dir(&self) -> std::io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&self.dir)
    }

    /// Waits until no other scan fills `key`; hold the guard while checking and filling.
    pub(super) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut filling = self
                .filling
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            filling.retain(|_, w| w.strong_count() > 0);
            match filling.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    filling.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    /// The seal of `data`: its BLAKE3 and length.
    fn seal_of(data: &Path) -> std::io::Result<[u8; SEAL_LEN]> {
        let mut hasher = blake3::Hasher::new();
        let file = std::fs::File::open(data)?;
        let len = file.metadata()?.len();
        hasher.update_reader(file)?;
        let mut seal = [0; SEAL_LEN];
        seal[..32].copy_from_slice(hasher.finalize().as_bytes());
        seal[32..].copy_from_slice(&len.to_le_bytes());
        Ok(seal)
    }

    /// Writes the seal of the verified file `data` for the complete file `path` it is about
    /// to become (before it is renamed there: a file never stands in the cache without it).
    pub(super) fn seal(data: &Path, path: &Path) -> std::io::Result<()> {
        let seal = Self::seal_of(data)?;
        let seal_path = path.with_extension(SEAL_EXTENSION);
        let mut temp = seal_path.clone().into_os_string();
        temp.push(".tmp");
        std::fs::write(&temp, seal)?;
        std::fs::rename(&temp, &seal_path)
    }

    /// Whether the complete file `path` is still what its seal says was verified.
    pub(super) fn intact(path: &Path) -> bool {
        let Ok(expected) = std::fs::read(path.with_extension(SEAL_EXTENSION)) else {
            return false;
        };
        let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
            return false;
        };
        // The length first: a truncated file costs no read.
        if expected.len() != SEAL_LEN || expected[32..] != len.to_le_bytes() {
            return false;
        }
        Self::seal_of(path).is_ok_and(|seal| seal[..] == expected[..])
    }

    /// Removes the complete file `path` and its seal.
    pub(super) fn discard(path: &Path) {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(path.with_extension(SEAL_EXTENSION));
    }

    /// Marks `path` as just used (least recently used files go first).
    pub(super) fn touch(path: &Path) {
        if let Ok(file) = std::fs::File::options().append(true).open(path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Removes the least recently used complete files until the cache is within its cap,
    /// never `keep` (the file a query is about to read).
    pub(super) fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".arrow") && !name.starts_with(TEMP_PREFIX)
            })
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.cap {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                let _ = std::fs::remove_file(path.with_extension(SEAL_EXTENSION));
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_what_decides_the_content() {
        let a = AgreementId([1; 32]);
        let b = AgreementId([2; 32]);
        let narrow = Narrowing {
            columns: Some(vec!["x".into()]),
            filter: None,
        };
        let keys = [
            Cache::key(&a, 1, None),
            Cache::key(&a, 2, None),
            Cache::key(&b, 1, None),
            Cache::key(&a, 1, Some(&narrow)),
        ];
        for (i, k) in keys.iter().enumerate() {
            for other in &keys[i + 1..] {
                assert_ne!(k, other);
            }
        }
        assert_eq!(keys[0], Cache::key(&a, 1, None));
    }

    #[test]
    fn eviction_keeps_the_cap_and_the_file_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_owned(), 250);
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let mut paths = Vec::new();
        for i in 0..4u64 {
            let path = cache.path(&format!("k{i}"));
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(old + std::time::Duration::from_secs(i))
                .unwrap();
            paths.push(path);
        }
        // The oldest is in use: the next oldest go instead.
        cache.evict(&paths[0]);
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(left, [true, false, false, true]);
    }

    #[test]
    fn a_file_altered_on_disk_or_without_its_seal_is_not_intact() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_owned(), 1 << 20);
        let path = cache.path("k");
        let fill = |bytes: &[u8]| {
            let temp = cache.temp_path();
            std::fs::write(&temp, bytes).unwrap();
            Cache::seal(&temp, &path).unwrap();
            std::fs::rename(&temp, &path).unwrap();
        };
        fill(b"verified content");
        assert!(Cache::intact(&path));
        // One byte changed, the length the same.
        std::fs::write(&path, b"verified cONtent").unwrap();
        assert!(!Cache::intact(&path));
        // Truncated.
        fill(b"verified content");
        std::fs::write(&path, b"verified").unwrap();
        assert!(!Cache::intact(&path));
        // Its seal lost or damaged.
        fill(b"verified content");
        let seal = path.with_extension(SEAL_EXTENSION);
        std::fs::write(&seal, b"short").unwrap();
        assert!(!Cache::intact(&path));
        std::fs::remove_file(&seal).unwrap();
        assert!(!Cache::intact(&path));
        // Discarding removes both; eviction removes the seal with its file.
        fill(b"verified content");
        Cache::discard(&path);
        assert!(!path.exists() && !seal.exists());
        fill(&[7; 4096]);
        Cache::new(dir.path().to_owned(), 0).evict(Path::new("/nothing"));
        assert!(!path.exists() && !seal.exists());
    }

    #[test]
    fn temporary_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{TEMP_PREFIX}abc.arrow.partial"));
        let kept = dir.path().join("k.arrow");
        std::fs::write(&stale, b"x").unwrap();
        std::fs::write(&kept, b"x").unwrap();
        let _ = Cache::new(dir.path().to_owned(), 1 << 20);
        assert!(!stale.exists());
        assert!(kept.exists());
    }
}
