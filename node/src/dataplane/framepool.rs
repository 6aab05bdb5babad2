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

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;

/// New buffers are rounded up to a multiple of this.
pub(crate) const GRAIN: usize = 1024 * 1024;
/// Buffers larger than this are never kept.
pub(crate) const MAX_KEPT: usize = 16 * 1024 * 1024;

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
