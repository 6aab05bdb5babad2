//! The depth of the schema tree parquet builds from a footer's schema list, measured without
//! recursion.

use super::FooterError;
use super::thrift::{Input, STRUCT};

/// Walks the `list<SchemaElement>` the way `parquet_schema_from_array` (schema/types.rs:
/// 1293-1420) builds its tree, without recursion: in pre-order, each group takes the next
/// `num_children` subtrees, and elements left after the first tree are further roots (parquet
/// builds them too before refusing the schema). Open groups are tracked by their remaining
/// children.
pub(super) fn element_tree_depth(input: &mut Input<'_>) -> Result<usize, FooterError> {
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
