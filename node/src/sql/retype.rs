//! Decimals of negative scale, presented to queries as decimals of scale 0.
//!
//! Arrow allows a negative scale (`Decimal128(5, -2)` holds 100, 200 and -100 as 1, 2 and
//! -1; pyarrow writes such columns to Arrow IPC, Parquet refuses them), but DataFusion
//! computes `10^scale` as `10_i128.pow(scale as u32)` in places: a comparison with a
//! literal (`amount = 100`, `amount < 150`, `IN`, `BETWEEN`) and `AVG` then panic, and
//! with overflow wrapping (a release build) the multiplier becomes 0, so that
//! `CAST(amount AS BIGINT) = 100` is read as `amount = 0` and answers other rows without a
//! word. So a column of `DecimalN(p, s)` with `s < 0` is presented as a decimal of scale 0
//! and precision `p - s`, which holds every value exactly (value × 10^-s): `Decimal128` up
//! to 38 digits, `Decimal256` up to 76, and the column is refused past that
//! ([`Unqueryable`]). Decimals inside lists, fixed-size lists, structs, maps and
//! dictionaries are re-typed the same way; inside other nested types the column is refused.
//! A scan converts each batch as it reads it ([`present`]), checking every value against
//! the declared precision, so a value the type cannot hold is an error, never a wrapped
//! number.
//!
//! The query text cannot bring such a type in either: [`written_in`] finds a negative scale
//! that a `CAST`, `TRY_CAST` or `arrow_cast` of the query writes, and the engine refuses
//! the query.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, GenericListArray, MapArray, OffsetSizeTrait,
    PrimitiveArray, RecordBatch, RecordBatchOptions, StructArray,
};
use arrow::datatypes::{
    DECIMAL128_MAX_PRECISION, DECIMAL256_MAX_PRECISION, DataType, Decimal32Type, Decimal64Type,
    Decimal128Type, Decimal256Type, DecimalType, FieldRef, Fields, SchemaRef, i256,
};
use arrow::error::ArrowError;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};

/// Why a column cannot be presented to queries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unqueryable {
    /// Its values need more digits at scale 0 than a decimal of the engine holds.
    #[error(
        "{declared} is a decimal of negative scale: its values have up to {digits} digits, \
         more than the {max} a decimal holds in the query engine"
    )]
    TooWide {
        /// The decimal type.
        declared: DataType,
        /// Digits of its largest value.
        digits: u32,
        /// Most digits of a decimal in the query engine.
        max: u8,
    },
    /// A decimal of negative scale inside a nested type the engine does not re-type.
    #[error(
        "it holds {declared}, a decimal of negative scale, inside a {container}, which the \
         query engine does not convert"
    )]
    Nested {
        /// The decimal type.
        declared: DataType,
        /// The nested type holding it (`union`, `run-end encoded array`, `list view`).
        container: &'static str,
    },
}

/// The type a column declared as `declared` has in queries: `declared` itself unless it
/// holds a decimal of negative scale, which becomes a decimal of scale 0 (see the module).
/// Recurses once per nesting level, which the catalog's type parser bounds.
pub(crate) fn query_type(declared: &DataType) -> Result<DataType, Unqueryable> {
    Ok(retyped(declared)?.unwrap_or_else(|| declared.clone()))
}

/// [`query_type`], `None` when the type is unchanged.
fn retyped(declared: &DataType) -> Result<Option<DataType>, Unqueryable> {
    use DataType as D;
    let field = |f: &FieldRef| -> Result<Option<FieldRef>, Unqueryable> {
        Ok(retyped(f.data_type())?.map(|t| Arc::new(f.as_ref().clone().with_data_type(t))))
    };
    let refused = |child: &DataType, container: &'static str| match retyped(child)? {
        Some(_) => Err(Unqueryable::Nested {
            declared: first_negative_scale(child).unwrap_or_else(|| child.clone()),
            container,
        }),
        None => Ok(None),
    };
    match declared {
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) | D::Decimal256(p, s)
            if *s < 0 =>
        {
            let digits = u32::from(*p) + u32::from(s.unsigned_abs());
            match u8::try_from(digits) {
                Ok(d) if d <= DECIMAL128_MAX_PRECISION => Ok(Some(D::Decimal128(d, 0))),
                Ok(d) if d <= DECIMAL256_MAX_PRECISION => Ok(Some(D::Decimal256(d, 0))),
                _ => Err(Unqueryable::TooWide {
                    declared: declared.clone(),
                    digits,
                    max: DECIMAL256_MAX_PRECISION,
                }),
            }
        }
        D::List(f) => Ok(field(f)?.map(D::List)),
        D::LargeList(f) => Ok(field(f)?.map(D::LargeList)),
        D::FixedSizeList(f, n) => Ok(field(f)?.map(|f| D::FixedSizeList(f, *n))),
        D::Map(f, sorted) => Ok(field(f)?.map(|f| D::Map(f, *sorted))),
        D::Struct(fields) => {
            let mut changed = false;
            let mut out = Vec::with_capacity(fields.len());
            for f in fields.iter() {
                match field(f)? {
                    Some(f) => {
                        changed = true;
                        out.push(f);
                    }
                    None => out.push(f.clone()),
                }
            }
            Ok(changed.then(|| D::Struct(Fields::from(out))))
        }
        D::Dictionary(key, values) => {
            Ok(retyped(values)?.map(|v| D::Dictionary(key.clone(), Box::new(v))))
        }
        D::Union(fields, _) => {
            for (_, f) in fields.iter() {
                refused(f.data_type(), "union")?;
            }
            Ok(None)
        }
        D::RunEndEncoded(_, values) => refused(values.data_type(), "run-end encoded array"),
        D::ListView(f) | D::LargeListView(f) => refused(f.data_type(), "list view"),
        _ => Ok(None),
    }
}

/// The first decimal of negative scale in `data_type`, by an iterative walk.
fn first_negative_scale(data_type: &DataType) -> Option<DataType> {
    use DataType as D;
    let mut stack = vec![data_type];
    while let Some(t) = stack.pop() {
        match t {
            D::Decimal32(_, s) | D::Decimal64(_, s) | D::Decimal128(_, s) | D::Decimal256(_, s)
                if *s < 0 =>
            {
                return Some(t.clone());
            }
            D::List(f)
            | D::LargeList(f)
            | D::ListView(f)
            | D::LargeListView(f)
            | D::FixedSizeList(f, _)
            | D::Map(f, _) => stack.push(f.data_type()),
            D::Struct(fields) => stack.extend(fields.iter().map(|f| f.data_type())),
            D::Union(fields, _) => stack.extend(fields.iter().map(|(_, f)| f.data_type())),
            D::Dictionary(_, values) => stack.push(values),
            D::RunEndEncoded(_, values) => stack.push(values.data_type()),
            _ => {}
        }
    }
    None
}

/// `batch` (columns of their declared types) with the columns of `schema`, by position:
/// each column whose type in `schema` differs is converted by [`present`].
pub(crate) fn present_batch(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, String> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields().iter())
        .map(|(column, field)| {
            present(column, field.data_type()).map_err(|e| {
                format!(
                    "column `{}` cannot be read as {}: {e}",
                    field.name(),
                    field.data_type()
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(|e| e.to_string())
}

/// `array` as `target` ([`query_type`] of its type): each decimal of negative scale scaled
/// to scale 0, exactly, and checked against its precision.
pub(crate) fn present(array: &ArrayRef, target: &DataType) -> Result<ArrayRef, ArrowError> {
    use DataType as D;
    if array.data_type() == target {
        return Ok(array.clone());
    }
    let unexpected = || {
        ArrowError::CastError(format!(
            "{} is not presented as {target} by the query engine",
            array.data_type()
        ))
    };
    match (array.data_type(), target) {
        (
            D::Decimal32(_, s) | D::Decimal64(_, s) | D::Decimal128(_, s) | D::Decimal256(_, s),
            D::Decimal128(p, 0) | D::Decimal256(p, 0),
        ) if *s < 0 => rescale(array, s.unsigned_abs().into(), target, *p),
        (D::List(_), D::List(f)) => list::<i32>(array.as_list_opt().ok_or_else(unexpected)?, f),
        (D::LargeList(_), D::LargeList(f)) => {
            list::<i64>(array.as_list_opt().ok_or_else(unexpected)?, f)
        }
        (D::FixedSizeList(_, _), D::FixedSizeList(f, n)) => {
            let list = array.as_fixed_size_list_opt().ok_or_else(unexpected)?;
            let values = present(list.values(), f.data_type())?;
            let out = FixedSizeListArray::try_new(f.clone(), *n, values, list.nulls().cloned())?;
            Ok(Arc::new(out))
        }
        (D::Struct(_), D::Struct(fields)) => {
            let array = array.as_struct_opt().ok_or_else(unexpected)?;
            Ok(Arc::new(structure(array, fields)?))
        }
        (D::Map(_, _), D::Map(f, sorted)) => {
            let map = array.as_map_opt().ok_or_else(unexpected)?;
            let D::Struct(entry_fields) = f.data_type() else {
                return Err(unexpected());
            };
            let entries = structure(map.entries(), entry_fields)?;
            let out = MapArray::try_new(
                f.clone(),
                map.offsets().clone(),
                entries,
                map.nulls().cloned(),
                *sorted,
            )?;
            Ok(Arc::new(out))
        }
        (D::Dictionary(_, _), D::Dictionary(_, values)) => {
            let dictionary = array.as_any_dictionary_opt().ok_or_else(unexpected)?;
            // Same length as the values it replaces, as `with_values` requires.
            let values = present(dictionary.values(), values)?;
            Ok(dictionary.with_values(values))
        }
        _ => Err(unexpected()),
    }
}

/// A list of `target` field's type from `list`.
fn list<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    target: &FieldRef,
) -> Result<ArrayRef, ArrowError> {
    let values = present(list.values(), target.data_type())?;
    let out = GenericListArray::<O>::try_new(
        target.clone(),
        list.offsets().clone(),
        values,
        list.nulls().cloned(),
    )?;
    Ok(Arc::new(out))
}

/// A struct of `fields` from `array`, field by field.
fn structure(array: &StructArray, fields: &Fields) -> Result<StructArray, ArrowError> {
    let columns = array
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(column, field)| present(column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    StructArray::try_new(fields.clone(), columns, array.nulls().cloned())
}

/// `array`, a decimal array of negative scale `-shift`, as `target` (a decimal of scale 0
/// and `precision`): each value times 10^shift, an error for any value the target's
/// precision does not hold (a value beyond the declared precision).
fn rescale(
    array: &ArrayRef,
    shift: u32,
    target: &DataType,
    precision: u8,
) -> Result<ArrayRef, ArrowError> {
    use DataType as D;
    let mul = i256::from_i128(10)
        .checked_pow(shift)
        .ok_or_else(|| ArrowError::CastError(format!("10^{shift} overflows a 256-bit integer")))?;
    let wide = |w: i256| Some(w);
    let narrow = |w: i256| w.to_i128();
    match (array.data_type(), target) {
        (D::Decimal32(..), D::Decimal128(..)) => {
            scaled::<Decimal32Type, Decimal128Type>(array, i256::from, narrow, mul, precision)
        }
        (D::Decimal64(..), D::Decimal128(..)) => {
            scaled::<Decimal64Type, Decimal128Type>(array, i256::from, narrow, mul, precision)
        }
        (D::Decimal128(..), D::Decimal128(..)) => {
            scaled::<Decimal128Type, Decimal128Type>(array, i256::from, narrow, mul, precision)
        }
        (D::Decimal32(..), D::Decimal256(..)) => {
            scaled::<Decimal32Type, Decimal256Type>(array, i256::from, wide, mul, precision)
        }
        (D::Decimal64(..), D::Decimal256(..)) => {
            scaled::<Decimal64Type, Decimal256Type>(array, i256::from, wide, mul, precision)
        }
        (D::Decimal128(..), D::Decimal256(..)) => {
            scaled::<Decimal128Type, Decimal256Type>(array, i256::from, wide, mul, precision)
        }
        (D::Decimal256(..), D::Decimal256(..)) => {
            scaled::<Decimal256Type, Decimal256Type>(array, |v| v, wide, mul, precision)
        }
        (from, to) => Err(ArrowError::CastError(format!(
            "{from} is not presented as {to} by the query engine"
        ))),
    }
}

/// The values of `array` (of decimal type `I`) times `mul`, as decimals of type `O` with
/// `precision` and scale 0; the values under nulls are left as they are.
fn scaled<I: DecimalType, O: DecimalType>(
    array: &ArrayRef,
    widen: impl Fn(I::Native) -> i256,
    narrow: impl Fn(i256) -> Option<O::Native>,
    mul: i256,
    precision: u8,
) -> Result<ArrayRef, ArrowError> {
    let array: &PrimitiveArray<I> = array.as_primitive_opt::<I>().ok_or_else(|| {
        ArrowError::CastError(format!("{} is not the decimal expected", array.data_type()))
    })?;
    let out: PrimitiveArray<O> = array.try_unary(|v| {
        widen(v)
            .checked_mul(mul)
            .and_then(&narrow)
            .filter(|w| O::is_valid_decimal_precision(*w, precision))
            .ok_or_else(|| {
                ArrowError::InvalidArgumentError(format!(
                    "the value {} is outside the precision of {}",
                    I::format_decimal(v, I::MAX_PRECISION, array.scale()),
                    array.data_type()
                ))
            })
    })?;
    Ok(Arc::new(out.with_precision_and_scale(precision, 0)?))
}

/// A decimal type of negative scale that `plan` writes itself (in a `CAST`, a `TRY_CAST`
/// or the type text of `arrow_cast` or `arrow_try_cast`), or that one of its nodes
/// produces, its subqueries included.
pub(crate) fn written_in(plan: &LogicalPlan) -> Option<DataType> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        found = node
            .schema()
            .fields()
            .iter()
            .find_map(|f| first_negative_scale(f.data_type()));
        if found.is_some() {
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|e| {
            e.apply(|sub| {
                found = written_by(sub);
                Ok(if found.is_some() {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })
    });
    found
}

/// The decimal type of negative scale that `expr` itself casts to, if any.
fn written_by(expr: &Expr) -> Option<DataType> {
    match expr {
        Expr::Cast(c) => first_negative_scale(c.field.data_type()),
        Expr::TryCast(c) => first_negative_scale(c.field.data_type()),
        Expr::ScalarFunction(f) if matches!(f.name(), "arrow_cast" | "arrow_try_cast") => {
            f.args.iter().find_map(|arg| match arg {
                Expr::Literal(
                    ScalarValue::Utf8(Some(text))
                    | ScalarValue::LargeUtf8(Some(text))
                    | ScalarValue::Utf8View(Some(text)),
                    _,
                ) => mesh_protocol::bounds::parse_data_type(text)
                    .ok()
                    .and_then(|t| first_negative_scale(&t)),
                _ => None,
            })
        }
        _ => None,
    }
}
