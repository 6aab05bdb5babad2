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
            | crate::bounds::TypeError::NoRoundTrip { .. }
            | crate::bounds::TypeError::NestedMetadata { .. } => {
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
    Integer {
        min: i128,
        max: i128,
    },
    Float,
    Decimal {
        precision: u8,
        scale: i8,
    },
    Boolean,
    Date,
    /// `fraction_digits` of a second the unit holds; `zoned` when the column has a time zone
    /// (a time written without `Z` is then read in that zone).
    Timestamp {
        fraction_digits: u32,
        zoned: bool,
    },
    Time {
        fraction_digits: usize,
    },
    Unsupported,
}

/// Digits of a fraction of a second that `unit` holds.
fn unit_fraction_digits(unit: &TimeUnit) -> u32 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
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
        D::Timestamp(unit, zone) => ColumnKind::Timestamp {
            fraction_digits: unit_fraction_digits(unit),
            zoned: zone.is_some(),
        },
        // A time of day, with the digits of a fraction of a second its unit holds.
        D::Time32(unit) | D::Time64(unit) => ColumnKind::Time {
            fraction_digits: unit_fraction_digits(unit) as usize,
        },
        D::Dictionary(_, values) => column_kind(values),
        _ => ColumnKind::Unsupported,
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
        (ColumnKind::Date, Literal::Date(_)) => Ok(()),
        (ColumnKind::Date, Literal::Timestamp(_)) => Err(format!(
            "{value} has a time of day; compare a date column with DATE '...'"
        )),
        (
            ColumnKind::Timestamp {
                fraction_digits,
                zoned,
            },
            Literal::Str(s) | Literal::Date(s) | Literal::Timestamp(s),
        ) => match parse_iso_timestamp(s) {
            Some(instant) => check_timestamp(value, &instant, fraction_digits, zoned),
            None => Err(format!(
                "{value} is not an ISO date or date-time like '2024-03-01T12:00:00'"
            )),
        },
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
        (ColumnKind::Integer { min, max }, Literal::Int(_) | Literal::Exact(_)) => {
            let whole = match value {
                Literal::Int(v) => Some(i128::from(*v)),
                Literal::Exact(n) if n.is_integer() => n.as_str().parse::<i128>().ok(),
                _ => return Err(mismatch()),
            };
            match whole {
                Some(v) if (min..=max).contains(&v) => Ok(()),
                _ => Err(format!(
                    "{value} is outside the range {min}..={max} of the type"
                )),
            }
        }
        (ColumnKind::Float, Literal::Int(_) | Literal::Float(_) | Literal::Exact(_)) => Ok(()),
        (
            ColumnKind::Decimal { precision, scale },
            Literal::Int(_) | Literal::Float(_) | Literal::Exact(_),
        ) => unscaled_decimal(value, precision, scale).map(|_| ()),
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

/// The significant digits (trailing zeros aside) of the fraction of a second of `HH:MM`,
/// `HH:MM:SS` or `HH:MM:SS.f` (1-9 digits), hours 00-23, minutes and seconds 00-59; `None` for
/// anything else. What a string literal compared with a time of day column must be: Arrow's
/// cast would also read a single-digit hour, `AM`/`PM` or surrounding spaces, and would cut a
/// fraction its unit cannot hold.
fn iso_time_fraction(s: &str) -> Option<usize> {
    let field = |part: Option<&str>, max: u32| {
        part.filter(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|n| n <= max)
    };
    let (hms, fraction) = match s.split_once('.') {
        Some((hms, f)) if (1..=9).contains(&f.len()) && f.bytes().all(|c| c.is_ascii_digit()) => {
            (hms, Some(f.trim_end_matches('0').len()))
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

/// A date or date-time literal, read: whole seconds since 1970-01-01 00:00:00 and the digits
/// of the fraction of a second (trailing zeros removed).
pub(super) struct IsoInstant<'a> {
    /// Whole seconds since the epoch, in the time written (UTC with `Z`).
    seconds: i64,
    /// The fraction of a second's significant digits (at most 9).
    fraction: &'a str,
    /// Written with a `Z`.
    utc: bool,
}

/// `YYYY-MM-DD`, optionally followed by `T` or a space, `HH:MM:SS`, an optional fraction of
/// 1-9 digits and an optional `Z`.
pub(super) fn is_iso_timestamp(s: &str) -> bool {
    parse_iso_timestamp(s).is_some()
}

/// Reads what [`is_iso_timestamp`] accepts.
pub(super) fn parse_iso_timestamp(s: &str) -> Option<IsoInstant<'_>> {
    if s.len() < 10 || !s.is_char_boundary(10) {
        return None;
    }
    let days = parse_iso_date(&s[..10])?;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(IsoInstant {
            seconds: days * 86_400,
            fraction: "",
            utc: false,
        });
    }
    let time = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    let (time, utc) = match time.strip_suffix('Z') {
        Some(time) => (time, true),
        None => (time, false),
    };
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (time, None),
    };
    let field = |s: &str, max: i64| {
        (s.len() == 2 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<i64>().ok())
            .flatten()
            .filter(|n| *n <= max)
    };
    let mut parts = hms.split(':');
    let hours = field(parts.next()?, 23)?;
    let minutes = field(parts.next()?, 59)?;
    let seconds = field(parts.next()?, 59)?;
    if parts.next().is_some() {
        return None;
    }
    let fraction = match fraction {
        Some(f) if (1..=9).contains(&f.len()) && f.bytes().all(|c| c.is_ascii_digit()) => {
            f.trim_end_matches('0')
        }
        Some(_) => return None,
        None => "",
    };
    Some(IsoInstant {
        seconds: days * 86_400 + hours * 3_600 + minutes * 60 + seconds,
        fraction,
        utc,
    })
}

/// Checks that a timestamp column whose unit holds `fraction_digits` digits of a second holds
/// `instant` (the value of the literal `value`) exactly: no finer fraction, and within the
/// range of an `i64` of the unit (a day less at each end when the column has a time zone and
/// the text no `Z`: it is read in that zone, up to a day away from UTC).
fn check_timestamp(
    value: &Literal,
    instant: &IsoInstant<'_>,
    fraction_digits: u32,
    zoned: bool,
) -> Result<(), String> {
    let per_second = 10i128.pow(fraction_digits);
    let width = fraction_digits as usize;
    // The instant in the column's unit, cut to the digits the unit holds.
    let kept = &instant.fraction[..instant.fraction.len().min(width)];
    let kept = format!("{kept:0<width$}");
    let fraction: i128 = if kept.is_empty() {
        0
    } else {
        kept.parse()
            .map_err(|_| format!("{value} has a fraction that is not digits"))?
    };
    let cut = i128::from(instant.seconds) * per_second + fraction;
    if instant.fraction.len() > width {
        let neighbours = format!(
            "the nearest values it holds are '{}' and '{}'",
            format_instant(cut, fraction_digits),
            format_instant(cut + 1, fraction_digits),
        );
        return Err(if fraction_digits == 0 {
            format!(
                "{value} has a fraction of a second, which a column of whole seconds cannot \
                 hold; {neighbours}"
            )
        } else {
            format!(
                "{value} has more than the {fraction_digits} digits of a second the column \
                 holds; {neighbours}"
            )
        });
    }
    let margin = if zoned && !instant.utc {
        86_400 * per_second
    } else {
        0
    };
    let (min, max) = (i128::from(i64::MIN) + margin, i128::from(i64::MAX) - margin);
    if (min..=max).contains(&cut) {
        return Ok(());
    }
    let unit = match fraction_digits {
        0 => "seconds",
        3 => "milliseconds",
        6 => "microseconds",
        _ => "nanoseconds",
    };
    let zone = if margin > 0 {
        " (for a time without Z, which is read in the column's time zone)"
    } else {
        ""
    };
    Err(format!(
        "{value} is outside the range of a timestamp in {unit}, '{}' to '{}'{zone}",
        format_instant(min, fraction_digits),
        format_instant(max, fraction_digits),
    ))
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` of `value` in units of `10^-fraction_digits` seconds
/// since the epoch.
fn format_instant(value: i128, fraction_digits: u32) -> String {
    let per_second = 10i128.pow(fraction_digits);
    let (seconds, fraction) = (value.div_euclid(per_second), value.rem_euclid(per_second));
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    );
    if fraction_digits > 0 {
        text.push_str(&format!(
            ".{fraction:0width$}",
            width = fraction_digits as usize
        ));
    }
    text
}

/// A number's exact value in decimal digits.
struct Digits {
    /// Below zero (never for zero).
    negative: bool,
    /// Digits before the point, without leading zeros (empty for none).
    int: String,
    /// Digits after the point, without trailing zeros.
    frac: String,
}

/// The digits of a numeric literal: those of its canonical text (for a float, the shortest
/// digits that read back as it, which is what a contract says); `None` for other literals.
fn digits_of(value: &Literal) -> Option<Digits> {
    let text = match value {
        Literal::Int(v) => v.to_string(),
        Literal::Float(x) => x.to_string(),
        Literal::Exact(n) => n.as_str().to_owned(),
        _ => return None,
    };
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let int = int.trim_start_matches('0').to_owned();
    let frac = frac.trim_end_matches('0').to_owned();
    Some(Digits {
        negative: negative && !(int.is_empty() && frac.is_empty()),
        int,
        frac,
    })
}

/// The unscaled integer that a decimal column of `precision` and `scale` stores for the
/// numeric literal `value` (the value times 10^scale), as `-` and digits; or, in words, why
/// the type cannot hold the value exactly: more integer digits than it allows, or a value off
/// its grid (a fraction finer than the scale, or, for a negative scale, a number that is not a
/// multiple of 10^-scale), naming the nearest values it holds.
pub fn unscaled_decimal(value: &Literal, precision: u8, scale: i8) -> Result<String, String> {
    let digits = digits_of(value)
        .ok_or_else(|| format!("it cannot be compared with {} ({value})", value.kind()))?;
    let integer_digits = (i32::from(precision) - i32::from(scale)).max(0);
    if digits.int.len() > integer_digits as usize {
        return Err(format!(
            "{value} has more than the {integer_digits} integer digits the type allows"
        ));
    }
    // The magnitude times 10^scale, cut toward zero, and whether anything was cut.
    let (cut, exact) = if scale >= 0 {
        let scale = scale.unsigned_abs() as usize;
        let kept = digits.frac.len().min(scale);
        let mut cut = format!("{}{}", digits.int, &digits.frac[..kept]);
        cut.push_str(&"0".repeat(scale - kept));
        (cut, digits.frac.len() <= scale)
    } else {
        let shift = scale.unsigned_abs() as usize;
        let kept = digits.int.len().saturating_sub(shift);
        let exact = digits.frac.is_empty() && digits.int[kept..].bytes().all(|b| b == b'0');
        (digits.int[..kept].to_owned(), exact)
    };
    let cut = cut.trim_start_matches('0').to_owned();
    let sign = if digits.negative { "-" } else { "" };
    if exact {
        if cut.len() > usize::from(precision) {
            return Err(format!(
                "{value} has more significant digits than the {precision} the type holds"
            ));
        }
        return Ok(if cut.is_empty() {
            "0".to_owned()
        } else {
            format!("{sign}{cut}")
        });
    }
    // The values on either side, in ascending order, as far as the type holds them.
    let next = increment(&cut);
    let mut around: Vec<String> = [cut, next]
        .into_iter()
        .filter(|u| u.len() <= usize::from(precision))
        .map(|u| decimal_text(&u, digits.negative, scale))
        .collect();
    if digits.negative {
        around.reverse();
    }
    let nearest = match around.as_slice() {
        [one] => format!("; the nearest value it holds is {one}"),
        [low, high] => format!("; the nearest values it holds are {low} and {high}"),
        _ => String::new(),
    };
    Err(if scale >= 0 {
        format!("{value} has more fraction digits than the scale {scale} of the type{nearest}")
    } else {
        format!(
            "{value} is not a multiple of 1{}, as every value of the type is (scale \
             {scale}){nearest}",
            "0".repeat(scale.unsigned_abs() as usize)
        )
    })
}

/// `digits` (an unsigned integer, empty for zero) plus one.
fn increment(digits: &str) -> String {
    let mut out: Vec<u8> = digits.bytes().collect();
    for b in out.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
    out.insert(0, b'1');
    String::from_utf8_lossy(&out).into_owned()
}

/// The decimal text of the unscaled magnitude `unscaled` (digits, empty for zero) at `scale`.
fn decimal_text(unscaled: &str, negative: bool, scale: i8) -> String {
    if unscaled.is_empty() {
        return "0".to_owned();
    }
    let sign = if negative { "-" } else { "" };
    if scale <= 0 {
        return format!(
            "{sign}{unscaled}{}",
            "0".repeat(scale.unsigned_abs() as usize)
        );
    }
    let scale = scale.unsigned_abs() as usize;
    let padded = format!("{unscaled:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}
