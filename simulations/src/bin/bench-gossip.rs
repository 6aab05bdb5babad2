//! Benchmark: how fast a published descriptor reaches every node of a meshnode mesh,
//! against bare libp2p gossipsub on the same topology.
//!
//! ```text
//! cargo run --release -p mesh-simulations --bin bench-gossip -- --nodes 50 --json
//! ```
//!
//! 1. Starts `--nodes` real meshnode nodes in this process on 127.0.0.1 (QUIC, no link
//!    emulation); node i bootstraps to 2–3 random earlier nodes (seeded). Waits until every
//!    node has a peer (`first_peer_ms`) and the number of connections has stopped changing
//!    (`formation_ms`, when it last changed; `--settle-ms` without a change: the DHT servers'
//!    Kademlia refreshes connect them to many others, closed once unused for 30 s), then
//!    `--warmup-ms`.
//! 2. Publishes `--publishes` products from random nodes, one at a time (each from a fresh
//!    CSV of `--rows` rows), and records when each node's catalog took the descriptor
//!    (`CatalogUpdated`, i.e. stored after signature verification), measured from the
//!    publisher's own `CatalogUpdated` (emitted right before it gossips).
//! 3. Records the connection graph the mesh actually formed (bootstrap, node records and
//!    Kademlia), stops the nodes and starts bare gossipsub swarms with the node's exact
//!    gossipsub configuration (`mesh_node::gossipsub_config` and
//!    `mesh_node::gossipsub_authenticity`) on that graph. The same publishers send
//!    payloads of the same sizes (the encoded descriptor messages); receipt time is measured
//!    in each swarm's task.
//!    With `--checked-baseline` the baseline runs again, on fresh swarms and the same graph,
//!    publishing the very envelopes meshnode gossiped; each swarm decodes and verifies every
//!    descriptor before it accepts it (signature and descriptor rules, what any node must
//!    check before it forwards) and scores its peers with the node's parameters
//!    (`mesh_node::peer_score_params`). `ratio_p99_vs_checked` is then what meshnode adds
//!    beyond that work: membership, the merge rule, the store, its other protocols.
//!
//! 4. Measures what each mesh costs while nothing is published: CPU seconds per second of
//!    its warm-up (`idle_cpu_per_s`, `baseline_idle_cpu_per_s`); the nodes share the
//!    machine's cores, so this is CPU the publish waves do not get. The UDP datagrams sent
//!    in the same periods (`idle_datagrams_per_s`, `baseline_idle_datagrams_per_s`) tell
//!    packets apart from work per packet. The anti-entropy rounds and the connections opened
//!    in the warm-up (`idle_sync_rounds_per_s`, `idle_connections_opened_per_s`, summed over
//!    the nodes, so a connection counts at both ends) are what the idle mesh still does
//!    besides keeping its connections alive; `extra_connections` counts the connections the
//!    swarms hold beyond one per connected pair (`meshnode_connections`), and
//!    `duplicate_connections_closed` the second connections to a peer the nodes closed while
//!    the mesh formed (counted at each end that closed one). `publish_datagrams` and
//!    `baseline_publish_datagrams` are the datagrams sent over each publishing phase.
//!
//! Prints a JSON object with `--json`, a short text otherwise.

// The report is one `serde_json::json!` object, deeper than the macro's default limit.
#![recursion_limit = "256"]

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_node::NetTuning;
use mesh_node::store::StoreOptions;
use mesh_node::views::PublishRequest;
use mesh_protocol::wire::GossipMessage;
use mesh_protocol::{ProductId, PublicKey};
use mesh_simulations::bare::{BareSwarm, Received, Verdict, tag_of};
use mesh_simulations::cluster::{
    self, NodeSpec, RunningNode, Tracker, free_udp_port, identity_secret, quic_addr,
};
use mesh_simulations::stats::{
    Percentiles, cpu_seconds, metric, peak_rss_mib, round1, udp_datagrams_sent,
};
use rand::rngs::ChaCha8Rng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "meshnode gossip latency against bare gossipsub")]
struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Number of publishes.
    #[arg(long, default_value_t = 20)]
    publishes: usize,
    /// Rows of each published CSV.
    #[arg(long, default_value_t = 100)]
    rows: usize,
    /// Seed for the topology, publishers and identities.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// gossipsub heartbeat (both meshnode and baseline), ms.
    #[arg(long, default_value_t = 500)]
    heartbeat_ms: u64,
    /// Sign every gossipsub message and check the signature on every copy received, in both
    /// meshnode and the baseline (`NetTuning::author_signatures`): measures what the node
    /// saves by going without.
    #[arg(long)]
    author_signatures: bool,
    /// Pause between node starts, ms. 0 starts them all at once.
    #[arg(long, default_value_t = 0)]
    join_ms: u64,
    /// Nodes that serve the Kademlia DHT, spread evenly over the nodes; the others run no
    /// Kademlia (`dht_server = false`) and find peers from node records.
    /// Default: one node in ten, as a large mesh would be deployed (a node's own config
    /// defaults to serving; `--dht-servers N` with N = `--nodes` measures that).
    #[arg(long)]
    dht_servers: Option<usize>,
    /// Wait after every node has a peer, ms (default: 3000 + 10 per node).
    #[arg(long)]
    warmup_ms: Option<u64>,
    /// The mesh counts as settled once the number of connections has not changed for this
    /// long, ms: longer than a node leaves an unused connection open above its high mark
    /// (30 s), so that closing the DHT servers' surplus Kademlia contacts counts as
    /// formation. The benchmark measures the steady state after it.
    #[arg(long, default_value_t = 40_000)]
    settle_ms: u64,
    /// Longest wait for one publish to reach every node, ms.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Period of each node's background store flush, ms; 0: none (the default). A deployed
    /// node has one store in its process and flushes every 5 s (`store::FLUSH_EVERY`). Here
    /// every node's store is in one process, and each store's flush thread is walked by
    /// every other's epoch-based reclamation: at 1,000 nodes those threads cost the publish
    /// waves about a quarter of their CPU, a cost no deployed node pays
    /// (docs/ARCHITECTURE.md). Every answer to a user or peer is flushed either way.
    #[arg(long, default_value_t = 0)]
    store_flush_ms: u64,
    /// Also run the baseline a third time, checking what every node must check before it
    /// forwards (each descriptor's signature and rules, on the envelopes meshnode gossiped)
    /// and scoring peers as a node does: `ratio_p99_vs_checked` is what meshnode adds to
    /// that work.
    #[arg(long)]
    checked_baseline: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mesh_node::logging::init("RUST_LOG", "warn,libp2p_kad=error");
    let args = Args::parse();
    anyhow::ensure!(args.nodes >= 2, "--nodes must be at least 2");
    cluster::raise_fd_limit();
    let warmup = Duration::from_millis(args.warmup_ms.unwrap_or(3000 + 10 * args.nodes as u64));
    let tuning = NetTuning {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        author_signatures: args.author_signatures,
        ..NetTuning::default()
    };
    let dht_servers = Some(args.dht_servers.unwrap_or(args.nodes.div_ceil(10)));
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let scratch = tempfile::Builder::new()
        .prefix("bench-gossip-")
        .tempdir_in(cluster::scratch_base())?;

    // ---- meshnode
    let setup = Instant::now();
    let (tracker, observations) = Tracker::spawn();
    let mut specs: Vec<NodeSpec> = Vec::new();
    let mut nodes: Vec<RunningNode> = Vec::new();
    // One mesh: every node a founding member, the first one governing.
    let charter = {
        let ids: Vec<(String, mesh_protocol::Identity)> = (0..args.nodes)
            .map(|i| {
                let d = format!("n{i}");
                let id = mesh_protocol::Identity::from_secret_bytes(identity_secret(args.seed, &d));
                (d, id)
            })
            .collect();
        let members: Vec<(String, mesh_protocol::PublicKey)> = ids
            .iter()
            .map(|(d, i)| (d.clone(), i.public_key()))
            .collect();
        std::sync::Arc::new(cluster::charter("bench", &ids[..1], &members, 1))
    };
    for i in 0..args.nodes {
        let secret = identity_secret(args.seed, &format!("n{i}"));
        let degree = rng.random_range(2..=3).min(i);
        let earlier: Vec<usize> = (0..i).collect();
        let bootstrap = earlier
            .sample(&mut rng, degree)
            .map(|&j| {
                let s: &NodeSpec = &specs[j];
                format!("{}/p2p/{}", s.listen, cluster::peer_id(&s.identity()))
            })
            .collect();
        let mut spec = NodeSpec {
            index: i,
            domain: format!("n{i}"),
            secret,
            data_dir: scratch.path().join(format!("n{i}")),
            listen: quic_addr(free_udp_port()?),
            bootstrap,
            sync_interval_secs: 10,
            tuning: tuning.clone(),
            data_announce: None,
            dht_server: cluster::is_dht_server(i, args.nodes, dht_servers),
            charter: Some(charter.clone()),
            votes: Vec::new(),
            store: StoreOptions {
                flush_every: (args.store_flush_ms > 0)
                    .then(|| Duration::from_millis(args.store_flush_ms)),
            },
        };
        // A port found free can be taken by another process before the node binds it:
        // try another one.
        let mut attempt = 0;
        let node = loop {
            match spec.start(observations.clone()).await {
                Ok(node) => break node,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!("starting node n{i} failed, retrying on another port: {e:#}");
                    spec.listen = quic_addr(free_udp_port()?);
                }
                Err(e) => return Err(e),
            }
        };
        nodes.push(node);
        specs.push(spec);
        // Starting a node does not wait for anything: without a yield, this task would hold
        // a runtime thread for the whole loop while the started nodes' handshakes time out.
        tokio::task::yield_now().await;
        if args.join_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.join_ms)).await;
        }
    }
    progress(setup, format_args!("{} nodes started", args.nodes));
    wait_until(Duration::from_secs(120), NODE_POLL, || async {
        peer_counts(&nodes).await.iter().all(|&p| p > 0)
    })
    .await
    .context("the mesh did not form: some node has no peer")?;
    let first_peer_ms = setup.elapsed().as_millis();
    progress(setup, format_args!("every node has a peer"));
    let settled = settle(&nodes, Duration::from_millis(args.settle_ms), setup).await;
    let formation_ms = settled.last_change.duration_since(setup).as_millis();
    progress(
        setup,
        format_args!(
            "connections settled at {} (peak {})",
            total_peers(&nodes).await / 2,
            settled.peak / 2
        ),
    );
    // Read outside the measured window: rendering every node's metrics costs CPU.
    let idle_counts = metric_totals(&nodes, IDLE_METRICS).await;
    let idle_counted = Instant::now();
    // What the formed mesh costs when nothing is published.
    let (idle_cpu_per_s, idle_datagrams_per_s) = idle_cost(warmup).await;
    // What the idle mesh still does: anti-entropy rounds, and connections opened (each a
    // QUIC handshake, identify both ways and a first sync round).
    let ([idle_rounds, idle_opened], open_connections) = {
        let after = metric_totals(&nodes, IDLE_METRICS).await;
        let seconds = idle_counted.elapsed().as_secs_f64();
        // Every connection is open at both ends.
        (
            [0, 1].map(|i| (after[i] - idle_counts[i]) / seconds),
            after[2] / 2.0,
        )
    };
    let setup_ms = setup.elapsed().as_millis();
    let [rounds_before, entries_before] = metric_totals(&nodes, SYNC_METRICS).await;
    let setup_cpu_s = cpu_seconds();
    let connections = total_peers(&nodes).await / 2;

    let publish_datagrams = udp_datagrams_sent();
    let mut samples = Vec::new();
    let mut sizes = Vec::new();
    let mut publishers = Vec::new();
    let mut checked_payloads = args.checked_baseline.then(Vec::new);
    let mut all_converged = true;
    for p in 0..args.publishes {
        let from = rng.random_range(0..args.nodes);
        publishers.push(from);
        let csv = scratch.path().join(format!("publish-{p}.csv"));
        cluster::write_csv(&csv, args.rows, p as u64)?;
        let before = bytes_out(&nodes[from]).await;
        let view = nodes[from]
            .handle
            .publish(PublishRequest {
                name: format!("bench-{p}"),
                from: csv.display().to_string(),
                ..PublishRequest::default()
            })
            .await
            .with_context(|| format!("publish {p}"))?;
        let id = ProductId {
            owner: PublicKey::from_hex(&view.owner)?,
            name: view.name.clone(),
        };
        if let Some(payloads) = &mut checked_payloads {
            let (_, envelope) = nodes[from]
                .store
                .descriptor(&id)?
                .context("the publisher holds its descriptor")?;
            payloads.push(GossipMessage::Descriptor(envelope).to_bytes());
        }
        let key = id.storage_key();
        let version = view.version;
        let deadline = Duration::from_millis(args.timeout_ms);
        // `try_lock`: a runtime thread never waits for the collector, which is busy exactly
        // while the nodes need both threads.
        let done = wait_until(deadline, Duration::from_millis(20), || async {
            let Ok(t) = tracker.try_lock() else {
                return false;
            };
            (0..args.nodes).all(|n| t.first_at(n, &key, version).is_some())
        })
        .await;
        sizes.push(bytes_out(&nodes[from]).await.saturating_sub(before) as usize);
        all_converged &= done.is_ok();
        progress(
            setup,
            format_args!(
                "publish {}/{}: {}",
                p + 1,
                args.publishes,
                if done.is_ok() {
                    "every node holds it"
                } else {
                    "timed out"
                }
            ),
        );
        {
            let t = tracker.lock().expect("lock");
            let origin = t
                .first_at(from, &key, version)
                .expect("publisher holds its product");
            for n in (0..args.nodes).filter(|&n| n != from) {
                if let Some(at) = t.first_at(n, &key, version) {
                    samples.push(at.saturating_duration_since(origin).as_secs_f64() * 1000.0);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The publishing phase alone, idle included, like the baseline's below.
    let publish_cpu_s = cpu_seconds() - setup_cpu_s;
    let publish_datagrams = udp_datagrams_sent().saturating_sub(publish_datagrams);
    let [
        rounds_after,
        entries_after,
        validation_s,
        validations,
        bytes_in,
        bytes_out,
        opened,
        trimmed,
    ] = metric_totals(
        &nodes,
        [
            SYNC_METRICS[0],
            SYNC_METRICS[1],
            "meshnode_gossip_validation_seconds_sum",
            "meshnode_gossip_validation_seconds_count",
            "meshnode_gossip_bytes_in_total",
            "meshnode_gossip_bytes_out_total",
            "meshnode_connections_opened_total",
            "meshnode_connections_trimmed_total",
        ],
    )
    .await;
    let bytes_per_node = (bytes_in + bytes_out) / args.nodes as f64;
    let peer_index: std::collections::HashMap<String, usize> = specs
        .iter()
        .map(|s| (cluster::peer_id(&s.identity()).to_string(), s.index))
        .collect();
    let mut edges = BTreeSet::new();
    for (i, n) in nodes.iter().enumerate() {
        for p in n.handle.peers().await.unwrap_or_default() {
            if let Some(&j) = peer_index.get(&p.peer_id) {
                edges.insert((i.min(j), i.max(j)));
            }
        }
    }
    let mesh_peak_rss_mib = peak_rss_mib();
    for n in nodes {
        n.stop().await;
    }

    // ---- baselines: bare gossipsub on the same graph, then (`--checked-baseline`) with the
    // checks every node must make
    let graph = Graph {
        nodes: args.nodes,
        edges: &edges,
        publishers: &publishers,
    };
    progress(setup, format_args!("baseline on {} edges", edges.len()));
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(p, &size)| {
            let mut payload = (0x5eed_0000_0000_0000u64 | p as u64).to_be_bytes().to_vec();
            payload.extend((8..size.max(8)).map(|_| rng.random::<u8>()));
            payload
        })
        .collect();
    let base = baseline(&args, &tuning, &graph, &payloads, Verdict::Accept, warmup).await?;
    let checked = match checked_payloads {
        Some(payloads) => {
            progress(
                setup,
                format_args!("checked baseline on {} edges", edges.len()),
            );
            Some(baseline(&args, &tuning, &graph, &payloads, Verdict::Check, warmup).await?)
        }
        None => None,
    };

    let m = Percentiles::of(&samples).unwrap_or_default();
    let b = Percentiles::of(&base.samples).unwrap_or_default();
    let ratio = |base: f64| {
        if base > 0.0 {
            (m.p99 / base * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    let expected = args.publishes * (args.nodes - 1);
    let out = serde_json::json!({
        "nodes": args.nodes,
        "publishes": args.publishes,
        "author_signatures": args.author_signatures,
        "store_flush_ms": args.store_flush_ms,
        "p50_ms": round1(m.p50),
        "p99_ms": round1(m.p99),
        "max_ms": round1(m.max),
        "bytes_per_node": bytes_per_node.round(),
        // Mean time a node takes from a gossip message's arrival to its verdict (every hop
        // pays it before forwarding), over all messages of the run, formation included.
        "validation_mean_us": if validations > 0.0 { (validation_s / validations * 1e6).round() } else { 0.0 },
        "baseline_p50_ms": round1(b.p50),
        "baseline_p99_ms": round1(b.p99),
        "baseline_max_ms": round1(b.max),
        "ratio_p99": ratio(b.p99),
        "converged": all_converged && samples.len() == expected,
        "baseline_converged": base.converged && base.samples.len() == expected,
        "payload_bytes": sizes.iter().sum::<usize>() / sizes.len().max(1),
        "edges": edges.len(),
        "dht_servers": (0..args.nodes).filter(|&i| cluster::is_dht_server(i, args.nodes, dht_servers)).count(),
        "setup_ms": setup_ms,
        "first_peer_ms": first_peer_ms,
        "formation_ms": formation_ms,
        "settle_ms": settled.ms,
        "peak_connections": settled.peak / 2,
        "opened_per_node": round1(opened / args.nodes as f64),
        "trimmed_per_node": round1(trimmed / args.nodes as f64),
        "connections": connections,
        "setup_cpu_s": round1(setup_cpu_s),
        "publish_cpu_s": round1(publish_cpu_s),
        "baseline_publish_cpu_s": round1(base.publish_cpu_s),
        // UDP datagrams sent over the same publishing phases, idle moments included.
        "publish_datagrams": publish_datagrams,
        "baseline_publish_datagrams": base.publish_datagrams,
        // Anti-entropy during the publishing phase, all nodes: sessions started, and
        // descriptors and records they stored before gossip brought them.
        "publish_sync_rounds": rounds_after - rounds_before,
        "publish_sync_entries": entries_after - entries_before,
        // CPU seconds per second while the formed mesh is idle (the warm-up), against the
        // baseline's on the same graph: the share of the cores left to the publishes.
        "idle_cpu_per_s": (idle_cpu_per_s * 100.0).round() / 100.0,
        "baseline_idle_cpu_per_s": (base.idle_cpu_per_s * 100.0).round() / 100.0,
        // UDP datagrams per second in the same periods: every QUIC packet of either mesh.
        "idle_datagrams_per_s": idle_datagrams_per_s.round(),
        "idle_sync_rounds_per_s": round1(idle_rounds),
        "idle_connections_opened_per_s": round1(idle_opened),
        // Connections the nodes' swarms hold beyond one per connected pair (`connections`).
        "extra_connections": (open_connections - connections as f64).round(),
        "duplicate_connections_closed": idle_counts[3],
        "baseline_idle_datagrams_per_s": base.idle_datagrams_per_s.round(),
        "peak_rss_mib": mesh_peak_rss_mib.round(),
    });
    let mut out = out;
    if let Some(checked) = &checked {
        let c = Percentiles::of(&checked.samples).unwrap_or_default();
        // The same baseline checking what every node must check before it forwards (see
        // `Verdict::Check`) and scoring its peers as a node does: what meshnode adds beyond
        // the work any such node does.
        let fields = serde_json::json!({
            "checked_baseline_p50_ms": round1(c.p50),
            "checked_baseline_p99_ms": round1(c.p99),
            "checked_baseline_max_ms": round1(c.max),
            "ratio_p99_vs_checked": ratio(c.p99),
            "checked_baseline_converged": checked.converged && checked.samples.len() == expected,
            "checked_baseline_publish_cpu_s": round1(checked.publish_cpu_s),
            "checked_baseline_idle_cpu_per_s": (checked.idle_cpu_per_s * 100.0).round() / 100.0,
        });
        if let (Some(out), Some(fields)) = (out.as_object_mut(), fields.as_object()) {
            out.extend(fields.clone());
        }
    }
    if args.json {
        println!("{out}");
    } else {
        println!(
            "{} nodes, {} publishes: meshnode p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
             bare gossipsub p50 {:.1} ms p99 {:.1} ms; ratio p99 {}; {} gossip bytes/node",
            args.nodes,
            args.publishes,
            m.p50,
            m.p99,
            m.max,
            b.p50,
            b.p99,
            out["ratio_p99"],
            out["bytes_per_node"]
        );
    }
    Ok(())
}

/// The graph a baseline runs on and who publishes, as the meshnode run formed and drew them.
struct Graph<'a> {
    nodes: usize,
    edges: &'a BTreeSet<(usize, usize)>,
    /// The publishing node of each publish.
    publishers: &'a [usize],
}

/// What one baseline run measured.
struct Baseline {
    /// Receipt latencies, ms, every publish and node.
    samples: Vec<f64>,
    /// Every publish reached every node in time.
    converged: bool,
    idle_cpu_per_s: f64,
    idle_datagrams_per_s: f64,
    publish_cpu_s: f64,
    publish_datagrams: u64,
}

/// Runs bare gossipsub swarms on `graph` answering validation with `verdict` (scoring their
/// peers as a node does for [`Verdict::Check`]): a warm-up, then `payloads[p]` from
/// `graph.publishers[p]`, one at a time, each timed until every swarm accepted it.
async fn baseline(
    args: &Args,
    tuning: &NetTuning,
    graph: &Graph<'_>,
    payloads: &[Vec<u8>],
    verdict: Verdict,
    warmup: Duration,
) -> anyhow::Result<Baseline> {
    let (tx, mut rx) = mpsc::channel::<Received>(1 << 16);
    let scored = matches!(verdict, Verdict::Check);
    let mut swarms = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..graph.nodes {
        let addr = quic_addr(free_udp_port()?);
        let secret = identity_secret(args.seed ^ 0xba5e, &format!("n{i}"));
        let swarm = BareSwarm::spawn(
            i,
            secret,
            addr.clone(),
            tuning,
            verdict,
            scored,
            Some(tx.clone()),
        )?;
        addrs.push(format!("{addr}/p2p/{}", swarm.peer_id));
        swarms.push(swarm);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for &(a, b) in graph.edges {
        swarms[b].dial(addrs[a].parse()?).await;
    }
    let mut degree = vec![0usize; graph.nodes];
    for &(a, b) in graph.edges {
        degree[a] += 1;
        degree[b] += 1;
    }
    let _ = wait_until(Duration::from_secs(60), NODE_POLL, || async {
        for (i, s) in swarms.iter().enumerate() {
            if s.peers().await.len() < degree[i] {
                return false;
            }
        }
        true
    })
    .await;
    let (idle_cpu_per_s, idle_datagrams_per_s) = idle_cost(warmup).await;
    let mut samples = Vec::new();
    let mut converged = true;
    let publish_cpu = cpu_seconds();
    let publish_datagrams = udp_datagrams_sent();
    for (payload, &from) in payloads.iter().zip(graph.publishers) {
        let tag = tag_of(payload);
        let origin = Instant::now();
        swarms[from]
            .publish(payload.clone())
            .await
            .map_err(|e| anyhow::anyhow!("baseline publish: {e}"))?;
        let mut got = BTreeSet::new();
        let deadline = origin + Duration::from_millis(args.timeout_ms);
        while got.len() < graph.nodes - 1 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) if r.tag == tag && got.insert(r.node) => {
                    samples.push(r.at.saturating_duration_since(origin).as_secs_f64() * 1000.0);
                }
                Ok(Some(_)) => {}
                _ => {
                    converged = false;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Baseline {
        samples,
        converged,
        idle_cpu_per_s,
        idle_datagrams_per_s,
        publish_cpu_s: cpu_seconds() - publish_cpu,
        publish_datagrams: udp_datagrams_sent().saturating_sub(publish_datagrams),
    })
}

/// CPU seconds per second and UDP datagrams sent per second over `warmup`, while this
/// process's mesh is idle.
async fn idle_cost(warmup: Duration) -> (f64, f64) {
    let cpu = cpu_seconds();
    let datagrams = udp_datagrams_sent();
    tokio::time::sleep(warmup).await;
    let seconds = warmup.as_secs_f64();
    (
        (cpu_seconds() - cpu) / seconds,
        udp_datagrams_sent().saturating_sub(datagrams) as f64 / seconds,
    )
}

/// Anti-entropy sessions started, and entries they stored.
const SYNC_METRICS: [&str; 2] = ["meshnode_sync_rounds_total", "meshnode_sync_entries_total"];
/// Counted over the warm-up: anti-entropy rounds and connections opened; the connections
/// open at its end; second connections closed.
const IDLE_METRICS: [&str; 4] = [
    "meshnode_sync_rounds_total",
    "meshnode_connections_opened_total",
    "meshnode_connections",
    "meshnode_connections_duplicate_closed_total",
];

/// The sums over `nodes` of the metrics `names`, in their order (0 for a node that does not
/// export one).
async fn metric_totals<const N: usize>(nodes: &[RunningNode], names: [&str; N]) -> [f64; N] {
    let mut totals = [0.0; N];
    for n in nodes {
        let text = n.handle.metrics().await.unwrap_or_default();
        for (total, name) in totals.iter_mut().zip(names) {
            *total += metric(&text, name).unwrap_or(0.0);
        }
    }
    totals
}

/// How the connection count settled.
struct Settled {
    /// Time until it had not changed for the quiet period, ms.
    ms: u128,
    /// When it last changed: the mesh's formation ended then.
    last_change: Instant,
    /// Highest sum of per-node peer counts seen (twice the connections).
    peak: usize,
}

/// Waits until the total number of connections stays the same for `quiet` (at most
/// `SETTLE_LIMIT`). Shows the connections every `REPORT_EVERY` (on stderr, with the time
/// since `since`).
async fn settle(nodes: &[RunningNode], quiet: Duration, since: Instant) -> Settled {
    const SETTLE_LIMIT: Duration = Duration::from_secs(300);
    const REPORT_EVERY: Duration = Duration::from_secs(10);
    let start = Instant::now();
    let mut last = usize::MAX;
    let mut peak = 0;
    let mut stable_since = Instant::now();
    let mut next_report = start;
    while start.elapsed() < SETTLE_LIMIT {
        let counts = peer_counts(nodes).await;
        let total: usize = counts.iter().sum();
        if Instant::now() >= next_report {
            next_report += REPORT_EVERY;
            // The policy's marks: nodes below dial, nodes above close unused connections.
            let policy = mesh_protocol::peers::PolicyConfig::default();
            let (low, high) = (policy.target_peers, policy.peers_high);
            progress(
                since,
                format_args!(
                    "{} connections; {} nodes with fewer than {low} peers, {} with more than \
                     {high}, at most {}",
                    total / 2,
                    counts.iter().filter(|&&c| c < low).count(),
                    counts.iter().filter(|&&c| c > high).count(),
                    counts.iter().max().unwrap_or(&0)
                ),
            );
        }
        peak = peak.max(total);
        if total != last {
            last = total;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Settled {
        ms: start.elapsed().as_millis(),
        last_change: stable_since,
        peak,
    }
}

/// Sum over the nodes of their connected peers.
async fn total_peers(nodes: &[RunningNode]) -> usize {
    peer_counts(nodes).await.iter().sum()
}

/// Connected peers of each node, asked of all nodes at once: asked one after the other, a
/// thousand busy actors took tens of seconds to answer one round, and the benchmark measured
/// its own polling.
async fn peer_counts(nodes: &[RunningNode]) -> Vec<usize> {
    futures::future::join_all(
        nodes
            .iter()
            .map(|n| async { n.handle.status().await.map(|s| s.peers).unwrap_or(0) }),
    )
    .await
}

/// One progress line on stderr (stdout carries only the result).
fn progress(since: Instant, what: std::fmt::Arguments<'_>) {
    eprintln!("[{:>7.1} s] {what}", since.elapsed().as_secs_f64());
}

/// Gossip bytes this node published so far.
async fn bytes_out(node: &RunningNode) -> u64 {
    let text = node.handle.metrics().await.unwrap_or_default();
    metric(&text, "meshnode_gossip_bytes_out_total").unwrap_or(0.0) as u64
}

/// How often checks that ask every node (or swarm) are repeated: each asks up to a thousand
/// actors, and the benchmark must not measure itself.
const NODE_POLL: Duration = Duration::from_millis(250);

/// Polls `check` every `every` until it holds or `timeout` passes.
async fn wait_until<F, Fut>(timeout: Duration, every: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(every).await;
    }
}
