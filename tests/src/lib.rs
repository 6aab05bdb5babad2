//! # mesh-tests
//!
//! Harness for end-to-end tests: real `meshnode` processes on 127.0.0.1, driven through the
//! CLI exactly as a user would. Each [`TestNode`] owns a temporary data directory and a
//! daemon process that is killed when the node is dropped.

pub mod insider;
pub mod raw;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the `meshnode` binary built for these tests.
pub fn meshnode_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MESHNODE_BIN") {
        return PathBuf::from(p);
    }
    // tests/target/<profile>/deps/<test> -> target/<profile>/meshnode
    let mut path = std::env::current_exe().expect("test executable path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    let bin = path.join("meshnode");
    assert!(
        bin.exists(),
        "meshnode binary not found at {}: run `cargo build -p meshnode` first (or `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// Result of one CLI invocation.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status was success.
    pub success: bool,
    /// Exit code (`None` when a signal ended the process).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// What a finished `meshnode` process left.
    pub fn of(output: Output) -> Self {
        Self {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Parses stdout as JSON, panicking with both streams on failure.
    pub fn json(&self) -> Value {
        assert!(
            self.success,
            "command failed: {}{}",
            self.stdout, self.stderr
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `meshnode ARGS` to completion.
pub fn meshnode(args: &[&str]) -> CliOutput {
    let output = Command::new(meshnode_bin())
        .args(args)
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run meshnode");
    CliOutput::of(output)
}

/// Runs `meshnode ARGS` to its end, which must come within `within`: a command that runs on
/// instead of refusing (a daemon that started) is killed and the test fails.
pub fn run_to_refusal(args: &[&str], within: Duration) -> CliOutput {
    let mut child = Command::new(meshnode_bin())
        .args(args)
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshnode");
    let ended = wait_until(within, || matches!(child.try_wait(), Ok(Some(_))));
    if ended.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`meshnode {}` did not refuse: it ran", args.join(" "));
    }
    CliOutput::of(child.wait_with_output().expect("collect output"))
}

/// A daemon with its own data directory.
#[derive(Debug)]
pub struct TestNode {
    /// Domain name.
    pub domain: String,
    /// Keeps the temporary directory alive.
    _tmp: tempfile::TempDir,
    /// The data directory.
    pub dir: PathBuf,
    /// Running daemon, if started.
    child: Option<Child>,
}

impl TestNode {
    /// `meshnode init` in a fresh temporary directory (not started).
    pub fn init(domain: &str, bootstrap: &[String]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(domain);
        let dir_s = dir.to_str().expect("utf-8 path").to_owned();
        let mut args = vec!["init", "--data-dir", &dir_s, "--domain", domain];
        for b in bootstrap {
            args.push("--bootstrap");
            args.push(b);
        }
        let out = meshnode(&args);
        assert!(out.success, "init failed: {}", out.stderr);
        Self {
            domain: domain.to_owned(),
            _tmp: tmp,
            dir,
            child: None,
        }
    }

    /// A ticket for `domain` from this (running) node: `meshnode mesh invite`.
    pub fn invite(&self, domain: &str) -> String {
        let out = self.cli(&["mesh", "invite", "--domain", domain]);
        assert!(out.success, "mesh invite failed: {}", out.stderr);
        out.stdout.trim().to_owned()
    }

    /// `meshnode init --join` with a ticket from `member` (running), not started: the new
    /// node belongs to `member`'s mesh and bootstraps to it.
    pub fn init_joining(domain: &str, member: &TestNode) -> Self {
        let ticket = member.invite(domain);
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(domain);
        let dir_s = dir.to_str().expect("utf-8 path").to_owned();
        let out = meshnode(&["init", "--data-dir", &dir_s, "--join", &ticket]);
        assert!(out.success, "init --join failed: {}", out.stderr);
        Self {
            domain: domain.to_owned(),
            _tmp: tmp,
            dir,
            child: None,
        }
    }

    /// [`TestNode::init_joining`], then started.
    pub fn start_joining(domain: &str, member: &TestNode) -> Self {
        let mut node = Self::init_joining(domain, member);
        node.run();
        node
    }

    /// [`TestNode::start_joining`], then waits (up to 20 s) until the new node's catalog
    /// holds `product` (`domain/name`).
    pub fn start_seeing(domain: &str, member: &TestNode, product: &str) -> Self {
        let node = Self::start_joining(domain, member);
        wait_until(Duration::from_secs(20), || {
            node.version_of(product).is_some()
        })
        .unwrap_or_else(|| panic!("{domain} never saw {product}: {}", node.log()));
        node
    }

    /// Initialises and starts a node, waiting until its API answers. The node founds a mesh
    /// of its own: use [`TestNode::start_joining`] for a node of another node's mesh.
    pub fn start(domain: &str, bootstrap: &[String]) -> Self {
        let mut node = Self::init(domain, bootstrap);
        node.run();
        node
    }

    /// The data directory as a string.
    pub fn dir_str(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    /// Starts (or restarts) the daemon and waits for its API.
    pub fn run(&mut self) {
        self.run_with(&[]);
    }

    /// [`TestNode::run`] with extra `meshnode run` arguments (`--accept-rollback`).
    pub fn run_with(&mut self, extra: &[&str]) {
        self.spawn(Command::new(meshnode_bin()), extra);
    }

    /// Whether this host lets a test give a process a mount namespace of its own
    /// (`unshare -m`: root, or unprivileged user namespaces).
    pub fn can_hide_directories() -> bool {
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// [`TestNode::run`] in a mount namespace of the daemon's own where `hidden` is an
    /// empty file system, as systemd's `PrivateTmp=yes` makes `/tmp`: the daemon and the
    /// CLI see different directories at one path. See [`TestNode::can_hide_directories`].
    pub fn run_hiding(&mut self, hidden: &Path) {
        let mut command = Command::new("unshare");
        command.args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs meshnode-test \"$0\" && shift && exec \"$@\"",
        ]);
        command.arg(hidden).arg("--").arg(meshnode_bin());
        self.spawn(command, &[]);
    }

    /// Starts `command` (the daemon, or what runs it) with `run --data-dir DIR EXTRA...`
    /// and waits for its API.
    fn spawn(&mut self, mut command: Command, extra: &[&str]) {
        assert!(self.child.is_none(), "already running");
        let _ = std::fs::remove_file(self.dir.join("api.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .parent()
                    .expect("parent")
                    .join(format!("{}.log", self.domain)),
            )
            .expect("log file");
        let child = command
            .args(["run", "--data-dir", self.dir_str()])
            .args(extra)
            .env("MESHNODE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn meshnode run");
        self.child = Some(child);
        wait_until(Duration::from_secs(20), || {
            self.dir.join("api.addr").exists() && self.cli(&["status", "--json"]).success
        })
        .unwrap_or_else(|| panic!("daemon {} did not start: {}", self.domain, self.log()));
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(
            self.dir
                .parent()
                .expect("parent")
                .join(format!("{}.log", self.domain)),
        )
        .unwrap_or_default()
    }

    /// `meshnode ARGS --data-dir DIR`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", self.dir_str()]);
        meshnode(&all)
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        self.cli(&["status", "--json"]).json()
    }

    /// The first listen multiaddr (with `/p2p/`), for others to bootstrap from.
    pub fn addr(&self) -> String {
        let status = self.status();
        status["listen_addrs"][0]
            .as_str()
            .expect("a listen address")
            .to_owned()
    }

    /// `catalog list --json`.
    pub fn catalog(&self) -> Vec<Value> {
        match self.cli(&["catalog", "--json"]).json() {
            Value::Array(items) => items,
            other => panic!("catalog is not an array: {other}"),
        }
    }

    /// `share request PRODUCT --purpose PURPOSE EXTRA --json`, which must conclude an
    /// agreement at once (the provider approves automatically); returns the contract.
    pub fn share_agreed(&self, product: &str, purpose: &str, extra: &[&str]) -> Value {
        let mut args = vec!["share", "request", product, "--purpose", purpose];
        args.extend(extra);
        args.push("--json");
        let v = self.cli(&args).json();
        assert_eq!(v["state"], "agreed", "{v}");
        v
    }

    /// Version of `domain/product` in this node's catalog.
    pub fn version_of(&self, product: &str) -> Option<u64> {
        self.catalog()
            .iter()
            .find(|p| p["product"] == product)
            .and_then(|p| p["version"].as_u64())
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9`: no chance to flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Replaces `from` with `to` in the node's `meshnode.toml` (takes effect at the next
    /// start); panics if `from` is not there.
    pub fn edit_config(&self, from: &str, to: &str) {
        let path = self.dir.join("meshnode.toml");
        let text = std::fs::read_to_string(&path).expect("read meshnode.toml");
        assert!(
            text.contains(from),
            "`{from}` not in meshnode.toml:\n{text}"
        );
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write meshnode.toml");
    }

    /// `meshnode fetch PRODUCT --out OUT EXTRA...`.
    pub fn fetch(&self, product: &str, out: &Path, extra: &[&str]) -> CliOutput {
        let mut args = vec!["fetch", product, "--out", out.to_str().expect("utf-8 path")];
        args.extend(extra);
        self.cli(&args)
    }

    /// Starts `meshnode fetch PRODUCT --out OUT EXTRA... --json` without waiting for it.
    pub fn spawn_fetch(&self, product: &str, out: &Path, extra: &[&str]) -> Child {
        Command::new(meshnode_bin())
            .args(["fetch", product, "--out", out.to_str().expect("utf-8 path")])
            .args(extra)
            .args(["--json", "--data-dir", self.dir_str()])
            .env_remove("MESHNODE_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshnode fetch")
    }

    /// One request to the daemon's control API (HTTP/1.1 with the node's token), for what
    /// the CLI does not show: the status code of an error, `/metrics`. Returns the status
    /// and the body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let (status, _, body) = self.api_with_headers(method, path, body);
        (status, body)
    }

    /// [`TestNode::api`], also returning the answer's headers (names in lowercase).
    pub fn api_with_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Vec<(String, String)>, String) {
        use std::io::{Read, Write};
        let read = |name: &str| {
            std::fs::read_to_string(self.dir.join(name))
                .unwrap_or_else(|e| panic!("read {name}: {e}"))
                .trim()
                .to_owned()
        };
        let (addr, token) = (read("api.addr"), read("api.token"));
        let body = body.unwrap_or("");
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect to the API");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("read timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the response");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    /// The value of one metric (a line `NAME VALUE`) at `/metrics`, if exported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (status, text) = self.api("GET", "/metrics", None);
        assert_eq!(status, 200, "{text}");
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
    }

    /// Whether the daemon process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The files a fetch into `out` may leave: `out`, `out.partial` and `out.partial.state`.
pub fn fetch_files(out: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = out.file_name().expect("a file name").to_os_string();
        name.push(suffix);
        out.with_file_name(name)
    };
    [out.to_owned(), with(".partial"), with(".partial.state")]
}

/// A UDP port on 127.0.0.1 that was free a moment ago (for a node that must keep its
/// data-plane address across restarts).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a UDP socket")
        .port()
}

/// Waits for a child started with piped output and collects it.
pub fn wait_output(child: Child) -> CliOutput {
    CliOutput::of(child.wait_with_output().expect("wait for the child"))
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Some(());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    path
}

/// Whether pyarrow can be imported; tests that need it fail loudly without it unless
/// `MESHNODE_SKIP_PYARROW=1`.
pub fn require_pyarrow() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var("MESHNODE_SKIP_PYARROW").as_deref() != Ok("1") {
        panic!(
            "pyarrow is required for this test: `pip install pyarrow` (or set MESHNODE_SKIP_PYARROW=1)"
        );
    }
    ok
}

/// `datacontract lint FILE` (the `datacontract-cli` package, installed by scripts/test):
/// whether it passed, and what it printed.
pub fn datacontract_lint(file: &Path) -> (bool, String) {
    let out = Command::new("datacontract")
        .arg("lint")
        .arg(file)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `datacontract` ({e}): run the tests with scripts/test, which installs datacontract-cli"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs a Python snippet and returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
