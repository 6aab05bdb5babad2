//! The filter language of earlier releases, kept so that the filters of existing agreements
//! keep their exact meaning:
//!
//! ```text
//! filter  := pred (AND pred)*            -- AND in any case
//! pred    := column op literal
//! column  := [A-Za-z_][A-Za-z0-9_]*  |  "any name"     -- "" inside quotes is a quote
//! op      := =  |  !=  |  <  |  <=  |  >  |  >=
//! literal := 'string'                    -- '' inside quotes is a quote
//!          | -?[0-9]+                    -- integer
//!          | -?[0-9]+.[0-9]+             -- decimal number
//!          | true | false                -- in any case
//! ```
//!
//! Numbers are read as the SQL reading reads them (`parse::number`: an integer beyond `i64`,
//! or a fraction an `f64` does not keep, is an exact number).
//!
//! It differs from the SQL reading in two ways only: a bare column name may be a SQL keyword
//! (`date = '2024-03-01'`, `order > 5`), and nothing in a string is special but the quote.
//! Text outside this grammar goes to the SQL parser. The parser has no recursion: one loop
//! over predicates, over text already bounded by [`super::MAX_FILTER_LEN`].

use super::{CompareOp, Expr, Literal};

/// The expression of `text` if it is in the earlier language, `None` otherwise.
pub(super) fn parse(text: &str) -> Option<Expr> {
    let mut parser = Parser { src: text, pos: 0 };
    let mut predicates = Vec::new();
    parser.skip_ws();
    loop {
        predicates.push(parser.predicate()?);
        parser.skip_ws();
        if parser.at_end() {
            break;
        }
        if !parser.word().eq_ignore_ascii_case("and") {
            return None;
        }
        parser.skip_ws();
    }
    Some(if predicates.len() == 1 {
        predicates.pop()?
    } else {
        Expr::And(predicates)
    })
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Cursor over the text; `pos` is a byte offset.
struct Parser<'a> {
    /// The whole text.
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
}

impl Parser<'_> {
    fn predicate(&mut self) -> Option<Expr> {
        let column = self.column()?;
        self.skip_ws();
        let op = self.op()?;
        self.skip_ws();
        let value = self.literal()?;
        Some(Expr::Compare { column, op, value })
    }

    fn column(&mut self) -> Option<String> {
        match self.peek()? {
            '"' => Some(self.quoted('"')?).filter(|name| !name.is_empty()),
            c if c.is_ascii_alphabetic() || c == '_' => Some(self.word().to_owned()),
            _ => None,
        }
    }

    fn op(&mut self) -> Option<CompareOp> {
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
            return None;
        };
        self.pos += len;
        Some(op)
    }

    fn literal(&mut self) -> Option<Literal> {
        match self.peek()? {
            '\'' => Some(Literal::Str(self.quoted('\'')?)),
            c if c == '-' || c.is_ascii_digit() => self.number(),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let word = self.word();
                if word.eq_ignore_ascii_case("true") {
                    Some(Literal::Bool(true))
                } else if word.eq_ignore_ascii_case("false") {
                    Some(Literal::Bool(false))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Literal> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        if !self.digits() {
            return None;
        }
        if self.peek() == Some('.') {
            self.pos += 1;
            if !self.digits() {
                return None;
            }
        }
        if self.peek().is_some_and(|c| is_word_char(c) || c == '.') {
            return None;
        }
        let text = &self.src[start..self.pos];
        // Read as the SQL language reads numbers.
        match text.strip_prefix('-') {
            Some(unsigned) => super::parse::number(unsigned, true).ok(),
            None => super::parse::number(text, false).ok(),
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
    fn quoted(&mut self, quote: char) -> Option<String> {
        self.pos += quote.len_utf8();
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.pos += c.len_utf8();
            if c == quote {
                if self.peek() == Some(quote) {
                    self.pos += quote.len_utf8();
                    out.push(quote);
                } else {
                    return Some(out);
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
}
