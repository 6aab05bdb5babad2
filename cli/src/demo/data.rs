//! Seeded, realistic data for the demo's e-commerce domains, written as Arrow IPC files
//! batch by batch.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// Rows per written batch.
const BATCH_ROWS: usize = 32 * 1024;
/// 2026-01-01 in days since the epoch.
const DAY0: i32 = 20454;
/// 2026-01-01T00:00:00Z in ms.
const TS0: i64 = DAY0 as i64 * 86_400_000;

const REGIONS: [&str; 4] = ["EU", "US", "APAC", "LATAM"];
const COUNTRIES: [(&str, &str); 8] = [
    ("DE", "EU"),
    ("FR", "EU"),
    ("ES", "EU"),
    ("US", "US"),
    ("CA", "US"),
    ("JP", "APAC"),
    ("IN", "APAC"),
    ("BR", "LATAM"),
];
const CATEGORIES: [&str; 6] = [
    "books",
    "electronics",
    "garden",
    "toys",
    "fashion",
    "grocery",
];
const FIRST: [&str; 8] = [
    "Ana", "Ben", "Chloé", "Dmitri", "Emeka", "Fatima", "Günter", "Hiro",
];
const LAST: [&str; 8] = [
    "Silva", "Okafor", "Müller", "Tanaka", "Dubois", "Smith", "Nair", "García",
];
const PAGES: [&str; 6] = ["/", "/search", "/product", "/cart", "/checkout", "/account"];
const CHANNELS: [&str; 4] = ["web", "app", "email", "call-center"];
const STATUSES: [&str; 5] = ["placed", "paid", "shipped", "delivered", "returned"];
const SEGMENTS: [&str; 4] = ["loyal", "bargain-hunter", "new", "at-risk"];

/// One demo data product: owner domain, name, policy, generated rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DemoProduct {
    /// Owning domain.
    pub(crate) domain: &'static str,
    /// Product name.
    pub(crate) name: &'static str,
    /// Title.
    pub(crate) title: &'static str,
    /// `auto` or `manual`.
    pub(crate) approval: &'static str,
    /// Allowed purposes (empty: any).
    pub(crate) purposes: &'static [&'static str],
    /// Restricted columns.
    pub(crate) restricted: &'static [&'static str],
    /// Columns classified as personal data (`pii`).
    pub(crate) pii: &'static [&'static str],
    /// Rows at full size.
    pub(crate) rows: usize,
}

/// The seed document's data products.
pub(crate) const PRODUCTS: [DemoProduct; 8] = [
    DemoProduct {
        domain: "product",
        name: "product-sales",
        title: "Daily product sales by region",
        approval: "auto",
        purposes: &[],
        restricted: &[],
        pii: &[],
        rows: 200_000,
    },
    DemoProduct {
        domain: "customer",
        name: "customer-data",
        title: "Customer master data",
        approval: "manual",
        purposes: &["churn-analysis", "support"],
        restricted: &["name", "email"],
        pii: &["name", "email"],
        rows: 50_000,
    },
    DemoProduct {
        domain: "customer",
        name: "customer-segmentation",
        title: "Customer segments and lifetime value",
        approval: "manual",
        purposes: &["churn-analysis", "marketing"],
        restricted: &[],
        pii: &[],
        rows: 50_000,
    },
    DemoProduct {
        domain: "customer",
        name: "customer-interactions",
        title: "Customer contacts across channels",
        approval: "auto",
        purposes: &[],
        restricted: &[],
        pii: &[],
        rows: 150_000,
    },
    DemoProduct {
        domain: "e-shop",
        name: "shopping-cart",
        title: "Shopping-cart events",
        approval: "auto",
        purposes: &[],
        restricted: &[],
        pii: &[],
        rows: 100_000,
    },
    DemoProduct {
        domain: "e-shop",
        name: "page-navigation",
        title: "Page navigation sessions",
        approval: "auto",
        purposes: &[],
        restricted: &[],
        pii: &["session_id"],
        rows: 150_000,
    },
    DemoProduct {
        domain: "order-processing",
        name: "order-processing-update",
        title: "Order status updates",
        approval: "auto",
        purposes: &["churn-analysis", "finance"],
        restricted: &[],
        pii: &[],
        rows: 200_000,
    },
    DemoProduct {
        domain: "recommendation",
        name: "recommendation",
        title: "Product recommendations per customer",
        approval: "auto",
        purposes: &[],
        restricted: &[],
        pii: &[],
        rows: 100_000,
    },
];

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// Column builders for one batch, filled by a product-specific row function.
enum Col {
    I(Int64Builder),
    F(Float64Builder),
    S(StringBuilder),
    B(BooleanBuilder),
    D(Date32Builder),
    T(TimestampMillisecondBuilder),
}

impl Col {
    fn new(dt: &DataType) -> Self {
        match dt {
            DataType::Int64 => Col::I(Int64Builder::new()),
            DataType::Float64 => Col::F(Float64Builder::new()),
            DataType::Boolean => Col::B(BooleanBuilder::new()),
            DataType::Date32 => Col::D(Date32Builder::new()),
            DataType::Timestamp(_, _) => Col::T(TimestampMillisecondBuilder::new()),
            _ => Col::S(StringBuilder::new()),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::I(b) => Arc::new(b.finish()),
            Col::F(b) => Arc::new(b.finish()),
            Col::S(b) => Arc::new(b.finish()),
            Col::B(b) => Arc::new(b.finish()),
            Col::D(b) => Arc::new(b.finish()),
            Col::T(b) => Arc::new(b.finish()),
        }
    }
}

/// A value for one cell.
enum V {
    I(i64),
    F(f64),
    S(String),
    B(bool),
    D(i32),
    T(i64),
    Null,
}

fn push(col: &mut Col, v: V) {
    match (col, v) {
        (Col::I(b), V::I(x)) => b.append_value(x),
        (Col::F(b), V::F(x)) => b.append_value(x),
        (Col::S(b), V::S(x)) => b.append_value(x),
        (Col::B(b), V::B(x)) => b.append_value(x),
        (Col::D(b), V::D(x)) => b.append_value(x),
        (Col::T(b), V::T(x)) => b.append_value(x),
        (Col::I(b), V::Null) => b.append_null(),
        (Col::F(b), V::Null) => b.append_null(),
        (Col::S(b), V::Null) => b.append_null(),
        (Col::B(b), V::Null) => b.append_null(),
        (Col::D(b), V::Null) => b.append_null(),
        (Col::T(b), V::Null) => b.append_null(),
        _ => unreachable!("generator and schema agree"),
    }
}

fn field(name: &str, dt: DataType, nullable: bool) -> Field {
    Field::new(name, dt, nullable)
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn schema_of(product: &str) -> SchemaRef {
    use DataType::*;
    let fields = match product {
        "product-sales" => vec![
            field("sale_id", Int64, false),
            field("product_id", Int64, false),
            field("category", Utf8, false),
            field("region", Utf8, false),
            field("units", Int64, false),
            field("unit_price", Float64, false),
            field("revenue", Float64, false),
            field("sale_date", Date32, false),
        ],
        "customer-data" => vec![
            field("customer_id", Int64, false),
            field("name", Utf8, false),
            field("email", Utf8, false),
            field("country", Utf8, false),
            field("region", Utf8, false),
            field("signup_date", Date32, false),
            field("age", Int64, true),
        ],
        "customer-segmentation" => vec![
            field("customer_id", Int64, false),
            field("segment", Utf8, false),
            field("region", Utf8, false),
            field("lifetime_value", Float64, false),
            field("churn_risk", Float64, false),
        ],
        "customer-interactions" => vec![
            field("interaction_id", Int64, false),
            field("customer_id", Int64, false),
            field("channel", Utf8, false),
            field("satisfaction", Int64, true),
            field("occurred_at", ts(), false),
        ],
        "shopping-cart" => vec![
            field("cart_id", Int64, false),
            field("customer_id", Int64, false),
            field("product_id", Int64, false),
            field("quantity", Int64, false),
            field("abandoned", Boolean, false),
            field("added_at", ts(), false),
        ],
        "page-navigation" => vec![
            field("session_id", Utf8, false),
            field("customer_id", Int64, true),
            field("page", Utf8, false),
            field("dwell_ms", Int64, false),
            field("occurred_at", ts(), false),
        ],
        "order-processing-update" => vec![
            field("order_id", Int64, false),
            field("customer_id", Int64, false),
            field("region", Utf8, false),
            field("amount", Float64, false),
            field("status", Utf8, false),
            field("updated_at", ts(), false),
        ],
        "recommendation" => vec![
            field("customer_id", Int64, false),
            field("product_id", Int64, false),
            field("score", Float64, false),
            field("model_version", Utf8, false),
        ],
        other => unreachable!("no generator for {other}"),
    };
    Arc::new(Schema::new(fields))
}

fn row(product: &str, i: usize, customers: usize, rng: &mut ChaCha8Rng) -> Vec<V> {
    let i = i as i64;
    let customer = rng.random_range(1..=customers as i64);
    let when = TS0 + rng.random_range(0..90 * 86_400_000i64);
    match product {
        "product-sales" => {
            let units = rng.random_range(1..20i64);
            let price = (rng.random_range(199..19_999i64) as f64) / 100.0;
            vec![
                V::I(i + 1),
                V::I(rng.random_range(1..5_000)),
                V::S(pick(rng, &CATEGORIES).into()),
                V::S(pick(rng, &REGIONS).into()),
                V::I(units),
                V::F(price),
                V::F((units as f64 * price * 100.0).round() / 100.0),
                V::D(DAY0 + rng.random_range(0..90)),
            ]
        }
        "customer-data" => {
            let (country, region) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
            let first = pick(rng, &FIRST);
            let last = pick(rng, &LAST);
            vec![
                V::I(i + 1),
                V::S(format!("{first} {last}")),
                V::S(format!(
                    "{}.{}{}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i
                )),
                V::S(country.into()),
                V::S(region.into()),
                V::D(DAY0 - rng.random_range(0..2000)),
                if rng.random_bool(0.1) {
                    V::Null
                } else {
                    V::I(rng.random_range(18..90))
                },
            ]
        }
        "customer-segmentation" => vec![
            V::I(i + 1),
            V::S(pick(rng, &SEGMENTS).into()),
            V::S(pick(rng, &REGIONS).into()),
            V::F((rng.random_range(0..500_000i64) as f64) / 100.0),
            V::F((rng.random_range(0..1000i64) as f64) / 1000.0),
        ],
        "customer-interactions" => vec![
            V::I(i + 1),
            V::I(customer),
            V::S(pick(rng, &CHANNELS).into()),
            if rng.random_bool(0.3) {
                V::Null
            } else {
                V::I(rng.random_range(1..=5))
            },
            V::T(when),
        ],
        "shopping-cart" => vec![
            V::I(i + 1),
            V::I(customer),
            V::I(rng.random_range(1..5_000)),
            V::I(rng.random_range(1..6)),
            V::B(rng.random_bool(0.35)),
            V::T(when),
        ],
        "page-navigation" => vec![
            V::S(format!("s-{:08x}", rng.random::<u32>())),
            if rng.random_bool(0.2) {
                V::Null
            } else {
                V::I(customer)
            },
            V::S(pick(rng, &PAGES).into()),
            V::I(rng.random_range(200..120_000)),
            V::T(when),
        ],
        "order-processing-update" => vec![
            V::I(i + 1),
            V::I(customer),
            V::S(pick(rng, &REGIONS).into()),
            V::F((rng.random_range(500..50_000i64) as f64) / 100.0),
            V::S(pick(rng, &STATUSES).into()),
            V::T(when),
        ],
        "recommendation" => vec![
            V::I(customer),
            V::I(rng.random_range(1..5_000)),
            V::F((rng.random_range(0..1000i64) as f64) / 1000.0),
            V::S("als-2026.11".into()),
        ],
        other => unreachable!("no generator for {other}"),
    }
}

/// Writes `rows` rows of `product` to `path` as an Arrow IPC file, from a fixed seed.
pub(crate) fn generate(
    product: &DemoProduct,
    rows: usize,
    customers: usize,
    path: &Path,
) -> anyhow::Result<()> {
    let schema = schema_of(product.name);
    let file = File::create(path).with_context(|| format!("cannot create `{}`", path.display()))?;
    let mut writer = FileWriter::try_new(file, &schema)?;
    // One seed per product, so each file is reproducible on its own.
    let seed = blake3::hash(product.name.as_bytes());
    let mut rng = ChaCha8Rng::from_seed(*seed.as_bytes());
    let mut done = 0;
    while done < rows {
        let n = BATCH_ROWS.min(rows - done);
        let mut cols: Vec<Col> = schema
            .fields()
            .iter()
            .map(|f| Col::new(f.data_type()))
            .collect();
        for i in done..done + n {
            for (col, v) in cols
                .iter_mut()
                .zip(row(product.name, i, customers, &mut rng))
            {
                push(col, v);
            }
        }
        let arrays: Vec<ArrayRef> = cols.iter_mut().map(Col::finish).collect();
        writer.write(&RecordBatch::try_new(schema.clone(), arrays)?)?;
        done += n;
    }
    writer.finish()?;
    Ok(())
}
