//! Control API routes that move data: fetch into a file (`POST /v1/fetch`), fetch to the
//! caller as an Arrow IPC stream (`POST /v1/fetch/stream`), and the progress of running
//! publishes and fetches (`GET /v1/progress/{id}`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::ApiState;
use crate::dataplane::{DataPlane, FetchError, FetchOptions};
use crate::error::NodeError;
use crate::progress::Tracked;
use crate::views::{ErrorView, FetchRequestBody};

/// Media type of an Arrow IPC stream.
pub const ARROW_STREAM_TYPE: &str = "application/vnd.apache.arrow.stream";
/// Response header of `POST /v1/fetch/stream`: BLAKE3 of the stream without its
/// end-of-stream marker, hex, as the provider signed it.
pub const DIGEST_HEADER: &str = "x-meshnode-digest";
/// Response header: rows in the stream.
pub const ROWS_HEADER: &str = "x-meshnode-rows";
/// Response header: bytes of the stream without its end-of-stream marker.
pub const BYTES_HEADER: &str = "x-meshnode-bytes";
/// Response header: product version fetched.
pub const VERSION_HEADER: &str = "x-meshnode-version";
/// Response header: agreement id, hex.
pub const AGREEMENT_HEADER: &str = "x-meshnode-agreement";

/// Bytes read from the verified file per chunk of a streamed answer.
const STREAM_CHUNK: usize = 256 * 1024;

/// The data routes, merged into [`super::router_with_data_plane`].
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/fetch", post(fetch))
        .route("/v1/fetch/stream", post(fetch_stream))
        .route("/v1/progress/{id}", get(progress))
}

/// Starts tracking progress under `id` when the caller named one.
pub(super) fn track(s: &ApiState, id: Option<&str>) -> Result<Option<Tracked>, NodeError> {
    match id {
        None => Ok(None),
        Some(id) => s
            .progress
            .track(id)
            .map_err(|e| NodeError::BadRequest(e.to_string())),
    }
}

/// The data plane and the fetch options a request body asks for.
fn prepare(
    s: &ApiState,
    body: FetchRequestBody,
    tracked: Option<&Tracked>,
) -> Result<(DataPlane, FetchOptions), NodeError> {
    let data = s
        .data
        .clone()
        .ok_or_else(|| NodeError::Unavailable("this node runs no data plane".into()))?;
    let product = data.resolve_product(&body.product)?;
    if let Some(dir) = std::path::Path::new(&body.out).parent() {
        crate::sameview::check(
            dir,
            body.out_dir,
            "write under a directory the service can write to (one its unit lists in \
             ReadWritePaths=), or stream through this command with --out -",
        )
        .map_err(|e| NodeError::BadRequest(e.to_string()))?;
    }
    let options = FetchOptions {
        product: product.id(),
        out: body.out.into(),
        agreement: body.agreement,
        version: body.version,
        compression: body.compression,
        provider_addr: None,
        force: body.force,
        format: body.format,
        progress: tracked.map(Tracked::progress),
        narrowing: body.narrowing,
        connections: body.connections,
    };
    Ok((data, options))
}

/// A failed fetch as an error answer: its own kind (`verification`, `unreachable`, a
/// refusal code, ...) is finer than its HTTP status.
fn fetch_failed(e: FetchError) -> Response {
    let kind = e.code();
    let e = NodeError::from(e);
    let status = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(ErrorView {
            error: e.to_string(),
            kind: Some(kind.to_owned()),
        }),
    )
        .into_response()
}

async fn fetch(
    State(s): State<ApiState>,
    Json(body): Json<FetchRequestBody>,
) -> Result<Response, NodeError> {
    let tracked = track(&s, body.progress.as_deref())?;
    let (data, options) = prepare(&s, body, tracked.as_ref())?;
    Ok(match data.fetch(options).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => fetch_failed(e),
    })
}

/// Fetches into the daemon's staging area, verifies, then answers with the Arrow IPC
/// stream (see `dataplane::staged`). The figures of the verified transfer come as headers
/// before the body, so the caller can check what it receives against the signed digest.
async fn fetch_stream(
    State(s): State<ApiState>,
    Json(body): Json<FetchRequestBody>,
) -> Result<Response, NodeError> {
    let tracked = track(&s, body.progress.as_deref())?;
    let (data, options) = prepare(&s, body, tracked.as_ref())?;
    let staged = match data.fetch_staged(options).await {
        Ok(staged) => staged,
        Err(e) => return Ok(fetch_failed(e)),
    };
    drop(tracked);
    let outcome = staged.outcome.clone();
    let length = staged.stream_len();
    let reader = staged
        .into_stream()
        .await
        .map_err(|e| NodeError::Internal(format!("cannot read the verified stream: {e}")))?;
    let chunks = futures::stream::try_unfold(reader, |mut reader| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; STREAM_CHUNK];
        let n = reader.read(&mut chunk).await?;
        chunk.truncate(n);
        Ok::<_, std::io::Error>((n > 0).then(|| (bytes::Bytes::from(chunk), reader)))
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE.as_str(), ARROW_STREAM_TYPE.to_owned());
    set(header::CONTENT_LENGTH.as_str(), length.to_string());
    set(DIGEST_HEADER, outcome.digest);
    set(ROWS_HEADER, outcome.rows.to_string());
    set(BYTES_HEADER, outcome.bytes.to_string());
    set(VERSION_HEADER, outcome.version.to_string());
    set(AGREEMENT_HEADER, outcome.agreement);
    Ok(response)
}

async fn progress(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, NodeError> {
    s.progress.get(&id).map(Json).ok_or_else(|| {
        NodeError::NotFound(format!(
            "no publish or fetch in progress under `{}`",
            id.chars()
                .take(crate::progress::MAX_ID_LEN)
                .collect::<String>()
        ))
    })
}
