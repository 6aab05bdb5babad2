//! How many values a record batch holds, the most one may hold, and cutting a batch to fit.
//!
//! Whatever converts or queries a batch spends memory per value (the Parquet writer two
//! levels and a value for each leaf), while a list of nulls, a run-end encoded column or
//! compressed booleans declare millions of values in a few bytes. So a consumer refuses a
//! received batch over [`MAX_BATCH_VALUES`] (`dataplane::ipcfile`), and `publish` cuts the
//! batches of its input so that every batch it stores is one a consumer accepts.

use arrow::array::{ArrayData, RecordBatch};
use arrow::datatypes::DataType;

/// Most values one record batch may hold, counting its rows and the values of all its
/// arrays, nested ones included (a list's items, a struct's fields, a dictionary's values):
/// about the widest product (2,048 columns) in batches of 65,536 rows, as a publish writes
/// them. A 512-byte message holding a list of 2^30 nulls made the Parquet conversion ask for
/// 4 GiB at once, and abort.
pub(crate) const MAX_BATCH_VALUES: u64 = 1 << 27;

/// The values `batch` holds as the IPC writer writes it: its rows, and the values of its
/// columns and of their children. A sliced list counts the items its rows refer to (the
/// writer cuts the rest); a child the writer may write whole (a dictionary's values, a
/// list view's or a run-end encoded column's) counts whole, so the count is never below
/// what a reader of the written batch counts.
pub(crate) fn batch_values(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|column| values_in(&column.to_data()))
        .fold(batch.num_rows() as u64, u64::saturating_add)
}

/// The values `data` holds, its children's included (see [`batch_values`]). Reads offsets
/// byte by byte and slices only within bounds, so that it could not panic even on an array
/// that skipped validation (it would count whole children).
pub(crate) fn values_in(data: &ArrayData) -> u64 {
    let len = data.len();
    let written = data.child_data().first().and_then(|child| {
        // The items of rows `offset..offset + len`, as the writer cuts them.
        let (start, end) = match data.data_type() {
            DataType::List(_) | DataType::Map(_, _) => {
                (offset_at::<4>(data, 0)?, offset_at::<4>(data, len)?)
            }
            DataType::LargeList(_) => (offset_at::<8>(data, 0)?, offset_at::<8>(data, len)?),
            DataType::FixedSizeList(_, size) => {
                let size = usize::try_from(*size).ok()?;
                let start = data.offset().checked_mul(size)?;
                (start, start.checked_add(len.checked_mul(size)?)?)
            }
            _ => return None,
        };
        (start <= end && end <= child.len()).then(|| child.slice(start, end - start))
    });
    match written {
        Some(child) => (len as u64).saturating_add(values_in(&child)),
        None => data.child_data().iter().fold(len as u64, |sum, child| {
            sum.saturating_add(values_in(child))
        }),
    }
}

/// The `index`th offset of a list array (from its own offset on), `WIDTH` bytes little
/// endian, if its offsets buffer holds it and it is not negative.
fn offset_at<const WIDTH: usize>(data: &ArrayData, index: usize) -> Option<usize> {
    let at = data.offset().checked_add(index)?.checked_mul(WIDTH)?;
    let bytes: [u8; WIDTH] = data
        .buffers()
        .first()?
        .as_slice()
        .get(at..at + WIDTH)?
        .try_into()
        .ok()?;
    let value = match WIDTH {
        4 => i64::from(i32::from_le_bytes(bytes[..4].try_into().ok()?)),
        _ => i64::from_le_bytes(bytes[..8].try_into().ok()?),
    };
    usize::try_from(value).ok()
}

/// A row that holds more values than a batch may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowTooLarge {
    /// The row's index in the batch that was cut.
    pub(crate) row: usize,
    /// The values it holds.
    pub(crate) values: u64,
}

/// `batch` cut into consecutive slices of at most `max` values each (the batch itself if it
/// holds no more), or the first row that alone holds more. Slices share the batch's buffers.
pub(crate) fn cut_to(batch: &RecordBatch, max: u64) -> Result<Vec<RecordBatch>, RowTooLarge> {
    let mut pieces = Vec::new();
    // Halving: each level costs a count per column, and a batch of n rows has at most
    // log2(n) levels (iterative, so a hostile row count does not grow the stack).
    let mut pending = vec![(0, batch.num_rows())];
    while let Some((start, rows)) = pending.pop() {
        let piece = batch.slice(start, rows);
        let values = batch_values(&piece);
        if values <= max {
            pieces.push(piece);
        } else if rows <= 1 {
            return Err(RowTooLarge { row: start, values });
        } else {
            let half = rows / 2;
            // Popped in order: the first half last pushed.
            pending.push((start + half, rows - half));
            pending.push((start, half));
        }
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, FixedSizeListArray, Int32Array, Int64Array, ListArray, StringArray, StructArray,
    };
    use arrow::datatypes::{Field, Int32Type, Schema};
    use arrow::ipc::reader::StreamReader;
    use arrow::ipc::writer::StreamWriter;

    use super::*;

    fn batch_of(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    /// What a reader of `batch`, written to an IPC stream, counts.
    fn read_back_values(batch: &RecordBatch) -> u64 {
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let mut reader = StreamReader::try_new(bytes.as_slice(), None).unwrap();
        batch_values(&reader.next().unwrap().unwrap())
    }

    fn lists() -> ListArray {
        // Row i holds i items.
        ListArray::from_iter_primitive::<Int32Type, _, _>(
            (0..100).map(|i| Some((0..i).map(Some).collect::<Vec<_>>())),
        )
    }

    #[test]
    fn rows_and_every_nested_value_count() {
        let strukt = StructArray::from(vec![(
            Arc::new(Field::new("a", DataType::Int64, false)),
            Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef,
        )]);
        let batch = batch_of(vec![
            ("n", Arc::new(Int64Array::from_iter_values(0..100))),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..100).map(|i| i.to_string()),
                )),
            ),
            ("l", Arc::new(lists())),
            ("st", Arc::new(strukt)),
        ]);
        // 100 rows; n, s: 100 each; l: 100 lists + 4,950 items; st: 100 + 100 fields.
        assert_eq!(batch_values(&batch), 100 + 100 + 100 + (100 + 4950) + 200);
        assert_eq!(read_back_values(&batch), batch_values(&batch));
    }

    #[test]
    fn a_slice_counts_what_the_writer_writes_of_it() {
        let fixed = FixedSizeListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Int32, false)),
            3,
            Arc::new(Int32Array::from_iter_values(0..300)),
            None,
        )
        .unwrap();
        let batch = batch_of(vec![("l", Arc::new(lists())), ("f", Arc::new(fixed))]);
        for (start, rows) in [(0, 10), (90, 10), (40, 1), (50, 0)] {
            let slice = batch.slice(start, rows);
            let items: u64 = (start..start + rows).map(|i| i as u64).sum();
            assert_eq!(
                batch_values(&slice),
                rows as u64 * 3 + items + 3 * rows as u64,
                "rows {start}..+{rows}"
            );
            assert_eq!(read_back_values(&slice), batch_values(&slice));
        }
    }

    #[test]
    fn a_batch_is_cut_into_slices_of_at_most_the_bound_in_order() {
        let batch = batch_of(vec![("l", Arc::new(lists()))]);
        let max = 500;
        let pieces = cut_to(&batch, max).unwrap();
        assert!(pieces.len() > 1);
        assert!(
            pieces
                .iter()
                .all(|p| batch_values(p) <= max && p.num_rows() > 0)
        );
        let joined = arrow::compute::concat_batches(&batch.schema(), &pieces).unwrap();
        assert_eq!(joined, batch);
        // A batch within the bound is kept whole.
        assert_eq!(
            cut_to(&batch, batch_values(&batch)).unwrap(),
            vec![batch.clone()]
        );
        let empty = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new(
            "n",
            DataType::Int64,
            true,
        )])));
        assert_eq!(cut_to(&empty, 1).unwrap().len(), 1);
    }

    #[test]
    fn a_row_over_the_bound_is_named() {
        let batch = batch_of(vec![("l", Arc::new(lists()))]);
        // Row 99 holds 99 items: 1 row + 1 list + 99 items.
        assert_eq!(
            cut_to(&batch, 100),
            Err(RowTooLarge {
                row: 99,
                values: 101
            })
        );
    }
}
