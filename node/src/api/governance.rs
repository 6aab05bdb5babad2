//! HTTP routes of mesh membership and governance.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::ApiState;
use crate::error::NodeError;
use crate::views::{
    InviteRequest, MeshView, MotionJson, ProposeRequest, RemoveRequest, TicketView,
};

/// The governance routes.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/mesh", get(show))
        .route("/v1/mesh/invite", post(invite))
        .route("/v1/mesh/remove", post(remove))
        .route("/v1/governance/motions", get(motions))
        .route("/v1/governance/propose", post(propose))
        .route("/v1/governance/sign/{motion}", post(sign))
}

async fn show(State(s): State<ApiState>) -> Result<Json<MeshView>, NodeError> {
    Ok(Json(s.node.mesh().await?))
}

async fn invite(
    State(s): State<ApiState>,
    Json(request): Json<InviteRequest>,
) -> Result<Json<TicketView>, NodeError> {
    Ok(Json(s.node.invite(request).await?))
}

async fn remove(
    State(s): State<ApiState>,
    Json(request): Json<RemoveRequest>,
) -> Result<Json<MotionJson>, NodeError> {
    Ok(Json(s.node.remove_member(request).await?))
}

async fn motions(State(s): State<ApiState>) -> Result<Json<Vec<MotionJson>>, NodeError> {
    Ok(Json(s.node.motions().await?))
}

async fn propose(
    State(s): State<ApiState>,
    Json(request): Json<ProposeRequest>,
) -> Result<Json<MotionJson>, NodeError> {
    Ok(Json(s.node.propose(request).await?))
}

async fn sign(
    State(s): State<ApiState>,
    Path(motion): Path<String>,
) -> Result<Json<MotionJson>, NodeError> {
    Ok(Json(s.node.sign_motion(motion).await?))
}
