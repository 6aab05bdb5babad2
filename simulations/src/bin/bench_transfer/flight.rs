//! The Arrow Flight side of the benchmark: a plain Flight server over one Arrow file, the
//! client that reads (and optionally stores) a `DoGet`, and the consumer node's own endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use mesh_node::dataplane::DataPlane;

use crate::{Measurement, PRODUCT};

/// A Flight server whose `DoGet` streams every batch of one Arrow file.
struct FileFlight {
    path: PathBuf,
}

type FlightStream<T> = BoxStream<'static, Result<T, tonic::Status>>;

fn unimplemented<T>() -> Result<T, tonic::Status> {
    Err(tonic::Status::unimplemented("not part of the benchmark"))
}

#[tonic::async_trait]
impl FlightService for FileFlight {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    async fn handshake(
        &self,
        _: tonic::Request<tonic::Streaming<HandshakeRequest>>,
    ) -> Result<tonic::Response<Self::HandshakeStream>, tonic::Status> {
        unimplemented()
    }
    async fn list_flights(
        &self,
        _: tonic::Request<Criteria>,
    ) -> Result<tonic::Response<Self::ListFlightsStream>, tonic::Status> {
        unimplemented()
    }
    async fn get_flight_info(
        &self,
        _: tonic::Request<FlightDescriptor>,
    ) -> Result<tonic::Response<FlightInfo>, tonic::Status> {
        unimplemented()
    }
    async fn poll_flight_info(
        &self,
        _: tonic::Request<FlightDescriptor>,
    ) -> Result<tonic::Response<PollInfo>, tonic::Status> {
        unimplemented()
    }
    async fn get_schema(
        &self,
        _: tonic::Request<FlightDescriptor>,
    ) -> Result<tonic::Response<SchemaResult>, tonic::Status> {
        unimplemented()
    }
    async fn do_get(
        &self,
        _: tonic::Request<Ticket>,
    ) -> Result<tonic::Response<Self::DoGetStream>, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let reader = match std::fs::File::open(&path)
                .map_err(arrow::error::ArrowError::from)
                .and_then(|f| FileReader::try_new_buffered(f, None))
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(arrow_flight::error::FlightError::from(e)));
                    return;
                }
            };
            for batch in reader {
                let item = batch.map_err(arrow_flight::error::FlightError::from);
                if tx.blocking_send(item).is_err() {
                    return;
                }
            }
        });
        let batches = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let encoded = FlightDataEncoderBuilder::new()
            .build(batches)
            .map_err(|e| tonic::Status::internal(e.to_string()));
        Ok(tonic::Response::new(encoded.boxed()))
    }
    async fn do_put(
        &self,
        _: tonic::Request<tonic::Streaming<FlightData>>,
    ) -> Result<tonic::Response<Self::DoPutStream>, tonic::Status> {
        unimplemented()
    }
    async fn do_action(
        &self,
        _: tonic::Request<Action>,
    ) -> Result<tonic::Response<Self::DoActionStream>, tonic::Status> {
        unimplemented()
    }
    async fn list_actions(
        &self,
        _: tonic::Request<Empty>,
    ) -> Result<tonic::Response<Self::ListActionsStream>, tonic::Status> {
        unimplemented()
    }
    async fn do_exchange(
        &self,
        _: tonic::Request<tonic::Streaming<FlightData>>,
    ) -> Result<tonic::Response<Self::DoExchangeStream>, tonic::Status> {
        unimplemented()
    }
}

/// HTTP/2 windows for Flight on both sides (the defaults are 64 KiB).
pub(crate) const H2_WINDOW: u32 = 16 * 1024 * 1024;

pub(crate) async fn start_flight(path: PathBuf) -> anyhow::Result<(SocketAddr, String)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let cert_pem = cert.cert.pem();
    let key_pem = cert.key_pair.serialize_pem();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(&cert_pem, &key_pem));
    let server = tonic::transport::Server::builder()
        .tls_config(tls)?
        .initial_stream_window_size(Some(H2_WINDOW))
        .initial_connection_window_size(Some(H2_WINDOW))
        .add_service(
            FlightServiceServer::new(FileFlight { path })
                .max_encoding_message_size(usize::MAX)
                .max_decoding_message_size(usize::MAX),
        );
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(e) = server.serve_with_incoming(incoming).await {
            eprintln!("flight server stopped: {e}");
        }
    });
    Ok((addr, cert_pem))
}

/// A Flight `DoGet` on `endpoint`: batches decoded as they arrive and, with `durable`,
/// written to that Arrow IPC file, which is then fsynced (and removed once measured).
pub(crate) async fn do_get(
    endpoint: tonic::transport::Endpoint,
    request: tonic::Request<Ticket>,
    durable: Option<PathBuf>,
    started: Instant,
) -> anyhow::Result<Measurement> {
    let channel = endpoint
        .initial_stream_window_size(Some(H2_WINDOW))
        .initial_connection_window_size(Some(H2_WINDOW))
        .connect()
        .await?;
    let mut client = FlightServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let data = client.do_get(request).await?.into_inner();
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = bytes.clone();
    let counted = data.inspect_ok(move |d: &FlightData| {
        counter.fetch_add(
            (d.data_header.len() + d.data_body.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    });
    let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        counted.map_err(arrow_flight::error::FlightError::from),
    );
    let (mut rows, mut first_batch_seconds) = (0u64, None);
    let mut file: Option<FileWriter<std::io::BufWriter<std::fs::File>>> = None;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        first_batch_seconds.get_or_insert_with(|| started.elapsed().as_secs_f64());
        if let Some(path) = &durable {
            if file.is_none() {
                let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
                file = Some(FileWriter::try_new(out, &batch.schema())?);
            }
            if let Some(w) = file.as_mut() {
                w.write(&batch)?;
            }
        }
    }
    drop(batches);
    if let Some(mut w) = file {
        w.finish()?;
        w.into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &durable {
        let _ = std::fs::remove_file(path);
    }
    Ok(Measurement {
        bytes: bytes.load(std::sync::atomic::Ordering::Relaxed),
        rows,
        seconds,
        first_batch_seconds: first_batch_seconds.unwrap_or(seconds),
        ..Measurement::default()
    })
}

/// The consumer node's data plane and Flight endpoint in this process, and a Flight client
/// reading the product from it as pyarrow would: bearer token, JSON product ticket.
pub(crate) async fn local_flight(plane: DataPlane) -> anyhow::Result<Measurement> {
    let listener = mesh_node::flight::bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    let token = "bench-token";
    let _server = mesh_node::flight::serve(
        listener,
        mesh_node::flight::FlightContext {
            token: token.into(),
            data: plane.clone(),
            engine: mesh_node::sql::SqlEngine::new(plane.clone()),
        },
    );
    let started = Instant::now();
    let mut request = tonic::Request::new(Ticket {
        ticket: Bytes::from(format!(r#"{{"product":"orders/{PRODUCT}"}}"#)),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    let measured = do_get(endpoint, request, None, started).await;
    plane.close();
    measured
}
