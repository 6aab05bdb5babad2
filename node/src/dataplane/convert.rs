//! Output formats of a fetch, and the conversion of a verified transfer into them.
//!
//! Every fetch first assembles and verifies an Arrow IPC file (`ipcfile`: the stream the
//! provider signed, byte for byte, between the file magic and the end-of-stream marker).
//! Only then is it converted, into a temporary file that is renamed into place when
//! complete, so a conversion that fails leaves nothing at the output path:
//!
//! - [`OutputFormat::Arrow`]: the IPC file itself, no conversion;
//! - [`OutputFormat::Arrows`]: the IPC *stream*, which is those signed bytes plus the
//!   end-of-stream marker: a byte copy, nothing decoded or re-encoded;
//! - [`OutputFormat::Parquet`]: decoded batch by batch and written with the parquet crate,
//!   row groups flushed at [`PARQUET_ROW_GROUP_BYTES`] so memory stays bounded. Parquet has
//!   no unit of seconds: such timestamps are written in milliseconds (the same instants), as
//!   pyarrow writes them, at any depth ([`parquet_schema`]); a value the new type cannot hold
//!   is refused, naming its column, as pyarrow refuses it ([`cast_to_schema`]), rather than
//!   written as a null. This is the one output that decodes what the provider sent, so
//!   the batches are walked first (headers only) and refused when one declares more than
//!   [`MAX_DECODED_ROWS`] rows or more than [`MAX_DECODED_MESSAGE`] bytes once
//!   decompressed: the IPC reader allocates a declared size before it decompresses a byte.
//!
//! A conversion writes a second file next to the first, so it keeps the node's disk reserve
//! free as the received data did ([`Room`]): a stream copy asks for its whole size before it
//! starts, a Parquet file for each row group before it is written out and for the footer.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::Path;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::reader::FileReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression as ParquetCompression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use mesh_protocol::transfer::MAX_DATA_FRAME;

use super::ipcfile::HEADER_LEN;
use crate::diskroom::{NoRoom, Room};

/// The Arrow IPC end-of-stream marker: continuation, then a zero length.
pub(crate) const END_OF_STREAM: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
/// A Parquet row group is written out once its encoded size reaches this.
pub(crate) const PARQUET_ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes the compressed buffers of one record batch may declare they decompress to:
/// twice the largest data frame (a batch the provider could have sent uncompressed fits one
/// frame).
pub(crate) const MAX_DECODED_MESSAGE: u64 = 2 * MAX_DATA_FRAME as u64;
/// Most rows in one record batch decoded for a conversion.
pub(crate) const MAX_DECODED_ROWS: i64 = 1 << 24;
/// What each message of a received file may declare before anything decodes it (a
/// conversion, a query): a data frame's lengths, [`MAX_DECODED_ROWS`] rows and
/// [`MAX_DECODED_MESSAGE`] bytes once decompressed.
pub(crate) const DECODE_BOUNDS: crate::arrow_guard::MessageBounds =
    crate::arrow_guard::MessageBounds {
        max_metadata: MAX_DATA_FRAME as u64,
        max_body: MAX_DATA_FRAME as u64,
        max_rows: MAX_DECODED_ROWS,
        max_decompressed: MAX_DECODED_MESSAGE,
        // Received files hold no deltas; a received stream's are bounded as they arrive
        // (`ipcfile::MAX_DELTA_COPY`).
        max_delta_copy: u64::MAX,
    };
/// Write buffer of converted files.
const WRITE_BUFFER: usize = 1 << 20;
/// Added to what a Parquet conversion asks room for: bytes its write buffer may still hold,
/// and the footer.
const BUFFERED: u64 = WRITE_BUFFER as u64;

/// What a fetch writes at its output path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Arrow IPC file (random access; `pyarrow.ipc.open_file`).
    #[default]
    Arrow,
    /// Arrow IPC stream (`pyarrow.ipc.open_stream`; what `--out -` writes).
    Arrows,
    /// Apache Parquet.
    Parquet,
}

impl OutputFormat {
    /// Every format, by the name `--format` takes.
    pub const ALL: [OutputFormat; 3] = [
        OutputFormat::Arrow,
        OutputFormat::Arrows,
        OutputFormat::Parquet,
    ];

    /// The name `--format` takes, and the usual extension.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Arrow => "arrow",
            OutputFormat::Arrows => "arrows",
            OutputFormat::Parquet => "parquet",
        }
    }

    /// The format a `--format` name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The format a file name's extension stands for (case-insensitive): `.arrow`, `.ipc`
    /// and `.feather` (Feather v2 is the IPC file), `.arrows`, `.parquet` and `.pq`.
    pub fn from_extension(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "arrow" | "ipc" | "feather" => Some(OutputFormat::Arrow),
            "arrows" => Some(OutputFormat::Arrows),
            "parquet" | "pq" => Some(OutputFormat::Parquet),
            _ => None,
        }
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a verified transfer could not be written in the format asked for.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Reading the verified file or writing the converted one failed.
    #[error("cannot write the {format} output: {source}")]
    Io {
        /// Format being written.
        format: OutputFormat,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The verified IPC data could not be decoded for conversion.
    #[error("cannot read the received data for conversion to {format}: {source}")]
    Arrow {
        /// Format being written.
        format: OutputFormat,
        /// The Arrow reader's error.
        #[source]
        source: ArrowError,
    },
    /// The received data would decode to more than the conversion lets into memory: a
    /// batch declaring a huge uncompressed size or row count (a provider can declare what
    /// it likes; the IPC reader would allocate it before looking).
    #[error(
        "the received data cannot be converted within bounds: {what}; fetch it as Arrow IPC (--out FILE.arrow) instead"
    )]
    Bounds {
        /// What is over which limit.
        what: String,
    },
    /// The output's disk has no room for the converted file beside the reserve the node
    /// keeps free; nothing is left at the output path.
    #[error(
        "{source}; the conversion to {format} stopped and left nothing at the output path: free some space and fetch again, or fetch as Arrow IPC (--out FILE.arrow), which needs no second file"
    )]
    NoRoom {
        /// Format being written.
        format: OutputFormat,
        /// Where, what is free and the reserve.
        #[source]
        source: NoRoom,
    },
    /// A value cannot be given the type Parquet writes its column as (a timestamp in seconds
    /// beyond what milliseconds reach, ...); nothing is left at the output path.
    #[error(
        "cannot write the data as Parquet: {source}; nothing was written: fetch it as Arrow IPC (--out FILE.arrow), which holds it as it is"
    )]
    Value {
        /// Which column, which types, which value.
        #[source]
        source: ParquetCastError,
    },
    /// The data cannot be written as Parquet (a type Parquet cannot hold, ...).
    #[error(
        "cannot write the data as Parquet: {source}; fetch it as Arrow IPC (--out FILE.arrow) instead"
    )]
    Parquet {
        /// The Parquet writer's error.
        #[source]
        source: ParquetError,
    },
}

impl ConvertError {
    /// The I/O error underneath, if the file system failed.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            ConvertError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Writes the verified IPC file `verified` (whose stream is `stream_bytes` long after the
/// file header) to `dest` in `format` (not [`OutputFormat::Arrow`], which needs no
/// conversion), creating `dest` afresh (a link there is replaced, not followed) and syncing
/// it, while `room` says its disk has room. Returns the size of `dest`. On error `dest` is
/// removed.
pub(crate) fn convert(
    verified: &Path,
    stream_bytes: u64,
    format: OutputFormat,
    dest: &Path,
    room: Room,
) -> Result<u64, ConvertError> {
    let result = match format {
        OutputFormat::Arrow | OutputFormat::Arrows => {
            let format = OutputFormat::Arrows;
            room.check(dest, stream_bytes + END_OF_STREAM.len() as u64)
                .map_err(|source| ConvertError::NoRoom { format, source })
                .and_then(|()| {
                    write_stream(verified, stream_bytes, dest)
                        .map_err(|source| ConvertError::Io { format, source })
                })
        }
        OutputFormat::Parquet => check_decodable(verified, stream_bytes)
            .and_then(|()| write_parquet(verified, dest, room)),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// A new file at `path` (whatever was there removed first, never followed).
fn create_fresh(path: &Path) -> std::io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// The IPC stream of `verified`: its signed bytes, then the end-of-stream marker.
pub(crate) fn open_stream(verified: &Path, stream_bytes: u64) -> std::io::Result<impl Read> {
    let mut file = File::open(verified)?;
    file.seek(SeekFrom::Start(HEADER_LEN as u64))?;
    Ok(file.take(stream_bytes).chain(&END_OF_STREAM[..]))
}

fn write_stream(verified: &Path, stream_bytes: u64, dest: &Path) -> std::io::Result<u64> {
    let mut source = open_stream(verified, stream_bytes)?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, create_fresh(dest)?);
    let copied = std::io::copy(&mut source, &mut out)?;
    if copied != stream_bytes + END_OF_STREAM.len() as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the received file is shorter than its stream",
        ));
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(copied)
}

/// Walks the messages of the verified stream (without decoding any body, with
/// [`check_stream`](crate::arrow_guard::check_stream)) and refuses a message over a data frame,
/// a record or dictionary batch over [`MAX_DECODED_ROWS`] rows or whose compressed buffers
/// declare more than [`MAX_DECODED_MESSAGE`] bytes once decompressed, and a stream that does
/// not end where the verified file says it does.
fn check_decodable(verified: &Path, stream_bytes: u64) -> Result<(), ConvertError> {
    use crate::arrow_guard::{MessageBounds, MessageError, check_stream};
    const BOUNDS: MessageBounds = DECODE_BOUNDS;
    let format = OutputFormat::Parquet;
    let mut file = File::open(verified).map_err(|source| ConvertError::Io { format, source })?;
    let start = HEADER_LEN as u64;
    let end = start + stream_bytes;
    let stopped = check_stream(&mut file, start, end, &BOUNDS).map_err(|e| match e {
        MessageError::Io(source) => ConvertError::Io { format, source },
        refused => ConvertError::Bounds {
            what: refused.to_string(),
        },
    })?;
    if stopped != end {
        return Err(ConvertError::Bounds {
            what: format!("no IPC message at byte {stopped}"),
        });
    }
    Ok(())
}

/// The first column (by its path) of a type the parquet crate cannot write: a union, on
/// which its writer panics (`unimplemented!`, arrow-rs issue ARROW-8817) rather than
/// return an error.
pub fn parquet_unwritable(schema: &Schema) -> Option<String> {
    fn find(path: &str, data_type: &DataType) -> Option<String> {
        let child = |f: &Field| find(&format!("{path}.{}", f.name()), f.data_type());
        match data_type {
            DataType::Union(..) => Some(path.to_owned()),
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => child(f),
            DataType::Struct(fields) => fields.iter().find_map(|f| child(f)),
            DataType::RunEndEncoded(_, values) => child(values),
            DataType::Dictionary(_, values) => find(path, values),
            _ => None,
        }
    }
    schema
        .fields()
        .iter()
        .find_map(|f| find(f.name(), f.data_type()))
}

fn write_parquet(verified: &Path, dest: &Path, room: Room) -> Result<u64, ConvertError> {
    let format = OutputFormat::Parquet;
    let io = |source| ConvertError::Io { format, source };
    let arrow = |source| ConvertError::Arrow { format, source };
    let file = File::open(verified).map_err(io)?;
    let reader =
        crate::arrow_guard::contain(|| FileReader::try_new_buffered(file, None)).map_err(arrow)?;
    if let Some(column) = parquet_unwritable(&reader.schema()) {
        return Err(ConvertError::Parquet {
            source: ParquetError::NYI(format!(
                "column `{column}` is a union, which the Parquet writer does not support"
            )),
        });
    }
    // The parquet crate has panics of its own (`unimplemented!`, `unreachable!` on types it
    // does not expect): one ends the conversion, not the thread that runs it.
    crate::arrow_guard::catch(|| write_batches(reader, dest, room)).unwrap_or_else(|why| {
        Err(ConvertError::Parquet {
            source: ParquetError::General(format!("the Parquet writer failed ({why})")),
        })
    })
}

/// Writes the batches of `reader` to a new Parquet file at `dest`, asking `room` before each
/// row group goes to disk.
fn write_batches(
    mut reader: FileReader<BufReader<File>>,
    dest: &Path,
    room: Room,
) -> Result<u64, ConvertError> {
    let format = OutputFormat::Parquet;
    let io = |source| ConvertError::Io { format, source };
    let no_room = |source| ConvertError::NoRoom { format, source };
    let arrow = |source| ConvertError::Arrow { format, source };
    let parquet = |source| ConvertError::Parquet { source };
    let out = BufWriter::with_capacity(WRITE_BUFFER, create_fresh(dest).map_err(io)?);
    let properties = WriterProperties::builder()
        .set_compression(ParquetCompression::SNAPPY)
        .build();
    let schema = parquet_schema(&reader.schema());
    let mut writer =
        ArrowWriter::try_new(out, schema.clone(), Some(properties)).map_err(parquet)?;
    // The batches were signed by a peer: should one get past `check_decodable`, arrow's
    // assertions (a buffer outside its message) end the conversion, not the daemon.
    let next = |reader: &mut FileReader<_>| {
        crate::arrow_guard::catch(|| reader.next().transpose())
            .unwrap_or_else(|why| {
                Err(ArrowError::IpcError(format!(
                    "malformed Arrow IPC batch ({why})"
                )))
            })
            .map_err(arrow)
    };
    while let Some(batch) = next(&mut reader)? {
        let batch =
            cast_to_schema(batch, &schema).map_err(|source| ConvertError::Value { source })?;
        // What may reach the disk in this step: the row group in progress (the writer also
        // writes it out by itself at its row limit) and this batch, at its decoded size,
        // which an encoding seldom exceeds. One `statvfs` per batch.
        let step = writer.in_progress_size() + batch.get_array_memory_size();
        room.check(dest, step as u64 + BUFFERED).map_err(no_room)?;
        writer.write(&batch).map_err(parquet)?;
        if writer.in_progress_size() >= PARQUET_ROW_GROUP_BYTES {
            writer.flush().map_err(parquet)?;
        }
    }
    // The last row group and the footer.
    room.check(dest, writer.in_progress_size() as u64 + BUFFERED)
        .map_err(no_room)?;
    // Writes the footer, then hands back the buffered file.
    let file = writer
        .into_inner()
        .map_err(parquet)?
        .into_inner()
        .map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    file.metadata().map(|m| m.len()).map_err(io)
}

/// `schema` with the types Parquet has no name for replaced by the nearest it has, as
/// pyarrow writes them: timestamps and times in seconds become milliseconds (the same
/// instants), `Date64` becomes `Date32` (the same days), at any depth: inside lists, large
/// lists, list views, fixed-size lists, structs, maps, dictionaries and run-end encoded
/// arrays. The parquet crate would otherwise write them as bare integers, which readers
/// other than arrow-rs take for numbers. (A union is left as it is: the parquet crate cannot
/// write one, and [`parquet_unwritable`] refuses it first.) Used for every Parquet file
/// meshnode writes (`fetch --format parquet`, `sql --out x.parquet`), with
/// [`cast_to_schema`].
pub fn parquet_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema.fields().iter().map(|f| parquet_field(f)).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `field` with [`parquet_schema`]'s replacements, its children included.
fn parquet_field(field: &Field) -> Field {
    field
        .clone()
        .with_data_type(parquet_type(field.data_type()))
}

/// The type of [`parquet_field`].
fn parquet_type(data_type: &DataType) -> DataType {
    let child = |f: &arrow::datatypes::FieldRef| Arc::new(parquet_field(f));
    match data_type {
        DataType::Timestamp(TimeUnit::Second, tz) => {
            DataType::Timestamp(TimeUnit::Millisecond, tz.clone())
        }
        DataType::Time32(TimeUnit::Second) => DataType::Time32(TimeUnit::Millisecond),
        DataType::Date64 => DataType::Date32,
        DataType::List(f) => DataType::List(child(f)),
        DataType::LargeList(f) => DataType::LargeList(child(f)),
        DataType::ListView(f) => DataType::ListView(child(f)),
        DataType::LargeListView(f) => DataType::LargeListView(child(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(child(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(child).collect()),
        DataType::Map(f, sorted) => DataType::Map(child(f), *sorted),
        DataType::Dictionary(key, value) => {
            DataType::Dictionary(key.clone(), Box::new(parquet_type(value)))
        }
        DataType::RunEndEncoded(run_ends, values) => {
            DataType::RunEndEncoded(run_ends.clone(), child(values))
        }
        other => other.clone(),
    }
}

/// Why [`cast_to_schema`] could not give a batch the types Parquet writes it as.
#[derive(Debug, thiserror::Error)]
pub enum ParquetCastError {
    /// A value the new type cannot hold: a timestamp in seconds whose milliseconds an `i64`
    /// cannot hold, a `Date64` beyond the days a `Date32` holds, a `Time32` in seconds whose
    /// milliseconds overflow. pyarrow refuses such a value too; writing it as null would
    /// change the data without a word.
    #[error(
        "column `{column}` holds a value out of the range of {to}, the type Parquet holds its \
         {from} as: {source}"
    )]
    OutOfRange {
        /// The column (top level) holding the value.
        column: String,
        /// The column's type.
        from: DataType,
        /// The type Parquet writes it as ([`parquet_schema`]).
        to: DataType,
        /// The cast's refusal, naming the value.
        #[source]
        source: ArrowError,
    },
    /// Any other refusal of the cast.
    #[error(
        "column `{column}` cannot be written as {to}, the type Parquet holds its {from} as: {source}"
    )]
    Cast {
        /// The column (top level).
        column: String,
        /// The column's type.
        from: DataType,
        /// The type Parquet writes it as ([`parquet_schema`]).
        to: DataType,
        /// The cast's error.
        #[source]
        source: ArrowError,
    },
    /// The cast columns do not make a batch of the schema.
    #[error("the batch does not fit the Parquet schema: {0}")]
    Batch(#[source] ArrowError),
}

/// `batch` with its columns cast to the types of `schema` where they differ. A value the new
/// type cannot hold is refused ([`ParquetCastError::OutOfRange`]), never turned into a null.
pub fn cast_to_schema(
    batch: RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, ParquetCastError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let refused = |field: &Field, to: &DataType, source: ArrowError| {
        let (column, from, to) = (field.name().clone(), field.data_type().clone(), to.clone());
        // What the casts of `parquet_schema`'s types refuse: `mul_checked`'s overflow
        // (timestamps, times), the Date64 to Date32 cast's "without overflow".
        let overflow = match &source {
            ArrowError::ArithmeticOverflow(_) => true,
            ArrowError::CastError(why) => why.contains("overflow"),
            _ => false,
        };
        if overflow {
            ParquetCastError::OutOfRange {
                column,
                from,
                to,
                source,
            }
        } else {
            ParquetCastError::Cast {
                column,
                from,
                to,
                source,
            }
        }
    };
    let from = batch.schema();
    let columns = batch
        .columns()
        .iter()
        .zip(from.fields())
        .zip(schema.fields())
        .map(|((column, field), to)| {
            if column.data_type() == to.data_type() {
                return Ok(column.clone());
            }
            arrow::compute::cast_with_options(column, to.data_type(), &options)
                .map_err(|source| refused(field, to.data_type(), source))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(ParquetCastError::Batch)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, ArrayRef, Int64Array, NullArray, StringArray, TimestampSecondArray};
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

    use super::*;
    use crate::dataplane::ipcfile::IpcFileBuilder;
    use crate::dataplane::ipcfile::tests::messages;

    /// An IPC file assembled as a fetch does, from the messages of an IPC stream.
    fn received_file(dir: &Path) -> (std::path::PathBuf, Vec<RecordBatch>, u64) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
                true,
            ),
        ]));
        let batches: Vec<RecordBatch> = (0..3)
            .map(|b| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(b * 10..b * 10 + 10)),
                        Arc::new(StringArray::from_iter(
                            (0..10).map(|i| (i % 3 != 0).then(|| format!("n{b}-{i} ,\"é"))),
                        )),
                        Arc::new(
                            TimestampSecondArray::from_iter_values(
                                (0..10).map(|i| 1_733_047_200 + b * 86_400 + i),
                            )
                            .with_timezone("UTC"),
                        ),
                    ],
                )
                .unwrap()
            })
            .collect();
        let (path, stream_bytes) = file_of_batches(dir, &schema, &batches);
        (path, batches, stream_bytes)
    }

    /// Room on any disk: the tests of what is written do not depend on the machine's disk.
    fn any_room() -> Room {
        Room::keeping(crate::diskroom::Reserve::mib(0))
    }

    /// [`convert`] with [`any_room`].
    fn convert_anywhere(
        verified: &Path,
        stream_bytes: u64,
        format: OutputFormat,
        dest: &Path,
    ) -> Result<u64, ConvertError> {
        convert(verified, stream_bytes, format, dest, any_room())
    }

    /// A disk with 1 MiB of reserve and 2 MiB more, less what the test's output files hold.
    fn two_mib_free(dir: &Path) -> u64 {
        let written: u64 = ["x.parquet", "x.arrows"]
            .iter()
            .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
            .map(|m| m.len())
            .sum();
        (3 << 20) - written.min(3 << 20)
    }

    #[test]
    fn a_conversion_that_would_eat_into_the_disk_reserve_stops_and_leaves_nothing() {
        let room = Room {
            reserve: crate::diskroom::Reserve::mib(1),
            probe: crate::diskroom::Probe::With(two_mib_free),
        };
        let tmp = tempfile::tempdir().unwrap();
        // 40 batches of 32,768 pseudo-random integers: 10 MiB that do not compress.
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let mut stream = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut stream, &schema).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..40 {
            let values = (0..32_768).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as i64
            });
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(values))],
            )
            .unwrap();
            writer.write(&batch).unwrap();
        }
        writer.finish().unwrap();
        drop(writer);
        let (verified, stream_bytes) = file_of_stream(tmp.path(), &stream);

        // The Parquet writer stops before the row group it holds would eat into the reserve.
        let parquet = tmp.path().join("x.parquet");
        let err = convert(
            &verified,
            stream_bytes,
            OutputFormat::Parquet,
            &parquet,
            room,
        )
        .unwrap_err();
        let ConvertError::NoRoom { source, .. } = &err else {
            panic!("expected a refusal for want of room, got {err}");
        };
        assert_eq!(source.reserve, 1 << 20);
        assert!(source.available <= 3 << 20, "{err}");
        assert!(source.more > 2 << 20, "{err}");
        let message = err.to_string();
        assert!(
            message.contains("left nothing at the output path"),
            "{message}"
        );
        assert!(message.contains("--out FILE.arrow"), "{message}");
        assert!(!parquet.exists());
        // The stream copy asks for its whole size before it writes a byte.
        let arrows = tmp.path().join("x.arrows");
        let err =
            convert(&verified, stream_bytes, OutputFormat::Arrows, &arrows, room).unwrap_err();
        assert!(matches!(err, ConvertError::NoRoom { .. }), "{err}");
        assert!(!arrows.exists());
        // The same conversions with room: the files are whole.
        let size =
            convert_anywhere(&verified, stream_bytes, OutputFormat::Parquet, &parquet).unwrap();
        assert!(size > 2 << 20, "{size}");
        let rows: usize = ParquetRecordBatchReaderBuilder::try_new(File::open(&parquet).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
        assert_eq!(rows, 40 * 32_768);
    }

    #[test]
    fn nested_seconds_and_date64_keep_their_meaning_in_parquet() {
        use arrow::array::{
            ArrayRef, Date64Array, ListArray, StructArray, Time32SecondArray, TimestampSecondArray,
        };
        use arrow::datatypes::Int32Type;
        let instants = TimestampSecondArray::from(vec![Some(1_733_047_200), None, Some(0)]);
        let list: ListArray = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1)]),
            None,
            Some(vec![]),
        ]);
        // A list of timestamps in seconds: the offsets of `list`, the values of `instants`.
        let item = Arc::new(Field::new(
            "item",
            DataType::Timestamp(TimeUnit::Second, None),
            true,
        ));
        let seconds = ListArray::new(
            item,
            list.offsets().clone(),
            Arc::new(TimestampSecondArray::from(vec![1_733_047_200])),
            arrow::array::Array::nulls(&list).cloned(),
        );
        let at = StructArray::from(vec![
            (
                Arc::new(Field::new("when", DataType::Time32(TimeUnit::Second), true)),
                Arc::new(Time32SecondArray::from(vec![Some(3_600), Some(0), None])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("day", DataType::Date64, true)),
                Arc::new(Date64Array::from(vec![Some(86_400_000), None, Some(0)])) as ArrayRef,
            ),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(instants),
            Arc::new(seconds),
            Arc::new(at),
            Arc::new(Date64Array::from(vec![Some(0), Some(172_800_000), None])),
        ];
        let batch =
            RecordBatch::try_from_iter(["at", "history", "slot", "day"].into_iter().zip(columns))
                .unwrap();
        let schema = parquet_schema(&batch.schema());
        let cast = cast_to_schema(batch.clone(), &schema).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.parquet");
        let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        writer.write(&cast).unwrap();
        writer.close().unwrap();

        // What a reader that ignores the stored Arrow schema (any other tool) sees.
        let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
            File::open(&path).unwrap(),
            options,
        )
        .unwrap()
        .build()
        .unwrap();
        let read = reader.map(Result::unwrap).next().unwrap();
        let types: Vec<String> = read
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(
            types,
            [
                "Timestamp(ms)",
                "List(Timestamp(ms))",
                "Struct(\"when\": Time32(ms), \"day\": Date32)",
                "Date32",
            ],
            "{:#?}",
            read.schema()
        );
        // The same instants, times and days as written.
        for (i, column) in batch.columns().iter().enumerate() {
            let back = arrow::compute::cast(read.column(i), column.data_type()).unwrap();
            assert_eq!(&back, column, "column {i}");
        }
    }

    #[test]
    fn formats_by_name_and_extension() {
        for (file, want) in [
            ("a.arrow", Some(OutputFormat::Arrow)),
            ("a.IPC", Some(OutputFormat::Arrow)),
            ("a.feather", Some(OutputFormat::Arrow)),
            ("dir/a.Arrows", Some(OutputFormat::Arrows)),
            ("a.parquet", Some(OutputFormat::Parquet)),
            ("a.pq", Some(OutputFormat::Parquet)),
            ("a.csv", None),
            ("a", None),
            ("a.arrow.bak", None),
        ] {
            assert_eq!(
                OutputFormat::from_extension(Path::new(file)),
                want,
                "{file}"
            );
        }
        for f in OutputFormat::ALL {
            assert_eq!(OutputFormat::from_name(f.name()), Some(f));
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.name()));
        }
        assert_eq!(OutputFormat::from_name("csv"), None);
    }

    #[test]
    fn stream_and_parquet_hold_the_verified_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let (verified, batches, stream_bytes) = received_file(tmp.path());
        let expected = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();

        let arrows = tmp.path().join("x.arrows");
        std::fs::write(&arrows, "stale").unwrap();
        let size =
            convert_anywhere(&verified, stream_bytes, OutputFormat::Arrows, &arrows).unwrap();
        assert_eq!(size, std::fs::metadata(&arrows).unwrap().len());
        let bytes = std::fs::read(&arrows).unwrap();
        // The signed bytes, verbatim, then the end-of-stream marker.
        let file = std::fs::read(&verified).unwrap();
        assert_eq!(
            &bytes[..stream_bytes as usize],
            &file[HEADER_LEN..HEADER_LEN + stream_bytes as usize]
        );
        assert!(bytes.ends_with(&END_OF_STREAM));
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let read: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let got = arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
        assert_eq!(got, expected);

        let parquet = tmp.path().join("x.parquet");
        convert_anywhere(&verified, stream_bytes, OutputFormat::Parquet, &parquet).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&parquet).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let read: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let got = arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
        assert_eq!(got.columns()[..2], expected.columns()[..2]);
        // Seconds became milliseconds: the same instants, the zone kept.
        let ms = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        assert_eq!(got.schema().field(2).data_type(), &ms);
        let want = arrow::compute::cast(expected.column(2), &ms).unwrap();
        assert_eq!(got.column(2), &want);
        // Readers that ignore the Arrow schema stored beside the data see a timestamp
        // adjusted to UTC in Parquet's own terms, not bare integers.
        let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
            File::open(&parquet).unwrap(),
            options,
        )
        .unwrap()
        .build()
        .unwrap();
        let read: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let plain = arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
        let ms = plain.schema().field(2).data_type().clone();
        assert!(
            matches!(&ms, DataType::Timestamp(TimeUnit::Millisecond, Some(_))),
            "{ms}"
        );
        let want = arrow::compute::cast(expected.column(2), &ms).unwrap();
        assert_eq!(plain.column(2), &want);
    }

    /// A verified file holding the IPC stream `stream` (as a fetch would assemble it): the
    /// stream split into its messages (continuation, length, metadata, body).
    fn file_of_stream(dir: &Path, stream: &[u8]) -> (std::path::PathBuf, u64) {
        let path = dir.join("stream.partial");
        let mut builder = IpcFileBuilder::create(&path).unwrap();
        for message in messages(stream) {
            builder.append(message).unwrap();
        }
        let bytes = builder.offset() - HEADER_LEN as u64;
        builder.finish_with(false).unwrap();
        (path, bytes)
    }

    /// [`file_of_stream`] of the IPC stream of `batches` under `schema`.
    fn file_of_batches(
        dir: &Path,
        schema: &Schema,
        batches: &[RecordBatch],
    ) -> (std::path::PathBuf, u64) {
        let mut stream = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut stream, schema).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
        drop(writer);
        file_of_stream(dir, &stream)
    }

    #[test]
    fn batches_declaring_huge_sizes_are_refused_before_decoding() {
        let tmp = tempfile::tempdir().unwrap();
        // A compressed batch whose buffer claims 1 TiB once decompressed: the IPC reader
        // would allocate that before decompressing a byte.
        let mut stream = crate::arrow_guard::tests::lz4_zeros_stream();
        let at = crate::arrow_guard::tests::declared_length_at(&stream);
        stream[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
        // Such a frame is refused as it arrives (`ipcfile::inspect`), so no received file
        // holds it: the schema message is taken, the batch is not.
        let mut builder = IpcFileBuilder::create(&tmp.path().join("bomb.partial")).unwrap();
        let frames = messages(&stream);
        builder.append(frames[0]).unwrap();
        match builder.append(frames[1]) {
            Err(crate::dataplane::ipcfile::AppendError::Protocol(why)) => {
                assert!(why.contains("decompressed"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let dest = tmp.path().join("bomb.parquet");

        // Rows that cost nothing on the wire (a column of nulls) but a level each to write.
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Null, true)]));
        let rows = MAX_DECODED_ROWS as usize + 1;
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(NullArray::new(rows))]).unwrap();
        let (many, bytes) = file_of_batches(tmp.path(), &schema, std::slice::from_ref(&batch));
        let err = convert_anywhere(&many, bytes, OutputFormat::Parquet, &dest).unwrap_err();
        assert!(
            matches!(&err, ConvertError::Bounds { what } if what.contains("rows")),
            "{err}"
        );
        assert!(!dest.exists());
        // As an IPC stream the same data is only copied, never decoded: no limit applies.
        let arrows = tmp.path().join("many.arrows");
        convert_anywhere(&many, bytes, OutputFormat::Arrows, &arrows).unwrap();
    }

    /// The parquet crate panics (`unimplemented!`) on a union column instead of returning
    /// an error: the conversion refuses it first, naming the column, and leaves no output.
    #[test]
    fn a_union_column_is_refused_as_parquet_without_a_panic() {
        use arrow::array::{Array as _, Int32Array, StructArray, UnionArray};
        use arrow::datatypes::UnionFields;
        let fields = UnionFields::try_new(
            [0, 1],
            [
                Field::new("n", DataType::Int32, true),
                Field::new("s", DataType::Utf8, true),
            ],
        )
        .unwrap();
        let union = UnionArray::try_new(
            fields,
            vec![0i8, 1, 0].into(),
            None,
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
            ],
        )
        .unwrap();
        let nested = StructArray::from(vec![(
            Arc::new(Field::new("choice", union.data_type().clone(), true)),
            Arc::new(union) as arrow::array::ArrayRef,
        )]);
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from(vec![1, 2, 3])) as arrow::array::ArrayRef,
            ),
            ("detail", Arc::new(nested)),
        ])
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (verified, bytes) =
            file_of_batches(tmp.path(), &batch.schema(), std::slice::from_ref(&batch));
        let dest = tmp.path().join("x.parquet");
        let err = convert_anywhere(&verified, bytes, OutputFormat::Parquet, &dest).unwrap_err();
        assert!(
            matches!(&err, ConvertError::Parquet { .. })
                && err
                    .to_string()
                    .contains("column `detail.choice` is a union"),
            "{err}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn a_failed_conversion_leaves_no_output() {
        let tmp = tempfile::tempdir().unwrap();
        let (verified, _, stream_bytes) = received_file(tmp.path());
        // A file shorter than it claims: the copy notices, the output goes.
        let dest = tmp.path().join("short.arrows");
        let err = convert_anywhere(&verified, stream_bytes + 4096, OutputFormat::Arrows, &dest);
        assert!(err.is_err());
        assert!(!dest.exists());
        // Not an IPC file at all.
        let junk = tmp.path().join("junk");
        std::fs::write(&junk, b"not arrow").unwrap();
        let dest = tmp.path().join("junk.parquet");
        let err = convert_anywhere(&junk, 9, OutputFormat::Parquet, &dest).unwrap_err();
        assert!(matches!(err, ConvertError::Bounds { .. }), "{err}");
        assert!(!dest.exists());
    }

    /// A verified file of the batch decoded from the JSON lines `rows` with the types of
    /// `schema`, where the JSON reader reads dictionaries as their values (cast afterwards).
    fn received_json(
        dir: &Path,
        schema: Schema,
        rows: &str,
    ) -> (std::path::PathBuf, RecordBatch, u64) {
        let plain: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_data_type(undictionaried(f.data_type()))
            })
            .collect();
        let batch = arrow::json::ReaderBuilder::new(Arc::new(Schema::new(plain)))
            .build(rows.as_bytes())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let schema = Arc::new(schema);
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| arrow::compute::cast(c, f.data_type()).unwrap())
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let (path, bytes) = file_of_batches(dir, &schema, std::slice::from_ref(&batch));
        (path, batch, bytes)
    }

    /// `data_type` with each dictionary replaced by its value type, at any depth.
    fn undictionaried(data_type: &DataType) -> DataType {
        let item = |f: &arrow::datatypes::FieldRef| {
            Arc::new(
                f.as_ref()
                    .clone()
                    .with_data_type(undictionaried(f.data_type())),
            )
        };
        match data_type {
            DataType::Dictionary(_, value) => undictionaried(value),
            DataType::List(f) => DataType::List(item(f)),
            DataType::ListView(f) => DataType::ListView(item(f)),
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(item).collect()),
            other => other.clone(),
        }
    }

    /// The types of a Parquet file as a reader that ignores the stored Arrow schema (any tool
    /// but arrow-rs) sees them.
    fn plain_types(path: &Path) -> Vec<String> {
        let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            File::open(path).unwrap(),
            options,
        )
        .unwrap();
        builder
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect()
    }

    /// What pyarrow reads from the Parquet file `path`: `name: type` per column, then each
    /// column's values as Python prints them; `None` with MESHNODE_SKIP_PYARROW=1.
    fn pyarrow_reads(path: &Path) -> Option<Vec<String>> {
        if std::env::var("MESHNODE_SKIP_PYARROW").as_deref() == Ok("1") {
            eprintln!("MESHNODE_SKIP_PYARROW=1: skipping the pyarrow cross-check");
            return None;
        }
        let script = "import sys, pyarrow.parquet as pq\n\
                      t = pq.read_table(sys.argv[1])\n\
                      for f, c in zip(t.schema, t.columns):\n    \
                      print(f'{f.name}: {f.type}')\n\
                      for c in t.columns:\n    print(c.to_pylist())";
        let output = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(path)
            .output()
            .expect("python3 with pyarrow (or set MESHNODE_SKIP_PYARROW=1)");
        assert!(
            output.status.success(),
            "pyarrow cannot read {} (install pyarrow or set MESHNODE_SKIP_PYARROW=1): {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Some(
            String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect(),
        )
    }

    #[test]
    fn seconds_and_date64_in_list_views_dictionaries_and_run_ends_keep_their_meaning_in_parquet() {
        let ts = DataType::Timestamp(TimeUnit::Second, None);
        let tokyo = DataType::Timestamp(TimeUnit::Second, Some("Asia/Tokyo".into()));
        let t32 = DataType::Time32(TimeUnit::Second);
        let item = |data_type: &DataType| Arc::new(Field::new("item", data_type.clone(), true));
        let dict = |key: DataType, value: &DataType| {
            DataType::Dictionary(Box::new(key), Box::new(value.clone()))
        };
        let ree = |value: &DataType| {
            DataType::RunEndEncoded(
                Arc::new(Field::new("run_ends", DataType::Int32, false)),
                Arc::new(Field::new("values", value.clone(), true)),
            )
        };
        let schema = Schema::new(vec![
            Field::new("lv_ts", DataType::ListView(item(&ts)), true),
            Field::new("llv_t32", DataType::LargeListView(item(&t32)), true),
            Field::new("lv_d64", DataType::ListView(item(&DataType::Date64)), true),
            Field::new("dict_d64", dict(DataType::Int32, &DataType::Date64), true),
            Field::new("dict_ts", dict(DataType::Int32, &tokyo), true),
            Field::new("dict_t32", dict(DataType::Int16, &t32), true),
            Field::new("ree_ts", ree(&ts), true),
            Field::new("ree_d64", ree(&DataType::Date64), true),
            Field::new("ree_t32", ree(&t32), true),
            Field::new(
                "l_dict",
                DataType::List(item(&dict(DataType::Int8, &DataType::Date64))),
                true,
            ),
            Field::new(
                "lv_struct",
                DataType::ListView(item(&DataType::Struct(
                    vec![Field::new("at", ts.clone(), true)].into(),
                ))),
                true,
            ),
        ]);
        let day = 86_400_000;
        let rows = format!(
            "{{\"lv_ts\": [1, 2], \"llv_t32\": [3600], \"lv_d64\": [{day}], \"dict_d64\": {day}, \
             \"dict_ts\": 5, \"dict_t32\": 60, \"ree_ts\": 7, \"ree_d64\": {day}, \"ree_t32\": 8, \
             \"l_dict\": [{day}, null], \"lv_struct\": [{{\"at\": 9}}]}}\n\
             {{\"lv_ts\": [], \"dict_d64\": 0, \"ree_ts\": 7, \"ree_t32\": null}}\n"
        );
        let tmp = tempfile::tempdir().unwrap();
        let (verified, batch, bytes) = received_json(tmp.path(), schema, &rows);
        let parquet = tmp.path().join("x.parquet");
        convert_anywhere(&verified, bytes, OutputFormat::Parquet, &parquet).unwrap();

        // Any reader sees times, timestamps and dates, not bare integers.
        assert_eq!(
            plain_types(&parquet),
            [
                "lv_ts: List(Timestamp(ms))",
                "llv_t32: List(Time32(ms))",
                "lv_d64: List(Date32)",
                "dict_d64: Date32",
                "dict_ts: Timestamp(ms, \"UTC\")",
                "dict_t32: Time32(ms)",
                "ree_ts: Timestamp(ms)",
                "ree_d64: Date32",
                "ree_t32: Time32(ms)",
                "l_dict: List(Date32)",
                "lv_struct: List(Struct(\"at\": Timestamp(ms)))",
            ]
        );
        // arrow-rs reads the same values back, in the types of `parquet_schema`.
        let read = ParquetRecordBatchReaderBuilder::try_new(File::open(&parquet).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let want = cast_to_schema(batch.clone(), &parquet_schema(&batch.schema())).unwrap();
        for (index, column) in want.columns().iter().enumerate() {
            let back = arrow::compute::cast(read.column(index), column.data_type()).unwrap();
            assert_eq!(&back, column, "{}", want.schema().field(index).name());
        }

        // pyarrow reads the types it reads from a file it wrote itself from the same columns
        // (its Parquet writer refuses run-end encoded arrays; it reads their values), and
        // the same values.
        let Some(read) = pyarrow_reads(&parquet) else {
            return;
        };
        let (types, values) = read.split_at(11);
        assert_eq!(
            types,
            [
                "lv_ts: list_view<item: timestamp[ms]>",
                "llv_t32: large_list_view<item: time32[ms]>",
                "lv_d64: list_view<item: date32[day]>",
                "dict_d64: date32[day]",
                "dict_ts: timestamp[ms, tz=UTC]",
                "dict_t32: time32[ms]",
                "ree_ts: timestamp[ms]",
                "ree_d64: date32[day]",
                "ree_t32: time32[ms]",
                "l_dict: list<item: date32[day]>",
                "lv_struct: list_view<item: struct<at: timestamp[ms]>>",
            ],
            "{read:#?}"
        );
        assert_eq!(
            values,
            [
                "[[datetime.datetime(1970, 1, 1, 0, 0, 1), datetime.datetime(1970, 1, 1, 0, 0, 2)], []]",
                "[[datetime.time(1, 0)], None]",
                "[[datetime.date(1970, 1, 2)], None]",
                "[datetime.date(1970, 1, 2), datetime.date(1970, 1, 1)]",
                "[datetime.datetime(1970, 1, 1, 0, 0, 5, tzinfo=zoneinfo.ZoneInfo(key='UTC')), None]",
                "[datetime.time(0, 1), None]",
                "[datetime.datetime(1970, 1, 1, 0, 0, 7), datetime.datetime(1970, 1, 1, 0, 0, 7)]",
                "[datetime.date(1970, 1, 2), None]",
                "[datetime.time(0, 0, 8), None]",
                "[[datetime.date(1970, 1, 2), None], None]",
                "[[{'at': datetime.datetime(1970, 1, 1, 0, 0, 9)}], None]",
            ],
            "{read:#?}"
        );
    }

    #[test]
    fn a_value_parquet_cannot_hold_is_refused_naming_its_column_and_leaves_no_output() {
        use arrow::array::{Date64Array, ListArray, Time32SecondArray};
        let tmp = tempfile::tempdir().unwrap();
        let day = 86_400_000i64;
        let list = |values: ArrayRef| {
            let field = Arc::new(Field::new("item", values.data_type().clone(), true));
            let offsets = arrow::buffer::OffsetBuffer::from_lengths([1, values.len() - 1]);
            Arc::new(ListArray::new(field, offsets, values, None)) as ArrayRef
        };
        // The seconds of pyarrow's example, whose milliseconds overflow an i64; a Date64 one
        // day past the last Date32; a Time32 in seconds whose milliseconds overflow an i32; and
        // the first one in a list.
        let seconds: ArrayRef = Arc::new(TimestampSecondArray::from(vec![1 << 62, -(1 << 62)]));
        let cases: [(&str, ArrayRef, &str); 4] = [
            (
                "ts",
                seconds.clone(),
                "Overflow happened on: 4611686018427387904 * 1000",
            ),
            (
                "day",
                Arc::new(Date64Array::from(vec![0, (i64::from(i32::MAX) + 1) * day])),
                "Cannot cast Date64 value 185542587187200000 to Date32 without overflow",
            ),
            (
                "time",
                Arc::new(Time32SecondArray::from(vec![Some(i32::MAX), None])),
                "Overflow happened on: 2147483647 * 1000",
            ),
            ("history", list(seconds), "Overflow happened on"),
        ];
        for (name, column, problem) in cases {
            // Nullable, as pyarrow's columns are: a cast that makes nulls of what it cannot
            // hold would pass unnoticed.
            let batch = RecordBatch::try_from_iter_with_nullable([
                (
                    "id",
                    Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
                    false,
                ),
                (name, column, true),
            ])
            .unwrap();
            let (verified, bytes) =
                file_of_batches(tmp.path(), &batch.schema(), std::slice::from_ref(&batch));
            let dest = tmp.path().join("x.parquet");
            let err = convert_anywhere(&verified, bytes, OutputFormat::Parquet, &dest).unwrap_err();
            assert!(
                matches!(
                    &err,
                    ConvertError::Value {
                        source: ParquetCastError::OutOfRange { .. }
                    }
                ),
                "{err:?}"
            );
            let message = err.to_string();
            for part in [
                &format!("column `{name}` holds a value out of the range of"),
                problem,
                "fetch it as Arrow IPC (--out FILE.arrow)",
            ] {
                assert!(message.contains(part), "{part}: {message}");
            }
            assert!(!dest.exists(), "{name}");
        }
    }

    #[test]
    fn only_the_values_of_a_column_are_checked_not_what_its_nulls_hide() {
        use arrow::buffer::NullBuffer;
        // A null slot may hold any bits: it is not a value, and stays a null.
        let hidden = arrow::array::PrimitiveArray::<arrow::datatypes::TimestampSecondType>::new(
            vec![i64::MAX, 1_733_047_200].into(),
            Some(NullBuffer::from(vec![false, true])),
        );
        let batch = RecordBatch::try_from_iter([("at", Arc::new(hidden) as ArrayRef)]).unwrap();
        let cast = cast_to_schema(batch.clone(), &parquet_schema(&batch.schema())).unwrap();
        let at = cast.column(0);
        assert_eq!(
            at.data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert!(at.is_null(0));
        let back = arrow::compute::cast(at, &DataType::Int64).unwrap();
        let back = back.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(back.value(1), 1_733_047_200_000);
    }

    #[test]
    fn uuid_and_json_extension_columns_keep_their_logical_types_in_parquet() {
        use arrow::array::FixedSizeBinaryArray;
        use parquet::basic::LogicalType;
        use std::collections::HashMap;
        let annotated = |name: &str, data_type: DataType, extension: &str, parameters: &str| {
            Field::new(name, data_type, true).with_metadata(HashMap::from([
                ("ARROW:extension:name".to_owned(), extension.to_owned()),
                ("ARROW:extension:metadata".to_owned(), parameters.to_owned()),
            ]))
        };
        // As pyarrow writes `pa.uuid()` and `pa.json_()`, and a column whose annotation does
        // not fit its type (`arrow.uuid` over text), which is written as what it holds.
        let schema = Arc::new(Schema::new(vec![
            annotated("u", DataType::FixedSizeBinary(16), "arrow.uuid", ""),
            annotated("j", DataType::Utf8, "arrow.json", ""),
            annotated("t", DataType::Utf8, "arrow.uuid", ""),
        ]));
        let uuids = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
            [Some([0x11u8; 16]), None].into_iter(),
            16,
        )
        .unwrap();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(uuids),
                Arc::new(StringArray::from(vec![Some(r#"{"a":1}"#), None])),
                Arc::new(StringArray::from(vec![Some("x"), None])),
            ],
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (verified, stream_bytes) =
            file_of_batches(tmp.path(), &schema, std::slice::from_ref(&batch));
        let dest = tmp.path().join("x.parquet");
        convert_anywhere(&verified, stream_bytes, OutputFormat::Parquet, &dest).unwrap();

        // The Parquet logical types, which readers without the Arrow schema (DuckDB) go by.
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&dest).unwrap()).unwrap();
        let logical: Vec<Option<LogicalType>> = builder
            .parquet_schema()
            .columns()
            .iter()
            .map(|c| c.logical_type_ref().cloned())
            .collect();
        assert_eq!(
            logical,
            [
                Some(LogicalType::Uuid),
                Some(LogicalType::Json),
                Some(LogicalType::String)
            ]
        );
        let read = builder.build().unwrap().next().unwrap().unwrap();
        assert_eq!(read.schema(), schema);
        assert_eq!(read, batch);
    }
}
