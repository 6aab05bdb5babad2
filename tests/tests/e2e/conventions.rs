//! The Unix conventions of the `meshnode` binary against real daemons: a closed pipe ends a
//! command quietly, the exit code names the kind of failure, a fetch writes the format its
//! output's name says (or standard output as an Arrow IPC stream), progress is drawn only
//! on a terminal, and config errors say where they are.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_tests::{TestNode, meshnode_bin, write_file};

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
    let sales = sales_with_orders(ORDERS);

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

    let churn = TestNode::start_seeing("churn", &sales, "sales/orders");
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
        &cli(&churn, &["fetch", "sales/orders", "--out", "x.csv"]),
        2,
        "cannot tell the output format from `.csv`",
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

/// A CSV whose values are awkward for any converter: quotes, commas, line breaks, unicode,
/// empty strings, nulls in number columns, leading zeros, large integers, zoned timestamps.
fn awkward_csv(rows: usize) -> String {
    let mut csv = String::from("id,name,code,amount,big,at\n");
    for i in 0..rows {
        let name = match i % 5 {
            0 => format!("\"plain, with comma {i}\""),
            1 => format!("\"quote \"\"{i}\"\" and\nline break\""),
            2 => String::new(),
            3 => format!("ünï {i} ✓"),
            _ => format!("tab\there {i}"),
        };
        let amount = if i % 7 == 0 {
            String::new()
        } else {
            format!("{}.25", i * 3)
        };
        csv.push_str(&format!(
            "{i},{name},{:05},{amount},{},2024-12-{:02}T10:00:00Z\n",
            i % 1000,
            i64::MAX - i as i64,
            1 + i % 28
        ));
    }
    csv
}

/// A running `sales` node that has published `orders` from `csv` (auto approval, purpose
/// `analytics`).
fn sales_with_orders(csv: &str) -> TestNode {
    let sales = TestNode::start("sales", &[]);
    let path = write_file(sales.dir.parent().unwrap(), "orders.csv", csv);
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        path.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
    ]);
    assert!(out.success, "publish failed: {}", out.stderr);
    sales
}

/// Provider `sales` publishing `orders` from `csv`, consumer `churn` holding an agreement.
fn agreed_mesh(csv: &str) -> (TestNode, TestNode) {
    let sales = sales_with_orders(csv);
    let churn = TestNode::start_seeing("churn", &sales, "sales/orders");
    churn.share_agreed("sales/orders", "analytics", &[]);
    (sales, churn)
}

/// Compares what pyarrow reads from `path` (as `how`: `file`, `stream` or `parquet`) with
/// the reference Arrow IPC file; prints `rows equal`, then what differs.
const COMPARE: &str = "\
import sys, pyarrow.ipc as ipc, pyarrow.parquet as pq
ref = ipc.open_file(sys.argv[1]).read_all()
how, path = sys.argv[2], sys.argv[3]
if how == 'stream':
    got = ipc.open_stream(sys.stdin.buffer if path == '-' else path).read_all()
elif how == 'parquet':
    got = pq.read_table(path)
    # Parquet has no seconds unit: such timestamps are stored in milliseconds (the same
    # instants, as pyarrow's own writer does).
    import pyarrow as pa
    ref = ref.cast(pa.schema([
        pa.field(f.name, pa.timestamp('ms', f.type.tz), f.nullable)
        if pa.types.is_timestamp(f.type) and f.type.unit == 's' else f
        for f in ref.schema]))
else:
    got = ipc.open_file(path).read_all()
print(got.num_rows, got.equals(ref))
if not got.equals(ref):
    print('reference:', ref.schema, 'got:', got.schema)
    for name in ref.column_names:
        if name not in got.column_names or not got.column(name).equals(ref.column(name)):
            print('column', name, 'differs:', ref.column(name)[:3], got.column(name)[:3] if name in got.column_names else None)
";

#[test]
fn fetch_output_follows_the_extension_and_streams_verified_data_to_stdout() {
    let has_pyarrow = mesh_tests::require_pyarrow();
    let rows = 500;
    let (_sales, churn) = agreed_mesh(&awkward_csv(rows));
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let fetch = |out: &str, extra: &[&str]| {
        let mut args = vec!["fetch", "sales/orders", "--out", out];
        args.extend(extra);
        cli(&churn, &args)
    };

    // The reference: an Arrow IPC file. Standard error is not a terminal: no progress.
    let reference = path("ref.arrow");
    let out = fetch(reference.to_str().unwrap(), &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.is_empty(),
        "stderr without a terminal: {}",
        out.stderr
    );
    assert!(
        out.stdout.contains(&format!("{rows} rows")),
        "{}",
        out.stdout
    );

    // Parquet and the IPC stream format by extension, the stream by --format too.
    for (name, extra, format) in [
        ("x.parquet", &[][..], "parquet"),
        ("x.arrows", &[][..], "arrows"),
        ("x.dat", &["--format", "arrows"][..], "arrows"),
        ("y.arrow", &["--format", "parquet"][..], "parquet"),
    ] {
        let out = fetch(path(name).to_str().unwrap(), &[extra, &["--json"]].concat());
        assert_eq!(out.code, Some(0), "{name}: {}", out.stderr);
        assert!(out.stderr.is_empty(), "{name}: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["format"], format, "{v}");
        assert_eq!(v["rows"], rows as u64, "{v}");
        assert_eq!(
            v["file_bytes"].as_u64(),
            Some(std::fs::metadata(path(name)).unwrap().len())
        );
        let magic = std::fs::read(path(name)).unwrap();
        if format == "parquet" {
            assert!(magic.starts_with(b"PAR1") && magic.ends_with(b"PAR1"));
        } else {
            // A stream starts with its schema message, a file with `ARROW1`.
            assert_eq!(&magic[..4], &[0xff; 4]);
            assert!(magic.ends_with(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
        }
        if has_pyarrow {
            let how = if format == "arrows" { "stream" } else { format };
            let got = mesh_tests::python(
                COMPARE,
                &[
                    reference.to_str().unwrap(),
                    how,
                    path(name).to_str().unwrap(),
                ],
            );
            assert!(got.starts_with(&format!("{rows} True")), "{name}: {got}");
        }
    }

    // `--out -` piped into pyarrow's open_stream, as a user would.
    let mut fetcher = Command::new(meshnode_bin())
        .args([
            "fetch",
            "sales/orders",
            "--out",
            "-",
            "--data-dir",
            churn.dir_str(),
        ])
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshnode fetch");
    let stream = fetcher.stdout.take().unwrap();
    let reader = if has_pyarrow {
        Command::new("python3")
            .args(["-c", COMPARE, reference.to_str().unwrap(), "stream", "-"])
            .stdin(stream)
            .output()
            .expect("run python3")
    } else {
        Command::new("cat").stdin(stream).output().expect("run cat")
    };
    let fetched = fetcher.wait_with_output().unwrap();
    assert_eq!(
        fetched.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    // Only data on standard output, nothing on standard error without a terminal.
    assert!(
        fetched.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert!(
        reader.status.success(),
        "{}",
        String::from_utf8_lossy(&reader.stderr)
    );
    if has_pyarrow {
        assert_eq!(
            String::from_utf8_lossy(&reader.stdout).trim(),
            format!("{rows} True")
        );
    } else {
        assert!(reader.stdout.starts_with(&[0xff; 4]));
    }
    // The stream is the stored IPC stream: byte-identical to the `.arrows` fetch.
    let piped = Command::new(meshnode_bin())
        .args([
            "fetch",
            "sales/orders",
            "--out",
            "-",
            "--data-dir",
            churn.dir_str(),
        ])
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert_eq!(piped.stdout, std::fs::read(path("x.arrows")).unwrap());
    // The daemon's staging area is empty again; no file named `-` appeared.
    let staging = churn.dir.join("received/.stream");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the staging area: {left:?}");
    assert!(!path("-").exists());

    // Refused as usage (2), before anything is written: a format nobody can tell, and
    // standard output asked for something other than a stream.
    for (out, extra, needle) in [
        (
            "x.csv",
            &[][..],
            "cannot tell the output format from `.csv`",
        ),
        ("noext", &[][..], "--format arrow|arrows|parquet"),
        (
            "-",
            &["--format", "parquet"][..],
            "writes an Arrow IPC stream, not parquet",
        ),
        ("-", &["--json"][..], "--json cannot go there too"),
    ] {
        let target = if out == "-" {
            out.to_owned()
        } else {
            path(out).to_str().unwrap().to_owned()
        };
        assert_exit(&fetch(&target, extra), 2, needle);
    }
    // Nothing but the outputs asked for: no partial, lock or conversion files.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ref.arrow", "x.arrows", "x.dat", "x.parquet", "y.arrow"]
    );
}

#[test]
fn config_errors_name_the_file_line_column_and_key() {
    let node = TestNode::init("sales", &[]);
    node.edit_config("api_port = 0", "api_port = \"eighty\"");
    let config = node.dir.join("meshnode.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("api_port"))
        .unwrap()
        + 1;
    let out = Command::new(meshnode_bin())
        .args(["run", "--data-dir", node.dir_str()])
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run meshnode");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        format!("{}", config.display()),
        format!("line {line}, column 12"),
        "key `api_port`".to_owned(),
        "expected u16".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "`{needle}` not in: {stderr}");
    }
}

#[test]
fn run_and_status_on_an_uninitialised_data_directory_both_exit_3_and_say_to_init() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = tmp.path().join("missing");
    for dir in [&empty, &missing] {
        let dir = dir.to_str().unwrap();
        for command in ["run", "status"] {
            let out = Command::new(meshnode_bin())
                .args([command, "--data-dir", dir])
                .env_remove("MESHNODE_DATA_DIR")
                .stdin(Stdio::null())
                .output()
                .expect("run meshnode");
            let out = Exit {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
            assert_exit(&out, 3, "is not a meshnode data directory");
            assert!(
                out.stderr
                    .contains(&format!("meshnode init --data-dir {dir} --domain NAME")),
                "`{command}`: {}",
                out.stderr
            );
        }
    }
    // Nothing was created where nothing was.
    assert!(!missing.exists());
}

#[test]
fn a_publish_that_would_eat_into_the_disk_reserve_stops_with_exit_74_and_leaves_nothing() {
    let mut sales = TestNode::init("sales", &[]);
    // More than any disk has free: every write of product data would eat into it.
    sales.edit_config("disk_reserve_mib = 256", "disk_reserve_mib = 1000000000000");
    sales.run();
    let input = write_file(sales.dir.parent().unwrap(), "orders.csv", ORDERS);
    let out = cli(
        &sales,
        &["publish", "orders", "--from", input.to_str().unwrap()],
    );
    assert_exit(&out, 74, "disk_reserve_mib");
    assert!(out.stderr.contains("orders.csv"), "{}", out.stderr);
    let catalog = cli(&sales, &["catalog", "--json"]);
    assert_eq!(catalog.code, Some(0), "{}", catalog.stderr);
    assert!(!catalog.stdout.contains("orders"), "{}", catalog.stdout);
    let staged = sales.dir.join("products").join(".staging");
    let left: Vec<_> = std::fs::read_dir(&staged)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", staged.display());
}

/// Runs `args` of `meshnode` with a pseudo-terminal as standard output and error (through
/// util-linux `script`), returning the exit code and everything written to the terminal.
fn on_terminal(args: &[&str]) -> (Option<i32>, String) {
    let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
    let mut line = quote(meshnode_bin().to_str().unwrap());
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let out = Command::new("script")
        .args(["-q", "-e", "-f", "-c", &line, "/dev/null"])
        .env_remove("MESHNODE_DATA_DIR")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs a command on a pseudo-terminal");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The largest number printed right before `unit` in `text` (progress figures).
fn largest_before(text: &str, unit: &str) -> f64 {
    text.match_indices(unit)
        .filter_map(|(at, _)| {
            let before = &text[..at];
            let start = before
                .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
                .map_or(0, |i| i + 1);
            before[start..].parse::<f64>().ok()
        })
        .fold(0.0, f64::max)
}

#[test]
fn progress_shows_bytes_rows_and_rate_on_a_terminal_only() {
    let rows = 200_000;
    let mut csv = String::with_capacity(rows * 60);
    csv.push_str("id,region,amount,note\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "{i},region-{},{}.5,note number {i} here\n",
            i % 17,
            i % 1000
        ));
    }
    let sales = TestNode::start("sales", &[]);
    let path = write_file(sales.dir.parent().unwrap(), "big.csv", &csv);
    let (code, screen) = on_terminal(&[
        "publish",
        "big",
        "--from",
        path.to_str().unwrap(),
        "--approval",
        "auto",
        "--data-dir",
        sales.dir_str(),
    ]);
    assert_eq!(code, Some(0), "{screen}");
    // The bar: label, rows, bytes read of the input's size, rate.
    assert!(screen.contains("publishing big"), "{screen}");
    assert!(screen.contains("read, "), "{screen}");
    assert!(screen.contains("/s"), "{screen}");
    assert_eq!(largest_before(&screen, " rows ["), rows as f64, "{screen}");
    let mib = csv.len() as f64 / (1024.0 * 1024.0);
    let shown = largest_before(&screen, " MiB read");
    assert!((shown - mib).abs() < 0.05, "{shown} MiB of {mib}: {screen}");

    // What the bar polls: the daemon's figures while the ingest runs (a new version, through
    // the API), at most the input's size, and gone once the publish answered.
    let body = serde_json::json!({
        "name": "big", "from": path.to_str().unwrap(), "progress": "conventions-1",
    })
    .to_string();
    let publisher = std::thread::scope(|scope| {
        let publisher = scope.spawn(|| sales.api("POST", "/v1/publish", Some(&body)));
        let mut seen = Vec::new();
        while !publisher.is_finished() {
            let (status, text) = sales.api("GET", "/v1/progress/conventions-1", None);
            if status == 200 {
                seen.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, text) = publisher.join().unwrap();
        assert_eq!(status, 200, "{text}");
        seen
    });
    let total = csv.len() as u64;
    assert!(
        publisher
            .iter()
            .any(|v| v["rows"].as_u64() > Some(0) && v["bytes"].as_u64() > Some(0)),
        "no figures while publishing: {publisher:?}"
    );
    for v in &publisher {
        // Unknown only until the ingest opened the input.
        let known = v["total_bytes"].as_u64();
        assert!(
            known == Some(total) || (known.is_none() && v["bytes"] == 0),
            "{v}"
        );
        assert!(v["bytes"].as_u64().unwrap() <= total, "{v}");
        assert!(v["rows"].as_u64().unwrap() <= rows as u64, "{v}");
    }
    let (status, _) = sales.api("GET", "/v1/progress/conventions-1", None);
    assert_eq!(status, 404);
    let (status, text) = sales.api("GET", "/v1/progress/not%20an%20id", None);
    assert_eq!(status, 404, "{text}");

    let churn = TestNode::start_seeing("churn", &sales, "sales/big");
    churn.share_agreed("sales/big", "any", &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.arrow");
    let (code, screen) = on_terminal(&[
        "fetch",
        "sales/big",
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        churn.dir_str(),
    ]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("fetching sales/big"), "{screen}");
    assert_eq!(largest_before(&screen, " rows "), rows as f64, "{screen}");
    assert!(largest_before(&screen, " MiB received, ") > 1.0, "{screen}");
    assert!(screen.contains("/s"), "{screen}");

    // The same fetch without a terminal: not a byte of progress.
    let out = churn.fetch("sales/big", &dir.path().join("quiet.arrow"), &[]);
    assert!(out.success, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert!(!out.stdout.contains("received,"), "{}", out.stdout);
}
