//! Running a node from its data directory: what `meshnode run` does.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// Most connections the control API keeps open at once. A connection that has not yet sent
/// a request with the token is the first to go when a new one arrives; a new one is refused
/// only when every open connection has sent one ([`connections::ConnectionSlots`]).
pub const MAX_API_CONNECTIONS: usize = 64;
/// Time a control API client has to send a whole request head, from its connection or its
/// previous response on; also how long an idle connection stays open. A connection that has
/// not sent a request with the token by then is closed.
pub const API_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer of one control API connection, bytes: the most of an unfinished request head
/// it holds (hyper's default is about 400 KB).
pub const API_MAX_BUFFER: usize = 16 * 1024;

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
    /// The data directory belongs to another user or others may write to it.
    #[error(transparent)]
    DataDir(#[from] keyfile::DataDirError),
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
    // Nothing is read from a directory another user could have written.
    keyfile::make_private_dir(data_dir.root())?;
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
    let token: Arc<str> = token.into();
    let (router, flight) = query::serve(flight_listener, handle.clone(), &token, data_plane);
    if let Some(flight_addr) = flight_addr {
        tracing::info!(%flight_addr, "Flight endpoint listening");
    }
    let api = serve_api(listener, router, token);
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

    use std::sync::Arc;

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
        token: &Arc<str>,
        data: DataPlane,
    ) -> (axum::Router, Option<JoinHandle<()>>) {
        let sql = crate::sql::SqlEngine::new(data.clone());
        let flight = flight.map(|listener| {
            crate::flight::serve(
                listener,
                crate::flight::FlightContext {
                    token: token.clone(),
                    data: data.clone(),
                    engine: sql.clone(),
                },
            )
        });
        let router =
            crate::api::router_with_engines(handle, token.to_string(), Some(data), Some(sql));
        (router, flight)
    }
}

/// A build without the `query` feature: no Flight endpoint (one log line says so), and the
/// control API's SQL routes answer 501.
#[cfg(not(feature = "query"))]
mod query {
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use std::sync::Arc;

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
        token: &Arc<str>,
        data: DataPlane,
    ) -> (axum::Router, Option<JoinHandle<()>>) {
        let router = crate::api::router_with_data_plane(handle, token.to_string(), Some(data));
        (router, None)
    }
}

/// Serves the control API on `listener` until the task is aborted: HTTP/1.1 through hyper
/// with a header read timeout ([`API_HEADER_TIMEOUT`], which also closes idle connections),
/// a read buffer of [`API_MAX_BUFFER`] and at most [`MAX_API_CONNECTIONS`] connections, of
/// which those that have not sent a request with the token give way to new ones. A request
/// refused for its token is answered with `Connection: close`.
fn serve_api(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    token: Arc<str>,
) -> tokio::task::JoinHandle<()> {
    use axum::http::{HeaderValue, StatusCode, header};
    use hyper_util::rt::{TokioIo, TokioTimer};

    let slots =
        connections::ConnectionSlots::new("control API", MAX_API_CONNECTIONS, API_HEADER_TIMEOUT);
    let router = hyper_util::service::TowerToHyperService::new(router);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    connections::accept_failed("control API", &e).await;
                    continue;
                }
            };
            let Some(stream) = slots.admit(stream) else {
                continue;
            };
            let trust = stream.trust();
            let router = router.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        if presents_token(request.headers(), &token) {
                            trust.trust();
                        }
                        let answer = hyper::service::Service::call(&router, request);
                        async move {
                            let mut response = answer.await?;
                            if response.status() == StatusCode::UNAUTHORIZED {
                                response
                                    .headers_mut()
                                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                            }
                            Ok::<_, Infallible>(response)
                        }
                    },
                );
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(API_HEADER_TIMEOUT)
                    .max_buf_size(API_MAX_BUFFER);
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("control API connection ended: {e}");
                }
            });
        }
    })
}

/// Whether `headers` carry `authorization: Bearer <token>` (compared in constant time, as
/// the API's own check does).
fn presents_token(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|presented| {
            crate::api::constant_time_eq(presented.as_bytes(), token.as_bytes())
        })
}

/// The connections of a local endpoint (the control API, the Flight endpoint): how many
/// stay open, and for how long one may stay without a request that carries the token.
pub(crate) mod connections {
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio_util::sync::CancellationToken;

    /// At most `cap` open connections of one endpoint. A connection is closed unless it
    /// makes a request with the token ([`Trust::trust`]) within `deadline` of its
    /// acceptance. When `cap` are open, a new connection takes the place of the oldest one
    /// that has made no such request, or is refused when every open one has.
    #[derive(Clone, Debug)]
    pub(crate) struct ConnectionSlots {
        /// The endpoint, for log lines.
        endpoint: &'static str,
        /// The open connections.
        table: Arc<Mutex<Table>>,
        /// Most open connections.
        cap: usize,
        /// Time a connection has to make a request with the token.
        deadline: Duration,
    }

    /// The open connections, by order of acceptance.
    #[derive(Debug, Default)]
    struct Table {
        /// Number of the next connection.
        next: u64,
        /// Open connections.
        open: BTreeMap<u64, Entry>,
        /// When a refusal was last logged (one line a minute at most).
        refusal_logged: Option<Instant>,
    }

    /// One open connection.
    #[derive(Debug)]
    struct Entry {
        /// It made a request with the token.
        trusted: bool,
        /// Cancelled to close it.
        close: CancellationToken,
    }

    /// Locks `table`; its state stays whole if a holder panicked (every change is one
    /// map operation).
    fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
        table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    impl ConnectionSlots {
        /// Slots for `cap` connections of `endpoint`.
        pub(crate) fn new(endpoint: &'static str, cap: usize, deadline: Duration) -> Self {
            Self {
                endpoint,
                table: Arc::default(),
                cap,
                deadline,
            }
        }

        /// Takes a slot for `stream`, closing the oldest connection without a request with
        /// the token if all are taken; `None` (and `stream` closed) when every open
        /// connection has made one.
        pub(crate) fn admit<S>(&self, stream: S) -> Option<Guarded<S>> {
            let mut table = lock(&self.table);
            if table.open.len() >= self.cap {
                let oldest = table
                    .open
                    .iter()
                    .find(|(_, entry)| !entry.trusted)
                    .map(|(id, _)| *id);
                match oldest.and_then(|id| table.open.remove(&id)) {
                    Some(evicted) => {
                        evicted.close.cancel();
                        tracing::debug!(
                            endpoint = self.endpoint,
                            "connection limit reached: closed the oldest connection that has not sent the token"
                        );
                    }
                    None => {
                        let now = Instant::now();
                        if table
                            .refusal_logged
                            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
                        {
                            table.refusal_logged = Some(now);
                            tracing::warn!(
                                endpoint = self.endpoint,
                                limit = self.cap,
                                "refused a connection: the limit of open connections is reached, all of clients with the token"
                            );
                        }
                        return None;
                    }
                }
            }
            let id = table.next;
            table.next += 1;
            let close = CancellationToken::new();
            table.open.insert(
                id,
                Entry {
                    trusted: false,
                    close: close.clone(),
                },
            );
            drop(table);
            let slot = Slot {
                table: self.table.clone(),
                id,
            };
            let table = self.table.clone();
            let deadline = self.deadline;
            let closed = Box::pin(async move {
                tokio::select! {
                    () = close.cancelled() => {}
                    () = tokio::time::sleep(deadline) => {
                        if !close_if_untrusted(&table, id) {
                            close.cancelled().await;
                        }
                    }
                }
            });
            Some(Guarded {
                stream,
                slot,
                closed,
                is_closed: false,
            })
        }

        /// Connections open now.
        #[cfg(test)]
        pub(crate) fn open(&self) -> usize {
            lock(&self.table).open.len()
        }
    }

    /// Closes connection `id` unless it made a request with the token; whether it is
    /// closed (or was already).
    fn close_if_untrusted(table: &Mutex<Table>, id: u64) -> bool {
        let mut table = lock(table);
        match table.open.get(&id) {
            Some(entry) if entry.trusted => false,
            Some(_) => {
                if let Some(entry) = table.open.remove(&id) {
                    entry.close.cancel();
                }
                true
            }
            None => true,
        }
    }

    /// A connection's place in its [`ConnectionSlots`], given back when it is dropped.
    #[derive(Debug)]
    struct Slot {
        table: Arc<Mutex<Table>>,
        id: u64,
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            lock(&self.table).open.remove(&self.id);
        }
    }

    /// Marks a connection as one that made a request with the token: it is no longer
    /// closed at its deadline nor to make room.
    #[derive(Clone, Debug)]
    pub(crate) struct Trust {
        table: Arc<Mutex<Table>>,
        id: u64,
    }

    impl Trust {
        /// The connection made a request with the token.
        pub(crate) fn trust(&self) {
            if let Some(entry) = lock(&self.table).open.get_mut(&self.id) {
                entry.trusted = true;
            }
        }
    }

    /// An admitted connection: reads end (EOF) and writes fail once it is closed to make
    /// room or at its deadline, so that the server serving it drops it; its slot is given
    /// back when it is dropped.
    pub(crate) struct Guarded<S> {
        /// The connection.
        stream: S,
        /// Its slot.
        slot: Slot,
        /// Resolves when the connection is to be closed.
        closed: Pin<Box<dyn Future<Output = ()> + Send>>,
        /// `closed` resolved.
        is_closed: bool,
    }

    impl<S> std::fmt::Debug for Guarded<S> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Guarded")
                .field("id", &self.slot.id)
                .field("is_closed", &self.is_closed)
                .finish_non_exhaustive()
        }
    }

    impl<S> Guarded<S> {
        /// The handle that marks this connection trusted.
        pub(crate) fn trust(&self) -> Trust {
            Trust {
                table: self.slot.table.clone(),
                id: self.slot.id,
            }
        }

        /// Whether the connection is to be closed; registers the task's waker otherwise.
        fn poll_closed(&mut self, cx: &mut Context<'_>) -> bool {
            if !self.is_closed && self.closed.as_mut().poll(cx).is_ready() {
                self.is_closed = true;
            }
            self.is_closed
        }
    }

    /// The error of a write to a connection closed by its slots.
    fn closed_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection closed: no request with the token in time, or its place was needed",
        )
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.poll_closed(cx) {
                return Poll::Ready(Ok(()));
            }
            Pin::new(&mut this.stream).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.poll_closed(cx) {
                return Poll::Ready(Err(closed_error()));
            }
            Pin::new(&mut this.stream).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.poll_closed(cx) {
                return Poll::Ready(Err(closed_error()));
            }
            Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
        }
    }

    /// After a failed `accept`: a connection that went away before it was accepted is no
    /// reason to wait; anything else (no descriptor left) is logged and the accept loop
    /// pauses a second, rather than spinning.
    pub(crate) async fn accept_failed(endpoint: &'static str, error: &io::Error) {
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::Interrupted
        ) {
            return;
        }
        tracing::warn!(endpoint, "cannot accept a connection: {error}");
        tokio::time::sleep(Duration::from_secs(1)).await;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::connections::{ConnectionSlots, Guarded};
    use super::*;

    /// A connection admitted by `slots`: the server's side, and the client's.
    fn connect(slots: &ConnectionSlots) -> Option<(Guarded<DuplexStream>, DuplexStream)> {
        let (server, client) = tokio::io::duplex(1024);
        slots.admit(server).map(|server| (server, client))
    }

    /// Whether the server's side of a connection reads its end (EOF) within `within`.
    async fn ends_within(server: &mut Guarded<DuplexStream>, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(within, server.read(&mut byte)).await,
            Ok(Ok(0))
        )
    }

    #[tokio::test]
    async fn a_connection_without_the_token_is_closed_at_its_deadline_and_a_trusted_one_stays() {
        let deadline = Duration::from_millis(300);
        let slots = ConnectionSlots::new("test", 4, deadline);
        let started = std::time::Instant::now();
        let (mut silent, _silent_client) = connect(&slots).unwrap();
        let (mut trusted, _trusted_client) = connect(&slots).unwrap();
        trusted.trust().trust();
        assert!(ends_within(&mut silent, Duration::from_secs(10)).await);
        assert!(started.elapsed() >= deadline);
        let err = silent.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
        // Its slot is free as soon as it is closed; the trusted one, past the same
        // deadline, keeps its own.
        assert_eq!(slots.open(), 1);
        assert!(!ends_within(&mut trusted, Duration::from_millis(100)).await);
        drop(silent);
        drop(trusted);
        assert_eq!(slots.open(), 0);
    }

    #[tokio::test]
    async fn when_full_the_oldest_connection_without_the_token_gives_way_and_trusted_ones_never_do()
    {
        let slots = ConnectionSlots::new("test", 3, Duration::from_secs(600));
        let (mut oldest, _c1) = connect(&slots).unwrap();
        let (trusted, _c2) = connect(&slots).unwrap();
        trusted.trust().trust();
        let (mut younger, _c3) = connect(&slots).unwrap();
        // Full: the oldest untrusted connection goes, at once.
        let (newest, _c4) = connect(&slots).unwrap();
        assert!(ends_within(&mut oldest, Duration::from_secs(10)).await);
        assert!(!ends_within(&mut younger, Duration::from_millis(50)).await);
        assert_eq!(slots.open(), 3);
        // All trusted: a new connection is refused, until one of them closes.
        younger.trust().trust();
        newest.trust().trust();
        assert!(connect(&slots).is_none());
        drop(trusted);
        assert!(connect(&slots).is_some());
    }

    /// The control API on a loopback port with a router of one route that answers 200 with
    /// `token` and 401 without, as the real one does.
    async fn api_with_token(token: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        use axum::http::{HeaderMap, StatusCode};
        let expected: Arc<str> = token.into();
        let router = axum::Router::new().route(
            "/v1/status",
            axum::routing::get({
                let expected = expected.clone();
                move |headers: HeaderMap| async move {
                    if presents_token(&headers, &expected) {
                        StatusCode::OK
                    } else {
                        StatusCode::UNAUTHORIZED
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, serve_api(listener, router, expected))
    }

    /// Sends `request` on a new connection and reads until the server closes it.
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
            .await
            .expect("the server closes the connection")
            .unwrap();
        answer
    }

    #[tokio::test]
    async fn the_api_answers_a_token_holder_while_its_connections_are_taken_by_silent_clients() {
        let (addr, api) = api_with_token("secret").await;
        // More silent clients than the API keeps: each sent part of a request head.
        let mut silent = Vec::new();
        for _ in 0..MAX_API_CONNECTIONS * 2 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            silent.push(stream);
        }
        let answer = exchange(
            addr,
            "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // A request without the token is answered 401 and its connection closed, though
        // it asked to keep it.
        let answer = exchange(addr, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        // The oldest silent clients made room: their connections are closed already.
        let mut first = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(1), silent[0].read(&mut first)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the oldest silent connection is still open: {read:?}"
        );
        api.abort();
    }

    #[tokio::test]
    async fn a_request_whose_handler_panics_is_answered_500_and_the_api_goes_on() {
        use axum::http::StatusCode;
        let router = |caught: bool| {
            let router = axum::Router::new()
                .route(
                    "/v1/status",
                    axum::routing::get(|| async { StatusCode::OK }),
                )
                .route(
                    "/v1/broken",
                    axum::routing::get(|| async {
                        if std::hint::black_box(true) {
                            panic!("a bug");
                        }
                        StatusCode::OK
                    }),
                );
            if caught {
                crate::api::catch_panics(router)
            } else {
                router
            }
        };
        let request = |path: &str| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n"
            )
        };
        for caught in [false, true] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let api = serve_api(listener, router(caught), "t".into());
            let answer = exchange(addr, &request("/v1/broken")).await;
            if caught {
                assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
                assert!(
                    answer.contains("the daemon failed while answering this request"),
                    "{answer}"
                );
                assert!(answer.contains("\"kind\":\"internal\""), "{answer}");
            } else {
                // Without the layer the client learns nothing: the connection just ends.
                assert_eq!(answer, "");
            }
            let answer = exchange(addr, &request("/v1/status")).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            api.abort();
        }
    }
}
