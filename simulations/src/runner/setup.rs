//! Setup and shutdown: emulator slots, starting nodes and the attacker, bootstrap, waiting for
//! peers.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use libp2p::Multiaddr;
use mesh_node::NetTuning;
use mesh_node::store::StoreOptions;
use mesh_protocol::Identity;
use rand::seq::IndexedRandom;
use tokio::time::Instant;

use super::{Attacker, Runner, Slot};
use crate::bare::{BareSwarm, Verdict};
use crate::cluster::{self, NodeSpec, RunningNode, free_udp_port, identity_secret, quic_addr};
use crate::topology::Action;

impl Runner<'_> {
    /// Starts the initial nodes, each bootstrapped to earlier ones, and the attacker, then
    /// waits until every node has a peer and for the warmup.
    pub(super) async fn setup(&mut self) -> anyhow::Result<()> {
        let settings = &self.topology.settings;
        let degree = settings.bootstrap_degree;
        for (domain, cloud) in self.topology.initial_nodes() {
            let earlier: Vec<usize> = (0..self.slots.len()).collect();
            let picks: Vec<usize> = earlier
                .sample(&mut self.rng, degree.min(earlier.len()))
                .copied()
                .collect();
            self.add_slot(&domain, cloud, &picks).await?;
        }
        for i in 0..self.slots.len() {
            self.start_slot(i).await?;
        }
        self.start_attacker().await?;
        let formed = self
            .wait_until(Duration::from_millis(settings.formation_timeout_ms), |r| {
                Box::pin(async move {
                    for s in &r.slots {
                        if let Some(n) = &s.running
                            && n.handle.status().await.map(|s| s.peers).unwrap_or(0) == 0
                        {
                            return false;
                        }
                    }
                    true
                })
            })
            .await;
        if !formed {
            tracing::warn!("some node still has no peer; starting the timeline anyway");
        }
        tokio::time::sleep(Duration::from_millis(settings.warmup_ms)).await;
        Ok(())
    }

    pub(super) async fn add_slot(
        &mut self,
        domain: &str,
        cloud: usize,
        bootstrap: &[usize],
    ) -> anyhow::Result<usize> {
        let (emu, relay_addr) = self.emulator.add_node(cloud).await?;
        let (data_emu, data_announce) = if self.data_domains.contains(domain) {
            let (i, addr) = self.emulator.add_node(cloud).await?;
            (Some(i), Some(addr))
        } else {
            (None, None)
        };
        let secret = identity_secret(self.seed, domain);
        let identity = Identity::from_secret_bytes(secret);
        let peer = cluster::peer_id(&identity);
        let relay_ma = quic_addr(relay_addr.port());
        let settings = &self.topology.settings;
        let spec = NodeSpec {
            index: self.slots.len(),
            domain: domain.to_owned(),
            secret,
            data_dir: self.scratch.path().join(domain),
            listen: quic_addr(0),
            bootstrap: bootstrap
                .iter()
                .map(|&j| self.slots[j].relay.clone())
                .collect(),
            sync_interval_secs: settings.sync_interval_secs,
            tuning: NetTuning {
                heartbeat: Duration::from_millis(settings.heartbeat_ms),
                announce_addrs: vec![relay_ma.clone()],
                redial_max: Duration::from_millis(settings.redial_max_ms),
                idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
                ..NetTuning::default()
            },
            data_announce,
            dht_server: cluster::is_dht_server(
                self.slots.len(),
                self.initial_nodes,
                settings.dht_servers,
            ),
            charter: Some(self.charter.clone()),
            votes: Vec::new(),
            store: StoreOptions::default(),
        };
        self.slots.push(Slot {
            spec,
            cloud,
            emu,
            data_emu,
            relay: format!("{relay_ma}/p2p/{peer}"),
            key: identity.public_key(),
            running: None,
            started: Instant::now(),
            removed: false,
        });
        self.by_domain
            .insert(domain.to_owned(), self.slots.len() - 1);
        Ok(self.slots.len() - 1)
    }

    pub(super) async fn start_slot(&mut self, i: usize) -> anyhow::Result<()> {
        let port = free_udp_port()?;
        let slot = &mut self.slots[i];
        slot.spec.listen = quic_addr(port);
        self.emulator
            .set_real_addr(slot.emu, SocketAddr::from(([127, 0, 0, 1], port)));
        let node = slot.spec.start(self.observations.clone()).await?;
        if let (Some(emu), Some(real)) = (slot.data_emu, node.data_addr()) {
            self.emulator.set_real_addr(emu, real);
        }
        slot.running = Some(node);
        slot.started = Instant::now();
        Ok(())
    }

    async fn start_attacker(&mut self) -> anyhow::Result<()> {
        let vias: BTreeSet<&str> = self
            .topology
            .events
            .iter()
            .filter_map(|e| match &e.action {
                Action::InjectForgery { via, .. } => Some(via.as_str()),
                _ => None,
            })
            .collect();
        let Some(first) = vias.first() else {
            return Ok(());
        };
        let Some(&first) = self.by_domain.get(*first) else {
            anyhow::bail!("the attacker's `via` domain must be an initial domain");
        };
        let (emu, _) = self.emulator.add_node(self.slots[first].cloud).await?;
        let port = free_udp_port()?;
        self.emulator
            .set_real_addr(emu, SocketAddr::from(([127, 0, 0, 1], port)));
        let secret = identity_secret(self.seed, "attacker");
        let tuning = NetTuning {
            heartbeat: Duration::from_millis(self.topology.settings.heartbeat_ms),
            ..NetTuning::default()
        };
        let swarm = BareSwarm::spawn(
            usize::MAX,
            secret,
            quic_addr(port),
            &tuning,
            Verdict::Ignore,
            false,
            None,
        )?;
        for via in vias {
            if let Some(&j) = self.by_domain.get(via) {
                swarm.dial(self.slots[j].relay.parse::<Multiaddr>()?).await;
            }
        }
        self.attacker = Some(Attacker {
            swarm,
            identity: Identity::from_secret_bytes(secret),
        });
        Ok(())
    }

    pub(super) async fn shutdown(&mut self) {
        self.attacker = None;
        let nodes: Vec<RunningNode> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.running.take())
            .collect();
        futures::future::join_all(nodes.into_iter().map(|n| n.stop())).await;
        self.emulator.shutdown();
    }
}
