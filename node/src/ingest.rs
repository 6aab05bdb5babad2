//! Turns a user's CSV, Parquet or Arrow file into the Arrow IPC file that a product version is
//! stored as (`meshnode publish NAME --from FILE`).
//!
//! Layout:
//! - This file: the public limits and types, the entry points ([`ingest_file`] and its
//!   variants), [`check_schema`] and `write_ipc`. [`InputFormat::detect`] picks the reader from
//!   the file name (and, for `.arrow`, the magic). `write_ipc` writes the batches to an
//!   uncompressed Arrow IPC *file* through a writer that hashes (BLAKE3) and counts the bytes on
//!   their way to disk, then fsyncs.
//! - `source`: a `Source` yields record batches one at a time, whatever the format; nothing ever
//!   holds the whole input. Inputs are checked before a parser sees them: a Parquet footer's
//!   schema depth, its page headers, delta-encoded lengths and the rows per batch that keep a
//!   batch bounded (`parquet_footer`), an Arrow IPC input's messages against the file's length,
//!   [`MAX_BATCH_ROWS`] and [`MAX_DECOMPRESSED_BATCH`] (`arrow_guard`); and reader calls that
//!   can panic on hostile input run inside `arrow_guard`, so such input is an error, never a
//!   crashed task.
//! - `csv`: CSV is decoded with the `csv` crate into Arrow builders, so that the rules for empty
//!   fields, null markers and time zones are ours (matching pyarrow's values); the schema comes
//!   from the first [`CSV_INFER_RECORDS`] data rows; errors name the physical line (re-reading
//!   from the record's byte offset) and the column.
//! - `stamp`: the input's stamp (length, times, device and inode: `InputStamp`) is taken when it
//!   is opened and compared after its last read: a file that changed while it was read (still
//!   being written, or replaced) is refused, never published half old, half new or cut inside a
//!   row.
//! - `error`: [`IngestError`] and its messages, each one sentence that names the file.
//! - `soak` (tests only): a seeded mutation soak that feeds every format to ingest;
//!   `test_support` (tests only): helpers shared by the tests of these files.
//!
//! This module knows nothing of the rest of the node: it maps paths to an [`IngestOutcome`].

mod csv;
mod error;
#[cfg(test)]
mod soak;
mod source;
mod stamp;
#[cfg(test)]
mod test_support;

pub use error::{EmptyReason, IngestError};
pub use stamp::InputChange;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::FileWriter;
use mesh_protocol::bounds::{self, BoundsError};
use mesh_protocol::descriptor::{MAX_COLUMN_NAME_LEN, MAX_COLUMNS};

use crate::batch_values::{self, MAX_BATCH_VALUES};
use crate::diskroom::Room;
use error::io_error;
use source::{Source, sniff_arrow};
use stamp::{InputStamp, check_unchanged};

/// How many CSV data rows schema inference looks at. A value of another type further down is
/// an error ([`IngestError::Csv`]) rather than a silent re-typing, as in pyarrow.
pub const CSV_INFER_RECORDS: usize = 10_000;

/// Most rows in one output record batch (CSV and Parquet inputs).
const BATCH_ROWS: usize = 64 * 1024;

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

/// The extensions [`InputFormat::detect`] accepts, as shown in error messages.
const SUPPORTED_EXTENSIONS: &str = ".csv, .parquet/.pq, .arrow/.feather/.ipc or .arrows";

/// Most `--null-values` markers, and most bytes in one: they are compared with every field.
pub const MAX_NULL_VALUES: usize = 64;
/// Most bytes in one null marker.
pub const MAX_NULL_VALUE_LEN: usize = 256;

/// Most bytes in one CSV record. The `csv` crate holds a whole record in memory, so a quote
/// never closed in a large file would otherwise pull the rest of the file into memory before
/// it could be refused.
pub const MAX_CSV_RECORD_BYTES: u64 = 64 * 1024 * 1024;

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
        check_extension_storage(file, field)?;
    }
    Ok(())
}

/// Refuses a column marked as one of Arrow's canonical extension types that its data type
/// cannot be stored as, as pyarrow refuses to open such a file: `arrow.uuid` (16-byte
/// binary), `arrow.json` (text), `arrow.bool8` (Int8). Other extension names pass as they are.
fn check_extension_storage(file: &Path, field: &Field) -> Result<(), IngestError> {
    use arrow::datatypes::DataType as D;
    let Some(extension) = field.metadata().get(source::EXTENSION_NAME_KEY) else {
        return Ok(());
    };
    let (fits, expected) = match extension.as_str() {
        "arrow.uuid" => (
            matches!(field.data_type(), D::FixedSizeBinary(16)),
            "FixedSizeBinary(16)",
        ),
        "arrow.json" => (
            matches!(field.data_type(), D::Utf8 | D::LargeUtf8 | D::Utf8View),
            "text (Utf8, LargeUtf8 or Utf8View)",
        ),
        "arrow.bool8" => (matches!(field.data_type(), D::Int8), "Int8"),
        _ => return Ok(()),
    };
    if fits {
        return Ok(());
    }
    Err(IngestError::ExtensionStorage {
        file: file.to_path_buf(),
        column: field.name().clone(),
        extension: extension.clone(),
        storage: field.data_type().clone(),
        expected,
    })
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
/// `007` is 7), Boolean (`true`/`True`/`TRUE` and the like), Date32 (`YYYY-MM-DD`), Time32 in
/// seconds (`HH:MM:SS` or `HH:MM`, hours 00-23; fractions of a second stay text), Timestamp,
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
    ingest_file_tracked(input, output, options, None, Room::default())
}

/// [`ingest_file_with`], reporting to `progress` the input's size, then after each batch
/// the bytes of the input read so far and the rows ingested, and leaving `room`'s reserve
/// free on the disk of `output`: a batch that would eat into it stops the ingest
/// ([`IngestError::NoRoom`]).
pub fn ingest_file_tracked(
    input: &Path,
    output: &Path,
    options: &CsvOptions,
    progress: Option<&crate::progress::Progress>,
    room: Room,
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
    ingest_opened(input, opened, output, options, progress, room)
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
    room: Room,
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
    let outcome =
        write_ipc(input, &mut source, file, output, position, room).map_err(or_changed)?;
    check_unchanged(input, &stamp)?;
    partial.keep = true;
    Ok(outcome)
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

/// Writes every batch of `source` (read from `input`) to `file` as an Arrow IPC file,
/// hashing on the way, then fsyncs. A batch of more values than a consumer accepts
/// ([`MAX_BATCH_VALUES`]) is stored as several.
fn write_ipc(
    input: &Path,
    source: &mut Source,
    file: File,
    output: &Path,
    mut progress: Option<(&crate::progress::Progress, File)>,
    room: Room,
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
        // Its size in memory is about what it takes in the file (more for slices of a
        // larger batch): room for it, or stop while the reserve is free.
        let more = batch.get_array_memory_size() as u64;
        room.check(output, more)
            .map_err(|source| IngestError::NoRoom {
                file: input.to_path_buf(),
                rows,
                source,
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::process::Command;
    use std::sync::Arc;

    use arrow::array::{ArrayRef, RecordBatch};
    use arrow::datatypes::{DataType, Field, Fields};
    use arrow::ipc::reader::FileReader;
    use arrow::ipc::writer::IpcWriteOptions;

    use crate::arrow_guard::tests::ipc_stream;
    use parquet::arrow::ArrowWriter;

    use super::test_support::{TRICKY_CSV, ingest_ok, nested_list, refused, write_input};

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

    #[test]
    fn an_input_that_would_eat_into_the_disk_reserve_stops_and_leaves_nothing() {
        use crate::diskroom::{Probe, Reserve};
        use std::sync::atomic::{AtomicUsize, Ordering};
        /// Room for the first batch only.
        fn filling(_: &Path) -> u64 {
            static LOOKS: AtomicUsize = AtomicUsize::new(0);
            match LOOKS.fetch_add(1, Ordering::SeqCst) {
                0 => 1 << 40,
                _ => Reserve::default().bytes(),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        // More rows than one batch holds.
        let mut csv = b"id,name\n".to_vec();
        for i in 0..200_000 {
            csv.extend_from_slice(format!("{i},row {i}\n").as_bytes());
        }
        let input = write_input(&dir, "big.csv", &csv);
        let output = dir.path().join("out.arrow.partial");
        let room = Room {
            reserve: Reserve::default(),
            probe: Probe::With(filling),
        };
        let error =
            ingest_file_tracked(&input, &output, &CsvOptions::default(), None, room).unwrap_err();
        let IngestError::NoRoom { rows, source, .. } = &error else {
            panic!("expected a refusal for want of room, got {error:?}");
        };
        assert!(*rows > 0 && *rows < 200_000, "{error}");
        assert_eq!(source.dir, dir.path());
        let message = error.to_string();
        assert!(
            message.contains("big.csv") && message.contains("disk_reserve_mib"),
            "{message}"
        );
        assert!(!output.exists(), "a partial output was left behind");

        // A disk that has no room at all is refused before a row is written.
        let none = Room::keeping(Reserve::mib(u64::MAX));
        let error =
            ingest_file_tracked(&input, &output, &CsvOptions::default(), None, none).unwrap_err();
        assert!(
            matches!(error, IngestError::NoRoom { rows: 0, .. }),
            "{error:?}"
        );
        assert!(!output.exists());
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
        let bytes = ipc_stream(std::slice::from_ref(&batch), IpcWriteOptions::default());
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
        let bytes = ipc_stream(std::slice::from_ref(&batch), IpcWriteOptions::default());
        let error = refused(&dir, "lists.arrows", &bytes);
        assert!(
            matches!(error, IngestError::RowTooLarge { row: 3, values, .. }
                if values == MAX_BATCH_VALUES + 2),
            "{error:?}"
        );
        assert!(error.to_string().contains("row 3 holds"), "{error}");
    }
}
