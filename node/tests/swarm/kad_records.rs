//! Kademlia routes and stores nothing: a member's record puts are answered and dropped, so
//! a lookup finds nothing and the node never serves or replicates what a peer put.

use std::time::Duration;

use futures::StreamExt;
use libp2p::kad::{self, GetRecordOk, PutRecordOk, QueryResult, Quorum, Record, RecordKey};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use mesh_node::NodeHandle;
use mesh_protocol::Identity;
use mesh_protocol::governance::MeshId;

use crate::common::{STEP, charter, peer_id_of, start, wait_for};

async fn listen_addr(node: &NodeHandle) -> Multiaddr {
    wait_for("a listen address", || async {
        node.status().await.ok()?.listen_addrs.into_iter().next()
    })
    .await
    .parse()
    .unwrap()
}

/// What a bare Kademlia client of the mesh's DHT makes of a put and a lookup.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The node acknowledged the put.
    Put,
    /// The lookup found a record with this value.
    Found(Vec<u8>),
    /// The lookup found nothing.
    NotFound,
}

/// A member's bare Kademlia client: puts a record to `node`, then looks it up there.
async fn put_then_get(
    secret: [u8; 32],
    mesh: &MeshId,
    node: PeerId,
    addr: Multiaddr,
) -> Vec<Outcome> {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(secret).unwrap();
    let me = keypair.public().to_peer_id();
    let protocol =
        StreamProtocol::try_from_owned(format!("/meshnode/{}/kad/1", mesh.short())).unwrap();
    let mut config = kad::Config::new(protocol);
    config.set_query_timeout(Duration::from_secs(10));
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| {
            kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), config)
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.behaviour_mut().set_mode(Some(kad::Mode::Client));
    swarm.behaviour_mut().add_address(&node, addr);
    let key = RecordKey::new(&b"unsigned-record");
    let record = Record::new(key.clone(), b"whatever a member likes".to_vec());
    swarm
        .behaviour_mut()
        .put_record_to(record, [node].into_iter(), Quorum::One);
    let mut outcomes = Vec::new();
    loop {
        let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed { result, step, .. }) =
            swarm.select_next_some().await
        else {
            continue;
        };
        match result {
            QueryResult::PutRecord(Ok(PutRecordOk { .. })) => {
                outcomes.push(Outcome::Put);
                // Forget our own copy, so that a lookup can only find the node's.
                swarm.behaviour_mut().remove_record(&key);
                swarm.behaviour_mut().get_record(key.clone());
            }
            QueryResult::PutRecord(Err(e)) => panic!("the put failed: {e:?}"),
            QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                outcomes.push(Outcome::Found(found.record.value));
                return outcomes;
            }
            QueryResult::GetRecord(Ok(GetRecordOk::FinishedWithNoAdditionalRecord { .. }))
            | QueryResult::GetRecord(Err(_))
                if step.last =>
            {
                outcomes.push(Outcome::NotFound);
                return outcomes;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_record_put_is_answered_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let member = [69; 32];
    let mesh = charter(
        &[("sales", [1; 32])],
        &[("mallory", Identity::from_secret_bytes(member).public_key())],
    );
    let mesh_id = MeshId::of_body(mesh.body());
    // A DHT server, as every node is by default.
    let (a, a_task) = start(
        &dir.path().join("a"),
        "sales",
        [1; 32],
        &mesh,
        vec![],
        |_| {},
    );
    let addr = listen_addr(&a).await;
    let outcomes = tokio::time::timeout(
        STEP,
        put_then_get(member, &mesh_id, peer_id_of([1; 32]), addr),
    )
    .await
    .expect("the put and the lookup finish");
    assert_eq!(outcomes, [Outcome::Put, Outcome::NotFound]);

    let _ = a.shutdown().await;
    let _ = a_task.await;
}
