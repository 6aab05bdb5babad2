//! Stream summaries of the provider's own product files, kept so that a whole-product fetch
//! served as stored (passthrough) is not hashed again on every request.
//!
//! A summary is valid for one file as it was: its identity on disk (device, inode, length,
//! modification time) is part of the entry, and a product file is only ever replaced by a
//! rename, never rewritten in place, so a new version or a restored file reads as a miss.
//! The consumer hashes what it receives whatever the provider does, so a stale summary can
//! only make a transfer fail verification, never make a wrong one pass. The provider also
//! counts the frames it sends and refuses to sign a summary they contradict.
//!
//! The cache is keyed by the provider's own file paths: peers cannot add entries, and the
//! number of entries is bounded anyway.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mesh_protocol::StreamSummary;

/// Entries kept; beyond this the oldest entry is dropped.
pub(crate) const MAX_SUMMARIES: usize = 4096;

/// What identifies a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    /// The stamp of the file at `path` now.
    pub(crate) fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt as _;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        Ok(Self {
            device,
            inode,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// Summaries by file, with the stamp each was computed for.
#[derive(Debug, Default)]
pub(crate) struct Summaries {
    entries: HashMap<PathBuf, (FileStamp, StreamSummary, u64)>,
    /// Insertion counter, to find the oldest entry.
    clock: u64,
    /// Lookups answered, for tests and metrics.
    pub(crate) hits: u64,
}

impl Summaries {
    /// The summary of `path` if it was computed for the same file (`stamp`).
    pub(crate) fn get(&mut self, path: &Path, stamp: FileStamp) -> Option<StreamSummary> {
        match self.entries.get(path) {
            Some((s, summary, _)) if *s == stamp => {
                self.hits += 1;
                Some(*summary)
            }
            _ => None,
        }
    }

    /// Records the summary of `path` as it was at `stamp`.
    pub(crate) fn insert(&mut self, path: &Path, stamp: FileStamp, summary: StreamSummary) {
        if self.entries.len() >= MAX_SUMMARIES
            && !self.entries.contains_key(path)
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(p, _)| p.clone())
        {
            self.entries.remove(&oldest);
        }
        self.clock += 1;
        self.entries
            .insert(path.to_owned(), (stamp, summary, self.clock));
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(n: u8) -> StreamSummary {
        StreamSummary {
            batches: n.into(),
            rows: 10 * u64::from(n),
            digest: [n; 32],
        }
    }

    #[test]
    fn a_summary_answers_only_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.arrow");
        std::fs::write(&path, b"first").unwrap();
        let stamp = FileStamp::of(&path).unwrap();
        let mut cache = Summaries::default();
        assert_eq!(cache.get(&path, stamp), None);
        cache.insert(&path, stamp, summary(1));
        assert_eq!(
            cache.get(&path, FileStamp::of(&path).unwrap()),
            Some(summary(1))
        );
        assert_eq!(cache.hits, 1);

        // Replaced by a rename, as products are: another inode, so a miss.
        let next = dir.path().join("next");
        std::fs::write(&next, b"other").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(cache.get(&path, FileStamp::of(&path).unwrap()), None);
        // Rewritten in place with another length: a miss too.
        std::fs::write(&path, b"longer content").unwrap();
        assert_eq!(cache.get(&path, FileStamp::of(&path).unwrap()), None);
        assert_eq!(cache.hits, 1);
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_oldest() {
        let stamp = FileStamp {
            device: 1,
            inode: 2,
            len: 3,
            modified: None,
        };
        let mut cache = Summaries::default();
        for i in 0..MAX_SUMMARIES + 10 {
            cache.insert(Path::new(&format!("/p/{i}")), stamp, summary(1));
        }
        assert_eq!(cache.len(), MAX_SUMMARIES);
        assert_eq!(cache.get(Path::new("/p/0"), stamp), None);
        assert_eq!(cache.get(Path::new("/p/9"), stamp), None);
        assert!(cache.get(Path::new("/p/10"), stamp).is_some());
        let last = format!("/p/{}", MAX_SUMMARIES + 9);
        assert!(cache.get(Path::new(&last), stamp).is_some());
    }
}
