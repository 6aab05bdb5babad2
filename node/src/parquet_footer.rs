//! Depth of a Parquet file's schema, read from its footer *before* the `parquet` crate sees it.
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
//! a `bool` inside a list. What it does not copy it refuses ([`FooterError::Malformed`]): a
//! footer field other than `version` before the schema (writers write `version`, then the
//! schema), a negative child count, a group with more children than elements follow it. It
//! never panics on any input and allocates only for the open groups it tracks, at most one per
//! schema element.

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
    let mut input = Input {
        bytes: metadata,
        pos: 0,
    };
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
    /// The encoded `FileMetaData`.
    bytes: &'a [u8],
    /// Next byte to read.
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Result<u8, FooterError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(FooterError::Malformed("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn advance(&mut self, n: u64) -> Result<(), FooterError> {
        let n = usize::try_from(n).map_err(|_| FooterError::Malformed("length overflow"))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(FooterError::Malformed("truncated"))?;
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
        // Every element takes at least one byte: a larger count is a lie.
        if count > (self.bytes.len() - self.pos) as u64 {
            return Err(FooterError::Malformed("list longer than the footer"));
        }
        Ok((count, b & 0x0f))
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
                for _ in 0..count {
                    // A bool element is skipped as a bool field: no byte (:508, :525-531),
                    // although Thrift writes one. Reading it would put this walk a byte
                    // away from parquet's for every such element.
                    self.skip(elem, nesting + 1)?;
                }
                Ok(())
            }
            MAP => {
                let count = self.varint()?;
                if count == 0 {
                    return Ok(());
                }
                if count > (self.bytes.len() - self.pos) as u64 {
                    return Err(FooterError::Malformed("map longer than the footer"));
                }
                let types = self.byte()?;
                for _ in 0..count {
                    self.skip(types >> 4, nesting + 1)?;
                    self.skip(types & 0x0f, nesting + 1)?;
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
mod tests {
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

    fn varint(mut v: u64, out: &mut Vec<u8>) {
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
}
