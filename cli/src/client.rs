//! Talking to a running daemon through its control API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mesh_node::DataDir;
use mesh_node::localfile::LocalFileError;
use mesh_node::views::ErrorView;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::exit::{Failure, fail};

/// Resolves `--data-dir` (which clap fills from `$MESHNODE_DATA_DIR` when the flag is
/// absent), then `~/.meshnode`.
pub(crate) fn data_dir(flag: Option<PathBuf>) -> anyhow::Result<DataDir> {
    if let Some(dir) = flag {
        return Ok(DataDir::new(dir));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        fail(
            Failure::Usage,
            "no --data-dir given, MESHNODE_DATA_DIR unset and HOME unknown: pass --data-dir DIR",
        )
    })?;
    Ok(DataDir::new(PathBuf::from(home).join(".meshnode")))
}

/// An authenticated client for one daemon.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// `http://127.0.0.1:port`.
    base: String,
    /// Bearer token.
    token: String,
    /// HTTP client.
    http: reqwest::Client,
}

impl Client {
    /// Connects to the daemon of `dir`, with a clear error when it is not running.
    pub(crate) fn for_data_dir(dir: &DataDir) -> anyhow::Result<Self> {
        let shown = dir.root().display();
        if !dir.config().exists() {
            return Err(fail(
                Failure::NotFound,
                format!(
                    "`{shown}` is not a meshnode data directory: run `meshnode init --data-dir {shown} --domain NAME` first"
                ),
            ));
        }
        let addr = read_trimmed(&dir.api_addr()).map_err(|e| match e {
            LocalFileError::Io(_) => fail(
                Failure::Unreachable,
                format!("no meshnode daemon is running for `{shown}` ({e}): start it with `meshnode run --data-dir {shown}`"),
            ),
            refused => refused_api_file(&dir.api_addr(), &refused, dir.root()),
        })?;
        let token = read_trimmed(&dir.api_token()).map_err(|e| match e {
            LocalFileError::Io(_) => anyhow::Error::new(e).context(format!(
                "cannot read the API token `{}`",
                dir.api_token().display()
            )),
            refused => refused_api_file(&dir.api_token(), &refused, dir.root()),
        })?;
        Ok(Self {
            base: format!("http://{addr}"),
            token,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .build()?,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = self.answer(request).await?;
        let body = response.bytes().await?;
        serde_json::from_slice(&body).context("the daemon sent an unexpected answer")
    }

    /// Sends `request` and returns a successful answer unread; an error answer becomes an
    /// error of the kind it names.
    async fn answer(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            if e.is_connect() {
                fail(
                    Failure::Unreachable,
                    format!(
                        "the meshnode daemon at {} is not answering (it may have stopped): start it with `meshnode run --data-dir DIR`",
                        self.base
                    ),
                )
            } else {
                fail(
                    Failure::Unreachable,
                    format!("request to the daemon failed: {e}"),
                )
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await?;
            let (message, kind) = match serde_json::from_slice::<ErrorView>(&body) {
                Ok(e) => (e.error, e.kind),
                Err(_) => (String::from_utf8_lossy(&body).into_owned(), None),
            };
            return Err(fail(
                Failure::from_answer(status.as_u16(), kind.as_deref()),
                message,
            ));
        }
        Ok(response)
    }

    /// `POST path` with a JSON body, for an answer that is not JSON: returned unread once
    /// its status says success.
    pub(crate) async fn post_for_body<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<reqwest::Response> {
        self.answer(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `GET path`.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}

/// Largest `api.addr` or `api.token` read: the daemon writes a few dozen bytes.
const MAX_API_FILE: u64 = 4096;

fn read_trimmed(path: &Path) -> Result<String, LocalFileError> {
    Ok(mesh_node::localfile::read_to_string(path, MAX_API_FILE)?
        .trim()
        .to_owned())
}

/// The error for an `api.addr` or `api.token` that is not what the daemon writes there.
fn refused_api_file(path: &Path, refused: &LocalFileError, root: &Path) -> anyhow::Error {
    fail(
        Failure::Io,
        format!(
            "`{}` is not the file the daemon writes ({refused}): remove it and start the daemon with `meshnode run --data-dir {}`",
            path.display(),
            root.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_token_over_the_limit_is_refused_with_its_size_and_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        std::fs::write(dir.config(), "domain = \"sales\"\n").unwrap();
        std::fs::write(dir.api_addr(), "127.0.0.1:4000\n").unwrap();
        std::fs::write(dir.api_token(), "t".repeat(5000)).unwrap();
        let err = Client::for_data_dir(&dir).unwrap_err();
        let shown = format!("{err:#}");
        for part in [
            dir.api_token().display().to_string(),
            "5000".into(),
            MAX_API_FILE.to_string(),
        ] {
            assert!(shown.contains(&part), "{part} in {shown}");
        }
        assert_eq!(Failure::of(&err), Failure::Io);
        // Within the limit it is read (and trimmed).
        std::fs::write(dir.api_token(), "token\n").unwrap();
        assert_eq!(Client::for_data_dir(&dir).unwrap().token, "token");
    }
}
