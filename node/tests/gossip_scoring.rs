//! Gossipsub peer scoring in a real (in-process) mesh: a peer that gossips messages our
//! validation rejects ends with a negative score, below the graylist threshold, while honest
//! gossip between the other nodes still flows.

mod common;

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, gossipsub};
use mesh_node::views::{PeerView, PublishRequest};
use mesh_node::{NetTuning, NodeEvent, NodeHandle};
use mesh_protocol::descriptor::{ColumnSchema, ContentDigest, Policy, Sla, Status};
use mesh_protocol::wire::{CATALOG_TOPIC, GossipMessage};
use mesh_protocol::{Identity, ProductDescriptor, Signed};
use tokio::sync::mpsc;
use tokio::time::Instant;

use common::start;

/// Longest wait for any one step.
const STEP: Duration = Duration::from_secs(20);
/// Graylist threshold the node configures (`net::GRAYLIST_THRESHOLD`).
const GRAYLIST: f64 = -80.0;

/// Polls `check` until it yields a value or `STEP` passes.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn listen_addr(node: &NodeHandle) -> String {
    wait_for("a listen address", || async {
        node.status().await.ok()?.listen_addrs.into_iter().next()
    })
    .await
}

async fn peer(node: &NodeHandle, peer_id: &str) -> Option<PeerView> {
    node.peers()
        .await
        .ok()?
        .into_iter()
        .find(|p| p.peer_id == peer_id)
}

/// A descriptor signed by `signer` that claims `owner`'s key: every node rejects it
/// (`not_owner`) and must not forward it.
fn forged(signer: &Identity, owner: &Identity, n: u64) -> Vec<u8> {
    let descriptor = ProductDescriptor {
        owner: owner.public_key(),
        domain: "sales".into(),
        name: format!("forged-{n}"),
        version: 1,
        title: "forged".into(),
        description: String::new(),
        tags: Vec::new(),
        schema: vec![ColumnSchema {
            name: "id".into(),
            data_type: "Int64".into(),
            nullable: false,
        }],
        rows: 1,
        bytes: 1,
        digest: ContentDigest([0; 32]),
        published_at_ms: 1,
        sla: Sla::default(),
        policy: Policy::default(),
        lineage: Vec::new(),
        data_addr: None,
        status: Status::Active,
        stewardship: Default::default(),
    };
    GossipMessage::Descriptor(Signed::sign(signer, &descriptor)).to_bytes()
}

/// A bare gossipsub peer that publishes what it is given and never validates anything.
async fn attacker(
    secret: [u8; 32],
    dial: Multiaddr,
    mut garbage: mpsc::Receiver<Vec<u8>>,
    published: mpsc::Sender<usize>,
) {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(secret).unwrap();
    let behaviour: gossipsub::Behaviour = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        mesh_node::gossipsub_config(&NetTuning::default()).unwrap(),
    )
    .unwrap();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let topic = gossipsub::IdentTopic::new(CATALOG_TOPIC);
    swarm.behaviour_mut().subscribe(&topic).unwrap();
    swarm.dial(dial).unwrap();
    let mut pending: Option<Vec<u8>> = None;
    let mut sent = 0;
    let mut retry = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            message = garbage.recv(), if pending.is_none() => match message {
                Some(m) => pending = Some(m),
                None => return,
            },
            _ = retry.tick() => {
                // Publishing fails until the victim's subscription is known: retry.
                if let Some(m) = pending.take() {
                    match swarm.behaviour_mut().publish(topic.clone(), m.clone()) {
                        Ok(_) => {
                            sent += 1;
                            let _ = published.send(sent).await;
                        }
                        Err(_) => pending = Some(m),
                    }
                }
            }
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(gossipsub::Event::Message { .. }) = event {
                    // Never validated: the honest messages it receives stay unforwarded.
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gossiping_rejected_messages_is_scored_down_while_honest_gossip_flows() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_task) = start(&dir.path().join("a"), "sales", [1; 32], vec![], |_| {});
    let a_addr = listen_addr(&a).await;
    let (b, b_task) = start(
        &dir.path().join("b"),
        "customer",
        [2; 32],
        vec![a_addr],
        |_| {},
    );
    let b_addr: Multiaddr = listen_addr(&b).await.parse().unwrap();
    let a_id = a.status().await.unwrap().peer_id;
    wait_for("a and b connected", || async { peer(&b, &a_id).await }).await;

    // The attacker connects to b and gossips descriptors that claim a's key.
    let mallory = Identity::from_secret_bytes([66; 32]);
    let mallory_peer = libp2p::identity::Keypair::ed25519_from_bytes([66; 32])
        .unwrap()
        .public()
        .to_peer_id()
        .to_string();
    let (garbage_tx, garbage_rx) = mpsc::channel(16);
    let (published_tx, mut published_rx) = mpsc::channel(16);
    let attack = tokio::spawn(attacker([66; 32], b_addr, garbage_rx, published_tx));
    let victim = Identity::from_secret_bytes([1; 32]);
    for n in 0..6 {
        garbage_tx.send(forged(&mallory, &victim, n)).await.unwrap();
        published_rx.recv().await.expect("the attacker published");
    }

    // b rejects them, counts them, and scores the attacker down past the graylist.
    let score = wait_for(
        "the attacker's score to fall below the graylist",
        || async {
            let score = peer(&b, &mallory_peer).await?.gossip_score?;
            (score < GRAYLIST).then_some(score)
        },
    )
    .await;
    assert!(score < 0.0);
    let rejected = b.status().await.unwrap().rejected;
    assert!(
        rejected.get("not_owner").copied().unwrap_or(0) >= 4,
        "{rejected:?}"
    );
    // a never saw them: b did not forward what it rejected (and a holds none).
    assert!(
        a.catalog()
            .await
            .unwrap()
            .iter()
            .all(|p| !p.product.contains("forged"))
    );
    // The honest peer is not penalised.
    let a_score = peer(&b, &a_id).await.unwrap().gossip_score.unwrap();
    assert!(a_score >= 0.0, "honest peer scored {a_score}");

    // Honest gossip still flows: a publishes, b gets it by gossip.
    let mut events = b.events();
    let csv = dir.path().join("orders.csv");
    std::fs::write(&csv, "id,amount\n1,2.5\n2,3.5\n").unwrap();
    a.publish(PublishRequest {
        name: "orders".into(),
        from: csv.display().to_string(),
        ..PublishRequest::default()
    })
    .await
    .expect("publish");
    let via = tokio::time::timeout(STEP, async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::CatalogUpdated { id, via, .. }) if id.name == "orders" => {
                    return via;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("b's events ended: {e}"),
            }
        }
    })
    .await
    .expect("b receives a's product");
    assert_eq!(via, "gossip");

    attack.abort();
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    let _ = a_task.await;
    let _ = b_task.await;
}
