//! Progress of long operations (a publish's ingest, a fetch) for the CLI to draw.
//!
//! The CLI names an operation with an id of its choosing in the request that starts it
//! (`"progress": "..."`) and polls `GET /v1/progress/{id}` while it waits for the answer.
//! The operation updates a [`Progress`] (plain atomics: no lock on the data path), and its
//! entry goes when the operation ends ([`Tracked`] is a guard). The board is bounded: at
//! most [`MAX_TRACKED`] operations are tracked at once; beyond that an operation runs
//! untracked rather than refused, since progress is a convenience.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Most operations tracked at once.
pub const MAX_TRACKED: usize = 64;
/// Longest progress id.
pub const MAX_ID_LEN: usize = 64;

/// Counters of one operation, updated by the thread doing the work.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes done: input read by an ingest, stream bytes received by a fetch.
    bytes: AtomicU64,
    /// Rows done.
    rows: AtomicU64,
    /// Bytes expected in all (the input's size for an ingest), 0 when unknown (a fetch: the
    /// provider's filter and projection decide).
    total_bytes: AtomicU64,
}

impl Progress {
    /// Records the figures so far.
    pub fn set(&self, bytes: u64, rows: u64) {
        self.bytes.store(bytes, Ordering::Relaxed);
        self.rows.store(rows, Ordering::Relaxed);
    }

    /// Records the expected total of bytes.
    pub fn set_total(&self, total_bytes: u64) {
        self.total_bytes.store(total_bytes, Ordering::Relaxed);
    }

    /// The figures as the API answers them.
    pub fn view(&self) -> ProgressView {
        let total = self.total_bytes.load(Ordering::Relaxed);
        ProgressView {
            bytes: self.bytes.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            total_bytes: (total > 0).then_some(total),
        }
    }
}

/// `GET /v1/progress/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressView {
    /// Bytes done (see [`Progress`]).
    pub bytes: u64,
    /// Rows done.
    pub rows: u64,
    /// Bytes expected, when known.
    pub total_bytes: Option<u64>,
}

/// Why an id was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProgressError {
    /// The id is empty, too long or has characters other than `[A-Za-z0-9_-]`.
    #[error("progress id `{0}` is not valid: use 1 to {MAX_ID_LEN} characters of [A-Za-z0-9_-]")]
    BadId(String),
}

/// The operations in progress, by id. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ProgressBoard {
    /// Tracked operations; at most [`MAX_TRACKED`].
    entries: Arc<Mutex<HashMap<String, Arc<Progress>>>>,
}

/// Whether `id` may name an operation.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

impl ProgressBoard {
    /// Starts tracking the operation `id`. `Ok(None)` when it cannot be tracked (the board
    /// is full, or the id is in use: the first holder keeps it); the operation then runs
    /// without progress.
    pub fn track(&self, id: &str) -> Result<Option<Tracked>, ProgressError> {
        if !valid_id(id) {
            return Err(ProgressError::BadId(id.chars().take(MAX_ID_LEN).collect()));
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_TRACKED || entries.contains_key(id) {
            return Ok(None);
        }
        let progress = Arc::new(Progress::default());
        entries.insert(id.to_owned(), progress.clone());
        Ok(Some(Tracked {
            board: self.clone(),
            id: id.to_owned(),
            progress,
        }))
    }

    /// The figures of operation `id`, if it is tracked.
    pub fn get(&self, id: &str) -> Option<ProgressView> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(id).map(|p| p.view())
    }
}

/// A tracked operation; its entry leaves the board when this is dropped.
#[derive(Debug)]
pub struct Tracked {
    /// The board holding the entry.
    board: ProgressBoard,
    /// The entry's id.
    id: String,
    /// The counters to update.
    progress: Arc<Progress>,
}

impl Tracked {
    /// The counters to update.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut entries = self
            .board
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if entries
            .get(&self.id)
            .is_some_and(|p| Arc::ptr_eq(p, &self.progress))
        {
            entries.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_the_board_is_bounded() {
        let board = ProgressBoard::default();
        for bad in ["", "a b", "../x", "é", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(board.track(bad).is_err(), "{bad:?}");
        }
        let first = board.track("op-1").unwrap().unwrap();
        first.progress().set(10, 2);
        first.progress().set_total(100);
        assert_eq!(
            board.get("op-1"),
            Some(ProgressView {
                bytes: 10,
                rows: 2,
                total_bytes: Some(100)
            })
        );
        // A second operation cannot take over an id in use.
        assert!(board.track("op-1").unwrap().is_none());
        let mut held = Vec::new();
        for i in 1..MAX_TRACKED {
            held.push(board.track(&format!("x{i}")).unwrap().unwrap());
        }
        // Full: untracked, not refused.
        assert!(board.track("one-more").unwrap().is_none());
        drop(first);
        assert_eq!(board.get("op-1"), None);
        assert!(board.track("one-more").unwrap().is_some());
        drop(held);
        assert_eq!(board.entries.lock().unwrap().len(), 0);
    }

    #[test]
    fn unknown_total_is_none() {
        let p = Progress::default();
        p.set(5, 1);
        assert_eq!(p.view().total_bytes, None);
    }
}
