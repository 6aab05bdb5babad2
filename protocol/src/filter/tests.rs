use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::check::is_iso_timestamp;
use super::*;

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

fn cmp(column: &str, op: CompareOp, value: Literal) -> Expr {
    Expr::Compare {
        column: column.into(),
        op,
        value,
    }
}

fn float(x: f64) -> Literal {
    Literal::Float(FiniteF64::new(x).unwrap())
}

fn s(text: &str) -> Literal {
    Literal::Str(text.into())
}

fn parse(text: &str) -> Expr {
    Filter::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .expr()
        .clone()
}

fn canonical(text: &str) -> String {
    Filter::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .to_string()
}

fn err(text: &str) -> FilterError {
    Filter::parse(text).unwrap_err()
}

/// Texts of the earlier language, as stored in existing agreements, keep their meaning.
#[test]
fn filters_of_the_earlier_language_keep_their_meaning() {
    assert_eq!(
        parse("region = 'EU' AND amount >= 10"),
        Expr::And(vec![
            cmp("region", CompareOp::Eq, s("EU")),
            cmp("amount", CompareOp::GtEq, Literal::Int(10)),
        ])
    );
    assert_eq!(
        parse(
            "region = 'EU' and amount != -42 AND price<2.5 AnD active <= true \
             And \"odd name\" > 'it''s' AND x >= FALSE"
        ),
        Expr::And(vec![
            cmp("region", CompareOp::Eq, s("EU")),
            cmp("amount", CompareOp::NotEq, Literal::Int(-42)),
            cmp("price", CompareOp::Lt, float(2.5)),
            cmp("active", CompareOp::LtEq, Literal::Bool(true)),
            cmp("odd name", CompareOp::Gt, s("it's")),
            cmp("x", CompareOp::GtEq, Literal::Bool(false)),
        ])
    );
    // Bare SQL keywords as column names, backslashes taken literally.
    assert_eq!(
        parse("date >= '2024-03-01' AND order > 5 AND path = 'C:\\x\\'"),
        Expr::And(vec![
            cmp("date", CompareOp::GtEq, s("2024-03-01")),
            cmp("order", CompareOp::Gt, Literal::Int(5)),
            cmp("path", CompareOp::Eq, s("C:\\x\\")),
        ])
    );
    assert_eq!(
        canonical("date >= '2024-03-01' AND order > 5"),
        "\"date\" >= '2024-03-01' AND order > 5"
    );
    // The SQL reading agrees where both apply, and quoting is kept for reserved words.
    assert_eq!(
        parse("date IS NULL OR order IN (1) OR region = 'EU'"),
        Expr::Or(vec![
            Expr::IsNull {
                column: "date".into(),
                negated: false
            },
            Expr::InList {
                column: "order".into(),
                values: vec![Literal::Int(1)],
                negated: false
            },
            cmp("region", CompareOp::Eq, s("EU")),
        ])
    );
    assert_eq!(
        canonical("select = 1 AND \"not\" = 2 AND \"null\" IS NULL"),
        "\"select\" = 1 AND \"not\" = 2 AND \"null\" IS NULL"
    );
    // Numbers keep their kind.
    assert_eq!(
        parse("a = 1.0 AND b = 1 AND c = -0.0 AND d = 9223372036854775807"),
        Expr::And(vec![
            cmp("a", CompareOp::Eq, float(1.0)),
            cmp("b", CompareOp::Eq, Literal::Int(1)),
            cmp("c", CompareOp::Eq, float(-0.0)),
            cmp("d", CompareOp::Eq, Literal::Int(i64::MAX)),
        ])
    );
    assert_eq!(
        parse("a = -9223372036854775808"),
        cmp("a", CompareOp::Eq, Literal::Int(i64::MIN))
    );
    // The canonical texts of the earlier release.
    for (old, new) in [
        ("region = 'EU'", "region = 'EU'"),
        ("a != 1 AND b = true", "a <> 1 AND b = TRUE"),
        (
            "\"and\" = 1 AND \"True\" = 1",
            "\"and\" = 1 AND \"True\" = 1",
        ),
        ("\"say \"\"hi\"\"\" = 1", "\"say \"\"hi\"\"\" = 1"),
        ("day >= '2024-02-29'", "day >= '2024-02-29'"),
    ] {
        assert_eq!(canonical(old), new);
        assert_eq!(parse(old), parse(new));
    }
    // Up to the earlier limit of 32 conditions.
    assert!(Filter::parse(&vec!["a = 1"; 32].join(" AND ")).is_ok());
}

#[test]
fn every_operator_parses_to_its_canonical_form() {
    for (text, expected) in [
        ("a = 1", "a = 1"),
        ("a <> 1", "a <> 1"),
        ("a != 1", "a <> 1"),
        ("a < 1.5", "a < 1.5"),
        ("a <= -1", "a <= -1"),
        ("a > 'x'", "a > 'x'"),
        ("a >= +3", "a >= 3"),
        ("5 < a", "a > 5"),
        ("'EU' = region", "region = 'EU'"),
        ("a IN (1, 2, 3)", "a IN (1, 2, 3)"),
        ("a in ('x','y')", "a IN ('x', 'y')"),
        ("a NOT IN (1)", "a NOT IN (1)"),
        ("a BETWEEN 1 AND 9", "a BETWEEN 1 AND 9"),
        ("a not between 1.5 and 2", "a NOT BETWEEN 1.5 AND 2"),
        ("a IS NULL", "a IS NULL"),
        ("a is not null", "a IS NOT NULL"),
        ("a LIKE 'E%'", "a LIKE 'E%'"),
        ("a NOT LIKE '_u'", "a NOT LIKE '_u'"),
        ("a ILIKE 'e%'", "a ILIKE 'e%'"),
        ("a NOT ILIKE 'e%'", "a NOT ILIKE 'e%'"),
        ("a = true OR b = FALSE", "a = TRUE OR b = FALSE"),
        ("NOT a = 1", "NOT (a = 1)"),
        ("not (a = 1 or b = 2)", "NOT (a = 1 OR b = 2)"),
        ("d >= DATE '2024-03-01'", "d >= DATE '2024-03-01'"),
        (
            "t < timestamp '2024-03-01 12:00:00.5'",
            "t < TIMESTAMP '2024-03-01 12:00:00.5'",
        ),
        ("d = '2024-03-01'", "d = '2024-03-01'"),
        ("\"odd name\" = 'it''s'", "\"odd name\" = 'it''s'"),
        ("\"select\" = 1", "\"select\" = 1"),
        ("((a = 1))", "a = 1"),
        ("(a = 1 AND b = 2) AND c = 3", "a = 1 AND b = 2 AND c = 3"),
        ("a = 1 OR (b = 2 OR c = 3)", "a = 1 OR b = 2 OR c = 3"),
        ("a = 1 AND b = 2 OR c = 3", "(a = 1 AND b = 2) OR c = 3"),
        ("a = 1 AND (b = 2 OR c = 3)", "a = 1 AND (b = 2 OR c = 3)"),
        (
            "a BETWEEN 1 AND 2 AND b IS NULL",
            "a BETWEEN 1 AND 2 AND b IS NULL",
        ),
        ("a = 1.50", "a = 1.5"),
        ("a = 'tab\there'", "a = 'tab\there'"),
    ] {
        assert_eq!(canonical(text), expected, "{text}");
        assert_eq!(canonical(expected), expected, "{expected}");
    }
    assert_eq!(
        parse("a IN (1, 'x') AND b NOT BETWEEN DATE '2024-01-01' AND DATE '2024-12-31'"),
        Expr::And(vec![
            Expr::InList {
                column: "a".into(),
                values: vec![Literal::Int(1), s("x")],
                negated: false,
            },
            Expr::Between {
                column: "b".into(),
                low: Literal::Date("2024-01-01".into()),
                high: Literal::Date("2024-12-31".into()),
                negated: true,
            },
        ])
    );
    assert_eq!(
        parse("NOT (x IS NOT NULL) OR y NOT ILIKE 'a\\%'"),
        Expr::Or(vec![
            Expr::Not(Box::new(Expr::IsNull {
                column: "x".into(),
                negated: true
            })),
            Expr::Like {
                column: "y".into(),
                pattern: "a\\%".into(),
                negated: true,
                case_insensitive: true,
            },
        ])
    );
    let f = Filter::parse("b = 1 OR (a IN (1, 2) AND NOT (c LIKE 'x'))").unwrap();
    assert_eq!(f.columns().collect::<Vec<_>>(), ["b", "a", "c"]);
}

#[test]
fn refusals_name_the_construct() {
    let unsupported = |text: &str| match err(text) {
        FilterError::Unsupported { construct, .. } => construct,
        other => panic!("{text}: expected Unsupported, got {other:?}"),
    };
    assert_eq!(unsupported("lower(a) = 'x'"), "the function `lower`");
    assert_eq!(unsupported("a = lower('x')"), "the function `lower`");
    assert_eq!(unsupported("a + 1 = 2"), "the operator `+`");
    assert_eq!(unsupported("a = b"), "comparing column `a` with column `b`");
    assert_eq!(unsupported("1 = 1"), "a comparison without a column");
    assert_eq!(unsupported("a = NULL"), "NULL as a value");
    assert_eq!(unsupported("CAST(a AS INT) = 1"), "a cast");
    assert_eq!(unsupported("a IN (SELECT 1)"), "a subquery");
    assert_eq!(unsupported("EXISTS (SELECT 1)"), "a subquery");
    assert_eq!(
        unsupported("active"),
        "the bare column `active` as a condition"
    );
    assert_eq!(unsupported("t.a = 1"), "the qualified name `t.a`");
    assert_eq!(unsupported("a LIKE 'x' ESCAPE '!'"), "LIKE ... ESCAPE");
    assert_eq!(
        unsupported("a LIKE 5"),
        "a LIKE pattern that is not a string"
    );
    assert_eq!(
        unsupported("a IN (b)"),
        "the column `b` where a value is expected"
    );
    assert_eq!(unsupported("\"\" = 1"), "an empty column name `\"\"`");
    assert_eq!(
        unsupported("a = - - 1"),
        "the sign `-` before an expression"
    );
    assert!(unsupported("a IS TRUE").starts_with("IS [NOT] TRUE"));
    assert_eq!(unsupported("a = X'00'"), "the literal X'00'");
    assert_eq!(
        unsupported("a = INTERVAL '1' DAY"),
        "INTERVAL",
        "intervals are refused"
    );
    assert_eq!(
        err("lower(a) = 'x'").to_string(),
        "the function `lower` is not supported in filters; compare a column with a literal \
         value: 'text', 42, 4.2, TRUE, DATE '2024-03-01' or TIMESTAMP '2024-03-01 12:00:00'"
    );
    assert!(matches!(err("a = 1e5"), FilterError::BadNumber { .. }));
    assert!(matches!(
        err("a = 99999999999999999999"),
        FilterError::BadNumber {
            reason: "out of range",
            ..
        }
    ));
    assert!(matches!(
        err(&format!("a = 1{}.0", "0".repeat(400))),
        FilterError::BadNumber {
            reason: "out of range",
            ..
        }
    ));
    assert_eq!(
        err("d = DATE '2023-02-29'").to_string(),
        "DATE '2023-02-29' is not a valid date; write e.g. DATE '2024-03-01'"
    );
    assert!(matches!(
        err("t = TIMESTAMP 'soon'"),
        FilterError::BadTemporal { .. }
    ));
    assert!(matches!(err("a = 1 b = 2"), FilterError::Syntax(_)));
    assert!(matches!(err("a = 'open"), FilterError::Syntax(_)));
    assert!(matches!(err("a ="), FilterError::Syntax(_)));
    assert_eq!(err("  \n "), FilterError::Empty);
    let syntax = err("a = 1 )").to_string();
    assert!(
        syntax.starts_with("the filter is not a valid SQL condition"),
        "{syntax}"
    );
}

/// Hostile sizes: rejected cleanly and fast, without exhausting a small stack.
#[test]
fn bounds_refuse_hostile_filters_quickly() {
    let run = |text: String| {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let start = Instant::now();
                let result = Filter::parse(&text);
                (result, start.elapsed())
            })
            .unwrap()
            .join()
            .unwrap()
    };
    let cases = [
        // 100k nested parentheses and a 10k-term OR: over the length bound.
        format!("{}a = 1{}", "(".repeat(100_000), ")".repeat(100_000)),
        vec!["a = 1"; 10_000].join(" OR "),
        // Within the length bound: nesting and size bounds inside the parser.
        format!("{}a = 1{}", "(".repeat(2000), ")".repeat(2000)),
        format!("{}a = 1", "NOT ".repeat(1000)),
        format!("a = {}1", "-".repeat(4000)),
        vec!["a=1"; 500].join(" OR "),
        vec!["a=1"; 800].join(" AND "),
        format!("a IN ({})", vec!["1"; 2000].join(",")),
        format!("a IN ({})", vec!["1"; 129].join(", ")),
        (0..40)
            .map(|i| format!("(c{i} = 1 {}", if i % 2 == 0 { "OR" } else { "AND" }))
            .collect::<String>()
            + " z = 1"
            + &")".repeat(40),
    ];
    for (i, text) in cases.into_iter().enumerate() {
        let (result, elapsed) = run(text);
        let e = result.expect_err("refused");
        assert!(
            matches!(
                e,
                FilterError::TooLong { .. }
                    | FilterError::TooDeep { .. }
                    | FilterError::TooManyNodes { .. }
                    | FilterError::InListTooLong { .. }
                    | FilterError::Unsupported { .. }
                    | FilterError::Syntax(_)
            ),
            "case {i}: {e:?}"
        );
        assert!(
            elapsed < Duration::from_secs(1),
            "case {i} took {elapsed:?}"
        );
    }
    assert_eq!(
        err(&format!("{}a = 1{}", "(".repeat(2000), ")".repeat(2000))),
        FilterError::TooDeep { max: MAX_DEPTH }
    );
    assert_eq!(
        err(&vec!["a=1"; 500].join(" OR ")),
        FilterError::TooManyNodes { max: MAX_NODES }
    );
    assert_eq!(
        err(&format!("a IN ({})", vec!["1"; 129].join(", "))),
        FilterError::InListTooLong {
            column: "a".into(),
            len: 129,
            max: MAX_IN_LIST
        }
    );
    let long = "a = 1 AND ".repeat(500) + "a = 1";
    assert_eq!(
        err(&long),
        FilterError::TooLong {
            len: long.len(),
            max: MAX_FILTER_LEN
        }
    );
    // At the bounds: accepted.
    assert!(Filter::parse(&format!("a IN ({})", vec!["1"; MAX_IN_LIST].join(", "))).is_ok());
    assert!(Filter::parse(&format!("{}a = 1{}", "(".repeat(20), ")".repeat(20))).is_ok());
    assert!(Filter::parse(&vec!["a=1"; 200].join(" OR ")).is_ok());
    // Input shorter than its canonical text: the canonical length is bounded too.
    let dense = vec!["a=1"; 250].join("OR ");
    assert!(dense.len() <= MAX_FILTER_LEN);
    let spaced = vec!["a = 'xxxxxxxxxx'"; 250].join(" OR ");
    assert!(matches!(
        Filter::parse(&spaced),
        Err(FilterError::TooLong { .. })
    ));
    let packed = format!("a IN ({})", vec!["0.5"; 128].join(","));
    assert!(Filter::parse(&packed).is_ok());
}

#[test]
fn from_expr_normalises_and_bounds() {
    let nested = Expr::And(vec![
        Expr::And(vec![cmp("a", CompareOp::Eq, Literal::Int(1))]),
        Expr::Or(vec![Expr::Or(vec![
            cmp("b", CompareOp::Eq, Literal::Int(2)),
            cmp("c", CompareOp::Eq, Literal::Int(3)),
        ])]),
    ]);
    let f = Filter::from_expr(nested).unwrap();
    assert_eq!(f.to_string(), "a = 1 AND (b = 2 OR c = 3)");
    assert!(Filter::from_expr(Expr::And(vec![])).is_err());
    // A hand-built expression far deeper than the bound: refused and dropped without
    // recursion (on a small stack).
    let result = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let mut deep = cmp("a", CompareOp::Eq, Literal::Int(1));
            for _ in 0..100_000 {
                deep = Expr::Not(Box::new(deep));
            }
            Filter::from_expr(deep).map(|_| ())
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(result, Err(FilterError::TooDeep { max: MAX_DEPTH }));
}

#[test]
fn and_intersects_without_widening() {
    let agreement = Filter::parse("region = 'EU' OR region = 'US'").unwrap();
    let query = Filter::parse("amount > 10 AND region = 'EU'").unwrap();
    let both = agreement.clone().and(query.clone());
    assert_eq!(
        both.to_string(),
        "(region = 'EU' OR region = 'US') AND amount > 10 AND region = 'EU'"
    );
    assert_eq!(Filter::parse(&both.to_string()).unwrap(), both);
    assert_eq!(agreement.clone().and(agreement.clone()), agreement);
    assert_eq!(
        both.columns().collect::<Vec<_>>(),
        ["region", "region", "amount", "region"]
    );
}

#[test]
fn check_accepts_compatible_conditions() {
    let ok = "region = 'EU' AND amount > -5 AND amount < 10 AND small <= 127 \
              AND unsigned >= 0 AND price > 1 AND price < 2.5 AND cost >= 99999999 \
              AND cost < 12.25 AND active = true AND active != false \
              AND day >= '2024-02-29' AND at < '2024-03-01T12:30:00.123Z' \
              AND at > '2024-03-01' AND dict = 'x' AND \"odd name\" != ''";
    Filter::parse(ok).unwrap().check(&schema()).unwrap();
    let ok = "region IN ('EU', 'US') AND amount NOT IN (1, 2) AND active IN (TRUE) \
              AND price BETWEEN 1 AND 2.5 AND day BETWEEN DATE '2024-01-01' AND '2024-02-01' \
              AND at >= DATE '2024-01-01' AND at < TIMESTAMP '2024-01-01 10:00:00' \
              AND (tags IS NULL OR region LIKE 'E%' OR dict ILIKE 'x%') \
              AND NOT (\"odd name\" NOT LIKE '%')";
    Filter::parse(ok).unwrap().check(&schema()).unwrap();
}

#[test]
fn check_names_unknown_columns() {
    let err = Filter::parse("region = 'EU' OR NOT (country = 'EU')")
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

fn check_reason(text: &str) -> (String, String) {
    match Filter::parse(text).unwrap().check(&schema()) {
        Err(FilterError::Incompatible {
            operator, reason, ..
        }) => (operator, reason),
        other => panic!("expected Incompatible for {text}, got {other:?}"),
    }
}

#[test]
fn check_refuses_incompatible_conditions() {
    let err = Filter::parse("amount = 'ten'")
        .unwrap()
        .check(&schema())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot apply `=` to column `amount` of type Int64: \
         it cannot be compared with a string ('ten')"
    );
    for (text, operator, reason) in [
        (
            "region = 1",
            "=",
            "it cannot be compared with an integer (1)",
        ),
        (
            "amount > 2.5",
            ">",
            "it cannot be compared with a decimal number (2.5)",
        ),
        (
            "small = 128",
            "=",
            "128 is outside the range -128..=127 of the type",
        ),
        (
            "unsigned > -1",
            ">",
            "-1 is outside the range 0..=4294967295 of the type",
        ),
        (
            "cost = 100000000",
            "=",
            "100000000 has more than the 8 integer digits the type allows",
        ),
        (
            "cost = 1.125",
            "=",
            "1.125 has more fraction digits than the scale 2 of the type",
        ),
        (
            "price = true",
            "=",
            "it cannot be compared with a boolean (TRUE)",
        ),
        (
            "active < true",
            "<",
            "booleans have no order; use = or <> (or IN)",
        ),
        (
            "active BETWEEN FALSE AND TRUE",
            "BETWEEN",
            "booleans have no order; use = or <> (or IN)",
        ),
        (
            "active = 1",
            "=",
            "it cannot be compared with an integer (1)",
        ),
        (
            "day = '2023-02-29'",
            "=",
            "'2023-02-29' is not an ISO date like '2024-03-01'",
        ),
        (
            "day = 19000",
            "=",
            "it cannot be compared with an integer (19000)",
        ),
        (
            "day = TIMESTAMP '2024-01-01 10:00:00'",
            "=",
            "TIMESTAMP '2024-01-01 10:00:00' has a time of day; compare a date column with \
             DATE '...'",
        ),
        (
            "region = DATE '2024-01-01'",
            "=",
            "it cannot be compared with a date (DATE '2024-01-01')",
        ),
        (
            "at = '2024-03-01 25:00:00'",
            "=",
            "'2024-03-01 25:00:00' is not an ISO date or date-time like '2024-03-01T12:00:00'",
        ),
        (
            "tags = 'x'",
            "=",
            "filters support text, numeric, boolean, date, timestamp and time of day columns \
             only (IS NULL works on any column)",
        ),
        (
            "amount IN (1, 'x')",
            "IN",
            "it cannot be compared with a string ('x')",
        ),
        (
            "amount NOT BETWEEN 1 AND 'x'",
            "NOT BETWEEN",
            "it cannot be compared with a string ('x')",
        ),
        (
            "amount LIKE '1%'",
            "LIKE",
            "patterns match text columns only",
        ),
        (
            "day NOT ILIKE '1%'",
            "NOT ILIKE",
            "patterns match text columns only",
        ),
    ] {
        assert_eq!(
            check_reason(text),
            (operator.to_owned(), reason.to_owned()),
            "{text}"
        );
    }
    let bad_type = [col("x", "NotAType")];
    assert_eq!(
        Filter::parse("x = 1")
            .unwrap()
            .check(&bad_type)
            .unwrap_err(),
        FilterError::Incompatible {
            column: "x".into(),
            data_type: "NotAType".into(),
            operator: "=".into(),
            reason: "the schema's type is not a known Arrow type".into()
        }
    );
}

#[test]
fn check_compares_time_of_day_columns_with_times_written_as_text() {
    let columns = [
        col("t", "Time32(s)"),
        col("ms", "Time32(ms)"),
        col("ns", "Time64(ns)"),
    ];
    let check = |text: &str| Filter::parse(text).unwrap().check(&columns);
    for text in [
        "t >= '12:34:56'",
        "t < '12:34'",
        "t BETWEEN '07:00' AND '23:59:59'",
        "t NOT IN ('00:00', '23:59:59')",
        "ms = '12:34:56.123'",
        "ms > '12:34:56.5'",
        "ns = '12:34:56.123456789'",
        "t IS NULL",
    ] {
        assert_eq!(check(text), Ok(()), "{text}");
    }
    let not_a_time =
        |v: &str| format!("'{v}' is not a time of day like '12:34:56' or '12:34' (hours 00-23)");
    let cases = [
        (
            "t = '12:34:56.5'",
            "=",
            "'12:34:56.5' has a fraction of a second, which a column of whole seconds cannot \
             hold; write a time like '12:34:56'"
                .to_owned(),
        ),
        (
            "ms = '12:34:56.1234'",
            "=",
            "'12:34:56.1234' has more than the 3 digits of a second the column holds".to_owned(),
        ),
        ("t = '24:00:00'", "=", not_a_time("24:00:00")),
        ("t = '23:59:60'", "=", not_a_time("23:59:60")),
        ("t < '12:60'", "<", not_a_time("12:60")),
        ("t = '1:02:03'", "=", not_a_time("1:02:03")),
        ("t = ' 12:34'", "=", not_a_time(" 12:34")),
        ("t = '12:34:56 PM'", "=", not_a_time("12:34:56 PM")),
        ("t = '12:34.5'", "=", not_a_time("12:34.5")),
        ("t = '12:34:56:00'", "=", not_a_time("12:34:56:00")),
        ("ns = '12:34:56.'", "=", not_a_time("12:34:56.")),
        ("t IN ('12:34', 'noon')", "IN", not_a_time("noon")),
        (
            "t = 45296",
            "=",
            "it cannot be compared with an integer (45296)".to_owned(),
        ),
        (
            "t = TIMESTAMP '2024-01-01 10:00:00'",
            "=",
            "it cannot be compared with a timestamp (TIMESTAMP '2024-01-01 10:00:00')".to_owned(),
        ),
        (
            "t LIKE '12%'",
            "LIKE",
            "patterns match text columns only".to_owned(),
        ),
    ];
    for (text, operator, reason) in cases {
        match check(text) {
            Err(FilterError::Incompatible {
                operator: got_operator,
                reason: got_reason,
                ..
            }) => assert_eq!(
                (got_operator.as_str(), got_reason.as_str()),
                (operator, reason.as_str()),
                "{text}"
            ),
            other => panic!("expected Incompatible for {text}, got {other:?}"),
        }
    }
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
fn serde_is_canonical_text_and_reparses() {
    let f = Filter::parse("a = 1.5 AND (b = 'x' OR c IS NULL)").unwrap();
    let bytes = crate::codec::encode(&f);
    assert_eq!(crate::codec::decode::<Filter>(&bytes, 1024).unwrap(), f);
    assert_eq!(
        serde_json::to_string(&f).unwrap(),
        "\"a = 1.5 AND (b = 'x' OR c IS NULL)\""
    );
    // Decoding goes through the parser and its bounds.
    let hostile = serde_json::to_string(&vec!["a = 1"; 300].join(" OR ")).unwrap();
    assert!(serde_json::from_str::<Filter>(&hostile).is_err());
    let nan = crate::codec::encode(&f64::NAN);
    assert!(crate::codec::decode::<FiniteF64>(&nan, 64).is_err());
    assert_eq!(FiniteF64::new(f64::INFINITY), None);
}

fn arb_column() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z_][A-Za-z0-9_]{0,8}",
        "[^\\x00]{1,8}",
        Just("and".to_owned()),
        Just("date".to_owned()),
        Just("NOT".to_owned()),
        Just("a\"b".to_owned()),
        Just("x.y".to_owned()),
    ]
}

fn arb_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        "[^\\x00]{0,12}".prop_map(Literal::Str),
        any::<i64>().prop_map(Literal::Int),
        (-1e12f64..1e12)
            .prop_filter_map("finite", FiniteF64::new)
            .prop_map(Literal::Float),
        any::<bool>().prop_map(Literal::Bool),
        (1900i32..2100, 1u32..13, 1u32..29)
            .prop_map(|(y, m, d)| Literal::Date(format!("{y:04}-{m:02}-{d:02}"))),
        (
            1900i32..2100,
            0u32..24,
            0u32..60,
            prop::option::of(0u32..1000)
        )
            .prop_map(|(y, h, m, frac)| {
                let frac = frac.map(|f| format!(".{f:03}")).unwrap_or_default();
                Literal::Timestamp(format!("{y:04}-03-01 {h:02}:{m:02}:07{frac}"))
            }),
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

fn arb_atom() -> impl Strategy<Value = Expr> {
    prop_oneof![
        (arb_column(), arb_op(), arb_literal()).prop_map(|(column, op, value)| Expr::Compare {
            column,
            op,
            value
        }),
        (
            arb_column(),
            prop::collection::vec(arb_literal(), 1..5),
            any::<bool>()
        )
            .prop_map(|(column, values, negated)| Expr::InList {
                column,
                values,
                negated
            }),
        (arb_column(), arb_literal(), arb_literal(), any::<bool>()).prop_map(
            |(column, low, high, negated)| Expr::Between {
                column,
                low,
                high,
                negated
            }
        ),
        (arb_column(), any::<bool>())
            .prop_map(|(column, negated)| Expr::IsNull { column, negated }),
        (arb_column(), "[^\\x00]{0,8}", any::<bool>(), any::<bool>()).prop_map(
            |(column, pattern, negated, case_insensitive)| Expr::Like {
                column,
                pattern,
                negated,
                case_insensitive
            }
        ),
    ]
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    arb_atom().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Expr::Or),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

proptest! {
    #[test]
    fn canonical_text_round_trips(expr in arb_expr()) {
        let filter = Filter::from_expr(expr).unwrap();
        let text = filter.to_string();
        let again = Filter::parse(&text)
            .unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"));
        prop_assert_eq!(&again, &filter);
        prop_assert_eq!(again.to_string(), text);
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
    fn parse_of_filter_like_text_is_stable(
        text in "([a-z\"' ()]{0,3}(=|<>|!=|<|<=|>|>=| AND | OR |NOT | IN \\(| BETWEEN | IS NULL\
                 | LIKE |DATE |-|[0-9]|\\.|'|true|,){0,3}){0,6}"
    ) {
        if let Ok(filter) = Filter::parse(&text) {
            let canonical = filter.to_string();
            let again = Filter::parse(&canonical)
                .unwrap_or_else(|e| panic!("{canonical:?} from {text:?}: {e}"));
            prop_assert_eq!(&again, &filter);
            prop_assert_eq!(again.to_string(), canonical);
        }
    }
}

#[test]
fn tokens_no_filter_uses_are_refused_before_the_parser_backtracks_over_them() {
    // Found by the `filter` fuzz target: subscripts and field accesses that sqlparser's
    // expression parser took more than four minutes over (370 bytes).
    let text = include_str!("../../../fuzz/corpus/filter/sqlparser-backtracking-subscripts");
    assert!(text.len() < 400);
    match err(text) {
        FilterError::Unsupported { construct, .. } => assert_eq!(construct, "`[`"),
        other => panic!("expected `[` to be refused, got {other:?}"),
    }
    for (text, construct) in [
        ("a[1] = 2", "`[`"),
        ("a = {'x': 1}", "`{`"),
        ("a::int = 1", "the operator `::`"),
        ("a = $1", "the placeholder `$1`"),
        ("a = N'x'", "the literal N'x'"),
        ("a ~ 'x'", "the operator `~`"),
    ] {
        match err(text) {
            FilterError::Unsupported { construct: c, .. } => assert_eq!(c, construct, "{text}"),
            other => panic!("{text}: expected Unsupported, got {other:?}"),
        }
    }
    // Brackets and the like inside quotes are text, not tokens.
    Filter::parse("\"a[1]\" = '{x}: [y]'").unwrap();
}

#[test]
fn nesting_that_makes_the_parser_backtrack_is_refused_within_a_budget() {
    // `NOT (` nested around an error doubled sqlparser's work per level: 30 levels would
    // take it hours. The budget on expressions tried ends it.
    for text in [
        "NOT (".repeat(30),
        format!("{}a = {}", "NOT (".repeat(30), ")".repeat(30)),
    ] {
        assert_eq!(
            err(&text),
            FilterError::TooComplex {
                max: super::parse::MAX_PREFIXES_TRIED
            },
            "{text}"
        );
    }
    // Found by the `filter` fuzz target: field accesses the parser backtracked over.
    let text = include_bytes!("../../../fuzz/corpus/filter/sqlparser-backtracking-field-access");
    assert_eq!(
        err(std::str::from_utf8(text).unwrap()),
        FilterError::TooComplex {
            max: super::parse::MAX_PREFIXES_TRIED
        }
    );
    // What the bounds allow stays well within the budget: the deepest nesting, and the
    // longest IN list.
    let deep = format!(
        "{}a = 1{}",
        "NOT (".repeat(MAX_DEPTH / 2 - 1),
        ")".repeat(MAX_DEPTH / 2 - 1)
    );
    Filter::parse(&deep).unwrap();
    let values: Vec<String> = (0..MAX_IN_LIST).map(|i| i.to_string()).collect();
    Filter::parse(&format!("a IN ({})", values.join(", "))).unwrap();
}
