//! The local control API: HTTP/JSON on 127.0.0.1, bearer token from `<data-dir>/api.token`.
//!
//! Handlers are thin: authenticate, parse, call the [`NodeHandle`], map errors to statuses.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;

use crate::dataplane::DataPlane;
use crate::error::NodeError;
use crate::node::NodeHandle;
use crate::views::{ErrorView, PublishRequest};

mod contracts;
mod governance;
#[cfg(feature = "query")]
mod sql;
/// A build without the `query` feature: the SQL routes answer 501.
#[cfg(not(feature = "query"))]
#[path = "api/no_query.rs"]
mod sql;
mod transfers;

pub use transfers::{
    AGREEMENT_HEADER, ARROW_STREAM_TYPE, BYTES_HEADER, DIGEST_HEADER, ROWS_HEADER, VERSION_HEADER,
};

/// Shared state of the API handlers.
#[derive(Clone, Debug)]
pub(crate) struct ApiState {
    /// The node.
    pub(crate) node: NodeHandle,
    /// Expected bearer token.
    token: Arc<str>,
    /// The data plane, for fetches (absent in nodes started without one).
    data: Option<DataPlane>,
    /// Progress of running publishes and fetches, polled by the CLI.
    progress: crate::progress::ProgressBoard,
}

impl IntoResponse for NodeError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ErrorView {
                error: self.to_string(),
                kind: Some(error_kind(&self).to_owned()),
            }),
        )
            .into_response()
    }
}

/// The `kind` of an [`ErrorView`] for `e`.
fn error_kind(e: &NodeError) -> &'static str {
    match e {
        NodeError::BadRequest(_) => "bad_request",
        NodeError::NotFound(_) => "not_found",
        NodeError::Conflict(_) => "conflict",
        NodeError::Refused(_) => "refused",
        NodeError::Unavailable(_) | NodeError::ActorClosed => "unavailable",
        NodeError::Store(_) | NodeError::Internal(_) => "internal",
        NodeError::NoRoom(_) => "no_room",
        NodeError::Io(_) => "io",
    }
}

/// Builds the router for `node`, requiring `token` on every route.
pub fn router(node: NodeHandle, token: String) -> Router {
    router_with_data_plane(node, token, None)
}

/// [`router`] plus the data-plane routes served by `data` (with a query engine of its own).
pub fn router_with_data_plane(node: NodeHandle, token: String, data: Option<DataPlane>) -> Router {
    let sql = sql::routes_for(data.as_ref());
    build(node, token, data, sql)
}

/// [`router_with_data_plane`] with the query engine `sql` (shared with other endpoints).
#[cfg(feature = "query")]
pub fn router_with_engines(
    node: NodeHandle,
    token: String,
    data: Option<DataPlane>,
    sql: Option<crate::sql::SqlEngine>,
) -> Router {
    build(node, token, data, sql::routes(sql))
}

/// The router with the SQL routes `sql` (which carry their own engine).
fn build(
    node: NodeHandle,
    token: String,
    data: Option<DataPlane>,
    sql: Router<ApiState>,
) -> Router {
    let state = ApiState {
        node,
        token: token.into(),
        data,
        progress: crate::progress::ProgressBoard::default(),
    };
    let api_metrics = crate::metrics::ApiMetrics::default();
    let router = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/catalog", get(catalog))
        .route("/v1/publish", post(publish))
        .route("/v1/peers", get(peers))
        .route("/metrics", get(metrics))
        .merge(contracts::routes())
        .merge(governance::routes())
        .merge(transfers::routes())
        .merge(sql)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // Outside authentication, so refused tokens are counted too.
        .layer(middleware::from_fn_with_state(
            api_metrics.clone(),
            crate::metrics::track_api,
        ))
        .layer(axum::Extension(api_metrics))
        .with_state(state);
    catch_panics(router)
}

/// `router`, answering a request whose handler panics with a 500 that says so.
pub(crate) fn catch_panics(router: Router) -> Router {
    router.layer(CatchPanicLayer::custom(panicked))
}

/// The answer to a request whose handler panicked: a 500 that says so, where the connection
/// would otherwise just close (the panic's message is in the daemon's log).
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!("a control API request failed with a panic: {what}");
    NodeError::Internal(
        "the daemon failed while answering this request (a bug: its log has the details); \
         the daemon itself keeps running"
            .into(),
    )
    .into_response()
}

async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            Json(ErrorView {
                error: "missing or wrong API token: use the token in <data-dir>/api.token".into(),
                kind: Some("unauthorized".into()),
            }),
        )
            .into_response(),
    }
}

/// Whether `a` equals `b`, in a time that does not depend on where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn status(State(s): State<ApiState>) -> Result<impl IntoResponse, NodeError> {
    Ok(Json(s.node.status().await?))
}

async fn catalog(State(s): State<ApiState>) -> Result<impl IntoResponse, NodeError> {
    Ok(Json(s.node.catalog().await?))
}

async fn publish(
    State(s): State<ApiState>,
    Json(request): Json<PublishRequest>,
) -> Result<impl IntoResponse, NodeError> {
    let tracked = transfers::track(&s, request.progress.as_deref())?;
    let progress = tracked.as_ref().map(crate::progress::Tracked::progress);
    Ok(Json(s.node.publish_tracked(request, progress).await?))
}

async fn peers(State(s): State<ApiState>) -> Result<impl IntoResponse, NodeError> {
    Ok(Json(s.node.peers().await?))
}

/// `GET /metrics`: OpenMetrics when the `Accept` header asks for it, the classic Prometheus
/// text format otherwise (see [`crate::metrics::exposition`]).
async fn metrics(
    State(s): State<ApiState>,
    axum::Extension(api): axum::Extension<crate::metrics::ApiMetrics>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, NodeError> {
    use crate::metrics::exposition::Format;
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let node = s.node.metrics().await?;
    let mut text = node.strip_suffix("# EOF\n").unwrap_or(&node).to_owned();
    if let Some(data) = &s.data {
        data.encode_metrics(&mut text);
    }
    api.encode(&mut text);
    crate::metrics::process::encode(&mut text);
    text.push_str("# EOF\n");
    let body = format
        .render(text)
        .map_err(|e| NodeError::Internal(format!("cannot encode the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body))
}
