//! JSON shapes of the control API, shared by the daemon and the CLI.

use std::collections::BTreeMap;

use mesh_protocol::ProductDescriptor;
use mesh_protocol::contract::{AgreementId, ContractState, ContractTerms};
use mesh_protocol::descriptor::ColumnSchema;
use serde::{Deserialize, Serialize};

use crate::agreements::{AgreementRecord, ListCursor, Role};

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
    /// Address of the local Arrow Flight / Flight SQL endpoint (`host:port`), if it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight_addr: Option<String>,
    /// Connected peers.
    pub peers: usize,
    /// Entries in the catalog replica (local and remote).
    pub catalog_size: usize,
    /// Bytes of those entries.
    #[serde(default)]
    pub catalog_bytes: u64,
    /// The most bytes of descriptors the catalog keeps (`max_catalog_mib`).
    #[serde(default)]
    pub catalog_max_bytes: u64,
    /// The keys holding the most of those bytes, most first (at most five): who a full
    /// catalog takes room from, and whose descriptors it refuses.
    #[serde(default)]
    pub catalog_largest_holders: Vec<HolderView>,
    /// Gossip and sync messages rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Mesh id (first 16 hex digits).
    #[serde(default)]
    pub mesh_id: String,
    /// Mesh name.
    #[serde(default)]
    pub mesh: String,
    /// Number of members.
    #[serde(default)]
    pub members: usize,
    /// Governance votes held (admissions, removals, amendments): bounded by the members, see
    /// `mesh_protocol::governance::MAX_ADMITTERS`.
    #[serde(default)]
    pub governance_votes: usize,
    /// Whether this node is a member (false: removed, or its admission waits for a quorum).
    #[serde(default)]
    pub member: bool,
    /// Version of the mesh policies in force.
    #[serde(default)]
    pub policy_version: u32,
    /// This node's products that break the policies in force.
    #[serde(default)]
    pub non_compliant_products: Vec<String>,
    /// Connections refused because the key is not a member (control and data plane).
    #[serde(default)]
    pub refused_non_members: u64,
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

/// A key's bytes in the catalog, in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderView {
    /// The member's domain, if it is a member.
    pub domain: Option<String>,
    /// Key fingerprint.
    pub fingerprint: String,
    /// Bytes of its descriptors.
    pub bytes: u64,
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
    /// How to reach the owning team.
    #[serde(default)]
    pub contact: String,
    /// Classification tags by column (`pii`, `financial`).
    #[serde(default)]
    pub column_tags: BTreeMap<String, Vec<String>>,
    /// Whether the product keeps the mesh's policies in force (a product published under
    /// older policies may not): a non-compliant product cannot be negotiated.
    #[serde(default = "yes")]
    pub compliant: bool,
    /// The rules it breaks, with what to change.
    #[serde(default)]
    pub violations: Vec<ViolationView>,
}

fn yes() -> bool {
    true
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
            contact: d.stewardship.contact.clone(),
            column_tags: d
                .stewardship
                .column_tags
                .iter()
                .map(|c| (c.column.clone(), c.tags.clone()))
                .collect(),
            compliant: true,
            violations: Vec::new(),
        }
    }

    /// Marks the view with the rules the product breaks under `policies`.
    pub fn with_compliance(
        mut self,
        policies: &mesh_protocol::governance::Policies,
        d: &ProductDescriptor,
    ) -> Self {
        self.violations = policies
            .check_product(d)
            .into_iter()
            .map(ViolationView::from)
            .collect();
        self.compliant = self.violations.is_empty();
        self
    }
}

impl From<mesh_protocol::governance::Violation> for ViolationView {
    fn from(v: mesh_protocol::governance::Violation) -> Self {
        Self {
            rule: v.rule,
            problem: v.problem,
            fix: v.fix,
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
    /// Columns to restrict, besides those restricted already: a restriction stays, from
    /// version to version and whether or not the column is in the schema, until lifted.
    #[serde(default)]
    pub restricted: Vec<String>,
    /// Restricted columns to lift: from this version on they are shared like any other
    /// column (every version, under agreements for all columns).
    #[serde(default)]
    pub unrestrict: Vec<String>,
    /// What the caller sees at `from` (device and inode): the daemon refuses to read
    /// another file there (`sameview`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_file: Option<FileIdentity>,
    /// Longest contract in days.
    pub max_days: Option<u32>,
    /// Lineage inputs, `domain/product@version`.
    #[serde(default)]
    pub lineage: Vec<String>,
    /// CSV field values to read as null in every column (none by default, so empty strings
    /// and `NA`-like text stay text).
    #[serde(default)]
    pub null_values: Vec<String>,
    /// How to reach the owning team (kept from the previous version when absent).
    #[serde(default)]
    pub contact: Option<String>,
    /// Column classification, `column=tag` (repeatable; replaces the previous version's
    /// classification when any is given).
    #[serde(default)]
    pub classify: Vec<String>,
    /// Freshness promise in hours (kept from the previous version, or the node default).
    #[serde(default)]
    pub freshness_hours: Option<u32>,
    /// Id under which the ingest's progress is reported at `GET /v1/progress/{id}`
    /// (`[A-Za-z0-9_-]`, at most 64 characters), chosen by the caller.
    #[serde(default)]
    pub progress: Option<String>,
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
    /// Its gossipsub score as this node sees it: negative after it sent messages our
    /// validation rejects (below zero it is pruned from the mesh, below -80 ignored).
    #[serde(default)]
    pub gossip_score: Option<f64>,
    /// The gossip topics the node keeps for the peer's subscriptions: only the mesh's
    /// catalog topic is kept, whatever the peer subscribes to.
    #[serde(default)]
    pub gossip_topics: usize,
}

/// Error body of every failed API call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorView {
    /// One sentence: what is wrong and what to do.
    pub error: String,
    /// Machine-readable kind of the failure (`not_found`, `refused`, `verification`, ...):
    /// tells apart failures that share an HTTP status, for the CLI's exit codes. Absent in
    /// answers of older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `POST /v1/share/request`: what the consumer's operator asks for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShareRequest {
    /// `domain/product` or `domain@fingerprint/product`.
    pub product: String,
    /// Why the data is needed; checked against the provider's allowed purposes.
    pub purpose: String,
    /// Columns wanted; `None` asks for every shareable column of the version seen now, listed
    /// in the terms (columns added later are not covered). `["*"]` is the same as
    /// `all_columns_including_future`.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Ask for every current and future non-restricted column (`--columns '*'`): the
    /// agreement then grows with the product, and the approver sees that it does.
    #[serde(default)]
    pub all_columns_including_future: bool,
    /// Row filter, e.g. `region = 'EU' AND amount > 10`.
    #[serde(default)]
    pub filter: Option<String>,
    /// Validity in days (default: 30, or less when the product allows less).
    #[serde(default)]
    pub days: Option<u32>,
    /// Validity in seconds, for contracts shorter than a day; exclusive with `days`.
    #[serde(default)]
    pub valid_for_secs: Option<u64>,
}

/// `POST /v1/share/{id}/reject` and `/revoke`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReasonRequest {
    /// Why, for the other party (required to reject, optional to revoke).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Contracts `GET /v1/share` and `meshnode share list` show unless told otherwise.
pub const DEFAULT_SHARE_PAGE: usize = 1000;
/// Most contracts a page of `GET /v1/share` may be asked for.
pub const MAX_SHARE_PAGE: usize = 10_000;
/// Most stored bytes of contract records a page holds, whatever its limit: 8 MiB, about 100
/// records of the largest terms (a purpose of 64 KB), 50 once co-signed, so the answer and
/// what is read to build it stay small however big the contracts are. A page holds at least
/// one.
pub const MAX_SHARE_PAGE_BYTES: usize = 8 << 20;
/// Header of `GET /v1/share`: contracts the query admits that are not on the page.
pub const SHARE_MORE_HEADER: &str = "x-meshnode-more";
/// Header of `GET /v1/share`: the `before` that asks for the next page, when there is one.
pub const SHARE_NEXT_BEFORE_HEADER: &str = "x-meshnode-next-before";

/// What `GET /v1/share` and `GET /v1/share/page` are asked for: the newest contracts (after
/// `before`), of one role or in one state if asked, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareQuery {
    /// Contracts of the page, at most ([`DEFAULT_SHARE_PAGE`] when absent, up to
    /// [`MAX_SHARE_PAGE`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only contracts after this position: the `next_before` of the newer page, or a time
    /// (contracts created before it).
    #[serde(default)]
    pub before: Option<ListCursor>,
    /// Only this node's side.
    #[serde(default)]
    pub role: Option<Role>,
    /// Only contracts in this state now.
    #[serde(default)]
    pub state: Option<ContractState>,
}

impl ShareQuery {
    /// The page's limit, checked.
    pub fn page_limit(&self) -> Result<usize, String> {
        match self.limit {
            None => Ok(DEFAULT_SHARE_PAGE),
            Some(n) if (1..=MAX_SHARE_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(format!(
                "a page of contracts holds 1 to {MAX_SHARE_PAGE} of them, not {n}"
            )),
        }
    }

    /// The query string of `GET /v1/share` for this query (with its `?`, empty when all is
    /// default).
    pub fn to_query_string(&self) -> String {
        let mut parts = Vec::new();
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        if let Some(before) = &self.before {
            parts.push(format!("before={before}"));
        }
        if let Some(role) = self.role {
            parts.push(format!("role={}", role.as_str()));
        }
        if let Some(state) = self.state {
            parts.push(format!("state={}", state.as_str()));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// A page of contracts with where the next one starts (`GET /v1/share/page`; `GET
/// /v1/share` answers with `contracts` alone, and the rest in headers).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SharePage {
    /// The newest contracts the query admits, newest first.
    pub contracts: Vec<AgreementView>,
    /// Contracts the query admits that are not on this page (all older).
    pub more: u64,
    /// The `before` that asks for the next page; `None` when this page is the last.
    pub next_before: Option<ListCursor>,
}

/// One sharing contract as this node holds it (`GET /v1/share/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementView {
    /// Agreement id, 64 hex digits.
    pub id: String,
    /// The first 12 hex digits, for people.
    pub short_id: String,
    /// The product, `domain/name`.
    pub product: String,
    /// Provider domain (a label).
    pub provider: String,
    /// Consumer domain (a label).
    pub consumer: String,
    /// Provider key, hex.
    pub provider_key: String,
    /// Consumer key, hex.
    pub consumer_key: String,
    /// This node's side of the contract.
    pub role: Role,
    /// State now (an agreed contract past its end shows as expired).
    pub state: ContractState,
    /// Stated purpose.
    pub purpose: String,
    /// Columns the terms pin; `None` when they grant every current and future
    /// non-restricted column (`all_future_columns`).
    pub columns: Option<Vec<String>>,
    /// True when the terms grant every current and future non-restricted column (`*`):
    /// new columns of later versions are included without a new agreement.
    pub all_future_columns: bool,
    /// Columns granted from the latest version in this node's catalog, in schema order
    /// (restricted ones never), when the product is known.
    pub granted_columns: Option<Vec<String>>,
    /// Row filter in canonical form.
    pub filter: Option<String>,
    /// Versions covered, `3..` or `3..=5`.
    pub version_range: String,
    /// Lowest version covered.
    pub min_version: u64,
    /// Highest version covered, if bounded.
    pub max_version: Option<u64>,
    /// When the consumer made the request (start of validity), ms since the epoch.
    pub created_at_ms: u64,
    /// End of validity, ms since the epoch.
    pub expires_at_ms: u64,
    /// End of validity, RFC 3339 (UTC).
    pub expires_at: String,
    /// Last change of the stored record, ms since the epoch.
    pub updated_at_ms: u64,
    /// The provider's rejection reason or the revocation reason.
    pub reason: Option<String>,
    /// Who revoked: `provider` or `consumer`.
    pub revoked_by: Option<Role>,
}

impl AgreementView {
    /// Builds the view of a stored record; `descriptor` (from the catalog, when known)
    /// resolves the granted columns.
    pub fn new(
        id: &AgreementId,
        record: &AgreementRecord,
        terms: &ContractTerms,
        descriptor: Option<&ProductDescriptor>,
        now_ms: u64,
    ) -> Self {
        let reason = match (&record.rejection, &record.revocation) {
            (_, Some(revocation)) => revocation.decode_trusted().ok().map(|r| r.reason),
            (Some(rejection), None) => rejection.decode_trusted().ok().map(|r| r.reason),
            (None, None) => None,
        };
        let revoked_by = record.revocation.as_ref().map(|r| {
            if r.signer() == terms.provider {
                Role::Provider
            } else {
                Role::Consumer
            }
        });
        let version_range = match terms.max_version {
            Some(max) => format!("{}..={max}", terms.min_version),
            None => format!("{}..", terms.min_version),
        };
        Self {
            id: id.to_hex(),
            short_id: id.short(),
            product: format!("{}/{}", terms.provider_domain, terms.product.name),
            provider: terms.provider_domain.clone(),
            consumer: terms.consumer_domain.clone(),
            provider_key: terms.provider.to_hex(),
            consumer_key: terms.consumer.to_hex(),
            role: record.role,
            state: record.state_at(now_ms),
            purpose: terms.purpose.clone(),
            columns: terms.columns.listed().map(<[String]>::to_vec),
            all_future_columns: terms.columns == mesh_protocol::Columns::AllCurrentAndFuture,
            granted_columns: descriptor
                .map(|d| terms.granted_columns(&d.schema, &d.policy.restricted_columns)),
            filter: terms.filter.clone(),
            version_range,
            min_version: terms.min_version,
            max_version: terms.max_version,
            created_at_ms: terms.valid_from_ms,
            expires_at_ms: terms.valid_until_ms,
            expires_at: rfc3339(terms.valid_until_ms),
            updated_at_ms: record.updated_ms,
            reason,
            revoked_by,
        }
    }

    /// The other party's domain.
    pub fn counterparty(&self) -> &str {
        match self.role {
            Role::Provider => &self.consumer,
            Role::Consumer => &self.provider,
        }
    }
}

/// One audit log entry (`GET /v1/audit`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntryView {
    /// Position in the log, from 0.
    pub seq: u64,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// When, RFC 3339 (UTC).
    pub at: String,
    /// What happened: `publish`, `request`, `agreement`, `rejection`, `revocation`, ...
    pub kind: String,
    /// Details (product, agreement id, parties, ...).
    pub detail: serde_json::Value,
}

/// A page of the audit log and the result of the whole chain's check (`GET /v1/audit`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditView {
    /// The readable entries of the page asked for, the newest (before `before`), in order;
    /// none with `verify`.
    pub entries: Vec<AuditEntryView>,
    /// Sequence number of the first entry the store keeps: the ones before were archived
    /// (`meshnode audit --archive`); 0 when none were.
    #[serde(default)]
    pub first_seq: u64,
    /// Entries the store keeps, from `first_seq` on (on this page or not).
    #[serde(default)]
    pub held_entries: u64,
    /// The `before` that asks for the page of older entries; `None` when this page reaches
    /// the first entry the store keeps.
    #[serde(default)]
    pub next_before: Option<u64>,
    /// Whether the whole hash chain is intact.
    pub verified: bool,
    /// Entries of the whole chain (archived ones counted) before the first break (all of
    /// them when `verified`).
    pub intact_entries: u64,
    /// The first entry at which the chain breaks, if any.
    pub broken_entry: Option<u64>,
    /// What is wrong, naming the entry.
    pub error: Option<String>,
}

/// Body of `POST /v1/audit/archive`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchiveRequest {
    /// Entries to keep in the store, the newest (at least 1).
    pub keep: u64,
}

/// Answer of `POST /v1/audit/archive`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchiveView {
    /// What was moved to a file; `None` when the log held no more than `keep` entries.
    pub archived: Option<crate::store::Archived>,
}

/// `ms` since the Unix epoch as RFC 3339 in UTC, e.g. `2024-03-01T12:00:00.000Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `POST /v1/fetch`: fetch a product over the data plane into a local Arrow IPC file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchRequestBody {
    /// `domain/product` or `domain@fingerprint/product`.
    pub product: String,
    /// Absolute output path (written by the daemon); unused by `POST /v1/fetch/stream`.
    #[serde(default)]
    pub out: String,
    /// What the caller sees at the output's directory (device and inode): the daemon
    /// refuses to write into another one (`sameview`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_dir: Option<FileIdentity>,
    /// Agreement id or id prefix; default: the usable agreement for the product.
    #[serde(default)]
    pub agreement: Option<String>,
    /// Version; default: the latest the agreement covers.
    #[serde(default)]
    pub version: Option<u64>,
    /// IPC compression: `none`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: mesh_protocol::Compression,
    /// Replace a file that already exists at `out`.
    #[serde(default)]
    pub force: bool,
    /// What to write at `out`: `arrow` (IPC file, the default), `arrows` (IPC stream) or
    /// `parquet`; the received data is verified before it is converted.
    #[serde(default)]
    pub format: crate::dataplane::OutputFormat,
    /// Id under which the transfer's progress is reported at `GET /v1/progress/{id}`.
    #[serde(default)]
    pub progress: Option<String>,
    /// Fewer columns or rows than the agreement grants (`columns`, `filter`); absent for
    /// everything granted. The provider refuses what the agreement does not grant.
    #[serde(default)]
    pub narrowing: Option<mesh_protocol::Narrowing>,
    /// Connections to stripe a whole-product fetch over (1 to 8); default: the node's
    /// `data_link.connections`.
    #[serde(default)]
    pub connections: Option<u8>,
}

/// A file or directory as one process sees it: its device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

/// `POST /v1/sql`: a query over the products this node holds usable agreements for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SqlRequestBody {
    /// The SQL text (one `SELECT`; tables are products, quoted: `"sales/orders"`).
    pub query: String,
}

/// One table of `GET /v1/sql/tables`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SqlTableView {
    /// Name in SQL (quote it: `"sales/orders"`).
    pub name: String,
    /// Agreement the data is fetched under, hex.
    pub agreement: String,
    /// Version a query reads.
    pub version: u64,
    /// Granted columns: name and Arrow type.
    pub columns: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_107_542_399_000), "2100-02-28T23:59:59.000Z");
    }
}

/// A domain of the mesh.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberView {
    /// Domain name.
    pub domain: String,
    /// Node key, hex.
    pub public_key: String,
    /// Key fingerprint.
    pub fingerprint: String,
    /// Whether it is a governing domain.
    pub governor: bool,
}

/// One rule of the policies in force.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleView {
    /// Stable id, e.g. `restricted-tag:pii`.
    pub id: String,
    /// What it asks.
    pub explanation: String,
}

/// `GET /v1/mesh`: the charter, the members and the policies in force.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MeshView {
    /// Mesh id (full hex).
    pub mesh_id: String,
    /// Mesh name.
    pub name: String,
    /// Decision rule: signatures of governing domains needed to carry a motion.
    pub quorum: u16,
    /// Number of governing domains.
    pub governors: usize,
    /// `any-member` or `quorum`.
    pub admission: String,
    /// Current members.
    pub members: Vec<MemberView>,
    /// Removed keys, hex.
    pub removed: Vec<String>,
    /// Version of the policies in force.
    pub policy_version: u32,
    /// The policies in force, as rules.
    pub rules: Vec<RuleView>,
    /// The policies in force, as data (for `governance propose` to start from).
    pub policies: mesh_protocol::governance::Policies,
}

/// A motion and its signatures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MotionJson {
    /// Motion id (full hex).
    pub id: String,
    /// `admit`, `remove` or `amend`.
    pub kind: String,
    /// What it decides, in words.
    pub summary: String,
    /// The motion's action, as data.
    pub action: mesh_protocol::governance::Action,
    /// Proposer's domain (or fingerprint when unknown).
    pub proposer: String,
    /// Proposal time, RFC 3339.
    pub proposed_at: String,
    /// Domains (or fingerprints) that signed.
    pub signed_by: Vec<String>,
    /// Signatures needed.
    pub needed: usize,
    /// `governors` or `members`.
    pub eligible: String,
    /// Whether it is carried.
    pub carried: bool,
}

/// `POST /v1/governance/propose`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProposeRequest {
    /// Classification tags whose columns must be restricted, added to the policies.
    #[serde(default)]
    pub restrict_tags: Vec<String>,
    /// Restricted tags to drop.
    #[serde(default)]
    pub drop_restrict_tags: Vec<String>,
    /// Required fields to add (`contact`, `description`, `freshness-sla`, `tags`).
    #[serde(default)]
    pub require: Vec<String>,
    /// Required fields to drop.
    #[serde(default)]
    pub drop_require: Vec<String>,
    /// Longest contract in days (0 lifts the cap).
    #[serde(default)]
    pub max_contract_days: Option<u32>,
    /// The purpose vocabulary, replacing the current one (`Some(empty)` lifts it).
    #[serde(default)]
    pub purposes: Option<Vec<String>>,
    /// What changes and why.
    #[serde(default)]
    pub summary: String,
}

/// `POST /v1/mesh/remove`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveRequest {
    /// Domain name or key fingerprint (prefix) of the member.
    pub member: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/mesh/invite`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InviteRequest {
    /// Domain name the invitation is for.
    pub domain: String,
    /// Validity in seconds (default one day).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Invite under a domain name a member already carries (the domain moving to a new key,
    /// before its old key is removed). Otherwise such an invitation is refused.
    #[serde(default)]
    pub reuse_name: bool,
}

/// The answer to an invite: the ticket alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TicketView {
    /// The ticket to pass to `meshnode init --join` or `meshnode mesh join`.
    pub ticket: String,
}

/// A rule a product breaks under the policies in force.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ViolationView {
    /// Rule id.
    pub rule: String,
    /// What is wrong.
    pub problem: String,
    /// What to change.
    pub fix: String,
}
