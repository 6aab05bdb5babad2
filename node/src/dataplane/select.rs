//! Row filters of contracts, evaluated with Arrow compute kernels.
//!
//! A [`Filter`] is a conjunction of `column op literal`; each literal is cast once to the
//! column's Arrow type (the cast parses ISO dates for `Date32`/`Date64` and date-times for
//! `Timestamp`), then compared batch by batch with the `cmp` kernels.

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, Scalar, StringArray,
};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::{boolean, cast, cmp};
use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use mesh_protocol::{CompareOp, Filter, Literal};

/// A filter bound to a schema: column indices and typed scalars.
#[derive(Debug)]
pub(crate) struct BoundFilter {
    /// `(column index, operator, literal cast to the column type)` per predicate.
    predicates: Vec<(usize, CompareOp, Scalar<ArrayRef>)>,
}

impl BoundFilter {
    /// Binds `filter` to `schema`; fails when a column is missing or a literal does not cast.
    pub(crate) fn bind(filter: &Filter, schema: &Schema) -> Result<Self, String> {
        let mut predicates = Vec::with_capacity(filter.predicates.len());
        for p in &filter.predicates {
            let index = schema.index_of(&p.column).map_err(|_| {
                format!(
                    "the filter names column `{}`, which the data lacks",
                    p.column
                )
            })?;
            let data_type = schema.field(index).data_type();
            let literal: ArrayRef = match &p.value {
                Literal::Str(s) => std::sync::Arc::new(StringArray::from(vec![s.as_str()])),
                Literal::Int(i) => std::sync::Arc::new(Int64Array::from(vec![*i])),
                Literal::Float(x) => std::sync::Arc::new(Float64Array::from(vec![x.get()])),
                Literal::Bool(b) => std::sync::Arc::new(BooleanArray::from(vec![*b])),
            };
            let options = cast::CastOptions {
                safe: false,
                ..Default::default()
            };
            let typed = cast::cast_with_options(&literal, data_type, &options).map_err(|e| {
                format!(
                    "cannot compare column `{}` of type {data_type} with {}: {e}",
                    p.column, p.value
                )
            })?;
            if typed.null_count() > 0 {
                return Err(format!(
                    "{} is not a value of type {data_type} (column `{}`)",
                    p.value, p.column
                ));
            }
            predicates.push((index, p.op, Scalar::new(typed)));
        }
        Ok(Self { predicates })
    }

    /// The rows of `batch` for which every predicate holds (null compares as false).
    pub(crate) fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let mut mask: Option<BooleanArray> = None;
        for (index, op, scalar) in &self.predicates {
            let column = batch.column(*index);
            let result = match op {
                CompareOp::Eq => cmp::eq(column, scalar)?,
                CompareOp::NotEq => cmp::neq(column, scalar)?,
                CompareOp::Lt => cmp::lt(column, scalar)?,
                CompareOp::LtEq => cmp::lt_eq(column, scalar)?,
                CompareOp::Gt => cmp::gt(column, scalar)?,
                CompareOp::GtEq => cmp::gt_eq(column, scalar)?,
            };
            mask = Some(match mask {
                None => result,
                Some(m) => boolean::and(&m, &result)?,
            });
        }
        match mask {
            None => Ok(batch.clone()),
            Some(mask) if mask.true_count() == batch.num_rows() => Ok(batch.clone()),
            Some(mask) => filter_record_batch(batch, &mask),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Date32Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, TimeUnit};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("region", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, false),
            Field::new("qty", DataType::Int32, false),
            Field::new("day", DataType::Date32, false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("ok", DataType::Boolean, false),
        ]);
        let day = |s| mesh_protocol::filter::parse_iso_date(s).unwrap() as i32;
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("EU"),
                    Some("US"),
                    None,
                    Some("EU"),
                ])),
                Arc::new(Float64Array::from(vec![1.5, 20.0, 3.0, 40.25])),
                Arc::new(arrow::array::Int32Array::from(vec![1, 2, 3, 4])),
                Arc::new(Date32Array::from(vec![
                    day("2024-01-01"),
                    day("2024-02-01"),
                    day("2024-03-01"),
                    day("2024-04-01"),
                ])),
                Arc::new(TimestampMicrosecondArray::from(vec![
                    0,
                    1_700_000_000_000_000,
                    1_710_000_000_000_000,
                    1_720_000_000_000_000,
                ])),
                Arc::new(BooleanArray::from(vec![true, false, true, true])),
            ],
        )
        .unwrap()
    }

    fn rows(filter: &str) -> Vec<i32> {
        let b = batch();
        let f = BoundFilter::bind(&Filter::parse(filter).unwrap(), &b.schema()).unwrap();
        let out = f.apply(&b).unwrap();
        out.column(2)
            .as_any()
            .downcast_ref::<arrow::array::Int32Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    #[test]
    fn predicates_select_rows() {
        assert_eq!(rows("region = 'EU'"), [1, 4]);
        assert_eq!(rows("region != 'EU'"), [2]);
        assert_eq!(rows("amount > 2 AND qty <= 3"), [2, 3]);
        assert_eq!(rows("amount >= 3.0"), [2, 3, 4]);
        assert_eq!(rows("qty < 2"), [1]);
        assert_eq!(rows("day >= '2024-02-15'"), [3, 4]);
        assert_eq!(rows("at > '2024-01-01T00:00:00'"), [3, 4]);
        assert_eq!(rows("ok = false"), [2]);
        assert_eq!(rows("region = 'nowhere'"), Vec::<i32>::new());
    }

    #[test]
    fn bad_bindings_are_explained() {
        let schema = batch().schema();
        let err = BoundFilter::bind(&Filter::parse("nope = 1").unwrap(), &schema).unwrap_err();
        assert!(err.contains("`nope`"), "{err}");
        let err = BoundFilter::bind(&Filter::parse("day = 'soon'").unwrap(), &schema).unwrap_err();
        assert!(err.contains("day"), "{err}");
    }
}
