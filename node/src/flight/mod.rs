//! The local Arrow Flight / Flight SQL endpoint: mesh data for the tools people already
//! have (`pyarrow.flight`, the ADBC Flight SQL driver, and through them polars, pandas and
//! DuckDB), without meshnode code on the client side.
//!
//! One tonic server on 127.0.0.1 (`flight_listen` in `meshnode.toml`, its address shown by
//! `meshnode status --json` as `flight_addr`) serves both protocols on one port:
//!
//! - plain Flight: `ListFlights` and `GetFlightInfo` (descriptor path `[product]`, or a
//!   command holding a product ticket) for the products with a usable agreement (the
//!   tables of the query engine), and `DoGet` with a product ticket ([`ticket`]) that streams the product
//!   batch by batch while the fetch runs ([`stream`]);
//! - Flight SQL ([`sql`]): statements run by the engine of `meshnode sql`, and
//!   `GetSqlInfo`. Other commands answer `Unimplemented`.
//!
//! Every call needs `authorization: Bearer <token>` with the control API's token
//! (`<data-dir>/api.token`, [`auth`]). What a client can make the daemon keep is bounded:
//! request messages ([`MAX_REQUEST`]), tickets and statements, HTTP/2 streams per
//! connection ([`MAX_STREAMS_PER_CONNECTION`]), concurrent `DoGet`s ([`MAX_DO_GETS`]),
//! metadata calls that list the tables or plan a statement (`ListFlights`, `GetFlightInfo`,
//! `GetSchema`, `CreatePreparedStatement`: the query engine's
//! [`MAX_CONCURRENT_PLANS`](crate::sql::MAX_CONCURRENT_PLANS) at once, the rest refused
//! with `RESOURCE_EXHAUSTED` after waiting [`PLAN_WAIT`](crate::sql::PLAN_WAIT)) and
//! connections ([`MAX_CONNECTIONS`]): one that has made no call with the token within
//! [`FIRST_CALL_DEADLINE`] is closed, and gives way to a new one before that when all are
//! open. A connection lives at most [`MAX_CONNECTION_AGE`] (then new calls go to a new
//! one), and one whose client stops answering HTTP/2 pings is closed.
//!
//! Architecture invariant: the endpoint reads products only through the data plane's
//! verified fetch and the query engine; it holds no agreement logic of its own beyond
//! listing what is usable.

mod auth;
mod sql;
pub(crate) mod stream;
mod ticket;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::{Stream, TryStreamExt};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

use crate::dataplane::{Compression, DataPlane, FetchOptions, OutputFormat};
use crate::server::connections::{self, ConnectionSlots, Guarded, Trust};
use crate::sql::{SqlEngine, TableInfo};
use ticket::ProductTicket;

pub use sql::MAX_STATEMENT;

/// Largest request message a client may send (descriptors, tickets, statements), bytes.
pub const MAX_REQUEST: usize = 256 * 1024;
/// Most concurrent HTTP/2 streams (calls) on one client connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// Most product `DoGet`s running at once; more are refused with `ResourceExhausted`.
pub const MAX_DO_GETS: usize = 8;
/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a new connection has to make a call with the token before it is closed.
pub const FIRST_CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a call may take to answer (its first message; a stream then runs as long as it
/// needs): a call waiting longer, for a query slot say, ends with `CANCELLED`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Interval of the HTTP/2 pings on an open connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Time a client has to answer a ping before its connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Age at which a connection is asked to close (HTTP/2 `GOAWAY`): the calls it carries
/// finish, new calls open a new connection.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30 * 60);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum FlightStartError {
    /// The address is not a loopback address: the endpoint speaks plain gRPC with a bearer
    /// token and must not be reachable from other hosts.
    #[error(
        "flight_listen {0} is not a loopback address: the Flight endpoint serves 127.0.0.1 (or ::1) only"
    )]
    NotLoopback(SocketAddr),
    /// The port is taken.
    #[error(
        "cannot bind the Flight endpoint on {addr}: {source} (choose another flight_listen in meshnode.toml)"
    )]
    Bind {
        /// Address tried.
        addr: SocketAddr,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the endpoint's listener (before the daemon announces its addresses).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, FlightStartError> {
    if !addr.ip().is_loopback() {
        return Err(FlightStartError::NotLoopback(addr));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| FlightStartError::Bind { addr, source })
}

/// What the endpoint serves from.
#[derive(Clone, Debug)]
pub struct FlightContext {
    /// The control API's bearer token.
    pub token: Arc<str>,
    /// The data plane that fetches products.
    pub data: DataPlane,
    /// The engine of `meshnode sql`: its tables are the flights, it runs the statements.
    pub engine: SqlEngine,
}

/// Serves the endpoint on `listener` until the task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    context: FlightContext,
) -> tokio::task::JoinHandle<()> {
    let check = Admission {
        check: auth::TokenCheck::new(context.token.clone()),
    };
    let service = Endpoint {
        data: context.data,
        do_gets: Arc::new(Semaphore::new(MAX_DO_GETS)),
        sql: sql::SqlService {
            engine: context.engine,
        },
    };
    let server = tonic::service::interceptor::InterceptedService::new(
        FlightServiceServer::new(service).max_decoding_message_size(MAX_REQUEST),
        check,
    );
    let slots = ConnectionSlots::new("Flight endpoint", MAX_CONNECTIONS, FIRST_CALL_DEADLINE);
    let incoming = futures::stream::unfold(listener, move |listener| {
        let slots = slots.clone();
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if let Some(stream) = slots.admit(stream) {
                            return Some((Ok::<_, std::io::Error>(stream), listener));
                        }
                    }
                    Err(e) => connections::accept_failed("Flight endpoint", &e).await,
                }
            }
        }
    });
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
            .timeout(CALL_TIMEOUT)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_connection_age(MAX_CONNECTION_AGE)
            .add_service(server)
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = result {
            tracing::error!("Flight endpoint stopped: {e}");
        }
    })
}

/// The token check of every call, which also marks the call's connection as one that
/// made a call with the token (so it is neither closed at its deadline nor to make room).
#[derive(Clone, Debug)]
struct Admission {
    /// The token check.
    check: auth::TokenCheck,
}

impl tonic::service::Interceptor for Admission {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check.check(&request)?;
        if let Some(trust) = request.extensions().get::<Trust>() {
            trust.trust();
        }
        Ok(request)
    }
}

/// What tonic attaches to each call of a connection: the handle that marks it trusted.
impl tonic::transport::server::Connected for Guarded<tokio::net::TcpStream> {
    type ConnectInfo = Trust;

    fn connect_info(&self) -> Trust {
        self.trust()
    }
}

/// The service: plain Flight here, Flight SQL in [`sql::SqlService`].
#[derive(Clone, Debug)]
struct Endpoint {
    /// Fetches products.
    data: DataPlane,
    /// Slots of concurrent product `DoGet`s.
    do_gets: Arc<Semaphore>,
    /// The Flight SQL half.
    sql: sql::SqlService,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The flight of one table: its granted schema and a ticket naming product, version and
/// agreement.
fn table_info(table: &TableInfo) -> Result<FlightInfo, Status> {
    let ticket = ProductTicket {
        product: table.name.clone(),
        version: Some(table.version),
        agreement: Some(table.agreement.to_hex()),
    };
    Ok(FlightInfo::new()
        .try_with_schema(&table.schema)
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
        .with_descriptor(FlightDescriptor::new_path(vec![table.name.clone()]))
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket.to_bytes())))
        .with_total_records(-1)
        .with_total_bytes(-1)
        .with_ordered(true))
}

impl Endpoint {
    async fn tables(&self) -> Result<Vec<TableInfo>, Status> {
        self.sql
            .engine
            .tables()
            .await
            .map_err(|e| sql::sql_status(&e))
    }

    /// The table `name` designates (as listed, or any spelling the catalog resolves to it).
    async fn table(&self, name: &str) -> Result<TableInfo, Status> {
        let tables = self.tables().await?;
        if let Some(t) = tables.iter().find(|t| t.name == name) {
            return Ok(t.clone());
        }
        let descriptor = self
            .data
            .resolve_product(name)
            .map_err(|e| Status::not_found(e.to_string()))?;
        tables
            .into_iter()
            .find(|t| t.product == descriptor.id())
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no usable agreement lets this node read `{name}`: request one with `meshnode share request`"
                ))
            })
    }

    /// The table a descriptor names: path `[product]`, or a command holding a product
    /// ticket; `None` for any other command (Flight SQL).
    async fn described(&self, descriptor: &FlightDescriptor) -> Result<Option<TableInfo>, Status> {
        match descriptor.r#type() {
            DescriptorType::Path => match descriptor.path.as_slice() {
                [name] if name.len() <= ticket::MAX_PRODUCT_TICKET => {
                    Ok(Some(self.table(name).await?))
                }
                _ => Err(Status::invalid_argument(
                    "a path descriptor names one product: [\"domain/product\"]",
                )),
            },
            DescriptorType::Cmd if ticket::is_product_ticket(&descriptor.cmd) => {
                let t = ProductTicket::parse(&descriptor.cmd)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                Ok(Some(self.table(&t.product).await?))
            }
            DescriptorType::Cmd => Ok(None),
            DescriptorType::Unknown => Err(Status::invalid_argument("the descriptor has no type")),
        }
    }

    /// Streams the product a ticket names.
    fn do_get_product(&self, bytes: &[u8]) -> Result<BoxStream<FlightData>, Status> {
        let ticket =
            ProductTicket::parse(bytes).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let data = self.data.clone();
        let descriptor = data
            .resolve_product(&ticket.product)
            .map_err(|e| Status::not_found(e.to_string()))?;
        // The catalog holds the latest entry only: a ticket for another version is served
        // as its provider's header describes it.
        let declared = match ticket.version {
            Some(v) if v != descriptor.version => None,
            _ => Some(stream::Declared {
                product: ticket.product.clone(),
                schema: Arc::new(crate::sql::declared_schema(&descriptor.schema).map_err(
                    |e| {
                        Status::failed_precondition(format!(
                            "the catalog entry of `{}` declares a column type that does not parse: {e}",
                            ticket.product
                        ))
                    },
                )?),
            }),
        };
        let permit = self.do_gets.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_DO_GETS} reads are running already; retry when one has finished"
            ))
        })?;
        let options = FetchOptions {
            product: descriptor.id(),
            out: std::path::PathBuf::new(),
            agreement: ticket.agreement,
            version: ticket.version,
            compression: Compression::None,
            provider_addr: None,
            force: false,
            format: OutputFormat::Arrow,
            progress: None,
            narrowing: None,
            connections: None,
        };
        let batches = stream::product_batches(data, options, declared, permit);
        Ok(Box::pin(
            FlightDataEncoderBuilder::new()
                .build(batches)
                .map_err(Status::from),
        ))
    }
}

#[tonic::async_trait]
impl FlightService for Endpoint {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "no handshake: send `authorization: Bearer <token>` with every call",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos: Vec<Result<FlightInfo, Status>> =
            self.tables().await?.iter().map(table_info).collect();
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        match self.described(request.get_ref()).await? {
            Some(table) => Ok(Response::new(table_info(&table)?)),
            None => FlightService::get_flight_info(&self.sql, request).await,
        }
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "PollFlightInfo is not supported: use GetFlightInfo",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        match self.described(request.get_ref()).await? {
            Some(table) => {
                let options = arrow::ipc::writer::IpcWriteOptions::default();
                let result = SchemaResult::try_from(SchemaAsIpc::new(&table.schema, &options))
                    .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?;
                Ok(Response::new(result))
            }
            None => FlightService::get_schema(&self.sql, request).await,
        }
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let bytes = &request.get_ref().ticket;
        if bytes.len() > MAX_STATEMENT + 1024 {
            return Err(Status::invalid_argument(format!(
                "the ticket has {} bytes, more than any ticket of this endpoint",
                bytes.len()
            )));
        }
        if ticket::is_product_ticket(bytes) {
            return Ok(Response::new(self.do_get_product(bytes)?));
        }
        FlightService::do_get(&self.sql, request).await
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented(
            "the endpoint is read-only: publish with `meshnode publish`",
        ))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.sql, request).await
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange is not supported"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use arrow_flight::sql::{
        ActionCreatePreparedStatementRequest, CommandStatementQuery, ProstMessageExt,
    };
    use prost::Message;

    use super::*;
    use crate::sql::testkit;

    /// Metadata calls (ListFlights, GetFlightInfo of a product or a statement, GetSchema,
    /// CreatePreparedStatement) beyond the engine's planning slots end with
    /// `RESOURCE_EXHAUSTED` once they have waited the engine's bound, and are answered when
    /// a slot is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metadata_calls_beyond_the_planning_slots_are_refused_after_a_bounded_wait() {
        let node = testkit::Node::new();
        let sales = testkit::provider(0);
        let orders = testkit::publish(&node.store, &sales, "sales", "orders");
        testkit::consume(&node.store, &sales, &orders, crate::node::now_ms());
        let wait = Duration::from_millis(300);
        let engine = SqlEngine::with_plan_wait(node.plane.clone(), wait);
        let endpoint = Endpoint {
            data: node.plane.clone(),
            do_gets: Arc::new(Semaphore::new(MAX_DO_GETS)),
            sql: sql::SqlService {
                engine: engine.clone(),
            },
        };
        let statement = || {
            FlightDescriptor::new_cmd(
                CommandStatementQuery {
                    query: "SELECT region FROM \"sales/orders\"".into(),
                    transaction_id: None,
                }
                .as_any()
                .encode_to_vec(),
            )
        };
        let product = || FlightDescriptor::new_path(vec!["sales/orders".into()]);
        let prepare = || Action {
            r#type: "CreatePreparedStatement".into(),
            body: ActionCreatePreparedStatementRequest {
                query: "SELECT region FROM \"sales/orders\"".into(),
                transaction_id: None,
            }
            .as_any()
            .encode_to_vec()
            .into(),
        };
        let info = endpoint
            .get_flight_info(Request::new(product()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            info.flight_descriptor.unwrap().path,
            vec!["sales/orders".to_string()]
        );

        let held = engine
            .plan_slots()
            .acquire_many(crate::sql::MAX_CONCURRENT_PLANS as u32)
            .await
            .unwrap();
        let started = Instant::now();
        let calls = (0..40).map(|i| {
            let endpoint = endpoint.clone();
            async move {
                match i % 5 {
                    0 => endpoint
                        .list_flights(Request::new(Criteria::default()))
                        .await
                        .map(|_| ()),
                    1 => endpoint
                        .get_flight_info(Request::new(product()))
                        .await
                        .map(|_| ()),
                    2 => endpoint
                        .get_flight_info(Request::new(statement()))
                        .await
                        .map(|_| ()),
                    3 => endpoint
                        .get_schema(Request::new(product()))
                        .await
                        .map(|_| ()),
                    _ => endpoint
                        .do_action(Request::new(prepare()))
                        .await
                        .map(|_| ()),
                }
            }
        });
        let results = futures::future::join_all(calls).await;
        let elapsed = started.elapsed();
        for (i, result) in results.into_iter().enumerate() {
            let status = result.expect_err("no planning slot was free");
            assert_eq!(
                status.code(),
                tonic::Code::ResourceExhausted,
                "call {i}: {status}"
            );
            assert!(status.message().contains("busy"), "call {i}: {status}");
        }
        assert!(elapsed >= wait, "refused after {elapsed:?}");
        assert!(elapsed < wait * 10, "refused after {elapsed:?}");

        drop(held);
        let info = endpoint
            .get_flight_info(Request::new(statement()))
            .await
            .unwrap()
            .into_inner();
        let schema = info.try_decode_schema().unwrap();
        assert_eq!(schema.field(0).name(), "region");
    }
}
