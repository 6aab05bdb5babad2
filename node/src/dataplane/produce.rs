//! The provider's frame source: a product file turned into the Arrow IPC stream a contract
//! allows, one encapsulated IPC message per data frame, with bounded memory.
//!
//! Two paths produce the same kind of stream:
//!
//! - **passthrough**: the agreement grants every column, has no row filter and the consumer
//!   wants no compression, so the messages stored in the file (an IPC file is a stream plus
//!   a footer) are copied as they are, one at a time;
//! - **select**: `FileReader` reads batch by batch (only the granted and filtered columns),
//!   the row filter runs with Arrow compute kernels, the batch is projected to the granted
//!   columns and re-encoded (optionally LZ4 or ZSTD).
//!
//! The choice depends only on the terms, the request and the file, and both paths are
//! deterministic, so a resumed fetch regenerates the same bytes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions, write_message,
};
use arrow::ipc::{CompressionType, MessageHeader};
use arrow::record_batch::RecordBatch;
use mesh_protocol::descriptor::{ColumnSchema, columns_from_arrow};
use mesh_protocol::transfer::{MAX_DATA_FRAME, Narrowing, TransferTally, narrow_fetch};
use mesh_protocol::{Compression, ContractTerms, Filter, Stripe};

use super::framepool::Spares;
use super::select::BoundFilter;

/// Record batches larger than this in memory are sliced before encoding, so that a frame
/// stays far below [`MAX_DATA_FRAME`] and the pipeline keeps moving.
const SLICE_BYTES: usize = 8 * 1024 * 1024;
/// Read buffer of the product file.
const READ_BUFFER: usize = 1024 * 1024;

/// What the provider will send for one fetch: decided before any data byte leaves.
#[derive(Debug)]
pub(crate) struct ServePlan {
    /// The product file.
    pub(crate) path: PathBuf,
    /// Granted columns in stream order (the file's order).
    pub(crate) schema: Vec<ColumnSchema>,
    /// The row filter, if any.
    pub(crate) filter: Option<Filter>,
    /// IPC compression.
    pub(crate) compression: Compression,
    /// Copy the file's messages as they are.
    pub(crate) passthrough: bool,
    /// Data frames of the whole stream, when known in advance.
    pub(crate) total_batches: Option<u64>,
}

/// Why a plan could not be made or a stream could not be produced.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProduceError {
    /// The product file is unreadable or not Arrow.
    #[error("the product file `{path}` cannot be served: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The terms do not fit the data (restricted column, filter on a missing column, ...).
    #[error("{0}")]
    Terms(String),
    /// The consumer went away; nothing to report.
    #[error("the consumer stopped reading")]
    Cancelled,
}

fn file_error(path: &Path, reason: impl ToString) -> ProduceError {
    ProduceError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Decides what to send for `terms` from the file at `path`. `restricted` is the product
/// policy's restricted columns: a second line of defence, the protocol never grants them.
/// `narrowing` is the consumer's request for fewer columns or rows, intersected with the
/// agreement by [`narrow_fetch`] (a narrowed fetch is always re-encoded).
pub(crate) fn plan(
    path: &Path,
    terms: &ContractTerms,
    restricted: &[String],
    compression: Compression,
    narrowing: Option<&Narrowing>,
) -> Result<ServePlan, ProduceError> {
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    let reader = crate::arrow_guard::contain(|| FileReader::try_new_buffered(file, None))
        .map_err(|e| file_error(path, e))?;
    let schema = reader.schema();
    let all = columns_from_arrow(&schema);
    // Only the columns the agreement pins (restricted ones never), whatever this version adds.
    let served = narrow_fetch(terms, &all, restricted, narrowing)
        .map_err(|refusal| ProduceError::Terms(refusal.message))?;
    if let Some(c) = served.columns.iter().find(|c| restricted.contains(&c.name)) {
        return Err(ProduceError::Terms(format!(
            "column `{}` is restricted by the product policy and is never served",
            c.name
        )));
    }
    let mut passthrough = served.filter.is_none()
        && !served.narrowed
        && compression == Compression::None
        && served.columns.len() == all.len()
        && !has_dictionaries(&schema);
    let mut total_batches = None;
    if passthrough {
        match footer_blocks(path) {
            Ok(blocks) if blocks.fits => total_batches = Some(blocks.messages),
            _ => passthrough = false,
        }
    }
    Ok(ServePlan {
        path: path.to_owned(),
        schema: served.columns,
        filter: served.filter,
        compression,
        passthrough,
        total_batches,
    })
}

fn has_dictionaries(schema: &Schema) -> bool {
    schema
        .flattened_fields()
        .iter()
        .any(|f| matches!(f.data_type(), arrow::datatypes::DataType::Dictionary(..)))
}

/// What the footer says about the stored messages.
struct FooterBlocks {
    /// Schema, dictionary and record batch messages.
    messages: u64,
    /// Every message fits one data frame.
    fits: bool,
}

fn footer_blocks(path: &Path) -> Result<FooterBlocks, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < 18 {
        return Err("too short".into());
    }
    let mut tail = [0u8; 10];
    file.seek(SeekFrom::End(-10)).map_err(|e| e.to_string())?;
    file.read_exact(&mut tail).map_err(|e| e.to_string())?;
    let footer_len = arrow::ipc::reader::read_footer_length(tail).map_err(|e| e.to_string())?;
    if footer_len as u64 + 10 > len {
        return Err("footer longer than the file".into());
    }
    let mut footer = vec![0u8; footer_len];
    file.seek(SeekFrom::End(-10 - footer_len as i64))
        .map_err(|e| e.to_string())?;
    file.read_exact(&mut footer).map_err(|e| e.to_string())?;
    let footer = arrow::ipc::root_as_footer(&footer).map_err(|e| e.to_string())?;
    let mut messages = 1u64;
    let mut fits = true;
    for blocks in [footer.dictionaries(), footer.recordBatches()]
        .into_iter()
        .flatten()
    {
        for b in blocks {
            messages += 1;
            let size = b.metaDataLength() as i64 + b.bodyLength();
            fits &= size > 0 && size as u64 <= MAX_DATA_FRAME as u64;
        }
    }
    Ok(FooterBlocks { messages, fits })
}

/// Counts, hashes and forwards frames; frames before `resume_from` are counted and hashed
/// but not forwarded. Without hashing (the stream's summary is already known) it only counts.
pub(crate) struct Emitter<F: FnMut(Vec<u8>) -> bool> {
    /// Everything produced so far, from batch 0.
    pub(crate) tally: TransferTally,
    /// Whether the tally hashes the frames.
    hashing: bool,
    /// Index of the next frame.
    index: u64,
    /// First frame to forward.
    resume_from: u64,
    /// The frames to forward from there on.
    stripe: Stripe,
    /// Buffers of frames already sent, for passthrough frames (see `framepool`).
    spares: Option<Spares>,
    /// Forwards a frame; `false` when the consumer is gone.
    forward: F,
}

impl<F: FnMut(Vec<u8>) -> bool> Emitter<F> {
    /// An emitter starting at batch 0 that forwards the frames of `stripe` from
    /// `resume_from` on, and counts (and, if `hashing`, hashes) all of them.
    pub(crate) fn new(resume_from: u64, stripe: Stripe, hashing: bool, forward: F) -> Self {
        Self {
            tally: TransferTally::new(),
            hashing,
            index: 0,
            resume_from,
            stripe,
            spares: None,
            forward,
        }
    }

    /// Takes passthrough frame buffers from `spares`, if any, instead of allocating each.
    pub(crate) fn reusing(mut self, spares: Option<Spares>) -> Self {
        self.spares = spares;
        self
    }

    /// An empty buffer with room for `len` bytes.
    fn buffer(&self, len: usize) -> Vec<u8> {
        match &self.spares {
            Some(spares) => spares.take(len),
            None => Vec::with_capacity(len),
        }
    }

    /// Whether the next frame's bytes are needed: to hash them, or to forward them.
    fn needs_next(&self) -> bool {
        self.hashing || (self.index >= self.resume_from && self.stripe.carries(self.index))
    }

    /// Counts the next frame without its bytes (when [`Emitter::needs_next`] says so).
    fn skip(&mut self, rows: u64) {
        debug_assert!(!self.needs_next());
        self.tally.count(1, rows);
        self.index += 1;
    }

    fn emit(&mut self, frame: Vec<u8>, rows: u64) -> Result<(), ProduceError> {
        if self.hashing {
            self.tally.add_batch(&frame, rows);
        } else {
            self.tally.count(1, rows);
        }
        let index = self.index;
        self.index += 1;
        if index >= self.resume_from && self.stripe.carries(index) && !(self.forward)(frame) {
            return Err(ProduceError::Cancelled);
        }
        Ok(())
    }
}

/// Produces the whole stream of `plan` into `emitter` (blocking: run it off the runtime).
pub(crate) fn produce<F: FnMut(Vec<u8>) -> bool>(
    plan: &ServePlan,
    emitter: &mut Emitter<F>,
) -> Result<(), ProduceError> {
    if plan.passthrough {
        passthrough(plan, emitter)
    } else {
        select(plan, emitter)
    }
}

/// Copies the IPC messages stored in the file, one frame each.
fn passthrough<F: FnMut(Vec<u8>) -> bool>(
    plan: &ServePlan,
    emitter: &mut Emitter<F>,
) -> Result<(), ProduceError> {
    let path = &plan.path;
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    skip_file_header(&mut reader).map_err(|e| file_error(path, e))?;
    let mut first = true;
    let mut head = Vec::new();
    loop {
        let mut prefix = [0u8; 8];
        reader
            .read_exact(&mut prefix)
            .map_err(|e| file_error(path, format!("truncated message: {e}")))?;
        if prefix[..4] != [0xff; 4] {
            return Err(file_error(path, "message without continuation marker"));
        }
        let meta_len = i32::from_le_bytes(prefix[4..].try_into().expect("4 bytes"));
        if meta_len == 0 {
            break; // end of stream; the footer follows
        }
        let meta_len =
            usize::try_from(meta_len).map_err(|_| file_error(path, "negative metadata length"))?;
        if meta_len > MAX_DATA_FRAME {
            return Err(file_error(path, "oversized message metadata"));
        }
        head.clear();
        head.extend_from_slice(&prefix);
        head.resize(8 + meta_len, 0);
        reader
            .read_exact(&mut head[8..])
            .map_err(|e| file_error(path, e))?;
        let (kind, body_len, rows, compressed) = {
            let message = arrow::ipc::root_as_message(&head[8..])
                .map_err(|e| file_error(path, format!("bad message: {e}")))?;
            let (rows, compressed) = match message.header_as_record_batch() {
                Some(b) => (b.length().max(0) as u64, b.compression().is_some()),
                None => (0, false),
            };
            (
                message.header_type(),
                message.bodyLength(),
                rows,
                compressed,
            )
        };
        if first != (kind == MessageHeader::Schema) {
            return Err(file_error(path, "the schema is not the first message"));
        }
        first = false;
        if compressed {
            return Err(file_error(path, "stored batches are compressed"));
        }
        let body_len = usize::try_from(body_len)
            .ok()
            .filter(|b| 8 + meta_len + b <= MAX_DATA_FRAME)
            .ok_or_else(|| file_error(path, "message larger than a data frame"))?;
        // Another stripe's frame, or one the consumer already holds, with the summary known:
        // counted, not read. A file cut short shows at the next message.
        if !emitter.needs_next() {
            reader
                .seek_relative(body_len as i64)
                .map_err(|e| file_error(path, e))?;
            emitter.skip(rows);
            continue;
        }
        // Read the body straight into the frame's spare capacity (no zero-filling first).
        let mut frame = emitter.buffer(8 + meta_len + body_len);
        frame.extend_from_slice(&head);
        let read = (&mut reader)
            .take(body_len as u64)
            .read_to_end(&mut frame)
            .map_err(|e| file_error(path, e))?;
        if read != body_len {
            return Err(file_error(path, "truncated message body"));
        }
        emitter.emit(frame, rows)?;
    }
    Ok(())
}

/// Reads the magic and its zero padding (to the writer's alignment, 8 to 64 bytes), leaving
/// `reader` at the first message.
fn skip_file_header(reader: &mut impl BufRead) -> Result<(), String> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).map_err(|e| e.to_string())?;
    if &magic[..6] != b"ARROW1" {
        return Err("not an Arrow IPC file".into());
    }
    for _ in 0..8 {
        let buf = reader.fill_buf().map_err(|e| e.to_string())?;
        if buf.len() < 8 {
            return Err("truncated Arrow file".into());
        }
        if buf[..8] == [0; 8] {
            reader.consume(8);
            continue;
        }
        if buf[..4] == [0xff; 4] {
            return Ok(());
        }
        return Err("unexpected bytes after the Arrow magic".into());
    }
    Err("the Arrow magic is followed by too much padding".into())
}

/// Reads, filters, projects and re-encodes batch by batch.
/// Stored batches in a row that a filter may drop entirely before an empty batch is sent in
/// their place. A consumer takes a stream that moves no byte for the stall bound
/// ([`STALL_TIMEOUT`](super::STALL_TIMEOUT)) for a provider that stopped, and a filter that
/// matches nothing in a large product would otherwise send nothing while it scans. A count of
/// batches, not a time, so that the frames (and a resumed fetch's frame numbers) are the same
/// on every run.
pub(crate) const EMPTY_RUN: usize = 64;

fn select<F: FnMut(Vec<u8>) -> bool>(
    plan: &ServePlan,
    emitter: &mut Emitter<F>,
) -> Result<(), ProduceError> {
    let path = &plan.path;
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    let full = crate::arrow_guard::contain(|| FileReader::try_new_buffered(file, None))
        .map_err(|e| file_error(path, e))?
        .schema();
    // Read only the granted columns and those the filter needs, in file order.
    let needed: Vec<usize> = (0..full.fields().len())
        .filter(|&i| {
            let name = full.field(i).name();
            plan.schema.iter().any(|c| &c.name == name)
                || plan
                    .filter
                    .as_ref()
                    .is_some_and(|f| f.columns().any(|c| c == name))
        })
        .collect();
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    // The batches carry the projected columns; `FileReader::schema` is the file's whole
    // schema, so the indices below are taken from the projection itself.
    let read_schema: SchemaRef =
        std::sync::Arc::new(full.project(&needed).map_err(|e| file_error(path, e))?);
    let mut reader = crate::arrow_guard::contain(|| {
        FileReader::try_new(BufReader::with_capacity(READ_BUFFER, file), Some(needed))
    })
    .map_err(|e| file_error(path, e))?;
    let filter = plan
        .filter
        .as_ref()
        .map(|f| BoundFilter::bind(f, &read_schema))
        .transpose()
        .map_err(|e| ProduceError::Terms(e.to_string()))?;
    let out_indices: Vec<usize> = plan
        .schema
        .iter()
        .map(|c| read_schema.index_of(&c.name))
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, e))?;
    let out_schema: SchemaRef = std::sync::Arc::new(
        read_schema
            .project(&out_indices)
            .map_err(|e| file_error(path, e))?,
    );
    // Never emit a column the agreement does not grant.
    let names: Vec<&str> = out_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let granted: Vec<&str> = plan.schema.iter().map(|c| c.name.as_str()).collect();
    if names != granted {
        return Err(ProduceError::Terms(format!(
            "internal check failed: would send columns {names:?}, granted {granted:?}"
        )));
    }
    let options = write_options(plan.compression).map_err(|e| file_error(path, e))?;
    let generator = IpcDataGenerator::default();
    let mut tracker = DictionaryTracker::new(false);
    let mut context = IpcWriteContext::default();
    let encode_err = |e: arrow::error::ArrowError| file_error(path, format!("encoding: {e}"));

    let schema_message =
        generator.schema_to_bytes_with_dictionary_tracker(&out_schema, &mut tracker, &options);
    let mut frame = Vec::new();
    write_message(&mut frame, schema_message, &options).map_err(encode_err)?;
    emitter.emit(frame, 0)?;

    let mut dropped = 0;
    // A damaged product file must not take the serving thread down with an assertion of
    // arrow's (a buffer outside its message): the consumer is told, and the daemon goes on.
    let mut next = || {
        crate::arrow_guard::catch(|| reader.next()).unwrap_or_else(|why| {
            Some(Err(arrow::error::ArrowError::IpcError(format!(
                "malformed batch ({why})"
            ))))
        })
    };
    while let Some(batch) = next() {
        let batch = batch.map_err(|e| file_error(path, e))?;
        let batch = match &filter {
            Some(f) => f.apply(&batch).map_err(encode_err)?,
            None => batch,
        };
        if batch.num_rows() == 0 {
            dropped += 1;
            if dropped < EMPTY_RUN {
                continue;
            }
        }
        dropped = 0;
        let batch = batch.project(&out_indices).map_err(encode_err)?;
        for slice in slices(&batch) {
            let (dictionaries, message) = generator
                .encode(&slice, &mut tracker, &options, &mut context)
                .map_err(encode_err)?;
            for d in dictionaries {
                let mut frame = Vec::new();
                write_message(&mut frame, d, &options).map_err(encode_err)?;
                if frame.len() > MAX_DATA_FRAME {
                    return Err(file_error(
                        path,
                        "an encoded dictionary exceeds the frame limit",
                    ));
                }
                emitter.emit(frame, 0)?;
            }
            let mut frame =
                Vec::with_capacity(message.ipc_message.len() + message.arrow_data.len() + 72);
            write_message(&mut frame, message, &options).map_err(encode_err)?;
            if frame.len() > MAX_DATA_FRAME {
                return Err(file_error(path, "an encoded batch exceeds the frame limit"));
            }
            emitter.emit(frame, slice.num_rows() as u64)?;
        }
    }
    Ok(())
}

/// IPC options for `compression`.
pub(crate) fn write_options(
    compression: Compression,
) -> Result<IpcWriteOptions, arrow::error::ArrowError> {
    let codec = match compression {
        Compression::None => None,
        Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
        Compression::Zstd => Some(CompressionType::ZSTD),
    };
    IpcWriteOptions::default().try_with_compression(codec)
}

/// `batch` cut into slices of about [`SLICE_BYTES`] (deterministic for a given batch).
fn slices(batch: &RecordBatch) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    let bytes = batch.get_array_memory_size().max(1);
    if bytes <= SLICE_BYTES || rows <= 1 {
        return vec![batch.clone()];
    }
    let per_slice = (rows * SLICE_BYTES / bytes).max(1);
    (0..rows)
        .step_by(per_slice)
        .map(|start| batch.slice(start, per_slice.min(rows - start)))
        .collect()
}
