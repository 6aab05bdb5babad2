//! JSON shapes of the control API, shared by the daemon and the CLI.

use std::collections::BTreeMap;

use mesh_protocol::ProductDescriptor;
use mesh_protocol::descriptor::ColumnSchema;
use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// Domain name.
    pub domain: String,
    /// Node key, hex.
    pub public_key: String,
    /// Key fingerprint.
    pub fingerprint: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// Control-plane addresses, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
    /// Data-plane address.
    pub data_addr: Option<String>,
    /// Control API address.
    pub api_addr: String,
    /// Connected peers.
    pub peers: usize,
    /// Entries in the catalog replica (local and remote).
    pub catalog_size: usize,
    /// Gossip and sync messages rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
}

/// One column in JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ColumnView {
    /// Column name.
    pub name: String,
    /// Arrow type.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Nullability.
    pub nullable: bool,
}

impl From<&ColumnSchema> for ColumnView {
    fn from(c: &ColumnSchema) -> Self {
        Self {
            name: c.name.clone(),
            data_type: c.data_type.clone(),
            nullable: c.nullable,
        }
    }
}

/// One catalog entry in JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProductView {
    /// `domain/name`, or `domain@fingerprint/name` when the domain name is ambiguous.
    pub product: String,
    /// Owner domain.
    pub domain: String,
    /// Product name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Row count.
    pub rows: u64,
    /// Arrow file size.
    pub bytes: u64,
    /// Owner key, hex.
    pub owner: String,
    /// Owner key fingerprint.
    pub fingerprint: String,
    /// Whether this node owns the product.
    pub local: bool,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Schema.
    pub schema: Vec<ColumnView>,
    /// Restricted columns.
    pub restricted: Vec<String>,
    /// `auto` or `manual`.
    pub approval: String,
    /// Allowed purposes (empty: any).
    pub purposes: Vec<String>,
    /// Longest contract in days.
    pub max_contract_days: u32,
    /// `active`, `deprecated` or `retired`.
    pub status: String,
    /// BLAKE3 of the Arrow file, hex.
    pub digest: String,
    /// Publication time, ms since the epoch.
    pub published_at_ms: u64,
    /// Update frequency promised.
    pub update_frequency: String,
    /// Freshness promised, hours.
    pub freshness_hours: u32,
    /// Availability target, basis points.
    pub availability_bp: u32,
    /// Lineage inputs, `domain/product@version`.
    pub lineage: Vec<String>,
    /// Data-plane address of the owner.
    pub data_addr: Option<String>,
}

impl ProductView {
    /// Builds the view; `ambiguous` adds the key fingerprint to the product name.
    pub fn new(d: &ProductDescriptor, local: bool, ambiguous: bool) -> Self {
        let fingerprint = d.owner.fingerprint();
        let product = if ambiguous {
            format!("{}@{}/{}", d.domain, fingerprint, d.name)
        } else {
            d.display_name()
        };
        Self {
            product,
            domain: d.domain.clone(),
            name: d.name.clone(),
            version: d.version,
            rows: d.rows,
            bytes: d.bytes,
            owner: d.owner.to_hex(),
            fingerprint,
            local,
            title: d.title.clone(),
            description: d.description.clone(),
            tags: d.tags.clone(),
            schema: d.schema.iter().map(ColumnView::from).collect(),
            restricted: d.policy.restricted_columns.clone(),
            approval: d.policy.approval.to_string(),
            purposes: d.policy.allowed_purposes.clone(),
            max_contract_days: d.policy.max_contract_days,
            status: d.status.to_string(),
            digest: d.digest.to_hex(),
            published_at_ms: d.published_at_ms,
            update_frequency: d.sla.update_frequency.clone(),
            freshness_hours: d.sla.freshness_hours,
            availability_bp: d.sla.availability_bp,
            lineage: d
                .lineage
                .iter()
                .map(|l| format!("{}/{}@{}", l.domain, l.product, l.version))
                .collect(),
            data_addr: d.data_addr.clone(),
        }
    }
}

/// `POST /v1/publish`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PublishRequest {
    /// Product name.
    pub name: String,
    /// Absolute path of the input file (read by the daemon).
    pub from: String,
    /// Title (defaults to the name).
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `auto` or `manual`.
    pub approval: Option<String>,
    /// Allowed purposes.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// Restricted columns.
    #[serde(default)]
    pub restricted: Vec<String>,
    /// Longest contract in days.
    pub max_days: Option<u32>,
    /// Lineage inputs, `domain/product@version`.
    #[serde(default)]
    pub lineage: Vec<String>,
}

/// One connected or known peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerView {
    /// libp2p peer id.
    pub peer_id: String,
    /// Domain, from its signed node record.
    pub domain: Option<String>,
    /// Known addresses.
    pub addresses: Vec<String>,
    /// Connected since, ms since the epoch.
    pub connected_since_ms: u64,
    /// Last ping round-trip time.
    pub rtt_ms: Option<f64>,
}

/// Error body of every failed API call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorView {
    /// One sentence: what is wrong and what to do.
    pub error: String,
}

/// `POST /v1/fetch`: fetch a product over the data plane into a local Arrow IPC file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchRequestBody {
    /// `domain/product` or `domain@fingerprint/product`.
    pub product: String,
    /// Absolute output path (written by the daemon).
    pub out: String,
    /// Agreement id or id prefix; default: the usable agreement for the product.
    #[serde(default)]
    pub agreement: Option<String>,
    /// Version; default: the latest the agreement covers.
    #[serde(default)]
    pub version: Option<u64>,
    /// IPC compression: `none`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: mesh_protocol::Compression,
}
