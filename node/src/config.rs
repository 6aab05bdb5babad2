//! Node configuration (`<data-dir>/meshnode.toml`) and the layout of a data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Name of the config file inside a data directory.
pub const CONFIG_FILE: &str = "meshnode.toml";

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
    /// Seconds between anti-entropy rounds with a random connected peer.
    #[serde(default = "default_sync_interval")]
    pub sync_interval_secs: u64,
    /// Most concurrent transfers served to one peer.
    #[serde(default = "default_transfers_per_peer")]
    pub max_transfers_per_peer: u32,
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
    /// Defaults applied to `meshnode publish` when flags do not say otherwise.
    #[serde(default)]
    pub defaults: PublishDefaults,
    /// What one consumer may make this node store and do with contract requests.
    #[serde(default)]
    pub contracts: ContractLimits,
}

/// Default of `clock_skew_tolerance_secs`: five minutes.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 300;

/// Per-consumer budgets for contract requests received (see `mesh_protocol::budget`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractLimits {
    /// Most undecided requests one consumer may have with this node.
    #[serde(default = "default_max_open_per_consumer")]
    pub max_open_requests_per_consumer: u32,
    /// Most undecided requests from all consumers together.
    #[serde(default = "default_max_open_total")]
    pub max_open_requests: u32,
    /// Requests one consumer may send back to back.
    #[serde(default = "default_request_burst")]
    pub request_burst: u32,
    /// After the burst, one request per this many seconds.
    #[serde(default = "default_request_refill_secs")]
    pub request_refill_secs: u64,
    /// Days an undecided request waits for the operator before it expires (rejected).
    #[serde(default = "default_pending_ttl_days")]
    pub pending_request_ttl_days: u32,
}

impl Default for ContractLimits {
    fn default() -> Self {
        Self {
            max_open_requests_per_consumer: default_max_open_per_consumer(),
            max_open_requests: default_max_open_total(),
            request_burst: default_request_burst(),
            request_refill_secs: default_request_refill_secs(),
            pending_request_ttl_days: default_pending_ttl_days(),
        }
    }
}

impl ContractLimits {
    /// The budget configuration these limits describe.
    pub fn budget(&self) -> mesh_protocol::budget::BudgetConfig {
        mesh_protocol::budget::BudgetConfig {
            max_open_per_consumer: self.max_open_requests_per_consumer,
            max_open_total: self.max_open_requests,
            burst: self.request_burst,
            refill_ms: self.request_refill_secs.saturating_mul(1000),
            pending_ttl_ms: u64::from(self.pending_request_ttl_days)
                .saturating_mul(mesh_protocol::contract::DAY_MS),
            ..Default::default()
        }
    }
}

fn default_clock_skew() -> u64 {
    DEFAULT_CLOCK_SKEW_SECS
}
fn default_max_open_per_consumer() -> u32 {
    mesh_protocol::budget::DEFAULT_MAX_OPEN_PER_CONSUMER
}
fn default_max_open_total() -> u32 {
    mesh_protocol::budget::DEFAULT_MAX_OPEN_TOTAL
}
fn default_request_burst() -> u32 {
    mesh_protocol::budget::DEFAULT_BURST
}
fn default_request_refill_secs() -> u64 {
    mesh_protocol::budget::DEFAULT_REFILL_MS / 1000
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
fn default_sync_interval() -> u64 {
    10
}
fn default_transfers_per_peer() -> u32 {
    4
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
    /// The file could not be read.
    #[error("cannot read config `{path}`: {source}")]
    Read {
        /// Config path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("config `{path}` is not valid: {message}")]
    Parse {
        /// Config path.
        path: PathBuf,
        /// Parser message, naming the key.
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

impl NodeConfig {
    /// A config with defaults for `domain`.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            listen: default_listen(),
            bootstrap: Vec::new(),
            api_port: 0,
            data_listen: default_data_listen(),
            sync_interval_secs: default_sync_interval(),
            max_transfers_per_peer: default_transfers_per_peer(),
            max_connections: default_max_connections(),
            dht_server: true,
            clock_skew_tolerance_secs: DEFAULT_CLOCK_SKEW_SECS,
            defaults: PublishDefaults::default(),
            contracts: ContractLimits::default(),
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
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
        if self.sync_interval_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "sync_interval_secs",
                message: "must be at least 1".into(),
            });
        }
        if self.max_connections < 8 {
            return Err(ConfigError::Invalid {
                key: "max_connections",
                message: "must be at least 8: gossip alone keeps up to a dozen peers".into(),
            });
        }
        if self.max_transfers_per_peer == 0 {
            return Err(ConfigError::Invalid {
                key: "max_transfers_per_peer",
                message: "must be at least 1".into(),
            });
        }
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
            ("contracts.request_burst", u64::from(c.request_burst)),
            ("contracts.request_refill_secs", c.request_refill_secs),
            (
                "contracts.pending_request_ttl_days",
                u64::from(c.pending_request_ttl_days),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
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

/// Paths inside a data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    /// The directory itself.
    root: PathBuf,
}

impl DataDir {
    /// Wraps a path (not created here).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
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
    /// Received data.
    pub fn received(&self) -> PathBuf {
        self.root.join("received")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unknown_key_is_named() {
        let err = toml::from_str::<NodeConfig>("domain = \"a\"\nlisten_port = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn shipped_example_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/node-example.toml");
        let config = super::NodeConfig::load(std::path::Path::new(path)).unwrap();
        assert_eq!(config.domain, "sales");
    }
}
