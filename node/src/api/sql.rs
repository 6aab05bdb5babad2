//! `POST /v1/sql`: a query over the products this node holds usable agreements for,
//! answered as an Arrow IPC stream; `GET /v1/sql/tables`: what a query can use.
//!
//! The answer starts only once the first batch (or the end) is there, so a query that
//! cannot be planned or whose fetch fails gets a JSON error with its status. A failure
//! after that ends the body early: the stream then lacks its end-of-stream marker, which
//! every IPC stream reader reports.

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;

use super::ApiState;
use super::transfers::ARROW_STREAM_TYPE;
use crate::dataplane::DataPlane;
use crate::error::NodeError;
use crate::sql::{SqlEngine, SqlError};
use crate::views::{SqlRequestBody, SqlTableView};

/// The SQL routes with an engine of their own over `data` (none without a data plane).
pub(super) fn routes_for(data: Option<&DataPlane>) -> Router<ApiState> {
    routes(data.cloned().map(SqlEngine::new))
}

/// The SQL routes, run by `engine` (absent without a data plane).
pub(super) fn routes(engine: Option<SqlEngine>) -> Router<ApiState> {
    Router::new()
        .route("/v1/sql", post(query))
        .route("/v1/sql/tables", get(tables))
        .with_state(engine)
}

fn engine(engine: Option<SqlEngine>) -> Result<SqlEngine, NodeError> {
    engine.ok_or_else(|| NodeError::Unavailable("this node runs no data plane".into()))
}

/// An error answer with the query error's own kind.
fn failed(e: SqlError) -> Response {
    let kind = e.kind();
    let e = NodeError::from(e);
    let status = axum::http::StatusCode::from_u16(e.status_code())
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(crate::views::ErrorView {
            error: e.to_string(),
            kind: Some(kind.to_owned()),
        }),
    )
        .into_response()
}

async fn tables(State(s): State<Option<SqlEngine>>) -> Result<Response, NodeError> {
    let tables = match engine(s)?.tables().await {
        Ok(t) => t,
        Err(e) => return Ok(failed(e)),
    };
    let views: Vec<SqlTableView> = tables
        .into_iter()
        .map(|t| SqlTableView {
            name: t.name,
            agreement: t.agreement.to_hex(),
            version: t.version,
            columns: t
                .schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string()))
                .collect(),
        })
        .collect();
    Ok(Json(views).into_response())
}

async fn query(
    State(s): State<Option<SqlEngine>>,
    Json(body): Json<SqlRequestBody>,
) -> Result<Response, NodeError> {
    let engine = engine(s)?;
    let mut stream = match engine.execute(&body.query).await {
        Ok(stream) => stream,
        Err(e) => return Ok(failed(e)),
    };
    let first = match stream.next().await {
        Some(Err(e)) => return Ok(failed(SqlError::from_stream(e))),
        other => other.and_then(Result::ok),
    };
    let schema = stream.schema();
    let encoder = Encoder::new(&schema).map_err(|e| NodeError::Internal(e.to_string()))?;
    let body = futures::stream::unfold(Some((encoder, stream, first)), |state| async move {
        let (mut encoder, mut stream, pending) = state?;
        let batch = match pending {
            Some(b) => Some(Ok(b)),
            None => stream.next().await,
        };
        match batch {
            Some(Ok(batch)) => {
                let chunk = encoder.batch(&batch).map_err(std::io::Error::other);
                Some((chunk, Some((encoder, stream, None))))
            }
            Some(Err(e)) => {
                tracing::info!(
                    "a query failed while streaming: {}",
                    SqlError::from_stream(e)
                );
                Some((
                    Err(std::io::Error::other("the query failed while streaming")),
                    None,
                ))
            }
            None => Some((encoder.finish().map_err(std::io::Error::other), None)),
        }
    });
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ARROW_STREAM_TYPE),
    );
    Ok(response)
}

/// Encodes batches as an Arrow IPC stream, handing out the bytes of each step.
struct Encoder {
    /// Writes into its own buffer, emptied after each step.
    writer: StreamWriter<Vec<u8>>,
    /// The schema message, sent with the first chunk.
    head: Option<bytes::Bytes>,
}

impl Encoder {
    fn new(schema: &SchemaRef) -> Result<Self, arrow::error::ArrowError> {
        let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
        let head = bytes::Bytes::from(std::mem::take(writer.get_mut()));
        Ok(Self {
            writer,
            head: Some(head),
        })
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<bytes::Bytes, arrow::error::ArrowError> {
        self.writer.write(batch)?;
        Ok(self.take())
    }

    fn finish(&mut self) -> Result<bytes::Bytes, arrow::error::ArrowError> {
        self.writer.finish()?;
        Ok(self.take())
    }

    fn take(&mut self) -> bytes::Bytes {
        let body = std::mem::take(self.writer.get_mut());
        match self.head.take() {
            Some(head) => {
                let mut all = head.to_vec();
                all.extend_from_slice(&body);
                bytes::Bytes::from(all)
            }
            None => bytes::Bytes::from(body),
        }
    }
}
