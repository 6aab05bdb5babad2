//! The deployment files in `configs/`: the systemd unit passes `systemd-analyze verify` and
//! keeps its hardening; the container file has the structure the README promises (it cannot
//! be built here: that needs a container engine and network access).

use std::path::{Path, PathBuf};
use std::process::Command;

use mesh_tests::meshnode_bin;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The `Key=value` settings of a unit file, in order (comments and sections left out).
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// `systemd-analyze verify` on `unit` written as `meshnode.service` in a fresh directory:
/// (exit status success, stderr).
fn verify(unit: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meshnode.service");
    std::fs::write(&path, unit).expect("write the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "SKIPPED: systemd-analyze is not installed (Debian: `apt-get install systemd`; .ci/run installs it)"
        );
        return;
    }
    let unit = read("configs/meshnode.service");
    // verify checks that ExecStart names an executable: point it at the binary just built.
    let bin = meshnode_bin();
    let exec = "ExecStart=/usr/local/bin/meshnode run";
    assert!(unit.contains(exec), "the unit no longer says `{exec}`");
    let local = unit.replace(exec, &format!("ExecStart={} run", bin.display()));
    let (ok, stderr) = verify(&local);
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );

    // The check can fail: a misspelt key and a missing binary are reported.
    let (_, stderr) = verify(&local.replace("ProtectHome=", "ProtectHom="));
    assert!(stderr.contains("ProtectHom"), "{stderr}");
    let (ok, _) = verify(&unit.replace(exec, "ExecStart=/nonexistent/meshnode run"));
    assert!(!ok, "a missing ExecStart binary must fail verification");
}

#[test]
fn systemd_unit_runs_unprivileged_in_its_state_directory() {
    let settings = unit_settings(&read("configs/meshnode.service"));
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let want = [
        ("User", "meshnode"),
        ("StateDirectory", "meshnode"),
        ("Environment", "MESHNODE_DATA_DIR=/var/lib/meshnode"),
        ("ExecStart", "/usr/local/bin/meshnode run"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("Restart", "on-failure"),
    ];
    for (key, value) in want {
        assert!(
            get(key).contains(&value),
            "{key}={value} missing from the unit (has {:?})",
            get(key)
        );
    }
    let families = get("RestrictAddressFamilies").join(" ");
    let mut families: Vec<&str> = families.split_whitespace().collect();
    families.sort_unstable();
    assert_eq!(
        families,
        ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"],
        "address families"
    );
    let nofile: u64 = get("LimitNOFILE")
        .first()
        .and_then(|v| v.parse().ok())
        .expect("LimitNOFILE set to a number");
    assert!(nofile >= 4096, "LimitNOFILE={nofile}");
    // Nothing runs as root, before or after the daemon.
    for key in [
        "ExecStartPre",
        "ExecStartPost",
        "ExecStopPost",
        "PermissionsStartOnly",
    ] {
        assert!(get(key).is_empty(), "{key} in the unit");
    }
}

/// The instructions of a Containerfile: (keyword, arguments), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn containerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let steps = instructions(&read("configs/Containerfile"));
    let stages: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (&steps[stages[0]..stages[1]], &steps[stages[1]..]);
    assert!(
        build[0].1.starts_with("docker.io/library/rust:1.")
            && build[0].1.contains("-slim-bookworm AS builder"),
        "{:?}",
        build[0]
    );
    assert!(
        build
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("cargo build --release -p meshnode --locked")),
        "the build stage builds the locked release binary"
    );
    assert_eq!(runtime[0].1, "docker.io/library/debian:bookworm-slim");
    let has = |keyword: &str, args: &str| {
        runtime
            .iter()
            .any(|(k, a)| k == keyword && a.contains(args))
    };
    assert!(has("COPY", "--from=builder /usr/local/bin/meshnode"));
    assert!(has("USER", "meshnode"), "the runtime stage drops root");
    assert!(!has("USER", "root"));
    assert!(has("VOLUME", "/var/lib/meshnode"));
    assert!(has("ENV", "MESHNODE_DATA_DIR=/var/lib/meshnode"));
    assert!(has("EXPOSE", "4001/udp") && has("EXPOSE", "4002/udp"));
    assert!(has("ENTRYPOINT", "\"/usr/local/bin/meshnode\""));
    // USER comes before the entry point, so nothing the image runs is root.
    let position = |keyword: &str| runtime.iter().position(|(k, _)| k == keyword);
    assert!(position("USER") < position("ENTRYPOINT"));

    let ignore = read(".dockerignore");
    for entry in ["target/", ".venv/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
}
