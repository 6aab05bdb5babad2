//! The `meshnode` binary on its own, without a daemon. (Its presence also makes `cargo test`
//! build the binary that the end-to-end tests in `mesh-tests` drive.)

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn meshnode(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshnode"))
        .args(args)
        .env_remove("MESHNODE_DATA_DIR")
        .output()
        .expect("run meshnode")
}

#[test]
fn help_lists_every_command() {
    let out = meshnode(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "init", "run", "publish", "catalog", "share", "fetch", "peers", "status", "audit", "demo",
    ] {
        assert!(
            help.contains(command),
            "`{command}` missing from --help:\n{help}"
        );
    }
}

#[test]
fn init_never_replaces_a_node_that_lost_its_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("node");
    let dir = root.to_str().unwrap();
    let out = meshnode(&["init", "--data-dir", dir, "--domain", "sales"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read(root.join("meshnode.toml")).unwrap();
    // A careless operator moves the key away, and follows `run`'s advice to `init`.
    std::fs::remove_file(root.join("identity.key")).unwrap();
    let again = meshnode(&["init", "--data-dir", dir, "--domain", "sales"]);
    assert!(!again.status.success());
    let message = String::from_utf8_lossy(&again.stderr);
    assert!(message.contains("restore `identity.key`"), "{message}");
    // The node's database and config are as they were; no new identity was made.
    assert!(root.join("db").is_dir());
    assert_eq!(std::fs::read(root.join("meshnode.toml")).unwrap(), config);
    assert!(!root.join("identity.key").exists());
    let leftovers: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".meshnode.toml-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn init_writes_a_private_identity_and_a_valid_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let dir = dir.to_str().unwrap();
    let out = meshnode(&["init", "--data-dir", dir, "--domain", "sales"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::path::Path::new(dir).join("identity.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let config = std::fs::read_to_string(std::path::Path::new(dir).join("meshnode.toml")).unwrap();
    assert!(config.contains("domain = \"sales\""), "{config}");

    let bad = meshnode(&["init", "--data-dir", "/tmp/x", "--domain", "Not Valid"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("domain"));

    let no_daemon = meshnode(&["catalog", "--data-dir", dir]);
    assert!(!no_daemon.status.success());
    assert!(
        String::from_utf8_lossy(&no_daemon.stderr).contains("meshnode run --data-dir"),
        "{}",
        String::from_utf8_lossy(&no_daemon.stderr)
    );
}

#[test]
fn help_documents_exit_codes_and_the_environment() {
    let out = meshnode(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Exit codes:",
        "2   usage",
        "3   not found",
        "4   refused by policy",
        "5   unreachable",
        "6   verification failed",
        "74  I/O",
        "MESHNODE_DATA_DIR",
    ] {
        assert!(
            help.contains(needle),
            "`{needle}` missing from --help:\n{help}"
        );
    }
    // The parser itself knows the variable: subcommands show it next to --data-dir.
    let out = meshnode(&["status", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[env: MESHNODE_DATA_DIR"), "{help}");
}

#[test]
fn completions_and_man_page_come_from_the_argument_definitions() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = meshnode(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {:?}", out);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("meshnode"), "{shell}: {script}");
        assert!(script.contains("data-dir"), "{shell}: {script}");
        assert!(script.contains("completions"), "{shell}: {script}");
    }
    let out = meshnode(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    let out = meshnode(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.lines().any(|l| l.starts_with(".TH meshnode")),
        "no .TH header: {page}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS", "Exit codes:", "publish"] {
        assert!(page.contains(section), "`{section}` missing: {page}");
    }
}

#[test]
fn exit_codes_for_usage_missing_directory_and_absent_daemon() {
    let out = meshnode(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    // An output format nobody can tell is refused before any daemon is looked for.
    let out = meshnode(&["fetch", "sales/orders", "--out", "x.xlsx"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot tell the output format from `.xlsx`")
            && stderr.contains("--format arrow|arrows|parquet"),
        "{stderr}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let missing = missing.to_str().unwrap();
    let out = meshnode(&["status", "--data-dir", missing]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // The same directory named by the environment instead of the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_meshnode"))
        .args(["status"])
        .env("MESHNODE_DATA_DIR", missing)
        .output()
        .expect("run meshnode");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(missing), "{stderr}");

    // Initialised, never started: no daemon answers.
    let dir = tmp.path().join("idle");
    let dir = dir.to_str().unwrap();
    let out = meshnode(&["init", "--data-dir", dir, "--domain", "idle"]);
    assert!(out.status.success(), "{out:?}");
    let out = meshnode(&["catalog", "--data-dir", dir]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no meshnode daemon is running"), "{stderr}");
}

#[test]
fn output_that_cannot_be_written_is_an_io_failure() {
    // A full disk behind standard output: every command that prints says so and exits 74,
    // `--help` and `--version` (printed by clap) as much as the generated pages.
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    for args in [
        &["--help"][..],
        &["--version"],
        &["fetch", "--help"],
        &["man"],
        &["completions", "bash"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_meshnode"))
            .args(args)
            .env_remove("MESHNODE_DATA_DIR")
            .stdout(full().expect("open /dev/full"))
            .output()
            .expect("run meshnode");
        assert_eq!(out.status.code(), Some(74), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cannot write to standard output: No space left on device"),
            "{args:?}: {stderr}"
        );
    }
    // Usage errors still go to standard error, with clap's exit code.
    let out = Command::new(env!("CARGO_BIN_EXE_meshnode"))
        .args(["fetch"])
        .stdout(full().expect("open /dev/full"))
        .output()
        .expect("run meshnode");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
}
