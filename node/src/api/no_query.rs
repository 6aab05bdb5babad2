//! `POST /v1/sql` and `GET /v1/sql/tables` in a build without the `query` feature: both
//! answer 501 Not Implemented with an error saying how to get a build that has the engine,
//! rather than a 404 that reads like a typo in the path.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::ApiState;
use crate::dataplane::DataPlane;
use crate::views::ErrorView;

/// What the answers say.
const NOT_BUILT: &str = "this meshnode was built without the query engine (cargo feature `query`): no SQL and no Flight endpoint; build it with the default features (`cargo build --release -p meshnode`) to use `meshnode sql`";

/// The SQL routes, answering 501 whatever `data` is.
pub(super) fn routes_for(_data: Option<&DataPlane>) -> Router<ApiState> {
    Router::new()
        .route("/v1/sql", post(not_built))
        .route("/v1/sql/tables", get(not_built))
}

async fn not_built() -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(ErrorView {
            error: NOT_BUILT.into(),
            kind: Some("not_implemented".into()),
        }),
    )
        .into_response()
}
