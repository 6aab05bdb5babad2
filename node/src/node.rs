//! The node actor: one task owns the libp2p swarm, the sled store and the node's state;
//! everything else holds a [`NodeHandle`] and talks to it over a bounded channel with
//! oneshot replies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, ping, request_response};
use mesh_protocol::catalog::{MergeOutcome, merge_node_record};
use mesh_protocol::descriptor::{self, ContentDigest, LineageRef, Policy, Sla, Status};
use mesh_protocol::wire::{self, GossipMessage, SyncRequest, SyncResponse};
use mesh_protocol::{Identity, NodeRecord, ProductDescriptor, ProductId, RejectReason, Signed};
use rand::seq::IteratorRandom;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::{DataDir, NodeConfig};
use crate::error::NodeError;
use crate::ingest::IngestOutcome;
use crate::metrics::Metrics;
use crate::net::{self, Behaviour, BehaviourEvent, NetTuning};
use crate::store::Store;
use crate::views::{PeerView, ProductView, PublishRequest, StatusView};

/// Capacity of the command channel from handles to the actor.
const COMMAND_CAPACITY: usize = 64;
/// Capacity of the event broadcast (slow subscribers miss events, never block the actor).
const EVENT_CAPACITY: usize = 1024;
/// Peers a node tries to stay connected to; below this it dials peers named in node records
/// or found through Kademlia.
const TARGET_PEERS: usize = 8;
/// Above this many peers a node closes unused connections. The gap between `TARGET_PEERS`
/// (dial below) and this (close above) keeps the two from fighting: nodes that dial up to
/// `TARGET_PEERS` leave many others with a few more than that, and closing those down to
/// `TARGET_PEERS` would push the dialers below it, who would dial again, and so on.
const PEERS_HIGH: usize = 3 * TARGET_PEERS;
/// How often a node short of peers looks for more in the node records it holds.
const DISCOVER_EVERY: Duration = Duration::from_secs(2);
/// A peer whose dial failed is not dialed again from its node record for this long.
const DIAL_RETRY: Duration = Duration::from_secs(60);
/// First delay between redials of a bootstrap peer (the longest is `NetTuning::redial_max`).
const REDIAL_MIN: Duration = Duration::from_millis(500);
/// A connection that is neither in the gossip mesh, nor to a bootstrap peer, nor used by
/// sync or contracts for this long is closed while the node has more than `PEERS_HIGH`
/// peers. gossipsub keeps a stream open on every connection, so libp2p's idle timeout never
/// closes one (rust-libp2p#5190): without this, each Kademlia lookup would leave its
/// connections open for good and a few hundred nodes end up fully connected.
const UNUSED_GRACE: Duration = Duration::from_secs(30);
/// Most sync rounds in flight. Each new connection starts one; during a burst of
/// connections (a Kademlia refresh) the others are left to the periodic round.
const MAX_SYNCS_IN_FLIGHT: usize = 4;
/// How often unused connections are looked for, and most closed each time.
const TRIM_EVERY: Duration = Duration::from_secs(2);
const TRIM_PER_ROUND: usize = 16;
/// Descriptors learnt through anti-entropy that were published less than this long ago are
/// gossiped on: after a partition heals or a peer reconnects, one sync round brings the news
/// across and gossip spreads it on the other side, instead of one sync interval per hop.
/// Older entries are left to anti-entropy, so a late joiner does not re-gossip the catalog.
const REGOSSIP_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Most descriptors gossiped on from one sync response.
const REGOSSIP_MAX_PER_SYNC: usize = 64;

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
        descriptor::validate_name("product", &request.name)
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let input = PathBuf::from(&request.from);
        let staging = self.data_dir.products().join(".staging");
        std::fs::create_dir_all(&staging).map_err(|e| NodeError::Internal(e.to_string()))?;
        let temp_file = staging.join(format!(
            "{}-{}.arrow.partial",
            request.name,
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let temp = temp_file.clone();
        let outcome =
            tokio::task::spawn_blocking(move || crate::ingest::ingest_file(&input, &temp))
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))?
                .map_err(|e| NodeError::BadRequest(e.to_string()))?;
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
    /// Addresses it listens on (from identify) or we reached it at.
    addrs: BTreeSet<Multiaddr>,
    /// Latest ping round trip.
    rtt: Option<Duration>,
    /// Open connections.
    connections: u32,
    /// Last sync or contract message either way (or the first connection).
    last_used: Instant,
}

/// A configured bootstrap address and its redial schedule.
#[derive(Debug)]
struct Bootstrap {
    /// Address to dial.
    addr: Multiaddr,
    /// Peer id, from the `/p2p/` suffix or learnt on first connect.
    peer: Option<PeerId>,
    /// Delay before the next attempt after a failure.
    backoff: Duration,
    /// Earliest next attempt.
    next_attempt: Instant,
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
    /// Longest delay between bootstrap redials.
    redial_max: Duration,
    /// Connected peers.
    peers: HashMap<PeerId, PeerState>,
    /// Bootstrap peers and their redial schedules.
    bootstrap: Vec<Bootstrap>,
    /// Announced data-plane address.
    pub(crate) data_addr: Option<SocketAddr>,
    /// Control API address.
    api_addr: Option<SocketAddr>,
    /// Start time.
    started: Instant,
    /// Our node record needs to be re-issued (addresses changed).
    record_dirty: bool,
    /// Peers with a sync request in flight.
    syncing: BTreeSet<PeerId>,
    /// Peers found through node records or Kademlia that we are dialing; counted against
    /// `TARGET_PEERS` so a burst of routing updates does not dial the whole mesh at once.
    dialing: HashSet<PeerId>,
    /// Peers whose last dial failed, and when they may be dialed again from their record.
    dial_failed: HashMap<PeerId, Instant>,
    /// Next look for peers in the node records.
    next_discovery: Instant,
    /// Last look for unused connections.
    last_trim: Instant,
    /// Contract messages in flight and poll schedules (see `contracts`).
    pub(crate) negotiations: crate::contracts::Negotiations,
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
    let mut swarm = net::build_swarm(&identity, &options.tuning, &config)
        .map_err(|e| NodeError::Internal(format!("cannot build the libp2p swarm: {e}")))?;
    for addr in &config.listen {
        let addr: Multiaddr = addr
            .parse()
            .map_err(|e| NodeError::BadRequest(format!("listen address `{addr}`: {e}")))?;
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Internal(format!("cannot listen on `{addr}`: {e}")))?;
    }
    let topic = gossipsub::IdentTopic::new(wire::CATALOG_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NodeError::Internal(format!("cannot subscribe to the catalog topic: {e}")))?;
    let now = Instant::now();
    let bootstrap = config
        .bootstrap
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .map(|addr| {
            let peer = addr.iter().find_map(|p| match p {
                Protocol::P2p(id) => Some(id),
                _ => None,
            });
            Bootstrap {
                addr,
                peer,
                backoff: REDIAL_MIN,
                next_attempt: now,
            }
        })
        .collect();
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (events, _) = broadcast::channel(EVENT_CAPACITY);
    let peer_id = *swarm.local_peer_id();
    let metrics = Metrics::new();
    metrics.catalog_size.set(store.catalog_len() as i64);
    let node = Node {
        identity,
        peer_id,
        data_dir: data_dir.clone(),
        config,
        store,
        swarm,
        topic,
        commands: rx,
        events: events.clone(),
        metrics,
        listen_addrs: Vec::new(),
        announce_addrs: options.tuning.announce_addrs.clone(),
        redial_max: options.tuning.redial_max,
        peers: HashMap::new(),
        bootstrap,
        data_addr: options.data_addr,
        api_addr: options.api_addr,
        started: now,
        record_dirty: true,
        syncing: BTreeSet::new(),
        dialing: HashSet::new(),
        dial_failed: HashMap::new(),
        next_discovery: now,
        last_trim: now,
        negotiations: Default::default(),
    };
    let task = tokio::spawn(node.run());
    Ok((
        NodeHandle {
            commands: tx,
            events,
            data_dir,
        },
        task,
    ))
}

impl Node {
    async fn run(mut self) {
        let mut sync_tick = tokio::time::interval(self.config.sync_interval());
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = housekeeping.tick() => self.housekeeping(),
                _ = sync_tick.tick() => self.sync_with_random_peer(),
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
            }
        }
    }

    async fn close(&mut self) {
        if let Err(e) = self.store.flush().await {
            tracing::error!("flushing the store on shutdown failed: {e}");
        }
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
                self.metrics
                    .catalog_size
                    .set(self.store.catalog_len() as i64);
                let _ = reply.send(self.metrics.render());
            }
            Command::Contract(command) => self.on_contract_command(command).await,
            Command::Shutdown { .. } => unreachable!("handled in the loop"),
        }
    }

    /// The addresses peers should dial, with `/p2p`: the announced ones if configured, else
    /// the listen addresses.
    fn announced_addrs(&self) -> Vec<String> {
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
            peers: self.peers.len(),
            catalog_size: self.store.catalog_len(),
            rejected: self.metrics.rejected_counts(),
            uptime_secs: self.started.elapsed().as_secs(),
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

    async fn commit_publish(&mut self, product: IngestedProduct) -> Result<ProductView, NodeError> {
        let IngestedProduct {
            request,
            temp_file,
            outcome,
        } = product;
        let me = self.identity.public_key();
        // A new version keeps the previous version's metadata and policy unless overridden.
        let previous = self
            .store
            .descriptor(&ProductId {
                owner: me,
                name: request.name.clone(),
            })?
            .and_then(|(_, envelope)| envelope.decode_trusted().ok());
        let schema = descriptor::columns_from_arrow(&outcome.schema);
        let restricted = match (&previous, request.restricted.is_empty()) {
            (Some(p), true) => p
                .policy
                .restricted_columns
                .iter()
                .filter(|c| schema.iter().any(|s| &s.name == *c))
                .cloned()
                .collect(),
            _ => request.restricted.clone(),
        };
        for col in &restricted {
            if !schema.iter().any(|c| &c.name == col) {
                let names: Vec<_> = schema.iter().map(|c| c.name.as_str()).collect();
                return Err(NodeError::BadRequest(format!(
                    "restricted column `{col}` is not in the schema of `{}`; its columns are: {}",
                    request.from,
                    names.join(", ")
                )));
            }
        }
        let approval = match (&request.approval, &previous) {
            (Some(a), _) => a.parse().map_err(NodeError::BadRequest)?,
            (None, Some(p)) => p.policy.approval,
            (None, None) => Default::default(),
        };
        let lineage = if request.lineage.is_empty() {
            previous
                .as_ref()
                .map(|p| p.lineage.clone())
                .unwrap_or_default()
        } else {
            request
                .lineage
                .iter()
                .map(|l| parse_lineage(l))
                .collect::<Result<Vec<_>, _>>()?
        };
        let version = self.store.local_version(&request.name)?.unwrap_or(0) + 1;
        let defaults = &self.config.defaults;
        let inherit = |new: &Vec<String>, old: Option<&Vec<String>>| {
            if new.is_empty() {
                old.cloned().unwrap_or_default()
            } else {
                new.clone()
            }
        };
        let descriptor = ProductDescriptor {
            owner: me,
            domain: self.config.domain.clone(),
            name: request.name.clone(),
            version,
            title: request
                .title
                .clone()
                .or_else(|| previous.as_ref().map(|p| p.title.clone()))
                .unwrap_or_else(|| request.name.clone()),
            description: request
                .description
                .clone()
                .or_else(|| previous.as_ref().map(|p| p.description.clone()))
                .unwrap_or_default(),
            tags: inherit(&request.tags, previous.as_ref().map(|p| &p.tags)),
            schema,
            rows: outcome.rows,
            bytes: outcome.bytes,
            digest: ContentDigest(outcome.digest),
            published_at_ms: now_ms(),
            sla: previous
                .as_ref()
                .map(|p| p.sla.clone())
                .unwrap_or_else(|| Sla {
                    update_frequency: defaults.update_frequency.clone(),
                    freshness_hours: defaults.freshness_hours,
                    availability_bp: defaults.availability_bp,
                }),
            policy: Policy {
                approval,
                allowed_purposes: inherit(
                    &request.purposes,
                    previous.as_ref().map(|p| &p.policy.allowed_purposes),
                ),
                max_contract_days: request
                    .max_days
                    .or_else(|| previous.as_ref().map(|p| p.policy.max_contract_days))
                    .unwrap_or(defaults.max_contract_days),
                restricted_columns: restricted,
            },
            lineage,
            data_addr: self.data_addr.map(|a| a.to_string()),
            status: Status::Active,
        };
        descriptor
            .validate()
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let final_path = self.data_dir.product_file(&request.name, version);
        if let Some(parent) = final_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| NodeError::Internal(e.to_string()))?;
        }
        std::fs::rename(&temp_file, &final_path).map_err(|e| {
            NodeError::Internal(format!("cannot move the product file into place: {e}"))
        })?;
        let envelope = Signed::sign(&self.identity, &descriptor);
        self.store.put_descriptor(&descriptor, &envelope)?;
        self.store.set_local_version(&request.name, version)?;
        self.store.audit_append(
            mesh_protocol::audit::AuditKind::Publish,
            &serde_json::json!({
                "product": descriptor.display_name(),
                "version": version,
                "rows": descriptor.rows,
                "bytes": descriptor.bytes,
                "digest": descriptor.digest.to_hex(),
            }),
            now_ms(),
        )?;
        self.store.flush().await?;
        self.metrics
            .catalog_size
            .set(self.store.catalog_len() as i64);
        self.emit(NodeEvent::CatalogUpdated {
            id: descriptor.id(),
            version,
            via: "local",
            at: Instant::now(),
        });
        self.gossip(GossipMessage::Descriptor(envelope));
        Ok(ProductView::new(&descriptor, true, false))
    }

    fn peer_views(&self) -> Vec<PeerView> {
        let domains: HashMap<String, String> = self
            .store
            .node_records()
            .unwrap_or_default()
            .into_iter()
            .map(|(r, _)| (r.peer_id, r.domain))
            .collect();
        let mut views: Vec<PeerView> = self
            .peers
            .iter()
            .map(|(id, p)| PeerView {
                peer_id: id.to_string(),
                domain: domains.get(&id.to_string()).cloned(),
                addresses: p.addrs.iter().map(|a| a.to_string()).collect(),
                connected_since_ms: p.since_ms,
                rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
            })
            .collect();
        views.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        views
    }

    // ---------------------------------------------------------------- gossip

    /// Publishes on the catalog topic. No peers yet is fine: anti-entropy delivers later.
    pub(crate) fn gossip(&mut self, message: GossipMessage) {
        let bytes = message.to_bytes();
        let len = bytes.len() as u64;
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) => {
                self.metrics.gossip_out.inc();
                self.metrics.gossip_bytes_out.inc_by(len);
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic)
            | Err(gossipsub::PublishError::Duplicate) => {}
            Err(e) => tracing::warn!("gossip publish failed: {e}"),
        }
    }

    fn on_gossip(&mut self, data: &[u8]) -> gossipsub::MessageAcceptance {
        self.metrics.gossip_in.inc();
        self.metrics.gossip_bytes_in.inc_by(data.len() as u64);
        let message = match GossipMessage::from_bytes(data) {
            Ok(m) => m,
            Err(e) => {
                let reason = match e {
                    mesh_protocol::codec::DecodeError::TooLarge { .. } => RejectReason::Oversized,
                    _ => RejectReason::Malformed,
                };
                self.rejected(reason);
                return gossipsub::MessageAcceptance::Reject;
            }
        };
        let result = match message {
            GossipMessage::Descriptor(envelope) => self.accept_descriptor(&envelope, "gossip"),
            GossipMessage::Node(envelope) => self.accept_node_record(&envelope),
            GossipMessage::Revocation(envelope) => self.accept_revocation(&envelope),
        };
        match result {
            Ok(true) => gossipsub::MessageAcceptance::Accept,
            Ok(false) => gossipsub::MessageAcceptance::Ignore,
            Err(_) => gossipsub::MessageAcceptance::Reject,
        }
    }

    fn rejected(&self, reason: RejectReason) {
        self.metrics.reject(reason);
        self.emit(NodeEvent::Rejected { reason });
    }

    /// Offers a descriptor to the catalog. `Ok(true)`: stored (new or newer); `Ok(false)`:
    /// duplicate; `Err`: rejected and counted.
    fn accept_descriptor(
        &mut self,
        envelope: &Signed<ProductDescriptor>,
        via: &'static str,
    ) -> Result<bool, RejectReason> {
        let store = &self.store;
        let outcome = mesh_protocol::merge(envelope, |id| store.descriptor(id).ok().flatten());
        match outcome {
            MergeOutcome::Accepted(descriptor) => {
                if let Err(e) = self.store.put_descriptor(&descriptor, envelope) {
                    tracing::error!("cannot store descriptor: {e}");
                    return Ok(false);
                }
                self.metrics
                    .catalog_size
                    .set(self.store.catalog_len() as i64);
                tracing::debug!(product = %descriptor.display_name(), version = descriptor.version, via, "catalog updated");
                self.emit(NodeEvent::CatalogUpdated {
                    id: descriptor.id(),
                    version: descriptor.version,
                    via,
                    at: Instant::now(),
                });
                Ok(true)
            }
            MergeOutcome::Duplicate => Ok(false),
            MergeOutcome::Rejected(reason) => {
                tracing::info!(?reason, via, "rejected a descriptor");
                self.rejected(reason);
                Err(reason)
            }
        }
    }

    fn accept_node_record(&mut self, envelope: &Signed<NodeRecord>) -> Result<bool, RejectReason> {
        let current = self.store.node_record(&envelope.signer()).ok().flatten();
        // Byte-identical to the stored record: verified when it was stored.
        if current
            .as_ref()
            .is_some_and(|(_, stored)| stored == envelope)
        {
            return Ok(false);
        }
        match merge_node_record(envelope, current.map(|(t, _)| t)) {
            Ok(Some(record)) => {
                if let Err(e) = self.store.put_node_record(&record, envelope) {
                    tracing::error!("cannot store node record: {e}");
                    return Ok(false);
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(reason) => {
                self.rejected(reason);
                Err(reason)
            }
        }
    }

    fn publish_node_record(&mut self) {
        let me = self.identity.public_key();
        let previous = self
            .store
            .node_record(&me)
            .ok()
            .flatten()
            .map(|(t, _)| t)
            .unwrap_or(0);
        let record = NodeRecord {
            key: me,
            domain: self.config.domain.clone(),
            peer_id: self.peer_id.to_string(),
            addrs: self.announced_addrs(),
            data_addr: self.data_addr.map(|a| a.to_string()),
            issued_at_ms: now_ms().max(previous + 1),
        };
        let envelope = Signed::sign(&self.identity, &record);
        if let Err(e) = self.store.put_node_record(&record, &envelope) {
            tracing::error!("cannot store our node record: {e}");
        }
        self.gossip(GossipMessage::Node(envelope));
        self.record_dirty = false;
    }

    // ---------------------------------------------------------------- sync

    fn sync_with(&mut self, peer: PeerId) {
        if !self.syncing.insert(peer) {
            return;
        }
        self.mark_used(peer);
        let request = SyncRequest {
            products: self
                .store
                .catalog_digest()
                .unwrap_or_default()
                .iter()
                .map(|(id, version)| (id.clone(), *version))
                .collect(),
            nodes: self
                .store
                .node_digest()
                .unwrap_or_default()
                .iter()
                .map(|(key, issued)| (*key, *issued))
                .collect(),
        };
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, request.to_bytes());
    }

    fn sync_with_random_peer(&mut self) {
        let peer = self.peers.keys().copied().choose(&mut rand::rng());
        if let Some(peer) = peer {
            self.sync_with(peer);
        }
    }

    fn answer_sync(&self, request: &[u8]) -> Vec<u8> {
        let Ok(request) = SyncRequest::from_bytes(request) else {
            self.rejected(RejectReason::Malformed);
            return SyncResponse::default().to_bytes();
        };
        let mut response = SyncResponse::default();
        let mut budget = wire::MAX_SYNC_RESPONSE - 1024;
        let ours = self.store.catalog_digest().unwrap_or_default();
        for id in wire::entries_peer_lacks(&ours, request.products) {
            if let Ok(Some((_, envelope))) = self.store.descriptor(&id) {
                let len = envelope.to_bytes().len() + 8;
                if len > budget {
                    response.truncated = true;
                    break;
                }
                budget -= len;
                response.descriptors.push(envelope);
            }
        }
        let ours = self.store.node_digest().unwrap_or_default();
        for key in wire::entries_peer_lacks(&ours, request.nodes) {
            if let Ok(Some((_, envelope))) = self.store.node_record(&key) {
                let len = envelope.to_bytes().len() + 8;
                if len > budget {
                    response.truncated = true;
                    break;
                }
                budget -= len;
                response.nodes.push(envelope);
            }
        }
        response.to_bytes()
    }

    fn on_sync_response(&mut self, peer: PeerId, bytes: &[u8]) {
        self.syncing.remove(&peer);
        self.metrics.sync_rounds.inc();
        let response = match SyncResponse::from_bytes(bytes) {
            Ok(r) => r,
            Err(_) => {
                self.rejected(RejectReason::Malformed);
                return;
            }
        };
        let now = now_ms();
        let mut regossip = Vec::new();
        for envelope in &response.descriptors {
            if let Ok(true) = self.accept_descriptor(envelope, "sync") {
                self.metrics.sync_entries.inc();
                let fresh = envelope
                    .decode_trusted()
                    .is_ok_and(|d| now.saturating_sub(d.published_at_ms) < REGOSSIP_WINDOW_MS);
                if fresh && regossip.len() < REGOSSIP_MAX_PER_SYNC {
                    regossip.push(envelope.clone());
                }
            }
        }
        for envelope in regossip {
            self.gossip(GossipMessage::Descriptor(envelope));
        }
        for envelope in &response.nodes {
            let _ = self.accept_node_record(envelope);
        }
        if response.truncated {
            self.sync_with(peer);
        }
    }

    // ---------------------------------------------------------------- housekeeping

    fn housekeeping(&mut self) {
        if self.record_dirty && !self.listen_addrs.is_empty() {
            self.publish_node_record();
        }
        let now = Instant::now();
        let connected: BTreeSet<PeerId> = self.peers.keys().copied().collect();
        let mut to_dial = Vec::new();
        for b in &mut self.bootstrap {
            let is_connected = b.peer.is_some_and(|p| connected.contains(&p));
            if is_connected || b.peer == Some(self.peer_id) || now < b.next_attempt {
                continue;
            }
            to_dial.push(b.addr.clone());
            b.next_attempt = now + b.backoff;
            b.backoff = (b.backoff * 2).min(self.redial_max);
        }
        for addr in to_dial {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!("dial {addr} failed: {e}");
            }
        }
        self.discover_from_records();
        self.trim_connections();
        self.contract_housekeeping();
    }

    /// Dials peers named in stored node records while the node has fewer than `TARGET_PEERS`.
    /// Every node holds the signed record, with its addresses, of every other node it has
    /// heard of, so finding peers needs no Kademlia lookup (each of which connects to a few
    /// dozen nodes); Kademlia is left to find the peers not heard of yet.
    fn discover_from_records(&mut self) {
        let now = Instant::now();
        let wanted = TARGET_PEERS.saturating_sub(self.peers.len() + self.dialing.len());
        if wanted == 0 || now < self.next_discovery {
            return;
        }
        self.next_discovery = now + DISCOVER_EVERY;
        // Connected to every node heard of (a mesh smaller than the target): the cached
        // digest says so without decoding a record.
        let known = self.store.node_digest().map_or(usize::MAX, |d| d.len());
        if self.peers.len() + self.dialing.len() + 1 >= known {
            return;
        }
        self.dial_failed.retain(|_, retry_at| *retry_at > now);
        let records = match self.store.node_records() {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!("cannot read node records to find peers: {e}");
                return;
            }
        };
        let candidates = records.into_iter().filter_map(|(record, _)| {
            // The peer id the record's key implies, not the one it states.
            let peer = crate::negotiation::peer_id_of(&record.key)?;
            if peer == self.peer_id
                || self.peers.contains_key(&peer)
                || self.dialing.contains(&peer)
                || self.dial_failed.contains_key(&peer)
            {
                return None;
            }
            let addrs: Vec<Multiaddr> = record
                .addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .filter(is_dialable)
                .collect();
            (!addrs.is_empty()).then_some((peer, addrs))
        });
        for (peer, addrs) in candidates.sample(&mut rand::rng(), wanted) {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.dialing.insert(peer);
                }
                Err(e) => tracing::debug!(%peer, "cannot dial a peer from its node record: {e}"),
            }
        }
    }

    /// Records that a peer's connection carried a sync or contract message.
    pub(crate) fn mark_used(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_used = Instant::now();
        }
    }

    /// Closes connections nobody uses while the node has more than `PEERS_HIGH` peers:
    /// not in the gossip mesh, not a bootstrap peer, no sync or contract message for
    /// `UNUSED_GRACE`, no request in flight. Kademlia opens such connections by the dozen.
    fn trim_connections(&mut self) {
        let excess = self.peers.len().saturating_sub(PEERS_HIGH);
        if excess == 0 || self.last_trim.elapsed() < TRIM_EVERY {
            return;
        }
        let now = Instant::now();
        self.last_trim = now;
        let gossip = &self.swarm.behaviour().gossipsub;
        let mesh: HashSet<PeerId> = gossip.mesh_peers(&self.topic.hash()).copied().collect();
        let unused: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(peer, state)| {
                now.duration_since(state.last_used) >= UNUSED_GRACE
                    && !mesh.contains(peer)
                    && !self.syncing.contains(peer)
                    && !self.bootstrap.iter().any(|b| b.peer == Some(**peer))
            })
            .map(|(peer, _)| *peer)
            .take(excess.min(TRIM_PER_ROUND))
            .collect();
        for peer in unused {
            tracing::debug!(%peer, "closing an unused connection");
            if self.swarm.disconnect_peer_id(peer).is_ok() {
                self.metrics.connections_trimmed.inc();
            }
        }
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
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                self.metrics.connections_opened.inc();
                self.dialing.remove(&peer_id);
                for b in &mut self.bootstrap {
                    if b.peer.is_none() && b.addr == addr {
                        b.peer = Some(peer_id);
                    }
                    if b.peer == Some(peer_id) {
                        b.backoff = REDIAL_MIN;
                    }
                }
                let state = self.peers.entry(peer_id).or_insert_with(|| PeerState {
                    since_ms: now_ms(),
                    addrs: BTreeSet::new(),
                    rtt: None,
                    connections: 0,
                    last_used: Instant::now(),
                });
                state.connections += 1;
                if endpoint.is_dialer() {
                    state.addrs.insert(addr);
                }
                self.metrics.peers.set(self.peers.len() as i64);
                if num_established.get() == 1 && self.syncing.len() < MAX_SYNCS_IN_FLIGHT {
                    self.sync_with(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(%peer_id, ?cause, "connection closed");
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.syncing.remove(&peer_id);
                    for b in &mut self.bootstrap {
                        if b.peer == Some(peer_id) {
                            b.next_attempt = Instant::now() + b.backoff;
                        }
                    }
                } else if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connections = p.connections.saturating_sub(1);
                }
                self.metrics.peers.set(self.peers.len() as i64);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                ..
            } => {
                self.dialing.remove(&peer);
                self.dial_failed.insert(peer, Instant::now() + DIAL_RETRY);
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
                let acceptance = self.on_gossip(&message.data);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // Only DHT servers belong in the routing table: a lookup sent to a client
                // fails, and the failure empties the table entry it came from.
                if info.protocols.contains(&net::KAD_PROTOCOL) {
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    for addr in &info.listen_addrs {
                        if is_dialable(addr) {
                            kad.add_address(&peer_id, addr.clone());
                        }
                    }
                }
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.addrs
                        .extend(info.listen_addrs.into_iter().filter(is_dialable));
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. })
                if self.peers.len() + self.dialing.len() < TARGET_PEERS
                    && !self.peers.contains_key(&peer)
                    && !self.dialing.contains(&peer)
                    && peer != self.peer_id =>
            {
                let opts = DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if self.swarm.dial(opts).is_ok() {
                    self.dialing.insert(peer);
                }
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
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                self.mark_used(peer);
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        let response = self.answer_sync(&request);
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
                self.syncing.remove(&peer);
            }
            BehaviourEvent::Contract(event) => {
                if let request_response::Event::Message { peer, .. } = &event {
                    self.mark_used(*peer);
                }
                self.on_contract_event(event).await
            }
            _ => {}
        }
    }
}

/// Parses `domain/product@version`.
fn parse_lineage(text: &str) -> Result<LineageRef, NodeError> {
    let bad = || {
        NodeError::BadRequest(format!(
            "lineage `{text}` is not of the form domain/product@version"
        ))
    };
    let (path, version) = text.rsplit_once('@').ok_or_else(bad)?;
    let (domain, product) = path.split_once('/').ok_or_else(bad)?;
    Ok(LineageRef {
        domain: domain.into(),
        product: product.into(),
        version: version.parse().map_err(|_| bad())?,
    })
}

/// Loopback and routable addresses are dialable; a wildcard listen address is not.
fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
