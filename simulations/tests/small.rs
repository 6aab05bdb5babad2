//! A small scenario in the test suite: ten nodes in two clouds founded by a charter with
//! three governors (2 of 3), a partition that heals, an amendment carried during the
//! partition, a removal and an admission, a forgery from a non-member, contracts (auto,
//! manual with a scripted accept, and one the policy rejects) and fetches across the clouds.
//! Asserts convergence, the heal, that every membership change and the amendment reached
//! every member, that the non-member was refused and no node took the forgery, co-signed
//! agreements on both sides, and fetched rows equal to the rows the filter lets through.

use mesh_simulations::runner::{self, RunOptions};
use mesh_simulations::topology::Topology;

const SMALL: &str = r#"
name = "small"
seed = 7
intra = { latency_ms = 1.0 }
inter = { latency_ms = 20.0, jitter_ms = 2.0 }

[settings]
bootstrap_degree = 2
sync_interval_secs = 1
redial_max_ms = 1000
warmup_ms = 2000
settle_ms = 20000

[charter]
governors = ["aws-eu-0", "gcp-asia-0", "aws-eu-4"]
quorum = 2
members = "all"

[[clouds]]
name = "aws-eu"
count = 5

[[clouds]]
name = "gcp-asia"
count = 5

[[events]]
at_ms = 0
kind = "publish"
domain = "aws-eu-0"
product = "before"

[[events]]
at_ms = 200
kind = "publish"
domain = "aws-eu-1"
product = "orders"
rows = 3000
restricted = ["email"]

[[events]]
at_ms = 300
kind = "publish"
domain = "gcp-asia-2"
product = "segments"
rows = 500
approval = "manual"

[[events]]
at_ms = 500
kind = "partition"
a = "aws-eu"
b = "gcp-asia"

[[events]]
at_ms = 1000
kind = "publish"
domain = "aws-eu-2"
product = "eu-during"

[[events]]
at_ms = 1200
kind = "publish"
domain = "gcp-asia-3"
product = "asia-during"

[[events]]
at_ms = 1500
kind = "amend"
by = "aws-eu-0"
signers = ["aws-eu-4"]
restrict_tags = ["pii"]
summary = "pii columns are restricted"

[[events]]
at_ms = 6000
kind = "heal"

[[events]]
at_ms = 7000
kind = "inject_forgery"
victim = "aws-eu-0"
product = "before"
via = "gcp-asia-1"

[[events]]
at_ms = 7500
kind = "publish"
domain = "gcp-asia-4"
product = "after"

[[events]]
at_ms = 8000
kind = "contract_request"
consumer = "gcp-asia-0"
product = "aws-eu-1/orders"
purpose = "recommendations"
columns = ["order_id", "region", "amount_eur", "day"]
filter = "region = 'EU' AND amount_eur > 100.5"

[[events]]
at_ms = 8000
kind = "contract_request"
consumer = "aws-eu-3"
product = "gcp-asia-2/segments"
filter = "express = true AND day >= '2026-02-01'"
decision = "accept"
decide_after_ms = 300

[[events]]
at_ms = 8100
kind = "contract_request"
consumer = "gcp-asia-4"
product = "aws-eu-1/orders"
columns = ["order_id", "email"]

[[events]]
at_ms = 8200
kind = "fetch"
consumer = "gcp-asia-0"
product = "aws-eu-1/orders"

[[events]]
at_ms = 8200
kind = "fetch"
consumer = "aws-eu-3"
product = "gcp-asia-2/segments"

[[events]]
at_ms = 9000
kind = "remove"
domain = "gcp-asia-3"
by = ["gcp-asia-0", "aws-eu-0"]
reason = "left the company"

[[events]]
at_ms = 9500
kind = "join"
domain = "late"
cloud = "aws-eu"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_partition_heal_forgery_contracts_and_fetches() {
    let topology = Topology::parse(SMALL).expect("valid topology");
    let report = runner::run(&topology, &RunOptions::default())
        .await
        .expect("the run completes");
    let summary = report.summary();
    println!("{summary}");
    // Eleven started, one removed (still running, refused by every member).
    assert_eq!((report.nodes, report.nodes_started), (10, 11), "{summary}");
    assert!(
        report.converged,
        "every member ends with the same catalog:\n{summary}"
    );
    // The removed domain's product left every catalog.
    assert_eq!(report.catalog_size, 5, "{summary}");

    // The amendment (carried on one side of the partition), the removal and the admission
    // reached every member; the amendment crossed the partition only after the heal.
    let what: Vec<&str> = report.governance.iter().map(|g| g.what.as_str()).collect();
    assert_eq!(report.governance.len(), 3, "{summary}");
    for g in &report.governance {
        assert!(g.carried && g.error.is_none(), "{what:?}\n{summary}");
        assert_eq!(g.reached, g.expected, "{summary}");
        assert!(g.all_ms.is_some(), "{summary}");
    }
    let amend = &report.governance[0];
    assert!(
        amend.what.starts_with("amend") && amend.during_partition,
        "{summary}"
    );
    assert!(
        amend.all_ms.expect("reached all") >= 3000.0,
        "the amendment crossed the partition early:\n{summary}"
    );
    // Every member but the one that joined later and the removed one.
    assert_eq!(amend.expected, 9, "{summary}");

    // The products published on each side during the partition did not cross it before the
    // heal, and did after.
    for p in report.publishes.iter().filter(|p| p.during_partition) {
        assert_eq!(p.reached, p.expected, "{summary}");
        let c = p.convergence_ms.expect("samples");
        assert!(c.max >= 4000.0, "crossed the partition early:\n{summary}");
    }
    assert_eq!(report.heal_convergence_ms.len(), 1);
    let heal = report.heal_convergence_ms[0].expect("converged after the heal");
    assert!(heal < 15_000.0, "heal took {heal} ms:\n{summary}");

    // The attacker is no member: its connection was refused before any gossip, so the
    // forgery was never sent, and no node holds it.
    assert_eq!(report.forgeries.len(), 1);
    assert!(!report.forgeries[0].sent, "{summary}");
    assert!(report.forgeries[0].refused_by_via >= 1, "{summary}");
    assert_eq!(report.forgeries[0].accepted_by, 0, "{summary}");
    assert!(report.refused_non_members >= 1, "{summary}");
    assert!(report.emulator.dropped_partition > 0, "{summary}");

    // Contracts: one auto-approved, one manual accepted by the provider's operator, one the
    // policy rejects (it asks for a restricted column).
    let contracts = &report.contracts;
    assert_eq!(
        (contracts.requested, contracts.agreed, contracts.rejected),
        (3, 2, 1),
        "{summary}"
    );
    let answers: Vec<(&str, &str)> = contracts
        .requests
        .iter()
        .map(|r| (r.answer.as_deref().unwrap_or("none"), r.state.as_str()))
        .collect();
    assert_eq!(
        answers,
        [
            ("agreed", "agreed"),
            ("pending", "agreed"),
            ("rejected", "rejected")
        ],
        "{summary}"
    );
    for r in contracts.requests.iter().filter(|r| r.state == "agreed") {
        assert!(r.signatures_verified, "{summary}");
        assert!(
            r.negotiation_ms.is_some() && r.agreed_ms.is_some(),
            "{summary}"
        );
    }
    let negotiation = contracts.negotiation_ms.expect("answered requests");
    assert_eq!(negotiation.samples, 3, "{summary}");
    assert!(negotiation.max < 10_000.0, "{summary}");

    // Fetches across the clouds, through the emulated links: exactly the filtered rows and
    // the granted columns.
    let transfers = &report.transfers;
    assert_eq!((transfers.completed, transfers.failed), (2, 0), "{summary}");
    for (t, total) in transfers.fetches.iter().zip([3000, 500]) {
        assert!(t.verified, "{summary}");
        let expected = t.expected_rows.expect("known data");
        assert_eq!(t.rows, expected, "{summary}");
        assert!(
            expected > 0 && expected < total,
            "the filter selects: {summary}"
        );
        assert_ne!(t.from_cloud, t.to_cloud, "{summary}");
        assert!(t.bytes > 0 && t.mib_s > 0.0, "{summary}");
    }
    assert_eq!(
        transfers.fetches[0].columns,
        ["order_id", "region", "amount_eur", "day"],
        "{summary}"
    );
    assert_eq!(
        transfers.fetches[1].columns.len(),
        mesh_simulations::dataset::schema().fields().len(),
        "{summary}"
    );
    assert_eq!(transfers.links.len(), 2, "{summary}");
    assert!(
        transfers.wire_bytes > transfers.fetches[0].bytes,
        "{summary}"
    );
}
