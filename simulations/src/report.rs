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
    /// Rejections by reason, over all nodes.
    pub rejected: BTreeMap<String, u64>,
    /// Forged descriptors injected and how many nodes accepted them (should be 0).
    pub forgeries: Vec<ForgeryReport>,
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
                if f.sent { "sent" } else { "NOT SENT" },
                f.accepted_by
            );
        }
        for k in &self.skipped {
            let _ = writeln!(s, "skipped: {k}");
        }
        s
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
