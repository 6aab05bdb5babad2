//! Talking to a running daemon through its control API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use mesh_node::DataDir;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Resolves `--data-dir`: the flag, then `$MESHNODE_DATA_DIR`, then `~/.meshnode`.
pub(crate) fn data_dir(flag: Option<PathBuf>) -> anyhow::Result<DataDir> {
    if let Some(dir) = flag {
        return Ok(DataDir::new(dir));
    }
    if let Some(dir) = std::env::var_os("MESHNODE_DATA_DIR") {
        return Ok(DataDir::new(PathBuf::from(dir)));
    }
    let home = std::env::var_os("HOME")
        .context("no --data-dir given, MESHNODE_DATA_DIR unset and HOME unknown")?;
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
            bail!(
                "`{shown}` is not a meshnode data directory: run `meshnode init --data-dir {shown} --domain NAME` first"
            );
        }
        let addr = read_trimmed(&dir.api_addr()).with_context(|| {
            format!("no meshnode daemon is running for `{shown}`: start it with `meshnode run --data-dir {shown}`")
        })?;
        let token = read_trimmed(&dir.api_token())
            .with_context(|| format!("cannot read the API token in `{shown}`"))?;
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
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!(
                    "the meshnode daemon at {} is not answering (it may have stopped): start it with `meshnode run --data-dir DIR`",
                    self.base
                )
            } else {
                anyhow::anyhow!("request to the daemon failed: {e}")
            }
        })?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<mesh_node::views::ErrorView>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            bail!("{message}");
        }
        serde_json::from_slice(&body).context("the daemon sent an unexpected answer")
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

    /// `GET path` returning text.
    #[allow(dead_code)] // for `meshnode metrics`-style commands
    pub(crate) async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("the daemon answered {}", response.status());
        }
        Ok(response.text().await?)
    }
}

fn read_trimmed(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}
