//! In-process swarms: several `mesh_node` actors on 127.0.0.1 in one test binary.

mod common;
mod duplicates;
mod gossip_scoring;
mod identify_push;
mod kad_records;
mod reclaim;
mod sync_scale;
