//! `DoGet` of a product: the fetch runs in its own task and hands a copy of each data frame
//! to this stream as it is appended to the staging file; the frames are decoded with
//! arrow's `StreamDecoder` and go to the client batch by batch, so the first batch leaves
//! before the product has crossed the mesh. The queue between the two is bounded: a slow
//! client slows the transfer down (QUIC flow control reaches the provider), memory stays
//! bounded.
//!
//! The provider's signed trailer is checked after the last batch. When it does not verify
//! (or the transfer breaks off), the stream ends with an error status instead of ending
//! normally: the client sees an error, never a silently complete result, and must discard
//! what it received.

use arrow::buffer::Buffer;
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
    /// A slot of the endpoint's stream budget, held until the stream ends.
    _permit: OwnedSemaphorePermit,
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

/// Starts fetching `options` and returns the batches as they arrive.
pub(crate) fn product_batches(
    data: DataPlane,
    options: FetchOptions,
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
                    state.emitted = true;
                    Ok(Some(RecordBatch::new_empty(schema)))
                }
                _ => Ok(None),
            }
        }
        Err(e) => Err(fetch_status(&e)),
    }
}
