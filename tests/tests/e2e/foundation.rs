//! One daemon driven through the CLI: init, publish, catalog, status, and the bad inputs.

use mesh_tests::{TestNode, meshnode, python, require_pyarrow, write_file};

const TRICKY_CSV: &str = "id,name,city,amount,active\n\
1,\"Smith, John\",Zürich,12.5,true\n\
2,\"O\"\"Brien\",東京,,false\n\
3,,\"São Paulo\",7,\n\
4,\"multi\nline\",🙂 city,-3.25,true\n";

#[test]
fn publish_csv_and_read_it_back_with_pyarrow() {
    let node = TestNode::start("sales", &[]);
    let csv = write_file(&node.dir, "tricky.csv", TRICKY_CSV);
    let out = node.cli(&[
        "publish",
        "customers",
        "--from",
        csv.to_str().unwrap(),
        "--title",
        "Customer master",
        "--tag",
        "pii",
        "--restricted",
        "name",
        "--approval",
        "manual",
        "--purpose",
        "analytics",
        "--json",
    ]);
    let view = out.json();
    assert_eq!(view["product"], "sales/customers");
    assert_eq!(view["version"], 1);
    assert_eq!(view["rows"], 4);

    // The catalog lists it with every documented field.
    let catalog = node.catalog();
    assert_eq!(catalog.len(), 1);
    let p = &catalog[0];
    assert_eq!(p["owner"], node.status()["public_key"]);
    assert_eq!(p["title"], "Customer master");
    assert_eq!(p["tags"], serde_json::json!(["pii"]));
    assert_eq!(p["restricted"], serde_json::json!(["name"]));
    assert_eq!(p["approval"], "manual");
    assert_eq!(p["status"], "active");
    assert_eq!(p["digest"].as_str().unwrap().len(), 64);
    let schema: Vec<(String, String)> = p["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        schema,
        vec![
            ("id".into(), "Int64".into()),
            ("name".into(), "Utf8".into()),
            ("city".into(), "Utf8".into()),
            ("amount".into(), "Float64".into()),
            ("active".into(), "Boolean".into()),
        ]
    );

    // The stored Arrow file holds the same rows and values, read by another tool.
    let arrow_file = node.dir.join("products/customers/1.arrow");
    assert!(arrow_file.exists());
    if require_pyarrow() {
        let rows = python(
            "import sys, json, pyarrow.ipc as ipc\n\
             t = ipc.open_file(sys.argv[1]).read_all()\n\
             print(json.dumps(t.to_pylist(), ensure_ascii=False))",
            &[arrow_file.to_str().unwrap()],
        );
        let rows: serde_json::Value = serde_json::from_str(&rows).unwrap();
        assert_eq!(
            rows,
            serde_json::json!([
                {"id": 1, "name": "Smith, John", "city": "Zürich", "amount": 12.5, "active": true},
                {"id": 2, "name": "O\"Brien", "city": "東京", "amount": null, "active": false},
                // An empty field in a text column is an empty string, as pyarrow reads it.
                {"id": 3, "name": "", "city": "São Paulo", "amount": 7.0, "active": null},
                {"id": 4, "name": "multi\nline", "city": "🙂 city", "amount": -3.25, "active": true},
            ])
        );
    }

    // Publishing again makes version 2; both files stay.
    let out = node.cli(&[
        "publish",
        "customers",
        "--from",
        csv.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.json()["version"], 2);
    assert!(node.dir.join("products/customers/2.arrow").exists());
    assert_eq!(node.catalog().len(), 1);

    // search and show.
    let hits = node.cli(&["catalog", "search", "MASTER", "--json"]).json();
    assert_eq!(hits.as_array().unwrap().len(), 1);
    let none = node
        .cli(&["catalog", "search", "nothing-like-this", "--json"])
        .json();
    assert_eq!(none.as_array().unwrap().len(), 0);
    let shown = node
        .cli(&["catalog", "show", "sales/customers", "--json"])
        .json();
    assert_eq!(shown["version"], 2);
    let unknown = node.cli(&["catalog", "show", "sales/nope"]);
    assert!(!unknown.success);
    assert!(
        unknown.stderr.contains("unknown product"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn bad_inputs_are_refused_and_nothing_is_stored() {
    let node = TestNode::start("sales", &[]);
    let dir = node.dir.clone();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "publish".into(),
                "p".into(),
                "--from".into(),
                dir.join("missing.csv").display().to_string(),
            ],
            "does not exist",
        ),
        (
            vec![
                "publish".into(),
                "p".into(),
                "--from".into(),
                write_file(&dir, "x.xlsx", "a").display().to_string(),
            ],
            "unsupported",
        ),
        (
            vec![
                "publish".into(),
                "p".into(),
                "--from".into(),
                write_file(&dir, "ragged.csv", "a,b\n1,2\n3,4,5\n")
                    .display()
                    .to_string(),
            ],
            "line 3",
        ),
        (
            vec![
                "publish".into(),
                "p".into(),
                "--from".into(),
                write_file(&dir, "empty.csv", "").display().to_string(),
            ],
            "empty",
        ),
        (
            vec![
                "publish".into(),
                "Bad_Name".into(),
                "--from".into(),
                write_file(&dir, "ok.csv", "a\n1\n").display().to_string(),
            ],
            "invalid",
        ),
        (
            vec![
                "publish".into(),
                "p".into(),
                "--from".into(),
                dir.join("ok.csv").display().to_string(),
                "--restricted".into(),
                "ssn".into(),
            ],
            "restricted column `ssn`",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = node.cli(&args);
        assert!(!out.success, "{args:?} should fail");
        // A missing input is not found (3); the rest are requests to change (2).
        let code = if expected == "does not exist" { 3 } else { 2 };
        assert_eq!(out.code, Some(code), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.to_lowercase().contains(&expected.to_lowercase()),
            "{args:?}: expected `{expected}` in: {}",
            out.stderr
        );
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "one clear line: {}",
            out.stderr
        );
    }
    assert!(node.catalog().is_empty(), "nothing half-stored");
    let leftovers: Vec<_> = walk(&dir.join("products"))
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "arrow" || e == "partial")
        })
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn daemon_not_running_wrong_token_and_corrupt_identity() {
    let mut node = TestNode::start("sales", &[]);
    // Wrong token: 401 with a clear message.
    let addr = std::fs::read_to_string(node.dir.join("api.addr")).unwrap();
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request, urllib.error\n\
             req = urllib.request.Request('http://' + sys.argv[1] + '/v1/status', headers={'Authorization': 'Bearer wrong'})\n\
             try:\n    urllib.request.urlopen(req)\n    print(200)\n\
             except urllib.error.HTTPError as e:\n    print(e.code)",
            addr.trim(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "401");
    std::fs::write(node.dir.join("api.token"), "not-the-token").unwrap();
    let out = node.cli(&["status"]);
    assert!(!out.success);
    assert!(out.stderr.contains("API token"), "{}", out.stderr);

    // Daemon stopped: say how to start it.
    node.stop();
    let out = node.cli(&["status"]);
    assert!(!out.success);
    assert!(
        out.stderr.contains("meshnode run --data-dir"),
        "{}",
        out.stderr
    );

    // Corrupt identity: the daemon refuses to start with a clear message.
    std::fs::write(node.dir.join("identity.key"), "garbage").unwrap();
    let run = meshnode(&["run", "--data-dir", node.dir_str()]);
    assert!(!run.success);
    assert!(run.stderr.contains("corrupt"), "{}", run.stderr);

    // init refuses to overwrite an identity.
    let again = meshnode(&["init", "--data-dir", node.dir_str(), "--domain", "other"]);
    assert!(!again.success);
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );

    // Not a data directory at all.
    let nowhere = meshnode(&["status", "--data-dir", "/nonexistent/meshnode"]);
    assert!(!nowhere.success);
    assert!(
        nowhere.stderr.contains("meshnode init"),
        "{}",
        nowhere.stderr
    );
}

#[test]
fn sigterm_flushes_and_restart_keeps_the_catalog() {
    let mut node = TestNode::start("sales", &[]);
    let csv = write_file(&node.dir, "a.csv", "a,b\n1,x\n2,y\n");
    assert!(
        node.cli(&["publish", "things", "--from", csv.to_str().unwrap()])
            .success
    );
    node.stop();
    assert!(
        !node.dir.join("api.addr").exists(),
        "clean shutdown removes api.addr"
    );
    node.run();
    assert_eq!(node.version_of("sales/things"), Some(1));
    let out = node.cli(&[
        "publish",
        "things",
        "--from",
        csv.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.json()["version"], 2);
}
