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
/// The end-of-stream marker of an IPC stream (continuation, then a zero length), fed to the
/// decoder once the transfer is verified: the fetch's frames do not carry it.
pub(crate) const END_OF_STREAM: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

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
    /// The fetch; taken when the frames end (and the end-of-stream marker is fed to the
    /// decoder once it verified).
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

/// Decodes what `decoder` can of `pending` (the bytes of data frames, which the provider
/// sent): a batch, or `None` when it needs more bytes. A panic in the decoder is an error.
pub(crate) fn decode(
    decoder: &mut StreamDecoder,
    pending: &mut Buffer,
) -> Result<Option<RecordBatch>, Status> {
    crate::arrow_guard::contain(|| decoder.decode(pending))
        .map_err(|e| Status::data_loss(format!("the provider's stream does not decode: {e}")))
}

/// The next batch, `None` at a verified end.
async fn next_batch(state: &mut Decoding) -> Result<Option<RecordBatch>, Status> {
    loop {
        while !state.pending.is_empty() {
            if let Some(batch) = decode(&mut state.decoder, &mut state.pending)? {
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
        // The end-of-stream marker went through the decoder.
        let Some(fetch) = &mut state.fetch else {
            break;
        };
        if let Some(frame) = state.frames.recv().await {
            state.pending = Buffer::from(frame);
            continue;
        }
        // The fetch ended: only a verified transfer ends the stream normally.
        let outcome = (&mut fetch.0)
            .await
            .map_err(|e| Status::internal(format!("the fetch task failed: {e}")))?;
        state.fetch = None;
        if let Err(e) = outcome {
            return Err(fetch_status(&e));
        }
        // The decoder holds a message without a body (a batch of no rows, or no columns)
        // that ends the last frame until more bytes come: the marker completes it.
        state.pending = Buffer::from_slice_ref(END_OF_STREAM);
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};

    use super::*;
    use crate::dataplane::OutputFormat;

    /// The data frames of an IPC stream of `batches`: one message each, without the
    /// end-of-stream marker, as the fetch hands them to the stream.
    fn frames(batches: &[RecordBatch]) -> Vec<bytes::Bytes> {
        let mut stream = Vec::new();
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut stream, &batches[0].schema()).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
        drop(writer);
        let mut frames = Vec::new();
        let mut at = 0;
        loop {
            let meta = i32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
            if meta == 0 {
                return frames;
            }
            let message = arrow::ipc::root_as_message(&stream[at + 8..at + 8 + meta]).unwrap();
            let end = at + 8 + meta + message.bodyLength() as usize;
            frames.push(bytes::Bytes::copy_from_slice(&stream[at..end]));
            at = end;
        }
    }

    /// Everything the stream gives for `frames` of a fetch that verified.
    async fn stream_of(frames: Vec<bytes::Bytes>) -> Vec<Result<RecordBatch, Status>> {
        let (tx, rx) = mpsc::channel(frames.len());
        for frame in frames {
            tx.try_send(frame).unwrap();
        }
        drop(tx);
        let outcome = FetchOutcome {
            rows: 0,
            bytes: 0,
            batches: 0,
            seconds: 0.0,
            mib_s: 0.0,
            digest: String::new(),
            agreement: String::new(),
            provider: String::new(),
            version: 1,
            out: String::new(),
            file_bytes: 0,
            resumed_from_batch: 0,
            format: OutputFormat::Arrows,
            connections: 1,
        };
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let mut state = Decoding {
            frames: rx,
            decoder: StreamDecoder::new(),
            pending: Buffer::from(Vec::<u8>::new()),
            fetch: Some(AbortOnDrop(tokio::spawn(async move { Ok(outcome) }))),
            emitted: false,
            declared: None,
            _permit: permit,
        };
        let mut items = Vec::new();
        loop {
            match next_batch(&mut state).await {
                Ok(Some(batch)) => items.push(Ok(batch)),
                Ok(None) => return items,
                Err(status) => {
                    items.push(Err(status));
                    return items;
                }
            }
        }
    }

    /// A message without a body (a batch of no rows, as a provider sends when its filter
    /// drops a run of batches, or of no columns) that ends the last frame stays in arrow's
    /// decoder until more bytes come: the stream feeds it the end-of-stream marker, so a
    /// verified transfer ends normally, with that batch, instead of `DATA_LOSS`.
    #[tokio::test]
    async fn a_last_batch_without_a_body_ends_the_stream_normally() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let full = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let empty = RecordBatch::new_empty(schema);
        let frames = frames(&[full.clone(), empty.clone(), full, empty]);
        let body = |f: &bytes::Bytes| {
            let meta = i32::from_le_bytes(f[4..8].try_into().unwrap()) as usize;
            arrow::ipc::root_as_message(&f[8..8 + meta])
                .unwrap()
                .bodyLength()
        };
        assert_eq!(body(&frames[4]), 0, "an empty batch has no body");
        let items = stream_of(frames).await;
        let rows: Vec<usize> = items
            .iter()
            .map(|i| i.as_ref().map(RecordBatch::num_rows).unwrap())
            .collect();
        assert_eq!(rows, [3, 0, 3, 0]);
    }
}
