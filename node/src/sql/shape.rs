//! The chains a query may hold, counted on its tokens before it is parsed.
//!
//! The parser reads a chain of binary operators (`1 + 1 + ...`, `a OR b OR ...`), of set
//! operations (`... UNION ALL ...`) or of joins (`a JOIN b JOIN ...`, `FROM a, b, ...`) with
//! a loop, but builds it as a tree as deep as the chain is long, and the query engine plans
//! that tree by recursion. Within the 64 KiB a query may have, such a chain overflowed a
//! 16 MiB thread stack (a debug build: 3,000 additions, 2,500 `UNION ALL`, 1,000 joins) and
//! aborted the daemon. So the chains are counted first, with a loop over the tokens, and a
//! query over either bound is refused with what to change. Nesting (parentheses, subqueries,
//! `CASE`) is bounded by the parser's own recursion limit instead.
//!
//! The counts are of all operators and joins in the query, not of the longest chain: a bound
//! on the total bounds every chain, and real queries stay far below it (a 200-line analyst
//! query with CTEs, window functions and `UNION ALL` has 86 operators and 6 joins).

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use mesh_protocol::sqlbudget::is_common_operator;

/// Most binary operators (arithmetic, comparison, `AND`/`OR`, `LIKE`, `||`, ...) and set
/// operations (`UNION`, `EXCEPT`, `INTERSECT`) in one query. A debug build plans 2,000
/// additions or 1,500 `UNION ALL` within a runtime worker's stack; a release build more.
pub(super) const MAX_OPERATORS: usize = 1000;
/// Most joins in one query: `JOIN` keywords, and commas between the tables of a `FROM`.
/// A debug build plans 500 joins within a runtime worker's stack.
pub(super) const MAX_JOINS: usize = 256;

/// What a query chains, as counted by [`count`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Chains {
    /// Binary operators and set operations.
    pub(super) operators: usize,
    /// Joins.
    pub(super) joins: usize,
}

/// Counts the operators and joins of a query's tokens, in one pass. Conservative: a unary
/// minus or the `*` of `SELECT *` counts as an operator, a comma after a join's `ON`
/// condition as a join.
pub(super) fn count(tokens: &[TokenWithSpan]) -> Chains {
    let mut chains = Chains::default();
    // Per open parenthesis (and the query itself): whether a FROM clause is being read.
    let mut in_from = vec![false];
    for t in tokens {
        match &t.token {
            Token::LParen => in_from.push(false),
            Token::RParen if in_from.len() > 1 => {
                in_from.pop();
            }
            Token::Comma if in_from.last().copied().unwrap_or(false) => chains.joins += 1,
            Token::Word(w) => match w.keyword {
                Keyword::FROM => set_last(&mut in_from, true),
                Keyword::JOIN => chains.joins += 1,
                Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT | Keyword::MINUS => {
                    chains.operators += 1;
                    set_last(&mut in_from, false);
                }
                Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::QUALIFY
                | Keyword::WINDOW
                | Keyword::SELECT => set_last(&mut in_from, false),
                Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::IS
                | Keyword::IN
                | Keyword::BETWEEN
                | Keyword::DIV
                | Keyword::OVERLAPS => chains.operators += 1,
                _ => {}
            },
            token if is_operator(token) => chains.operators += 1,
            _ => {}
        }
    }
    chains
}

/// The refusal for the first bound `chains` is over, if any.
pub(super) fn over_a_bound(chains: Chains) -> Option<super::SqlError> {
    [
        (
            chains.operators,
            MAX_OPERATORS,
            "operators (`+`, `=`, `AND`, `UNION`, ...)",
            "split it, or write a long list of alternatives as `IN (...)`",
        ),
        (
            chains.joins,
            MAX_JOINS,
            "joins",
            "join fewer tables in one query",
        ),
    ]
    .into_iter()
    .find(|(count, max, ..)| count > max)
    .map(|(count, max, what, advice)| super::SqlError::TooLarge {
        what,
        count,
        max,
        advice,
    })
}

fn set_last(in_from: &mut [bool], value: bool) {
    if let Some(last) = in_from.last_mut() {
        *last = value;
    }
}

/// Whether `token` is a symbol of a binary (or unary) operator.
fn is_operator(token: &Token) -> bool {
    is_common_operator(token)
        || matches!(
            token,
            Token::Spaceship
                | Token::Caret
                | Token::Ampersand
                | Token::Pipe
                | Token::ShiftLeft
                | Token::ShiftRight
                | Token::Tilde
                | Token::TildeAsterisk
                | Token::ExclamationMarkTilde
                | Token::ExclamationMarkTildeAsterisk
                | Token::DoubleTilde
                | Token::DoubleTildeAsterisk
                | Token::ExclamationMarkDoubleTilde
                | Token::ExclamationMarkDoubleTildeAsterisk
                | Token::Arrow
                | Token::LongArrow
                | Token::HashArrow
                | Token::HashLongArrow
                | Token::AtArrow
                | Token::ArrowAt
                | Token::Question
                | Token::QuestionAnd
                | Token::QuestionPipe
        )
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    use super::*;

    fn chains(sql: &str) -> Chains {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        count(&tokens)
    }

    #[test]
    fn operators_and_set_operations_are_counted() {
        assert_eq!(chains("SELECT 1 + 2 * 3").operators, 2);
        assert_eq!(
            chains("SELECT a FROM t WHERE a = 1 AND b LIKE 'x%' OR c || d <> e").operators,
            6
        );
        let unions = ["SELECT 1"; 10].join(" UNION ALL ");
        assert_eq!(chains(&unions).operators, 9);
    }

    #[test]
    fn joins_and_tables_of_a_from_list_are_counted_not_other_commas() {
        let c =
            chains("SELECT a, b, c FROM t1, t2, (SELECT x, y FROM u) AS t3 WHERE a IN (1, 2, 3)");
        assert_eq!((c.joins, c.operators), (2, 1));
        let c =
            chains("SELECT * FROM a JOIN b ON a.x = b.x LEFT JOIN c USING (k), d GROUP BY 1, 2");
        // Two JOINs and the comma before `d`; the `=`, `*` and `.` access are not joins.
        assert_eq!(c.joins, 3);
        // A FROM inside a function call (`EXTRACT(YEAR FROM d)`) ends at its parenthesis.
        let c = chains("SELECT EXTRACT(YEAR FROM d), e, f FROM t");
        assert_eq!(c.joins, 0);
    }

    #[test]
    fn a_real_analyst_query_stays_far_below_both_bounds() {
        let c = chains(include_str!("testdata/analyst_query.sql"));
        assert!(
            c.operators > 50 && c.operators < MAX_OPERATORS / 10,
            "{c:?}"
        );
        assert!(c.joins < MAX_JOINS / 10, "{c:?}");
    }
}
