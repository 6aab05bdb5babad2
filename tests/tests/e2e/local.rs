//! Local users of the node's host: clients without the token that open connections to the
//! control API or the Flight endpoint and stay silent are closed without keeping the
//! daemon's descriptors or memory, while the token holder is still answered; and the data
//! directory, with everything the daemon writes in it, is private to the node's user.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_node::server::{API_HEADER_TIMEOUT, MAX_API_CONNECTIONS};
use mesh_tests::{
    CliOutput, TestNode, meshnode, meshnode_bin, run_to_refusal, wait_until, write_file,
};

/// The pid of the daemon serving `dir` (`meshnode run --data-dir DIR`).
fn daemon_pid(dir: &Path) -> u32 {
    let wanted = dir.to_str().expect("utf-8 path");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.windows(2).any(|w| w[0] == b"run")
                && args
                    .windows(2)
                    .any(|w| w == [&b"--data-dir"[..], wanted.as_bytes()])
        })
        .unwrap_or_else(|| panic!("no daemon runs on {wanted}"))
}

/// Descriptors the process `pid` holds.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}

/// `count` connections to `addr`, each having sent `opening` and then nothing.
fn silent_clients(addr: &str, count: usize, opening: &[u8]) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.write_all(opening).expect("send the opening");
            stream
        })
        .collect()
}

/// Asserts that the server closes every connection of `clients` (end of stream, or a reset)
/// before `deadline`; whatever it sends first (HTTP/2 settings) is read and dropped.
fn assert_all_closed_by(clients: Vec<TcpStream>, deadline: Instant, what: &str) {
    for (i, mut stream) in clients.into_iter().enumerate() {
        let mut buf = [0u8; 256];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what} connection {i} still open");
            stream.set_read_timeout(Some(left)).expect("read timeout");
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{what} connection {i} still open: {e}"),
            }
        }
    }
}

#[test]
fn silent_api_clients_are_closed_and_the_token_holder_is_answered_meanwhile() {
    let node = TestNode::start("local", &[]);
    let addr = std::fs::read_to_string(node.dir.join("api.addr")).unwrap();
    let pid = daemon_pid(&node.dir);
    let before = open_descriptors(pid);

    // Three times as many clients as the API keeps, each with part of a request head.
    let opened = Instant::now();
    let silent = silent_clients(
        addr.trim(),
        3 * MAX_API_CONNECTIONS,
        b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    );
    // The daemon keeps a bounded number of them (before any times out).
    let bound = before + MAX_API_CONNECTIONS + 8;
    let held = wait_until(Duration::from_secs(2), || open_descriptors(pid) <= bound);
    assert!(
        held.is_some(),
        "the daemon holds {} descriptors, more than {bound}",
        open_descriptors(pid)
    );
    // The CLI, with the token, is answered at once, not after the silent ones time out.
    let status = node.cli(&["status", "--json"]);
    assert!(status.success, "status failed: {}", status.stderr);
    assert!(
        opened.elapsed() < API_HEADER_TIMEOUT,
        "status took {:?}",
        opened.elapsed()
    );
    assert_eq!(status.json()["domain"], "local");
    // Every silent client is closed within the header timeout.
    assert_all_closed_by(
        silent,
        opened + API_HEADER_TIMEOUT + Duration::from_secs(3),
        "silent API",
    );
    assert!(node.cli(&["status"]).success);
}

/// The Python of the repository's virtual environment (made by scripts/test), else the
/// `python3` on the path (as `flight.rs`).
fn python_bin() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

#[test]
fn silent_flight_clients_are_closed_and_a_client_with_the_token_is_answered_meanwhile() {
    use mesh_node::flight::{FIRST_CALL_DEADLINE, MAX_CONNECTIONS};
    let node = TestNode::start("flight", &[]);
    let status = node.status();
    let addr = status["flight_addr"]
        .as_str()
        .expect("flight_addr")
        .to_owned();
    let token = std::fs::read_to_string(node.dir.join("api.token")).unwrap();
    let pid = daemon_pid(&node.dir);
    let before = open_descriptors(pid);

    let opened = Instant::now();
    // Some send the whole HTTP/2 preface and no call, some only part of it.
    let mut silent = silent_clients(
        &addr,
        2 * MAX_CONNECTIONS,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    );
    silent.extend(silent_clients(&addr, 2 * MAX_CONNECTIONS, b"PRI * HTTP/2"));
    let bound = before + MAX_CONNECTIONS + 8;
    let held = wait_until(Duration::from_secs(2), || open_descriptors(pid) <= bound);
    assert!(
        held.is_some(),
        "the daemon holds {} descriptors, more than {bound}",
        open_descriptors(pid)
    );
    // A client with the token lists the flights meanwhile.
    let out = Command::new(python_bin())
        .arg("-c")
        .arg(
            "import sys, pyarrow.flight as f\n\
             c = f.FlightClient('grpc://' + sys.argv[1])\n\
             o = f.FlightCallOptions(headers=[(b'authorization', ('Bearer ' + sys.argv[2]).encode())], timeout=10)\n\
             print(len(list(c.list_flights(options=o))))",
        )
        .args([&addr, token.trim()])
        .output()
        .expect("run python (run the tests with scripts/test, which makes .venv)");
    assert!(
        out.status.success(),
        "the client with the token failed (is pyarrow installed? scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(
        opened.elapsed() < FIRST_CALL_DEADLINE,
        "{:?}",
        opened.elapsed()
    );
    assert_all_closed_by(
        silent,
        opened + FIRST_CALL_DEADLINE + Duration::from_secs(3),
        "silent Flight",
    );
}

/// `meshnode ARGS` started by `sh` under umask 022, the default of most systems.
fn under_umask_022(args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask 022 && exec \"$@\"", "sh"])
        .arg(meshnode_bin())
        .args(args)
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(Stdio::null());
    command
}

/// A daemon this test started; killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `meshnode run` on `dir` under umask 022, its log in `log`, once its API answers.
fn run_daemon(dir: &Path, log: &Path) -> Daemon {
    let log_file = std::fs::File::create(log).unwrap();
    let child = under_umask_022(&["run", "--data-dir", dir.to_str().unwrap()])
        .env("MESHNODE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn meshnode run");
    let mut daemon = Daemon(child);
    let dir_s = dir.to_str().unwrap();
    let ready = wait_until(Duration::from_secs(20), || {
        dir.join("api.addr").exists() && meshnode(&["status", "--data-dir", dir_s]).success
    });
    if ready.is_none() {
        let exited = daemon.0.try_wait().ok().flatten();
        panic!(
            "daemon did not start ({exited:?}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    daemon
}

/// Permission bits of `path`, in octal.
fn mode_of(path: &Path) -> String {
    let mode = std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode();
    format!("{:04o}", mode & 0o7777)
}

/// Every file and directory under `dir` (itself included) that the group or others may
/// read, write or enter, with its mode.
fn not_private(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.permissions().mode() & 0o077 != 0 {
            found.push(format!("{} {}", mode_of(&path), path.display()));
        }
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    found
}

#[test]
fn under_umask_022_the_data_directory_and_everything_the_daemon_writes_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let dir_s = dir.to_str().unwrap();
    let init = CliOutput::of(
        under_umask_022(&["init", "--data-dir", dir_s, "--domain", "private"])
            .output()
            .unwrap(),
    );
    assert!(init.success, "init failed: {}", init.stderr);
    assert_eq!(mode_of(&dir), "0700");
    assert_eq!(not_private(&dir), Vec::<String>::new(), "after init");

    // A node initialised before the directory was made private: readable by others.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = tmp.path().join("private.log");
    let daemon = run_daemon(&dir, &log);
    assert_eq!(mode_of(&dir), "0700", "run makes the directory private");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("readable by other users"), "{logged}");

    let csv = write_file(tmp.path(), "orders.csv", "order_id,amount\n1,2.5\n2,3.5\n");
    let publish = meshnode(&[
        "publish",
        "orders",
        "--from",
        csv.to_str().unwrap(),
        "--data-dir",
        dir_s,
    ]);
    assert!(publish.success, "publish failed: {}", publish.stderr);
    assert!(dir.join("products").is_dir());
    assert_eq!(not_private(&dir), Vec::<String>::new(), "after a publish");
    drop(daemon);
}

#[test]
fn a_data_directory_writable_by_others_or_of_another_user_is_refused_by_init_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    let set_mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };

    // init: a directory anyone can write is refused and left as it was.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    let open_s = open.to_str().unwrap();
    let out = meshnode(&["init", "--data-dir", open_s, "--domain", "open"]);
    assert_eq!(out.code, Some(2), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("writable by other users"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("chmod 700 {open_s}")),
        "{}",
        out.stderr
    );
    assert_eq!(mode_of(&open), "0777");
    assert_eq!(
        std::fs::read_dir(&open).unwrap().count(),
        0,
        "nothing written"
    );

    // A node whose directory became writable by others does not start.
    set_mode(&open, 0o700);
    let out = meshnode(&["init", "--data-dir", open_s, "--domain", "open"]);
    assert!(out.success, "init failed: {}", out.stderr);
    set_mode(&open, 0o770);
    let out = run_to_refusal(&["run", "--data-dir", open_s], Duration::from_secs(20));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("chmod 700"), "{}", out.stderr);
    assert!(!open.join("api.token").exists(), "no token written");

    // A directory of another user (root can hand one over: the tests' container).
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    set_mode(&theirs, 0o700);
    match std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return,
        Err(e) => panic!("chown: {e}"),
    }
    let theirs_s = theirs.to_str().unwrap();
    let out = meshnode(&["init", "--data-dir", theirs_s, "--domain", "theirs"]);
    assert_eq!(out.code, Some(2), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("belongs to user 65534"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("chown"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_dir(&theirs).unwrap().count(),
        0,
        "nothing written"
    );

    set_mode(&open, 0o700);
    std::os::unix::fs::chown(&open, Some(65534), None).unwrap();
    let out = run_to_refusal(&["run", "--data-dir", open_s], Duration::from_secs(20));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("belongs to user 65534"),
        "{}",
        out.stderr
    );
}
