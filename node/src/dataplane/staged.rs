//! Fetches whose bytes go to the caller instead of a file it names (`meshnode fetch --out -`).
//!
//! The design is the simplest one that never hands out unverified data: the daemon fetches
//! into a file of its own staging area (`<data-dir>/received/.stream/`) exactly as into any
//! output path — same resume-free transfer, same trailer and digest verification — and only
//! then opens the verified file for the caller and removes its name, so nothing is left
//! behind whatever the caller does next. The caller gets the Arrow IPC *stream*: the bytes
//! the provider signed (the file between its header and its end-of-stream marker) followed
//! by the end-of-stream marker, read from disk in chunks (memory stays bounded). The cost is
//! disk space for one copy of the product in the daemon's data directory while it streams.
//!
//! Streaming while receiving was not chosen: a consumer downstream of a pipe cannot take
//! back rows it has already processed when the provider's trailer fails at the end.

use std::path::{Path, PathBuf};

use super::convert::{END_OF_STREAM, OutputFormat};
use super::ipcfile::HEADER_LEN;
use super::{DataPlane, FetchError, FetchOptions, FetchOutcome, PartialPaths};

/// Directory of `received/` holding fetches being streamed to their caller.
pub(crate) const STREAM_STAGING: &str = ".stream";

/// A verified fetch, opened for reading as an IPC stream; its file has no name any more.
#[derive(Debug)]
pub struct StagedFetch {
    /// What was fetched (its `out` names the staging file, which is gone).
    pub outcome: FetchOutcome,
    /// The verified IPC file, open.
    file: std::fs::File,
}

impl StagedFetch {
    /// Bytes of the IPC stream: the signed stream plus the end-of-stream marker.
    pub fn stream_len(&self) -> u64 {
        self.outcome.bytes + END_OF_STREAM.len() as u64
    }

    /// The IPC stream, for async reading.
    pub async fn into_stream(
        self,
    ) -> std::io::Result<impl tokio::io::AsyncRead + Send + Unpin + 'static> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::from_std(self.file);
        file.seek(std::io::SeekFrom::Start(HEADER_LEN as u64))
            .await?;
        Ok(file.take(self.outcome.bytes).chain(&END_OF_STREAM[..]))
    }
}

/// `<data-dir>/received/.stream`.
fn staging_dir(plane: &DataPlane) -> PathBuf {
    plane.shared.data_dir.received().join(STREAM_STAGING)
}

/// Removes what a daemon that stopped mid-stream left in the staging area. Called when the
/// data plane starts, before any fetch (the store's lock keeps a second daemon away).
pub(crate) fn sweep(received: &Path) {
    let Ok(entries) = std::fs::read_dir(received.join(STREAM_STAGING)) else {
        return;
    };
    for entry in entries.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
}

impl DataPlane {
    /// Points `options` at a fresh Arrow file of the staging area and returns its path.
    fn stage(&self, options: &mut FetchOptions) -> Result<PathBuf, FetchError> {
        let dir = staging_dir(self);
        create_private_dir(&dir).map_err(|source| FetchError::Io {
            what: format!("cannot create `{}`", dir.display()),
            source,
        })?;
        let path = dir.join(format!("{}.arrow", hex::encode(rand::random::<[u8; 16]>())));
        options.out = path.clone();
        options.format = OutputFormat::Arrow;
        options.force = false;
        Ok(path)
    }

    /// Fetches `options.product` into the staging area, verifies it, and returns it open
    /// for streaming (see the module documentation). `options.out`, `format` and `force`
    /// are ignored; nothing is resumed from an earlier attempt.
    pub async fn fetch_staged(&self, mut options: FetchOptions) -> Result<StagedFetch, FetchError> {
        let path = self.stage(&mut options)?;
        // Whatever happens from here, even the caller going away mid-transfer (which drops
        // this future), the staging files go.
        let _cleanup = Cleanup(path.clone());
        let outcome = self.fetch(options).await?;
        let opened = std::fs::File::open(&path);
        let file = opened.map_err(|source| FetchError::Io {
            what: format!("cannot open the verified `{}`", path.display()),
            source,
        })?;
        Ok(StagedFetch { outcome, file })
    }
}

/// The fetch of the Flight endpoint's stream (only in builds with the query engine).
#[cfg(feature = "query")]
impl DataPlane {
    /// Fetches `options.product` into a fresh file of the staging area, sending a copy of
    /// each data frame to `observer` as it arrives (see `consumer::fetch_observed`), and
    /// removes the file when done, whatever the outcome: the caller decodes the stream
    /// as it comes and learns from the result whether it verified. `options.out`, `format`
    /// and `force` are ignored.
    pub(crate) async fn fetch_observed(
        &self,
        mut options: FetchOptions,
        observer: super::consumer::FrameObserver,
    ) -> Result<FetchOutcome, FetchError> {
        let path = self.stage(&mut options)?;
        let _cleanup = Cleanup(path);
        super::consumer::fetch_observed(&self.endpoint, &self.shared, options, Some(observer)).await
    }
}

/// Removes a staged fetch's file and its partial files when dropped.
#[derive(Debug)]
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        PartialPaths::new(self.0.clone()).discard();
    }
}

/// Creates `dir` (and its parents) with mode 0700 for the last component.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}
