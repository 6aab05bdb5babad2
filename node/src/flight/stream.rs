//! `DoGet` of a product: the fetch runs in its own task and hands a copy of each data frame
//! to this stream as it is appended to the staging file; the frames are decoded with
//! arrow's `StreamDecoder` and go to the client batch by batch, so the first batch leaves
//! before the product has crossed the mesh. The queue between the two is bounded: a slow
//! client slows the transfer down (QUIC flow control reaches the provider), memory stays
//! bounded.
//!
//! The stream's columns are checked against the product's catalog entry before the first
//! batch leaves: the client was told the catalog's schema (`GetFlightInfo`, `GetSchema`),
//! and the fetch checks the stream's column names, not their types. A column the entry does
//! not declare, or one of another type, ends the stream with `FailedPrecondition` before any
//! batch is sent (the check the query engine applies to what it reads,
//! [`crate::sql::type_mismatch`]).
//!
//! The provider's signed trailer is checked after the last batch. When it does not verify
//! (or the transfer breaks off), the stream ends with an error status instead of ending
//! normally: the client sees an error, never a silently complete result, and must discard
//! what it received.

use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::RecordBatch;
use arrow_flight::error::FlightError;
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tonic::Status;

use crate::dataplane::{DataPlane, FetchError, FetchOptions, FetchOutcome};

/// Data frames queued between the fetch and the decoder.
const FRAME_QUEUE: usize = 2;

/// Aborts the fetch task when the stream is dropped (the client went away).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<Result<FetchOutcome, FetchError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where the stream is.
struct Decoding {
    /// Frames from the fetch.
    frames: mpsc::Receiver<bytes::Bytes>,
    /// The IPC stream decoder.
    decoder: StreamDecoder,
    /// What is left of the frame being decoded.
    pending: Buffer,
    /// The fetch; taken when the frames end.
    fetch: Option<AbortOnDrop>,
    /// Whether a batch went out (a product without rows still sends its schema, as an
    /// empty batch).
    emitted: bool,
    /// What the catalog entry declares, when the version read is the one it describes.
    declared: Option<Declared>,
    /// A slot of the endpoint's stream budget, held until the stream ends.
    _permit: OwnedSemaphorePermit,
}

/// The product as its catalog entry declares it, which the stream must match.
#[derive(Clone, Debug)]
pub(crate) struct Declared {
    /// The product, as named to the client.
    pub(crate) product: String,
    /// Every column of the entry, with its declared type.
    pub(crate) schema: SchemaRef,
}

impl Declared {
    /// Refuses a stream with a column the entry does not declare, or of another type.
    fn check(&self, schema: &Schema) -> Result<(), Status> {
        let product = &self.product;
        let fault = if let Some(extra) = schema
            .fields()
            .iter()
            .find(|f| self.schema.column_with_name(f.name()).is_none())
        {
            format!(
                "the provider's data has column `{}`, which the catalog entry of `{product}` does not declare",
                extra.name()
            )
        } else if let Some(mismatch) = crate::sql::type_mismatch(schema, &self.schema) {
            format!("{mismatch} (product `{product}`)")
        } else {
            return Ok(());
        };
        Err(Status::failed_precondition(format!(
            "{fault}: none of this data was sent. Fetch again (GetFlightInfo, then DoGet) once this node's catalog has the provider's current entry; if it persists, the provider serves data its catalog entry does not describe"
        )))
    }
}

/// The status a failed fetch ends the stream with.
pub(crate) fn fetch_status(e: &FetchError) -> Status {
    let message = e.to_string();
    match e {
        FetchError::BadRequest(_) => Status::invalid_argument(message),
        FetchError::NoAgreement(_) | FetchError::NoAddress(_) => Status::not_found(message),
        FetchError::Refused(_) => Status::permission_denied(message),
        FetchError::Connect { .. } | FetchError::Interrupted { .. } => {
            Status::unavailable(format!("{message} (discard the rows received so far)"))
        }
        FetchError::Verification(_) => {
            Status::data_loss(format!("{message}; discard the rows received so far"))
        }
        _ => Status::internal(message),
    }
}

/// Starts fetching `options` and returns the batches as they arrive, each checked against
/// `declared`.
pub(crate) fn product_batches(
    data: DataPlane,
    options: FetchOptions,
    declared: Option<Declared>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static {
    let (tx, rx) = mpsc::channel(FRAME_QUEUE);
    let fetch = tokio::spawn(async move { data.fetch_observed(options, tx).await });
    let state = Decoding {
        frames: rx,
        decoder: StreamDecoder::new(),
        pending: Buffer::from(Vec::<u8>::new()),
        fetch: Some(AbortOnDrop(fetch)),
        emitted: false,
        declared,
        _permit: permit,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match next_batch(&mut state).await {
            Ok(Some(batch)) => Some((Ok(batch), Some(state))),
            Ok(None) => None,
            Err(status) => Some((Err(FlightError::Tonic(Box::new(status))), None)),
        }
    })
}

/// The next batch, `None` at a verified end.
async fn next_batch(state: &mut Decoding) -> Result<Option<RecordBatch>, Status> {
    loop {
        while !state.pending.is_empty() {
            let (decoder, pending) = (&mut state.decoder, &mut state.pending);
            let decoded = crate::arrow_guard::contain(|| decoder.decode(pending)).map_err(|e| {
                Status::data_loss(format!("the provider's stream does not decode: {e}"))
            })?;
            if let Some(batch) = decoded {
                // One schema for the whole stream: checked before the first batch leaves.
                if !state.emitted
                    && let Some(declared) = &state.declared
                {
                    declared.check(batch.schema_ref())?;
                }
                state.emitted = true;
                return Ok(Some(batch));
            }
        }
        match state.frames.recv().await {
            Some(frame) => state.pending = Buffer::from(frame),
            None => break,
        }
    }
    // The fetch ended: only a verified transfer ends the stream normally.
    let Some(mut fetch) = state.fetch.take() else {
        return Ok(None);
    };
    let outcome = (&mut fetch.0)
        .await
        .map_err(|e| Status::internal(format!("the fetch task failed: {e}")))?;
    match outcome {
        Ok(_) => {
            state.decoder.finish().map_err(|e| {
                Status::data_loss(format!("the provider's stream ends inside a message: {e}"))
            })?;
            match state.decoder.schema() {
                Some(schema) if !state.emitted => {
                    if let Some(declared) = &state.declared {
                        declared.check(&schema)?;
                    }
                    state.emitted = true;
                    Ok(Some(RecordBatch::new_empty(schema)))
                }
                _ => Ok(None),
            }
        }
        Err(e) => Err(fetch_status(&e)),
    }
}
