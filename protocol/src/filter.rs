//! The row-filter language of sharing contracts.
//!
//! A consumer may ask for a subset of a product's rows with `--filter`; the provider applies
//! the filter on its side before anything leaves it. The language is deliberately tiny:
//!
//! ```text
//! filter  := pred (AND pred)*            -- AND in any case
//! pred    := column op literal
//! column  := [A-Za-z_][A-Za-z0-9_]*  |  "any name"     -- "" inside quotes is a quote
//! op      := =  |  !=  |  <  |  <=  |  >  |  >=
//! literal := 'string'                    -- '' inside quotes is a quote
//!          | -?[0-9]+                    -- integer (i64)
//!          | -?[0-9]+.[0-9]+             -- decimal number (finite f64)
//!          | true | false                -- in any case
//! ```
//!
//! [`Filter::parse`] turns text into a [`Filter`]; its [`Display`](fmt::Display) form is the
//! canonical text that contracts carry and that parses back to the same value.
//! [`Filter::check`] type-checks a filter against a product schema.
//!
//! Temporal columns: `Date32`/`Date64` columns may be compared with a string holding an ISO
//! date (`'2024-03-01'`), `Timestamp` columns with an ISO date or date-time
//! (`'2024-03-01T12:00:00'`, optional fraction of a second, optional `Z`). The provider compares
//! them by casting the literal to the column's type (Arrow's `cast` accepts these forms). Numbers
//! are never compared with temporal columns: their unit would be ambiguous.

use std::fmt;
use std::str::FromStr;

use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use crate::descriptor::ColumnSchema;

/// Longest filter text accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Most predicates in one filter.
pub const MAX_PREDICATES: usize = 32;

/// A conjunction of predicates: a row passes when every predicate holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Filter {
    /// The predicates, in the order written; never empty for a parsed filter.
    pub predicates: Vec<Predicate>,
}

/// One comparison `column op literal`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Predicate {
    /// Name of the column compared.
    pub column: String,
    /// The comparison.
    pub op: CompareOp,
    /// The value the column is compared with.
    pub value: Literal,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=`
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
    /// The operator as written in a filter.
    pub fn as_str(&self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::NotEq => "!=",
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

/// A literal value in a predicate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Literal {
    /// `'text'`
    Str(String),
    /// An integer without a decimal point.
    Int(i64),
    /// A number with a decimal point.
    Float(FiniteF64),
    /// `true` or `false`.
    Bool(bool),
}

impl Literal {
    /// What kind of literal this is, for messages: `a string`, `an integer`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Literal::Str(_) => "a string",
            Literal::Int(_) => "an integer",
            Literal::Float(_) => "a decimal number",
            Literal::Bool(_) => "a boolean",
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Why a filter could not be parsed or does not fit a schema. Positions are 1-based character
/// columns in the filter text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Nothing but whitespace.
    #[error("the filter is empty; expected `column op value`, e.g. `region = 'EU'`")]
    Empty,
    /// Longer than [`MAX_FILTER_LEN`].
    #[error("the filter is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Length of the text in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_PREDICATES`] predicates.
    #[error("the filter has more than {max} predicates")]
    TooManyPredicates {
        /// The limit.
        max: usize,
    },
    /// A token other than the one the grammar needs.
    #[error("expected {expected} at column {at}, found {found}")]
    Syntax {
        /// 1-based character column of the offending input.
        at: usize,
        /// What the parser needed, e.g. "an operator (=, !=, <, <=, >, >=) after `region`".
        expected: String,
        /// What it found, e.g. "`~`" or "the end of the filter".
        found: String,
    },
    /// A quoted string or column name without its closing quote.
    #[error("unterminated {what} starting at column {at}: add the closing {quote}")]
    Unterminated {
        /// 1-based character column of the opening quote.
        at: usize,
        /// "string" or "quoted column name".
        what: &'static str,
        /// The missing quote character, in backticks.
        quote: &'static str,
    },
    /// A number that does not fit an `i64` (integers) or a finite `f64` (decimals).
    #[error("the number {text} at column {at} is out of range")]
    NumberOutOfRange {
        /// 1-based character column of the number.
        at: usize,
        /// The number as written.
        text: String,
    },
    /// [`Filter::check`]: the column is not in the schema.
    #[error("unknown column `{column}`; the product has columns: {}", available.join(", "))]
    UnknownColumn {
        /// The column named in the filter.
        column: String,
        /// The schema's columns, in order.
        available: Vec<String>,
    },
    /// [`Filter::check`]: the literal cannot be compared with the column's type.
    #[error("cannot filter column `{column}` of type {data_type}: {reason}")]
    Incompatible {
        /// The column.
        column: String,
        /// Its Arrow type, as in the schema.
        data_type: String,
        /// Why, in words.
        reason: String,
    },
}

impl Filter {
    /// Parses filter text. See the module documentation for the grammar.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong {
                len: text.len(),
                max: MAX_FILTER_LEN,
            });
        }
        Parser { src: text, pos: 0 }.filter()
    }

    /// Names of the columns the filter reads, in order of appearance (repeats included).
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.predicates.iter().map(|p| p.column.as_str())
    }

    /// Checks that every column exists in `columns` and that each literal can be compared
    /// with the column's Arrow type:
    ///
    /// - strings with `Utf8`, `LargeUtf8`, `Utf8View` (and dictionaries of them); with `Date32`
    ///   and `Date64` when they hold an ISO date; with `Timestamp` when they hold an ISO date or
    ///   date-time;
    /// - integers with integer, float and decimal types, when the value fits the type;
    /// - decimal numbers with float and decimal types (no more fraction digits than the scale);
    /// - booleans with `Boolean`, and only with `=` and `!=`.
    pub fn check(&self, columns: &[ColumnSchema]) -> Result<(), FilterError> {
        for predicate in &self.predicates {
            let Some(column) = columns.iter().find(|c| c.name == predicate.column) else {
                return Err(FilterError::UnknownColumn {
                    column: predicate.column.clone(),
                    available: columns.iter().map(|c| c.name.clone()).collect(),
                });
            };
            check_predicate(predicate, column).map_err(|reason| FilterError::Incompatible {
                column: column.name.clone(),
                data_type: column.data_type.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, FilterError> {
        Filter::parse(s)
    }
}

/// Canonical text: `col op literal` joined by ` AND `; parses back to the same filter.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.predicates.iter().enumerate() {
            if i > 0 {
                f.write_str(" AND ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_bare_column(&self.column) {
            f.write_str(&self.column)?;
        } else {
            write!(f, "\"{}\"", self.column.replace('"', "\"\""))?;
        }
        write!(f, " {} {}", self.op, self.value)
    }
}

/// Whether a column name can be written without quotes: an identifier that is not a keyword.
fn is_bare_column(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts_well
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !["and", "true", "false"]
            .iter()
            .any(|k| name.eq_ignore_ascii_case(k))
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parser over the text; `pos` is a byte offset. The grammar has no nesting, so the parser
/// has no recursion: one loop over predicates, bounded by [`MAX_FILTER_LEN`] (checked before
/// the parser starts) and [`MAX_PREDICATES`].
struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn filter(mut self) -> Result<Filter, FilterError> {
        self.skip_ws();
        if self.at_end() {
            return Err(FilterError::Empty);
        }
        let mut predicates = Vec::new();
        loop {
            if predicates.len() == MAX_PREDICATES {
                return Err(FilterError::TooManyPredicates {
                    max: MAX_PREDICATES,
                });
            }
            let after = if predicates.is_empty() {
                "a column name".to_owned()
            } else {
                "a column name after `AND`".to_owned()
            };
            predicates.push(self.predicate(after)?);
            self.skip_ws();
            if self.at_end() {
                return Ok(Filter { predicates });
            }
            let start = self.pos;
            let word = self.word();
            if !word.eq_ignore_ascii_case("and") {
                return Err(self.syntax(start, "`AND` or the end of the filter"));
            }
            self.skip_ws();
        }
    }

    fn predicate(&mut self, expected_column: String) -> Result<Predicate, FilterError> {
        let column = self.column(expected_column)?;
        self.skip_ws();
        let op = self.op(&column)?;
        self.skip_ws();
        let value = self.literal(&column, op)?;
        Ok(Predicate { column, op, value })
    }

    fn column(&mut self, expected: String) -> Result<String, FilterError> {
        let start = self.pos;
        match self.peek() {
            Some('"') => {
                let name = self.quoted('"', "quoted column name", "`\"`")?;
                if name.is_empty() {
                    return Err(FilterError::Syntax {
                        at: self.column_of(start),
                        expected,
                        found: "an empty name `\"\"`".into(),
                    });
                }
                Ok(name)
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => Ok(self.word().to_owned()),
            _ => Err(self.syntax(start, &expected)),
        }
    }

    fn op(&mut self, column: &str) -> Result<CompareOp, FilterError> {
        let rest = &self.src[self.pos..];
        // Longest match first.
        let (op, len) = if rest.starts_with("!=") {
            (CompareOp::NotEq, 2)
        } else if rest.starts_with("<=") {
            (CompareOp::LtEq, 2)
        } else if rest.starts_with(">=") {
            (CompareOp::GtEq, 2)
        } else if rest.starts_with('=') {
            (CompareOp::Eq, 1)
        } else if rest.starts_with('<') {
            (CompareOp::Lt, 1)
        } else if rest.starts_with('>') {
            (CompareOp::Gt, 1)
        } else {
            return Err(self.syntax(
                self.pos,
                &format!("an operator (=, !=, <, <=, >, >=) after `{column}`"),
            ));
        };
        self.pos += len;
        Ok(op)
    }

    fn literal(&mut self, column: &str, op: CompareOp) -> Result<Literal, FilterError> {
        let start = self.pos;
        let expected =
            || format!("a value ('quoted string', number, true or false) after `{column} {op}`");
        match self.peek() {
            Some('\'') => Ok(Literal::Str(self.quoted('\'', "string", "`'`")?)),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let word = self.word().to_owned();
                if word.eq_ignore_ascii_case("true") {
                    Ok(Literal::Bool(true))
                } else if word.eq_ignore_ascii_case("false") {
                    Ok(Literal::Bool(false))
                } else {
                    Err(FilterError::Syntax {
                        at: self.column_of(start),
                        expected: format!("{} (strings need single quotes)", expected()),
                        found: format!("`{word}`"),
                    })
                }
            }
            _ => Err(self.syntax(start, &expected())),
        }
    }

    fn number(&mut self) -> Result<Literal, FilterError> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        if !self.digits() {
            return Err(self.syntax(self.pos, "a digit after `-`"));
        }
        let mut is_float = false;
        if self.peek() == Some('.') {
            self.pos += 1;
            if !self.digits() {
                return Err(self.syntax(self.pos, "a digit after the decimal point"));
            }
            is_float = true;
        }
        if let Some(c) = self.peek()
            && (is_word_char(c) || c == '.')
        {
            return Err(self.syntax(
                self.pos,
                "a space, `AND` or the end of the filter after a number",
            ));
        }
        let text = &self.src[start..self.pos];
        let out_of_range = || FilterError::NumberOutOfRange {
            at: self.column_of(start),
            text: text.to_owned(),
        };
        if is_float {
            let value: f64 = text.parse().map_err(|_| out_of_range())?;
            FiniteF64::new(value)
                .map(Literal::Float)
                .ok_or_else(out_of_range)
        } else {
            text.parse().map(Literal::Int).map_err(|_| out_of_range())
        }
    }

    /// Consumes `[0-9]*`; true if at least one digit.
    fn digits(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Reads a quoted token whose quote is escaped by doubling it. `pos` is at the opening quote.
    fn quoted(
        &mut self,
        quote: char,
        what: &'static str,
        quote_name: &'static str,
    ) -> Result<String, FilterError> {
        let start = self.pos;
        self.pos += quote.len_utf8();
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(FilterError::Unterminated {
                    at: self.column_of(start),
                    what,
                    quote: quote_name,
                });
            };
            self.pos += c.len_utf8();
            if c == quote {
                if self.peek() == Some(quote) {
                    self.pos += quote.len_utf8();
                    out.push(quote);
                } else {
                    return Ok(out);
                }
            } else {
                out.push(c);
            }
        }
    }

    /// Consumes `[A-Za-z0-9_]*`.
    fn word(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn column_of(&self, byte: usize) -> usize {
        self.src[..byte].chars().count() + 1
    }

    /// A syntax error at byte `at`, describing what is there.
    fn syntax(&self, at: usize, expected: &str) -> FilterError {
        let rest = &self.src[at..];
        let found = match rest.chars().next() {
            None => "the end of the filter".to_owned(),
            Some(c) if is_word_char(c) => {
                let word: String = rest.chars().take_while(|&c| is_word_char(c)).collect();
                format!("`{word}`")
            }
            Some(c) => format!("`{c}`"),
        };
        FilterError::Syntax {
            at: self.column_of(at),
            expected: expected.to_owned(),
            found,
        }
    }
}

/// What a column type can be compared with.
enum ColumnKind {
    Text,
    Integer { min: i128, max: i128 },
    Float,
    Decimal { precision: u8, scale: i8 },
    Boolean,
    Date,
    Timestamp,
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

/// Checks one predicate against its column; the error is the reason in words.
fn check_predicate(p: &Predicate, column: &ColumnSchema) -> Result<(), String> {
    let data_type = crate::bounds::parse_data_type(&column.data_type).map_err(|e| match e {
        crate::bounds::TypeError::Bounds(bound) => format!("the schema's type is refused: {bound}"),
        crate::bounds::TypeError::Unknown { .. } | crate::bounds::TypeError::NoRoundTrip { .. } => {
            "the schema's type is not a known Arrow type".to_owned()
        }
    })?;
    let mismatch = || {
        format!(
            "it cannot be compared with {} ({})",
            p.value.kind(),
            p.value
        )
    };
    match (column_kind(&data_type), &p.value) {
        (ColumnKind::Unsupported, _) => Err("filters support text, numeric, boolean, date and \
                                             timestamp columns only"
            .to_owned()),
        (ColumnKind::Text, Literal::Str(_)) => Ok(()),
        (ColumnKind::Date, Literal::Str(s)) => {
            if parse_iso_date(s).is_some() {
                Ok(())
            } else {
                Err(format!("{} is not an ISO date like '2024-03-01'", p.value))
            }
        }
        (ColumnKind::Timestamp, Literal::Str(s)) => {
            if is_iso_timestamp(s) {
                Ok(())
            } else {
                Err(format!(
                    "{} is not an ISO date or date-time like '2024-03-01T12:00:00'",
                    p.value
                ))
            }
        }
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
            if p.op.is_ordering() {
                Err(format!(
                    "booleans have no order; use = or != instead of {}",
                    p.op
                ))
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

/// `YYYY-MM-DD`, optionally followed by `T` or a space, `HH:MM:SS`, an optional fraction of
/// 1-9 digits and an optional `Z`.
fn is_iso_timestamp(s: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn col(name: &str, data_type: &str) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            data_type: data_type.into(),
            nullable: true,
        }
    }

    fn schema() -> Vec<ColumnSchema> {
        vec![
            col("region", "Utf8"),
            col("amount", "Int64"),
            col("small", "Int8"),
            col("unsigned", "UInt32"),
            col("price", "Float64"),
            col("cost", "Decimal128(10, 2)"),
            col("active", "Boolean"),
            col("day", "Date32"),
            col("at", "Timestamp(Microsecond, None)"),
            col("tags", "List(Utf8)"),
            col("dict", "Dictionary(Int32, Utf8)"),
            col("odd name", "Utf8"),
        ]
    }

    fn pred(column: &str, op: CompareOp, value: Literal) -> Predicate {
        Predicate {
            column: column.into(),
            op,
            value,
        }
    }

    fn float(x: f64) -> Literal {
        Literal::Float(FiniteF64::new(x).unwrap())
    }

    #[test]
    fn parses_every_literal_and_operator() {
        let f = Filter::parse(
            "region = 'EU' and amount != -42 AND price<2.5 AnD active <= true \
             And \"odd name\" > 'it''s' AND x >= FALSE",
        )
        .unwrap();
        assert_eq!(
            f.predicates,
            vec![
                pred("region", CompareOp::Eq, Literal::Str("EU".into())),
                pred("amount", CompareOp::NotEq, Literal::Int(-42)),
                pred("price", CompareOp::Lt, float(2.5)),
                pred("active", CompareOp::LtEq, Literal::Bool(true)),
                pred("odd name", CompareOp::Gt, Literal::Str("it's".into())),
                pred("x", CompareOp::GtEq, Literal::Bool(false)),
            ]
        );
        assert_eq!(
            f.to_string(),
            "region = 'EU' AND amount != -42 AND price < 2.5 AND active <= true \
             AND \"odd name\" > 'it''s' AND x >= false"
        );
        assert_eq!(
            f.columns().collect::<Vec<_>>(),
            ["region", "amount", "price", "active", "odd name", "x"]
        );
    }

    #[test]
    fn numbers_keep_their_kind() {
        let f =
            Filter::parse("a = 1.0 AND b = 1 AND c = -0.0 AND d = 9223372036854775807").unwrap();
        assert_eq!(f.predicates[0].value, float(1.0));
        assert_eq!(f.predicates[1].value, Literal::Int(1));
        assert_eq!(f.predicates[2].value, float(-0.0));
        assert_eq!(f.predicates[3].value, Literal::Int(i64::MAX));
        assert_eq!(
            f.to_string(),
            "a = 1.0 AND b = 1 AND c = -0.0 AND d = 9223372036854775807"
        );
        assert_eq!(
            Filter::parse("a = -9223372036854775808")
                .unwrap()
                .predicates[0]
                .value,
            Literal::Int(i64::MIN)
        );
    }

    #[test]
    fn keywords_and_odd_names_are_quoted_in_canonical_text() {
        let f = Filter {
            predicates: vec![
                pred("and", CompareOp::Eq, Literal::Int(1)),
                pred("True", CompareOp::Eq, Literal::Int(1)),
                pred("9lives", CompareOp::Eq, Literal::Int(1)),
                pred("say \"hi\"", CompareOp::Eq, Literal::Int(1)),
            ],
        };
        assert_eq!(
            f.to_string(),
            "\"and\" = 1 AND \"True\" = 1 AND \"9lives\" = 1 AND \"say \"\"hi\"\"\" = 1"
        );
        assert_eq!(Filter::parse(&f.to_string()).unwrap(), f);
    }

    #[test]
    fn syntax_errors_name_position_and_expectation() {
        let err = Filter::parse("region ~ 'EU'").unwrap_err();
        assert_eq!(
            err,
            FilterError::Syntax {
                at: 8,
                expected: "an operator (=, !=, <, <=, >, >=) after `region`".into(),
                found: "`~`".into(),
            }
        );
        assert_eq!(
            err.to_string(),
            "expected an operator (=, !=, <, <=, >, >=) after `region` at column 8, found `~`"
        );

        assert_eq!(
            Filter::parse("region = EU").unwrap_err().to_string(),
            "expected a value ('quoted string', number, true or false) after `region =` \
             (strings need single quotes) at column 10, found `EU`"
        );
        assert_eq!(
            Filter::parse("a = 1 OR b = 2").unwrap_err(),
            FilterError::Syntax {
                at: 7,
                expected: "`AND` or the end of the filter".into(),
                found: "`OR`".into()
            }
        );
        assert_eq!(
            Filter::parse("a = 1 AND").unwrap_err(),
            FilterError::Syntax {
                at: 10,
                expected: "a column name after `AND`".into(),
                found: "the end of the filter".into()
            }
        );
        assert_eq!(
            Filter::parse("= 1").unwrap_err(),
            FilterError::Syntax {
                at: 1,
                expected: "a column name".into(),
                found: "`=`".into()
            }
        );
        assert_eq!(
            Filter::parse("a = 1.").unwrap_err(),
            FilterError::Syntax {
                at: 7,
                expected: "a digit after the decimal point".into(),
                found: "the end of the filter".into()
            }
        );
        assert_eq!(
            Filter::parse("a = 12abc").unwrap_err(),
            FilterError::Syntax {
                at: 7,
                expected: "a space, `AND` or the end of the filter after a number".into(),
                found: "`abc`".into()
            }
        );
        assert_eq!(
            Filter::parse("a = -x").unwrap_err(),
            FilterError::Syntax {
                at: 6,
                expected: "a digit after `-`".into(),
                found: "`x`".into()
            }
        );
        assert_eq!(
            Filter::parse("\"\" = 1").unwrap_err(),
            FilterError::Syntax {
                at: 1,
                expected: "a column name".into(),
                found: "an empty name `\"\"`".into()
            }
        );
        // Columns count characters, not bytes.
        assert!(matches!(
            Filter::parse("\"é\" ? 1").unwrap_err(),
            FilterError::Syntax { at: 5, .. }
        ));
    }

    #[test]
    fn other_parse_errors() {
        assert_eq!(Filter::parse("  \n ").unwrap_err(), FilterError::Empty);
        assert_eq!(
            Filter::parse("region = 'EU").unwrap_err(),
            FilterError::Unterminated {
                at: 10,
                what: "string",
                quote: "`'`"
            }
        );
        assert_eq!(
            Filter::parse("\"region = 1").unwrap_err().to_string(),
            "unterminated quoted column name starting at column 1: add the closing `\"`"
        );
        assert_eq!(
            Filter::parse("a = 99999999999999999999").unwrap_err(),
            FilterError::NumberOutOfRange {
                at: 5,
                text: "99999999999999999999".into()
            }
        );
        let huge = format!("a = 1{}.0", "0".repeat(400));
        assert!(matches!(
            Filter::parse(&huge).unwrap_err(),
            FilterError::NumberOutOfRange { at: 5, .. }
        ));
        let long = "a = 1 AND ".repeat(500) + "a = 1";
        assert_eq!(
            Filter::parse(&long).unwrap_err(),
            FilterError::TooLong {
                len: long.len(),
                max: MAX_FILTER_LEN
            }
        );
        let many = vec!["a = 1"; MAX_PREDICATES + 1].join(" AND ");
        assert_eq!(
            Filter::parse(&many).unwrap_err(),
            FilterError::TooManyPredicates {
                max: MAX_PREDICATES
            }
        );
        assert!(Filter::parse(&vec!["a = 1"; MAX_PREDICATES].join(" AND ")).is_ok());
    }

    #[test]
    fn check_accepts_compatible_literals() {
        let ok = "region = 'EU' AND amount > -5 AND amount < 10 AND small <= 127 \
                  AND unsigned >= 0 AND price > 1 AND price < 2.5 AND cost >= 99999999 \
                  AND cost < 12.25 AND active = true AND active != false \
                  AND day >= '2024-02-29' AND at < '2024-03-01T12:30:00.123Z' \
                  AND at > '2024-03-01' AND dict = 'x' AND \"odd name\" != ''";
        Filter::parse(ok).unwrap().check(&schema()).unwrap();
    }

    #[test]
    fn check_names_unknown_columns() {
        let err = Filter::parse("country = 'EU'")
            .unwrap()
            .check(&schema()[..3])
            .unwrap_err();
        assert_eq!(
            err,
            FilterError::UnknownColumn {
                column: "country".into(),
                available: vec!["region".into(), "amount".into(), "small".into()],
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown column `country`; the product has columns: region, amount, small"
        );
    }

    fn check_reason(text: &str) -> String {
        match Filter::parse(text).unwrap().check(&schema()) {
            Err(FilterError::Incompatible { reason, .. }) => reason,
            other => panic!("expected Incompatible for {text}, got {other:?}"),
        }
    }

    #[test]
    fn check_refuses_incompatible_literals() {
        let err = Filter::parse("amount = 'ten'")
            .unwrap()
            .check(&schema())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot filter column `amount` of type Int64: \
             it cannot be compared with a string ('ten')"
        );
        assert_eq!(
            check_reason("region = 1"),
            "it cannot be compared with an integer (1)"
        );
        assert_eq!(
            check_reason("amount > 2.5"),
            "it cannot be compared with a decimal number (2.5)"
        );
        assert_eq!(
            check_reason("small = 128"),
            "128 is outside the range -128..=127 of the type"
        );
        assert_eq!(
            check_reason("unsigned > -1"),
            "-1 is outside the range 0..=4294967295 of the type"
        );
        assert_eq!(
            check_reason("cost = 100000000"),
            "100000000 has more than the 8 integer digits the type allows"
        );
        assert_eq!(
            check_reason("cost = 1.125"),
            "1.125 has more fraction digits than the scale 2 of the type"
        );
        assert_eq!(
            check_reason("price = true"),
            "it cannot be compared with a boolean (true)"
        );
        assert_eq!(
            check_reason("active < true"),
            "booleans have no order; use = or != instead of <"
        );
        assert_eq!(
            check_reason("active = 1"),
            "it cannot be compared with an integer (1)"
        );
        assert_eq!(
            check_reason("day = '2023-02-29'"),
            "'2023-02-29' is not an ISO date like '2024-03-01'"
        );
        assert_eq!(
            check_reason("day = 19000"),
            "it cannot be compared with an integer (19000)"
        );
        assert_eq!(
            check_reason("at = '2024-03-01 25:00:00'"),
            "'2024-03-01 25:00:00' is not an ISO date or date-time like '2024-03-01T12:00:00'"
        );
        assert_eq!(
            check_reason("tags = 'x'"),
            "filters support text, numeric, boolean, date and timestamp columns only"
        );
        let bad_type = [col("x", "NotAType")];
        assert_eq!(
            Filter::parse("x = 1")
                .unwrap()
                .check(&bad_type)
                .unwrap_err(),
            FilterError::Incompatible {
                column: "x".into(),
                data_type: "NotAType".into(),
                reason: "the schema's type is not a known Arrow type".into()
            }
        );
    }

    #[test]
    fn check_refuses_deep_types_before_parsing_them() {
        let deep = format!("{}Int32{}", "List(".repeat(3000), ")".repeat(3000));
        let columns = vec![col("x", &deep)];
        // On a small stack: an unbounded parse of the type would overflow it.
        let err = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || Filter::parse("x = 1").unwrap().check(&columns))
            .unwrap()
            .join()
            .unwrap()
            .unwrap_err();
        match err {
            FilterError::Incompatible { column, reason, .. } => {
                assert_eq!(column, "x");
                assert_eq!(
                    reason,
                    "the schema's type is refused: the Arrow type is nested 3000 levels deep; \
                     the limit is 32"
                );
            }
            other => panic!("expected Incompatible, got {other:?}"),
        }
    }

    #[test]
    fn iso_dates() {
        assert_eq!(parse_iso_date("1970-01-01"), Some(0));
        assert_eq!(parse_iso_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_iso_date("1969-12-31"), Some(-1));
        assert_eq!(parse_iso_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_iso_date("2100-02-29"), None);
        assert_eq!(parse_iso_date("2024-13-01"), None);
        assert_eq!(parse_iso_date("2024-1-01"), None);
        assert_eq!(parse_iso_date("2024-01-+1"), None);
        assert!(is_iso_timestamp("2024-01-01T00:00:00"));
        assert!(is_iso_timestamp("2024-01-01 23:59:59.123456789Z"));
        assert!(!is_iso_timestamp("2024-01-01T00:00"));
        assert!(!is_iso_timestamp("2024-01-01T00:00:00.1234567890"));
        assert!(!is_iso_timestamp("2024-01-01T00:60:00"));
        assert!(!is_iso_timestamp("2024-01-01X"));
        assert!(!is_iso_timestamp("2024-01-0é"));
    }

    #[test]
    fn serde_is_deterministic_and_refuses_non_finite_floats() {
        let f = Filter::parse("a = 1.5 AND b = 'x'").unwrap();
        let bytes = crate::codec::encode(&f);
        assert_eq!(crate::codec::decode::<Filter>(&bytes, 1024).unwrap(), f);
        assert_eq!(crate::codec::encode(&f.clone()), bytes);
        let nan = crate::codec::encode(&f64::NAN);
        assert!(crate::codec::decode::<FiniteF64>(&nan, 64).is_err());
        assert_eq!(FiniteF64::new(f64::INFINITY), None);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Filter>(&json).unwrap(), f);
    }

    fn arb_column() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z_][A-Za-z0-9_]{0,8}",
            "[^\\x00]{1,8}",
            Just("and".to_owned()),
            Just("a\"b".to_owned()),
        ]
    }

    fn arb_literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            ".{0,12}".prop_map(Literal::Str),
            any::<i64>().prop_map(Literal::Int),
            any::<f64>()
                .prop_filter_map("finite", FiniteF64::new)
                .prop_map(Literal::Float),
            any::<bool>().prop_map(Literal::Bool),
        ]
    }

    fn arb_op() -> impl Strategy<Value = CompareOp> {
        prop_oneof![
            Just(CompareOp::Eq),
            Just(CompareOp::NotEq),
            Just(CompareOp::Lt),
            Just(CompareOp::LtEq),
            Just(CompareOp::Gt),
            Just(CompareOp::GtEq),
        ]
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        prop::collection::vec(
            (arb_column(), arb_op(), arb_literal()).prop_map(|(column, op, value)| Predicate {
                column,
                op,
                value,
            }),
            1..6,
        )
        .prop_map(|predicates| Filter { predicates })
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(filter in arb_filter()) {
            let text = filter.to_string();
            prop_assert_eq!(Filter::parse(&text).unwrap(), filter);
        }

        #[test]
        fn parse_never_panics_and_canonical_text_is_stable(text in ".{0,64}") {
            if let Ok(filter) = Filter::parse(&text) {
                let canonical = filter.to_string();
                let again = Filter::parse(&canonical).unwrap();
                prop_assert_eq!(&again, &filter);
                prop_assert_eq!(again.to_string(), canonical);
            }
        }

        #[test]
        fn parse_of_filter_like_text_never_panics(
            text in "([a-z\"' ]{0,3}(=|!=|<|<=|>|>=| AND |-|[0-9]|\\.|'|true){0,3}){0,6}"
        ) {
            let _ = Filter::parse(&text);
        }
    }
}
