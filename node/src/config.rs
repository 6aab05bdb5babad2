//! Node configuration (`<data-dir>/meshnode.toml`) and the layout of a data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Name of the config file inside a data directory.
pub const CONFIG_FILE: &str = "meshnode.toml";
/// Largest config file read: a config is a few KiB.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Settings of one node, as written by `meshnode init` and read by `meshnode run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Domain this node serves (`sales`, `customer`, ...): `[a-z0-9-]`.
    pub domain: String,
    /// Control-plane (libp2p QUIC) listen multiaddrs; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Multiaddrs of peers to join the mesh through (any node can serve).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Control API port on 127.0.0.1; 0 picks a free port written to `api.addr`.
    #[serde(default)]
    pub api_port: u16,
    /// Data-plane (quinn) listen address; port 0 picks a free port.
    #[serde(default = "default_data_listen")]
    pub data_listen: SocketAddr,
    /// Address of the local Arrow Flight / Flight SQL endpoint: loopback only (it takes
    /// the control API's token in plain gRPC); port 0 picks a free port, which
    /// `meshnode status --json` shows as `flight_addr`. A build without the `query` cargo
    /// feature starts no Flight endpoint and says so in one log line at start.
    #[serde(default = "default_flight_listen")]
    pub flight_listen: SocketAddr,
    /// Seconds between anti-entropy rounds with a random connected peer, 1 to 86,400. While
    /// rounds find nothing new, the peer policy leaves out more of them (see
    /// `PolicyConfig::quiet_rounds_skipped`).
    #[serde(default = "default_sync_interval")]
    pub sync_interval_secs: u64,
    /// Most concurrent transfers served to one peer.
    #[serde(default = "default_transfers_per_peer")]
    pub max_transfers_per_peer: u32,
    /// Most concurrent transfers served to all peers together, 1 to
    /// [`MAX_TRANSFERS_LIMIT`]; beyond, requests are refused as busy. Each transfer served
    /// holds a thread of the node's blocking pool (512 threads, shared with the store).
    #[serde(default = "default_max_transfers")]
    pub max_transfers: u32,
    /// New descriptor versions and node records one key may gossip through this node back to
    /// back; past them, one every `gossip_refill_ms`. What is over is neither stored nor
    /// forwarded (`rate_limited`): anti-entropy brings the newest version later.
    #[serde(default = "default_gossip_burst")]
    pub gossip_burst: u32,
    /// Milliseconds per gossip token of one key (see `gossip_burst`).
    #[serde(default = "default_gossip_refill_ms")]
    pub gossip_refill_ms: u64,
    /// Fetch requests one consumer may send back to back (a stripe of a fetch is one);
    /// beyond, they are refused as busy before the agreement is read.
    #[serde(default = "default_fetch_burst")]
    pub fetch_burst: u32,
    /// After the burst, one fetch request per this many milliseconds.
    #[serde(default = "default_fetch_refill_ms")]
    pub fetch_refill_ms: u64,
    /// Congestion controller of data-plane connections: `cubic` (default), `bbr` or
    /// `newreno`. BBR keeps long links with random loss (between clouds) fuller.
    #[serde(default)]
    pub congestion: crate::dataplane::tls::Congestion,
    /// The path between clouds the data plane's flow-control windows are sized for. One
    /// transfer moves at most about a window per round trip, and a peer can make the node
    /// hold about two windows per connection.
    #[serde(default)]
    pub data_link: DataLink,
    /// Most established control-plane connections (inbound and outbound together). Beyond
    /// it new connections are refused; Kademlia queries and gossip work with what is open.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Answer other nodes' Kademlia queries and appear in their routing tables (DHT server).
    /// `false` runs Kademlia as a client: the node still looks peers up but is never asked,
    /// for a node others cannot dial, or for all but a few nodes of a large mesh.
    #[serde(default = "default_true")]
    pub dht_server: bool,
    /// Clock difference tolerated with other nodes, in seconds, when checking a contract's
    /// validity window (not yet valid, expired): clocks of independent organisations drift.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_tolerance_secs: u64,
    /// MiB kept free on every disk this node writes product data to (`publish` ingesting
    /// its input, a fetch receiving a product): past it the write stops with an error that
    /// says so, before the disk fills and the node's own state can no longer be written.
    /// 0 turns the check off.
    #[serde(default = "default_disk_reserve")]
    pub disk_reserve_mib: u64,
    /// MiB of other domains' descriptors this node's catalog keeps, all keys together. Once
    /// full, a key may still grow to its fair share (this divided by the number of keys
    /// holding descriptors) by removing descriptors of the key holding the most; past its
    /// share it is refused (`over_budget`). This node's own products always stay.
    #[serde(default = "default_max_catalog_mib")]
    pub max_catalog_mib: u64,
    /// Audit entries the store keeps when it archives the start of the chain on its own:
    /// once it holds more than twice this, all but the newest this many move to a file under
    /// `<data-dir>/audit-archive/` (as `meshnode audit --archive` does). 0: only when asked.
    #[serde(default = "default_audit_keep_entries")]
    pub audit_keep_entries: u64,
    /// Defaults applied to `meshnode publish` when flags do not say otherwise.
    #[serde(default)]
    pub defaults: PublishDefaults,
    /// What one consumer may make this node store and do with contract requests, and how
    /// often this node polls its own undecided requests.
    #[serde(default)]
    pub contracts: ContractLimits,
}

/// Default of `clock_skew_tolerance_secs`: five minutes.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 300;

/// Per-consumer budgets for contract requests received (see `mesh_protocol::budget`), and
/// the poll interval of requests sent (see `mesh_protocol::contract_sync`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractLimits {
    /// Most undecided requests one consumer may have with this node.
    #[serde(default = "default_max_open_per_consumer")]
    pub max_open_requests_per_consumer: u32,
    /// Most undecided requests from all consumers together.
    #[serde(default = "default_max_open_total")]
    pub max_open_requests: u32,
    /// Most agreements in force (neither expired nor revoked) one consumer may hold with
    /// this node: automatic approval waits for no operator, so this bounds what one
    /// consumer adds to the store over time.
    #[serde(default = "default_max_live_per_consumer")]
    pub max_live_agreements_per_consumer: u32,
    /// Requests one consumer may send back to back.
    #[serde(default = "default_request_burst")]
    pub request_burst: u32,
    /// After the burst, one request per this many seconds.
    #[serde(default = "default_request_refill_secs")]
    pub request_refill_secs: u64,
    /// Days an undecided request waits for the operator before it expires (rejected).
    #[serde(default = "default_pending_ttl_days")]
    pub pending_request_ttl_days: u32,
    /// Contract messages of any kind (requests, status polls, revocations, notices) one peer
    /// may send back to back; beyond, they are answered `Busy` before they are read.
    #[serde(default = "default_message_burst")]
    pub message_burst: u32,
    /// After the burst, one message per this many milliseconds.
    #[serde(default = "default_message_refill_ms")]
    pub message_refill_ms: u64,
    /// Closed contracts (rejected, revoked or expired) of one consumer this node keeps the
    /// records of, as their provider; older ones are removed (the audit keeps them).
    #[serde(default = "default_max_closed_per_consumer")]
    pub max_closed_per_consumer: u32,
    /// Closed contracts of all consumers together this node keeps the records of.
    #[serde(default = "default_max_closed_records")]
    pub max_closed_records: u32,
    /// Seconds between this node's status polls of each request it sent that is still
    /// undecided. Polling is the fallback: a provider pushes its decision as soon as it is
    /// made, so a larger value only slows down learning a decision whose push was lost.
    #[serde(default = "default_status_poll_secs")]
    pub status_poll_secs: u64,
}

impl Default for ContractLimits {
    fn default() -> Self {
        Self {
            max_open_requests_per_consumer: default_max_open_per_consumer(),
            max_open_requests: default_max_open_total(),
            max_live_agreements_per_consumer: default_max_live_per_consumer(),
            request_burst: default_request_burst(),
            request_refill_secs: default_request_refill_secs(),
            pending_request_ttl_days: default_pending_ttl_days(),
            message_burst: default_message_burst(),
            message_refill_ms: default_message_refill_ms(),
            max_closed_per_consumer: default_max_closed_per_consumer(),
            max_closed_records: default_max_closed_records(),
            status_poll_secs: default_status_poll_secs(),
        }
    }
}

impl ContractLimits {
    /// The budget configuration these limits describe.
    pub fn budget(&self) -> mesh_protocol::budget::BudgetConfig {
        mesh_protocol::budget::BudgetConfig {
            max_open_per_consumer: self.max_open_requests_per_consumer,
            max_open_total: self.max_open_requests,
            max_live_per_consumer: self.max_live_agreements_per_consumer,
            burst: self.request_burst,
            refill_ms: self.request_refill_secs.saturating_mul(1000),
            pending_ttl_ms: u64::from(self.pending_request_ttl_days)
                .saturating_mul(mesh_protocol::contract::DAY_MS),
            message_burst: self.message_burst,
            message_refill_ms: self.message_refill_ms,
            ..Default::default()
        }
    }

    /// What this node keeps of closed contracts it provided.
    pub fn retention(&self) -> mesh_protocol::retention::ClosedRetention {
        mesh_protocol::retention::ClosedRetention {
            per_consumer: self.max_closed_per_consumer,
            total: self.max_closed_records,
        }
    }

    /// How often this node follows its contracts up.
    pub fn poll_intervals(&self) -> mesh_protocol::contract_sync::PollIntervals {
        mesh_protocol::contract_sync::PollIntervals {
            undecided: Duration::from_secs(self.status_poll_secs),
            ..Default::default()
        }
    }
}

fn default_clock_skew() -> u64 {
    DEFAULT_CLOCK_SKEW_SECS
}
fn default_disk_reserve() -> u64 {
    crate::diskroom::DEFAULT_RESERVE_MIB
}
fn default_max_open_per_consumer() -> u32 {
    mesh_protocol::budget::DEFAULT_MAX_OPEN_PER_CONSUMER
}
fn default_max_open_total() -> u32 {
    mesh_protocol::budget::DEFAULT_MAX_OPEN_TOTAL
}
fn default_max_live_per_consumer() -> u32 {
    mesh_protocol::budget::DEFAULT_MAX_LIVE_PER_CONSUMER
}
fn default_request_burst() -> u32 {
    mesh_protocol::budget::DEFAULT_BURST
}
fn default_request_refill_secs() -> u64 {
    mesh_protocol::budget::DEFAULT_REFILL_MS / 1000
}
fn default_message_burst() -> u32 {
    mesh_protocol::budget::DEFAULT_MESSAGE_BURST
}
fn default_message_refill_ms() -> u64 {
    mesh_protocol::budget::DEFAULT_MESSAGE_REFILL_MS
}
fn default_max_closed_per_consumer() -> u32 {
    mesh_protocol::retention::DEFAULT_CLOSED_PER_CONSUMER
}
fn default_max_closed_records() -> u32 {
    mesh_protocol::retention::DEFAULT_CLOSED_TOTAL
}
fn default_status_poll_secs() -> u64 {
    mesh_protocol::contract_sync::DEFAULT_UNDECIDED_POLL.as_secs()
}
fn default_pending_ttl_days() -> u32 {
    (mesh_protocol::budget::DEFAULT_PENDING_TTL_MS / mesh_protocol::contract::DAY_MS) as u32
}

/// Per-node defaults for new products.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishDefaults {
    /// Longest contract a product grants, in days.
    #[serde(default = "default_max_days")]
    pub max_contract_days: u32,
    /// Promised update frequency.
    #[serde(default = "default_frequency")]
    pub update_frequency: String,
    /// Promised freshness in hours.
    #[serde(default = "default_freshness")]
    pub freshness_hours: u32,
    /// Availability target in basis points.
    #[serde(default = "default_availability")]
    pub availability_bp: u32,
}

impl Default for PublishDefaults {
    fn default() -> Self {
        Self {
            max_contract_days: default_max_days(),
            update_frequency: default_frequency(),
            freshness_hours: default_freshness(),
            availability_bp: default_availability(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()]
}
fn default_data_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
fn default_flight_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
fn default_sync_interval() -> u64 {
    10
}
fn default_transfers_per_peer() -> u32 {
    4
}
/// Default of `max_transfers`.
pub const DEFAULT_MAX_TRANSFERS: u32 = 64;
/// Largest `max_transfers`: half the runtime's blocking pool (512 threads), which the store,
/// fetches and queries use too.
pub const MAX_TRANSFERS_LIMIT: u32 = 256;
fn default_max_transfers() -> u32 {
    DEFAULT_MAX_TRANSFERS
}
fn default_gossip_burst() -> u32 {
    mesh_protocol::budget::DEFAULT_GOSSIP_BURST
}
fn default_gossip_refill_ms() -> u64 {
    mesh_protocol::budget::DEFAULT_GOSSIP_REFILL_MS
}
fn default_fetch_burst() -> u32 {
    crate::dataplane::DEFAULT_FETCH_BURST
}
fn default_fetch_refill_ms() -> u64 {
    crate::dataplane::DEFAULT_FETCH_REFILL_MS
}
fn default_audit_keep_entries() -> u64 {
    mesh_protocol::audit::DEFAULT_AUTO_ARCHIVE_KEEP
}
fn default_max_catalog_mib() -> u64 {
    mesh_protocol::quota::DEFAULT_CATALOG_BYTES >> 20
}
fn default_max_connections() -> u32 {
    128
}
fn default_true() -> bool {
    true
}
fn default_max_days() -> u32 {
    365
}
fn default_frequency() -> String {
    "daily".into()
}
fn default_freshness() -> u32 {
    24
}
fn default_availability() -> u32 {
    9990
}

/// A config that failed to load or validate; the message names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, is not a regular file or is larger than
    /// [`MAX_CONFIG_FILE`].
    #[error("cannot read config `{path}`: {source}")]
    Read {
        /// Config path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: crate::localfile::LocalFileError,
    },
    /// The TOML is malformed, has unknown keys or a value of the wrong type. The parser's
    /// error is rendered into the fields (its own text repeats line and column around a
    /// multi-line excerpt of the file, which is not kept).
    #[error(
        "config `{path}` is not valid: line {line}, column {column}{}: {message} (fix it, or compare with configs/node-example.toml)",
        key.as_deref().map(|k| format!(", key `{k}`")).unwrap_or_default()
    )]
    Parse {
        /// Config path, so the operator knows which file to open.
        path: PathBuf,
        /// 1-based line of the fault, so the operator finds it.
        line: usize,
        /// 1-based column (in characters) of the fault within its line.
        column: usize,
        /// Dotted key at fault (`contracts.request_burst`) when one can be named.
        key: Option<String>,
        /// The parser's one-line message (`invalid type: string "x", expected u16`).
        message: String,
    },
    /// A value is out of range.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Offending key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// `[data_link]`: the longest, fastest path a transfer should fill (default: 500 Mbit/s at
/// 200 ms of round trip, a 12.5 MB bandwidth-delay product).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLink {
    /// Rate one transfer should reach, Mbit/s.
    pub mbit_s: u64,
    /// Round-trip time of the path, ms.
    pub rtt_ms: u64,
    /// Connections a fetch of a whole product is striped over (1 to 8, default 1). Between
    /// clouds, one connection is held back by its window and by every loss; several share
    /// that out. Each stripe counts as one of the provider's `max_transfers_per_peer`.
    #[serde(default = "default_connections")]
    pub connections: u8,
}

fn default_connections() -> u8 {
    1
}

impl DataLink {
    /// Largest bandwidth-delay product accepted: 256 MiB (a connection may then make the
    /// node hold about 640 MiB).
    const MAX_BDP: u64 = 256 * 1024 * 1024;

    /// The link the windows are sized for.
    pub fn link(self) -> crate::dataplane::tls::LongFatLink {
        crate::dataplane::tls::LongFatLink {
            bits_per_s: self.mbit_s.saturating_mul(1_000_000),
            rtt: std::time::Duration::from_millis(self.rtt_ms),
        }
    }

    fn validate(self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.mbit_s == 0 {
            return invalid("data_link.mbit_s", "must be at least 1".into());
        }
        if self.rtt_ms == 0 || self.rtt_ms > 10_000 {
            return invalid("data_link.rtt_ms", "must be between 1 and 10000".into());
        }
        if mesh_protocol::Stripe::new(self.connections, 0).is_none() {
            return invalid(
                "data_link.connections",
                format!(
                    "must be between 1 and {}",
                    mesh_protocol::transfer::MAX_STRIPES
                ),
            );
        }
        let bdp = self.link().bdp();
        if bdp > Self::MAX_BDP {
            return invalid(
                "data_link",
                format!(
                    "{} Mbit/s at {} ms is a {} MiB bandwidth-delay product, more than the 256 MiB \
                     a connection's window may be (each connection could make the node hold twice \
                     its window): lower mbit_s or rtt_ms",
                    self.mbit_s,
                    self.rtt_ms,
                    bdp / (1024 * 1024)
                ),
            );
        }
        Ok(())
    }
}

impl Default for DataLink {
    fn default() -> Self {
        let link = crate::dataplane::tls::DESIGN_LINK;
        Self {
            mbit_s: link.bits_per_s / 1_000_000,
            rtt_ms: u64::try_from(link.rtt.as_millis()).unwrap_or(u64::MAX),
            connections: default_connections(),
        }
    }
}

impl NodeConfig {
    /// A config with defaults for `domain`.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            listen: default_listen(),
            bootstrap: Vec::new(),
            api_port: 0,
            data_listen: default_data_listen(),
            flight_listen: default_flight_listen(),
            sync_interval_secs: default_sync_interval(),
            max_transfers_per_peer: default_transfers_per_peer(),
            max_transfers: default_max_transfers(),
            gossip_burst: default_gossip_burst(),
            gossip_refill_ms: default_gossip_refill_ms(),
            fetch_burst: default_fetch_burst(),
            fetch_refill_ms: default_fetch_refill_ms(),
            congestion: Default::default(),
            data_link: DataLink::default(),
            max_connections: default_max_connections(),
            dht_server: true,
            clock_skew_tolerance_secs: DEFAULT_CLOCK_SKEW_SECS,
            disk_reserve_mib: default_disk_reserve(),
            max_catalog_mib: default_max_catalog_mib(),
            audit_keep_entries: default_audit_keep_entries(),
            defaults: PublishDefaults::default(),
            contracts: ContractLimits::default(),
        }
    }

    /// The gossip bucket of each key (`gossip_burst`, `gossip_refill_ms`), one per member.
    pub fn gossip_rates(&self) -> mesh_protocol::budget::RateTable<mesh_protocol::PublicKey> {
        mesh_protocol::budget::RateTable::new(
            self.gossip_burst,
            self.gossip_refill_ms,
            mesh_protocol::governance::state::MAX_MEMBERS,
        )
    }

    /// When the node archives its audit chain on its own (`audit_keep_entries`).
    pub fn auto_archive(&self) -> mesh_protocol::audit::AutoArchive {
        mesh_protocol::audit::AutoArchive {
            keep: self.audit_keep_entries,
        }
    }

    /// The bound on the catalog's bytes (`max_catalog_mib`), for a node whose key is `own`.
    pub fn catalog_quota(
        &self,
        own: mesh_protocol::PublicKey,
    ) -> mesh_protocol::quota::CatalogQuota {
        mesh_protocol::quota::CatalogQuota {
            max_bytes: self.max_catalog_mib.saturating_mul(1 << 20),
            own,
        }
    }

    /// The disk space kept free (`disk_reserve_mib`).
    pub fn disk_reserve(&self) -> crate::diskroom::Reserve {
        crate::diskroom::Reserve::mib(self.disk_reserve_mib)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::localfile::read_to_string(path, MAX_CONFIG_FILE).map_err(|source| {
            ConfigError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values once at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        mesh_protocol::descriptor::validate_name("domain", &self.domain).map_err(|e| {
            ConfigError::Invalid {
                key: "domain",
                message: e.to_string(),
            }
        })?;
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid {
                key: "listen",
                message: "at least one listen multiaddr is needed".into(),
            });
        }
        for (key, addrs) in [("listen", &self.listen), ("bootstrap", &self.bootstrap)] {
            for addr in addrs {
                addr.parse::<libp2p::Multiaddr>()
                    .map_err(|e| ConfigError::Invalid {
                        key,
                        message: format!("`{addr}` is not a multiaddr ({e}); e.g. /ip4/127.0.0.1/udp/4001/quic-v1"),
                    })?;
            }
        }
        if self.sync_interval_secs == 0 || self.sync_interval_secs > 24 * 3600 {
            return Err(ConfigError::Invalid {
                key: "sync_interval_secs",
                message: "must be between 1 and 86400 (a day)".into(),
            });
        }
        if self.max_connections < 8 {
            return Err(ConfigError::Invalid {
                key: "max_connections",
                message: "must be at least 8: gossip alone keeps up to a dozen peers".into(),
            });
        }
        if !self.flight_listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "flight_listen",
                message: format!(
                    "{} is not a loopback address: the Flight endpoint takes the API token in plain gRPC and serves this host only (use 127.0.0.1:PORT)",
                    self.flight_listen
                ),
            });
        }
        for (key, value) in [
            (
                "max_transfers_per_peer",
                u64::from(self.max_transfers_per_peer),
            ),
            ("gossip_burst", u64::from(self.gossip_burst)),
            ("gossip_refill_ms", self.gossip_refill_ms),
            ("fetch_burst", u64::from(self.fetch_burst)),
            ("fetch_refill_ms", self.fetch_refill_ms),
            ("max_catalog_mib", self.max_catalog_mib),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        if self.max_transfers == 0 || self.max_transfers > MAX_TRANSFERS_LIMIT {
            return Err(ConfigError::Invalid {
                key: "max_transfers",
                message: format!(
                    "must be between 1 and {MAX_TRANSFERS_LIMIT}: each transfer served holds one of the node's 512 blocking threads"
                ),
            });
        }
        self.data_link.validate()?;
        if self.clock_skew_tolerance_secs > 24 * 3600 {
            return Err(ConfigError::Invalid {
                key: "clock_skew_tolerance_secs",
                message: "must be at most 86400 (a day): fix the clocks instead".into(),
            });
        }
        let c = &self.contracts;
        for (key, value) in [
            (
                "contracts.max_open_requests_per_consumer",
                u64::from(c.max_open_requests_per_consumer),
            ),
            (
                "contracts.max_open_requests",
                u64::from(c.max_open_requests),
            ),
            (
                "contracts.max_live_agreements_per_consumer",
                u64::from(c.max_live_agreements_per_consumer),
            ),
            ("contracts.request_burst", u64::from(c.request_burst)),
            ("contracts.request_refill_secs", c.request_refill_secs),
            (
                "contracts.pending_request_ttl_days",
                u64::from(c.pending_request_ttl_days),
            ),
            ("contracts.message_burst", u64::from(c.message_burst)),
            ("contracts.message_refill_ms", c.message_refill_ms),
            (
                "contracts.max_closed_per_consumer",
                u64::from(c.max_closed_per_consumer),
            ),
            (
                "contracts.max_closed_records",
                u64::from(c.max_closed_records),
            ),
            ("contracts.status_poll_secs", c.status_poll_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        if c.status_poll_secs > 24 * 3600 {
            return Err(ConfigError::Invalid {
                key: "contracts.status_poll_secs",
                message: "must be at most 86400 (a day): a decision whose notice was lost would wait that long".into(),
            });
        }
        Ok(())
    }

    /// Anti-entropy interval.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_secs(self.sync_interval_secs)
    }

    /// TOML text with a comment header, as `meshnode init` writes it.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("config serialises");
        format!(
            "# meshnode node configuration; see configs/node-example.toml for every key.\n{body}"
        )
    }
}

/// A [`ConfigError::Parse`] for `error` in `text`: the error's byte span becomes a line and
/// column, and the key is read from the file around it.
fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let start = error.span().map_or(0, |s| s.start).min(text.len());
    let (line, column) = line_column(text, start);
    let key = quoted_key(error.message()).or_else(|| key_at(text, start));
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        key,
        message: error.message().trim().to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The key the parser names in messages such as ``unknown field `x`, expected ...`` and
/// ``missing field `domain` ``.
fn quoted_key(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    Some(rest.split('`').next()?.to_owned())
}

/// The dotted key whose `key = value` line holds byte `offset` (or the nearest such line
/// above it, for a value spread over lines), prefixed with its `[table]`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_index = line_column(text, offset).0 - 1;
    let lines: Vec<&str> = text.lines().collect();
    let upto = line_index.min(lines.len().checked_sub(1)?);
    let mut key = None;
    let mut table = None;
    for line in lines[..=upto].iter().rev() {
        let line = line.trim();
        if line.starts_with('[') {
            let name = line.trim_start_matches('[').split(']').next()?.trim();
            table = Some(name.to_owned());
            break;
        }
        if key.is_none()
            && let Some((name, _)) = line.split_once('=')
        {
            let name = name.trim();
            let bare = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'));
            if bare && !line.starts_with('#') {
                key = Some(name.trim_matches('"').to_owned());
            }
        }
    }
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

/// Paths inside a data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    /// The directory itself.
    root: PathBuf,
}

impl DataDir {
    /// Wraps a path (not created here), made absolute against the current directory: every
    /// path derived from it stays right whatever the process's directory later is, and the
    /// paths the daemon hands its own writers (the SQL cache's files) must be absolute.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            root: std::path::absolute(&root).unwrap_or(root),
        }
    }
    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `meshnode.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    /// `identity.key`: the ed25519 secret, hex, mode 0600.
    pub fn identity(&self) -> PathBuf {
        self.root.join("identity.key")
    }
    /// `api.token`: bearer token for the control API, mode 0600.
    pub fn api_token(&self) -> PathBuf {
        self.root.join("api.token")
    }
    /// `api.addr`: the bound control API address, written at start-up.
    pub fn api_addr(&self) -> PathBuf {
        self.root.join("api.addr")
    }
    /// sled database.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    /// Published product data.
    pub fn products(&self) -> PathBuf {
        self.root.join("products")
    }
    /// Arrow file of one product version.
    pub fn product_file(&self, name: &str, version: u64) -> PathBuf {
        self.products().join(name).join(format!("{version}.arrow"))
    }
    /// Where publishes stage their Arrow file before it is renamed into place; emptied at
    /// start (what is there was left by a crash).
    pub fn staging(&self) -> PathBuf {
        self.products().join(".staging")
    }
    /// `audit.anchor`: the signed audit head, written after each flush, outside the database.
    pub fn audit_anchor(&self) -> PathBuf {
        self.root.join("audit.anchor")
    }
    /// `audit-archive/`: files of audit entries moved out of the store (`audit --archive`).
    pub fn audit_archive(&self) -> PathBuf {
        self.root.join("audit-archive")
    }
    /// Received data.
    pub fn received(&self) -> PathBuf {
        self.root.join("received")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_data_directory_is_made_absolute_once() {
        let dir = DataDir::new("nodes/churn");
        assert!(dir.root().is_absolute(), "{}", dir.root().display());
        assert_eq!(
            dir.root(),
            std::env::current_dir().unwrap().join("nodes/churn")
        );
        assert!(dir.received().is_absolute());
        let absolute = DataDir::new("/srv/meshnode");
        assert_eq!(absolute.root(), Path::new("/srv/meshnode"));
    }

    #[test]
    fn round_trip_and_validation() {
        let c = NodeConfig::new("sales");
        let text = c.to_toml();
        let parsed: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(parsed, c);
        let mut bad = c.clone();
        bad.bootstrap.push("not-an-addr".into());
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("bootstrap"), "{err}");
        let mut bad = c;
        bad.domain = "Sales Team".into();
        assert!(bad.validate().unwrap_err().to_string().contains("domain"));
    }

    #[test]
    fn parse_errors_name_file_line_column_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CONFIG_FILE);
        for (text, line, column, key) in [
            // A value of the wrong type: the span is the value.
            ("domain = \"a\"\napi_port = \"x\"\n", 2, 12, "api_port"),
            // An unknown key in a table.
            (
                "domain = \"a\"\n\n[contracts]\nrequest_burst = 3\nburst = 4\n",
                5,
                1,
                "burst",
            ),
            // A wrong type in a table: the key carries its table.
            (
                "domain = \"a\"\n[contracts]\nrequest_burst = -1\n",
                3,
                17,
                "contracts.request_burst",
            ),
            // Broken syntax; columns count characters, not bytes.
            ("domain = \"é\" x\n", 1, 14, "domain"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = NodeConfig::load(&path).unwrap_err();
            let ConfigError::Parse {
                line: l,
                column: c,
                key: k,
                ..
            } = &err
            else {
                panic!("not a parse error: {err}");
            };
            assert_eq!((*l, *c, k.as_deref()), (line, column, Some(key)), "{text}");
            let shown = err.to_string();
            assert!(
                shown.contains(&format!("line {line}, column {column}"))
                    && shown.contains(&format!("key `{key}`"))
                    && shown.contains(&path.display().to_string()),
                "{shown}"
            );
        }
    }

    #[test]
    fn flight_listen_is_loopback_only() {
        let c = NodeConfig::new("sales");
        assert_eq!(c.flight_listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        let parsed: NodeConfig =
            toml::from_str("domain = \"a\"\nflight_listen = \"127.0.0.1:50051\"\n").unwrap();
        assert_eq!(parsed.flight_listen.port(), 50051);
        parsed.validate().unwrap();
        let mut bad = c;
        bad.flight_listen = "0.0.0.0:50051".parse().unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("flight_listen") && err.contains("loopback"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = toml::from_str::<NodeConfig>("domain = \"a\"\nlisten_port = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn a_config_over_the_limit_is_refused_with_its_size_and_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CONFIG_FILE);
        // Valid TOML throughout: only the size is wrong.
        let mut text = NodeConfig::new("sales").to_toml();
        text.push_str(&"# padding\n".repeat(MAX_CONFIG_FILE as usize / 10 + 1));
        std::fs::write(&path, &text).unwrap();
        let err = NodeConfig::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        let shown = err.to_string();
        for part in [
            path.display().to_string(),
            text.len().to_string(),
            MAX_CONFIG_FILE.to_string(),
        ] {
            assert!(shown.contains(&part), "{part} in {shown}");
        }
    }

    #[test]
    fn a_config_nested_as_deep_as_its_size_allows_is_refused_where_it_is_too_deep() {
        // Within the size limit, arrays and inline tables nested hundreds of thousands deep:
        // the TOML parser's own recursion limit refuses them, on a test thread's small stack.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CONFIG_FILE);
        let depth = MAX_CONFIG_FILE as usize / 4;
        for (open, close) in [("[", "]"), ("{ a = ", " }")] {
            let mut text = NodeConfig::new("sales").to_toml();
            text.push_str(&format!(
                "\n[defaults]\ndeep = {}1{}\n",
                open.repeat(depth / open.len()),
                close.repeat(depth / open.len())
            ));
            text.truncate(MAX_CONFIG_FILE as usize);
            std::fs::write(&path, &text).unwrap();
            let shown = NodeConfig::load(&path).unwrap_err().to_string();
            assert!(
                shown.contains("recurs") && shown.contains(&path.display().to_string()),
                "{shown}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_in_place_of_the_config_is_refused_without_waiting_for_a_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CONFIG_FILE);
        crate::localfile::tests::make_fifo(&path);
        let shown = path.display().to_string();
        let err = crate::localfile::tests::without_blocking(move || NodeConfig::load(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&shown) && err.contains("FIFO"), "{err}");
    }
}

#[cfg(test)]
mod soak;

#[cfg(test)]
mod example_tests {
    /// A config from `text`, validated; the error as text.
    fn parse(text: &str) -> Result<super::NodeConfig, String> {
        let config = toml::from_str::<super::NodeConfig>(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/node-example.toml");
        let config = super::NodeConfig::load(std::path::Path::new(path)).unwrap();
        assert_eq!(config.domain, "sales");
    }

    #[test]
    fn an_anti_entropy_interval_beyond_a_day_is_refused() {
        let check = |secs: u64| {
            let mut config = super::NodeConfig::new("sales");
            config.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()];
            config.sync_interval_secs = secs;
            config.validate().map_err(|e| e.to_string())
        };
        assert!(check(86_400).is_ok());
        for secs in [0, 86_401, u64::MAX / 2] {
            let err = check(secs).unwrap_err();
            assert!(err.contains("sync_interval_secs"), "{err}");
        }
    }

    #[test]
    fn the_disk_reserve_and_the_message_budget_have_defaults_and_are_validated() {
        let default = parse("domain = \"sales\"").unwrap();
        assert_eq!(default.disk_reserve().bytes(), 256 << 20);
        let budget = default.contracts.budget();
        assert_eq!((budget.message_burst, budget.message_refill_ms), (64, 50));
        let set = parse(
            "domain = \"sales\"\ndisk_reserve_mib = 0\n[contracts]\nmessage_burst = 8\nmessage_refill_ms = 1000\n",
        )
        .unwrap();
        assert_eq!(set.disk_reserve().bytes(), 0);
        let budget = set.contracts.budget();
        assert_eq!((budget.message_burst, budget.message_refill_ms), (8, 1000));
        for key in ["message_burst", "message_refill_ms"] {
            let err = parse(&format!("domain = \"sales\"\n[contracts]\n{key} = 0\n")).unwrap_err();
            assert!(err.contains(&format!("contracts.{key}")), "{err}");
        }
    }

    #[test]
    fn the_fetch_rate_has_defaults_and_is_validated() {
        let rate =
            |c: &super::NodeConfig| crate::dataplane::DataPlaneConfig::from_node(c).fetch_rate;
        let default = parse("domain = \"sales\"").unwrap();
        assert_eq!(
            rate(&default),
            crate::dataplane::FetchRate {
                burst: 64,
                refill_ms: 100
            }
        );
        let set = parse("domain = \"sales\"\nfetch_burst = 2\nfetch_refill_ms = 5000\n").unwrap();
        assert_eq!(
            rate(&set),
            crate::dataplane::FetchRate {
                burst: 2,
                refill_ms: 5000
            }
        );
        for key in ["fetch_burst", "fetch_refill_ms"] {
            let err = parse(&format!("domain = \"sales\"\n{key} = 0\n")).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_transfers_served_in_all_have_a_default_and_are_validated() {
        let max =
            |c: &super::NodeConfig| crate::dataplane::DataPlaneConfig::from_node(c).max_transfers;
        let default = parse("domain = \"sales\"").unwrap();
        assert_eq!(max(&default), 64);
        let set = parse("domain = \"sales\"\nmax_transfers = 2\n").unwrap();
        assert_eq!(max(&set), 2);
        assert_eq!(
            max(&parse("domain = \"sales\"\nmax_transfers = 256\n").unwrap()),
            256
        );
        for value in [0, 257] {
            let err = parse(&format!("domain = \"sales\"\nmax_transfers = {value}\n")).unwrap_err();
            assert!(err.contains("max_transfers"), "{err}");
            assert!(err.contains("between 1 and 256"), "{err}");
        }
    }

    #[test]
    fn the_catalog_quota_has_a_default_and_is_validated() {
        let own = mesh_protocol::Identity::from_secret_bytes([3; 32]).public_key();
        let default = parse("domain = \"sales\"").unwrap();
        assert_eq!(default.catalog_quota(own).max_bytes, 1 << 30);
        assert_eq!(default.catalog_quota(own).own, own);
        let set = parse("domain = \"sales\"\nmax_catalog_mib = 3\n").unwrap();
        assert_eq!(set.catalog_quota(own).max_bytes, 3 << 20);
        let err = parse("domain = \"sales\"\nmax_catalog_mib = 0\n").unwrap_err();
        assert!(err.contains("max_catalog_mib"), "{err}");
    }

    #[test]
    fn the_audit_is_archived_on_its_own_by_default_and_can_be_left_to_the_operator() {
        let default = parse("domain = \"sales\"").unwrap();
        assert_eq!(default.auto_archive().keep, 100_000);
        let off = parse("domain = \"sales\"\naudit_keep_entries = 0\n").unwrap();
        assert_eq!(off.auto_archive().due(u64::MAX), None);
    }

    #[test]
    fn the_closed_records_kept_have_defaults_and_are_validated() {
        let default = parse("domain = \"sales\"").unwrap();
        assert_eq!(
            default.contracts.retention(),
            mesh_protocol::retention::ClosedRetention {
                per_consumer: 256,
                total: 16_384
            }
        );
        let set = parse(
            "domain = \"sales\"\n[contracts]\nmax_closed_per_consumer = 5\nmax_closed_records = 40\n",
        )
        .unwrap();
        assert_eq!(
            (
                set.contracts.retention().per_consumer,
                set.contracts.retention().total
            ),
            (5, 40)
        );
        for key in ["max_closed_per_consumer", "max_closed_records"] {
            let err = parse(&format!("domain = \"sales\"\n[contracts]\n{key} = 0\n")).unwrap_err();
            assert!(err.contains(&format!("contracts.{key}")), "{err}");
        }
    }

    #[test]
    fn the_live_agreements_per_consumer_are_bounded_and_validated() {
        let default = parse("domain = \"sales\"").unwrap();
        assert_eq!(default.contracts.max_live_agreements_per_consumer, 256);
        assert_eq!(default.contracts.budget().max_live_per_consumer, 256);
        let low = parse("domain = \"sales\"\n[contracts]\nmax_live_agreements_per_consumer = 3\n")
            .unwrap();
        assert_eq!(low.contracts.budget().max_live_per_consumer, 3);
        let err = parse("domain = \"sales\"\n[contracts]\nmax_live_agreements_per_consumer = 0\n")
            .unwrap_err();
        assert!(
            err.contains("contracts.max_live_agreements_per_consumer")
                && err.contains("at least 1"),
            "{err}"
        );
    }

    #[test]
    fn the_data_link_sizes_the_windows_within_bounds() {
        use crate::dataplane::tls::{DESIGN_LINK, Windows};
        let default = parse("domain = \"sales\"").unwrap();
        assert_eq!(default.data_link.link(), DESIGN_LINK);
        let fast = parse("domain = \"sales\"\n[data_link]\nmbit_s = 2000\nrtt_ms = 80\n").unwrap();
        let link = fast.data_link.link();
        assert_eq!(link.bdp(), 20_000_000);
        assert_eq!(Windows::fetching(link).stream_receive, 24 * 1024 * 1024);
        let data_plane = crate::dataplane::DataPlaneConfig::from_node(&fast);
        assert_eq!(data_plane.transport().link, link);
        assert_eq!(data_plane.connections, 1, "one connection unless asked");
        let striped =
            parse("domain = \"sales\"\n[data_link]\nmbit_s = 2000\nrtt_ms = 80\nconnections = 4\n")
                .unwrap();
        let data_plane = crate::dataplane::DataPlaneConfig::from_node(&striped);
        assert_eq!(data_plane.connections, 4);
        for connections in [0, 9, 255] {
            let err = parse(&format!(
                "domain = \"sales\"\n[data_link]\nmbit_s = 500\nrtt_ms = 80\nconnections = {connections}\n"
            ))
            .unwrap_err();
            assert!(
                err.contains("data_link.connections") && err.contains("between 1 and 8"),
                "{connections}: {err}"
            );
        }
        let err =
            parse("domain = \"sales\"\n[data_link]\nmbit_s = 100000\nrtt_ms = 200\n").unwrap_err();
        assert!(
            err.contains("data_link") && err.contains("256 MiB"),
            "{err}"
        );
        let err = parse("domain = \"sales\"\n[data_link]\nmbit_s = 0\nrtt_ms = 80\n").unwrap_err();
        assert!(err.contains("data_link.mbit_s"), "{err}");
        let err = parse("domain = \"sales\"\n[data_link]\nmbit_s = 500\n").unwrap_err();
        assert!(err.contains("rtt_ms"), "{err}");
        for rtt in [0, 10_001] {
            let err = parse(&format!(
                "domain = \"sales\"\n[data_link]\nmbit_s = 500\nrtt_ms = {rtt}\n"
            ))
            .unwrap_err();
            assert!(err.contains("data_link.rtt_ms"), "{rtt}: {err}");
        }
        // The largest rate does not overflow into a small window: it is refused.
        let err = parse(&format!(
            "domain = \"sales\"\n[data_link]\nmbit_s = {}\nrtt_ms = 1\n",
            u64::MAX
        ))
        .unwrap_err();
        assert!(err.contains("256 MiB"), "{err}");
        let err = parse("domain = \"sales\"\n[data_link]\nmbit_s = 500\nrtt_ms = 80\nloss = 1\n")
            .unwrap_err();
        assert!(err.contains("loss"), "{err}");
    }

    #[test]
    fn the_congestion_controller_is_chosen_by_name() {
        use crate::dataplane::tls::Congestion;
        let parse = |text: &str| toml::from_str::<super::NodeConfig>(text);
        assert_eq!(
            parse("domain = \"sales\"").unwrap().congestion,
            Congestion::Cubic
        );
        assert_eq!(
            parse("domain = \"sales\"\ncongestion = \"bbr\"")
                .unwrap()
                .congestion,
            Congestion::Bbr
        );
        let err = parse("domain = \"sales\"\ncongestion = \"reno\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("newreno") && err.contains("reno"), "{err}");
        assert_eq!("newreno".parse::<Congestion>(), Ok(Congestion::NewReno));
        assert!(
            "fast"
                .parse::<Congestion>()
                .unwrap_err()
                .contains("cubic, bbr or newreno")
        );
    }
}
