//! The control plane under a flood of QUIC Initials at its port: libp2p-quic accepts every
//! Initial (it has no Retry), so the node runs a handshake for each until the handshake
//! timeout (docs/SECURITY.md, "Not covered"); what must hold is that members' connections,
//! already open, keep carrying gossip, and that the node comes through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mesh_tests::{TestNode, wait_until, write_file};

use super::dataplane_flood::flood_with;

/// The UDP address of `node`'s control plane.
fn control_addr(node: &TestNode) -> SocketAddr {
    let addr: Multiaddr = node.addr().parse().expect("a multiaddr");
    let mut ip = None;
    let mut port = None;
    for protocol in addr.iter() {
        match protocol {
            Protocol::Ip4(a) => ip = Some(a.into()),
            Protocol::Udp(p) => port = Some(p),
            _ => {}
        }
    }
    SocketAddr::new(ip.expect("an IPv4 address"), port.expect("a UDP port"))
}

#[test]
fn gossip_between_members_goes_on_during_an_initial_flood_at_the_control_port() {
    let sales = TestNode::start("sales", &[]);
    let csv = write_file(
        sales.dir.parent().unwrap(),
        "orders.csv",
        "order_id,amount\n1,10.5\n2,20.25\n",
    );
    assert!(
        sales
            .cli(&["publish", "orders", "--from", csv.to_str().unwrap()])
            .success
    );
    let churn = TestNode::start_seeing("churn", &sales, "sales/orders");
    let target = control_addr(&sales);
    assert!(target.ip().is_loopback(), "the flood stays on loopback");

    // Initials a libp2p node would send: its ALPN and server name, a throwaway key.
    let stranger = libp2p::identity::Keypair::generate_ed25519();
    let tls = libp2p_tls::make_client_config(&stranger, None).expect("a TLS config");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
        .expect("a QUIC TLS config");
    let client = quinn::ClientConfig::new(Arc::new(crypto));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || flood_with(target, client, "l", stop, Some(sent)))
    };
    // Fully on once it has run for longer than a handshake may last (5 s): from then on the
    // node holds as many handshakes as it ever will for this rate.
    let flooding = wait_until(Duration::from_secs(30), || {
        sent.load(Ordering::Relaxed) >= 12_000
    });

    // Under the flood, a new product still reaches the member over its open connection.
    let returns = write_file(
        sales.dir.parent().unwrap(),
        "returns.csv",
        "order_id,reason\n1,damaged\n",
    );
    let started = Instant::now();
    let published = sales.cli(&["publish", "returns", "--from", returns.to_str().unwrap()]);
    let seen = wait_until(Duration::from_secs(30), || {
        churn.version_of("sales/returns").is_some()
    });
    let seconds = started.elapsed().as_secs_f64();
    let flood_running = !flooder.is_finished();
    stop.store(true, Ordering::Relaxed);
    let report = flooder.join().unwrap();

    assert!(flooding.is_some(), "the flood did not start: {report:?}");
    assert!(published.success, "{}", published.stderr);
    assert!(
        seen.is_some(),
        "the member never saw the product published under the flood ({report:?}): {}",
        sales.log()
    );
    assert!(
        flood_running,
        "the flood ended before the product arrived ({report:?})"
    );
    let rate = report.packets as f64 / report.elapsed.as_secs_f64();
    eprintln!(
        "flood: {} Initials in {:.1} s ({rate:.0}/s), {} datagrams back; the product reached the member after {seconds:.2} s",
        report.packets,
        report.elapsed.as_secs_f64(),
        report.answers
    );
    assert!(
        rate > 500.0,
        "the flood was too slow to mean anything: {report:?}"
    );
    // The node took the Initials for what they are and answered them: each is a handshake.
    assert!(
        report.answers >= report.packets / 2,
        "the node answered too few Initials for the flood to be one: {report:?}"
    );
    // And the node comes through: it still answers, and a member still syncs with it.
    assert!(sales.cli(&["status", "--json"]).success, "{}", sales.log());
}
