//! The report of a scenario run: JSON shape, readable summary and the SVG plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::emulator::EmulatorTotals;
use crate::stats::Percentiles;

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub topology: String,
    /// Seed used.
    pub seed: u64,
    /// Nodes alive at the end.
    pub nodes: usize,
    /// Nodes ever started (initial and joined).
    pub nodes_started: usize,
    /// Clouds.
    pub clouds: usize,
    /// Catalog convergence over every node and every publish made while no partition was
    /// active: ms from the publisher's catalog update to each other node's.
    pub convergence_ms: Option<Percentiles>,
    /// Per publish.
    pub publishes: Vec<PublishReport>,
    /// Per heal: ms from the heal until every live node held everything published before it
    /// (`null`: never within the run).
    pub heal_convergence_ms: Vec<Option<f64>>,
    /// Heals with their time.
    pub heals: Vec<HealReport>,
    /// Application gossip bytes (in + out) per live node, from the node metrics.
    pub bytes_per_node: f64,
    /// Gossip messages (in + out) per live node, from the node metrics.
    pub gossip_messages_per_node: f64,
    /// UDP bytes (sent + received through the link emulator) per node ever started: all
    /// control-plane traffic, QUIC overhead included.
    pub wire_bytes_per_node: f64,
    /// Catalog updates over all nodes by how the descriptor arrived: `local` (own publish),
    /// `gossip` or `sync` (anti-entropy).
    pub updates_via: BTreeMap<String, u64>,
    /// Connected peers per live node at the end.
    pub peers_per_node: Option<Percentiles>,
    /// How late a 100 ms timer fired while the timeline ran, ms: near 0 unless the process
    /// is short of CPU.
    pub runtime_lag_ms: Option<Percentiles>,
    /// Round trip of a `status` command to a node's actor while the timeline ran, ms
    /// (round-robin over the nodes): queueing in front of the actors.
    pub actor_lag_ms: Option<Percentiles>,
    /// Rejections by reason, over all nodes.
    pub rejected: BTreeMap<String, u64>,
    /// Forged descriptors injected and how many nodes accepted them (should be 0).
    pub forgeries: Vec<ForgeryReport>,
    /// Contract negotiations (`contract_request` events).
    pub contracts: ContractsReport,
    /// Data-plane transfers (`fetch` events).
    pub transfers: TransfersReport,
    /// Events not run, with the reason.
    pub skipped: Vec<String>,
    /// Every live node ended with the same catalog, holding the newest version of every
    /// product published.
    pub converged: bool,
    /// Distinct catalog entries (product and version) on the live nodes at the end.
    pub catalog_size: usize,
    /// Link emulator totals.
    pub emulator: EmulatorTotals,
    /// Time to start the nodes and form the mesh, ms.
    pub setup_ms: u64,
    /// Time from the timeline's start to the end of the settle phase, ms.
    pub run_ms: u64,
    /// Fraction of live nodes holding each publish over time (for the plot).
    #[serde(skip)]
    pub series: Vec<Series>,
    /// Partition and heal marks for the plot: (ms, label).
    #[serde(skip)]
    pub marks: Vec<(f64, String)>,
    /// Membership changes and amendments: how long each took to reach every live member.
    pub governance: Vec<GovernanceReport>,
    /// Connections the live nodes refused because the key is not a member (control and
    /// data plane), summed.
    pub refused_non_members: u64,
}

/// One membership change or amendment (`join`, `remove`, `amend` events).
#[derive(Clone, Debug, Serialize)]
pub struct GovernanceReport {
    /// Timeline time of the event, ms.
    pub at_ms: u64,
    /// What changed, e.g. `amend to policies v1 (by a, b)`.
    pub what: String,
    /// Whether a partition was active when it was carried.
    pub during_partition: bool,
    /// Whether some node applied it.
    pub carried: bool,
    /// Error of the proposal or a signature, if any.
    pub error: Option<String>,
    /// From the event to the first node applying it (proposal, signatures as each signer
    /// saw the motion, and the carrying vote), ms.
    pub carried_after_ms: Option<f64>,
    /// Live members up since before it was carried (the removed domain excluded).
    pub expected: usize,
    /// How many of them applied it.
    pub reached: usize,
    /// From the first node applying it to each other node applying it, ms.
    pub spread_ms: Option<Percentiles>,
    /// From the first node applying it to the last expected node, ms (`None`: some node
    /// never did).
    pub all_ms: Option<f64>,
}

/// One publish.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    /// Timeline time of the publish event, ms.
    pub at_ms: u64,
    /// `domain/product`.
    pub product: String,
    /// Version published.
    pub version: u64,
    /// Whether a partition was active when it was published.
    pub during_partition: bool,
    /// Nodes that were up at the publish and to the end, publisher excluded.
    pub expected: usize,
    /// Of those, how many held it by the end.
    pub reached: usize,
    /// Convergence over those nodes, ms.
    pub convergence_ms: Option<Percentiles>,
}

/// One heal.
#[derive(Clone, Debug, Serialize)]
pub struct HealReport {
    /// Timeline time of the heal, ms.
    pub at_ms: u64,
    /// Which link healed.
    pub what: String,
    /// Products (versions) published before it.
    pub products: usize,
    /// ms until every live node held them all.
    pub converge_ms: Option<f64>,
}

/// One forged descriptor.
#[derive(Clone, Debug, Serialize)]
pub struct ForgeryReport {
    /// Timeline time, ms.
    pub at_ms: u64,
    /// `victim/product` claimed.
    pub claims: String,
    /// Whether the attacker managed to send it.
    pub sent: bool,
    /// Live nodes whose catalog holds it at the end (must be 0).
    pub accepted_by: usize,
    /// Connections of non-members the `via` node refused by the end (the attacker is no
    /// member: its connection is refused before any gossip, so it sends nothing).
    pub refused_by_via: u64,
}

/// Every contract negotiation of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ContractsReport {
    /// Requests made.
    pub requested: usize,
    /// Ended agreed, co-signed and held by both parties.
    pub agreed: usize,
    /// Ended rejected (policy or operator).
    pub rejected: usize,
    /// Failed before the provider answered, or never concluded.
    pub failed: usize,
    /// Negotiation latency over the answered requests: ms from the consumer's request to
    /// the provider's answer (agreed, pending or rejected) arriving back, dial included.
    pub negotiation_ms: Option<Percentiles>,
    /// ms from the request until the consumer held the co-signed agreement, over the agreed
    /// ones (for `manual` products: the operator's delay and the consumer's status poll too).
    pub agreed_ms: Option<Percentiles>,
    /// Per request.
    pub requests: Vec<ContractReport>,
}

/// One `contract_request`.
#[derive(Clone, Debug, Serialize)]
pub struct ContractReport {
    /// Timeline time of the event, ms.
    pub at_ms: u64,
    /// Consumer domain.
    pub consumer: String,
    /// `domain/product`.
    pub product: String,
    /// The consumer's cloud.
    pub consumer_cloud: String,
    /// The provider's cloud.
    pub provider_cloud: String,
    /// Agreement id, once the request was stored.
    pub id: Option<String>,
    /// The provider's first answer: `agreed` (auto approval), `pending` (manual) or
    /// `rejected`.
    pub answer: Option<String>,
    /// State at the consumer at the end: `agreed`, `rejected`, `pending`, `requested`, or
    /// `failed` when the request never reached an answer.
    pub state: String,
    /// Request to answer, ms.
    pub negotiation_ms: Option<f64>,
    /// Request to agreed at the consumer, ms.
    pub agreed_ms: Option<f64>,
    /// Both parties hold the same agreement and both signatures (consumer's request,
    /// provider's countersignature) verify against the terms' keys.
    pub signatures_verified: bool,
    /// Columns granted.
    pub granted_columns: Option<Vec<String>>,
    /// Row filter, canonical form.
    pub filter: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Every data-plane transfer of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TransfersReport {
    /// Fetches that completed.
    pub completed: usize,
    /// Fetches that failed.
    pub failed: usize,
    /// UDP bytes through the link emulator on the data plane (both directions, all nodes).
    pub wire_bytes: u64,
    /// Per fetch.
    pub fetches: Vec<TransferReport>,
    /// Throughput per link (provider's cloud to consumer's cloud), completed fetches.
    pub links: Vec<LinkThroughput>,
}

/// One `fetch`.
#[derive(Clone, Debug, Serialize)]
pub struct TransferReport {
    /// Timeline time of the event, ms.
    pub at_ms: u64,
    /// Consumer domain.
    pub consumer: String,
    /// `domain/product`.
    pub product: String,
    /// Version fetched.
    pub version: Option<u64>,
    /// The provider's cloud (data flows from it).
    pub from_cloud: String,
    /// The consumer's cloud.
    pub to_cloud: String,
    /// Configured one-way latency of that link, ms.
    pub link_latency_ms: f64,
    /// Rows received.
    pub rows: u64,
    /// Rows the agreement's filter lets through, computed from the generated data.
    pub expected_rows: Option<u64>,
    /// Columns of the received file.
    pub columns: Vec<String>,
    /// Bytes of the Arrow IPC stream received.
    pub bytes: u64,
    /// Size of the Arrow IPC file written.
    pub file_bytes: u64,
    /// Duration of the fetch call (dial, authorisation, transfer, verification, fsync), s.
    pub seconds: f64,
    /// `bytes` / `seconds`, MiB/s.
    pub mib_s: f64,
    /// Time spent waiting for the contract before fetching, ms.
    pub waited_ms: f64,
    /// The file reads back with the expected rows and exactly the granted columns.
    pub verified: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Completed fetches over one link.
#[derive(Clone, Debug, Serialize)]
pub struct LinkThroughput {
    /// Provider's cloud.
    pub from_cloud: String,
    /// Consumer's cloud.
    pub to_cloud: String,
    /// Fetches.
    pub fetches: usize,
    /// Rows.
    pub rows: u64,
    /// IPC stream bytes.
    pub bytes: u64,
    /// Sum of the fetch durations, s.
    pub seconds: f64,
    /// `bytes` / `seconds`, MiB/s.
    pub mib_s: f64,
}

/// Fraction of nodes holding one product version over time.
#[derive(Clone, Debug)]
pub struct Series {
    /// Label.
    pub label: String,
    /// (ms since the timeline start, fraction 0–1), a step function.
    pub points: Vec<(f64, f64)>,
}

impl Report {
    /// The readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let pc = |p: &Option<Percentiles>| match p {
            Some(p) => format!(
                "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                p.p50, p.p99, p.max
            ),
            None => "no samples".into(),
        };
        let _ = writeln!(
            s,
            "{}: {} nodes alive ({} started) in {} clouds, seed {}",
            self.topology, self.nodes, self.nodes_started, self.clouds, self.seed
        );
        let _ = writeln!(
            s,
            "setup {:.1} s, run {:.1} s; converged: {}; catalog {} entries",
            self.setup_ms as f64 / 1000.0,
            self.run_ms as f64 / 1000.0,
            if self.converged { "yes" } else { "NO" },
            self.catalog_size
        );
        let _ = writeln!(
            s,
            "convergence (publishes outside partitions): {}",
            pc(&self.convergence_ms)
        );
        for p in &self.publishes {
            let _ = writeln!(
                s,
                "  {:>7} ms  {}@{}{}: {}/{} nodes, {}",
                p.at_ms,
                p.product,
                p.version,
                if p.during_partition {
                    " (partitioned)"
                } else {
                    ""
                },
                p.reached,
                p.expected,
                pc(&p.convergence_ms)
            );
        }
        for h in &self.heals {
            let _ = writeln!(
                s,
                "heal {} at {} ms: {} products converged in {}",
                h.what,
                h.at_ms,
                h.products,
                h.converge_ms
                    .map(|m| format!("{m:.0} ms"))
                    .unwrap_or_else(|| "NEVER".into())
            );
        }
        let _ = writeln!(
            s,
            "gossip per node: {:.0} messages, {:.0} bytes; wire (QUIC) per node: {:.0} bytes",
            self.gossip_messages_per_node, self.bytes_per_node, self.wire_bytes_per_node
        );
        let _ = writeln!(
            s,
            "timer lag: {}; actor status round trip: {}",
            pc(&self.runtime_lag_ms),
            pc(&self.actor_lag_ms)
        );
        let via: Vec<String> = self
            .updates_via
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "catalog updates by arrival: {}; peers per node: {}",
            via.join(", "),
            match &self.peers_per_node {
                Some(p) => format!("p50 {:.0}, p99 {:.0}, max {:.0}", p.p50, p.p99, p.max),
                None => "none".into(),
            }
        );
        let _ = writeln!(
            s,
            "emulator: {} datagrams delivered, {} lost, {} partitioned",
            self.emulator.delivered, self.emulator.dropped_loss, self.emulator.dropped_partition
        );
        let rejected: Vec<String> = self
            .rejected
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "rejected: {}",
            if rejected.is_empty() {
                "none".into()
            } else {
                rejected.join(", ")
            }
        );
        for f in &self.forgeries {
            let _ = writeln!(
                s,
                "forgery at {} ms claiming {}: {}, accepted by {} nodes",
                f.at_ms,
                f.claims,
                if f.sent {
                    "sent".to_owned()
                } else if f.refused_by_via > 0 {
                    format!(
                        "not sent: the non-member attacker's connection was refused ({} refused at its target)",
                        f.refused_by_via
                    )
                } else {
                    "NOT SENT".to_owned()
                },
                f.accepted_by
            );
        }
        let _ = writeln!(
            s,
            "connections refused to non-members: {}",
            self.refused_non_members
        );
        for g in &self.governance {
            let _ = writeln!(
                s,
                "{} at {} ms{}: {}; reached {}/{} members; spread {}; every member after {}{}",
                g.what,
                g.at_ms,
                if g.during_partition {
                    " (partition)"
                } else {
                    ""
                },
                match g.carried_after_ms {
                    Some(ms) => format!("carried after {ms:.1} ms"),
                    None => "NOT CARRIED".into(),
                },
                g.reached,
                g.expected,
                pc(&g.spread_ms),
                match g.all_ms {
                    Some(ms) => format!("{ms:.1} ms"),
                    None => "never".into(),
                },
                match &g.error {
                    Some(e) => format!(" (error: {e})"),
                    None => String::new(),
                }
            );
        }
        self.contracts_summary(&mut s, &pc);
        self.transfers_summary(&mut s);
        for k in &self.skipped {
            let _ = writeln!(s, "skipped: {k}");
        }
        s
    }

    fn contracts_summary(&self, s: &mut String, pc: &dyn Fn(&Option<Percentiles>) -> String) {
        let c = &self.contracts;
        if c.requested == 0 {
            return;
        }
        let _ = writeln!(
            s,
            "contracts: {} requested, {} agreed, {} rejected, {} failed; negotiation {}; \
             agreed {}",
            c.requested,
            c.agreed,
            c.rejected,
            c.failed,
            pc(&c.negotiation_ms),
            pc(&c.agreed_ms)
        );
        for r in &c.requests {
            let answer = match (&r.answer, r.negotiation_ms) {
                (Some(a), Some(ms)) => format!("answer {a} in {ms:.0} ms"),
                _ => "no answer".to_owned(),
            };
            let state = match r.agreed_ms {
                Some(ms) => format!("{} after {ms:.0} ms", r.state),
                None => r.state.clone(),
            };
            let _ = writeln!(
                s,
                "  {:>7} ms  {} -> {} ({} -> {}): {answer}, {state}{}{}",
                r.at_ms,
                r.consumer,
                r.product,
                r.consumer_cloud,
                r.provider_cloud,
                if r.signatures_verified {
                    ", both signatures verified"
                } else {
                    ""
                },
                r.error
                    .as_ref()
                    .map(|e| format!("; error: {e}"))
                    .unwrap_or_default()
            );
        }
    }

    fn transfers_summary(&self, s: &mut String) {
        let t = &self.transfers;
        if t.fetches.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "transfers: {} completed, {} failed (data plane through the link emulator, {} wire \
             bytes)",
            t.completed, t.failed, t.wire_bytes
        );
        for f in &t.fetches {
            match &f.error {
                None => {
                    let _ = writeln!(
                        s,
                        "  {:>7} ms  {} <- {}@{} ({} -> {}, {:.0} ms): {} rows (expected {}), \
                         {} columns, {} bytes in {:.3} s = {:.2} MiB/s{}",
                        f.at_ms,
                        f.consumer,
                        f.product,
                        f.version.unwrap_or_default(),
                        f.from_cloud,
                        f.to_cloud,
                        f.link_latency_ms,
                        f.rows,
                        f.expected_rows
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "?".into()),
                        f.columns.len(),
                        f.bytes,
                        f.seconds,
                        f.mib_s,
                        if f.verified {
                            ", verified"
                        } else {
                            ", NOT VERIFIED"
                        }
                    );
                }
                Some(e) => {
                    let _ = writeln!(
                        s,
                        "  {:>7} ms  {} <- {}: FAILED: {e}",
                        f.at_ms, f.consumer, f.product
                    );
                }
            }
        }
        for l in &t.links {
            let _ = writeln!(
                s,
                "  link {} -> {}: {} fetches, {} rows, {} bytes, {:.2} MiB/s",
                l.from_cloud, l.to_cloud, l.fetches, l.rows, l.bytes, l.mib_s
            );
        }
    }

    /// Draws the fraction of nodes holding each product over time as SVG.
    pub fn plot(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let x_max = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.marks.iter().map(|m| m.0))
            .fold(1.0f64, f64::max)
            * 1.02;
        let root = SVGBackend::new(path, (1100, 650)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{}: fraction of {} nodes holding each product",
                    self.topology, self.nodes
                ),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..x_max, 0.0..1.05)?;
        chart
            .configure_mesh()
            .x_desc("ms since the timeline start")
            .y_desc("fraction of live nodes")
            .draw()?;
        for (i, s) in self.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut pts = s.points.clone();
            if let Some(&(_, y)) = pts.last() {
                pts.push((x_max, y));
            }
            let series = chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
            if self.series.len() <= 24 {
                series
                    .label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
            }
        }
        for (x, label) in &self.marks {
            let red = RGBColor(200, 30, 30);
            chart.draw_series(LineSeries::new(
                [(*x, 0.0), (*x, 1.05)],
                red.stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                label.clone(),
                (*x, 1.03),
                ("sans-serif", 13).into_font().color(&red),
            )))?;
        }
        if self.series.len() <= 24 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}
