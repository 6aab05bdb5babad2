//! The provider side: admit connections, authorise each fetch, stream the allowed data.
//!
//! A connection attempt costs nothing until the admission policy (`admit`) lets it start a
//! handshake; the handshake must complete within the policy's deadline, and only then, with
//! the peer's key known, does the connection take a slot. A connection with no stream open
//! for [`IDLE_CONNECTION`] is closed, so that a slot is not held by keep-alives alone.
//!
//! Nor is a transfer: every wait for the consumer goes through an [`Outlet`], which resets
//! the stream once the consumer has taken nothing for the stall bound
//! ([`STALL_TIMEOUT`](super::STALL_TIMEOUT)), giving back the transfer slot, the file
//! reader's thread and the open file. Transfer slots are bounded per consumer key and in
//! all (`max_transfers`), so slow consumers together hold at most that many reader threads.
//!
//! Membership is checked at the handshake and at every request, and a connection whose key
//! leaves the member set is closed, with every transfer on it. A transfer whose agreement is
//! revoked, or ends, while it runs stops at its next frame with a `revoked` or `expired`
//! refusal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_protocol::admission::TransferRefusal;
use mesh_protocol::audit::AuditKind;
use mesh_protocol::contract::ContractState;
use mesh_protocol::descriptor::validate_name;
use mesh_protocol::transfer::{
    FRAME_HEADER_LEN, FrameKind, MAX_DATA_FRAME, TransferHeader, authorize_fetch,
    encode_data_header,
};
use mesh_protocol::{
    FetchRefusal, FetchRequest, Frame, FrameHeader, PublicKey, Refusal, RunningAgreement, Signed,
    StreamSummary, Stripe, encode_frame,
};
use tokio::sync::mpsc;

use super::admit::{self, HandshakeGuard, SlotGuard};
use super::produce::{self, Emitter, ProduceError, ServePlan};
use super::summaries::FileStamp;
use super::{RESET_STALLED, Shared, Tamper, framepool, human, tls};
use crate::agreements::Role;
use crate::node::now_ms;

/// Data frames queued between the file reader and the network writer.
const FRAME_QUEUE: usize = 4;
/// Sent frame buffers kept for the file reader: the queue's, and about as many as quinn holds
/// until the consumer acknowledges them (a send window of 30 MiB in frames of a few MiB).
const SPARE_FRAMES: usize = FRAME_QUEUE + 8;
/// Time a consumer has to send its request after opening a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection without any open stream for this long is closed and gives its slot back.
const IDLE_CONNECTION: Duration = Duration::from_secs(10);

/// Accepts connections until the endpoint closes.
pub(super) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        if let Some((incoming, guard, deadline_ms)) = admit::admit(&shared, incoming) {
            tokio::spawn(handshake(incoming, guard, deadline_ms, shared.clone()));
        }
    }
}

/// Runs one admitted handshake to its end, then serves the connection if it gets a slot.
async fn handshake(
    incoming: quinn::Incoming,
    guard: HandshakeGuard,
    deadline_ms: u64,
    shared: Arc<Shared>,
) {
    let budget = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("data-plane handshake failed: {e}");
            return;
        }
    };
    // Dropping `connecting` at the deadline closes the half-open connection.
    let connection = match tokio::time::timeout(budget, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!("data-plane handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("data-plane handshake timed out");
            guard.timed_out();
            return;
        }
    };
    let peer = match tls::peer_key(&connection) {
        Ok(k) => k,
        Err(e) => {
            tracing::info!("data-plane peer refused: {e}");
            connection.close(quinn::VarInt::from_u32(1), b"bad certificate");
            return;
        }
    };
    // Watched from before the check: a removal after it still closes the connection.
    let changes = shared.config.members.changes();
    if !shared.config.members.admits(&peer) {
        close_not_member(
            &shared,
            &connection,
            &peer,
            "data-plane connection refused: not a member of the mesh",
        );
        return;
    }
    match guard.establish(peer) {
        Ok(slot) => serve_connection(connection, peer, shared, slot, changes).await,
        Err(refusal) => {
            tracing::info!(%peer, "data-plane connection refused: {refusal}");
            connection.close(quinn::VarInt::from_u32(2), b"busy");
        }
    }
}

/// Closes `connection` because `peer` is not, or no longer, a member of the mesh, with the
/// code the consumer reports as such ([`CLOSE_NOT_MEMBER`](super::CLOSE_NOT_MEMBER)). Every
/// stream on it ends, and with them their transfers.
fn close_not_member(shared: &Shared, connection: &quinn::Connection, peer: &PublicKey, why: &str) {
    if connection.close_reason().is_some() {
        return;
    }
    shared.config.members.count_refusal();
    tracing::info!(%peer, "{why}");
    connection.close(
        quinn::VarInt::from_u32(super::CLOSE_NOT_MEMBER),
        b"not a member",
    );
}

/// Serves the streams of one connection while it holds `_slot`, until it closes, stays
/// idle, or `changes` of the member set leave `peer` out.
async fn serve_connection(
    connection: quinn::Connection,
    peer: PublicKey,
    shared: Arc<Shared>,
    _slot: SlotGuard,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    let mut streams = tokio::task::JoinSet::new();
    loop {
        let idle = streams.is_empty();
        tokio::select! {
            // Cancel-safe: a stream is taken only when the future completes.
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let outlet = Outlet {
                        send,
                        connection: connection.clone(),
                        stall: shared.stall(),
                        peer,
                    };
                    streams.spawn(serve_stream(shared.clone(), peer, outlet, recv));
                }
                Err(_) => break,
            },
            Some(_) = streams.join_next(), if !idle => {}
            // The sender lives as long as the member set: no error while `shared` does.
            Ok(()) = changes.changed() => {
                if !shared.config.members.admits(&peer) {
                    close_not_member(
                        &shared,
                        &connection,
                        &peer,
                        "data-plane connection closed: the key was removed from the mesh",
                    );
                    break;
                }
            }
            () = tokio::time::sleep(IDLE_CONNECTION), if idle => {
                shared
                    .counters
                    .idle_closed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                connection.close(quinn::VarInt::from_u32(0), b"idle");
                break;
            }
        }
    }
    // Streams finish their audit records before the slot is given back.
    while streams.join_next().await.is_some() {}
}

/// A transfer slot of a peer ([`TransferSlots`](mesh_protocol::admission::TransferSlots)),
/// given back when dropped.
struct TransferSlot {
    /// The state holding the slots.
    shared: Arc<Shared>,
    /// The consumer.
    peer: PublicKey,
}

impl TransferSlot {
    /// A slot for a transfer to `peer`, or why there is none (nothing is taken then).
    fn acquire(shared: &Arc<Shared>, peer: PublicKey) -> Result<Self, TransferRefusal> {
        shared.transfer_slots().take(&peer)?;
        Ok(Self {
            shared: shared.clone(),
            peer,
        })
    }
}

impl Drop for TransferSlot {
    fn drop(&mut self) {
        self.shared.transfer_slots().give_back(&self.peer);
    }
}

/// Reads the one request frame of a stream, bounded by
/// [`MAX_CONTROL_FRAME`](mesh_protocol::transfer::MAX_CONTROL_FRAME) before the
/// payload is read.
async fn read_request(recv: &mut quinn::RecvStream) -> Result<FetchRequest, String> {
    let mut bytes = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut bytes)
        .await
        .map_err(|e| format!("no request: {e}"))?;
    let header = FrameHeader::parse(bytes, 0).map_err(|e| e.to_string())?;
    if header.kind != FrameKind::Request {
        return Err(format!(
            "expected a request frame, got a {} frame",
            header.kind
        ));
    }
    let mut payload = vec![0u8; header.len];
    recv.read_exact(&mut payload)
        .await
        .map_err(|e| format!("truncated request: {e}"))?;
    match header.decode(&payload) {
        Ok(Frame::Request(r)) => Ok(*r),
        Ok(other) => Err(format!(
            "expected a request frame, got a {} frame",
            other.kind()
        )),
        Err(e) => Err(e.to_string()),
    }
}

async fn send_control(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), String> {
    let bytes = encode_frame(frame).map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())
}

async fn refuse(shared: &Shared, mut send: quinn::SendStream, refusal: Refusal) {
    tracing::info!(code = %refusal.code, "fetch refused: {}", refusal.message);
    shared.transfers.refused("provider", refusal.code);
    shared.transfers.ended("provider", "refused", 0.0);
    let _ = send_control(&mut send, &Frame::Error(refusal)).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}

async fn serve_stream(
    shared: Arc<Shared>,
    peer: PublicKey,
    outlet: Outlet,
    mut recv: quinn::RecvStream,
) {
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut recv)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "bad fetch request: {e}");
            return;
        }
        Err(_) => return,
    };
    drop(recv);
    // Membership at every request, not only at the handshake (the connection is also closed
    // when the key is removed; this covers a removal the connection has not acted on yet).
    if !shared.config.members.admits(&peer) {
        close_not_member(
            &shared,
            &outlet.connection,
            &peer,
            "fetch refused: the key is no longer a member of the mesh; connection closed",
        );
        return;
    }
    // The consumer's rate before anything is checked, read or audited for it.
    let limited = shared
        .fetch_rates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(&peer, now_ms())
        .err();
    if let Some(retry_ms) = limited {
        let rate = shared.config.fetch_rate;
        refuse(
            &shared,
            outlet.send,
            Refusal::new(
                FetchRefusal::Busy,
                format!(
                    "this provider takes {} fetch requests from you back to back, then one every {} ms; retry in {retry_ms} ms",
                    rate.burst, rate.refill_ms
                ),
            ),
        )
        .await;
        return;
    }
    // Taken before anything blocking is spawned for the request: the slots bound the
    // threads of the blocking pool that transfers hold, however slowly their consumers read.
    let slot = match TransferSlot::acquire(&shared, peer) {
        Ok(slot) => slot,
        Err(refusal) => {
            let refusal = Refusal::new(FetchRefusal::Busy, refusal.to_string());
            return refuse(&shared, outlet.send, refusal).await;
        }
    };
    let now = now_ms();
    let store = shared.store.clone();
    let prepared = {
        let shared = shared.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || authorize(&shared, &request, &peer, now)).await
    };
    // A refused request gives its slot back before the refusal is delivered: waiting for the
    // consumer to acknowledge it must not count as a transfer.
    let authorized = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(refusal)) => {
            drop(slot);
            return refuse(&shared, outlet.send, refusal).await;
        }
        Err(e) => {
            drop(slot);
            return refuse(
                &shared,
                outlet.send,
                Refusal::new(FetchRefusal::Internal, e.to_string()),
            )
            .await;
        }
    };
    let started = Instant::now();
    let agreement_id = request.agreement.id();
    let (version, stripe) = (authorized.version, authorized.stripe);
    let outcome = stream(&shared, outlet, &request, authorized).await;
    drop(slot);
    let outcome_label = if outcome.is_ok() {
        "completed"
    } else {
        "failed"
    };
    shared
        .transfers
        .ended("provider", outcome_label, started.elapsed().as_secs_f64());
    if let Ok((summary, sent_bytes)) = outcome {
        let seconds = started.elapsed().as_secs_f64();
        let detail = serde_json::json!({
            "agreement": agreement_id.to_hex(),
            "product": request.product.name,
            "version": version,
            "consumer": peer.to_hex(),
            "rows": summary.rows,
            "batches": summary.batches,
            "bytes_sent": sent_bytes,
            "resume_from_batch": request.resume_from_batch,
            "stripe": [stripe.index(), stripe.count()],
            "seconds": seconds,
            "digest": hex::encode(summary.digest),
        });
        if let Err(e) = store.audit_append(AuditKind::TransferServed, &detail, now_ms()) {
            tracing::error!("cannot audit a served transfer: {e}");
        }
        tracing::info!(%peer, product = %request.product.name, version, rows = summary.rows, "transfer served");
    }
}

/// What a request was authorized for.
struct Authorized {
    /// What is read and how it is encoded.
    plan: ServePlan,
    /// The version served.
    version: u64,
    /// What this stream carries of it.
    stripe: Stripe,
    /// The agreement, checked again at every frame.
    agreement: RunningAgreement,
}

/// Every check before the first data byte.
fn authorize(
    shared: &Shared,
    request: &FetchRequest,
    peer: &PublicKey,
    now: u64,
) -> Result<Authorized, Refusal> {
    use FetchRefusal as R;
    let me = shared.identity.public_key();
    let skew = shared.config.clock_skew_ms;
    let terms = authorize_fetch(request, &me, peer, now, skew)?;
    let id = request.agreement.id();
    let short = id.short();
    let internal = |e: crate::store::StoreError| Refusal::new(R::Internal, e.to_string());
    if shared.store.revocation(&id).map_err(internal)?.is_some() {
        return Err(Refusal::new(
            R::Revoked,
            format!("agreement {short} was revoked"),
        ));
    }
    let record = shared
        .store
        .agreement(&id)
        .map_err(internal)?
        .ok_or_else(|| {
            Refusal::new(
                R::NoAgreement,
                format!("this provider holds no agreement {short}"),
            )
        })?;
    if record.role != Role::Provider {
        return Err(Refusal::new(
            R::NoAgreement,
            format!("agreement {short} is not one this node provides under"),
        ));
    }
    // The expiry was checked above with the clock-skew tolerance; the stored state is read
    // at the same tolerance so that both agree.
    match record.state_at(now.saturating_sub(skew)) {
        ContractState::Agreed => {}
        ContractState::Revoked => {
            return Err(Refusal::new(
                R::Revoked,
                format!("agreement {short} was revoked"),
            ));
        }
        ContractState::Expired => {
            return Err(Refusal::new(
                R::Expired,
                format!("agreement {short} expired at {}", terms.valid_until_ms),
            ));
        }
        other => {
            return Err(Refusal::new(
                R::NoAgreement,
                format!("agreement {short} is {other}, not agreed"),
            ));
        }
    }
    if record.revocation.is_some() {
        return Err(Refusal::new(
            R::Revoked,
            format!("agreement {short} was revoked"),
        ));
    }
    let name = &terms.product.name;
    if terms.product.owner != me || validate_name("product", name).is_err() {
        return Err(Refusal::new(
            R::UnknownProduct,
            format!("this node does not serve product `{name}`"),
        ));
    }
    let latest = shared
        .store
        .local_version(name)
        .map_err(internal)?
        .ok_or_else(|| {
            Refusal::new(
                R::UnknownProduct,
                format!("this node does not serve product `{name}`"),
            )
        })?;
    let version = match request.version {
        Some(v) if v > latest || v == 0 => {
            return Err(Refusal::new(
                R::UnknownVersion,
                format!("product `{name}` has versions 1..={latest}, not {v}"),
            ));
        }
        Some(v) => v,
        None => {
            let v = terms.max_version.map_or(latest, |m| m.min(latest));
            if !terms.covers_version(v) {
                return Err(Refusal::new(
                    R::NotCovered,
                    format!(
                        "agreement {short} covers versions from {}, but the latest of `{name}` is {latest}",
                        terms.min_version
                    ),
                ));
            }
            v
        }
    };
    let path = shared.data_dir.product_file(name, version);
    if !path.exists() {
        return Err(Refusal::new(
            R::UnknownVersion,
            format!("version {version} of `{name}` is no longer held by this provider"),
        ));
    }
    // Every version is served under the product's restrictions now: those of the latest
    // version and those of columns it no longer has (an older file may hold them). Without
    // the latest descriptor nothing is served: no restriction is assumed away.
    let described = shared
        .store
        .descriptor(&terms.product)
        .map_err(internal)?
        .and_then(|(_, envelope)| envelope.decode_trusted().ok())
        .ok_or_else(|| {
            Refusal::new(
                R::Internal,
                format!("the descriptor of `{name}` cannot be read: nothing is served"),
            )
        })?;
    let mut restricted = described.policy.restricted_columns;
    for column in shared
        .store
        .restricted_columns(name)
        .map_err(internal)?
        .unwrap_or_default()
    {
        if !restricted.contains(&column) {
            restricted.push(column);
        }
    }
    let plan = produce::plan(
        &path,
        &terms,
        &restricted,
        request.compression,
        request.narrowing.as_ref(),
    )
    .map_err(|e| match e {
        ProduceError::Terms(m) => Refusal::new(R::NotCovered, m),
        other => Refusal::new(R::Internal, other.to_string()),
    })?;
    let stripe = request.stripe.served(plan.passthrough).ok_or_else(|| {
        Refusal::new(
            R::NotCovered,
            format!(
                "`{name}` is re-encoded for this fetch's terms and is not striped: fetch it over one connection"
            ),
        )
    })?;
    Ok(Authorized {
        plan,
        version,
        stripe,
        agreement: RunningAgreement::new(id, &terms, skew),
    })
}

/// Whether the agreement of a running transfer still holds: the refusal to end it with once
/// a revocation is recorded or the agreement expired (or the revocations cannot be read).
fn still_agreed(store: &crate::store::Store, agreement: &RunningAgreement) -> Result<(), Refusal> {
    let revoked = store
        .revocation(agreement.id())
        .map_err(|e| Refusal::new(FetchRefusal::Internal, e.to_string()))?
        .is_some();
    agreement.check(now_ms(), revoked)
}

/// Sends header, the data frames of `stripe` and the trailer. Returns the stream's summary and the bytes sent on
/// success.
async fn stream(
    shared: &Arc<Shared>,
    mut outlet: Outlet,
    request: &FetchRequest,
    authorized: Authorized,
) -> Result<(StreamSummary, u64), ()> {
    let Authorized {
        plan,
        version,
        stripe,
        agreement,
    } = authorized;
    let header = TransferHeader {
        agreement_id: request.agreement.id(),
        version,
        schema: plan.schema.clone(),
        total_batches_hint: plan.total_batches,
        resume_from_batch: request.resume_from_batch,
        compression: plan.compression,
        stripe,
    };
    outlet.control(&Frame::Header(header)).await?;

    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(FRAME_QUEUE);
    let resume_from = request.resume_from_batch;
    let tamper = shared.hooks.tamper;
    // A whole product sent as stored: the summary of an earlier serve of the same file
    // spares hashing it again (see `summaries`).
    let stamp = plan
        .passthrough
        .then(|| FileStamp::of(&plan.path).ok())
        .flatten();
    let known = stamp.and_then(|stamp| shared.summaries().get(&plan.path, stamp));
    let path = plan.path.clone();
    // Frames read from the file reuse the buffers quinn has released; encoded ones vary in
    // size and are allocated as they come.
    let (home, spares) = plan
        .passthrough
        .then(|| framepool::pool(SPARE_FRAMES))
        .unzip();
    // A revocation heard, or the agreement's end reached, while the transfer runs stops it at
    // the next frame (the reader thread does the store read): what is queued still goes out,
    // then the refusal.
    let store = shared.store.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let mut stopped = None;
        let mut emitter = Emitter::new(resume_from, stripe, known.is_none(), |frame| {
            stopped = still_agreed(&store, &agreement).err();
            stopped.is_none() && tx.blocking_send(frame).is_ok()
        })
        .reusing(spares);
        let result = produce::produce(&plan, &mut emitter);
        let tally = emitter.tally;
        (result, tally, stopped)
    });
    let mut sent_frames = 0u64;
    let mut sent_bytes = 0u64;
    while let Some(mut frame) = rx.recv().await {
        if let Some(limit) = shared.hooks.pause_after_frames
            && sent_frames == limit
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            shared.hooks.paused.notify_one();
            std::future::pending::<()>().await;
        }
        if tamper == Some(Tamper::DataByte) && sent_frames == 1 {
            let last = frame.len() - 1;
            frame[last] ^= 0x5a;
        }
        let Ok(header) = encode_data_header(frame.len()) else {
            // Said, not just dropped: a stream that merely ends looks like a broken
            // connection, and the consumer would resume into the same frame forever.
            let message = format!(
                "a message of {} bytes of {} exceeds the data frame limit ({MAX_DATA_FRAME} bytes) \
                 and cannot be served: its owner must publish it again with smaller batches",
                frame.len(),
                request.product.name
            );
            outlet.fail(message).await;
            return Err(());
        };
        let frame = match &home {
            Some(home) => home.share(frame),
            None => Bytes::from(frame),
        };
        sent_bytes += (header.len() + frame.len()) as u64;
        shared.transfers.sent((header.len() + frame.len()) as u64);
        // On failure the consumer went away or stalled; the producer stops on its own once
        // `rx` is dropped.
        outlet
            .write(&mut [Bytes::copy_from_slice(&header), frame])
            .await?;
        sent_frames += 1;
    }
    drop(rx);
    let (result, tally, stopped) = match producer.await {
        Ok(done) => done,
        Err(e) => {
            let message = format!("serving {} failed: {e}", request.product.name);
            outlet.fail(message).await;
            return Err(());
        }
    };
    if let Some(refusal) = stopped {
        tracing::info!(peer = %outlet.peer, code = %refusal.code, "transfer stopped: {}", refusal.message);
        let _ = outlet.control(&Frame::Error(refusal)).await;
        let _ = outlet.send.finish();
        return Err(());
    }
    match result {
        Ok(()) => {}
        Err(ProduceError::Cancelled) => return Err(()),
        Err(ProduceError::Terms(message)) => {
            // The terms do not fit the data as read, e.g. a filter literal that does not bind
            // to its column's type: the agreement does not cover a fetch of this data, and the
            // consumer is told why, as when the terms are checked before the transfer.
            tracing::info!(peer = %outlet.peer, "transfer refused: {message}");
            let refusal = Refusal::new(FetchRefusal::NotCovered, message);
            let _ = outlet.control(&Frame::Error(refusal)).await;
            let _ = outlet.send.finish();
            return Err(());
        }
        Err(e) => {
            tracing::error!("serving {} failed: {e}", request.product.name);
            let refusal = Refusal::new(FetchRefusal::Internal, e.to_string());
            let _ = outlet.control(&Frame::Error(refusal)).await;
            let _ = outlet.send.finish();
            return Err(());
        }
    }
    let summary = match known {
        Some(known) if (known.batches, known.rows) == (tally.batches(), tally.rows()) => known,
        Some(_) => {
            // Counted differently from the summary: the file changed under the stamp. The
            // consumer would refuse the trailer; say why instead of signing it.
            let message = format!(
                "the file of {} changed while it was served; fetch again",
                request.product.name
            );
            tracing::error!("{message}");
            let refusal = Refusal::new(FetchRefusal::Internal, message);
            let _ = outlet.control(&Frame::Error(refusal)).await;
            let _ = outlet.send.finish();
            return Err(());
        }
        None => {
            let summary = tally.summary();
            if let Some(stamp) = stamp
                && FileStamp::of(&path).ok() == Some(stamp)
            {
                shared.summaries().insert(&path, stamp, summary);
            }
            summary
        }
    };
    let mut trailer = summary.trailer(
        request.agreement.id(),
        request.product.clone(),
        version,
        request.resume_from_batch,
    );
    let signer = match tamper {
        Some(Tamper::TrailerDigest) => {
            trailer.digest[0] ^= 1;
            shared.identity.clone()
        }
        Some(Tamper::TrailerSigner) => mesh_protocol::Identity::from_secret_bytes([0x66; 32]),
        _ => shared.identity.clone(),
    };
    let signed = Signed::sign(&signer, &trailer);
    outlet.control(&Frame::Trailer(signed)).await?;
    // Wait until the consumer has everything (or is gone) before the slot is released.
    outlet.finish().await?;
    Ok((summary, sent_bytes))
}

/// The provider's end of a transfer stream, where every wait for the consumer is bounded:
/// once the consumer has taken nothing for `stall`, the stream is reset (quinn drops what it
/// still buffers for it) and the transfer ends. Progress is bytes moved, so a slow consumer
/// that keeps reading is served however long the product takes.
struct Outlet {
    /// The stream.
    send: quinn::SendStream,
    /// Its connection, whose counters show whether a finished stream's tail still moves.
    connection: quinn::Connection,
    /// The stall bound ([`STALL_TIMEOUT`](super::STALL_TIMEOUT) unless a test shortens it).
    stall: Duration,
    /// The consumer, for the log.
    peer: PublicKey,
}

impl Outlet {
    /// Writes `chunks` whole. Fails when the consumer stopped the stream or closed the
    /// connection, or when no byte of them was taken for the stall bound (the consumer does
    /// not read, so flow control holds every write): then the stream is reset.
    async fn write(&mut self, mut chunks: &mut [Bytes]) -> Result<(), ()> {
        while !chunks.is_empty() {
            // Cancel-safe: a `write_chunks` that does not complete wrote nothing.
            match tokio::time::timeout(self.stall, self.send.write_chunks(chunks)).await {
                Ok(Ok(written)) => chunks = &mut chunks[written.chunks..],
                Ok(Err(_)) => return Err(()),
                Err(_) => {
                    self.stalled();
                    return Err(());
                }
            }
        }
        Ok(())
    }

    /// Writes one control frame, as [`Outlet::write`].
    async fn control(&mut self, frame: &Frame) -> Result<(), ()> {
        let bytes = encode_frame(frame).map_err(|_| ())?;
        self.write(&mut [Bytes::from(bytes)]).await
    }

    /// Finishes the stream and waits until the consumer acknowledged all of it or stopped
    /// it. What remains to be delivered is at most a flow-control window, which the
    /// consumer's QUIC stack acknowledges whether or not it reads; while stream data still
    /// goes out on the connection (sent or resent) the wait goes on, and once none has for
    /// the stall bound the stream is reset.
    async fn finish(&mut self) -> Result<(), ()> {
        let _ = self.send.finish();
        let mut sent = self.connection.stats().frame_tx.stream;
        loop {
            match tokio::time::timeout(self.stall, self.send.stopped()).await {
                Ok(_) => return Ok(()),
                Err(_) => {
                    let now = self.connection.stats().frame_tx.stream;
                    if now == sent {
                        self.stalled();
                        return Err(());
                    }
                    sent = now;
                }
            }
        }
    }

    /// Gives up on a consumer that took nothing for the stall bound.
    /// Tells the consumer that serving failed (an internal error, not resumable as it is),
    /// logs why, and finishes the stream.
    async fn fail(&mut self, message: String) {
        tracing::error!("{message}");
        let refusal = Refusal::new(FetchRefusal::Internal, message);
        let _ = self.control(&Frame::Error(refusal)).await;
        let _ = self.send.finish();
    }

    fn stalled(&mut self) {
        tracing::info!(
            peer = %self.peer,
            "transfer given up: the consumer took nothing for {}; stream reset",
            human(self.stall)
        );
        let _ = self.send.reset(quinn::VarInt::from_u32(RESET_STALLED));
    }
}
