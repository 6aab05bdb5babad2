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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use libp2p::Multiaddr;
use mesh_node::NetTuning;
use mesh_node::dataplane::{Compression, DataPlane, FetchOptions, FetchOutcome};
use mesh_node::store::{Store, StoreOptions};
use mesh_node::views::{ProductView, ProposeRequest, PublishRequest, RemoveRequest, ShareRequest};
use mesh_node::{NodeError, NodeHandle};
use mesh_protocol::contract::{AgreementId, ContractState};
use mesh_protocol::descriptor::{ColumnSchema, ContentDigest, Policy, Sla, Status};
use mesh_protocol::wire::GossipMessage;
use mesh_protocol::{Filter, Identity, ProductDescriptor, ProductId, PublicKey, Signed};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::IndexedRandom;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bare::{BareSwarm, Verdict};
use crate::cluster::{
    self, Change, NodeSpec, Observation, RunningNode, Tracker, free_udp_port, identity_secret,
    quic_addr,
};
use crate::dataset;
use crate::emulator::Emulator;
use crate::report::{
    ContractReport, ContractsReport, ForgeryReport, GovernanceReport, HealReport, LinkThroughput,
    PublishReport, Report, Series, TransferReport, TransfersReport,
};
use crate::stats::{Percentiles, metric, round1};
use crate::topology::{Action, Decision, Topology, split_product};

/// Version claimed by forged descriptors: far above anything honest.
pub const FORGED_VERSION: u64 = 1_000_000;
/// Title of forged descriptors.
pub const FORGED_TITLE: &str = "forged by the simulated attacker";
/// Longest wait for a contract to conclude (a `manual` decision reaching the consumer), and
/// for a fetch's contract to conclude before it starts.
const CONTRACT_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for a signer to hold a motion before it signs (gossip, or sync after a heal).
const MOTION_WAIT: Duration = Duration::from_secs(60);
/// Reason given by a simulated operator's `reject`.
const REJECT_REASON: &str = "declined by the provider's operator";

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

/// A membership change or amendment whose proposal and signatures are done.
#[derive(Debug)]
struct GovernanceDone {
    /// The step.
    step: GovernanceStep,
    /// The change every member then applies, or why the proposal or a signature failed.
    outcome: Result<Change, String>,
}

/// A membership change or amendment in flight or done.
#[derive(Debug)]
struct GovernanceStep {
    /// Timeline time of the event.
    at_ms: u64,
    /// What it does, for the report.
    what: String,
    /// When the event ran.
    started: Instant,
    /// Whether a partition was active then.
    during_partition: bool,
    /// The slot it removes, which is not expected to apply it.
    removes: Option<usize>,
    /// Proposes and signs; yields the change every member then applies.
    task: JoinHandle<Result<Change, String>>,
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

/// A `contract_request` in flight or done.
#[derive(Debug)]
struct Negotiation {
    /// Timeline time.
    at_ms: u64,
    /// Consumer slot.
    consumer: usize,
    /// Provider slot.
    provider: usize,
    /// `domain/product`.
    product: String,
    /// The negotiation.
    task: JoinHandle<ContractOutcome>,
}

/// What a negotiation ended with.
#[derive(Debug, Default)]
struct ContractOutcome {
    /// Agreement id, hex.
    id: Option<String>,
    /// The provider's first answer.
    answer: Option<ContractState>,
    /// The consumer's state at the end.
    state: Option<ContractState>,
    /// Request to answer.
    negotiation: Option<Duration>,
    /// Request to agreed at the consumer.
    agreed: Option<Duration>,
    /// Both parties hold the same agreement and its signatures verify.
    verified: bool,
    /// Columns granted (consumer's view).
    granted: Option<Vec<String>>,
    /// Canonical filter.
    filter: Option<String>,
    /// Failure.
    error: Option<String>,
}

/// A `fetch` in flight or done.
#[derive(Debug)]
struct Transfer {
    /// Timeline time.
    at_ms: u64,
    /// Consumer slot.
    consumer: usize,
    /// Provider slot.
    provider: usize,
    /// `domain/product`.
    product: String,
    /// The fetch.
    task: JoinHandle<TransferOutcome>,
}

/// What a fetch ended with.
#[derive(Debug)]
struct TransferOutcome {
    /// Time spent waiting for the contract.
    waited: Duration,
    /// The product, the fetch's outcome and what the file holds.
    result: Result<(ProductId, FetchOutcome, FileCheck), String>,
}

/// What a fetched file holds, read back.
#[derive(Debug)]
struct FileCheck {
    /// Rows.
    rows: u64,
    /// Column names.
    columns: Vec<String>,
}

/// The attacker of `inject_forgery` events.
#[derive(Debug)]
struct Attacker {
    /// Its swarm.
    swarm: BareSwarm,
    /// Its key.
    identity: Identity,
}

/// Timeline steps after expanding `publish_random`.
#[derive(Clone, Debug)]
enum Step {
    Action(Action),
    PublishAny { rows: usize, n: usize },
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
        let settings = &self.topology.settings;
        let degree = settings.bootstrap_degree;
        for (domain, cloud) in self.topology.initial_nodes() {
            let earlier: Vec<usize> = (0..self.slots.len()).collect();
            let picks: Vec<usize> = earlier
                .sample(&mut self.rng, degree.min(earlier.len()))
                .copied()
                .collect();
            self.add_slot(&domain, cloud, &picks).await?;
        }
        for i in 0..self.slots.len() {
            self.start_slot(i).await?;
        }
        self.start_attacker().await?;
        let formed = self
            .wait_until(Duration::from_millis(settings.formation_timeout_ms), |r| {
                Box::pin(async move {
                    for s in &r.slots {
                        if let Some(n) = &s.running
                            && n.handle.status().await.map(|s| s.peers).unwrap_or(0) == 0
                        {
                            return false;
                        }
                    }
                    true
                })
            })
            .await;
        if !formed {
            tracing::warn!("some node still has no peer; starting the timeline anyway");
        }
        tokio::time::sleep(Duration::from_millis(settings.warmup_ms)).await;
        let setup_ms = setup.elapsed().as_millis() as u64;

        let t0 = Instant::now();
        let probe = Probe::start(
            self.slots
                .iter()
                .filter_map(|s| s.running.as_ref().map(|n| n.handle.clone()))
                .collect(),
        );
        let mut steps: Vec<(u64, Step)> = Vec::new();
        let mut n = 0;
        for e in &self.topology.events {
            match &e.action {
                Action::PublishRandom {
                    count,
                    every_ms,
                    rows,
                } => {
                    for i in 0..*count {
                        steps.push((
                            e.at_ms + i as u64 * every_ms,
                            Step::PublishAny { rows: *rows, n },
                        ));
                        n += 1;
                    }
                }
                other => steps.push((e.at_ms, Step::Action(other.clone()))),
            }
        }
        steps.sort_by_key(|(at, _)| *at);
        for (at_ms, step) in steps {
            tokio::time::sleep_until(t0 + Duration::from_millis(at_ms)).await;
            if let Err(e) = self.execute(at_ms, t0, step).await {
                self.skipped.push(format!("{at_ms} ms: {e:#}"));
            }
        }
        // Publishes done.
        let mut published = Vec::new();
        for p in std::mem::take(&mut self.publishes) {
            match p.task.await {
                Ok(Ok(view)) => {
                    let key = ProductId {
                        owner: PublicKey::from_hex(&view.owner)?,
                        name: view.name.clone(),
                    }
                    .storage_key();
                    // The publisher's own catalog update is the origin.
                    let origin = self.wait_origin(p.slot, &key, view.version).await;
                    published.push(Published {
                        slot: p.slot,
                        at_ms: p.at_ms,
                        data: p.data,
                        during_partition: p.during_partition,
                        product: view.product.clone(),
                        key,
                        version: view.version,
                        origin,
                    });
                }
                Ok(Err(e)) => self
                    .skipped
                    .push(format!("{} ms: publish failed: {e}", p.at_ms)),
                Err(e) => self
                    .skipped
                    .push(format!("{} ms: publish task: {e}", p.at_ms)),
            }
        }
        let mut contracts = Vec::new();
        for n in std::mem::take(&mut self.negotiations) {
            let outcome = n.task.await.unwrap_or_else(|e| ContractOutcome {
                error: Some(format!("negotiation task: {e}")),
                ..ContractOutcome::default()
            });
            contracts.push((n.at_ms, n.consumer, n.provider, n.product, outcome));
        }
        let mut transfers = Vec::new();
        for t in std::mem::take(&mut self.transfers) {
            let outcome = t.task.await.unwrap_or_else(|e| TransferOutcome {
                waited: Duration::ZERO,
                result: Err(format!("fetch task: {e}")),
            });
            transfers.push((t.at_ms, t.consumer, t.provider, t.product, outcome));
        }
        let mut changes = Vec::new();
        for mut step in std::mem::take(&mut self.governance) {
            let outcome = (&mut step.task)
                .await
                .unwrap_or_else(|e| Err(format!("governance task: {e}")));
            changes.push(GovernanceDone { step, outcome });
        }
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        // A removed domain's products leave every member's catalog.
        for p in published.iter().filter(|p| !self.slots[p.slot].removed) {
            let v = expected.entry(p.key.clone()).or_default();
            *v = (*v).max(p.version);
        }
        let expected_ref = &expected;
        let wanted: Vec<Change> = changes
            .iter()
            .filter_map(|c| c.outcome.as_ref().ok().copied())
            .collect();
        let wanted_ref = &wanted;
        self.wait_until(Duration::from_millis(settings.settle_ms), |r| {
            Box::pin(async move { r.all_hold(expected_ref) && r.all_applied(wanted_ref) })
        })
        .await;
        let run_ms = t0.elapsed().as_millis() as u64;
        let (runtime_lag, actor_lag) = probe.finish().await;
        let mut report = self
            .report(t0, setup_ms, run_ms, &published, &expected)
            .await?;
        report.runtime_lag_ms = Percentiles::of(&runtime_lag).map(rounded);
        report.actor_lag_ms = Percentiles::of(&actor_lag).map(rounded);
        report.contracts = self.contracts_report(&contracts);
        report.governance = self.governance_report(&changes);
        report.transfers = self.transfers_report(&transfers, &contracts, &published);
        Ok(report)
    }

    async fn wait_origin(&self, slot: usize, key: &str, version: u64) -> Instant {
        for _ in 0..200 {
            if let Some(t) = self
                .tracker
                .lock()
                .expect("lock")
                .first_at(slot, key, version)
            {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Instant::now()
    }

    fn all_hold(&self, expected: &BTreeMap<String, u64>) -> bool {
        let t = self.tracker.lock().expect("lock");
        self.member_slots()
            .into_iter()
            .all(|i| expected.iter().all(|(k, v)| t.first_at(i, k, *v).is_some()))
    }

    /// Whether every live member applied every change (the removed key's own node aside).
    fn all_applied(&self, changes: &[Change]) -> bool {
        let t = self.tracker.lock().expect("lock");
        self.member_slots().into_iter().all(|i| {
            changes.iter().all(|c| {
                matches!(c, Change::Admitted(k) if *k == self.slots[i].key)
                    || t.changed_at(i, *c).is_some()
            })
        })
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

    async fn add_slot(
        &mut self,
        domain: &str,
        cloud: usize,
        bootstrap: &[usize],
    ) -> anyhow::Result<usize> {
        let (emu, relay_addr) = self.emulator.add_node(cloud).await?;
        let (data_emu, data_announce) = if self.data_domains.contains(domain) {
            let (i, addr) = self.emulator.add_node(cloud).await?;
            (Some(i), Some(addr))
        } else {
            (None, None)
        };
        let secret = identity_secret(self.seed, domain);
        let identity = Identity::from_secret_bytes(secret);
        let peer = cluster::peer_id(&identity);
        let relay_ma = quic_addr(relay_addr.port());
        let settings = &self.topology.settings;
        let spec = NodeSpec {
            index: self.slots.len(),
            domain: domain.to_owned(),
            secret,
            data_dir: self.scratch.path().join(domain),
            listen: quic_addr(0),
            bootstrap: bootstrap
                .iter()
                .map(|&j| self.slots[j].relay.clone())
                .collect(),
            sync_interval_secs: settings.sync_interval_secs,
            tuning: NetTuning {
                heartbeat: Duration::from_millis(settings.heartbeat_ms),
                announce_addrs: vec![relay_ma.clone()],
                redial_max: Duration::from_millis(settings.redial_max_ms),
                idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
                ..NetTuning::default()
            },
            data_announce,
            dht_server: cluster::is_dht_server(
                self.slots.len(),
                self.initial_nodes,
                settings.dht_servers,
            ),
            charter: Some(self.charter.clone()),
            votes: Vec::new(),
            store: StoreOptions::default(),
        };
        self.slots.push(Slot {
            spec,
            cloud,
            emu,
            data_emu,
            relay: format!("{relay_ma}/p2p/{peer}"),
            key: identity.public_key(),
            running: None,
            started: Instant::now(),
            removed: false,
        });
        self.by_domain
            .insert(domain.to_owned(), self.slots.len() - 1);
        Ok(self.slots.len() - 1)
    }

    async fn start_slot(&mut self, i: usize) -> anyhow::Result<()> {
        let port = free_udp_port()?;
        let slot = &mut self.slots[i];
        slot.spec.listen = quic_addr(port);
        self.emulator
            .set_real_addr(slot.emu, SocketAddr::from(([127, 0, 0, 1], port)));
        let node = slot.spec.start(self.observations.clone()).await?;
        if let (Some(emu), Some(real)) = (slot.data_emu, node.data_addr()) {
            self.emulator.set_real_addr(emu, real);
        }
        slot.running = Some(node);
        slot.started = Instant::now();
        Ok(())
    }

    async fn start_attacker(&mut self) -> anyhow::Result<()> {
        let vias: BTreeSet<&str> = self
            .topology
            .events
            .iter()
            .filter_map(|e| match &e.action {
                Action::InjectForgery { via, .. } => Some(via.as_str()),
                _ => None,
            })
            .collect();
        let Some(first) = vias.first() else {
            return Ok(());
        };
        let Some(&first) = self.by_domain.get(*first) else {
            anyhow::bail!("the attacker's `via` domain must be an initial domain");
        };
        let (emu, _) = self.emulator.add_node(self.slots[first].cloud).await?;
        let port = free_udp_port()?;
        self.emulator
            .set_real_addr(emu, SocketAddr::from(([127, 0, 0, 1], port)));
        let secret = identity_secret(self.seed, "attacker");
        let tuning = NetTuning {
            heartbeat: Duration::from_millis(self.topology.settings.heartbeat_ms),
            ..NetTuning::default()
        };
        let swarm = BareSwarm::spawn(
            usize::MAX,
            secret,
            quic_addr(port),
            &tuning,
            Verdict::Ignore,
            false,
            None,
        )?;
        for via in vias {
            if let Some(&j) = self.by_domain.get(via) {
                swarm.dial(self.slots[j].relay.parse::<Multiaddr>()?).await;
            }
        }
        self.attacker = Some(Attacker {
            swarm,
            identity: Identity::from_secret_bytes(secret),
        });
        Ok(())
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

    async fn execute(&mut self, at_ms: u64, t0: Instant, step: Step) -> anyhow::Result<()> {
        let mark = |r: &mut Self, label: String| {
            r.marks.push((t0.elapsed().as_secs_f64() * 1000.0, label));
        };
        match step {
            Step::PublishAny { rows, n } => {
                let live = self.member_slots();
                let Some(&slot) = live.choose(&mut self.rng) else {
                    anyhow::bail!("publish_random: no live node");
                };
                let request = PublishRequest {
                    name: format!("bench-{n}"),
                    ..PublishRequest::default()
                };
                self.publish(slot, request, rows, at_ms)?;
            }
            Step::Action(action) => match action {
                Action::Publish {
                    domain,
                    product,
                    rows,
                    approval,
                    purposes,
                    restricted,
                } => {
                    let slot = self.slot_of(&domain)?;
                    let request = PublishRequest {
                        name: product,
                        approval: approval.map(|a| a.to_string()),
                        purposes,
                        restricted,
                        ..PublishRequest::default()
                    };
                    self.publish(slot, request, rows, at_ms)?;
                }
                Action::PublishRandom { .. } => unreachable!("expanded"),
                Action::ContractRequest {
                    consumer,
                    product,
                    purpose,
                    columns,
                    filter,
                    days,
                    decision,
                    decide_after_ms,
                } => {
                    let request = ShareRequest {
                        product: product.clone(),
                        purpose,
                        columns,
                        filter,
                        days,
                        valid_for_secs: None,
                        all_columns_including_future: false,
                    };
                    self.request_contract(
                        at_ms,
                        &consumer,
                        request,
                        decision,
                        Duration::from_millis(decide_after_ms),
                    )?;
                }
                Action::Fetch { consumer, product } => self.fetch(at_ms, &consumer, product)?,
                Action::Partition { a, b } => {
                    let (ia, ib) = (self.cloud_of(&a)?, self.cloud_of(&b)?);
                    self.emulator.set_partitioned(ia, ib, true);
                    mark(self, format!("partition {a}|{b}"));
                }
                Action::Heal { a, b } => {
                    let what = match (a, b) {
                        (Some(a), Some(b)) => {
                            let (ia, ib) = (self.cloud_of(&a)?, self.cloud_of(&b)?);
                            self.emulator.set_partitioned(ia, ib, false);
                            format!("{a}|{b}")
                        }
                        _ => {
                            let n = self.topology.clouds.len();
                            for x in 0..n {
                                for y in 0..n {
                                    self.emulator.set_partitioned(x, y, false);
                                }
                            }
                            "all".to_owned()
                        }
                    };
                    self.heals.push((at_ms, Instant::now(), what.clone()));
                    mark(self, format!("heal {what}"));
                }
                Action::Kill { domain } => {
                    let slot = self.slot_of(&domain)?;
                    let node = self.slots[slot]
                        .running
                        .take()
                        .with_context(|| format!("kill: `{domain}` is not running"))?;
                    node.kill().await;
                    mark(self, format!("kill {domain}"));
                }
                Action::Restart { domain } => {
                    let slot = self.slot_of(&domain)?;
                    anyhow::ensure!(
                        self.slots[slot].running.is_none(),
                        "restart: `{domain}` is running"
                    );
                    self.start_slot(slot).await?;
                    mark(self, format!("restart {domain}"));
                }
                Action::Join { domain, cloud } => {
                    let cloud = self.cloud_of(&cloud)?;
                    let live = self.member_slots();
                    let picks: Vec<usize> = live
                        .sample(
                            &mut self.rng,
                            self.topology.settings.bootstrap_degree.min(live.len()),
                        )
                        .copied()
                        .collect();
                    let admitter = *picks
                        .first()
                        .context("join: no live member to admit the domain")?;
                    let started = Instant::now();
                    let during_partition = self.emulator.any_partition();
                    let slot = self.add_slot(&domain, cloud, &picks).await?;
                    let key = self.slots[slot].key;
                    // A member admits it (what its answer to a join ticket does), and the
                    // newcomer starts from the charter and the votes it was given.
                    let handle = self.slots[admitter]
                        .running
                        .as_ref()
                        .context("join: the admitting member is down")?
                        .handle
                        .clone();
                    let admitted = handle
                        .admit(mesh_protocol::governance::Member {
                            key,
                            domain: domain.clone(),
                        })
                        .await;
                    let (outcome, votes) = match admitted {
                        Ok((_, votes)) => (Ok(Change::Admitted(key)), votes),
                        Err(e) => (
                            Err(format!(
                                "admission by {}: {e}",
                                self.slots[admitter].spec.domain
                            )),
                            Vec::new(),
                        ),
                    };
                    self.slots[slot].spec.votes = votes;
                    self.governance.push(GovernanceStep {
                        at_ms,
                        what: format!("admit {domain} (by {})", self.slots[admitter].spec.domain),
                        started,
                        during_partition,
                        removes: None,
                        task: tokio::spawn(async move { outcome }),
                    });
                    self.start_slot(slot).await?;
                    mark(self, format!("join {domain}"));
                }
                Action::Amend {
                    by,
                    signers,
                    restrict_tags,
                    require,
                    max_contract_days,
                    purposes,
                    summary,
                } => {
                    let request = ProposeRequest {
                        restrict_tags: restrict_tags.clone(),
                        require,
                        max_contract_days,
                        purposes,
                        summary,
                        ..ProposeRequest::default()
                    };
                    let what = format!(
                        "amend{} (by {})",
                        if restrict_tags.is_empty() {
                            String::new()
                        } else {
                            format!(" restricting {}", restrict_tags.join(", "))
                        },
                        std::iter::once(&by)
                            .chain(&signers)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let proposer = self.handle_of(&by)?;
                    let others = signers
                        .iter()
                        .map(|d| self.handle_of(d).map(|h| (d.clone(), h)))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let task = tokio::spawn(async move {
                        let motion = proposer
                            .propose(request)
                            .await
                            .map_err(|e| format!("proposal: {e}"))?;
                        let version = match &motion.action {
                            mesh_protocol::governance::Action::Amend { policies, .. } => {
                                policies.version
                            }
                            other => return Err(format!("proposed a {} motion", other.kind())),
                        };
                        sign_when_held(&motion.id, others).await?;
                        Ok(Change::Policies(version))
                    });
                    self.governance.push(GovernanceStep {
                        at_ms,
                        what,
                        started: Instant::now(),
                        during_partition: self.emulator.any_partition(),
                        removes: None,
                        task,
                    });
                    mark(self, "amend".to_owned());
                }
                Action::Remove { domain, by, reason } => {
                    let slot = self.slot_of(&domain)?;
                    let key = self.slots[slot].key;
                    let mut handles = by
                        .iter()
                        .map(|d| self.handle_of(d).map(|h| (d.clone(), h)))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let (_, proposer) = handles.remove(0);
                    let request = RemoveRequest {
                        member: domain.clone(),
                        reason,
                    };
                    let task = tokio::spawn(async move {
                        let motion = proposer
                            .remove_member(request)
                            .await
                            .map_err(|e| format!("proposal: {e}"))?;
                        sign_when_held(&motion.id, handles).await?;
                        Ok(Change::Removed(key))
                    });
                    self.slots[slot].removed = true;
                    self.governance.push(GovernanceStep {
                        at_ms,
                        what: format!("remove {domain} (by {})", by.join(", ")),
                        started: Instant::now(),
                        during_partition: self.emulator.any_partition(),
                        removes: Some(slot),
                        task,
                    });
                    mark(self, format!("remove {domain}"));
                }
                Action::InjectForgery {
                    victim,
                    product,
                    via,
                } => {
                    let slot = self.slot_of(&victim)?;
                    let key = self.slots[slot].key;
                    let sent = self.inject_forgery(key, &victim, &product).await;
                    if let Err(e) = &sent {
                        tracing::warn!("forgery not sent: {e}");
                    }
                    self.forgeries
                        .push((at_ms, victim, key, product, sent.is_ok(), via));
                }
            },
        }
        Ok(())
    }

    /// The control handle of `domain`'s running node.
    fn handle_of(&self, domain: &str) -> anyhow::Result<NodeHandle> {
        let slot = self.slot_of(domain)?;
        Ok(self.slots[slot]
            .running
            .as_ref()
            .with_context(|| format!("`{domain}` is down"))?
            .handle
            .clone())
    }

    /// How long each membership change and amendment took to reach the live members.
    fn governance_report(&self, changes: &[GovernanceDone]) -> Vec<GovernanceReport> {
        let tracker = self.tracker.lock().expect("lock");
        let members = self.member_slots();
        changes
            .iter()
            .map(
                |GovernanceDone {
                     step:
                         GovernanceStep {
                             at_ms,
                             what,
                             started,
                             during_partition,
                             removes,
                             ..
                         },
                     outcome,
                 }| {
                    let mut report = GovernanceReport {
                        at_ms: *at_ms,
                        what: what.clone(),
                        during_partition: *during_partition,
                        carried: false,
                        error: None,
                        carried_after_ms: None,
                        expected: 0,
                        reached: 0,
                        spread_ms: None,
                        all_ms: None,
                    };
                    let change = match outcome {
                        Ok(c) => *c,
                        Err(e) => {
                            report.error = Some(e.clone());
                            return report;
                        }
                    };
                    // The newcomer of an admission learns it from its join answer, not a vote.
                    let newcomer =
                        |i: usize| matches!(change, Change::Admitted(k) if k == self.slots[i].key);
                    let applied: Vec<(usize, Instant)> = (0..self.slots.len())
                        .filter(|&i| Some(i) != *removes && !newcomer(i))
                        .filter_map(|i| tracker.changed_at(i, change).map(|t| (i, t)))
                        .collect();
                    let Some(first) = applied.iter().map(|(_, t)| *t).min() else {
                        return report;
                    };
                    report.carried = true;
                    report.carried_after_ms = Some(round1(
                        first.saturating_duration_since(*started).as_secs_f64() * 1000.0,
                    ));
                    let expected: Vec<usize> = members
                        .iter()
                        .copied()
                        .filter(|&i| !newcomer(i) && self.slots[i].started <= first)
                        .collect();
                    let samples: Vec<f64> = expected
                        .iter()
                        .filter_map(|i| applied.iter().find(|(j, _)| j == i))
                        .map(|(_, t)| t.saturating_duration_since(first).as_secs_f64() * 1000.0)
                        .collect();
                    report.expected = expected.len();
                    report.reached = samples.len();
                    report.spread_ms = Percentiles::of(&samples).map(rounded);
                    report.all_ms = (samples.len() == expected.len())
                        .then(|| round1(samples.iter().copied().fold(0.0, f64::max)));
                    report
                },
            )
            .collect()
    }

    fn publish(
        &mut self,
        slot: usize,
        mut request: PublishRequest,
        rows: usize,
        at_ms: u64,
    ) -> anyhow::Result<()> {
        let Some(node) = &self.slots[slot].running else {
            anyhow::bail!(
                "publish {}/{}: the node is down",
                self.slots[slot].spec.domain,
                request.name
            );
        };
        self.file_counter += 1;
        let path = self
            .scratch
            .path()
            .join(format!("publish-{}.arrow", self.file_counter));
        let data_seed = self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.file_counter;
        request.from = path.display().to_string();
        let handle = node.handle.clone();
        // The data is generated in the task, so a large data set does not hold up the
        // timeline.
        let task = tokio::spawn(async move {
            let written =
                tokio::task::spawn_blocking(move || dataset::write_arrow(&path, rows, data_seed))
                    .await;
            match written {
                Ok(Ok(())) => handle.publish(request).await,
                Ok(Err(e)) => Err(NodeError::Internal(format!("generating the data: {e:#}"))),
                Err(e) => Err(NodeError::Internal(format!("generating the data: {e}"))),
            }
        });
        self.publishes.push(Publish {
            slot,
            at_ms,
            data: (rows, data_seed),
            during_partition: self.emulator.any_partition(),
            task,
        });
        Ok(())
    }

    /// Starts a negotiation from `consumer` for `request.product`.
    fn request_contract(
        &mut self,
        at_ms: u64,
        consumer: &str,
        request: ShareRequest,
        decision: Decision,
        decide_after: Duration,
    ) -> anyhow::Result<()> {
        let c = self.slot_of(consumer)?;
        let (provider_domain, _) = split_product(&request.product).context("validated")?;
        let p = self.slot_of(provider_domain)?;
        let Some(node) = &self.slots[c].running else {
            anyhow::bail!(
                "contract_request {consumer} -> {}: the consumer is down",
                request.product
            );
        };
        let consumer_side = (node.handle.clone(), node.store.clone());
        let provider_side = self.slots[p]
            .running
            .as_ref()
            .map(|n| (n.handle.clone(), n.store.clone()));
        let (done, concluded) = watch::channel(false);
        self.concluded
            .insert((c, request.product.clone()), concluded);
        let product = request.product.clone();
        let task = tokio::spawn(async move {
            let outcome = negotiate(
                consumer_side,
                provider_side,
                request,
                decision,
                decide_after,
            )
            .await;
            let _ = done.send(true);
            outcome
        });
        self.negotiations.push(Negotiation {
            at_ms,
            consumer: c,
            provider: p,
            product,
            task,
        });
        Ok(())
    }

    /// Starts a fetch of `product` by `consumer` over its data plane.
    fn fetch(&mut self, at_ms: u64, consumer: &str, product: String) -> anyhow::Result<()> {
        let c = self.slot_of(consumer)?;
        let (provider_domain, _) = split_product(&product).context("validated")?;
        let p = self.slot_of(provider_domain)?;
        let plane = self.slots[c]
            .running
            .as_ref()
            .and_then(|n| n.data_plane.clone())
            .with_context(|| format!("fetch {consumer} <- {product}: the consumer is down"))?;
        let wait = self.concluded.get(&(c, product.clone())).cloned();
        self.file_counter += 1;
        let dir = self.scratch.path().join("fetched").join(consumer);
        std::fs::create_dir_all(&dir)?;
        let out = dir.join(format!(
            "{}-{}.arrow",
            self.file_counter,
            product.replace('/', "-")
        ));
        let spec = product.clone();
        let task = tokio::spawn(fetch_once(plane, spec, out, wait));
        self.transfers.push(Transfer {
            at_ms,
            consumer: c,
            provider: p,
            product,
            task,
        });
        Ok(())
    }

    fn cloud_name(&self, slot: usize) -> String {
        self.topology.clouds[self.slots[slot].cloud].name.clone()
    }

    fn contracts_report(
        &self,
        contracts: &[(u64, usize, usize, String, ContractOutcome)],
    ) -> ContractsReport {
        let mut report = ContractsReport {
            requested: contracts.len(),
            ..ContractsReport::default()
        };
        let ms = |d: Duration| round1(d.as_secs_f64() * 1000.0);
        let mut negotiation = Vec::new();
        let mut agreed = Vec::new();
        for (at_ms, consumer, provider, product, o) in contracts {
            match o.state {
                Some(ContractState::Agreed) if o.verified => report.agreed += 1,
                Some(ContractState::Rejected) => report.rejected += 1,
                _ => report.failed += 1,
            }
            negotiation.extend(o.negotiation.map(ms));
            agreed.extend(o.agreed.map(ms));
            report.requests.push(ContractReport {
                at_ms: *at_ms,
                consumer: self.slots[*consumer].spec.domain.clone(),
                product: product.clone(),
                consumer_cloud: self.cloud_name(*consumer),
                provider_cloud: self.cloud_name(*provider),
                id: o.id.clone(),
                answer: o.answer.map(|s| s.as_str().to_owned()),
                state: o
                    .state
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|| "failed".to_owned()),
                negotiation_ms: o.negotiation.map(ms),
                agreed_ms: o.agreed.map(ms),
                signatures_verified: o.verified,
                granted_columns: o.granted.clone(),
                filter: o.filter.clone(),
                error: o.error.clone(),
            });
        }
        report.negotiation_ms = Percentiles::of(&negotiation).map(rounded);
        report.agreed_ms = Percentiles::of(&agreed).map(rounded);
        report
    }

    fn transfers_report(
        &self,
        transfers: &[(u64, usize, usize, String, TransferOutcome)],
        contracts: &[(u64, usize, usize, String, ContractOutcome)],
        published: &[Published],
    ) -> TransfersReport {
        let mut report = TransfersReport::default();
        let mut links: BTreeMap<(String, String), LinkThroughput> = BTreeMap::new();
        let matrix = self.topology.link_matrix();
        for (at_ms, consumer, provider, product, o) in transfers {
            let (from, to) = (self.slots[*provider].cloud, self.slots[*consumer].cloud);
            let mut entry = TransferReport {
                at_ms: *at_ms,
                consumer: self.slots[*consumer].spec.domain.clone(),
                product: product.clone(),
                version: None,
                from_cloud: self.cloud_name(*provider),
                to_cloud: self.cloud_name(*consumer),
                link_latency_ms: round1(matrix[from][to].latency.as_secs_f64() * 1000.0),
                rows: 0,
                expected_rows: None,
                columns: Vec::new(),
                bytes: 0,
                file_bytes: 0,
                seconds: 0.0,
                mib_s: 0.0,
                waited_ms: round1(o.waited.as_secs_f64() * 1000.0),
                verified: false,
                error: None,
            };
            match &o.result {
                Ok((id, outcome, check)) => {
                    report.completed += 1;
                    let key = id.storage_key();
                    // The agreement fetched under says which rows and columns to expect.
                    let terms = contracts
                        .iter()
                        .map(|c| &c.4)
                        .find(|c| c.id.as_deref() == Some(outcome.agreement.as_str()));
                    let data = published
                        .iter()
                        .find(|p| p.key == key && p.version == outcome.version)
                        .map(|p| p.data);
                    entry.expected_rows = match (data, terms) {
                        (Some((rows, seed)), Some(terms)) => {
                            let filter = terms.filter.as_deref().map(Filter::parse);
                            match filter.transpose() {
                                Ok(f) => dataset::count_matching(rows, seed, f.as_ref()).ok(),
                                Err(_) => None,
                            }
                        }
                        _ => None,
                    };
                    let expected_columns = terms.and_then(|t| t.granted.clone());
                    entry.version = Some(outcome.version);
                    entry.rows = outcome.rows;
                    entry.columns = check.columns.clone();
                    entry.bytes = outcome.bytes;
                    entry.file_bytes = outcome.file_bytes;
                    entry.seconds = (outcome.seconds * 1000.0).round() / 1000.0;
                    entry.mib_s = (outcome.mib_s * 100.0).round() / 100.0;
                    entry.verified = check.rows == outcome.rows
                        && entry.expected_rows == Some(outcome.rows)
                        && expected_columns.as_ref() == Some(&check.columns);
                    let link = links
                        .entry((entry.from_cloud.clone(), entry.to_cloud.clone()))
                        .or_insert_with(|| LinkThroughput {
                            from_cloud: entry.from_cloud.clone(),
                            to_cloud: entry.to_cloud.clone(),
                            fetches: 0,
                            rows: 0,
                            bytes: 0,
                            seconds: 0.0,
                            mib_s: 0.0,
                        });
                    link.fetches += 1;
                    link.rows += outcome.rows;
                    link.bytes += outcome.bytes;
                    link.seconds += outcome.seconds;
                }
                Err(e) => {
                    report.failed += 1;
                    entry.error = Some(e.clone());
                }
            }
            report.fetches.push(entry);
        }
        report.links = links
            .into_values()
            .map(|mut l| {
                if l.seconds > 0.0 {
                    l.mib_s =
                        ((l.bytes as f64 / (1 << 20) as f64 / l.seconds) * 100.0).round() / 100.0;
                }
                l.seconds = (l.seconds * 1000.0).round() / 1000.0;
                l
            })
            .collect();
        for s in &self.slots {
            if let Some(emu) = s.data_emu {
                report.wire_bytes += self.emulator.node_bytes(emu).0;
            }
        }
        report
    }

    async fn inject_forgery(
        &self,
        victim: PublicKey,
        domain: &str,
        product: &str,
    ) -> anyhow::Result<()> {
        let attacker = self.attacker.as_ref().context("no attacker")?;
        let forged = ProductDescriptor {
            owner: victim,
            domain: domain.to_owned(),
            name: product.to_owned(),
            version: FORGED_VERSION,
            title: FORGED_TITLE.to_owned(),
            description: "claims another domain's key".to_owned(),
            tags: Vec::new(),
            schema: vec![ColumnSchema {
                name: "id".into(),
                data_type: "Int64".into(),
                nullable: false,
            }],
            rows: 1,
            bytes: 1,
            digest: ContentDigest([0; 32]),
            published_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            sla: Sla::default(),
            policy: Policy::default(),
            lineage: Vec::new(),
            data_addr: None,
            status: Status::Active,
            stewardship: Default::default(),
        };
        let envelope = Signed::sign(&attacker.identity, &forged);
        attacker
            .swarm
            .publish(GossipMessage::Descriptor(envelope).to_bytes())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    async fn report(
        &mut self,
        t0: Instant,
        setup_ms: u64,
        run_ms: u64,
        published: &[Published],
        expected: &BTreeMap<String, u64>,
    ) -> anyhow::Result<Report> {
        let live = self.member_slots();
        let mut refused_non_members = 0;
        let mut refused_at: HashMap<String, u64> = HashMap::new();
        for &i in &self.live_slots() {
            let node = self.slots[i].running.as_ref().expect("live");
            if let Ok(status) = node.handle.status().await {
                refused_non_members += status.refused_non_members;
                refused_at.insert(
                    self.slots[i].spec.domain.clone(),
                    status.refused_non_members,
                );
            }
        }
        // Catalogs, metrics.
        let mut catalogs: Vec<BTreeSet<(String, String, u64)>> = Vec::new();
        let mut forged_held: HashMap<(String, String), usize> = HashMap::new();
        let mut bytes = 0.0;
        let mut messages = 0.0;
        let mut peers = Vec::new();
        for &i in &live {
            let node = self.slots[i].running.as_ref().expect("live");
            if let Ok(status) = node.handle.status().await {
                peers.push(status.peers as f64);
            }
            let catalog = node.handle.catalog().await.unwrap_or_default();
            for p in &catalog {
                if p.version == FORGED_VERSION || p.title == FORGED_TITLE {
                    *forged_held
                        .entry((p.owner.clone(), p.name.clone()))
                        .or_default() += 1;
                }
            }
            catalogs.push(
                catalog
                    .into_iter()
                    .map(|p| (p.owner, p.name, p.version))
                    .collect(),
            );
            let text = node.handle.metrics().await.unwrap_or_default();
            for name in ["gossip_bytes_in", "gossip_bytes_out"] {
                bytes += metric(&text, &format!("meshnode_{name}_total")).unwrap_or(0.0);
            }
            for name in ["gossip_messages_in", "gossip_messages_out"] {
                messages += metric(&text, &format!("meshnode_{name}_total")).unwrap_or(0.0);
            }
        }
        let same = catalogs.windows(2).all(|w| w[0] == w[1]);
        let complete = catalogs.first().is_some_and(|c| {
            expected.iter().all(|(k, v)| {
                ProductId::from_storage_key(k).is_some_and(|id| {
                    let owner = id.owner.to_hex();
                    c.iter()
                        .any(|(o, n, version)| *o == owner && *n == id.name && version >= v)
                })
            })
        });
        let tracker = self.tracker.lock().expect("lock");
        // Per publish.
        let mut all_samples = Vec::new();
        let mut publishes = Vec::new();
        let mut series = Vec::new();
        for p in published {
            let eligible: Vec<usize> = live
                .iter()
                .copied()
                .filter(|&i| i != p.slot && self.slots[i].started <= p.origin)
                .collect();
            let mut samples = Vec::new();
            for &i in &eligible {
                if let Some(at) = tracker.first_at(i, &p.key, p.version) {
                    samples.push(at.saturating_duration_since(p.origin).as_secs_f64() * 1000.0);
                }
            }
            if !p.during_partition {
                all_samples.extend_from_slice(&samples);
            }
            publishes.push(PublishReport {
                at_ms: p.at_ms,
                product: p.product.clone(),
                version: p.version,
                during_partition: p.during_partition,
                expected: eligible.len(),
                reached: samples.len(),
                convergence_ms: Percentiles::of(&samples).map(rounded),
            });
            let mut times: Vec<f64> = live
                .iter()
                .filter_map(|&i| tracker.first_at(i, &p.key, p.version))
                .map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1000.0)
                .collect();
            times.sort_by(f64::total_cmp);
            let n = live.len().max(1) as f64;
            let mut points = vec![(
                p.origin.saturating_duration_since(t0).as_secs_f64() * 1000.0,
                0.0,
            )];
            for (k, t) in times.iter().enumerate() {
                points.push((*t, k as f64 / n));
                points.push((*t, (k + 1) as f64 / n));
            }
            series.push(Series {
                label: format!("{}@{}", p.product, p.version),
                points,
            });
        }
        // Per heal.
        let mut heals = Vec::new();
        for (at_ms, instant, what) in &self.heals {
            let mut due: BTreeMap<&str, u64> = BTreeMap::new();
            for p in published.iter().filter(|p| p.origin < *instant) {
                let v = due.entry(p.key.as_str()).or_default();
                *v = (*v).max(p.version);
            }
            let mut worst = Some(0.0f64);
            for &i in live.iter().filter(|&&i| self.slots[i].started <= *instant) {
                for (k, v) in &due {
                    match (tracker.first_at(i, k, *v), worst) {
                        (Some(t), Some(w)) => {
                            let ms = t.saturating_duration_since(*instant).as_secs_f64() * 1000.0;
                            worst = Some(w.max(ms));
                        }
                        _ => worst = None,
                    }
                }
            }
            heals.push(HealReport {
                at_ms: *at_ms,
                what: what.clone(),
                products: due.len(),
                converge_ms: worst.map(round1),
            });
        }
        let rejected = tracker.rejected.clone();
        let updates_via = tracker
            .updates_via
            .iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect();
        drop(tracker);
        let forgeries = self
            .forgeries
            .iter()
            .map(|(at_ms, victim, key, product, sent, via)| ForgeryReport {
                at_ms: *at_ms,
                claims: format!("{victim}/{product}"),
                sent: *sent,
                refused_by_via: refused_at.get(via).copied().unwrap_or(0),
                accepted_by: forged_held
                    .get(&(key.to_hex(), product.clone()))
                    .copied()
                    .unwrap_or(0),
            })
            .collect();
        let mut wire = 0u64;
        for s in &self.slots {
            let (a, b) = self.emulator.node_bytes(s.emu);
            wire += a + b;
        }
        let n = live.len().max(1) as f64;
        let mut rejected_all: BTreeMap<String, u64> = mesh_protocol::RejectReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), 0))
            .collect();
        rejected_all.extend(rejected);
        Ok(Report {
            topology: self.topology.name.clone(),
            seed: self.seed,
            nodes: live.len(),
            nodes_started: self.slots.len(),
            clouds: self.topology.clouds.len(),
            convergence_ms: Percentiles::of(&all_samples).map(rounded),
            publishes,
            heal_convergence_ms: heals.iter().map(|h| h.converge_ms).collect(),
            heals,
            bytes_per_node: (bytes / n).round(),
            gossip_messages_per_node: round1(messages / n),
            wire_bytes_per_node: (wire as f64 / self.slots.len().max(1) as f64).round(),
            updates_via,
            peers_per_node: Percentiles::of(&peers),
            rejected: rejected_all,
            forgeries,
            runtime_lag_ms: None,
            actor_lag_ms: None,
            contracts: ContractsReport::default(),
            transfers: TransfersReport::default(),
            skipped: self.skipped.clone(),
            converged: same && complete && !live.is_empty(),
            catalog_size: catalogs.first().map(|c| c.len()).unwrap_or(0),
            emulator: self.emulator.totals(),
            setup_ms,
            run_ms,
            series,
            marks: self.marks.clone(),
            governance: Vec::new(),
            refused_non_members,
        })
    }

    async fn shutdown(&mut self) {
        self.attacker = None;
        let nodes: Vec<RunningNode> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.running.take())
            .collect();
        futures::future::join_all(nodes.into_iter().map(|n| n.stop())).await;
        self.emulator.shutdown();
    }
}

/// How often [`Probe`] samples.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Measures, while the timeline runs, how late the runtime fires a timer (CPU saturation of
/// the whole process) and how long node actors take to answer `status` (queueing in front
/// of one actor), round-robin over the nodes up at t = 0.
#[derive(Debug)]
struct Probe {
    /// Turns true to stop.
    stop: watch::Sender<bool>,
    /// Timer lags and `status` round trips, ms.
    task: JoinHandle<(Vec<f64>, Vec<f64>)>,
}

impl Probe {
    fn start(nodes: Vec<NodeHandle>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut timer, mut actor) = (Vec::new(), Vec::new());
            for i in 0.. {
                let asleep = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    _ = stopped.changed() => break,
                }
                let late = asleep.elapsed().saturating_sub(PROBE_INTERVAL);
                timer.push(late.as_secs_f64() * 1000.0);
                if nodes.is_empty() {
                    continue;
                }
                let asked = Instant::now();
                if nodes[i % nodes.len()].status().await.is_ok() {
                    actor.push(asked.elapsed().as_secs_f64() * 1000.0);
                }
            }
            (timer, actor)
        });
        Self { stop, task }
    }

    async fn finish(self) -> (Vec<f64>, Vec<f64>) {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One `contract_request`: the consumer's `share request` over `/meshnode/contract/1`, the
/// provider operator's decision when the request is pending, then the consumer's store is
/// watched until the contract is final, and both parties' copies are compared and verified.
async fn negotiate(
    consumer: (NodeHandle, Store),
    provider: Option<(NodeHandle, Store)>,
    request: ShareRequest,
    decision: Decision,
    decide_after: Duration,
) -> ContractOutcome {
    let mut out = ContractOutcome::default();
    let start = Instant::now();
    let view = match consumer.0.share_request(request).await {
        Ok(view) => view,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    out.negotiation = Some(start.elapsed());
    out.answer = Some(view.state);
    out.id = Some(view.id.clone());
    out.granted = view.granted_columns.clone();
    out.filter = view.filter.clone();
    let Ok(id) = view.id.parse::<AgreementId>() else {
        out.error = Some(format!("the node returned agreement id `{}`", view.id));
        return out;
    };
    match view.state {
        ContractState::Agreed => out.agreed = out.negotiation,
        ContractState::Pending => {
            tokio::time::sleep(decide_after).await;
            let decided = match (&provider, decision) {
                (None, _) => Err(NodeError::ActorClosed),
                (Some((p, _)), Decision::Accept) => p.share_accept(view.id.clone()).await,
                (Some((p, _)), Decision::Reject) => {
                    p.share_reject(view.id.clone(), REJECT_REASON.to_owned())
                        .await
                }
            };
            if let Err(e) = decided {
                out.error = Some(format!("the provider's operator could not decide: {e}"));
            }
        }
        _ => {}
    }
    // The consumer learns a decision by polling the provider; wait until it has.
    let deadline = start + CONTRACT_WAIT;
    loop {
        let record = consumer.1.agreement(&id).ok().flatten();
        out.state = record.map(|r| r.state_at(unix_ms()));
        match out.state {
            Some(ContractState::Agreed) => {
                out.agreed.get_or_insert_with(|| start.elapsed());
                break;
            }
            Some(s) if s.is_final() => break,
            _ if Instant::now() >= deadline => break,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    if out.state == Some(ContractState::Agreed) {
        let held = |store: &Store| {
            store
                .agreement(&id)
                .ok()
                .flatten()
                .and_then(|r| r.agreement)
        };
        let consumer_copy = held(&consumer.1);
        let provider_copy = provider.as_ref().and_then(|(_, store)| held(store));
        out.verified = match (consumer_copy, provider_copy) {
            (Some(a), Some(b)) => a == b && a.verify().is_ok_and(|terms| terms.id() == id),
            _ => false,
        };
        if !out.verified && out.error.is_none() {
            out.error = Some("the parties do not hold the same verified agreement".into());
        }
    }
    out
}

/// One `fetch`: waits for the consumer's negotiation of the product (if the timeline has
/// one), fetches the latest version over the data plane and reads the file back.
async fn fetch_once(
    plane: DataPlane,
    product: String,
    out: PathBuf,
    wait: Option<watch::Receiver<bool>>,
) -> TransferOutcome {
    let start = Instant::now();
    if let Some(mut concluded) = wait {
        let _ = tokio::time::timeout(CONTRACT_WAIT, concluded.wait_for(|done| *done)).await;
    }
    let waited = start.elapsed();
    let result = async {
        let descriptor = plane.resolve_product(&product).map_err(|e| e.to_string())?;
        let id = descriptor.id();
        let outcome = plane
            .fetch(FetchOptions {
                product: id.clone(),
                out: out.clone(),
                agreement: None,
                version: None,
                compression: Compression::None,
                provider_addr: None,
                force: false,
                format: Default::default(),
                progress: None,
                narrowing: None,
                connections: None,
            })
            .await
            .map_err(|e| format!("{e} ({})", e.code()))?;
        let check = tokio::task::spawn_blocking(move || read_back(&out))
            .await
            .map_err(|e| e.to_string())??;
        Ok((id, outcome, check))
    }
    .await;
    TransferOutcome { waited, result }
}

/// Rows and columns of a fetched Arrow IPC file.
fn read_back(path: &std::path::Path) -> Result<FileCheck, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).map_err(|e| e.to_string())?;
    let columns = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = 0;
    for batch in reader {
        rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
    }
    Ok(FileCheck { rows, columns })
}

fn rounded(p: Percentiles) -> Percentiles {
    Percentiles {
        p50: round1(p.p50),
        p99: round1(p.p99),
        max: round1(p.max),
        samples: p.samples,
    }
}

/// Each of `signers` signs motion `id` once it holds it (gossip, or sync after a heal), as
/// an operator signs what `governance status` shows.
async fn sign_when_held(id: &str, signers: Vec<(String, NodeHandle)>) -> Result<(), String> {
    for (domain, handle) in signers {
        let deadline = Instant::now() + MOTION_WAIT;
        loop {
            let held = handle
                .motions()
                .await
                .map_err(|e| format!("{domain}: {e}"))?
                .iter()
                .any(|m| m.id == id);
            if held {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{domain} never received motion {}",
                    &id[..16.min(id.len())]
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle
            .sign_motion(id.to_owned())
            .await
            .map_err(|e| format!("{domain} signing: {e}"))?;
    }
    Ok(())
}
