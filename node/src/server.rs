//! Running a node from its data directory: what `meshnode run` does.

use std::future::Future;
use std::net::SocketAddr;

use crate::config::{ConfigError, DataDir, NodeConfig};
use crate::integrity::{self, IntegrityError};
use crate::keyfile::{self, KeyFileError};
use crate::node::{self, NodeHandle, NodeOptions};
use crate::store::{Store, StoreError};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory is not initialised.
    #[error(
        "`{0}` is not a meshnode data directory: run `meshnode init --data-dir {0} --domain NAME` first"
    )]
    NotInitialised(String),
    /// Bad config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad identity.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The state on disk is not the state the node left (rolled back, emptied, replaced).
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// The store could not be opened (often: another daemon holds it).
    #[error(
        "cannot open the database in `{path}`: {source} (is another meshnode running on this data directory? If not, the database is damaged: restore `{path}` from a backup)"
    )]
    Store {
        /// Database path.
        path: String,
        /// Underlying error.
        source: StoreError,
    },
    /// The API port is taken.
    #[error(
        "cannot bind the control API on {addr}: {source} (choose another api_port in meshnode.toml)"
    )]
    Bind {
        /// Address tried.
        addr: SocketAddr,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The Flight endpoint could not start (address not loopback, port taken).
    #[error(transparent)]
    Flight(#[from] crate::flight::FlightStartError),
    /// Another failure.
    #[error("{0}")]
    Other(String),
}

/// A node started by [`start`]: its handle plus the tasks to wait for.
#[derive(Debug)]
pub struct RunningNode {
    /// Handle to the actor.
    pub handle: NodeHandle,
    /// Bound control API address.
    pub api_addr: SocketAddr,
    /// The actor task.
    actor: tokio::task::JoinHandle<()>,
    /// The API server task.
    api: tokio::task::JoinHandle<()>,
    /// The data plane task.
    data_plane: Option<tokio::task::JoinHandle<()>>,
    /// The local Flight endpoint task.
    flight: Option<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Shuts everything down: the actor flushes the store and stops, then the API.
    pub async fn stop(self) {
        let _ = self.handle.shutdown().await;
        let _ = self.actor.await;
        self.api.abort();
        if let Some(f) = self.flight {
            f.abort();
        }
        if let Some(d) = self.data_plane {
            d.abort();
        }
    }
}

/// How `meshnode run` was asked to start.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Start even if the store is behind its audit anchor, replaced or emptied
    /// (`--accept-rollback`): the loss is recorded in the audit log and the store anchored
    /// as it is.
    pub accept_rollback: bool,
}

/// Opens the data directory, starts the actor, the data plane and the control API.
pub async fn start(data_dir: DataDir) -> Result<RunningNode, ServeError> {
    start_with(data_dir, StartOptions::default()).await
}

/// [`start`] with options.
pub async fn start_with(
    data_dir: DataDir,
    start_options: StartOptions,
) -> Result<RunningNode, ServeError> {
    if !data_dir.config().exists() {
        return Err(ServeError::NotInitialised(
            data_dir.root().display().to_string(),
        ));
    }
    let config = NodeConfig::load(&data_dir.config())?;
    let identity = keyfile::load(&data_dir.identity())?;
    let store = Store::open(&data_dir.db())
        .map_err(|source| ServeError::Store {
            path: data_dir.db().display().to_string(),
            source,
        })?
        .with_audit_signer(identity.clone())
        .with_audit_anchor(data_dir.audit_anchor());
    // Before anything is served: a rolled-back or emptied store refuses to start, and what
    // a crash left in the staging area goes.
    let report = integrity::check_at_start(&data_dir, &store, start_options.accept_rollback)?;
    if report.swept > 0 {
        tracing::info!(
            files = report.swept,
            "removed staging files of publishes interrupted by a crash"
        );
    }

    let api_bind = SocketAddr::from(([127, 0, 0, 1], config.api_port));
    let listener = tokio::net::TcpListener::bind(api_bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: api_bind,
            source,
        })?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| ServeError::Other(e.to_string()))?;

    let flight_listener = crate::flight::bind(config.flight_listen).await?;
    let flight_addr = flight_listener
        .local_addr()
        .map_err(|e| ServeError::Other(e.to_string()))?;

    let members = crate::governance::MemberSet::default();
    let mut data_config = crate::dataplane::DataPlaneConfig::from_node(&config);
    data_config.members = members.clone();
    let (data_plane, data_task) = crate::dataplane::DataPlane::start(
        data_config,
        identity.clone(),
        store.clone(),
        data_dir.clone(),
    )
    .map_err(|e| ServeError::Other(e.to_string()))?;
    tracing::info!(data_addr = %data_plane.local_addr(), "data plane listening");
    let options = NodeOptions {
        api_addr: Some(api_addr),
        data_addr: Some(data_plane.local_addr()),
        flight_addr: Some(flight_addr),
        members,
        ..NodeOptions::default()
    };
    let (handle, actor) = node::spawn(identity, config, data_dir.clone(), store, options)
        .map_err(|e| ServeError::Other(e.to_string()))?;

    let token = hex::encode(rand::random::<[u8; 32]>());
    keyfile::write_secret_file(&data_dir.api_token(), &token)
        .map_err(|e| ServeError::Other(format!("cannot write the API token: {e}")))?;
    // One query engine for every endpoint that runs SQL (its cache and query slots).
    let sql = crate::sql::SqlEngine::new(data_plane.clone());
    let flight = crate::flight::serve(
        flight_listener,
        crate::flight::FlightContext {
            token: token.as_str().into(),
            data: data_plane.clone(),
            engine: sql.clone(),
        },
    );
    tracing::info!(%flight_addr, "Flight endpoint listening");
    let router =
        crate::api::router_with_engines(handle.clone(), token, Some(data_plane), Some(sql));
    let api = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("control API stopped: {e}");
        }
    });
    // Written last: its presence tells the CLI the daemon is ready.
    keyfile::write_secret_file(&data_dir.api_addr(), &api_addr.to_string())
        .map_err(|e| ServeError::Other(format!("cannot write api.addr: {e}")))?;
    tracing::info!(%api_addr, "control API listening");
    Ok(RunningNode {
        handle,
        api_addr,
        actor,
        api,
        data_plane: Some(data_task),
        flight: Some(flight),
    })
}

/// Runs a node until `shutdown` resolves, then stops it cleanly (store flushed).
pub async fn run(data_dir: DataDir, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    run_with(data_dir, StartOptions::default(), shutdown).await
}

/// [`run`] with options.
pub async fn run_with(
    data_dir: DataDir,
    options: StartOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let node = start_with(data_dir.clone(), options).await?;
    shutdown.await;
    tracing::info!("shutting down");
    node.stop().await;
    let _ = std::fs::remove_file(data_dir.api_addr());
    Ok(())
}
