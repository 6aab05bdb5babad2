//! Turns a user's CSV, Parquet or Arrow file into the Arrow IPC file that a product version is
//! stored as (`meshnode publish NAME --from FILE`).
//!
//! Layout:
//! - [`InputFormat::detect`] picks the reader from the file name (and, for `.arrow`, the magic).
//! - A `Source` yields record batches one at a time, whatever the format; nothing ever holds the
//!   whole input. CSV gets its schema from the first [`CSV_INFER_RECORDS`] data rows.
//! - `write_ipc` writes the batches to an uncompressed Arrow IPC *file* through a writer that
//!   hashes (BLAKE3) and counts the bytes on their way to disk, then fsyncs.
//! - When arrow-csv rejects a CSV, `diagnose_csv` re-reads it with the `csv` crate (the same
//!   `csv-core` parser arrow-csv uses, so records line up) to name the physical line and the
//!   problem, which arrow-csv reports only as a record number.
//!
//! This module knows nothing of the rest of the node: it maps paths to an [`IngestOutcome`].

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::array::timezone::Tz;
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::csv::reader::Format;
use arrow::datatypes::{
    DataType, Date32Type, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit,
};
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileReader, StreamReader};
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatchReader;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

/// How many CSV data rows schema inference looks at. A value of another type further down is
/// an error ([`IngestError::Csv`]) rather than a silent re-typing, as in pyarrow.
pub const CSV_INFER_RECORDS: usize = 10_000;

/// Most rows in one output record batch (CSV and Parquet inputs).
const BATCH_ROWS: usize = 64 * 1024;

/// Most cells (rows x columns) in one CSV batch: arrow-csv pre-allocates about 16 bytes per
/// cell, so a very wide CSV gets shorter batches instead of a huge allocation.
const CSV_BATCH_CELLS: usize = 2 * 1024 * 1024;

/// Rough most raw CSV bytes in one batch, judged from the average record length of the
/// inference prefix, so that files with long text fields also get shorter batches.
const CSV_BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// Read buffer for input files.
const READ_BUFFER: usize = 1024 * 1024;

/// Write buffer in front of the hashing writer: BLAKE3 is fastest on large chunks.
const WRITE_BUFFER: usize = 1024 * 1024;

/// The magic that opens an Arrow IPC file (a stream starts with a message instead).
const ARROW_FILE_MAGIC: &[u8; 6] = b"ARROW1";

/// The extensions [`InputFormat::detect`] accepts, as shown in error messages.
const SUPPORTED_EXTENSIONS: &str = ".csv, .parquet/.pq, .arrow/.feather/.ipc or .arrows";

/// What ingesting produced: enough to fill a product descriptor without reading the file again.
#[derive(Debug, Clone)]
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
            "fix the row or add the missing fields (leave them empty for null)"
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
/// The output is uncompressed and keeps the schema of Parquet and Arrow inputs; record batches
/// with zero rows are dropped. A Parquet or Arrow input with a schema but zero rows is accepted
/// (a CSV needs a data row to infer types from).
///
/// CSV semantics: a header row is required; column types (Int64, Float64, Boolean, Date32,
/// Timestamp, else Utf8) are inferred from the first [`CSV_INFER_RECORDS`] data rows, and a
/// column with no value there becomes nullable Utf8. Every column is nullable. An empty field is
/// null in every column type, strings included. A quoted empty field (`""`) is null too:
/// arrow-csv's record decoder drops the quotes before null detection, so it cannot be told from
/// an empty field. Quoted fields keep commas, doubled quotes (`""` inside quotes is one `"`) and
/// line breaks; text must be UTF-8. Line numbers in errors are physical, 1-based lines.
///
/// On any error after `output` was created it is removed; an input rejected before that
/// ([`IngestError::NotFound`], [`IngestError::UnsupportedExtension`], ...) leaves `output`
/// untouched.
pub fn ingest_file(input: &Path, output: &Path) -> Result<IngestOutcome, IngestError> {
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
    let mut source = Source::open(input, format)?;
    if source.schema().fields().is_empty() {
        return Err(IngestError::Empty {
            file: input.to_path_buf(),
            format,
            reason: EmptyReason::NoColumns,
        });
    }

    let file = File::create(output).map_err(|e| io_error(output, "create", e))?;
    let written = write_ipc(&mut source, file, output);
    if written.is_err() {
        // Best effort: the error being returned is the one worth reporting.
        let _ = fs::remove_file(output);
    }
    written
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

/// Writes every batch of `source` to `file` as an Arrow IPC file, hashing on the way, then
/// fsyncs.
fn write_ipc(source: &mut Source, file: File, output: &Path) -> Result<IngestOutcome, IngestError> {
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
        writer.write(&batch).map_err(write_error)?;
        rows += batch.num_rows() as u64;
        batches += 1;
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

/// A `Read` that counts the bytes it hands out (to estimate CSV record length).
struct CountingReader<R> {
    /// Where the bytes come from.
    inner: R,
    /// Number of bytes read so far.
    bytes: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// One input, as a sequence of record batches.
enum Source {
    /// A CSV being decoded by arrow-csv.
    Csv(Box<CsvSource>),
    /// A Parquet file, decoded row group by row group.
    Parquet {
        /// Input path, for error messages.
        path: PathBuf,
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
    /// Input path, for error messages and for [`diagnose_csv`].
    path: PathBuf,
    /// The inferred schema (all-null columns turned into Utf8).
    schema: SchemaRef,
    /// The streaming arrow-csv reader.
    reader: arrow::csv::reader::BufReader<BufReader<File>>,
    /// Data rows decoded so far: rows before this index are known to be good.
    rows: u64,
}

impl Source {
    fn open(path: &Path, format: InputFormat) -> Result<Source, IngestError> {
        let file = File::open(path).map_err(|e| io_error(path, "open", e))?;
        let arrow_error = |error| arrow_read_error(path, format, error);
        Ok(match format {
            InputFormat::Csv => Source::Csv(Box::new(open_csv(path, file)?)),
            InputFormat::Parquet => {
                let parquet_error = |error: parquet::errors::ParquetError| IngestError::Parquet {
                    file: path.to_path_buf(),
                    detail: error.to_string(),
                };
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(parquet_error)?
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(parquet_error)?;
                Source::Parquet {
                    path: path.to_path_buf(),
                    reader,
                }
            }
            InputFormat::ArrowFile => Source::ArrowFile {
                path: path.to_path_buf(),
                reader: FileReader::try_new_buffered(file, None).map_err(arrow_error)?,
            },
            InputFormat::ArrowStream => Source::ArrowStream {
                path: path.to_path_buf(),
                reader: StreamReader::try_new_buffered(file, None).map_err(arrow_error)?,
            },
        })
    }

    fn schema(&self) -> SchemaRef {
        match self {
            Source::Csv(csv) => csv.schema.clone(),
            Source::Parquet { reader, .. } => reader.schema(),
            Source::ArrowFile { reader, .. } => reader.schema(),
            Source::ArrowStream { reader, .. } => reader.schema(),
        }
    }

    /// The next batch, `None` at the end of the input.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, IngestError> {
        match self {
            Source::Csv(csv) => match csv.reader.next().transpose() {
                Ok(batch) => {
                    if let Some(batch) = &batch {
                        csv.rows += batch.num_rows() as u64;
                    }
                    Ok(batch)
                }
                Err(error) => Err(diagnose_csv(&csv.path, Some(&csv.schema), csv.rows, error)),
            },
            Source::Parquet { path, reader } => {
                reader.next().transpose().map_err(|error| match error {
                    ArrowError::IoError(_, error) => io_error(path, "read", error),
                    error => IngestError::Parquet {
                        file: path.clone(),
                        detail: error.to_string(),
                    },
                })
            }
            Source::ArrowFile { path, reader } => reader
                .next()
                .transpose()
                .map_err(|e| arrow_read_error(path, InputFormat::ArrowFile, e)),
            Source::ArrowStream { path, reader } => reader
                .next()
                .transpose()
                .map_err(|e| arrow_read_error(path, InputFormat::ArrowStream, e)),
        }
    }
}

fn arrow_read_error(path: &Path, format: InputFormat, error: ArrowError) -> IngestError {
    match error {
        ArrowError::IoError(_, error) => io_error(path, "read", error),
        error => IngestError::Arrow {
            file: path.to_path_buf(),
            format,
            error,
        },
    }
}

/// Infers the schema from the first [`CSV_INFER_RECORDS`] data rows, then opens a streaming
/// reader over the whole file with that schema.
fn open_csv(path: &Path, file: File) -> Result<CsvSource, IngestError> {
    let format = Format::default().with_header(true);
    let mut counting = CountingReader {
        inner: file,
        bytes: 0,
    };
    let (inferred, records) = format
        .infer_schema(&mut counting, Some(CSV_INFER_RECORDS))
        .map_err(|error| diagnose_csv(path, None, 0, error))?;
    let empty = |reason| IngestError::Empty {
        file: path.to_path_buf(),
        format: InputFormat::Csv,
        reason,
    };
    if inferred.fields().is_empty() {
        return Err(empty(EmptyReason::NoColumns));
    }
    if records == 0 {
        return Err(empty(EmptyReason::HeaderOnly));
    }
    let schema = Arc::new(null_columns_as_utf8(&inferred));
    let record_bytes = counting.bytes / (records as u64 + 1);
    let batch_rows = csv_batch_rows(schema.fields().len(), record_bytes);

    let mut file = counting.inner;
    file.rewind().map_err(|e| io_error(path, "read", e))?;
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_format(format)
        .with_batch_size(batch_rows)
        .build_buffered(BufReader::with_capacity(READ_BUFFER, file))
        .map_err(|error| diagnose_csv(path, Some(&schema), 0, error))?;
    Ok(CsvSource {
        path: path.to_path_buf(),
        schema,
        reader,
        rows: 0,
    })
}

/// Inference gives `Null` to a column with no value in the prefix; downstream tools handle a
/// nullable Utf8 column better, and later values then still fit.
fn null_columns_as_utf8(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Null => Field::new(field.name(), DataType::Utf8, true),
            _ => field.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Rows per CSV batch: [`BATCH_ROWS`], fewer when rows are wide (many columns) or long (many
/// bytes, judging by the inference prefix), so one batch stays within tens of MiB.
fn csv_batch_rows(columns: usize, record_bytes: u64) -> usize {
    let by_cells = CSV_BATCH_CELLS / columns.max(1);
    let by_bytes = usize::try_from(CSV_BATCH_BYTES / record_bytes.max(1)).unwrap_or(usize::MAX);
    BATCH_ROWS.min(by_cells).min(by_bytes).max(1)
}

/// Turns an arrow-csv error into a precise [`IngestError`] by re-reading the file with the `csv`
/// crate, which reports physical line numbers (arrow-csv counts records, and a quoted field may
/// span lines). Rows before `good_rows` were decoded fine, so their values are not re-checked.
fn diagnose_csv(
    path: &Path,
    schema: Option<&Schema>,
    good_rows: u64,
    error: ArrowError,
) -> IngestError {
    if let ArrowError::IoError(_, error) = error {
        return io_error(path, "read", error);
    }
    match find_csv_problem(path, schema, good_rows) {
        Ok(Some(problem)) => problem,
        // The scan saw nothing wrong (or could not run): report arrow-csv's own words.
        Ok(None) | Err(_) => IngestError::Csv {
            file: path.to_path_buf(),
            line: None,
            problem: format!("{error}: check that the file is valid, UTF-8 encoded CSV"),
        },
    }
}

/// Scans the CSV for the first ragged row, invalid UTF-8, or (from data row `check_from` on)
/// value that does not parse as its column's type.
fn find_csv_problem(
    path: &Path,
    schema: Option<&Schema>,
    check_from: u64,
) -> Result<Option<IngestError>, csv::Error> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::with_capacity(READ_BUFFER, File::open(path)?));
    let mut record = csv::ByteRecord::new();
    let mut expected = None;
    // Records read so far, the header included.
    let mut records = 0u64;
    while reader.read_byte_record(&mut record)? {
        let line = record.position().map_or(0, |p| p.line());
        let data_row = records.checked_sub(1);
        records += 1;
        let csv_problem = |problem: String| {
            Some(IngestError::Csv {
                file: path.to_path_buf(),
                line: Some(line),
                problem,
            })
        };
        let expected = *expected.get_or_insert(record.len());
        if record.len() != expected {
            return Ok(Some(IngestError::RaggedCsv {
                file: path.to_path_buf(),
                line,
                found: record.len(),
                expected,
            }));
        }
        for (index, raw) in record.iter().enumerate() {
            let Ok(value) = std::str::from_utf8(raw) else {
                return Ok(csv_problem(format!(
                    "field {} is not valid UTF-8: save the file with UTF-8 encoding",
                    index + 1
                )));
            };
            if let (Some(schema), Some(row)) = (schema, data_row)
                && row >= check_from
                && let Some(field) = schema.fields().get(index)
                && !value_fits(field.data_type(), value)
            {
                return Ok(csv_problem(format!(
                    "column `{}` holds `{}`, but the first {CSV_INFER_RECORDS} data rows made it \
                     a column of {}: fix that value, or put a row with such a value among the \
                     first {CSV_INFER_RECORDS} data rows so the column gets a wider type",
                    field.name(),
                    shorten(value),
                    describe_type(field.data_type()),
                )));
            }
        }
    }
    Ok(None)
}

/// Whether arrow-csv would accept `value` for a column of type `data_type` (mirrors its parser
/// for the types inference produces).
fn value_fits(data_type: &DataType, value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    match data_type {
        DataType::Boolean => {
            value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")
        }
        DataType::Int64 => Int64Type::parse(value).is_some(),
        DataType::Float64 => Float64Type::parse(value).is_some(),
        DataType::Date32 => Date32Type::parse(value).is_some(),
        DataType::Timestamp(unit, None) => {
            let utc: Tz = "+00:00".parse().expect("UTC is a valid offset");
            match string_to_datetime(&utc, value) {
                Ok(time) => *unit != TimeUnit::Nanosecond || time.timestamp_nanos_opt().is_some(),
                Err(_) => false,
            }
        }
        _ => true,
    }
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
