//! A Parquet file's footer, walked whole *before* the `parquet` crate sees it (the depth of
//! its schema measured, what parquet would loop over refused), and the bounds of its pages.
//!
//! The `parquet` crate builds its schema tree, and the Arrow schema from it, by recursion: a
//! file whose schema is nested a few thousand levels deep overflows the stack of the thread
//! that opens it (and aborts the daemon) before any check on the Arrow schema could run. The
//! footer stores the schema flat, as a list of `SchemaElement`s in pre-order where each group
//! says how many children it has, so its depth can be measured in one loop.
//!
//! parquet's Thrift skipper, which it calls on every field it does not know, skips a `bool`
//! element of a list without reading a byte: a list declaring 2^31 - 1 bools, 6 bytes of an
//! unknown field anywhere in the footer, costs it about 3 s of CPU while it opens the file
//! (measured), and a footer may hold thousands. So this module walks every byte of the footer
//! parquet 59.3 decodes, every struct as parquet reads it: `FileMetaData`, `SchemaElement`
//! and its `LogicalType`, `RowGroup`, `ColumnChunk`, `ColumnMetaData`, `Statistics`,
//! `PageEncodingStats`, `SizeStatistics`, `GeospatialStatistics` and its `BoundingBox`,
//! `SortingColumn`, `KeyValue`, `ColumnOrder` (`metadata` lists the field ids parquet knows
//! in each, with the lines of its decoder they come from). Each field parquet skips is
//! skipped here over the same bytes, by a skipper whose own nesting is bounded
//! ([`MAX_THRIFT_NESTING`]) and which, like parquet's, reads no byte for a `bool` inside a
//! list, but counts it: lists, sets and maps declaring more elements in all than the input
//! has bytes are refused (parquet would loop over each).
//!
//! Where parquet's decoder departs from Thrift, this module departs with it, for the two
//! walks to stay in step and the depth measured to be that of the tree parquet builds. A
//! field of a known struct is read by the type the IDL gives it, whatever type its header
//! declares (the schema list even when declared a set, `num_children` from any integer
//! encoding, truncated to 32 bits, `num_values` declared a binary); a field parquet does not
//! know, or knows but skips (`path_in_schema`, a second schema, the encryption fields of a
//! build without encryption), is skipped by its declared type. What it does not copy it
//! refuses ([`FooterError::Malformed`]): a footer field other than `version` before the
//! schema (writers write `version`, then the schema), a negative child count, a group with
//! more children than elements follow it, a known list whose elements are not of the type
//! parquet reads (parquet refuses it too), more row groups than parquet numbers (32,768; it
//! reserves room for all of them before refusing the list). It never panics on any input
//! and allocates only for the open groups it tracks, at most one per schema element.
//!
//! Past the footer, [`check_pages`] walks every page header of every column chunk the same
//! way (as parquet's page reader decodes them, before any reader is built) and refuses what
//! parquet would allocate before checking it: pages past their chunk or the file, sizes over
//! [`MAX_PARQUET_PAGE`], dictionaries of more values than their bytes hold, delta-encoded
//! lengths over their page's values, BROTLI pages that do not decode to the size they
//! declare (decoded here, bounded, as parquet's codec is not); and [`batch_rows`] picks
//! rows per batch so that what the reader holds for a batch (null slots of fixed-size
//! columns, the values of long list rows) stays within [`MAX_PARQUET_BATCH`].
//!
//! Files: `thrift` (the compact encoding as parquet decodes it), `metadata` (the footer's
//! structs), `schema` (the depth of the schema tree), `pages` (page headers), `rows` (rows
//! per batch); the tests of all five share this module's fixtures of real and hand-made
//! files.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

mod metadata;
mod pages;
mod rows;
mod schema;
mod thrift;

pub use metadata::check_footer;
pub use pages::{MAX_PARQUET_PAGE, MAX_PARQUET_PAGES_HELD, PageError, check_pages};
pub use rows::{MAX_PARQUET_BATCH, batch_rows};

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
    /// The bytes are not a footer this module can walk the way parquet would read it, or
    /// they declare what parquet would loop over.
    #[error("unreadable Parquet footer: {0}")]
    Malformed(&'static str),
}

/// Reads the footer of the Parquet file `file` (positioned anywhere) and walks it with
/// [`check_footer`]. The footer read is bounded by the file's size.
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
    Ok(check_footer(&metadata))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Fields, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::ParquetMetaDataReader;

    use super::metadata::*;
    use super::pages::*;
    use super::rows::*;
    use super::thrift::*;
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
        footer_of(&bytes)
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
        assert_eq!(check_footer(&footer(flat)), Ok(()));
        let limit = mesh_protocol::bounds::MAX_TYPE_DEPTH;
        let at_limit = Schema::new(vec![Field::new("deep", nested_list(limit), true)]);
        assert_eq!(check_footer(&footer(at_limit)), Ok(()));
        let deep = Schema::new(vec![Field::new("deep", nested_list(3000), true)]);
        // Each Arrow list is two Parquet levels, under the root message.
        assert_eq!(
            check_footer(&footer(deep)),
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
            let _ = check_footer(&real[..cut]);
        }
        for i in 0..real.len() {
            let mut bad = real.clone();
            bad[i] ^= 0xff;
            let _ = check_footer(&bad);
        }
        // A footer with every struct parquet decodes, cut and flipped everywhere.
        let rich = real_footers().swap_remove(0);
        for cut in 0..rich.len() {
            let _ = check_footer(&rich[..cut]);
        }
        for i in 0..rich.len() {
            let mut bad = rich.clone();
            bad[i] ^= 0xff;
            let _ = check_footer(&bad);
        }
        // Deeply nested Thrift structs are refused, not followed.
        let mut nested = vec![0x1c; 10_000];
        nested.extend(vec![0; 10_000]);
        assert!(check_footer(&nested).is_err());
        assert!(check_footer(&[]).is_err());
        // A list that claims more elements than there are bytes.
        assert!(check_footer(&[0x19, 0xfc, 0xff, 0xff, 0xff, 0x0f]).is_err());
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
        matches!(check_footer(footer), Err(FooterError::TooDeep { .. }))
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
            check_footer(&footer),
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
            check_footer(&early),
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
            check_footer(&negative),
            Err(FooterError::Malformed(
                "a schema element has a negative number of children"
            ))
        );
        // 2^32 - 1 is -1 once truncated.
        assert!(check_footer(&chain(3, LIST, &children(I64, (1 << 32) - 1))).is_err());
        // More children than elements follow: parquet would reserve room for 2^31 - 1
        // children (16 GiB) before finding out.
        let mut huge = vec![0x15, 0x02, 0x19, 0x2c, 0x48, 1, b'r'];
        huge.extend(children(I32, i32::MAX.into()));
        huge.extend([0, 0x15, 0x02, 0x25, 0x02, 0x18, 1, b'x', 0]);
        huge.extend(AFTER_SCHEMA);
        assert_eq!(
            check_footer(&huge),
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
            check_footer(&footer),
            Err(FooterError::Malformed(TOO_MANY_ELEMENTS))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    // ---- The rest of the footer ----

    /// A struct of the footer, where [`one_column_footer`] puts extra fields.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Place {
        File,
        RowGroup,
        ColumnChunk,
        ColumnMetaData,
        Statistics,
        PageEncodingStats,
        SizeStatistics,
        SortingColumn,
        KeyValue,
        ColumnOrder,
    }

    const PLACES: [Place; 10] = [
        Place::File,
        Place::RowGroup,
        Place::ColumnChunk,
        Place::ColumnMetaData,
        Place::Statistics,
        Place::PageEncodingStats,
        Place::SizeStatistics,
        Place::SortingColumn,
        Place::KeyValue,
        Place::ColumnOrder,
    ];

    /// The footer of a file of one required INT64 column `x` in one row group, with
    /// statistics, encoding and size statistics, a sorting column, a key-value pair, a creator
    /// and a column order, encoded as a writer encodes it, with `extra` (fields under full
    /// ids) before the stop of the struct at `place` (the column order's one field replaced
    /// by it).
    fn one_column_footer(place: Place, extra: &[u8]) -> Vec<u8> {
        let here = |p: Place, out: &mut Vec<u8>| {
            if p == place {
                out.extend(extra);
            }
        };
        // version 2; schema: the root of one child, the leaf x (INT64, REQUIRED).
        let mut out = vec![0x15, 0x04, 0x19, 0x2c, 0x48, 1, b'r', 0x15, 0x02, 0x00];
        out.extend([0x15, 0x04, 0x25, 0x00, 0x18, 1, b'x', 0x00]);
        // num_rows 1; one row group of one column chunk: file_offset 4, meta_data.
        out.extend([0x16, 0x02, 0x19, 0x1c, 0x19, 0x1c, 0x26, 0x08, 0x1c]);
        // type INT64, encodings [PLAIN], path_in_schema ["x"], codec UNCOMPRESSED,
        // num_values 1, sizes 16 and 16, data_page_offset 4.
        out.extend([
            0x15, 0x04, 0x19, 0x15, 0x00, 0x19, 0x18, 1, b'x', 0x15, 0x00,
        ]);
        out.extend([0x16, 0x02, 0x16, 0x20, 0x16, 0x20, 0x26, 0x08]);
        // statistics (12): null_count 0.
        out.extend([0x0c, 0x18, 0x36, 0x00]);
        here(Place::Statistics, &mut out);
        out.push(0);
        // encoding_stats (13): one DATA_PAGE, PLAIN, count 1.
        out.extend([0x09, 0x1a, 0x1c, 0x15, 0x00, 0x15, 0x00, 0x15, 0x02]);
        here(Place::PageEncodingStats, &mut out);
        out.push(0);
        // size_statistics (16): unencoded_byte_array_data_bytes 0.
        out.extend([0x0c, 0x20, 0x16, 0x00]);
        here(Place::SizeStatistics, &mut out);
        out.push(0);
        here(Place::ColumnMetaData, &mut out);
        out.push(0);
        here(Place::ColumnChunk, &mut out);
        out.push(0);
        // total_byte_size 16, num_rows 1; sorting_columns (4): column 0, both flags false.
        out.extend([
            0x16, 0x20, 0x16, 0x02, 0x09, 0x08, 0x1c, 0x15, 0x00, 0x12, 0x12,
        ]);
        here(Place::SortingColumn, &mut out);
        out.push(0);
        here(Place::RowGroup, &mut out);
        out.push(0);
        // key_value_metadata (5): one key "k"; created_by (6) "test".
        out.extend([0x09, 0x0a, 0x1c, 0x18, 1, b'k']);
        here(Place::KeyValue, &mut out);
        out.push(0);
        out.extend([0x08, 0x0c, 4, b't', b'e', b's', b't']);
        // column_orders (7): one TYPE_DEFINED_ORDER (a union whose field 1 is empty).
        out.extend([0x09, 0x0e, 0x1c]);
        if place == Place::ColumnOrder {
            out.extend(extra);
        } else {
            out.extend([0x1c, 0x00]);
        }
        out.push(0);
        here(Place::File, &mut out);
        out.push(0);
        out
    }

    /// An unknown field (100) holding a list of 3 bools (no byte to parquet's skipper; the
    /// walk's wants 3 bytes after it, as Thrift writes them), then one (101) holding a binary
    /// of 2 bytes.
    const THREE_BOOLS: [u8; 10] = [0x09, 0xc8, 0x01, 0x31, 0x08, 0xca, 0x01, 0x02, b'.', b'.'];

    /// An unknown field (100) holding a list of 2^31 - 1 bools: 6 bytes, and about 6 s of
    /// parquet's CPU.
    fn hostile_bools() -> Vec<u8> {
        let mut out = vec![0x09, 0xc8, 0x01, 0xf1];
        varint(i32::MAX as u64, &mut out);
        out
    }

    /// Checks that `footer` is refused as lists declaring more elements than bytes, within a
    /// second, and returns how long that took.
    fn refused_quickly(footer: &[u8]) -> std::time::Duration {
        let started = std::time::Instant::now();
        assert_eq!(
            check_footer(footer),
            Err(FooterError::Malformed(TOO_MANY_ELEMENTS))
        );
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        took
    }

    /// Checks that parquet decodes `footer`, and that the walk accepts it and ends where it
    /// ends.
    fn walked_like_parquet(footer: &[u8], what: &str) {
        if let Err(e) = ParquetMetaDataReader::decode_metadata(footer) {
            panic!("parquet refuses {what}: {e}");
        }
        assert_eq!(
            walk(footer, MAX_PARQUET_DEPTH),
            Ok((1, footer.len())),
            "{what}"
        );
    }

    #[test]
    fn a_row_group_field_parquet_would_loop_over_is_refused() {
        // parquet skips the unknown field without reading a byte per bool: the hand-made
        // footer is one parquet reads, with the field where parquet skips it.
        walked_like_parquet(&one_column_footer(Place::RowGroup, &[]), "the plain footer");
        walked_like_parquet(&one_column_footer(Place::RowGroup, &THREE_BOOLS), "3 bools");
        refused_quickly(&one_column_footer(Place::RowGroup, &hostile_bools()));
        // Behind a list of 3 bools, where a Thrift skipper would read 3 bytes of it.
        let mut hidden = THREE_BOOLS.to_vec();
        hidden.extend(hostile_bools());
        refused_quickly(&one_column_footer(Place::RowGroup, &hidden));
    }

    #[test]
    fn a_column_metadata_field_parquet_would_loop_over_is_refused() {
        let place = Place::ColumnMetaData;
        walked_like_parquet(&one_column_footer(place, &THREE_BOOLS), "3 bools");
        refused_quickly(&one_column_footer(place, &hostile_bools()));
        // num_values (5) declared as a binary: parquet reads a varint whatever the header
        // declares, then the next field; a Thrift skipper would take the varint as a length
        // and read the next field's first byte as the binary.
        let binary_num_values = [0x08, 0x0a, 0x02];
        let footer = one_column_footer(place, &binary_num_values);
        walked_like_parquet(&footer, "num_values declared as a binary");
        let metadata = ParquetMetaDataReader::decode_metadata(&footer).unwrap();
        assert_eq!(metadata.row_group(0).column(0).num_values(), 1);
        let mut hidden = binary_num_values.to_vec();
        hidden.extend(hostile_bools());
        refused_quickly(&one_column_footer(place, &hidden));
        // path_in_schema (3) parquet skips: by its declared type, counted.
        let mut path = vec![0x09, 0x06];
        path.extend(&hostile_bools()[3..]);
        refused_quickly(&one_column_footer(place, &path));
    }

    #[test]
    fn a_footer_field_after_the_schema_parquet_would_loop_over_is_refused() {
        walked_like_parquet(&one_column_footer(Place::File, &THREE_BOOLS), "3 bools");
        refused_quickly(&one_column_footer(Place::File, &hostile_bools()));
        // A second schema field, which parquet skips by its declared type.
        let mut second_schema = vec![0x09, 0x04];
        second_schema.extend(&hostile_bools()[3..]);
        refused_quickly(&one_column_footer(Place::File, &second_schema));
        let mut harmless = vec![0x09, 0x04];
        harmless.extend(&THREE_BOOLS[3..]);
        assert_eq!(harmless.len(), 9);
        walked_like_parquet(
            &one_column_footer(Place::File, &harmless),
            "a second schema",
        );
        // The encryption fields parquet skips (it is built without encryption).
        for id in [8u8, 9] {
            let mut encryption = vec![0x09, id * 2];
            encryption.extend(&hostile_bools()[3..]);
            refused_quickly(&one_column_footer(Place::File, &encryption));
        }
    }

    #[test]
    fn unknown_fields_of_every_footer_struct_are_walked() {
        for place in PLACES {
            // A union has one field: there, an unknown variant holding a list of 1 bool.
            let harmless = match place {
                Place::ColumnOrder => &[0x09, 0xc8, 0x01, 0x11][..],
                _ => &THREE_BOOLS[..],
            };
            let what = format!("bools in {place:?}");
            walked_like_parquet(&one_column_footer(place, harmless), &what);
            let took = refused_quickly(&one_column_footer(place, &hostile_bools()));
            eprintln!("{place:?}: refused in {took:?}");
        }
        // Lists of bools nested in lists and maps, each under the bytes that follow, but not
        // together: 2,000 lists of 2,000 bools in a row group (8 kB, 4 million skips).
        let mut nested = vec![0x09, 0xc8, 0x01, 0xf9];
        varint(2000, &mut nested);
        for _ in 0..2000 {
            nested.push(0xf1);
            varint(2000, &mut nested);
        }
        refused_quickly(&one_column_footer(Place::RowGroup, &nested));
        // A map of 2^31 - 1 bool pairs.
        let mut map = vec![0x0b, 0xc8, 0x01];
        varint(i32::MAX as u64, &mut map);
        map.push(0x11);
        refused_quickly(&one_column_footer(Place::ColumnChunk, &map));
    }

    #[test]
    fn known_lists_are_read_as_parquet_reads_them() {
        // A known list whose elements are not of the type parquet reads: parquet refuses it,
        // so does the walk (it could not follow it).
        let footer = one_column_footer(Place::File, &[]);
        let encodings = footer
            .windows(3)
            .position(|w| w == [0x19, 0x15, 0x00])
            .unwrap();
        let mut bools = footer.clone();
        bools[encodings + 1] = 0x12;
        assert!(ParquetMetaDataReader::decode_metadata(&bools).is_err());
        assert!(matches!(
            check_footer(&bools),
            Err(FooterError::Malformed(_))
        ));
        // More row groups than parquet numbers: it reserves room for them all, then refuses
        // the 32,769th.
        let mut many = vec![
            0x15, 0x04, 0x19, 0x1c, 0x48, 1, b'r', 0x00, 0x16, 0x00, 0x19, 0xfc,
        ];
        varint(1 << 20, &mut many);
        many.extend(vec![0u8; 1 << 21]);
        assert_eq!(
            check_footer(&many),
            Err(FooterError::Malformed(
                "more row groups than parquet numbers (32,768)"
            ))
        );
    }

    /// Footers the parquet crate writes: every column kind, dictionaries, statistics of
    /// pages, bloom filters, page indexes, sorting columns, key-value metadata, v1 and v2.
    fn real_footers() -> Vec<Vec<u8>> {
        use arrow::array::{
            ArrayRef, BooleanArray, FixedSizeBinaryArray, Int64Array, MapBuilder, RecordBatch,
            StringArray, StringBuilder, StructArray,
        };
        use parquet::file::metadata::{KeyValue, SortingColumn};
        use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
        let n = 3000;
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for i in 0..n {
            map.keys().append_value(format!("k{}", i % 7));
            map.values().append_value("v");
            map.append(i % 5 != 0).unwrap();
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "i",
                Arc::new(Int64Array::from_iter((0..n).map(|i| Some(i as i64)))),
            ),
            (
                "s",
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i % 3 != 0).then(|| format!("v{}", i % 40))),
                )),
            ),
            (
                "b",
                Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 2 == 0)))),
            ),
            (
                "f",
                Arc::new(
                    FixedSizeBinaryArray::try_from_iter((0..n).map(|i| (i as u32).to_le_bytes()))
                        .unwrap(),
                ),
            ),
            ("l", arrow::array::new_null_array(&nested_list(3), n)),
            (
                "st",
                Arc::new(StructArray::from(vec![(
                    Arc::new(Field::new("x", DataType::Int64, true)),
                    Arc::new(Int64Array::from_iter((0..n).map(|i| Some(i as i64 * 3)))) as ArrayRef,
                )])),
            ),
            ("m", Arc::new(map.finish())),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut footers = Vec::new();
        for (version, statistics, bloom) in [
            (WriterVersion::PARQUET_1_0, EnabledStatistics::Page, true),
            (WriterVersion::PARQUET_2_0, EnabledStatistics::Chunk, false),
            (WriterVersion::PARQUET_2_0, EnabledStatistics::None, true),
        ] {
            let properties = WriterProperties::builder()
                .set_writer_version(version)
                .set_statistics_enabled(statistics)
                .set_write_page_header_statistics(statistics == EnabledStatistics::Page)
                .set_bloom_filter_enabled(bloom)
                .set_max_row_group_row_count(Some(1000))
                .set_data_page_row_count_limit(100)
                .set_write_batch_size(100)
                .set_sorting_columns(Some(vec![SortingColumn {
                    column_idx: 0,
                    descending: false,
                    nulls_first: true,
                }]))
                .set_key_value_metadata(Some(vec![
                    KeyValue::new("origin".into(), "test".to_string()),
                    KeyValue::new("empty".into(), None),
                ]))
                .build();
            let mut bytes = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            footers.push(footer_of(&bytes));
        }
        footers
    }

    /// The footer bytes of a Parquet file.
    fn footer_of(bytes: &[u8]) -> Vec<u8> {
        let n = bytes.len();
        assert_eq!(&bytes[n - 4..], b"PAR1");
        let meta_len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
        bytes[n - 8 - meta_len..n - 8].to_vec()
    }

    #[test]
    fn real_footers_are_walked_to_their_end() {
        for (i, footer) in real_footers().iter().enumerate() {
            let metadata = ParquetMetaDataReader::decode_metadata(footer).unwrap();
            assert_eq!(metadata.num_row_groups(), 3, "footer {i}");
            assert_eq!(
                walk(footer, MAX_PARQUET_DEPTH),
                Ok((parquet_depth(footer), footer.len())),
                "footer {i}"
            );
        }
    }

    #[test]
    fn pyarrow_footers_are_walked_to_their_end() {
        if std::env::var("MESHNODE_SKIP_PYARROW").as_deref() == Ok("1") {
            eprintln!("MESHNODE_SKIP_PYARROW=1: skipping the pyarrow footers");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = r#"
import sys
import pyarrow as pa, pyarrow.parquet as pq
n = 3000
table = pa.table({
    "i": pa.array(range(n), pa.int64()),
    "s": pa.array([None if i % 3 == 0 else f"v{i % 40}" for i in range(n)]),
    "b": pa.array([i % 2 == 0 for i in range(n)]),
    "d": pa.array([i / 7 for i in range(n)], pa.float64()),
    "t": pa.array(range(n), pa.timestamp("us", tz="UTC")),
    "dec": pa.array([i for i in range(n)], pa.decimal128(12, 3)),
    "l": pa.array([[i, None] if i % 4 else None for i in range(n)], pa.list_(pa.int32())),
    "st": pa.array([{"x": i, "y": str(i)} for i in range(n)]),
    "m": pa.array([[("k", i)] for i in range(n)], pa.map_(pa.string(), pa.int64())),
}).replace_schema_metadata({"origin": "pyarrow"})
sort = [pq.SortingColumn(0)]
for k, options in enumerate([
    dict(),
    dict(write_page_index=True, data_page_version="2.0", compression="zstd",
         sorting_columns=sort, write_page_checksum=True),
    dict(use_dictionary=False, write_statistics=False, store_schema=False, version="1.0"),
    dict(bloom_filter_options={"s": {}}, max_rows_per_page=100, compression="gzip",
         write_page_index=True),
]):
    try:
        pq.write_table(table, f"{sys.argv[1]}/{k}.parquet", row_group_size=1000, **options)
    except TypeError:
        options.pop("bloom_filter_options", None)
        pq.write_table(table, f"{sys.argv[1]}/{k}.parquet", row_group_size=1000, **options)
"#;
        let run = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "pyarrow could not write the files (install pyarrow, or set \
             MESHNODE_SKIP_PYARROW=1): {}",
            String::from_utf8_lossy(&run.stderr)
        );
        for k in 0..4 {
            let bytes = std::fs::read(dir.path().join(format!("{k}.parquet"))).unwrap();
            let footer = footer_of(&bytes);
            let metadata = ParquetMetaDataReader::decode_metadata(&footer).unwrap();
            assert_eq!(metadata.num_row_groups(), 3, "file {k}");
            assert_eq!(
                walk(&footer, MAX_PARQUET_DEPTH),
                Ok((parquet_depth(&footer), footer.len())),
                "file {k}"
            );
            let mut file = File::open(dir.path().join(format!("{k}.parquet"))).unwrap();
            assert_eq!(check_file(&mut file).unwrap(), Ok(()), "file {k}");
        }
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

    /// `batch` written to Parquet with `codec` and `version` in pages of 100 rows, row groups
    /// of 2,000.
    fn small_pages(
        batch: &arrow::array::RecordBatch,
        codec: parquet::basic::Compression,
        version: parquet::file::properties::WriterVersion,
    ) -> Vec<u8> {
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_compression(codec)
            .set_writer_version(version)
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .set_max_row_group_row_count(Some(2000))
            .build();
        let mut bytes = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties)).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
        bytes
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
        use parquet::file::properties::WriterVersion;
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
            let bytes = small_pages(&batch, codec, version);
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

    // ---- BROTLI pages ----

    /// `bytes` compressed as parquet's writer compresses a BROTLI page (quality 1, a
    /// window of 22 bits), or with `params`.
    pub(crate) fn brotli_with(
        bytes: &[u8],
        params: Option<&brotli::enc::BrotliEncoderParams>,
    ) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        let mut writer = match params {
            Some(params) => brotli::CompressorWriter::with_params(&mut out, 4096, params),
            None => brotli::CompressorWriter::new(&mut out, 4096, 1, 22),
        };
        writer.write_all(bytes).unwrap();
        drop(writer);
        out
    }

    /// A Brotli stream (RFC 7932) of `16 + blocks * 2^24` zero bytes in about `13 * blocks`
    /// bytes: a window of 16 bits, an uncompressed meta-block of 16 zeros, then `blocks`
    /// meta-blocks of 2^24 bytes, each one command (insert nothing, copy 2^24 bytes from
    /// the last distance, 4) under prefix codes of a single symbol, which take no bits.
    pub(crate) fn brotli_zeros(blocks: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut held) = (0u64, 0u32);
        let mut put = |value: u64, bits: u32| {
            acc |= value << held;
            held += bits;
            while held >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                held -= 8;
            }
        };
        // WBITS 16; ISLAST 0, 4 nibbles of MLEN - 1 = 15, ISUNCOMPRESSED 1, byte aligned.
        put(0, 1);
        put(0, 1);
        put(0, 2);
        put(15, 16);
        put(1, 1);
        put(0, 3);
        put(0, 128);
        for _ in 0..blocks {
            // ISLAST 0, 6 nibbles of MLEN - 1 = 2^24 - 1, compressed.
            put(0, 1);
            put(2, 2);
            put((1 << 24) - 1, 24);
            put(0, 1);
            // One block type of each category, NPOSTFIX and NDIRECT 0, the literal
            // context mode, one literal and one distance prefix code.
            put(0, 3);
            put(0, 6);
            put(0, 2);
            put(0, 2);
            // Simple prefix codes of one symbol: literal 0; insert-and-copy 391 (insert
            // code 0, copy code 23: 2118 + 24 extra bits); distance code 0.
            for (symbol, bits) in [(0, 8), (391, 10), (0, 6)] {
                put(1, 2);
                put(0, 2);
                put(symbol, bits);
            }
            put((1 << 24) - 2118, 24);
        }
        // ISLAST, ISLASTEMPTY, byte aligned.
        put(3, 2);
        put(0, 6);
        out
    }

    /// A data page v2 header (one value, PLAIN) declaring `levels` bytes of definition
    /// levels and `is_compressed`.
    fn v2_page_header(
        uncompressed: i64,
        compressed: i64,
        levels: i64,
        is_compressed: bool,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        i32_field(1, 3, &mut out);
        i32_field(1, uncompressed, &mut out);
        i32_field(1, compressed, &mut out);
        out.push(0x5c);
        for value in [1, 0, 1, 0, levels, 0] {
            i32_field(1, value, &mut out);
        }
        out.push(if is_compressed { 0x11 } else { 0x12 });
        out.extend([0, 0]);
        out
    }

    /// The values of the one INT64 column of `bytes`, as parquet's own reader reads them.
    fn int64s_read_by_parquet(bytes: Vec<u8>) -> parquet::errors::Result<Vec<i64>> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        use parquet::record::RowAccessor;
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))?;
        reader
            .get_row_iter(None)?
            .map(|row| row?.get_long(0))
            .collect()
    }

    #[test]
    fn brotli_files_the_parquet_writer_writes_pass_and_read_back() {
        use parquet::basic::{BrotliLevel, Compression};
        use parquet::file::properties::WriterVersion;
        // Nulls (definition levels), lists (repetition levels), dictionaries and plain
        // strings: data pages v2 keep their levels out of the compressed part.
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("l", nested_list(2), true),
        ]));
        let list = arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(
            (0..5000).map(|i| (i % 7 != 0).then(|| (0..i % 5).map(Some).collect::<Vec<_>>())),
        );
        let outer = Field::new("item", arrow::array::Array::data_type(&list).clone(), true);
        let nested = arrow::array::ListArray::new(
            Arc::new(outer),
            arrow::buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(1, 5000)),
            Arc::new(list),
            None,
        );
        let batch = arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow::array::Int64Array::from_iter(
                    (0..5000).map(|i| (i % 3 != 0).then_some(i * 1_000_003)),
                )),
                Arc::new(arrow::array::StringArray::from_iter(
                    (0..5000).map(|i| (i % 11 != 0).then(|| format!("v{}", i % 300))),
                )),
                Arc::new(nested),
            ],
        )
        .unwrap();
        for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
            for level in [1, 11] {
                let codec = Compression::BROTLI(BrotliLevel::try_new(level).unwrap());
                let bytes = small_pages(&batch, codec, version);
                assert_eq!(pages_of(&bytes), Ok(()), "{version:?} {level}");
                let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
                    bytes::Bytes::from(bytes),
                    5000,
                )
                .unwrap();
                let read: Vec<_> = reader.map(Result::unwrap).collect();
                let read = arrow::compute::concat_batches(&schema, &read).unwrap();
                assert_eq!(read, batch, "{version:?} {level}");
            }
        }
    }

    #[test]
    fn a_brotli_page_holding_more_than_it_declares_is_refused_without_decoding_it() {
        use parquet::basic::{BrotliLevel, Compression};
        let codec = Compression::BROTLI(BrotliLevel::default());
        // 3.3 kB holding 4 GiB of zeros, declaring 8 bytes: parquet's codec would write all
        // of it into one vector before comparing sizes.
        let bomb = brotli_zeros(256);
        assert!(bomb.len() < 4000, "{}", bomb.len());
        let page = |declared: i64, body: &[u8]| {
            let header = page_header(0, declared, body.len() as i64, 1, &[]);
            vec![(header, body.to_vec())]
        };
        let started = std::time::Instant::now();
        let result = pages_of(&with_pages(1, &page(8, &bomb), codec));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        match result {
            Err(PageError::Malformed {
                row_group: 0,
                column,
                problem,
            }) => {
                assert_eq!(column, "c0");
                assert!(
                    problem.contains(
                        "the BROTLI page at byte 4 decodes to more than the 8 bytes its header \
                         declares"
                    ),
                    "{problem}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Declaring the most a page may: decoding stops one byte past it.
        let most = MAX_PARQUET_PAGE as i64;
        let p = problem(pages_of(&with_pages(1, &page(most, &bomb), codec)));
        assert!(
            p.contains(&format!("decodes to more than the {most} bytes")),
            "{p}"
        );
        // The exact size passes; a byte more or less is refused (parquet refuses it too).
        let held = 16 + 2 * (1 << 24);
        let small = brotli_zeros(2);
        assert_eq!(pages_of(&with_pages(1, &page(held, &small), codec)), Ok(()));
        let p = problem(pages_of(&with_pages(1, &page(held + 1, &small), codec)));
        assert!(
            p.contains(&format!(
                "decodes to {held} bytes, not the {} bytes",
                held + 1
            )),
            "{p}"
        );
        assert!(
            problem(pages_of(&with_pages(1, &page(held - 1, &small), codec)))
                .contains("decodes to more than")
        );
        // A dictionary page is decoded too.
        let dictionary = page_header(DICTIONARY_PAGE, 8, bomb.len() as i64, 1, &[]);
        let data = page_header(0, 8, 8, 1, &[]);
        let pages = [(dictionary, bomb.clone()), (data, vec![0; 8])];
        let p = problem(pages_of(&with_pages(1, &pages, codec)));
        assert!(
            p.contains("the BROTLI page at byte 4 decodes to more than"),
            "{p}"
        );
    }

    #[test]
    fn a_brotli_page_is_decoded_past_its_levels_as_parquet_decodes_it() {
        use parquet::basic::{BrotliLevel, Compression};
        let codec = Compression::BROTLI(BrotliLevel::default());
        // A v2 page of one value: 2 bytes of definition levels (an RLE run of one 1) left
        // uncompressed, then the value's 8 bytes compressed.
        let levels = [0x02, 0x01];
        let value = brotli_with(&7i64.to_le_bytes(), None);
        let mut body = levels.to_vec();
        body.extend(&value);
        let header = v2_page_header(10, body.len() as i64, 2, true);
        let bytes = with_pages(1, &[(header, body)], codec);
        assert_eq!(pages_of(&bytes), Ok(()));
        assert_eq!(int64s_read_by_parquet(bytes).unwrap(), [7]);
        // Not compressed at all: nothing is decoded.
        let mut body = levels.to_vec();
        body.extend(7i64.to_le_bytes());
        let header = v2_page_header(10, 10, 2, false);
        let bytes = with_pages(1, &[(header, body)], codec);
        assert_eq!(pages_of(&bytes), Ok(()));
        assert_eq!(int64s_read_by_parquet(bytes).unwrap(), [7]);
        // The values hold 4 GiB.
        let mut body = levels.to_vec();
        body.extend(brotli_zeros(256));
        let header = v2_page_header(10, body.len() as i64, 2, true);
        let p = problem(pages_of(&with_pages(1, &[(header, body)], codec)));
        assert!(
            p.contains(
                "decodes to more than the 8 bytes its header declares after 2 bytes of levels"
            ),
            "{p}"
        );
        // Levels longer than the page: parquet refuses the page.
        let mut body = levels.to_vec();
        body.extend(&value);
        let header = v2_page_header(10, body.len() as i64, 11, true);
        let bytes = with_pages(1, &[(header, body)], codec);
        let p = problem(pages_of(&bytes));
        assert!(p.contains("declares 11 bytes of definition levels"), "{p}");
        assert!(int64s_read_by_parquet(bytes).is_err());
    }

    #[test]
    fn a_brotli_page_that_is_not_a_brotli_stream_parquet_decodes_is_refused() {
        use parquet::basic::{BrotliLevel, Compression};
        let codec = Compression::BROTLI(BrotliLevel::default());
        let values = 7i64.to_le_bytes();
        let page = |body: Vec<u8>| {
            let header = page_header(0, 8, body.len() as i64, 1, &[]);
            with_pages(1, &[(header, body)], codec)
        };
        // What parquet's writer makes passes, and parquet reads it (one INT64 of a nullable
        // column: v1 definition levels, then the value).
        let mut plain = rle_levels(&[(1, 1)]);
        plain.extend(values);
        let compressed = brotli_with(&plain, None);
        let mut header = Vec::new();
        for value in [0, plain.len() as i64, compressed.len() as i64] {
            i32_field(1, value, &mut header);
        }
        header.push(0x2c);
        for value in [1, 0, 3, 3] {
            i32_field(1, value, &mut header);
        }
        header.extend([0, 0]);
        let bytes = with_pages(1, &[(header, compressed.clone())], codec);
        assert_eq!(pages_of(&bytes), Ok(()));
        assert_eq!(int64s_read_by_parquet(bytes).unwrap(), [7]);
        // Cut short, or not Brotli at all.
        let cut = compressed[..compressed.len() / 2].to_vec();
        for body in [cut, b"not brotli at all".to_vec(), Vec::new()] {
            let bytes = page(body);
            let p = problem(pages_of(&bytes));
            assert!(
                p.contains("the BROTLI page at byte 4 is not a Brotli stream parquet decodes"),
                "{p}"
            );
            assert!(int64s_read_by_parquet(bytes).is_err());
        }
        // A large-window stream: parquet's decoder reads it, with a window of up to 1 GiB.
        let params = brotli::enc::BrotliEncoderParams {
            large_window: true,
            lgwin: 30,
            ..Default::default()
        };
        let body = brotli_with(&values, Some(&params));
        let p = problem(pages_of(&page(body)));
        assert!(p.contains("is a large-window Brotli stream"), "{p}");
    }
}
