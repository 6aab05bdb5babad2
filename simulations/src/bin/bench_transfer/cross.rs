//! Transfers between two emulated clouds: the provider's data plane and a raw quinn server
//! in cloud 0, the consumer in cloud 1, every datagram through the link emulator
//! (`mesh_simulations::emulator`) with the link's one-way latency (half the RTT) and loss
//! in both directions. For each congestion controller, a meshnode fetch and a raw quinn
//! stream of the same bytes run on the same link, so `ratio_vs_quinn` compares like with
//! like. The emulator's own ceiling is measured first: raw quinn through it with no latency
//! and no loss.
//!
//! Beside throughput, each link reports what explains it: the raw quinn sender's losses,
//! congestion events, final window and RTT (a loss-based controller with random loss holds
//! about `cwnd / RTT`), and the emulator's counts, whose `dropped_overflow` must stay near
//! zero for the figures to measure the link rather than the emulator.
//!
//! With `--parallel N`, raw quinn also moves the stream over N connections from the one
//! consumer endpoint, connection k carrying the frames i with i mod N = k, each with its own
//! congestion controller and flow-control windows; and meshnode fetches the product striped
//! the same way (`data_link.connections = N`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_node::DataDir;
use mesh_node::config::DataLink;
use mesh_node::dataplane::tls::Congestion;
use mesh_node::store::Store;
use mesh_protocol::Identity;
use mesh_simulations::emulator::{Emulator, EmulatorTotals, LinkParams};
use serde::Serialize;

use crate::{
    Args, ConsumeJob, PROVIDER_SECRET, SenderStats, provider_plane, round, run_child,
    start_raw_quinn,
};

/// A link between the two clouds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Link {
    /// Round-trip time added by the link, ms.
    pub(crate) rtt_ms: f64,
    /// Probability that a datagram is lost, each direction.
    pub(crate) loss: f64,
}

impl std::str::FromStr for Link {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not RTT_MS:LOSS (for example 80:0.001)");
        let (rtt, loss) = s.split_once(':').ok_or_else(bad)?;
        let rtt_ms: f64 = rtt.parse().map_err(|_| bad())?;
        let loss: f64 = loss.parse().map_err(|_| bad())?;
        if !(0.0..=10_000.0).contains(&rtt_ms) || !(0.0..1.0).contains(&loss) {
            return Err(bad());
        }
        Ok(Self { rtt_ms, loss })
    }
}

impl Link {
    fn params(self) -> LinkParams {
        LinkParams {
            latency: Duration::from_secs_f64(self.rtt_ms / 2000.0),
            jitter: Duration::ZERO,
            loss: self.loss,
        }
    }
}

/// What the scenario needs from the benchmark's set-up.
pub(crate) struct Setup {
    pub(crate) provider_store: Store,
    pub(crate) provider_dir: DataDir,
    pub(crate) consumer_dir: PathBuf,
    /// Product owner, hex.
    pub(crate) owner: String,
    /// The framed stream, for raw quinn.
    pub(crate) stream: Arc<Vec<Bytes>>,
    /// Rows of the product.
    pub(crate) rows: u64,
}

/// One link and controller.
#[derive(Debug, Serialize)]
pub(crate) struct LinkResult {
    rtt_ms: f64,
    loss: f64,
    congestion: &'static str,
    meshnode_mib_s: f64,
    quinn_mib_s: f64,
    ratio_vs_quinn: f64,
    meshnode_seconds: f64,
    quinn_seconds: f64,
    /// The raw quinn server's view of its best run: losses, congestion events, window, RTT.
    quinn_sender: SenderStats,
    /// With `--parallel N`: N.
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_connections: Option<usize>,
    /// With `--parallel N`: raw quinn moving the same bytes over N connections at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    quinn_parallel_mib_s: Option<f64>,
    /// With `--parallel N`: a meshnode fetch striped over N connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    meshnode_striped_mib_s: Option<f64>,
    /// `meshnode_striped_mib_s / quinn_parallel_mib_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_striped_vs_quinn_parallel: Option<f64>,
    /// The emulator's counts over every run on this link, both transfers.
    emulator: EmulatorTotals,
}

/// The scenario's report.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    stream_mib: f64,
    runs: usize,
    /// Raw quinn through the emulator with no latency and no loss: the emulator's ceiling.
    emulator_ceiling_mib_s: f64,
    /// The emulator's counts over the ceiling's runs: `dropped_overflow` is what it could
    /// not relay in time.
    emulator_ceiling: EmulatorTotals,
    links: Vec<LinkResult>,
}

/// The two clouds of one link: the provider's and the raw server's relay addresses, and
/// the consumer's slot.
struct Clouds {
    emulator: Emulator,
    meshnode: SocketAddr,
    quinn: SocketAddr,
    consumer: usize,
}

impl Clouds {
    async fn new(
        link: Link,
        meshnode_real: SocketAddr,
        quinn_real: SocketAddr,
    ) -> anyhow::Result<Self> {
        let inside = LinkParams::default();
        let between = link.params();
        let emulator = Emulator::new(7, vec![vec![inside, between], vec![between, inside]]);
        let (m, meshnode) = emulator.add_node(0).await?;
        let (q, quinn) = emulator.add_node(0).await?;
        let (consumer, _) = emulator.add_node(1).await?;
        emulator.set_real_addr(m, meshnode_real);
        emulator.set_real_addr(q, quinn_real);
        Ok(Self {
            emulator,
            meshnode,
            quinn,
            consumer,
        })
    }

    /// Raw quinn from cloud 1 over `connections` connections, windows sized for `link`.
    fn quinn_job(
        &self,
        congestion: Congestion,
        link: DataLink,
        connections: usize,
    ) -> anyhow::Result<ConsumeJob> {
        Ok(ConsumeJob::Quinn {
            addr: self.quinn,
            bind: Some(self.consumer_addr()?),
            congestion,
            link,
            connections,
        })
    }

    /// A free local address for the next consumer, known to the emulator as cloud 1's node.
    fn consumer_addr(&self) -> anyhow::Result<SocketAddr> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let addr = socket.local_addr()?;
        drop(socket);
        self.emulator.set_real_addr(self.consumer, addr);
        Ok(addr)
    }
}

/// Runs every `--link` with every `--congestion`.
pub(crate) async fn run(setup: &Setup, args: &Args) -> anyhow::Result<Report> {
    let identity = Identity::from_secret_bytes(PROVIDER_SECRET);
    let data_link = args.data_link.unwrap_or_default();
    let stream_bytes: u64 = setup.stream.iter().map(|b| b.len() as u64).sum();
    let mut out = Vec::new();
    let mut ceiling = 0.0f64;
    let mut ceiling_totals = EmulatorTotals::default();
    for congestion in args.congestion.iter().copied() {
        let plane = provider_plane(
            &setup.provider_store,
            &setup.provider_dir,
            congestion,
            data_link,
        )?;
        let mut raw = start_raw_quinn(&identity, setup.stream.clone(), congestion, data_link)?;
        let quinn_real = raw.addr;
        if ceiling == 0.0 {
            let clouds = Clouds::new(
                Link {
                    rtt_ms: 0.0,
                    loss: 0.0,
                },
                plane.local_addr(),
                quinn_real,
            )
            .await?;
            for _ in 0..args.runs {
                let m = run_child(&clouds.quinn_job(congestion, data_link, 1)?).await?;
                ceiling = ceiling.max(m.mib_s());
                raw.next_finished().await;
            }
            ceiling_totals = clouds.emulator.totals();
            clouds.emulator.shutdown();
            if !args.json {
                eprintln!(
                    "emulator ceiling (raw quinn, no latency, no loss): {ceiling:.1} MiB/s \
                     ({} datagrams relayed, {} lost to overflow)",
                    ceiling_totals.delivered, ceiling_totals.dropped_overflow
                );
            }
        }
        for link in &args.link {
            let clouds = Clouds::new(*link, plane.local_addr(), quinn_real).await?;
            let (mut best_m, mut best_q) = (None::<crate::Measurement>, None::<crate::Measurement>);
            let mut sender = SenderStats::default();
            for run in 0..args.runs {
                // Beside the consumer's data directory: a fetch never writes inside one.
                let fetched = setup
                    .consumer_dir
                    .with_file_name(format!("cross-{}-{run}.arrow", congestion.as_str()));
                let m = run_child(&ConsumeJob::Meshnode {
                    data_dir: setup.consumer_dir.clone(),
                    out: fetched.clone(),
                    addr: clouds.meshnode,
                    owner: setup.owner.clone(),
                    narrowing: None,
                    bind: Some(clouds.consumer_addr()?),
                    congestion,
                    link: data_link,
                })
                .await?;
                let _ = std::fs::remove_file(&fetched);
                anyhow::ensure!(
                    m.rows == setup.rows,
                    "the fetch across clouds got {} of {} rows",
                    m.rows,
                    setup.rows
                );
                let q = run_child(&clouds.quinn_job(congestion, data_link, 1)?).await?;
                anyhow::ensure!(q.bytes == stream_bytes, "raw quinn got {} bytes", q.bytes);
                let s = raw.next_finished().await.unwrap_or_default();
                if !args.json {
                    eprintln!(
                        "{:>5} ms RTT, {:.2} % loss, {:>7}: meshnode {:>7.1} MiB/s, quinn {:>7.1} MiB/s \
                         (quinn sender: {} of {} packets lost, {} congestion events, cwnd {:.0} KiB, \
                         RTT {:.0} ms; emulator overflow so far {})",
                        link.rtt_ms,
                        link.loss * 100.0,
                        congestion.as_str(),
                        m.mib_s(),
                        q.mib_s(),
                        s.lost_packets,
                        s.sent_packets,
                        s.congestion_events,
                        s.cwnd_kib,
                        s.rtt_ms,
                        clouds.emulator.totals().dropped_overflow,
                    );
                }
                if best_m.as_ref().is_none_or(|b| m.mib_s() > b.mib_s()) {
                    best_m = Some(m);
                }
                if best_q.as_ref().is_none_or(|b| q.mib_s() > b.mib_s()) {
                    best_q = Some(q);
                    sender = s;
                }
            }
            // The same bytes split over several connections, each with its own congestion
            // window: what striping a product would gain on this link.
            let mut parallel = None::<f64>;
            let mut striped = None::<f64>;
            if args.parallel > 1 {
                let connections = u8::try_from(args.parallel)?;
                for run in 0..args.runs {
                    let fetched = setup.consumer_dir.with_file_name(format!(
                        "cross-{}-striped-{run}.arrow",
                        congestion.as_str()
                    ));
                    let m = run_child(&ConsumeJob::Meshnode {
                        data_dir: setup.consumer_dir.clone(),
                        out: fetched.clone(),
                        addr: clouds.meshnode,
                        owner: setup.owner.clone(),
                        narrowing: None,
                        bind: Some(clouds.consumer_addr()?),
                        congestion,
                        link: DataLink {
                            connections,
                            ..data_link
                        },
                    })
                    .await?;
                    let _ = std::fs::remove_file(&fetched);
                    anyhow::ensure!(
                        m.rows == setup.rows,
                        "the fetch over {connections} connections got {} of {} rows",
                        m.rows,
                        setup.rows
                    );
                    let p =
                        run_child(&clouds.quinn_job(congestion, data_link, args.parallel)?).await?;
                    anyhow::ensure!(
                        p.bytes == stream_bytes,
                        "raw quinn over {} connections got {} bytes",
                        args.parallel,
                        p.bytes
                    );
                    for _ in 0..args.parallel {
                        raw.next_finished().await;
                    }
                    if !args.json {
                        eprintln!(
                            "{:>5} ms RTT, {:.2} % loss, {:>7}: over {} connections meshnode {:>7.1} MiB/s, quinn {:>7.1} MiB/s",
                            link.rtt_ms,
                            link.loss * 100.0,
                            congestion.as_str(),
                            args.parallel,
                            m.mib_s(),
                            p.mib_s(),
                        );
                    }
                    parallel = Some(parallel.unwrap_or(0.0).max(p.mib_s()));
                    striped = Some(striped.unwrap_or(0.0).max(m.mib_s()));
                }
            }
            let totals = clouds.emulator.totals();
            clouds.emulator.shutdown();
            let (m, q) = (best_m.unwrap_or_default(), best_q.unwrap_or_default());
            out.push(LinkResult {
                rtt_ms: link.rtt_ms,
                loss: link.loss,
                congestion: congestion.as_str(),
                meshnode_mib_s: round(m.mib_s()),
                quinn_mib_s: round(q.mib_s()),
                ratio_vs_quinn: round(m.mib_s() / q.mib_s()),
                meshnode_seconds: round(m.seconds),
                quinn_seconds: round(q.seconds),
                quinn_sender: sender,
                parallel_connections: parallel.map(|_| args.parallel),
                quinn_parallel_mib_s: parallel.map(round),
                meshnode_striped_mib_s: striped.map(round),
                ratio_striped_vs_quinn_parallel: striped.zip(parallel).map(|(m, p)| round(m / p)),
                emulator: totals,
            });
        }
        plane.close();
    }
    Ok(Report {
        stream_mib: round(stream_bytes as f64 / 1_048_576.0),
        runs: args.runs,
        emulator_ceiling_mib_s: round(ceiling),
        emulator_ceiling: ceiling_totals,
        links: out,
    })
}
