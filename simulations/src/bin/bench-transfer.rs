//! `bench-transfer`: throughput of a meshnode fetch against bare quinn and Arrow Flight.
//!
//! ```text
//! cargo run --release -p mesh-simulations --bin bench-transfer -- --json [--mib N] [--runs N]
//! ```
//!
//! One run generates a product of mixed fixed- and variable-width columns (`--mib`, default
//! 1024 MiB of Arrow data), then measures three transfers of it over 127.0.0.1, each with the
//! provider in this process and the consumer in a child process (so that the consumer's peak
//! RSS is its own):
//!
//! - **meshnode**: a real data-plane fetch under a co-signed agreement (authorisation,
//!   signed trailer, BLAKE3 on both sides, Arrow IPC file written and fsynced);
//! - **quinn**: one bidirectional quinn stream with the same TLS and transport configuration
//!   carrying the same bytes from memory, discarded by the receiver;
//! - **flight**: Arrow Flight `DoGet` of the same batches over gRPC with TLS, decoded into
//!   record batches by the client;
//! - **local flight**: the consumer node's own Flight endpoint (`flight_listen`, the one
//!   pyarrow and ADBC use) answering a product `DoGet`: a verified fetch whose batches are
//!   decoded and streamed to the client as they arrive. Time to the first batch is reported
//!   next to the time a `fetch` needs before its file can be read (the whole transfer).
//!
//! Two stages are also measured alone, in the same run, to show what bounds the fetch: the
//! consumer's disk (the same number of bytes written to the same directory and fsynced, in a
//! child process) and BLAKE3 on one core.
//!
//! It prints one JSON object (`--json`) or a short table. Each mode runs `--runs` times and
//! the best run counts. Beside throughput, each side's CPU time per GiB is reported (user +
//! system, from `/proc`): on a shared machine it is the steadier figure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::{
    BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
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
use clap::{Parser, Subcommand};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use mesh_node::DataDir;
use mesh_node::agreements::{AgreementRecord, Role};
use mesh_node::dataplane::{self, Compression, DataPlane, DataPlaneConfig, FetchOptions};
use mesh_node::store::Store;
use mesh_protocol::contract::{Columns, ContractRequest, ContractState, ContractTerms, DAY_MS};
use mesh_protocol::descriptor::{
    ContentDigest, Policy, ProductDescriptor, Sla, Status, columns_from_arrow,
};
use mesh_protocol::{Agreement, Identity, ProductId, Signed};
use mesh_simulations::stats::{cpu_seconds, peak_rss_mib};
use serde::{Deserialize, Serialize};

/// Secret of the providing node in the benchmark.
const PROVIDER_SECRET: [u8; 32] = [0x11; 32];
/// Secret of the consuming node in the benchmark.
const CONSUMER_SECRET: [u8; 32] = [0x22; 32];
/// Product name.
const PRODUCT: &str = "bench-orders";
/// Chunk size of the raw quinn sender.
const RAW_CHUNK: usize = 4 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(about = "Transfer benchmark: meshnode fetch vs bare quinn vs Arrow Flight")]
struct Args {
    #[command(subcommand)]
    child: Option<Child>,
    /// Size of the generated product in MiB of Arrow data.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Rows per record batch of the product.
    #[arg(long, default_value_t = 65_536)]
    batch_rows: usize,
    /// Runs per mode; the best counts.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Directory for the product and outputs (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The consumer side, run in a child process.
#[derive(Debug, Subcommand)]
enum Child {
    /// Internal: run one consumer and print its measurement as JSON.
    #[command(hide = true)]
    Consume {
        /// JSON [`ConsumeJob`].
        job: String,
    },
}

/// What a child process does.
#[derive(Debug, Serialize, Deserialize)]
enum ConsumeJob {
    /// Fetch through the data plane.
    Meshnode {
        /// Consumer data directory (store with the agreement).
        data_dir: PathBuf,
        /// Output file.
        out: PathBuf,
        /// Provider data-plane address.
        addr: SocketAddr,
        /// Product owner, hex.
        owner: String,
    },
    /// `DoGet` of the product through the consumer node's local Flight endpoint.
    LocalFlight {
        /// Consumer data directory (store with the agreement and the descriptor).
        data_dir: PathBuf,
    },
    /// Read one raw quinn stream.
    Quinn {
        /// Server address.
        addr: SocketAddr,
    },
    /// Flight `DoGet`.
    Flight {
        /// Server address.
        addr: SocketAddr,
        /// PEM of the server certificate to trust.
        cert_pem: String,
    },
    /// Write `bytes` to `path` and fsync, as the consumer's disk ceiling.
    Disk {
        /// File to write (removed afterwards).
        path: PathBuf,
        /// Bytes to write.
        bytes: u64,
    },
}

/// What a child reports.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Measurement {
    /// Payload bytes received.
    bytes: u64,
    /// Rows received (0 for raw quinn).
    rows: u64,
    /// Seconds from the request to the last byte (meshnode: to the renamed, synced file).
    seconds: f64,
    /// Peak resident set of the child, MiB.
    peak_rss_mib: f64,
    /// CPU seconds (user + system) of the child.
    consumer_cpu_s: f64,
    /// CPU seconds of the serving process while the child ran.
    #[serde(default)]
    provider_cpu_s: f64,
    /// Seconds from the request to the first record batch in the client's hands (local
    /// Flight only).
    #[serde(default)]
    first_batch_seconds: f64,
}

impl Measurement {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.seconds.max(1e-9)
    }

    /// `cpu_s` per GiB moved.
    fn per_gib(&self, cpu_s: f64) -> f64 {
        cpu_s / (self.bytes as f64 / (1024.0 * 1024.0 * 1024.0)).max(1e-9)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.child {
        Some(Child::Consume { ref job }) => {
            let job: ConsumeJob = serde_json::from_str(job)?;
            let mut m = runtime.block_on(consume(job))?;
            m.peak_rss_mib = peak_rss_mib();
            m.consumer_cpu_s = cpu_seconds();
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        None => runtime.block_on(bench(args)),
    }
}

/// BLAKE3 throughput of one core over a 256 MiB buffer, best of three, MiB/s.
fn blake3_mib_s() -> f64 {
    let data: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    (0..3)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(blake3::hash(&data));
            256.0 / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

// ------------------------------------------------------------------ data

fn bench_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new(
            "ordered_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("amount", DataType::Float64, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("express", DataType::Boolean, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// xorshift64*: fast, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Writes about `mib` MiB of Arrow data to `path`; returns (rows, bytes on disk).
fn generate(path: &Path, mib: u64, batch_rows: usize) -> anyhow::Result<(u64, u64)> {
    const REGIONS: [&str; 6] = ["EU", "US", "APAC", "LATAM", "MEA", "NA"];
    let schema = bench_schema();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let pool: String = (0..8192)
        .map(|_| (b'a' + (rng.next() % 26) as u8) as char)
        .collect();
    let mut writer = FileWriter::try_new(
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?),
        &schema,
    )?;
    let target = mib * 1024 * 1024;
    let mut written = 0u64;
    let mut rows = 0u64;
    while written < target {
        let n = batch_rows;
        let ids: Vec<i64> = (0..n as i64).map(|i| rows as i64 + i).collect();
        let notes: Vec<Option<&str>> = (0..n)
            .map(|_| {
                let r = rng.next();
                if r.is_multiple_of(17) {
                    return None;
                }
                let len = 8 + (r >> 8) as usize % 56;
                let start = (r >> 20) as usize % (pool.len() - len);
                Some(&pool[start..start + len])
            })
            .collect();
        let amounts: Vec<f64> = (0..n)
            .map(|_| (rng.next() % 1_000_000) as f64 / 100.0)
            .collect();
        let quantities: Vec<i32> = (0..n).map(|_| (rng.next() % 50) as i32 + 1).collect();
        let express: Vec<bool> = (0..n).map(|_| rng.next().is_multiple_of(3)).collect();
        let regions: Vec<&str> = (0..n).map(|_| REGIONS[(rng.next() % 6) as usize]).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    ids.iter().map(|i| 1_700_000_000_000_000 + i * 1_000),
                )),
                Arc::new(Float64Array::from(amounts)),
                Arc::new(Int32Array::from(quantities)),
                Arc::new(BooleanArray::from(express)),
                Arc::new(StringArray::from(regions)),
                Arc::new(StringArray::from(notes)),
            ],
        )?;
        written += batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
            .sum::<u64>();
        rows += n as u64;
        writer.write(&batch)?;
    }
    writer.finish()?;
    drop(writer);
    Ok((rows, std::fs::metadata(path)?.len()))
}

/// The product file's IPC messages, framed exactly as the data plane frames them (for the
/// raw quinn baseline).
fn framed_stream(path: &Path) -> anyhow::Result<Vec<Bytes>> {
    let data = std::fs::read(path)?;
    // Skip the magic and its padding, stop at the end-of-stream marker.
    let mut pos = 8;
    while data[pos..pos + 4] != [0xff; 4] {
        pos += 8;
    }
    let mut out = Vec::new();
    let mut chunk = Vec::with_capacity(RAW_CHUNK + (1 << 20));
    loop {
        let meta = i32::from_le_bytes(data[pos + 4..pos + 8].try_into()?) as usize;
        if meta == 0 {
            break;
        }
        let message = arrow::ipc::root_as_message(&data[pos + 8..pos + 8 + meta])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let len = 8 + meta + message.bodyLength() as usize;
        chunk.extend_from_slice(&mesh_protocol::encode_data_header(len)?);
        chunk.extend_from_slice(&data[pos..pos + len]);
        pos += len;
        if chunk.len() >= RAW_CHUNK {
            out.push(Bytes::from(std::mem::take(&mut chunk)));
        }
    }
    if !chunk.is_empty() {
        out.push(Bytes::from(chunk));
    }
    Ok(out)
}

// ------------------------------------------------------------------ setup

fn descriptor(owner: &Identity, path: &Path, rows: u64, addr: SocketAddr) -> ProductDescriptor {
    ProductDescriptor {
        owner: owner.public_key(),
        domain: "orders".into(),
        name: PRODUCT.into(),
        version: 1,
        title: "benchmark orders".into(),
        description: String::new(),
        tags: vec![],
        schema: columns_from_arrow(&bench_schema()),
        rows,
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        digest: ContentDigest([0; 32]),
        published_at_ms: now_ms(),
        sla: Sla {
            update_frequency: "daily".into(),
            freshness_hours: 24,
            availability_bp: 9990,
        },
        policy: Policy {
            approval: Default::default(),
            allowed_purposes: vec![],
            max_contract_days: 365,
            restricted_columns: vec![],
        },
        lineage: vec![],
        data_addr: Some(addr.to_string()),
        status: Status::Active,
        stewardship: Default::default(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn record(role: Role, agreement: &Agreement) -> AgreementRecord {
    AgreementRecord {
        role,
        request: agreement.request().clone(),
        agreement: Some(agreement.clone()),
        rejection: None,
        revocation: None,
        state: ContractState::Agreed,
        updated_ms: now_ms(),
    }
}

/// An agreement for the whole product, stored on both sides.
fn agree(product: &ProductId, provider: &Store, consumer: &Store) -> anyhow::Result<()> {
    let p = Identity::from_secret_bytes(PROVIDER_SECRET);
    let c = Identity::from_secret_bytes(CONSUMER_SECRET);
    let terms = ContractTerms {
        product: product.clone(),
        provider_domain: "orders".into(),
        consumer_domain: "bench".into(),
        provider: p.public_key(),
        consumer: c.public_key(),
        min_version: 1,
        max_version: None,
        purpose: "benchmark".into(),
        columns: Columns::AllCurrentAndFuture,
        filter: None,
        valid_from_ms: now_ms() - DAY_MS,
        valid_until_ms: now_ms() + DAY_MS,
        nonce: rand::random(),
    };
    let agreement = Agreement::countersign(&p, Signed::sign(&c, &ContractRequest { terms }))?;
    provider.put_agreement(&agreement.id(), &record(Role::Provider, &agreement))?;
    consumer.put_agreement(&agreement.id(), &record(Role::Consumer, &agreement))?;
    Ok(())
}

// ------------------------------------------------------------------ parent

#[derive(Debug, Serialize)]
struct Report {
    product_mib: f64,
    stream_mib: f64,
    rows: u64,
    runs: usize,
    meshnode_mib_s: f64,
    quinn_mib_s: f64,
    flight_mib_s: f64,
    /// The consumer node's Flight endpoint serving a product `DoGet` (fetch, verify, decode).
    local_flight_mib_s: f64,
    /// Seconds to the first record batch of that `DoGet`.
    local_flight_first_batch_seconds: f64,
    /// Seconds to its last batch.
    local_flight_seconds: f64,
    /// `local_flight_mib_s / meshnode_mib_s`.
    local_flight_vs_fetch: f64,
    ratio_vs_quinn: f64,
    ratio_vs_flight: f64,
    consumer_peak_rss_mib: f64,
    quinn_consumer_peak_rss_mib: f64,
    flight_consumer_peak_rss_mib: f64,
    meshnode_seconds: f64,
    quinn_seconds: f64,
    flight_seconds: f64,
    /// CPU seconds per GiB, provider side (serving process) and consumer side.
    meshnode_provider_cpu_s_per_gib: f64,
    meshnode_consumer_cpu_s_per_gib: f64,
    quinn_provider_cpu_s_per_gib: f64,
    quinn_consumer_cpu_s_per_gib: f64,
    flight_provider_cpu_s_per_gib: f64,
    flight_consumer_cpu_s_per_gib: f64,
    /// The consumer's disk alone: the stream's bytes written and fsynced, MiB/s.
    disk_write_mib_s: f64,
    /// BLAKE3 on one core, MiB/s.
    blake3_mib_s: f64,
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let provider_dir = DataDir::new(root.join("provider"));
    let consumer_dir = DataDir::new(root.join("consumer"));
    let path = provider_dir.product_file(PRODUCT, 1);
    std::fs::create_dir_all(path.parent().context("product dir")?)?;
    let started = Instant::now();
    let (rows, file_bytes) = {
        let path = path.clone();
        let (mib, batch_rows) = (args.mib, args.batch_rows);
        tokio::task::spawn_blocking(move || generate(&path, mib, batch_rows)).await??
    };
    if !args.json {
        eprintln!(
            "generated {rows} rows, {:.0} MiB in {:.1} s",
            file_bytes as f64 / 1048576.0,
            started.elapsed().as_secs_f64()
        );
    }

    // Provider node: store, product, agreement, data plane.
    let provider_id = Identity::from_secret_bytes(PROVIDER_SECRET);
    let provider_store = Store::open(&provider_dir.db())?;
    let (plane, _task) = DataPlane::start(
        DataPlaneConfig {
            listen: "127.0.0.1:0".parse()?,
            max_transfers_per_peer: 4,
            clock_skew_ms: 0,
            members: Default::default(),
        },
        provider_id.clone(),
        provider_store.clone(),
        provider_dir.clone(),
    )?;
    let d = descriptor(&provider_id, &path, rows, plane.local_addr());
    let envelope = Signed::sign(&provider_id, &d);
    provider_store.put_descriptor(&d, &envelope)?;
    provider_store.set_local_version(PRODUCT, 1)?;
    {
        let consumer_store = Store::open(&consumer_dir.db())?;
        consumer_store.put_descriptor(&d, &envelope)?;
        agree(&d.id(), &provider_store, &consumer_store)?;
        consumer_store.flush().await?;
    }

    // Baselines' servers.
    let stream = Arc::new(
        tokio::task::spawn_blocking({
            let path = path.clone();
            move || framed_stream(&path)
        })
        .await??,
    );
    let stream_bytes: u64 = stream.iter().map(|b| b.len() as u64).sum();
    let quinn_addr = start_raw_quinn(&provider_id, stream.clone())?;
    let (flight_addr, cert_pem) = start_flight(path.clone()).await?;

    let mut best: [Option<Measurement>; 4] = [None, None, None, None];
    let mut disk: Option<Measurement> = None;
    for run in 0..args.runs {
        let out = root.join(format!("fetched-{run}.arrow"));
        let jobs = [
            ConsumeJob::Meshnode {
                data_dir: consumer_dir.root().to_owned(),
                out: out.clone(),
                addr: plane.local_addr(),
                owner: provider_id.public_key().to_hex(),
            },
            ConsumeJob::Quinn { addr: quinn_addr },
            ConsumeJob::Flight {
                addr: flight_addr,
                cert_pem: cert_pem.clone(),
            },
            ConsumeJob::LocalFlight {
                data_dir: consumer_dir.root().to_owned(),
            },
        ];
        for (i, job) in jobs.into_iter().enumerate() {
            let job_name = ["meshnode", "quinn", "flight", "local flight"][i];
            let before = cpu_seconds();
            let mut m = run_child(&job).await?;
            m.provider_cpu_s = cpu_seconds() - before;
            if !args.json {
                eprintln!(
                    "run {run} {:>8}: {:>8.1} MiB/s ({:.0} MiB in {:.2} s, peak RSS {:.0} MiB, CPU s/GiB provider {:.2} consumer {:.2})",
                    job_name,
                    m.mib_s(),
                    m.bytes as f64 / 1048576.0,
                    m.seconds,
                    m.peak_rss_mib,
                    m.per_gib(m.provider_cpu_s),
                    m.per_gib(m.consumer_cpu_s),
                );
            }
            if i == 0 {
                if m.rows != rows {
                    bail!("meshnode fetched {} rows, expected {rows}", m.rows);
                }
                let _ = std::fs::remove_file(&out);
            }
            if i >= 2 && m.rows != rows {
                bail!("{job_name} fetched {} rows, expected {rows}", m.rows);
            }
            if best[i].as_ref().is_none_or(|b| m.mib_s() > b.mib_s()) {
                best[i] = Some(m);
            }
        }
        let d = run_child(&ConsumeJob::Disk {
            path: root.join(format!("disk-{run}.bin")),
            bytes: stream_bytes,
        })
        .await?;
        if !args.json {
            eprintln!("run {run}     disk: {:>8.1} MiB/s", d.mib_s());
        }
        if disk.as_ref().is_none_or(|b| d.mib_s() > b.mib_s()) {
            disk = Some(d);
        }
    }
    plane.close();
    let [m, q, f, l] = best.map(|b| b.unwrap_or_default());
    let disk = disk.unwrap_or_default();
    let blake3 = tokio::task::spawn_blocking(blake3_mib_s).await?;
    let report = Report {
        product_mib: file_bytes as f64 / 1048576.0,
        stream_mib: stream_bytes as f64 / 1048576.0,
        rows,
        runs: args.runs,
        meshnode_mib_s: round(m.mib_s()),
        quinn_mib_s: round(q.mib_s()),
        flight_mib_s: round(f.mib_s()),
        local_flight_mib_s: round(l.mib_s()),
        local_flight_first_batch_seconds: round(l.first_batch_seconds),
        local_flight_seconds: round(l.seconds),
        local_flight_vs_fetch: round(l.mib_s() / m.mib_s()),
        ratio_vs_quinn: round(m.mib_s() / q.mib_s()),
        ratio_vs_flight: round(m.mib_s() / f.mib_s()),
        consumer_peak_rss_mib: round(m.peak_rss_mib),
        quinn_consumer_peak_rss_mib: round(q.peak_rss_mib),
        flight_consumer_peak_rss_mib: round(f.peak_rss_mib),
        meshnode_seconds: round(m.seconds),
        quinn_seconds: round(q.seconds),
        flight_seconds: round(f.seconds),
        meshnode_provider_cpu_s_per_gib: round(m.per_gib(m.provider_cpu_s)),
        meshnode_consumer_cpu_s_per_gib: round(m.per_gib(m.consumer_cpu_s)),
        quinn_provider_cpu_s_per_gib: round(q.per_gib(q.provider_cpu_s)),
        quinn_consumer_cpu_s_per_gib: round(q.per_gib(q.consumer_cpu_s)),
        flight_provider_cpu_s_per_gib: round(f.per_gib(f.provider_cpu_s)),
        flight_consumer_cpu_s_per_gib: round(f.per_gib(f.consumer_cpu_s)),
        disk_write_mib_s: round(disk.mib_s()),
        blake3_mib_s: round(blake3),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn run_child(job: &ConsumeJob) -> anyhow::Result<Measurement> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .arg("consume")
        .arg(serde_json::to_string(job)?)
        .output()
        .await?;
    // The child's diagnostics (warnings, timing) go to our stderr.
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!(
            "consumer {job:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

// ------------------------------------------------------------------ raw quinn

fn start_raw_quinn(identity: &Identity, stream: Arc<Vec<Bytes>>) -> anyhow::Result<SocketAddr> {
    let server = dataplane::tls::server_config(identity, 4)?;
    let endpoint = dataplane::tls::endpoint("127.0.0.1:0".parse()?, Some(server))?;
    let addr = endpoint.local_addr()?;
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let stream = stream.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    let mut request = [0u8; 1];
                    if recv.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    for chunk in stream.iter() {
                        if send.write_chunk(chunk.clone()).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                    let _ = send.stopped().await;
                }
            });
        }
    });
    Ok(addr)
}

// ------------------------------------------------------------------ flight

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
const H2_WINDOW: u32 = 16 * 1024 * 1024;

async fn start_flight(path: PathBuf) -> anyhow::Result<(SocketAddr, String)> {
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

// ------------------------------------------------------------------ consumers

async fn consume(job: ConsumeJob) -> anyhow::Result<Measurement> {
    match job {
        ConsumeJob::Disk { path, bytes } => {
            use std::io::Write;
            let chunk: Vec<u8> = (0..RAW_CHUNK as u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect();
            let started = Instant::now();
            let mut file = std::fs::File::create(&path)?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                file.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            file.sync_all()?;
            let seconds = started.elapsed().as_secs_f64();
            drop(file);
            std::fs::remove_file(&path)?;
            Ok(Measurement {
                bytes,
                seconds,
                ..Measurement::default()
            })
        }
        ConsumeJob::Meshnode {
            data_dir,
            out,
            addr,
            owner,
        } => {
            let data_dir = DataDir::new(data_dir);
            let store = Store::open(&data_dir.db())?;
            let (plane, _task) = DataPlane::start(
                DataPlaneConfig {
                    listen: "127.0.0.1:0".parse()?,
                    max_transfers_per_peer: 4,
                    clock_skew_ms: 0,
                    members: Default::default(),
                },
                Identity::from_secret_bytes(CONSUMER_SECRET),
                store,
                data_dir,
            )?;
            let product = ProductId {
                owner: mesh_protocol::PublicKey::from_hex(&owner)?,
                name: PRODUCT.into(),
            };
            let started = Instant::now();
            let outcome = plane
                .fetch(FetchOptions {
                    product,
                    out,
                    agreement: None,
                    version: None,
                    compression: Compression::None,
                    provider_addr: Some(addr),
                    force: false,
                    format: Default::default(),
                    progress: None,
                    narrowing: None,
                })
                .await?;
            Ok(Measurement {
                bytes: outcome.bytes,
                rows: outcome.rows,
                seconds: started.elapsed().as_secs_f64(),
                ..Measurement::default()
            })
        }
        ConsumeJob::LocalFlight { data_dir } => local_flight(DataDir::new(data_dir)).await,
        ConsumeJob::Quinn { addr } => {
            let me = Identity::from_secret_bytes(CONSUMER_SECRET);
            let provider = Identity::from_secret_bytes(PROVIDER_SECRET).public_key();
            let endpoint = dataplane::tls::endpoint("127.0.0.1:0".parse()?, None)?;
            let client = dataplane::tls::client_config(&me, &provider, 4)?;
            let started = Instant::now();
            let connection = endpoint
                .connect_with(client, addr, dataplane::tls::SERVER_NAME)?
                .await?;
            let (mut send, mut recv) = connection.open_bi().await?;
            send.write_all(&[1]).await?;
            let _ = send.finish();
            let mut bytes = 0u64;
            while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                bytes += chunk.bytes.len() as u64;
            }
            let seconds = started.elapsed().as_secs_f64();
            connection.close(0u32.into(), b"done");
            Ok(Measurement {
                bytes,
                rows: 0,
                seconds,
                ..Measurement::default()
            })
        }
        ConsumeJob::Flight { addr, cert_pem } => {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(cert_pem))
                .domain_name("localhost");
            let started = Instant::now();
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
                .tls_config(tls)?
                .initial_stream_window_size(Some(H2_WINDOW))
                .initial_connection_window_size(Some(H2_WINDOW))
                .connect()
                .await?;
            let mut client = FlightServiceClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            let data = client
                .do_get(Ticket {
                    ticket: Bytes::from_static(b"all"),
                })
                .await?
                .into_inner();
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
            let mut rows = 0u64;
            while let Some(batch) = batches.next().await {
                rows += batch?.num_rows() as u64;
            }
            drop(batches);
            Ok(Measurement {
                bytes: bytes.load(std::sync::atomic::Ordering::Relaxed),
                rows,
                seconds: started.elapsed().as_secs_f64(),
                ..Measurement::default()
            })
        }
    }
}

/// The consumer node's data plane and Flight endpoint in this process, and a Flight client
/// reading the product from it as pyarrow would: bearer token, JSON product ticket.
async fn local_flight(data_dir: DataDir) -> anyhow::Result<Measurement> {
    let store = Store::open(&data_dir.db())?;
    let (plane, _task) = DataPlane::start(
        DataPlaneConfig {
            listen: "127.0.0.1:0".parse()?,
            max_transfers_per_peer: 4,
            clock_skew_ms: 0,
            members: Default::default(),
        },
        Identity::from_secret_bytes(CONSUMER_SECRET),
        store,
        data_dir,
    )?;
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
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .initial_stream_window_size(Some(H2_WINDOW))
        .initial_connection_window_size(Some(H2_WINDOW))
        .connect()
        .await?;
    let mut client = FlightServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let mut request = tonic::Request::new(Ticket {
        ticket: Bytes::from(format!(r#"{{"product":"orders/{PRODUCT}"}}"#)),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
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
    while let Some(batch) = batches.next().await {
        rows += batch?.num_rows() as u64;
        first_batch_seconds.get_or_insert_with(|| started.elapsed().as_secs_f64());
    }
    drop(batches);
    let seconds = started.elapsed().as_secs_f64();
    plane.close();
    Ok(Measurement {
        bytes: bytes.load(std::sync::atomic::Ordering::Relaxed),
        rows,
        seconds,
        first_batch_seconds: first_batch_seconds.unwrap_or(seconds),
        ..Measurement::default()
    })
}
