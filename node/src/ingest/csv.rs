//! CSV input: the `csv` crate reads records (with [`QuoteTracker`] watching for a quote never
//! closed and records over [`MAX_CSV_RECORD_BYTES`]), column types are inferred from the first
//! [`CSV_INFER_RECORDS`] data rows, and values are decoded into Arrow builders by our own rules
//! for empty fields, null markers and time zones. Errors name the physical line.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, Time32SecondBuilder,
};
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use mesh_protocol::bounds;
use mesh_protocol::descriptor::MAX_COLUMNS;

use super::error::{EmptyReason, IngestError, io_error};
use super::{BATCH_ROWS, CSV_INFER_RECORDS, CsvOptions, InputFormat, MAX_CSV_RECORD_BYTES};

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
    /// Line ends seen so far (`\n`, `\r\n`, or a `\r` alone, as the `csv` crate ends
    /// records): the physical line of the next byte.
    lines: LineEnds,
    /// Line of the opening quote of the quoted field we are in.
    opened_on: u64,
    /// The inner reader reported its end.
    at_end: bool,
    /// Bytes of the record being read so far (since the last line break outside quotes).
    record_bytes: u64,
    /// Line where the record being read starts.
    record_starts_on: u64,
}

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
            lines: LineEnds::default(),
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
                    self.opened_on = self.lines.line;
                    Quoted
                }
                (_, _) if separator => FieldStart,
                (_, _) => Unquoted,
            };
            // A `\r` ends a line too (files saved with classic Mac line ends have no `\n`
            // at all); the `\n` of a `\r\n` then ends none.
            if self.lines.count(byte) && self.state == FieldStart {
                self.record_bytes = 0;
                self.record_starts_on = self.lines.line;
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

/// State of a CSV being read.
pub(super) struct CsvSource {
    /// Input path, for error messages (which re-read it to find physical line numbers).
    path: PathBuf,
    /// The inferred schema.
    pub(super) schema: SchemaRef,
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

/// Infers the schema from the first [`CSV_INFER_RECORDS`] data rows (refusing a header with a
/// duplicate or empty column name), then opens a streaming reader over the whole file.
pub(super) fn open_csv(
    path: &Path,
    file: File,
    options: &CsvOptions,
) -> Result<CsvSource, IngestError> {
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
/// (Int64, Boolean, Date32, Time32, Timestamp, Float64, else Utf8) over the values that are
/// neither empty nor a null marker; a column with no such value is Utf8.
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
    /// Some value is not a `HH:MM:SS` or `HH:MM` time of day ([`parse_time`]).
    not_time: bool,
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
        self.not_time = self.not_time || parse_time(value).is_none();
        self.not_float = self.not_float || parse_float(value).is_none();
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
        } else if !self.not_time {
            // `HH:MM:SS` and `HH:MM` only, as pyarrow 26 infers `time32[s]`; fractions of a
            // second, `24:00` and the rest stay text (the rules pinned at [`parse_time`]).
            DataType::Time32(TimeUnit::Second)
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
    /// Whether a zone (`Z`, `+hh:mm`, `+hhmm`, `+hh`) is written; such values are stored in
    /// UTC.
    zoned: bool,
}

/// The shape of `YYYY-MM-DD[T ]hh:mm[:ss[.f…]][Z|±hh:mm|±hhmm|±hh]`, and whether it has fractional
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
        // Hours only, as PostgreSQL writes a `timestamptz` (`+01`).
        [b'+' | b'-', h1, h2] => zone_digits(&[*h1, *h2]),
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
    // An offset of whole hours (`+01`, as PostgreSQL writes one) is read as `+01:00`.
    let b = value.as_bytes();
    let hours_only = b.len() > 3
        && matches!(b[b.len() - 3], b'+' | b'-')
        && b[b.len() - 2..].iter().all(u8::is_ascii_digit)
        && b[b.len() - 4].is_ascii_digit();
    let time = if hours_only {
        string_to_datetime(&utc, &format!("{value}:00")).ok()?
    } else {
        string_to_datetime(&utc, value).ok()?
    };
    if nanos {
        time.timestamp_nanos_opt()
    } else {
        Some(time.timestamp())
    }
}

/// `value` without the spaces and tabs around it, which pyarrow ignores around numbers, dates
/// and times of day (not around booleans, timestamps or text).
fn trimmed(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// A number as pyarrow reads one (`f64`'s syntax, spaces around it ignored).
fn parse_float(value: &str) -> Option<f64> {
    trimmed(value).parse().ok()
}

/// A whole number as pyarrow reads one: an optional `-` and digits (leading zeros allowed),
/// spaces around it ignored.
fn parse_int(value: &str) -> Option<i64> {
    let value = trimmed(value);
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

/// A `YYYY-MM-DD` date as days since the epoch, spaces around it ignored.
fn parse_date(value: &str) -> Option<i32> {
    let value = trimmed(value);
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    Date32Type::parse(value)
}

/// A time of day as seconds since midnight, as pyarrow 26 reads one into `time32[s]`
/// (probed with `pyarrow.csv.read_csv`):
///
/// - `HH:MM:SS` or `HH:MM`, two digits each, hours 00-23, minutes and seconds 00-59; the two
///   forms may be mixed in one column (`12:34` is 12:34:00). Spaces and tabs around the value
///   are ignored, as around numbers and dates, quoted or not.
/// - Text, not a time: a single-digit field (`1:02:03`, `12:3`), `24:00`, `24:00:00`, a leap
///   second `23:59:60`, fractions of a second (`12:34:56.5`: pyarrow 26 reads them as
///   strings, not `time32[ms]` or wider), a zone (`12:34:56Z`, `+01:00`), spaces inside
///   (`12: 34`), other white space around (a vertical tab), non-ASCII digits.
/// - A column of times with a date, a timestamp, a number, or a field of spaces alone is text;
///   empty fields (and null markers) are null, as in every column that is not text.
///
/// Two of these are odd, and followed anyway because neither loses data (the values stay
/// text, as written): fractions of a second, which Arrow's `time32[ms]` and `time64` could
/// hold, and `24:00:00`, which ISO 8601 allows for the end of a day. Mixing `HH:MM` with
/// `HH:MM:SS` loses nothing either (unlike timestamps, whose mixed shapes stay text here).
fn parse_time(value: &str) -> Option<i32> {
    let b = trimmed(value).as_bytes();
    let two = |at: usize, max: i32| -> Option<i32> {
        let (tens, ones) = (*b.get(at)?, *b.get(at + 1)?);
        if !(tens.is_ascii_digit() && ones.is_ascii_digit()) {
            return None;
        }
        let number = i32::from(tens - b'0') * 10 + i32::from(ones - b'0');
        (number <= max).then_some(number)
    };
    let seconds = match b.len() {
        5 => 0,
        8 if b[5] == b':' => two(6, 59)?,
        _ => return None,
    };
    if b[2] != b':' {
        return None;
    }
    Some(two(0, 23)? * 3600 + two(3, 59)? * 60 + seconds)
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
    /// Times of day in seconds.
    Time(Time32SecondBuilder),
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
            DataType::Time32(TimeUnit::Second) => {
                ColumnBuilder::Time(Time32SecondBuilder::with_capacity(rows))
            }
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
                ColumnBuilder::Time(b) => b.append_null(),
                ColumnBuilder::Timestamp { builder, .. } => builder.append_null(),
                ColumnBuilder::Utf8(b) => b.append_null(),
            }
            return true;
        }
        match self {
            ColumnBuilder::Int(b) => parse_int(value).map(|v| b.append_value(v)).is_some(),
            ColumnBuilder::Float(b) => parse_float(value).map(|v| b.append_value(v)).is_some(),
            ColumnBuilder::Bool(b) => parse_bool(value).map(|v| b.append_value(v)).is_some(),
            ColumnBuilder::Date(b) => parse_date(value).map(|v| b.append_value(v)).is_some(),
            ColumnBuilder::Time(b) => parse_time(value).map(|v| b.append_value(v)).is_some(),
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
            ColumnBuilder::Time(mut b) => Arc::new(b.finish()),
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
    pub(super) fn next_batch(&mut self) -> Result<Option<RecordBatch>, IngestError> {
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
    // The `csv` crate counts `\n` only: the physical lines before the record are counted
    // again here, with `\r` and `\r\n` line ends too (an error path: one read of the file
    // up to the record).
    let mut lines = LineEnds::default();
    let mut file = File::open(path)?;
    let mut left = position.byte();
    let mut buffer = vec![0; 64 * 1024];
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buffer[..want])?;
        if n == 0 {
            break;
        }
        for &byte in &buffer[..n] {
            lines.count(byte);
        }
        left -= n as u64;
    }
    // Past the line breaks of blank lines, to the record's first byte.
    for byte in BufReader::new(file).bytes() {
        match byte? {
            b @ (b'\n' | b'\r') => {
                lines.count(b);
            }
            _ => break,
        }
    }
    Ok(lines.line)
}

/// Physical lines, counted as the `csv` crate ends records: at `\n`, `\r\n` or `\r`.
#[derive(Debug)]
struct LineEnds {
    /// The line of the next byte (1-based).
    line: u64,
    /// The last byte was a `\r`.
    after_cr: bool,
}

impl Default for LineEnds {
    fn default() -> Self {
        Self {
            line: 1,
            after_cr: false,
        }
    }
}

impl LineEnds {
    /// Counts `byte`; whether it ended a line.
    fn count(&mut self, byte: u8) -> bool {
        let end = byte == b'\r' || (byte == b'\n' && !self.after_cr);
        self.after_cr = byte == b'\r';
        self.line += u64::from(end);
        end
    }
}

/// Words for a column type in an error message.
fn describe_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "true/false values (Boolean)".into(),
        DataType::Int64 => "whole numbers (Int64)".into(),
        DataType::Float64 => "numbers (Float64)".into(),
        DataType::Date32 => "dates like 2024-01-31 (Date32)".into(),
        DataType::Time32(_) => "times of day like 12:34:56 (Time32)".into(),
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
mod tests {
    use super::*;

    use std::fs;
    use std::io::{BufWriter, Write};

    use arrow::array::{
        Array, BooleanArray, Float64Array, Int64Array, StringArray, Time32SecondArray,
    };
    use arrow::ipc::reader::FileReader;
    use tempfile::TempDir;

    use crate::ingest::test_support::{TRICKY_CSV, column, ingest_ok, read_back, write_input};
    use crate::ingest::{MAX_NULL_VALUE_LEN, MAX_NULL_VALUES, ingest_file, ingest_file_with};

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
    fn spaces_around_numbers_and_dates_are_ignored_as_pyarrow_ignores_them() {
        // pyarrow reads a: int64, b: double, c: date32, d: string (' x' kept), e: string
        // (booleans and timestamps are not trimmed).
        let dir = tempfile::tempdir().unwrap();
        let csv = "a,b,c,d,e\n1, 9.99, 2024-01-05, x, true\n 2 ,3.5\t,2024-01-06,y,false\n";
        let (schema, batch) = ingest_with(&dir, csv, &[]).unwrap();
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            [
                &DataType::Int64,
                &DataType::Float64,
                &DataType::Date32,
                &DataType::Utf8,
                &DataType::Utf8
            ]
        );
        let a = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(a.values(), &[1, 2]);
        let b = batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap();
        assert_eq!(b.values(), &[9.99, 3.5]);
        assert_eq!(strings(&batch, "d"), [s(" x"), s("y")]);
        assert_eq!(strings(&batch, "e"), [s(" true"), s("false")]);
    }

    #[test]
    fn offsets_of_whole_hours_are_zones_as_pyarrow_reads_them() {
        // What PostgreSQL writes for a `timestamptz`; pyarrow reads timestamp[s, tz=UTC]
        // with these instants.
        let dir = tempfile::tempdir().unwrap();
        let csv = "ts\n2024-01-01 12:00:00+01\n2024-06-01 08:30:00-05\n";
        let (schema, batch) = ingest_with(&dir, csv, &[]).unwrap();
        assert_eq!(
            schema.field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Second, Some("UTC".into()))
        );
        let array = arrow::compute::cast(batch.column(0), &DataType::Int64).unwrap();
        let values: Vec<Option<i64>> = array
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(values, [Some(1_704_106_800), Some(1_717_248_600)]);
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

    /// The seconds since midnight of a `Time32(Second)` column.
    fn times(batch: &RecordBatch, name: &str) -> Vec<Option<i32>> {
        let array = batch.column_by_name(name).unwrap();
        assert_eq!(
            array.data_type(),
            &DataType::Time32(TimeUnit::Second),
            "column {name}"
        );
        column::<Time32SecondArray>(batch, name).iter().collect()
    }

    #[test]
    fn times_of_day_are_time32_seconds_as_pyarrow_reads_them() {
        // pyarrow 26 (default options) reads a, b, mixed and spaced as time32[s], empty
        // fields as nulls, and frac as string.
        let dir = tempfile::tempdir().unwrap();
        let csv = "a,b,frac,mixed,spaced\n\
                   12:34:56,12:34,12:34:56.123,12:34:56, 09:05 \n\
                   01:02:03,23:59,00:00:00.5,07:08,\t23:59:59\n\
                   00:00:00,,00:00:00.000,,\"  00:00:01\t \"\n";
        let (schema, batch) = ingest_with(&dir, csv, &[]).unwrap();
        let types: Vec<(&str, &DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        let time = DataType::Time32(TimeUnit::Second);
        assert_eq!(
            types,
            [
                ("a", &time),
                ("b", &time),
                ("frac", &DataType::Utf8),
                ("mixed", &time),
                ("spaced", &time),
            ]
        );
        assert_eq!(times(&batch, "a"), [Some(45_296), Some(3_723), Some(0)]);
        assert_eq!(times(&batch, "b"), [Some(45_240), Some(86_340), None]);
        assert_eq!(times(&batch, "mixed"), [Some(45_296), Some(25_680), None]);
        assert_eq!(
            times(&batch, "spaced"),
            [Some(32_700), Some(86_399), Some(1)]
        );
        assert_eq!(
            strings(&batch, "frac"),
            [s("12:34:56.123"), s("00:00:00.5"), s("00:00:00.000")]
        );
    }

    #[test]
    fn what_pyarrow_does_not_read_as_a_time_stays_text() {
        // Each column is text in pyarrow 26, its values kept as written.
        let dir = tempfile::tempdir().unwrap();
        let columns: [&[&str]; 20] = [
            &["24:00:00"],
            &["24:00"],
            &["23:59:60"],
            &["23:60:00"],
            &["25:00:00"],
            &["1:02:03"],
            &["1:02"],
            &["01:2:03"],
            &["01:02:3"],
            &["12:34:56."],
            &["12:34:56Z"],
            &["12:34:56+01:00"],
            &["12: 34"],
            &["12:34:56:78"],
            &["T12:34:56"],
            &["\u{b}12:34"],
            &["１２:34:56"],
            // A time mixed with a date, a timestamp, a number or spaces alone.
            &["12:34:56", "2024-01-01"],
            &["12:34:56", "2024-01-01T00:00:00"],
            &["12:34", "1", " "],
        ];
        for values in columns {
            let csv = format!("t\n{}\n", values.join("\n"));
            let (schema, batch) = ingest_with(&dir, &csv, &[]).unwrap();
            assert_eq!(schema.field(0).data_type(), &DataType::Utf8, "{values:?}");
            let kept: Vec<Option<String>> = values.iter().map(|v| s(v)).collect();
            assert_eq!(strings(&batch, "t"), kept, "{values:?}");
        }
        // `12:34` and `1234` apart: a time and a whole number.
        let (schema, _) = ingest_with(&dir, "a,b\n12:34,1234\n", &[]).unwrap();
        assert_eq!(
            schema.field(0).data_type(),
            &DataType::Time32(TimeUnit::Second)
        );
        assert_eq!(schema.field(1).data_type(), &DataType::Int64);
    }

    #[test]
    fn time_columns_read_empty_fields_and_null_markers_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "id,t\n1,12:34:56\n2,\n3,NA\n4,\"\"\n5,23:59\n";
        let (schema, batch) = ingest_with(&dir, csv, &["NA"]).unwrap();
        assert_eq!(
            schema.field(1).data_type(),
            &DataType::Time32(TimeUnit::Second)
        );
        assert_eq!(
            times(&batch, "t"),
            [Some(45_296), None, None, None, Some(86_340)]
        );
        // Without the marker, `NA` is text and so is the column.
        let (schema, batch) = ingest_with(&dir, csv, &[]).unwrap();
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
        assert_eq!(
            strings(&batch, "t"),
            [s("12:34:56"), s(""), s("NA"), s(""), s("23:59")]
        );
    }

    #[test]
    fn a_value_that_is_no_time_after_the_prefix_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("t\n");
        for i in 0..CSV_INFER_RECORDS {
            csv.push_str(&format!("{:02}:{:02}:00\n", (i / 60) % 24, i % 60));
        }
        csv.push_str("24:00:00\n");
        match ingest_with(&dir, &csv, &[]) {
            Err(IngestError::Csv {
                line: Some(line),
                problem,
                ..
            }) => {
                assert_eq!(line, CSV_INFER_RECORDS as u64 + 2);
                assert!(problem.contains("column `t` holds `24:00:00`"), "{problem}");
                assert!(
                    problem.contains("times of day like 12:34:56 (Time32)"),
                    "{problem}"
                );
            }
            other => panic!("expected a Csv error, got {other:?}"),
        }
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
        let cases: [(&str, u64, usize, usize); 7] = [
            ("a,b,c\n1,2,3\n4,5,6,7\n", 3, 4, 3),
            ("a,b\n1,\"x\ny\"\n2\n", 4, 1, 2),
            ("a,b\n\n1,2\n\n3,4,5\n", 5, 3, 2),
            ("a,b\r\n\r\n1,2,3\r\n", 3, 3, 2),
            // Classic Mac line ends: a `\r` alone ends each line.
            ("a,b,c\r1,2,3\r4,5,6,7\r", 3, 4, 3),
            ("a,b\r\r1,2\r\r3,4,5\r", 5, 3, 2),
            ("a,b\r1,\"x\ry\"\r2\r", 4, 1, 2),
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
    fn a_file_with_classic_mac_line_ends_has_lines_and_rows_of_their_own_size() {
        // Every record ends with a `\r` alone: the record-size bound counts each row, not the
        // whole file, and an error names its physical line.
        let mut tracker = QuoteTracker::new(&b"a,b\r1,\"x\ry\"\r2,3\r"[..]);
        let mut sink = Vec::new();
        tracker.read_to_end(&mut sink).unwrap();
        assert_eq!(tracker.lines.line, 5);
        assert_eq!(tracker.record_starts_on, 5);
        assert_eq!(
            tracker.record_bytes, 1,
            "the last line end, counted from a new record"
        );

        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("n,label\r");
        for i in 0..20_000 {
            csv.push_str(&format!("{i},row {i}\r"));
        }
        csv.push_str("abc,last\r");
        let input = write_input(&dir, "mac.csv", csv.as_bytes());
        let output = dir.path().join("mac.arrow.partial");
        match ingest_file(&input, &output).unwrap_err() {
            IngestError::Csv { line, problem, .. } => {
                assert_eq!(line, Some(20_002), "{problem}");
                assert!(problem.contains("column `n` holds `abc`"), "{problem}");
            }
            other => panic!("expected Csv, got {other:?}"),
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

    fn peak_rss_kib() -> u64 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}
