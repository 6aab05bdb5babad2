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

use crate::dataplane::{DataPlane, FetchOptions};
use crate::error::NodeError;
use crate::node::NodeHandle;
use crate::views::{ErrorView, FetchRequestBody, PublishRequest};

/// Shared state of the API handlers.
#[derive(Clone, Debug)]
pub(crate) struct ApiState {
    /// The node.
    pub(crate) node: NodeHandle,
    /// Expected bearer token.
    token: Arc<str>,
    /// The data plane, for fetches (absent in nodes started without one).
    data: Option<DataPlane>,
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
    }
}

/// Builds the router for `node`, requiring `token` on every route.
pub fn router(node: NodeHandle, token: String) -> Router {
    router_with_data_plane(node, token, None)
}

/// [`router`] plus the data-plane routes served by `data`.
pub fn router_with_data_plane(node: NodeHandle, token: String, data: Option<DataPlane>) -> Router {
    let state = ApiState {
        node,
        token: token.into(),
        data,
    };
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/catalog", get(catalog))
        .route("/v1/publish", post(publish))
        .route("/v1/peers", get(peers))
        .route("/v1/fetch", post(fetch))
        .route("/metrics", get(metrics))
        .merge(crate::contracts::routes())
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
    Ok(Json(s.node.publish(request).await?))
}

async fn peers(State(s): State<ApiState>) -> Result<impl IntoResponse, NodeError> {
    Ok(Json(s.node.peers().await?))
}

async fn metrics(State(s): State<ApiState>) -> Result<impl IntoResponse, NodeError> {
    let mut text = s.node.metrics().await?;
    if let Some(data) = &s.data
        && let Some(body) = text.strip_suffix("# EOF\n")
    {
        let mut joined = body.to_owned();
        data.encode_metrics(&mut joined);
        joined.push_str("# EOF\n");
        text = joined;
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

async fn fetch(
    State(s): State<ApiState>,
    Json(body): Json<FetchRequestBody>,
) -> Result<impl IntoResponse, NodeError> {
    let data = s
        .data
        .ok_or_else(|| NodeError::Unavailable("this node runs no data plane".into()))?;
    let product = data.resolve_product(&body.product)?;
    let options = FetchOptions {
        product: product.id(),
        out: body.out.into(),
        agreement: body.agreement,
        version: body.version,
        compression: body.compression,
        provider_addr: None,
        force: body.force,
    };
    match data.fetch(options).await {
        Ok(outcome) => Ok(Json(outcome).into_response()),
        // The fetch's own kind (`verification`, `unreachable`, a refusal code, ...) is finer
        // than its HTTP status.
        Err(e) => {
            let kind = e.code();
            let e = NodeError::from(e);
            let status =
                StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok((
                status,
                Json(ErrorView {
                    error: e.to_string(),
                    kind: Some(kind.to_owned()),
                }),
            )
                .into_response())
        }
    }
}
