//! Bounded parsing end to end: a descriptor with a column type nested 3,000 levels deep
//! (the type string that overflowed the type parser's stack) neither crashes, nor enters,
//! nor crosses the mesh, and `publish` refuses everything its peers would reject.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_tests::{TestNode, python, require_pyarrow, wait_until, write_file};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

fn sample_csv(dir: &Path, rows: usize) -> String {
    let mut csv = String::from("order_id,region,amount\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},EU,{i}.5\n"));
    }
    write_file(dir, &format!("orders-{rows}.csv"), &csv)
        .to_str()
        .unwrap()
        .to_owned()
}

/// Rejections counted for `reason`, as `status` reports them.
fn rejected(node: &TestNode, reason: &str) -> u64 {
    node.status()["rejected"][reason].as_u64().unwrap_or(0)
}

/// Product names in a node's catalog, sorted.
fn products(node: &TestNode) -> Vec<String> {
    let mut names: Vec<String> = node
        .catalog()
        .iter()
        .map(|p| p["product"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn deeply_nested_type_from_a_peer_is_refused_counted_and_not_forwarded() {
    let mut a = TestNode::start("sales", &[]);
    let mut b = TestNode::start_joining("churn", &a);
    let mut c = TestNode::start_joining("eshop", &b);
    let inputs = tempfile::tempdir().unwrap();
    let csv = sample_csv(inputs.path(), 5);
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    wait_until(CONVERGE, || c.version_of("sales/orders") == Some(1)).expect("c sees v1");

    // A well-signed descriptor with a 3,000-deep column type, gossiped to `a` and served to
    // it by sync, by a member of the mesh.
    let ticket = a.invite("mallory");
    let hostile = Command::new(mesh_tests::meshnode_bin().with_file_name("hostile-peer"))
        .args([
            "--ticket",
            &ticket,
            "--attack",
            "deep-type",
            "--depth",
            "3000",
            "--bootstrap",
            &a.addr(),
            "--linger",
            "4",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hostile-peer");
    let output = hostile.wait_with_output().expect("hostile-peer output");
    let actions = String::from_utf8_lossy(&output.stdout).into_owned();
    for action in ["deep-gossiped", "deep-served-by-sync"] {
        assert!(
            actions.lines().any(|l| l == action),
            "hostile did not {action}: {actions}"
        );
    }

    // `a` stayed up and counted both copies (gossip and sync) as over a limit.
    wait_until(CONVERGE, || rejected(&a, "over_limit") >= 2).unwrap_or_else(|| {
        panic!(
            "a did not count both rejections: {}\n{}",
            a.status()["rejected"],
            a.log()
        )
    });
    let metric = a
        .metric("meshnode_messages_rejected_total{reason=\"over_limit\"}")
        .expect("the over_limit counter is exported");
    assert!(metric >= 2.0, "metric {metric}");

    // Traffic still flows through `a` after the attack; once `c` has the new version, the
    // deep descriptor would have reached it too had `a` or `b` forwarded it.
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    wait_until(CONVERGE, || c.version_of("sales/orders") == Some(2)).expect("c sees v2");
    for node in [&mut a, &mut b, &mut c] {
        assert!(
            node.is_running(),
            "{} crashed:\n{}",
            node.domain,
            node.log()
        );
        assert!(node.cli(&["status", "--json"]).success);
        assert_eq!(products(node), ["sales/orders"], "{}", node.domain);
    }
    assert_eq!(rejected(&b, "over_limit"), 0, "forwarded to b");
    assert_eq!(rejected(&c, "over_limit"), 0, "forwarded to c");

    // Nothing was stored that crashes `a` when it starts again.
    a.stop();
    a.run();
    assert_eq!(products(&a), ["sales/orders"]);
}

#[test]
fn publish_refuses_what_peers_would_reject_and_stores_nothing() {
    let mut a = TestNode::start("sales", &[]);
    let inputs = tempfile::tempdir().unwrap();
    let csv = sample_csv(inputs.path(), 5);
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    let catalog_before = a.cli(&["catalog", "--json"]).json();
    let audit_before = a.cli(&["audit", "--json"]).stdout;
    let products_dir = a.dir.join("products");
    let files = |dir: &Path| -> Vec<String> {
        let mut names = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    names.push(path.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        names.sort();
        names
    };
    let files_before = files(&products_dir);
    assert_eq!(files_before, ["orders/1.arrow"]);

    let refused = |args: &[&str], expected: &str| {
        let out = a.cli(args);
        assert!(!out.success, "{args:?} was accepted: {}", out.stdout);
        assert!(
            out.stderr.contains(expected),
            "{args:?}: expected `{expected}` in: {}",
            out.stderr
        );
    };

    // A 100 kB description.
    let description = "x".repeat(100_000);
    refused(
        &[
            "publish",
            "orders",
            "--from",
            &csv,
            "--description",
            &description,
        ],
        "the description is 100000 bytes long; the limit is 16384",
    );

    // A CSV with 5,000 columns.
    let header: Vec<String> = (0..5000).map(|i| format!("c{i}")).collect();
    let row = vec!["1"; 5000].join(",");
    let wide = write_file(
        inputs.path(),
        "wide.csv",
        &format!("{}\n{row}\n", header.join(",")),
    );
    refused(
        &["publish", "wide", "--from", wide.to_str().unwrap()],
        "the schema has 5000 entries; the limit is 2048",
    );

    // Every column within its limits, the whole descriptor over the wire limit.
    let header: Vec<String> = (0..1000)
        .map(|i| format!("{}{i:04}", "n".repeat(96)))
        .collect();
    let row = vec!["1"; 1000].join(",");
    let heavy = write_file(
        inputs.path(),
        "heavy.csv",
        &format!("{}\n{row}\n", header.join(",")),
    );
    refused(
        &["publish", "heavy", "--from", heavy.to_str().unwrap()],
        "peers accept at most 65536",
    );

    // A Parquet file whose column type is nested 3,000 levels deep.
    if require_pyarrow() {
        let deep = inputs.path().join("deep.parquet");
        python(
            "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
             t = pa.int32()\n\
             for _ in range(3000):\n    t = pa.list_(t)\n\
             pq.write_table(pa.table({'deep': pa.array([None], type=t)}), sys.argv[1])",
            &[deep.to_str().unwrap()],
        );
        refused(
            &["publish", "deep", "--from", deep.to_str().unwrap()],
            "is nested 6001 levels deep; the limit is 66",
        );
    }

    // Nothing was stored, and the daemon is still serving.
    assert!(a.is_running(), "{}", a.log());
    assert_eq!(a.cli(&["catalog", "--json"]).json(), catalog_before);
    assert_eq!(a.cli(&["audit", "--json"]).stdout, audit_before);
    assert_eq!(files(&products_dir), files_before);
    // The refusals used no version number.
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    assert_eq!(a.version_of("sales/orders"), Some(2));
    let catalog: Value = a.cli(&["catalog", "--json"]).json();
    assert_eq!(catalog.as_array().map(Vec::len), Some(1));
}

/// How many products of the hostile member `node`'s catalog holds.
fn mallory_held(node: &TestNode) -> usize {
    products(node)
        .iter()
        .filter(|p| p.starts_with("mallory/"))
        .count()
}

/// `publisher` (domain `domain`) publishes each of `names` with `args`, and each reaches
/// `node` before the next is published.
fn publish_reaching(
    publisher: &TestNode,
    domain: &str,
    names: &[&str],
    args: &[&str],
    node: &TestNode,
) {
    for name in names {
        let out = publisher.cli(&[&["publish", name][..], args].concat());
        assert!(out.success, "{}", out.stderr);
        wait_until(CONVERGE, || {
            node.version_of(&format!("{domain}/{name}")) == Some(1)
        })
        .unwrap_or_else(|| panic!("{domain}/{name} never reached: {}", node.log()));
    }
}

/// `sales`, started with each `(from, to)` of `edits` made in its config, and `churn` joined
/// to it and holding `sales/orders` (five rows of `csv`, written in `inputs`).
fn sales_and_churn(edits: &[(&str, &str)], inputs: &Path) -> (TestNode, TestNode, String) {
    let mut sales = TestNode::init("sales", &[]);
    for (from, to) in edits {
        sales.edit_config(from, to);
    }
    sales.run();
    let churn = TestNode::start_joining("churn", &sales);
    let csv = sample_csv(inputs, 5);
    assert!(sales.cli(&["publish", "orders", "--from", &csv]).success);
    wait_until(CONVERGE, || churn.version_of("sales/orders") == Some(1))
        .expect("churn sees orders");
    (sales, churn, csv)
}

/// Runs `hostile-peer` as a member invited by `target`, with `args`, against `target`, and
/// checks that it printed `own-gossiped`.
fn hostile_member(target: &TestNode, args: &[&str]) {
    hostile_member_until(target, args, "own-gossiped");
}

/// Runs `hostile-peer` as a member invited by `target`, with `args`, against `target`, and
/// checks that it printed `done`.
fn hostile_member_until(target: &TestNode, args: &[&str], done: &str) {
    let ticket = target.invite("mallory");
    let out = Command::new(mesh_tests::meshnode_bin().with_file_name("hostile-peer"))
        .args(["--ticket", &ticket, "--bootstrap", &target.addr()])
        .args(args)
        .output()
        .expect("run hostile-peer");
    let actions = String::from_utf8_lossy(&out.stdout);
    assert!(
        actions.lines().any(|l| l == done),
        "hostile did not print `{done}`: {actions}"
    );
}

#[test]
fn a_member_filling_the_catalog_is_cut_to_its_share_and_others_still_get_in() {
    let inputs = tempfile::tempdir().unwrap();
    let (mut sales, churn, csv) = sales_and_churn(
        &[("max_catalog_mib = 1024", "max_catalog_mib = 1")],
        inputs.path(),
    );

    // A member gossips (and serves by sync) 100 descriptors of 16 kB: 1.6 MB into a
    // catalog of 1 MiB, and serves a forged copy of the last one after them.
    hostile_member(
        &sales,
        &[
            "--attack",
            "own",
            "--count",
            "100",
            "--pad",
            "16000",
            "--forge-last",
            "--linger",
            "4",
        ],
    );
    wait_until(CONVERGE, || rejected(&sales, "over_budget") > 0)
        .unwrap_or_else(|| panic!("nothing refused: {}\n{}", sales.status(), sales.log()));
    let status = sales.status();
    let (bytes, max) = (
        status["catalog_bytes"].as_u64().unwrap(),
        status["catalog_max_bytes"].as_u64().unwrap(),
    );
    assert_eq!(max, 1 << 20);
    // The operator sees whose descriptors fill the catalog.
    let largest = &status["catalog_largest_holders"][0];
    assert_eq!(largest["domain"], "mallory", "{status}");
    assert!(largest["bytes"].as_u64().unwrap() > max / 2, "{status}");
    assert!(bytes <= max, "{bytes} bytes in a catalog of {max}");
    // A forged copy served after the flood is checked (its version was never refused) and
    // refused as a forgery, which costs the peer serving it.
    assert!(rejected(&sales, "bad_signature") >= 1, "{status}");
    assert!(!products(&sales).contains(&"mallory/forged".to_owned()));
    let flooded = mallory_held(&sales);
    assert!((40..100).contains(&flooded), "mallory holds {flooded}");
    assert!(products(&sales).contains(&"sales/orders".to_owned()));

    // An honest member publishing after the flood gets in: room is made with the flooding
    // key's descriptors, not refused. Two descriptors of 16 kB are more than the room a
    // refused one of mallory's could have left.
    let long = "y".repeat(16_000);
    publish_reaching(
        &churn,
        "churn",
        &["signups", "visits"],
        &["--from", &csv, "--description", &long],
        &sales,
    );
    assert!(
        sales
            .metric("meshnode_catalog_evicted_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(mallory_held(&sales) < flooded);
    let bytes = sales.status()["catalog_bytes"].as_u64().unwrap();
    assert!(bytes <= max, "{bytes} bytes in a catalog of {max}");
    // Our own products are never what gives room.
    assert!(sales.cli(&["publish", "orders", "--from", &csv]).success);
    assert_eq!(sales.version_of("sales/orders"), Some(2));

    // The count of bytes is the store's: the same after a restart.
    sales.stop();
    sales.run();
    let after = sales.status()["catalog_bytes"].as_u64().unwrap();
    assert!(after <= max, "{after} bytes after a restart");
    assert!(products(&sales).contains(&"churn/signups".to_owned()));
}

#[test]
fn a_member_gossiping_version_after_version_is_passed_on_at_its_rate_and_the_newest_arrives() {
    let inputs = tempfile::tempdir().unwrap();
    let (sales, churn, _) =
        sales_and_churn(&[("gossip_burst = 16", "gossip_burst = 4")], inputs.path());

    // A member gossips 60 versions of its product back to back, through `sales` only.
    hostile_member(
        &sales,
        &["--attack", "versions", "--count", "60", "--linger", "8"],
    );
    // `sales` took its burst of 4 and one more per 5 s, and passed on no more than that:
    // the rest was neither stored nor forwarded.
    wait_until(CONVERGE, || rejected(&sales, "rate_limited") >= 50).unwrap_or_else(|| {
        panic!(
            "sales did not hold the flood back: {}\n{}",
            sales.status()["rejected"],
            sales.log()
        )
    });
    let forwarded = sales
        .metric("meshnode_gossip_validation_total{outcome=\"accepted\"}")
        .unwrap_or(0.0);
    assert!(forwarded <= 10.0, "sales passed on {forwarded} messages");
    assert_eq!(rejected(&churn, "rate_limited"), 0);
    // The newest version still arrives, by anti-entropy, at both.
    for node in [&sales, &churn] {
        wait_until(CONVERGE, || node.version_of("mallory/own") == Some(60)).unwrap_or_else(|| {
            panic!(
                "{} never got the newest version: {:?}\n{}",
                node.domain,
                node.version_of("mallory/own"),
                node.log()
            )
        });
    }
}

/// A CSV of `columns` columns with names of 250 bytes and one row: its descriptor is about
/// `columns` × 260 bytes.
fn wide_csv(dir: &Path, columns: usize) -> String {
    let names: Vec<String> = (0..columns)
        .map(|i| format!("c{i:03}{}", "x".repeat(246)))
        .collect();
    let row: Vec<String> = (0..columns).map(|i| i.to_string()).collect();
    let text = format!("{}\n{}\n", names.join(","), row.join(","));
    write_file(dir, &format!("wide-{columns}.csv"), &text)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_full_catalog_keeps_the_descriptors_of_products_this_node_consumes() {
    let mut sales = TestNode::init("sales", &[]);
    sales.edit_config("max_catalog_mib = 1024", "max_catalog_mib = 1");
    sales.run();
    let churn = TestNode::start_joining("churn", &sales);
    let eshop = TestNode::start_joining("eshop", &sales);
    let inputs = tempfile::tempdir().unwrap();
    let wide = wide_csv(inputs.path(), 180);

    // `churn` fills `sales`'s catalog with descriptors of about 47 kB. The one `sales`
    // consumes has the longest name, so it is the largest: the first to go, were it not kept.
    let consumed = "consumed-by-sales-with-the-longest-name";
    let mut names = vec![consumed.to_owned()];
    names.extend((0..22).map(|i| format!("p-{i:02}")));
    for name in &names {
        let out = churn.cli(&["publish", name, "--from", &wide]);
        assert!(out.success, "{}", out.stderr);
    }
    wait_until(Duration::from_secs(60), || {
        rejected(&sales, "over_budget") > 0
    })
    .unwrap_or_else(|| panic!("sales never filled up: {}", sales.status()));
    wait_until(CONVERGE, || {
        sales.version_of(&format!("churn/{consumed}")) == Some(1)
    })
    .expect("sales holds the product it will consume");
    sales.share_agreed(&format!("churn/{consumed}"), "analytics", &[]);

    // `eshop` publishes after it: room is made with `churn`'s descriptors, the largest
    // first, passing over the one `sales` consumes.
    publish_reaching(
        &eshop,
        "eshop",
        &["e-0", "e-1", "e-2"],
        &["--from", &wide],
        &sales,
    );
    assert!(
        sales
            .metric("meshnode_catalog_evicted_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(sales.version_of(&format!("churn/{consumed}")), Some(1));
    let out_dir = tempfile::tempdir().unwrap();
    let fetched = sales.fetch(
        &format!("churn/{consumed}"),
        &out_dir.path().join("c.arrow"),
        &[],
    );
    assert!(fetched.success, "{}", fetched.stderr);
}

#[test]
fn a_member_whose_own_keys_cosign_each_others_admissions_leaves_each_admission_bounded() {
    // Under `any-member` admission (a mesh's default) a member admits 30 keys of its own,
    // and each of them signs an admission of every other: 30 + 870 votes. Without a bound per
    // domain the mesh keeps all of them, and 4,096 members could make every node keep
    // 4,096 × 1,024.
    const SYBILS: usize = 30;
    const ADMITTERS: usize = mesh_protocol::governance::state::MAX_ADMITTERS;
    let mut sales = TestNode::init("sales", &[]);
    sales.run();
    let churn = TestNode::start_joining("churn", &sales);
    let sybils = SYBILS.to_string();
    hostile_member_until(
        &sales,
        &["--attack", "sybils", "--count", &sybils, "--linger", "2"],
        "sybils-gossiped",
    );
    // sales (the governor) signed churn's and mallory's admissions; mallory signed one per
    // key, and each key takes 7 more signatures besides: 2 + 30 × 8.
    let held = 2 + SYBILS * ADMITTERS;
    let members = 3 + SYBILS;
    let settled = |node: &TestNode| {
        let status = node.status();
        status["members"].as_u64() == Some(members as u64)
            && status["governance_votes"].as_u64() == Some(held as u64)
    };
    wait_until(CONVERGE, || settled(&sales))
        .unwrap_or_else(|| panic!("{}\n{}", sales.status(), sales.log()));
    let refused = SYBILS * (SYBILS - 1) - SYBILS * (ADMITTERS - 1);
    assert!(
        rejected(&sales, "over_budget") >= refused as u64,
        "{}",
        sales.status()
    );
    // Every admission of a key, all its motions together, holds at most 8 signatures.
    let motions: Value = sales.cli(&["governance", "status", "--json"]).json();
    let mut per_domain = std::collections::BTreeMap::<String, usize>::new();
    for m in motions.as_array().unwrap() {
        if let Some(domain) = m["action"]["Admit"]["domain"].as_str() {
            *per_domain.entry(domain.to_owned()).or_default() +=
                m["signed_by"].as_array().unwrap().len();
        }
    }
    let sybil_counts: Vec<usize> = per_domain
        .iter()
        .filter(|(d, _)| d.starts_with("sybil-"))
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(sybil_counts, vec![ADMITTERS; SYBILS], "{per_domain:?}");
    // The other member holds the same votes and members (anti-entropy), and so does sales
    // read back from its store.
    wait_until(CONVERGE, || settled(&churn))
        .unwrap_or_else(|| panic!("{}\n{}", churn.status(), churn.log()));
    sales.stop();
    sales.run();
    assert!(settled(&sales), "{}", sales.status());
}

#[test]
fn descriptors_refused_for_their_owners_budget_are_not_brought_back_by_every_sync() {
    let inputs = tempfile::tempdir().unwrap();
    let (sales, churn, _) = sales_and_churn(
        &[
            ("max_catalog_mib = 1024", "max_catalog_mib = 1"),
            ("sync_interval_secs = 10", "sync_interval_secs = 1"),
        ],
        inputs.path(),
    );
    // A member floods churn, whose catalog has room: churn holds all 100 descriptors of
    // 16 kB and offers them to sales, whose 1 MiB catalog refuses those past the key's share.
    hostile_member(
        &churn,
        &[
            "--attack", "own", "--count", "100", "--pad", "16000", "--linger", "4",
        ],
    );
    assert_eq!(mallory_held(&churn), 100);
    wait_until(CONVERGE, || rejected(&sales, "over_budget") > 0)
        .unwrap_or_else(|| panic!("nothing refused: {}\n{}", sales.status(), sales.log()));
    assert!(mallory_held(&sales) < 100);
    // Set reconciliation alone cannot tell refused from missing: churn would send the refused
    // ones again in every session. sales remembers what it refused and claims it in its
    // queries, so once each refusal is noted, sessions with churn bring none back.
    let rounds = || sales.metric("meshnode_sync_rounds_total").unwrap_or(0.0);
    let after_rounds = |n: f64| {
        let start = rounds();
        wait_until(CONVERGE * 2, || rounds() >= start + n)
            .unwrap_or_else(|| panic!("no sync rounds: {}", sales.log()));
    };
    after_rounds(2.0);
    let refused = rejected(&sales, "over_budget");
    after_rounds(4.0);
    assert_eq!(
        rejected(&sales, "over_budget"),
        refused,
        "refused descriptors came back by sync: {}",
        sales.status()
    );
}
