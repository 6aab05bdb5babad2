//! Mesh membership and governance end to end: real daemons, a charter with three governing
//! domains, amendments and removals voted over the mesh, tickets, and the gates that keep a
//! non-member out of the catalog, the contract protocol and the data plane.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_node::DataDir;
use mesh_node::dataplane::tls;
use mesh_protocol::governance::Ticket;
use mesh_protocol::{Identity, PublicKey};
use mesh_tests::{TestNode, meshnode, wait_until, write_file};
use serde_json::Value;

/// Catalog and membership convergence across a handful of nodes on this slow machine.
const CONVERGE: Duration = Duration::from_secs(30);

const ORDERS: &str = "order_id,region,amount\n1,EU,10.5\n2,US,20.0\n";
const PEOPLE: &str = "person_id,email\n1,a@example.com\n2,b@example.com\n";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `publish NAME --from CSV EXTRA...` on `node`.
fn publish(node: &TestNode, name: &str, csv: &str, extra: &[&str]) -> mesh_tests::CliOutput {
    let path = write_file(node.dir.parent().unwrap(), &format!("{name}.csv"), csv);
    let mut args = vec!["publish", name, "--from", path.to_str().unwrap()];
    args.extend(extra);
    node.cli(&args)
}

/// [`publish`] with auto approval for `analytics`, which must succeed.
fn publish_ok(node: &TestNode, name: &str, csv: &str) {
    let out = publish(
        node,
        name,
        csv,
        &["--approval", "auto", "--purpose", "analytics"],
    );
    assert!(out.success, "publish {name} failed: {}", out.stderr);
}

/// Product names (`domain/name`) in a node's catalog.
fn products(node: &TestNode) -> Vec<String> {
    node.catalog()
        .iter()
        .filter_map(|p| p["product"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `node`'s catalog holds `product`.
fn wait_for_product(node: &TestNode, product: &str) {
    wait_until(CONVERGE, || products(node).iter().any(|p| p == product)).unwrap_or_else(|| {
        panic!(
            "{} never saw {product}: {:?}\n{}",
            node.domain,
            products(node),
            node.log()
        )
    });
}

/// `status.refused_non_members`.
fn refused(node: &TestNode) -> u64 {
    node.status()["refused_non_members"]
        .as_u64()
        .expect("refused_non_members in status")
}

/// Waits until `node` has counted more refused non-members than `before`.
fn wait_refused_beyond(node: &TestNode, before: u64, what: &str) -> u64 {
    wait_until(CONVERGE, || refused(node) > before).unwrap_or_else(|| {
        panic!(
            "{}: the {what} was not counted as a refused non-member ({before} before)\n{}",
            node.domain,
            node.log()
        )
    });
    refused(node)
}

/// The node's key, read from its identity file.
fn key_of(node: &TestNode) -> String {
    mesh_node::keyfile::load(&DataDir::new(&node.dir).identity())
        .expect("an identity")
        .public_key()
        .to_hex()
}

/// A ticket for `domain` with validity `ttl` from `member`.
fn invite(member: &TestNode, domain: &str, ttl: &str) -> String {
    let out = member.cli(&["mesh", "invite", "--domain", domain, "--ttl", ttl, "--json"]);
    out.json()["ticket"].as_str().expect("a ticket").to_owned()
}

/// `meshnode init --join TICKET EXTRA...` in a fresh directory under `root`.
fn init_join(root: &Path, name: &str, ticket: &str, extra: &[&str]) -> mesh_tests::CliOutput {
    let dir = root.join(name);
    let mut args = vec![
        "init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--join",
        ticket,
    ];
    args.extend(extra);
    meshnode(&args)
}

/// Runs the join exchange of `ticket` as a fresh key claiming `domain`, with the clock at
/// `now_ms` (0 skips the newcomer's own expiry check, so the member's is what answers).
fn raw_join(ticket: &str, domain: &str, now_ms: u64) -> Result<bool, String> {
    let ticket = Ticket::decode(ticket).expect("a ticket");
    let identity = Identity::from_secret_bytes(rand::random());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(mesh_node::governance::join::join(
            &ticket,
            &identity,
            domain,
            now_ms,
            Duration::from_secs(20),
        ))
        .map(|welcome| welcome.admitted)
        .map_err(|e| e.to_string())
}

/// Runs `hostile-peer --attack own` against `target` (as a member with `ticket`, else as a
/// non-member) and returns the lines it printed.
fn hostile_own(target: &TestNode, ticket: Option<&str>) -> String {
    let mut cmd = Command::new(mesh_tests::meshnode_bin().with_file_name("hostile-peer"));
    cmd.args([
        "--attack",
        "own",
        "--bootstrap",
        &target.addr(),
        "--linger",
        "3",
    ]);
    if let Some(t) = ticket {
        cmd.args(["--ticket", t]);
    }
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run hostile-peer");
    assert!(
        out.status.success(),
        "hostile-peer failed: {}; it printed: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Opens a data-plane connection to `addr` as `identity` and sends bytes that are not a
/// request; says how the provider ended it (`closed: REASON`), or `answered with N bytes`
/// if it answered on the stream.
fn data_plane_attempt(identity: &Identity, provider: &PublicKey, addr: SocketAddr) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let endpoint = tls::endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
            let client =
                tls::client_config(identity, provider, tls::Transport::streams(1)).unwrap();
            let connection = match endpoint
                .connect_with(client, addr, tls::SERVER_NAME)
                .unwrap()
                .await
            {
                Ok(c) => c,
                Err(e) => return format!("handshake: {e}"),
            };
            let attempt = async {
                let (mut send, mut recv) = connection.open_bi().await?;
                send.write_all(b"not even a frame").await?;
                send.finish()?;
                let bytes = recv.read_to_end(64 * 1024).await?;
                anyhow::Ok(bytes.len())
            };
            match tokio::time::timeout(Duration::from_secs(20), attempt).await {
                Ok(Ok(n)) => format!("answered with {n} bytes"),
                Ok(Err(_)) | Err(_) => match connection.close_reason() {
                    Some(reason) => format!("closed: {reason}"),
                    None => "no answer".into(),
                },
            }
        })
}

#[test]
fn a_non_member_is_refused_at_every_door_and_tickets_are_single_use_and_expire() {
    let sales = TestNode::start("sales", &[]);
    publish_ok(&sales, "orders", ORDERS);
    let churn = TestNode::start_joining("churn", &sales);
    wait_for_product(&churn, "sales/orders");
    let before = refused(&sales);

    // The catalog: a well-formed descriptor of the non-member's own, gossiped and served by
    // sync as an honest node would, reaches no catalog; its connection is refused, counted.
    let actions = hostile_own(&sales, None);
    assert!(
        !actions.lines().any(|l| l == "own-served-by-sync"),
        "a member synced with a non-member: {actions}"
    );
    wait_refused_beyond(&sales, before, "hostile peer");
    // A node of another mesh, told of `sales` and publishing, does not even dial it (its
    // own gate admits only its own mesh's members); nothing it publishes crosses over.
    let mut outsider = TestNode::start("outsider", &[sales.addr()]);
    publish_ok(&outsider, "leak", ORDERS);
    // The same peer as a member (the control: the attack itself works) gets in.
    let ticket = invite(&sales, "mallory", "1h");
    let actions = hostile_own(&sales, Some(&ticket));
    assert!(
        actions
            .lines()
            .any(|l| l == "own-gossiped" || l == "own-already-gossiped"),
        "the member hostile peer did not gossip: {actions}"
    );
    wait_for_product(&churn, "mallory/own");
    // ...while the non-members' attempts left no trace anywhere.
    for node in [&sales, &churn] {
        let mut seen = products(node);
        seen.sort();
        assert_eq!(seen, ["mallory/own", "sales/orders"], "{}", node.domain);
    }
    assert_eq!(products(&outsider), ["outsider/leak"]);
    assert_eq!(outsider.status()["peers"], 0, "{}", outsider.status());
    // (Stopped, so that what `sales` counts from here on is the next attempts'.)
    outsider.stop();
    let after_gossip = refused(&sales);

    // The contract protocol: a flood of requests from a non-member is refused at the
    // connection; the provider stores no request.
    let status = sales.status();
    let out = Command::new(env!("CARGO_BIN_EXE_contract-flood"))
        .args([
            "--provider",
            &sales.addr(),
            "--provider-key",
            status["public_key"].as_str().unwrap(),
            "--product",
            "orders",
            "--count",
            "20",
        ])
        .output()
        .expect("run contract-flood");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "contract-flood report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["refused"], true, "{report}");
    let replies = report["replies"].as_object().expect("replies");
    assert!(
        replies.keys().all(|k| k.starts_with("failure")),
        "a non-member got contract answers: {report}"
    );
    let list = sales.cli(&["share", "list", "--json"]).json();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let after_contract = wait_refused_beyond(&sales, after_gossip, "contract flood");

    // The data plane: a handshake with a valid key that is no member's is closed before
    // any request is read; a member's key with the same garbage is answered (the control).
    let provider = PublicKey::from_hex(status["public_key"].as_str().unwrap()).unwrap();
    let data_addr: SocketAddr = status["data_addr"].as_str().unwrap().parse().unwrap();
    let stranger = Identity::from_secret_bytes(rand::random());
    let ended = data_plane_attempt(&stranger, &provider, data_addr);
    assert!(ended.contains("not a member"), "{ended}");
    wait_refused_beyond(&sales, after_contract, "data-plane connection");
    let member = mesh_node::keyfile::load(&DataDir::new(&churn.dir).identity()).unwrap();
    let answered = data_plane_attempt(&member, &provider, data_addr);
    assert!(!answered.contains("not a member"), "{answered}");

    // Tickets. An invitation lasts at most 30 days: a claimed one is kept until it expires.
    let too_long = sales.cli(&["mesh", "invite", "--domain", "forever", "--ttl", "31d"]);
    assert!(!too_long.success);
    assert!(
        too_long.stderr.contains("1 s to 30 days"),
        "{}",
        too_long.stderr
    );
    // One that expired is refused, by the newcomer and by the member.
    let root = tempfile::tempdir().unwrap();
    let expired = invite(&sales, "late", "1s");
    let expires_at = Ticket::decode(&expired).unwrap().expires_at_ms;
    std::thread::sleep(Duration::from_millis(
        expires_at.saturating_sub(now_ms()) + 50,
    ));
    let out = init_join(root.path(), "late", &expired, &[]);
    assert!(!out.success, "an expired ticket was accepted");
    assert!(out.stderr.contains("expired"), "{}", out.stderr);
    assert!(!root.path().join("late").join("identity.key").exists());
    let member_says = raw_join(&expired, "late", 0).expect_err("the member let it in");
    assert!(member_says.contains("expired"), "{member_says}");

    // A ticket works once.
    let once = invite(&sales, "twice", "1h");
    let out = init_join(root.path(), "twice-1", &once, &[]);
    assert!(out.success, "{}", out.stderr);
    let out = init_join(root.path(), "twice-2", &once, &[]);
    assert!(!out.success, "a ticket was used twice");
    assert!(out.stderr.contains("used"), "{}", out.stderr);

    // A ticket for another domain name is refused: by the CLI, and by the member when a
    // newcomer claims another name with it.
    let other = invite(&sales, "third", "1h");
    let out = init_join(root.path(), "impostor", &other, &["--domain", "impostor"]);
    assert!(!out.success, "a ticket for `third` founded `impostor`");
    assert!(
        out.stderr.contains("the ticket is for domain `third`"),
        "{}",
        out.stderr
    );
    let member_says = raw_join(&other, "impostor", now_ms()).expect_err("a wrong name got in");
    assert!(
        member_says.contains("third") && member_says.contains("impostor"),
        "{member_says}"
    );
    // After those refusals the ticket still works for its domain.
    assert_eq!(raw_join(&other, "third", now_ms()), Ok(true));
}

/// `governance show --json` rule ids on `node`.
fn rules(node: &TestNode) -> Vec<String> {
    node.cli(&["governance", "show", "--json"]).json()["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `node` enforces the rule `id`.
fn wait_for_rule(node: &TestNode, id: &str) {
    wait_until(CONVERGE, || rules(node).iter().any(|r| r == id)).unwrap_or_else(|| {
        panic!(
            "{} never enforced {id}: {:?}\n{}",
            node.domain,
            rules(node),
            node.log()
        )
    });
}

/// Waits until `node` knows of the motion `id` with `signatures` signatures.
fn wait_for_motion(node: &TestNode, id: &str, signatures: usize) {
    wait_until(CONVERGE, || {
        node.cli(&["governance", "status", "--json"])
            .json()
            .as_array()
            .expect("motions")
            .iter()
            .any(|m| m["id"] == id && m["signed_by"].as_array().map(Vec::len) == Some(signatures))
    })
    .unwrap_or_else(|| {
        panic!(
            "{} never saw motion {id} with {signatures} signature(s)\n{}",
            node.domain,
            node.log()
        )
    });
}

/// `share request PRODUCT --purpose analytics`, which must be agreed at once.
fn agree(node: &TestNode, product: &str) {
    let v = node
        .cli(&[
            "share",
            "request",
            product,
            "--purpose",
            "analytics",
            "--json",
        ])
        .json();
    assert_eq!(v["state"], "agreed", "{v}");
}

/// `fetch PRODUCT` into a fresh file.
fn fetch(node: &TestNode, product: &str) -> mesh_tests::CliOutput {
    let dir = tempfile::tempdir().unwrap();
    node.fetch(product, &dir.path().join("out.arrow"), &[])
}

/// `governance propose --restrict-tag pii` on `node`: the motion as JSON.
fn propose_pii_restriction(node: &TestNode) -> serde_json::Value {
    node.cli(&[
        "governance",
        "propose",
        "--restrict-tag",
        "pii",
        "--summary",
        "personal data stays restricted",
        "--json",
    ])
    .json()
}

#[test]
fn amendments_need_the_quorum_and_a_removed_member_is_cut_off() {
    // Three governing domains, any two of which carry a motion. `customer` and `eshop`
    // make their keys first; `sales` founds the mesh from the charter naming them.
    let mut customer = TestNode::init("customer", &[]);
    let mut eshop = TestNode::init("eshop", &[]);
    let mut sales = TestNode::init("sales", &[]);
    let charter = write_file(
        sales.dir.parent().unwrap(),
        "charter.toml",
        &format!(
            "name = \"e-commerce\"\nquorum = 2\n\n[[governors]]\ndomain = \"sales\"\n\n\
             [[governors]]\ndomain = \"customer\"\nkey = \"{}\"\n\n\
             [[governors]]\ndomain = \"eshop\"\nkey = \"{}\"\n",
            key_of(&customer),
            key_of(&eshop)
        ),
    );
    let created = sales.cli(&["mesh", "create", "--charter", charter.to_str().unwrap()]);
    assert!(created.success, "mesh create: {}", created.stderr);
    sales.run();
    for node in [&mut customer, &mut eshop] {
        let ticket = sales.invite(&node.domain);
        let joined = node.cli(&["mesh", "join", &ticket]);
        assert!(joined.success, "mesh join: {}", joined.stderr);
        node.run();
    }
    let churn = TestNode::start_joining("churn", &sales);
    for node in [&sales, &customer, &eshop, &churn] {
        wait_until(CONVERGE, || node.status()["members"] == 4).unwrap_or_else(|| {
            panic!("{} never counted 4 members: {}", node.domain, node.status())
        });
    }
    let mesh_id = sales.status()["mesh_id"].clone();
    for node in [&customer, &eshop, &churn] {
        assert_eq!(node.status()["mesh_id"], mesh_id, "{}", node.domain);
    }

    // Products and agreements both ways between `sales` and `churn`; before any rule, a
    // `pii` column need not be restricted.
    publish_ok(&sales, "orders", ORDERS);
    publish_ok(&churn, "scores", ORDERS);
    let out = publish(
        &churn,
        "people",
        PEOPLE,
        &["--classify", "email=pii", "--approval", "auto"],
    );
    assert!(out.success, "{}", out.stderr);
    for node in [&sales, &customer, &eshop] {
        wait_for_product(node, "churn/scores");
        wait_for_product(node, "churn/people");
    }
    wait_for_product(&churn, "sales/orders");
    agree(&churn, "sales/orders");
    agree(&sales, "churn/scores");
    let out = fetch(&churn, "sales/orders");
    assert!(out.success, "{}", out.stderr);
    let out = fetch(&sales, "churn/scores");
    assert!(out.success, "{}", out.stderr);

    // `eshop` is down during the vote.
    eshop.stop();
    let motion = propose_pii_restriction(&sales);
    assert_eq!(motion["carried"], false, "{motion}");
    assert_eq!(motion["needed"], 2, "{motion}");
    let id = motion["id"].as_str().unwrap().to_owned();
    // One signature of two: the motion reaches the others and changes nothing.
    for node in [&customer, &churn] {
        wait_for_motion(node, &id, 1);
    }
    let version = sales.status()["policy_version"].clone();
    for node in [&sales, &customer, &churn] {
        assert!(rules(node).is_empty(), "{}: {:?}", node.domain, rules(node));
        assert_eq!(node.status()["policy_version"], version, "{}", node.domain);
    }
    let out = publish(&customer, "contacts", PEOPLE, &["--classify", "email=pii"]);
    assert!(out.success, "refused before the quorum: {}", out.stderr);
    // A member that does not govern cannot make up the quorum.
    let out = churn.cli(&["governance", "sign", &id[..16]]);
    assert!(
        !out.success,
        "a non-governing member signed: {}",
        out.stdout
    );
    println!("non-governor's signature: {}", out.stderr.trim());
    assert!(rules(&churn).is_empty() && rules(&sales).is_empty());

    // The second governing domain signs: carried, enforced on every running node.
    let signed = customer
        .cli(&["governance", "sign", &id[..16], "--json"])
        .json();
    assert_eq!(signed["carried"], true, "{signed}");
    let carried_at = std::time::Instant::now();
    for node in [&sales, &customer, &churn] {
        wait_for_rule(node, "restricted-tag:pii");
    }
    println!(
        "amendment in force on 3 running nodes {:?} after the deciding signature",
        carried_at.elapsed()
    );
    let refused_pii = |node: &TestNode| {
        let out = publish(node, "leads", PEOPLE, &["--classify", "email=pii"]);
        assert!(
            !out.success,
            "{} published an unrestricted pii column",
            node.domain
        );
        assert!(
            out.stderr.contains("restricted-tag:pii") && out.stderr.contains("--restricted email"),
            "{}: the refusal does not name the rule and the fix: {}",
            node.domain,
            out.stderr
        );
    };
    for node in [&sales, &customer, &churn] {
        assert_ne!(node.status()["policy_version"], version, "{}", node.domain);
        refused_pii(node);
    }
    // Products published before the amendment are re-evaluated: their owners see them.
    wait_until(CONVERGE, || {
        churn.status()["non_compliant_products"]
            .as_array()
            .is_some_and(|p| {
                p.iter()
                    .any(|n| n.as_str().is_some_and(|n| n.contains("people")))
            })
    })
    .unwrap_or_else(|| panic!("churn/people not flagged: {}", churn.status()));

    // `eshop` comes back, syncs, and enforces the amendment it did not see voted.
    eshop.run();
    let restarted_at = std::time::Instant::now();
    wait_for_rule(&eshop, "restricted-tag:pii");
    println!(
        "amendment in force on the restarted node {:?} after its API answered",
        restarted_at.elapsed()
    );
    refused_pii(&eshop);
    // The fix the refusal names works.
    let out = publish(
        &eshop,
        "leads",
        PEOPLE,
        &["--classify", "email=pii", "--restricted", "email"],
    );
    assert!(out.success, "the named fix was refused: {}", out.stderr);

    // Removing `churn`: proposed by `sales`, carried by `customer`'s signature.
    let removal = sales
        .cli(&[
            "mesh",
            "remove",
            "churn",
            "--reason",
            "left the company",
            "--json",
        ])
        .json();
    assert_eq!(removal["carried"], false, "{removal}");
    let removal_id = removal["id"].as_str().unwrap().to_owned();
    wait_for_motion(&customer, &removal_id, 1);
    let signed = customer
        .cli(&["governance", "sign", &removal_id[..16], "--json"])
        .json();
    assert_eq!(signed["carried"], true, "{signed}");
    let carried_at = std::time::Instant::now();
    for node in [&sales, &customer, &eshop] {
        wait_until(CONVERGE, || node.status()["members"] == 3)
            .unwrap_or_else(|| panic!("{} still counts churn: {}", node.domain, node.status()));
        // Its products leave every catalog.
        wait_until(CONVERGE, || {
            !products(node).iter().any(|p| p.starts_with("churn/"))
        })
        .unwrap_or_else(|| {
            panic!(
                "{} still lists churn's products: {:?}",
                node.domain,
                products(node)
            )
        });
    }
    println!(
        "removal in force on 3 nodes, products forgotten, {:?} after the deciding signature",
        carried_at.elapsed()
    );
    // Its agreements end on the next fetch, on both sides: `sales` as consumer no longer
    // fetches from the removed provider, whose products it forgot; as provider it refuses
    // the removed consumer's connection, and the consumer is told why, not to retry.
    let out = fetch(&sales, "churn/scores");
    assert!(!out.success, "sales still fetched from a removed provider");
    assert!(
        out.stderr.contains("not in this node's catalog"),
        "{}",
        out.stderr
    );
    let before = refused(&sales);
    let out = fetch(&churn, "sales/orders");
    assert!(!out.success, "a removed consumer still fetched");
    assert!(
        out.stderr
            .contains("provider sales refused the connection: this node is not a member"),
        "{}",
        out.stderr
    );
    wait_refused_beyond(&sales, before, "removed consumer's fetch");
}

#[test]
fn a_governance_change_survives_a_crash_once_acknowledged() {
    // Alone in its mesh, `sales` carries its own motions. Killed right after the answer, long
    // before sled's periodic flush, it must still hold what it said it did.
    let mut sales = TestNode::init("sales", &[]);
    sales.run();
    let motion = propose_pii_restriction(&sales);
    assert_eq!(motion["carried"], true, "{motion}");
    let version = sales.status()["policy_version"].clone();
    sales.kill9();
    sales.run();
    assert!(
        rules(&sales).iter().any(|r| r == "restricted-tag:pii"),
        "the carried amendment was lost: {:?}\n{}",
        rules(&sales),
        sales.log()
    );
    assert_eq!(sales.status()["policy_version"], version);
}
