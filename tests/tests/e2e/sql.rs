//! `meshnode sql` end to end: two domains' products queried by a third, checked against
//! DuckDB over the same CSV files; a column the agreement does not grant; projections and
//! filters pushed into the fetch (asserted from the transfer metrics); the cache.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_tests::{TestNode, python, wait_until, write_file};
use serde_json::Value;

/// Received bytes of completed fetches, as exported at `/metrics`.
const RECEIVED: &str = "meshnode_transfer_received_bytes_total";

/// `orders`: order_id, customer_id, region, amount (integer cents), email (restricted).
fn orders_csv(rows: usize) -> String {
    const REGIONS: [&str; 4] = ["EU", "US", "APAC", "LATAM"];
    let mut csv = String::from("order_id,customer_id,region,amount,email\n");
    for i in 0..rows {
        let _ = writeln!(
            csv,
            "{i},{},{},{},buyer{i}@example.com",
            i % 37,
            REGIONS[i % 4],
            (i * 7919) % 10_000
        );
    }
    csv
}

/// `customers`: customer_id, country, segment, phone (not asked for by the consumer).
fn customers_csv() -> String {
    const COUNTRIES: [&str; 5] = ["FR", "DE", "US", "JP", "BR"];
    let mut csv = String::from("customer_id,country,segment,phone\n");
    for i in 0..37 {
        let segment = if i % 3 == 0 { "pro" } else { "retail" };
        let _ = writeln!(csv, "{i},{},{segment},+33-{i:04}", COUNTRIES[i % 5]);
    }
    csv
}

/// Publishes `csv` as `name` on `node` (automatic approval for `analytics`); returns the
/// CSV file's path.
fn publish(node: &TestNode, name: &str, csv: &str, restricted: Option<&str>) -> PathBuf {
    let path = write_file(node.dir.parent().unwrap(), &format!("{name}.csv"), csv);
    let mut args = vec![
        "publish",
        name,
        "--from",
        path.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
    ];
    if let Some(r) = restricted {
        args.extend(["--restricted", r]);
    }
    let out = node.cli(&args);
    assert!(out.success, "publish {name} failed: {}", out.stderr);
    path
}

fn wait_for_product(node: &TestNode, product: &str) {
    wait_until(Duration::from_secs(30), || {
        node.version_of(product).is_some()
    })
    .unwrap_or_else(|| panic!("{} never saw {product}: {}", node.domain, node.log()));
}

/// `share request PRODUCT --purpose analytics --columns COLUMNS`, agreed at once; the id.
fn agree(consumer: &TestNode, product: &str, columns: &str) -> String {
    let v = consumer
        .cli(&[
            "share",
            "request",
            product,
            "--purpose",
            "analytics",
            "--columns",
            columns,
            "--json",
        ])
        .json();
    assert_eq!(v["state"], "agreed", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// `meshnode sql --json QUERY` on `node`: the rows.
fn sql_rows(node: &TestNode, query: &str) -> Vec<Value> {
    match node.cli(&["sql", "--json", query]).json() {
        Value::Array(rows) => rows,
        other => panic!("not an array of rows: {other}"),
    }
}

/// The Python of the repository's virtual environment (made by scripts/test), else the
/// `python3` on the path; the test fails, never skips, when DuckDB is missing.
fn python_bin() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs `query` in DuckDB with views `orders` and `customers` over the CSV files; the rows
/// as JSON objects.
fn duckdb_rows(orders: &Path, customers: &Path, query: &str) -> Vec<Value> {
    const SCRIPT: &str = "\
import json, sys
import duckdb
con = duckdb.connect()
q = lambda p: \"'\" + p.replace(\"'\", \"''\") + \"'\"
con.execute('CREATE VIEW orders AS SELECT * FROM read_csv_auto(' + q(sys.argv[1]) + ')')
con.execute('CREATE VIEW customers AS SELECT * FROM read_csv_auto(' + q(sys.argv[2]) + ')')
cur = con.execute(sys.argv[3])
names = [d[0] for d in cur.description]
print(json.dumps([dict(zip(names, row)) for row in cur.fetchall()]))
";
    let out = Command::new(python_bin())
        .arg("-c")
        .arg(SCRIPT)
        .arg(orders)
        .arg(customers)
        .arg(query)
        .output()
        .expect("run python (run the tests with scripts/test, which makes .venv)");
    assert!(
        out.status.success(),
        "DuckDB failed (is duckdb installed? scripts/test installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("DuckDB printed JSON") {
        Value::Array(rows) => rows,
        other => panic!("not an array: {other}"),
    }
}

/// Rows as sorted JSON texts (numbers compared as numbers: `3` and `3.0` are one value).
fn sorted(rows: &[Value]) -> Vec<String> {
    let normal = |v: &Value| -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = match v.as_f64() {
                            Some(x) if v.is_number() => Value::from(x),
                            _ => v.clone(),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    };
    let mut out: Vec<String> = rows.iter().map(|r| normal(r).to_string()).collect();
    out.sort();
    out
}

#[test]
fn join_and_aggregate_match_duckdb_and_ungranted_columns_are_named() {
    let sales = TestNode::start("sales", &[]);
    let orders = publish(&sales, "orders", &orders_csv(2_000), Some("email"));
    let customer = TestNode::start_joining("customer", &sales);
    let customers = publish(&customer, "customers", &customers_csv(), None);
    let churn = TestNode::start_joining("churn", &sales);
    wait_for_product(&churn, "sales/orders");
    wait_for_product(&churn, "customer/customers");
    let orders_id = agree(&churn, "sales/orders", "order_id,customer_id,region,amount");
    agree(&churn, "customer/customers", "customer_id,country,segment");

    // A join and an aggregate, each the same query text but for the table names.
    let join = "SELECT c.country, c.segment, count(*) AS n, sum(o.amount) AS total \
                FROM {orders} o JOIN {customers} c ON o.customer_id = c.customer_id \
                WHERE o.region <> 'US' GROUP BY c.country, c.segment";
    let aggregate = "SELECT region, count(*) AS n, min(amount) AS low, max(amount) AS high, \
                     sum(amount) AS total FROM {orders} WHERE amount >= 2500 GROUP BY region";
    for query in [join, aggregate] {
        let mesh = query
            .replace("{orders}", "\"sales/orders\"")
            .replace("{customers}", "\"customer/customers\"");
        let local = query
            .replace("{orders}", "orders")
            .replace("{customers}", "customers");
        let ours = sql_rows(&churn, &mesh);
        let theirs = duckdb_rows(&orders, &customers, &local);
        assert!(!ours.is_empty(), "{mesh} returned no rows");
        assert_eq!(sorted(&ours), sorted(&theirs), "{mesh}");
    }

    // A column of the product that the agreement does not grant (restricted, and merely
    // not asked for): a non-zero exit and a message naming the agreement and the column.
    let out = churn.cli(&["sql", "SELECT order_id, email FROM \"sales/orders\""]);
    assert!(!out.success, "{}", out.stdout);
    let message = out.stderr;
    assert!(message.contains("`email`"), "{message}");
    assert!(message.contains("sales/orders"), "{message}");
    assert!(message.contains(&orders_id[..8]), "{message}");
    assert!(
        message.contains("granted: order_id, customer_id, region, amount"),
        "{message}"
    );
    let out = churn.cli(&["sql", "SELECT c.phone FROM \"customer/customers\" c"]);
    assert!(!out.success);
    assert!(out.stderr.contains("`phone`"), "{}", out.stderr);
    assert!(out.stderr.contains("not granted"), "{}", out.stderr);
    // Usage exit code (2) for a query the user must change, not a crash.
    assert_eq!(
        Command::new(mesh_tests::meshnode_bin())
            .args(["sql", "SELECT email FROM \"sales/orders\"", "--data-dir"])
            .arg(&churn.dir)
            .status()
            .unwrap()
            .code(),
        Some(2)
    );
    // Read-only: no statement that writes or changes the session.
    let out = churn.cli(&["sql", "COPY (SELECT 1) TO '/tmp/x.csv'"]);
    assert!(!out.success);
    let out = churn.cli(&["sql", "CREATE TABLE t AS SELECT 1"]);
    assert!(!out.success);

    // `--out`: the result appears complete under its name, staged in a file of its own, so
    // a fetch's resumable partial of the same name is left as it was.
    let result = churn.dir.join("regions.arrow");
    let partial = churn.dir.join("regions.arrow.partial");
    std::fs::write(&partial, b"a fetch's partial").unwrap();
    let query = "SELECT region, count(*) AS n FROM \"sales/orders\" GROUP BY region";
    let out = churn.cli(&["sql", "--out", result.to_str().unwrap(), query]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(std::fs::read(&partial).unwrap(), b"a fetch's partial");
    assert!(std::fs::read(&result).unwrap().starts_with(b"ARROW1"));
    let out = churn.cli(&["sql", "--out", result.to_str().unwrap(), query]);
    assert!(!out.success);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    let staged: Vec<String> = std::fs::read_dir(&churn.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".meshnode-sql-"))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");

    // `--out x.parquet` writes timestamps in seconds as Parquet timestamps (milliseconds),
    // which other tools read as the same instants, not as bare integers.
    let parquet = churn.dir.join("instants.parquet");
    let query = "SELECT arrow_cast(order_id, 'Timestamp(Second, None)') AS instant \
                 FROM \"sales/orders\" WHERE order_id < 3";
    let out = churn.cli(&["sql", "--out", parquet.to_str().unwrap(), query]);
    assert!(out.success, "{}", out.stderr);
    let read = format!(
        "SELECT typeof(instant) AS t, CAST(epoch(instant) AS BIGINT) AS s \
         FROM read_parquet('{}') ORDER BY s",
        parquet.display()
    );
    let rows = duckdb_rows(&orders, &customers, &read);
    assert_eq!(
        rows,
        (0..3)
            .map(|s| serde_json::json!({ "t": "TIMESTAMP", "s": s }))
            .collect::<Vec<_>>()
    );

    // A result that would eat into the node's disk reserve stops with exit 74 and leaves
    // nothing, staged or not. (The reserve is read when the query runs.)
    churn.edit_config("disk_reserve_mib = 256", "disk_reserve_mib = 1000000000000");
    let big = churn.dir.join("big.parquet");
    let query = "SELECT * FROM \"sales/orders\"";
    let out = churn.cli(&["sql", "--out", big.to_str().unwrap(), query]);
    assert_eq!(out.code, Some(74), "{}", out.stderr);
    assert!(out.stderr.contains("disk_reserve_mib"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was written"), "{}", out.stderr);
    assert!(!big.exists());
    let staged = std::fs::read_dir(&churn.dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with(".meshnode-sql-")
        })
        .count();
    assert_eq!(staged, 0);
}

/// `events`: 60,000 rows of twelve columns; `ev_type` is `rare` on 1 % of them.
fn events_csv() -> String {
    let mut csv = String::from(
        "id,ev_type,user_id,score,a_text,b_text,c_text,d_num,e_num,f_num,g_text,h_text\n",
    );
    for i in 0..60_000u64 {
        let ev_type = if i % 100 == 7 { "rare" } else { "common" };
        let _ = writeln!(
            csv,
            "{i},{ev_type},{},{},alpha-{i:08},beta-{:08},gamma-{i:06}-x,{},{},{},delta {i},epsilon {}",
            i % 977,
            (i * 31) % 1000,
            i * 3,
            i * 7,
            i * 11,
            i * 13,
            i % 97
        );
    }
    csv
}

#[test]
fn pushdown_moves_a_fraction_of_the_bytes_and_the_cache_answers_again() {
    let sales = TestNode::start("sales", &[]);
    publish(&sales, "events", &events_csv(), None);
    let churn = TestNode::start_joining("churn", &sales);
    wait_for_product(&churn, "sales/events");
    let all_columns =
        "id,ev_type,user_id,score,a_text,b_text,c_text,d_num,e_num,f_num,g_text,h_text";
    agree(&churn, "sales/events", all_columns);
    let received = || churn.metric(RECEIVED).unwrap_or(0.0);

    // Two of twelve columns, 1 % of the rows.
    let query = "SELECT id, ev_type FROM \"sales/events\" WHERE ev_type = 'rare'";
    let before = received();
    let rows = sql_rows(&churn, query);
    assert_eq!(rows.len(), 600);
    assert!(rows.iter().all(|r| r["ev_type"] == "rare"));
    let selective = received() - before;
    assert!(selective > 0.0, "the query fetched nothing");

    // The same query again: answered from the cache, nothing crosses the network.
    let rows_again = sql_rows(&churn, query);
    assert_eq!(sorted(&rows_again), sorted(&rows));
    assert_eq!(
        received() - before,
        selective,
        "the second query fetched again"
    );

    // The whole product, for comparison.
    let out_file = churn.dir.parent().unwrap().join("events.arrow");
    let out = churn.fetch("sales/events", &out_file, &["--json"]);
    assert!(out.success, "{}", out.stderr);
    let full = received() - before - selective;
    eprintln!("received: selective query {selective} bytes, full fetch {full} bytes");
    assert!(
        selective < full * 0.10,
        "a selective query received {selective} bytes, a full fetch {full}"
    );

    // The narrowing is checked by the provider: a column outside the grant is refused,
    // not dropped.
    let body = r#"{"product":"sales/events","out":"","narrowing":{"columns":["id","secret"]}}"#;
    let (status, text) = churn.api("POST", "/v1/fetch/stream", Some(body));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("`secret`"), "{text}");
}

/// `meshnode sql QUERY` on `node` that must fail; its standard error.
fn sql_refused(node: &TestNode, query: &str) -> String {
    let out = node.cli(&["sql", "--json", query]);
    assert!(!out.success, "answered: {}", out.stdout);
    out.stderr
}

#[test]
fn chains_and_nesting_up_to_the_bounds_are_answered_and_past_them_refused_without_harm() {
    // Each of these shapes, a little longer, once aborted the daemon with a stack overflow.
    let node = TestNode::start("analytics", &[]);
    let subqueries = |depth: usize| {
        let mut q = "SELECT 1 AS x".to_owned();
        for i in 0..depth {
            q = format!("SELECT x + 1 AS x FROM ({q}) AS a{i}");
        }
        q
    };
    let additions = |n: usize| format!("SELECT 1{} AS x", " + 1".repeat(n));
    let unions = |n: usize| vec!["SELECT 1 AS x"; n].join(" UNION ALL ");
    let joins = |n: usize| {
        let mut q = "SELECT 1 AS x FROM (SELECT 1) AS a0".to_owned();
        for i in 1..=n {
            let _ = write!(q, " JOIN (SELECT 1) AS a{i} ON true");
        }
        q
    };
    let tables = |n: usize| {
        let from: Vec<String> = (0..=n).map(|i| format!("(SELECT 1) AS a{i}")).collect();
        format!("SELECT 1 AS x FROM {}", from.join(", "))
    };
    let x = |rows: &[Value]| {
        rows.iter()
            .map(|r| r["x"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };

    // At the bounds: answered, with the right values.
    assert_eq!(x(&sql_rows(&node, &additions(1000))), [1001]);
    assert_eq!(sql_rows(&node, &unions(1001)).len(), 1001);
    assert_eq!(x(&sql_rows(&node, &joins(256))), [1]);
    assert_eq!(x(&sql_rows(&node, &tables(256))), [1]);
    assert_eq!(x(&sql_rows(&node, &subqueries(23))), [24]);

    // Past them: refused with what to change.
    let e = sql_refused(&node, &additions(1001));
    assert!(
        e.contains("chains 1001 operators") && e.contains("IN (...)"),
        "{e}"
    );
    let e = sql_refused(&node, &unions(1002));
    assert!(e.contains("chains 1001 operators"), "{e}");
    let e = sql_refused(&node, &joins(257));
    assert!(e.contains("chains 257 joins"), "{e}");
    let e = sql_refused(&node, &tables(300));
    assert!(e.contains("chains 300 joins"), "{e}");
    let e = sql_refused(&node, &subqueries(40));
    assert!(e.contains("nests deeper") && e.contains("WITH"), "{e}");

    // And the daemon is still there.
    assert_eq!(node.status()["domain"], "analytics");
}

#[test]
fn json_tells_nan_and_the_infinities_apart_from_null() {
    let node = TestNode::start("analytics", &[]);
    let query = "SELECT CAST('NaN' AS DOUBLE) AS nan, CAST('inf' AS DOUBLE) AS pos, \
                 CAST('-inf' AS DOUBLE) AS neg, CAST(NULL AS DOUBLE) AS missing, \
                 1.5 AS plain, CAST('NaN' AS REAL) AS nan32, \
                 named_struct('v', CAST('-inf' AS DOUBLE)) AS nested";
    let rows = sql_rows(&node, query);
    assert_eq!(
        rows,
        [serde_json::json!({
            "nan": "NaN",
            "pos": "Infinity",
            "neg": "-Infinity",
            "missing": null,
            "plain": 1.5,
            "nan32": "NaN",
            "nested": { "v": "-Infinity" },
        })]
    );
}

#[test]
fn csv_of_an_empty_result_quotes_its_header_as_a_full_one_does() {
    let node = TestNode::start("analytics", &[]);
    let query = |filter: &str| {
        format!("SELECT 1 AS \"net, eur\", 2 AS \"say \"\"hi\"\"\", 3 AS plain {filter}")
    };
    let full = node.cli(&["sql", "--csv", &query("")]);
    assert!(full.success, "{}", full.stderr);
    let header = full.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        header, "\"net, eur\",\"say \"\"hi\"\"\",plain",
        "{}",
        full.stdout
    );
    let empty = node.cli(&["sql", "--csv", &query("WHERE false")]);
    assert!(empty.success, "{}", empty.stderr);
    assert_eq!(empty.stdout, format!("{header}\n"));
}

#[test]
fn csv_tells_a_null_from_an_empty_text_as_duckdb_and_postgresql_write_them() {
    let node = TestNode::start("analytics", &[]);
    let out = node.cli(&[
        "sql",
        "--csv",
        "SELECT * FROM (VALUES ('x', 1), ('', NULL), (NULL, 3), ('a,b', 4)) AS t(s, n)",
    ]);
    assert!(out.success, "{}", out.stderr);
    // NULL an empty field, the empty text `""`: DuckDB's `COPY ... TO` writes the same.
    assert_eq!(out.stdout, "s,n\nx,1\n\"\",\n,3\n\"a,b\",4\n");
    // A reader that tells them apart (pyarrow, as PostgreSQL's `COPY ... CSV` reads them)
    // gets both back.
    let csv = write_file(node.dir.parent().unwrap(), "out.csv", &out.stdout);
    let read = python(
        "import sys, json, pyarrow.csv as c\n\
         o = c.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)\n\
         print(json.dumps(c.read_csv(sys.argv[1], convert_options=o).to_pylist()))",
        &[csv.to_str().unwrap()],
    );
    let rows: Value = serde_json::from_str(&read).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([
            {"s": "x", "n": 1},
            {"s": "", "n": null},
            {"s": null, "n": 3},
            {"s": "a,b", "n": 4},
        ])
    );
}

/// `prices` written by pyarrow as Arrow IPC: `amount` is `decimal128(5, -2)` (100, 200,
/// -100, NULL, 9999900, held as 1, 2, -1, NULL, 99999), a decimal of negative scale, which
/// Parquet refuses and DataFusion mishandled (a comparison or `AVG` panicked in the daemon,
/// and the request ended without an answer).
#[test]
fn a_decimal_column_of_negative_scale_is_queried_exactly() {
    let sales = TestNode::start("sales", &[]);
    let arrow = sales.dir.parent().unwrap().join("prices.arrow");
    python(
        "import sys, decimal, pyarrow as pa\n\
         amounts = [100, 200, -100, None, 9999900]\n\
         amount = pa.array([None if a is None else decimal.Decimal(a) for a in amounts], \
                           pa.decimal128(5, -2))\n\
         t = pa.table({'id': pa.array([1, 2, 3, 4, 5], pa.int64()), \
                       'region': ['EU', 'US', 'EU', 'US', 'EU'], 'amount': amount})\n\
         with pa.ipc.new_file(sys.argv[1], t.schema) as w:\n    w.write_table(t)\n",
        &[arrow.to_str().unwrap()],
    );
    let out = sales.cli(&[
        "publish",
        "prices",
        "--from",
        arrow.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
    ]);
    assert!(out.success, "publish failed: {}", out.stderr);
    let churn = TestNode::start_joining("churn", &sales);
    wait_for_product(&churn, "sales/prices");
    agree(&churn, "sales/prices", "id,region,amount");

    let ids = |query: &str| -> Vec<i64> {
        sql_rows(&churn, query)
            .iter()
            .map(|r| r["id"].as_i64().unwrap_or_else(|| panic!("{query}: {r}")))
            .collect()
    };
    let table = "\"sales/prices\"";
    assert_eq!(
        ids(&format!("SELECT id FROM {table} WHERE amount = 100")),
        [1]
    );
    assert_eq!(
        ids(&format!(
            "SELECT id FROM {table} WHERE amount < 150 ORDER BY id"
        )),
        [1, 3]
    );
    assert_eq!(
        ids(&format!(
            "SELECT id FROM {table} WHERE CAST(amount AS BIGINT) = 100"
        )),
        [1]
    );
    // `region` travels to the provider, `amount` is compared here.
    assert_eq!(
        ids(&format!(
            "SELECT id FROM {table} WHERE region = 'EU' AND amount > 0 ORDER BY id"
        )),
        [1, 5]
    );
    assert_eq!(
        ids(&format!(
            "SELECT id FROM {table} ORDER BY amount DESC NULLS LAST"
        )),
        [5, 2, 1, 3, 4]
    );
    let totals = sql_rows(
        &churn,
        &format!(
            "SELECT CAST(sum(amount) AS VARCHAR) AS total, CAST(avg(amount) AS VARCHAR) AS mean \
             FROM {table}"
        ),
    );
    assert_eq!(
        totals,
        [serde_json::json!({ "total": "10000100", "mean": "2500025.0000" })]
    );
    let groups = sql_rows(
        &churn,
        &format!(
            "SELECT region, CAST(sum(amount) AS VARCHAR) AS total FROM {table} \
             GROUP BY region ORDER BY region"
        ),
    );
    assert_eq!(
        groups,
        [
            serde_json::json!({ "region": "EU", "total": "9999900" }),
            serde_json::json!({ "region": "US", "total": "200" }),
        ]
    );

    // The column reads as a decimal of scale 0, which Parquet holds.
    let parquet = churn.dir.join("prices.parquet");
    let query = format!("SELECT id, amount FROM {table} ORDER BY id");
    let out = churn.cli(&["sql", "--out", parquet.to_str().unwrap(), &query]);
    assert!(out.success, "{}", out.stderr);
    let read = python(
        "import sys, pyarrow.parquet as pq\n\
         t = pq.read_table(sys.argv[1])\n\
         print(t.schema.field('amount').type, [None if a is None else int(a) for a in t['amount'].to_pylist()])",
        &[parquet.to_str().unwrap()],
    );
    assert_eq!(
        read.trim(),
        "decimal128(7, 0) [100, 200, -100, None, 9999900]"
    );
    // A query that writes a negative scale itself is refused (it made the daemon's
    // request end without an answer, with no product involved), and the daemon goes on.
    let out = churn.cli(&["sql", "SELECT AVG(CAST(100 AS DECIMAL(5, -2)))"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("negative scale"), "{}", out.stderr);
    assert_eq!(churn.status()["domain"], "churn");
}
