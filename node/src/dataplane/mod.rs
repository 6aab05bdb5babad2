//! The data plane: Arrow IPC over QUIC (`meshnode-data/3`), contract-enforced at the
//! provider.
//!
//! One quinn endpoint per node both serves (provider) and dials (consumer). TLS uses the
//! libp2p certificate of the node key on both sides ([`tls`]); the provider learns the
//! consumer's key from the handshake, the consumer pins the provider's key from the catalog.
//!
//! - [`provider`](self::provider): admits connection attempts (`admit`, around the sans-I/O
//!   [`Admission`](mesh_protocol::admission::Admission) policy: Retry under load, per-source
//!   limits, a short handshake timeout, a slot only once the peer's key is known), authorises
//!   each fetch against the co-signed agreement and the local store, then streams the allowed
//!   columns and rows.
//! - [`produce`](self::produce): the bounded-memory frame source (passthrough or
//!   select-and-encode) and the row-filter kernels in `select`.
//! - [`consumer`](self::consumer): `fetch` — agreement lookup, resume, verification, atomic
//!   rename into place. `ipcfile` lays the received stream out as an Arrow IPC file;
//!   `outpath` decides where a fetch may write (never inside a node's data directory, no
//!   silent overwrite, one fetch per output path).
//! - `convert`: the output formats (IPC file, IPC stream, Parquet), written from the
//!   verified IPC file into a temporary file renamed into place; `staged`: a verified fetch
//!   held in the daemon's staging area and handed to the caller as an IPC stream
//!   (`meshnode fetch --out -`).
//!
//! Architecture invariant: no data byte leaves the provider before the agreement was
//! verified against the TLS peer, the member set, the revocation list and the stored
//! contract state, and no column outside the granted set is ever encoded.

mod admit;
mod appendfile;
mod consumer;
mod convert;
mod framepool;
mod ipcfile;
mod outpath;
mod produce;
mod provider;
// Public with `test-util` so that reference tests can evaluate filters directly.
#[cfg(feature = "test-util")]
pub mod select;
#[cfg(not(feature = "test-util"))]
mod select;
mod staged;
mod summaries;
#[cfg(test)]
mod tests;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_protocol::admission::{Admission, AdmissionLimits, TransferLimits, TransferSlots};
use mesh_protocol::{Identity, PublicKey, Refusal};
use serde::{Deserialize, Serialize};

use crate::config::{DataDir, NodeConfig};
use crate::store::{Store, StoreError};

pub use consumer::{FetchOptions, FetchOutcome};
#[cfg(feature = "query")]
pub(crate) use convert::DECODE_BOUNDS;
pub use convert::{ConvertError, OutputFormat, cast_to_schema, parquet_schema, parquet_unwritable};
pub use mesh_protocol::Compression;
pub use outpath::OutputError;
pub(crate) use outpath::is_user_fixable as outpath_is_user_fixable;
pub use staged::StagedFetch;

/// Settings of the data plane.
#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    /// UDP address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Most concurrent transfers served to one peer (more are refused as busy).
    pub max_transfers_per_peer: u32,
    /// Most concurrent transfers served to all peers together (more are refused as busy):
    /// each holds a thread of the runtime's blocking pool while it lasts.
    pub max_transfers: u32,
    /// Clock difference tolerated with consumers on an agreement's validity window, ms.
    pub clock_skew_ms: u64,
    /// The mesh's members: connections from other keys are refused after the handshake,
    /// and fetches from a provider that is no longer a member are not attempted. Open (every
    /// key passes) until the node's governance state fills it.
    pub members: crate::governance::MemberSet,
    /// The congestion controller of data-plane connections, both directions.
    pub congestion: tls::Congestion,
    /// The path the flow-control windows are sized for (`data_link` in the node config).
    pub link: tls::LongFatLink,
    /// Connections a whole-product fetch is striped over (`data_link.connections`).
    pub connections: u8,
    /// Space a fetch leaves free on the disk it writes to (`disk_reserve_mib`).
    pub disk_reserve: crate::diskroom::Reserve,
    /// How often one consumer may ask this provider for data (`fetch_burst`,
    /// `fetch_refill_ms`).
    pub fetch_rate: FetchRate,
}

/// Default fetch requests one consumer may send back to back.
pub const DEFAULT_FETCH_BURST: u32 = 64;
/// Default refill of the fetch budget: one request per this many milliseconds.
pub const DEFAULT_FETCH_REFILL_MS: u64 = 100;

/// The fetch requests a provider reads from one consumer key: `burst` back to back, then
/// one every `refill_ms`. Each request costs a signature check of the agreement, store
/// reads and, once served, an audit entry; without a bound a consumer holding one agreement
/// makes the provider do that at wire speed. A stripe of a striped fetch is one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRate {
    /// Requests back to back.
    pub burst: u32,
    /// Then one per this many milliseconds.
    pub refill_ms: u64,
}

impl Default for FetchRate {
    fn default() -> Self {
        Self {
            burst: DEFAULT_FETCH_BURST,
            refill_ms: DEFAULT_FETCH_REFILL_MS,
        }
    }
}

impl DataPlaneConfig {
    /// The data-plane part of a node config.
    pub fn from_node(config: &NodeConfig) -> Self {
        Self {
            listen: config.data_listen,
            max_transfers_per_peer: config.max_transfers_per_peer,
            max_transfers: config.max_transfers,
            clock_skew_ms: config.clock_skew_tolerance_secs.saturating_mul(1000),
            members: Default::default(),
            congestion: config.congestion,
            link: config.data_link.link(),
            connections: config.data_link.connections,
            disk_reserve: config.disk_reserve(),
            fetch_rate: FetchRate {
                burst: config.fetch_burst,
                refill_ms: config.fetch_refill_ms,
            },
        }
    }

    /// The transport of this data plane's connections.
    pub(crate) fn transport(&self) -> tls::Transport {
        tls::Transport {
            max_streams: self.max_transfers_per_peer.max(1),
            congestion: self.congestion,
            link: self.link,
        }
    }
}

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The UDP socket could not be bound.
    #[error(
        "cannot bind the data plane on {addr}: {source} (choose another data_listen in meshnode.toml)"
    )]
    Bind {
        /// Address tried.
        addr: SocketAddr,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("data plane TLS: {0}")]
    Tls(String),
}

/// Application close code of a data-plane connection refused because the peer's key is not
/// a member of the mesh (the consumer tells its user so instead of offering a retry).
pub(crate) const CLOSE_NOT_MEMBER: u32 = 3;

/// Why a fetch failed. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request itself is wrong (output path, version, ...).
    #[error("{0}")]
    BadRequest(String),
    /// No usable agreement for the product.
    #[error("{0}")]
    NoAgreement(String),
    /// The provider's data-plane address is unknown.
    #[error("{0}")]
    NoAddress(String),
    /// The provider could not be reached or did not prove its key.
    #[error("cannot reach the provider at {addr}: {reason}")]
    Connect {
        /// Address dialled.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The provider refused the fetch.
    #[error("the provider refused the fetch: {0}")]
    Refused(Refusal),
    /// The transfer broke off; the received part is kept and the same fetch resumes it.
    #[error(
        "the transfer was interrupted after {batches} batches ({reason}); run the same fetch again to resume"
    )]
    Interrupted {
        /// Complete data frames kept.
        batches: u64,
        /// What broke.
        reason: String,
    },
    /// The provider sent something that does not verify (trailer, digest, framing).
    #[error("the received data failed verification and was discarded: {0}")]
    Verification(String),
    /// The output path is not one a fetch may write (see [`OutputError`]).
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The local disk failed.
    #[error("cannot write the output: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error of the file system.
        #[source]
        source: std::io::Error,
    },
    /// The disk of the output is too full to go on without eating into the space the node
    /// keeps free; what arrived is kept for the next attempt.
    #[error("{0}; what already arrived is kept, and the same fetch resumes from there")]
    NoRoom(#[source] crate::diskroom::NoRoom),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The verified data could not be written in the output format asked for.
    #[error(transparent)]
    Convert(#[from] ConvertError),
}

impl FetchError {
    /// Short machine-readable label.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::BadRequest(_) => "bad_request",
            FetchError::NoAgreement(_) => "no_agreement",
            FetchError::NoAddress(_) => "no_address",
            FetchError::Connect { .. } => "unreachable",
            FetchError::Refused(r) => r.code.as_str(),
            FetchError::Interrupted { .. } => "interrupted",
            FetchError::Verification(_) => "verification",
            FetchError::Output(e) => e.code(),
            FetchError::Io { .. } => "io",
            FetchError::NoRoom(_) | FetchError::Convert(ConvertError::NoRoom { .. }) => "no_room",
            FetchError::Store(_) => "store",
            FetchError::Convert(e) if e.io_error().is_some() => "io",
            // What the provider sent is out of bounds, as data that fails its checks is.
            FetchError::Convert(ConvertError::Bounds { .. }) => "verification",
            FetchError::Convert(_) => "convert",
        }
    }
}

impl From<FetchError> for crate::error::NodeError {
    fn from(e: FetchError) -> Self {
        use crate::error::NodeError as N;
        match e {
            FetchError::BadRequest(_) => N::BadRequest(e.to_string()),
            FetchError::NoAgreement(_) | FetchError::NoAddress(_) => N::NotFound(e.to_string()),
            FetchError::Refused(_) => N::Refused(e.to_string()),
            FetchError::Connect { .. }
            | FetchError::Interrupted { .. }
            | FetchError::Verification(_) => N::Unavailable(e.to_string()),
            FetchError::Output(ref o) => match o.status() {
                outpath::Status::Conflict => N::Conflict(e.to_string()),
                outpath::Status::BadRequest => N::BadRequest(e.to_string()),
                outpath::Status::Internal => N::Internal(e.to_string()),
            },
            // What the operator can fix (permissions, a read-only or full disk) is theirs to
            // fix, not an internal error.
            FetchError::Io { ref source, .. } if outpath::is_user_fixable(source) => {
                N::BadRequest(e.to_string())
            }
            FetchError::Io { .. } => N::Internal(e.to_string()),
            FetchError::NoRoom(_) | FetchError::Convert(ConvertError::NoRoom { .. }) => {
                N::NoRoom(e.to_string())
            }
            FetchError::Store(s) => N::Store(s),
            FetchError::Convert(ref c) => match c.io_error() {
                Some(io) if !outpath::is_user_fixable(io) => N::Internal(e.to_string()),
                // Parquet cannot hold every Arrow type: the caller can choose another format.
                _ => N::BadRequest(e.to_string()),
            },
        }
    }
}

/// How long a data stream may go without progress, in either direction, before the
/// transfer is given up: the consumer receiving no byte, or the provider's writes taking
/// none. QUIC's idle timeout cannot catch this, since keep-alives flow whatever the
/// application does. Progress is bytes moved, not time spent: a large product takes as long
/// as it takes. A consumer ends a stalled fetch as interrupted (resumable); a provider
/// resets the stream, which gives back its transfer slot, its reader thread and the file.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Reset code of a stream the provider gave up on because the consumer took nothing for
/// the stall bound (see [`STALL_TIMEOUT`]).
pub(crate) const RESET_STALLED: u32 = 1;

/// A duration for a message: whole seconds, or milliseconds below that (tests shorten the
/// bounds).
pub(crate) fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Test-only behaviour of the data plane (the defaults are production's).
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    /// After forwarding this many data frames, stop sending and signal `paused`.
    pub(crate) pause_after_frames: Option<u64>,
    /// Signalled when the provider paused.
    pub(crate) paused: tokio::sync::Notify,
    /// Corrupt the trailer or the data.
    pub(crate) tamper: Option<Tamper>,
    /// Admission limits other than the defaults.
    pub(crate) admission: Option<AdmissionLimits>,
    /// A fetch rate other than the config's.
    pub(crate) fetch_rate: Option<FetchRate>,
    /// A `max_transfers` other than the config's.
    pub(crate) max_transfers: Option<u32>,
    /// A stall bound other than [`STALL_TIMEOUT`], both sides (tests shorten it).
    pub(crate) stall: Option<Duration>,
    /// Where a fetch learns the free space of its disk (tests: a disk that fills up).
    pub(crate) disk_probe: crate::diskroom::Probe,
}

/// How a test provider misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Tamper {
    /// Sign a trailer with a wrong digest.
    TrailerDigest,
    /// Flip one byte of the last data frame after hashing it.
    DataByte,
    /// Sign the trailer with another key.
    TrailerSigner,
}

/// State shared by the provider tasks and the fetch client.
#[derive(Debug)]
struct Shared {
    /// This node's key.
    identity: Identity,
    /// The node's store (agreements, revocations, catalog, audit).
    store: Store,
    /// Where products live.
    data_dir: DataDir,
    /// Limits.
    config: DataPlaneConfig,
    /// Transfers in progress, per consumer key and in all.
    active: Mutex<TransferSlots<PublicKey>>,
    /// Client configurations pinned to each provider fetched from.
    client_configs: Mutex<HashMap<PublicKey, quinn::ClientConfig>>,
    /// Who may start a handshake and who holds a connection slot.
    admission: Mutex<Admission<PublicKey>>,
    /// Counters of the data plane that the admission state does not keep.
    counters: admit::Counters,
    /// Transfer metrics (bytes, durations, outcomes, refusals) of both sides.
    transfers: crate::metrics::TransferMetrics,
    /// Summaries of whole products served as stored.
    summaries: Mutex<summaries::Summaries>,
    /// The fetch requests each consumer key may still send ([`FetchRate`]).
    fetch_rates: Mutex<mesh_protocol::budget::RateTable<PublicKey>>,
    /// Test behaviour.
    hooks: Hooks,
}

impl Shared {
    /// How long a data stream may make no progress (see [`STALL_TIMEOUT`]).
    fn stall(&self) -> Duration {
        self.hooks.stall.unwrap_or(STALL_TIMEOUT)
    }

    /// The transfer slots (never held across an await).
    fn transfer_slots(&self) -> std::sync::MutexGuard<'_, TransferSlots<PublicKey>> {
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stream summaries (never held across an await).
    fn summaries(&self) -> std::sync::MutexGuard<'_, summaries::Summaries> {
        self.summaries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running data plane: serves fetches and performs them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DataPlane {
    /// The quinn endpoint (server and client).
    endpoint: quinn::Endpoint,
    /// Shared state.
    shared: Arc<Shared>,
}

impl DataPlane {
    /// Binds the endpoint and starts serving. Returns the handle and the accept task.
    /// Must be called inside a tokio runtime.
    pub fn start(
        config: DataPlaneConfig,
        identity: Identity,
        store: Store,
        data_dir: DataDir,
    ) -> Result<(DataPlane, tokio::task::JoinHandle<()>), DataPlaneError> {
        Self::start_with_hooks(config, identity, store, data_dir, Hooks::default())
    }

    pub(crate) fn start_with_hooks(
        config: DataPlaneConfig,
        identity: Identity,
        store: Store,
        data_dir: DataDir,
        hooks: Hooks,
    ) -> Result<(DataPlane, tokio::task::JoinHandle<()>), DataPlaneError> {
        let server = tls::server_config(&identity, config.transport())?;
        let endpoint = tls::endpoint(config.listen, Some(server))?;
        let limits = hooks.admission.clone().unwrap_or_default();
        staged::sweep(&data_dir.received());
        let mut config = config;
        if let Some(rate) = hooks.fetch_rate {
            config.fetch_rate = rate;
        }
        if let Some(max) = hooks.max_transfers {
            config.max_transfers = max;
        }
        let fetch_rates = mesh_protocol::budget::RateTable::new(
            config.fetch_rate.burst,
            config.fetch_rate.refill_ms,
            mesh_protocol::budget::DEFAULT_MAX_TRACKED,
        );
        let active = TransferSlots::new(TransferLimits {
            max_transfers: config.max_transfers,
            max_per_key: config.max_transfers_per_peer,
        });
        let shared = Arc::new(Shared {
            identity,
            store,
            data_dir,
            config,
            fetch_rates: Mutex::new(fetch_rates),
            active: Mutex::new(active),
            client_configs: Mutex::new(HashMap::new()),
            admission: Mutex::new(Admission::new(limits)),
            counters: admit::Counters::default(),
            transfers: crate::metrics::TransferMetrics::default(),
            summaries: Mutex::default(),
            hooks,
        });
        let task = tokio::spawn(provider::accept_loop(endpoint.clone(), shared.clone()));
        Ok((DataPlane { endpoint, shared }, task))
    }

    /// The bound UDP address (announced to the mesh).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or(self.shared.config.listen)
    }

    /// Fetches a product under an agreement into `options.out` (see [`FetchOptions`]).
    /// Not cancel-safe in the sense of atomicity: a cancelled fetch leaves a resumable
    /// `OUT.partial`, never a file at `OUT`.
    pub async fn fetch(&self, options: FetchOptions) -> Result<FetchOutcome, FetchError> {
        consumer::fetch(&self.endpoint, &self.shared, options).await
    }

    /// Resolves what a user typed (`domain/product`, `domain@fingerprint/product`) against
    /// the catalog replica.
    pub fn resolve_product(
        &self,
        spec: &str,
    ) -> Result<mesh_protocol::ProductDescriptor, crate::error::NodeError> {
        let entries = self.shared.store.catalog()?;
        crate::resolve::resolve(spec, entries.into_iter().map(|(d, _)| d))
    }

    /// Appends the data plane's metrics (admission verdicts, handshakes, connections,
    /// transfers) to an OpenMetrics text without its `# EOF` line.
    pub fn encode_metrics(&self, out: &mut String) {
        admit::encode_metrics(&self.shared, out);
        self.shared.transfers.encode(out);
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
    }

    /// Waits until the endpoint's connections are closed (after [`DataPlane::close`]).
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// What the query engine reads through the data plane (only in builds with it).
#[cfg(feature = "query")]
impl DataPlane {
    /// The node's store (agreements and catalog, read by the query engine).
    pub(crate) fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The node's data directory.
    pub(crate) fn data_dir(&self) -> &DataDir {
        &self.shared.data_dir
    }

    /// The mesh's members (a provider removed from the mesh is not fetched from).
    pub(crate) fn members(&self) -> &crate::governance::MemberSet {
        &self.shared.config.members
    }
}

/// The files of an in-progress fetch next to its output.
#[derive(Clone, Debug)]
pub(crate) struct PartialPaths {
    /// `OUT`.
    pub(crate) out: PathBuf,
    /// `OUT.partial`: the Arrow file being assembled.
    pub(crate) partial: PathBuf,
    /// `OUT.partial.state`: what the partial holds, for resuming.
    pub(crate) state: PathBuf,
    /// `OUT.partial.convert`: the verified data being written in another format than the
    /// Arrow IPC file, renamed to `OUT` once complete.
    pub(crate) converted: PathBuf,
}

impl PartialPaths {
    pub(crate) fn new(out: PathBuf) -> Self {
        let with = |suffix: &str| {
            let mut name = out.file_name().unwrap_or_default().to_os_string();
            name.push(suffix);
            out.with_file_name(name)
        };
        Self {
            partial: with(".partial"),
            state: with(".partial.state"),
            converted: with(".partial.convert"),
            out,
        }
    }

    /// Removes the partial file and its state.
    pub(crate) fn discard(&self) {
        let _ = std::fs::remove_file(&self.partial);
        let _ = std::fs::remove_file(&self.state);
        let _ = std::fs::remove_file(&self.converted);
    }
}

/// `OUT.partial.state`: identifies the transfer a partial file belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResumeState {
    /// Agreement id, hex.
    pub(crate) agreement: String,
    /// Product storage key.
    pub(crate) product: String,
    /// Provider key, hex.
    pub(crate) provider: String,
    /// Version being fetched.
    pub(crate) version: u64,
    /// IPC compression asked for (the bytes depend on it).
    pub(crate) compression: Compression,
    /// Narrowing asked for (the bytes depend on it).
    #[serde(default)]
    pub(crate) narrowing: Option<mesh_protocol::Narrowing>,
    /// Complete data frames at the last checkpoint.
    pub(crate) batches: u64,
    /// Rows at the last checkpoint.
    pub(crate) rows: u64,
    /// Length of the partial file at the last checkpoint.
    pub(crate) bytes: u64,
    /// Checkpoint time, Unix ms.
    pub(crate) updated_ms: u64,
}
