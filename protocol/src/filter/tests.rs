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
    // Numbers of more digits than any column holds.
    let too_long = "out of range: a number in a filter has at most 76 digits before and after \
                    its point, as many as the widest decimal column holds";
    for text in [
        format!("a = 1{}", "0".repeat(76)),
        format!("a = -1{}", "0".repeat(76)),
        format!("a = 1{}.5", "0".repeat(400)),
        format!("a = 0.{}1", "3".repeat(76)),
    ] {
        match err(&text) {
            FilterError::BadNumber { reason, .. } => assert_eq!(reason, too_long, "{text}"),
            other => panic!("{text}: expected BadNumber, got {other:?}"),
        }
    }
    assert!(matches!(
        err(&format!("a = 1{}.0", "0".repeat(400))),
        FilterError::BadNumber { .. }
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
            "1.125 has more fraction digits than the scale 2 of the type; the nearest values \
             it holds are 1.12 and 1.13",
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

/// The reason `text` is refused by `check` against `columns`, or `Ok` when it is accepted.
fn check_with(columns: &[ColumnSchema], text: &str) -> Result<(), String> {
    match Filter::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .check(columns)
    {
        Ok(()) => Ok(()),
        Err(FilterError::Incompatible { reason, .. }) => Err(reason),
        Err(other) => panic!("{text}: expected Incompatible, got {other:?}"),
    }
}

/// A decimal column compares with a number only when its type holds the number exactly: a
/// fraction finer than the scale, or (negative scale) a number that is not a multiple of
/// 10^-scale, is refused with the nearest values the type holds, whatever the operator.
#[test]
fn decimal_columns_take_only_numbers_their_type_holds_exactly() {
    let columns = [
        col("dn", "Decimal128(5, -2)"),
        col("cost", "Decimal128(10, 2)"),
        col("tiny", "Decimal128(3, 2)"),
        col("wide", "Decimal128(38, 10)"),
        col("d256", "Decimal256(40, 0)"),
        col("dict", "Dictionary(Int32, Decimal128(5, -2))"),
    ];
    for text in [
        "dn = 100",
        "dn = -300",
        "dn = 0",
        "dn = 100.0",
        "dn IN (0, 200, 9999900)",
        "dn < 200 AND dn > -9999900",
        "dn BETWEEN -100 AND 300",
        "dict <> 200",
        "cost = 1.23",
        "cost = 12345678.99",
        "cost > -0.5",
        "tiny = 9.99",
        "wide = 1234567890123456.78",
        "wide = 1234567890123456789012345678.0123456789",
        "d256 > 12345678901234567890",
        "d256 = -9999999999999999999999999999999999999999",
    ] {
        assert_eq!(check_with(&columns, text), Ok(()), "{text}");
    }
    let off_grid = |v: &str, low: &str, high: &str| {
        format!(
            "{v} is not a multiple of 100, as every value of the type is (scale -2); the \
             nearest values it holds are {low} and {high}"
        )
    };
    for (text, reason) in [
        ("dn = 150", off_grid("150", "100", "200")),
        ("dn < 150", off_grid("150", "100", "200")),
        ("dn <> 150", off_grid("150", "100", "200")),
        ("dn >= -150", off_grid("-150", "-200", "-100")),
        ("dn = 1.5", off_grid("1.5", "0", "100")),
        ("dn = -0.5", off_grid("-0.5", "-100", "0")),
        ("dn IN (100, 250)", off_grid("250", "200", "300")),
        ("dn BETWEEN 100 AND 150", off_grid("150", "100", "200")),
        ("dict = 150", off_grid("150", "100", "200")),
        (
            "dn = 10000000",
            "10000000 has more than the 7 integer digits the type allows".to_owned(),
        ),
        (
            "cost = 1.234",
            "1.234 has more fraction digits than the scale 2 of the type; the nearest values \
             it holds are 1.23 and 1.24"
                .to_owned(),
        ),
        (
            "cost < -0.001",
            "-0.001 has more fraction digits than the scale 2 of the type; the nearest values \
             it holds are -0.01 and 0"
                .to_owned(),
        ),
        (
            "tiny = 9.999",
            "9.999 has more fraction digits than the scale 2 of the type; the nearest value \
             it holds is 9.99"
                .to_owned(),
        ),
        (
            "wide = 1234567890123456.123456789012",
            "1234567890123456.123456789012 has more fraction digits than the scale 10 of the \
             type; the nearest values it holds are 1234567890123456.1234567890 and \
             1234567890123456.1234567891"
                .to_owned(),
        ),
        (
            "d256 = 1.5",
            "1.5 has more fraction digits than the scale 0 of the type; the nearest values it \
             holds are 1 and 2"
                .to_owned(),
        ),
        (
            "d256 > 12345678901234567890123456789012345678901",
            "12345678901234567890123456789012345678901 has more than the 40 integer digits the \
             type allows"
                .to_owned(),
        ),
    ] {
        assert_eq!(check_with(&columns, text), Err(reason), "{text}");
    }
}

/// Integers beyond `i64` are read (up to 76 digits) and compared with the columns that hold
/// them; digits an `f64` does not keep are kept, not rounded.
#[test]
fn numbers_beyond_i64_and_f64_are_kept_exactly() {
    let columns = [
        col("u", "UInt64"),
        col("i", "Int64"),
        col("f", "Float64"),
        col("d256", "Decimal256(76, 0)"),
        col("wide", "Decimal128(38, 10)"),
    ];
    let max76 = "9".repeat(76);
    for text in [
        "u = 18446744073709551615",
        "u BETWEEN 9223372036854775808 AND 18446744073709551615",
        "u IN (0, 18446744073709551614)",
        "i = -9223372036854775808",
        "f > 18446744073709551616",
        "f = 0.1000000000000000055511151231257827",
        &format!("d256 = {max76}"),
        &format!("d256 > -{max76}"),
        "wide = 0.1000000001",
    ] {
        assert_eq!(check_with(&columns, text), Ok(()), "{text}");
        // The canonical text keeps every digit.
        assert_eq!(canonical(text), text, "{text}");
    }
    assert_eq!(
        check_with(&columns, "u = 18446744073709551616"),
        Err(
            "18446744073709551616 is outside the range 0..=18446744073709551615 of the type".into()
        )
    );
    assert_eq!(
        check_with(&columns, "i > 9223372036854775808"),
        Err(
            "9223372036854775808 is outside the range -9223372036854775808..=9223372036854775807 \
             of the type"
                .into()
        )
    );
    assert_eq!(
        check_with(&columns, "u = 18446744073709551615.0"),
        Err("it cannot be compared with a decimal number (18446744073709551615.0)".into())
    );
    assert_eq!(
        check_with(&columns, "i = 0.1000000000000000055511151231257827"),
        Err("it cannot be compared with a decimal number \
             (0.1000000000000000055511151231257827)"
            .into())
    );
    // Digits an f64 keeps are still read as one; leading and trailing zeros are dropped.
    assert_eq!(canonical("f = 007.50"), "f = 7.5");
    assert_eq!(
        canonical("f = 12345678901234567890.0"),
        "f = 12345678901234567890.0"
    );
    assert_eq!(
        canonical("f = 0012345678901234567.890"),
        "f = 12345678901234567.89"
    );
    assert_eq!(
        canonical("u = 0018446744073709551615"),
        "u = 18446744073709551615"
    );
    assert_eq!(canonical("f = -0.0"), "f = -0.0");
    assert_eq!(
        parse("f = 12345678901234567.89"),
        parse("f = 12345678901234567.8900")
    );
    assert_ne!(
        parse("f = 12345678901234567.89"),
        parse("f = 12345678901234568.0")
    );
    assert_eq!(parse("f = 0.5"), cmp("f", CompareOp::Eq, float(0.5)));
    // The earlier language reads numbers the same way.
    assert_eq!(
        canonical("date >= 18446744073709551615 AND date < 0.1000000000000000055511151231257827"),
        "\"date\" >= 18446744073709551615 AND \"date\" < 0.1000000000000000055511151231257827"
    );
}

/// A timestamp column compares with a date or date-time only when its unit holds it exactly:
/// no finer fraction of a second, and within the range of an `i64` of the unit.
#[test]
fn timestamp_columns_take_only_instants_their_unit_holds() {
    let columns = [
        col("ts_s", "Timestamp(Second, None)"),
        col("ts_ms", "Timestamp(Millisecond, None)"),
        col("ts_ns", "Timestamp(Nanosecond, None)"),
        col("ts_tz", "Timestamp(Nanosecond, Some(\"+01:00\"))"),
        col("t", "Time32(Second)"),
    ];
    for text in [
        "ts_s = '2024-01-01 00:00:00'",
        "ts_s = '2024-01-01 00:00:00.000'",
        "ts_s >= TIMESTAMP '2024-01-01T00:00:01Z'",
        "ts_s < DATE '2024-01-01'",
        "ts_ms BETWEEN '2024-01-01 00:00:00.123' AND '2024-01-01 00:00:00.124000'",
        "ts_ns > '1677-09-21 00:12:43.145224192'",
        "ts_ns <= '2262-04-11 23:47:16.854775807'",
        "ts_ns >= DATE '1678-01-01'",
        "ts_ns = '2024-01-01 00:00:00.000000001'",
        "ts_tz < '2262-04-10 23:47:16'",
        "ts_tz < '2262-04-11 23:47:16.854775807Z'",
        "ts_tz > '1677-09-22 00:12:44'",
    ] {
        assert_eq!(check_with(&columns, text), Ok(()), "{text}");
    }
    let ns_range = "'1677-09-21 00:12:43.145224192' to '2262-04-11 23:47:16.854775807'";
    for (text, reason) in [
        (
            "ts_s = '2024-01-01 00:00:00.5'",
            "'2024-01-01 00:00:00.5' has a fraction of a second, which a column of whole \
             seconds cannot hold; the nearest values it holds are '2024-01-01 00:00:00' and \
             '2024-01-01 00:00:01'"
                .to_owned(),
        ),
        (
            "ts_s >= TIMESTAMP '2023-12-31 23:59:59.5'",
            "TIMESTAMP '2023-12-31 23:59:59.5' has a fraction of a second, which a column of \
             whole seconds cannot hold; the nearest values it holds are '2023-12-31 23:59:59' \
             and '2024-01-01 00:00:00'"
                .to_owned(),
        ),
        (
            "ts_s NOT BETWEEN '2024-01-01' AND '1969-12-31T23:59:59.25Z'",
            "'1969-12-31T23:59:59.25Z' has a fraction of a second, which a column of whole \
             seconds cannot hold; the nearest values it holds are '1969-12-31 23:59:59' and \
             '1970-01-01 00:00:00'"
                .to_owned(),
        ),
        (
            "ts_ms IN ('2024-01-01 00:00:00.1235')",
            "'2024-01-01 00:00:00.1235' has more than the 3 digits of a second the column \
             holds; the nearest values it holds are '2024-01-01 00:00:00.123' and \
             '2024-01-01 00:00:00.124'"
                .to_owned(),
        ),
        (
            "ts_ns >= '1677-01-01'",
            format!("'1677-01-01' is outside the range of a timestamp in nanoseconds, {ns_range}"),
        ),
        (
            "ts_ns < '2300-01-01'",
            format!("'2300-01-01' is outside the range of a timestamp in nanoseconds, {ns_range}"),
        ),
        (
            "ts_ns = DATE '2300-01-01'",
            format!(
                "DATE '2300-01-01' is outside the range of a timestamp in nanoseconds, \
                 {ns_range}"
            ),
        ),
        (
            "ts_ns > TIMESTAMP '1677-09-21 00:12:43.145224191'",
            format!(
                "TIMESTAMP '1677-09-21 00:12:43.145224191' is outside the range of a timestamp \
                 in nanoseconds, {ns_range}"
            ),
        ),
        (
            "ts_tz < '2262-04-11 00:00:00'",
            "'2262-04-11 00:00:00' is outside the range of a timestamp in nanoseconds, \
             '1677-09-22 00:12:43.145224192' to '2262-04-10 23:47:16.854775807' (for a time \
             without Z, which is read in the column's time zone)"
                .to_owned(),
        ),
    ] {
        assert_eq!(check_with(&columns, text), Err(reason), "{text}");
    }
    // Trailing zeros of a fraction are no finer a fraction, for times of day too.
    assert_eq!(check_with(&columns, "t = '12:34:56.000'"), Ok(()));
    assert_eq!(
        check_with(&columns, "ts_s = '2024-01-01T00:00:00.000000000Z'"),
        Ok(())
    );
}

proptest! {
    /// Any number of up to 76 digits before and after the point reads back from its
    /// canonical text as the same literal, and a decimal column of enough precision and
    /// scale holds it.
    #[test]
    fn long_numbers_round_trip_exactly(
        negative in any::<bool>(),
        int in "[0-9]{1,76}",
        frac in prop::option::of("[0-9]{1,76}"),
    ) {
        let sign = if negative { "-" } else { "" };
        let text = match &frac {
            Some(frac) => format!("x = {sign}{int}.{frac}"),
            None => format!("x = {sign}{int}"),
        };
        let filter = Filter::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let canonical = filter.to_string();
        let again = Filter::parse(&canonical).unwrap();
        prop_assert_eq!(&again, &filter);
        prop_assert_eq!(again.to_string(), canonical.clone());
        let serde = serde_json::to_string(&filter).unwrap();
        prop_assert_eq!(serde_json::from_str::<Filter>(&serde).unwrap(), filter.clone());
        // The value is unchanged: the canonical digits are the written ones, give or take
        // leading and trailing zeros (or, for a float, the shortest digits of the same f64).
        let Expr::Compare { value, .. } = filter.expr() else {
            panic!("{text}");
        };
        let normal = |t: &str| {
            let (sign, t) = t.strip_prefix('-').map_or(("", t), |t| ("-", t));
            let (i, f) = t.split_once('.').unwrap_or((t, ""));
            let (i, f) = (i.trim_start_matches('0'), f.trim_end_matches('0'));
            if i.is_empty() && f.is_empty() {
                "0".to_owned()
            } else {
                format!("{sign}{i}.{f}")
            }
        };
        let written = &text["x = ".len()..];
        let shown = value.to_string();
        let same_float = written.parse::<f64>().ok() == shown.parse::<f64>().ok();
        prop_assert!(
            normal(written) == normal(&shown) || (matches!(value, Literal::Float(_)) && same_float),
            "{} read as {}", written, shown
        );
        if normal(written) == normal(&shown) {
            let wide = [col("x", "Decimal256(76, 76)"), col("y", "Decimal256(76, 0)")];
            let frac_len = frac.as_deref().map_or(0, |f| f.trim_end_matches('0').len());
            let int_len = int.trim_start_matches('0').len();
            let fits = |precision: usize, scale: usize| {
                frac_len <= scale && int_len + scale <= precision
            };
            let checked = filter.check(&wide[..1]).is_ok();
            prop_assert_eq!(checked, fits(76, 76), "{}", text);
            let y = Filter::parse(&text.replacen('x', "y", 1)).unwrap();
            prop_assert_eq!(y.check(&wide[1..]).is_ok(), fits(76, 0), "{}", text);
        }
    }
}

/// An exact number decodes only from its canonical text, and only when no `Int` or `Float`
/// holds it: a number has one representation.
#[test]
fn exact_numbers_decode_only_from_their_canonical_text() {
    let decode = |text: &str| serde_json::from_str::<ExactNumber>(&format!("\"{text}\""));
    for text in [
        "18446744073709551615",
        "-9223372036854775809",
        "12345678901234567.89",
        "12345678901234567890.0",
    ] {
        let number = decode(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(number.as_str(), text);
        assert_eq!(
            serde_json::to_string(&number).unwrap(),
            format!("\"{text}\"")
        );
        assert_eq!(
            parse(&format!("x = {text}")),
            cmp("x", CompareOp::Eq, Literal::Exact(number))
        );
    }
    for text in [
        "5",
        "1.5",
        "9223372036854775807",
        "018446744073709551615",
        "12345678901234567.890",
        "+18446744073709551615",
        "1e30",
        "",
        "-",
        &"9".repeat(77),
    ] {
        assert!(decode(text).is_err(), "{text}");
    }
}
