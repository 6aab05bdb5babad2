//! One product as a DataFusion table: scans fetch only what the query needs.
//!
//! The table's schema is what queries see; a column re-typed for queries (a decimal of
//! negative scale, `retype`) is read with its catalog type and converted batch by batch,
//! and filters on it are never pushed to the provider (the filter language compares on
//! the catalog type): DataFusion evaluates them on the converted values.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatchOptions;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::ipc::reader::FileReader;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use futures::StreamExt;
use mesh_protocol::Narrowing;

use super::cache::Cache;
use super::{Inner, Table, pushdown, retype};
use crate::dataplane::{FetchError, FetchOptions, OutputFormat, PartialPaths};

/// Record batches read ahead of the query.
const READ_AHEAD: usize = 2;
/// Read buffer of a cached file.
const READ_BUFFER: usize = 1024 * 1024;

/// Why a scan could not deliver its data.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The fetch of the table's data failed.
    #[error("fetching {table} failed: {source}")]
    Fetch {
        /// The table.
        table: String,
        /// HTTP status of the failure (as for `POST /v1/fetch`).
        status: u16,
        /// Machine-readable label of the failure.
        kind: &'static str,
        /// What failed.
        #[source]
        source: FetchError,
    },
    /// The cache directory or a cached file could not be used.
    #[error("the query cache failed: {what}: {source}")]
    Cache {
        /// What was being done.
        what: String,
        /// The error of the file system.
        #[source]
        source: std::io::Error,
    },
    /// A received file could not be read as the table's columns.
    #[error("the received data of {table} cannot be read: {reason}")]
    Data {
        /// The table.
        table: String,
        /// What is wrong.
        reason: String,
    },
}

impl ScanError {
    /// HTTP status for the control API.
    pub fn status_code(&self) -> u16 {
        match self {
            ScanError::Fetch { status, .. } => *status,
            ScanError::Cache { .. } => 500,
            ScanError::Data { .. } => 502,
        }
    }

    /// Short machine-readable label.
    pub fn kind(&self) -> &'static str {
        match self {
            ScanError::Fetch { kind, .. } => kind,
            ScanError::Cache { .. } => "io",
            ScanError::Data { .. } => "verification",
        }
    }
}

/// The `TableProvider` of one product under one agreement.
#[derive(Debug)]
pub(super) struct MeshTable {
    /// The table.
    table: Arc<Table>,
    /// The engine (data plane, cache).
    engine: Arc<Inner>,
}

impl MeshTable {
    pub(super) fn new(table: Arc<Table>, engine: Arc<Inner>) -> Self {
        Self { table, engine }
    }
}

#[async_trait]
impl TableProvider for MeshTable {
    fn schema(&self) -> SchemaRef {
        self.table.info.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match pushdown::to_filter(f, &self.table.pushable) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let all: Vec<usize> = (0..schema.fields().len()).collect();
        let indices = projection.cloned().unwrap_or(all);
        let projected = Arc::new(schema.project(&indices)?);
        let declared = Arc::new(self.table.declared.project(&indices)?);
        let mut columns: Vec<String> = projected
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if columns.is_empty() {
            // `count(*)` needs rows, not values: fetch the first granted column only.
            let first = self.table.granted.first().ok_or_else(|| {
                DataFusionError::Plan(format!("{} has no granted column", self.table.info.name))
            })?;
            columns.push(first.name.clone());
        }
        let filter = pushdown::combine(filters, &self.table.pushable).map(|f| f.to_string());
        // The names are distinct granted columns: as many means all of them.
        let all_columns = columns.len() == self.table.granted.len();
        let narrowing = (!all_columns || filter.is_some()).then(|| Narrowing {
            columns: (!all_columns).then_some(columns),
            filter,
        });
        let partition = Arc::new(MeshPartition {
            schema: projected.clone(),
            declared,
            table: self.table.clone(),
            engine: self.engine.clone(),
            narrowing,
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            projected,
            vec![partition],
            None,
            Vec::<LexOrdering>::new(),
            false,
            None,
        )?))
    }
}

/// The single partition of a scan: fetch (or find in the cache), then read.
#[derive(Debug)]
struct MeshPartition {
    /// Columns delivered to the query (possibly none, for `count(*)`).
    schema: SchemaRef,
    /// The same columns with their catalog types (what the received file holds).
    declared: SchemaRef,
    /// The table.
    table: Arc<Table>,
    /// The engine.
    engine: Arc<Inner>,
    /// What is asked of the provider beyond the agreement.
    narrowing: Option<Narrowing>,
}

impl PartitionStream for MeshPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (schema, declared, table, engine, narrowing) = (
            self.schema.clone(),
            self.declared.clone(),
            self.table.clone(),
            self.engine.clone(),
            self.narrowing.clone(),
        );
        let read_schema = schema.clone();
        let stream = futures::stream::once(async move {
            let path = obtain(&engine, &table, narrowing).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
            let name = table.info.name.clone();
            let reading = name.clone();
            let reader = tokio::task::spawn_blocking(move || {
                read_as(path, declared, read_schema, reading, tx)
            });
            Ok::<_, ScanError>((rx, reader, name))
        })
        .flat_map(|opened| match opened {
            Ok(reading) => futures::stream::unfold(Some(reading), |state| async move {
                let (mut rx, reader, table) = state?;
                if let Some(item) = rx.recv().await {
                    return Some((item, Some((rx, reader, table))));
                }
                // The reader is done: a panic that ended it early is the query's error,
                // not the end of the data.
                match reader.await {
                    Ok(()) => None,
                    Err(e) => {
                        let reason = format!("reading it stopped: {e}");
                        let error = ScanError::Data { table, reason };
                        Some((Err(DataFusionError::External(Box::new(error))), None))
                    }
                }
            })
            .boxed(),
            Err(e) => futures::stream::iter([Err(DataFusionError::External(Box::new(e)))]).boxed(),
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// Removes a fetch's temporary files unless disarmed (also when the query is dropped
/// mid-fetch).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(&path);
            PartialPaths::new(path).discard();
        }
    }
}

/// The complete file of this scan's data: from the cache, or fetched into it.
async fn obtain(
    engine: &Inner,
    table: &Table,
    narrowing: Option<Narrowing>,
) -> Result<PathBuf, ScanError> {
    let info = &table.info;
    let cache = &engine.cache;
    let key = Cache::key(&info.agreement, info.version, narrowing.as_ref());
    let path = cache.path(&key);
    let _filling = cache.lock(&key).await;
    if path.is_file() {
        if Cache::intact(&path) {
            Cache::touch(&path);
            return Ok(path);
        }
        tracing::warn!(
            table = %info.name,
            file = %path.display(),
            "a received file kept for queries is no longer what was verified (truncated, \
             edited or damaged on disk): removed, and fetched again"
        );
        Cache::discard(&path);
    }
    cache.ensure_dir().map_err(|source| ScanError::Cache {
        what: "cannot create the cache directory".into(),
        source,
    })?;
    let temp = cache.temp_path();
    let mut guard = TempGuard(Some(temp.clone()));
    let options = FetchOptions {
        product: info.product.clone(),
        out: temp.clone(),
        agreement: Some(info.agreement.to_hex()),
        version: Some(info.version),
        compression: mesh_protocol::Compression::None,
        provider_addr: None,
        force: false,
        format: OutputFormat::Arrow,
        progress: None,
        narrowing,
        connections: None,
    };
    engine.data.fetch(options).await.map_err(|source| {
        let kind = source.code();
        let status = fetch_status(&source);
        ScanError::Fetch {
            table: info.name.clone(),
            status,
            kind,
            source,
        }
    })?;
    Cache::seal(&temp, &path).map_err(|source| ScanError::Cache {
        what: format!("cannot seal the received file for `{}`", path.display()),
        source,
    })?;
    std::fs::rename(&temp, &path).map_err(|source| ScanError::Cache {
        what: format!("cannot move the received file to `{}`", path.display()),
        source,
    })?;
    guard.0 = None;
    cache.evict(&path);
    Ok(path)
}

/// The HTTP status `POST /v1/fetch` answers for `e` (the query's own files are not the
/// caller's to fix, so output and disk failures are internal).
fn fetch_status(e: &FetchError) -> u16 {
    match e {
        FetchError::BadRequest(_) => 400,
        FetchError::NoAgreement(_) | FetchError::NoAddress(_) => 404,
        FetchError::Refused(_) => 403,
        FetchError::Connect { .. }
        | FetchError::Interrupted { .. }
        | FetchError::Verification(_) => 503,
        _ => 500,
    }
}

/// Reads the cached file at `path` batch by batch into `tx`, each batch shaped as `schema`
/// (blocking: runs on a blocking thread).
#[cfg(test)]
pub(crate) fn read(
    path: PathBuf,
    schema: SchemaRef,
    table: String,
    tx: tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
) {
    read_as(path, schema.clone(), schema, table, tx);
}

/// Reads the cached file at `path` batch by batch into `tx`, each batch shaped as
/// `declared` (the catalog's types, checked), then converted to `schema` (the types queries
/// see, [`retype::present_batch`]) where the two differ (blocking: runs on a blocking
/// thread).
fn read_as(
    path: PathBuf,
    declared: SchemaRef,
    schema: SchemaRef,
    table: String,
    tx: tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
) {
    let retyped = declared != schema;
    let fail = |reason: String| {
        DataFusionError::External(Box::new(ScanError::Data {
            table: table.clone(),
            reason,
        }))
    };
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(ScanError::Cache {
                what: format!("cannot open `{}`", path.display()),
                source: e,
            }))));
            return;
        }
    };
    // The batches came from a peer: their declared sizes are checked before a reader
    // allocates them (and a failed allocation aborts the process).
    if let Err(e) = crate::arrow_guard::check_file(&mut file, &crate::dataplane::DECODE_BOUNDS) {
        let _ = tx.blocking_send(Err(fail(e.to_string())));
        return;
    }
    let reader = crate::arrow_guard::contain(|| {
        FileReader::try_new(BufReader::with_capacity(READ_BUFFER, file), None)
    });
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.blocking_send(Err(fail(e.to_string())));
            return;
        }
    };
    loop {
        let next = crate::arrow_guard::contain(|| reader.next().transpose());
        let item = match next {
            Ok(None) => return,
            Ok(Some(batch)) => shape(&batch, &declared)
                .and_then(|b| {
                    if retyped {
                        retype::present_batch(&b, &schema)
                    } else {
                        Ok(b)
                    }
                })
                .map_err(fail),
            Err(e) => Err(fail(e.to_string())),
        };
        let failed = item.is_err();
        if tx.blocking_send(item).is_err() || failed {
            return;
        }
    }
}

/// A column of received data whose type is not the one the catalog entry declares.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "column `{column}` is {received} in the provider's data, but the catalog entry declares {declared}"
)]
pub(crate) struct TypeMismatch {
    /// The column.
    pub(crate) column: String,
    /// Its type in the catalog entry.
    pub(crate) declared: DataType,
    /// Its type in the data received.
    pub(crate) received: DataType,
}

/// The first column of `declared` (the catalog entry's types) that `received` has under
/// the same name with another type. Nested field names and metadata are not compared (as
/// arrow compares a batch with its schema); columns only one side has are not either.
pub(crate) fn type_mismatch(received: &Schema, declared: &Schema) -> Option<TypeMismatch> {
    declared.fields().iter().find_map(|want| {
        let (_, got) = received.column_with_name(want.name())?;
        (!got.data_type().equals_datatype(want.data_type())).then(|| TypeMismatch {
            column: want.name().clone(),
            declared: want.data_type().clone(),
            received: got.data_type().clone(),
        })
    })
}

/// `batch` with exactly the columns of `schema`, by name (the same rows when `schema` has
/// no column). Fails when a column is missing or of another type than the catalog says.
fn shape(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    if let Some(mismatch) = type_mismatch(batch.schema_ref(), schema) {
        return Err(mismatch.to_string());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            batch
                .column_by_name(f.name())
                .cloned()
                .ok_or_else(|| format!("column `{}` is missing", f.name()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("EU"), None, Some("US")])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn batches_are_shaped_to_the_projection() {
        let only_region = Arc::new(Schema::new(vec![Field::new(
            "region",
            DataType::Utf8,
            true,
        )]));
        let shaped = shape(&batch(), &only_region).unwrap();
        assert_eq!(shaped.num_columns(), 1);
        assert_eq!(shaped.num_rows(), 3);
        let none = Arc::new(Schema::empty());
        assert_eq!(shape(&batch(), &none).unwrap().num_rows(), 3);
    }

    #[test]
    fn a_type_other_than_the_catalogs_is_refused() {
        let wrong = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let err = shape(&batch(), &wrong).unwrap_err();
        assert!(
            err.contains("`id`") && err.contains("Int64") && err.contains("Utf8"),
            "{err}"
        );
        let missing = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        assert!(shape(&batch(), &missing).unwrap_err().contains("`x`"));
    }
}
