//! The node's state on disk: a sled database with one tree per kind of record.
//!
//! Envelopes are stored exactly as received (verified on the way in), so what a node
//! forwards is byte-identical to what its signer produced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mesh_protocol::audit::{self, AuditEntry, AuditHead, AuditKind, ChainError, ChainVerifier};
use mesh_protocol::{Identity, NodeRecord, ProductId, PublicKey, Signable, Signed};

/// Key of the one record in the `audit_head` tree.
const HEAD_KEY: &[u8] = b"head";

mod archive;
mod catalog;
pub use archive::{ArchiveError, Archived};

/// How often sled's background thread makes recent writes durable (sled's default is every
/// 500 ms). Every write a peer or a user is told about is flushed before the answer
/// ([`Store::flush`]); what only this flush covers can be had again after a crash (gossip and
/// anti-entropy bring back catalog entries and node records). The thread wakes, collects
/// garbage and fsyncs at every period whether or not anything was written, and each wake
/// walks every thread registered with sled's epoch-based reclamation: with a thousand stores
/// in one process (`bench-gossip --nodes 1000`), at 500 ms this was the largest item of the
/// publish waves' CPU.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How a [`Store`] is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Period of sled's background flush ([`FLUSH_EVERY`] by default). `None`: no background
    /// thread; writes become durable only through the explicit flushes before every answer
    /// and when sled's write buffer fills. For simulations that run hundreds of stores in one
    /// process, where each store's thread is walked by every other's epoch reclamation
    /// (docs/ARCHITECTURE.md); a deployed node has one store and keeps the default.
    pub flush_every: Option<std::time::Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            flush_every: Some(FLUSH_EVERY),
        }
    }
}

/// Tree names, as listed in the design.
mod trees {
    pub(super) const CATALOG: &str = "catalog";
    pub(super) const PRODUCTS: &str = "products";
    pub(super) const RESTRICTED: &str = "restricted";
    pub(super) const AGREEMENTS: &str = "agreements";
    pub(super) const PENDING: &str = "pending";
    pub(super) const REVOCATIONS: &str = "revocations";
    pub(super) const AUDIT: &str = "audit";
    pub(super) const PEERS: &str = "peers";
    pub(super) const AUDIT_HEAD: &str = "audit_head";
    pub(super) const AGREEMENT_INDEX: &str = "agreement_index";
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    /// The audit anchor could not be written.
    #[error("cannot write the audit anchor `{path}`: {source}")]
    Anchor {
        /// Anchor path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value no longer decodes: the database was altered or corrupted.
    #[error("stored record `{key}` in `{tree}` is corrupt: {reason}")]
    Corrupt {
        /// Tree name.
        tree: &'static str,
        /// Record key.
        key: String,
        /// Decoder message.
        reason: String,
    },
}

/// Handle to the sled database. Cheap to clone; sled is internally synchronised. The node
/// actor is the only writer of the catalog; the audit chain has several writers (the actor,
/// the data plane), serialised by `audit_lock`.
#[derive(Clone, Debug)]
pub struct Store {
    /// The database.
    db: sled::Db,
    /// Held while appending to the audit chain: an append reads the head, then links to it.
    audit_lock: std::sync::Arc<std::sync::Mutex<()>>,
    /// Held while archiving the start of the audit chain: one archive at a time (the
    /// operator's and the node's own), without holding back appends.
    archive_lock: std::sync::Arc<std::sync::Mutex<()>>,
    /// Signed descriptors by product storage key: `version (u64 BE) || envelope`.
    catalog: sled::Tree,
    /// Local products: name -> latest published version (u64 BE).
    products: sled::Tree,
    /// Local products: name -> the columns restricted in any version and not lifted since
    /// (a JSON list; see [`Store::restricted_columns`]).
    restricted: sled::Tree,
    /// Agreements by id.
    agreements: sled::Tree,
    /// Contract requests waiting for the operator, by id.
    pending: sled::Tree,
    /// Signed revocations by agreement id.
    revocations: sled::Tree,
    /// Indexes over `agreements` (by role and state, by consumer, by nonce), written in the
    /// same transaction as the record: the hot paths look records up instead of scanning.
    agreement_index: sled::Tree,
    /// Audit log: seq (u64 BE) -> encoded [`AuditEntry`].
    audit: sled::Tree,
    /// Signed node records by key hex: `issued_at (u64 BE) || envelope`.
    peers: sled::Tree,
    /// The signed head of the audit chain (one key).
    audit_head: sled::Tree,
    /// Key that signs audit heads; set by the daemon, absent in tools that only read.
    signer: Option<std::sync::Arc<Identity>>,
    /// The audit head anchored outside the database (`<data-dir>/audit.anchor`), rewritten
    /// after each flush that made new entries durable: a database rolled back or emptied by
    /// a damaged file is then found at start and by `audit --verify`. Set by the daemon.
    anchor: Option<Arc<AuditAnchor>>,
    /// Anti-entropy digests, kept up to date by every write: every sync round needs them on
    /// both sides, and reading them from sled costs a scan of the whole tree.
    digests: Arc<Mutex<Digests>>,
    /// Contract records written into each role and state since open (for metrics).
    contract_decisions: Arc<crate::metrics::ContractDecisions>,
    /// Bumped by every write of the agreement index, so that a reader can keep what it
    /// last read of the index until the next write instead of scanning it again.
    agreement_generation: Arc<AtomicU64>,
    /// How many closed contract records a provider keeps (see `mesh_protocol::retention`).
    pub(crate) retention: mesh_protocol::retention::ClosedRetention,
    /// Closed provider records stored, counted once from the index and then kept up to
    /// date by every write; `None` until first needed.
    pub(crate) closed_count: Arc<Mutex<Option<u64>>>,
    /// Bytes of the audit entries the store keeps, counted once and then kept up to date by
    /// appends and archives ([`Store::audit_held_bytes`]); `None` until first needed.
    audit_bytes: Arc<Mutex<Option<archive::HeldBytes>>>,
}

/// The anchor file and the entry count it last recorded.
#[derive(Debug)]
struct AuditAnchor {
    /// `<data-dir>/audit.anchor`.
    path: PathBuf,
    /// Entry count of the head last written, so a flush with nothing new audited writes
    /// nothing, and concurrent flushes never move the anchor backwards. Held while writing.
    written: Mutex<u64>,
}

/// Largest anchor file read: a signed head is under 200 bytes.
const MAX_ANCHOR_FILE: u64 = 4096;

/// Why the anchor file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnchorFileError {
    /// Reading failed.
    #[error("cannot read the audit anchor `{path}`: {source}")]
    Io {
        /// Anchor path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a signed head.
    #[error(
        "the audit anchor `{path}` is damaged ({reason}): start with `meshnode run --accept-rollback` to anchor the store as it is"
    )]
    Damaged {
        /// Anchor path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Reads the anchor file: `None` if there is none.
pub fn read_anchor(path: &Path) -> Result<Option<Signed<AuditHead>>, AnchorFileError> {
    let io = |source| AnchorFileError::Io {
        path: path.to_owned(),
        source,
    };
    let damaged = |reason: String| AnchorFileError::Damaged {
        path: path.to_owned(),
        reason,
    };
    // Never a file of any length, nor anything but a file, read into memory.
    let bytes = match crate::localfile::read(path, MAX_ANCHOR_FILE) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(crate::localfile::LocalFileError::Io(e)) => return Err(io(e)),
        Err(refused) => return Err(damaged(refused.to_string())),
    };
    Signed::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| damaged(e.to_string()))
}

/// Writes the anchor file atomically: temporary file, fsync, rename. The directory is not
/// synced: a rename lost in a crash leaves the previous anchor, an earlier point of the same
/// chain, which the store is ahead of (accepted); an fsync of the directory on every audited
/// flush cost about 3 ms more.
fn write_anchor(path: &Path, head: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("anchor.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(head)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// The audit chain against its anchor file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnchorStatus {
    /// The anchor was read and its signer checked.
    Checked {
        /// The anchored head.
        head: AuditHead,
        /// How the store stands against it.
        check: audit::AnchorCheck,
    },
    /// The anchor file is unreadable, damaged or signed by another key; says why.
    Unusable(String),
}

/// An anti-entropy digest `{id -> version}`, shared with the cache.
pub type Digest<K> = Arc<BTreeMap<K, u64>>;

/// Cached `{id -> version}` digests; `None` until first asked for.
#[derive(Debug, Default)]
struct Digests {
    /// Bumped by every write, so a digest built while one ran is not cached.
    generation: u64,
    catalog: Option<Digest<ProductId>>,
    nodes: Option<Digest<PublicKey>>,
    /// Bytes of catalog entries per owner: counted by the scan that builds the catalog
    /// digest (a tool that opens the store to read the audit chain never pays for it), then
    /// kept by every write.
    usage: Option<mesh_protocol::quota::CatalogUsage>,
}

fn split_versioned(
    tree: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<(u64, Vec<u8>), StoreError> {
    Ok((version_of(tree, key, value)?, value[8..].to_vec()))
}

/// The version prefix of a stored value.
fn version_of(tree: &'static str, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    match value.get(..8) {
        Some(prefix) => Ok(u64::from_be_bytes(prefix.try_into().expect("8 bytes"))),
        None => Err(StoreError::Corrupt {
            tree,
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "value shorter than its version prefix".into(),
        }),
    }
}

/// The entry `key` of `tree` (`version || envelope`, verified when it was stored).
fn stored<T: Signable>(
    tree: &sled::Tree,
    name: &'static str,
    key: &str,
) -> Result<Option<(u64, Signed<T>)>, StoreError> {
    let Some(value) = tree.get(key.as_bytes())? else {
        return Ok(None);
    };
    let (version, bytes) = split_versioned(name, key.as_bytes(), &value)?;
    let envelope = Signed::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
        tree: name,
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Some((version, envelope)))
}

/// Every entry of `tree` (`version || envelope`, verified when it was stored), decoded.
fn decoded<T: Signable>(
    tree: &sled::Tree,
    name: &'static str,
) -> Result<Vec<(T, Signed<T>)>, StoreError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (key, value) = item?;
        let (_, bytes) = split_versioned(name, &key, &value)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            tree: name,
            key: String::from_utf8_lossy(&key).into_owned(),
            reason,
        };
        let envelope: Signed<T> = Signed::from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let body = envelope
            .decode_trusted()
            .map_err(|e| corrupt(e.to_string()))?;
        out.push((body, envelope));
    }
    Ok(out)
}

fn versioned(version: u64, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + bytes.len());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(bytes);
    v
}

impl Digests {
    /// Records a write of `key` at `version` in the digest of `slot`: a cached digest is
    /// updated in place (a new copy only if a sync round still holds the old one), so a
    /// burst of writes, such as a new node learning every node record, does not rescan the
    /// tree for each round.
    fn forget<K: Ord + Clone>(&mut self, slot: fn(&mut Self) -> &mut Option<Digest<K>>, key: &K) {
        self.generation += 1;
        if let Some(digest) = slot(self) {
            Arc::make_mut(digest).remove(key);
        }
    }

    fn record<K: Ord + Clone>(
        &mut self,
        slot: fn(&mut Self) -> &mut Option<Digest<K>>,
        key: K,
        version: u64,
    ) {
        self.generation += 1;
        if let Some(digest) = slot(self) {
            Arc::make_mut(digest).insert(key, version);
        }
    }
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &StoreOptions::default())
    }

    /// Opens (or creates) the database at `path` with `options`.
    pub fn open_with(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let flush_every_ms = options
            .flush_every
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(flush_every_ms)
            .open()?;
        Ok(Self {
            catalog: db.open_tree(trees::CATALOG)?,
            products: db.open_tree(trees::PRODUCTS)?,
            restricted: db.open_tree(trees::RESTRICTED)?,
            agreements: db.open_tree(trees::AGREEMENTS)?,
            pending: db.open_tree(trees::PENDING)?,
            revocations: db.open_tree(trees::REVOCATIONS)?,
            agreement_index: db.open_tree(trees::AGREEMENT_INDEX)?,
            audit: db.open_tree(trees::AUDIT)?,
            peers: db.open_tree(trees::PEERS)?,
            audit_head: db.open_tree(trees::AUDIT_HEAD)?,
            signer: None,
            anchor: None,
            digests: Default::default(),
            contract_decisions: Default::default(),
            agreement_generation: Default::default(),
            retention: Default::default(),
            closed_count: Default::default(),
            audit_bytes: Default::default(),
            audit_lock: Default::default(),
            archive_lock: Default::default(),
            db,
        })
    }

    /// Contract records written into each role and state since the store was opened.
    pub(crate) fn contract_decisions(&self) -> Arc<crate::metrics::ContractDecisions> {
        self.contract_decisions.clone()
    }

    /// Changes whenever the agreement index is written (never goes back). Read it before
    /// reading the index: an unchanged value afterwards means nothing was written since.
    pub(crate) fn agreement_generation(&self) -> u64 {
        self.agreement_generation.load(Ordering::Acquire)
    }

    /// Marks a write of the agreement index.
    pub(crate) fn bump_agreement_generation(&self) {
        self.agreement_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Keeps at most `retention`'s closed contract records (the default bounds otherwise).
    pub fn with_closed_retention(
        mut self,
        retention: mesh_protocol::retention::ClosedRetention,
    ) -> Self {
        self.retention = retention;
        self
    }

    /// Signs the audit chain's head with `identity` on every append, and checks it on verify.
    pub fn with_audit_signer(mut self, identity: Identity) -> Self {
        self.signer = Some(std::sync::Arc::new(identity));
        self
    }

    /// Makes every write so far durable. Called before acknowledging to a peer or a user.
    ///
    /// Runs sled's blocking flush on tokio's blocking pool rather than `flush_async`, which
    /// waits on one of sled's own IO threads for a buffer write queued on that same pool:
    /// with many stores in one process (the simulations), shutting them down together left
    /// one IO thread waiting for itself and hung the process.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush_blocking())
            .await
            .map_err(|e| sled::Error::ReportableBug(format!("the flush task failed: {e}")))??;
        Ok(())
    }

    /// Blocking flush, for shutdown paths outside the runtime. With an anchor set, the
    /// audit head read before the flush is anchored after it: the anchor never names an
    /// entry the database may not hold after a crash.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let head = match &self.anchor {
            Some(_) => self.audit_head.get(HEAD_KEY)?,
            None => None,
        };
        self.db.flush()?;
        if let (Some(anchor), Some(head)) = (&self.anchor, head) {
            self.advance_anchor(anchor, &head, false)?;
        }
        Ok(())
    }

    /// Writes `head` (a stored signed head) to the anchor if it records more entries than
    /// the last one written, or in any case with `force`.
    fn advance_anchor(
        &self,
        anchor: &AuditAnchor,
        head: &[u8],
        force: bool,
    ) -> Result<(), StoreError> {
        let count = Signed::<AuditHead>::from_bytes(head)
            .ok()
            .and_then(|h| h.decode_trusted().ok())
            .map(|h| h.count)
            .ok_or_else(|| StoreError::Corrupt {
                tree: trees::AUDIT_HEAD,
                key: "head".into(),
                reason: "the signed audit head does not decode".into(),
            })?;
        let mut written = anchor.written.lock().unwrap_or_else(|e| e.into_inner());
        if count > *written || force {
            write_anchor(&anchor.path, head).map_err(|source| StoreError::Anchor {
                path: anchor.path.clone(),
                source,
            })?;
            *written = count;
        }
        Ok(())
    }

    /// Anchors the audit head outside the database at `path` after every flush (see the
    /// `anchor` field). Call [`Store::audit_anchor_check`] first: the next flush replaces
    /// whatever the file held.
    pub fn with_audit_anchor(mut self, path: PathBuf) -> Self {
        self.anchor = Some(Arc::new(AuditAnchor {
            path,
            written: Mutex::new(0),
        }));
        self
    }

    /// Flushes and writes the current audit head to the anchor even if it records fewer
    /// entries than the file (after the operator accepted a rollback, or to create the
    /// anchor of a data directory that had none).
    pub fn reanchor(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        let (Some(anchor), Some(head)) = (&self.anchor, self.audit_head.get(HEAD_KEY)?) else {
            return Ok(());
        };
        self.advance_anchor(anchor, &head, true)
    }

    /// The cached digest in `slot`, or one built from `tree` (keys parsed by `parse_key`,
    /// unparsable ones skipped) and cached unless a write ran meanwhile.
    fn digest<K: Ord>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        slot: fn(&mut Digests) -> &mut Option<Digest<K>>,
        parse_key: impl Fn(&str) -> Option<K>,
    ) -> Result<Digest<K>, StoreError> {
        let generation = {
            let mut digests = self.lock_digests();
            if let Some(cached) = slot(&mut digests) {
                return Ok(cached.clone());
            }
            digests.generation
        };
        let mut out = BTreeMap::new();
        for item in tree.iter() {
            let (key, value) = item?;
            let version = version_of(name, &key, &value)?;
            if let Some(k) = parse_key(&String::from_utf8_lossy(&key)) {
                out.insert(k, version);
            }
        }
        let out = Arc::new(out);
        let mut digests = self.lock_digests();
        if digests.generation == generation {
            *slot(&mut digests) = Some(out.clone());
        }
        Ok(out)
    }

    fn lock_digests(&self) -> std::sync::MutexGuard<'_, Digests> {
        // The cache holds no invariant a panic could break half-way.
        self.digests.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- local products ----

    /// Latest version this node published of `name`, if any.
    pub fn local_version(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .products
            .get(name.as_bytes())?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Records that this node published `version` of `name`.
    pub fn set_local_version(&self, name: &str, version: u64) -> Result<(), StoreError> {
        self.products
            .insert(name.as_bytes(), &version.to_be_bytes())?;
        Ok(())
    }

    /// The columns of this node's product `name` restricted in any version and not lifted
    /// since, whether or not the latest version's schema has them: what every version is
    /// served under. `None` for a product published before the store kept them (the latest
    /// descriptor's restrictions are all there is then).
    pub fn restricted_columns(
        &self,
        name: &str,
    ) -> Result<Option<std::collections::BTreeSet<String>>, StoreError> {
        let Some(bytes) = self.restricted.get(name.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                tree: trees::RESTRICTED,
                key: name.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Records the restricted columns of this node's product `name`.
    pub fn set_restricted_columns(
        &self,
        name: &str,
        columns: &std::collections::BTreeSet<String>,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(columns).map_err(|e| StoreError::Corrupt {
            tree: trees::RESTRICTED,
            key: name.to_owned(),
            reason: e.to_string(),
        })?;
        self.restricted.insert(name.as_bytes(), bytes)?;
        Ok(())
    }

    // ---- node records ----

    /// The stored record for a node key and its issue time.
    pub fn node_record(
        &self,
        key: &PublicKey,
    ) -> Result<Option<(u64, Signed<NodeRecord>)>, StoreError> {
        stored(&self.peers, trees::PEERS, &key.to_hex())
    }

    /// Stores a verified node record.
    pub fn put_node_record(
        &self,
        record: &NodeRecord,
        envelope: &Signed<NodeRecord>,
    ) -> Result<(), StoreError> {
        let mut digests = self.lock_digests();
        self.peers.insert(
            record.key.to_hex().as_bytes(),
            versioned(record.issued_at_ms, &envelope.to_bytes()),
        )?;
        digests.record(|d| &mut d.nodes, record.key, record.issued_at_ms);
        Ok(())
    }

    /// Every node record, decoded.
    pub fn node_records(&self) -> Result<Vec<(NodeRecord, Signed<NodeRecord>)>, StoreError> {
        decoded(&self.peers, trees::PEERS)
    }

    /// `{node key -> issued_at}` for anti-entropy.
    pub fn node_digest(&self) -> Result<Digest<PublicKey>, StoreError> {
        self.digest(
            &self.peers,
            trees::PEERS,
            |d| &mut d.nodes,
            |key| PublicKey::from_hex(key).ok(),
        )
    }

    /// A tree of the governance state (charter, votes, invitations), opened by name.
    pub(crate) fn governance_tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(format!("governance/{name}"))?)
    }

    // ---- generic record trees (agreements, pending, revocations) ----

    /// The agreements tree.
    pub fn agreements(&self) -> &sled::Tree {
        &self.agreements
    }
    /// The pending-requests tree.
    pub fn pending(&self) -> &sled::Tree {
        &self.pending
    }
    /// The revocations tree.
    pub fn revocations(&self) -> &sled::Tree {
        &self.revocations
    }
    /// The index tree over `agreements` (see `agreements.rs`).
    pub(crate) fn agreement_index(&self) -> &sled::Tree {
        &self.agreement_index
    }

    // ---- audit ----

    /// Appends an entry linked to the current head. Appends from every clone of the store
    /// are serialised, so the chain stays linear with several writers.
    pub fn audit_append(
        &self,
        kind: AuditKind,
        detail: &serde_json::Value,
        at_ms: u64,
    ) -> Result<u64, StoreError> {
        let _guard = self
            .audit_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (seq, prev) = match self.audit.last()? {
            None => (0, audit::GENESIS),
            Some((key, bytes)) => {
                let seq = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        tree: trees::AUDIT,
                        key: hex::encode(&key),
                        reason: "key is not a sequence number".into(),
                    }
                })?);
                (seq + 1, audit::entry_hash(&bytes))
            }
        };
        let entry = AuditEntry {
            seq,
            prev,
            at_ms,
            kind,
            detail: audit::bounded_detail(detail),
        };
        let bytes = entry.to_bytes();
        let head = self.signer.as_ref().map(|signer| {
            Signed::sign(
                signer,
                &AuditHead {
                    count: seq + 1,
                    last: audit::entry_hash(&bytes),
                },
            )
            .to_bytes()
        });
        // Entry and head in one transaction: a crash never leaves one without the other, so
        // a head that disagrees with the chain at start is damage, not an interrupted append.
        use sled::Transactional;
        (&self.audit, &self.audit_head)
            .transaction(|(audit_tree, head_tree)| {
                audit_tree.insert(&seq.to_be_bytes(), bytes.as_slice())?;
                if let Some(head) = &head {
                    head_tree.insert(HEAD_KEY, head.as_slice())?;
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::ReportableBug("aborted audit append".into()))
                }
            })?;
        self.count_appended(seq, bytes.len());
        Ok(seq)
    }

    /// Checks the stored signed head against the end of the chain, without reading the whole
    /// chain: the entry count and the last entry's hash. A head behind or off the chain
    /// means part of the database was rolled back (sled can lose one tree's latest writes
    /// and keep another's), or the head was signed by another key.
    pub fn audit_head_check(&self) -> Result<Result<(), ChainError>, StoreError> {
        let Some(signer) = &self.signer else {
            return Ok(Ok(()));
        };
        let count = self.audit_len()?;
        let last = match count.checked_sub(1) {
            Some(seq) => self.audit_hash_at(seq)?.unwrap_or(audit::GENESIS),
            None => audit::GENESIS,
        };
        let head = match self.audit_head.get(HEAD_KEY)? {
            Some(bytes) => match Signed::<AuditHead>::from_bytes(&bytes) {
                Ok(head) => head,
                Err(e) => {
                    return Ok(Err(ChainError::Head(format!(
                        "the signed head is unreadable ({e})"
                    ))));
                }
            },
            None if count == 0 => return Ok(Ok(())),
            None => return Ok(Err(ChainError::Head("the signed head is missing".into()))),
        };
        Ok(audit::verify_head(&head, &signer.public_key(), count, last))
    }

    /// Number of entries in the audit chain (from the last key, without a scan).
    pub fn audit_len(&self) -> Result<u64, StoreError> {
        match self.audit.last()? {
            None => Ok(0),
            Some((key, _)) => Ok(u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt {
                    tree: trees::AUDIT,
                    key: hex::encode(&key),
                    reason: "key is not a sequence number".into(),
                }
            })?) + 1),
        }
    }

    /// Hash of the stored audit entry `seq`, if there is one.
    pub fn audit_hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self
            .audit
            .get(seq.to_be_bytes())?
            .map(|bytes| audit::entry_hash(&bytes)))
    }

    /// Compares the chain with the anchor file, checking the anchor's signer. `Ok(None)`:
    /// no anchor is set or the file does not exist yet.
    pub fn audit_anchor_check(&self) -> Result<Option<AnchorStatus>, StoreError> {
        let Some(anchor) = &self.anchor else {
            return Ok(None);
        };
        let signed = match read_anchor(&anchor.path) {
            Ok(Some(signed)) => signed,
            Ok(None) => return Ok(None),
            Err(e) => return Ok(Some(AnchorStatus::Unusable(e.to_string()))),
        };
        let head = match &self.signer {
            Some(signer) => match audit::verify_anchor_signer(&signed, &signer.public_key()) {
                Ok(head) => head,
                Err(e) => {
                    return Ok(Some(AnchorStatus::Unusable(format!(
                        "{e} (`{}`)",
                        anchor.path.display()
                    ))));
                }
            },
            None => match signed.decode_trusted() {
                Ok(head) => head,
                Err(e) => return Ok(Some(AnchorStatus::Unusable(e.to_string()))),
            },
        };
        let count = self.audit_len()?;
        let hash = match head.count.checked_sub(1) {
            Some(seq) => self.audit_hash_at(seq)?,
            None => None,
        };
        Ok(Some(AnchorStatus::Checked {
            head: head.clone(),
            check: audit::check_anchor(&head, count, hash),
        }))
    }

    /// The stored bytes of every audit entry the store keeps (from its archive base on), in
    /// order. For tests only: the chain may take gigabytes, so the node reads it a page
    /// ([`Store::audit_page`]) or one entry at a time ([`Store::audit_verify`]).
    #[cfg(any(test, feature = "test-util"))]
    pub fn audit_raw(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.audit
            .range(self.audit_first()?.to_be_bytes()..)
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }

    /// The newest audit entries the store keeps before sequence number `before` (from the
    /// end when `None`), oldest first: at most `limit` stored entries, and no more than
    /// `max_bytes` of them once the first is taken. Unreadable entries are left out (the
    /// chain check names them). Reads the page only, backwards from its end.
    pub fn audit_page(
        &self,
        before: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<AuditPage, StoreError> {
        use std::ops::Bound;
        let first = self.audit_first()?;
        let mut page = AuditPage::default();
        if before.is_some_and(|before| before <= first) || limit == 0 {
            return Ok(page);
        }
        let end = before.map_or(Bound::Unbounded, |b| Bound::Excluded(b.to_be_bytes()));
        // The oldest entry taken so far (its key) and the stored bytes taken.
        let (mut oldest, mut bytes) = (None, 0usize);
        let newest_first = self
            .audit
            .range((Bound::Included(first.to_be_bytes()), end))
            .rev();
        for (taken, item) in newest_first.enumerate() {
            let (key, value) = item?;
            if taken == limit || (taken > 0 && bytes.saturating_add(value.len()) > max_bytes) {
                // One more entry is there: the next page ends where this one begins.
                page.next_before = oldest;
                break;
            }
            oldest = Some(audit_seq(&key)?);
            bytes += value.len();
            if let Ok(entry) = AuditEntry::from_bytes(&value) {
                page.entries.push(entry);
            }
        }
        page.entries.reverse();
        Ok(page)
    }

    /// Checks the whole chain the store keeps, from its signed archive base, reading one entry
    /// at a time (the chain may take gigabytes): the links, then the anchor and the signed
    /// head. Waits for an archive under way, which removes entries from the start.
    pub fn audit_verify(&self) -> Result<Result<u64, ChainError>, StoreError> {
        let _no_archive = self
            .archive_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = match self.audit_start()? {
            Ok(start) => start,
            Err(e) => return Ok(Err(e)),
        };
        self.audit_verify_rest(ChainVerifier::new(start))
    }

    /// Completes a check that reached `chain`'s position: the stored entries from there to
    /// the end, then the anchor and the signed head. The entries appended while the bulk was
    /// read are read with appends held back, so the end of the chain and the head are read
    /// together. Call with the archive lock held.
    pub(super) fn audit_verify_rest(
        &self,
        mut chain: ChainVerifier,
    ) -> Result<Result<u64, ChainError>, StoreError> {
        if let Err(e) = self.audit_verify_stream(&mut chain)? {
            return Ok(Err(e));
        }
        let _no_append = self
            .audit_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = self.audit_verify_stream(&mut chain)? {
            return Ok(Err(e));
        }
        let (count, last) = (chain.count(), chain.last());
        // A chain shorter than, or off, its anchor is reported as such before the head is
        // looked at: a rolled-back database usually holds a consistent older head.
        match self.audit_anchor_check()? {
            Some(AnchorStatus::Checked { check, .. }) => {
                if let Some(e) = check.error() {
                    return Ok(Err(e));
                }
            }
            Some(AnchorStatus::Unusable(reason)) => return Ok(Err(ChainError::Head(reason))),
            None => {}
        }
        let Some(signer) = &self.signer else {
            return Ok(Ok(count));
        };
        let head = match self.audit_head.get(HEAD_KEY)? {
            Some(bytes) => match Signed::<AuditHead>::from_bytes(&bytes) {
                Ok(h) => h,
                Err(e) => {
                    return Ok(Err(ChainError::Head(format!(
                        "the signed head is unreadable ({e})"
                    ))));
                }
            },
            None if count == 0 => return Ok(Ok(0)),
            None => return Ok(Err(ChainError::Head("the signed head is missing".into()))),
        };
        Ok(audit::verify_head(&head, &signer.public_key(), count, last).map(|()| count))
    }

    /// Feeds `chain` the stored entries from its position to the current end, one at a time.
    fn audit_verify_stream(
        &self,
        chain: &mut ChainVerifier,
    ) -> Result<Result<(), ChainError>, StoreError> {
        for bytes in self.audit.range(chain.count().to_be_bytes()..).values() {
            if let Err(e) = chain.push(&bytes?) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    /// Overwrites one stored audit entry: for tests of tamper detection only.
    #[cfg(any(test, feature = "test-util"))]
    pub fn audit_overwrite_for_tests(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.audit.insert(seq.to_be_bytes(), bytes)?;
        self.forget_held_bytes();
        Ok(())
    }
}

/// A page of the audit log ([`Store::audit_page`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditPage {
    /// The entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// The `before` of the page of older entries: this page's first sequence number, when the
    /// store keeps entries before it; `None` when the page reaches the first entry kept.
    pub next_before: Option<u64>,
}

/// The sequence number an `audit` tree key stands for.
fn audit_seq(key: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| {
        StoreError::Corrupt {
            tree: trees::AUDIT,
            key: hex::encode(key),
            reason: "key is not a sequence number".into(),
        }
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::ProductDescriptor;

    /// A store at `dir` whose audit log holds `n` signed entries, `{"i": i}` at time `i`.
    fn audited(dir: &std::path::Path, n: u64) -> Store {
        let store = Store::open(dir)
            .unwrap()
            .with_audit_signer(Identity::from_secret_bytes([3; 32]));
        for i in 0..n {
            store
                .audit_append(AuditKind::Publish, &serde_json::json!({ "i": i }), i)
                .unwrap();
        }
        store
    }

    #[test]
    fn editing_the_last_entry_is_caught_by_the_signed_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = audited(dir.path(), 3);
        assert_eq!(store.audit_verify().unwrap().unwrap(), 3);
        let mut entry = AuditEntry::from_bytes(&store.audit_raw().unwrap()[2]).unwrap();
        entry.detail = "{\"i\":7}".into();
        store
            .audit_overwrite_for_tests(2, &entry.to_bytes())
            .unwrap();
        let err = store.audit_verify().unwrap().unwrap_err().to_string();
        assert!(err.contains("entry 2"), "{err}");
    }

    #[test]
    fn a_page_is_the_newest_entries_before_a_point_and_names_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = audited(dir.path(), 10);
        let seqs = |page: &AuditPage| page.entries.iter().map(|e| e.seq).collect::<Vec<_>>();
        let page = store.audit_page(None, 3, usize::MAX).unwrap();
        assert_eq!((seqs(&page), page.next_before), (vec![7, 8, 9], Some(7)));
        let page = store.audit_page(Some(7), 3, usize::MAX).unwrap();
        assert_eq!((seqs(&page), page.next_before), (vec![4, 5, 6], Some(4)));
        // The last page reaches the first entry and names no next one.
        let page = store.audit_page(Some(3), 5, usize::MAX).unwrap();
        assert_eq!((seqs(&page), page.next_before), (vec![0, 1, 2], None));
        let page = store.audit_page(Some(4), 4, usize::MAX).unwrap();
        assert_eq!((seqs(&page), page.next_before), (vec![0, 1, 2, 3], None));
        assert_eq!(
            store.audit_page(Some(0), 5, usize::MAX).unwrap(),
            AuditPage::default()
        );
        let page = store.audit_page(Some(100), 100, usize::MAX).unwrap();
        assert_eq!((seqs(&page).len(), page.next_before), (10, None));
        // A byte bound smaller than an entry: one entry, the newest.
        let page = store.audit_page(None, 100, 1).unwrap();
        assert_eq!((seqs(&page), page.next_before), (vec![9], Some(9)));
        let one = store.audit.get(9u64.to_be_bytes()).unwrap().unwrap().len();
        let page = store.audit_page(None, 100, 2 * one + 1).unwrap();
        assert_eq!((seqs(&page), page.next_before), (vec![8, 9], Some(8)));
        // An unreadable entry is left out of the page (the chain check names it).
        store.audit_overwrite_for_tests(8, b"\xff\xff").unwrap();
        let page = store.audit_page(None, 3, usize::MAX).unwrap();
        assert_eq!((seqs(&page), page.next_before), (vec![7, 9], Some(7)));
        assert!(matches!(
            store.audit_verify().unwrap(),
            Err(ChainError::Unreadable { seq: 8, .. })
        ));
        // After an archive, pages stop at the first entry the store keeps.
        let dir2 = tempfile::tempdir().unwrap();
        let store = audited(dir2.path(), 10);
        store
            .audit_archive(5, &dir2.path().join("archive"))
            .unwrap();
        let page = store.audit_page(Some(7), 10, usize::MAX).unwrap();
        assert_eq!((seqs(&page), page.next_before), (vec![5, 6], None));
        assert_eq!(
            store.audit_page(Some(5), 10, usize::MAX).unwrap(),
            AuditPage::default()
        );
    }

    #[test]
    fn cached_digests_follow_writes_and_match_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let owner = Identity::from_secret_bytes([5; 32]);
        let put = |version: u64| {
            let descriptor = ProductDescriptor {
                owner: owner.public_key(),
                domain: "sales".into(),
                name: "orders".into(),
                version,
                title: "Orders".into(),
                description: String::new(),
                tags: vec![],
                schema: vec![],
                rows: 0,
                bytes: 0,
                digest: mesh_protocol::descriptor::ContentDigest([0; 32]),
                published_at_ms: 1,
                sla: Default::default(),
                policy: Default::default(),
                lineage: vec![],
                data_addr: None,
                status: mesh_protocol::descriptor::Status::Active,
                stewardship: Default::default(),
            };
            store
                .put_descriptor(&descriptor, &Signed::sign(&owner, &descriptor))
                .unwrap();
            descriptor.id()
        };
        let id = put(1);
        let before = store.catalog_digest().unwrap();
        assert_eq!(before.get(&id), Some(&1));
        put(2);
        let record = NodeRecord {
            key: owner.public_key(),
            domain: "sales".into(),
            peer_id: String::new(),
            addrs: Vec::new(),
            data_addr: None,
            issued_at_ms: 7,
        };
        let nodes_before = store.node_digest().unwrap();
        store
            .put_node_record(&record, &Signed::sign(&owner, &record))
            .unwrap();
        // A digest handed out earlier is a snapshot; the cache has the new versions.
        assert_eq!(before.get(&id), Some(&1));
        assert!(nodes_before.is_empty());
        let after = store.catalog_digest().unwrap();
        assert_eq!(after.get(&id), Some(&2));
        assert_eq!(
            store.node_digest().unwrap().get(&owner.public_key()),
            Some(&7)
        );
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.catalog_digest().unwrap(), after);
    }

    #[test]
    fn audit_chain_appends_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..4 {
            store
                .audit_append(AuditKind::Publish, &serde_json::json!({ "i": i }), i)
                .unwrap();
        }
        assert_eq!(store.audit_verify().unwrap().unwrap(), 4);
        let mut entry = AuditEntry::from_bytes(&store.audit_raw().unwrap()[1]).unwrap();
        entry.detail = "{\"i\":42}".into();
        store
            .audit_overwrite_for_tests(1, &entry.to_bytes())
            .unwrap();
        assert_eq!(
            store.audit_verify().unwrap(),
            Err(ChainError::BrokenLink {
                seq: 2,
                prev_seq: 1
            })
        );
    }
}
