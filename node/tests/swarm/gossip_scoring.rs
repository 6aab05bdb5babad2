//! Gossipsub peer scoring in a real (in-process) mesh: a peer that gossips messages our
//! validation rejects ends with a negative score, below the graylist threshold, while honest
//! gossip between the other nodes still flows.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, gossipsub};
use mesh_node::views::{InviteRequest, PeerView, PublishRequest};
use mesh_node::{NetTuning, NodeEvent, NodeHandle};
use mesh_protocol::descriptor::{ColumnSchema, ContentDigest, Policy, Sla, Status};
use mesh_protocol::governance::{MeshId, Ticket};
use mesh_protocol::wire::{GossipMessage, catalog_topic};
use mesh_protocol::{Identity, ProductDescriptor, Signed};
use tokio::sync::mpsc;

use crate::common::{STEP, charter, peer_id_of, start, wait_for};

/// Graylist threshold the node configures (`net::GRAYLIST_THRESHOLD`).
const GRAYLIST: f64 = -80.0;

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
    descriptor(signer, owner, "sales", &format!("forged-{n}"))
}

/// A gossip message of a descriptor `domain/name` owned by `owner`, signed by `signer`.
fn descriptor(signer: &Identity, owner: &Identity, domain: &str, name: &str) -> Vec<u8> {
    let descriptor = ProductDescriptor {
        owner: owner.public_key(),
        domain: domain.into(),
        name: name.into(),
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

/// What the bare peer reports.
#[derive(Debug, PartialEq)]
enum Report {
    /// It published its n-th message.
    Published(usize),
    /// Its connection to the victim ended (or never came up).
    Closed,
    /// A publish after the connection ended failed, and why.
    PublishFailed(String),
}

/// A bare gossipsub swarm with the key `secret`, speaking the node's gossip (signing every
/// message as its author only if `author_signatures`, which the node's gossip does not do).
fn bare_swarm(secret: [u8; 32], author_signatures: bool) -> libp2p::Swarm<gossipsub::Behaviour> {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(secret).unwrap();
    let tuning = NetTuning {
        author_signatures,
        ..NetTuning::default()
    };
    let behaviour: gossipsub::Behaviour = gossipsub::Behaviour::new(
        mesh_node::gossipsub_authenticity(&tuning, &keypair),
        mesh_node::gossipsub_config(&tuning).unwrap(),
    )
    .unwrap();
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// A bare gossipsub peer on `topic` that publishes what it is given and never validates
/// anything. It speaks the node's gossip, signing every message as its author only if
/// `author_signatures` (which the node's gossip does not do).
async fn attacker(
    secret: [u8; 32],
    dial: Multiaddr,
    topic: String,
    author_signatures: bool,
    mut garbage: mpsc::Receiver<Vec<u8>>,
    reports: mpsc::Sender<Report>,
) {
    let mut swarm = bare_swarm(secret, author_signatures);
    let topic = gossipsub::IdentTopic::new(topic);
    swarm.behaviour_mut().subscribe(&topic).unwrap();
    swarm.dial(dial).unwrap();
    let mut pending: Option<Vec<u8>> = None;
    let mut sent = 0;
    let mut closed = false;
    let mut retry = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            message = garbage.recv(), if pending.is_none() => match message {
                Some(m) => pending = Some(m),
                None => return,
            },
            _ = retry.tick() => {
                // Publishing fails until the victim's subscription is known: retry, unless
                // the connection is gone (then say why it fails, once).
                if let Some(m) = pending.take() {
                    match swarm.behaviour_mut().publish(topic.clone(), m.clone()) {
                        Ok(_) => {
                            sent += 1;
                            let _ = reports.send(Report::Published(sent)).await;
                        }
                        Err(e) if closed => {
                            let _ = reports.send(Report::PublishFailed(e.to_string())).await;
                        }
                        Err(_) => pending = Some(m),
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionClosed { num_established: 0, .. }
                | SwarmEvent::OutgoingConnectionError { .. } => {
                    closed = true;
                    let _ = reports.send(Report::Closed).await;
                }
                // Never validated: the honest messages it receives stay unforwarded.
                _ => {}
            },
        }
    }
}

/// Two members, a (sales, governor) and b (customer), connected; the attacker's key
/// `insider` (if any) is a member too. Returns the nodes and the charter's mesh id.
async fn two_members(
    dir: &std::path::Path,
    insider: Option<[u8; 32]>,
) -> (
    (NodeHandle, tokio::task::JoinHandle<()>),
    (NodeHandle, tokio::task::JoinHandle<()>),
    MeshId,
) {
    let members: Vec<(&str, mesh_protocol::PublicKey)> = insider
        .map(|s| ("mallory", Identity::from_secret_bytes(s).public_key()))
        .into_iter()
        .collect();
    let mesh = charter(&[("sales", [1; 32]), ("customer", [2; 32])], &members);
    let mesh_id = MeshId::of_body(mesh.body());
    let (a, a_task) = start(&dir.join("a"), "sales", [1; 32], &mesh, vec![], |_| {});
    let a_addr = listen_addr(&a).await;
    let (b, b_task) = start(
        &dir.join("b"),
        "customer",
        [2; 32],
        &mesh,
        vec![a_addr],
        |_| {},
    );
    let a_id = a.status().await.unwrap().peer_id;
    wait_for("a and b connected", || async { peer(&b, &a_id).await }).await;
    ((a, a_task), (b, b_task), mesh_id)
}

/// Whether `node`'s catalog holds `product` (`domain/name`).
async fn holds(node: &NodeHandle, product: &str) -> bool {
    node.catalog()
        .await
        .unwrap()
        .iter()
        .any(|p| p.product == product)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gossiping_rejected_messages_is_scored_down_while_honest_gossip_flows() {
    let dir = tempfile::tempdir().unwrap();
    // The attacker is a member of the mesh (an insider): the gate lets it in, the
    // validation and the scoring are what stop it.
    let ((a, a_task), (b, b_task), mesh_id) = two_members(dir.path(), Some([66; 32])).await;
    let b_addr: Multiaddr = listen_addr(&b).await.parse().unwrap();
    let a_id = a.status().await.unwrap().peer_id;

    // The attacker connects to b and gossips descriptors that claim a's key.
    let mallory = Identity::from_secret_bytes([66; 32]);
    let mallory_peer = peer_id_of([66; 32]).to_string();
    let (garbage_tx, garbage_rx) = mpsc::channel(16);
    let (reports_tx, mut reports) = mpsc::channel(16);
    let attack = tokio::spawn(attacker(
        [66; 32],
        b_addr,
        catalog_topic(&mesh_id),
        false,
        garbage_rx,
        reports_tx,
    ));
    let victim = Identity::from_secret_bytes([1; 32]);
    for n in 0..6 {
        garbage_tx.send(forged(&mallory, &victim, n)).await.unwrap();
        assert_eq!(
            reports.recv().await,
            Some(Report::Published(n as usize + 1)),
            "the insider publishes"
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_is_refused_at_the_connection_before_any_gossip() {
    let dir = tempfile::tempdir().unwrap();
    let ((a, a_task), (b, b_task), mesh_id) = two_members(dir.path(), None).await;
    let b_addr: Multiaddr = listen_addr(&b).await.parse().unwrap();
    let before = b.status().await.unwrap();
    assert_eq!(before.refused_non_members, 0);

    // An outsider with a valid key, the mesh's topic and b's address dials b.
    let outsider = [67; 32];
    let (garbage_tx, garbage_rx) = mpsc::channel(16);
    let (reports_tx, mut reports) = mpsc::channel(16);
    let attack = tokio::spawn(attacker(
        outsider,
        b_addr,
        catalog_topic(&mesh_id),
        false,
        garbage_rx,
        reports_tx,
    ));
    // b's gate refuses the connection and counts it.
    let refused = wait_for("b to refuse the outsider", || async {
        let n = b.status().await.ok()?.refused_non_members;
        (n >= 1).then_some(n)
    })
    .await;
    assert!(refused >= 1);
    let report = tokio::time::timeout(STEP, reports.recv()).await;
    assert_eq!(
        report.expect("the outsider learns its connection ended"),
        Some(Report::Closed)
    );
    // No gossip can go out: no member ever announced a subscription to it.
    let victim = Identity::from_secret_bytes([1; 32]);
    let forger = Identity::from_secret_bytes(outsider);
    garbage_tx.send(forged(&forger, &victim, 0)).await.unwrap();
    match tokio::time::timeout(STEP, reports.recv()).await {
        Ok(Some(Report::PublishFailed(why))) => {
            assert!(why.contains("peers") || why.contains("Peers"), "{why}")
        }
        other => panic!("the outsider's publish should fail, got {other:?}"),
    }
    // b never held a session with it: no peer entry, nothing received, nothing rejected.
    assert!(peer(&b, &peer_id_of(outsider).to_string()).await.is_none());
    let after = b.status().await.unwrap();
    assert_eq!(after.rejected, before.rejected, "no message got through");
    assert!(
        a.catalog()
            .await
            .unwrap()
            .iter()
            .chain(b.catalog().await.unwrap().iter())
            .all(|p| !p.product.contains("forged"))
    );

    attack.abort();
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    let _ = a_task.await;
    let _ = b_task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_carrying_an_author_signature_is_invalid_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let ((a, a_task), (b, b_task), mesh_id) = two_members(dir.path(), Some([66; 32])).await;
    let b_addr: Multiaddr = listen_addr(&b).await.parse().unwrap();
    let mallory = Identity::from_secret_bytes([66; 32]);
    let mallory_peer = peer_id_of([66; 32]).to_string();

    // The control: the member's own well-formed descriptor, gossiped as the node gossips
    // (no author signature), is stored.
    let (tx, rx) = mpsc::channel(16);
    let (reports_tx, mut reports) = mpsc::channel(16);
    let honest = tokio::spawn(attacker(
        [66; 32],
        b_addr.clone(),
        catalog_topic(&mesh_id),
        false,
        rx,
        reports_tx,
    ));
    tx.send(descriptor(&mallory, &mallory, "mallory", "plain"))
        .await
        .unwrap();
    assert_eq!(reports.recv().await, Some(Report::Published(1)));
    wait_for("b to store mallory/plain", || async {
        holds(&b, "mallory/plain").await.then_some(())
    })
    .await;
    honest.abort();
    let _ = honest.await;
    // Its connection gone first: gossipsub tells a peer its subscriptions on its first
    // connection only, so a second swarm of the same key that connected while the first
    // one's connection lingered would never learn them.
    wait_for("b to drop the first connection", || async {
        peer(&b, &mallory_peer).await.is_none().then_some(())
    })
    .await;

    // The same member, the same kind of descriptor, but each message signed by its author:
    // gossipsub refuses it before validation, and the sender's score pays for each one.
    let (tx, rx) = mpsc::channel(16);
    let (reports_tx, mut reports) = mpsc::channel(16);
    let signing = tokio::spawn(attacker(
        [66; 32],
        b_addr,
        catalog_topic(&mesh_id),
        true,
        rx,
        reports_tx,
    ));
    for n in 0..4 {
        tx.send(descriptor(
            &mallory,
            &mallory,
            "mallory",
            &format!("signed-{n}"),
        ))
        .await
        .unwrap();
        let report = tokio::time::timeout(STEP, reports.recv()).await;
        assert_eq!(
            report.expect("the member publishes"),
            Some(Report::Published(n + 1))
        );
    }
    let score = wait_for("the signing peer's score to fall below zero", || async {
        let score = peer(&b, &mallory_peer).await?.gossip_score?;
        (score < 0.0).then_some(score)
    })
    .await;
    assert!(score < 0.0);
    for n in 0..4 {
        let product = format!("mallory/signed-{n}");
        assert!(!holds(&b, &product).await, "b stored {product}");
        assert!(!holds(&a, &product).await, "a got {product}");
    }

    signing.abort();
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    let _ = a_task.await;
    let _ = b_task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_key_that_subscribes_to_gossip_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let ((a, a_task), (b, b_task), mesh_id) = two_members(dir.path(), None).await;
    let a_addr: Multiaddr = listen_addr(&a).await.parse().unwrap();
    // The gate lets an open invitation's key in, for the join protocol.
    let ticket = a
        .invite(InviteRequest {
            domain: "newcomer".into(),
            ttl_secs: None,
            reuse_name: false,
        })
        .await
        .unwrap();
    let ticket = Ticket::decode(&ticket.ticket).unwrap();

    // Its holder speaks gossip instead: it subscribes to the catalog topic.
    let (_garbage, garbage_rx) = mpsc::channel(1);
    let (reports_tx, mut reports) = mpsc::channel(16);
    let intruder = tokio::spawn(attacker(
        ticket.secret,
        a_addr,
        catalog_topic(&mesh_id),
        false,
        garbage_rx,
        reports_tx,
    ));
    let report = tokio::time::timeout(STEP, reports.recv()).await;
    assert_eq!(
        report.expect("the node closes the connection"),
        Some(Report::Closed)
    );
    // The intruder sees the close before the node's actor has handled it: wait for that.
    let invited = peer_id_of(ticket.secret).to_string();
    wait_for("the node to drop the invited key's connection", || async {
        peer(&a, &invited).await.is_none().then_some(())
    })
    .await;

    intruder.abort();
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    let _ = a_task.await;
    let _ = b_task.await;
}

/// A member that subscribes to the catalog topic, connects, then subscribes to `topics`
/// more, one message each (all at once would make one message past the size limit), and
/// then gossips one undecodable message on the catalog topic: the node reads the stream in
/// order, so once it has counted that message it has handled every subscription before it.
async fn subscriber(secret: [u8; 32], dial: Multiaddr, catalog: String, topics: usize) {
    let mut swarm = bare_swarm(secret, false);
    let catalog = gossipsub::IdentTopic::new(catalog);
    swarm.behaviour_mut().subscribe(&catalog).unwrap();
    swarm.dial(dial).unwrap();
    let mut subscribed = false;
    let mut marked = false;
    let mut retry = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            event = swarm.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { .. } = event {
                    for n in 0..topics {
                        swarm
                            .behaviour_mut()
                            .subscribe(&gossipsub::IdentTopic::new(format!("t{n}")))
                            .unwrap();
                    }
                    subscribed = true;
                }
            }
            // Publishing fails until the node's subscription is known.
            _ = retry.tick(), if subscribed && !marked => {
                marked = swarm
                    .behaviour_mut()
                    .publish(catalog.clone(), b"not an envelope".to_vec())
                    .is_ok();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_subscribing_to_thousands_of_topics_leaves_the_node_one() {
    let dir = tempfile::tempdir().unwrap();
    let ((a, a_task), (b, b_task), mesh_id) = two_members(dir.path(), Some([68; 32])).await;
    let b_addr: Multiaddr = listen_addr(&b).await.parse().unwrap();
    let a_id = a.status().await.unwrap().peer_id;
    // The honest peer's subscription is kept: the catalog topic.
    let honest = wait_for("b to know a's subscription", || async {
        let topics = peer(&b, &a_id).await?.gossip_topics;
        (topics > 0).then_some(topics)
    })
    .await;
    assert_eq!(honest, 1);

    // A member subscribes to 5,000 topics besides the catalog's: gossipsub would keep
    // every one for the connection's life.
    let mallory = peer_id_of([68; 32]).to_string();
    let flood = tokio::spawn(subscriber([68; 32], b_addr, catalog_topic(&mesh_id), 5_000));
    wait_for("b to read past the member's subscriptions", || async {
        let rejected = b.status().await.ok()?.rejected;
        (rejected.get("malformed").copied().unwrap_or(0) > 0).then_some(())
    })
    .await;
    let kept = peer(&b, &mallory).await.expect("connected").gossip_topics;
    assert_eq!(kept, 1, "only the catalog topic is kept");

    flood.abort();
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    let _ = a_task.await;
    let _ = b_task.await;
}

/// A member that gossips `messages` as fast as gossipsub takes them, once it can.
async fn flooder(secret: [u8; 32], dial: Multiaddr, topic: String, messages: Vec<Vec<u8>>) {
    let mut swarm = bare_swarm(secret, false);
    let topic = gossipsub::IdentTopic::new(topic);
    swarm.behaviour_mut().subscribe(&topic).unwrap();
    swarm.dial(dial).unwrap();
    let mut messages = messages.into_iter().peekable();
    let mut retry = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = retry.tick() => {
                // Until the victim's subscription is known (or its queue has room), publishing
                // fails: try again at the next tick.
                while let Some(m) = messages.peek() {
                    if swarm.behaviour_mut().publish(topic.clone(), m.clone()).is_err() {
                        break;
                    }
                    messages.next();
                }
            }
            _ = swarm.select_next_some() => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_pushing_gossip_that_is_dropped_without_penalty_is_scored_down_past_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let ((a, a_task), (b, b_task), mesh_id) = two_members(dir.path(), Some([70; 32])).await;
    let b_addr: Multiaddr = listen_addr(&b).await.parse().unwrap();
    // Descriptors signed by keys the member makes up: no member signed them, so each is
    // dropped without a penalty (an honest relay can forward what a removed member signed)
    // and costs a decode; gossipsub keeps each for a minute.
    let messages: Vec<Vec<u8>> = (0..1_500u32)
        .map(|n| {
            let mut secret = [0; 32];
            secret[..4].copy_from_slice(&n.to_le_bytes());
            secret[31] = 9;
            let key = Identity::from_secret_bytes(secret);
            descriptor(&key, &key, "nobody", &format!("p{n}"))
        })
        .collect();
    let mallory = peer_id_of([70; 32]).to_string();
    let flood = tokio::spawn(flooder([70; 32], b_addr, catalog_topic(&mesh_id), messages));
    let score = wait_for("the member's score to fall below the graylist", || async {
        let score = peer(&b, &mallory).await?.gossip_score?;
        (score < GRAYLIST).then_some(score)
    })
    .await;
    assert!(score < GRAYLIST);
    // The first ones were only dropped: a whole budget of them.
    let rejected = b.status().await.unwrap().rejected;
    assert!(
        rejected.get("not_member").copied().unwrap_or(0) >= 1_024,
        "{rejected:?}"
    );
    // The honest member is not affected.
    let a_id = a.status().await.unwrap().peer_id;
    let a_score = peer(&b, &a_id).await.unwrap().gossip_score.unwrap();
    assert!(a_score >= 0.0, "honest peer scored {a_score}");

    flood.abort();
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    let _ = a_task.await;
    let _ = b_task.await;
}
