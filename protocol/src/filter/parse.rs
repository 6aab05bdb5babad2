//! Reading filter text with `sqlparser` and turning its syntax tree into an [`Expr`].
//!
//! The text is already bounded by [`MAX_FILTER_LEN`](super::MAX_FILTER_LEN). The parser runs
//! with a recursion limit ([`PARSER_RECURSION_LIMIT`]), so nesting (parentheses, `NOT`, unary
//! minus) cannot grow its stack; chains of `AND`/`OR` are parsed by a loop in `sqlparser` and
//! flattened here by a loop, and every other level of the conversion counts against
//! [`MAX_DEPTH`]. Nodes are counted as they are converted and refused past [`MAX_NODES`].

use sqlparser::ast::{
    BinaryOperator, DataType, Expr as SqlExpr, TimezoneInfo, UnaryOperator, Value,
};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

use super::check::{is_iso_timestamp, parse_iso_date};
use super::{
    CompareOp, ExactNumber, Expr, FilterError, FiniteF64, Literal, MAX_DEPTH, MAX_IN_LIST,
    MAX_NODES, MAX_NUMBER_DIGITS,
};
use crate::sqlbudget::{self, BudgetedDialect};

/// Recursion limit given to `sqlparser`: each parenthesis or `NOT` costs it a few levels, so
/// this allows about [`MAX_DEPTH`] levels of nesting.
const PARSER_RECURSION_LIMIT: usize = 2 * MAX_DEPTH + 8;

/// Most expression prefixes (a literal, a name, a parenthesis, `NOT`, ...) the parser may
/// try for one text. Every alternative sqlparser tries starts with one, so this bounds its
/// backtracking: a filter of [`MAX_NODES`] nodes and [`MAX_DEPTH`] levels needs a few per
/// node, while `NOT (` nested 30 deep around an error made it try 2^30. Counted by
/// [`BudgetedDialect`].
pub(super) const MAX_PREFIXES_TRIED: usize = 8192;

/// Parses `text` (already length-checked) into an expression (not yet normalised).
pub(super) fn parse(text: &str) -> Result<Expr, FilterError> {
    // The generic dialect's names, none of its optional syntax: the language as it has
    // always been parsed.
    let dialect = BudgetedDialect::plain(MAX_PREFIXES_TRIED);
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| syntax(e.into()))?;
    if let Some(refused) = tokens.iter().find(|t| !in_filter_alphabet(&t.token)) {
        return Err(unsupported(describe_token(&refused.token), CONDITION_HINT));
    }
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .with_tokens_with_locations(tokens);
    let sql = parser.parse_expr().map_err(|e| {
        if dialect.exhausted() {
            FilterError::TooComplex {
                max: MAX_PREFIXES_TRIED,
            }
        } else {
            syntax(e)
        }
    })?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(FilterError::Syntax(ParserError::ParserError(format!(
            "unexpected `{}` after the end of the condition{}",
            next.token, next.span.start
        ))));
    }
    Converter { nodes: 0 }.expr(&sql, 1)
}

/// Whether `token` can be part of a filter: words (names, keywords, quoted names), numbers,
/// single-quoted strings, commas, parentheses, comparisons, and the operators whose refusal
/// the conversion explains. sqlparser's expression parser backtracks, and other tokens lead
/// it into constructs where it does so exponentially: a 370-byte text of subscripts (`[`)
/// and field accesses (`.`) took it over four minutes (found by the `filter` fuzz target).
/// The tokenizer is linear, so such a text is refused before the parser sees it.
fn in_filter_alphabet(token: &Token) -> bool {
    sqlbudget::is_common_operator(token)
        || matches!(
            token,
            Token::EOF
                | Token::Word(_)
                | Token::Number(..)
                | Token::SingleQuotedString(_)
                | Token::Whitespace(_)
                | Token::Comma
                | Token::LParen
                | Token::RParen
                | Token::Period
        )
}

/// A token outside the filter's alphabet, as a refusal names it.
fn describe_token(token: &Token) -> String {
    match token {
        Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => format!("the literal {token}"),
        Token::Placeholder(_) => format!("the placeholder `{token}`"),
        Token::LParen
        | Token::RParen
        | Token::LBracket
        | Token::RBracket
        | Token::LBrace
        | Token::RBrace
        | Token::Colon
        | Token::SemiColon
        | Token::Backslash
        | Token::Char(_) => format!("`{token}`"),
        _ => format!("the operator `{token}`"),
    }
}

fn syntax(e: ParserError) -> FilterError {
    match e {
        ParserError::RecursionLimitExceeded => FilterError::TooDeep { max: MAX_DEPTH },
        other => FilterError::Syntax(other),
    }
}

fn unsupported(construct: impl Into<String>, hint: &str) -> FilterError {
    FilterError::Unsupported {
        construct: construct.into(),
        hint: hint.to_owned(),
    }
}

const CONDITION_HINT: &str = "a filter combines conditions such as `column = 'value'`, \
                              `column IN (1, 2)`, `column BETWEEN 1 AND 9`, \
                              `column IS NULL` or `column LIKE 'a%'` with AND, OR and NOT";
const VALUE_HINT: &str = "compare a column with a literal value: 'text', 42, 4.2, TRUE, \
                          DATE '2024-03-01' or TIMESTAMP '2024-03-01 12:00:00'";

/// Conversion state.
struct Converter {
    /// Nodes converted so far, refused past [`MAX_NODES`].
    nodes: usize,
}

impl Converter {
    fn count(&mut self, n: usize) -> Result<(), FilterError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            Err(FilterError::TooManyNodes { max: MAX_NODES })
        } else {
            Ok(())
        }
    }

    /// Converts a boolean expression at nesting level `depth`.
    fn expr(&mut self, sql: &SqlExpr, depth: usize) -> Result<Expr, FilterError> {
        if depth > MAX_DEPTH {
            return Err(FilterError::TooDeep { max: MAX_DEPTH });
        }
        self.count(1)?;
        match sql {
            SqlExpr::Nested(inner) => {
                // Parentheses add no node; undo the count of this level.
                self.nodes -= 1;
                self.expr(inner, depth + 1)
            }
            SqlExpr::BinaryOp {
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                ..
            } => {
                // Flatten the chain with a loop: `a AND b AND c` is a left-deep tree.
                let mut operands = Vec::new();
                let mut stack = vec![sql];
                while let Some(item) = stack.pop() {
                    match item {
                        SqlExpr::BinaryOp { left, op: o, right } if o == op => {
                            stack.push(right);
                            stack.push(left);
                        }
                        other => operands.push(self.expr(other, depth + 1)?),
                    }
                }
                Ok(if *op == BinaryOperator::And {
                    Expr::And(operands)
                } else {
                    Expr::Or(operands)
                })
            }
            SqlExpr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Expr::Not(Box::new(self.expr(expr, depth + 1)?))),
            SqlExpr::BinaryOp { left, op, right } => {
                let Some(op) = compare_op(op) else {
                    return Err(unsupported(format!("the operator `{op}`"), CONDITION_HINT));
                };
                match (column(left)?, column(right)?) {
                    (Some(a), Some(b)) => Err(unsupported(
                        format!("comparing column `{a}` with column `{b}`"),
                        VALUE_HINT,
                    )),
                    (Some(column), None) => Ok(Expr::Compare {
                        column,
                        op,
                        value: literal(right)?,
                    }),
                    (None, Some(column)) => Ok(Expr::Compare {
                        column,
                        op: op.flipped(),
                        value: literal(left)?,
                    }),
                    (None, None) => {
                        // Name what is there instead of a column, if it is no value either.
                        literal(left)?;
                        literal(right)?;
                        Err(unsupported(
                            "a comparison without a column",
                            "name a column on one side, e.g. `amount > 10`",
                        ))
                    }
                }
            }
            SqlExpr::InList {
                expr,
                list,
                negated,
            } => {
                let column = required_column(expr, "IN")?;
                if list.len() > MAX_IN_LIST {
                    return Err(FilterError::InListTooLong {
                        column,
                        len: list.len(),
                        max: MAX_IN_LIST,
                    });
                }
                self.count(list.len())?;
                let values = list.iter().map(literal).collect::<Result<_, _>>()?;
                Ok(Expr::InList {
                    column,
                    values,
                    negated: *negated,
                })
            }
            SqlExpr::Between {
                expr,
                negated,
                low,
                high,
            } => Ok(Expr::Between {
                column: required_column(expr, "BETWEEN")?,
                low: literal(low)?,
                high: literal(high)?,
                negated: *negated,
            }),
            SqlExpr::IsNull(expr) => Ok(Expr::IsNull {
                column: required_column(expr, "IS NULL")?,
                negated: false,
            }),
            SqlExpr::IsNotNull(expr) => Ok(Expr::IsNull {
                column: required_column(expr, "IS NOT NULL")?,
                negated: true,
            }),
            SqlExpr::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            }
            | SqlExpr::ILike {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                let word = if matches!(sql, SqlExpr::Like { .. }) {
                    "LIKE"
                } else {
                    "ILIKE"
                };
                if *any {
                    return Err(unsupported(
                        format!("{word} ANY"),
                        "use one pattern per condition, joined with OR",
                    ));
                }
                if escape_char.is_some() {
                    return Err(unsupported(
                        format!("{word} ... ESCAPE"),
                        "a backslash is always the escape character in patterns",
                    ));
                }
                let column = required_column(expr, word)?;
                let Literal::Str(pattern) = literal(pattern)? else {
                    return Err(unsupported(
                        format!("a {word} pattern that is not a string"),
                        "write the pattern in single quotes, e.g. 'EU%'",
                    ));
                };
                Ok(Expr::Like {
                    column,
                    pattern,
                    negated: *negated,
                    case_insensitive: word == "ILIKE",
                })
            }
            SqlExpr::Identifier(ident) => Err(unsupported(
                format!("the bare column `{}` as a condition", ident.value),
                "compare it with a value, e.g. `flag = TRUE`",
            )),
            other => Err(unsupported(describe(other), CONDITION_HINT)),
        }
    }
}

fn compare_op(op: &BinaryOperator) -> Option<CompareOp> {
    Some(match op {
        BinaryOperator::Eq => CompareOp::Eq,
        BinaryOperator::NotEq => CompareOp::NotEq,
        BinaryOperator::Lt => CompareOp::Lt,
        BinaryOperator::LtEq => CompareOp::LtEq,
        BinaryOperator::Gt => CompareOp::Gt,
        BinaryOperator::GtEq => CompareOp::GtEq,
        _ => return None,
    })
}

/// The column named by `sql`, `None` when it is not a column reference (parentheses allowed).
fn column(sql: &SqlExpr) -> Result<Option<String>, FilterError> {
    match sql {
        SqlExpr::Identifier(ident) if ident.value.is_empty() => Err(unsupported(
            "an empty column name `\"\"`",
            "write the column's name between the double quotes",
        )),
        SqlExpr::Identifier(ident) => Ok(Some(ident.value.clone())),
        SqlExpr::CompoundIdentifier(parts) => Err(unsupported(
            format!(
                "the qualified name `{}`",
                parts
                    .iter()
                    .map(|p| p.value.as_str())
                    .collect::<Vec<_>>()
                    .join(".")
            ),
            "name the column alone, or in double quotes if its name has a dot",
        )),
        SqlExpr::Nested(inner) => column(inner),
        _ => Ok(None),
    }
}

/// The column on the left of `IN`, `BETWEEN`, `IS NULL` or `LIKE`.
fn required_column(sql: &SqlExpr, operator: &str) -> Result<String, FilterError> {
    column(sql)?.ok_or_else(|| {
        unsupported(
            format!("{} before {operator}", describe(sql)),
            &format!("put a column name before {operator}"),
        )
    })
}

/// A literal value: number (with an optional sign), string, boolean, `DATE '...'`,
/// `TIMESTAMP '...'`. Parentheses around it are allowed.
fn literal(sql: &SqlExpr) -> Result<Literal, FilterError> {
    match sql {
        SqlExpr::Nested(inner) => literal(inner),
        SqlExpr::Value(v) => match &v.value {
            Value::Number(text, long) => {
                if *long {
                    return Err(FilterError::BadNumber {
                        text: format!("{text}L"),
                        reason: "written with a suffix; write the digits alone",
                    });
                }
                number(text, false)
            }
            Value::SingleQuotedString(s) => Ok(Literal::Str(s.clone())),
            Value::Boolean(b) => Ok(Literal::Bool(*b)),
            Value::Null => Err(unsupported(
                "NULL as a value",
                "a comparison with NULL is never true: use `column IS NULL` or \
                 `column IS NOT NULL`",
            )),
            other => Err(unsupported(
                format!("the literal {other}"),
                "write strings in single quotes, without prefixes",
            )),
        },
        SqlExpr::UnaryOp {
            op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr,
        } => match expr.as_ref() {
            SqlExpr::Value(v) => match &v.value {
                Value::Number(text, false) => number(text, *op == UnaryOperator::Minus),
                _ => Err(unsupported(
                    format!("the sign `{op}` before a non-number"),
                    VALUE_HINT,
                )),
            },
            _ => Err(unsupported(
                format!("the sign `{op}` before an expression"),
                VALUE_HINT,
            )),
        },
        SqlExpr::TypedString(typed) => {
            let Value::SingleQuotedString(text) = &typed.value.value else {
                return Err(unsupported(
                    format!("the literal {}", typed.value.value),
                    "write DATE '2024-03-01' or TIMESTAMP '2024-03-01 12:00:00'",
                ));
            };
            match &typed.data_type {
                DataType::Date if !typed.uses_odbc_syntax => {
                    if parse_iso_date(text).is_some() {
                        Ok(Literal::Date(text.clone()))
                    } else {
                        Err(FilterError::BadTemporal {
                            text: format!("DATE '{text}'"),
                            what: "date",
                            example: "DATE '2024-03-01'",
                        })
                    }
                }
                DataType::Timestamp(None, TimezoneInfo::None) if !typed.uses_odbc_syntax => {
                    if is_iso_timestamp(text) {
                        Ok(Literal::Timestamp(text.clone()))
                    } else {
                        Err(FilterError::BadTemporal {
                            text: format!("TIMESTAMP '{text}'"),
                            what: "timestamp",
                            example: "TIMESTAMP '2024-03-01 12:00:00'",
                        })
                    }
                }
                other => Err(unsupported(
                    format!("a literal of type {other}"),
                    "typed literals are DATE '...' and TIMESTAMP '...' only",
                )),
            }
        }
        SqlExpr::Identifier(ident) => Err(unsupported(
            format!("the column `{}` where a value is expected", ident.value),
            VALUE_HINT,
        )),
        other => Err(unsupported(describe(other), VALUE_HINT)),
    }
}

/// A number as the tokenizer gave it: digits with an optional fraction, `negative` when a
/// `-` came before it. Exponents, hex and digit separators are refused so that the canonical
/// text is never much longer than the input.
///
/// An integer within `i64` is [`Literal::Int`]; a number with a point is [`Literal::Float`]
/// when the shortest digits of the nearest `f64` are the digits written (trailing zeros aside),
/// so that the float's canonical text says the same value; anything else is kept as its
/// digits, [`Literal::Exact`], and refused past [`MAX_NUMBER_DIGITS`] digits before or after
/// the point.
pub(super) fn number(text: &str, negative: bool) -> Result<Literal, FilterError> {
    let signed = if negative {
        format!("-{text}")
    } else {
        text.to_owned()
    };
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(FilterError::BadNumber {
            text: signed,
            reason: "not plain digits with an optional fraction (like 42 or -4.25)",
        });
    }
    let int = whole.trim_start_matches('0');
    let frac = fraction.map(|f| f.trim_end_matches('0'));
    if int.len() > MAX_NUMBER_DIGITS || frac.is_some_and(|f| f.len() > MAX_NUMBER_DIGITS) {
        // Unless an f64 holds it exactly: such digits have always been read as a float.
        if let Some(x) = frac.and_then(|frac| float_with_digits(&signed, negative, int, frac)) {
            return Ok(Literal::Float(x));
        }
        return Err(FilterError::BadNumber {
            text: signed,
            reason: NUMBER_TOO_LONG,
        });
    }
    let sign = if negative { "-" } else { "" };
    let text = match frac {
        None => match signed.parse::<i64>() {
            Ok(value) => return Ok(Literal::Int(value)),
            // Digits only, so the only failure is the range; zero is in it.
            Err(_) => format!("{sign}{int}"),
        },
        Some(frac) => {
            if let Some(x) = float_with_digits(&signed, negative, int, frac) {
                return Ok(Literal::Float(x));
            }
            let int = if int.is_empty() { "0" } else { int };
            let frac = if frac.is_empty() { "0" } else { frac };
            format!("{sign}{int}.{frac}")
        }
    };
    Ok(Literal::Exact(ExactNumber { text }))
}

/// Why a number with too many digits is refused.
const NUMBER_TOO_LONG: &str = "out of range: a number in a filter has at most 76 digits before \
                               and after its point, as many as the widest decimal column holds";

/// The `f64` nearest to `signed` if its shortest digits are `int`.`frac` (leading zeros of
/// `int` and trailing zeros of `frac` removed), with the same sign unless zero.
fn float_with_digits(signed: &str, negative: bool, int: &str, frac: &str) -> Option<FiniteF64> {
    let x = FiniteF64::new(signed.parse().ok()?)?;
    let shown = x.to_string();
    let (shown_negative, shown) = match shown.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, shown.as_str()),
    };
    let (shown_int, shown_frac) = shown.split_once('.').unwrap_or((shown, ""));
    let shown_int = shown_int.trim_start_matches('0');
    let shown_frac = shown_frac.trim_end_matches('0');
    let zero = int.is_empty() && frac.is_empty();
    (shown_int == int && shown_frac == frac && (zero || shown_negative == negative)).then_some(x)
}

/// A short name for a construct the language does not have; never prints sub-expressions
/// (they may be long).
fn describe(sql: &SqlExpr) -> String {
    match sql {
        SqlExpr::Function(f) => format!("the function `{}`", f.name),
        SqlExpr::BinaryOp { op, .. } => format!("the operator `{op}`"),
        SqlExpr::UnaryOp { op, .. } => format!("the operator `{op}`"),
        SqlExpr::Cast { .. } | SqlExpr::Convert { .. } => "a cast".into(),
        SqlExpr::Subquery(_) | SqlExpr::InSubquery { .. } | SqlExpr::Exists { .. } => {
            "a subquery".into()
        }
        SqlExpr::Case { .. } => "CASE".into(),
        SqlExpr::IsTrue(_)
        | SqlExpr::IsNotTrue(_)
        | SqlExpr::IsFalse(_)
        | SqlExpr::IsNotFalse(_)
        | SqlExpr::IsUnknown(_)
        | SqlExpr::IsNotUnknown(_) => {
            "IS [NOT] TRUE/FALSE/UNKNOWN (use `column = TRUE` or IS NULL)".into()
        }
        SqlExpr::IsDistinctFrom(..) | SqlExpr::IsNotDistinctFrom(..) => {
            "IS [NOT] DISTINCT FROM".into()
        }
        SqlExpr::SimilarTo { .. } | SqlExpr::RLike { .. } => {
            "regular expressions (use LIKE)".into()
        }
        SqlExpr::AnyOp { .. } | SqlExpr::AllOp { .. } => "ANY/ALL (use IN)".into(),
        SqlExpr::Interval(_) => "INTERVAL".into(),
        SqlExpr::Tuple(_) | SqlExpr::Array(_) | SqlExpr::Struct { .. } | SqlExpr::Map(_) => {
            "a tuple, array, struct or map".into()
        }
        SqlExpr::Value(_) | SqlExpr::TypedString(_) => "a value alone as a condition".into(),
        SqlExpr::CompoundIdentifier(_) => "a qualified column name".into(),
        SqlExpr::Wildcard(_) | SqlExpr::QualifiedWildcard(..) => "`*`".into(),
        SqlExpr::Collate { .. } => "COLLATE".into(),
        SqlExpr::AtTimeZone { .. } => "AT TIME ZONE".into(),
        SqlExpr::Extract { .. } => "EXTRACT".into(),
        SqlExpr::Substring { .. } | SqlExpr::Trim { .. } | SqlExpr::Position { .. } => {
            "a string function".into()
        }
        _ => "this kind of expression".into(),
    }
}

/// Whether `name`, an identifier that is also a SQL keyword, reads back as the column `name`
/// when written bare in every position the canonical text puts a column in.
pub(super) fn keyword_reads_as_column(name: &str) -> bool {
    let probes = [
        format!("{name} = 1"),
        format!("{name} IS NULL"),
        format!("{name} NOT IN (1)"),
        format!("{name} BETWEEN 1 AND 2"),
        format!("{name} NOT LIKE 'x'"),
        format!("{name} ILIKE 'x'"),
        format!("NOT ({name} <> 1)"),
        format!("a = 1 OR {name} < 1"),
    ];
    probes.iter().all(|text| {
        parse(text).is_ok_and(|expr| {
            let reads = |e: &Expr| match e {
                Expr::Compare { column, .. }
                | Expr::InList { column, .. }
                | Expr::Between { column, .. }
                | Expr::IsNull { column, .. }
                | Expr::Like { column, .. } => column == name,
                _ => false,
            };
            match &expr {
                Expr::Not(inner) => reads(inner),
                Expr::Or(operands) => operands.len() == 2 && reads(&operands[1]),
                other => reads(other),
            }
        })
    })
}
