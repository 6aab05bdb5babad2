//! Scenario runner: every domain of a topology runs as a real meshnode node in this process,
//! behind a user-space link emulator (latency, jitter, loss, partitions).
//!
//! ```text
//! cargo run --release -p mesh-simulations --bin sim -- configs/topologies/three-clouds.toml \
//!     [--seed N] [--json] [--plot out.svg]
//! ```
//!
//! Prints a readable summary, or one JSON object with `--json`. Exits with status 2 when the
//! live nodes did not converge or a node accepted a forged descriptor.

use std::path::PathBuf;

use clap::Parser;
use mesh_simulations::runner::{self, RunOptions};
use mesh_simulations::topology::Topology;

#[derive(Debug, Parser)]
#[command(about = "Run a meshnode topology with emulated links")]
struct Args {
    /// Topology file (configs/topologies/*.toml).
    topology: PathBuf,
    /// Seed (default: the topology's).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Write an SVG plot of the fraction of nodes holding each product over time.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    mesh_node::logging::init("RUST_LOG", "warn,libp2p_kad=error");
    let args = Args::parse();
    let topology = Topology::load(&args.topology)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()?;
    let report = runtime.block_on(runner::run(&topology, &RunOptions { seed: args.seed }))?;
    if let Some(path) = &args.plot {
        report.plot(path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.summary());
        if let Some(path) = &args.plot {
            println!("plot: {}", path.display());
        }
    }
    let forged = report.forgeries.iter().any(|f| f.accepted_by > 0);
    if !report.converged || forged {
        std::process::exit(2);
    }
    Ok(())
}
