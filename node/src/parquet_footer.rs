//! Depth of a Parquet file's schema, read from its footer *before* the `parquet` crate sees it.
//!
//! The `parquet` crate builds its schema tree, and the Arrow schema from it, by recursion: a
//! file whose schema is nested a few thousand levels deep overflows the stack of the thread
//! that opens it (and aborts the daemon) before any check on the Arrow schema could run. The
//! footer stores the schema flat, as a list of `SchemaElement`s in pre-order where each group
//! says how many children it has, so its depth can be measured in one loop.
//!
//! This module reads just enough of the footer's Thrift compact encoding to do that: the
//! `schema` field (id 2) of `FileMetaData` and the `num_children` field (id 5) of each
//! element; everything else is skipped with a skipper whose own nesting is bounded
//! ([`MAX_THRIFT_NESTING`]). It never panics on any input and allocates only for the open
//! groups it tracks, at most one per schema element.

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
    /// The bytes are not the footer this module expects; the `parquet` crate gives the
    /// precise error when it reads the file.
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
    let mut input = Input {
        bytes: metadata,
        pos: 0,
    };
    let mut last_id = 0i16;
    loop {
        let Some((id, ty)) = input.field_header(&mut last_id)? else {
            return Ok(());
        };
        if id == 2 && ty == LIST {
            return schema_depth(&mut input);
        }
        input.skip(ty, 0)?;
    }
}

/// Walks the `list<SchemaElement>`, tracking open groups by their remaining children.
fn schema_depth(input: &mut Input<'_>) -> Result<(), FooterError> {
    let (count, elem) = input.list_header()?;
    if elem != STRUCT {
        return Err(FooterError::Malformed("schema elements are not structs"));
    }
    // Remaining children of each open group, outermost first. Never longer than the element
    // count, which the footer's size bounds.
    let mut open: Vec<u32> = Vec::new();
    let mut deepest = 0;
    for _ in 0..count {
        let num_children = element_children(input)?;
        if let Some(remaining) = open.last_mut() {
            *remaining = remaining.saturating_sub(1);
        }
        deepest = deepest.max(open.len());
        if num_children > 0 {
            open.push(num_children);
        }
        while open.last() == Some(&0) {
            open.pop();
        }
    }
    if deepest > MAX_PARQUET_DEPTH {
        return Err(FooterError::TooDeep {
            depth: deepest,
            max: MAX_PARQUET_DEPTH,
        });
    }
    Ok(())
}

/// Reads one `SchemaElement` struct and returns its `num_children` (0 when absent).
fn element_children(input: &mut Input<'_>) -> Result<u32, FooterError> {
    let mut last_id = 0i16;
    let mut children = 0u32;
    while let Some((id, ty)) = input.field_header(&mut last_id)? {
        if id == 5 && ty == I32 {
            let value = input.zigzag()?;
            children = u32::try_from(value).unwrap_or(0);
        } else {
            input.skip(ty, 1)?;
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

    /// The next field's id and type, or `None` at the struct's stop byte.
    fn field_header(&mut self, last_id: &mut i16) -> Result<Option<(i16, u8)>, FooterError> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let ty = b & 0x0f;
        let delta = i16::from(b >> 4);
        let id = if delta == 0 {
            i16::try_from(self.zigzag()?).map_err(|_| FooterError::Malformed("field id"))?
        } else {
            last_id.wrapping_add(delta)
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

    /// Skips one value of type `ty`. `nesting` counts the enclosing containers.
    fn skip(&mut self, ty: u8, nesting: usize) -> Result<(), FooterError> {
        if nesting > MAX_THRIFT_NESTING {
            return Err(FooterError::Malformed("nested too deep"));
        }
        match ty {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.advance(1),
            I16 | I32 | I64 => self.varint().map(|_| ()),
            DOUBLE => self.advance(8),
            UUID => self.advance(16),
            BINARY => {
                let len = self.varint()?;
                self.advance(len)
            }
            LIST | SET => {
                let (count, elem) = self.list_header()?;
                for _ in 0..count {
                    // Booleans inside a list take one byte each.
                    if elem == BOOL_TRUE || elem == BOOL_FALSE {
                        self.advance(1)?;
                    } else {
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
                let mut last_id = 0i16;
                while let Some((_, ty)) = self.field_header(&mut last_id)? {
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
}
