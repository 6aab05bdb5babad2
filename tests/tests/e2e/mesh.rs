//! The mesh end to end: real daemons on 127.0.0.1 gossiping and syncing the catalog.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use mesh_tests::{TestNode, wait_until, write_file};

const CONVERGE: Duration = Duration::from_secs(30);

fn sample_csv(dir: &std::path::Path, rows: usize) -> String {
    let mut csv = String::from("order_id,region,amount\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "{i},{},{}.5\n",
            if i % 2 == 0 { "EU" } else { "US" },
            i
        ));
    }
    write_file(dir, &format!("orders-{rows}.csv"), &csv)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn line_of_four_converges_and_new_versions_replace_old() {
    let a = TestNode::start("sales", &[]);
    let b = TestNode::start_joining("customer", &a);
    let c = TestNode::start_joining("e-shop", &b);
    let d = TestNode::start_joining("churn", &c);

    let csv = sample_csv(&a.dir, 10);
    let out = a.cli(&["publish", "orders", "--from", &csv, "--json"]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.json()["version"], 1);

    for node in [&b, &c, &d] {
        wait_until(CONVERGE, || node.version_of("sales/orders") == Some(1)).unwrap_or_else(|| {
            panic!(
                "{} never saw sales/orders v1: {:?}\n{}",
                node.domain,
                node.catalog(),
                node.log()
            )
        });
    }
    // The remote entry carries the owner's key and domain.
    let entry = d
        .catalog()
        .into_iter()
        .find(|p| p["product"] == "sales/orders")
        .unwrap();
    assert_eq!(entry["owner"], a.status()["public_key"]);
    assert_eq!(entry["domain"], "sales");
    assert_eq!(entry["rows"], 10);
    assert_eq!(entry["local"], false);

    let csv2 = sample_csv(&a.dir, 20);
    assert!(a.cli(&["publish", "orders", "--from", &csv2]).success);
    for node in [&b, &c, &d] {
        wait_until(CONVERGE, || node.version_of("sales/orders") == Some(2))
            .unwrap_or_else(|| panic!("{} never saw v2", node.domain));
        assert_eq!(
            node.catalog().len(),
            1,
            "the old version is replaced, not added"
        );
    }
    let entry = d
        .catalog()
        .into_iter()
        .find(|p| p["product"] == "sales/orders")
        .unwrap();
    assert_eq!(entry["rows"], 20);
}

#[test]
fn late_joiner_gets_the_catalog_through_sync() {
    let a = TestNode::start("sales", &[]);
    let csv = sample_csv(&a.dir, 5);
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    assert!(a.cli(&["publish", "returns", "--from", &csv]).success);

    let late = TestNode::start_joining("churn", &a);
    wait_until(CONVERGE, || late.catalog().len() == 2)
        .unwrap_or_else(|| panic!("late joiner did not sync: {:?}", late.catalog()));
    assert_eq!(late.version_of("sales/returns"), Some(1));
}

#[test]
fn restarted_node_catches_up_on_missed_versions() {
    let a = TestNode::start("sales", &[]);
    let mut b = TestNode::start_joining("churn", &a);
    let csv = sample_csv(&a.dir, 5);
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    wait_until(CONVERGE, || b.version_of("sales/orders") == Some(1)).expect("b sees v1");

    b.stop();
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    assert_eq!(a.version_of("sales/orders"), Some(3));

    b.run();
    // Its catalog survived the restart...
    assert!(b.version_of("sales/orders").is_some_and(|v| v >= 1));
    // ...and catches up without anyone republishing.
    wait_until(CONVERGE, || b.version_of("sales/orders") == Some(3))
        .unwrap_or_else(|| panic!("restarted node stuck at {:?}", b.version_of("sales/orders")));
}

#[test]
fn peers_and_metrics_are_reported() {
    let a = TestNode::start("sales", &[]);
    let b = TestNode::start_joining("churn", &a);
    wait_until(CONVERGE, || {
        let peers = b.cli(&["peers", "--json"]).json();
        peers.as_array().is_some_and(|p| {
            p.len() == 1 && p[0]["domain"] == "sales" && p[0]["peer_id"] == a.status()["peer_id"]
        })
    })
    .unwrap_or_else(|| panic!("peers: {}", b.cli(&["peers", "--json"]).stdout));
    let status = b.status();
    assert_eq!(status["peers"], 1);
    let addr = status["listen_addrs"][0].as_str().unwrap();
    assert!(addr.ends_with(&format!("/p2p/{}", status["peer_id"].as_str().unwrap())));

    // Prometheus text on /metrics, behind the same bearer token.
    let api = std::fs::read_to_string(b.dir.join("api.addr")).unwrap();
    let token = std::fs::read_to_string(b.dir.join("api.token")).unwrap();
    let metrics = mesh_tests::python(
        "import sys, urllib.request\n\
         req = urllib.request.Request('http://' + sys.argv[1] + '/metrics', headers={'Authorization': 'Bearer ' + sys.argv[2]})\n\
         print(urllib.request.urlopen(req).read().decode())",
        &[api.trim(), token.trim()],
    );
    assert!(metrics.contains("meshnode_peers 1"), "{metrics}");
    assert!(metrics.contains("meshnode_connections 1"), "{metrics}");
    assert!(metrics.contains("meshnode_catalog_size"), "{metrics}");
    assert!(
        metrics.contains("meshnode_messages_rejected_total"),
        "{metrics}"
    );
}

#[test]
fn hostile_member_cannot_poison_the_catalog() {
    let a = TestNode::start("sales", &[]);
    let b = TestNode::start_joining("churn", &a);
    let csv = sample_csv(&a.dir, 5);
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    wait_until(CONVERGE, || b.version_of("sales/orders") == Some(1)).expect("b sees v1");

    let go = a.dir.parent().unwrap().join("go");
    // An insider: admitted to the mesh with a ticket, then misbehaving.
    let ticket = b.invite("mallory");
    let mut hostile =
        std::process::Command::new(mesh_tests::meshnode_bin().with_file_name("hostile-peer"))
            .args([
                "--ticket",
                &ticket,
                "--bootstrap",
                &b.addr(),
                "--go",
                go.to_str().unwrap(),
                "--linger",
                "10",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start hostile-peer");
    // The replay needs a version older than the newest: the insider must have learnt v1
    // (a sync answers the newest only) before v2 exists. It ends on its own (`--linger`,
    // a hard stop), so reading its output cannot hang.
    let mut stdout = BufReader::new(hostile.stdout.take().expect("hostile-peer stdout"));
    let mut actions = String::new();
    while !actions.lines().any(|l| l == "seen 1") {
        let read = stdout
            .read_line(&mut actions)
            .expect("read hostile-peer output");
        assert!(
            read > 0,
            "hostile-peer ended before it learnt v1: {actions}"
        );
    }
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    wait_until(CONVERGE, || b.version_of("sales/orders") == Some(2)).expect("b sees v2");
    let honest = |n: &TestNode| {
        n.catalog()
            .into_iter()
            .find(|p| p["product"] == "sales/orders")
            .map(|p| {
                (
                    p["version"].clone(),
                    p["digest"].clone(),
                    p["title"].clone(),
                )
            })
    };
    let before = honest(&b);
    std::fs::write(&go, b"go").unwrap();
    stdout
        .read_to_string(&mut actions)
        .expect("read hostile-peer output");
    hostile.wait().expect("hostile-peer ends");
    for action in [
        "forged-owner",
        "tampered",
        "garbage",
        "replayed-old-version",
    ] {
        assert!(
            actions.lines().any(|l| l == action),
            "hostile did not {action}: {actions}"
        );
    }

    // Every honest catalog is unchanged.
    assert_eq!(honest(&b), before);
    assert_eq!(honest(&a), before);
    assert_eq!(b.catalog().len(), 1);
    // The direct neighbour rejected and counted each attack (the replayed old version, sent
    // in a sync answer whose query claimed a newer one, as unsolicited)...
    let rejected = &b.status()["rejected"];
    for reason in ["not_owner", "bad_signature", "malformed", "unsolicited"] {
        assert!(
            rejected[reason].as_u64().unwrap() >= 1,
            "no {reason} rejection counted: {rejected}"
        );
    }
    // ...and forwarded none of them: the node behind it saw nothing to reject.
    let rejected_a = &a.status()["rejected"];
    for reason in ["not_owner", "bad_signature", "malformed"] {
        assert_eq!(
            rejected_a[reason], 0,
            "{reason} reached the second hop: {rejected_a}"
        );
    }
}

#[test]
fn two_keys_claiming_one_domain_are_told_apart() {
    let a = TestNode::start("sales", &[]);
    // A key joining under the name of a domain the charter names is let in (the chartered
    // key joins that way), so two keys can carry one name.
    let impostor = TestNode::start_joining("sales", &a);
    let watcher = TestNode::start_joining("churn", &a);
    // The name of an admitted member is refused, saying how to reuse it on purpose.
    let taken = a.cli(&["mesh", "invite", "--domain", "churn"]);
    assert!(!taken.success);
    assert!(
        taken.stderr.contains("`churn` is carried by the member")
            && taken.stderr.contains("--reuse-name"),
        "{}",
        taken.stderr
    );
    let reused = a.cli(&["mesh", "invite", "--domain", "churn", "--reuse-name"]);
    assert!(reused.success, "{}", reused.stderr);
    let csv = sample_csv(&a.dir, 3);
    assert!(a.cli(&["publish", "orders", "--from", &csv]).success);
    assert!(impostor.cli(&["publish", "orders", "--from", &csv]).success);
    wait_until(CONVERGE, || watcher.catalog().len() == 2).expect("both products arrive");

    let names: Vec<String> = watcher
        .catalog()
        .iter()
        .map(|p| p["product"].as_str().unwrap().to_owned())
        .collect();
    let fp_a = a.status()["fingerprint"].as_str().unwrap().to_owned();
    let fp_i = impostor.status()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(names.contains(&format!("sales@{fp_a}/orders")), "{names:?}");
    assert!(names.contains(&format!("sales@{fp_i}/orders")), "{names:?}");

    let ambiguous = watcher.cli(&["catalog", "show", "sales/orders"]);
    assert!(!ambiguous.success);
    assert!(
        ambiguous.stderr.contains("ambiguous"),
        "{}",
        ambiguous.stderr
    );
    assert!(ambiguous.stderr.contains(&format!("sales@{fp_a}/orders")));
    let shown = watcher
        .cli(&["catalog", "show", &format!("sales@{fp_a}/orders"), "--json"])
        .json();
    assert_eq!(shown["owner"], a.status()["public_key"]);
    // 64-bit fingerprints; an 8-digit prefix (the earlier length) still names one key, a
    // shorter one is refused with what to type.
    assert_eq!(fp_a.len(), 16);
    let prefixed = watcher
        .cli(&[
            "catalog",
            "show",
            &format!("sales@{}/orders", &fp_a[..8]),
            "--json",
        ])
        .json();
    assert_eq!(prefixed["owner"], a.status()["public_key"]);
    let short = watcher.cli(&["catalog", "show", &format!("sales@{}/orders", &fp_a[..4])]);
    assert!(!short.success);
    assert!(short.stderr.contains("hex digits"), "{}", short.stderr);
}

/// Two nodes told only of a third find each other from the signed node records the catalog
/// carries. Both run Kademlia as clients, so the third's routing table cannot introduce them.
#[test]
fn nodes_find_peers_they_were_not_told_about() {
    let a = TestNode::start("sales", &[]);
    let mut b = TestNode::init_joining("customer", &a);
    let mut c = TestNode::init_joining("churn", &a);
    for node in [&mut b, &mut c] {
        node.edit_config("dht_server = true", "dht_server = false");
        node.run();
    }
    let peer_ids = |node: &TestNode| -> Vec<String> {
        node.cli(&["peers", "--json"])
            .json()
            .as_array()
            .map(|peers| {
                peers
                    .iter()
                    .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let b_id = b.status()["peer_id"].as_str().unwrap().to_owned();
    let c_id = c.status()["peer_id"].as_str().unwrap().to_owned();
    wait_until(CONVERGE, || {
        peer_ids(&b).contains(&c_id) && peer_ids(&c).contains(&b_id)
    })
    .unwrap_or_else(|| {
        panic!(
            "customer and churn never met: {:?} / {:?}\n{}",
            peer_ids(&b),
            peer_ids(&c),
            b.log()
        )
    });
}

#[test]
fn a_join_waiting_for_the_quorum_says_so_and_json_tells_admitted() {
    // Two governing domains, both needed to admit anyone else.
    let mut sales = TestNode::init("sales", &[]);
    let customer = TestNode::init("customer", &[]);
    let key = mesh_node::keyfile::load(&mesh_node::DataDir::new(&customer.dir).identity())
        .expect("customer's identity")
        .public_key()
        .to_hex();
    let charter = write_file(
        sales.dir.parent().unwrap(),
        "charter.toml",
        &format!(
            "name = \"e-commerce\"\nquorum = 2\nadmission = \"quorum\"\n\n\
             [[governors]]\ndomain = \"sales\"\n\n\
             [[governors]]\ndomain = \"customer\"\nkey = \"{key}\"\n"
        ),
    );
    let created = sales.cli(&["mesh", "create", "--charter", charter.to_str().unwrap()]);
    assert!(created.success, "mesh create: {}", created.stderr);
    sales.run();

    // A governing domain is a member by the charter: admitted at once.
    let joined = customer
        .cli(&["mesh", "join", &sales.invite("customer"), "--json"])
        .json();
    assert_eq!(joined["admitted"], true, "{joined}");
    assert_eq!(joined["name"], "e-commerce", "{joined}");

    // Anyone else waits for the second signature, and is told so.
    let churn = TestNode::init("churn", &[]);
    let out = churn.cli(&["mesh", "join", &sales.invite("churn")]);
    assert!(out.success, "mesh join: {}", out.stderr);
    assert!(
        !out.stdout.contains("this node is in mesh"),
        "{}",
        out.stdout
    );
    for needle in [
        "e-commerce",
        "admission waits",
        "meshnode governance sign",
        "meshnode run",
    ] {
        assert!(
            out.stdout.contains(needle),
            "`{needle}` not in: {}",
            out.stdout
        );
    }
    let crm = TestNode::init("crm", &[]);
    let joined = crm
        .cli(&["mesh", "join", &sales.invite("crm"), "--json"])
        .json();
    assert_eq!(joined["admitted"], false, "{joined}");
    assert_eq!(joined["name"], "e-commerce", "{joined}");
}
