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
//!
//! An archive reads the chain once, one entry at a time, checking it as it goes: the entries
//! it moves as it writes them to the file, then the ones it keeps, the anchor and the signed
//! head. A chain that does not verify is not archived (the file is removed). Its memory does
//! not grow with the chain, which may hold gigabytes when big entries came fast.
//!
//! The node archives on its own ([`Store::audit_archive_due`]) when the store holds more than
//! twice `audit_keep_entries` entries, or more than
//! [`mesh_protocol::audit::AUTO_ARCHIVE_MAX_BYTES`] of them.

use std::io::Write;
use std::path::{Path, PathBuf};

use mesh_protocol::Signed;
use mesh_protocol::audit::{AuditBase, AutoArchive, ChainError, ChainVerifier};

use super::{Store, StoreError};

/// Key of the signed [`AuditBase`] in the `audit_head` tree.
pub(super) const BASE_KEY: &[u8] = b"base";
/// Entries removed from the store per batch once archived.
const REMOVE_BATCH: usize = 4096;

/// The bytes of the stored entries `[first, upto)`: what [`Store::audit_held_bytes`] counted,
/// kept up to date by appends (while `upto` is the end of the chain) and archives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HeldBytes {
    /// The first entry the store keeps, when counted.
    first: u64,
    /// The entry after the last one counted.
    upto: u64,
    /// Bytes of the stored entries `[first, upto)`.
    bytes: u64,
}

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

    /// Bytes of the audit entries the store keeps (their stored encoding). Counted once, one
    /// entry at a time, then kept up to date by appends and archives: later calls read only
    /// the entries appended since.
    pub fn audit_held_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        // An archive or another count that moves the count meanwhile makes this one count
        // again (from where the other stopped); a few rounds, then the last count is returned.
        for _ in 0..4 {
            let first = self.audit_first()?;
            let end = self.audit_len()?;
            let known = *self.lock_held_bytes();
            let (from, counted) = match known {
                Some(h) if h.first == first && h.upto <= end => (h.upto, h.bytes),
                _ => (first, 0),
            };
            let mut more = 0u64;
            if from < end {
                for value in self
                    .audit
                    .range(from.to_be_bytes()..end.to_be_bytes())
                    .values()
                {
                    more += value?.len() as u64;
                }
            }
            total = counted + more;
            let mut held = self.lock_held_bytes();
            if *held == known {
                *held = Some(HeldBytes {
                    first,
                    upto: end.max(from),
                    bytes: total,
                });
                return Ok(total);
            }
        }
        Ok(total)
    }

    /// Counts an entry appended at `seq` taking `len` bytes, if the count reaches it. Call
    /// with the append lock held.
    pub(super) fn count_appended(&self, seq: u64, len: usize) {
        if let Some(held) = self.lock_held_bytes().as_mut()
            && held.upto == seq
        {
            held.upto = seq + 1;
            held.bytes += len as u64;
        }
    }

    /// Forgets the count of bytes held: the next [`Store::audit_held_bytes`] counts again.
    #[cfg(any(test, feature = "test-util"))]
    pub(super) fn forget_held_bytes(&self) {
        *self.lock_held_bytes() = None;
    }

    fn lock_held_bytes(&self) -> std::sync::MutexGuard<'_, Option<HeldBytes>> {
        // A count left half-updated by a panic is only a count: at worst counted again.
        self.audit_bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entries to keep if the node's own archive is due (`Ok(None)` when it is not):
    /// when the store holds more entries than `auto` allows, `auto.keep`; when its entries
    /// take more than `max_bytes`, the newest that take no more than half of that (at least
    /// one, at most `auto.keep`). So the store holds at most `max_bytes` of entries, and
    /// twice `auto.keep` of them, plus what is appended between two checks. Reads the
    /// entries' sizes (once, then those appended since) and, when an archive is due by bytes,
    /// the newest half of `max_bytes` of them again.
    pub fn audit_archive_due(
        &self,
        auto: AutoArchive,
        max_bytes: u64,
    ) -> Result<Option<u64>, StoreError> {
        if auto.keep == 0 {
            return Ok(None);
        }
        let by_count = auto.due(self.audit_held()?);
        if !auto.due_by_bytes(self.audit_held_bytes()?, max_bytes) {
            return Ok(by_count);
        }
        let fit = self.audit_newest_within(max_bytes / 2)?;
        Ok(Some(fit.clamp(1, auto.keep)))
    }

    /// How many of the newest entries the store keeps take no more than `budget` bytes.
    fn audit_newest_within(&self, budget: u64) -> Result<u64, StoreError> {
        let (mut n, mut bytes) = (0, 0u64);
        for value in self
            .audit
            .range(self.audit_first()?.to_be_bytes()..)
            .values()
            .rev()
        {
            bytes = bytes.saturating_add(value?.len() as u64);
            if bytes > budget {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Moves the chain's entries but the newest `keep` into a new file under `dir`, then
    /// records the store's new start and removes them from the store. `Ok(None)` when there
    /// are no more than `keep` entries. The whole chain is checked on the way (one entry at a
    /// time): one that does not verify is not archived.
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
        let start = self.audit_start()?.map_err(ArchiveError::Broken)?;
        let count = self.audit_len()?;
        let end = count.saturating_sub(keep);
        if end <= start.first {
            // Nothing to move; a broken chain is still reported as such.
            self.audit_verify_rest(ChainVerifier::new(start))?
                .map_err(ArchiveError::Broken)?;
            return Ok(None);
        }
        let path = dir.join(format!("audit-{:012}-{:012}.jsonl", start.first, end - 1));
        let mut chain = ChainVerifier::new(start);
        let moved = self
            .write_archive(&mut chain, end, &path)
            .map_err(|source| ArchiveError::Write {
                path: path.clone(),
                source,
            })?;
        // The rest of the chain, its anchor and its signed head, before anything is signed:
        // the file is removed if they do not verify.
        let prev = chain.last();
        let checked = match moved {
            Ok(moved) => self
                .audit_verify_rest(chain)
                .map(|rest| rest.map(|_| moved)),
            Err(e) => Ok(Err(e)),
        };
        let moved = match checked {
            Ok(Ok(moved)) => moved,
            Ok(Err(e)) => {
                let _ = std::fs::remove_file(&path);
                return Err(ArchiveError::Broken(e));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e.into());
            }
        };
        // The file is on disk: the store's chain now starts after it.
        let base = Signed::sign(&signer, &AuditBase { first: end, prev });
        self.audit_head
            .insert(BASE_KEY, base.to_bytes())
            .map_err(StoreError::from)?;
        self.flush_blocking()?;
        self.remove_audit_below(end)?;
        self.count_archived(start.first, end, moved);
        Ok(Some(Archived {
            path,
            first: start.first,
            last: end - 1,
            kept: count - end,
        }))
    }

    /// Takes the `moved` bytes of entries `[first, end)` off the count of bytes held.
    fn count_archived(&self, first: u64, end: u64, moved: u64) {
        let mut held = self.lock_held_bytes();
        *held = match *held {
            Some(h) if h.first == first && h.upto >= end => Some(HeldBytes {
                first: end,
                upto: h.upto,
                bytes: h.bytes.saturating_sub(moved),
            }),
            // Counted from another start, or not up to `end`: counted again when needed.
            _ => None,
        };
    }

    /// Writes the entries from `chain`'s position up to `end` to a new file at `path` as JSON
    /// lines, checking each with `chain` as it goes, syncs the file and its directory, and
    /// returns the bytes of the stored entries written. `Ok(Err(_))` (and no file) when an
    /// entry does not verify.
    fn write_archive(
        &self,
        chain: &mut ChainVerifier,
        end: u64,
        path: &Path,
    ) -> std::io::Result<Result<u64, ChainError>> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        let written = (|| {
            let mut out = std::io::BufWriter::new(&file);
            let mut moved = 0u64;
            for item in self
                .audit
                .range(chain.count().to_be_bytes()..end.to_be_bytes())
            {
                let (_, bytes) = item.map_err(std::io::Error::other)?;
                let prev = chain.last();
                let entry = match chain.push(&bytes) {
                    Ok(entry) => entry,
                    Err(e) => return Ok(Err(e)),
                };
                moved += bytes.len() as u64;
                let line = ArchivedLine {
                    seq: entry.seq,
                    at_ms: entry.at_ms,
                    at: crate::views::rfc3339(entry.at_ms),
                    kind: entry.kind.as_str(),
                    detail: serde_json::from_str(&entry.detail)
                        .unwrap_or(serde_json::Value::String(entry.detail.clone())),
                    prev: hex::encode(prev),
                    hash: hex::encode(chain.last()),
                };
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            drop(out);
            file.sync_all()?;
            if let Ok(d) = std::fs::File::open(dir) {
                d.sync_all()?;
            }
            Ok(Ok(moved))
        })();
        if !matches!(written, Ok(Ok(_))) {
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
    use mesh_protocol::audit::{self, AuditEntry, AuditKind};

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

    /// Appends `n` entries of about 60 KiB each (a purpose of 60,000 bytes, as a member's
    /// rejected contract requests make).
    fn append_big(store: &Store, n: u64) {
        let purpose = "x".repeat(60_000);
        let from = store.audit_len().unwrap();
        for i in from..from + n {
            store
                .audit_append(
                    AuditKind::Rejection,
                    &serde_json::json!({ "i": i, "purpose": purpose }),
                    1_000 + i,
                )
                .unwrap();
        }
    }

    /// Bytes of the stored entries the store keeps, counted from scratch.
    fn recount(store: &Store) -> u64 {
        store.forget_held_bytes();
        store.audit_held_bytes().unwrap()
    }

    #[test]
    fn a_chain_of_big_entries_is_verified_and_archived_one_entry_at_a_time() {
        // 3,000 entries of about 60 KiB: 180 MB that the verification and the archive read
        // one entry at a time (`audit_raw`, which collects them all, exists only in tests).
        let (dir, store) = store_with(0);
        append_big(&store, 3_000);
        assert_eq!(store.audit_verify().unwrap(), Ok(3_000));
        let held = store.audit_held_bytes().unwrap();
        assert!(held > 3_000 * 60_000, "{held}");
        // The count follows appends without reading the chain again.
        append_big(&store, 1);
        let one = store.audit_held_bytes().unwrap() - held;
        assert!((60_000..64 * 1024).contains(&one), "{one}");
        assert_eq!(recount(&store), held + one);

        // Under the default bounds (256 MiB, twice 100,000 entries) nothing is due yet; with
        // a bound of 64 MiB, an archive keeps the newest that fit in 32 MiB.
        let auto = AutoArchive { keep: 100_000 };
        assert_eq!(
            store
                .audit_archive_due(auto, audit::AUTO_ARCHIVE_MAX_BYTES)
                .unwrap(),
            None
        );
        let keep = store
            .audit_archive_due(auto, 64 << 20)
            .unwrap()
            .expect("due by bytes");
        assert_eq!(keep, (32 << 20) / one, "entries of {one} bytes in 32 MiB");
        // Never more than `keep` entries, never when off.
        assert_eq!(
            store
                .audit_archive_due(AutoArchive { keep: 10 }, 64 << 20)
                .unwrap(),
            Some(10)
        );
        assert_eq!(
            store.audit_archive_due(AutoArchive { keep: 0 }, 1).unwrap(),
            None
        );

        let archive_dir = dir.path().join("audit-archive");
        let archived = store.audit_archive(keep, &archive_dir).unwrap().unwrap();
        assert_eq!((archived.first, archived.kept), (0, keep));
        assert_eq!(archived.last, 3_000 - keep);
        // The file's lines link up, read one at a time.
        use std::io::BufRead;
        let file = std::io::BufReader::new(std::fs::File::open(&archived.path).unwrap());
        let (mut n, mut prev) = (0, hex::encode(audit::GENESIS));
        for line in file.lines() {
            let line: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            assert_eq!(line["seq"], n);
            assert_eq!(line["prev"], prev.as_str());
            assert_eq!(line["detail"]["i"], n);
            prev = line["hash"].as_str().unwrap().to_owned();
            n += 1;
        }
        assert_eq!(n, 3_001 - keep);
        // The store keeps the newest 32 MiB at most, and its count of bytes followed.
        let after = store.audit_held_bytes().unwrap();
        assert!(after <= 32 << 20, "{after}");
        assert_eq!(after, recount(&store));
        assert_eq!(store.audit_held().unwrap(), keep);
        assert_eq!(store.audit_verify().unwrap(), Ok(3_001));
        assert_eq!(
            store.audit_archive_due(auto, 64 << 20).unwrap(),
            None,
            "nothing due right after"
        );
    }

    #[test]
    fn a_chain_broken_in_the_entries_kept_is_not_archived_and_leaves_no_file() {
        let (dir, store) = store_with(10);
        let mut entry =
            AuditEntry::from_bytes(&store.audit.get(8u64.to_be_bytes()).unwrap().unwrap()).unwrap();
        entry.detail = "{\"i\":80}".into();
        store
            .audit_overwrite_for_tests(8, &entry.to_bytes())
            .unwrap();
        let archive_dir = dir.path().join("audit-archive");
        let err = store.audit_archive(3, &archive_dir).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Broken(ChainError::BrokenLink {
                    seq: 9,
                    prev_seq: 8
                })
            ),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&archive_dir).unwrap().count(), 0);
        assert_eq!(store.audit_first().unwrap(), 0);
        assert_eq!(store.audit.len(), 10);
    }

    #[test]
    fn a_check_while_another_thread_appends_finds_no_break() {
        // The bulk of the chain is read while appends go on; its end and the signed head are
        // read together, so an entry appended between the two is not taken for damage.
        let (_dir, store) = store_with(1);
        let appender = {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 1..1_500u64 {
                    store
                        .audit_append(AuditKind::Publish, &serde_json::json!({ "i": i }), i)
                        .unwrap();
                }
            })
        };
        let mut checks = 0;
        while !appender.is_finished() {
            let verdict = store.audit_verify().unwrap();
            assert!(verdict.is_ok(), "{verdict:?} after {checks} checks");
            checks += 1;
        }
        appender.join().unwrap();
        assert_eq!(store.audit_verify().unwrap(), Ok(1_500));
        println!("{checks} checks while appending");
    }
}
