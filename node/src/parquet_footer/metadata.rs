//! The whole `FileMetaData`, walked as parquet 59.3 decodes it: the depth of its schema
//! measured, every other struct read field by field, so that each unknown field parquet
//! skips is skipped here too, over the same bytes, with a skipper that counts what it skips.
//!
//! parquet is built without its `encryption` feature (the workspace's `Cargo.toml`), so the
//! fields it reads only with that feature (`FileMetaData` 8 and 9, `ColumnChunk` 8 and 9)
//! are unknown fields to it, skipped by their declared type. The reader is opened with
//! default options (`ArrowReaderOptions::new()`): no statistics are skipped, encoding
//! statistics are read as a mask, the schema is read from the footer, and page indexes are
//! not read.

use super::schema::element_tree_depth;
use super::thrift::{I32, I64, Input, STRUCT, Typed};
use super::{FooterError, MAX_PARQUET_DEPTH};

use Typed::{Binary, Bool, Double, Empty, List, Struct, Union, Varint};

/// `Statistics` (file/metadata/thrift/mod.rs:106-117): min and max as binaries, counts,
/// exactness flags.
const STATISTICS: &[(i16, Typed)] = &[
    (1, Binary),
    (2, Binary),
    (3, Varint),
    (4, Varint),
    (5, Binary),
    (6, Binary),
    (7, Bool),
    (8, Bool),
];

/// `PageEncodingStats` (file/metadata/mod.rs:462-467): page type, encoding, count.
const PAGE_ENCODING_STATS: &[(i16, Typed)] = &[(1, Varint), (2, Varint), (3, Varint)];

/// `SizeStatistics` (file/metadata/thrift/mod.rs:139-145): a count and two `list<i64>`
/// histograms.
const SIZE_STATISTICS: &[(i16, Typed)] = &[
    (1, Varint),
    (2, List(I64, &Varint)),
    (3, List(I64, &Varint)),
];

/// `BoundingBox` (file/metadata/thrift/mod.rs:119-130): eight doubles.
const BOUNDING_BOX: &[(i16, Typed)] = &[
    (1, Double),
    (2, Double),
    (3, Double),
    (4, Double),
    (5, Double),
    (6, Double),
    (7, Double),
    (8, Double),
];

/// `GeospatialStatistics` (file/metadata/thrift/mod.rs:132-137): a bounding box and a
/// `list<i32>`.
const GEOSPATIAL_STATISTICS: &[(i16, Typed)] =
    &[(1, Struct(BOUNDING_BOX)), (2, List(I32, &Varint))];

/// `ColumnMetaData` as `read_column_metadata` reads it (file/metadata/thrift/mod.rs:
/// 409-536): the type, the encodings (`EncodingMask::read_thrift`, basic.rs:583-597, a
/// `list<i32>`), the codec, counts and offsets, the statistics, the encoding statistics
/// (`read_encoding_stats_as_mask`, :388-405, a list of structs), the size and geospatial
/// statistics. `path_in_schema` (3) and `key_value_metadata` (8) it skips as unknown fields.
const COLUMN_META_DATA: &[(i16, Typed)] = &[
    (1, Varint),
    (2, List(I32, &Varint)),
    (4, Varint),
    (5, Varint),
    (6, Varint),
    (7, Varint),
    (9, Varint),
    (10, Varint),
    (11, Varint),
    (12, Struct(STATISTICS)),
    (13, List(STRUCT, &Struct(PAGE_ENCODING_STATS))),
    (14, Varint),
    (15, Varint),
    (16, Struct(SIZE_STATISTICS)),
    (17, Struct(GEOSPATIAL_STATISTICS)),
];

/// `ColumnChunk` as `read_column_chunk` reads it (file/metadata/thrift/mod.rs:540-626): the
/// file path (a string), offsets and lengths, the column metadata.
const COLUMN_CHUNK: &[(i16, Typed)] = &[
    (1, Binary),
    (2, Varint),
    (3, Struct(COLUMN_META_DATA)),
    (4, Varint),
    (5, Varint),
    (6, Varint),
    (7, Varint),
];

/// `SortingColumn` (file/metadata/mod.rs:608-620): a column index and two flags.
const SORTING_COLUMN: &[(i16, Typed)] = &[(1, Varint), (2, Bool), (3, Bool)];

/// `RowGroup` as `read_row_group` reads it (file/metadata/thrift/mod.rs:628-716): the
/// column chunks (a list of structs), sizes and counts, the sorting columns, the ordinal.
/// `total_compressed_size` (6) it skips as an unknown field.
const ROW_GROUP: &[(i16, Typed)] = &[
    (1, List(STRUCT, &Struct(COLUMN_CHUNK))),
    (2, Varint),
    (3, Varint),
    (4, List(STRUCT, &Struct(SORTING_COLUMN))),
    (5, Varint),
    (7, Varint),
];

/// `KeyValue` (file/metadata/mod.rs:441-446): two strings.
const KEY_VALUE: &[(i16, Typed)] = &[(1, Binary), (2, Binary)];

/// `ColumnOrder` (basic.rs:1132-1157): a union whose variant 1 is an empty struct; another
/// variant is skipped by its declared type.
const COLUMN_ORDER: &[(i16, Typed)] = &[(1, Empty)];

/// Most row groups parquet numbers: it refuses the 32,769th (`Row group ordinal exceeds i16
/// max value`, file/metadata/thrift/mod.rs:814-826), after reserving room for all of them.
const MAX_ROW_GROUPS: u64 = i16::MAX as u64 + 1;

/// Walks a Thrift-encoded `FileMetaData` as parquet 59.3 decodes it, and checks that its
/// schema is nested at most [`MAX_PARQUET_DEPTH`] levels (the root message is level 0).
/// A footer without a schema field passes: the `parquet` crate refuses it. Never panics.
pub fn check_footer(metadata: &[u8]) -> Result<(), FooterError> {
    walk(metadata, MAX_PARQUET_DEPTH).map(drop)
}

/// The depth of the schema tree parquet would build from the encoded `FileMetaData` (0 when
/// there is no schema field), once the whole footer has been walked.
#[cfg(test)]
pub(super) fn schema_depth(metadata: &[u8]) -> Result<usize, FooterError> {
    walk(metadata, usize::MAX).map(|(depth, _)| depth)
}

/// Walks the encoded `FileMetaData` as `parquet_metadata_from_bytes` does (file/metadata/
/// thrift/mod.rs:745-916): the fields in the order they come, each known one by its IDL type
/// whatever its header declares, the others skipped by their declared type. The schema
/// comes first (after the version, if any): parquet builds its tree as soon as it has read
/// it, before any later field, so a schema deeper than `max_depth` is refused there
/// ([`FooterError::TooDeep`]). A second schema field parquet skips by its declared type
/// (:791-795). Returns the schema's depth and where the walk stopped.
pub(super) fn walk(metadata: &[u8], max_depth: usize) -> Result<(usize, usize), FooterError> {
    let mut input = Input::new(metadata);
    let mut last_id = 0i16;
    let mut depth = None;
    while let Some((id, declared)) = input.field_header(&mut last_id)? {
        match (id, depth) {
            // `version`: `i32::read_thrift`, a zigzag varint.
            (1, _) => input.varint().map(drop)?,
            (2, None) => {
                let measured = element_tree_depth(&mut input)?;
                if measured > max_depth {
                    return Err(FooterError::TooDeep {
                        depth: measured,
                        max: max_depth,
                    });
                }
                depth = Some(measured);
            }
            (_, None) => {
                return Err(FooterError::Malformed(
                    "a field other than the version comes before the schema",
                ));
            }
            (2, Some(_)) => input.skip(declared, 1)?,
            // `num_rows`
            (3, _) => input.varint().map(drop)?,
            (4, _) => row_groups(&mut input)?,
            (5, _) => input.typed(List(STRUCT, &Struct(KEY_VALUE)), declared)?,
            // `created_by`
            (6, _) => input.binary()?,
            (7, _) => input.typed(List(STRUCT, &Union(COLUMN_ORDER)), declared)?,
            _ => input.skip(declared, 1)?,
        }
    }
    Ok((depth.unwrap_or(0), input.pos))
}

/// The `list<RowGroup>` as parquet reads it (file/metadata/thrift/mod.rs:806-828): a list
/// header whose elements must be structs, room reserved for all of them, then each row group.
fn row_groups(input: &mut Input<'_>) -> Result<(), FooterError> {
    let (count, element) = input.list_header()?;
    if element != STRUCT {
        return Err(FooterError::Malformed("row groups are not structs"));
    }
    if count > MAX_ROW_GROUPS {
        return Err(FooterError::Malformed(
            "more row groups than parquet numbers (32,768)",
        ));
    }
    for _ in 0..count {
        input.typed_struct(ROW_GROUP)?;
    }
    Ok(())
}
