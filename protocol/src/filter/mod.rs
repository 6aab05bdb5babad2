//! The row-filter language of sharing contracts.
//!
//! A consumer may ask for a subset of a product's rows with `--filter`; the provider applies
//! the filter on its side before anything leaves it. The language is a small subset of SQL
//! expressions, parsed with `sqlparser` (generic dialect):
//!
//! ```text
//! filter    := expr
//! expr      := expr OR expr  |  expr AND expr  |  NOT expr  |  ( expr )  |  condition
//! condition := column op value                      -- or `value op column`
//!            | column [NOT] IN ( value, ... )
//!            | column [NOT] BETWEEN value AND value
//!            | column IS [NOT] NULL
//!            | column [NOT] LIKE 'pattern'          -- also ILIKE (case-insensitive)
//! op        := =  |  <>  |  !=  |  <  |  <=  |  >  |  >=
//! column    := name  |  "any name"                  -- "" inside quotes is a quote
//! value     := 'string'                             -- '' inside quotes is a quote
//!            | -?[0-9]+                             -- integer (at most 76 digits)
//!            | -?[0-9]+.[0-9]+                      -- decimal number (76 digits each side)
//!            | TRUE | FALSE
//!            | DATE 'YYYY-MM-DD'
//!            | TIMESTAMP 'YYYY-MM-DD[( |T)HH:MM:SS[.fraction][Z]]'
//! ```
//!
//! Keywords are case-insensitive; column names are matched exactly. `LIKE` patterns use `%`
//! (any run of characters) and `_` (one character); a backslash escapes the next character.
//! Anything else (functions, arithmetic, casts, subqueries, one column compared with another,
//! `NULL` as a value) is refused with a message that names the construct.
//!
//! Semantics are SQL's three-valued logic: a comparison with a null cell is unknown, `NOT`
//! of unknown is unknown, and a row is selected only when the whole filter is true.
//!
//! [`Filter::parse`] turns text into a [`Filter`]; its [`Display`](fmt::Display) form is the
//! canonical text that contracts carry, and parses back to the same value (see
//! [`Filter`]'s `Display` for the exact form). [`Filter::check`] type-checks a filter against a
//! product schema.
//!
//! Text written in the language of earlier releases (an `AND` of `column op value`, with
//! `!=`, bare column names that may be SQL keywords, backslashes taken literally) is read by
//! that language's own parser first, so filters in existing agreements keep their meaning.
//!
//! Numbers keep the value written. An integer within `i64` is [`Literal::Int`]; a number with
//! a point is [`Literal::Float`] when an `f64` keeps its digits (the shortest digits of the
//! nearest `f64` are those written, trailing zeros aside), so that its canonical text is the
//! value written; any other number (an integer beyond `i64`, up to the 76 digits of the widest
//! decimal, or more fraction digits than an `f64` keeps) is an [`ExactNumber`], kept as its
//! digits. Integer and decimal columns compare with the exact value; float columns with the
//! nearest `f64`, cast to the column's float type.
//!
//! Temporal columns: `Date32`/`Date64` columns may be compared with `DATE '...'` or a string
//! holding an ISO date (`'2024-03-01'`); `Timestamp` columns also with `TIMESTAMP '...'` or a
//! string holding an ISO date-time (`'2024-03-01T12:00:00'`, optional fraction of a second,
//! optional `Z`). Time of day columns (`Time32`/`Time64`) may be compared with a string holding
//! a time, `'12:34:56'` or `'12:34'` (hours 00-23); there is no `TIME '...'` literal. The
//! provider compares them by casting the value to the column's type. Numbers are never
//! compared with temporal columns: their unit would be ambiguous.
//!
//! Exactness: a value that the column's type cannot hold exactly is refused by
//! [`Filter::check`] (when a contract is requested, agreed and fetched), whatever the
//! operator, never rounded or cut by a cast, which would select other rows than the text
//! says. Refused, with the nearest values the type holds:
//!
//! - for a decimal column, more fraction digits than its scale (`1.234` in scale 2), or, for
//!   a negative scale, a number that is not a multiple of 10^-scale (`150` in scale -2: its
//!   values are multiples of 100); and more integer digits than `precision - scale`;
//! - for an integer column, a value outside the type's range;
//! - for a timestamp or time of day column, a fraction of a second finer than its unit
//!   (`'2024-01-01 00:00:00.5'` with seconds; trailing zeros are no finer);
//! - for a timestamp column, an instant outside the range of an `i64` of its unit (in
//!   nanoseconds, 1677-09-21 00:12:43.145224192 to 2262-04-11 23:47:16.854775807), a day less
//!   at each end when the column has a time zone and the text no `Z` (it is then read in that
//!   zone).
//!
//! `<` and `>` with such a value would have an exact meaning (`dn < 150` is `dn <= 100` in
//! scale -2), but they are refused too: one rule for every operator and type, and a contract
//! whose text names a value the data cannot hold is more likely a misreading of the column
//! than an intent; the refusal names the values that say the same exactly.
//!
//! Bounds: the text is at most [`MAX_FILTER_LEN`] bytes (checked before any parser sees it),
//! nests at most [`MAX_DEPTH`] levels, has at most [`MAX_NODES`] conditions, operators and
//! values, and an `IN` list holds at most [`MAX_IN_LIST`] values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::descriptor::ColumnSchema;

mod check;
mod legacy;
mod parse;
#[cfg(test)]
mod tests;

pub use check::{parse_iso_date, unscaled_decimal};

/// Longest filter text accepted, in bytes; also the longest canonical text.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of `AND`, `OR`, `NOT` and parentheses accepted (a lone condition is 1).
pub const MAX_DEPTH: usize = 32;
/// Most nodes (conditions, `AND`/`OR`/`NOT` operators and `IN` list values) in one filter.
pub const MAX_NODES: usize = 256;
/// Most values in one `IN (...)` list.
pub const MAX_IN_LIST: usize = 128;

/// A row filter: a boolean expression over a product's columns.
///
/// Always within the bounds of the module (depth, nodes, list length, canonical length),
/// except a conjunction built with [`Filter::and`], which may be up to twice as large.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Filter {
    /// The expression, normalised: no `AND` directly inside an `AND`, no `OR` directly
    /// inside an `OR`, every `AND`/`OR` with at least two operands.
    expr: Expr,
}

/// A filter expression.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// True when every operand is true (at least two operands).
    And(Vec<Expr>),
    /// True when any operand is true (at least two operands).
    Or(Vec<Expr>),
    /// True when the operand is false.
    Not(Box<Expr>),
    /// `column op value`.
    Compare {
        /// The column compared.
        column: String,
        /// The comparison.
        op: CompareOp,
        /// The value the column is compared with.
        value: Literal,
    },
    /// `column [NOT] IN (values)`.
    InList {
        /// The column tested.
        column: String,
        /// The values (at least one, at most [`MAX_IN_LIST`]).
        values: Vec<Literal>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `column [NOT] BETWEEN low AND high` (both ends included).
    Between {
        /// The column tested.
        column: String,
        /// Lower end.
        low: Literal,
        /// Upper end.
        high: Literal,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `column IS [NOT] NULL`; never unknown.
    IsNull {
        /// The column tested.
        column: String,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `column [NOT] [I]LIKE 'pattern'`.
    Like {
        /// The (text) column matched.
        column: String,
        /// The pattern: `%` any run, `_` one character, `\` escapes.
        pattern: String,
        /// `NOT LIKE`.
        negated: bool,
        /// `ILIKE`: case-insensitive.
        case_insensitive: bool,
    },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `<>` (also written `!=`)
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

impl CompareOp {
    /// The operator in canonical text (`<>` for not-equal).
    pub fn as_str(&self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::NotEq => "<>",
            CompareOp::Lt => "<",
            CompareOp::LtEq => "<=",
            CompareOp::Gt => ">",
            CompareOp::GtEq => ">=",
        }
    }

    /// True for `<`, `<=`, `>` and `>=`, which need an ordered type.
    pub fn is_ordering(&self) -> bool {
        !matches!(self, CompareOp::Eq | CompareOp::NotEq)
    }

    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub fn flipped(self) -> CompareOp {
        match self {
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::LtEq => CompareOp::GtEq,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::GtEq => CompareOp::LtEq,
            other => other,
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finite `f64`, compared and hashed by its bits so that [`Literal`] can be `Eq` and
/// encodes deterministically. NaN and infinities cannot be built or deserialised.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct FiniteF64 {
    /// `f64::to_bits` of a finite value.
    bits: u64,
}

impl FiniteF64 {
    /// Wraps `value` if it is finite.
    pub fn new(value: f64) -> Option<Self> {
        value.is_finite().then(|| Self {
            bits: value.to_bits(),
        })
    }

    /// The value.
    pub fn get(self) -> f64 {
        f64::from_bits(self.bits)
    }
}

impl TryFrom<f64> for FiniteF64 {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, String> {
        Self::new(value).ok_or_else(|| format!("{value} is not a finite number"))
    }
}

impl From<FiniteF64> for f64 {
    fn from(value: FiniteF64) -> f64 {
        value.get()
    }
}

impl fmt::Debug for FiniteF64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.get())
    }
}

/// Canonical decimal text: no exponent, always a `.` (so it reads back as a float, not an
/// integer), the shortest digits that round-trip.
impl fmt::Display for FiniteF64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Display` for f64 never uses an exponent and prints the shortest round-trip digits.
        let text = self.get().to_string();
        if text.contains('.') {
            f.write_str(&text)
        } else {
            write!(f, "{text}.0")
        }
    }
}

/// Most digits a number in a filter may have before, and after, its point when it is kept
/// as an [`ExactNumber`]: the precision of the widest decimal type, `Decimal256(76, _)`.
pub const MAX_NUMBER_DIGITS: usize = 76;

/// A number that neither [`Literal::Int`] nor [`Literal::Float`] holds exactly: an integer
/// beyond the range of `i64` (which a `UInt64` or a decimal column may hold), or a number with
/// a fraction whose digits an `f64` does not keep (`12345678901234567.89`). Kept as its
/// digits, so that an integer or decimal column is compared with exactly the value written;
/// a float column reads it as the nearest `f64`.
///
/// The text is normalised, and is the number's canonical text: an optional `-`, no leading
/// zeros, and, when written with a point, a fraction of at least one digit without trailing
/// zeros (`12345678901234567890.0` for a whole number written with a point); at most
/// [`MAX_NUMBER_DIGITS`] digits before and after the point; never zero. It is built only by
/// the parser (or from text that the parser reads as this same value), so that a number has
/// one representation only.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExactNumber {
    /// The normalised text.
    text: String,
}

impl ExactNumber {
    /// The number's canonical text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it was written without a point (an integer).
    pub fn is_integer(&self) -> bool {
        !self.text.contains('.')
    }
}

impl TryFrom<String> for ExactNumber {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        match parse::number(unsigned, negative) {
            Ok(Literal::Exact(number)) if number.text == text => Ok(number),
            _ => Err(format!(
                "{text:?} is not the canonical text of a number beyond i64 or f64"
            )),
        }
    }
}

impl From<ExactNumber> for String {
    fn from(value: ExactNumber) -> String {
        value.text
    }
}

impl fmt::Debug for ExactNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for ExactNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A literal value in a condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Literal {
    /// `'text'`
    Str(String),
    /// An integer without a decimal point, within the range of `i64`.
    Int(i64),
    /// A number with a decimal point whose digits an `f64` keeps: the shortest digits that
    /// read back as the same `f64` are the digits written (trailing zeros aside).
    Float(FiniteF64),
    /// Any other number (see [`ExactNumber`]).
    Exact(ExactNumber),
    /// `TRUE` or `FALSE`.
    Bool(bool),
    /// `DATE 'YYYY-MM-DD'`; the text is a valid ISO date.
    Date(String),
    /// `TIMESTAMP '...'`; the text is a valid ISO date or date-time.
    Timestamp(String),
}

impl Literal {
    /// What kind of literal this is, for messages: `a string`, `an integer`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Literal::Str(_) => "a string",
            Literal::Int(_) => "an integer",
            Literal::Float(_) => "a decimal number",
            Literal::Exact(n) if n.is_integer() => "an integer",
            Literal::Exact(_) => "a decimal number",
            Literal::Bool(_) => "a boolean",
            Literal::Date(_) => "a date",
            Literal::Timestamp(_) => "a timestamp",
        }
    }
}

fn quoted_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    write!(f, "'{}'", s.replace('\'', "''"))
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => quoted_string(f, s),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Exact(n) => write!(f, "{n}"),
            Literal::Bool(true) => f.write_str("TRUE"),
            Literal::Bool(false) => f.write_str("FALSE"),
            Literal::Date(s) => {
                f.write_str("DATE ")?;
                quoted_string(f, s)
            }
            Literal::Timestamp(s) => {
                f.write_str("TIMESTAMP ")?;
                quoted_string(f, s)
            }
        }
    }
}

/// Why a filter could not be parsed or does not fit a schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Nothing but whitespace.
    #[error("the filter is empty; expected a condition, e.g. `region = 'EU'`")]
    Empty,
    /// Longer than [`MAX_FILTER_LEN`].
    #[error("the filter is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Length of the text in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The canonical text of the filter would be longer than [`MAX_FILTER_LEN`].
    #[error(
        "the filter's canonical text is {len} bytes long; the limit is {max}: \
         use fewer or shorter conditions"
    )]
    CanonicalTooLong {
        /// Length of the canonical text in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`] (or than the parser's own limit).
    #[error(
        "the filter nests parentheses, AND, OR and NOT more than {max} levels deep; \
         simplify it"
    )]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_NODES`] nodes.
    #[error(
        "the filter has more than {max} conditions, operators and values; \
         simplify it (an IN list is shorter than many ORs)"
    )]
    TooManyNodes {
        /// The limit.
        max: usize,
    },
    /// The text made the SQL parser try more alternatives than any filter within the other
    /// bounds needs (its expression parser backtracks: nested `NOT (` with an error deep
    /// inside doubles its work per level).
    #[error(
        "the filter is too complex to parse (over {max} expressions tried); simplify its \
         nesting"
    )]
    TooComplex {
        /// The limit on expressions tried.
        max: usize,
    },
    /// An `IN` list longer than [`MAX_IN_LIST`].
    #[error("an IN list on column `{column}` has {len} values; the limit is {max}")]
    InListTooLong {
        /// The column tested.
        column: String,
        /// Values in the list.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text is not a SQL expression.
    #[error("the filter is not a valid SQL condition: {0}")]
    Syntax(#[source] sqlparser::parser::ParserError),
    /// Valid SQL outside the filter language.
    #[error("{construct} is not supported in filters; {hint}")]
    Unsupported {
        /// The construct, e.g. "the function `lower`".
        construct: String,
        /// What to write instead.
        hint: String,
    },
    /// A number with more than [`MAX_NUMBER_DIGITS`] digits before or after its point (and
    /// no exact `f64`), or that uses a form the language does not have (exponents,
    /// hexadecimal).
    #[error("the number {text} is {reason}")]
    BadNumber {
        /// The number as written.
        text: String,
        /// Why, e.g. "out of range".
        reason: &'static str,
    },
    /// A `DATE` or `TIMESTAMP` literal whose text is not an ISO date or date-time.
    #[error("{text} is not a valid {what}; write e.g. {example}")]
    BadTemporal {
        /// The literal as written.
        text: String,
        /// "date" or "timestamp".
        what: &'static str,
        /// A valid example.
        example: &'static str,
    },
    /// [`Filter::check`]: the column is not in the schema.
    #[error("unknown column `{column}`; the product has columns: {}", available.join(", "))]
    UnknownColumn {
        /// The column named in the filter.
        column: String,
        /// The schema's columns, in order.
        available: Vec<String>,
    },
    /// [`Filter::check`]: the condition cannot apply to the column's type.
    #[error("cannot apply `{operator}` to column `{column}` of type {data_type}: {reason}")]
    Incompatible {
        /// The column.
        column: String,
        /// Its Arrow type, as in the schema.
        data_type: String,
        /// The operator, e.g. `=`, `IN`, `BETWEEN`, `LIKE`.
        operator: String,
        /// Why, in words.
        reason: String,
    },
}

impl Filter {
    /// Parses filter text. See the module documentation for the grammar and the bounds; the
    /// length bound is checked before any parser sees the text.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong {
                len: text.len(),
                max: MAX_FILTER_LEN,
            });
        }
        if text.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        // The language of earlier releases first: its texts keep their exact meaning.
        let expr = match legacy::parse(text) {
            Some(expr) => expr,
            None => parse::parse(text)?,
        };
        Filter::from_expr(expr)
    }

    /// Builds a filter from an expression: normalises it (nested `AND`s and `OR`s flattened,
    /// one-operand `AND`/`OR` replaced by the operand) and checks the bounds of the module.
    pub fn from_expr(expr: Expr) -> Result<Filter, FilterError> {
        let (depth, nodes) = match measure(&expr) {
            Ok(measured) => measured,
            Err(e) => {
                // Too deep to drop by recursion, perhaps.
                dismantle(expr);
                return Err(e);
            }
        };
        if depth > MAX_DEPTH {
            return Err(FilterError::TooDeep { max: MAX_DEPTH });
        }
        if nodes > MAX_NODES {
            return Err(FilterError::TooManyNodes { max: MAX_NODES });
        }
        let expr = normalise(expr)?;
        let filter = Filter { expr };
        let len = filter.to_string().len();
        if len > MAX_FILTER_LEN {
            return Err(FilterError::CanonicalTooLong {
                len,
                max: MAX_FILTER_LEN,
            });
        }
        Ok(filter)
    }

    /// The expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The conjunction of `self` and `other`: a row passes when it passes both. Used to
    /// intersect a query's filter with an agreement's; the result never selects more rows
    /// than either side. Operands already present are not repeated. The result may exceed
    /// the bounds of [`Filter::parse`] (at most twice them), so it is meant for evaluation,
    /// not for sending as text.
    pub fn and(self, other: Filter) -> Filter {
        let mut parts: Vec<Expr> = Vec::new();
        for expr in [self.expr, other.expr] {
            let operands = match expr {
                Expr::And(operands) => operands,
                other => vec![other],
            };
            for operand in operands {
                if !parts.contains(&operand) {
                    parts.push(operand);
                }
            }
        }
        let expr = if parts.len() == 1 {
            parts.pop().expect("one operand")
        } else {
            Expr::And(parts)
        };
        Filter { expr }
    }

    /// Names of the columns the filter reads, in order of appearance (repeats included).
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        let mut out = Vec::new();
        let mut stack = vec![&self.expr];
        while let Some(expr) = stack.pop() {
            match expr {
                Expr::And(operands) | Expr::Or(operands) => stack.extend(operands.iter().rev()),
                Expr::Not(operand) => stack.push(operand),
                Expr::Compare { column, .. }
                | Expr::InList { column, .. }
                | Expr::Between { column, .. }
                | Expr::IsNull { column, .. }
                | Expr::Like { column, .. } => out.push(column.as_str()),
            }
        }
        out.into_iter()
    }

    /// Checks that every column exists in `columns` and that each condition can apply to
    /// the column's Arrow type:
    ///
    /// - strings with `Utf8`, `LargeUtf8`, `Utf8View` (and dictionaries of them); with `Date32`
    ///   and `Date64` when they hold an ISO date; with `Timestamp` when they hold an ISO date or
    ///   date-time; with `Time32` and `Time64` when they hold a time of day (`HH:MM[:SS[.f]]`,
    ///   no more fraction digits than the unit holds);
    /// - `DATE` literals with date and timestamp columns, `TIMESTAMP` literals with timestamp
    ///   columns;
    /// - integers with integer, float and decimal types, when the type holds the value
    ///   exactly (within an integer type's range; for a decimal, within its integer digits and,
    ///   for a negative scale, a multiple of 10^-scale);
    /// - decimal numbers with float and decimal types (for a decimal, no more fraction digits
    ///   than the scale and a multiple of 10^-scale);
    /// - dates and date-times with timestamp columns when the unit holds them: no finer
    ///   fraction of a second, within the range of an `i64` of the unit;
    /// - booleans with `Boolean`, and only with `=`, `<>` and `IN`;
    /// - `LIKE` and `ILIKE` with text columns only;
    /// - `IS [NOT] NULL` with a column of any type.
    pub fn check(&self, columns: &[ColumnSchema]) -> Result<(), FilterError> {
        check::check(&self.expr, columns)
    }
}

/// Depth and node count of `expr`, without recursion (the expression may come from a caller
/// that built it by hand). Stops counting once a bound is exceeded.
fn measure(expr: &Expr) -> Result<(usize, usize), FilterError> {
    let mut depth = 0;
    let mut nodes = 0;
    let mut stack = vec![(expr, 1usize)];
    while let Some((expr, level)) = stack.pop() {
        depth = depth.max(level);
        if depth > MAX_DEPTH {
            return Err(FilterError::TooDeep { max: MAX_DEPTH });
        }
        nodes += 1;
        match expr {
            Expr::And(operands) | Expr::Or(operands) => {
                stack.extend(operands.iter().map(|o| (o, level + 1)));
            }
            Expr::Not(operand) => stack.push((operand, level + 1)),
            Expr::InList { column, values, .. } => {
                if values.len() > MAX_IN_LIST {
                    return Err(FilterError::InListTooLong {
                        column: column.clone(),
                        len: values.len(),
                        max: MAX_IN_LIST,
                    });
                }
                nodes += values.len();
            }
            Expr::Compare { .. }
            | Expr::Between { .. }
            | Expr::IsNull { .. }
            | Expr::Like { .. } => {}
        }
        if nodes > MAX_NODES {
            return Err(FilterError::TooManyNodes { max: MAX_NODES });
        }
    }
    Ok((depth, nodes))
}

/// Drops `expr` without recursion.
fn dismantle(expr: Expr) {
    let mut stack = vec![expr];
    while let Some(expr) = stack.pop() {
        match expr {
            Expr::And(operands) | Expr::Or(operands) => stack.extend(operands),
            Expr::Not(operand) => stack.push(*operand),
            _ => {}
        }
    }
}

/// Flattens nested `AND`s and `OR`s and removes one-operand ones. Recursion is bounded by
/// [`MAX_DEPTH`], which [`measure`] checked.
fn normalise(expr: Expr) -> Result<Expr, FilterError> {
    let empty = || FilterError::Unsupported {
        construct: "an AND or OR without operands".into(),
        hint: "give it at least one condition".into(),
    };
    Ok(match expr {
        Expr::And(operands) => {
            let mut out = Vec::with_capacity(operands.len());
            for operand in operands {
                match normalise(operand)? {
                    Expr::And(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => return Err(empty()),
                1 => out.pop().expect("one operand"),
                _ => Expr::And(out),
            }
        }
        Expr::Or(operands) => {
            let mut out = Vec::with_capacity(operands.len());
            for operand in operands {
                match normalise(operand)? {
                    Expr::Or(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => return Err(empty()),
                1 => out.pop().expect("one operand"),
                _ => Expr::Or(out),
            }
        }
        Expr::Not(operand) => Expr::Not(Box::new(normalise(*operand)?)),
        Expr::InList { column, values, .. } if values.is_empty() => {
            return Err(FilterError::Unsupported {
                construct: format!("an empty IN list on column `{column}`"),
                hint: "give it at least one value".into(),
            });
        }
        atom => atom,
    })
}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, FilterError> {
        Filter::parse(s)
    }
}

impl TryFrom<String> for Filter {
    type Error = FilterError;
    fn try_from(text: String) -> Result<Self, FilterError> {
        Filter::parse(&text)
    }
}

impl From<Filter> for String {
    fn from(filter: Filter) -> String {
        filter.to_string()
    }
}

/// Canonical text, fully determined by the expression:
///
/// - keywords in upper case (`AND`, `OR`, `NOT`, `IN`, `BETWEEN`, `IS NULL`, `LIKE`, `TRUE`,
///   `DATE '...'`, ...), not-equal as `<>`;
/// - one space around binary operators and keywords, `, ` between `IN` values;
/// - every condition names its column first (`5 < a` reads back as `a > 5`);
/// - an `AND` or `OR` inside another `AND`/`OR` is in parentheses; the operand of `NOT` is
///   always in parentheses: `NOT (a = 1)`;
/// - columns bare when they are plain identifiers (`[A-Za-z_][A-Za-z0-9_]*`) and no SQL
///   keyword, otherwise in double quotes (`"order"`, `"odd name"`);
/// - numbers as in [`FiniteF64`]'s `Display` (no exponent, always a `.` for decimals).
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::And(operands) | Expr::Or(operands) => {
                let joiner = if matches!(self, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        f.write_str(joiner)?;
                    }
                    if matches!(operand, Expr::And(_) | Expr::Or(_)) {
                        write!(f, "({operand})")?;
                    } else {
                        write!(f, "{operand}")?;
                    }
                }
                Ok(())
            }
            Expr::Not(operand) => write!(f, "NOT ({operand})"),
            Expr::Compare { column, op, value } => {
                write!(f, "{} {op} {value}", Column(column))
            }
            Expr::InList {
                column,
                values,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{} {not}IN (", Column(column))?;
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{value}")?;
                }
                f.write_str(")")
            }
            Expr::Between {
                column,
                low,
                high,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{} {not}BETWEEN {low} AND {high}", Column(column))
            }
            Expr::IsNull { column, negated } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{} IS {not}NULL", Column(column))
            }
            Expr::Like {
                column,
                pattern,
                negated,
                case_insensitive,
            } => {
                let not = if *negated { "NOT " } else { "" };
                let like = if *case_insensitive { "ILIKE" } else { "LIKE" };
                write!(f, "{} {not}{like} ", Column(column))?;
                quoted_string(f, pattern)
            }
        }
    }
}

/// A column name as written in canonical text.
struct Column<'a>(&'a str);

impl fmt::Display for Column<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_bare_column(self.0) {
            f.write_str(self.0)
        } else {
            write!(f, "\"{}\"", self.0.replace('"', "\"\""))
        }
    }
}

/// Whether a column name can be written without quotes: an identifier that is no SQL
/// keyword, or a keyword that the SQL parser still reads as a column where canonical text
/// puts one (`region`, `name`, `value` are keywords of the parser, but not reserved).
fn is_bare_column(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return false;
    }
    // Words of the filter language itself are always quoted, for the reader's sake.
    const QUOTED: [&str; 14] = [
        "AND",
        "OR",
        "NOT",
        "TRUE",
        "FALSE",
        "NULL",
        "IS",
        "IN",
        "BETWEEN",
        "LIKE",
        "ILIKE",
        "DATE",
        "TIMESTAMP",
        "ESCAPE",
    ];
    let upper = name.to_ascii_uppercase();
    if QUOTED.contains(&upper.as_str()) {
        return false;
    }
    let is_keyword = sqlparser::keywords::ALL_KEYWORDS
        .binary_search(&upper.as_str())
        .is_ok();
    !is_keyword || parse::keyword_reads_as_column(name)
}
