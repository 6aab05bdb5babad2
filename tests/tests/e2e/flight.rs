//! The local Arrow Flight / Flight SQL endpoint from Python clients installed from PyPI:
//! `pyarrow.flight` lists and reads a product, the ADBC Flight SQL driver runs a statement
//! and gets the rows `meshnode sql --json` gives, a call without the token or with a wrong
//! one is refused, and the README's snippets run as written.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use mesh_tests::{TestNode, write_file};
use serde_json::Value;

/// `orders` of the README's tour: `email` is restricted by the provider's policy.
fn orders_csv(rows: usize) -> String {
    const REGIONS: [&str; 4] = ["EU", "US", "APAC", "EU"];
    let mut csv = String::from("order_id,region,amount,email\n");
    for i in 0..rows {
        let _ = writeln!(
            csv,
            "{i},{},{}.{:02},customer{i}@example.com",
            REGIONS[i % 4],
            i / 3,
            i % 100
        );
    }
    csv
}

/// Provider `sales` with `orders`, consumer `churn` holding an agreement for three of its
/// columns; the source CSV's path.
fn mesh(rows: usize) -> (TestNode, TestNode, PathBuf) {
    let sales = TestNode::start("sales", &[]);
    let csv = write_file(sales.dir.parent().unwrap(), "orders.csv", &orders_csv(rows));
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        csv.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "churn-analysis",
        "--restricted",
        "email",
    ]);
    assert!(out.success, "publish failed: {}", out.stderr);
    let churn = TestNode::start_seeing("churn", &sales, "sales/orders");
    churn.share_agreed(
        "sales/orders",
        "churn-analysis",
        &["--columns", "order_id,region,amount"],
    );
    (sales, churn, csv)
}

/// The Python of the repository's virtual environment (made by scripts/test), else the
/// `python3` on the path; the test fails, never skips, when the packages are missing.
fn python_bin() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs `script` with the endpoint's address and the token in the environment, as the
/// README tells users to set them; returns stdout, panicking with stderr on failure.
fn run_python(node: &TestNode, script: &str, args: &[&str]) -> String {
    let status = node.status();
    let addr = status["flight_addr"]
        .as_str()
        .unwrap_or_else(|| panic!("status has no flight_addr: {status}"));
    let token = std::fs::read_to_string(node.dir.join("api.token")).unwrap();
    let out = Command::new(python_bin())
        .arg("-c")
        .arg(script)
        .args(args)
        .env("MESHNODE_FLIGHT", format!("grpc://{addr}"))
        .env("MESHNODE_TOKEN", token.trim())
        .output()
        .expect("run python (run the tests with scripts/test, which makes .venv)");
    assert!(
        out.status.success(),
        "python failed (are adbc-driver-flightsql, adbc-driver-manager, polars and duckdb installed? scripts/test installs them):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the clients do; prints one JSON object.
const CLIENTS: &str = r#"
import json, os, sys
import pyarrow as pa, pyarrow.csv as pacsv, pyarrow.flight as flight
import adbc_driver_flightsql.dbapi as flightsql

uri, token = os.environ["MESHNODE_FLIGHT"], os.environ["MESHNODE_TOKEN"]
source_csv, query = sys.argv[1], sys.argv[2]
out = {}
client = flight.FlightClient(uri)
auth = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])

# Refused: no token, a wrong token, a token of the right length but wrong.
refusals = []
for headers in [[], [(b"authorization", b"Bearer nope")],
                [(b"authorization", ("Bearer " + "0" * len(token)).encode())]]:
    opts = flight.FlightCallOptions(headers=headers)
    for call in [lambda: list(client.list_flights(options=opts)),
                 lambda: client.do_get(flight.Ticket(b'{"product":"sales/orders"}'), opts).read_all()]:
        try:
            call()
            refusals.append("accepted")
        except flight.FlightUnauthenticatedError as e:
            refusals.append("api.token" in str(e))
out["refusals"] = refusals

flights = list(client.list_flights(options=auth))
out["flights"] = [(f.descriptor.path[0].decode(), f.schema.names) for f in flights]
info = client.get_flight_info(flight.FlightDescriptor.for_path("sales/orders"), auth)
table = client.do_get(info.endpoints[0].ticket, auth).read_all()
plain = client.do_get(flight.Ticket(b'{"product":"sales/orders"}'), auth).read_all()
source = pacsv.read_csv(source_csv).select(["order_id", "region", "amount"])
out["columns"] = table.column_names
out["rows"] = table.num_rows
out["equal_to_source"] = table.sort_by("order_id").equals(source.sort_by("order_id"))
out["plain_ticket_equal"] = plain.sort_by("order_id").equals(table.sort_by("order_id"))
try:
    client.do_get(flight.Ticket(b'{"product":"sales/nothing"}'), auth).read_all()
    out["unknown_product"] = "accepted"
except Exception as e:
    out["unknown_product"] = type(e).__name__

with flightsql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}) as conn:
    with conn.cursor() as cur:
        cur.execute(query)
        out["sql"] = cur.fetch_arrow_table().to_pylist()
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT email FROM "sales/orders"')
            cur.fetch_arrow_table()
        out["ungranted"] = "accepted"
    except Exception as e:
        out["ungranted"] = str(e)
print(json.dumps(out))
"#;

#[test]
fn python_clients_list_read_and_query_through_flight_and_need_the_token() {
    let (_sales, churn, csv) = mesh(2_000);
    let query = r#"SELECT region, count(*) AS n, sum(order_id) AS ids, max(amount) AS top FROM "sales/orders" GROUP BY region ORDER BY region"#;
    let printed = run_python(&churn, CLIENTS, &[csv.to_str().unwrap(), query]);
    let out: Value = serde_json::from_str(printed.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {printed}"));

    assert_eq!(
        out["refusals"],
        serde_json::Value::from(vec![true; 6]),
        "{out}"
    );
    assert_eq!(
        out["flights"],
        serde_json::json!([["sales/orders", ["order_id", "region", "amount"]]]),
        "{out}"
    );
    assert_eq!(
        out["columns"],
        serde_json::json!(["order_id", "region", "amount"])
    );
    assert_eq!(out["rows"], 2_000);
    assert_eq!(out["equal_to_source"], true, "{out}");
    assert_eq!(out["plain_ticket_equal"], true, "{out}");
    assert_eq!(out["unknown_product"], "ArrowKeyError", "{out}");

    let sql = churn.cli(&["sql", query, "--json"]).json();
    assert_eq!(out["sql"], sql, "ADBC and `meshnode sql` disagree");
    assert_eq!(sql.as_array().map(Vec::len), Some(3), "{sql}");
    let ungranted = out["ungranted"].as_str().unwrap_or_default();
    assert!(ungranted.contains("email"), "{ungranted}");
}

/// The fenced Python blocks of the README section, in order.
fn readme_snippets() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let heading = "## Use mesh data from Python, DuckDB and SQL";
    let start = readme.find(heading).expect("the README section");
    let rest = &readme[start + heading.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut code = String::new();
    let mut blocks = 0;
    let mut inside = false;
    for line in section.lines() {
        if inside && line.trim_start().starts_with("```") {
            inside = false;
        } else if inside {
            code.push_str(line);
            code.push('\n');
        } else if line.trim() == "```python" {
            inside = true;
            blocks += 1;
        }
    }
    assert!(
        blocks >= 4,
        "the section has {blocks} python blocks, expected at least 4"
    );
    code
}

#[test]
fn readme_snippets_run_against_a_live_daemon() {
    let code = readme_snippets();
    for client in [
        "pyarrow.flight",
        "adbc_driver_flightsql",
        "pl.from_arrow",
        "duckdb",
    ] {
        assert!(
            code.contains(client),
            "the README snippets do not show {client}"
        );
    }
    let (_sales, churn, _) = mesh(300);
    let printed = run_python(&churn, &code, &[]);
    assert!(printed.contains("sales/orders"), "{printed}");
}
