//! Page headers, walked as parquet's page reader decodes them, before any reader is built.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use super::FooterError;
use super::thrift::{Input, TOO_MANY_ELEMENTS, TRUNCATED};

/// Most bytes one page of a Parquet input may declare, compressed or once decompressed. The
/// reader reserves what a page header declares before it reads the page (up to 2 GiB each,
/// zeroed for Snappy), and holds a page of every column at once. Writers cut pages at about
/// 1 MiB; a page is larger only when it holds a single larger value.
pub const MAX_PARQUET_PAGE: u64 = 256 * 1024 * 1024;

/// Most bytes the pages of one row group may declare that the reader holds at once: for each
/// column chunk its largest dictionary page and its largest data page, added up. 2,048
/// columns of a 1 MiB dictionary page and 1 MiB data pages (what writers cut) fit; a valid
/// file cannot expand to more than this from a few bytes of compressed zeros per column.
pub const MAX_PARQUET_PAGES_HELD: u64 = 4 * 1024 * 1024 * 1024;

/// Longest page header read, statistics included.
const MAX_PAGE_HEADER: usize = 16 * 1024 * 1024;

/// Why [`check_pages`] refused a file's pages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// A column chunk or page is not what parquet can read: it lies outside the file, its
    /// header does not decode, or it declares sizes or counts its bytes cannot hold.
    #[error("row group {row_group}, column `{column}`: {problem}")]
    Malformed {
        /// Index of the row group.
        row_group: usize,
        /// Dotted path of the column.
        column: String,
        /// What is wrong, with the byte offset of the page.
        problem: String,
    },
    /// A page, or the pages of a row group held at once, declare more than a bound.
    #[error("row group {row_group}, column `{column}`: {problem}")]
    OverBound {
        /// Index of the row group.
        row_group: usize,
        /// Dotted path of the column (of its largest column chunk for the row group bound).
        column: String,
        /// Which bound, what was declared.
        problem: String,
    },
}

/// Why one column chunk was refused, before it is put in context.
enum ChunkProblem {
    Malformed(String),
    OverBound(String),
}

/// Walks the page headers of every column chunk of `metadata` (read from `file`) as
/// parquet 59.3's `SerializedPageReader` does (serialized_reader.rs:913-970: a page header
/// at the chunk's start, its body of `compressed_page_size` bytes, the next header, until
/// the chunk's bytes are used up), *before* the reader is built, and refuses:
///
/// - a column chunk outside the file (parquet reserves each page's declared length before
///   it reads it: 2 GiB from a 100-byte file);
/// - a page header that does not decode the way parquet decodes it, or whose lists declare
///   more elements than it has bytes (parquet loops once per `bool` element it skips);
/// - a page that declares more than its chunk holds, or more than [`MAX_PARQUET_PAGE`]
///   compressed or decompressed;
/// - a dictionary page that declares more values than its bytes can hold (parquet
///   allocates the dictionary from that count: 2^31 values of 8 bytes);
/// - a GZIP or LZ4 page that could decompress to more than [`MAX_PARQUET_PAGES_HELD`]
///   (those decoders write what the data holds, whatever the header declares);
/// - a BROTLI page that does not decode to exactly the size its header declares, or is not
///   a Brotli stream parquet decodes: the page is decoded here, into a small buffer that is
///   reused and never past one byte more than declared, because parquet's Brotli codec
///   writes whatever the stream holds and a few hundred bytes of it can hold gigabytes
///   ([`check_brotli_page`]);
/// - a row group whose largest pages add up to more than [`MAX_PARQUET_PAGES_HELD`].
///
/// The pages are read through `file`, the handle the reader is then built over, not
/// opened again by path: what the reader reads can differ from what was checked here only
/// if someone writes into the file itself in between (whoever may write the input file
/// while it is published), which ingest's input stamp reveals only after the read.
///
/// Never panics. I/O errors are returned as such.
pub fn check_pages(
    file: &File,
    metadata: &parquet::file::metadata::ParquetMetaData,
) -> io::Result<Result<(), PageError>> {
    let len = file.metadata()?.len();
    for (row_group, group) in metadata.row_groups().iter().enumerate() {
        let mut held = 0u64;
        let mut largest = (0u64, String::new());
        for chunk in group.columns() {
            let column = chunk.column_path().string();
            match check_chunk(file, len, chunk)? {
                Ok(bytes) => {
                    held = held.saturating_add(bytes);
                    if bytes > largest.0 {
                        largest = (bytes, column);
                    }
                }
                Err(ChunkProblem::Malformed(problem)) => {
                    return Ok(Err(PageError::Malformed {
                        row_group,
                        column,
                        problem,
                    }));
                }
                Err(ChunkProblem::OverBound(problem)) => {
                    return Ok(Err(PageError::OverBound {
                        row_group,
                        column,
                        problem,
                    }));
                }
            }
        }
        if held > MAX_PARQUET_PAGES_HELD {
            return Ok(Err(PageError::OverBound {
                row_group,
                column: largest.1,
                problem: format!(
                    "the largest pages of the row group's columns declare {held} bytes once \
                     decompressed, which the reader holds at once; the limit is \
                     {MAX_PARQUET_PAGES_HELD} (this column's are the largest, {} bytes)",
                    largest.0
                ),
            }));
        }
    }
    Ok(Ok(()))
}

/// What one page header says, as parquet reads it (absent fields are `None`).
#[derive(Debug, Default)]
struct PageHeader {
    /// `type`: 0 data, 1 index, 2 dictionary, 3 data v2.
    page_type: Option<i32>,
    /// `uncompressed_page_size`.
    uncompressed: Option<i32>,
    /// `compressed_page_size`.
    compressed: Option<i32>,
    /// `dictionary_page_header.num_values`.
    dictionary_values: Option<i32>,
    /// The values' encoding of a data page (v1 or v2).
    encoding: Option<i32>,
    /// What a `data_page_header_v2` says of the page's levels, if the header has one.
    v2: Option<V2Levels>,
    /// Bytes of the header.
    len: usize,
}

/// The fields of a `DataPageHeaderV2` that say what parquet decompresses: the repetition
/// and definition levels open the page uncompressed, and `is_compressed` (true when
/// absent) says whether the rest is.
#[derive(Debug, Clone, Copy)]
struct V2Levels {
    /// `definition_levels_byte_length` (absent: parquet refuses the header).
    definition: Option<i32>,
    /// `repetition_levels_byte_length` (absent: parquet refuses the header).
    repetition: Option<i32>,
    /// `is_compressed`.
    is_compressed: bool,
}

pub(super) const DICTIONARY_PAGE: i32 = 2;
const INDEX_PAGE: i32 = 1;
/// `Encoding::DELTA_LENGTH_BYTE_ARRAY` and `DELTA_BYTE_ARRAY`.
const DELTA_LENGTH: i32 = 6;
const DELTA_BYTE_ARRAY: i32 = 7;

/// Most values the delta-encoded lengths of one page may declare: the reader allocates
/// 4 bytes per value (twice for `DELTA_BYTE_ARRAY`) before it decodes one.
const MAX_DELTA_VALUES: u64 = MAX_PARQUET_PAGE / 4;

/// Walks one column chunk's pages; what the reader holds of it at once (its largest
/// dictionary page and its largest data page, declared decompressed).
fn check_chunk(
    file: &File,
    file_len: u64,
    chunk: &parquet::file::metadata::ColumnChunkMetaData,
) -> io::Result<Result<u64, ChunkProblem>> {
    use parquet::basic::{Compression, Type};
    let malformed = |problem: String| Ok(Err(ChunkProblem::Malformed(problem)));
    let over = |problem: String| Ok(Err(ChunkProblem::OverBound(problem)));
    // `ColumnChunkMetaData::byte_range` (file/metadata/mod.rs:1057-1068).
    let start = chunk
        .dictionary_page_offset()
        .unwrap_or(chunk.data_page_offset());
    let size = chunk.compressed_size();
    let end = u64::try_from(start)
        .ok()
        .zip(u64::try_from(size).ok())
        .and_then(|(start, size)| start.checked_add(size));
    let Some(end) = end.filter(|end| *end <= file_len) else {
        return malformed(format!(
            "the column chunk declares {size} bytes at byte {start}, outside the file of \
             {file_len} bytes"
        ));
    };
    // How much one byte of a page can expand to when the decoder writes whatever the data
    // holds: deflate's limit, and about 255 for an LZ4 frame (parquet's LZ4 codec falls back
    // to frames). Snappy, LZ4_RAW and ZSTD write into a buffer of the declared size
    // (compression.rs: `resize` then a slice, or a cursor within its capacity) and fail past
    // it. Brotli's ratio has no useful bound: its pages are decoded instead.
    let expansion = match chunk.compression() {
        Compression::GZIP(_) => 1032,
        Compression::LZ4 => 255,
        _ => 1,
    };
    // Fewest bytes a PLAIN value of the column takes in a dictionary page, in eighths.
    let value_bits: u64 = match chunk.column_type() {
        Type::BOOLEAN => 1,
        Type::INT32 | Type::FLOAT | Type::BYTE_ARRAY => 32,
        Type::INT64 | Type::DOUBLE => 64,
        Type::INT96 => 96,
        Type::FIXED_LEN_BYTE_ARRAY => {
            8 * u64::try_from(chunk.column_descr().type_length()).map_or(1, |n| n.max(1))
        }
    };
    let brotli = matches!(chunk.compression(), Compression::BROTLI(_));
    let mut brotli_buffer = Vec::new();
    let mut at = start as u64;
    let (mut dictionary, mut data) = (0u64, 0u64);
    let mut delta = false;
    while at < end {
        let header = match read_page_header(file, at, file_len)? {
            Ok(header) => header,
            Err(what) => {
                return malformed(format!(
                    "the page header at byte {at} cannot be read as parquet reads it: {what}"
                ));
            }
        };
        let remaining = end - at;
        let (Some(compressed), Some(uncompressed)) = (header.compressed, header.uncompressed)
        else {
            return malformed(format!("the page header at byte {at} has no page sizes"));
        };
        // `verify_page_header_len` and `verify_page_size` (serialized_reader.rs:893-911).
        let body_left = remaining.saturating_sub(header.len as u64);
        let compressed = match u64::try_from(compressed) {
            Ok(c) if header.len as u64 <= remaining && c <= body_left => c,
            _ => {
                return malformed(format!(
                    "the page at byte {at} declares {compressed} bytes, but its column chunk \
                     has {body_left} bytes left after its header"
                ));
            }
        };
        let Ok(uncompressed) = u64::try_from(uncompressed) else {
            return malformed(format!(
                "the page at byte {at} declares a negative size once decompressed \
                 ({uncompressed})"
            ));
        };
        for (what, bytes) in [
            ("compressed", compressed),
            ("once decompressed", uncompressed),
        ] {
            if bytes > MAX_PARQUET_PAGE {
                return over(format!(
                    "the page at byte {at} declares {bytes} bytes {what}; the limit is \
                     {MAX_PARQUET_PAGE}"
                ));
            }
        }
        if compressed.saturating_mul(expansion) > MAX_PARQUET_PAGES_HELD {
            return over(format!(
                "the page at byte {at} holds {compressed} bytes of {:?} data, which can \
                 decompress to more than {MAX_PARQUET_PAGES_HELD} bytes whatever its header \
                 declares",
                chunk.compression()
            ));
        }
        // parquet's page reader skips index pages before it decompresses anything.
        if brotli && header.page_type != Some(INDEX_PAGE) {
            let body = at + header.len as u64;
            let page = BrotliPage {
                at,
                body,
                compressed,
                uncompressed,
                v2: header.v2,
            };
            if let Err(problem) = check_brotli_page(file, &page, &mut brotli_buffer)? {
                return malformed(problem);
            }
        }
        match header.page_type {
            Some(DICTIONARY_PAGE) => {
                let values = header.dictionary_values.unwrap_or(0);
                let room = uncompressed.saturating_mul(8) / value_bits;
                if u64::try_from(values).map_or(true, |v| v > room) {
                    return malformed(format!(
                        "the dictionary page at byte {at} declares {values} values, but its \
                         {uncompressed} bytes hold at most {room} of the column's type"
                    ));
                }
                dictionary = dictionary.max(uncompressed);
            }
            Some(INDEX_PAGE) => {}
            // An uncompressed page is held as read.
            _ => {
                data = data.max(uncompressed).max(compressed);
                delta |= matches!(header.encoding, Some(DELTA_LENGTH | DELTA_BYTE_ARRAY));
            }
        }
        at += header.len as u64 + compressed;
    }
    if delta && let Err(problem) = check_delta_lengths(file, chunk)? {
        return malformed(problem);
    }
    Ok(Ok(dictionary.saturating_add(data)))
}

/// Most bytes of a Brotli page decoded at a time, into one buffer reused page after page;
/// the decoder reads the file in pieces of this size too.
const BROTLI_CHUNK: usize = 64 * 1024;

/// The first 7 bits of a large-window Brotli stream, low bit first (brotli's
/// `DecodeWindowBits`: 1, then 000, then 001).
const LARGE_WINDOW: u8 = 0x11;

/// A BROTLI page, where its header places it and what it declares.
struct BrotliPage {
    /// Byte of the file where its header starts, to name it.
    at: u64,
    /// Byte where its body starts.
    body: u64,
    /// `compressed_page_size`: bytes of the body.
    compressed: u64,
    /// `uncompressed_page_size`.
    uncompressed: u64,
    /// Its data page v2 header's levels, if it has one.
    v2: Option<V2Levels>,
}

/// Decodes the body of a BROTLI page as parquet 59.3 decompresses it, and refuses it unless
/// it decodes to exactly the bytes its header declares.
///
/// parquet's codec (`BrotliCodec::decompress`, compression.rs:386-395) reads a
/// `brotli::Decompressor` to its end into a vector, which grows for as long as the stream
/// yields bytes: a few kilobytes of stream can yield gigabytes, and no ratio bounds it.
/// Here the same decoder is read through `Read::take(declared + 1)` into `buffer` (at most
/// [`BROTLI_CHUNK`] bytes, reused), from the file in pieces: nothing decoded is kept, and
/// decoding stops one byte past the declared size. The decoder's own memory is its
/// window, at most 16 MiB, and its prefix code tables, as large-window streams are
/// refused: they are not RFC 7932, which Parquet's BROTLI is, and parquet's decoder, which
/// reads them, would reserve a window of up to 1 GiB for one.
///
/// What is decoded is what `decode_page` (serialized_reader.rs:393-455) decompresses: a
/// `data_page_header_v2`, on a page of any type, leaves its repetition and definition
/// levels at the start of the body uncompressed, and the whole page when `is_compressed`
/// is false; nothing is decompressed when no byte is left to. Levels that parquet finds
/// implausible (negative, more than the page) are refused as it refuses them.
fn check_brotli_page(
    file: &File,
    page: &BrotliPage,
    buffer: &mut Vec<u8>,
) -> io::Result<Result<(), String>> {
    let at = page.at;
    let mut levels = 0u64;
    if let Some(v2) = page.v2 {
        let definition = v2.definition.unwrap_or(0);
        let repetition = v2.repetition.unwrap_or(0);
        let sum = u64::try_from(i64::from(definition) + i64::from(repetition));
        let implausible = |limit: u64, what: &str| {
            format!(
                "the data page at byte {at} declares {definition} bytes of definition levels \
                 and {repetition} of repetition levels, which its {limit} bytes {what} cannot \
                 hold"
            )
        };
        let sum = match sum {
            Ok(sum) if definition >= 0 && repetition >= 0 && sum <= page.uncompressed => sum,
            _ => return Ok(Err(implausible(page.uncompressed, "once decompressed"))),
        };
        if !v2.is_compressed {
            return Ok(Ok(()));
        }
        if sum > page.compressed {
            return Ok(Err(implausible(page.compressed, "compressed")));
        }
        levels = sum;
    }
    let declared = page.uncompressed - levels;
    if declared == 0 {
        return Ok(Ok(()));
    }
    let declares = if levels == 0 {
        format!("the {declared} bytes its header declares")
    } else {
        format!("the {declared} bytes its header declares after {levels} bytes of levels")
    };
    let (start, len) = (page.body + levels, page.compressed - levels);
    if len > 0 {
        let mut first = [0u8; 1];
        read_at(file, start, &mut first)?;
        if first[0] & 0x7f == LARGE_WINDOW {
            return Ok(Err(format!(
                "the BROTLI page at byte {at} is a large-window Brotli stream, which \
                 Parquet's BROTLI (RFC 7932) does not allow"
            )));
        }
    }
    let mut reader = file;
    reader.seek(SeekFrom::Start(start))?;
    let source = KeepError {
        inner: reader.take(len),
        error: None,
    };
    let mut stream = brotli::Decompressor::new(source, BROTLI_CHUNK).take(declared + 1);
    buffer.resize(BROTLI_CHUNK, 0);
    let mut decoded = 0u64;
    loop {
        match stream.read(buffer) {
            Ok(0) => break,
            Ok(n) => decoded += n as u64,
            Err(error) => {
                if let Some(error) = stream.get_mut().get_mut().error.take() {
                    return Err(error);
                }
                return Ok(Err(format!(
                    "the BROTLI page at byte {at} is not a Brotli stream parquet decodes \
                     ({error}), after {decoded} bytes of {declares}"
                )));
            }
        }
    }
    Ok(match decoded.cmp(&declared) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(format!(
            "the BROTLI page at byte {at} decodes to more than {declares} (parquet's \
             decoder would write all it holds, whatever its header declares)"
        )),
        std::cmp::Ordering::Less => Err(format!(
            "the BROTLI page at byte {at} decodes to {decoded} bytes, not {declares}"
        )),
    })
}

/// A reader that keeps its source's error aside, so that the caller can tell an I/O error
/// on the file from a stream the decoder refused (the decoder hands both on as
/// `io::Error`s). Interrupted reads are tried again.
struct KeepError<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: Read> Read for KeepError<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let kind = error.kind();
                    self.error = Some(error);
                    return Err(kind.into());
                }
                read => return read,
            }
        }
    }
}

/// Reads the data pages of a column chunk whose page headers passed [`check_chunk`], through
/// parquet's own page reader (the sizes it allocates are checked by now), and refuses a page
/// whose byte arrays are delta encoded with a count of lengths over the page's value count
/// or [`MAX_DELTA_VALUES`]: the arrow reader allocates a vector of that many lengths before
/// it decodes one (`ByteArrayDecoderDeltaLength::new`, array_reader/byte_array.rs:453-460;
/// `DeltaByteArrayDecoder::new`, decoder/delta_byte_array.rs:36-49), and the count is a
/// varint in the page data: 32 GiB from a 359-byte file. Stops where parquet's page reader
/// stops (an error there is the reader's error too).
fn check_delta_lengths(
    file: &File,
    chunk: &parquet::file::metadata::ColumnChunkMetaData,
) -> io::Result<Result<(), String>> {
    use parquet::column::page::{Page, PageReader};
    use parquet::file::serialized_reader::SerializedPageReader;
    let descr = chunk.column_descr();
    let reader = SerializedPageReader::new(std::sync::Arc::new(file.try_clone()?), chunk, 0, None);
    let Ok(mut reader) = reader else {
        return Ok(Ok(()));
    };
    let mut index = 0usize;
    while let Ok(Some(page)) = reader.get_next_page() {
        let (buf, num_values, encoding, start) = match page {
            Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding,
                rep_level_encoding,
                ..
            } => {
                // `parse_v1_level` (column/reader.rs:588-616), repetition then definition.
                let mut start = Some(0usize);
                for (max, level_encoding) in [
                    (descr.max_rep_level(), rep_level_encoding),
                    (descr.max_def_level(), def_level_encoding),
                ] {
                    if max > 0 {
                        start = start.and_then(|at| {
                            v1_levels_end(&buf, at, max, num_values, level_encoding)
                        });
                    }
                }
                let Some(start) = start else { break };
                (buf, num_values, encoding, start)
            }
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let start = def_levels_byte_len as usize + rep_levels_byte_len as usize;
                (buf, num_values, encoding, start)
            }
            Page::DictionaryPage { .. } => continue,
        };
        index += 1;
        use parquet::basic::Encoding;
        let counts = match encoding {
            Encoding::DELTA_LENGTH_BYTE_ARRAY => delta_lengths(&buf, start, false),
            Encoding::DELTA_BYTE_ARRAY => delta_lengths(&buf, start, true),
            _ => continue,
        };
        let most = u64::from(num_values).min(MAX_DELTA_VALUES);
        if let Some(count) = counts.into_iter().find(|count| *count > most) {
            return Ok(Err(format!(
                "data page {index} ({encoding}) declares {count} value lengths, more than its \
                 {num_values} values or the limit of {MAX_DELTA_VALUES}"
            )));
        }
    }
    Ok(Ok(()))
}

/// Where the values of a v1 data page start after the levels at `at` (`parse_v1_level`):
/// RLE levels after their 4-byte length, bit-packed ones after `num_values` levels.
fn v1_levels_end(
    buf: &[u8],
    at: usize,
    max_level: i16,
    num_values: u32,
    encoding: parquet::basic::Encoding,
) -> Option<usize> {
    #[allow(deprecated)]
    match encoding {
        parquet::basic::Encoding::RLE => {
            let len = i32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?) as u32;
            at.checked_add(4 + len as usize)
                .filter(|end| *end <= buf.len())
        }
        parquet::basic::Encoding::BIT_PACKED => {
            let bits = u64::BITS - (max_level as u64).leading_zeros();
            let bytes = (u64::from(num_values) * u64::from(bits)).div_ceil(8);
            at.checked_add(usize::try_from(bytes).ok()?)
                .filter(|end| *end <= buf.len())
        }
        _ => None,
    }
}

/// The value counts declared by the delta-encoded lengths at `buf[at..]`: one run of
/// lengths, or for `DELTA_BYTE_ARRAY` (`prefixed`) a run of prefix lengths and one of
/// suffix lengths, which starts where parquet's decoder says the first ends. A count that
/// cannot be read is left out (parquet fails there before it allocates).
fn delta_lengths(buf: &[u8], at: usize, prefixed: bool) -> Vec<u64> {
    let mut counts = Vec::new();
    let Some(mut input) = buf.get(at..).map(Input::new) else {
        return counts;
    };
    let Ok(run) = delta_header(&mut input) else {
        return counts;
    };
    counts.push(run.count);
    if prefixed
        && run.count <= MAX_DELTA_VALUES
        && let Ok(end) = delta_end(&mut input, &run)
        && let Some(mut suffixes) = buf.get(at.saturating_add(end)..).map(Input::new)
        && let Ok(run) = delta_header(&mut suffixes)
    {
        counts.push(run.count);
    }
    counts
}

/// The header of a `DELTA_BINARY_PACKED` run.
struct DeltaRun {
    /// Values per block.
    block_size: u64,
    /// Mini blocks per block.
    mini_blocks: u64,
    /// Values in the run, the first one included.
    count: u64,
}

/// The header of a `DELTA_BINARY_PACKED` run as parquet's `DeltaBitPackDecoder::set_data`
/// reads it (encodings/decoding.rs:673-740), refused where it refuses it.
fn delta_header(input: &mut Input<'_>) -> Result<DeltaRun, FooterError> {
    let block_size = input.varint()?;
    let mini_blocks = input.varint()?;
    let count = input.varint()?;
    // The first value.
    input.varint()?;
    if block_size == 0
        || mini_blocks == 0
        || block_size % 128 != 0
        || block_size % mini_blocks != 0
        || (block_size / mini_blocks) % 32 != 0
        || count > i64::MAX as u64
    {
        return Err(FooterError::Malformed(
            "not a delta-encoded run parquet reads",
        ));
    }
    Ok(DeltaRun {
        block_size,
        mini_blocks,
        count,
    })
}

/// Where a `DELTA_BINARY_PACKED` run whose header `run` was just read ends once parquet's
/// decoder has read every value (`next_block`, encodings/decoding.rs:603-639, and
/// `get_offset`, :588-599): after the last block's bit-packed mini blocks, those past the
/// last value counting for nothing. Bit-packed values are skipped, not read.
fn delta_end(input: &mut Input<'_>, run: &DeltaRun) -> Result<usize, FooterError> {
    let per_mini_block = run.block_size / run.mini_blocks;
    let mini_blocks =
        usize::try_from(run.mini_blocks).map_err(|_| FooterError::Malformed(TRUNCATED))?;
    let mut remaining = run.count.saturating_sub(1);
    while remaining > 0 {
        // The block's smallest delta, then the bit width of each mini block.
        input.varint()?;
        let widths = input.pos;
        input.advance(mini_blocks as u64)?;
        let mut end = input.pos as u64;
        for &width in &input.bytes[widths..widths + mini_blocks] {
            if remaining == 0 {
                break;
            }
            remaining = remaining.saturating_sub(per_mini_block);
            end = end.saturating_add(u64::from(width) * per_mini_block / 8);
        }
        input.advance(end - input.pos as u64)?;
    }
    Ok(input.pos)
}

/// Reads the page header at byte `at` of `file`: a first kilobyte, more while the header
/// runs on (up to [`MAX_PAGE_HEADER`] bytes or the end of the file).
fn read_page_header(
    file: &File,
    at: u64,
    file_len: u64,
) -> io::Result<Result<PageHeader, &'static str>> {
    let available = usize::try_from(file_len - at).unwrap_or(usize::MAX);
    let mut want = 1024usize;
    loop {
        let len = want.min(available).min(MAX_PAGE_HEADER);
        let mut bytes = vec![0u8; len];
        read_at(file, at, &mut bytes)?;
        match page_header(&mut Input::new(&bytes)) {
            Ok(header) => return Ok(Ok(header)),
            Err(FooterError::Malformed(what))
                if (what == TRUNCATED || what == TOO_MANY_ELEMENTS) && len < available =>
            {
                if len == MAX_PAGE_HEADER {
                    return Ok(Err("the header is over 16 MiB"));
                }
                want = want.saturating_mul(16);
            }
            Err(FooterError::Malformed(what)) => return Ok(Err(what)),
            Err(FooterError::TooDeep { .. }) => return Ok(Err("nested too deep")),
        }
    }
}

fn read_at(mut file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// `PageHeader::read_thrift_without_stats` (file/metadata/thrift/mod.rs:1207-1285, the
/// reader parquet uses when it does not read page statistics, its default): fields 1 to 4
/// as i32s whatever their declared type, 5 to 8 as the page-type headers (each by its own
/// reader, whatever the declared type), others skipped by their declared type.
fn page_header(input: &mut Input<'_>) -> Result<PageHeader, FooterError> {
    let mut header = PageHeader::default();
    let mut last_id = 0i16;
    while let Some((id, declared)) = input.field_header(&mut last_id)? {
        match id {
            1 => header.page_type = Some(input.zigzag()? as i32),
            2 => header.uncompressed = Some(input.zigzag()? as i32),
            3 => header.compressed = Some(input.zigzag()? as i32),
            4 => input.varint().map(drop)?,
            // DataPageHeader (:1017-1083): num_values and three encodings.
            5 => {
                let ints = input.int_struct(&[1, 2, 3, 4], &[])?;
                header.encoding = ints.iter().rev().find(|f| f.0 == 2).map(|f| f.1);
            }
            // IndexPageHeader: no field.
            6 => drop(input.int_struct(&[], &[])?),
            // DictionaryPageHeader: num_values, encoding, is_sorted.
            7 => {
                let ints = input.int_struct(&[1, 2], &[3])?;
                header.dictionary_values = ints.iter().rev().find(|f| f.0 == 1).map(|f| f.1);
            }
            // DataPageHeaderV2 (:1096-1180).
            8 => {
                let fields = input.int_struct(&[1, 2, 3, 4, 5, 6], &[7])?;
                let last = |id: i16| fields.iter().rev().find(|f| f.0 == id).map(|f| f.1);
                header.encoding = last(4);
                header.v2 = Some(V2Levels {
                    definition: last(5),
                    repetition: last(6),
                    is_compressed: last(7).is_none_or(|b| b != 0),
                });
            }
            _ => input.skip(declared, 1)?,
        }
    }
    header.len = input.pos;
    Ok(header)
}
