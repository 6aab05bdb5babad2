//! Placeholder replaced by the streaming ingest module.
use std::path::Path;
/// Outcome.
#[derive(Debug)]
pub struct IngestOutcome {
    /// Schema.
    pub schema: arrow::datatypes::SchemaRef,
    /// Rows.
    pub rows: u64,
    /// Batches.
    pub batches: u64,
    /// Bytes.
    pub bytes: u64,
    /// Digest.
    pub digest: [u8; 32],
}
/// Error.
#[derive(Debug, thiserror::Error)]
#[error("ingest unavailable")]
pub struct IngestError;
/// Ingest.
pub fn ingest_file(_input: &Path, _output: &Path) -> Result<IngestOutcome, IngestError> {
    Err(IngestError)
}
