//! Two connections between the same two nodes: the node closes the one the rule of
//! `mesh_protocol::peers::duplicates` names, and keeps the other.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent, dummy};
use libp2p::{Multiaddr, PeerId};

use crate::common::{STEP, bare_peer, peer_id_of, start_sales_with_mallory, wait_for};

/// The value of the metric `name` (a counter or gauge without labels) in `text`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_to_a_connected_peer_is_closed_by_the_rule() {
    // The node's key is [1; 32]; one bare peer whose id sorts below it, one above.
    let node = peer_id_of([1; 32]);
    let lower = (2..=255).find(|&b| peer_id_of([b; 32]) < node).unwrap();
    let higher = (2..=255).find(|&b| peer_id_of([b; 32]) > node).unwrap();
    for byte in [lower, higher] {
        second_connection([byte; 32]).await;
    }
}

/// A node dials a bare peer with key `secret`, which then dials the node too.
async fn second_connection(secret: [u8; 32]) {
    let dir = tempfile::tempdir().unwrap();
    // The other end is a bare libp2p peer with a member's key: it holds its connections
    // open (no idle timeout within the test) and tells us which of them close.
    let mut other = bare_peer(secret, |_| dummy::Behaviour);
    let other_id = *other.local_peer_id();
    other
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let other_addr = tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = other.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("the bare peer listens");

    // The node dials it first, as a bootstrap peer.
    let (node, task) = start_sales_with_mallory(
        &dir.path().join("a"),
        secret,
        vec![format!("{other_addr}/p2p/{other_id}")],
    );
    let node_id: PeerId = node.status().await.unwrap().peer_id.parse().unwrap();
    // The bare swarm is driven all along: the handshake needs both ends.
    let (first, node_addr) = tokio::time::timeout(STEP, async {
        let (mut first, mut addr) = (None, None);
        let mut look = tokio::time::interval(Duration::from_millis(50));
        loop {
            if let (Some(first), Some(addr)) = (first, addr.clone()) {
                return (first, addr);
            }
            tokio::select! {
                event = other.select_next_some() => {
                    if let SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. } = event
                        && peer_id == node_id
                    {
                        first = Some(connection_id);
                    }
                }
                _ = look.tick(), if addr.is_none() => {
                    addr = node.status().await.unwrap().listen_addrs.first().map(|a| {
                        a.parse::<Multiaddr>().unwrap()
                    });
                }
            }
        }
    })
    .await
    .expect("the node listens and dials its bootstrap peer");

    // Then the bare peer dials the node as well, while connected: as if both had dialled
    // at once.
    let dial = DialOpts::peer_id(node_id)
        .addresses(vec![node_addr])
        .condition(PeerCondition::Always)
        .build();
    let second: ConnectionId = dial.connection_id();
    other.dial(dial).unwrap();

    // Both ends keep the connection the lower peer id dialled, so the node closes the
    // other one.
    let (expect_closed, kept) = if node_id < other_id {
        (second, first)
    } else {
        (first, second)
    };
    // Until the bare peer holds the kept connection alone. Its own dial may complete after
    // the node already closed the first connection, so the two events come in either order.
    let mut open = HashSet::from([first]);
    let mut closed = Vec::new();
    tokio::time::timeout(STEP, async {
        while !(closed.contains(&expect_closed) && open == HashSet::from([kept])) {
            match other.select_next_some().await {
                SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                    open.insert(connection_id);
                }
                SwarmEvent::ConnectionClosed { connection_id, .. } => {
                    open.remove(&connection_id);
                    closed.push(connection_id);
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("the second dial failed: {error}")
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the node should close {expect_closed:?} and keep {kept:?} (node {node_id}, \
             bare peer {other_id}); closed {closed:?}, open {open:?}"
        )
    });
    assert_eq!(
        closed,
        vec![expect_closed],
        "the lower id's dial stays open"
    );

    // The node counts the one it closed and holds one connection.
    wait_for(
        "the node to count one close and hold one connection",
        || async {
            let metrics = node.metrics().await.ok()?;
            let closes = metric(&metrics, "meshnode_connections_duplicate_closed_total");
            let open = metric(&metrics, "meshnode_connections");
            (closes == Some(1.0) && open == Some(1.0)).then_some(())
        },
    )
    .await;
    assert_eq!(node.peers().await.unwrap().len(), 1);

    let _ = node.shutdown().await;
    let _ = task.await;
}
