//! Row filters of contracts, evaluated with Arrow compute kernels.
//!
//! A [`Filter`] is bound once to the schema of the data read: column names become indices,
//! each literal becomes a value of its column's Arrow type. Numbers are built exactly for
//! decimal columns (from their unscaled digits) and for `UInt64` beyond `i64`; other literals
//! are cast (the cast parses ISO dates for `Date32`/`Date64` and date-times for `Timestamp`),
//! after the filter's check has made sure that the type holds each literal exactly: a
//! fraction finer than a decimal's scale or a time unit, a decimal off its grid or a timestamp
//! outside its unit's range is refused, never cut or rounded by the cast. Each batch is then
//! evaluated bottom-up with the `cmp`, `like`, `is_null` and Kleene `boolean` kernels, which
//! keeps SQL's three-valued logic: a comparison with a null cell is null, `NOT` of null is
//! null, and the `filter` kernel keeps only rows whose result is true.

// The module is public only with the `test-util` feature.
#![cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Decimal32Array, Decimal64Array, Decimal128Array,
    Decimal256Array, Float64Array, Int64Array, RecordBatch, Scalar, StringArray, UInt64Array,
};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::comparison::{ilike, like, nilike, nlike};
use arrow::compute::kernels::{boolean, cast, cmp};
use arrow::compute::{is_not_null, is_null};
use arrow::datatypes::{DataType, Schema, i256};
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
    #[error("cannot compare column `{column}` of type {data_type} with {value}: {source}")]
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

/// `value` as a one-element array of `data_type`, for the comparison kernels. Numbers are
/// built exactly for decimal and integer columns (never through a cast that would round or
/// cut them: the filter's check has made sure the type holds them); everything else is cast.
fn literal_scalar(
    column: &str,
    value: &Literal,
    data_type: &DataType,
) -> Result<Scalar<ArrayRef>, BindError> {
    let cast_error = |source| BindError::Cast {
        column: column.to_owned(),
        data_type: data_type.clone(),
        value: value.to_string(),
        source,
    };
    let value_type = match data_type {
        DataType::Dictionary(_, values) => values.as_ref(),
        other => other,
    };
    let literal: ArrayRef = match value {
        Literal::Str(s) | Literal::Date(s) | Literal::Timestamp(s) => {
            Arc::new(StringArray::from(vec![s.as_str()]))
        }
        Literal::Int(_) | Literal::Float(_) | Literal::Exact(_) if value_type.is_decimal() => {
            decimal_literal(value, value_type).map_err(cast_error)?
        }
        Literal::Int(i) => Arc::new(Int64Array::from(vec![*i])),
        Literal::Float(x) => Arc::new(Float64Array::from(vec![x.get() + 0.0])),
        Literal::Exact(n) if n.is_integer() && value_type.is_integer() => {
            // Beyond `i64` (else it would be `Int`): only a `UInt64` column holds it.
            let v: u64 = n.as_str().parse().map_err(|_| {
                cast_error(ArrowError::CastError(format!(
                    "{n} is not a value of type {value_type}"
                )))
            })?;
            Arc::new(UInt64Array::from(vec![v]))
        }
        // A float column: the nearest f64 (then the column's float type), as for `Float`.
        Literal::Exact(n) => {
            let x: f64 = n
                .as_str()
                .parse()
                .map_err(|_| cast_error(ArrowError::CastError(format!("{n} is not a number"))))?;
            Arc::new(Float64Array::from(vec![x + 0.0]))
        }
        Literal::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
    };
    let options = cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    let typed = cast::cast_with_options(&literal, data_type, &options).map_err(cast_error)?;
    if typed.null_count() > 0 {
        return Err(cast_error(ArrowError::CastError(format!(
            "{value} is not a value of type {data_type}"
        ))));
    }
    Ok(Scalar::new(typed))
}

/// The number `value` as a one-element array of the decimal type `data_type`, built from its
/// exact unscaled digits: arrow's casts from integers and floats to decimals cut or round
/// (150 becomes 100 in a decimal of scale -2).
fn decimal_literal(value: &Literal, data_type: &DataType) -> Result<ArrayRef, ArrowError> {
    let (precision, scale) = match data_type {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => (*p, *s),
        other => {
            return Err(ArrowError::CastError(format!(
                "{other} is not a decimal type"
            )));
        }
    };
    let unscaled =
        mesh_protocol::filter::unscaled_decimal(value, precision, scale).map_err(|reason| {
            ArrowError::CastError(format!(
                "{value} is not a value of type {data_type}: {reason}"
            ))
        })?;
    let out_of_range =
        || ArrowError::CastError(format!("{value} is outside the range of type {data_type}"));
    Ok(match data_type {
        DataType::Decimal32(..) => Arc::new(
            Decimal32Array::from(vec![unscaled.parse::<i32>().map_err(|_| out_of_range())?])
                .with_precision_and_scale(precision, scale)?,
        ),
        DataType::Decimal64(..) => Arc::new(
            Decimal64Array::from(vec![unscaled.parse::<i64>().map_err(|_| out_of_range())?])
                .with_precision_and_scale(precision, scale)?,
        ),
        DataType::Decimal128(..) => Arc::new(
            Decimal128Array::from(vec![unscaled.parse::<i128>().map_err(|_| out_of_range())?])
                .with_precision_and_scale(precision, scale)?,
        ),
        _ => Arc::new(
            Decimal256Array::from(vec![i256::from_string(&unscaled).ok_or_else(out_of_range)?])
                .with_precision_and_scale(precision, scale)?,
        ),
    })
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

    /// The reason `filter` is refused when bound to `b`'s schema (it must be refused by the
    /// filter's check, as at agreement time, not by a cast).
    fn refused(b: &RecordBatch, filter: &str) -> String {
        match BoundFilter::bind(&Filter::parse(filter).unwrap(), &b.schema()) {
            Err(BindError::Check(error)) => error.to_string(),
            other => panic!("{filter}: expected a Check error, got {other:?}"),
        }
    }

    /// Decimal columns compare with the exact value written, as DuckDB compares a decimal
    /// column with a literal (a negative scale, which DuckDB lacks, by the same rule): never
    /// with a value a cast cut to the column's scale. Expected rows worked out by hand.
    #[test]
    fn decimal_columns_compare_with_the_exact_value_written() {
        use arrow::array::{Decimal128Array, Decimal256Array, Int32Array};
        use arrow::datatypes::i256;
        let schema = Schema::new(vec![
            Field::new("dn", DataType::Decimal128(5, -2), true),
            Field::new("cost", DataType::Decimal128(10, 2), true),
            Field::new("id", DataType::Int32, false),
            Field::new("wide", DataType::Decimal128(38, 10), true),
            Field::new("big", DataType::Decimal256(40, 0), true),
        ]);
        let big = |s: &str| i256::from_string(s).unwrap();
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                // 100, 200, 0, null, -100, 300.
                Arc::new(
                    Decimal128Array::from(vec![Some(1), Some(2), Some(0), None, Some(-1), Some(3)])
                        .with_precision_and_scale(5, -2)
                        .unwrap(),
                ),
                // 1.23, 1.24, 0.00, 12345678.99, -1.23, null.
                Arc::new(
                    Decimal128Array::from(vec![
                        Some(123),
                        Some(124),
                        Some(0),
                        Some(1_234_567_899),
                        Some(-123),
                        None,
                    ])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
                ),
                Arc::new(Int32Array::from(vec![0, 1, 2, 3, 4, 5])),
                // 1234567890123456.78, 1234567890123456.75, 1234567890123456.8, 0.1, null,
                // -0.1000000001.
                Arc::new(
                    Decimal128Array::from(vec![
                        Some(12_345_678_901_234_567_800_000_000),
                        Some(12_345_678_901_234_567_500_000_000),
                        Some(12_345_678_901_234_568_000_000_000),
                        Some(1_000_000_000),
                        None,
                        Some(-1_000_000_001),
                    ])
                    .with_precision_and_scale(38, 10)
                    .unwrap(),
                ),
                Arc::new(
                    Decimal256Array::from(vec![
                        Some(big("12345678901234567890")),
                        Some(big("12345678901234567891")),
                        Some(big("0")),
                        Some(big("-12345678901234567890")),
                        None,
                        Some(big(&format!("1{}", "0".repeat(39)))),
                    ])
                    .with_precision_and_scale(40, 0)
                    .unwrap(),
                ),
            ],
        )
        .unwrap();
        let ids = |filter: &str| selected(&b, filter);
        // Negative scale: every value is a multiple of 100.
        assert_eq!(ids("dn = 100"), [0]);
        assert_eq!(ids("dn = 200"), [1]);
        assert_eq!(ids("dn <> 200"), [0, 2, 4, 5]);
        assert_eq!(ids("dn < 200"), [0, 2, 4]);
        assert_eq!(ids("dn <= 100"), [0, 2, 4]);
        assert_eq!(ids("dn >= 100"), [0, 1, 5]);
        assert_eq!(ids("dn IN (0, -100)"), [2, 4]);
        assert_eq!(ids("dn NOT IN (0, -100)"), [0, 1, 5]);
        assert_eq!(ids("dn BETWEEN -100 AND 200"), [0, 1, 2, 4]);
        assert_eq!(ids("dn > -9999900"), [0, 1, 2, 4, 5]);
        // A value the type cannot hold: refused whatever the operator, never cut to 100.
        for filter in [
            "dn = 150",
            "dn = 250",
            "dn < 150",
            "dn <> 150",
            "dn >= 150",
            "dn IN (100, 150)",
            "dn BETWEEN 150 AND 300",
            "NOT (dn = 150)",
        ] {
            let reason = refused(&b, filter);
            assert!(
                reason.contains("column `dn` of type Decimal128(5, -2)")
                    && reason.contains("is not a multiple of 100"),
                "{filter}: {reason}"
            );
        }
        assert!(refused(&b, "dn = 150").ends_with("the nearest values it holds are 100 and 200"));
        // A number written with a point that the type holds.
        assert_eq!(ids("dn = 100.0"), [0]);
        assert_eq!(ids("dn <> -100.00"), [0, 1, 2, 5]);
        // Positive scale.
        assert_eq!(ids("cost = 1.23"), [0]);
        assert_eq!(ids("cost > 1.23"), [1, 3]);
        assert_eq!(ids("cost = 12345678.99"), [3]);
        assert_eq!(ids("cost < 0"), [4]);
        assert_eq!(ids("cost = -1.23"), [4]);
        assert_eq!(ids("cost >= 0.0"), [0, 1, 2, 3]);
        assert!(
            refused(&b, "cost = 1.234").contains("the nearest values it holds are 1.23 and 1.24")
        );
        assert!(refused(&b, "cost > 1.234").contains("more fraction digits than the scale 2"));
        // More digits than an f64 keeps.
        assert_eq!(ids("wide = 1234567890123456.78"), [0]);
        assert_eq!(ids("wide = 1234567890123456.75"), [1]);
        assert_eq!(ids("wide > 1234567890123456.78"), [2]);
        assert_eq!(ids("wide = 0.1"), [3]);
        assert_eq!(ids("wide < -0.1"), [5]);
        assert_eq!(ids("wide = -0.1000000001"), [5]);
        // Integers beyond i64.
        assert_eq!(ids("big > 12345678901234567890"), [1, 5]);
        assert_eq!(ids("big = -12345678901234567890"), [3]);
        assert_eq!(ids("big = 1000000000000000000000000000000000000000"), [5]);
        assert_eq!(ids("big < 0"), [3]);
        assert_eq!(ids("big BETWEEN 0 AND 12345678901234567890"), [0, 2]);
    }

    /// A `UInt64` column compares with integers up to `u64::MAX`, as DuckDB compares a
    /// `UBIGINT` column; beyond, the filter is refused.
    #[test]
    fn unsigned_64_bit_columns_compare_with_integers_beyond_i64() {
        use arrow::array::{Int32Array, UInt64Array};
        let schema = Schema::new(vec![
            Field::new("u", DataType::UInt64, true),
            Field::new("f", DataType::Float64, false),
            Field::new("id", DataType::Int32, false),
            Field::new(
                "dict",
                DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::UInt64)),
                true,
            ),
        ]);
        let u = vec![
            Some(0),
            Some(1),
            Some(u64::MAX),
            None,
            Some(1 << 63),
            Some(u64::MAX - 1),
        ];
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(UInt64Array::from(u.clone())),
                Arc::new(Float64Array::from(vec![0.0, 1.0, 1.8e19, 0.1, 1e20, -1e20])),
                Arc::new(Int32Array::from(vec![0, 1, 2, 3, 4, 5])),
                cast::cast(
                    &UInt64Array::from(u),
                    &DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::UInt64)),
                )
                .unwrap(),
            ],
        )
        .unwrap();
        let ids = |filter: &str| selected(&b, filter);
        assert_eq!(ids("u = 18446744073709551615"), [2]);
        assert_eq!(ids("u > 9223372036854775807"), [2, 4, 5]);
        assert_eq!(ids("u >= 9223372036854775808"), [2, 4, 5]);
        assert_eq!(ids("u < 9223372036854775808"), [0, 1]);
        assert_eq!(ids("u IN (0, 18446744073709551614)"), [0, 5]);
        assert_eq!(ids("u <> 1"), [0, 2, 4, 5]);
        assert_eq!(ids("u BETWEEN 1 AND 18446744073709551614"), [1, 4, 5]);
        assert_eq!(ids("dict = 18446744073709551615"), [2]);
        assert_eq!(ids("dict > 9223372036854775807"), [2, 4, 5]);
        assert_eq!(ids("f > 18446744073709551616"), [4]);
        assert_eq!(ids("f = 0.1000000000000000055511151231257827"), [3]);
        let reason = refused(&b, "u = 18446744073709551616");
        assert!(
            reason.contains("outside the range 0..=18446744073709551615"),
            "{reason}"
        );
        let reason = refused(&b, "u = -1");
        assert!(reason.contains("outside the range"), "{reason}");
    }

    /// A date-time with a finer fraction of a second than a timestamp column's unit, or
    /// outside the range of the unit, is refused when the filter is checked: the cast would
    /// cut the fraction (DuckDB selects only 00:00:01 for `>= '... 00:00:00.5'`), or fail on
    /// every fetch.
    #[test]
    fn timestamp_literals_the_unit_cannot_hold_are_refused_not_cut() {
        use arrow::array::{Int32Array, TimestampNanosecondArray, TimestampSecondArray};
        let schema = Schema::new(vec![
            Field::new("ts_s", DataType::Timestamp(TimeUnit::Second, None), true),
            Field::new(
                "ts_ns",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new("id", DataType::Int32, false),
            Field::new(
                "ts_tz",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+01:00".into())),
                true,
            ),
        ]);
        // 2024-01-01 00:00:00, 00:00:01, 00:00:02 and a null; the ns column holds the
        // extremes of its range, 2024-01-01 and 1970-01-01.
        let base = 1_704_067_200i64;
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(TimestampSecondArray::from(vec![
                    Some(base),
                    Some(base + 1),
                    Some(base + 2),
                    None,
                ])),
                Arc::new(TimestampNanosecondArray::from(vec![
                    Some(i64::MIN),
                    Some(i64::MAX),
                    Some(base * 1_000_000_000),
                    Some(0),
                ])),
                Arc::new(Int32Array::from(vec![0, 1, 2, 3])),
                Arc::new(
                    TimestampNanosecondArray::from(vec![
                        Some(i64::MIN + 86_400_000_000_000),
                        Some(i64::MAX - 86_400_000_000_000),
                        Some(0),
                        None,
                    ])
                    .with_timezone("+01:00"),
                ),
            ],
        )
        .unwrap();
        let ids = |filter: &str| selected(&b, filter);
        assert_eq!(ids("ts_s = '2024-01-01 00:00:00'"), [0]);
        assert_eq!(ids("ts_s = '2024-01-01 00:00:00.000'"), [0]);
        assert_eq!(ids("ts_s >= '2024-01-01 00:00:01'"), [1, 2]);
        assert_eq!(ids("ts_s > TIMESTAMP '2024-01-01T00:00:01Z'"), [2]);
        for filter in [
            "ts_s = '2024-01-01 00:00:00.5'",
            "ts_s >= '2024-01-01 00:00:00.5'",
            "ts_s < TIMESTAMP '2024-01-01 00:00:01.999'",
            "ts_s IN ('2024-01-01 00:00:00', '2024-01-01T00:00:02.1Z')",
        ] {
            let reason = refused(&b, filter);
            assert!(
                reason.contains("column `ts_s` of type Timestamp(s)")
                    && reason.contains("which a column of whole seconds cannot hold"),
                "{filter}: {reason}"
            );
        }
        // The whole range of nanoseconds, and nothing outside it.
        assert_eq!(ids("ts_ns <= '1677-09-21 00:12:43.145224192'"), [0]);
        assert_eq!(ids("ts_ns >= '2262-04-11T23:47:16.854775807Z'"), [1]);
        assert_eq!(
            ids("ts_ns BETWEEN DATE '1970-01-01' AND '2024-01-01'"),
            [2, 3]
        );
        for filter in [
            "ts_ns >= '1677-01-01'",
            "ts_ns < '2300-01-01'",
            "ts_ns = DATE '2300-01-01'",
            "ts_ns > '1677-09-21 00:12:43.145224191'",
            "ts_ns < TIMESTAMP '2262-04-11 23:47:16.854775808'",
        ] {
            let reason = refused(&b, filter);
            assert!(
                reason.contains("is outside the range of a timestamp in nanoseconds"),
                "{filter}: {reason}"
            );
        }
        // With a time zone, a time without Z is read in the zone: a day less at each end.
        assert_eq!(ids("ts_tz <= '1677-09-22 01:12:43.145224192'"), [0]);
        assert_eq!(ids("ts_tz >= '2262-04-10 23:47:16.854775807'"), [1]);
        assert_eq!(ids("ts_tz = '1970-01-01T00:00:00Z'"), [2]);
        assert_eq!(ids("ts_tz = '1970-01-01 01:00:00'"), [2]);
        assert_eq!(ids("ts_tz < '2262-04-11T23:47:16.854775807Z'"), [0, 1, 2]);
        let reason = refused(&b, "ts_tz < '2262-04-11 00:00:00'");
        assert!(
            reason.contains("read in the column's time zone"),
            "{reason}"
        );
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
