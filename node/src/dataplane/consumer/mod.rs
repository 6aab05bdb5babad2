//! The consumer side: `fetch` a product under an agreement into an Arrow IPC file.
//!
//! Data goes to `OUT.partial` (an Arrow file under construction, see `ipcfile`) with a small
//! `OUT.partial.state` beside it. Only after the provider's signed trailer matches what was
//! received (rows, batches, BLAKE3 of the stream) is the file completed, synced and renamed
//! to `OUT` — or, for another output format (`convert`), written in that format to
//! `OUT.partial.convert` and renamed to `OUT` when complete. A transfer that breaks off keeps
//! both files; the next fetch of the same product, version and agreement continues from the
//! last complete batch. Any other failure removes them. Before any of that, `outpath` checks
//! and locks the output path.
//!
//! This module finds the agreement, the provider's address and a partial file to resume,
//! and connects; [`transfer`] runs the transfer's steps on the connection, with [`reader`]
//! reading frames off the stream and [`writer`] appending them to the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use mesh_protocol::audit::AuditKind;
use mesh_protocol::contract::{AgreementId, ContractState, ContractTerms};
use mesh_protocol::{Agreement, Compression, ProductId, Stripe};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::convert::OutputFormat;
use super::ipcfile::IpcFileBuilder;
use super::outpath;
use super::{FetchError, PartialPaths, ResumeState, Shared, tls};
use crate::agreements::Role;
use crate::diskroom::Room;
use crate::node::now_ms;

mod reader;
mod transfer;
mod writer;

use reader::Patience;
use transfer::Transfer;

/// Largest state file read to resume: a few hundred bytes, more with a narrowing that
/// names thousands of columns. A larger one is not resumed from.
const MAX_STATE_FILE: u64 = 4 * 1024 * 1024;

/// What to fetch and where to put it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchOptions {
    /// The product.
    pub product: ProductId,
    /// Output path of the Arrow IPC file (absolute).
    pub out: PathBuf,
    /// Agreement id or id prefix; `None` picks the usable agreement for the product.
    pub agreement: Option<String>,
    /// Version; `None` for the latest the agreement covers.
    pub version: Option<u64>,
    /// IPC compression asked of the provider.
    pub compression: Compression,
    /// Provider data-plane address; `None` uses the catalog (descriptor, then node record).
    pub provider_addr: Option<SocketAddr>,
    /// Replace a file that already exists at `out` (otherwise the fetch is refused).
    #[serde(default)]
    pub force: bool,
    /// What to write at `out`: the IPC file as received, or a conversion of it.
    #[serde(default)]
    pub format: OutputFormat,
    /// Where to report stream bytes and rows received so far (for a progress display).
    #[serde(skip)]
    pub progress: Option<std::sync::Arc<crate::progress::Progress>>,
    /// Fewer columns or rows than the agreement grants (asked of the provider, which
    /// intersects it with the agreement); `None` for everything granted.
    #[serde(default)]
    pub narrowing: Option<mesh_protocol::Narrowing>,
    /// Connections to stripe a whole-product fetch over (1 to
    /// [`MAX_STRIPES`](mesh_protocol::transfer::MAX_STRIPES)); `None` for the node's
    /// `data_link.connections`.
    #[serde(default)]
    pub connections: Option<u8>,
}

/// A completed fetch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FetchOutcome {
    /// Rows in the file.
    pub rows: u64,
    /// Bytes of the Arrow IPC stream (from batch 0).
    pub bytes: u64,
    /// Data frames (IPC messages) in the stream.
    pub batches: u64,
    /// Wall-clock seconds of this call.
    pub seconds: f64,
    /// Throughput of this call in MiB/s (bytes received now / seconds).
    pub mib_s: f64,
    /// BLAKE3 of the stream, hex (as signed by the provider).
    pub digest: String,
    /// Agreement id, hex.
    pub agreement: String,
    /// Provider key, hex.
    pub provider: String,
    /// Version fetched.
    pub version: u64,
    /// Output file.
    pub out: String,
    /// Size of the output file.
    pub file_bytes: u64,
    /// Data frames that were already held from an interrupted fetch.
    pub resumed_from_batch: u64,
    /// Format of the output file.
    #[serde(default)]
    pub format: OutputFormat,
    /// Connections the data came over: more than one when the fetch was striped.
    #[serde(default = "one_connection")]
    pub connections: u8,
}

fn one_connection() -> u8 {
    1
}

/// Finds the agreement to fetch under.
fn find_agreement(
    shared: &Shared,
    options: &FetchOptions,
    now: u64,
) -> Result<(AgreementId, Agreement, ContractTerms), FetchError> {
    let product = &options.product;
    let mut usable = Vec::new();
    let mut reasons = Vec::new();
    // Through the store's ranges and index: the records other members' requests leave at
    // this node (hundreds per member) are not read for a fetch of this node's own.
    let candidates = match &options.agreement {
        Some(prefix) => shared
            .store
            .agreements_with_hex_prefix(prefix, usize::MAX)?,
        None => shared.store.agreement_records_of(Role::Consumer)?,
    };
    for (id, record) in candidates {
        let Ok(terms) = record.terms() else { continue };
        if record.role != Role::Consumer || terms.product != *product {
            if options.agreement.is_some() {
                reasons.push(format!(
                    "agreement {} is not one this node consumes {} under",
                    id.short(),
                    product.name
                ));
            }
            continue;
        }
        let revoked = shared.store.revocation(&id)?.is_some() || record.revocation.is_some();
        let state = if revoked {
            ContractState::Revoked
        } else {
            record.state_at(now)
        };
        let Some(agreement) = record.agreement.filter(|_| state == ContractState::Agreed) else {
            reasons.push(format!("agreement {} is {state}", id.short()));
            continue;
        };
        if !shared.config.members.admits(&terms.provider) {
            reasons.push(format!(
                "agreement {} ended: its provider was removed from the mesh",
                id.short()
            ));
            continue;
        }
        if let Some(v) = options.version
            && !terms.covers_version(v)
        {
            reasons.push(format!(
                "agreement {} does not cover version {v}",
                id.short()
            ));
            continue;
        }
        usable.push((id, agreement, terms, record.updated_ms));
    }
    if usable.len() > 1 && options.agreement.is_some() {
        let ids: Vec<String> = usable.iter().map(|u| u.0.short()).collect();
        return Err(FetchError::BadRequest(format!(
            "agreement prefix `{}` matches several agreements: {}",
            options.agreement.as_deref().unwrap_or_default(),
            ids.join(", ")
        )));
    }
    // The most recently concluded agreement wins.
    usable.sort_by_key(|u| std::cmp::Reverse(u.3));
    match usable.into_iter().next() {
        Some((id, agreement, terms, _)) => Ok((id, agreement, terms)),
        None => {
            let why = if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join("; "))
            };
            Err(FetchError::NoAgreement(format!(
                "no agreed contract lets this node fetch `{}`{why}: request one with `meshnode share request`",
                product.name
            )))
        }
    }
}

/// The provider's data-plane address: explicit, or the most recently issued of the
/// descriptor's and the provider's node record's. A node that restarts on another port
/// announces the new address in a fresh node record; the descriptor keeps the address of
/// the run that published it.
async fn provider_addr(
    shared: &Shared,
    options: &FetchOptions,
    terms: &ContractTerms,
) -> Result<SocketAddr, FetchError> {
    if let Some(addr) = options.provider_addr {
        return Ok(addr);
    }
    let from_descriptor = shared
        .store
        .descriptor(&terms.product)?
        .and_then(|(_, e)| e.decode_trusted().ok())
        .and_then(|d| Some((d.published_at_ms, d.data_addr?)));
    let from_record = shared
        .store
        .node_record(&terms.provider)?
        .and_then(|(_, e)| e.decode_trusted().ok())
        .and_then(|r| Some((r.issued_at_ms, r.data_addr?)));
    let text = match (from_descriptor, from_record) {
        (Some(d), Some(r)) => std::cmp::max_by_key(d, r, |(at, _)| *at).1,
        (Some((_, a)), None) | (None, Some((_, a))) => a,
        (None, None) => {
            return Err(FetchError::NoAddress(format!(
                "provider {} has not announced a data-plane address yet; wait for its catalog entry or node record to arrive",
                terms.provider.fingerprint()
            )));
        }
    };
    let mut addrs = tokio::net::lookup_host(text.as_str())
        .await
        .map_err(|e| FetchError::NoAddress(format!("bad provider address `{text}`: {e}")))?;
    addrs.next().ok_or_else(|| {
        FetchError::NoAddress(format!("provider address `{text}` resolves to nothing"))
    })
}

/// The bytes a fetch will write next to `OUT`, as far as the catalog tells: the stored size
/// of the version fetched when the whole product comes as stored (twice that when it is
/// converted to another format, which is written beside the received file), else 0 (the
/// writer checks the disk as the data arrives anyway).
fn expected_bytes(
    shared: &Shared,
    options: &FetchOptions,
    terms: &ContractTerms,
    version_wanted: Option<u64>,
) -> Result<u64, FetchError> {
    if options.narrowing.is_some() || options.compression != Compression::None {
        return Ok(0);
    }
    let Some((_, envelope)) = shared.store.descriptor(&terms.product)? else {
        return Ok(0);
    };
    let copies = if options.format == OutputFormat::Arrow {
        1
    } else {
        2
    };
    Ok(envelope
        .decode_trusted()
        .ok()
        .filter(|d| version_wanted.is_none_or(|v| v == d.version))
        .map_or(0, |d| d.bytes.saturating_mul(copies)))
}

/// A partial file worth continuing, if the state matches this fetch.
fn load_resume(
    paths: &PartialPaths,
    id: &AgreementId,
    terms: &ContractTerms,
    options: &FetchOptions,
) -> Option<(ResumeState, IpcFileBuilder)> {
    // A link in place of the state or the partial file is not ours: start afresh (the
    // caller then removes the links, not what they point to).
    let is_link = |p: &std::path::Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
    };
    if is_link(&paths.state) || is_link(&paths.partial) {
        return None;
    }
    // Bounded, and a regular file only: the output directory may be shared, and a FIFO or
    // a huge file planted there must not hold the fetch or fill memory.
    let text = crate::localfile::read_to_string(&paths.state, MAX_STATE_FILE).ok()?;
    let state: ResumeState = serde_json::from_str(&text).ok()?;
    let matches = state.agreement == id.to_hex()
        && state.product == terms.product.storage_key()
        && state.provider == terms.provider.to_hex()
        && state.compression == options.compression
        && state.narrowing == options.narrowing
        && options.version.is_none_or(|v| v == state.version);
    if !matches {
        return None;
    }
    let builder = IpcFileBuilder::resume(&paths.partial).ok()?;
    (builder.messages() > 0).then_some((state, builder))
}

fn write_state(paths: &PartialPaths, state: &ResumeState) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = paths.state.with_extension("state.tmp");
    // Never through a link someone left at `tmp`: remove it, then create a new file.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?
        .write_all(&serde_json::to_vec_pretty(state).expect("state serialises"))?;
    std::fs::rename(&tmp, &paths.state)
}

/// The client configuration pinned to `provider`, built once per provider (building one
/// generates a certificate).
fn client_config(
    shared: &Shared,
    provider: &mesh_protocol::PublicKey,
) -> Result<quinn::ClientConfig, super::DataPlaneError> {
    let mut cache = shared
        .client_configs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(config) = cache.get(provider) {
        return Ok(config.clone());
    }
    let config = tls::client_config(&shared.identity, provider, shared.config.transport())?;
    cache.insert(*provider, config.clone());
    Ok(config)
}

/// Where a copy of each data frame goes as it is appended to the partial file (see
/// [`fetch_observed`]).
pub(crate) type FrameObserver = mpsc::Sender<bytes::Bytes>;

/// Fetches `options.product` into `options.out`.
pub(super) async fn fetch(
    endpoint: &quinn::Endpoint,
    shared: &std::sync::Arc<Shared>,
    options: FetchOptions,
) -> Result<FetchOutcome, FetchError> {
    fetch_observed(endpoint, shared, options, None).await
}

/// [`fetch`], sending a copy of each data frame (one encapsulated IPC message: schema,
/// dictionary or record batch) to `observer` right after it is appended, so a caller can
/// decode the stream while it arrives. The channel is bounded and the writer waits for
/// room: a slow observer slows the transfer down instead of growing a queue. Only frames
/// of this transfer are sent: with an observer nothing is resumed from an earlier attempt.
/// The frames are unverified until the fetch returns `Ok`; a receiver gone away stops
/// the copies, not the fetch.
pub(super) async fn fetch_observed(
    endpoint: &quinn::Endpoint,
    shared: &std::sync::Arc<Shared>,
    options: FetchOptions,
    observer: Option<FrameObserver>,
) -> Result<FetchOutcome, FetchError> {
    let started = Instant::now();
    if let Some(n) = options.connections
        && Stripe::new(n, 0).is_none()
    {
        return Err(FetchError::BadRequest(format!(
            "a fetch can be striped over 1 to {} connections, not {n}",
            mesh_protocol::transfer::MAX_STRIPES
        )));
    }
    // Held until this function returns: no other fetch writes this path meanwhile.
    let target = {
        let (out, own, force) = (
            options.out.clone(),
            shared.data_dir.root().to_owned(),
            options.force,
        );
        tokio::task::spawn_blocking(move || outpath::prepare(&out, &own, force))
            .await
            .map_err(|e| FetchError::Io {
                what: "checking the output path".into(),
                source: std::io::Error::other(e),
            })??
    };
    let now = now_ms();
    let (id, agreement, terms) = find_agreement(shared, &options, now)?;
    let addr = provider_addr(shared, &options, &terms).await?;
    let paths = PartialPaths::new(target.path.clone());

    // Resuming reads and hashes the whole partial file again: on the blocking pool.
    let resume = {
        let (paths, terms, options) = (paths.clone(), terms.clone(), options.clone());
        let observed = observer.is_some();
        tokio::task::spawn_blocking(move || {
            // With an observer nothing is resumed (see above): the file is not even read.
            let resume = if observed {
                None
            } else {
                load_resume(&paths, &id, &terms, &options)
            };
            if resume.is_none() {
                paths.discard();
            }
            resume
        })
        .await
        .map_err(|e| FetchError::Io {
            what: "reading the partial file to resume".into(),
            source: std::io::Error::other(e),
        })?
    };
    let version_wanted = resume.as_ref().map(|(s, _)| s.version).or(options.version);
    // Before any connection: a whole product needs about its stored size on OUT's disk.
    let held = resume.as_ref().map_or(0, |(_, b)| b.offset());
    let room = Room {
        reserve: shared.config.disk_reserve,
        probe: shared.hooks.disk_probe,
    };
    room.check(
        &paths.partial,
        expected_bytes(shared, &options, &terms, version_wanted)?.saturating_sub(held),
    )
    .map_err(FetchError::NoRoom)?;

    let client = client_config(shared, &terms.provider).map_err(|e| FetchError::Connect {
        addr,
        reason: e.to_string(),
    })?;
    let connect_err = |reason: String| FetchError::Connect { addr, reason };
    // A fetch the provider may stripe opens its connections at once; the others are
    // closed unused when the provider sends everything on the first.
    let count = if Stripe::may_stripe(&terms, options.narrowing.as_ref(), options.compression) {
        options.connections.unwrap_or(shared.config.connections)
    } else {
        1
    };
    let connect = |_| async {
        endpoint
            .connect_with(client.clone(), addr, tls::SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| {
                connect_err(format!(
                    "{e} (is the provider running, and is it the key {}?)",
                    terms.provider.fingerprint()
                ))
            })
    };
    // A failed connection leaves any partial file in place for a later attempt.
    let connections = futures::future::try_join_all((0..count).map(connect)).await?;
    let result = Transfer {
        connections: &connections,
        paths: &paths,
        id,
        terms: &terms,
        options: &options,
        version_wanted,
        resume_from: resume.as_ref().map_or(0, |(_, b)| b.messages()),
        patience: Patience::resuming(
            shared.stall(),
            resume.as_ref().map_or(0, |(_, b)| b.offset()),
        ),
        started,
        room,
    }
    .run(agreement, resume.map(|(_, b)| b), observer)
    .await;
    for connection in &connections {
        connection.close(quinn::VarInt::from_u32(0), b"done");
    }
    shared
        .transfers
        .fetched(&result, started.elapsed().as_secs_f64());
    // Keep a partial file when the transfer may still complete later; drop it when its
    // content or the right to complete it is in doubt.
    match &result {
        Ok(_) | Err(FetchError::Interrupted { .. }) | Err(FetchError::NoRoom(_)) => {}
        Err(FetchError::Refused(r)) if r.code == mesh_protocol::FetchRefusal::Busy => {}
        Err(_) => paths.discard(),
    }
    let outcome = result?;
    let detail = serde_json::json!({
        "agreement": outcome.agreement,
        "product": terms.product.name,
        "provider": outcome.provider,
        "version": outcome.version,
        "rows": outcome.rows,
        "bytes": outcome.bytes,
        "seconds": outcome.seconds,
        "digest": outcome.digest,
        "out": outcome.out,
        "resumed_from_batch": outcome.resumed_from_batch,
    });
    if let Err(e) = shared
        .store
        .audit_append(AuditKind::TransferReceived, &detail, now_ms())
    {
        tracing::error!("cannot audit a received transfer: {e}");
    }
    Ok(outcome)
}

/// The provider closed the connection because this node's key is not a member of its mesh
/// (removed, or never admitted): no retry helps, so not an interruption to resume.
fn refused_as_non_member(
    connection: &quinn::Connection,
    terms: &ContractTerms,
) -> Option<FetchError> {
    match connection.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(super::CLOSE_NOT_MEMBER) =>
        {
            Some(FetchError::NoAgreement(format!(
                "provider {} refused the connection: this node is not a member of its mesh (removed, or not admitted); agreements with it no longer work",
                terms.provider_domain
            )))
        }
        _ => None,
    }
}
