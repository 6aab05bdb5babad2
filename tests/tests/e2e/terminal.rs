//! Remote strings never reach the operator's terminal raw: a product whose title, description,
//! tag and column name carry escape sequences, carriage returns and bidi overrides, and a
//! request whose purpose does, and a query's column names in `meshnode sql`'s table, are shown
//! escaped by every human view on both nodes, while `--json` keeps the exact strings.

use std::time::Duration;

use mesh_tests::{TestNode, wait_until, write_file};
use serde_json::Value;

/// Clears the screen and homes the cursor.
const CLEAR: &str = "\x1b[2J\x1b[H";
/// Right-to-left override: reverses what follows on screen.
const RLO: &str = "\u{202e}";

/// Characters that must never be printed raw.
fn raw_danger(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

fn assert_safe(what: &str, text: &str) {
    if let Some(c) = raw_danger(text) {
        panic!("{what} prints {c:?} raw:\n{}", text.escape_debug());
    }
}

#[test]
fn hostile_strings_are_escaped_for_people_and_exact_in_json() {
    let title = format!("Orders{CLEAR}\rAll good{RLO}txet");
    let description = format!("line one\r\x1b[31mred\x1b[0m{RLO}gnp.exe");
    let tag = "t\x1b]0;pwned\x07";
    let column = format!("na\x1b[2Jme{RLO}x");

    let sales = TestNode::start("sales", &[]);
    let csv = write_file(
        sales.dir.parent().unwrap(),
        "orders.csv",
        &format!("order_id,{column},amount\n1,a,10.5\n2,b,20.0\n"),
    );
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        csv.to_str().unwrap(),
        "--title",
        &title,
        "--description",
        &description,
        "--tag",
        tag,
        "--approval",
        "manual",
    ]);
    assert!(out.success, "publish failed: {}", out.stderr);
    assert_safe("publish", &out.stdout);

    // The consumer learns the product by gossip: the strings crossed the mesh.
    let churn = TestNode::start_seeing("churn", &sales, "sales/orders");

    for node in [&sales, &churn] {
        let list = node.cli(&["catalog"]);
        assert!(list.success, "{}", list.stderr);
        assert_safe("catalog", &list.stdout);
        assert!(list.stdout.contains("\\x1b[2J"), "{}", list.stdout);

        let show = node.cli(&["catalog", "show", "sales/orders"]);
        assert!(show.success, "{}", show.stderr);
        assert_safe("catalog show", &show.stdout);
        for escaped in [
            "Orders\\x1b[2J\\x1b[H\\rAll good\\u{202e}txet",
            "line one\\r\\x1b[31mred\\x1b[0m\\u{202e}gnp.exe",
            "t\\x1b]0;pwned\\x07",
            "na\\x1b[2Jme\\u{202e}x",
        ] {
            assert!(
                show.stdout.contains(escaped),
                "`catalog show` lacks {escaped}:\n{}",
                show.stdout
            );
        }

        let search = node.cli(&["catalog", "search", "orders"]);
        assert_safe("catalog search", &search.stdout);

        // JSON stays exact.
        let json = node
            .cli(&["catalog", "show", "sales/orders", "--json"])
            .json();
        assert_eq!(json["title"], title.as_str());
        assert_eq!(json["description"], description.as_str());
        assert_eq!(json["tags"][0], tag);
        let names: Vec<&str> = json["schema"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["order_id", column.as_str(), "amount"]);
    }

    // A query's column names reach the table header: an alias here, and a product's column
    // (from a peer's descriptor or a CSV header) in general.
    let alias = format!("red\x1b[31m{RLO}x");
    let query = format!("SELECT 1 AS \"{alias}\", 'v' AS \"{column}\"");
    let table = sales.cli(&["sql", &query]);
    assert!(table.success, "{}", table.stderr);
    assert_safe("sql", &table.stdout);
    for escaped in ["red\\x1b[31m\\u{202e}x", "na\\x1b[2Jme\\u{202e}x"] {
        assert!(
            table.stdout.contains(escaped),
            "`sql` lacks {escaped}:\n{}",
            table.stdout
        );
    }
    let rows = sales.cli(&["sql", "--json", &query]).json();
    assert_eq!(
        rows,
        serde_json::json!([{ alias.as_str(): 1, column.as_str(): "v" }])
    );

    // A request whose purpose would hide itself from the approver.
    let purpose = format!("analytics{CLEAR}\rbenign{RLO}lanoitan");
    let out = churn.cli(&[
        "share",
        "request",
        "sales/orders",
        "--purpose",
        &purpose,
        "--columns",
        &format!("order_id,{column}"),
    ]);
    assert!(out.success, "share request failed: {}", out.stderr);
    assert_safe("share request", &out.stdout);

    let pending: Value = sales.cli(&["share", "pending", "--json"]).json();
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["purpose"], purpose.as_str());
    let id = pending[0]["id"].as_str().unwrap().to_owned();

    let human = sales.cli(&["share", "pending"]);
    assert!(human.success, "{}", human.stderr);
    assert_safe("share pending", &human.stdout);
    // The table may wrap a long cell, so look for the escapes themselves.
    for escaped in ["\\x1b[2J", "\\r", "\\u{202e}"] {
        assert!(
            human.stdout.contains(escaped),
            "`share pending` hides {escaped}:\n{}",
            human.stdout
        );
    }

    let show = sales.cli(&["share", "show", &id[..12]]);
    assert!(show.success, "{}", show.stderr);
    assert_safe("share show", &show.stdout);
    assert!(
        show.stdout
            .contains("analytics\\x1b[2J\\x1b[H\\rbenign\\u{202e}lanoitan"),
        "{}",
        show.stdout
    );
    for (node, args) in [
        (&sales, &["share", "list"][..]),
        (&churn, &["share", "list"][..]),
        (&sales, &["audit"][..]),
    ] {
        let out = node.cli(args);
        assert!(out.success, "{args:?}: {}", out.stderr);
        assert_safe(&args.join(" "), &out.stdout);
    }

    // A rejection reason travels back to the consumer; its terminal gets it escaped too.
    let reason = format!("no{CLEAR}{RLO}");
    let out = sales.cli(&["share", "reject", &id[..12], "--reason", &reason]);
    assert!(out.success, "{}", out.stderr);
    wait_until(Duration::from_secs(15), || {
        churn.cli(&["share", "show", &id[..12], "--json"]).json()["state"] == "rejected"
    })
    .unwrap_or_else(|| panic!("churn never learnt the rejection: {}", churn.log()));
    let show = churn.cli(&["share", "show", &id[..12]]);
    assert_safe("share show (consumer)", &show.stdout);
    assert!(
        show.stdout.contains("no\\x1b[2J\\x1b[H\\u{202e}"),
        "{}",
        show.stdout
    );
}
