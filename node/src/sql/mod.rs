//! SQL over the mesh: the query engine behind `meshnode sql`, `POST /v1/sql` and the
//! Flight SQL endpoint.
//!
//! A DataFusion `SessionContext` per query, whose tables are the products this node holds a
//! usable agreement for as a consumer (agreed, not revoked, not expired, provider still a
//! member), each named by its product (`"sales/orders"`, or `"sales@fingerprint/orders"`
//! when two keys claim the domain). A table's schema is the agreement's granted columns.
//!
//! - `table`: the `TableProvider` of one product. A scan fetches through the data plane
//!   only the projected columns and the rows of the pushed-down filters (the provider
//!   intersects that narrowing with the agreement, never widens it), then reads the
//!   received Arrow file batch by batch.
//! - `pushdown`: which DataFusion filter expressions become the filter language (unparsed
//!   to SQL text, then `Filter::parse` and a type check against the granted columns);
//!   anything else is evaluated locally.
//! - `listing`: the usable tables, found through the store's agreement index: a listing
//!   reads this node's own agreed requests, never the provider-side records other members'
//!   requests make it keep.
//! - `cache`: received files under `<data-dir>/received/.sql-cache/`, keyed by agreement,
//!   version, columns and filter, reused while that version is the latest the agreement
//!   covers, evicted oldest first above a size cap.
//! - `retype`: a column of a decimal type of negative scale, which DataFusion mishandles
//!   (panics, or wrong answers once overflow wraps), is presented as a decimal of scale 0
//!   holding the same values; queries that write such a type themselves are refused.
//!
//! Queries are read-only (no DDL, DML, `COPY` or `SET`), bounded in length
//! ([`MAX_QUERY_LEN`]), in parser recursion (DataFusion's limit plus its stack-growing
//! recursion protection), in parser backtracking ([`MAX_PREFIXES_TRIED`]), in memory ([`QUERY_MEMORY`]) and in how many run at once
//! ([`MAX_CONCURRENT_QUERIES`]). Listing the tables and planning without running (Flight
//! metadata calls) take one of [`MAX_CONCURRENT_PLANS`] slots of their own, waiting at most
//! [`PLAN_WAIT`] for one ([`SqlError::Busy`] past it).

mod cache;
mod listing;
mod pushdown;
mod retype;
mod shape;
mod table;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};
use futures::{FutureExt, StreamExt};
use mesh_protocol::ProductId;
use mesh_protocol::contract::AgreementId;
use mesh_protocol::descriptor::ColumnSchema;
use mesh_protocol::sqlbudget::BudgetedDialect;
use tokio::sync::Semaphore;

use crate::dataplane::DataPlane;
use crate::error::NodeError;
use crate::store::StoreError;

pub use table::ScanError;
/// How a query reads a received file (for the data plane's tests of hostile data).
#[cfg(test)]
pub(crate) use table::read as read_received;
pub(crate) use table::type_mismatch;

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 64 * 1024;
/// Memory a query's operators (joins, aggregates, sorts) may hold; past it the query fails
/// with "resources exhausted" rather than the daemon growing without bound.
pub const QUERY_MEMORY: usize = 1024 * 1024 * 1024;
/// Queries running at once; more wait for a slot.
pub const MAX_CONCURRENT_QUERIES: usize = 4;
/// Table listings and plans made without running a query ([`SqlEngine::tables`],
/// [`SqlEngine::schema_of`]: Flight's `ListFlights`, `GetFlightInfo`, `GetSchema` and
/// prepared statements, `GET /v1/sql/tables`) at once. Separate from the query slots,
/// which a query holds until its last batch (minutes for a large product): metadata calls
/// do not wait behind running queries, and running queries do not wait behind a flood of
/// metadata calls. Planning is CPU work, mostly on the runtime's worker threads, so the
/// bound is small; a query's own planning is bounded by its query slot.
pub const MAX_CONCURRENT_PLANS: usize = 2;
/// Longest a listing or a plan without a query waits for one of the
/// [`MAX_CONCURRENT_PLANS`] slots before it is refused ([`SqlError::Busy`]). A plan takes
/// milliseconds; waiting longer than this means calls are arriving faster than they are
/// answered, and a client is better told so than queued for as long as it keeps sending.
pub const PLAN_WAIT: Duration = Duration::from_secs(5);
/// Most expression prefixes (a literal, a name, a parenthesis, `NOT`, ...) the parser may
/// try on one query (see [`mesh_protocol::sqlbudget`]). sqlparser backtracks, exponentially
/// on some shapes (`NOT (` nested 30 deep around an error: about 2^30 tries, hours of one
/// thread), and every alternative it tries starts with a prefix, so this bounds the parse.
/// The 200-line analyst query of the tests (CTEs, joins, `CASE`, window functions,
/// subqueries, `UNION ALL`) needs 406, 0.4% of it. In a debug build (sqlparser
/// unoptimised) the backtracking shapes exhaust it in 0.1 to 0.2 s, the slowest found
/// (`NOT (` nested 20 deep) in 1.4 s; a release build is several times faster. Whitespace
/// and comment runs are collapsed before parsing, so padding does not make a try dearer.
pub const MAX_PREFIXES_TRIED: usize = 100_000;
/// Partitions DataFusion plans for (the machine's cores are shared with the daemon).
const TARGET_PARTITIONS: usize = 2;

/// One table a query can use.
#[derive(Clone, Debug)]
pub struct TableInfo {
    /// The table's name in SQL (quoted there): `domain/product`, or
    /// `domain@fingerprint/product` when two keys claim the domain.
    pub name: String,
    /// The product.
    pub product: ProductId,
    /// The agreement the data is fetched under (the most recently concluded usable one).
    pub agreement: AgreementId,
    /// The version a query reads: the latest in the catalog that the agreement covers.
    pub version: u64,
    /// The granted columns a query can read, in the product's order, with the types queries
    /// see (a decimal of negative scale as one of scale 0, see `retype`).
    pub schema: SchemaRef,
}

/// A table plus what the engine needs beyond [`TableInfo`].
#[derive(Debug)]
pub(crate) struct Table {
    /// What callers see.
    pub(crate) info: TableInfo,
    /// The granted columns with their catalog types.
    pub(crate) granted: Vec<ColumnSchema>,
    /// The columns of `info.schema` with their catalog types (what the received data
    /// holds), in the same order.
    pub(crate) declared: SchemaRef,
    /// The granted columns queries see with their catalog types: what pushed-down filters
    /// are checked against (a filter on a re-typed column is evaluated locally).
    pub(crate) pushable: Vec<ColumnSchema>,
    /// Columns of the version the agreement does not grant (for the error that names them).
    pub(crate) ungranted: Vec<String>,
    /// Granted columns left out of `info.schema`, and why (for the error that names them).
    pub(crate) unqueryable: Vec<(String, retype::Unqueryable)>,
}

/// The granted columns as queries see them ([`query_columns`]).
#[derive(Debug)]
pub(crate) struct QueryColumns {
    /// The columns queries read, with their catalog types.
    pub(crate) declared: Schema,
    /// The same columns with the types queries see.
    pub(crate) query: Schema,
    /// The granted columns whose type queries see unchanged.
    pub(crate) pushable: Vec<ColumnSchema>,
    /// The granted columns queries cannot read, and why.
    pub(crate) unqueryable: Vec<(String, retype::Unqueryable)>,
}

/// The `granted` columns as queries see them: each with the type of `retype::query_type`,
/// left out when it has none.
pub(crate) fn query_columns(
    granted: &[ColumnSchema],
) -> Result<QueryColumns, mesh_protocol::bounds::TypeError> {
    let declared = declared_schema(granted)?;
    let (mut kept, mut query, mut pushable, mut unqueryable) = (vec![], vec![], vec![], vec![]);
    for (field, column) in declared.fields().iter().zip(granted) {
        match retype::query_type(field.data_type()) {
            Ok(t) => {
                if &t == field.data_type() {
                    pushable.push(column.clone());
                }
                kept.push(field.clone());
                query.push(Arc::new(field.as_ref().clone().with_data_type(t)));
            }
            Err(why) => unqueryable.push((column.name.clone(), why)),
        }
    }
    Ok(QueryColumns {
        declared: Schema::new(kept),
        query: Schema::new(query),
        pushable,
        unqueryable,
    })
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The query text is longer than [`MAX_QUERY_LEN`].
    #[error("the query is {len} bytes long, more than the limit of {max} bytes: shorten it")]
    TooLong {
        /// Length of the text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The query reads a column that an agreement does not grant.
    #[error("{0}")]
    NotGranted(String),
    /// The query reads a granted column whose type the engine cannot compute with exactly
    /// (see `retype`).
    #[error("{0}")]
    Unqueryable(String),
    /// The query writes a decimal type of negative scale (`CAST(x AS DECIMAL(5, -2))`,
    /// `arrow_cast(x, 'Decimal128(5, -2)')`), which the engine does not compute with exactly.
    #[error(
        "the query uses {data_type}, a decimal of negative scale, which the query engine does \
         not compute with exactly: use a decimal of scale 0 with as many more digits \
         (DECIMAL(p - s, 0))"
    )]
    NegativeScale {
        /// The type.
        data_type: DataType,
    },
    /// DataFusion refused or failed the query (syntax, unknown table, a fetch that failed).
    #[error("{}", describe(.0))]
    Query(#[source] DataFusionError),
    /// The parser tried more than [`MAX_PREFIXES_TRIED`] expressions on the query text: a
    /// shape it backtracks over (deep nesting around an error, long runs of subscripts or
    /// field accesses) rather than a query it could read.
    #[error(
        "the query is too complex to parse (the parser tried more than {max} expressions in \
         it, which deep nesting around a syntax error can cause): check its parentheses, \
         simplify it or split it"
    )]
    TooComplex {
        /// The budget of expressions tried.
        max: usize,
    },
    /// The query nests deeper than the parser's recursion limit.
    #[error(
        "the query nests deeper than the parser follows (its limit is {max}, and each level of \
         parentheses, subquery or CASE takes one or two): flatten it, for instance with WITH"
    )]
    TooDeep {
        /// The parser's recursion limit.
        max: usize,
    },
    /// The query chains more operators or joins than the engine plans ([`shape`]).
    #[error(
        "the query chains {count} {what}, more than the {max} the query engine plans (it walks \
         such a chain by recursion): {advice}"
    )]
    TooLarge {
        /// What was counted: `operators` or `joins`.
        what: &'static str,
        /// How many the query has.
        count: usize,
        /// The bound.
        max: usize,
        /// What to change.
        advice: &'static str,
    },
    /// Every planning slot stayed taken for as long as a call waits for one
    /// ([`MAX_CONCURRENT_PLANS`], [`PLAN_WAIT`]).
    #[error(
        "the query engine is busy: {slots} listings or plans were running and none finished \
         within {waited:?}; retry later"
    )]
    Busy {
        /// The planning slots.
        slots: usize,
        /// How long the call waited.
        waited: Duration,
    },
    /// The table listing did not finish (its blocking task panicked or was cancelled).
    #[error("listing the tables failed: {0}")]
    Listing(#[source] tokio::task::JoinError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A panic of the query engine while it planned or ran one query, caught there: the caller
/// gets this error and the daemon goes on.
#[derive(Debug, thiserror::Error)]
#[error("the query engine failed on this query (it panicked: {message})")]
pub struct EnginePanic {
    /// What the panic said.
    message: String,
}

impl EnginePanic {
    /// The panic of `payload`, as a query error.
    fn error(payload: Box<dyn std::any::Any + Send>) -> DataFusionError {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no detail".to_owned());
        tracing::error!("the query engine panicked on a query: {message}");
        DataFusionError::External(Box::new(EnginePanic { message }))
    }
}

/// Whether `e` is a caught panic of the engine.
fn is_panic(e: &DataFusionError) -> bool {
    matches!(e.find_root(), DataFusionError::External(inner) if inner.is::<EnginePanic>())
}

/// A DataFusion error as one sentence: the fetch error inside it when there is one.
fn describe(e: &DataFusionError) -> String {
    match scan_error(e) {
        Some(scan) => scan.to_string(),
        None => e.to_string(),
    }
}

/// The scan failure at the root of `e`, if any.
fn scan_error(e: &DataFusionError) -> Option<&ScanError> {
    match e.find_root() {
        DataFusionError::External(inner) => inner.downcast_ref::<ScanError>(),
        _ => None,
    }
}

impl SqlError {
    /// HTTP status for the control API.
    pub fn status_code(&self) -> u16 {
        match self {
            SqlError::TooLong { .. }
            | SqlError::NotGranted(_)
            | SqlError::Unqueryable(_)
            | SqlError::NegativeScale { .. }
            | SqlError::TooComplex { .. }
            | SqlError::TooDeep { .. }
            | SqlError::TooLarge { .. } => 400,
            SqlError::Query(e) if is_panic(e) => 500,
            SqlError::Query(e) => match scan_error(e) {
                Some(scan) => scan.status_code(),
                None => match e.find_root() {
                    DataFusionError::ResourcesExhausted(_) => 503,
                    DataFusionError::Internal(_) => 500,
                    _ => 400,
                },
            },
            SqlError::Busy { .. } => 503,
            SqlError::Listing(_) | SqlError::Store(_) => 500,
        }
    }

    /// Short machine-readable label (the `kind` of an error answer).
    pub fn kind(&self) -> &'static str {
        match self {
            SqlError::TooLong { .. }
            | SqlError::Unqueryable(_)
            | SqlError::NegativeScale { .. }
            | SqlError::TooComplex { .. }
            | SqlError::TooDeep { .. }
            | SqlError::TooLarge { .. } => "bad_request",
            SqlError::NotGranted(_) => "not_granted",
            SqlError::Query(e) if is_panic(e) => "internal",
            SqlError::Query(e) => match scan_error(e) {
                Some(scan) => scan.kind(),
                None => match e.find_root() {
                    DataFusionError::ResourcesExhausted(_) => "unavailable",
                    DataFusionError::Internal(_) => "internal",
                    _ => "bad_request",
                },
            },
            SqlError::Busy { .. } => "unavailable",
            SqlError::Listing(_) | SqlError::Store(_) => "internal",
        }
    }
}

impl From<SqlError> for NodeError {
    fn from(e: SqlError) -> Self {
        match e.status_code() {
            400 => NodeError::BadRequest(e.to_string()),
            403 => NodeError::Refused(e.to_string()),
            404 => NodeError::NotFound(e.to_string()),
            409 => NodeError::Conflict(e.to_string()),
            503 => NodeError::Unavailable(e.to_string()),
            _ => match e {
                SqlError::Store(s) => NodeError::Store(s),
                other => NodeError::Internal(other.to_string()),
            },
        }
    }
}

/// State shared by every clone of the engine.
#[derive(Debug)]
pub(crate) struct Inner {
    /// Fetches go through it; agreements and the catalog are read from its store.
    pub(crate) data: DataPlane,
    /// Received files, reused across queries.
    pub(crate) cache: cache::Cache,
    /// Slots of running queries.
    slots: Arc<Semaphore>,
    /// Slots of listings and plans made without running a query.
    plan_slots: Semaphore,
    /// Longest a call waits for a planning slot.
    plan_wait: Duration,
}

/// The query engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqlEngine {
    /// Shared state.
    inner: Arc<Inner>,
}

impl SqlEngine {
    /// An engine fetching through `data`, caching under `<data-dir>/received/.sql-cache/`
    /// (files an earlier run left half-written are removed here).
    pub fn new(data: DataPlane) -> Self {
        Self::with_plan_wait(data, PLAN_WAIT)
    }

    /// [`SqlEngine::new`], refusing a listing or plan after `plan_wait` without a slot.
    pub(crate) fn with_plan_wait(data: DataPlane, plan_wait: Duration) -> Self {
        let dir = data.data_dir().received().join(cache::CACHE_DIR);
        Self {
            inner: Arc::new(Inner {
                cache: cache::Cache::new(dir, cache::CACHE_CAP_BYTES),
                data,
                slots: Arc::new(Semaphore::new(MAX_CONCURRENT_QUERIES)),
                plan_slots: Semaphore::new(MAX_CONCURRENT_PLANS),
                plan_wait,
            }),
        }
    }

    /// Tables the local domain can query: one per product with a usable agreement. Takes
    /// a planning slot ([`SqlError::Busy`] when none frees up in time).
    pub async fn tables(&self) -> Result<Vec<TableInfo>, SqlError> {
        let _slot = self.plan_slot().await?;
        Ok(self
            .usable_tables()
            .await?
            .into_iter()
            .map(|t| t.info)
            .collect())
    }

    /// One of the [`MAX_CONCURRENT_PLANS`] planning slots, waited for at most the engine's
    /// plan wait.
    async fn plan_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, SqlError> {
        let busy = || SqlError::Busy {
            slots: MAX_CONCURRENT_PLANS,
            waited: self.inner.plan_wait,
        };
        tokio::time::timeout(self.inner.plan_wait, self.inner.plan_slots.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| SqlError::Query(DataFusionError::Internal("engine closed".into())))
    }

    /// The planning slots (held by tests to fill them).
    #[cfg(test)]
    pub(crate) fn plan_slots(&self) -> &Semaphore {
        &self.inner.plan_slots
    }

    /// Plans and runs `sql`; batches stream as they are produced. Fetches happen when the
    /// stream is first polled; their failures arrive as the stream's error (see
    /// [`SqlError::from_stream`]). A panic of the engine while it plans or runs the query
    /// is caught and becomes the query's error ([`EnginePanic`]).
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream, SqlError> {
        let permit = self
            .inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SqlError::Query(DataFusionError::Internal("engine closed".into())))?;
        let stream = caught(async {
            let (frame, tables) = self.plan(sql).await?;
            frame
                .execute_stream()
                .await
                .map_err(|e| explain(&tables, e))
        })
        .await?;
        // The slot is held until the stream is dropped.
        Ok(guarded(stream, permit))
    }

    /// The schema `sql` would produce, without running it (Flight SQL GetFlightInfo).
    /// Takes a planning slot ([`SqlError::Busy`] when none frees up in time).
    pub async fn schema_of(&self, sql: &str) -> Result<SchemaRef, SqlError> {
        let _slot = self.plan_slot().await?;
        let (frame, _) = caught(self.plan(sql)).await?;
        Ok(Arc::new(frame.schema().as_arrow().clone()))
    }

    /// A fresh context holding the usable tables, and the logical plan of `sql` in it.
    async fn plan(&self, sql: &str) -> Result<(DataFrame, Vec<Arc<Table>>), SqlError> {
        if sql.len() > MAX_QUERY_LEN {
            return Err(SqlError::TooLong {
                len: sql.len(),
                max: MAX_QUERY_LEN,
            });
        }
        let tables: Vec<Arc<Table>> = self
            .usable_tables()
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        let context = session()?;
        for t in &tables {
            let provider = table::MeshTable::new(t.clone(), self.inner.clone());
            context
                .register_table(
                    datafusion::common::TableReference::bare(t.info.name.as_str()),
                    Arc::new(provider),
                )
                .map_err(SqlError::Query)?;
        }
        let frame = plan_in(&context, sql).await.map_err(|e| match e {
            SqlError::Query(e) => explain(&tables, e),
            other => other,
        })?;
        Ok((frame, tables))
    }

    /// The products with a usable consumer agreement, as tables; read on a blocking thread
    /// (sled reads and record decoding).
    async fn usable_tables(&self) -> Result<Vec<Table>, SqlError> {
        let inner = self.inner.clone();
        let now = crate::node::now_ms();
        let listing = tokio::task::spawn_blocking(move || {
            listing::usable_tables(inner.data.store(), inner.data.members(), now)
        })
        .await
        .map_err(SqlError::Listing)??;
        tracing::debug!(
            tables = listing.tables.len(),
            records_read = listing.records_read,
            "listed the usable tables"
        );
        Ok(listing.tables)
    }
}

/// What `work` (planning, starting a query) returns, a panic inside it being the query's
/// error ([`EnginePanic`]) rather than the end of the request's task.
async fn caught<T>(work: impl Future<Output = Result<T, SqlError>>) -> Result<T, SqlError> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| SqlError::Query(EnginePanic::error(panic)))?
}

/// `stream`, keeping `held` until it is dropped; a panic while it is polled becomes its
/// last item, an error ([`EnginePanic`]).
fn guarded<H: Send + 'static>(
    stream: SendableRecordBatchStream,
    held: H,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let stream = AssertUnwindSafe(stream).catch_unwind().map(move |item| {
        let _held = &held;
        item.unwrap_or_else(|panic| Err(EnginePanic::error(panic)))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// The schema that catalog `columns` declare: their types parsed by the protocol's bounded
/// parser.
pub(crate) fn declared_schema(
    columns: &[ColumnSchema],
) -> Result<Schema, mesh_protocol::bounds::TypeError> {
    columns
        .iter()
        .map(|c| {
            mesh_protocol::bounds::parse_data_type(&c.data_type)
                .map(|t| Field::new(c.name.clone(), t, c.nullable))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Schema::new)
}

/// A fresh query context with the engine's settings and no tables.
fn session() -> Result<SessionContext, SqlError> {
    let config = SessionConfig::new()
        .with_target_partitions(TARGET_PARTITIONS)
        .with_information_schema(false);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(QUERY_MEMORY, 1.0)
        .build_arc()
        .map_err(SqlError::Query)?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// The logical plan of `sql` in `context`, as `SessionContext::sql_with_options` makes it
/// with the read-only options, except that the text is parsed under a budget
/// ([`parse`]).
async fn plan_in(context: &SessionContext, sql: &str) -> Result<DataFrame, SqlError> {
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let state = context.state();
    let recursion_limit = state.config().options().sql_parser.recursion_limit.get();
    let statement = parse(sql, recursion_limit)?;
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(SqlError::Query)?;
    read_only.verify_plan(&plan).map_err(SqlError::Query)?;
    if let Some(data_type) = retype::written_in(&plan) {
        return Err(SqlError::NegativeScale { data_type });
    }
    context
        .execute_logical_plan(plan)
        .await
        .map_err(SqlError::Query)
}

/// The one statement of `sql`, parsed as DataFusion's `SessionState::sql_to_statement` does
/// (its parser, the generic dialect, `recursion_limit`), but trying at most
/// [`MAX_PREFIXES_TRIED`] expression prefixes, and with each run of whitespace and comments
/// read as one space (a newline if the run held one). The parser skips whitespace one
/// token at a time whenever it looks ahead, so a long run would make every backtracking
/// step cost as much as the run; a query can then no longer carry optimizer hints in
/// comments, which DataFusion does not use.
fn parse(sql: &str, recursion_limit: usize) -> Result<Statement, SqlError> {
    parse_under(
        &BudgetedDialect::generic(MAX_PREFIXES_TRIED),
        sql,
        recursion_limit,
    )
}

/// [`parse`] with `dialect`'s budget.
fn parse_under(
    dialect: &BudgetedDialect,
    sql: &str,
    recursion_limit: usize,
) -> Result<Statement, SqlError> {
    let tokens = Tokenizer::new(dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Query(ParserError::from(e).into()))?;
    if let Some(over) = shape::over_a_bound(shape::count(&tokens)) {
        return Err(over);
    }
    let refused = |e: DataFusionError| {
        if dialect.exhausted() {
            SqlError::TooComplex {
                max: dialect.budget(),
            }
        } else if matches!(
            e,
            DataFusionError::SQL(ref p, _) if matches!(**p, ParserError::RecursionLimitExceeded)
        ) {
            SqlError::TooDeep {
                max: recursion_limit,
            }
        } else {
            SqlError::Query(e)
        }
    };
    let mut statements = DFParserBuilder::new(compact_whitespace(tokens))
        .with_dialect(dialect)
        .with_recursion_limit(recursion_limit)
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map_err(refused)?;
    if statements.len() > 1 {
        return Err(SqlError::Query(DataFusionError::NotImplemented(
            "The context currently only supports a single SQL statement".into(),
        )));
    }
    statements.pop_front().ok_or_else(|| {
        SqlError::Query(DataFusionError::Plan(
            "No SQL statements were provided in the query string".into(),
        ))
    })
}

/// `tokens` with each run of whitespace tokens (spaces, tabs, newlines, comments) replaced
/// by one: a newline if the run held one (or a line comment, which ends with one), else a
/// space.
fn compact_whitespace(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut compact: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    for t in tokens {
        let Token::Whitespace(ws) = &t.token else {
            compact.push(t);
            continue;
        };
        let newline = matches!(
            ws,
            Whitespace::Newline | Whitespace::SingleLineComment { .. }
        );
        let ws = if newline {
            Whitespace::Newline
        } else {
            Whitespace::Space
        };
        match compact.last_mut() {
            Some(TokenWithSpan {
                token: Token::Whitespace(last),
                span,
            }) => {
                if newline {
                    *last = Whitespace::Newline;
                }
                *span = span.union(&t.span);
            }
            _ => compact.push(TokenWithSpan {
                token: Token::Whitespace(ws),
                span: t.span,
            }),
        }
    }
    compact
}

impl SqlError {
    /// An error that ended a result stream, as a query error (a failed fetch keeps its
    /// kind and status).
    pub fn from_stream(e: DataFusionError) -> Self {
        SqlError::Query(e)
    }
}

/// `e` as a [`SqlError`]; a column the query names that exists in a product but is not
/// granted becomes a message naming the agreement and what it grants.
fn explain(tables: &[Arc<Table>], e: DataFusionError) -> SqlError {
    use datafusion::common::SchemaError;
    let DataFusionError::SchemaError(schema_error, _) = e.find_root() else {
        return SqlError::Query(e);
    };
    let SchemaError::FieldNotFound { field, .. } = schema_error.as_ref() else {
        return SqlError::Query(e);
    };
    let name = field.name.as_str();
    let named = |t: &&Arc<Table>| {
        field
            .relation
            .as_ref()
            .is_none_or(|r| r.table() == t.info.name)
    };
    // A granted column the engine cannot read: in the table the query names, else in any
    // (an alias hides the table's name).
    let unreadable = |t: &&Arc<Table>| t.unqueryable.iter().any(|(c, _)| c == name);
    let mut readers: Vec<&Arc<Table>> = tables.iter().filter(unreadable).collect();
    if readers.iter().any(named) {
        readers.retain(named);
    }
    if !readers.is_empty() {
        let parts: Vec<String> = readers
            .iter()
            .flat_map(|t| {
                t.unqueryable
                    .iter()
                    .filter(|(column, _)| column == name)
                    .map(|(_, why)| {
                        format!(
                            "column `{name}` of {} cannot be queried: {why} (`meshnode fetch` \
                             delivers it as the product holds it)",
                            t.info.name
                        )
                    })
            })
            .collect();
        return SqlError::Unqueryable(parts.join("; "));
    }
    let holders: Vec<&Arc<Table>> = tables
        .iter()
        .filter(|t| t.ungranted.iter().any(|c| c == name))
        .collect();
    let matching: Vec<&Arc<Table>> = holders.iter().copied().filter(named).collect();
    let chosen = if matching.is_empty() {
        holders
    } else {
        matching
    };
    if chosen.is_empty() {
        return SqlError::Query(e);
    }
    let parts: Vec<String> = chosen
        .iter()
        .map(|t| {
            let granted: Vec<&str> = t.granted.iter().map(|c| c.name.as_str()).collect();
            format!(
                "column `{name}` of {} is not granted by agreement {}; granted: {}",
                t.info.name,
                t.info.agreement.short(),
                granted.join(", ")
            )
        })
        .collect();
    SqlError::NotGranted(format!(
        "{} (request an agreement that grants it with `meshnode share request`)",
        parts.join("; ")
    ))
}
