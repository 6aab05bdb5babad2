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
//! - **flight durable**: the same `DoGet`, with the client writing the batches to an Arrow
//!   IPC file and fsyncing it: the same work as a fetch, for a like-for-like ratio;
//! - **filtered**: a meshnode fetch of three of the seven columns and a tenth of the rows
//!   (`quantity <= 5`), narrowed by the consumer and selected by the provider;
//! - **local flight**: the consumer node's own Flight endpoint (`flight_listen`, the one
//!   pyarrow and ADBC use) answering a product `DoGet`: a verified fetch whose batches are
//!   decoded and streamed to the client as they arrive. Time to the first batch is reported
//!   next to the time a `fetch` needs before its file can be read (the whole transfer).
//!
//! Two stages are also measured alone, in the same run, to show what bounds the fetch: the
//! consumer's disk (the same number of bytes written to the same directory and fsynced, in a
//! child process) and BLAKE3 on one core.
//!
//! With `--link RTT_MS:LOSS` (repeatable) it measures instead a fetch between two emulated
//! clouds, meshnode against raw quinn on the same link for each `--congestion` controller
//! (see `cross`):
//!
//! ```text
//! cargo run --release -p mesh-simulations --bin bench-transfer -- --json --mib 256 \
//!     --link 80:0.001 --link 80:0 --congestion cubic,bbr
//! ```
//!
//! `--parallel N` adds, on each link, raw quinn moving the same bytes over N connections at
//! once (`quinn_parallel_mib_s`) and a meshnode fetch striped over N connections
//! (`meshnode_striped_mib_s`, `ratio_striped_vs_quinn_parallel`).
//!
//! It prints one JSON object (`--json`) or a short table. Each mode runs `--runs` times and
//! the best run counts. Beside throughput, each side's CPU time per GiB is reported (user +
//! system, from `/proc`): on a shared machine it is the steadier figure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow_flight::Ticket;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use mesh_node::DataDir;
use mesh_node::config::DataLink;
use mesh_node::dataplane::tls::{Congestion, Transport};
use mesh_node::dataplane::{self, Compression, DataPlane, DataPlaneConfig, FetchOptions};
use mesh_node::store::Store;
use mesh_protocol::transfer::Narrowing;
use mesh_protocol::{Identity, ProductId, Signed};
use mesh_simulations::stats::{cpu_seconds, peak_rss_mib};
use serde::{Deserialize, Serialize};

use data::{agree, descriptor, framed_stream, generate};
use flight::{do_get, local_flight, start_flight};

mod cross;
mod data;
mod flight;

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
    /// Instead of the loopback modes, fetch across two emulated clouds joined by this link,
    /// `RTT_MS:LOSS` (loss as a fraction: `80:0.001`); repeat for several links. meshnode and
    /// raw quinn run on the same emulated link, once per `--congestion` controller.
    #[arg(long, value_name = "RTT_MS:LOSS")]
    link: Vec<cross::Link>,
    /// Congestion controllers to measure on `--link`s.
    #[arg(long, value_delimiter = ',', default_value = "cubic,bbr")]
    congestion: Vec<Congestion>,
    /// With `--link`: also move the stream over this many raw quinn connections at once
    /// (connection k sends every frame i with i mod N = k), and fetch it with meshnode
    /// striped over as many (`data_link.connections`); reports `quinn_parallel_mib_s`,
    /// `meshnode_striped_mib_s` and `ratio_striped_vs_quinn_parallel`.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// The path every data plane and raw quinn connection of the run sizes its flow-control
    /// windows for, `MBIT_S:RTT_MS` (the node's `[data_link]`; default: the node's default).
    #[arg(long, value_name = "MBIT_S:RTT_MS", value_parser = parse_data_link)]
    data_link: Option<DataLink>,
}

fn parse_data_link(s: &str) -> Result<DataLink, String> {
    let (mbit, rtt) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not MBIT_S:RTT_MS"))?;
    let number = |v: &str| v.trim().parse::<u64>().map_err(|e| format!("`{v}`: {e}"));
    Ok(DataLink {
        mbit_s: number(mbit)?,
        rtt_ms: number(rtt)?,
        ..DataLink::default()
    })
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
        /// Fewer columns and rows than the agreement grants.
        narrowing: Option<Narrowing>,
        /// Where the consumer binds (an emulated cloud knows it by this address).
        #[serde(default)]
        bind: Option<SocketAddr>,
        /// The consumer's congestion controller.
        #[serde(default)]
        congestion: Congestion,
        /// The path its windows are sized for.
        #[serde(default)]
        link: DataLink,
    },
    /// `DoGet` of the product through the consumer node's local Flight endpoint.
    LocalFlight {
        /// Consumer data directory (store with the agreement and the descriptor).
        data_dir: PathBuf,
    },
    /// Read one raw quinn stream, or the stream split over several connections.
    Quinn {
        /// Server address.
        addr: SocketAddr,
        /// Where the consumer binds.
        #[serde(default)]
        bind: Option<SocketAddr>,
        /// The consumer's congestion controller.
        #[serde(default)]
        congestion: Congestion,
        /// The path its windows are sized for.
        #[serde(default)]
        link: DataLink,
        /// Connections opened at once, each carrying its share of the frames (0 or 1: one).
        #[serde(default)]
        connections: usize,
    },
    /// Flight `DoGet`.
    Flight {
        /// Server address.
        addr: SocketAddr,
        /// PEM of the server certificate to trust.
        cert_pem: String,
        /// Write the batches to this Arrow IPC file and fsync it (removed afterwards).
        durable: Option<PathBuf>,
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
    // The nodes' diagnostics, on stderr, as the daemon filters them (`MESHNODE_LOG`).
    mesh_node::logging::init("MESHNODE_LOG", "warn");
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.child {
        Some(Child::Consume { ref job }) => {
            let job: ConsumeJob = serde_json::from_str(job)?;
            // On a worker thread, as a daemon runs a fetch, not on the thread that blocks on
            // the runtime: every mode is measured where the quinn drivers can wake it cheaply.
            let mut m = runtime.block_on(async { tokio::spawn(consume(job)).await? })?;
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
    /// Flight `DoGet` with the batches written to an Arrow IPC file and fsynced.
    flight_durable_mib_s: f64,
    ratio_vs_quinn: f64,
    ratio_vs_flight: f64,
    /// `meshnode_mib_s / flight_durable_mib_s`: the like-for-like ratio.
    ratio_vs_flight_durable: f64,
    /// Seconds of the whole-product fetch (as `meshnode_seconds`).
    whole_seconds: f64,
    /// Seconds of the filtered fetch of the same product (three columns, a tenth of the rows).
    filtered_seconds: f64,
    /// Rows the filtered fetch received.
    filtered_rows: u64,
    /// CPU seconds per GiB of the product, provider and consumer, of the filtered fetch.
    filtered_provider_cpu_s_per_gib: f64,
    filtered_consumer_cpu_s_per_gib: f64,
    flight_durable_provider_cpu_s_per_gib: f64,
    flight_durable_consumer_cpu_s_per_gib: f64,
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
    let data_link = args.data_link.unwrap_or_default();
    let plane = provider_plane(
        &provider_store,
        &provider_dir,
        Congestion::default(),
        data_link,
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
    if !args.link.is_empty() {
        let setup = cross::Setup {
            provider_store,
            provider_dir,
            consumer_dir: consumer_dir.root().to_owned(),
            owner: provider_id.public_key().to_hex(),
            stream,
            rows,
        };
        let report = cross::run(&setup, &args).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let quinn_addr = start_raw_quinn(
        &provider_id,
        stream.clone(),
        Congestion::default(),
        data_link,
    )?
    .addr;
    let (flight_addr, cert_pem) = start_flight(path.clone()).await?;

    const MODES: [&str; 6] = [
        "meshnode",
        "quinn",
        "flight",
        "local flight",
        "flight durable",
        "filtered",
    ];
    let mut best: [Option<Measurement>; 6] = Default::default();
    let mut disk: Option<Measurement> = None;
    for run in 0..args.runs {
        let out = root.join(format!("fetched-{run}.arrow"));
        let jobs = [
            ConsumeJob::Meshnode {
                data_dir: consumer_dir.root().to_owned(),
                out: out.clone(),
                addr: plane.local_addr(),
                owner: provider_id.public_key().to_hex(),
                narrowing: None,
                bind: None,
                congestion: Congestion::default(),
                link: data_link,
            },
            ConsumeJob::Quinn {
                addr: quinn_addr,
                bind: None,
                congestion: Congestion::default(),
                link: data_link,
                connections: 1,
            },
            ConsumeJob::Flight {
                addr: flight_addr,
                cert_pem: cert_pem.clone(),
                durable: None,
            },
            ConsumeJob::LocalFlight {
                data_dir: consumer_dir.root().to_owned(),
            },
            ConsumeJob::Flight {
                addr: flight_addr,
                cert_pem: cert_pem.clone(),
                durable: Some(root.join(format!("flight-{run}.arrow"))),
            },
            ConsumeJob::Meshnode {
                data_dir: consumer_dir.root().to_owned(),
                out: root.join(format!("filtered-{run}.arrow")),
                addr: plane.local_addr(),
                owner: provider_id.public_key().to_hex(),
                narrowing: Some(Narrowing {
                    columns: Some(vec!["order_id".into(), "amount".into(), "quantity".into()]),
                    filter: Some("quantity <= 5".into()),
                }),
                bind: None,
                congestion: Congestion::default(),
                link: data_link,
            },
        ];
        for (i, job) in jobs.into_iter().enumerate() {
            let job_name = MODES[i];
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
            match job_name {
                "quinn" => {}
                // quantity is uniform in 1..=50: about a tenth of the rows.
                "filtered" if m.rows == 0 || m.rows > rows / 5 => {
                    bail!("the filtered fetch got {} of {rows} rows", m.rows);
                }
                "filtered" => {}
                _ if m.rows != rows => bail!("{job_name} fetched {} rows, expected {rows}", m.rows),
                _ => {}
            }
            let _ = std::fs::remove_file(root.join(format!("fetched-{run}.arrow")));
            let _ = std::fs::remove_file(root.join(format!("filtered-{run}.arrow")));
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
    let [m, q, f, l, fd, filtered] = best.map(|b| b.unwrap_or_default());
    // The filtered fetch's CPU per GiB of the product it was cut from.
    let per_product_gib = |cpu_s: f64| cpu_s / (stream_bytes as f64 / 1_073_741_824.0);
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
        flight_durable_mib_s: round(fd.mib_s()),
        ratio_vs_quinn: round(m.mib_s() / q.mib_s()),
        ratio_vs_flight: round(m.mib_s() / f.mib_s()),
        ratio_vs_flight_durable: round(m.mib_s() / fd.mib_s()),
        whole_seconds: round(m.seconds),
        filtered_seconds: round(filtered.seconds),
        filtered_rows: filtered.rows,
        filtered_provider_cpu_s_per_gib: round(per_product_gib(filtered.provider_cpu_s)),
        filtered_consumer_cpu_s_per_gib: round(per_product_gib(filtered.consumer_cpu_s)),
        flight_durable_provider_cpu_s_per_gib: round(fd.per_gib(fd.provider_cpu_s)),
        flight_durable_consumer_cpu_s_per_gib: round(fd.per_gib(fd.consumer_cpu_s)),
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

/// The link as the raw quinn server's congestion controller met it, from quinn's statistics
/// of the server's side of its last connection.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct SenderStats {
    /// Packets sent.
    sent_packets: u64,
    /// Packets declared lost.
    lost_packets: u64,
    /// Congestion events: times the controller cut its window.
    congestion_events: u64,
    /// Congestion window at the end, KiB: over `rtt_ms`, the rate the controller allowed.
    cwnd_kib: f64,
    /// Smoothed RTT at the end, ms.
    rtt_ms: f64,
    /// UDP payload size of the path at the end, bytes.
    mtu: u16,
}

impl SenderStats {
    fn of(connection: &quinn::Connection) -> Self {
        let s = connection.stats();
        Self {
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            congestion_events: s.path.congestion_events,
            cwnd_kib: round(s.path.cwnd as f64 / 1024.0),
            rtt_ms: round(s.path.rtt.as_secs_f64() * 1000.0),
            mtu: s.path.current_mtu,
        }
    }
}

/// A running raw quinn server.
struct RawQuinn {
    /// Its address.
    addr: SocketAddr,
    /// Statistics of each finished stream's connection, once the consumer has acknowledged
    /// the whole stream (the newest few; older ones are dropped when nobody reads them).
    finished: tokio::sync::mpsc::Receiver<SenderStats>,
}

impl RawQuinn {
    /// The statistics of the next stream to finish, if it finishes within a few seconds
    /// (the consumer has read everything by then: only the last acknowledgements are due).
    async fn next_finished(&mut self) -> Option<SenderStats> {
        tokio::time::timeout(std::time::Duration::from_secs(5), self.finished.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A server that sends `stream` on every bidirectional stream opened to it.
fn start_raw_quinn(
    identity: &Identity,
    stream: Arc<Vec<Bytes>>,
    congestion: Congestion,
    link: DataLink,
) -> anyhow::Result<RawQuinn> {
    let transport = Transport {
        max_streams: 4,
        congestion,
        link: link.link(),
    };
    let server = dataplane::tls::server_config(identity, transport)?;
    let endpoint = dataplane::tls::endpoint("127.0.0.1:0".parse()?, Some(server))?;
    let addr = endpoint.local_addr()?;
    let (record, finished) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let stream = stream.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    // `[parts, part]`: send the frames i with i mod parts = part.
                    let mut request = [0u8; 2];
                    if recv.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    let parts = usize::from(request[0].max(1));
                    let part = usize::from(request[1]);
                    for chunk in stream.iter().skip(part).step_by(parts) {
                        if send.write_chunk(chunk.clone()).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                    let _ = send.stopped().await;
                    let _ = record.try_send(SenderStats::of(&connection));
                }
            });
        }
    });
    Ok(RawQuinn { addr, finished })
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
            narrowing,
            bind,
            congestion,
            link,
        } => {
            let plane = consumer_plane(data_dir, bind, congestion, link)?;
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
                    narrowing,
                    connections: None,
                })
                .await?;
            Ok(Measurement {
                bytes: outcome.bytes,
                rows: outcome.rows,
                seconds: started.elapsed().as_secs_f64(),
                ..Measurement::default()
            })
        }
        ConsumeJob::LocalFlight { data_dir } => {
            let plane = consumer_plane(data_dir, None, Congestion::default(), DataLink::default())?;
            local_flight(plane).await
        }
        ConsumeJob::Quinn {
            addr,
            bind,
            congestion,
            link,
            connections,
        } => {
            let me = Identity::from_secret_bytes(CONSUMER_SECRET);
            let provider = Identity::from_secret_bytes(PROVIDER_SECRET).public_key();
            let bind = bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            let endpoint = dataplane::tls::endpoint(bind, None)?;
            let transport = Transport {
                max_streams: 4,
                congestion,
                link: link.link(),
            };
            let client = dataplane::tls::client_config(&me, &provider, transport)?;
            let parts = u8::try_from(connections.max(1)).context("at most 255 connections")?;
            let started = Instant::now();
            // Every connection from the one endpoint: the emulator knows one consumer address.
            let mut readers = tokio::task::JoinSet::new();
            for part in 0..parts {
                let connecting =
                    endpoint.connect_with(client.clone(), addr, dataplane::tls::SERVER_NAME)?;
                readers.spawn(async move {
                    let connection = connecting.await?;
                    let (mut send, mut recv) = connection.open_bi().await?;
                    send.write_all(&[parts, part]).await?;
                    let _ = send.finish();
                    let mut bytes = 0u64;
                    // Many chunks per call, as quinn's own perf tool drains a stream.
                    let mut chunks = vec![Bytes::new(); 32];
                    while let Some(n) = recv.read_chunks(&mut chunks).await? {
                        bytes += chunks[..n].iter().map(|c| c.len() as u64).sum::<u64>();
                    }
                    connection.close(0u32.into(), b"done");
                    anyhow::Ok(bytes)
                });
            }
            let mut bytes = 0u64;
            while let Some(read) = readers.join_next().await {
                bytes += read??;
            }
            let seconds = started.elapsed().as_secs_f64();
            // Send the closes before exiting: without them the server learns that a stream is
            // done only from acknowledgements, and waits for its idle timeout if the last
            // ones were lost.
            endpoint.wait_idle().await;
            Ok(Measurement {
                bytes,
                rows: 0,
                seconds,
                ..Measurement::default()
            })
        }
        ConsumeJob::Flight {
            addr,
            cert_pem,
            durable,
        } => {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(cert_pem))
                .domain_name("localhost");
            let started = Instant::now();
            let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
                .tls_config(tls)?;
            let ticket = Ticket {
                ticket: Bytes::from_static(b"all"),
            };
            do_get(endpoint, tonic::Request::new(ticket), durable, started).await
        }
    }
}

/// The provider's data plane (its store holds the product, descriptor and agreement).
fn provider_plane(
    store: &Store,
    data_dir: &DataDir,
    congestion: Congestion,
    link: DataLink,
) -> anyhow::Result<DataPlane> {
    let (plane, _task) = DataPlane::start(
        DataPlaneConfig {
            listen: "127.0.0.1:0".parse()?,
            // A striped fetch takes one transfer per stripe.
            max_transfers_per_peer: u32::from(mesh_protocol::transfer::MAX_STRIPES),
            max_transfers: mesh_node::config::DEFAULT_MAX_TRANSFERS,
            clock_skew_ms: 0,
            members: Default::default(),
            congestion,
            link: link.link(),
            connections: 1,
            disk_reserve: Default::default(),
            fetch_rate: Default::default(),
        },
        Identity::from_secret_bytes(PROVIDER_SECRET),
        store.clone(),
        data_dir.clone(),
    )?;
    Ok(plane)
}

/// The consumer's data plane on `data_dir` (its store holds the agreement and descriptor),
/// bound to `bind` (a free port when `None`).
fn consumer_plane(
    data_dir: PathBuf,
    bind: Option<SocketAddr>,
    congestion: Congestion,
    link: DataLink,
) -> anyhow::Result<DataPlane> {
    let data_dir = DataDir::new(data_dir);
    let store = Store::open(&data_dir.db())?;
    let (plane, _task) = DataPlane::start(
        DataPlaneConfig {
            listen: bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            max_transfers_per_peer: 4,
            max_transfers: mesh_node::config::DEFAULT_MAX_TRANSFERS,
            clock_skew_ms: 0,
            members: Default::default(),
            congestion,
            link: link.link(),
            connections: link.connections,
            disk_reserve: Default::default(),
            fetch_rate: Default::default(),
        },
        Identity::from_secret_bytes(CONSUMER_SECRET),
        store,
        data_dir,
    )?;
    Ok(plane)
}
