//! Identity and integrity of a node's data directory, with real daemons: a damaged key file,
//! a rolled-back or emptied database and a crash during ingest each give a clear outcome and
//! lose nothing that was acknowledged; version numbers are never reused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_protocol::PublicKey;
use mesh_tests::{CliOutput, TestNode, meshnode_bin, run_to_refusal, wait_until, write_file};

/// Runs `meshnode run` on `node`'s directory and expects it to refuse within 30 s; a daemon
/// that starts instead is killed and the test fails.
fn run_refused(node: &TestNode, extra: &[&str]) -> CliOutput {
    let mut args = vec!["run", "--data-dir", node.dir_str()];
    args.extend_from_slice(extra);
    let out = run_to_refusal(&args, Duration::from_secs(30));
    assert!(!out.success, "`run` exited successfully: {}", out.stderr);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn publish(node: &TestNode, name: &str, file: &Path) -> u64 {
    let out = node.cli(&["publish", name, "--from", file.to_str().unwrap(), "--json"]);
    out.json()["version"].as_u64().expect("a version")
}

/// The value of the `label` line (`secret` or `public`) of an identity file.
fn key_line<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{text}"))
}

#[test]
fn a_changed_key_digit_refuses_to_start_and_names_the_key_file() {
    let mut node = TestNode::init("sales", &[]);
    let key = node.dir.join("identity.key");
    let original = std::fs::read_to_string(&key).unwrap();
    let public = PublicKey::from_hex(key_line(&original, "public")).unwrap();
    for label in ["secret", "public"] {
        // One hex digit changed, as a disk error or a careless edit would.
        let value = key_line(&original, label);
        let mut changed = value.as_bytes().to_vec();
        changed[20] = if changed[20] == b'a' { b'b' } else { b'a' };
        let changed = String::from_utf8(changed).unwrap();
        std::fs::write(
            &key,
            original.replace(&format!("{label} {value}"), &format!("{label} {changed}")),
        )
        .unwrap();
        let out = run_refused(&node, &[]);
        assert!(out.stderr.contains("identity.key"), "{}", out.stderr);
        assert!(out.stderr.contains("different domain"), "{}", out.stderr);
        assert!(out.stderr.contains("backup"), "{}", out.stderr);
        assert!(
            out.stderr.contains(&public.fingerprint()),
            "names the recorded key: {}",
            out.stderr
        );
        assert!(!node.dir.join("api.addr").exists());
    }
    // The restored file starts the node as itself.
    std::fs::write(&key, &original).unwrap();
    node.run();
    assert_eq!(node.status()["public_key"], public.to_hex());
    assert_eq!(node.status()["fingerprint"].as_str().unwrap().len(), 16);
}

#[test]
fn a_rolled_back_store_is_refused_and_versions_are_never_reused() {
    let mut node = TestNode::start("sales", &[]);
    let csv = write_file(&node.dir, "a.csv", "a,b\n1,x\n2,y\n");
    assert_eq!(publish(&node, "things", &csv), 1);
    node.stop();
    let backup = node.dir.with_file_name("db-backup");
    copy_dir(&node.dir.join("db"), &backup);
    node.run();
    assert_eq!(publish(&node, "things", &csv), 2);
    assert_eq!(publish(&node, "things", &csv), 3);
    node.stop();

    // The old database comes back (a restore from an old backup, a damaged sled file).
    std::fs::remove_dir_all(node.dir.join("db")).unwrap();
    copy_dir(&backup, &node.dir.join("db"));
    let out = run_refused(&node, &[]);
    assert!(out.stderr.contains("rolled back"), "{}", out.stderr);
    assert!(out.stderr.contains("--accept-rollback"), "{}", out.stderr);
    // `audit --verify` reads the log from disk while no daemon runs, and says the same.
    let verify = node.cli(&["audit", "--verify"]);
    assert!(!verify.success, "{}", verify.stdout);
    assert!(
        verify
            .stderr
            .contains("rolled back: the store has 1 audit entries, but the anchor"),
        "{}",
        verify.stderr
    );
    assert!(verify.stderr.contains("says 3"), "{}", verify.stderr);

    // The operator accepts the loss: the node starts, records it, and the next version is
    // 4, not a second, different version 2.
    node.run_with(&["--accept-rollback"]);
    assert_eq!(node.version_of("sales/things"), Some(1));
    assert_eq!(publish(&node, "things", &csv), 4);
    let audit = node.cli(&["audit", "--json"]).json();
    let kinds: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["publish", "rollback_accepted", "publish"]);
    let verify = node.cli(&["audit", "--verify"]);
    assert!(verify.success, "{}", verify.stderr);
    assert!(verify.stdout.contains("intact"), "{}", verify.stdout);
    // The next start needs no flag.
    node.stop();
    node.run();
    assert_eq!(node.version_of("sales/things"), Some(4));
}

#[test]
fn an_emptied_store_is_refused_with_or_without_its_anchor() {
    let mut node = TestNode::start("sales", &[]);
    let csv = write_file(&node.dir, "a.csv", "a,b\n1,x\n");
    assert_eq!(publish(&node, "things", &csv), 1);
    node.stop();
    std::fs::remove_dir_all(node.dir.join("db")).unwrap();
    let out = run_refused(&node, &[]);
    assert!(out.stderr.contains("rolled back"), "{}", out.stderr);
    let verify = node.cli(&["audit", "--verify"]);
    assert!(
        verify
            .stderr
            .contains("rolled back: the store has 0 audit entries"),
        "{}",
        verify.stderr
    );

    // The anchor gone too: the product files on disk still tell.
    std::fs::remove_file(node.dir.join("audit.anchor")).unwrap();
    std::fs::remove_dir_all(node.dir.join("db")).unwrap();
    let out = run_refused(&node, &[]);
    assert!(out.stderr.contains("is empty"), "{}", out.stderr);
    assert!(
        out.stderr.contains("1 published product file"),
        "{}",
        out.stderr
    );

    node.run_with(&["--accept-rollback"]);
    assert!(node.catalog().is_empty());
    assert_eq!(publish(&node, "things", &csv), 2);
}

/// Writes a CSV large enough that ingesting it takes a while.
fn big_csv(dir: &Path, rows: usize) -> PathBuf {
    let path = dir.join("big.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(out, "id,name,amount,day").unwrap();
    for i in 0..rows {
        writeln!(
            out,
            "{i},customer-{:08},{}.{:02},2024-01-{:02}",
            i * 7919 % 1_000_003,
            i % 10_000,
            i % 100,
            i % 28 + 1
        )
        .unwrap();
    }
    out.flush().unwrap();
    path
}

fn staging_files(node: &TestNode) -> Vec<PathBuf> {
    match std::fs::read_dir(node.dir.join("products").join(".staging")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn kill_during_ingest_leaves_no_staging_file_and_no_product() {
    let mut node = TestNode::start("sales", &[]);
    let small = write_file(
        &node.dir,
        "a.csv",
        "id,name,amount,day\n1,x,2.5,2024-01-01\n",
    );
    assert_eq!(publish(&node, "things", &small), 1);
    let big = big_csv(node.dir.parent().unwrap(), 1_500_000);

    let started = Instant::now();
    let publishing = Command::new(meshnode_bin())
        .args(["publish", "things", "--from", big.to_str().unwrap()])
        .args(["--data-dir", node.dir_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), || !staging_files(&node).is_empty())
        .expect("the ingest writes a staging file");
    // Let it write part of the file, then crash.
    wait_until(Duration::from_secs(20), || {
        staging_files(&node)
            .iter()
            .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 1 << 20))
    })
    .expect("the staging file grows");
    node.kill9();
    eprintln!("killed {:?} after the publish started", started.elapsed());
    let out = publishing.wait_with_output().unwrap();
    assert!(!out.status.success(), "the publish cannot have succeeded");
    let left = staging_files(&node);
    assert_eq!(left.len(), 1, "the crash left its staging file: {left:?}");

    node.run();
    assert!(staging_files(&node).is_empty(), "swept at start");
    assert!(
        node.log().contains("removed a staging file"),
        "the sweep is logged"
    );
    assert_eq!(node.version_of("sales/things"), Some(1), "no half product");
    assert!(!node.dir.join("products/things/2.arrow").exists());
    assert_eq!(publish(&node, "things", &small), 2);
    let verify = node.cli(&["audit", "--verify"]);
    assert!(verify.success, "{}", verify.stderr);
}

/// Starts `meshnode run` and reports whether it refused (with its stderr) or started; a
/// started daemon is returned running.
enum Start {
    Refused(String),
    Started(std::process::Child),
}

fn try_start(node: &TestNode) -> Start {
    let _ = std::fs::remove_file(node.dir.join("api.addr"));
    let mut child = Command::new(meshnode_bin())
        .args(["run", "--data-dir", node.dir_str()])
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshnode run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("collect output");
            return Start::Refused(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if node.dir.join("api.addr").exists() && node.cli(&["status"]).success {
            return Start::Started(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("`meshnode run` neither started nor refused");
}

/// A damaged sled file may lose its latest writes silently (sled truncates its log at the
/// first bad checksum). Whatever byte is hit, the node either refuses to start or starts
/// with everything it had.
#[test]
fn a_flipped_bit_in_the_database_never_starts_with_less_state() {
    let mut node = TestNode::start("sales", &[]);
    let csv = write_file(&node.dir, "a.csv", "a,b\n1,x\n2,y\n");
    for v in 1..=3 {
        assert_eq!(publish(&node, "things", &csv), v);
    }
    node.stop();
    let db_file = node.dir.join("db").join("db");
    let original = std::fs::read(&db_file).unwrap();
    let (mut refused, mut started) = (0, 0);
    for tenth in 1..10 {
        let at = original.len() * tenth / 10;
        let mut damaged = original.clone();
        damaged[at] ^= 0x10;
        std::fs::write(&db_file, &damaged).unwrap();
        match try_start(&node) {
            Start::Refused(stderr) => {
                assert!(
                    stderr.contains("rolled back")
                        || stderr.contains("damaged")
                        || stderr.contains("cannot open the database"),
                    "byte {at}: {stderr}"
                );
                refused += 1;
            }
            Start::Started(mut child) => {
                // Started: then nothing was lost.
                let version = node.version_of("sales/things");
                let verify = node.cli(&["audit", "--verify"]);
                let _ = child.kill();
                let _ = child.wait();
                assert_eq!(version, Some(3), "byte {at}: started with less");
                assert!(verify.success, "byte {at}: {}", verify.stderr);
                started += 1;
            }
        }
    }
    eprintln!("flipped bits: {refused} refused, {started} started intact");
    std::fs::write(&db_file, &original).unwrap();
    node.run();
    assert_eq!(node.version_of("sales/things"), Some(3));
}
