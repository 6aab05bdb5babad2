//! The Thrift compact encoding as parquet 59.3 decodes it: a cursor over footer or page
//! header bytes that reads fields by the type parquet gives them and skips the others by
//! their declared type, never panicking, with its nesting and its collections' element
//! counts bounded.

use super::{FooterError, MAX_THRIFT_NESTING};

// Thrift compact protocol type codes.
pub(super) const BOOL_TRUE: u8 = 1;
pub(super) const BOOL_FALSE: u8 = 2;
pub(super) const BYTE: u8 = 3;
pub(super) const I16: u8 = 4;
pub(super) const I32: u8 = 5;
pub(super) const I64: u8 = 6;
pub(super) const DOUBLE: u8 = 7;
pub(super) const BINARY: u8 = 8;
pub(super) const LIST: u8 = 9;
pub(super) const SET: u8 = 10;
pub(super) const MAP: u8 = 11;
pub(super) const STRUCT: u8 = 12;
pub(super) const UUID: u8 = 13;

/// How parquet reads a field of a struct it knows, whatever type the field's header declares.
#[derive(Debug, Clone, Copy)]
pub(super) enum Typed {
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
    /// A double: eight bytes.
    Double,
    /// An empty struct as `skip_empty_struct` reads it: one zero byte.
    Empty,
    /// A struct read by `thrift_struct!` (or by a loop of parquet's own that reads it the
    /// same way), with these known fields.
    Struct(&'static [(i16, Typed)]),
    /// A union read by `thrift_union_with_unknown!` or its like: one field, a known one by its
    /// type and another skipped by its declared type, then a stop.
    Union(&'static [(i16, Typed)]),
    /// A list read by `read_thrift_vec` (or a loop of parquet's own that reads its header the
    /// same way): the header's element type must be the one given (parquet's
    /// `validate_list_type`), then each element is read as the `Typed` given.
    List(u8, &'static Typed),
}

/// A cursor over the footer bytes.
pub(super) struct Input<'a> {
    /// The encoded `FileMetaData` (or a page header).
    pub(super) bytes: &'a [u8],
    /// Next byte to read.
    pub(super) pos: usize,
    /// Elements of lists, sets and maps that may still be skipped: the input's length.
    budget: u64,
}

impl<'a> Input<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Input<'a> {
        Input {
            bytes,
            pos: 0,
            budget: bytes.len() as u64,
        }
    }
}

/// What [`Input`] says when the bytes end before what it reads.
pub(super) const TRUNCATED: &str = "truncated";

/// What [`Input`] says when collections declare more elements than bytes follow.
pub(super) const TOO_MANY_ELEMENTS: &str = "lists declare more elements than bytes follow";

impl Input<'_> {
    pub(super) fn byte(&mut self) -> Result<u8, FooterError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(FooterError::Malformed(TRUNCATED))?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn advance(&mut self, n: u64) -> Result<(), FooterError> {
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
    pub(super) fn varint(&mut self) -> Result<u64, FooterError> {
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

    pub(super) fn zigzag(&mut self) -> Result<i64, FooterError> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A string or binary.
    pub(super) fn binary(&mut self) -> Result<(), FooterError> {
        let len = self.varint()?;
        self.advance(len)
    }

    /// The next field's id and declared type, or `None` at a stop, as parquet's
    /// `read_field_begin` (parquet_thrift.rs:375-408) reads them: a stop is any byte whose
    /// type nibble is 0, a full id is an i16 read as a truncated zigzag varint, and an id
    /// delta that overflows is an error.
    pub(super) fn field_header(
        &mut self,
        last_id: &mut i16,
    ) -> Result<Option<(i16, u8)>, FooterError> {
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
    pub(super) fn list_header(&mut self) -> Result<(u64, u8), FooterError> {
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
    pub(super) fn elements(&mut self, count: u64) -> Result<(), FooterError> {
        let left = (self.bytes.len() - self.pos) as u64;
        if count > left || count > self.budget {
            return Err(FooterError::Malformed(TOO_MANY_ELEMENTS));
        }
        self.budget -= count;
        Ok(())
    }

    /// A struct parquet reads with `thrift_struct!` (parquet_macros.rs:363-388): the fields
    /// in `known` by their type whatever type their header declares, others skipped by their
    /// declared type (each skip counting its nesting afresh, as parquet's does).
    pub(super) fn typed_struct(&mut self, known: &[(i16, Typed)]) -> Result<(), FooterError> {
        let mut last_id = 0i16;
        while let Some((id, declared)) = self.field_header(&mut last_id)? {
            match known.iter().find(|(k, _)| *k == id) {
                Some(&(_, typed)) => self.typed(typed, declared)?,
                None => self.skip(declared, 1)?,
            }
        }
        Ok(())
    }

    /// One value of a field parquet knows, read as `typed` says whatever the field header
    /// declared (`declared`, which only a bool looks at).
    pub(super) fn typed(&mut self, typed: Typed, declared: u8) -> Result<(), FooterError> {
        match typed {
            Typed::Varint => self.varint().map(drop),
            Typed::Byte => self.advance(1),
            // `bool_val` (parquet_thrift.rs:259-265) refuses any other declared type.
            Typed::Bool if matches!(declared, BOOL_TRUE | BOOL_FALSE) => Ok(()),
            Typed::Bool => Err(FooterError::Malformed(
                "a bool field is declared as another type",
            )),
            Typed::Binary => self.binary(),
            Typed::TimeUnit => self.time_unit(),
            Typed::Double => self.advance(8),
            Typed::Empty => self.empty_struct(),
            Typed::Struct(known) => self.typed_struct(known),
            Typed::Union(known) => {
                let mut last_id = 0i16;
                let (id, declared) = self
                    .field_header(&mut last_id)?
                    .ok_or(FooterError::Malformed("an empty union"))?;
                match known.iter().find(|(k, _)| *k == id) {
                    Some(&(_, typed)) => self.typed(typed, declared)?,
                    None => self.skip(declared, 1)?,
                }
                self.union_end(id)
            }
            Typed::List(element, typed) => {
                // `read_list_begin` (parquet_thrift.rs:334-365) and `validate_list_type`
                // (:757-766); an empty list written as a single 0 is a list of bytes to it.
                let (count, declared) = self.list_header()?;
                let declared = if declared == BOOL_TRUE {
                    BOOL_FALSE
                } else {
                    declared
                };
                if declared != element {
                    return Err(FooterError::Malformed(
                        "a list's elements are not of the type parquet reads",
                    ));
                }
                for _ in 0..count {
                    match typed {
                        // `bool::read_thrift` reads a byte for a list element.
                        Typed::Bool => self.advance(1)?,
                        typed => self.typed(*typed, element)?,
                    }
                }
                Ok(())
            }
        }
    }

    /// A struct parquet reads with its own reader: the fields in `ints` as i32s (a zigzag
    /// varint truncated to 32 bits, whatever type is declared), those in `bools` from the
    /// field header (which must declare a bool), others skipped by their declared type.
    /// Returns the ints and the bools (as 1 or 0) in the order read (a repeated field
    /// replaces the earlier value).
    pub(super) fn int_struct(
        &mut self,
        ints: &[i16],
        bools: &[i16],
    ) -> Result<Vec<(i16, i32)>, FooterError> {
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
                read.push((id, i32::from(declared == BOOL_TRUE)));
            } else {
                self.skip(declared, 2)?;
            }
        }
        Ok(read)
    }

    /// `LogicalType` (basic.rs:256-297), a union read by `thrift_union_with_unknown!`
    /// (parquet_macros.rs:292-317): one field (a variant parquet does not know is skipped by
    /// its declared type), then a stop.
    pub(super) fn logical_type(&mut self) -> Result<(), FooterError> {
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
    pub(super) fn time_unit(&mut self) -> Result<(), FooterError> {
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
    pub(super) fn empty_struct(&mut self) -> Result<(), FooterError> {
        match self.byte()? {
            0 => Ok(()),
            _ => Err(FooterError::Malformed("an empty struct has fields")),
        }
    }

    /// The stop after a union's one field.
    pub(super) fn union_end(&mut self, mut last_id: i16) -> Result<(), FooterError> {
        match self.field_header(&mut last_id)? {
            None => Ok(()),
            Some(_) => Err(FooterError::Malformed("a union has two fields")),
        }
    }

    /// Skips one value of declared type `ty` as parquet's `skip_till_depth` does
    /// (parquet_thrift.rs:501-560). `nesting` counts the enclosing containers.
    pub(super) fn skip(&mut self, ty: u8, nesting: usize) -> Result<(), FooterError> {
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
