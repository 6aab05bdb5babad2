//! CSV for `meshnode sql --csv`, written as DuckDB's `COPY ... TO` and PostgreSQL's `COPY ...
//! CSV` write it: a NULL is an empty field, an empty text is `""`, and a field is quoted only
//! when it must be (it holds the delimiter, a quote or a line end). Arrow's CSV writer writes
//! both NULL and the empty text as an empty field, so a reader cannot tell them apart.
//!
//! Values are formatted as arrow's CSV writer formats them (`arrow::util::display` with its
//! defaults: RFC 3339 dates and timestamps); nested columns are refused as it refuses them.

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Writes a header line and then rows, as CSV, to `W`.
pub(crate) struct CsvWriter<W: Write> {
    out: W,
    /// One record's bytes, reused.
    line: Vec<u8>,
    /// One field's text, reused.
    field: String,
}

impl<W: Write> CsvWriter<W> {
    /// A writer to `out`; nothing is written until [`CsvWriter::header`].
    pub(crate) fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(1024),
            field: String::with_capacity(256),
        }
    }

    /// Writes the column names of `schema` as the header line.
    pub(crate) fn header(&mut self, schema: &Schema) -> std::io::Result<()> {
        self.line.clear();
        for (i, field) in schema.fields().iter().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            push_field(&mut self.line, field.name().as_bytes(), false);
        }
        self.end_record()
    }

    /// Writes the rows of `batch`.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let options = FormatOptions::default().with_null("");
        let formatters = batch
            .columns()
            .iter()
            .zip(batch.schema().fields())
            .map(|(array, field)| {
                if array.data_type().is_nested() {
                    Err(ArrowError::CsvError(format!(
                        "column `{}` is of the nested type {}, which CSV cannot hold",
                        field.name(),
                        array.data_type()
                    )))
                } else {
                    ArrayFormatter::try_new(array.as_ref(), &options)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Logical nulls: a Null column, a dictionary's null values, a run-end-encoded
        // column's null runs are nulls too, though their own validity says nothing.
        let nulls: Vec<_> = batch.columns().iter().map(|c| c.logical_nulls()).collect();
        for row in 0..batch.num_rows() {
            self.line.clear();
            for (column, formatter) in formatters.iter().enumerate() {
                if column > 0 {
                    self.line.push(b',');
                }
                if nulls[column].as_ref().is_some_and(|n| n.is_null(row)) {
                    continue;
                }
                self.field.clear();
                formatter.value(row).write(&mut self.field).map_err(|e| {
                    ArrowError::CsvError(format!("row {}, column {}: {e}", row + 1, column + 1))
                })?;
                // A value that is there but empty is quoted: only a NULL is an empty field.
                push_field(&mut self.line, self.field.as_bytes(), true);
            }
            self.end_record()?;
        }
        Ok(())
    }

    /// The writer, flushed.
    pub(crate) fn into_inner(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    fn end_record(&mut self) -> std::io::Result<()> {
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

/// Appends `text` as one CSV field: quoted (quotes doubled) when it holds a comma, a quote or a
/// line end, or when it is empty and `quote_empty`.
fn push_field(line: &mut Vec<u8>, text: &[u8], quote_empty: bool) {
    let special = text
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    let quoted = special || (quote_empty && text.is_empty());
    if !quoted {
        line.extend_from_slice(text);
        return;
    }
    line.push(b'"');
    for &b in text {
        if b == b'"' {
            line.push(b'"');
        }
        line.push(b);
    }
    line.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BinaryArray, Date32Array, Int64Array, ListArray, StringArray};
    use arrow::datatypes::Int64Type;

    use super::*;

    fn csv_of(batch: &RecordBatch) -> String {
        let mut writer = CsvWriter::new(Vec::new());
        writer.header(&batch.schema()).unwrap();
        writer.write(batch).unwrap();
        String::from_utf8(writer.into_inner().unwrap()).unwrap()
    }

    #[test]
    fn a_null_is_an_empty_field_and_an_empty_text_is_quoted() {
        let batch = RecordBatch::try_from_iter([
            (
                "s",
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    Some(""),
                    None,
                    Some("a,b"),
                    Some("q\"uote"),
                    Some("two\nlines"),
                ])) as ArrayRef,
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    None,
                    Some(3),
                    Some(4),
                    Some(-5),
                    Some(6),
                ])),
            ),
            (
                "b",
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\x01"[..]),
                    Some(&b""[..]),
                    None,
                    Some(&b""[..]),
                    None,
                    Some(&b"\xff"[..]),
                ])),
            ),
        ])
        .unwrap();
        // Text and numbers as DuckDB's `COPY ... TO 'x.csv' (HEADER)` writes them; binary
        // in hex, as arrow's CSV writer writes it.
        assert_eq!(
            csv_of(&batch),
            "s,n,b\nx,1,01\n\"\",,\"\"\n,3,\n\"a,b\",4,\"\"\n\"q\"\"uote\",-5,\n\"two\nlines\",6,ff\n"
        );
    }

    #[test]
    fn a_single_column_null_is_an_empty_line_and_an_empty_text_a_quoted_one() {
        let batch = RecordBatch::try_from_iter([(
            "s",
            Arc::new(StringArray::from(vec![Some("x"), Some(""), None])) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(csv_of(&batch), "s\nx\n\"\"\n\n");
    }

    #[test]
    fn values_are_formatted_as_arrows_csv_writer_formats_them() {
        let batch = RecordBatch::try_from_iter([
            (
                "d",
                Arc::new(Date32Array::from(vec![Some(19_000), Some(0)])) as ArrayRef,
            ),
            (
                "t",
                Arc::new(StringArray::from(vec![Some("plain"), Some("é ü")])),
            ),
        ])
        .unwrap();
        let mut plain = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(Vec::new());
        plain.write(&batch).unwrap();
        assert_eq!(csv_of(&batch).into_bytes(), plain.into_inner());
    }

    #[test]
    fn header_names_are_quoted_only_when_they_must_be() {
        let schema = Schema::new(vec![
            arrow::datatypes::Field::new("plain", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("a,b", arrow::datatypes::DataType::Int64, true),
        ]);
        let mut writer = CsvWriter::new(Vec::new());
        writer.header(&schema).unwrap();
        assert_eq!(writer.into_inner().unwrap(), b"plain,\"a,b\"\n");
    }

    #[test]
    fn a_nested_column_is_refused_naming_it() {
        let lists = ListArray::from_iter_primitive::<Int64Type, _, _>([Some(vec![Some(1)])]);
        let batch = RecordBatch::try_from_iter([("items", Arc::new(lists) as ArrayRef)]).unwrap();
        let err = CsvWriter::new(Vec::new()).write(&batch).unwrap_err();
        assert!(err.to_string().contains("`items`"), "{err}");
    }

    #[test]
    fn nulls_that_only_the_values_or_the_type_say_are_empty_fields() {
        use arrow::array::{DictionaryArray, NullArray, RunArray};
        use arrow::datatypes::Int32Type;

        let dictionary = DictionaryArray::<Int32Type>::new(
            vec![Some(0), Some(1), None].into(),
            Arc::new(StringArray::from(vec![Some(""), None])),
        );
        let runs = RunArray::<Int32Type>::try_new(
            &vec![1, 3].into(),
            &StringArray::from(vec![Some("a"), None]),
        )
        .unwrap();
        let batch = RecordBatch::try_from_iter([
            ("d", Arc::new(dictionary) as ArrayRef),
            ("n", Arc::new(NullArray::new(3))),
            ("r", Arc::new(runs)),
        ])
        .unwrap();
        assert_eq!(csv_of(&batch), "d,n,r\n\"\",,a\n,,\n,,\n");
    }
}
