//! Data-plane admission end to end: an unauthenticated flood of QUIC Initial packets at a
//! provider's data port does not stop an authorised fetch.
//!
//! The flood is what held every connection slot before admission existed: valid Initial
//! packets (each a fresh connection, a ClientHello from a throwaway key) from many UDP
//! sockets, none of which ever answers. Each is made by a `quinn-proto` client connection
//! that is dropped after its first datagram, so the flooder keeps no state and never
//! retransmits, answers a Retry or completes a handshake.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mesh_node::dataplane::tls;
use mesh_protocol::{Identity, PublicKey};
use mesh_tests::{TestNode, python, require_pyarrow, wait_output, wait_until, write_file};
use serde_json::Value;

/// Initial packets sent per second (`MESHNODE_FLOOD_RATE` overrides it, to measure).
const FLOOD_RATE: u64 = 2_000;
/// Most Initial packets sent in all (the flood also stops when told to).
const FLOOD_MAX_PACKETS: u64 = 200_000;
/// UDP sockets the flood is sent from, spread over a few loopback addresses.
const FLOOD_SOCKETS: usize = 64;

/// What the flood sent.
#[derive(Debug, Default)]
pub(super) struct FloodReport {
    /// Datagrams sent.
    pub(super) packets: u64,
    /// Bytes sent.
    pub(super) bytes: u64,
    /// Time from the first to the last datagram.
    pub(super) elapsed: Duration,
    /// Distinct source addresses used.
    pub(super) sources: usize,
    /// Datagrams the target sent back (handshake packets or Retries), read and dropped.
    pub(super) answers: u64,
}

/// Sends fresh Initial packets to the data port `target` at [`FLOOD_RATE`] until `stop` or
/// [`FLOOD_MAX_PACKETS`].
fn flood(target: SocketAddr, provider: PublicKey, stop: Arc<AtomicBool>) -> FloodReport {
    // Any key will do: the provider sees the certificate only if a handshake completes.
    let stranger = Identity::from_secret_bytes(rand::random());
    let client = tls::client_config(&stranger, &provider, tls::Transport::streams(1))
        .expect("client config");
    flood_with(target, client, tls::SERVER_NAME, stop, None)
}

/// Sends fresh Initial packets of `client` (for `server_name`) to `target` at
/// [`FLOOD_RATE`] until `stop` or [`FLOOD_MAX_PACKETS`], counting them in `sent` if given.
pub(super) fn flood_with(
    target: SocketAddr,
    client: quinn_proto::ClientConfig,
    server_name: &str,
    stop: Arc<AtomicBool>,
    sent: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> FloodReport {
    // Loopback addresses beyond 127.0.0.1 exist on Linux without configuration; use what binds.
    let mut sockets = Vec::new();
    let mut sources = std::collections::HashSet::new();
    for i in 0..FLOOD_SOCKETS {
        let ip = Ipv4Addr::new(127, 0, 0, 1 + (i % 4) as u8);
        let socket = UdpSocket::bind((ip, 0))
            .or_else(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("bind a flood socket");
        sources.insert(socket.local_addr().unwrap().ip());
        socket.set_nonblocking(true).expect("a non-blocking socket");
        sockets.push(socket);
    }
    let mut endpoint = new_endpoint();
    let mut buf = Vec::with_capacity(1500);
    let mut report = FloodReport {
        sources: sources.len(),
        ..FloodReport::default()
    };
    let rate = std::env::var("MESHNODE_FLOOD_RATE")
        .ok()
        .and_then(|r| r.parse::<u64>().ok())
        .filter(|r| *r > 0)
        .unwrap_or(FLOOD_RATE);
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && report.packets < FLOOD_MAX_PACKETS {
        // Pace: packet n leaves at n / rate seconds.
        let due = Duration::from_micros(report.packets * 1_000_000 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        if report.packets % 4_096 == 4_095 {
            endpoint = new_endpoint(); // forget the connection ids of the dropped attempts
        }
        let now = Instant::now();
        let (_, mut connection) = endpoint
            .connect(now, client.clone(), target, server_name)
            .expect("a client connection");
        buf.clear();
        let Some(transmit) = connection.poll_transmit(now, 1, &mut buf) else {
            continue;
        };
        let socket = &sockets[report.packets as usize % sockets.len()];
        if socket
            .send_to(&buf[..transmit.size], transmit.destination)
            .is_ok()
        {
            report.bytes += transmit.size as u64;
        }
        report.packets += 1;
        // Read what came back, so that it is counted and never fills the socket's buffer.
        let mut answer = [0u8; 1500];
        while socket.recv(&mut answer).is_ok() {
            report.answers += 1;
        }
        if let Some(sent) = &sent {
            sent.store(report.packets, Ordering::Relaxed);
        }
        // `connection` is dropped here: no retransmission, no answer to anything.
    }
    report.elapsed = started.elapsed();
    report
}

fn new_endpoint() -> quinn_proto::Endpoint {
    quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    )
}

/// `orders` with `rows` rows: `order_id` 0.., a region and an amount.
fn orders_csv(rows: usize) -> String {
    let mut csv = String::from("order_id,region,amount\n");
    for i in 0..rows {
        let _ = writeln!(csv, "{i},{},{}.{:02}", ["EU", "US"][i % 2], i / 3, i % 100);
    }
    csv
}

#[test]
fn an_authorised_fetch_completes_during_an_unauthenticated_initial_flood() {
    let rows = 20_000;
    let sales = TestNode::start("sales", &[]);
    let csv = write_file(sales.dir.parent().unwrap(), "orders.csv", &orders_csv(rows));
    let published = sales.cli(&[
        "publish",
        "orders",
        "--from",
        csv.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
    ]);
    assert!(published.success, "{}", published.stderr);
    let churn = TestNode::start_seeing("churn", &sales, "sales/orders");
    churn.share_agreed("sales/orders", "analytics", &[]);

    let status = sales.status();
    let provider = PublicKey::from_hex(status["public_key"].as_str().unwrap()).unwrap();
    let data_addr: SocketAddr = status["data_addr"].as_str().unwrap().parse().unwrap();
    assert!(data_addr.ip().is_loopback(), "the flood stays on loopback");

    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || flood(data_addr, provider, stop))
    };
    // The flood is on once the provider answers it with Retries.
    let retried = || {
        sales
            .metric("meshnode_dataplane_handshakes_retried_total")
            .unwrap_or(0.0)
    };
    let flooding = wait_until(Duration::from_secs(15), || retried() >= 1_000.0);
    if flooding.is_none() {
        stop.store(true, Ordering::Relaxed);
        let report = flooder.join().unwrap();
        panic!(
            "the provider never answered the flood with Retries ({report:?}): {}",
            sales.log()
        );
    }

    // The authorised fetch, started while the flood runs.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("orders.arrow");
    let started = Instant::now();
    let fetch = churn.spawn_fetch("sales/orders", &out, &[]);
    let result = wait_output(fetch);
    let fetch_seconds = started.elapsed().as_secs_f64();
    let flood_running = !flooder.is_finished();
    // Sample while the flood still runs: what the provider holds under it.
    let in_progress = sales
        .metric("meshnode_dataplane_handshakes_in_progress")
        .unwrap_or(-1.0);
    // The flood goes on until the handshakes it started have hit the handshake timeout
    // (a few seconds, far below the idle timeout).
    let timed_out = wait_until(Duration::from_secs(15), || {
        flooder.is_finished()
            || sales
                .metric("meshnode_dataplane_handshakes_timed_out_total")
                .is_some_and(|n| n >= 1.0)
    });
    stop.store(true, Ordering::Relaxed);
    let report = flooder.join().unwrap();
    assert!(timed_out.is_some(), "no handshake timed out");
    assert!(
        result.success,
        "the fetch failed under the flood: {}\n{}",
        result.stderr,
        sales.log()
    );
    assert!(
        flood_running,
        "the flood ended before the fetch did ({report:?})"
    );
    let v: Value = serde_json::from_str(&result.stdout).unwrap();
    assert_eq!(v["rows"], rows, "{v}");
    if require_pyarrow() {
        let back = python(
            "import sys, pyarrow.ipc as ipc\n\
             t = ipc.open_file(sys.argv[1]).read_all()\n\
             print(t.num_rows, t.column('order_id').to_pylist() == list(range(t.num_rows)))",
            &[out.to_str().unwrap()],
        );
        assert_eq!(back.trim(), format!("{rows} True"), "{back}");
    }

    let metric = |name: &str| {
        sales
            .metric(&format!("meshnode_dataplane_{name}"))
            .unwrap_or_else(|| panic!("metric {name} missing"))
    };
    let (accepted, retried, peak, timed_out, established) = (
        metric("handshakes_accepted_total"),
        metric("handshakes_retried_total"),
        metric("handshakes_peak"),
        metric("handshakes_timed_out_total"),
        metric("connections_established_total"),
    );
    let seconds = report.elapsed.as_secs_f64();
    eprintln!(
        "flood: {} Initials, {:.0} KB, {:.1} s from {} sockets on {} addresses = {:.0} packets/s, {:.0} KB/s",
        report.packets,
        report.bytes as f64 / 1000.0,
        seconds,
        FLOOD_SOCKETS,
        report.sources,
        report.packets as f64 / seconds,
        report.bytes as f64 / 1000.0 / seconds
    );
    eprintln!(
        "provider: {accepted} handshakes admitted (peak {peak} at once, {in_progress} during the fetch), {timed_out} timed out, {retried} Retries, {established} connections; fetch of {rows} rows in {fetch_seconds:.2} s"
    );
    // The flood was far above what used to hold all 256 slots (about 17 Initials/s).
    assert!(
        report.packets as f64 / seconds > 500.0,
        "the flood was too slow to mean anything: {report:?}"
    );
    assert!(
        retried >= report.packets as f64 * 0.5,
        "most Initials got a Retry"
    );
    // Handshakes for the flood stay bounded: the Retry threshold, plus the fetch.
    assert!(peak <= 40.0, "the provider held {peak} handshakes at once");
    assert!(established >= 1.0);
    // No slot went to the flood: only the fetch completed a handshake.
    assert!(established <= 2.0, "{established} connections established");
}
