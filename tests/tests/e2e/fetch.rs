//! Fetching end to end: real daemons, `meshnode fetch` over the data plane, the provider
//! enforcing the contract, and what a failed fetch leaves on disk (never a file at `--out`,
//! and a `.partial` only when the same fetch can resume it).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_node::DataDir;
use mesh_node::agreements::AgreementRecord;
use mesh_node::dataplane::tls;
use mesh_node::store::Store;
use mesh_protocol::contract::AgreementId;
use mesh_protocol::transfer::MAX_CONTROL_FRAME;
use mesh_protocol::{
    Agreement, Compression, FetchRefusal, FetchRequest, Frame, FrameDecoder, Identity, ProductId,
    PublicKey, Stripe, encode_frame,
};
use mesh_tests::{
    TestNode, fetch_files, free_udp_port, python, require_pyarrow, wait_output, wait_until,
    write_file,
};
use serde_json::Value;

/// How long a decision may take to reach the other side (polls run every 2 s).
const PROPAGATE: Duration = Duration::from_secs(10);

/// `orders`: every fifth row of two is `EU`; `email` is restricted by the provider's policy.
fn orders_csv(rows: usize) -> String {
    const REGIONS: [&str; 5] = ["EU", "US", "APAC", "EU", "LATAM"];
    let mut csv = String::from("order_id,region,email,amount,note\n");
    for i in 0..rows {
        let _ = writeln!(
            csv,
            "{i},{},customer{i}@example.com,{}.{:02},note {}",
            REGIONS[i % 5],
            i / 3,
            i % 100,
            i * 7 % 1000
        );
    }
    csv
}

/// Publishes `csv` as `name` on `node` (automatic approval for `analytics`), restricting
/// `restricted` (comma-separated, or empty).
fn publish(node: &TestNode, name: &str, csv: &str, restricted: &str) {
    let path = write_file(node.dir.parent().unwrap(), &format!("{name}.csv"), csv);
    let mut args = vec![
        "publish",
        name,
        "--from",
        path.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
    ];
    if !restricted.is_empty() {
        args.extend(["--restricted", restricted]);
    }
    let out = node.cli(&args);
    assert!(out.success, "publish {name} failed: {}", out.stderr);
}

/// Waits until `node`'s catalog holds `product` at `version` or later.
fn wait_for_product(node: &TestNode, product: &str, version: u64) {
    wait_until(Duration::from_secs(20), || {
        node.version_of(product).is_some_and(|v| v >= version)
    })
    .unwrap_or_else(|| {
        panic!(
            "{} never saw {product} v{version}: {}",
            node.domain,
            node.log()
        )
    });
}

/// Provider `sales` publishing `orders` (`email` restricted) and consumer `churn` that holds
/// it in its catalog.
fn mesh(rows: usize) -> (TestNode, TestNode) {
    let sales = TestNode::start("sales", &[]);
    publish(&sales, "orders", &orders_csv(rows), "email");
    let churn = TestNode::start_joining("churn", &sales);
    wait_for_product(&churn, "sales/orders", 1);
    (sales, churn)
}

/// `share request PRODUCT --purpose analytics EXTRA... --json`, which must be agreed at
/// once; returns the contract id.
fn agree(consumer: &TestNode, product: &str, extra: &[&str]) -> String {
    let mut args = vec!["share", "request", product, "--purpose", "analytics"];
    args.extend(extra);
    args.push("--json");
    let v = consumer.cli(&args).json();
    assert_eq!(v["state"], "agreed", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

fn share_show(node: &TestNode, id: &str) -> Value {
    node.cli(&["share", "show", id, "--json"]).json()
}

/// `fetch ... --json`, which must succeed and leave only the output file.
fn fetch_ok(node: &TestNode, product: &str, out: &Path, extra: &[&str]) -> Value {
    let mut args = extra.to_vec();
    args.push("--json");
    let v = node.fetch(product, out, &args).json();
    let [file, partial, state] = fetch_files(out);
    assert!(file.exists(), "{} missing after {v}", file.display());
    assert!(!partial.exists() && !state.exists(), "partial files left");
    v
}

/// Nothing at `out`, and no partial file or state beside it.
fn assert_nothing_left(out: &Path) {
    for path in fetch_files(out) {
        assert!(!path.exists(), "{} was left behind", path.display());
    }
}

/// `fetch ...`, which must fail with one line naming the product and containing every
/// `expected` text, and leave nothing behind.
fn fetch_refused(node: &TestNode, product: &str, out: &Path, extra: &[&str], expected: &[&str]) {
    let result = node.fetch(product, out, extra);
    assert!(
        !result.success,
        "fetching {product} {extra:?} on {} should fail: {}",
        node.domain, result.stdout
    );
    let err = result.stderr.trim();
    assert_eq!(err.lines().count(), 1, "one line of error: {err}");
    let prefix = format!("error: fetching `{product}` failed: ");
    assert!(err.starts_with(&prefix), "{err}");
    for text in expected {
        assert!(err.contains(text), "`{text}` not in: {err}");
    }
    assert_nothing_left(out);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Compares the fetched file with the EU rows and granted columns of the source CSV.
const COMPARE_WITH_SOURCE: &str = "\
import json, sys
import pyarrow.compute as pc, pyarrow.csv as csv, pyarrow.ipc as ipc
got = ipc.open_file(sys.argv[1]).read_all()
src = csv.read_csv(sys.argv[2])
want = src.filter(pc.equal(src['region'], 'EU')).select(['order_id', 'region', 'amount'])
print(json.dumps({
    'columns': got.column_names,
    'rows': got.num_rows,
    'regions': sorted(set(got.column('region').to_pylist())),
    'equal': got.to_pylist() == want.to_pylist(),
    'source_rows': src.num_rows,
}))
";

#[test]
fn a_fetch_delivers_exactly_the_granted_columns_and_rows() {
    if !require_pyarrow() {
        return;
    }
    let rows = 2_000;
    let (sales, churn) = mesh(rows);
    let id = agree(
        &churn,
        "sales/orders",
        &[
            "--columns",
            "order_id,region,amount",
            "--filter",
            "region = 'EU'",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let source = sales.dir.parent().unwrap().join("orders.csv");
    let eu_rows = (0..rows).filter(|i| i % 5 == 0 || i % 5 == 3).count();
    for compression in ["none", "lz4", "zstd"] {
        let out = dir.path().join(format!("eu-{compression}.arrow"));
        let v = fetch_ok(
            &churn,
            "sales/orders",
            &out,
            &["--compression", compression],
        );
        assert_eq!(v["agreement"], id.as_str(), "{v}");
        assert_eq!(v["rows"], eu_rows, "{v}");
        assert_eq!(v["version"], 1, "{v}");
        assert_eq!(v["resumed_from_batch"], 0, "{v}");
        let report: Value = serde_json::from_str(&python(
            COMPARE_WITH_SOURCE,
            &[out.to_str().unwrap(), source.to_str().unwrap()],
        ))
        .unwrap();
        assert_eq!(
            report["columns"],
            serde_json::json!(["order_id", "region", "amount"]),
            "{compression}: {report}"
        );
        assert_eq!(report["rows"], eu_rows, "{report}");
        assert_eq!(report["source_rows"], rows, "{report}");
        assert_eq!(report["regions"], serde_json::json!(["EU"]), "{report}");
        assert_eq!(report["equal"], true, "{compression}: {report}");
    }

    // Both sides recorded the transfers in an intact audit chain.
    for (node, kind) in [(&sales, "transfer_served"), (&churn, "transfer_received")] {
        let log = node.cli(&["audit", "--json"]).json();
        assert_eq!(log["verified"], true, "{log}");
        let transfers: Vec<&Value> = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .collect();
        assert_eq!(transfers.len(), 3, "{}: {log}", node.domain);
        assert_eq!(transfers[0]["detail"]["agreement"], id.as_str());
        assert_eq!(transfers[0]["detail"]["rows"], eu_rows);
    }
}

/// The contract record `id` (full hex id) in the store of a stopped node.
fn stored_record(node: &TestNode, id: &str) -> (AgreementId, AgreementRecord) {
    let store = Store::open(&DataDir::new(&node.dir).db()).unwrap();
    store
        .agreement_records()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.to_hex() == id)
        .unwrap_or_else(|| panic!("{} holds no contract {id}", node.domain))
}

/// The co-signed agreement `id` held by a stopped node.
fn stored_agreement(node: &TestNode, id: &str) -> Agreement {
    stored_record(node, id)
        .1
        .agreement
        .expect("an agreed contract")
}

/// Sends one fetch request straight to a provider's data plane as `identity`, past every
/// check of the consumer's daemon, and returns the provider's first answer frame.
fn ask_provider(
    identity: &Identity,
    provider: &PublicKey,
    addr: SocketAddr,
    request: FetchRequest,
) -> Frame {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let endpoint = tls::endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let client = tls::client_config(identity, provider, tls::Transport::streams(1)).unwrap();
        let connection = endpoint
            .connect_with(client, addr, tls::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        let request = encode_frame(&Frame::Request(Box::new(request))).unwrap();
        send.write_all(&request).await.unwrap();
        send.finish().unwrap();
        let bytes = recv.read_to_end(MAX_CONTROL_FRAME + 64).await.unwrap();
        connection.close(0u32.into(), b"done");
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes);
        decoder.next_frame().unwrap().expect("an answer frame")
    })
}

fn assert_refused(frame: &Frame, code: FetchRefusal, text: &str) {
    match frame {
        Frame::Error(refusal) => {
            assert_eq!(refusal.code, code, "{refusal}");
            assert!(refusal.message.contains(text), "`{text}` not in: {refusal}");
        }
        other => panic!("expected a {code} refusal, got a {} frame", other.kind()),
    }
}

#[test]
fn refused_fetches_say_why_and_leave_nothing_behind() {
    let (mut sales, mut churn) = mesh(300);
    // A second version (agreements made from now on cover versions 2 and later) and a
    // second product.
    publish(&sales, "orders", &orders_csv(300), "email");
    publish(
        &sales,
        "customers",
        "customer_id,name\n1,Ada\n2,Grace\n",
        "",
    );
    wait_for_product(&churn, "sales/orders", 2);
    wait_for_product(&churn, "sales/customers", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("refused.arrow");

    // No agreement at all.
    fetch_refused(
        &churn,
        "sales/orders",
        &out,
        &[],
        &[
            "no agreed contract lets this node fetch `orders`",
            "request one with `meshnode share request`",
        ],
    );

    // An agreement for orders, from version 2 on.
    let orders = agree(&churn, "sales/orders", &["--columns", "order_id,region"]);
    let short = &orders[..12];
    let v = fetch_ok(&churn, "sales/orders", &dir.path().join("ok.arrow"), &[]);
    assert_eq!(
        (v["version"].as_u64(), v["rows"].as_u64()),
        (Some(2), Some(300))
    );
    // ... is not an agreement for another product,
    fetch_refused(
        &churn,
        "sales/customers",
        &out,
        &["--agreement", short],
        &[&format!(
            "agreement {short} is not one this node consumes customers under"
        )],
    );
    // ... nor for an earlier version,
    fetch_refused(
        &churn,
        "sales/orders",
        &out,
        &["--version", "1"],
        &[&format!("agreement {short} does not cover version 1")],
    );
    // ... and the provider does not hold a version 9.
    fetch_refused(
        &churn,
        "sales/orders",
        &out,
        &["--version", "9"],
        &[
            "the provider refused the fetch: unknown_version: product `orders` has versions 1..=2, not 9",
        ],
    );

    // An agreement that expires within seconds: usable, then refused.
    let brief = agree(
        &churn,
        "sales/orders",
        &["--columns", "order_id", "--valid-for", "12s"],
    );
    let expires = share_show(&churn, &brief)["expires_at_ms"]
        .as_u64()
        .unwrap();
    let v = fetch_ok(
        &churn,
        "sales/orders",
        &dir.path().join("brief.arrow"),
        &["--agreement", &brief[..12]],
    );
    assert_eq!(v["agreement"], brief.as_str());
    std::thread::sleep(Duration::from_millis(
        expires.saturating_sub(now_ms()) + 100,
    ));
    fetch_refused(
        &churn,
        "sales/orders",
        &out,
        &["--agreement", &brief[..12]],
        &[&format!("agreement {} is expired", &brief[..12])],
    );
    for node in [&churn, &sales] {
        assert_eq!(share_show(node, &brief)["state"], "expired");
    }

    // A revoked agreement, once the consumer has heard of the revocation.
    let revoked = agree(&churn, "sales/orders", &["--columns", "region"]);
    let out_revoke = sales.cli(&["share", "revoke", &revoked[..12], "--reason", "audit"]);
    assert!(out_revoke.success, "{}", out_revoke.stderr);
    wait_until(PROPAGATE, || {
        share_show(&churn, &revoked)["state"] == "revoked"
    })
    .expect("churn never heard of the revocation");
    fetch_refused(
        &churn,
        "sales/orders",
        &out,
        &["--agreement", &revoked[..12]],
        &[&format!("agreement {} is revoked", &revoked[..12])],
    );

    // The provider enforces the same rules on its own: the consumer's key, asking directly
    // with each of those agreements, is refused before any data. Without a clock-skew
    // tolerance, so that the agreement that just expired is refused at once.
    sales.stop();
    sales.edit_config(
        "clock_skew_tolerance_secs = 300",
        "clock_skew_tolerance_secs = 0",
    );
    sales.run();
    let status = sales.status();
    let provider = PublicKey::from_hex(status["public_key"].as_str().unwrap()).unwrap();
    let data_addr: SocketAddr = status["data_addr"].as_str().unwrap().parse().unwrap();
    churn.stop();
    let churn_identity = mesh_node::keyfile::load(&DataDir::new(&churn.dir).identity()).unwrap();
    let [orders_agreement, brief_agreement, revoked_agreement] =
        [&orders, &brief, &revoked].map(|id| stored_agreement(&churn, id));
    let request = |agreement: &Agreement, product: &str, version: Option<u64>| FetchRequest {
        agreement: agreement.clone(),
        product: ProductId {
            owner: provider,
            name: product.into(),
        },
        version,
        resume_from_batch: 0,
        compression: Compression::None,
        narrowing: None,
        stripe: Stripe::WHOLE,
    };
    let ask = |request| ask_provider(&churn_identity, &provider, data_addr, request);
    let answer = ask(request(&revoked_agreement, "orders", None));
    assert_refused(&answer, FetchRefusal::Revoked, "was revoked");
    let answer = ask(request(&brief_agreement, "orders", None));
    assert_refused(&answer, FetchRefusal::Expired, "expired at");
    let answer = ask(request(&orders_agreement, "orders", Some(1)));
    assert_refused(&answer, FetchRefusal::NotCovered, "not 1");
    let answer = ask(request(&orders_agreement, "customers", None));
    assert_refused(
        &answer,
        FetchRefusal::NotCovered,
        "covers orders, not customers",
    );
    // (The same request with the right product is served: the refusals above are not an
    // artefact of the raw client.)
    match ask(request(&orders_agreement, "orders", Some(2))) {
        Frame::Header(header) => assert_eq!(header.version, 2),
        Frame::Error(refusal) => panic!("expected a transfer header, got a refusal: {refusal}"),
        other => panic!("expected a transfer header, got a {} frame", other.kind()),
    }

    // Another node that copied the consumer's agreement into its own store: the provider
    // sees a TLS key that is not the agreement's consumer.
    let mut mallory = TestNode::start_joining("mallory", &sales);
    wait_for_product(&mallory, "sales/orders", 2);
    let mallory_key = mallory.status()["public_key"].as_str().unwrap().to_owned();
    mallory.stop();
    {
        let (id, record) = stored_record(&churn, &orders);
        let store = Store::open(&DataDir::new(&mallory.dir).db()).unwrap();
        store.put_agreement(&id, &record).unwrap();
        store.flush_blocking().unwrap();
    }
    mallory.run();
    fetch_refused(
        &mallory,
        "sales/orders",
        &out,
        &["--agreement", short],
        &[
            "the provider refused the fetch: wrong_consumer",
            &format!(
                "is for consumer {provider_side}",
                provider_side = churn_identity.public_key()
            ),
            &format!("but the connection is from {mallory_key}"),
        ],
    );
    churn.run();
    assert!(churn.cli(&["audit", "--verify"]).success);
    assert!(sales.cli(&["audit", "--verify"]).success);
}

/// About `mib` MiB of click events: no restricted column, so a contract for every column
/// streams the stored file as it is.
fn clicks_csv(mib: usize) -> String {
    let mut csv = String::with_capacity(mib * 1024 * 1024 + 1024);
    csv.push_str("click_id,user_id,url,ms,agent\n");
    let mut i = 0u64;
    while csv.len() < mib * 1024 * 1024 {
        let _ = writeln!(
            csv,
            "{i},{},https://shop.example.com/p/{}/{},{},agent-{}",
            i * 7919 % 100_003,
            i % 9973,
            i * 31 % 1_000_003,
            1_700_000_000_000u64 + i * 13,
            i % 17
        );
        i += 1;
    }
    csv
}

#[test]
fn a_provider_killed_mid_transfer_fails_the_fetch_and_the_retry_resumes_to_identical_bytes() {
    // The provider keeps its data-plane address across restarts.
    let mut sales = TestNode::init("sales", &[]);
    let port = free_udp_port();
    sales.edit_config(
        "data_listen = \"127.0.0.1:0\"",
        &format!("data_listen = \"127.0.0.1:{port}\""),
    );
    sales.run();
    publish(&sales, "clicks", &clicks_csv(96), "");
    let churn = TestNode::start_joining("churn", &sales);
    wait_for_product(&churn, "sales/clicks", 1);
    agree(&churn, "sales/clicks", &[]);
    let dir = tempfile::tempdir().unwrap();

    // An uninterrupted fetch, for reference.
    let reference = dir.path().join("reference.arrow");
    let whole = fetch_ok(&churn, "sales/clicks", &reference, &[]);
    let total = std::fs::metadata(&reference).unwrap().len();
    eprintln!(
        "reference fetch: {} bytes in {} s",
        whole["bytes"], whole["seconds"]
    );

    // The same fetch, with the provider killed once a tenth of the data arrived.
    let out = dir.path().join("clicks.arrow");
    let [_, partial, state] = fetch_files(&out);
    let mut fetch = churn.spawn_fetch("sales/clicks", &out, &[]);
    let started = Instant::now();
    loop {
        if std::fs::metadata(&partial).is_ok_and(|m| m.len() >= total / 10) {
            break;
        }
        if let Ok(Some(status)) = fetch.try_wait() {
            panic!(
                "the fetch ended ({status}) before it could be interrupted: {:?}",
                wait_output(fetch)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no data arrived: {}",
            churn.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    sales.kill9();
    let result = wait_output(fetch);
    assert!(!result.success, "the fetch succeeded: {}", result.stdout);
    let err = result.stderr.trim();
    assert_eq!(err.lines().count(), 1, "one line of error: {err}");
    assert!(
        err.starts_with(
            "error: fetching `sales/clicks` failed: the transfer was interrupted after "
        ),
        "{err}"
    );
    assert!(err.ends_with("run the same fetch again to resume"), "{err}");
    assert!(!out.exists(), "an interrupted fetch left {}", out.display());
    assert!(partial.exists() && state.exists(), "nothing kept to resume");
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept < total, "the partial file is the whole file");

    // A copy of the partial file with one byte changed, to resume from too.
    let tampered = dir.path().join("tampered.arrow");
    let [_, tampered_partial, tampered_state] = fetch_files(&tampered);
    let mut bytes = std::fs::read(&partial).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&tampered_partial, bytes).unwrap();
    std::fs::copy(&state, &tampered_state).unwrap();

    // The provider comes back; the same fetch resumes and ends with the same bytes.
    sales.run();
    let resumed = fetch_ok(&churn, "sales/clicks", &out, &[]);
    assert!(
        resumed["resumed_from_batch"].as_u64().unwrap() > 0,
        "{resumed}"
    );
    for field in ["digest", "rows", "batches", "bytes", "version"] {
        assert_eq!(
            resumed[field], whole[field],
            "{field}: {resumed} vs {whole}"
        );
    }
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(),
        "the resumed file differs from the uninterrupted one"
    );

    // Resuming the altered copy fails verification and discards it; a new fetch then works.
    fetch_refused(
        &churn,
        "sales/clicks",
        &tampered,
        &[],
        &[
            "the received data failed verification and was discarded",
            "digest",
        ],
    );
    let again = fetch_ok(&churn, "sales/clicks", &tampered, &[]);
    assert_eq!(again["resumed_from_batch"], 0);
    assert_eq!(again["digest"], whole["digest"]);
    for node in [&sales, &churn] {
        let out = node.cli(&["audit", "--verify"]);
        assert!(out.success, "{}: {}", node.domain, out.stderr);
    }
}

#[test]
fn a_whole_product_fetched_over_three_connections_is_the_same_file() {
    let sales = TestNode::start("sales", &[]);
    publish(&sales, "clicks", &clicks_csv(12), "");
    let churn = TestNode::start_joining("churn", &sales);
    wait_for_product(&churn, "sales/clicks", 1);
    agree(&churn, "sales/clicks", &[]);
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.arrow");
    let three = dir.path().join("three.arrow");
    let single = fetch_ok(&churn, "sales/clicks", &one, &[]);
    let striped = fetch_ok(&churn, "sales/clicks", &three, &["--connections", "3"]);
    for field in ["digest", "rows", "batches", "bytes"] {
        assert_eq!(
            striped[field], single[field],
            "{field}: {striped} vs {single}"
        );
    }
    assert_eq!(
        (
            single["connections"].as_u64(),
            striped["connections"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert!(
        std::fs::read(&three).unwrap() == std::fs::read(&one).unwrap(),
        "the striped fetch wrote another file"
    );
    // The provider served the second fetch as three stripes (each audited once the consumer
    // acknowledged all of it).
    let served = || -> Vec<String> {
        let log = sales.cli(&["audit", "--json"]).json();
        let mut stripes: Vec<String> = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "transfer_served")
            .map(|e| e["detail"]["stripe"].to_string())
            .collect();
        stripes.sort();
        stripes
    };
    wait_until(Duration::from_secs(10), || served().len() >= 4);
    assert_eq!(served(), ["[0,1]", "[0,3]", "[1,3]", "[2,3]"]);
    if let Some(py) = read_back_rows(&three) {
        assert_eq!(py, single["rows"].as_u64().unwrap());
    }

    // Out of range: a usage error before anything is sent.
    let out = dir.path().join("nine.arrow");
    let result = churn.fetch("sales/clicks", &out, &["--connections", "9"]);
    assert!(!result.success);
    assert!(result.stderr.contains("--connections"), "{}", result.stderr);
    assert_nothing_left(&out);
}

/// Rows in the Arrow file at `path` as pyarrow reads them, when pyarrow is required.
fn read_back_rows(path: &Path) -> Option<u64> {
    require_pyarrow().then(|| read_back(path)["rows"].as_u64().unwrap())
}

/// `meshnode fetch PRODUCT ARGS... --data-dir DIR` run from `cwd`.
fn fetch_in(node: &TestNode, cwd: &Path, product: &str, args: &[&str]) -> mesh_tests::CliOutput {
    let output = std::process::Command::new(mesh_tests::meshnode_bin())
        .current_dir(cwd)
        .args(["fetch", product])
        .args(args)
        .args(["--data-dir", node.dir_str()])
        .env_remove("MESHNODE_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run meshnode fetch");
    mesh_tests::CliOutput::of(output)
}

/// Asserts that `result` failed with one line containing every `expected` text.
fn assert_failed(result: &mesh_tests::CliOutput, expected: &[&str]) {
    assert!(!result.success, "should fail: {}", result.stdout);
    let err = result.stderr.trim();
    assert_eq!(err.lines().count(), 1, "one line of error: {err}");
    for text in expected {
        assert!(err.contains(text), "`{text}` not in: {err}");
    }
}

/// Rows and `order_id`s of an Arrow IPC file, read back with pyarrow.
fn read_back(path: &Path) -> Value {
    let script = "\
import json, sys
import pyarrow.ipc as ipc
t = ipc.open_file(sys.argv[1]).read_all()
print(json.dumps({'rows': t.num_rows, 'columns': t.column_names,
                  'ids': t.column('order_id').to_pylist() if 'order_id' in t.column_names else []}))
";
    serde_json::from_str(&python(script, &[path.to_str().unwrap()])).unwrap()
}

#[test]
fn fetch_out_never_lands_in_a_data_directory_nor_over_a_file_without_force() {
    let (sales, churn) = mesh(300);
    agree(&churn, "sales/orders", &["--columns", "order_id,region"]);
    let dir = tempfile::tempdir().unwrap();
    let key_file = churn.dir.join("identity.key");
    let key_before = std::fs::read(&key_file).unwrap();
    let inside = "is inside the meshnode data directory";
    std::fs::create_dir_all(churn.dir.join("received")).unwrap();

    // Over the node's own key file: refused, with or without --force, by absolute path and
    // by a path relative to a working directory inside the data directory.
    // (`--format arrow`: the name says no format, and the daemon's check is what is tested.)
    for args in [
        vec!["--out", key_file.to_str().unwrap(), "--format", "arrow"],
        vec![
            "--out",
            key_file.to_str().unwrap(),
            "--force",
            "--format",
            "arrow",
        ],
    ] {
        assert_failed(
            &fetch_in(&churn, dir.path(), "sales/orders", &args),
            &[inside],
        );
    }
    let relative = fetch_in(
        &churn,
        &churn.dir,
        "sales/orders",
        &["--out", "identity.key", "--force", "--format", "arrow"],
    );
    let real_dir = std::fs::canonicalize(&churn.dir).unwrap();
    assert_failed(&relative, &[inside, &real_dir.display().to_string()]);
    // Elsewhere in the data directory, through `..`, and in another node's data directory.
    let sneaky = churn.dir.join("received/../api.token");
    let provider_key = sales.dir.join("identity.key");
    let provider_key_before = std::fs::read(&provider_key).unwrap();
    for out in [churn.dir.join("stolen.arrow"), sneaky, provider_key.clone()] {
        let result = fetch_in(
            &churn,
            dir.path(),
            "sales/orders",
            &[
                "--out",
                out.to_str().unwrap(),
                "--force",
                "--format",
                "arrow",
            ],
        );
        assert_failed(&result, &[inside]);
    }
    assert_eq!(std::fs::read(&key_file).unwrap(), key_before);
    assert_eq!(std::fs::read(&provider_key).unwrap(), provider_key_before);
    assert!(!churn.dir.join("stolen.arrow").exists());
    // The daemon answers 400, not an internal error.
    let body = serde_json::json!({"product": "sales/orders", "out": key_file, "force": true});
    let (status, text) = churn.api("POST", "/v1/fetch", Some(&body.to_string()));
    assert_eq!(status, 400, "{text}");
    // The node still starts with its key and serves: the fetch below works.

    // The data directory's received/ directory is the one place inside it a fetch may use.
    let v = fetch_ok(
        &churn,
        "sales/orders",
        &churn.dir.join("received/orders.arrow"),
        &[],
    );
    assert_eq!(v["rows"], 300);

    // A relative --out is resolved against the caller's working directory.
    let result = fetch_in(
        &churn,
        dir.path(),
        "sales/orders",
        &["--out", "relative.arrow", "--json"],
    );
    let v = result.json();
    let expected = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("relative.arrow");
    assert_eq!(v["out"], expected.to_str().unwrap(), "{v}");
    assert!(expected.exists());

    // An existing file is kept unless --force, then replaced by the fetched data.
    let existing = dir.path().join("existing.arrow");
    std::fs::write(&existing, "precious").unwrap();
    let result = churn.fetch("sales/orders", &existing, &[]);
    assert_failed(&result, &["already exists: pass --force to replace it"]);
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious");
    let body = serde_json::json!({"product": "sales/orders", "out": existing});
    let (status, text) = churn.api("POST", "/v1/fetch", Some(&body.to_string()));
    assert_eq!(status, 409, "{text}");
    let v = fetch_ok(&churn, "sales/orders", &existing, &["--force"]);
    assert_eq!(v["rows"], 300);
    if require_pyarrow() {
        let back = read_back(&existing);
        assert_eq!(back["rows"], 300, "{back}");
        assert_eq!(back["ids"], serde_json::json!((0..300).collect::<Vec<_>>()));
    }

    // A missing directory is a clear user error, and is not created.
    let missing = dir.path().join("no/such/dir/x.arrow");
    let result = churn.fetch("sales/orders", &missing, &[]);
    assert_failed(
        &result,
        &[
            &format!(
                "the output directory `{}` does not exist",
                dir.path().join("no/such/dir").display()
            ),
            "create it first",
        ],
    );
    assert!(!dir.path().join("no").exists());
    let body = serde_json::json!({"product": "sales/orders", "out": missing});
    let (status, text) = churn.api("POST", "/v1/fetch", Some(&body.to_string()));
    assert_eq!(status, 400, "{text}");

    // `--out -` is standard output, never a file named `-`.
    let result = fetch_in(&churn, dir.path(), "sales/orders", &["--out", "-"]);
    assert!(result.success, "{}", result.stderr);
    assert!(!dir.path().join("-").exists());
    assert_eq!(std::fs::read(&key_file).unwrap(), key_before);
}

#[test]
fn two_fetches_to_one_path_give_one_file_and_one_clear_refusal() {
    let sales = TestNode::start("sales", &[]);
    publish(&sales, "clicks", &clicks_csv(64), "");
    let churn = TestNode::start_joining("churn", &sales);
    wait_for_product(&churn, "sales/clicks", 1);
    agree(&churn, "sales/clicks", &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clicks.arrow");
    let mut lock_name = out.file_name().unwrap().to_os_string();
    lock_name.push(".partial.lock");
    let lock = out.with_file_name(lock_name);

    let first = churn.spawn_fetch("sales/clicks", &out, &[]);
    wait_until(Duration::from_secs(20), || lock.exists())
        .unwrap_or_else(|| panic!("the first fetch never locked its output: {}", churn.log()));
    // Even with --force, the second fetch may not touch the path while the first writes.
    let second = churn.fetch("sales/clicks", &out, &["--force"]);
    let first_still_running = !out.exists();
    let first = wait_output(first);
    assert!(first.success, "the first fetch failed: {}", first.stderr);
    assert!(
        first_still_running,
        "the first fetch ended before the second started; use a larger product"
    );
    assert_failed(
        &second,
        &[
            "error: fetching `sales/clicks` failed: ",
            &format!(
                "{}` is already being written by another fetch",
                out.display()
            ),
        ],
    );
    let v: Value = serde_json::from_str(&first.stdout).unwrap();
    let [file, partial, state] = fetch_files(&out);
    assert!(file.exists() && !partial.exists() && !state.exists());
    assert!(!lock.exists(), "the lock file was left behind");
    if require_pyarrow() {
        let rows = python(
            "import sys, pyarrow.ipc as ipc; print(ipc.open_file(sys.argv[1]).read_all().num_rows)",
            &[out.to_str().unwrap()],
        );
        assert_eq!(rows.trim(), v["rows"].to_string(), "{v}");
    }
    // The same fetch again, now that the path is free: refused as existing, then replaced.
    assert_failed(&churn.fetch("sales/clicks", &out, &[]), &["already exists"]);
    let again = fetch_ok(&churn, "sales/clicks", &out, &["--force"]);
    assert_eq!(again["digest"], v["digest"]);
    drop(sales);
}

/// `orders` without the `email` column.
fn orders_without_email_csv(rows: usize) -> String {
    let mut csv = String::from("order_id,region,amount\n");
    for i in 0..rows {
        let _ = writeln!(csv, "{i},EU,{i}.50");
    }
    csv
}

#[test]
fn a_restriction_holds_for_every_version_until_the_owner_lifts_it() {
    if !require_pyarrow() {
        return;
    }
    // v1 restricts `email`; the consumer agrees to every column, present and future.
    let (sales, churn) = mesh(50);
    agree(&churn, "sales/orders", &["--columns", "*"]);
    let dir = tempfile::tempdir().unwrap();
    let fetched = std::cell::Cell::new(0);
    let columns = |version: &str| {
        fetched.set(fetched.get() + 1);
        let out = dir
            .path()
            .join(format!("{}-v{version}.arrow", fetched.get()));
        fetch_ok(&churn, "sales/orders", &out, &["--version", version]);
        read_back(&out)["columns"].clone()
    };
    let without_email = serde_json::json!(["order_id", "region", "amount", "note"]);
    let restricted = || {
        let catalog = churn.cli(&["catalog", "--json"]).json();
        catalog
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["product"] == "sales/orders")
            .map(|p| p["restricted"].clone())
    };

    // v2 has no `email` column and says nothing of restrictions: its descriptor cannot
    // list `email`, and v1, which holds it, is still served without it.
    publish(&sales, "orders", &orders_without_email_csv(40), "");
    wait_for_product(&churn, "sales/orders", 2);
    assert_eq!(restricted(), Some(serde_json::json!([])));
    assert_eq!(columns("1"), without_email);
    assert_eq!(
        columns("2"),
        serde_json::json!(["order_id", "region", "amount"])
    );
    // v3 brings `email` back, restricted again without being told.
    publish(&sales, "orders", &orders_csv(30), "");
    wait_for_product(&churn, "sales/orders", 3);
    assert_eq!(restricted(), Some(serde_json::json!(["email"])));
    assert_eq!(columns("3"), without_email);

    // Lifting is explicit, and lifting a column that is not restricted is refused.
    let csv = write_file(sales.dir.parent().unwrap(), "v4.csv", &orders_csv(20));
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        csv.to_str().unwrap(),
        "--unrestrict",
        "amount",
    ]);
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("`amount` of `orders` is not restricted"),
        "{}",
        out.stderr
    );
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        csv.to_str().unwrap(),
        "--unrestrict",
        "email",
    ]);
    assert!(out.success, "{}", out.stderr);
    wait_for_product(&churn, "sales/orders", 4);
    assert_eq!(
        columns("1"),
        serde_json::json!(["order_id", "region", "email", "amount", "note"])
    );
}

/// A daemon in a mount namespace of its own (as under systemd's `PrivateTmp=yes`) sees
/// other directories than the CLI at some paths: a fetch there is refused instead of written
/// where the user will never find it, and a publish from there says why the daemon cannot
/// see the file.
#[test]
fn a_path_the_daemon_sees_otherwise_than_the_command_is_refused_with_the_cause() {
    if !TestNode::can_hide_directories() {
        eprintln!("skipped: this host gives no process a mount namespace of its own");
        return;
    }
    let (sales, mut churn) = mesh(20);
    agree(&churn, "sales/orders", &["--columns", "order_id,region"]);
    let shared = tempfile::tempdir().unwrap();
    let hidden = shared.path().join("private");
    std::fs::create_dir(&hidden).unwrap();
    churn.stop();
    churn.run_hiding(&hidden);

    let out = hidden.join("orders.arrow");
    let refused = churn.fetch("sales/orders", &out, &[]);
    assert!(!refused.success);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("sees another file at")
            && refused.stderr.contains("mount namespace of its own")
            && refused.stderr.contains("--out -"),
        "{}",
        refused.stderr
    );
    assert_nothing_left(&out);
    // Beside it, where both see the same directory, the fetch lands.
    fetch_ok(
        &churn,
        "sales/orders",
        &shared.path().join("orders.arrow"),
        &[],
    );

    // A publish from the hidden directory names the cause rather than a missing file.
    let csv = write_file(&hidden, "local.csv", "id\n1\n");
    let refused = churn.cli(&["publish", "local", "--from", csv.to_str().unwrap()]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("sees nothing at") && refused.stderr.contains("PrivateTmp="),
        "{}",
        refused.stderr
    );
    drop(sales);
}
