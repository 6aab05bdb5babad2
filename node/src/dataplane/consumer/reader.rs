//! The consumer's reading half of a transfer stream: frames off a quinn stream, each header
//! parsed by the protocol's one parser and bounded before its payload is read.
//!
//! quinn's chunks are taken many at a time (`read_chunks`): one lock of the connection per
//! batch instead of per packet. A reader that takes them one by one falls behind the
//! connection driver, and quinn then copies what waits in its reassembly buffer into fresh
//! buffers (`Assembler::defragment`), which cost the consumer about a sixth of its CPU.
//!
//! Every wait for the provider is bounded by [`Patience`]: a provider whose QUIC stack keeps
//! the connection alive but that sends nothing more ends the read as a broken (resumable)
//! transfer instead of holding the fetch, and the output's lock, forever.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Buf, Bytes};
use mesh_protocol::transfer::{FRAME_HEADER_LEN, FrameKind, MAX_STRIPES};
use mesh_protocol::{Frame, FrameHeader, Stripe};

use crate::dataplane::framepool::Buffer;
use crate::dataplane::{RESET_STALLED, appendfile, human};

/// Chunks taken from quinn at once.
const CHUNKS_PER_READ: usize = 32;

/// A data frame's payload (one encapsulated IPC message), placed in its buffer where the
/// file writer can write its whole blocks without copying them (see `appendfile`).
#[derive(Debug)]
pub(super) struct DataFrame {
    /// The buffer, with its share of the fetch's budget once the writer took the frame (a
    /// reused spare has one already).
    buffer: Buffer,
    /// Where the payload starts in `buffer`.
    lead: usize,
}

impl DataFrame {
    /// The buffer, for reuse.
    pub(super) fn into_buffer(self) -> Buffer {
        self.buffer
    }

    /// The buffer, to give it its share of the budget.
    pub(super) fn buffer_mut(&mut self) -> &mut Buffer {
        &mut self.buffer
    }
}

impl std::ops::Deref for DataFrame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer.bytes[self.lead..]
    }
}

/// One frame read from the provider.
pub(super) enum Incoming {
    /// A data frame.
    Data(DataFrame),
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

/// How long a reader waits for the provider's next bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Patience {
    /// No byte for this long ends the read as broken (see
    /// [`STALL_TIMEOUT`](crate::dataplane::STALL_TIMEOUT)).
    pub(super) stall: Duration,
    /// Added to `stall` until the first data frame has arrived. A resumed transfer's provider
    /// reads again the part this node already holds (to hash it, or to encode it again)
    /// before it sends the next frame, and sends nothing meanwhile.
    pub(super) first_frame: Duration,
}

/// The rate at which a provider is assumed, at the least, to read again the part of a
/// resumed transfer that the consumer holds (see [`Patience::first_frame`]): well under
/// what hashing or encoding a stored product runs at, so that a resume is not given up
/// while the provider works through a large prefix.
const RESCAN_BYTES_PER_S: u64 = 8 << 20;

impl Patience {
    /// The bounds of a transfer that resumes after `held` bytes of its stream.
    pub(super) fn resuming(stall: Duration, held: u64) -> Self {
        Self {
            stall,
            first_frame: Duration::from_secs(held / RESCAN_BYTES_PER_S),
        }
    }
}

/// Reads frames from the provider's side of the stream.
pub(super) struct FrameReader {
    recv: quinn::RecvStream,
    /// How long to wait for the provider's next bytes.
    patience: Patience,
    /// Whether a whole data frame has arrived (then `patience.first_frame` no longer applies).
    data_seen: bool,
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
    pub(super) fn new(recv: quinn::RecvStream, patience: Patience) -> Self {
        Self {
            recv,
            patience,
            data_seen: false,
            pending: VecDeque::new(),
            slots: vec![Bytes::new(); CHUNKS_PER_READ],
            offset: 0,
        }
    }

    /// Reads one frame; a data frame's payload goes into `buffer` (cleared first) if it has
    /// room, else into a new buffer, so the caller can hand back buffers for reuse.
    pub(super) async fn read(&mut self, buffer: Buffer) -> Result<Incoming, ReadFailure> {
        self.read_placed(buffer, None).await
    }

    /// Reads one frame like [`FrameReader::read`]; a data frame bound for file offset `at`
    /// is placed in its buffer at the alignment of that offset.
    async fn read_placed(
        &mut self,
        buffer: Buffer,
        at: Option<u64>,
    ) -> Result<Incoming, ReadFailure> {
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
        let at = at.filter(|_| header.kind == FrameKind::Data);
        let room = header.len + at.map_or(0, |_| appendfile::MAX_LEAD);
        let mut buffer = match header.kind {
            FrameKind::Data => buffer.fitting(room),
            _ => buffer,
        };
        let payload = &mut buffer.bytes;
        payload.clear();
        payload.reserve(room);
        let lead = at.map_or(0, |at| appendfile::lead_for(payload.as_ptr() as usize, at));
        payload.resize(lead, 0);
        let end = lead + header.len;
        while payload.len() < end {
            let n = self.take(end - payload.len(), |chunk| {
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
            self.data_seen = true;
            return Ok(Incoming::Data(DataFrame { buffer, lead }));
        }
        header
            .decode(&buffer.bytes[lead..])
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

    /// Waits for more of the stream; `false` when it ended. Nothing for the stall bound
    /// (see [`Patience`]) breaks the stream.
    async fn receive(&mut self) -> Result<bool, ReadFailure> {
        let bound = if self.data_seen {
            self.patience.stall
        } else {
            self.patience.stall + self.patience.first_frame
        };
        match tokio::time::timeout(bound, self.recv.read_chunks(&mut self.slots)).await {
            Ok(Ok(Some(n))) => {
                self.pending
                    .extend(self.slots[..n].iter_mut().map(std::mem::take));
                Ok(true)
            }
            Ok(Ok(None)) => Ok(false),
            Ok(Err(quinn::ReadError::Reset(code)))
                if code == quinn::VarInt::from_u32(RESET_STALLED) =>
            {
                Err(ReadFailure::Broken(
                    "the provider gave up: this node took nothing from it for too long (a stalled disk, or a reader of the stream that stopped)".into(),
                ))
            }
            Ok(Err(e)) => Err(ReadFailure::Broken(e.to_string())),
            Err(_) => Err(ReadFailure::Broken(format!(
                "the provider stopped sending: nothing arrived for {}",
                human(bound)
            ))),
        }
    }
}

/// The frames of a transfer striped over several streams (one per connection), read
/// round-robin in the stream's order: frame `i` from stripe `i % count` (see
/// [`Stripe`]). Each stripe's reader holds at most one batch of chunks; the rest waits in
/// that stream's receive window, which is what bounds the reordering.
pub(super) struct StripedReader {
    stripes: Vec<FrameReader>,
    /// Index of the next data frame of the whole stream.
    next: u64,
    /// File offset of the next data frame, once known (see [`StripedReader::place_from`]).
    at: Option<u64>,
}

impl StripedReader {
    /// Reads `stripes` (stripe `k` at index `k`) from data frame `resume_from` on.
    pub(super) fn new(stripes: Vec<FrameReader>, resume_from: u64) -> Self {
        debug_assert!(!stripes.is_empty() && stripes.len() <= usize::from(MAX_STRIPES));
        Self {
            stripes,
            next: resume_from,
            at: None,
        }
    }

    /// The next data frame goes to file offset `at`, and each one after it follows the last:
    /// frames are then placed for the file writer (see [`DataFrame`]).
    pub(super) fn place_from(&mut self, at: u64) {
        self.at = Some(at);
    }

    /// Reads the stream's next frame. The trailer is returned once every stripe ended with
    /// the same one; a stripe that goes on with data or ends otherwise is a protocol error.
    pub(super) async fn read(&mut self, buffer: Buffer) -> Result<Incoming, ReadFailure> {
        let count = self.stripes.len();
        let at = Stripe::carrying(count as u8, self.next);
        match self.stripes[at].read_placed(buffer, self.at).await? {
            Incoming::Data(frame) => {
                self.next += 1;
                self.at = self.at.map(|at| at + frame.len() as u64);
                Ok(Incoming::Data(frame))
            }
            Incoming::Control(Frame::Trailer(trailer)) => {
                for k in (1..count).map(|step| (at + step) % count) {
                    match self.stripes[k].read(Buffer::default()).await? {
                        Incoming::Control(Frame::Trailer(other)) if other == trailer => {}
                        Incoming::Control(Frame::Error(refusal)) => {
                            return Ok(Incoming::Control(Frame::Error(refusal)));
                        }
                        _ => {
                            return Err(ReadFailure::Protocol(format!(
                                "stripe {k} did not end where stripe {at} did, with the same trailer (after {} data frames)",
                                self.next
                            )));
                        }
                    }
                }
                Ok(Incoming::Control(Frame::Trailer(trailer)))
            }
            control => Ok(control),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use mesh_protocol::transfer::{FetchRefusal, MAX_DATA_FRAME};
    use mesh_protocol::{Identity, Refusal, encode_frame};

    use super::*;
    use crate::dataplane::tls;

    /// What a test keeps alive while it reads.
    struct Link {
        reader: Option<FrameReader>,
        connection: quinn::Connection,
        _client: quinn::Endpoint,
        server: tokio::task::JoinHandle<()>,
    }

    impl Link {
        fn reader(&mut self) -> &mut FrameReader {
            self.reader.as_mut().expect("the reader was not taken")
        }
    }

    /// A provider that answers the consumer's stream with `writes`, each written on its own
    /// (so frames straddle quinn's chunks), then finishes the stream.
    async fn provider_sending(writes: Vec<Vec<u8>>) -> Link {
        let patience = Patience::resuming(crate::dataplane::STALL_TIMEOUT, 0);
        provider_link(writes, true, patience).await
    }

    /// A provider that answers with `writes` and finishes the stream if `finish`, else
    /// keeps it open and sends nothing more; the reader waits with `patience`.
    async fn provider_link(writes: Vec<Vec<u8>>, finish: bool, patience: Patience) -> Link {
        let provider = Identity::from_secret_bytes([1; 32]);
        let consumer = Identity::from_secret_bytes([2; 32]);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server_config = tls::server_config(&provider, tls::Transport::streams(4)).unwrap();
        let server = tls::endpoint(any, Some(server_config)).unwrap();
        let addr = server.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let connection = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = connection.accept_bi().await.unwrap();
            let mut request = [0u8; 1];
            recv.read_exact(&mut request).await.unwrap();
            for bytes in writes {
                send.write_all(&bytes).await.unwrap();
            }
            if finish {
                send.finish().unwrap();
            }
            connection.closed().await;
        });
        let client = tls::endpoint(any, None).unwrap();
        let config = tls::client_config(
            &consumer,
            &provider.public_key(),
            tls::Transport::streams(4),
        )
        .unwrap();
        let connection = client
            .connect_with(config, addr, tls::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, recv) = connection.open_bi().await.unwrap();
        send.write_all(&[0]).await.unwrap();
        Link {
            reader: Some(FrameReader::new(recv, patience)),
            connection,
            _client: client,
            server,
        }
    }

    fn data_frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = mesh_protocol::encode_data_header(payload.len())
            .unwrap()
            .to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    fn broken(result: Result<Incoming, ReadFailure>) -> String {
        match result {
            Err(ReadFailure::Broken(reason)) => reason,
            Err(ReadFailure::Protocol(reason)) => panic!("a protocol error: {reason}"),
            Ok(_) => panic!("a frame where the stream had ended"),
        }
    }

    fn protocol_error(result: Result<Incoming, ReadFailure>) -> String {
        match result {
            Err(ReadFailure::Protocol(reason)) => reason,
            Err(ReadFailure::Broken(reason)) => panic!("a broken stream: {reason}"),
            Ok(_) => panic!("a frame from a malformed stream"),
        }
    }

    #[tokio::test]
    async fn frames_are_read_whole_however_the_stream_is_cut() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let small = b"a small frame".to_vec();
        let refusal = Refusal::new(FetchRefusal::Internal, "stopped");
        let control = encode_frame(&Frame::Error(refusal.clone())).unwrap();
        // A header cut after two bytes, a large payload in odd pieces, then a small frame
        // and a control frame in one write.
        let first = data_frame(&big);
        let mut writes = vec![first[..2].to_vec(), first[2..7].to_vec()];
        writes.extend(first[7..].chunks(77_777).map(<[u8]>::to_vec));
        writes.push([data_frame(&small), control].concat());
        let mut link = provider_sending(writes).await;

        let mut payloads = Vec::new();
        loop {
            match link.reader().read(Buffer::default()).await {
                Ok(Incoming::Data(payload)) => payloads.push(payload.to_vec()),
                Ok(Incoming::Control(Frame::Error(got))) => {
                    assert_eq!(got, refusal);
                    break;
                }
                Ok(Incoming::Control(other)) => panic!("unexpected {}", other.kind()),
                Err(_) => panic!("the stream failed"),
            }
        }
        assert_eq!(payloads, vec![big, small]);
        // Then the provider finished without a trailer.
        let reason = broken(link.reader().read(Buffer::default()).await);
        assert!(reason.contains("without a trailer"), "{reason}");
        // The provider wrote everything without failing.
        link.connection.close(0u32.into(), b"done");
        link.server.await.unwrap();
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_a_frame_is_broken_not_complete() {
        let frame = data_frame(&[7u8; 1000]);
        for cut in [2, 999] {
            let mut link = provider_sending(vec![frame[..cut].to_vec()]).await;
            let reason = broken(link.reader().read(Buffer::default()).await);
            assert!(reason.contains("inside a frame"), "cut at {cut}: {reason}");
        }
    }

    #[tokio::test]
    async fn a_provider_that_sends_nothing_more_breaks_the_read_after_the_stall_bound() {
        let patience = Patience {
            stall: Duration::from_millis(200),
            first_frame: Duration::from_millis(300),
        };
        // Before the first data frame the bound is the stall bound plus the allowance.
        let mut link = provider_link(vec![], false, patience).await;
        let reason = broken(link.reader().read(Buffer::default()).await);
        assert_eq!(
            reason,
            "the provider stopped sending: nothing arrived for 500 ms"
        );
        // After it, the stall bound alone, also in the middle of a frame.
        let frame = data_frame(&[7u8; 1000]);
        let writes = vec![frame.clone(), frame[..700].to_vec()];
        let mut link = provider_link(writes, false, patience).await;
        let Ok(Incoming::Data(payload)) = link.reader().read(Buffer::default()).await else {
            panic!("a data frame");
        };
        assert_eq!(&payload[..], &[7u8; 1000][..]);
        let reason = broken(link.reader().read(Buffer::default()).await);
        assert_eq!(
            reason,
            "the provider stopped sending: nothing arrived for 200 ms"
        );
        // A resumed transfer allows its provider time to read again what this node holds.
        let resumed = Patience::resuming(Duration::from_secs(60), 80 << 20);
        assert_eq!(resumed.first_frame, Duration::from_secs(10));
    }

    #[tokio::test]
    async fn an_oversized_or_unknown_frame_is_refused_before_its_payload() {
        // A data frame one byte over the limit, with no payload behind it: the header alone
        // is refused, nothing is allocated or awaited for the payload.
        let len = u32::try_from(MAX_DATA_FRAME + 1).unwrap().to_be_bytes();
        let oversized = vec![FrameKind::Data.tag(), len[0], len[1], len[2], len[3]];
        let mut link = provider_sending(vec![oversized]).await;
        let reason = protocol_error(link.reader().read(Buffer::default()).await);
        assert!(
            reason.contains("large") || reason.contains("limit"),
            "{reason}"
        );

        let mut link = provider_sending(vec![vec![0xee, 0, 0, 0, 1, 0]]).await;
        let reason = protocol_error(link.reader().read(Buffer::default()).await);
        assert!(
            reason.contains("tag") || reason.contains("0xee") || reason.contains("238"),
            "{reason}"
        );
    }

    /// A trailer signed by the test provider for `batches` frames.
    fn trailer(batches: u64) -> Vec<u8> {
        let trailer = mesh_protocol::TransferTrailer {
            agreement_id: mesh_protocol::contract::AgreementId([9; 32]),
            product: mesh_protocol::ProductId {
                owner: Identity::from_secret_bytes([1; 32]).public_key(),
                name: "orders".into(),
            },
            version: 1,
            rows: 10,
            batches,
            digest: [7; 32],
            resume_from_batch: 0,
        };
        let signed = mesh_protocol::Signed::sign(&Identity::from_secret_bytes([1; 32]), &trailer);
        encode_frame(&Frame::Trailer(signed)).unwrap()
    }

    /// Takes a link's reader, keeping the link (its connection and server) alive.
    fn take_reader(link: &mut Link) -> FrameReader {
        link.reader.take().expect("a reader")
    }

    #[tokio::test]
    async fn placed_frames_lie_at_the_alignment_of_their_file_offsets_in_reused_buffers() {
        let sizes = [100usize, 5000, 70_000, 3, 4096];
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, len)| (0..*len).map(|b| (b * 7 + i) as u8).collect())
            .collect();
        let mut stream: Vec<u8> = payloads.iter().flat_map(|p| data_frame(p)).collect();
        stream.extend(trailer(sizes.len() as u64));
        let mut link = provider_sending(vec![stream]).await;
        let mut reader = StripedReader::new(vec![take_reader(&mut link)], 0);
        let start = 64 + 4093; // after the file header and a resumed, unaligned prefix
        reader.place_from(start);
        let mut at = start;
        let mut spare = Buffer::default();
        for payload in &payloads {
            let Ok(Incoming::Data(frame)) = reader.read(spare).await else {
                panic!("a data frame");
            };
            assert_eq!(&frame[..], &payload[..], "the payload, whole");
            assert_eq!(
                frame.as_ptr() as u64 % 4096,
                at % 4096,
                "frame at offset {at}"
            );
            at += payload.len() as u64;
            // The next frame reuses this buffer, as the hasher hands it back.
            spare = frame.into_buffer();
        }
        assert!(matches!(
            reader.read(spare).await,
            Ok(Incoming::Control(Frame::Trailer(_)))
        ));
    }

    #[tokio::test]
    async fn stripes_are_read_round_robin_back_into_the_stream_order() {
        let f = |i: u8| data_frame(&[i; 10]);
        // Stripe 0 carries frames 0, 2 and 4; stripe 1 carries 1 and 3.
        let mut links = [
            provider_sending(vec![[f(0), f(2), f(4), trailer(5)].concat()]).await,
            provider_sending(vec![[f(1), f(3), trailer(5)].concat()]).await,
        ];
        let mut reader = StripedReader::new(links.iter_mut().map(take_reader).collect(), 0);
        let mut got = Vec::new();
        loop {
            match reader.read(Buffer::default()).await {
                Ok(Incoming::Data(payload)) => got.push(payload[0]),
                Ok(Incoming::Control(Frame::Trailer(t))) => {
                    assert_eq!(t.decode_trusted().unwrap().batches, 5);
                    break;
                }
                Ok(Incoming::Control(other)) => panic!("unexpected {}", other.kind()),
                Err(_) => panic!("the stripes failed"),
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_stripe_that_ends_elsewhere_or_with_another_trailer_is_refused() {
        let f = |i: u8| data_frame(&[i; 10]);
        let cases = [
            // Stripe 1 ends after frame 1 with a trailer for 3 frames; stripe 0 sends 2 and 4.
            (
                vec![[f(0), f(2), f(4), trailer(5)].concat()],
                vec![[f(1), trailer(3)].concat()],
            ),
            // Both claim 3 frames, but stripe 0 goes on with one more.
            (
                vec![[f(0), f(2), f(4), trailer(3)].concat()],
                vec![[f(1), trailer(3)].concat()],
            ),
            // Same place, different trailers.
            (
                vec![[f(0), trailer(2)].concat()],
                vec![[f(1), trailer(3)].concat()],
            ),
        ];
        for (case, (zero, one)) in cases.into_iter().enumerate() {
            let mut links = [provider_sending(zero).await, provider_sending(one).await];
            let mut reader = StripedReader::new(links.iter_mut().map(take_reader).collect(), 0);
            let failure = loop {
                match reader.read(Buffer::default()).await {
                    Ok(Incoming::Data(_)) => {}
                    Ok(Incoming::Control(Frame::Trailer(_))) => panic!("case {case}: accepted"),
                    Ok(Incoming::Control(other)) => panic!("unexpected {}", other.kind()),
                    Err(e) => break e,
                }
            };
            let reason = protocol_error(Err(failure));
            assert!(reason.contains("same trailer"), "case {case}: {reason}");
        }
    }
}
