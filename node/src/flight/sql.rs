//! Flight SQL: statements (`CommandStatementQuery`, and prepared statements without
//! parameters, which clients such as ADBC create for every query) run by the same engine as
//! `meshnode sql`, and `GetSqlInfo` for the clients that ask what the server is. Every
//! other command answers `Unimplemented` with a message (the defaults of
//! [`FlightSqlService`]).
//!
//! Statements are stateless: a prepared statement's handle and a statement's ticket carry
//! the statement itself (bounded by [`MAX_STATEMENT`]), so the endpoint keeps nothing
//! between calls and a client cannot make it hold state.

use std::sync::LazyLock;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetSqlInfo, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::TryStreamExt;
use prost::Message;
use tonic::{Request, Response, Status};

/// Longest SQL statement accepted, in bytes (the query engine's limit).
pub const MAX_STATEMENT: usize = crate::sql::MAX_QUERY_LEN;

/// What `GetSqlInfo` answers.
static SQL_INFO: LazyLock<Option<SqlInfoData>> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "meshnode");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.build().ok()
});

/// The Flight SQL half of the endpoint.
#[derive(Clone, Debug)]
pub(crate) struct SqlService {
    /// The query engine of `meshnode sql`.
    pub(crate) engine: crate::sql::SqlEngine,
}

/// A failed query as a status: what the caller did wrong, or what failed. A call refused
/// for want of a planning slot is `RESOURCE_EXHAUSTED`, as a product read past the bound.
pub(crate) fn sql_status(e: &crate::sql::SqlError) -> Status {
    let message = e.to_string();
    if matches!(e, crate::sql::SqlError::Busy { .. }) {
        return Status::resource_exhausted(message);
    }
    match e.status_code() {
        400 => Status::invalid_argument(message),
        403 => Status::permission_denied(message),
        404 => Status::not_found(message),
        409 => Status::failed_precondition(message),
        503 => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

impl SqlService {
    /// The flight of `sql`: its schema, and a ticket carrying the statement.
    async fn statement_info(
        &self,
        sql: &str,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let sql = statement(sql)?;
        let schema = self
            .engine
            .schema_of(sql)
            .await
            .map_err(|e| sql_status(&e))?;
        let handle = TicketStatementQuery {
            statement_handle: sql.as_bytes().to_vec().into(),
        };
        let ticket = Ticket::new(handle.as_any().encode_to_vec());
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))
            .map(|info| {
                info.with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                    .with_descriptor(descriptor)
                    .with_total_records(-1)
                    .with_total_bytes(-1)
            })
    }
}

/// The statement a request carries, bounded.
fn statement(query: &str) -> Result<&str, Status> {
    if query.len() > MAX_STATEMENT {
        return Err(Status::invalid_argument(format!(
            "the statement has {} bytes, more than the {MAX_STATEMENT} accepted",
            query.len()
        )));
    }
    if query.trim().is_empty() {
        return Err(Status::invalid_argument("the statement is empty"));
    }
    Ok(query)
}

#[tonic::async_trait]
impl FlightSqlService for SqlService {
    type FlightService = SqlService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = self
            .statement_info(&query.query, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let sql = std::str::from_utf8(&query.prepared_statement_handle)
            .map_err(|_| Status::invalid_argument("the prepared statement handle is not UTF-8"))?;
        let info = self.statement_info(sql, request.into_inner()).await?;
        Ok(Response::new(info))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let sql = statement(&query.query)?;
        let schema = self
            .engine
            .schema_of(sql)
            .await
            .map_err(|e| sql_status(&e))?;
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: sql.as_bytes().to_vec().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Nothing is held for a prepared statement.
        Ok(())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = std::str::from_utf8(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("the statement ticket is not UTF-8"))?;
        let sql = statement(sql)?;
        let batches = self.engine.execute(sql).await.map_err(|e| sql_status(&e))?;
        let schema = batches.schema();
        let batches = batches.map_err(|e| {
            let e = crate::sql::SqlError::from_stream(e);
            arrow_flight::error::FlightError::Tonic(Box::new(sql_status(&e)))
        });
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let data = SQL_INFO
            .as_ref()
            .ok_or_else(|| Status::internal("the server information does not build"))?;
        let ticket = Ticket::new(query.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .try_with_schema(query.into_builder(data).schema().as_ref())
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let data = SQL_INFO
            .as_ref()
            .ok_or_else(|| Status::internal("the server information does not build"))?;
        let builder = query.into_builder(data);
        let schema = builder.schema();
        let batch = builder.build();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async { batch }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_too_complex_to_parse_is_an_invalid_argument() {
        let e = crate::sql::SqlError::TooComplex {
            max: crate::sql::MAX_PREFIXES_TRIED,
        };
        let status = sql_status(&e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("too complex to parse"));
    }
}
