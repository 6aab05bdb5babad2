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
//! decompressor each compressed buffer's declared length. A few hundred bytes can ask for
//! terabytes, and a failed allocation aborts the process, which no `catch_unwind` stops. So
//! before a reader is built over such bytes, [`check_stream`] or [`check_file`] walks the
//! messages (headers and compressed-length prefixes only, no body) and refuses any that
//! declares more than the file holds or more than the caller's [`MessageBounds`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};

use arrow::error::ArrowError;
use arrow::ipc::{Block, Message, MessageHeader};

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
    /// Most bytes the compressed buffers of one batch may declare once decompressed.
    pub(crate) max_decompressed: u64,
}

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
    let end = end.min(file.metadata()?.len());
    let mut at = start;
    let mut meta = Vec::new();
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
        check_batch(&message, body_len, at, bounds, |offset| {
            prefix_at(file, body + offset)
        })?;
        at = body + body_len;
    }
}

/// Walks the IPC *file* `file` as arrow's `FileReader` reads it (`FileReaderBuilder::build`,
/// `read_block` and `parse_message`, arrow-ipc 59.3 reader.rs:1232-1290, 916-938): the footer
/// whose length its last 10 bytes give, then each dictionary and record batch block listed
/// there, a message at the block's offset whose metadata and body must lie inside the file
/// and within `bounds`.
pub(crate) fn check_file(file: &mut File, bounds: &MessageBounds) -> Result<(), MessageError> {
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
    let dictionaries = footer.dictionaries().into_iter().flatten();
    for block in dictionaries.chain(footer.recordBatches().into_iter().flatten()) {
        check_block(file, block, len, bounds)?;
    }
    Ok(())
}

/// One block of a file's footer: its message, as `read_block` and `parse_message` read it.
fn check_block(
    file: &mut File,
    block: &Block,
    len: u64,
    bounds: &MessageBounds,
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
    check_batch(&message, body_len, at, bounds, |offset| {
        prefix_at(file, body + offset)
    })
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

/// Refuses a record or dictionary batch over `bounds.max_rows` rows, or whose compressed
/// buffers declare more than `bounds.max_decompressed` bytes once decompressed (read from
/// the 8-byte prefix of each, at `body` + its offset).
/// Checks one message held in memory, `body` being its body: a batch within `bounds` (rows,
/// and bytes once decompressed). For the frames of a transfer, before anything decodes them.
pub(crate) fn check_message(
    message: &Message<'_>,
    body: &[u8],
    bounds: &MessageBounds,
) -> Result<(), MessageError> {
    check_batch(message, body.len() as u64, 0, bounds, |offset| {
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        body.get(at..at.saturating_add(8))
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| MessageError::Malformed("a buffer lies outside its body".into()))
    })
}

/// The 8 bytes at `offset` of `file`.
fn prefix_at(file: &mut File, offset: u64) -> Result<[u8; 8], MessageError> {
    let mut prefix = [0u8; 8];
    read_at(file, offset, &mut prefix)?;
    Ok(prefix)
}

/// A batch message's rows and, when compressed, the bytes its buffers declare once
/// decompressed (the 8-byte prefix of each, read by `prefix`, at an offset in the body of
/// `body_len` bytes), against `bounds`.
fn check_batch(
    message: &Message<'_>,
    body_len: u64,
    at: u64,
    bounds: &MessageBounds,
    mut prefix: impl FnMut(u64) -> Result<[u8; 8], MessageError>,
) -> Result<(), MessageError> {
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    let Some(batch) = batch else {
        return Ok(());
    };
    if batch.length() > bounds.max_rows {
        return Err(MessageError::OverBound(format!(
            "a batch declares {} rows, over the limit of {}",
            batch.length(),
            bounds.max_rows
        )));
    }
    if batch.compression().is_none() {
        return Ok(());
    }
    let mut declared = 0u64;
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
        let length = prefix(offset)?;
        declared = declared.saturating_add(u64::try_from(i64::from_le_bytes(length)).unwrap_or(0));
    }
    if declared > bounds.max_decompressed {
        return Err(MessageError::OverBound(format!(
            "a batch declares {declared} bytes once decompressed, over the limit of {}",
            bounds.max_decompressed
        )));
    }
    Ok(())
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
        use arrow::ipc::{MessageBuilder, MetadataVersion};
        let mut fbb = FlatBufferBuilder::new();
        let int = {
            let mut b = IntBuilder::new(&mut fbb);
            b.add_bitWidth(7);
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

    /// What [`lz4_zeros`]' values buffer declares once decompressed.
    pub(crate) const ZEROS_BYTES: i64 = 80_000;

    /// [`lz4_zeros`] as an IPC stream (schema, batch, end-of-stream marker).
    pub(crate) fn lz4_zeros_stream() -> Vec<u8> {
        let (batch, options) = lz4_zeros();
        let mut stream = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new_with_options(
            &mut stream,
            &batch.schema(),
            options,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        stream
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
