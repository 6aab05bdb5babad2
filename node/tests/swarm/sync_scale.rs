//! Anti-entropy at scale, in process: a node joins a peer whose catalog holds 17,100
//! products and gets them by range reconciliation in sync requests of a bounded size; the
//! first answer is cut short and the next session follows after a delay. The same run shows
//! the per-key budget: of one key's 1,100 products the joiner keeps 1,024 and counts the
//! rest as `over_budget`.

use std::time::Duration;

use mesh_protocol::catalog::MAX_PRODUCTS_PER_OWNER;
use mesh_protocol::descriptor::{ColumnSchema, ContentDigest, Policy, Sla, Status};
use mesh_protocol::{Identity, ProductDescriptor, Signed};
use tokio::time::Instant;

use crate::common::{charter, start};

/// Keys with 1,000 products each, and one key with more than its budget.
const OWNERS: u8 = 16;
const PER_OWNER: u64 = 1_000;
const GREEDY: u64 = 1_100;

fn descriptor(owner: &Identity, n: u64) -> ProductDescriptor {
    ProductDescriptor {
        owner: owner.public_key(),
        domain: "bulk".into(),
        name: format!("p-{n}"),
        version: 1,
        title: format!("product {n}"),
        description: String::new(),
        tags: Vec::new(),
        schema: vec![ColumnSchema {
            name: "id".into(),
            data_type: "Int64".into(),
            nullable: false,
        }],
        rows: 1,
        bytes: 1,
        digest: ContentDigest([0; 32]),
        published_at_ms: 1,
        sla: Sla::default(),
        policy: Policy::default(),
        lineage: Vec::new(),
        data_addr: None,
        status: Status::Active,
        stewardship: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_reconciles_a_large_catalog_in_bounded_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let greedy = Identity::from_secret_bytes([200; 32]);
    // The owners of the bulk products are members: a node keeps only members' descriptors.
    let owners: Vec<(&str, mesh_protocol::PublicKey)> = (0..OWNERS)
        .map(|o| Identity::from_secret_bytes([100 + o; 32]).public_key())
        .chain([greedy.public_key()])
        .map(|key| ("bulk", key))
        .collect();
    let mesh = charter(&[("sales", [1; 32]), ("churn", [2; 32])], &owners);
    let (a, a_task) = start(
        &dir.path().join("a"),
        "sales",
        [1; 32],
        &mesh,
        vec![],
        |store| {
            let put = |owner: &Identity, n| {
                let d = descriptor(owner, n);
                store.put_descriptor(&d, &Signed::sign(owner, &d)).unwrap();
            };
            for o in 0..OWNERS {
                let owner = Identity::from_secret_bytes([100 + o; 32]);
                (0..PER_OWNER).for_each(|n| put(&owner, n));
            }
            (0..GREEDY).for_each(|n| put(&greedy, n));
        },
    );
    let total = OWNERS as u64 * PER_OWNER + GREEDY;
    let expected = OWNERS as u64 * PER_OWNER + MAX_PRODUCTS_PER_OWNER as u64;
    assert_eq!(a.status().await.unwrap().catalog_size as u64, total);
    let a_addr = loop {
        if let Some(addr) = a.status().await.unwrap().listen_addrs.into_iter().next() {
            break addr;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let started = Instant::now();
    let (b, b_task) = start(
        &dir.path().join("b"),
        "churn",
        [2; 32],
        &mesh,
        vec![a_addr],
        |_| {},
    );
    let deadline = started + Duration::from_secs(120);
    loop {
        let status = b.status().await.unwrap();
        if status.catalog_size as u64 >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b holds {} of {expected} entries",
            status.catalog_size
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = b.status().await.unwrap();
    assert_eq!(status.catalog_size as u64, expected);
    // The greedy key's surplus is refused (and, since b never stores it, refused again by
    // each later session with a: a bounded cost, counted every time).
    let over_budget = status.rejected.get("over_budget").copied().unwrap_or(0);
    assert!(
        over_budget >= GREEDY - MAX_PRODUCTS_PER_OWNER as u64,
        "{:?}",
        status.rejected
    );
    let metrics = b.metrics().await.unwrap();
    let rounds = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meshnode_sync_rounds_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap();
    println!(
        "joined a {total}-entry catalog in {:.1} s and {rounds} sync round trips \
         ({over_budget} over-budget refusals)",
        started.elapsed().as_secs_f64()
    );
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    let _ = a_task.await;
    let _ = b_task.await;
}
