//! A small scenario in the test suite: ten nodes in two clouds, a partition that heals, and
//! a forged descriptor. Asserts convergence, the heal and that no node took the forgery.

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
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_partition_heal_and_forgery() {
    let topology = Topology::parse(SMALL).expect("valid topology");
    let report = runner::run(&topology, &RunOptions::default())
        .await
        .expect("the run completes");
    let summary = report.summary();
    assert_eq!(report.nodes, 10, "{summary}");
    assert!(
        report.converged,
        "every node ends with the same catalog:\n{summary}"
    );
    assert_eq!(report.catalog_size, 4, "{summary}");

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

    // The forgery was sent, rejected and stored nowhere.
    assert_eq!(report.forgeries.len(), 1);
    assert!(report.forgeries[0].sent, "{summary}");
    assert_eq!(report.forgeries[0].accepted_by, 0, "{summary}");
    assert!(report.rejected["not_owner"] >= 1, "{summary}");
    assert!(report.emulator.dropped_partition > 0, "{summary}");
}
