//! The consumer's reading half of a transfer stream: frames off a quinn stream, each header
//! parsed by the protocol's one parser and bounded before its payload is read.

use mesh_protocol::transfer::{FRAME_HEADER_LEN, FrameKind};
use mesh_protocol::{Frame, FrameHeader};

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
    /// Stream offset of the next frame, for error messages.
    offset: u64,
}

impl FrameReader {
    pub(super) fn new(recv: quinn::RecvStream) -> Self {
        Self { recv, offset: 0 }
    }

    /// Reads one frame; a data frame's payload goes into `buffer` (cleared first), so the
    /// caller can hand back buffers for reuse.
    pub(super) async fn read(&mut self, buffer: Vec<u8>) -> Result<Incoming, ReadFailure> {
        let mut bytes = [0u8; FRAME_HEADER_LEN];
        self.recv
            .read_exact(&mut bytes)
            .await
            .map_err(|e| match e {
                quinn::ReadExactError::FinishedEarly(0) => {
                    ReadFailure::Broken("the provider ended the stream without a trailer".into())
                }
                other => ReadFailure::Broken(other.to_string()),
            })?;
        let header = FrameHeader::parse(bytes, self.offset)
            .map_err(|e| ReadFailure::Protocol(e.to_string()))?;
        // Take quinn's chunks as they come (no zero-filling of a buffer overwritten anyway).
        let mut payload = buffer;
        payload.clear();
        payload.reserve(header.len);
        while payload.len() < header.len {
            match self.recv.read_chunk(header.len - payload.len(), true).await {
                Ok(Some(chunk)) => payload.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    return Err(ReadFailure::Broken(
                        "the provider ended the stream inside a frame".into(),
                    ));
                }
                Err(e) => return Err(ReadFailure::Broken(e.to_string())),
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
}
