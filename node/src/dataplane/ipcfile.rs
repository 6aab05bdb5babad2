//! The consumer's output: the received Arrow IPC stream laid out as an Arrow IPC *file*.
//!
//! An IPC file is the 8-byte magic, the stream's messages, an end-of-stream marker and a
//! footer that indexes the dictionary and record batch messages. Each received data frame is
//! one encapsulated message, so the builder appends it verbatim (no re-encoding) and
//! remembers its block; [`IpcFileBuilder::finish_with`] writes the footer. The bytes between
//! the magic and the end-of-stream marker are exactly the stream the provider hashed, which
//! makes resuming simple: [`IpcFileBuilder::resume`] re-reads the complete messages of a
//! partial file, re-hashes them and truncates whatever follows.
//!
//! A provider signs whatever it sends, so the signed trailer says nothing about whether
//! Arrow can read the bytes. The builder therefore decodes each message before it appends
//! it, as arrow's file and stream readers will ([`Decoding`]): a schema must come back from
//! the footer the builder will write as the same schema with the same dictionary ids, and
//! every dictionary and record batch must decode and validate against it, in the stream's
//! order, with the dictionaries received so far. A file the consumer seals is a file Arrow
//! reads; anything else is refused with the message at fault, before it is written.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::buffer::{Buffer, MutableBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::convert::{IpcSchemaEncoder, fb_to_schema};
use arrow::ipc::writer::DictionaryTracker;
use arrow::ipc::{Block, Endianness, FooterBuilder, MessageHeader, MetadataVersion};
use mesh_protocol::transfer::{MAX_DATA_FRAME, TransferTally};

use super::appendfile::AppendFile;

/// Magic at both ends of an Arrow IPC file.
const MAGIC: &[u8; 6] = b"ARROW1";
/// The magic padded with zeros to 64 bytes, as arrow-rs writes it, so that every message
/// starts 64-byte aligned.
pub(crate) const HEADER_LEN: usize = 64;
/// Most messages one file holds. Each costs the builder 24 bytes of index until the footer
/// is written, and a footer must stay under flatbuffers' 2 GiB: without a bound a provider
/// streaming tiny batches could grow the index until writing the footer panicked. 4 Mi
/// messages is an index of at most 96 MiB, and a product of 65,536-row batches (what a
/// publish writes) would need 2^38 rows to reach it.
pub(crate) const MAX_MESSAGES: u64 = 1 << 22;
/// Most bytes the dictionaries of one stream may hold at once, counted for what each holds
/// once decoded ([`crate::arrow_guard::Dictionaries`]): every reader of the file (the query
/// engine, the Flight endpoint, a conversion, arrow's `FileReader`) keeps all of them in
/// memory, and so does the builder while it decodes the stream. Without a bound a provider
/// could make each reader hold any number of dictionaries, each of a 64 MiB body or of a
/// compressed body of a few kilobytes that decodes to 128 MiB.
pub(crate) const MAX_DICTIONARY_BYTES: u64 = crate::arrow_guard::MAX_DICTIONARY_BYTES;
/// Most bytes the delta dictionaries of one stream may make a reader copy: a delta is
/// concatenated to the dictionary so far, so many small deltas cost time quadratic in their
/// number (4 million one-value deltas: tens of terabytes copied) while the dictionary stays
/// small. 4 GiB is about a second of copying; meshnode's own providers send no deltas (a
/// stored product is an IPC file written without them).
pub(crate) const MAX_DELTA_COPY: u64 = 4 * 1024 * 1024 * 1024;
use crate::batch_values::MAX_BATCH_VALUES;

/// What one data frame holds.
#[derive(Debug)]
pub(crate) struct MessageInfo {
    /// Schema, dictionary batch or record batch.
    kind: MessageHeader,
    /// Prefix, flatbuffer and padding: the block's `metaDataLength`.
    meta_len: usize,
    /// Body bytes.
    body_len: usize,
    /// Bytes the message holds once decoded: its body, or what its compressed buffers
    /// declare they decompress to ([`crate::arrow_guard::check_message`]).
    decoded: u64,
    /// Rows of a record batch (0 otherwise).
    pub(crate) rows: u64,
    /// Metadata version, for the footer.
    version: MetadataVersion,
    /// The schema of a schema message.
    schema: Option<SchemaRef>,
    /// `(id, is_delta)` of a dictionary batch.
    dictionary: Option<(i64, bool)>,
}

impl MessageInfo {
    /// What the message is, for a refusal.
    fn describe(&self) -> String {
        match (self.kind, self.dictionary) {
            (MessageHeader::DictionaryBatch, Some((id, delta))) => format!(
                "a {}dictionary batch for dictionary {id}",
                if delta { "delta " } else { "" }
            ),
            (MessageHeader::RecordBatch, _) => {
                format!("a record batch declaring {} rows", self.rows)
            }
            (kind, _) => format!("a {kind:?} message"),
        }
    }
}

/// Checks that `frame` is exactly one encapsulated IPC message and reads its header.
pub(crate) fn inspect(frame: &[u8]) -> Result<MessageInfo, String> {
    if frame.len() < 8 || frame[..4] != [0xff; 4] {
        return Err("a data frame does not start with an IPC message".into());
    }
    let declared = i32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    let meta = usize::try_from(declared)
        .ok()
        .filter(|m| *m > 0 && 8 + m <= frame.len())
        .ok_or("an IPC message declares an impossible metadata length")?;
    let message = arrow::ipc::root_as_message(&frame[8..8 + meta])
        .map_err(|e| format!("an IPC message header does not decode: {e}"))?;
    let body_len = usize::try_from(message.bodyLength())
        .ok()
        .filter(|b| 8 + meta + b == frame.len())
        .ok_or("an IPC message body does not fill its data frame")?;
    // Whatever reads these bytes later (a query, the Flight endpoint's stream, a
    // conversion) would allocate what a compressed batch declares before it decompresses a
    // byte, and a failed allocation aborts the process.
    let received = crate::arrow_guard::MessageBounds {
        max_rows: i64::MAX,
        ..super::convert::DECODE_BOUNDS
    };
    let decoded = crate::arrow_guard::check_message(&message, &frame[8 + meta..], &received)
        .map_err(|e| format!("a data frame is refused: {e}"))?;
    let kind = message.header_type();
    let mut info = MessageInfo {
        kind,
        meta_len: 8 + meta,
        body_len,
        decoded,
        rows: 0,
        version: message.version(),
        schema: None,
        dictionary: None,
    };
    match kind {
        MessageHeader::Schema => {
            let schema = message
                .header_as_schema()
                .ok_or("a schema message has no schema")?;
            if schema.endianness() != Endianness::Little {
                return Err("the schema message declares big-endian data".into());
            }
            info.schema = Some(Arc::new(
                crate::arrow_guard::contain(|| Ok(fb_to_schema(schema)))
                    .map_err(|e| format!("the stream schema does not decode: {e}"))?,
            ));
        }
        MessageHeader::RecordBatch => {
            let batch = message
                .header_as_record_batch()
                .ok_or("a record batch message has no header")?;
            info.rows = u64::try_from(batch.length()).map_err(|_| "negative row count")?;
        }
        MessageHeader::DictionaryBatch => {
            let dict = message
                .header_as_dictionary_batch()
                .ok_or("a dictionary message has no header")?;
            info.dictionary = Some((dict.id(), dict.isDelta()));
        }
        other => return Err(format!("unexpected IPC message type {other:?}")),
    }
    Ok(info)
}

/// Appends received messages to a partial Arrow file and finishes it with a footer.
#[derive(Debug)]
pub(crate) struct IpcFileBuilder {
    /// The partial file, appended to without the page cache where the file system allows.
    out: AppendFile,
    /// Current length of the file.
    offset: u64,
    /// The stream schema, from the first message.
    schema: Option<SchemaRef>,
    /// Metadata version of the schema message.
    version: MetadataVersion,
    /// The stream as Arrow's readers decode it, once its schema arrived.
    decoding: Option<Decoding>,
    /// Blocks of dictionary batches.
    dictionaries: Vec<Block>,
    /// Blocks of record batches.
    batches: Vec<Block>,
    /// Dictionary ids seen (a replacement cannot be expressed in a file).
    dictionary_ids: HashSet<i64>,
    /// Count and hash of the stream from batch 0 (only counts after
    /// [`IpcFileBuilder::hash_elsewhere`]).
    pub(crate) tally: TransferTally,
    /// Whether appended messages are hashed here.
    hashing: bool,
}

/// Whether `path` names the open `file` itself and that is a regular file (not reached
/// through a symbolic link), checked before anything is written to it.
pub(crate) fn is_plain_file(file: &File, path: &Path) -> bool {
    let (Ok(opened), Ok(named)) = (file.metadata(), std::fs::symlink_metadata(path)) else {
        return false;
    };
    if !named.file_type().is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        opened.dev() == named.dev() && opened.ino() == named.ino()
    }
    #[cfg(not(unix))]
    {
        opened.is_file()
    }
}

impl IpcFileBuilder {
    /// Creates `path` afresh (replacing a file there) with the file magic. A symbolic link
    /// at `path` is replaced, never followed: the output directory may be shared.
    pub(crate) fn create(path: &Path) -> std::io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut out = AppendFile::new(file, 0, true)?;
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        out.append(&header)?;
        Ok(Self::empty(out))
    }

    fn empty(out: AppendFile) -> Self {
        Self {
            out,
            offset: HEADER_LEN as u64,
            schema: None,
            version: MetadataVersion::V5,
            decoding: None,
            dictionaries: Vec::new(),
            batches: Vec::new(),
            dictionary_ids: HashSet::new(),
            tally: TransferTally::new(),
            hashing: true,
        }
    }

    /// Reopens a partial file: keeps its complete messages (hashing and indexing them again)
    /// and cuts anything after the last one.
    pub(crate) fn resume(path: &Path) -> Result<Self, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        if !is_plain_file(&file, path) {
            return Err("the partial file is not a plain file".into());
        }
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut reader =
            BufReader::with_capacity(1 << 20, file.try_clone().map_err(|e| e.to_string())?);
        let mut header = [0u8; HEADER_LEN];
        reader.read_exact(&mut header).map_err(|e| e.to_string())?;
        if &header[..MAGIC.len()] != MAGIC || header[MAGIC.len()..].iter().any(|b| *b != 0) {
            return Err("the partial file does not start with the Arrow magic".into());
        }
        let out = AppendFile::new(file, len, false).map_err(|e| e.to_string())?;
        let mut builder = Self::empty(out);
        let mut frame = Vec::new();
        loop {
            let start = builder.offset;
            if start + 8 > len {
                break;
            }
            let mut prefix = [0u8; 8];
            reader.read_exact(&mut prefix).map_err(|e| e.to_string())?;
            let meta = i32::from_le_bytes(prefix[4..].try_into().expect("4 bytes"));
            if prefix[..4] != [0xff; 4] || meta <= 0 || meta as usize > MAX_DATA_FRAME {
                break;
            }
            let meta = meta as usize;
            if start + 8 + meta as u64 > len {
                break;
            }
            frame.clear();
            frame.extend_from_slice(&prefix);
            frame.resize(8 + meta, 0);
            reader
                .read_exact(&mut frame[8..])
                .map_err(|e| e.to_string())?;
            let Ok(message) = arrow::ipc::root_as_message(&frame[8..]) else {
                break;
            };
            let Ok(body) = usize::try_from(message.bodyLength()) else {
                break;
            };
            if body > MAX_DATA_FRAME || start + (8 + meta + body) as u64 > len {
                break;
            }
            frame.resize(8 + meta + body, 0);
            reader
                .read_exact(&mut frame[8 + meta..])
                .map_err(|e| e.to_string())?;
            let Ok(info) = inspect(&frame) else {
                break;
            };
            if builder.check(&frame, &info).is_err() {
                break;
            }
            builder.record(&frame, info);
        }
        drop(reader);
        // Whatever follows the last complete message is cut; appending goes on from there.
        builder.out = AppendFile::new(builder.out.into_file(), builder.offset, true)
            .map_err(|e| e.to_string())?;
        Ok(builder)
    }

    /// Stops hashing appended messages (they are still counted) and returns the hash so
    /// far, for a thread that hashes the rest: the digest then comes from that thread.
    pub(crate) fn hash_elsewhere(&mut self) -> TransferTally {
        self.hashing = false;
        self.tally.clone()
    }

    /// Data frames held (the next one to ask for when resuming).
    pub(crate) fn messages(&self) -> u64 {
        self.tally.batches()
    }

    /// Rows held.
    pub(crate) fn rows(&self) -> u64 {
        self.tally.rows()
    }

    /// Length of the partial file.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The stream schema, once its message arrived.
    pub(crate) fn schema(&self) -> Option<&Schema> {
        self.schema.as_deref()
    }

    /// Checks that one message may come next and decodes it as Arrow's readers will,
    /// before it is written: a refused message leaves the file and the index as they were.
    fn check(&mut self, frame: &[u8], info: &MessageInfo) -> Result<(), String> {
        let first = self.tally.batches() == 0;
        if first != (info.kind == MessageHeader::Schema) {
            return Err(if first {
                "the stream does not start with a schema message".into()
            } else {
                "the stream carries a second schema message".into()
            });
        }
        let index = self.tally.batches();
        if let Some(schema) = &info.schema {
            let decoding = Decoding::new(schema.clone(), info.version)
                .map_err(|e| format!("the schema message is refused: {e}"))?;
            self.decoding = Some(decoding);
            return Ok(());
        }
        let decoding = self.decoding.as_mut().expect("a schema came first");
        if info.version != decoding.version {
            return Err(format!(
                "message {index} has metadata version {:?}, the schema {:?}: an Arrow file \
                 holds one version",
                info.version, decoding.version
            ));
        }
        if let Some((id, delta)) = info.dictionary
            && self.dictionary_ids.contains(&id)
            && !delta
        {
            return Err(format!(
                "dictionary {id} is replaced mid-stream, which an Arrow file cannot hold"
            ));
        }
        decoding
            .decode(frame, info)
            .map_err(|e| format!("message {index} ({}) is refused: {e}", info.describe()))?;
        if let Some((id, _)) = info.dictionary {
            self.dictionary_ids.insert(id);
        }
        Ok(())
    }

    /// Indexes one message (checked, and written at `self.offset`).
    fn record(&mut self, frame: &[u8], info: MessageInfo) {
        let block = Block::new(
            self.offset as i64,
            info.meta_len as i32,
            info.body_len as i64,
        );
        match info.kind {
            MessageHeader::Schema => {
                self.schema = info.schema;
                self.version = info.version;
            }
            MessageHeader::DictionaryBatch => self.dictionaries.push(block),
            _ => self.batches.push(block),
        }
        if self.hashing {
            self.tally.add_batch(frame, info.rows);
        } else {
            self.tally.count(1, info.rows);
        }
        self.offset += frame.len() as u64;
    }

    /// Checks one received data frame and appends it.
    pub(crate) fn append(&mut self, frame: &[u8]) -> Result<(), AppendError> {
        if self.tally.batches() >= MAX_MESSAGES {
            return Err(AppendError::Protocol(format!(
                "the stream carries more than {MAX_MESSAGES} messages, the most a file holds here: \
                 the product's batches are too small to fetch (ask its owner to publish larger ones)"
            )));
        }
        let info = inspect(frame).map_err(AppendError::Protocol)?;
        // Validate before writing so a refused frame leaves the file as it was.
        self.check(frame, &info).map_err(AppendError::Protocol)?;
        self.out.append(frame).map_err(AppendError::Io)?;
        self.record(frame, info);
        Ok(())
    }

    /// Another handle to the partial file (for syncing from another thread).
    pub(crate) fn file_handle(&self) -> std::io::Result<File> {
        self.out.file().try_clone()
    }

    /// Forces the data appended so far to disk.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        self.out.sync_data()
    }

    /// Writes the end-of-stream marker and the footer, and syncs the file when `sync`: a
    /// file that is converted into another (which is synced) and then removed need not
    /// reach the disk itself.
    pub(crate) fn finish_with(mut self, sync: bool) -> Result<u64, String> {
        let schema = self
            .schema
            .take()
            .ok_or("the stream ended before its schema")?;
        let data = footer(&schema, self.version, &self.dictionaries, &self.batches);
        let mut tail = Vec::with_capacity(8 + data.len() + 10);
        tail.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        tail.extend_from_slice(&data);
        tail.extend_from_slice(&(data.len() as i32).to_le_bytes());
        tail.extend_from_slice(MAGIC);
        self.out.append(&tail).map_err(|e| e.to_string())?;
        if sync {
            self.out.sync_all()
        } else {
            self.out.flush()
        }
        .map_err(|e| e.to_string())?;
        Ok(self.offset + tail.len() as u64)
    }
}

/// The footer of a file of `schema` in metadata `version` that indexes `dictionaries` and
/// `batches`, as a finished flatbuffer. The schema is encoded as arrow encodes it, which
/// numbers its dictionaries in its own order ([`Decoding::new`] checks that the stream's
/// ids are those).
fn footer(
    schema: &Schema,
    version: MetadataVersion,
    dictionaries: &[Block],
    batches: &[Block],
) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let dictionaries = fbb.create_vector(dictionaries);
    let batches = fbb.create_vector(batches);
    let mut tracker = DictionaryTracker::new(false);
    let schema = IpcSchemaEncoder::new()
        .with_dictionary_tracker(&mut tracker)
        .schema_to_fb_offset(&mut fbb, schema);
    let mut footer = FooterBuilder::new(&mut fbb);
    footer.add_version(version);
    footer.add_schema(schema);
    footer.add_dictionaries(dictionaries);
    footer.add_recordBatches(batches);
    let root = footer.finish();
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

/// Calls `visit` on each of `fields` and the fields nested in them, depth first.
fn each_field(fields: &[arrow::datatypes::FieldRef], visit: &mut impl FnMut(&Field)) {
    for field in fields {
        visit(field);
        each_nested_field(field.data_type(), visit);
    }
}

fn each_nested_field(data_type: &DataType, visit: &mut impl FnMut(&Field)) {
    match data_type {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => each_field(std::slice::from_ref(f), visit),
        DataType::Struct(fields) => each_field(fields, visit),
        DataType::Union(fields, _) => {
            let fields: Vec<_> = fields.iter().map(|(_, f)| f.clone()).collect();
            each_field(&fields, visit);
        }
        DataType::RunEndEncoded(ends, values) => each_field(&[ends.clone(), values.clone()], visit),
        DataType::Dictionary(_, values) => each_nested_field(values, visit),
        _ => {}
    }
}

/// The dictionary ids of `schema`'s fields and of the fields nested in them, depth first.
fn dictionary_ids(schema: &Schema) -> Vec<i64> {
    let mut ids = Vec::new();
    // The ids a file's dictionary messages refer to.
    #[allow(deprecated)]
    each_field(schema.fields(), &mut |f| ids.extend(f.dict_id()));
    ids
}

/// Why arrow would refuse `data_type` as the type of an array it builds itself, when a
/// reader builds one anyway: a decimal whose precision is 0 or over its width's maximum, or
/// whose scale exceeds its precision. Arrow's readers take such a type from a schema
/// message unchecked, and its formatting of the values then panics (`meshnode sql`'s CSV
/// and JSON output, a cast to text in a query).
fn type_refusal(data_type: &DataType) -> Option<String> {
    use arrow::datatypes::{
        Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type,
        validate_decimal_precision_and_scale as valid,
    };
    match data_type {
        DataType::Decimal32(p, s) => valid::<Decimal32Type>(*p, *s).err(),
        DataType::Decimal64(p, s) => valid::<Decimal64Type>(*p, *s).err(),
        DataType::Decimal128(p, s) => valid::<Decimal128Type>(*p, *s).err(),
        DataType::Decimal256(p, s) => valid::<Decimal256Type>(*p, *s).err(),
        DataType::Dictionary(_, values) => return type_refusal(values),
        _ => None,
    }
    .map(|e| e.to_string())
}

/// The received stream decoded message by message as arrow's readers decode it (the file
/// reader with the footer's schema, the stream reader with the schema message): what the
/// builder refuses here, no reader meets in a sealed file.
#[derive(Debug)]
struct Decoding {
    /// The schema of the stream, which the footer gives back unchanged.
    schema: SchemaRef,
    /// The schema message's metadata version, which every message must have (the file
    /// reader refuses a message of another version than its footer's).
    version: MetadataVersion,
    /// The dictionaries so far, by id, as a reader holds them.
    dictionaries: HashMap<i64, ArrayRef>,
    /// What the dictionaries so far hold once decoded, by id, and what their deltas made
    /// a reader copy.
    held: crate::arrow_guard::Dictionaries,
    /// Kept between record batches for their bodies, so that a steady stream does not
    /// allocate (and fault in) a new buffer per frame.
    scratch: Option<MutableBuffer>,
    /// The most bytes the dictionaries may hold ([`MAX_DICTIONARY_BYTES`]; lower in tests).
    max_dictionary_bytes: u64,
    /// The most bytes the deltas may make a reader copy ([`MAX_DELTA_COPY`]; lower in
    /// tests).
    max_delta_copy: u64,
}

impl Decoding {
    /// Starts decoding a stream of `schema`, refused unless the footer the builder will
    /// write gives it back as it is: the same fields, types and metadata, and the same
    /// dictionary ids (a file's dictionary messages are found by the ids its footer
    /// gives, which arrow numbers in its own order).
    fn new(schema: SchemaRef, version: MetadataVersion) -> Result<Self, String> {
        let back = crate::arrow_guard::catch(|| footer(&schema, version, &[], &[]))
            .map_err(|why| format!("the schema cannot be written in a file footer: {why}"))
            .and_then(|bytes| {
                let footer = arrow::ipc::root_as_footer(&bytes)
                    .map_err(|e| format!("the schema's file footer does not decode: {e}"))?;
                let schema = footer.schema().ok_or("the file footer has no schema")?;
                crate::arrow_guard::contain(|| Ok(fb_to_schema(schema)))
                    .map_err(|e| format!("the schema's file footer does not decode: {e}"))
            })?;
        if back != *schema {
            return Err(
                "the schema does not read back from an Arrow file footer as sent (a type or \
                 name arrow writes otherwise)"
                    .into(),
            );
        }
        let mut refusal = None;
        each_field(schema.fields(), &mut |f| {
            if refusal.is_none() {
                refusal = type_refusal(f.data_type())
                    .map(|why| format!("column `{}` is {}: {why}", f.name(), f.data_type()));
            }
        });
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let (sent, written) = (dictionary_ids(&schema), dictionary_ids(&back));
        if sent != written {
            return Err(format!(
                "the schema numbers its dictionaries {sent:?}, where an Arrow file's footer \
                 numbers them {written:?}"
            ));
        }
        Ok(Self {
            schema,
            version,
            dictionaries: HashMap::new(),
            held: crate::arrow_guard::Dictionaries::default(),
            scratch: None,
            max_dictionary_bytes: MAX_DICTIONARY_BYTES,
            max_delta_copy: MAX_DELTA_COPY,
        })
    }

    /// Decodes and validates the dictionary or record batch in `frame` (described by
    /// `info`) as a reader will; a dictionary joins those held.
    fn decode(&mut self, frame: &[u8], info: &MessageInfo) -> Result<(), String> {
        let message = arrow::ipc::root_as_message(&frame[8..info.meta_len])
            .map_err(|e| format!("its header does not decode: {e}"))?;
        let body = &frame[info.meta_len..];
        let version = self.version;
        // Arrow's decoder slices each buffer out of the body with an assertion.
        let batch = match info.kind {
            MessageHeader::DictionaryBatch => {
                message.header_as_dictionary_batch().and_then(|d| d.data())
            }
            _ => message.header_as_record_batch(),
        };
        // And it adds 2 to each variadic buffer count (an overflow, in a debug build).
        let buffers = batch.and_then(|b| b.buffers()).map_or(0, |b| b.len());
        let variadic = batch.and_then(|b| b.variadicBufferCounts());
        if variadic.is_some_and(|counts| counts.iter().any(|c| !(0..=buffers as i64).contains(&c)))
        {
            return Err(format!(
                "it declares variadic buffer counts {:?}, for {buffers} buffers",
                variadic
                    .map(|c| c.iter().collect::<Vec<_>>())
                    .unwrap_or_default()
            ));
        }
        for (n, buffer) in batch
            .and_then(|b| b.buffers())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let inside = u64::try_from(buffer.offset())
                .ok()
                .zip(u64::try_from(buffer.length()).ok())
                .is_some_and(|(at, len)| at.saturating_add(len) <= body.len() as u64);
            if !inside {
                return Err(format!(
                    "its buffer {n} (offset {}, length {}) lies outside its body of {} bytes",
                    buffer.offset(),
                    buffer.length(),
                    body.len()
                ));
            }
        }
        match info.kind {
            MessageHeader::DictionaryBatch => {
                let batch = message
                    .header_as_dictionary_batch()
                    .ok_or("no dictionary batch header")?;
                let (id, delta) = (batch.id(), batch.isDelta());
                if batch.data().is_none() {
                    return Err("the dictionary batch carries no data".into());
                }
                // Counted for what it will hold once decoded before it is: a compressed
                // body of a few kilobytes may decode to 128 MiB, which the builder and
                // every reader keep.
                let counted = self
                    .held
                    .count(
                        id,
                        delta,
                        info.decoded,
                        self.max_dictionary_bytes,
                        self.max_delta_copy,
                    )
                    .map_err(|e| e.to_string())?;
                // Its own buffer: the dictionary keeps it (as a reader keeps the message).
                let buffer = Buffer::from_slice_ref(body);
                let dictionaries = &mut self.dictionaries;
                crate::arrow_guard::catch(|| {
                    arrow::ipc::reader::read_dictionary(
                        &buffer,
                        batch,
                        &self.schema,
                        dictionaries,
                        &version,
                    )
                })
                .unwrap_or_else(|why| Err(arrow::error::ArrowError::IpcError(why)))
                .map_err(|e| e.to_string())?;
                self.held.record(counted);
                Ok(())
            }
            MessageHeader::RecordBatch => {
                let batch = message
                    .header_as_record_batch()
                    .ok_or("no record batch header")?;
                let mut scratch = self.scratch.take().unwrap_or_default();
                scratch.clear();
                scratch.extend_from_slice(body);
                let buffer = Buffer::from(scratch);
                let decoded = crate::arrow_guard::catch(|| {
                    arrow::ipc::reader::read_record_batch(
                        &buffer,
                        batch,
                        self.schema.clone(),
                        &self.dictionaries,
                        None,
                        &version,
                    )
                    // A batch without columns holds its rows all the same.
                    .map(|batch| crate::batch_values::batch_values(&batch))
                })
                .unwrap_or_else(|why| Err(arrow::error::ArrowError::IpcError(why)));
                // Reused unless a large frame made it large (spares are kept the same way).
                if buffer.len() <= super::framepool::MAX_KEPT {
                    self.scratch = buffer.into_mutable().ok();
                }
                let values = decoded.map_err(|e| e.to_string())?;
                if values > MAX_BATCH_VALUES {
                    return Err(format!(
                        "it holds {values} values (its rows and the values of its arrays, \
                         nested ones included), over the limit of {MAX_BATCH_VALUES}"
                    ));
                }
                Ok(())
            }
            other => Err(format!("unexpected IPC message type {other:?}")),
        }
    }
}

/// Why a frame was not appended.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The frame is not a valid message in this position.
    Protocol(String),
    /// The disk failed.
    Io(std::io::Error),
    /// The writer found the disk too full to go on (`crate::diskroom`).
    NoRoom(crate::diskroom::NoRoom),
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Decimal128Array, DictionaryArray, Int8Array, Int32Array, Int64Array, ListArray, NullArray,
        RecordBatch, StringArray,
    };
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::{DataType, Field, Int8Type, Int32Type, Schema};
    use arrow::ipc::writer::IpcWriteOptions;

    use super::*;

    /// The messages of an IPC stream of one schema and one batch, one frame each.
    fn frames() -> Vec<Vec<u8>> {
        frames_with(IpcWriteOptions::default())
    }

    /// [`frames`] written with `options`.
    fn frames_with(options: IpcWriteOptions) -> Vec<Vec<u8>> {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..1000))],
        )
        .unwrap();
        frames_of(&[batch], options)
    }

    /// The data frames of an IPC stream of `batches` written with `options`.
    pub(crate) fn frames_of(batches: &[RecordBatch], options: IpcWriteOptions) -> Vec<Vec<u8>> {
        let stream = crate::arrow_guard::tests::ipc_stream(batches, options);
        messages(&stream).into_iter().map(<[u8]>::to_vec).collect()
    }

    /// Where the scalar `field` of `table` lies in a data frame (whose metadata starts at
    /// byte 8); the field must be stored (not left to its default).
    fn field_at(table: &flatbuffers::Table<'_>, field: flatbuffers::VOffsetT) -> usize {
        let offset = table.vtable().get(field);
        assert_ne!(offset, 0, "the field is stored");
        8 + table.loc() + usize::from(offset)
    }

    /// The header of the message in `frame`.
    fn header(frame: &[u8]) -> arrow::ipc::Message<'_> {
        let meta = i32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
        arrow::ipc::root_as_message(&frame[8..8 + meta]).unwrap()
    }

    fn put_i64(frame: &mut [u8], at: usize, value: i64) {
        frame[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// What became of a sequence of frames.
    #[derive(Debug)]
    enum Sealed {
        /// A frame was refused (the file is left as it was before it).
        Refused(String),
        /// The file was sealed, and arrow's file reader read these rows from it.
        Read(usize),
        /// The file was sealed, and arrow's file reader fails on it (or panics).
        Unreadable(#[expect(dead_code, reason = "shown when a test fails")] String),
    }

    /// Appends `frames` as a fetch does, seals the file and reads it back.
    fn seal_and_read(frames: &[Vec<u8>]) -> Sealed {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.partial");
        let mut builder = IpcFileBuilder::create(&path).unwrap();
        for frame in frames {
            let offset = builder.offset();
            match builder.append(frame) {
                Ok(()) => {}
                Err(AppendError::Protocol(why)) => {
                    assert_eq!(builder.offset(), offset, "a refused frame is not written");
                    return Sealed::Refused(why);
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        builder.finish_with(false).unwrap();
        let read = crate::arrow_guard::catch(|| {
            let reader = arrow::ipc::reader::FileReader::try_new(File::open(&path)?, None)?;
            reader
                .map(|b| b.map(|b| b.num_rows()))
                .sum::<Result<usize, _>>()
        });
        match read {
            Ok(Ok(rows)) => Sealed::Read(rows),
            Ok(Err(e)) => Sealed::Unreadable(e.to_string()),
            Err(panic) => Sealed::Unreadable(panic),
        }
    }

    /// Rows arrow's stream reader reads from `frames`, or its error.
    fn stream_rows(frames: &[Vec<u8>]) -> Result<usize, String> {
        let mut stream: Vec<u8> = frames.concat();
        stream.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        crate::arrow_guard::catch(|| {
            let reader = arrow::ipc::reader::StreamReader::try_new(&stream[..], None)?;
            reader
                .map(|b| b.map(|b| b.num_rows()))
                .sum::<Result<usize, arrow::error::ArrowError>>()
        })?
        .map_err(|e| e.to_string())
    }

    /// An IPC file has one metadata version, its footer's, and arrow's file reader refuses
    /// a message of another: the builder refuses it as it arrives.
    #[test]
    fn a_message_of_another_metadata_version_than_the_schema_is_refused() {
        let v5 = frames();
        let v4 = frames_with(IpcWriteOptions::try_new(8, false, MetadataVersion::V4).unwrap());
        assert!(matches!(seal_and_read(&v5), Sealed::Read(1000)));
        assert!(matches!(seal_and_read(&v4), Sealed::Read(1000)));
        match seal_and_read(&[v5[0].clone(), v4[1].clone()]) {
            Sealed::Refused(why) => {
                assert!(why.contains("message 1") && why.contains("V4"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// A record batch whose metadata or body arrow does not accept (a buffer outside the
    /// body, a string that is not UTF-8) is refused before it is written, naming the
    /// message; the same bytes make arrow's own readers fail.
    #[test]
    fn a_batch_arrow_cannot_decode_is_refused_before_it_is_written() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..100)),
                Arc::new(StringArray::from_iter_values(
                    (0..100).map(|i| format!("zz{i}")),
                )),
            ],
        )
        .unwrap();
        let frames = frames_of(&[batch], IpcWriteOptions::default());
        assert!(matches!(seal_and_read(&frames), Sealed::Read(100)));

        // The values buffer of `n` starts past the end of the body.
        let mut outside = frames.clone();
        let (at, body) = {
            let message = header(&outside[1]);
            let batch = message.header_as_record_batch().unwrap();
            let buffers = batch.buffers().unwrap().bytes();
            let start = buffers.as_ptr() as usize - message._tab.buf().as_ptr() as usize;
            // Buffers: validity and values of `n`; each is (offset, length).
            (8 + start + 16, message.bodyLength())
        };
        put_i64(&mut outside[1], at, body + 64);
        // A byte of a string that is not UTF-8.
        let mut not_utf8 = frames.clone();
        let at = not_utf8[1].windows(3).position(|w| w == b"zz7").unwrap();
        not_utf8[1][at] = 0xff;

        for (what, frames) in [("outside", outside), ("utf8", not_utf8)] {
            assert!(
                stream_rows(&frames).is_err(),
                "{what}: arrow cannot read it"
            );
            match seal_and_read(&frames) {
                Sealed::Refused(why) => assert!(
                    why.starts_with("message 1 (a record batch declaring 100 rows) is refused"),
                    "{what}: {why}"
                ),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    /// arrow's stream reader ignores a schema's endianness while the footer the builder
    /// writes says little-endian: a schema message declaring big-endian data is refused.
    #[test]
    fn a_big_endian_schema_is_refused() {
        let mut meta = crate::arrow_guard::tests::int_schema_message(64, Endianness::Big);
        meta.resize(meta.len().next_multiple_of(8), 0);
        let mut frame = vec![0xff; 4];
        frame.extend_from_slice(&(meta.len() as i32).to_le_bytes());
        frame.extend_from_slice(&meta);
        match seal_and_read(&[frame]) {
            Sealed::Refused(why) => assert!(why.contains("big-endian"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// A file's dictionary messages are found by the ids of its footer's schema, which
    /// arrow numbers itself (0, 1, ... in its own order). A stream that numbers its
    /// dictionaries otherwise is a valid stream, but the file would not read: refused.
    #[test]
    fn a_schema_numbering_its_dictionaries_otherwise_than_a_file_footer_is_refused() {
        let dictionary = |words: &[&str]| {
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(
                    Int32Array::from_iter_values((0..10).map(|i| i % words.len() as i32)),
                    Arc::new(StringArray::from(words.to_vec())),
                )
                .unwrap(),
            ) as ArrayRef
        };
        let batch = RecordBatch::try_from_iter([
            ("a", dictionary(&["x", "y"])),
            ("b", dictionary(&["p", "q", "r"])),
        ])
        .unwrap();
        let mut frames = frames_of(&[batch], IpcWriteOptions::default());
        assert!(matches!(seal_and_read(&frames), Sealed::Read(10)));
        // Dictionary 1 (of `b`) becomes dictionary 5, in the schema and in its batch.
        let in_schema = {
            let message = header(&frames[0]);
            let fields = message.header_as_schema().unwrap().fields().unwrap();
            let encoding = fields.get(1).dictionary().unwrap();
            field_at(&encoding._tab, arrow::ipc::DictionaryEncoding::VT_ID)
        };
        put_i64(&mut frames[0], in_schema, 5);
        let second = frames
            .iter()
            .position(|f| {
                header(f)
                    .header_as_dictionary_batch()
                    .is_some_and(|d| d.id() == 1)
            })
            .unwrap();
        let in_batch = {
            let message = header(&frames[second]);
            let batch = message.header_as_dictionary_batch().unwrap();
            field_at(&batch._tab, arrow::ipc::DictionaryBatch::VT_ID)
        };
        put_i64(&mut frames[second], in_batch, 5);
        assert_eq!(stream_rows(&frames), Ok(10), "a stream reader reads it");
        match seal_and_read(&frames) {
            Sealed::Refused(why) => {
                assert!(why.contains("[0, 5]") && why.contains("[0, 1]"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// Arrow's readers take a decimal type from a schema message without the check its
    /// constructors make (precision 1 to the width's maximum, scale at most the
    /// precision), and formatting such values panics: `Decimal128(2, 3)` is refused.
    #[test]
    fn a_decimal_type_arrow_calls_invalid_is_refused_with_the_schema() {
        let bad = DataType::Decimal128(2, 3);
        let values = Decimal128Array::from(vec![12_345, -7]).with_data_type(bad.clone());
        let batch = RecordBatch::try_from_iter([("price", Arc::new(values) as ArrayRef)]).unwrap();
        let frames = frames_of(std::slice::from_ref(&batch), IpcWriteOptions::default());
        // What `meshnode sql` would do with the rows.
        let printed =
            crate::arrow_guard::catch(|| arrow::csv::Writer::new(std::io::sink()).write(&batch));
        assert!(printed.is_err(), "arrow's CSV writer panics on it");
        match seal_and_read(&frames) {
            Sealed::Refused(why) => assert!(
                why.starts_with(
                    "the schema message is refused: column `price` is Decimal128(2, 3)"
                ) && why.contains("scale 3 is greater than precision 2"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A list of nulls costs its offsets on the wire, whatever the number of items: a
    /// batch holding more than [`MAX_BATCH_VALUES`] values is refused as it arrives, before
    /// a conversion or a query spends memory on each (the Parquet writer asked for 4 GiB at
    /// once for this 512-byte message, and aborted).
    #[test]
    fn a_batch_holding_more_values_than_the_bound_is_refused_as_it_arrives() {
        let list = |each: usize| {
            let list = ListArray::new(
                Arc::new(Field::new("item", DataType::Null, true)),
                OffsetBuffer::<i32>::from_lengths(std::iter::repeat_n(each, 16)),
                Arc::new(NullArray::new(16 * each)),
                None,
            );
            let batch = RecordBatch::try_from_iter([("l", Arc::new(list) as ArrayRef)]).unwrap();
            frames_of(&[batch], IpcWriteOptions::default())
        };
        // 16 rows, their lists and the items: within the bound, then over it.
        let each = (MAX_BATCH_VALUES as usize - 32) / 16;
        assert!(matches!(seal_and_read(&list(each)), Sealed::Read(16)));
        let frames = list(1 << 26);
        assert!(frames[1].len() < 1024, "{}", frames[1].len());
        match seal_and_read(&frames) {
            Sealed::Refused(why) => assert!(
                why.contains("holds 1073741856 values") && why.contains("limit of 134217728"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A batch without columns costs nothing whatever the rows it declares, and the
    /// stream's row count was a plain sum: five such batches of 2^62 rows overflowed it
    /// (a panic in the writer thread). Its rows count as values.
    #[test]
    fn a_batch_without_columns_declaring_more_rows_than_the_bound_is_refused() {
        let rows = |n: usize| {
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
            let schema = Arc::new(Schema::empty());
            let batch = RecordBatch::try_new_with_options(schema, vec![], &options).unwrap();
            frames_of(&[batch], IpcWriteOptions::default())
        };
        let fine = rows(MAX_BATCH_VALUES as usize);
        assert!(matches!(seal_and_read(&fine), Sealed::Read(_)));
        let frames = rows(1 << 62);
        let stream: Vec<Vec<u8>> = std::iter::once(frames[0].clone())
            .chain(std::iter::repeat_n(frames[1].clone(), 5))
            .collect();
        match seal_and_read(&stream) {
            Sealed::Refused(why) => assert!(
                why.starts_with("message 1 (a record batch declaring 4611686018427387904 rows)")
                    && why.contains("over the limit"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// Every reader of a file holds all its dictionaries, each a whole message body (or
    /// the concatenation of a delta): a stream whose dictionaries would hold more than the
    /// bound is refused at the dictionary that crosses it.
    #[test]
    fn dictionaries_holding_more_than_the_bound_are_refused() {
        let words = Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef;
        let columns: Vec<(String, ArrayRef)> = (0..4)
            .map(|c| {
                let keys = Int8Array::from_iter_values((0..10).map(|i| i % 2));
                let array = DictionaryArray::<Int8Type>::try_new(keys, words.clone()).unwrap();
                (format!("c{c}"), Arc::new(array) as ArrayRef)
            })
            .collect();
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut frames = frames_of(&[batch], IpcWriteOptions::default());
        // Each dictionary message's body grows by 300 KiB of padding its buffers do not
        // use, which a reader holds all the same.
        for frame in &mut frames {
            if header(frame).header_as_dictionary_batch().is_none() {
                continue;
            }
            let at = field_at(&header(frame)._tab, arrow::ipc::Message::VT_BODYLENGTH);
            let body = header(frame).bodyLength();
            frame.resize(frame.len() + 300 * 1024, 0);
            put_i64(frame, at, body + 300 * 1024);
        }
        assert!(matches!(seal_and_read(&frames), Sealed::Read(10)));
        let tmp = tempfile::tempdir().unwrap();
        let mut builder = IpcFileBuilder::create(&tmp.path().join("x.partial")).unwrap();
        builder.append(&frames[0]).unwrap();
        builder.decoding.as_mut().unwrap().max_dictionary_bytes = 1024 * 1024;
        builder.append(&frames[1]).unwrap();
        builder.append(&frames[2]).unwrap();
        builder.append(&frames[3]).unwrap();
        match builder.append(&frames[4]) {
            Err(AppendError::Protocol(why)) => assert!(
                why.contains("dictionary batch for dictionary 3")
                    && why.contains("over the limit of 1048576"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A compressed dictionary message of a few kilobytes may hold mebibytes once
    /// decoded, and every reader keeps it so: dictionaries are counted by the lengths their
    /// buffers declare once decompressed. Four dictionaries of 1 MiB each under a bound of
    /// 2 MiB: the third is refused, compressed (ZSTD, LZ4) or not; the same stream under
    /// the real bound seals and reads back.
    #[test]
    fn compressed_dictionaries_are_counted_for_what_they_hold_once_decoded() {
        use arrow::ipc::CompressionType;
        let batch = crate::arrow_guard::tests::zero_dictionaries(4, 1 << 17);
        for codec in [
            Some(CompressionType::ZSTD),
            Some(CompressionType::LZ4_FRAME),
            None,
        ] {
            let options = crate::arrow_guard::tests::compressed(codec);
            let frames = frames_of(std::slice::from_ref(&batch), options);
            assert_eq!(frames.len(), 6, "schema, four dictionaries, the batch");
            if codec.is_some() {
                assert!(
                    frames[1..5].iter().all(|f| f.len() < 16 << 10),
                    "{codec:?}: a few kilobytes each"
                );
            }
            assert!(
                matches!(seal_and_read(&frames), Sealed::Read(1)),
                "{codec:?}: 4 MiB of dictionaries are well under the bound"
            );
            let tmp = tempfile::tempdir().unwrap();
            let mut builder = IpcFileBuilder::create(&tmp.path().join("x.partial")).unwrap();
            builder.append(&frames[0]).unwrap();
            builder.decoding.as_mut().unwrap().max_dictionary_bytes = 2 << 20;
            builder.append(&frames[1]).unwrap();
            builder.append(&frames[2]).unwrap();
            let offset = builder.offset();
            match builder.append(&frames[3]) {
                Err(AppendError::Protocol(why)) => assert!(
                    why.starts_with("message 3 (a dictionary batch for dictionary 2) is refused")
                        && why.contains("3145728 bytes")
                        && why.ends_with("over the limit of 2097152"),
                    "{codec:?}: {why}"
                ),
                other => panic!("{codec:?}: {other:?}"),
            }
            assert_eq!(builder.offset(), offset, "the refused frame is not written");
        }
    }

    /// A compressed buffer whose declared length is absurd (more than any bound, more
    /// than an i64 sum holds, negative but not the -1 of a stored buffer) is refused as
    /// the frame arrives, without a panic and before anything decompresses it.
    #[test]
    fn a_compressed_buffer_declaring_an_impossible_length_is_refused_without_panicking() {
        use arrow::ipc::CompressionType;
        let words = Arc::new(StringArray::from_iter_values(
            (0..4096).map(|i| format!("{:0>64}", i % 7)),
        )) as ArrayRef;
        let keys = Int8Array::from(vec![0i8, 1, 2]);
        let array = DictionaryArray::<Int8Type>::try_new(keys, words).unwrap();
        let batch = RecordBatch::try_from_iter([("w", Arc::new(array) as ArrayRef)]).unwrap();
        let options = crate::arrow_guard::tests::compressed(Some(CompressionType::ZSTD));
        let frames = frames_of(&[batch], options);
        assert!(matches!(seal_and_read(&frames), Sealed::Read(3)));
        let prefixes = crate::arrow_guard::tests::compressed_length_prefixes(&frames[1]);
        assert_eq!(prefixes.len(), 2, "offsets and values, compressed");
        for (what, lengths) in [
            ("i64::MAX", [i64::MAX, i64::MAX]),
            ("1 TiB", [1 << 40, 1 << 40]),
            ("negative", [-2, 16_384]),
            ("i64::MIN", [i64::MIN, 16_384]),
        ] {
            let mut frame = frames[1].clone();
            for (at, length) in prefixes.iter().zip(lengths) {
                put_i64(&mut frame, *at, length);
            }
            let why = match crate::arrow_guard::catch(|| inspect(&frame)) {
                Ok(Err(why)) => why,
                other => panic!("{what}: {other:?}"),
            };
            assert!(why.starts_with("a data frame is refused"), "{what}: {why}");
            let stream = [frames[0].clone(), frame];
            match crate::arrow_guard::catch(|| seal_and_read(&stream)) {
                Ok(Sealed::Refused(why)) => assert!(why.contains("refused"), "{what}: {why}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    /// Each delta dictionary is concatenated to the dictionary so far: many deltas cost
    /// quadratic time while the dictionary stays small, so what they copy is bounded.
    #[test]
    fn delta_dictionaries_copying_more_than_the_bound_are_refused() {
        // Batch k's dictionary is the words 0..=k: the writer sends a one-word delta each.
        let batches: Vec<RecordBatch> = (0..8)
            .map(|k| {
                let words: Vec<String> = (0..=k).map(|w| format!("word{w}")).collect();
                let keys = Int8Array::from_iter_values([k as i8]);
                let values = Arc::new(StringArray::from(words)) as ArrayRef;
                let array = DictionaryArray::<Int8Type>::try_new(keys, values).unwrap();
                RecordBatch::try_from_iter([("w", Arc::new(array) as ArrayRef)]).unwrap()
            })
            .collect();
        let options = IpcWriteOptions::default()
            .with_dictionary_handling(arrow::ipc::writer::DictionaryHandling::Delta);
        let frames = frames_of(&batches, options);
        let deltas = frames
            .iter()
            .filter(|f| {
                header(f)
                    .header_as_dictionary_batch()
                    .is_some_and(|d| d.isDelta())
            })
            .count();
        assert_eq!(deltas, 7, "one delta per batch after the first");
        assert!(matches!(seal_and_read(&frames), Sealed::Read(8)));
        let tmp = tempfile::tempdir().unwrap();
        let mut builder = IpcFileBuilder::create(&tmp.path().join("x.partial")).unwrap();
        builder.append(&frames[0]).unwrap();
        // Room for a few deltas' copies, not for seven.
        builder.decoding.as_mut().unwrap().max_delta_copy = 512;
        let (mut accepted, mut refusal) = (0, None);
        for frame in &frames[1..] {
            match builder.append(frame) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            }
        }
        assert!(accepted >= 2, "the first deltas fit: {accepted}");
        match refusal {
            Some(AppendError::Protocol(why)) => assert!(
                why.contains("delta dictionaries") && why.contains("over the limit of 512"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// The encapsulated messages of an IPC stream: the data frames a provider sends.
    pub(crate) use crate::arrow_guard::tests::messages;

    #[test]
    fn a_compressed_batch_declaring_too_much_is_refused_before_anything_decodes_it() {
        let stream = crate::arrow_guard::tests::lz4_zeros_stream();
        let mut batch = messages(&stream)[1].to_vec();
        inspect(&batch).expect("an honest compressed batch passes");
        // Its values buffer now claims 16 TiB once decompressed: a reader would reserve that.
        let at = crate::arrow_guard::tests::declared_length_at(&batch);
        batch[at..at + 8].copy_from_slice(&(1i64 << 44).to_le_bytes());
        let why = inspect(&batch).unwrap_err();
        assert!(why.contains("decompressed"), "{why}");
    }

    #[test]
    fn a_stream_of_more_messages_than_a_file_holds_is_refused_before_the_footer_overflows() {
        let tmp = tempfile::tempdir().unwrap();
        let mut builder = IpcFileBuilder::create(&tmp.path().join("x.partial")).unwrap();
        let frames = frames();
        builder.append(&frames[0]).unwrap();
        builder.append(&frames[1]).unwrap();
        // As if all but one of the messages a file may hold had come already.
        builder.tally.count(MAX_MESSAGES - 3, 0);
        builder.append(&frames[1]).unwrap();
        assert_eq!(builder.messages(), MAX_MESSAGES);
        let offset = builder.offset();
        match builder.append(&frames[1]) {
            Err(AppendError::Protocol(why)) => assert!(why.contains("more than"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(builder.offset(), offset, "the refused frame is not written");
    }
}
