//! The node actor: one task owns the libp2p swarm, the sled store and the node's state;
//! everything else holds a [`NodeHandle`] and talks to it over a bounded channel with
//! oneshot replies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, ping, request_response};
use mesh_protocol::catalog;
use mesh_protocol::descriptor;
use mesh_protocol::peers::duplicates::{self, Link};
use mesh_protocol::peers::{Action, PeerPolicy, PolicyConfig, SyncOutcome};
use mesh_protocol::wire;
use mesh_protocol::{Identity, ProductDescriptor, ProductId, PublicKey, RejectReason};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::{DataDir, NodeConfig};
use crate::error::NodeError;
use crate::ingest::IngestOutcome;
use crate::metrics::Metrics;
use crate::net::{self, Behaviour, BehaviourEvent, NetTuning};
use crate::store::Store;
use crate::views::{PeerView, ProductView, PublishRequest, StatusView};

mod gossip;
mod publish;
mod quota;
mod sync;

use sync::{SyncSession, SyncSets};

/// Capacity of the command channel from handles to the actor.
const COMMAND_CAPACITY: usize = 64;
/// Capacity of the event broadcast (slow subscribers miss events, never block the actor).
const EVENT_CAPACITY: usize = 1024;
/// Shortest gap between two runs of the housekeeping (the peer policy's dials, trims, due
/// syncs and scores; contract polls; the node record): while something is due soon.
const HOUSEKEEPING_BUSY: Duration = Duration::from_millis(250);
/// Longest gap: a settled node (peers enough, nothing to redial, retry, decay or poll)
/// runs it this often.
const HOUSEKEEPING_IDLE: Duration = Duration::from_secs(1);
/// Longest a stopping node waits for its connections to close.
const GOODBYE: Duration = Duration::from_millis(500);

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Something that happened inside the node, for simulations, benchmarks and tests.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// A descriptor (new product or version) entered the catalog.
    CatalogUpdated {
        /// Product.
        id: ProductId,
        /// Version now held.
        version: u64,
        /// How it arrived: `local`, `gossip` or `sync`.
        via: &'static str,
        /// When it was stored, so observers that receive the event later can time it.
        at: Instant,
    },
    /// A message was rejected.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
    /// A vote changed the mesh: members admitted or removed, or new policies in force.
    MeshChanged {
        /// Keys admitted.
        admitted: Vec<PublicKey>,
        /// Keys removed.
        removed: Vec<PublicKey>,
        /// The policy version now in force, if it changed.
        policies: Option<u32>,
        /// When the vote that changed it was stored.
        at: Instant,
    },
}

/// A publish whose data is already ingested into a temporary Arrow file.
#[derive(Debug)]
pub(crate) struct IngestedProduct {
    /// What the user asked for.
    pub(crate) request: PublishRequest,
    /// Temporary Arrow file, renamed into place on commit.
    pub(crate) temp_file: PathBuf,
    /// Schema, rows, size and digest of the file.
    pub(crate) outcome: IngestOutcome,
}

/// Requests to the actor. Each carries the sender of its reply.
#[derive(Debug)]
pub(crate) enum Command {
    Status {
        reply: oneshot::Sender<StatusView>,
    },
    Catalog {
        reply: oneshot::Sender<Result<Vec<ProductView>, NodeError>>,
    },
    Publish {
        product: Box<IngestedProduct>,
        reply: oneshot::Sender<Result<ProductView, NodeError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerView>>,
    },
    Metrics {
        reply: oneshot::Sender<String>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Mesh membership and governance commands, handled in `governance`.
    Governance(crate::governance::GovernanceCommand),
    /// Contract negotiation commands, handled in `contracts`.
    #[allow(dead_code)] // sent once contract negotiation has commands
    Contract(crate::contracts::ContractCommand),
}

/// Cloneable handle to a running node.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    /// Commands to the actor.
    commands: mpsc::Sender<Command>,
    /// Node events.
    events: broadcast::Sender<NodeEvent>,
    /// The data directory, for ingest temp files.
    data_dir: DataDir,
    /// The disk space `publish` leaves free (`disk_reserve_mib`).
    disk_reserve: crate::diskroom::Reserve,
}

impl NodeHandle {
    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::ActorClosed)?;
        rx.await.map_err(|_| NodeError::ActorClosed)
    }

    /// Node status.
    pub async fn status(&self) -> Result<StatusView, NodeError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// The catalog replica.
    pub async fn catalog(&self) -> Result<Vec<ProductView>, NodeError> {
        self.call(|reply| Command::Catalog { reply }).await?
    }

    /// Ingests `request.from` and publishes a new version of `request.name`. Cancel-safe up to
    /// the commit: an abandoned ingest leaves only a temp file that is removed.
    pub async fn publish(&self, request: PublishRequest) -> Result<ProductView, NodeError> {
        self.publish_tracked(request, None).await
    }

    /// [`NodeHandle::publish`], reporting the input bytes read and rows ingested so far to
    /// `progress`.
    pub async fn publish_tracked(
        &self,
        request: PublishRequest,
        progress: Option<std::sync::Arc<crate::progress::Progress>>,
    ) -> Result<ProductView, NodeError> {
        descriptor::validate_name("product", &request.name)
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        // Text over its limit is refused before the file is read (the whole descriptor is
        // checked again, as peers check it, before it is signed).
        descriptor::check_text(
            request.title.as_deref().unwrap_or_default(),
            request.description.as_deref().unwrap_or_default(),
            &request.tags,
        )
        .map_err(|e| {
            NodeError::BadRequest(format!(
                "cannot publish `{}`: {e}; peers would refuse it",
                request.name
            ))
        })?;
        let input = PathBuf::from(&request.from);
        crate::sameview::check(
            &input,
            request.from_file,
            "publish from a directory the service can read (ProtectSystem=strict leaves /srv \
             and /opt readable, ProtectHome= and PrivateTmp= hide homes and /tmp)",
        )
        .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let staging = self.data_dir.staging();
        std::fs::create_dir_all(&staging).map_err(|e| NodeError::Internal(e.to_string()))?;
        let temp_file = staging.join(format!(
            "{}-{}.arrow.partial",
            request.name,
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let temp = temp_file.clone();
        let csv_options = crate::ingest::CsvOptions {
            null_values: request.null_values.clone(),
        };
        let reserve = self.disk_reserve;
        let outcome = tokio::task::spawn_blocking(move || {
            crate::ingest::ingest_file_tracked(
                &input,
                &temp,
                &csv_options,
                progress.as_deref(),
                crate::diskroom::Room::keeping(reserve),
            )
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?
        .map_err(|e| match e {
            crate::ingest::IngestError::NoRoom { .. } => NodeError::NoRoom(e.to_string()),
            crate::ingest::IngestError::Io { .. } => NodeError::Io(e.to_string()),
            crate::ingest::IngestError::NotFound { .. } => NodeError::NotFound(e.to_string()),
            e => NodeError::BadRequest(e.to_string()),
        })?;
        let product = Box::new(IngestedProduct {
            request,
            temp_file: temp_file.clone(),
            outcome,
        });
        let result = self.call(|reply| Command::Publish { product, reply }).await;
        if !matches!(result, Ok(Ok(_))) {
            let _ = std::fs::remove_file(&temp_file);
        }
        result?
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerView>, NodeError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// Prometheus text.
    pub async fn metrics(&self) -> Result<String, NodeError> {
        self.call(|reply| Command::Metrics { reply }).await
    }

    /// Stops the actor after flushing the store.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.call(|reply| Command::Shutdown { reply }).await
    }

    /// Subscribes to node events.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }
}

/// State of one connected peer.
#[derive(Debug)]
struct PeerState {
    /// When the first connection was established.
    since_ms: u64,
    /// Addresses we reached it at (our dials of its open connections).
    dialed: BTreeSet<Multiaddr>,
    /// Addresses it listens on, from its latest identify message: each replaces the list
    /// before, at most [`catalog::MAX_NODE_ADDRS`] kept, so pushes cannot grow it.
    listening: Vec<Multiaddr>,
    /// Latest ping round trip.
    rtt: Option<Duration>,
    /// Open connections, in the order they were established.
    links: Vec<Link<ConnectionId>>,
}

/// Options for starting a node beyond its config file.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Control-plane tuning.
    pub tuning: NetTuning,
    /// Data-plane address to announce, if the data plane is running.
    pub data_addr: Option<SocketAddr>,
    /// Control API address to show in `status`.
    pub api_addr: Option<SocketAddr>,
    /// Local Flight endpoint address to show in `status`, if it runs.
    pub flight_addr: Option<SocketAddr>,
    /// The member set to keep current, shared with the data plane (a fresh one if none).
    pub members: crate::governance::MemberSet,
}

/// The actor. Fields are crate-visible so protocol handlers in sibling modules can extend it.
pub(crate) struct Node {
    /// Signing identity.
    pub(crate) identity: Identity,
    /// libp2p peer id (from the same key).
    pub(crate) peer_id: PeerId,
    /// Node config.
    pub(crate) config: NodeConfig,
    /// Data directory layout.
    pub(crate) data_dir: DataDir,
    /// On-disk state.
    pub(crate) store: Store,
    /// The control plane.
    pub(crate) swarm: Swarm<Behaviour>,
    /// Catalog topic.
    topic: gossipsub::IdentTopic,
    /// Gossip tokens of each member key (`gossip_burst`), charged for what it gossips that
    /// is verified and new.
    pub(crate) gossip_rates: mesh_protocol::budget::RateTable<PublicKey>,
    /// Descriptor versions refused for their owner's budget, which this node's sync
    /// queries claim as held so that peers stop sending them.
    pub(crate) refused: mesh_protocol::refused::RefusedVersions<mesh_protocol::ProductId>,
    /// Gossip messages each peer sent that were dropped without a penalty (see
    /// [`gossip::IGNORED_GOSSIP_BURST`]).
    pub(crate) ignored_gossip: mesh_protocol::budget::RateTable<PeerId>,
    /// Commands from handles.
    commands: mpsc::Receiver<Command>,
    /// Event fan-out.
    pub(crate) events: broadcast::Sender<NodeEvent>,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// Our listen addresses (without `/p2p`).
    listen_addrs: Vec<Multiaddr>,
    /// Addresses announced instead of the listen addresses (`NetTuning::announce_addrs`).
    announce_addrs: Vec<Multiaddr>,
    /// Connected peers.
    peers: HashMap<PeerId, PeerState>,
    /// Whom to dial, what to close, when to sync, how to score (see `mesh_protocol::peers`).
    policy: PeerPolicy<PeerId, Multiaddr>,
    /// Sync sessions in flight, by peer.
    sync_sessions: HashMap<PeerId, SyncSession>,
    /// Reconciliation sets of the catalog and node records.
    sync_sets: SyncSets,
    /// Announced data-plane address.
    pub(crate) data_addr: Option<SocketAddr>,
    /// Control API address.
    api_addr: Option<SocketAddr>,
    /// Local Flight endpoint address, if it runs (shown in `status`).
    flight_addr: Option<SocketAddr>,
    /// Start time.
    started: Instant,
    /// Our node record needs to be re-issued (addresses changed).
    record_dirty: bool,
    /// Contract messages in flight and poll schedules (see `contracts`).
    pub(crate) negotiations: crate::contracts::Negotiations,
    /// The mesh: charter, members, policies (see `governance`).
    pub(crate) governance: crate::governance::Governance,
    /// Protocol names of this mesh.
    pub(crate) protocols: net::Protocols,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("domain", &self.config.domain)
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// Starts the actor for an initialised data directory. Returns its handle and the task.
pub fn spawn(
    identity: Identity,
    config: NodeConfig,
    data_dir: DataDir,
    store: Store,
    options: NodeOptions,
) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), NodeError> {
    let governance = crate::governance::Governance::load(
        &store,
        &identity,
        &config.domain,
        now_ms(),
        options.members.clone(),
    )
    .map_err(|e| NodeError::Internal(format!("cannot load the mesh state: {e}")))?;
    let mesh = governance.state.id();
    let mut metrics = Metrics::new();
    let off_topic = metrics.reject_counter(mesh_protocol::RejectReason::OffTopic);
    let mut swarm = net::build_swarm(&identity, &options.tuning, &config, &mesh, off_topic)
        .map_err(|e| NodeError::Internal(format!("cannot build the libp2p swarm: {e}")))?;
    {
        let gate = &mut swarm.behaviour_mut().gate;
        for (key, _) in governance.state.members() {
            if let Some(peer) = crate::negotiation::peer_id_of(key) {
                gate.allow_peer(peer);
            }
        }
        for peer in governance.invitation_peers() {
            gate.allow_peer(*peer);
        }
    }
    tracing::info!(mesh = %mesh, members = governance.state.member_count(), "mesh `{}`", governance.state.charter().name);
    for addr in &config.listen {
        let addr: Multiaddr = addr
            .parse()
            .map_err(|e| NodeError::BadRequest(format!("listen address `{addr}`: {e}")))?;
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Internal(format!("cannot listen on `{addr}`: {e}")))?;
    }
    let topic = gossipsub::IdentTopic::new(wire::catalog_topic(&mesh));
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NodeError::Internal(format!("cannot subscribe to the catalog topic: {e}")))?;
    let now = Instant::now();
    let bootstrap: Vec<(Multiaddr, Option<PeerId>)> = config
        .bootstrap
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .map(|addr| {
            let peer = addr.iter().find_map(|p| match p {
                Protocol::P2p(id) => Some(id),
                _ => None,
            });
            (addr, peer)
        })
        .collect();
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (events, _) = broadcast::channel(EVENT_CAPACITY);
    let peer_id = *swarm.local_peer_id();
    let policy = PeerPolicy::new(
        PolicyConfig {
            redial_max: options.tuning.redial_max,
            ..PolicyConfig::default()
        },
        peer_id,
        bootstrap,
        now,
    );
    metrics.register_contract_decisions(store.contract_decisions());
    metrics.catalog_size.set(store.catalog_len() as i64);
    let quota = config.catalog_quota(identity.public_key());
    // Counted here, once, from the catalog tree; kept by every write after.
    let catalog_bytes = store.catalog_bytes()?;
    if catalog_bytes > quota.max_bytes {
        tracing::warn!(
            bytes = catalog_bytes,
            max_bytes = quota.max_bytes,
            "the catalog holds more than max_catalog_mib: descriptors of keys past their share go as new ones arrive"
        );
    }
    let negotiations = crate::contracts::Negotiations::new(
        config.contracts.budget(),
        config.clock_skew_tolerance_secs.saturating_mul(1000),
        config.contracts.poll_intervals(),
    );
    if let Err(e) = store.rebuild_agreement_index_if_stale() {
        tracing::error!("cannot index stored contracts: {e}");
    }
    let node = Node {
        identity,
        peer_id,
        data_dir: data_dir.clone(),
        gossip_rates: config.gossip_rates(),
        ignored_gossip: mesh_protocol::budget::RateTable::new(
            gossip::IGNORED_GOSSIP_BURST,
            gossip::IGNORED_GOSSIP_REFILL_MS,
            gossip::IGNORED_GOSSIP_PEERS,
        ),
        refused: mesh_protocol::refused::RefusedVersions::new(
            mesh_protocol::refused::MAX_REFUSED,
            mesh_protocol::refused::REFUSED_TTL_MS,
        ),
        config,
        store,
        swarm,
        topic,
        commands: rx,
        events: events.clone(),
        metrics,
        listen_addrs: Vec::new(),
        announce_addrs: options.tuning.announce_addrs.clone(),
        peers: HashMap::new(),
        policy,
        sync_sessions: HashMap::new(),
        sync_sets: SyncSets::default(),
        data_addr: options.data_addr,
        api_addr: options.api_addr,
        flight_addr: options.flight_addr,
        started: now,
        record_dirty: true,
        negotiations,
        protocols: net::Protocols::of(&mesh),
        governance,
    };
    let disk_reserve = node.config.disk_reserve();
    let task = tokio::spawn(node.run());
    Ok((
        NodeHandle {
            commands: tx,
            events,
            data_dir,
            disk_reserve,
        },
        task,
    ))
}

impl Node {
    async fn run(mut self) {
        let mut sync_tick = tokio::time::interval(self.config.sync_interval());
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let housekeeping = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(housekeeping);
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.close().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command).await,
                    None => {
                        self.close().await;
                        return;
                    }
                },
                _ = &mut housekeeping => {
                    self.housekeeping().await;
                    housekeeping.as_mut().reset(self.next_housekeeping());
                }
                _ = sync_tick.tick() => self.sync_with_random_peer(),
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
            }
            // A command or an event may have brought work forward (a retry, a contract
            // message, a new listen address): the housekeeping then runs when it is due,
            // not when the settled deadline set before would have woken it.
            let due = self.next_housekeeping();
            if due < housekeeping.deadline() {
                housekeeping.as_mut().reset(due);
            }
        }
    }

    async fn close(&mut self) {
        if let Err(e) = self.store.flush().await {
            tracing::error!("flushing the store on shutdown failed: {e}");
        }
        self.say_goodbye().await;
    }

    /// Closes every connection and drives the swarm until they are gone (at most
    /// [`GOODBYE`]), so peers learn of the departure from the close itself rather than
    /// from their idle timeout seconds later.
    async fn say_goodbye(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let swarm = &mut self.swarm;
        let _ = tokio::time::timeout(GOODBYE, async {
            while swarm.network_info().num_peers() > 0 {
                swarm.select_next_some().await;
            }
        })
        .await;
    }

    fn emit(&self, event: NodeEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    // ---------------------------------------------------------------- commands

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Catalog { reply } => {
                let _ = reply.send(self.catalog_views());
            }
            Command::Publish { product, reply } => {
                let result = self.commit_publish(*product).await;
                let _ = reply.send(result);
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_views());
            }
            Command::Metrics { reply } => {
                self.metrics.peers.set(self.peers.len() as i64);
                self.metrics.connections.set(i64::from(
                    self.swarm
                        .network_info()
                        .connection_counters()
                        .num_established(),
                ));
                self.metrics
                    .catalog_size
                    .set(self.store.catalog_len() as i64);
                self.metrics.catalog_bytes.set(
                    i64::try_from(self.store.catalog_bytes().unwrap_or(0)).unwrap_or(i64::MAX),
                );
                let held = self.store.audit_held().unwrap_or(0);
                self.metrics
                    .audit_entries
                    .set(i64::try_from(held).unwrap_or(i64::MAX));
                self.metrics.count_contracts(&self.store);
                let _ = reply.send(self.metrics.render());
            }
            Command::Contract(command) => self.on_contract_command(command).await,
            Command::Governance(command) => self.on_governance_command(command).await,
            Command::Shutdown { .. } => unreachable!("handled in the loop"),
        }
    }

    /// The addresses peers should dial, with `/p2p`: the announced ones if configured, else
    /// the listen addresses.
    pub(crate) fn announced_addrs(&self) -> Vec<String> {
        let addrs = if self.announce_addrs.is_empty() {
            &self.listen_addrs
        } else {
            &self.announce_addrs
        };
        addrs
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(self.peer_id)).to_string())
            .collect()
    }

    fn status(&self) -> StatusView {
        let pk = self.identity.public_key();
        StatusView {
            domain: self.config.domain.clone(),
            public_key: pk.to_hex(),
            fingerprint: pk.fingerprint(),
            peer_id: self.peer_id.to_string(),
            listen_addrs: self.announced_addrs(),
            data_addr: self.data_addr.map(|a| a.to_string()),
            api_addr: self.api_addr.map(|a| a.to_string()).unwrap_or_default(),
            flight_addr: self.flight_addr.map(|a| a.to_string()),
            peers: self.peers.len(),
            catalog_size: self.store.catalog_len(),
            catalog_bytes: self.store.catalog_bytes().unwrap_or(0),
            catalog_max_bytes: self.config.catalog_quota(pk).max_bytes,
            catalog_largest_holders: self
                .store
                .catalog_largest_holders(5)
                .unwrap_or_default()
                .into_iter()
                .map(|(key, bytes)| crate::views::HolderView {
                    domain: self.governance.state.domain_of(&key).map(str::to_owned),
                    fingerprint: key.fingerprint(),
                    bytes,
                })
                .collect(),
            rejected: self.metrics.rejected_counts(),
            uptime_secs: self.started.elapsed().as_secs(),
            mesh_id: self.governance.state.id().short(),
            mesh: self.governance.state.charter().name.clone(),
            members: self.governance.state.member_count(),
            governance_votes: self.governance.state.vote_count(),
            member: self.governance.is_member(&self.identity.public_key()),
            policy_version: self.governance.state.policies().version,
            non_compliant_products: self.own_violations().into_keys().collect(),
            refused_non_members: self.governance.refused_inbound
                + self.governance.members.refusals(),
        }
    }

    pub(crate) fn catalog_views(&self) -> Result<Vec<ProductView>, NodeError> {
        let entries = self.store.catalog()?;
        let mut owners_by_domain: BTreeMap<&str, BTreeSet<_>> = BTreeMap::new();
        for (d, _) in &entries {
            owners_by_domain
                .entry(&d.domain)
                .or_default()
                .insert(d.owner);
        }
        let me = self.identity.public_key();
        let mut views: Vec<ProductView> = entries
            .iter()
            .map(|(d, _)| {
                let ambiguous = owners_by_domain
                    .get(d.domain.as_str())
                    .is_some_and(|o| o.len() > 1);
                ProductView::new(d, d.owner == me, ambiguous)
                    .with_compliance(self.governance.state.policies(), d)
            })
            .collect();
        views.sort_by(|a, b| a.product.cmp(&b.product));
        Ok(views)
    }

    /// Resolves `domain/product` or `domain@fingerprint/product` against the catalog.
    #[allow(dead_code)] // for contract negotiation
    pub(crate) fn resolve(&self, spec: &str) -> Result<ProductDescriptor, NodeError> {
        let entries = self.store.catalog()?;
        crate::resolve::resolve(spec, entries.into_iter().map(|(d, _)| d))
    }

    fn peer_views(&self) -> Vec<PeerView> {
        // The record of each connected peer, by the key its peer id inlines: as many reads as
        // peers, not one per node of the mesh.
        let domain = |peer: &PeerId| {
            let key = crate::negotiation::key_of(peer)?;
            let (_, envelope) = self.store.node_record(&key).ok()??;
            Some(envelope.decode_trusted().ok()?.domain)
        };
        let topics: HashMap<&PeerId, usize> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .map(|(id, topics)| (id, topics.len()))
            .collect();
        let mut views: Vec<PeerView> = self
            .peers
            .iter()
            .map(|(id, p)| PeerView {
                peer_id: id.to_string(),
                domain: domain(id),
                addresses: p
                    .dialed
                    .iter()
                    .chain(p.listening.iter().filter(|a| !p.dialed.contains(a)))
                    .map(|a| a.to_string())
                    .collect(),
                connected_since_ms: p.since_ms,
                rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                gossip_score: self.swarm.behaviour().gossipsub.peer_score(id),
                gossip_topics: topics.get(id).copied().unwrap_or(0),
            })
            .collect();
        views.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        views
    }

    // ---------------------------------------------------------------- housekeeping

    async fn housekeeping(&mut self) {
        if self.record_dirty && !self.listen_addrs.is_empty() {
            self.publish_node_record();
        }
        self.close_spent_invitations();
        let now = Instant::now();
        // Asked only of the few connections the policy would close.
        let topic = self.topic.hash();
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let actions = self
            .policy
            .tick(now, |peer| gossipsub.mesh_peers(&topic).any(|p| p == peer));
        self.execute(actions);
        if self.policy.discovery_due(now) {
            self.discover_from_records(now);
        }
        self.contract_housekeeping().await;
    }

    /// When the housekeeping runs next: when the peer policy or a contract poll next has
    /// something to do, at once while the node record is unpublished, at most
    /// [`HOUSEKEEPING_IDLE`] from now and at least [`HOUSEKEEPING_BUSY`]. In a large
    /// settled mesh most nodes wake for it once a second instead of four times. Checked
    /// again after every command and event, so work they bring forward is not held back.
    fn next_housekeeping(&self) -> tokio::time::Instant {
        let now = Instant::now();
        let mut next = self.policy.next_tick(now, HOUSEKEEPING_IDLE);
        if self.record_dirty {
            next = now;
        }
        if let Some(poll) = self
            .negotiations
            .next_due(self.store.agreement_generation(), now)
        {
            next = next.min(poll);
        }
        next.max(now + HOUSEKEEPING_BUSY).into()
    }

    /// Carries out what the peer policy decided.
    fn execute(&mut self, actions: Vec<Action<PeerId, Multiaddr>>) {
        for action in actions {
            match action {
                Action::DialAddr(addr) => {
                    if let Err(e) = self.swarm.dial(addr.clone()) {
                        tracing::debug!("dial {addr} failed: {e}");
                    }
                }
                Action::DialPeer { peer, addrs } => {
                    let opts =
                        DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing);
                    // No addresses given: those the behaviours know (Kademlia's routing
                    // table), else the swarm would refuse the dial for want of any.
                    let opts = if addrs.is_empty() {
                        opts.build()
                    } else {
                        opts.addresses(addrs).build()
                    };
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, "cannot dial a peer: {e}");
                        self.policy.on_dial_not_started(&peer);
                    }
                }
                Action::Disconnect(peer) => {
                    tracing::debug!(%peer, "closing an unused connection");
                    if self.swarm.disconnect_peer_id(peer).is_ok() {
                        self.metrics.connections_trimmed.inc();
                    }
                }
                Action::Sync(peer) => self.start_sync(peer),
                Action::SetScore { peer, score } => {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .set_application_score(&peer, score);
                }
            }
        }
    }

    /// Dials peers named in stored node records while the node is short of peers (the
    /// policy says how many, when, and which records to read: a bounded random sample).
    /// Every node holds the signed record, with its addresses, of every other node it has
    /// heard of, so finding peers needs no Kademlia lookup (each of which connects to a few
    /// dozen nodes). The sample is picked from the cached digest's keys, so a look decodes
    /// the same few records whatever the size of the mesh.
    fn discover_from_records(&mut self, now: Instant) {
        let Ok(digest) = self.store.node_digest() else {
            return;
        };
        let Some(look) = self
            .policy
            .discovery_wanted(digest.len(), now, rand::random())
        else {
            return;
        };
        let mut positions = look.positions.iter().copied().peekable();
        let mut candidates = Vec::with_capacity(look.positions.len());
        for (i, key) in digest.keys().enumerate() {
            let Some(&next) = positions.peek() else {
                break;
            };
            if i != next {
                continue;
            }
            positions.next();
            let record = match self.store.node_record(key) {
                Ok(Some((_, envelope))) => envelope.decode_trusted(),
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("cannot read a node record to find peers: {e}");
                    continue;
                }
            };
            let Ok(record) = record else { continue };
            // The peer id the record's key implies, not the one it states.
            let Some(peer) = crate::negotiation::peer_id_of(&record.key) else {
                continue;
            };
            let addrs: Vec<Multiaddr> = record
                .addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .filter(is_dialable)
                .collect();
            candidates.push((peer, addrs));
        }
        let actions = self
            .policy
            .choose_dials(candidates, look.wanted, rand::random());
        self.execute(actions);
    }

    /// Records that a peer's connection carried a sync or contract message.
    pub(crate) fn mark_used(&mut self, peer: PeerId) {
        self.policy.on_used(&peer, Instant::now());
    }

    // ---------------------------------------------------------------- swarm events

    async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(
                    "listening on {}",
                    address.clone().with(Protocol::P2p(self.peer_id))
                );
                self.listen_addrs.push(address);
                self.record_dirty = true;
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
                self.record_dirty = true;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                self.metrics.connections_opened.inc();
                let state = self.peers.entry(peer_id).or_insert_with(|| PeerState {
                    since_ms: now_ms(),
                    dialed: BTreeSet::new(),
                    listening: Vec::new(),
                    rtt: None,
                    links: Vec::new(),
                });
                state.links.push(Link {
                    id: connection_id,
                    dialed: endpoint.is_dialer(),
                });
                if endpoint.is_dialer() {
                    state.dialed.insert(addr.clone());
                }
                // A connection being closed no longer counts, so it is closed (and
                // counted) once.
                let surplus = duplicates::surplus(&self.peer_id, &peer_id, &state.links);
                state.links.retain(|l| !surplus.contains(&l.id));
                for id in surplus {
                    tracing::debug!(%peer_id, connection = ?id, "closing a second connection");
                    if self.swarm.close_connection(id) {
                        self.metrics.connections_duplicate.inc();
                    }
                }
                self.metrics.peers.set(self.peers.len() as i64);
                let actions = self.policy.on_connected(
                    peer_id,
                    &addr,
                    num_established.get() == 1,
                    endpoint.is_dialer(),
                    Instant::now(),
                );
                self.execute(actions);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(%peer_id, ?cause, "connection closed");
                self.policy
                    .on_disconnected(&peer_id, num_established, Instant::now());
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.sync_sessions.remove(&peer_id);
                } else if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.links.retain(|l| l.id != connection_id);
                }
                self.metrics.peers.set(self.peers.len() as i64);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                ..
            } => {
                self.policy.on_dial_failed(peer, Instant::now());
            }
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { cause },
                send_back_addr,
                ..
            } if cause
                .downcast_ref::<libp2p::allow_block_list::NotAllowed>()
                .is_some() =>
            {
                tracing::debug!(%send_back_addr, "refused a connection from a non-member");
                self.governance.refused_inbound += 1;
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event).await,
            _ => {}
        }
    }

    async fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let started = Instant::now();
                let acceptance = self.on_gossip(&message.data, propagation_source);
                self.metrics
                    .gossip_validation_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            // An invitation's key connects to speak the join protocol only: gossip is for
            // members (the gate admits nobody else), so a subscription from it ends the
            // connection before gossipsub can graft it and forward it the catalog.
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, .. })
                if !self.governance.is_member_peer(&peer_id) =>
            {
                tracing::info!(%peer_id, "closed the connection of a non-member that subscribed to gossip");
                let _ = self.swarm.disconnect_peer_id(peer_id);
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // A peer may push its list as often as it likes: it is bounded, and replaces
                // the one before.
                let listening: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(is_dialable)
                    .take(catalog::MAX_NODE_ADDRS)
                    .collect();
                // Only DHT servers belong in the routing table (only they speak the
                // Kademlia protocol), and only a DHT server keeps one. Its entry for a peer
                // outlives the connection and only grows: it takes new addresses while it
                // holds fewer than a node record may name.
                if info.protocols.contains(&self.protocols.kad)
                    && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                {
                    for addr in &listening {
                        if kad_addresses(kad, &peer_id) >= catalog::MAX_NODE_ADDRS {
                            break;
                        }
                        kad.add_address(&peer_id, addr.clone());
                    }
                }
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.listening = listening;
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }) => {
                let actions = self.policy.on_routing_updated(peer);
                self.execute(actions);
            }
            // A peer's record or provider record (`StoreInserts::FilterBoth`): never stored.
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request: kad::InboundRequest::PutRecord { source, .. },
            }) => {
                tracing::debug!(peer = %source, "dropped a Kademlia record put");
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.rtt = Some(rtt);
                }
            }
            BehaviourEvent::Sync(request_response::Event::Message { peer, .. })
                if !self.governance.is_member_peer(&peer) =>
            {
                // An invitation's connection speaks the join protocol only.
                tracing::debug!(%peer, "ignored a sync message from a non-member");
            }
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                self.mark_used(peer);
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        let response = self.answer_sync(peer, &request);
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, response);
                    }
                    request_response::Message::Response { response, .. } => {
                        self.on_sync_response(peer, &response);
                    }
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer, error, ..
            }) => {
                tracing::debug!(%peer, "sync request failed: {error}");
                if self.sync_sessions.contains_key(&peer) {
                    self.finish_sync(peer, SyncOutcome::Failed);
                }
            }
            BehaviourEvent::Contract(request_response::Event::Message {
                peer, message, ..
            }) if !self.governance.is_member_peer(&peer) => {
                tracing::debug!(%peer, "ignored a contract message from a non-member");
                // An answer to a request of ours (its peer was removed meanwhile) still
                // settles that request, as a failure: nothing it says is used, and whoever
                // waits for it is told.
                if let request_response::Message::Response { request_id, .. } = message {
                    let refusal = "the peer is no longer a member of the mesh".to_owned();
                    self.on_contract_reply(
                        request_id,
                        mesh_protocol::ContractReply::Error(refusal),
                    )
                    .await;
                }
            }
            BehaviourEvent::Contract(event) => {
                if let request_response::Event::Message { peer, .. } = &event {
                    self.mark_used(*peer);
                }
                self.on_contract_event(event).await
            }
            BehaviourEvent::Join(event) => self.on_join_event(event).await,
            _ => {}
        }
    }
}

/// Addresses Kademlia's routing table holds for `peer` (0 when it has no entry).
fn kad_addresses(kad: &mut kad::Behaviour<kad::store::MemoryStore>, peer: &PeerId) -> usize {
    kad.kbucket(*peer)
        .and_then(|bucket| {
            bucket
                .iter()
                .find(|entry| entry.node.key.preimage() == peer)
                .map(|entry| entry.node.value.len())
        })
        .unwrap_or(0)
}

/// Loopback and routable addresses are dialable; a wildcard listen address is not.
fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
