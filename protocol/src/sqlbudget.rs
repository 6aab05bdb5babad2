//! A budget on the work of `sqlparser`'s expression parser.
//!
//! sqlparser parses expressions by trying alternatives and backtracking when one fails, and
//! on some texts it does so exponentially: `NOT (` nested 30 deep around a syntax error
//! made it try about 2^30 expressions, and a few hundred bytes of subscripts (`[`) and field
//! accesses (`.`) took it minutes. Every alternative it tries starts by parsing an
//! expression prefix (a literal, a name, a parenthesis, `NOT`, ...), and each prefix passes
//! through the dialect's [`Dialect::parse_prefix`] hook. [`BudgetedDialect`] counts those
//! calls and, past its budget, answers every later one with
//! [`ParserError::RecursionLimitExceeded`]: an error most of sqlparser's alternatives do
//! not swallow, so the parse ends within a few more tries. The error it ends with may still
//! be another (an alternative that turned it into a syntax error):
//! [`BudgetedDialect::exhausted`] tells the caller why it ended.
//!
//! The contract filter parser and the local SQL engine both parse through it.

use std::any::TypeId;
use std::cell::Cell;

use sqlparser::ast::Expr;
use sqlparser::dialect::{Dialect, GenericDialect};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

/// Whether `token` is a comparison (`=`, `==`, `<>`, `<`, `>`, `<=`, `>=`), an arithmetic
/// operator (`+`, `-`, `*`, `/`, `%`) or `||`: the operators of a filter, and the most
/// common of a query. Both parsers look at the tokens before sqlparser runs: the filter
/// parser to refuse anything else, the SQL engine to count a query's operators.
pub fn is_common_operator(token: &Token) -> bool {
    matches!(
        token,
        Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
    )
}

/// A dialect that parses as sqlparser's [`GenericDialect`] reports itself to, with a budget on
/// the expression prefixes its parser may try. One value serves one parse: the count is
/// never reset.
#[derive(Debug)]
pub struct BudgetedDialect {
    /// The optional syntax the parser accepts.
    syntax: Syntax,
    /// Prefixes the parser may try.
    budget: usize,
    /// Prefixes tried so far.
    tried: Cell<usize>,
}

/// Which optional syntax (the `supports_*` switches of [`Dialect`]) a [`BudgetedDialect`]
/// turns on.
#[derive(Clone, Copy, Debug)]
enum Syntax {
    /// [`GenericDialect`]'s: what DataFusion parses with by default.
    Generic,
    /// sqlparser's defaults: what the filter language has always been parsed with.
    Plain,
}

/// The generic dialect's identifiers and type, sqlparser's defaults for everything else.
#[derive(Debug)]
struct Plain;

impl Dialect for Plain {
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }
}

impl BudgetedDialect {
    /// Parses exactly as [`GenericDialect`] (DataFusion's default dialect), trying at most
    /// `budget` expression prefixes.
    pub fn generic(budget: usize) -> Self {
        Self::with_syntax(Syntax::Generic, budget)
    }

    /// The generic dialect's identifiers and keywords with none of its optional syntax
    /// (sqlparser's defaults for every `supports_*` switch), trying at most `budget`
    /// expression prefixes.
    pub fn plain(budget: usize) -> Self {
        Self::with_syntax(Syntax::Plain, budget)
    }

    fn with_syntax(syntax: Syntax, budget: usize) -> Self {
        Self {
            syntax,
            budget,
            tried: Cell::new(0),
        }
    }

    /// Prefixes the parser may try.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Prefixes the parser has tried so far (past the budget, the attempts it was refused).
    pub fn tried(&self) -> usize {
        self.tried.get()
    }

    /// Whether the parser went past the budget: its error then is the budget's, whatever it
    /// says.
    pub fn exhausted(&self) -> bool {
        self.tried.get() > self.budget
    }

    /// The dialect whose optional syntax this one turns on.
    fn syntax(&self) -> &'static dyn Dialect {
        match self.syntax {
            Syntax::Generic => &GenericDialect,
            Syntax::Plain => &Plain,
        }
    }
}

/// Delegates the `supports_*` switches that [`GenericDialect`] sets (sqlparser 0.62) to the
/// chosen syntax.
macro_rules! switches {
    ($($name:ident),* $(,)?) => {
        $(
            fn $name(&self) -> bool {
                self.syntax().$name()
            }
        )*
    };
}

impl Dialect for BudgetedDialect {
    fn dialect(&self) -> TypeId {
        // The parser checks for the generic dialect by type: parse as it does.
        TypeId::of::<GenericDialect>()
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        self.syntax().is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        self.syntax().is_identifier_part(ch)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.syntax().is_delimited_identifier_start(ch)
    }

    fn parse_prefix(&self, _parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        let tried = self.tried.get().saturating_add(1);
        self.tried.set(tried);
        // An error sqlparser's alternatives do not swallow: every later attempt fails at
        // once, so the parse ends.
        (tried > self.budget).then_some(Err(ParserError::RecursionLimitExceeded))
    }

    switches!(
        supports_unicode_string_literal,
        supports_partition_by_after_order_by,
        supports_array_join_syntax,
        supports_group_by_expr,
        supports_group_by_with_modifier,
        supports_left_associative_joins_without_parens,
        supports_connect_by,
        supports_match_recognize,
        supports_pipe_operator,
        supports_start_transaction_modifier,
        supports_window_function_null_treatment_arg,
        supports_dictionary_syntax,
        supports_window_clause_named_window_reference,
        supports_parenthesized_set_variables,
        supports_select_wildcard_except,
        support_map_literal_syntax,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_extract_comma_syntax,
        supports_create_view_comment_syntax,
        supports_parens_around_table_factor,
        supports_values_as_table_factor,
        supports_create_index_with_clause,
        supports_explain_with_utility_options,
        supports_limit_comma,
        supports_update_order_by,
        supports_from_first_select,
        supports_projection_trailing_commas,
        supports_asc_desc_in_column_definition,
        supports_try_convert,
        supports_bitwise_shift_operators,
        supports_comment_on,
        supports_load_extension,
        supports_named_fn_args_with_assignment_operator,
        supports_struct_literal,
        supports_empty_projections,
        supports_nested_comments,
        supports_multiline_comment_hints,
        supports_user_host_grantee,
        supports_string_escape_constant,
        supports_array_typedef_with_brackets,
        supports_match_against,
        supports_set_names,
        supports_comma_separated_set_assignments,
        supports_filter_during_aggregation,
        supports_select_wildcard_exclude,
        supports_data_type_signed_suffix,
        supports_interval_options,
        supports_quote_delimited_string,
        supports_select_wildcard_replace,
        supports_select_wildcard_ilike,
        supports_select_wildcard_rename,
        supports_optimize_table,
        supports_install,
        supports_detach,
        supports_prewhere,
        supports_with_fill,
        supports_limit_by,
        supports_interpolate,
        supports_settings,
        supports_select_format,
        supports_comment_optimizer_hint,
        supports_constraint_keyword_without_name,
        supports_key_column_option,
        supports_comma_separated_trim,
        supports_cte_without_as,
        supports_select_item_multi_column_alias,
        supports_xml_expressions,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(dialect: &dyn Dialect, sql: &str) -> Result<String, ParserError> {
        Parser::parse_sql(dialect, sql).map(|s| format!("{s:?}"))
    }

    #[test]
    fn the_generic_budget_parses_as_the_generic_dialect() {
        // A statement per kind of switch the generic dialect sets, and one it does not.
        for sql in [
            "SELECT * EXCEPT (a) FROM t",
            "SELECT count(*) FILTER (WHERE a > 1) FROM t GROUP BY ROLLUP (b, c)",
            "SELECT a, FROM t LIMIT 1, 2",
            "SELECT U&'\\0041', E'\\n' /* a /* nested */ comment */ FROM t",
            "SELECT STRUCT(1 AS a), {'k': 1}, a << 2, MAP {'k': 1} FROM t",
            "SELECT first_value(a) IGNORE NULLS OVER (PARTITION BY b ORDER BY c) FROM t",
            "FROM t SELECT a",
            "SELECT 1 FROM (t)",
            "SELECT a FROM t WHERE x IN ()",
        ] {
            assert_eq!(
                statements(&BudgetedDialect::generic(1_000), sql),
                statements(&GenericDialect, sql),
                "{sql}"
            );
        }
    }

    #[test]
    fn the_plain_budget_keeps_sqlparsers_defaults() {
        let plain = BudgetedDialect::plain(1_000);
        assert!((&plain as &dyn Dialect).is::<GenericDialect>());
        assert!(!plain.supports_select_wildcard_except());
        assert!(!plain.supports_nested_comments());
        assert!(statements(&plain, "SELECT * EXCEPT (a) FROM t").is_err());
        assert!(
            statements(
                &BudgetedDialect::generic(1_000),
                "SELECT * EXCEPT (a) FROM t"
            )
            .is_ok()
        );
    }

    #[test]
    fn past_the_budget_the_parse_ends() {
        let sql = format!("SELECT {}x = {}", "NOT (".repeat(30), ")".repeat(30));
        let dialect = BudgetedDialect::generic(10_000);
        let parsed = Parser::new(&dialect)
            .with_recursion_limit(200)
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_statements());
        assert!(parsed.is_err());
        assert!(dialect.exhausted());
        // Each level the parse unwinds through may ask once more, and is refused.
        assert!(
            dialect.tried() <= dialect.budget() + 200,
            "{}",
            dialect.tried()
        );
        // Within the budget, the count is what was tried and the parse is as usual.
        let ok = BudgetedDialect::generic(10_000);
        Parser::parse_sql(&ok, "SELECT a + 1 FROM t WHERE NOT (b = 2)").unwrap();
        assert!(!ok.exhausted());
        assert!(ok.tried() > 0 && ok.tried() < 100, "{}", ok.tried());
    }
}
