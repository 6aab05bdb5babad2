//! The consumer's writing half: a blocking thread that appends each data frame to the
//! partial file (counting it), reports progress, hands a copy to an observer, checks the
//! stream's columns against the header and checkpoints the state file. Two more threads
//! keep work off its path:
//!
//! - the hasher: each frame goes on to it once written and BLAKE3 runs while the writer
//!   appends the next one; it hands the buffer back to the network reader for reuse;
//! - the syncer: forces each checkpoint to disk while the writer goes on, so the final
//!   fsync has little left to do, and records the checkpoint once it is durable.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use mesh_protocol::TransferTally;
use tokio::sync::mpsc;

use super::reader::DataFrame;
use super::{FrameObserver, write_state};
use crate::dataplane::framepool;
use crate::dataplane::ipcfile::{AppendError, HEADER_LEN, IpcFileBuilder};
use crate::dataplane::{FetchError, PartialPaths, ResumeState};
use crate::node::now_ms;
use crate::progress::Progress;

/// Data frames queued between the network reader and the file writer.
const FRAME_QUEUE: usize = 8;
/// Data frames queued between the writer and the hasher (the hasher keeps pace with the
/// disk; a short queue bounds the memory a slow one can hold).
const HASH_QUEUE: usize = 2;
/// Frame buffers the hasher hands back to the reader for reuse: as many as can be in flight
/// (both queues, and one each in the reader's, the writer's and the hasher's hands), so a
/// steady transfer allocates none. A fresh multi-MiB buffer costs a page fault per 4 KiB
/// page; kept ones cost no more memory than the queues can hold anyway.
const SPARE_BUFFERS: usize = FRAME_QUEUE + HASH_QUEUE + 3;
/// The state file is rewritten after this many bytes.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// What the writer needs besides the file.
pub(super) struct Setup {
    pub(super) paths: PartialPaths,
    /// The checkpoint so far; updated as data is appended.
    pub(super) state: ResumeState,
    /// The columns the header announced, which the stream's schema must have.
    pub(super) expected_columns: Vec<String>,
    pub(super) progress: Option<Arc<Progress>>,
    pub(super) observer: Option<FrameObserver>,
}

/// What the writer thread ends with.
pub(super) struct Written {
    pub(super) builder: IpcFileBuilder,
    /// Why it stopped before the end of the frames, if it did.
    pub(super) error: Option<AppendError>,
    /// BLAKE3 of the stream from batch 0, as the hasher computed it.
    pub(super) digest: [u8; 32],
}

/// The running writer, as the reader sees it.
pub(super) struct Writer {
    frames: mpsc::Sender<DataFrame>,
    spares: Receiver<Vec<u8>>,
    thread: tokio::task::JoinHandle<Written>,
}

impl Writer {
    /// Starts the writer thread on `builder`.
    pub(super) fn spawn(builder: IpcFileBuilder, setup: Setup) -> std::io::Result<Self> {
        let sync_file = builder.file_handle()?;
        let (frames, rx) = mpsc::channel::<DataFrame>(FRAME_QUEUE);
        let (spare_tx, spares) = sync_channel::<Vec<u8>>(SPARE_BUFFERS);
        let thread =
            tokio::task::spawn_blocking(move || write(builder, setup, rx, spare_tx, sync_file));
        Ok(Self {
            frames,
            spares,
            thread,
        })
    }

    /// A buffer the writer is done with, or a new one.
    pub(super) fn spare_buffer(&self) -> Vec<u8> {
        self.spares.try_recv().unwrap_or_default()
    }

    /// Queues a frame; `false` when the writer has stopped.
    pub(super) async fn write(&mut self, frame: DataFrame) -> bool {
        self.frames.send(frame).await.is_ok()
    }

    /// No more frames: waits for the writer to append what is queued.
    pub(super) async fn finish(self) -> Result<Written, FetchError> {
        drop(self.frames);
        self.thread.await.map_err(|e| FetchError::Io {
            what: "the file writer failed".into(),
            source: std::io::Error::other(e),
        })
    }
}

/// The hasher thread: the stream's hash from where `tally` left off, frames in order.
fn hash(
    mut tally: TransferTally,
    frames: Receiver<DataFrame>,
    spares: SyncSender<Vec<u8>>,
) -> [u8; 32] {
    for frame in frames {
        tally.update(&frame);
        let buffer = frame.into_buffer();
        if buffer.capacity() <= framepool::MAX_KEPT {
            let _ = spares.try_send(buffer);
        }
    }
    tally.digest()
}

/// The writer thread's loop.
fn write(
    mut builder: IpcFileBuilder,
    setup: Setup,
    mut frames: mpsc::Receiver<DataFrame>,
    spares: SyncSender<Vec<u8>>,
    sync_file: std::fs::File,
) -> Written {
    let Setup {
        paths,
        mut state,
        expected_columns,
        progress,
        mut observer,
    } = setup;
    let report = |builder: &IpcFileBuilder| {
        if let Some(p) = &progress {
            p.set(builder.offset() - HEADER_LEN as u64, builder.rows());
        }
    };
    report(&builder);
    let (sync_tx, sync_rx) = sync_channel::<ResumeState>(1);
    let syncer = std::thread::spawn(move || {
        for checkpoint in sync_rx {
            if sync_file.sync_data().is_ok() {
                let _ = write_state(&paths, &checkpoint);
            }
        }
    });
    let (hash_tx, hash_rx) = sync_channel::<DataFrame>(HASH_QUEUE);
    let tally = builder.hash_elsewhere();
    let hasher = std::thread::spawn(move || hash(tally, hash_rx, spares));
    let mut last_checkpoint = builder.offset();
    let mut error = None;
    while let Some(frame) = frames.blocking_recv() {
        if let Err(e) = builder.append(&frame) {
            error = Some(e);
            break;
        }
        report(&builder);
        if let Some(o) = &observer
            && o.blocking_send(bytes::Bytes::copy_from_slice(&frame))
                .is_err()
        {
            observer = None;
        }
        let first = builder.messages() == 1;
        // In order, after the write: the hasher only ever sees appended frames.
        let _ = hash_tx.send(frame);
        if first {
            let names: Vec<String> = builder
                .schema()
                .map(|s| s.fields().iter().map(|f| f.name().clone()).collect())
                .unwrap_or_default();
            if names != expected_columns {
                error = Some(AppendError::Protocol(format!(
                    "the stream's columns {names:?} differ from the header's {expected_columns:?}"
                )));
                break;
            }
        }
        if builder.offset() - last_checkpoint >= CHECKPOINT_BYTES {
            last_checkpoint = builder.offset();
            state.batches = builder.messages();
            state.rows = builder.rows();
            state.bytes = builder.offset();
            state.updated_ms = now_ms();
            // Skipped while the previous sync is still running. The sync makes durable what
            // was written, not the last few MiB still staged for a direct write; a resume
            // takes the complete messages of the file as it finds them, not these counts.
            let _ = sync_tx.try_send(state.clone());
        }
    }
    drop(sync_tx);
    drop(hash_tx);
    let _ = syncer.join();
    // A hasher that panicked leaves a digest no trailer matches.
    let digest = hasher.join().unwrap_or_default();
    Written {
        builder,
        error,
        digest,
    }
}
