//! # mesh-simulations
//!
//! Runs many real meshnode nodes (the node crate's actor, libp2p over QUIC, sled) in one
//! process, for benchmarks and scenario simulations.
//!
//! ## Layout
//!
//! - [`topology`]: the `configs/topologies/*.toml` format (clouds, links, timeline).
//! - [`emulator`]: the user-space UDP link emulator (latency, jitter, loss, partitions).
//! - [`cluster`]: starting, observing and stopping nodes (and their data planes); identities
//!   and scratch space.
//! - [`dataset`]: seeded order data for published products, and the filter oracle.
//! - [`bare`]: bare gossipsub swarms (benchmark baseline, forgery attacker).
//! - [`runner`]: drives a topology's timeline; measures convergence, contract negotiations
//!   and transfers.
//! - [`report`]: the run report, its text summary and the SVG plot.
//! - [`stats`]: percentiles and metric parsing.
//!
//! Binaries: `sim` (scenario runner) and `bench-gossip` (meshnode vs bare gossipsub).

pub mod bare;
pub mod cluster;
pub mod dataset;
pub mod emulator;
pub mod report;
pub mod runner;
pub mod stats;
pub mod topology;
