//! Sharing contracts end to end: real daemons negotiating over `/meshnode/contract/1`,
//! driven through `meshnode share` and `meshnode audit`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_tests::{CliOutput, TestNode, meshnode, meshnode_bin, wait_until, write_file};
use serde_json::Value;

/// How long a decision may take to reach the other side (polls run every 2 s).
const PROPAGATE: Duration = Duration::from_secs(10);

const ORDERS: &str = "order_id,region,email,amount\n\
                      1,EU,a@example.com,10.5\n\
                      2,US,b@example.com,20.0\n\
                      3,EU,c@example.com,7.25\n";

/// Provider `sales` publishing `orders` (purpose `analytics` only, `email` restricted) and
/// consumer `churn` that holds it in its catalog.
fn mesh(approval: &str) -> (TestNode, TestNode) {
    let sales = TestNode::start("sales", &[]);
    let csv = write_file(sales.dir.parent().unwrap(), "orders.csv", ORDERS);
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        csv.to_str().unwrap(),
        "--approval",
        approval,
        "--purpose",
        "analytics",
        "--restricted",
        "email",
    ]);
    assert!(out.success, "publish failed: {}", out.stderr);
    let churn = TestNode::start_seeing("churn", &sales, "sales/orders");
    (sales, churn)
}

/// `share ARGS --json`, which must succeed.
fn share(node: &TestNode, args: &[&str]) -> Value {
    let mut all = vec!["share"];
    all.extend(args);
    all.push("--json");
    node.cli(&all).json()
}

/// `share ARGS`, which must fail; returns stderr.
fn share_fails(node: &TestNode, args: &[&str]) -> String {
    let mut all = vec!["share"];
    all.extend(args);
    let out = node.cli(&all);
    assert!(
        !out.success,
        "`share {}` should fail on {}: {}",
        args.join(" "),
        node.domain,
        out.stdout
    );
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line of error: {}",
        out.stderr
    );
    out.stderr
}

fn state(node: &TestNode, id: &str) -> String {
    share(node, &["show", id])["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn wait_for_state(node: &TestNode, id: &str, expected: &str) {
    wait_until(PROPAGATE, || state(node, id) == expected).unwrap_or_else(|| {
        panic!(
            "{} never saw contract {id} {expected} (still {}):\n{}",
            node.domain,
            state(node, id),
            node.log()
        )
    });
}

fn list(node: &TestNode) -> Vec<Value> {
    match share(node, &["list"]) {
        Value::Array(items) => items,
        other => panic!("not a list: {other}"),
    }
}

/// An agreed contract for `order_id,region` of the EU rows; returns its id.
fn agree(churn: &TestNode) -> String {
    let v = share(
        churn,
        &[
            "request",
            "sales/orders",
            "--purpose",
            "analytics",
            "--columns",
            "order_id,region",
            "--filter",
            "region = 'EU'",
        ],
    );
    assert_eq!(v["state"], "agreed", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

#[test]
fn manual_request_waits_for_the_provider_and_ends_agreed_on_both_sides() {
    let (sales, churn) = mesh("manual");
    let v = share(
        &churn,
        &[
            "request",
            "sales/orders",
            "--purpose",
            "analytics",
            "--columns",
            "order_id,region",
            "--days",
            "7",
        ],
    );
    assert_eq!(v["state"], "pending", "{v}");
    assert_eq!(v["role"], "consumer");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);

    let pending = share(&sales, &["pending"]);
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["id"], id.as_str());
    assert_eq!(pending[0]["consumer"], "churn");
    assert_eq!(pending[0]["role"], "provider");
    let human = sales.cli(&["share", "pending"]);
    assert!(human.stdout.contains(&id[..12]), "{}", human.stdout);

    // The operator accepts by short id; the consumer's poll learns it within seconds.
    let out = sales.cli(&["share", "accept", &id[..12]]);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("accepted: contract "),
        "{}",
        out.stdout
    );
    assert_eq!(state(&sales, &id), "agreed");
    wait_for_state(&churn, &id, "agreed");
    assert!(share(&sales, &["pending"]).as_array().unwrap().is_empty());
    let shown = share(&churn, &["show", &id[..8]]);
    assert_eq!(
        shown["granted_columns"],
        serde_json::json!(["order_id", "region"])
    );
    assert_eq!(shown["provider"], "sales");
    assert_eq!(shown["consumer"], "churn");
    assert_eq!(shown["consumer_key"], churn.status()["public_key"]);
    assert_eq!(
        shown["expires_at_ms"].as_u64().unwrap() - shown["created_at_ms"].as_u64().unwrap(),
        7 * 24 * 3600 * 1000
    );
    // Accepting twice is a conflict.
    let err = share_fails(&sales, &["accept", &id]);
    assert!(err.contains("is agreed, not pending"), "{err}");
}

#[test]
fn auto_request_is_agreed_at_once_and_exports_odcs() {
    let (sales, churn) = mesh("auto");
    let out = churn.cli(&[
        "share",
        "request",
        "sales/orders",
        "--purpose",
        "analytics",
        "--columns",
        "region,order_id",
        "--filter",
        "region='EU'",
    ]);
    assert!(out.success, "{}", out.stderr);
    let contracts = list(&churn);
    assert_eq!(contracts.len(), 1);
    let id = contracts[0]["id"].as_str().unwrap().to_owned();
    assert!(
        out.stdout
            .starts_with(&format!("agreed: contract {} with sales", &id[..12])),
        "{}",
        out.stdout
    );
    assert_eq!(state(&sales, &id), "agreed");
    assert_eq!(contracts[0]["filter"], "region = 'EU'");

    // The ODCS document parses as YAML and carries exactly the granted columns, on both sides.
    for node in [&churn, &sales] {
        let out = node.cli(&["share", "show", &id[..10], "--odcs"]);
        assert!(out.success, "{}", out.stderr);
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not YAML ({e}):\n{}", out.stdout));
        assert!(
            doc["apiVersion"].as_str().unwrap().starts_with("v3.0."),
            "{doc:?}"
        );
        assert_eq!(doc["kind"].as_str(), Some("DataContract"));
        assert_eq!(doc["id"].as_str(), Some(id.as_str()));
        assert_eq!(doc["status"].as_str(), Some("active"));
        assert_eq!(doc["domain"].as_str(), Some("sales"));
        assert_eq!(doc["dataProduct"].as_str(), Some("orders"));
        assert_eq!(doc["description"]["purpose"].as_str(), Some("analytics"));
        let table = &doc["schema"][0];
        assert_eq!(table["physicalType"].as_str(), Some("table"));
        let columns: Vec<(&str, &str, &str)> = table["properties"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["logicalType"].as_str().unwrap(),
                    p["physicalType"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            columns,
            [
                ("order_id", "integer", "int64"),
                ("region", "string", "string")
            ]
        );
        let sla: Vec<&str> = doc["slaProperties"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["property"].as_str().unwrap())
            .collect();
        assert_eq!(sla, ["frequency", "latency", "availability"]);
        let custom = |name: &str| {
            doc["customProperties"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|p| p["property"].as_str() == Some(name))
                .map(|p| p["value"].clone())
                .unwrap_or_else(|| panic!("no custom property {name}"))
        };
        assert_eq!(custom("filter").as_str(), Some("region = 'EU'"));
        assert_eq!(custom("agreementId").as_str(), Some(id.as_str()));
        assert_eq!(
            custom("consumerKey").as_str(),
            churn.status()["public_key"].as_str()
        );
    }
}

/// Validates ODCS documents with the official ODCS v3.0.2 and v3.1.0 JSON schemas (as shipped
/// in the `datacontract-cli` package) after reading them with pyyaml's `safe_load`, and reads
/// the Arrow types of a fetched file with pyarrow. Argument 1: the Arrow file; the others:
/// YAML files. Prints one JSON report.
const ODCS_CHECK: &str = r#"
import sys, json
try:
    import importlib.resources, yaml, jsonschema, pyarrow.ipc as ipc
    schemas = [
        json.loads(importlib.resources.files("datacontract").joinpath(f"schemas/odcs-{v}.schema.json").read_text(encoding="utf-8"))
        for v in ("3.0.2", "3.1.0")
    ]
except ImportError as e:
    sys.exit(f"{e}: run `pip install -r scripts/test-requirements.txt` (or use scripts/test)")
validators = [jsonschema.validators.validator_for(s)(s) for s in schemas]
arrow = {f.name: str(f.type) for f in ipc.open_file(sys.argv[1]).schema}
docs = []
for path in sys.argv[2:]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    docs.append({
        "schema_errors": [
            s["properties"]["apiVersion"]["default"] + ": " + "/".join(map(str, e.absolute_path)) + ": " + e.message
            for s, validator in zip(schemas, validators)
            for e in validator.iter_errors(doc)
        ],
        "apiVersion": doc.get("apiVersion"),
        "kind": doc.get("kind"),
        "id": doc.get("id"),
        "status": doc.get("status"),
        "custom_types": {p["property"]: type(p["value"]).__name__ for p in doc["customProperties"]},
        "custom": {p["property"]: str(p["value"]) for p in doc["customProperties"]},
        "columns": [[p["name"], p["physicalType"]] for s in doc["schema"] for p in s["properties"]],
    })
print(json.dumps({"schema_ids": [s["properties"]["apiVersion"]["default"] for s in schemas], "arrow": arrow, "docs": docs}))
"#;

#[test]
fn odcs_exports_of_every_state_pass_the_official_schema() {
    mesh_tests::require_pyarrow();
    let (sales, churn) = mesh("manual");
    let request = |columns: &str| {
        let mut args = vec!["share", "request", "sales/orders", "--purpose", "analytics"];
        args.extend(["--columns", columns, "--json"]);
        churn.cli(&args)
    };
    // Pending: asked for by name, waiting for the operator.
    let pending = request("region,order_id").json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Rejected: the request names the restricted `email`.
    assert!(!request("order_id,email").success);
    let rejected = list(&sales)
        .iter()
        .find(|c| c["state"] == "rejected")
        .expect("a signed rejection on the provider")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Agreed, and later revoked: every column, the restricted one resolved away.
    let agreed = request("*").json()["id"].as_str().unwrap().to_owned();
    assert!(sales.cli(&["share", "accept", &agreed]).success);
    wait_for_state(&churn, &agreed, "agreed");

    let dir = tempfile::tempdir().unwrap();
    let fetched = dir.path().join("orders.arrow");
    let out = churn.fetch("sales/orders", &fetched, &["--agreement", &agreed[..12]]);
    assert!(out.success, "{}", out.stderr);
    let mut files = vec![];
    let mut export = |node: &TestNode, id: &str, label: &str| {
        let out = node.cli(&["share", "show", id, "--odcs"]);
        assert!(out.success, "{}", out.stderr);
        let path = dir.path().join(format!("{label}-{}.yaml", node.domain));
        std::fs::write(&path, &out.stdout).unwrap();
        files.push((label.to_owned(), id.to_owned(), path));
    };
    for node in [&sales, &churn] {
        export(node, &pending, "pending");
        export(node, &rejected, "rejected");
        export(node, &agreed, "agreed");
    }
    assert!(
        sales
            .cli(&["share", "revoke", &agreed, "--reason", "audit"])
            .success
    );
    wait_for_state(&churn, &agreed, "revoked");
    for node in [&sales, &churn] {
        export(node, &agreed, "revoked");
    }

    let mut args = vec![fetched.to_str().unwrap()];
    args.extend(files.iter().map(|(_, _, p)| p.to_str().unwrap()));
    let report: Value = serde_json::from_str(mesh_tests::python(ODCS_CHECK, &args).trim()).unwrap();
    assert_eq!(
        report["schema_ids"],
        serde_json::json!(["v3.0.2", "v3.1.0"])
    );
    let arrow = &report["arrow"];
    assert_eq!(
        arrow,
        &serde_json::json!({"order_id": "int64", "region": "string", "amount": "double"})
    );
    for ((label, id, path), doc) in files.iter().zip(report["docs"].as_array().unwrap()) {
        let yaml = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            doc["schema_errors"],
            serde_json::json!([]),
            "{label}:\n{yaml}"
        );
        assert_eq!(doc["apiVersion"], "v3.0.2");
        assert_eq!(doc["kind"], "DataContract");
        assert_eq!(doc["id"], id.as_str());
        let status = match label.as_str() {
            "pending" => "proposed",
            "agreed" => "active",
            _ => "retired",
        };
        assert_eq!(doc["status"], status, "{label}");
        // Every custom property is a string to a YAML 1.1 loader, the dates included.
        for (name, kind) in doc["custom_types"].as_object().unwrap() {
            assert_eq!(kind, "str", "{label}: {name}:\n{yaml}");
        }
        for name in ["validFrom", "expiresAt"] {
            let value = doc["custom"][name].as_str().unwrap();
            assert!(value.ends_with('Z') && value.contains('T'), "{value}");
        }
        // Physical types as pyarrow names them; never the restricted column.
        let columns: Vec<(String, String)> =
            serde_json::from_value(doc["columns"].clone()).unwrap();
        for (name, physical) in &columns {
            assert_eq!(arrow[name], physical.as_str(), "{label}: {name}");
        }
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let expected: &[&str] = match label.as_str() {
            "pending" => &["order_id", "region"],
            "rejected" => &["order_id"],
            _ => &["order_id", "region", "amount"],
        };
        assert_eq!(names, expected, "{label}:\n{yaml}");
        // The Data Contract CLI's own linter agrees.
        let (passed, report) = mesh_tests::datacontract_lint(path);
        assert!(
            passed,
            "{label}: datacontract lint failed:\n{report}\n{yaml}"
        );
        assert!(report.contains("valid against ODCS v3.0.2"), "{report}");
    }
}

#[test]
fn policy_rejections_are_signed_and_stored_on_both_sides() {
    let (sales, churn) = mesh("auto");
    let err = share_fails(
        &churn,
        &[
            "request",
            "sales/orders",
            "--purpose",
            "marketing",
            "--columns",
            "order_id",
        ],
    );
    let reason = "purpose `marketing` is not allowed; allowed purposes: analytics";
    assert!(
        err.contains(&format!(
            "sales rejected the request for sales/orders: {reason}"
        )),
        "{err}"
    );
    let contracts = list(&churn);
    assert_eq!(contracts.len(), 1, "the signed rejection is kept");
    let id = contracts[0]["id"].as_str().unwrap();
    for node in [&churn, &sales] {
        let v = share(node, &["show", id]);
        assert_eq!(v["state"], "rejected", "{}: {v}", node.domain);
        assert_eq!(v["reason"], reason);
    }

    // Restricted columns, asked for by name, are refused.
    let err = share_fails(
        &churn,
        &[
            "request",
            "sales/orders",
            "--purpose",
            "analytics",
            "--columns",
            "order_id,email",
        ],
    );
    assert!(
        err.contains("restricted columns cannot be shared: email"),
        "{err}"
    );
    // Without --columns: every shareable column of the version seen, pinned by name.
    let v = share(
        &churn,
        &["request", "sales/orders", "--purpose", "analytics"],
    );
    assert_eq!(v["state"], "agreed", "{v}");
    assert_eq!(
        v["columns"],
        serde_json::json!(["order_id", "region", "amount"])
    );
    assert_eq!(v["all_future_columns"], false);
    let states: Vec<String> = list(&sales)
        .iter()
        .map(|c| c["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "rejected").count(),
        2,
        "{states:?}"
    );
    assert_eq!(states.len(), 3);
}

#[test]
fn revocations_are_seen_on_both_sides_within_seconds() {
    let (sales, churn) = mesh("auto");
    let id = agree(&churn);
    let out = sales.cli(&["share", "revoke", &id[..8], "--reason", "audit finding"]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(state(&sales, &id), "revoked");
    wait_for_state(&churn, &id, "revoked");
    let v = share(&churn, &["show", &id]);
    assert_eq!(v["reason"], "audit finding");
    assert_eq!(v["revoked_by"], "provider");

    for node in [&sales, &churn] {
        let err = share_fails(node, &["revoke", &id]);
        assert!(err.contains("is already revoked (by sales)"), "{err}");
    }

    // The consumer may withdraw too.
    let id = agree(&churn);
    assert!(churn.cli(&["share", "revoke", &id]).success);
    wait_for_state(&sales, &id, "revoked");
    assert_eq!(share(&sales, &["show", &id])["revoked_by"], "consumer");
}

#[test]
fn provider_killed_right_after_agreeing_still_holds_the_agreement() {
    let (mut sales, churn) = mesh("auto");
    let id = agree(&churn);
    sales.kill9();
    sales.run();
    for node in [&sales, &churn] {
        let v = share(node, &["show", &id]);
        assert_eq!(v["state"], "agreed", "{}: {v}", node.domain);
        assert_eq!(
            v["granted_columns"],
            serde_json::json!(["order_id", "region"])
        );
    }
    let out = sales.cli(&["audit", "--verify"]);
    assert!(out.success, "{}", out.stderr);
}

/// Copies a stopped node's data directory (without its API files).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "api.addr" || name == "api.token" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn audit_chain_verifies_and_an_edited_entry_is_named() {
    let (mut sales, churn) = mesh("auto");
    let id = agree(&churn);
    for node in [&sales, &churn] {
        let out = node.cli(&["audit", "--verify"]);
        assert!(out.success, "{}", out.stderr);
        assert!(out.stdout.contains("hash chain intact"), "{}", out.stdout);
    }
    let log = sales.cli(&["audit", "--json"]).json();
    let kinds: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["publish", "request", "agreement"]);
    assert_eq!(log["entries"][2]["detail"]["agreement"], id.as_str());
    assert_eq!(log["verified"], true);

    // Alter the request entry (seq 1) in a copy of the stopped provider's store.
    sales.stop();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("sales-copy");
    copy_dir(&sales.dir, &copy);
    {
        let store = mesh_node::store::Store::open(&copy.join("db")).unwrap();
        let raw = store.audit_raw().unwrap();
        let mut entry = mesh_protocol::audit::AuditEntry::from_bytes(&raw[1]).unwrap();
        entry.detail = entry.detail.replace("\"churn\"", "\"someone-else\"");
        store
            .audit_overwrite_for_tests(1, &entry.to_bytes())
            .unwrap();
        store.flush_blocking().unwrap();
    }
    let copy_s = copy.to_str().unwrap();
    let mut daemon = Command::new(meshnode_bin())
        .args(["run", "--data-dir", copy_s])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_until(Duration::from_secs(20), || {
        copy.join("api.addr").exists() && meshnode(&["status", "--data-dir", copy_s]).success
    });
    let out: CliOutput = meshnode(&["audit", "--verify", "--data-dir", copy_s]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    started.expect("the daemon on the copy did not start");
    assert!(!out.success, "the edited log verified: {}", out.stdout);
    assert!(
        out.stderr
            .contains("audit entry 2 does not link to entry 1: one of them was altered"),
        "{}",
        out.stderr
    );

    // The original is untouched.
    sales.run();
    assert!(sales.cli(&["audit", "--verify"]).success);
}

#[test]
fn bad_input_is_refused_with_clear_errors_and_nothing_is_stored() {
    let (sales, churn) = mesh("manual");
    let request = |extra: &[&str]| {
        let mut args = vec!["request", "sales/orders", "--purpose", "analytics"];
        args.extend(extra);
        share_fails(&churn, &args)
    };
    let cases: [(&[&str], &str); 5] = [
        (
            &["--columns", "order_id,ssn"],
            "unknown columns: ssn; the product has: order_id, region, email, amount",
        ),
        (
            &["--columns", "order_id", "--filter", "country = 'EU'"],
            "invalid filter: unknown column `country`; the product has columns: order_id, region, email, amount",
        ),
        (
            &["--columns", "order_id", "--filter", "amount > 'big'"],
            "invalid filter: cannot apply `>` to column `amount` of type Float64",
        ),
        (
            &["--columns", "order_id", "--filter", "amount >"],
            "invalid --filter `amount >`",
        ),
        (
            &["--columns", "order_id", "--days", "0"],
            "--days must be at least 1",
        ),
    ];
    for (extra, expected) in cases {
        let err = request(extra);
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
    let err = share_fails(&churn, &["request", "sales/nope", "--purpose", "analytics"]);
    assert!(err.contains("unknown product `sales/nope`"), "{err}");

    for args in [
        &["accept", "00000000"][..],
        &["reject", "deadbeef00", "--reason", "no"],
        &["revoke", "0123456789abcdef"],
        &["show", "abcdef12"],
    ] {
        let err = share_fails(&sales, args);
        assert!(err.contains("no contract with id"), "{args:?}: {err}");
    }
    let err = share_fails(&sales, &["accept", "abc"]);
    assert!(err.contains("at least 8 of its hex digits"), "{err}");

    // A pending request cannot be revoked, and the consumer cannot accept it.
    let id = share(
        &churn,
        &[
            "request",
            "sales/orders",
            "--purpose",
            "analytics",
            "--columns",
            "region",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let err = share_fails(&churn, &["accept", &id]);
    assert!(
        err.contains("only its provider (sales) can accept it"),
        "{err}"
    );
    let err = share_fails(&sales, &["revoke", &id]);
    assert!(err.contains("is pending, not agreed"), "{err}");
    let out = sales.cli(&["share", "reject", &id, "--reason", "budget freeze"]);
    assert!(out.success, "{}", out.stderr);
    wait_for_state(&churn, &id, "rejected");
    assert_eq!(share(&churn, &["show", &id])["reason"], "budget freeze");
    let err = share_fails(&sales, &["reject", &id, "--reason", "again"]);
    assert!(err.contains("is rejected, not pending"), "{err}");

    // Only that one request was stored, on each side.
    assert_eq!(list(&churn).len(), 1);
    assert_eq!(list(&sales).len(), 1);
}

#[test]
fn offline_provider_is_reported_and_a_later_retry_works() {
    let (mut sales, churn) = mesh("auto");
    sales.stop();
    // When it comes back (on a new port), the provider joins through the consumer.
    let config = sales.dir.join("meshnode.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let joined = text.replace(
        "bootstrap = []",
        &format!("bootstrap = [\"{}\"]", churn.addr()),
    );
    assert_ne!(text, joined, "unexpected config layout: {text}");
    std::fs::write(&config, joined).unwrap();
    let peers = |node: &TestNode| {
        node.cli(&["peers", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    wait_until(Duration::from_secs(20), || peers(&churn) == 0)
        .expect("churn still sees sales connected");

    let args = [
        "request",
        "sales/orders",
        "--purpose",
        "analytics",
        "--columns",
        "order_id",
    ];
    let err = share_fails(&churn, &args);
    assert!(err.contains("provider sales is offline"), "{err}");
    assert!(err.contains("Nothing was stored"), "{err}");
    assert!(list(&churn).is_empty());

    sales.run();
    wait_until(Duration::from_secs(15), || peers(&churn) == 1).expect("sales came back");
    let v = share(&churn, &args);
    assert_eq!(v["state"], "agreed", "{v}");
    assert_eq!(list(&churn).len(), 1);
    assert_eq!(list(&sales).len(), 1);
}

/// A provider with manual approval whose `meshnode.toml` is edited before it starts.
fn manual_provider(edits: &[(&str, &str)]) -> TestNode {
    let mut sales = TestNode::init("sales", &[]);
    for (from, to) in edits {
        sales.edit_config(from, to);
    }
    sales.run();
    let csv = write_file(sales.dir.parent().unwrap(), "orders.csv", ORDERS);
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        csv.to_str().unwrap(),
        "--approval",
        "manual",
        "--purpose",
        "analytics",
        "--restricted",
        "email",
    ]);
    assert!(out.success, "publish failed: {}", out.stderr);
    sales
}

#[test]
fn a_flood_of_2000_requests_from_one_consumer_stays_bounded() {
    // A burst big enough that the open-request bound, not the rate limit, is what holds.
    let sales = manual_provider(&[
        ("request_burst = 20", "request_burst = 100000"),
        ("message_burst = 64", "message_burst = 100000"),
    ]);
    // The flood keeps its requests below the provider's stream limit per peer (more are
    // refused by the transport before the budget sees them): every request reaches the budget.
    let (report, flood_secs) = flood(&sales, 2000);
    println!("flood of 2000 requests: {flood_secs:.1} s, {report}");
    assert_eq!(report["answered"], 2000, "{report}");
    // Exactly the per-consumer bound was parked; every other request was refused as such.
    assert_eq!(report["replies"]["pending"], 32, "{report}");
    assert_eq!(
        report["replies"]["busy_too_many_open"],
        2000 - 32,
        "{report}"
    );

    // The provider's operator still works: `share pending` answers quickly and lists 32.
    let asked = std::time::Instant::now();
    let pending = share(&sales, &["pending"]);
    let took = asked.elapsed();
    println!("share pending after the flood: {took:?}");
    assert!(took < Duration::from_secs(3), "share pending took {took:?}");
    assert_eq!(pending.as_array().unwrap().len(), 32);
    assert_eq!(list(&sales).len(), 32, "refused requests left records");

    // Another consumer is answered normally, and learns the decision by its batched poll.
    let (churn, id) = another_consumer_is_answered(&sales);
    assert!(sales.cli(&["share", "accept", &id]).success);
    wait_for_state(&churn, &id, "agreed");
}

/// A consumer `churn` started after a flood at `sales` has its request answered (pending);
/// returns it and the request's id.
fn another_consumer_is_answered(sales: &TestNode) -> (TestNode, String) {
    let churn = TestNode::start_seeing("churn", sales, "sales/orders");
    let v = share(
        &churn,
        &[
            "request",
            "sales/orders",
            "--purpose",
            "analytics",
            "--columns",
            "order_id,region",
        ],
    );
    assert_eq!(v["state"], "pending", "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    (churn, id)
}

/// Runs the flood program against `sales`, as a member of its mesh; returns its report and
/// the wall time.
fn flood(sales: &TestNode, count: usize) -> (Value, f64) {
    flood_of(sales, "request", count)
}

/// [`flood`] with messages of `kind` (`request` or `status`).
fn flood_of(sales: &TestNode, kind: &str, count: usize) -> (Value, f64) {
    flood_with(sales, &["--kind", kind], count)
}

/// [`flood`] with more arguments to the flood program.
fn flood_with(sales: &TestNode, extra: &[&str], count: usize) -> (Value, f64) {
    flood_as(sales, "flood", extra, count)
}

#[test]
fn a_flood_with_default_limits_is_held_by_the_rate_limit() {
    let sales = manual_provider(&[]);
    let (report, secs) = flood(&sales, 2000);
    println!("flood of 2000 requests with default limits: {secs:.1} s, {report}");
    assert_eq!(report["answered"], 2000, "{report}");
    // The burst of 20, plus one per 3 s of flood at most.
    let pending = report["replies"]["pending"].as_u64().unwrap();
    let limit = 20 + (secs / 3.0).ceil() as u64;
    assert!((20..=limit).contains(&pending), "{report}");
    assert_eq!(
        report["replies"]["busy_rate_limited"].as_u64().unwrap(),
        2000 - pending,
        "{report}"
    );
    assert_eq!(list(&sales).len() as u64, pending);
}

#[test]
fn a_flood_of_status_polls_is_answered_busy_past_the_message_budget() {
    let sales = manual_provider(&[]);
    let (report, secs) = flood_of(&sales, "status", 3000);
    println!("flood of 3000 status batches: {secs:.1} s, {report}");
    assert_eq!(report["answered"], 3000, "{report}");
    // The burst of 64, plus 20 a second of flood at most, were read; the rest were
    // answered `Busy` before they were decoded.
    let read = report["replies"]["statuses"].as_u64().unwrap_or(0);
    let limit = 64 + (secs * 20.0).ceil() as u64;
    assert!((64..=limit).contains(&read), "{report}");
    assert_eq!(
        report["replies"]["busy_rate_limited"].as_u64().unwrap_or(0),
        3000 - read,
        "{report}"
    );
    // The provider's operator is answered at once, and an honest consumer's request goes
    // through: its messages have a bucket of their own.
    let asked = std::time::Instant::now();
    assert!(share(&sales, &["pending"]).as_array().unwrap().is_empty());
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    another_consumer_is_answered(&sales);
}

#[test]
fn a_flood_of_rejected_requests_leaves_only_the_newest_closed_records() {
    let sales = manual_provider(&[
        ("request_burst = 20", "request_burst = 100000"),
        ("message_burst = 64", "message_burst = 100000"),
        (
            "max_closed_per_consumer = 256",
            "max_closed_per_consumer = 16",
        ),
    ]);
    // `orders` is shared for analytics only: every request is a signed rejection, stored.
    let (report, secs) = flood_with(&sales, &["--purpose", "marketing"], 300);
    println!("flood of 300 rejected requests: {secs:.1} s, {report}");
    assert_eq!(report["replies"]["rejected"], 300, "{report}");
    // The provider keeps the newest 16 of them; the audit chain keeps every decision.
    let records = list(&sales);
    assert_eq!(records.len(), 16, "{records:?}");
    assert!(
        records.iter().all(|r| r["state"] == "rejected"),
        "{records:?}"
    );
    let audit = sales.cli(&["audit", "--json"]).json();
    let rejections = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "rejection")
        .count();
    assert_eq!(rejections, 300);
    assert!(sales.cli(&["audit", "--verify"]).success);
    // The records kept survive a restart, and the bound still holds after it.
    let mut sales = sales;
    sales.stop();
    sales.run();
    assert_eq!(list(&sales).len(), 16);
    // Another consumer is answered as before.
    another_consumer_is_answered(&sales);
    assert_eq!(list(&sales).len(), 17);

    // The operator moves all but the newest 10 audit entries to a file: the store's chain
    // starts after it, verifies, and survives a restart.
    let total = sales.cli(&["audit", "--json"]).json()["entries"]
        .as_array()
        .unwrap()
        .len();
    let archived = sales
        .cli(&["audit", "--archive", "--keep", "10", "--json"])
        .json();
    let archived = &archived["archived"];
    assert_eq!(archived["first"], 0, "{archived}");
    assert_eq!(archived["last"], total as u64 - 11, "{archived}");
    let file = std::fs::read_to_string(archived["path"].as_str().unwrap()).unwrap();
    let lines: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), total - 10);
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
    }
    let log = sales.cli(&["audit", "--json"]).json();
    assert_eq!(log["entries"].as_array().unwrap().len(), 10);
    assert_eq!(log["first_seq"], total as u64 - 10);
    assert_eq!(
        log["entries"][0]["seq"],
        lines.last().unwrap()["seq"].as_u64().unwrap() + 1
    );
    assert!(sales.cli(&["audit", "--verify"]).success);
    sales.stop();
    sales.run();
    let out = sales.cli(&["audit", "--verify"]);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("{total} entries")),
        "{}",
        out.stdout
    );

    // Left to itself with `audit_keep_entries = 3`, the node archives at start (and each
    // minute) once it holds more than twice that: all but the newest 3 of its 10 (and the
    // entries the restarts added) go to a second file.
    sales.stop();
    sales.edit_config("audit_keep_entries = 100000", "audit_keep_entries = 3");
    sales.run();
    let held = || {
        sales.cli(&["audit", "--json"]).json()["entries"]
            .as_array()
            .unwrap()
            .len()
    };
    wait_until(Duration::from_secs(30), || held() == 3)
        .unwrap_or_else(|| panic!("the node did not archive on its own: {}", sales.log()));
    let files = std::fs::read_dir(sales.dir.join("audit-archive"))
        .unwrap()
        .count();
    assert_eq!(files, 2);
    assert_eq!(sales.metric("meshnode_audit_entries"), Some(3.0));
    let out = sales.cli(&["audit", "--verify"]);
    assert!(out.success, "{}", out.stderr);
}

/// `audit ARGS --json` on `node`, parsed; its output must stay under `max` bytes (so a reply
/// holding the whole log fails here, not in a panic message quoting it).
fn audit_json(node: &TestNode, args: &[&str], max: usize) -> Value {
    let mut all = vec!["audit", "--json"];
    all.extend(args);
    let out = node.cli(&all);
    assert!(
        out.success,
        "`audit {}` failed: {}",
        args.join(" "),
        out.stderr
    );
    assert!(
        out.stdout.len() <= max,
        "`audit {}` printed {} bytes, more than the {max} expected",
        args.join(" "),
        out.stdout.len()
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON: {e}"))
}

/// The sequence numbers of a page's entries.
fn seqs(page: &Value) -> Vec<u64> {
    page["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {}", page["error"]))
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_audit_log_of_a_flood_of_large_rejected_requests_is_read_in_pages_and_verified_whole() {
    let sales = manual_provider(&[
        ("request_burst = 20", "request_burst = 100000"),
        ("message_burst = 64", "message_burst = 100000"),
    ]);
    // Each request names a purpose of 60,000 bytes the policy does not allow: two audit
    // entries of about 60 KB (the request and its rejection), about 72 MB in all.
    let purpose = "x".repeat(60_000);
    let (report, secs) = flood_with(&sales, &["--purpose", &purpose], 600);
    println!("flood of 600 large rejected requests: {secs:.1} s, {report}");
    assert_eq!(report["replies"]["rejected"], 600, "{report}");
    // The publish, then a request and a rejection per request.
    let total: u64 = 1 + 2 * 600;

    // `--verify` reads the whole chain but answers with the verdict and the counts only.
    let verdict = audit_json(&sales, &["--verify"], 64 * 1024);
    assert_eq!(verdict["verified"], true, "{verdict}");
    assert_eq!(verdict["intact_entries"], total, "{verdict}");
    assert_eq!(verdict["held_entries"], total, "{verdict}");
    assert_eq!(verdict["entries"], serde_json::json!([]), "{verdict}");
    let out = sales.cli(&["audit", "--verify"]);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("{total} entries")),
        "{}",
        out.stdout
    );

    // Without flags: the newest entries, at most a page's worth of bytes, and where the
    // next page starts.
    let page = audit_json(&sales, &[], 24 << 20);
    let newest = seqs(&page);
    assert!(
        !newest.is_empty() && (newest.len() as u64) < total,
        "{} entries",
        newest.len()
    );
    assert_eq!(newest.last(), Some(&(total - 1)));
    assert!(newest.windows(2).all(|w| w[1] == w[0] + 1), "{newest:?}");
    assert_eq!(page["next_before"], newest[0]);
    assert_eq!(page["verified"], true);
    assert_eq!(page["held_entries"], total);
    assert_eq!(page["entries"][newest.len() - 1]["kind"], "rejection");
    let older = sales.cli(&["audit"]);
    assert!(older.success, "{}", older.stderr);
    assert!(
        older
            .stderr
            .contains(&format!("meshnode audit --before {}", newest[0])),
        "{}",
        older.stderr
    );

    // `--limit` and `--before` walk the whole log back to its first entry, each entry once.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut args = vec!["--limit", "500"];
        if let Some(b) = &before {
            args.extend(["--before", b.as_str()]);
        }
        let page = audit_json(&sales, &args, 24 << 20);
        let mut got = seqs(&page);
        assert!(!got.is_empty() && got.len() <= 500, "{} entries", got.len());
        got.extend(seen);
        seen = got;
        match page["next_before"].as_u64() {
            Some(next) => {
                assert_eq!(next, seen[0]);
                before = Some(next.to_string());
            }
            None => break,
        }
    }
    assert_eq!(seen, (0..total).collect::<Vec<_>>());
    let small = audit_json(&sales, &["--limit", "3", "--before", "10"], 1 << 20);
    assert_eq!(seqs(&small), [7, 8, 9]);
    assert_eq!(small["next_before"], 7);
    assert_eq!(small["entries"][0]["detail"]["purpose"], purpose.as_str());
    let first = audit_json(&sales, &["--limit", "3", "--before", "2"], 1 << 20);
    assert_eq!(seqs(&first), [0, 1]);
    assert_eq!(first["entries"][0]["kind"], "publish");
    assert_eq!(first["next_before"], Value::Null);
    // A limit past the bound is refused by the CLI and by the API.
    assert!(!sales.cli(&["audit", "--limit", "100000"]).success);
    let (status, body) = sales.api("GET", "/v1/audit?limit=100000", None);
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_consumer_over_its_budget_is_told_clearly_and_can_withdraw() {
    let sales = manual_provider(&[(
        "max_open_requests_per_consumer = 32",
        "max_open_requests_per_consumer = 2",
    )]);
    let churn = TestNode::start_seeing("churn", &sales, "sales/orders");
    let args = [
        "request",
        "sales/orders",
        "--purpose",
        "analytics",
        "--columns",
        "region",
    ];
    let first = share(&churn, &args)["id"].as_str().unwrap().to_owned();
    share(&churn, &args);
    let err = share_fails(&churn, &args);
    assert!(
        err.contains("too many open requests to sales: 2 pending (at most 2); wait for answers or withdraw some"),
        "{err}"
    );
    assert_eq!(list(&churn).len(), 2, "the refused request was not kept");
    assert_eq!(list(&sales).len(), 2);
    // Withdrawing one frees a slot.
    let out = churn.cli(&["share", "revoke", &first]);
    assert!(out.success, "{}", out.stderr);
    wait_for_state(&sales, &first, "revoked");
    assert_eq!(share(&churn, &args)["state"], "pending");
}

/// Column names of an Arrow IPC file.
fn arrow_columns(path: &Path) -> Vec<String> {
    let out = mesh_tests::python(
        "import sys, json, pyarrow.ipc as ipc\n\
         t = ipc.open_file(sys.argv[1]).read_all()\n\
         print(json.dumps(t.column_names))",
        &[path.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn an_agreement_does_not_grow_with_new_columns() {
    mesh_tests::require_pyarrow();
    let (sales, churn) = mesh("auto");
    // The approver sees (order_id, region); `*` is asked for in so many words.
    let pinned = agree(&churn);
    let star = share(
        &churn,
        &[
            "request",
            "sales/orders",
            "--purpose",
            "analytics",
            "--columns",
            "*",
        ],
    );
    assert_eq!(star["state"], "agreed", "{star}");
    assert_eq!(star["all_future_columns"], true);
    let star = star["id"].as_str().unwrap().to_owned();
    let shown = sales.cli(&["share", "show", &star]);
    assert!(
        shown
            .stdout
            .contains("ALL current and FUTURE non-restricted columns"),
        "{}",
        shown.stdout
    );

    // Version 2 adds `ssn`.
    let v2 = write_file(
        sales.dir.parent().unwrap(),
        "orders-v2.csv",
        "order_id,region,email,amount,ssn\n1,EU,a@example.com,10.5,123-45-6789\n",
    );
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        v2.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
        "--restricted",
        "email",
    ]);
    assert!(out.success, "publish v2 failed: {}", out.stderr);
    wait_until(Duration::from_secs(15), || {
        churn.version_of("sales/orders") == Some(2)
    })
    .unwrap_or_else(|| panic!("churn never saw version 2: {}", churn.log()));

    let dir = tempfile::tempdir().unwrap();
    let out_pinned = dir.path().join("pinned.arrow");
    let out = churn.fetch("sales/orders", &out_pinned, &["--agreement", &pinned[..12]]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(arrow_columns(&out_pinned), ["order_id", "region"]);
    // `*` grows with the product, never to the restricted column.
    let out_star = dir.path().join("star.arrow");
    let out = churn.fetch("sales/orders", &out_star, &["--agreement", &star[..12]]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        arrow_columns(&out_star),
        ["order_id", "region", "amount", "ssn"]
    );
}

/// A consumer `churn` whose status polls of undecided requests are an hour apart, holding
/// `sales/orders`: whatever it learns of a decision within a test, the provider told it.
fn slow_polling_consumer(sales: &TestNode) -> TestNode {
    let mut churn = TestNode::init_joining("churn", sales);
    churn.edit_config("status_poll_secs = 2", "status_poll_secs = 3600");
    churn.run();
    wait_until(Duration::from_secs(15), || {
        churn.version_of("sales/orders").is_some()
    })
    .unwrap_or_else(|| panic!("churn never saw sales/orders: {}", churn.log()));
    churn
}

/// `share request` for `columns` of `sales/orders`, answered `pending`; returns its id.
fn request_pending(churn: &TestNode, columns: &str) -> String {
    let v = share(
        churn,
        &[
            "request",
            "sales/orders",
            "--purpose",
            "analytics",
            "--columns",
            columns,
        ],
    );
    assert_eq!(v["state"], "pending", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

#[test]
fn the_consumer_hears_of_an_accept_or_reject_from_the_provider_without_polling() {
    let sales = manual_provider(&[]);
    let churn = slow_polling_consumer(&sales);
    let accepted = request_pending(&churn, "order_id,region");
    let rejected = request_pending(&churn, "order_id");

    // Well within the consumer's first poll (an hour away), each decision arrives.
    let out = sales.cli(&["share", "accept", &accepted]);
    assert!(out.success, "{}", out.stderr);
    wait_until(Duration::from_secs(5), || {
        state(&churn, &accepted) == "agreed"
    })
    .unwrap_or_else(|| panic!("the accept never reached churn:\n{}", churn.log()));
    let out = sales.cli(&["share", "reject", &rejected, "--reason", "budget freeze"]);
    assert!(out.success, "{}", out.stderr);
    wait_until(Duration::from_secs(5), || {
        state(&churn, &rejected) == "rejected"
    })
    .unwrap_or_else(|| panic!("the reject never reached churn:\n{}", churn.log()));

    // What the consumer holds is the provider's signed record, as a poll would have given it.
    let shown = share(&churn, &["show", &rejected]);
    assert_eq!(shown["reason"], "budget freeze");
    let shown = share(&churn, &["show", &accepted]);
    assert_eq!(
        shown["granted_columns"],
        serde_json::json!(["order_id", "region"])
    );
    // Audited on the consumer's side like a polled decision: request sent, then the outcome.
    let audit = churn.cli(&["audit", "--json"]).json();
    let entries: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {audit}"))
        .iter()
        .map(|e| {
            let kind = e["kind"].as_str().unwrap_or_default();
            (kind, e["detail"]["agreement"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("request", accepted.as_str()),
            ("request", rejected.as_str()),
            ("agreement", accepted.as_str()),
            ("rejection", rejected.as_str()),
        ]
    );
    assert_eq!(audit["verified"], true);

    // Learnt from the two notices, not from a poll: none was sent.
    assert_eq!(churn.metric("meshnode_contract_polls_total"), Some(0.0));
    assert_eq!(
        churn.metric("meshnode_contract_notices_received_total{outcome=\"applied\"}"),
        Some(2.0)
    );
    assert_eq!(
        sales.metric("meshnode_contract_notices_sent_total"),
        Some(2.0)
    );
}

#[test]
fn a_consumer_offline_at_the_decision_learns_it_by_polling() {
    let sales = manual_provider(&[]);
    let mut churn = TestNode::start_seeing("churn", &sales, "sales/orders");
    let id = request_pending(&churn, "order_id,region");

    // No consumer to tell: the decision is only stored on the provider.
    churn.stop();
    wait_until(PROPAGATE, || sales.status()["peers"] == 0)
        .unwrap_or_else(|| panic!("sales still connected to churn: {}", sales.status()));
    let out = sales.cli(&["share", "accept", &id]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        sales.metric("meshnode_contract_notices_sent_total"),
        Some(0.0)
    );

    // Back online, the consumer's poll (every 2 s) fetches it.
    churn.run();
    wait_for_state(&churn, &id, "agreed");
    assert!(
        churn
            .metric("meshnode_contract_polls_total")
            .is_some_and(|n| n >= 1.0),
        "learnt without a poll"
    );
    assert_eq!(
        churn.metric("meshnode_contract_notices_received_total{outcome=\"applied\"}"),
        None
    );
}

/// [`flood_with`] from a member invited as `domain`: each run of the flood program is a new
/// member, and a domain names one.
fn flood_as(sales: &TestNode, domain: &str, extra: &[&str], count: usize) -> (Value, f64) {
    let status = sales.status();
    let ticket = sales.invite(domain);
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_contract-flood"))
        .args([
            "--provider",
            &sales.addr(),
            "--provider-key",
            status["public_key"].as_str().unwrap(),
            "--product",
            "orders",
            "--ticket",
            &ticket,
            "--count",
            &count.to_string(),
            "--in-flight",
            "12",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        started.elapsed().as_secs_f64(),
    )
}

/// `share list ARGS --json` on `node`: the contracts printed, and what it wrote to stderr.
fn share_list_page(node: &TestNode, args: &[&str]) -> (Vec<Value>, String) {
    let mut all = vec!["share", "list", "--json"];
    all.extend(args);
    let out = node.cli(&all);
    assert!(
        out.success,
        "`share list {}` failed: {}",
        args.join(" "),
        out.stderr
    );
    match out.json() {
        Value::Array(items) => (items, out.stderr),
        other => panic!("not a list: {other}"),
    }
}

/// Where `share list --before` resumes after `contract`: `CREATED-ID`.
fn position_after(contract: &Value) -> String {
    format!(
        "{}-{}",
        contract["created_at_ms"].as_u64().unwrap(),
        contract["id"].as_str().unwrap()
    )
}

#[test]
fn share_list_shows_the_newest_page_and_pages_to_the_oldest() {
    let sales = manual_provider(&[
        ("request_burst = 20", "request_burst = 100000"),
        ("message_burst = 64", "message_burst = 100000"),
        (
            "max_closed_per_consumer = 256",
            "max_closed_per_consumer = 5000",
        ),
    ]);
    // `orders` is shared for analytics only: each request leaves a rejected record.
    let total = 1_100;
    let (report, secs) = flood_with(&sales, &["--purpose", "marketing"], total);
    println!("flood of {total} rejected requests: {secs:.1} s, {report}");
    assert_eq!(report["replies"]["rejected"], total, "{report}");

    // Without flags: the newest 1,000, newest first (then by id), and a note naming the
    // next page.
    let asked = std::time::Instant::now();
    let (newest, note) = share_list_page(&sales, &[]);
    println!("share list of {total}: {:?}", asked.elapsed());
    assert_eq!(newest.len(), 1_000);
    let order = |page: &[Value]| {
        page.windows(2).all(|w| {
            let (a, b) = (&w[0], &w[1]);
            let (ca, cb) = (a["created_at_ms"].as_u64(), b["created_at_ms"].as_u64());
            ca > cb || (ca == cb && a["id"].as_str() < b["id"].as_str())
        })
    };
    assert!(order(&newest), "not newest first");
    assert!(note.contains("100 more"), "{note}");
    assert!(
        note.contains(&format!(
            "meshnode share list --before {}",
            position_after(&newest[999])
        )),
        "{note}"
    );

    // `--limit` and `--before` walk to the oldest, each contract once, in order.
    let mut seen: Vec<Value> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut args = vec!["--limit", "300"];
        if let Some(b) = &before {
            args.extend(["--before", b.as_str()]);
        }
        let (page, note) = share_list_page(&sales, &args);
        assert!(
            !page.is_empty() && page.len() <= 300,
            "{} on a page",
            page.len()
        );
        seen.extend(page);
        if seen.len() == total {
            assert!(note.is_empty(), "{note}");
            break;
        }
        let next = position_after(seen.last().unwrap());
        assert!(
            note.contains(&format!("{} more", total - seen.len())),
            "{note}"
        );
        assert!(
            note.contains(&format!("--limit 300 --before {next}")),
            "{note}"
        );
        before = Some(next);
    }
    assert!(order(&seen));
    let ids = |page: &[Value]| page.iter().map(|c| c["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&seen[..1_000]), ids(&newest));
    let distinct: std::collections::HashSet<&str> =
        seen.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(distinct.len(), total);

    // The table says how many more there are and how to see them.
    let table = sales.cli(&["share", "list", "--limit", "5"]);
    assert!(table.success, "{}", table.stderr);
    assert_eq!(
        table.stdout.matches("rejected").count(),
        5,
        "{}",
        table.stdout
    );
    assert!(
        table.stderr.contains(&format!("{} more", total - 5))
            && table.stderr.contains("--limit 5 --before"),
        "{}",
        table.stderr
    );
    // Filters: none of these records is this node's own request; all are rejected.
    let (own, _) = share_list_page(&sales, &["--role", "consumer"]);
    assert!(own.is_empty());
    let mine = sales.cli(&["share", "list", "--role", "consumer"]);
    assert!(
        mine.stdout.contains("no contracts match"),
        "{}",
        mine.stdout
    );
    let (rejected, note) = share_list_page(&sales, &["--state", "rejected", "--limit", "2"]);
    assert_eq!(
        rejected.iter().map(|c| &c["id"]).collect::<Vec<_>>(),
        [&newest[0]["id"], &newest[1]["id"]]
    );
    assert!(note.contains("--limit 2 --before"), "{note}");
    assert!(note.contains("--state rejected"), "{note}");

    // The API: the same array, with the count of older ones and the next page in headers;
    // a limit past the bound or a position that is none is refused.
    let (status, headers, body) = sales.api_with_headers("GET", "/v1/share?limit=3", None);
    assert_eq!(status, 200, "{body}");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(3));
    assert_eq!(
        header("x-meshnode-more").as_deref(),
        Some((total - 3).to_string().as_str())
    );
    assert_eq!(
        header("x-meshnode-next-before"),
        Some(position_after(&newest[2]))
    );
    for bad in ["limit=100000", "limit=0", "before=yesterday", "state=lost"] {
        let (status, body) = sales.api("GET", &format!("/v1/share?{bad}"), None);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert!(!sales.cli(&["share", "list", "--limit", "100000"]).success);
    assert!(
        !sales
            .cli(&["share", "list", "--before", "yesterday"])
            .success
    );

    // Large contracts: the page stops at 8 MiB of them, whatever the store holds, and the
    // note counts the rest.
    let purpose = "x".repeat(60_000);
    let large = 200;
    let (report, _) = flood_as(&sales, "flood2", &["--purpose", &purpose], large);
    assert_eq!(report["replies"]["rejected"], large, "{report}");
    let out = sales.cli(&["share", "list", "--json"]);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.len() < 12 << 20,
        "{} bytes printed",
        out.stdout.len()
    );
    let page = match out.json() {
        Value::Array(items) => items,
        other => panic!("not a list: {other}"),
    };
    assert!(
        (1..large).contains(&page.len()),
        "{} large contracts on the page",
        page.len()
    );
    assert!(page.iter().all(|c| c["purpose"] == purpose.as_str()));
    assert!(
        out.stderr
            .contains(&format!("{} more", total + large - page.len())),
        "{}",
        out.stderr
    );
}
