//! A hostile mesh peer for end-to-end tests. It joins through `--bootstrap`, learns the
//! catalog like anyone, then, when the file named by `--go` appears, tries to poison it:
//!
//! - gossips a descriptor that claims a victim's product (victim's key as owner, signed by
//!   its own key),
//! - gossips a victim's envelope with its body altered (victim's key, broken signature),
//! - gossips garbage bytes,
//! - reconnects and answers the victim's sync request with a replayed older version.
//!
//! With `--attack deep-type` it instead signs, with its own key, a descriptor whose column
//! type is `List(` nested `--depth` levels deep (3,000 by default: the type string that
//! overflowed the type parser's stack), gossips it as soon as the bootstrap node subscribes
//! to the catalog topic (`deep-gossiped`), then reconnects and answers every sync request
//! with it (`deep-served-by-sync`). `--go` is not needed for that attack.
//!
//! It prints one line per action and exits after `--linger` seconds.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, gossipsub, request_response};
use mesh_protocol::codec;
use mesh_protocol::descriptor::{ColumnSchema, ContentDigest, Policy, Sla, Status};
use mesh_protocol::wire::{CATALOG_TOPIC, GossipMessage, SyncRequest, SyncResponse};
use mesh_protocol::{Identity, ProductDescriptor, Signed};
use mesh_tests::raw::RawCodec;

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<RawCodec>,
}

/// Which attack to run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Forged owner, tampered body, garbage, replayed old version (the default).
    Poison,
    /// A well-signed descriptor with a column type nested `depth` levels deep.
    DeepType,
}

struct Args {
    bootstrap: Multiaddr,
    go: Option<PathBuf>,
    linger: u64,
    attack: Attack,
    depth: usize,
}

fn args() -> Args {
    let mut bootstrap = None;
    let mut go = None;
    let mut linger = 10;
    let mut attack = Attack::Poison;
    let mut depth = 3000;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bootstrap" => bootstrap = it.next().and_then(|s| s.parse().ok()),
            "--go" => go = it.next().map(PathBuf::from),
            "--linger" => linger = it.next().and_then(|s| s.parse().ok()).unwrap_or(10),
            "--attack" => {
                attack = match it.next().as_deref() {
                    Some("poison") => Attack::Poison,
                    Some("deep-type") => Attack::DeepType,
                    other => panic!("--attack poison|deep-type, not {other:?}"),
                }
            }
            "--depth" => depth = it.next().and_then(|s| s.parse().ok()).expect("--depth N"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        attack == Attack::DeepType || go.is_some(),
        "--go FILE is needed for the poison attack"
    );
    Args {
        bootstrap: bootstrap.expect("--bootstrap MULTIADDR"),
        go,
        linger,
        attack,
        depth,
    }
}

/// A descriptor of our own, correctly signed, whose one column has the type
/// `List(List(...Int32...))` nested `depth` levels deep.
fn deep_descriptor(mallory: &Identity, depth: usize) -> Signed<ProductDescriptor> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let descriptor = ProductDescriptor {
        owner: mallory.public_key(),
        domain: "mallory".into(),
        name: "deep".into(),
        version: 1,
        title: "deep".into(),
        description: String::new(),
        tags: Vec::new(),
        schema: vec![ColumnSchema {
            name: "deep".into(),
            data_type: format!("{}Int32{}", "List(".repeat(depth), ")".repeat(depth)),
            nullable: true,
        }],
        rows: 1,
        bytes: 1,
        digest: ContentDigest([0; 32]),
        published_at_ms: now_ms,
        sla: Sla::default(),
        policy: Policy::default(),
        lineage: Vec::new(),
        data_addr: None,
        status: Status::Active,
        stewardship: Default::default(),
    };
    Signed::sign(mallory, &descriptor)
}

#[tokio::main]
async fn main() {
    let args = args();
    let mallory = Identity::from_secret_bytes(rand::random());
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(mallory.secret_bytes()).unwrap();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| Behaviour {
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(200))
                    .build()
                    .unwrap(),
            )
            .unwrap(),
            sync: request_response::Behaviour::with_codec(
                RawCodec,
                // Both versions of the sync protocol: the attacks do not depend on its
                // messages beyond the envelopes they carry.
                ["/meshnode/sync/1", "/meshnode/sync/2"].map(|name| {
                    (
                        StreamProtocol::new(name),
                        request_response::ProtocolSupport::Full,
                    )
                }),
                request_response::Config::default(),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let topic = gossipsub::IdentTopic::new(CATALOG_TOPIC);
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    swarm.dial(args.bootstrap.clone()).unwrap();

    let deep = deep_descriptor(&mallory, args.depth);
    let mut deep_gossiped = false;
    // Every descriptor version seen, oldest first.
    let mut seen: Vec<Signed<ProductDescriptor>> = Vec::new();
    let mut victim = None;
    let mut attacked = false;
    let mut replay_armed = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut deadline = None;
    let mut reconnect_at = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(d) = deadline
                    && tokio::time::Instant::now() >= d
                {
                    println!("done");
                    return;
                }
                if let Some(at) = reconnect_at
                    && tokio::time::Instant::now() >= at
                {
                    reconnect_at = None;
                    replay_armed = true;
                    if let Some(peer) = victim {
                        let _ = swarm.disconnect_peer_id(peer);
                    }
                }
                if let Some(peer) = victim
                    && args.attack == Attack::Poison
                    && seen.len() < 2
                {
                    // Learn the catalog like an honest node would.
                    swarm.behaviour_mut().sync.send_request(&peer, SyncRequest::everything().to_bytes());
                }
                if args.attack == Attack::DeepType && !deep_gossiped && victim.is_some() {
                    // Retried each tick until the victim is in our topic mesh.
                    let message = GossipMessage::Descriptor(deep.clone()).to_bytes();
                    if swarm.behaviour_mut().gossipsub.publish(topic.clone(), message).is_ok() {
                        deep_gossiped = true;
                        println!("deep-gossiped");
                        // Then make the victim sync with us, to serve it that way too.
                        reconnect_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                        deadline = Some(tokio::time::Instant::now() + Duration::from_secs(args.linger));
                    }
                }
                if args.attack == Attack::Poison
                    && !attacked
                    && args.go.as_ref().is_some_and(|go| go.exists())
                    && seen.len() >= 2
                {
                    attacked = true;
                    let newest = seen.last().unwrap().clone();
                    let real = newest.verify().expect("honest descriptor");
                    // 1. Claim the victim's product under our own signature.
                    let mut claim = real.clone();
                    claim.version += 100;
                    claim.title = "hijacked".into();
                    let forged = Signed::sign(&mallory, &claim);
                    publish(&mut swarm, &topic, GossipMessage::Descriptor(forged).to_bytes(), "forged-owner");
                    // 2. The victim's envelope with an altered body.
                    let mut altered = real.clone();
                    altered.version += 200;
                    let tampered = newest.with_tampered_body(codec::encode(&altered));
                    publish(&mut swarm, &topic, GossipMessage::Descriptor(tampered).to_bytes(), "tampered");
                    // 3. Garbage.
                    publish(&mut swarm, &topic, vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3], "garbage");
                    // 4. Soon: reconnect so the victim syncs with us, and replay the oldest version.
                    reconnect_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(args.linger));
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    victim = Some(peer_id);
                }
                SwarmEvent::ConnectionClosed { num_established: 0, .. } if replay_armed => {
                    let _ = swarm.dial(args.bootstrap.clone());
                }
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
                    if let Ok(GossipMessage::Descriptor(d)) = GossipMessage::from_bytes(&message.data) {
                        seen.push(d);
                        seen.sort_by_key(|d| d.decode_trusted().map(|d| d.version).unwrap_or(0));
                        seen.dedup_by_key(|d| d.decode_trusted().map(|d| d.version).unwrap_or(0));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message { message, .. })) => match message {
                    request_response::Message::Response { response, .. } => {
                        if let Ok(r) = SyncResponse::from_bytes(&response) {
                            seen.extend(r.descriptors);
                            seen.sort_by_key(|d| d.decode_trusted().map(|d| d.version).unwrap_or(0));
                            seen.dedup_by_key(|d| d.decode_trusted().map(|d| d.version).unwrap_or(0));
                        }
                    }
                    request_response::Message::Request { channel, .. } => {
                        let descriptors = if args.attack == Attack::DeepType {
                            println!("deep-served-by-sync");
                            vec![deep.clone()]
                        } else if replay_armed {
                            println!("replayed-old-version");
                            vec![seen.first().expect("seen a version").clone()]
                        } else {
                            Vec::new()
                        };
                        let response = SyncResponse { descriptors, ..SyncResponse::default() };
                        let _ = swarm.behaviour_mut().sync.send_response(channel, response.to_bytes());
                    }
                },
                _ => {}
            }
        }
    }
}

fn publish(
    swarm: &mut libp2p::Swarm<Behaviour>,
    topic: &gossipsub::IdentTopic,
    data: Vec<u8>,
    what: &str,
) {
    match swarm.behaviour_mut().gossipsub.publish(topic.clone(), data) {
        Ok(_) => println!("{what}"),
        Err(e) => println!("{what} failed: {e}"),
    }
}
