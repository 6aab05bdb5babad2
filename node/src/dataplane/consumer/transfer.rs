//! One transfer on an open connection, as a small state object with named steps:
//!
//! 1. [`Transfer::request`]: open a stream and send the fetch request;
//! 2. [`Transfer::receive_header`]: the provider's header, checked against the request and
//!    the agreement (or its refusal); when it says the fetch is striped, the other stripes
//!    are asked for on the other connections ([`Transfer::open_stripes`]);
//! 3. [`Transfer::open_file`]: the partial file, new or resumed, and its state file;
//! 4. [`Transfer::receive`]: data frames from the network to the [`writer`] thread until the
//!    trailer;
//! 5. [`Transfer::settle`]: what the writer and the reader ended with, into a trailer to
//!    verify, a refusal, or a checkpoint to resume from;
//! 6. [`Transfer::complete`]: verify the signed trailer, finish (and convert) the file and
//!    move it to `OUT`.
//!
//! The network reader and the file writer run concurrently: this task only reads frames
//! (round-robin from the stripes, which restores the stream's order), a blocking thread
//! appends, hashes and checkpoints them. What else waits on the disk (the checkpoint of an
//! interrupted transfer, the footer, the fsyncs, the conversion and the rename into place)
//! runs on the blocking pool too, never on a runtime worker. Every wait for the provider is
//! bounded by the stall bound ([`Patience`]).

use std::time::Instant;

use mesh_protocol::contract::{AgreementId, ContractTerms};
use mesh_protocol::{
    Agreement, FetchRefusal, FetchRequest, Frame, Signed, Stripe, TransferHeader, TransferTrailer,
    encode_frame, verify_trailer,
};

use super::reader::{FrameReader, Incoming, Patience, ReadFailure, StripedReader};
use super::writer::{self, Writer};
use super::{FetchOptions, FetchOutcome, FrameObserver, refused_as_non_member, write_state};
use crate::dataplane::convert::{self, OutputFormat};
use crate::dataplane::framepool::Buffer;
use crate::dataplane::ipcfile::{AppendError, HEADER_LEN, IpcFileBuilder};
use crate::dataplane::outpath::{self, PlaceError};
use crate::dataplane::{FetchError, PartialPaths, ResumeState, human};
use crate::diskroom::Room;
use crate::node::now_ms;

/// A transfer under way on `connections` (to one provider): the first carries the whole
/// stream or its first stripe, the others are used only when the provider stripes it.
pub(super) struct Transfer<'a> {
    pub(super) connections: &'a [quinn::Connection],
    pub(super) paths: &'a PartialPaths,
    pub(super) id: AgreementId,
    pub(super) terms: &'a ContractTerms,
    pub(super) options: &'a FetchOptions,
    /// The version asked for: the resumed one, the requested one, or `None` for the latest.
    pub(super) version_wanted: Option<u64>,
    /// Data frames already held from an interrupted fetch.
    pub(super) resume_from: u64,
    /// How long to wait for the provider before the transfer counts as interrupted.
    pub(super) patience: Patience,
    /// When the fetch started (for the outcome's figures).
    pub(super) started: Instant,
    /// The space to leave free on the output's disk, and where to learn what is free.
    pub(super) room: Room,
}

/// How the data stream ended, as seen by the reader.
type StreamEnd = Result<Signed<TransferTrailer>, ReadFailure>;

impl Transfer<'_> {
    /// Runs every step, from the request to the file at `OUT`.
    pub(super) async fn run(
        self,
        agreement: Agreement,
        resume: Option<IpcFileBuilder>,
        observer: Option<FrameObserver>,
    ) -> Result<FetchOutcome, FetchError> {
        let count = self.connections.len() as u8;
        let first = Stripe::new(count, 0).unwrap_or(Stripe::WHOLE);
        let mut reader = self.request(0, &agreement, first).await?;
        let header = self.receive_header(&mut reader, first).await?;
        let mut reader = self.open_stripes(reader, &header, &agreement).await?;
        let (builder, state) = self.open_file(resume, header.version)?;
        let start_bytes = builder.offset();
        reader.place_from(start_bytes);
        let expected_columns = header.schema.iter().map(|c| c.name.clone()).collect();
        let writer = Writer::spawn(
            builder,
            writer::Setup {
                paths: self.paths.clone(),
                state: state.clone(),
                expected_columns,
                progress: self.options.progress.clone(),
                observer,
                room: self.room,
            },
        )
        .map_err(|source| FetchError::Io {
            what: format!("cannot reopen `{}`", self.paths.partial.display()),
            source,
        })?;
        let (end, writer) = self.receive(&mut reader, writer).await?;
        let written = writer.finish().await?;
        let digest = written.digest;
        let (trailer, builder) = self.settle(end, written, state).await?;
        self.complete(trailer, builder, digest, &header, start_bytes)
            .await
    }

    /// An interruption after `batches` complete data frames.
    fn broken(&self, reason: String) -> FetchError {
        refused_as_non_member(&self.connections[0], self.terms).unwrap_or(FetchError::Interrupted {
            batches: self.resume_from,
            reason,
        })
    }

    /// Step 1: opens a stream on connection `at` and asks for `stripe` on it, within the
    /// stall bound (a provider that grants no stream or takes no byte would hold it forever).
    async fn request(
        &self,
        at: usize,
        agreement: &Agreement,
        stripe: Stripe,
    ) -> Result<FrameReader, FetchError> {
        let request = FetchRequest {
            agreement: agreement.clone(),
            product: self.terms.product.clone(),
            version: self.version_wanted,
            resume_from_batch: self.resume_from,
            compression: self.options.compression,
            narrowing: self.options.narrowing.clone(),
            stripe,
        };
        let bytes = encode_frame(&Frame::Request(Box::new(request)))
            .map_err(|e| FetchError::BadRequest(e.to_string()))?;
        let send_request = async {
            let (mut send, recv) = self.connections[at]
                .open_bi()
                .await
                .map_err(|e| e.to_string())?;
            send.write_all(&bytes).await.map_err(|e| e.to_string())?;
            let _ = send.finish();
            Ok::<_, String>(recv)
        };
        let stall = self.patience.stall;
        match tokio::time::timeout(stall, send_request).await {
            Ok(Ok(recv)) => Ok(FrameReader::new(recv, self.patience)),
            Ok(Err(reason)) => Err(self.broken(reason)),
            Err(_) => {
                Err(self.broken(format!("the provider took no request for {}", human(stall))))
            }
        }
    }

    /// Step 2: the provider's header (or its refusal), checked.
    async fn receive_header(
        &self,
        reader: &mut FrameReader,
        stripe: Stripe,
    ) -> Result<TransferHeader, FetchError> {
        let header = match reader.read(Buffer::default()).await {
            Ok(Incoming::Control(Frame::Header(h))) => h,
            Ok(Incoming::Control(Frame::Error(refusal))) => {
                return Err(FetchError::Refused(refusal));
            }
            Ok(_) => {
                return Err(FetchError::Verification(
                    "the provider did not start with a transfer header".into(),
                ));
            }
            Err(ReadFailure::Broken(e)) => return Err(self.broken(e)),
            Err(ReadFailure::Protocol(e)) => return Err(FetchError::Verification(e)),
        };
        self.check_header(&header)?;
        // The first stripe's stream may carry everything instead; any other, only itself.
        if header.stripe != stripe && !(stripe.index() == 0 && header.stripe == Stripe::WHOLE) {
            return Err(FetchError::Verification(format!(
                "asked for stripe {} of {}, the provider sends stripe {} of {}",
                stripe.index(),
                stripe.count(),
                header.stripe.index(),
                header.stripe.count()
            )));
        }
        Ok(header)
    }

    /// Step 2, continued: when the first stream's header says the fetch is striped, asks
    /// for the other stripes, one per connection, all at once. Each must describe the same
    /// transfer as the first.
    async fn open_stripes(
        &self,
        first: FrameReader,
        header: &TransferHeader,
        agreement: &Agreement,
    ) -> Result<StripedReader, FetchError> {
        let count = header.stripe.count();
        let others = (1..count).map(|k| async move {
            let stripe = Stripe::new(count, k).expect("k < count <= MAX_STRIPES");
            let mut reader = self.request(usize::from(k), agreement, stripe).await?;
            let theirs = match self.receive_header(&mut reader, stripe).await {
                Err(FetchError::Refused(r)) if r.code == FetchRefusal::Busy => {
                    return Err(FetchError::Refused(mesh_protocol::Refusal::new(
                        FetchRefusal::Busy,
                        format!(
                            "{} (this fetch is striped over {count} connections, `data_link.connections`, and each is one of the transfers the provider allows at once; retry when other fetches end, or lower it)",
                            r.message
                        ),
                    )));
                }
                other => other?,
            };
            let same = TransferHeader {
                stripe: header.stripe,
                ..theirs
            };
            if same != *header {
                return Err(FetchError::Verification(format!(
                    "stripe {k} of {count} describes another transfer than stripe 0"
                )));
            }
            Ok(reader)
        });
        let mut readers = vec![first];
        readers.extend(futures::future::try_join_all(others).await?);
        Ok(StripedReader::new(readers, self.resume_from))
    }

    /// The header must describe the transfer asked for, and only granted columns.
    fn check_header(&self, header: &TransferHeader) -> Result<(), FetchError> {
        let (id, terms) = (&self.id, self.terms);
        let bad = |m: String| Err(FetchError::Verification(m));
        if header.agreement_id != *id {
            return bad(format!(
                "the provider answered for agreement {}, not {}",
                header.agreement_id.short(),
                id.short()
            ));
        }
        if header.resume_from_batch != self.resume_from
            || header.compression != self.options.compression
        {
            return bad("the provider's header does not match the request".into());
        }
        if let Some(v) = self.version_wanted
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
        if let Some(wanted) = self
            .options
            .narrowing
            .as_ref()
            .and_then(|n| n.columns.as_ref())
            && let Some(extra) = header.schema.iter().find(|c| !wanted.contains(&c.name))
        {
            return bad(format!(
                "the provider sends column `{}`, which the request did not ask for",
                extra.name
            ));
        }
        Ok(())
    }

    /// Step 3: the partial file (created, or the resumed one) and its first checkpoint.
    fn open_file(
        &self,
        resume: Option<IpcFileBuilder>,
        version: u64,
    ) -> Result<(IpcFileBuilder, ResumeState), FetchError> {
        let builder = match resume {
            Some(b) => b,
            None => {
                IpcFileBuilder::create(&self.paths.partial).map_err(|source| FetchError::Io {
                    what: format!("cannot create `{}`", self.paths.partial.display()),
                    source,
                })?
            }
        };
        let state = ResumeState {
            agreement: self.id.to_hex(),
            product: self.terms.product.storage_key(),
            provider: self.terms.provider.to_hex(),
            version,
            compression: self.options.compression,
            narrowing: self.options.narrowing.clone(),
            batches: builder.messages(),
            rows: builder.rows(),
            bytes: builder.offset(),
            updated_ms: now_ms(),
        };
        write_state(self.paths, &state).map_err(|source| FetchError::Io {
            what: format!("cannot write `{}`", self.paths.state.display()),
            source,
        })?;
        Ok((builder, state))
    }

    /// Step 4: data frames to the writer until the trailer, a refusal or a failure. A
    /// refusal in the middle of the data ends the transfer here, once the writer stopped.
    async fn receive(
        &self,
        reader: &mut StripedReader,
        mut writer: Writer,
    ) -> Result<(StreamEnd, Writer), FetchError> {
        let end = loop {
            match reader.read(writer.spare_buffer().await).await {
                Ok(Incoming::Data(frame)) => {
                    if !writer.write(frame).await {
                        break Err(ReadFailure::Protocol("the writer stopped".into()));
                    }
                }
                Ok(Incoming::Control(Frame::Trailer(t))) => break Ok(t),
                Ok(Incoming::Control(Frame::Error(refusal))) => {
                    let _ = writer.finish().await;
                    return Err(FetchError::Refused(refusal));
                }
                Ok(Incoming::Control(other)) => {
                    break Err(ReadFailure::Protocol(format!(
                        "unexpected {} frame in the data",
                        other.kind()
                    )));
                }
                Err(e) => break Err(e),
            }
        };
        Ok((end, writer))
    }

    /// Step 5: the writer's error comes first (it explains a reader that stopped); a broken
    /// stream or a disk without room records a checkpoint of what arrived, for the next
    /// attempt (synced on the blocking pool).
    async fn settle(
        &self,
        end: StreamEnd,
        written: writer::Written,
        mut state: ResumeState,
    ) -> Result<(Signed<TransferTrailer>, IpcFileBuilder), FetchError> {
        let writer::Written {
            mut builder, error, ..
        } = written;
        // Why the transfer stopped with a sound part worth keeping.
        enum Stop {
            Broken(String),
            NoRoom(crate::diskroom::NoRoom),
        }
        let stop = match (error, end) {
            (Some(AppendError::Protocol(m)), _) => return Err(FetchError::Verification(m)),
            (Some(AppendError::Io(source)), _) => {
                return Err(FetchError::Io {
                    what: format!("cannot write `{}`", self.paths.partial.display()),
                    source,
                });
            }
            (Some(AppendError::NoRoom(no_room)), _) => Stop::NoRoom(no_room),
            (None, Ok(trailer)) => return Ok((trailer, builder)),
            (None, Err(ReadFailure::Protocol(m))) => return Err(FetchError::Verification(m)),
            (None, Err(ReadFailure::Broken(reason))) => Stop::Broken(reason),
        };
        // What arrived is sound and stays for the next attempt: checkpoint it.
        let paths = self.paths.clone();
        let checkpoint = tokio::task::spawn_blocking(move || {
            let _ = builder.sync();
            state.batches = builder.messages();
            state.rows = builder.rows();
            state.bytes = builder.offset();
            state.updated_ms = now_ms();
            let _ = write_state(&paths, &state);
            state.batches
        });
        let kept = checkpoint.await.map_err(|e| FetchError::Io {
            what: "the checkpoint of the interrupted transfer failed".into(),
            source: std::io::Error::other(e),
        })?;
        Err(match stop {
            Stop::Broken(reason) => FetchError::Interrupted {
                batches: kept,
                reason,
            },
            Stop::NoRoom(no_room) => FetchError::NoRoom(no_room),
        })
    }

    /// Step 6: the signed trailer must match what was received; only then is the file
    /// completed (or converted) and moved to `OUT`.
    async fn complete(
        &self,
        trailer: Signed<TransferTrailer>,
        builder: IpcFileBuilder,
        digest: [u8; 32],
        header: &TransferHeader,
        start_bytes: u64,
    ) -> Result<FetchOutcome, FetchError> {
        let (paths, options, terms) = (self.paths, self.options, self.terms);
        let version = header.version;
        // Counted by the writer, hashed by the hasher.
        let mut expected =
            builder
                .tally
                .expected(self.id, terms.product.clone(), version, self.resume_from);
        expected.digest = digest;
        let verified = verify_trailer(&trailer, &terms.provider, &expected)
            .map_err(|e| FetchError::Verification(e.to_string()))?;
        let t_trailer = self.started.elapsed();
        let stream_bytes = builder.offset() - HEADER_LEN as u64;
        let received_now = builder.offset() - start_bytes;
        let file_bytes = {
            let (paths, format, force) = (paths.clone(), options.format, options.force);
            let room = self.room;
            tokio::task::spawn_blocking(move || {
                seal(builder, &paths, format, force, stream_bytes, room)
            })
            .await
            .map_err(|e| FetchError::Io {
                what: "completing the verified file failed".into(),
                source: std::io::Error::other(e),
            })??
        };
        let seconds = self.started.elapsed().as_secs_f64();
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
            agreement: self.id.to_hex(),
            provider: terms.provider.to_hex(),
            version,
            out: paths.out.display().to_string(),
            file_bytes,
            resumed_from_batch: self.resume_from,
            format: options.format,
            connections: header.stripe.count(),
        })
    }
}

/// Step 6's disk work (blocking: run it on the blocking pool): completes the verified file,
/// converts it when another format was asked for, moves the result to `OUT` and syncs the
/// directory. Returns the size of the file at `OUT`.
fn seal(
    builder: IpcFileBuilder,
    paths: &PartialPaths,
    format: OutputFormat,
    force: bool,
    stream_bytes: u64,
    room: Room,
) -> Result<u64, FetchError> {
    // A file converted into another format is a temporary: only the conversion is synced.
    let mut file_bytes = builder
        .finish_with(format == OutputFormat::Arrow)
        .map_err(|e| FetchError::Io {
            what: format!("cannot complete `{}`", paths.partial.display()),
            source: std::io::Error::other(e),
        })?;
    let placed = match format {
        OutputFormat::Arrow => &paths.partial,
        format => {
            file_bytes =
                convert::convert(&paths.partial, stream_bytes, format, &paths.converted, room)?;
            &paths.converted
        }
    };
    outpath::place(placed, &paths.out, force).map_err(|e| match e {
        PlaceError::Exists(e) => FetchError::Output(e),
        PlaceError::Io(source) => FetchError::Io {
            what: format!("cannot move the verified file to `{}`", paths.out.display()),
            source,
        },
    })?;
    let _ = std::fs::remove_file(&paths.state);
    if format != OutputFormat::Arrow {
        let _ = std::fs::remove_file(&paths.partial);
    }
    if let Some(parent) = paths.out.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(file_bytes)
}
