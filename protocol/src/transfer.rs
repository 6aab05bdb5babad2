//! Data-plane framing: what travels on one QUIC bidirectional stream of `meshnode-data/3`.
//!
//! The consumer sends one [`Frame::Request`]. The provider answers with either
//! [`Frame::Error`], or [`Frame::Header`], any number of [`Frame::Data`] and a
//! [`Frame::Trailer`] signed by the provider.
//!
//! Every frame is `tag (1 byte) || length (u32, big-endian) || payload`. Control frames carry a
//! postcard encoding and are at most [`MAX_CONTROL_FRAME`] bytes; a data frame carries one
//! opaque chunk of the Arrow IPC stream (one encapsulated message: the schema, a dictionary
//! batch or a record batch) and is at most [`MAX_DATA_FRAME`] bytes. The concatenation of all
//! data payloads from batch 0 is exactly the Arrow IPC stream the consumer writes to disk.
//!
//! "Batch" in this module means one data frame. A resumed fetch skips the first
//! `resume_from_batch` data frames; the trailer still counts and hashes from batch 0, so the
//! provider re-hashes the skipped frames and the consumer hashes the prefix it already holds.
//!
//! [`FrameDecoder`] is an incremental, I/O-free decoder in the style of arrow-ipc's
//! `StreamDecoder`: push bytes in, pull frames out, [`FrameDecoder::finish`] at end of stream.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::contract::{Agreement, AgreementId, ContractTerms};
use crate::descriptor::{ColumnSchema, ProductId};
use crate::envelope::{EnvelopeError, Signable, Signed};
use crate::identity::PublicKey;

/// ALPN of the data-plane QUIC endpoint. Version 2: a fetch request may narrow the columns and
/// rows it asks for ([`FetchRequest::narrowing`]), which version 1 peers cannot decode.
pub const DATA_ALPN: &[u8] = b"meshnode-data/3";
/// Bytes before each payload: tag and length.
pub const FRAME_HEADER_LEN: usize = 5;
/// Largest data frame payload.
pub const MAX_DATA_FRAME: usize = 64 * 1024 * 1024;
/// Largest control frame payload (request, header, trailer, error).
pub const MAX_CONTROL_FRAME: usize = 1024 * 1024;
/// Largest encoded [`TransferTrailer`] body.
pub const MAX_TRAILER_BYTES: usize = 1024;

/// The kinds of frame, with their wire tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Consumer → provider: [`FetchRequest`]. Tag 1.
    Request,
    /// Provider → consumer: [`TransferHeader`]. Tag 2.
    Header,
    /// Provider → consumer: one chunk of the Arrow IPC stream. Tag 3.
    Data,
    /// Provider → consumer: the signed [`TransferTrailer`]. Tag 4.
    Trailer,
    /// Provider → consumer: the fetch failed ([`Refusal`]). Tag 5.
    Error,
}

impl FrameKind {
    /// Every kind.
    pub const ALL: [FrameKind; 5] = [
        FrameKind::Request,
        FrameKind::Header,
        FrameKind::Data,
        FrameKind::Trailer,
        FrameKind::Error,
    ];

    /// The wire tag.
    pub fn tag(self) -> u8 {
        match self {
            FrameKind::Request => 1,
            FrameKind::Header => 2,
            FrameKind::Data => 3,
            FrameKind::Trailer => 4,
            FrameKind::Error => 5,
        }
    }

    /// The kind of a wire tag.
    pub fn from_tag(tag: u8) -> Option<Self> {
        FrameKind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    /// Largest payload of this kind.
    pub fn max_len(self) -> usize {
        match self {
            FrameKind::Data => MAX_DATA_FRAME,
            _ => MAX_CONTROL_FRAME,
        }
    }

    /// Lowercase name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Request => "request",
            FrameKind::Header => "header",
            FrameKind::Data => "data",
            FrameKind::Trailer => "trailer",
            FrameKind::Error => "error",
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Arrow IPC body compression the consumer asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed buffers.
    #[default]
    None,
    /// LZ4 frame compression.
    Lz4,
    /// Zstandard compression.
    Zstd,
}

/// Most connections one fetch may be striped over. Each stripe is a transfer of its own at
/// the provider (it takes one of the consumer's `max_transfers_per_peer`).
pub const MAX_STRIPES: u8 = 8;

/// The share of a transfer's data frames one stream carries: frame `i` (counted from frame
/// 0 of the whole stream, the schema) travels on stripe `i % count`. Every stripe is a
/// complete transfer (header, its frames, the same signed trailer) on its own connection,
/// so that a window or a loss on one path holds back only a share of the data; the
/// consumer reads them round-robin, which restores the stream's order without a reorder
/// buffer beyond the streams' own receive windows.
///
/// Only valid stripes deserialise: `1 <= count <= MAX_STRIPES` and `index < count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "(u8, u8)", into = "(u8, u8)")]
pub struct Stripe {
    count: u8,
    index: u8,
}

impl Stripe {
    /// The whole stream on one connection.
    pub const WHOLE: Stripe = Stripe { count: 1, index: 0 };

    /// Stripe `index` of `count`, if valid.
    pub fn new(count: u8, index: u8) -> Option<Self> {
        ((1..=MAX_STRIPES).contains(&count) && index < count).then_some(Self { count, index })
    }

    /// How many stripes the stream is cut into.
    pub fn count(self) -> u8 {
        self.count
    }

    /// Which of them this is.
    pub fn index(self) -> u8 {
        self.index
    }

    /// Whether this stripe carries data frame `frame`.
    pub fn carries(self, frame: u64) -> bool {
        frame % u64::from(self.count) == u64::from(self.index)
    }

    /// The stripe of `count` that carries `frame`: the stream a consumer reads it from.
    pub fn carrying(count: u8, frame: u64) -> usize {
        (frame % u64::from(count.max(1))) as usize
    }

    /// What a provider sends on the stream that asked for this stripe: the stripe itself
    /// when it sends the stored messages as they are (`as_stored`); otherwise everything,
    /// on the first stripe's stream, since every stripe would have to re-encode the whole
    /// product to sign its digest. `None` for another stripe of a fetch that is not striped,
    /// which the provider refuses (a consumer asks for it only after the first stream's
    /// header said the fetch is striped).
    pub fn served(self, as_stored: bool) -> Option<Stripe> {
        match (as_stored, self.index) {
            (true, _) => Some(self),
            (false, 0) => Some(Stripe::WHOLE),
            (false, _) => None,
        }
    }

    /// Whether a fetch under `terms` asking for `narrowing` and `compression` may be
    /// striped: only a stream sent as stored can be, so not a narrowed, filtered or
    /// compressed one. (The provider also needs every column granted, which it decides
    /// against the file; the consumer opens its connections on this answer.)
    pub fn may_stripe(
        terms: &ContractTerms,
        narrowing: Option<&Narrowing>,
        compression: Compression,
    ) -> bool {
        narrowing.is_none() && compression == Compression::None && terms.filter.is_none()
    }
}

impl Default for Stripe {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl TryFrom<(u8, u8)> for Stripe {
    type Error = String;
    fn try_from((count, index): (u8, u8)) -> Result<Self, String> {
        Stripe::new(count, index).ok_or_else(|| {
            format!("stripe {index} of {count} is invalid (at most {MAX_STRIPES} stripes)")
        })
    }
}

impl From<Stripe> for (u8, u8) {
    fn from(s: Stripe) -> Self {
        (s.count, s.index)
    }
}

/// Consumer → provider: fetch a product under an agreement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The co-signed agreement that allows the fetch.
    pub agreement: Agreement,
    /// The product wanted; must be the agreement's.
    pub product: ProductId,
    /// The version wanted; `None` for the latest the agreement covers.
    pub version: Option<u64>,
    /// Data frames the consumer already holds from an interrupted fetch; 0 for a new one.
    pub resume_from_batch: u64,
    /// IPC compression wanted.
    pub compression: Compression,
    /// Fewer columns or rows than the agreement grants; `None` for everything it grants.
    /// The provider intersects it with the agreement ([`narrow_fetch`]), never widens.
    pub narrowing: Option<Narrowing>,
    /// The share of the data frames wanted on this stream ([`Stripe::WHOLE`] for all).
    pub stripe: Stripe,
}

/// Most columns a [`Narrowing`] may name (a product has at most this many).
pub const MAX_NARROWING_COLUMNS: usize = crate::descriptor::MAX_COLUMNS;

/// What a consumer asks on top of an agreement to receive less: a subset of the granted
/// columns and an extra row filter. Used by queries that need only part of a product.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Narrowing {
    /// Columns wanted, each one the agreement grants; `None` for all granted columns.
    /// The stream keeps the file's column order whatever the order here.
    pub columns: Option<Vec<String>>,
    /// A row filter in the filter language, applied together with (AND) the agreement's;
    /// it may read only granted columns.
    pub filter: Option<String>,
}

/// What the provider serves for one fetch once agreement and narrowing are intersected.
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    /// Columns sent, in the product's column order: granted ∩ requested.
    pub columns: Vec<ColumnSchema>,
    /// Rows sent: the agreement's filter AND the request's, `None` when neither has one.
    pub filter: Option<crate::filter::Filter>,
    /// Whether the request narrowed anything (then the stream is always re-encoded).
    pub narrowed: bool,
}

/// The provider's decision on what a fetch under `terms` sends from a version whose columns
/// are `schema`, with the product policy's `restricted` columns and the consumer's optional
/// `narrowing`. Never wider than the agreement: a requested column the agreement does not
/// grant, or a request filter that reads a column outside the granted set (it would reveal
/// values of that column through which rows come back), is refused, not dropped.
pub fn narrow_fetch(
    terms: &ContractTerms,
    schema: &[ColumnSchema],
    restricted: &[String],
    narrowing: Option<&Narrowing>,
) -> Result<Served, Refusal> {
    use FetchRefusal as R;
    let id = terms.id().short();
    let granted_names = terms.granted_columns(schema, restricted);
    let granted: Vec<ColumnSchema> = schema
        .iter()
        .filter(|c| granted_names.contains(&c.name))
        .cloned()
        .collect();
    if granted.is_empty() {
        return Err(Refusal::new(
            R::NotCovered,
            format!("agreement {id} grants no column of this version"),
        ));
    }
    let agreement_filter = terms.parsed_filter().map_err(|e| {
        Refusal::new(
            R::NotCovered,
            format!("the filter of agreement {id} is invalid: {e}"),
        )
    })?;
    if let Some(f) = &agreement_filter {
        if let Some(c) = f.columns().find(|c| restricted.iter().any(|r| r == c)) {
            return Err(Refusal::new(
                R::NotCovered,
                format!("agreement {id} filters on restricted column `{c}`"),
            ));
        }
        f.check(schema).map_err(|e| {
            Refusal::new(
                R::NotCovered,
                format!("the filter of agreement {id} does not fit this version: {e}"),
            )
        })?;
    }
    let granted_list = || {
        granted
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(narrowing) = narrowing else {
        return Ok(Served {
            columns: granted,
            filter: agreement_filter,
            narrowed: false,
        });
    };
    let mut columns = granted.clone();
    if let Some(wanted) = &narrowing.columns {
        if wanted.len() > MAX_NARROWING_COLUMNS {
            return Err(Refusal::new(
                R::NotCovered,
                format!(
                    "the request names {} columns, more than the limit of {MAX_NARROWING_COLUMNS}",
                    wanted.len()
                ),
            ));
        }
        if wanted.is_empty() {
            return Err(Refusal::new(
                R::NotCovered,
                "the request asks for no column: name at least one, or none to get all granted"
                    .to_owned(),
            ));
        }
        if let Some(c) = wanted.iter().find(|w| !granted_names.contains(w)) {
            return Err(Refusal::new(
                R::NotCovered,
                format!(
                    "column `{c}` is not granted by agreement {id}; granted: {}",
                    granted_list()
                ),
            ));
        }
        columns.retain(|c| wanted.contains(&c.name));
    }
    let filter = match &narrowing.filter {
        None => agreement_filter,
        Some(text) => {
            let extra = crate::filter::Filter::parse(text).map_err(|e| {
                Refusal::new(
                    R::NotCovered,
                    format!("the request's filter is invalid: {e}"),
                )
            })?;
            if let Some(c) = extra
                .columns()
                .find(|c| !granted_names.iter().any(|g| g == c))
            {
                return Err(Refusal::new(
                    R::NotCovered,
                    format!(
                        "the request's filter reads column `{c}`, which agreement {id} does not grant; granted: {}",
                        granted_list()
                    ),
                ));
            }
            extra.check(&granted).map_err(|e| {
                Refusal::new(
                    R::NotCovered,
                    format!("the request's filter does not fit the data: {e}"),
                )
            })?;
            Some(match agreement_filter {
                Some(a) => a.and(extra),
                None => extra,
            })
        }
    };
    Ok(Served {
        columns,
        filter,
        narrowed: true,
    })
}

/// Provider → consumer: what follows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferHeader {
    /// The agreement served.
    pub agreement_id: AgreementId,
    /// The version served (the latest covered when the request said `None`).
    pub version: u64,
    /// The granted columns, in stream order.
    pub schema: Vec<ColumnSchema>,
    /// Data frames in the whole stream from batch 0, if the provider knows in advance.
    pub total_batches_hint: Option<u64>,
    /// First data frame that follows (the request's `resume_from_batch`).
    pub resume_from_batch: u64,
    /// IPC compression used.
    pub compression: Compression,
    /// The data frames this stream carries: the request's stripe when the provider stripes
    /// the fetch, [`Stripe::WHOLE`] when it sends everything on the first stripe's stream
    /// (a fetch it re-encodes is never striped: each stripe would encode the whole product
    /// to sign its digest).
    pub stripe: Stripe,
}

/// What the provider attests it sent, signed by the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferTrailer {
    /// The agreement served.
    pub agreement_id: AgreementId,
    /// The product served.
    pub product: ProductId,
    /// The version served.
    pub version: u64,
    /// Rows in the whole stream from batch 0.
    pub rows: u64,
    /// Data frames in the whole stream from batch 0.
    pub batches: u64,
    /// BLAKE3 of all data payloads concatenated, from batch 0.
    pub digest: [u8; 32],
    /// First data frame sent on this stream.
    pub resume_from_batch: u64,
}

impl Signable for TransferTrailer {
    const CONTEXT: &'static str = "meshnode/transfer-trailer/v1";
    const MAX_BODY: usize = MAX_TRAILER_BYTES;
}

/// Why the provider did not serve a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchRefusal {
    /// The agreement does not verify or is not with this provider.
    NoAgreement,
    /// The agreement was revoked.
    Revoked,
    /// The agreement has expired.
    Expired,
    /// The TLS peer is not the agreement's consumer.
    WrongConsumer,
    /// The request asks for something the agreement does not cover (product, version, time).
    NotCovered,
    /// The provider does not serve this product.
    UnknownProduct,
    /// The provider does not hold this version.
    UnknownVersion,
    /// Too many transfers at once; retry later.
    Busy,
    /// The provider failed (disk, encoding).
    Internal,
}

impl FetchRefusal {
    /// Label for metrics, JSON and messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            FetchRefusal::NoAgreement => "no_agreement",
            FetchRefusal::Revoked => "revoked",
            FetchRefusal::Expired => "expired",
            FetchRefusal::WrongConsumer => "wrong_consumer",
            FetchRefusal::NotCovered => "not_covered",
            FetchRefusal::UnknownProduct => "unknown_product",
            FetchRefusal::UnknownVersion => "unknown_version",
            FetchRefusal::Busy => "busy",
            FetchRefusal::Internal => "internal",
        }
    }
}

impl fmt::Display for FetchRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Payload of [`Frame::Error`]: a code for programs and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// What went wrong.
    pub code: FetchRefusal,
    /// Details for the consumer's operator.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: FetchRefusal, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// One frame on a data stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Consumer → provider.
    Request(Box<FetchRequest>),
    /// Provider → consumer, first.
    Header(TransferHeader),
    /// Provider → consumer: one Arrow IPC message, opaque here.
    Data(Vec<u8>),
    /// Provider → consumer, last on success.
    Trailer(Signed<TransferTrailer>),
    /// Provider → consumer, last on failure.
    Error(Refusal),
}

impl Frame {
    /// The kind of this frame.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Request(_) => FrameKind::Request,
            Frame::Header(_) => FrameKind::Header,
            Frame::Data(_) => FrameKind::Data,
            Frame::Trailer(_) => FrameKind::Trailer,
            Frame::Error(_) => FrameKind::Error,
        }
    }
}

/// Why bytes are not a valid frame sequence, or a frame cannot be encoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The tag byte names no frame kind.
    #[error("unknown frame tag {tag:#04x} at byte {offset}")]
    UnknownTag {
        /// The tag.
        tag: u8,
        /// Stream offset of the tag byte.
        offset: u64,
    },
    /// The length exceeds the limit for the kind (checked before any payload is buffered).
    #[error("{kind} frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame kind.
        kind: FrameKind,
        /// The announced or actual length.
        len: u64,
        /// The limit for the kind.
        max: usize,
    },
    /// A control payload does not decode.
    #[error("malformed {kind} frame: {error}")]
    Malformed {
        /// The frame kind.
        kind: FrameKind,
        /// The decoding failure.
        error: DecodeError,
    },
    /// The stream ended inside a frame, or with frames not yet taken.
    #[error("the stream ended inside a frame ({buffered} bytes left over)")]
    Incomplete {
        /// Bytes received but not decoded.
        buffered: usize,
    },
    /// A previous call failed; the stream cannot be resynchronised.
    #[error("the frame decoder already failed")]
    Poisoned,
}

/// The 5-byte header of a frame: its kind and payload length, checked against the kind's
/// limit. The one parser of frame headers: [`FrameDecoder`] and the stream readers of both
/// sides use it, so a length is refused before any payload byte is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame kind.
    pub kind: FrameKind,
    /// Payload bytes that follow the header (at most `kind.max_len()`).
    pub len: usize,
}

impl FrameHeader {
    /// A header for `len` payload bytes of `kind`; fails over the kind's limit.
    pub fn new(kind: FrameKind, len: usize) -> Result<Self, FrameError> {
        if len > kind.max_len() {
            return Err(FrameError::TooLarge {
                kind,
                len: len as u64,
                max: kind.max_len(),
            });
        }
        Ok(Self { kind, len })
    }

    /// Parses the header at stream offset `offset` (used in error messages).
    pub fn parse(bytes: [u8; FRAME_HEADER_LEN], offset: u64) -> Result<Self, FrameError> {
        let kind = Self::kind_of(bytes[0], offset)?;
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        Self::new(kind, len as usize)
    }

    /// The kind named by a tag byte: checked as soon as the first byte arrives.
    fn kind_of(tag: u8, offset: u64) -> Result<FrameKind, FrameError> {
        FrameKind::from_tag(tag).ok_or(FrameError::UnknownTag { tag, offset })
    }

    /// The header's bytes.
    pub fn encode(self) -> [u8; FRAME_HEADER_LEN] {
        // `new` bounds `len` by max_len() < u32::MAX, so the cast is exact.
        let len = (self.len as u32).to_be_bytes();
        [self.kind.tag(), len[0], len[1], len[2], len[3]]
    }

    /// Decodes the payload that followed this header into a frame (a data payload is
    /// copied; readers that keep data frames as buffers take them before calling this).
    pub fn decode(self, payload: &[u8]) -> Result<Frame, FrameError> {
        if payload.len() != self.len {
            return Err(FrameError::Incomplete {
                buffered: payload.len(),
            });
        }
        decode_payload(self.kind, payload)
    }
}

/// The 5-byte header of a frame.
fn frame_header(kind: FrameKind, len: usize) -> Result<[u8; FRAME_HEADER_LEN], FrameError> {
    FrameHeader::new(kind, len).map(FrameHeader::encode)
}

/// The header of a data frame of `len` payload bytes: write it, then the payload slice, with
/// no copy of the payload.
pub fn encode_data_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], FrameError> {
    frame_header(FrameKind::Data, len)
}

/// Encodes a whole frame. Fails only when the payload exceeds the kind's limit.
pub fn encode_frame(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let encoded;
    let payload: &[u8] = match frame {
        Frame::Data(bytes) => bytes,
        Frame::Request(r) => {
            encoded = codec::encode(r.as_ref());
            &encoded
        }
        Frame::Header(h) => {
            encoded = codec::encode(h);
            &encoded
        }
        Frame::Trailer(t) => {
            encoded = codec::encode(t);
            &encoded
        }
        Frame::Error(e) => {
            encoded = codec::encode(e);
            &encoded
        }
    };
    let header = frame_header(frame.kind(), payload.len())?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(out)
}

fn decode_payload(kind: FrameKind, payload: &[u8]) -> Result<Frame, FrameError> {
    let malformed = |error| FrameError::Malformed { kind, error };
    Ok(match kind {
        FrameKind::Data => Frame::Data(payload.to_vec()),
        FrameKind::Request => Frame::Request(Box::new(
            codec::decode(payload, MAX_CONTROL_FRAME).map_err(malformed)?,
        )),
        FrameKind::Header => {
            Frame::Header(codec::decode(payload, MAX_CONTROL_FRAME).map_err(malformed)?)
        }
        FrameKind::Trailer => Frame::Trailer(
            codec::decode(payload, Signed::<TransferTrailer>::max_encoded_len())
                .map_err(malformed)?,
        ),
        FrameKind::Error => {
            Frame::Error(codec::decode(payload, MAX_CONTROL_FRAME).map_err(malformed)?)
        }
    })
}

/// Incremental frame decoder: [`push`](FrameDecoder::push) what the stream delivered, then
/// call [`next_frame`](FrameDecoder::next_frame) until it returns `Ok(None)`.
///
/// Memory: the decoder holds what was pushed and not yet decoded. A frame's length is checked
/// against its limit as soon as its 5-byte header has arrived, so a peer cannot make the
/// decoder wait for (and the shell buffer) more than the limit; the shell should push at most
/// one read's worth before pulling frames. Any error poisons the decoder.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Received bytes; `buf[start..]` is not decoded yet.
    buf: Vec<u8>,
    /// Offset in `buf` of the first undecoded byte.
    start: usize,
    /// Stream offset of `buf[start]`, for error messages.
    offset: u64,
    /// Set by the first error.
    failed: bool,
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, input: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(input);
    }

    /// Bytes pushed and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes still needed to complete the frame being received (at least 1 when idle), so
    /// the shell can size its next read.
    pub fn bytes_needed(&self) -> usize {
        let avail = &self.buf[self.start..];
        if avail.len() < FRAME_HEADER_LEN {
            return FRAME_HEADER_LEN - avail.len();
        }
        let len = u32::from_be_bytes([avail[1], avail[2], avail[3], avail[4]]) as usize;
        (FRAME_HEADER_LEN + len).saturating_sub(avail.len()).max(1)
    }

    /// The next complete frame, `Ok(None)` when more input is needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.failed {
            return Err(FrameError::Poisoned);
        }
        let result = self.decode_next();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn decode_next(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.start..];
        let Some(&tag) = avail.first() else {
            return Ok(None);
        };
        FrameHeader::kind_of(tag, self.offset)?;
        let Some(&bytes) = avail.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let header = FrameHeader::parse(bytes, self.offset)?;
        let total = FRAME_HEADER_LEN + header.len;
        if avail.len() < total {
            return Ok(None);
        }
        let frame = decode_payload(header.kind, &avail[FRAME_HEADER_LEN..total])?;
        self.start += total;
        self.offset += total as u64;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// Ends the stream: fails if bytes are left over (a truncated frame, or frames not taken).
    pub fn finish(self) -> Result<(), FrameError> {
        if self.failed {
            return Err(FrameError::Poisoned);
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Incomplete { buffered }),
        }
    }
}

/// Running count and hash of data frames, on both sides: the provider builds its trailer from
/// it, the consumer builds the [`ExpectedTrailer`] it checks the provider's against.
#[derive(Clone, Debug, Default)]
pub struct TransferTally {
    /// BLAKE3 over data payloads so far.
    hasher: blake3::Hasher,
    /// Data frames counted.
    batches: u64,
    /// Rows counted.
    rows: u64,
}

impl TransferTally {
    /// An empty tally (batch 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes payload bytes (in any chunking: hashing is over the concatenation).
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Counts `batches` data frames holding `rows` rows, whose bytes were given to `update`.
    pub fn count(&mut self, batches: u64, rows: u64) {
        self.batches += batches;
        self.rows += rows;
    }

    /// Hashes and counts one data frame.
    pub fn add_batch(&mut self, payload: &[u8], rows: u64) {
        self.update(payload);
        self.count(1, rows);
    }

    /// Data frames counted.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Rows counted.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// BLAKE3 of the payloads so far.
    pub fn digest(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }

    /// What was counted and hashed, from batch 0.
    pub fn summary(&self) -> StreamSummary {
        StreamSummary {
            batches: self.batches,
            rows: self.rows,
            digest: self.digest(),
        }
    }

    /// The provider's trailer for what was counted.
    pub fn trailer(
        &self,
        agreement_id: AgreementId,
        product: ProductId,
        version: u64,
        resume_from_batch: u64,
    ) -> TransferTrailer {
        self.summary()
            .trailer(agreement_id, product, version, resume_from_batch)
    }

    /// The consumer's expectation for what was counted (rows included; set `rows` to `None`
    /// if the consumer did not count them).
    pub fn expected(
        &self,
        agreement_id: AgreementId,
        product: ProductId,
        version: u64,
        resume_from_batch: u64,
    ) -> ExpectedTrailer {
        ExpectedTrailer {
            agreement_id,
            product,
            version,
            rows: Some(self.rows),
            batches: self.batches,
            digest: self.digest(),
            resume_from_batch,
        }
    }
}

/// The counts and digest of a whole data stream. A provider that serves the same stored
/// stream again (a whole product, sent as stored) can keep this from the first time and
/// sign it without hashing the bytes again: the consumer hashes what it receives either
/// way, so a summary that no longer matches the file fails the transfer, never passes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    /// Data frames from batch 0.
    pub batches: u64,
    /// Rows from batch 0.
    pub rows: u64,
    /// BLAKE3 of the data payloads from batch 0.
    pub digest: [u8; 32],
}

impl StreamSummary {
    /// The provider's trailer for this stream.
    pub fn trailer(
        &self,
        agreement_id: AgreementId,
        product: ProductId,
        version: u64,
        resume_from_batch: u64,
    ) -> TransferTrailer {
        TransferTrailer {
            agreement_id,
            product,
            version,
            rows: self.rows,
            batches: self.batches,
            digest: self.digest,
            resume_from_batch,
        }
    }
}

/// What the consumer counted and hashed, to check the trailer against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedTrailer {
    /// The agreement fetched under.
    pub agreement_id: AgreementId,
    /// The product requested.
    pub product: ProductId,
    /// The version the header announced.
    pub version: u64,
    /// Rows counted from batch 0, if the consumer counted them.
    pub rows: Option<u64>,
    /// Data frames held from batch 0.
    pub batches: u64,
    /// BLAKE3 of the data held, from batch 0.
    pub digest: [u8; 32],
    /// The `resume_from_batch` the consumer asked for.
    pub resume_from_batch: u64,
}

/// Why a trailer is not accepted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrailerError {
    /// The envelope does not decode or its signature does not verify.
    #[error("invalid trailer: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Signed by a key other than the provider's.
    #[error("the trailer was signed by {actual}, not the provider {expected}")]
    WrongSigner {
        /// The provider's key.
        expected: PublicKey,
        /// The signer.
        actual: PublicKey,
    },
    /// A field differs from what the consumer counted.
    #[error("the trailer says {field} = {claimed}, but the consumer has {counted}")]
    Mismatch {
        /// The field name.
        field: &'static str,
        /// The provider's value.
        claimed: String,
        /// The consumer's value.
        counted: String,
    },
}

/// Checks the provider's trailer: signature by `provider`, every field equal to what the
/// consumer counted. Returns the trailer for the transfer receipt.
pub fn verify_trailer(
    trailer: &Signed<TransferTrailer>,
    provider: &PublicKey,
    expected: &ExpectedTrailer,
) -> Result<TransferTrailer, TrailerError> {
    if trailer.signer() != *provider {
        return Err(TrailerError::WrongSigner {
            expected: *provider,
            actual: trailer.signer(),
        });
    }
    let t = trailer.verify()?;
    let mismatch = |field, claimed: String, counted: String| {
        Err(TrailerError::Mismatch {
            field,
            claimed,
            counted,
        })
    };
    if t.agreement_id != expected.agreement_id {
        return mismatch(
            "agreement_id",
            t.agreement_id.to_hex(),
            expected.agreement_id.to_hex(),
        );
    }
    if t.product != expected.product {
        return mismatch(
            "product",
            t.product.storage_key(),
            expected.product.storage_key(),
        );
    }
    if t.version != expected.version {
        return mismatch(
            "version",
            t.version.to_string(),
            expected.version.to_string(),
        );
    }
    if t.resume_from_batch != expected.resume_from_batch {
        return mismatch(
            "resume_from_batch",
            t.resume_from_batch.to_string(),
            expected.resume_from_batch.to_string(),
        );
    }
    if t.batches != expected.batches {
        return mismatch(
            "batches",
            t.batches.to_string(),
            expected.batches.to_string(),
        );
    }
    if let Some(rows) = expected.rows
        && t.rows != rows
    {
        return mismatch("rows", t.rows.to_string(), rows.to_string());
    }
    if t.digest != expected.digest {
        return mismatch(
            "digest",
            hex::encode(t.digest),
            hex::encode(expected.digest),
        );
    }
    Ok(t)
}

/// The provider's checks of a fetch that need no store: the agreement verifies and is with
/// `provider`, the TLS peer is its consumer, the product and the version (if named) are
/// covered, and `now_ms` is in the validity window widened by the tolerated clock skew
/// `skew_ms`. The node then checks revocation and that it holds the product and version. On
/// refusal, send `Frame::Error(refusal)`.
pub fn authorize_fetch(
    request: &FetchRequest,
    provider: &PublicKey,
    peer: &PublicKey,
    now_ms: u64,
    skew_ms: u64,
) -> Result<ContractTerms, Refusal> {
    use FetchRefusal as R;
    let terms = request
        .agreement
        .verify()
        .map_err(|e| Refusal::new(R::NoAgreement, format!("the agreement is invalid: {e}")))?;
    let id = request.agreement.id().short();
    if terms.provider != *provider {
        return Err(Refusal::new(
            R::NoAgreement,
            format!(
                "agreement {id} is with provider {}, not this node",
                terms.provider
            ),
        ));
    }
    if terms.consumer != *peer {
        return Err(Refusal::new(
            R::WrongConsumer,
            format!(
                "agreement {id} is for consumer {}, but the connection is from {peer}",
                terms.consumer
            ),
        ));
    }
    if request.product != terms.product {
        return Err(Refusal::new(
            R::NotCovered,
            format!(
                "agreement {id} covers {}, not {}",
                terms.product.name, request.product.name
            ),
        ));
    }
    if now_ms.saturating_add(skew_ms) < terms.valid_from_ms {
        return Err(Refusal::new(
            R::NotCovered,
            format!(
                "agreement {id} is valid from {} (now {now_ms})",
                terms.valid_from_ms
            ),
        ));
    }
    if now_ms >= terms.valid_until_ms.saturating_add(skew_ms) {
        return Err(Refusal::new(
            R::Expired,
            format!("agreement {id} expired at {}", terms.valid_until_ms),
        ));
    }
    if let Some(version) = request.version
        && !terms.covers_version(version)
    {
        let max = terms
            .max_version
            .map_or_else(|| "latest".to_owned(), |m| m.to_string());
        return Err(Refusal::new(
            R::NotCovered,
            format!(
                "agreement {id} covers versions {}..={max}, not {version}",
                terms.min_version
            ),
        ));
    }
    Ok(terms)
}

/// The agreement a running transfer was authorized under, checked again before every data
/// frame it sends: a transfer ends at its next frame once its agreement is revoked or its
/// validity ends (with the same clock-skew tolerance as [`authorize_fetch`]), however slowly
/// its consumer reads. A transfer authorized a second before expiry would otherwise go on
/// for as long as its consumer kept it open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningAgreement {
    id: AgreementId,
    valid_until_ms: u64,
    skew_ms: u64,
}

impl RunningAgreement {
    /// The agreement `id` with `terms`, under a tolerated clock skew of `skew_ms`.
    pub fn new(id: AgreementId, terms: &ContractTerms, skew_ms: u64) -> Self {
        Self {
            id,
            valid_until_ms: terms.valid_until_ms,
            skew_ms,
        }
    }

    /// The agreement's id.
    pub fn id(&self) -> &AgreementId {
        &self.id
    }

    /// Whether the transfer may send another frame at `now_ms`, given whether a revocation of
    /// the agreement is recorded: the refusal to end the transfer with if not.
    pub fn check(&self, now_ms: u64, revoked: bool) -> Result<(), Refusal> {
        let id = self.id.short();
        if revoked {
            return Err(Refusal::new(
                FetchRefusal::Revoked,
                format!("agreement {id} was revoked while this transfer ran"),
            ));
        }
        if now_ms >= self.valid_until_ms.saturating_add(self.skew_ms) {
            return Err(Refusal::new(
                FetchRefusal::Expired,
                format!(
                    "agreement {id} expired at {} while this transfer ran; a new agreement \
                     (`meshnode share`) is needed to fetch again",
                    self.valid_until_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::tests::{NOW, agreement, consumer, descriptor, provider, terms};
    use crate::contract::{ContractRequest, DAY_MS};
    use crate::filter::Filter;
    use crate::identity::{Identity, SignatureError};
    use proptest::prelude::*;

    fn fetch_request() -> FetchRequest {
        FetchRequest {
            agreement: agreement(),
            product: terms().product,
            version: Some(3),
            resume_from_batch: 0,
            compression: Compression::Zstd,
            narrowing: None,
            stripe: Stripe::WHOLE,
        }
    }

    fn header() -> TransferHeader {
        TransferHeader {
            agreement_id: terms().id(),
            version: 3,
            schema: descriptor().schema[..2].to_vec(),
            total_batches_hint: Some(2),
            resume_from_batch: 0,
            compression: Compression::Zstd,
            stripe: Stripe::new(2, 1).unwrap(),
        }
    }

    fn signed_trailer(tally: &TransferTally, resume: u64) -> Signed<TransferTrailer> {
        Signed::sign(
            &provider(),
            &tally.trailer(terms().id(), terms().product, 3, resume),
        )
    }

    fn all_frames() -> Vec<Frame> {
        let mut tally = TransferTally::new();
        tally.add_batch(b"schema", 0);
        tally.add_batch(&[7; 300], 10);
        vec![
            Frame::Request(Box::new(fetch_request())),
            Frame::Header(header()),
            Frame::Data(b"schema".to_vec()),
            Frame::Data(vec![7; 300]),
            Frame::Data(vec![]),
            Frame::Trailer(signed_trailer(&tally, 0)),
            Frame::Error(Refusal::new(FetchRefusal::Busy, "try later")),
        ]
    }

    fn decode_all(bytes: &[u8], chunk: usize) -> Result<Vec<Frame>, FrameError> {
        let mut decoder = FrameDecoder::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            decoder.push(piece);
            while let Some(frame) = decoder.next_frame()? {
                out.push(frame);
            }
        }
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn frame_layout() {
        let bytes = encode_frame(&Frame::Data(vec![9, 8, 7])).unwrap();
        assert_eq!(bytes, [3, 0, 0, 0, 3, 9, 8, 7]);
        assert_eq!(encode_data_header(3).unwrap(), [3, 0, 0, 0, 3]);
        assert_eq!(encode_data_header(0x0102_0304).unwrap(), [3, 1, 2, 3, 4]);
        assert_eq!(
            encode_data_header(MAX_DATA_FRAME + 1),
            Err(FrameError::TooLarge {
                kind: FrameKind::Data,
                len: MAX_DATA_FRAME as u64 + 1,
                max: MAX_DATA_FRAME,
            })
        );
        let error = encode_frame(&Frame::Error(Refusal::new(FetchRefusal::Busy, "x"))).unwrap();
        assert_eq!(error[0], 5);
        assert_eq!(
            u32::from_be_bytes(error[1..5].try_into().unwrap()) as usize,
            error.len() - 5
        );
        let big = Frame::Error(Refusal::new(
            FetchRefusal::Internal,
            "x".repeat(MAX_CONTROL_FRAME),
        ));
        assert!(matches!(
            encode_frame(&big),
            Err(FrameError::TooLarge {
                kind: FrameKind::Error,
                ..
            })
        ));
        for kind in FrameKind::ALL {
            assert_eq!(FrameKind::from_tag(kind.tag()), Some(kind));
        }
        assert_eq!(FrameKind::from_tag(0), None);
    }

    #[test]
    fn all_frames_round_trip_byte_by_byte_and_whole() {
        let frames = all_frames();
        let bytes: Vec<u8> = frames
            .iter()
            .flat_map(|f| encode_frame(f).unwrap())
            .collect();
        assert_eq!(decode_all(&bytes, 1).unwrap(), frames);
        assert_eq!(decode_all(&bytes, bytes.len()).unwrap(), frames);
        // Header and payload written separately, as the shell does for data.
        let mut split = encode_data_header(4).unwrap().to_vec();
        split.extend_from_slice(b"abcd");
        assert_eq!(
            decode_all(&split, 3).unwrap(),
            [Frame::Data(b"abcd".to_vec())]
        );
    }

    #[test]
    fn decoder_refuses_garbage_with_typed_errors() {
        let mut d = FrameDecoder::new();
        d.push(&encode_frame(&Frame::Data(vec![1])).unwrap());
        d.push(&[0x42]);
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Data(vec![1])));
        let err = d.next_frame().unwrap_err();
        assert_eq!(
            err,
            FrameError::UnknownTag {
                tag: 0x42,
                offset: 6
            }
        );
        assert_eq!(err.to_string(), "unknown frame tag 0x42 at byte 6");
        assert_eq!(d.next_frame(), Err(FrameError::Poisoned));
        assert_eq!(d.finish(), Err(FrameError::Poisoned));

        // Oversized lengths are refused from the header alone.
        let mut d = FrameDecoder::new();
        d.push(&[3, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                kind: FrameKind::Data,
                len: u32::MAX.into(),
                max: MAX_DATA_FRAME
            })
        );
        let mut d = FrameDecoder::new();
        d.push(&[2, 0, 0x10, 0, 1]);
        assert_eq!(
            d.next_frame().unwrap_err().to_string(),
            "header frame of 1048577 bytes exceeds the limit of 1048576 bytes"
        );

        // A control frame whose payload does not decode.
        let mut d = FrameDecoder::new();
        d.push(&[4, 0, 0, 0, 2, 0xff, 0xff]);
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::Malformed {
                kind: FrameKind::Trailer,
                error: DecodeError::Malformed(_)
            })
        ));
        // Trailing bytes inside a control payload.
        let mut payload = codec::encode(&Refusal::new(FetchRefusal::Busy, "x"));
        payload.push(0);
        let mut d = FrameDecoder::new();
        d.push(&[5, 0, 0, 0, payload.len() as u8]);
        d.push(&payload);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::Malformed {
                kind: FrameKind::Error,
                error: DecodeError::TrailingBytes(1)
            })
        );
    }

    #[test]
    fn frame_headers_parse_encode_and_refuse() {
        for kind in FrameKind::ALL {
            let header = FrameHeader::new(kind, 1234).unwrap();
            assert_eq!(FrameHeader::parse(header.encode(), 0), Ok(header));
            let largest = FrameHeader::new(kind, kind.max_len()).unwrap();
            assert_eq!(FrameHeader::parse(largest.encode(), 0), Ok(largest));
        }
        assert_eq!(
            FrameHeader::parse([0x42, 0, 0, 0, 0], 17),
            Err(FrameError::UnknownTag {
                tag: 0x42,
                offset: 17
            })
        );
        assert_eq!(
            FrameHeader::parse([1, 0, 0x10, 0, 1], 0),
            Err(FrameError::TooLarge {
                kind: FrameKind::Request,
                len: MAX_CONTROL_FRAME as u64 + 1,
                max: MAX_CONTROL_FRAME
            })
        );
        assert!(FrameHeader::new(FrameKind::Data, MAX_DATA_FRAME + 1).is_err());
        // A payload decodes only with the length its header announced.
        let refusal = Frame::Error(Refusal::new(FetchRefusal::Busy, "later"));
        let bytes = encode_frame(&refusal).unwrap();
        let header = FrameHeader::parse(bytes[..FRAME_HEADER_LEN].try_into().unwrap(), 0).unwrap();
        assert_eq!(header.decode(&bytes[FRAME_HEADER_LEN..]), Ok(refusal));
        assert_eq!(
            header.decode(&bytes[FRAME_HEADER_LEN + 1..]),
            Err(FrameError::Incomplete {
                buffered: bytes.len() - FRAME_HEADER_LEN - 1
            })
        );
    }

    #[test]
    fn finish_refuses_truncated_input() {
        let bytes = encode_frame(&Frame::Data(vec![1, 2, 3])).unwrap();
        let mut d = FrameDecoder::new();
        d.push(&bytes[..6]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.bytes_needed(), 2);
        assert_eq!(d.finish(), Err(FrameError::Incomplete { buffered: 6 }));
        let mut d = FrameDecoder::new();
        d.push(&bytes[..2]);
        assert_eq!(d.bytes_needed(), 3);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(
            d.finish().unwrap_err().to_string(),
            "the stream ended inside a frame (2 bytes left over)"
        );
        // A complete frame that was never taken is left over too.
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        assert_eq!(d.buffered(), 8);
        assert_eq!(d.finish(), Err(FrameError::Incomplete { buffered: 8 }));
        assert_eq!(FrameDecoder::new().finish(), Ok(()));
    }

    /// The test descriptor's columns plus `amount`, which the test agreement does not grant.
    #[test]
    fn every_frame_travels_on_exactly_one_stripe_in_round_robin() {
        for count in 1..=MAX_STRIPES {
            let stripes: Vec<Stripe> = (0..count).map(|i| Stripe::new(count, i).unwrap()).collect();
            for frame in 0..50u64 {
                let carriers: Vec<u8> = stripes
                    .iter()
                    .filter(|s| s.carries(frame))
                    .map(|s| s.index())
                    .collect();
                assert_eq!(carriers.len(), 1, "frame {frame} of {count} stripes");
                assert_eq!(usize::from(carriers[0]), Stripe::carrying(count, frame));
            }
        }
        assert!(Stripe::WHOLE.carries(0) && Stripe::WHOLE.carries(12345));
        assert_eq!(Stripe::default(), Stripe::WHOLE);
    }

    #[test]
    fn only_a_stream_sent_as_stored_is_striped() {
        let (first, second) = (Stripe::new(3, 0).unwrap(), Stripe::new(3, 2).unwrap());
        assert_eq!(first.served(true), Some(first));
        assert_eq!(second.served(true), Some(second));
        assert_eq!(
            first.served(false),
            Some(Stripe::WHOLE),
            "all on the first stream"
        );
        assert_eq!(second.served(false), None, "refused");
        assert_eq!(Stripe::WHOLE.served(false), Some(Stripe::WHOLE));

        let mut whole = terms();
        whole.filter = None;
        assert!(Stripe::may_stripe(&whole, None, Compression::None));
        assert!(!Stripe::may_stripe(&whole, None, Compression::Lz4));
        let fewer = Narrowing {
            columns: Some(vec!["order_id".into()]),
            filter: None,
        };
        assert!(!Stripe::may_stripe(&whole, Some(&fewer), Compression::None));
        whole.filter = Some("amount > 1".into());
        assert!(!Stripe::may_stripe(&whole, None, Compression::None));
    }

    #[test]
    fn only_valid_stripes_exist_even_on_the_wire() {
        for (count, index) in [(0, 0), (2, 2), (3, 7), (MAX_STRIPES + 1, 0), (255, 254)] {
            assert_eq!(Stripe::new(count, index), None, "{index} of {count}");
            let forged = postcard::to_stdvec(&(count, index)).unwrap();
            let err = postcard::from_bytes::<Stripe>(&forged);
            assert!(err.is_err(), "{index} of {count} decoded");
        }
        // A request naming such a stripe is refused by the frame decoder, before any check.
        let mut request = fetch_request();
        request.stripe = Stripe::new(4, 3).unwrap();
        let mut bytes = encode_frame(&Frame::Request(Box::new(request.clone()))).unwrap();
        let decoded = decode_all(&bytes, bytes.len()).unwrap();
        assert_eq!(decoded, vec![Frame::Request(Box::new(request))]);
        let last = bytes.len() - 1; // the stripe index is the request's last byte
        bytes[last] = 4;
        assert!(decode_all(&bytes, bytes.len()).is_err());
    }

    fn narrowing_schema() -> Vec<ColumnSchema> {
        let mut schema = descriptor().schema;
        schema.push(ColumnSchema {
            name: "amount".into(),
            data_type: "Float64".into(),
            nullable: true,
        });
        schema
    }

    fn narrow(columns: Option<&[&str]>, filter: Option<&str>) -> Result<Served, Refusal> {
        let narrowing = Narrowing {
            columns: columns.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            filter: filter.map(str::to_owned),
        };
        narrow_fetch(
            &terms(),
            &narrowing_schema(),
            &descriptor().policy.restricted_columns,
            Some(&narrowing),
        )
    }

    fn names(served: &Served) -> Vec<&str> {
        served.columns.iter().map(|c| c.name.as_str()).collect()
    }

    fn refused(result: Result<Served, Refusal>) -> Refusal {
        let refusal = result.expect_err("the narrowing must be refused");
        assert_eq!(refusal.code, FetchRefusal::NotCovered, "{refusal}");
        refusal
    }

    #[test]
    fn without_narrowing_the_agreement_decides() {
        let served = narrow_fetch(
            &terms(),
            &narrowing_schema(),
            &descriptor().policy.restricted_columns,
            None,
        )
        .unwrap();
        // The product's order, not the agreement's; `email` (restricted) and `amount` (not
        // listed) never.
        assert_eq!(names(&served), ["order_id", "region"]);
        assert_eq!(served.filter, Some(Filter::parse("region = 'EU'").unwrap()));
        assert!(!served.narrowed);
    }

    #[test]
    fn narrowing_selects_fewer_columns_and_rows() {
        let served = narrow(Some(&["order_id"]), None).unwrap();
        assert_eq!(names(&served), ["order_id"]);
        assert_eq!(served.filter, Some(Filter::parse("region = 'EU'").unwrap()));
        assert!(served.narrowed);
        // The request's filter is added to the agreement's, and may read a granted column
        // that is not sent.
        let served = narrow(Some(&["order_id"]), Some("region = 'US'")).unwrap();
        assert_eq!(
            served.filter,
            Some(
                Filter::parse("region = 'EU'")
                    .unwrap()
                    .and(Filter::parse("region = 'US'").unwrap())
            )
        );
        let served = narrow(None, Some("order_id > 5")).unwrap();
        assert_eq!(names(&served), ["order_id", "region"]);
        assert!(served.narrowed);
    }

    #[test]
    fn narrowing_never_widens() {
        // A column outside the grant: not listed, or restricted.
        let r = refused(narrow(Some(&["order_id", "amount"]), None));
        assert!(r.message.contains("`amount`"), "{r}");
        assert!(r.message.contains(&terms().id().short()), "{r}");
        assert!(r.message.contains("granted: order_id, region"), "{r}");
        let r = refused(narrow(Some(&["email"]), None));
        assert!(r.message.contains("`email`"), "{r}");
        // A filter reading a column outside the grant would reveal its values through the
        // rows that come back.
        let r = refused(narrow(None, Some("amount > 100")));
        assert!(r.message.contains("`amount`"), "{r}");
        let r = refused(narrow(Some(&["order_id"]), Some("email = 'a@b.c'")));
        assert!(r.message.contains("`email`"), "{r}");
        // Bad filters and empty or oversized lists.
        refused(narrow(None, Some("order_id = 'x'")));
        refused(narrow(None, Some("region ===")));
        refused(narrow(
            None,
            Some(&"x".repeat(crate::filter::MAX_FILTER_LEN + 1)),
        ));
        refused(narrow(Some(&[]), None));
        let many: Vec<String> = (0..=MAX_NARROWING_COLUMNS)
            .map(|i| format!("c{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        refused(narrow(Some(&many), None));
    }

    proptest! {
        #[test]
        fn served_columns_are_always_granted_and_asked_for(
            picks in prop::collection::vec(0usize..5, 0..6),
        ) {
            const POOL: [&str; 5] = ["order_id", "region", "email", "amount", "nope"];
            let wanted: Vec<&str> = picks.iter().map(|&i| POOL[i]).collect();
            if let Ok(served) = narrow(Some(&wanted), None) {
                for c in &served.columns {
                    prop_assert!(wanted.contains(&c.name.as_str()));
                    prop_assert!(["order_id", "region"].contains(&c.name.as_str()));
                }
                prop_assert!(served.filter.is_some());
            }
        }
    }

    fn expected(tally: &TransferTally, resume: u64) -> ExpectedTrailer {
        tally.expected(terms().id(), terms().product, 3, resume)
    }

    #[test]
    fn trailer_checks() {
        let mut sent = TransferTally::new();
        sent.add_batch(b"schema", 0);
        sent.add_batch(b"batch-1", 5);
        sent.add_batch(b"batch-2", 7);
        let trailer = signed_trailer(&sent, 1);

        // The consumer resumed after batch 0: it hashes the prefix it holds, then the rest,
        // chunked differently.
        let mut got = TransferTally::new();
        got.update(b"sche");
        got.update(b"ma");
        got.count(1, 0);
        got.add_batch(b"batch-1", 5);
        got.update(b"batch-");
        got.update(b"2");
        got.count(1, 7);
        assert_eq!(got.digest(), sent.digest());
        let ok = verify_trailer(&trailer, &provider().public_key(), &expected(&got, 1)).unwrap();
        assert_eq!((ok.rows, ok.batches, ok.resume_from_batch), (12, 3, 1));

        // Rows not counted by the consumer.
        let mut no_rows = expected(&got, 1);
        no_rows.rows = None;
        assert!(verify_trailer(&trailer, &provider().public_key(), &no_rows).is_ok());

        // Wrong signer.
        assert_eq!(
            verify_trailer(&trailer, &consumer().public_key(), &expected(&got, 1)),
            Err(TrailerError::WrongSigner {
                expected: consumer().public_key(),
                actual: provider().public_key()
            })
        );
        let mallory = Identity::from_secret_bytes([3; 32]);
        let forged = Signed::sign(&mallory, &sent.trailer(terms().id(), terms().product, 3, 1))
            .with_claimed_signer(provider().public_key());
        assert_eq!(
            verify_trailer(&forged, &provider().public_key(), &expected(&got, 1)),
            Err(TrailerError::Envelope(EnvelopeError::Signature(
                SignatureError::Mismatch
            )))
        );

        // A byte the consumer received differently.
        let mut corrupt = TransferTally::new();
        corrupt.add_batch(b"schema", 0);
        corrupt.add_batch(b"batch-X", 5);
        corrupt.add_batch(b"batch-2", 7);
        let err =
            verify_trailer(&trailer, &provider().public_key(), &expected(&corrupt, 1)).unwrap_err();
        assert!(matches!(
            err,
            TrailerError::Mismatch {
                field: "digest",
                ..
            }
        ));
        assert!(err.to_string().starts_with("the trailer says digest = "));

        // Missing batch, other rows, other version, other resume point.
        let mut short = TransferTally::new();
        short.add_batch(b"schema", 0);
        short.add_batch(b"batch-1", 5);
        assert_eq!(
            verify_trailer(&trailer, &provider().public_key(), &expected(&short, 1)),
            Err(TrailerError::Mismatch {
                field: "batches",
                claimed: "3".into(),
                counted: "2".into()
            })
        );
        let mut rows = expected(&got, 1);
        rows.rows = Some(11);
        assert_eq!(
            verify_trailer(&trailer, &provider().public_key(), &rows)
                .unwrap_err()
                .to_string(),
            "the trailer says rows = 12, but the consumer has 11"
        );
        let mut version = expected(&got, 1);
        version.version = 2;
        assert!(matches!(
            verify_trailer(&trailer, &provider().public_key(), &version),
            Err(TrailerError::Mismatch {
                field: "version",
                ..
            })
        ));
        assert!(matches!(
            verify_trailer(&trailer, &provider().public_key(), &expected(&got, 0)),
            Err(TrailerError::Mismatch {
                field: "resume_from_batch",
                ..
            })
        ));
        let mut other = expected(&got, 1);
        other.agreement_id = AgreementId([0; 32]);
        assert!(matches!(
            verify_trailer(&trailer, &provider().public_key(), &other),
            Err(TrailerError::Mismatch {
                field: "agreement_id",
                ..
            })
        ));
    }

    #[test]
    fn fetch_authorization() {
        let p = provider().public_key();
        let c = consumer().public_key();
        assert_eq!(
            authorize_fetch(&fetch_request(), &p, &c, NOW, 0),
            Ok(terms())
        );
        let refusal = |r: &FetchRequest, provider: &PublicKey, peer: &PublicKey, now| {
            authorize_fetch(r, provider, peer, now, 0).unwrap_err()
        };
        // Within the tolerated clock skew on both ends of the window.
        let skew = 5 * 60 * 1000;
        assert!(authorize_fetch(&fetch_request(), &p, &c, NOW - skew, skew).is_ok());
        assert!(authorize_fetch(&fetch_request(), &p, &c, NOW - skew - 1, skew).is_err());
        let end = NOW + 30 * DAY_MS;
        assert!(authorize_fetch(&fetch_request(), &p, &c, end + skew - 1, skew).is_ok());
        assert_eq!(
            authorize_fetch(&fetch_request(), &p, &c, end + skew, skew)
                .unwrap_err()
                .code,
            FetchRefusal::Expired
        );
        let id = terms().id().short();

        let r = refusal(&fetch_request(), &p, &p, NOW);
        assert_eq!(r.code, FetchRefusal::WrongConsumer);
        assert_eq!(
            r.to_string(),
            format!(
                "wrong_consumer: agreement {id} is for consumer {c}, but the connection is from {p}"
            )
        );
        assert_eq!(
            refusal(&fetch_request(), &c, &c, NOW).code,
            FetchRefusal::NoAgreement
        );
        let r = refusal(&fetch_request(), &p, &c, NOW + 30 * DAY_MS);
        assert_eq!(
            r,
            Refusal::new(
                FetchRefusal::Expired,
                format!("agreement {id} expired at {}", NOW + 30 * DAY_MS)
            )
        );
        assert_eq!(
            refusal(&fetch_request(), &p, &c, NOW - 1).code,
            FetchRefusal::NotCovered
        );

        let mut other_product = fetch_request();
        other_product.product.name = "customers".into();
        assert_eq!(
            refusal(&other_product, &p, &c, NOW).message,
            format!("agreement {id} covers product-sales, not customers")
        );

        let mut t = terms();
        t.min_version = 2;
        t.max_version = Some(3);
        let a = Agreement::countersign(
            &provider(),
            Signed::sign(&consumer(), &ContractRequest { terms: t }),
        )
        .unwrap();
        let mut old = fetch_request();
        old.agreement = a.clone();
        old.version = Some(1);
        assert_eq!(
            refusal(&old, &p, &c, NOW).message,
            format!("agreement {} covers versions 2..=3, not 1", a.id().short())
        );
        old.version = None;
        assert!(authorize_fetch(&old, &p, &c, NOW, 0).is_ok());

        let mut forged = fetch_request();
        forged.agreement = Agreement::from_parts_unchecked(
            forged.agreement.request().clone(),
            p,
            consumer().sign(
                crate::contract::AGREEMENT_CONTEXT,
                forged.agreement.request().body(),
            ),
        );
        let r = refusal(&forged, &p, &c, NOW);
        assert_eq!(r.code, FetchRefusal::NoAgreement);
        assert_eq!(
            r.message,
            "the agreement is invalid: the provider's countersignature is invalid: the signature \
             does not match the signer and content"
        );
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048).prop_map(Frame::Data),
            (any::<Option<u64>>(), any::<u64>()).prop_map(|(version, resume)| {
                let mut r = fetch_request();
                r.version = version;
                r.resume_from_batch = resume;
                Frame::Request(Box::new(r))
            }),
            (any::<u64>(), any::<Option<u64>>()).prop_map(|(version, hint)| {
                let mut h = header();
                h.version = version;
                h.total_batches_hint = hint;
                Frame::Header(h)
            }),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(|bytes| {
                let mut tally = TransferTally::new();
                tally.add_batch(&bytes, bytes.len() as u64);
                Frame::Trailer(signed_trailer(&tally, 0))
            }),
            ".{0,40}".prop_map(|m| Frame::Error(Refusal::new(FetchRefusal::Internal, m))),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip_with_random_chunking(
            frames in prop::collection::vec(arb_frame(), 0..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        ) {
            let bytes: Vec<u8> = frames.iter().flat_map(|f| encode_frame(f).unwrap()).collect();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut decoder = FrameDecoder::new();
            let mut out = Vec::new();
            for w in cuts.windows(2) {
                decoder.push(&bytes[w[0]..w[1]]);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            decoder.finish().unwrap();
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn decoder_never_panics_on_garbage(
            bytes in prop::collection::vec(any::<u8>(), 0..1024),
            chunk in 1usize..64,
        ) {
            let mut decoder = FrameDecoder::new();
            let mut failed = false;
            for piece in bytes.chunks(chunk) {
                decoder.push(piece);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => { failed = true; break; }
                    }
                }
                if failed { break; }
            }
            if failed {
                prop_assert_eq!(decoder.next_frame(), Err(FrameError::Poisoned));
            } else {
                let _ = decoder.finish();
            }
        }

        #[test]
        fn decoder_never_panics_on_plausible_headers(
            tag in 0u8..7,
            len in prop::collection::vec(any::<u8>(), 4),
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = vec![tag];
            bytes.extend_from_slice(&len);
            bytes.extend_from_slice(&body);
            let mut decoder = FrameDecoder::new();
            decoder.push(&bytes);
            let _ = decoder.next_frame();
        }
    }

    #[test]
    fn a_running_transfer_ends_once_its_agreement_is_revoked_or_expires() {
        let t = terms();
        let id = agreement().id();
        let running = RunningAgreement::new(id, &t, 1_000);
        let until = t.valid_until_ms;
        assert_eq!(running.check(until - 1, false), Ok(()));
        // The skew tolerance, as at authorization.
        assert_eq!(running.check(until + 999, false), Ok(()));
        let expired = running.check(until + 1_000, false).unwrap_err();
        assert_eq!(expired.code, FetchRefusal::Expired);
        assert!(expired.message.contains("expired at"), "{expired}");
        assert!(expired.message.contains(&id.short()), "{expired}");
        // A revocation ends it whatever the time, and is named first.
        let revoked = running.check(until - 1, true).unwrap_err();
        assert_eq!(revoked.code, FetchRefusal::Revoked);
        assert!(revoked.message.contains("was revoked"), "{revoked}");
        assert_eq!(
            running.check(until + 5_000, true).unwrap_err().code,
            FetchRefusal::Revoked
        );
        // No overflow at the end of time.
        let forever = ContractTerms {
            valid_until_ms: u64::MAX,
            ..t
        };
        assert_eq!(
            RunningAgreement::new(id, &forever, u64::MAX).check(u64::MAX - 1, false),
            Ok(())
        );
    }
}
