//! The Unix conventions of the `meshnode` binary against real daemons: a closed pipe ends a
//! command quietly, and the exit code names the kind of failure.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_tests::{TestNode, meshnode_bin, wait_until, write_file};

const ORDERS: &str = "order_id,region,amount\n1,EU,10.5\n2,US,20.0\n3,EU,7.25\n";

/// What a finished `meshnode` left: its exit code and output.
#[derive(Debug)]
struct Exit {
    /// Exit code (`None` when a signal ended the process).
    code: Option<i32>,
    /// Standard output.
    stdout: String,
    /// Standard error.
    stderr: String,
}

/// `meshnode ARGS --data-dir DIR` of `node`, to completion.
fn cli(node: &TestNode, args: &[&str]) -> Exit {
    let output = Command::new(meshnode_bin())
        .args(args)
        .args(["--data-dir", node.dir_str()])
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run meshnode");
    Exit {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `out` failed with exit code `code` and a message containing `needle`.
fn assert_exit(out: &Exit, code: i32, needle: &str) {
    assert_eq!(
        out.code,
        Some(code),
        "expected exit {code}; stdout: {} stderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains(needle), "{}", out.stderr);
}

/// `meshnode ARGS` with standard output a pipe; `read_first` lines are read before the
/// reading end is closed. Returns (success, stderr).
fn with_closed_pipe(args: &[&str], read_first: usize) -> (bool, String) {
    let mut child = Command::new(meshnode_bin())
        .args(args)
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshnode");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    for _ in 0..read_first {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a line");
        assert!(!line.is_empty(), "`{args:?}` printed less than expected");
    }
    drop(reader);
    let output = child.wait_with_output().expect("wait for meshnode");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn closed_pipes_end_quietly_and_exit_codes_name_the_failure() {
    let sales = TestNode::start("sales", &[]);
    let csv = write_file(sales.dir.parent().unwrap(), "orders.csv", ORDERS);
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        csv.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
    ]);
    assert!(out.success, "publish failed: {}", out.stderr);

    // `meshnode audit | head -1`, and a reader gone before the first write (which, before
    // the write errors were handled, made `println!` panic: exit 101).
    let dir = sales.dir_str();
    for (args, read_first) in [
        (vec!["audit", "--data-dir", dir], 1),
        (vec!["audit", "--data-dir", dir], 0),
        (vec!["audit", "--json", "--data-dir", dir], 1),
        (vec!["catalog", "--data-dir", dir], 0),
        (vec!["man"], 1),
        (vec!["completions", "zsh"], 0),
    ] {
        let (success, stderr) = with_closed_pipe(&args, read_first);
        assert!(success, "`{args:?}` failed on a closed pipe: {stderr}");
        assert!(stderr.is_empty(), "`{args:?}` wrote to stderr: {stderr}");
    }

    let churn = TestNode::start("churn", &[sales.addr()]);
    wait_until(Duration::from_secs(20), || {
        churn.version_of("sales/orders").is_some()
    })
    .unwrap_or_else(|| panic!("churn never saw sales/orders: {}", churn.log()));
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("x.arrow");
    let out = out.to_str().unwrap();

    // 3: not found.
    assert_exit(
        &cli(&churn, &["catalog", "show", "sales/nope"]),
        3,
        "unknown product `sales/nope`",
    );
    assert_exit(
        &cli(&churn, &["fetch", "sales/nope", "--out", out]),
        3,
        "sales/nope",
    );
    // No agreement yet for a product that exists: not found either.
    let no_agreement = cli(&churn, &["fetch", "sales/orders", "--out", out]);
    assert_eq!(no_agreement.code, Some(3), "{}", no_agreement.stderr);
    // The daemon's error answers name their kind, finer than the status for fetches.
    for (product, status, kind) in [
        ("sales/nope", 404, "not_found"),
        ("sales/orders", 404, "no_agreement"),
    ] {
        let body = serde_json::json!({"product": product, "out": out});
        let (got, text) = churn.api("POST", "/v1/fetch", Some(&body.to_string()));
        assert_eq!(got, status, "{text}");
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["kind"], kind, "{text}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // 4: refused by the provider's policy.
    assert_exit(
        &cli(
            &churn,
            &["share", "request", "sales/orders", "--purpose", "marketing"],
        ),
        4,
        "sales rejected the request for sales/orders",
    );
    // 2: usage, from clap and from checks of what was typed.
    assert_exit(&cli(&churn, &["fetch", "sales/orders"]), 2, "--out");
    assert_exit(
        &cli(&churn, &["fetch", "sales/orders", "--out", "x.parquet"]),
        2,
        "a fetch writes an Arrow IPC file, not `.parquet`",
    );
    assert_exit(
        &cli(&churn, &["share", "show", "not-an-id!"]),
        2,
        "is not a contract id",
    );
    assert!(!std::path::Path::new(out).exists());

    // 5: no daemon answers, for a data directory whose daemon never ran and one whose
    // daemon stopped.
    let idle = TestNode::init("idle", &[]);
    assert_exit(&cli(&idle, &["status"]), 5, "no meshnode daemon is running");
    let mut churn = churn;
    churn.stop();
    let stopped = cli(&churn, &["peers"]);
    assert_eq!(stopped.code, Some(5), "{}", stopped.stderr);

    // 6: verification failed. The provider's first audit entry altered while it is stopped;
    // `audit --verify` reads the log from disk and names the broken link.
    let mut sales = sales;
    sales.stop();
    {
        let store = mesh_node::store::Store::open(&sales.dir.join("db")).unwrap();
        let raw = store.audit_raw().unwrap();
        assert!(
            raw.len() >= 2,
            "publish and the rejected request are logged"
        );
        let mut entry = mesh_protocol::audit::AuditEntry::from_bytes(&raw[0]).unwrap();
        entry.detail = entry.detail.replace("orders", "ordxrs");
        store
            .audit_overwrite_for_tests(0, &entry.to_bytes())
            .unwrap();
        store.flush_blocking().unwrap();
    }
    assert_exit(
        &cli(&sales, &["audit", "--verify"]),
        6,
        "the audit log does not verify",
    );
}
