//! A hostile mesh peer for end-to-end tests. It joins through `--bootstrap`, learns the
//! catalog like anyone, then, when the file named by `--go` appears, tries to poison it:
//!
//! - gossips a descriptor that claims a victim's product (victim's key as owner, signed by
//!   its own key),
//! - gossips a victim's envelope with its body altered (victim's key, broken signature),
//! - gossips garbage bytes,
//! - reconnects and answers the victim's sync request with a replayed older version (again
//!   every 2 s until the victim asks: a sync of ours the disconnect broke makes it wait).
//!
//! Until then it answers sync requests as a node holding nothing would.
//!
//! With `--attack deep-type` it instead signs, with its own key, a descriptor whose column
//! type is `List(` nested `--depth` levels deep (3,000 by default: the type string that
//! overflowed the type parser's stack), gossips it as soon as the bootstrap node subscribes
//! to the catalog topic (`deep-gossiped`), then reconnects and answers every sync request
//! with it (`deep-served-by-sync`). `--go` is not needed for that attack.
//!
//! With `--attack own` it gossips a well-formed descriptor of its own (`mallory/own`) as
//! soon as it is connected (`own-gossiped`, or `own-already-gossiped` when the victim took it
//! by sync first and gossiped it back) and serves it to every sync request
//! (`own-served-by-sync`): what an honest node would do, so only membership can keep it out.
//! With `--count N` it publishes N such descriptors (`own`, `own-1`, ...), each with a
//! description of `--pad BYTES` (at most 16 KiB): a member filling every node's catalog.
//! `--forge-last` appends to what it serves by sync a copy of the last one, renamed, whose
//! signature no longer matches.
//! `--attack versions --count N` gossips versions 1 to N of `own` back to back (printing
//! `own-gossiped` too) and then serves the newest by sync: a member flooding the mesh's
//! gossip.
//!
//! `--attack sybils --count N` admits N keys of its own (one admission vote each, signed by
//! the member), then has each of them sign an admission of every other: N × (N - 1) votes,
//! all gossiped back to back (`sybils-gossiped`). Under `any-member` admission that is a
//! member growing every node's governance state with the square of its keys.
//!
//! With `--ticket TICKET` (from `meshnode mesh invite --domain mallory` on a member) it first
//! joins the mesh with its own key, then speaks the mesh's topic and protocols under that
//! key: an insider that misbehaves. Without a ticket it is a non-member, whose connections
//! the mesh's nodes refuse before any protocol runs.
//!
//! It prints one line per action (`connected` when a connection is up, `disconnected` when
//! the last one closes, `dial-failed` when a dial fails) and exits after `--linger` seconds
//! once its attack ran, or (`gave-up`) when `--linger` seconds have passed since the start
//! and no connection is up.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, gossipsub, request_response};
use mesh_protocol::codec;
use mesh_protocol::descriptor::{ColumnSchema, ContentDigest, Policy, Sla, Status};
use mesh_protocol::governance::{Action, Member, MeshId, Motion};
use mesh_protocol::reconcile::{self, SyncSet};
use mesh_protocol::wire::{GossipMessage, SyncRequest, SyncResponse};
use mesh_protocol::{Identity, ProductDescriptor, ProductId, Signed};
use mesh_tests::insider;
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
    /// A well-formed descriptor of its own, gossiped and served by sync.
    Own,
    /// Many versions of one descriptor of its own, gossiped back to back.
    Versions,
    /// Keys of its own admitted, each co-signing the admission of every other.
    Sybils,
}

struct Args {
    bootstrap: Multiaddr,
    go: Option<PathBuf>,
    linger: u64,
    attack: Attack,
    depth: usize,
    count: usize,
    pad: usize,
    forge_last: bool,
    ticket: Option<String>,
}

fn args() -> Args {
    let mut bootstrap = None;
    let mut go = None;
    let mut linger = 10;
    let mut attack = Attack::Poison;
    let mut depth = 3000;
    let mut count = 1;
    let mut pad = 0;
    let mut forge_last = false;
    let mut ticket = None;
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
                    Some("own") => Attack::Own,
                    Some("versions") => Attack::Versions,
                    Some("sybils") => Attack::Sybils,
                    other => panic!("--attack poison|deep-type|own|versions|sybils, not {other:?}"),
                }
            }
            "--depth" => depth = it.next().and_then(|s| s.parse().ok()).expect("--depth N"),
            "--count" => count = it.next().and_then(|s| s.parse().ok()).expect("--count N"),
            "--pad" => pad = it.next().and_then(|s| s.parse().ok()).expect("--pad BYTES"),
            "--forge-last" => forge_last = true,
            "--ticket" => ticket = it.next(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        attack != Attack::Poison || go.is_some(),
        "--go FILE is needed for the poison attack"
    );
    Args {
        bootstrap: bootstrap.expect("--bootstrap MULTIADDR"),
        go,
        linger,
        attack,
        depth,
        count,
        pad,
        forge_last,
        ticket,
    }
}

/// A descriptor of our own, correctly signed, whose one column has the type
/// `List(List(...Int32...))` nested `depth` levels deep.
fn deep_descriptor(mallory: &Identity, depth: usize) -> Signed<ProductDescriptor> {
    own_descriptor(
        mallory,
        "deep",
        format!("{}Int32{}", "List(".repeat(depth), ")".repeat(depth)),
    )
}

/// A descriptor of our own named `name`, correctly signed, with one column of `data_type`.
fn own_descriptor(mallory: &Identity, name: &str, data_type: String) -> Signed<ProductDescriptor> {
    padded_descriptor(mallory, name, data_type, 0)
}

/// A copy of `last` under a new name whose body no longer matches its signature.
fn forged_copy(last: Option<&Signed<ProductDescriptor>>) -> Option<Signed<ProductDescriptor>> {
    let last = last?;
    let mut altered = last.decode_trusted().ok()?;
    altered.name = "forged".into();
    Some(last.with_tampered_body(codec::encode(&altered)))
}

/// Version `version` of `own`, with a description of `pad` bytes.
fn versioned_descriptor(mallory: &Identity, version: u64, pad: usize) -> Signed<ProductDescriptor> {
    let mut descriptor = padded_descriptor(mallory, "own", "Int64".into(), pad)
        .decode_trusted()
        .expect("our own descriptor decodes");
    descriptor.version = version;
    Signed::sign(mallory, &descriptor)
}

/// [`own_descriptor`] with a description of `pad` bytes.
fn padded_descriptor(
    mallory: &Identity,
    name: &str,
    data_type: String,
    pad: usize,
) -> Signed<ProductDescriptor> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let descriptor = ProductDescriptor {
        owner: mallory.public_key(),
        domain: "mallory".into(),
        name: name.into(),
        version: 1,
        title: name.into(),
        description: "x".repeat(pad),
        tags: Vec::new(),
        schema: vec![ColumnSchema {
            name: name.into(),
            data_type,
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

/// The votes of the Sybil attack: `mallory` admits `count` keys of its own, then each of
/// them signs an admission of every other (a motion of its own, so each is a new motion).
fn sybil_votes(mallory: &Identity, mesh: MeshId, count: usize) -> Vec<Signed<Motion>> {
    let sybils: Vec<Identity> = (0..count)
        .map(|_| Identity::from_secret_bytes(rand::random()))
        .collect();
    let admit = |proposer: &Identity, n: usize| {
        let motion = Motion {
            mesh,
            action: Action::Admit(Member {
                key: sybils[n].public_key(),
                domain: format!("sybil-{n}"),
            }),
            proposer: proposer.public_key(),
            proposed_at_ms: 1,
        };
        Signed::sign(proposer, &motion)
    };
    let mut votes: Vec<Signed<Motion>> = (0..count).map(|n| admit(mallory, n)).collect();
    for (i, sybil) in sybils.iter().enumerate() {
        votes.extend((0..count).filter(|&n| n != i).map(|n| admit(sybil, n)));
    }
    votes
}

#[tokio::main]
async fn main() {
    let args = args();
    let mallory = Identity::from_secret_bytes(rand::random());
    let mesh = match &args.ticket {
        Some(ticket) => {
            let mesh = mesh_tests::insider::join(ticket, &mallory).await;
            println!("joined");
            Some(mesh)
        }
        None => None,
    };
    // A member speaks its mesh's names; a non-member both names nodes spoke before meshes.
    let sync_protocols = match &mesh {
        Some(m) => vec![insider::protocol(Some(m), "sync/3")],
        None => vec![
            insider::protocol(None, "sync/1"),
            insider::protocol(None, "sync/2"),
        ],
    };
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(mallory.secret_bytes()).unwrap();
    let tuning = mesh_node::NetTuning {
        heartbeat: Duration::from_millis(200),
        ..mesh_node::NetTuning::default()
    };
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| Behaviour {
            // The node's own gossip (no author signature, content-addressed ids), so what
            // it sends reaches the node's validation.
            gossipsub: gossipsub::Behaviour::new(
                mesh_node::gossipsub_authenticity(&tuning, key),
                mesh_node::gossipsub_config(&tuning).unwrap(),
            )
            .unwrap(),
            sync: request_response::Behaviour::with_codec(
                RawCodec,
                // The attacks do not depend on the sync messages beyond the envelopes they
                // carry.
                sync_protocols
                    .into_iter()
                    .map(|name| (name, request_response::ProtocolSupport::Full)),
                request_response::Config::default(),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let topic = gossipsub::IdentTopic::new(insider::catalog_topic(mesh.as_ref()));
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    swarm.dial(args.bootstrap.clone()).unwrap();

    let deep = deep_descriptor(&mallory, args.depth);
    let own: Vec<Signed<ProductDescriptor>> = (0..args.count)
        .map(|i| {
            if args.attack == Attack::Versions {
                return versioned_descriptor(&mallory, i as u64 + 1, args.pad);
            }
            let name = if i == 0 {
                "own".to_owned()
            } else {
                format!("own-{i}")
            };
            padded_descriptor(&mallory, &name, "Int64".into(), args.pad)
        })
        .collect();
    let sybils = match (args.attack, mesh) {
        (Attack::Sybils, Some(mesh)) => sybil_votes(&mallory, mesh, args.count),
        (Attack::Sybils, None) => panic!("--attack sybils needs --ticket: only members admit"),
        _ => Vec::new(),
    };
    let mut sybils_gossiped = 0;
    let mut deep_gossiped = false;
    // How many of `own` went out, and whether any of them was new to the mesh.
    let mut own_gossiped = 0;
    let mut own_new = false;
    let mut connected = false;
    // Every descriptor version seen, oldest first.
    let mut seen: Vec<Signed<ProductDescriptor>> = Vec::new();
    let mut victim = None;
    let mut attacked = false;
    let mut replay_armed = false;
    // When the connection the replay waits on came up, until the victim asked for it: a
    // victim whose sync with us broke off when we disconnected waits out a retry delay and
    // then its next round, which may pick another peer, so we reconnect again after a while.
    let mut replay_wait: Option<tokio::time::Instant> = None;
    let mut replayed = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // An attack that cannot start (a non-member is refused) gives up after `linger` if no
    // connection is up.
    let mut deadline = None;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(args.linger);
    // Whatever happens, the peer ends: an attack that never got going fails the test that
    // ran it instead of hanging it.
    let hard_stop = give_up + Duration::from_secs(180);
    let mut reconnect_at = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if tokio::time::Instant::now() >= hard_stop {
                    println!("timed-out");
                    eprintln!("the attack did not complete within {} s", args.linger + 180);
                    std::process::exit(3);
                }
                if let Some(d) = deadline
                    && tokio::time::Instant::now() >= d
                {
                    println!("done");
                    return;
                }
                if deadline.is_none() && !connected && tokio::time::Instant::now() >= give_up {
                    println!("gave-up");
                    return;
                }
                if let Some(since) = replay_wait
                    && connected
                    && tokio::time::Instant::now() >= since + Duration::from_secs(2)
                {
                    replay_wait = None;
                    reconnect_at = Some(tokio::time::Instant::now());
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
                if matches!(args.attack, Attack::Own | Attack::Versions)
                    && own_gossiped < own.len()
                    && victim.is_some()
                {
                    // Retried each tick until the victim is in our topic mesh. Message ids
                    // are content hashes: once the victim has taken a descriptor by sync
                    // and gossiped it back, ours is a duplicate, already in the mesh.
                    while let Some(next) = own.get(own_gossiped) {
                        let message = GossipMessage::Descriptor(next.clone()).to_bytes();
                        match swarm.behaviour_mut().gossipsub.publish(topic.clone(), message) {
                            Ok(_) => own_new = true,
                            Err(gossipsub::PublishError::Duplicate) => {}
                            Err(_) => break,
                        }
                        own_gossiped += 1;
                    }
                    if own_gossiped == own.len() {
                        println!("{}", if own_new { "own-gossiped" } else { "own-already-gossiped" });
                        reconnect_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                        deadline = Some(tokio::time::Instant::now() + Duration::from_secs(args.linger));
                    }
                }
                if args.attack == Attack::Sybils && sybils_gossiped < sybils.len() && victim.is_some() {
                    // In order (a co-signature counts only once its signer is admitted),
                    // resumed at the next tick when gossipsub's queue is full.
                    while let Some(next) = sybils.get(sybils_gossiped) {
                        let message = GossipMessage::Vote(next.clone()).to_bytes();
                        match swarm.behaviour_mut().gossipsub.publish(topic.clone(), message) {
                            Ok(_) | Err(gossipsub::PublishError::Duplicate) => sybils_gossiped += 1,
                            Err(_) => break,
                        }
                    }
                    if sybils_gossiped == sybils.len() {
                        println!("sybils-gossiped");
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
                    if replay_armed && !replayed && args.attack == Attack::Poison {
                        replay_wait.get_or_insert_with(tokio::time::Instant::now);
                    }
                    if !connected {
                        connected = true;
                        println!("connected");
                    }
                }
                SwarmEvent::OutgoingConnectionError { .. } => {
                    println!("dial-failed");
                }
                SwarmEvent::ConnectionClosed { num_established: 0, .. } => {
                    victim = None;
                    if connected {
                        connected = false;
                        println!("disconnected");
                    }
                    if replay_armed {
                        let _ = swarm.dial(args.bootstrap.clone());
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
                    if let Ok(GossipMessage::Descriptor(d)) = GossipMessage::from_bytes(&message.data) {
                        learn(&mut seen, [d]);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message { message, .. })) => match message {
                    request_response::Message::Response { response, .. } => {
                        if let Ok(r) = SyncResponse::from_bytes(&response) {
                            learn(&mut seen, r.descriptors);
                        }
                    }
                    request_response::Message::Request { request, channel, .. } => {
                        // The attacks served by sync answer as an honest node holding their
                        // descriptors would: only what the request lacks.
                        let response = if args.attack == Attack::DeepType {
                            println!("deep-served-by-sync");
                            holding(&request, std::slice::from_ref(&deep))
                        } else if args.attack == Attack::Own {
                            println!("own-served-by-sync");
                            let mut served = own.clone();
                            if args.forge_last {
                                served.extend(forged_copy(own.last()));
                            }
                            holding(&request, &served)
                        } else if args.attack == Attack::Versions && own_gossiped == own.len() {
                            // Only once every version went out by gossip: served first,
                            // the newest would make the gossiped ones stale.
                            println!("own-served-by-sync");
                            holding(&request, &own[own.len() - 1..])
                        } else if replay_armed {
                            // Pushed whatever the request claims: an answer no honest node
                            // gives.
                            (replay_wait, replayed) = (None, true);
                            println!("replayed-old-version");
                            SyncResponse {
                                descriptors: vec![seen.first().expect("seen a version").clone()],
                                ..holding(&request, &[])
                            }
                        } else {
                            holding(&request, &[])
                        };
                        let _ = swarm.behaviour_mut().sync.send_response(channel, response.to_bytes());
                    }
                },
                _ => {}
            }
        }
    }
}

/// The answer to the sync `request` of a node that holds the descriptors `held` and no node
/// record or vote: the ranges answered as an honest node's, and the envelopes the request
/// lacks (an empty answer when the request does not decode).
fn holding(request: &[u8], held: &[Signed<ProductDescriptor>]) -> SyncResponse {
    let Ok(request) = SyncRequest::from_bytes(request) else {
        return SyncResponse::default();
    };
    let mut entries: Vec<(ProductId, u64, &Signed<ProductDescriptor>)> = held
        .iter()
        .filter_map(|e| e.decode_trusted().ok().map(|d| (d.id(), d.version, e)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    entries.dedup_by(|a, b| a.0 == b.0);
    let set = SyncSet::from_sorted(entries.iter().map(|(id, v, _)| (id.clone(), *v)));
    let (Ok(products), Ok(nodes), Ok(votes)) = (
        reconcile::respond(&set, &request.products),
        reconcile::respond(&SyncSet::from_sorted([]), &request.nodes),
        reconcile::respond(&SyncSet::from_sorted([]), &request.votes),
    ) else {
        return SyncResponse::default();
    };
    let descriptors = products
        .send
        .iter()
        .filter_map(|id| entries.iter().find(|(held, _, _)| held == id))
        .map(|(_, _, e)| (*e).clone())
        .collect();
    SyncResponse {
        products: products.answer,
        nodes: nodes.answer,
        votes: votes.answer,
        descriptors,
        ..SyncResponse::default()
    }
}

/// Adds `descriptors` to the versions `seen` (oldest first, one per version) and prints
/// `seen N` when that makes N versions, so a test can wait for it.
fn learn(
    seen: &mut Vec<Signed<ProductDescriptor>>,
    descriptors: impl IntoIterator<Item = Signed<ProductDescriptor>>,
) {
    let before = seen.len();
    seen.extend(descriptors);
    let version =
        |d: &Signed<ProductDescriptor>| d.decode_trusted().map(|d| d.version).unwrap_or(0);
    seen.sort_by_key(version);
    seen.dedup_by_key(|d| version(d));
    if seen.len() > before {
        println!("seen {}", seen.len());
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
