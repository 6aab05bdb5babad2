//! What can go wrong while ingesting, as [`IngestError`]: one sentence per error that names the
//! file, says what is wrong and what to do.

use std::io;
use std::path::{Path, PathBuf};

use arrow::error::ArrowError;
use mesh_protocol::bounds::{self, BoundsError};

use super::stamp::InputChange;
use super::{InputFormat, SUPPORTED_EXTENSIONS};
use crate::batch_values::MAX_BATCH_VALUES;

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

/// Why [`ingest_file`](super::ingest_file) failed. Each message is one sentence that names the
/// file, says what is wrong and what to do, so the CLI can print it as it is.
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
    /// a batch that decompresses to more than
    /// [`MAX_DECOMPRESSED_BATCH`](super::MAX_DECOMPRESSED_BATCH)) or cannot be walked (a
    /// header that does not decode).
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
    /// A column carries the metadata of an Arrow canonical extension type that its data type
    /// cannot be stored as (`arrow.uuid` on text, say): every reader that knows the
    /// extension (pyarrow among them) refuses the file a consumer would receive.
    #[error(
        "input file `{}`: column `{column}` is marked as the extension type `{extension}` \
         (field metadata `ARROW:extension:name`), which is stored as {expected}, but the column \
         holds {storage}; readers that know `{extension}` refuse such a file: remove the \
         marker or store the column as {expected}",
        file.display()
    )]
    ExtensionStorage {
        /// The path as given.
        file: PathBuf,
        /// The column.
        column: String,
        /// The extension type's name.
        extension: String,
        /// What the column holds.
        storage: arrow::datatypes::DataType,
        /// What the extension type is stored as.
        expected: &'static str,
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
    /// Writing on would eat into the disk space the node keeps free (`disk_reserve_mib`):
    /// the input expands to more than that disk can take.
    #[error("input file `{}`: publishing stopped after {rows} rows: {source}", file.display())]
    NoRoom {
        /// The path as given.
        file: PathBuf,
        /// Rows written before it stopped.
        rows: u64,
        /// Where, and how much was free.
        #[source]
        source: crate::diskroom::NoRoom,
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

fn csv_message(file: &Path, line: Option<u64>, problem: &str) -> String {
    match line {
        Some(line) => format!("CSV `{}` line {line}: {problem}", file.display()),
        None => format!("CSV `{}`: {problem}", file.display()),
    }
}

pub(super) fn io_error(path: &Path, action: &'static str, error: io::Error) -> IngestError {
    IngestError::Io {
        path: path.to_path_buf(),
        action,
        error,
    }
}
