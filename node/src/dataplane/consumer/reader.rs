//! The consumer's reading half of a transfer stream: frames off a quinn stream, each header
//! parsed by the protocol's one parser and bounded before its payload is read.
//!
//! quinn's chunks are taken many at a time (`read_chunks`): one lock of the connection per
//! batch instead of per packet. A reader that takes them one by one falls behind the
//! connection driver, and quinn then copies what waits in its reassembly buffer into fresh
//! buffers (`Assembler::defragment`), which cost the consumer about a sixth of its CPU.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};
use mesh_protocol::transfer::{FRAME_HEADER_LEN, FrameKind};
use mesh_protocol::{Frame, FrameHeader};

/// Chunks taken from quinn at once.
const CHUNKS_PER_READ: usize = 32;

/// One frame read from the provider.
pub(super) enum Incoming {
    /// A data frame's payload: one encapsulated IPC message.
    Data(Vec<u8>),
    /// A decoded control frame.
    Control(Frame),
}

/// Why reading stopped.
pub(super) enum ReadFailure {
    /// The connection or stream broke: resumable.
    Broken(String),
    /// The provider spoke nonsense: not resumable.
    Protocol(String),
}

/// Reads frames from the provider's side of the stream.
pub(super) struct FrameReader {
    recv: quinn::RecvStream,
    /// Bytes received and not yet consumed, in stream order. Refilled only once empty, so
    /// it holds at most one batch of chunks: no more than quinn had buffered, which the
    /// stream's receive window bounds.
    pending: VecDeque<Bytes>,
    /// Slots `read_chunks` fills.
    slots: Vec<Bytes>,
    /// Stream offset of the next frame, for error messages.
    offset: u64,
}

impl FrameReader {
    pub(super) fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            pending: VecDeque::new(),
            slots: vec![Bytes::new(); CHUNKS_PER_READ],
            offset: 0,
        }
    }

    /// Reads one frame; a data frame's payload goes into `buffer` (cleared first), so the
    /// caller can hand back buffers for reuse.
    pub(super) async fn read(&mut self, buffer: Vec<u8>) -> Result<Incoming, ReadFailure> {
        let mut bytes = [0u8; FRAME_HEADER_LEN];
        let mut filled = 0;
        while filled < FRAME_HEADER_LEN {
            let n = self.take(FRAME_HEADER_LEN - filled, |chunk| {
                bytes[filled..filled + chunk.len()].copy_from_slice(chunk);
                filled += chunk.len();
            });
            if n == 0 && !self.receive().await? {
                return Err(ReadFailure::Broken(if filled == 0 {
                    "the provider ended the stream without a trailer".into()
                } else {
                    "the provider ended the stream inside a frame".into()
                }));
            }
        }
        let header = FrameHeader::parse(bytes, self.offset)
            .map_err(|e| ReadFailure::Protocol(e.to_string()))?;
        let mut payload = buffer;
        payload.clear();
        payload.reserve(header.len);
        while payload.len() < header.len {
            let n = self.take(header.len - payload.len(), |chunk| {
                payload.extend_from_slice(chunk)
            });
            if n == 0 && !self.receive().await? {
                return Err(ReadFailure::Broken(
                    "the provider ended the stream inside a frame".into(),
                ));
            }
        }
        self.offset += (FRAME_HEADER_LEN + header.len) as u64;
        if header.kind == FrameKind::Data {
            return Ok(Incoming::Data(payload));
        }
        header
            .decode(&payload)
            .map(Incoming::Control)
            .map_err(|e| ReadFailure::Protocol(e.to_string()))
    }

    /// Hands up to `max` pending bytes to `sink`, chunk by chunk; returns how many.
    fn take(&mut self, max: usize, mut sink: impl FnMut(&[u8])) -> usize {
        let mut taken = 0;
        while taken < max {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let n = front.len().min(max - taken);
            sink(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                self.pending.pop_front();
            }
            taken += n;
        }
        taken
    }

    /// Waits for more of the stream; `false` when it ended.
    async fn receive(&mut self) -> Result<bool, ReadFailure> {
        match self.recv.read_chunks(&mut self.slots).await {
            Ok(Some(n)) => {
                self.pending
                    .extend(self.slots[..n].iter_mut().map(std::mem::take));
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(ReadFailure::Broken(e.to_string())),
        }
    }
}
