//! Received files kept for later queries.
//!
//! A file is named by the BLAKE3 of what decides its content: agreement, version, columns
//! and filter. It is fetched under a temporary name (the data plane writes it atomically:
//! `*.partial`, verified, renamed) and renamed to its key only when complete, so a reader
//! never sees a partial file. A key is looked up only for the version that is currently
//! the latest the agreement covers, so a newer version is fetched anew and the old files
//! age out. Above the size cap the least recently used files are removed (an open file
//! stays readable on Unix until its reader closes it).

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
                if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
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
