//! `meshnode demo`: the seed document's e-commerce mesh, on loopback.
//!
//! Six real daemons (`meshnode run` child processes, each with its own data directory and
//! key) form a mesh; five domains publish eight data products generated from a fixed seed;
//! the `churn` domain discovers them through gossip, negotiates three contracts (automatic,
//! operator-approved, rejected) and fetches governed data. Every step goes through the same
//! CLI a person would type, and the narration prints what was measured.

mod data;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use data::{DemoProduct, PRODUCTS};

/// Marker file that makes a directory the demo's own (safe to wipe on the next run).
const MARKER: &str = ".meshnode-demo";
/// Domains in start order; `churn` is the consumer.
const DOMAINS: [&str; 6] = [
    "product",
    "customer",
    "e-shop",
    "order-processing",
    "recommendation",
    "churn",
];

/// `meshnode demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Where the demo's data directories go (wiped first if an earlier demo made it).
    #[arg(long, default_value = "meshnode-demo")]
    dir: PathBuf,
    /// Generate 1% of the rows (for a quick look or CI).
    #[arg(long)]
    small: bool,
    /// Stop the daemons and exit once the story is told, instead of waiting for Ctrl-C.
    #[arg(long)]
    no_wait: bool,
}

/// The daemons the demo started; dropping it stops them all.
#[derive(Debug, Default)]
struct Daemons {
    /// (domain, process).
    children: Vec<(String, Child)>,
}

impl Daemons {
    fn stop_all(&mut self) {
        for (_, child) in &mut self.children {
            // SIGTERM lets each daemon flush its store.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for (_, child) in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Runs `meshnode ARGS` and returns stdout, failing with stderr.
fn cli(args: &[&str]) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the meshnode executable")?;
    let output = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run meshnode {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "`meshnode {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn cli_json(args: &[&str]) -> anyhow::Result<Value> {
    let out = cli(args)?;
    serde_json::from_str(&out)
        .with_context(|| format!("`meshnode {}` printed no JSON", args.join(" ")))
}

/// Runs a command that is expected to fail (e.g. a rejected `share request`) and parses the
/// JSON it printed before failing.
fn cli_json_refused(args: &[&str]) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("cannot find the meshnode executable")?;
    let output = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run meshnode {}", args.join(" ")))?;
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "`meshnode {}` printed no JSON: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

fn dir_of(root: &Path, domain: &str) -> String {
    root.join(domain).display().to_string()
}

fn step(n: u32, title: &str) {
    crate::outln!("\n[{n}] {title}");
}

fn wait_for(
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        if dir.join(MARKER).exists() {
            std::fs::remove_dir_all(dir).with_context(|| {
                format!("cannot clear the previous demo in `{}`", dir.display())
            })?;
        } else if std::fs::read_dir(dir)?.next().is_some() {
            bail!(
                "`{}` exists and was not made by `meshnode demo`: choose another --dir",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::write(dir.join(MARKER), "made by meshnode demo; safe to delete\n")?;
    Ok(())
}

/// Runs the demo.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // The orchestration is sequential process control: run it off the async runtime.
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: DemoArgs) -> anyhow::Result<()> {
    let root = std::path::absolute(&args.dir)?;
    prepare_dir(&root)?;
    let scale = if args.small { 100 } else { 1 };
    crate::outln!(
        "meshnode demo: the seed's e-commerce data mesh, six domains on 127.0.0.1, no hub"
    );
    crate::outln!("data directories: {}", root.display());

    step(1, "Generating seeded data for the domains' products");
    let started = Instant::now();
    let customers = 50_000 / scale;
    let mut total_rows = 0;
    for product in &PRODUCTS {
        let rows = product.rows / scale;
        data::generate(product, rows, customers, &data_file(&root, product))?;
        total_rows += rows;
    }
    crate::outln!(
        "    {} products, {} rows in {:.1} s",
        PRODUCTS.len(),
        total_rows,
        started.elapsed().as_secs_f64()
    );

    step(
        2,
        "Founding the e-commerce mesh by charter: product, customer and e-shop govern, 2 of 3 decide",
    );
    let mut daemons = Daemons::default();
    let interrupted = install_ctrl_c();
    let mesh = found_mesh(&root, &mut daemons)?;
    crate::outln!(
        "    mesh `e-commerce` ({}): {} members, decisions by 2 of 3 governing domains",
        &mesh[..16.min(mesh.len())],
        DOMAINS.len()
    );
    check_interrupted(&interrupted)?;
    let churn = dir_of(&root, "churn");
    let peers_ready = wait_for(Duration::from_secs(20), || {
        let s = cli_json(&["status", "--json", "--data-dir", &churn])?;
        Ok(s["peers"].as_u64().unwrap_or(0) >= 2)
    })?;
    crate::outln!(
        "    churn connected to the mesh in {} ms",
        peers_ready.as_millis()
    );

    step(
        3,
        "Each domain publishes its data products (signed descriptors, gossiped)",
    );
    let publish_start = Instant::now();
    for product in &PRODUCTS {
        let dir = dir_of(&root, product.domain);
        let file = data_file(&root, product).display().to_string();
        let mut cmd = vec![
            "publish",
            product.name,
            "--from",
            &file,
            "--title",
            product.title,
            "--approval",
            product.approval,
            "--tag",
            "e-commerce",
            "--json",
            "--data-dir",
            &dir,
        ];
        for p in product.purposes {
            cmd.push("--purpose");
            cmd.push(p);
        }
        for r in product.restricted {
            cmd.push("--restricted");
            cmd.push(r);
        }
        let classified: Vec<String> = product.pii.iter().map(|c| format!("{c}=pii")).collect();
        for c in &classified {
            cmd.push("--classify");
            cmd.push(c);
        }
        cmd.extend(["--contact", "data-team@example.com"]);
        let view = cli_json(&cmd)?;
        crate::outln!(
            "    {:<42} v{}  {:>7} rows  {:>9}  approval {}{}",
            view["product"].as_str().unwrap_or("?"),
            view["version"],
            view["rows"].as_u64().unwrap_or(0),
            crate::output::bytes(view["bytes"].as_u64().unwrap_or(0)),
            product.approval,
            if product.restricted.is_empty() {
                String::new()
            } else {
                format!(", restricted [{}]", product.restricted.join(", "))
            }
        );
    }
    let published = publish_start.elapsed();

    step(4, "The churn domain discovers the products through gossip");
    let converged = wait_for(Duration::from_secs(60), || {
        let catalog = cli_json(&["catalog", "--json", "--data-dir", &churn])?;
        Ok(catalog.as_array().map_or(0, Vec::len) >= PRODUCTS.len())
    })?;
    crate::outln!(
        "    churn's catalog holds all {} products {} ms after the last publish (publishing took {} ms)",
        PRODUCTS.len(),
        converged.as_millis(),
        published.as_millis()
    );
    check_interrupted(&interrupted)?;

    step(5, "A domain that was never admitted is refused");
    show_non_member(&root, &mut daemons)?;
    check_interrupted(&interrupted)?;

    step(6, "Churn negotiates sharing contracts");
    // (a) approved automatically by the owner's policy.
    let auto = cli_json(&[
        "share",
        "request",
        "order-processing/order-processing-update",
        "--purpose",
        "churn-analysis",
        "--columns",
        "order_id,customer_id,region,amount,status",
        "--filter",
        "region = 'EU'",
        "--days",
        "30",
        "--json",
        "--data-dir",
        &churn,
    ])?;
    crate::outln!(
        "    order-processing-update, purpose churn-analysis: {} automatically (agreement {})",
        auto["state"].as_str().unwrap_or("?"),
        short(&auto["id"])
    );
    // (b) parked for the owner's operator, who accepts it.
    let manual = cli_json(&[
        "share",
        "request",
        "customer/customer-segmentation",
        "--purpose",
        "churn-analysis",
        "--days",
        "30",
        "--json",
        "--data-dir",
        &churn,
    ])?;
    let manual_id = manual["id"].as_str().unwrap_or_default().to_owned();
    crate::outln!(
        "    customer-segmentation, purpose churn-analysis: {} at the customer domain (agreement {})",
        manual["state"].as_str().unwrap_or("?"),
        short(&manual["id"])
    );
    let customer = dir_of(&root, "customer");
    let pending = cli_json(&["share", "pending", "--json", "--data-dir", &customer])?;
    crate::outln!(
        "    customer's operator sees {} pending request(s) and runs `share accept {}`",
        pending.as_array().map_or(0, Vec::len),
        &manual_id[..12.min(manual_id.len())]
    );
    cli(&["share", "accept", &manual_id, "--data-dir", &customer])?;
    let agreed_in = wait_for(Duration::from_secs(20), || {
        let v = cli_json(&["share", "show", &manual_id, "--json", "--data-dir", &churn])?;
        Ok(v["state"] == "agreed")
    })?;
    crate::outln!(
        "    churn sees it agreed {} ms later",
        agreed_in.as_millis()
    );
    // (c) rejected: the purpose is not one the owner allows (the command fails, and still
    // prints the stored contract with the provider's signed reason).
    let rejected = cli_json_refused(&[
        "share",
        "request",
        "customer/customer-data",
        "--purpose",
        "marketing",
        "--columns",
        "customer_id,country,region",
        "--json",
        "--data-dir",
        &churn,
    ])?;
    crate::outln!(
        "    customer-data, purpose marketing: {} — {}",
        rejected["state"].as_str().unwrap_or("?"),
        rejected["reason"].as_str().unwrap_or("")
    );
    check_interrupted(&interrupted)?;

    step(
        7,
        "Churn fetches governed data straight from the owners (Arrow IPC over QUIC)",
    );
    let received = root.join("churn").join("received");
    std::fs::create_dir_all(&received)?;
    for (product, id) in [
        (
            "order-processing/order-processing-update",
            auto["id"].as_str().unwrap_or_default(),
        ),
        ("customer/customer-segmentation", manual_id.as_str()),
    ] {
        let out = received.join(format!("{}.arrow", product.replace('/', "-")));
        let out_s = out.display().to_string();
        let fetched = cli_json(&[
            "fetch",
            product,
            "--out",
            &out_s,
            "--agreement",
            id,
            "--json",
            "--data-dir",
            &churn,
        ])?;
        crate::outln!(
            "    {:<42} {:>7} rows  {:>9}  {:.1} MiB/s  digest {}",
            product,
            fetched["rows"].as_u64().unwrap_or(0),
            crate::output::bytes(fetched["bytes"].as_u64().unwrap_or(0)),
            fetched["mib_s"].as_f64().unwrap_or(0.0),
            short(&fetched["digest"])
        );
    }
    crate::outln!(
        "    (order updates: only the 5 granted columns and region = 'EU' rows left the owner)"
    );

    step(
        8,
        "Federated governance: an amendment \"pii columns must be restricted\", signed by 2 of 3",
    );
    amend_pii(&root)?;
    check_interrupted(&interrupted)?;

    step(9, "Explore");
    crate::outln!("    meshnode governance show --data-dir {churn}");
    crate::outln!("    meshnode governance status --data-dir {churn}");
    crate::outln!("    meshnode catalog --data-dir {churn}");
    crate::outln!("    meshnode share list --data-dir {churn}");
    crate::outln!(
        "    meshnode share show {} --odcs --data-dir {churn}",
        &manual_id[..12.min(manual_id.len())]
    );
    crate::outln!("    meshnode audit --verify --data-dir {customer}");
    crate::outln!(
        "    python3 -c \"import pyarrow.ipc as i; print(i.open_file('{}').read_all())\"",
        received
            .join("order-processing-order-processing-update.arrow")
            .display()
    );
    if args.no_wait {
        daemons.stop_all();
        crate::outln!(
            "\nstopped the daemons; data directories left in {}",
            root.display()
        );
        crate::outln!("restart one with: meshnode run --data-dir {churn}");
        return Ok(());
    }
    crate::outln!("\nthe mesh is running; press Ctrl-C to stop every daemon");
    while !interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    daemons.stop_all();
    crate::outln!("stopped; data directories left in {}", root.display());
    Ok(())
}

/// Starts `meshnode run` for `domain` and waits for its API.
fn start_daemon(root: &Path, daemons: &mut Daemons, domain: &str) -> anyhow::Result<Value> {
    let dir = dir_of(root, domain);
    let log = std::fs::File::create(root.join(format!("{domain}.log")))?;
    let child = Command::new(std::env::current_exe()?)
        .args(["run", "--data-dir", &dir])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start the {domain} daemon"))?;
    daemons.children.push((domain.to_owned(), child));
    wait_for(Duration::from_secs(20), || {
        Ok(Path::new(&dir).join("api.addr").exists())
    })
    .with_context(|| format!("the {domain} daemon did not start; see {domain}.log"))?;
    cli_json(&["status", "--json", "--data-dir", &dir])
}

/// The three governing domains found the mesh from a written charter; the others join with
/// tickets. Returns the mesh id.
fn found_mesh(root: &Path, daemons: &mut Daemons) -> anyhow::Result<String> {
    let governors = ["product", "customer", "e-shop"];
    // The co-governors create their keys first: the charter names them.
    let mut keys = Vec::new();
    for domain in &governors[1..] {
        let dir = dir_of(root, domain);
        cli(&["init", "--data-dir", &dir, "--domain", domain])?;
        let key = mesh_node::keyfile::load(&mesh_node::DataDir::new(&dir).identity())?.public_key();
        keys.push((domain, key));
    }
    let mut charter = String::from(
        "name = \"e-commerce\"\nquorum = 2\nadmission = \"any-member\"\n\n[[governors]]\ndomain = \"product\"\n",
    );
    for (domain, key) in &keys {
        charter.push_str(&format!(
            "\n[[governors]]\ndomain = \"{domain}\"\nkey = \"{}\"\n",
            key.to_hex()
        ));
    }
    let charter_path = root.join("charter.toml");
    std::fs::write(&charter_path, charter)?;
    let product = dir_of(root, "product");
    cli(&[
        "init",
        "--data-dir",
        &product,
        "--domain",
        "product",
        "--charter",
        &charter_path.display().to_string(),
    ])?;
    let status = start_daemon(root, daemons, "product")?;
    let mesh = status["mesh_id"].as_str().unwrap_or("?").to_owned();
    crate::outln!(
        "    product    founds it from {} and signs the charter",
        charter_path.display()
    );
    // Co-governors: named by the charter; a ticket brings them in.
    for domain in &governors[1..] {
        let dir = dir_of(root, domain);
        let ticket = cli(&["mesh", "invite", "--domain", domain, "--data-dir", &product])?;
        cli(&["mesh", "join", ticket.trim(), "--data-dir", &dir])?;
        start_daemon(root, daemons, domain)?;
        crate::outln!(
            "    {domain:<10} joins with a ticket from product (a governor by the charter)"
        );
    }
    // The other domains are admitted by any member's invitation.
    for (domain, inviter) in [
        ("order-processing", "customer"),
        ("recommendation", "e-shop"),
        ("churn", "customer"),
    ] {
        let ticket = cli(&[
            "mesh",
            "invite",
            "--domain",
            domain,
            "--data-dir",
            &dir_of(root, inviter),
        ])?;
        cli(&[
            "init",
            "--data-dir",
            &dir_of(root, domain),
            "--join",
            ticket.trim(),
        ])?;
        let status = start_daemon(root, daemons, domain)?;
        crate::outln!(
            "    {domain:<17} admitted on {inviter}'s invitation  key {}",
            status["fingerprint"].as_str().unwrap_or("?")
        );
    }
    let churn = dir_of(root, "churn");
    wait_for(Duration::from_secs(30), || {
        let s = cli_json(&["status", "--json", "--data-dir", &churn])?;
        Ok(s["members"].as_u64().unwrap_or(0) >= DOMAINS.len() as u64)
    })
    .context("churn did not learn every member")?;
    Ok(mesh)
}

/// A domain with a valid key but no admission tries to reach the mesh: refused.
fn show_non_member(root: &Path, daemons: &mut Daemons) -> anyhow::Result<()> {
    let product = dir_of(root, "product");
    let status = cli_json(&["status", "--json", "--data-dir", &product])?;
    let refused_before = status["refused_non_members"].as_u64().unwrap_or(0);
    // Its bootstrap address without the peer id: it dials without knowing whom it reaches.
    let addr = status["listen_addrs"][0].as_str().unwrap_or_default();
    let bare = addr.split("/p2p/").next().unwrap_or(addr).to_owned();
    let dir = dir_of(root, "mallory");
    cli(&[
        "init",
        "--data-dir",
        &dir,
        "--domain",
        "mallory",
        "--bootstrap",
        &bare,
    ])?;
    start_daemon(root, daemons, "mallory")?;
    let file = root.join("mallory.csv");
    std::fs::write(&file, "customer_id,email\n1,someone@example.com\n")?;
    cli(&[
        "publish",
        "stolen-customers",
        "--from",
        &file.display().to_string(),
        "--data-dir",
        &dir,
    ])?;
    let waited = wait_for(Duration::from_secs(20), || {
        let s = cli_json(&["status", "--json", "--data-dir", &product])?;
        Ok(s["refused_non_members"].as_u64().unwrap_or(0) > refused_before)
    })
    .context("product did not see the non-member's connection")?;
    let churn = dir_of(root, "churn");
    let catalog = cli_json(&["catalog", "--json", "--data-dir", &churn])?;
    let leaked = catalog
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["domain"] == "mallory");
    let mallory = cli_json(&["status", "--json", "--data-dir", &dir])?;
    crate::outln!(
        "    mallory (its own key, never admitted) dials product: refused at the connection, {} ms",
        waited.as_millis()
    );
    crate::outln!(
        "    mallory has {} peers; its product is in churn's catalog: {}",
        mallory["peers"].as_u64().unwrap_or(0),
        if leaked { "yes (!)" } else { "no" }
    );
    if leaked {
        bail!("a non-member's product reached a member's catalog");
    }
    // Mallory is done: stop it, so the demo's mesh is the six domains again.
    if let Some(pos) = daemons.children.iter().position(|(d, _)| d == "mallory") {
        let (_, mut child) = daemons.children.remove(pos);
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    Ok(())
}

/// product proposes "pii columns must be restricted", customer signs, every node enforces.
fn amend_pii(root: &Path) -> anyhow::Result<()> {
    let product = dir_of(root, "product");
    let customer = dir_of(root, "customer");
    let eshop = dir_of(root, "e-shop");
    let motion = cli_json(&[
        "governance",
        "propose",
        "--restrict-tag",
        "pii",
        "--summary",
        "personal data never leaves its domain",
        "--json",
        "--data-dir",
        &product,
    ])?;
    let id = motion["id"].as_str().unwrap_or_default().to_owned();
    crate::outln!(
        "    product proposes motion {}: {}/{} signatures, not carried yet",
        &id[..16.min(id.len())],
        motion["signed_by"].as_array().map_or(0, Vec::len),
        motion["needed"]
    );
    // The motion reaches customer by gossip; customer's operator signs it.
    wait_for(Duration::from_secs(20), || {
        let m = cli_json(&["governance", "status", "--json", "--data-dir", &customer])?;
        Ok(m.as_array()
            .is_some_and(|ms| ms.iter().any(|x| x["id"] == id.as_str())))
    })?;
    let carried = cli_json(&["governance", "sign", &id, "--json", "--data-dir", &customer])?;
    crate::outln!(
        "    customer signs: {}/{} — carried: {}",
        carried["signed_by"].as_array().map_or(0, Vec::len),
        carried["needed"],
        carried["carried"]
    );
    let everywhere = wait_for(Duration::from_secs(30), || {
        for domain in DOMAINS {
            let s = cli_json(&["status", "--json", "--data-dir", &dir_of(root, domain)])?;
            if s["policy_version"].as_u64().unwrap_or(0) < 1 {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    crate::outln!(
        "    every node enforces policies version 1 {} ms after the second signature",
        everywhere.as_millis()
    );
    let churn = dir_of(root, "churn");
    let catalog = cli_json(&["catalog", "--json", "--data-dir", &churn])?;
    for p in catalog.as_array().into_iter().flatten() {
        for v in p["violations"].as_array().into_iter().flatten() {
            crate::outln!(
                "    churn's catalog: {} is non-compliant ({}) and cannot be negotiated",
                p["product"].as_str().unwrap_or("?"),
                v["problem"].as_str().unwrap_or("?")
            );
        }
    }
    // e-shop republishes page-navigation: refused as it is, accepted once fixed.
    let nav = PRODUCTS
        .iter()
        .find(|p| p.name == "page-navigation")
        .context("page-navigation is a demo product")?;
    let file = data_file(root, nav).display().to_string();
    let base = [
        "publish",
        "page-navigation",
        "--from",
        file.as_str(),
        "--data-dir",
        eshop.as_str(),
    ];
    let exe = std::env::current_exe()?;
    let refused = Command::new(&exe)
        .args(base)
        .stdin(Stdio::null())
        .output()?;
    let message = String::from_utf8_lossy(&refused.stderr);
    crate::outln!(
        "    e-shop republishes page-navigation as it was: {}",
        message
            .lines()
            .find(|l| l.contains("rule"))
            .unwrap_or("refused")
            .trim()
    );
    if refused.status.success() {
        bail!("a product breaking the amendment was published");
    }
    let mut fixed: Vec<&str> = base.to_vec();
    fixed.extend(["--restricted", "session_id", "--json"]);
    let view = cli_json(&fixed)?;
    crate::outln!(
        "    with --restricted session_id: published v{}, compliant",
        view["version"]
    );
    Ok(())
}

fn short(v: &Value) -> String {
    v.as_str()
        .map(|s| s.chars().take(12).collect())
        .unwrap_or_else(|| "?".into())
}

fn data_file(root: &Path, product: &DemoProduct) -> PathBuf {
    root.join("data").join(format!("{}.arrow", product.name))
}

type Flag = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// Ctrl-C sets a flag; the demo checks it between steps and stops every daemon it started.
fn install_ctrl_c() -> Flag {
    let flag: Flag = Default::default();
    let f = flag.clone();
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                f.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    flag
}

fn check_interrupted(flag: &Flag) -> anyhow::Result<()> {
    if flag.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("interrupted: stopped every daemon the demo started");
    }
    Ok(())
}
