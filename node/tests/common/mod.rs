//! Helpers shared by the node crate's in-process integration tests.

use mesh_node::node::{NodeOptions, spawn};
use mesh_node::store::Store;
use mesh_node::{DataDir, NodeConfig, NodeHandle};
use mesh_protocol::Identity;

/// Starts a node with key `secret` in `dir` on a free loopback port, bootstrapping from
/// `bootstrap`; `fill` writes to its store before the actor starts.
pub(crate) fn start(
    dir: &std::path::Path,
    domain: &str,
    secret: [u8; 32],
    bootstrap: Vec<String>,
    fill: impl FnOnce(&Store),
) -> (NodeHandle, tokio::task::JoinHandle<()>) {
    let data_dir = DataDir::new(dir);
    let store = Store::open(&data_dir.db())
        .expect("open the store")
        .with_audit_signer(Identity::from_secret_bytes(secret));
    fill(&store);
    let mut config = NodeConfig::new(domain);
    config.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()];
    config.bootstrap = bootstrap;
    spawn(
        Identity::from_secret_bytes(secret),
        config,
        data_dir,
        store,
        NodeOptions::default(),
    )
    .expect("spawn the node")
}
