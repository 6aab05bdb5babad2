//! A connected peer that pushes identify updates over and over: the node keeps the latest
//! list of its addresses, bounded, not every address ever announced.

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, identify};
use mesh_protocol::catalog::MAX_NODE_ADDRS;

use crate::common::{STEP, bare_peer, start_sales_with_mallory, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_pushes_cannot_grow_a_peers_address_list() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [42; 32];
    let (node, task) = start_sales_with_mallory(&dir.path().join("a"), secret, vec![]);
    let node_id: PeerId = node.status().await.unwrap().peer_id.parse().unwrap();
    let node_addr: Multiaddr = wait_for("the node to listen", || async {
        node.status().await.ok()?.listen_addrs.first()?.parse().ok()
    })
    .await;

    // A member's key, speaking identify, connected to the node.
    let mut mallory = bare_peer(secret, |key| {
        identify::Behaviour::new(identify::Config::new("mallory/1".into(), key.public()))
    });
    mallory
        .dial(node_addr.with(libp2p::multiaddr::Protocol::P2p(node_id)))
        .unwrap();
    tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                mallory.select_next_some().await
                && peer_id == node_id
            {
                return;
            }
        }
    })
    .await
    .expect("mallory connects");

    // 50 pushes of 20 new addresses each: 1,000 addresses announced in all.
    let address = |n: u32| -> Multiaddr {
        format!(
            "/ip4/10.{}.{}.{}/udp/4001/quic-v1",
            n >> 16,
            (n >> 8) & 255,
            n & 255
        )
        .parse()
        .unwrap()
    };
    let mut n = 0u32;
    for _ in 0..50 {
        // Each push names only the new addresses (identify caps a message's size).
        for k in n.saturating_sub(20)..n {
            mallory.remove_external_address(&address(k));
        }
        for _ in 0..20 {
            mallory.add_external_address(address(n));
            n += 1;
        }
        mallory.behaviour_mut().push([node_id]);
        // Drive the swarm until this push went out.
        tokio::time::timeout(STEP, async {
            loop {
                match mallory.select_next_some().await {
                    SwarmEvent::Behaviour(identify::Event::Pushed { .. }) => return,
                    SwarmEvent::Behaviour(identify::Event::Error { error, .. }) => {
                        panic!("the push failed: {error}")
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("the push goes out");
    }

    // The node ends with the latest list it was told (at most MAX_NODE_ADDRS of it), not
    // the 1,000 addresses announced.
    let mallory_id = libp2p::identity::Keypair::ed25519_from_bytes(secret)
        .unwrap()
        .public()
        .to_peer_id()
        .to_string();
    let driver = tokio::spawn(async move {
        loop {
            mallory.select_next_some().await;
        }
    });
    let latest: Vec<Multiaddr> = (n - 20..n).map(address).collect();
    let addresses = wait_for("the node to hold the latest list", || async {
        let peers = node.peers().await.ok()?;
        let view = peers.into_iter().find(|p| p.peer_id == mallory_id)?;
        let shown: Vec<Multiaddr> = view
            .addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        (!shown.is_empty() && shown.iter().all(|a| latest.contains(a))).then_some(shown)
    })
    .await;
    assert!(
        addresses.len() <= MAX_NODE_ADDRS,
        "{} addresses kept: {addresses:?}",
        addresses.len()
    );

    driver.abort();
    let _ = node.shutdown().await;
    let _ = task.await;
}
