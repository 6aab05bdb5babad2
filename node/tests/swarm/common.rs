//! Helpers shared by the node crate's in-process integration tests.

use std::time::Duration;

use mesh_node::node::{NodeOptions, spawn};
use mesh_node::store::Store;
use mesh_node::{DataDir, NodeConfig, NodeHandle};
use mesh_protocol::governance::{AdmissionRule, Charter, Member, Policies};
use mesh_protocol::{Identity, PublicKey, Signed};

/// The charter of a test mesh: the first of `governors` (domain, secret) signs and the
/// governors carry motions alone (quorum 1); `members` (domain, key) belong from the start.
/// Every node of one test starts from the same charter, so they share one mesh.
pub(crate) fn charter(
    governors: &[(&str, [u8; 32])],
    members: &[(&str, PublicKey)],
) -> Signed<Charter> {
    let member = |domain: &str, key: PublicKey| Member {
        key,
        domain: domain.to_owned(),
    };
    let charter = Charter {
        name: "test-mesh".into(),
        founded_at_ms: 1,
        governors: governors
            .iter()
            .map(|(d, s)| member(d, Identity::from_secret_bytes(*s).public_key()))
            .collect(),
        quorum: 1,
        admission: AdmissionRule::AnyMember,
        members: members.iter().map(|(d, k)| member(d, *k)).collect(),
        policies: Policies::default(),
        nonce: [7; 16],
    };
    Signed::sign(&Identity::from_secret_bytes(governors[0].1), &charter)
}

/// Starts a node of the mesh `charter` founds, with key `secret`, in `dir` on a free
/// loopback port, bootstrapping from `bootstrap`; `fill` writes to its store before the
/// actor starts.
pub(crate) fn start(
    dir: &std::path::Path,
    domain: &str,
    secret: [u8; 32],
    charter: &Signed<Charter>,
    bootstrap: Vec<String>,
    fill: impl FnOnce(&Store),
) -> (NodeHandle, tokio::task::JoinHandle<()>) {
    let data_dir = DataDir::new(dir);
    let store = Store::open(&data_dir.db())
        .expect("open the store")
        .with_audit_signer(Identity::from_secret_bytes(secret));
    mesh_node::governance::install(&store, charter, &[]).expect("install the mesh charter");
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

/// Longest wait for any one step.
pub(crate) const STEP: Duration = Duration::from_secs(20);

/// Polls `check` until it yields a value or `STEP` passes.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The libp2p peer id of the node key `secret`.
pub(crate) fn peer_id_of(secret: [u8; 32]) -> libp2p::PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes(secret)
        .unwrap()
        .public()
        .to_peer_id()
}

/// Starts `sales` (the one governor, secret `[1; 32]`) in a mesh where the key of
/// `member_secret` is the member `mallory`, which a test then drives as a bare libp2p peer
/// ([`bare_peer`]).
pub(crate) fn start_sales_with_mallory(
    dir: &std::path::Path,
    member_secret: [u8; 32],
    bootstrap: Vec<String>,
) -> (NodeHandle, tokio::task::JoinHandle<()>) {
    let mesh = charter(
        &[("sales", [1; 32])],
        &[(
            "mallory",
            Identity::from_secret_bytes(member_secret).public_key(),
        )],
    );
    start(dir, "sales", [1; 32], &mesh, bootstrap, |_| {})
}

/// A bare libp2p peer over QUIC with the key of `secret` and the behaviour `behaviour`
/// makes: no node logic, and connections held open for the length of any test.
pub(crate) fn bare_peer<B: libp2p::swarm::NetworkBehaviour>(
    secret: [u8; 32],
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(secret).unwrap();
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build()
}
