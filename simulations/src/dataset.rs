//! Seeded order data for simulated products: written as an Arrow IPC file for a publish, and
//! evaluated row by row against a contract's filter to know how many rows a fetch must
//! return (an oracle independent of the node's Arrow filter kernels).

use std::cmp::Ordering;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use mesh_protocol::filter::{Expr, parse_iso_date};
use mesh_protocol::{CompareOp, Filter, Literal};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// Rows per written record batch.
const BATCH_ROWS: usize = 8 * 1024;
/// 2026-01-01 in days since the epoch.
const DAY0: i32 = 20_454;
/// Regions, uniformly drawn.
pub const REGIONS: [&str; 4] = ["EU", "US", "APAC", "LATAM"];

/// The columns, in order: `order_id`, `customer_id`, `region`, `sku`, `quantity`,
/// `amount_eur`, `express`, `email` (personal data, a natural restricted column), `day`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("sku", DataType::Utf8, false),
        Field::new("quantity", DataType::Int64, false),
        Field::new("amount_eur", DataType::Float64, false),
        Field::new("express", DataType::Boolean, false),
        Field::new("email", DataType::Utf8, false),
        Field::new("day", DataType::Date32, false),
    ]))
}

/// One generated row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// 1, 2, 3, ...
    pub order_id: i64,
    /// 1000–5999.
    pub customer_id: i64,
    /// One of [`REGIONS`].
    pub region: &'static str,
    /// `sku-0` to `sku-996`.
    pub sku: String,
    /// 1–7.
    pub quantity: i64,
    /// 5.00–404.99.
    pub amount_eur: f64,
    /// One order in four.
    pub express: bool,
    /// Derived from the customer.
    pub email: String,
    /// Days since the epoch, in the first quarter of 2026.
    pub day: i32,
}

/// A cell, typed, for filter evaluation.
#[derive(Debug)]
enum Cell<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bool(bool),
    Date(i32),
}

impl Row {
    fn cell(&self, column: &str) -> Option<Cell<'_>> {
        Some(match column {
            "order_id" => Cell::Int(self.order_id),
            "customer_id" => Cell::Int(self.customer_id),
            "region" => Cell::Str(self.region),
            "sku" => Cell::Str(&self.sku),
            "quantity" => Cell::Int(self.quantity),
            "amount_eur" => Cell::Float(self.amount_eur),
            "express" => Cell::Bool(self.express),
            "email" => Cell::Str(&self.email),
            "day" => Cell::Date(self.day),
            _ => return None,
        })
    }

    /// Whether the row passes `filter`; an error names a condition this oracle cannot
    /// evaluate (unknown column, a literal of the wrong type, or `LIKE`). The data has no
    /// nulls, so two-valued logic is exact here.
    pub fn matches(&self, filter: &Filter) -> Result<bool, String> {
        self.eval(filter.expr())
    }

    fn eval(&self, expr: &Expr) -> Result<bool, String> {
        Ok(match expr {
            // Every operand is evaluated, so that an error is never hidden by a short cut.
            Expr::And(operands) => operands
                .iter()
                .map(|e| self.eval(e))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .all(|b| b),
            Expr::Or(operands) => operands
                .iter()
                .map(|e| self.eval(e))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .any(|b| b),
            Expr::Not(operand) => !self.eval(operand)?,
            Expr::Compare { column, op, value } => self.compare(column, *op, value)?,
            Expr::InList {
                column,
                values,
                negated,
            } => {
                let mut any = false;
                for value in values {
                    any |= self.compare(column, CompareOp::Eq, value)?;
                }
                any != *negated
            }
            Expr::Between {
                column,
                low,
                high,
                negated,
            } => {
                let within = self.compare(column, CompareOp::GtEq, low)?
                    & self.compare(column, CompareOp::LtEq, high)?;
                within != *negated
            }
            Expr::IsNull { column, negated } => {
                self.cell(column)
                    .ok_or_else(|| format!("unknown column `{column}`"))?;
                *negated
            }
            Expr::Like { column, .. } => {
                return Err(format!(
                    "this oracle does not evaluate LIKE (on `{column}`)"
                ));
            }
        })
    }

    fn compare(&self, column: &str, op: CompareOp, value: &Literal) -> Result<bool, String> {
        let cell = self
            .cell(column)
            .ok_or_else(|| format!("unknown column `{column}`"))?;
        let ordering = match (&cell, value) {
            (Cell::Int(a), Literal::Int(b)) => a.cmp(b),
            (Cell::Float(a), Literal::Int(b)) => a.total_cmp(&(*b as f64)),
            (Cell::Float(a), Literal::Float(b)) => a.total_cmp(&b.get()),
            (Cell::Str(a), Literal::Str(b)) => (*a).cmp(b.as_str()),
            (Cell::Bool(a), Literal::Bool(b)) if !op.is_ordering() => a.cmp(b),
            (Cell::Date(a), Literal::Str(b) | Literal::Date(b)) => {
                let days = parse_iso_date(b).ok_or_else(|| format!("`{b}` is no ISO date"))?;
                i64::from(*a).cmp(&days)
            }
            (cell, literal) => {
                return Err(format!(
                    "cannot compare `{column}` ({cell:?}) with {literal}"
                ));
            }
        };
        Ok(match op {
            CompareOp::Eq => ordering == Ordering::Equal,
            CompareOp::NotEq => ordering != Ordering::Equal,
            CompareOp::Lt => ordering == Ordering::Less,
            CompareOp::LtEq => ordering != Ordering::Greater,
            CompareOp::Gt => ordering == Ordering::Greater,
            CompareOp::GtEq => ordering != Ordering::Less,
        })
    }
}

/// The `rows` rows of the data set seeded by `seed`.
pub fn rows(rows: usize, seed: u64) -> impl Iterator<Item = Row> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows as i64).map(move |i| {
        let customer_id = rng.random_range(1000..6000);
        Row {
            order_id: i + 1,
            customer_id,
            region: REGIONS[rng.random_range(0..REGIONS.len())],
            sku: format!("sku-{}", rng.random_range(0..997)),
            quantity: rng.random_range(1..=7),
            amount_eur: f64::from(rng.random_range(500..40_500)) / 100.0,
            express: rng.random_bool(0.25),
            email: format!("customer{customer_id}@example.com"),
            day: DAY0 + rng.random_range(0..90),
        }
    })
}

/// How many of the rows pass `filter` (all of them without one).
pub fn count_matching(rows_n: usize, seed: u64, filter: Option<&Filter>) -> Result<u64, String> {
    let Some(filter) = filter else {
        return Ok(rows_n as u64);
    };
    let mut n = 0;
    for row in rows(rows_n, seed) {
        if row.matches(filter)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Writes the data set as an Arrow IPC file.
pub fn write_arrow(path: &Path, rows_n: usize, seed: u64) -> anyhow::Result<()> {
    let schema = schema();
    let mut writer = FileWriter::try_new(File::create(path)?, &schema)?;
    let mut all = rows(rows_n, seed).peekable();
    while all.peek().is_some() {
        let chunk: Vec<Row> = all.by_ref().take(BATCH_ROWS).collect();
        writer.write(&batch(&schema, &chunk)?)?;
    }
    writer.finish()?;
    Ok(())
}

fn batch(schema: &SchemaRef, rows: &[Row]) -> arrow::error::Result<RecordBatch> {
    let mut order_id = Int64Builder::with_capacity(rows.len());
    let mut customer_id = Int64Builder::with_capacity(rows.len());
    let mut region = StringBuilder::new();
    let mut sku = StringBuilder::new();
    let mut quantity = Int64Builder::with_capacity(rows.len());
    let mut amount = Float64Builder::with_capacity(rows.len());
    let mut express = BooleanBuilder::with_capacity(rows.len());
    let mut email = StringBuilder::new();
    let mut day = Date32Builder::with_capacity(rows.len());
    for r in rows {
        order_id.append_value(r.order_id);
        customer_id.append_value(r.customer_id);
        region.append_value(r.region);
        sku.append_value(&r.sku);
        quantity.append_value(r.quantity);
        amount.append_value(r.amount_eur);
        express.append_value(r.express);
        email.append_value(&r.email);
        day.append_value(r.day);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(order_id.finish()),
        Arc::new(customer_id.finish()),
        Arc::new(region.finish()),
        Arc::new(sku.finish()),
        Arc::new(quantity.finish()),
        Arc::new(amount.finish()),
        Arc::new(express.finish()),
        Arc::new(email.finish()),
        Arc::new(day.finish()),
    ];
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_filterable() {
        let a: Vec<Row> = rows(50, 9).collect();
        let b: Vec<Row> = rows(50, 9).collect();
        assert_eq!(a, b);
        assert_ne!(a, rows(50, 10).collect::<Vec<_>>());
        let f =
            Filter::parse("region = 'EU' AND amount_eur > 100 AND day >= '2026-02-01'").unwrap();
        let n = count_matching(2000, 9, Some(&f)).unwrap();
        let by_hand = rows(2000, 9)
            .filter(|r| r.region == "EU" && r.amount_eur > 100.0 && r.day >= DAY0 + 31)
            .count() as u64;
        assert_eq!(n, by_hand);
        assert!(n > 0 && n < 2000, "{n}");
        let f = Filter::parse(
            "(region IN ('EU', 'US') OR NOT (quantity BETWEEN 2 AND 7)) \
             AND day < DATE '2026-02-01' AND email IS NOT NULL",
        )
        .unwrap();
        let by_hand = rows(2000, 9)
            .filter(|r| {
                (["EU", "US"].contains(&r.region) || !(2..=7).contains(&r.quantity))
                    && r.day < DAY0 + 31
            })
            .count() as u64;
        assert_eq!(count_matching(2000, 9, Some(&f)).unwrap(), by_hand);
        assert_eq!(count_matching(7, 1, None).unwrap(), 7);
        let bad = Filter::parse("express < true").unwrap();
        assert!(count_matching(5, 1, Some(&bad)).is_err());
    }

    #[test]
    fn writes_an_arrow_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.arrow");
        write_arrow(&path, 10_000, 3).unwrap();
        let reader =
            arrow::ipc::reader::FileReader::try_new(File::open(&path).unwrap(), None).unwrap();
        assert_eq!(reader.schema(), schema());
        let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(n, 10_000);
    }
}
