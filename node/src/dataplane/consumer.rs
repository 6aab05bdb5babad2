//! The consumer side: `fetch` a product under an agreement into an Arrow IPC file.
//!
//! Data goes to `OUT.partial` (an Arrow file under construction, see `ipcfile`) with a small
//! `OUT.partial.state` beside it. Only after the provider's signed trailer matches what was
//! received (rows, batches, BLAKE3 of the stream) is the file completed, synced and renamed
//! to `OUT` — or, for another output format (`convert`), written in that format to
//! `OUT.partial.convert` and renamed to `OUT` when complete. A transfer that breaks off keeps both files; the next fetch of the same product,
//! version and agreement continues from the last complete batch. Any other failure removes
//! them. Before any of that, `outpath` checks and locks the output path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use mesh_protocol::audit::AuditKind;
use mesh_protocol::contract::{AgreementId, ContractState, ContractTerms};
use mesh_protocol::transfer::{FRAME_HEADER_LEN, FrameKind, MAX_CONTROL_FRAME, MAX_DATA_FRAME};
use mesh_protocol::{
    Agreement, Compression, FetchRequest, Frame, FrameDecoder, ProductId, TransferHeader,
    TransferTrailer, encode_frame, verify_trailer,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::convert::{self, OutputFormat};
use super::ipcfile::{AppendError, HEADER_LEN, IpcFileBuilder};
use super::outpath::{self, PlaceError};
use super::{FetchError, PartialPaths, ResumeState, Shared, tls};
use crate::agreements::Role;
use crate::node::now_ms;

/// Data frames queued between the network reader and the file writer.
const FRAME_QUEUE: usize = 8;
/// Frame buffers the writer hands back to the reader for reuse (fresh multi-MiB buffers
/// cost a page fault per 4 KiB page).
const SPARE_BUFFERS: usize = 4;
/// Buffers larger than this are not kept for reuse.
const MAX_SPARE_BUFFER: usize = 16 * 1024 * 1024;
/// The state file is rewritten after this many bytes.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

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
    for (id, record) in shared.store.agreement_records()? {
        let hex = id.to_hex();
        if let Some(prefix) = &options.agreement
            && !hex.starts_with(&prefix.to_ascii_lowercase())
        {
            continue;
        }
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
    let text = std::fs::read_to_string(&paths.state).ok()?;
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

/// One frame read from the provider.
enum Incoming {
    Data(Vec<u8>),
    Control(Frame),
}

/// Why reading stopped.
enum ReadFailure {
    /// The connection or stream broke: resumable.
    Broken(String),
    /// The provider spoke nonsense: not resumable.
    Protocol(String),
}

/// Reads one frame; a data frame's payload goes into `buffer` (cleared first).
async fn read_frame(
    recv: &mut quinn::RecvStream,
    buffer: Vec<u8>,
) -> Result<Incoming, ReadFailure> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut header).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(0) => {
            ReadFailure::Broken("the provider ended the stream without a trailer".into())
        }
        other => ReadFailure::Broken(other.to_string()),
    })?;
    let kind = FrameKind::from_tag(header[0])
        .ok_or_else(|| ReadFailure::Protocol(format!("unknown frame tag {}", header[0])))?;
    let len = u32::from_be_bytes(header[1..].try_into().expect("4 bytes")) as usize;
    let max = if kind == FrameKind::Data {
        MAX_DATA_FRAME
    } else {
        MAX_CONTROL_FRAME
    };
    if len > max {
        return Err(ReadFailure::Protocol(format!(
            "{kind} frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    // Take quinn's chunks as they come (no zero-filling of a buffer we overwrite anyway).
    let mut payload = buffer;
    payload.clear();
    payload.reserve(len);
    while payload.len() < len {
        match recv.read_chunk(len - payload.len(), true).await {
            Ok(Some(chunk)) => payload.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(ReadFailure::Broken(
                    "the provider ended the stream inside a frame".into(),
                ));
            }
            Err(e) => return Err(ReadFailure::Broken(e.to_string())),
        }
    }
    if kind == FrameKind::Data {
        return Ok(Incoming::Data(payload));
    }
    let mut decoder = FrameDecoder::new();
    decoder.push(&header);
    decoder.push(&payload);
    match decoder.next_frame() {
        Ok(Some(frame)) => Ok(Incoming::Control(frame)),
        Ok(None) => Err(ReadFailure::Protocol("incomplete control frame".into())),
        Err(e) => Err(ReadFailure::Protocol(e.to_string())),
    }
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
    let config = tls::client_config(
        &shared.identity,
        provider,
        shared.config.max_transfers_per_peer.max(1),
    )?;
    cache.insert(*provider, config.clone());
    Ok(config)
}

/// What the writer thread ends with.
struct Written {
    builder: IpcFileBuilder,
    error: Option<AppendError>,
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

    let resume = load_resume(&paths, &id, &terms, &options).filter(|_| observer.is_none());
    if resume.is_none() {
        paths.discard();
    }
    let version_wanted = resume.as_ref().map(|(s, _)| s.version).or(options.version);

    let client = client_config(shared, &terms.provider).map_err(|e| FetchError::Connect {
        addr,
        reason: e.to_string(),
    })?;
    let connect_err = |reason: String| FetchError::Connect { addr, reason };
    // A failed connection leaves any partial file in place for a later attempt.
    let connection = endpoint
        .connect_with(client, addr, tls::SERVER_NAME)
        .map_err(|e| connect_err(e.to_string()))?
        .await
        .map_err(|e| {
            connect_err(format!(
                "{e} (is the provider running, and is it the key {}?)",
                terms.provider.fingerprint()
            ))
        })?;
    let result = transfer(
        &connection,
        &paths,
        (id, agreement, &terms),
        &options,
        version_wanted,
        resume,
        started,
        observer,
    )
    .await;
    connection.close(quinn::VarInt::from_u32(0), b"done");
    shared
        .transfers
        .fetched(&result, started.elapsed().as_secs_f64());
    // Keep a partial file when the transfer may still complete later; drop it when its
    // content or the right to complete it is in doubt.
    match &result {
        Ok(_) | Err(FetchError::Interrupted { .. }) => {}
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

#[allow(clippy::too_many_arguments)]
async fn transfer(
    connection: &quinn::Connection,
    paths: &PartialPaths,
    (id, agreement, terms): (AgreementId, Agreement, &ContractTerms),
    options: &FetchOptions,
    version_wanted: Option<u64>,
    resume: Option<(ResumeState, IpcFileBuilder)>,
    started: Instant,
    mut observer: Option<FrameObserver>,
) -> Result<FetchOutcome, FetchError> {
    let resume_from = resume.as_ref().map_or(0, |(_, b)| b.messages());
    let broken = |reason: String| FetchError::Interrupted {
        batches: resume_from,
        reason,
    };
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| {
        refused_as_non_member(connection, terms).unwrap_or_else(|| broken(e.to_string()))
    })?;
    let request = FetchRequest {
        agreement,
        product: terms.product.clone(),
        version: version_wanted,
        resume_from_batch: resume_from,
        compression: options.compression,
        narrowing: options.narrowing.clone(),
    };
    let bytes = encode_frame(&Frame::Request(Box::new(request)))
        .map_err(|e| FetchError::BadRequest(e.to_string()))?;
    send.write_all(&bytes).await.map_err(|e| {
        refused_as_non_member(connection, terms).unwrap_or_else(|| broken(e.to_string()))
    })?;
    let _ = send.finish();

    let header: TransferHeader = match read_frame(&mut recv, Vec::new()).await {
        Ok(Incoming::Control(Frame::Header(h))) => h,
        Ok(Incoming::Control(Frame::Error(refusal))) => return Err(FetchError::Refused(refusal)),
        Ok(_) => {
            return Err(FetchError::Verification(
                "the provider did not start with a transfer header".into(),
            ));
        }
        Err(ReadFailure::Broken(e)) => {
            return Err(refused_as_non_member(connection, terms).unwrap_or(
                FetchError::Interrupted {
                    batches: resume_from,
                    reason: e,
                },
            ));
        }
        Err(ReadFailure::Protocol(e)) => return Err(FetchError::Verification(e)),
    };
    check_header(&header, &id, terms, options, version_wanted, resume_from)?;
    let version = header.version;

    let mut builder = match resume {
        Some((_, b)) => b,
        None => IpcFileBuilder::create(&paths.partial).map_err(|source| FetchError::Io {
            what: format!("cannot create `{}`", paths.partial.display()),
            source,
        })?,
    };
    let mut state = ResumeState {
        agreement: id.to_hex(),
        product: terms.product.storage_key(),
        provider: terms.provider.to_hex(),
        version,
        compression: options.compression,
        narrowing: options.narrowing.clone(),
        batches: builder.messages(),
        rows: builder.rows(),
        bytes: builder.offset(),
        updated_ms: now_ms(),
    };
    write_state(paths, &state).map_err(|source| FetchError::Io {
        what: format!("cannot write `{}`", paths.state.display()),
        source,
    })?;
    let start_bytes = builder.offset();

    // The writer thread appends, hashes and checkpoints; this task only reads the network.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(FRAME_QUEUE);
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SPARE_BUFFERS);
    let writer_paths = paths.clone();
    let mut writer_state = state.clone();
    let expected_names: Vec<String> = header.schema.iter().map(|c| c.name.clone()).collect();
    let progress = options.progress.clone();
    let report = move |builder: &IpcFileBuilder| {
        if let Some(p) = &progress {
            p.set(builder.offset() - HEADER_LEN as u64, builder.rows());
        }
    };
    report(&builder);
    let sync_file = builder.file_handle().map_err(|source| FetchError::Io {
        what: format!("cannot reopen `{}`", paths.partial.display()),
        source,
    })?;
    let writer = tokio::task::spawn_blocking(move || {
        // A second thread forces each checkpoint to disk while the writer goes on, so the
        // final fsync has little left to do, and records the checkpoint once it is durable.
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<ResumeState>(1);
        let state_paths = writer_paths.clone();
        let syncer = std::thread::spawn(move || {
            for checkpoint in sync_rx {
                if sync_file.sync_data().is_ok() {
                    let _ = write_state(&state_paths, &checkpoint);
                }
            }
        });
        let mut last_checkpoint = builder.offset();
        let mut error = None;
        while let Some(frame) = rx.blocking_recv() {
            if let Err(e) = builder.append(&frame) {
                error = Some(e);
                break;
            }
            report(&builder);
            if let Some(o) = &observer
                && o.blocking_send(bytes::Bytes::copy_from_slice(&frame))
                    .is_err()
            {
                observer = None;
            }
            if frame.capacity() <= MAX_SPARE_BUFFER {
                let _ = spare_tx.try_send(frame);
            }
            if builder.messages() == 1 {
                let names: Vec<String> = builder
                    .schema()
                    .map(|s| s.fields().iter().map(|f| f.name().clone()).collect())
                    .unwrap_or_default();
                if names != expected_names {
                    error = Some(AppendError::Protocol(format!(
                        "the stream's columns {names:?} differ from the header's {expected_names:?}"
                    )));
                    break;
                }
            }
            if builder.offset() - last_checkpoint >= CHECKPOINT_BYTES {
                last_checkpoint = builder.offset();
                writer_state.batches = builder.messages();
                writer_state.rows = builder.rows();
                writer_state.bytes = builder.offset();
                writer_state.updated_ms = now_ms();
                // Skipped while the previous sync is still running.
                let _ = sync_tx.try_send(writer_state.clone());
            }
        }
        drop(sync_tx);
        let _ = syncer.join();
        Written { builder, error }
    });

    let end: Result<TransferTrailerEnvelope, ReadFailure>;
    loop {
        let buffer = spare_rx.try_recv().unwrap_or_default();
        match read_frame(&mut recv, buffer).await {
            Ok(Incoming::Data(frame)) => {
                if tx.send(frame).await.is_err() {
                    end = Err(ReadFailure::Protocol("the writer stopped".into()));
                    break;
                }
            }
            Ok(Incoming::Control(Frame::Trailer(t))) => {
                end = Ok(t);
                break;
            }
            Ok(Incoming::Control(Frame::Error(refusal))) => {
                drop(tx);
                let _ = writer.await;
                return Err(FetchError::Refused(refusal));
            }
            Ok(Incoming::Control(other)) => {
                end = Err(ReadFailure::Protocol(format!(
                    "unexpected {} frame in the data",
                    other.kind()
                )));
                break;
            }
            Err(e) => {
                end = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| FetchError::Io {
        what: "the file writer failed".into(),
        source: std::io::Error::other(e),
    })?;
    let Written { builder, error } = written;
    if let Some(error) = error {
        return Err(match error {
            AppendError::Protocol(m) => FetchError::Verification(m),
            AppendError::Io(source) => FetchError::Io {
                what: format!("cannot write `{}`", paths.partial.display()),
                source,
            },
        });
    }
    let trailer = match end {
        Ok(t) => t,
        Err(ReadFailure::Protocol(m)) => return Err(FetchError::Verification(m)),
        Err(ReadFailure::Broken(reason)) => {
            // Keep what arrived: sync it and record the checkpoint for the next attempt.
            let _ = builder.sync();
            state.batches = builder.messages();
            state.rows = builder.rows();
            state.bytes = builder.offset();
            state.updated_ms = now_ms();
            let _ = write_state(paths, &state);
            return Err(FetchError::Interrupted {
                batches: builder.messages(),
                reason,
            });
        }
    };
    let expected = builder
        .tally
        .expected(id, terms.product.clone(), version, resume_from);
    let verified: TransferTrailer = verify_trailer(&trailer, &terms.provider, &expected)
        .map_err(|e| FetchError::Verification(e.to_string()))?;
    let t_trailer = started.elapsed();
    let stream_bytes = builder.offset() - HEADER_LEN as u64;
    let received_now = builder.offset() - start_bytes;
    // A file converted into another format is a temporary: only the conversion is synced.
    let mut file_bytes = builder
        .finish_with(options.format == OutputFormat::Arrow)
        .map_err(|e| FetchError::Io {
            what: format!("cannot complete `{}`", paths.partial.display()),
            source: std::io::Error::other(e),
        })?;
    // Verified: now, and only now, converted when another format was asked for.
    let placed = match options.format {
        OutputFormat::Arrow => &paths.partial,
        format => {
            let (verified, dest) = (paths.partial.clone(), paths.converted.clone());
            file_bytes = tokio::task::spawn_blocking(move || {
                convert::convert(&verified, stream_bytes, format, &dest)
            })
            .await
            .map_err(|e| FetchError::Io {
                what: "the conversion failed".into(),
                source: std::io::Error::other(e),
            })??;
            &paths.converted
        }
    };
    outpath::place(placed, &paths.out, options.force).map_err(|e| match e {
        PlaceError::Exists(e) => FetchError::Output(e),
        PlaceError::Io(source) => FetchError::Io {
            what: format!("cannot move the verified file to `{}`", paths.out.display()),
            source,
        },
    })?;
    let _ = std::fs::remove_file(&paths.state);
    if options.format != OutputFormat::Arrow {
        let _ = std::fs::remove_file(&paths.partial);
    }
    if let Some(parent) = paths.out.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(
        receive_s = t_trailer.as_secs_f64(),
        total_s = seconds,
        "fetch of {} complete",
        terms.product.name
    );
    Ok(FetchOutcome {
        rows: verified.rows,
        bytes: stream_bytes,
        batches: verified.batches,
        seconds,
        mib_s: received_now as f64 / (1024.0 * 1024.0) / seconds.max(1e-9),
        digest: hex::encode(verified.digest),
        agreement: id.to_hex(),
        provider: terms.provider.to_hex(),
        version,
        out: paths.out.display().to_string(),
        file_bytes,
        resumed_from_batch: resume_from,
        format: options.format,
    })
}

type TransferTrailerEnvelope = mesh_protocol::Signed<TransferTrailer>;

/// The header must describe the transfer asked for, and only granted columns.
fn check_header(
    header: &TransferHeader,
    id: &AgreementId,
    terms: &ContractTerms,
    options: &FetchOptions,
    version_wanted: Option<u64>,
    resume_from: u64,
) -> Result<(), FetchError> {
    let bad = |m: String| Err(FetchError::Verification(m));
    if header.agreement_id != *id {
        return bad(format!(
            "the provider answered for agreement {}, not {}",
            header.agreement_id.short(),
            id.short()
        ));
    }
    if header.resume_from_batch != resume_from || header.compression != options.compression {
        return bad("the provider's header does not match the request".into());
    }
    if let Some(v) = version_wanted
        && header.version != v
    {
        return bad(format!(
            "the provider sends version {}, not the requested {v}",
            header.version
        ));
    }
    if !terms.covers_version(header.version) {
        return bad(format!(
            "the provider sends version {}, which the agreement does not cover",
            header.version
        ));
    }
    if let Some(extra) = header
        .schema
        .iter()
        .find(|c| !terms.columns.covers(&c.name))
    {
        return bad(format!(
            "the provider sends column `{}`, which the agreement does not grant",
            extra.name
        ));
    }
    if let Some(wanted) = options.narrowing.as_ref().and_then(|n| n.columns.as_ref())
        && let Some(extra) = header.schema.iter().find(|c| !wanted.contains(&c.name))
    {
        return bad(format!(
            "the provider sends column `{}`, which the request did not ask for",
            extra.name
        ));
    }
    Ok(())
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
