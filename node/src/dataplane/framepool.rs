//! Frame buffers that are reused: the provider's, handed back once quinn lets go of them,
//! and the rule both sides follow to reuse one ([`fitting`]).
//!
//! A passthrough frame is a multi-MiB buffer read from the product file. Allocated fresh per
//! frame, each one costs a page fault and a cleared page per 4 KiB, since the allocator hands
//! large freed blocks back to the kernel. Here a frame goes to quinn as [`Bytes`] whose
//! owner returns the buffer to the pool when quinn drops it (the consumer acknowledged the
//! data), and the file reader takes its next buffer from there.
//!
//! Bounds: the pool keeps at most `keep` buffers, each at most [`MAX_KEPT`] bytes; a buffer
//! that comes back to a full pool, or to a transfer that has ended, is freed. A spare too
//! small for the next frame is freed rather than grown (growing would copy its old contents
//! into new pages), and new buffers are rounded up to [`GRAIN`] so that frames of similar
//! size reuse each other's. The consumer's reader reuses the buffers its hasher hands back
//! by the same rule.
//!
//! The consumer bounds its frame buffers by bytes, not by count: a provider may send data
//! frames of up to 64 MiB, and the writer's queues hold a number of frames. Each buffer
//! holds a [`Share`] of its fetch's [`Budget`] ([`FETCH_BUDGET`]) from when its frame is
//! read until it is freed, a spare kept for reuse included; a buffer larger than the whole
//! budget takes all of it, so one frame always fits. Beyond the budget a fetch holds only
//! the frame its reader is filling in a new buffer (see `consumer::writer`).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// New buffers are rounded up to a multiple of this.
pub(crate) const GRAIN: usize = 1024 * 1024;
/// Buffers larger than this are never kept.
pub(crate) const MAX_KEPT: usize = 16 * 1024 * 1024;
/// Bytes of frame buffers one fetch may hold between its network reader and its hasher,
/// spares kept for reuse included. 64 MiB holds twelve of today's frames (65,536-row
/// batches of about 4.5 MiB, in 5 MiB buffers) where the queues bounded by count held
/// thirteen, and seven of the frames of up to about 9 MiB that a re-encoding provider
/// sends (`produce::SLICE_BYTES`): the disk and the hasher have as much work queued as
/// before (a queue of 16 frames was measured no faster than one of 8), while a provider
/// sending 64 MiB frames can no longer make a fetch hold thirteen of them (850 MiB).
pub(crate) const FETCH_BUDGET: usize = 64 * 1024 * 1024;
/// A spare kept for reuse holds its share of the budget: none may be larger than it.
const _: () = assert!(MAX_KEPT <= FETCH_BUDGET);
/// The unit the budget is counted in.
const KIB: usize = 1024;

/// `spare`, emptied, if it has room for `len` bytes; otherwise a new buffer with room for
/// `len` rounded up to [`GRAIN`], and `spare` is freed.
pub(crate) fn fitting(mut spare: Vec<u8>, len: usize) -> Vec<u8> {
    if spare.capacity() >= len {
        spare.clear();
        spare
    } else {
        Vec::with_capacity(len.div_ceil(GRAIN).max(1) * GRAIN)
    }
}

/// The bytes of frame buffers one fetch may hold, counted in KiB of capacity.
#[derive(Debug)]
pub(crate) struct Budget {
    /// The KiB not taken; each [`Share`] holds some until it is dropped.
    semaphore: Arc<Semaphore>,
    /// The whole budget in KiB, which a buffer larger than the budget takes.
    kib: u32,
}

/// A buffer's part of a [`Budget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Share {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    /// A budget of `bytes` (rounded up to a KiB).
    pub(crate) fn new(bytes: usize) -> Self {
        let kib = u32::try_from(bytes.div_ceil(KIB)).unwrap_or(u32::MAX);
        Self {
            semaphore: Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// What a buffer of `capacity` bytes takes: its KiB, at most the whole budget.
    fn kib_for(&self, capacity: usize) -> u32 {
        u32::try_from(capacity.div_ceil(KIB)).map_or(self.kib, |kib| kib.min(self.kib))
    }

    /// Whether the budget has room for a buffer of `capacity` bytes now.
    pub(crate) fn has_room(&self, capacity: usize) -> bool {
        self.semaphore.available_permits() >= self.kib_for(capacity) as usize
    }

    /// A share for a buffer of `capacity` bytes, if the budget has room for it now.
    pub(crate) fn try_take(&self, capacity: usize) -> Option<Share> {
        let kib = self.kib_for(capacity);
        let permit = self.semaphore.clone().try_acquire_many_owned(kib).ok()?;
        Some(Share { _permit: permit })
    }

    /// A share for a buffer of `capacity` bytes, once the budget has room for it.
    /// Cancel-safe: a share not taken is not lost.
    pub(crate) async fn take(&self, capacity: usize) -> Share {
        let kib = self.kib_for(capacity);
        match self.semaphore.clone().acquire_many_owned(kib).await {
            Ok(permit) => Share { _permit: permit },
            Err(_) => unreachable!("a budget's semaphore is never closed"),
        }
    }
}

/// A consumer's frame buffer and its [`Share`] of the fetch's budget: a new buffer has none
/// until its frame has been read; a spare kept for reuse keeps the share it had.
///
/// Fields are dropped in the order they are declared: the bytes are freed before the share
/// goes back to the budget, so the next buffer never overlaps them.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    /// The bytes; the capacity is what the share pays for.
    pub(crate) bytes: Vec<u8>,
    /// Its capacity on the fetch's gauge, in tests: off it once the bytes are freed, and
    /// before the share goes back.
    #[cfg(test)]
    _counted: Option<gauge::Counted>,
    /// Its part of the budget, once it has one.
    pub(crate) share: Option<Share>,
}

impl Buffer {
    /// This buffer, emptied and with its share, if it has room for `len` bytes; otherwise
    /// it is freed (its share given back) and a new one without a share is made, as
    /// [`fitting`] does.
    pub(crate) fn fitting(mut self, len: usize) -> Self {
        if self.bytes.capacity() >= len {
            self.bytes.clear();
            return self;
        }
        drop(self);
        let bytes = fitting(Vec::new(), len);
        Self {
            #[cfg(test)]
            _counted: gauge::Counted::new(bytes.capacity()),
            bytes,
            share: None,
        }
    }
}

/// The bytes a fetch's frame buffers hold, counted apart from its [`Budget`] for tests that
/// check the budget: a test runs the fetch in [`gauge::GAUGE`]'s scope.
#[cfg(test)]
pub(crate) mod gauge {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    tokio::task_local! {
        /// The gauge of the fetch polled in this task.
        pub(crate) static GAUGE: Arc<Gauge>;
    }

    /// Capacity of the frame buffers a fetch's reader made, while they live.
    #[derive(Debug, Default)]
    pub(crate) struct Gauge {
        held: AtomicUsize,
        peak: AtomicUsize,
        /// Notified when the fetch's network side waits for its writer: for room in the
        /// budget or in the writer's queue, or for the writer to finish.
        pub(crate) waiting: Notify,
    }

    impl Gauge {
        /// Bytes held now.
        pub(crate) fn held(&self) -> usize {
            self.held.load(Ordering::SeqCst)
        }

        /// The most bytes held at once.
        pub(crate) fn peak(&self) -> usize {
            self.peak.load(Ordering::SeqCst)
        }
    }

    /// One buffer's capacity on the gauge of the fetch that made it.
    #[derive(Debug)]
    pub(crate) struct Counted {
        gauge: Arc<Gauge>,
        bytes: usize,
    }

    impl Counted {
        /// Counts `bytes` on the gauge of the fetch polled in this task, if there is one.
        pub(crate) fn new(bytes: usize) -> Option<Self> {
            let gauge = GAUGE.try_with(Arc::clone).ok()?;
            let held = gauge.held.fetch_add(bytes, Ordering::SeqCst) + bytes;
            gauge.peak.fetch_max(held, Ordering::SeqCst);
            Some(Self { gauge, bytes })
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.gauge.held.fetch_sub(self.bytes, Ordering::SeqCst);
        }
    }

    /// Tells the gauge of the fetch polled in this task that it waits for its writer.
    pub(crate) fn waiting() {
        let _ = GAUGE.try_with(|gauge| gauge.waiting.notify_one());
    }
}

/// The reading side: where the file reader takes its buffers.
pub(crate) struct Spares(Receiver<Vec<u8>>);

/// The sending side: turns frames into [`Bytes`] that come home when dropped.
#[derive(Clone)]
pub(crate) struct Home(SyncSender<Vec<u8>>);

/// A pool keeping at most `keep` buffers.
pub(crate) fn pool(keep: usize) -> (Home, Spares) {
    let (home, spares) = sync_channel(keep);
    (Home(home), Spares(spares))
}

impl Spares {
    /// An empty buffer with room for `len` bytes: a spare that fits, or a new one.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let spare = std::iter::from_fn(|| self.0.try_recv().ok())
            .find(|spare| spare.capacity() >= len)
            .unwrap_or_default();
        fitting(spare, len)
    }
}

impl Home {
    /// `frame` as shared bytes; its buffer comes back to the pool when the last handle drops.
    pub(crate) fn share(&self, frame: Vec<u8>) -> Bytes {
        Bytes::from_owner(Returning {
            buffer: frame,
            home: self.0.clone(),
        })
    }
}

/// A frame's buffer while quinn holds it.
struct Returning {
    buffer: Vec<u8>,
    home: SyncSender<Vec<u8>>,
}

impl AsRef<[u8]> for Returning {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if self.buffer.capacity() <= MAX_KEPT {
            // Fails when the pool is full or the transfer has ended: the buffer is freed.
            let _ = self.home.try_send(std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_frame_comes_back_and_is_reused_without_its_contents() {
        let (home, spares) = pool(2);
        let mut first = spares.take(3 * GRAIN / 2);
        assert_eq!(first.capacity(), 2 * GRAIN, "rounded up to the grain");
        first.extend_from_slice(b"frame");
        let address = first.as_ptr();
        let shared = home.share(first);
        assert_eq!(&shared[..], b"frame");
        let slice = shared.slice(1..3);
        drop(shared);
        // Still held through the slice: nothing came back yet, so a new buffer is made.
        let other = spares.take(10);
        assert_ne!(other.as_ptr(), address);
        drop(slice);
        let again = spares.take(GRAIN);
        assert_eq!(again.as_ptr(), address, "the same buffer is reused");
        assert!(again.is_empty());
    }

    #[test]
    fn a_spare_too_small_is_freed_rather_than_grown() {
        let (home, spares) = pool(2);
        drop(home.share(Vec::with_capacity(GRAIN)));
        let big = spares.take(GRAIN + 1);
        assert_eq!(big.capacity(), 2 * GRAIN);
        // The small spare was taken out and freed on the way.
        assert!(spares.0.try_recv().is_err());
    }

    #[test]
    fn a_consumer_buffer_keeps_its_share_while_it_fits_and_gives_it_back_when_replaced() {
        let budget = Budget::new(4 * GRAIN);
        let mut buffer = Buffer::default().fitting(GRAIN + 1);
        assert_eq!(
            buffer.bytes.capacity(),
            2 * GRAIN,
            "rounded up to the grain"
        );
        assert!(buffer.share.is_none(), "no share until its frame is taken");
        buffer.share = budget.try_take(buffer.bytes.capacity());
        buffer.bytes.extend_from_slice(b"frame");
        let buffer = buffer.fitting(2 * GRAIN);
        assert!(buffer.bytes.is_empty(), "reused without its contents");
        assert!(buffer.share.is_some(), "and with its share");
        assert!(budget.try_take(3 * GRAIN).is_none(), "which it still holds");
        let buffer = buffer.fitting(2 * GRAIN + 1);
        assert!(buffer.share.is_none());
        assert!(
            budget.try_take(4 * GRAIN).is_some(),
            "the freed one's share came back"
        );
    }

    #[test]
    fn a_buffer_larger_than_the_budget_takes_all_of_it() {
        let budget = Budget::new(4 * GRAIN);
        let all = budget.try_take(64 * GRAIN).expect("one frame always fits");
        assert!(budget.try_take(1).is_none());
        drop(all);
        assert!(budget.try_take(4 * GRAIN).is_some());
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_bound_nor_oversized_buffers() {
        let (home, spares) = pool(1);
        drop(home.share(Vec::with_capacity(GRAIN)));
        drop(home.share(Vec::with_capacity(GRAIN)));
        drop(home.share(Vec::with_capacity(MAX_KEPT + 1)));
        assert!(spares.0.try_recv().is_ok());
        assert!(spares.0.try_recv().is_err(), "one kept, the rest freed");
        // After the transfer ends a returning buffer is simply freed.
        let late = home.share(Vec::with_capacity(GRAIN));
        drop(spares);
        drop(late);
    }
}
