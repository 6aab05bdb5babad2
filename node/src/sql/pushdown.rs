//! Which query filters travel to the provider.
//!
//! A DataFusion filter expression is unparsed to SQL text (`expr_to_sql`, with column
//! qualifiers removed), parsed as the filter language (`Filter::parse`, which bounds length
//! and depth) and type-checked against the granted columns (`Filter::check`). What passes
//! is sent in the fetch's narrowing; what does not stays with DataFusion. Pushed filters
//! are declared `Inexact`, so DataFusion applies them again on what arrives: a difference
//! between the two evaluations can only drop rows the provider already left out, never
//! add rows. So nothing is pushed whose meaning the filter language would change: a
//! decimal literal (the language reads a number with a fraction as a 64-bit float, which
//! holds about 15 significant digits, and the provider would then leave out rows the query
//! matches) stays with DataFusion.

use datafusion::common::Column;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::Expr;
use datafusion::sql::unparser::expr_to_sql;
use mesh_protocol::Filter;
use mesh_protocol::descriptor::ColumnSchema;
use mesh_protocol::filter::MAX_FILTER_LEN;

/// `expr` in the filter language, if it converts exactly and fits the `granted` columns.
pub(super) fn to_filter(expr: &Expr, granted: &[ColumnSchema]) -> Option<Filter> {
    let mut decimal = false;
    expr.apply(|e| {
        decimal |= matches!(
            e,
            Expr::Literal(
                ScalarValue::Decimal128(..) | ScalarValue::Decimal256(..),
                ..
            )
        );
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    if decimal {
        return None;
    }
    let unqualified = expr
        .clone()
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
                c.name,
            )))),
            other => Ok(Transformed::no(other)),
        })
        .ok()?
        .data;
    let text = expr_to_sql(&unqualified).ok()?.to_string();
    if text.len() > MAX_FILTER_LEN {
        return None;
    }
    let filter = Filter::parse(&text).ok()?;
    filter.check(granted).ok()?;
    // What is sent is the canonical text: it must parse back and still fit.
    let canonical = Filter::parse(&filter.to_string()).ok()?;
    canonical.check(granted).ok()?;
    Some(canonical)
}

/// The conjunction of the `filters` that convert, as long as it stays within what the
/// provider accepts (a filter left out is still applied locally).
pub(super) fn combine(filters: &[Expr], granted: &[ColumnSchema]) -> Option<Filter> {
    let mut combined: Option<Filter> = None;
    for filter in filters.iter().filter_map(|e| to_filter(e, granted)) {
        let next = match combined.clone() {
            None => filter,
            Some(so_far) => so_far.and(filter),
        };
        let text = next.to_string();
        let fits = text.len() <= MAX_FILTER_LEN
            && Filter::parse(&text).is_ok_and(|f| f.check(granted).is_ok());
        if fits {
            combined = Some(next);
        }
    }
    combined
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn granted() -> Vec<ColumnSchema> {
        let column = |name: &str, data_type: &str| ColumnSchema {
            name: name.into(),
            data_type: data_type.into(),
            nullable: true,
        };
        vec![column("region", "Utf8"), column("amount", "Float64")]
    }

    #[test]
    fn decimal_literals_stay_local() {
        let granted = vec![ColumnSchema {
            name: "cost".into(),
            data_type: "Decimal128(38, 2)".into(),
            nullable: true,
        }];
        // 1234567890123456.78: a float would read it as 1234567890123456.8, and the
        // provider would leave out the row that holds it.
        let exact = lit(ScalarValue::Decimal128(
            Some(123_456_789_012_345_678),
            38,
            2,
        ));
        assert!(to_filter(&col("cost").eq(exact.clone()), &granted).is_none());
        assert!(to_filter(&col("cost").lt(exact), &granted).is_none());
        assert!(
            combine(
                &[col("cost").gt(lit(ScalarValue::Decimal128(Some(5), 38, 2)))],
                &granted
            )
            .is_none()
        );
    }

    #[test]
    fn comparisons_convert() {
        let f = to_filter(&col("region").eq(lit("EU")), &granted()).unwrap();
        assert_eq!(f, Filter::parse("region = 'EU'").unwrap());
        let f = to_filter(&col("amount").gt(lit(5.5)), &granted()).unwrap();
        assert_eq!(f, Filter::parse("amount > 5.5").unwrap());
    }

    #[test]
    fn qualifiers_are_dropped() {
        let e = Expr::Column(Column::new(Some("sales/orders"), "region")).eq(lit("EU"));
        assert!(to_filter(&e, &granted()).is_some());
    }

    #[test]
    fn what_does_not_fit_stays_local() {
        // An ungranted column, a type mismatch, a function call.
        assert!(to_filter(&col("email").eq(lit("x")), &granted()).is_none());
        assert!(to_filter(&col("amount").eq(lit("x")), &granted()).is_none());
        let upper = datafusion::functions::string::expr_fn::upper(col("region"));
        assert!(to_filter(&upper.eq(lit("EU")), &granted()).is_none());
    }

    #[test]
    fn filters_are_combined_with_and() {
        let f = combine(
            &[
                col("region").eq(lit("EU")),
                col("email").eq(lit("x")),
                col("amount").gt_eq(lit(2.0)),
            ],
            &granted(),
        )
        .unwrap();
        assert_eq!(
            f,
            Filter::parse("region = 'EU'")
                .unwrap()
                .and(Filter::parse("amount >= 2.0").unwrap())
        );
        assert!(combine(&[col("email").eq(lit("x"))], &granted()).is_none());
    }
}
