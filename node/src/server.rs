//! Running a node from its data directory: what `meshnode run` does.

use std::future::Future;
use std::net::SocketAddr;

use crate::config::{ConfigError, DataDir, NodeConfig};
use crate::integrity::{self, IntegrityError};
use crate::keyfile::{self, KeyFileError};
use crate::node::{self, NodeHandle, NodeOptions};
use crate::store::{Store, StoreError};

/// Stack of each thread of the runtime a daemon runs on. A SQL query (`meshnode sql`,
/// Flight SQL) is parsed, planned and executed on those threads, and sqlparser and
/// DataFusion recurse at each level of its nesting, up to the parser's recursion limit (50).
/// On tokio's default 2 MiB a debug build overflowed at about 20 nested subqueries or
/// parenthesised table factors, aborting the daemon; 16 MiB holds every nesting the limit
/// lets through (`tests/tests/e2e/sql.rs`). It is address space, touched only as deep as a
/// query goes.
pub const WORKER_STACK: usize = 16 << 20;

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
    #[cfg(feature = "query")]
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
        .with_audit_anchor(data_dir.audit_anchor())
        .with_closed_retention(config.contracts.retention());
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

    let flight_listener = query::bind_flight(&config).await?;
    let flight_addr = flight_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()
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
        flight_addr,
        members,
        ..NodeOptions::default()
    };
    let (handle, actor) = node::spawn(identity, config, data_dir.clone(), store, options)
        .map_err(|e| ServeError::Other(e.to_string()))?;

    let token = hex::encode(rand::random::<[u8; 32]>());
    keyfile::write_secret_file(&data_dir.api_token(), &token)
        .map_err(|e| ServeError::Other(format!("cannot write the API token: {e}")))?;
    let (router, flight) = query::serve(flight_listener, handle.clone(), token, data_plane);
    if let Some(flight_addr) = flight_addr {
        tracing::info!(%flight_addr, "Flight endpoint listening");
    }
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
        flight,
    })
}

/// The query engine's endpoints: the local Flight endpoint and the engine of `/v1/sql`.
#[cfg(feature = "query")]
mod query {
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::{NodeConfig, NodeHandle, ServeError};
    use crate::dataplane::DataPlane;

    /// Binds the Flight endpoint's listener (before the daemon announces its addresses).
    pub(super) async fn bind_flight(
        config: &NodeConfig,
    ) -> Result<Option<TcpListener>, ServeError> {
        Ok(Some(crate::flight::bind(config.flight_listen).await?))
    }

    /// Serves Flight on `flight` and returns the control API's router: one query engine
    /// for every endpoint that runs SQL (its cache and query slots).
    pub(super) fn serve(
        flight: Option<TcpListener>,
        handle: NodeHandle,
        token: String,
        data: DataPlane,
    ) -> (axum::Router, Option<JoinHandle<()>>) {
        let sql = crate::sql::SqlEngine::new(data.clone());
        let flight = flight.map(|listener| {
            crate::flight::serve(
                listener,
                crate::flight::FlightContext {
                    token: token.as_str().into(),
                    data: data.clone(),
                    engine: sql.clone(),
                },
            )
        });
        let router = crate::api::router_with_engines(handle, token, Some(data), Some(sql));
        (router, flight)
    }
}

/// A build without the `query` feature: no Flight endpoint (one log line says so), and the
/// control API's SQL routes answer 501.
#[cfg(not(feature = "query"))]
mod query {
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::{NodeConfig, NodeHandle, ServeError};
    use crate::dataplane::DataPlane;

    /// Binds nothing: `flight_listen` has a default, so every config names one, and a
    /// node must start from the same config whichever build runs it.
    pub(super) async fn bind_flight(
        config: &NodeConfig,
    ) -> Result<Option<TcpListener>, ServeError> {
        tracing::info!(
            flight_listen = %config.flight_listen,
            "no Flight endpoint: this meshnode was built without the query engine (cargo feature `query`); build it with the default features (`cargo build --release -p meshnode`) for Flight and `meshnode sql`"
        );
        Ok(None)
    }

    /// The control API's router; there is no Flight endpoint to serve.
    pub(super) fn serve(
        _flight: Option<TcpListener>,
        handle: NodeHandle,
        token: String,
        data: DataPlane,
    ) -> (axum::Router, Option<JoinHandle<()>>) {
        let router = crate::api::router_with_data_plane(handle, token, Some(data));
        (router, None)
    }
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
