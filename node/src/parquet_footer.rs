//! Depth of a Parquet file's schema, read from its footer *before* the `parquet` crate sees it,
//! and the bounds of its pages.
//!
//! The `parquet` crate builds its schema tree, and the Arrow schema from it, by recursion: a
//! file whose schema is nested a few thousand levels deep overflows the stack of the thread
//! that opens it (and aborts the daemon) before any check on the Arrow schema could run. The
//! footer stores the schema flat, as a list of `SchemaElement`s in pre-order where each group
//! says how many children it has, so its depth can be measured in one loop.
//!
//! This module reads the footer's Thrift compact encoding as parquet 59.3 reads it, up to the
//! end of the schema, because the depth it measures must be that of the tree parquet builds:
//! where parquet's decoder departs from Thrift, this module departs with it. A field of a known
//! struct is read by the type the IDL gives it, whatever type its header declares (the schema
//! list even when declared a set, `num_children` from any integer encoding, truncated to 32
//! bits); a field parquet does not know is skipped by its declared type, with a skipper whose
//! own nesting is bounded ([`MAX_THRIFT_NESTING`]) and which, like parquet's, reads no byte for
//! a `bool` inside a list, but counts it: lists, sets and maps declaring more elements in all
//! than the input has bytes are refused (parquet would loop over each). What it does not copy
//! it refuses ([`FooterError::Malformed`]): a
//! footer field other than `version` before the schema (writers write `version`, then the
//! schema), a negative child count, a group with more children than elements follow it. It
//! never panics on any input and allocates only for the open groups it tracks, at most one per
//! schema element.
//!
//! Past the footer, [`check_pages`] walks every page header of every column chunk the same
//! way (as parquet's page reader decodes them, before any reader is built) and refuses what
//! parquet would allocate before checking it: pages past their chunk or the file, sizes over
//! [`MAX_PARQUET_PAGE`], dictionaries of more values than their bytes hold, delta-encoded
//! lengths over their page's values; and [`batch_rows`] picks rows per batch so that what
//! the reader holds for a batch (null slots of fixed-size columns, the values of long list
//! rows) stays within [`MAX_PARQUET_BATCH`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// Deepest Parquet schema accepted. An Arrow list is two Parquet levels (the `LIST` group
/// and its `repeated` group), a map two as well, a struct one, and the root message one: so
/// an Arrow type within [`MAX_TYPE_DEPTH`](mesh_protocol::bounds::MAX_TYPE_DEPTH) levels
/// always fits, and the exact limit is checked on the Arrow schema afterwards.
pub const MAX_PARQUET_DEPTH: usize = 2 * mesh_protocol::bounds::MAX_TYPE_DEPTH + 2;

/// Deepest nesting of Thrift structs, lists and maps the skipper follows (the `parquet`
/// crate's own skipper stops at 64 too).
pub const MAX_THRIFT_NESTING: usize = 64;

/// Why a footer was refused or could not be measured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FooterError {
    /// The schema is nested deeper than [`MAX_PARQUET_DEPTH`].
    #[error("the Parquet schema is nested {depth} levels deep; the limit is {max}")]
    TooDeep {
        /// Its depth (the root message is level 0, a top-level column level 1).
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a footer this module can measure the way parquet would read it.
    #[error("unreadable Parquet footer: {0}")]
    Malformed(&'static str),
}

/// Reads the footer of the Parquet file `file` (positioned anywhere) and checks the depth of
/// its schema with [`check_schema_depth`]. The footer read is bounded by the file's size.
/// I/O errors are returned as such; the caller's reader reports them better.
pub fn check_file(file: &mut File) -> io::Result<Result<(), FooterError>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len < 12 {
        return Ok(Err(FooterError::Malformed("the file is too short")));
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8))?;
    file.read_exact(&mut tail)?;
    if &tail[4..] != b"PAR1" {
        return Ok(Err(FooterError::Malformed("no PAR1 magic at the end")));
    }
    let meta_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if meta_len + 8 > len {
        return Ok(Err(FooterError::Malformed(
            "the footer is longer than the file",
        )));
    }
    let mut metadata = vec![0u8; meta_len as usize];
    file.seek(SeekFrom::End(-8 - meta_len as i64))?;
    file.read_exact(&mut metadata)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(check_schema_depth(&metadata))
}

/// Checks that the schema in a Thrift-encoded `FileMetaData` is nested at most
/// [`MAX_PARQUET_DEPTH`] levels (the root message is level 0). A footer without a schema
/// field passes: the `parquet` crate refuses it. Never panics.
pub fn check_schema_depth(metadata: &[u8]) -> Result<(), FooterError> {
    let depth = schema_depth(metadata)?;
    if depth > MAX_PARQUET_DEPTH {
        return Err(FooterError::TooDeep {
            depth,
            max: MAX_PARQUET_DEPTH,
        });
    }
    Ok(())
}

/// The depth of the schema tree parquet would build from the encoded `FileMetaData` (0 when
/// there is no schema field).
///
/// parquet 59.3 (`parquet_metadata_from_bytes`, file/metadata/thrift/mod.rs:782-855) reads the
/// fields in the order they come, each by its IDL type whatever its header declares, and
/// builds the schema tree from the first `schema` field it meets (:792-801, a list through
/// `read_thrift_vec` even when the header says set, or anything else).
fn schema_depth(metadata: &[u8]) -> Result<usize, FooterError> {
    let mut input = Input::new(metadata);
    let mut last_id = 0i16;
    while let Some((id, _declared)) = input.field_header(&mut last_id)? {
        match id {
            // `version`: `i32::read_thrift`, a zigzag varint.
            1 => input.varint().map(drop)?,
            2 => return element_tree_depth(&mut input),
            _ => {
                return Err(FooterError::Malformed(
                    "a field other than the version comes before the schema",
                ));
            }
        }
    }
    Ok(0)
}

/// Walks the `list<SchemaElement>` the way `parquet_schema_from_array` (schema/types.rs:
/// 1293-1420) builds its tree, without recursion: in pre-order, each group takes the next
/// `num_children` subtrees, and elements left after the first tree are further roots (parquet
/// builds them too before refusing the schema). Open groups are tracked by their remaining
/// children.
fn element_tree_depth(input: &mut Input<'_>) -> Result<usize, FooterError> {
    let (count, elem) = input.list_header()?;
    if elem != STRUCT {
        return Err(FooterError::Malformed("schema elements are not structs"));
    }
    // Remaining children of each open group, outermost first. Never longer than the element
    // count, which the footer's size bounds.
    let mut open: Vec<u64> = Vec::new();
    let mut deepest = 0;
    for index in 0..count {
        let num_children = element_children(input)?;
        if let Some(remaining) = open.last_mut() {
            *remaining = remaining.saturating_sub(1);
        }
        // parquet has recursed once per open group to reach this element.
        deepest = deepest.max(open.len());
        match num_children {
            None | Some(0) => {}
            // `usize::try_from(n)?` (schema/types.rs:1403): parquet refuses the schema here.
            Some(n) if n < 0 => {
                return Err(FooterError::Malformed(
                    "a schema element has a negative number of children",
                ));
            }
            Some(n) => {
                // parquet reserves room for `n` children before reading one (:1403), then
                // fails when the elements run out: refuse before it reserves 2^31 slots.
                let n = n as u64;
                if n > count - index - 1 {
                    return Err(FooterError::Malformed(
                        "a schema element has more children than elements follow it",
                    ));
                }
                open.push(n);
            }
        }
        while open.last() == Some(&0) {
            open.pop();
        }
    }
    Ok(deepest)
}

/// Reads one `SchemaElement` as parquet's generated reader does (`thrift_struct!`,
/// parquet_macros.rs:363-388; the fields at file/metadata/thrift/mod.rs:65-103): a known field
/// by its IDL type whatever its header declares, an unknown one skipped by the declared type,
/// a repeated field replacing the earlier value. Returns `num_children`.
fn element_children(input: &mut Input<'_>) -> Result<Option<i32>, FooterError> {
    let mut last_id = 0i16;
    let mut children = None;
    while let Some((id, declared)) = input.field_header(&mut last_id)? {
        match id {
            // type, type_length, repetition_type, converted_type, scale, precision, field_id:
            // i32s and enums, each a zigzag varint.
            1..=3 | 6..=9 => input.varint().map(drop)?,
            // name
            4 => input.binary()?,
            // `read_i32` is `read_zig_zag()? as _` (parquet_thrift.rs:451-453): a varint
            // whatever integer type (or other type) is declared, truncated to 32 bits.
            5 => children = Some(input.zigzag()? as i32),
            10 => input.logical_type()?,
            _ => input.skip(declared, 1)?,
        }
    }
    Ok(children)
}

// ---- Pages ----

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
/// - a row group whose largest pages add up to more than [`MAX_PARQUET_PAGES_HELD`].
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
    /// Bytes of the header.
    len: usize,
}

const DICTIONARY_PAGE: i32 = 2;
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
    // to frames). The other codecs write into the declared size.
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

/// Most bytes one batch read from a Parquet input may take once decoded, by the estimate of
/// [`batch_rows`]. The reader pads every null of a fixed-size column to its width and holds
/// the levels of every value of a batch's rows, which a few bytes of run-length encoded
/// levels can make billions: a column of 1 MiB wide values with 65,536 null rows, or one
/// row of a list column with 2^30 elements.
pub const MAX_PARQUET_BATCH: u64 = 1024 * 1024 * 1024;

/// What one value of a column costs the reader, levels and offsets included, besides the
/// value itself for a fixed-size column (its width).
const VALUE_COST: u64 = 16;

/// Rows per batch (at most `most`) so that a batch read from `metadata`'s row groups takes
/// at most [`MAX_PARQUET_BATCH`] (half of it per row group: a batch can span two), by an
/// estimate of what the reader holds: for each leaf column, as many values as rows, or for
/// a repeated column as many as its longest rows hold (up to all of its column chunk's
/// values), each of [`VALUE_COST`] bytes plus its fixed width. The longest rows of a
/// repeated column are counted from its repetition levels, read through parquet's page
/// reader. Refuses a file where a single row is over the bound.
///
/// Call after [`check_pages`] accepted the file.
pub fn batch_rows(
    file: &File,
    metadata: &parquet::file::metadata::ParquetMetaData,
    most: usize,
) -> io::Result<Result<usize, PageError>> {
    let budget = MAX_PARQUET_BATCH / 2;
    let mut rows = most.max(1) as u64;
    for (row_group, group) in metadata.row_groups().iter().enumerate() {
        // (cost of a value, values in the longest row, values in the chunk, column) of
        // each leaf column.
        let mut leaves = Vec::new();
        for chunk in group.columns() {
            let descr = chunk.column_descr();
            let width = match descr.physical_type() {
                parquet::basic::Type::FIXED_LEN_BYTE_ARRAY => {
                    u64::try_from(descr.type_length()).unwrap_or(0)
                }
                _ => 0,
            };
            let cost = VALUE_COST + width;
            let (longest, values) = if descr.max_rep_level() > 0 {
                let Some(levels) = repeated_levels(file, chunk)? else {
                    continue;
                };
                levels
            } else {
                (1, u64::MAX)
            };
            leaves.push((cost, longest, values, chunk.column_path().string()));
        }
        let estimate = |rows: u64| -> u64 {
            leaves
                .iter()
                .map(|(cost, longest, values, _)| {
                    rows.saturating_mul(*longest)
                        .min(*values)
                        .saturating_mul(*cost)
                })
                .fold(0u64, u64::saturating_add)
        };
        while rows > 1 && estimate(rows) > budget {
            rows /= 2;
        }
        if estimate(rows) > budget {
            let (cost, longest, _, column) = leaves
                .iter()
                .max_by_key(|(cost, longest, _, _)| cost.saturating_mul(*longest))
                .cloned()
                .unwrap_or_default();
            return Ok(Err(PageError::OverBound {
                row_group,
                column,
                problem: format!(
                    "one row takes about {} bytes once read ({longest} values of {cost} bytes \
                     in this column), over the limit of {budget} bytes",
                    estimate(1)
                ),
            }));
        }
    }
    Ok(Ok(rows as usize))
}

/// The most values in one row of a repeated column chunk, and its values, counted from the
/// repetition levels of its data pages as parquet's page reader returns them (a level 0
/// starts a row); `None` when the pages cannot be read (the reader fails there too, before
/// it decodes a batch from them). Levels encoded `BIT_PACKED` (deprecated) count a whole
/// page as one row.
fn repeated_levels(
    file: &File,
    chunk: &parquet::file::metadata::ColumnChunkMetaData,
) -> io::Result<Option<(u64, u64)>> {
    use parquet::basic::Encoding;
    use parquet::column::page::{Page, PageReader};
    use parquet::file::serialized_reader::SerializedPageReader;
    let descr = chunk.column_descr();
    let bit_width = u64::BITS - (descr.max_rep_level() as u64).leading_zeros();
    let Ok(mut reader) =
        SerializedPageReader::new(std::sync::Arc::new(file.try_clone()?), chunk, 0, None)
    else {
        return Ok(None);
    };
    let mut rows = RowLevels::default();
    while let Ok(Some(page)) = reader.get_next_page() {
        let (levels, num_values) = match &page {
            Page::DataPage {
                buf,
                num_values,
                rep_level_encoding: Encoding::RLE,
                ..
            } => {
                let len = buf
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
                let end = (4 + len as usize).min(buf.len());
                (buf.get(4..end).unwrap_or_default(), *num_values)
            }
            Page::DataPage { num_values, .. } => {
                rows.run(0, 1);
                rows.run(1, u64::from(*num_values).saturating_sub(1));
                continue;
            }
            Page::DataPageV2 {
                buf,
                num_values,
                rep_levels_byte_len,
                ..
            } => {
                let end = (*rep_levels_byte_len as usize).min(buf.len());
                (&buf[..end], *num_values)
            }
            Page::DictionaryPage { .. } => continue,
        };
        rows.page(levels, bit_width, u64::from(num_values));
    }
    rows.finish();
    Ok(Some((rows.longest, rows.values)))
}

/// Counts rows and values from repetition levels.
#[derive(Debug, Default)]
struct RowLevels {
    /// Values in the row being counted.
    current: u64,
    /// Values in the longest row so far.
    longest: u64,
    /// Values so far.
    values: u64,
}

impl RowLevels {
    /// `count` levels of `value`.
    fn run(&mut self, value: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.values = self.values.saturating_add(count);
        if value == 0 {
            // Each starts a row; all but the last have one value.
            self.finish();
            self.longest = self.longest.max(1);
            self.current = 1;
        } else {
            self.current = self.current.saturating_add(count);
        }
    }

    fn finish(&mut self) {
        self.longest = self.longest.max(self.current);
    }

    /// The levels of one page: `data` in the RLE / bit-packed hybrid encoding of `bit_width`
    /// bits, at most `count` of them (as parquet's `RleDecoder` reads them).
    fn page(&mut self, data: &[u8], bit_width: u32, count: u64) {
        let mut input = Input::new(data);
        let mut left = count;
        let value_bytes = bit_width.div_ceil(8) as usize;
        while left > 0 {
            let Ok(header) = input.varint() else { return };
            if header & 1 == 0 {
                // A run of one value.
                let Some(bytes) = data.get(input.pos..input.pos + value_bytes) else {
                    return;
                };
                input.pos += value_bytes;
                let value = bytes.iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b));
                let n = (header >> 1).min(left);
                self.run(value, n);
                left -= n;
            } else {
                // Groups of 8 bit-packed values, least significant bit first.
                let groups = header >> 1;
                let bytes = groups.saturating_mul(u64::from(bit_width));
                let start = input.pos;
                let end = (start as u64).saturating_add(bytes).min(data.len() as u64) as usize;
                input.pos = end;
                let packed = &data[start..end];
                let n = (groups.saturating_mul(8))
                    .min(left)
                    .min(packed.len() as u64 * 8 / u64::from(bit_width.max(1)));
                for i in 0..n {
                    let bit = i * u64::from(bit_width);
                    let mut value = 0u64;
                    for b in 0..u64::from(bit_width) {
                        let at = bit + b;
                        let set = packed[(at / 8) as usize] >> (at % 8) & 1;
                        value |= u64::from(set) << b;
                    }
                    self.run(value, 1);
                }
                left -= n;
                if left > 0 && n < groups.saturating_mul(8) {
                    // The data ends inside the run.
                    return;
                }
            }
        }
    }
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
                let ints = input.int_struct(&[1, 2, 3, 4, 5, 6], &[7])?;
                header.encoding = ints.iter().rev().find(|f| f.0 == 4).map(|f| f.1);
            }
            _ => input.skip(declared, 1)?,
        }
    }
    header.len = input.pos;
    Ok(header)
}

// Thrift compact protocol type codes.
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

/// How parquet reads a field of a struct it knows, whatever type the field's header declares.
#[derive(Debug, Clone, Copy)]
enum Typed {
    /// An i16, i32, i64 or enum: a zigzag varint.
    Varint,
    /// An i8: one byte.
    Byte,
    /// A bool: in the field header (which must declare a bool), no byte after it.
    Bool,
    /// A string or binary: a varint length, then the bytes.
    Binary,
    /// A `TimeUnit` union.
    TimeUnit,
}

/// A cursor over the footer bytes.
struct Input<'a> {
    /// The encoded `FileMetaData` (or a page header).
    bytes: &'a [u8],
    /// Next byte to read.
    pos: usize,
    /// Elements of lists, sets and maps that may still be skipped: the input's length.
    budget: u64,
}

impl<'a> Input<'a> {
    fn new(bytes: &'a [u8]) -> Input<'a> {
        Input {
            bytes,
            pos: 0,
            budget: bytes.len() as u64,
        }
    }
}

/// What [`Input`] says when the bytes end before what it reads.
const TRUNCATED: &str = "truncated";

/// What [`Input`] says when collections declare more elements than bytes follow.
const TOO_MANY_ELEMENTS: &str = "lists declare more elements than bytes follow";

impl Input<'_> {
    fn byte(&mut self) -> Result<u8, FooterError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(FooterError::Malformed(TRUNCATED))?;
        self.pos += 1;
        Ok(b)
    }

    fn advance(&mut self, n: u64) -> Result<(), FooterError> {
        let n = usize::try_from(n).map_err(|_| FooterError::Malformed("length overflow"))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(FooterError::Malformed(TRUNCATED))?;
        self.pos = end;
        Ok(())
    }

    /// An unsigned varint of at most 10 bytes (parquet reads longer ones; they are refused).
    fn varint(&mut self) -> Result<u64, FooterError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(FooterError::Malformed("varint too long"))
    }

    fn zigzag(&mut self) -> Result<i64, FooterError> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A string or binary.
    fn binary(&mut self) -> Result<(), FooterError> {
        let len = self.varint()?;
        self.advance(len)
    }

    /// The next field's id and declared type, or `None` at a stop, as parquet's
    /// `read_field_begin` (parquet_thrift.rs:375-408) reads them: a stop is any byte whose
    /// type nibble is 0, a full id is an i16 read as a truncated zigzag varint, and an id
    /// delta that overflows is an error.
    fn field_header(&mut self, last_id: &mut i16) -> Result<Option<(i16, u8)>, FooterError> {
        let b = self.byte()?;
        let ty = b & 0x0f;
        if ty == 0 {
            return Ok(None);
        }
        if ty > UUID {
            return Err(FooterError::Malformed("unknown Thrift type"));
        }
        let delta = b >> 4;
        let id = if delta == 0 {
            self.zigzag()? as i16
        } else {
            last_id
                .checked_add(i16::from(delta))
                .ok_or(FooterError::Malformed("field id overflow"))?
        };
        *last_id = id;
        Ok(Some((id, ty)))
    }

    /// A list or set header: element count and element type.
    fn list_header(&mut self) -> Result<(u64, u8), FooterError> {
        let b = self.byte()?;
        let short = u64::from(b >> 4);
        let count = if short == 15 { self.varint()? } else { short };
        self.elements(count)?;
        Ok((count, b & 0x0f))
    }

    /// Charges `count` elements of a list, set or map to the budget. Thrift writes every
    /// element with at least one byte, so a count over the bytes that follow is a lie, and
    /// so are nested collections whose counts add up to more than the input: parquet skips a
    /// `bool` element without reading a byte, and would loop 2^31 times for a 6-byte list.
    fn elements(&mut self, count: u64) -> Result<(), FooterError> {
        let left = (self.bytes.len() - self.pos) as u64;
        if count > left || count > self.budget {
            return Err(FooterError::Malformed(TOO_MANY_ELEMENTS));
        }
        self.budget -= count;
        Ok(())
    }

    /// A struct parquet reads with `thrift_struct!`: the fields in `known` by their type,
    /// others skipped by their declared type.
    fn typed_struct(&mut self, known: &[(i16, Typed)]) -> Result<(), FooterError> {
        let mut last_id = 0i16;
        while let Some((id, declared)) = self.field_header(&mut last_id)? {
            match known.iter().find(|(k, _)| *k == id).map(|(_, t)| *t) {
                Some(Typed::Varint) => self.varint().map(drop)?,
                Some(Typed::Byte) => self.advance(1)?,
                // `bool_val` (parquet_thrift.rs:259-265) refuses any other declared type.
                Some(Typed::Bool) if matches!(declared, BOOL_TRUE | BOOL_FALSE) => {}
                Some(Typed::Bool) => {
                    return Err(FooterError::Malformed(
                        "a bool field is declared as another type",
                    ));
                }
                Some(Typed::Binary) => self.binary()?,
                Some(Typed::TimeUnit) => self.time_unit()?,
                None => self.skip(declared, 2)?,
            }
        }
        Ok(())
    }

    /// A struct parquet reads with its own reader: the fields in `ints` as i32s (a zigzag
    /// varint truncated to 32 bits, whatever type is declared), those in `bools` from the
    /// field header (which must declare a bool), others skipped by their declared type.
    /// Returns the ints in the order read (a repeated field replaces the earlier value).
    fn int_struct(&mut self, ints: &[i16], bools: &[i16]) -> Result<Vec<(i16, i32)>, FooterError> {
        let mut last_id = 0i16;
        let mut read = Vec::new();
        while let Some((id, declared)) = self.field_header(&mut last_id)? {
            if ints.contains(&id) {
                read.push((id, self.zigzag()? as i32));
            } else if bools.contains(&id) {
                if !matches!(declared, BOOL_TRUE | BOOL_FALSE) {
                    return Err(FooterError::Malformed(
                        "a bool field is declared as another type",
                    ));
                }
            } else {
                self.skip(declared, 2)?;
            }
        }
        Ok(read)
    }

    /// `LogicalType` (basic.rs:256-297), a union read by `thrift_union_with_unknown!`
    /// (parquet_macros.rs:292-317): one field (a variant parquet does not know is skipped by
    /// its declared type), then a stop.
    fn logical_type(&mut self) -> Result<(), FooterError> {
        use Typed::{Binary, Bool, Byte, TimeUnit, Varint};
        let mut last_id = 0i16;
        let (id, declared) = self
            .field_header(&mut last_id)?
            .ok_or(FooterError::Malformed("an empty logical type"))?;
        match id {
            1..=4 | 6 | 11..=15 => self.empty_struct()?,
            // DecimalType
            5 => self.typed_struct(&[(1, Varint), (2, Varint)])?,
            // TimeType, TimestampType
            7 | 8 => self.typed_struct(&[(1, Bool), (2, TimeUnit)])?,
            // IntType
            10 => self.typed_struct(&[(1, Byte), (2, Bool)])?,
            // VariantType
            16 => self.typed_struct(&[(1, Byte)])?,
            // GeometryType
            17 => self.typed_struct(&[(1, Binary)])?,
            // GeographyType
            18 => self.typed_struct(&[(1, Binary), (2, Varint)])?,
            _ => self.skip(declared, 2)?,
        }
        self.union_end(id)
    }

    /// `TimeUnit` (basic.rs:177-183), read by `thrift_union_all_empty!`
    /// (parquet_macros.rs:142-166).
    fn time_unit(&mut self) -> Result<(), FooterError> {
        let mut last_id = 0i16;
        match self.field_header(&mut last_id)? {
            Some((id @ 1..=3, _)) => {
                self.empty_struct()?;
                self.union_end(id)
            }
            _ => Err(FooterError::Malformed("not a time unit")),
        }
    }

    /// An empty struct as `skip_empty_struct` reads it (parquet_thrift.rs:491-499): one zero.
    fn empty_struct(&mut self) -> Result<(), FooterError> {
        match self.byte()? {
            0 => Ok(()),
            _ => Err(FooterError::Malformed("an empty struct has fields")),
        }
    }

    /// The stop after a union's one field.
    fn union_end(&mut self, mut last_id: i16) -> Result<(), FooterError> {
        match self.field_header(&mut last_id)? {
            None => Ok(()),
            Some(_) => Err(FooterError::Malformed("a union has two fields")),
        }
    }

    /// Skips one value of declared type `ty` as parquet's `skip_till_depth` does
    /// (parquet_thrift.rs:501-560). `nesting` counts the enclosing containers.
    fn skip(&mut self, ty: u8, nesting: usize) -> Result<(), FooterError> {
        if nesting > MAX_THRIFT_NESTING {
            return Err(FooterError::Malformed("nested too deep"));
        }
        match ty {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.advance(1),
            I16 | I32 | I64 => self.varint().map(drop),
            DOUBLE => self.advance(8),
            UUID => self.advance(16),
            BINARY => self.binary(),
            LIST | SET => {
                let (count, elem) = self.list_header()?;
                // A bool element is skipped as a bool field: no byte (:508, :525-531),
                // although Thrift writes one. Reading it would put this walk a byte away
                // from parquet's for every such element; there is nothing to walk.
                if !matches!(elem, BOOL_TRUE | BOOL_FALSE) {
                    for _ in 0..count {
                        self.skip(elem, nesting + 1)?;
                    }
                }
                Ok(())
            }
            MAP => {
                let count = self.varint()?;
                if count == 0 {
                    return Ok(());
                }
                self.elements(count)?;
                let types = self.byte()?;
                let bools = |t: u8| matches!(t, BOOL_TRUE | BOOL_FALSE);
                if !(bools(types >> 4) && bools(types & 0x0f)) {
                    for _ in 0..count {
                        self.skip(types >> 4, nesting + 1)?;
                        self.skip(types & 0x0f, nesting + 1)?;
                    }
                }
                Ok(())
            }
            STRUCT => {
                // parquet skips a struct's fields with a last id of 0 each time.
                while let Some((_, ty)) = self.field_header(&mut 0)? {
                    self.skip(ty, nesting + 1)?;
                }
                Ok(())
            }
            _ => Err(FooterError::Malformed("unknown Thrift type")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Fields, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::ParquetMetaDataReader;

    use super::*;

    fn nested_list(depth: usize) -> DataType {
        let mut data_type = DataType::Int32;
        for _ in 0..depth {
            data_type = DataType::List(Arc::new(Field::new("item", data_type, true)));
        }
        data_type
    }

    /// The footer bytes of a Parquet file with `schema` and no rows.
    fn footer(schema: Schema) -> Vec<u8> {
        let bytes = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let mut out = Vec::new();
                let mut writer = ArrowWriter::try_new(&mut out, Arc::new(schema), None).unwrap();
                writer.flush().unwrap();
                writer.close().unwrap();
                out
            })
            .unwrap()
            .join()
            .unwrap();
        let n = bytes.len();
        assert_eq!(&bytes[n - 4..], b"PAR1");
        let meta_len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
        bytes[n - 8 - meta_len..n - 8].to_vec()
    }

    #[test]
    fn measures_real_footers() {
        let flat = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Utf8, true),
            Field::new(
                "s",
                DataType::Struct(Fields::from(vec![Field::new("x", nested_list(2), true)])),
                true,
            ),
        ]);
        assert_eq!(check_schema_depth(&footer(flat)), Ok(()));
        let limit = mesh_protocol::bounds::MAX_TYPE_DEPTH;
        let at_limit = Schema::new(vec![Field::new("deep", nested_list(limit), true)]);
        assert_eq!(check_schema_depth(&footer(at_limit)), Ok(()));
        let deep = Schema::new(vec![Field::new("deep", nested_list(3000), true)]);
        // Each Arrow list is two Parquet levels, under the root message.
        assert_eq!(
            check_schema_depth(&footer(deep)),
            Err(FooterError::TooDeep {
                depth: 6001,
                max: MAX_PARQUET_DEPTH
            })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let real = footer(Schema::new(vec![Field::new("a", nested_list(3), true)]));
        for cut in 0..real.len() {
            let _ = check_schema_depth(&real[..cut]);
        }
        for i in 0..real.len() {
            let mut bad = real.clone();
            bad[i] ^= 0xff;
            let _ = check_schema_depth(&bad);
        }
        // Deeply nested Thrift structs are refused, not followed.
        let mut nested = vec![0x1c; 10_000];
        nested.extend(vec![0; 10_000]);
        assert!(check_schema_depth(&nested).is_err());
        assert!(check_schema_depth(&[]).is_err());
        // A list that claims more elements than there are bytes.
        assert!(check_schema_depth(&[0x19, 0xfc, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    // ---- Hand-made footers, encoded as a hostile writer would. ----

    pub(crate) fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    /// `num_children` as field 5 after field 4, declared as `ty`, holding `value`.
    fn children(ty: u8, value: i64) -> Vec<u8> {
        let mut out = vec![0x10 | ty];
        varint(zigzag(value), &mut out);
        out
    }

    /// A `list<SchemaElement>` that is a chain: the root and `groups - 1` groups, each ending
    /// (after its name, field 4) with `num_children`, then an INT32 leaf at depth `groups`.
    fn chain_list(groups: usize, num_children: &[u8]) -> Vec<u8> {
        let mut out = vec![0xfc];
        varint(groups as u64 + 1, &mut out);
        // Root: name "r".
        out.extend([0x48, 1, b'r']);
        out.extend(num_children);
        out.push(0);
        for _ in 1..groups {
            // repetition_type OPTIONAL, name "g".
            out.extend([0x35, 0x02, 0x18, 1, b'g']);
            out.extend(num_children);
            out.push(0);
        }
        // Leaf: type INT32, repetition_type OPTIONAL, name "x".
        out.extend([0x15, 0x02, 0x25, 0x02, 0x18, 1, b'x', 0]);
        out
    }

    /// num_rows 0, an empty row_groups list, stop: what follows the schema.
    const AFTER_SCHEMA: [u8; 5] = [0x16, 0x00, 0x19, 0x0c, 0x00];

    /// A whole `FileMetaData` (version, schema declared as `schema_type`, num_rows,
    /// row_groups) around [`chain_list`].
    fn chain(groups: usize, schema_type: u8, num_children: &[u8]) -> Vec<u8> {
        let mut out = vec![0x15, 0x02, 0x10 | schema_type];
        out.extend(chain_list(groups, num_children));
        out.extend(AFTER_SCHEMA);
        out
    }

    fn too_deep(footer: &[u8]) -> bool {
        matches!(check_schema_depth(footer), Err(FooterError::TooDeep { .. }))
    }

    /// Depth of the schema tree parquet itself builds from `footer`.
    fn parquet_depth(footer: &[u8]) -> usize {
        let metadata =
            ParquetMetaDataReader::decode_metadata(footer).expect("parquet reads the footer");
        let mut deepest = 0;
        let mut todo = vec![(metadata.file_metadata().schema(), 0)];
        while let Some((node, depth)) = todo.pop() {
            deepest = deepest.max(depth);
            if node.is_group() {
                todo.extend(node.get_fields().iter().map(|f| (f.as_ref(), depth + 1)));
            }
        }
        deepest
    }

    /// `num_children` = 1 hidden behind a `list<bool>` in field 11, which Thrift encodes with
    /// a byte per element and parquet skips reading none: parquet reads the three "bools" as
    /// field 5 (full id 5, I32) holding 1.
    const HIDDEN_BEHIND_BOOLS: [u8; 5] = [0x79, 0x31, 0x05, 0x0a, 0x02];

    #[test]
    fn a_schema_declared_as_a_set_is_measured() {
        // parquet reads field 2 as a list whatever type its header declares.
        let footer = chain(100_000, SET, &children(I32, 1));
        assert_eq!(
            check_schema_depth(&footer),
            Err(FooterError::TooDeep {
                depth: 100_000,
                max: MAX_PARQUET_DEPTH
            })
        );
        for declared in [LIST, I32, BINARY, STRUCT] {
            assert!(too_deep(&chain(100_000, declared, &children(I32, 1))));
        }
    }

    #[test]
    fn num_children_is_read_as_parquet_reads_it() {
        // Any integer type: parquet reads a zigzag varint and keeps 32 bits.
        for ty in [I16, I64, BYTE] {
            assert!(
                too_deep(&chain(100_000, LIST, &children(ty, 1))),
                "type {ty}"
            );
        }
        // 2^32 + 1 is 1 once truncated to an i32.
        assert!(too_deep(&chain(
            100_000,
            LIST,
            &children(I32, (1 << 32) + 1)
        )));
        assert!(too_deep(&chain(
            100_000,
            LIST,
            &children(I64, (1 << 32) + 1)
        )));
    }

    #[test]
    fn fields_parquet_reads_by_type_cannot_hide_the_schema() {
        // A version declared as binary: a Thrift skipper jumps over its "bytes" (the deep
        // schema) to a harmless schema after it; parquet reads one varint and then the deep
        // schema.
        let deep = {
            let mut out = vec![0x19];
            out.extend(chain_list(100_000, &children(I32, 1)));
            out
        };
        let mut footer = vec![0x18];
        varint(deep.len() as u64, &mut footer);
        footer.extend(&deep);
        footer.extend([0x19, 0x1c, 0x48, 1, b'r', 0]);
        footer.extend(AFTER_SCHEMA);
        assert!(too_deep(&footer));
        // A `num_children` inside what Thrift calls a list of bools.
        assert!(too_deep(&chain(100_000, LIST, &HIDDEN_BEHIND_BOOLS)));
        // Another footer field before the schema (here num_rows, then the schema under a
        // full field id) is refused, although parquet reads it: no writer puts one there, and
        // each is read by a decoder of its own this module does not copy.
        let mut early = vec![0x15, 0x02, 0x26, 0x00, 0x09, 0x04];
        early.extend(chain_list(3, &children(I32, 1)));
        early.extend([0x29, 0x0c, 0x00]);
        assert_eq!(parquet_depth(&early), 3);
        assert_eq!(
            check_schema_depth(&early),
            Err(FooterError::Malformed(
                "a field other than the version comes before the schema"
            ))
        );
    }

    #[test]
    fn depth_is_what_parquet_builds() {
        let flat = footer(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let mixed = footer(Schema::new(vec![
            Field::new("i8", DataType::Int8, true),
            Field::new("d", DataType::Decimal128(12, 3), true),
            Field::new(
                "t",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("s", DataType::Utf8, true),
            Field::new("l", nested_list(5), true),
        ]));
        let mut footers = vec![flat, mixed];
        for encoding in [
            children(I32, 1),
            children(I16, 1),
            children(I64, 1),
            children(BYTE, 1),
            children(I32, (1 << 32) + 1),
            HIDDEN_BEHIND_BOOLS.to_vec(),
        ] {
            for declared in [LIST, SET] {
                footers.push(chain(30, declared, &encoding));
            }
        }
        for (i, footer) in footers.iter().enumerate() {
            let want = parquet_depth(footer);
            assert!(want > 0, "footer {i}");
            assert_eq!(schema_depth(footer), Ok(want), "footer {i}");
        }
    }

    #[test]
    fn child_counts_parquet_refuses_are_refused() {
        // Negative: parquet refuses it (`usize::try_from`); so does the checker.
        let negative = chain(3, LIST, &children(I32, -1));
        assert!(ParquetMetaDataReader::decode_metadata(&negative).is_err());
        assert_eq!(
            check_schema_depth(&negative),
            Err(FooterError::Malformed(
                "a schema element has a negative number of children"
            ))
        );
        // 2^32 - 1 is -1 once truncated.
        assert!(check_schema_depth(&chain(3, LIST, &children(I64, (1 << 32) - 1))).is_err());
        // More children than elements follow: parquet would reserve room for 2^31 - 1
        // children (16 GiB) before finding out.
        let mut huge = vec![0x15, 0x02, 0x19, 0x2c, 0x48, 1, b'r'];
        huge.extend(children(I32, i32::MAX.into()));
        huge.extend([0, 0x15, 0x02, 0x25, 0x02, 0x18, 1, b'x', 0]);
        huge.extend(AFTER_SCHEMA);
        assert_eq!(
            check_schema_depth(&huge),
            Err(FooterError::Malformed(
                "a schema element has more children than elements follow it"
            ))
        );
    }

    #[test]
    fn nested_lists_of_bools_are_refused_not_walked() {
        // A schema element whose unknown field 11 is a list of 2,000 lists of 2,000 bools:
        // 4 million skips (parquet reads no byte for a bool element) from 8 kB. Each count is
        // under the bytes that follow; together they are not.
        let mut footer = vec![0x15, 0x02, 0x19, 0x1c, 0x48, 1, b'r', 0x79, 0xf9];
        varint(2000, &mut footer);
        for _ in 0..2000 {
            footer.push(0xf1);
            varint(2000, &mut footer);
        }
        footer.extend([0, 0]);
        footer.extend(AFTER_SCHEMA);
        let started = std::time::Instant::now();
        assert_eq!(
            check_schema_depth(&footer),
            Err(FooterError::Malformed(TOO_MANY_ELEMENTS))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    // ---- Pages ----

    fn i32_field(delta: u8, value: i64, out: &mut Vec<u8>) {
        out.push(delta << 4 | I32);
        varint(zigzag(value), out);
    }

    /// A page header as parquet's writer encodes it: type, sizes, then the header of its
    /// type (field 5 for a data page with `values` and RLE encodings, field 7 for a
    /// dictionary page of `values`, PLAIN), then `extra` (more fields, with full ids) and a
    /// stop.
    pub(crate) fn page_header(
        page_type: i32,
        uncompressed: i64,
        compressed: i64,
        values: i64,
        extra: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        i32_field(1, page_type.into(), &mut out);
        i32_field(1, uncompressed, &mut out);
        i32_field(1, compressed, &mut out);
        if page_type == DICTIONARY_PAGE {
            out.push(0x4c);
            i32_field(1, values, &mut out);
            i32_field(1, 0, &mut out);
        } else {
            out.push(0x2c);
            i32_field(1, values, &mut out);
            for _ in 0..3 {
                i32_field(1, 3, &mut out);
            }
        }
        out.push(0);
        out.extend(extra);
        out.push(0);
        out
    }

    /// A Parquet file of `columns` optional INT64 columns and 1 row (as `ArrowWriter` writes
    /// it, metadata and `ARROW:schema` hint included), whose column chunks are each made of
    /// `pages` (hand-made header and body), compressed with `codec`: the footer is written
    /// again with the chunks' new offsets and sizes. A first dictionary page makes the chunk
    /// start there.
    pub(crate) fn with_pages(
        columns: usize,
        pages: &[(Vec<u8>, Vec<u8>)],
        codec: parquet::basic::Compression,
    ) -> Vec<u8> {
        let column = Arc::new(arrow::array::Int64Array::from(vec![7]));
        with_chunks(columns, (column, true, 1), pages, codec, |chunk| chunk)
    }

    /// [`with_pages`] for one non-nullable column of the type of `column` (one value), in a
    /// file of `rows` rows.
    pub(crate) fn with_pages_of(
        column: arrow::array::ArrayRef,
        rows: i64,
        pages: &[(Vec<u8>, Vec<u8>)],
        codec: parquet::basic::Compression,
    ) -> Vec<u8> {
        with_chunks(1, (column, false, rows), pages, codec, |chunk| chunk)
    }

    /// [`with_pages`], with each chunk's metadata changed by `adjust` last. The columns are
    /// of the type of `column` (one value), nullable or not, and the file says it holds
    /// `rows` rows.
    fn with_chunks(
        columns: usize,
        (column, nullable, rows): (arrow::array::ArrayRef, bool, i64),
        pages: &[(Vec<u8>, Vec<u8>)],
        codec: parquet::basic::Compression,
        adjust: impl Fn(
            parquet::file::metadata::ColumnChunkMetaDataBuilder,
        ) -> parquet::file::metadata::ColumnChunkMetaDataBuilder,
    ) -> Vec<u8> {
        use arrow::array::RecordBatch;
        use parquet::file::metadata::ParquetMetaDataWriter;
        let fields: Vec<Field> = (0..columns)
            .map(|i| Field::new(format!("c{i}"), column.data_type().clone(), nullable))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let arrays = (0..columns).map(|_| column.clone()).collect();
        let mut real = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut real, schema.clone(), None).unwrap();
        writer
            .write(&RecordBatch::try_new(schema, arrays).unwrap())
            .unwrap();
        writer.close().unwrap();
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(real))
            .unwrap();
        // A header that opens with `type` = 2.
        let dictionary = pages
            .first()
            .is_some_and(|(h, _)| h.starts_with(&[0x15, 4]));
        let mut out = b"PAR1".to_vec();
        let group = &metadata.row_groups()[0];
        let mut chunks = Vec::new();
        for chunk in group.columns() {
            let start = out.len() as i64;
            for (header, body) in pages {
                out.extend(header);
                out.extend(body);
            }
            let first = pages.first().map_or(0, |(h, b)| (h.len() + b.len()) as i64);
            let size = out.len() as i64 - start;
            let builder = chunk
                .clone()
                .into_builder()
                .set_compression(codec)
                .set_dictionary_page_offset(dictionary.then_some(start))
                .set_data_page_offset(if dictionary { start + first } else { start })
                .set_total_compressed_size(size)
                .set_total_uncompressed_size(size)
                .set_offset_index_offset(None)
                .set_offset_index_length(None)
                .set_column_index_offset(None)
                .set_column_index_length(None);
            chunks.push(adjust(builder).build().unwrap());
        }
        let group = group
            .clone()
            .into_builder()
            .set_column_metadata(chunks)
            .set_num_rows(rows)
            .build()
            .unwrap();
        let file = metadata.file_metadata();
        let file = parquet::file::metadata::FileMetaData::new(
            file.version(),
            rows,
            file.created_by().map(str::to_owned),
            file.key_value_metadata().cloned(),
            file.schema_descr_ptr(),
            file.column_orders().cloned(),
        );
        let metadata = parquet::file::metadata::ParquetMetaDataBuilder::new(file)
            .set_row_groups(vec![group])
            .set_column_index(None)
            .set_offset_index(None)
            .build();
        ParquetMetaDataWriter::new(&mut out, &metadata)
            .finish()
            .unwrap();
        out
    }

    fn pages_of(bytes: &[u8]) -> Result<(), PageError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages.parquet");
        std::fs::write(&path, bytes).unwrap();
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(bytes.to_vec()))
            .unwrap();
        check_pages(&File::open(&path).unwrap(), &metadata).unwrap()
    }

    fn problem(result: Result<(), PageError>) -> String {
        match result {
            Err(PageError::Malformed { problem, .. } | PageError::OverBound { problem, .. }) => {
                problem
            }
            Ok(()) => panic!("the pages were accepted"),
        }
    }

    #[test]
    fn the_pages_of_real_files_pass() {
        use parquet::basic::{Compression, GzipLevel, ZstdLevel};
        use parquet::file::properties::{WriterProperties, WriterVersion};
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("l", nested_list(2), true),
        ]));
        let batch = arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow::array::Int64Array::from_iter((0..5000).map(Some))),
                Arc::new(arrow::array::StringArray::from_iter_values(
                    (0..5000).map(|i| format!("v{}", i % 300)),
                )),
                arrow::array::new_null_array(&nested_list(2), 5000),
            ],
        )
        .unwrap();
        for (codec, version) in [
            (Compression::SNAPPY, WriterVersion::PARQUET_1_0),
            (
                Compression::ZSTD(ZstdLevel::default()),
                WriterVersion::PARQUET_2_0,
            ),
            (
                Compression::GZIP(GzipLevel::default()),
                WriterVersion::PARQUET_1_0,
            ),
            (Compression::LZ4_RAW, WriterVersion::PARQUET_2_0),
            (Compression::UNCOMPRESSED, WriterVersion::PARQUET_1_0),
        ] {
            let properties = WriterProperties::builder()
                .set_compression(codec)
                .set_writer_version(version)
                .set_data_page_row_count_limit(100)
                .set_write_batch_size(100)
                .set_max_row_group_row_count(Some(2000))
                .build();
            let mut bytes = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut bytes, schema.clone(), Some(properties)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            assert_eq!(pages_of(&bytes), Ok(()), "{codec:?}");
        }
    }

    #[test]
    fn a_dictionary_of_more_values_than_its_page_holds_is_refused() {
        use parquet::basic::Compression;
        // 2^30 INT64 values in 8 bytes: parquet would allocate 8 GiB for the dictionary
        // before decoding it (found by the ingest soak: an abort).
        let dictionary = page_header(DICTIONARY_PAGE, 8, 8, 1 << 30, &[]);
        let data = page_header(0, 2, 2, 1, &[]);
        let pages = [(dictionary, vec![0; 8]), (data, vec![0; 2])];
        let bytes = with_pages(1, &pages, Compression::UNCOMPRESSED);
        let problem = problem(pages_of(&bytes));
        assert!(
            problem.contains("declares 1073741824 values, but its 8 bytes hold at most 1"),
            "{problem}"
        );
        // A negative count (parquet reads it as a u32: 4 billion).
        let dictionary = page_header(DICTIONARY_PAGE, 8, 8, -1, &[]);
        let pages = [(dictionary, vec![0; 8]), (pages[1].0.clone(), vec![0; 2])];
        assert!(pages_of(&with_pages(1, &pages, Compression::UNCOMPRESSED)).is_err());
        // As many as fit is fine.
        let dictionary = page_header(DICTIONARY_PAGE, 8, 8, 1, &[]);
        let pages = [(dictionary, vec![0; 8]), (pages[1].0.clone(), vec![0; 2])];
        assert_eq!(
            pages_of(&with_pages(1, &pages, Compression::UNCOMPRESSED)),
            Ok(())
        );
    }

    #[test]
    fn pages_that_declare_more_than_their_chunk_or_a_bound_are_refused() {
        use parquet::basic::{Compression, GzipLevel};
        let page = |uncompressed, compressed, body: usize| {
            vec![(
                page_header(0, uncompressed, compressed, 1, &[]),
                vec![0; body],
            )]
        };
        let plain = Compression::UNCOMPRESSED;
        // A body past the chunk (parquet reserves it before reading: 2 GiB here).
        let problem_of =
            |pages: &[(Vec<u8>, Vec<u8>)], codec| problem(pages_of(&with_pages(1, pages, codec)));
        let p = problem_of(&page(8, i32::MAX.into(), 8), plain);
        assert!(
            p.contains("declares 2147483647 bytes, but its column chunk"),
            "{p}"
        );
        // More than a page may declare once decompressed (Snappy zeroes that much first).
        let big = MAX_PARQUET_PAGE as i64 + 1;
        let p = problem_of(&page(big, 8, 8), Compression::SNAPPY);
        assert!(
            p.contains(&format!("declares {big} bytes once decompressed")),
            "{p}"
        );
        assert!(matches!(
            pages_of(&with_pages(1, &page(big, 8, 8), Compression::SNAPPY)),
            Err(PageError::OverBound { .. })
        ));
        // Negative sizes.
        assert!(problem_of(&page(-1, 8, 8), plain).contains("negative"));
        assert!(pages_of(&with_pages(1, &page(8, -1, 8), plain)).is_err());
        // A gzip page of 5 MiB could inflate to 5 GiB whatever it declares.
        let gzip = Compression::GZIP(GzipLevel::default());
        let body = 5 << 20;
        let p = problem_of(&page(8, body as i64, body), gzip);
        assert!(p.contains("can decompress to more than"), "{p}");
        // The largest pages of a row group's columns, held at once: 18 columns of 240 MiB.
        let each = 240 << 20;
        let bytes = with_pages(18, &page(each, 8, 8), Compression::SNAPPY);
        let p = problem(pages_of(&bytes));
        assert!(p.contains("which the reader holds at once"), "{p}");
        assert_eq!(
            pages_of(&with_pages(17, &page(each, 8, 8), Compression::SNAPPY)),
            Ok(())
        );
    }

    #[test]
    fn a_column_chunk_outside_the_file_is_refused() {
        use parquet::basic::Compression;
        let pages = [(page_header(0, 8, 8, 1, &[]), vec![0; 8])];
        for (offset, size) in [(4, 1 << 40), (1 << 40, 8), (-4, 8), (4, -1)] {
            let column = Arc::new(arrow::array::Int64Array::from(vec![7]));
            let plain = Compression::UNCOMPRESSED;
            let bytes = with_chunks(1, (column, true, 1), &pages, plain, |chunk| {
                chunk
                    .set_data_page_offset(offset)
                    .set_total_compressed_size(size)
            });
            let p = problem(pages_of(&bytes));
            assert!(p.contains("outside the file"), "{p}");
        }
    }

    #[test]
    fn a_page_header_parquet_would_loop_over_is_refused() {
        use parquet::basic::Compression;
        // An unknown field 20 of the page header holding lists of 2^31 - 1 bools: parquet
        // skips them one by one without reading a byte, 6 s of CPU per 6 bytes.
        let mut lists = vec![0x09, 40, 0xf9, 0x08];
        for _ in 0..8 {
            lists.push(0xf1);
            varint(i32::MAX as u64, &mut lists);
        }
        let header = page_header(0, 8, 8, 1, &lists);
        let bytes = with_pages(1, &[(header, vec![0; 8])], Compression::UNCOMPRESSED);
        let started = std::time::Instant::now();
        let p = problem(pages_of(&bytes));
        assert!(p.contains(TOO_MANY_ELEMENTS), "{p}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn page_headers_are_read_as_parquet_reads_them() {
        use parquet::basic::Compression;
        // The sizes declared as i64 (parquet reads any integer type as a truncated i32):
        // 2^32 + 8 is 8.
        let mut header = Vec::new();
        i32_field(1, 0, &mut header);
        header.extend([0x16]);
        varint(zigzag((1 << 32) + 8), &mut header);
        header.extend([0x16]);
        varint(zigzag((1 << 32) + 8), &mut header);
        header.push(0x2c);
        i32_field(1, 1, &mut header);
        for _ in 0..3 {
            i32_field(1, 3, &mut header);
        }
        header.extend([0, 0]);
        let bytes = with_pages(1, &[(header, vec![0; 8])], Compression::UNCOMPRESSED);
        assert_eq!(pages_of(&bytes), Ok(()));
    }

    /// [`with_pages`] for one nullable column of the type of `column`, in a file of `rows`
    /// rows.
    pub(crate) fn with_nullable_pages_of(
        column: arrow::array::ArrayRef,
        rows: i64,
        pages: &[(Vec<u8>, Vec<u8>)],
    ) -> Vec<u8> {
        let plain = parquet::basic::Compression::UNCOMPRESSED;
        with_chunks(1, (column, true, rows), pages, plain, |chunk| chunk)
    }

    /// A v1 data page of `values` values in `encoding` (levels RLE), and its body.
    pub(crate) fn data_page(encoding: i64, values: i64, body: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        let mut header = Vec::new();
        i32_field(1, 0, &mut header);
        i32_field(1, body.len() as i64, &mut header);
        i32_field(1, body.len() as i64, &mut header);
        header.push(0x2c);
        i32_field(1, values, &mut header);
        i32_field(1, encoding, &mut header);
        i32_field(1, 3, &mut header);
        i32_field(1, 3, &mut header);
        header.extend([0, 0]);
        (header, body)
    }

    /// A `DELTA_BINARY_PACKED` run declaring `count` values equal to `first`: blocks of 128
    /// values in 4 mini blocks, every delta 0 (bit width 0), as many as `held` values take.
    pub(crate) fn delta_run(count: u64, held: u64, first: i64) -> Vec<u8> {
        let mut out = vec![0x80, 0x01, 0x04];
        varint(count, &mut out);
        varint(zigzag(first), &mut out);
        for _ in 0..held.saturating_sub(1).div_ceil(128) {
            out.extend([0, 0, 0, 0, 0]);
        }
        out
    }

    /// A non-nullable string column whose one data page holds `count` strings `a`, in
    /// DELTA_BYTE_ARRAY (prefixes of 0, suffixes of 1) with the suffixes declaring
    /// `suffixes`, or in DELTA_LENGTH_BYTE_ARRAY (lengths declaring `suffixes`).
    pub(crate) fn delta_strings(count: u64, suffixes: u64, prefixed: bool) -> Vec<u8> {
        let mut body = Vec::new();
        if prefixed {
            body.extend(delta_run(count, count, 0));
        }
        body.extend(delta_run(suffixes, count, 1));
        body.extend(vec![b'a'; count as usize]);
        let encoding = if prefixed { 7 } else { 6 };
        let page = data_page(encoding, count as i64, body);
        with_pages_of(
            Arc::new(arrow::array::StringArray::from(vec!["x"])),
            count as i64,
            &[page],
            parquet::basic::Compression::UNCOMPRESSED,
        )
    }

    #[test]
    fn delta_lengths_declaring_more_values_than_their_page_are_refused() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        // Valid pages, whose runs end where parquet says they do, pass, and parquet reads
        // them back.
        for prefixed in [false, true] {
            for count in [1, 2, 200, 1000] {
                let bytes = delta_strings(count, count, prefixed);
                assert_eq!(pages_of(&bytes), Ok(()), "{count} {prefixed}");
                let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
                let rows = reader.get_row_iter(None).unwrap();
                assert_eq!(rows.map(Result::unwrap).count() as u64, count);
            }
        }
        // 2^33 lengths on a page of 200 values: 32 GiB for the reader, 359 bytes on disk
        // (found while soaking; an abort).
        for prefixed in [false, true] {
            let p = problem(pages_of(&delta_strings(200, 1 << 33, prefixed)));
            assert!(
                p.contains("data page 1") && p.contains("declares 8589934592 value lengths"),
                "{p}"
            );
            // One over the page's values.
            assert!(pages_of(&delta_strings(200, 201, prefixed)).is_err());
        }
        // The prefixes too.
        let mut body = delta_run(1 << 40, 200, 0);
        body.extend(delta_run(200, 200, 1));
        let bytes = with_pages_of(
            Arc::new(arrow::array::StringArray::from(vec!["x"])),
            200,
            &[data_page(7, 200, body)],
            parquet::basic::Compression::UNCOMPRESSED,
        );
        assert!(problem(pages_of(&bytes)).contains("declares 1099511627776 value lengths"));
    }

    fn batch_rows_of(bytes: &[u8]) -> Result<usize, PageError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        std::fs::write(&path, bytes).unwrap();
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(bytes.to_vec()))
            .unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(check_pages(&file, &metadata).unwrap(), Ok(()));
        batch_rows(&file, &metadata, 65536).unwrap()
    }

    /// One RLE run of `count` levels of `value`, with the 4-byte length of a v1 page.
    fn rle_levels(runs: &[(u64, u8)]) -> Vec<u8> {
        let mut data = Vec::new();
        for &(count, value) in runs {
            varint(count << 1, &mut data);
            data.push(value);
        }
        let mut out = (data.len() as u32).to_le_bytes().to_vec();
        out.extend(data);
        out
    }

    #[test]
    fn the_longest_rows_of_real_list_columns_are_counted() {
        use arrow::array::Array;
        use parquet::file::properties::{WriterProperties, WriterVersion};
        // Row i holds i % 50 items (none for multiples of 50: one level, like a null row).
        let list = arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(
            (0..5000).map(|i| Some((0..i % 50).map(Some).collect::<Vec<_>>())),
        );
        let schema = Arc::new(Schema::new(vec![Field::new(
            "l",
            list.data_type().clone(),
            true,
        )]));
        let batch =
            arrow::array::RecordBatch::try_new(schema.clone(), vec![Arc::new(list)]).unwrap();
        for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
            let properties = WriterProperties::builder()
                .set_writer_version(version)
                .set_data_page_row_count_limit(64)
                .set_write_batch_size(64)
                .build();
            let mut bytes = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut bytes, schema.clone(), Some(properties)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("list.parquet");
            std::fs::write(&path, &bytes).unwrap();
            let metadata = ParquetMetaDataReader::new()
                .parse_and_finish(&bytes::Bytes::from(bytes.clone()))
                .unwrap();
            let chunk = metadata.row_group(0).column(0);
            let levels = repeated_levels(&File::open(&path).unwrap(), chunk).unwrap();
            let items: u64 = (0..5000).map(|i| (i % 50).max(1)).sum();
            assert_eq!(levels, Some((49, items)), "{version:?}");
            assert_eq!(batch_rows_of(&bytes), Ok(65536));
        }
    }

    #[test]
    fn batches_are_cut_to_what_a_row_takes() {
        // 65,536 null rows of 1 MiB wide values: the reader pads every null to its width,
        // 64 GiB in one batch of 65,536 rows (found while soaking: an abort), 256 MiB in
        // batches of 256.
        let wide = arrow::array::FixedSizeBinaryArray::try_from_sparse_iter_with_size(
            std::iter::once(None::<Vec<u8>>),
            1 << 20,
        )
        .unwrap();
        let page = data_page(0, 65536, rle_levels(&[(65536, 0)]));
        let bytes = with_nullable_pages_of(Arc::new(wide), 65536, &[page]);
        assert_eq!(batch_rows_of(&bytes), Ok(256));
        // One row of a list column holding 2^30 null items, from 12 bytes of levels: the
        // reader holds the levels and slots of the whole row (an abort too).
        let list = arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(
            vec![Some(vec![None::<i32>])],
        );
        let items = 1u64 << 30;
        let mut body = rle_levels(&[(1, 0), (items - 1, 1)]);
        body.extend(rle_levels(&[(items, 2)]));
        let page = data_page(0, items as i64, body);
        let bytes = with_nullable_pages_of(Arc::new(list.clone()), 1, &[page]);
        let started = std::time::Instant::now();
        match batch_rows_of(&bytes) {
            Err(PageError::OverBound {
                column, problem, ..
            }) => {
                assert_eq!(column, "c0.list.item");
                assert!(
                    problem.contains("1073741824 values of 16 bytes"),
                    "{problem}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Rows of 2^20 items each: batches of 32 rows.
        let mut body = Vec::new();
        let mut rep = Vec::new();
        for _ in 0..64 {
            rep.extend([(1, 0), ((1 << 20) - 1, 1)]);
        }
        body.extend(rle_levels(&rep));
        body.extend(rle_levels(&[(64 << 20, 2)]));
        let page = data_page(0, 64 << 20, body);
        let bytes = with_nullable_pages_of(Arc::new(list), 64, &[page]);
        assert_eq!(batch_rows_of(&bytes), Ok(32));
    }
}
