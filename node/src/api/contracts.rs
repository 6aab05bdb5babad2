//! Control API routes for contracts (`/v1/share...`) and the audit log (`/v1/audit`).
//!
//! Thin like every handler of [`crate::api`]: parse, call the contract methods of
//! [`crate::NodeHandle`] (in `crate::contracts::handle`), return JSON. No decision is made
//! here.

use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::ApiState;
use crate::error::NodeError;
use crate::odcs::DataContract;
use crate::views::{
    AgreementView, AuditView, ReasonRequest, SHARE_MORE_HEADER, SHARE_NEXT_BEFORE_HEADER,
    SharePage, ShareQuery, ShareRequest,
};

/// The contract and audit routes, merged into [`super::router_with_data_plane`].
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/share", get(list))
        .route("/v1/share/page", get(page))
        .route("/v1/share/request", post(request))
        .route("/v1/share/pending", get(pending))
        .route("/v1/share/{id}", get(show))
        .route("/v1/share/{id}/odcs", get(show_odcs))
        .route("/v1/share/{id}/accept", post(accept))
        .route("/v1/share/{id}/reject", post(reject))
        .route("/v1/share/{id}/revoke", post(revoke))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/archive", post(archive))
}

async fn request(
    State(s): State<ApiState>,
    Json(request): Json<ShareRequest>,
) -> Result<Json<AgreementView>, NodeError> {
    Ok(Json(s.node.share_request(request).await?))
}

/// `GET /v1/share[?limit=N][&before=MS-ID][&role=R][&state=S]`: a page of the newest
/// contracts (see [`ShareQuery`]) as a JSON array, the shape it always had; how many more
/// there are and where their page starts come in headers ([`SHARE_MORE_HEADER`],
/// [`SHARE_NEXT_BEFORE_HEADER`]).
async fn list(
    State(s): State<ApiState>,
    Query(query): Query<ShareQuery>,
) -> Result<Response, NodeError> {
    let page = s.node.share_list(query).await?;
    let mut response = Json(page.contracts).into_response();
    let headers = response.headers_mut();
    headers.insert(SHARE_MORE_HEADER, HeaderValue::from(page.more));
    if let Some(next) = page.next_before
        && let Ok(value) = HeaderValue::from_str(&next.to_string())
    {
        headers.insert(SHARE_NEXT_BEFORE_HEADER, value);
    }
    Ok(response)
}

/// `GET /v1/share/page`, with the query of `GET /v1/share`: the same page as one object
/// ([`SharePage`]), the count of the older contracts and where their page starts included.
async fn page(
    State(s): State<ApiState>,
    Query(query): Query<ShareQuery>,
) -> Result<Json<SharePage>, NodeError> {
    Ok(Json(s.node.share_list(query).await?))
}

async fn pending(State(s): State<ApiState>) -> Result<Json<Vec<AgreementView>>, NodeError> {
    Ok(Json(s.node.share_pending().await?))
}

async fn show(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<AgreementView>, NodeError> {
    Ok(Json(s.node.share_show(id).await?))
}

async fn show_odcs(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<DataContract>, NodeError> {
    Ok(Json(s.node.share_odcs(id).await?))
}

async fn accept(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<AgreementView>, NodeError> {
    Ok(Json(s.node.share_accept(id).await?))
}

async fn reject(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> Result<Json<AgreementView>, NodeError> {
    let reason = body.reason.unwrap_or_default();
    Ok(Json(s.node.share_reject(id, reason).await?))
}

async fn revoke(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> Result<Json<AgreementView>, NodeError> {
    Ok(Json(s.node.share_revoke(id, body.reason).await?))
}

/// `GET /v1/audit[?limit=N][&before=SEQ][&verify=true]`: a page of the newest entries (see
/// [`crate::integrity::AuditQuery`]) and the whole chain's check.
async fn audit(
    State(s): State<ApiState>,
    Query(query): Query<crate::integrity::AuditQuery>,
) -> Result<Json<AuditView>, NodeError> {
    Ok(Json(s.node.audit(query).await?))
}

async fn archive(
    State(s): State<ApiState>,
    Json(body): Json<crate::views::ArchiveRequest>,
) -> Result<Json<crate::views::ArchiveView>, NodeError> {
    let archived = s.node.archive_audit(body.keep).await?;
    Ok(Json(crate::views::ArchiveView { archived }))
}
