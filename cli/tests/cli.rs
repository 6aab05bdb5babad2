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
