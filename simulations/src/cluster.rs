//! Starting, observing and stopping real meshnode nodes inside this process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use libp2p::{Multiaddr, PeerId};
use mesh_node::dataplane::{DataPlane, DataPlaneConfig};
use mesh_node::node::{NodeOptions, spawn};
use mesh_node::store::{Store, StoreOptions};
use mesh_node::{DataDir, NetTuning, NodeConfig, NodeEvent, NodeHandle};
use mesh_protocol::governance::{AdmissionRule, Charter, Member, Motion, Policies};
use mesh_protocol::{Identity, PublicKey, Signed};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Capacity of the channel carrying observations to the collector.
pub const OBSERVATION_CAPACITY: usize = 1 << 16;

/// A node event with the node and the time it was seen.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Node index.
    pub node: usize,
    /// When it happened: the node's own stamp for catalog updates, arrival otherwise.
    pub at: Instant,
    /// The event.
    pub event: NodeEvent,
}

/// The secret key of a simulated domain: derived from the seed and the name, so a domain
/// keeps its identity across runs with the same seed and across restarts.
pub fn identity_secret(seed: u64, domain: &str) -> [u8; 32] {
    let mut material = seed.to_be_bytes().to_vec();
    material.extend_from_slice(domain.as_bytes());
    blake3::derive_key("meshnode simulations 2026 node identity", &material)
}

/// libp2p peer id of an identity.
pub fn peer_id(identity: &Identity) -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes(identity.secret_bytes())
        .expect("32-byte secret")
        .public()
        .to_peer_id()
}

/// Where to put node data directories: tmpfs when there is one (fsyncs are then cheap,
/// which keeps hundreds of sled databases from measuring the disk instead of the mesh).
pub fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// Raises the soft open-files limit to the hard limit (each node holds sockets and sled
/// files). Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot raise the open-files limit: {e}");
            0
        }
    }
}

/// A free UDP port on 127.0.0.1 (bound and released; racy only against other processes).
pub fn free_udp_port() -> std::io::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// QUIC multiaddr of a loopback port.
pub fn quic_addr(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .expect("valid multiaddr")
}

/// What is needed to (re)start one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Index used in observations.
    pub index: usize,
    /// Domain name.
    pub domain: String,
    /// Identity secret.
    pub secret: [u8; 32],
    /// Data directory (created if missing).
    pub data_dir: PathBuf,
    /// Listen multiaddr (the real socket).
    pub listen: Multiaddr,
    /// Bootstrap multiaddrs (with `/p2p`).
    pub bootstrap: Vec<String>,
    /// Anti-entropy interval.
    pub sync_interval_secs: u64,
    /// Control-plane tuning.
    pub tuning: NetTuning,
    /// Runs a data plane (on a free port of 127.0.0.1) and announces this address for it,
    /// as `meshnode run` does with its bound address. `None`: no data plane.
    pub data_announce: Option<SocketAddr>,
    /// Serves the Kademlia DHT (`NodeConfig::dht_server`).
    pub dht_server: bool,
    /// The mesh's charter, installed in the node's store before it starts (every node of a
    /// simulated mesh holds the same one). `None`: the node founds a mesh alone.
    pub charter: Option<Arc<Signed<Charter>>>,
    /// Votes installed with the charter: for a domain that joins, what its admitting member
    /// answered (its admission among them), so that it starts as a member.
    pub votes: Vec<Signed<Motion>>,
    /// How the node's store is opened (`StoreOptions::default()`: as a deployed node's).
    pub store: StoreOptions,
}

/// A charter for a simulated mesh: `governors` (the first signs) carry motions by
/// `quorum`; `members` belong from the start.
pub fn charter(
    name: &str,
    governors: &[(String, Identity)],
    members: &[(String, PublicKey)],
    quorum: u16,
) -> Signed<Charter> {
    let member = |domain: &str, key: PublicKey| Member {
        key,
        domain: domain.to_owned(),
    };
    let governor_keys: Vec<PublicKey> = governors.iter().map(|(_, i)| i.public_key()).collect();
    let charter = Charter {
        name: name.to_owned(),
        founded_at_ms: 0,
        governors: governors
            .iter()
            .map(|(d, i)| member(d, i.public_key()))
            .collect(),
        quorum,
        admission: AdmissionRule::AnyMember,
        members: members
            .iter()
            .filter(|(_, k)| !governor_keys.contains(k))
            .map(|(d, k)| member(d, *k))
            .collect(),
        policies: Policies::default(),
        nonce: [0; 16],
    };
    Signed::sign(&governors[0].1, &charter)
}

/// A node running in this process.
#[derive(Debug)]
pub struct RunningNode {
    /// Handle to its actor.
    pub handle: NodeHandle,
    /// Its store, shared with the actor and the data plane (read-only here).
    pub store: Store,
    /// Its data plane, if it runs one.
    pub data_plane: Option<DataPlane>,
    /// The actor task.
    task: JoinHandle<()>,
    /// The data plane's accept task.
    data_task: Option<JoinHandle<()>>,
    /// Forwards its events to the collector.
    forwarder: JoinHandle<()>,
}

impl NodeSpec {
    /// The identity.
    pub fn identity(&self) -> Identity {
        Identity::from_secret_bytes(self.secret)
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.identity().public_key()
    }

    /// Starts the node; its events go to `observations`.
    pub async fn start(
        &self,
        observations: mpsc::Sender<Observation>,
    ) -> anyhow::Result<RunningNode> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        let data_dir = DataDir::new(&self.data_dir);
        // A killed node's database may take a moment to release its lock.
        let mut attempt = 0;
        let store = loop {
            match Store::open_with(&data_dir.db(), &self.store) {
                Ok(s) => break s.with_audit_signer(self.identity()),
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!("opening the store of {} failed, retrying: {e}", self.domain);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context("opening the node store"),
            }
        };
        let mut config = NodeConfig::new(&self.domain);
        config.listen = vec![self.listen.to_string()];
        config.bootstrap = self.bootstrap.clone();
        config.sync_interval_secs = self.sync_interval_secs;
        config.dht_server = self.dht_server;
        config.data_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let members = mesh_node::governance::MemberSet::default();
        let (data_plane, data_task) = match self.data_announce {
            Some(_) => {
                let mut data_config = DataPlaneConfig::from_node(&config);
                data_config.members = members.clone();
                let (plane, task) = DataPlane::start(
                    data_config,
                    self.identity(),
                    store.clone(),
                    data_dir.clone(),
                )
                .with_context(|| format!("starting the data plane of {}", self.domain))?;
                (Some(plane), Some(task))
            }
            None => (None, None),
        };
        if let Some(charter) = &self.charter {
            mesh_node::governance::install(&store, charter, &self.votes)
                .with_context(|| format!("installing the mesh charter of {}", self.domain))?;
        }
        let options = NodeOptions {
            tuning: self.tuning.clone(),
            data_addr: self.data_announce,
            api_addr: None,
            flight_addr: None,
            members,
        };
        let (handle, task) = spawn(self.identity(), config, data_dir, store.clone(), options)
            .with_context(|| format!("starting node {}", self.domain))?;
        let events = handle.events();
        let forwarder = tokio::spawn(forward(self.index, events, observations));
        Ok(RunningNode {
            handle,
            store,
            data_plane,
            task,
            data_task,
            forwarder,
        })
    }
}

async fn forward(
    node: usize,
    mut events: broadcast::Receiver<NodeEvent>,
    out: mpsc::Sender<Observation>,
) {
    loop {
        match events.recv().await {
            Ok(event) => {
                let at = match &event {
                    NodeEvent::CatalogUpdated { at, .. } | NodeEvent::MeshChanged { at, .. } => {
                        Instant::from_std(*at)
                    }
                    _ => Instant::now(),
                };
                if out.send(Observation { node, at, event }).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(node, "missed {n} node events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl RunningNode {
    /// Stops the node gracefully (store flushed).
    pub async fn stop(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.handle.shutdown()).await;
        self.kill().await;
    }

    /// The real (bound) address of its data plane.
    pub fn data_addr(&self) -> Option<SocketAddr> {
        self.data_plane.as_ref().map(DataPlane::local_addr)
    }

    /// Stops the node abruptly, like `kill -9`: the actor task is aborted and the data
    /// plane's endpoint closed.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Some(task) = self.data_task {
            task.abort();
            let _ = task.await;
        }
        if let Some(plane) = self.data_plane {
            plane.close();
        }
        drop(self.handle);
        self.forwarder.abort();
        let _ = self.forwarder.await;
    }
}

/// Writes a small CSV of `rows` rows (an order-like table) for a publish.
pub fn write_csv(path: &Path, rows: usize, salt: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "order_id,customer_id,sku,quantity,amount_eur,placed_at"
    )?;
    for i in 0..rows as u64 {
        let x = i.wrapping_mul(0x9e37_79b9).wrapping_add(salt);
        writeln!(
            out,
            "{},{},sku-{},{},{}.{:02},2026-01-{:02}T10:00:00Z",
            i + 1,
            1000 + x % 5000,
            x % 997,
            1 + x % 7,
            5 + x % 400,
            x % 100,
            1 + i % 28
        )?;
    }
    out.flush()
}

/// What the collector learnt from node events.
#[derive(Debug, Default)]
pub struct Tracker {
    /// `(node, product storage key)` -> versions in arrival order with their times.
    held: std::collections::HashMap<(usize, String), Vec<(u64, Instant)>>,
    /// Rejections by reason, over all nodes (killed ones included).
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Catalog updates seen.
    pub updates: u64,
    /// Catalog updates by how they arrived (`local`, `gossip`, `sync`).
    pub updates_via: std::collections::BTreeMap<&'static str, u64>,
    /// Membership and policy changes, as each node applied them.
    pub mesh_changes: Vec<MeshChange>,
}

/// One node's `MeshChanged` event.
#[derive(Clone, Debug)]
pub struct MeshChange {
    /// Node index.
    pub node: usize,
    /// When the node applied it.
    pub at: Instant,
    /// Keys admitted.
    pub admitted: Vec<PublicKey>,
    /// Keys removed.
    pub removed: Vec<PublicKey>,
    /// Policy version now in force, if it changed.
    pub policies: Option<u32>,
}

/// A membership or policy change the scenario waits for on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key became a member.
    Admitted(PublicKey),
    /// The key was removed.
    Removed(PublicKey),
    /// Policies of this version or newer are in force.
    Policies(u32),
}

impl Tracker {
    /// Starts a collector task; returns the shared tracker and the sender for nodes.
    pub fn spawn() -> (
        std::sync::Arc<std::sync::Mutex<Tracker>>,
        mpsc::Sender<Observation>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Observation>(OBSERVATION_CAPACITY);
        let tracker = std::sync::Arc::new(std::sync::Mutex::new(Tracker::default()));
        let shared = tracker.clone();
        tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                shared.lock().expect("lock").record(o);
            }
        });
        (tracker, tx)
    }

    /// Records one observation.
    pub fn record(&mut self, o: Observation) {
        match o.event {
            NodeEvent::CatalogUpdated {
                id, version, via, ..
            } => {
                self.updates += 1;
                *self.updates_via.entry(via).or_default() += 1;
                self.held
                    .entry((o.node, id.storage_key()))
                    .or_default()
                    .push((version, o.at));
            }
            NodeEvent::Rejected { reason } => {
                *self.rejected.entry(reason.as_str().to_owned()).or_default() += 1;
            }
            NodeEvent::MeshChanged {
                admitted,
                removed,
                policies,
                ..
            } => self.mesh_changes.push(MeshChange {
                node: o.node,
                at: o.at,
                admitted,
                removed,
                policies,
            }),
        }
    }

    /// When `node` first applied `change` (`None`: not yet).
    pub fn changed_at(&self, node: usize, change: Change) -> Option<Instant> {
        self.mesh_changes
            .iter()
            .filter(|c| c.node == node)
            .find(|c| match change {
                Change::Admitted(k) => c.admitted.contains(&k),
                Change::Removed(k) => c.removed.contains(&k),
                Change::Policies(v) => c.policies.is_some_and(|p| p >= v),
            })
            .map(|c| c.at)
    }

    /// When `node` first held version `version` or newer of product `key`.
    pub fn first_at(&self, node: usize, key: &str, version: u64) -> Option<Instant> {
        self.held
            .get(&(node, key.to_owned()))?
            .iter()
            .find(|(v, _)| *v >= version)
            .map(|(_, t)| *t)
    }
}

/// Whether node `i` of `nodes` serves the DHT when `servers` of them do (`None`: all),
/// spread evenly so that servers are not only the earliest nodes.
pub fn is_dht_server(i: usize, nodes: usize, servers: Option<usize>) -> bool {
    match servers {
        None => true,
        Some(0) => false,
        Some(servers) => i.is_multiple_of(nodes.div_ceil(servers)),
    }
}
