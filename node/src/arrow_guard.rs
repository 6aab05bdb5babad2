//! A fence around Arrow's IPC decoder.
//!
//! arrow-ipc 59 (the release the query engine is built on) turns a flatbuffer schema into an
//! Arrow schema with `unwrap`s and `panic!`s on what it does not expect: a field without a
//! type, an unknown type, a list without a child, a big-endian decimal; and its batch decoder
//! asserts that each buffer lies inside its message. Those bytes come from peers (the schema
//! message of a transfer) and from files (a product an operator publishes, a received file
//! being converted), so every reader construction over them goes through [`contain`], which
//! turns such a panic into an ordinary [`ArrowError`]: the transfer or the publish is refused
//! with a message and the daemon goes on ([`catch`] does the same for other readers).
//!
//! The readers also allocate what a message declares before anything checks it: the stream
//! reader the metadata length of its 4-byte prefix and then the header's `bodyLength`, the
//! file reader the footer's length and each block's `metaDataLength + bodyLength`, the
//! decompressor each compressed buffer's declared length (and an LZ4 frame whatever it holds,
//! past that length). A few hundred bytes can ask for terabytes, and a failed allocation
//! aborts the process, which no `catch_unwind` stops. So before a reader is built over such
//! bytes, [`check_stream`] or [`check_file`] walks the messages (headers, compressed-length
//! prefixes and LZ4 block headers only) and refuses any that declares more than the file
//! holds or more than the caller's [`MessageBounds`].
//!
//! A reader also keeps every dictionary it decodes, for as long as it reads, and a compressed
//! dictionary message of a few kilobytes can decode to a hundred mebibytes. The walk counts
//! each dictionary for what it will hold once decoded ([`Dictionaries`], from the lengths its
//! compressed buffers declare) and refuses a stream or file whose dictionaries would hold
//! more than [`MAX_DICTIONARY_BYTES`]; the data plane counts a received stream's the same way.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};

use arrow::error::ArrowError;
use arrow::ipc::{Block, CompressionType, Message, MessageHeader};

/// The marker in front of an IPC message's metadata length.
const CONTINUATION: [u8; 4] = [0xff; 4];

/// Runs `decode`, turning a panic inside Arrow into [`ArrowError::IpcError`].
pub(crate) fn contain<T>(decode: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, ArrowError> {
    catch(decode).unwrap_or_else(|why| {
        Err(ArrowError::IpcError(format!(
            "malformed Arrow IPC schema ({why})"
        )))
    })
}

/// Runs `read`, returning what a panic inside it said as `Err`. For readers over untrusted
/// bytes whose errors are not [`ArrowError`]s, or whose panic deserves another message.
pub(crate) fn catch<T>(read: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(read)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no detail".to_owned())
    })
}

/// What one IPC message may declare, on top of fitting in the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageBounds {
    /// Longest metadata (the flatbuffer header) of one message.
    pub(crate) max_metadata: u64,
    /// Longest body of one message.
    pub(crate) max_body: u64,
    /// Most rows in one record or dictionary batch.
    pub(crate) max_rows: i64,
    /// Most bytes the compressed buffers of one batch may declare once decompressed, and
    /// (with a sixteenth of slack) that its LZ4 frames' blocks can decompress to.
    pub(crate) max_decompressed: u64,
    /// Most bytes a stream's (or a file's) delta dictionaries may make its reader copy,
    /// counted for what the dictionaries hold once decoded ([`Dictionaries`]): each delta
    /// is concatenated to the dictionary so far, so many small deltas cost time quadratic in
    /// their number while the dictionary stays small.
    pub(crate) max_delta_copy: u64,
}

/// Most bytes the dictionaries of one stream or file may hold once decoded, in all: every
/// reader (the stream and file readers, the data plane's decoding of a received stream)
/// keeps each dictionary for as long as it reads, a delta's concatenation in place of what
/// it extends. A compressed dictionary message of a few kilobytes may decode to 128 MiB;
/// without a bound, a few hundred of them would make a reader hold tens of gibibytes. A
/// consumer fetches no product whose dictionaries hold more (`dataplane::ipcfile`).
pub(crate) const MAX_DICTIONARY_BYTES: u64 = 256 * 1024 * 1024;

/// Most dictionary ids one stream's messages may name (the schema defines far fewer; the
/// walk keeps a count per id).
const MAX_DICTIONARY_IDS: usize = 1 << 16;

/// Why [`check_stream`] or [`check_file`] refused the messages.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MessageError {
    /// Reading the file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The bytes are not the messages they claim to be: a length past the end of the file,
    /// a negative length, a header that does not decode, a buffer outside its body.
    #[error("{0}")]
    Malformed(String),
    /// A message is over one of the [`MessageBounds`].
    #[error("{0}")]
    OverBound(String),
}

/// Walks the IPC *stream* between byte `start` and byte `end` of `file` (an end past the
/// file's length stands for its length) as arrow's `StreamReader` reads it (`MessageReader`,
/// arrow-ipc 59.3 reader.rs:1832-1902): a 4-byte metadata length, or the continuation marker
/// and then one; a zero length ends the stream, and so do fewer than 4 bytes left. Refuses a
/// message that declares more than the rest of the region or more than `bounds`. Returns the
/// offset where the stream ended.
pub(crate) fn check_stream(
    file: &mut File,
    start: u64,
    end: u64,
    bounds: &MessageBounds,
) -> Result<u64, MessageError> {
    walk_stream(file, start, end, bounds, MAX_DICTIONARY_BYTES)
}

/// [`check_stream`], the dictionaries holding at most `max_dictionary_bytes`.
fn walk_stream(
    file: &mut File,
    start: u64,
    end: u64,
    bounds: &MessageBounds,
    max_dictionary_bytes: u64,
) -> Result<u64, MessageError> {
    let end = end.min(file.metadata()?.len());
    let mut at = start;
    let mut meta = Vec::new();
    let mut dictionaries = Dictionaries::default();
    loop {
        if end.saturating_sub(at) < 4 {
            return Ok(at);
        }
        let mut word = [0u8; 4];
        read_at(file, at, &mut word)?;
        let mut prefix = 4;
        if word == CONTINUATION {
            if end - at < 8 {
                return Err(MessageError::Malformed(format!(
                    "the data ends inside the message at byte {at}"
                )));
            }
            read_at(file, at + 4, &mut word)?;
            prefix = 8;
        }
        let declared = i32::from_le_bytes(word);
        if declared == 0 {
            return Ok(at);
        }
        let meta_len = check_metadata(declared, end - at - prefix, at, bounds)?;
        meta.resize(meta_len as usize, 0);
        read_at(file, at + prefix, &mut meta)?;
        let message = decode(&meta, at)?;
        let body = at + prefix + meta_len;
        let body_len = check_body(message.bodyLength(), end - body, at, bounds)?;
        let mut window = Window::new(file, body);
        let decoded = check_batch(&message, body_len, at, bounds, |offset, out| {
            window.read(offset, out)
        })?;
        dictionaries.walk(&message, decoded, at, bounds, max_dictionary_bytes)?;
        at = body + body_len;
    }
}

/// What the dictionaries of a stream (or of a file, in its footer's order) hold so far once
/// decoded, by id, and what their deltas have made a reader copy: a dictionary message is
/// counted by the bytes it decodes to ([`check_message`] gives them, from its body and the
/// lengths its compressed buffers declare), a replacement in place of the dictionary it
/// replaces, a delta on top of the dictionary it extends (which a reader copies whole).
/// Shared by the walk of a file or stream and by the data plane's decoding of a received
/// stream.
#[derive(Debug, Default)]
pub(crate) struct Dictionaries {
    /// Bytes each dictionary holds, by id.
    held: std::collections::HashMap<i64, u64>,
    /// The sum of `held`.
    total: u64,
    /// Bytes the deltas so far made a reader copy.
    copied: u64,
}

/// A dictionary message [`Dictionaries::count`] admitted, for [`Dictionaries::record`] once
/// the message is taken.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counted {
    id: i64,
    held: u64,
    total: u64,
    copied: u64,
}

/// Why [`Dictionaries::count`] refused a dictionary message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DictionaryError {
    /// The message names one id more than a stream may hold.
    #[error("it names a dictionary beyond the {MAX_DICTIONARY_IDS} a stream may hold")]
    Ids,
    /// The dictionaries would hold more than the bound.
    #[error(
        "the dictionaries would hold {held} bytes once decoded (a reader keeps them all), \
         over the limit of {limit}"
    )]
    Held { held: u64, limit: u64 },
    /// The deltas would make a reader copy more than the bound.
    #[error(
        "the delta dictionaries would make a reader copy {copied} bytes, over the limit of {limit}"
    )]
    Copied { copied: u64, limit: u64 },
}

impl Dictionaries {
    /// What the dictionaries would hold and copy once a dictionary message for `id`
    /// (`delta` or not) that decodes to `decoded` bytes is taken, refused over
    /// `max_held` or `max_copied`. Nothing changes until [`Dictionaries::record`].
    pub(crate) fn count(
        &self,
        id: i64,
        delta: bool,
        decoded: u64,
        max_held: u64,
        max_copied: u64,
    ) -> Result<Counted, DictionaryError> {
        let before = self.held.get(&id).copied();
        if before.is_none() && self.held.len() >= MAX_DICTIONARY_IDS {
            return Err(DictionaryError::Ids);
        }
        let before = before.unwrap_or(0);
        let (held, copied) = if delta {
            let held = before.saturating_add(decoded);
            (held, self.copied.saturating_add(held))
        } else {
            (decoded, self.copied)
        };
        // `total` includes `before` (saturating all the same).
        let total = self.total.saturating_sub(before).saturating_add(held);
        if copied > max_copied {
            return Err(DictionaryError::Copied {
                copied,
                limit: max_copied,
            });
        }
        if total > max_held {
            return Err(DictionaryError::Held {
                held: total,
                limit: max_held,
            });
        }
        Ok(Counted {
            id,
            held,
            total,
            copied,
        })
    }

    /// Takes a dictionary message [`Dictionaries::count`] admitted (and nothing was taken
    /// since).
    pub(crate) fn record(&mut self, counted: Counted) {
        self.held.insert(counted.id, counted.held);
        self.total = counted.total;
        self.copied = counted.copied;
    }

    /// Counts and takes `message` if it is a dictionary batch decoding to `decoded` bytes,
    /// for the walk: a refusal names the message at byte `at`.
    fn walk(
        &mut self,
        message: &Message<'_>,
        decoded: u64,
        at: u64,
        bounds: &MessageBounds,
        max_held: u64,
    ) -> Result<(), MessageError> {
        let Some(dictionary) = message.header_as_dictionary_batch() else {
            return Ok(());
        };
        let counted = self
            .count(
                dictionary.id(),
                dictionary.isDelta(),
                decoded,
                max_held,
                bounds.max_delta_copy,
            )
            .map_err(|e| {
                MessageError::OverBound(format!("the message at byte {at} is refused: {e}"))
            })?;
        self.record(counted);
        Ok(())
    }
}

/// Walks the IPC *file* `file` as arrow's `FileReader` reads it (`FileReaderBuilder::build`,
/// `read_block` and `parse_message`, arrow-ipc 59.3 reader.rs:1232-1290, 916-938): the footer
/// whose length its last 10 bytes give, then each dictionary and record batch block listed
/// there, a message at the block's offset whose metadata and body must lie inside the file
/// and within `bounds`.
pub(crate) fn check_file(file: &mut File, bounds: &MessageBounds) -> Result<(), MessageError> {
    walk_file(file, bounds, MAX_DICTIONARY_BYTES)
}

/// [`check_file`], the dictionaries holding at most `max_dictionary_bytes`.
fn walk_file(
    file: &mut File,
    bounds: &MessageBounds,
    max_dictionary_bytes: u64,
) -> Result<(), MessageError> {
    let len = file.metadata()?.len();
    if len < 10 {
        return Err(MessageError::Malformed(
            "the file is too short to hold an Arrow IPC footer".into(),
        ));
    }
    let mut tail = [0u8; 10];
    read_at(file, len - 10, &mut tail)?;
    let footer_len = arrow::ipc::reader::read_footer_length(tail)
        .map_err(|e| MessageError::Malformed(e.to_string()))? as u64;
    if footer_len > len - 10 {
        return Err(MessageError::Malformed(format!(
            "the footer declares {footer_len} bytes, but the file holds {len}"
        )));
    }
    let mut footer = vec![0u8; footer_len as usize];
    read_at(file, len - 10 - footer_len, &mut footer)?;
    let footer = arrow::ipc::root_as_footer(&footer).map_err(|e| {
        MessageError::Malformed(format!("the footer does not decode: {}", first_line(&e)))
    })?;
    // The reader decodes the dictionary blocks first, in the footer's order, and keeps
    // them all.
    let mut dictionaries = Dictionaries::default();
    for block in footer.dictionaries().into_iter().flatten() {
        check_block(
            file,
            block,
            len,
            bounds,
            Some((&mut dictionaries, max_dictionary_bytes)),
        )?;
    }
    for block in footer.recordBatches().into_iter().flatten() {
        check_block(file, block, len, bounds, None)?;
    }
    Ok(())
}

/// One block of a file's footer: its message, as `read_block` and `parse_message` read it;
/// a dictionary batch is counted in `dictionaries` (with their bound) when given.
fn check_block(
    file: &mut File,
    block: &Block,
    len: u64,
    bounds: &MessageBounds,
    dictionaries: Option<(&mut Dictionaries, u64)>,
) -> Result<(), MessageError> {
    let at = u64::try_from(block.offset())
        .ok()
        .filter(|at| *at <= len)
        .ok_or_else(|| {
            MessageError::Malformed(format!(
                "the footer lists a message at byte {}, outside the file",
                block.offset()
            ))
        })?;
    let meta_len = check_metadata(block.metaDataLength(), len - at, at, bounds)?;
    let mut meta = vec![0u8; meta_len as usize];
    read_at(file, at, &mut meta)?;
    // The header follows the continuation marker and the length, or a bare length.
    let prefix = if meta.starts_with(&CONTINUATION) {
        8
    } else {
        4
    };
    let header = meta.get(prefix..).ok_or_else(|| {
        MessageError::Malformed(format!(
            "the message at byte {at} is shorter than its length prefix"
        ))
    })?;
    let message = decode(header, at)?;
    // The reader takes the block's body length, not the header's.
    let body = at + meta_len;
    let body_len = check_body(block.bodyLength(), len - body, at, bounds)?;
    let mut window = Window::new(file, body);
    let decoded = check_batch(&message, body_len, at, bounds, |offset, out| {
        window.read(offset, out)
    })?;
    if let Some((dictionaries, max_held)) = dictionaries {
        dictionaries.walk(&message, decoded, at, bounds, max_held)?;
    }
    Ok(())
}

/// A message's metadata length, refused when negative or over `left` or the bound.
fn check_metadata(
    declared: i32,
    left: u64,
    at: u64,
    bounds: &MessageBounds,
) -> Result<u64, MessageError> {
    let meta_len = u64::try_from(declared).map_err(|_| {
        MessageError::Malformed(format!(
            "the message at byte {at} declares a negative metadata length ({declared})"
        ))
    })?;
    if meta_len > left {
        return Err(MessageError::Malformed(format!(
            "the message at byte {at} declares {meta_len} bytes of metadata, but only {left} \
             bytes follow"
        )));
    }
    if meta_len > bounds.max_metadata {
        return Err(MessageError::OverBound(format!(
            "the message at byte {at} has {meta_len} bytes of metadata, over the limit of {}",
            bounds.max_metadata
        )));
    }
    Ok(meta_len)
}

/// A message's body length, refused when negative or over `left` or the bound.
fn check_body(
    declared: i64,
    left: u64,
    at: u64,
    bounds: &MessageBounds,
) -> Result<u64, MessageError> {
    let body_len = u64::try_from(declared).map_err(|_| {
        MessageError::Malformed(format!(
            "the message at byte {at} declares a negative body length ({declared})"
        ))
    })?;
    if body_len > left {
        return Err(MessageError::Malformed(format!(
            "the message at byte {at} declares a body of {body_len} bytes, but only {left} \
             bytes follow"
        )));
    }
    if body_len > bounds.max_body {
        return Err(MessageError::OverBound(format!(
            "the message at byte {at} has a body of {body_len} bytes, over the limit of {}",
            bounds.max_body
        )));
    }
    Ok(body_len)
}

fn decode(header: &[u8], at: u64) -> Result<Message<'_>, MessageError> {
    arrow::ipc::root_as_message(header).map_err(|e| {
        MessageError::Malformed(format!(
            "the header of the message at byte {at} does not decode: {}",
            first_line(&e)
        ))
    })
}

/// A flatbuffers verification error without the trace that follows its first line.
fn first_line(error: &impl std::fmt::Display) -> String {
    let text = error.to_string();
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_owned()
}

/// Checks one message held in memory, `body` being its body: a batch within `bounds` (rows,
/// and bytes once decompressed). For the frames of a transfer, before anything decodes them.
/// Returns the bytes the message holds once decoded (see [`check_batch`]).
pub(crate) fn check_message(
    message: &Message<'_>,
    body: &[u8],
    bounds: &MessageBounds,
) -> Result<u64, MessageError> {
    check_batch(message, body.len() as u64, 0, bounds, |offset, out| {
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        let bytes = body
            .get(at..at.saturating_add(out.len()))
            .ok_or_else(|| MessageError::Malformed("a buffer lies outside its body".into()))?;
        out.copy_from_slice(bytes);
        Ok(())
    })
}

/// Reads a message body from a file through a 64 KiB window: the walk of an LZ4 frame reads
/// 4 bytes per block.
struct Window<'f> {
    /// The file.
    file: &'f mut File,
    /// Where the body starts in the file.
    body: u64,
    /// Offset in the body of `bytes[0]`.
    start: u64,
    /// Bytes of the body from `start`.
    bytes: Vec<u8>,
}

impl<'f> Window<'f> {
    const SIZE: usize = 64 * 1024;

    fn new(file: &'f mut File, body: u64) -> Window<'f> {
        Window {
            file,
            body,
            start: 0,
            bytes: Vec::new(),
        }
    }

    /// The bytes at `offset` of the body (callers stay inside it).
    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<(), MessageError> {
        let end = offset.saturating_add(out.len() as u64);
        if offset < self.start || end > self.start + self.bytes.len() as u64 {
            if out.len() > Self::SIZE {
                return Ok(read_at(self.file, self.body + offset, out)?);
            }
            self.file.seek(SeekFrom::Start(self.body + offset))?;
            self.bytes.clear();
            (&mut *self.file)
                .take(Self::SIZE as u64)
                .read_to_end(&mut self.bytes)?;
            self.start = offset;
            if self.bytes.len() < out.len() {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        let from = (offset - self.start) as usize;
        out.copy_from_slice(&self.bytes[from..from + out.len()]);
        Ok(())
    }
}

/// A batch message's rows and, when compressed, the bytes its buffers declare once
/// decompressed (the 8-byte prefix of each, read by `read` at an offset in the body of
/// `body_len` bytes), against `bounds`. LZ4 frames are also counted for what their blocks can
/// decompress to, which must stay within the bound (with a sixteenth of slack): the reader
/// decodes the whole frame before it compares it with the prefix ([`lz4_frame_bound`]).
///
/// Returns the bytes the message holds once a reader decoded it: its body when it is not
/// compressed (the arrays are slices of it); when it is, the lengths its buffers declare
/// once decompressed (a decompressed buffer is exactly that long, or the reader fails), and
/// the body as well if a buffer is stored uncompressed (its array is a slice of the body,
/// which it keeps).
fn check_batch(
    message: &Message<'_>,
    body_len: u64,
    at: u64,
    bounds: &MessageBounds,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), MessageError>,
) -> Result<u64, MessageError> {
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    let Some(batch) = batch else {
        return Ok(body_len);
    };
    if batch.length() > bounds.max_rows {
        return Err(MessageError::OverBound(format!(
            "a batch declares {} rows, over the limit of {}",
            batch.length(),
            bounds.max_rows
        )));
    }
    let Some(compression) = batch.compression() else {
        return Ok(body_len);
    };
    let lz4 = compression.codec() == CompressionType::LZ4_FRAME;
    let (mut declared, mut expands, mut stored) = (0u64, 0u64, false);
    for buffer in batch.buffers().iter().flatten() {
        // The reader decompresses only buffers that hold at least the 8-byte prefix (a
        // shorter one is an error, a negative length a contained panic).
        if buffer.length() < 8 {
            continue;
        }
        let offset = u64::try_from(buffer.offset())
            .ok()
            .filter(|o| o.saturating_add(8) <= body_len)
            .ok_or_else(|| {
                MessageError::Malformed(format!(
                    "a buffer of the message at byte {at} lies outside its body"
                ))
            })?;
        let mut prefix = [0u8; 8];
        read(offset, &mut prefix)?;
        // -1 (stored as it is) and 0 (empty) are not decompressed; the reader refuses any
        // other negative length.
        let length = match i64::from_le_bytes(prefix) {
            -1 => {
                stored = true;
                0
            }
            length => u64::try_from(length).map_err(|_| {
                MessageError::Malformed(format!(
                    "a buffer of the message at byte {at} declares {length} bytes once \
                     decompressed"
                ))
            })?,
        };
        declared = declared.saturating_add(length);
        let mut counted = length;
        if lz4 && length > 0 {
            let end = offset.saturating_add(buffer.length() as u64).min(body_len);
            counted = counted.max(lz4_frame_bound(offset + 8, end, &mut read)?);
        }
        expands = expands.saturating_add(counted);
    }
    if declared > bounds.max_decompressed {
        return Err(MessageError::OverBound(format!(
            "a batch declares {declared} bytes once decompressed, over the limit of {}",
            bounds.max_decompressed
        )));
    }
    // The bound of a block overestimates the most compressible data by up to 4% (255 bytes
    // per byte against about 245 for a run of zeros): a sixteenth of slack lets such a
    // batch declare up to the limit.
    if expands
        > bounds
            .max_decompressed
            .saturating_add(bounds.max_decompressed / 16)
    {
        return Err(MessageError::OverBound(format!(
            "the LZ4 frames of a batch can decompress to {expands} bytes (they declare \
             {declared}), over the limit of {}",
            bounds.max_decompressed
        )));
    }
    Ok(if stored {
        declared.saturating_add(body_len)
    } else {
        declared
    })
}

/// Most bytes the LZ4 frame between body offsets `start` and `end` can decompress to, as
/// lz4_flex 0.14's `FrameDecoder::read_to_end` (what arrow-ipc's decompressor calls) reads
/// it: one frame, block after block until the end mark, the end of the bytes or a block it
/// refuses. A compressed block of `n` bytes yields at most its frame's block size and at
/// most 255 bytes per byte (a match length grows by 255 per byte); a stored one its size.
/// Reads the 4-byte header of each block, not the blocks.
fn lz4_frame_bound(
    start: u64,
    end: u64,
    read: &mut impl FnMut(u64, &mut [u8]) -> Result<(), MessageError>,
) -> Result<u64, MessageError> {
    const MAGIC: u32 = 0x184D_2204;
    const LEGACY_MAGIC: u32 = 0x184C_2102;
    let (max_block, legacy, checksums, mut at) = match word_at(start, end, read)? {
        Some(LEGACY_MAGIC) => (8u64 << 20, true, false, start + 4),
        Some(MAGIC) if end.saturating_sub(start) >= 7 => {
            let mut descriptor = [0u8; 2];
            read(start + 4, &mut descriptor)?;
            let [flags, block] = descriptor;
            let max_block = match (block >> 4) & 0x07 {
                4 => 64u64 << 10,
                5 => 256 << 10,
                6 => 1 << 20,
                7 => 4 << 20,
                // lz4_flex refuses the frame.
                _ => return Ok(0),
            };
            let content_size = if flags & 0x08 != 0 { 8 } else { 0 };
            let dictionary = if flags & 0x01 != 0 { 4 } else { 0 };
            // Magic, descriptor, the optional fields, the header checksum.
            let header = 4 + 2 + content_size + dictionary + 1;
            (max_block, false, flags & 0x10 != 0, start + header)
        }
        // Skippable frames and other magic numbers are refused: nothing is decompressed.
        _ => return Ok(0),
    };
    let mut total = 0u64;
    while let Some(info) = word_at(at, end, read)? {
        if info == 0 {
            break;
        }
        let (stored, size) = if legacy {
            (false, u64::from(info))
        } else {
            (info & 0x8000_0000 != 0, u64::from(info & 0x7fff_ffff))
        };
        if size > max_block {
            break;
        }
        total = total.saturating_add(if stored {
            size
        } else {
            max_block.min(size.saturating_mul(255))
        });
        at = at.saturating_add(4 + size + if checksums { 4 } else { 0 });
    }
    Ok(total)
}

/// The little-endian u32 at body offset `at`, `None` when fewer than 4 bytes are left
/// before `end`.
fn word_at(
    at: u64,
    end: u64,
    read: &mut impl FnMut(u64, &mut [u8]) -> Result<(), MessageError>,
) -> Result<Option<u32>, MessageError> {
    if end.saturating_sub(at) < 4 {
        return Ok(None);
    }
    let mut word = [0u8; 4];
    read(at, &mut word)?;
    Ok(Some(u32::from_le_bytes(word)))
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
pub(crate) mod tests {
    use arrow::ipc::convert::fb_to_schema;
    use arrow::ipc::{FieldBuilder, IntBuilder, SchemaBuilder, Type};
    use flatbuffers::FlatBufferBuilder;

    use super::*;

    /// An IPC schema message (a valid flatbuffer) whose one field is a 7-bit integer:
    /// arrow-ipc's schema conversion panics on it. Shared with `ingest`'s tests.
    pub(crate) fn seven_bit_schema_message() -> Vec<u8> {
        int_schema_message(7, arrow::ipc::Endianness::Little)
    }

    /// The metadata of a hand-made IPC schema message (a valid flatbuffer, no prefix) of one
    /// nullable integer field of `bit_width` bits, declaring `endianness`. Shared with the
    /// data plane's tests.
    pub(crate) fn int_schema_message(
        bit_width: i32,
        endianness: arrow::ipc::Endianness,
    ) -> Vec<u8> {
        use arrow::ipc::{MessageBuilder, MetadataVersion};
        let mut fbb = FlatBufferBuilder::new();
        let int = {
            let mut b = IntBuilder::new(&mut fbb);
            b.add_bitWidth(bit_width);
            b.add_is_signed(true);
            b.finish()
        };
        let name = fbb.create_string("a");
        let field = {
            let mut b = FieldBuilder::new(&mut fbb);
            b.add_name(name);
            b.add_type_type(Type::Int);
            b.add_type_(int.as_union_value());
            b.add_nullable(true);
            b.finish()
        };
        let fields = fbb.create_vector(&[field]);
        let schema = {
            let mut b = SchemaBuilder::new(&mut fbb);
            b.add_endianness(endianness);
            b.add_fields(fields);
            b.finish()
        };
        let message = {
            let mut b = MessageBuilder::new(&mut fbb);
            b.add_version(MetadataVersion::V5);
            b.add_header_type(MessageHeader::Schema);
            b.add_header(schema.as_union_value());
            b.finish()
        };
        fbb.finish(message, None);
        fbb.finished_data().to_vec()
    }

    /// A batch of 10,000 zeros in one Int64 column `z`, and the LZ4 write options that
    /// compress it: its values buffer says 80,000 bytes once decompressed ([`ZEROS_BYTES`]).
    /// Shared with `ingest`'s and the data plane's tests.
    pub(crate) fn lz4_zeros() -> (
        arrow::record_batch::RecordBatch,
        arrow::ipc::writer::IpcWriteOptions,
    ) {
        use arrow::array::Int64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let schema =
            std::sync::Arc::new(Schema::new(vec![Field::new("z", DataType::Int64, false)]));
        let batch = arrow::record_batch::RecordBatch::try_new(
            schema,
            vec![std::sync::Arc::new(Int64Array::from(vec![0i64; 10_000]))],
        )
        .unwrap();
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
            .unwrap();
        (batch, options)
    }

    /// A batch of one row in `columns` dictionary columns (`d0`, `d1`, ...), each with its
    /// own dictionary (ids 0, 1, ... in a stream arrow writes) of `values` Int64 zeros:
    /// `8 × values` bytes once decoded, a few kilobytes at most compressed. Shared with the
    /// data plane's tests.
    pub(crate) fn zero_dictionaries(
        columns: usize,
        values: usize,
    ) -> arrow::record_batch::RecordBatch {
        use arrow::array::{ArrayRef, DictionaryArray, Int8Array, Int64Array};
        use arrow::datatypes::Int8Type;
        use std::sync::Arc;
        let zeros = Arc::new(Int64Array::from(vec![0i64; values])) as ArrayRef;
        let columns: Vec<(String, ArrayRef)> = (0..columns)
            .map(|c| {
                let keys = Int8Array::from(vec![0i8]);
                let array = DictionaryArray::<Int8Type>::try_new(keys, zeros.clone()).unwrap();
                (format!("d{c}"), Arc::new(array) as ArrayRef)
            })
            .collect();
        arrow::record_batch::RecordBatch::try_from_iter(columns).unwrap()
    }

    /// Write options compressing with `codec` (none for `None`).
    pub(crate) fn compressed(
        codec: Option<CompressionType>,
    ) -> arrow::ipc::writer::IpcWriteOptions {
        arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(codec)
            .unwrap()
    }

    /// Each delta dictionary is concatenated to the dictionary so far: what a stream's
    /// deltas make its reader copy is counted from their bodies and bounded; replacements
    /// copy nothing.
    #[test]
    fn delta_dictionaries_are_counted_for_what_they_make_the_reader_copy() {
        use arrow::array::{ArrayRef, DictionaryArray, Int8Array, StringArray};
        use arrow::datatypes::Int8Type;
        use arrow::ipc::writer::{DictionaryHandling, IpcWriteOptions};
        use std::io::Write;
        use std::sync::Arc;
        // Batch k's dictionary is the words 0..=k: with deltas the writer sends one word
        // each, as replacements the whole dictionary each.
        let batches: Vec<arrow::record_batch::RecordBatch> = (0..50)
            .map(|k| {
                let words: Vec<String> = (0..=k).map(|w| format!("word{w}")).collect();
                let keys = Int8Array::from_iter_values([k as i8]);
                let values = Arc::new(StringArray::from(words)) as ArrayRef;
                let array = DictionaryArray::<Int8Type>::try_new(keys, values).unwrap();
                arrow::record_batch::RecordBatch::try_from_iter([(
                    "w",
                    Arc::new(array) as ArrayRef,
                )])
                .unwrap()
            })
            .collect();
        let walk = |handling: DictionaryHandling, max_delta_copy: u64| {
            let options = IpcWriteOptions::default().with_dictionary_handling(handling);
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(&ipc_stream(&batches, options)).unwrap();
            let bounds = MessageBounds {
                max_metadata: u64::MAX,
                max_body: u64::MAX,
                max_rows: i64::MAX,
                max_decompressed: u64::MAX,
                max_delta_copy,
            };
            check_stream(&mut file, 0, u64::MAX, &bounds)
        };
        walk(DictionaryHandling::Delta, u64::MAX).unwrap();
        walk(DictionaryHandling::Resend, 0).unwrap();
        // 49 deltas: the dictionary's bodies copied again at each, about 49 × 50 / 2 of
        // them; a bound under that refuses the stream, naming what it would copy.
        let error = walk(DictionaryHandling::Delta, 20_000).unwrap_err();
        assert!(
            matches!(&error, MessageError::OverBound(what)
                if what.contains("delta dictionaries would make a reader copy")
                    && what.ends_with("over the limit of 20000")),
            "{error}"
        );
        walk(DictionaryHandling::Delta, 10_000_000).unwrap();
    }

    /// What [`lz4_zeros`]' values buffer declares once decompressed.
    pub(crate) const ZEROS_BYTES: i64 = 80_000;

    /// An IPC stream of `batches` (schema, batches, end-of-stream marker) written with
    /// `options`. Shared with `ingest`'s and the data plane's tests.
    pub(crate) fn ipc_stream(
        batches: &[arrow::record_batch::RecordBatch],
        options: arrow::ipc::writer::IpcWriteOptions,
    ) -> Vec<u8> {
        let mut stream = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new_with_options(
            &mut stream,
            &batches[0].schema(),
            options,
        )
        .unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
        drop(writer);
        stream
    }

    /// An IPC file of `batches` written with `options`, in a temporary file.
    fn ipc_file(
        batches: &[arrow::record_batch::RecordBatch],
        options: arrow::ipc::writer::IpcWriteOptions,
    ) -> File {
        let mut file = tempfile::tempfile().unwrap();
        let mut writer = arrow::ipc::writer::FileWriter::try_new_with_options(
            &mut file,
            &batches[0].schema(),
            options,
        )
        .unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
        drop(writer);
        file
    }

    /// `bytes` in a temporary file.
    fn in_file(bytes: &[u8]) -> File {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    /// Bounds that leave only the dictionaries' to refuse a message, and deltas copying at
    /// most `max_delta_copy`.
    fn copying_at_most(max_delta_copy: u64) -> MessageBounds {
        MessageBounds {
            max_metadata: u64::MAX,
            max_body: u64::MAX,
            max_rows: i64::MAX,
            max_decompressed: u64::MAX,
            max_delta_copy,
        }
    }

    /// A compressed delta is a few hundred bytes for a mebibyte of dictionary: what the
    /// deltas of a stream or a file make a reader copy is counted from the lengths their
    /// buffers declare once decompressed, as it is from an uncompressed body.
    #[test]
    fn compressed_delta_dictionaries_are_counted_for_what_they_decode_to() {
        use arrow::array::{Array, ArrayRef, DictionaryArray, Int8Array, Int64Array};
        use arrow::datatypes::Int8Type;
        use arrow::ipc::writer::DictionaryHandling;
        use std::sync::Arc;
        // Batch k's dictionary is k MiB of zeros: a dictionary of 1 MiB, then three deltas
        // of 1 MiB, which leave it holding 2, 3 and 4 MiB: 9 MiB copied.
        let zeros = Arc::new(Int64Array::from(vec![0i64; 4 << 17])) as ArrayRef;
        let batches: Vec<arrow::record_batch::RecordBatch> = (1..=4)
            .map(|k| {
                let keys = Int8Array::from(vec![0i8]);
                let values = zeros.slice(0, k << 17);
                let array = DictionaryArray::<Int8Type>::try_new(keys, values).unwrap();
                arrow::record_batch::RecordBatch::try_from_iter([(
                    "d",
                    Arc::new(array) as ArrayRef,
                )])
                .unwrap()
            })
            .collect();
        assert_eq!(batches[3].column(0).len(), 1);
        let copied = 9u64 << 20;
        for codec in [
            Some(CompressionType::ZSTD),
            Some(CompressionType::LZ4_FRAME),
            None,
        ] {
            let options = compressed(codec).with_dictionary_handling(DictionaryHandling::Delta);
            let stream = ipc_stream(&batches, options.clone());
            if codec.is_some() {
                assert!(stream.len() < 64 << 10, "{codec:?}: {}", stream.len());
            }
            let walk =
                |max| check_stream(&mut in_file(&stream), 0, u64::MAX, &copying_at_most(max));
            walk(copied).unwrap();
            let error = walk(copied - 1).unwrap_err();
            assert!(
                matches!(&error, MessageError::OverBound(what)
                    if what.contains(&format!("delta dictionaries would make a reader copy {copied} bytes"))
                        && what.ends_with(&format!("over the limit of {}", copied - 1))),
                "{codec:?}: {error}"
            );
            // An IPC file may hold deltas too (arrow's file reader applies them).
            let mut file = ipc_file(&batches, options);
            check_file(&mut file, &copying_at_most(copied)).unwrap();
            let error = check_file(&mut file, &copying_at_most(copied - 1)).unwrap_err();
            assert!(
                matches!(&error, MessageError::OverBound(what)
                    if what.contains("delta dictionaries")),
                "{codec:?}: {error}"
            );
        }
    }

    /// Seventeen dictionaries of 16 MiB of zeros each, a few kilobytes compressed: every
    /// reader would hold 272 MiB, over [`MAX_DICTIONARY_BYTES`]: a stream or a file of them
    /// is refused before a reader is built; four of them pass.
    #[test]
    fn dictionaries_are_counted_for_what_they_hold_once_decoded() {
        let unbounded = copying_at_most(u64::MAX);
        for codec in [CompressionType::ZSTD, CompressionType::LZ4_FRAME] {
            let options = compressed(Some(codec));
            let batch = zero_dictionaries(17, 2 << 20);
            let stream = ipc_stream(std::slice::from_ref(&batch), options.clone());
            assert!(stream.len() < 2 << 20, "{codec:?}: {}", stream.len());
            let error = check_stream(&mut in_file(&stream), 0, u64::MAX, &unbounded).unwrap_err();
            assert!(
                matches!(&error, MessageError::OverBound(what)
                    if what.contains("285212672 bytes once decoded")
                        && what.ends_with("over the limit of 268435456")),
                "{codec:?}: {error}"
            );
            if codec == CompressionType::ZSTD {
                let error =
                    check_file(&mut ipc_file(&[batch], options.clone()), &unbounded).unwrap_err();
                assert!(
                    matches!(&error, MessageError::OverBound(what)
                        if what.ends_with("over the limit of 268435456")),
                    "{codec:?}: {error}"
                );
            }
            let fine = zero_dictionaries(4, 2 << 20);
            let stream = ipc_stream(std::slice::from_ref(&fine), options.clone());
            check_stream(&mut in_file(&stream), 0, u64::MAX, &unbounded).unwrap();
            check_file(&mut ipc_file(&[fine], options), &unbounded).unwrap();
        }
    }

    /// Four dictionaries of 1 MiB once decoded under a bound of 2 MiB: the third is
    /// refused, naming the bound, whether they are compressed (a few kilobytes each) or not,
    /// in a stream or in a file.
    #[test]
    fn dictionaries_over_the_bound_are_refused_at_the_one_that_crosses_it() {
        let unbounded = copying_at_most(u64::MAX);
        let batch = zero_dictionaries(4, 1 << 17);
        for codec in [
            Some(CompressionType::ZSTD),
            Some(CompressionType::LZ4_FRAME),
            None,
        ] {
            let options = compressed(codec);
            let stream = ipc_stream(std::slice::from_ref(&batch), options.clone());
            if codec.is_some() {
                assert!(stream.len() < 64 << 10, "{codec:?}: {}", stream.len());
            }
            // The third dictionary message, after the schema and two dictionaries.
            let third = {
                let mut at = 0;
                for _ in 0..3 {
                    let meta = i32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap());
                    let meta = meta as usize;
                    let message = arrow::ipc::root_as_message(&stream[at + 8..at + 8 + meta]);
                    at += 8 + meta + message.unwrap().bodyLength() as usize;
                }
                at
            };
            let refusal = format!(
                "the message at byte {third} is refused: the dictionaries would hold 3145728 \
                 bytes once decoded (a reader keeps them all), over the limit of 2097152"
            );
            let walked = walk_stream(&mut in_file(&stream), 0, u64::MAX, &unbounded, 2 << 20);
            assert!(
                matches!(&walked, Err(MessageError::OverBound(what)) if what == &refusal),
                "{codec:?}: {walked:?}"
            );
            walk_stream(&mut in_file(&stream), 0, u64::MAX, &unbounded, 4 << 20).unwrap();
            let mut file = ipc_file(std::slice::from_ref(&batch), options);
            let walked = walk_file(&mut file, &unbounded, 2 << 20);
            assert!(
                matches!(&walked, Err(MessageError::OverBound(what))
                    if what.ends_with("3145728 bytes once decoded (a reader keeps them all), \
                        over the limit of 2097152")),
                "{codec:?}: {walked:?}"
            );
            walk_file(&mut file, &unbounded, 4 << 20).unwrap();
        }
    }

    /// A dictionary that replaces one of the same id holds its own bytes in place of the
    /// other's (a reader drops the one replaced): four replacements of 1 MiB hold 1 MiB.
    #[test]
    fn a_replaced_dictionary_is_counted_in_place_of_the_one_it_replaces() {
        use arrow::array::{ArrayRef, DictionaryArray, Int8Array, Int64Array};
        use arrow::datatypes::Int8Type;
        use std::sync::Arc;
        let batches: Vec<arrow::record_batch::RecordBatch> = (0..4)
            .map(|k| {
                let values = Arc::new(Int64Array::from(vec![k; 1 << 17])) as ArrayRef;
                let keys = Int8Array::from(vec![0i8]);
                let array = DictionaryArray::<Int8Type>::try_new(keys, values).unwrap();
                arrow::record_batch::RecordBatch::try_from_iter([(
                    "d",
                    Arc::new(array) as ArrayRef,
                )])
                .unwrap()
            })
            .collect();
        let unbounded = copying_at_most(u64::MAX);
        for codec in [Some(CompressionType::ZSTD), None] {
            let stream = ipc_stream(&batches, compressed(codec));
            let replaced = stream_dictionaries(&stream);
            assert_eq!(replaced, [(0, false); 4], "{codec:?}: four replacements");
            walk_stream(&mut in_file(&stream), 0, u64::MAX, &unbounded, 1 << 20).unwrap();
            let walked = walk_stream(&mut in_file(&stream), 0, u64::MAX, &unbounded, 1 << 19);
            assert!(
                matches!(&walked, Err(MessageError::OverBound(what))
                    if what.contains("1048576 bytes once decoded")),
                "{codec:?}: {walked:?}"
            );
        }
    }

    /// Where the 8-byte decompressed length of each compressed buffer of the dictionary
    /// messages of `stream` lies.
    fn dictionary_length_prefixes(stream: &[u8]) -> Vec<usize> {
        messages(stream)
            .into_iter()
            .filter(|m| message_of(m).header_as_dictionary_batch().is_some())
            .flat_map(|m| {
                let at = m.as_ptr() as usize - stream.as_ptr() as usize;
                compressed_length_prefixes(m)
                    .into_iter()
                    .map(move |p| at + p)
            })
            .collect()
    }

    /// `(id, is_delta)` of each dictionary message of `stream`.
    fn stream_dictionaries(stream: &[u8]) -> Vec<(i64, bool)> {
        messages(stream)
            .into_iter()
            .filter_map(|m| {
                let dictionary = message_of(m).header_as_dictionary_batch()?;
                Some((dictionary.id(), dictionary.isDelta()))
            })
            .collect()
    }

    /// The metadata of the encapsulated message `frame`.
    fn message_of(frame: &[u8]) -> arrow::ipc::Message<'_> {
        let meta = i32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
        arrow::ipc::root_as_message(&frame[8..8 + meta]).unwrap()
    }

    /// The encapsulated messages of an IPC stream (continuation, length, metadata, body),
    /// up to its end-of-stream marker. Shared with the data plane's tests (its data frames).
    pub(crate) fn messages(stream: &[u8]) -> Vec<&[u8]> {
        let mut messages = Vec::new();
        let mut at = 0;
        while at + 8 <= stream.len() {
            let meta = i32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
            if meta == 0 {
                break;
            }
            let message = arrow::ipc::root_as_message(&stream[at + 8..at + 8 + meta]).unwrap();
            let end = at + 8 + meta + message.bodyLength() as usize;
            messages.push(&stream[at..end]);
            at = end;
        }
        messages
    }

    /// Where the 8-byte decompressed length of each compressed buffer of the dictionary or
    /// record batch in `frame` lies in the frame.
    pub(crate) fn compressed_length_prefixes(frame: &[u8]) -> Vec<usize> {
        let message = message_of(frame);
        let meta_len = 8 + i32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
        let batch = message
            .header_as_dictionary_batch()
            .and_then(|d| d.data())
            .or_else(|| message.header_as_record_batch())
            .unwrap();
        assert!(batch.compression().is_some());
        batch
            .buffers()
            .unwrap()
            .iter()
            .filter(|b| b.length() >= 8)
            .map(|b| meta_len + b.offset() as usize)
            .collect()
    }

    /// A compressed buffer declaring a length no reader can decompress to (more than an
    /// i64 sum holds, negative but not the -1 of a stored buffer) is refused without a
    /// panic, the dictionaries' bound refusing what the batch's bound lets through.
    #[test]
    fn a_buffer_declaring_an_impossible_decompressed_length_is_refused() {
        let batch = zero_dictionaries(2, 1 << 17);
        let stream = ipc_stream(&[batch], compressed(Some(CompressionType::ZSTD)));
        let prefixes = dictionary_length_prefixes(&stream);
        assert_eq!(prefixes.len(), 2, "one values buffer per dictionary");
        let unbounded = copying_at_most(u64::MAX);
        for (length, refusal) in [
            (i64::MAX, "9223372036854775807 bytes once decoded"),
            (1 << 40, "1099511627776 bytes once decoded"),
            (-2, "declares -2 bytes once decompressed"),
            (
                i64::MIN,
                "declares -9223372036854775808 bytes once decompressed",
            ),
        ] {
            let mut bytes = stream.clone();
            for at in &prefixes {
                bytes[*at..*at + 8].copy_from_slice(&length.to_le_bytes());
            }
            let walked = catch(|| check_stream(&mut in_file(&bytes), 0, u64::MAX, &unbounded));
            assert!(
                matches!(&walked, Ok(Err(MessageError::OverBound(what) | MessageError::Malformed(what)))
                    if what.contains(refusal)),
                "{length}: {walked:?}"
            );
        }
        // Past what the batch may declare: refused by that bound first.
        let mut bytes = stream.clone();
        bytes[prefixes[0]..prefixes[0] + 8].copy_from_slice(&i64::MAX.to_le_bytes());
        let bounds = MessageBounds {
            max_decompressed: 1 << 30,
            ..unbounded
        };
        let walked = check_stream(&mut in_file(&bytes), 0, u64::MAX, &bounds);
        assert!(
            matches!(&walked, Err(MessageError::OverBound(what))
                if what.contains("once decompressed, over the limit of 1073741824")),
            "{walked:?}"
        );
    }

    /// [`lz4_zeros`] as an IPC stream (schema, batch, end-of-stream marker).
    pub(crate) fn lz4_zeros_stream() -> Vec<u8> {
        let (batch, options) = lz4_zeros();
        ipc_stream(&[batch], options)
    }

    /// Where in `bytes` (a stream or one of its messages made from [`lz4_zeros`]) the
    /// values buffer's decompressed length is written: overwrite it to make a batch
    /// declare another size.
    pub(crate) fn declared_length_at(bytes: &[u8]) -> usize {
        bytes
            .windows(8)
            .position(|w| w == ZEROS_BYTES.to_le_bytes())
            .expect("the compressed buffer's length prefix")
    }

    /// An LZ4 block that decompresses to 64 KiB of zeros from 267 bytes: a zero, a match of
    /// 65,530 bytes at distance 1 (a length of 15 + 4 grown by 256 bytes of 255 and one of
    /// 231), then the five literal zeros a block ends with.
    fn lz4_block_of_zeros() -> Vec<u8> {
        let mut block = vec![0x1f, 0x00, 0x01, 0x00];
        block.extend([0xff; 256]);
        block.extend([0xe7, 0x50, 0, 0, 0, 0, 0]);
        let mut out = (block.len() as u32).to_le_bytes().to_vec();
        out.extend(block);
        out
    }

    /// A hand-made record batch message (continuation, length and metadata; no body) of
    /// `rows` rows: one field node of as many rows with `nulls` nulls, the `buffers` given as
    /// (offset, length), a declared body of `body_len` bytes, and buffers compressed as LZ4
    /// frames if `lz4`. Shared with `ingest`'s tests.
    pub(crate) fn batch_message(
        rows: i64,
        nulls: i64,
        buffers: &[(i64, i64)],
        body_len: i64,
        lz4: bool,
    ) -> Vec<u8> {
        use arrow::ipc::{
            BodyCompressionBuilder, BodyCompressionMethod, FieldNode, MessageBuilder,
            MetadataVersion, RecordBatchBuilder,
        };
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let nodes = fbb.create_vector(&[FieldNode::new(rows, nulls)]);
        let buffers: Vec<_> = buffers
            .iter()
            .map(|(offset, length)| arrow::ipc::Buffer::new(*offset, *length))
            .collect();
        let buffers = fbb.create_vector(&buffers);
        let compression = lz4.then(|| {
            let mut b = BodyCompressionBuilder::new(&mut fbb);
            b.add_codec(CompressionType::LZ4_FRAME);
            b.add_method(BodyCompressionMethod::BUFFER);
            b.finish()
        });
        let batch = {
            let mut b = RecordBatchBuilder::new(&mut fbb);
            b.add_length(rows);
            b.add_nodes(nodes);
            b.add_buffers(buffers);
            if let Some(compression) = compression {
                b.add_compression(compression);
            }
            b.finish()
        };
        let message = {
            let mut b = MessageBuilder::new(&mut fbb);
            b.add_version(MetadataVersion::V5);
            b.add_header_type(MessageHeader::RecordBatch);
            b.add_header(batch.as_union_value());
            b.add_bodyLength(body_len);
            b.finish()
        };
        fbb.finish(message, None);
        let mut meta = fbb.finished_data().to_vec();
        meta.resize(meta.len().next_multiple_of(8), 0);
        let mut out = vec![0xff; 4];
        out.extend(i32::try_from(meta.len()).unwrap().to_le_bytes());
        out.extend(meta);
        out
    }

    /// An IPC stream of one Int64 column `z` whose one batch of `rows` rows has an LZ4 values
    /// buffer declaring `declared` bytes, holding a frame of `blocks` blocks of 64 KiB of
    /// zeros (the frame header is the one arrow writes). Shared with `ingest`'s tests.
    pub(crate) fn lz4_frame_stream(rows: i64, declared: i64, blocks: usize) -> Vec<u8> {
        let real = lz4_zeros_stream();
        let at = declared_length_at(&real) + 8;
        let mut values = declared.to_le_bytes().to_vec();
        // Magic, flags, block size, header checksum.
        values.extend(&real[at..at + 7]);
        assert!(real[at + 5] >> 4 & 7 >= 4, "blocks of at least 64 KiB");
        for _ in 0..blocks {
            values.extend(lz4_block_of_zeros());
        }
        values.extend([0; 4]);
        let body_len = values.len().next_multiple_of(8);
        values.resize(body_len, 0);
        let batch = batch_message(
            rows,
            0,
            &[(0, 0), (0, body_len as i64)],
            body_len as i64,
            true,
        );
        // The schema message of the real stream, up to its first batch.
        let schema_len = 8 + i32::from_le_bytes(real[4..8].try_into().unwrap()) as usize;
        let mut stream = real[..schema_len].to_vec();
        stream.extend(batch);
        stream.extend(values);
        stream.extend([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        stream
    }

    #[test]
    fn an_lz4_frame_is_counted_for_what_it_can_decompress_to() {
        use std::io::Write;
        let walk = |bytes: &[u8], max_decompressed: u64| {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(bytes).unwrap();
            let bounds = MessageBounds {
                max_metadata: u64::MAX,
                max_body: u64::MAX,
                max_rows: i64::MAX,
                max_decompressed,
                max_delta_copy: u64::MAX,
            };
            check_stream(&mut file, 0, u64::MAX, &bounds)
        };
        // 16 blocks, 1 MiB of zeros, that declare 8 bytes (1 row). The reader decodes the
        // whole frame before it compares: a frame of 4 MB declaring 8 bytes takes 1 GiB.
        let lying = lz4_frame_stream(1, 8, 16);
        let reader = arrow::ipc::reader::StreamReader::try_new(&lying[..], None).unwrap();
        let error = reader.into_iter().next().unwrap().unwrap_err().to_string();
        assert!(
            error.contains("Expected compressed length of 8 got 1048576"),
            "{error}"
        );
        // Each block of 267 bytes can yield up to 255 bytes per byte.
        let error = walk(&lying, 512 << 10).unwrap_err();
        assert!(
            matches!(&error, MessageError::OverBound(what) if what == &format!(
                "the LZ4 frames of a batch can decompress to {} bytes (they declare 8), over \
                 the limit of {}", 16 * 267 * 255, 512 << 10)),
            "{error}"
        );
        // An honest frame passes under what it declares, which counts too.
        let honest = lz4_frame_stream(1 << 17, 1 << 20, 16);
        let reader = arrow::ipc::reader::StreamReader::try_new(&honest[..], None).unwrap();
        assert_eq!(
            reader.into_iter().next().unwrap().unwrap().num_rows(),
            1 << 17
        );
        walk(&honest, 1 << 20).unwrap();
        assert!(walk(&honest, (1 << 20) - 1).is_err());
        // Frames arrow wrote pass under what they declare.
        let real = lz4_zeros_stream();
        walk(&real, ZEROS_BYTES as u64).unwrap();
    }

    #[test]
    fn a_decoder_panic_becomes_an_error() {
        let bytes = seven_bit_schema_message();
        let message = arrow::ipc::root_as_message(&bytes).expect("the flatbuffer is well formed");
        let fb = message.header_as_schema().expect("a schema message");
        let err = contain(|| Ok(fb_to_schema(fb))).unwrap_err();
        assert!(
            err.to_string().contains("malformed Arrow IPC schema"),
            "{err}"
        );
        assert!(err.to_string().contains("bit width of 7"), "{err}");
    }

    #[test]
    fn a_result_passes_through() {
        assert_eq!(contain(|| Ok(7)).unwrap(), 7);
        let err = contain::<()>(|| Err(ArrowError::IpcError("short".into()))).unwrap_err();
        assert_eq!(err.to_string(), "Ipc error: short");
    }
}
