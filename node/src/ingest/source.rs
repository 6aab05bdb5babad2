//! Parquet and Arrow IPC inputs, and [`Source`], which yields the record batches of any input
//! one at a time. Each input is checked before a reader is built over it (a Parquet file's
//! schema depth, pages, INT96 timestamps and intervals, an Arrow IPC input's messages), and
//! reader calls run where a panic on hostile input is contained.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, FieldRef, IntervalUnit, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileReader, StreamReader};
use base64::Engine as _;
use mesh_protocol::bounds::BoundsError;
use parquet::arrow::ARROW_SCHEMA_META_KEY;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::basic::Type as PhysicalType;
use parquet::column::reader::ColumnReaderImpl;
use parquet::data_type::{FixedLenByteArray, FixedLenByteArrayType, Int96, Int96Type};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::SchemaDescriptor;

use super::csv::{CsvSource, open_csv};
use super::error::{IngestError, io_error};
use super::{BATCH_ROWS, CsvOptions, InputFormat, MAX_BATCH_ROWS, MAX_DECOMPRESSED_BATCH};
use crate::arrow_guard::{self, MessageBounds, MessageError};

/// What each message of an Arrow IPC input may declare: any metadata and body that fit in
/// the file (the walk checks that), at most [`MAX_BATCH_ROWS`] rows and at most
/// [`MAX_DECOMPRESSED_BATCH`] bytes once decompressed.
const ARROW_INPUT_BOUNDS: MessageBounds = MessageBounds {
    max_metadata: u64::MAX,
    max_body: u64::MAX,
    max_rows: MAX_BATCH_ROWS,
    max_decompressed: MAX_DECOMPRESSED_BATCH,
    max_delta_copy: MAX_DELTA_COPY,
};

/// Most bytes the delta dictionaries of an Arrow stream input may make its reader copy,
/// counted from their messages' bodies: 64 GiB, some seconds of copying. A dictionary that
/// grows by 10 kB in each of 1,000 batches copies 5 GB; 4 million one-value deltas in a
/// 400 MB file would copy hundreds of terabytes.
const MAX_DELTA_COPY: u64 = 64 << 30;

/// The magic that opens an Arrow IPC file (a stream starts with a message instead).
const ARROW_FILE_MAGIC: &[u8; 6] = b"ARROW1";

/// The magic that opens (and ends) a Feather version 1 file, the layout Feather had before it
/// became the Arrow IPC file (Feather version 2).
const FEATHER_V1_MAGIC: &[u8; 4] = b"FEA1";

/// Reads the first bytes of an `.arrow`-like file to tell the IPC file from the IPC stream.
/// A Feather version 1 file, which is neither, is refused with what to do about it.
pub(super) fn sniff_arrow(path: &Path) -> Result<InputFormat, IngestError> {
    let file = File::open(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => IngestError::NotFound {
            file: path.to_path_buf(),
        },
        _ => io_error(path, "open", error),
    })?;
    let mut magic = Vec::with_capacity(ARROW_FILE_MAGIC.len());
    file.take(ARROW_FILE_MAGIC.len() as u64)
        .read_to_end(&mut magic)
        .map_err(|e| io_error(path, "read", e))?;
    if magic.starts_with(FEATHER_V1_MAGIC) {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        return Err(IngestError::ArrowBounds {
            file: path.to_path_buf(),
            format: InputFormat::ArrowFile,
            problem: format!(
                "it is a Feather version 1 file (it starts with `FEA1`), the layout Feather had \
                 before it became the Arrow IPC file, which meshnode does not read: re-save it \
                 as Feather version 2, for example with `pyarrow.feather.write_feather(\
                 pyarrow.feather.read_table('{name}'), 'v2.feather')` (version 2 is the \
                 default; pass `version=2` to say so), and publish that file"
            ),
        });
    }
    Ok(if magic == ARROW_FILE_MAGIC {
        InputFormat::ArrowFile
    } else {
        InputFormat::ArrowStream
    })
}

/// One input, as a sequence of record batches.
pub(super) enum Source {
    /// A CSV being decoded record by record.
    Csv(Box<CsvSource>),
    /// A Parquet file, decoded row group by row group.
    Parquet {
        /// Input path, for error messages.
        path: PathBuf,
        /// The file's Arrow schema with its metadata (the reader's own schema drops it).
        schema: SchemaRef,
        /// The streaming reader.
        reader: ParquetRecordBatchReader,
    },
    /// An Arrow IPC file (random-access layout), read batch by batch.
    ArrowFile {
        /// Input path, for error messages.
        path: PathBuf,
        /// The streaming reader.
        reader: FileReader<BufReader<File>>,
    },
    /// An Arrow IPC stream, read message by message.
    ArrowStream {
        /// Input path, for error messages.
        path: PathBuf,
        /// The streaming reader.
        reader: StreamReader<BufReader<File>>,
    },
}

impl Source {
    pub(super) fn open(
        path: &Path,
        file: File,
        format: InputFormat,
        options: &CsvOptions,
    ) -> Result<Source, IngestError> {
        let arrow_error = |error| arrow_read_error(path, format, error);
        Ok(match format {
            InputFormat::Csv => Source::Csv(Box::new(open_csv(path, file, options)?)),
            InputFormat::Parquet => {
                // The parquet crate builds the schema by recursion, and its Thrift skipper
                // loops once per bool of a list it skips: walk the footer first (measuring
                // the schema's depth from its flat list), so a hostile file can neither
                // overflow the stack nor hold the thread.
                let mut file = file;
                match crate::parquet_footer::check_file(&mut file)
                    .map_err(|e| io_error(path, "read", e))?
                {
                    Ok(()) => {}
                    Err(crate::parquet_footer::FooterError::TooDeep { depth, max }) => {
                        return Err(IngestError::OverLimit {
                            file: path.to_path_buf(),
                            problem: BoundsError::TooDeep {
                                what: "the Parquet schema".into(),
                                depth,
                                max,
                            },
                        });
                    }
                    Err(e) => {
                        return Err(IngestError::Parquet {
                            file: path.to_path_buf(),
                            detail: e.to_string(),
                        });
                    }
                }
                // parquet decodes the `ARROW:schema` hint with arrow-ipc, which panics on some
                // inputs: contain it.
                arrow_guard::catch(|| open_parquet(path, file)).unwrap_or_else(|why| {
                    Err(IngestError::Parquet {
                        file: path.to_path_buf(),
                        detail: format!("the reader failed on malformed data ({why})"),
                    })
                })?
            }
            InputFormat::ArrowFile => {
                let file = check_arrow_sizes(path, format, file)?;
                Source::ArrowFile {
                    path: path.to_path_buf(),
                    reader: arrow_guard::contain(|| FileReader::try_new_buffered(file, None))
                        .map_err(arrow_error)?,
                }
            }
            InputFormat::ArrowStream => {
                let file = check_arrow_sizes(path, format, file)?;
                Source::ArrowStream {
                    path: path.to_path_buf(),
                    reader: arrow_guard::contain(|| StreamReader::try_new_buffered(file, None))
                        .map_err(arrow_error)?,
                }
            }
        })
    }

    pub(super) fn schema(&self) -> SchemaRef {
        match self {
            Source::Csv(csv) => csv.schema.clone(),
            Source::Parquet { schema, .. } => schema.clone(),
            Source::ArrowFile { reader, .. } => reader.schema(),
            Source::ArrowStream { reader, .. } => reader.schema(),
        }
    }

    /// The next batch, `None` at the end of the input.
    pub(super) fn next_batch(&mut self) -> Result<Option<RecordBatch>, IngestError> {
        match self {
            Source::Csv(csv) => csv.next_batch(),
            Source::Parquet { path, reader, .. } => contained(|| reader.next().transpose())
                .map_err(|error| match error {
                    ArrowError::IoError(_, error) if reading_failed(&error) => {
                        io_error(path, "read", error)
                    }
                    error => IngestError::Parquet {
                        file: path.clone(),
                        detail: error.to_string(),
                    },
                }),
            Source::ArrowFile { path, reader } => contained(|| reader.next().transpose())
                .map_err(|e| arrow_read_error(path, InputFormat::ArrowFile, e)),
            Source::ArrowStream { path, reader } => contained(|| reader.next().transpose())
                .map_err(|e| arrow_read_error(path, InputFormat::ArrowStream, e)),
        }
    }
}

/// Runs a reader call over the input, turning a panic inside arrow or parquet (an assertion
/// on a buffer outside its message, ...) into an error.
fn contained<T>(read: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, ArrowError> {
    arrow_guard::catch(read).unwrap_or_else(|why| {
        Err(ArrowError::IpcError(format!(
            "the reader failed on malformed data ({why})"
        )))
    })
}

/// Opens a Parquet file whose footer was checked, reading the types of [`reader_schema`]
/// (dictionaries as their values, INT96 timestamps as microseconds, timestamps in the time
/// zones of the `ARROW:schema` whatever their unit) once [`check_int96`] has seen every INT96
/// value fit and [`check_intervals`] every interval read whole.
fn open_parquet(path: &Path, file: File) -> Result<Source, IngestError> {
    let parquet_error = |error: parquet::errors::ParquetError| IngestError::Parquet {
        file: path.to_path_buf(),
        detail: error.to_string(),
    };
    let mut metadata =
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(parquet_error)?;
    let batch_rows = check_parquet_pages(path, &file, metadata.metadata())?;
    let refused = |detail| IngestError::Parquet {
        file: path.to_path_buf(),
        detail,
    };
    // Only a file whose reader schema has a timestamp adjusted to UTC can need a time zone
    // from its `ARROW:schema`: the others are not made to decode it a second time.
    let recorded = if metadata
        .schema()
        .fields()
        .iter()
        .any(|f| has_zoned_timestamp(f.data_type()))
    {
        recorded_schema(metadata.metadata()).map_err(refused)?
    } else {
        None
    };
    let hinted = metadata
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .is_some_and(|pairs| {
            pairs
                .iter()
                .any(|kv| kv.key == ARROW_SCHEMA_META_KEY && kv.value.is_some())
        });
    let schema = reader_schema(
        metadata.schema(),
        metadata.parquet_schema(),
        recorded.as_ref(),
        hinted,
    )
    .map_err(refused)?;
    let schema = Arc::new(schema);
    if schema != *metadata.schema() {
        let options = ArrowReaderOptions::new().with_schema(schema.clone());
        metadata = ArrowReaderMetadata::try_new(metadata.metadata().clone(), options)
            .map_err(parquet_error)?;
    }
    check_int96(path, &file, metadata.metadata(), batch_rows)?;
    check_intervals(
        path,
        &file,
        metadata.metadata(),
        metadata.schema(),
        batch_rows,
    )?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
        .with_batch_size(batch_rows)
        .build()
        .map_err(parquet_error)?;
    Ok(Source::Parquet {
        path: path.to_path_buf(),
        schema,
        reader,
    })
}

/// Walks the page headers of a Parquet input with [`crate::parquet_footer::check_pages`]
/// before a reader is built over it, and returns the rows per batch that keep a batch
/// within [`MAX_PARQUET_BATCH`](crate::parquet_footer::MAX_PARQUET_BATCH)
/// ([`crate::parquet_footer::batch_rows`], at most [`BATCH_ROWS`]).
fn check_parquet_pages(
    path: &Path,
    file: &File,
    metadata: &ParquetMetaData,
) -> Result<usize, IngestError> {
    use crate::parquet_footer::{PageError, batch_rows, check_pages};
    let refused = |error: PageError| {
        let hint = match error {
            PageError::Malformed { .. } => "check that it is a complete, valid Parquet file",
            PageError::OverBound { .. } => {
                "write it with smaller pages (e.g. pyarrow's `data_page_size`), smaller row \
                 groups, fewer or narrower columns, compressed with ZSTD or Snappy"
            }
        };
        IngestError::ParquetBounds {
            file: path.to_path_buf(),
            problem: format!("{error}: {hint}"),
        }
    };
    let read_error = |e| io_error(path, "read", e);
    check_pages(file, metadata)
        .map_err(read_error)?
        .map_err(refused)?;
    batch_rows(file, metadata, BATCH_ROWS)
        .map_err(read_error)?
        .map_err(refused)
}

/// Walks the messages of an Arrow IPC input (headers only, with [`arrow_guard::check_file`]
/// or [`arrow_guard::check_stream`]) and refuses one that declares more than its reader should
/// allocate; returns `file` rewound for the reader.
fn check_arrow_sizes(
    path: &Path,
    format: InputFormat,
    mut file: File,
) -> Result<File, IngestError> {
    let walked = match format {
        InputFormat::ArrowFile => arrow_guard::check_file(&mut file, &ARROW_INPUT_BOUNDS),
        _ => arrow_guard::check_stream(&mut file, 0, u64::MAX, &ARROW_INPUT_BOUNDS).map(drop),
    };
    let refused = |problem: String| IngestError::ArrowBounds {
        file: path.to_path_buf(),
        format,
        problem,
    };
    match walked {
        Ok(()) => {}
        Err(MessageError::Io(error)) => return Err(io_error(path, "read", error)),
        Err(MessageError::Malformed(what)) => {
            return Err(refused(format!(
                "{what}: check that it is a complete, valid Arrow IPC file"
            )));
        }
        Err(MessageError::OverBound(what)) => {
            return Err(refused(format!(
                "{what}: export it in smaller record batches or without compression"
            )));
        }
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_error(path, "read", e))?;
    Ok(file)
}

fn arrow_read_error(path: &Path, format: InputFormat, error: ArrowError) -> IngestError {
    match error {
        ArrowError::IoError(_, error) if reading_failed(&error) => io_error(path, "read", error),
        error => IngestError::Arrow {
            file: path.to_path_buf(),
            format,
            error,
        },
    }
}

/// Whether an I/O error a reader returned is the input failing to read, rather than a
/// decompressor refusing the data (ZSTD's "Src size is incorrect" and LZ4's errors reach us
/// as `io::Error`s of kind `Other` or `InvalidData`): only the first is worth an
/// [`IngestError::Io`], which sends the user to check the path and the disk.
fn reading_failed(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::Other | io::ErrorKind::InvalidData
    )
}

/// The Arrow schema a Parquet input is read with (asked of the reader through
/// [`ArrowReaderOptions::with_schema`]): the file's own, from its Parquet types and any
/// `ARROW:schema` it stores (`recorded`, decoded by [`recorded_schema`]), with four changes.
///
/// A timestamp stored adjusted to UTC takes the time zone `recorded` gives it, at any depth
/// ([`with_recorded_zone`]), whatever the unit it was written from. Parquet has no time zones,
/// so pyarrow records the column's Arrow type and its reader puts the zone back (ARROW-9634);
/// the parquet crate does so only when the recorded unit is the stored one, which is never the
/// case for seconds (pyarrow stores them as milliseconds) nor after `coerce_timestamps` or
/// `version='1.0'` (nanoseconds stored as microseconds): such a column would be read in
/// `"UTC"`, the same instants shown at another wall-clock time. The unit stays the stored
/// one, as pyarrow reads it.
///
/// Top-level dictionary columns are read as their value type. Parquet dictionaries are per row
/// group (a pandas categorical comes back as a different dictionary in each), while an Arrow
/// IPC file holds one dictionary per column, so keeping the dictionary type would fail on any
/// file with more than one row group.
///
/// INT96 columns, at any depth, are read as `Timestamp(Microsecond)`, with the time zone an
/// `ARROW:schema` gives them, if any. INT96 is the legacy timestamp of Spark and Impala (Spark
/// still writes it by default in many setups): a julian day and a nanosecond of that day. The
/// reader's default, nanoseconds since 1970, only reaches the years 1677 to 2262, and parquet
/// converts with wrapping arithmetic: a date outside that range, such as Spark's usual "end of
/// time" 9999-12-31, would silently become another (1816-03-29) and be signed and served as
/// such. Microseconds reach about 292,000 years either side of 1970 and are what Spark and
/// DuckDB read INT96 as. The cost: the sub-microsecond digits of an INT96 value are dropped.
/// Spark never writes them (its timestamps are microseconds); Impala, whose timestamps have
/// nanoseconds, can, and such a value loses its last three digits. A value even microseconds
/// cannot hold is refused by [`check_int96`].
///
/// In a file that records no `ARROW:schema` (`hinted` false: DuckDB's files, pyarrow's with
/// `store_schema=False`), a column of Parquet's UUID or JSON logical type is read as the
/// canonical extension type pyarrow reads it as (`arrow.uuid` over `FixedSizeBinary(16)`,
/// `arrow.json` over `Utf8`, named in the field's metadata); a recorded schema gives its own.
/// Below the top level such a file's fields are read as their storage types, and any file's
/// nested fields without the Parquet field ids the reader notes in their metadata (Iceberg's
/// and Spark's files carry ids on every field) ([`without_nested_metadata`]): a descriptor's
/// type text holds no field metadata, so a nested field carrying some could not be published
/// at all. A top-level column keeps its field id.
fn reader_schema(
    schema: &Schema,
    parquet: &SchemaDescriptor,
    recorded: Option<&Schema>,
    hinted: bool,
) -> Result<Schema, String> {
    let mut fields: Vec<Field> = match recorded {
        // parquet refuses a recorded schema of another shape, so fields pair by position.
        Some(recorded) if recorded.fields().len() == schema.fields().len() => schema
            .fields()
            .iter()
            .zip(recorded.fields())
            .map(|(field, recorded)| with_recorded_zone(field, recorded))
            .collect(),
        _ => schema.fields().iter().map(|f| f.as_ref().clone()).collect(),
    };
    let int96: Vec<bool> = parquet
        .columns()
        .iter()
        .map(|column| column.physical_type() == PhysicalType::INT96)
        .collect();
    if int96.contains(&true) {
        // parquet turns each leaf column into one Arrow leaf, in the same order.
        let mut leaves = int96.into_iter();
        for field in &mut fields {
            *field = with_int96_micros(field, &mut leaves)?;
        }
        if leaves.next().is_some() {
            return Err("its Arrow schema has fewer leaf columns than its Parquet schema".into());
        }
    }
    for field in &mut fields {
        if let DataType::Dictionary(_, value) = field.data_type() {
            let value = value.as_ref().clone();
            *field = field.clone().with_data_type(value);
        }
    }
    for field in &mut fields {
        let data_type = without_nested_metadata(field.data_type(), !hinted);
        *field = field.clone().with_data_type(data_type);
    }
    Ok(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The field metadata key naming a field's extension type.
pub(super) const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";

/// The field metadata key holding a field's extension type parameters.
const EXTENSION_METADATA_KEY: &str = "ARROW:extension:metadata";

/// `data_type` with the Parquet field ids the reader notes in its fields' metadata removed,
/// and with `extensions` the `arrow.uuid` and `arrow.json` annotations it derives from
/// Parquet's logical types too, at any depth ([`reader_schema`]). The recursion goes no
/// deeper than the reader's schema, whose depth the footer check bounds.
fn without_nested_metadata(data_type: &DataType, extensions: bool) -> DataType {
    let child = |field: &FieldRef| {
        let mut metadata = field.metadata().clone();
        metadata.remove(parquet::arrow::PARQUET_FIELD_ID_META_KEY);
        if extensions
            && matches!(
                metadata.get(EXTENSION_NAME_KEY).map(String::as_str),
                Some("arrow.uuid" | "arrow.json")
            )
        {
            metadata.remove(EXTENSION_NAME_KEY);
            metadata.remove(EXTENSION_METADATA_KEY);
        }
        Arc::new(
            field
                .as_ref()
                .clone()
                .with_data_type(without_nested_metadata(field.data_type(), extensions))
                .with_metadata(metadata),
        )
    };
    match data_type {
        DataType::Struct(children) => DataType::Struct(children.iter().map(child).collect()),
        DataType::List(item) => DataType::List(child(item)),
        DataType::LargeList(item) => DataType::LargeList(child(item)),
        DataType::ListView(item) => DataType::ListView(child(item)),
        DataType::LargeListView(item) => DataType::LargeListView(child(item)),
        DataType::FixedSizeList(item, size) => DataType::FixedSizeList(child(item), *size),
        DataType::Map(entries, sorted) => DataType::Map(child(entries), *sorted),
        other => other.clone(),
    }
}

/// Whether `data_type` holds a timestamp with a time zone, at any depth: what the reader makes
/// of a Parquet timestamp adjusted to UTC, whose zone the `ARROW:schema` may record.
fn has_zoned_timestamp(data_type: &DataType) -> bool {
    match data_type {
        DataType::Timestamp(_, zone) => zone.is_some(),
        DataType::Struct(children) => children.iter().any(|c| has_zoned_timestamp(c.data_type())),
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::FixedSizeList(item, _)
        | DataType::Map(item, _) => has_zoned_timestamp(item.data_type()),
        DataType::Dictionary(_, value) => has_zoned_timestamp(value),
        _ => false,
    }
}

/// The Arrow schema a Parquet file records under `ARROW:schema`, decoded as parquet decodes
/// it (the last such key, base64, an optional IPC continuation and length, then a flatbuffer
/// `Message` holding the schema), or `None` when there is none.
///
/// Bounds: the text is part of the footer, which [`crate::parquet_footer::check_file`] has
/// walked whole (it is no longer than the file), and parquet has already decoded these very
/// bytes once, with the same flatbuffers verifier (at most 64 tables deep and a million
/// tables) and inside [`arrow_guard::catch`], before this is called; arrow-ipc's panics on a
/// malformed schema are contained here too. The caller decodes it only for a file with a
/// timestamp adjusted to UTC, and [`with_recorded_zone`] recurses no deeper than the reader's
/// schema, whose depth the footer check bounds.
fn recorded_schema(metadata: &ParquetMetaData) -> Result<Option<Schema>, String> {
    let Some(text) = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|pairs| {
            pairs
                .iter()
                .rev()
                .find(|kv| kv.key == ARROW_SCHEMA_META_KEY && kv.value.is_some())
        })
        .and_then(|kv| kv.value.as_deref())
    else {
        return Ok(None);
    };
    // Standard base64 with padding, as pyarrow writes it and parquet reads it.
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("its `{ARROW_SCHEMA_META_KEY}` is not valid base64: {e}"))?;
    let message = match bytes.get(..4) {
        Some([0xff, 0xff, 0xff, 0xff]) if bytes.len() > 8 => &bytes[8..],
        _ => &bytes[..],
    };
    arrow_guard::contain(|| arrow::ipc::convert::try_schema_from_flatbuffer_bytes(message))
        .map(Some)
        .map_err(|e| format!("cannot decode its `{ARROW_SCHEMA_META_KEY}`: {e}"))
}

/// `field`, as the reader infers it, with the time zones `recorded` (the same column in the
/// file's `ARROW:schema`) gives its timestamps, at any depth: a timestamp the reader reads
/// with a zone (stored adjusted to UTC) takes the recorded type's zone, when it has one, and
/// keeps its unit. This is pyarrow's rule (`ApplyOriginalStorageMetadata`): a timestamp stored
/// as local time stays without a zone, and a recorded type without one changes nothing.
/// Unlike pyarrow, which reads a dictionary of zoned timestamps in `"UTC"` whatever its unit,
/// the zone is also put back under a recorded dictionary, as the parquet crate already does
/// when the units match. Types that do not pair up are left as the reader infers them.
fn with_recorded_zone(field: &Field, recorded: &Field) -> Field {
    field
        .clone()
        .with_data_type(zoned_type(field.data_type(), recorded.data_type()))
}

/// The type of [`with_recorded_zone`].
fn zoned_type(data_type: &DataType, mut recorded: &DataType) -> DataType {
    while let DataType::Dictionary(_, value) = recorded {
        recorded = value;
    }
    let item = |item: &FieldRef, recorded_item: &FieldRef| {
        Arc::new(with_recorded_zone(item, recorded_item))
    };
    let recorded_item = match recorded {
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::FixedSizeList(item, _) => Some(item),
        _ => None,
    };
    match (data_type, recorded, recorded_item) {
        (DataType::Timestamp(unit, Some(_)), DataType::Timestamp(_, Some(zone)), _)
            if !zone.is_empty() =>
        {
            DataType::Timestamp(*unit, Some(zone.clone()))
        }
        (DataType::Dictionary(key, value), _, _) => {
            DataType::Dictionary(key.clone(), Box::new(zoned_type(value, recorded)))
        }
        (DataType::Struct(children), DataType::Struct(recorded), _)
            if children.len() == recorded.len() =>
        {
            DataType::Struct(
                children
                    .iter()
                    .zip(recorded.iter())
                    .map(|(child, recorded)| item(child, recorded))
                    .collect(),
            )
        }
        (DataType::Map(entries, sorted), DataType::Map(recorded, _), _) => {
            DataType::Map(item(entries, recorded), *sorted)
        }
        (DataType::List(inner), _, Some(recorded)) => DataType::List(item(inner, recorded)),
        (DataType::LargeList(inner), _, Some(recorded)) => {
            DataType::LargeList(item(inner, recorded))
        }
        (DataType::ListView(inner), _, Some(recorded)) => DataType::ListView(item(inner, recorded)),
        (DataType::LargeListView(inner), _, Some(recorded)) => {
            DataType::LargeListView(item(inner, recorded))
        }
        (DataType::FixedSizeList(inner, size), _, Some(recorded)) => {
            DataType::FixedSizeList(item(inner, recorded), *size)
        }
        (other, _, _) => other.clone(),
    }
}

/// `field` with its INT96 leaves read as microseconds ([`reader_schema`]). `leaves` says of
/// each leaf column of the Parquet schema, in order, whether it is INT96; the leaves of
/// `field` are taken from it.
fn with_int96_micros(
    field: &Field,
    leaves: &mut impl Iterator<Item = bool>,
) -> Result<Field, String> {
    let data_type = match field.data_type() {
        DataType::Struct(children) => DataType::Struct(
            children
                .iter()
                .map(|child| with_int96_micros(child, leaves))
                .collect::<Result<Vec<Field>, String>>()?
                .into(),
        ),
        DataType::List(item) => DataType::List(item_with_int96_micros(item, leaves)?),
        DataType::LargeList(item) => DataType::LargeList(item_with_int96_micros(item, leaves)?),
        DataType::ListView(item) => DataType::ListView(item_with_int96_micros(item, leaves)?),
        DataType::LargeListView(item) => {
            DataType::LargeListView(item_with_int96_micros(item, leaves)?)
        }
        DataType::FixedSizeList(item, size) => {
            DataType::FixedSizeList(item_with_int96_micros(item, leaves)?, *size)
        }
        DataType::Map(entries, sorted) => {
            DataType::Map(item_with_int96_micros(entries, leaves)?, *sorted)
        }
        leaf => match leaves.next() {
            Some(false) => return Ok(field.clone()),
            Some(true) => {
                // A dictionary of them (pyarrow records one) is read as its values: parquet
                // cannot decode INT96 into a dictionary below the top level.
                let mut values = leaf;
                while let DataType::Dictionary(_, inner) = values {
                    values = inner;
                }
                let DataType::Timestamp(_, zone) = values else {
                    return Err(format!(
                        "its INT96 column `{}` has the Arrow type {leaf}, not a timestamp",
                        field.name()
                    ));
                };
                DataType::Timestamp(TimeUnit::Microsecond, zone.clone())
            }
            None => {
                return Err(
                    "its Arrow schema has more leaf columns than its Parquet schema".into(),
                );
            }
        },
    };
    Ok(field.clone().with_data_type(data_type))
}

fn item_with_int96_micros(
    item: &FieldRef,
    leaves: &mut impl Iterator<Item = bool>,
) -> Result<FieldRef, String> {
    with_int96_micros(item, leaves).map(Arc::new)
}

/// Decodes every INT96 value of a Parquet input before the reader is built (with
/// [`scan_values`]) and refuses one whose microseconds since 1970 an `i64` cannot hold
/// ([`int96_micros`]): parquet's conversion wraps, and would turn it into another date
/// without a word. Only inputs with INT96 columns pay for this second decoding of them.
fn check_int96(
    path: &Path,
    file: &File,
    metadata: &ParquetMetaData,
    batch_rows: usize,
) -> Result<(), IngestError> {
    let schema = metadata.file_metadata().schema_descr();
    let columns: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| schema.column(i).physical_type() == PhysicalType::INT96)
        .collect();
    scan_values::<Int96Type>(
        path,
        file,
        metadata,
        &columns,
        batch_rows,
        |column, row_group, values| match values.iter().find(|v| int96_micros(v).is_none()) {
            None => Ok(()),
            Some(value) => Err(IngestError::Parquet {
                file: path.to_path_buf(),
                detail: format!(
                    "column `{}` of row group {row_group} holds an INT96 timestamp at julian \
                     day {}, which microseconds since 1970 cannot hold (they reach about \
                     292,000 years either side of it)",
                    schema.column(column).path().string(),
                    value.data()[2] as i32,
                ),
            }),
        },
    )
}

/// Decodes every interval of a Parquet input before the reader is built (with
/// [`scan_values`]) and refuses one the reader would not read whole.
///
/// A Parquet INTERVAL (a `FIXED_LEN_BYTE_ARRAY(12)` of the INTERVAL converted type) holds
/// months, days and milliseconds, three little-endian 32-bit integers. parquet 59.3 reads it
/// as Arrow's `Interval(DayTime)` when the file has no `ARROW:schema` (DuckDB writes none;
/// `schema/primitive.rs`), keeping the days and milliseconds and dropping the months without
/// a word (`array_reader/fixed_len_byte_array.rs`): DuckDB's `1 month 2 days 3 seconds`
/// would be signed and served as 2 days and 3,000 ms. An `ARROW:schema` may ask for
/// `Interval(YearMonth)` instead, which keeps the months and drops the rest. The type that
/// holds all three, `Interval(MonthDayNano)`, the reader accepts as a hint but refuses to
/// decode ("MonthDayNano intervals not supported"), so a value with a part its column's type
/// drops is refused, naming the column, and the owner re-exports it another way. Intervals
/// whose dropped part is zero (DuckDB's `36 hours`, arrow-rs's own intervals) are read
/// unchanged. Only inputs with interval columns pay for this second decoding of them.
fn check_intervals(
    path: &Path,
    file: &File,
    metadata: &ParquetMetaData,
    arrow: &Schema,
    batch_rows: usize,
) -> Result<(), IngestError> {
    let schema = metadata.file_metadata().schema_descr();
    let mut leaves = Vec::with_capacity(schema.num_columns());
    for field in arrow.fields() {
        leaf_types(field.data_type(), &mut leaves);
    }
    // The leaf columns the reader decodes as intervals, with the unit it decodes them to.
    let mut units = Vec::new();
    for (index, (column, mut leaf)) in schema.columns().iter().zip(leaves).enumerate() {
        while let DataType::Dictionary(_, value) = leaf {
            leaf = value;
        }
        if let DataType::Interval(unit @ (IntervalUnit::DayTime | IntervalUnit::YearMonth)) = leaf
            && column.physical_type() == PhysicalType::FIXED_LEN_BYTE_ARRAY
            && column.type_length() == 12
        {
            units.push((index, *unit));
        }
    }
    let columns: Vec<usize> = units.iter().map(|&(index, _)| index).collect();
    scan_values::<FixedLenByteArrayType>(
        path,
        file,
        metadata,
        &columns,
        batch_rows,
        |column, row_group, values| {
            let year_month = units.contains(&(column, IntervalUnit::YearMonth));
            // Months, days and milliseconds (the reader reads them as signed).
            let parts = |value: &FixedLenByteArray| {
                let part = |at: usize| {
                    value
                        .data()
                        .get(at..at + 4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, i32::from_le_bytes)
                };
                (part(0), part(4), part(8))
            };
            let Some((months, days, millis)) = values.iter().map(parts).find(|&(m, d, ms)| {
                if year_month {
                    d != 0 || ms != 0
                } else {
                    m != 0
                }
            }) else {
                return Ok(());
            };
            let (read_as, dropped) = if year_month {
                (
                    "months (`Interval(YearMonth)`, as the file's Arrow schema asks)",
                    "days and milliseconds",
                )
            } else {
                ("days and milliseconds (`Interval(DayTime)`)", "months")
            };
            let count = |n: i32, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
            Err(IngestError::ParquetBounds {
                file: path.to_path_buf(),
                problem: format!(
                    "column `{}` of row group {row_group} holds the INTERVAL {}, {} and {}, \
                     and Parquet intervals are read as {read_as}, which would drop its \
                     {dropped} (the Parquet reader cannot read all three): re-export the \
                     interval as separate integer columns (months, days, milliseconds) or as \
                     a string",
                    schema.column(column).path().string(),
                    count(months, "month"),
                    count(days, "day"),
                    count(millis, "millisecond"),
                ),
            })
        },
    )
}

/// The leaf types of `data_type`, in the order of the Parquet leaf columns they are read
/// from (the order [`with_int96_micros`] walks them in), appended to `leaves`.
fn leaf_types<'a>(data_type: &'a DataType, leaves: &mut Vec<&'a DataType>) {
    match data_type {
        DataType::Struct(children) => {
            for child in children {
                leaf_types(child.data_type(), leaves);
            }
        }
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::FixedSizeList(item, _)
        | DataType::Map(item, _) => leaf_types(item.data_type(), leaves),
        leaf => leaves.push(leaf),
    }
}

/// Decodes every value of the leaf columns `columns` of a Parquet input before the reader is
/// built (those column chunks only, [`batch_rows`](crate::parquet_footer::batch_rows)
/// records at a time, as the reader would) and hands each run of values to `check`, with the
/// index of their column and of their row group; the first error `check` returns is returned.
fn scan_values<T: parquet::data_type::DataType>(
    path: &Path,
    file: &File,
    metadata: &ParquetMetaData,
    columns: &[usize],
    batch_rows: usize,
    mut check: impl FnMut(usize, usize, &[T::T]) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let refused = |detail: String| IngestError::Parquet {
        file: path.to_path_buf(),
        detail,
    };
    if columns.is_empty() {
        return Ok(());
    }
    let schema = metadata.file_metadata().schema_descr();
    let chunks = Arc::new(file.try_clone().map_err(|e| io_error(path, "read", e))?);
    let (mut values, mut definitions, mut repetitions) = (Vec::new(), Vec::new(), Vec::new());
    for (index, group) in metadata.row_groups().iter().enumerate() {
        let rows = usize::try_from(group.num_rows()).map_err(|_| {
            refused(format!(
                "row group {index} declares {} rows",
                group.num_rows()
            ))
        })?;
        for &column in columns {
            let pages = SerializedPageReader::new(chunks.clone(), group.column(column), rows, None)
                .map_err(|e| refused(e.to_string()))?;
            let mut reader = ColumnReaderImpl::<T>::new(schema.column(column), Box::new(pages));
            loop {
                values.clear();
                definitions.clear();
                repetitions.clear();
                let (records, _, levels) = reader
                    .read_records(
                        batch_rows,
                        Some(&mut definitions),
                        Some(&mut repetitions),
                        &mut values,
                    )
                    .map_err(|e| refused(e.to_string()))?;
                check(column, index, &values)?;
                if records == 0 && levels == 0 {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// The microseconds since 1970 of an INT96 timestamp, as parquet's `Int96::to_micros` makes
/// them (sub-microsecond digits dropped), or `None` where its wrapping arithmetic would
/// overflow.
fn int96_micros(value: &Int96) -> Option<i64> {
    const JULIAN_DAY_OF_EPOCH: i64 = 2_440_588;
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    let data = value.data();
    let nanos = (u64::from(data[1]) << 32 | u64::from(data[0])) as i64;
    (i64::from(data[2] as i32) - JULIAN_DAY_OF_EPOCH)
        .checked_mul(MICROS_PER_DAY)?
        .checked_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;

    use arrow::array::{
        Array, ArrayRef, DictionaryArray, Int32Array, IntervalDayTimeArray, IntervalYearMonthArray,
        ListArray, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Fields, Int32Type};
    use arrow::ipc::writer::{FileWriter, StreamWriter};
    use parquet::arrow::{ArrowWriter, encode_arrow_schema};
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use tempfile::TempDir;

    use crate::ingest::ingest_file;
    use crate::ingest::test_support::{
        arrow_refusal, bounds_refusal, column, ingest_ok, nested_list, refused, sample_batch,
        write_input,
    };

    fn assert_same_data(expected: &RecordBatch, actual: &RecordBatch) {
        assert_eq!(expected.num_rows(), actual.num_rows());
        for (want, got) in expected.columns().iter().zip(actual.columns()) {
            assert_eq!(want.to_data(), got.to_data());
        }
    }

    /// Writes `batch` to `path` as Parquet with `properties`.
    fn write_parquet(path: &Path, batch: &RecordBatch, properties: WriterProperties) {
        let mut writer = ArrowWriter::try_new(
            File::create(path).unwrap(),
            batch.schema(),
            Some(properties),
        )
        .unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn parquet_field_ids_on_nested_fields_do_not_stop_a_publish() {
        use std::collections::HashMap;

        use arrow::array::{Int64Array, ListArray, StructArray};
        use arrow::datatypes::Int64Type;

        let id = |n: i32| {
            HashMap::from([(
                parquet::arrow::PARQUET_FIELD_ID_META_KEY.to_owned(),
                n.to_string(),
            )])
        };
        let dir = tempfile::tempdir().unwrap();
        // As Iceberg and Spark write them: an id on every field, nested ones included.
        let amount = Field::new("amount", DataType::Int64, true).with_metadata(id(3));
        let item = Field::new("element", DataType::Int64, true).with_metadata(id(5));
        let lists =
            ListArray::from_iter_primitive::<Int64Type, _, _>([Some(vec![Some(1), None]), None]);
        let lists = ListArray::new(
            Arc::new(item.clone()),
            lists.offsets().clone(),
            lists.values().clone(),
            lists.nulls().cloned(),
        );
        let order = StructArray::from(vec![(
            Arc::new(amount.clone()),
            Arc::new(Int64Array::from(vec![Some(7), None])) as ArrayRef,
        )]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("order", order.data_type().clone(), true).with_metadata(id(1)),
            Field::new("codes", lists.data_type().clone(), true).with_metadata(id(4)),
        ]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(order), Arc::new(lists)]).unwrap();
        let input = dir.path().join("ids.parquet");
        write_parquet(&input, &batch, WriterProperties::builder().build());

        let (outcome, read, _) = ingest_ok(&dir, &input);
        // The values are the file's; the columns keep their ids, their nested fields lose them.
        for (column, n) in [("order", 1), ("codes", 4)] {
            let field = outcome.schema.field_with_name(column).unwrap();
            assert_eq!(field.metadata(), &id(n), "{column}");
        }
        let nested = |data_type: &DataType| match data_type {
            DataType::Struct(fields) => fields[0].metadata().clone(),
            DataType::List(item) => item.metadata().clone(),
            other => panic!("unexpected {other}"),
        };
        for field in outcome.schema.fields() {
            assert!(nested(field.data_type()).is_empty(), "{field}");
        }
        assert_eq!(
            read.column(0).to_data().child_data(),
            batch.column(0).to_data().child_data()
        );
        assert_eq!(
            read.column(1)
                .as_any()
                .downcast_ref::<ListArray>()
                .unwrap()
                .values(),
            batch
                .column(1)
                .as_any()
                .downcast_ref::<ListArray>()
                .unwrap()
                .values()
        );
    }

    #[test]
    fn parquet_round_trips_with_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let batch = sample_batch();
        let input = dir.path().join("sample.PQ");
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        write_parquet(&input, &batch, properties);

        assert_eq!(InputFormat::detect(&input).unwrap(), InputFormat::Parquet);
        let (outcome, read, _) = ingest_ok(&dir, &input);
        assert_eq!(outcome.schema.fields(), batch.schema().fields());
        assert_eq!(outcome.schema.metadata().get("origin").unwrap(), "test");
        let row_groups = ParquetRecordBatchReaderBuilder::try_new(File::open(&input).unwrap())
            .unwrap()
            .metadata()
            .num_row_groups();
        assert_eq!(row_groups, 2);
        assert_same_data(&batch, &read);
    }

    #[test]
    fn parquet_with_dictionaries_per_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "category",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )]));
        let input = dir.path().join("dict.parquet");
        // Two row groups with disjoint values, each bigger than a batch, so the reader's
        // batches carry different dictionaries.
        const GROUP: usize = BATCH_ROWS + 1000;
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(GROUP))
            .build();
        let mut writer = ArrowWriter::try_new(
            File::create(&input).unwrap(),
            schema.clone(),
            Some(properties),
        )
        .unwrap();
        for group in ["a", "b"] {
            let values: Vec<String> = (0..GROUP).map(|i| format!("{group}{}", i % 7)).collect();
            let array: DictionaryArray<Int32Type> = values.iter().map(String::as_str).collect();
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(array)]).unwrap();
            writer.write(&batch).unwrap();
        }
        writer.close().unwrap();

        let (outcome, read, _) = ingest_ok(&dir, &input);
        assert_eq!(outcome.rows, 2 * GROUP as u64);
        assert_eq!(outcome.schema.field(0).data_type(), &DataType::Utf8);
        let values = column::<StringArray>(&read, "category");
        assert_eq!(values.value(0), "a0");
        assert_eq!(values.value(GROUP + 8), "b1");
    }

    #[test]
    fn parquet_with_zero_rows_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let schema = sample_batch().schema();
        let input = dir.path().join("none.parquet");
        let writer = ArrowWriter::try_new(File::create(&input).unwrap(), schema, None).unwrap();
        writer.close().unwrap();
        let (outcome, _, _) = ingest_ok(&dir, &input);
        assert_eq!((outcome.rows, outcome.batches), (0, 0));
        assert_eq!(outcome.schema.fields().len(), 3);
    }

    #[test]
    fn corrupt_parquet_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = refused(&dir, "broken.parquet", b"not parquet at all");
        assert!(matches!(error, IngestError::Parquet { .. }), "{error:?}");
        assert!(error.to_string().contains("broken.parquet"), "{error}");
    }

    #[test]
    fn a_column_marked_as_an_extension_type_it_cannot_be_stored_as_is_refused() {
        use std::collections::HashMap;

        use arrow::array::{FixedSizeBinaryArray, StringArray};

        let dir = tempfile::tempdir().unwrap();
        let marked = |name: &str, data_type: DataType, extension: &str| {
            Field::new(name, data_type, true).with_metadata(HashMap::from([(
                "ARROW:extension:name".to_owned(),
                extension.to_owned(),
            )]))
        };
        let write = |name: &str, field: Field, column: ArrayRef| {
            let schema = Arc::new(Schema::new(vec![field]));
            let batch = RecordBatch::try_new(schema.clone(), vec![column]).unwrap();
            let input = dir.path().join(name);
            let mut writer = FileWriter::try_new(File::create(&input).unwrap(), &schema).unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
            input
        };
        let uuids: ArrayRef = Arc::new(
            FixedSizeBinaryArray::try_from_iter([[7u8; 16], [9u8; 16]].into_iter()).unwrap(),
        );
        let texts: ArrayRef = Arc::new(StringArray::from(vec!["a", "{}"]));
        // Stored as the extension type is stored: published with its marker.
        for (name, field, column) in [
            (
                "uuid.arrow",
                marked("u", DataType::FixedSizeBinary(16), "arrow.uuid"),
                uuids.clone(),
            ),
            (
                "json.arrow",
                marked("j", DataType::Utf8, "arrow.json"),
                texts.clone(),
            ),
            (
                "other.arrow",
                marked("x", DataType::Utf8, "example.unknown"),
                texts.clone(),
            ),
        ] {
            let input = write(name, field.clone(), column);
            let (outcome, _, _) = ingest_ok(&dir, &input);
            assert_eq!(outcome.schema.field(0), &field, "{name}");
        }
        // Marked as a type it cannot be: refused, naming the column and what it needs.
        for (name, field, column, needs) in [
            (
                "bad-uuid.arrow",
                marked("u", DataType::Utf8, "arrow.uuid"),
                texts.clone(),
                "FixedSizeBinary(16)",
            ),
            (
                "bad-json.arrow",
                marked("j", DataType::FixedSizeBinary(16), "arrow.json"),
                uuids.clone(),
                "text",
            ),
        ] {
            let input = write(name, field, column);
            let error = ingest_file(&input, &dir.path().join("out.arrow.partial")).unwrap_err();
            assert!(
                matches!(error, IngestError::ExtensionStorage { .. }),
                "{name}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(needs), "{message}");
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn arrow_file_and_stream_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let batch = sample_batch();
        let halves = [batch.slice(0, 2), batch.slice(2, 2)];

        let file_input = dir.path().join("sample.feather");
        let mut writer =
            FileWriter::try_new(File::create(&file_input).unwrap(), &batch.schema()).unwrap();
        for half in &halves {
            writer.write(half).unwrap();
        }
        writer.finish().unwrap();

        let mut stream_bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut stream_bytes, &batch.schema()).unwrap();
        for half in &halves {
            writer.write(half).unwrap();
        }
        writer.finish().unwrap();
        let stream_input = write_input(&dir, "sample.arrows", &stream_bytes);
        // A stream under the `.arrow` name is recognised by the missing file magic.
        let sniffed_input = write_input(&dir, "stream.arrow", &stream_bytes);

        let cases = [
            (file_input, InputFormat::ArrowFile),
            (stream_input, InputFormat::ArrowStream),
            (sniffed_input, InputFormat::ArrowStream),
        ];
        for (input, format) in cases {
            assert_eq!(InputFormat::detect(&input).unwrap(), format);
            let (outcome, read, _) = ingest_ok(&dir, &input);
            assert_eq!(outcome.schema, batch.schema(), "{format}");
            assert_eq!(outcome.batches, 2, "{format}");
            assert_same_data(&batch, &read);
        }
    }

    #[test]
    fn truncated_arrow_stream_is_an_arrow_error() {
        let dir = tempfile::tempdir().unwrap();
        let batch = sample_batch();
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        bytes.truncate(bytes.len() - 40);
        let error = refused(&dir, "cut.arrows", &bytes);
        // The walk before the reader finds the last body cut short.
        assert!(
            matches!(&error, IngestError::ArrowBounds { problem, .. } if problem.contains("bytes follow")),
            "{error:?}"
        );
    }

    /// Runs `f` on a thread with `stack` bytes of stack.
    fn on_stack<T: Send + 'static>(stack: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn deeply_nested_parquet_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("deep.parquet");
        let path = input.clone();
        // Writing such a file takes deep recursion in the writer: give it a large stack.
        on_stack(256 << 20, move || {
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("deep", nested_list(3000), true),
            ]));
            let mut writer =
                ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
            writer.flush().unwrap();
            writer.close().unwrap();
        });
        let output = dir.path().join("out.arrow.partial");
        let out = output.clone();
        // The stack of a tokio blocking thread, where `publish` ingests.
        let error = on_stack(2 << 20, move || {
            let result = ingest_file(&input, &out).map(|_| ());
            // Dropping the error is cheap; the deep schema was dropped inside the thread.
            result
        })
        .unwrap_err();
        match &error {
            IngestError::OverLimit {
                problem: BoundsError::TooDeep { what, depth, max },
                ..
            } => {
                assert_eq!(what, "the Parquet schema");
                assert_eq!(
                    (*depth, *max),
                    (6001, crate::parquet_footer::MAX_PARQUET_DEPTH)
                );
            }
            other => panic!("expected OverLimit, got {other:?}"),
        }
        assert!(
            error.to_string().ends_with(
                "the Parquet schema is nested 6001 levels deep; the limit is 66; peers refuse \
                 such a schema: flatten the nested column types"
            ),
            "{error}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn deeply_nested_arrow_ipc_is_refused_without_overflowing() {
        let dir = tempfile::tempdir().unwrap();
        for (name, stream) in [("deep.arrow", false), ("deep.arrows", true)] {
            let input = dir.path().join(name);
            let path = input.clone();
            on_stack(256 << 20, move || {
                let schema = Schema::new(vec![Field::new("deep", nested_list(3000), true)]);
                let file = File::create(&path).unwrap();
                if stream {
                    StreamWriter::try_new(file, &schema)
                        .unwrap()
                        .finish()
                        .unwrap();
                } else {
                    FileWriter::try_new(file, &schema)
                        .unwrap()
                        .finish()
                        .unwrap();
                }
            });
            let output = dir.path().join("out.arrow.partial");
            let out = output.clone();
            // arrow-ipc verifies the flatbuffer schema with a depth limit (64 tables) before
            // it converts it, and so does the walk over the file's footer: the file is refused
            // as unreadable, on a blocking thread's stack.
            let error =
                on_stack(2 << 20, move || ingest_file(&input, &out).map(|_| ())).unwrap_err();
            assert!(
                matches!(
                    error,
                    IngestError::Arrow { .. }
                        | IngestError::ArrowBounds { .. }
                        | IngestError::OverLimit { .. }
                ),
                "{name}: {error:?}"
            );
            assert!(!output.exists());
        }
    }

    /// The schema message of an IPC stream for `schema`, without the end-of-stream marker.
    fn schema_message(schema: &Schema) -> Vec<u8> {
        let mut bytes = Vec::new();
        StreamWriter::try_new(&mut bytes, schema)
            .unwrap()
            .finish()
            .unwrap();
        bytes.truncate(bytes.len() - 8);
        bytes
    }

    /// A hand-made record batch message (prefix and metadata, no body) of `rows` rows with one
    /// field node of as many rows and no nulls, the `buffers` given as (offset, length), and a
    /// declared body of `body_len` bytes.
    fn batch_message(rows: i64, buffers: &[(i64, i64)], body_len: i64) -> Vec<u8> {
        crate::arrow_guard::tests::batch_message(rows, 0, buffers, body_len, false)
    }

    /// An `.arrows` input: a real schema message for one Int64 column, then a hand-made batch
    /// declaring a body of `declared` bytes, then 8 body bytes.
    fn stream_declaring_body(dir: &TempDir, declared: i64) -> (PathBuf, usize) {
        let schema = Schema::new(vec![Field::new("v", DataType::Int64, false)]);
        let mut bytes = schema_message(&schema);
        let batch_at = bytes.len();
        bytes.extend(batch_message(1, &[(0, 0), (0, 8)], declared));
        bytes.extend(7i64.to_le_bytes());
        (write_input(dir, "huge.arrows", &bytes), batch_at)
    }

    fn walk_stream(input: &Path) -> Result<u64, MessageError> {
        let mut file = File::open(input).unwrap();
        arrow_guard::check_stream(&mut file, 0, u64::MAX, &ARROW_INPUT_BOUNDS)
    }

    #[test]
    fn an_arrow_stream_declaring_a_body_past_its_end_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        // The walk itself: were it missing, the reader would ask for a terabyte here.
        let (input, batch_at) = stream_declaring_body(&dir, 1 << 40);
        match walk_stream(&input) {
            Err(MessageError::Malformed(what)) => assert_eq!(
                what,
                format!(
                    "the message at byte {batch_at} declares a body of {} bytes, but only 8 \
                     bytes follow",
                    1u64 << 40
                )
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Through `publish`, with a body so large the reader cannot even lay it out (without
        // the walk it panics rather than aborts, so this test cannot take the runner down).
        let (input, _) = stream_declaring_body(&dir, i64::MAX);
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        let message = bounds_refusal(&error, InputFormat::ArrowStream);
        assert!(message.contains("huge.arrows"), "{message}");
        assert!(
            message.contains("bytes, but only 8 bytes follow"),
            "{message}"
        );
        assert!(!output.exists());
        // A metadata length past the end is refused the same way (the reader would size a
        // buffer of 2 GiB from these 8 bytes).
        let input = write_input(
            &dir,
            "meta.arrows",
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        );
        assert!(matches!(
            walk_stream(&input),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            ingest_file(&input, &output),
            Err(IngestError::ArrowBounds { .. })
        ));
    }

    /// An IPC file of `batch`, written with `options`.
    fn ipc_file(batch: &RecordBatch, options: arrow::ipc::writer::IpcWriteOptions) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut writer =
            FileWriter::try_new_with_options(&mut bytes, &batch.schema(), options).unwrap();
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        bytes
    }

    /// `file` (an IPC file) with the body length of its first record batch block set to `body`.
    fn with_block_body(file: &[u8], body: i64) -> Vec<u8> {
        let n = file.len();
        let footer_len = i32::from_le_bytes(file[n - 10..n - 6].try_into().unwrap()) as usize;
        let footer_at = n - 10 - footer_len;
        let footer = arrow::ipc::root_as_footer(&file[footer_at..n - 10]).unwrap();
        let block = footer.recordBatches().unwrap().get(0);
        let mut head = block.offset().to_le_bytes().to_vec();
        head.extend(block.metaDataLength().to_le_bytes());
        let at = footer_at
            + file[footer_at..]
                .windows(head.len())
                .position(|w| w == head)
                .expect("the block in the footer");
        let mut out = file.to_vec();
        out[at + 16..at + 24].copy_from_slice(&body.to_le_bytes());
        out
    }

    #[test]
    fn an_arrow_file_whose_footer_declares_too_much_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let good = ipc_file(&sample_batch(), Default::default());
        let walk = |bytes: &[u8]| {
            let input = write_input(&dir, "lying.arrow", bytes);
            let mut file = File::open(&input).unwrap();
            arrow_guard::check_file(&mut file, &ARROW_INPUT_BOUNDS)
        };
        walk(&good).unwrap();
        // A block whose body runs a terabyte past the end of the file.
        let err = walk(&with_block_body(&good, 1 << 40)).unwrap_err();
        assert!(
            matches!(&err, MessageError::Malformed(what) if what.contains("declares a body of 1099511627776 bytes")),
            "{err}"
        );
        // A footer longer than the file (the reader would allocate 2 GiB for it).
        let mut long_footer = good.clone();
        let n = long_footer.len();
        long_footer[n - 10..n - 6].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(matches!(
            walk(&long_footer),
            Err(MessageError::Malformed(_))
        ));
        // Through `publish` (a body the reader cannot lay out: it would panic, not abort).
        let input = write_input(&dir, "lying.arrow", &with_block_body(&good, i64::MAX));
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        let message = bounds_refusal(&error, InputFormat::ArrowFile);
        assert!(message.contains("lying.arrow"), "{message}");
        assert!(!output.exists());
    }

    #[test]
    fn a_compressed_batch_declaring_too_much_is_refused_before_decompressing() {
        let dir = tempfile::tempdir().unwrap();
        let (batch, options) = crate::arrow_guard::tests::lz4_zeros();
        let stream = crate::arrow_guard::tests::lz4_zeros_stream();
        let output = dir.path().join("out.arrow.partial");
        // Compressed inputs are read, stream and file alike.
        let input = write_input(&dir, "lz4.arrows", &stream);
        assert_eq!(ingest_file(&input, &output).unwrap().rows, 10_000);
        let input = write_input(&dir, "lz4.arrow", &ipc_file(&batch, options));
        assert_eq!(ingest_file(&input, &output).unwrap().rows, 10_000);
        fs::remove_file(&output).unwrap();
        // The values buffer's prefix says 80,000 bytes once decompressed.
        let at = crate::arrow_guard::tests::declared_length_at(&stream);
        let bomb = |size: u64| {
            let mut bytes = stream.clone();
            bytes[at..at + 8].copy_from_slice(&size.to_le_bytes());
            write_input(&dir, "bomb.arrows", &bytes)
        };
        // A terabyte, checked on the walk (the reader would reserve it and abort).
        let err = walk_stream(&bomb(1 << 40)).unwrap_err();
        assert!(
            matches!(&err, MessageError::OverBound(what) if what.contains("1099511627776 bytes once decompressed")),
            "{err}"
        );
        // Just over the bound, through `publish` (without the walk the reader reserves it,
        // decompresses 80 kB and fails: no abort either way).
        let error = ingest_file(&bomb(MAX_DECOMPRESSED_BATCH + 1), &output).unwrap_err();
        assert!(
            matches!(&error, IngestError::ArrowBounds { problem, .. } if problem.contains("smaller record batches")),
            "{error:?}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn an_lz4_frame_that_decompresses_past_its_declared_length_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        // A batch of 1 row whose 4.5 MB LZ4 frame declares 8 bytes and decompresses to over
        // 1 GiB of zeros (blocks of 267 bytes that can yield 255 times as much, past the
        // bound and its sixteenth of slack): the reader would decode it all first.
        let most = MAX_DECOMPRESSED_BATCH + MAX_DECOMPRESSED_BATCH / 16;
        let blocks = (most / (267 * 255)) as usize + 1;
        let bytes = crate::arrow_guard::tests::lz4_frame_stream(1, 8, blocks);
        let input = write_input(&dir, "frame.arrows", &bytes);
        let output = dir.path().join("out.arrow.partial");
        let started = std::time::Instant::now();
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(&error, IngestError::ArrowBounds { problem, .. }
                if problem.contains("LZ4 frames of a batch can decompress to")
                    && problem.contains("(they declare 8)")),
            "{error:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(!output.exists());
    }

    #[test]
    fn a_batch_of_more_rows_than_a_batch_may_hold_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // 2^40 rows of a Null column: no buffer, so nothing else bounds them.
        let schema = Schema::new(vec![Field::new("n", DataType::Null, true)]);
        let mut bytes = schema_message(&schema);
        let rows = 1i64 << 40;
        bytes.extend(null_batch_message(rows));
        let input = write_input(&dir, "nulls.arrows", &bytes);
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(&error, IngestError::ArrowBounds { problem, .. }
            if problem.contains(&format!(
                "a batch declares {rows} rows, over the limit of {MAX_BATCH_ROWS}"
            ))),
            "{error:?}"
        );
        assert!(!output.exists());
        // At the limit it is read.
        let mut bytes = schema_message(&schema);
        bytes.extend(null_batch_message(MAX_BATCH_ROWS));
        let input = write_input(&dir, "nulls.arrows", &bytes);
        assert_eq!(
            ingest_file(&input, &output).unwrap().rows,
            MAX_BATCH_ROWS as u64
        );
    }

    /// A record batch message of `rows` rows of one Null column: a field node, no buffers,
    /// no body.
    fn null_batch_message(rows: i64) -> Vec<u8> {
        crate::arrow_guard::tests::batch_message(rows, rows, &[], 0, false)
    }

    #[test]
    fn a_batch_that_does_not_decompress_is_a_format_error_not_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        // A ZSTD batch whose values buffer declares 16 bytes: the decompressor refuses it
        // with an `io::Error`, which is not the disk's fault.
        let (batch, _) = crate::arrow_guard::tests::lz4_zeros();
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(arrow::ipc::CompressionType::ZSTD))
            .unwrap();
        let mut stream = crate::arrow_guard::tests::ipc_stream(&[batch], options);
        let at = crate::arrow_guard::tests::declared_length_at(&stream);
        stream[at..at + 8].copy_from_slice(&16i64.to_le_bytes());
        let error = refused(&dir, "zstd.arrows", &stream);
        let message = arrow_refusal(&error, InputFormat::ArrowStream);
        assert!(message.contains("valid Arrow IPC file"), "{message}");
        assert!(!message.contains("disk"), "{message}");
    }

    #[test]
    fn a_panic_in_the_arrow_reader_is_an_error_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        // A batch whose values buffer (offset 0, 1 MiB) runs past its 24-byte body: arrow-ipc
        // asserts when it slices it.
        let schema = Schema::new(vec![Field::new("v", DataType::Int64, false)]);
        let mut bytes = schema_message(&schema);
        bytes.extend(batch_message(3, &[(0, 0), (0, 1 << 20)], 24));
        bytes.extend([0u8; 24]);
        let error = refused(&dir, "lying.arrows", &bytes);
        let message = arrow_refusal(&error, InputFormat::ArrowStream);
        assert!(message.contains("lying.arrows"), "{message}");
        assert!(message.contains("malformed"), "{message}");
    }

    /// Standard base64 with padding.
    fn base64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn a_panic_reading_a_parquet_arrow_schema_hint_is_an_error() {
        use parquet::arrow::arrow_writer::ArrowWriterOptions;
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("hint.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        let properties = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "ARROW:schema".into(),
                base64(&crate::arrow_guard::tests::seven_bit_schema_message()),
            )]))
            .build();
        let options = ArrowWriterOptions::new()
            .with_skip_arrow_metadata(true)
            .with_properties(properties);
        let mut writer = ArrowWriter::try_new_with_options(
            File::create(&input).unwrap(),
            schema.clone(),
            options,
        )
        .unwrap();
        let column: ArrayRef = Arc::new(Int32Array::from(vec![1, 2]));
        writer
            .write(&RecordBatch::try_new(schema, vec![column]).unwrap())
            .unwrap();
        writer.close().unwrap();
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(matches!(&error, IngestError::Parquet { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("hint.parquet"), "{message}");
        assert!(message.contains("bit width of 7"), "{message}");
        assert!(!output.exists());
    }

    #[test]
    fn a_parquet_footer_the_reader_would_loop_over_is_refused_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        // Before the footer's last stop: an unknown field (100) of 1,000 lists of 2^31 - 1
        // bools each, which the reader would skip one bool at a time (about 3 s a list).
        let n = bytes.len();
        let meta_len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
        let footer_end = n - 9;
        let mut hostile = vec![0x09, 0xc8, 0x01, 0xf9, 0xe8, 0x07];
        for _ in 0..1000 {
            hostile.extend([0xf1, 0xff, 0xff, 0xff, 0xff, 0x07]);
        }
        let mut file = bytes[..footer_end].to_vec();
        file.extend(&hostile);
        file.push(0);
        file.extend(((meta_len + hostile.len()) as u32).to_le_bytes());
        file.extend(b"PAR1");
        let input = write_input(&dir, "loop.parquet", &file);
        let output = dir.path().join("out.arrow.partial");
        let started = std::time::Instant::now();
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(matches!(&error, IngestError::Parquet { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("lists declare more elements than bytes follow"),
            "{error}"
        );
        assert!(!output.exists());
        // The same file without the field is read.
        let input = write_input(&dir, "plain.parquet", &bytes);
        assert!(ingest_file(&input, &output).is_ok());
    }

    #[test]
    fn a_parquet_dictionary_of_more_values_than_its_page_holds_is_refused_before_reading() {
        use crate::parquet_footer::tests::{page_header, with_pages};
        let dir = tempfile::tempdir().unwrap();
        // A dictionary page declaring 2^26 INT64 values in 8 bytes: the reader would allocate
        // 512 MiB for it before decoding (2^30, which the soak found, is an 8 GiB abort).
        let pages = [
            (page_header(2, 8, 8, 1 << 26, &[]), vec![0; 8]),
            (page_header(0, 2, 2, 1, &[]), vec![0; 2]),
        ];
        let bytes = with_pages(1, &pages, parquet::basic::Compression::UNCOMPRESSED);
        let input = write_input(&dir, "dictionary.parquet", &bytes);
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(&error, IngestError::ParquetBounds { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        for part in [
            "dictionary.parquet",
            "row group 0, column `c0`",
            "the dictionary page at byte 4 declares 67108864 values",
        ] {
            assert!(message.contains(part), "{message}");
        }
        assert!(!output.exists());
        // The same file with a dictionary of one value is read.
        let pages = [
            (page_header(2, 8, 8, 1, &[]), 7i64.to_le_bytes().to_vec()),
            pages[1].clone(),
        ];
        let bytes = with_pages(1, &pages, parquet::basic::Compression::UNCOMPRESSED);
        let input = write_input(&dir, "dictionary.parquet", &bytes);
        let error = ingest_file(&input, &output).map(|o| o.rows);
        assert!(
            !matches!(error, Err(IngestError::ParquetBounds { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn delta_encoded_lengths_declaring_more_values_than_their_page_are_refused_before_reading() {
        use crate::parquet_footer::tests::delta_strings;
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.arrow.partial");
        // A page of 200 strings whose delta-encoded lengths declare 2^26 of them: the reader
        // allocates 256 MiB of lengths before decoding one (2^33, which the soak's seeds led
        // to, is a 32 GiB abort from a 359-byte file).
        for prefixed in [false, true] {
            let input = write_input(
                &dir,
                "delta.parquet",
                &delta_strings(200, 1 << 26, prefixed),
            );
            let error = ingest_file(&input, &output).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(&error, IngestError::ParquetBounds { .. })
                    && message.contains("delta.parquet")
                    && message.contains("declares 67108864 value lengths"),
                "{error:?}"
            );
            assert!(!output.exists());
            // The honest page is read.
            let input = write_input(&dir, "delta.parquet", &delta_strings(200, 200, prefixed));
            assert_eq!(ingest_file(&input, &output).unwrap().rows, 200);
            fs::remove_file(&output).unwrap();
        }
    }

    /// The julian day of 1970-01-01.
    const EPOCH_DAY: u32 = 2_440_588;

    /// An INT96 timestamp as Spark and Impala write it: the nanosecond of the day in the
    /// first eight bytes, the julian day in the last four.
    fn int96(julian_day: u32, nanos_of_day: u64) -> Int96 {
        let mut value = Int96::new();
        value.set_data(nanos_of_day as u32, (nanos_of_day >> 32) as u32, julian_day);
        value
    }

    /// 9999-12-31T00:00:00 (Spark's usual "end of time"), 1970-01-01T00:00:00.000001 and
    /// 2024-02-29T12:34:56.789012, with the microseconds since 1970 each stands for.
    fn spark_values() -> ([Int96; 3], [i64; 3]) {
        let half_past_noon = (12 * 3600 + 34 * 60 + 56) * 1_000_000_000 + 789_012_000;
        (
            [
                int96(EPOCH_DAY + 2_932_896, 0),
                int96(EPOCH_DAY, 1_000),
                int96(EPOCH_DAY + 19_782, half_past_noon),
            ],
            [253_402_214_400_000_000, 1, 1_709_210_096_789_012],
        )
    }

    /// A low-level writer of a Parquet file of `schema` at `path`, with the Arrow schema
    /// `hint` stored as arrow-rs stores it, or none (as Spark and DuckDB write files).
    fn parquet_writer(
        path: &Path,
        schema: parquet::schema::types::Type,
        hint: Option<&Schema>,
    ) -> SerializedFileWriter<File> {
        let metadata = hint.map(|hint| {
            vec![KeyValue::new(
                ARROW_SCHEMA_META_KEY.into(),
                encode_arrow_schema(hint),
            )]
        });
        let properties = WriterProperties::builder()
            .set_key_value_metadata(metadata)
            .build();
        SerializedFileWriter::new(
            File::create(path).unwrap(),
            Arc::new(schema),
            Arc::new(properties),
        )
        .unwrap()
    }

    /// Writes a Parquet file as Spark writes timestamps, with no `ARROW:schema` unless `hint`:
    /// `ts` (required INT96) holds `ts`, one per row; `tss` (a list of nullable INT96) holds
    /// `first_list` and a null element in its first row, and is null in the others.
    fn int96_parquet(path: &Path, ts: &[Int96], first_list: &[Int96], hint: Option<&Schema>) {
        let schema = parse_message_type(
            "message spark_schema {
                required int96 ts;
                optional group tss (LIST) { repeated group list { optional int96 element; } }
            }",
        )
        .unwrap();
        let mut writer = parquet_writer(path, schema, hint);
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<Int96Type>()
            .write_batch(ts, None, None)
            .unwrap();
        column.close().unwrap();
        // Row 0: the values then a null element (definition 2); rows 1..: a null list.
        let mut definitions = vec![3; first_list.len()];
        definitions.push(2);
        definitions.extend(vec![0; ts.len() - 1]);
        let mut repetitions = vec![1; first_list.len() + 1];
        repetitions[0] = 0;
        repetitions.extend(vec![0; ts.len() - 1]);
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<Int96Type>()
            .write_batch(first_list, Some(&definitions), Some(&repetitions))
            .unwrap();
        column.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }

    /// The microseconds of a timestamp column, `None` for nulls.
    fn micros(array: &dyn Array) -> Vec<Option<i64>> {
        let array = array
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap_or_else(|| panic!("not microseconds: {}", array.data_type()));
        array.iter().collect()
    }

    fn check_read(zone: Option<&str>, hint: Option<&Schema>) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("spark.parquet");
        let (values, expected) = spark_values();
        int96_parquet(&input, &values, &values, hint);
        let (outcome, read, _) = ingest_ok(&dir, &input);
        let micros_type = DataType::Timestamp(TimeUnit::Microsecond, zone.map(Into::into));
        assert_eq!(outcome.schema.field(0).data_type(), &micros_type);
        assert_eq!(
            outcome.schema.field(1).data_type(),
            &DataType::List(Arc::new(Field::new("element", micros_type, true)))
        );
        let want: Vec<Option<i64>> = expected.iter().copied().map(Some).collect();
        assert_eq!(micros(read.column(0)), want);
        let lists = column::<ListArray>(&read, "tss");
        let mut first = want.clone();
        first.push(None);
        assert_eq!(micros(lists.value(0).as_ref()), first);
        assert_eq!(lists.null_count(), 2);
    }

    #[test]
    fn int96_timestamps_are_read_as_microseconds_without_wrapping() {
        check_read(None, None);
    }

    #[test]
    fn int96_timestamps_keep_the_time_zone_of_the_arrow_schema() {
        // pyarrow records the Arrow type it wrote from, here nanoseconds in UTC, or a
        // dictionary of them: the time zone is kept, the unit and the dictionary are not.
        let nanos = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(nanos.clone()));
        for hinted in [nanos, dictionary] {
            let hint = Schema::new(vec![
                Field::new("ts", hinted.clone(), false),
                Field::new(
                    "tss",
                    DataType::List(Arc::new(Field::new("element", hinted, true))),
                    true,
                ),
            ]);
            check_read(Some("UTC"), Some(&hint));
        }
    }

    #[test]
    fn an_int96_timestamp_microseconds_cannot_hold_is_refused_naming_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let (values, _) = spark_values();
        let output = dir.path().join("out.arrow.partial");
        // Julian days whose microseconds since 1970 overflow an i64 either way (days read as
        // a signed 32-bit number), in the list and at the top level.
        for (ts, list, column, day) in [
            (
                int96(EPOCH_DAY, 0),
                int96(i32::MAX as u32, 0),
                "tss.list.element",
                "2147483647",
            ),
            (int96(1 << 31, 0), int96(EPOCH_DAY, 0), "ts", "-2147483648"),
        ] {
            let input = dir.path().join("absurd.parquet");
            int96_parquet(&input, &[values[0], ts], &[values[1], list], None);
            let error = ingest_file(&input, &output).unwrap_err();
            assert!(matches!(&error, IngestError::Parquet { .. }), "{error:?}");
            let message = error.to_string();
            for part in [
                "absurd.parquet",
                &format!("column `{column}`"),
                &format!("julian day {day}"),
                "microsecond",
            ] {
                assert!(message.contains(part), "{part}: {message}");
            }
            assert!(!output.exists());
        }
        // Days just inside the range are read.
        let last_day = EPOCH_DAY as i64 + i64::MAX / 86_400_000_000 - 1;
        let input = dir.path().join("edge.parquet");
        int96_parquet(&input, &[int96(last_day as u32, 0)], &[], None);
        let read = ingest_file(&input, &output).map(|o| o.rows);
        assert_eq!(read.unwrap(), 1);
    }

    #[test]
    fn int96_microseconds_are_the_parquet_crates_where_they_fit() {
        let days = [
            0,
            1,
            EPOCH_DAY - 1,
            EPOCH_DAY,
            5_373_484,
            1 << 30,
            (1 << 31) - 1,
        ];
        let days = days.iter().copied().chain(days.map(|d| d.wrapping_neg()));
        let nanos = [0u64, 999, 1_000, 86_399_999_999_999, u64::MAX, 1 << 63];
        for day in days {
            for nanos in nanos {
                let value = int96(day, nanos);
                match int96_micros(&value) {
                    Some(micros) => assert_eq!(micros, value.to_micros(), "{day} {nanos}"),
                    None => {
                        let exact = (i128::from(day as i32) - i128::from(EPOCH_DAY))
                            * 86_400_000_000
                            + i128::from(nanos as i64 / 1_000);
                        assert!(i64::try_from(exact).is_err(), "{day} {nanos}")
                    }
                }
            }
        }
    }

    /// A Parquet INTERVAL as DuckDB writes it: months, days and milliseconds, each a
    /// little-endian unsigned 32-bit integer.
    fn interval(months: u32, days: u32, millis: u32) -> FixedLenByteArray {
        let bytes: Vec<u8> = [months, days, millis]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        bytes.into()
    }

    /// Writes a Parquet file of intervals as DuckDB writes them, with no `ARROW:schema`
    /// unless `hint`: `i` (optional INTERVAL) holds `top`, one per row, then a null; `is` (a
    /// list of them) holds `first_list` in its first row and is empty in the others.
    fn interval_parquet(
        path: &Path,
        top: &[FixedLenByteArray],
        first_list: &[FixedLenByteArray],
        hint: Option<&Schema>,
    ) {
        let schema = parse_message_type(
            "message duckdb_schema {
                optional fixed_len_byte_array(12) i (INTERVAL);
                optional group is (LIST) {
                    repeated group list { optional fixed_len_byte_array(12) element (INTERVAL); }
                }
            }",
        )
        .unwrap();
        let mut writer = parquet_writer(path, schema, hint);
        let rows = top.len() + 1;
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        let mut definitions = vec![1; top.len()];
        definitions.push(0);
        column
            .typed::<FixedLenByteArrayType>()
            .write_batch(top, Some(&definitions), None)
            .unwrap();
        column.close().unwrap();
        // Row 0: the values; rows 1..: an empty list (definition 1).
        let mut definitions = vec![3; first_list.len()];
        let mut repetitions = vec![1; first_list.len()];
        repetitions[0] = 0;
        definitions.extend(vec![1; rows - 1]);
        repetitions.extend(vec![0; rows - 1]);
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<FixedLenByteArrayType>()
            .write_batch(first_list, Some(&definitions), Some(&repetitions))
            .unwrap();
        column.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }

    /// The `(days, milliseconds)` of an `Interval(DayTime)` column, `None` for nulls.
    fn days_and_millis(array: &dyn Array) -> Vec<Option<(i32, i32)>> {
        let array = array
            .as_any()
            .downcast_ref::<IntervalDayTimeArray>()
            .unwrap_or_else(|| panic!("not days and milliseconds: {}", array.data_type()));
        array
            .iter()
            .map(|v| v.map(|v| (v.days, v.milliseconds)))
            .collect()
    }

    #[test]
    fn parquet_intervals_without_months_are_read_as_days_and_milliseconds() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("duckdb.parquet");
        // DuckDB's `2 days 3 seconds` and `36 hours` (it writes hours as milliseconds).
        let top = [interval(0, 2, 3_000), interval(0, 0, 129_600_000)];
        interval_parquet(&input, &top, &[interval(0, 1, 1)], None);
        let (outcome, read, _) = ingest_ok(&dir, &input);
        let day_time = DataType::Interval(IntervalUnit::DayTime);
        assert_eq!(outcome.schema.field(0).data_type(), &day_time);
        assert_eq!(
            days_and_millis(read.column(0)),
            [Some((2, 3_000)), Some((0, 129_600_000)), None]
        );
        let lists = column::<ListArray>(&read, "is");
        assert_eq!(days_and_millis(lists.value(0).as_ref()), [Some((1, 1))]);
        assert_eq!(lists.value(1).len(), 0);
    }

    #[test]
    fn a_parquet_interval_with_months_is_refused_naming_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.arrow.partial");
        let plain = interval(0, 2, 3_000);
        // DuckDB's `1 month 2 days 3 seconds` at the top level, `14 months` in the list: the
        // reader would keep `2 days 3000 ms` and `0 days 0 ms`.
        for (top, list, column, months) in [
            (interval(1, 2, 3_000), plain.clone(), "i", "1 month"),
            (
                plain.clone(),
                interval(14, 0, 0),
                "is.list.element",
                "14 months",
            ),
        ] {
            let input = dir.path().join("months.parquet");
            interval_parquet(&input, &[plain.clone(), top], &[plain.clone(), list], None);
            let error = ingest_file(&input, &output).unwrap_err();
            assert!(
                matches!(&error, IngestError::ParquetBounds { .. }),
                "{error:?}"
            );
            let message = error.to_string();
            for part in [
                "months.parquet",
                &format!("column `{column}` of row group 0"),
                months,
                "would drop its months",
                "re-export the interval as separate integer columns",
                "or as a string",
            ] {
                assert!(message.contains(part), "{part}: {message}");
            }
            assert!(!output.exists());
        }
    }

    #[test]
    fn a_parquet_interval_an_arrow_schema_reads_as_months_is_refused_if_it_has_days() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.arrow.partial");
        // An `ARROW:schema` (arrow-rs writes one) can ask for years and months, which the
        // reader takes from the first four bytes alone.
        let year_month = DataType::Interval(IntervalUnit::YearMonth);
        let hint = Schema::new(vec![
            Field::new("i", year_month.clone(), true),
            Field::new(
                "is",
                DataType::List(Arc::new(Field::new("element", year_month.clone(), true))),
                true,
            ),
        ]);
        let input = dir.path().join("months.parquet");
        interval_parquet(
            &input,
            &[interval(14, 0, 0)],
            &[interval(1, 0, 0)],
            Some(&hint),
        );
        let (outcome, read, _) = ingest_ok(&dir, &input);
        assert_eq!(outcome.schema.field(0).data_type(), &year_month);
        let months = read
            .column(0)
            .as_any()
            .downcast_ref::<IntervalYearMonthArray>()
            .unwrap();
        assert_eq!(months.iter().collect::<Vec<_>>(), [Some(14), None]);
        fs::remove_file(&output).unwrap();
        for (top, list, column) in [
            (interval(1, 2, 0), interval(1, 0, 0), "i"),
            (interval(1, 0, 0), interval(1, 0, 3), "is.list.element"),
        ] {
            interval_parquet(&input, &[top], &[list], Some(&hint));
            let error = ingest_file(&input, &output).unwrap_err();
            assert!(
                matches!(&error, IngestError::ParquetBounds { .. }),
                "{error:?}"
            );
            let message = error.to_string();
            for part in [
                &format!("column `{column}` of row group 0"),
                "would drop its days and milliseconds",
                "re-export the interval",
            ] {
                assert!(message.contains(part), "{part}: {message}");
            }
            assert!(!output.exists());
        }
    }

    #[test]
    fn the_parquet_reader_cannot_read_intervals_as_months_days_and_nanoseconds() {
        // Why [`check_intervals`] refuses rather than asking for `Interval(MonthDayNano)`,
        // which holds all three parts: the reader takes the hint, then cannot decode it. When
        // this fails, parquet can, and `reader_schema` should ask for it instead.
        let dir = tempfile::tempdir().unwrap();
        let nanos = DataType::Interval(IntervalUnit::MonthDayNano);
        let hint = Schema::new(vec![
            Field::new("i", nanos.clone(), true),
            Field::new(
                "is",
                DataType::List(Arc::new(Field::new("element", nanos, true))),
                true,
            ),
        ]);
        let input = dir.path().join("nanos.parquet");
        interval_parquet(
            &input,
            &[interval(1, 2, 3)],
            &[interval(0, 0, 1)],
            Some(&hint),
        );
        let error = ingest_file(&input, &dir.path().join("out.arrow.partial")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("MonthDayNano intervals not supported"),
            "{error}"
        );
    }

    #[test]
    fn a_brotli_parquet_file_is_published_whole() {
        use parquet::basic::{BrotliLevel, Compression};
        use parquet::file::properties::WriterVersion;
        let dir = tempfile::tempdir().unwrap();
        let batch = sample_batch();
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
            Some(vec![Some(4)]),
        ]);
        let mut fields = batch.schema().fields().to_vec();
        fields.push(Arc::new(Field::new("list", list.data_type().clone(), true)));
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            batch.schema().metadata().clone(),
        ));
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(list));
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        let input = dir.path().join("brotli.parquet");
        for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
            let properties = WriterProperties::builder()
                .set_compression(Compression::BROTLI(BrotliLevel::default()))
                .set_writer_version(version)
                .set_max_row_group_row_count(Some(2))
                .build();
            write_parquet(&input, &batch, properties);
            let (outcome, read, output) = ingest_ok(&dir, &input);
            assert_eq!(outcome.schema.fields(), batch.schema().fields());
            assert_eq!(outcome.schema.metadata().get("origin").unwrap(), "test");
            assert_same_data(&batch, &read);
            fs::remove_file(output).unwrap();
        }
    }

    #[test]
    fn a_brotli_page_holding_gigabytes_is_refused_before_reading_naming_its_column() {
        use crate::parquet_footer::tests::{brotli_zeros, page_header, with_pages};
        use parquet::basic::{BrotliLevel, Compression};
        let dir = tempfile::tempdir().unwrap();
        // 53 kB of Brotli holding 64 GiB of zeros in a page declaring 8 bytes: parquet's
        // codec would write all of it into one vector before it compares the sizes.
        let bomb = brotli_zeros(4096);
        let pages = [(page_header(0, 8, bomb.len() as i64, 1, &[]), bomb)];
        let bytes = with_pages(1, &pages, Compression::BROTLI(BrotliLevel::default()));
        let input = write_input(&dir, "bomb.parquet", &bytes);
        let output = dir.path().join("out.arrow.partial");
        let started = std::time::Instant::now();
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            matches!(&error, IngestError::ParquetBounds { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        for part in [
            "bomb.parquet",
            "row group 0, column `c0`",
            "the BROTLI page at byte 4 decodes to more than the 8 bytes its header declares",
            "check that it is a complete, valid Parquet file",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert!(!output.exists());
    }

    /// `data` as the same values of the type `to`, whose layout is that of `data`'s type at
    /// every depth (here: timestamps given a time zone).
    fn retyped(data: &arrow::array::ArrayData, to: &DataType) -> arrow::array::ArrayData {
        let children: Vec<DataType> = match to {
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => vec![f.data_type().clone()],
            DataType::Struct(fields) => fields.iter().map(|f| f.data_type().clone()).collect(),
            DataType::Dictionary(_, value) => vec![value.as_ref().clone()],
            _ => Vec::new(),
        };
        let child_data = data
            .child_data()
            .iter()
            .zip(children)
            .map(|(child, to)| retyped(child, &to))
            .collect();
        data.clone()
            .into_builder()
            .data_type(to.clone())
            .child_data(child_data)
            .build()
            .unwrap()
    }

    /// The columns of pyarrow's zoned timestamps, in `unit`, at every depth the reader pairs
    /// with the `ARROW:schema`: the time zones are `zone`, `Europe/Paris` and `+01:00`.
    fn zoned_schema(unit: TimeUnit, zone: &str) -> Schema {
        let ts = |zone: Option<&str>| DataType::Timestamp(unit, zone.map(Into::into));
        let item = |data_type| Arc::new(Field::new("element", data_type, true));
        let entries = Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", ts(Some(zone)), true),
        ]);
        Schema::new(vec![
            Field::new("top", ts(Some(zone)), true),
            Field::new("naive", ts(None), true),
            Field::new(
                "list_struct",
                DataType::List(item(DataType::Struct(
                    vec![Field::new("ts", ts(Some("Europe/Paris")), true)].into(),
                ))),
                true,
            ),
            Field::new("large", DataType::LargeList(item(ts(Some(zone)))), true),
            Field::new(
                "fixed",
                DataType::FixedSizeList(item(ts(Some(zone))), 2),
                true,
            ),
            Field::new(
                "map",
                DataType::Map(
                    Arc::new(Field::new("entries", DataType::Struct(entries), false)),
                    false,
                ),
                true,
            ),
            Field::new("view", DataType::ListView(item(ts(Some(zone)))), true),
            Field::new(
                "nested",
                DataType::Struct(
                    vec![Field::new(
                        "a",
                        DataType::Struct(vec![Field::new("b", ts(Some("+01:00")), true)].into()),
                        true,
                    )]
                    .into(),
                ),
                true,
            ),
            Field::new(
                "dict",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(ts(Some(zone)))),
                true,
            ),
            Field::new(
                "dicts",
                DataType::List(item(DataType::Dictionary(
                    Box::new(DataType::Int16),
                    Box::new(ts(Some(zone))),
                ))),
                true,
            ),
        ])
    }

    /// Two rows of [`zoned_schema`] in `unit` (values, then nulls), made by the JSON reader
    /// without zones and then given them.
    fn zoned_batch(unit: TimeUnit, zone: &str) -> RecordBatch {
        let schema = Arc::new(zoned_schema(unit, zone));
        let plain: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                let data_type = match f.data_type() {
                    DataType::Dictionary(_, value) => value.as_ref().clone(),
                    DataType::List(item)
                        if matches!(item.data_type(), DataType::Dictionary(..)) =>
                    {
                        DataType::List(Arc::new(Field::new(
                            "element",
                            DataType::Timestamp(unit, None),
                            true,
                        )))
                    }
                    other => other.clone(),
                };
                let naive = strip_zones(&data_type);
                f.as_ref().clone().with_data_type(naive)
            })
            .collect();
        let rows = concat!(
            r#"{"top": 1700000000123, "naive": 1700000000456, "list_struct": [{"ts": 1}, null],"#,
            r#" "large": [2, null], "fixed": [3, 4], "map": {"a": 5}, "view": [6, 7],"#,
            r#" "nested": {"a": {"b": 8}}, "dict": 1700000000123, "dicts": [9, 9, null]}"#,
            "\n",
            r#"{"list_struct": [{"ts": null}], "fixed": null, "nested": {"a": null}}"#,
            "\n",
        );
        let mut reader = arrow::json::ReaderBuilder::new(Arc::new(Schema::new(plain)))
            .build(rows.as_bytes())
            .unwrap();
        let plain = reader.next().unwrap().unwrap();
        let columns = plain
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| {
                let naive = strip_zones(field.data_type());
                let column = arrow::compute::cast(column, &naive).unwrap();
                arrow::array::make_array(retyped(&column.to_data(), field.data_type()))
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn strip_zones(data_type: &DataType) -> DataType {
        let item = |f: &FieldRef| {
            Arc::new(
                f.as_ref()
                    .clone()
                    .with_data_type(strip_zones(f.data_type())),
            )
        };
        match data_type {
            DataType::Timestamp(unit, _) => DataType::Timestamp(*unit, None),
            DataType::List(f) => DataType::List(item(f)),
            DataType::LargeList(f) => DataType::LargeList(item(f)),
            DataType::ListView(f) => DataType::ListView(item(f)),
            DataType::FixedSizeList(f, n) => DataType::FixedSizeList(item(f), *n),
            DataType::Map(f, sorted) => DataType::Map(item(f), *sorted),
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(item).collect()),
            DataType::Dictionary(key, value) => {
                DataType::Dictionary(key.clone(), Box::new(strip_zones(value)))
            }
            other => other.clone(),
        }
    }

    /// Writes `batch` as pyarrow writes timestamps it cannot store in their unit: the Parquet
    /// timestamps adjusted to UTC, and the `ARROW:schema` of `recorded`, the types it was
    /// written from.
    fn pyarrow_like_parquet(path: &Path, batch: &RecordBatch, recorded: &Schema) {
        use parquet::arrow::arrow_writer::ArrowWriterOptions;
        let properties = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                ARROW_SCHEMA_META_KEY.into(),
                encode_arrow_schema(recorded),
            )]))
            .build();
        let options = ArrowWriterOptions::new()
            .with_skip_arrow_metadata(true)
            .with_properties(properties);
        let mut writer =
            ArrowWriter::try_new_with_options(File::create(path).unwrap(), batch.schema(), options)
                .unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn parquet_timestamps_keep_the_recorded_time_zone_whatever_unit_they_are_stored_in() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("zoned.parquet");
        use TimeUnit::{Microsecond as Us, Millisecond as Ms, Nanosecond as Ns, Second as S};
        // (unit written from, unit stored): pyarrow stores seconds as milliseconds,
        // `coerce_timestamps` and `version='1.0'` (nanoseconds as microseconds) others; the
        // same unit is what the parquet crate already read right.
        let units = [
            (S, Ms),
            (Ns, Us),
            (Us, Ms),
            (Ns, Ms),
            (S, Us),
            (Ms, Ms),
            (Ns, Ns),
        ];
        for (written, stored) in units {
            for zone in ["America/New_York", "+05:30", "UTC"] {
                let batch = zoned_batch(stored, zone);
                let recorded = zoned_schema(written, zone);
                pyarrow_like_parquet(&input, &batch, &recorded);
                let (outcome, read, output) = ingest_ok(&dir, &input);
                // The stored unit, the recorded zone (pyarrow reads the same); a top-level
                // dictionary is read as its values.
                let mut want: Vec<Field> = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                let zoned = DataType::Timestamp(stored, Some(zone.into()));
                let dict = want.len() - 2;
                want[dict] = want[dict].clone().with_data_type(zoned.clone());
                // A dictionary the parquet crate cannot read in the recorded unit it reads
                // as its values (pyarrow reads every dictionary so).
                if written != stored {
                    let item = Arc::new(Field::new("element", zoned, true));
                    want[dict + 1] = want[dict + 1].clone().with_data_type(DataType::List(item));
                }
                for (got, want) in outcome.schema.fields().iter().zip(&want) {
                    assert_eq!(
                        got.data_type(),
                        want.data_type(),
                        "{written:?} stored as {stored:?} in {zone}: `{}`",
                        want.name()
                    );
                }
                // The same instants.
                for (index, column) in batch.columns().iter().enumerate() {
                    let back = arrow::compute::cast(read.column(index), column.data_type());
                    assert_eq!(&back.unwrap(), column, "{written:?} in {zone}: {index}");
                }
                fs::remove_file(output).unwrap();
            }
        }
    }

    #[test]
    fn a_parquet_timestamp_stored_as_local_time_gets_no_recorded_zone() {
        // pyarrow's rule: only a timestamp stored adjusted to UTC takes the recorded zone.
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("local.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        )]));
        let column = arrow::array::TimestampMillisecondArray::from(vec![Some(1_000), None]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(column)]).unwrap();
        let recorded = Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Second, Some("Asia/Tokyo".into())),
            true,
        )]);
        pyarrow_like_parquet(&input, &batch, &recorded);
        let (outcome, read, _) = ingest_ok(&dir, &input);
        assert_eq!(
            outcome.schema.field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_same_data(&batch, &read);
    }

    #[test]
    fn a_feather_version_1_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        // The opening of a Feather version 1 file as pyarrow's `version=1` writes it.
        let mut bytes = b"FEA1\0\0\0\0".to_vec();
        bytes.extend([0u8; 56]);
        bytes.extend(b"\x80\0\0\0FEA1");
        let error = refused(&dir, "old.feather", &bytes);
        let message = bounds_refusal(&error, InputFormat::ArrowFile);
        for part in [
            "old.feather",
            "Feather version 1",
            "pyarrow.feather.write_feather(pyarrow.feather.read_table('old.feather')",
            "version=2",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert!(!message.contains("metadata"), "{message}");
    }

    /// Writes a Parquet file as DuckDB writes UUID and JSON columns, with no `ARROW:schema`:
    /// `u` (UUID, `FIXED_LEN_BYTE_ARRAY(16)`), `j` (JSON) and `us`, a list of UUIDs.
    fn uuid_json_parquet(path: &Path, uuids: &[[u8; 16]]) {
        use parquet::data_type::{ByteArray, ByteArrayType};
        let schema = parse_message_type(
            "message duckdb_schema {
                required fixed_len_byte_array(16) u (UUID);
                optional binary j (JSON);
                optional group us (LIST) {
                    repeated group list { optional fixed_len_byte_array(16) element (UUID); }
                }
            }",
        )
        .unwrap();
        let mut writer = parquet_writer(path, schema, None);
        let mut group = writer.next_row_group().unwrap();
        let values: Vec<FixedLenByteArray> = uuids
            .iter()
            .map(|u| FixedLenByteArray::from(u.to_vec()))
            .collect();
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<FixedLenByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        column.close().unwrap();
        // `{"a":1}` in every row but the last, which is null.
        let texts = vec![ByteArray::from(r#"{"a":1}"#); uuids.len() - 1];
        let mut definitions = vec![1; uuids.len() - 1];
        definitions.push(0);
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<ByteArrayType>()
            .write_batch(&texts, Some(&definitions), None)
            .unwrap();
        column.close().unwrap();
        // One list of every UUID in each row.
        let mut repetitions = Vec::new();
        let mut items = Vec::new();
        for _ in uuids {
            for (i, value) in values.iter().enumerate() {
                repetitions.push(i16::from(i > 0));
                items.push(value.clone());
            }
        }
        let definitions = vec![3; items.len()];
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<FixedLenByteArrayType>()
            .write_batch(&items, Some(&definitions), Some(&repetitions))
            .unwrap();
        column.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }

    /// The `ARROW:extension:name` of `field`, if any.
    fn extension_name(field: &Field) -> Option<&str> {
        field
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str)
    }

    #[test]
    fn parquet_uuid_and_json_columns_are_stored_as_their_canonical_extension_types() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("duckdb.parquet");
        let uuids = [[0x11; 16], [0x22; 16], [0x33; 16]];
        uuid_json_parquet(&input, &uuids);
        let (outcome, read, _) = ingest_ok(&dir, &input);
        let schema = &outcome.schema;
        assert_eq!(schema.field(0).data_type(), &DataType::FixedSizeBinary(16));
        assert_eq!(extension_name(schema.field(0)), Some("arrow.uuid"));
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
        assert_eq!(extension_name(schema.field(1)), Some("arrow.json"));
        // Below the top level, the storage type: a descriptor cannot carry the annotation.
        let DataType::List(item) = schema.field(2).data_type() else {
            panic!("not a list: {}", schema.field(2));
        };
        assert_eq!(item.data_type(), &DataType::FixedSizeBinary(16));
        assert!(item.metadata().is_empty(), "{item}");
        let u = column::<arrow::array::FixedSizeBinaryArray>(&read, "u");
        let stored: Vec<&[u8]> = u.iter().flatten().collect();
        assert_eq!(stored, uuids.iter().map(|u| &u[..]).collect::<Vec<_>>());
        let j = column::<StringArray>(&read, "j");
        assert_eq!(
            j.iter().collect::<Vec<_>>(),
            [Some(r#"{"a":1}"#), Some(r#"{"a":1}"#), None]
        );
    }
}
