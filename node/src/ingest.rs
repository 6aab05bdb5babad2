//! Turns a user's CSV, Parquet or Arrow file into the Arrow IPC file that a product version is
//! stored as (`meshnode publish NAME --from FILE`).
//!
//! Layout:
//! - [`InputFormat::detect`] picks the reader from the file name (and, for `.arrow`, the magic).
//! - A `Source` yields record batches one at a time, whatever the format; nothing ever holds the
//!   whole input. CSV gets its schema from the first [`CSV_INFER_RECORDS`] data rows.
//! - Inputs are checked before a parser sees them: a Parquet footer's schema depth, its page
//!   headers, delta-encoded lengths and the rows per batch that keep a batch bounded
//!   (`parquet_footer`), an Arrow IPC input's messages against the file's length,
//!   [`MAX_BATCH_ROWS`] and [`MAX_DECOMPRESSED_BATCH`] (`arrow_guard`); and reader calls that
//!   can panic on hostile input run inside `arrow_guard`, so such input is an error, never a
//!   crashed task. A seeded mutation soak (`soak`, tests only) feeds every format to ingest.
//! - The input's stamp (length, times, device and inode: `InputStamp`) is taken when it is
//!   opened and compared after its last read: a file that changed while it was read (still being
//!   written, or replaced) is refused, never published half old, half new or cut inside a row.
//! - `write_ipc` writes the batches to an uncompressed Arrow IPC *file* through a writer that
//!   hashes (BLAKE3) and counts the bytes on their way to disk, then fsyncs.
//! - CSV is decoded with the `csv` crate into Arrow builders, so that the rules for empty fields,
//!   null markers and time zones are ours (matching pyarrow's values); errors name the physical
//!   line (re-reading from the record's byte offset) and the column.
//!
//! This module knows nothing of the rest of the node: it maps paths to an [`IngestOutcome`].

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::timezone::Tz;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder,
};
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileReader, StreamReader};
use arrow::ipc::writer::FileWriter;
use mesh_protocol::bounds::{self, BoundsError};
use mesh_protocol::descriptor::{MAX_COLUMN_NAME_LEN, MAX_COLUMNS};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};

use crate::arrow_guard::{self, MessageBounds, MessageError};
use crate::batch_values::{self, MAX_BATCH_VALUES};

/// How many CSV data rows schema inference looks at. A value of another type further down is
/// an error ([`IngestError::Csv`]) rather than a silent re-typing, as in pyarrow.
pub const CSV_INFER_RECORDS: usize = 10_000;

/// Most rows in one output record batch (CSV and Parquet inputs).
const BATCH_ROWS: usize = 64 * 1024;

/// Most cells (rows x columns) in one CSV batch: arrow-csv pre-allocates about 16 bytes per
/// cell, so a very wide CSV gets shorter batches instead of a huge allocation.
const CSV_BATCH_CELLS: usize = 2 * 1024 * 1024;

/// Raw CSV bytes in one batch, about: rows per batch are first judged from the average record
/// length of the inference prefix (so uniform files with long text fields get shorter batches),
/// and a batch also ends as soon as the records it took reach this many bytes, so that long
/// records after short ones cannot fill one batch. A batch thus holds less than this plus one
/// record ([`MAX_CSV_RECORD_BYTES`]).
const CSV_BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// Read buffer for input files.
const READ_BUFFER: usize = 1024 * 1024;

/// Write buffer in front of the hashing writer: BLAKE3 is fastest on large chunks.
const WRITE_BUFFER: usize = 1024 * 1024;

/// Most bytes the compressed buffers of one record batch of an Arrow IPC input may declare
/// once decompressed (the reader reserves that much before decompressing a byte): a batch as
/// pyarrow's Feather writer cuts it (64Ki rows) of the widest schema a descriptor carries
/// ([`MAX_COLUMNS`] columns) of 8-byte values, 1 GiB.
pub const MAX_DECOMPRESSED_BATCH: u64 = 64 * 1024 * MAX_COLUMNS as u64 * 8;

/// Most rows in one record or dictionary batch of an Arrow IPC input. Columns of type Null
/// (and other types of no width) take no byte per row, so nothing else bounds a batch of
/// them: a 490-byte stream would otherwise publish a batch of 2^40 rows, which whatever
/// reads the product next may materialise.
pub const MAX_BATCH_ROWS: i64 = i32::MAX as i64;

/// What each message of an Arrow IPC input may declare: any metadata and body that fit in
/// the file (the walk checks that), at most [`MAX_BATCH_ROWS`] rows and at most
/// [`MAX_DECOMPRESSED_BATCH`] bytes once decompressed.
const ARROW_INPUT_BOUNDS: MessageBounds = MessageBounds {
    max_metadata: u64::MAX,
    max_body: u64::MAX,
    max_rows: MAX_BATCH_ROWS,
    max_decompressed: MAX_DECOMPRESSED_BATCH,
};

/// The magic that opens an Arrow IPC file (a stream starts with a message instead).
const ARROW_FILE_MAGIC: &[u8; 6] = b"ARROW1";

/// The extensions [`InputFormat::detect`] accepts, as shown in error messages.
const SUPPORTED_EXTENSIONS: &str = ".csv, .parquet/.pq, .arrow/.feather/.ipc or .arrows";

/// Most `--null-values` markers, and most bytes in one: they are compared with every field.
pub const MAX_NULL_VALUES: usize = 64;
/// Most bytes in one null marker.
pub const MAX_NULL_VALUE_LEN: usize = 256;

/// How to read a CSV input (Parquet and Arrow inputs carry their own types and nulls).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvOptions {
    /// Field values read as null in every column, strings included (`publish --null-values`).
    /// None by default, so text is kept exactly as written: an empty field in a text column is
    /// an empty string, and `NA` or `null` are the strings they look like.
    pub null_values: Vec<String>,
}

impl CsvOptions {
    /// Refuses more than [`MAX_NULL_VALUES`] markers or one over [`MAX_NULL_VALUE_LEN`] bytes.
    fn check(&self, file: &Path) -> Result<(), IngestError> {
        let over = |problem: BoundsError| IngestError::Csv {
            file: file.to_path_buf(),
            line: None,
            problem: format!("{problem}: pass fewer or shorter --null-values"),
        };
        bounds::check_count("the null markers", self.null_values.len(), MAX_NULL_VALUES)
            .map_err(over)?;
        for value in &self.null_values {
            bounds::check_len("a null marker", value, MAX_NULL_VALUE_LEN).map_err(over)?;
        }
        Ok(())
    }
}

/// What ingesting produced: enough to fill a product descriptor without reading the file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Schema of the written Arrow file; goes into the descriptor so consumers know the columns
    /// before they fetch.
    pub schema: SchemaRef,
    /// Number of data rows written; the descriptor's row count.
    pub rows: u64,
    /// Number of record batches written; a fetch resumes from a batch index.
    pub batches: u64,
    /// Size of the output file in bytes; the descriptor's byte size.
    pub bytes: u64,
    /// BLAKE3 of the output file's bytes; the descriptor's content digest.
    pub digest: [u8; 32],
}

/// The kinds of file [`ingest_file`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Comma-separated text with a header row (`.csv`); types are inferred.
    Csv,
    /// Apache Parquet (`.parquet`, `.pq`); the schema is kept.
    Parquet,
    /// Arrow IPC file format, which opens with `ARROW1` (`.arrow`, `.feather`, `.ipc`).
    ArrowFile,
    /// Arrow IPC stream format (`.arrows`, or `.arrow`/`.feather`/`.ipc` without the file magic).
    ArrowStream,
}

impl InputFormat {
    /// Picks the format from the extension of `path` (case-insensitively). For `.arrow`,
    /// `.feather` and `.ipc`, which are used for both IPC layouts, it reads the first six bytes:
    /// `ARROW1` means the file format, anything else the stream format.
    pub fn detect(path: &Path) -> Result<InputFormat, IngestError> {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match extension.as_deref() {
            Some("csv") => Ok(InputFormat::Csv),
            Some("parquet" | "pq") => Ok(InputFormat::Parquet),
            Some("arrows") => Ok(InputFormat::ArrowStream),
            Some("arrow" | "feather" | "ipc") => sniff_arrow(path),
            _ => Err(IngestError::UnsupportedExtension {
                file: path.to_path_buf(),
                extension: extension.unwrap_or_default(),
            }),
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputFormat::Csv => "CSV",
            InputFormat::Parquet => "Parquet",
            InputFormat::ArrowFile => "Arrow IPC file",
            InputFormat::ArrowStream => "Arrow IPC stream",
        })
    }
}

/// Why an input holds nothing to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyReason {
    /// The file has zero bytes.
    NoBytes,
    /// A CSV has a header row but no data row: its column types could not be inferred.
    HeaderOnly,
    /// There are no columns (a CSV without a header, or a schema without fields).
    NoColumns,
}

/// Why [`ingest_file`] failed. Each message is one sentence that names the file, says what is
/// wrong and what to do, so the CLI can print it as it is.
///
/// Inner errors are kept in fields and in the message, but not exposed as
/// [`std::error::Error::source`], so that `anyhow`'s `{:#}` does not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input path does not exist.
    #[error("input file `{}` does not exist: check the path", file.display())]
    NotFound {
        /// The path as given.
        file: PathBuf,
    },
    /// The input path is a directory (or another non-file).
    #[error(
        "input `{}` is not a regular file: pass the path of a {SUPPORTED_EXTENSIONS} file",
        file.display()
    )]
    NotAFile {
        /// The path as given.
        file: PathBuf,
    },
    /// The extension names no format this module reads.
    #[error("{}", unsupported_message(file, extension))]
    UnsupportedExtension {
        /// The path as given.
        file: PathBuf,
        /// The extension, lower-cased, without the dot; empty when there is none.
        extension: String,
    },
    /// The input has no data to publish.
    #[error("input file `{}` {}", file.display(), empty_message(*format, *reason))]
    Empty {
        /// The path as given.
        file: PathBuf,
        /// The detected format, so the message can say what the format needs.
        format: InputFormat,
        /// What is missing.
        reason: EmptyReason,
    },
    /// A CSV row has more or fewer fields than the header.
    #[error(
        "CSV `{}` line {line} has {found} field{} but the header has {expected}: {}",
        file.display(),
        if *found == 1 { "" } else { "s" },
        if found > expected {
            "fix the row or quote fields that contain commas"
        } else {
            "fix the row or add the missing fields (an empty field is null in a number, date \
             or boolean column, an empty string in a text column)"
        }
    )]
    RaggedCsv {
        /// The path as given.
        file: PathBuf,
        /// 1-based physical line (as an editor counts) where the row starts.
        line: u64,
        /// Number of fields in that row.
        found: usize,
        /// Number of fields in the header.
        expected: usize,
    },
    /// Any other CSV problem: a value that does not fit the inferred column type, invalid
    /// UTF-8, or malformed CSV.
    #[error("{}", csv_message(file, *line, problem))]
    Csv {
        /// The path as given.
        file: PathBuf,
        /// 1-based physical line where the offending row starts, when it could be found.
        line: Option<u64>,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The Parquet reader rejected the input.
    #[error(
        "cannot read Parquet file `{}`: {detail}: check that it is a complete, valid Parquet file",
        file.display()
    )]
    Parquet {
        /// The path as given.
        file: PathBuf,
        /// The reader's explanation (Parquet errors reach us as text through the Arrow reader).
        detail: String,
    },
    /// A Parquet input's pages, walked before any reader is built, declare what the reader
    /// would allocate before checking it (a page past its column chunk or the file, a
    /// dictionary of more values than its bytes hold) or more than a bound
    /// ([`MAX_PARQUET_PAGE`](crate::parquet_footer::MAX_PARQUET_PAGE),
    /// [`MAX_PARQUET_PAGES_HELD`](crate::parquet_footer::MAX_PARQUET_PAGES_HELD)).
    #[error("cannot read Parquet file `{}`: {problem}", file.display())]
    ParquetBounds {
        /// The path as given.
        file: PathBuf,
        /// Where, what it declares, and what to do.
        problem: String,
    },
    /// The Arrow IPC reader rejected the input.
    #[error(
        "cannot read {format} `{}`: {error}: check that it is a complete, valid Arrow IPC file",
        file.display()
    )]
    Arrow {
        /// The path as given.
        file: PathBuf,
        /// Which IPC layout was being read, from [`InputFormat::detect`].
        format: InputFormat,
        /// The reader's error.
        error: ArrowError,
    },
    /// An Arrow IPC input's messages, walked before any reader is built, declare a size the
    /// reader would allocate before checking it (a message longer than the rest of the file,
    /// a batch that decompresses to more than [`MAX_DECOMPRESSED_BATCH`]) or cannot be walked
    /// (a header that does not decode).
    #[error("cannot read {format} `{}`: {problem}", file.display())]
    ArrowBounds {
        /// The path as given.
        file: PathBuf,
        /// Which IPC layout was being read, from [`InputFormat::detect`].
        format: InputFormat,
        /// Which message declares what, and what to do.
        problem: String,
    },
    /// The Arrow IPC writer refused the data (not an I/O failure: those are [`Self::Io`]).
    #[error(
        "cannot write Arrow IPC file `{}`: {error}: the input uses a layout an Arrow IPC file \
         cannot hold (e.g. dictionaries that change between batches); re-save it without \
         dictionary encoding",
        file.display()
    )]
    Write {
        /// The output path.
        file: PathBuf,
        /// The writer's error.
        error: ArrowError,
    },
    /// The schema is over a limit every peer enforces on descriptors (column count, column
    /// name length, type nesting): publishing it would produce a descriptor the mesh refuses.
    #[error(
        "input file `{}` cannot be published: {problem}; peers refuse such a schema: {}",
        file.display(),
        over_limit_hint(problem)
    )]
    OverLimit {
        /// The path as given.
        file: PathBuf,
        /// Which limit, with the measured value.
        problem: BoundsError,
    },
    /// One row holds more values than a stored batch may ([`MAX_BATCH_VALUES`], counting
    /// the items of its lists and other nested values): consumers refuse such a batch.
    #[error(
        "input file `{}` cannot be published: row {row} holds {values} values (the items of \
         its lists and other nested values included), and a batch may hold at most \
         {MAX_BATCH_VALUES}, which every consumer enforces: spread the nested values of that \
         row over several rows",
        file.display()
    )]
    RowTooLarge {
        /// The path as given.
        file: PathBuf,
        /// The row, from 1.
        row: u64,
        /// The values it holds.
        values: u64,
    },
    /// A column's type cannot be written into a descriptor so that peers read back the same
    /// type (a nested field name or time zone arrow cannot print and parse again).
    #[error(
        "input file `{}`: column `{column}`: {source}: rename the nested field or time zone \
         to plain text and export the file again",
        file.display()
    )]
    ColumnType {
        /// The path as given.
        file: PathBuf,
        /// The top-level column whose type is at fault.
        column: String,
        /// Why its type text cannot be used.
        #[source]
        source: bounds::TypeError,
    },
    /// The input changed between the moment it was opened and its last read (something was
    /// still writing it, or put another file in its place): what was read may mix old and new
    /// contents, or end inside a row.
    #[error(
        "input file `{}` changed while it was read ({change}): publish it again once it is \
         complete and nothing writes to it any more",
        file.display()
    )]
    Changed {
        /// The path as given.
        file: PathBuf,
        /// What differs from when it was opened.
        change: InputChange,
    },
    /// Reading the input or writing the output failed at the operating-system level.
    #[error(
        "cannot {action} `{}`: {error}: check that the path is accessible and the disk has space",
        path.display()
    )]
    Io {
        /// The file that failed (input or output).
        path: PathBuf,
        /// What was being done, as a verb: "open", "read", "create", "write", "sync".
        action: &'static str,
        /// The operating system's error.
        error: io::Error,
    },
}

fn unsupported_message(file: &Path, extension: &str) -> String {
    if extension.is_empty() {
        format!(
            "input file `{}` has no extension: name it with one of {SUPPORTED_EXTENSIONS}",
            file.display()
        )
    } else {
        format!(
            "unsupported input extension `.{extension}` (file `{}`): use {SUPPORTED_EXTENSIONS}",
            file.display()
        )
    }
}

fn empty_message(format: InputFormat, reason: EmptyReason) -> String {
    match (format, reason) {
        (InputFormat::Csv, EmptyReason::NoBytes) => {
            "is empty: a CSV needs a header row and at least one data row".into()
        }
        (InputFormat::Csv, EmptyReason::NoColumns) => {
            "has no header row: the first line must name the columns, e.g. `id,name`".into()
        }
        (_, EmptyReason::HeaderOnly) => {
            "has a header row but no data rows: a CSV needs at least one data row \
             (its column types are inferred from the data)"
                .into()
        }
        (format, EmptyReason::NoBytes) => {
            format!("is empty (0 bytes): export the {format} again")
        }
        (format, EmptyReason::NoColumns) => {
            format!("has no columns: export a {format} with at least one column")
        }
    }
}

fn over_limit_hint(problem: &BoundsError) -> &'static str {
    match problem {
        BoundsError::TooDeep { .. } => "flatten the nested column types",
        BoundsError::TooMany { .. } => "split the table into several products, or drop columns",
        BoundsError::TooLong { .. } => "give the column a shorter name",
    }
}

/// Refuses a schema no descriptor could carry, on the parsed schema and by iterative walks,
/// before anything renders a type as text (recursively) or writes the output: more columns
/// than [`MAX_COLUMNS`], a column name over [`MAX_COLUMN_NAME_LEN`], a type nested deeper
/// than [`MAX_TYPE_DEPTH`](mesh_protocol::bounds::MAX_TYPE_DEPTH).
pub fn check_schema(file: &Path, schema: &Schema) -> Result<(), IngestError> {
    let over = |problem| IngestError::OverLimit {
        file: file.to_path_buf(),
        problem,
    };
    bounds::check_count("the schema", schema.fields().len(), MAX_COLUMNS).map_err(over)?;
    for field in schema.fields() {
        bounds::check_len("a column name", field.name(), MAX_COLUMN_NAME_LEN).map_err(over)?;
        bounds::type_text(field.data_type()).map_err(|source| IngestError::ColumnType {
            file: file.to_path_buf(),
            column: field.name().clone(),
            source,
        })?;
        bounds::check_data_type(field.data_type()).map_err(|problem| match problem {
            BoundsError::TooDeep { depth, max, .. } => over(BoundsError::TooDeep {
                what: format!("the type of column `{}`", field.name()),
                depth,
                max,
            }),
            other => over(other),
        })?;
    }
    Ok(())
}

fn csv_message(file: &Path, line: Option<u64>, problem: &str) -> String {
    match line {
        Some(line) => format!("CSV `{}` line {line}: {problem}", file.display()),
        None => format!("CSV `{}`: {problem}", file.display()),
    }
}

/// Streams `input` into an Arrow IPC *file* at `output` (which the caller names `*.partial` and
/// renames later; renaming and syncing the directory are the caller's).
///
/// Memory stays bounded whatever the input size: batches are read and written one at a time
/// (at most 64k rows; fewer for very wide or long CSV rows). The digest and byte count are of
/// the bytes written, hashed on their way to the file; the file is fsynced before returning.
/// The output is uncompressed and keeps the schema (and metadata) of Parquet and Arrow inputs,
/// except that a top-level dictionary column of a Parquet file is decoded to its value type
/// (Parquet dictionaries differ per row group; an IPC file holds one per column). Record batches
/// with zero rows are dropped. A Parquet or Arrow input with a schema but zero rows is accepted
/// (a CSV needs a data row to infer types from).
///
/// CSV semantics (values as `pyarrow.csv.read_csv` gives them, except where noted): a header row
/// is required, with no empty and no repeated column name. Column types are inferred from the
/// first [`CSV_INFER_RECORDS`] data rows, in pyarrow's order: Int64 (leading zeros allowed, so
/// `007` is 7), Boolean (`true`/`True`/`TRUE` and the like), Date32 (`YYYY-MM-DD`), Timestamp,
/// Float64, else Utf8; a column with no value there is Utf8 (pyarrow: null type). A column is
/// Timestamp only if every value is written the same way (same separator, seconds or not, all
/// zoned or all zone-less; a date mixed in keeps it Utf8, where pyarrow makes timestamps):
/// seconds, or nanoseconds when any value has fractional seconds; values with `Z` or `±hh:mm`
/// are stored as instants in `Timestamp(_, "UTC")`. Every column is nullable. Nulls: in a Utf8
/// column an empty field and `""` are the empty string, and only a value equal to one of
/// `options.null_values` is null (pyarrow with `strings_can_be_null=False`); in other columns
/// an empty field, `""` or a null marker is null. `NA`, `null`, `NaN` are not null markers
/// unless passed (pyarrow reads them as null in non-text columns). Quoted fields keep commas,
/// doubled quotes and line breaks; a quote never closed is refused; text must be UTF-8. Line
/// numbers in errors are physical, 1-based lines.
///
/// The input must not change while it is read: the file system's stamp of it (length,
/// modification time and, on Unix, status change time, device and inode) is taken when it is
/// opened and compared after its last read; a difference is [`IngestError::Changed`], which
/// also wins over any error the read ran into (a file still being written fails wherever its
/// cut happens to fall). A rewrite of the same length within the file system's timestamp
/// granularity cannot be seen.
///
/// On any error after `output` was created it is removed; an input rejected before that
/// ([`IngestError::NotFound`], [`IngestError::UnsupportedExtension`], ...) leaves `output`
/// untouched.
pub fn ingest_file(input: &Path, output: &Path) -> Result<IngestOutcome, IngestError> {
    ingest_file_with(input, output, &CsvOptions::default())
}

/// [`ingest_file`] with options for reading a CSV input (ignored for other formats).
pub fn ingest_file_with(
    input: &Path,
    output: &Path,
    options: &CsvOptions,
) -> Result<IngestOutcome, IngestError> {
    ingest_file_tracked(input, output, options, None)
}

/// [`ingest_file_with`], reporting to `progress` the input's size, then after each batch
/// the bytes of the input read so far and the rows ingested.
pub fn ingest_file_tracked(
    input: &Path,
    output: &Path,
    options: &CsvOptions,
    progress: Option<&crate::progress::Progress>,
) -> Result<IngestOutcome, IngestError> {
    options.check(input)?;
    let metadata = fs::metadata(input).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => IngestError::NotFound {
            file: input.to_path_buf(),
        },
        _ => io_error(input, "open", error),
    })?;
    if !metadata.is_file() {
        return Err(IngestError::NotAFile {
            file: input.to_path_buf(),
        });
    }
    let format = InputFormat::detect(input)?;
    if metadata.len() == 0 {
        return Err(IngestError::Empty {
            file: input.to_path_buf(),
            format,
            reason: EmptyReason::NoBytes,
        });
    }
    if let Some(p) = progress {
        p.set_total(metadata.len());
    }
    let file = File::open(input).map_err(|e| io_error(input, "open", e))?;
    let stamp = InputStamp::of(&file.metadata().map_err(|e| io_error(input, "read", e))?);
    let opened = Opened {
        file,
        stamp,
        format,
    };
    ingest_opened(input, opened, output, options, progress)
}

/// An input file just opened, with what the file system said about it then.
#[derive(Debug)]
struct Opened {
    /// The handle every reader reads through.
    file: File,
    /// The file's stamp when it was opened, compared after the last read.
    stamp: InputStamp,
    /// Its format, from [`InputFormat::detect`].
    format: InputFormat,
}

/// The rest of [`ingest_file_tracked`] once `input` is open: read, convert, write, then check
/// that `input` still has the stamp it had when it was opened. Separate so that tests can
/// change the file after it was opened.
fn ingest_opened(
    input: &Path,
    opened: Opened,
    output: &Path,
    options: &CsvOptions,
    progress: Option<&crate::progress::Progress>,
) -> Result<IngestOutcome, IngestError> {
    let Opened {
        file: opened,
        stamp,
        format,
    } = opened;
    // Any error reading a changed input is reported as the change, which is what to fix.
    let or_changed = |error| match check_unchanged(input, &stamp) {
        Err(changed @ IngestError::Changed { .. }) => changed,
        _ => error,
    };
    // A second handle on the same open file shares its offset: how far the readers got.
    let position = progress.and_then(|p| Some((p, opened.try_clone().ok()?)));
    let mut source = Source::open(input, opened, format, options).map_err(or_changed)?;
    if source.schema().fields().is_empty() {
        return Err(or_changed(IngestError::Empty {
            file: input.to_path_buf(),
            format,
            reason: EmptyReason::NoColumns,
        }));
    }
    check_schema(input, &source.schema()).map_err(or_changed)?;

    let file = File::create(output).map_err(|e| io_error(output, "create", e))?;
    let mut partial = PartialOutput {
        path: output,
        keep: false,
    };
    let outcome = write_ipc(input, &mut source, file, output, position).map_err(or_changed)?;
    check_unchanged(input, &stamp)?;
    partial.keep = true;
    Ok(outcome)
}

/// What the file system says about an input file, taken when ingest opens it and again after
/// its last read: when any part differs, the file changed (or was replaced) while it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InputStamp {
    /// Length in bytes: grows while a writer appends.
    len: u64,
    /// Last modification time, where the platform reports one: moves on every write.
    modified: Option<SystemTime>,
    /// Status change time (Unix) in seconds and nanoseconds: a writer can set the modification
    /// time back (`cp -p`, `touch -r`), not this.
    status_changed: Option<(i64, i64)>,
    /// Device and inode (Unix): another file renamed over the path has other ones.
    identity: Option<(u64, u64)>,
}

impl InputStamp {
    #[cfg(unix)]
    fn of(metadata: &fs::Metadata) -> InputStamp {
        use std::os::unix::fs::MetadataExt;
        InputStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            status_changed: Some((metadata.ctime(), metadata.ctime_nsec())),
            identity: Some((metadata.dev(), metadata.ino())),
        }
    }

    #[cfg(not(unix))]
    fn of(metadata: &fs::Metadata) -> InputStamp {
        InputStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            status_changed: None,
            identity: None,
        }
    }
}

/// How an input file changed while it was read ([`IngestError::Changed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputChange {
    /// Its path no longer names a file.
    Removed,
    /// Another file was put at its path (it has another device or inode).
    Replaced,
    /// Its length changed.
    Resized {
        /// Length in bytes when it was opened.
        before: u64,
        /// Length in bytes after the last read.
        after: u64,
    },
    /// Same length, but it was written to (its modification or status change time moved).
    Modified,
}

impl fmt::Display for InputChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputChange::Removed => f.write_str("it was removed"),
            InputChange::Replaced => f.write_str("another file was put in its place"),
            InputChange::Resized { before, after } => {
                write!(f, "its size went from {before} to {after} bytes")
            }
            InputChange::Modified => f.write_str("it was written to"),
        }
    }
}

/// How the file stamped `before` differs from what its path names now (`after`, `None` when
/// nothing): `None` when it is the same file, unchanged.
fn input_change(before: &InputStamp, after: Option<&InputStamp>) -> Option<InputChange> {
    let Some(after) = after else {
        return Some(InputChange::Removed);
    };
    if before.identity != after.identity {
        Some(InputChange::Replaced)
    } else if before.len != after.len {
        Some(InputChange::Resized {
            before: before.len,
            after: after.len,
        })
    } else if before.modified != after.modified || before.status_changed != after.status_changed {
        Some(InputChange::Modified)
    } else {
        None
    }
}

/// Fails with [`IngestError::Changed`] when the file at `input` is not the one stamped `stamp`,
/// unchanged.
fn check_unchanged(input: &Path, stamp: &InputStamp) -> Result<(), IngestError> {
    let now = match fs::metadata(input) {
        Ok(metadata) => Some(InputStamp::of(&metadata)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error(input, "read", error)),
    };
    match input_change(stamp, now.as_ref()) {
        None => Ok(()),
        Some(change) => Err(IngestError::Changed {
            file: input.to_path_buf(),
            change,
        }),
    }
}

/// Removes the output being written when dropped before it is complete: on every error, and
/// while a panic unwinds (best effort: the error being returned is the one worth reporting).
struct PartialOutput<'a> {
    /// The output file.
    path: &'a Path,
    /// Set once the output is complete and fsynced.
    keep: bool,
}

impl Drop for PartialOutput<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(self.path);
        }
    }
}

/// BLAKE3 and length of an existing file, read in chunks (memory does not grow with the file).
pub fn digest_file(path: &Path) -> io::Result<([u8; 32], u64)> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buffer[..n]);
                bytes += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((*hasher.finalize().as_bytes(), bytes))
}

fn io_error(path: &Path, action: &'static str, error: io::Error) -> IngestError {
    IngestError::Io {
        path: path.to_path_buf(),
        action,
        error,
    }
}

/// Reads the first bytes of an `.arrow`-like file to tell the IPC file from the IPC stream.
fn sniff_arrow(path: &Path) -> Result<InputFormat, IngestError> {
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
    Ok(if magic == ARROW_FILE_MAGIC {
        InputFormat::ArrowFile
    } else {
        InputFormat::ArrowStream
    })
}

/// Writes every batch of `source` (read from `input`) to `file` as an Arrow IPC file,
/// hashing on the way, then fsyncs. A batch of more values than a consumer accepts
/// ([`MAX_BATCH_VALUES`]) is stored as several.
fn write_ipc(
    input: &Path,
    source: &mut Source,
    file: File,
    output: &Path,
    mut progress: Option<(&crate::progress::Progress, File)>,
) -> Result<IngestOutcome, IngestError> {
    let write_error = |error: ArrowError| match error {
        ArrowError::IoError(_, error) => io_error(output, "write", error),
        error => IngestError::Write {
            file: output.to_path_buf(),
            error,
        },
    };
    let schema = source.schema();
    let sink = BufWriter::with_capacity(WRITE_BUFFER, HashingWriter::new(file));
    let mut writer = FileWriter::try_new(sink, &schema).map_err(write_error)?;
    let (mut rows, mut batches) = (0u64, 0u64);
    while let Some(batch) = source.next_batch()? {
        if batch.num_rows() == 0 {
            continue;
        }
        // A consumer refuses a batch of more values than MAX_BATCH_VALUES: store none.
        let pieces = batch_values::cut_to(&batch, MAX_BATCH_VALUES).map_err(|too_large| {
            IngestError::RowTooLarge {
                file: input.to_path_buf(),
                row: rows + too_large.row as u64 + 1,
                values: too_large.values,
            }
        })?;
        for piece in &pieces {
            writer.write(piece).map_err(write_error)?;
        }
        rows += batch.num_rows() as u64;
        batches += pieces.len() as u64;
        if let Some((p, input)) = &mut progress {
            p.set(input.stream_position().unwrap_or(0), rows);
        }
    }
    let sink = writer.into_inner().map_err(write_error)?;
    let hashing = sink
        .into_inner()
        .map_err(|e| io_error(output, "write", e.into_error()))?;
    let (file, digest, bytes) = hashing.finish();
    file.sync_all().map_err(|e| io_error(output, "sync", e))?;
    Ok(IngestOutcome {
        schema,
        rows,
        batches,
        bytes,
        digest,
    })
}

/// A `Write` that hashes and counts what its inner writer accepts.
#[derive(Debug)]
struct HashingWriter<W> {
    /// Where the bytes go.
    inner: W,
    /// BLAKE3 of every byte accepted so far.
    hasher: blake3::Hasher,
    /// Number of bytes accepted so far.
    bytes: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        }
    }

    /// Returns the inner writer, the digest and the byte count.
    fn finish(self) -> (W, [u8; 32], u64) {
        (self.inner, *self.hasher.finalize().as_bytes(), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Watches the bytes the `csv` crate reads to see whether the input ends inside a quoted field:
/// the crate (like arrow-csv) then quietly ends the record at the end of the file, so a quote
/// never closed would swallow the rest of the file into one field. The state machine follows
/// csv-core's default dialect (a field is quoted only when its first byte is `"`; `""` inside
/// quotes is a quote; bytes after a closing quote continue the field unquoted).
struct QuoteTracker<R> {
    /// Where the bytes come from.
    inner: R,
    /// Where in a field the last byte read left us.
    state: QuoteState,
    /// 1-based count of `\n` seen so far plus one: the physical line of the next byte.
    line: u64,
    /// Line of the opening quote of the quoted field we are in.
    opened_on: u64,
    /// The inner reader reported its end.
    at_end: bool,
    /// Bytes of the record being read so far (since the last line break outside quotes).
    record_bytes: u64,
    /// Line where the record being read starts.
    record_starts_on: u64,
}

/// Most bytes in one CSV record. The `csv` crate holds a whole record in memory, so a quote
/// never closed in a large file would otherwise pull the rest of the file into memory before
/// it could be refused.
pub const MAX_CSV_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// A CSV record over [`MAX_CSV_RECORD_BYTES`], raised by [`QuoteTracker`] as an I/O error so
/// that the `csv` crate stops reading.
#[derive(Debug, thiserror::Error)]
#[error("a CSV record is over {MAX_CSV_RECORD_BYTES} bytes")]
struct RecordTooLong {
    /// Line of the opening quote when inside one, else where the record starts.
    line: u64,
    /// Whether the record ran on inside a quoted field (most likely a quote never closed).
    in_quotes: bool,
}

/// Where in a CSV field the tracker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    /// At the start of a field.
    FieldStart,
    /// Inside a field that did not start with a quote.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field (closing, or the first of a doubled pair).
    QuoteInQuoted,
}

impl<R> QuoteTracker<R> {
    fn new(inner: R) -> Self {
        QuoteTracker {
            inner,
            state: QuoteState::FieldStart,
            line: 1,
            opened_on: 1,
            at_end: false,
            record_bytes: 0,
            record_starts_on: 1,
        }
    }

    /// The line of the opening quote when the whole input was read and ended inside quotes.
    fn unclosed_quote(&self) -> Option<u64> {
        (self.at_end && self.state == QuoteState::Quoted).then_some(self.opened_on)
    }

    fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for QuoteTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.at_end = true;
        }
        for &byte in &buf[..n] {
            use QuoteState::*;
            let separator = matches!(byte, b',' | b'\n' | b'\r');
            self.state = match (self.state, byte) {
                (Quoted, b'"') => QuoteInQuoted,
                (Quoted, _) => Quoted,
                (QuoteInQuoted, b'"') => Quoted,
                (FieldStart, b'"') => {
                    self.opened_on = self.line;
                    Quoted
                }
                (_, _) if separator => FieldStart,
                (_, _) => Unquoted,
            };
            if byte == b'\n' {
                self.line += 1;
                if self.state == FieldStart {
                    self.record_bytes = 0;
                    self.record_starts_on = self.line;
                }
            }
            self.record_bytes += 1;
            if self.record_bytes > MAX_CSV_RECORD_BYTES {
                let in_quotes = matches!(self.state, Quoted | QuoteInQuoted);
                return Err(io::Error::other(RecordTooLong {
                    line: if in_quotes {
                        self.opened_on
                    } else {
                        self.record_starts_on
                    },
                    in_quotes,
                }));
            }
        }
        Ok(n)
    }
}

/// One input, as a sequence of record batches.
enum Source {
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

/// State of a CSV being read.
struct CsvSource {
    /// Input path, for error messages (which re-read it to find physical line numbers).
    path: PathBuf,
    /// The inferred schema.
    schema: SchemaRef,
    /// The streaming record reader, past the header.
    reader: csv::Reader<QuoteTracker<BufReader<File>>>,
    /// The record being decoded, reused between rows.
    record: csv::ByteRecord,
    /// Field values read as null in every column (`--null-values`).
    null_values: Vec<String>,
    /// Most rows in one batch, from [`csv_batch_rows`].
    batch_rows: usize,
    /// Data rows decoded so far.
    rows: u64,
}

impl Source {
    fn open(
        path: &Path,
        file: File,
        format: InputFormat,
        options: &CsvOptions,
    ) -> Result<Source, IngestError> {
        let arrow_error = |error| arrow_read_error(path, format, error);
        Ok(match format {
            InputFormat::Csv => Source::Csv(Box::new(open_csv(path, file, options)?)),
            InputFormat::Parquet => {
                // The parquet crate builds the schema by recursion: measure its depth from
                // the flat footer first, so a hostile file cannot overflow the stack.
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

    fn schema(&self) -> SchemaRef {
        match self {
            Source::Csv(csv) => csv.schema.clone(),
            Source::Parquet { schema, .. } => schema.clone(),
            Source::ArrowFile { reader, .. } => reader.schema(),
            Source::ArrowStream { reader, .. } => reader.schema(),
        }
    }

    /// The next batch, `None` at the end of the input.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, IngestError> {
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

/// Opens a Parquet file whose footer was checked, with top-level dictionaries read as their
/// values (see [`without_dictionaries`]).
fn open_parquet(path: &Path, file: File) -> Result<Source, IngestError> {
    let parquet_error = |error: parquet::errors::ParquetError| IngestError::Parquet {
        file: path.to_path_buf(),
        detail: error.to_string(),
    };
    let mut metadata =
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(parquet_error)?;
    let batch_rows = check_parquet_pages(path, &file, metadata.metadata())?;
    let schema = Arc::new(without_dictionaries(metadata.schema()));
    if schema != *metadata.schema() {
        let options = ArrowReaderOptions::new().with_schema(schema.clone());
        metadata = ArrowReaderMetadata::try_new(metadata.metadata().clone(), options)
            .map_err(parquet_error)?;
    }
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
    metadata: &parquet::file::metadata::ParquetMetaData,
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

/// The Parquet file's Arrow schema with top-level dictionary columns read as their value type.
/// Parquet dictionaries are per row group (a pandas categorical comes back as a different
/// dictionary in each), while an Arrow IPC file holds one dictionary per column, so keeping the
/// dictionary type would fail on any file with more than one row group.
fn without_dictionaries(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Dictionary(_, value) => field.as_ref().clone().with_data_type(*value.clone()),
            _ => field.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Infers the schema from the first [`CSV_INFER_RECORDS`] data rows (refusing a header with a
/// duplicate or empty column name), then opens a streaming reader over the whole file.
fn open_csv(path: &Path, file: File, options: &CsvOptions) -> Result<CsvSource, IngestError> {
    let mut reader = csv_reader(file);
    let mut record = csv::ByteRecord::new();
    let empty = |reason| IngestError::Empty {
        file: path.to_path_buf(),
        format: InputFormat::Csv,
        reason,
    };
    if !read_csv_record(path, &mut reader, &mut record)? {
        return Err(empty(EmptyReason::NoColumns));
    }
    let names = csv_header(path, &record)?;
    let mut inference = vec![Inference::default(); names.len()];
    let mut records = 0usize;
    while records < CSV_INFER_RECORDS && read_csv_record(path, &mut reader, &mut record)? {
        check_csv_record(path, &reader, &record, names.len())?;
        for (index, (column, raw)) in inference.iter_mut().zip(record.iter()).enumerate() {
            let value = csv_text(path, &record, index, raw)?;
            if !value.is_empty() && !options.null_values.iter().any(|null| null == value) {
                column.observe(value);
            }
        }
        records += 1;
    }
    if records == 0 {
        return Err(empty(EmptyReason::HeaderOnly));
    }
    let fields: Vec<Field> = names
        .into_iter()
        .zip(&inference)
        .map(|(name, column)| Field::new(name, column.data_type(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let record_bytes = reader.position().byte() / (records as u64 + 1);
    let batch_rows = csv_batch_rows(schema.fields().len(), record_bytes);

    let mut file = reader.into_inner().into_inner().into_inner();
    file.rewind().map_err(|e| io_error(path, "read", e))?;
    let mut reader = csv_reader(file);
    // The header again: it was checked above.
    read_csv_record(path, &mut reader, &mut record)?;
    Ok(CsvSource {
        path: path.to_path_buf(),
        schema,
        reader,
        record,
        null_values: options.null_values.clone(),
        batch_rows,
        rows: 0,
    })
}

/// A `csv` crate reader with the dialect arrow-csv and pyarrow use by default: comma, double
/// quote, quotes escaped by doubling, `\n` or `\r\n` line ends, blank lines skipped. Rows are
/// read flexibly so that a ragged row gets [`IngestError::RaggedCsv`] with its line.
fn csv_reader(file: File) -> csv::Reader<QuoteTracker<BufReader<File>>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(QuoteTracker::new(BufReader::with_capacity(
            READ_BUFFER,
            file,
        )))
}

/// Reads the next record; at the end of the input, refuses a quote that was never closed
/// (it would have swallowed the rest of the file into one field).
fn read_csv_record(
    path: &Path,
    reader: &mut csv::Reader<QuoteTracker<BufReader<File>>>,
    record: &mut csv::ByteRecord,
) -> Result<bool, IngestError> {
    let more = reader
        .read_byte_record(record)
        .map_err(|error| csv_crate_error(path, error))?;
    if !more && let Some(line) = reader.get_ref().unclosed_quote() {
        return Err(unclosed_quote(path, line));
    }
    Ok(more)
}

fn unclosed_quote(path: &Path, line: u64) -> IngestError {
    IngestError::Csv {
        file: path.to_path_buf(),
        line: Some(line),
        problem: "a quoted field opens on this line and is never closed, so it would swallow \
                  the rest of the file: close the quote (a quote inside a quoted field is \
                  written twice, `\"\"`)"
            .into(),
    }
}

fn csv_crate_error(path: &Path, error: csv::Error) -> IngestError {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => {
            match error
                .get_ref()
                .and_then(|e| e.downcast_ref::<RecordTooLong>())
            {
                Some(too_long) if too_long.in_quotes => IngestError::Csv {
                    file: path.to_path_buf(),
                    line: Some(too_long.line),
                    problem: format!(
                        "a quoted field opens on this line and runs on for over \
                         {MAX_CSV_RECORD_BYTES} bytes: most likely its quote is never closed; \
                         close it (a quote inside a quoted field is written twice, `\"\"`)"
                    ),
                },
                Some(too_long) => IngestError::Csv {
                    file: path.to_path_buf(),
                    line: Some(too_long.line),
                    problem: format!(
                        "the row starting on this line is over {MAX_CSV_RECORD_BYTES} bytes: \
                         split it, or publish the data as Parquet"
                    ),
                },
                None => io_error(path, "read", error),
            }
        }
        other => IngestError::Csv {
            file: path.to_path_buf(),
            line: None,
            problem: format!("{other:?}: check that the file is valid CSV"),
        },
    }
}

/// The column names of the header record: UTF-8 (a byte order mark dropped), none empty, none
/// twice; at most [`MAX_COLUMNS`] of them, checked before anything is kept per column.
fn csv_header(path: &Path, record: &csv::ByteRecord) -> Result<Vec<String>, IngestError> {
    bounds::check_count("the schema", record.len(), MAX_COLUMNS).map_err(|problem| {
        IngestError::OverLimit {
            file: path.to_path_buf(),
            problem,
        }
    })?;
    let line = || record_line(path, record.position().unwrap_or(&csv::Position::new()));
    let header_error = |problem: String| -> IngestError {
        match line() {
            Ok(line) => IngestError::Csv {
                file: path.to_path_buf(),
                line: Some(line),
                problem,
            },
            Err(error) => io_error(path, "read", error),
        }
    };
    let mut names: Vec<String> = Vec::with_capacity(record.len());
    for (index, raw) in record.iter().enumerate() {
        let raw = if index == 0 {
            raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(raw)
        } else {
            raw
        };
        let Ok(name) = std::str::from_utf8(raw) else {
            return Err(header_error(format!(
                "the name of column {} is not valid UTF-8: save the file with UTF-8 encoding",
                index + 1
            )));
        };
        if name.is_empty() {
            return Err(header_error(format!(
                "column {} of the header row has no name: give every column a name",
                index + 1
            )));
        }
        if let Some(first) = names.iter().position(|seen| seen == name) {
            return Err(header_error(format!(
                "column name `{}` is used twice (columns {} and {}): rename one so that \
                 every column has its own name",
                shorten(name),
                first + 1,
                index + 1
            )));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// Refuses a data record whose field count differs from the header's.
/// A record cut short by a quote never closed is reported as that quote.
fn check_csv_record(
    path: &Path,
    reader: &csv::Reader<QuoteTracker<BufReader<File>>>,
    record: &csv::ByteRecord,
    expected: usize,
) -> Result<(), IngestError> {
    if record.len() == expected {
        return Ok(());
    }
    if let Some(line) = reader.get_ref().unclosed_quote() {
        return Err(unclosed_quote(path, line));
    }
    let position = record
        .position()
        .cloned()
        .unwrap_or_else(csv::Position::new);
    Err(IngestError::RaggedCsv {
        file: path.to_path_buf(),
        line: record_line(path, &position).map_err(|e| io_error(path, "read", e))?,
        found: record.len(),
        expected,
    })
}

/// A field as text, or an error naming the line when it is not UTF-8.
fn csv_text<'a>(
    path: &Path,
    record: &csv::ByteRecord,
    index: usize,
    raw: &'a [u8],
) -> Result<&'a str, IngestError> {
    std::str::from_utf8(raw).map_err(|_| {
        csv_record_error(
            path,
            record,
            format!(
                "field {} is not valid UTF-8: save the file with UTF-8 encoding",
                index + 1
            ),
        )
    })
}

/// An [`IngestError::Csv`] at the line where `record` starts.
fn csv_record_error(path: &Path, record: &csv::ByteRecord, problem: String) -> IngestError {
    let position = record
        .position()
        .cloned()
        .unwrap_or_else(csv::Position::new);
    match record_line(path, &position) {
        Ok(line) => IngestError::Csv {
            file: path.to_path_buf(),
            line: Some(line),
            problem,
        },
        Err(error) => io_error(path, "read", error),
    }
}

/// What the values of one column seen so far could be. Inference follows pyarrow's order
/// (Int64, Boolean, Date32, Timestamp, Float64, else Utf8) over the values that are neither
/// empty nor a null marker; a column with no such value is Utf8.
#[derive(Debug, Clone, Default)]
struct Inference {
    /// Some value was seen.
    seen: bool,
    /// Some value is not a 64-bit integer.
    not_int: bool,
    /// Some value is not `true`/`false` (as `true`, `True`, `TRUE`).
    not_bool: bool,
    /// Some value is not a `YYYY-MM-DD` date.
    not_date: bool,
    /// Some value is not a number.
    not_float: bool,
    /// Some value is not a timestamp, or not of the same shape as the first one.
    not_timestamp: bool,
    /// The shape of the first timestamp: every other one must match it.
    shape: Option<TimestampShape>,
    /// Some timestamp has fractional seconds (the column is then in nanoseconds).
    fraction: bool,
    /// Some timestamp is outside the nanosecond range (years 1677 to 2262).
    beyond_nanos: bool,
}

impl Inference {
    fn observe(&mut self, value: &str) {
        self.seen = true;
        self.not_int = self.not_int || parse_int(value).is_none();
        self.not_bool = self.not_bool || parse_bool(value).is_none();
        self.not_date = self.not_date || parse_date(value).is_none();
        self.not_float = self.not_float || value.parse::<f64>().is_err();
        if !self.not_timestamp {
            match timestamp_shape(value) {
                Some((shape, fraction))
                    if self.shape.is_none_or(|first| first == shape)
                        && parse_timestamp(value, false).is_some() =>
                {
                    self.shape = Some(shape);
                    self.fraction |= fraction;
                    self.beyond_nanos |= parse_timestamp(value, true).is_none();
                    // Fractions need nanoseconds, which cannot hold every value: text.
                    self.not_timestamp = self.fraction && self.beyond_nanos;
                }
                _ => self.not_timestamp = true,
            }
        }
    }

    fn data_type(&self) -> DataType {
        if !self.seen {
            DataType::Utf8
        } else if !self.not_int {
            DataType::Int64
        } else if !self.not_bool {
            DataType::Boolean
        } else if !self.not_date {
            DataType::Date32
        } else if let (false, Some(shape)) = (self.not_timestamp, self.shape) {
            let unit = if self.fraction {
                TimeUnit::Nanosecond
            } else {
                TimeUnit::Second
            };
            DataType::Timestamp(unit, shape.zoned.then(|| "UTC".into()))
        } else if !self.not_float {
            DataType::Float64
        } else {
            DataType::Utf8
        }
    }
}

/// How a timestamp is written: a column is inferred as timestamps only when all its values are
/// written the same way, so that a mix of zoned and zone-less values, or of layouts, stays text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimestampShape {
    /// The byte between date and time, `T` or a space.
    separator: u8,
    /// Whether seconds are written.
    seconds: bool,
    /// Whether a zone (`Z`, `+hh:mm`, `+hhmm`) is written; such values are stored in UTC.
    zoned: bool,
}

/// The shape of `YYYY-MM-DD[T ]hh:mm[:ss[.f…]][Z|±hh:mm|±hhmm]`, and whether it has fractional
/// seconds; `None` for anything else.
fn timestamp_shape(value: &str) -> Option<(TimestampShape, bool)> {
    let b = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    if !(digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b' '))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16))
    {
        return None;
    }
    let mut rest = &b[16..];
    let seconds = rest.first() == Some(&b':') && rest.len() >= 3 && digits(17..19);
    let mut fraction = false;
    if seconds {
        rest = &rest[3..];
        if rest.first() == Some(&b'.') {
            let count = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if count == 0 || count > 9 {
                return None;
            }
            fraction = true;
            rest = &rest[1 + count..];
        }
    }
    let zone_digits = |z: &[u8]| z.iter().all(u8::is_ascii_digit);
    let zoned = match rest {
        [] => false,
        [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] | [b'+' | b'-', h1, h2, m1, m2] => {
            zone_digits(&[*h1, *h2, *m1, *m2])
        }
        _ => return None,
    };
    if !zoned && !rest.is_empty() {
        return None;
    }
    Some((
        TimestampShape {
            separator: b[10],
            seconds,
            zoned,
        },
        fraction,
    ))
}

/// A timestamp as seconds, or nanoseconds when `nanos`, since the epoch: zoned values at their
/// instant (UTC), zone-less ones at their wall-clock time read as UTC (Arrow's convention for a
/// timestamp without a zone). `None` when it does not parse or does not fit.
fn parse_timestamp(value: &str, nanos: bool) -> Option<i64> {
    let utc: Tz = "+00:00".parse().ok()?;
    let time = string_to_datetime(&utc, value).ok()?;
    if nanos {
        time.timestamp_nanos_opt()
    } else {
        Some(time.timestamp())
    }
}

/// A whole number as pyarrow reads one: an optional `-` and digits (leading zeros allowed).
fn parse_int(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// `true`/`false` as pyarrow reads them: all lower case, capitalised or all upper case.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A `YYYY-MM-DD` date as days since the epoch.
fn parse_date(value: &str) -> Option<i32> {
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    Date32Type::parse(value)
}

/// One column of the batch being built.
enum ColumnBuilder {
    /// Int64 values.
    Int(Int64Builder),
    /// Float64 values.
    Float(Float64Builder),
    /// Boolean values.
    Bool(BooleanBuilder),
    /// Date32 values.
    Date(Date32Builder),
    /// Timestamps in seconds or nanoseconds (`nanos`) with the column's zone; `shape` is how
    /// every value must be written.
    Timestamp {
        /// Raw values; typed by `data_type` when the batch is finished.
        builder: Int64Builder,
        /// The column's type (unit and zone).
        data_type: DataType,
        /// Whether values are nanoseconds.
        nanos: bool,
    },
    /// Text.
    Utf8(StringBuilder),
}

impl ColumnBuilder {
    fn new(data_type: &DataType, rows: usize) -> ColumnBuilder {
        match data_type {
            DataType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(rows)),
            DataType::Float64 => ColumnBuilder::Float(Float64Builder::with_capacity(rows)),
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            DataType::Date32 => ColumnBuilder::Date(Date32Builder::with_capacity(rows)),
            DataType::Timestamp(unit, _) => ColumnBuilder::Timestamp {
                builder: Int64Builder::with_capacity(rows),
                data_type: data_type.clone(),
                nanos: *unit == TimeUnit::Nanosecond,
            },
            _ => ColumnBuilder::Utf8(StringBuilder::new()),
        }
    }

    /// Appends one field; `false` when it does not fit the column's type.
    fn append(&mut self, value: &str, null: bool) -> bool {
        if let ColumnBuilder::Utf8(builder) = self {
            if null {
                builder.append_null();
            } else {
                builder.append_value(value);
            }
            return true;
        }
        if null || value.is_empty() {
            match self {
                ColumnBuilder::Int(b) => b.append_null(),
                ColumnBuilder::Float(b) => b.append_null(),
                ColumnBuilder::Bool(b) => b.append_null(),
                ColumnBuilder::Date(b) => b.append_null(),
                ColumnBuilder::Timestamp { builder, .. } => builder.append_null(),
                ColumnBuilder::Utf8(b) => b.append_null(),
            }
            return true;
        }
        match self {
            ColumnBuilder::Int(b) => parse_int(value).map(|v| b.append_value(v)).is_some(),
            ColumnBuilder::Float(b) => value.parse().map(|v| b.append_value(v)).is_ok(),
            ColumnBuilder::Bool(b) => parse_bool(value).map(|v| b.append_value(v)).is_some(),
            ColumnBuilder::Date(b) => parse_date(value).map(|v| b.append_value(v)).is_some(),
            ColumnBuilder::Timestamp {
                builder,
                data_type,
                nanos,
            } => {
                let zoned = matches!(data_type, DataType::Timestamp(_, Some(_)));
                match timestamp_shape(value) {
                    Some((shape, fraction)) if shape.zoned == zoned && (*nanos || !fraction) => {
                        parse_timestamp(value, *nanos)
                            .map(|v| builder.append_value(v))
                            .is_some()
                    }
                    _ => false,
                }
            }
            ColumnBuilder::Utf8(_) => true,
        }
    }

    fn finish(self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp {
                mut builder,
                data_type,
                ..
            } => arrow::compute::cast(&builder.finish(), &data_type)?,
            ColumnBuilder::Utf8(mut b) => Arc::new(b.finish()),
        })
    }
}

impl CsvSource {
    /// Decodes up to `batch_rows` records, fewer once they took [`CSV_BATCH_BYTES`] of the
    /// input; `None` at the end of the input.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, IngestError> {
        let fields = self.schema.fields();
        let mut columns: Vec<ColumnBuilder> = fields
            .iter()
            .map(|field| ColumnBuilder::new(field.data_type(), self.batch_rows))
            .collect();
        let mut rows = 0usize;
        // Where the reader stands: the end of the last record read (blank lines included).
        let starts_at = self.reader.position().byte();
        while rows < self.batch_rows
            && read_csv_record(&self.path, &mut self.reader, &mut self.record)?
        {
            let record = &self.record;
            check_csv_record(&self.path, &self.reader, record, fields.len())?;
            let cells = columns.iter_mut().zip(fields).zip(record.iter());
            for (index, ((builder, field), raw)) in cells.enumerate() {
                let value = csv_text(&self.path, record, index, raw)?;
                let null = self.null_values.iter().any(|null| null == value);
                if !builder.append(value, null) {
                    return Err(csv_record_error(
                        &self.path,
                        record,
                        format!(
                            "column `{}` holds `{}`, but the first {CSV_INFER_RECORDS} data rows \
                             made it a column of {}: fix that value, or put a row with such a \
                             value among the first {CSV_INFER_RECORDS} data rows so the column \
                             gets a wider type",
                            field.name(),
                            shorten(value),
                            describe_type(field.data_type()),
                        ),
                    ));
                }
            }
            rows += 1;
            if self.reader.position().byte() - starts_at >= CSV_BATCH_BYTES {
                break;
            }
        }
        if rows == 0 {
            return Ok(None);
        }
        self.rows += rows as u64;
        let arrays = columns
            .into_iter()
            .map(ColumnBuilder::finish)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|arrays| RecordBatch::try_new(self.schema.clone(), arrays))
            .map_err(|error| IngestError::Csv {
                file: self.path.clone(),
                line: None,
                problem: format!("{error}: check that the file is valid CSV"),
            })?;
        Ok(Some(arrays))
    }
}

/// Rows per CSV batch: [`BATCH_ROWS`], fewer when rows are wide (many columns) or long (many
/// bytes, judging by the inference prefix), so one batch stays within tens of MiB.
fn csv_batch_rows(columns: usize, record_bytes: u64) -> usize {
    let by_cells = CSV_BATCH_CELLS / columns.max(1);
    let by_bytes = usize::try_from(CSV_BATCH_BYTES / record_bytes.max(1)).unwrap_or(usize::MAX);
    BATCH_ROWS.min(by_cells).min(by_bytes).max(1)
}

/// The physical line where the record read from `position` starts. The `csv` crate records the
/// position before it skips the line breaks of blank lines (and the `\n` of a `\r\n` that ended
/// the previous record), so count those.
fn record_line(path: &Path, position: &csv::Position) -> io::Result<u64> {
    let mut file = File::open(path)?;
    file.seek(io::SeekFrom::Start(position.byte()))?;
    let mut line = position.line();
    for byte in BufReader::new(file).bytes() {
        match byte? {
            b'\n' => line += 1,
            b'\r' => {}
            _ => break,
        }
    }
    Ok(line)
}

/// Words for a column type in an error message.
fn describe_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "true/false values (Boolean)".into(),
        DataType::Int64 => "whole numbers (Int64)".into(),
        DataType::Float64 => "numbers (Float64)".into(),
        DataType::Date32 => "dates like 2024-01-31 (Date32)".into(),
        DataType::Timestamp(..) => "timestamps like 2024-01-31T12:00:00 (Timestamp)".into(),
        other => format!("{other}"),
    }
}

/// A value cut to a length that fits in a one-line message.
fn shorten(value: &str) -> String {
    const MAX_CHARS: usize = 60;
    if value.chars().count() <= MAX_CHARS {
        value.to_string()
    } else {
        let cut: String = value.chars().take(MAX_CHARS).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod soak;

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{
        Array, ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array,
        StringArray,
    };
    use arrow::datatypes::{Fields, Int32Type};
    use arrow::ipc::writer::StreamWriter;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use std::collections::HashMap;
    use std::process::Command;
    use tempfile::TempDir;

    /// The CSV that exercises quoting, unicode, nulls and type inference.
    const TRICKY_CSV: &str = concat!(
        "id,name,score,qty,flag,note\n",
        "1,\"Smith, John\",1.5,10,true,\"He said \"\"hi\"\"\"\n",
        "2,José,2,,false,\"line one\nline two\"\n",
        "3,中文,,7,,😀 emoji\n",
        ",\"\",3.25,-4,TRUE,\n",
        "5,plain,-0.5,0,false,\"a,b,\"\"c\"\"\"\n",
    );

    fn write_input(dir: &TempDir, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    /// Reads an Arrow IPC file back into one batch (tests use small files).
    fn read_back(path: &Path) -> (SchemaRef, RecordBatch, usize) {
        let reader = FileReader::try_new_buffered(File::open(path).unwrap(), None).unwrap();
        let schema = reader.schema();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
        (schema, all, batches.len())
    }

    fn ingest_ok(dir: &TempDir, input: &Path) -> (IngestOutcome, RecordBatch, PathBuf) {
        let output = dir.path().join("out.arrow.partial");
        let outcome = ingest_file(input, &output).unwrap();
        let (schema, batch, batches) = read_back(&output);
        assert_eq!(schema, outcome.schema);
        assert_eq!(batch.num_rows() as u64, outcome.rows);
        assert_eq!(batches as u64, outcome.batches);
        (outcome, batch, output)
    }

    fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
        batch
            .column_by_name(name)
            .unwrap()
            .as_any()
            .downcast_ref::<T>()
            .unwrap()
    }

    fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        column::<StringArray>(batch, name)
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn csv_keeps_quotes_unicode_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(&dir, "tricky.csv", TRICKY_CSV.as_bytes());
        let (outcome, batch, _) = ingest_ok(&dir, &input);

        let types: Vec<(&str, &DataType, bool)> = outcome
            .schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type(), f.is_nullable()))
            .collect();
        assert_eq!(
            types,
            [
                ("id", &DataType::Int64, true),
                ("name", &DataType::Utf8, true),
                ("score", &DataType::Float64, true),
                ("qty", &DataType::Int64, true),
                ("flag", &DataType::Boolean, true),
                ("note", &DataType::Utf8, true),
            ]
        );
        assert_eq!(outcome.rows, 5);
        assert_eq!(outcome.batches, 1);

        let ids: Vec<Option<i64>> = column::<Int64Array>(&batch, "id").iter().collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3), None, Some(5)]);
        assert_eq!(
            strings(&batch, "name"),
            [s("Smith, John"), s("José"), s("中文"), s(""), s("plain")]
        );
        let scores: Vec<Option<f64>> = column::<Float64Array>(&batch, "score").iter().collect();
        assert_eq!(scores, [Some(1.5), Some(2.0), None, Some(3.25), Some(-0.5)]);
        let qty: Vec<Option<i64>> = column::<Int64Array>(&batch, "qty").iter().collect();
        assert_eq!(qty, [Some(10), None, Some(7), Some(-4), Some(0)]);
        let flags: Vec<Option<bool>> = column::<BooleanArray>(&batch, "flag").iter().collect();
        assert_eq!(
            flags,
            [Some(true), Some(false), None, Some(true), Some(false)]
        );
        assert_eq!(
            strings(&batch, "note"),
            [
                s("He said \"hi\""),
                s("line one\nline two"),
                s("😀 emoji"),
                s(""),
                s("a,b,\"c\"")
            ]
        );
    }

    #[test]
    fn csv_with_crlf_and_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(
            &dir,
            "excel.csv",
            "\u{feff}id,city\r\n1,Zürich\r\n2,\"Paris\r\nFrance\"\r\n".as_bytes(),
        );
        let (outcome, batch, _) = ingest_ok(&dir, &input);
        assert_eq!(outcome.schema.field(0).name(), "id");
        assert_eq!(strings(&batch, "city"), [s("Zürich"), s("Paris\r\nFrance")]);
    }

    #[test]
    fn csv_all_empty_column_becomes_nullable_utf8_of_empty_strings() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(&dir, "nulls.csv", b"a,b\n1,\n2,\n");
        let (outcome, batch, _) = ingest_ok(&dir, &input);
        let b = outcome.schema.field_with_name("b").unwrap();
        assert_eq!(b.data_type(), &DataType::Utf8);
        assert!(b.is_nullable());
        assert_eq!(strings(&batch, "b"), [s(""), s("")]);
    }

    fn ingest_with(
        dir: &TempDir,
        csv: &str,
        null_values: &[&str],
    ) -> Result<(SchemaRef, RecordBatch), IngestError> {
        let input = write_input(dir, "in.csv", csv.as_bytes());
        let output = dir.path().join("in.arrow.partial");
        let options = CsvOptions {
            null_values: null_values.iter().map(|v| v.to_string()).collect(),
        };
        match ingest_file_with(&input, &output, &options) {
            Ok(_) => {
                let (schema, batch, _) = read_back(&output);
                Ok((schema, batch))
            }
            Err(error) => {
                assert!(!output.exists(), "{error}");
                Err(error)
            }
        }
    }

    #[test]
    fn empty_strings_stay_strings_and_nulls_need_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "t,n,u\nx,1,NA\n,,null\n\"\",\"\",\nNA,NA,N/A\n";
        // Without markers, `NA` makes `n` text; empty text fields are empty strings.
        let (schema, batch) = ingest_with(&dir, csv, &[]).unwrap();
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
        assert_eq!(strings(&batch, "t"), [s("x"), s(""), s(""), s("NA")]);
        assert_eq!(strings(&batch, "n"), [s("1"), s(""), s(""), s("NA")]);
        assert_eq!(strings(&batch, "u"), [s("NA"), s("null"), s(""), s("N/A")]);
        // With markers, they are null everywhere; empty number fields are null too.
        let (schema, batch) = ingest_with(&dir, csv, &["NA", "null"]).unwrap();
        assert_eq!(schema.field(1).data_type(), &DataType::Int64);
        let n: Vec<Option<i64>> = column::<Int64Array>(&batch, "n").iter().collect();
        assert_eq!(n, [Some(1), None, None, None]);
        assert_eq!(strings(&batch, "t"), [s("x"), s(""), s(""), None]);
        assert_eq!(strings(&batch, "u"), [None, None, s(""), s("N/A")]);
    }

    #[test]
    fn zoned_timestamps_keep_their_instant_and_mixed_ones_stay_text() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "z,o,naive,frac,mixed,dates,both\n\
                   2024-12-31T00:00:00Z,2024-12-31T00:00:00+02:00,2024-12-31 00:00:00,\
                   2024-12-31T00:00:00.5,2024-12-31T00:00:00Z,2024-12-31,2024-12-31\n\
                   ,2024-12-31T01:00:00-0130,,2024-12-31T00:00:01,2024-12-31T00:00:00,\
                   2025-01-01,2024-12-31T00:00:00\n";
        let (schema, batch) = ingest_with(&dir, csv, &[]).unwrap();
        let utc = Some("UTC".into());
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Timestamp(TimeUnit::Second, utc.clone()),
                DataType::Timestamp(TimeUnit::Second, utc),
                DataType::Timestamp(TimeUnit::Second, None),
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                DataType::Utf8,
                DataType::Date32,
                DataType::Utf8,
            ]
        );
        let seconds = |name: &str| -> Vec<Option<i64>> {
            let array = arrow::compute::cast(batch.column_by_name(name).unwrap(), &DataType::Int64)
                .unwrap();
            array
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .iter()
                .collect()
        };
        assert_eq!(seconds("z"), [Some(1_735_603_200), None]);
        assert_eq!(seconds("o"), [Some(1_735_596_000), Some(1_735_612_200)]);
        assert_eq!(seconds("naive"), [Some(1_735_603_200), None]);
        assert_eq!(
            seconds("frac"),
            [
                Some(1_735_603_200_500_000_000),
                Some(1_735_603_201_000_000_000)
            ]
        );
        assert_eq!(
            strings(&batch, "mixed"),
            [s("2024-12-31T00:00:00Z"), s("2024-12-31T00:00:00")]
        );
    }

    #[test]
    fn fractional_timestamps_beyond_the_nanosecond_range_stay_text() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "t\n1600-01-01T00:00:00\n2024-12-31T00:00:00.5\n";
        let (schema, batch) = ingest_with(&dir, csv, &[]).unwrap();
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert_eq!(
            strings(&batch, "t"),
            [s("1600-01-01T00:00:00"), s("2024-12-31T00:00:00.5")]
        );
        let (schema, _) = ingest_with(&dir, "t\n1600-01-01T00:00:00\n", &[]).unwrap();
        assert_eq!(
            schema.field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Second, None)
        );
    }

    #[test]
    fn leading_zeros_and_extreme_integers_match_pyarrow() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "z,big,f\n007,-9223372036854775808,1e3\n010,9223372036854775807,inf\n";
        let (schema, batch) = ingest_with(&dir, csv, &[]).unwrap();
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        let z: Vec<Option<i64>> = column::<Int64Array>(&batch, "z").iter().collect();
        assert_eq!(z, [Some(7), Some(10)]);
        let big: Vec<Option<i64>> = column::<Int64Array>(&batch, "big").iter().collect();
        assert_eq!(big, [Some(i64::MIN), Some(i64::MAX)]);
        let f: Vec<Option<f64>> = column::<Float64Array>(&batch, "f").iter().collect();
        assert_eq!(f, [Some(1000.0), Some(f64::INFINITY)]);
        // One past i64::MAX is a float, as in pyarrow.
        let (schema, _) = ingest_with(&dir, "a\n9223372036854775808\n", &[]).unwrap();
        assert_eq!(schema.field(0).data_type(), &DataType::Float64);
    }

    #[test]
    fn bad_headers_and_unclosed_quotes_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, u64, &str); 5] = [
            (
                "a,b,a\n1,2,3\n",
                1,
                "column name `a` is used twice (columns 1 and 3)",
            ),
            (
                "\n\na,,c\n1,2,3\n",
                3,
                "column 2 of the header row has no name",
            ),
            ("a,b\n1,2\n3,\"x\n4,5\n6,7\n", 3, "never closed"),
            ("a,b,c\n1,2,3\n4,\"x,5\n6,7,8\n", 3, "never closed"),
            ("a\n1\n\"open", 3, "never closed"),
        ];
        for (csv, want_line, want) in cases {
            match ingest_with(&dir, csv, &[]) {
                Err(IngestError::Csv {
                    line: Some(line),
                    problem,
                    ..
                }) => {
                    assert_eq!(line, want_line, "{csv:?}");
                    assert!(problem.contains(want), "{csv:?}: {problem}");
                }
                other => panic!("{csv:?}: expected a Csv error, got {other:?}"),
            }
        }
        // A closed quote at the very end, and a quote inside an unquoted field, are fine.
        let (_, batch) = ingest_with(&dir, "a,b\n1,\"x\"\"\"\n2,5\"\n", &[]).unwrap();
        assert_eq!(strings(&batch, "b"), [s("x\""), s("5\"")]);
    }

    #[test]
    fn an_unclosed_quote_in_a_large_file_is_refused_before_it_fills_memory() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        let mut out = BufWriter::new(File::create(&input).unwrap());
        out.write_all(b"a,b\n1,2\n3,\"open\n").unwrap();
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..=MAX_CSV_RECORD_BYTES / (1024 * 1024) {
            out.write_all(&line).unwrap();
            out.write_all(b"\n").unwrap();
        }
        drop(out);
        let output = dir.path().join("in.arrow.partial");
        match ingest_file(&input, &output) {
            Err(IngestError::Csv {
                line: Some(3),
                problem,
                ..
            }) => assert!(problem.contains("runs on for over"), "{problem}"),
            other => panic!("expected a Csv error on line 3, got {other:?}"),
        }
        assert!(!output.exists());
    }

    #[test]
    fn null_markers_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let many: Vec<String> = (0..=MAX_NULL_VALUES).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(ingest_with(&dir, "a\n1\n", &many).is_err());
        let long = "x".repeat(MAX_NULL_VALUE_LEN + 1);
        assert!(ingest_with(&dir, "a\n1\n", &[&long]).is_err());
    }

    #[test]
    fn csv_large_input_is_split_into_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("n,label\n");
        for i in 0..150_000 {
            csv.push_str(&format!("{i},row {i}\n"));
        }
        let input = write_input(&dir, "big.csv", csv.as_bytes());
        let (outcome, batch, _) = ingest_ok(&dir, &input);
        assert_eq!(outcome.rows, 150_000);
        assert_eq!(outcome.batches, 3);
        let n = column::<Int64Array>(&batch, "n");
        assert_eq!(n.value(149_999), 149_999);
    }

    #[test]
    fn csv_batch_rows_shrink_for_wide_or_long_rows() {
        assert_eq!(csv_batch_rows(5, 40), BATCH_ROWS);
        assert_eq!(csv_batch_rows(1000, 4000), CSV_BATCH_CELLS / 1000);
        assert_eq!(csv_batch_rows(2, 1024 * 1024), 32);
        assert_eq!(csv_batch_rows(1, u64::MAX), 1);
    }

    /// 10,000 short rows make the inference prefix promise short records; the long rows after
    /// them must still be cut into batches of about [`CSV_BATCH_BYTES`], not one batch of all.
    #[test]
    fn long_rows_after_short_ones_still_get_batches_of_bounded_bytes() {
        const SHORT: usize = 10_000;
        const LONG: usize = 20;
        const NOTE_BYTES: usize = 8 * 1024 * 1024;
        let long_note = |i: usize| {
            let mut note = format!("{i}:");
            note.push_str(&"x".repeat(NOTE_BYTES - note.len()));
            note
        };
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("long.csv");
        let mut out = BufWriter::new(File::create(&input).unwrap());
        writeln!(out, "id,note").unwrap();
        for i in 0..SHORT {
            writeln!(out, "{i},short {i}").unwrap();
        }
        for i in SHORT..SHORT + LONG {
            writeln!(out, "{i},{}", long_note(i)).unwrap();
        }
        out.into_inner().unwrap().sync_all().unwrap();
        // Judged by the prefix (records of about a dozen bytes), a batch may take every row.
        assert_eq!(csv_batch_rows(2, 16), BATCH_ROWS);

        let output = dir.path().join("long.arrow.partial");
        let outcome = ingest_file(&input, &output).unwrap();
        assert_eq!(outcome.rows, (SHORT + LONG) as u64);
        let reader = FileReader::try_new_buffered(File::open(&output).unwrap(), None).unwrap();
        let mut next = 0usize;
        let mut batches = 0u64;
        for batch in reader {
            let batch = batch.unwrap();
            batches += 1;
            let notes = column::<StringArray>(&batch, "note");
            let offsets = notes.value_offsets();
            let note_bytes = (offsets[offsets.len() - 1] - offsets[0]) as u64;
            assert!(
                note_bytes < 2 * CSV_BATCH_BYTES,
                "batch {batches} holds {note_bytes} bytes of notes in {} rows",
                batch.num_rows()
            );
            let ids = column::<Int64Array>(&batch, "id");
            for row in 0..batch.num_rows() {
                assert_eq!(ids.value(row), next as i64);
                if next < SHORT {
                    assert_eq!(notes.value(row), format!("short {next}"));
                } else {
                    assert!(notes.value(row) == long_note(next), "note of row {next}");
                }
                next += 1;
            }
        }
        assert_eq!(next, SHORT + LONG);
        assert_eq!(batches, outcome.batches);
    }

    #[test]
    fn ragged_rows_give_the_physical_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, u64, usize, usize); 4] = [
            ("a,b,c\n1,2,3\n4,5,6,7\n", 3, 4, 3),
            ("a,b\n1,\"x\ny\"\n2\n", 4, 1, 2),
            ("a,b\n\n1,2\n\n3,4,5\n", 5, 3, 2),
            ("a,b\r\n\r\n1,2,3\r\n", 3, 3, 2),
        ];
        for (csv, want_line, want_found, want_expected) in cases {
            let input = write_input(&dir, "ragged.csv", csv.as_bytes());
            let output = dir.path().join("ragged.arrow.partial");
            match ingest_file(&input, &output) {
                Err(IngestError::RaggedCsv {
                    line,
                    found,
                    expected,
                    ..
                }) => assert_eq!(
                    (line, found, expected),
                    (want_line, want_found, want_expected),
                    "{csv:?}"
                ),
                other => panic!("{csv:?}: expected RaggedCsv, got {other:?}"),
            }
            assert!(!output.exists());
        }
    }

    #[test]
    fn ragged_row_after_the_inference_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("a,b\n");
        for i in 0..15_000 {
            csv.push_str(&format!("{i},{i}\n"));
        }
        csv.push_str("1,2,3\n");
        let input = write_input(&dir, "late.csv", csv.as_bytes());
        let output = dir.path().join("late.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(
                error,
                IngestError::RaggedCsv {
                    line: 15_002,
                    found: 3,
                    expected: 2,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "CSV `{}` line 15002 has 3 fields but the header has 2: fix the row or quote \
                 fields that contain commas",
                input.display()
            )
        );
        assert!(!output.exists());
    }

    #[test]
    fn type_mismatch_after_the_prefix_is_a_clear_error_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("n,label\n");
        for i in 0..20_000 {
            csv.push_str(&format!("{i},\"multi\nline {i}\"\n"));
        }
        csv.push_str("abc,last\n");
        let input = write_input(&dir, "mismatch.csv", csv.as_bytes());
        let output = dir.path().join("mismatch.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        // Each data row spans two lines, so the bad row starts on line 1 + 2 * 20000 + 1.
        match &error {
            IngestError::Csv { line, problem, .. } => {
                assert_eq!(*line, Some(40_002));
                assert!(problem.contains("column `n` holds `abc`"), "{problem}");
                assert!(problem.contains("whole numbers (Int64)"), "{problem}");
            }
            other => panic!("expected Csv, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.starts_with(&format!("CSV `{}` line 40002: ", input.display())));
        assert!(message.contains("fix that value"), "{message}");
        assert!(!output.exists());
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(&dir, "latin1.csv", b"a,b\n1,ok\n2,caf\xe9\n");
        let output = dir.path().join("latin1.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        match &error {
            IngestError::Csv { line, problem, .. } => {
                assert_eq!(*line, Some(3));
                assert!(problem.contains("UTF-8"), "{problem}");
            }
            other => panic!("expected Csv, got {other:?}"),
        }
        assert!(!output.exists());
    }

    #[test]
    fn empty_inputs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.arrow.partial");
        let cases: [(&str, &[u8], EmptyReason); 4] = [
            ("empty.csv", b"", EmptyReason::NoBytes),
            ("header.csv", b"a,b,c\n", EmptyReason::HeaderOnly),
            ("blank.csv", b"\n\n", EmptyReason::NoColumns),
            ("empty.parquet", b"", EmptyReason::NoBytes),
        ];
        for (name, contents, want) in cases {
            let input = write_input(&dir, name, contents);
            match ingest_file(&input, &output) {
                Err(IngestError::Empty { reason, .. }) => assert_eq!(reason, want, "{name}"),
                other => panic!("{name}: expected Empty, got {other:?}"),
            }
            assert!(!output.exists());
        }
        let input = dir.path().join("empty.csv");
        assert_eq!(
            ingest_file(&input, &output).unwrap_err().to_string(),
            format!(
                "input file `{}` is empty: a CSV needs a header row and at least one data row",
                input.display()
            )
        );
    }

    #[test]
    fn missing_directory_and_unsupported_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.arrow.partial");

        let missing = dir.path().join("nope.csv");
        let error = ingest_file(&missing, &output).unwrap_err();
        assert!(matches!(error, IngestError::NotFound { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "input file `{}` does not exist: check the path",
                missing.display()
            )
        );
        let error = InputFormat::detect(&dir.path().join("nope.arrow")).unwrap_err();
        assert!(matches!(error, IngestError::NotFound { .. }), "{error:?}");

        let error = ingest_file(dir.path(), &output).unwrap_err();
        assert!(matches!(error, IngestError::NotAFile { .. }), "{error:?}");

        let xlsx = write_input(&dir, "book.xlsx", b"PK");
        let error = ingest_file(&xlsx, &output).unwrap_err();
        match &error {
            IngestError::UnsupportedExtension { extension, .. } => assert_eq!(extension, "xlsx"),
            other => panic!("expected UnsupportedExtension, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains("`.xlsx`"), "{message}");
        assert!(
            message.contains(".csv") && message.contains(".parquet"),
            "{message}"
        );

        let bare = write_input(&dir, "data", b"a\n1\n");
        let error = ingest_file(&bare, &output).unwrap_err();
        assert!(error.to_string().contains("has no extension"), "{error}");
        assert!(!output.exists());
    }

    #[test]
    fn unwritable_output_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(&dir, "ok.csv", b"a\n1\n");
        let output = dir.path().join("no-such-dir").join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(
                error,
                IngestError::Io {
                    action: "create",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    /// A schema with metadata and types CSV never produces, to see that it survives.
    fn sample_batch() -> RecordBatch {
        let schema = Schema::new_with_metadata(
            vec![
                Field::new("id", DataType::Int32, false)
                    .with_metadata(HashMap::from([("unit".to_string(), "count".to_string())])),
                Field::new("name", DataType::Utf8, true),
                Field::new("price", DataType::Float64, true),
            ],
            HashMap::from([("origin".to_string(), "test".to_string())]),
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
            Arc::new(StringArray::from(vec![
                Some("é"),
                None,
                Some("中文"),
                Some(""),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(1.5),
                Some(2.0),
                None,
                Some(-3.0),
            ])),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    fn assert_same_data(expected: &RecordBatch, actual: &RecordBatch) {
        assert_eq!(expected.num_rows(), actual.num_rows());
        for (want, got) in expected.columns().iter().zip(actual.columns()) {
            assert_eq!(want.to_data(), got.to_data());
        }
    }

    #[test]
    fn parquet_round_trips_with_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let batch = sample_batch();
        let input = dir.path().join("sample.PQ");
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut writer = ArrowWriter::try_new(
            File::create(&input).unwrap(),
            batch.schema(),
            Some(properties),
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

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
        let input = write_input(&dir, "broken.parquet", b"not parquet at all");
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(matches!(error, IngestError::Parquet { .. }), "{error:?}");
        assert!(error.to_string().contains("broken.parquet"), "{error}");
        assert!(!output.exists());
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
        let input = write_input(&dir, "cut.arrows", &bytes);
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        // The walk before the reader finds the last body cut short.
        assert!(
            matches!(&error, IngestError::ArrowBounds { problem, .. } if problem.contains("bytes follow")),
            "{error:?}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn input_change_compares_every_part_of_the_stamp() {
        use InputChange::*;
        let opened_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let later = opened_at + std::time::Duration::from_millis(4);
        let before = InputStamp {
            len: 100,
            modified: Some(opened_at),
            status_changed: Some((1_700_000_000, 0)),
            identity: Some((1, 42)),
        };
        let cases: [(&str, Option<InputStamp>, Option<InputChange>); 10] = [
            ("unchanged", Some(before), None),
            ("removed", None, Some(Removed)),
            (
                "renamed over, same length and times",
                Some(InputStamp {
                    identity: Some((1, 43)),
                    ..before
                }),
                Some(Replaced),
            ),
            (
                "on another device",
                Some(InputStamp {
                    identity: Some((2, 42)),
                    ..before
                }),
                Some(Replaced),
            ),
            (
                "renamed over, longer",
                Some(InputStamp {
                    len: 200,
                    identity: Some((1, 43)),
                    ..before
                }),
                Some(Replaced),
            ),
            (
                "appended to",
                Some(InputStamp {
                    len: 120,
                    modified: Some(later),
                    status_changed: Some((1_700_000_000, 4_000_000)),
                    ..before
                }),
                Some(Resized {
                    before: 100,
                    after: 120,
                }),
            ),
            (
                "truncated",
                Some(InputStamp { len: 0, ..before }),
                Some(Resized {
                    before: 100,
                    after: 0,
                }),
            ),
            (
                "rewritten in place, same length",
                Some(InputStamp {
                    modified: Some(later),
                    ..before
                }),
                Some(Modified),
            ),
            (
                "rewritten with its modification time set back",
                Some(InputStamp {
                    status_changed: Some((1_700_000_001, 0)),
                    ..before
                }),
                Some(Modified),
            ),
            (
                "modification time no longer reported",
                Some(InputStamp {
                    modified: None,
                    ..before
                }),
                Some(Modified),
            ),
        ];
        for (what, after, want) in cases {
            assert_eq!(input_change(&before, after.as_ref()), want, "{what}");
        }
        // Where the platform reports neither inodes nor status change times.
        let bare = InputStamp {
            identity: None,
            status_changed: None,
            ..before
        };
        let written = InputStamp {
            modified: Some(later),
            ..bare
        };
        assert_eq!(input_change(&bare, Some(&bare)), None);
        assert_eq!(input_change(&bare, Some(&written)), Some(Modified));

        let words = [
            (Removed, "it was removed"),
            (Replaced, "another file was put in its place"),
            (
                Resized {
                    before: 100,
                    after: 120,
                },
                "its size went from 100 to 120 bytes",
            ),
            (Modified, "it was written to"),
        ];
        for (change, want) in words {
            assert_eq!(change.to_string(), want);
        }
    }

    /// Opens `input` as [`ingest_file_tracked`] does, stamp included.
    fn open_input(input: &Path) -> Opened {
        let file = File::open(input).unwrap();
        let stamp = InputStamp::of(&file.metadata().unwrap());
        Opened {
            file,
            stamp,
            format: InputFormat::detect(input).unwrap(),
        }
    }

    /// How a test input changes after it was opened.
    #[derive(Debug, Clone, Copy)]
    enum Mutation {
        /// A writer appends these bytes.
        Append(&'static [u8]),
        /// Same bytes, but the modification time is set (to a time long past).
        Touch,
        /// A copy of it is renamed over its path (Unix: the inode changes).
        #[cfg(unix)]
        Replace,
    }

    impl Mutation {
        /// Changes `path`, `len` bytes long, and returns the change ingest should report.
        fn apply(self, path: &Path, len: u64) -> InputChange {
            match self {
                Mutation::Append(bytes) => {
                    let mut file = File::options().append(true).open(path).unwrap();
                    file.write_all(bytes).unwrap();
                    InputChange::Resized {
                        before: len,
                        after: len + bytes.len() as u64,
                    }
                }
                Mutation::Touch => {
                    let past = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
                    let file = File::options().append(true).open(path).unwrap();
                    file.set_modified(past).unwrap();
                    InputChange::Modified
                }
                #[cfg(unix)]
                Mutation::Replace => {
                    let copy = path.with_extension("copy");
                    fs::copy(path, &copy).unwrap();
                    fs::rename(&copy, path).unwrap();
                    InputChange::Replaced
                }
            }
        }
    }

    /// The input is changed after it was opened and before ingest reads it: whichever format,
    /// and whether the read itself succeeds or not, ingest reports the change and removes the
    /// output. Each input unchanged goes through first, so that the change is what fails.
    #[test]
    fn an_input_that_changes_while_it_is_read_is_refused_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let batch = sample_batch();
        let mut parquet = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut parquet, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let mut arrow_file = Vec::new();
        let mut writer = FileWriter::try_new(&mut arrow_file, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let mut arrow_stream = Vec::new();
        let mut writer = StreamWriter::try_new(&mut arrow_stream, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();

        let mut cases: Vec<(&str, Vec<u8>, Mutation)> = vec![
            // A writer still appending: `3,12345` cut to `3,12` still parses.
            (
                "appended.csv",
                b"id,n\n1,10\n2,20\n".to_vec(),
                Mutation::Append(b"3,12"),
            ),
            // A row cut to one field: the read fails, and the change is what is reported.
            ("cut.csv", b"a,b\n1,2\n".to_vec(), Mutation::Append(b"3")),
            ("touched.csv", b"a,b\n1,2\n".to_vec(), Mutation::Touch),
            ("touched.parquet", parquet, Mutation::Touch),
            ("touched.arrow", arrow_file, Mutation::Touch),
            ("touched.arrows", arrow_stream, Mutation::Touch),
        ];
        #[cfg(unix)]
        cases.push(("replaced.csv", b"a,b\n1,2\n".to_vec(), Mutation::Replace));

        let options = CsvOptions::default();
        let output = dir.path().join("changing.arrow.partial");
        for (name, bytes, mutation) in cases {
            let input = write_input(&dir, name, &bytes);
            ingest_opened(&input, open_input(&input), &output, &options, None)
                .unwrap_or_else(|e| panic!("{name} unchanged: {e}"));
            fs::remove_file(&output).unwrap();

            let opened = open_input(&input);
            let want = mutation.apply(&input, bytes.len() as u64);
            let error = ingest_opened(&input, opened, &output, &options, None).unwrap_err();
            match &error {
                IngestError::Changed { file, change } => {
                    assert_eq!((file, *change), (&input, want), "{name}");
                }
                other => panic!("{name}: expected Changed, got {other:?}"),
            }
            assert_eq!(
                error.to_string(),
                format!(
                    "input file `{}` changed while it was read ({want}): publish it again once \
                     it is complete and nothing writes to it any more",
                    input.display()
                ),
                "{name}"
            );
            assert!(!output.exists(), "{name}");
        }
    }

    #[test]
    fn digest_and_bytes_describe_the_output_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(&dir, "tricky.csv", TRICKY_CSV.as_bytes());
        let (outcome, _, output) = ingest_ok(&dir, &input);
        let (digest, bytes) = digest_file(&output).unwrap();
        assert_eq!(digest, outcome.digest);
        assert_eq!(bytes, outcome.bytes);
        assert_eq!(bytes, fs::metadata(&output).unwrap().len());
        assert_eq!(
            digest,
            *blake3::hash(&fs::read(&output).unwrap()).as_bytes()
        );
    }

    #[test]
    fn output_is_readable_by_pyarrow() {
        if std::env::var("MESHNODE_SKIP_PYARROW").as_deref() == Ok("1") {
            eprintln!("MESHNODE_SKIP_PYARROW=1: skipping the pyarrow cross-check");
            return;
        }
        let probe = Command::new("python3")
            .args(["-c", "import pyarrow"])
            .status();
        assert!(
            probe.is_ok_and(|status| status.success()),
            "python3 cannot import pyarrow: run `pip install pyarrow`, or set \
             MESHNODE_SKIP_PYARROW=1 to skip this cross-check"
        );

        let dir = tempfile::tempdir().unwrap();
        let input = write_input(&dir, "tricky.csv", TRICKY_CSV.as_bytes());
        let (_, _, output) = ingest_ok(&dir, &input);
        let script = r#"
import json, sys
import pyarrow.ipc as ipc
with ipc.open_file(sys.argv[1]) as reader:
    table = reader.read_all()
print(json.dumps([f"{f.name}:{f.type}:{f.nullable}" for f in table.schema], ensure_ascii=False))
for row in table.to_pylist():
    print(json.dumps(row, ensure_ascii=False))
"#;
        let run = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&output)
            .env("PYTHONIOENCODING", "utf-8")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "pyarrow failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let expected = concat!(
            r#"["id:int64:True", "name:string:True", "score:double:True", "qty:int64:True", "flag:bool:True", "note:string:True"]"#,
            "\n",
            r#"{"id": 1, "name": "Smith, John", "score": 1.5, "qty": 10, "flag": true, "note": "He said \"hi\""}"#,
            "\n",
            r#"{"id": 2, "name": "José", "score": 2.0, "qty": null, "flag": false, "note": "line one\nline two"}"#,
            "\n",
            r#"{"id": 3, "name": "中文", "score": null, "qty": 7, "flag": null, "note": "😀 emoji"}"#,
            "\n",
            r#"{"id": null, "name": "", "score": 3.25, "qty": -4, "flag": true, "note": ""}"#,
            "\n",
            r#"{"id": 5, "name": "plain", "score": -0.5, "qty": 0, "flag": false, "note": "a,b,\"c\""}"#,
            "\n",
        );
        assert_eq!(String::from_utf8(run.stdout).unwrap(), expected);
    }

    /// Peak memory of a ~300 MB CSV ingest. Not a timed test; run it alone, so nothing else
    /// in the process raises the peak:
    /// `cargo test --release -- --ignored --nocapture bounded_memory`
    #[test]
    #[ignore = "writes a ~300 MB file; run by hand to measure peak RSS"]
    fn bounded_memory_on_a_large_csv() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("large.csv");
        let mut out = BufWriter::new(File::create(&input).unwrap());
        writeln!(out, "id,customer,amount,paid,comment").unwrap();
        let mut i = 0u64;
        while out.get_ref().metadata().unwrap().len() < 300_000_000 {
            for _ in 0..10_000 {
                writeln!(
                    out,
                    "{i},\"customer {}, ltd\",{}.{:02},{},\"order #{i} for customer {} — note\"",
                    i % 9973,
                    i % 100_000,
                    i % 100,
                    i.is_multiple_of(3),
                    i % 9973
                )
                .unwrap();
                i += 1;
            }
        }
        out.flush().unwrap();
        drop(out);
        let input_bytes = fs::metadata(&input).unwrap().len();
        let before = peak_rss_kib();

        let output = dir.path().join("large.arrow.partial");
        let started = std::time::Instant::now();
        let outcome = ingest_file(&input, &output).unwrap();
        let elapsed = started.elapsed();
        let peak = peak_rss_kib();
        println!(
            "ingested {} MB CSV ({} rows) into {} MB Arrow ({} batches) in {:.1?}; \
             peak RSS (VmHWM) {} MiB (before ingest {} MiB)",
            input_bytes / 1_000_000,
            outcome.rows,
            outcome.bytes / 1_000_000,
            outcome.batches,
            elapsed,
            peak / 1024,
            before / 1024
        );
        assert_eq!(outcome.rows, i);
        assert!(
            peak < 128 * 1024,
            "peak RSS {peak} KiB: memory is not bounded"
        );
    }

    /// `List` nested `depth` levels around `Int32`.
    fn nested_list(depth: usize) -> DataType {
        let mut data_type = DataType::Int32;
        for _ in 0..depth {
            data_type = DataType::List(Arc::new(Field::new("item", data_type, true)));
        }
        data_type
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

    #[test]
    fn a_nested_name_arrow_cannot_read_back_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("quoted.arrow");
        let inner = Fields::from(vec![Field::new("a\"b", DataType::Int64, true)]);
        let schema = Schema::new(vec![Field::new("s", DataType::Struct(inner), true)]);
        FileWriter::try_new(File::create(&input).unwrap(), &schema)
            .unwrap()
            .finish()
            .unwrap();
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).map(|_| ()).unwrap_err();
        assert!(
            matches!(&error, IngestError::ColumnType { column, .. } if column == "s"),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("rename the nested field"),
            "{error}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn nesting_at_the_limit_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("nested.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "nested",
            nested_list(bounds::MAX_TYPE_DEPTH),
            true,
        )]));
        let writer =
            ArrowWriter::try_new(File::create(&input).unwrap(), schema.clone(), None).unwrap();
        writer.close().unwrap();
        let output = dir.path().join("out.arrow.partial");
        let outcome = ingest_file(&input, &output).unwrap();
        assert_eq!(outcome.schema.fields(), schema.fields());
        let columns = mesh_protocol::descriptor::columns_from_arrow(&outcome.schema);
        assert!(mesh_protocol::descriptor::columns_to_arrow(&columns).is_ok());
    }

    #[test]
    fn too_many_columns_and_long_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let header: Vec<String> = (0..5000).map(|i| format!("c{i}")).collect();
        let row = vec!["1"; 5000].join(",");
        let csv = format!("{}\n{row}\n", header.join(","));
        let input = write_input(&dir, "wide.csv", csv.as_bytes());
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(
                &error,
                IngestError::OverLimit {
                    problem: BoundsError::TooMany {
                        count: 5000,
                        max: MAX_COLUMNS,
                        ..
                    },
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains(
            "the schema has 5000 entries; the limit is 2048; peers refuse such a schema: split \
             the table into several products, or drop columns"
        ));
        assert!(!output.exists());

        let long = "n".repeat(MAX_COLUMN_NAME_LEN + 1);
        let input = write_input(&dir, "long.csv", format!("{long}\n1\n").as_bytes());
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(
                &error,
                IngestError::OverLimit {
                    problem: BoundsError::TooLong { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!output.exists());
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
        use arrow::ipc::{
            FieldNode, MessageBuilder, MessageHeader, MetadataVersion, RecordBatchBuilder,
        };
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let nodes = fbb.create_vector(&[FieldNode::new(rows, 0)]);
        let buffers: Vec<_> = buffers
            .iter()
            .map(|(offset, length)| arrow::ipc::Buffer::new(*offset, *length))
            .collect();
        let buffers = fbb.create_vector(&buffers);
        let batch = {
            let mut b = RecordBatchBuilder::new(&mut fbb);
            b.add_length(rows);
            b.add_nodes(nodes);
            b.add_buffers(buffers);
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
        assert!(
            matches!(
                &error,
                IngestError::ArrowBounds {
                    format: InputFormat::ArrowStream,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
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
        assert!(
            matches!(
                &error,
                IngestError::ArrowBounds {
                    format: InputFormat::ArrowFile,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("lying.arrow"), "{error}");
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

    /// A list column of `items` nulls per row, one row per entry: nulls take no memory, so a
    /// batch can hold more values than a consumer accepts at no cost.
    fn lists_of_nulls(items: &[usize]) -> RecordBatch {
        let field = Arc::new(Field::new_list_field(DataType::Null, true));
        let offsets = arrow::buffer::OffsetBuffer::from_lengths(items.iter().copied());
        let total = items.iter().sum();
        let lists = arrow::array::ListArray::new(
            field,
            offsets,
            Arc::new(arrow::array::NullArray::new(total)),
            None,
        );
        RecordBatch::try_from_iter([("l", Arc::new(lists) as ArrayRef)]).unwrap()
    }

    #[test]
    fn a_batch_of_more_values_than_a_consumer_accepts_is_stored_as_several() {
        let dir = tempfile::tempdir().unwrap();
        let quarter = (MAX_BATCH_VALUES / 4) as usize;
        let batch = lists_of_nulls(&[quarter; 4]);
        assert!(batch_values::batch_values(&batch) > MAX_BATCH_VALUES);
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let input = write_input(&dir, "lists.arrows", &bytes);
        let output = dir.path().join("out.arrow");
        let outcome = ingest_file(&input, &output).unwrap();
        assert_eq!((outcome.rows, outcome.batches), (4, 2));
        let reader = FileReader::try_new(File::open(&output).unwrap(), None).unwrap();
        let stored: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(stored.len(), 2);
        for piece in &stored {
            assert!(batch_values::batch_values(piece) <= MAX_BATCH_VALUES);
        }
        let joined = arrow::compute::concat_batches(&batch.schema(), &stored).unwrap();
        assert_eq!(joined, batch);
    }

    #[test]
    fn a_row_of_more_values_than_a_batch_may_hold_is_refused_by_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let batch = lists_of_nulls(&[1, 2, MAX_BATCH_VALUES as usize, 3]);
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let input = write_input(&dir, "lists.arrows", &bytes);
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(error, IngestError::RowTooLarge { row: 3, values, .. }
                if values == MAX_BATCH_VALUES + 2),
            "{error:?}"
        );
        assert!(error.to_string().contains("row 3 holds"), "{error}");
        assert!(!output.exists());
    }

    /// A record batch message of `rows` rows of one Null column: a field node, no buffers,
    /// no body.
    fn null_batch_message(rows: i64) -> Vec<u8> {
        use arrow::ipc::{
            FieldNode, MessageBuilder, MessageHeader, MetadataVersion, RecordBatchBuilder,
        };
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let nodes = fbb.create_vector(&[FieldNode::new(rows, rows)]);
        let buffers = fbb.create_vector::<arrow::ipc::Buffer>(&[]);
        let batch = {
            let mut b = RecordBatchBuilder::new(&mut fbb);
            b.add_length(rows);
            b.add_nodes(nodes);
            b.add_buffers(buffers);
            b.finish()
        };
        let message = {
            let mut b = MessageBuilder::new(&mut fbb);
            b.add_version(MetadataVersion::V5);
            b.add_header_type(MessageHeader::RecordBatch);
            b.add_header(batch.as_union_value());
            b.add_bodyLength(0);
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

    #[test]
    fn a_batch_that_does_not_decompress_is_a_format_error_not_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        // A ZSTD batch whose values buffer declares 16 bytes: the decompressor refuses it
        // with an `io::Error`, which is not the disk's fault.
        let (batch, _) = crate::arrow_guard::tests::lz4_zeros();
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(arrow::ipc::CompressionType::ZSTD))
            .unwrap();
        let mut stream = Vec::new();
        let mut writer =
            StreamWriter::try_new_with_options(&mut stream, &batch.schema(), options).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let at = crate::arrow_guard::tests::declared_length_at(&stream);
        stream[at..at + 8].copy_from_slice(&16i64.to_le_bytes());
        let input = write_input(&dir, "zstd.arrows", &stream);
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(
                &error,
                IngestError::Arrow {
                    format: InputFormat::ArrowStream,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("valid Arrow IPC file"), "{message}");
        assert!(!message.contains("disk"), "{message}");
        assert!(!output.exists());
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
        let input = write_input(&dir, "lying.arrows", &bytes);
        let output = dir.path().join("out.arrow.partial");
        let error = ingest_file(&input, &output).unwrap_err();
        assert!(
            matches!(
                &error,
                IngestError::Arrow {
                    format: InputFormat::ArrowStream,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("lying.arrows"), "{message}");
        assert!(message.contains("malformed"), "{message}");
        assert!(!output.exists());
    }

    /// Standard base64 with padding.
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                out.push(if i <= chunk.len() {
                    ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
                } else {
                    '='
                });
            }
        }
        out
    }

    #[test]
    fn a_panic_reading_a_parquet_arrow_schema_hint_is_an_error() {
        use parquet::arrow::arrow_writer::ArrowWriterOptions;
        use parquet::file::metadata::KeyValue;
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

    fn peak_rss_kib() -> u64 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}
