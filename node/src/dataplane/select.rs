//! Row filters of contracts, evaluated with Arrow compute kernels.
//!
//! A [`Filter`] is bound once to the schema of the data read: column names become indices,
//! each literal is cast to its column's Arrow type (the cast parses ISO dates for
//! `Date32`/`Date64` and date-times for `Timestamp`). Each batch is then evaluated bottom-up
//! with the `cmp`, `like`, `is_null` and Kleene `boolean` kernels, which keeps SQL's
//! three-valued logic: a comparison with a null cell is null, `NOT` of null is null, and the
//! `filter` kernel keeps only rows whose result is true.

// The module is public only with the `test-util` feature.
#![cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, Scalar, StringArray,
};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::comparison::{ilike, like, nilike, nlike};
use arrow::compute::kernels::{boolean, cast, cmp};
use arrow::compute::{is_not_null, is_null};
use arrow::datatypes::{DataType, Schema};
use arrow::error::ArrowError;
use mesh_protocol::descriptor::ColumnSchema;
use mesh_protocol::filter::Expr;
use mesh_protocol::{CompareOp, Filter, Literal};

/// A filter bound to a schema: column indices and typed scalars.
#[derive(Debug)]
pub struct BoundFilter {
    /// The expression with resolved columns and cast literals.
    root: Node,
}

/// One node of a bound expression.
#[derive(Debug)]
enum Node {
    /// Kleene AND of the operands.
    And(Vec<Node>),
    /// Kleene OR of the operands.
    Or(Vec<Node>),
    /// Kleene NOT.
    Not(Box<Node>),
    /// `column op scalar`.
    Compare {
        /// Column index in the batch.
        index: usize,
        /// The comparison.
        op: CompareOp,
        /// The literal, cast to the column's type.
        scalar: Scalar<ArrayRef>,
    },
    /// `column IS [NOT] NULL`.
    IsNull {
        /// Column index in the batch.
        index: usize,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `column [NOT] [I]LIKE pattern`.
    Like {
        /// Column index in the batch.
        index: usize,
        /// The column's value type when it is dictionary-encoded (the `like` kernels need
        /// plain strings), else `None`.
        unpack: Option<DataType>,
        /// The pattern, cast to the column's (value) string type.
        pattern: Scalar<ArrayRef>,
        /// `NOT LIKE`.
        negated: bool,
        /// `ILIKE`.
        case_insensitive: bool,
    },
}

/// Why a filter cannot be bound to the data.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The filter does not fit the data's schema (unknown column, wrong literal type).
    #[error("the filter does not fit the data: {0}")]
    Check(#[source] mesh_protocol::FilterError),
    /// A literal does not convert to its column's type.
    #[error("cannot compare column `{column}` of type {data_type} with {value}")]
    Cast {
        /// The column.
        column: String,
        /// Its Arrow type.
        data_type: DataType,
        /// The literal, as in the filter.
        value: String,
        /// Arrow's reason.
        #[source]
        source: ArrowError,
    },
}

impl BoundFilter {
    /// Binds `filter` to `schema`: type-checks it against the schema (as agreements are
    /// checked against descriptors), then resolves columns and casts literals.
    pub fn bind(filter: &Filter, schema: &Schema) -> Result<Self, BindError> {
        let columns: Vec<ColumnSchema> = schema
            .fields()
            .iter()
            .map(|f| ColumnSchema {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect();
        filter.check(&columns).map_err(BindError::Check)?;
        Ok(Self {
            root: bind_expr(filter.expr(), schema)?,
        })
    }

    /// The rows of `batch` for which the filter is true (false and null rows are dropped).
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let mask = self.evaluate(batch)?;
        if mask.null_count() == 0 && mask.true_count() == batch.num_rows() {
            return Ok(batch.clone());
        }
        // The filter kernel keeps only true rows: null counts as not selected.
        filter_record_batch(batch, &mask)
    }

    /// The filter's three-valued result for each row of `batch` (null where unknown).
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray, ArrowError> {
        evaluate(&self.root, batch)
    }
}

/// Resolves one expression (recursion bounded by the filter's depth bound).
fn bind_expr(expr: &Expr, schema: &Schema) -> Result<Node, BindError> {
    let index_of = |column: &str| {
        schema.index_of(column).map_err(|_| {
            BindError::Check(mesh_protocol::FilterError::UnknownColumn {
                column: column.to_owned(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            })
        })
    };
    let scalar = |column: &str, value: &Literal| -> Result<Scalar<ArrayRef>, BindError> {
        let data_type = schema.field(index_of(column)?).data_type();
        literal_scalar(column, value, data_type)
    };
    let compare = |column: &str, op: CompareOp, value: &Literal| -> Result<Node, BindError> {
        Ok(Node::Compare {
            index: index_of(column)?,
            op,
            scalar: scalar(column, value)?,
        })
    };
    Ok(match expr {
        Expr::And(operands) => Node::And(
            operands
                .iter()
                .map(|o| bind_expr(o, schema))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Or(operands) => Node::Or(
            operands
                .iter()
                .map(|o| bind_expr(o, schema))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Not(operand) => Node::Not(Box::new(bind_expr(operand, schema)?)),
        Expr::Compare { column, op, value } => compare(column, *op, value)?,
        // `x IN (a, b)` is `x = a OR x = b`; `x NOT IN (a, b)` is its negation.
        Expr::InList {
            column,
            values,
            negated,
        } => {
            let any = Node::Or(
                values
                    .iter()
                    .map(|v| compare(column, CompareOp::Eq, v))
                    .collect::<Result<_, _>>()?,
            );
            if *negated {
                Node::Not(Box::new(any))
            } else {
                any
            }
        }
        // `x BETWEEN a AND b` is `x >= a AND x <= b`.
        Expr::Between {
            column,
            low,
            high,
            negated,
        } => {
            let within = Node::And(vec![
                compare(column, CompareOp::GtEq, low)?,
                compare(column, CompareOp::LtEq, high)?,
            ]);
            if *negated {
                Node::Not(Box::new(within))
            } else {
                within
            }
        }
        Expr::IsNull { column, negated } => Node::IsNull {
            index: index_of(column)?,
            negated: *negated,
        },
        Expr::Like {
            column,
            pattern,
            negated,
            case_insensitive,
        } => {
            let index = index_of(column)?;
            let (unpack, text_type) = match schema.field(index).data_type() {
                DataType::Dictionary(_, values) => (Some((**values).clone()), (**values).clone()),
                other => (None, other.clone()),
            };
            Node::Like {
                index,
                unpack,
                pattern: literal_scalar(column, &Literal::Str(pattern.clone()), &text_type)?,
                negated: *negated,
                case_insensitive: *case_insensitive,
            }
        }
    })
}

/// `value` as a one-element array of `data_type`, for the comparison kernels.
fn literal_scalar(
    column: &str,
    value: &Literal,
    data_type: &DataType,
) -> Result<Scalar<ArrayRef>, BindError> {
    let literal: ArrayRef = match value {
        Literal::Str(s) | Literal::Date(s) | Literal::Timestamp(s) => {
            Arc::new(StringArray::from(vec![s.as_str()]))
        }
        Literal::Int(i) => Arc::new(Int64Array::from(vec![*i])),
        Literal::Float(x) => Arc::new(Float64Array::from(vec![x.get() + 0.0])),
        Literal::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
    };
    let options = cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    let cast_error = |source| BindError::Cast {
        column: column.to_owned(),
        data_type: data_type.clone(),
        value: value.to_string(),
        source,
    };
    let typed = cast::cast_with_options(&literal, data_type, &options).map_err(cast_error)?;
    if typed.null_count() > 0 {
        return Err(cast_error(ArrowError::CastError(format!(
            "{value} is not a value of type {data_type}"
        ))));
    }
    Ok(Scalar::new(typed))
}

/// `column` with every `-0.0` read as `0.0`, for comparisons: arrow's kernels order floats
/// totally, so `-0.0 < 0.0` there, where SQL (PostgreSQL, DuckDB) and pyarrow hold them
/// equal. (`x + 0.0` is `x` for every other value, NaN included.) Other types as they are.
fn signless_zeros(column: &ArrayRef) -> ArrayRef {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float16Type, Float32Type, Float64Type};
    match column.data_type() {
        DataType::Float64 => Arc::new(
            column
                .as_primitive::<Float64Type>()
                .unary::<_, Float64Type>(|x| x + 0.0),
        ),
        DataType::Float32 => Arc::new(
            column
                .as_primitive::<Float32Type>()
                .unary::<_, Float32Type>(|x| x + 0.0),
        ),
        DataType::Float16 => Arc::new(
            column
                .as_primitive::<Float16Type>()
                // The sign bit alone is `-0.0`: negated, `0.0`.
                .unary::<_, Float16Type>(|x| if x.to_bits() == 0x8000 { -x } else { x }),
        ),
        _ => column.clone(),
    }
}

/// Evaluates `node` over `batch` (recursion bounded by the filter's depth bound).
fn evaluate(node: &Node, batch: &RecordBatch) -> Result<BooleanArray, ArrowError> {
    match node {
        Node::And(operands) | Node::Or(operands) => {
            let mut acc: Option<BooleanArray> = None;
            for operand in operands {
                let value = evaluate(operand, batch)?;
                acc = Some(match acc {
                    None => value,
                    Some(a) if matches!(node, Node::And(_)) => boolean::and_kleene(&a, &value)?,
                    Some(a) => boolean::or_kleene(&a, &value)?,
                });
            }
            // Never empty in a parsed filter; an empty AND is true, an empty OR false.
            Ok(acc.unwrap_or_else(|| {
                BooleanArray::from(vec![matches!(node, Node::And(_)); batch.num_rows()])
            }))
        }
        Node::Not(operand) => boolean::not(&evaluate(operand, batch)?),
        Node::Compare { index, op, scalar } => {
            let column = &signless_zeros(batch.column(*index));
            match op {
                CompareOp::Eq => cmp::eq(column, scalar),
                CompareOp::NotEq => cmp::neq(column, scalar),
                CompareOp::Lt => cmp::lt(column, scalar),
                CompareOp::LtEq => cmp::lt_eq(column, scalar),
                CompareOp::Gt => cmp::gt(column, scalar),
                CompareOp::GtEq => cmp::gt_eq(column, scalar),
            }
        }
        Node::IsNull { index, negated } => {
            let column = batch.column(*index);
            if *negated {
                is_not_null(column)
            } else {
                is_null(column)
            }
        }
        Node::Like {
            index,
            unpack,
            pattern,
            negated,
            case_insensitive,
        } => {
            let column = match unpack {
                Some(values) => cast::cast(batch.column(*index), values)?,
                None => batch.column(*index).clone(),
            };
            match (negated, case_insensitive) {
                (false, false) => like(&column, pattern),
                (true, false) => nlike(&column, pattern),
                (false, true) => ilike(&column, pattern),
                (true, true) => nilike(&column, pattern),
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
            Field::new(
                "dict",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
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
                Arc::new(
                    vec![Some("a"), Some("b"), Some("cc"), None]
                        .into_iter()
                        .collect::<arrow::array::DictionaryArray<arrow::datatypes::Int32Type>>(),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_negative_zero_compares_equal_to_zero_as_sql_and_pyarrow_have_it() {
        let schema = Schema::new(vec![
            Field::new("x", DataType::Float64, false),
            Field::new("y", DataType::Float32, false),
            Field::new("id", DataType::Int32, false),
        ]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Float64Array::from(vec![-0.0, 0.0, 1.0, -1.0, f64::NAN])),
                Arc::new(arrow::array::Float32Array::from(vec![
                    -0.0,
                    0.0,
                    1.0,
                    -1.0,
                    f32::NAN,
                ])),
                Arc::new(arrow::array::Int32Array::from(vec![0, 1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let ids = |filter: &str| selected(&b, filter);
        for column in ["x", "y"] {
            assert_eq!(ids(&format!("{column} = 0")), [0, 1], "{column}");
            assert_eq!(ids(&format!("{column} = -0.0")), [0, 1], "{column}");
            assert_eq!(ids(&format!("{column} >= 0 AND {column} <= 1")), [0, 1, 2]);
            assert_eq!(ids(&format!("{column} < 0")), [3], "{column}");
            assert_eq!(ids(&format!("{column} <> 0")), [2, 3, 4], "{column}");
        }
        // The rows sent keep their own zero.
        let f = BoundFilter::bind(&Filter::parse("x = 0").unwrap(), &b.schema()).unwrap();
        let out = f.apply(&b).unwrap();
        let x = out
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert!(x.value(0).is_sign_negative() && x.value(1).is_sign_positive());
    }

    #[test]
    fn time_of_day_columns_compare_with_times_written_as_text() {
        use arrow::array::{Time32MillisecondArray, Time32SecondArray, Time64NanosecondArray};
        let schema = Schema::new(vec![
            Field::new("t", DataType::Time32(TimeUnit::Second), true),
            Field::new("ms", DataType::Time32(TimeUnit::Millisecond), false),
            Field::new("id", DataType::Int32, false),
            Field::new("ns", DataType::Time64(TimeUnit::Nanosecond), false),
        ]);
        // 00:00:00, 07:08:09, 12:34:00, 12:34:56, 23:59:59 and a null.
        let t = [
            Some(0),
            Some(25_689),
            Some(45_240),
            Some(45_296),
            Some(86_399),
            None,
        ];
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Time32SecondArray::from(t.to_vec())),
                Arc::new(Time32MillisecondArray::from(
                    t.map(|s| s.unwrap_or(0) * 1000 + 500).to_vec(),
                )),
                Arc::new(arrow::array::Int32Array::from(vec![0, 1, 2, 3, 4, 5])),
                Arc::new(Time64NanosecondArray::from(
                    t.map(|s| i64::from(s.unwrap_or(0)) * 1_000_000_000 + 1)
                        .to_vec(),
                )),
            ],
        )
        .unwrap();
        let ids = |filter: &str| selected(&b, filter);
        assert_eq!(ids("t = '12:34:56'"), [3]);
        assert_eq!(ids("t = '12:34'"), [2]);
        assert_eq!(ids("t >= '12:34'"), [2, 3, 4]);
        assert_eq!(ids("t BETWEEN '07:00' AND '12:59:59'"), [1, 2, 3]);
        assert_eq!(ids("t NOT IN ('00:00', '23:59:59')"), [1, 2, 3]);
        assert_eq!(ids("t IS NULL"), [5]);
        assert_eq!(ids("ms = '12:34:56.5'"), [3]);
        assert_eq!(ids("ms < '07:08:09.5'"), [0, 5]);
        assert_eq!(ids("ns > '12:34:56.000000001'"), [4]);
        // A fraction the unit cannot hold is refused, not cut.
        let refused = BoundFilter::bind(&Filter::parse("t > '12:34:56.5'").unwrap(), &b.schema());
        match refused {
            Err(BindError::Check(error)) => {
                assert!(error.to_string().contains("whole seconds"), "{error}")
            }
            other => panic!("expected a Check error, got {other:?}"),
        }
    }

    /// The third column (Int32) of the rows of `b` that `filter` selects.
    fn selected(b: &RecordBatch, filter: &str) -> Vec<i32> {
        let f = BoundFilter::bind(&Filter::parse(filter).unwrap(), &b.schema()).unwrap();
        let out = f.apply(b).unwrap();
        out.column(2)
            .as_any()
            .downcast_ref::<arrow::array::Int32Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    fn rows(filter: &str) -> Vec<i32> {
        selected(&batch(), filter)
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
    fn sql_operators_select_rows() {
        assert_eq!(rows("region = 'US' OR qty = 4"), [2, 4]);
        assert_eq!(rows("qty IN (1, 3, 9)"), [1, 3]);
        assert_eq!(rows("qty NOT IN (1, 3)"), [2, 4]);
        assert_eq!(rows("amount BETWEEN 3 AND 20"), [2, 3]);
        assert_eq!(rows("amount NOT BETWEEN 3 AND 20"), [1, 4]);
        assert_eq!(rows("region IS NULL"), [3]);
        assert_eq!(rows("region IS NOT NULL"), [1, 2, 4]);
        assert_eq!(rows("region LIKE 'E%'"), [1, 4]);
        assert_eq!(rows("region NOT LIKE 'E_'"), [2]);
        assert_eq!(rows("region ILIKE 'eu'"), [1, 4]);
        assert_eq!(rows("region NOT ILIKE 'eu'"), [2]);
        assert_eq!(rows("day < DATE '2024-02-15'"), [1, 2]);
        assert_eq!(rows("at >= DATE '2024-03-09'"), [3, 4]);
        assert_eq!(rows("at < TIMESTAMP '2023-11-14 22:13:20.000001'"), [1, 2]);
        assert_eq!(rows("ok = TRUE AND NOT (qty > 2 AND qty < 4)"), [1, 4]);
        assert_eq!(rows("dict = 'b' OR dict LIKE 'c%'"), [2, 3]);
    }

    /// SQL three-valued logic: a comparison with null is unknown, `NOT` keeps it unknown, and
    /// only true rows are kept. Row 3 has a null region.
    #[test]
    fn null_is_unknown_not_false() {
        assert_eq!(rows("NOT (region = 'EU')"), [2]);
        assert_eq!(rows("region <> 'EU'"), [2]);
        assert_eq!(rows("region NOT IN ('EU')"), [2]);
        assert_eq!(rows("region NOT LIKE 'E%'"), [2]);
        // Unknown OR true is true; unknown AND false is false, so NOT of it is true.
        assert_eq!(rows("region = 'EU' OR qty = 3"), [1, 3, 4]);
        assert_eq!(rows("NOT (region = 'EU' AND qty = 2)"), [1, 2, 3, 4]);
        assert_eq!(rows("NOT (region = 'EU' AND qty = 3)"), [1, 2, 4]);
        let b = batch();
        let f = BoundFilter::bind(&Filter::parse("region = 'EU'").unwrap(), &b.schema()).unwrap();
        let mask = f.evaluate(&b).unwrap();
        assert_eq!(mask.null_count(), 1);
        assert!(mask.is_null(2));
    }

    #[test]
    fn bad_bindings_are_explained() {
        let schema = batch().schema();
        let err = BoundFilter::bind(&Filter::parse("nope = 1").unwrap(), &schema).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        let err = BoundFilter::bind(&Filter::parse("day = 'soon'").unwrap(), &schema).unwrap_err();
        assert!(err.to_string().contains("day"), "{err}");
        // The binding type-checks: a number is not compared with a text column by casting.
        let err = BoundFilter::bind(&Filter::parse("region = 1").unwrap(), &schema).unwrap_err();
        assert!(matches!(err, BindError::Check(_)), "{err}");
        let err = BoundFilter::bind(&Filter::parse("qty LIKE '1%'").unwrap(), &schema).unwrap_err();
        assert!(err.to_string().contains("LIKE"), "{err}");
    }
}
