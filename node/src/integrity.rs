//! Checks that the node's state on disk is the state it left: run at start, before the node
//! serves anything, and by `meshnode audit --verify`.
//!
//! - The audit chain is compared with its head anchored outside the database
//!   (`audit.anchor`, rewritten after each flush, see [`Store::with_audit_anchor`]): a store
//!   behind the anchor (rolled back), off it (replaced) or empty while the anchor says it
//!   held entries refuses to start. So does an empty store beside published product files.
//!   `meshnode run --accept-rollback` is the operator's way past it: the loss is recorded in
//!   the audit log and the store is anchored as it is.
//! - Staging files a crash left behind (an ingest killed half-way) are removed.
//! - Version numbers of new publishes never reuse one on disk ([`next_version`]), so a
//!   rolled-back store cannot issue a second, different `product@3`.

use std::path::{Path, PathBuf};

use mesh_protocol::audit::{AnchorCheck, AuditKind, ChainError};

use crate::config::DataDir;
use crate::store::{AnchorStatus, Store, StoreError};
use crate::views::{AuditEntryView, AuditView};

/// Why the node must not start on its data directory as it is.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// The store holds fewer audit entries than the anchor recorded.
    #[error(
        "the database `{db}` was rolled back: it holds {store} audit entries, but the anchor `{anchor_path}` written after each flush says {anchor}; what was recorded since (publishes, agreements, revocations) is missing. Restore `{db}` from a backup taken after that point, or start once with `meshnode run --accept-rollback` to continue with the store as it is (the loss is recorded in the audit log; version numbers are never reused)"
    )]
    RolledBack {
        /// Database path.
        db: PathBuf,
        /// Anchor path.
        anchor_path: PathBuf,
        /// Entries in the store.
        store: u64,
        /// Entries the anchor recorded.
        anchor: u64,
    },
    /// The store's chain is not the anchored one.
    #[error(
        "the database `{db}` is not the one this node anchored: its audit entry {} differs from the anchor `{anchor_path}`; the database was replaced. Restore the right database, or start once with `meshnode run --accept-rollback` to continue with this one",
        anchor.saturating_sub(1)
    )]
    Diverged {
        /// Database path.
        db: PathBuf,
        /// Anchor path.
        anchor_path: PathBuf,
        /// Entries the anchor recorded.
        anchor: u64,
    },
    /// The anchor cannot be used (damaged, or signed by another key).
    #[error(
        "{reason}: if `identity.key` was replaced, restore it from a backup; if only the anchor is damaged, start once with `meshnode run --accept-rollback` to anchor the store as it is"
    )]
    AnchorUnusable {
        /// What is wrong with it.
        reason: String,
    },
    /// The database's own signed head disagrees with its audit log: part of it was rolled
    /// back, or the head was signed by another key.
    #[error(
        "the database `{db}` is damaged: {reason}. Part of it was rolled back or altered; restore it from a backup, or start once with `meshnode run --accept-rollback` to continue with it as it is"
    )]
    Damaged {
        /// Database path.
        db: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The store is empty but product files are on disk.
    #[error(
        "the database `{db}` is empty, but `{products}` holds {files} published product file(s): the database was lost or emptied. Restore it from a backup, or start once with `meshnode run --accept-rollback` to continue with an empty store (version numbers are never reused)"
    )]
    EmptiedStore {
        /// Database path.
        db: PathBuf,
        /// Products directory.
        products: PathBuf,
        /// Product files found.
        files: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data directory could not be read or cleaned.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Path at fault.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// What the start-up check found and did, for the log and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StartReport {
    /// Staging files removed.
    pub swept: usize,
    /// The operator's `--accept-rollback` was applied to this problem.
    pub accepted: Option<String>,
}

/// Runs the start-up checks on an opened store (signer and anchor set). Call it after the
/// store is open, which locks the database, so no other daemon is using the staging area.
pub fn check_at_start(
    data_dir: &DataDir,
    store: &Store,
    accept_rollback: bool,
) -> Result<StartReport, IntegrityError> {
    let swept = sweep_staging(data_dir)?;
    let count = store.audit_len()?;
    let anchor = store.audit_anchor_check()?;
    let problem = match &anchor {
        Some(AnchorStatus::Checked { check, .. }) => match *check {
            AnchorCheck::Match | AnchorCheck::Ahead { .. } => None,
            AnchorCheck::RolledBack { store, anchor } => Some(IntegrityError::RolledBack {
                db: data_dir.db(),
                anchor_path: data_dir.audit_anchor(),
                store,
                anchor,
            }),
            AnchorCheck::Diverged { anchor } => Some(IntegrityError::Diverged {
                db: data_dir.db(),
                anchor_path: data_dir.audit_anchor(),
                anchor,
            }),
        },
        Some(AnchorStatus::Unusable(reason)) => Some(IntegrityError::AnchorUnusable {
            reason: reason.clone(),
        }),
        None => None,
    };
    // The database against itself: its signed head is written with each entry in one
    // transaction, so a head that is not the chain's end means a tree was rolled back.
    let problem = match problem {
        None => store
            .audit_head_check()?
            .err()
            .map(|e| IntegrityError::Damaged {
                db: data_dir.db(),
                reason: e.to_string(),
            }),
        other => other,
    };
    // Without an anchor (a data directory from an earlier release, or one deleted with the
    // database), published files beside an empty store still tell.
    let problem = match problem {
        None if count == 0 => match count_product_files(data_dir)? {
            0 => None,
            files => Some(IntegrityError::EmptiedStore {
                db: data_dir.db(),
                products: data_dir.products(),
                files,
            }),
        },
        other => other,
    };
    let accepted = match problem {
        None => {
            if accept_rollback {
                tracing::info!("--accept-rollback given, but the store matches its anchor");
            }
            if anchor.is_none() && count > 0 {
                tracing::info!(
                    entries = count,
                    path = %data_dir.audit_anchor().display(),
                    "anchoring the audit log outside the database for the first time"
                );
            }
            None
        }
        Some(problem) if accept_rollback => {
            let reason = problem.to_string();
            tracing::warn!(
                "starting on a rolled-back or replaced store as asked (--accept-rollback): {reason}"
            );
            let anchored = match &anchor {
                Some(AnchorStatus::Checked { head, .. }) => Some(head.count),
                _ => None,
            };
            store.audit_append(
                AuditKind::RollbackAccepted,
                &serde_json::json!({
                    "store_entries": count,
                    "anchor_entries": anchored,
                    "reason": reason,
                }),
                crate::node::now_ms(),
            )?;
            Some(reason)
        }
        Some(problem) => return Err(problem),
    };
    // Anchor the store as it now is: creates the anchor of an older data directory, moves
    // it forward over entries a crash left unanchored, or past an accepted rollback.
    store.reanchor()?;
    Ok(StartReport { swept, accepted })
}

/// Removes every file in the staging area (ingests a crash interrupted). Returns how many.
pub fn sweep_staging(data_dir: &DataDir) -> Result<usize, IntegrityError> {
    let staging = data_dir.staging();
    let entries = match std::fs::read_dir(&staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(IntegrityError::Io {
                action: "read the staging directory",
                path: staging,
                source,
            });
        }
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|source| IntegrityError::Io {
            action: "read the staging directory",
            path: staging.clone(),
            source,
        })?;
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        std::fs::remove_file(&path).map_err(|source| IntegrityError::Io {
            action: "remove the staging file",
            path: path.clone(),
            source,
        })?;
        tracing::info!(
            path = %path.display(),
            "removed a staging file left by an interrupted publish"
        );
        removed += 1;
    }
    Ok(removed)
}

/// Versions of `name` with a file under `products/<name>/` (`<version>.arrow`).
fn versions_on_disk(dir: &Path) -> std::io::Result<Vec<u64>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut versions = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(version) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".arrow"))
            .and_then(|v| v.parse::<u64>().ok())
        {
            versions.push(version);
        }
    }
    Ok(versions)
}

/// Highest version of product `name` with a file on disk.
pub fn highest_version_on_disk(
    data_dir: &DataDir,
    name: &str,
) -> Result<Option<u64>, IntegrityError> {
    let dir = data_dir.products().join(name);
    versions_on_disk(&dir)
        .map(|v| v.into_iter().max())
        .map_err(|source| IntegrityError::Io {
            action: "list the versions in",
            path: dir,
            source,
        })
}

/// Product files (`products/<name>/<version>.arrow`) on disk.
fn count_product_files(data_dir: &DataDir) -> Result<usize, IntegrityError> {
    let products = data_dir.products();
    let io = |source| IntegrityError::Io {
        action: "list",
        path: products.clone(),
        source,
    };
    let entries = match std::fs::read_dir(&products) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let mut files = 0;
    for entry in entries {
        let entry = entry.map_err(io)?;
        if entry.path() == data_dir.staging() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        files += versions_on_disk(&entry.path()).map_err(io)?.len();
    }
    Ok(files)
}

/// The version a new publish gets: one more than the highest any source knows of (the
/// store's record of local publishes, the catalog copy, which peers may have handed back
/// newer than a rolled-back store, and the files on disk). `None` if that overflows.
pub fn next_version(known: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    known
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
        .checked_add(1)
}

/// Entries of a page of the audit log unless told otherwise (`GET /v1/audit`,
/// `meshnode audit`).
pub const DEFAULT_AUDIT_PAGE: usize = 1000;
/// Most entries a page of the audit log may be asked for.
pub const MAX_AUDIT_PAGE: usize = 10_000;
/// Most stored bytes of entries a page holds, whatever its limit: 8 MiB, about 130 entries of
/// the largest size ([`mesh_protocol::audit::MAX_AUDIT_ENTRY`]), so the answer and what is
/// parsed to build it stay small however big the entries are. A page holds at least one
/// entry.
pub const MAX_AUDIT_PAGE_BYTES: usize = 8 << 20;

/// What `GET /v1/audit` answers with: a page of the newest entries (before `before`), or with
/// `verify` only the verdict of the chain check and the counts. The chain is checked in
/// both cases.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditQuery {
    /// Entries of the page, at most ([`DEFAULT_AUDIT_PAGE`] when absent, up to
    /// [`MAX_AUDIT_PAGE`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only entries before this sequence number: the `next_before` of the newer page.
    #[serde(default)]
    pub before: Option<u64>,
    /// No entries: the verdict and the counts only.
    #[serde(default)]
    pub verify: bool,
}

impl AuditQuery {
    /// The page's limit, checked.
    pub fn page_limit(&self) -> Result<usize, String> {
        match self.limit {
            None => Ok(DEFAULT_AUDIT_PAGE),
            Some(n) if (1..=MAX_AUDIT_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(format!(
                "an audit page holds 1 to {MAX_AUDIT_PAGE} entries, not {n}"
            )),
        }
    }

    /// The query string of `GET /v1/audit` for this query (with its `?`, empty when all is
    /// default).
    pub fn to_query_string(&self) -> String {
        let mut parts = Vec::new();
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        if let Some(before) = self.before {
            parts.push(format!("before={before}"));
        }
        if self.verify {
            parts.push("verify=true".to_owned());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// The audit log as shown by `meshnode audit`: the page `query` asks for, with the verdict of
/// the chain check (the chain, its signed head and its anchor). The page is read backwards
/// from its end and the chain one entry at a time, so memory stays within a page
/// ([`MAX_AUDIT_PAGE_BYTES`]) however long the chain is. A blocking call: the whole chain the
/// store keeps is read.
pub fn audit_view(store: &Store, query: &AuditQuery) -> Result<AuditView, StoreError> {
    let page = if query.verify {
        Default::default()
    } else {
        let limit = query.page_limit().unwrap_or(DEFAULT_AUDIT_PAGE);
        store.audit_page(query.before, limit, MAX_AUDIT_PAGE_BYTES)?
    };
    let entries: Vec<AuditEntryView> = page
        .entries
        .into_iter()
        .map(|e| AuditEntryView {
            seq: e.seq,
            at_ms: e.at_ms,
            at: crate::views::rfc3339(e.at_ms),
            kind: e.kind.as_str().to_owned(),
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail)),
        })
        .collect();
    let verdict = store.audit_verify()?;
    let count = store.audit_len()?;
    let first_seq = store.audit_first()?;
    let (verified, intact_entries, broken_entry, error) = match verdict {
        Ok(n) => (true, n, None, None),
        Err(e) => {
            let at = match &e {
                ChainError::Unreadable { seq, .. } => *seq,
                ChainError::Sequence { position, .. } => *position,
                ChainError::BrokenLink { seq, .. } => *seq,
                // The end of the log does not match its signed head: the last entry.
                ChainError::Head(_) => count.saturating_sub(1),
                // The first entry the store lacks, or the anchored entry it replaced.
                ChainError::RolledBack { store, .. } => *store,
                ChainError::Diverged { anchor } => anchor.saturating_sub(1),
            };
            (false, at, Some(at), Some(e.to_string()))
        }
    };
    Ok(AuditView {
        first_seq,
        held_entries: count.saturating_sub(first_seq),
        next_before: page.next_before,
        entries,
        verified,
        intact_entries,
        broken_entry,
        error,
    })
}

/// Why the audit log of a stopped node could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OfflineAuditError {
    /// The identity file is missing, damaged or does not match its public key.
    #[error(transparent)]
    Key(#[from] crate::keyfile::KeyFileError),
    /// The database could not be opened (a daemon may hold it).
    #[error("cannot open the database `{path}`: {source} (is a meshnode daemon running on it?)")]
    Open {
        /// Database path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: StoreError,
    },
    /// Reading it failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads and checks the audit log of a node that is not running (`meshnode audit` when no
/// daemon answers, such as one that refused to start): the page `query` asks for. Writes
/// nothing: the anchor is read, never rewritten.
pub fn offline_audit(
    data_dir: &DataDir,
    query: &AuditQuery,
) -> Result<AuditView, OfflineAuditError> {
    let identity = crate::keyfile::load(&data_dir.identity())?;
    let path = data_dir.db();
    let store = Store::open(&path)
        .map_err(|source| OfflineAuditError::Open { path, source })?
        .with_audit_signer(identity)
        .with_audit_anchor(data_dir.audit_anchor());
    Ok(audit_view(&store, query)?)
}

#[cfg(test)]
mod tests {
    use mesh_protocol::Identity;
    use mesh_protocol::audit::AuditEntry;

    use super::*;

    fn node_store(data_dir: &DataDir) -> Store {
        Store::open(&data_dir.db())
            .unwrap()
            .with_audit_signer(Identity::from_secret_bytes([6; 32]))
            .with_audit_anchor(data_dir.audit_anchor())
    }

    fn append(store: &Store, n: u64) {
        for i in 0..n {
            store
                .audit_append(AuditKind::Publish, &serde_json::json!({ "i": i }), i)
                .unwrap();
        }
        store.flush_blocking().unwrap();
    }

    #[test]
    fn next_version_takes_the_highest_source() {
        assert_eq!(next_version([None, None]), Some(1));
        assert_eq!(next_version([Some(2), None, Some(5)]), Some(6));
        assert_eq!(next_version([Some(u64::MAX)]), None);
    }

    #[test]
    fn anchor_follows_flushes_and_a_rollback_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(tmp.path());
        let store = node_store(&data_dir);
        assert_eq!(check_at_start(&data_dir, &store, false).unwrap().swept, 0);
        append(&store, 2);
        assert!(data_dir.audit_anchor().exists());
        drop(store);
        // A copy of the database as it was after two entries.
        let saved = tmp.path().join("db-copy");
        copy_dir(&data_dir.db(), &saved);
        let store = node_store(&data_dir);
        check_at_start(&data_dir, &store, false).unwrap();
        append(&store, 3);
        assert_eq!(store.audit_verify().unwrap(), Ok(5));
        drop(store);

        // Restore the older database: refused at start, and the chain check says why.
        std::fs::remove_dir_all(data_dir.db()).unwrap();
        copy_dir(&saved, &data_dir.db());
        let store = node_store(&data_dir);
        let err = check_at_start(&data_dir, &store, false).unwrap_err();
        assert!(
            matches!(
                err,
                IntegrityError::RolledBack {
                    store: 2,
                    anchor: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--accept-rollback"), "{err}");
        assert_eq!(
            store.audit_verify().unwrap(),
            Err(ChainError::RolledBack {
                store: 2,
                anchor: 5
            })
        );
        // The refusal changed nothing: refused again.
        assert!(check_at_start(&data_dir, &store, false).is_err());

        // Accepted: recorded in the log, anchored anew, verified.
        let report = check_at_start(&data_dir, &store, true).unwrap();
        assert!(report.accepted.unwrap().contains("rolled back"));
        assert_eq!(store.audit_verify().unwrap(), Ok(3));
        let view = audit_view(&store, &AuditQuery::default()).unwrap();
        assert_eq!(view.entries[2].kind, "rollback_accepted");
        assert_eq!(view.entries[2].detail["anchor_entries"], 5);
        check_at_start(&data_dir, &store, false).unwrap();
    }

    #[test]
    fn emptied_store_is_refused_with_or_without_its_anchor() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(tmp.path());
        let store = node_store(&data_dir);
        append(&store, 1);
        let file = data_dir.product_file("orders", 1);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"data").unwrap();
        drop(store);
        std::fs::remove_dir_all(data_dir.db()).unwrap();
        let store = node_store(&data_dir);
        let err = check_at_start(&data_dir, &store, false).unwrap_err();
        assert!(
            matches!(
                err,
                IntegrityError::RolledBack {
                    store: 0,
                    anchor: 1,
                    ..
                }
            ),
            "{err}"
        );
        let view = audit_view(&store, &AuditQuery::default()).unwrap();
        assert!(!view.verified);
        assert!(view.error.unwrap().contains("rolled back"));
        drop(store);
        std::fs::remove_file(data_dir.audit_anchor()).unwrap();
        std::fs::remove_dir_all(data_dir.db()).unwrap();
        let store = node_store(&data_dir);
        let err = check_at_start(&data_dir, &store, false).unwrap_err();
        assert!(
            matches!(err, IntegrityError::EmptiedStore { files: 1, .. }),
            "{err}"
        );
        assert_eq!(
            highest_version_on_disk(&data_dir, "orders").unwrap(),
            Some(1)
        );
    }

    #[test]
    fn anchor_signed_by_another_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(tmp.path());
        let store = node_store(&data_dir);
        append(&store, 1);
        drop(store);
        let other = Store::open(&data_dir.db())
            .unwrap()
            .with_audit_signer(Identity::from_secret_bytes([7; 32]))
            .with_audit_anchor(data_dir.audit_anchor());
        let err = check_at_start(&data_dir, &other, false).unwrap_err();
        assert!(
            matches!(err, IntegrityError::AnchorUnusable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("identity.key"), "{err}");
    }

    #[test]
    fn a_head_that_disagrees_with_the_chain_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(tmp.path());
        let store = node_store(&data_dir);
        append(&store, 3);
        check_at_start(&data_dir, &store, false).unwrap();
        // The last entry rewritten in place: the chain and the anchor's count agree, the
        // signed head in the database does not (as when sled loses one tree's writes).
        let mut entry = AuditEntry::from_bytes(&store.audit_raw().unwrap()[2]).unwrap();
        entry.detail = "{}".into();
        store
            .audit_overwrite_for_tests(2, &entry.to_bytes())
            .unwrap();
        let err = check_at_start(&data_dir, &store, false).unwrap_err();
        assert!(
            matches!(err, IntegrityError::Diverged { anchor: 3, .. }),
            "{err}"
        );
        // Without the anchor, the database's own head still tells.
        std::fs::remove_file(data_dir.audit_anchor()).unwrap();
        let err = check_at_start(&data_dir, &store, false).unwrap_err();
        assert!(matches!(err, IntegrityError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("entry 2"), "{err}");
        assert!(check_at_start(&data_dir, &store, true).is_ok());
        assert_eq!(store.audit_verify().unwrap(), Ok(4));
    }

    #[test]
    fn the_audit_view_is_a_page_of_the_newest_entries_or_the_verdict_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(tmp.path());
        let store = node_store(&data_dir);
        append(&store, 25);
        let page = |limit, before| {
            let query = AuditQuery {
                limit,
                before,
                verify: false,
            };
            audit_view(&store, &query).unwrap()
        };
        let seqs = |view: &AuditView| view.entries.iter().map(|e| e.seq).collect::<Vec<_>>();
        let newest = page(Some(10), None);
        assert_eq!(seqs(&newest), (15..25).collect::<Vec<_>>());
        assert_eq!(newest.next_before, Some(15));
        assert_eq!(newest.entries[0].detail["i"], 15);
        assert!(newest.verified);
        assert_eq!((newest.intact_entries, newest.held_entries), (25, 25));
        let older = page(Some(10), newest.next_before);
        assert_eq!(seqs(&older), (5..15).collect::<Vec<_>>());
        let oldest = page(Some(10), older.next_before);
        assert_eq!(seqs(&oldest), (0..5).collect::<Vec<_>>());
        assert_eq!(oldest.next_before, None);
        assert_eq!(seqs(&page(None, None)).len(), 25);
        // The verdict alone: the whole chain checked, no entry.
        let verdict = audit_view(
            &store,
            &AuditQuery {
                verify: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(verdict.verified && verdict.entries.is_empty());
        assert_eq!((verdict.intact_entries, verdict.next_before), (25, None));
        // A break is named whatever page is shown.
        let mut entry = AuditEntry::from_bytes(&store.audit_raw().unwrap()[3]).unwrap();
        entry.detail = "{}".into();
        store
            .audit_overwrite_for_tests(3, &entry.to_bytes())
            .unwrap();
        let broken = page(Some(2), None);
        assert_eq!(seqs(&broken), [23, 24]);
        assert!(!broken.verified);
        assert_eq!(broken.broken_entry, Some(4));
        // Limits past the bounds are refused before anything is read.
        for limit in [0, MAX_AUDIT_PAGE + 1] {
            let query = AuditQuery {
                limit: Some(limit),
                ..Default::default()
            };
            assert!(query.page_limit().is_err(), "{limit}");
        }
        assert_eq!(
            AuditQuery {
                limit: Some(5),
                before: Some(9),
                verify: false
            }
            .to_query_string(),
            "?limit=5&before=9"
        );
        assert_eq!(AuditQuery::default().to_query_string(), "");
    }

    #[test]
    fn staging_files_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(tmp.path());
        std::fs::create_dir_all(data_dir.staging()).unwrap();
        std::fs::write(data_dir.staging().join("a-1.arrow.partial"), b"x").unwrap();
        std::fs::write(data_dir.staging().join("b-2.arrow.partial"), b"y").unwrap();
        let store = node_store(&data_dir);
        assert_eq!(check_at_start(&data_dir, &store, false).unwrap().swept, 2);
        assert_eq!(std::fs::read_dir(data_dir.staging()).unwrap().count(), 0);
        // Staging files are not product files.
        assert_eq!(count_product_files(&data_dir).unwrap(), 0);
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
}
