//! The consumer's output: the received Arrow IPC stream laid out as an Arrow IPC *file*.
//!
//! An IPC file is the 8-byte magic, the stream's messages, an end-of-stream marker and a
//! footer that indexes the dictionary and record batch messages. Each received data frame is
//! one encapsulated message, so the builder appends it verbatim (no decoding of the body,
//! no re-encoding) and remembers its block; [`IpcFileBuilder::finish_with`] writes the footer.
//! The bytes between the magic and the end-of-stream marker are exactly the stream the
//! provider hashed, which makes resuming simple: [`IpcFileBuilder::resume`] re-reads the
//! complete messages of a partial file, re-hashes them and truncates whatever follows.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::Path;

use arrow::datatypes::Schema;
use arrow::ipc::convert::{IpcSchemaEncoder, fb_to_schema};
use arrow::ipc::writer::DictionaryTracker;
use arrow::ipc::{Block, FooterBuilder, MessageHeader, MetadataVersion};
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

/// What one data frame holds.
#[derive(Debug)]
pub(crate) struct MessageInfo {
    /// Schema, dictionary batch or record batch.
    kind: MessageHeader,
    /// Prefix, flatbuffer and padding: the block's `metaDataLength`.
    meta_len: usize,
    /// Body bytes.
    body_len: usize,
    /// Rows of a record batch (0 otherwise).
    pub(crate) rows: u64,
    /// Metadata version, for the footer.
    version: MetadataVersion,
    /// The schema of a schema message.
    schema: Option<Schema>,
    /// `(id, is_delta)` of a dictionary batch.
    dictionary: Option<(i64, bool)>,
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
    crate::arrow_guard::check_message(&message, &frame[8 + meta..], &received)
        .map_err(|e| format!("a data frame is refused: {e}"))?;
    let kind = message.header_type();
    let mut info = MessageInfo {
        kind,
        meta_len: 8 + meta,
        body_len,
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
            info.schema = Some(
                crate::arrow_guard::contain(|| Ok(fb_to_schema(schema)))
                    .map_err(|e| format!("the stream schema does not decode: {e}"))?,
            );
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
    schema: Option<Schema>,
    /// Metadata version of the schema message.
    version: MetadataVersion,
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
            if builder.record(&frame, info).is_err() {
                break;
            }
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
        self.schema.as_ref()
    }

    /// Checks and indexes one message (already written at `self.offset`).
    fn record(&mut self, frame: &[u8], info: MessageInfo) -> Result<(), String> {
        let first = self.tally.batches() == 0;
        if first != (info.kind == MessageHeader::Schema) {
            return Err(if first {
                "the stream does not start with a schema message".into()
            } else {
                "the stream carries a second schema message".into()
            });
        }
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
            MessageHeader::DictionaryBatch => {
                let (id, delta) = info.dictionary.expect("dictionary info");
                if !self.dictionary_ids.insert(id) && !delta {
                    return Err(format!(
                        "dictionary {id} is replaced mid-stream, which an Arrow file cannot hold"
                    ));
                }
                self.dictionaries.push(block);
            }
            _ => self.batches.push(block),
        }
        if self.hashing {
            self.tally.add_batch(frame, info.rows);
        } else {
            self.tally.count(1, info.rows);
        }
        self.offset += frame.len() as u64;
        Ok(())
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
        let first = self.tally.batches() == 0;
        if first != (info.kind == MessageHeader::Schema) {
            return Err(AppendError::Protocol(
                "the stream's schema message is missing or repeated".into(),
            ));
        }
        self.out.append(frame).map_err(AppendError::Io)?;
        self.record(frame, info).map_err(AppendError::Protocol)
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
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let dictionaries = fbb.create_vector(&self.dictionaries);
        let batches = fbb.create_vector(&self.batches);
        let mut tracker = DictionaryTracker::new(false);
        let schema = IpcSchemaEncoder::new()
            .with_dictionary_tracker(&mut tracker)
            .schema_to_fb_offset(&mut fbb, &schema);
        let mut footer = FooterBuilder::new(&mut fbb);
        footer.add_version(self.version);
        footer.add_schema(schema);
        footer.add_dictionaries(dictionaries);
        footer.add_recordBatches(batches);
        let root = footer.finish();
        fbb.finish(root, None);
        let data = fbb.finished_data();
        let mut tail = Vec::with_capacity(8 + data.len() + 10);
        tail.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        tail.extend_from_slice(data);
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

/// Why a frame was not appended.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The frame is not a valid message in this position.
    Protocol(String),
    /// The disk failed.
    Io(std::io::Error),
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// The messages of an IPC stream of one schema and one batch, one frame each.
    fn frames() -> Vec<Vec<u8>> {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..1000))],
        )
        .unwrap();
        let mut stream = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut stream, &schema).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        messages(&stream).into_iter().map(<[u8]>::to_vec).collect()
    }

    /// The encapsulated messages of an IPC stream (continuation, length, metadata, body),
    /// up to its end-of-stream marker: the data frames a provider sends.
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
