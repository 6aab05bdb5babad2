//! Archiving the start of the audit chain (`meshnode audit --archive`).
//!
//! Every contract decision and every transfer served is an audit entry, so the chain grows
//! with what peers do for as long as the node runs. Archiving moves the oldest entries into a
//! file of JSON lines under `<data-dir>/audit-archive/`, keeping the newest ones in the
//! store, and records where the store's chain now starts as a signed [`AuditBase`]: the
//! first entry kept and the hash of the last one archived, which is also the archive file's
//! last line's `hash`. So the file and the store's chain link up, and an entry removed from
//! the start of the store otherwise is still found.
//!
//! The order makes every crash safe: the file is written and synced first, then the base,
//! then the archived entries are removed. A crash before the base leaves the store as it
//! was (and a file whose entries are still in the store); one after it leaves entries below
//! the base, which nothing reads and the next archive removes.

use std::io::Write;
use std::path::{Path, PathBuf};

use mesh_protocol::Signed;
use mesh_protocol::audit::{self, AuditBase, AuditEntry, ChainError};

use super::{Store, StoreError};

/// Key of the signed [`AuditBase`] in the `audit_head` tree.
pub(super) const BASE_KEY: &[u8] = b"base";
/// Entries removed from the store per batch once archived.
const REMOVE_BATCH: usize = 4096;

/// What an archive did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Archived {
    /// The file written.
    pub path: PathBuf,
    /// Sequence number of its first entry.
    pub first: u64,
    /// Sequence number of its last entry.
    pub last: u64,
    /// Entries the store keeps, the newest.
    pub kept: u64,
}

/// Why the audit chain could not be archived.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The chain does not verify: archiving would carry the damage into the file and sign a
    /// base over it.
    #[error(
        "the audit log does not verify, so it is not archived: {0} (see `meshnode audit --verify`)"
    )]
    Broken(#[source] ChainError),
    /// Keeping no entry would leave nothing for the signed head and the anchor to name.
    #[error("at least one audit entry must be kept (--keep 1 or more)")]
    KeepNothing,
    /// Only a node that signs its chain can sign where it now starts.
    #[error("this store has no key to sign the audit chain's new start with")]
    NoSigner,
    /// The archive file could not be written.
    #[error("cannot write the audit archive `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One archived entry: what `meshnode audit --json` shows of it, with the links that let
/// the file be checked on its own.
#[derive(serde::Serialize)]
struct ArchivedLine<'a> {
    seq: u64,
    at_ms: u64,
    at: String,
    kind: &'a str,
    detail: serde_json::Value,
    /// Hash of the entry before (hex).
    prev: String,
    /// Hash of this entry's stored bytes (hex): the next line's `prev`.
    hash: String,
}

impl Store {
    /// Where the chain kept in the store starts, as its signed base says. `Ok(Err(_))` when the
    /// base is unreadable or not signed by this node's key.
    pub(super) fn audit_start(&self) -> Result<Result<AuditBase, ChainError>, StoreError> {
        let Some(bytes) = self.audit_head.get(BASE_KEY)? else {
            return Ok(Ok(AuditBase::GENESIS));
        };
        let signed = match Signed::<AuditBase>::from_bytes(&bytes) {
            Ok(signed) => signed,
            Err(e) => {
                return Ok(Err(ChainError::Head(format!(
                    "the archive base is unreadable ({e})"
                ))));
            }
        };
        Ok(match &self.signer {
            Some(signer) => AuditBase::verified(&signed, &signer.public_key()),
            None => signed
                .decode_trusted()
                .map_err(|e| ChainError::Head(format!("the archive base is unreadable ({e})"))),
        })
    }

    /// Sequence number of the first entry the store keeps (0 when nothing was archived, or
    /// when the base is unreadable: then the whole tree is read, and the check says why).
    pub fn audit_first(&self) -> Result<u64, StoreError> {
        Ok(self.audit_start()?.map_or(0, |base| base.first))
    }

    /// Audit entries the store holds: those appended, less those archived to files.
    pub fn audit_held(&self) -> Result<u64, StoreError> {
        Ok(self.audit_len()?.saturating_sub(self.audit_first()?))
    }

    /// Moves the chain's entries but the newest `keep` into a new file under `dir`, then
    /// records the store's new start and removes them from the store. `Ok(None)` when there
    /// are no more than `keep` entries.
    pub fn audit_archive(&self, keep: u64, dir: &Path) -> Result<Option<Archived>, ArchiveError> {
        if keep == 0 {
            return Err(ArchiveError::KeepNothing);
        }
        let Some(signer) = self.signer.clone() else {
            return Err(ArchiveError::NoSigner);
        };
        // The lock guards no data a panic could leave half-written: the steps below are
        // each safe to stop after.
        let _one_at_a_time = self.archive_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.audit_verify()?.map_err(ArchiveError::Broken)?;
        let start = self.audit_start()?.map_err(ArchiveError::Broken)?;
        let count = self.audit_len()?;
        let end = count.saturating_sub(keep);
        if end <= start.first {
            return Ok(None);
        }
        let path = dir.join(format!("audit-{:012}-{:012}.jsonl", start.first, end - 1));
        let prev = self
            .write_archive(start, end, &path)
            .map_err(|source| ArchiveError::Write {
                path: path.clone(),
                source,
            })?;
        // The file is on disk: the store's chain now starts after it.
        let base = Signed::sign(&signer, &AuditBase { first: end, prev });
        self.audit_head
            .insert(BASE_KEY, base.to_bytes())
            .map_err(StoreError::from)?;
        self.flush_blocking()?;
        self.remove_audit_below(end)?;
        Ok(Some(Archived {
            path,
            first: start.first,
            last: end - 1,
            kept: count - end,
        }))
    }

    /// Writes entries `[start.first, end)` to a new file at `path` as JSON lines, syncs it
    /// and its directory, and returns the hash of the last one. The entries are checked to
    /// link up as they are written (they were verified just before, but the file is what
    /// outlives them).
    fn write_archive(&self, start: AuditBase, end: u64, path: &Path) -> std::io::Result<[u8; 32]> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        let written = (|| {
            let mut out = std::io::BufWriter::new(&file);
            let mut prev = start.prev;
            for item in self
                .audit
                .range(start.first.to_be_bytes()..end.to_be_bytes())
            {
                let (_, bytes) = item.map_err(std::io::Error::other)?;
                let entry = AuditEntry::from_bytes(&bytes).map_err(std::io::Error::other)?;
                if entry.prev != prev {
                    return Err(std::io::Error::other(format!(
                        "audit entry {} does not link to its predecessor",
                        entry.seq
                    )));
                }
                let hash = audit::entry_hash(&bytes);
                let line = ArchivedLine {
                    seq: entry.seq,
                    at_ms: entry.at_ms,
                    at: crate::views::rfc3339(entry.at_ms),
                    kind: entry.kind.as_str(),
                    detail: serde_json::from_str(&entry.detail)
                        .unwrap_or(serde_json::Value::String(entry.detail.clone())),
                    prev: hex::encode(entry.prev),
                    hash: hex::encode(hash),
                };
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
                prev = hash;
            }
            out.flush()?;
            drop(out);
            file.sync_all()?;
            if let Ok(d) = std::fs::File::open(dir) {
                d.sync_all()?;
            }
            Ok(prev)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(path);
        }
        written
    }

    /// Removes every stored entry before `first`, in batches.
    fn remove_audit_below(&self, first: u64) -> Result<(), StoreError> {
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for key in self
                .audit
                .range(..first.to_be_bytes())
                .keys()
                .take(REMOVE_BATCH)
            {
                batch.remove(key?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.audit.apply_batch(batch)?;
        }
        self.flush_blocking()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mesh_protocol::Identity;
    use mesh_protocol::audit::AuditKind;

    use super::*;

    fn store_with(entries: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"))
            .unwrap()
            .with_audit_signer(Identity::from_secret_bytes([3; 32]));
        for i in 0..entries {
            store
                .audit_append(
                    AuditKind::Publish,
                    &serde_json::json!({ "i": i }),
                    1_000 + i,
                )
                .unwrap();
        }
        (dir, store)
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn the_oldest_entries_move_to_a_file_that_links_to_what_the_store_keeps() {
        let (dir, store) = store_with(10);
        let archive_dir = dir.path().join("audit-archive");
        let archived = store.audit_archive(4, &archive_dir).unwrap().unwrap();
        assert_eq!((archived.first, archived.last, archived.kept), (0, 5, 4));
        let file = lines(&archived.path);
        assert_eq!(file.len(), 6);
        assert_eq!(file[0]["seq"], 0);
        assert_eq!(file[0]["prev"], hex::encode(audit::GENESIS));
        assert_eq!(file[5]["detail"]["i"], 5);
        // Each line links to the one before, and the last to the store's first entry.
        for pair in file.windows(2) {
            assert_eq!(pair[1]["prev"], pair[0]["hash"]);
        }
        let kept = store.audit_raw().unwrap();
        assert_eq!(kept.len(), 4);
        let first_kept = AuditEntry::from_bytes(&kept[0]).unwrap();
        assert_eq!(first_kept.seq, 6);
        assert_eq!(file[5]["hash"], hex::encode(first_kept.prev));
        // The store's chain verifies from its base, and appends go on from the same count.
        assert_eq!(store.audit_verify().unwrap(), Ok(10));
        assert_eq!(store.audit_head_check().unwrap(), Ok(()));
        store
            .audit_append(AuditKind::Publish, &serde_json::json!({ "i": 10 }), 2_000)
            .unwrap();
        assert_eq!(store.audit_verify().unwrap(), Ok(11));
        // A second archive starts where the first stopped.
        let again = store.audit_archive(2, &archive_dir).unwrap().unwrap();
        assert_eq!((again.first, again.last, again.kept), (6, 8, 2));
        assert_eq!(lines(&again.path)[0]["prev"], file[5]["hash"]);
        assert_eq!(store.audit_verify().unwrap(), Ok(11));
        // Nothing more to move.
        assert_eq!(store.audit_archive(2, &archive_dir).unwrap(), None);
        assert!(matches!(
            store.audit_archive(0, &archive_dir),
            Err(ArchiveError::KeepNothing)
        ));
    }

    #[test]
    fn entries_removed_below_the_base_or_a_forged_base_are_found() {
        let (dir, store) = store_with(8);
        let archive_dir = dir.path().join("audit-archive");
        store.audit_archive(5, &archive_dir).unwrap().unwrap();
        // One more entry gone from the start of what the store keeps.
        store.audit.remove(3u64.to_be_bytes()).unwrap();
        assert!(matches!(
            store.audit_verify().unwrap(),
            Err(ChainError::Sequence {
                position: 3,
                claimed: 4
            })
        ));
        // A base that moves the start on, signed by another key.
        let (dir, store) = store_with(8);
        store
            .audit_archive(5, &dir.path().join("audit-archive"))
            .unwrap()
            .unwrap();
        let forged = Signed::sign(
            &Identity::from_secret_bytes([9; 32]),
            &AuditBase {
                first: 4,
                prev: store.audit_hash_at(3).unwrap().unwrap_or_default(),
            },
        );
        store
            .audit_head
            .insert(BASE_KEY, forged.to_bytes())
            .unwrap();
        let err = store.audit_verify().unwrap().unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
        // A broken chain is not archived.
        assert!(matches!(
            store.audit_archive(1, &dir.path().join("audit-archive")),
            Err(ArchiveError::Broken(_))
        ));
    }

    #[test]
    fn entries_left_below_the_base_by_a_crash_are_ignored_then_removed() {
        let (dir, store) = store_with(6);
        let archive_dir = dir.path().join("audit-archive");
        // As if the node stopped after writing the base, before removing anything.
        let prev = store.audit_hash_at(2).unwrap().unwrap();
        let base = Signed::sign(
            &Identity::from_secret_bytes([3; 32]),
            &AuditBase { first: 3, prev },
        );
        store.audit_head.insert(BASE_KEY, base.to_bytes()).unwrap();
        assert_eq!(store.audit_raw().unwrap().len(), 3);
        assert_eq!(store.audit_verify().unwrap(), Ok(6));
        let archived = store.audit_archive(1, &archive_dir).unwrap().unwrap();
        assert_eq!((archived.first, archived.last), (3, 4));
        assert_eq!(store.audit.len(), 1);
        assert_eq!(store.audit_verify().unwrap(), Ok(6));
    }
}
