//! Rows per batch, so that what the reader holds for one batch stays bounded.

use std::fs::File;
use std::io;

use super::PageError;
use super::thrift::Input;

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
pub(super) fn repeated_levels(
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
