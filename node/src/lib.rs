//! # mesh-node
//!
//! The meshnode daemon. One actor task ([`node`]) owns the libp2p swarm (control plane),
//! the sled store and the node's state; the control API ([`api`]) and the data plane talk to
//! it through a cloneable [`NodeHandle`] over bounded channels.
//!
//! ## Layout
//!
//! - [`config`]: `meshnode.toml` and the data-directory layout.
//! - [`keyfile`]: the identity file and other secret files (mode 0600).
//! - [`localfile`]: bounded whole reads of small local files (config, identity, API address
//!   and token, audit anchor), regular files only.
//! - [`agreements`]: stored contract records, shared by negotiation and the data plane.
//! - [`store`]: sled trees (catalog, products, agreements, pending, revocations, audit, peers).
//! - [`ingest`]: CSV / Parquet / Arrow input streamed into Arrow IPC files.
//! - [`parquet_footer`]: a Parquet footer walked before the parquet crate reads it (the
//!   schema's depth, what parquet's skipper would loop over), and the bounds of its pages.
//! - [`progress`]: figures of running publishes and fetches, polled by the CLI.
//! - [`integrity`]: start-up checks (audit anchor, emptied store, staging sweep) and version
//!   allocation that survives a rolled-back store.
//! - `net`: the libp2p behaviour (gossipsub, Kademlia, identify, ping, request-response).
//! - [`node`]: the actor: gossip validation, anti-entropy, publishing.
//! - [`governance`]: mesh membership and global policies: charter and votes on disk, the
//!   member set the connection gates read, the join protocol.
//! - `contracts`: contract negotiation handlers of the actor (`impl Node`), and in
//!   `contracts::handle` the contract methods of [`NodeHandle`] (typed requests to the actor).
//! - `negotiation`: what a party answers and records; operator decisions (store-level).
//! - [`odcs`]: a contract as an Open Data Contract Standard v3 document.
//! - [`dataplane`]: Arrow IPC over QUIC: contract-enforced serving, verified, resumable fetch.
//! - [`api`]: HTTP/JSON control API with bearer-token authentication; `api::contracts` holds
//!   the contract and audit routes.
//! - [`flight`]: the local Arrow Flight / Flight SQL endpoint (127.0.0.1, the API token):
//!   products streamed while they are fetched, statements run by [`sql`].
//! - [`server`]: start and stop a whole node from its data directory.
//! - [`sql`]: the query engine (DataFusion) over the products this node holds usable
//!   agreements for; scans push projections and filters into the fetch.
//! - [`views`]: JSON shapes shared with the CLI.
//!
//! ## Features
//!
//! - `query` (default): the modules `sql` and `flight`, with DataFusion, arrow-flight and
//!   tonic. Without it the daemon runs everything else; `POST /v1/sql` and
//!   `GET /v1/sql/tables` answer 501 and no Flight endpoint is started.

pub mod agreements;
pub mod api;
mod arrow_guard;
mod batch_values;
pub mod config;
mod contracts;
pub mod dataplane;
pub mod diskroom;
pub mod error;
#[cfg(feature = "query")]
pub mod flight;
pub mod governance;
pub mod ingest;
pub mod integrity;
pub mod keyfile;
pub mod localfile;
pub mod logging;
mod metrics;
mod negotiation;
mod net;
pub mod node;
pub mod odcs;
pub mod parquet_footer;
pub mod progress;
pub mod resolve;
pub mod sameview;
pub mod server;
#[cfg(feature = "query")]
pub mod sql;
pub mod store;
pub mod views;
mod woken;

pub use config::{DataDir, NodeConfig};
pub use error::NodeError;
pub use net::{NetTuning, gossipsub_authenticity, gossipsub_config, peer_score_params};
pub use node::{NodeEvent, NodeHandle};
