//! Type-checking a filter against a product schema, and the ISO date, date-time and time of
//! day forms that string, `DATE` and `TIMESTAMP` literals must take.

use arrow_schema::{DataType, TimeUnit};

use super::{Expr, FilterError, Literal};
use crate::descriptor::ColumnSchema;

/// Checks every condition of `expr` (recursion bounded by the filter's depth bound).
pub(super) fn check(expr: &Expr, columns: &[ColumnSchema]) -> Result<(), FilterError> {
    match expr {
        Expr::And(operands) | Expr::Or(operands) => {
            operands.iter().try_for_each(|o| check(o, columns))
        }
        Expr::Not(operand) => check(operand, columns),
        Expr::Compare { column, op, value } => {
            let schema = find(column, columns)?;
            on_column(schema, op.as_str(), |kind| {
                check_literal(kind, value, op.is_ordering())
            })
        }
        Expr::InList {
            column,
            values,
            negated,
        } => {
            let schema = find(column, columns)?;
            let operator = if *negated { "NOT IN" } else { "IN" };
            on_column(schema, operator, |kind| {
                values
                    .iter()
                    .try_for_each(|value| check_literal(kind, value, false))
            })
        }
        Expr::Between {
            column,
            low,
            high,
            negated,
        } => {
            let schema = find(column, columns)?;
            let operator = if *negated { "NOT BETWEEN" } else { "BETWEEN" };
            on_column(schema, operator, |kind| {
                check_literal(kind, low, true)?;
                check_literal(kind, high, true)
            })
        }
        Expr::IsNull { column, .. } => find(column, columns).map(|_| ()),
        Expr::Like {
            column,
            negated,
            case_insensitive,
            ..
        } => {
            let schema = find(column, columns)?;
            let operator = match (negated, case_insensitive) {
                (false, false) => "LIKE",
                (true, false) => "NOT LIKE",
                (false, true) => "ILIKE",
                (true, true) => "NOT ILIKE",
            };
            on_column(schema, operator, |kind| match kind {
                ColumnKind::Text => Ok(()),
                _ => Err("patterns match text columns only".to_owned()),
            })
        }
    }
}

fn find<'a>(column: &str, columns: &'a [ColumnSchema]) -> Result<&'a ColumnSchema, FilterError> {
    columns
        .iter()
        .find(|c| c.name == column)
        .ok_or_else(|| FilterError::UnknownColumn {
            column: column.to_owned(),
            available: columns.iter().map(|c| c.name.clone()).collect(),
        })
}

/// Parses the column's type (bounded) and runs `fits` on its kind; wraps a refusal in
/// [`FilterError::Incompatible`].
fn on_column(
    column: &ColumnSchema,
    operator: &str,
    fits: impl FnOnce(ColumnKind) -> Result<(), String>,
) -> Result<(), FilterError> {
    let incompatible = |reason| FilterError::Incompatible {
        column: column.name.clone(),
        data_type: column.data_type.clone(),
        operator: operator.to_owned(),
        reason,
    };
    let data_type = crate::bounds::parse_data_type(&column.data_type).map_err(|e| {
        incompatible(match e {
            crate::bounds::TypeError::Bounds(bound) => {
                format!("the schema's type is refused: {bound}")
            }
            crate::bounds::TypeError::Unknown { .. }
            | crate::bounds::TypeError::NoRoundTrip { .. } => {
                "the schema's type is not a known Arrow type".to_owned()
            }
        })
    })?;
    match column_kind(&data_type) {
        ColumnKind::Unsupported => Err(incompatible(
            "filters support text, numeric, boolean, date, timestamp and time of day columns \
             only (IS NULL works on any column)"
                .to_owned(),
        )),
        kind => fits(kind).map_err(incompatible),
    }
}

/// What a column type can be compared with.
#[derive(Clone, Copy)]
enum ColumnKind {
    Text,
    Integer { min: i128, max: i128 },
    Float,
    Decimal { precision: u8, scale: i8 },
    Boolean,
    Date,
    Timestamp,
    Time { fraction_digits: usize },
    Unsupported,
}

fn column_kind(data_type: &DataType) -> ColumnKind {
    use DataType as D;
    let int = |min: i128, max: i128| ColumnKind::Integer { min, max };
    match data_type {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => ColumnKind::Text,
        D::Int8 => int(i8::MIN.into(), i8::MAX.into()),
        D::Int16 => int(i16::MIN.into(), i16::MAX.into()),
        D::Int32 => int(i32::MIN.into(), i32::MAX.into()),
        D::Int64 => int(i64::MIN.into(), i64::MAX.into()),
        D::UInt8 => int(0, u8::MAX.into()),
        D::UInt16 => int(0, u16::MAX.into()),
        D::UInt32 => int(0, u32::MAX.into()),
        D::UInt64 => int(0, u64::MAX.into()),
        D::Float16 | D::Float32 | D::Float64 => ColumnKind::Float,
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) | D::Decimal256(p, s) => {
            ColumnKind::Decimal {
                precision: *p,
                scale: *s,
            }
        }
        D::Boolean => ColumnKind::Boolean,
        D::Date32 | D::Date64 => ColumnKind::Date,
        D::Timestamp(_, _) => ColumnKind::Timestamp,
        // A time of day, with the digits of a fraction of a second its unit holds.
        D::Time32(unit) | D::Time64(unit) => ColumnKind::Time {
            fraction_digits: match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            },
        },
        D::Dictionary(_, values) => column_kind(values),
        _ => ColumnKind::Unsupported,
    }
}

/// Digits a decimal type allows before the point, or `None` when any `i64` fits.
fn decimal_integer_digits(precision: u8, scale: i8) -> Option<u32> {
    let digits = i32::from(precision) - i32::from(scale);
    // 10^19 > i64::MAX, so 19 or more integer digits hold every integer literal.
    if digits >= 19 {
        None
    } else {
        Some(digits.max(0) as u32)
    }
}

/// Checks one literal against a column kind; `ordering` for `<`, `<=`, `>`, `>=` and
/// `BETWEEN`. The error is the reason in words.
fn check_literal(kind: ColumnKind, value: &Literal, ordering: bool) -> Result<(), String> {
    let mismatch = || format!("it cannot be compared with {} ({value})", value.kind());
    match (kind, value) {
        (ColumnKind::Unsupported, _) => Err("filters support text, numeric, boolean, date, \
                                             timestamp and time of day columns only"
            .to_owned()),
        (ColumnKind::Text, Literal::Str(_)) => Ok(()),
        (ColumnKind::Date, Literal::Str(s)) => {
            if parse_iso_date(s).is_some() {
                Ok(())
            } else {
                Err(format!("{value} is not an ISO date like '2024-03-01'"))
            }
        }
        (ColumnKind::Date | ColumnKind::Timestamp, Literal::Date(_)) => Ok(()),
        (ColumnKind::Timestamp, Literal::Timestamp(_)) => Ok(()),
        (ColumnKind::Date, Literal::Timestamp(_)) => Err(format!(
            "{value} has a time of day; compare a date column with DATE '...'"
        )),
        (ColumnKind::Timestamp, Literal::Str(s)) => {
            if is_iso_timestamp(s) {
                Ok(())
            } else {
                Err(format!(
                    "{value} is not an ISO date or date-time like '2024-03-01T12:00:00'"
                ))
            }
        }
        (ColumnKind::Time { fraction_digits }, Literal::Str(s)) => match iso_time_fraction(s) {
            Some(digits) if digits <= fraction_digits => Ok(()),
            Some(_) if fraction_digits == 0 => Err(format!(
                "{value} has a fraction of a second, which a column of whole seconds cannot \
                 hold; write a time like '12:34:56'"
            )),
            Some(_) => Err(format!(
                "{value} has more than the {fraction_digits} digits of a second the column holds"
            )),
            None => Err(format!(
                "{value} is not a time of day like '12:34:56' or '12:34' (hours 00-23)"
            )),
        },
        (ColumnKind::Integer { min, max }, Literal::Int(v)) => {
            if (min..=max).contains(&i128::from(*v)) {
                Ok(())
            } else {
                Err(format!(
                    "{v} is outside the range {min}..={max} of the type"
                ))
            }
        }
        (ColumnKind::Float, Literal::Int(_) | Literal::Float(_)) => Ok(()),
        (ColumnKind::Decimal { precision, scale }, Literal::Int(v)) => {
            match decimal_integer_digits(precision, scale) {
                Some(digits) if v.unsigned_abs() >= 10u64.pow(digits) => Err(format!(
                    "{v} has more than the {digits} integer digits the type allows"
                )),
                _ => Ok(()),
            }
        }
        (ColumnKind::Decimal { precision, scale }, Literal::Float(x)) => {
            let text = x.to_string();
            let fraction = text.split_once('.').map_or(0, |(_, f)| f.len());
            let fraction_digits = fraction.saturating_sub(usize::from(text.ends_with(".0")));
            if i32::try_from(fraction_digits).unwrap_or(i32::MAX) > i32::from(scale) {
                return Err(format!(
                    "{x} has more fraction digits than the scale {scale} of the type"
                ));
            }
            match decimal_integer_digits(precision, scale) {
                Some(digits) if x.get().abs() >= 10f64.powi(digits as i32) => Err(format!(
                    "{x} has more than the {digits} integer digits the type allows"
                )),
                _ => Ok(()),
            }
        }
        (ColumnKind::Boolean, Literal::Bool(_)) => {
            if ordering {
                Err("booleans have no order; use = or <> (or IN)".to_owned())
            } else {
                Ok(())
            }
        }
        (_, _) => Err(mismatch()),
    }
}

/// Days since 1970-01-01 of a strict `YYYY-MM-DD` date, or `None`.
pub fn parse_iso_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_len = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d < 1 || d > month_len {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The digits of the fraction of a second of `HH:MM`, `HH:MM:SS` or `HH:MM:SS.f` (1-9 digits),
/// hours 00-23, minutes and seconds 00-59; `None` for anything else. What a string literal
/// compared with a time of day column must be: Arrow's cast would also read a single-digit hour,
/// `AM`/`PM` or surrounding spaces, and would cut a fraction its unit cannot hold.
fn iso_time_fraction(s: &str) -> Option<usize> {
    let field = |part: Option<&str>, max: u32| {
        part.filter(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|n| n <= max)
    };
    let (hms, fraction) = match s.split_once('.') {
        Some((hms, f)) if (1..=9).contains(&f.len()) && f.bytes().all(|c| c.is_ascii_digit()) => {
            (hms, Some(f.len()))
        }
        Some(_) => return None,
        None => (s, None),
    };
    let mut parts = hms.split(':');
    let (hours, minutes, seconds) = (parts.next(), parts.next(), parts.next());
    let valid = field(hours, 23)
        && field(minutes, 59)
        && ((seconds.is_none() && fraction.is_none()) || field(seconds, 59))
        && parts.next().is_none();
    valid.then_some(fraction.unwrap_or(0))
}

/// `YYYY-MM-DD`, optionally followed by `T` or a space, `HH:MM:SS`, an optional fraction of
/// 1-9 digits and an optional `Z`.
pub(super) fn is_iso_timestamp(s: &str) -> bool {
    if s.len() < 10 || !s.is_char_boundary(10) || parse_iso_date(&s[..10]).is_none() {
        return false;
    }
    let rest = &s[10..];
    if rest.is_empty() {
        return true;
    }
    let Some(time) = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' ')) else {
        return false;
    };
    let time = time.strip_suffix('Z').unwrap_or(time);
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (time, None),
    };
    let field = |s: &str, max: u32| {
        s.len() == 2 && s.bytes().all(|c| c.is_ascii_digit()) && s.parse::<u32>().unwrap() <= max
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let hms_ok =
        parts.len() == 3 && field(parts[0], 23) && field(parts[1], 59) && field(parts[2], 59);
    let fraction_ok = fraction
        .is_none_or(|f| (1..=9).contains(&f.len()) && f.bytes().all(|c| c.is_ascii_digit()));
    hms_ok && fraction_ok
}
