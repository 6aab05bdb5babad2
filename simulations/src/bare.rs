//! Bare libp2p gossipsub swarms over QUIC, with no meshnode logic: the baseline of
//! `bench-gossip`, and the attacker of the simulator's `inject_forgery` event.

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub};
use mesh_node::NetTuning;
use mesh_protocol::catalog;
use mesh_protocol::wire::{CATALOG_TOPIC, GossipMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Capacity of a bare swarm's command channel.
const COMMAND_CAPACITY: usize = 64;

/// A gossip message a bare swarm received and accepted: which node, when, and which message
/// ([`tag_of`] its payload).
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// Node index.
    pub node: usize,
    /// When the swarm task saw it (for [`Verdict::Check`], once it had checked it).
    pub at: Instant,
    /// [`tag_of`] the payload.
    pub tag: u64,
}

/// The tag of a payload in [`Received`]: the first 8 bytes of its gossipsub message id (the
/// node's: BLAKE3 of the payload), big-endian. Free to compute in the swarm, which hashes
/// every message anyway.
pub fn tag_of(payload: &[u8]) -> u64 {
    let hash = blake3::hash(payload);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(tag)
}

/// What to answer gossipsub's validation with.
#[derive(Clone, Copy, Debug)]
pub enum Verdict {
    /// Accept and forward at once (the bare baseline: no check at all).
    Accept,
    /// Check what every node must check before it forwards a catalog message, and nothing
    /// more: decode it and verify a descriptor's envelope (its signature and the descriptor's
    /// own rules, `catalog::verify_descriptor`); accept it if valid, reject it otherwise. No
    /// membership, merge rule, budget or store.
    Check,
    /// Neither forward nor penalise (the attacker ignores honest traffic).
    Ignore,
}

impl Verdict {
    fn on(self, data: &[u8]) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance as A;
        match self {
            Verdict::Accept => A::Accept,
            Verdict::Ignore => A::Ignore,
            Verdict::Check => match GossipMessage::from_bytes(data) {
                Ok(GossipMessage::Descriptor(envelope))
                    if catalog::verify_descriptor(&envelope).is_ok() =>
                {
                    A::Accept
                }
                _ => A::Reject,
            },
        }
    }
}

#[derive(Debug)]
enum Command {
    Dial(Multiaddr),
    Publish {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
}

/// Handle to a bare swarm task. Dropping it stops the task.
#[derive(Debug)]
pub struct BareSwarm {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Commands to the task.
    commands: mpsc::Sender<Command>,
    /// The task.
    task: JoinHandle<()>,
}

impl BareSwarm {
    /// Starts a swarm listening on `listen` with a node's gossipsub configuration and message
    /// authenticity for `tuning` (`mesh_node::gossipsub_config`,
    /// `mesh_node::gossipsub_authenticity`), and with its peer scoring
    /// (`mesh_node::peer_score_params`) if `scored`, subscribed to the catalog topic. Every
    /// message accepted goes to `received`, if given.
    pub fn spawn(
        index: usize,
        secret: [u8; 32],
        listen: Multiaddr,
        tuning: &NetTuning,
        verdict: Verdict,
        scored: bool,
        received: Option<mpsc::Sender<Received>>,
    ) -> anyhow::Result<Self> {
        let keypair = libp2p::identity::Keypair::ed25519_from_bytes(secret)?;
        let peer_id = keypair.public().to_peer_id();
        let config = mesh_node::gossipsub_config(tuning)?;
        let topic = gossipsub::IdentTopic::new(CATALOG_TOPIC);
        let mut behaviour =
            gossipsub::Behaviour::new(mesh_node::gossipsub_authenticity(tuning, &keypair), config)
                .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
        if scored {
            let (params, thresholds) = mesh_node::peer_score_params(&topic);
            behaviour
                .with_peer_score(params, thresholds)
                .map_err(|e| anyhow::anyhow!("gossipsub peer scoring: {e}"))?;
        }
        let idle_timeout = tuning.idle_timeout;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_quic()
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
            .build();
        swarm.behaviour_mut().subscribe(&topic)?;
        swarm.listen_on(listen)?;
        let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
        let task = tokio::spawn(run(index, swarm, topic, verdict, rx, received));
        Ok(Self {
            peer_id,
            commands: tx,
            task,
        })
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.commands.send(Command::Dial(addr)).await;
    }

    /// Publishes on the catalog topic.
    pub async fn publish(&self, data: Vec<u8>) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish { data, reply })
            .await
            .map_err(|_| "swarm stopped".to_owned())?;
        rx.await.map_err(|_| "swarm stopped".to_owned())?
    }

    /// Connected peers.
    pub async fn peers(&self) -> Vec<PeerId> {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Peers { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

impl Drop for BareSwarm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    index: usize,
    mut swarm: Swarm<gossipsub::Behaviour>,
    topic: gossipsub::IdentTopic,
    verdict: Verdict,
    mut commands: mpsc::Receiver<Command>,
    received: Option<mpsc::Sender<Received>>,
) {
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                None => return,
                Some(Command::Dial(addr)) => {
                    if let Err(e) = swarm.dial(addr) {
                        tracing::debug!("bare dial failed: {e}");
                    }
                }
                Some(Command::Publish { data, reply }) => {
                    let r = swarm
                        .behaviour_mut()
                        .publish(topic.clone(), data)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
                Some(Command::Peers { reply }) => {
                    let _ = reply.send(swarm.connected_peers().copied().collect());
                }
            },
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                }) = event
                {
                    let acceptance = verdict.on(&message.data);
                    let at = Instant::now();
                    let accepted = acceptance == gossipsub::MessageAcceptance::Accept;
                    swarm.behaviour_mut().report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        acceptance,
                    );
                    if let Some(out) = received.as_ref().filter(|_| accepted) {
                        let mut tag = [0u8; 8];
                        tag.copy_from_slice(&message_id.0[..8]);
                        let _ = out.try_send(Received { node: index, at, tag: u64::from_be_bytes(tag) });
                    }
                }
            }
        }
    }
}
