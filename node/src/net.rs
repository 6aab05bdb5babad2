//! The libp2p control plane: QUIC transport, gossipsub for the catalog, Kademlia and identify
//! for peer routing, ping for round-trip times, request-response for sync and contracts.
//!
//! This module only builds the swarm; the node actor in [`crate::node`] drives it.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, allow_block_list, connection_limits, gossipsub, identify,
    identity, kad, ping, request_response,
};
use mesh_protocol::Identity;
use mesh_protocol::governance::MeshId;
use mesh_protocol::governance::join::MAX_JOIN_REPLY;
use mesh_protocol::wire::{self, MAX_GOSSIP_MESSAGE};

use crate::config::NodeConfig;
use crate::woken::WhenWoken;

/// The protocol names of one mesh: every name carries the mesh id, so that nodes of two
/// meshes never speak to each other even where their connection gates would let them.
#[derive(Clone, Debug)]
pub(crate) struct Protocols {
    /// Anti-entropy (version 3: range-based reconciliation of catalog, node records and votes).
    pub(crate) sync: StreamProtocol,
    /// Contract negotiation.
    pub(crate) contract: StreamProtocol,
    /// Kademlia, separate from the public IPFS DHT and from other meshes.
    pub(crate) kad: StreamProtocol,
    /// Joining with a ticket.
    pub(crate) join: StreamProtocol,
    /// Identify's protocol version string.
    pub(crate) identify: String,
}

impl Protocols {
    /// The names for `mesh`.
    pub(crate) fn of(mesh: &MeshId) -> Self {
        let m = mesh.short();
        let name = |tail: &str| {
            StreamProtocol::try_from_owned(format!("/meshnode/{m}/{tail}"))
                .expect("a protocol name built from hex starts with `/`")
        };
        Self {
            sync: name("sync/3"),
            contract: name("contract/1"),
            kad: name("kad/1"),
            join: name("join/1"),
            identify: format!("/meshnode/{m}/1.0.0"),
        }
    }
}

/// Largest join request (a signed claim).
pub(crate) const MAX_JOIN_REQUEST: usize = 2 * 1024;
/// Most concurrent inbound or outbound streams per request-response protocol and connection.
const MAX_STREAMS_PER_PEER: usize = 16;
/// How often Kademlia refreshes its routing table.
const KAD_REFRESH: Duration = Duration::from_secs(300);
/// Most connections to one peer (a simultaneous dial from both ends makes two; the node then
/// closes one, `mesh_protocol::peers::duplicates`).
const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// How often each connection is pinged (round-trip times for `meshnode peers`). QUIC keeps
/// an idle connection alive by itself; every ping is a stream, four packets and a wake-up of
/// both connection tasks and both actors, and at every 15 s pings were a quarter of an idle
/// node's packets (docs/ARCHITECTURE.md, "Changes from the initial design").
const PING_INTERVAL: Duration = Duration::from_secs(60);
/// Largest contract message either way.
pub(crate) const MAX_CONTRACT_MESSAGE: usize = 1024 * 1024;

/// Converts the node identity into a libp2p key pair: one key for the domain and the peer id.
pub(crate) fn keypair(identity: &Identity) -> identity::Keypair {
    identity::Keypair::ed25519_from_bytes(identity.secret_bytes())
        .expect("a 32-byte ed25519 secret is always valid")
}

/// Request-response codec for opaque, length-prefixed byte messages. The actor decodes them
/// with `mesh_protocol`, which enforces the per-type limits again.
#[derive(Clone, Debug)]
pub(crate) struct BytesCodec {
    /// Largest request accepted.
    max_request: usize,
    /// Largest response accepted.
    max_response: usize,
}

impl BytesCodec {
    pub(crate) fn new(max_request: usize, max_response: usize) -> Self {
        Self {
            max_request,
            max_response,
        }
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.close().await
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

/// Every protocol a meshnode speaks on its control plane.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// The membership gate: refuses every connection from or to a key that is not a member
    /// (or an open invitation's), once its key is known and before any protocol runs.
    /// First, so that no other behaviour sees a refused connection.
    pub(crate) gate: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    /// Refuses connections beyond the configured budget.
    pub(crate) limits: connection_limits::Behaviour,
    /// Catalog gossip with application-level validation, on the catalog topic only.
    pub(crate) gossipsub: CatalogGossip,
    /// Peer routing among the DHT servers (`NodeConfig::dht_server`); absent on the other
    /// nodes, which find peers from node records only. libp2p-kad's client mode would still
    /// bootstrap by itself (a lookup per bucket, each connecting to about 20 servers) while
    /// the node never asks Kademlia anything.
    pub(crate) kad: Toggle<WhenWoken<kad::Behaviour<kad::store::MemoryStore>>>,
    /// Learns peers' listen addresses and protocols.
    pub(crate) identify: WhenWoken<identify::Behaviour>,
    /// Round-trip times for `meshnode peers`.
    pub(crate) ping: WhenWoken<ping::Behaviour>,
    /// Anti-entropy `/meshnode/sync/1`.
    pub(crate) sync: WhenWoken<request_response::Behaviour<BytesCodec>>,
    /// Contract negotiation `/meshnode/contract/1`.
    pub(crate) contract: WhenWoken<request_response::Behaviour<BytesCodec>>,
    /// Joining with a ticket: served to open invitations' keys only.
    pub(crate) join: WhenWoken<request_response::Behaviour<BytesCodec>>,
}

/// Tunables of the control plane, mostly for simulations and benchmarks. The defaults are the
/// production settings.
#[derive(Clone, Debug)]
pub struct NetTuning {
    /// gossipsub heartbeat.
    pub heartbeat: Duration,
    /// How long a connection with nothing to do stays open. A connection that carries
    /// gossip always has a stream open and never counts as idle; the node actor closes the
    /// unused ones itself.
    pub idle_timeout: Duration,
    /// Addresses peers should dial to reach this node, announced (identify, Kademlia, the
    /// signed node record, `status`) *instead of* the listen addresses. Empty, the default:
    /// announce the listen addresses. For a node reachable only through another address
    /// than the one it binds, e.g. behind a port-forwarding NAT or the simulator's link
    /// emulator, which must see every datagram between two nodes.
    pub announce_addrs: Vec<Multiaddr>,
    /// Longest delay between redials of a bootstrap peer (the delay doubles from 500 ms up to
    /// this). Default 30 s; partition simulations use a few seconds so a healed link is
    /// retried promptly.
    pub redial_max: Duration,
    /// Sign every gossipsub message with the node's key and require a valid signature on
    /// every message received ([`gossipsub_authenticity`]). Off by default, and every node
    /// of a mesh must agree: a node with it on counts every message of one with it off as
    /// invalid, and the other way round. Benchmarks turn it on to measure its cost.
    pub author_signatures: bool,
}

impl Default for NetTuning {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(120),
            announce_addrs: Vec::new(),
            redial_max: Duration::from_secs(30),
            author_signatures: false,
        }
    }
}

/// How a node's gossipsub messages are authenticated: by default they are not. A message
/// carries no author, sequence number or signature, and one that does is invalid. Every
/// payload is an envelope signed by the key it speaks for and verified before it is stored
/// or forwarded, message ids are content hashes, and only members' keys connect; an author
/// signature adds a verification per copy received and proves nothing those do not
/// (docs/ARCHITECTURE.md, "Gossip without author signatures"). `NetTuning::author_signatures`
/// turns them back on, for benchmarks that measure what they cost. Public, with
/// [`gossipsub_config`], so that benchmarks and test peers speak exactly the node's gossip.
pub fn gossipsub_authenticity(
    tuning: &NetTuning,
    key: &identity::Keypair,
) -> gossipsub::MessageAuthenticity {
    if tuning.author_signatures {
        gossipsub::MessageAuthenticity::Signed(key.clone())
    } else {
        gossipsub::MessageAuthenticity::Anonymous
    }
}

/// The gossipsub configuration of a node. Public so that benchmarks can run bare gossipsub
/// swarms with exactly the parameters the node uses (with [`gossipsub_authenticity`]).
pub fn gossipsub_config(
    tuning: &NetTuning,
) -> Result<gossipsub::Config, gossipsub::ConfigBuilderError> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(if tuning.author_signatures {
            gossipsub::ValidationMode::Strict
        } else {
            gossipsub::ValidationMode::Anonymous
        })
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_MESSAGE)
        .heartbeat_interval(tuning.heartbeat)
        // Content-addressed ids: the same signed envelope gossiped twice is one message.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(&blake3::hash(&m.data).as_bytes()[..20])
        })
        .build()
}

/// How often gossip scores decay. Every decay walks every peer's counters, and at the
/// libp2p default (every second) that was a quarter of what scoring costs an idle node;
/// the counters decay over five and ten minutes (see [`peer_score_params`]), which a step
/// every ten seconds follows as closely as one every second.
const SCORE_DECAY_INTERVAL: Duration = Duration::from_secs(10);
/// A decayed counter below this counts as zero (the libp2p default).
const SCORE_DECAY_TO_ZERO: f64 = 0.1;

/// Gossip score thresholds. A peer below zero is pruned from the mesh at the next heartbeat;
/// below `GOSSIP_THRESHOLD` it gets no gossip (IHAVE/IWANT) either way; below
/// `GRAYLIST_THRESHOLD` everything it sends is dropped unread.
pub(crate) const GOSSIP_THRESHOLD: f64 = -10.0;
/// See [`GOSSIP_THRESHOLD`].
pub(crate) const PUBLISH_THRESHOLD: f64 = -50.0;
/// See [`GOSSIP_THRESHOLD`].
pub(crate) const GRAYLIST_THRESHOLD: f64 = -80.0;
/// Weight of one invalid message (squared count): 1 costs 5, 2 cost 20, 4 cost 80, i.e.
/// four rejected messages graylist a peer until the count decays.
pub(crate) const INVALID_MESSAGE_WEIGHT: f64 = -5.0;
/// Weight of the application score: the node sets it to minus the decayed penalty points
/// of what its own validation rejected outside gossip (sync answers and requests), so
/// eight such points graylist the peer.
pub(crate) const APP_SPECIFIC_WEIGHT: f64 = 10.0;

/// Gossipsub peer scoring for the catalog topic. What it rewards and punishes:
///
/// - P4, invalid messages: every message our validation rejects (bad signature, not the
///   owner, malformed, over a limit) counts against the peer that delivered it, squared,
///   decaying over about ten minutes. This is what prunes and graylists a peer that keeps
///   sending garbage.
/// - P5, application score: penalties the node hands in for garbage sent outside gossip.
/// - P2, first deliveries: a small, capped reward (at most +5), so honest history cannot buy
///   more than one invalid message of slack.
/// - P1 (time in mesh) is a tiny reward; P3/P3b (mesh delivery deficits) are off: catalog
///   traffic is sparse (a publish now and then), so a quiet but honest peer would be punished.
/// - P6 (IP colocation) is off: many organisations' nodes may sit behind one NAT, and test
///   meshes run on one loopback address.
/// - P7 (behaviour: re-grafting during backoff, broken IHAVE promises) keeps a mild default.
///
/// Public, like [`gossipsub_config`], so that benchmarks can score peers as a node does.
pub fn peer_score_params(
    topic: &gossipsub::IdentTopic,
) -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = topic.hash();
    let decay = |d: Duration| {
        gossipsub::score_parameter_decay_with_base(d, SCORE_DECAY_INTERVAL, SCORE_DECAY_TO_ZERO)
    };
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: decay(Duration::from_secs(600)),
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: decay(Duration::from_secs(600)),
        ..Default::default()
    };
    let params = gossipsub::PeerScoreParams {
        topics: [(topic, topic_params)].into_iter().collect(),
        topic_score_cap: 10.0,
        app_specific_weight: APP_SPECIFIC_WEIGHT,
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: -1.0,
        behaviour_penalty_threshold: 6.0,
        behaviour_penalty_decay: decay(Duration::from_secs(300)),
        slow_peer_weight: 0.0,
        // The decay factors above are computed for this interval.
        decay_interval: SCORE_DECAY_INTERVAL,
        decay_to_zero: SCORE_DECAY_TO_ZERO,
        ..Default::default()
    };
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: GOSSIP_THRESHOLD,
        publish_threshold: PUBLISH_THRESHOLD,
        graylist_threshold: GRAYLIST_THRESHOLD,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 1.0,
    };
    (params, thresholds)
}

/// Gossipsub held to the mesh's catalog topic: a peer's subscriptions to other topics are
/// dropped ([`gossipsub::WhitelistSubscriptionFilter`]), and its messages on them are refused
/// before gossipsub caches anything ([`CatalogOnly`]).
pub(crate) type CatalogGossip =
    gossipsub::Behaviour<CatalogOnly, gossipsub::WhitelistSubscriptionFilter>;

/// Refuses every inbound gossip message on a topic other than the catalog's. gossipsub keeps
/// a message it does not validate (any topic the node does not take part in) in its duplicate
/// cache, its message cache and its score records for a minute or two, without judging it,
/// so a peer could make a node hold them in proportion to the rate it sends. The transform is
/// the first thing gossipsub runs on a message: a failure drops it there, counted as
/// `off_topic`.
pub(crate) struct CatalogOnly {
    /// The catalog topic of the mesh.
    topic: gossipsub::TopicHash,
    /// Messages refused (the node's `rejected{reason="off_topic"}` counter).
    refused: prometheus_client::metrics::counter::Counter,
}

impl CatalogOnly {
    pub(crate) fn new(
        topic: gossipsub::TopicHash,
        refused: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self { topic, refused }
    }
}

impl gossipsub::DataTransform for CatalogOnly {
    fn inbound_transform(
        &self,
        raw: gossipsub::RawMessage,
    ) -> Result<gossipsub::Message, io::Error> {
        if raw.topic != self.topic {
            self.refused.inc();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message on a topic other than the catalog's",
            ));
        }
        gossipsub::IdentityTransform.inbound_transform(raw)
    }

    fn outbound_transform(
        &self,
        topic: &gossipsub::TopicHash,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, io::Error> {
        gossipsub::IdentityTransform.outbound_transform(topic, data)
    }
}

/// Builds the swarm for `identity` in `mesh`, with the connection limit of `config`, and
/// Kademlia if it serves the DHT. The gate starts closed: the actor allows the members' peer ids.
pub(crate) fn build_swarm(
    identity: &Identity,
    tuning: &NetTuning,
    config: &NodeConfig,
    mesh: &MeshId,
    off_topic: prometheus_client::metrics::counter::Counter,
) -> anyhow::Result<Swarm<Behaviour>> {
    let protocols = Protocols::of(mesh);
    let topic = gossipsub::IdentTopic::new(wire::catalog_topic(mesh));
    let keypair = keypair(identity);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let gossip_config =
                gossipsub_config(tuning).map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
            let mut gossipsub = CatalogGossip::new_with_subscription_filter_and_transform(
                gossipsub_authenticity(tuning, key),
                gossip_config,
                gossipsub::WhitelistSubscriptionFilter([topic.hash()].into_iter().collect()),
                CatalogOnly::new(topic.hash(), off_topic),
            )
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
            let (score_params, thresholds) = peer_score_params(&topic);
            gossipsub
                .with_peer_score(score_params, thresholds)
                .map_err(|e| anyhow::anyhow!("gossipsub peer scoring: {e}"))?;
            let kad = config.dht_server.then(|| {
                let mut kad_config = kad::Config::new(protocols.kad.clone());
                // Refreshing the routing table every few minutes is plenty for a mesh of
                // domains; each refresh queries (and connects to) dozens of servers.
                kad_config.set_periodic_bootstrap_interval(Some(KAD_REFRESH));
                // Kademlia routes to peers here and stores nothing: the node never puts or
                // looks up records, and a member's PUT_VALUE or ADD_PROVIDER would otherwise be
                // kept (unsigned, unverified, outside the catalog quota) for 48 hours, served
                // to others and replicated every hour. Inbound records come to the actor as
                // events, which drops them; with nothing stored nothing is republished.
                kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
                kad_config.set_replication_interval(None);
                kad_config.set_publication_interval(None);
                kad_config.set_provider_publication_interval(None);
                let mut kad = kad::Behaviour::with_config(
                    peer_id,
                    kad::store::MemoryStore::new(peer_id),
                    kad_config,
                );
                kad.set_mode(Some(kad::Mode::Server));
                kad
            });
            let identify = identify::Behaviour::new(
                identify::Config::new(protocols.identify.clone(), key.public())
                    .with_push_listen_addr_updates(true)
                    // With announced addresses, only those (the swarm's external addresses)
                    // are told to peers.
                    .with_hide_listen_addrs(!tuning.announce_addrs.is_empty()),
            );
            let rr_config = request_response::Config::default()
                .with_request_timeout(Duration::from_secs(30))
                .with_max_concurrent_streams(MAX_STREAMS_PER_PEER);
            let sync = request_response::Behaviour::with_codec(
                BytesCodec::new(wire::MAX_SYNC_REQUEST, wire::MAX_SYNC_RESPONSE),
                [(
                    protocols.sync.clone(),
                    request_response::ProtocolSupport::Full,
                )],
                rr_config.clone(),
            );
            let contract = request_response::Behaviour::with_codec(
                BytesCodec::new(MAX_CONTRACT_MESSAGE, MAX_CONTRACT_MESSAGE),
                [(
                    protocols.contract.clone(),
                    request_response::ProtocolSupport::Full,
                )],
                rr_config.clone(),
            );
            let join = request_response::Behaviour::with_codec(
                BytesCodec::new(MAX_JOIN_REQUEST, MAX_JOIN_REPLY),
                [(
                    protocols.join.clone(),
                    request_response::ProtocolSupport::Inbound,
                )],
                rr_config,
            );
            let limits = connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(config.max_connections))
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER)),
            );
            Ok(Behaviour {
                gate: allow_block_list::Behaviour::default(),
                limits,
                gossipsub,
                kad: kad.map(WhenWoken).into(),
                identify: identify.into(),
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)).into(),
                sync: sync.into(),
                contract: contract.into(),
                join: join.into(),
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(tuning.idle_timeout))
        .build();
    let mut swarm = swarm;
    for addr in &tuning.announce_addrs {
        swarm.add_external_address(addr.clone());
    }
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use gossipsub::DataTransform;

    use super::*;

    fn message(topic: &str) -> gossipsub::RawMessage {
        gossipsub::RawMessage {
            source: None,
            data: b"payload".to_vec(),
            sequence_number: None,
            topic: gossipsub::IdentTopic::new(topic).hash(),
            signature: None,
            key: None,
            validated: false,
        }
    }

    #[test]
    fn only_catalog_messages_pass_the_inbound_transform_and_the_rest_are_counted() {
        let catalog = gossipsub::IdentTopic::new("meshnode/catalog/abc");
        let refused = prometheus_client::metrics::counter::Counter::<u64>::default();
        let transform = CatalogOnly::new(catalog.hash(), refused.clone());

        let taken = transform
            .inbound_transform(message("meshnode/catalog/abc"))
            .expect("the catalog topic passes");
        assert_eq!(taken.data, b"payload");
        assert_eq!(taken.topic, catalog.hash());
        assert_eq!(refused.get(), 0);

        for topic in ["x", "meshnode/catalog/abd", ""] {
            assert!(
                transform.inbound_transform(message(topic)).is_err(),
                "{topic}"
            );
        }
        assert_eq!(refused.get(), 3);
        // What the node publishes is untouched.
        assert_eq!(
            transform
                .outbound_transform(&catalog.hash(), b"out".to_vec())
                .unwrap(),
            b"out"
        );
    }
}
