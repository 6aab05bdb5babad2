//! The consumer's writing half: a blocking thread that appends each data frame to the
//! partial file (counting it), reports progress, hands a copy to an observer, checks the
//! stream's columns against the header and checkpoints the state file. Two more threads
//! keep work off its path:
//!
//! - the hasher: each frame goes on to it once written and BLAKE3 runs while the writer
//!   appends the next one; it hands the buffer back to the network reader for reuse;
//! - the syncer: forces each checkpoint to disk while the writer goes on, so the final
//!   fsync has little left to do, and records the checkpoint once it is durable.
//!
//! What the frames between the network reader and the hasher may hold is bounded in bytes,
//! not only in frames: a provider may send data frames of up to 64 MiB. Every frame buffer
//! holds a share of the fetch's [`Budget`] (`framepool::FETCH_BUDGET`) while it is queued,
//! written, hashed and kept as a spare; [`Writer::write`] waits for room in the budget
//! before it queues a frame read into a new buffer, and [`Writer::spare_buffer`] waits for a
//! spare rather than have the reader fill a new buffer while the budget is spent. So a
//! fetch holds at most the budget in frame buffers, plus the frame its reader fills in a
//! new buffer. This is per-frame work: nothing is done per chunk of the stream.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use mesh_protocol::TransferTally;
use tokio::sync::mpsc;

use super::reader::DataFrame;
use super::{FrameObserver, write_state};
use crate::dataplane::framepool::{self, Budget, Buffer, Share};
use crate::dataplane::ipcfile::{AppendError, HEADER_LEN, IpcFileBuilder};
use crate::dataplane::{FetchError, PartialPaths, ResumeState};
use crate::diskroom::Room;
use crate::node::now_ms;
use crate::progress::Progress;

/// Data frames queued between the network reader and the file writer (and all frames in
/// flight are within the fetch's budget of bytes).
const FRAME_QUEUE: usize = 8;
/// Data frames queued between the writer and the hasher (the hasher keeps pace with the
/// disk; a short queue bounds the memory a slow one can hold).
const HASH_QUEUE: usize = 2;
/// Frame buffers the hasher hands back to the reader for reuse: as many as can be in flight
/// (both queues, and one each in the reader's, the writer's and the hasher's hands), so a
/// steady transfer allocates none. A fresh multi-MiB buffer costs a page fault per 4 KiB
/// page; a kept one keeps its share of the budget, so spares and frames in flight together
/// stay within it.
const SPARE_BUFFERS: usize = FRAME_QUEUE + HASH_QUEUE + 3;
/// The state file is rewritten after this many bytes.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;
/// The disk's free space is looked up again after this many bytes (or before a larger
/// frame): the reserve is kept to within this.
const ROOM_STEP: u64 = 4 * 1024 * 1024;

/// What the writer needs besides the file.
pub(super) struct Setup {
    pub(super) paths: PartialPaths,
    /// The checkpoint so far; updated as data is appended.
    pub(super) state: ResumeState,
    /// The columns the header announced, which the stream's schema must have.
    pub(super) expected_columns: Vec<String>,
    pub(super) progress: Option<Arc<Progress>>,
    pub(super) observer: Option<FrameObserver>,
    /// The space to leave free on the partial file's disk, and where to learn what is free.
    pub(super) room: Room,
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
    /// Buffers the hasher is done with, each with its share of `budget`.
    spares: mpsc::Receiver<Buffer>,
    /// The bytes the frame buffers of this fetch may hold.
    budget: Budget,
    /// Capacity of the last frame's buffer (see [`next_buffer`]).
    last: usize,
    thread: tokio::task::JoinHandle<Written>,
}

impl Writer {
    /// Starts the writer thread on `builder`.
    pub(super) fn spawn(builder: IpcFileBuilder, setup: Setup) -> std::io::Result<Self> {
        let sync_file = builder.file_handle()?;
        let (frames, rx) = mpsc::channel::<DataFrame>(FRAME_QUEUE);
        let (spare_tx, spares) = mpsc::channel::<Buffer>(SPARE_BUFFERS);
        let thread =
            tokio::task::spawn_blocking(move || write(builder, setup, rx, spare_tx, sync_file));
        Ok(Self {
            frames,
            spares,
            budget: Budget::new(framepool::FETCH_BUDGET),
            last: 0,
            thread,
        })
    }

    /// A buffer for the next frame: one the hasher is done with (with its share of the
    /// budget), or an empty one (see [`next_buffer`]). Cancel-safe.
    pub(super) async fn spare_buffer(&mut self) -> Buffer {
        next_buffer(&self.budget, &mut self.spares, self.last).await
    }

    /// Queues a frame; `false` when the writer has stopped. A frame read into a new buffer
    /// first waits for its share of the budget.
    pub(super) async fn write(&mut self, mut frame: DataFrame) -> bool {
        let capacity = frame.buffer_mut().bytes.capacity();
        if frame.buffer_mut().share.is_none() {
            let share = share_for(&self.budget, &mut self.spares, capacity).await;
            frame.buffer_mut().share = Some(share);
        }
        self.last = capacity;
        #[cfg(test)]
        if self.frames.capacity() == 0 {
            framepool::gauge::waiting();
        }
        self.frames.send(frame).await.is_ok()
    }

    /// No more frames: waits for the writer to append what is queued.
    pub(super) async fn finish(self) -> Result<Written, FetchError> {
        #[cfg(test)]
        framepool::gauge::waiting();
        drop(self.frames);
        self.thread.await.map_err(|e| FetchError::Io {
            what: "the file writer failed".into(),
            source: std::io::Error::other(e),
        })
    }
}

/// A buffer for the next frame: a spare the hasher handed back, with its share of `budget`,
/// or an empty one. When there is no spare and the budget has no room for a buffer like
/// the `last` one, frames in flight hold the budget, and they come back as spares when
/// they are small enough to be kept: this waits for one of them, rather than let the reader
/// fill a new buffer (a page fault per 4 KiB) that would wait for their shares anyway, and
/// free each spare as it comes. Frames too large to be kept are read while the previous
/// one is written, beyond the budget. Cancel-safe.
async fn next_buffer(budget: &Budget, spares: &mut mpsc::Receiver<Buffer>, last: usize) -> Buffer {
    if let Ok(spare) = spares.try_recv() {
        return spare;
    }
    if last > framepool::MAX_KEPT || budget.has_room(last) {
        return Buffer::default();
    }
    #[cfg(test)]
    framepool::gauge::waiting();
    tokio::select! {
        Some(spare) = spares.recv() => spare,
        _room = budget.take(last) => Buffer::default(),
    }
}

/// A share of `budget` for a new buffer of `capacity` bytes. Spares kept for reuse give
/// theirs back first, and so does any that arrives while this waits (the budget is spent,
/// so it would only be freed later anyway): without that, a wait for the last frame in
/// flight would last forever once the hasher turned it into a spare. Frames in flight give
/// theirs back once hashed. Cancel-safe.
async fn share_for(budget: &Budget, spares: &mut mpsc::Receiver<Buffer>, capacity: usize) -> Share {
    loop {
        if let Some(share) = budget.try_take(capacity) {
            return share;
        }
        if let Ok(spare) = spares.try_recv() {
            drop(spare);
            continue;
        }
        #[cfg(test)]
        framepool::gauge::waiting();
        tokio::select! {
            share = budget.take(capacity) => return share,
            Some(spare) = spares.recv() => drop(spare),
        }
    }
}

/// The hasher thread: the stream's hash from where `tally` left off, frames in order.
fn hash(
    mut tally: TransferTally,
    frames: Receiver<DataFrame>,
    spares: mpsc::Sender<Buffer>,
) -> [u8; 32] {
    for frame in frames {
        tally.update(&frame);
        let buffer = frame.into_buffer();
        // Fails when the reader has enough spares or has stopped: the buffer is freed, and
        // its share given back.
        if buffer.bytes.capacity() <= framepool::MAX_KEPT {
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
    spares: mpsc::Sender<Buffer>,
    sync_file: std::fs::File,
) -> Written {
    let Setup {
        paths,
        mut state,
        expected_columns,
        progress,
        mut observer,
        room,
    } = setup;
    let partial = paths.partial.clone();
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
    // The file offset up to which the disk was last found to have room.
    let mut room_until = builder.offset();
    let mut error = None;
    while let Some(frame) = frames.blocking_recv() {
        if builder.offset() + frame.len() as u64 > room_until {
            let more = (frame.len() as u64).max(ROOM_STEP);
            if let Err(no_room) = room.check(&partial, more) {
                error = Some(AppendError::NoRoom(no_room));
                break;
            }
            room_until = builder.offset() + more;
        }
        if let Err(e) = builder.append(&frame) {
            error = Some(e);
            break;
        }
        report(&builder);
        // Room first, then the copy: a slow observer holds up the writer, not a second
        // copy of the frame as well.
        let gone = observer.as_ref().is_some_and(|o| {
            let Ok(room) = futures::executor::block_on(o.reserve()) else {
                return true;
            };
            room.send(bytes::Bytes::copy_from_slice(&frame));
            false
        });
        if gone {
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

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use super::*;

    const MIB: usize = 1024 * 1024;

    /// A spare as the hasher hands it back: `mib` MiB with its share of `budget`.
    fn spare(budget: &Budget, mib: usize) -> Buffer {
        let mut buffer = Buffer::default().fitting(mib * MIB);
        buffer.share = Some(budget.try_take(mib * MIB).expect("room in the budget"));
        buffer
    }

    #[tokio::test]
    async fn with_the_budget_spent_on_frames_that_come_back_the_next_frame_waits_for_one() {
        use futures::FutureExt as _;

        let budget = Budget::new(4 * MIB);
        let (tx, mut spares) = mpsc::channel(SPARE_BUFFERS);
        let first = spare(&budget, 2);
        let address = first.bytes.as_ptr();
        let second = spare(&budget, 2);
        {
            let next = next_buffer(&budget, &mut spares, 2 * MIB);
            tokio::pin!(next);
            assert!(matches!(futures::poll!(&mut next), Poll::Pending));
            tx.try_send(first).unwrap();
            let reused = next.await;
            assert_eq!(reused.bytes.as_ptr(), address, "the frame's own buffer");
            assert!(reused.share.is_some(), "with its share");
        }
        // Frames too large to be kept are never waited for here.
        let next = next_buffer(&budget, &mut spares, framepool::MAX_KEPT + 1).now_or_never();
        assert!(next.is_some_and(|b| b.share.is_none() && b.bytes.capacity() == 0));
        // Nor is anything once the budget has room for a buffer like the last.
        drop(second);
        let next = next_buffer(&budget, &mut spares, 2 * MIB).now_or_never();
        assert!(next.is_some_and(|b| b.share.is_none()));
    }

    #[tokio::test]
    async fn kept_spares_give_their_shares_back_to_a_new_buffer() {
        let budget = Budget::new(4 * MIB);
        let (tx, mut spares) = mpsc::channel(SPARE_BUFFERS);
        for _ in 0..2 {
            tx.try_send(spare(&budget, 2)).unwrap();
        }
        // The whole budget is in spares; a new buffer takes what they held.
        let share = share_for(&budget, &mut spares, 3 * MIB).await;
        assert!(spares.try_recv().is_err(), "both spares were freed");
        drop(share);
        assert!(budget.try_take(4 * MIB).is_some(), "all of it given back");
    }

    #[tokio::test]
    async fn a_new_buffer_waits_for_a_frame_in_flight_or_a_spare_that_arrives() {
        let budget = Budget::new(4 * MIB);
        let (tx, mut spares) = mpsc::channel(SPARE_BUFFERS);
        // A frame being written holds the whole budget: the new buffer waits.
        let in_flight = spare(&budget, 4);
        {
            let waiting = share_for(&budget, &mut spares, MIB);
            tokio::pin!(waiting);
            assert!(matches!(futures::poll!(&mut waiting), Poll::Pending));
            // The hasher hands it back as a spare, which nobody else would take: the wait
            // ends.
            tx.try_send(in_flight).unwrap();
            let _share = waiting.await;
            assert!(budget.try_take(3 * MIB).is_some());
        }
        // A frame freed without being kept ends the wait too; a buffer larger than the
        // whole budget takes all of it.
        let in_flight = spare(&budget, 1);
        let waiting = share_for(&budget, &mut spares, 64 * MIB);
        tokio::pin!(waiting);
        assert!(matches!(futures::poll!(&mut waiting), Poll::Pending));
        drop(in_flight);
        let _all = waiting.await;
        assert!(budget.try_take(1).is_none());
    }
}
