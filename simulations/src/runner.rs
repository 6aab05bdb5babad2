//! Drives a topology: starts one real meshnode node per domain behind the link emulator,
//! runs the timeline and measures convergence.
//!
//! Phases:
//!
//! 1. **Setup.** Every domain gets an emulator front socket (its relay address, which it
//!    announces) and a real QUIC socket. Node i bootstraps to `bootstrap_degree` random
//!    earlier nodes (seeded). The runner waits until every node has a peer, then
//!    `warmup_ms`; that instant is the timeline's t = 0.
//! 2. **Timeline.** Events run at `t0 + at_ms` (wall clock). Publishes, contract requests
//!    and fetches run as tasks so a slow one does not delay later events.
//! 3. **Settle.** After the last event the runner waits up to `settle_ms` for every live node
//!    to hold the newest version of every product, then reads every live node's catalog,
//!    metrics and status.
//!
//! Times come from node events (`CatalogUpdated`), stamped by the node when it stores the
//! descriptor.
//!
//! Every node starts with the topology's charter (`[charter]`). `join` has a live member
//! admit the newcomer (`NodeHandle::admit`) and starts it from the charter and votes it was
//! given; `amend` and `remove` are proposed by one governor and signed by the others once
//! they hold the motion. Each change is timed from the first node's `MeshChanged` (the one
//! where it was carried) to every live member's. A removed domain's node keeps running,
//! refused by the members, and is left out of convergence.
//!
//! Domains named by `contract_request` and `fetch` events (consumers and providers) also run
//! a data plane. Its socket is behind the emulator as well: it gets a second emulator slot in
//! the same cloud, whose front address is the data-plane address the node announces, so
//! transfers see the links' latency, jitter, loss and partitions.
//!
//! Files, one concern each: `setup` (emulator slots, starting nodes and the attacker,
//! bootstrap, waiting for peers, shutdown), `timeline` (running events, publishes, forgeries),
//! `governance` (`join`, `amend`, `remove`), `contracts` (contract requests, fetches, file
//! checks), `report` (settle, reading catalogs and metrics, building the report) and `probe`
//! (runtime and actor lag).

mod contracts;
mod governance;
mod probe;
mod report;
mod setup;
mod timeline;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mesh_node::views::ProductView;
use mesh_protocol::{Identity, PublicKey, Signed};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::contracts::{Negotiation, Transfer};
use self::governance::GovernanceStep;
use self::probe::Probe;
use crate::bare::BareSwarm;
use crate::cluster::{self, NodeSpec, Observation, RunningNode, Tracker, identity_secret};
use crate::emulator::Emulator;
use crate::report::Report;
use crate::stats::{Percentiles, round1};
use crate::topology::Topology;

/// Version claimed by forged descriptors: far above anything honest.
pub const FORGED_VERSION: u64 = 1_000_000;
/// Title of forged descriptors.
pub const FORGED_TITLE: &str = "forged by the simulated attacker";

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the topology's seed.
    pub seed: Option<u64>,
}

/// One domain's node.
#[derive(Debug)]
struct Slot {
    /// How to (re)start it.
    spec: NodeSpec,
    /// Cloud index.
    cloud: usize,
    /// Emulator index.
    emu: usize,
    /// Emulator index of its data plane, if it runs one.
    data_emu: Option<usize>,
    /// Relay multiaddr with `/p2p`, what peers dial.
    relay: String,
    /// Node key.
    key: PublicKey,
    /// The running node, if up.
    running: Option<RunningNode>,
    /// Last (re)start.
    started: Instant,
    /// Removed from the mesh by a `remove` event: still running, refused by every member,
    /// and left out of convergence.
    removed: bool,
}

/// A publish in flight or done.
#[derive(Debug)]
struct Publish {
    /// Publishing slot.
    slot: usize,
    /// Timeline time.
    at_ms: u64,
    /// Rows and seed of the generated data.
    data: (usize, u64),
    /// Partition active when published.
    during_partition: bool,
    /// The publish call.
    task: JoinHandle<Result<ProductView, mesh_node::NodeError>>,
}

/// A publish that completed.
#[derive(Debug)]
struct Published {
    slot: usize,
    at_ms: u64,
    data: (usize, u64),
    during_partition: bool,
    product: String,
    key: String,
    version: u64,
    origin: Instant,
}

/// The attacker of `inject_forgery` events.
#[derive(Debug)]
struct Attacker {
    /// Its swarm.
    swarm: BareSwarm,
    /// Its key.
    identity: Identity,
}

/// The run state.
struct Runner<'t> {
    topology: &'t Topology,
    seed: u64,
    emulator: Emulator,
    slots: Vec<Slot>,
    by_domain: HashMap<String, usize>,
    rng: ChaCha8Rng,
    tracker: Arc<Mutex<Tracker>>,
    observations: mpsc::Sender<Observation>,
    scratch: tempfile::TempDir,
    publishes: Vec<Publish>,
    heals: Vec<(u64, Instant, String)>,
    marks: Vec<(f64, String)>,
    forgeries: Vec<(u64, String, PublicKey, String, bool, String)>,
    skipped: Vec<String>,
    attacker: Option<Attacker>,
    /// Counter for generated files.
    file_counter: u64,
    /// Domains that run a data plane.
    data_domains: BTreeSet<String>,
    /// Number of nodes the topology starts with (DHT servers are spread over them).
    initial_nodes: usize,
    negotiations: Vec<Negotiation>,
    transfers: Vec<Transfer>,
    /// Per (consumer slot, `domain/product`): turns true when its latest negotiation ended.
    concluded: HashMap<(usize, String), watch::Receiver<bool>>,
    /// The simulated mesh's charter (the topology's `[charter]`).
    charter: Arc<Signed<mesh_protocol::governance::Charter>>,
    /// Membership changes and amendments.
    governance: Vec<GovernanceStep>,
}

/// The charter of a scenario's mesh: its governors and quorum, and its founding members;
/// domains that join later are admitted by a member at their `join` event.
fn scenario_charter(topology: &Topology, seed: u64) -> Signed<mesh_protocol::governance::Charter> {
    let identity = |d: &str| Identity::from_secret_bytes(identity_secret(seed, d));
    let governors: Vec<(String, Identity)> = topology
        .governors()
        .into_iter()
        .map(|d| {
            let i = identity(&d);
            (d, i)
        })
        .collect();
    let members: Vec<(String, PublicKey)> = topology
        .founding_members()
        .into_iter()
        .map(|d| {
            let k = identity(&d).public_key();
            (d, k)
        })
        .collect();
    cluster::charter(
        &topology
            .name
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
        &governors,
        &members,
        topology.quorum(),
    )
}

/// Runs a topology and returns its report.
pub async fn run(topology: &Topology, options: &RunOptions) -> anyhow::Result<Report> {
    cluster::raise_fd_limit();
    let seed = options.seed.unwrap_or(topology.seed);
    let (tracker, observations) = Tracker::spawn();
    let mut runner = Runner {
        topology,
        seed,
        emulator: Emulator::new(seed, topology.link_matrix()),
        slots: Vec::new(),
        by_domain: HashMap::new(),
        rng: ChaCha8Rng::seed_from_u64(seed),
        tracker,
        observations,
        scratch: tempfile::Builder::new()
            .prefix("meshsim-")
            .tempdir_in(cluster::scratch_base())?,
        publishes: Vec::new(),
        heals: Vec::new(),
        marks: Vec::new(),
        forgeries: Vec::new(),
        skipped: Vec::new(),
        attacker: None,
        file_counter: 0,
        data_domains: topology.data_plane_domains(),
        initial_nodes: topology.initial_nodes().len(),
        negotiations: Vec::new(),
        transfers: Vec::new(),
        concluded: HashMap::new(),
        charter: Arc::new(scenario_charter(topology, seed)),
        governance: Vec::new(),
    };
    let result = runner.run().await;
    runner.shutdown().await;
    result
}

impl Runner<'_> {
    async fn run(&mut self) -> anyhow::Result<Report> {
        let setup = Instant::now();
        self.setup().await?;
        let setup_ms = setup.elapsed().as_millis() as u64;

        let t0 = Instant::now();
        let probe = Probe::start(
            self.slots
                .iter()
                .filter_map(|s| s.running.as_ref().map(|n| n.handle.clone()))
                .collect(),
        );
        self.timeline(t0).await;
        self.settle(t0, setup_ms, probe).await
    }

    async fn wait_until<F>(&self, timeout: Duration, mut check: F) -> bool
    where
        F: for<'a> FnMut(&'a Self) -> std::pin::Pin<Box<dyn Future<Output = bool> + 'a>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if check(self).await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn slot_of(&self, domain: &str) -> anyhow::Result<usize> {
        self.by_domain
            .get(domain)
            .copied()
            .with_context(|| format!("no node for domain `{domain}` (not joined yet?)"))
    }

    fn cloud_of(&self, name: &str) -> anyhow::Result<usize> {
        self.topology
            .cloud_index(name)
            .with_context(|| format!("unknown cloud `{name}`"))
    }

    fn live_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].running.is_some())
            .collect()
    }

    /// Live nodes that are members (not removed).
    fn member_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].running.is_some() && !self.slots[i].removed)
            .collect()
    }
}

fn rounded(p: Percentiles) -> Percentiles {
    Percentiles {
        p50: round1(p.p50),
        p99: round1(p.p99),
        max: round1(p.max),
        samples: p.samples,
    }
}
